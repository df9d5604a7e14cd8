//! `bad-vmrun` (test guest): run VMRUN, which a guest may not; get #UD.
#![no_std]
#![no_main]

use core::sync::atomic::{AtomicBool, Ordering};
use traplab_guests::traps::{TrapFrame, set_handler};
use traplab_guests::{BootInfo, guest_main, println};

/// `vmrun` is `0f 01 d8`.
const VMRUN_LENGTH: u64 = 3;
static GOT_UD: AtomicBool = AtomicBool::new(false);

fn invalid_opcode(frame: &mut TrapFrame) {
    println!("#UD at {:#x}: VMRUN is not for guests", frame.rip);
    GOT_UD.store(true, Ordering::SeqCst);
    frame.rip += VMRUN_LENGTH;
}

fn main(_info: &BootInfo) -> i32 {
    set_handler(6, invalid_opcode);
    // SAFETY: the hypervisor intercepts VMRUN and injects #UD, which our handler skips.
    unsafe { core::arch::asm!("vmrun rax", in("rax") 0x1000u64) };
    if GOT_UD.load(Ordering::SeqCst) { 0 } else { 1 }
}

guest_main!(main);
