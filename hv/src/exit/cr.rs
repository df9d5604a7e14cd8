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

use super::{Exit, undecodable};
use crate::decision::{Decision, Effect};
use crate::domain::Guest;
use crate::{decide, deliver};
use alloc::format;
use iced_x86::{Mnemonic, OpKind};
use traplab_abi::event::Action;
use traplab_abi::x86::{Cr0Flags, Cr4Flags};

// EXERCISE cr-write.1: the CPU this hypervisor shows the guest (its CPUID) has no FSGSBASE:
// a guest that sets CR4.FSGSBASE must get #GP(0), as on such a CPU.
/// CR4 bits the emulated CPU has: VME … OSXMMEXCPT (10:0), FSGSBASE (16), OSXSAVE (18).
const CR4_SUPPORTED: u64 = 0x7ff | (1 << 16) | (1 << 18);
/// CR0 bits whose change affects address translation.
const CR0_PAGING: Cr0Flags = Cr0Flags::PAGING
    .union(Cr0Flags::WRITE_PROTECT)
    .union(Cr0Flags::PROTECTED_MODE_ENABLE);
/// CR4 bits whose change affects address translation.
const CR4_PAGING: Cr4Flags = Cr4Flags::PHYSICAL_ADDRESS_EXTENSION
    .union(Cr4Flags::PAGE_SIZE_EXTENSION)
    .union(Cr4Flags::PAGE_GLOBAL);

/// MOV to CR`number` (or LMSW, CLTS, which the selective CR0 intercept reports as
/// `number` 0).
pub fn handle(exit: &Exit, guest: &Guest, number: u8) -> Decision {
    let Some(instruction) = exit.decode_instruction(guest) else {
        return undecodable();
    };
    let save = &guest.vcpu.vmcb.save;
    let pe = Cr0Flags::PROTECTED_MODE_ENABLE.bits();
    let value = match (instruction.mnemonic(), instruction.op1_kind()) {
        (Mnemonic::Mov, OpKind::Register) => {
            match crate::instruction::gpr(instruction.op1_register()) {
                Some((register, _)) => guest.gpr(register),
                None => return undecodable(),
            }
        }
        // LMSW writes CR0 bits 3:0 (PE can be set, not cleared).
        (Mnemonic::Lmsw, _) => {
            let source = match instruction.op0_kind() {
                OpKind::Register => instruction.op0_register(),
                _ => return undecodable(),
            };
            let Some((register, _)) = crate::instruction::gpr(source) else {
                return undecodable();
            };
            let old = save.cr0;
            (old & !0xe) | (guest.gpr(register) & 0xf) | (old & pe)
        }
        (Mnemonic::Clts, _) => save.cr0 & !Cr0Flags::TASK_SWITCHED.bits(),
        _ => return undecodable(),
    };
    let cr0 = Cr0Flags::from_bits_retain(value);
    let long_mode = guest.vcpu.long_mode();
    let invalid = match number {
        0 if value >> 32 != 0 => Some("sets reserved bits 63:32"),
        0 if cr0.contains(Cr0Flags::PAGING) && !cr0.contains(Cr0Flags::PROTECTED_MODE_ENABLE) => {
            Some("sets PG without PE")
        }
        0 if cr0.contains(Cr0Flags::NOT_WRITE_THROUGH)
            && !cr0.contains(Cr0Flags::CACHE_DISABLE) =>
        {
            Some("sets NW without CD")
        }
        0 if long_mode && !cr0.contains(Cr0Flags::PAGING) => Some("clears PG in 64-bit mode"),
        3 if long_mode && value >> 52 != 0 => Some("sets reserved bits 63:52"),
        4 if value & !CR4_SUPPORTED != 0 => Some("sets a bit this CPU does not have"),
        4 if long_mode && value & Cr4Flags::PHYSICAL_ADDRESS_EXTENSION.bits() == 0 => {
            Some("clears PAE in 64-bit mode")
        }
        0 | 3 | 4 => None,
        _ => Some("names a control register the hypervisor does not emulate"),
    };
    if let Some(why) = invalid {
        return deliver!(
            guest,
            13,
            0,
            true,
            "MOV CR{number}, {value:#x} {why}: the CPU would raise #GP(0), and so does the hypervisor"
        );
    }
    let (old, paging_bits) = match number {
        0 => (save.cr0, CR0_PAGING.bits()),
        3 => (save.cr3, u64::MAX),
        _ => (save.cr4, CR4_PAGING.bits()),
    };
    let decision = decide!(
        Action::Emulate,
        "MOV CR{number}, {value:#x}: the hypervisor checks the value as the CPU would, then writes the guest's CR{number}"
    )
    .with(Effect::ControlRegister(number, value));
    // The guest's translations changed: flush its TLB at the next VMRUN (15.16).
    let flush = (old ^ value) & paging_bits != 0 || number == 3;
    decision
        .with_all(flush.then_some(Effect::FlushTlb))
        .with(Effect::Rip(guest.vcpu.rip_after(instruction.len() as u64)))
        .describe(format!("CR{number} = {value:#x}"))
}
