//! The host side of the trace.
//!
//! | module        | what it does                                                          |
//! |---------------|-----------------------------------------------------------------------|
//! | [`json`]      | an event as one JSON object, one line (the public, recorded format)    |
//! | [`check`]     | the stream's promises: `seq` without gaps, no `lost` events            |
//! | [`order`]     | a recording's lines in `seq` order: a `seq` out of place is its own line's error |
//! | [`recording`] | write and read JSON Lines files, with line-numbered errors             |
//! | [`qemu`]      | the QEMU command line, finding QEMU, and how to install it             |
//! | [`session`]   | one run: start QEMU, read the ring and the serial log, stop cleanly    |
//! | [`gdb_relay`] | gdb's port, relayed to the hypervisor's gdbstub: a gdb that vanishes is detached |
//! | [`disk`]      | the raw image behind a lab's disk: made for the run, or the user's file |
//! | [`symbols`] | addresses to names in a guest's ELF, and back                       |
//! | [`text`]      | an event as one readable line                                          |
//! | [`flows`]     | trap flows, per domain: the events from one exit to its resume, linked to the return and to the upcall a notification caused |
//! | [`store`]     | a trace held compactly (an index per event, lines parsed when shown)   |
//! | [`stats`]     | per exit reason (and per domain): count, share, min/avg/p50/p95/max hypervisor time |
//! | [`export`]    | a trace as Chrome trace-event JSON for ui.perfetto.dev                 |
//! | [`diff`]      | two traces aligned flow by flow                                        |
//! | [`delivery`]  | what a handler starts with: the frame the CPU pushed, the registers after it |
//! | [`explain`]   | each step in one plain sentence, and every field decoded               |
//! | [`filter`]    | `trace --only/--hide CLASS`: which events to print, by their flow's class |
//! | [`code`]      | disassembly (iced-x86), guest symbols and source lines (addr2line)     |
//! | [`sample`]    | a small hand-made trace of two domains and an event channel, for tests  |
//!
//! The event types themselves are in `traplab_abi::event`, shared with the hypervisor.

pub mod check;
pub mod code;
pub mod delivery;
pub mod diff;
pub mod disk;
pub mod explain;
pub mod export;
pub mod filter;
pub mod flows;
pub mod gdb_relay;
pub mod json;
pub mod order;
pub mod qemu;
pub mod recording;
pub mod sample;
pub mod session;
pub mod stats;
pub mod store;
pub mod symbols;
pub mod text;

pub use traplab_abi::event::{self, Event};
