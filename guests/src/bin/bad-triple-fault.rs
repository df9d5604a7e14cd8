//! `bad-triple-fault` (test guest): load an empty IDT and fault.
//!
//! #UD cannot be delivered (the IDT has no entries: #GP), #GP cannot be delivered either
//! (a second contributory fault: #DF), and #DF cannot be delivered (shutdown). Because the
//! hypervisor intercepts every exception, the trace shows each step; the domain dies and
//! the hypervisor lives on.
#![no_std]
#![no_main]

use traplab_guests::{BootInfo, guest_main, println, traps};

fn main(_info: &BootInfo) -> i32 {
    println!("loading an empty IDT, then ud2");
    traps::triple_fault()
}

guest_main!(main);
