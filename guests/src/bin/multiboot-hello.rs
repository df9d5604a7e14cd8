//! `multiboot-hello`: a multiboot v1 kernel that does not know traplab.
//!
//! No traplab runtime, no hypercalls: only what a PC gives — the state a multiboot loader
//! leaves (Multiboot Specification 0.6.96), a 16550 UART at COM1, CPUID. It boots
//! unchanged under QEMU's own multiboot loader (`qemu-system-x86_64 -kernel`) and under any
//! other multiboot loader: GRUB, or a hypervisor that implements the specification.
//!
//! It prints what the loader told it (memory, command line, memory map, modules), the
//! CPU's vendor, what the PC's devices say (PCI, fw_cfg, the RTC), takes three timer
//! interrupts from the PIT through the PIC and three from the local APIC's timer, then ends with status 0 through QEMU's `isa-debug-exit` (port 0xf4), or
//! with status 2 when it was not started by a multiboot loader. Where that device is
//! missing, it halts.
//!
//! The kernel is 32-bit assembly (`.code32`, Intel syntax) inside the ELF64 that the host's
//! toolchain makes: a multiboot loader starts a kernel in 32-bit protected mode (3.2).
//! It is linked at 1 MiB by its own linker script, `multiboot.ld`.
#![no_std]
#![no_main]

core::arch::global_asm!(
    r##"
/*
 * The header (Multiboot Specification 0.6.96, 3.1.1 "The layout of Multiboot header"). A
 * loader looks for it in the first 8192 bytes of the file, 32-bit aligned. It holds:
 *
 *   +0   magic          0x1BADB002: here is a header
 *   +4   flags          what we ask for (3.1.2)
 *   +8   checksum       magic + flags + checksum = 0 (mod 2^32): a header, not chance
 *   +12  header_addr    the address fields (3.1.3), valid because flags bit 16 is set
 *   +16  load_addr
 *   +20  load_end_addr
 *   +24  bss_end_addr
 *   +28  entry_addr
 *
 * flags bit 1: give us mem_lower/mem_upper and, if there is one, the memory map (3.1.2).
 * flags bit 16: the address fields are valid; use them "instead of the fields in the
 * actual executable header" (3.1.2). We need them: this file is an ELF64, and a multiboot
 * v1 loader knows ELF32 only (QEMU refuses an ELF64 without them), so it must load the
 * bytes the address fields describe (3.1.3). multiboot.ld makes those one run of the
 * file, laid out exactly as in memory, and defines the symbols below. All are physical
 * addresses; paging is off at entry (3.2), so they are the addresses our code uses, too.
 */
    .set MULTIBOOT_HEADER_MAGIC, 0x1BADB002
    .set MULTIBOOT_MEMORY_INFO, 1 << 1
    .set MULTIBOOT_AOUT_KLUDGE, 1 << 16
    .set MULTIBOOT_HEADER_FLAGS, MULTIBOOT_MEMORY_INFO | MULTIBOOT_AOUT_KLUDGE

    .section .multiboot, "a"
    .p2align 2
multiboot_header:
    .long MULTIBOOT_HEADER_MAGIC
    .long MULTIBOOT_HEADER_FLAGS
    .long -(MULTIBOOT_HEADER_MAGIC + MULTIBOOT_HEADER_FLAGS)
    .long multiboot_header          /* header_addr: where this header will be in memory */
    .long multiboot_load_addr       /* load_addr: the first byte to load (multiboot.ld) */
    .long multiboot_load_end_addr   /* load_end_addr: after the last byte of the file to load */
    .long multiboot_bss_end_addr    /* bss_end_addr: the loader zeroes up to here */
    .long multiboot_entry           /* entry_addr: where the loader jumps */

/*
 * The entry. The machine state (3.2): EAX = 0x2BADB002, EBX = the physical address of the
 * boot information (3.3); CS a flat 32-bit code segment, DS ES FS GS SS flat data
 * segments; protected mode with paging off (CR0.PE = 1, CR0.PG = 0); IF = 0 (and VM = 0).
 * Nothing else is defined: not ESP ("the OS image must create its own stack"), not the
 * GDTR ("may be invalid, so the OS image must not load any segment registers (even just
 * reloading the same values!) until it sets up its own GDT"), not the IDTR ("the OS
 * image must leave interrupts disabled until it sets up its own IDT"). We set one up only
 * for the timer, late (below): until then interrupts stay off, and an exception would go
 * through whatever IDT the loader left, most likely to a triple fault (a reset).
 */
    .section .text.multiboot_entry, "ax"
    .code32
    .global multiboot_entry
multiboot_entry:
    cli                             /* IF is 0 already (3.2): this says so in the code */
    /* A stack of our own, in our bss. SS already holds a flat segment (3.2): only ESP is
     * missing. We need the stack now, for the far return below. */
    mov esp, offset stack_top
    mov edi, eax                    /* keep the magic; EBX (the boot information) stays */

    /* Our GDT, then every segment register reloaded from it: CS with a far return (pop
     * EIP, pop CS), the others with MOV. */
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

    /* Only a multiboot loader leaves this magic in EAX (3.2); anyone else gives us no
     * boot information, and EBX means nothing. */
    cmp edi, 0x2BADB002
    je .Lmultiboot
    mov esi, offset .Lnot_multiboot
    call print
    mov al, 2
    jmp exit

.Lmultiboot:
    mov esi, offset .Lstarted
    call print
    mov eax, edi
    call print_hex32
    mov esi, offset .Lparenthesis_newline
    call print

/*
 * The boot information (3.3): EBX points to it. Its first word, flags, says which of the
 * later fields the loader filled: we read a field only when its bit is set. EBP holds the
 * flags from here on.
 *
 *   +0   flags
 *   +4   mem_lower, +8 mem_upper    flags bit 0: KiB from 0, and from 1 MiB
 *   +16  cmdline                     flags bit 2: the kernel's command line, NUL-terminated
 *   +20  mods_count, +24 mods_addr   flags bit 3: the modules
 *   +44  mmap_length, +48 mmap_addr  flags bit 6: the memory map (the BIOS's E820 map)
 */
    mov ebp, [ebx]

    /* flags bit 0: "mem_lower and mem_upper indicate the amount of lower and upper
     * memory, in kilobytes. Lower memory starts at address 0, and upper memory starts at
     * address 1 megabyte", up to the first hole above 1 MiB. (QEMU with -m 32: 31616 KiB
     * above, not 31744: its BIOS keeps the last 128 KiB of RAM; see the memory map.) */
    test ebp, 1 << 0
    jz .Lno_memory
    mov esi, offset .Lmemory
    call print
    mov eax, [ebx + 4]
    call print_decimal
    mov esi, offset .Lbelow
    call print
    mov eax, [ebx + 8]
    call print_decimal
    mov esi, offset .Labove
    call print
    jmp .Lcommand_line
.Lno_memory:
    mov esi, offset .Lmemory_none
    call print

    /* flags bit 2: the command line, a C string (QEMU: the kernel's file name, a space,
     * then -append's text). */
.Lcommand_line:
    mov esi, offset .Lcommand_line_is
    call print
    test ebp, 1 << 2
    jz .Lno_command_line
    mov esi, [ebx + 16]
    call print
    jmp .Lcommand_line_end
.Lno_command_line:
    mov esi, offset .Lnone
    call print
.Lcommand_line_end:
    mov esi, offset .Lnewline
    call print
    /* EXERCISE multiboot-hello.1: print the boot loader's name here, as
     * `boot loader: <its name>`, when the boot information has one (3.3). */

/*
 * flags bit 6: the memory map, mmap_length bytes at mmap_addr. Each entry (3.3):
 *
 *   +0   size        the size of the rest of the entry: at least 20, maybe more
 *   +4   base_addr   64 bits
 *   +12  length      64 bits
 *   +20  type        1 = available RAM; 3 = ACPI tables, usable once read; 4 = keep across
 *                    hibernation; 5 = defective RAM; any other value = reserved
 *
 * (The specification numbers these from base_addr, so size is at -4; mmap_addr points to
 * size.) The next entry is at entry + size + 4: the size word does not count itself, and
 * a loader may make entries longer than 20 bytes. We walk the map twice: to count the
 * entries, then to print them.
 */
    test ebp, 1 << 6
    jz .Lno_memory_map
    mov esi, [ebx + 48]             /* mmap_addr: the first entry */
    mov edx, esi
    add edx, [ebx + 44]             /* + mmap_length: the end of the map */
    xor eax, eax                    /* entries so far */
.Lcount_entry:
    cmp esi, edx
    jae .Lcounted
    inc eax
    mov ecx, [esi]
    lea esi, [esi + ecx + 4]
    jmp .Lcount_entry
.Lcounted:
    mov esi, offset .Lmemory_map
    call print
    call print_decimal
    mov esi, offset .Lentries
    call print

    mov ecx, [ebx + 48]
.Lprint_entry:
    cmp ecx, edx
    jae .Lmodules
    mov esi, offset .Lindent
    call print
    mov eax, [ecx + 4]              /* base_addr, low half */
    push edx
    mov edx, [ecx + 8]              /* base_addr, high half */
    call print_hex64
    mov al, '-'
    call put_char
    /* The last byte: base_addr + length - 1, in 64 bits (EDX:EAX): ADD then ADC carries
     * from the low half into the high half, SUB then SBB borrows. */
    mov eax, [ecx + 4]
    mov edx, [ecx + 8]
    add eax, [ecx + 12]
    adc edx, [ecx + 16]
    sub eax, 1
    sbb edx, 0
    call print_hex64
    pop edx
    mov eax, [ecx + 20]             /* type */
    cmp eax, 1
    jne .Lreserved
    mov esi, offset .Lram
    call print
    jmp .Lnext_entry
.Lreserved:
    mov esi, offset .Lreserved_type
    call print
    call print_decimal
    mov esi, offset .Lparenthesis_newline
    call print
.Lnext_entry:
    mov eax, [ecx]
    lea ecx, [ecx + eax + 4]
    jmp .Lprint_entry
.Lno_memory_map:
    mov esi, offset .Lmemory_map_none
    call print

/*
 * flags bit 3: the modules (QEMU: -initrd "file args,file2"), mods_count entries of 16
 * bytes at mods_addr (3.3):
 *
 *   +0   mod_start   the module's first byte
 *   +4   mod_end     the byte after its last (so GRUB and QEMU fill it)
 *   +8   string      a C string for it (QEMU: the -initrd text), or 0 for none
 *   +12  reserved
 *
 * We print the range as the memory map's, to the last byte, then up to 16 of its bytes.
 */
.Lmodules:
    test ebp, 1 << 3
    jz .Lno_modules
    mov esi, offset .Lmodules_are
    call print
    mov eax, [ebx + 20]             /* mods_count */
    call print_decimal
    mov esi, offset .Lnewline
    call print
    mov ecx, [ebx + 24]             /* mods_addr: the first entry */
    xor edx, edx                    /* the module's number */
.Lmodule:
    cmp edx, [ebx + 20]
    jae .Lcpu_vendor
    mov esi, offset .Lmodule_is
    call print
    mov eax, edx
    call print_decimal
    mov esi, offset .Lcolon
    call print
    mov eax, [ecx]
    call print_hex32
    mov al, '-'
    call put_char
    mov eax, [ecx + 4]
    dec eax
    call print_hex32
    mov esi, offset .Lcomma
    call print
    mov esi, [ecx + 8]
    test esi, esi
    jnz .Lmodule_string
    mov esi, offset .Lno_string
.Lmodule_string:
    call print
    mov esi, offset .Lfirst_bytes
    call print
    /* The bytes to show: mod_end - mod_start, at most 16, 0 if the loader lied. */
    mov esi, [ecx]
    mov edi, [ecx + 4]
    sub edi, esi
    jae .Lsome_bytes
    xor edi, edi
.Lsome_bytes:
    cmp edi, 16
    jbe .Lshow_bytes
    mov edi, 16
.Lshow_bytes:
    test edi, edi
    jz .Lshown
    mov al, [esi]
    cmp al, 0x20                    /* ' ' .. '~' are printable ASCII */
    jb .Lunprintable
    cmp al, 0x7e
    jbe .Lprintable
.Lunprintable:
    mov al, '.'
.Lprintable:
    call put_char
    inc esi
    dec edi
    jmp .Lshow_bytes
.Lshown:
    mov esi, offset .Lquote_newline
    call print
    add ecx, 16
    inc edx
    jmp .Lmodule
.Lno_modules:
    mov esi, offset .Lmodules_none
    call print

/*
 * CPUID leaf 0: the highest leaf in EAX, the vendor in EBX, EDX, ECX, 4 ASCII bytes each
 * ("Auth" "enti" "cAMD"; Intel SDM vol. 2A, CPUID). A CPU has CPUID when software can
 * flip EFLAGS.ID, bit 21 (Intel SDM vol. 1, 3.4.3.3): every CPU since the late 486s.
 */
.Lcpu_vendor:
    mov esi, offset .Lcpu_vendor_is
    call print
    pushfd
    pop eax
    mov ecx, eax                    /* EFLAGS as it was */
    xor eax, 0x200000               /* flip ID */
    push eax
    popfd
    pushfd
    pop eax
    push ecx
    popfd                           /* EFLAGS as it was, again */
    xor eax, ecx
    test eax, 0x200000              /* did the flip stay? */
    jz .Lno_cpuid
    call print_vendor
    jmp .Ldone
.Lno_cpuid:
    mov esi, offset .Lno_cpuid_text
    call print
.Ldone:
    mov esi, offset .Lnewline
    call print

/*
 * PCI bus 0, device 0, function 0: the host bridge, through configuration mechanism #1
 * (PCI Local Bus Specification 3.0, 3.2.2.3.2). Write the function's address to
 * CONFIG_ADDRESS (0xcf8: bit 31 enable, bus 23:16, device 15:11, function 10:8, register
 * 7:2), then read the register from CONFIG_DATA (0xcfc). Register 0 holds the device ID
 * (high half) and the vendor ID (low half); vendor 0xffff means no function is there.
 */
    mov esi, offset .Lpci_is
    call print
    mov eax, 0x80000000             /* enable, 00:00.0, register 0 */
    mov dx, 0xcf8
    out dx, eax
    mov dx, 0xcfc
    in eax, dx
    cmp ax, 0xffff
    je .Lno_pci
    call print_hex32
    jmp .Lpci_end
.Lno_pci:
    mov esi, offset .Lnone
    call print
.Lpci_end:
    mov esi, offset .Lnewline
    call print

/*
 * QEMU's firmware configuration device (QEMU docs/specs/fw_cfg.rst): write a 16-bit key to
 * the selector port 0x510, then read the item a byte at a time from the data port 0x511.
 * Key 0 is the signature, "QEMU" where the device is; key 5 the number of CPUs, 16-bit
 * little-endian. Where there is no such device, the reads give 0xff.
 */
    mov esi, offset .Lfw_cfg_is
    call print
    mov ax, 0x0000                  /* the signature */
    mov dx, 0x510
    out dx, ax
    mov dx, 0x511
    mov ecx, 4
.Lsignature_byte:
    in al, dx
    cmp al, 0x20                    /* print what is printable, '.' for the rest */
    jb .Lsignature_dot
    cmp al, 0x7e
    jbe .Lsignature_put
.Lsignature_dot:
    mov al, '.'
.Lsignature_put:
    call put_char
    dec ecx
    jnz .Lsignature_byte
    mov esi, offset .Lcpus_are
    call print
    mov ax, 0x0005                  /* the number of CPUs */
    mov dx, 0x510
    out dx, ax
    mov dx, 0x511
    in al, dx
    mov cl, al
    in al, dx
    mov ah, al
    mov al, cl
    movzx eax, ax
    call print_decimal
    mov esi, offset .Lnewline
    call print

/*
 * The real-time clock (an MC146818, ports 0x70/0x71): write a register's number to 0x70,
 * read it from 0x71. Wait while status A (0x0a) bit 7 says an update is in progress, then
 * read the date and time. They are BCD unless status B (0x0b) bit 2 says binary; a PC BIOS
 * leaves them BCD, so we print each as two hex digits, which for BCD are the decimal ones.
 * Century 0x32, year 0x09, month 0x08, day 0x07, hours 0x04, minutes 0x02, seconds 0x00.
 */
    mov esi, offset .Lrtc_is
    call print
    mov ecx, 100000
.Lrtc_wait:
    mov al, 0x0a
    out 0x70, al
    in al, 0x71
    test al, 0x80
    jz .Lrtc_ready
    dec ecx
    jnz .Lrtc_wait
.Lrtc_ready:
    mov esi, offset rtc_fields
.Lrtc_field:
    mov al, [esi]                   /* the register, or 0xff at the end */
    cmp al, 0xff
    je .Lrtc_end
    out 0x70, al
    in al, 0x71
    call put_bcd
    mov al, [esi + 1]               /* what follows it: '-', ' ', ':' or nothing */
    test al, al
    jz .Lrtc_next
    call put_char
.Lrtc_next:
    add esi, 2
    jmp .Lrtc_field
.Lrtc_end:
    mov esi, offset .Lrtc_utc
    call print

/*
 * Timer interrupts, the PC way: the 8254 PIT's channel 0 drives IRQ 0 of the master 8259A
 * PIC, which hands the CPU a vector; the CPU finds the handler in our IDT.
 *
 * 1. An IDT with a 32-bit interrupt gate at vector 0x20 (`set_gate`, below).
 * 2. The PICs initialised (ICW1 0x11: edge, cascade, ICW4 follows; ICW2: vectors 0x20 and
 *    0x28, out of the CPU's exceptions' way; ICW3: slave on IRQ 2; ICW4 0x01: 8086 mode),
 *    then every IRQ masked but the master's IRQ 0.
 * 3. PIT channel 0 in mode 2 (rate generator) with count 11932: 1193182 Hz / 11932 =
 *    100 interrupts a second. Control word 0x34: channel 0, low byte then high, mode 2.
 * 4. STI, then HLT until the handler has counted 3; CLI, and IRQ 0 masked again.
 * The handler counts, ends the interrupt at the PIC (EOI, 0x20 to port 0x20) and IRETs.
 */
    mov eax, offset timer_interrupt
    mov ecx, 0x20
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
    mov al, 0xfe                    /* OCW1: only IRQ 0 open */
    out 0x21, al
    mov al, 0xff
    out 0xa1, al

    mov al, 0x34                    /* PIT: channel 0, low then high byte, mode 2 */
    out 0x43, al
    mov ax, 11932
    out 0x40, al
    mov al, ah
    out 0x40, al

    sti
.Lwait_for_ticks:
    hlt                             /* until an interrupt: the timer's */
    cmp dword ptr [ticks], 3
    jb .Lwait_for_ticks
    cli
    mov al, 0xff                    /* IRQ 0 masked again */
    out 0x21, al
    mov esi, offset .Ltimer_is
    call print
    mov eax, [ticks]
    call print_decimal
    mov esi, offset .Ltimer_interrupts
    call print

/*
 * The same, the way a kernel does it once it has found the local APIC (Intel SDM vol. 3A,
 * 11.5.4 "APIC Timer"; AMD APM vol. 2, 16.4). The APIC's registers are memory: the 4 KiB
 * at 0xfee00000, where APIC_BASE puts them after reset. Paging is off, so that is the
 * address we use; each register is 32 bits, 16 bytes apart.
 *
 * 1. A gate at vector 0x30 for apic_timer_interrupt.
 * 2. The version register (0x30): bits 7:0 the version, 23:16 the last LVT entry.
 * 3. The spurious-interrupt vector register (0xf0) = 0x1ff: bit 8 enables the APIC in
 *    software (after reset it is off, and every LVT entry masked), spurious vector 0xff.
 * 4. Divide configuration (0x3e0) = 0xb: the timer counts the APIC bus clock undivided.
 *    LVT timer (0x320) = 0x20030: periodic (bits 18:17 = 01), unmasked, vector 0x30.
 * 5. Initial count (0x380) = 10000000: QEMU's APIC bus runs at 1 GHz, so every 10 ms.
 *    Writing it starts the count.
 * 6. STI, HLT until the handler has counted 3; CLI, the LVT timer masked (bit 16).
 * The handler counts and writes the EOI register (0xb0): the interrupt is no longer in
 * service, and the APIC may deliver the next of its priority class.
 */
    .set APIC, 0xfee00000
    mov eax, offset apic_timer_interrupt
    mov ecx, 0x30
    call set_gate

    mov esi, offset .Lapic_is
    call print
    mov eax, [APIC + 0x30]
    call print_hex32
    mov esi, offset .Lnewline
    call print

    /* The IO-APIC, which routes a PC's device interrupts to the local APIC (Intel 82093AA):
     * its registers are reached through two windows, IOREGSEL at 0xfec00000 (which
     * register) and IOWIN at 0xfec00010 (its value). Register 1 is the version: bits 7:0
     * the version, 23:16 the highest of its redirection entries (one per pin). */
    .set IOAPIC, 0xfec00000
    mov esi, offset .Lioapic_is
    call print
    mov dword ptr [IOAPIC], 1
    mov eax, [IOAPIC + 0x10]
    call print_hex32
    mov esi, offset .Lnewline
    call print

    mov dword ptr [ticks], 0
    mov dword ptr [APIC + 0xf0], 0x1ff
    mov dword ptr [APIC + 0x3e0], 0xb
    mov dword ptr [APIC + 0x320], 0x20030
    mov dword ptr [APIC + 0x380], 10000000
    sti
.Lwait_for_apic_ticks:
    hlt                             /* until an interrupt: the APIC timer's */
    cmp dword ptr [ticks], 3
    jb .Lwait_for_apic_ticks
    cli
    mov dword ptr [APIC + 0x320], 0x10030
    mov esi, offset .Ltimer_is
    call print
    mov eax, [ticks]
    call print_decimal
    mov esi, offset .Lapic_interrupts
    call print

/*
 * Paging the two 32-bit ways first (AMD APM vol. 2, 5.2), each with a CPUID under it: a
 * hypervisor without decode assists reads the bytes of that CPUID at EIP through our page
 * tables, in the format CR4 chooses, and a CPU reads the vendor the same as without. Their
 * tables borrow the pages of the long-mode ones (below), which are written afterwards.
 *
 * Legacy paging: a page directory of 1,024 4-byte entries; with CR4.PSE, an entry with PS
 * maps 4 MiB. Entry 0 maps the first 4 MiB onto themselves, where this kernel is: the next
 * instruction's address stays the same with paging on.
 */
    mov dword ptr [pdpt], 0x83      /* the directory's entry 0: present, writable, 4 MiB page */
    mov edx, 1 << 4                 /* CR4.PSE */
    mov eax, offset pdpt
    mov esi, offset .Lpaging_legacy
    call vendor_line_paged
/*
 * PAE paging: CR3 names a table of four 8-byte page-directory pointers (32-byte aligned),
 * one per GiB; pointer 0 names a page directory of 8-byte entries, two of them 2 MiB pages
 * (PS) for the first 4 MiB. A pointer has only its present bit: R/W is reserved there.
 * (Long mode is entered from here, paging off, CR4.PAE already on.)
 */
    mov dword ptr [pml4], offset page_directory + 0x1            /* present */
    mov dword ptr [page_directory], 0x83            /* 0 MiB: present, writable, 2 MiB page */
    mov dword ptr [page_directory + 8], 0x200083    /* 2 MiB */
    mov edx, 1 << 5                 /* CR4.PAE */
    mov eax, offset pml4
    mov esi, offset .Lpaging_pae
    call vendor_line_paged

/*
 * Long mode, the way every 64-bit kernel enters it (AMD APM vol. 2, 14.6.1): a multiboot
 * loader starts us in 32-bit protected mode, and only we can go further.
 *
 * 1. Page tables: long mode needs 4-level paging. One PML4 entry, one PDPT entry, and a
 *    page directory of two 2 MiB pages (PS = 1) mapping the first 4 MiB onto themselves,
 *    where this kernel is: the next instruction's address stays the same with paging on.
 * 2. CR3 = the PML4; CR4.PAE = 1 (long mode uses the PAE formats).
 * 3. EFER.LME = 1, with WRMSR (EFER is MSR 0xc0000080): long mode enabled, not yet active.
 * 4. CR0.PG = 1: now the CPU activates long mode and sets EFER.LMA. We run in its
 *    compatibility mode, still 32-bit code.
 * 5. A far jump to a 64-bit code segment (L = 1, our GDT's 0x18): 64-bit mode.
 * Interrupts stay off: our IDT holds 32-bit gates, which long mode cannot use.
 */
    mov dword ptr [pml4], offset pdpt + 0x3        /* present, writable */
    mov dword ptr [pdpt], offset page_directory + 0x3
    mov dword ptr [page_directory], 0x83           /* 0 MiB: present, writable, 2 MiB page */
    mov dword ptr [page_directory + 8], 0x200083   /* 2 MiB */
    mov eax, offset pml4
    mov cr3, eax
    mov eax, cr4
    or eax, 1 << 5                  /* PAE */
    mov cr4, eax
    mov ecx, 0xc0000080             /* EFER */
    rdmsr
    or eax, 1 << 8                  /* LME */
    wrmsr
    mov eax, cr0
    or eax, 1 << 31                 /* PG: long mode is active from here */
    mov cr0, eax
    push 0x18
    mov eax, offset long_mode
    push eax
    retf

/* 64-bit code from here: the helpers above are 32-bit code (their PUSH EAX means something
 * else now), so this part writes its lines itself. */
    .code64
long_mode:
    mov ecx, 0xc0000080
    rdmsr
    lea rsi, [rip + .Llong_mode_off]
    test eax, 1 << 10               /* EFER.LMA: the CPU's word that long mode is active */
    jz .Lsay_long_mode
    lea rsi, [rip + .Llong_mode_on]
.Lsay_long_mode:
    call print64
    lea rsi, [rip + .Ldone_text]
    call print64
    mov al, 0
.Lexit64:
    out 0xf4, al
.Lhalt64:
    cli
    hlt
    jmp .Lhalt64

/* print64: write the NUL-terminated string at RSI to COM1, as put_char does. */
print64:
    mov dx, 0x3fd
    in al, dx
    test al, 1 << 5
    jz print64
    lodsb
    test al, al
    jz .Lprinted64
    mov dx, 0x3f8
    out dx, al
    jmp print64
.Lprinted64:
    ret
    .code32

/* exit, put_char, print, the print_hex and print_decimal helpers and set_gate (which writes
 * into `idt`, below) are the multiboot kernels' shared helpers: `../multiboot32.s`. */

/* vendor_line_paged: with paging on, the tables at EAX (CR3) in the format the CR4 bits in
 * EDX choose (set, and left set), the vendor_line of ESI; then paging off again, so that the
 * next format can be chosen (CR4.PAE changes the format under paging). */
vendor_line_paged:
    mov ecx, cr4
    or ecx, edx
    mov cr4, ecx
    mov cr3, eax
    mov eax, cr0
    or eax, 1 << 31                 /* PG */
    mov cr0, eax
    call vendor_line
    mov eax, cr0
    and eax, ~(1 << 31)
    mov cr0, eax
    ret

/* vendor_line: print the string at ESI, then the CPU's vendor and a newline. */
vendor_line:
    call print
    call print_vendor
    mov esi, offset .Lnewline
    jmp print

/* print_vendor: CPUID leaf 0, and print the vendor it names (EBX, EDX, ECX). */
print_vendor:
    push ebx                        /* CPUID writes EBX: our boot information pointer */
    xor eax, eax
    cpuid
    mov [cpu_vendor], ebx
    mov [cpu_vendor + 4], edx
    mov [cpu_vendor + 8], ecx
    mov byte ptr [cpu_vendor + 12], 0
    pop ebx
    mov esi, offset cpu_vendor
    jmp print

/* timer_interrupt: vector 0x20, IRQ 0. Count, tell the PIC the interrupt is over (a
 * non-specific EOI), return to what it interrupted: the HLT's next instruction. */
timer_interrupt:
    push eax
    inc dword ptr [ticks]
    mov al, 0x20
    out 0x20, al
    pop eax
    iretd

/* apic_timer_interrupt: vector 0x30, the local APIC's timer. Count, write the APIC's EOI
 * register (any value: the write is the signal), return. */
apic_timer_interrupt:
    inc dword ptr [ticks]
    mov dword ptr [APIC + 0xb0], 0
    iretd

/* put_bcd: write AL, a BCD byte, as its two decimal digits. */
put_bcd:
    push eax
    push ecx
    mov cl, al
    shr al, 4
    add al, '0'
    call put_char
    mov al, cl
    and al, 0xf
    add al, '0'
    call put_char
    pop ecx
    pop eax
    ret

    .section .rodata.multiboot_hello, "a"
.Lnot_multiboot:
    .asciz "multiboot-hello: not started by a multiboot loader\n"
.Lstarted:
    .asciz "multiboot-hello: started by a multiboot loader (EAX = "
.Lparenthesis_newline:
    .asciz ")\n"
.Lnewline:
    .asciz "\n"
.Lmemory:
    .asciz "memory: "
.Lbelow:
    .asciz " KiB below 1 MiB, "
.Labove:
    .asciz " KiB above\n"
.Lmemory_none:
    .asciz "memory: none\n"
.Lcommand_line_is:
    .asciz "command line: "
.Lpci_is:
    .asciz "PCI 00:00.0 device:vendor: "
.Lrtc_is:
    .asciz "RTC: "
.Lrtc_utc:
    .asciz " (UTC)\n"
.Ltimer_is:
    .asciz "timer: "
.Ltimer_interrupts:
    .asciz " interrupts from PIT channel 0 through the PIC, vector 0x20\n"
.Lapic_is:
    .asciz "local APIC version: "
.Lioapic_is:
    .asciz "IO-APIC version: "
.Lapic_interrupts:
    .asciz " interrupts from the local APIC timer, vector 0x30\n"
/* The RTC's date and time registers in printing order, each with what follows it. */
rtc_fields:
    .byte 0x32, 0, 0x09, '-', 0x08, '-', 0x07, ' ', 0x04, ':', 0x02, ':', 0x00, 0, 0xff
.Lfw_cfg_is:
    .asciz "fw_cfg signature: "
.Lcpus_are:
    .asciz ", CPUs: "
.Lnone:
    .asciz "none"
.Lmemory_map:
    .asciz "memory map: "
.Lentries:
    .asciz " entries\n"
.Lindent:
    .asciz "  "
.Lram:
    .asciz " RAM\n"
.Lreserved_type:
    .asciz " reserved (type "
.Lmemory_map_none:
    .asciz "memory map: none\n"
.Lmodules_are:
    .asciz "modules: "
.Lmodule_is:
    .asciz "  module "
.Lcolon:
    .asciz ": "
.Lcomma:
    .asciz ", "
.Lno_string:
    .asciz "(no string)"
.Lfirst_bytes:
    .asciz ", first bytes: \""
.Lquote_newline:
    .asciz "\"\n"
.Lmodules_none:
    .asciz "modules: none\n"
.Lcpu_vendor_is:
    .asciz "CPU vendor: "
.Lno_cpuid_text:
    .asciz "unknown (no CPUID)"
.Ldone_text:
    .asciz "multiboot-hello: done\n"
.Lpaging_legacy:
    .asciz "legacy paging, 4 MiB pages: CPUID says "
.Lpaging_pae:
    .asciz "PAE paging, 2 MiB pages: CPUID says "
.Llong_mode_on:
    .asciz "long mode: active (EFER.LMA = 1), this line from 64-bit code\n"
.Llong_mode_off:
    .asciz "long mode: not active (EFER.LMA = 0)\n"

/* Our GDT: the null descriptor, then flat 4 GiB segments, base 0, limit 0xfffff in 4 KiB
 * pages (G = 1), 32-bit (D = 1), DPL 0: 0x08 code (execute/read), 0x10 data (read/write);
 * and 0x18, 64-bit code for long mode.
 * The same segments the loader gave us (3.2), but now in a table we own. */
    .section .data.multiboot_hello, "aw"
    .p2align 3
gdt:
    .quad 0
    .quad 0x00cf9a000000ffff
    .quad 0x00cf92000000ffff
    .quad 0x00af9a000000ffff        /* 0x18: 64-bit code (L = 1, D = 0), for long mode */
gdt_end:
gdt_pointer:
    .word gdt_end - gdt - 1         /* limit: the last byte of the table */
    .long gdt                       /* base */
/* Our IDT: vectors 0 to 0x30, only 0x20 and 0x30 filled in (above); any other one would
 * find a gate that is not present and end in a triple fault. */
idt_pointer:
    .word 0x31 * 8 - 1
    .long idt

    .section .bss.multiboot_hello, "aw", @nobits
/* The long-mode page tables: 4 KiB-aligned, as CR3 and every entry's address must be. The
 * 32-bit ways use them first: `pdpt` as the legacy page directory, `pml4` for PAE's four
 * pointers and `page_directory` as PAE's directory. */
    .p2align 12
pml4:
    .skip 4096
pdpt:
    .skip 4096
page_directory:
    .skip 4096
cpu_vendor:
    .skip 13                        /* 12 bytes and a NUL */
    .p2align 3
idt:
    .skip 0x31 * 8
ticks:
    .skip 4                         /* timer interrupts so far */
    .p2align 4
stack:
    .skip 16384
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
