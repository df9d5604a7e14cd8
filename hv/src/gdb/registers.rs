//! The registers of the stub's target description by gdb's number, and the check every
//! register write goes through: a pure part of the stub (`arch.rs`, `target.rs`), tested on
//! the host.
//!
//! gdb numbers the registers of a target description in the order of its `<reg>` elements
//! (gdb docs, "Target Description Format", *Registers*: "regnum … defaults to one greater
//! than the previous register"), and that is the order of the `g` packet too. `p n` and
//! `P n=r…` name a register by that number (GDB manual, "Packets"); [`Register::from_number`]
//! turns it into a register, [`Register::offset`] and [`Register::size`] say where its bytes
//! are in the `g` packet. The numbers are those of `target.xml`, which gdb reads: gdb's
//! `org.gnu.gdb.i386.core` and `.sse` features (0–56), its `.segments` feature (FS and GS
//! base, 57–58), then ours, `org.traplab.system` (59–65).
//!
//! A `G` writes every register, a `P` one; each register's value passes [`refusal`] either
//! way, so that `set $ds = 0x2b` is refused whether gdb sends it in a `G` or a `P`.

use crate::vmcb::segment;
use core::fmt;
use traplab_abi::x86::canonical;

/// A register of the target description.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Register {
    /// A general register, by its number in the instruction encoding (0 = RAX, 1 = RCX,
    /// 2 = RDX, 3 = RBX, 4 = RSP, 5 = RBP, 6 = RSI, 7 = RDI, 8–15 = R8–R15).
    General(u8),
    Rip,
    /// RFLAGS' low 32 bits (gdb's `eflags`); bits 63:32 are reserved (AMD APM vol. 2, 3.1.6).
    Eflags,
    /// A segment selector, by the state save area's numbering (`vmcb::segment`).
    Selector(u8),
    /// An x87 data register ST0–ST7, 80 bits.
    St(u8),
    /// One of the x87 control words gdb shows (fctrl, fstat, ftag, fiseg, …).
    X87(X87),
    Xmm(u8),
    Mxcsr,
    FsBase,
    GsBase,
    /// KernelGSbase, the base SWAPGS swaps into GS (`k_gs_base`).
    KernelGsBase,
    Cr0,
    Cr2,
    Cr3,
    Cr4,
    Cr8,
    Efer,
}

/// The x87 control words of gdb's `org.gnu.gdb.i386.core`, in its order (32 bits each in
/// the packet; the FXSAVE image holds them in 16 or 32 bits, AMD APM vol. 5, FXSAVE).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum X87 {
    /// FCW, the control word.
    Fctrl,
    /// FSW, the status word.
    Fstat,
    /// The tag word, in its full two-bit form (FXSAVE keeps the abridged one).
    Ftag,
    /// The last x87 instruction's CS selector…
    Fiseg,
    /// …and offset.
    Fioff,
    /// Its memory operand's DS selector…
    Foseg,
    /// …and offset.
    Fooff,
    /// Its opcode (11 bits).
    Fop,
}

/// gdb's order of the general registers (rax, rbx, rcx, rdx, rsi, rdi, rbp, rsp, r8–r15)
/// as their numbers in the encoding.
const GENERAL_ORDER: [u8; 16] = [0, 3, 1, 2, 6, 7, 5, 4, 8, 9, 10, 11, 12, 13, 14, 15];
/// gdb's order of the selectors as the state save area's numbers.
const SELECTOR_ORDER: [u8; 6] = [
    segment::CS,
    segment::SS,
    segment::DS,
    segment::ES,
    segment::FS,
    segment::GS,
];
const X87_ORDER: [X87; 8] = [
    X87::Fctrl,
    X87::Fstat,
    X87::Ftag,
    X87::Fiseg,
    X87::Fioff,
    X87::Foseg,
    X87::Fooff,
    X87::Fop,
];

/// The registers' names in `target.xml`, by number: a row per group.
#[rustfmt::skip]
pub const NAMES: [&str; COUNT] = [
    "rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rbp", "rsp",
    "r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15",
    "rip", "eflags",
    "cs", "ss", "ds", "es", "fs", "gs",
    "st0", "st1", "st2", "st3", "st4", "st5", "st6", "st7",
    "fctrl", "fstat", "ftag", "fiseg", "fioff", "foseg", "fooff", "fop",
    "xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5", "xmm6", "xmm7",
    "xmm8", "xmm9", "xmm10", "xmm11", "xmm12", "xmm13", "xmm14", "xmm15",
    "mxcsr",
    "fs_base", "gs_base",
    "k_gs_base", "cr0", "cr2", "cr3", "cr4", "cr8", "efer",
];

/// How many registers the description has: numbers 0 to `COUNT - 1`.
pub const COUNT: usize = 66;

/// `fs_base`'s number: from it on, the registers beyond gdbstub_arch's core and SSE ones,
/// 8 bytes each.
pub const FS_BASE: usize = 57;

/// The size of the `g` packet's data, in bytes: every register's, in number order.
pub const PACKET_BYTES: usize = 0x218 + 9 * 8;

impl Register {
    /// The register gdb's number `number` names, or `None` for a number the description
    /// does not have (gdb's number is input: any `usize` may come).
    pub fn from_number(number: usize) -> Option<Register> {
        Some(match number {
            0..=15 => Register::General(GENERAL_ORDER[number]),
            16 => Register::Rip,
            17 => Register::Eflags,
            18..=23 => Register::Selector(SELECTOR_ORDER[number - 18]),
            24..=31 => Register::St((number - 24) as u8),
            32..=39 => Register::X87(X87_ORDER[number - 32]),
            40..=55 => Register::Xmm((number - 40) as u8),
            56 => Register::Mxcsr,
            FS_BASE => Register::FsBase,
            58 => Register::GsBase,
            59 => Register::KernelGsBase,
            60 => Register::Cr0,
            61 => Register::Cr2,
            62 => Register::Cr3,
            63 => Register::Cr4,
            64 => Register::Cr8,
            65 => Register::Efer,
            _ => return None,
        })
    }

    /// Every register, in number (and packet) order.
    pub fn all() -> impl Iterator<Item = Register> {
        (0..COUNT).filter_map(Register::from_number)
    }

    /// gdb's number for the register: the inverse of [`Register::from_number`] (a register
    /// made by hand that no number names, `Selector(9)`, counts as the first of its group).
    pub fn number(self) -> usize {
        let position = |order: &[u8], value: u8| {
            order
                .iter()
                .position(|&entry| entry == value)
                .unwrap_or_default()
        };
        match self {
            Register::General(number) => position(&GENERAL_ORDER, number & 15),
            Register::Rip => 16,
            Register::Eflags => 17,
            Register::Selector(number) => 18 + position(&SELECTOR_ORDER, number),
            Register::St(n) => 24 + usize::from(n & 7),
            Register::X87(word) => {
                32 + X87_ORDER
                    .iter()
                    .position(|&entry| entry == word)
                    .unwrap_or_default()
            }
            Register::Xmm(n) => 40 + usize::from(n & 15),
            Register::Mxcsr => 56,
            Register::FsBase => FS_BASE,
            Register::GsBase => 58,
            Register::KernelGsBase => 59,
            Register::Cr0 => 60,
            Register::Cr2 => 61,
            Register::Cr3 => 62,
            Register::Cr4 => 63,
            Register::Cr8 => 64,
            Register::Efer => 65,
        }
    }

    /// Its name in `target.xml` (and gdb's `$name`).
    pub fn name(self) -> &'static str {
        NAMES[self.number()]
    }

    /// Its size in the `g` packet and in `p`/`P`, in bytes (its `bitsize` / 8).
    pub fn size(self) -> usize {
        match self {
            Register::Eflags | Register::Selector(_) | Register::X87(_) | Register::Mxcsr => 4,
            Register::St(_) => 10,
            Register::Xmm(_) => 16,
            _ => 8,
        }
    }

    /// Where its bytes start in the `g` packet's data: after every register numbered
    /// before it.
    pub fn offset(self) -> usize {
        Register::all()
            .take(self.number())
            .map(Register::size)
            .sum()
    }

    /// Its bytes in a `g` packet's data (`None`: the data is too short for it).
    pub fn slice(self, packet: &[u8]) -> Option<&[u8]> {
        packet.get(self.offset()..self.offset() + self.size())
    }
}

/// A register value the stub does not write: gdb hears EINVAL, the log says why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// A selector other than the one the guest holds.
    Selector {
        name: &'static str,
        held: u64,
        written: u64,
    },
    /// A CR8 with bits above the task priority.
    Cr8(u64),
    /// An FS, GS or KernelGS base that is no canonical address.
    NotCanonical {
        name: &'static str,
        written: u64,
        why: &'static str,
    },
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Refusal::Selector {
                name,
                held,
                written,
            } => write!(
                f,
                "{name} = {written:#x} (it holds {held:#x}); a selector is loaded with its descriptor, by the guest's own MOV, POP, far jump or IRET"
            ),
            Refusal::Cr8(written) => write!(
                f,
                "cr8 = {written:#x}, with reserved bits 63:4 set (CR8 holds the 4-bit task priority)"
            ),
            Refusal::NotCanonical { name, written, why } => {
                write!(f, "{name} = {written:#x}, not a canonical address ({why})")
            }
        }
    }
}

/// The value in `bytes`, little-endian as the packets carry it (gdb docs: registers are
/// sent in the target's byte order), zero-extended; the first 8 bytes of a longer one.
pub fn value(bytes: &[u8]) -> u64 {
    bytes
        .iter()
        .take(8)
        .rev()
        .fold(0, |value, &byte| value << 8 | u64::from(byte))
}

/// Why the stub does not write `written` (a register's bytes, as `P` or a slice of `G`
/// carries them) to `register`, which holds `held` now; `None`: it writes it.
///
/// - A selector alone is no segment: loading one, the CPU reads its descriptor from the GDT
///   or LDT into the hidden part (base, limit, attributes) and checks it first — present,
///   the right type, privilege against the CPL, and for CS and SS the CPL itself (AMD APM
///   vol. 2, 4.5 "Segment Registers" and 4.9–4.11). Writing the selector without all that
///   would show gdb a segment the CPU does not use; doing all that would be the hypervisor
///   emulating a segment load no instruction made (QEMU's own stub loads the descriptor
///   without the checks). So a selector that changes is refused (a `P` for a selector the
///   user set, or a `G`, which carries every selector as gdb read them but that one); the
///   guest's own MOV, POP, far jump or IRET loads selectors, and gdb may step one.
/// - A value the register cannot hold: the CPU refuses it with #GP(0), and VMRUN would not
///   (V_TPR has 8 bits; FS_BASE, GS_BASE and KernelGSbase are loaded unchecked). CR8 holds
///   the 4-bit task priority, bits 63:4 reserved (AMD APM vol. 2, 3.1.5), as `exit/cr.rs`
///   refuses the guest's MOV CR8; FS_BASE, GS_BASE and KernelGSbase hold addresses and must
///   be canonical (APM vol. 2, 5.3.1), as `exit/msr.rs` refuses the guest's WRMSR of any.
///
/// Other bad control-register values are the user's to make: VMRUN refuses them and the
/// domain ends, as on hardware.
pub fn refusal(register: Register, held: &[u8], written: &[u8]) -> Option<Refusal> {
    let name = register.name();
    let (held, written) = (value(held), value(written));
    let base = |why| (!canonical(written)).then_some(Refusal::NotCanonical { name, written, why });
    match register {
        Register::Selector(_) if held != written => Some(Refusal::Selector {
            name,
            held,
            written,
        }),
        Register::Cr8 if written >> 4 != 0 => Some(Refusal::Cr8(written)),
        Register::FsBase => base("the FS_BASE MSR holds FS's base"),
        Register::GsBase => base("the GS_BASE MSR holds GS's base"),
        Register::KernelGsBase => base("SWAPGS loads it as GS's base"),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The `<reg …>` elements of the target description gdb reads, in order: each one's
    /// name, and its `regnum` where it has one.
    fn described() -> Vec<(&'static str, Option<usize>)> {
        let attribute = |element: &'static str, name: &str| {
            let (_, rest) = element.split_once(&format!(" {name}=\""))?;
            rest.split('"').next()
        };
        include_str!("target.xml")
            .split("<reg")
            .skip(1)
            .filter_map(|rest| rest.split("/>").next())
            .filter_map(|element| {
                let number = attribute(element, "regnum").and_then(|text| text.parse().ok());
                Some((attribute(element, "name")?, number))
            })
            .collect()
    }

    #[test]
    fn the_numbers_are_the_target_description_s_order() {
        let described = described();
        let names: Vec<&str> = described.iter().map(|&(name, _)| name).collect();
        assert_eq!(names, NAMES);
        // gdb numbers a `<reg>` without `regnum` one above the one before it: the explicit
        // ones (rax 0, xmm0 40, fs_base 57) must be where they stand.
        for (position, &(name, number)) in described.iter().enumerate() {
            if let Some(number) = number {
                assert_eq!(number, position, "{name}'s regnum");
            }
        }
        for (number, name) in NAMES.iter().enumerate() {
            let register = Register::from_number(number).expect("a register");
            assert_eq!(register.name(), *name);
            assert_eq!(register.number(), number, "{name}");
        }
    }

    #[test]
    fn the_sizes_are_the_target_description_s_bitsizes() {
        let xml = include_str!("target.xml");
        for register in Register::all() {
            let element = format!(
                "<reg name=\"{}\" bitsize=\"{}\"",
                register.name(),
                8 * register.size()
            );
            assert!(xml.contains(&element), "{element}");
        }
    }

    #[test]
    fn numbers_name_the_registers_gdb_means() {
        assert_eq!(Register::from_number(0), Some(Register::General(0)));
        assert_eq!(Register::from_number(1), Some(Register::General(3)), "rbx");
        assert_eq!(Register::from_number(7), Some(Register::General(4)), "rsp");
        assert_eq!(
            Register::from_number(12),
            Some(Register::General(12)),
            "r12"
        );
        assert_eq!(Register::from_number(16), Some(Register::Rip));
        assert_eq!(Register::from_number(18), Some(Register::Selector(1)), "cs");
        assert_eq!(Register::from_number(20), Some(Register::Selector(3)), "ds");
        assert_eq!(Register::from_number(21), Some(Register::Selector(0)), "es");
        assert_eq!(Register::from_number(34), Some(Register::X87(X87::Ftag)));
        assert_eq!(Register::from_number(55), Some(Register::Xmm(15)));
        assert_eq!(Register::from_number(59), Some(Register::KernelGsBase));
        assert_eq!(Register::from_number(64), Some(Register::Cr8));
        assert_eq!(Register::from_number(65), Some(Register::Efer));
    }

    #[test]
    fn a_number_the_description_does_not_have_is_no_register() {
        for number in [66, 67, 0x99, usize::MAX] {
            assert_eq!(Register::from_number(number), None, "{number}");
        }
    }

    #[test]
    fn the_registers_tile_the_g_packet() {
        // Each starts where the one before it ends; together they are the packet.
        let mut at = 0;
        for register in Register::all() {
            assert_eq!(register.offset(), at, "{}", register.name());
            at += register.size();
        }
        assert_eq!(at, PACKET_BYTES);
        // gdbstub_arch's core registers end with MXCSR at byte 532 (0x214).
        assert_eq!(Register::Mxcsr.offset(), 0x214);
        assert_eq!(Register::FsBase.offset(), 0x218);
        assert_eq!(Register::Efer.offset(), PACKET_BYTES - 8);
        assert_eq!(Register::St(1).offset(), 0xa4 + 10);
        assert_eq!(Register::Xmm(0).size(), 16);
    }

    #[test]
    fn a_slice_is_the_register_s_bytes_of_the_packet() {
        let packet: Vec<u8> = (0..PACKET_BYTES).map(|at| at as u8).collect();
        assert_eq!(Register::General(0).slice(&packet), Some(&packet[0..8]));
        assert_eq!(Register::Eflags.slice(&packet), Some(&packet[0x88..0x8c]));
        assert_eq!(Register::Cr8.slice(&packet), Some(&packet[0x250..0x258]));
        assert_eq!(Register::Cr8.slice(&packet[..0x250]), None, "too short");
    }

    #[test]
    fn values_are_little_endian() {
        assert_eq!(value(&[0x34, 0x12]), 0x1234);
        assert_eq!(
            value(&0xffff_8000_0000_1000u64.to_le_bytes()),
            0xffff_8000_0000_1000
        );
        assert_eq!(value(&[]), 0);
    }

    fn word(value: u64) -> [u8; 8] {
        value.to_le_bytes()
    }

    #[test]
    fn a_selector_is_written_only_as_it_is() {
        let ds = Register::Selector(3);
        let held = 0x10u32.to_le_bytes();
        assert_eq!(refusal(ds, &held, &held), None);
        assert_eq!(
            refusal(ds, &held, &0x2bu32.to_le_bytes()),
            Some(Refusal::Selector {
                name: "ds",
                held: 0x10,
                written: 0x2b
            })
        );
    }

    #[test]
    fn cr8_holds_four_bits() {
        let held = word(0);
        assert_eq!(refusal(Register::Cr8, &held, &word(15)), None);
        assert_eq!(
            refusal(Register::Cr8, &held, &word(16)),
            Some(Refusal::Cr8(16))
        );
        assert_eq!(
            refusal(Register::Cr8, &held, &word(1 << 63)),
            Some(Refusal::Cr8(1 << 63))
        );
    }

    #[test]
    fn the_segment_bases_behind_an_msr_are_canonical() {
        let held = word(0);
        for register in [Register::FsBase, Register::GsBase, Register::KernelGsBase] {
            for good in [0, 0x7fff_ffff_ffff, 0xffff_8000_0000_0000] {
                assert_eq!(refusal(register, &held, &word(good)), None);
            }
            for bad in [0x8000_0000_0000, 0x8000_0000_0000_0000] {
                let refused = refusal(register, &held, &word(bad));
                assert!(
                    matches!(refused, Some(Refusal::NotCanonical { written, .. }) if written == bad),
                    "{register:?} {bad:#x}: {refused:?}"
                );
            }
        }
        let refused = refusal(Register::KernelGsBase, &held, &word(0x8000_0000_0000));
        assert_eq!(
            refused.map(|refusal| refusal.to_string()).as_deref(),
            Some(
                "k_gs_base = 0x800000000000, not a canonical address (SWAPGS loads it as GS's base)"
            )
        );
    }

    #[test]
    fn every_other_register_takes_any_value() {
        let held = [0u8; 16];
        let written = [0xffu8; 16];
        for register in Register::all() {
            if matches!(
                register,
                Register::Selector(_)
                    | Register::Cr8
                    | Register::FsBase
                    | Register::GsBase
                    | Register::KernelGsBase
            ) {
                continue;
            }
            let size = register.size();
            assert_eq!(
                refusal(register, &held[..size], &written[..size]),
                None,
                "{}",
                register.name()
            );
        }
    }
}
