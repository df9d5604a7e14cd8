//! `cr8-tpr` (test guest): reads the local APIC's TPR where gdb wrote CR8 (`tui/tests/gdb.rs`).
//!
//! CR8 and the local APIC's TPR are one priority seen twice: CR8 holds TPR bits 7:4 (Intel
//! SDM vol. 3A, 11.8.6.1; AMD APM vol. 2, 3.1.5 and 16.3–16.6 "Local APIC"). gdb
//! writes CR8 where the guest first stops; the guest then reads the TPR through its
//! memory-mapped register (offset 0x80 of the APIC's page at 0xFEE0_0000) and exits with it
//! as its status: the test knows what it wrote.
#![no_std]
#![no_main]

use traplab_guests::paging::{self, Flags};
use traplab_guests::{BootInfo, guest_main, println};

/// The local APIC's registers, at the physical address APIC_BASE gives them after reset.
const LAPIC_PHYSICAL: u64 = 0xfee0_0000;
/// Where we map them.
const LAPIC: u64 = 0x5100_0000;
/// The TPR's offset in the page.
const TPR: u64 = 0x80;

fn read_tpr() -> u32 {
    // SAFETY: a mapped APIC register (main); the hypervisor emulates the read.
    unsafe { ((LAPIC + TPR) as *const u32).read_volatile() }
}

fn main(_info: &BootInfo) -> i32 {
    // Device registers must not be cached.
    if let Err(error) = paging::map(
        LAPIC,
        LAPIC_PHYSICAL,
        Flags::WRITABLE | Flags::NO_CACHE | Flags::WRITE_THROUGH,
    ) {
        println!("cannot map the local APIC: {error:?}");
        return 1;
    }
    let tpr = read_tpr();
    println!("TPR {tpr:#x}");
    // A status is a byte; the TPR is one too.
    (tpr & 0xff) as i32
}

guest_main!(main);
