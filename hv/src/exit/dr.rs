//! MOV to and from DR0–DR7 (exit codes 0x20–0x3F): the guest's debug registers.
//!
//! VMRUN switches only DR6 and DR7 (they are in the VMCB); DR0–DR3 are not saved anywhere,
//! so the hypervisor keeps the guest's copies and puts them in the real registers, which
//! the hypervisor itself never uses. Under QEMU's TCG, a breakpoint only works once a MOV
//! to DR7 has run on the (virtual) CPU, so a write to DR7 is also executed by the
//! hypervisor. DR4 and DR5 are the old names of DR6 and DR7 (CR4.DE = 0).

use super::{Exit, undecodable};
use crate::decide;
use crate::decision::{Decision, Effect};
use crate::domain::Guest;
use alloc::format;
use iced_x86::{Mnemonic, OpKind};
use traplab_abi::event::Action;

pub fn handle(exit: &Exit, guest: &Guest, number: u8, write: bool) -> Decision {
    let Some(instruction) = exit.decode_instruction(guest) else {
        return undecodable();
    };
    let number = match number {
        4 => 6,
        5 => 7,
        other => other,
    };
    if instruction.mnemonic() != Mnemonic::Mov {
        return undecodable();
    }
    let gpr_operand = if write {
        instruction.op1_register()
    } else {
        instruction.op0_register()
    };
    let (OpKind::Register, Some((register, _))) =
        (instruction.op0_kind(), crate::instruction::gpr(gpr_operand))
    else {
        return undecodable();
    };
    let next = guest.vcpu.rip_after(instruction.len() as u64);
    if write {
        let value = guest.gpr(register);
        decide!(
            Action::Emulate,
            "MOV DR{number}, {value:#x}: the guest's debug register, kept by the hypervisor and loaded into the CPU"
        )
        .with(Effect::DebugRegister(number, value))
        .with(Effect::Rip(next))
        .describe(format!("DR{number} = {value:#x}"))
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

/// The guest's debug register: DR0–DR3 are the hypervisor's copies, DR6 and DR7 the VMCB's.
fn debug_register(guest: &Guest, number: u8) -> u64 {
    match number {
        0..=3 => guest.vcpu.debug_registers[number as usize],
        6 => guest.vcpu.vmcb.save.dr6,
        _ => guest.vcpu.vmcb.save.dr7,
    }
}
