//! The gdb channel: the machine's second serial port (COM2), polled.
//!
//! QEMU connects COM2 to a TCP socket on the host's loopback (`traplab gdb`); gdb talks to
//! that socket. The hypervisor never takes an interrupt for it: it looks for bytes when it
//! has control anyway — at every exit while the guest runs (the hypervisor's timer makes
//! sure there are exits), and in a loop while gdb holds the guest stopped. That is the
//! style gdbstub's state machine is made for: fed one byte at a time.

use gdbstub::conn::Connection;
use uart_16550::backend::PioBackend;
use uart_16550::{Config, Uart16550};

/// The PC's second serial port.
const COM2_PORT: u16 = 0x2f8;

pub struct Com2 {
    uart: Uart16550<PioBackend>,
}

impl Com2 {
    /// Set up COM2, or `None` when the machine has none.
    pub fn open() -> Option<Com2> {
        // SAFETY: COM2 is the PC's second serial port; only the gdb channel drives it (the
        // guests' serial port is emulated and never reaches it).
        let mut uart = unsafe { Uart16550::new_port(COM2_PORT) }.ok()?;
        uart.init(Config::default()).ok()?;
        Some(Com2 { uart })
    }

    /// A byte from gdb, if one has arrived.
    pub fn try_read(&mut self) -> Option<u8> {
        self.uart.try_receive_byte().ok()
    }
}

impl Connection for Com2 {
    type Error = &'static str;

    fn write(&mut self, byte: u8) -> Result<(), Self::Error> {
        // The UART takes a byte when its transmit register is free: a few microseconds.
        while self.uart.try_send_byte(byte).is_err() {
            core::hint::spin_loop();
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), Self::Error> {
        Ok(())
    }
}
