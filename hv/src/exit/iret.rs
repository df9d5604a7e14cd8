//! IRET (exit code 0x74): a guest handler returns. The end of every flow.
//!
//! The hypervisor intercepts IRET only to *see* the return (AMD APM vol. 2, 15.9: the
//! intercept is taken before the instruction executes). It reads the frame the IRET will
//! pop, records where the guest goes back to, and lets the CPU execute the IRET itself:
//! emulating it (privilege checks, segment loads, NMI unblocking) would teach less and risk
//! more. Resuming at the IRET with the intercept on would exit again at once, so the
//! intercept is off for this one IRET and back on at the next exit (`Vcpu::after_vmrun`): every handler
//! is entered through an exit, so no return is missed.
//!
//! NMI blocking ends once this IRET has run, not here (`Vcpu::nmi_blocked`),
//! and no event is injected while it is still to run: a handler entered first would return
//! through the suspended intercept, unseen.
//!
//! The next exit may come before the IRET ran: VMRUN takes a pending physical interrupt
//! before the guest's first instruction (an INTR exit with RIP still at the IRET). The
//! same IRET then exits again; its return was noted already (`Vcpu::iret_not_yet_run`),
//! and noting it twice would end the delivery below it on the stack instead (seen under
//! load: an upcall's IRET, retried, recorded as the return of the #PF handler it interrupted).

use super::Exit;
use crate::decide;
use crate::decision::{Decision, Effect, Returning};
use crate::domain::Guest;
use crate::vmcb::{attrib, segment};
use alloc::format;
use iced_x86::Code;
use traplab_abi::event::{Action, ReturnPath, delivery_name};
use traplab_abi::x86::RFlags;

pub fn handle(exit: &Exit, guest: &Guest) -> Decision {
    // `lock iretq`: QEMU's TCG takes the intercept and would execute the IRET (measured); a
    // CPU raises #UD before any intercept.
    if let Some(undefined) = crate::quirks::locked(guest, &exit.instruction) {
        return undefined;
    }
    let decision = noted(exit, guest);
    // An NMI waits for this IRET (it is blocked until the IRET has run). SVM has no
    // NMI-window intercept, and the next exit could be any time later (never, in a loop
    // that makes none): the hypervisor single-steps the IRET, as KVM does
    // (`nmi_singlestep`), and injects the NMI at the #DB right after it
    // (`exit/exception.rs`). Not when the guest single-steps itself: its own #DB comes.
    // Nor for a task return (NT set outside long mode: in long mode the IRET faults): it
    // would save the hypervisor's TF in the outgoing task's TSS.
    let rflags = guest.vcpu.vmcb.save.rflags;
    if guest.vcpu.nmi_blocked
        && guest.devices.lapic.nmi_requested
        && rflags & (RFlags::TRAP_FLAG | RFlags::NESTED_TASK).bits() == 0
    {
        let mut decision = decision.with(Effect::OpenNmiWindow);
        decision.why = format!(
            "{}; an NMI waits for it, and SVM has no NMI-window intercept: the hypervisor sets RFLAGS.TF to single-step the IRET (as KVM does), so that the CPU exits right after it",
            decision.why
        )
        .into();
        return decision;
    }
    decision
}

/// The IRET's decision: its return noted (once), and the CPU let execute it.
fn noted(exit: &Exit, guest: &Guest) -> Decision {
    if guest.vcpu.iret_not_yet_run == Some(guest.vcpu.vmcb.save.rip) {
        return decide!(
            Action::Emulate,
            "the same IRET again: an interrupt came before the CPU executed it, and its return was noted already; the hypervisor lets the CPU execute it"
        )
        .with(Effect::SuspendIretIntercept);
    }
    let returning = guest.vcpu.in_flight.last().copied();
    let name = returning.map(|event| delivery_name(event.vector, event.kind));
    // The operand size sets the width of each word popped: IRETQ (REX.W) pops 8-byte RIP,
    // CS, RFLAGS, RSP, SS; IRETD 4-byte ones, IRET with a 16-bit operand size (16-bit code,
    // or a 66 prefix in 32-bit code) 2-byte ones. RSP and SS come too when the IRET returns
    // to an outer privilege level, or runs in 64-bit mode, where IRET pops SS:RSP whatever
    // the operand size and the privilege levels (AMD APM vol. 3, IRET; Intel SDM vol. 2A,
    // IRET: "pops SS:RSP unconditionally" in 64-bit mode).
    let size: usize = match exit
        .decode_instruction(guest)
        .map(|instruction| instruction.code())
    {
        Some(Code::Iretq) => 8,
        Some(Code::Iretw) => 2,
        _ => 4,
    };
    let vmcb = &guest.vcpu.vmcb;
    let save = &vmcb.save;
    // The frame is on the stack, at SS's base plus the stack pointer: all of RSP in 64-bit
    // mode, else ESP or SP as SS's B bit says (AMD APM vol. 2, 4.7.3).
    let long_mode_code = vmcb.code_bits() == 64;
    let pointer_mask: u64 = match (long_mode_code, save.ss.attrib & attrib::DEFAULT_32 != 0) {
        (true, _) => u64::MAX,
        (false, true) => 0xffff_ffff,
        (false, false) => 0xffff,
    };
    let stack = vmcb
        .segment_base(segment::SS)
        .wrapping_add(save.rsp & pointer_mask)
        & vmcb.linear_address_mask();
    // RIP, CS and RFLAGS first: an IRET at the same privilege outside 64-bit mode pops only
    // those, and its frame may end right where readable memory does.
    let mut frame = [0u8; 40];
    let mut readable = guest.read_virtual(stack, &mut frame[..3 * size]).is_ok();
    let word = |frame: &[u8; 40], index: usize| {
        let mut bytes = [0u8; 8];
        bytes[..size].copy_from_slice(&frame[index * size..(index + 1) * size]);
        u64::from_le_bytes(bytes)
    };
    let (rip, cs, rflags) = (word(&frame, 0), word(&frame, 1) as u16, word(&frame, 2));
    let rsp = if size == 8 || long_mode_code || cs & 3 != save.cpl as u16 {
        let above = stack.wrapping_add(3 * size as u64) & vmcb.linear_address_mask();
        readable &= guest
            .read_virtual(above, &mut frame[3 * size..5 * size])
            .is_ok();
        word(&frame, 3)
    } else {
        // At the same privilege outside 64-bit mode: the stack pointer just above the frame,
        // as wide as SS's B bit says (the bits above a 16-bit SP stay).
        let popped = save.rsp.wrapping_add(3 * size as u64) & pointer_mask;
        (save.rsp & !pointer_mask & 0xffff_ffff) | popped
    };
    let decision = match (&name, readable) {
        (Some(name), true) => decide!(
            Action::Emulate,
            "the guest's {name} handler returns with IRET to {rip:#x}: the hypervisor notes it and lets the CPU execute the IRET"
        ),
        (None, true) => decide!(
            Action::Emulate,
            "an IRET to {rip:#x} that ends no event the hypervisor delivered: the hypervisor lets the CPU execute it"
        ),
        (_, false) => decide!(
            Action::Emulate,
            "an IRET whose frame the hypervisor cannot read: the CPU will execute it (and fault if it cannot either)"
        ),
    };
    // Any IRET ends the blocking of NMIs, the NMI handler's or another (APM vol. 2, 8.2.2),
    // once it has run: this intercept comes before it does (`Vcpu::after_vmrun`).
    let decision = decision
        .with(Effect::PopInFlight)
        .with(Effect::SuspendIretIntercept);
    if !readable {
        return decision;
    }
    decision.returning(Returning {
        via: ReturnPath::Iret,
        event: returning.map(|event| (event.vector, event.kind)),
        rip,
        cs,
        rflags,
        rsp,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::vcpu::{InFlight, NmiWindow};
    use crate::testing::{ENTRY, Test, UNMAPPED};
    use crate::vmcb::misc1;
    use traplab_abi::event::{Body, EventType};
    use traplab_abi::exit::ExitReason;

    const STACK: u64 = 0x7_ff00;
    const HANDLER_RETURNS_TO: u64 = 0x20_0100;

    /// A #PF handler at its `iretq` (`48 cf`), the hardware's 64-bit frame at RSP: RIP, CS,
    /// RFLAGS, RSP, SS (AMD APM vol. 2, 8.9.3), and the IRET intercept on.
    fn page_fault_handler_returning() -> Test {
        let mut test = Test::long_mode();
        test.code(&[0x48, 0xcf]);
        for (index, word) in [HANDLER_RETURNS_TO, 0x08, 0x202, 0x7_ff80, 0x10]
            .into_iter()
            .enumerate()
        {
            test.write_u64(STACK + 8 * index as u64, word);
        }
        test.domain.vcpu.vmcb.save.rsp = STACK;
        test.domain.vcpu.vmcb.control.intercept_misc1 |= misc1::IRET;
        test.domain.vcpu.in_flight.push(InFlight {
            vector: 14,
            kind: EventType::Exception,
        });
        test
    }

    #[test]
    fn a_lock_prefixed_iretq_is_a_ud_and_ends_no_handler() {
        // QEMU's TCG takes the IRET intercept for `lock iretq` and would execute it
        // (measured); a CPU raises #UD before any intercept (AMD APM vol. 3, 1.2.5).
        let mut test = page_fault_handler_returning();
        test.gate(6, 0x20_1000);
        test.code(&[0xf0, 0x48, 0xcf]);
        let decision = test.decide(test.exit(ExitReason::Iret));
        assert_eq!(crate::testing::injected(&decision).0.vector, 6);
        assert!(
            decision.why.contains("LOCK prefix on IRETQ"),
            "{}",
            decision.why
        );
        assert!(
            !decision.effects.contains(&Effect::SuspendIretIntercept),
            "the CPU does not run it"
        );
    }

    #[test]
    fn iretq_reads_the_frame_and_names_the_event_whose_handler_returns() {
        let test = page_fault_handler_returning();
        let decision = test.decide(test.exit(ExitReason::Iret));
        assert_eq!(decision.action, Action::Emulate);
        assert!(
            decision.why.contains("#PF handler returns"),
            "{}",
            decision.why
        );
        assert_eq!(
            decision.returning.as_deref(),
            Some(&Returning {
                via: ReturnPath::Iret,
                event: Some((14, EventType::Exception)),
                rip: HANDLER_RETURNS_TO,
                cs: 0x08,
                rflags: 0x202,
                rsp: 0x7_ff80,
            })
        );
        assert_eq!(
            decision.effects,
            [Effect::PopInFlight, Effect::SuspendIretIntercept]
        );
    }

    #[test]
    fn the_cpu_executes_the_iret_itself_with_its_intercept_off_for_once() {
        // The intercept is taken before IRET executes (AMD APM vol. 2, 15.9): resuming at it
        // with the intercept on would exit again at once.
        let mut test = page_fault_handler_returning();
        let run = test.run(test.exit(ExitReason::Iret));
        assert_eq!(run.kinds(), ["decide", "return"]);
        assert_eq!(test.rip(), ENTRY, "RIP stays at the IRET: the CPU runs it");
        assert_eq!(run.applied.resume_at, Some(HANDLER_RETURNS_TO));
        assert!(test.domain.vcpu.in_flight.is_empty(), "the #PF is over");
        let vcpu = &test.domain.vcpu;
        assert_eq!(vcpu.vmcb.control.intercept_misc1 & misc1::IRET, 0);
        assert!(vcpu.iret_intercept_suspended);
        // The next exit puts it back: no later return is missed.
        test.vmrun();
        assert_ne!(
            test.domain.vcpu.vmcb.control.intercept_misc1 & misc1::IRET,
            0
        );
    }

    #[test]
    fn no_interrupt_enters_a_handler_while_the_let_through_iret_is_still_to_run() {
        // The handler runs with RFLAGS.IF = 1 and a timer interrupt is pending: a handler
        // entered at this VMRUN would return through the suspended intercept, unseen. The
        // hypervisor asks for the window instead: the CPU exits as soon as the guest can take
        // it (here at once, before the IRET), with the IRET's intercept on again, and the
        // interrupt is delivered then.
        let mut test = page_fault_handler_returning();
        test.interrupts_on();
        test.domain.vcpu.interrupts.pending = Some(0x30);
        let run = test.run(test.exit(ExitReason::Iret));
        assert!(!run.kinds().contains(&"inject"), "{:?}", run.kinds());
        assert!(
            run.events
                .iter()
                .any(|event| matches!(event, Body::Emulate(emulate)
                if emulate.what.contains("the IRET the hypervisor lets through runs first"))),
            "{:?}",
            run.kinds()
        );
    }

    #[test]
    fn an_iret_an_interrupt_came_before_is_not_a_second_return() {
        // An upcall's handler returns inside the #PF handler it interrupted.
        let mut test = page_fault_handler_returning();
        test.domain.vcpu.in_flight.push(InFlight {
            vector: 0x2f,
            kind: EventType::Interrupt,
        });
        let run = test.run(test.exit(ExitReason::Iret));
        assert_eq!(run.kinds(), ["decide", "return"]);
        // VMRUN takes the hypervisor's timer before the IRET runs: an INTR exit at the IRET.
        test.vmrun();
        assert_eq!(test.rip(), ENTRY);
        // The IRET exits again: the same return, not the #PF handler's.
        let again = test.run(test.exit(ExitReason::Iret));
        assert_eq!(again.kinds(), ["decide"], "no second return");
        assert!(again.decision.why.contains("same IRET again"));
        assert_eq!(
            test.domain.vcpu.in_flight,
            [InFlight {
                vector: 14,
                kind: EventType::Exception
            }],
            "the #PF is still in flight"
        );
        // This time the IRET runs: the next exit is elsewhere, and the #PF handler's own
        // IRET later is its return.
        test.vmrun();
        test.domain.vcpu.vmcb.save.rip = HANDLER_RETURNS_TO;
        test.domain.vcpu.after_vmrun();
        test.domain.vcpu.vmcb.save.rip = ENTRY;
        let later = test.run(test.exit(ExitReason::Iret));
        assert_eq!(later.kinds(), ["decide", "return"]);
        assert!(later.decision.why.contains("#PF handler returns"));
        assert!(test.domain.vcpu.in_flight.is_empty());
    }

    /// An IRETD (`cf`, no REX.W) at RIP with these 4-byte words on the stack: the return
    /// its decision notes.
    fn iretd_over(mut test: Test, words: &[u32]) -> Decision {
        test.code(&[0xcf]);
        for (index, word) in words.iter().enumerate() {
            test.write(STACK + 4 * index as u64, &word.to_le_bytes());
        }
        test.domain.vcpu.vmcb.save.rsp = STACK;
        test.decide(test.exit(ExitReason::Iret))
    }

    #[test]
    fn an_iretd_to_the_same_privilege_level_pops_three_4_byte_words() {
        // A 32-bit IRET that stays at CPL 0 pops EIP, CS, EFLAGS only: ESP is just above.
        let decision = iretd_over(Test::protected_mode(), &[0x20_0100, 0x08, 0x202]);
        let returning = decision.returning.expect("the frame is readable");
        assert_eq!(
            (returning.rip, returning.cs, returning.rflags, returning.rsp),
            (0x20_0100, 0x08, 0x202, STACK + 12)
        );
        assert!(decision.why.contains("ends no event"), "{}", decision.why);
    }

    #[test]
    fn an_iretd_at_the_same_privilege_reads_three_words_where_memory_ends() {
        // The frame's three words are the last 12 bytes of RAM (paging off): the CPU pops
        // them and goes on; its return is noted. A return to CPL 3 from there would pop
        // ESP and SS beyond the end, which the CPU cannot read either.
        let top = traplab_abi::boot::GUEST_RAM_SIZE - 12;
        for (words, noted) in [
            ([0x20_0100u32, 0x08, 0x202], true),
            ([0x40_0000, 0x1b, 0x202], false),
        ] {
            let mut test = Test::protected_mode();
            test.code(&[0xcf]);
            for (index, word) in words.iter().enumerate() {
                test.write(top + 4 * index as u64, &word.to_le_bytes());
            }
            test.domain.vcpu.vmcb.save.rsp = top;
            let decision = test.decide(test.exit(ExitReason::Iret));
            assert_eq!(decision.returning.is_some(), noted, "{}", decision.why);
            if let Some(returning) = decision.returning {
                assert_eq!((returning.rip, returning.rsp), (0x20_0100, top + 12));
            }
        }
    }

    #[test]
    fn an_iretd_in_64_bit_mode_pops_esp_and_ss_even_at_the_same_privilege_level() {
        // `cf` without REX.W in 64-bit code: five 4-byte words, SS:ESP among them.
        let decision = iretd_over(Test::long_mode(), &[0x20_0100, 0x08, 0x202, 0x9_0000, 0x10]);
        let returning = decision.returning.expect("the frame is readable");
        assert_eq!(
            (returning.rip, returning.cs, returning.rsp),
            (0x20_0100, 0x08, 0x9_0000)
        );
    }

    #[test]
    fn an_iretd_to_an_outer_privilege_level_also_pops_esp_and_ss() {
        let decision = iretd_over(
            Test::protected_mode(),
            &[0x40_0000, 0x1b, 0x202, 0x9_0000, 0x23],
        );
        let returning = decision.returning.expect("the frame is readable");
        assert_eq!((returning.cs, returning.rsp), (0x1b, 0x9_0000), "to CPL 3");
    }

    #[test]
    fn the_frame_is_read_at_ss_base_plus_esp() {
        // Outside 64-bit mode SS has a base: the frame is at SS.base + ESP, not at ESP.
        let mut test = Test::protected_mode();
        test.domain.vcpu.vmcb.save.ss.base = 0x1000;
        test.code(&[0xcf]);
        for (index, word) in [0x20_0100u32, 0x08, 0x202].iter().enumerate() {
            test.write(0x1000 + STACK + 4 * index as u64, &word.to_le_bytes());
        }
        test.domain.vcpu.vmcb.save.rsp = STACK;
        let decision = test.decide(test.exit(ExitReason::Iret));
        let returning = decision.returning.expect("the frame is readable");
        assert_eq!(
            (returning.rip, returning.cs, returning.rsp),
            (0x20_0100, 0x08, STACK + 12)
        );
    }

    #[test]
    fn an_iret_with_a_16_bit_operand_size_pops_2_byte_words() {
        // `66 cf` in 32-bit code: IP, CS and FLAGS, two bytes each.
        let mut test = Test::protected_mode();
        test.code(&[0x66, 0xcf]);
        for (index, word) in [0x0100u16, 0x08, 0x202].iter().enumerate() {
            test.write(STACK + 2 * index as u64, &word.to_le_bytes());
        }
        test.domain.vcpu.vmcb.save.rsp = STACK;
        let decision = test.decide(test.exit(ExitReason::Iret));
        let returning = decision.returning.expect("the frame is readable");
        assert_eq!(
            (returning.rip, returning.cs, returning.rflags, returning.rsp),
            (0x0100, 0x08, 0x202, STACK + 6)
        );
    }

    #[test]
    fn an_iret_whose_frame_cannot_be_read_gives_no_return_event() {
        // The CPU will fault on it too; the hypervisor does not guess where it goes.
        let mut test = page_fault_handler_returning();
        test.domain.vcpu.vmcb.save.rsp = UNMAPPED;
        let run = test.run(test.exit(ExitReason::Iret));
        assert_eq!(run.decision.returning, None);
        assert_eq!(run.kinds(), ["decide"]);
        assert!(run.decision.why.contains("cannot read"));
        assert_eq!(run.applied.resume_at, None);
    }

    /// An NMI handler at its `iretq` (the frame of [`page_fault_handler_returning`]), NMIs
    /// blocked since its delivery, and a second NMI asked for meanwhile.
    fn nmi_handler_returning_with_an_nmi_waiting() -> Test {
        let mut test = page_fault_handler_returning();
        test.domain.vcpu.in_flight[0] = InFlight {
            vector: 2,
            kind: EventType::Nmi,
        };
        test.domain.vcpu.nmi_blocked = true;
        test.domain.devices.lapic.nmi_requested = true;
        test.gate(2, 0x21_2000);
        test
    }

    #[test]
    fn an_nmi_waiting_for_the_iret_gets_a_single_step_over_it_then_goes_in_right_after() {
        // SVM has no NMI-window intercept: the hypervisor sets TF so that the CPU exits with
        // #DB right after the IRET (KVM's nmi_singlestep), and injects the NMI there.
        let mut test = nmi_handler_returning_with_an_nmi_waiting();
        test.domain.vcpu.vmcb.save.dr6 = 0xffff_0ff0;
        let run = test.run(test.exit(ExitReason::Iret));
        assert!(
            run.decision
                .why
                .contains("sets RFLAGS.TF to single-step the IRET"),
            "{}",
            run.decision.why
        );
        assert_eq!(run.decision.effects.last(), Some(&Effect::OpenNmiWindow));
        assert_eq!(
            test.domain.vcpu.vmcb.control.eventinj, 0,
            "nothing injected yet"
        );
        let vcpu = &test.domain.vcpu;
        assert_ne!(vcpu.vmcb.save.rflags & RFlags::TRAP_FLAG.bits(), 0);
        assert_eq!(
            vcpu.nmi_window,
            Some(NmiWindow {
                iret_at: ENTRY,
                dr6: 0xffff_0ff0,
                stepped: false
            })
        );

        // The CPU runs the IRET (RFLAGS from the frame: TF clear), and the step's #DB exits
        // at the instruction it returned to, DR6.BS set.
        let save = &mut test.domain.vcpu.vmcb.save;
        save.rip = HANDLER_RETURNS_TO;
        save.rflags = 0x202;
        save.dr6 = 0xffff_4ff0;
        test.domain.vcpu.vmcb.control.exitcode = 0x41;
        test.vmrun();
        assert!(!test.domain.vcpu.nmi_blocked, "the IRET has run");
        let exit = test.exit(ExitReason::Exception {
            vector: 1,
            error_code: 0,
            address: 0,
        });
        let run = test.run(exit);
        assert!(
            run.decision
                .why
                .contains("the trap is the hypervisor's, not the guest's"),
            "{}",
            run.decision.why
        );
        assert_eq!(run.injected().name, "NMI");
        assert_eq!(run.applied.resume_at, Some(0x21_2000));
        let vcpu = &test.domain.vcpu;
        assert_eq!(vcpu.vmcb.save.dr6, 0xffff_0ff0, "DR6 as the guest left it");
        assert_eq!(vcpu.nmi_window, None);
        assert!(vcpu.nmi_blocked, "the new NMI's handler runs");
        assert!(!test.domain.devices.lapic.nmi_requested);
    }

    #[test]
    fn an_iret_that_did_not_run_takes_the_step_back_and_opens_it_again_when_it_exits_again() {
        // An interrupt came before the IRET ran (an INTR exit at the IRET): TF is the
        // hypervisor's, so it goes before any handler could push it.
        let mut test = nmi_handler_returning_with_an_nmi_waiting();
        test.run(test.exit(ExitReason::Iret));
        test.domain.vcpu.vmcb.control.exitcode = 0x60;
        test.vmrun();
        let vcpu = &test.domain.vcpu;
        assert_eq!(vcpu.vmcb.save.rflags & RFlags::TRAP_FLAG.bits(), 0);
        assert_eq!(vcpu.nmi_window, None);
        assert!(vcpu.nmi_blocked, "still in the handler");
        let run = test.run(test.exit(ExitReason::Iret));
        assert!(run.decision.why.contains("the same IRET again"));
        assert_eq!(run.decision.effects.last(), Some(&Effect::OpenNmiWindow));
    }

    #[test]
    fn no_step_is_set_without_an_nmi_waiting_or_when_the_guest_steps_itself() {
        let mut test = nmi_handler_returning_with_an_nmi_waiting();
        test.domain.devices.lapic.nmi_requested = false;
        let decision = test.decide(test.exit(ExitReason::Iret));
        assert!(!decision.effects.contains(&Effect::OpenNmiWindow));

        let mut test = nmi_handler_returning_with_an_nmi_waiting();
        test.domain.vcpu.vmcb.save.rflags |= RFlags::TRAP_FLAG.bits();
        let decision = test.decide(test.exit(ExitReason::Iret));
        assert!(!decision.effects.contains(&Effect::OpenNmiWindow));
    }

    /// [`nmi_handler_returning_with_an_nmi_waiting`] past its IRET with the step set: the
    /// CPU ran the IRET and raised the step's #DB with `dr6`.
    fn stepped_past_the_iret(dr6: u64) -> Test {
        let mut test = nmi_handler_returning_with_an_nmi_waiting();
        test.domain.vcpu.vmcb.save.dr6 = 0xffff_0ff0;
        test.run(test.exit(ExitReason::Iret));
        let save = &mut test.domain.vcpu.vmcb.save;
        save.rip = HANDLER_RETURNS_TO;
        save.rflags = 0x202;
        save.dr6 = dr6;
        test.domain.vcpu.vmcb.control.exitcode = 0x41;
        test.vmrun();
        test
    }

    fn debug_exit(test: &Test) -> Exit {
        test.exit(ExitReason::Exception {
            vector: 1,
            error_code: 0,
            address: 0,
        })
    }

    #[test]
    fn a_breakpoint_of_the_guest_s_with_the_step_is_delivered_first_without_bs() {
        // The IRET's frame read hit the guest's DR0 watchpoint: one #DB with B0 and BS. The
        // guest's cause is its own (a trap #DB ranks above the NMI): delivered with B0 and
        // without BS; the NMI waits for the next exit.
        let mut test = stepped_past_the_iret(0xffff_4ff1);
        test.gate(1, 0x21_3000);
        let run = test.run(debug_exit(&test));
        assert_eq!(run.injected().vector, 1);
        let vcpu = &test.domain.vcpu;
        assert_eq!(vcpu.vmcb.save.dr6, 0xffff_0ff1, "B0, and no BS");
        assert_eq!(vcpu.nmi_window, None);
        assert!(
            test.domain.devices.lapic.nmi_requested,
            "the NMI still waits"
        );
    }

    #[test]
    fn the_window_lasts_one_exit_after_the_iret_even_when_its_debug_exit_is_not_handled_here() {
        // gdb stepping the IRET takes the step's #DB as its own (gdb/mod.rs): the exit after
        // it closes the window, so that a later #DB with BS (the guest's own single step) is
        // never taken for the hypervisor's.
        let mut test = stepped_past_the_iret(0xffff_4ff0);
        assert!(
            test.domain
                .vcpu
                .nmi_window
                .is_some_and(|window| window.stepped)
        );
        test.domain.vcpu.vmcb.control.exitcode = 0x41;
        test.vmrun();
        assert_eq!(test.domain.vcpu.nmi_window, None);
    }

    #[test]
    fn no_step_is_set_over_a_task_return() {
        // IRET with NT set outside long mode returns to the previous task and saves EFLAGS
        // into the outgoing TSS: the hypervisor's TF would be saved with them.
        let mut test = nmi_handler_returning_with_an_nmi_waiting();
        test.domain.vcpu.vmcb.save.rflags |= RFlags::NESTED_TASK.bits();
        let decision = test.decide(test.exit(ExitReason::Iret));
        assert!(!decision.effects.contains(&Effect::OpenNmiWindow));
    }
}
