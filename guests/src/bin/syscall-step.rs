//! `syscall-step` (test guest): SYSCALL from ring 3 and SYSRET back, where gdb steps both
//! (`tui/tests/gdb.rs`).
//!
//! The kernel half turns SYSCALL on the way a 64-bit kernel does (AMD APM vol. 2, 6.1.1
//! "SYSCALL and SYSRET"): EFER.SCE, STAR with its selectors, LSTAR with the entry point
//! (`syscall_entry`) and SFMASK with the RFLAGS bits SYSCALL clears — TF, IF, DF, AC, NT and
//! IOPL, as Linux masks them — then goes to ring 3. There `syscall_user` runs SYSCALL
//! (`syscall_at`); `syscall_entry` keeps the R11 it got (the RFLAGS SYSCALL saved), puts 42 in
//! RAX and returns with SYSRET (`sysret_at`) to `after_sysret`, which reads RFLAGS.
//!
//! Then a second SYSCALL (RAX 1) asks the entry for SFMASK: RDMSR needs CPL 0 (APM vol. 3,
//! RDMSR), and a debugger that stepped the first SYSCALL lent its TF to SFMASK for that one
//! instruction and must have given it back.
//!
//! Nothing here sets TF. A #DB would find no handler and end the domain (status 129): a
//! debugger's TF that leaked into R11 comes back with SYSRET and traps in ring 3. The guest
//! exits with 0 when RAX came back 42 and neither the saved nor the restored RFLAGS has TF
//! (else 1 or 2), and with 3 when SFMASK is not what it set.
#![no_std]
#![no_main]

use core::sync::atomic::{AtomicU64, Ordering};
use traplab_abi::msr::{EFER, LSTAR, SFMASK, STAR};
use traplab_guests::{BootInfo, guest_main, println, selectors, user};
use x86_64::registers::model_specific::Msr;

const RFLAGS_TF: u64 = 1 << 8;
/// EFER.SCE: SYSCALL and SYSRET are allowed (APM vol. 2, 3.1.7).
const EFER_SCE: u64 = 1 << 0;
/// TF, IF, DF, IOPL, NT and AC: what Linux's SFMASK clears on the way in.
const SYSCALL_MASK: u64 = 0x4_7700;

/// The R11 `syscall_entry` found: the RFLAGS SYSCALL saved.
#[unsafe(no_mangle)]
static SYSCALL_R11: AtomicU64 = AtomicU64::new(0);

/// What `syscall_user` returns (RAX and RDX, the System V ABI's two-word return).
#[repr(C)]
struct Returned {
    rax: u64,
    rflags: u64,
}

unsafe extern "C" {
    /// SYSCALL at ring 3; RAX as the kernel returned it, RFLAGS right after SYSRET.
    fn syscall_user() -> Returned;
    /// SYSCALL at ring 3 with RAX 1: the entry returns SFMASK.
    fn sfmask_user() -> u64;
    /// The SYSCALL target (LSTAR).
    fn syscall_entry();
}

// SYSCALL writes RCX and R11 (caller-saved: the System V ABI lets a callee clobber them;
// RDMSR's RDX and the R8 that keeps RCX are too). The entry runs at CPL 0 on the user's
// stack (SYSCALL switches no stack) and needs none. RAX 0: the SYSCALL gdb steps; RAX 1:
// read SFMASK (MSR 0xC000_0084) into RAX.
core::arch::global_asm!(
    ".global syscall_user",
    "syscall_user:",
    "    xor eax, eax",
    ".global syscall_at",
    "syscall_at:",
    "    syscall",
    ".global after_sysret",
    "after_sysret:",
    "    pushfq",
    "    pop rdx",
    "    ret",
    ".global sfmask_user",
    "sfmask_user:",
    "    mov eax, 1",
    "    syscall",
    "    ret",
    ".global syscall_entry",
    "syscall_entry:",
    "    test eax, eax",
    "    jnz 2f",
    "    mov [rip + {saved_r11}], r11",
    "    mov eax, 42",
    ".global sysret_at",
    "sysret_at:",
    "    sysretq",
    // RDMSR takes the MSR in ECX, which holds the return RIP: kept in R8 meanwhile.
    "2:  mov r8, rcx",
    "    mov ecx, {sfmask}",
    "    rdmsr",
    "    mov rcx, r8",
    "    shl rdx, 32",
    "    or rax, rdx",
    "    sysretq",
    saved_r11 = sym SYSCALL_R11,
    sfmask = const SFMASK,
);

fn write_msr(msr: u32, value: u64) {
    // SAFETY: the hypervisor emulates these MSRs (`hv/src/exit/msr.rs`); the values are the
    // ones a 64-bit kernel writes, and SYSCALL runs only once they are all in place.
    unsafe { Msr::new(msr).write(value) }
}

fn user_mode() -> i32 {
    // SAFETY: `syscall_user` follows the System V ABI; SYSCALL is set up (main).
    let Returned { rax, rflags } = unsafe { syscall_user() };
    let saved = SYSCALL_R11.load(Ordering::SeqCst);
    println!("SYSCALL saved RFLAGS {saved:#x}; after SYSRET RAX {rax}, RFLAGS {rflags:#x}");
    if rax != 42 {
        return 1;
    }
    if saved & RFLAGS_TF != 0 || rflags & RFLAGS_TF != 0 {
        println!("TF that nobody in this guest set");
        return 2;
    }
    // SAFETY: as `syscall_user`; the entry preserves RCX and R11 for SYSRET.
    let sfmask = unsafe { sfmask_user() };
    if sfmask != SYSCALL_MASK {
        println!("SFMASK {sfmask:#x}, not the {SYSCALL_MASK:#x} this guest set");
        return 3;
    }
    0
}

fn main(_info: &BootInfo) -> i32 {
    let selectors = selectors();
    // STAR 47:32: SYSCALL's CS (SS is the next descriptor); STAR 63:48: SYSRET's base,
    // 64-bit CS = base + 16, SS = base + 8, RPL 3 (APM vol. 2, 6.1.1). The runtime's GDT has
    // that layout: kernel code, kernel data, user data, user code.
    let sysret_base = u64::from(selectors.user_data.0) - 8;
    let star = (u64::from(selectors.kernel_code.0) << 32) | (sysret_base << 48);
    write_msr(STAR, star);
    write_msr(LSTAR, syscall_entry as *const () as u64);
    write_msr(SFMASK, SYSCALL_MASK);
    // SAFETY: reading EFER has no side effect; setting SCE only allows SYSCALL/SYSRET.
    let efer = unsafe { Msr::new(EFER).read() };
    write_msr(EFER, efer | EFER_SCE);
    user::run(user_mode)
}

guest_main!(main);
