//! The world switch: from the hypervisor into the guest and back.
//!
//! VMRUN (AMD APM vol. 2, 15.5) saves part of the host state in the host save area
//! (VM_HSAVE_PA), loads the guest state from the VMCB, delivers an event if EVENTINJ asks
//! for one, and runs the guest. When an intercepted event happens, #VMEXIT stores the guest
//! state and the exit code in the VMCB and reloads the host state: execution continues
//! *after* our VMRUN instruction, as if it had been a call.
//!
//! What the hardware does not switch, we switch here, in this order (the registers are a
//! `GuestContext`, `domain/vcpu.rs`, whose field offsets the assembly below uses):
//!
//! 1. the host's callee-saved registers go on the stack (we are called like a function);
//! 2. the guest's x87/SSE state: the CPU does not switch it. The hypervisor's code uses the
//!    XMM registers (the compiler copies and clears memory with them), so those are loaded
//!    from the vCPU's FXSAVE image here and stored back in step 8. The rest (the x87
//!    registers and words, MXCSR) the hypervisor never uses: it stays in the CPU from one
//!    exit to the next, and is loaded here (FXRSTOR, the whole image) only when the CPU
//!    does not hold it, the context's `fpu_in_cpu` clear (`svm/fpu.rs`);
//! 3. CLGI: no interrupt may arrive between here and VMRUN (15.17 "Global Interrupt Flag");
//!    then STI: with V_INTR_MASKING, our IF at VMRUN decides whether physical interrupts
//!    exit the guest (15.21.1), and we want them to (`timer.rs`);
//! 4. VMLOAD the guest's FS, GS, TR, LDTR, KernelGSBase, STAR/LSTAR/CSTAR/SFMASK and
//!    SYSENTER MSRs: VMRUN loads only the rest (15.5.2 "VMSAVE and VMLOAD");
//! 5. load the guest's general registers: VMRUN switches only RAX, RSP, RIP and RFLAGS;
//! 6. VMRUN. …the guest runs until an intercept… #VMEXIT;
//! 7. store the guest's general registers, VMSAVE its hidden state, VMLOAD ours, CLI (a
//!    pending interrupt waits for the INTR handler), STGI;
//! 8. store the guest's XMM registers into its FXSAVE image; pop, return (with the guest's
//!    x87 control word and MXCSR: `svm/fpu.rs` says why that is safe). Before, the whole
//!    state went through FXSAVE after each exit and FXRSTOR before each VMRUN: under TCG a
//!    loop in C each, 12,500 of QEMU's instructions a trap (book/src/speed.md).

use core::arch::naked_asm;
use traplab_hv::domain::vcpu::GuestContext;

/// Run the guest until its next #VMEXIT.
///
/// # Safety
/// `guest_vmcb` is the physical address of a valid VMCB whose guest state passes VMRUN's
/// checks, `host_save` the physical address of a page VMSAVE filled with our own state,
/// and SVM is enabled (EFER.SVME, VM_HSAVE_PA). The context's FXSAVE image has no
/// reserved bit of MXCSR set, or FXRSTOR raises #GP: it starts as FNINIT leaves the state,
/// FXSAVE fills it, and gdb's writes clear those bits (`gdb/target.rs`).
#[unsafe(naked)]
pub unsafe extern "sysv64" fn world_switch(
    context: *mut GuestContext,
    guest_vmcb: u64,
    host_save: u64,
) {
    naked_asm!(
        // 1. Callee-saved registers, then our three arguments for after the exit.
        "push rbp",
        "push rbx",
        "push r12",
        "push r13",
        "push r14",
        "push r15",
        "push rdi", // [rsp + 16]: the context
        "push rdx", // [rsp + 8]:  the host save area
        "push rsi", // [rsp]:      the guest VMCB
        // 2. The guest's whole x87/SSE state if the CPU does not hold it (its first VMRUN,
        //    or another vCPU or gdb took it out: `svm/fpu.rs`), then its XMM registers,
        //    from its FXSAVE image (XMM0 at byte 160).
        "cmp byte ptr [rdi + 640], 0",
        "jne 2f",
        "fxrstor [rdi + 128]",
        "mov byte ptr [rdi + 640], 1",
        "2:",
        "movaps xmm0, [rdi + 288]",
        "movaps xmm1, [rdi + 304]",
        "movaps xmm2, [rdi + 320]",
        "movaps xmm3, [rdi + 336]",
        "movaps xmm4, [rdi + 352]",
        "movaps xmm5, [rdi + 368]",
        "movaps xmm6, [rdi + 384]",
        "movaps xmm7, [rdi + 400]",
        "movaps xmm8, [rdi + 416]",
        "movaps xmm9, [rdi + 432]",
        "movaps xmm10, [rdi + 448]",
        "movaps xmm11, [rdi + 464]",
        "movaps xmm12, [rdi + 480]",
        "movaps xmm13, [rdi + 496]",
        "movaps xmm14, [rdi + 512]",
        "movaps xmm15, [rdi + 528]",
        // 3. and 4.
        "clgi",
        "sti",
        "mov rax, rsi",
        "vmload rax",
        // 5. The guest's general registers; RDI last, it points to them.
        "mov rbx, [rdi + 0]",
        "mov rcx, [rdi + 8]",
        "mov rdx, [rdi + 16]",
        "mov rsi, [rdi + 24]",
        "mov rbp, [rdi + 40]",
        "mov r8, [rdi + 48]",
        "mov r9, [rdi + 56]",
        "mov r10, [rdi + 64]",
        "mov r11, [rdi + 72]",
        "mov r12, [rdi + 80]",
        "mov r13, [rdi + 88]",
        "mov r14, [rdi + 96]",
        "mov r15, [rdi + 104]",
        "mov rdi, [rdi + 32]",
        // 6. Enter the guest. RAX holds the VMCB's physical address.
        "vmrun rax",
        // #VMEXIT: RSP, RIP and RAX are ours again (restored from the host save area).
        // 7. Store the guest's general registers.
        "mov rax, [rsp + 16]",
        "mov [rax + 0], rbx",
        "mov [rax + 8], rcx",
        "mov [rax + 16], rdx",
        "mov [rax + 24], rsi",
        "mov [rax + 32], rdi",
        "mov [rax + 40], rbp",
        "mov [rax + 48], r8",
        "mov [rax + 56], r9",
        "mov [rax + 64], r10",
        "mov [rax + 72], r11",
        "mov [rax + 80], r12",
        "mov [rax + 88], r13",
        "mov [rax + 96], r14",
        "mov [rax + 104], r15",
        "mov rdi, rax",
        "mov rax, [rsp]",
        "vmsave rax",
        "mov rax, [rsp + 8]",
        "vmload rax",
        "cli",
        "stgi",
        // 8. The guest's XMM registers, into its FXSAVE image.
        "movaps [rdi + 288], xmm0",
        "movaps [rdi + 304], xmm1",
        "movaps [rdi + 320], xmm2",
        "movaps [rdi + 336], xmm3",
        "movaps [rdi + 352], xmm4",
        "movaps [rdi + 368], xmm5",
        "movaps [rdi + 384], xmm6",
        "movaps [rdi + 400], xmm7",
        "movaps [rdi + 416], xmm8",
        "movaps [rdi + 432], xmm9",
        "movaps [rdi + 448], xmm10",
        "movaps [rdi + 464], xmm11",
        "movaps [rdi + 480], xmm12",
        "movaps [rdi + 496], xmm13",
        "movaps [rdi + 512], xmm14",
        "movaps [rdi + 528], xmm15",
        "add rsp, 24",
        "pop r15",
        "pop r14",
        "pop r13",
        "pop r12",
        "pop rbx",
        "pop rbp",
        "ret",
    )
}
