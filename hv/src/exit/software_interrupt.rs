//! INT n, INT3 and INTO (exit code 0x75 SWINT): deliver them as the CPU would.
//!
//! Under QEMU's TCG a guest's `int3` (and `into`) does not raise an intercepted #BP (#OF):
//! it exits as SWINT, like every INT n form (see ../shared/DESIGN.md). TCG reports no vector
//! in EXITINFO1 (real CPUs with decode assists do), so we decode the instruction. A software
//! interrupt pushes the address of the *next* instruction, so we move RIP past it. Then:
//! a domain with a trap-table entry for the vector gets it bounced (`delivery.rs`), in its
//! kernel (`Domain::bounces_events`: not a non-PV kernel's user program's);
//! otherwise it is reflected as a software interrupt event (EVENTINJ type 4), which keeps
//! the gate's DPL check (AMD APM vol. 2, 15.20, 8.9.3).

use super::{Exit, undecodable};
use crate::decide;
use crate::decision::{Decision, Delivery, Effect};
use crate::domain::Guest;
use iced_x86::Mnemonic;
use traplab_abi::event::Action;
use traplab_abi::hypercall::TrapInfo;
use traplab_abi::svm::{Event, EventType};

pub fn handle(exit: &Exit, guest: &Guest) -> Decision {
    // `lock int n` decodes as no instruction: TCG exits here where a CPU raises #UD, which
    // `undecodable` delivers (`quirks::locked`).
    let Some(instruction) = exit.decode_instruction(guest) else {
        return undecodable(exit, guest);
    };
    let vector = match instruction.mnemonic() {
        Mnemonic::Int3 => 3,
        Mnemonic::Into => 4,
        Mnemonic::Int => instruction.immediate8(),
        _ => return undecodable(exit, guest),
    };
    let length = instruction.len() as u64;
    if let Some(entry) = guest.trap_table_entry(vector) {
        return bounced(guest, vector, length, entry);
    }
    // EXERCISE breakpoint.1: this describes `int 3` (cd 03) as INT3 (cc): tell the two forms
    // apart by the instruction, not by the vector.
    let decision = match vector {
        3 => decide!(
            Action::Reflect,
            "INT3 (TCG exits on it as SWINT, not as a #BP intercept): reflect #BP into the guest's IDT, returning after the INT3"
        ),
        4 => decide!(
            Action::Reflect,
            "INTO with OF set (TCG exits on it as SWINT): reflect #OF into the guest's IDT, returning after the INTO"
        ),
        _ => decide!(
            Action::Reflect,
            "the guest's own software interrupt: reflect vector {vector:#x} into its IDT, returning after the instruction"
        ),
    };
    reflected(guest, vector, length, decision)
}

/// An INT3 or INTO at RIP whose #BP or #OF the CPU raised and the exception intercept
/// caught (`exception.rs`), as a CPU does (QEMU's TCG exits on them as SWINT instead, and
/// `handle` takes them): the intercept comes before the delivery, RIP still on the
/// instruction (AMD APM vol. 2, 15.12). Both are traps, whose frame holds the next RIP: the
/// hypervisor delivers them as `handle` delivers the SWINT, RIP past the instruction and
/// the gate's DPL checked (as KVM moves RIP on before it injects a #BP or #OF again,
/// `svm_update_soft_interrupt_rip`). `None`: no INT3 or INTO at RIP (a #BP from an `int 3`,
/// `cd 03`, exits as SWINT on any CPU, INT n's intercept).
pub fn intercepted(exit: &Exit, guest: &Guest, vector: u8) -> Option<Decision> {
    let instruction = exit.decode_instruction(guest)?;
    let (name, mnemonic) = match (vector, instruction.mnemonic()) {
        (3, Mnemonic::Int3) => ("INT3", "#BP"),
        (4, Mnemonic::Into) => ("INTO", "#OF"),
        _ => return None,
    };
    let length = instruction.len() as u64;
    if let Some(entry) = guest.trap_table_entry(vector) {
        return Some(bounced(guest, vector, length, entry));
    }
    let decision = decide!(
        Action::Reflect,
        "{name} raised {mnemonic}, intercepted before its delivery with RIP still on the {name}: reflect {mnemonic} into the guest's IDT as the CPU delivers it, returning after the {name}"
    );
    Some(reflected(guest, vector, length, decision))
}

/// The software interrupt `vector` of the `length`-byte instruction at RIP, bounced to the
/// handler the guest registered for it with `set_trap_table`, returning after the
/// instruction.
fn bounced(guest: &Guest, vector: u8, length: u64, entry: TrapInfo) -> Decision {
    crate::delivery::software_interrupt(
        guest,
        after_the_instruction(guest, length).into(),
        vector,
        entry,
        format_args!(
            "the guest's own software interrupt {vector:#x} (returning after the instruction)"
        ),
        crate::here!(),
    )
}

/// `decision` carried out: the software interrupt `vector` of the `length`-byte instruction
/// at RIP, reflected through the guest's IDT as a software interrupt event (EVENTINJ type
/// 4), returning after the instruction.
fn reflected(guest: &Guest, vector: u8, length: u64, decision: Decision) -> Decision {
    decision
        .with_all(after_the_instruction(guest, length))
        .deliver(Delivery::Inject {
            event: Event {
                vector,
                kind: EventType::Software,
                error_code: None,
            },
            handler: guest.idt_handler(vector),
            synthetic: false,
        })
}

/// RIP past the `length`-byte instruction, the old one kept in case the delivery faults
/// (`exception.rs` puts it back then).
fn after_the_instruction(guest: &Guest, length: u64) -> [Effect; 2] {
    [
        Effect::SoftwareInterruptRip(Some(guest.vcpu.vmcb.save.rip)),
        Effect::Rip(guest.vcpu.rip_after(length)),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{self, ENTRY, Test, trap};
    use traplab_abi::event::Body;
    use traplab_abi::exit::ExitReason;

    const HANDLER: u64 = 0x20_d000;

    /// `bytes` at RIP exit as SWINT, with an IDT gate for `vector`.
    fn software_interrupt(test: &mut Test, bytes: &[u8], vector: u8) -> crate::testing::Run {
        test.code(bytes);
        test.gate(vector, HANDLER);
        test.run(test.exit(ExitReason::SoftwareInterrupt))
    }

    #[test]
    fn int3_is_reflected_as_a_software_event_for_vector_3_returning_after_it() {
        // EVENTINJ type 4 (software interrupt, AMD APM vol. 2, 15.20): the CPU pushes the
        // VMCB's RIP, so RIP moves past the INT3 first; the gate's DPL is checked as for
        // the INT3 itself.
        let mut test = Test::long_mode();
        let run = software_interrupt(&mut test, &[0xcc], 3);
        assert_eq!(run.decision.action, Action::Reflect);
        let (event, handler, synthetic) = testing::injected(&run.decision);
        assert_eq!(
            event,
            Event {
                vector: 3,
                kind: EventType::Software,
                error_code: None
            }
        );
        assert_eq!(handler, Some(HANDLER));
        assert!(!synthetic);
        assert_eq!(run.injected().name, "#BP (INT3)");
        assert_eq!(test.rip(), ENTRY + 1);
        // Kept in case the delivery faults (`exception.rs` puts RIP back then).
        assert_eq!(test.domain.vcpu.software_interrupt_rip, Some(ENTRY));
    }

    #[test]
    fn int_0x80_reaches_the_int_0x80_handler() {
        let mut test = Test::long_mode();
        let run = software_interrupt(&mut test, &[0xcd, 0x80], 0x80);
        let inject = run.injected();
        assert_eq!((inject.vector, inject.name.as_ref()), (0x80, "INT 0x80"));
        assert_eq!(inject.handler, Some(HANDLER));
        assert_eq!(run.applied.resume_at, Some(HANDLER));
        assert_eq!(test.rip(), ENTRY + 2);
    }

    #[test]
    fn into_in_a_32_bit_guest_is_vector_4() {
        // INTO exits only when OF is set; then it is INT 4.
        let mut test = Test::protected_mode();
        test.code(&[0xce]);
        let decision = test.decide(test.exit(ExitReason::SoftwareInterrupt));
        let (event, _, _) = testing::injected(&decision);
        assert_eq!((event.vector, event.kind), (4, EventType::Software));
        assert!(decision.effects.contains(&Effect::Rip(ENTRY + 1)));
    }

    #[test]
    fn into_does_not_exist_in_64_bit_mode_and_cannot_be_emulated() {
        // 0xCE is invalid in 64-bit mode (AMD APM vol. 3, INTO).
        let mut test = Test::long_mode();
        test.code(&[0xce]);
        let decision = test.decide(test.exit(ExitReason::SoftwareInterrupt));
        assert_eq!(
            testing::killed(&decision),
            "undecodable instruction at the exit"
        );
    }

    #[test]
    fn with_a_trap_table_entry_the_interrupt_is_bounced_with_the_next_rip_in_the_frame() {
        let mut test = Test::long_mode();
        test.code(&[0xcd, 0x80]);
        test.trap_table(&[trap(0x80, HANDLER)]);
        let run = test.run(test.exit(ExitReason::SoftwareInterrupt));
        assert_eq!(run.decision.action, Action::Bounce);
        let bounce = testing::bounced(&run.decision);
        assert_eq!(
            bounce.words.len(),
            5,
            "RIP, CS, RFLAGS, RSP, SS: no error code"
        );
        assert_eq!(bounce.words[0], ENTRY + 2);
        assert_eq!(test.rip(), HANDLER);
    }

    #[test]
    fn an_int_n_below_its_entry_s_dpl_is_a_gp_as_through_an_idt_gate() {
        // A PV kernel (at CPL 3, counted as ring 1) at INT 0x80, whose entry has DPL 0: #GP
        // with the gate's error code, 0x80 * 8 + 2, at the INT (a fault); DPL 1 lets it
        // through. INT3 is not checked (Xen's own gate for #BP has DPL 3). A kernel at CPL 0
        // passes any DPL.
        let entry = |vector: u8, dpl: u8| TrapInfo {
            flags: TrapInfo::CLEAR_IF | dpl,
            ..trap(vector, HANDLER)
        };
        for (code, cpl, pv, dpl, bounced_as) in [
            (&[0xcd, 0x80][..], 0, false, 0, (0x80, None)),
            (&[0xcd, 0x80][..], 3, true, 0, (13, Some(0x80 * 8 + 2))),
            (&[0xcd, 0x80][..], 3, true, 1, (0x80, None)),
            (&[0xcc][..], 3, true, 0, (3, None)),
        ] {
            let mut test = Test::long_mode();
            test.code(code);
            test.domain.vcpu.vmcb.save.cpl = cpl;
            test.domain.pv.enabled = pv;
            let vector = if code[0] == 0xcc { 3 } else { 0x80 };
            test.trap_table(&[entry(vector, dpl), trap(13, HANDLER + 0x100)]);
            let decision = test.decide(test.exit(ExitReason::SoftwareInterrupt));
            let bounce = testing::bounced(&decision);
            let case = format!("{code:x?} at CPL {cpl}, PV {pv}, DPL {dpl}");
            assert_eq!((bounce.vector, bounce.error_code), bounced_as, "{case}");
            if bounce.vector == 13 {
                assert_eq!(bounce.words[1], ENTRY, "a fault: RIP at the INT ({case})");
                assert!(decision.why.contains("has DPL 0"), "{}", decision.why);
            }
        }
    }

    #[test]
    fn a_user_program_s_int_n_goes_through_the_idt_even_with_a_trap_table() {
        // A non-PV kernel's trap table is its kernel's: its user program's INT 0x80 (CPL 3)
        // goes through the IDT, where the CPU switches to the kernel's stack, never to a
        // bounce frame on the user's stack.
        for code in [&[0xcd, 0x80][..], &[0xcc][..]] {
            let mut test = Test::long_mode();
            test.code(code);
            test.domain.vcpu.vmcb.save.cpl = 3;
            let vector = if code[0] == 0xcc { 3 } else { 0x80 };
            test.trap_table(&[TrapInfo {
                flags: 3,
                ..trap(vector, HANDLER)
            }]);
            let decision = test.decide(test.exit(ExitReason::SoftwareInterrupt));
            assert_eq!(decision.action, Action::Reflect, "{}", decision.why);
            let (event, _, _) = testing::injected(&decision);
            assert_eq!(event.vector, vector, "{code:x?}");
        }
    }

    #[test]
    fn a_bounced_int_n_pushes_no_error_code_whatever_its_vector() {
        // INT n never pushes an error code: only the listed exceptions do, when the CPU
        // raises them (Intel SDM vol. 3A, 6.13). Vector 0x2e is 0x0e + 32, not a #PF.
        let mut test = Test::long_mode();
        test.code(&[0xcd, 0x2e]);
        test.trap_table(&[trap(0x2e, HANDLER)]);
        let decision = test.decide(test.exit(ExitReason::SoftwareInterrupt));
        let bounce = testing::bounced(&decision);
        assert_eq!(bounce.error_code, None);
        assert_eq!(bounce.words.len(), 5);
        assert_eq!(bounce.words[0], ENTRY + 2);
    }

    #[test]
    fn int_0x0e_bounced_is_a_software_interrupt_not_a_page_fault() {
        // Vector 14 raised by `int 0x0e` is the guest's own interrupt: no error code, no CR2,
        // named for what it is, and its handler's return ends a software event.
        let mut test = Test::long_mode();
        test.code(&[0xcd, 0x0e]);
        test.trap_table(&[trap(0x0e, HANDLER)]);
        let run = test.run(test.exit(ExitReason::SoftwareInterrupt));
        let bounce = testing::bounced(&run.decision);
        assert_eq!(
            (bounce.kind, bounce.error_code),
            (EventType::Software, None)
        );
        assert!(
            run.decision
                .why
                .contains("registered a handler for INT 0xe"),
            "{}",
            run.decision.why
        );
        let Some(Body::Bounce(event)) = run.events.iter().find(|body| body.kind() == "bounce")
        else {
            panic!("a bounce event: {:?}", run.kinds());
        };
        assert_eq!((event.name.as_ref(), event.cr2), ("INT 0xe", None));
        let top = test.domain.vcpu.in_flight.last().copied();
        assert_eq!(top.map(|event| event.kind), Some(EventType::Software));
    }

    #[test]
    fn an_int_n_without_an_entry_in_a_domain_with_a_trap_table_is_reflected() {
        let mut test = Test::long_mode();
        test.trap_table(&[trap(14, 0x20_e000)]);
        let run = software_interrupt(&mut test, &[0xcd, 0x80], 0x80);
        assert_eq!(run.decision.action, Action::Reflect);
        assert_eq!(run.injected().handler, Some(HANDLER));
    }

    #[test]
    fn a_swint_exit_at_an_instruction_that_is_no_interrupt_kills_the_domain() {
        let mut test = Test::long_mode();
        test.code(&[0x90]);
        let decision = test.decide(test.exit(ExitReason::SoftwareInterrupt));
        assert_eq!(decision.action, Action::Kill);
    }
}
