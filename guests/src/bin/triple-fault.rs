//! `triple-fault`: the chain a bare machine hides — #PF, #DF, shutdown.
//!
//! Our #PF and #DF gates both use an interrupt stack (IST2) that we point at memory that is
//! not mapped, as a kernel whose stacks are corrupt. A write to an unmapped page raises #PF.
//! Delivering it means pushing the exception frame on IST2: a second #PF, so the CPU
//! delivers #DF (Intel SDM vol. 3A, table 6-5). Delivering #DF pushes on IST2 too: a fault
//! while delivering #DF, and the CPU gives up: shutdown, a triple fault. On a PC that resets
//! the machine; here the hypervisor ends this domain only, and the next one runs.
#![no_std]
#![no_main]

use traplab_guests::traps::{TrapFrame, set_handler, set_stack};
use traplab_guests::{BootInfo, guest_main, println};

const UNMAPPED: u64 = 0x4000_0000;
/// A stack top in unmapped memory.
const BROKEN_STACK: u64 = 0x6000_0000;

fn never_runs(frame: &mut TrapFrame) {
    println!(
        "the handler for vector {} ran: it should not have",
        frame.vector
    );
}

fn main(_info: &BootInfo) -> i32 {
    set_handler(14, never_runs);
    set_handler(8, never_runs);
    set_stack(14, BROKEN_STACK);
    // EXERCISE triple-fault.1: survive: leave the #DF gate on the runtime's good stack and
    // give it a handler that prints `#DF: the kernel survived to report it` and ends the
    // domain with exit(0).
    set_stack(8, BROKEN_STACK);
    println!("the #PF and #DF stacks are at {BROKEN_STACK:#x}, not mapped; now a page fault");
    // SAFETY: the write faults, and no handler can be entered: the domain ends here.
    unsafe { (UNMAPPED as *mut u64).write_volatile(1) };
    println!("still alive?");
    1
}

guest_main!(main);
