//! `single-step` (a test guest): RFLAGS.TF over instructions the hypervisor completes in the
//! CPU's place.
//!
//! With TF set when an instruction begins, the CPU raises #DB as a trap after it, DR6.BS
//! set, the frame's RIP at the next instruction (Intel SDM vol. 3B, 17.3.1.4). A CPUID or an
//! IN that the hypervisor intercepts never runs on the CPU: the hypervisor answers it and
//! moves RIP on, and it must raise that #DB itself, or the step lands one instruction late,
//! after the NOP behind it. Each step here is checked against the address of the instruction
//! after the stepped one: the domain exits with 0 when every #DB came where a CPU puts it.
#![no_std]
#![no_main]

use core::sync::atomic::{AtomicU64, Ordering};
use traplab_guests::traps::{TrapFrame, set_handler};
use traplab_guests::{BootInfo, guest_main, println};
use x86_64::registers::debug::Dr6;

const RFLAGS_TF: u64 = 1 << 8;
const DR6_BS: u64 = 1 << 14;

/// Where the last #DB came, and its DR6.
static STEPPED_TO: AtomicU64 = AtomicU64::new(0);
static STEP_DR6: AtomicU64 = AtomicU64::new(0);

fn debug(frame: &mut TrapFrame) {
    STEPPED_TO.store(frame.rip, Ordering::SeqCst);
    STEP_DR6.store(Dr6::read().bits(), Ordering::SeqCst);
    // One step: clear TF in the frame, and DR6 (sticky) for the next #DB.
    frame.rflags &= !RFLAGS_TF;
    // SAFETY: DR6's defined reset value.
    unsafe { core::arch::asm!("mov dr6, {}", in(reg) 0xffff_0ff0u64) };
}

/// Report where the step after `what` came, against `expected`: `true` when a CPU's would.
fn check(what: &str, expected: u64) -> bool {
    let (at, dr6) = (
        STEPPED_TO.swap(0, Ordering::SeqCst),
        STEP_DR6.load(Ordering::SeqCst),
    );
    let right = at == expected && dr6 & DR6_BS != 0;
    println!(
        "{what}: #DB at {at:#x}, DR6.BS {}: {}",
        u8::from(dr6 & DR6_BS != 0),
        if right {
            "right after it, as on a CPU"
        } else {
            "NOT where a CPU puts it"
        }
    );
    right
}

fn main(_info: &BootInfo) -> i32 {
    set_handler(1, debug);
    let after_cpuid: u64;
    // SAFETY: POPFQ sets TF, so the CPU traps after the instruction after it, CPUID (the
    // POPFQ itself began with TF clear); the handler clears TF in the frame. CPUID writes
    // EAX–EDX (RBX is saved around it).
    unsafe {
        core::arch::asm!(
            "push rbx",
            "lea {after}, [rip + 2f]",
            "xor eax, eax",
            "pushfq",
            "or qword ptr [rsp], {tf}",
            "popfq",
            "cpuid",
            "2:",
            "nop",
            "pop rbx",
            after = out(reg) after_cpuid,
            tf = const RFLAGS_TF,
            out("rax") _, out("rcx") _, out("rdx") _,
        )
    };
    let cpuid = check("CPUID", after_cpuid);
    let after_in: u64;
    // SAFETY: as above, over `in al, 0x80` (the POST port: no device, it reads all ones).
    unsafe {
        core::arch::asm!(
            "lea {after}, [rip + 2f]",
            "pushfq",
            "or qword ptr [rsp], {tf}",
            "popfq",
            "in al, 0x80",
            "2:",
            "nop",
            after = out(reg) after_in,
            tf = const RFLAGS_TF,
            out("rax") _,
        )
    };
    let port = check("IN", after_in);
    i32::from(!(cpuid && port))
}

guest_main!(main);
