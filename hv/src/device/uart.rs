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

#[cfg(test)]
mod tests {
    use super::*;

    fn send(uart: &mut Uart, text: &[u8]) -> Vec<String> {
        text.iter()
            .filter_map(|&byte| uart.write(0, byte))
            .collect()
    }

    #[test]
    fn bytes_to_the_transmit_register_collect_into_lines_and_cr_is_dropped() {
        let mut uart = Uart::default();
        assert_eq!(send(&mut uart, b"one\r\ntwo\nthr"), ["one", "two"]);
        assert_eq!(uart.flush().as_deref(), Some("thr"), "the rest, at the end");
        assert_eq!(uart.flush(), None);
    }

    #[test]
    fn a_line_without_a_newline_is_passed_on_at_1024_bytes() {
        let mut uart = Uart::default();
        let lines = send(&mut uart, &[b'x'; 1025]);
        assert_eq!(lines.len(), 1);
        assert_eq!(lines[0].len(), LINE_MAX);
        assert_eq!(uart.flush().as_deref(), Some("x"));
    }

    #[test]
    fn the_status_registers_say_ready_and_nothing_pending() {
        // PC16550D: LSR 0x60 (THRE, TEMT), IIR 0x01 (no interrupt), MSR 0xb0 (DCD, DSR, CTS).
        let uart = Uart::default();
        assert_eq!(
            [uart.read(5), uart.read(2), uart.read(6), uart.read(0)],
            [0x60, 0x01, 0xb0, 0]
        );
    }

    #[test]
    fn with_dlab_set_offsets_0_and_1_are_the_divisor_latch_not_the_transmitter() {
        // A driver sets the baud rate: LCR bit 7 (DLAB), divisor 12 (9600 baud), LCR 8N1.
        let mut uart = Uart::default();
        assert_eq!(uart.write(3, 0x80), None);
        assert_eq!(uart.write(0, 12), None, "no byte transmitted");
        assert_eq!(uart.write(1, 0), None);
        assert_eq!((uart.read(0), uart.read(1)), (12, 0));
        uart.write(3, 0x03);
        assert_eq!(uart.read(3), 0x03);
        assert_eq!(uart.flush(), None, "the divisor never reached the console");
    }

    #[test]
    fn the_scratch_register_keeps_what_was_written() {
        let mut uart = Uart::default();
        uart.write(7, 0x5a);
        assert_eq!(uart.read(7), 0x5a);
    }
}
