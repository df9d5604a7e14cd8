//! `bad-no-trap-entry` (test guest): register a trap table without #UD, #GP or #DF, then
//! raise #UD. With no entry to bounce to, the hypervisor does what a CPU does without an IDT
//! gate: #GP, which has no entry either (#DF), which has none (triple fault): the domain ends.
#![no_std]
#![no_main]

use traplab_guests::{BootInfo, bounce, guest_main, println};

fn main(_info: &BootInfo) -> i32 {
    bounce::use_trap_table(&[14]);
    println!("a trap table with only #PF; now ud2");
    // SAFETY: deliberately undeliverable.
    unsafe { core::arch::asm!("ud2") };
    println!("still alive?");
    1
}

guest_main!(main);
