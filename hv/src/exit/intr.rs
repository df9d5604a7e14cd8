//! A physical interrupt (exit code 0x60 INTR): the hypervisor's own timer.
//!
//! The interrupt belongs to the hypervisor, not to the guest: we let it in through our own
//! IDT (`timer::take_pending`), count the tick, and resume the guest exactly where it was.
//! The guest never sees it. What the exit gives the hypervisor is control: a chance to
//! answer the host (pause, step) even while a guest spins.

use super::Next;
use crate::decide;
use crate::domain::Domain;
use alloc::format;
use traplab_abi::event::Action;

pub fn handle(domain: &mut Domain) -> Next {
    decide!(
        domain,
        Action::Emulate,
        "a physical interrupt (the hypervisor's timer) arrived while the guest ran: the hypervisor takes it, the guest never sees it"
    );
    crate::timer::take_pending();
    domain.emulated(format!("timer tick {} acknowledged", crate::timer::ticks()));
    Next::Resume
}
