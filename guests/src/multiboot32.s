/*
 * The 32-bit helpers the multiboot kernels share (`multiboot-hello`, `serial-echo`): how to
 * end, and how to print on COM1. Each kernel includes this file in a `global_asm!` of its
 * own and defines `idt`, the table `set_gate` writes into. Each helper takes its argument in
 * a register (AL, ESI, EAX or EDX:EAX) and keeps every register as it was: it saves what it
 * uses. Lines end in "\n" alone.
 */
    .section .text.multiboot32, "ax"
    .code32

/* exit: end with the status in AL. QEMU's isa-debug-exit device (-device
 * isa-debug-exit,iobase=0xf4) ends QEMU when a value is written to its port, with exit
 * code (value << 1) | 1. On a PC without it, the write goes nowhere and we halt for good:
 * interrupts off, and HLT again should an NMI wake us. */
exit:
    out 0xf4, al
multiboot32_halt:
    cli
    hlt
    jmp multiboot32_halt

/*
 * put_char: write AL to COM1, the 16550 UART at 0x3f8. First wait until its line status
 * register (0x3f8 + 5) says "transmitter holding register empty" (bit 5): only then does
 * the UART take another byte. The wait is bounded (100000 reads, then we send anyway): a
 * UART that never says so must not hang the kernel. (Where there is no UART at all, the
 * port reads as 0xff: "empty".) We do not program the baud rate or the line format: an
 * emulated UART ignores them; real hardware wants them set (8N1) first.
 */
put_char:
    push eax
    push ecx
    push edx
    mov ah, al                      /* IN overwrites AL */
    mov dx, 0x3fd                   /* line status register */
    mov ecx, 100000
multiboot32_wait_for_uart:
    in al, dx
    test al, 1 << 5
    jnz multiboot32_uart_ready
    dec ecx
    jnz multiboot32_wait_for_uart
multiboot32_uart_ready:
    mov al, ah
    mov dx, 0x3f8                   /* transmit holding register */
    out dx, al
    pop edx
    pop ecx
    pop eax
    ret

/* print: write the NUL-terminated string at ESI. */
print:
    push eax
    push esi
multiboot32_print_char:
    mov al, [esi]
    test al, al
    jz multiboot32_printed
    call put_char
    inc esi
    jmp multiboot32_print_char
multiboot32_printed:
    pop esi
    pop eax
    ret

/* hex_digits: write EAX as 8 hex digits. ROL by 4 brings the top nibble to the bottom,
 * so the digits come out most significant first; the table turns 0-15 into a character. */
hex_digits:
    push eax
    push ecx
    push edx
    mov edx, eax
    mov ecx, 8
multiboot32_hex_digit:
    rol edx, 4
    mov eax, edx
    and eax, 0xf
    mov al, [hex_characters + eax]
    call put_char
    dec ecx
    jnz multiboot32_hex_digit
    pop edx
    pop ecx
    pop eax
    ret

/* print_hex8: write AL as 0x and 2 hex digits, the high nibble first. */
print_hex8:
    push eax
    push ebx
    push esi
    mov esi, offset multiboot32_0x
    call print
    movzx ebx, al
    shr ebx, 4
    mov ah, al                      /* put_char takes AL */
    mov al, [hex_characters + ebx]
    call put_char
    movzx ebx, ah
    and ebx, 0xf
    mov al, [hex_characters + ebx]
    call put_char
    pop esi
    pop ebx
    pop eax
    ret

/* print_hex32: write EAX as 0x and 8 hex digits. */
print_hex32:
    push esi
    mov esi, offset multiboot32_0x
    call print
    call hex_digits
    pop esi
    ret

/* print_hex64: write EDX:EAX (EDX the high half) as 0x and 16 hex digits. */
print_hex64:
    push eax
    push esi
    mov esi, offset multiboot32_0x
    call print
    mov eax, edx
    call hex_digits
    pop esi
    pop eax
    call hex_digits
    ret

/* print_decimal: write EAX in decimal. DIV by 10 gives the last digit as the remainder
 * (in EDX), so the digits come out last first: push them, then pop them in order. */
print_decimal:
    push eax
    push ebx
    push ecx
    push edx
    mov ebx, 10
    xor ecx, ecx                    /* digits pushed */
multiboot32_divide:
    xor edx, edx                    /* DIV divides EDX:EAX */
    div ebx
    push edx
    inc ecx
    test eax, eax
    jnz multiboot32_divide
multiboot32_pop_digit:
    pop eax
    add al, '0'
    call put_char
    dec ecx
    jnz multiboot32_pop_digit
    pop edx
    pop ecx
    pop ebx
    pop eax
    ret

/* set_gate: make IDT entry ECX a 32-bit interrupt gate to the handler at EAX (Intel SDM
 * vol. 3A, 6.11): offset bits 15:0, code selector 0x08, type 0x8e (present, DPL 0, 32-bit
 * interrupt gate: IF is cleared on entry), offset bits 31:16. `idt` is the kernel's. */
set_gate:
    push eax
    mov word ptr [idt + ecx * 8], ax
    mov word ptr [idt + ecx * 8 + 2], 0x08
    mov word ptr [idt + ecx * 8 + 4], 0x8e00
    shr eax, 16
    mov word ptr [idt + ecx * 8 + 6], ax
    pop eax
    ret

    .section .rodata.multiboot32, "a"
hex_characters:
    .ascii "0123456789abcdef"
multiboot32_0x:
    .asciz "0x"

    .code64
    .text
