//! `breakpoint-across-switch` (test guest): a hardware breakpoint the guest sets itself
//! survives a switch to another domain.
//!
//! DR0–DR3 are not in the VMCB: VMRUN leaves them in the CPU, and a guest's `mov dr0` goes
//! there (without the setting `intercept-dr`, only a MOV to DR7 exits). The hypervisor
//! loads a vCPU's DR0–DR3 when it switches the vCPU in; they must be the ones the guest set,
//! not a copy from before. So: DR0 on an instruction, DR7 enabling it, yield (the other
//! domain runs), then run the instruction: #DB, DR6.B0. Exit 0 when the breakpoint fired,
//! 1 when the instruction ran without it.
#![no_std]
#![no_main]

use core::sync::atomic::{AtomicBool, Ordering};
use traplab_guests::traps::{TrapFrame, set_handler};
use traplab_guests::{BootInfo, guest_main, println, sched};
use x86_64::registers::debug::{Dr6, Dr7};

const RFLAGS_RF: u64 = 1 << 16;
const DR6_B0: u64 = 1 << 0;

/// The breakpoint fired.
static FIRED: AtomicBool = AtomicBool::new(false);

fn debug(frame: &mut TrapFrame) {
    if Dr6::read().bits() & DR6_B0 != 0 {
        println!("#DB breakpoint 0 at {:#x}", frame.rip);
        FIRED.store(true, Ordering::Relaxed);
        // Past it once, and off.
        frame.rflags |= RFLAGS_RF;
        Dr7::write_raw(0);
    }
    // SAFETY: DR6's defined reset value: it is sticky.
    unsafe { core::arch::asm!("mov dr6, {}", in(reg) 0xffff_0ff0u64) };
}

fn main(_info: &BootInfo) -> i32 {
    set_handler(1, debug);
    let target: u64;
    // SAFETY: DR0 points at the NOP after label 2 (the one at the end of this function's
    // second asm block, reached only after the yield); DR7 bit 0 enables it for execution
    // (R/W0 = 00, LEN0 = 00); the handler disables it.
    unsafe {
        core::arch::asm!(
            "lea {target}, [rip + 2f]",
            "mov dr0, {target}",
            "mov {scratch}, 1",
            "mov dr7, {scratch}",
            "jmp 3f",
            "2:",
            "nop",
            "ret",
            "3:",
            target = out(reg) target,
            scratch = out(reg) _,
        )
    };
    println!("DR0 = {target:#x}; yielding to the other domain");
    sched::yield_now();
    println!("back; running the instruction at DR0");
    // SAFETY: `target` is the `nop; ret` above: a call there returns at once.
    let breakpoint: extern "C" fn() = unsafe { core::mem::transmute(target as *const ()) };
    breakpoint();
    match FIRED.load(Ordering::Relaxed) {
        true => {
            println!("the breakpoint fired after the switch");
            0
        }
        false => {
            println!("the breakpoint did not fire: DR0 was lost in the switch");
            1
        }
    }
}

guest_main!(main);
