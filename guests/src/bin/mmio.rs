//! `mmio`: talk to a device through memory-mapped registers that are not memory.
//!
//! The lab device sits at guest-physical 0xFEB0_0000, where the hypervisor's nested page
//! tables map nothing. We map it in our own page tables (uncached: device registers must
//! not be cached) and use plain MOVs, then an OR and an XCHG that read and write a register
//! in one instruction. Each one exits as a nested page fault, and the hypervisor decodes it
//! and plays the device: reads get register values, writes change them (registers in
//! `hv/src/device/lab_device.rs`).
#![no_std]
#![no_main]

use traplab_abi::boot::LAB_DEVICE;
use traplab_guests::paging::{self, Flags};
use traplab_guests::{BootInfo, guest_main, println};

/// Where we map the device's page.
const DEVICE: u64 = 0x5000_0000;

fn read32(offset: u64) -> u32 {
    // SAFETY: a mapped device register; the hypervisor emulates the read.
    unsafe { ((DEVICE + offset) as *const u32).read_volatile() }
}

fn write32(offset: u64, value: u32) {
    // SAFETY: as above, a write.
    unsafe { ((DEVICE + offset) as *mut u32).write_volatile(value) }
}

fn read64(offset: u64) -> u64 {
    // SAFETY: as above, 8 bytes.
    unsafe { ((DEVICE + offset) as *const u64).read_volatile() }
}

/// `lock or [SCRATCH], bits`: whether the result was negative (SF).
fn or_into_scratch(bits: u64) -> bool {
    let rflags: u64;
    // SAFETY: a mapped device register, written by one instruction; the flags are read
    // right after it.
    unsafe {
        core::arch::asm!(
            "lock or qword ptr [{at}], {bits}",
            "pushfq",
            "pop {rflags}",
            at = in(reg) DEVICE + 0x08,
            bits = in(reg) bits,
            rflags = out(reg) rflags,
        );
    }
    rflags & (1 << 7) != 0
}

/// `xchg [SCRATCH], value`: what SCRATCH held.
fn exchange_with_scratch(value: u64) -> u64 {
    let mut register = value;
    // SAFETY: a mapped device register, swapped with a register.
    unsafe {
        core::arch::asm!(
            "xchg qword ptr [{at}], {register}",
            at = in(reg) DEVICE + 0x08,
            register = inout(reg) register,
            options(nostack),
        );
    }
    register
}

fn main(_info: &BootInfo) -> i32 {
    if let Err(error) = paging::map(
        DEVICE,
        LAB_DEVICE,
        Flags::WRITABLE | Flags::NO_CACHE | Flags::WRITE_THROUGH,
    ) {
        println!("cannot map the device: {error:?}");
        return 1;
    }
    let id = read32(0x00);
    println!(
        "ID {id:#x} ({}), version {}",
        core::str::from_utf8(&id.to_le_bytes()).unwrap_or("?"),
        read32(0x04)
    );
    // SAFETY: an 8-byte write and read of SCRATCH.
    let scratch = unsafe {
        ((DEVICE + 0x08) as *mut u64).write_volatile(0x1122_3344_5566_7788);
        ((DEVICE + 0x08) as *const u64).read_volatile()
    };
    println!("SCRATCH holds {scratch:#x}");
    // One instruction that reads and writes the device: the hypervisor does both accesses
    // and sets the flags the OR sets (bit 63 set: the result is negative, SF).
    let negative = or_into_scratch(1 << 63);
    let after_or = read64(0x08);
    println!("OR set bit 63: SCRATCH = {after_or:#x}, SF = {negative}");
    let before_xchg = exchange_with_scratch(0x42);
    println!(
        "XCHG gave back {before_xchg:#x} and left {:#x}",
        read64(0x08)
    );
    // EXERCISE mmio.2: shift SCRATCH left by 4 in one instruction (`shl qword ptr [..], cl`
    // with CL = 4), then print `SHL: SCRATCH = 0x...`.
    let counts = [read32(0x10), read32(0x10), read32(0x10)];
    println!("COUNTER read three times: {counts:?}");
    write32(0x18, 42);
    println!("wrote 42 to DOORBELL");
    // EXERCISE mmio.1: read the new RINGS register (offset 0x20) and print `RINGS = N`;
    // ring DOORBELL once more, with 43, and print `RINGS = N` again.
    if id == 0x7061_7274
        && scratch == 0x1122_3344_5566_7788
        && (after_or, negative, before_xchg) == (0x9122_3344_5566_7788, true, after_or)
        && counts == [1, 2, 3]
    {
        0
    } else {
        1
    }
}

guest_main!(main);
