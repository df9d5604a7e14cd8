//! `cr-write` (setting `intercept-cr`): the hypervisor intercepts writes to CR0, CR3, CR4.
//!
//! A guest's control registers decide how its CPU works (paging, caching, protection). The
//! hypervisor watches writes to them: it emulates a good value and answers a bad one with
//! the #GP a CPU would raise. CR0 is intercepted *selectively*: a write that only changes
//! TS or MP (a lazy-FPU kernel's CLTS, thousands a second) does not exit at all.
#![no_std]
#![no_main]

use core::sync::atomic::{AtomicU64, Ordering};
use traplab_guests::traps::{TrapFrame, set_handler};
use traplab_guests::{BootInfo, guest_main, println};
use x86_64::registers::control::{Cr0, Cr3, Cr4};

/// `mov crN, rax` is 3 bytes (0f 22 /r with REX.W).
const MOV_CR_LENGTH: u64 = 3;
static REFUSED: AtomicU64 = AtomicU64::new(0);

fn general_protection(frame: &mut TrapFrame) {
    println!(
        "#GP at {:#x}: the value was refused; skipping the MOV",
        frame.rip
    );
    REFUSED.fetch_add(1, Ordering::SeqCst);
    frame.rip += MOV_CR_LENGTH;
}

/// `mov crN, rax` with `value`, spelled with a fixed encoding so the handler can skip it.
macro_rules! write_cr {
    ($cr:literal, $value:expr) => {
        // SAFETY: either the value is valid (the hypervisor writes it) or the write faults
        // and the handler skips it; no other state changes.
        unsafe { core::arch::asm!(concat!("mov ", $cr, ", rax"), in("rax") $value, options(nostack)) }
    };
}

fn main(_info: &BootInfo) -> i32 {
    set_handler(13, general_protection);
    let cr0 = Cr0::read_raw();
    println!("CR0 = {cr0:#x}; setting AM (bit 18): a change beyond TS and MP, so it exits");
    write_cr!("cr0", cr0 | (1 << 18));
    println!("setting TS (bit 3) alone: the selective intercept lets it through, no exit");
    write_cr!("cr0", Cr0::read_raw() | (1 << 3));
    // SAFETY: CLTS clears TS again (TS only: no exit either).
    unsafe { core::arch::asm!("clts") };
    let cr4 = Cr4::read_raw();
    println!("CR4 = {cr4:#x}; setting PGE (bit 7): the hypervisor flushes our TLB");
    write_cr!("cr4", cr4 | (1 << 7));
    let (frame, _) = Cr3::read_raw();
    println!("reloading CR3 with the same tables");
    write_cr!("cr3", frame.start_address().as_u64());

    println!("invalid values:");
    println!("CR0 with PG but not PE");
    write_cr!("cr0", (Cr0::read_raw() | (1 << 31)) & !1);
    println!("CR0 with NW but not CD");
    write_cr!("cr0", (Cr0::read_raw() | (1 << 29)) & !(1 << 30));
    println!("CR4 with reserved bit 30");
    write_cr!("cr4", Cr4::read_raw() | (1 << 30));
    println!("CR3 with reserved bit 62");
    write_cr!("cr3", frame.start_address().as_u64() | (1 << 62));
    // EXERCISE cr-write.1: try CR4 with FSGSBASE (bit 16), print `CR4 with FSGSBASE (bit 16)`
    // first, and expect five refusals.
    let refused = REFUSED.load(Ordering::SeqCst);
    println!(
        "{refused} invalid writes refused with #GP; CR0 is now {:#x}",
        Cr0::read_raw()
    );
    if refused == 4 { 0 } else { 1 }
}

guest_main!(main);
