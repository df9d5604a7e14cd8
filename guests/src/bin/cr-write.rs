//! `cr-write` (setting `intercept-cr`): the hypervisor checks writes to CR0, CR3, CR4, CR8.
//!
//! A guest's control registers decide how its CPU works (paging, caching, protection). The
//! hypervisor watches writes to them: it emulates a good value and answers a bad one with
//! the #GP a CPU would raise. CR0 is intercepted *selectively*: a write that only changes
//! TS or MP (a lazy-FPU kernel's CLTS, thousands a second) does not exit at all. Some bad
//! values QEMU's TCG would take where a CPU refuses them: the hypervisor's #GP is then the
//! only thing between the guest and a CPU that does not behave as the manual says.
#![no_std]
#![no_main]

use core::sync::atomic::{AtomicU64, Ordering};
use traplab_guests::traps::{TrapFrame, set_handler};
use traplab_guests::{BootInfo, guest_main, println};
use x86_64::registers::control::{Cr0, Cr3, Cr4};

static REFUSED: AtomicU64 = AtomicU64::new(0);
/// The length of the MOV being tried, for the #GP handler to skip it.
static MOV_LENGTH: AtomicU64 = AtomicU64::new(0);

fn general_protection(frame: &mut TrapFrame) {
    println!(
        "#GP at {:#x}: the value was refused; skipping the MOV",
        frame.rip
    );
    REFUSED.fetch_add(1, Ordering::SeqCst);
    frame.rip += MOV_LENGTH.load(Ordering::SeqCst);
}

/// `mov crN, rax` with `value`, spelled with a fixed encoding so the handler can skip it:
/// `0f 22 /r` is 3 bytes (64-bit operands without REX.W); CR8 needs REX.R (`44`), 4.
macro_rules! write_cr {
    ($cr:literal, $value:expr) => {
        MOV_LENGTH.store(if $cr == "cr8" { 4 } else { 3 }, Ordering::SeqCst);
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
    println!("CR0 with PG but not PE (QEMU's TCG alone would take it)");
    write_cr!("cr0", (Cr0::read_raw() | (1 << 31)) & !1);
    println!("CR0 with NW but not CD (QEMU's TCG alone would take it)");
    write_cr!("cr0", (Cr0::read_raw() | (1 << 29)) & !(1 << 30));
    // A change of bits 63:32 alone: a CPU's selective intercept takes it (it changes more than
    // TS and MP); QEMU's TCG checks only bits 31:0, so the MOV runs and drops the bit.
    println!("CR0 with reserved bit 32 and nothing else changed");
    let before = REFUSED.load(Ordering::SeqCst);
    write_cr!("cr0", Cr0::read_raw() | (1 << 32));
    let quirk = REFUSED.load(Ordering::SeqCst) == before && Cr0::read_raw() >> 32 == 0;
    if quirk {
        println!(
            "no exit, no #GP: QEMU's TCG dropped the bit (CR0 = {:#x}); a CPU raises #GP(0)",
            Cr0::read_raw()
        );
    }
    println!("CR4 with reserved bit 30");
    write_cr!("cr4", Cr4::read_raw() | (1 << 30));
    println!("CR4 without PAE, in long mode (QEMU's TCG alone would take it)");
    write_cr!("cr4", Cr4::read_raw() & !(1 << 5));
    println!("CR3 with reserved bit 62");
    write_cr!("cr3", frame.start_address().as_u64() | (1 << 62));
    println!("CR8 with reserved bit 4 (QEMU's TCG alone would keep bits 3:0)");
    write_cr!("cr8", 1u64 << 4);
    // EXERCISE cr-write.1: try CR4 with FSGSBASE (bit 16), print `CR4 with FSGSBASE (bit 16)`
    // first, and expect one refusal more.
    let refused = REFUSED.load(Ordering::SeqCst);
    println!(
        "{refused} invalid writes refused with #GP; CR0 is now {:#x}",
        Cr0::read_raw()
    );
    if refused + quirk as u64 == 7 { 0 } else { 1 }
}

guest_main!(main);
