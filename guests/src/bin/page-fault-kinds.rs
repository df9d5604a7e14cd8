//! `page-fault-kinds`: four page faults, four error codes (AMD APM vol. 2, 8.4.2):
//!
//! | access                                   | P | W/R | U/S | I/D | error code |
//! |------------------------------------------|---|-----|-----|-----|------------|
//! | write to a page that is not mapped       | 0 | 1   | 0   | 0   | 0x2        |
//! | write to a read-only page (CR0.WP = 1)   | 1 | 1   | 0   | 0   | 0x3        |
//! | instruction fetch from an NX page        | 1 | 0   | 0   | 1   | 0x11       |
//! | user-mode read of a supervisor page      | 1 | 0   | 1   | 0   | 0x5        |
//!
//! The handler decodes the bits and gets past each fault: it maps the missing page, skips
//! the other data accesses, and for the fetch returns to the caller of the NX "function".
#![no_std]
#![no_main]

use core::sync::atomic::{AtomicU64, Ordering};
use traplab_guests::paging::{self, Flags};
use traplab_guests::traps::{TrapFrame, set_handler};
use traplab_guests::{BootInfo, guest_main, println, user};
use x86_64::registers::control::Cr2;

const NOT_MAPPED: u64 = 0x4000_0000;
const READ_ONLY: u64 = 0x4000_1000;
const NO_EXECUTE: u64 = 0x4000_2000;
const SUPERVISOR: u64 = 0x4000_3000;
/// The length of the data access to skip.
static SKIP: AtomicU64 = AtomicU64::new(0);

fn page_fault(frame: &mut TrapFrame) {
    let address = Cr2::read_raw();
    let code = frame.error_code;
    let bit = |mask: u64, set: &'static str, clear: &'static str| {
        if code & mask != 0 { set } else { clear }
    };
    println!(
        "#PF at {address:#x}, error code {code:#x}: {}, {}, {}, {}",
        bit(1, "protection violation", "not present"),
        bit(2, "write", "read"),
        bit(4, "user", "supervisor"),
        bit(16, "instruction fetch", "data access")
    );
    if code & 1 == 0 {
        // Not present: map it, and the write is retried.
        paging::map_new(address & !0xfff, Flags::WRITABLE);
    } else if code & 16 != 0 {
        // A fetch from the NX page we called: return to our caller, as `ret` would.
        // SAFETY: the CALL pushed the return address at RSP, on our own stack.
        frame.rip = unsafe { *(frame.rsp as *const u64) };
        frame.rsp += 8;
    } else {
        frame.rip += SKIP.load(Ordering::SeqCst);
    }
}

fn user_mode() -> i32 {
    println!("reading a supervisor page from CPL 3:");
    SKIP.store(3, Ordering::SeqCst);
    // SAFETY: the read faults (U/S) and the handler skips `mov rax, [rax]` (3 bytes).
    unsafe { core::arch::asm!("mov rax, [rax]", inout("rax") SUPERVISOR => _) };
    // EXERCISE page-fault-kinds.1: a fifth kind: write to the read-only supervisor page
    // READ_ONLY from here, CPL 3 (error code 0x7: P|W|U), and make the last line
    // `five kinds of page fault`.
    println!("four kinds of page fault");
    0
}

fn main(_info: &BootInfo) -> i32 {
    set_handler(14, page_fault);
    paging::map_new(READ_ONLY, Flags::empty());
    let code = paging::map_new(NO_EXECUTE, Flags::WRITABLE | Flags::NO_EXECUTE).unwrap_or(0);
    // A `ret` (0xc3) in the NX page: a function the CPU will refuse to run.
    // SAFETY: the page was just mapped writable at `NO_EXECUTE` (1:1 frame `code`).
    unsafe { (code as *mut u8).write_volatile(0xc3) };
    paging::map_new(SUPERVISOR, Flags::WRITABLE);

    println!("writing to a page that is not mapped:");
    // SAFETY: the write faults and the handler maps the page; then it works.
    unsafe { (NOT_MAPPED as *mut u64).write_volatile(1) };
    println!("writing to a read-only page:");
    SKIP.store(7, Ordering::SeqCst);
    // SAFETY: `mov qword ptr [rax], 1` (48 c7 00 01 00 00 00: 7 bytes) faults; skipped.
    unsafe { core::arch::asm!("mov qword ptr [rax], 1", in("rax") READ_ONLY) };
    println!("calling code in a no-execute page:");
    // SAFETY: the fetch faults and the handler returns to us as the `ret` would have.
    unsafe { core::arch::asm!("call rax", in("rax") NO_EXECUTE, clobber_abi("C")) };
    user::run(user_mode)
}

guest_main!(main);
