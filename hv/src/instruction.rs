//! Decoding the guest instruction at RIP, with iced-x86.
//!
//! QEMU's TCG does not offer NRIP save or decode assists (see ../shared/DESIGN.md), so
//! after an intercepted instruction the hypervisor must find out itself how long it was
//! (to skip it) and, for some exits, what its operands are. We read the bytes at RIP
//! through the guest's page tables at every exit (`exit::Exit::read`) and decode them where
//! a handler needs to.

use iced_x86::{Decoder, DecoderOptions, Instruction};

/// Decode the first instruction of `bytes`, fetched at `rip`, in `bits`-bit code.
pub fn decode(bytes: &[u8], bits: u32, rip: u64) -> Option<Instruction> {
    let mut decoder = Decoder::with_ip(bits, bytes, rip, DecoderOptions::NONE);
    let instruction = decoder.decode();
    (!instruction.is_invalid()).then_some(instruction)
}

/// Build the decoder's tables now (iced-x86 creates them on first use, about 1.5 MiB of
/// heap), so that the first guest exit is not the one that pays for it.
pub fn warm_up() {
    let _ = decode(&[0x0f, 0xa2], 64, 0);
}

/// A general register as iced names it: its number (0 = RAX … 15 = R15, our `Vcpu::gpr`
/// numbering) and its width in bytes. `None` for other registers and for AH, BH, CH, DH
/// (bits 15:8 of a register: no instruction the hypervisor emulates uses them).
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
