//! The guest's x87 and SSE state: what stays in the CPU across an exit, and when it comes
//! out.
//!
//! VMRUN and #VMEXIT do not switch the x87/SSE state (AMD APM vol. 2, 15.5: it is not in
//! the VMCB), so when an exit reaches us the CPU's XMM registers, x87 registers, their
//! control and status words and MXCSR are the guest's. We switch only the part our own
//! code uses:
//!
//! - **The 16 XMM registers**: the compiler copies and clears memory with them (MOVUPS,
//!   XORPS) all along the exit path. The world switch stores them into the vCPU's FXSAVE
//!   image after each exit and loads them back before VMRUN: 32 moves.
//! - **The rest** (the x87 registers and words, MXCSR): no instruction of the hypervisor
//!   reads or writes them. It executes no x87 or MMX instruction and no SSE arithmetic
//!   (`labs/tests/hypervisor_image.rs` reads the image and checks). So they stay in the CPU,
//!   the guest's, from one exit to the next: the vCPU's `fpu_in_cpu` says so. They come out
//!   into the image ([`take_out`]) only when someone else needs the CPU's or the image
//!   whole: another vCPU about to run (`run.rs`'s `switch_in` takes out the previous
//!   one's), or gdb reading or writing them. The world switch loads the whole image
//!   (FXRSTOR) before a VMRUN whose vCPU's `fpu_in_cpu` is clear: its first, and its first
//!   after one of those.
//!
//! That is what Xen does with a PV guest's FPU state: it switches it with the vCPU, not at
//! each trap; Xen's own code, built without SSE, uses no XMM register either.
//!
//! Saving and loading all 512 bytes (FXSAVE, FXRSTOR) at every trap cost under QEMU's TCG
//! two loops in C over the image, through QEMU's slow path: 12,500 of QEMU's instructions a
//! trap, 7% of the bare world switch (`tools/qemu-cost.sh`, book/src/speed.md).
//!
//! At most one vCPU's `fpu_in_cpu` is set: the last one the world switch ran, unless
//! [`take_out`] cleared it since.
//!
//! The System V ABI makes the x87 control word and MXCSR's control bits callee-saved (a
//! function returns with the values it was called with), and wants the x87 stack empty,
//! not in MMX use, at every call. `world_switch` returns with the guest's words, and its
//! x87 stack as the guest left it. That is safe only because the hypervisor never executes
//! an instruction they govern, which the image test keeps true.

use core::arch::asm;
use traplab_hv::domain::vcpu::GuestContext;

/// The CPU's x87 state and MXCSR into the vCPU's FXSAVE image, if the CPU holds them: the
/// image is then whole, for another vCPU to take the CPU, or for gdb to read and write.
/// (Never inlined: the image test, `labs/tests/hypervisor_image.rs`, finds the instructions
/// that touch the x87 state by the function they are in.)
#[inline(never)]
pub fn take_out(context: &mut GuestContext) {
    if !context.fpu_in_cpu {
        return;
    }
    let image = context.guest_fpu.0.as_mut_ptr();
    // SAFETY: FXSAVE writes the 512 bytes of `guest_fpu`, 16-aligned (`FxsaveArea`'s
    // `repr`). The CPU's XMM registers are the hypervisor's scratch by now, so they are
    // first loaded from the image, which holds the guest's (XMM0 at byte 160, AMD APM
    // vol. 5, FXSAVE): FXSAVE writes them back unchanged beside the x87 state and MXCSR.
    // The XMM registers are declared clobbered.
    unsafe {
        asm!(
            "movaps xmm0, [{image} + 160]",
            "movaps xmm1, [{image} + 176]",
            "movaps xmm2, [{image} + 192]",
            "movaps xmm3, [{image} + 208]",
            "movaps xmm4, [{image} + 224]",
            "movaps xmm5, [{image} + 240]",
            "movaps xmm6, [{image} + 256]",
            "movaps xmm7, [{image} + 272]",
            "movaps xmm8, [{image} + 288]",
            "movaps xmm9, [{image} + 304]",
            "movaps xmm10, [{image} + 320]",
            "movaps xmm11, [{image} + 336]",
            "movaps xmm12, [{image} + 352]",
            "movaps xmm13, [{image} + 368]",
            "movaps xmm14, [{image} + 384]",
            "movaps xmm15, [{image} + 400]",
            "fxsave [{image}]",
            image = in(reg) image,
            out("xmm0") _, out("xmm1") _, out("xmm2") _, out("xmm3") _,
            out("xmm4") _, out("xmm5") _, out("xmm6") _, out("xmm7") _,
            out("xmm8") _, out("xmm9") _, out("xmm10") _, out("xmm11") _,
            out("xmm12") _, out("xmm13") _, out("xmm14") _, out("xmm15") _,
            options(nostack, preserves_flags),
        );
    }
    context.fpu_in_cpu = false;
}
