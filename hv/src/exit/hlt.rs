//! HLT (exit code 0x78): the guest waits for an interrupt.
//!
//! With interrupts off nothing can ever wake it: a bare CPU would sit there forever, so the
//! domain ends (status 0: this is how a lab guest says "done"). With interrupts on, it waits
//! for one: if the guest armed a timer (`set_timer`), the hypervisor halts the physical CPU
//! until the guest's timer is due, skips the HLT and delivers the interrupt (before the
//! next VMRUN, `apply.rs`). Without a timer no device of a traplab domain raises an
//! interrupt, so the domain ends too.

use super::{Exit, undecodable};
use crate::decide;
use crate::decision::{Decision, DomainEnd, Effect};
use crate::domain::Guest;
use traplab_abi::event::Action;

pub fn handle(exit: &Exit, guest: &Guest) -> Decision {
    let Some(length) = exit.instruction_length(guest) else {
        return undecodable();
    };
    halt(guest, guest.vcpu.rip_after(length), "")
}

/// Emulate a HLT that continues at `next`: wait for the guest's next interrupt, or end the
/// domain when none can ever come. Also used for a PV kernel's HLT at CPL 3
/// (`privileged.rs`), with its virtual interrupt flag; `context` starts the decision's
/// reason then.
pub fn halt(guest: &Guest, next: u64, context: &str) -> Decision {
    let interrupts = &guest.vcpu.interrupts;
    if !guest.interrupts_enabled() {
        return decide!(
            Action::Emulate,
            "{context}HLT with interrupts off: nothing can wake the guest, so the domain is done"
        )
        .with(Effect::Rip(next))
        .describe("HLT: the virtual CPU stops")
        .ending(stopped("halted with interrupts off"));
    }
    if interrupts.pending.is_none() && interrupts.timer.is_none() {
        return decide!(
            Action::Emulate,
            "{context}HLT waits for an interrupt, and no device of this domain raises one: the domain is done"
        )
        .with(Effect::Rip(next))
        .describe("HLT: the virtual CPU stops")
        .ending(stopped("halted waiting for an interrupt that no device sends"));
    }
    // HLT ends an interrupt shadow (a `sti; hlt` pair halts in STI's shadow): the
    // interrupt may be delivered right after it.
    decide!(
        Action::Emulate,
        "{context}HLT with interrupts on: the hypervisor waits for the guest's timer, then delivers its interrupt"
    )
    .with(Effect::Rip(next))
    .with(Effect::EndInterruptShadow)
    .with(Effect::HaltUntilInterrupt)
    .describe("HLT")
}

/// The virtual CPU stops for good: the domain ends with status 0.
fn stopped(reason: &str) -> DomainEnd {
    DomainEnd::Exited {
        status: 0,
        reason: reason.into(),
    }
}
