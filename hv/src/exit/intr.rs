//! A physical interrupt (exit code 0x60 INTR): the hypervisor's own timer.
//!
//! The interrupt belongs to the hypervisor, not to the guest: we let it in through our own
//! IDT (`timer::take_pending`), count the tick, and resume the guest exactly where it was.
//! The guest never sees it. What the exit gives the hypervisor is control: a chance to
//! answer the host (pause, step) even while a guest spins, and to notice that the guest's
//! own virtual timer is due (`domain/interrupts.rs`), as Xen's timer softirq does.

use super::Next;
use crate::decide;
use crate::domain::{Domain, TimerPoll};
use alloc::format;
use traplab_abi::event::Action;

pub fn handle(domain: &mut Domain) -> Next {
    crate::timer::take_pending();
    match domain.poll_timer() {
        TimerPoll::Pending(vector) => decide!(
            domain,
            Action::Emulate,
            "the hypervisor's timer interrupted the guest, and the guest's own timer is due: interrupt {vector:#x} becomes pending for the guest"
        ),
        TimerPoll::Merged(vector) => decide!(
            domain,
            Action::Emulate,
            "the hypervisor's timer interrupted the guest; the guest's timer is due again, but interrupt {vector:#x} is still pending: the two merge into one"
        ),
        TimerPoll::NotDue => decide!(
            domain,
            Action::Emulate,
            "a physical interrupt (the hypervisor's timer) arrived while the guest ran: the hypervisor takes it, the guest never sees it"
        ),
    }
    domain.emulated(format!("timer tick {} acknowledged", crate::timer::ticks()));
    Next::Resume
}
