//! MOV to and from DR0–DR7 (exit codes 0x20–0x3F): the guest's debug registers.
//!
//! VMRUN switches only DR6 and DR7 (they are in the VMCB); DR0–DR3 are not saved anywhere,
//! so the hypervisor keeps the guest's copies and puts them in the real registers, which
//! the hypervisor itself never uses. Under QEMU's TCG, a breakpoint only works once a MOV
//! to DR7 has run on the (virtual) CPU, so a write to DR7 is also executed by the
//! hypervisor. DR4 and DR5 are the old names of DR6 and DR7 (CR4.DE = 0).

use super::{Next, instruction_length, undecodable};
use crate::decide;
use crate::domain::Domain;
use alloc::format;
use iced_x86::{Mnemonic, OpKind};
use traplab_abi::event::Action;
use traplab_abi::svm::exitcode;

pub fn handle(domain: &mut Domain) -> Next {
    let Some(instruction) = domain.decode() else {
        return undecodable(domain);
    };
    let Some(length) = instruction_length(domain) else {
        return undecodable(domain);
    };
    let code = domain.vmcb.control.exitcode;
    let write = code >= exitcode::WRITE_DR0;
    let number = ((code - exitcode::READ_DR0) % 16) as u8;
    let number = match number {
        4 => 6,
        5 => 7,
        other => other,
    };
    if instruction.mnemonic() != Mnemonic::Mov {
        return undecodable(domain);
    }
    let gpr_operand = if write {
        instruction.op1_register()
    } else {
        instruction.op0_register()
    };
    let (OpKind::Register, Some((register, _))) =
        (instruction.op0_kind(), crate::decode::gpr(gpr_operand))
    else {
        return undecodable(domain);
    };
    if write {
        let value = domain.gpr(register);
        decide!(
            domain,
            Action::Emulate,
            "MOV DR{number}, {value:#x}: the guest's debug register, kept by the hypervisor and loaded into the CPU"
        );
        let old = debug_register(domain, number);
        set_debug_register(domain, number, value);
        domain.record(
            ["dr0", "dr1", "dr2", "dr3", "dr4", "dr5", "dr6", "dr7"][number as usize],
            old,
            value,
        );
        domain.skip_instruction(length);
        domain.emulated(format!("DR{number} = {value:#x}"));
    } else {
        let value = debug_register(domain, number);
        decide!(
            domain,
            Action::Emulate,
            "MOV from DR{number}: the hypervisor answers with the guest's copy ({value:#x})"
        );
        domain.set_gpr(register, value);
        domain.skip_instruction(length);
        domain.emulated(format!("read DR{number} = {value:#x}"));
    }
    Next::Resume
}

fn debug_register(domain: &Domain, number: u8) -> u64 {
    match number {
        0..=3 => domain.debug_registers[number as usize],
        6 => domain.vmcb.save.dr6,
        _ => domain.vmcb.save.dr7,
    }
}

fn set_debug_register(domain: &mut Domain, number: u8, value: u64) {
    match number {
        0..=3 => {
            domain.debug_registers[number as usize] = value;
            load_breakpoint_address(number, value);
        }
        6 => domain.vmcb.save.dr6 = value,
        _ => load_dr7(domain, value),
    }
}

/// Set the guest's DR7 (in the VMCB) and run a MOV to DR7 with it, which makes QEMU arm the
/// breakpoints (see the module comment). Also used by gdb's hardware breakpoints.
pub fn load_dr7(domain: &mut Domain, value: u64) {
    domain.vmcb.save.dr7 = value;
    // SAFETY: the hypervisor does not use the debug registers itself. Should an armed
    // breakpoint match an access of the hypervisor's, its #DB handler ignores it (cpu.rs).
    unsafe { core::arch::asm!("mov dr7, {}", in(reg) value, options(nostack)) };
}

/// Put a guest breakpoint address in the real DR0–DR3.
pub fn load_breakpoint_address(number: u8, value: u64) {
    // SAFETY: DR0–DR3 belong to the guest (the hypervisor sets no breakpoints of its own).
    unsafe {
        match number {
            0 => core::arch::asm!("mov dr0, {}", in(reg) value, options(nostack)),
            1 => core::arch::asm!("mov dr1, {}", in(reg) value, options(nostack)),
            2 => core::arch::asm!("mov dr2, {}", in(reg) value, options(nostack)),
            _ => core::arch::asm!("mov dr3, {}", in(reg) value, options(nostack)),
        }
    }
}
