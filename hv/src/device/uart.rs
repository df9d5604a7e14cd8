//! The guest's console: an emulated 16550 UART at COM1 (port 0x3f8).
//!
//! Only what a polling console driver needs: the transmit register collects bytes into
//! lines, the line status register always says "transmitter empty" (we are never busy),
//! the line control register remembers DLAB so that the divisor latch writes of an
//! initialising driver land somewhere harmless. Registers (PC16550D datasheet):
//!
//! | offset | DLAB = 0 write | DLAB = 0 read | DLAB = 1  |
//! |--------|----------------|---------------|-----------|
//! | 0      | THR: transmit  | RBR: 0 (no input) | divisor low  |
//! | 1      | IER (ignored)  | IER           | divisor high |
//! | 2      | FCR (ignored)  | IIR: 0x01 (no interrupt pending) |   |
//! | 3      | LCR            | LCR           |           |
//! | 4      | MCR (ignored)  | MCR           |           |
//! | 5      | —              | LSR: 0x60 (THRE, TEMT) |  |
//! | 6      | —              | MSR: 0xb0 (DCD, DSR, CTS) |  |
//! | 7      | SCR            | SCR           |           |

use alloc::string::String;
use alloc::vec::Vec;

/// The longest line we collect before passing it on without a newline.
const LINE_MAX: usize = 1024;

#[derive(Default)]
pub struct Uart {
    line: Vec<u8>,
    line_control: u8,
    interrupt_enable: u8,
    modem_control: u8,
    scratch: u8,
    divisor: u16,
}

impl Uart {
    /// A write of `value` to register `offset` (0–7). Returns a line when one is complete.
    pub fn write(&mut self, offset: u16, value: u8) -> Option<String> {
        let dlab = self.line_control & 0x80 != 0;
        match (offset, dlab) {
            (0, false) => return self.transmit(value),
            (0, true) => self.divisor = (self.divisor & 0xff00) | value as u16,
            (1, true) => self.divisor = (self.divisor & 0x00ff) | ((value as u16) << 8),
            (1, false) => self.interrupt_enable = value,
            (3, _) => self.line_control = value,
            (4, _) => self.modem_control = value,
            (7, _) => self.scratch = value,
            _ => {}
        }
        None
    }

    /// A read of register `offset` (0–7).
    pub fn read(&self, offset: u16) -> u8 {
        let dlab = self.line_control & 0x80 != 0;
        match (offset, dlab) {
            (0, true) => self.divisor as u8,
            (1, true) => (self.divisor >> 8) as u8,
            (0, false) => 0,
            (1, false) => self.interrupt_enable,
            (2, _) => 0x01,
            (3, _) => self.line_control,
            (4, _) => self.modem_control,
            (5, _) => 0x60,
            (6, _) => 0xb0,
            (7, _) => self.scratch,
            _ => 0xff,
        }
    }

    /// One byte to the console; a completed line comes back.
    pub fn transmit(&mut self, byte: u8) -> Option<String> {
        match byte {
            b'\n' => return Some(self.take_line()),
            b'\r' => {}
            _ => self.line.push(byte),
        }
        (self.line.len() >= LINE_MAX).then(|| self.take_line())
    }

    /// What is left without a newline (at the end of the domain).
    pub fn flush(&mut self) -> Option<String> {
        (!self.line.is_empty()).then(|| self.take_line())
    }

    fn take_line(&mut self) -> String {
        let line = String::from_utf8_lossy(&self.line).into_owned();
        self.line.clear();
        line
    }
}
