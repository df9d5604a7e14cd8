//! `machine-check`: #MC, the CPU reporting a hardware error.
//!
//! A real CPU raises #MC when its error-checking logic finds a problem it cannot correct
//! (a multi-bit memory error, a bus error); details are in the machine-check MSRs. QEMU's
//! TCG never does (only its monitor's `mce` command can). The guest asks the hypervisor for
//! one (`raise_event(18)`): a synthetic event. #MC is an abort: the handler does not return.
#![no_std]
#![no_main]

use traplab_guests::hypercall::{exit, raise_event};
use traplab_guests::traps::{TrapFrame, set_handler};
use traplab_guests::{BootInfo, guest_main, println};

fn machine_check(frame: &mut TrapFrame) {
    println!(
        "#MC at {:#x}: the hardware reports an error it could not correct; stopping",
        frame.rip
    );
    exit(0)
}

fn main(_info: &BootInfo) -> i32 {
    set_handler(18, machine_check);
    println!("asking the hypervisor for a machine check");
    raise_event(18, 0);
    println!("the #MC handler returned: it should not");
    1
}

guest_main!(main);
