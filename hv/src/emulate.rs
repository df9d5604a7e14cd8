//! Doing a memory access for the guest: what the CPU would have done for a MOV to or from
//! memory, written out. The MMIO device and the page-table write emulation need it: the
//! access exited (a nested page fault, a #PF) instead of happening, so the hypervisor
//! decodes the instruction, performs the access itself, and moves RIP past it.
//!
//! Only the forms a guest uses for such accesses are supported: `mov r, [m]`, `mov [m], r`,
//! `mov [m], imm`, `movzx r, [m]`. Anything else is refused (the caller ends the domain).

use crate::decision::Destination;
use crate::domain::Domain;
use crate::instruction;
use iced_x86::{Instruction, Mnemonic, OpKind};
use traplab_abi::x86::operand_mask;

/// One decoded memory access.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Read `width` bytes into a register (MOVZX reads fewer bytes than it writes: the
    /// value is zero-extended to the destination's width).
    Read { width: u8, into: Destination },
    /// Write the low `width` bytes of `value`.
    Write { width: u8, value: u64 },
}

/// The access `instruction` makes, if it is one we emulate.
pub fn memory_access(domain: &Domain, instruction: &Instruction) -> Option<Access> {
    let width = instruction.memory_size().size() as u8;
    if !matches!(width, 1 | 2 | 4 | 8) {
        return None;
    }
    let destination = |instruction: &Instruction| {
        let (register, width) = instruction::gpr(instruction.op0_register())?;
        Some(Destination { register, width })
    };
    match (
        instruction.mnemonic(),
        instruction.op0_kind(),
        instruction.op1_kind(),
    ) {
        (Mnemonic::Mov | Mnemonic::Movzx, OpKind::Register, OpKind::Memory) => Some(Access::Read {
            width,
            into: destination(instruction)?,
        }),
        (Mnemonic::Mov, OpKind::Memory, OpKind::Register) => {
            let (register, _) = instruction::gpr(instruction.op1_register())?;
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

/// A register after `value` is written into its low `width` bytes: a 32-bit write clears
/// bits 63:32, an 8- or 16-bit one keeps the other bits (AMD APM vol. 1, 3.1.2.3).
pub fn merge(old: u64, value: u64, width: u8) -> u64 {
    match width {
        8 | 4 => value & operand_mask(width),
        width => (old & !operand_mask(width)) | (value & operand_mask(width)),
    }
}

/// Does this instruction just move RIP forward when done (no branch, no string repeat)?
pub fn plain(instruction: &Instruction) -> bool {
    !instruction.has_rep_prefix()
        && !instruction.has_repne_prefix()
        && instruction.flow_control() == iced_x86::FlowControl::Next
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_register_write_merges_as_the_cpu_does() {
        let old = 0x1122_3344_5566_7788;
        assert_eq!(merge(old, 0xab, 1), 0x1122_3344_5566_77ab);
        assert_eq!(merge(old, 0xabcd, 2), 0x1122_3344_5566_abcd);
        assert_eq!(merge(old, 0xdead_beef, 4), 0xdead_beef, "zero-extended");
        assert_eq!(merge(old, u64::MAX, 8), u64::MAX);
    }
}
