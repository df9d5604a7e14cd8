//! The IO-APIC, at 0xfec00000 as on a PC (Intel 82093AA datasheet; QEMU's `ioapic`).
//!
//! It turns the level of an interrupt pin into a message to a local APIC. A kernel reaches
//! its registers through two 32-bit windows: it writes a register's index to IOREGSEL
//! (offset 0x00), then reads or writes the register through IOWIN (offset 0x10).
//!
//! | index | register | here |
//! |-------|----------|------|
//! | 0x00 | ID | bits 27:24, kept |
//! | 0x01 | version | 0x170020: 24 pins (the highest redirection entry is 23), version 0x20, as QEMU's |
//! | 0x02 | arbitration ID | the ID, read-only |
//! | 0x10 + 2n, 0x11 + 2n | redirection entry n, low and high half | vector (7:0), delivery mode (10:8), destination mode (11), delivery status (12, read-only), polarity (13), remote IRR (14, read-only), trigger mode (15), mask (16); destination (63:56) |
//!
//! After reset every entry is masked. The PC wiring (the interrupt source overrides the MADT
//! of QEMU's `pc` machine declares): the PIT's IRQ 0 comes in on pin 2; every other ISA IRQ
//! *n* on pin *n*. Two sources on this platform: the PIT on pin 2 (while the kernel has
//! masked IRQ 0 at the 8259A and unmasked pin 2 here, a PIT tick goes to the local APIC; with
//! IRQ 0 unmasked at the 8259A it goes there alone, as the PIC's output reaches the CPU through
//! the local APIC's LINT0 on a PC, which this model does not have) and
//! COM1 on pin 4; with the setting `pc-testdev`, its ports drive any of the 24 pins
//! (`pc_testdev.rs`). An edge on an unmasked pin whose entry is a fixed or lowest-priority
//! interrupt is a message ([`Message`]): the local APIC it addresses (by APIC ID, or by
//! logical ID: `LocalApic::addressed`) requests the entry's vector in its IRR, and the local
//! APIC's EOI ends it (edge-triggered: no remote IRR). The edge is the pin's rising one, or
//! its falling one when the entry's polarity bit says active low. With one CPU, "lowest priority" is
//! that CPU. (Not modeled: level-triggered pins, the NMI, SMI, INIT and ExtINT delivery
//! modes, the IO-APIC's EOI register of version 0x20.)

use alloc::format;
use alloc::string::String;

/// Where the IO-APIC's two windows are (the PC's default, and the MADT's).
pub const BASE: u64 = 0xfec0_0000;
pub const SIZE: u64 = 0x1000;
/// IOREGSEL and IOWIN, offsets from [`BASE`].
pub const REGISTER_SELECT: u64 = 0x00;
pub const WINDOW: u64 = 0x10;
/// How many pins (redirection entries) it has.
pub const PINS: usize = 24;
/// Version 0x20, the highest redirection entry 23 in bits 23:16 (QEMU's IO-APIC).
pub const VERSION: u32 = 0x20 | ((PINS as u32 - 1) << 16);
/// The ID after reset (the MADT's I/O APIC entry says the same; a kernel may change it).
pub const RESET_ID: u8 = 0;
/// The pin the PIT's IRQ 0 comes in on (the ISA override of a PC's MADT).
pub const PIT_PIN: usize = 2;
/// COM1's IRQ 4 comes in on pin 4: every ISA IRQ but 0 keeps its number (no override).
pub const UART_PIN: usize = 4;

/// The pin ISA IRQ `irq` comes in on: pin `irq`, but IRQ 0 on pin 2 (the override above;
/// QEMU's `ioapic_set_irq` maps it the same way). From 16 on a line is a pin of its own.
pub fn isa_pin(irq: u8) -> usize {
    match irq {
        0 => PIT_PIN,
        irq => irq.into(),
    }
}
/// A redirection entry's mask bit.
const MASKED: u64 = 1 << 16;
/// A redirection entry's polarity bit: 1, the pin is active low.
const ACTIVE_LOW: u64 = 1 << 13;

/// Is guest-physical `gpa` in the IO-APIC's page?
pub fn contains(gpa: u64) -> bool {
    (BASE..BASE + SIZE).contains(&gpa)
}

/// The IO-APIC's state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IoApic {
    /// IOREGSEL: the register IOWIN reaches.
    pub selected: u8,
    id: u32,
    pub redirection: [u64; PINS],
}

impl Default for IoApic {
    /// As after reset: ID 0, every pin masked.
    fn default() -> IoApic {
        IoApic {
            selected: 0,
            id: (RESET_ID as u32) << 24,
            redirection: [MASKED; PINS],
        }
    }
}

/// What a redirection entry sends to the local APICs (82093AA datasheet, 3.2.4): a vector
/// and a destination, an APIC ID (physical mode) or a set of logical IDs (logical mode);
/// the local APIC decides whether it is addressed (`LocalApic::addressed`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Message {
    pub vector: u8,
    pub logical: bool,
    pub destination: u8,
}

impl IoApic {
    /// The vector the PIT's ticks arrive at in the local APIC, while pin 2 is unmasked and
    /// its entry is a fixed interrupt (delivery mode 000).
    pub fn timer_vector(&self) -> Option<Message> {
        self.message(PIT_PIN)
    }

    /// The interrupt message an edge on `pin` sends, while the pin is unmasked and its
    /// entry is a fixed or lowest-priority interrupt (delivery modes 000 and 001: with one
    /// CPU, the lowest-priority one is that CPU; Xen and Linux program lowest priority).
    pub fn message(&self, pin: usize) -> Option<Message> {
        let entry = *self.redirection.get(pin)?;
        let mode = (entry >> 8) & 7;
        (entry & MASKED == 0 && mode <= 1).then_some(Message {
            vector: entry as u8,
            logical: entry & (1 << 11) != 0,
            destination: (entry >> 56) as u8,
        })
    }

    /// Is `pin` active low (its entry's polarity bit)? Then the pin's falling edge is the
    /// one that sends the message (82093AA datasheet, redirection table, bit 13).
    pub fn active_low(&self, pin: usize) -> bool {
        self.redirection
            .get(pin)
            .is_some_and(|entry| entry & ACTIVE_LOW != 0)
    }

    /// A 32-bit read at `offset`: the value and what it was.
    pub fn read(&self, offset: u64) -> (u32, String) {
        match offset {
            REGISTER_SELECT => (
                self.selected as u32,
                format!("IOREGSEL = {:#x}", self.selected),
            ),
            WINDOW => {
                let value = self.register(self.selected);
                (
                    value,
                    format!("{} = {value:#x}", register_name(self.selected)),
                )
            }
            _ => (0, format!("offset {offset:#x}: no register, reads 0")),
        }
    }

    /// A 32-bit write of `value` at `offset`: what it did.
    pub fn write(&mut self, offset: u64, value: u32) -> String {
        match offset {
            REGISTER_SELECT => {
                self.selected = value as u8;
                format!(
                    "IOREGSEL = {:#x}: IOWIN now reaches {}",
                    self.selected,
                    register_name(self.selected)
                )
            }
            WINDOW => self.write_register(self.selected, value),
            _ => format!("offset {offset:#x}: no register, the write is dropped"),
        }
    }

    fn register(&self, index: u8) -> u32 {
        match index {
            0x00 | 0x02 => self.id,
            0x01 => VERSION,
            0x10..=0x3f => {
                let entry = self.redirection[(index as usize - 0x10) / 2];
                match index.is_multiple_of(2) {
                    true => entry as u32,
                    false => (entry >> 32) as u32,
                }
            }
            _ => 0,
        }
    }

    fn write_register(&mut self, index: u8, value: u32) -> String {
        match index {
            0x00 => {
                self.id = value & 0x0f00_0000;
                format!("ID = {:#x}", self.id)
            }
            0x10..=0x3f => {
                let pin = (index as usize - 0x10) / 2;
                let entry = &mut self.redirection[pin];
                if index.is_multiple_of(2) {
                    // Delivery status (12) and remote IRR (14) are the IO-APIC's own.
                    let kept = *entry & ((0xffff_ffff << 32) | (1 << 12) | (1 << 14));
                    *entry = kept | (value as u64 & !((1 << 12) | (1 << 14)));
                } else {
                    *entry = (*entry & 0xffff_ffff) | ((value as u64) << 32);
                }
                let entry = *entry;
                format!(
                    "redirection entry {pin}{} = {entry:#x}: vector {:#x}, {}, {}",
                    if pin == PIT_PIN {
                        " (the PIT's IRQ 0)"
                    } else {
                        ""
                    },
                    entry as u8,
                    delivery_mode(entry),
                    if entry & MASKED != 0 {
                        "masked"
                    } else {
                        "unmasked"
                    }
                )
            }
            _ => format!(
                "a write to {}, which is read-only: ignored",
                register_name(index)
            ),
        }
    }
}

fn delivery_mode(entry: u64) -> &'static str {
    match (entry >> 8) & 7 {
        0 => "fixed",
        1 => "lowest priority",
        2 => "SMI",
        4 => "NMI",
        5 => "INIT",
        7 => "ExtINT",
        _ => "a reserved delivery mode",
    }
}

fn register_name(index: u8) -> String {
    match index {
        0x00 => "the ID register".into(),
        0x01 => "the version register".into(),
        0x02 => "the arbitration ID".into(),
        0x10..=0x3f => format!(
            "redirection entry {} ({} half)",
            (index - 0x10) / 2,
            if index.is_multiple_of(2) {
                "low"
            } else {
                "high"
            }
        ),
        index => format!("register {index:#x} (none)"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Write `value` to register `index` through the windows.
    fn set(ioapic: &mut IoApic, index: u8, value: u32) -> String {
        ioapic.write(REGISTER_SELECT, index as u32);
        ioapic.write(WINDOW, value)
    }

    fn get(ioapic: &mut IoApic, index: u8) -> u32 {
        ioapic.write(REGISTER_SELECT, index as u32);
        ioapic.read(WINDOW).0
    }

    #[test]
    fn the_version_says_24_pins_and_every_pin_starts_masked() {
        let mut ioapic = IoApic::default();
        assert_eq!(get(&mut ioapic, 0x01), 0x0017_0020);
        for pin in 0..PINS as u8 {
            assert_eq!(get(&mut ioapic, 0x10 + 2 * pin), 0x1_0000, "pin {pin}");
        }
        assert_eq!(ioapic.timer_vector(), None);
    }

    #[test]
    fn unmasking_pin_2_routes_the_pit_to_its_vector() {
        let mut ioapic = IoApic::default();
        let what = set(&mut ioapic, 0x14, 0x22);
        assert_eq!(
            what,
            "redirection entry 2 (the PIT's IRQ 0) = 0x22: vector 0x22, fixed, unmasked"
        );
        assert_eq!(
            ioapic.timer_vector().map(|message| message.vector),
            Some(0x22)
        );
        set(&mut ioapic, 0x15, 0xff00_0000);
        assert_eq!(get(&mut ioapic, 0x15), 0xff00_0000);
        assert_eq!(
            ioapic.timer_vector(),
            Some(Message {
                vector: 0x22,
                logical: false,
                destination: 0xff
            }),
            "the high half is the destination"
        );
        // Lowest priority, logical destination 1 (how Xen programs it): still a message.
        set(&mut ioapic, 0x14, 0x9f0);
        set(&mut ioapic, 0x15, 0x0100_0000);
        assert_eq!(
            ioapic.timer_vector(),
            Some(Message {
                vector: 0xf0,
                logical: true,
                destination: 1
            })
        );
        // NMI delivery, or masked again: not the timer's interrupt.
        set(&mut ioapic, 0x14, 0x422);
        assert_eq!(ioapic.timer_vector(), None);
        set(&mut ioapic, 0x14, 0x1_0022);
        assert_eq!(ioapic.timer_vector(), None);
    }

    #[test]
    fn the_status_bits_and_the_version_are_read_only() {
        let mut ioapic = IoApic::default();
        set(&mut ioapic, 0x10, 0x5030); // delivery status and remote IRR set
        assert_eq!(get(&mut ioapic, 0x10), 0x30);
        set(&mut ioapic, 0x01, 0);
        assert_eq!(get(&mut ioapic, 0x01), VERSION);
        set(&mut ioapic, 0x00, 0x0300_0000);
        assert_eq!(
            get(&mut ioapic, 0x02),
            0x0300_0000,
            "the arbitration ID follows"
        );
    }
}
