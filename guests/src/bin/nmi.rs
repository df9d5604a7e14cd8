//! `nmi`: a non-maskable interrupt, sent by the hypervisor.
//!
//! NMIs come from outside the CPU (a watchdog, a hardware error); no instruction raises
//! one. Here the guest asks the hypervisor for one (`raise_event(2)`), which injects it with
//! EVENTINJ type NMI. It arrives although interrupts are off (RFLAGS.IF = 0): that is what
//! non-maskable means. Until the handler's IRET, the CPU holds back further NMIs.
#![no_std]
#![no_main]

use traplab_guests::hypercall::raise_event;
use traplab_guests::traps::{TrapFrame, set_handler};
use traplab_guests::{BootInfo, guest_main, println};

fn nmi(frame: &mut TrapFrame) {
    println!(
        "NMI at {:#x}, with interrupts {}",
        frame.rip,
        if frame.rflags & (1 << 9) != 0 {
            "on"
        } else {
            "off"
        }
    );
}

fn main(_info: &BootInfo) -> i32 {
    set_handler(2, nmi);
    println!("asking the hypervisor for an NMI");
    // EXERCISE nmi.1: ask for the NMI from user mode (`user::run`) too, and make the handler
    // say at which privilege level it came (`from CPL N`, from the frame's CS).
    let result = raise_event(2, 0);
    println!("raise_event returned {result}; the NMI came and went");
    if result == 0 { 0 } else { 1 }
}

guest_main!(main);
