//! `breakpoint`: INT3, the debugger's breakpoint instruction (one byte, 0xCC).
//!
//! #BP is a trap: the saved RIP is the instruction *after* the INT3, so the handler just
//! returns. Under QEMU's TCG the INT3 does not raise an intercepted #BP: it exits as a
//! software interrupt (SWINT, exit code 0x75), and the hypervisor reflects it as one.
#![no_std]
#![no_main]

use traplab_guests::traps::{TrapFrame, set_handler};
use traplab_guests::{BootInfo, guest_main, println};

fn breakpoint(frame: &mut TrapFrame) {
    println!("#BP: the INT3 is behind us, returning to {:#x}", frame.rip);
}

fn main(_info: &BootInfo) -> i32 {
    set_handler(3, breakpoint);
    println!("executing INT3");
    // SAFETY: INT3 traps to our handler, which returns after it.
    unsafe { core::arch::asm!("int3") };
    // EXERCISE breakpoint.1: execute INT 3, the two-byte form (`cd 03`: write it with
    // `.byte`, assemblers turn `int 3` into `int3`), then print `back after INT 3`. Then make
    // the hypervisor (hv/src/exit/software_interrupt.rs) tell the two forms apart.
    println!("back after INT3");
    0
}

guest_main!(main);
