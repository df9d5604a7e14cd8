//! `bad-physical` (test guest): point one of our own pages at guest-physical 512 MiB, far
//! beyond the 16 MiB we own, read it, then run code there.
//!
//! Our page tables are ours to change, so the walk succeeds; the *nested* page tables do
//! not map that guest-physical address, so the CPU exits with a nested page fault. For the
//! read, the hypervisor answers as a PC's empty bus does: all ones, no device there — never
//! another domain's or the hypervisor's memory. The jump is an instruction fetch from
//! there: all ones again, `ff ff`, which the CPU cannot decode, so the hypervisor raises #UD
//! in its place, and our handler ends us. A guest cannot reach memory it was not given.
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
    match value {
        u64::MAX => println!("read {value:#x}: all ones, nothing is there"),
        _ => println!("read {value:#x}: the hypervisor let us out!"),
    }
    println!("jumping to {WINDOW:#x}");
    // SAFETY: none, on purpose: the fetch from outside our memory is what this guest tests.
    let code: extern "C" fn() = unsafe { core::mem::transmute(WINDOW as *const ()) };
    code();
    println!("came back from {WINDOW:#x}: the hypervisor let us out!");
    1
}

guest_main!(main);
