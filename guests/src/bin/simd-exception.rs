//! `simd-exception`: #XM, an unmasked SSE floating-point exception.
//!
//! With CR4.OSXMMEXCPT set (the hypervisor boots us so) and divide-by-zero unmasked in
//! MXCSR, DIVSS by zero raises #XM on a real CPU. QEMU's TCG records the error in MXCSR
//! (the ZE flag) but raises nothing; the guest sees the flag and asks the hypervisor for the
//! #XM hardware would have raised: a synthetic event in the trace.
#![no_std]
#![no_main]

use traplab_guests::hypercall::raise_event;
use traplab_guests::traps::{TrapFrame, set_handler};
use traplab_guests::{BootInfo, guest_main, println};

const MXCSR_ZE: u32 = 1 << 2;
const MXCSR_ZM: u32 = 1 << 9;

fn simd_exception(frame: &mut TrapFrame) {
    let mxcsr = u32::from_le_bytes([
        frame.fpu.0[24],
        frame.fpu.0[25],
        frame.fpu.0[26],
        frame.fpu.0[27],
    ]);
    println!(
        "#XM at {:#x}: MXCSR {mxcsr:#x}; clearing the flags",
        frame.rip
    );
    frame.fpu.0[24..28].copy_from_slice(&(0x1f80u32).to_le_bytes());
}

fn main(_info: &BootInfo) -> i32 {
    set_handler(19, simd_exception);
    let mxcsr: u32;
    // SAFETY: MXCSR with ZM clear, one DIVSS 1.0 / 0.0, then read MXCSR; XMM0/1 declared.
    unsafe {
        core::arch::asm!(
            "sub rsp, 8",
            "mov dword ptr [rsp], {mxcsr}",
            "ldmxcsr [rsp]",
            "mov eax, 0x3f800000",
            "movd xmm0, eax",
            "xorps xmm1, xmm1",
            "divss xmm0, xmm1",
            "stmxcsr [rsp]",
            "mov eax, [rsp]",
            "add rsp, 8",
            mxcsr = const 0x1f80 & !MXCSR_ZM,
            out("eax") mxcsr,
            out("xmm0") _,
            out("xmm1") _,
        )
    };
    println!("DIVSS 1.0 / 0.0 with ZE unmasked: MXCSR is {mxcsr:#x}, and no #XM came");
    if mxcsr & MXCSR_ZE == 0 {
        println!("the zero-divide flag is not even set");
        return 1;
    }
    println!("asking the hypervisor for the #XM a real CPU would raise");
    raise_event(19, 0);
    println!("back from the #XM handler");
    // EXERCISE simd-exception.1: then clear CR4.OSXMMEXCPT (bit 10), handle #UD, and ask for
    // the #XM again: print a line starting `#UD` from the handler.
    0
}

guest_main!(main);
