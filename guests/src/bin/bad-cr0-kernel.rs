//! `bad-cr0-kernel` (test kernel): a multiboot kernel that sets CR0.NW without CR0.CD.
//!
//! A CPU refuses that MOV with #GP(0) (AMD APM vol. 2, 3.1.1: "setting NW with CD clear is
//! an invalid combination"). QEMU's TCG does not check it: without the hypervisor's CR0
//! intercept (on in every domain), the value would reach the next VMRUN and fail it. The kernel
//! catches the #GP through its own IDT, says so on COM1 and ends with status 0 through
//! isa-debug-exit (port 0xf4); if the MOV is accepted, it says that and ends with 1.
//! Linked like `multiboot-hello`, at 1 MiB by `multiboot.ld`.
#![no_std]
#![no_main]

core::arch::global_asm!(
    r##"
    .set FLAGS, (1 << 1) | (1 << 16)    /* memory info; the address fields are valid */
    .section .multiboot, "a"
    .p2align 2
header:
    .long 0x1BADB002
    .long FLAGS
    .long -(0x1BADB002 + FLAGS)
    .long header
    .long multiboot_load_addr
    .long multiboot_load_end_addr
    .long multiboot_bss_end_addr
    .long multiboot_entry

    .section .text.bad_cr0, "ax"
    .code32
    .global multiboot_entry
multiboot_entry:
    cli
    mov esp, offset stack_top
    /* An IDT with one gate, #GP (vector 13): a 32-bit interrupt gate to gp_handler, in the
     * code segment the loader left us in. We keep the loader's GDT, which Multiboot 3.2 says
     * "may be invalid": delivering the #GP loads CS from the gate, so this test kernel
     * trusts its loader (traplab, QEMU) to leave a GDT where that selector is flat code. A
     * real kernel loads its own first, as multiboot-hello does. */
    mov eax, offset gp_handler
    mov word ptr [idt + 13 * 8], ax
    mov word ptr [idt + 13 * 8 + 2], cs
    mov word ptr [idt + 13 * 8 + 4], 0x8e00
    shr eax, 16
    mov word ptr [idt + 13 * 8 + 6], ax
    lidt [idt_pointer]

    mov eax, cr0
    or eax, 1 << 29                 /* NW: not write-through */
    and eax, ~(1 << 30)             /* CD clear: caching on */
    mov cr0, eax                    /* #GP(0) on a CPU */
    mov esi, offset accepted
    call print
    mov al, 1
    out 0xf4, al
    jmp halt

gp_handler:
    mov esi, offset refused
    call print
    mov al, 0
    out 0xf4, al
halt:
    cli
    hlt
    jmp halt

/* print: the NUL-terminated string at ESI to COM1 (the hypervisor's UART is never busy). */
print:
    mov dx, 0x3f8
.Lnext:
    lodsb
    test al, al
    jz .Ldone
    out dx, al
    jmp .Lnext
.Ldone:
    ret

    .section .rodata.bad_cr0, "a"
accepted:
    .asciz "bad-cr0-kernel: MOV CR0 with NW and not CD was accepted\n"
refused:
    .asciz "bad-cr0-kernel: #GP: MOV CR0 with NW and not CD was refused\n"

    .section .data.bad_cr0, "aw"
    .p2align 3
idt_pointer:
    .word 14 * 8 - 1
    .long idt

    .section .bss.bad_cr0, "aw", @nobits
    .p2align 3
idt:
    .skip 14 * 8
    .p2align 4
    .skip 4096
stack_top:

    .code64
    .text
"##
);

#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}
