//! The guest's console: an emulated 16550 UART at COM1 (port 0x3f8).
//!
//! Registers (National Semiconductor PC16550D datasheet, "Register Description"):
//!
//! | offset | DLAB = 0 write | DLAB = 0 read | DLAB = 1  |
//! |--------|----------------|---------------|-----------|
//! | 0      | THR: transmit  | RBR: the next received byte (0 when none) | divisor low  |
//! | 1      | IER: which interrupts | IER    | divisor high |
//! | 2      | FCR: FIFOs on, clear them (bit 0 set) | IIR: the pending interrupt of highest priority | |
//! | 3      | LCR            | LCR           |           |
//! | 4      | MCR: DTR, RTS, OUT1, OUT2, LOOP | MCR |     |
//! | 5      | —              | LSR: DR, OE, THRE, TEMT |  |
//! | 6      | —              | MSR: the modem lines      |  |
//! | 7      | SCR            | SCR           |           |
//!
//! What is emulated and why:
//! - **Transmit** is instant: a byte written to THR is on the console at once, so LSR always
//!   says THRE and TEMT (the transmitter is empty) and never "busy". Bytes collect into lines.
//!   A line without its newline, after which the guest halts to wait for input, is shown as
//!   it is (a shell's prompt: [`Uart::waits_after_prompt`]), again if it grows before its
//!   end (the echo of keys typed), and whole at its end.
//! - **Receive**: bytes from the host (`traplab run` forwards keys) wait in the receiver FIFO
//!   (16 bytes, or a 1-byte holding register while the FIFOs are off, FCR bit 0); LSR.DR says
//!   one is there and reading RBR takes it. Bytes the FIFO has no room for wait on the host's
//!   side ([`Uart::receive`]) and move in as the guest reads: input is never dropped. The
//!   host is a terminal with hardware flow control: it sends only while the guest holds
//!   MCR.RTS ("request to send", its ready-to-receive line) set.
//!   Turning the FIFOs on or off empties the receiver; FCR bit 1 empties it only in a write
//!   that keeps bit 0 set (with bit 0 clear the other FCR bits are not programmed). The
//!   host's bytes a clear takes out wait again, first in line (as if a terminal with flow
//!   control had not sent them yet): a driver clears its FIFOs while it probes the UART.
//! - **Loopback** (MCR bit 4): the datasheet's self-test. The transmitter feeds the receiver
//!   (nothing reaches the console), and the modem inputs follow the modem outputs: CTS = RTS,
//!   DSR = DTR, RI = OUT1, DCD = OUT2. Drivers probe for a UART this way (Xen's `ns16550`
//!   driver writes MCR = 0x1a and expects MSR bits 7:4 = 0x9).
//! - **Interrupts** (IER, IIR): receiver line status (an overrun), received data, THR empty,
//!   in that priority. THR empty becomes pending when THR empties (at once, after each write)
//!   or when IER enables it; reading IIR while it is the one shown, or writing THR, ends it.
//!   The interrupt reaches the PIC's IRQ 4 only while MCR.OUT2 is set: on a PC, OUT2 gates
//!   the UART's interrupt onto the ISA bus ([`Uart::interrupt_line`]).
//!
//! Not emulated:
//! - **The receiver FIFO's trigger level** (FCR bits 7:6: 1, 4, 8 or 14 bytes, PC16550D): the
//!   received-data interrupt is pending while any byte waits, as with a trigger of 1 byte,
//!   whatever FCR says. So there is no **character timeout** interrupt (IIR 0x0C: bytes
//!   below the trigger level left in the FIFO for four character times) either: the
//!   received-data interrupt hands those bytes over already. Drivers lose nothing: Linux's
//!   8250 driver (which sets a trigger of 8) and `guests/` read while LSR.DR says a byte is
//!   there, at either IIR. A trigger level without the timeout would leave console input
//!   shorter than the trigger unread; the timeout needs character times, which this UART,
//!   transmitting and receiving at once, does not have.
//! - **The modem-status deltas**: MSR bits 3:0 (DCTS, DDSR, TERI, DDCD) read 0 and the
//!   modem-status interrupt (IER bit 3, IIR 0x00) is never pending. Outside loopback the
//!   lines never change; in loopback they follow MCR's low four bits (above), and the
//!   PC16550D would latch each change in MSR bits 3:0 and raise the modem-status interrupt
//!   from them ("the interrupts' sources are now the lower four bits of the Modem Control
//!   Register"), which this model does not.
//! - The divisor and LCR are kept and change nothing: no baud rate, no framing, no errors.

use alloc::collections::VecDeque;
use alloc::string::String;
use alloc::vec::Vec;

/// The longest line we collect before passing it on without a newline.
const LINE_MAX: usize = 1024;
/// The receiver FIFO of a 16550 holds 16 bytes; with the FIFOs off, RBR holds one.
const FIFO_SIZE: usize = 16;

/// IER bits.
mod ier {
    pub const RECEIVED_DATA: u8 = 1 << 0;
    pub const TRANSMITTER_EMPTY: u8 = 1 << 1;
    pub const LINE_STATUS: u8 = 1 << 2;
    pub const MODEM_STATUS: u8 = 1 << 3;
}

/// IIR values: the interrupt identification, bit 0 clear when one is pending.
mod iir {
    pub const NONE: u8 = 0x01;
    pub const LINE_STATUS: u8 = 0x06;
    pub const RECEIVED_DATA: u8 = 0x04;
    pub const TRANSMITTER_EMPTY: u8 = 0x02;
    /// Bits 7:6 set: the FIFOs are on.
    pub const FIFOS_ENABLED: u8 = 0xc0;
}

/// LSR bits.
mod lsr {
    pub const DATA_READY: u8 = 1 << 0;
    pub const OVERRUN: u8 = 1 << 1;
    pub const THR_EMPTY: u8 = 1 << 5;
    pub const TRANSMITTER_EMPTY: u8 = 1 << 6;
}

/// MCR bits.
mod mcr {
    pub const DTR: u8 = 1 << 0;
    pub const RTS: u8 = 1 << 1;
    pub const OUT1: u8 = 1 << 2;
    pub const OUT2: u8 = 1 << 3;
    pub const LOOP: u8 = 1 << 4;
}

/// MSR bits 7:4: DCD, RI, DSR, CTS.
mod msr {
    pub const CTS: u8 = 1 << 4;
    pub const DSR: u8 = 1 << 5;
    pub const RI: u8 = 1 << 6;
    pub const DCD: u8 = 1 << 7;
}

#[derive(Default)]
pub struct Uart {
    line: Vec<u8>,
    /// How much of `line` the trace has shown already as a prompt ([`Uart::prompt`]).
    prompt_shown: usize,
    /// The receiver FIFO (or holding register): what RBR gives next.
    fifo: VecDeque<u8>,
    /// Bytes from the host that do not fit in the FIFO yet.
    waiting: VecDeque<u8>,
    /// A byte came in loopback while the receiver was full (LSR.OE, until LSR is read).
    overrun: bool,
    /// The THR-empty interrupt is pending.
    transmitter_empty_pending: bool,
    fifos_enabled: bool,
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
            (0, false) => return self.transmit_register(value),
            (0, true) => self.divisor = (self.divisor & 0xff00) | value as u16,
            (1, true) => self.divisor = (self.divisor & 0x00ff) | ((value as u16) << 8),
            (1, false) => {
                let enabling = value & !self.interrupt_enable;
                self.interrupt_enable = value & 0x0f;
                // Enabling the THR-empty interrupt while THR is empty (always) makes it
                // pending at once: drivers count on this to start sending.
                if enabling & ier::TRANSMITTER_EMPTY != 0 {
                    self.transmitter_empty_pending = true;
                }
            }
            (2, _) => self.fifo_control(value),
            (3, _) => self.line_control = value,
            (4, _) => {
                self.modem_control = value & 0x1f;
                self.refill();
            }
            (7, _) => self.scratch = value,
            _ => {}
        }
        None
    }

    /// A read of register `offset` (0–7). Reading RBR takes a byte, reading LSR clears
    /// the overrun, reading IIR ends the THR-empty interrupt it shows.
    pub fn read(&mut self, offset: u16) -> u8 {
        let dlab = self.line_control & 0x80 != 0;
        match (offset, dlab) {
            (0, true) => self.divisor as u8,
            (1, true) => (self.divisor >> 8) as u8,
            (0, false) => {
                let byte = self.fifo.pop_front().unwrap_or(0);
                self.refill();
                byte
            }
            (1, false) => self.interrupt_enable,
            (2, _) => {
                let identity = self.interrupt_identity();
                if identity == iir::TRANSMITTER_EMPTY {
                    self.transmitter_empty_pending = false;
                }
                let fifos = if self.fifos_enabled {
                    iir::FIFOS_ENABLED
                } else {
                    0
                };
                identity | fifos
            }
            (3, _) => self.line_control,
            (4, _) => self.modem_control,
            (5, _) => {
                let status = self.line_status();
                self.overrun = false;
                status
            }
            (6, _) => self.modem_status(),
            (7, _) => self.scratch,
            _ => 0xff,
        }
    }

    /// Bytes from the host's keyboard for the guest to read.
    pub fn receive(&mut self, bytes: &[u8]) {
        self.waiting.extend(bytes);
        self.refill();
    }

    /// Is the UART's interrupt asserted on the bus (IRQ 4 on COM1)? An interrupt is
    /// pending and MCR.OUT2 lets it out, as a PC wires it.
    pub fn interrupt_line(&self) -> bool {
        self.modem_control & mcr::OUT2 != 0
            && self.modem_control & mcr::LOOP == 0
            && self.interrupt_identity() != iir::NONE
    }

    /// Does a received byte interrupt the CPU: the received-data interrupt enabled, OUT2
    /// set, not in loopback? (A guest halted with this on waits for a key.)
    pub fn listening(&self) -> bool {
        self.interrupt_enable & ier::RECEIVED_DATA != 0
            && self.modem_control & (mcr::OUT2 | mcr::LOOP) == mcr::OUT2
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

    /// Does the guest wait for input after an unfinished line the trace has not shown yet
    /// (a shell's prompt, `/ # `)? Its driver has nothing more to send (the THR-empty
    /// interrupt off: Linux's 8250 turns it off when its transmit buffer runs dry, and a
    /// driver in the middle of a long line keeps it on), the received-data interrupt is on
    /// and nothing waits to be read. The halted guest's HLT asks (`exit/hlt.rs`): lines
    /// are otherwise passed on at their newline, and a prompt has none until a line is typed.
    pub fn waits_after_prompt(&self) -> bool {
        self.line.len() > self.prompt_shown
            && self.interrupt_enable & ier::TRANSMITTER_EMPTY == 0
            && self.listening()
            && self.fifo.is_empty()
    }

    /// The unfinished line, to show as a prompt: it stays, and comes again whole at its
    /// newline ([`Uart::waits_after_prompt`]).
    pub fn prompt(&mut self) -> String {
        self.prompt_shown = self.line.len();
        String::from_utf8_lossy(&self.line).into_owned()
    }

    /// A byte written to THR: out on the console, or to the receiver in loopback. Either
    /// way THR is empty again at once, and says so by interrupt if IER asks.
    fn transmit_register(&mut self, byte: u8) -> Option<String> {
        self.transmitter_empty_pending = true;
        if self.modem_control & mcr::LOOP != 0 {
            if self.fifo.len() < self.capacity() {
                self.fifo.push_back(byte);
            } else {
                // An overrun (PC16550D, LSR bit 1). Without FIFOs the new character goes
                // into RBR, "destroying the previous character"; with them, the FIFO is
                // kept and the new one, in the shift register, is lost.
                self.overrun = true;
                if !self.fifos_enabled {
                    self.fifo.clear();
                    self.fifo.push_back(byte);
                }
            }
            return None;
        }
        self.transmit(byte)
    }

    fn fifo_control(&mut self, value: u8) {
        let enable = value & 1 != 0;
        if enable != self.fifos_enabled {
            // Turning the FIFOs on or off clears them (PC16550D, FCR bit 0: "Resetting FCR0
            // will clear all bytes in both FIFOs"; turned on, they start empty too, as
            // QEMU's serial.c clears them at either change of bit 0).
            self.clear_receiver();
            self.fifos_enabled = enable;
        }
        // Bit 1 clears the receiver FIFO (bit 2 the transmitter's, empty here), but only in
        // a write with bit 0 set: "This bit must be a 1 when other FCR bits are written to
        // or they will not be programmed" (PC16550D, FCR bit 0). This follows the
        // datasheet, not QEMU: QEMU's serial.c clears on bit 1 whatever bit 0 says.
        if enable && value & 0b10 != 0 {
            self.clear_receiver();
        }
        self.refill();
    }

    /// Empty the receiver. What the loopback put there is gone; the host's bytes go back to
    /// wait, first in line: they stand for typed-ahead input that a terminal with flow
    /// control would not have sent yet, and a driver resets its FIFOs while it probes the
    /// UART (Linux's 8250 writes FCR = 1, 7, 0 twice before it reads a byte), which would
    /// otherwise drop every byte `--input` gave.
    fn clear_receiver(&mut self) {
        if self.modem_control & mcr::LOOP == 0 {
            while let Some(byte) = self.fifo.pop_back() {
                self.waiting.push_front(byte);
            }
        }
        self.fifo.clear();
    }

    /// How many bytes the receiver holds.
    fn capacity(&self) -> usize {
        if self.fifos_enabled { FIFO_SIZE } else { 1 }
    }

    /// Move the host's waiting bytes into the receiver while there is room, once the guest
    /// asks to be sent to (MCR.RTS: the host is a terminal with hardware flow control, and
    /// RTS is the guest's "ready to receive"); not in loopback, where the receiver listens to
    /// the transmitter only. A driver that sets up its UART (Linux's 8250 clears the FIFOs
    /// and reads RBR to empty it before it raises RTS and DTR at open) then takes none of the
    /// host's bytes for stale ones.
    fn refill(&mut self) {
        if self.modem_control & (mcr::LOOP | mcr::RTS) != mcr::RTS {
            return;
        }
        while self.fifo.len() < self.capacity() {
            match self.waiting.pop_front() {
                Some(byte) => self.fifo.push_back(byte),
                None => break,
            }
        }
    }

    fn line_status(&self) -> u8 {
        let mut status = lsr::THR_EMPTY | lsr::TRANSMITTER_EMPTY;
        if !self.fifo.is_empty() {
            status |= lsr::DATA_READY;
        }
        if self.overrun {
            status |= lsr::OVERRUN;
        }
        status
    }

    fn modem_status(&self) -> u8 {
        let control = self.modem_control;
        if control & mcr::LOOP == 0 {
            // Nothing is attached that would drop a line: carrier, data set ready and
            // clear to send are on.
            return msr::DCD | msr::DSR | msr::CTS;
        }
        let follows = [
            (mcr::RTS, msr::CTS),
            (mcr::DTR, msr::DSR),
            (mcr::OUT1, msr::RI),
            (mcr::OUT2, msr::DCD),
        ];
        follows
            .iter()
            .filter(|(output, _)| control & output != 0)
            .fold(0, |status, (_, input)| status | input)
    }

    /// The pending interrupt of highest priority that IER enables (IIR bits 3:0).
    fn interrupt_identity(&self) -> u8 {
        let enabled = self.interrupt_enable;
        if enabled & ier::LINE_STATUS != 0 && self.overrun {
            iir::LINE_STATUS
        } else if enabled & ier::RECEIVED_DATA != 0 && !self.fifo.is_empty() {
            iir::RECEIVED_DATA
        } else if enabled & ier::TRANSMITTER_EMPTY != 0 && self.transmitter_empty_pending {
            iir::TRANSMITTER_EMPTY
        } else {
            // Never pending: the MSR deltas it would report are not modelled (the header).
            let _ = ier::MODEM_STATUS;
            iir::NONE
        }
    }

    fn take_line(&mut self) -> String {
        let line = String::from_utf8_lossy(&self.line).into_owned();
        self.line.clear();
        self.prompt_shown = 0;
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
    fn a_prompt_is_shown_once_when_the_driver_is_done_sending_and_listens() {
        let mut uart = Uart::default();
        uart.write(4, mcr::OUT2 | mcr::RTS | mcr::DTR);
        // Sending, as Linux's 8250 does: THR-empty interrupt on until its buffer is dry.
        uart.write(1, ier::RECEIVED_DATA | ier::TRANSMITTER_EMPTY);
        assert_eq!(send(&mut uart, b"/ # "), [] as [String; 0]);
        assert!(!uart.waits_after_prompt(), "still sending");
        uart.write(1, ier::RECEIVED_DATA);
        assert!(uart.waits_after_prompt());
        assert_eq!(uart.prompt(), "/ # ");
        assert!(!uart.waits_after_prompt(), "shown once");
        // A key waiting to be read: the guest is not waiting for input.
        uart.receive(b"l");
        send(&mut uart, b"l");
        assert!(!uart.waits_after_prompt(), "a byte waits in the receiver");
        assert_eq!(uart.read(0), b'l');
        assert!(uart.waits_after_prompt(), "the echo made the line longer");
        assert_eq!(uart.prompt(), "/ # l");
        // The line, once ended, comes whole.
        assert_eq!(send(&mut uart, b"s\n"), ["/ # ls"]);
        assert!(!uart.waits_after_prompt());
        // Without the received-data interrupt nothing waits for a key.
        uart.write(1, 0);
        send(&mut uart, b"$ ");
        assert!(!uart.waits_after_prompt());
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
        let mut uart = Uart::default();
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

    #[test]
    fn in_loopback_the_modem_inputs_follow_the_outputs_and_bytes_come_back() {
        // Xen's ns16550 probe: MCR = LOOP | OUT2 | RTS (0x1a), then MSR bits 7:4 must be
        // DCD | CTS (0x9), else "no UART here".
        let mut uart = Uart::default();
        uart.write(4, 0x1a);
        assert_eq!(uart.read(6) & 0xf0, 0x90);
        uart.write(4, 0x15); // LOOP | OUT1 | DTR
        assert_eq!(uart.read(6) & 0xf0, 0x60, "RI | DSR");
        assert_eq!(uart.write(0, b'\n'), None, "not on the console");
        assert_eq!(uart.read(5) & 1, 1, "LSR.DR: the byte came back");
        assert_eq!(uart.read(0), b'\n');
        assert_eq!(uart.read(5), 0x60, "received, nothing left");
        assert_eq!(uart.write(0, b'x'), None);
        assert_eq!(uart.write(0, b'y'), None, "the holding register is full");
        assert_eq!(uart.read(5), 0x63, "DR and OE");
        assert_eq!(uart.read(5), 0x61, "reading LSR cleared OE");
        assert_eq!(
            uart.read(0),
            b'y',
            "without FIFOs the new byte destroys the old"
        );
        uart.write(4, 0x0b);
        assert_eq!(uart.read(6), 0xb0, "out of loopback: the lines are on");
        assert_eq!(uart.flush(), None);
    }

    #[test]
    fn received_bytes_wait_in_the_fifo_and_beyond_it_none_is_lost() {
        let mut uart = Uart::default();
        uart.write(2, 0x07); // FIFOs on, both cleared
        let text: Vec<u8> = (0..40).map(|n| b'a' + n % 26).collect();
        uart.receive(&text);
        assert_eq!(
            uart.fifo.len(),
            0,
            "the guest has not asked to be sent to (RTS)"
        );
        uart.write(4, mcr::RTS);
        assert_eq!(uart.fifo.len(), FIFO_SIZE);
        let mut read = Vec::new();
        while uart.read(5) & 1 != 0 {
            read.push(uart.read(0));
        }
        assert_eq!(read, text, "every byte, in order");
        assert_eq!(uart.read(5) & 3, 0, "no overrun: the host's bytes waited");
    }

    #[test]
    fn interrupts_come_in_priority_and_out2_lets_them_reach_irq_4() {
        let mut uart = Uart::default();
        uart.write(1, ier::RECEIVED_DATA | ier::TRANSMITTER_EMPTY);
        assert!(!uart.interrupt_line(), "OUT2 clear: nothing on the bus");
        uart.write(4, mcr::OUT2 | mcr::DTR | mcr::RTS);
        assert!(
            uart.interrupt_line(),
            "THR empty, pending since IER enabled it"
        );
        assert_eq!(uart.read(2), iir::TRANSMITTER_EMPTY);
        assert!(!uart.interrupt_line(), "reading IIR ended it");
        uart.receive(b"k");
        assert_eq!(uart.read(2), iir::RECEIVED_DATA);
        assert!(uart.interrupt_line(), "data waits until RBR is read");
        assert_eq!(uart.read(0), b'k');
        assert_eq!(uart.read(2), iir::NONE);
        uart.write(0, b'!');
        assert_eq!(
            uart.read(2),
            iir::TRANSMITTER_EMPTY,
            "sent, THR empty again"
        );
        uart.write(2, 1);
        assert_eq!(uart.read(2), iir::NONE | iir::FIFOS_ENABLED);
    }

    #[test]
    fn not_modelled_a_trigger_level_a_timeout_or_the_modem_status_deltas() {
        // FCR 0xc1: FIFOs on, a trigger level of 14. One byte still interrupts at once, as
        // received data (0x04, with the FIFO bits): no timeout (0x0C) is needed to hand it
        // over, and none is ever reported.
        let mut uart = Uart::default();
        uart.write(1, ier::RECEIVED_DATA | ier::MODEM_STATUS);
        uart.write(4, mcr::OUT2 | mcr::RTS);
        uart.write(2, 0xc1);
        uart.receive(b"k");
        assert_eq!(uart.read(2), iir::RECEIVED_DATA | iir::FIFOS_ENABLED);
        assert!(uart.interrupt_line());
        assert_eq!(uart.read(0), b'k');
        // In loopback the lines follow MCR, but no change is latched in MSR bits 3:0 and
        // the modem-status interrupt stays off, IER bit 3 set or not.
        uart.write(4, mcr::LOOP | mcr::RTS);
        uart.write(4, mcr::LOOP | mcr::DTR);
        assert_eq!(uart.read(6), msr::DSR, "DSR = DTR; no DCTS, no DDSR");
        assert_eq!(uart.read(2), iir::NONE | iir::FIFOS_ENABLED);
    }

    #[test]
    fn fcr_s_clear_bits_do_nothing_unless_bit_0_is_written_set() {
        // PC16550D, FCR bit 0: "This bit must be a 1 when other FCR bits are written to or
        // they will not be programmed." With the FIFOs off, FCR = 0x02 leaves the byte in
        // RBR (QEMU's serial.c would clear it; the datasheet does not). The bytes here come
        // back through the loopback: a clear drops them (the host's wait again, below).
        let mut uart = Uart::default();
        uart.write(4, mcr::LOOP);
        uart.write(0, b'a');
        uart.write(2, 0x02);
        assert_eq!(
            uart.read(5) & lsr::DATA_READY,
            lsr::DATA_READY,
            "still there"
        );
        assert_eq!(uart.read(0), b'a');
        // With bit 0 set, bit 1 clears the receiver FIFO.
        uart.write(2, 0x01);
        uart.write(0, b'b');
        uart.write(0, b'c');
        uart.write(2, 0x03);
        assert_eq!(uart.read(5) & lsr::DATA_READY, 0, "cleared");
        // Turning the FIFOs off (bit 0 from 1 to 0) empties them, whatever the other bits.
        uart.write(0, b'd');
        uart.write(2, 0x00);
        assert_eq!(
            uart.read(5) & lsr::DATA_READY,
            0,
            "emptied by FCR0 going to 0"
        );
    }

    #[test]
    fn typed_ahead_input_survives_a_driver_s_fifo_resets() {
        // Linux's 8250 driver, probing and starting the port, writes FCR = 1, 7, 0 twice
        // before it reads a byte: the host's bytes (`--input`) must all still come, in
        // order.
        let mut uart = Uart::default();
        let typed: Vec<u8> = (b'a'..=b'z').chain(b'A'..=b'Z').collect();
        uart.receive(&typed);
        // Raised early, as a driver may: the bytes move in, and the resets do not lose them.
        uart.write(4, mcr::RTS | mcr::DTR);
        for fcr in [0x01, 0x07, 0x00, 0x01, 0x07, 0x00, 0xc1] {
            uart.write(2, fcr);
        }
        let mut read = Vec::new();
        while uart.read(5) & lsr::DATA_READY != 0 {
            read.push(uart.read(0));
        }
        assert_eq!(read, typed);
    }
}
