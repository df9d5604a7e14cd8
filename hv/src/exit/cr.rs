//! MOV to CR0, CR3, CR4 (exit codes 0x10–0x1F WRITE_CRn, 0x65 CR0_SEL_WRITE): emulate, or
//! answer #GP(0) as the CPU would for an invalid value.
//!
//! The exit happens before the write (AMD APM vol. 2, 15.9). Without decode assists
//! EXITINFO1 does not name the source register, so we decode the MOV. The checks are the
//! CPU's own (APM vol. 2, 3.1.1–3.1.3; Intel SDM vol. 3A, 2.5 and the MOV CR reference):
//!
//! | register | #GP(0) when the new value…                                        |
//! |----------|-------------------------------------------------------------------|
//! | CR0      | sets a bit in 63:32; sets PG without PE; sets NW without CD; clears PG in 64-bit mode |
//! | CR3      | sets a bit in 63:52 (reserved in long mode)                        |
//! | CR4      | sets a bit the emulated CPU does not have; clears PAE in long mode |
//!
//! Changing how the guest translates addresses (CR3, CR0.PG/WP, CR4.PAE/PGE/PSE) flushes
//! the guest's TLB at the next VMRUN.

use super::{Next, instruction_length, undecodable};
use crate::domain::Domain;
use crate::{decide, deliver};
use alloc::format;
use iced_x86::{Mnemonic, OpKind};
use traplab_abi::event::Action;
use traplab_abi::svm::exitcode;

const CR0_PE: u64 = 1 << 0;
const CR0_NW: u64 = 1 << 29;
const CR0_CD: u64 = 1 << 30;
const CR0_PG: u64 = 1 << 31;
const CR4_PAE: u64 = 1 << 5;
const EFER_LMA: u64 = 1 << 10;
// EXERCISE cr-write.1: the CPU this hypervisor shows the guest (its CPUID) has no FSGSBASE:
// a guest that sets CR4.FSGSBASE must get #GP(0), as on such a CPU.
/// CR4 bits the emulated CPU has: VME … OSXMMEXCPT (10:0), FSGSBASE (16), OSXSAVE (18).
const CR4_SUPPORTED: u64 = 0x7ff | (1 << 16) | (1 << 18);
/// CR0 bits whose change affects address translation.
const CR0_PAGING: u64 = CR0_PG | (1 << 16) | CR0_PE;

pub fn handle(domain: &mut Domain) -> Next {
    let Some(instruction) = domain.decode() else {
        return undecodable(domain);
    };
    let Some(length) = instruction_length(domain) else {
        return undecodable(domain);
    };
    let code = domain.vmcb.control.exitcode;
    let number = if code == exitcode::CR0_SEL_WRITE {
        0
    } else {
        (code - exitcode::WRITE_CR0) as u8
    };
    let value = match (instruction.mnemonic(), instruction.op1_kind()) {
        (Mnemonic::Mov, OpKind::Register) => match crate::decode::gpr(instruction.op1_register()) {
            Some((register, _)) => domain.gpr(register),
            None => return undecodable(domain),
        },
        // LMSW writes CR0 bits 3:0 (PE can be set, not cleared).
        (Mnemonic::Lmsw, _) => {
            let source = match instruction.op0_kind() {
                OpKind::Register => instruction.op0_register(),
                _ => return undecodable(domain),
            };
            let Some((register, _)) = crate::decode::gpr(source) else {
                return undecodable(domain);
            };
            let old = domain.vmcb.save.cr0;
            (old & !0xe) | (domain.gpr(register) & 0xf) | (old & CR0_PE)
        }
        (Mnemonic::Clts, _) => domain.vmcb.save.cr0 & !(1 << 3),
        _ => return undecodable(domain),
    };
    let save = &domain.vmcb.save;
    let long_mode = save.efer & EFER_LMA != 0;
    let invalid = match number {
        0 if value >> 32 != 0 => Some("sets reserved bits 63:32"),
        0 if value & CR0_PG != 0 && value & CR0_PE == 0 => Some("sets PG without PE"),
        0 if value & CR0_NW != 0 && value & CR0_CD == 0 => Some("sets NW without CD"),
        0 if long_mode && value & CR0_PG == 0 => Some("clears PG in 64-bit mode"),
        3 if long_mode && value >> 52 != 0 => Some("sets reserved bits 63:52"),
        4 if value & !CR4_SUPPORTED != 0 => Some("sets a bit this CPU does not have"),
        4 if long_mode && value & CR4_PAE == 0 => Some("clears PAE in 64-bit mode"),
        0 | 3 | 4 => None,
        _ => Some("names a control register the hypervisor does not emulate"),
    };
    if let Some(why) = invalid {
        return deliver!(
            domain,
            13,
            0,
            true,
            "MOV CR{number}, {value:#x} {why}: the CPU would raise #GP(0), and so does the hypervisor"
        );
    }
    decide!(
        domain,
        Action::Emulate,
        "MOV CR{number}, {value:#x}: the hypervisor checks the value as the CPU would, then writes the guest's CR{number}"
    );
    let (name, slot, paging_bits) = match number {
        0 => ("cr0", &mut domain.vmcb.save.cr0, CR0_PAGING),
        3 => ("cr3", &mut domain.vmcb.save.cr3, u64::MAX),
        _ => (
            "cr4",
            &mut domain.vmcb.save.cr4,
            CR4_PAE | (1 << 4) | (1 << 7),
        ),
    };
    let old = core::mem::replace(slot, value);
    domain.record(name, old, value);
    if (old ^ value) & paging_bits != 0 || number == 3 {
        // The guest's translations changed: flush its TLB at the next VMRUN (15.16).
        domain.vmcb.control.tlb_control = 1;
    }
    domain.skip_instruction(length);
    domain.emulated(format!("CR{number} = {value:#x}"));
    Next::Resume
}
