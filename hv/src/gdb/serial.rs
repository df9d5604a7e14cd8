//! The gdb channel: the machine's second serial port (COM2), polled.
//!
//! QEMU connects COM2 to a TCP socket on the host's loopback (`traplab gdb`); gdb talks to
//! that socket. The hypervisor never takes an interrupt for it: it looks for bytes whenever
//! it has control anyway — at every exit of every domain (the hypervisor's timer makes sure
//! there are exits), while it idles, while the host holds it stopped, and in a loop while
//! gdb holds the guest stopped. That is the style gdbstub's state machine is made for: fed
//! one byte at a time.
//!
//! The port is set up once ([`init`]); after that a [`Com2`] is only a handle on it, so the
//! debugger reads through one and each gdbstub session writes through its own. Nothing
//! gdb sent may be lost on the way: QEMU passes bytes to the UART as soon as gdb connects,
//! which may be before the hypervisor looks (the usual driver set-up — the `uart_16550`
//! crate's `init` among them — empties the receive FIFO and discards "stale" bytes; here
//! they are gdb's first packet).
//!
//! How fast bytes come: QEMU moves at most 14 bytes (the FIFO's trigger level) from gdb's
//! socket into the UART per turn of its main loop — some 14 KB/s measured on a loaded
//! machine. Plenty for gdb's packets; a flood of megabytes takes minutes to cross.

use gdbstub::conn::Connection;
use traplab_hv::gdb::wire::Sent;
use uart_16550::Uart16550;
use uart_16550::backend::PioBackend;
use x86_64::instructions::port::Port;

/// The PC's second serial port.
const COM2_PORT: u16 = 0x2f8;

// The 16550's registers, as offsets from its port (PC16550D datasheet, table II).
const DATA: u16 = 0;
const IER: u16 = 1;
const FCR: u16 = 2;
const LCR: u16 = 3;
const MCR: u16 = 4;
const LSR: u16 = 5;
/// LCR: divisor latch access; 8 data bits, no parity, one stop bit.
const LCR_DLAB: u8 = 0x80;
const LCR_8N1: u8 = 0x03;
/// FCR: FIFOs on, an interrupt (we take none) at 14 bytes.
const FCR_FIFO_14: u8 = 0xc1;
/// MCR: DTR and RTS (we are here), OUT2.
const MCR_READY: u8 = 0x0b;
/// LSR: a received byte is waiting.
const LSR_DATA_READY: u8 = 0x01;

pub struct Com2 {
    uart: Uart16550<PioBackend>,
    /// What this handle last sent, for gdb's `-` (`wire.rs`).
    sent: Sent,
    /// A byte that came before the set-up, read first.
    early: Option<u8>,
    /// Writes go nowhere: a session is told again what gdb already told the last one, and
    /// gdb, which has its answer, must not get a second (`mod.rs`, `refuse_packet`).
    pub muted: bool,
}

/// Set up COM2 (115200 8N1, FIFOs on, no interrupts) and give the handle to read it through;
/// `None` when the machine has none.
pub fn init() -> Option<Com2> {
    let mut com2 = Com2::handle()?;
    if !com2.uart.check_present() {
        return None;
    }
    let register = |offset: u16| Port::<u8>::new(COM2_PORT + offset);
    // SAFETY: ports 0x2f8–0x2ff are COM2's registers, driven by the gdb channel alone (see
    // `handle`); the writes follow the 16550's set-up: the divisor behind DLAB, the line
    // format, the FIFOs, the modem lines.
    unsafe {
        // Behind DLAB, offsets 0 and 1 are the divisor's low and high byte: 1 is 115200
        // baud (QEMU ignores the rate).
        register(LCR).write(LCR_DLAB);
        register(DATA).write(1);
        register(IER).write(0);
        register(LCR).write(LCR_8N1);
        register(IER).write(0);
        // Until the FIFOs are on, the UART holds one byte; turning them on empties it. (One
        // that comes in the instant between is lost: its packet then fails its checksum or
        // is cut off, and gdb sends it again, `wire.rs`.)
        if register(LSR).read() & LSR_DATA_READY != 0 {
            com2.early = Some(register(DATA).read());
        }
        register(FCR).write(FCR_FIFO_14);
        register(MCR).write(MCR_READY);
    }
    Some(com2)
}

impl Com2 {
    /// A handle on COM2 ([`init`] sets it up).
    pub fn handle() -> Option<Com2> {
        // SAFETY: COM2 is the PC's second serial port; only the gdb channel drives it (the
        // guests' serial port is emulated and never reaches it), from the one CPU, so two
        // handles never touch it at the same time.
        let uart = unsafe { Uart16550::new_port(COM2_PORT) }.ok()?;
        Some(Com2 {
            uart,
            sent: Sent::new(),
            early: None,
            muted: false,
        })
    }

    /// A byte from gdb, if one has arrived.
    pub fn try_read(&mut self) -> Option<u8> {
        self.early
            .take()
            .or_else(|| self.uart.try_receive_byte().ok())
    }

    /// Send the last packet again (gdb answered it with `-`).
    pub fn resend(&mut self) {
        let Some(last) = self.sent.last() else {
            return;
        };
        for &byte in last {
            while self.uart.try_send_byte(byte).is_err() {
                core::hint::spin_loop();
            }
        }
    }
}

impl Connection for Com2 {
    type Error = &'static str;

    fn write(&mut self, byte: u8) -> Result<(), Self::Error> {
        if self.muted {
            return Ok(());
        }
        self.sent.note(byte);
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
