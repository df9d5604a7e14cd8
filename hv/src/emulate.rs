//! Doing a memory access for the guest: what the CPU would have done for a MOV to or from
//! memory, written out. The MMIO device and the page-table write emulation need it: the
//! access exited (a nested page fault) instead of happening, so the hypervisor decodes the
//! instruction, performs the access itself, and moves RIP past it.
//!
//! Only the forms a guest uses for such accesses are supported: `mov r, [m]`, `mov [m], r`,
//! `mov [m], imm`, `movzx r, [m]`. Anything else is refused (the caller ends the domain).

use crate::decode;
use crate::domain::Domain;
use iced_x86::{Instruction, Mnemonic, OpKind};

/// One decoded memory access.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Read `width` bytes into general register `register` (zero-extended: a 32-bit write
    /// clears bits 63:32, an 8/16-bit MOV keeps the rest, MOVZX clears it).
    Read {
        width: u8,
        register: u8,
        register_width: u8,
        zero_extend: bool,
    },
    /// Write the low `width` bytes of `value`.
    Write { width: u8, value: u64 },
}

/// The access `instruction` makes, if it is one we emulate.
pub fn memory_access(domain: &Domain, instruction: &Instruction) -> Option<Access> {
    let width = instruction.memory_size().size() as u8;
    if !matches!(width, 1 | 2 | 4 | 8) {
        return None;
    }
    match (
        instruction.mnemonic(),
        instruction.op0_kind(),
        instruction.op1_kind(),
    ) {
        (Mnemonic::Mov, OpKind::Register, OpKind::Memory) => {
            let (register, register_width) = decode::gpr(instruction.op0_register())?;
            Some(Access::Read {
                width,
                register,
                register_width,
                zero_extend: false,
            })
        }
        (Mnemonic::Movzx, OpKind::Register, OpKind::Memory) => {
            let (register, register_width) = decode::gpr(instruction.op0_register())?;
            Some(Access::Read {
                width,
                register,
                register_width,
                zero_extend: true,
            })
        }
        (Mnemonic::Mov, OpKind::Memory, OpKind::Register) => {
            let (register, _) = decode::gpr(instruction.op1_register())?;
            Some(Access::Write {
                width,
                value: domain.gpr(register),
            })
        }
        (Mnemonic::Mov, OpKind::Memory, _) => Some(Access::Write {
            width,
            value: instruction.immediate(1),
        }),
        _ => None,
    }
}

/// Put `value` (read from memory, `width` bytes) into the register an access named.
pub fn complete_read(domain: &mut Domain, access: Access, value: u64) {
    let Access::Read {
        width,
        register,
        register_width,
        ..
    } = access
    else {
        return;
    };
    let value = value & mask(width);
    let old = domain.gpr(register);
    // AMD APM vol. 1, 3.1.2.3: a 32-bit destination clears the upper half; 8- and 16-bit
    // destinations keep the other bits. (MOVZX reads fewer bytes than it writes: `value`
    // is already zero-extended to the destination's width.)
    let new = match register_width {
        8 | 4 => value,
        width => (old & !mask(width)) | value,
    };
    domain.set_gpr(register, new);
}

pub fn mask(width: u8) -> u64 {
    match width {
        1 => 0xff,
        2 => 0xffff,
        4 => 0xffff_ffff,
        _ => u64::MAX,
    }
}

/// Does this instruction just move RIP forward when done (no branch, no string repeat)?
pub fn plain(instruction: &Instruction) -> bool {
    !instruction.has_rep_prefix()
        && !instruction.has_repne_prefix()
        && instruction.flow_control() == iced_x86::FlowControl::Next
}
