//! `general-protection`: #GP, the CPU's "you may not", three ways.
//!
//! 1. A non-canonical address (bits 63:47 not all equal): #GP(0).
//! 2. An MSR this CPU does not have: #GP(0). The hypervisor intercepts every RDMSR, so it is
//!    the one that answers #GP, as hardware would (a synthetic event in the trace).
//! 3. A privileged instruction at CPL 3: CLI in user mode (IOPL is 0): #GP(0).
#![no_std]
#![no_main]

use core::sync::atomic::{AtomicU64, Ordering};
use traplab_guests::traps::{TrapFrame, set_handler};
use traplab_guests::{BootInfo, guest_main, println, user};

/// The length of the faulting instruction to skip.
static SKIP: AtomicU64 = AtomicU64::new(0);

fn general_protection(frame: &mut TrapFrame) {
    let ring = frame.cs & 3;
    println!(
        "#GP({:#x}) at {:#x}, CPL {ring}: skipping it",
        frame.error_code, frame.rip
    );
    frame.rip += SKIP.load(Ordering::SeqCst);
}

fn user_mode() -> i32 {
    println!("CLI at CPL 3:");
    SKIP.store(1, Ordering::SeqCst);
    // SAFETY: CLI at CPL 3 with IOPL 0 faults, and the handler skips it.
    unsafe { core::arch::asm!("cli") };
    println!("three #GP");
    0
}

fn main(_info: &BootInfo) -> i32 {
    set_handler(13, general_protection);
    println!("reading the non-canonical address 0x800000000000:");
    SKIP.store(3, Ordering::SeqCst);
    // SAFETY: `mov rax, [rax]` (48 8b 00) faults, and the handler skips it.
    unsafe { core::arch::asm!("mov rax, [rax]", inout("rax") 0x8000_0000_0000u64 => _) };
    println!("RDMSR of MSR 0x1234, which does not exist:");
    SKIP.store(2, Ordering::SeqCst);
    // SAFETY: `rdmsr` (0f 32) faults (through the hypervisor), and the handler skips it.
    unsafe { core::arch::asm!("rdmsr", in("ecx") 0x1234u32, out("eax") _, out("edx") _) };
    // EXERCISE general-protection.1: a #GP with an error code that is not 0: load DS with
    // selector 0x1000, far beyond the GDT's limit (`mov ds, ax`, 2 bytes), and make the
    // last line `four #GP`.
    user::run(user_mode)
}

guest_main!(main);
