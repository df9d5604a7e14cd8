//! `msr` (setting `passthrough-fs-base`): RDMSR and WRMSR through the MSR permission map.
//!
//! Every MSR access exits, and the hypervisor emulates the MSRs of the CPU it describes —
//! except those it clears in the permission map: this lab lets FS_BASE through, so reading
//! and writing it costs no exit. An MSR the emulated CPU does not have gets #GP, as on
//! hardware; so does a write to EFER that would switch modes under the running guest.
#![no_std]
#![no_main]

use core::sync::atomic::{AtomicU64, Ordering};
use traplab_guests::traps::{TrapFrame, set_handler};
use traplab_guests::{BootInfo, guest_main, println};
use x86_64::registers::model_specific::Msr;

/// RDMSR and WRMSR are 2 bytes.
const LENGTH: u64 = 2;
static REFUSED: AtomicU64 = AtomicU64::new(0);

fn general_protection(frame: &mut TrapFrame) {
    println!("#GP at {:#x} (ECX = {:#x}): skipping", frame.rip, frame.rcx);
    REFUSED.fetch_add(1, Ordering::SeqCst);
    frame.rip += LENGTH;
}

fn read(msr: u32) -> u64 {
    // SAFETY: the hypervisor emulates or refuses every MSR; a refusal is #GP, skipped.
    unsafe { Msr::new(msr).read() }
}

fn write(msr: u32, value: u64) {
    // SAFETY: as above.
    unsafe { Msr::new(msr).write(value) }
}

fn main(_info: &BootInfo) -> i32 {
    set_handler(13, general_protection);
    println!(
        "EFER = {:#x} (the hypervisor hides SVME)",
        read(0xc000_0080)
    );
    write(0xc000_0082, 0x1234_5678);
    println!("LSTAR written, read back {:#x}", read(0xc000_0082));
    println!("TSC = {:#x} (counted from this domain's start)", read(0x10));
    write(0xc000_0100, 0x5000);
    println!(
        "FS_BASE = {:#x}, through the permission map: no exit",
        read(0xc000_0100)
    );
    // The MTRRs a kernel sets up at boot (CPUID says this CPU has them): kept, checked.
    println!(
        "MTRRCAP = {:#x} (8 variable ranges, fixed ranges, write-combining)",
        read(0xfe)
    );
    write(0x2ff, 0xc06);
    println!("MTRRdefType written 0xc06, read back {:#x}", read(0x2ff));
    println!("an MSR this CPU does not have:");
    read(0xc001_1234);
    println!("EFER without LME, under a running 64-bit guest:");
    write(0xc000_0080, read(0xc000_0080) & !(1 << 8));
    // EXERCISE msr.1: read MSR 0x4000_0020 and print `domain MSR = 0x…`, then try to write it.
    let refused = REFUSED.load(Ordering::SeqCst);
    println!("{refused} accesses refused");
    if refused == 2 { 0 } else { 1 }
}

guest_main!(main);
