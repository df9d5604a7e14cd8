//! HLT (exit code 0x78): the guest waits for an interrupt.
//!
//! With RFLAGS.IF clear nothing can ever wake it: a bare CPU would sit there forever, so
//! the domain ends (status 0: this is how a lab guest says "done"). With IF set it waits
//! for an interrupt, and no device of a traplab domain raises one yet, so it ends too.

use super::{DomainEnd, Next, instruction_length, undecodable};
use crate::decide;
use crate::domain::Domain;
use traplab_abi::event::Action;

const RFLAGS_IF: u64 = 1 << 9;

pub fn handle(domain: &mut Domain) -> Next {
    let Some(length) = instruction_length(domain) else { return undecodable(domain) };
    domain.skip_instruction(length);
    let reason = if domain.vmcb.save.rflags & RFLAGS_IF == 0 {
        decide!(domain, Action::Emulate, "HLT with interrupts off: nothing can wake the guest, so the domain is done");
        "halted with interrupts off"
    } else {
        decide!(domain, Action::Emulate, "HLT waits for an interrupt, and no device of this domain raises one: the domain is done");
        "halted waiting for an interrupt that no device sends"
    };
    domain.emulated("HLT: the virtual CPU stops");
    Next::End(DomainEnd::Exited { status: 0, reason: reason.into() })
}
