//! `cpuid-loop` (benchmark guest): 20,000 CPUIDs, each one exit, timed with the TSC.
//! `traplab bench` runs it with the trace on and off.
#![no_std]
#![no_main]

use core::arch::x86_64::{__cpuid, _rdtsc};
use traplab_guests::{BootInfo, guest_main, println};

const EXITS: u64 = 20_000;

fn main(_info: &BootInfo) -> i32 {
    // SAFETY: RDTSC is not intercepted and has no side effects.
    let start = unsafe { _rdtsc() };
    for _ in 0..EXITS {
        core::hint::black_box(__cpuid(0));
    }
    // SAFETY: as above.
    let ticks = unsafe { _rdtsc() } - start;
    println!(
        "{EXITS} CPUID exits in {ticks} TSC ticks: {} ticks per exit",
        ticks / EXITS
    );
    0
}

guest_main!(main);
