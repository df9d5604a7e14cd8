//! `bad-hypercall` (test guest): make a hypercall that does not exist; get ENOSYS.
#![no_std]
#![no_main]

use traplab_abi::hypercall::error;
use traplab_guests::hypercall::hypercall2;
use traplab_guests::{BootInfo, guest_main, println};

/// No hypercall has this number.
const NO_SUCH_HYPERCALL: u64 = 0x1234;

fn main(_info: &BootInfo) -> i32 {
    // SAFETY: an unknown number: the hypervisor does nothing but return ENOSYS.
    let result = unsafe { hypercall2(NO_SUCH_HYPERCALL, 1, 2) };
    println!("hypercall {NO_SUCH_HYPERCALL:#x} returned {result}");
    if result == error::ENOSYS { 0 } else { 1 }
}

guest_main!(main);
