//! What must hold of the hypervisor's machine code, read from its image.
//!
//! The world switch leaves the guest's x87 state and MXCSR in the CPU from one exit to the
//! next, and switches only the XMM registers (`hv/src/svm/fpu.rs`). That is right only while
//! no instruction of the hypervisor reads or writes what it leaves there: no x87 or MMX
//! instruction, no SSE arithmetic or conversion, whose rounding and exceptions MXCSR controls
//! (a guest's MXCSR may unmask them, and an inexact result would then raise #XM in the
//! hypervisor), and no AVX instruction at all (the world switch does not switch the YMM
//! registers' upper halves either). Moves, logic and integer operations on XMM registers
//! are fine: MXCSR does not govern them. Every function symbol of the image is checked,
//! `core`'s and `alloc`'s too, except those that switch or save the state on purpose
//! ([`SWITCHERS`]). (The boot's assembly, which has no function symbols, runs before any
//! guest.)

use iced_x86::{Decoder, DecoderOptions, Instruction, Mnemonic, Register};
use traplab_tracer::code::GuestImage;

/// The functions that touch the x87/SSE state on purpose: the world switch and
/// `svm/fpu.rs`'s `take_out`, which switch it, and the entries of the hypervisor's own
/// interrupt and fault handlers (`cpu.rs`), which save all of it and restore it around the
/// handler.
const SWITCHERS: [&str; 4] = [
    "traplab_hv::svm::world_switch::world_switch",
    "traplab_hv::svm::fpu::take_out",
    "traplab_hv::cpu::fault_entry",
    "traplab_hv::cpu::interrupt_entry",
];

/// SSE instructions named like arithmetic (…PS, …PD, …SS, …SD) that only move, shuffle,
/// blend or mask bits, or work on integers: MXCSR does not govern them.
const NOT_ARITHMETIC: [Mnemonic; 39] = [
    Mnemonic::Movaps,
    Mnemonic::Movapd,
    Mnemonic::Movups,
    Mnemonic::Movupd,
    Mnemonic::Movss,
    Mnemonic::Movsd,
    Mnemonic::Movhps,
    Mnemonic::Movhpd,
    Mnemonic::Movlps,
    Mnemonic::Movlpd,
    Mnemonic::Movhlps,
    Mnemonic::Movlhps,
    Mnemonic::Movmskps,
    Mnemonic::Movmskpd,
    Mnemonic::Movntps,
    Mnemonic::Movntpd,
    Mnemonic::Andps,
    Mnemonic::Andpd,
    Mnemonic::Andnps,
    Mnemonic::Andnpd,
    Mnemonic::Orps,
    Mnemonic::Orpd,
    Mnemonic::Xorps,
    Mnemonic::Xorpd,
    Mnemonic::Shufps,
    Mnemonic::Shufpd,
    Mnemonic::Unpcklps,
    Mnemonic::Unpckhps,
    Mnemonic::Unpcklpd,
    Mnemonic::Unpckhpd,
    Mnemonic::Blendps,
    Mnemonic::Blendpd,
    Mnemonic::Blendvps,
    Mnemonic::Blendvpd,
    Mnemonic::Insertps,
    Mnemonic::Extractps,
    Mnemonic::Pabsd,
    Mnemonic::Pminsd,
    Mnemonic::Pmaxsd,
];

/// `register` is one of `first` … `last` (iced numbers each kind of register in a row).
fn among(register: Register, first: Register, last: Register) -> bool {
    (first as u32..=last as u32).contains(&(register as u32))
}

/// Why `instruction` would read or change the x87 state or MXCSR, if it would.
fn uses_the_guests_fpu_state(instruction: &Instruction) -> Option<&'static str> {
    let registers: Vec<Register> = (0..instruction.op_count())
        .map(|operand| instruction.op_register(operand))
        .collect();
    let name = format!("{:?}", instruction.mnemonic()).to_lowercase();
    // iced names the code of every non-legacy encoding by it: VEX_…, EVEX_…, XOP_…, D3NOW_…
    let code = format!("{:?}", instruction.code());
    if ["VEX_", "EVEX_", "MVEX_", "XOP_", "D3NOW_"]
        .iter()
        .any(|encoding| code.starts_with(encoding))
    {
        return Some("a VEX, EVEX, XOP or 3DNow! instruction (AVX state, or the x87 registers)");
    }
    if registers
        .iter()
        .any(|&register| among(register, Register::MM0, Register::MM7))
    {
        return Some("an MMX instruction (its registers are the x87 registers)");
    }
    // Every mnemonic that starts with F is x87's (FXSAVE and FXRSTOR too), and WAIT
    // (FWAIT) checks for its pending exceptions.
    if registers
        .iter()
        .any(|&register| among(register, Register::ST0, Register::ST7))
        || name.starts_with('f')
        || instruction.mnemonic() == Mnemonic::Wait
    {
        return Some("an x87 instruction");
    }
    if matches!(
        instruction.mnemonic(),
        Mnemonic::Ldmxcsr | Mnemonic::Stmxcsr | Mnemonic::Emms
    ) || name.starts_with("xsave")
        || name.starts_with("xrstor")
    {
        return Some("an instruction that moves the x87/SSE control state");
    }
    // A conversion is governed by MXCSR whatever its operands (CVTTSD2SI reads memory and
    // writes a general register); no other mnemonic starts with CVT.
    if name.starts_with("cvt") {
        return Some("an SSE conversion (MXCSR controls its rounding and exceptions)");
    }
    let on_xmm = registers
        .iter()
        .any(|&register| among(register, Register::XMM0, Register::XMM31));
    let arithmetic = ["ps", "pd", "ss", "sd"]
        .iter()
        .any(|end| name.ends_with(end))
        && !NOT_ARITHMETIC.contains(&instruction.mnemonic());
    if on_xmm && arithmetic {
        return Some("SSE arithmetic (MXCSR controls its rounding and exceptions)");
    }
    None
}

#[test]
fn the_hypervisor_never_uses_the_x87_state_or_mxcsr_it_leaves_in_the_cpu() {
    let image = GuestImage::load(&traplab_labs::hv_elf()).expect("the hypervisor's ELF");
    let mut checked = 0;
    let mut found = Vec::new();
    let mut switchers_found = [false; SWITCHERS.len()];
    for symbol in image.symbols().iter() {
        // Functions only: `code_at` has the executable sections' bytes, nothing else.
        let Some(bytes) = image.code_at(symbol.address, symbol.size as usize) else {
            continue;
        };
        if let Some(index) = SWITCHERS
            .iter()
            .position(|switcher| symbol.name.starts_with(switcher))
        {
            switchers_found[index] = true;
            continue;
        }
        let mut decoder = Decoder::with_ip(64, bytes, symbol.address, DecoderOptions::NONE);
        for instruction in &mut decoder {
            checked += 1;
            if let Some(why) = uses_the_guests_fpu_state(&instruction) {
                found.push(format!("{:#x} in {}: {why}", instruction.ip(), symbol.name));
            }
        }
    }
    assert!(
        checked > 10_000,
        "only {checked} instructions read: is this the hypervisor?"
    );
    for (switcher, found) in SWITCHERS.iter().zip(switchers_found) {
        assert!(found, "{switcher} is not in the image: has it moved?");
    }
    assert!(
        found.is_empty(),
        "{} instructions of the hypervisor use the guest's x87 state or MXCSR, which the \
         world switch leaves in the CPU (hv/src/svm/fpu.rs):\n{}",
        found.len(),
        found.join("\n")
    );
}

/// The check itself: what it must catch and what it must let through.
#[test]
fn the_check_tells_arithmetic_from_moves() {
    let decode = |bytes: &[u8]| {
        let mut decoder = Decoder::with_ip(64, bytes, 0, DecoderOptions::NONE);
        decoder.decode()
    };
    let caught = [
        ("addsd xmm0, xmm1", &[0xf2, 0x0f, 0x58, 0xc1][..]),
        ("cvtsi2sd xmm0, rax", &[0xf2, 0x48, 0x0f, 0x2a, 0xc0]),
        ("mulps xmm2, xmm3", &[0x0f, 0x59, 0xd3]),
        ("fld st(1)", &[0xd9, 0xc1]),
        ("fninit", &[0xdb, 0xe3]),
        ("movq mm0, rax", &[0x48, 0x0f, 0x6e, 0xc0]),
        ("ldmxcsr [rax]", &[0x0f, 0xae, 0x10]),
        ("fxsave [rax]", &[0x0f, 0xae, 0x00]),
        ("fstp qword ptr [rax]", &[0xdd, 0x18]),
        ("fsqrt", &[0xd9, 0xfa]),
        ("cvttsd2si rax, [rcx]", &[0xf2, 0x48, 0x0f, 0x2c, 0x01]),
        (
            "roundsd xmm0, xmm1, 4",
            &[0x66, 0x0f, 0x3a, 0x0b, 0xc1, 0x04],
        ),
        ("vaddps ymm0, ymm1, ymm2", &[0xc5, 0xf4, 0x58, 0xc2]),
        ("vmovdqu ymm0, [rax]", &[0xc5, 0xfe, 0x6f, 0x00]),
    ];
    for (text, bytes) in caught {
        assert!(
            uses_the_guests_fpu_state(&decode(bytes)).is_some(),
            "{text} passed the check"
        );
    }
    let passed = [
        ("movups xmm0, [rax]", &[0x0f, 0x10, 0x00][..]),
        ("movaps [rsp], xmm1", &[0x0f, 0x29, 0x0c, 0x24]),
        ("xorps xmm0, xmm0", &[0x0f, 0x57, 0xc0]),
        ("pxor xmm1, xmm1", &[0x66, 0x0f, 0xef, 0xc9]),
        ("movdqu xmm0, [rcx]", &[0xf3, 0x0f, 0x6f, 0x01]),
        ("movsd (a string move)", &[0xa5]),
        ("unpcklpd xmm0, xmm1", &[0x66, 0x0f, 0x14, 0xc1]),
        ("pminsd xmm0, xmm1", &[0x66, 0x0f, 0x38, 0x39, 0xc1]),
        (
            "mov fs:[0], rax",
            &[0x64, 0x48, 0x89, 0x04, 0x25, 0, 0, 0, 0],
        ),
    ];
    for (text, bytes) in passed {
        assert_eq!(
            uses_the_guests_fpu_state(&decode(bytes)),
            None,
            "{text} was caught"
        );
    }
}
