//! `fpu-across-exits` (test guest): the guest's x87/SSE state survives the hypervisor.
//!
//! VMRUN and #VMEXIT do not switch the x87/SSE registers (AMD APM vol. 2, 15.5): the
//! hypervisor's world switch loads the guest's with FXRSTOR before VMRUN and stores them
//! with FXSAVE after the exit, and its own Rust code uses XMM registers in between (every
//! memcpy does). So a guest that leaves a value in any XMM register, in MXCSR or in the
//! x87 control word, then traps, must find it again. This one fills all sixteen XMM
//! registers with different patterns, sets MXCSR and the FCW to values other than the ones
//! the hypervisor runs with, makes a hundred CPUID exits, and reads everything back, all in
//! one assembly block so that no compiled code of its own touches the registers.
#![no_std]
#![no_main]

use traplab_guests::{BootInfo, guest_main, println};

/// CPUID exits between writing the registers and reading them back.
const EXITS: u64 = 100;
/// Round toward zero (bits 13–14), every exception masked: not the 0x1f80 at reset.
const MXCSR: u32 = 0x7f80;
/// Single precision (bits 8–9 = 0), every exception masked: not the 0x37f at reset.
const FCW: u16 = 0x007f;

/// XMM register `n`'s pattern: its number in every byte, so a register that held another's
/// value says which.
fn pattern(n: usize) -> [u8; 16] {
    [0x10 + n as u8; 16]
}

fn main(_info: &BootInfo) -> i32 {
    let mut patterns = [[0u8; 16]; 16];
    for (n, slot) in patterns.iter_mut().enumerate() {
        *slot = pattern(n);
    }
    let mut read_back = [[0u8; 16]; 16];
    let (mut mxcsr, mut fcw): (u32, u16) = (0, 0);
    let (mut saved_mxcsr, mut saved_fcw): (u32, u16) = (0, 0);
    // SAFETY: the block changes no register of the compiled code's but those it declares
    // (and RBX, which LLVM keeps for itself: CPUID's, saved in R9 and put back); the memory
    // operands are this function's own arrays and values; the stack is not touched; the
    // compiled code's MXCSR and FCW are put back.
    unsafe {
        core::arch::asm!(
            // Keep the compiled code's MXCSR and FCW, then set ours.
            "stmxcsr [{saved_mxcsr}]",
            "fnstcw [{saved_fcw}]",
            "ldmxcsr [{mxcsr_in}]",
            "fldcw [{fcw_in}]",
            "movdqu xmm0, [{patterns} + 0]",
            "movdqu xmm1, [{patterns} + 16]",
            "movdqu xmm2, [{patterns} + 32]",
            "movdqu xmm3, [{patterns} + 48]",
            "movdqu xmm4, [{patterns} + 64]",
            "movdqu xmm5, [{patterns} + 80]",
            "movdqu xmm6, [{patterns} + 96]",
            "movdqu xmm7, [{patterns} + 112]",
            "movdqu xmm8, [{patterns} + 128]",
            "movdqu xmm9, [{patterns} + 144]",
            "movdqu xmm10, [{patterns} + 160]",
            "movdqu xmm11, [{patterns} + 176]",
            "movdqu xmm12, [{patterns} + 192]",
            "movdqu xmm13, [{patterns} + 208]",
            "movdqu xmm14, [{patterns} + 224]",
            "movdqu xmm15, [{patterns} + 240]",
            // A hundred exits: the hypervisor runs its exit path, and the trace's, each time.
            "mov r8, {exits}",
            "2:",
            "xor eax, eax",
            "xor ecx, ecx",
            "mov r9, rbx",
            "cpuid",
            "mov rbx, r9",
            "dec r8",
            "jnz 2b",
            "movdqu [{read_back} + 0], xmm0",
            "movdqu [{read_back} + 16], xmm1",
            "movdqu [{read_back} + 32], xmm2",
            "movdqu [{read_back} + 48], xmm3",
            "movdqu [{read_back} + 64], xmm4",
            "movdqu [{read_back} + 80], xmm5",
            "movdqu [{read_back} + 96], xmm6",
            "movdqu [{read_back} + 112], xmm7",
            "movdqu [{read_back} + 128], xmm8",
            "movdqu [{read_back} + 144], xmm9",
            "movdqu [{read_back} + 160], xmm10",
            "movdqu [{read_back} + 176], xmm11",
            "movdqu [{read_back} + 192], xmm12",
            "movdqu [{read_back} + 208], xmm13",
            "movdqu [{read_back} + 224], xmm14",
            "movdqu [{read_back} + 240], xmm15",
            "stmxcsr [{mxcsr_out}]",
            "fnstcw [{fcw_out}]",
            "ldmxcsr [{saved_mxcsr}]",
            "fldcw [{saved_fcw}]",
            mxcsr_in = in(reg) &MXCSR,
            fcw_in = in(reg) &FCW,
            patterns = in(reg) patterns.as_ptr(),
            read_back = in(reg) read_back.as_mut_ptr(),
            mxcsr_out = in(reg) &raw mut mxcsr,
            fcw_out = in(reg) &raw mut fcw,
            saved_mxcsr = in(reg) &raw mut saved_mxcsr,
            saved_fcw = in(reg) &raw mut saved_fcw,
            exits = const EXITS,
            out("rax") _, out("rcx") _, out("rdx") _, out("r8") _, out("r9") _,
            out("xmm0") _, out("xmm1") _, out("xmm2") _, out("xmm3") _,
            out("xmm4") _, out("xmm5") _, out("xmm6") _, out("xmm7") _,
            out("xmm8") _, out("xmm9") _, out("xmm10") _, out("xmm11") _,
            out("xmm12") _, out("xmm13") _, out("xmm14") _, out("xmm15") _,
        )
    };
    let mut intact = true;
    for (n, value) in read_back.iter().enumerate() {
        if *value != pattern(n) {
            println!("XMM{n} changed across the exits: {:02x?}", value);
            intact = false;
        }
    }
    if mxcsr != MXCSR || fcw != FCW {
        println!("MXCSR {mxcsr:#x} (was {MXCSR:#x}), FCW {fcw:#x} (was {FCW:#x}) after the exits");
        intact = false;
    }
    if intact {
        println!("XMM0-XMM15, MXCSR and the x87 FCW intact after {EXITS} exits");
        0
    } else {
        1
    }
}

guest_main!(main);
