//! `bad-hostile` (test guest): instructions a CPU answers with an exception, which the
//! hypervisor once answered by ending the domain (issue 16): `lock int 0x52` (#UD, where
//! QEMU's TCG exits as for the INT) and INSB into a page nothing maps (#PF, which the
//! hypervisor raises as it carries out the INS). Each handler records what it got and
//! skips the instruction; the guest ends with 0 when both came as a CPU raises them.
#![no_std]
#![no_main]

use core::sync::atomic::{AtomicU64, Ordering};
use traplab_guests::traps::{TrapFrame, set_handler};
use traplab_guests::{BootInfo, guest_main, println};
use x86_64::registers::control::Cr2;

/// 1 GiB: far above the 16 MiB the boot page tables map.
const UNMAPPED: u64 = 0x4000_0000;
/// A port with no device behind it: INSB reads 0xff there.
const NO_DEVICE: u16 = 0x80;

static UD_AT: AtomicU64 = AtomicU64::new(0);
static PF_CODE: AtomicU64 = AtomicU64::new(u64::MAX);
static PF_ADDRESS: AtomicU64 = AtomicU64::new(0);

fn invalid_opcode(frame: &mut TrapFrame) {
    println!("#UD at {:#x}", frame.rip);
    UD_AT.store(frame.rip, Ordering::SeqCst);
    frame.rip += 3; // f0 cd 52
}

fn page_fault(frame: &mut TrapFrame) {
    let address = Cr2::read_raw();
    println!(
        "#PF at {:#x}, error code {:#x}, CR2 {address:#x}",
        frame.rip, frame.error_code
    );
    PF_CODE.store(frame.error_code, Ordering::SeqCst);
    PF_ADDRESS.store(address, Ordering::SeqCst);
    frame.rip += 1; // insb
}

fn main(_info: &BootInfo) -> i32 {
    set_handler(6, invalid_opcode);
    set_handler(14, page_fault);
    // SAFETY: LOCK on INT raises #UD before the interrupt; the handler skips the three bytes.
    unsafe { core::arch::asm!(".byte 0xf0, 0xcd, 0x52") };
    // SAFETY: the INSB faults before it writes; the handler skips it.
    unsafe {
        core::arch::asm!("insb", in("dx") NO_DEVICE, inout("rdi") UNMAPPED => _, options(nostack))
    };
    let code = PF_CODE.load(Ordering::SeqCst);
    let address = PF_ADDRESS.load(Ordering::SeqCst);
    let ud = UD_AT.load(Ordering::SeqCst) != 0;
    println!("lock int: #UD {ud}; insb: #PF code {code:#x} at {address:#x}");
    // Not present (P = 0), a write (W/R = 1), supervisor (U/S = 0).
    if ud && code == 0b010 && address == UNMAPPED {
        0
    } else {
        1
    }
}

guest_main!(main);
