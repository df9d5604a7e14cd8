//! `timer-irq`: a timer interrupt from the hypervisor, with interrupts on and with them off.
//!
//! We ask for interrupt 0x20 every 10 ms (hypercall `set_timer`) and handle it through our
//! IDT like any interrupt. Then:
//!
//! 1. `sti; hlt` until three interrupts came: each HLT exits, the hypervisor waits for our timer and
//!    injects the interrupt (EVENTINJ); our handler runs and IRET returns after the HLT.
//! 2. With interrupts off (`cli`) we spin for ten timer periods without one exit of our
//!    own. The hypervisor's timer still interrupts us (INTR exits) and sees our timer
//!    due, but cannot deliver: it sets V_IRQ and waits. No tick reaches the handler.
//! 3. `sti`: after the instruction that follows it, the CPU exits (VINTR) and the
//!    hypervisor injects the interrupt that waited: one, however many periods passed (the
//!    later ones merged into it). On a slow machine the next period may already be due
//!    when the handler returns: then a second one follows at once, as on real hardware.
#![no_std]
#![no_main]

use core::sync::atomic::{AtomicU32, Ordering};
use traplab_abi::boot::cpuid::TIMING_LEAF;
use traplab_guests::hypercall::set_timer;
use traplab_guests::traps::{self, TrapFrame};
use traplab_guests::{BootInfo, guest_main, println};

const TIMER_VECTOR: u8 = 0x20;
const PERIOD_US: u64 = 10_000;

static TICKS: AtomicU32 = AtomicU32::new(0);

fn on_timer(_frame: &mut TrapFrame) {
    TICKS.fetch_add(1, Ordering::SeqCst);
}

fn ticks() -> u32 {
    TICKS.load(Ordering::SeqCst)
}

fn rdtsc() -> u64 {
    // SAFETY: RDTSC only reads the time stamp counter.
    unsafe { core::arch::x86_64::_rdtsc() }
}

fn main(_info: &BootInfo) -> i32 {
    traps::set_handler(TIMER_VECTOR, on_timer);
    let refused = set_timer(5, PERIOD_US);
    println!("set_timer(5, {PERIOD_US}) = {refused}: vector 5 is an exception's");
    let armed = set_timer(TIMER_VECTOR, PERIOD_US);
    println!("set_timer({TIMER_VECTOR:#x}, {PERIOD_US}) = {armed}");

    // 1. Halt with interrupts on until three interrupts came. STI's one-instruction shadow makes
    //    `sti; hlt` safe: no interrupt can come between them and be missed. (No `nomem` on
    //    an asm block that lets interrupts in: the handler that runs inside it writes memory,
    //    `TICKS`, which the compiler must then read again, not keep from before the block.)
    while ticks() < 3 {
        // SAFETY: our IDT has a handler for the timer vector.
        unsafe { core::arch::asm!("sti", "hlt", "cli", options(nostack)) };
    }
    // Print with interrupts on, then close them: a tick that comes due while the line goes
    // out is delivered at once, so the spin below starts with nothing pending however slow
    // the console is (on a loaded host a line can take longer than a period).
    // SAFETY: as above.
    unsafe { core::arch::asm!("sti", options(nostack)) };
    println!("halted until 3 timer interrupts came");
    // SAFETY: interrupts off again, for the spin.
    unsafe { core::arch::asm!("cli", options(nostack)) };
    let after_halts = ticks();

    // 2. Interrupts off, spinning for ten periods. A period in TSC ticks comes from the
    //    TSC's rate the hypervisor gives (CPUID 0x4000_0010, in kHz): measuring it from the
    //    interrupts themselves fails on a loaded host, where ticks that waited arrive
    //    together.
    let tsc_khz = core::arch::x86_64::__cpuid(TIMING_LEAF).eax as u64;
    let period = tsc_khz * PERIOD_US / 1000;
    let spin_start = rdtsc();
    while rdtsc() - spin_start < 10 * period {
        core::hint::spin_loop();
    }
    let while_masked = ticks() - after_halts;
    println!("10 periods with interrupts off: {while_masked} timer interrupts");

    // 3. Open the window for one instruction.
    // SAFETY: as above.
    unsafe { core::arch::asm!("sti", "nop", "cli", options(nostack)) };
    let after_sti = ticks() - after_halts;
    println!("after sti: the interrupt that waited arrived ({after_sti} since the halts)");

    // EXERCISE timer-irq.1: 4. spin for three periods with interrupts on: the ticks come at
    // the hypervisor's INTR exits and are injected at once. Print
    // `3 periods spinning with interrupts on: N timer interrupts`.
    let stopped = set_timer(TIMER_VECTOR, 0);
    let as_expected = refused == traplab_abi::hypercall::error::EINVAL
        && armed == 0
        && while_masked == 0
        && after_sti >= 1
        && stopped == 0;
    if as_expected { 0 } else { 1 }
}

guest_main!(main);
