//! `page-fault`: write to a page our page tables do not map; the #PF handler maps it; the
//! write is retried and works.
//!
//! The CPU raises #PF (error code 0x2: not present, write, supervisor) with the address in
//! CR2; the hypervisor intercepts it, sets the guest's CR2 and reflects it into our IDT.
//! Our handler takes a free frame, maps the page, and returns: IRETQ goes back to the
//! faulting instruction, which now succeeds.
#![no_std]
#![no_main]

use traplab_guests::paging::{self, Flags};
use traplab_guests::traps::{TrapFrame, set_handler};
use traplab_guests::{BootInfo, guest_main, println};
use x86_64::registers::control::Cr2;

/// 1 GiB: far above the 16 MiB the boot page tables map.
const UNMAPPED: u64 = 0x4000_0000;

// EXERCISE page-fault.1: map the page read-only first (`Flags::empty()`). The retried
// write then faults again, now with P = 1 (error code 0x3: present, write), and this handler
// must make the page writable (`paging::tables().update_flags`) so that the write works at
// the third try. The lab's chapter in the book says what `traplab check` expects.
fn page_fault(frame: &mut TrapFrame) {
    let address = Cr2::read_raw();
    println!(
        "#PF at {address:#x}, error code {:#x}: mapping a free frame there",
        frame.error_code
    );
    if paging::map_new(address & !0xfff, Flags::WRITABLE).is_none() {
        println!("could not map it");
    }
}

fn main(_info: &BootInfo) -> i32 {
    set_handler(14, page_fault);
    println!("writing 42 to {UNMAPPED:#x}, which is not mapped");
    // SAFETY: the write faults, and the #PF handler maps the page before it is retried.
    unsafe { (UNMAPPED as *mut u64).write_volatile(42) };
    // SAFETY: mapped now.
    let value = unsafe { (UNMAPPED as *const u64).read_volatile() };
    println!("the write was retried and worked: read back {value}");
    if value == 42 { 0 } else { 1 }
}

guest_main!(main);
