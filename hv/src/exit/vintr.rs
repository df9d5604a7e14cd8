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
    let decision = match guest.pending_interrupt() {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{ENTRY, Test};
    use crate::vmcb::{misc1, v_intr};
    use traplab_abi::event::EventType;
    use traplab_abi::exit::ExitReason;

    /// A guest that asked for the interrupt window earlier (V_IRQ and the VINTR
    /// intercept, AMD APM vol. 2, 15.21.4) and has just opened it: IF = 1.
    fn window_opened(pending: Option<u8>) -> Test {
        let mut test = Test::long_mode();
        test.interrupts_on();
        test.gate(0x20, 0x21_0000);
        let control = &mut test.domain.vcpu.vmcb.control;
        control.virtual_interrupt = crate::domain::interrupts::window_request(0, Some(0x20));
        control.intercept_misc1 |= misc1::VINTR;
        test.domain.vcpu.interrupts.pending = pending;
        test
    }

    #[test]
    fn the_request_is_withdrawn_and_the_pending_interrupt_injected() {
        let mut test = window_opened(Some(0x20));
        let run = test.run(test.exit(ExitReason::Vintr));
        assert_eq!(run.decision.action, Action::Emulate);
        assert_eq!(run.decision.effects, [Effect::InterruptWindow(None)]);
        assert_eq!(run.kinds(), ["decide", "emulate", "inject"]);
        let inject = run.injected();
        assert_eq!((inject.vector, inject.kind), (0x20, EventType::Interrupt));
        let control = &test.domain.vcpu.vmcb.control;
        assert_eq!(
            control.virtual_interrupt & v_intr::IRQ,
            0,
            "V_IRQ withdrawn"
        );
        assert_eq!(control.intercept_misc1 & misc1::VINTR, 0);
        assert_eq!(test.domain.vcpu.interrupts.pending, None);
        assert_eq!(test.rip(), ENTRY, "the guest is interrupted, not moved");
    }

    #[test]
    fn with_nothing_pending_any_more_only_the_request_is_withdrawn() {
        let mut test = window_opened(None);
        let run = test.run(test.exit(ExitReason::Vintr));
        assert!(
            run.decision
                .why
                .contains("no interrupt is pending any more")
        );
        assert_eq!(run.kinds(), ["decide", "emulate"]);
        assert_eq!(
            test.domain.vcpu.vmcb.control.intercept_misc1 & misc1::VINTR,
            0
        );
    }
}
