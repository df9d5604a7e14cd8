//! PAUSE (exit code 0x77): the guest spins, waiting for something.
//!
//! PAUSE is the spin-wait hint of a lock loop. Intercepting it tells the hypervisor that
//! this virtual CPU is wasting its time: a hypervisor with other work runs another domain
//! (KVM's "pause-loop exiting"). This one runs domains one at a time, so it notes the spin
//! and lets the guest go on.

use super::{Next, instruction_length, undecodable};
use crate::decide;
use crate::domain::Domain;
use traplab_abi::event::Action;

pub fn handle(domain: &mut Domain) -> Next {
    let Some(length) = instruction_length(domain) else {
        return undecodable(domain);
    };
    decide!(
        domain,
        Action::Emulate,
        "PAUSE: the guest spins; with another domain ready a hypervisor would switch to it here"
    );
    domain.skip_instruction(length);
    domain.emulated("PAUSE: nothing else to run, the guest goes on");
    Next::Resume
}
