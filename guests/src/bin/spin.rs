//! `spin` (test guest): print a line, then spin forever without a single exit.
//! The tests use it to check that Ctrl-C and time limits stop QEMU and leave nothing behind.
#![no_std]
#![no_main]

use traplab_guests::{BootInfo, guest_main, println};

fn main(_info: &BootInfo) -> i32 {
    println!("spinning");
    loop {
        core::hint::spin_loop();
    }
}

guest_main!(main);
