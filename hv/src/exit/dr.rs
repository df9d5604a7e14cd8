//! MOV to and from DR0–DR7 (exit codes 0x20–0x3F): the guest's debug registers.
//!
//! VMRUN switches only DR6 and DR7 (they are in the VMCB); DR0–DR3 are not saved anywhere,
//! so the hypervisor keeps the guest's copies and puts them in the real registers, which
//! the hypervisor itself never uses. Under QEMU's TCG, a breakpoint only works once a MOV
//! to DR7 has run on the (virtual) CPU, so a write to DR7 is also executed by the
//! hypervisor. DR4 and DR5 are the old names of DR6 and DR7 while CR4.DE = 0; with CR4.DE
//! set, naming them raises #UD. Bits 63:32 of DR6 and DR7 are reserved: a MOV that writes a
//! 1 there raises #GP(0) (APM vol. 2, 13.1.1; Intel SDM vol. 3B, 17.2). Both checks depend
//! on CR4 or on the value, so the CPU makes them as it executes the MOV, after the
//! intercept: the hypervisor makes them in its place. The other reserved bits of DR6 and
//! DR7 are not refused but fixed: they read back as ones or zeros whatever was written
//! ([`fixed`]). With DR7.GD (general detect) set, any MOV with a debug register raises #DB
//! before it runs, with DR6.BD set, and the CPU clears GD for the handler (APM vol. 2,
//! 13.1.1, DR7; it does so for any #DB, and `delivery.rs` for each #DB it delivers); B0–B3,
//! which tell which breakpoint matched, are cleared with it ("certain debug exceptions may
//! clear bits 0–3": Intel SDM vol. 3B, 17.2.3; KVM clears them as it delivers a #DB): the
//! hypervisor does that too. QEMU's TCG does not implement GD at all, so the hypervisor
//! always takes writes to DR7, and every access while GD is set (`Vcpu::debug_register_intercepts`):
//! a guest's GD works as on a CPU in every lab. The checks come in KVM's order: #UD, then
//! #DB, then #GP.
//!
//! Every access exits with the setting `intercept-dr` too, and while gdb holds a slot
//! (`Vcpu::lent_slots`): then the guest reads and writes its own view of DR7 and of the
//! lent slot's DRn, and the CPU keeps gdb's.

use super::{Exit, undecodable};
use crate::decision::{Decision, Effect};
use crate::delivery::{DR6_BREAKPOINTS, DR6_DEBUG_REGISTER_ACCESS};
use crate::domain::Guest;
use crate::domain::vcpu::DR7_GENERAL_DETECT;
use crate::{decide, deliver};
use alloc::format;
use iced_x86::{Mnemonic, OpKind};
use traplab_abi::event::Action;
use traplab_abi::x86::Cr4Flags;

pub fn handle(exit: &Exit, guest: &Guest, number: u8, write: bool) -> Decision {
    let Some(instruction) = exit.decode_instruction(guest) else {
        return undecodable(exit, guest);
    };
    if instruction.mnemonic() != Mnemonic::Mov {
        return undecodable(exit, guest);
    }
    let debug_extensions = guest.vcpu.vmcb.save.cr4 & Cr4Flags::DEBUGGING_EXTENSIONS.bits() != 0;
    if matches!(number, 4 | 5) && debug_extensions {
        return deliver!(
            guest,
            6,
            0,
            true,
            "MOV with DR{number} while CR4.DE is set: DR4 and DR5 are reserved then, the CPU would raise #UD, and so does the hypervisor"
        );
    }
    let dr7 = guest.vcpu.guest_dr7();
    if dr7 & DR7_GENERAL_DETECT != 0 {
        let dr6 = (guest.vcpu.vmcb.save.dr6 & !DR6_BREAKPOINTS) | DR6_DEBUG_REGISTER_ACCESS;
        let direction = if write { "to" } else { "from" };
        return deliver!(
            guest,
            // General detect is a fault: the RFLAGS it pushes has RF set (`delivery.rs`). GD
            // is cleared there too, as for every #DB the guest is given.
            after [Effect::DebugRegister(6, dr6), Effect::SetResumeFlag],
            1,
            0,
            true,
            "MOV {direction} DR{number} while DR7.GD is set: general detect, the CPU would raise #DB before the MOV runs (DR6.BD set, GD cleared for the handler), and so does the hypervisor (QEMU's TCG does not implement GD)"
        );
    }
    let number = match number {
        4 => 6,
        5 => 7,
        other => other,
    };
    let gpr_operand = if write {
        instruction.op1_register()
    } else {
        instruction.op0_register()
    };
    let (OpKind::Register, Some((register, _))) =
        (instruction.op0_kind(), crate::instruction::gpr(gpr_operand))
    else {
        return undecodable(exit, guest);
    };
    let next = guest.vcpu.rip_after(instruction.len() as u64);
    if write {
        let value = guest.gpr(register);
        if matches!(number, 6 | 7) && value >> 32 != 0 {
            return deliver!(
                guest,
                13,
                0,
                true,
                "MOV DR{number}, {value:#x} sets reserved bits 63:32: the CPU would raise #GP(0), and so does the hypervisor (the value never reaches the VMCB or the CPU's DR7)"
            );
        }
        let held = fixed(number, value);
        let decision = match held == value {
            true => decide!(
                Action::Emulate,
                "MOV DR{number}, {value:#x}: the guest's debug register, kept by the hypervisor and loaded into the CPU"
            ),
            false => decide!(
                Action::Emulate,
                "MOV DR{number}, {value:#x}: the guest's debug register, kept by the hypervisor and loaded into the CPU, with its reserved bits as the CPU fixes them ({held:#x})"
            ),
        };
        decision
            .with(Effect::DebugRegister(number, held))
            .with(Effect::Rip(next))
            .describe(format!("DR{number} = {held:#x}"))
    } else {
        let value = debug_register(guest, number);
        decide!(
            Action::Emulate,
            "MOV from DR{number}: the hypervisor answers with the guest's copy ({value:#x})"
        )
        .with(Effect::Gpr(register, value))
        .with(Effect::Rip(next))
        .describe(format!("read DR{number} = {value:#x}"))
    }
}

/// DR6's bits a MOV writes: B0–B3 (3:0), BD, BS and BT (15:13). Of the rest of its low
/// half, 31:16 and 11:4 read as ones and 12 as zero (AMD APM vol. 2, 13.1.1).
const DR6_WRITABLE: u64 = 0xe00f;
const DR6_ONES: u64 = 0xffff_0ff0;
/// DR7's bits a MOV writes: L0–G3, LE, GE (9:0), GD (13) and the R/W and LEN fields (31:16).
/// Bit 10 reads as one, 11, 12, 14 and 15 as zeros (AMD APM vol. 2, 13.1.1).
const DR7_WRITABLE: u64 = 0xffff_23ff;
const DR7_ONES: u64 = 0x400;

/// What debug register `number` holds after a MOV of `value` (bits 63:32 already checked):
/// DR6's and DR7's reserved bits at their fixed values, DR0–DR3 as written.
fn fixed(number: u8, value: u64) -> u64 {
    match number {
        6 => value & DR6_WRITABLE | DR6_ONES,
        7 => value & DR7_WRITABLE | DR7_ONES,
        _ => value,
    }
}

/// The guest's debug register: DR0–DR3 are the hypervisor's copies, DR6 and DR7 the VMCB's
/// (DR7 with the guest's own bits in the slots lent to gdb, `Vcpu::guest_dr7`).
fn debug_register(guest: &Guest, number: u8) -> u64 {
    match number {
        0..=3 => guest.vcpu.debug_registers[number as usize],
        6 => guest.vcpu.vmcb.save.dr6,
        _ => guest.vcpu.guest_dr7(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{self, ENTRY, Run, Test};
    use traplab_abi::exit::ExitReason;

    /// `bytes` (a MOV to or from a debug register) at RIP, exiting as `reason`.
    fn mov(test: &mut Test, bytes: &[u8], reason: ExitReason) -> Run {
        test.code(bytes);
        let exit = test.exit(reason);
        test.run(exit)
    }

    #[test]
    fn with_dr7_gd_set_a_mov_dr_is_a_debug_fault_with_dr6_bd_and_gd_cleared() {
        // AMD APM vol. 2, 13.1.1, DR7.GD: general detect. The MOV does not run: RIP stays at it
        // (a fault), DR0 is unchanged, and the handler may use the debug registers.
        let mut test = Test::long_mode();
        test.gate(1, 0x20_9000);
        test.domain.vcpu.vmcb.save.dr7 = 0x400 | (1 << 13);
        // B0 from an earlier breakpoint: cleared with the new #DB, as KVM does.
        test.domain.vcpu.vmcb.save.dr6 = 0xffff_0ff1;
        test.set_gpr(0, 0x20_1000);
        let run = mov(
            &mut test,
            &[0x0f, 0x23, 0xc0],
            ExitReason::DrWrite { number: 0 },
        );
        let (event, _, synthetic) = testing::injected(&run.decision);
        assert_eq!((event.vector, synthetic), (1, true));
        assert!(run.decision.why.contains("DR7.GD"), "{}", run.decision.why);
        assert_eq!(test.rip(), ENTRY, "a fault");
        assert_eq!(
            test.domain.vcpu.debug_registers[0], 0,
            "the MOV did not run"
        );
        assert_eq!(
            test.domain.vcpu.vmcb.save.dr6, 0xffff_2ff0,
            "DR6.BD, B0 cleared"
        );
        assert_eq!(test.domain.vcpu.vmcb.save.dr7, 0x400, "GD cleared");
        // A fault: the RFLAGS it pushes has RF set, so that an instruction breakpoint on the
        // MOV does not fire once the handler returns to it.
        assert_ne!(test.domain.vcpu.vmcb.save.rflags & (1 << 16), 0, "RF");
    }

    #[test]
    fn mov_dr0_keeps_the_guest_s_copy_and_loads_the_cpu_s_dr0() {
        // VMRUN does not switch DR0–DR3 (they are not in the VMCB, AMD APM vol. 2, 15.5):
        // the hypervisor keeps the guest's value and puts it in the real register.
        let mut test = Test::long_mode();
        test.set_gpr(0, 0x20_1000);
        let run = mov(
            &mut test,
            &[0x0f, 0x23, 0xc0],
            ExitReason::DrWrite { number: 0 },
        );
        assert_eq!(run.decision.action, Action::Emulate);
        assert_eq!(test.domain.vcpu.debug_registers[0], 0x20_1000);
        assert_eq!(test.machine.calls, ["dr0 = 0x201000"]);
        assert!(run.changes().contains(&("dr0", 0, 0x20_1000)));
        assert_eq!(test.rip(), ENTRY + 3);
    }

    #[test]
    fn mov_dr7_writes_the_vmcb_and_runs_a_mov_to_dr7_on_the_cpu() {
        // Under TCG a breakpoint is armed only once a MOV to DR7 has run on the CPU.
        let mut test = Test::long_mode();
        test.set_gpr(0, 0x401);
        mov(
            &mut test,
            &[0x0f, 0x23, 0xf8],
            ExitReason::DrWrite { number: 7 },
        );
        assert_eq!(test.domain.vcpu.vmcb.save.dr7, 0x401);
        assert_eq!(test.machine.calls, ["dr7 = 0x401"]);
    }

    #[test]
    fn dr6_and_dr7_keep_their_reserved_bits_fixed() {
        // DR6 = 0 reads back 0xffff0ff0; DR7 with every low bit set keeps 10 as one and
        // 11, 12, 14 and 15 as zeros.
        let mut test = Test::long_mode();
        test.set_gpr(0, 0);
        mov(
            &mut test,
            &[0x0f, 0x23, 0xf0],
            ExitReason::DrWrite { number: 6 },
        );
        assert_eq!(test.domain.vcpu.vmcb.save.dr6, 0xffff_0ff0);
        test.domain.vcpu.vmcb.save.rip = ENTRY;
        test.set_gpr(0, 0xffff_ffff);
        let run = mov(
            &mut test,
            &[0x0f, 0x23, 0xf8],
            ExitReason::DrWrite { number: 7 },
        );
        assert_eq!(test.domain.vcpu.vmcb.save.dr7, 0xffff_27ff);
        assert!(
            run.decision
                .why
                .ends_with("as the CPU fixes them (0xffff27ff)"),
            "{}",
            run.decision.why
        );
        assert_eq!(test.machine.calls, ["dr7 = 0xffff27ff"]);
    }

    #[test]
    fn mov_from_dr7_reads_the_vmcb_s_copy() {
        // `mov rax, dr7`: DR7 is in the VMCB (0x400 after reset).
        let mut test = Test::long_mode();
        let run = mov(
            &mut test,
            &[0x0f, 0x21, 0xf8],
            ExitReason::DrRead { number: 7 },
        );
        assert_eq!(test.gpr(0), 0x400);
        assert!(run.emulate().what.contains("read DR7 = 0x400"));
        assert!(
            test.machine.calls.is_empty(),
            "a read asks nothing of the CPU"
        );
    }

    #[test]
    fn mov_from_dr1_reads_the_hypervisor_s_copy_into_rbx() {
        let mut test = Test::long_mode();
        test.domain.vcpu.debug_registers[1] = 0xdead_beef;
        // `mov rbx, dr1`: ModRM 0xcb, reg = DR1, r/m = RBX.
        mov(
            &mut test,
            &[0x0f, 0x21, 0xcb],
            ExitReason::DrRead { number: 1 },
        );
        assert_eq!(test.gpr(3), 0xdead_beef);
    }

    #[test]
    fn dr4_is_the_old_name_of_dr6() {
        // With CR4.DE = 0, DR4 and DR5 alias DR6 and DR7 (APM vol. 2, 13.1.1).
        let mut test = Test::long_mode();
        let run = mov(
            &mut test,
            &[0x0f, 0x21, 0xe0],
            ExitReason::DrRead { number: 4 },
        );
        assert_eq!(test.gpr(0), 0xffff_0ff0, "DR6's reset value");
        assert!(run.decision.why.contains("DR6"), "{}", run.decision.why);
    }

    #[test]
    fn a_write_of_bits_63_32_of_dr6_or_dr7_is_gp_0_and_changes_nothing() {
        // `mov dr7, rax` and `mov dr6, rax` (ModRM 0xf8, 0xf0), as a 64-bit guest can write.
        for (number, modrm) in [(7, 0xf8), (6, 0xf0)] {
            let mut test = Test::long_mode();
            test.set_gpr(0, 1 << 32 | 0x401);
            let run = mov(
                &mut test,
                &[0x0f, 0x23, modrm],
                ExitReason::DrWrite { number },
            );
            let (event, _, _) = testing::injected(&run.decision);
            assert_eq!((event.vector, event.error_code), (13, Some(0)));
            assert!(
                run.decision.why.contains("sets reserved bits 63:32"),
                "{}",
                run.decision.why
            );
            assert_eq!(test.domain.vcpu.vmcb.save.dr7, 0x400, "DR7 as it was");
            assert_eq!(test.domain.vcpu.vmcb.save.dr6, 0xffff_0ff0, "DR6 as it was");
            assert!(test.machine.calls.is_empty(), "the CPU's DR7 untouched");
            assert_eq!(test.rip(), ENTRY, "the MOV did not complete");
        }
    }

    #[test]
    fn dr4_with_cr4_de_set_is_ud() {
        // With CR4.DE = 1, DR4 and DR5 are reserved (Intel SDM vol. 3B, 17.2.2).
        let mut test = Test::long_mode();
        test.domain.vcpu.vmcb.save.cr4 |= Cr4Flags::DEBUGGING_EXTENSIONS.bits();
        let run = mov(
            &mut test,
            &[0x0f, 0x21, 0xe0],
            ExitReason::DrRead { number: 4 },
        );
        let (event, _, _) = testing::injected(&run.decision);
        assert_eq!((event.vector, event.error_code), (6, None));
        assert_eq!(test.gpr(0), 0, "RAX not written");
    }

    #[test]
    fn a_debug_register_access_that_is_not_a_mov_kills_the_domain() {
        let mut test = Test::long_mode();
        test.code(&[0x90]);
        let decision = test.decide(test.exit(ExitReason::DrWrite { number: 0 }));
        assert_eq!(
            testing::killed(&decision),
            "undecodable instruction at the exit"
        );
    }

    #[test]
    fn a_single_step_over_mov_dr6_sets_bs_in_the_value_written() {
        // The MOV completes first, then the trap sets BS in the DR6 it left (AMD APM vol. 2,
        // 13.1.1.3): B0 from before is gone with the write.
        let mut test = Test::long_mode();
        test.gate(1, 0x20_9000);
        test.domain.vcpu.vmcb.save.dr6 = 0xffff_0ff1;
        test.domain.vcpu.vmcb.save.rflags |= traplab_abi::x86::RFlags::TRAP_FLAG.bits();
        test.set_gpr(0, 0xffff_0ff0);
        let run = mov(
            &mut test,
            &[0x0f, 0x23, 0xf0],
            ExitReason::DrWrite { number: 6 },
        );
        let (event, _, _) = testing::injected(&run.decision);
        assert_eq!(event.vector, 1);
        assert_eq!(test.domain.vcpu.vmcb.save.dr6, 0xffff_4ff0);
    }

    #[test]
    fn a_single_step_over_a_mov_dr7_that_sets_gd_finds_gd_cleared() {
        // The MOV sets GD, then the single-step trap's #DB clears it for its handler, as a
        // CPU does on entering any #DB handler: the handler's own MOV from DR6 must not be
        // general detect's #DB in turn. The emulate event shows the MOV's DR7, then GD's end.
        let mut test = Test::long_mode();
        test.gate(1, 0x20_9000);
        test.domain.vcpu.vmcb.save.rflags |= traplab_abi::x86::RFlags::TRAP_FLAG.bits();
        test.set_gpr(0, 0x2400);
        let run = mov(
            &mut test,
            &[0x0f, 0x23, 0xf8],
            ExitReason::DrWrite { number: 7 },
        );
        let (event, _, _) = testing::injected(&run.decision);
        assert_eq!(event.vector, 1);
        assert_eq!(test.domain.vcpu.vmcb.save.dr7, 0x400, "GD cleared");
        let changes = run.changes();
        let dr7: Vec<_> = changes.iter().filter(|(name, ..)| *name == "dr7").collect();
        assert_eq!(*dr7.last().unwrap(), &("dr7", 0x2400, 0x400), "{changes:?}");
    }

    #[test]
    fn a_mov_that_sets_dr7_gd_makes_every_debug_register_access_exit_until_the_db() {
        // Without the setting `intercept-dr`, only DR7 writes exit: the guest's MOV to DR0
        // reached the CPU unseen. Setting GD makes every access exit (QEMU's TCG has no general
        // detect: the hypervisor raises its #DB), and the guest's DR0 is kept from the CPU
        // first; the #DB clears GD, and DR7 writes alone exit again.
        use crate::domain::vcpu::{DR_ACCESSES, DR7_WRITES};
        let mut test = Test::long_mode();
        test.gate(1, 0x20_9000);
        test.domain.vcpu.intercept_debug_registers(None);
        assert_eq!(test.domain.vcpu.vmcb.control.intercept_dr, DR7_WRITES);
        test.machine.breakpoints[0] = 0x20_1000;
        test.set_gpr(0, 0x400 | DR7_GENERAL_DETECT);
        mov(
            &mut test,
            &[0x0f, 0x23, 0xf8],
            ExitReason::DrWrite { number: 7 },
        );
        assert_eq!(test.domain.vcpu.vmcb.control.intercept_dr, DR_ACCESSES);
        assert_eq!(test.domain.vcpu.debug_registers[0], 0x20_1000, "kept");
        let run = mov(
            &mut test,
            &[0x0f, 0x21, 0xc0],
            ExitReason::DrRead { number: 0 },
        );
        let (event, _, _) = testing::injected(&run.decision);
        assert_eq!(event.vector, 1, "general detect");
        assert_eq!(test.domain.vcpu.vmcb.save.dr7, 0x400, "GD cleared");
        assert_eq!(test.domain.vcpu.vmcb.control.intercept_dr, DR7_WRITES);
    }

    #[test]
    fn a_mov_to_dr5_sets_gd_as_dr7_would() {
        // With CR4.DE clear, DR5 is DR7's old name: its writes exit too, and set GD.
        use crate::domain::vcpu::{DR_ACCESSES, DR7_WRITES};
        assert_ne!(DR7_WRITES & 1 << (16 + 5), 0, "DR5 writes are intercepted");
        let mut test = Test::long_mode();
        test.domain.vcpu.intercept_debug_registers(None);
        test.set_gpr(0, 0x400 | DR7_GENERAL_DETECT);
        mov(
            &mut test,
            &[0x0f, 0x23, 0xe8],
            ExitReason::DrWrite { number: 5 },
        );
        assert_eq!(test.domain.vcpu.guest_dr7(), 0x400 | DR7_GENERAL_DETECT);
        assert_eq!(test.domain.vcpu.vmcb.control.intercept_dr, DR_ACCESSES);
    }

    #[test]
    fn with_the_setting_intercept_dr_every_access_exits_whatever_dr7_holds() {
        use crate::domain::vcpu::DR_ACCESSES;
        let mut test = Test::long_mode();
        test.domain.vcpu.intercept_every_debug_register = true;
        test.domain.vcpu.intercept_debug_registers(None);
        assert_eq!(test.domain.vcpu.vmcb.control.intercept_dr, DR_ACCESSES);
        test.set_gpr(0, 0x401);
        mov(
            &mut test,
            &[0x0f, 0x23, 0xf8],
            ExitReason::DrWrite { number: 7 },
        );
        assert_eq!(test.domain.vcpu.vmcb.control.intercept_dr, DR_ACCESSES);
    }

    /// gdb's hardware breakpoint at 0x20_5000 in slot 3 (L3, execute, one byte), lent while
    /// the guest had its own breakpoint at 0x20_1000 in slot 0 (L0) and 0xabc0 in DR3.
    fn with_a_slot_lent_to_gdb() -> Test {
        let mut test = Test::long_mode();
        test.domain.vcpu.vmcb.save.dr7 = 0x400 | 1;
        test.domain.vcpu.debug_registers = [0x20_1000, 0, 0, 0xabc0];
        test.domain.vcpu.lend_slot(3, 0x20_5000, 1 << 6);
        test
    }

    #[test]
    fn lending_a_slot_to_gdb_gives_the_cpu_gdb_s_bits_and_intercepts_the_guest_s_accesses() {
        let test = with_a_slot_lent_to_gdb();
        let vcpu = &test.domain.vcpu;
        assert_eq!(vcpu.vmcb.save.dr7, 0x400 | 1 | 1 << 6, "the CPU's: both");
        assert_eq!(vcpu.guest_dr7(), 0x400 | 1, "the guest's: its own");
        assert_eq!(vcpu.cpu_breakpoint_address(3), 0x20_5000);
        assert_eq!(
            vcpu.vmcb.control.intercept_dr,
            crate::domain::vcpu::DR_ACCESSES
        );
    }

    #[test]
    fn with_a_slot_lent_to_gdb_the_guest_reads_its_own_dr7_and_dr3() {
        let mut test = with_a_slot_lent_to_gdb();
        mov(
            &mut test,
            &[0x0f, 0x21, 0xf8],
            ExitReason::DrRead { number: 7 },
        );
        assert_eq!(test.gpr(0), 0x400 | 1, "not gdb's L3");
        mov(
            &mut test,
            &[0x0f, 0x21, 0xd8],
            ExitReason::DrRead { number: 3 },
        );
        assert_eq!(test.gpr(0), 0xabc0, "not gdb's address");
    }

    #[test]
    fn with_a_slot_lent_to_gdb_the_guest_clearing_dr7_leaves_gdb_s_breakpoint_armed() {
        // The `debug` lab's handler writes DR7 = 0 after its breakpoint 0.
        let mut test = with_a_slot_lent_to_gdb();
        test.set_gpr(0, 0);
        mov(
            &mut test,
            &[0x0f, 0x23, 0xf8],
            ExitReason::DrWrite { number: 7 },
        );
        assert_eq!(test.domain.vcpu.guest_dr7(), 0x400, "the guest's: cleared");
        assert_eq!(
            test.domain.vcpu.vmcb.save.dr7,
            0x400 | 1 << 6,
            "the CPU's: gdb's L3 kept"
        );
        assert!(test.machine.calls.contains(&"dr7 = 0x440".to_string()));
    }

    #[test]
    fn with_a_slot_lent_to_gdb_the_guest_s_write_to_its_register_waits_for_the_slot() {
        // `mov dr3, rax`: the guest's copy changes, the CPU keeps gdb's address; when gdb
        // gives the slot back, the guest has what it wrote, DR3 and its DR7 bits both.
        let mut test = with_a_slot_lent_to_gdb();
        test.set_gpr(0, 0x7777);
        mov(
            &mut test,
            &[0x0f, 0x23, 0xd8],
            ExitReason::DrWrite { number: 3 },
        );
        assert_eq!(test.domain.vcpu.debug_registers[3], 0x7777);
        assert_eq!(test.machine.breakpoints[3], 0x20_5000, "gdb's, in the CPU");
        test.set_gpr(0, 0x400 | 1 | 1 << 6 | 0b01 << 28);
        test.domain.vcpu.vmcb.save.rip = ENTRY;
        mov(
            &mut test,
            &[0x0f, 0x23, 0xf8],
            ExitReason::DrWrite { number: 7 },
        );
        let vcpu = &mut test.domain.vcpu;
        assert_eq!(
            vcpu.vmcb.save.dr7,
            0x400 | 1 | 1 << 6,
            "gdb's slot: gdb's bits"
        );
        vcpu.take_back_slot(3);
        assert_eq!(
            vcpu.vmcb.save.dr7,
            0x400 | 1 | 1 << 6 | 0b01 << 28,
            "the guest's L3 and R/W3"
        );
        assert_eq!(vcpu.cpu_breakpoint_address(3), 0x7777);
        assert_eq!(
            vcpu.vmcb.control.intercept_dr,
            crate::domain::vcpu::DR7_WRITES,
            "DR7 writes alone again"
        );
    }

    #[test]
    fn lending_a_slot_keeps_first_what_the_guest_wrote_to_its_registers_unseen() {
        // Its own MOV to DR0 went to the CPU (no intercept yet); once a slot is lent the
        // reads are intercepted and answered from the copies, which must hold it.
        let mut test = Test::long_mode();
        test.machine.breakpoints[0] = 0x20_1000;
        test.domain.vcpu.vmcb.save.dr7 = 0x400 | 1;
        test.domain.vcpu.keep_breakpoint_addresses(&test.machine);
        test.domain.vcpu.lend_slot(3, 0x20_5000, 1 << 6);
        mov(
            &mut test,
            &[0x0f, 0x21, 0xc0],
            ExitReason::DrRead { number: 0 },
        );
        assert_eq!(test.gpr(0), 0x20_1000);
    }
}
