//! From QEMU's `-kernel` to Rust: the PVH entry note and the 32→64-bit trampoline.
//!
//! QEMU loads an ELF64 kernel that carries a Xen `PHYS32_ENTRY` note (type 18) and jumps
//! to that address in 32-bit protected mode with paging off, EBX pointing to an
//! `hvm_start_info` (Xen `include/public/arch-x86/hvm/start_info.h`). To reach 64-bit mode
//! (AMD APM vol. 2, 14.6 "Enabling and Activating Long Mode") we must:
//!
//! 1. build page tables (long mode requires paging): here 4 GiB identity-mapped with
//!    2 MiB pages, so every physical address is also a virtual one;
//! 2. enable PAE (CR4.PAE) and load CR3;
//! 3. set EFER.LME (and NXE, so that page tables may use the NX bit);
//! 4. enable paging (CR0.PG): the CPU is now in compatibility mode;
//! 5. far-jump to a 64-bit code segment: the CPU is now in 64-bit mode.
//!
//! Before any Rust runs, CR4.OSFXSR/OSXMMEXCPT must be on: the precompiled `core` uses SSE.

use core::arch::global_asm;

global_asm!(
    r#"
    .section .note.pvh, "a", @note
    .p2align 2
    .long 4                     /* name size: "Xen\0" */
    .long 4                     /* descriptor size */
    .long 18                    /* XEN_ELFNOTE_PHYS32_ENTRY */
    .asciz "Xen"
    .p2align 2
    .long pvh_start
    .p2align 2

    .section .boot32, "ax"
    .code32
    .global pvh_start
pvh_start:
    cli
    cld
    mov ebp, ebx                /* keep the hvm_start_info pointer */

    /* Zero .bss: the page tables and the boot stack live there. */
    mov edi, offset __bss_start
    mov ecx, offset __bss_end
    sub ecx, edi
    xor eax, eax
    rep stosb

    /* PML4[0] -> PDPT, PDPT[0..4] -> four page directories. */
    mov eax, offset boot_pdpt
    or eax, 0x3                 /* present, writable */
    mov [boot_pml4], eax
    mov eax, offset boot_pd
    or eax, 0x3
    mov edi, offset boot_pdpt
    mov ecx, 4
.Lfill_pdpt:
    mov [edi], eax
    add eax, 0x1000
    add edi, 8
    loop .Lfill_pdpt

    /* 2048 PD entries of 2 MiB each: physical 0 .. 4 GiB. */
    mov eax, 0x83               /* present, writable, PS (2 MiB page) */
    mov edi, offset boot_pd
    mov ecx, 2048
.Lfill_pd:
    mov [edi], eax
    add eax, 0x200000
    add edi, 8
    loop .Lfill_pd

    /* CR4: PAE (bit 5), OSFXSR (bit 9), OSXMMEXCPT (bit 10). */
    mov eax, cr4
    or eax, 0x620
    mov cr4, eax
    mov eax, offset boot_pml4
    mov cr3, eax

    /* EFER (MSR 0xc0000080): LME (bit 8), NXE (bit 11). */
    mov ecx, 0xc0000080
    rdmsr
    or eax, 0x900
    wrmsr

    /* CR0: PG (31), WP (16), NE (5), MP (1), PE (0); clear EM (2) and TS (3) so SSE works.
       WP as the guests have it (`Vcpu::set_long_mode_boot_state`; Linux sets it too): QEMU's
       TCG empties its TLB at VMRUN and at #VMEXIT when CR0's PG, WP or PE differ between
       the host and the guest, besides the flush for CR3. Without WP here that was two more
       flushes a trap, a tenth of a CPUID trap's time. Every page of ours is writable. */
    mov eax, cr0
    and eax, 0xfffffff3
    or eax, 0x80010023
    mov cr0, eax

    lgdt [boot_gdt_pointer]
    push 0x08                   /* the 64-bit code segment */
    mov eax, offset long_mode_entry
    push eax
    retf                        /* pops EIP, then CS: a far jump into 64-bit mode */

    .code64
long_mode_entry:
    mov ax, 0x10
    mov ds, ax
    mov es, ax
    mov ss, ax
    xor eax, eax
    mov fs, ax
    mov gs, ax
    lea rsp, [rip + boot_stack_top]
    mov edi, ebp                /* first argument: the hvm_start_info address */
    call hv_main
    ud2

    .section .rodata.boot, "a"
    .p2align 3
boot_gdt:
    .quad 0
    .quad 0x00af9a000000ffff    /* 0x08: 64-bit code, DPL 0 */
    .quad 0x00cf92000000ffff    /* 0x10: data, DPL 0 */
boot_gdt_end:
boot_gdt_pointer:
    .word boot_gdt_end - boot_gdt - 1
    .quad boot_gdt

    .section .bss.boot, "aw", @nobits
    .p2align 12
boot_pml4:
    .skip 4096
boot_pdpt:
    .skip 4096
boot_pd:
    .skip 4 * 4096
boot_stack:
    .skip 64 * 1024
boot_stack_top:
"#
);

/// `hvm_start_info` (Xen `include/public/arch-x86/hvm/start_info.h`), version 1.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct StartInfo {
    pub magic: u32,
    pub version: u32,
    pub flags: u32,
    pub nr_modules: u32,
    pub modlist_paddr: u64,
    pub cmdline_paddr: u64,
    pub rsdp_paddr: u64,
    pub memmap_paddr: u64,
    pub memmap_entries: u32,
    pub reserved: u32,
}

/// One entry of the memory map (an E820 entry).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct MemmapEntry {
    pub addr: u64,
    pub size: u64,
    pub kind: u32,
    pub reserved: u32,
}

/// `StartInfo::magic`.
pub const START_INFO_MAGIC: u32 = 0x336e_c578;
/// `MemmapEntry::kind` of usable RAM.
pub const E820_RAM: u32 = 1;

/// Read the memory map QEMU passed. `None` if the start info is not what we expect.
pub fn memory_map(start_info: u64) -> Option<&'static [MemmapEntry]> {
    // SAFETY: QEMU's PVH loader leaves a start info at this address in RAM (identity-mapped
    // by the boot page tables), and nothing writes it afterwards.
    let info = unsafe { &*(start_info as *const StartInfo) };
    if info.magic != START_INFO_MAGIC || info.version < 1 || info.memmap_paddr == 0 {
        return None;
    }
    // SAFETY: as above; the table holds `memmap_entries` entries.
    Some(unsafe {
        core::slice::from_raw_parts(
            info.memmap_paddr as *const MemmapEntry,
            info.memmap_entries as usize,
        )
    })
}
