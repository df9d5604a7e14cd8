//! `overflow` (32-bit protected mode): #OF from INTO.
//!
//! INTO raises #OF when RFLAGS.OF is set; it does not exist in 64-bit mode, so this guest
//! runs in 32-bit protected mode (`protected32.s`). 0x7F + 1 overflows a signed byte, so
//! OF is set. #OF is a trap: the saved EIP is after INTO, and the handler just returns.
//! Under QEMU's TCG, INTO (like INT3) exits as a software interrupt (SWINT).
#![no_std]
#![no_main]

core::arch::global_asm!(include_str!("../protected32.s"));
// EXERCISE overflow.1: a second overflow, in 32 bits: 0x7fffffff + 1 in EAX, then INTO
// again, then print `back after the second INTO`.
core::arch::global_asm!(
    r##"
    .section .text.overflow, "ax"
    .code32
    .global main32
main32:
    mov dword ptr [handlers32 + 4 * 4], offset overflow_handler
    mov esi, offset .Lexecuting
    call print32
    mov al, 0x7f
    add al, 1                       /* signed overflow: OF = 1 */
    into                            /* #OF */
    mov esi, offset .Lback
    call print32
    xor eax, eax
    ret

overflow_handler:
    mov esi, offset .Lcaught
    call print32
    ret

    .section .rodata.overflow, "a"
.Lexecuting:
    .asciz "0x7f + 1 sets OF; executing INTO\n"
.Lcaught:
    .asciz "#OF caught: a trap, the saved EIP is after INTO\n"
.Lback:
    .asciz "back after INTO\n"
    .code64
    .text
"##
);

// The 64-bit runtime is linked in (for the panic handler and memcpy) but never runs: the
// hypervisor starts this guest at `start32`.
traplab_guests::guest_main!(never_called);
fn never_called(_info: &traplab_guests::BootInfo) -> i32 {
    1
}
