//! `segment-not-present`: #NP, from a segment and from a gate.
//!
//! 1. Loading DS with a selector whose descriptor has P = 0 raises #NP; the error code is
//!    the selector (AMD APM vol. 2, 8.4.1).
//! 2. `int 0x40` through an IDT gate with P = 0 raises #NP too; the error code names the
//!    gate: `0x40 * 8 + 2` (bit 1 = IDT). The hypervisor sees the INT (SWINT), reflects it,
//!    and then the #NP the delivery raised, with the INT in EXITINTINFO.
//! 3. The timer's interrupt 0x40 (`set_timer`) through the same gate: #NP with the same
//!    index and bit 0, EXT, set too: the event being delivered came from outside the
//!    program (AMD APM vol. 2, 8.4.1; Intel SDM vol. 3A, 6.13). Nothing of ours faulted, so the
//!    handler skips nothing; it stops the timer, or the next tick would fault again.
#![no_std]
#![no_main]

use core::sync::atomic::{AtomicBool, Ordering};
use traplab_guests::hypercall::set_timer;
use traplab_guests::traps::{TrapFrame, set_handler};
use traplab_guests::{BootInfo, guest_main, println, segments};

/// Both faulting instructions are two bytes: `mov ds, ax` (8e d8) and `int 0x40` (cd 40).
const LENGTH: u64 = 2;
/// A vector whose IDT gate is not present: the guest's IDT has gates for 0–0x2F only.
const GATELESS: u8 = 0x40;
/// EXT, bit 0 of a selector error code: the event being delivered came from outside.
const EXTERNAL: u64 = 1 << 0;
/// The #NP of the timer's interrupt came.
static INTERRUPT_FAULTED: AtomicBool = AtomicBool::new(false);

// EXERCISE segment-not-present.1: for the segment (not the gate), fix the cause and retry:
// set the P bit of the descriptor the error code names in the GDT (`sgdt`), and return to
// the MOV DS without skipping it. Then print
// `DS = 0x38: the handler made the segment present and the load was retried`.
fn segment_not_present(frame: &mut TrapFrame) {
    let code = frame.error_code;
    let table = if code & 2 != 0 { "IDT" } else { "GDT" };
    if code & EXTERNAL != 0 {
        println!(
            "#NP, error code {code:#x}: {table} entry {:#x} is not present, EXT set (an interrupt's); stopping the timer",
            code >> 3
        );
        set_timer(GATELESS, 0);
        INTERRUPT_FAULTED.store(true, Ordering::SeqCst);
        return;
    }
    println!(
        "#NP, error code {code:#x}: {table} entry {:#x} is not present; skipping",
        code >> 3
    );
    frame.rip += LENGTH;
}

fn main(_info: &BootInfo) -> i32 {
    set_handler(11, segment_not_present);
    segments::add_descriptor(segments::NOT_PRESENT_DATA);
    println!("loading DS with selector 0x38 (not present)");
    // SAFETY: the load faults and the handler skips it: DS stays as it was. Spelled out as
    // bytes (`8e d8`, mov ds, ax) so that it is surely the two bytes the handler skips.
    unsafe { core::arch::asm!(".byte 0x8e, 0xd8", in("ax") segments::ADDED) };
    println!("int 0x40 through a gate that is not present");
    // SAFETY: the delivery faults with #NP and the handler skips the INT.
    unsafe { core::arch::asm!("int 0x40") };
    println!("the timer's interrupt 0x40 through the same gate");
    set_timer(GATELESS, 1_000);
    // SAFETY: interrupts on while we wait: the one armed faults into the #NP handler, which
    // stops the timer. (No `nomem`: the handler writes the flag the loop reads.)
    unsafe { core::arch::asm!("sti", options(nostack)) };
    while !INTERRUPT_FAULTED.load(Ordering::SeqCst) {
        core::hint::spin_loop();
    }
    // SAFETY: interrupts off again.
    unsafe { core::arch::asm!("cli", options(nostack)) };
    println!("three #NP: a segment, a gate for INT 0x40, the same gate for the timer's interrupt");
    0
}

guest_main!(main);
