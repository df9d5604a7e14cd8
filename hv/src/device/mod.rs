//! The devices the hypervisor emulates for a guest, and the bus that routes an access to
//! one: a port (`IN`/`OUT`, exit IOIO) or a guest-physical address the nested page tables
//! leave unmapped (MMIO, exit NPF).
//!
//! | where                      | device                          | file            |
//! |----------------------------|---------------------------------|-----------------|
//! | ports 0x3f8–0x3ff (COM1)   | the console: a 16550 UART       | `uart.rs`       |
//! | MMIO 0xFEB0_0000, 4 KiB    | the lab's device                | `lab_device.rs` |
//! | ports 0x1f0–0x1f7, 0x3f6   | the disk controller, when the lab has a disk: the real one, never emulated; its owner reaches it without an exit, everyone else as an empty port | `ata.rs` |
//! | port 0xf4                  | QEMU's isa-debug-exit: a write ends the domain with that status | `debug_exit.rs` |
//! | any other port             | nothing: reads all ones, writes vanish, as on an empty ISA bus | |
//!
//! Each access is done when a decision is applied (`apply.rs`): the device answers, and
//! says in words what it did for the trace.

pub mod ata;
pub mod debug_exit;
pub mod lab_device;
pub mod uart;

use alloc::format;
use alloc::string::String;
use lab_device::LabDevice;
use traplab_abi::boot::CONSOLE_PORT;
use traplab_abi::x86::operand_mask;
use uart::Uart;

/// One domain's devices.
#[derive(Default)]
pub struct Devices {
    /// The console UART (COM1).
    pub console: Uart,
    pub lab_device: LabDevice,
    /// Who owns the machine's disk controller (the same in every domain): it is not
    /// emulated, and reaches this bus only as a refused access (`ata.rs`).
    pub disk: ata::Assignment,
}

/// What a write did: its description, and a console line it completed.
pub struct Written {
    pub what: String,
    pub console: Option<String>,
}

impl Devices {
    /// The device at `port`, in words.
    pub fn port_name(&self, port: u16) -> &'static str {
        match port {
            0x3f8..=0x3ff => "console UART",
            debug_exit::PORT => "isa-debug-exit",
            port if self.disk.claims(port) => "ATA disk controller",
            _ => "no device",
        }
    }

    /// Is there a device at guest-physical `gpa`?
    pub fn claims(gpa: u64) -> bool {
        lab_device::contains(gpa)
    }

    /// IN of `size` bytes: the value. Nothing answers at the disk controller's ports
    /// either: an access that exits there is refused (`ata.rs`).
    pub fn port_read(&mut self, port: u16, size: u8) -> u32 {
        match port {
            0x3f8..=0x3ff if size == 1 => self.console.read(port - CONSOLE_PORT) as u32,
            _ => operand_mask(size) as u32,
        }
    }

    /// OUT of `size` bytes: a console line it completed, if any. Dropped anywhere but at
    /// the console, the disk controller's ports included.
    pub fn port_write(&mut self, port: u16, size: u8, value: u32) -> Option<String> {
        match (port, size) {
            (0x3f8..=0x3ff, 1) => self.console.write(port - CONSOLE_PORT, value as u8),
            _ => None,
        }
    }

    /// How the trace says an IN went.
    pub fn describe_in(&self, port: u16, value: u32) -> String {
        format!(
            "IN {value:#x} from port {port:#x} ({})",
            self.port_name(port)
        )
    }

    /// A read of `width` bytes at guest-physical `gpa`: the value, and what happened.
    pub fn mmio_read(&mut self, gpa: u64, width: u8) -> (u64, String) {
        let (value, what) = self.lab_device.read(gpa - lab_device::BASE, width);
        (value, format!("lab device: {what}"))
    }

    /// A write of `width` bytes at guest-physical `gpa`.
    pub fn mmio_write(&mut self, gpa: u64, width: u8, value: u64) -> Written {
        let (what, console) = self.lab_device.write(gpa - lab_device::BASE, width, value);
        Written {
            what: format!("lab device: {what}"),
            console,
        }
    }
}
