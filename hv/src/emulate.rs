//! Doing a memory access for the guest: what the CPU would have done for an instruction
//! that touches memory, written out. The MMIO devices and the page-table write emulation
//! need it: the access exited (a nested page fault, a #PF) instead of happening, so the
//! hypervisor decodes the instruction, performs the access itself, and moves RIP past it.
//!
//! The forms a guest (or its compiler) uses on device registers are supported:
//!
//! - moves: `mov r, [m]`, `mov [m], r`, `mov [m], imm`, `movzx r, [m]`, `movsx r, [m]`,
//!   `movsxd r, [m]`, with any general register, AH, CH, DH and BH included;
//! - a read-modify-write of the register itself: `add`, `sub`, `and`, `or`, `xor` (LOCK or
//!   not), `inc`, `dec`, `neg`, `not` of `[m]`, which compilers emit for `*reg |= bit` on a
//!   volatile pointer: the device sees a read, then a write of the result;
//! - a compare: `cmp` and `test` of `[m]`, a read that sets only the flags;
//! - the same operations with a register as the destination (`add r, [m]`: a read);
//! - `xchg [m], r`: a read, then a write of the register, which gets the old value.
//!
//! Each sets the status flags as the AMD APM vol. 3 lists them for the instruction
//! ([`Operation::evaluate`]). Anything else (a string instruction, ADC and SBB, BT, CMPXCHG)
//! is refused, and the caller ends the domain with a message that names it.

use crate::domain::Domain;
use crate::instruction;
use iced_x86::{Instruction, Mnemonic, OpKind, Register};
use traplab_abi::x86::{RFlags, operand_mask};

/// One decoded memory access.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Read `width` bytes into a register. MOVZX and MOVSX read fewer bytes than they write:
    /// the value is zero-extended, or sign-extended (`signed`), to the destination's width.
    Read {
        width: u8,
        into: Destination,
        signed: bool,
    },
    /// Write the low `width` bytes of `value`.
    Write { width: u8, value: u64 },
    /// Read `width` bytes and combine them with `operand` by `operation`, which sets the
    /// status flags. The result goes back to memory (`into: None`: `or [m], imm`) or into a
    /// register (`add r, [m]`, where the register's value is `operand`, the left one); a
    /// compare writes nowhere.
    Arithmetic {
        width: u8,
        operation: Operation,
        operand: u64,
        into: Option<Destination>,
    },
    /// XCHG: read `width` bytes, write the register's `value` there, and the register gets
    /// what was read. (XCHG with memory is locked; the hypervisor does both accesses with
    /// the domain stopped, which is as atomic.)
    Exchange {
        width: u8,
        register: Destination,
        value: u64,
    },
}

/// A general register that receives a value: RAX … R15 by number (our `Vcpu::gpr`
/// numbering), written at `width` bytes; with `high_byte`, AH, CH, DH or BH (bits 15:8 of
/// registers 0–3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Destination {
    pub register: u8,
    pub width: u8,
    pub high_byte: bool,
}

impl Destination {
    /// The low `width` bytes of register `register`.
    pub fn low(register: u8, width: u8) -> Destination {
        Destination {
            register,
            width,
            high_byte: false,
        }
    }

    /// The register iced names, if it is a general one.
    fn of(register: Register) -> Option<Destination> {
        match instruction::gpr(register) {
            Some((number, width)) => Some(Destination::low(number, width)),
            None => instruction::high_byte(register).map(|number| Destination {
                register: number,
                width: 1,
                high_byte: true,
            }),
        }
    }

    /// The whole register after `value` is written into this part of it (`old`: before).
    pub fn merge(self, old: u64, value: u64) -> u64 {
        if self.high_byte {
            (old & !0xff00) | ((value & 0xff) << 8)
        } else {
            merge(old, value, self.width)
        }
    }
}

/// What an ALU instruction does to its memory operand (and, for a compare, only to the
/// flags). ADC and SBB, which also read CF, are not among them: compilers do not emit them
/// for a device register.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    Add,
    Sub,
    And,
    Or,
    Xor,
    /// CMP: a SUB that writes only the flags.
    Compare,
    /// TEST: an AND that writes only the flags.
    Test,
    Increment,
    Decrement,
    Negate,
    Not,
}

/// The flags an ALU instruction sets from its result (AMD APM vol. 1, 3.1.4): CF, PF, AF,
/// ZF, SF and OF. Every other bit of RFLAGS is kept.
const STATUS_FLAGS: RFlags = RFlags::CARRY_FLAG
    .union(RFlags::PARITY_FLAG)
    .union(RFlags::AUXILIARY_CARRY_FLAG)
    .union(RFlags::ZERO_FLAG)
    .union(RFlags::SIGN_FLAG)
    .union(RFlags::OVERFLOW_FLAG);

/// A result and the three flags that depend on how it was computed, not only on its bits.
struct Outcome {
    result: u64,
    carry: bool,
    overflow: bool,
    /// AF: a carry out of (or a borrow into) bit 3, which BCD arithmetic uses.
    adjust: bool,
}

impl Operation {
    /// The operation of an instruction with this mnemonic, if we emulate it.
    fn of(mnemonic: Mnemonic) -> Option<Operation> {
        Some(match mnemonic {
            Mnemonic::Add => Operation::Add,
            Mnemonic::Sub => Operation::Sub,
            Mnemonic::And => Operation::And,
            Mnemonic::Or => Operation::Or,
            Mnemonic::Xor => Operation::Xor,
            Mnemonic::Cmp => Operation::Compare,
            Mnemonic::Test => Operation::Test,
            Mnemonic::Inc => Operation::Increment,
            Mnemonic::Dec => Operation::Decrement,
            Mnemonic::Neg => Operation::Negate,
            Mnemonic::Not => Operation::Not,
            _ => return None,
        })
    }

    /// The instruction's name, as the trace shows it.
    pub fn name(self) -> &'static str {
        match self {
            Operation::Add => "ADD",
            Operation::Sub => "SUB",
            Operation::And => "AND",
            Operation::Or => "OR",
            Operation::Xor => "XOR",
            Operation::Compare => "CMP",
            Operation::Test => "TEST",
            Operation::Increment => "INC",
            Operation::Decrement => "DEC",
            Operation::Negate => "NEG",
            Operation::Not => "NOT",
        }
    }

    /// Does it have one operand (its memory) only?
    pub fn unary(self) -> bool {
        matches!(
            self,
            Operation::Increment | Operation::Decrement | Operation::Negate | Operation::Not
        )
    }

    /// Does it write its result (CMP and TEST only set the flags)?
    pub fn writes_result(self) -> bool {
        !matches!(self, Operation::Compare | Operation::Test)
    }

    /// `left` combined with `right` at `width` bytes (a unary operation ignores `right`):
    /// the result, and RFLAGS after it (`rflags`: before). The flags are the AMD APM vol. 3's
    /// for each instruction: ADD and SUB (and CMP, NEG, INC, DEC) set all six, INC and DEC
    /// keep CF, NEG sets CF unless the operand is 0; AND, OR, XOR and TEST clear CF and OF
    /// and leave AF undefined, which we clear as QEMU's TCG does; NOT sets none. `width`:
    /// 1, 2, 4 or 8 bytes.
    pub fn evaluate(self, left: u64, right: u64, width: u8, rflags: u64) -> (u64, u64) {
        debug_assert!(matches!(width, 1 | 2 | 4 | 8), "a {width}-byte operand");
        let mask = operand_mask(width);
        let sign = 1 << (8 * width as u32 - 1);
        let (left, right) = (left & mask, right & mask);
        let add = |left: u64, right: u64| {
            let result = left.wrapping_add(right) & mask;
            Outcome {
                result,
                carry: result < left,
                overflow: (left ^ result) & (right ^ result) & sign != 0,
                adjust: (left ^ right ^ result) & 0x10 != 0,
            }
        };
        let sub = |left: u64, right: u64| {
            let result = left.wrapping_sub(right) & mask;
            Outcome {
                result,
                carry: left < right,
                overflow: (left ^ right) & (left ^ result) & sign != 0,
                adjust: (left ^ right ^ result) & 0x10 != 0,
            }
        };
        let logic = |result: u64| Outcome {
            result,
            carry: false,
            overflow: false,
            adjust: false,
        };
        // INC and DEC leave CF as it was.
        let keep_carry = |outcome: Outcome| Outcome {
            carry: rflags & RFlags::CARRY_FLAG.bits() != 0,
            ..outcome
        };
        let outcome = match self {
            Operation::Add => add(left, right),
            Operation::Sub | Operation::Compare => sub(left, right),
            Operation::And | Operation::Test => logic(left & right),
            Operation::Or => logic(left | right),
            Operation::Xor => logic(left ^ right),
            Operation::Negate => sub(0, left),
            Operation::Increment => keep_carry(add(left, 1)),
            Operation::Decrement => keep_carry(sub(left, 1)),
            Operation::Not => return (!left & mask, rflags),
        };
        let result = outcome.result;
        let flags = [
            (RFlags::CARRY_FLAG, outcome.carry),
            // PF: the low byte has an even number of ones.
            (
                RFlags::PARITY_FLAG,
                (result as u8).count_ones().is_multiple_of(2),
            ),
            (RFlags::AUXILIARY_CARRY_FLAG, outcome.adjust),
            (RFlags::ZERO_FLAG, result == 0),
            (RFlags::SIGN_FLAG, result & sign != 0),
            (RFlags::OVERFLOW_FLAG, outcome.overflow),
        ]
        .into_iter()
        .filter(|(_, set)| *set)
        .fold(rflags & !STATUS_FLAGS.bits(), |rflags, (flag, _)| {
            rflags | flag.bits()
        });
        (result, flags)
    }
}

/// The moves among the instructions we emulate (a read into a register, or a write).
const MOVES: [Mnemonic; 4] = [
    Mnemonic::Mov,
    Mnemonic::Movzx,
    Mnemonic::Movsx,
    Mnemonic::Movsxd,
];

/// Do we emulate some form of instruction `mnemonic` (if not necessarily the one at hand)?
pub fn emulates(mnemonic: Mnemonic) -> bool {
    MOVES.contains(&mnemonic) || mnemonic == Mnemonic::Xchg || Operation::of(mnemonic).is_some()
}

/// The access `instruction` makes, if it is one we emulate.
pub fn memory_access(domain: &Domain, instruction: &Instruction) -> Option<Access> {
    let width = instruction.memory_size().size() as u8;
    if !matches!(width, 1 | 2 | 4 | 8) {
        return None;
    }
    // The value of the instruction's operand `number`, a register or an immediate (which
    // iced sign-extends to 64 bits), at the access's width.
    let value = |number: u32| {
        let value = match instruction.op_kind(number) {
            OpKind::Register => register_value(domain, instruction.op_register(number)),
            OpKind::Immediate8
            | OpKind::Immediate16
            | OpKind::Immediate32
            | OpKind::Immediate64
            | OpKind::Immediate8to16
            | OpKind::Immediate8to32
            | OpKind::Immediate8to64
            | OpKind::Immediate32to64 => Some(instruction.immediate(number)),
            _ => None,
        };
        value.map(|value| value & operand_mask(width))
    };
    let mnemonic = instruction.mnemonic();
    match (mnemonic, instruction.op0_kind(), instruction.op1_kind()) {
        (mnemonic, OpKind::Register, OpKind::Memory) if MOVES.contains(&mnemonic) => {
            Some(Access::Read {
                width,
                into: Destination::of(instruction.op0_register())?,
                signed: matches!(mnemonic, Mnemonic::Movsx | Mnemonic::Movsxd),
            })
        }
        (Mnemonic::Mov, OpKind::Memory, _) => Some(Access::Write {
            width,
            value: value(1)?,
        }),
        (Mnemonic::Xchg, OpKind::Memory, OpKind::Register)
        | (Mnemonic::Xchg, OpKind::Register, OpKind::Memory) => {
            let register = match instruction.op0_kind() {
                OpKind::Register => 0,
                _ => 1,
            };
            Some(Access::Exchange {
                width,
                register: Destination::of(instruction.op_register(register))?,
                value: value(register)?,
            })
        }
        (mnemonic, OpKind::Memory, _) => {
            let operation = Operation::of(mnemonic)?;
            Some(Access::Arithmetic {
                width,
                operation,
                operand: if operation.unary() { 0 } else { value(1)? },
                into: None,
            })
        }
        (mnemonic, OpKind::Register, OpKind::Memory) => {
            let operation = Operation::of(mnemonic).filter(|operation| !operation.unary())?;
            Some(Access::Arithmetic {
                width,
                operation,
                operand: value(0)?,
                into: Some(Destination::of(instruction.op0_register())?),
            })
        }
        _ => None,
    }
}

/// A register's value as an instruction reads it: a general register (the low 32 bits of
/// it outside 64-bit mode), or AH, CH, DH, BH.
fn register_value(domain: &Domain, register: Register) -> Option<u64> {
    let destination = Destination::of(register)?;
    let value = domain.gpr(destination.register);
    Some(if destination.high_byte {
        (value >> 8) & 0xff
    } else {
        value
    })
}

/// `value`, `width` bytes wide, sign-extended to 64 bits (MOVSX).
pub fn sign_extend(value: u64, width: u8) -> u64 {
    let unused = 64 - 8 * width as u32;
    (((value << unused) as i64) >> unused) as u64
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
    use core::arch::asm;

    #[test]
    fn a_register_write_merges_as_the_cpu_does() {
        let old = 0x1122_3344_5566_7788;
        assert_eq!(merge(old, 0xab, 1), 0x1122_3344_5566_77ab);
        assert_eq!(merge(old, 0xabcd, 2), 0x1122_3344_5566_abcd);
        assert_eq!(merge(old, 0xdead_beef, 4), 0xdead_beef, "zero-extended");
        assert_eq!(merge(old, u64::MAX, 8), u64::MAX);
        let ah = Destination {
            register: 0,
            width: 1,
            high_byte: true,
        };
        assert_eq!(
            ah.merge(old, 0x1ab),
            0x1122_3344_5566_ab88,
            "bits 15:8 only"
        );
    }

    #[test]
    fn sign_extension_copies_the_top_bit_of_the_width() {
        assert_eq!(sign_extend(0x80, 1), 0xffff_ffff_ffff_ff80);
        assert_eq!(sign_extend(0x7f, 1), 0x7f);
        assert_eq!(sign_extend(0x8000, 2), 0xffff_ffff_ffff_8000);
        assert_eq!(sign_extend(0x8000_0000, 4), 0xffff_ffff_8000_0000);
        assert_eq!(sign_extend(0x8000_0000, 8), 0x8000_0000);
    }

    /// Run one ALU instruction on this machine's own CPU (the host is x86-64): `flags` in,
    /// the destination's value and RFLAGS out. The reference the emulation is held to.
    macro_rules! on_this_cpu {
        ($instruction:literal, $size:literal, $left:expr, $right:expr, $flags:expr) => {{
            let mut left: u64 = $left;
            let after: u64;
            // SAFETY: registers only; the stack is used by the PUSH/POPF pairs, balanced.
            unsafe {
                asm!(
                    "push {flags}",
                    "popfq",
                    concat!($instruction, " {left:", $size, "}, {right:", $size, "}"),
                    "pushfq",
                    "pop {after}",
                    left = inout(reg) left,
                    right = in(reg) $right,
                    flags = in(reg) $flags,
                    after = out(reg) after,
                )
            }
            (left, after)
        }};
        ($instruction:literal, $size:literal, $left:expr, $flags:expr) => {{
            let mut left: u64 = $left;
            let after: u64;
            // SAFETY: as above.
            unsafe {
                asm!(
                    "push {flags}",
                    "popfq",
                    concat!($instruction, " {left:", $size, "}"),
                    "pushfq",
                    "pop {after}",
                    left = inout(reg) left,
                    flags = in(reg) $flags,
                    after = out(reg) after,
                )
            }
            (left, after)
        }};
    }

    /// `operation` at `width` bytes on this machine's CPU.
    fn on_this_cpu(
        operation: Operation,
        width: u8,
        left: u64,
        right: u64,
        flags: u64,
    ) -> (u64, u64) {
        macro_rules! sized {
            ($instruction:literal $(, $right:expr)?) => {
                match width {
                    1 => on_this_cpu!($instruction, "l", left $(, $right)?, flags),
                    2 => on_this_cpu!($instruction, "x", left $(, $right)?, flags),
                    4 => on_this_cpu!($instruction, "e", left $(, $right)?, flags),
                    _ => on_this_cpu!($instruction, "r", left $(, $right)?, flags),
                }
            };
        }
        match operation {
            Operation::Add => sized!("add", right),
            Operation::Sub => sized!("sub", right),
            Operation::And => sized!("and", right),
            Operation::Or => sized!("or", right),
            Operation::Xor => sized!("xor", right),
            Operation::Compare => sized!("cmp", right),
            Operation::Test => sized!("test", right),
            Operation::Increment => sized!("inc"),
            Operation::Decrement => sized!("dec"),
            Operation::Negate => sized!("neg"),
            Operation::Not => sized!("not"),
        }
    }

    #[test]
    fn every_operation_gives_the_result_and_flags_this_cpu_gives() {
        // Values around every width's sign and carry boundaries, and a few without pattern.
        let values = [
            0,
            1,
            2,
            0x0f,
            0x10,
            0x7f,
            0x80,
            0xff,
            0x100,
            0x7fff,
            0x8000,
            0xffff,
            0x7fff_ffff,
            0x8000_0000,
            0xffff_ffff,
            0x7fff_ffff_ffff_ffff,
            0x8000_0000_0000_0000,
            u64::MAX,
            0x1234_5678_9abc_def0,
            0xfedc_ba98_7654_3211,
            0x0000_0001_8000_0001,
        ];
        let operations = [
            Operation::Add,
            Operation::Sub,
            Operation::And,
            Operation::Or,
            Operation::Xor,
            Operation::Compare,
            Operation::Test,
            Operation::Increment,
            Operation::Decrement,
            Operation::Negate,
            Operation::Not,
        ];
        let mut checked = 0;
        for operation in operations {
            for width in [1u8, 2, 4, 8] {
                let mask = operand_mask(width);
                for left in values {
                    for right in values {
                        // CF set and clear going in (INC and DEC keep it, NOT keeps all);
                        // bit 1 of RFLAGS is always one.
                        for flags_in in [0x2, 0x2 | STATUS_FLAGS.bits()] {
                            let (expected, cpu_flags) =
                                on_this_cpu(operation, width, left, right, flags_in);
                            let (result, flags) = operation.evaluate(left, right, width, flags_in);
                            // AF after AND, OR, XOR and TEST is undefined (APM vol. 3).
                            let compared = match operation {
                                Operation::And
                                | Operation::Or
                                | Operation::Xor
                                | Operation::Test => {
                                    STATUS_FLAGS.bits() & !RFlags::AUXILIARY_CARRY_FLAG.bits()
                                }
                                _ => STATUS_FLAGS.bits(),
                            };
                            let context = format!(
                                "{} {left:#x}, {right:#x} at {width} bytes, RFLAGS {flags_in:#x} in",
                                operation.name()
                            );
                            if operation.writes_result() {
                                assert_eq!(result, expected & mask, "{context}: the result");
                            }
                            assert_eq!(
                                flags & compared,
                                cpu_flags & compared,
                                "{context}: the flags"
                            );
                            checked += 1;
                        }
                    }
                }
            }
        }
        assert_eq!(checked, 11 * 4 * 21 * 21 * 2);
    }

    #[test]
    fn and_or_xor_and_test_clear_af() {
        // Undefined in the manual; QEMU's TCG clears it.
        for operation in [
            Operation::And,
            Operation::Or,
            Operation::Xor,
            Operation::Test,
        ] {
            let (_, flags) = operation.evaluate(0x18, 0x08, 1, 0x2 | STATUS_FLAGS.bits());
            assert_eq!(
                flags & RFlags::AUXILIARY_CARRY_FLAG.bits(),
                0,
                "{}",
                operation.name()
            );
        }
    }
}
