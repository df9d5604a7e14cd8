//! `invalid-tss` (32-bit protected mode): #TS from a task switch to a bad TSS.
//!
//! A far JMP to a TSS selector switches tasks in hardware: the CPU saves our registers in
//! our TSS and loads the new task's from its TSS. A 32-bit TSS must be at least 104 bytes
//! (limit >= 0x67); ours at 0x20 claims 32, so the CPU refuses with #TS, error code the
//! selector (AMD APM vol. 2, 12.2.3). Hardware task switching does not exist in 64-bit mode.
//! The hypervisor does not intercept task switches: the CPU does it, and raises the #TS.
#![no_std]
#![no_main]

core::arch::global_asm!(include_str!("../protected32.s"));
// EXERCISE invalid-tss.1: which check comes first? Give the new TSS its proper limit
// (103) but clear its descriptor's P bit (byte 5, bit 7): the CPU now raises #NP (vector
// 11) with the selector, before any task switch. Handle it the same way.
core::arch::global_asm!(
    r##"
    .section .text.tss, "ax"
    .code32
    .global main32
main32:
    mov dword ptr [handlers32 + 10 * 4], offset invalid_tss_handler
    mov edi, offset gdt32 + 0x20
    mov eax, offset .Lshort_tss
    mov ecx, 31                     /* limit 31: far too short */
    call tss_descriptor32
    mov esi, offset .Ljumping
    call print32
    .byte 0xea                      /* jmp far 0x20:0 (the offset is ignored for a TSS) */
    .long 0
    .word 0x20
    mov esi, offset .Lback
    call print32
    xor eax, eax
    ret

invalid_tss_handler:
    mov esi, offset .Lcaught
    call print32
    mov eax, [esp + 4]
    add dword ptr [eax + 40], 7     /* skip the 7-byte far JMP */
    ret

    .section .rodata.tss, "a"
.Ljumping:
    .asciz "far JMP to task 0x20, whose TSS limit is 31\n"
.Lcaught:
    .asciz "#TS caught: the task switch was refused; skipping the JMP\n"
.Lback:
    .asciz "still in the first task\n"

    .section .bss.tss, "aw", @nobits
    .p2align 4
.Lshort_tss:
    .skip 32
    .code64
    .text
"##
);

// The 64-bit runtime is linked in but never runs (see `overflow.rs`).
traplab_guests::guest_main!(never_called);
fn never_called(_info: &traplab_guests::BootInfo) -> i32 {
    1
}
