//! `lazy-memory` (setting `lazy-memory`): RAM that appears when it is first touched.
//!
//! The hypervisor maps only what it wrote itself in advance: our image (code, data, the
//! zeroed `.bss` with our stack) and the boot tables. Each first touch of any other page
//! is a nested page fault; the hypervisor gives the page a frame and the access runs
//! again. A second touch of the same page costs nothing.
#![no_std]
#![no_main]

use traplab_guests::{BootInfo, guest_main, println};

const PAGES: u64 = 8;

fn main(info: &BootInfo) -> i32 {
    let start = (info.free_start + 0xfff) & !0xfff;
    println!("touching {PAGES} pages of free RAM from {start:#x}");
    for page in 0..PAGES {
        // SAFETY: free RAM the boot info hands us, identity-mapped.
        unsafe { ((start + page * 4096) as *mut u64).write_volatile(page) };
    }
    println!("and touching them again");
    let mut sum = 0;
    for page in 0..PAGES {
        // SAFETY: as above.
        sum += unsafe { ((start + page * 4096) as *const u64).read_volatile() };
    }
    println!("the pages hold what we wrote: sum {sum}");
    if sum == (0..PAGES).sum::<u64>() { 0 } else { 1 }
}

guest_main!(main);
