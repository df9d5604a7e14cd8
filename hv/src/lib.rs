//! traplab-hv's decisions: what the hypervisor does with every trap, without the machine.
//!
//! The hypervisor is two crates over one `src/` folder. This library holds everything that
//! *decides*; it touches no hardware, so the same files build for the host
//! (`hv/host/Cargo.toml`) and `cargo test` feeds every handler synthetic exits. The
//! bare-metal program (`main.rs`) boots, runs VMRUN, and calls in here at every #VMEXIT.
//!
//! The path of one trap through the library, in reading order:
//!
//! ```text
//!  #VMEXIT ─► exit::Exit::read ─► exit::handle ─► exit/<reason>.rs ─► Decision ─► apply::apply
//!             (the reason,        (one match:     (a pure function:   (a value:    (the one place
//!              decoded once)       one arm per     the exit and a      action, why,  that changes
//!                                  exit reason)    read-only Guest)    effects)      the guest and
//!                                                                                    records events)
//! ```
//!
//! | module        | what it is                                                               |
//! |---------------|--------------------------------------------------------------------------|
//! | [`exit`]      | one file per exit reason: the handlers                                   |
//! | [`decision`]  | a decision as a value: action, reason, source line, effects              |
//! | [`apply`]     | the one place that applies a decision and records the events, in order   |
//! | [`delivery`]  | how an exception reaches the guest: reflect (IDT) or bounce (trap table) |
//! | [`quirks`]    | where QEMU's TCG differs from a real CPU, and the corrections            |
//! | [`domain`]    | a domain: its vCPU, guest memory, devices and paravirtual state          |
//! | [`device`]    | the devices the hypervisor emulates (console UART, the lab's MMIO device) |
//! | [`vmcb`]      | the VMCB layout (AMD APM vol. 2, appendix B)                             |
//! | [`machine`]   | what the hypervisor asks of the machine it runs on                       |
//! | [`emulate`], [`instruction`] | decoding an instruction and the memory access it makes   |
#![cfg_attr(not(test), no_std)]

extern crate alloc;

pub mod apply;
pub mod decision;
pub mod delivery;
pub mod device;
pub mod domain;
pub mod emulate;
pub mod exit;
pub mod instruction;
pub mod machine;
pub mod quirks;
pub mod vmcb;

#[cfg(test)]
mod testing;

pub use decision::{Decision, DomainEnd, Effect};
pub use domain::{Domain, Guest};
pub use exit::Exit;
pub use machine::Machine;
