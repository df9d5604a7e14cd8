//! `cpuid-loop` (benchmark guest): 20,000 CPUIDs, each one exit, timed with the TSC.
//! `traplab bench` runs it with the trace on and off.
//!
//! The loop is four instructions, CPUID one of them, written out so that the same loop with
//! a NOP in the CPUID's place is the same four: timed too, it is the guest's own share of
//! each round, which the bench takes away to leave the trap's. (Under `-icount` it is
//! exactly 4 ticks a round: the TSC counts instructions.)
#![no_std]
#![no_main]

use core::arch::asm;
use core::arch::x86_64::_rdtsc;
use traplab_guests::{BootInfo, guest_main, println};

const EXITS: u64 = 20_000;

/// `times` rounds of `xor eax, eax; cpuid; dec; jnz`: CPUID leaf 0, one exit a round.
fn cpuid_rounds(times: u64) {
    // SAFETY: CPUID changes EAX, EBX, ECX and EDX, all declared or saved here (RBX is
    // LLVM's, so it is kept in another register around the loop); no memory is touched.
    unsafe {
        asm!(
            "mov {saved}, rbx",
            "2:",
            "xor eax, eax",
            "cpuid",
            "dec {rounds}",
            "jnz 2b",
            "mov rbx, {saved}",
            rounds = inout(reg) times => _,
            saved = out(reg) _,
            out("eax") _, out("ecx") _, out("edx") _,
            options(nostack, nomem),
        );
    }
}

/// The same rounds with a NOP where the CPUID is: no exit, the same four instructions.
fn nop_rounds(times: u64) {
    // SAFETY: changes only EAX and the counter; no memory is touched.
    unsafe {
        asm!(
            "2:",
            "xor eax, eax",
            "nop",
            "dec {rounds}",
            "jnz 2b",
            rounds = inout(reg) times => _,
            out("eax") _,
            options(nostack, nomem),
        );
    }
}

/// TSC ticks `rounds` takes for `EXITS` rounds.
fn timed(rounds: fn(u64)) -> u64 {
    // SAFETY: RDTSC is not intercepted and has no side effects.
    let start = unsafe { _rdtsc() };
    rounds(EXITS);
    // SAFETY: as above.
    unsafe { _rdtsc() - start }
}

fn main(_info: &BootInfo) -> i32 {
    let ticks = timed(cpuid_rounds);
    let own = timed(nop_rounds);
    println!(
        "{EXITS} CPUID exits in {ticks} TSC ticks: {} ticks per exit; the loop's own, its CPUID a NOP: {own} TSC ticks",
        ticks / EXITS
    );
    0
}

guest_main!(main);
