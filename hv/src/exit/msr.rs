//! RDMSR/WRMSR (exit code 0x7C MSR): emulate the MSRs a guest may have, #GP for the rest.
//!
//! Every MSR is marked in the MSR permission map. EXITINFO1 is 0 for RDMSR, 1 for WRMSR;
//! ECX names the MSR, EDX:EAX carries the value (AMD APM vol. 2, 15.11). A real CPU raises
//! #GP(0) for an MSR it does not implement, and so does the CPU the hypervisor emulates.
//! Several MSRs live in the VMCB: the guest's copy is the VMCB field.

use super::{Exit, undecodable};
use crate::decision::{Decision, Effect, VmcbMsr};
use crate::domain::Guest;
use crate::{decide, deliver};
use alloc::format;
use traplab_abi::event::Action;
use traplab_abi::msr::{self, EFER};
use traplab_abi::x86::EferFlags;

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
    let decision = decide!(
        Action::Emulate,
        "{context}{instruction} {msr_name}: the hypervisor keeps the guest's copy of this MSR"
    );

    if write {
        let change = match kept {
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
