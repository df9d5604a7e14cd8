//! QEMU's `pc-testdev`: the ISA test device kvm-unit-tests drive (`-device pc-testdev`),
//! present only with the hypervisor setting `pc-testdev` (elsewhere its ports and its
//! window are "no device", as on a PC without it).
//!
//! The source of truth is QEMU's `hw/misc/pc-testdev.c`; what it places where, and what it
//! accepts there:
//!
//! | where                 | QEMU's region              | widths | read                     | write |
//! |-----------------------|----------------------------|--------|--------------------------|-------|
//! | ports 0xe0–0xe3       | `pc-testdev-ioport`        | 1, 2, 4 | the data register's bytes at the port's offset in it | stores them there |
//! | ports 0xe8–0xeb       | `pc-testdev-ioport-byte`   | 1, 2, 4 | the same register (QEMU does it one byte at a time: the same result) | the same |
//! | port 0xe4             | `pc-testdev-flush-page`    | 4      | 0                        | "flush page": see below |
//! | ports 0x2000–0x2017   | `pc-testdev-irq-line`      | 1      | 0                        | interrupt line *n* (port 0x2000 + *n*) goes high (value not 0) or low |
//! | MMIO 0xff000000, 64 KiB | `pc-testdev-iomem` (`IOMEM_LEN` 0x10000) | 1, 2, 4, 8 | what was written (0 before) | kept, like RAM |
//!
//! An access QEMU's memory core refuses (`memory_region_access_valid`: a width outside the
//! region's `valid` sizes, such as a 2-byte write to an IRQ line or a byte to the flush
//! port; or an address that is not a multiple of the width, as no region here accepts
//! unaligned accesses) does nothing here either: the read answers all ones, the write is
//! dropped, and the trace says why.
//!
//! **Flush page.** QEMU takes the write as the guest-physical address of a page, and makes
//! the host take its own mapping of that page away and give it back (`mprotect` to none,
//! then read-write): under KVM, that drops the page's nested-paging entry, so a test sees
//! its next access exit and the entry rebuilt. This hypervisor's nested page tables are its
//! own, and it keeps them: the write is only recorded in the trace.
//!
//! **Interrupt lines.** QEMU raises or lowers ISA IRQ *n* (`qemu_set_irq` on
//! `isa_get_irq(n)`), which a PC wires to the 8259A and to the IO-APIC. The wiring is the
//! bus's, not the device's: it hands the line to `Devices::set_line` (the same function
//! COM1's IRQ 4 goes through). Lines 16–23 have no ISA IRQ (QEMU asserts `n < 16` there and
//! stops); here they reach only the IO-APIC's pins 16–23, one port per pin.

use alloc::format;
use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;
use traplab_abi::x86::operand_mask;

/// The data register, and its byte-at-a-time alias.
pub const DATA: u16 = 0xe0;
pub const DATA_BYTES: u16 = 0xe8;
/// The flush-page port.
pub const FLUSH_PAGE: u16 = 0xe4;
/// The first interrupt-line port, and how many there are (one per IO-APIC pin).
pub const IRQ_LINES: u16 = 0x2000;
pub const LINES: u16 = 24;
/// The memory window (QEMU's `IOMEM_LEN`), guest-physical.
pub const IOMEM_BASE: u64 = 0xff00_0000;
pub const IOMEM_SIZE: u64 = 0x1_0000;

/// Is `port` one of the device's? (Only when the setting puts it there: `Devices`.)
pub fn claims(port: u16) -> bool {
    matches!(port, DATA..=0xe3 | FLUSH_PAGE..=0xe7 | DATA_BYTES..=0xeb)
        || (IRQ_LINES..IRQ_LINES + LINES).contains(&port)
}

/// Is guest-physical `gpa` in the memory window?
pub fn contains(gpa: u64) -> bool {
    (IOMEM_BASE..IOMEM_BASE + IOMEM_SIZE).contains(&gpa)
}

/// The register at one of its ports, in words.
pub fn name(port: u16) -> &'static str {
    match port {
        DATA..=0xe3 | DATA_BYTES..=0xeb => "pc-testdev data register",
        FLUSH_PAGE..=0xe7 => "pc-testdev flush page",
        _ => "pc-testdev interrupt lines",
    }
}

/// The same, with the line an interrupt-line port drives.
pub fn describe(port: u16) -> String {
    match port.checked_sub(IRQ_LINES) {
        Some(line) if line < LINES => format!("pc-testdev interrupt line {line}"),
        _ => name(port).into(),
    }
}

/// What an OUT asks for.
#[derive(Debug, PartialEq, Eq)]
pub enum Write {
    /// Done by the device itself: what it did.
    Done(String),
    /// Interrupt line `line` goes to `level`: the bus wires it (`Devices::set_line`).
    Line { line: u8, level: bool },
}

/// The device's state, one per domain that has it.
#[derive(Default)]
pub struct PcTestdev {
    data: u32,
    /// The memory window; empty until the first write (every byte reads 0 until then, as
    /// QEMU's zeroed buffer does), so a domain that never writes there costs nothing.
    iomem: Vec<u8>,
}

/// Is an access of `width` bytes at `at` aligned to its width, as every region of QEMU's
/// device demands?
fn aligned(at: u64, width: u8) -> bool {
    at.is_multiple_of(width.max(1).into())
}

/// The bits of the data register an aligned `size`-byte access at `port` reaches (its byte
/// lanes from the port's offset in the register), and their shift.
fn lanes(port: u16, size: u8) -> (u32, u32) {
    let shift = 8 * (port & 3) as u32;
    ((operand_mask(size) as u32) << shift, shift)
}

impl PcTestdev {
    /// IN of `size` bytes at one of the device's ports: the value.
    pub fn read(&self, port: u16, size: u8) -> u32 {
        if !aligned(port.into(), size) {
            return operand_mask(size) as u32;
        }
        match (port, size) {
            (DATA..=0xe3 | DATA_BYTES..=0xeb, _) => {
                let (mask, shift) = lanes(port, size);
                (self.data & mask) >> shift
            }
            // The write-only registers read 0 at the width QEMU allows.
            (FLUSH_PAGE, 4) => 0,
            (IRQ_LINES.., 1) => 0,
            _ => operand_mask(size) as u32,
        }
    }

    /// OUT of `value` (`size` bytes) at one of the device's ports.
    pub fn write(&mut self, port: u16, size: u8, value: u32) -> Write {
        if !aligned(port.into(), size) {
            return Write::Done(format!(
                "a {size}-byte write at port {port:#x}, not aligned to its width, which QEMU's device refuses: dropped"
            ));
        }
        match (port, size) {
            (DATA..=0xe3 | DATA_BYTES..=0xeb, _) => {
                let (mask, shift) = lanes(port, size);
                self.data = (self.data & !mask) | ((value << shift) & mask);
                Write::Done(format!("the data register now holds {:#x}", self.data))
            }
            (FLUSH_PAGE, 4) => {
                let page = value & !0xfff;
                Write::Done(format!(
                    "flush page {page:#x}: QEMU would make the host unmap and remap that page, dropping its nested-paging entry under KVM; this hypervisor keeps its nested page tables, so nothing changes"
                ))
            }
            (IRQ_LINES.., 1) => Write::Line {
                line: (port - IRQ_LINES) as u8,
                level: value != 0,
            },
            (FLUSH_PAGE, _) => Write::Done(format!(
                "a {size}-byte write to the flush port, which takes only 4 bytes (as QEMU's): dropped"
            )),
            (IRQ_LINES.., _) => Write::Done(format!(
                "a {size}-byte write to an interrupt line, which takes only 1 byte (as QEMU's): dropped"
            )),
            // 0xe5–0xe7: inside the flush port's 4 bytes, where no aligned 4-byte write lands.
            _ => Write::Done(format!(
                "a {size}-byte write inside the flush port, which takes only 4 bytes at 0xe4 (as QEMU's): dropped"
            )),
        }
    }

    /// A read of `width` bytes (1, 2, 4 or 8; QEMU does 8 as two 4-byte halves, the same
    /// bytes) at `offset` in the memory window: the value, and what it was. Aligned, it
    /// stays inside the window (its size is a multiple of 8).
    pub fn iomem_read(&self, offset: u64, width: u8) -> (u64, String) {
        if !aligned(offset, width) {
            let value = operand_mask(width);
            return (
                value,
                format!(
                    "a {width}-byte read at offset {offset:#x} of its memory, not aligned to its width, which QEMU's device refuses: all ones ({value:#x})"
                ),
            );
        }
        let mut bytes = [0u8; 8];
        for (i, byte) in bytes.iter_mut().enumerate().take(width.into()) {
            *byte = self.iomem.get(offset as usize + i).copied().unwrap_or(0);
        }
        let value = u64::from_le_bytes(bytes);
        (
            value,
            format!("read {value:#x} from its memory at offset {offset:#x}"),
        )
    }

    /// A write of `width` bytes of `value` at `offset` in the memory window: what it did.
    pub fn iomem_write(&mut self, offset: u64, width: u8, value: u64) -> String {
        if !aligned(offset, width) {
            return format!(
                "a {width}-byte write at offset {offset:#x} of its memory, not aligned to its width, which QEMU's device refuses: dropped"
            );
        }
        if self.iomem.is_empty() {
            self.iomem = vec![0; IOMEM_SIZE as usize];
        }
        let bytes = value.to_le_bytes();
        for (i, byte) in bytes.iter().enumerate().take(width.into()) {
            if let Some(slot) = self.iomem.get_mut(offset as usize + i) {
                *slot = *byte;
            }
        }
        format!("{value:#x} kept in its memory at offset {offset:#x}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::{Devices, ioapic};
    use crate::testing::FakeMachine;

    /// A domain's devices with the setting on.
    fn devices() -> Devices {
        Devices {
            testdev: Some(PcTestdev::default()),
            ..Devices::default()
        }
    }

    #[test]
    fn without_the_setting_its_ports_and_window_are_no_device() {
        let machine = FakeMachine::default();
        let mut devices = Devices::default();
        devices.port_write(DATA, 4, 0x1234, &machine);
        assert_eq!(devices.port_read(DATA, 4, &machine), 0xffff_ffff);
        assert_eq!(devices.port_name(DATA), "no device");
        assert!(!devices.claims(IOMEM_BASE));
        devices.mmio_write(IOMEM_BASE, 4, 7, &machine);
        assert_eq!(devices.mmio_read(IOMEM_BASE, 4, &machine).0, 0xffff_ffff);
    }

    #[test]
    fn the_data_register_reads_back_what_was_written_at_every_width() {
        let machine = FakeMachine::default();
        let mut devices = devices();
        let written = devices.port_write(DATA, 4, 0x1122_3344, &machine);
        assert_eq!(
            written.what,
            "pc-testdev: the data register now holds 0x11223344"
        );
        assert_eq!(devices.port_read(DATA, 4, &machine), 0x1122_3344);
        assert_eq!(devices.port_read(DATA, 2, &machine), 0x3344);
        assert_eq!(
            devices.port_read(0xe2, 2, &machine),
            0x1122,
            "the upper half"
        );
        devices.port_write(0xe1, 1, 0xab, &machine);
        assert_eq!(devices.port_read(DATA, 4, &machine), 0x1122_ab44);
        // The byte alias at 0xe8 is the same register.
        assert_eq!(devices.port_read(DATA_BYTES + 3, 1, &machine), 0x11);
        devices.port_write(DATA_BYTES, 2, 0xbeef, &machine);
        assert_eq!(devices.port_read(DATA, 4, &machine), 0x1122_beef);
        // Unaligned: QEMU's memory core refuses it.
        let written = devices.port_write(0xe3, 2, 0x5566, &machine);
        assert!(written.what.contains("not aligned"), "{}", written.what);
        assert_eq!(devices.port_read(0xe3, 2, &machine), 0xffff);
        assert_eq!(devices.port_read(DATA, 4, &machine), 0x1122_beef);
        assert_eq!(devices.port_name(DATA), "pc-testdev data register");
    }

    #[test]
    fn a_flush_page_is_recorded_and_changes_nothing() {
        let machine = FakeMachine::default();
        let mut devices = devices();
        let written = devices.port_write(FLUSH_PAGE, 4, 0x12_3456, &machine);
        assert!(
            written
                .what
                .starts_with("pc-testdev: flush page 0x123000: "),
            "{}",
            written.what
        );
        assert_eq!(devices.port_read(FLUSH_PAGE, 4, &machine), 0);
        let written = devices.port_write(FLUSH_PAGE, 1, 1, &machine);
        assert!(written.what.contains("only 4 bytes"), "{}", written.what);
    }

    #[test]
    fn an_irq_line_port_raises_the_isa_irq_at_the_pic_and_the_io_apic() {
        let machine = FakeMachine::default();
        let mut devices = devices();
        // Pin 5 unmasked, a fixed interrupt at vector 0x35 to APIC ID 0 (physical).
        devices.ioapic.write(ioapic::REGISTER_SELECT, 0x10 + 2 * 5);
        devices.ioapic.write(ioapic::WINDOW, 0x35);
        let written = devices.port_write(IRQ_LINES + 5, 1, 1, &machine);
        assert_eq!(
            written.what,
            "pc-testdev raises IRQ 5: requested at the PIC, and through IO-APIC pin 5 at the local APIC (vector 0x35)"
        );
        assert_eq!(devices.pic.master.requests, 1 << 5);
        // Held high: no new edge, nothing more requested.
        let written = devices.port_write(IRQ_LINES + 5, 1, 0xff, &machine);
        assert_eq!(
            written.what,
            "pc-testdev: interrupt line 5 stays high: no edge, nothing requested"
        );
        let written = devices.port_write(IRQ_LINES + 5, 1, 0, &machine);
        assert_eq!(written.what, "pc-testdev's interrupt line (IRQ 5) drops");
        assert_eq!(devices.port_read(IRQ_LINES + 5, 1, &machine), 0);
        assert_eq!(
            devices.describe_port(IRQ_LINES + 5, false),
            "pc-testdev interrupt line 5"
        );
    }

    #[test]
    fn irq_line_0_reaches_io_apic_pin_2_and_lines_16_to_23_only_the_io_apic() {
        let machine = FakeMachine::default();
        let mut devices = devices();
        for (pin, vector) in [(2, 0x40), (17, 0x41)] {
            devices
                .ioapic
                .write(ioapic::REGISTER_SELECT, 0x10 + 2 * pin);
            devices.ioapic.write(ioapic::WINDOW, vector);
        }
        let written = devices.port_write(IRQ_LINES, 1, 1, &machine);
        assert!(
            written
                .what
                .ends_with("IO-APIC pin 2 at the local APIC (vector 0x40)")
        );
        let written = devices.port_write(IRQ_LINES + 17, 1, 1, &machine);
        assert_eq!(
            written.what,
            "pc-testdev raises IO-APIC pin 17: requested at the local APIC (vector 0x41)"
        );
        assert_eq!(devices.pic.slave.requests, 0, "the PICs have 16 lines");
        let written = devices.port_write(IRQ_LINES + 18, 1, 1, &machine);
        assert_eq!(
            written.what,
            "pc-testdev raises IO-APIC pin 18: masked there (or not a fixed interrupt), nothing requested"
        );
        let written = devices.port_write(IRQ_LINES + 18, 2, 0, &machine);
        assert!(written.what.contains("only 1 byte"), "{}", written.what);
    }

    #[test]
    fn an_active_low_pin_sends_its_message_on_the_falling_edge() {
        // Pin 19 at vector 0x42 with polarity 1 (82093AA, bit 13): raising the line is its
        // release, lowering it is the edge.
        let machine = FakeMachine::default();
        let mut devices = devices();
        devices.ioapic.write(ioapic::REGISTER_SELECT, 0x10 + 2 * 19);
        devices.ioapic.write(ioapic::WINDOW, 0x42 | 1 << 13);
        let written = devices.port_write(IRQ_LINES + 19, 1, 1, &machine);
        assert_eq!(
            written.what,
            "pc-testdev raises IO-APIC pin 19 (active low there): its release, nothing requested"
        );
        assert!(!devices.lapic.requested.contains(0x42));
        let written = devices.port_write(IRQ_LINES + 19, 1, 0, &machine);
        assert_eq!(
            written.what,
            "pc-testdev lowers IO-APIC pin 19 (active low there): requested at the local APIC (vector 0x42)"
        );
        assert!(devices.lapic.requested.contains(0x42));
    }

    #[test]
    fn the_memory_window_reads_back_what_was_written_at_every_width() {
        let machine = FakeMachine::default();
        let mut devices = devices();
        assert!(devices.claims(IOMEM_BASE + IOMEM_SIZE - 1));
        assert!(!devices.claims(IOMEM_BASE + IOMEM_SIZE));
        assert_eq!(devices.mmio_name(IOMEM_BASE), "pc-testdev's memory window");
        assert_eq!(
            devices.mmio_read(IOMEM_BASE + 0x100, 8, &machine).0,
            0,
            "zero before"
        );
        let written = devices.mmio_write(IOMEM_BASE + 0x100, 8, 0x0102_0304_0506_0708, &machine);
        assert_eq!(
            written.what,
            "pc-testdev: 0x102030405060708 kept in its memory at offset 0x100"
        );
        assert_eq!(
            devices.mmio_read(IOMEM_BASE + 0x100, 4, &machine).0,
            0x0506_0708
        );
        assert_eq!(devices.mmio_read(IOMEM_BASE + 0x106, 2, &machine).0, 0x0102);
        devices.mmio_write(IOMEM_BASE + 0x101, 1, 0xaa, &machine);
        assert_eq!(
            devices.mmio_read(IOMEM_BASE + 0x100, 8, &machine),
            (
                0x0102_0304_0506_aa08,
                "pc-testdev: read 0x10203040506aa08 from its memory at offset 0x100".into()
            )
        );
        // The last bytes are the window's; an unaligned access is refused, as QEMU does.
        devices.mmio_write(IOMEM_BASE + IOMEM_SIZE - 2, 2, 0x1234, &machine);
        assert_eq!(
            devices
                .mmio_read(IOMEM_BASE + IOMEM_SIZE - 1, 1, &machine)
                .0,
            0x12
        );
        let written = devices.mmio_write(IOMEM_BASE + 0x101, 4, 0, &machine);
        assert!(written.what.contains("not aligned"), "{}", written.what);
        assert_eq!(devices.mmio_read(IOMEM_BASE + 0x101, 2, &machine).0, 0xffff);
        assert_eq!(
            devices.mmio_read(IOMEM_BASE + 0x100, 8, &machine).0,
            0x0102_0304_0506_aa08
        );
    }
}
