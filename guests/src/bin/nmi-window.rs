//! `nmi-window` (a test guest): an NMI asked for inside an NMI handler comes right after the
//! handler's IRET, as on a CPU, not at some later exit.
//!
//! A CPU holds a second NMI back until the first handler's IRET has run, then takes it at
//! once (AMD APM vol. 2, 8.2.2). The hypervisor injects NMIs itself, and SVM has no
//! NMI-window intercept: it single-steps the IRET to get an exit right after it
//! (`hv/src/exit/iret.rs`). Here the first handler asks for a second NMI and returns; the
//! code after `raise_event` reads how many NMIs came before it makes any other exit: 2 when
//! the second came right after the IRET. The domain exits with 0 then.
#![no_std]
#![no_main]

use core::sync::atomic::{AtomicU32, Ordering};
use traplab_guests::hypercall::raise_event;
use traplab_guests::traps::{TrapFrame, set_handler};
use traplab_guests::{BootInfo, guest_main, println};

static NMIS: AtomicU32 = AtomicU32::new(0);
/// What the nested `raise_event` returned (the handler does not print: a print is an exit).
static NESTED_RESULT: AtomicU32 = AtomicU32::new(u32::MAX);

fn nmi(_frame: &mut TrapFrame) {
    if NMIS.fetch_add(1, Ordering::SeqCst) == 0 {
        // Blocked until this handler's IRET: the call returns 0 and the NMI waits.
        NESTED_RESULT.store(raise_event(2, 0) as u32, Ordering::SeqCst);
    }
}

fn main(_info: &BootInfo) -> i32 {
    set_handler(2, nmi);
    let result = raise_event(2, 0);
    // No exit between the first handler's IRET and this load: only a step over that IRET
    // lets the second NMI in before it.
    let came = NMIS.load(Ordering::SeqCst);
    println!(
        "raise_event returned {result}; the handler's own raise_event returned {}",
        NESTED_RESULT.load(Ordering::SeqCst) as i32
    );
    println!(
        "NMIs taken by the time the first handler had returned: {came} ({})",
        if came == 2 {
            "the second right after the IRET, as on a CPU"
        } else {
            "NOT as a CPU takes it"
        }
    );
    if came == 2 && result == 0 { 0 } else { 1 }
}

guest_main!(main);
