//! VINTR (exit code 0x64): the guest can take the interrupt it was waiting for.
//!
//! When an interrupt became pending while the guest had interrupts off, the hypervisor set
//! V_IRQ in the VMCB and intercepted VINTR (`domain/interrupts.rs`). The CPU exits here the
//! moment the guest could take a virtual interrupt: RFLAGS.IF = 1 and the instruction after
//! STI has run (AMD APM vol. 2, 15.21.4). The hypervisor withdraws the request and injects
//! the interrupt with EVENTINJ, so the delivery shows in the trace like any other.

use super::Exit;
use crate::decide;
use crate::decision::{Decision, Effect};
use crate::domain::Guest;
use traplab_abi::event::Action;

pub fn handle(_exit: &Exit, guest: &Guest) -> Decision {
    let decision = match guest.vcpu.interrupts.pending {
        Some(vector) => decide!(
            Action::Emulate,
            "the guest opened its interrupt window (RFLAGS.IF = 1): the hypervisor injects the pending interrupt {vector:#x}"
        ),
        None => decide!(
            Action::Emulate,
            "the guest opened its interrupt window, but no interrupt is pending any more"
        ),
    };
    // The request is withdrawn here; the pending interrupt goes in before VMRUN (`apply.rs`).
    decision
        .with(Effect::InterruptWindow(None))
        .describe("V_IRQ withdrawn, VINTR no longer intercepted")
}
