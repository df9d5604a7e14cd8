//! RDMSR/WRMSR (exit code 0x7C MSR): emulate the MSRs a guest may have, #GP for the rest.
//!
//! Every MSR is marked in the MSR permission map. EXITINFO1 is 0 for RDMSR, 1 for WRMSR;
//! ECX names the MSR, EDX:EAX carries the value (AMD APM vol. 2, 15.11). A real CPU raises
//! #GP(0) for an MSR it does not implement, and so does the CPU the hypervisor emulates.
//! Several MSRs live in the VMCB: the guest's copy is the VMCB field.

use super::{Next, instruction_length, undecodable};
use crate::domain::Domain;
use crate::{decide, deliver};
use alloc::format;
use traplab_abi::event::Action;

const EFER: u32 = 0xc000_0080;
const EFER_SVME: u64 = 1 << 12;
/// EFER bits a guest may flip while it runs: SCE (SYSCALL) and NXE.
const EFER_WRITABLE: u64 = (1 << 0) | (1 << 11);

// EXERCISE msr.1: add a hypervisor MSR, 0x4000_0020 `TRAPLAB_DOMAIN`: RDMSR returns the
// domain's number, WRMSR gets #GP(0) (it is read-only).
/// The MSRs the emulated CPU has, with their names (AMD APM vol. 2, appendix A).
fn name(msr: u32) -> Option<&'static str> {
    Some(match msr {
        0x10 => "TSC",
        0x1b => "APIC_BASE",
        0x174 => "SYSENTER_CS",
        0x175 => "SYSENTER_ESP",
        0x176 => "SYSENTER_EIP",
        0x277 => "PAT",
        EFER => "EFER",
        0xc000_0081 => "STAR",
        0xc000_0082 => "LSTAR",
        0xc000_0083 => "CSTAR",
        0xc000_0084 => "SFMASK",
        0xc000_0100 => "FS_BASE",
        0xc000_0101 => "GS_BASE",
        0xc000_0102 => "KERNEL_GS_BASE",
        _ => return None,
    })
}

pub fn handle(domain: &mut Domain) -> Next {
    let Some(length) = instruction_length(domain) else {
        return undecodable(domain);
    };
    emulate(domain, domain.vmcb.control.exitinfo1 == 1, length, "")
}

/// Emulate the RDMSR or WRMSR (`length` bytes) at RIP. `context` starts the decision's
/// reason: how the instruction reached the hypervisor when it was not an MSR exit (a PV
/// kernel's #GP, `privileged.rs`).
pub fn emulate(domain: &mut Domain, write: bool, length: u64, context: &str) -> Next {
    let msr = domain.gpr(1) as u32;
    let value = (domain.gpr(2) << 32) | (domain.gpr(0) & 0xffff_ffff);
    let instruction = if write { "WRMSR" } else { "RDMSR" };

    // The MSR intercept comes before the CPU's own check, so a bad MSR raises nothing by
    // itself: the hypervisor answers #GP(0) as hardware would, a synthetic event.
    let Some(msr_name) = name(msr) else {
        return deliver!(
            domain,
            13,
            0,
            true,
            "{context}{instruction} of MSR {msr:#x}, which this CPU does not have: #GP(0), as hardware does"
        );
    };
    if write && msr == EFER && (value ^ (domain.vmcb.save.efer & !EFER_SVME)) & !EFER_WRITABLE != 0
    {
        return deliver!(
            domain,
            13,
            0,
            true,
            "{context}WRMSR EFER {value:#x} changes bits a running guest may not change: #GP(0)"
        );
    }
    decide!(
        domain,
        Action::Emulate,
        "{context}{instruction} {msr_name}: the hypervisor keeps the guest's copy of this MSR"
    );

    let save = &mut domain.vmcb.save;
    let control = &mut domain.vmcb.control;
    let slot: Option<&mut u64> = match msr {
        0x174 => Some(&mut save.sysenter_cs),
        0x175 => Some(&mut save.sysenter_esp),
        0x176 => Some(&mut save.sysenter_eip),
        0x277 => Some(&mut save.g_pat),
        0xc000_0081 => Some(&mut save.star),
        0xc000_0082 => Some(&mut save.lstar),
        0xc000_0083 => Some(&mut save.cstar),
        0xc000_0084 => Some(&mut save.sfmask),
        0xc000_0100 => Some(&mut save.fs.base),
        0xc000_0101 => Some(&mut save.gs.base),
        0xc000_0102 => Some(&mut save.kernel_gs_base),
        _ => None,
    };
    let what = if write {
        match (msr, slot) {
            (_, Some(slot)) => *slot = value,
            // The guest's TSC = host TSC + TSC_OFFSET (15.30.5): move the offset.
            (0x10, None) => control.tsc_offset = value.wrapping_sub(crate::time::rdtsc()),
            // EFER keeps SVME set behind the guest's back (VMRUN requires it).
            (EFER, None) => save.efer = value | EFER_SVME,
            // APIC_BASE: the guest has no local APIC to move; the write is ignored.
            _ => {}
        }
        format!("WRMSR {msr_name} ({msr:#x}) = {value:#x}")
    } else {
        let result = match (msr, slot) {
            (_, Some(slot)) => *slot,
            (0x10, None) => crate::time::rdtsc().wrapping_add(control.tsc_offset),
            (EFER, None) => save.efer & !EFER_SVME,
            // APIC_BASE: the architectural default, BSP flag and enable bit set.
            _ => 0xfee0_0900,
        };
        domain.set_gpr(0, result & 0xffff_ffff);
        domain.set_gpr(2, result >> 32);
        format!("RDMSR {msr_name} ({msr:#x}) = {result:#x}")
    };
    domain.skip_instruction(length);
    domain.emulated(what);
    Next::Resume
}
