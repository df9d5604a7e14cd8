//! `bad-physical` (test guest): point one of our own pages at guest-physical 512 MiB, far
//! beyond the 16 MiB we own, and read it.
//!
//! Our page tables are ours to change, so the walk succeeds; the *nested* page tables do
//! not map that guest-physical address, so the CPU exits with a nested page fault and the
//! hypervisor ends the domain. A guest cannot reach memory it was not given.
#![no_std]
#![no_main]

use traplab_guests::paging::{self, Flags};
use traplab_guests::{BootInfo, guest_main, println};

const WINDOW: u64 = 0x5000_0000;
const OUTSIDE: u64 = 0x2000_0000;

fn main(_info: &BootInfo) -> i32 {
    if let Err(error) = paging::map(WINDOW, OUTSIDE, Flags::empty()) {
        println!("could not map: {error:?}");
    }
    println!("reading guest-physical {OUTSIDE:#x} through {WINDOW:#x}");
    // SAFETY: mapped just above; the nested page tables stop the read.
    let value = unsafe { (WINDOW as *const u64).read_volatile() };
    println!("read {value:#x}: the hypervisor let us out!");
    1
}

guest_main!(main);
