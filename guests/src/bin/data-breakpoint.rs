//! `data-breakpoint` (a test guest): a data breakpoint on memory the hypervisor writes in
//! the CPU's place.
//!
//! DR0 watches one byte of a buffer for writes (DR7: L0, R/W0 = 01b, LEN0 = 00b). A CPU checks
//! its data breakpoints at every access it makes, and raises #DB as a trap after it, DR6.B0
//! set (AMD APM vol. 2, 13.1.1.5); for a REP INS, after the iteration that wrote the byte,
//! the instruction left between two iterations (Intel SDM vol. 3B, 17.3.1.2). A `rep insb`
//! exits, and the hypervisor moves the bytes itself: the CPU never sees those writes, so the
//! hypervisor must check the breakpoint, or the #DB never comes. A plain MOV to the byte,
//! which the CPU does, is the reference. Exit 0 when both #DB came where a CPU puts them.
#![no_std]
#![no_main]

use core::sync::atomic::{AtomicU64, Ordering};
use traplab_guests::traps::{TrapFrame, set_handler};
use traplab_guests::{BootInfo, guest_main, println};
use x86_64::registers::debug::Dr6;

const DR6_B0: u64 = 1 << 0;
/// The watched byte: BUFFER[WATCHED].
const WATCHED: usize = 2;
/// L0 (bit 0), R/W0 = 01b (bits 17:16, writes), LEN0 = 00b (bits 19:18, one byte).
const DR7_WATCH_WRITES_OF_ONE_BYTE: u64 = 1 | 0b01 << 16;

static mut BUFFER: [u8; 8] = [0; 8];
/// The last #DB: its RIP, its DR6, RCX (the elements left) and RDI (the next one).
static AT: AtomicU64 = AtomicU64::new(0);
static DR6: AtomicU64 = AtomicU64::new(0);
static LEFT: AtomicU64 = AtomicU64::new(0);
static NEXT: AtomicU64 = AtomicU64::new(0);

fn debug(frame: &mut TrapFrame) {
    AT.store(frame.rip, Ordering::SeqCst);
    DR6.store(Dr6::read().bits(), Ordering::SeqCst);
    LEFT.store(frame.rcx, Ordering::SeqCst);
    NEXT.store(frame.rdi, Ordering::SeqCst);
    // DR6 is sticky: clear it for the next #DB.
    // SAFETY: DR6's defined reset value.
    unsafe { core::arch::asm!("mov dr6, {}", in(reg) 0xffff_0ff0u64) };
}

/// Where the #DB came: `as_a_cpu` when it came where a CPU puts it.
fn verdict(right: bool, as_a_cpu: &'static str) -> &'static str {
    match right {
        true => as_a_cpu,
        false => "NOT where a CPU puts it",
    }
}

fn main(_info: &BootInfo) -> i32 {
    set_handler(1, debug);
    let buffer = &raw mut BUFFER as u64;
    let watched = buffer + WATCHED as u64;
    // SAFETY: DR0 holds the watched byte's address; DR7 enables slot 0 for its writes.
    unsafe {
        core::arch::asm!("mov dr0, {}", "mov dr7, {}", in(reg) watched, in(reg) DR7_WATCH_WRITES_OF_ONE_BYTE)
    };

    // The CPU's own write: the #DB after the MOV.
    let after_mov: u64;
    // SAFETY: a byte of our buffer.
    unsafe {
        core::arch::asm!(
            "lea {after}, [rip + 2f]",
            "mov byte ptr [{watched}], 1",
            "2:",
            after = out(reg) after_mov,
            watched = in(reg) watched,
        )
    };
    let mov = AT.swap(0, Ordering::SeqCst) == after_mov && DR6.load(Ordering::SeqCst) & DR6_B0 != 0;
    println!(
        "MOV to the watched byte: #DB {}",
        verdict(mov, "after it, DR6.B0 set")
    );

    // The hypervisor's: `rep insb` of 8 bytes from port 0x80 (no device: 0xff each).
    let insb: u64;
    // SAFETY: 8 bytes into our 8-byte buffer.
    unsafe {
        core::arch::asm!(
            "lea {at}, [rip + 2f]",
            "2:",
            "rep insb",
            at = out(reg) insb,
            inout("rcx") 8u64 => _,
            inout("rdi") buffer => _,
            in("dx") 0x80u16,
        )
    };
    // After the third iteration: RIP at the INS (not done), 5 bytes left, the next at
    // BUFFER[3].
    let (left, next) = (LEFT.load(Ordering::SeqCst), NEXT.load(Ordering::SeqCst));
    let ins = AT.load(Ordering::SeqCst) == insb
        && DR6.load(Ordering::SeqCst) & DR6_B0 != 0
        && left == 8 - WATCHED as u64 - 1
        && next == watched + 1;
    println!(
        "REP INSB over the watched byte: #DB {} ({left} left, next at buffer + {})",
        verdict(ins, "after the iteration that wrote it, DR6.B0 set"),
        next.wrapping_sub(buffer)
    );
    i32::from(!(mov && ins))
}

guest_main!(main);
