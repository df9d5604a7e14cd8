//! `other-intercepts` (settings `intercept-rdtsc`, `intercept-invlpg`, `intercept-pause`,
//! `intercept-dr`): the instructions a hypervisor may choose to take, one each.
//!
//! RDTSC reads a per-domain clock; INVLPG flushes a page in our address space; PAUSE says we
//! spin; MOV DR loads a debug register the hypervisor keeps for us, and with DR7.GD set
//! raises the #DB of general detect, which QEMU's TCG does not implement and the hypervisor
//! does in its place; VMLOAD, an SVM
//! instruction a guest may not run, gets #UD. XSETBV is always intercepted too, but only
//! with CR4.OSXSAVE set, which QEMU 7.2's TCG does not let a guest set: here it raises #UD
//! before any intercept, the CPU's own check.
#![no_std]
#![no_main]

use core::arch::x86_64::_rdtsc;
use traplab_guests::traps::{TrapFrame, set_handler};
use traplab_guests::{BootInfo, guest_main, println};

/// `vmload rax` (0f 01 da), `xsetbv` (0f 01 d1) and `mov rax, dr0` (0f 21 c0) are 3 bytes.
const LENGTH: u64 = 3;
/// DR7.GD, general detect (bit 13), and DR6.BD, the #DB it raises (bit 13).
const DR7_GD: u64 = 1 << 13;
const DR6_BD: u64 = 1 << 13;

fn invalid_opcode(frame: &mut TrapFrame) {
    println!("#UD at {:#x}: skipping the 3-byte instruction", frame.rip);
    frame.rip += LENGTH;
}

/// General detect's #DB: a fault, before the MOV with a debug register runs. The CPU cleared
/// GD for the handler, so it may read DR6 (AMD APM vol. 2, 13.1.1).
fn general_detect(frame: &mut TrapFrame) {
    let dr6: u64;
    // SAFETY: reading DR6 has no side effects; GD is clear here.
    unsafe { core::arch::asm!("mov {}, dr6", out(reg) dr6, options(nostack)) };
    println!(
        "#DB at {:#x}: general detect, DR6.BD = {}; skipping the MOV",
        frame.rip,
        (dr6 & DR6_BD != 0) as u8
    );
    // DR6's bits stay until software clears them: BD cleared, the next #DB says its own cause.
    // SAFETY: writing DR6 has no side effects.
    unsafe { core::arch::asm!("mov dr6, {}", in(reg) dr6 & !DR6_BD, options(nostack)) };
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
    set_handler(1, general_detect);
    println!("setting DR7.GD: on a CPU the next MOV with a debug register raises #DB first");
    // SAFETY: GD only makes the next MOV DR fault; the #DB handler skips that MOV.
    unsafe {
        core::arch::asm!("mov dr7, {}", in(reg) DR7_GD, options(nostack));
        core::arch::asm!("mov rax, dr0", out("rax") _, options(nostack));
    }
    let dr7: u64;
    // SAFETY: reading DR7 has no side effects (GD is clear again).
    unsafe { core::arch::asm!("mov {}, dr7", out(reg) dr7, options(nostack)) };
    match dr7 & DR7_GD {
        0 => println!("DR7 after the #DB: {dr7:#x} (GD clear)"),
        // What QEMU's TCG, which has no GD, would do alone: the hypervisor takes a MOV to DR7
        // in every lab, and every MOV with a debug register while GD is set.
        _ => println!("DR7 is {dr7:#x}, GD still set: no #DB came (QEMU's TCG has no GD)"),
    }
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
