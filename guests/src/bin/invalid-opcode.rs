//! `invalid-opcode`: execute `ud2`; the #UD handler reports it, skips it, and we go on.
//!
//! The CPU raises #UD; the hypervisor intercepts it and reflects it into our IDT; our
//! handler moves RIP past the two-byte `ud2` and returns with IRETQ.
#![no_std]
#![no_main]

use traplab_guests::traps::{TrapFrame, set_handler};
use traplab_guests::{BootInfo, guest_main, println};

/// `ud2` is `0f 0b`: two bytes.
const UD2_LENGTH: u64 = 2;

fn invalid_opcode(frame: &mut TrapFrame) {
    println!(
        "#UD at {:#x}: skipping the {UD2_LENGTH}-byte ud2",
        frame.rip
    );
    frame.rip += UD2_LENGTH;
}

fn main(_info: &BootInfo) -> i32 {
    set_handler(6, invalid_opcode);
    println!("executing ud2");
    // SAFETY: ud2 raises #UD, whose handler skips it.
    unsafe { core::arch::asm!("ud2") };
    println!("back after ud2: the handler skipped it");
    0
}

guest_main!(main);
