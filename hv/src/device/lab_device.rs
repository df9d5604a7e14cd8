//! The lab's MMIO device: a few registers at a guest-physical address that is not RAM.
//!
//! The nested page tables map nothing at [`BASE`], so every access exits (NPF) and the
//! hypervisor emulates it (`exit/npf/mmio.rs`): the way an MMIO device — a network card's
//! registers, an APIC — is emulated. Registers (little-endian; any access of 1, 2, 4 or 8
//! bytes inside one register works):
//!
//! | offset | size | name       | read                         | write                      |
//! |--------|------|------------|------------------------------|----------------------------|
//! | 0x00   | 4    | `ID`       | 0x70617274 ("trap")           | ignored                    |
//! | 0x04   | 4    | `VERSION`  | 1                            | ignored                    |
//! | 0x08   | 8    | `SCRATCH`  | what was last written         | kept                       |
//! | 0x10   | 4    | `COUNTER`  | 1, 2, 3, …: one more per read | ignored                    |
//! | 0x18   | 4    | `DOORBELL` | 0                            | the value goes to the console ("doorbell N") |
//!
//! Anything else in the window reads as all ones and ignores writes, like a bus with
//! nothing on it.

use alloc::format;
use alloc::string::String;
use traplab_abi::x86::operand_mask;

/// Where the device is, guest-physical (`traplab_abi::boot::LAB_DEVICE`).
pub const BASE: u64 = traplab_abi::boot::LAB_DEVICE;
pub const SIZE: u64 = 0x1000;

pub fn contains(gpa: u64) -> bool {
    (BASE..BASE + SIZE).contains(&gpa)
}

/// The device's state, one per domain.
#[derive(Default)]
pub struct LabDevice {
    scratch: u64,
    counter: u32,
}

// EXERCISE mmio.1: add a register RINGS at 0x20 (4 bytes, read-only) that counts how often
// DOORBELL was written.
/// The register at an offset: its start, size and name.
fn register(offset: u64) -> Option<(u64, u64, &'static str)> {
    [
        (0x00, 4, "ID"),
        (0x04, 4, "VERSION"),
        (0x08, 8, "SCRATCH"),
        (0x10, 4, "COUNTER"),
        (0x18, 4, "DOORBELL"),
    ]
    .into_iter()
    .find(|&(start, size, _)| (start..start + size).contains(&offset))
}

impl LabDevice {
    /// A read of `width` bytes at `offset`: the value, and what happened in words.
    pub fn read(&mut self, offset: u64, width: u8) -> (u64, String) {
        let Some((start, _, name)) = register(offset) else {
            return (
                u64::MAX,
                format!("offset {offset:#x}: no register, reads all ones"),
            );
        };
        let whole = match name {
            "ID" => 0x7061_7274,
            "VERSION" => 1,
            "SCRATCH" => self.scratch,
            "COUNTER" => {
                self.counter += 1;
                self.counter as u64
            }
            _ => 0,
        };
        let value = (whole >> (8 * (offset - start))) & operand_mask(width);
        (value, format!("read {name} = {value:#x}"))
    }

    /// A write of `width` bytes at `offset`. Returns what happened, and a console line when
    /// the doorbell rang.
    pub fn write(&mut self, offset: u64, width: u8, value: u64) -> (String, Option<String>) {
        let Some((start, _, name)) = register(offset) else {
            return (
                format!("offset {offset:#x}: no register, write ignored"),
                None,
            );
        };
        let value = value & operand_mask(width);
        match name {
            "SCRATCH" => {
                let shift = 8 * (offset - start);
                let mask = operand_mask(width) << shift;
                self.scratch = (self.scratch & !mask) | (value << shift);
                (format!("SCRATCH = {:#x}", self.scratch), None)
            }
            "DOORBELL" => (
                format!("DOORBELL rung with {value}"),
                Some(format!("doorbell {value}")),
            ),
            _ => (format!("write to {name} ignored (read-only)"), None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_reads_trap_and_version_reads_1() {
        let mut device = LabDevice::default();
        assert_eq!(
            device.read(0x00, 4),
            (0x7061_7274, "read ID = 0x70617274".into())
        );
        assert_eq!(device.read(0x04, 4).0, 1);
    }

    #[test]
    fn a_narrower_read_inside_a_register_gets_those_bytes() {
        // Little-endian: byte 1 of ID 0x70617274 is 0x72 ('r').
        let mut device = LabDevice::default();
        assert_eq!(device.read(0x01, 1).0, 0x72);
        assert_eq!(device.read(0x02, 2).0, 0x7061);
    }

    #[test]
    fn scratch_keeps_what_was_written_byte_by_byte() {
        let mut device = LabDevice::default();
        device.write(0x08, 8, 0x1122_3344_5566_7788);
        let (what, console) = device.write(0x0a, 1, 0xab);
        assert_eq!(what, "SCRATCH = 0x1122334455ab7788");
        assert_eq!(console, None);
        assert_eq!(device.read(0x08, 8).0, 0x1122_3344_55ab_7788);
    }

    #[test]
    fn counter_counts_its_reads() {
        let mut device = LabDevice::default();
        let reads: Vec<u64> = (0..3).map(|_| device.read(0x10, 4).0).collect();
        assert_eq!(reads, [1, 2, 3]);
    }

    #[test]
    fn the_doorbell_sends_its_value_to_the_console_and_reads_0() {
        let mut device = LabDevice::default();
        let (what, console) = device.write(0x18, 4, 42);
        assert_eq!(what, "DOORBELL rung with 42");
        assert_eq!(console.as_deref(), Some("doorbell 42"));
        assert_eq!(device.read(0x18, 4).0, 0);
    }

    #[test]
    fn read_only_registers_ignore_writes() {
        let mut device = LabDevice::default();
        let (what, console) = device.write(0x00, 4, 0);
        assert_eq!(what, "write to ID ignored (read-only)");
        assert_eq!(console, None);
        assert_eq!(device.read(0x00, 4).0, 0x7061_7274);
    }

    #[test]
    fn an_offset_without_a_register_reads_all_ones_and_ignores_writes() {
        let mut device = LabDevice::default();
        assert_eq!(device.read(0x800, 4).0, u64::MAX);
        assert_eq!(
            device.write(0x800, 4, 1).0,
            "offset 0x800: no register, write ignored"
        );
    }

    #[test]
    fn the_window_is_one_page_at_base() {
        assert!(contains(BASE) && contains(BASE + SIZE - 1));
        assert!(!contains(BASE - 1) && !contains(BASE + SIZE));
    }
}
