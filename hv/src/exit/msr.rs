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
//! | EFER                                         | sets a bit other than SCE, LME, LMA and NXE, or changes LME while CR0.PG is set; LMA is the CPU's (the write's LMA is ignored) |
//! | MTRRdefType, the fixed and variable MTRRs    | has a memory type an MTRR cannot hold (only 0 UC, 1 WC, 4 WT, 5 WP, 6 WB) or sets a reserved bit (above the physical-address width CPUID 8000_0008 gives, among others) |
//! | MTRRCAP, MCG_CAP                             | is written at all: they are read-only         |
//! | APIC_BASE                                    | sets a reserved bit: all but BSP (8), EXTD (10, with x2APIC in CPUID), AE (11) and the base (51:12, below the physical-address width) |
//! | DEBUGCTL                                     | sets a bit above 5 (5:0: LBR, BTF and four more, as KVM's SVM code takes them) |
//!
//! What a kernel touches at boot, and the rule for each (the CPU is the `qemu64` model QEMU
//! offers, an AMD64 CPU; its CPUID decides which MSRs exist):
//!
//! | MSR | rule |
//! |-----|------|
//! | MTRRCAP (0xfe) | read-only: 8 variable ranges, the fixed ranges, write-combining (CPUID 1:EDX[12] says MTRRs exist) |
//! | MTRRdefType, MTRRfix…, MTRRphysBase/Mask0–7 | kept for the guest and checked as above; they change nothing: the nested page tables map guest RAM write-back, and TCG caches nothing anyway |
//! | MCG_CAP (0x179), MCG_STATUS (0x17a) | machine-check architecture with no error-reporting banks (CPUID 1:EDX[7,14] say it exists): MCG_CAP reads 0 and is read-only, MCG_STATUS is kept. Machine checks are the hypervisor's; the `machine-check` lab injects #MC |
//! | PerfEvtSel0–3, PerfCtr0–3 (0xc001_0000–7) | a PMU that is not there: reads 0, writes vanish, as under QEMU's TCG itself (Linux then reports "Broken PMU hardware" and counts in software) |
//! | SYSCFG (0xc001_0010), HWCR (0xc001_0015), INT_PENDING_MSG (0xc001_0055) | kept: 0 after reset (as QEMU's TCG reads them), then what the guest wrote; their bits tune a real core's DRAM view, caches, SMM and C1E, which this CPU does not model. Every AMD CPU since family 0Fh has the first two, and Xen reads both unguarded; a K8 of model 0x40 and up has the third, and Linux reads it unguarded (its C1E check) |
//! | DEBUGCTL (0x1d9) | kept: 0 after reset, then what the guest wrote (every AMD64 CPU has it, AMD APM vol. 2, "Debug-Control MSR"); its LBR and BTF change nothing here (no branch records, no stepping by branch), as under QEMU's TCG, which reads it as 0, and the decision says so |
//! | APIC_BASE (0x1b) | reads 0xfee00900 (the BSP, enabled, at 0xfee00000); writes are ignored, once checked for reserved bits as above, and a write of another value says in its decision that it was ignored (a CPU would move or disable its APIC) |
//! | MISC_ENABLE (0x1a0) | #GP(0): Intel's, an AMD CPU has none |
//! | TSC_ADJUST (0x3b), SPEC_CTRL (0x48), PRED_CMD (0x49), TSC_AUX (0xc000_0103) | #GP(0): the guest's CPUID does not offer them (leaf 7 EBX[1]; leaf 7 EDX[26] or 8000_0008 EBX[14]; the same or 8000_0008 EBX[12]; 8000_0001 EDX[27] RDTSCP or 7 ECX[22] RDPID). `qemu64` offers none, and `cpuid.rs` hides those a host CPU under KVM offers, with the other features whose MSRs the hypervisor does not emulate |
//! | any other | #GP(0), as a CPU does for an MSR it does not implement |
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
use alloc::string::String;
use traplab_abi::event::Action;
use traplab_abi::msr::{self, EFER};
use traplab_abi::x86::{self, Cr0Flags, EferFlags};

/// The EFER bits this CPU has (AMD APM vol. 2, 3.1.7): SCE, LME, LMA and NXE, as its CPUID
/// offers them (8000_0001 EDX: SYSCALL, LM, NX). SVME is hidden (no SVM in its CPUID);
/// LMSLE, FFXSR, TCE, MCOMMIT, Upper Address Ignore and Automatic IBRS are not offered
/// (`cpuid.rs` hides the CPUID bits of those a host CPU under KVM has). A write that sets
/// another bit is #GP(0).
pub(super) const EFER_BITS: EferFlags = EferFlags::SYSTEM_CALL_EXTENSIONS
    .union(EferFlags::LONG_MODE_ENABLE)
    .union(EferFlags::LONG_MODE_ACTIVE)
    .union(EferFlags::NO_EXECUTE_ENABLE);

/// Why a CPU refuses this EFER write with #GP(0), if it does (AMD APM vol. 2, 3.1.7 and
/// 14.6): a bit it does not have, or LME changed while paging is on (long mode is entered
/// and left by CR0.PG, with LME already set or clear).
fn efer_refused(old: u64, value: u64, cr0: u64) -> Option<&'static str> {
    let lme = EferFlags::LONG_MODE_ENABLE.bits();
    if value & !EFER_BITS.bits() != 0 {
        Some("sets a bit this CPU does not have (its CPUID offers SCE, LME and NXE)")
    } else if (old ^ value) & lme != 0
        && Cr0Flags::from_bits_truncate(cr0).contains(Cr0Flags::PAGING)
    {
        Some("changes LME while paging is on")
    } else {
        None
    }
}

/// The EFER a write leaves: LMA is the CPU's, read-only, whatever the write says (APM
/// vol. 2, 3.1.7: the processor sets it when it activates long mode).
fn efer_written(old: u64, value: u64) -> u64 {
    let lma = EferFlags::LONG_MODE_ACTIVE.bits();
    (value & !lma) | (old & lma)
}

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
    /// In the vCPU (`Vcpu::msrs`): the MTRRs, MCG_STATUS.
    Vcpu,
    /// Read-only, with this value: MTRRCAP, MCG_CAP.
    ReadOnly(u64),
    /// A performance counter of a PMU that is not there: reads 0, writes vanish.
    AbsentCounter,
}

/// MTRRCAP: VCNT = 8 variable ranges (bits 7:0), FIX (bit 8) and WC (bit 10) supported, no
/// SMRR (AMD APM vol. 2, 7.7.1).
const MTRR_CAPABILITIES: u64 = 8 | 1 << 8 | 1 << 10;

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
        msr::MTRRCAP => Kept::ReadOnly(MTRR_CAPABILITIES),
        msr::MCG_CAP => Kept::ReadOnly(0),
        msr::MCG_STATUS => Kept::Vcpu,
        msr if mtrr(msr).is_some() => Kept::Vcpu,
        msr::PERF_EVT_SEL_0..=msr::PERF_CTR_3 => Kept::AbsentCounter,
        msr::SYSCFG | msr::HWCR | msr::INT_PENDING_MSG | msr::DEBUGCTL => Kept::Vcpu,
        _ => return None,
    })
}

/// The name of an MSR the emulated CPU has.
fn name(msr: u32) -> &'static str {
    msr::name(msr).unwrap_or("a hypervisor MSR")
}

pub fn handle(exit: &Exit, guest: &Guest, write: bool) -> Decision {
    let Some(length) = exit.instruction_length(guest) else {
        return undecodable(exit, guest);
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
            "{context}{instruction} of MSR {msr:#x}, which this CPU does not have{}: #GP(0), as hardware does",
            why_absent(guest, msr)
        );
    };
    let msr_name = name(msr);
    if write
        && kept == Kept::Efer
        && let Some(why) = efer_refused(save.efer & !svme, value, save.cr0)
    {
        return deliver!(
            guest,
            13,
            0,
            true,
            "{context}WRMSR EFER {value:#x} {why}: a CPU refuses it with #GP(0), and so does the hypervisor"
        );
    }
    if write && let Kept::ReadOnly(_) = kept {
        return deliver!(
            guest,
            13,
            0,
            true,
            "{context}WRMSR {msr_name} {value:#x}: it is read-only, and a CPU refuses the write with #GP(0)"
        );
    }
    if write && let Some(why) = refused(guest, msr, kept, value) {
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
        (_, Kept::AbsentCounter) => decide!(
            Action::Emulate,
            "{context}{instruction} {msr_name}: this CPU's performance counters are not there (as under QEMU's TCG): it reads 0, and a write vanishes"
        ),
        (false, Kept::ReadOnly(_)) => decide!(
            Action::Emulate,
            "{context}RDMSR {msr_name}: the hypervisor answers what this CPU has"
        ),
        // The local APIC's base, enable and BSP bits are fixed here: a write that would move
        // it or turn it off (AE clear, AMD APM vol. 2, 16.3.1) changes nothing, and the
        // decision says so rather than pretend the value was kept.
        (true, Kept::ApicBase) if value != APIC_BASE_VALUE => decide!(
            Action::Emulate,
            "{context}WRMSR APIC_BASE {value:#x}: ignored, a difference from a CPU: this CPU's local APIC stays at 0xfee00000, enabled (AE) and the BSP's ({APIC_BASE_VALUE:#x}); moving or disabling it is not modelled"
        ),
        (true, Kept::ApicBase) => decide!(
            Action::Emulate,
            "{context}WRMSR APIC_BASE: the value it holds ({APIC_BASE_VALUE:#x}), nothing to change"
        ),
        (true, Kept::Vcpu) if msr == msr::DEBUGCTL && value != 0 => decide!(
            Action::Emulate,
            "{context}WRMSR DEBUGCTL: the hypervisor keeps the guest's copy; its LBR (branch records) and BTF (single-step by branch) do nothing on this CPU, as under QEMU's TCG"
        ),
        (true, Kept::Vcpu) if mtrr(msr).is_some() => decide!(
            Action::Emulate,
            "{context}WRMSR {msr_name}: the hypervisor keeps the guest's copy of this MTRR; it changes no memory type (guest RAM is mapped write-back, and TCG caches nothing)"
        ),
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
            Kept::Efer => Some(Effect::Efer(efer_written(save.efer & !svme, value))),
            Kept::Vcpu => Some(Effect::VcpuMsr(msr, value)),
            Kept::ApicBase | Kept::ReadOnly(_) | Kept::AbsentCounter => None,
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
        Kept::ApicBase => APIC_BASE_VALUE,
        // Reset value: 0 (MTRRs off, no machine check in progress, HWCR as QEMU's).
        Kept::Vcpu => guest.vcpu.msrs.get(&msr).copied().unwrap_or(0),
        Kept::ReadOnly(value) => value,
        Kept::AbsentCounter => 0,
    };
    decision
        .with(Effect::Gpr(0, result & 0xffff_ffff))
        .with(Effect::Gpr(2, result >> 32))
        .with(Effect::Rip(next))
        .describe(format!("RDMSR {msr_name} ({msr:#x}) = {result:#x}"))
}

/// Why a CPU refuses to write `value` into `msr` (`kept`) with #GP(0), if it does (the
/// table at the top of this file; EFER has its own check).
fn refused(guest: &Guest, msr: u32, kept: Kept, value: u64) -> Option<&'static str> {
    if let Some(range) = mtrr(msr) {
        return mtrr_refused(range, value, physical_address_bits(guest));
    }
    // DEBUGCTL: LBR (0), BTF (1) and bits 5:2 (PB0–PB3 in older editions of AMD's manual,
    // BLCKDB at 2 in newer ones); the rest is refused, as KVM's SVM code refuses it
    // (`DEBUGCTL_RESERVED_BITS`, all but 5:0).
    if msr == msr::DEBUGCTL && value >> 6 != 0 {
        return Some("sets a reserved bit (only bits 5:0 exist: LBR, BTF and four more)");
    }
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
        Kept::ApicBase if value & !apic_base_bits(guest) != 0 => Some(
            "sets a reserved bit (only BSP, EXTD with x2APIC, AE and the base address below the physical-address width exist)",
        ),
        _ => None,
    }
}

/// APIC_BASE as this CPU has it, for good: the architectural default, the local APIC at
/// 0xfee00000 with its enable (AE, bit 11) and BSP (bit 8) bits set.
const APIC_BASE_VALUE: u64 = 0xfee0_0900;

/// The bits of APIC_BASE a write may set (AMD APM vol. 2, 16.3.1): BSP (8), AE (11), the
/// base address from bit 12 up to the physical-address width, and EXTD (10) when the
/// guest's CPUID offers x2APIC (1:ECX[21]; Intel SDM vol. 3A, 11.12.1). The rest is
/// reserved.
fn apic_base_bits(guest: &Guest) -> u64 {
    let base = ((1u64 << physical_address_bits(guest)) - 1) & !0xfff;
    let x2apic = super::cpuid::guest_sees(guest, 1, 2, 21);
    base | 1 << 8 | 1 << 11 | if x2apic { 1 << 10 } else { 0 }
}

/// Is `pat` a valid PAT: each of its 8 bytes a memory type the CPU has (0 UC, 1 WC, 4 WT,
/// 5 WP, 6 WB, 7 UC-), bits 7:3 of each clear? Writing an undefined memory type into the PAT
/// raises #GP (AMD APM vol. 2, 7.8.1).
fn pat_valid(pat: u64) -> bool {
    pat.to_le_bytes()
        .iter()
        .all(|&entry| matches!(entry, 0 | 1 | 4 | 5 | 6 | 7))
}

/// Which kind of MTRR `msr` is, if it is one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mtrr {
    DefaultType,
    Fixed,
    PhysBase,
    PhysMask,
}

fn mtrr(msr: u32) -> Option<Mtrr> {
    Some(match msr {
        msr::MTRR_DEF_TYPE => Mtrr::DefaultType,
        msr::MTRR_FIX_64K_00000
        | msr::MTRR_FIX_16K_80000
        | msr::MTRR_FIX_16K_A0000
        | msr::MTRR_FIX_4K_C0000..=msr::MTRR_FIX_4K_F8000 => Mtrr::Fixed,
        msr::MTRR_PHYS_BASE_0..=msr::MTRR_PHYS_MASK_7 if msr.is_multiple_of(2) => Mtrr::PhysBase,
        msr::MTRR_PHYS_BASE_0..=msr::MTRR_PHYS_MASK_7 => Mtrr::PhysMask,
        _ => return None,
    })
}

/// A memory type an MTRR may hold: UC, WC, WT, WP, WB (AMD APM vol. 2, 7.7.1; 2, 3 and 7
/// are reserved, unlike in the PAT where 7 is UC-).
fn mtrr_type_valid(memory_type: u8) -> bool {
    matches!(memory_type, 0 | 1 | 4 | 5 | 6)
}

/// Why a CPU refuses `value` for an MTRR of kind `range` with #GP(0) (AMD APM vol. 2,
/// 7.7.1–7.7.3: a reserved bit set, or a memory type MTRRs cannot hold). `address_bits`:
/// the physical-address width; the base and mask fields end there.
fn mtrr_refused(range: Mtrr, value: u64, address_bits: u32) -> Option<&'static str> {
    let above_width = !((1u64 << address_bits) - 1);
    match range {
        // Type in 7:0, FE (bit 10), E (bit 11); the rest is reserved.
        Mtrr::DefaultType if value & !0xcff != 0 => {
            Some("sets a reserved bit (only 7:0, 10 and 11 exist)")
        }
        Mtrr::DefaultType if !mtrr_type_valid(value as u8) => {
            Some("names a memory type MTRRs cannot hold")
        }
        // Eight 8-bit types, one per sub-range.
        Mtrr::Fixed
            if !value
                .to_le_bytes()
                .iter()
                .all(|&byte| mtrr_type_valid(byte)) =>
        {
            Some("names a memory type MTRRs cannot hold in one of its 8 sub-ranges")
        }
        // Type in 7:0, bits 11:8 reserved, the base from bit 12 to the address width.
        Mtrr::PhysBase if value & (0xf00 | above_width) != 0 => {
            Some("sets a reserved bit (11:8, or above the physical-address width)")
        }
        Mtrr::PhysBase if !mtrr_type_valid(value as u8) => {
            Some("names a memory type MTRRs cannot hold")
        }
        // Valid (bit 11), bits 10:0 reserved, the mask from bit 12 to the address width.
        Mtrr::PhysMask if value & (0x7ff | above_width) != 0 => {
            Some("sets a reserved bit (10:0, or above the physical-address width)")
        }
        _ => None,
    }
}

/// The physical-address width of the CPU the guest sees (CPUID 8000_0008:EAX[7:0]), as its
/// page walks and MOV CR3 take it (`GuestMemory::physical_address_bits`), kept to what
/// the architecture allows.
fn physical_address_bits(guest: &Guest) -> u32 {
    guest.memory.physical_address_bits().clamp(32, 52)
}

/// What the guest's CPUID says of an MSR it has not got, for the #GP's reason. (Each of these
/// belongs to a feature `cpuid.rs` hides from every guest, as the hypervisor does not emulate
/// the MSR; the CPUID shown is what a kernel goes by.)
fn why_absent(guest: &Guest, msr: u32) -> String {
    let offered =
        |leaf: u32, register: usize, bit: u32| super::cpuid::guest_sees(guest, leaf, register, bit);
    let (name, offered) = match msr {
        msr::MISC_ENABLE => return " (MISC_ENABLE is Intel's; an AMD CPU has none)".into(),
        msr::TSC_ADJUST => ("TSC_ADJUST", offered(7, 1, 1)),
        msr::SPEC_CTRL => (
            "SPEC_CTRL",
            offered(7, 3, 26) || offered(0x8000_0008, 1, 14),
        ),
        msr::PRED_CMD => ("PRED_CMD", offered(7, 3, 26) || offered(0x8000_0008, 1, 12)),
        // RDTSCP and RDPID both read it (Linux writes it when either is offered).
        msr::TSC_AUX => ("TSC_AUX", offered(0x8000_0001, 3, 27) || offered(7, 2, 22)),
        _ => return String::new(),
    };
    match offered {
        false => format!(" ({name}: the CPUID it shows the guest does not offer it)"),
        // Only if a feature left the table of `cpuid.rs`.
        true => format!(" ({name}: its CPUID offers it, but the hypervisor does not emulate it)"),
    }
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
        // Changing EFER.LME while paging is on is #GP(0) (AMD APM vol. 2, 3.1.7, EFER):
        // long mode is left by clearing CR0.PG first.
        let mut test = Test::long_mode();
        let svme = EferFlags::SECURE_VIRTUAL_MACHINE_ENABLE.bits();
        let efer = test.domain.vcpu.vmcb.save.efer & !svme;
        let run = wrmsr(&mut test, EFER, efer & !EferFlags::LONG_MODE_ENABLE.bits());
        assert_general_protection(&run.decision);
        assert!(run.decision.why.contains("changes LME while paging is on"));
        assert_eq!(test.domain.vcpu.vmcb.save.efer, efer | svme, "unchanged");
    }

    #[test]
    fn wrmsr_efer_may_set_lme_while_paging_is_off_and_lma_stays_the_cpu_s() {
        // How a kernel enters long mode (APM vol. 2, 14.6.1): with paging off it sets LME,
        // then CR0.PG. Xen writes LME|SCE|NXE (0x901) from 32-bit protected mode. LMA in
        // the write is ignored: the CPU sets it, at the CR0 write.
        let mut test = Test::protected_mode();
        let svme = EferFlags::SECURE_VIRTUAL_MACHINE_ENABLE.bits();
        let lma = EferFlags::LONG_MODE_ACTIVE.bits();
        let run = wrmsr(&mut test, EFER, 0x901 | lma);
        assert_eq!(run.decision.action, Action::Emulate, "{}", run.decision.why);
        assert_eq!(test.domain.vcpu.vmcb.save.efer, 0x901 | svme);
    }

    #[test]
    fn hwcr_reads_0_after_reset_and_keeps_what_the_guest_writes() {
        // Xen's init_amd reads HWCR with a plain RDMSR: a #GP there is a panic.
        let mut test = Test::long_mode();
        let run = rdmsr(&mut test, msr::HWCR);
        assert_eq!(run.decision.action, Action::Emulate, "{}", run.decision.why);
        assert_eq!((test.gpr(0), test.gpr(2)), (0, 0));
        let mut test = Test::long_mode();
        wrmsr(&mut test, msr::HWCR, 1 << 8);
        let run = rdmsr(&mut test, msr::HWCR);
        assert_eq!(run.decision.action, Action::Emulate);
        assert_eq!(test.gpr(0), 1 << 8);
    }

    #[test]
    fn debugctl_is_kept_its_branch_features_do_nothing_and_reserved_bits_are_a_gp() {
        // Every AMD64 CPU has DEBUGCTL (AMD APM vol. 2, "Debug-Control MSR"): a #GP for it would be a
        // CPU the guest's CPUID does not describe (Linux reads it to step by branches).
        let mut test = Test::long_mode();
        let run = rdmsr(&mut test, msr::DEBUGCTL);
        assert_eq!(run.decision.action, Action::Emulate, "{}", run.decision.why);
        assert_eq!((test.gpr(0), test.gpr(2)), (0, 0));
        let run = wrmsr(&mut test, msr::DEBUGCTL, 0b10);
        assert!(run.decision.why.contains("BTF"), "{}", run.decision.why);
        rdmsr(&mut test, msr::DEBUGCTL);
        assert_eq!(test.gpr(0), 0b10);
        let mut test = Test::long_mode();
        let run = wrmsr(&mut test, msr::DEBUGCTL, 1 << 6);
        assert_general_protection(&run.decision);
    }

    #[test]
    fn wrmsr_efer_with_a_bit_this_cpu_does_not_have_is_a_gp() {
        // FFXSR (bit 14): qemu64's CPUID 8000_0001 EDX[25] does not offer it; SVME is hidden.
        for bit in [14, 12, 2] {
            let mut test = Test::protected_mode();
            let before = test.domain.vcpu.vmcb.save.efer;
            let run = wrmsr(&mut test, EFER, 1 << bit);
            assert_general_protection(&run.decision);
            assert!(run.decision.why.contains("a bit this CPU does not have"));
            assert_eq!(test.domain.vcpu.vmcb.save.efer, before, "unchanged");
        }
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
        // The trace says it was ignored (it said "keeps the guest's copy").
        assert!(run.decision.why.contains("ignored"), "{}", run.decision.why);
        // AE clear: the APIC would be off on a CPU; here it stays on, and the trace says so.
        let mut test = Test::long_mode();
        let run = wrmsr(&mut test, msr::APIC_BASE, 0xfee0_0100);
        assert!(
            run.decision.why.contains("not modelled"),
            "{}",
            run.decision.why
        );
        let mut test = Test::long_mode();
        let run = wrmsr(&mut test, msr::APIC_BASE, 0xfee0_0900);
        assert!(
            run.decision.why.contains("nothing to change"),
            "{}",
            run.decision.why
        );
    }

    #[test]
    fn wrmsr_apic_base_with_a_reserved_bit_is_a_general_protection_fault() {
        // Bit 9, bits 7:0, and a base at or above the physical-address width (40 bits on
        // the test CPU) are reserved; so is EXTD (bit 10, x2APIC mode) while CPUID offers no
        // x2APIC, as qemu64's does not.
        for value in [0xfee0_0b00, 0xfee0_0901, 1 << 40 | 0xfee0_0900, 0xfee0_0d00] {
            let mut test = Test::long_mode();
            let run = wrmsr(&mut test, msr::APIC_BASE, value);
            assert_general_protection(&run.decision);
            assert!(run.decision.why.contains("reserved bit"), "{value:#x}");
        }
    }

    /// RDMSR of `msr` from the start, EDX:EAX as one value.
    fn read_back(test: &mut Test, msr: u32) -> u64 {
        test.domain.vcpu.vmcb.save.rip = ENTRY;
        rdmsr(test, msr);
        (test.gpr(2) << 32) | test.gpr(0)
    }

    #[test]
    fn mtrrcap_says_8_variable_ranges_fixed_ranges_and_write_combining_and_is_read_only() {
        // CPUID 1:EDX[12] says this CPU has MTRRs, so a kernel reads MTRRCAP at boot.
        let mut test = Test::long_mode();
        assert_eq!(read_back(&mut test, msr::MTRRCAP), 0x508);
        test.domain.vcpu.vmcb.save.rip = ENTRY;
        let run = wrmsr(&mut test, msr::MTRRCAP, 0);
        assert_general_protection(&run.decision);
        assert!(
            run.decision.why.contains("read-only"),
            "{}",
            run.decision.why
        );
    }

    #[test]
    fn the_mtrrs_are_kept_and_read_back() {
        let mut test = Test::long_mode();
        // E (bit 11) and FE (bit 10) on, default type WB.
        let run = wrmsr(&mut test, msr::MTRR_DEF_TYPE, 0xc06);
        assert_eq!(
            run.changes(),
            [("MTRRdefType", 0, 0xc06), ("rip", ENTRY, ENTRY + 2)]
        );
        assert_eq!(read_back(&mut test, msr::MTRR_DEF_TYPE), 0xc06);
        // The first 640 KiB write-back, as a BIOS sets them.
        test.domain.vcpu.vmcb.save.rip = ENTRY;
        wrmsr(&mut test, msr::MTRR_FIX_64K_00000, 0x0606_0606_0606_0606);
        assert_eq!(
            read_back(&mut test, msr::MTRR_FIX_64K_00000),
            0x0606_0606_0606_0606
        );
        // Range 1: 256 MiB of WB at 0, its mask valid, within 40 address bits.
        test.domain.vcpu.vmcb.save.rip = ENTRY;
        wrmsr(&mut test, 0x202, 0x6);
        test.domain.vcpu.vmcb.save.rip = ENTRY;
        wrmsr(&mut test, 0x203, 0xff_f000_0800);
        assert_eq!(read_back(&mut test, 0x203), 0xff_f000_0800);
        // Never written: the reset value.
        assert_eq!(read_back(&mut test, 0x20e), 0);
    }

    #[test]
    fn an_mtrr_with_a_reserved_type_or_bit_is_a_gp() {
        // AMD APM vol. 2, 7.7: types 2, 3 and 7 are reserved in an MTRR; the base and mask
        // end at the physical-address width (40 bits here, CPUID 8000_0008).
        for (msr, value, why) in [
            (msr::MTRR_DEF_TYPE, 0x2, "memory type"),
            (msr::MTRR_DEF_TYPE, 0x1006, "reserved bit"),
            (msr::MTRR_FIX_4K_F8000, 0x0606_0606_0706_0606, "sub-ranges"),
            (0x204, 0x7, "memory type"),
            (0x204, 0x100_0000_0006, "reserved bit"),
            (0x205, 0xff_f000_0801, "reserved bit"),
            (0x205, 0x1ff_f000_0800, "reserved bit"),
        ] {
            let mut test = Test::long_mode();
            let run = wrmsr(&mut test, msr, value);
            assert_general_protection(&run.decision);
            assert!(
                run.decision.why.contains(why),
                "{msr:#x} {value:#x}: {}",
                run.decision.why
            );
            assert!(test.domain.vcpu.msrs.is_empty(), "nothing kept");
        }
    }

    #[test]
    fn the_machine_check_architecture_has_no_banks() {
        // CPUID says MCE and MCA exist: MCG_CAP must, and says 0 banks; MCG_STATUS is kept.
        let mut test = Test::long_mode();
        assert_eq!(read_back(&mut test, msr::MCG_CAP), 0);
        test.domain.vcpu.vmcb.save.rip = ENTRY;
        assert_general_protection(&wrmsr(&mut test, msr::MCG_CAP, 1).decision);
        test.domain.vcpu.vmcb.save.rip = ENTRY;
        wrmsr(&mut test, msr::MCG_STATUS, 0);
        assert_eq!(read_back(&mut test, msr::MCG_STATUS), 0);
    }

    #[test]
    fn the_performance_counters_read_0_and_a_write_vanishes() {
        // A PMU that is not there, as under QEMU's TCG: no #GP (every AMD64 CPU has the
        // four legacy counters), but nothing counts and nothing is kept.
        let mut test = Test::long_mode();
        let run = wrmsr(&mut test, 0xc001_0004, 0xabcd);
        assert_eq!(run.decision.effects, [Effect::Rip(ENTRY + 2)]);
        assert!(
            run.decision.why.contains("PerfCtr0"),
            "{}",
            run.decision.why
        );
        assert_eq!(read_back(&mut test, 0xc001_0004), 0);
        assert_eq!(read_back(&mut test, msr::PERF_EVT_SEL_0), 0);
    }

    #[test]
    fn msrs_the_cpuid_does_not_offer_are_a_gp_that_says_why() {
        for (msr, why) in [
            (msr::MISC_ENABLE, "Intel's"),
            (
                msr::TSC_AUX,
                "TSC_AUX: the CPUID it shows the guest does not offer it",
            ),
            (msr::TSC_ADJUST, "TSC_ADJUST: the CPUID"),
            (msr::SPEC_CTRL, "SPEC_CTRL: the CPUID"),
            (msr::PRED_CMD, "PRED_CMD: the CPUID"),
        ] {
            let mut test = Test::long_mode();
            let run = rdmsr(&mut test, msr);
            assert_general_protection(&run.decision);
            assert!(
                run.decision.why.contains(why),
                "{msr:#x}: {}",
                run.decision.why
            );
        }
    }

    /// Under KVM the real CPU may have RDTSCP, IBRS and x2APIC: the guest's CPUID hides them
    /// (`cpuid.rs`), and the MSRs go by what the guest sees, not by the real CPU.
    #[test]
    fn msrs_of_features_a_host_cpu_has_but_the_guest_cpuid_hides_are_a_gp() {
        let host = |test: &mut Test| {
            let answers = &mut test.machine.cpuid_answers;
            answers.push((1, 0, [0x663, 0x800, 1 << 21 | 1 << 24, 0x078b_fbff]));
            answers.push((7, 0, [0, 1 << 1, 0, 1 << 26]));
            answers.push((0x8000_0001, 0, [0, 0, 0, 1 << 27 | 1 << 29]));
            answers.push((0x8000_0008, 0, [0x3028, 1 << 12 | 1 << 14, 0, 0]));
        };
        for msr in [msr::TSC_AUX, msr::TSC_ADJUST, msr::SPEC_CTRL, msr::PRED_CMD] {
            let mut test = Test::long_mode();
            host(&mut test);
            let run = rdmsr(&mut test, msr);
            assert_general_protection(&run.decision);
            assert!(
                run.decision
                    .why
                    .contains("the CPUID it shows the guest does not offer it"),
                "{msr:#x}: {}",
                run.decision.why
            );
        }
        // EXTD (x2APIC mode) is a reserved bit of APIC_BASE for a CPU without x2APIC.
        let mut test = Test::long_mode();
        host(&mut test);
        let run = wrmsr(&mut test, msr::APIC_BASE, 0xfee0_0d00);
        assert_general_protection(&run.decision);
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
