//! HLT (exit code 0x78): the guest waits for an interrupt.
//!
//! With interrupts off nothing can ever wake it: a bare CPU would sit there forever, so the
//! domain ends (status 0: this is how a lab guest says "done"). With interrupts on, it waits
//! for one: if the guest armed a timer (`set_timer`), the hypervisor halts the physical CPU
//! until the guest's timer is due, skips the HLT and delivers the interrupt (`run.rs`, after
//! this exit). Without a timer no device of a traplab domain raises an interrupt, so the
//! domain ends too.

use super::{DomainEnd, Next, instruction_length, undecodable};
use crate::decide;
use crate::domain::Domain;
use alloc::format;
use traplab_abi::event::Action;

pub fn handle(domain: &mut Domain) -> Next {
    let Some(length) = instruction_length(domain) else {
        return undecodable(domain);
    };
    halt(domain, length, "")
}

/// Emulate HLT of `length` bytes: wait for the guest's next interrupt, or end the domain
/// when none can ever come. Also used for a PV kernel's HLT at CPL 3 (`privileged.rs`),
/// with its virtual interrupt flag; `context` starts the decision's reason then.
pub fn halt(domain: &mut Domain, length: u64, context: &str) -> Next {
    domain.skip_instruction(length);
    if !domain.interrupts_enabled() {
        decide!(
            domain,
            Action::Emulate,
            "{context}HLT with interrupts off: nothing can wake the guest, so the domain is done"
        );
        return stop(domain, "halted with interrupts off");
    }
    if domain.pending_interrupt.is_none() && domain.timer.is_none() {
        decide!(
            domain,
            Action::Emulate,
            "{context}HLT waits for an interrupt, and no device of this domain raises one: the domain is done"
        );
        return stop(
            domain,
            "halted waiting for an interrupt that no device sends",
        );
    }
    decide!(
        domain,
        Action::Emulate,
        "{context}HLT with interrupts on: the hypervisor waits for the guest's timer, then delivers its interrupt"
    );
    // HLT ends an interrupt shadow (a `sti; hlt` pair halts in STI's shadow): the
    // interrupt may be delivered right after it.
    domain.vmcb.control.interrupt_shadow = 0;
    let ticks = domain.wait_for_interrupt().unwrap_or(0);
    let plural = if ticks == 1 { "" } else { "s" };
    domain.emulated(format!(
        "HLT: the hypervisor waited {ticks} tick{plural} of its own timer for the guest's timer"
    ));
    Next::Resume
}

/// The virtual CPU stops for good: the domain ends with status 0.
fn stop(domain: &mut Domain, reason: &str) -> Next {
    domain.emulated("HLT: the virtual CPU stops");
    Next::End(DomainEnd::Exited {
        status: 0,
        reason: reason.into(),
    })
}
