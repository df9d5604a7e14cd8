//! `debug`: three ways to raise #DB, told apart by DR6 (AMD APM vol. 2, 13.1.1.3).
//!
//! 1. Single step: set RFLAGS.TF; after the next instruction the CPU raises #DB (a trap)
//!    with DR6.BS set. The handler clears TF in the saved RFLAGS, or it would never stop.
//! 2. A hardware breakpoint: DR0 = an address, DR7 enables it for execution; the CPU raises
//!    #DB (a fault) *before* executing it, with DR6.B0 set. The handler sets RFLAGS.RF so
//!    the instruction runs once without breaking again, and disables the breakpoint.
//! 3. ICEBP (INT1, opcode 0xF1): #DB after it. QEMU's TCG raises #UD for it instead; the
//!    hypervisor corrects that (a synthetic #DB in the trace).
#![no_std]
#![no_main]

use traplab_guests::traps::{TrapFrame, set_handler};
use traplab_guests::{BootInfo, guest_main, println};
use x86_64::registers::debug::{Dr6, Dr7};

const RFLAGS_TF: u64 = 1 << 8;
const RFLAGS_RF: u64 = 1 << 16;
const DR6_B0: u64 = 1 << 0;
const DR6_BS: u64 = 1 << 14;

fn debug(frame: &mut TrapFrame) {
    let dr6 = Dr6::read().bits();
    if dr6 & DR6_BS != 0 {
        println!("#DB single step, now at {:#x}: clearing TF", frame.rip);
        frame.rflags &= !RFLAGS_TF;
    } else if dr6 & DR6_B0 != 0 {
        println!("#DB breakpoint 0 at {:#x}: resuming with RF set", frame.rip);
        frame.rflags |= RFLAGS_RF;
        Dr7::write_raw(0);
    } else {
        println!("#DB from ICEBP, now at {:#x}", frame.rip);
    }
    // DR6 is sticky: clear it for the next #DB.
    // SAFETY: DR6's defined reset value.
    unsafe { core::arch::asm!("mov dr6, {}", in(reg) 0xffff_0ff0u64) };
}

fn main(_info: &BootInfo) -> i32 {
    set_handler(1, debug);
    println!("single step: setting TF");
    // SAFETY: TF makes the CPU trap after the next instruction; the handler clears it.
    unsafe {
        core::arch::asm!("pushfq", "or qword ptr [rsp], {tf}", "popfq", "nop", tf = const RFLAGS_TF)
    };
    println!("hardware breakpoint: DR0 on an instruction");
    let target: u64;
    // SAFETY: DR0 points at the NOP after label 2; DR7 bit 0 enables it for execution
    // (R/W0 = 00, LEN0 = 00); the handler disables it again.
    unsafe {
        core::arch::asm!(
            "lea {target}, [rip + 2f]",
            "mov dr0, {target}",
            "mov {scratch}, 1",
            "mov dr7, {scratch}",
            "2:",
            "nop",
            target = out(reg) target,
            scratch = out(reg) _,
        )
    };
    println!("the breakpoint was on {target:#x}");
    println!("ICEBP:");
    // SAFETY: INT1 raises #DB after itself (once the hypervisor corrects TCG's #UD).
    unsafe { core::arch::asm!(".byte 0xf1") };
    // EXERCISE debug.1: a fourth cause, a data breakpoint (a watchpoint): put the address
    // of a variable in DR1, enable it in DR7 for writes of 8 bytes (L1, R/W1 = 01, LEN1 = 10),
    // write the variable, and make the handler recognise DR6.B1; the last line becomes
    // `four #DB, four causes`.
    println!("three #DB, three causes");
    0
}

guest_main!(main);
