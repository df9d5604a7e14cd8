//! The faults of the `reflect-vs-bounce` lab: the same four, with the same handlers, run by
//! two guests — one lets the CPU deliver them through its IDT (reflect), the other asks the
//! hypervisor to deliver them (bounce, `crate::bounce`). Their traces differ only in how
//! each exception arrives and how its handler returns.

use crate::paging::{self, Flags};
use crate::println;
use crate::traps::{TrapFrame, set_handler};
use core::sync::atomic::{AtomicU64, Ordering};

// EXERCISE reflect-vs-bounce.1: add a fifth fault to both guests, #GP (vector 13), from a
// read of a non-canonical address (`mov rax, [rax]`, 3 bytes), handled by the same handler.
/// The vectors raised: #DE, #BP, #UD, #PF.
pub const VECTORS: [u8; 4] = [0, 3, 6, 14];
const UNMAPPED: u64 = 0x4000_0000;
/// Bytes to skip after a fault (`div ecx` and `ud2`: 2).
static SKIP: AtomicU64 = AtomicU64::new(0);

fn handler(frame: &mut TrapFrame) {
    let exception = traplab_abi::x86::exception(frame.vector as u8);
    println!(
        "{} at {:#x}, RSP {:#x}",
        exception.mnemonic, frame.rip, frame.rsp
    );
    match frame.vector {
        14 => {
            let address = x86_64::registers::control::Cr2::read_raw();
            paging::map_new(address & !0xfff, Flags::WRITABLE);
        }
        3 => {} // a trap: the saved RIP is already after the INT3
        _ => frame.rip += SKIP.load(Ordering::SeqCst),
    }
}

/// Raise the four faults, each handled by `handler`.
pub fn raise_all() {
    for vector in VECTORS {
        set_handler(vector, handler);
    }
    SKIP.store(2, Ordering::SeqCst);
    // SAFETY: #DE, skipped by the handler.
    unsafe {
        core::arch::asm!("div ecx", inout("eax") 1u32 => _, inout("edx") 0u32 => _, in("ecx") 0u32)
    };
    // SAFETY: #BP, a trap.
    unsafe { core::arch::asm!("int3") };
    // SAFETY: #UD, skipped by the handler.
    unsafe { core::arch::asm!("ud2") };
    // SAFETY: #PF; the handler maps the page and the write is retried.
    unsafe { (UNMAPPED as *mut u64).write_volatile(7) };
}
