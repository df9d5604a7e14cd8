//! `hypercall`: talk to the hypervisor on purpose, with VMMCALL.
//!
//! `console_write` hands the hypervisor a pointer and a length: it reads the buffer
//! through our page tables. A pointer to nothing gets EFAULT back, and nothing breaks.
//! `exit` ends the domain with a status.
#![no_std]
#![no_main]

use traplab_abi::hypercall::{CONSOLE_WRITE, error};
use traplab_guests::hypercall::{console_write, exit, hypercall2};
use traplab_guests::{BootInfo, guest_main};

fn main(_info: &BootInfo) -> i32 {
    let written = console_write(b"Hello through the console_write hypercall\n");

    // An address no page table of ours maps: the hypervisor must refuse it.
    // SAFETY: the hypervisor only reads through the pointer, and rejects it.
    let refused = unsafe { hypercall2(CONSOLE_WRITE, 0xdead_0000_0000, 16) };
    let verdict: &[u8] = if refused == error::EFAULT {
        b"a bad pointer got EFAULT, as it should\n"
    } else {
        b"a bad pointer did NOT get EFAULT\n"
    };
    console_write(verdict);

    // EXERCISE hypercall.1: call the new `domain_id` hypercall (number 8) and print
    // `I am domain N` with `console_write` (or `println!`).
    exit(if written == 42 && refused == error::EFAULT {
        0
    } else {
        1
    })
}

guest_main!(main);
