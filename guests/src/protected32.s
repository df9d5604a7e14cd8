/*
 * The runtime of traplab's 32-bit protected-mode guests (#OF, #BR, #TS: classes that do not
 * exist in 64-bit mode). Intel syntax, assembled into the 64-bit ELF with `.code32`.
 *
 * The hypervisor starts us in protected mode, paging off, at `start32` (named by the
 * traplab mode note below, see traplab_abi::boot::GuestMode). We load our own GDT (code,
 * data, our TSS), an IDT whose 32 exception gates lead to `common32`, call the guest's
 * `main32`, and pass its EAX to the exit hypercall.
 *
 * A guest registers a handler by storing its address in `handlers32[vector]`. A handler is
 * called with one argument, the frame (cdecl: [esp + 4]):
 *
 *   frame + 0   EDI ESI EBP ESP EBX EDX ECX EAX    (PUSHAD)
 *   frame + 32  vector
 *   frame + 36  error code (0 when the CPU pushes none)
 *   frame + 40  EIP, CS, EFLAGS                     (pushed by the CPU)
 *
 * It may change the frame (add to EIP to skip an instruction); `common32` returns with IRETD.
 */

    .section .note.traplab, "a", @note
    .p2align 2
    .long 8                         /* name size: "traplab\0" */
    .long 8                         /* descriptor size */
    .long 1                         /* type: the guest's mode */
    .asciz "traplab"
    .p2align 2
    .long 32                        /* protected mode */
    .long start32                   /* where to start */

    .section .text.start32, "ax"
    .code32
    .global start32
start32:
    lgdt [gdt32_pointer]
    push 0x08
    mov eax, offset .Lreloaded
    push eax
    retf                            /* far return: CS = 0x08, our 32-bit code segment */
.Lreloaded:
    mov ax, 0x10
    mov ds, ax
    mov es, ax
    mov fs, ax
    mov gs, ax
    mov ss, ax
    mov esp, offset stack32_top

    /* Our task: a TSS the CPU will save our state into when we switch tasks (task
     * switches need a current task). */
    mov edi, offset gdt32 + 0x18
    mov eax, offset tss32
    mov ecx, 103
    call tss_descriptor32
    mov ax, 0x18
    ltr ax

    /* 32 interrupt gates: offset 15:0, selector 0x08, 0, type 0x8e (present, DPL 0,
     * 32-bit interrupt gate), offset 31:16. */
    mov edi, offset idt32
    xor ecx, ecx
.Lgate:
    mov eax, ecx
    shl eax, 4
    add eax, offset stubs32
    mov [edi], ax
    mov word ptr [edi + 2], 0x08
    mov byte ptr [edi + 4], 0
    mov byte ptr [edi + 5], 0x8e
    shr eax, 16
    mov [edi + 6], ax
    add edi, 8
    inc ecx
    cmp ecx, 32
    jb .Lgate
    lidt [idt32_pointer]

    call main32
    mov edi, eax                    /* the status */
    mov eax, 1                      /* hypercall exit */
    vmmcall
    ud2

/* tss_descriptor32: write a 32-bit TSS descriptor (type 9, present, DPL 0) at EDI for a TSS
 * at EAX with limit ECX. A descriptor splits base and limit over its 8 bytes (AMD APM
 * vol. 2, 4.8.3). */
    .global tss_descriptor32
tss_descriptor32:
    push edx
    mov [edi], cx                   /* limit 15:0 */
    mov [edi + 2], ax               /* base 15:0 */
    mov edx, eax
    shr edx, 16
    mov [edi + 4], dl               /* base 23:16 */
    mov byte ptr [edi + 5], 0x89    /* present, DPL 0, available 32-bit TSS */
    mov edx, ecx
    shr edx, 16
    and dl, 0x0f
    mov [edi + 6], dl               /* limit 19:16, byte granularity */
    mov edx, eax
    shr edx, 24
    mov [edi + 7], dl               /* base 31:24 */
    pop edx
    ret

/* print32: write the NUL-terminated string at ESI to the console UART with one
 * REP OUTSB: a single IOIO exit (a string one) for the whole line. */
    .global print32
print32:
    push ecx
    push edx
    push esi
    mov ecx, esi
.Llength:
    cmp byte ptr [ecx], 0
    je .Lcounted
    inc ecx
    jmp .Llength
.Lcounted:
    sub ecx, esi
    mov dx, 0x3f8
    rep outsb
    pop esi
    pop edx
    pop ecx
    ret

/* The 32 stubs, 16 bytes apart: a zero where the CPU pushes no error code, the vector. */
    .p2align 4
stubs32:
    .p2align 4
    push 0
    push 0
    jmp common32
    .p2align 4
    push 0
    push 1
    jmp common32
    .p2align 4
    push 0
    push 2
    jmp common32
    .p2align 4
    push 0
    push 3
    jmp common32
    .p2align 4
    push 0
    push 4
    jmp common32
    .p2align 4
    push 0
    push 5
    jmp common32
    .p2align 4
    push 0
    push 6
    jmp common32
    .p2align 4
    push 0
    push 7
    jmp common32
    .p2align 4
    push 8
    jmp common32
    .p2align 4
    push 0
    push 9
    jmp common32
    .p2align 4
    push 10
    jmp common32
    .p2align 4
    push 11
    jmp common32
    .p2align 4
    push 12
    jmp common32
    .p2align 4
    push 13
    jmp common32
    .p2align 4
    push 14
    jmp common32
    .p2align 4
    push 0
    push 15
    jmp common32
    .p2align 4
    push 0
    push 16
    jmp common32
    .p2align 4
    push 17
    jmp common32
    .p2align 4
    push 0
    push 18
    jmp common32
    .p2align 4
    push 0
    push 19
    jmp common32
    .p2align 4
    push 0
    push 20
    jmp common32
    .p2align 4
    push 0
    push 21
    jmp common32
    .p2align 4
    push 0
    push 22
    jmp common32
    .p2align 4
    push 0
    push 23
    jmp common32
    .p2align 4
    push 0
    push 24
    jmp common32
    .p2align 4
    push 0
    push 25
    jmp common32
    .p2align 4
    push 0
    push 26
    jmp common32
    .p2align 4
    push 0
    push 27
    jmp common32
    .p2align 4
    push 0
    push 28
    jmp common32
    .p2align 4
    push 0
    push 29
    jmp common32
    .p2align 4
    push 0
    push 30
    jmp common32
    .p2align 4
    push 0
    push 31
    jmp common32

common32:
    pushad
    cld
    mov eax, [esp + 32]             /* the vector */
    push esp                        /* the argument: the frame */
    call [handlers32 + eax * 4]
    add esp, 4
    popad
    add esp, 8                      /* vector and error code */
    iretd

/* The default handler: say so and exit with 128 + vector. */
unhandled32:
    mov esi, offset .Lunhandled
    call print32
    mov eax, [esp + 4]
    mov edi, [eax + 32]
    add edi, 128
    mov eax, 1
    vmmcall
    ud2

    .section .rodata.protected32, "a"
.Lunhandled:
    .asciz "unhandled exception in the 32-bit guest\n"

    .section .data.protected32, "aw"
    .p2align 2
    .global handlers32
handlers32:
    .rept 32
    .long unhandled32
    .endr

    .p2align 3
    .global gdt32
gdt32:
    .quad 0
    .quad 0x00cf9a000000ffff        /* 0x08: 32-bit code, DPL 0 */
    .quad 0x00cf92000000ffff        /* 0x10: data, DPL 0 */
    .quad 0                         /* 0x18: our TSS (filled at start) */
    .quad 0                         /* 0x20: free for the guest */
gdt32_end:
gdt32_pointer:
    .word gdt32_end - gdt32 - 1
    .long gdt32

idt32_pointer:
    .word 32 * 8 - 1
    .long idt32

    .section .bss.protected32, "aw", @nobits
    .p2align 3
idt32:
    .skip 32 * 8
tss32:
    .skip 104
    .p2align 4
stack32:
    .skip 8192
stack32_top:

    .code64
    .text
