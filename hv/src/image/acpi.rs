//! The ACPI tables a PC's firmware leaves for the kernel, and traplab's loader writes in its
//! place (ACPI 6.4, chapter 5.2 "ACPI System Description Tables"): how a kernel learns, without
//! probing, which interrupt controllers the machine has, how the ISA interrupts reach them,
//! and where the power-management registers are.
//!
//! A kernel finds them from one pointer: it scans the first KiB of the EBDA, then
//! 0xe0000–0xfffff in 16-byte steps, for the RSDP's signature "RSD PTR " with a valid
//! checksum (5.2.5.1 "Finding the RSDP on IA-PC Systems"). From there:
//!
//! ```text
//! RSDP (rev 2) ──► RSDT (32-bit pointers) ──┬──► FADT ──┬──► FACS
//!        └───────► XSDT (64-bit pointers) ──┘           └──► DSDT (\_S5, \_SB.PCI0, COM1, RTC)
//!                                           └──► MADT
//! ```
//!
//! - **FADT** (5.2.9, revision 3: the first with the 64-bit `X_` fields): where the ACPI
//!   power-management registers are (`device/acpi_pm.rs`, QEMU's PIIX4 ports), the SCI's
//!   IRQ, the reset register, and what the PC has (IAPC_BOOT_ARCH).
//! - **MADT** (5.2.12): the local APIC and the IO-APIC at their addresses with their IDs, and
//!   how ISA IRQs differ from IO-APIC pins (interrupt source overrides): the PIT's IRQ 0 on
//!   pin 2, the SCI (IRQ 9) level-triggered.
//! - **DSDT** (5.2.11.1): `\_S5`, the sleep type that switches the machine off
//!   (`device/acpi_pm.rs`); `\_SB.PCI0`, the PCI host bridge (`device/pci.rs`) with the
//!   resources it decodes; COM1 (PNP0501) and the RTC (PNP0B00) with their ports and IRQs;
//!   no other device, no other sleep state.
//! - **FACS** (5.2.10): the firmware's side of waking and the global lock; nothing in it is
//!   used here (no state to wake from, no firmware to share the lock with).
//!
//! Every value the devices also know comes from their modules (the APICs' addresses and
//! IDs, the PIT's pin, the PM ports, the CMOS century index), so that the tables cannot say
//! one thing and the devices do another. The tables take one page at the start of the BIOS
//! ROM's segment, 0xf0000, which the memory map reserves (`multiboot::memory_map`), as a
//! BIOS keeps them in its ROM shadow (SeaBIOS puts the RSDP in the F segment too).
//!
//! Identification: OEM ID "TRAPLB" (six characters, the most the field holds), OEM table
//! ID "TRAPLAB " in every table, OEM revision 1; creator ID "TRPL" (the "ASL compiler" field:
//! who wrote the table), creator revision 1. A kernel prints them when it lists the tables
//! (Linux: `ACPI: FACP 0x00000000000F0080 0000F4 (v03 TRAPLB TRAPLAB  00000001 TRPL 00000001)`).

use super::ImageError;
use super::multiboot::BIOS_ROM;
use crate::device::{SERIAL_IRQ, acpi_pm, ioapic, lapic, pci, pit, rtc};
use crate::domain::GuestMemory;
use alloc::vec::Vec;
use traplab_abi::boot::CONSOLE_PORT;

/// Where the tables go: the first page of the F segment.
pub const TABLES: u64 = BIOS_ROM;
pub const TABLES_END: u64 = BIOS_ROM + 0x1000;

/// The identification every table carries (5.2.6 "System Description Table Header").
pub const OEM_ID: &[u8; 6] = b"TRAPLB";
pub const OEM_TABLE_ID: &[u8; 8] = b"TRAPLAB ";
pub const OEM_REVISION: u32 = 1;
pub const CREATOR_ID: &[u8; 4] = b"TRPL";
pub const CREATOR_REVISION: u32 = 1;

/// The length of a table's header, and of the tables whose size the spec fixes.
pub const HEADER_LENGTH: usize = 36;
/// RSDP revision 2 (ACPI 2.0 and later): 36 bytes; its first 20 are ACPI 1.0's.
pub const RSDP_LENGTH: usize = 36;
const RSDP_V1_LENGTH: usize = 20;
/// FADT revision 3 (ACPI 3.0's layout, through X_GPE1_BLK): 244 bytes.
pub const FADT_REVISION: u8 = 3;
pub const FADT_LENGTH: usize = 244;
pub const FACS_LENGTH: usize = 64;

/// FADT offsets a kernel (and the tests) read (5.2.9, table "FADT Format").
pub mod fadt {
    pub const FIRMWARE_CTRL: usize = 36;
    pub const DSDT: usize = 40;
    pub const SCI_INT: usize = 46;
    pub const SMI_CMD: usize = 48;
    pub const PM1A_EVT_BLK: usize = 56;
    pub const PM1A_CNT_BLK: usize = 64;
    pub const PM_TMR_BLK: usize = 76;
    pub const PM1_EVT_LEN: usize = 88;
    pub const PM1_CNT_LEN: usize = 89;
    pub const PM_TMR_LEN: usize = 91;
    pub const CENTURY: usize = 108;
    pub const IAPC_BOOT_ARCH: usize = 109;
    pub const FLAGS: usize = 112;
    pub const RESET_REG: usize = 116;
    pub const RESET_VALUE: usize = 128;
    pub const X_FIRMWARE_CTRL: usize = 132;
    pub const X_DSDT: usize = 140;
    pub const X_PM1A_EVT_BLK: usize = 148;
    pub const X_PM1A_CNT_BLK: usize = 172;
    pub const X_PM_TMR_BLK: usize = 208;

    /// Fixed feature flags (5.2.9, table "Fixed ACPI Description Table Fixed Feature
    /// Flags").
    pub mod flags {
        /// WBINVD works (and flushes the caches): it is the instruction the OS uses before
        /// a sleep state; the CPU has it.
        pub const WBINVD: u32 = 1 << 0;
        /// C1 (HLT) works on every processor.
        pub const PROC_C1: u32 = 1 << 2;
        /// Set: no fixed-feature power button (a control-method one or none).
        pub const PWR_BUTTON: u32 = 1 << 4;
        /// Set: no fixed-feature sleep button.
        pub const SLP_BUTTON: u32 = 1 << 5;
        /// Set: the PM timer has 32 bits; clear: 24.
        pub const TMR_VAL_EXT: u32 = 1 << 8;
        /// The reset register (RESET_REG, RESET_VALUE) is there.
        pub const RESET_REG_SUP: u32 = 1 << 10;
        /// The OS should drive its monotonic counters from a platform timer.
        pub const USE_PLATFORM_CLOCK: u32 = 1 << 15;
    }

    /// IA-PC boot architecture flags (5.2.9.3).
    pub mod boot_arch {
        /// The motherboard has devices on the LPC or ISA bus the user can see.
        pub const LEGACY_DEVICES: u16 = 1 << 0;
        /// An 8042 keyboard controller at ports 0x60 and 0x64.
        pub const I8042: u16 = 1 << 1;
        /// Do not probe for VGA: there is none.
        pub const VGA_NOT_PRESENT: u16 = 1 << 2;
    }
}

/// The Generic Address Structure's address spaces and access sizes (5.2.3.2).
const SYSTEM_IO: u8 = 1;
const ACCESS_BYTE: u8 = 1;
const ACCESS_WORD: u8 = 2;
const ACCESS_DWORD: u8 = 3;

/// The PIIX4's reset control register (as QEMU's FADT gives it): writing 0x06 there resets
/// the machine (PIIX4 datasheet, "RC—Reset Control Register", I/O address 0CF9h: bit 2
/// reset CPU, bit 1 system reset, a hard reset with both).
pub const RESET_PORT: u16 = 0xcf9;
pub const RESET_VALUE: u8 = 0x06;

/// MADT flags (5.2.12): PCAT_COMPAT, the PC's two 8259As are there too (the OS masks them
/// before it uses the APICs).
pub const PCAT_COMPAT: u32 = 1 << 0;

/// MADT structure types (5.2.12, "Interrupt Controller Structure Types").
pub mod madt {
    pub const LOCAL_APIC: u8 = 0;
    pub const IO_APIC: u8 = 1;
    pub const INTERRUPT_SOURCE_OVERRIDE: u8 = 2;
    pub const LOCAL_APIC_NMI: u8 = 4;
    /// Processor Local APIC flags: bit 0, the processor is usable.
    pub const ENABLED: u32 = 1 << 0;
    /// MPS INTI flags (5.2.12.5, table "MPS INTI Flags"): polarity bits 1:0, trigger mode
    /// bits 3:2. 0 for both: as the bus (ISA: edge-triggered, active high).
    pub const CONFORMS_TO_BUS: u16 = 0;
    pub const ACTIVE_HIGH: u16 = 0b01;
    pub const LEVEL_TRIGGERED: u16 = 0b11 << 2;
    /// The ISA bus, in an override's bus field.
    pub const ISA: u8 = 0;
    /// "All processors" in a Local APIC NMI structure.
    pub const ALL_PROCESSORS: u8 = 0xff;
    /// The local APIC's LINT1 pin, where a PC wires NMI.
    pub const LINT1: u8 = 1;
}

/// The ACPI processor UID of the one CPU, in the MADT.
pub const PROCESSOR_UID: u8 = 0;

/// Where the loader put each table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tables {
    pub rsdp: u64,
    pub rsdt: u64,
    pub xsdt: u64,
    pub fadt: u64,
    pub madt: u64,
    pub dsdt: u64,
    pub facs: u64,
}

/// Writes the tables into the first page of the F segment (after zeroing it): where each is.
pub fn write_tables(memory: &mut dyn GuestMemory) -> Result<Tables, ImageError> {
    memory
        .zero_physical(TABLES, TABLES_END)
        .map_err(|_| no_room(TABLES))?;
    let mut area = Area { next: TABLES };
    // Each table is written after those it points to, so that their addresses are known.
    let dsdt = table(b"DSDT", 2, &dsdt_aml(memory.size()));
    let dsdt = area.put(memory, &dsdt, 16)?;
    // "64-byte aligned" (5.2.10).
    let facs = area.put(memory, &facs(), 64)?;
    let fadt = area.put(memory, &fadt(facs, dsdt), 16)?;
    let madt = area.put(memory, &madt(), 16)?;
    let rsdt_entries: Vec<u8> = [fadt, madt]
        .iter()
        .flat_map(|&at| (at as u32).to_le_bytes())
        .collect();
    let rsdt = area.put(memory, &table(b"RSDT", 1, &rsdt_entries), 16)?;
    let xsdt_entries: Vec<u8> = [fadt, madt]
        .iter()
        .flat_map(|at| at.to_le_bytes())
        .collect();
    let xsdt = area.put(memory, &table(b"XSDT", 1, &xsdt_entries), 16)?;
    // "on a 16-byte boundary" (5.2.5.1), where the OS's scan steps.
    let rsdp = area.put(memory, &rsdp(rsdt, xsdt), 16)?;
    Ok(Tables {
        rsdp,
        rsdt,
        xsdt,
        fadt,
        madt,
        dsdt,
        facs,
    })
}

/// The tables' page, filled from the bottom.
struct Area {
    next: u64,
}

impl Area {
    /// Writes `bytes` at the next `align`-byte boundary: their address.
    fn put(
        &mut self,
        memory: &mut dyn GuestMemory,
        bytes: &[u8],
        align: u64,
    ) -> Result<u64, ImageError> {
        let at = self.next.next_multiple_of(align);
        let end = at + bytes.len() as u64;
        if end > TABLES_END {
            return Err(no_room(at));
        }
        memory.write_physical(at, bytes).map_err(|_| no_room(at))?;
        self.next = end;
        Ok(at)
    }
}

fn no_room(at: u64) -> ImageError {
    ImageError(alloc::format!(
        "the ACPI tables at {at:#x} do not fit in the guest's RAM"
    ))
}

/// The byte that makes `bytes` sum to 0 (mod 256), as every ACPI checksum does.
pub fn checksum(bytes: &[u8]) -> u8 {
    0u8.wrapping_sub(bytes.iter().fold(0u8, |sum, &byte| sum.wrapping_add(byte)))
}

/// A table: the header (5.2.6), then `body`; its length and checksum filled in.
fn table(signature: &[u8; 4], revision: u8, body: &[u8]) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(HEADER_LENGTH + body.len());
    bytes.extend_from_slice(signature);
    bytes.extend_from_slice(&((HEADER_LENGTH + body.len()) as u32).to_le_bytes());
    bytes.push(revision);
    bytes.push(0); // the checksum, below
    bytes.extend_from_slice(OEM_ID);
    bytes.extend_from_slice(OEM_TABLE_ID);
    bytes.extend_from_slice(&OEM_REVISION.to_le_bytes());
    bytes.extend_from_slice(CREATOR_ID);
    bytes.extend_from_slice(&CREATOR_REVISION.to_le_bytes());
    bytes.extend_from_slice(body);
    bytes[9] = checksum(&bytes);
    bytes
}

/// The DSDT's AML (ACPI 6.4, chapter 20 "ACPI Machine Language Specification"): two objects.
///
/// - `Name (_S5, Package (4) { T, T, 0, 0 })` with T = [`acpi_pm::SOFT_OFF_TYPE`]: the sleep
///   state S5 (soft off) and the SLP_TYP values the OS writes to PM1a and PM1b control to
///   enter it (7.4.2 "\_Sx (System States)").
/// - `Device (\_SB.PCI0)`: the PCI host bridge (`device/pci.rs`), `_HID` PNP0A03, with the
///   resources it decodes in `_CRS` (6.2.13): buses 0–255, the configuration ports
///   0xcf8–0xcff, the other I/O ports, and the memory between the end of RAM (`ram_end`)
///   and the lab device's window. On an ACPI PC the kernel finds PCI from here: without it
///   Linux never scans bus 0, and the host bridge's configuration space is not read.
///
/// - `Device (\_SB.COM1)` and `Device (\_SB.RTC_)`: COM1 (PNP0501, ports 0x3f8–0x3ff,
///   IRQ 4) and the RTC (PNP0B00, ports 0x70–0x71, IRQ 8), which a kernel's PNP drivers
///   bind by these IDs (Linux: "00:00: ttyS0 at I/O 0x3f8", "rtc_cmos 00:01").
///
/// Nothing else: no other device in the namespace (the PIT and the PICs are where a PC has
/// them, which a kernel knows), no `_PRT` (no PCI device has an interrupt), no other sleep
/// state.
fn dsdt_aml(ram_end: u64) -> Vec<u8> {
    let sleep_type = acpi_pm::SOFT_OFF_TYPE as u8;
    let sleep_state = aml::name(
        b"_S5_",
        &aml::package(&[
            aml::byte(sleep_type),
            aml::byte(sleep_type),
            aml::byte(0),
            aml::byte(0),
        ]),
    );
    let window_end = traplab_abi::boot::LAB_DEVICE - 1;
    let resources = [
        resource::word(resource::BUS_NUMBER, 0, 0xff),
        resource::io(pci::CONFIG_ADDRESS, 8),
        resource::word(resource::IO, 0, pci::CONFIG_ADDRESS - 1),
        resource::word(resource::IO, pci::CONFIG_ADDRESS + 8, 0xffff),
        resource::memory(ram_end.min(window_end) as u32, window_end as u32),
        resource::END.to_vec(),
    ]
    .concat();
    let host_bridge = aml::device(
        b"\\\x2e_SB_PCI0",
        &[
            aml::name(b"_HID", &aml::eisa_id(b"PNP0A03")),
            aml::name(b"_UID", &aml::byte(0)),
            aml::name(b"_CRS", &aml::buffer(&resources)),
        ]
        .concat(),
    );
    // The two legacy devices a kernel drives by their PNP IDs, where a PC has them: COM1
    // (a 16550, PNP0501) and the RTC (PNP0B00), each with its ports and its ISA IRQ.
    let legacy = |path: &[u8], id: &[u8; 7], port: u16, ports: u8, irq: u8| {
        let resources = [
            resource::io(port, ports),
            resource::irq(irq),
            resource::END.to_vec(),
        ]
        .concat();
        aml::device(
            path,
            &[
                aml::name(b"_HID", &aml::eisa_id(id)),
                aml::name(b"_UID", &aml::byte(1)),
                aml::name(b"_CRS", &aml::buffer(&resources)),
            ]
            .concat(),
        )
    };
    let com1 = legacy(b"\\\x2e_SB_COM1", b"PNP0501", CONSOLE_PORT, 8, SERIAL_IRQ);
    let clock = legacy(b"\\\x2e_SB_RTC_", b"PNP0B00", rtc::INDEX, 2, rtc::IRQ);
    [sleep_state, host_bridge, com1, clock].concat()
}

/// AML's terms, as `dsdt_aml` uses them (ACPI 6.4, 20.2 "AML Grammar Definition").
mod aml {
    use alloc::vec;
    use alloc::vec::Vec;

    /// PkgLength (20.2.4): the length of what follows, its own bytes included: one byte
    /// up to 63, else a first byte whose bits 7:6 say one more follows (bits 3:0 the
    /// length's low four bits) and the second with the next eight.
    fn with_length(op: &[u8], contents: &[u8]) -> Vec<u8> {
        let one = contents.len() + 1;
        let length: Vec<u8> = match one {
            0..=0x3f => vec![one as u8],
            _ => {
                let two = contents.len() + 2;
                assert!(two < 0x1000, "an AML package of {two} bytes");
                vec![0x40 | (two & 0xf) as u8, (two >> 4) as u8]
            }
        };
        [op, &length, contents].concat()
    }

    /// `Name (name, value)`: NameOp, the name, the value.
    pub fn name(name: &[u8], value: &[u8]) -> Vec<u8> {
        [&[0x08], name, value].concat()
    }

    /// A byte constant: BytePrefix and the byte.
    pub fn byte(value: u8) -> Vec<u8> {
        vec![0x0a, value]
    }

    /// `Package (n) { elements }`: PackageOp, PkgLength, the count, the elements.
    pub fn package(elements: &[Vec<u8>]) -> Vec<u8> {
        let mut contents = vec![elements.len() as u8];
        contents.extend(elements.concat());
        with_length(&[0x12], &contents)
    }

    /// `Buffer () { bytes }`: BufferOp, PkgLength, the size (a word constant), the bytes.
    pub fn buffer(bytes: &[u8]) -> Vec<u8> {
        let mut contents = vec![0x0b];
        contents.extend((bytes.len() as u16).to_le_bytes());
        contents.extend_from_slice(bytes);
        with_length(&[0x11], &contents)
    }

    /// `Device (path) { terms }`: ExtOpPrefix DeviceOp, PkgLength, the name, the terms.
    pub fn device(path: &[u8], terms: &[u8]) -> Vec<u8> {
        with_length(&[0x5b, 0x82], &[path, terms].concat())
    }

    /// `EisaId ("ABC1234")`: a DWordConst of the compressed EISA ID (19.6.35): the three
    /// letters in five bits each ('A' = 1), then the four hex digits, stored big-endian.
    pub fn eisa_id(id: &[u8; 7]) -> Vec<u8> {
        let letter = |byte: u8| (byte - b'@') as u32 & 0x1f;
        let digit = |byte: u8| (byte as char).to_digit(16).unwrap_or(0);
        let vendor = letter(id[0]) << 10 | letter(id[1]) << 5 | letter(id[2]);
        let product = id[3..]
            .iter()
            .fold(0, |value, &byte| value << 4 | digit(byte));
        let mut bytes = vec![0x0c];
        bytes.extend(((vendor << 16) | product).to_be_bytes());
        bytes
    }
}

/// Resource descriptors for `_CRS` (ACPI 6.4, 6.4 "Resource Data Types for ACPI").
mod resource {
    use alloc::vec::Vec;

    /// Word Address Space Descriptor resource types (6.4.3.5.3).
    pub const IO: u8 = 1;
    pub const BUS_NUMBER: u8 = 2;
    /// General flags of a range the bridge produces: minimum and maximum fixed, positive
    /// decode, a producer (bit 0 clear).
    const FIXED_RANGE: u8 = 0b1100;

    /// A Word Address Space Descriptor (large item 0x88) for `first..=last` of `kind`;
    /// I/O decodes its whole range (type-specific flags 3, ISA and non-ISA ranges).
    pub fn word(kind: u8, first: u16, last: u16) -> Vec<u8> {
        let specific = if kind == IO { 3 } else { 0 };
        let mut bytes = Vec::from([0x88, 13, 0, kind, FIXED_RANGE, specific]);
        for value in [0, first, last, 0, last - first + 1] {
            bytes.extend(value.to_le_bytes());
        }
        bytes
    }

    /// An I/O Port Descriptor (small item 0x47, 6.4.2.5): `length` ports from `first`,
    /// 16-bit decode.
    pub fn io(first: u16, length: u8) -> Vec<u8> {
        let [low, high] = first.to_le_bytes();
        Vec::from([0x47, 1, low, high, low, high, 1, length])
    }

    /// A DWord Address Space Descriptor (large item 0x87, 6.4.3.5.2) for memory
    /// `first..=last`: read-write, cacheable, produced by the bridge.
    pub fn memory(first: u32, last: u32) -> Vec<u8> {
        let mut bytes = Vec::from([0x87, 23, 0, 0, FIXED_RANGE, 0b011]);
        for value in [0, first, last, 0, last.wrapping_sub(first).wrapping_add(1)] {
            bytes.extend(value.to_le_bytes());
        }
        bytes
    }

    /// An IRQ Descriptor without its information byte (small item 0x22, 6.4.2.1): ISA IRQ
    /// `line`, as a mask of the 16, edge-triggered and active high.
    pub fn irq(line: u8) -> Vec<u8> {
        let [low, high] = (1u16 << line).to_le_bytes();
        Vec::from([0x22, low, high])
    }

    /// The End Tag (small item 0x79, 6.4.2.9), its checksum 0: "treated as if the checksum
    /// operation succeeded".
    pub const END: [u8; 2] = [0x79, 0];
}

/// The Root System Description Pointer, revision 2 (5.2.5.3).
fn rsdp(rsdt: u64, xsdt: u64) -> [u8; RSDP_LENGTH] {
    let mut bytes = [0u8; RSDP_LENGTH];
    bytes[0..8].copy_from_slice(b"RSD PTR ");
    bytes[9..15].copy_from_slice(OEM_ID);
    bytes[15] = 2; // revision: ACPI 2.0 and later, with the XSDT
    bytes[16..20].copy_from_slice(&(rsdt as u32).to_le_bytes());
    bytes[20..24].copy_from_slice(&(RSDP_LENGTH as u32).to_le_bytes());
    bytes[24..32].copy_from_slice(&xsdt.to_le_bytes());
    // Two checksums: over ACPI 1.0's 20 bytes, which an old OS reads, and over all 36.
    bytes[8] = checksum(&bytes[..RSDP_V1_LENGTH]);
    bytes[32] = checksum(&bytes);
    bytes
}

/// The Firmware ACPI Control Structure (5.2.10): no waking vector, no global lock owner.
fn facs() -> [u8; FACS_LENGTH] {
    let mut bytes = [0u8; FACS_LENGTH];
    bytes[0..4].copy_from_slice(b"FACS");
    bytes[4..8].copy_from_slice(&(FACS_LENGTH as u32).to_le_bytes());
    bytes[32] = 2; // version
    bytes
}

/// A Generic Address Structure for `bits` bits of I/O ports at `port` (5.2.3.2).
fn io_register(port: u16, bits: u8, access: u8) -> [u8; 12] {
    let mut bytes = [0u8; 12];
    bytes[0] = SYSTEM_IO;
    bytes[1] = bits;
    bytes[2] = 0; // bit offset
    bytes[3] = access;
    bytes[4..12].copy_from_slice(&(port as u64).to_le_bytes());
    bytes
}

/// The Fixed ACPI Description Table, revision 3 (5.2.9), with the PM registers where
/// `device/acpi_pm.rs` has them.
fn fadt(facs: u64, dsdt: u64) -> Vec<u8> {
    use fadt::{boot_arch, flags};
    let mut body = [0u8; FADT_LENGTH - HEADER_LENGTH];
    let mut put = |offset: usize, bytes: &[u8]| {
        let at = offset - HEADER_LENGTH;
        body[at..at + bytes.len()].copy_from_slice(bytes);
    };
    put(fadt::FIRMWARE_CTRL, &(facs as u32).to_le_bytes());
    put(fadt::DSDT, &(dsdt as u32).to_le_bytes());
    // Offset 44 (ACPI 1.0's INT_MODEL) is 0; PREFERRED_PM_PROFILE (45) 0: unspecified.
    put(fadt::SCI_INT, &(acpi_pm::SCI_IRQ as u16).to_le_bytes());
    // SMI_CMD 0: no SMM, nothing to ask for ACPI mode; ACPI_ENABLE, ACPI_DISABLE,
    // S4BIOS_REQ and PSTATE_CNT (52–55) are then meaningless and 0. SCI_EN reads 1.
    put(fadt::SMI_CMD, &0u32.to_le_bytes());
    put(
        fadt::PM1A_EVT_BLK,
        &(acpi_pm::PM1_EVENT_BLOCK as u32).to_le_bytes(),
    );
    put(
        fadt::PM1A_CNT_BLK,
        &(acpi_pm::PM1_CONTROL as u32).to_le_bytes(),
    );
    put(fadt::PM_TMR_BLK, &(acpi_pm::PM_TIMER as u32).to_le_bytes());
    // PM1b, PM2 and both GPE blocks: none (0, length 0). No GPE block means no
    // general-purpose events, and nothing in the DSDT would handle one.
    put(fadt::PM1_EVT_LEN, &[acpi_pm::PM1_EVENT_LENGTH]);
    put(fadt::PM1_CNT_LEN, &[acpi_pm::PM1_CONTROL_LENGTH]);
    put(fadt::PM_TMR_LEN, &[acpi_pm::PM_TIMER_LENGTH]);
    // P_LVL2_LAT and P_LVL3_LAT (96, 98): above 100 and 1000 µs, "C2 and C3 are not
    // supported"; 0x0fff as QEMU's.
    put(96, &0x0fffu16.to_le_bytes());
    put(98, &0x0fffu16.to_le_bytes());
    // DAY_ALRM, MON_ALRM 0: no RTC alarm; CENTURY: the CMOS index the RTC keeps it at.
    put(fadt::CENTURY, &[rtc::CENTURY]);
    // No 8042: the emulated PC has no keyboard controller (port 0x60 and 0x64 answer all
    // ones), and a clear flag tells Linux not to probe for one. ISA devices are there (the
    // UART, the PIT, the RTC); a VGA is not, so the OS need not look for one.
    put(
        fadt::IAPC_BOOT_ARCH,
        &(boot_arch::LEGACY_DEVICES | boot_arch::VGA_NOT_PRESENT).to_le_bytes(),
    );
    // QEMU's `pc` flags (WBINVD, PROC_C1, SLP_BUTTON, USE_PLATFORM_CLOCK, RESET_REG_SUP),
    // but PWR_BUTTON set too: nothing here can press a power button, so there is none,
    // and RTC_S4 clear: there is no S4. TMR_VAL_EXT is clear: the PM timer has 24 bits.
    let feature_flags = flags::WBINVD
        | flags::PROC_C1
        | flags::PWR_BUTTON
        | flags::SLP_BUTTON
        | flags::RESET_REG_SUP
        | flags::USE_PLATFORM_CLOCK;
    put(fadt::FLAGS, &feature_flags.to_le_bytes());
    put(fadt::RESET_REG, &io_register(RESET_PORT, 8, ACCESS_BYTE));
    put(fadt::RESET_VALUE, &[RESET_VALUE]);
    // 129–131: ARM_BOOT_ARCH and the minor version, 0 in a revision 3 FADT.
    // X_FIRMWARE_CTRL stays 0: the FACS is below 4 GiB, FIRMWARE_CTRL names it, and an OS
    // given both (Linux's ACPICA) takes them as two FACS and reserves it twice; QEMU's FADT
    // gives the 32-bit field alone too (ACPI 6.4, 5.2.9: one or the other).
    put(fadt::X_FIRMWARE_CTRL, &0u64.to_le_bytes());
    put(fadt::X_DSDT, &dsdt.to_le_bytes());
    let bits = |length: u8| length * 8;
    put(
        fadt::X_PM1A_EVT_BLK,
        &io_register(
            acpi_pm::PM1_EVENT_BLOCK,
            bits(acpi_pm::PM1_EVENT_LENGTH),
            ACCESS_WORD,
        ),
    );
    put(
        fadt::X_PM1A_CNT_BLK,
        &io_register(
            acpi_pm::PM1_CONTROL,
            bits(acpi_pm::PM1_CONTROL_LENGTH),
            ACCESS_WORD,
        ),
    );
    put(
        fadt::X_PM_TMR_BLK,
        &io_register(
            acpi_pm::PM_TIMER,
            bits(acpi_pm::PM_TIMER_LENGTH),
            ACCESS_DWORD,
        ),
    );
    // X_PM1B_EVT_BLK, X_PM1B_CNT_BLK, X_PM2_CNT_BLK, X_GPE0_BLK, X_GPE1_BLK: all zero.
    table(b"FACP", FADT_REVISION, &body)
}

/// The Multiple APIC Description Table (5.2.12): what `lapic.rs` and `ioapic.rs` are.
fn madt() -> Vec<u8> {
    let mut body = Vec::new();
    body.extend_from_slice(&(lapic::BASE as u32).to_le_bytes());
    body.extend_from_slice(&PCAT_COMPAT.to_le_bytes());
    // Processor Local APIC (5.2.12.2): the one CPU.
    body.extend_from_slice(&[madt::LOCAL_APIC, 8, PROCESSOR_UID, lapic::APIC_ID]);
    body.extend_from_slice(&madt::ENABLED.to_le_bytes());
    // I/O APIC (5.2.12.3): its pins are global system interrupts 0–23.
    body.extend_from_slice(&[madt::IO_APIC, 12, ioapic::RESET_ID, 0]);
    body.extend_from_slice(&(ioapic::BASE as u32).to_le_bytes());
    body.extend_from_slice(&0u32.to_le_bytes());
    // Interrupt Source Overrides (5.2.12.5): where an ISA IRQ is not the pin of its number.
    for (irq, pin, flags) in [
        (pit::IRQ, ioapic::PIT_PIN as u32, madt::CONFORMS_TO_BUS),
        (
            acpi_pm::SCI_IRQ,
            acpi_pm::SCI_IRQ as u32,
            madt::LEVEL_TRIGGERED | madt::ACTIVE_HIGH,
        ),
    ] {
        body.extend_from_slice(&[madt::INTERRUPT_SOURCE_OVERRIDE, 10, madt::ISA, irq]);
        body.extend_from_slice(&pin.to_le_bytes());
        body.extend_from_slice(&flags.to_le_bytes());
    }
    // Local APIC NMI (5.2.12.7): NMI comes in on LINT1 of every processor, as a PC wires it.
    body.extend_from_slice(&[madt::LOCAL_APIC_NMI, 6, madt::ALL_PROCESSORS]);
    body.extend_from_slice(&madt::CONFORMS_TO_BUS.to_le_bytes());
    body.push(madt::LINT1);
    table(b"APIC", 1, &body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::acpi_pm::AcpiPm;
    use crate::image::multiboot::memory_map;
    use crate::testing::VecMemory;
    use traplab_abi::multiboot::MEMORY_RESERVED;

    fn bytes(memory: &VecMemory, at: u64, length: usize) -> Vec<u8> {
        let mut bytes = vec![0u8; length];
        memory.read_physical(at, &mut bytes).expect("in RAM");
        bytes
    }

    fn u16_at(bytes: &[u8], at: usize) -> u16 {
        u16::from_le_bytes([bytes[at], bytes[at + 1]])
    }

    fn u32_at(bytes: &[u8], at: usize) -> u32 {
        u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes"))
    }

    fn u64_at(bytes: &[u8], at: usize) -> u64 {
        u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8 bytes"))
    }

    /// A table as a kernel reads it: its header's length, its checksum checked.
    fn read_table(memory: &VecMemory, at: u64, signature: &[u8; 4]) -> Vec<u8> {
        let header = bytes(memory, at, HEADER_LENGTH);
        assert_eq!(&header[0..4], signature, "the table at {at:#x}");
        let table = bytes(memory, at, u32_at(&header, 4) as usize);
        let sum = table.iter().fold(0u8, |sum, &byte| sum.wrapping_add(byte));
        assert_eq!(sum, 0, "{}'s checksum", String::from_utf8_lossy(signature));
        assert_eq!(&table[10..16], OEM_ID);
        assert_eq!(&table[16..24], OEM_TABLE_ID);
        assert_eq!(&table[28..32], CREATOR_ID);
        table
    }

    /// The OS's search (5.2.5.1): 16-byte steps over 0xe0000–0xfffff for the signature
    /// with a valid ACPI 1.0 checksum.
    fn find_rsdp(memory: &VecMemory) -> Option<u64> {
        (0xe_0000..0x10_0000).step_by(16).find(|&at| {
            let candidate = bytes(memory, at, RSDP_V1_LENGTH);
            &candidate[0..8] == b"RSD PTR " && checksum(&candidate) == 0
        })
    }

    fn loaded() -> (VecMemory, Tables) {
        let mut memory = VecMemory::new(2 << 20, false);
        let tables = write_tables(&mut memory).expect("fits");
        (memory, tables)
    }

    #[test]
    fn the_os_scan_finds_the_rsdp_and_both_its_checksums_hold() {
        let (memory, tables) = loaded();
        assert_eq!(find_rsdp(&memory), Some(tables.rsdp));
        let rsdp = bytes(&memory, tables.rsdp, RSDP_LENGTH);
        assert_eq!(rsdp[15], 2, "revision 2");
        assert_eq!(u32_at(&rsdp, 20), RSDP_LENGTH as u32);
        assert_eq!(checksum(&rsdp), 0, "the extended checksum");
        assert_eq!(u32_at(&rsdp, 16) as u64, tables.rsdt);
        assert_eq!(u64_at(&rsdp, 24), tables.xsdt);
    }

    #[test]
    fn the_rsdt_and_the_xsdt_point_at_the_fadt_and_the_madt() {
        let (memory, tables) = loaded();
        let rsdt = read_table(&memory, tables.rsdt, b"RSDT");
        let rsdt_entries: Vec<u64> = rsdt[HEADER_LENGTH..]
            .chunks(4)
            .map(|entry| u32_at(entry, 0) as u64)
            .collect();
        let xsdt = read_table(&memory, tables.xsdt, b"XSDT");
        let xsdt_entries: Vec<u64> = xsdt[HEADER_LENGTH..]
            .chunks(8)
            .map(|entry| u64_at(entry, 0))
            .collect();
        assert_eq!(rsdt_entries, vec![tables.fadt, tables.madt]);
        assert_eq!(xsdt_entries, rsdt_entries);
        read_table(&memory, tables.fadt, b"FACP");
        read_table(&memory, tables.madt, b"APIC");
    }

    #[test]
    fn the_fadt_gives_the_pm_devices_ports_its_dsdt_and_its_facs() {
        let (memory, tables) = loaded();
        let fadt = read_table(&memory, tables.fadt, b"FACP");
        assert_eq!(fadt.len(), FADT_LENGTH);
        assert_eq!(fadt[8], FADT_REVISION);
        assert_eq!(u16_at(&fadt, fadt::SCI_INT), acpi_pm::SCI_IRQ as u16);
        assert_eq!(
            u32_at(&fadt, fadt::SMI_CMD),
            0,
            "no SMM: always in ACPI mode"
        );
        for (offset, x_offset, port, length) in [
            (
                fadt::PM1A_EVT_BLK,
                fadt::X_PM1A_EVT_BLK,
                acpi_pm::PM1_STATUS,
                (fadt::PM1_EVT_LEN, 4),
            ),
            (
                fadt::PM1A_CNT_BLK,
                fadt::X_PM1A_CNT_BLK,
                acpi_pm::PM1_CONTROL,
                (fadt::PM1_CNT_LEN, 2),
            ),
            (
                fadt::PM_TMR_BLK,
                fadt::X_PM_TMR_BLK,
                acpi_pm::PM_TIMER,
                (fadt::PM_TMR_LEN, 4),
            ),
        ] {
            assert_eq!(u32_at(&fadt, offset), port as u32);
            assert_eq!(
                fadt[length.0], length.1,
                "the length of the block at {port:#x}"
            );
            // The 64-bit form: system I/O, as many bits as the block has, the same port.
            assert_eq!(fadt[x_offset], SYSTEM_IO);
            assert_eq!(fadt[x_offset + 1], length.1 * 8);
            assert_eq!(u64_at(&fadt, x_offset + 4), port as u64);
        }
        assert_eq!(
            (
                acpi_pm::PM1_STATUS,
                acpi_pm::PM1_ENABLE,
                acpi_pm::PM1_CONTROL,
                acpi_pm::PM_TIMER
            ),
            (0x600, 0x602, 0x604, 0x608),
            "QEMU's PIIX4 ports"
        );
        // A kernel reads SCI_EN at PM1a_CNT_BLK to see it is in ACPI mode.
        let pm = AcpiPm::default();
        let control = u32_at(&fadt, fadt::PM1A_CNT_BLK) as u16;
        assert_eq!(pm.read(control, 2, 0, 1) & 1, 1, "SCI_EN");
        let flags = u32_at(&fadt, fadt::FLAGS);
        assert_eq!(flags & fadt::flags::TMR_VAL_EXT, 0, "a 24-bit PM timer");
        assert_eq!(acpi_pm::TIMER_BITS, 24);
        assert_ne!(flags & fadt::flags::RESET_REG_SUP, 0);
        assert_eq!(u64_at(&fadt, fadt::RESET_REG + 4), 0xcf9);
        assert_eq!(fadt[fadt::RESET_VALUE], 0x06);
        let boot_arch = u16_at(&fadt, fadt::IAPC_BOOT_ARCH);
        assert_eq!(boot_arch & fadt::boot_arch::I8042, 0, "no 8042");
        assert_eq!(fadt[fadt::CENTURY], 0x32);

        assert_eq!(u32_at(&fadt, fadt::DSDT) as u64, tables.dsdt);
        assert_eq!(u64_at(&fadt, fadt::X_DSDT), tables.dsdt);
        let dsdt = read_table(&memory, tables.dsdt, b"DSDT");
        // Name (_S5, Package (4) { 0, 0, 0, 0 }): QEMU's PIIX4 switches off on SLP_TYP 0.
        let aml = &dsdt[HEADER_LENGTH..];
        assert_eq!(
            aml[..16],
            [
                0x08, b'_', b'S', b'5', b'_', // NameOp, the name
                0x12, 10, 4, // PackageOp, PkgLength (itself included), 4 elements
                0x0a, 0, 0x0a, 0, 0x0a, 0, 0x0a, 0, // BytePrefix 0, four times
            ]
        );
        assert_eq!(acpi_pm::SOFT_OFF_TYPE, 0);
        // Device (\_SB.PCI0): ExtOpPrefix DeviceOp, a two-byte PkgLength that covers the
        // rest of the table, the path, then _HID = EisaId ("PNP0A03").
        let rest = &aml[16..];
        assert_eq!(rest[..2], [0x5b, 0x82]);
        let length = (rest[2] & 0xf) as usize | (rest[3] as usize) << 4;
        assert_eq!(rest[2] >> 6, 1, "a two-byte PkgLength");
        let (device, legacy) = rest.split_at(2 + length);
        assert_eq!(&device[4..14], b"\\\x2e_SB_PCI0");
        assert_eq!(
            device[14..24],
            [0x08, b'_', b'H', b'I', b'D', 0x0c, 0x41, 0xd0, 0x0a, 0x03]
        );
        // _UID 0, then _CRS: NameOp, the name, BufferOp, a two-byte PkgLength, WordPrefix
        // and the buffer's size, then the descriptors, written out here from ACPI 6.4's
        // tables 6.4 (large and small items): bus numbers 0-255, I/O 0xcf8 x 8, I/O
        // 0-0xcf7 and 0xd00-0xffff, memory from the end of RAM (2 MiB here) to the lab
        // device's window, the End Tag.
        assert_eq!(device[24..31], [0x08, b'_', b'U', b'I', b'D', 0x0a, 0]);
        assert_eq!(device[31..36], [0x08, b'_', b'C', b'R', b'S']);
        assert_eq!((device[36], device[39]), (0x11, 0x0b));
        let mut expected = vec![
            0x88, 13, 0, 2, 0x0c, 0, 0, 0, 0, 0, 0xff, 0, 0, 0, 0x00, 0x01, // buses
            0x47, 1, 0xf8, 0x0c, 0xf8, 0x0c, 1, 8, // the configuration ports
            0x88, 13, 0, 1, 0x0c, 3, 0, 0, 0, 0, 0xf7, 0x0c, 0, 0, 0xf8, 0x0c, // I/O
            0x88, 13, 0, 1, 0x0c, 3, 0, 0, 0x00, 0x0d, 0xff, 0xff, 0, 0, 0x00, 0xf3, // I/O
            0x87, 23, 0, 0, 0x0c, 3, 0, 0, 0, 0, // memory: granularity 0
        ];
        let window_end = traplab_abi::boot::LAB_DEVICE as u32 - 1;
        for value in [2u32 << 20, window_end, 0, window_end - (2 << 20) + 1] {
            expected.extend(value.to_le_bytes());
        }
        expected.extend([0x79, 0]);
        assert_eq!(
            u16::from_le_bytes([device[40], device[41]]) as usize,
            expected.len()
        );
        assert_eq!(device[42..], expected[..]);
        // Then COM1 and the RTC, each a Device with _HID, _UID and a _CRS of its ports and
        // its IRQ (an IRQ descriptor, 0x22, with the IRQ's bit in a 16-bit mask); the
        // buffer's PkgLength counts itself, WordPrefix, the size and the 13 bytes: 17.
        let legacy_device = |path: &[u8; 10], id: [u8; 4], io: [u8; 8], irq: [u8; 3]| {
            let mut terms = path.to_vec();
            terms.extend([0x08, b'_', b'H', b'I', b'D', 0x0c]);
            terms.extend(id);
            terms.extend([0x08, b'_', b'U', b'I', b'D', 0x0a, 1]);
            terms.extend([0x08, b'_', b'C', b'R', b'S', 0x11, 17, 0x0b, 13, 0]);
            terms.extend(io);
            terms.extend(irq);
            terms.extend([0x79, 0]);
            let mut bytes = vec![0x5b, 0x82, (terms.len() + 1) as u8];
            bytes.extend(terms);
            bytes
        };
        let com1 = legacy_device(
            b"\\\x2e_SB_COM1",
            [0x41, 0xd0, 0x05, 0x01],
            [0x47, 1, 0xf8, 0x03, 0xf8, 0x03, 1, 8],
            [0x22, 1 << 4, 0],
        );
        let clock = legacy_device(
            b"\\\x2e_SB_RTC_",
            [0x41, 0xd0, 0x0b, 0x00],
            [0x47, 1, 0x70, 0, 0x70, 0, 1, 2],
            [0x22, 0, 1],
        );
        assert_eq!(legacy, [com1, clock].concat());
        assert_eq!(u32_at(&fadt, fadt::FIRMWARE_CTRL) as u64, tables.facs);
        assert_eq!(
            u64_at(&fadt, fadt::X_FIRMWARE_CTRL),
            0,
            "the 32-bit field alone"
        );
        assert_eq!(tables.facs % 64, 0, "the FACS is 64-byte aligned");
        let facs = bytes(&memory, tables.facs, FACS_LENGTH);
        assert_eq!(&facs[0..4], b"FACS");
        assert_eq!(u32_at(&facs, 4), FACS_LENGTH as u32);
    }

    #[test]
    fn the_madt_lists_exactly_the_apics_the_devices_are() {
        let (memory, tables) = loaded();
        let madt = read_table(&memory, tables.madt, b"APIC");
        assert_eq!(u32_at(&madt, 36) as u64, lapic::BASE);
        assert_eq!(u32_at(&madt, 40), PCAT_COMPAT);
        let mut entries = Vec::new();
        let mut at = 44;
        while at < madt.len() {
            let length = madt[at + 1] as usize;
            entries.push(madt[at..at + length].to_vec());
            at += length;
        }
        assert_eq!(at, madt.len(), "the structures fill the table");
        let expected = vec![
            vec![0, 8, 0, 0, 1, 0, 0, 0],
            vec![1, 12, 0, 0, 0x00, 0x00, 0xc0, 0xfe, 0, 0, 0, 0],
            vec![2, 10, 0, 0, 2, 0, 0, 0, 0, 0],
            vec![2, 10, 0, 9, 9, 0, 0, 0, 0x0d, 0],
            vec![4, 6, 0xff, 0, 0, 1],
        ];
        assert_eq!(entries, expected);
        // And what the devices say of themselves: the local APIC's ID register, the
        // IO-APIC's ID register, the pin the PIT's ticks arrive at.
        let mut apic = lapic::LocalApic::default();
        assert_eq!(apic.read(0x20, 0, 1).0 >> 24, entries[0][3] as u32);
        let mut io = ioapic::IoApic::default();
        io.write(ioapic::REGISTER_SELECT, 0);
        assert_eq!(io.read(ioapic::WINDOW).0 >> 24, entries[1][2] as u32);
        assert_eq!(entries[2][4] as usize, ioapic::PIT_PIN);
    }

    #[test]
    fn the_memory_map_reserves_every_table() {
        let (_, tables) = loaded();
        let map = memory_map(2 << 20);
        for (at, length) in [
            (tables.rsdp, RSDP_LENGTH),
            (tables.rsdt, HEADER_LENGTH + 8),
            (tables.xsdt, HEADER_LENGTH + 16),
            (tables.fadt, FADT_LENGTH),
            (tables.madt, 44 + 8 + 12 + 10 + 10 + 6),
            (tables.dsdt, HEADER_LENGTH),
            (tables.facs, FACS_LENGTH),
        ] {
            let reserved = map.iter().any(|&entry| {
                // Copied out of the packed entry.
                let (kind, base, end) = (entry.kind, entry.base, entry.base + entry.length);
                kind == MEMORY_RESERVED && base <= at && at + length as u64 <= end
            });
            assert!(reserved, "the table at {at:#x} is in reserved memory");
        }
    }
}
