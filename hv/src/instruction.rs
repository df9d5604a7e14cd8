//! Decoding the guest instruction at RIP, with iced-x86.
//!
//! QEMU's TCG does not offer NRIP save or decode assists (see ../shared/DESIGN.md), so
//! after an intercepted instruction the hypervisor must find out itself how long it was
//! (to skip it) and, for some exits, what its operands are. We read the bytes at RIP
//! through the guest's page tables at every exit (`exit::Exit::read`) and decode them where
//! a handler needs to.

use iced_x86::{Decoder, DecoderOptions, Instruction, OpKind};

/// How the guest's instructions are decoded: as an AMD CPU decodes them, since this is an
/// AMD SVM hypervisor. Where AMD and Intel differ, iced's AMD rules: `LOCK MOV CR0` is MOV
/// CR8 (AltMovCr8, AMD APM vol. 3, "MOV (CRn)"), a 66h prefix gives a near branch a 16-bit
/// operand in 64-bit mode, UD0 has no ModRM byte.
pub const DECODER: u32 = DecoderOptions::AMD;

/// Decode the first instruction of `bytes`, fetched at `rip`, in `bits`-bit code.
pub fn decode(bytes: &[u8], bits: u32, rip: u64) -> Option<Instruction> {
    let mut decoder = Decoder::with_ip(bits, bytes, rip, DECODER);
    let instruction = decoder.decode();
    (!instruction.is_invalid()).then_some(instruction)
}

/// The length of the instructions the hypervisor skips most often, read off their opcode
/// when they come without a prefix — as a CPU with NRIP save would hand it over — instead of
/// running the decoder (about 500 instructions under TCG, at every such exit). None of them
/// has a ModRM byte or an operand whose size depends on the mode, so the length is the same
/// in 16-, 32- and 64-bit code. `None`: ask the decoder.
pub fn common_length(bytes: &[u8]) -> Option<u64> {
    match bytes {
        [0x0f, 0xa2, ..] => Some(2),       // CPUID
        [0x0f, 0x01, 0xd9, ..] => Some(3), // VMMCALL
        [0x0f, 0x01, 0xf9, ..] => Some(3), // RDTSCP
        [0x0f, 0x31, ..] | [0x0f, 0x30, ..] | [0x0f, 0x32, ..] => Some(2), // RDTSC WRMSR RDMSR
        [0x0f, 0x09, ..] | [0x0f, 0x08, ..] => Some(2), // WBINVD INVD
        [0xf4, ..] => Some(1),             // HLT
        [0xec..=0xef, ..] => Some(1),      // IN/OUT with DX
        [0xe4..=0xe7, _, ..] => Some(2),   // IN/OUT with imm8
        _ => None,
    }
}

/// Build the decoder's tables now (iced-x86 creates them on first use, about 1.5 MiB of
/// heap), so that the first guest exit is not the one that pays for it.
pub fn warm_up() {
    let _ = decode(&[0x0f, 0xa2], 64, 0);
}

/// A general register as iced names it: its number (0 = RAX … 15 = R15, our `Vcpu::gpr`
/// numbering) and its width in bytes. `None` for other registers and for AH, BH, CH, DH
/// (bits 15:8 of a register: [`high_byte`]).
pub fn gpr(register: iced_x86::Register) -> Option<(u8, u8)> {
    use iced_x86::Register;
    if !register.is_gpr()
        || matches!(
            register,
            Register::AH | Register::BH | Register::CH | Register::DH
        )
    {
        return None;
    }
    let number = match register.full_register() {
        Register::RAX => 0,
        Register::RCX => 1,
        Register::RDX => 2,
        Register::RBX => 3,
        Register::RSP => 4,
        Register::RBP => 5,
        Register::RSI => 6,
        Register::RDI => 7,
        Register::R8 => 8,
        Register::R9 => 9,
        Register::R10 => 10,
        Register::R11 => 11,
        Register::R12 => 12,
        Register::R13 => 13,
        Register::R14 => 14,
        Register::R15 => 15,
        _ => return None,
    };
    Some((number, register.size() as u8))
}

/// AH, CH, DH or BH (bits 15:8 of RAX, RCX, RDX, RBX, which a byte operand names when the
/// instruction has no REX prefix): the number of the register it is part of.
pub fn high_byte(register: iced_x86::Register) -> Option<u8> {
    use iced_x86::Register;
    match register {
        Register::AH => Some(0),
        Register::CH => Some(1),
        Register::DH => Some(2),
        Register::BH => Some(3),
        _ => None,
    }
}

/// The linear address of `instruction`'s memory operand, as `domain`'s CPU forms it: the
/// segment's base ([`Vmcb::segment_base`](crate::vmcb::Vmcb::segment_base)) plus base,
/// scaled index and displacement at the address size, wrapping at 4 GiB outside 64-bit
/// mode. (A RIP-relative operand iced has already resolved against the RIP it decoded
/// at, the guest's.) Segment limits are not checked. `None` when it names a register the
/// hypervisor does not read, or when the instruction has no memory operand.
pub fn memory_address(instruction: &Instruction, domain: &crate::domain::Domain) -> Option<u64> {
    let vmcb = &domain.vcpu.vmcb;
    // The operand that is memory: the first in `op [m], r`, the second in `op r, [m]`
    // (iced computes an address for the operand it is given, and 0 for a register).
    let operand = (0..instruction.op_count())
        .find(|&number| instruction.op_kind(number) == iced_x86::OpKind::Memory)?;
    let address =
        instruction.virtual_address(operand, 0, |register, _, _| {
            match segment_number(register) {
                Some(segment) => Some(vmcb.segment_base(segment)),
                None => gpr(register).map(|(number, _)| domain.gpr(number)),
            }
        })?;
    Some(address & vmcb.linear_address_mask())
}

/// The address size of a string instruction (INS, OUTS, MOVS, STOS, LODS, CMPS, SCAS), from
/// its memory operands: 16, 32 or 64 bits, the mode's default or the other one with an 0x67
/// prefix. It says which of RCX, RSI and RDI the instruction counts and walks with (AMD APM
/// vol. 3, "REP"). Either operand may be the memory one (SCAS's is its second, CMPS has two),
/// and both of an instruction's have the same size. (For INS and OUTS EXITINFO1's
/// A16/A32/A64 bits would say it, AMD APM vol. 2, 15.10.2, but QEMU 7.2's TCG leaves them
/// clear: `quirks.rs`.)
pub fn string_address_bits(instruction: &Instruction) -> u8 {
    let kinds = [instruction.op0_kind(), instruction.op1_kind()];
    if kinds
        .iter()
        .any(|kind| matches!(kind, OpKind::MemoryESDI | OpKind::MemorySegSI))
    {
        16
    } else if kinds
        .iter()
        .any(|kind| matches!(kind, OpKind::MemoryESEDI | OpKind::MemorySegESI))
    {
        32
    } else {
        64
    }
}

/// A segment register as iced names it, by its number (`vmcb::segment`).
pub fn segment_number(register: iced_x86::Register) -> Option<u8> {
    use crate::vmcb::segment;
    use iced_x86::Register;
    Some(match register {
        Register::ES => segment::ES,
        Register::CS => segment::CS,
        Register::SS => segment::SS,
        Register::DS => segment::DS,
        Register::FS => segment::FS,
        Register::GS => segment::GS,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every string instruction's address size, in each mode and with 0x67 (the other size of
    /// the mode): SCAS's memory operand is its second, CMPS has one on each side.
    #[test]
    fn a_string_instruction_s_address_size_comes_from_either_operand() {
        // (bytes, 16-bit mode, 32-bit mode, 64-bit mode)
        let cases: [(&[u8], [u8; 3]); 14] = [
            (&[0xaa], [16, 32, 64]),             // STOSB
            (&[0xac], [16, 32, 64]),             // LODSB
            (&[0xa4], [16, 32, 64]),             // MOVSB
            (&[0x6c], [16, 32, 64]),             // INSB
            (&[0x6e], [16, 32, 64]),             // OUTSB
            (&[0xa6], [16, 32, 64]),             // CMPSB
            (&[0xae], [16, 32, 64]),             // SCASB
            (&[0x67, 0xaa], [32, 16, 32]),       // STOSB, the other size
            (&[0x67, 0xac], [32, 16, 32]),       // LODSB
            (&[0x67, 0xa4], [32, 16, 32]),       // MOVSB
            (&[0x67, 0x6e], [32, 16, 32]),       // OUTSB
            (&[0x67, 0xa6], [32, 16, 32]),       // CMPSB
            (&[0x67, 0xae], [32, 16, 32]),       // SCASB
            (&[0xf3, 0x67, 0xae], [32, 16, 32]), // REPE SCASB
        ];
        for (bytes, sizes) in cases {
            for (bits, expected) in [16, 32, 64].into_iter().zip(sizes) {
                let instruction = decode(bytes, bits, 0x1000).expect("a string instruction");
                assert_eq!(
                    string_address_bits(&instruction),
                    expected,
                    "{bytes:02x?} in {bits}-bit mode: {:?}",
                    instruction.mnemonic()
                );
            }
        }
    }

    #[test]
    fn common_lengths_are_the_decoder_s_in_every_mode() {
        let encodings: [&[u8]; 13] = [
            &[0x0f, 0xa2],
            &[0x0f, 0x01, 0xd9],
            &[0x0f, 0x01, 0xf9],
            &[0x0f, 0x31],
            &[0x0f, 0x30],
            &[0x0f, 0x32],
            &[0x0f, 0x09],
            &[0x0f, 0x08],
            &[0xf4],
            &[0xee],
            &[0xed],
            &[0xe6, 0x80],
            &[0xe5, 0x71],
        ];
        for bytes in encodings {
            let mut padded = bytes.to_vec();
            padded.extend([0x90; 4]);
            for bits in [16, 32, 64] {
                let decoded = decode(&padded, bits, 0).expect("a valid instruction");
                assert_eq!(
                    common_length(&padded),
                    Some(decoded.len() as u64),
                    "{bytes:02x?} in {bits}-bit code"
                );
            }
        }
        // With a prefix, or anything else, the decoder decides.
        for bytes in [
            &[0x66, 0x0f, 0xa2][..],
            &[0xf3, 0xf4],
            &[0x48, 0x0f, 0x31],
            &[0x0f, 0x01, 0xd8],
        ] {
            assert_eq!(common_length(bytes), None, "{bytes:02x?}");
        }
        // An imm8 form cut short (the fetch stopped at an unmapped page) is not guessed.
        assert_eq!(common_length(&[0xe6]), None);
    }
}
