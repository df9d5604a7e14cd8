//! `x87-error`: #MF, the x87 FPU's floating-point error, reported late.
//!
//! With the zero-divide exception unmasked in the x87 control word, FDIV by zero records
//! the error in the status word; the CPU raises #MF (CR0.NE = 1 makes it an exception, not
//! an external interrupt as on the IBM PC) at the *next* waiting x87 instruction: here
//! FWAIT. The handler clears the error (FNCLEX, in the saved FPU state) and FWAIT runs again.
#![no_std]
#![no_main]

use traplab_guests::traps::{TrapFrame, set_handler};
use traplab_guests::{BootInfo, guest_main, println};

fn x87_error(frame: &mut TrapFrame) {
    // The FSW is at offset 2 of the FXSAVE image; bit 2 is ZE, bit 7 ES.
    let status = u16::from_le_bytes([frame.fpu.0[2], frame.fpu.0[3]]);
    println!(
        "#MF at {:#x}: x87 status word {status:#06x} ({})",
        frame.rip,
        if status & 4 != 0 { "zero divide" } else { "?" }
    );
    // What FNCLEX does: clear the exception flags, so the FWAIT can complete.
    let cleared = status & !0x80ff;
    frame.fpu.0[2..4].copy_from_slice(&cleared.to_le_bytes());
}

fn main(_info: &BootInfo) -> i32 {
    set_handler(16, x87_error);
    println!("1 / 0 on the x87 with zero-divide unmasked, then FWAIT:");
    // SAFETY: the FWAIT faults (#MF) and the handler clears the pending error; FNINIT
    // leaves the FPU as it found it.
    unsafe {
        core::arch::asm!(
            "sub rsp, 8",
            "fnstcw [rsp]",
            "and word ptr [rsp], ~4", // unmask ZM (bit 2)
            "fldcw [rsp]",
            "add rsp, 8",
            "fld1",
            "fldz",
            "fdivp st(1), st",
            "fwait",
            "fninit",
        )
    };
    // EXERCISE x87-error.1: a second #MF, from 0 / 0: the invalid-operation exception (IE,
    // status bit 0; unmask it with control word bit 0). Make the handler name it:
    // `(invalid operation)`.
    println!("the pending x87 error was raised at FWAIT and cleared");
    0
}

guest_main!(main);
