//! `other-intercepts` (settings `intercept-rdtsc`, `intercept-invlpg`, `intercept-pause`,
//! `intercept-dr`): the instructions a hypervisor may choose to take, one each.
//!
//! RDTSC reads a per-domain clock; INVLPG flushes a page in our address space; PAUSE says we
//! spin; MOV DR loads a debug register the hypervisor keeps for us; VMLOAD, an SVM
//! instruction a guest may not run, gets #UD. XSETBV is always intercepted too, but only
//! with CR4.OSXSAVE set, which QEMU 7.2's TCG does not let a guest set: here it raises #UD
//! before any intercept, the CPU's own check.
#![no_std]
#![no_main]

use core::arch::x86_64::_rdtsc;
use traplab_guests::traps::{TrapFrame, set_handler};
use traplab_guests::{BootInfo, guest_main, println};

/// `vmload rax` (0f 01 da) and `xsetbv` (0f 01 d1) are 3 bytes.
const LENGTH: u64 = 3;

fn invalid_opcode(frame: &mut TrapFrame) {
    println!("#UD at {:#x}: skipping the 3-byte instruction", frame.rip);
    frame.rip += LENGTH;
}

fn main(_info: &BootInfo) -> i32 {
    set_handler(6, invalid_opcode);
    // SAFETY: RDTSC has no side effects.
    let (first, second) = unsafe { (_rdtsc(), _rdtsc()) };
    println!("RDTSC {first}, then {second}: ticks since this domain began");
    // SAFETY: INVLPG only drops a TLB entry.
    unsafe { core::arch::asm!("invlpg [{}]", in(reg) 0x20_0000u64, options(nostack)) };
    println!("INVLPG done");
    core::hint::spin_loop();
    println!("PAUSE done");
    let dr0: u64;
    // SAFETY: DR0 holds an address; DR7 stays 0 (no breakpoint is enabled).
    unsafe {
        core::arch::asm!("mov dr0, {0}", "mov {0}, dr0", inout(reg) 0x1234u64 => dr0, options(nostack))
    };
    println!("DR0 written and read back: {dr0:#x}");
    println!("XSETBV with CR4.OSXSAVE clear:");
    // SAFETY: #UD (checked before the intercept), skipped by the handler.
    unsafe {
        core::arch::asm!("xsetbv", in("ecx") 0, in("eax") 0b11u32, in("edx") 0u32, options(nostack))
    };
    // SAFETY: the hypervisor answers VMLOAD with #UD, skipped by the handler.
    unsafe { core::arch::asm!("vmload rax", in("rax") 0u64, options(nostack)) };
    // EXERCISE other-intercepts.1: set an execution breakpoint through the debug registers the
    // hypervisor keeps (DR0 = an instruction, DR7 = 1), hit it, and handle the #DB.
    println!("done: each instruction met its intercept, or the CPU's own check first");
    0
}

guest_main!(main);
