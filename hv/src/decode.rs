//! Decoding the guest instruction at RIP, with iced-x86.
//!
//! QEMU's TCG does not offer NRIP save or decode assists (see ../shared/DESIGN.md), so
//! after an intercepted instruction the hypervisor must find out itself how long it was
//! (to skip it) and, for some exits, what its operands are. We read the bytes at RIP
//! through the guest's page tables (`Domain::fetch_instruction`) and decode them.

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
