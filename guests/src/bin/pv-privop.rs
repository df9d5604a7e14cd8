//! `pv-privop`: a kernel that runs at CPL 3, as an x86-64 Xen PV kernel does.
//!
//! We register a #GP handler with the hypervisor (`set_trap_table`: exceptions are
//! bounced), ask for PV mode (`set_pv_mode`) and drop to CPL 3. From there the "kernel"
//! uses privileged instructions as if it owned the machine. Each one raises #GP; the
//! hypervisor decodes it and emulates it — or, when it is not allowed, bounces the #GP to
//! our handler, which counts it and skips the instruction:
//!
//! - MOV from CR3 and MOV to CR3 (our own root: allowed; 1 GiB, outside our RAM: refused);
//! - CLI and STI, on a virtual interrupt flag;
//! - OUT to the console UART and IN from its line status register;
//! - RDMSR EFER, WRMSR and RDMSR of STAR;
//! - LIDT: not something a PV kernel may do (refused);
//! - finally CLI; HLT, which ends the domain (status 0) — if everything went as expected.
#![no_std]
#![no_main]

use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use traplab_guests::hypercall::{exit, set_pv_mode};
use traplab_guests::traps::{TrapFrame, set_handler};
use traplab_guests::{BootInfo, bounce, guest_main, println, user};

const STAR: u32 = 0xc000_0081;
const EFER: u32 = 0xc000_0080;
/// 1 GiB: far beyond our 16 MiB of RAM.
const BAD_ROOT: u64 = 0x4000_0000;
const CONSOLE_PORT: u16 = 0x3f8;
const LINE_STATUS_PORT: u16 = 0x3fd;

/// How long the instruction the handler skips is.
static SKIP: AtomicU64 = AtomicU64::new(0);
static OWN_FAULTS: AtomicU32 = AtomicU32::new(0);

fn general_protection(frame: &mut TrapFrame) {
    println!(
        "#GP({:#x}) at {:#x}, CPL {}: refused, skipped",
        frame.error_code,
        frame.rip,
        frame.cs & 3
    );
    OWN_FAULTS.fetch_add(1, Ordering::SeqCst);
    frame.rip += SKIP.load(Ordering::SeqCst);
}

fn rdmsr(msr: u32) -> u64 {
    let (low, high): (u32, u32);
    // SAFETY: privileged at CPL 3: the hypervisor emulates it.
    unsafe {
        core::arch::asm!("rdmsr", in("ecx") msr, out("eax") low, out("edx") high, options(nomem, nostack))
    };
    ((high as u64) << 32) | low as u64
}

fn wrmsr(msr: u32, value: u64) {
    // SAFETY: as above.
    unsafe {
        core::arch::asm!("wrmsr", in("ecx") msr, in("eax") value as u32, in("edx") (value >> 32) as u32, options(nomem, nostack))
    };
}

fn kernel() -> i32 {
    let cs: u64;
    // SAFETY: reading CS is harmless.
    unsafe { core::arch::asm!("mov {}, cs", out(reg) cs, options(nomem, nostack)) };
    println!("the kernel runs at CPL {}", cs & 3);

    let root: u64;
    // SAFETY: privileged at CPL 3: each of these raises #GP, which the hypervisor emulates.
    unsafe { core::arch::asm!("mov rax, cr3", out("rax") root, options(nomem, nostack)) };
    println!("CR3 = {root:#x}");
    // SAFETY: as above: our own root, so nothing changes but a TLB flush.
    unsafe { core::arch::asm!("mov cr3, rax", in("rax") root, options(nostack)) };
    println!("CR3 written back");
    // `mov cr3, rax` is 0f 22 d8: 3 bytes.
    SKIP.store(3, Ordering::SeqCst);
    // SAFETY: refused by the hypervisor; our handler skips it.
    unsafe { core::arch::asm!("mov cr3, rax", in("rax") BAD_ROOT, options(nostack)) };

    // SAFETY: emulated on the virtual interrupt flag: RFLAGS.IF does not change.
    unsafe { core::arch::asm!("cli", "sti", "cli", options(nostack)) };

    for &byte in b"written with OUT at CPL 3\n" {
        // SAFETY: emulated: the console UART's transmit register.
        unsafe {
            core::arch::asm!("out dx, al", in("dx") CONSOLE_PORT, in("al") byte, options(nomem, nostack))
        };
    }
    let line_status: u8;
    // SAFETY: emulated: the UART's line status register.
    unsafe {
        core::arch::asm!("in al, dx", in("dx") LINE_STATUS_PORT, out("al") line_status, options(nomem, nostack))
    };
    println!("UART line status {line_status:#x}");

    let efer = rdmsr(EFER);
    wrmsr(STAR, 0x0023_0008_0000_0000);
    let star = rdmsr(STAR);
    println!("EFER = {efer:#x}, STAR = {star:#x}");

    // EXERCISE pv-privop.1: run CLTS here; once the hypervisor emulates it, it is not refused.
    // `lidt [rax]` is 0f 01 18: 3 bytes.
    SKIP.store(3, Ordering::SeqCst);
    let descriptor = [0u8; 10];
    // SAFETY: refused (the guest's own #GP), skipped by our handler.
    unsafe { core::arch::asm!("lidt [rax]", in("rax") descriptor.as_ptr(), options(nostack)) };

    let own_faults = OWN_FAULTS.load(Ordering::SeqCst);
    println!("{own_faults} refused; halting");
    if cs & 3 != 3 || own_faults != 2 || star != 0x0023_0008_0000_0000 || line_status & 0x20 == 0 {
        exit(1);
    }
    // SAFETY: with the virtual interrupt flag clear, HLT ends the domain.
    unsafe { core::arch::asm!("cli", "hlt", options(nostack)) };
    2 // not reached: the hypervisor ended the domain at HLT
}

fn main(_info: &BootInfo) -> i32 {
    set_handler(13, general_protection);
    let table = bounce::use_trap_table(&[13]);
    let pv = set_pv_mode(true);
    println!("set_trap_table = {table}, set_pv_mode = {pv}");
    if table != 0 || pv != 0 {
        return 1;
    }
    user::run(kernel)
}

guest_main!(main);
