//! Multiboot v1: how a boot loader hands a kernel over (the Multiboot Specification, version
//! 0.6.96). The hypervisor is the boot loader here (`hv/src/image/multiboot.rs`); the lab
//! kernel `multiboot-hello` (`guests/src/bin/multiboot-hello.rs`) is a kernel that knows
//! nothing else.
//!
//! A multiboot kernel carries a *header* in the first 8 KiB of its file (§3.1): a magic
//! number, flags saying what it needs, a checksum, and — when flag 16 is set — where to load
//! which bytes of the file, for images that are not 32-bit ELF. The loader enters it in 32-bit
//! protected mode with paging off, EAX = [`BOOTLOADER_MAGIC`] and EBX = the guest-physical
//! address of the *boot information* (§3.2, §3.3), whose layout is below.

/// The header's first word (§3.1.1).
pub const HEADER_MAGIC: u32 = 0x1bad_b002;
/// EAX when the kernel starts: "a multiboot loader started you" (§3.2).
pub const BOOTLOADER_MAGIC: u32 = 0x2bad_b002;
/// The header lies in the first 8192 bytes of the image, 32-bit aligned (§3.1.1).
pub const HEADER_SEARCH: usize = 8192;

/// Header flags (§3.1.2). Bits 0–15 are *requirements*: a loader that does not know one must
/// refuse the kernel; bits 16–31 are optional features.
pub mod header_flags {
    /// Align the modules on 4 KiB pages.
    pub const PAGE_ALIGN_MODULES: u32 = 1 << 0;
    /// Give `mem_lower`/`mem_upper` (and the memory map, when the loader has one).
    pub const MEMORY_INFO: u32 = 1 << 1;
    /// Give the video mode table (and set a mode the header's fields 32–44 ask for).
    pub const VIDEO_MODE: u32 = 1 << 2;
    /// The address fields (header offsets 12–28) are valid: load by them, not by the ELF.
    pub const ADDRESS_FIELDS: u32 = 1 << 16;
    /// Every requirement this loader knows.
    pub const KNOWN_REQUIREMENTS: u32 = PAGE_ALIGN_MODULES | MEMORY_INFO | VIDEO_MODE;
    /// The requirement bits.
    pub const REQUIREMENTS: u32 = 0xffff;
}

/// The boot information's `flags`: which of its fields are valid (§3.3).
pub mod info_flags {
    /// `mem_lower` and `mem_upper`.
    pub const MEMORY: u32 = 1 << 0;
    /// `cmdline`.
    pub const COMMAND_LINE: u32 = 1 << 2;
    /// `mods_count` and `mods_addr`.
    pub const MODULES: u32 = 1 << 3;
    /// `mmap_length` and `mmap_addr`.
    pub const MEMORY_MAP: u32 = 1 << 6;
    /// `boot_loader_name`.
    pub const BOOT_LOADER_NAME: u32 = 1 << 9;
}

/// Byte offsets of the boot information's fields (§3.3); every field is a little-endian u32.
pub mod info {
    pub const FLAGS: u32 = 0;
    /// KiB of RAM from 0, at most 640.
    pub const MEM_LOWER: u32 = 4;
    /// KiB of RAM from 1 MiB up to the first hole.
    pub const MEM_UPPER: u32 = 8;
    pub const CMDLINE: u32 = 16;
    pub const MODS_COUNT: u32 = 20;
    pub const MODS_ADDR: u32 = 24;
    pub const MMAP_LENGTH: u32 = 44;
    pub const MMAP_ADDR: u32 = 48;
    pub const BOOT_LOADER_NAME: u32 = 64;
    /// The structure's size up to and with the framebuffer fields (the last in v0.6.96).
    pub const SIZE: u32 = 116;
}

/// One module (§3.3, `mods_addr`): where its bytes are and its string, 16 bytes.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Module {
    pub start: u32,
    /// The first byte *after* the module.
    pub end: u32,
    /// A zero-terminated string for the module (its name, or its command line).
    pub string: u32,
    pub reserved: u32,
}

/// One memory map entry (§3.3, `mmap_addr`): `size` counts the bytes after itself (20), so
/// that a kernel steps from one entry to the next by `size + 4`.
#[repr(C, packed)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryMapEntry {
    pub size: u32,
    pub base: u64,
    pub length: u64,
    /// [`MEMORY_AVAILABLE`], or anything else: reserved.
    pub kind: u32,
}

/// `MemoryMapEntry::kind` of RAM the kernel may use.
pub const MEMORY_AVAILABLE: u32 = 1;
/// `MemoryMapEntry::kind` of memory it must leave alone.
pub const MEMORY_RESERVED: u32 = 2;
