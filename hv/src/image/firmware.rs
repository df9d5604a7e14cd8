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
//! - **The MTRRs** (AMD APM vol. 2, 7.7): a BIOS programs the memory types before it starts
//!   a kernel, SeaBIOS as [`MTRRS`] lists; a vCPU out of reset has them all off, and Linux
//!   then says "CPU MTRRs all blank - virtualized system" and skips setting up PAT.
//!
//! The ACPI tables (`acpi.rs`) and the SMBIOS tables (`smbios.rs`) are firmware's too, each
//! in a file of its own.
//!
//! The interrupt vector table stays zero: traplab offers no BIOS services, and a kernel that
//! calls one in real mode (Xen without `no-real-mode`) jumps to address 0.

use super::ImageError;
use super::multiboot::CONVENTIONAL_END;
use crate::domain::GuestMemory;
use traplab_abi::boot::CONSOLE_PORT;
use traplab_abi::msr;

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

/// The MTRRs as SeaBIOS leaves them (its `mtrr_setup`): conventional memory write-back,
/// the VGA window 0xa0000–0xbffff uncacheable, the ROMs 0xc0000–0xfffff write-protected,
/// 2 GiB–4 GiB (the PCI hole) uncacheable through variable range 0 (its mask for a
/// 40-bit physical address width, CPUID 8000_0008), and the default type write-back with
/// the MTRRs and the fixed ranges enabled (MTRRdefType E and FE).
pub const MTRRS: [(u32, u64); 13] = [
    (msr::MTRR_FIX_64K_00000, 0x0606_0606_0606_0606),
    (msr::MTRR_FIX_16K_80000, 0x0606_0606_0606_0606),
    (msr::MTRR_FIX_16K_A0000, 0),
    (msr::MTRR_FIX_4K_C0000, WRITE_PROTECTED),
    (msr::MTRR_FIX_4K_C0000 + 1, WRITE_PROTECTED),
    (msr::MTRR_FIX_4K_C0000 + 2, WRITE_PROTECTED),
    (msr::MTRR_FIX_4K_C0000 + 3, WRITE_PROTECTED),
    (msr::MTRR_FIX_4K_C0000 + 4, WRITE_PROTECTED),
    (msr::MTRR_FIX_4K_C0000 + 5, WRITE_PROTECTED),
    (msr::MTRR_FIX_4K_C0000 + 6, WRITE_PROTECTED),
    (msr::MTRR_FIX_4K_F8000, WRITE_PROTECTED),
    (msr::MTRR_PHYS_BASE_0, 0x8000_0000),
    (msr::MTRR_PHYS_BASE_0 + 1, 0xff_8000_0800),
];

/// MTRRdefType: enabled (E, bit 11), fixed ranges enabled (FE, bit 10), default write-back.
pub const MTRR_DEFAULT: (u32, u64) = (msr::MTRR_DEF_TYPE, 0xc06);

/// Eight write-protected (type 5) fixed ranges.
const WRITE_PROTECTED: u64 = 0x0505_0505_0505_0505;

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
