//! `hello`: print a line through the console UART, then halt.
//!
//! Each byte is one `out dx, al` to port 0x3f8, and each `out` is one IOIO exit that the
//! hypervisor emulates. HLT with interrupts off ends the domain.
#![no_std]
#![no_main]

use traplab_guests::{BootInfo, guest_main, halt, println};

fn main(_info: &BootInfo) -> i32 {
    println!("Hello from a traplab guest!");
    halt()
}

guest_main!(main);
