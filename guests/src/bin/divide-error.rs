//! `divide-error`: #DE, twice: a division by zero, and a quotient too large for its register
//! (INT_MIN / -1, whose true result, 2^31, does not fit in a signed 32-bit register).
//!
//! #DE is a fault: RIP points at the DIV/IDIV, so the handler must skip it (2 bytes here),
//! or the division would run again and fault again.
#![no_std]
#![no_main]

use traplab_guests::traps::{TrapFrame, set_handler};
use traplab_guests::{BootInfo, guest_main, println};

/// `div ecx` and `idiv ecx` are `f7 f1` and `f7 f9`: two bytes each.
const DIVIDE_LENGTH: u64 = 2;

// EXERCISE divide-error.1: fix the cause and retry instead of skipping: set the divisor
// (RCX in the trap frame) to 1 and return to the division itself, which then runs again and
// works. `main` must then tell the compiler that the asm blocks change ECX, and print
// `quotients after retrying: Q1 and Q2`.
fn divide_error(frame: &mut TrapFrame) {
    println!(
        "#DE at {:#x}: skipping the {DIVIDE_LENGTH}-byte division",
        frame.rip
    );
    frame.rip += DIVIDE_LENGTH;
}

fn main(_info: &BootInfo) -> i32 {
    set_handler(0, divide_error);
    println!("7 / 0 with DIV:");
    // SAFETY: the #DE handler skips the division; the registers it changes are declared.
    unsafe {
        core::arch::asm!("div ecx", inout("eax") 7u32 => _, inout("edx") 0u32 => _, in("ecx") 0u32)
    };
    println!("-2147483648 / -1 with IDIV:");
    // SAFETY: as above; EDX:EAX = INT_MIN sign-extended.
    unsafe {
        core::arch::asm!("idiv ecx", inout("eax") 0x8000_0000u32 => _, inout("edx") 0xffff_ffffu32 => _, in("ecx") -1i32)
    };
    println!("both divisions faulted and were skipped");
    0
}

guest_main!(main);
