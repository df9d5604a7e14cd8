//! VINTR (exit code 0x64): the guest can take the interrupt it was waiting for.
//!
//! When an interrupt became pending while the guest had interrupts off, the hypervisor set
//! V_IRQ in the VMCB and intercepted VINTR (`domain/interrupts.rs`). The CPU exits here the
//! moment the guest could take a virtual interrupt: RFLAGS.IF = 1 and the instruction after
//! STI has run (AMD APM vol. 2, 15.21.4). The hypervisor withdraws the request and injects
//! the interrupt with EVENTINJ, so the delivery shows in the trace like any other.
//!
//! Except where QEMU's TCG opens the window one instruction early (`quirks.rs`): after a
//! #VMEXIT inside an interrupt shadow (a timer tick between `sti` and `hlt`), VMRUN does not
//! restore the shadow, and the window opens *at* the instruction the shadow covers. For
//! `sti; hlt`, the idiom that waits for an interrupt without missing it, that would lose the
//! wake-up: the handler would run before the HLT, and the HLT then waits for an interrupt
//! that has already come. A CPU runs the HLT first and the interrupt wakes it, so the
//! hypervisor does that: the HLT is done, then the interrupt delivered after it.

use super::Exit;
use super::hlt;
use crate::decide;
use crate::decision::{Decision, Effect};
use crate::domain::Guest;
use crate::quirks::{self, ShadowLost};
use traplab_abi::event::Action;

pub fn handle(exit: &Exit, guest: &Guest) -> Decision {
    let pending = guest.pending_interrupt();
    let shadow_lost = pending.and_then(|_| quirks::window_in_lost_shadow(guest, &exit.instruction));
    let halted_first = matches!(shadow_lost, Some(ShadowLost::AtHalt { .. }));
    let decision = match (pending, shadow_lost) {
        (Some(_), Some(ShadowLost::AtHalt { next })) => hlt::halt(
            guest,
            next,
            "QEMU's TCG opened the interrupt window before the HLT in STI's interrupt shadow (VMRUN did not restore the shadow the #VMEXIT saved); on a CPU the HLT runs first and the interrupt wakes it, so the hypervisor does that: ",
        ),
        (Some(vector), Some(ShadowLost::Before(name))) => decide!(
            Action::Emulate,
            "the guest opened its interrupt window (RFLAGS.IF = 1): the hypervisor injects the pending interrupt {vector:#x}; QEMU's TCG opened it before the {name} an interrupt shadow covers (VMRUN did not restore the shadow): a CPU would deliver it one instruction later"
        ),
        (Some(vector), None) => decide!(
            Action::Emulate,
            "the guest opened its interrupt window (RFLAGS.IF = 1): the hypervisor injects the pending interrupt {vector:#x}"
        ),
        (None, _) => decide!(
            Action::Emulate,
            "the guest opened its interrupt window, but no interrupt is pending any more"
        ),
    };
    // The request is withdrawn here; the pending interrupt goes in before VMRUN (`apply.rs`).
    decision
        .with(Effect::InterruptWindow(None))
        .describe(if halted_first {
            "HLT done, woken at once by the pending interrupt; V_IRQ withdrawn, VINTR no longer intercepted"
        } else {
            "V_IRQ withdrawn, VINTR no longer intercepted"
        })
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

    /// The window opened at the instruction `code` after a VMRUN that entered the guest in
    /// STI's interrupt shadow there, as QEMU's TCG does it (the shadow was in the VMCB,
    /// VMRUN did not restore it; the VINTR exit then saves none).
    fn window_opened_in_a_lost_shadow(code: &[u8]) -> Test {
        let mut test = window_opened(Some(0x20));
        test.code(code);
        test.domain.vcpu.vmcb.control.interrupt_shadow = crate::vmcb::INTERRUPT_SHADOW;
        test.vmrun();
        test.domain.vcpu.vmcb.control.interrupt_shadow = 0;
        test
    }

    #[test]
    fn a_window_tcg_opens_before_the_hlt_of_sti_hlt_lets_the_hlt_run_first() {
        // A CPU keeps the shadow over the HLT: it halts, and the interrupt wakes it, so the
        // handler returns *after* the HLT. Delivered before it, the handler would consume
        // the wake-up and the HLT would wait for an interrupt that has already come.
        let mut test = window_opened_in_a_lost_shadow(&[0xf4]);
        let run = test.run(test.exit(ExitReason::Vintr));
        assert!(
            run.decision.why.contains("the HLT runs first"),
            "{}",
            run.decision.why
        );
        assert!(run.decision.effects.contains(&Effect::Rip(ENTRY + 1)));
        assert!(run.decision.effects.contains(&Effect::HaltUntilInterrupt));
        assert!(
            test.machine.calls.is_empty(),
            "the pending interrupt ends the halt at once: {:?}",
            test.machine.calls
        );
        assert_eq!(run.injected().vector, 0x20);
        assert_eq!(test.rip(), ENTRY + 1, "the interrupt comes after the HLT");
        let control = &test.domain.vcpu.vmcb.control;
        assert_eq!(control.intercept_misc1 & misc1::VINTR, 0);
    }

    #[test]
    fn a_window_tcg_opens_before_another_shadowed_instruction_is_said_in_the_trace() {
        // Not corrected (that would take single-stepping the instruction): the decision
        // says the interrupt comes one instruction early.
        let mut test = window_opened_in_a_lost_shadow(&[0x90]);
        let run = test.run(test.exit(ExitReason::Vintr));
        assert!(
            run.decision
                .why
                .contains("before the NOP an interrupt shadow covers"),
            "{}",
            run.decision.why
        );
        assert_eq!(run.injected().vector, 0x20);
        assert_eq!(test.rip(), ENTRY);
    }

    #[test]
    fn a_window_opened_after_the_shadowed_instruction_ran_is_the_normal_case() {
        // The guest entered in the shadow at ENTRY but is elsewhere now: the shadow is over.
        let mut test = window_opened_in_a_lost_shadow(&[0xf4]);
        test.domain.vcpu.vmcb.save.rip = ENTRY + 1;
        let run = test.run(test.exit(ExitReason::Vintr));
        assert!(!run.decision.why.contains("QEMU"), "{}", run.decision.why);
        assert_eq!(test.rip(), ENTRY + 1);
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
