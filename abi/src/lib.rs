//! What the traplab hypervisor, its lab guests and the host tools agree on.
//!
//! This crate is `no_std` (`alloc` only for the `events` feature, which the guests leave out): the hypervisor (`hv/`) and the guests (`guests/`)
//! link it on bare metal, the tracer and the TUI link it on the host. Everything here is
//! pure data and pure functions, so every decoder is unit-tested on the host.
//!
//! | module        | what it describes                                                        |
//! |---------------|--------------------------------------------------------------------------|
//! | [`hypercall`] | the VMMCALL ABI: numbers, arguments, results, error codes                |
//! | [`ata`]       | the legacy ATA disk controller a driver domain owns: ports, registers, commands |
//! | [`evtchn`], [`grant_table`], [`sched`], [`store`] | domains side by side, on Xen's ABI: event channels, grant tables, yield/block, the store |
//! | [`blkif`]     | Xen's split block driver: the shared request/response ring and its requests |
//! | [`boot`]      | how the hypervisor hands a guest over: memory layout, boot info, CPUID   |
//! | [`multiboot`] | how it hands over a multiboot v1 kernel: the header, the boot information |
//! | [`event`]     | the trace events, one per step of a trap                                 |
//! | [`ring`]      | the shared-memory ring that carries events from the hv to the host       |
//! | [`wire`]      | the compact record each event is in the ring                             |
//! | [`control`]   | the host's commands to the hv: pause, step, break                        |
//! | [`settings`]  | hypervisor settings a lab turns on (extra intercepts, lazy memory)       |
//! | [`exit`]      | why the CPU left the guest: the exit reason, decoded once, and its names |
//! | [`svm`]       | AMD SVM encodings: exit codes, EXITINFO fields, event injection          |
//! | [`x86`]       | x86 architecture: exception vectors, error codes, paging, register bits  |
//! | [`msr`]       | model-specific registers: numbers and names                              |
#![no_std]

#[cfg(any(feature = "events", test))]
extern crate alloc;

pub mod ata;
pub mod blkif;
pub mod boot;
pub mod control;
#[cfg(feature = "events")]
pub mod event;
pub mod evtchn;
pub mod exit;
pub mod grant_table;
pub mod hypercall;
pub mod msr;
pub mod multiboot;
pub mod ring;
pub mod sched;
pub mod settings;
pub mod store;
pub mod svm;
#[cfg(feature = "events")]
pub mod wire;
pub mod x86;

/// The trace schema version: `"v"` in every JSON line (the ring's protocol has its own,
/// `ring::RING_VERSION`). Bump it when a field changes meaning or disappears; adding a field
/// is compatible.
pub const SCHEMA_VERSION: u32 = 1;

/// Parse a number as people write it: `0x1f` (hex) or `31` (decimal).
pub fn parse_number(text: &str) -> Option<u64> {
    let text = text.trim();
    match text.strip_prefix("0x").or_else(|| text.strip_prefix("0X")) {
        Some(digits) => u64::from_str_radix(digits, 16).ok(),
        None => text.parse().ok(),
    }
}
