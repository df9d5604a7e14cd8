//! A physical interrupt (exit code 0x60 INTR): the hypervisor's own timer.
//!
//! The interrupt belongs to the hypervisor, not to the guest: we let it in through our own
//! IDT (`timer::take_pending`), count the tick, and resume the guest exactly where it was.
//! The guest never sees it. What the exit gives the hypervisor is control: a chance to
//! answer the host (pause, step) even while a guest spins, and to notice that the guest's
//! own virtual timer is due (`domain/interrupts.rs`), as Xen's timer softirq does.

use super::Exit;
use crate::decide;
use crate::decision::{Decision, Effect};
use crate::domain::Guest;
use crate::domain::interrupts::TimerPoll;
use traplab_abi::event::Action;

pub fn handle(exit: &Exit, guest: &Guest) -> Decision {
    let (poll, after) = guest.vcpu.interrupts.poll(exit.tsc);
    let decision = match poll {
        TimerPoll::Pending(vector) => decide!(
            Action::Emulate,
            "the hypervisor's timer interrupted the guest, and the guest's own timer is due: interrupt {vector:#x} becomes pending for the guest"
        ),
        TimerPoll::Merged(vector) => decide!(
            Action::Emulate,
            "the hypervisor's timer interrupted the guest; the guest's timer is due again, but interrupt {vector:#x} is still pending: the two merge into one"
        ),
        TimerPoll::NotDue => decide!(
            Action::Emulate,
            "a physical interrupt (the hypervisor's timer) arrived while the guest ran: the hypervisor takes it, the guest never sees it"
        ),
    };
    // The tick is taken through the hypervisor's own IDT (`timer.rs`); the machine reports
    // its number for the `emulate` event.
    let decision = decision.with(Effect::AcknowledgeHostTimer);
    match poll {
        TimerPoll::NotDue => decision,
        _ => decision
            .with(Effect::Timer(after.timer))
            .with(Effect::PendingInterrupt(after.pending)),
    }
}
