//! `long-halt` (test guest): waits in HLT for a distant timer, for gdb's Ctrl-C
//! (`tui/tests/gdb.rs`).
//!
//! It asks for interrupt 0x20 every 10 seconds, the longest period `set_timer` takes,
//! turns interrupts on and halts in `halt`: only that timer can wake it, and meanwhile the
//! hypervisor idles. gdb's Ctrl-C must stop it there at once, not at the tick. Exits with 0
//! once the tick came.
#![no_std]
#![no_main]

use core::sync::atomic::{AtomicBool, Ordering};
use traplab_abi::hypercall::TIMER_PERIOD_MAX_US;
use traplab_guests::hypercall::set_timer;
use traplab_guests::traps::{self, TrapFrame};
use traplab_guests::{BootInfo, guest_main, println};

const TIMER_VECTOR: u8 = 0x20;

static TICKED: AtomicBool = AtomicBool::new(false);

fn on_timer(_frame: &mut TrapFrame) {
    TICKED.store(true, Ordering::SeqCst);
}

/// Interrupts on, and wait for one: STI's shadow covers the HLT, so none comes between.
#[inline(never)]
fn halt() {
    // SAFETY: our IDT has a handler for the timer vector.
    unsafe { core::arch::asm!("sti", "hlt", "cli", options(nomem, nostack)) };
}

fn main(_info: &BootInfo) -> i32 {
    traps::set_handler(TIMER_VECTOR, on_timer);
    if set_timer(TIMER_VECTOR, TIMER_PERIOD_MAX_US) != 0 {
        return 1;
    }
    while !TICKED.load(Ordering::SeqCst) {
        halt();
    }
    set_timer(TIMER_VECTOR, 0);
    println!("the timer woke the HLT");
    0
}

guest_main!(main);
