//! RDMSR/WRMSR (exit code 0x7C MSR): emulate the MSRs a guest may have, #GP for the rest.
//!
//! Every MSR is marked in the MSR permission map. EXITINFO1 is 0 for RDMSR, 1 for WRMSR;
//! ECX names the MSR, EDX:EAX carries the value (AMD APM vol. 2, 15.11). A real CPU raises
//! #GP(0) for an MSR it does not implement, and so does the CPU the hypervisor emulates.
//! Several MSRs live in the VMCB: the guest's copy is the VMCB field.
//!
//! The intercept comes before the CPU's own checks of the value, so the hypervisor makes
//! them, and refuses with #GP(0) what a CPU refuses:
//!
//! | MSR                                          | #GP(0) when the value…                       |
//! |----------------------------------------------|----------------------------------------------|
//! | LSTAR, CSTAR, FS_BASE, GS_BASE, KERNEL_GS_BASE | is not a canonical address (each holds one, loaded into RIP or a segment base) |
//! | PAT                                          | has a reserved memory type (2 or 3) or a reserved bit (7:3) in one of its 8 entries |
//! | EFER                                         | changes a bit other than SCE and NXE          |
//!
//! SYSENTER_ESP and SYSENTER_EIP are no such case: an AMD CPU implements SYSENTER only
//! outside long mode, keeps bits 31:0 of them and ignores the rest of a write, without a
//! #GP (AMD APM vol. 2, 6.1.1; KVM models AMD the same way in `__kvm_set_msr`). So does
//! this CPU: the guest reads back bits 31:0.

use super::{Exit, undecodable};
use crate::decision::{Decision, Effect, VmcbMsr};
use crate::domain::Guest;
use crate::{decide, deliver};
use alloc::format;
use traplab_abi::event::Action;
use traplab_abi::msr::{self, EFER};
use traplab_abi::x86::{self, EferFlags};

/// EFER bits a guest may flip while it runs: SCE (SYSCALL) and NXE.
const EFER_WRITABLE: EferFlags =
    EferFlags::SYSTEM_CALL_EXTENSIONS.union(EferFlags::NO_EXECUTE_ENABLE);

/// Where the emulated CPU keeps an MSR it has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kept {
    /// In a VMCB field.
    Vmcb(VmcbMsr),
    /// The TSC: the host's plus the guest's offset.
    Tsc,
    /// EFER, with SVME hidden.
    Efer,
    /// APIC_BASE: the guest has no local APIC to move; writes are ignored.
    ApicBase,
}

// EXERCISE msr.1: add a hypervisor MSR, 0x4000_0020 `TRAPLAB_DOMAIN`: RDMSR returns the
// domain's number, WRMSR gets #GP(0) (it is read-only).
/// The MSRs the emulated CPU has (their names are `traplab_abi::msr::name`).
fn kept(msr: u32) -> Option<Kept> {
    Some(match msr {
        msr::TSC => Kept::Tsc,
        msr::APIC_BASE => Kept::ApicBase,
        msr::SYSENTER_CS => Kept::Vmcb(VmcbMsr::SysenterCs),
        msr::SYSENTER_ESP => Kept::Vmcb(VmcbMsr::SysenterEsp),
        msr::SYSENTER_EIP => Kept::Vmcb(VmcbMsr::SysenterEip),
        msr::PAT => Kept::Vmcb(VmcbMsr::Pat),
        EFER => Kept::Efer,
        msr::STAR => Kept::Vmcb(VmcbMsr::Star),
        msr::LSTAR => Kept::Vmcb(VmcbMsr::Lstar),
        msr::CSTAR => Kept::Vmcb(VmcbMsr::Cstar),
        msr::SFMASK => Kept::Vmcb(VmcbMsr::Sfmask),
        msr::FS_BASE => Kept::Vmcb(VmcbMsr::FsBase),
        msr::GS_BASE => Kept::Vmcb(VmcbMsr::GsBase),
        msr::KERNEL_GS_BASE => Kept::Vmcb(VmcbMsr::KernelGsBase),
        _ => return None,
    })
}

/// The name of an MSR the emulated CPU has.
fn name(msr: u32) -> &'static str {
    msr::name(msr).unwrap_or("a hypervisor MSR")
}

pub fn handle(exit: &Exit, guest: &Guest, write: bool) -> Decision {
    let Some(length) = exit.instruction_length(guest) else {
        return undecodable();
    };
    emulate(exit, guest, write, guest.vcpu.rip_after(length), "")
}

/// Emulate the RDMSR or WRMSR at RIP; the guest continues at `next`. `context` starts the
/// decision's reason: how the instruction reached the hypervisor when it was not an MSR
/// exit (a PV kernel's #GP, `privileged.rs`).
pub fn emulate(exit: &Exit, guest: &Guest, write: bool, next: u64, context: &str) -> Decision {
    let msr = guest.gpr(1) as u32;
    let value = (guest.gpr(2) << 32) | (guest.gpr(0) & 0xffff_ffff);
    let instruction = if write { "WRMSR" } else { "RDMSR" };
    let save = &guest.vcpu.vmcb.save;
    let svme = EferFlags::SECURE_VIRTUAL_MACHINE_ENABLE.bits();

    // The MSR intercept comes before the CPU's own check, so a bad MSR raises nothing by
    // itself: the hypervisor answers #GP(0) as hardware would, a synthetic event.
    let Some(kept) = kept(msr) else {
        return deliver!(
            guest,
            13,
            0,
            true,
            "{context}{instruction} of MSR {msr:#x}, which this CPU does not have: #GP(0), as hardware does"
        );
    };
    let msr_name = name(msr);
    if write && kept == Kept::Efer && (value ^ (save.efer & !svme)) & !EFER_WRITABLE.bits() != 0 {
        return deliver!(
            guest,
            13,
            0,
            true,
            "{context}WRMSR EFER {value:#x} changes bits a running guest may not change: #GP(0)"
        );
    }
    if write && let Some(why) = refused(kept, value) {
        return deliver!(
            guest,
            13,
            0,
            true,
            "{context}WRMSR {msr_name} {value:#x} {why}: a CPU refuses it with #GP(0), and so does the hypervisor"
        );
    }
    let decision = match (write, kept) {
        // VMRUN refuses a guest whose EFER.SVME is clear (AMD APM vol. 2, 15.5.1): the
        // VMCB keeps it set whatever the guest writes, and hides it when the guest reads.
        (true, Kept::Efer) => decide!(
            Action::Emulate,
            "{context}WRMSR EFER: the hypervisor keeps the guest's copy of this MSR; EFER.SVME stays set in the VMCB behind the guest's back, because VMRUN requires it (AMD APM vol. 2, 15.5.1), and the guest reads EFER back as it wrote it, SVME clear (its CPUID has no SVM)"
        ),
        (true, Kept::Vmcb(VmcbMsr::SysenterEsp | VmcbMsr::SysenterEip)) if value >> 32 != 0 => {
            decide!(
                Action::Emulate,
                "{context}WRMSR {msr_name}: the hypervisor keeps the guest's copy of this MSR; an AMD CPU keeps bits 31:0 of it (SYSENTER exists only outside long mode) and ignores bits 63:32 of the write, without a #GP"
            )
        }
        _ => decide!(
            Action::Emulate,
            "{context}{instruction} {msr_name}: the hypervisor keeps the guest's copy of this MSR"
        ),
    };

    if write {
        let change = match kept {
            Kept::Vmcb(slot @ (VmcbMsr::SysenterEsp | VmcbMsr::SysenterEip)) => {
                Some(Effect::Msr(slot, value & 0xffff_ffff))
            }
            Kept::Vmcb(slot) => Some(Effect::Msr(slot, value)),
            // The guest's TSC = host TSC + TSC_OFFSET (15.30.5): move the offset.
            Kept::Tsc => Some(Effect::TscOffset(value.wrapping_sub(exit.tsc))),
            Kept::Efer => Some(Effect::Efer(value)),
            Kept::ApicBase => None,
        };
        return decision
            .with_all(change)
            .with(Effect::Rip(next))
            .describe(format!("WRMSR {msr_name} ({msr:#x}) = {value:#x}"));
    }
    let result = match kept {
        Kept::Vmcb(slot) => vmcb_value(guest, slot),
        Kept::Tsc => exit.tsc.wrapping_add(guest.vcpu.vmcb.control.tsc_offset),
        Kept::Efer => save.efer & !svme,
        // The architectural default: the local APIC at 0xfee00000, BSP flag and enable bit set.
        Kept::ApicBase => 0xfee0_0900,
    };
    decision
        .with(Effect::Gpr(0, result & 0xffff_ffff))
        .with(Effect::Gpr(2, result >> 32))
        .with(Effect::Rip(next))
        .describe(format!("RDMSR {msr_name} ({msr:#x}) = {result:#x}"))
}

/// Why a CPU refuses to write `value` into `kept` with #GP(0), if it does (the table at the
/// top of this file; EFER has its own check).
fn refused(kept: Kept, value: u64) -> Option<&'static str> {
    match kept {
        // Each holds an address the CPU loads into RIP (SYSCALL) or a segment base: it must
        // be canonical (AMD APM vol. 2, 5.3.1; Intel SDM vol. 2, WRMSR, lists the same MSRs
        // for its #GP).
        Kept::Vmcb(
            VmcbMsr::Lstar
            | VmcbMsr::Cstar
            | VmcbMsr::FsBase
            | VmcbMsr::GsBase
            | VmcbMsr::KernelGsBase,
        ) if !x86::canonical(value) => Some("is not a canonical address"),
        Kept::Vmcb(VmcbMsr::Pat) if !pat_valid(value) => {
            Some("has a reserved memory type or reserved bit in one of its 8 entries")
        }
        _ => None,
    }
}

/// Is `pat` a valid PAT: each of its 8 bytes a memory type the CPU has (0 UC, 1 WC, 4 WT,
/// 5 WP, 6 WB, 7 UC-), bits 7:3 of each clear? Writing an undefined memory type into the PAT
/// raises #GP (AMD APM vol. 2, 7.8.1).
fn pat_valid(pat: u64) -> bool {
    pat.to_le_bytes()
        .iter()
        .all(|&entry| matches!(entry, 0 | 1 | 4 | 5 | 6 | 7))
}

/// The guest's copy of an MSR the VMCB holds.
fn vmcb_value(guest: &Guest, slot: VmcbMsr) -> u64 {
    let save = &guest.vcpu.vmcb.save;
    match slot {
        VmcbMsr::SysenterCs => save.sysenter_cs,
        VmcbMsr::SysenterEsp => save.sysenter_esp,
        VmcbMsr::SysenterEip => save.sysenter_eip,
        VmcbMsr::Pat => save.g_pat,
        VmcbMsr::Star => save.star,
        VmcbMsr::Lstar => save.lstar,
        VmcbMsr::Cstar => save.cstar,
        VmcbMsr::Sfmask => save.sfmask,
        VmcbMsr::FsBase => save.fs.base,
        VmcbMsr::GsBase => save.gs.base,
        VmcbMsr::KernelGsBase => save.kernel_gs_base,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{self, ENTRY, Run, Test, UNMAPPED};
    use traplab_abi::exit::ExitReason;
    use traplab_abi::svm::Event;

    const RDMSR: [u8; 2] = [0x0f, 0x32];
    const WRMSR: [u8; 2] = [0x0f, 0x30];

    /// RDMSR of `msr` (ECX), decided and applied.
    fn rdmsr(test: &mut Test, msr: u32) -> Run {
        test.code(&RDMSR);
        test.set_gpr(1, msr as u64);
        test.run(test.exit(ExitReason::Msr { write: false }))
    }

    /// WRMSR of `value` (EDX:EAX) to `msr` (ECX), decided and applied.
    fn wrmsr(test: &mut Test, msr: u32, value: u64) -> Run {
        test.code(&WRMSR);
        test.set_gpr(1, msr as u64);
        test.set_gpr(0, value & 0xffff_ffff);
        test.set_gpr(2, value >> 32);
        test.run(test.exit(ExitReason::Msr { write: true }))
    }

    /// The #GP(0) a CPU raises for a WRMSR or RDMSR it refuses, made up by the hypervisor.
    fn assert_general_protection(decision: &Decision) {
        assert_eq!(decision.action, Action::Reflect);
        let (event, _, synthetic) = testing::injected(decision);
        assert_eq!(event, Event::exception(13, 0));
        assert!(
            synthetic,
            "the intercept came first: the CPU raised nothing"
        );
    }

    #[test]
    fn rdmsr_lstar_reads_the_guest_s_copy_from_the_vmcb_into_edx_eax() {
        let mut test = Test::long_mode();
        test.domain.vcpu.vmcb.save.lstar = 0xffff_8000_0010_0000;
        let run = rdmsr(&mut test, msr::LSTAR);
        assert_eq!(run.decision.action, Action::Emulate);
        assert_eq!(test.gpr(0), 0x0010_0000, "EAX: the low half");
        assert_eq!(test.gpr(2), 0xffff_8000, "EDX: the high half");
        assert_eq!(test.rip(), ENTRY + 2);
        assert!(run.decision.at.contains("src/exit/msr.rs:"));
    }

    #[test]
    fn wrmsr_lstar_writes_the_vmcb_and_is_recorded_old_to_new() {
        let mut test = Test::long_mode();
        let run = wrmsr(&mut test, msr::LSTAR, 0xffff_8000_0020_0000);
        assert_eq!(test.domain.vcpu.vmcb.save.lstar, 0xffff_8000_0020_0000);
        assert!(run.changes().contains(&("lstar", 0, 0xffff_8000_0020_0000)));
        assert_eq!(test.rip(), ENTRY + 2);
    }

    #[test]
    fn an_msr_the_cpu_does_not_have_is_a_synthetic_gp() {
        // AMD APM vol. 3, RDMSR: "#GP(0) if ECX specifies an unimplemented MSR".
        let mut test = Test::long_mode();
        let run = rdmsr(&mut test, 0x1234);
        assert_general_protection(&run.decision);
        assert!(run.decision.why.contains("0x1234"));
        assert_eq!(test.rip(), ENTRY, "a fault: RIP stays at the RDMSR");
    }

    #[test]
    fn wrmsr_efer_that_changes_lme_while_the_guest_runs_is_a_gp() {
        // Changing EFER.LME while paging is on is #GP(0) (AMD APM vol. 2, 3.1.7, EFER);
        // this guest may flip only SCE and NXE.
        let mut test = Test::long_mode();
        let svme = EferFlags::SECURE_VIRTUAL_MACHINE_ENABLE.bits();
        let efer = test.domain.vcpu.vmcb.save.efer & !svme;
        let run = wrmsr(&mut test, EFER, efer & !EferFlags::LONG_MODE_ENABLE.bits());
        assert_general_protection(&run.decision);
        assert_eq!(test.domain.vcpu.vmcb.save.efer, efer | svme, "unchanged");
    }

    #[test]
    fn wrmsr_efer_may_set_sce_and_svme_stays_set_behind_the_guest_s_back() {
        // VMRUN refuses a guest without EFER.SVME (APM vol. 2, 15.5.1): the guest writes
        // EFER without it, the VMCB keeps it, the trace shows what the guest sees.
        let mut test = Test::long_mode();
        let svme = EferFlags::SECURE_VIRTUAL_MACHINE_ENABLE.bits();
        let sce = EferFlags::SYSTEM_CALL_EXTENSIONS.bits();
        let old = test.domain.vcpu.vmcb.save.efer & !svme;
        let run = wrmsr(&mut test, EFER, old | sce);
        assert_eq!(run.decision.action, Action::Emulate);
        assert_eq!(test.domain.vcpu.vmcb.save.efer, old | sce | svme);
        assert!(run.changes().contains(&("efer", old, old | sce)));
    }

    #[test]
    fn wrmsr_efer_says_svme_stays_set_and_the_guest_reads_back_what_it_wrote() {
        // The guest writes EFER with SVME clear (it reads it so, and its CPUID has no
        // SVM); the VMCB keeps SVME for VMRUN, the decision says so, and RDMSR gives the
        // guest exactly its value back.
        let mut test = Test::long_mode();
        let svme = EferFlags::SECURE_VIRTUAL_MACHINE_ENABLE.bits();
        let written =
            (test.domain.vcpu.vmcb.save.efer & !svme) | EferFlags::SYSTEM_CALL_EXTENSIONS.bits();
        let run = wrmsr(&mut test, EFER, written);
        assert!(
            run.decision.why.contains(
                "EFER.SVME stays set in the VMCB behind the guest's back, because VMRUN requires it"
            ),
            "{}",
            run.decision.why
        );
        assert_ne!(test.domain.vcpu.vmcb.save.efer & svme, 0);
        test.domain.vcpu.vmcb.save.rip = ENTRY;
        rdmsr(&mut test, EFER);
        assert_eq!((test.gpr(2) << 32) | test.gpr(0), written);
    }

    #[test]
    fn wrmsr_of_a_non_canonical_address_msr_is_a_gp() {
        // LSTAR, CSTAR and the segment bases hold addresses the CPU loads into RIP or a
        // base: a non-canonical one is refused with #GP(0) (AMD APM vol. 2, 5.3.1).
        for (number, field) in [
            (msr::LSTAR, VmcbMsr::Lstar),
            (msr::CSTAR, VmcbMsr::Cstar),
            (msr::FS_BASE, VmcbMsr::FsBase),
            (msr::GS_BASE, VmcbMsr::GsBase),
            (msr::KERNEL_GS_BASE, VmcbMsr::KernelGsBase),
        ] {
            let mut test = Test::long_mode();
            let run = wrmsr(&mut test, number, 0x8000_0000_0000_0000);
            assert_general_protection(&run.decision);
            assert!(
                run.decision.why.contains("is not a canonical address"),
                "{}",
                run.decision.why
            );
            assert_eq!(vmcb_value(&test.guest(), field), 0, "{field:?} unchanged");
            assert_eq!(test.rip(), ENTRY);
            // The highest canonical address of the upper half is fine.
            let mut test = Test::long_mode();
            wrmsr(&mut test, number, 0xffff_8000_0000_0000);
            assert_eq!(vmcb_value(&test.guest(), field), 0xffff_8000_0000_0000);
        }
    }

    #[test]
    fn wrmsr_pat_with_a_reserved_memory_type_is_a_gp() {
        // Types 2 and 3 are reserved, as are bits 7:3 of each entry (AMD APM vol. 2, 7.8.1).
        let power_on = 0x0007_0406_0007_0406;
        for bad in [
            u64::MAX,
            (power_on & !0xff) | 0x02,
            power_on | (0x03 << 56),
            power_on | 0x08,
        ] {
            let mut test = Test::long_mode();
            let run = wrmsr(&mut test, msr::PAT, bad);
            assert_general_protection(&run.decision);
            assert_eq!(test.domain.vcpu.vmcb.save.g_pat, power_on, "{bad:#x}");
        }
        // Every valid type, once: UC, WC, WT, WP, WB, UC-, and UC twice.
        let mut test = Test::long_mode();
        wrmsr(&mut test, msr::PAT, 0x0000_0706_0504_0100);
        assert_eq!(test.domain.vcpu.vmcb.save.g_pat, 0x0000_0706_0504_0100);
    }

    #[test]
    fn wrmsr_sysenter_eip_and_esp_keep_bits_31_0_as_an_amd_cpu_does() {
        // AMD implements SYSENTER only outside long mode: bits 63:32 of a write are
        // ignored, with no #GP, and the guest reads back bits 31:0.
        for (number, field) in [
            (msr::SYSENTER_EIP, VmcbMsr::SysenterEip),
            (msr::SYSENTER_ESP, VmcbMsr::SysenterEsp),
        ] {
            let mut test = Test::long_mode();
            let run = wrmsr(&mut test, number, 0x8000_0000_1234_5678);
            assert_eq!(run.decision.action, Action::Emulate);
            assert!(
                run.decision.why.contains("ignores bits 63:32"),
                "{}",
                run.decision.why
            );
            assert_eq!(vmcb_value(&test.guest(), field), 0x1234_5678);
            test.domain.vcpu.vmcb.save.rip = ENTRY;
            rdmsr(&mut test, number);
            assert_eq!((test.gpr(2), test.gpr(0)), (0, 0x1234_5678));
        }
    }

    #[test]
    fn rdmsr_efer_hides_svme() {
        let mut test = Test::long_mode();
        rdmsr(&mut test, EFER);
        let svme = EferFlags::SECURE_VIRTUAL_MACHINE_ENABLE.bits();
        assert_eq!(test.gpr(0) & svme, 0);
        assert_ne!(test.gpr(0) & EferFlags::LONG_MODE_ACTIVE.bits(), 0);
    }

    #[test]
    fn wrmsr_tsc_moves_the_offset_so_the_guest_reads_back_what_it_wrote() {
        // The guest's TSC is the host's plus TSC_OFFSET (APM vol. 2, 15.30.5).
        let mut test = Test::long_mode();
        let now = test.machine.now.get();
        wrmsr(&mut test, msr::TSC, 0x5_0000_0000);
        let offset = test.domain.vcpu.vmcb.control.tsc_offset;
        assert_eq!(now.wrapping_add(offset), 0x5_0000_0000);
        test.domain.vcpu.vmcb.save.rip = ENTRY;
        rdmsr(&mut test, msr::TSC);
        assert_eq!((test.gpr(2) << 32) | test.gpr(0), 0x5_0000_0000);
    }

    #[test]
    fn rdmsr_apic_base_gives_the_architectural_default() {
        // 0xfee00000, BSP (bit 8) and the global enable (bit 11).
        let mut test = Test::long_mode();
        rdmsr(&mut test, msr::APIC_BASE);
        assert_eq!((test.gpr(2), test.gpr(0)), (0, 0xfee0_0900));
    }

    #[test]
    fn wrmsr_apic_base_is_ignored_but_the_instruction_completes() {
        let mut test = Test::long_mode();
        let run = wrmsr(&mut test, msr::APIC_BASE, 0xfed0_0900);
        assert_eq!(run.decision.effects, [Effect::Rip(ENTRY + 2)]);
    }

    #[test]
    fn an_msr_exit_at_an_unmapped_rip_kills_the_domain() {
        let mut test = Test::long_mode();
        test.domain.vcpu.vmcb.save.rip = UNMAPPED;
        let decision = test.decide(test.exit(ExitReason::Msr { write: false }));
        assert_eq!(
            testing::killed(&decision),
            "undecodable instruction at the exit"
        );
    }
}
