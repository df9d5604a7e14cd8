//! `stack-fault`: #SS, two ways.
//!
//! 1. Loading SS with a descriptor that is not present raises #SS (not #NP: for SS it is
//!    a stack fault), error code the selector.
//! 2. A push to a non-canonical address raises #SS(0) on a real CPU. QEMU's TCG raises #GP
//!    instead; the hypervisor corrects it (a synthetic #SS in the trace).
#![no_std]
#![no_main]

use core::sync::atomic::{AtomicU64, Ordering};
use traplab_guests::traps::{TrapFrame, set_handler};
use traplab_guests::{BootInfo, guest_main, println, segments};

/// The instruction to skip: `mov ss, ax` (2 bytes), then `push rax` (1 byte).
static SKIP: AtomicU64 = AtomicU64::new(0);
/// The good stack to go back to after the push to nowhere.
static GOOD_RSP: AtomicU64 = AtomicU64::new(0);

fn stack_fault(frame: &mut TrapFrame) {
    println!(
        "#SS, error code {:#x}, at {:#x}",
        frame.error_code, frame.rip
    );
    frame.rip += SKIP.load(Ordering::SeqCst);
    let good = GOOD_RSP.swap(0, Ordering::SeqCst);
    if good != 0 {
        frame.rsp = good;
    }
}

fn main(_info: &BootInfo) -> i32 {
    set_handler(12, stack_fault);
    segments::add_descriptor(segments::NOT_PRESENT_DATA);
    println!("loading SS with selector 0x38 (not present)");
    SKIP.store(2, Ordering::SeqCst);
    // SAFETY: the load faults and the handler skips it: SS stays as it was. Spelled out as
    // bytes (`8e d0`, mov ss, ax) so that it is surely the two bytes the handler skips.
    unsafe { core::arch::asm!(".byte 0x8e, 0xd0", in("ax") segments::ADDED) };
    println!("pushing with RSP at a non-canonical address");
    SKIP.store(1, Ordering::SeqCst);
    // SAFETY: the push faults; the handler skips it and gives RSP back (R11 keeps it too).
    unsafe {
        core::arch::asm!(
            "mov r11, rsp",
            "mov [{good}], rsp",
            "mov rsp, {bad}",
            "push rax",
            "mov rsp, r11",
            good = in(reg) GOOD_RSP.as_ptr(),
            bad = in(reg) 0x8000_0000_0010u64,
            out("r11") _,
        )
    };
    // EXERCISE stack-fault.1: a third way to #SS: a load through RBP, `mov rax, [rbp]`, with
    // RBP non-canonical (RBP-based addresses use SS too). Save and restore RBP yourself (it
    // is the frame pointer), skip the 4-byte instruction, and print `three #SS`. The
    // hypervisor's correction of TCG's #GP misses this one: see hv/src/quirks.rs.
    println!("two #SS");
    0
}

guest_main!(main);
