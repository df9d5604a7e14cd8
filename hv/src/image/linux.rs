//! The hypervisor as a Linux boot loader: the x86 boot protocol's 32-bit entry (Linux
//! `Documentation/arch/x86/boot.rst`, "The Linux/x86 Boot Protocol").
//!
//! A bzImage is three things in one file: a boot sector and real-mode setup code (the first
//! `setup_sects + 1` sectors of 512 bytes), a *setup header* inside them (at 0x1f1, "HdrS"
//! at 0x202) that tells a loader what the kernel needs, and the protected-mode kernel (the
//! rest: a decompressor with the compressed kernel inside). A BIOS loader runs the real-mode
//! setup; a loader that has no BIOS — this one, like QEMU's own `-kernel` for a 64-bit
//! guest under some firmwares, or kexec — skips it and does its work itself:
//!
//! 1. load the protected-mode kernel at `code32_start` (1 MiB);
//! 2. fill the *zero page*, `struct boot_params`: a copy of the setup header, with the
//!    loader's fields set (`type_of_loader`, `cmd_line_ptr`, `ramdisk_image` and
//!    `ramdisk_size`), and the memory map as E820 entries (`e820_table`, `e820_entries`) — the
//!    answer to INT 15h/E820 the real-mode setup would have asked the BIOS for;
//! 3. put the command line and the initrd in memory, below the limits the header gives;
//! 4. enter the kernel in 32-bit protected mode, paging off, interrupts off, with a GDT
//!    whose selector 0x10 is flat 4 GiB code and 0x18 flat data, CS = 0x10, DS = ES = SS =
//!    0x18, ESI = the zero page, EBX = EBP = EDI = 0 ("32-bit boot protocol").
//!
//! The kernel then decompresses itself (where its header says: [`Kernel::runtime_start`],
//! 16 MiB for Debian's), switches to long mode and starts — all without a trap, until it
//! touches the platform.

use super::ImageError;
use super::multiboot::memory_map;
use crate::domain::GuestMemory;
use alloc::format;
use alloc::vec::Vec;
use traplab_abi::multiboot::MemoryMapEntry;

/// Offsets in the setup header and the zero page (`struct boot_params`,
/// `arch/x86/include/uapi/asm/bootparam.h`).
mod offset {
    /// The zero page's number of E820 entries (u8) and the table (20 bytes each).
    pub const E820_ENTRIES: usize = 0x1e8;
    pub const E820_TABLE: usize = 0x2d0;
    /// The setup header starts here, in the image and in the zero page.
    pub const SETUP_SECTS: usize = 0x1f1;
    pub const BOOT_FLAG: usize = 0x1fe;
    /// The header's length is 0x202 + the byte at 0x201 (the jump at 0x200 skips it).
    pub const JUMP: usize = 0x200;
    pub const HEADER: usize = 0x202;
    pub const VERSION: usize = 0x206;
    pub const TYPE_OF_LOADER: usize = 0x210;
    pub const LOADFLAGS: usize = 0x211;
    pub const CODE32_START: usize = 0x214;
    pub const RAMDISK_IMAGE: usize = 0x218;
    pub const RAMDISK_SIZE: usize = 0x21c;
    pub const CMD_LINE_PTR: usize = 0x228;
    pub const INITRD_ADDR_MAX: usize = 0x22c;
    pub const KERNEL_ALIGNMENT: usize = 0x230;
    pub const RELOCATABLE_KERNEL: usize = 0x234;
    pub const CMDLINE_SIZE: usize = 0x238;
    pub const PREF_ADDRESS: usize = 0x258;
    pub const INIT_SIZE: usize = 0x260;
}

/// `loadflags` bit 0: the protected-mode code is loaded at 1 MiB (a bzImage).
const LOADED_HIGH: u8 = 1 << 0;
/// `type_of_loader` 0xff: a loader with no ID assigned.
const UNDEFINED_LOADER: u8 = 0xff;
/// The oldest protocol whose 32-bit entry and fields this loader relies on: 2.10, whose
/// `pref_address` and `init_size` say where the kernel decompresses itself and how much
/// memory it needs there (2.06 has `cmdline_size`, 2.02 `cmd_line_ptr`, 2.03
/// `initrd_addr_max`, 2.05 `kernel_alignment` and `relocatable_kernel`). Before 2.10, the
/// bytes at 0x258 and 0x260 are setup code, not fields.
const MIN_VERSION: u16 = 0x020a;
/// The E820 table holds at most 128 entries.
const E820_MAX: usize = 128;

/// Where the loader puts things in conventional memory (below the EBDA at 0x9fc00).
pub const GDT: u64 = 0x6000;
pub const ZERO_PAGE: u64 = 0x7000;
pub const COMMAND_LINE: u64 = 0x8000;
const COMMAND_LINE_END: u64 = 0x9000;

/// The GDT the 32-bit boot protocol asks for: `__BOOT_CS` = 0x10 flat 4 GiB code,
/// `__BOOT_DS` = 0x18 flat 4 GiB data (0x00 and 0x08 unused).
pub const BOOT_CS: u16 = 0x10;
pub const BOOT_DS: u16 = 0x18;
const GDT_ENTRIES: [u64; 4] = [0, 0, 0x00cf_9a00_0000_ffff, 0x00cf_9200_0000_ffff];

/// A bzImage, as its setup header describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kernel<'a> {
    pub version: u16,
    /// The setup header's bytes (0x1f1 to its end), copied into the zero page.
    pub header: &'a [u8],
    /// The protected-mode kernel, loaded at `code32_start`.
    pub protected_mode: &'a [u8],
    pub code32_start: u32,
    /// How much memory the kernel needs from where it decompresses (`init_size`).
    pub init_size: u32,
    /// Where it decompresses and runs (boot.rst, "init_size"): a relocatable kernel at its
    /// load address or `pref_address`, whichever is higher, rounded up to
    /// `kernel_alignment`; any other at `pref_address`.
    pub runtime_start: u64,
    pub initrd_addr_max: u32,
    pub cmdline_size: u32,
}

/// What loading did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Loaded {
    pub entry: u32,
    pub zero_page: u32,
}

/// Does `image` look like a bzImage (the boot flag 0xaa55 and "HdrS")? Its protocol version.
pub fn boot_protocol(image: &[u8]) -> Option<u16> {
    let magic = image.get(offset::HEADER..offset::HEADER + 4)?;
    (magic == b"HdrS" && u16_at(image, offset::BOOT_FLAG)? == 0xaa55)
        .then(|| u16_at(image, offset::VERSION))
        .flatten()
}

impl<'a> Kernel<'a> {
    /// Read the setup header; an error says what this loader cannot boot.
    pub fn parse(image: &'a [u8]) -> Result<Kernel<'a>, ImageError> {
        let refuse = |why: &str| Err(ImageError(format!("a Linux bzImage, but {why}")));
        let Some(version) = boot_protocol(image) else {
            return refuse("its setup header is broken");
        };
        if version < MIN_VERSION {
            return refuse(&format!(
                "boot protocol {}.{:02} is older than 2.10, the oldest this loader knows",
                version >> 8,
                version & 0xff
            ));
        }
        let byte = |at: usize| image.get(at).copied();
        let word = |at: usize| u32_at(image, at);
        let (Some(sects), Some(jump), Some(loadflags)) = (
            byte(offset::SETUP_SECTS),
            byte(offset::JUMP + 1),
            byte(offset::LOADFLAGS),
        ) else {
            return refuse("the file ends inside its setup header");
        };
        if loadflags & LOADED_HIGH == 0 {
            return refuse("it is a zImage (loaded low), not a bzImage");
        }
        // setup_sects 0 means 4 (boot.rst, "setup_sects").
        let setup_sects = if sects == 0 { 4 } else { sects as usize };
        let protected_mode_at = (setup_sects + 1) * 512;
        let header_end = offset::HEADER + jump as usize;
        let (Some(code32_start), Some(init_size), Some(initrd_addr_max), Some(cmdline_size)) = (
            word(offset::CODE32_START),
            word(offset::INIT_SIZE),
            word(offset::INITRD_ADDR_MAX),
            word(offset::CMDLINE_SIZE),
        ) else {
            return refuse("the file ends inside its setup header");
        };
        let (Some(kernel_alignment), Some(relocatable), Some(pref_address)) = (
            word(offset::KERNEL_ALIGNMENT),
            byte(offset::RELOCATABLE_KERNEL),
            image
                .get(offset::PREF_ADDRESS..offset::PREF_ADDRESS + 8)
                .and_then(|bytes| Some(u64::from_le_bytes(bytes.try_into().ok()?))),
        ) else {
            return refuse("the file ends inside its setup header");
        };
        if header_end > offset::E820_TABLE {
            return refuse("its setup header runs past the zero page's E820 table");
        }
        // The header a 2.10 kernel reads back from the zero page ends after `init_size`
        // (boot.rst: the header ends at 0x202 + the byte at 0x201): a shorter one would
        // leave the kernel's `init_size` 0 there, whatever the file has beyond it.
        if header_end < offset::INIT_SIZE + 4 {
            return refuse(
                "its setup header ends (0x202 + the byte at 0x201) before init_size, which boot protocol 2.10 has",
            );
        }
        let Some(header) = image.get(offset::SETUP_SECTS..header_end) else {
            return refuse("the file ends inside its setup header");
        };
        let Some(protected_mode) = image
            .get(protected_mode_at..)
            .filter(|protected_mode| !protected_mode.is_empty())
        else {
            return refuse(&format!(
                "the file ends before its protected-mode kernel (after {setup_sects} setup sectors)"
            ));
        };
        let runtime_start = match relocatable {
            0 => Some(pref_address),
            _ => (code32_start as u64)
                .max(pref_address)
                .checked_next_multiple_of(kernel_alignment.max(1) as u64),
        };
        let Some(runtime_start) = runtime_start.filter(|start| (1 << 20..1 << 32).contains(start))
        else {
            return refuse(&format!(
                "it would decompress itself at {pref_address:#x} (pref_address, aligned to {kernel_alignment:#x}), outside 1 MiB to 4 GiB"
            ));
        };
        Ok(Kernel {
            version,
            header,
            protected_mode,
            code32_start,
            init_size,
            runtime_start,
            initrd_addr_max,
            cmdline_size,
        })
    }
}

/// Load `kernel` with `command_line` and `initrd` into `memory`, as the 32-bit boot
/// protocol asks, and fill the zero page.
pub fn load(
    kernel: &Kernel,
    memory: &mut dyn GuestMemory,
    command_line: &str,
    initrd: Option<&[u8]>,
) -> Result<Loaded, ImageError> {
    let ram = memory.size();
    let needed = kernel.runtime_start + kernel.init_size as u64;
    if ram < needed {
        return Err(ImageError(format!(
            "this Linux kernel needs {} MiB of RAM or more to decompress itself (from {:#x}, init_size {} KiB): --memory gives more",
            needed.div_ceil(1 << 20),
            kernel.runtime_start,
            kernel.init_size / 1024
        )));
    }
    let start = kernel.code32_start as u64;
    let end = start + kernel.protected_mode.len() as u64;
    if start < 0x10_0000 || end > ram {
        return Err(ImageError(format!(
            "the kernel loads at {start:#x}..{end:#x}, outside the RAM ({ram:#x})"
        )));
    }
    put(memory, start, kernel.protected_mode)?;

    // The command line: NUL-terminated, at most `cmdline_size` bytes before the NUL.
    let limit = (kernel.cmdline_size as u64).min(COMMAND_LINE_END - COMMAND_LINE - 1);
    if command_line.len() as u64 > limit {
        return Err(ImageError(format!(
            "the command line is {} bytes; this kernel takes at most {limit}",
            command_line.len()
        )));
    }
    let mut line = Vec::from(command_line.as_bytes());
    line.push(0);
    put(memory, COMMAND_LINE, &line)?;

    // The zero page: zeros, then the setup header at its offset, then the loader's fields.
    put(memory, ZERO_PAGE, &[0u8; 4096])?;
    put(
        memory,
        ZERO_PAGE + offset::SETUP_SECTS as u64,
        kernel.header,
    )?;
    let field = |at: usize| ZERO_PAGE + at as u64;
    put(memory, field(offset::TYPE_OF_LOADER), &[UNDEFINED_LOADER])?;
    put(
        memory,
        field(offset::CMD_LINE_PTR),
        &(COMMAND_LINE as u32).to_le_bytes(),
    )?;
    // No initrd: its fields say so, whatever the file's header held there (boot.rst:
    // ramdisk_image, "leave at zero if there is no initial ramdisk").
    put(memory, field(offset::RAMDISK_IMAGE), &[0u8; 8])?;
    if let Some(initrd) = initrd {
        check_initramfs(initrd)?;
        // As high as the kernel allows (`initrd_addr_max`) and RAM reaches, page-aligned:
        // out of the way of the decompressed kernel, as boot loaders place it, and above
        // both the loaded image and the area the kernel decompresses into.
        let top = ram.min(kernel.initrd_addr_max as u64 + 1);
        let at = top.saturating_sub(initrd.len() as u64) & !0xfff;
        if at < needed.max(end) {
            return Err(ImageError(format!(
                "an initrd of {} KiB does not fit between the kernel and the top of RAM: --memory gives more",
                initrd.len() / 1024
            )));
        }
        put(memory, at, initrd)?;
        put(
            memory,
            field(offset::RAMDISK_IMAGE),
            &(at as u32).to_le_bytes(),
        )?;
        put(
            memory,
            field(offset::RAMDISK_SIZE),
            &(initrd.len() as u32).to_le_bytes(),
        )?;
    }
    let map = memory_map(ram);
    put(memory, field(offset::E820_ENTRIES), &[map.len() as u8])?;
    for (index, entry) in map.iter().take(E820_MAX).enumerate() {
        put(
            memory,
            field(offset::E820_TABLE) + index as u64 * 20,
            &e820_bytes(entry),
        )?;
    }
    let gdt: Vec<u8> = GDT_ENTRIES
        .iter()
        .flat_map(|entry| entry.to_le_bytes())
        .collect();
    put(memory, GDT, &gdt)?;
    super::firmware::write_bios_data_area(memory)?;
    super::acpi::write_tables(memory)?;
    super::smbios::write_tables(memory)?;
    Ok(Loaded {
        entry: kernel.code32_start,
        zero_page: ZERO_PAGE as u32,
    })
}

/// The cpio formats an initramfs may be (`init/initramfs.c`, `do_header`): newc
/// ("070701") and newc with checksums ("070702").
const CPIO_NEWC: [&[u8]; 2] = [b"070701", b"070702"];

/// The two bytes a compressed initramfs starts with, for each method Linux can unpack
/// (`lib/decompress.c`, `compressed_formats`): gzip (and its old magic), bzip2, LZMA, xz,
/// LZO, LZ4, zstd.
const COMPRESSED_MAGIC: [[u8; 2]; 8] = [
    [0x1f, 0x8b], // gzip
    [0x1f, 0x9e], // gzip, the old magic
    [0x42, 0x5a], // bzip2
    [0x5d, 0x00], // LZMA
    [0xfd, 0x37], // xz
    [0x89, 0x4c], // LZO
    [0x02, 0x21], // LZ4
    [0x28, 0xb5], // zstd
];

/// An initrd that is no archive would boot a kernel that finds no init and panics: refuse
/// it here, with what it starts with. As Linux's `unpack_to_rootfs` reads it: NUL bytes of
/// padding first, then a compressed archive, or a newc cpio archive at a multiple of 4
/// bytes. An old ASCII cpio archive ("070707", `cpio -H odc`) Linux refuses ("incorrect
/// cpio method used: use -H newc option"), and so is it here.
fn check_initramfs(initrd: &[u8]) -> Result<(), ImageError> {
    let padding = initrd.iter().take_while(|&&byte| byte == 0).count();
    let start = &initrd[padding..];
    let cpio = padding % 4 == 0 && CPIO_NEWC.iter().any(|magic| start.starts_with(magic));
    if cpio
        || COMPRESSED_MAGIC
            .iter()
            .any(|magic| start.starts_with(magic))
    {
        return Ok(());
    }
    if start.starts_with(b"070707") {
        return Err(ImageError(
            "the initrd is an old ASCII cpio archive (cpio -H odc), which Linux refuses: make it with cpio -H newc".into(),
        ));
    }
    let bytes: Vec<alloc::string::String> = start
        .iter()
        .take(6)
        .map(|byte| format!("{byte:02x}"))
        .collect();
    Err(ImageError(format!(
        "the initrd is no initramfs: neither a cpio archive (cpio -H newc) nor one compressed with gzip, bzip2, LZMA, xz, LZO, LZ4 or zstd (it starts with {})",
        bytes.join(" ")
    )))
}

/// The size of the GDT the entry uses, minus one (GDTR's limit).
pub const GDT_LIMIT: u32 = (GDT_ENTRIES.len() * 8 - 1) as u32;

/// An E820 entry as the zero page holds it: address, size, type (1 RAM, 2 reserved).
fn e820_bytes(entry: &MemoryMapEntry) -> [u8; 20] {
    let MemoryMapEntry {
        base, length, kind, ..
    } = *entry;
    let mut bytes = [0u8; 20];
    bytes[0..8].copy_from_slice(&base.to_le_bytes());
    bytes[8..16].copy_from_slice(&length.to_le_bytes());
    bytes[16..20].copy_from_slice(&kind.to_le_bytes());
    bytes
}

fn put(memory: &mut dyn GuestMemory, at: u64, bytes: &[u8]) -> Result<(), ImageError> {
    memory.write_physical(at, bytes).map_err(|_| {
        ImageError(format!(
            "{} bytes at {at:#x} do not fit in the guest's RAM",
            bytes.len()
        ))
    })
}

fn u16_at(bytes: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(bytes.get(at..at + 2)?.try_into().ok()?))
}

fn u32_at(bytes: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(bytes.get(at..at + 4)?.try_into().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::VecMemory;

    /// A bzImage's first sectors: boot flag, "HdrS", protocol 2.15, 1 setup sector, LOADED_HIGH,
    /// code32_start 1 MiB, then `protected` as the protected-mode part.
    fn bzimage(protected: &[u8]) -> Vec<u8> {
        let mut image = vec![0u8; 1024];
        image[offset::SETUP_SECTS] = 1;
        image[offset::BOOT_FLAG..offset::BOOT_FLAG + 2].copy_from_slice(&0xaa55u16.to_le_bytes());
        image[offset::JUMP] = 0xeb;
        image[offset::JUMP + 1] = 0x66; // the header ends at 0x268
        image[offset::HEADER..offset::HEADER + 4].copy_from_slice(b"HdrS");
        image[offset::VERSION..offset::VERSION + 2].copy_from_slice(&0x020fu16.to_le_bytes());
        image[offset::LOADFLAGS] = LOADED_HIGH;
        let mut word =
            |at: usize, value: u32| image[at..at + 4].copy_from_slice(&value.to_le_bytes());
        word(offset::CODE32_START, 0x10_0000);
        word(offset::INIT_SIZE, 0x10_0000);
        // As x86-64 Linux has them: relocatable, 2 MiB aligned, preferably at 16 MiB.
        word(offset::KERNEL_ALIGNMENT, 0x20_0000);
        word(offset::PREF_ADDRESS, 0x100_0000);
        word(offset::INITRD_ADDR_MAX, 0x7fff_ffff);
        word(offset::CMDLINE_SIZE, 2047);
        image[offset::RELOCATABLE_KERNEL] = 1;
        image.extend_from_slice(protected);
        image
    }

    fn read_u32(memory: &VecMemory, at: u64) -> u32 {
        let mut bytes = [0u8; 4];
        memory.read_physical(at, &mut bytes).unwrap();
        u32::from_le_bytes(bytes)
    }

    #[test]
    fn loading_fills_the_zero_page_as_the_32_bit_boot_protocol_asks() {
        let image = bzimage(b"\xfa\xf4kernel");
        let kernel = Kernel::parse(&image).expect("a bzImage");
        assert_eq!((kernel.version, kernel.code32_start), (0x020f, 0x10_0000));
        let mut memory = VecMemory::new(32 << 20, false);
        let mut initrd = b"070701".to_vec();
        initrd.resize(5000, 0x5a);
        let loaded = load(&kernel, &mut memory, "console=ttyS0", Some(&initrd)).unwrap();
        assert_eq!(
            loaded,
            Loaded {
                entry: 0x10_0000,
                zero_page: ZERO_PAGE as u32
            }
        );
        let mut bytes = [0u8; 8];
        memory.read_physical(0x10_0000, &mut bytes).unwrap();
        assert_eq!(
            &bytes, b"\xfa\xf4kernel",
            "the protected-mode part at 1 MiB"
        );
        let zero_page = |at: usize| ZERO_PAGE + at as u64;
        assert_eq!(
            read_u32(&memory, zero_page(offset::HEADER)),
            u32::from_le_bytes(*b"HdrS")
        );
        let mut loader = [0u8; 1];
        memory
            .read_physical(zero_page(offset::TYPE_OF_LOADER), &mut loader)
            .unwrap();
        assert_eq!(loader, [0xff]);
        assert_eq!(
            read_u32(&memory, zero_page(offset::CMD_LINE_PTR)),
            COMMAND_LINE as u32
        );
        let mut line = [0u8; 14];
        memory.read_physical(COMMAND_LINE, &mut line).unwrap();
        assert_eq!(&line, b"console=ttyS0\0");
        let ramdisk = read_u32(&memory, zero_page(offset::RAMDISK_IMAGE));
        assert_eq!(
            ramdisk,
            (32 << 20) - 0x2000,
            "page-aligned, at the top of RAM"
        );
        assert_eq!(read_u32(&memory, zero_page(offset::RAMDISK_SIZE)), 5000);
        let mut entries = [0u8; 1];
        memory
            .read_physical(zero_page(offset::E820_ENTRIES), &mut entries)
            .unwrap();
        assert_eq!(entries, [4], "the PC's memory map");
        // The last entry: RAM from 1 MiB to the end, type 1.
        let last = zero_page(offset::E820_TABLE) + 3 * 20;
        assert_eq!(read_u32(&memory, last), 0x10_0000);
        assert_eq!(read_u32(&memory, last + 8), (32 << 20) - 0x10_0000);
        assert_eq!(read_u32(&memory, last + 16), 1);
    }

    #[test]
    fn the_kernel_decompresses_where_its_header_says_and_the_initrd_stays_out_of_it() {
        // A kernel built to run at 32 MiB (CONFIG_PHYSICAL_START, as crash kernels are),
        // needing 16 MiB there: 32 to 48 MiB is its.
        let mut image = bzimage(b"k");
        image[offset::PREF_ADDRESS..offset::PREF_ADDRESS + 8]
            .copy_from_slice(&0x200_0000u64.to_le_bytes());
        image[offset::INIT_SIZE..offset::INIT_SIZE + 4]
            .copy_from_slice(&0x100_0000u32.to_le_bytes());
        let kernel = Kernel::parse(&image).expect("a bzImage");
        assert_eq!(kernel.runtime_start, 0x200_0000);
        // 40 MiB of RAM does not hold it (it used to be taken as decompressing at 16 MiB).
        let error = load(&kernel, &mut VecMemory::new(40 << 20, false), "", None).unwrap_err();
        assert!(
            error.0.contains("needs 48 MiB of RAM or more"),
            "{}",
            error.0
        );
        // With 64 MiB, an initrd of 20 MiB would have to go at 44 MiB, inside it: refused.
        let mut initrd = b"070701".to_vec();
        initrd.resize(20 << 20, 0);
        let mut memory = VecMemory::new(64 << 20, false);
        let error = load(&kernel, &mut memory, "", Some(&initrd)).unwrap_err();
        assert!(
            error.0.contains("does not fit between the kernel"),
            "{}",
            error.0
        );
        // A relocatable kernel loaded below its pref_address runs at the pref_address,
        // rounded up to its alignment; a non-relocatable one at its pref_address.
        image[offset::PREF_ADDRESS..offset::PREF_ADDRESS + 8]
            .copy_from_slice(&0x110_0000u64.to_le_bytes());
        assert_eq!(Kernel::parse(&image).unwrap().runtime_start, 0x120_0000);
        image[offset::RELOCATABLE_KERNEL] = 0;
        assert_eq!(Kernel::parse(&image).unwrap().runtime_start, 0x110_0000);
        // One that would run below 1 MiB, over the boot tables, is refused.
        image[offset::PREF_ADDRESS..offset::PREF_ADDRESS + 8].fill(0);
        assert!(Kernel::parse(&image).is_err());
    }

    #[test]
    fn what_this_loader_cannot_boot_is_refused_with_the_reason() {
        let error = |image: &[u8]| Kernel::parse(image).err().map(|ImageError(why)| why);
        let mut old = bzimage(b"k");
        old[offset::VERSION] = 0x04;
        assert!(
            error(&old)
                .unwrap()
                .contains("boot protocol 2.04 is older than 2.10")
        );
        // 2.09: the bytes where 2.10 has pref_address and init_size are setup code, and
        // must not be read as fields (they once asked for 4112 MiB of RAM).
        let mut before_init_size = bzimage(b"k");
        before_init_size[offset::VERSION..offset::VERSION + 2]
            .copy_from_slice(&0x0209u16.to_le_bytes());
        before_init_size[offset::INIT_SIZE..offset::INIT_SIZE + 4].fill(0xff);
        assert!(
            error(&before_init_size)
                .unwrap()
                .contains("boot protocol 2.09 is older than 2.10")
        );
        let mut zimage = bzimage(b"k");
        zimage[offset::LOADFLAGS] = 0;
        assert!(error(&zimage).unwrap().contains("a zImage"));
        let short = &bzimage(b"")[..1024];
        assert!(
            error(short)
                .unwrap()
                .contains("ends before its protected-mode kernel")
        );
        let kernel_image = bzimage(b"k");
        let kernel = Kernel::parse(&kernel_image).unwrap();
        let mut small = VecMemory::new(16 << 20, false);
        let why = load(&kernel, &mut small, "", None).unwrap_err().0;
        assert!(why.contains("needs 17 MiB of RAM or more"), "{why}");
        let mut memory = VecMemory::new(32 << 20, false);
        let long = "x".repeat(3000);
        let why = load(&kernel, &mut memory, &long, None).unwrap_err().0;
        assert!(why.contains("this kernel takes at most 2047"), "{why}");
        let why = load(&kernel, &mut memory, "", Some(b"MZ\x90\x00 not an archive"))
            .unwrap_err()
            .0;
        assert!(why.starts_with("the initrd is no initramfs"), "{why}");
        assert!(why.ends_with("(it starts with 4d 5a 90 00 20 6e)"), "{why}");
        assert!(
            load(&kernel, &mut memory, "", Some(&[0x1f, 0x8b, 8, 0])).is_ok(),
            "gzip"
        );
    }

    #[test]
    fn an_initrd_is_taken_as_linux_unpacks_it() {
        // Every compressed format Linux's decompress.c knows by its two bytes (LZO and
        // gzip's old magic too), and a newc archive behind NUL padding; not an old ASCII
        // cpio archive, which Linux refuses.
        let kernel_image = bzimage(b"k");
        let kernel = Kernel::parse(&kernel_image).unwrap();
        let mut memory = VecMemory::new(32 << 20, false);
        let mut padded = vec![0u8; 512];
        padded.extend_from_slice(b"070701");
        let taken: [&[u8]; 5] = [
            &[0x89, 0x4c, 0x5a, 0x4f],
            &[0x1f, 0x9e, 8],
            &padded,
            b"070702",
            &[0, 0, 0, 0x28, 0xb5, 0x2f, 0xfd],
        ];
        for initrd in taken {
            assert!(
                load(&kernel, &mut memory, "", Some(initrd)).is_ok(),
                "{:02x?}",
                &initrd[..4]
            );
        }
        let why = load(&kernel, &mut memory, "", Some(b"070707000000"))
            .unwrap_err()
            .0;
        assert!(why.contains("cpio -H newc"), "{why}");
    }

    #[test]
    fn without_an_initrd_the_zero_page_names_none_whatever_the_file_had() {
        let mut kernel_image = bzimage(b"k");
        kernel_image[offset::RAMDISK_IMAGE..offset::RAMDISK_IMAGE + 8]
            .copy_from_slice(&[0, 0, 0x40, 1, 0, 0x10, 0, 0]);
        let kernel = Kernel::parse(&kernel_image).unwrap();
        let mut memory = VecMemory::new(32 << 20, false);
        load(&kernel, &mut memory, "", None).unwrap();
        let mut fields = [0xffu8; 8];
        memory
            .read_physical(ZERO_PAGE + offset::RAMDISK_IMAGE as u64, &mut fields)
            .unwrap();
        assert_eq!(fields, [0; 8]);
    }

    #[test]
    fn a_setup_header_that_ends_before_init_size_is_refused() {
        let mut short = bzimage(b"k");
        short[offset::JUMP + 1] = 0x10; // the header ends at 0x212
        let why = Kernel::parse(&short).err().map(|ImageError(why)| why);
        assert!(why.unwrap().contains("before init_size"));
    }
}
