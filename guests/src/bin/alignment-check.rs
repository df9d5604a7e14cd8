//! `alignment-check`: #AC, and a class QEMU's TCG does not raise.
//!
//! With CR0.AM and RFLAGS.AC set, a misaligned access at CPL 3 raises #AC on a real CPU.
//! QEMU's TCG does not check alignment: the read below just works. So the guest asks the
//! hypervisor to deliver the #AC the hardware would have raised (`raise_event(17)`), and
//! the trace marks it synthetic. Nothing is faked silently.
#![no_std]
#![no_main]

use traplab_guests::hypercall::raise_event;
use traplab_guests::traps::{TrapFrame, set_handler};
use traplab_guests::{BootInfo, guest_main, println, user};

const CR0_AM: u64 = 1 << 18;
const RFLAGS_AC: u64 = 1 << 18;

fn alignment_check(frame: &mut TrapFrame) {
    println!(
        "#AC, error code {}, at {:#x} (CPL {})",
        frame.error_code,
        frame.rip,
        frame.cs & 3
    );
}

static DATA: [u8; 16] = [0; 16];

fn user_mode() -> i32 {
    let value: u32;
    // SAFETY: a 4-byte read at an odd address inside DATA, with RFLAGS.AC set.
    unsafe {
        core::arch::asm!(
            "pushfq", "or qword ptr [rsp], {ac}", "popfq",
            "mov eax, [{data} + 1]",
            data = in(reg) DATA.as_ptr(),
            ac = const RFLAGS_AC,
            out("eax") value,
        )
    };
    println!("a misaligned read at CPL 3 with AC on returned {value}: QEMU's TCG raised no #AC");
    println!("asking the hypervisor for the #AC a real CPU would raise");
    let result = raise_event(17, 0);
    println!("back from the #AC handler ({result})");
    0
}

fn main(_info: &BootInfo) -> i32 {
    set_handler(17, alignment_check);
    // SAFETY: alignment checking on; harmless at CPL 0, where it never applies.
    unsafe {
        core::arch::asm!("mov {0}, cr0", "or {0}, {am}", "mov cr0, {0}", out(reg) _, am = const CR0_AM)
    };
    // EXERCISE alignment-check.1: first ask for #AC here, at CPL 0, where no CPU raises it,
    // and print `raise_event(#AC) at CPL 0 returned N`.
    user::run(user_mode)
}

guest_main!(main);
