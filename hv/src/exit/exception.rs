//! Intercepted exceptions (exit codes 0x40–0x5F): hand them back to the guest.
//!
//! The hypervisor intercepts every vector (AMD APM vol. 2, 15.12): the CPU stops *before*
//! delivering the exception and exits with the vector in the exit code, the error code in
//! EXITINFO1 and, for #PF, the faulting address in EXITINFO2 (CR2 is not written). An HVM
//! guest owns its exceptions, so the hypervisor gives each one back — reflected through the
//! guest's IDT, or bounced to a handler it registered (`delivery.rs`).
//!
//! If the exception happened while the CPU was delivering another event (EXITINTINFO is
//! valid: say the guest's IDT has no gate for the first one), the hypervisor combines the
//! two the way the CPU would have: #DF, or shutdown for a fault during #DF (the double-fault
//! rule in `traplab_abi::x86::combine`). A bare machine hides this chain; the trace shows it.

use super::Exit;
use super::privileged::{self, PrivilegedOp};
use super::ptwr::{self, PageTableWrite};
use super::software_interrupt;
use crate::decision::{Decision, Effect};
use crate::delivery::{DR6_BREAKPOINTS, DR6_DEBUG_REGISTER_ACCESS, DR6_SINGLE_STEP};
use crate::domain::Guest;
use crate::{decide, deliver};
use alloc::format;
use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;
use traplab_abi::event::Action;
use traplab_abi::svm::EventType;
use traplab_abi::x86::{self, Combined};

pub fn handle(exit: &Exit, guest: &Guest, vector: u8, error_code: u32, address: u64) -> Decision {
    let exception = x86::exception(vector);
    let interrupted = exit.interrupted;
    // EXERCISE invalid-opcode.1: emulate a UD2 (`0f 0b`, in `exit.instruction`) here
    // instead of reflecting the #UD: decide Action::Emulate, skip its two bytes
    // (`Effect::Rip(guest.vcpu.rip_after(2))`), say what was emulated
    // (`.describe("UD2 …")`) and return that decision.
    let mut first = Vec::new();
    if let Some(event) = interrupted {
        // The interrupted event was not delivered: its handler never ran.
        if guest
            .vcpu
            .in_flight
            .last()
            .is_some_and(|top| top.vector == event.vector)
        {
            first.push(Effect::PopInFlight);
        }
        // We moved RIP past the INT n before injecting it (a software interrupt returns
        // after itself). Its delivery failed, so the fault belongs to the INT n itself:
        // put RIP back, as a CPU that delivered it natively would report (KVM does the same).
        if event.kind == EventType::Software
            && let Some(rip) = guest.vcpu.software_interrupt_rip
        {
            first.push(Effect::Rip(rip));
            first.push(Effect::SoftwareInterruptRip(None));
        }
    } else if let Some(decision) = crate::quirks::correct(guest, &exit.instruction, vector) {
        return decision;
    } else if vector == 1
        && let Some(step) = nmi_window_step(guest)
    {
        match step {
            WindowStep::Alone(decision) => return decision,
            // The guest's own causes with it: its #DB goes first (a trap #DB ranks above an
            // NMI, AMD APM vol. 2, 8.5), without the step's BS; the NMI waits for the next
            // exit.
            WindowStep::WithTheGuests(effects) => first.extend(effects),
        }
    } else if vector == 13 {
        // A PV kernel's privileged instruction is the hypervisor's to emulate (privileged.rs).
        match privileged::handle(exit, guest, error_code) {
            PrivilegedOp::NotPv => {}
            PrivilegedOp::Done(decision) => return decision,
            PrivilegedOp::GuestsFault(why) => {
                return deliver!(guest, 13, error_code, false, "{why}");
            }
        }
    } else if vector == 14 {
        // A store to a pinned page table is the hypervisor's to check (ptwr.rs).
        match ptwr::handle(exit, guest, error_code, address) {
            PageTableWrite::NotPinned => {}
            PageTableWrite::Done(decision) => return decision,
            PageTableWrite::Refused(why) => {
                return deliver!(
                    guest,
                    after[],
                    page_fault(address, error_code),
                    false,
                    "{why}: refused, so the guest gets the #PF its store raised"
                );
            }
        }
    } else if (vector == 3 || vector == 4)
        && let Some(decision) = software_interrupt::intercepted(exit, guest, vector)
    {
        // An INT3's #BP or an INTO's #OF, as a CPU reports them (TCG exits on both as SWINT):
        // traps, delivered returning after the instruction (software_interrupt.rs).
        return decision;
    }

    // Only an exception whose delivery was interrupted takes part in the double-fault rule:
    // an external interrupt, an NMI or an INT n is benign, whatever its vector (Intel SDM
    // vol. 3A, 6.15, table 6-4): INT 8 through a gate that is not present is #NP, not #DF.
    let interrupted_exception = interrupted
        .filter(|event| event.kind == EventType::Exception)
        .map(|event| event.vector);
    match x86::combine(interrupted_exception, vector) {
        Combined::TripleFault => decide!(
            Action::Kill,
            "{} while the CPU delivered #DF: a real CPU shuts down (triple fault), so the domain ends",
            exception.mnemonic
        )
        .with_all(first)
        .killing(format!(
            "triple fault: {} while delivering #DF",
            exception.mnemonic
        )),
        Combined::DoubleFault => {
            // EXERCISE double-fault.1: a real CPU writes CR2 when it detects a page fault,
            // even one it then turns into #DF (Linux's #DF handler reads CR2 to recognise a
            // stack overflow). Do the same before delivering the #DF.
            let interrupted = interrupted.map_or("?", |event| x86::exception(event.vector).mnemonic);
            deliver!(
                guest,
                after first,
                8,
                0,
                false,
                "{} while the CPU delivered {}: the double-fault rule makes it #DF",
                exception.mnemonic,
                interrupted
            )
        }
        Combined::Deliver(_) => {
            if vector == 14 {
                // The intercepted #PF left CR2 alone; the guest's handler reads it there.
                first.push(Effect::ControlRegister(2, address));
            }
            if let Some((corrected, what)) =
                crate::quirks::error_code(guest, interrupted, vector, error_code)
            {
                return deliver!(
                    guest,
                    after first,
                    vector,
                    corrected,
                    false,
                    "the guest owns its exceptions ({} {}; QEMU's TCG reported error code {error_code:#x}, a real CPU reports {corrected:#x}, {what})",
                    exception.mnemonic,
                    exception.name
                );
            }
            if vector == 1 {
                // Which condition raised it is in DR6, where the handler will look: the trace
                // says it too (a single step, a breakpoint, a watchpoint look alike otherwise).
                let dr6 = guest.vcpu.vmcb.save.dr6;
                return deliver!(
                    guest,
                    after first,
                    vector,
                    error_code,
                    false,
                    "the guest owns its exceptions (#DB debug; DR6 {dr6:#x}: {})",
                    debug_causes(dr6)
                );
            }
            deliver!(
                guest,
                after first,
                vector,
                error_code,
                false,
                "the guest owns its exceptions ({} {})",
                exception.mnemonic,
                exception.name
            )
        }
    }
}

/// What a #DB is when the NMI window is open ([`crate::domain::vcpu::Vcpu::nmi_window`]).
enum WindowStep {
    /// The step alone: not the guest's, so it is not delivered; the waiting NMI goes in
    /// instead (`apply::before_resume`).
    Alone(Decision),
    /// The step, and causes of the guest's own (a breakpoint, DR6 B0–B3 or BD): the #DB is
    /// delivered after these effects (DR6 without the step's BS, the window closed).
    WithTheGuests(Vec<Effect>),
}

/// DR6's causes of a #DB other than the single step: B0–B3 and BD.
const DR6_OTHER_CAUSES: u64 = DR6_BREAKPOINTS | DR6_DEBUG_REGISTER_ACCESS;

/// The causes DR6 holds, by their names in the AMD APM (vol. 2, 13.1.1.3): `B1`, `B0, BS`.
fn debug_causes(dr6: u64) -> String {
    const CAUSES: [(u64, &str); 7] = [
        (1 << 0, "B0: breakpoint 0"),
        (1 << 1, "B1: breakpoint 1"),
        (1 << 2, "B2: breakpoint 2"),
        (1 << 3, "B3: breakpoint 3"),
        (DR6_DEBUG_REGISTER_ACCESS, "BD: debug-register access"),
        (DR6_SINGLE_STEP, "BS: single step"),
        (1 << 15, "BT: task switch"),
    ];
    let named: Vec<&str> = CAUSES
        .iter()
        .filter(|(bit, _)| dr6 & bit != 0)
        .map(|(_, name)| *name)
        .collect();
    match named.is_empty() {
        true => "no cause set".into(),
        false => named.join(", "),
    }
}

/// The #DB at RIP, if it is the step `exit/iret.rs` set over an NMI handler's IRET; `None`
/// for any other #DB.
fn nmi_window_step(guest: &Guest) -> Option<WindowStep> {
    let window = guest.vcpu.nmi_window?;
    let dr6 = guest.vcpu.vmcb.save.dr6;
    if dr6 & DR6_SINGLE_STEP == 0 {
        return None;
    }
    if (dr6 & !window.dr6) & DR6_OTHER_CAUSES != 0 {
        return Some(WindowStep::WithTheGuests(vec![
            Effect::DebugRegister(6, window.dr6 | (dr6 & !DR6_SINGLE_STEP)),
            Effect::CloseNmiWindow,
        ]));
    }
    Some(WindowStep::Alone(
        decide!(
            Action::Emulate,
            "#DB right after the IRET the hypervisor single-stepped (the NMI window): the IRET has run, so NMIs are no longer blocked; the trap is the hypervisor's, not the guest's: DR6 back as it was, and the waiting NMI goes in now"
        )
        .with(Effect::DebugRegister(6, window.dr6))
        .with(Effect::CloseNmiWindow),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::vcpu::InFlight;
    use crate::testing::{self, ENTRY, Test, trap};
    use traplab_abi::exit::ExitReason;
    use traplab_abi::svm::Event;

    const HANDLER: u64 = 0x21_3000;

    /// An intercepted exception: the CPU stopped before delivering it (AMD APM vol. 2,
    /// 15.12), error code in EXITINFO1, #PF's address in EXITINFO2.
    fn exception(vector: u8, error_code: u32, address: u64) -> ExitReason {
        ExitReason::Exception {
            vector,
            error_code,
            address,
        }
    }

    /// The same exit, raised while the CPU delivered `interrupted` (EXITINTINFO valid).
    fn during(test: &Test, reason: ExitReason, interrupted: Event) -> Exit {
        Exit {
            interrupted: Some(interrupted),
            ..test.exit(reason)
        }
    }

    #[test]
    fn a_page_fault_is_reflected_with_cr2_set_to_exitinfo2_and_the_idt_handler_named() {
        // The intercepted #PF did not write CR2 (APM vol. 2, 15.12): the hypervisor does,
        // before the guest's handler reads it.
        let mut test = Test::long_mode();
        test.gate(14, HANDLER);
        let run = test.run(test.exit(exception(14, 0b10, 0xdead_b000)));
        assert_eq!(run.decision.action, Action::Reflect);
        assert!(
            run.decision.why.contains("handler 0x213000"),
            "{}",
            run.decision.why
        );
        assert!(
            run.decision
                .effects
                .contains(&Effect::ControlRegister(2, 0xdead_b000))
        );
        let (event, handler, synthetic) = testing::injected(&run.decision);
        assert_eq!(event, Event::exception(14, 0b10));
        assert_eq!(handler, Some(HANDLER));
        assert!(!synthetic, "the CPU raised it");
        assert_eq!(test.domain.vcpu.vmcb.save.cr2, 0xdead_b000);
        assert_eq!(run.injected().cr2, Some(0xdead_b000));
        assert_eq!(
            test.rip(),
            ENTRY,
            "a fault: the handler returns to the instruction"
        );
    }

    #[test]
    fn an_invalid_opcode_is_reflected_without_an_error_code() {
        // XSETBV with CR4.OSXSAVE clear raises #UD (the `other-intercepts` lab's case).
        let mut test = Test::long_mode();
        test.code(&[0x0f, 0x01, 0xd1]);
        test.gate(6, HANDLER);
        let run = test.run(test.exit(exception(6, 0, 0)));
        let (event, handler, _) = testing::injected(&run.decision);
        assert_eq!(event, Event::exception(6, 0));
        assert_eq!(event.error_code, None, "#UD pushes no error code");
        assert_eq!(handler, Some(HANDLER));
        assert!(run.decision.at.contains("src/exit/exception.rs:"));
        assert_eq!(run.kinds(), ["decide", "inject"]);
    }

    #[test]
    fn an_exception_without_an_idt_gate_is_still_reflected_and_the_reason_warns() {
        // The CPU will fault delivering it (and exit again, with EXITINTINFO).
        let test = Test::long_mode();
        let decision = test.decide(test.exit(exception(0, 0, 0)));
        assert_eq!(testing::injected(&decision).1, None);
        assert!(
            decision.why.contains("no present interrupt or trap gate"),
            "{}",
            decision.why
        );
    }

    #[test]
    fn a_page_fault_bounced_to_the_guest_s_trap_table_handler() {
        let mut test = Test::long_mode();
        test.trap_table(&[trap(14, HANDLER)]);
        let run = test.run(test.exit(exception(14, 0b110, 0x40_0000)));
        assert_eq!(run.decision.action, Action::Bounce);
        let bounce = run.bounced();
        assert_eq!((bounce.vector, bounce.error_code), (14, Some(0b110)));
        assert_eq!(
            bounce.cr2,
            Some(0x40_0000),
            "CR2 set before the handler runs"
        );
        assert_eq!(test.rip(), HANDLER);
        assert_eq!(test.gpr(4), bounce.frame, "RSP at the frame");
    }

    #[test]
    fn a_debug_exception_s_reason_names_the_causes_dr6_holds() {
        // A watchpoint on DR1 and a single step at once (DR6's reserved bits read as 1).
        let mut test = Test::long_mode();
        test.gate(1, HANDLER);
        test.domain.vcpu.vmcb.save.dr6 = 0xffff_0ff0 | 1 << 1 | 1 << 14;
        let decision = test.decide(test.exit(exception(1, 0, 0)));
        assert_eq!(decision.action, Action::Reflect);
        assert!(
            decision
                .why
                .contains("(#DB debug; DR6 0xffff4ff2: B1: breakpoint 1, BS: single step)"),
            "{}",
            decision.why
        );
        let (event, ..) = testing::injected(&decision);
        assert_eq!(event, Event::exception(1, 0));
    }

    #[test]
    fn any_debug_exception_clears_dr7_gd_for_its_handler() {
        // A CPU clears DR7.GD as it enters a #DB handler, whatever the cause (Intel SDM vol.
        // 3B, 17.2.4; KVM: "DR7.GD should be cleared upon any #DB exception"), so that the
        // handler may read DR6; QEMU's TCG leaves it, and the hypervisor delivers the #DB.
        let mut test = Test::long_mode();
        test.gate(1, HANDLER);
        let gd = 1 << 13;
        test.domain.vcpu.vmcb.save.dr7 = 0x400 | gd | 1;
        test.domain.vcpu.vmcb.save.dr6 = 0xffff_0ff1; // B0: an instruction breakpoint
        let run = test.run(test.exit(exception(1, 0, 0)));
        assert_eq!(run.decision.action, Action::Reflect);
        assert_eq!(
            test.domain.vcpu.vmcb.save.dr7,
            0x400 | 1,
            "GD cleared, L0 kept"
        );
        assert!(run.changes().contains(&("dr7", 0x2401, 0x401)));
        // Without GD, DR7 is left as it is.
        let mut test = Test::long_mode();
        test.gate(1, HANDLER);
        test.domain.vcpu.vmcb.save.dr7 = 0x401;
        let run = test.run(test.exit(exception(1, 0, 0)));
        assert_eq!(
            run.kinds(),
            ["decide", "inject"],
            "nothing changed, nothing to say"
        );
    }

    #[test]
    fn a_page_fault_while_delivering_a_page_fault_becomes_a_double_fault() {
        // The double-fault rule (APM vol. 2, 8.2.9): #PF during #PF delivery is #DF(0).
        let mut test = Test::long_mode();
        test.gate(8, HANDLER);
        let exit = during(
            &test,
            exception(14, 0b10, 0x7_f000),
            Event::exception(14, 0),
        );
        let decision = test.decide(exit);
        assert_eq!(decision.action, Action::Reflect);
        assert!(decision.why.contains("#PF while the CPU delivered #PF"));
        let (event, handler, synthetic) = testing::injected(&decision);
        assert_eq!(event, Event::exception(8, 0));
        assert_eq!(handler, Some(HANDLER));
        assert!(!synthetic);
    }

    #[test]
    fn a_page_fault_while_delivering_a_double_fault_is_a_triple_fault() {
        // A contributory fault or #PF during #DF delivery shuts the CPU down.
        let test = Test::long_mode();
        let exit = during(&test, exception(14, 0b10, 0x7_f000), Event::exception(8, 0));
        let decision = test.decide(exit);
        assert_eq!(decision.action, Action::Kill);
        assert_eq!(
            testing::killed(&decision),
            "triple fault: #PF while delivering #DF"
        );
        assert_eq!(decision.delivery, None);
    }

    #[test]
    fn a_benign_exception_during_a_delivery_is_delivered_after_it() {
        // #UD (benign) while delivering #GP: handled serially, no #DF.
        let test = Test::long_mode();
        let exit = during(&test, exception(6, 0, 0), Event::exception(13, 0));
        let decision = test.decide(exit);
        assert_eq!(testing::injected(&decision).0, Event::exception(6, 0));
    }

    #[test]
    fn an_int_8_or_an_interrupt_whose_delivery_faults_is_handled_serially() {
        // INT 8 (a software interrupt) through a gate that is not present: #NP, not the #DF
        // or triple fault vector 8's class would make of it. An external interrupt at 13 (a
        // PIC left at base 8) whose delivery raises #GP: #GP, not #DF.
        for (interrupted, vector, fault, error_code) in [
            (EventType::Software, 8, 11, 8 * 8 + 2),
            // The error code names gate 13 of the IDT (bit 1), for an external event (bit 0).
            (EventType::Interrupt, 13, 13, 13 * 8 + 3),
        ] {
            let mut test = Test::long_mode();
            test.gate(fault, HANDLER);
            let exit = during(
                &test,
                exception(fault, error_code, 0),
                Event {
                    vector,
                    kind: interrupted,
                    error_code: None,
                },
            );
            let decision = test.decide(exit);
            assert_eq!(decision.action, Action::Reflect, "{}", decision.why);
            let (event, handler, _) = testing::injected(&decision);
            assert_eq!(event.vector, fault, "{}", decision.why);
            assert_eq!(handler, Some(HANDLER));
        }
    }

    #[test]
    fn an_interrupted_delivery_pops_its_in_flight_entry_its_handler_never_ran() {
        let mut test = Test::long_mode();
        test.gate(8, HANDLER);
        test.domain.vcpu.in_flight.push(InFlight {
            vector: 14,
            kind: EventType::Exception,
        });
        let exit = during(
            &test,
            exception(14, 0b10, 0x7_f000),
            Event::exception(14, 0),
        );
        let run = test.run(exit);
        assert!(run.decision.effects.contains(&Effect::PopInFlight));
        assert_eq!(
            test.domain.vcpu.in_flight,
            [InFlight {
                vector: 8,
                kind: EventType::Exception
            }],
            "the #PF is gone, the #DF is delivered"
        );
    }

    #[test]
    fn an_int3_s_intercepted_breakpoint_returns_after_the_int3() {
        // On a CPU the #BP of an INT3 is intercepted before its delivery, RIP still on the
        // `cc` (QEMU's TCG exits on it as SWINT instead). A trap: the frame must hold the
        // next RIP, else the handler returns onto the INT3 again, for ever.
        let mut test = Test::long_mode();
        test.gate(3, 0x20_3000);
        test.code(&[0xcc]);
        let exit = test.exit(ExitReason::Exception {
            vector: 3,
            error_code: 0,
            address: 0,
        });
        let run = test.run(exit);
        assert_eq!(run.decision.action, Action::Reflect);
        let (event, _, _) = testing::injected(&run.decision);
        assert_eq!((event.vector, event.kind), (3, EventType::Software));
        assert_eq!(test.domain.vcpu.software_interrupt_rip, Some(ENTRY));
        assert_eq!(test.rip(), ENTRY + 1, "pushed as the return address");
    }

    #[test]
    fn a_software_interrupt_whose_delivery_faulted_puts_rip_back_on_the_int() {
        // The INT 0x80 was injected with RIP past it; its gate faulted (#GP(0x80 * 8 + 2),
        // IDT bit set). The #GP belongs to the INT itself: its handler must see RIP at it.
        let mut test = Test::long_mode();
        test.gate(13, HANDLER);
        test.domain.vcpu.vmcb.save.rip = ENTRY + 2;
        test.domain.vcpu.software_interrupt_rip = Some(ENTRY);
        let int_0x80 = Event {
            vector: 0x80,
            kind: EventType::Software,
            error_code: None,
        };
        let exit = during(&test, exception(13, 0x402, 0), int_0x80);
        let run = test.run(exit);
        assert!(run.decision.effects.contains(&Effect::Rip(ENTRY)));
        assert_eq!(test.rip(), ENTRY);
        assert_eq!(test.domain.vcpu.software_interrupt_rip, None);
        assert_eq!(run.injected().error_code, Some(0x402));
    }

    #[test]
    fn a_gp_with_tcg_s_long_mode_idt_error_code_is_corrected_to_the_gate_s_index() {
        // TCG reports vector * 16 + 2 for a bad 64-bit gate; the index field (bits 15:3)
        // holds the vector on hardware: vector * 8 + 2.
        let mut test = Test::long_mode();
        let interrupt = Event {
            vector: 0x20,
            kind: EventType::Interrupt,
            error_code: None,
        };
        test.gate(13, HANDLER);
        let exit = during(&test, exception(13, 0x20 * 16 + 2, 0), interrupt);
        let decision = test.decide(exit);
        // EXT (bit 0) too: an external interrupt's delivery faulted.
        assert_eq!(
            testing::injected(&decision).0,
            Event::exception(13, 0x20 * 8 + 3)
        );
        assert!(
            decision
                .why
                .contains("QEMU's TCG reported error code 0x202")
        );
    }
}
