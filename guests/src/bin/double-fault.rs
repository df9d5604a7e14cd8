//! `double-fault`: a fault while the CPU delivers a fault.
//!
//! The #PF gate uses its own interrupt stack (IST2), and we point that stack at memory that
//! is not mapped — as a kernel whose stack overflowed. A write to an unmapped page raises
//! #PF; delivering it means pushing the exception frame on IST2, which raises a second #PF.
//! Two page faults make a double fault (Intel SDM vol. 3A, table 6-5): the CPU delivers #DF
//! instead, on the #DF gate's good stack. #DF is an abort: there is nothing to return to.
//!
//! The hypervisor sees each step: the first #PF (which it reflects), the second #PF with
//! EXITINTINFO saying the first was being delivered, and the #DF it makes of them.
#![no_std]
#![no_main]

use traplab_guests::hypercall::exit;
use traplab_guests::traps::{TrapFrame, set_handler, set_stack};
use traplab_guests::{BootInfo, guest_main, println};

const UNMAPPED: u64 = 0x4000_0000;
/// A stack top in unmapped memory.
const BROKEN_STACK: u64 = 0x6000_0000;

fn page_fault(_frame: &mut TrapFrame) {
    println!("the #PF handler ran: it should not have");
}

fn double_fault(frame: &mut TrapFrame) {
    // EXERCISE double-fault.1: print `CR2 = 0x…: the address of the second fault`. Which
    // address does it hold, and which should it hold? (See hv/src/exit/exception.rs.)
    println!(
        "#DF (error code {}): a fault while delivering a fault; the kernel stops here",
        frame.error_code
    );
    exit(0)
}

fn main(_info: &BootInfo) -> i32 {
    set_handler(14, page_fault);
    set_handler(8, double_fault);
    set_stack(14, BROKEN_STACK);
    println!("the #PF stack is at {BROKEN_STACK:#x}, not mapped; now a page fault");
    // SAFETY: the write faults; the handler that would fix it cannot even be entered.
    unsafe { (UNMAPPED as *mut u64).write_volatile(1) };
    1
}

guest_main!(main);
