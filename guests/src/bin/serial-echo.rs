//! `serial-echo`: a multiboot v1 kernel that reads lines from COM1, by interrupt.
//!
//! The receive side of the PC's serial port, the way a kernel's driver uses it: a byte
//! arrives in the 16550 UART at COM1, the UART raises its interrupt, OUT2 lets it onto IRQ 4,
//! the master 8259A PIC turns IRQ 4 into vector 0x24, and our handler reads the byte. The
//! kernel prints a prompt, collects a line (up to `\n` or `\r`), prints `you typed: <line>
//! (<n> bytes)`, and reads the next; the line `quit` ends it with status 0 through QEMU's
//! `isa-debug-exit` (port 0xf4). At the end it says what the UART's IIR said at the first
//! interrupt. It prints nothing that depends on *when* the bytes came (how many interrupts
//! it took, say: one byte each, or several), so its output is the same wherever it runs.
//!
//! Like `multiboot-hello`, it knows nothing of traplab: it boots unchanged under QEMU's own
//! multiboot loader, with the input on QEMU's stdin:
//!
//! ```text
//! printf 'hello\nquit\n' | qemu-system-x86_64 -nodefaults -nographic -serial stdio \
//!     -monitor none -display none -device isa-debug-exit,iobase=0xf4,iosize=4 \
//!     -kernel target/bare/x86_64-unknown-linux-gnu/release/serial-echo
//! ```
//!
//! 32-bit assembly (`.code32`, Intel syntax) in the host toolchain's ELF64, linked at 1 MiB
//! by `multiboot.ld`, as `multiboot-hello` is (which explains the header and the entry at
//! length).
#![no_std]
#![no_main]

core::arch::global_asm!(
    r##"
/*
 * The header (Multiboot Specification 0.6.96, 3.1.1). Flags bit 16 only: the address
 * fields are valid (3.1.3), which a loader needs to load this ELF64 at all. We ask for no
 * boot information: this kernel reads none.
 */
    .set MULTIBOOT_HEADER_MAGIC, 0x1BADB002
    .set MULTIBOOT_AOUT_KLUDGE, 1 << 16
    .set MULTIBOOT_HEADER_FLAGS, MULTIBOOT_AOUT_KLUDGE

    .section .multiboot, "a"
    .p2align 2
multiboot_header:
    .long MULTIBOOT_HEADER_MAGIC
    .long MULTIBOOT_HEADER_FLAGS
    .long -(MULTIBOOT_HEADER_MAGIC + MULTIBOOT_HEADER_FLAGS)
    .long multiboot_header          /* header_addr */
    .long multiboot_load_addr       /* load_addr (multiboot.ld) */
    .long multiboot_load_end_addr   /* load_end_addr */
    .long multiboot_bss_end_addr    /* bss_end_addr: the loader zeroes up to here */
    .long multiboot_entry           /* entry_addr */

/*
 * COM1, a 16550 UART at ports 0x3f8-0x3ff (National Semiconductor PC16550D, "Register
 * Description"; offsets with LCR.DLAB = 0):
 *
 *   +0 RBR (read)   the received byte          +0 THR (write)  a byte to send
 *   +1 IER          which interrupts: bit 0 "received data available"
 *   +2 IIR (read)   bit 0 = 0: an interrupt is pending; bits 3:1 say which (0x04: received
 *                   data available); bits 7:6 set while the FIFOs are on
 *   +3 LCR          the line format; bit 7, DLAB, turns +0/+1 into the baud divisor
 *   +4 MCR          DTR (bit 0), RTS (1), OUT1 (2), OUT2 (3), loopback (4)
 *   +5 LSR          bit 0 DR: a byte is in RBR; bit 5 THRE: THR takes another
 */
    .set COM1_RBR, 0x3f8
    .set COM1_THR, 0x3f8
    .set COM1_IER, 0x3f9
    .set COM1_IIR, 0x3fa
    .set COM1_LCR, 0x3fb
    .set COM1_MCR, 0x3fc
    .set COM1_LSR, 0x3fd
    .set IER_RECEIVED_DATA, 0x01
    .set LSR_DATA_READY, 0x01
    /* The longest line we keep; the rest of a longer line is dropped (never stored). */
    .set LINE_MAX, 64

/*
 * The entry (Multiboot 3.2): 32-bit protected mode, paging off, IF = 0, EAX = 0x2BADB002.
 * No stack and no GDT we may trust: we make both, as multiboot-hello does.
 */
    .section .text.multiboot_entry, "ax"
    .code32
    .global multiboot_entry
multiboot_entry:
    cli
    mov esp, offset stack_top
    mov edi, eax                    /* keep the magic */

    lgdt [gdt_pointer]
    push 0x08
    mov eax, offset .Lreloaded
    push eax
    retf
.Lreloaded:
    mov ax, 0x10
    mov ds, ax
    mov es, ax
    mov fs, ax
    mov gs, ax
    mov ss, ax

    cmp edi, 0x2BADB002
    je .Lmultiboot
    mov esi, offset .Lnot_multiboot
    call print
    mov al, 2
    jmp exit

.Lmultiboot:
    mov esi, offset .Lprompt
    call print

/*
 * Everything on the interrupt's path is made ready before its source is turned on, from
 * the CPU outwards: the IDT's gate, the PIC, then the UART's OUT2, and IER last of all (in
 * the loop below). Interrupts stay off (IF = 0) until the loop's STI.
 *
 * 1. A 32-bit interrupt gate at vector 0x24 to serial_interrupt.
 * 2. The PICs (Intel 8259A), as multiboot-hello: ICW1 0x11 (edge-triggered, cascaded, ICW4
 *    follows); ICW2 vectors 0x20 and 0x28, so the master's IRQ 4 is vector 0x20 + 4 = 0x24;
 *    ICW3 the slave on IRQ 2; ICW4 0x01, 8086 mode. Then OCW1: every IRQ masked but the
 *    master's IRQ 4, where a PC wires COM1 (mask 0xef: bit 4 clear).
 */
    mov eax, offset serial_interrupt
    mov ecx, 0x24
    call set_gate
    lidt [idt_pointer]

    mov al, 0x11                    /* ICW1, both PICs */
    out 0x20, al
    out 0xa0, al
    mov al, 0x20                    /* ICW2: the master's IRQ 0 is vector 0x20 */
    out 0x21, al
    mov al, 0x28                    /* the slave's IRQ 8 is vector 0x28 */
    out 0xa1, al
    mov al, 0x04                    /* ICW3: the slave is on the master's IRQ 2 */
    out 0x21, al
    mov al, 0x02                    /* the slave's cascade identity: 2 */
    out 0xa1, al
    mov al, 0x01                    /* ICW4: 8086 mode */
    out 0x21, al
    out 0xa1, al
    mov al, 0xef                    /* OCW1: only IRQ 4, COM1, open */
    out 0x21, al
    mov al, 0xff
    out 0xa1, al

/*
 * 3. The UART. LCR = 0x03: 8 data bits, no parity, 1 stop bit, and above all DLAB = 0, so
 *    that 0x3f9 is IER and not the divisor's high byte. (We leave the baud rate alone: an
 *    emulated UART ignores it.)
 *    MCR = 0x0b: DTR and RTS ("we are here, send"), and OUT2. OUT2 is a general-purpose
 *    output of the 16550, but on a PC it gates the UART's INTR pin onto the ISA bus's IRQ 4:
 *    without it the UART's interrupt never reaches the PIC.
 *    We do not write FCR. Turning the FIFOs on or off, or FCR bits 1 (clear the receiver
 *    FIFO), clear what the receiver holds (PC16550D, FCR bits 0 and 1): a byte typed before
 *    we got here, waiting in RBR, would be lost. So the UART stays as reset leaves it, FIFOs
 *    off: RBR holds one byte, and the next waits on the sender's side (QEMU's, traplab's)
 *    until we have read it. That costs an interrupt a byte, at worst; the handler does not
 *    care, as it reads while LSR says there is a byte.
 */
    mov al, 0x03
    mov dx, COM1_LCR
    out dx, al
    mov al, 0x0b
    mov dx, COM1_MCR
    out dx, al

/*
 * The loop: one line at a time. The handler fills `line` and sets `line_ready` at the end
 * of a line; then it turns the UART's interrupt off (IER = 0), so that no byte of the next
 * line touches `line` while we print it. Those bytes wait in the UART, and on the sender's
 * side. Writing IER = 1 again here raises the interrupt at once if a byte is waiting.
 *
 * The wait is CLI, test the flag, STI; HLT. Testing with interrupts on would lose a wakeup:
 * the interrupt could come after the test and before HLT, and we would halt with the line
 * ready. STI enables interrupts only after the next instruction (Intel SDM vol. 2B, STI),
 * so none can come between STI and HLT: the HLT is the one the interrupt ends.
 */
.Lnext_line:
    mov dword ptr [line_length], 0
    mov byte ptr [line_ready], 0
    mov al, IER_RECEIVED_DATA       /* listen: "received data available" on */
    mov dx, COM1_IER
    out dx, al
.Lwait_for_line:
    cli
    cmp byte ptr [line_ready], 0
    jne .Lline
    sti
    hlt                             /* until an interrupt: the UART's */
    jmp .Lwait_for_line

.Lline:
    /* Interrupts off, the UART's too: `line` is ours. */
    mov ecx, [line_length]
    mov byte ptr [line + ecx], 0    /* a C string for print; line has room for the NUL */
    mov esi, offset .Lyou_typed
    call print
    mov esi, offset line
    call print
    mov esi, offset .Lopen
    call print
    mov eax, ecx
    call print_decimal
    mov esi, offset .Lbytes
    call print
    /* "quit": 4 bytes, 'q' 'u' 'i' 't', which a 32-bit load reads little-endian. */
    cmp ecx, 4
    jne .Lnext_line
    mov eax, [line]
    cmp eax, dword ptr [.Lquit]
    jne .Lnext_line

    mov esi, offset .Lfirst_iir
    call print
    mov al, [first_iir]
    call print_hex8
    and al, 0x0f                    /* bits 3:0: is one pending, and which */
    cmp al, 0x04
    jne .Lunexplained
    mov esi, offset .Lreceived_data
    call print
.Lunexplained:
    mov esi, offset .Lnewline
    call print
    mov esi, offset .Ldone_text
    call print
    mov al, 0
    jmp exit                        /* with status 0 (`multiboot32.s`) */

/*
 * serial_interrupt: vector 0x24, IRQ 4, COM1. A 32-bit interrupt gate: IF is 0 in here.
 *
 * 1. IIR: is this UART's interrupt pending (bit 0 = 0)? An IRQ line may be shared, and an
 *    edge the PIC latched may be stale by the time we run: then there is nothing to read.
 * 2. Read RBR while LSR.DR says a byte is there, not one byte per interrupt: with the FIFOs
 *    on, one interrupt stands for up to 16 bytes (at the trigger level), and a byte may
 *    arrive while we are here. The interrupt stays asserted until the receiver is empty.
 *    `\r` or `\n` ends a line (a terminal's Enter sends `\r`; a pipe has `\n`); an empty line
 *    (the `\n` of a `\r\n`) is none. A byte past LINE_MAX is dropped, never stored.
 * 3. At the end of a line: set `line_ready` and turn the UART's interrupt off (IER = 0),
 *    leaving the next line's bytes in the UART, unread, for the main loop to ask for.
 * 4. The PIC's end of interrupt, OCW2 = 0x20 (non-specific EOI: the 8259A clears the
 *    highest bit of its ISR, IRQ 4's), then IRET. Until the EOI, the PIC delivers nothing of
 *    IRQ 4's priority or lower.
 */
serial_interrupt:
    push eax
    push ebx
    push edx
    inc dword ptr [serial_interrupts]
    mov dx, COM1_IIR
    in al, dx
    cmp dword ptr [serial_interrupts], 1
    jne .Lnot_first
    mov [first_iir], al
.Lnot_first:
    test al, 1                      /* bit 0 set: nothing pending in this UART */
    jnz .Lend_of_interrupt
.Lreceive:
    cmp byte ptr [line_ready], 0    /* the main loop has a line: leave the rest waiting */
    jne .Lend_of_interrupt
    mov dx, COM1_LSR
    in al, dx
    test al, LSR_DATA_READY
    jz .Lend_of_interrupt
    mov dx, COM1_RBR
    in al, dx
    cmp al, 0x0d                    /* '\r' */
    je .Lend_of_line
    cmp al, 0x0a                    /* '\n' */
    je .Lend_of_line
    mov ebx, [line_length]
    cmp ebx, LINE_MAX
    jae .Lreceive                   /* no room: dropped */
    mov [line + ebx], al
    inc dword ptr [line_length]
    /* EXERCISE serial-echo.1: echo each byte the kernel keeps back to the console, and a
     * newline at the end of a line, so that you see what you type. */
    jmp .Lreceive
.Lend_of_line:
    cmp dword ptr [line_length], 0
    je .Lreceive                    /* an empty line: none */
    mov byte ptr [line_ready], 1
    mov al, 0                       /* IER = 0: no interrupt until the main loop asks */
    mov dx, COM1_IER
    out dx, al
.Lend_of_interrupt:
    mov al, 0x20                    /* OCW2: non-specific EOI */
    out 0x20, al
    pop edx
    pop ebx
    pop eax
    iretd

    .section .rodata.serial_echo, "a"
.Lquit:
    .ascii "quit"
.Lnot_multiboot:
    .asciz "serial-echo: not started by a multiboot loader\n"
.Lprompt:
    .asciz "serial-echo: type a line (quit ends)\n"
.Lyou_typed:
    .asciz "you typed: "
.Lopen:
    .asciz " ("
.Lbytes:
    .asciz " bytes)\n"
.Lfirst_iir:
    .asciz "the first serial interrupt: IIR = "
.Lreceived_data:
    .asciz " (received data available)"
.Lnewline:
    .asciz "\n"
.Ldone_text:
    .asciz "serial-echo: done\n"

/* Our GDT: null, then flat 4 GiB 32-bit code (0x08) and data (0x10), as multiboot-hello.
 * (exit, put_char, print, print_hex8, print_decimal and set_gate, which writes into `idt`
 * below, are the multiboot kernels' shared helpers: `../multiboot32.s`.) */
    .section .data.serial_echo, "aw"
    .p2align 3
gdt:
    .quad 0
    .quad 0x00cf9a000000ffff
    .quad 0x00cf92000000ffff
gdt_end:
gdt_pointer:
    .word gdt_end - gdt - 1
    .long gdt
/* Our IDT: vectors 0 to 0x24, only 0x24 filled in. An exception would find a gate that is
 * not present and end in a triple fault. */
idt_pointer:
    .word 0x25 * 8 - 1
    .long idt

    .section .bss.serial_echo, "aw", @nobits
    .p2align 3
idt:
    .skip 0x25 * 8
/* How many interrupts the handler took. Not printed: it depends on when the bytes came
 * (one interrupt a byte, or one for several), which differs from run to run. */
serial_interrupts:
    .skip 4
first_iir:
    .skip 1                         /* what IIR said at the first interrupt */
line_ready:
    .skip 1                         /* 1: `line` holds a whole line for the main loop */
    .p2align 2
line_length:
    .skip 4                         /* bytes in `line` */
line:
    .skip LINE_MAX + 1              /* the line and the NUL the main loop puts after it */
    .p2align 4
stack:
    .skip 4096
stack_top:

    .code64
    .text
"##,
    // The shared helpers after the kernel's own code: its entry stays the first thing
    // in `.text`, where the header's entry_addr has always pointed.
    include_str!("../multiboot32.s")
);

/// Nothing in Rust runs (the kernel is the assembly above), but a `no_std` program must
/// say what a panic does.
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {
        core::hint::spin_loop();
    }
}
