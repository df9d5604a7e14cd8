//! `bound-range` (32-bit protected mode): #BR from BOUND.
//!
//! BOUND checks a signed index against a pair of bounds in memory and raises #BR when it is
//! outside them; it does not exist in 64-bit mode. #BR is a fault: the saved EIP is the
//! BOUND itself, so the handler skips its six bytes (`62 05` and a 32-bit address).
#![no_std]
#![no_main]

core::arch::global_asm!(include_str!("../protected32.s"));
// EXERCISE bound-range.1: fix the cause and retry instead of skipping: make the handler
// clamp the index (EAX in the frame, at offset 28) to the upper bound, 5, and return to the
// BOUND, which then passes; then check EAX and print `BOUND passed with the index clamped to 5`.
core::arch::global_asm!(
    r##"
    .section .text.bound, "ax"
    .code32
    .global main32
main32:
    mov dword ptr [handlers32 + 5 * 4], offset bound_handler
    mov esi, offset .Lchecking
    call print32
    mov eax, 10
    bound eax, [.Lbounds]           /* 10 is not in [0, 5]: #BR */
    mov esi, offset .Lback
    call print32
    xor eax, eax
    ret

bound_handler:
    mov esi, offset .Lcaught
    call print32
    mov eax, [esp + 4]
    add dword ptr [eax + 40], 6     /* skip the 6-byte BOUND */
    ret

    .section .rodata.bound, "a"
    .p2align 2
.Lbounds:
    .long 0, 5
.Lchecking:
    .asciz "BOUND 10 against [0, 5]\n"
.Lcaught:
    .asciz "#BR caught: a fault, the saved EIP is the BOUND; skipping its 6 bytes\n"
.Lback:
    .asciz "back after BOUND\n"
    .code64
    .text
"##
);

// The 64-bit runtime is linked in but never runs (see `overflow.rs`).
traplab_guests::guest_main!(never_called);
fn never_called(_info: &traplab_guests::BootInfo) -> i32 {
    1
}
