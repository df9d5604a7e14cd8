//! The hypervisor's own log, on the machine's first serial port (COM1).
//!
//! This is the hypervisor talking, not a guest: guest console output travels in the trace
//! as `console` events (and is copied here only when no host reads the trace).
//! The host shows this log with `traplab trace --verbose`, and always when QEMU fails.

use core::fmt::{self, Write};
use spin::Mutex;
use uart_16550::backend::PioBackend;
use uart_16550::{Config, Uart16550Tty};

static COM1: Mutex<Option<Uart16550Tty<PioBackend>>> = Mutex::new(None);

/// The machine's COM1 port.
const COM1_PORT: u16 = 0x3f8;

pub fn init() {
    // SAFETY: COM1 is the PC's first serial port and nothing else in the hypervisor
    // drives it (the guests' COM1 is emulated, they never reach this device).
    let uart = unsafe { Uart16550Tty::new_port(COM1_PORT, Config::default()) };
    *COM1.lock() = uart.ok();
}

/// Write to the log; used by [`log!`](crate::log).
pub fn write_fmt(args: fmt::Arguments) {
    if let Some(uart) = COM1.lock().as_mut() {
        let _ = uart.write_fmt(args);
    }
}

/// Write to the log even while the lock is held (from a fault handler that interrupted
/// a log write): a second, lock-free writer on the same port.
pub fn write_fmt_emergency(args: fmt::Arguments) {
    // SAFETY: as in `init`; we may interleave bytes with an interrupted writer, which is
    // better than deadlocking while reporting a fault.
    if let Ok(mut uart) = unsafe { Uart16550Tty::new_port(COM1_PORT, Config::default()) } {
        let _ = uart.write_fmt(args);
    }
}

/// `log!("…", …)`: one line on the hypervisor log.
#[macro_export]
macro_rules! log {
    ($($arg:tt)*) => {
        $crate::console::write_fmt(format_args!("hv: {}\n", format_args!($($arg)*)))
    };
}
