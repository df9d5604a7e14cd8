//! `timer-spin` (test guest): a timer interrupt waits while gdb steps
//! (`tui/tests/gdb.rs`).
//!
//! It asks for interrupt 0x20 every millisecond (hypercall `set_timer`, which speeds the
//! hypervisor's timer up to 1000 Hz) and spins with interrupts off for 30 ms, about 30 of
//! the hypervisor's ticks: at those ticks the hypervisor finds the guest's timer due, and the interrupt waits for the guest to turn interrupts
//! on (V_IRQ, `domain/interrupts.rs`). Then `open_window`: `sti`, three NOPs, an OUT to
//! port 0x80 (POST codes: no device here; an exit the hypervisor completes) and a NOP. Run
//! alone, the interrupt comes right after the first NOP (STI's shadow covers one
//! instruction). gdb, stopped at the `sti`, steps through them instead, one at a time: the
//! interrupt waits until gdb lets the guest go. Then the guest spins with interrupts on
//! until 20 ticks came, and exits with 0.
#![no_std]
#![no_main]

use core::sync::atomic::{AtomicU32, Ordering};
use traplab_abi::boot::cpuid::TIMING_LEAF;
use traplab_guests::hypercall::set_timer;
use traplab_guests::traps::{self, TrapFrame};
use traplab_guests::{BootInfo, guest_main, println};

const TIMER_VECTOR: u8 = 0x20;
const PERIOD_US: u64 = 1_000;
/// Long enough for the hypervisor's ticks (1000 Hz for this timer, `hv/src/timer.rs`; 100 Hz
/// at the least) to find the guest's timer due several times while interrupts are off.
const MASKED_US: u64 = 30_000;
const TICKS_WANTED: u32 = 20;

static TICKS: AtomicU32 = AtomicU32::new(0);

fn on_timer(_frame: &mut TrapFrame) {
    TICKS.fetch_add(1, Ordering::SeqCst);
}

fn rdtsc() -> u64 {
    // SAFETY: RDTSC only reads the time stamp counter.
    unsafe { core::arch::x86_64::_rdtsc() }
}

/// Interrupts on, then the instructions gdb steps through (each a byte but the OUT's two).
#[inline(never)]
fn open_window() {
    // SAFETY: our IDT has a handler for the timer vector; NOPs change nothing, and nothing
    // listens at port 0x80 (whatever AL holds goes there).
    unsafe {
        core::arch::asm!(
            "sti",
            "nop",
            "nop",
            "nop",
            "out 0x80, al",
            "nop",
            options(nostack),
        )
    };
}

fn main(_info: &BootInfo) -> i32 {
    traps::set_handler(TIMER_VECTOR, on_timer);
    if set_timer(TIMER_VECTOR, PERIOD_US) != 0 {
        return 1;
    }
    // Interrupts are off (a guest starts with RFLAGS.IF = 0): spin until a tick waits.
    let tsc_khz = core::arch::x86_64::__cpuid(TIMING_LEAF).eax as u64;
    let start = rdtsc();
    while rdtsc() - start < tsc_khz * MASKED_US / 1000 {
        core::hint::spin_loop();
    }
    open_window();
    while TICKS.load(Ordering::SeqCst) < TICKS_WANTED {
        core::hint::spin_loop();
    }
    set_timer(TIMER_VECTOR, 0);
    println!("{TICKS_WANTED} timer interrupts");
    0
}

guest_main!(main);
