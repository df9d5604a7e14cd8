//! The guest's console: bytes to the UART at port 0x3f8, which the hypervisor emulates.
//!
//! No polling of the line status register: the emulated UART is never busy, so each byte
//! is exactly one `out` instruction and one IOIO exit: easy to count in a trace.
//!
//! [`hprintln!`] prints a line with one `console_write` hypercall instead: one exit per
//! line, for the labs whose traces are about something else (the domains side by side).
//!
//! At CPL 3 `out` is privileged (RFLAGS.IOPL is 0, and the TSS has no I/O permission
//! bitmap): it would raise #GP before the hypervisor ever saw it. User code prints through
//! the `console_write` hypercall instead, one exit per piece of text.

use core::fmt::{self, Write};
use traplab_abi::boot::CONSOLE_PORT;
use x86_64::instructions::port::Port;
use x86_64::instructions::segmentation::Segment;

pub struct Console;

impl Write for Console {
    fn write_str(&mut self, text: &str) -> fmt::Result {
        if x86_64::instructions::segmentation::CS::get_reg().rpl() != x86_64::PrivilegeLevel::Ring0
        {
            crate::hypercall::console_write(text.as_bytes());
            return Ok(());
        }
        for byte in text.bytes() {
            // SAFETY: port 0x3f8 is the console UART the hypervisor gives every guest.
            unsafe { Port::<u8>::new(CONSOLE_PORT).write(byte) };
        }
        Ok(())
    }
}

#[doc(hidden)]
pub fn print(args: fmt::Arguments) {
    let _ = Console.write_fmt(args);
}

/// Print to the console UART.
#[macro_export]
macro_rules! print {
    ($($arg:tt)*) => { $crate::console::print(format_args!($($arg)*)) };
}

/// Print a line to the console UART.
#[macro_export]
macro_rules! println {
    () => { $crate::print!("\n") };
    ($($arg:tt)*) => { $crate::console::print(format_args!("{}\n", format_args!($($arg)*))) };
}

#[doc(hidden)]
pub fn print_line(args: fmt::Arguments) {
    // Longer lines are cut at 256 bytes.
    let mut line = crate::text::Text::<256>::from_args(args);
    let _ = line.write_str("\n");
    crate::hypercall::console_write(line.as_bytes());
}

/// Print a line with one `console_write` hypercall: one exit, however long the line.
#[macro_export]
macro_rules! hprintln {
    ($($arg:tt)*) => { $crate::console::print_line(format_args!($($arg)*)) };
}
