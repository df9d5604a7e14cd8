//! `bad-triple-fault` (test guest): load an empty IDT and fault.
//!
//! #UD cannot be delivered (the IDT has no entries: #GP), #GP cannot be delivered either
//! (a second contributory fault: #DF), and #DF cannot be delivered (shutdown). Because the
//! hypervisor intercepts every exception, the trace shows each step; the domain dies and
//! the hypervisor lives on.
#![no_std]
#![no_main]

use traplab_guests::{BootInfo, guest_main, println};
use x86_64::VirtAddr;
use x86_64::instructions::tables::{DescriptorTablePointer, lidt};

fn main(_info: &BootInfo) -> i32 {
    println!("loading an empty IDT, then ud2");
    let empty = DescriptorTablePointer {
        limit: 0,
        base: VirtAddr::new(0),
    };
    // SAFETY: deliberately broken: every exception from here on is undeliverable.
    unsafe {
        lidt(&empty);
        core::arch::asm!("ud2");
    }
    println!("still alive?");
    1
}

guest_main!(main);
