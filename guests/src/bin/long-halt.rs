//! `long-halt` (test guest): waits in HLT, for gdb's Ctrl-C while the hypervisor idles
//! (`tui/tests/gdb.rs`).
//!
//! It asks for interrupt 0x20 every 10 seconds, the longest period `set_timer` takes, turns
//! interrupts on and halts in `halt`, again after every tick, for ever: between ticks
//! nothing wakes it, and the hypervisor idles. gdb's Ctrl-C must stop it there; `kill`
//! ends it.
#![no_std]
#![no_main]

use traplab_abi::hypercall::TIMER_PERIOD_MAX_US;
use traplab_guests::hypercall::set_timer;
use traplab_guests::traps::{self, TrapFrame};
use traplab_guests::{BootInfo, guest_main};

const TIMER_VECTOR: u8 = 0x20;

fn on_timer(_frame: &mut TrapFrame) {}

/// Interrupts on, and wait for one: STI's shadow covers the HLT, so none comes between.
#[inline(never)]
fn halt() {
    // SAFETY: our IDT has a handler for the timer vector.
    unsafe { core::arch::asm!("sti", "hlt", "cli", options(nostack)) };
}

fn main(_info: &BootInfo) -> i32 {
    traps::set_handler(TIMER_VECTOR, on_timer);
    if set_timer(TIMER_VECTOR, TIMER_PERIOD_MAX_US) != 0 {
        return 1;
    }
    loop {
        halt();
    }
}

guest_main!(main);
