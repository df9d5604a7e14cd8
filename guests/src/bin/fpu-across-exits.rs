//! `fpu-across-exits` (test guest): the guest's x87/SSE state survives the hypervisor, and
//! the other domains.
//!
//! VMRUN and #VMEXIT do not switch the x87/SSE registers (AMD APM vol. 2, 15.5). The
//! hypervisor's own code uses the XMM registers (every memcpy does), so its world switch
//! stores the guest's after each exit and loads them before VMRUN. The rest (the x87
//! registers, their control word, MXCSR) it leaves in the CPU, and switches only when
//! another domain runs or gdb looks (`hv/src/svm/fpu.rs`). So a guest that leaves values
//! in all of them, then traps and gives the CPU away, must find them again.
//!
//! This one fills all sixteen XMM registers with patterns of its own domain's, sets MXCSR
//! and the x87 control word to values other than the ones at reset (and other than the
//! next domain's), pushes two integers on the x87 stack, then makes a hundred CPUID exits,
//! each followed by a yield (another domain running beside it takes the CPU there), and
//! reads everything back, all in one assembly block so that no compiled code of its own
//! touches the registers. Run two side by side (`labs/tests/domains.rs`) and each one's
//! state crosses a hundred switches to the other's.
#![no_std]
#![no_main]

use core::mem::offset_of;
use traplab_abi::hypercall::SCHED_OP;
use traplab_abi::sched::cmd::YIELD;
use traplab_guests::{BootInfo, guest_main, println};

/// CPUID exits (each followed by a yield) between writing the registers and reading them
/// back.
const EXITS: u64 = 100;

/// What the assembly block reads and writes, in one place: one register points to it.
#[repr(C)]
#[derive(Default)]
struct Registers {
    xmm: [[u8; 16]; 16],
    mxcsr: u32,
    fcw: u16,
    /// The two integers pushed on the x87 stack, in push order (the second is ST0).
    x87: [i64; 2],
}

/// This domain's values, unlike the next domain's and unlike the reset values (MXCSR
/// 0x1f80, FCW 0x37f).
fn values(domain: u32) -> Registers {
    let mut values = Registers::default();
    // XMM register `n`: its number and the domain's in every byte, so a register that
    // held another's value says whose.
    for (n, xmm) in values.xmm.iter_mut().enumerate() {
        *xmm = [((domain as u8) << 5) | 0x10 | n as u8; 16];
    }
    // Every exception masked; rounding toward zero (bits 13–14) in odd domains, up in
    // even ones. The FCW: single precision (bits 8–9 = 0), rounding to nearest or down.
    (values.mxcsr, values.fcw) = if domain % 2 == 1 {
        (0x7f80, 0x007f)
    } else {
        (0x5f80, 0x047f)
    };
    values.x87 = [1_000_003 * domain as i64, -7_777_777 - domain as i64];
    values
}

fn main(info: &BootInfo) -> i32 {
    let written = values(info.domain);
    let mut read = Registers::default();
    let mut saved = Registers::default();
    // SAFETY: the block changes no register of the compiled code's but those it declares
    // (and RBX, which LLVM keeps for itself: CPUID's, saved in R9 and put back); VMMCALL
    // changes only RAX (the hypercall ABI); the memory operands are the three structures
    // above; the stack is not touched; the two x87 registers pushed are popped, and the
    // compiled code's MXCSR and FCW are put back.
    unsafe {
        core::arch::asm!(
            // Keep the compiled code's MXCSR and FCW, then set ours.
            "stmxcsr [{saved} + {mxcsr}]",
            "fnstcw [{saved} + {fcw}]",
            "ldmxcsr [{written} + {mxcsr}]",
            "fldcw [{written} + {fcw}]",
            "fild qword ptr [{written} + {x87}]",
            "fild qword ptr [{written} + {x87} + 8]",
            "movdqu xmm0, [{written} + 0]",
            "movdqu xmm1, [{written} + 16]",
            "movdqu xmm2, [{written} + 32]",
            "movdqu xmm3, [{written} + 48]",
            "movdqu xmm4, [{written} + 64]",
            "movdqu xmm5, [{written} + 80]",
            "movdqu xmm6, [{written} + 96]",
            "movdqu xmm7, [{written} + 112]",
            "movdqu xmm8, [{written} + 128]",
            "movdqu xmm9, [{written} + 144]",
            "movdqu xmm10, [{written} + 160]",
            "movdqu xmm11, [{written} + 176]",
            "movdqu xmm12, [{written} + 192]",
            "movdqu xmm13, [{written} + 208]",
            "movdqu xmm14, [{written} + 224]",
            "movdqu xmm15, [{written} + 240]",
            // A hundred exits: the hypervisor runs its exit path, and the trace's, each
            // time; and a hundred yields, where another domain may run.
            "mov r8, {exits}",
            "2:",
            "xor eax, eax",
            "xor ecx, ecx",
            "mov r9, rbx",
            "cpuid",
            "mov rbx, r9",
            "mov eax, {sched_op}",
            "mov edi, {yield_}",
            "xor esi, esi",
            "vmmcall",
            "dec r8",
            "jnz 2b",
            "movdqu [{read} + 0], xmm0",
            "movdqu [{read} + 16], xmm1",
            "movdqu [{read} + 32], xmm2",
            "movdqu [{read} + 48], xmm3",
            "movdqu [{read} + 64], xmm4",
            "movdqu [{read} + 80], xmm5",
            "movdqu [{read} + 96], xmm6",
            "movdqu [{read} + 112], xmm7",
            "movdqu [{read} + 128], xmm8",
            "movdqu [{read} + 144], xmm9",
            "movdqu [{read} + 160], xmm10",
            "movdqu [{read} + 176], xmm11",
            "movdqu [{read} + 192], xmm12",
            "movdqu [{read} + 208], xmm13",
            "movdqu [{read} + 224], xmm14",
            "movdqu [{read} + 240], xmm15",
            // ST0 is the second integer pushed.
            "fistp qword ptr [{read} + {x87} + 8]",
            "fistp qword ptr [{read} + {x87}]",
            "stmxcsr [{read} + {mxcsr}]",
            "fnstcw [{read} + {fcw}]",
            "ldmxcsr [{saved} + {mxcsr}]",
            "fldcw [{saved} + {fcw}]",
            written = in(reg) &raw const written,
            read = in(reg) &raw mut read,
            saved = in(reg) &raw mut saved,
            mxcsr = const offset_of!(Registers, mxcsr),
            fcw = const offset_of!(Registers, fcw),
            x87 = const offset_of!(Registers, x87),
            exits = const EXITS,
            sched_op = const SCHED_OP,
            yield_ = const YIELD,
            out("rax") _, out("rcx") _, out("rdx") _, out("rsi") _, out("rdi") _,
            out("r8") _, out("r9") _,
            out("xmm0") _, out("xmm1") _, out("xmm2") _, out("xmm3") _,
            out("xmm4") _, out("xmm5") _, out("xmm6") _, out("xmm7") _,
            out("xmm8") _, out("xmm9") _, out("xmm10") _, out("xmm11") _,
            out("xmm12") _, out("xmm13") _, out("xmm14") _, out("xmm15") _,
        )
    };
    let mut intact = true;
    for (n, (read, written)) in read.xmm.iter().zip(&written.xmm).enumerate() {
        if read != written {
            println!("XMM{n} changed across the exits: {:02x?}", read);
            intact = false;
        }
    }
    if (read.mxcsr, read.fcw) != (written.mxcsr, written.fcw) {
        println!(
            "MXCSR {:#x} (was {:#x}), FCW {:#x} (was {:#x}) after the exits",
            read.mxcsr, written.mxcsr, read.fcw, written.fcw
        );
        intact = false;
    }
    if read.x87 != written.x87 {
        println!(
            "the x87 stack held {:?} after the exits (was {:?})",
            read.x87, written.x87
        );
        intact = false;
    }
    if intact {
        println!("XMM0-XMM15, MXCSR, the x87 FCW and two x87 registers intact after {EXITS} exits");
        0
    } else {
        1
    }
}

guest_main!(main);
