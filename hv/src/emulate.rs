//! Doing a memory access for the guest: what the CPU would have done for an instruction
//! that touches memory, written out. The MMIO devices and the page-table write emulation
//! need it: the access exited (a nested page fault, a #PF) instead of happening, so the
//! hypervisor decodes the instruction, performs the access itself, and moves RIP past it.
//!
//! The forms a guest (or its compiler, or its atomics) uses on device registers are
//! supported:
//!
//! - moves: `mov r, [m]`, `mov [m], r`, `mov [m], imm`, `movzx r, [m]`, `movsx r, [m]`,
//!   `movsxd r, [m]`, with any general register, AH, CH, DH and BH included, and
//!   `mov [m], sreg` (the selector, two bytes);
//! - a read-modify-write of the register itself: `add`, `adc`, `sub`, `sbb`, `and`, `or`,
//!   `xor` (LOCK or not), `inc`, `dec`, `neg`, `not` of `[m]`, which compilers emit for
//!   `*reg |= bit` on a volatile pointer: the device sees a read, then a write of the result;
//! - a compare: `cmp` and `test` of `[m]`, a read that sets only the flags;
//! - the same operations with a register as the destination (`add r, [m]`: a read);
//! - the bit tests `bt`, `bts`, `btr`, `btc` of `[m]` (Linux's `test_bit`, `set_bit`,
//!   `clear_bit`, `change_bit`): a read, CF, and but for BT a write of the bit changed;
//! - `xchg [m], r`: a read, then a write of the register, which gets the old value;
//! - `cmpxchg [m], r` and `xadd [m], r`, the atomics' compare-and-swap and fetch-and-add;
//! - `setcc [m]`: a write of 1 or 0, as the flags say.
//!
//! Each sets the status flags as the AMD APM vol. 3 lists them for the instruction
//! ([`Operation::evaluate`]). MOVS, STOS and LODS, which step registers and may repeat,
//! are `exit/npf/string.rs`'s. Anything else (a shift or a rotate of memory, CMPS and SCAS,
//! CMPXCHG8B, an SSE move) is refused, and the caller ends the domain with a message that
//! names it: this hypervisor's limit, not the guest's fault (Xen's emulator ends an HVM
//! domain the same way when it meets an instruction it cannot emulate on MMIO).

use crate::domain::Domain;
use crate::instruction;
use iced_x86::{ConditionCode, Instruction, Mnemonic, OpKind, Register};
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
    /// CMPXCHG: read `width` bytes and compare them with the accumulator (AL, AX, EAX or
    /// RAX: `accumulator`), setting the flags as CMP does. Equal: `source` is written (ZF
    /// set). Not: what was read is written back, and the accumulator gets it (ZF clear). The
    /// memory gets a write either way: "the destination operand receives a write cycle
    /// without regard to the result of the comparison" (Intel SDM vol. 2A, CMPXCHG), which
    /// a device sees.
    CompareExchange {
        width: u8,
        accumulator: u64,
        source: u64,
    },
    /// XADD: read `width` bytes, write their sum with the register's `value` (the flags an
    /// ADD sets), and the register gets what was read.
    ExchangeAdd {
        width: u8,
        register: Destination,
        value: u64,
    },
}

impl Access {
    /// Does the access write memory? A read-modify-write does; a compare or a test only
    /// reads.
    pub fn writes_memory(&self) -> bool {
        match self {
            Access::Read { .. } => false,
            Access::Arithmetic {
                operation, into, ..
            } => operation.writes_result() && into.is_none(),
            Access::Write { .. }
            | Access::Exchange { .. }
            | Access::CompareExchange { .. }
            | Access::ExchangeAdd { .. } => true,
        }
    }
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

// EXERCISE mmio.2: a shift of a device register (`shl qword ptr [m], cl`) ends the
// domain: the hypervisor does not emulate it. Add SHL here, with the result and the flags
// the AMD APM vol. 3 lists for it (SHL: CF is the last bit shifted out; OF for a count of 1).
/// What an ALU instruction does to its memory operand (and, for a compare or BT, only to
/// the flags).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    Add,
    /// ADC: an ADD of the right operand and CF.
    AddWithCarry,
    Sub,
    /// SBB: a SUB of the right operand and CF.
    SubtractWithBorrow,
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
    /// BT: CF = the bit of the left operand that the right one numbers (modulo the width).
    BitTest,
    /// BTS: BT, then the bit set.
    BitTestAndSet,
    /// BTR: BT, then the bit cleared.
    BitTestAndReset,
    /// BTC: BT, then the bit complemented.
    BitTestAndComplement,
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
            Mnemonic::Adc => Operation::AddWithCarry,
            Mnemonic::Sub => Operation::Sub,
            Mnemonic::Sbb => Operation::SubtractWithBorrow,
            Mnemonic::And => Operation::And,
            Mnemonic::Or => Operation::Or,
            Mnemonic::Xor => Operation::Xor,
            Mnemonic::Cmp => Operation::Compare,
            Mnemonic::Test => Operation::Test,
            Mnemonic::Inc => Operation::Increment,
            Mnemonic::Dec => Operation::Decrement,
            Mnemonic::Neg => Operation::Negate,
            Mnemonic::Not => Operation::Not,
            Mnemonic::Bt => Operation::BitTest,
            Mnemonic::Bts => Operation::BitTestAndSet,
            Mnemonic::Btr => Operation::BitTestAndReset,
            Mnemonic::Btc => Operation::BitTestAndComplement,
            _ => return None,
        })
    }

    /// The instruction's name, as the trace shows it.
    pub fn name(self) -> &'static str {
        match self {
            Operation::Add => "ADD",
            Operation::AddWithCarry => "ADC",
            Operation::Sub => "SUB",
            Operation::SubtractWithBorrow => "SBB",
            Operation::And => "AND",
            Operation::Or => "OR",
            Operation::Xor => "XOR",
            Operation::Compare => "CMP",
            Operation::Test => "TEST",
            Operation::Increment => "INC",
            Operation::Decrement => "DEC",
            Operation::Negate => "NEG",
            Operation::Not => "NOT",
            Operation::BitTest => "BT",
            Operation::BitTestAndSet => "BTS",
            Operation::BitTestAndReset => "BTR",
            Operation::BitTestAndComplement => "BTC",
        }
    }

    /// Does it have one operand (its memory) only?
    pub fn unary(self) -> bool {
        matches!(
            self,
            Operation::Increment | Operation::Decrement | Operation::Negate | Operation::Not
        )
    }

    /// Is it one of the bit tests?
    pub fn tests_a_bit(self) -> bool {
        matches!(
            self,
            Operation::BitTest
                | Operation::BitTestAndSet
                | Operation::BitTestAndReset
                | Operation::BitTestAndComplement
        )
    }

    /// Does it write its result (CMP, TEST and BT only set the flags)?
    pub fn writes_result(self) -> bool {
        !matches!(
            self,
            Operation::Compare | Operation::Test | Operation::BitTest
        )
    }

    /// `left` combined with `right` at `width` bytes (a unary operation ignores `right`):
    /// the result, and RFLAGS after it (`rflags`: before). The flags are the AMD APM vol. 3's
    /// for each instruction: ADD, ADC, SUB and SBB (and CMP, NEG, INC, DEC) set all six, ADC
    /// and SBB with CF from before as a carry in, INC and DEC keep CF, NEG sets CF unless
    /// the operand is 0; AND, OR, XOR and TEST clear CF and OF and leave AF undefined, which
    /// we clear as QEMU's TCG does; NOT sets none. The bit tests set CF to the bit (number
    /// `right` modulo the width: a register's bit number beyond the operand has been made
    /// one within the operand that holds the bit, [`memory_access`]) and leave OF, SF, ZF,
    /// AF and PF undefined, which we keep as they were. `width`: 1, 2, 4 or 8 bytes.
    pub fn evaluate(self, left: u64, right: u64, width: u8, rflags: u64) -> (u64, u64) {
        debug_assert!(matches!(width, 1 | 2 | 4 | 8), "a {width}-byte operand");
        let mask = operand_mask(width);
        let sign = 1 << (8 * width as u32 - 1);
        let (left, right) = (left & mask, right & mask);
        let carry_in = rflags & RFlags::CARRY_FLAG.bits() != 0;
        // A sum or a difference with a carry in (ADC's and SBB's CF; 0 for the others), and
        // the carry out of the whole.
        let add = |left: u64, right: u64, carry_in: bool| {
            let result = left.wrapping_add(right).wrapping_add(carry_in as u64) & mask;
            Outcome {
                result,
                carry: left as u128 + right as u128 + carry_in as u128 > mask as u128,
                overflow: (left ^ result) & (right ^ result) & sign != 0,
                adjust: (left ^ right ^ result) & 0x10 != 0,
            }
        };
        let sub = |left: u64, right: u64, carry_in: bool| {
            let result = left.wrapping_sub(right).wrapping_sub(carry_in as u64) & mask;
            Outcome {
                result,
                carry: (left as u128) < right as u128 + carry_in as u128,
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
            carry: carry_in,
            ..outcome
        };
        let outcome = match self {
            Operation::Add => add(left, right, false),
            Operation::AddWithCarry => add(left, right, carry_in),
            Operation::Sub | Operation::Compare => sub(left, right, false),
            Operation::SubtractWithBorrow => sub(left, right, carry_in),
            Operation::And | Operation::Test => logic(left & right),
            Operation::Or => logic(left | right),
            Operation::Xor => logic(left ^ right),
            Operation::Negate => sub(0, left, false),
            Operation::Increment => keep_carry(add(left, 1, false)),
            Operation::Decrement => keep_carry(sub(left, 1, false)),
            Operation::Not => return (!left & mask, rflags),
            Operation::BitTest
            | Operation::BitTestAndSet
            | Operation::BitTestAndReset
            | Operation::BitTestAndComplement => return self.test_bit(left, right, width, rflags),
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

    /// A bit test's result and RFLAGS ([`Operation::evaluate`]): CF is the bit as it was.
    fn test_bit(self, left: u64, right: u64, width: u8, rflags: u64) -> (u64, u64) {
        let bit = 1u64 << (right % (8 * width as u64));
        let result = match self {
            Operation::BitTestAndSet => left | bit,
            Operation::BitTestAndReset => left & !bit,
            Operation::BitTestAndComplement => left ^ bit,
            _ => left,
        };
        let carry = match left & bit {
            0 => 0,
            _ => RFlags::CARRY_FLAG.bits(),
        };
        (result, (rflags & !RFlags::CARRY_FLAG.bits()) | carry)
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
    MOVES.contains(&mnemonic)
        || matches!(
            mnemonic,
            Mnemonic::Xchg | Mnemonic::Cmpxchg | Mnemonic::Xadd
        )
        || Operation::of(mnemonic).is_some()
        || sets_a_byte(mnemonic)
}

/// Is it a SETcc, which writes 1 or 0 as its condition holds?
fn sets_a_byte(mnemonic: Mnemonic) -> bool {
    matches!(
        mnemonic,
        Mnemonic::Seto
            | Mnemonic::Setno
            | Mnemonic::Setb
            | Mnemonic::Setae
            | Mnemonic::Sete
            | Mnemonic::Setne
            | Mnemonic::Setbe
            | Mnemonic::Seta
            | Mnemonic::Sets
            | Mnemonic::Setns
            | Mnemonic::Setp
            | Mnemonic::Setnp
            | Mnemonic::Setl
            | Mnemonic::Setge
            | Mnemonic::Setle
            | Mnemonic::Setg
    )
}

/// Does condition `code` hold with these flags? (AMD APM vol. 3, "Jcc": the conditions
/// the Jcc, SETcc and CMOVcc families share.)
pub fn condition_holds(code: ConditionCode, rflags: u64) -> bool {
    let flag = |flag: RFlags| rflags & flag.bits() != 0;
    let (carry, zero) = (flag(RFlags::CARRY_FLAG), flag(RFlags::ZERO_FLAG));
    let (sign, overflow) = (flag(RFlags::SIGN_FLAG), flag(RFlags::OVERFLOW_FLAG));
    let parity = flag(RFlags::PARITY_FLAG);
    match code {
        ConditionCode::None => true,
        ConditionCode::o => overflow,
        ConditionCode::no => !overflow,
        ConditionCode::b => carry,
        ConditionCode::ae => !carry,
        ConditionCode::e => zero,
        ConditionCode::ne => !zero,
        ConditionCode::be => carry || zero,
        ConditionCode::a => !carry && !zero,
        ConditionCode::s => sign,
        ConditionCode::ns => !sign,
        ConditionCode::p => parity,
        ConditionCode::np => !parity,
        ConditionCode::l => sign != overflow,
        ConditionCode::ge => sign == overflow,
        ConditionCode::le => zero || sign != overflow,
        ConditionCode::g => !zero && sign == overflow,
    }
}

/// The access `instruction` makes, which the exit says went to guest-physical `gpa`, if it
/// is one we emulate: where to do it (`gpa`, but for a bit test numbered by a register:
/// `bit_access`) and what.
pub fn memory_access(
    domain: &Domain,
    instruction: &Instruction,
    gpa: u64,
) -> Option<(u64, Access)> {
    let access = operand_access(domain, instruction)?;
    match access {
        Access::Arithmetic {
            width,
            operation,
            operand,
            into: None,
        } if operation.tests_a_bit() && instruction.op1_kind() == OpKind::Register => {
            let (gpa, bit) = bit_access(domain, instruction, gpa, width, operand)?;
            let access = Access::Arithmetic {
                width,
                operation,
                operand: bit,
                into: None,
            };
            Some((gpa, access))
        }
        access => Some((gpa, access)),
    }
}

/// Where a bit test numbered by a register (`number`, the register's value at the operand's
/// `width`) does its access, and the bit's number there. The number is signed and may reach
/// beyond the operand: the bit is `number` bits from the operand's first. The CPU moves its
/// access toward it, by whole operands, or for a 16-bit operand perhaps by 4 bytes (Intel
/// SDM vol. 2A, "BT": "may access 4 bytes"), and the exit says where it went (`gpa`).
/// The hypervisor does the access by whole operands (as AMD's CPUs and QEMU's TCG do),
/// found from the exit's address: the operand that holds the bit lies in the same page as
/// what the CPU accessed. `None` when it does not (the two cross a page boundary).
fn bit_access(
    domain: &Domain,
    instruction: &Instruction,
    gpa: u64,
    width: u8,
    number: u64,
) -> Option<(u64, u64)> {
    let bits = 8 * width as i64;
    let number = sign_extend(number, width) as i64;
    let operand = instruction::memory_address(instruction, domain)?;
    let holding = holding_operand(operand, number, width);
    let accessed_page = gpa & !0xfff;
    // The CPU's access was at `gpa`, within `width` or 4 bytes of the holding operand: in
    // its page unless they straddle a boundary.
    let holding_gpa = accessed_page | (holding & 0xfff);
    if holding_gpa.abs_diff(gpa) >= 4 {
        return None;
    }
    Some((holding_gpa, number.rem_euclid(bits) as u64))
}

/// The linear address of the operand that holds bit `number` (signed) of the `width`-byte
/// operand at `operand`: `number.div_euclid(bits)` operands on (back, for a negative
/// number); the bit is `number.rem_euclid(bits)` in it.
fn holding_operand(operand: u64, number: i64, width: u8) -> u64 {
    let bits = 8 * width as i64;
    operand.wrapping_add((number.div_euclid(bits) * width as i64) as u64)
}

/// The linear address of the operand `instruction` accesses: its memory operand's, or for a
/// bit test numbered by a register the operand that holds the bit (`bit_access`). What a
/// data breakpoint is compared with (`delivery::with_breakpoints`).
pub fn accessed_linear(domain: &Domain, instruction: &Instruction) -> Option<u64> {
    let operand = instruction::memory_address(instruction, domain)?;
    if !bit_test_by_register(instruction) {
        return Some(operand);
    }
    let width = instruction.memory_size().size() as u8;
    let number = sign_extend(register_value(domain, instruction.op1_register())?, width) as i64;
    Some(holding_operand(operand, number, width))
}

/// Is `instruction` a bit test (BT, BTS, BTR, BTC) whose bit number is a register? That
/// number may reach beyond the operand it names (`bit_access`).
pub fn bit_test_by_register(instruction: &Instruction) -> bool {
    instruction.op1_kind() == OpKind::Register
        && matches!(
            instruction.mnemonic(),
            Mnemonic::Bt | Mnemonic::Bts | Mnemonic::Btr | Mnemonic::Btc
        )
}

/// The access `instruction` makes on its memory operand, if it is one we emulate.
fn operand_access(domain: &Domain, instruction: &Instruction) -> Option<Access> {
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
        (mnemonic, OpKind::Memory, _) if sets_a_byte(mnemonic) => Some(Access::Write {
            width,
            value: condition_holds(instruction.condition_code(), domain.vcpu.vmcb.save.rflags)
                as u64,
        }),
        (Mnemonic::Cmpxchg, OpKind::Memory, OpKind::Register) => Some(Access::CompareExchange {
            width,
            accumulator: domain.gpr(0) & operand_mask(width),
            source: value(1)?,
        }),
        (Mnemonic::Xadd, OpKind::Memory, OpKind::Register) => Some(Access::ExchangeAdd {
            width,
            register: Destination::of(instruction.op1_register())?,
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
/// it outside 64-bit mode), AH, CH, DH, BH, or a segment register's selector.
fn register_value(domain: &Domain, register: Register) -> Option<u64> {
    if let Some(segment) = instruction::segment_number(register) {
        return Some(domain.vcpu.vmcb.selector(segment) as u64);
    }
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

/// Does this instruction just move RIP forward when done (no branch)? A REP or REPNE prefix
/// on an instruction that is not a string instruction changes nothing: the CPU ignores it
/// (on a MOV or a locked operation F2/F3 are the XACQUIRE/XRELEASE hints, which a CPU
/// without HLE, as QEMU's qemu64, ignores too; Intel SDM vol. 2A, 2.1.1). String
/// instructions, where REP repeats, are not plain: `exit/npf/string.rs` takes them.
pub fn plain(instruction: &Instruction) -> bool {
    instruction.flow_control() == iced_x86::FlowControl::Next
        && !instruction.is_string_instruction()
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::arch::asm;

    const CARRY: RFlags = RFlags::CARRY_FLAG;
    const PARITY: RFlags = RFlags::PARITY_FLAG;
    const ZERO: RFlags = RFlags::ZERO_FLAG;
    const SIGN: RFlags = RFlags::SIGN_FLAG;
    const OVERFLOW: RFlags = RFlags::OVERFLOW_FLAG;

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
        // The bit tests have no byte-wide form: 2, 4 or 8 bytes.
        macro_rules! wide {
            ($instruction:literal) => {
                match width {
                    2 => on_this_cpu!($instruction, "x", left, right, flags),
                    4 => on_this_cpu!($instruction, "e", left, right, flags),
                    _ => on_this_cpu!($instruction, "r", left, right, flags),
                }
            };
        }
        match operation {
            Operation::Add => sized!("add", right),
            Operation::AddWithCarry => sized!("adc", right),
            Operation::Sub => sized!("sub", right),
            Operation::SubtractWithBorrow => sized!("sbb", right),
            Operation::And => sized!("and", right),
            Operation::Or => sized!("or", right),
            Operation::Xor => sized!("xor", right),
            Operation::Compare => sized!("cmp", right),
            Operation::Test => sized!("test", right),
            Operation::Increment => sized!("inc"),
            Operation::Decrement => sized!("dec"),
            Operation::Negate => sized!("neg"),
            Operation::Not => sized!("not"),
            Operation::BitTest => wide!("bt"),
            Operation::BitTestAndSet => wide!("bts"),
            Operation::BitTestAndReset => wide!("btr"),
            Operation::BitTestAndComplement => wide!("btc"),
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
            Operation::AddWithCarry,
            Operation::Sub,
            Operation::SubtractWithBorrow,
            Operation::And,
            Operation::Or,
            Operation::Xor,
            Operation::Compare,
            Operation::Test,
            Operation::Increment,
            Operation::Decrement,
            Operation::Negate,
            Operation::Not,
            Operation::BitTest,
            Operation::BitTestAndSet,
            Operation::BitTestAndReset,
            Operation::BitTestAndComplement,
        ];
        let mut checked = 0;
        for operation in operations {
            let bit_test = operation.tests_a_bit();
            // The bit tests have no byte-wide form.
            let widths: &[u8] = if bit_test { &[2, 4, 8] } else { &[1, 2, 4, 8] };
            for &width in widths {
                let mask = operand_mask(width);
                for left in values {
                    for right in values {
                        // CF set and clear going in (INC and DEC keep it, NOT keeps all);
                        // bit 1 of RFLAGS is always one.
                        for flags_in in [0x2, 0x2 | STATUS_FLAGS.bits()] {
                            let (expected, cpu_flags) =
                                on_this_cpu(operation, width, left, right, flags_in);
                            let (result, flags) = operation.evaluate(left, right, width, flags_in);
                            // AF after AND, OR, XOR and TEST is undefined (APM vol. 3),
                            // and all but CF after a bit test.
                            let compared = match operation {
                                Operation::And
                                | Operation::Or
                                | Operation::Xor
                                | Operation::Test => {
                                    STATUS_FLAGS.bits() & !RFlags::AUXILIARY_CARRY_FLAG.bits()
                                }
                                _ if bit_test => RFlags::CARRY_FLAG.bits(),
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
        assert_eq!(checked, (13 * 4 + 4 * 3) * 21 * 21 * 2);
    }

    #[test]
    fn a_bit_test_keeps_the_flags_the_manual_leaves_undefined() {
        // BT sets CF alone; OF, SF, ZF, AF and PF are undefined (APM vol. 3): kept.
        let all = 0x2 | STATUS_FLAGS.bits();
        let (result, flags) = Operation::BitTestAndReset.evaluate(0x10, 4, 4, all);
        assert_eq!((result, flags), (0, all), "bit 4 was set: CF stays set");
        let (result, flags) = Operation::BitTestAndSet.evaluate(0, 36, 4, 0x2);
        assert_eq!(
            (result, flags),
            (0x10, 0x2),
            "bit 36 of a dword is its bit 4"
        );
    }

    #[test]
    fn every_condition_holds_when_this_cpu_s_setcc_says_so() {
        macro_rules! setcc {
            ($instruction:literal, $flags:expr) => {{
                let set: u8;
                // SAFETY: registers only; the PUSH/POPF pair is balanced.
                unsafe {
                    asm!(
                        "push {flags}",
                        "popfq",
                        concat!($instruction, " {set}"),
                        flags = in(reg) $flags,
                        set = out(reg_byte) set,
                    )
                }
                set != 0
            }};
        }
        let mut checked = 0;
        // Every combination of CF, PF, ZF, SF and OF (AF no condition reads).
        for combination in 0..32u64 {
            let bits = [CARRY, PARITY, ZERO, SIGN, OVERFLOW];
            let flags = bits
                .iter()
                .enumerate()
                .filter(|(index, _)| combination & (1 << index) != 0)
                .fold(0x2, |flags, (_, bit)| flags | bit.bits());
            let cases = [
                (ConditionCode::o, setcc!("seto", flags)),
                (ConditionCode::no, setcc!("setno", flags)),
                (ConditionCode::b, setcc!("setb", flags)),
                (ConditionCode::ae, setcc!("setae", flags)),
                (ConditionCode::e, setcc!("sete", flags)),
                (ConditionCode::ne, setcc!("setne", flags)),
                (ConditionCode::be, setcc!("setbe", flags)),
                (ConditionCode::a, setcc!("seta", flags)),
                (ConditionCode::s, setcc!("sets", flags)),
                (ConditionCode::ns, setcc!("setns", flags)),
                (ConditionCode::p, setcc!("setp", flags)),
                (ConditionCode::np, setcc!("setnp", flags)),
                (ConditionCode::l, setcc!("setl", flags)),
                (ConditionCode::ge, setcc!("setge", flags)),
                (ConditionCode::le, setcc!("setle", flags)),
                (ConditionCode::g, setcc!("setg", flags)),
            ];
            for (code, cpu) in cases {
                assert_eq!(
                    condition_holds(code, flags),
                    cpu,
                    "{code:?} with {flags:#x}"
                );
                checked += 1;
            }
        }
        assert_eq!(checked, 32 * 16);
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
