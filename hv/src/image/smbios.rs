//! The SMBIOS tables a PC's firmware leaves for the kernel (DMTF DSP0134, "System Management
//! BIOS Reference Specification", version 2.8), and traplab's loader writes in its place: how
//! a kernel learns the machine's maker and name, and its firmware's version and date, without
//! asking anyone. Linux prints them at boot (`DMI: traplab traplab virtual PC, BIOS
//! traplab-hv 0.1.0 12/06/2026`) and shows them in /sys/class/dmi/id; `dmidecode` lists them.
//!
//! A kernel finds them as it finds the ACPI tables: it scans 0xf0000–0xfffff in 16-byte steps
//! for an *entry point* ("_SM_", 2.1 to 2.8's 32-bit one, DSP0134 5.2.1) whose checksum is
//! right, and follows it to the *structure table*: structures one after another, each a
//! formatted part (type, length, handle, then the type's fields) followed by its strings,
//! each ending with a NUL, the last with two (a structure without strings: two NULs). A
//! field that names a string holds its number, from 1 (0: none).
//!
//! Three structures, the least that names the machine:
//!
//! - **type 0, BIOS Information** (DSP0134 7.1): vendor, version and release date of the
//!   firmware (here the hypervisor, which plays it), its segment and ROM size, and, in its
//!   characteristics, "BIOS characteristics not supported" and "this is a virtual machine";
//! - **type 1, System Information** (7.2): manufacturer, product name and version; no serial
//!   number, no UUID (all zeros), woken by the power switch;
//! - **type 127, End-of-Table** (7.45).
//!
//! They take the second page of the F segment, 0xf1000, after the ACPI tables' (`acpi.rs`),
//! which the memory map reserves as the BIOS's ROM (`multiboot::memory_map`).

use super::ImageError;
use super::acpi::checksum;
use super::multiboot::BIOS_ROM;
use crate::domain::GuestMemory;
use alloc::vec;
use alloc::vec::Vec;

/// Where the entry point goes, and the structure table after it.
pub const ENTRY_POINT: u64 = BIOS_ROM + 0x1000;
const PAGE_END: u64 = ENTRY_POINT + 0x1000;
// The ACPI tables' page comes first.
const _: () = assert!(ENTRY_POINT >= super::acpi::TABLES_END);
/// The 32-bit entry point's length (DSP0134 5.2.1): 31 bytes.
pub const ENTRY_POINT_LENGTH: usize = 0x1f;
/// The specification version the tables follow.
const VERSION: (u8, u8) = (2, 8);

/// Who the firmware is: the hypervisor, which plays it.
pub const VENDOR: &str = "traplab";
pub const BIOS_VERSION: &str = concat!("traplab-hv ", env!("CARGO_PKG_VERSION"));
/// The firmware's release date, as DSP0134 writes it (mm/dd/yyyy): the day these tables
/// were first written.
pub const BIOS_DATE: &str = "12/06/2026";
/// What the machine is.
pub const PRODUCT: &str = "traplab virtual PC";
pub const PRODUCT_VERSION: &str = env!("CARGO_PKG_VERSION");

/// Structure types.
mod kind {
    pub const BIOS: u8 = 0;
    pub const SYSTEM: u8 = 1;
    pub const END: u8 = 127;
}

/// One structure: its formatted part after the 4-byte header, and its strings.
struct Structure<'a> {
    kind: u8,
    fields: Vec<u8>,
    strings: &'a [&'a str],
}

impl Structure<'_> {
    /// Its bytes with handle `handle`: the header, the fields, the strings.
    fn bytes(&self, handle: u16) -> Vec<u8> {
        let mut bytes = vec![self.kind, (4 + self.fields.len()) as u8];
        bytes.extend_from_slice(&handle.to_le_bytes());
        bytes.extend_from_slice(&self.fields);
        for string in self.strings {
            bytes.extend_from_slice(string.as_bytes());
            bytes.push(0);
        }
        if self.strings.is_empty() {
            bytes.push(0);
        }
        bytes.push(0);
        bytes
    }
}

/// Type 0 (DSP0134 7.1), 2.4's layout: 0x18 bytes.
fn bios() -> Structure<'static> {
    let mut fields = vec![
        1, // vendor: string 1
        2, // version: string 2
    ];
    // The segment the firmware starts at, and its release date (string 3).
    fields.extend_from_slice(&((BIOS_ROM >> 4) as u16).to_le_bytes());
    fields.push(3);
    // The ROM's size, 64 KiB × (n + 1): the F segment.
    fields.push(0);
    // Characteristics (7.1.1): bit 3, "BIOS characteristics not supported": no BIOS
    // services here. Extension byte 2 (7.1.2.2): bit 4, "SMBIOS table describes a virtual
    // machine".
    fields.extend_from_slice(&(1u64 << 3).to_le_bytes());
    fields.extend_from_slice(&[0, 1 << 4]);
    // The firmware's release (major, minor), and no embedded controller (0xff, 0xff).
    fields.extend_from_slice(&[0, 1, 0xff, 0xff]);
    Structure {
        kind: kind::BIOS,
        fields,
        strings: &[VENDOR, BIOS_VERSION, BIOS_DATE],
    }
}

/// Type 1 (DSP0134 7.2), 2.4's layout: 0x1b bytes.
fn system() -> Structure<'static> {
    let mut fields = vec![
        1, // manufacturer: string 1
        2, // product name: string 2
        3, // version: string 3
        0, // serial number: none
    ];
    // The UUID: all zeros, "not present in the system" (7.2.1; all ones would say "not
    // present, but it can be set").
    fields.extend_from_slice(&[0; 16]);
    // Wake-up type (7.2.2): 6, the power switch.
    fields.push(6);
    // SKU number and family: none.
    fields.extend_from_slice(&[0, 0]);
    Structure {
        kind: kind::SYSTEM,
        fields,
        strings: &[VENDOR, PRODUCT, PRODUCT_VERSION],
    }
}

/// Type 127 (DSP0134 7.45): a header alone.
fn end() -> Structure<'static> {
    Structure {
        kind: kind::END,
        fields: Vec::new(),
        strings: &[],
    }
}

/// The 32-bit entry point (DSP0134 5.2.1) for a structure table at `table` of `length`
/// bytes, `count` structures, the largest `largest` bytes.
fn entry_point(table: u32, length: u16, count: u16, largest: u16) -> [u8; ENTRY_POINT_LENGTH] {
    let mut bytes = [0u8; ENTRY_POINT_LENGTH];
    bytes[0..4].copy_from_slice(b"_SM_");
    bytes[5] = ENTRY_POINT_LENGTH as u8;
    (bytes[6], bytes[7]) = VERSION;
    bytes[8..10].copy_from_slice(&largest.to_le_bytes());
    // Entry point revision 0 and the formatted area (0x0a–0x0f) stay zero.
    // The intermediate part, "_DMI_", with a checksum of its own over its 15 bytes.
    bytes[0x10..0x15].copy_from_slice(b"_DMI_");
    bytes[0x16..0x18].copy_from_slice(&length.to_le_bytes());
    bytes[0x18..0x1c].copy_from_slice(&table.to_le_bytes());
    bytes[0x1c..0x1e].copy_from_slice(&count.to_le_bytes());
    bytes[0x1e] = (VERSION.0 << 4) | VERSION.1; // the version in BCD: 0x28
    bytes[0x15] = checksum(&bytes[0x10..0x1f]);
    bytes[4] = checksum(&bytes);
    bytes
}

/// Writes the entry point and the structure table into the F segment's second page (after
/// zeroing it): the entry point's address.
pub fn write_tables(memory: &mut dyn GuestMemory) -> Result<u64, ImageError> {
    let no_room = |_| {
        ImageError(alloc::format!(
            "the SMBIOS tables at {ENTRY_POINT:#x} do not fit in the guest's RAM"
        ))
    };
    memory
        .zero_physical(ENTRY_POINT, PAGE_END)
        .map_err(no_room)?;
    let structures: Vec<Vec<u8>> = [bios(), system(), end()]
        .iter()
        .enumerate()
        .map(|(handle, structure)| structure.bytes(handle as u16))
        .collect();
    let table: Vec<u8> = structures.concat();
    let largest = structures.iter().map(Vec::len).max().unwrap_or(0);
    // The table after the entry point, on a 16-byte boundary.
    let at = ENTRY_POINT + (ENTRY_POINT_LENGTH as u64).next_multiple_of(16);
    let entry = entry_point(
        at as u32,
        table.len() as u16,
        structures.len() as u16,
        largest as u16,
    );
    memory
        .write_physical(ENTRY_POINT, &entry)
        .map_err(no_room)?;
    memory.write_physical(at, &table).map_err(no_room)?;
    Ok(ENTRY_POINT)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::VecMemory;

    fn written() -> VecMemory {
        let mut memory = VecMemory::new(16 << 20, false);
        assert_eq!(write_tables(&mut memory), Ok(ENTRY_POINT));
        memory
    }

    fn bytes(memory: &VecMemory, at: u64, length: usize) -> Vec<u8> {
        let mut bytes = vec![0; length];
        memory.read_physical(at, &mut bytes).expect("in RAM");
        bytes
    }

    /// What a kernel does (Linux's `dmi_present`): find "_SM_" on a 16-byte boundary in the
    /// F segment with its two checksums right, and read the table it points to.
    fn scan(memory: &VecMemory) -> (Vec<u8>, Vec<u8>) {
        let found = (BIOS_ROM..0x10_0000)
            .step_by(16)
            .find(|&at| bytes(memory, at, 4) == b"_SM_")
            .expect("an entry point in the F segment");
        let entry = bytes(memory, found, ENTRY_POINT_LENGTH);
        assert_eq!(entry[5] as usize, ENTRY_POINT_LENGTH);
        let sum = |bytes: &[u8]| bytes.iter().fold(0u8, |sum, &byte| sum.wrapping_add(byte));
        assert_eq!(sum(&entry), 0, "the entry point's checksum");
        assert_eq!(&entry[0x10..0x15], b"_DMI_");
        assert_eq!(sum(&entry[0x10..0x1f]), 0, "the intermediate checksum");
        let table = u32::from_le_bytes(entry[0x18..0x1c].try_into().expect("4 bytes"));
        let length = u16::from_le_bytes([entry[0x16], entry[0x17]]);
        (entry, bytes(memory, table as u64, length as usize))
    }

    /// The structures of `table`: (type, formatted part, strings).
    fn structures(table: &[u8]) -> Vec<(u8, Vec<u8>, Vec<String>)> {
        let mut found = Vec::new();
        let mut at = 0;
        while at < table.len() {
            let (kind, length) = (table[at], table[at + 1] as usize);
            let formatted = table[at..at + length].to_vec();
            let mut strings = Vec::new();
            let mut next = at + length;
            while table[next] != 0 {
                let end = next + table[next..].iter().position(|&b| b == 0).expect("a NUL");
                strings.push(String::from_utf8(table[next..end].to_vec()).expect("text"));
                next = end + 1;
            }
            // The set ends with a second NUL (two when there are no strings).
            at = next + 1 + usize::from(strings.is_empty());
            found.push((kind, formatted, strings));
        }
        found
    }

    #[test]
    fn a_kernel_s_scan_finds_smbios_2_8_and_the_machine_s_name() {
        let memory = written();
        let (entry, table) = scan(&memory);
        assert_eq!((entry[6], entry[7], entry[0x1e]), (2, 8, 0x28));
        let found = structures(&table);
        let count = u16::from_le_bytes([entry[0x1c], entry[0x1d]]);
        assert_eq!(found.len(), count as usize);
        let kinds: Vec<u8> = found.iter().map(|(kind, ..)| *kind).collect();
        assert_eq!(kinds, [0, 1, 127]);
        // Type 0: 2.4's 0x18 bytes, vendor, version and date by their string numbers.
        let (_, bios, strings) = &found[0];
        assert_eq!(bios.len(), 0x18);
        assert_eq!((bios[4], bios[5], bios[8]), (1, 2, 3));
        assert_eq!(strings, &[VENDOR, BIOS_VERSION, BIOS_DATE]);
        assert_eq!(bios[0x13] & (1 << 4), 1 << 4, "a virtual machine");
        // Type 1: 2.4's 0x1b bytes, manufacturer and product name.
        let (_, system, strings) = &found[1];
        assert_eq!(system.len(), 0x1b);
        assert_eq!((system[4], system[5], system[6], system[7]), (1, 2, 3, 0));
        assert_eq!(strings, &[VENDOR, PRODUCT, PRODUCT_VERSION]);
        // The largest structure's size, strings included, is in the entry point.
        let largest = u16::from_le_bytes([entry[8], entry[9]]) as usize;
        assert_eq!(
            largest,
            0x18 + VENDOR.len() + BIOS_VERSION.len() + BIOS_DATE.len() + 4
        );
        // Handles are distinct.
        let handles: Vec<u16> = found
            .iter()
            .map(|(_, formatted, _)| u16::from_le_bytes([formatted[2], formatted[3]]))
            .collect();
        assert_eq!(handles, [0, 1, 2]);
    }

    #[test]
    fn the_tables_stay_in_their_page_after_the_acpi_tables() {
        let (_, table) = scan(&written());
        let end = ENTRY_POINT + 32 + table.len() as u64;
        assert!(end <= PAGE_END, "{end:#x}");
    }
}
