//! PAUSE (exit code 0x77): the guest spins, waiting for something.
//!
//! PAUSE is the spin-wait hint of a lock loop. Intercepting it tells the hypervisor that
//! this virtual CPU is wasting its time: a hypervisor with other work runs another domain
//! (KVM's "pause-loop exiting"). This one runs domains one at a time, so it notes the spin
//! and lets the guest go on.

use super::{Exit, undecodable};
use crate::decide;
use crate::decision::{Decision, Effect};
use crate::domain::Guest;
use traplab_abi::event::Action;

pub fn handle(exit: &Exit, guest: &Guest) -> Decision {
    let Some(length) = exit.instruction_length(guest) else {
        return undecodable();
    };
    decide!(
        Action::Emulate,
        "PAUSE: the guest spins; with another domain ready a hypervisor would switch to it here"
    )
    .with(Effect::Rip(guest.vcpu.rip_after(length)))
    .describe("PAUSE: nothing else to run, the guest goes on")
}
