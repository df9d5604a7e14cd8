//! What a PC's firmware leaves in memory for the kernel it boots, and traplab writes in its
//! place: there is no BIOS in a traplab domain, but a PC kernel still reads what one leaves.
//!
//! - **The BIOS data area** (0x400–0x4ff, IBM PC/AT BIOS technical reference, "BIOS data
//!   area"): the serial ports' addresses, the equipment word, the base memory size and the
//!   segment of the extended BIOS data area. Kernels read it before anything else: Xen places
//!   its real-mode trampoline below `min(base memory, EBDA)` and Linux reserves the range
//!   from the EBDA up. A zeroed BDA (base memory 0 KiB) sends Xen's trampoline to 4 GiB − 4 KiB.
//!   The values are those SeaBIOS leaves under `qemu-system-x86_64 -nodefaults -serial stdio`,
//!   so that a kernel finds the same PC here as under QEMU's own `-kernel`.
//! - **The extended BIOS data area** (EBDA, the last KiB of conventional memory): its first
//!   word is its size in KiB; the memory map reserves it.
//!
//! The interrupt vector table stays zero: traplab offers no BIOS services, and a kernel that
//! calls one in real mode (Xen without `no-real-mode`) jumps to address 0.

use super::ImageError;
use super::multiboot::CONVENTIONAL_END;
use crate::domain::GuestMemory;
use traplab_abi::boot::CONSOLE_PORT;

/// Offsets in the BIOS data area (segment 0x40).
pub mod bda {
    /// Where it starts: segment 0x40.
    pub const BASE: u64 = 0x400;
    /// COM1–COM4's I/O base addresses (a word each; 0: no port).
    pub const COM_PORTS: u64 = 0x400;
    /// LPT1–LPT3's I/O base addresses.
    pub const LPT_PORTS: u64 = 0x408;
    /// The EBDA's segment.
    pub const EBDA_SEGMENT: u64 = 0x40e;
    /// The equipment word (INT 11h): bits 9–11 the number of serial ports.
    pub const EQUIPMENT: u64 = 0x410;
    /// The base (conventional) memory size in KiB (INT 12h).
    pub const BASE_MEMORY_KIB: u64 = 0x413;
    /// The BDA ends here.
    pub const END: u64 = 0x500;
}

/// The equipment word SeaBIOS reports for one serial port and nothing else: bit 1 (a math
/// coprocessor) and 1 in bits 9–11 (one serial port).
const EQUIPMENT_ONE_SERIAL_PORT: u16 = (1 << 9) | (1 << 1);

/// The EBDA is one KiB.
const EBDA_KIB: u16 = 1;

/// Writes the BIOS data area and the EBDA's header, after zeroing both.
pub fn write_bios_data_area(memory: &mut dyn GuestMemory) -> Result<(), ImageError> {
    let zeros = [0u8; (bda::END - bda::BASE) as usize];
    write(memory, bda::BASE, &zeros)?;
    let words: [(u64, u16); 4] = [
        (bda::COM_PORTS, CONSOLE_PORT),
        (bda::EBDA_SEGMENT, (CONVENTIONAL_END >> 4) as u16),
        (bda::EQUIPMENT, EQUIPMENT_ONE_SERIAL_PORT),
        (bda::BASE_MEMORY_KIB, (CONVENTIONAL_END / 1024) as u16),
    ];
    for (at, value) in words {
        write(memory, at, &value.to_le_bytes())?;
    }
    write(memory, CONVENTIONAL_END, &[0u8; 1024])?;
    write(memory, CONVENTIONAL_END, &EBDA_KIB.to_le_bytes())
}

fn write(memory: &mut dyn GuestMemory, at: u64, bytes: &[u8]) -> Result<(), ImageError> {
    memory.write_physical(at, bytes).map_err(|_| {
        ImageError(alloc::format!(
            "the firmware's data at {at:#x} does not fit in the guest's RAM"
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::VecMemory;

    fn word(memory: &VecMemory, at: u64) -> u16 {
        let mut bytes = [0u8; 2];
        memory.read_physical(at, &mut bytes).unwrap();
        u16::from_le_bytes(bytes)
    }

    #[test]
    fn the_bios_data_area_says_what_seabios_says_under_qemu() {
        let mut memory = VecMemory::new(2 << 20, false);
        memory.write_physical(0x500 - 2, &[0xaa, 0xbb]).unwrap();
        write_bios_data_area(&mut memory).unwrap();
        assert_eq!(word(&memory, 0x400), 0x3f8, "COM1");
        assert_eq!(word(&memory, 0x402), 0, "no COM2");
        assert_eq!(word(&memory, 0x408), 0, "no LPT1");
        assert_eq!(word(&memory, 0x40e), 0x9fc0, "the EBDA at 0x9fc00");
        assert_eq!(word(&memory, 0x410) >> 9 & 7, 1, "one serial port");
        assert_eq!(word(&memory, 0x413), 639, "639 KiB of base memory");
        assert_eq!(word(&memory, 0x4fe), 0, "the rest is zeroed");
        assert_eq!(word(&memory, 0x9fc00), 1, "the EBDA is 1 KiB");
    }
}
