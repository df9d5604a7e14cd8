//! VINTR (exit code 0x64): the guest can take the interrupt it was waiting for.
//!
//! When an interrupt became pending while the guest had interrupts off, the hypervisor set
//! V_IRQ in the VMCB and intercepted VINTR (`domain/interrupts.rs`). The CPU exits here the
//! moment the guest could take a virtual interrupt: RFLAGS.IF = 1 and the instruction after
//! STI has run (AMD APM vol. 2, 15.21.4). The hypervisor withdraws the request and injects
//! the interrupt with EVENTINJ, so the delivery shows in the trace like any other.

use super::Next;
use crate::decide;
use crate::domain::Domain;
use traplab_abi::event::Action;

pub fn handle(domain: &mut Domain) -> Next {
    match domain.pending_interrupt {
        Some(vector) => decide!(
            domain,
            Action::Emulate,
            "the guest opened its interrupt window (RFLAGS.IF = 1): the hypervisor injects the pending interrupt {vector:#x}"
        ),
        None => decide!(
            domain,
            Action::Emulate,
            "the guest opened its interrupt window, but no interrupt is pending any more"
        ),
    }
    domain.interrupt_window_open();
    domain.emulated("V_IRQ withdrawn, VINTR no longer intercepted");
    Next::Resume
}
