//! `alignment-check`: #AC, and a class QEMU's TCG does not raise.
//!
//! A CPU raises #AC for a misaligned access only when three things hold: the access is at
//! CPL 3, the OS allows alignment checks (CR0.AM) and the program asks for them (RFLAGS.AC)
//! (AMD APM vol. 2, "#AC—Alignment-Check Exception"). QEMU's TCG does not check alignment
//! at all: the read below just works. So the guest asks the hypervisor to deliver the #AC
//! the hardware would have raised (`raise_event(17)`), and the trace marks it synthetic.
//! Nothing is faked silently.
//!
//! It asks three times from user mode: with CR0.AM clear, with RFLAGS.AC clear, and with
//! all three conditions met. A CPU would raise #AC only the last time; the hypervisor, as it
//! is, delivers all three (the lab's exercise makes it refuse the first two). User mode
//! cannot set CR0.AM itself: it asks its kernel with `int 0x2f`, through a gate of DPL 3, the
//! way a program makes a system call.
#![no_std]
#![no_main]

use traplab_guests::hypercall::raise_event;
use traplab_guests::traps::{TrapFrame, allow_from_user, set_handler};
use traplab_guests::{BootInfo, guest_main, println, user};

const CR0_AM: u64 = 1 << 18;
const RFLAGS_AC: u64 = 1 << 18;
/// The guest's one system call: turn alignment checking on (CR0.AM).
const ALLOW_ALIGNMENT_CHECKS: u8 = 0x2f;

fn alignment_check(frame: &mut TrapFrame) {
    println!(
        "#AC, error code {}, at {:#x} (CPL {})",
        frame.error_code,
        frame.rip,
        frame.cs & 3
    );
}

/// The kernel's side of `int 0x2f`, at CPL 0: CR0 is the kernel's to change. The trap
/// entry saved CR0 in the frame and loads it back on the way out (`TrapFrame::cr0`): AM is
/// set there, and is in CR0 from the handler's IRET on.
fn allow_alignment_checks(frame: &mut TrapFrame) {
    frame.cr0 |= CR0_AM;
    println!("the kernel set CR0.AM");
}

static DATA: [u8; 16] = [0; 16];

/// Set or clear RFLAGS.AC: user mode may change it (POPF at any CPL writes AC).
fn set_alignment_flag(on: bool) {
    // SAFETY: changes RFLAGS.AC alone; the stack is balanced.
    unsafe {
        if on {
            core::arch::asm!("pushfq", "or qword ptr [rsp], {ac}", "popfq", ac = const RFLAGS_AC);
        } else {
            core::arch::asm!("pushfq", "and qword ptr [rsp], {ac}", "popfq", ac = const !RFLAGS_AC);
        }
    }
}

/// A 4-byte read at an odd address.
fn misaligned_read() -> u32 {
    let value: u32;
    // SAFETY: the 4 bytes at DATA + 1 are inside DATA.
    unsafe {
        core::arch::asm!("mov {0:e}, [{data} + 1]", out(reg) value, data = in(reg) DATA.as_ptr())
    };
    value
}

fn user_mode() -> i32 {
    set_alignment_flag(true);
    println!(
        "a misaligned read at CPL 3 with AC on but CR0.AM clear returned {}: no CPU checks it",
        misaligned_read()
    );
    println!(
        "raise_event(#AC) at CPL 3 with CR0.AM clear returned {}",
        raise_event(17, 0)
    );
    // SAFETY: the kernel's gate for this vector has DPL 3 (`main`).
    unsafe { core::arch::asm!("int {vector}", vector = const ALLOW_ALIGNMENT_CHECKS) };
    set_alignment_flag(false);
    println!(
        "raise_event(#AC) at CPL 3 with RFLAGS.AC clear returned {}",
        raise_event(17, 0)
    );
    set_alignment_flag(true);
    let value = misaligned_read();
    println!("a misaligned read at CPL 3 with AC on returned {value}: QEMU's TCG raised no #AC");
    println!("asking the hypervisor for the #AC a real CPU would raise");
    let result = raise_event(17, 0);
    println!("back from the #AC handler ({result})");
    0
}

fn main(_info: &BootInfo) -> i32 {
    set_handler(17, alignment_check);
    set_handler(ALLOW_ALIGNMENT_CHECKS, allow_alignment_checks);
    allow_from_user(ALLOW_ALIGNMENT_CHECKS);
    // EXERCISE alignment-check.1: first ask for #AC here, at CPL 0, where no CPU raises it,
    // and print `raise_event(#AC) at CPL 0 returned N`.
    user::run(user_mode)
}

guest_main!(main);
