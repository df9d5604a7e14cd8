//! `hello`: print a line through the console UART, then halt.
//!
//! Each byte is one `out dx, al` to port 0x3f8, and each `out` is one IOIO exit that the
//! hypervisor emulates. HLT with interrupts off ends the domain.
#![no_std]
#![no_main]

use traplab_guests::{BootInfo, guest_main, halt, println};

fn main(_info: &BootInfo) -> i32 {
    // EXERCISE hello.1: print this line with one `rep outsb` to the console port (RSI =
    // the bytes, RCX = how many, DX = `traplab_abi::boot::CONSOLE_PORT`) instead of one
    // `out` per byte, and count the exits in the trace before and after.
    println!("Hello from a traplab guest!");
    halt()
}

guest_main!(main);
