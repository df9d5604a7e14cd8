//! How the hypervisor hands a guest over: its memory layout, the boot info it leaves in
//! guest memory, the console port, and the CPUID leaves that identify the hypervisor.
//!
//! A guest starts in 64-bit mode, at CPL 0, with interrupts off, at its ELF entry point:
//!
//! - paging on, with page tables (built by the hypervisor, at [`BOOT_PAGE_TABLES`]) that map
//!   all of the guest's RAM 1:1 (virtual = guest-physical), except the page at 0, so that a
//!   null pointer faults;
//! - CS = 0x08 (64-bit code), DS = ES = SS = 0x10, from a GDT at [`BOOT_GDT`];
//! - RSP = [`BOOT_STACK_TOP`], RDI = [`BOOT_INFO`] (a [`BootInfo`]);
//! - CR0.PE|MP|ET|NE|WP|PG, CR4.PAE|OSFXSR|OSXMMEXCPT (SSE works), EFER.LME|LMA|NXE.
//!
//! Guest-physical memory layout (identity-mapped):
//!
//! | guest-physical          | what                                              |
//! |-------------------------|---------------------------------------------------|
//! | `0x0000_0000` (4 KiB)   | not mapped in the boot page tables (null page)    |
//! | [`BOOT_INFO`]           | the [`BootInfo`] page                             |
//! | [`BOOT_GDT`]            | the boot GDT                                      |
//! | [`BOOT_PAGE_TABLES`]    | the boot page tables (16 KiB)                     |
//! | … [`BOOT_STACK_TOP`]    | the boot stack (grows down)                       |
//! | [`IMAGE_BASE`]          | the guest's ELF image, then free memory           |
//! | [`GUEST_RAM_SIZE`]      | end of RAM                                        |

/// How much RAM a guest gets unless the host asks for more (fw_cfg `domN/memory-mib`).
pub const GUEST_RAM_SIZE: u64 = 16 << 20;
/// The least RAM a domain may have, in MiB: a multiboot kernel loads at 1 MiB.
pub const MIN_GUEST_RAM_MIB: u32 = 2;
/// The most RAM a domain may have, in MiB. The hypervisor takes every domain's RAM from
/// QEMU's RAM below 4 GiB (it maps only that much), and QEMU keeps a machine's RAM below
/// 4 GiB only up to 2.75 GiB: above that it puts all but 2 GiB above 4 GiB (measured with
/// QEMU 7.2: `-m 2816` leaves the hypervisor 2047 MiB). 2 GiB plus the hypervisor's own
/// 128 MiB stay below that line.
pub const MAX_GUEST_RAM_MIB: u32 = 2048;
/// Where the [`BootInfo`] is (guest-physical = guest-virtual at boot).
pub const BOOT_INFO: u64 = 0x1000;
/// Where the boot GDT is.
pub const BOOT_GDT: u64 = 0x2000;
/// Where the boot page tables start (PML4, PDPT, PD, one PT for the first 2 MiB).
pub const BOOT_PAGE_TABLES: u64 = 0x10000;
/// The initial stack pointer.
pub const BOOT_STACK_TOP: u64 = 0x80000;
/// Where guests are linked: the hypervisor loads the ELF's segments at their addresses,
/// which must lie in `[IMAGE_BASE, GUEST_RAM_SIZE)`.
pub const IMAGE_BASE: u64 = 0x20_0000;

/// The guest-physical address of the lab's MMIO device (`hv/src/device/lab_device.rs`): not
/// RAM, so every access is a nested page fault the hypervisor emulates. Map it uncached.
pub const LAB_DEVICE: u64 = 0xfeb0_0000;

/// The port of the guest's console UART (COM1). The hypervisor emulates it: every byte
/// written to its transmit register is one IOIO exit, and its line status register
/// always reads "transmitter empty".
pub const CONSOLE_PORT: u16 = 0x3f8;

/// How a guest starts. A 64-bit guest needs nothing; a 32-bit protected-mode guest (the
/// only way to run INTO, BOUND or a task switch: they do not exist in 64-bit mode) carries an
/// ELF note in section [`MODE_NOTE_SECTION`]: name [`MODE_NOTE_NAME`], type
/// [`MODE_NOTE_TYPE`], an 8-byte descriptor: the mode `32` and the 32-bit entry point (the
/// ELF's own entry point is the 64-bit runtime's, linked in all the same). It then starts in
/// protected mode with paging off, CS = 0x08 (32-bit code), DS = ES = SS = 0x10,
/// ESP = [`BOOT_STACK_TOP`], EDI = [`BOOT_INFO`], at that entry point.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GuestMode {
    Long64,
    Protected32,
}

pub const MODE_NOTE_SECTION: &str = ".note.traplab";
pub const MODE_NOTE_NAME: &[u8] = b"traplab\0";
pub const MODE_NOTE_TYPE: u32 = 1;

/// `BootInfo::disk_owner` when the machine has no disk.
pub const NO_DISK: u32 = u32::MAX;

/// `BootInfo::magic`.
pub const BOOT_INFO_MAGIC: u64 = u64::from_le_bytes(*b"TRAPLAB\0");

/// What the hypervisor tells a guest at boot (RDI points to it).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct BootInfo {
    pub magic: u64,
    /// The domain's id, as Xen numbers them: 0 the control domain (dom0), when the lab has
    /// one; 1, 2, … the unprivileged domains.
    pub domain: u32,
    /// The domain that owns the machine's disk controller (`abi/src/ata.rs`), or
    /// [`NO_DISK`] when the lab has no disk. The owner, the *driver domain*, reaches the
    /// controller's ports without an exit; for every other domain they answer as an empty
    /// bus does (reads all ones, writes dropped). A domain compares it with `domain` to
    /// know whether it drives the disk; another learns here whom to ask for blocks.
    pub disk_owner: u32,
    /// Bytes of guest RAM, starting at guest-physical 0.
    pub ram_size: u64,
    /// `[free_start, free_end)`: guest RAM not used by the image, the boot tables or
    /// the boot stack: the guest may use it for anything (page tables, data).
    pub free_start: u64,
    pub free_end: u64,
}

/// CPUID leaves the hypervisor answers (the 0x4000_0000 range is reserved for
/// hypervisors: Intel SDM vol. 2A, CPUID; Linux `arch/x86/include/asm/kvm_para.h`).
pub mod cpuid {
    /// CPUID.1:ECX bit 31: "a hypervisor is present".
    pub const HYPERVISOR_BIT: u32 = 1 << 31;
    /// Leaf 0x4000_0000: EAX = highest hypervisor leaf, EBX:ECX:EDX = [`SIGNATURE`].
    pub const SIGNATURE_LEAF: u32 = 0x4000_0000;
    /// Leaf 0x4000_0001: EAX = [`ABI_VERSION`].
    pub const VERSION_LEAF: u32 = 0x4000_0001;
    /// Leaf 0x4000_0010, the timing leaf VMware and KVM give (Linux reads it as `tsc_khz`):
    /// EAX = the TSC's rate in kHz, as the hypervisor measured it at boot (the rate its
    /// `set_timer` periods are counted in), EBX = 0 (no bus clock is offered). The highest
    /// hypervisor leaf.
    pub const TIMING_LEAF: u32 = 0x4000_0010;
    /// The 12-byte signature in EBX, ECX, EDX.
    pub const SIGNATURE: [u8; 12] = *b"TrapLabSVMhv";
    /// The version of the hypercall ABI.
    pub const ABI_VERSION: u32 = 1;
}
