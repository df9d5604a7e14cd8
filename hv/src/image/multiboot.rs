//! The hypervisor as a multiboot v1 boot loader (the Multiboot Specification 0.6.96).
//!
//! Three steps, as GRUB or QEMU's `-kernel` take them:
//! 1. find the kernel's header in the first 8 KiB of its file and check it (§3.1): the
//!    magic, the checksum, and that we know every requirement it states;
//! 2. work out which bytes of the file go where in guest-physical memory: by the header's
//!    address fields when flag 16 is set (any file format: "a.out kludge"), else by the
//!    program headers of a 32-bit ELF (its physical addresses, as GRUB loads them);
//! 3. load them, put the modules (the initrd first) after the image, and write the boot
//!    information (§3.3) with the memory map of the PC the hypervisor shows the guest.
//!
//! The vCPU then starts as §3.2 says (`Vcpu::set_multiboot_boot_state`): 32-bit protected
//! mode, paging off, EAX = `BOOTLOADER_MAGIC`, EBX = the boot information's address.

use super::ImageError;
use crate::domain::GuestMemory;
use alloc::format;
use alloc::vec::Vec;
use object::read::elf::{ElfFile32, FileHeader, ProgramHeader};
use object::{Endianness, Object};
use traplab_abi::multiboot::{
    HEADER_MAGIC, HEADER_SEARCH, MEMORY_AVAILABLE, MEMORY_RESERVED, MemoryMapEntry, Module,
    header_flags, info, info_flags,
};

/// The kernel's header (§3.1), with the address fields when flag 16 gives them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Where the header is in the file.
    pub offset: usize,
    pub flags: u32,
    pub addresses: Option<AddressFields>,
}

/// The header's offsets 12–28: where the kernel wants its bytes (§3.1.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AddressFields {
    /// The guest-physical address the header's magic is loaded at.
    pub header_addr: u32,
    /// Where the image starts; the file's bytes from `header offset − (header_addr −
    /// load_addr)` are loaded here.
    pub load_addr: u32,
    /// Where the loaded bytes end; 0: at the end of the file.
    pub load_end_addr: u32,
    /// Where the zeroed memory after them (.bss) ends; 0: none.
    pub bss_end_addr: u32,
    pub entry_addr: u32,
}

/// One piece of the image: file bytes at an address, then zeros up to `memory_size`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segment<'a> {
    pub address: u64,
    pub bytes: &'a [u8],
    pub memory_size: u64,
}

/// A multiboot kernel, ready to load.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kernel<'a> {
    pub header: Header,
    pub segments: Vec<Segment<'a>>,
    pub entry: u32,
    /// How the load addresses were found, for the trace: "its header's address fields" or
    /// "its 32-bit ELF program headers".
    pub loaded_by: &'static str,
}

/// A module the loader hands the kernel (the initrd is the first).
#[derive(Debug, Clone, Copy)]
pub struct BootModule<'a> {
    pub bytes: &'a [u8],
    /// Its string in the module list (§3.3: "typically a command line").
    pub string: &'a str,
}

/// What loading did: where the kernel starts, and where its boot information is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Loaded {
    pub entry: u32,
    pub info: u32,
    /// The first byte after the image and its modules.
    pub end: u64,
    /// Where the ACPI tables are.
    pub acpi: super::acpi::Tables,
}

/// Below 1 MiB is a PC's conventional memory and ROM: the loader keeps its boot information
/// there, and a kernel loads above it (every multiboot kernel links at 1 MiB or higher).
pub const LOW_MEMORY_END: u64 = 0x10_0000;
/// Where the boot information, the memory map, the module list and their strings go: in
/// conventional memory, above the boot GDT (`traplab_abi::boot::BOOT_GDT`), below the
/// initial stack (`BOOT_STACK_TOP`; §3.2 leaves ESP undefined, the kernel sets its own).
pub const BOOT_DATA: u64 = 0x8000;
pub const BOOT_DATA_END: u64 = 0x7_0000;
/// The end of conventional memory a PC reports: 639 KiB, the last KiB being the BIOS's
/// extended data area.
pub const CONVENTIONAL_END: u64 = 0x9_fc00;
/// The BIOS ROM at the top of the first MiB, where the ACPI tables are (`acpi.rs`).
pub const BIOS_ROM: u64 = 0xf_0000;
/// The boot loader's name in the boot information (flag 9).
pub const BOOT_LOADER_NAME: &str = "traplab";

/// The header, if the image has one: `None` when no magic (with its flags and checksum) is
/// in the first 8 KiB; an error when one is, but it is broken or asks for what this loader
/// cannot give.
///
/// §3.1.1: the header lies wholly in the first 8192 bytes, 32-bit aligned (its address
/// fields too, when flag 16 asks for them). The header is the first magic whose checksum
/// holds, as GRUB and QEMU take it: a word of code or data that happens to be 0x1BADB002
/// before it does not hide it. When no checksum holds, the first magic's error says why.
pub fn find_header(image: &[u8]) -> Option<Result<Header, ImageError>> {
    let searched = &image[..image.len().min(HEADER_SEARCH)];
    let mut magics = (0..searched.len().saturating_sub(11))
        .step_by(4)
        .filter(|&at| word(searched, at) == Some(HEADER_MAGIC));
    let first = magics.next()?;
    let checksum_holds = |at: usize| {
        matches!(
            (word(searched, at + 4), word(searched, at + 8)),
            (Some(flags), Some(checksum)) if HEADER_MAGIC.wrapping_add(flags).wrapping_add(checksum) == 0
        )
    };
    let offset = core::iter::once(first)
        .chain(magics)
        .find(|&at| checksum_holds(at))
        .unwrap_or(first);
    Some(check_header(searched, offset))
}

fn check_header(image: &[u8], offset: usize) -> Result<Header, ImageError> {
    let field = |index: usize| {
        word(image, offset + 4 * index).ok_or_else(|| {
            ImageError(format!(
                "the multiboot header at file offset {offset:#x} is cut off by the end of the file or of its first 8 KiB"
            ))
        })
    };
    let flags = field(1)?;
    let checksum = field(2)?;
    // §3.1.2: "checksum … when added to the other magic fields, must have a 32-bit
    // unsigned sum of zero".
    let sum = HEADER_MAGIC.wrapping_add(flags).wrapping_add(checksum);
    if sum != 0 {
        return Err(ImageError(format!(
            "the multiboot header at file offset {offset:#x} has a wrong checksum (magic + flags + checksum = {sum:#x}, must be 0)"
        )));
    }
    // Flag 2 (a video mode) is accepted and not given, as QEMU's loader does: this platform
    // has no display, and the boot information says so (its flags 11 and 12 stay clear).
    let unknown = flags & header_flags::REQUIREMENTS & !header_flags::KNOWN_REQUIREMENTS;
    if unknown != 0 {
        return Err(ImageError(format!(
            "the multiboot header requires what this loader does not know (flag bits {unknown:#x}); §3.1.2 says a loader must refuse it"
        )));
    }
    let addresses = if flags & header_flags::ADDRESS_FIELDS != 0 {
        Some(AddressFields {
            header_addr: field(3)?,
            load_addr: field(4)?,
            load_end_addr: field(5)?,
            bss_end_addr: field(6)?,
            entry_addr: field(7)?,
        })
    } else {
        None
    };
    Ok(Header {
        offset,
        flags,
        addresses,
    })
}

impl<'a> Kernel<'a> {
    /// Which bytes of `image` go where, by the header's address fields or the ELF's.
    pub fn parse(image: &'a [u8], header: Header) -> Result<Kernel<'a>, ImageError> {
        match header.addresses {
            Some(fields) => by_address_fields(image, header, fields),
            None => by_elf32(image, header),
        }
    }
}

fn by_address_fields<'a>(
    image: &'a [u8],
    header: Header,
    fields: AddressFields,
) -> Result<Kernel<'a>, ImageError> {
    let bad = |why: &str| ImageError(format!("the multiboot header's address fields: {why}"));
    let AddressFields {
        header_addr,
        load_addr,
        load_end_addr,
        bss_end_addr,
        entry_addr,
    } = fields;
    // The header is loaded like the rest: its file offset and its address are as far from
    // the start of the load as each other.
    let before_header = header_addr
        .checked_sub(load_addr)
        .ok_or_else(|| bad("header_addr is below load_addr"))?;
    let file_start = header
        .offset
        .checked_sub(before_header as usize)
        .ok_or_else(|| bad("load_addr is before the start of the file"))?;
    let available = (image.len() - file_start) as u64;
    let length = match load_end_addr {
        0 => available,
        end => (end as u64)
            .checked_sub(load_addr as u64)
            .ok_or_else(|| bad("load_end_addr is below load_addr"))?,
    };
    if length > available {
        return Err(bad(&format!(
            "they load {length:#x} bytes from file offset {file_start:#x}, past the end of the file ({:#x} bytes)",
            image.len()
        )));
    }
    let memory_size = match bss_end_addr {
        0 => length,
        end => (end as u64)
            .checked_sub(load_addr as u64)
            .filter(|&size| size >= length)
            .ok_or_else(|| bad("bss_end_addr is below load_end_addr"))?,
    };
    let start = load_addr as u64;
    if !(start..start + memory_size).contains(&(entry_addr as u64)) {
        return Err(bad(&format!(
            "entry_addr {entry_addr:#x} is outside the image {start:#x}..{:#x}",
            start + memory_size
        )));
    }
    Ok(Kernel {
        header,
        segments: alloc::vec![Segment {
            address: start,
            bytes: &image[file_start..file_start + length as usize],
            memory_size,
        }],
        entry: entry_addr,
        loaded_by: "its header's address fields",
    })
}

fn by_elf32<'a>(image: &'a [u8], header: Header) -> Result<Kernel<'a>, ImageError> {
    let file = ElfFile32::<Endianness>::parse(image).map_err(|_| {
        ImageError(
            "a multiboot header without address fields (flag 16), in a file that is not a 32-bit ELF: multiboot v1 loads such a kernel only as a 32-bit ELF".into(),
        )
    })?;
    let endian = file.endian();
    // An ELF32 for another machine is no x86 kernel, multiboot header or not (GRUB refuses
    // it too: its multiboot loader wants EM_386).
    let machine = file.elf_header().e_machine(endian);
    if machine != object::elf::EM_386 {
        return Err(ImageError(format!(
            "a 32-bit ELF for another machine (e_machine {machine}): a multiboot kernel is an i386 ELF (EM_386, 3)"
        )));
    }
    let mut segments = Vec::new();
    let mut entry = None;
    for program in file.elf_program_headers() {
        // PT_LOAD (System V ABI): the only segments a loader copies.
        if program.p_type(endian) != object::elf::PT_LOAD || program.p_memsz(endian) == 0 {
            continue;
        }
        let bytes = program
            .data(endian, image)
            .map_err(|_| ImageError("a program header points past the end of the file".into()))?;
        if program.p_filesz(endian) > program.p_memsz(endian) {
            return Err(ImageError(
                "a program header has more bytes in the file than in memory (p_filesz > p_memsz)"
                    .into(),
            ));
        }
        segments.push(Segment {
            // The physical address: a kernel linked to run high (virtual) loads low.
            address: program.p_paddr(endian) as u64,
            bytes,
            memory_size: program.p_memsz(endian) as u64,
        });
        // The entry point is a virtual address: in the segment that holds it, it moves to
        // the physical address as the segment does (as GRUB's multiboot loader does).
        let (virtual_start, size) = (program.p_vaddr(endian), program.p_memsz(endian));
        let offset = file.entry().wrapping_sub(virtual_start as u64);
        if offset < size as u64 {
            entry = Some(program.p_paddr(endian) as u64 + offset);
        }
    }
    if segments.is_empty() {
        return Err(ImageError(
            "a 32-bit ELF with nothing to load (no PT_LOAD segment)".into(),
        ));
    }
    Ok(Kernel {
        header,
        segments,
        entry: entry.unwrap_or(file.entry()) as u32,
        loaded_by: "its 32-bit ELF program headers",
    })
}

/// Load `kernel` into `memory` with `command_line` and `modules`, and write the boot
/// information: what the kernel starts with.
pub fn load(
    kernel: &Kernel,
    memory: &mut dyn GuestMemory,
    command_line: &str,
    modules: &[BootModule],
) -> Result<Loaded, ImageError> {
    let ram = memory.size();
    if ram < 2 * LOW_MEMORY_END {
        return Err(ImageError(format!(
            "{} KiB of RAM is too little for a multiboot kernel (at least 2 MiB)",
            ram / 1024
        )));
    }
    let mut end = 0;
    for segment in &kernel.segments {
        let segment_end = segment.address + segment.memory_size;
        if segment.address < LOW_MEMORY_END || segment_end > ram {
            return Err(ImageError(format!(
                "the kernel loads at {:#x}..{segment_end:#x}, outside the RAM a kernel may load in ({LOW_MEMORY_END:#x}..{ram:#x}; --memory gives more)",
                segment.address
            )));
        }
        put(memory, segment.address, segment.bytes)?;
        zero(
            memory,
            segment.address + segment.bytes.len() as u64,
            segment_end,
        )?;
        end = end.max(segment_end);
    }
    let entry_loaded = kernel.segments.iter().any(|segment| {
        (segment.address..segment.address + segment.memory_size).contains(&(kernel.entry as u64))
    });
    if !entry_loaded {
        return Err(ImageError(format!(
            "the entry point {:#x} is not in a loaded segment",
            kernel.entry
        )));
    }

    // The modules after the image, each on a page of its own: flag 0 may ask for that, and
    // it costs a kernel nothing.
    let mut boot_data = BootData::new();
    let mut list = Vec::new();
    for module in modules {
        let start = page_up(end);
        let module_end = start + module.bytes.len() as u64;
        if module_end > ram {
            return Err(ImageError(format!(
                "a module of {} KiB does not fit in RAM after the kernel (ends at {module_end:#x}, RAM at {ram:#x}; --memory gives more)",
                module.bytes.len() / 1024
            )));
        }
        put(memory, start, module.bytes)?;
        list.push(Module {
            start: start as u32,
            end: module_end as u32,
            string: boot_data.string(memory, module.string)?,
            reserved: 0,
        });
        end = module_end;
    }

    super::firmware::write_bios_data_area(memory)?;
    let acpi = super::acpi::write_tables(memory)?;
    super::smbios::write_tables(memory)?;
    let info_at = boot_data.reserve(info::SIZE as u64)?;
    let mut flags = info_flags::MEMORY | info_flags::COMMAND_LINE | info_flags::BOOT_LOADER_NAME;
    let mut fields = alloc::vec![
        (info::MEM_LOWER, (CONVENTIONAL_END / 1024) as u32),
        (info::MEM_UPPER, ((ram - LOW_MEMORY_END) / 1024) as u32),
        (info::CMDLINE, boot_data.string(memory, command_line)?),
        (
            info::BOOT_LOADER_NAME,
            boot_data.string(memory, BOOT_LOADER_NAME)?
        ),
    ];
    if !list.is_empty() {
        flags |= info_flags::MODULES;
        let at = boot_data.reserve((list.len() * core::mem::size_of::<Module>()) as u64)?;
        for (index, module) in list.iter().enumerate() {
            let mut bytes = [0u8; 16];
            for (slot, value) in [module.start, module.end, module.string, 0]
                .iter()
                .enumerate()
            {
                bytes[slot * 4..slot * 4 + 4].copy_from_slice(&value.to_le_bytes());
            }
            put(memory, at as u64 + index as u64 * 16, &bytes)?;
        }
        fields.push((info::MODS_COUNT, list.len() as u32));
        fields.push((info::MODS_ADDR, at));
    }
    let map = memory_map(ram);
    let map_at = boot_data.reserve((map.len() * 24) as u64)?;
    for (index, entry) in map.iter().enumerate() {
        put(
            memory,
            map_at as u64 + index as u64 * 24,
            &entry_bytes(entry),
        )?;
    }
    flags |= info_flags::MEMORY_MAP;
    fields.push((info::MMAP_LENGTH, (map.len() * 24) as u32));
    fields.push((info::MMAP_ADDR, map_at));
    fields.push((info::FLAGS, flags));

    zero(memory, info_at as u64, info_at as u64 + info::SIZE as u64)?;
    for (offset, value) in fields {
        put(memory, info_at as u64 + offset as u64, &value.to_le_bytes())?;
    }
    Ok(Loaded {
        entry: kernel.entry,
        info: info_at,
        end,
        acpi,
    })
}

/// The memory map of the PC the guest sees: conventional memory, the BIOS's data area and
/// ROM reserved (the ROM's segment holds the ACPI tables, so they are reserved with it), RAM
/// from 1 MiB to the end (what a PC's BIOS reports through E820).
pub fn memory_map(ram: u64) -> [MemoryMapEntry; 4] {
    let entry = |base: u64, end: u64, kind: u32| MemoryMapEntry {
        size: 20,
        base,
        length: end - base,
        kind,
    };
    [
        entry(0, CONVENTIONAL_END, MEMORY_AVAILABLE),
        entry(CONVENTIONAL_END, 0xa_0000, MEMORY_RESERVED),
        entry(BIOS_ROM, LOW_MEMORY_END, MEMORY_RESERVED),
        entry(LOW_MEMORY_END, ram, MEMORY_AVAILABLE),
    ]
}

/// An entry as the kernel reads it: packed, 24 bytes.
fn entry_bytes(entry: &MemoryMapEntry) -> [u8; 24] {
    let MemoryMapEntry {
        size,
        base,
        length,
        kind,
    } = *entry;
    let mut bytes = [0u8; 24];
    bytes[0..4].copy_from_slice(&size.to_le_bytes());
    bytes[4..12].copy_from_slice(&base.to_le_bytes());
    bytes[12..20].copy_from_slice(&length.to_le_bytes());
    bytes[20..24].copy_from_slice(&kind.to_le_bytes());
    bytes
}

/// The loader's area in conventional memory, filled from the bottom.
struct BootData {
    next: u64,
}

impl BootData {
    fn new() -> BootData {
        BootData { next: BOOT_DATA }
    }

    /// Room for `size` bytes, 8-aligned: its address.
    fn reserve(&mut self, size: u64) -> Result<u32, ImageError> {
        let at = (self.next + 7) & !7;
        if at + size > BOOT_DATA_END {
            return Err(ImageError(format!(
                "the boot information does not fit in {} KiB (the command line is too long?)",
                (BOOT_DATA_END - BOOT_DATA) / 1024
            )));
        }
        self.next = at + size;
        Ok(at as u32)
    }

    /// A zero-terminated copy of `text`: its address.
    fn string(&mut self, memory: &mut dyn GuestMemory, text: &str) -> Result<u32, ImageError> {
        let at = self.reserve(text.len() as u64 + 1)?;
        put(memory, at as u64, text.as_bytes())?;
        put(memory, at as u64 + text.len() as u64, &[0])?;
        Ok(at)
    }
}

fn put(memory: &mut dyn GuestMemory, at: u64, bytes: &[u8]) -> Result<(), ImageError> {
    memory.write_physical(at, bytes).map_err(|_| {
        ImageError(format!(
            "{:#x} bytes at {at:#x} are not in RAM",
            bytes.len()
        ))
    })
}

fn zero(memory: &mut dyn GuestMemory, from: u64, to: u64) -> Result<(), ImageError> {
    memory
        .zero_physical(from, to)
        .map_err(|_| ImageError(format!("{from:#x}..{to:#x} is not in RAM")))
}

fn page_up(address: u64) -> u64 {
    (address + 0xfff) & !0xfff
}

fn word(bytes: &[u8], at: usize) -> Option<u32> {
    let bytes = bytes.get(at..at + 4)?;
    Some(u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::VecMemory;

    /// A kludge image: 64 bytes of padding, the header at 0x40 (loaded at 0x100040), then
    /// code up to 0x80 bytes in the file, .bss to 0x101000, entry at 0x100060.
    fn kludge(flags: u32) -> Vec<u8> {
        let mut image = vec![0x90u8; 0x80];
        let header = [
            HEADER_MAGIC,
            flags,
            0u32.wrapping_sub(HEADER_MAGIC).wrapping_sub(flags),
            0x10_0040,
            0x10_0000,
            0x10_0080,
            0x10_1000,
            0x10_0060,
        ];
        for (index, value) in header.iter().enumerate() {
            image[0x40 + index * 4..0x44 + index * 4].copy_from_slice(&value.to_le_bytes());
        }
        image
    }

    const FLAGS: u32 = header_flags::MEMORY_INFO | header_flags::ADDRESS_FIELDS;

    #[test]
    fn a_header_that_crosses_8_kib_is_none_and_a_stray_magic_hides_none() {
        // §3.1.1: magic, flags and checksum wholly inside the first 8 KiB. A magic at 8188
        // has its flags and checksum past it: no header (it was taken as one).
        let mut image = vec![0u8; HEADER_SEARCH + 32];
        let at = HEADER_SEARCH - 4;
        let flags = header_flags::MEMORY_INFO;
        let header = [
            HEADER_MAGIC,
            flags,
            0u32.wrapping_sub(HEADER_MAGIC).wrapping_sub(flags),
        ];
        for (index, value) in header.iter().enumerate() {
            image[at + index * 4..at + index * 4 + 4].copy_from_slice(&value.to_le_bytes());
        }
        assert!(find_header(&image).is_none(), "{:?}", find_header(&image));
        // A stray magic word before the real header (at 0x40): the header is found, as GRUB
        // and QEMU find it (it was refused for the stray word's checksum).
        let mut image = kludge(FLAGS);
        image[0..4].copy_from_slice(&HEADER_MAGIC.to_le_bytes());
        let found = find_header(&image).expect("a magic");
        assert_eq!(found.map(|header| header.offset), Ok(0x40));
        // Only stray magics: the first one's error.
        let mut image = vec![0u8; 64];
        image[8..12].copy_from_slice(&HEADER_MAGIC.to_le_bytes());
        let error = find_header(&image).expect("a magic").unwrap_err();
        assert!(
            error.0.contains("offset 0x8 has a wrong checksum"),
            "{}",
            error.0
        );
    }

    fn read_u32(memory: &VecMemory, at: u64) -> u32 {
        let mut bytes = [0u8; 4];
        memory.read_physical(at, &mut bytes).expect("in RAM");
        u32::from_le_bytes(bytes)
    }

    fn read_string(memory: &VecMemory, at: u64) -> String {
        let mut text = Vec::new();
        for offset in 0.. {
            let mut byte = [0u8];
            memory
                .read_physical(at + offset, &mut byte)
                .expect("in RAM");
            if byte[0] == 0 {
                break;
            }
            text.push(byte[0]);
        }
        String::from_utf8(text).expect("ASCII")
    }

    #[test]
    fn the_address_fields_say_which_bytes_go_where() {
        let image = kludge(FLAGS);
        let header = find_header(&image).expect("a header").expect("valid");
        assert_eq!(header.offset, 0x40);
        let kernel = Kernel::parse(&image, header).expect("loadable");
        assert_eq!(kernel.entry, 0x10_0060);
        assert_eq!(
            kernel.segments,
            vec![Segment {
                address: 0x10_0000,
                bytes: &image[..],
                memory_size: 0x1000
            }]
        );
    }

    #[test]
    fn a_broken_header_is_refused_with_the_reason() {
        let mut image = kludge(FLAGS);
        image[0x48] ^= 1;
        let why = find_header(&image).expect("a header").unwrap_err().0;
        assert!(
            why.contains("wrong checksum (magic + flags + checksum = 0x1, must be 0)"),
            "{why}"
        );
        let unknown = kludge(FLAGS | 1 << 5);
        let why = find_header(&unknown).expect("a header").unwrap_err().0;
        assert!(why.contains("flag bits 0x20"), "{why}");
        let mut past_end = kludge(FLAGS);
        past_end[0x54..0x58].copy_from_slice(&0x10_2000u32.to_le_bytes()); // load_end_addr
        let header = find_header(&past_end).expect("a header").expect("valid");
        let why = Kernel::parse(&past_end, header).unwrap_err().0;
        assert!(why.contains("past the end of the file"), "{why}");
        // No address fields and not a 32-bit ELF: nothing says where to load it.
        let plain = kludge(header_flags::MEMORY_INFO);
        let header = find_header(&plain).expect("a header").expect("valid");
        let why = Kernel::parse(&plain, header).unwrap_err().0;
        assert!(why.contains("not a 32-bit ELF"), "{why}");
    }

    #[test]
    fn no_magic_in_the_first_8_kib_is_no_multiboot_kernel() {
        let mut image = vec![0u8; HEADER_SEARCH + 64];
        image[HEADER_SEARCH..HEADER_SEARCH + 4].copy_from_slice(&HEADER_MAGIC.to_le_bytes());
        assert!(find_header(&image).is_none());
    }

    #[test]
    fn loading_writes_the_image_the_modules_and_the_boot_information() {
        let image = kludge(FLAGS);
        let header = find_header(&image).expect("a header").expect("valid");
        let kernel = Kernel::parse(&image, header).expect("loadable");
        let mut memory = VecMemory::new(4 << 20, false);
        // .bss must be zeroed even where the RAM held something before.
        memory.write_physical(0x10_0800, &[0xff; 16]).expect("RAM");
        let initrd = BootModule {
            bytes: b"initrd bytes",
            string: "initrd",
        };
        let loaded = load(&kernel, &mut memory, "hello console=ttyS0", &[initrd]).expect("fits");
        assert_eq!(loaded.entry, 0x10_0060);
        assert_eq!(loaded.end, 0x10_1000 + 12);
        let mut copied = vec![0u8; 0x80];
        memory.read_physical(0x10_0000, &mut copied).expect("RAM");
        assert_eq!(copied, image);
        assert_eq!(read_u32(&memory, 0x10_0800), 0, ".bss zeroed");

        let info = loaded.info as u64;
        assert!((BOOT_DATA..BOOT_DATA_END).contains(&info));
        let flags = read_u32(&memory, info);
        assert_eq!(
            flags,
            info_flags::MEMORY
                | info_flags::COMMAND_LINE
                | info_flags::MODULES
                | info_flags::MEMORY_MAP
                | info_flags::BOOT_LOADER_NAME
        );
        assert_eq!(read_u32(&memory, info + info::MEM_LOWER as u64), 639);
        assert_eq!(read_u32(&memory, info + info::MEM_UPPER as u64), 3 * 1024);
        let cmdline = read_u32(&memory, info + info::CMDLINE as u64) as u64;
        assert_eq!(read_string(&memory, cmdline), "hello console=ttyS0");
        let name = read_u32(&memory, info + info::BOOT_LOADER_NAME as u64) as u64;
        assert_eq!(read_string(&memory, name), "traplab");

        assert_eq!(read_u32(&memory, info + info::MODS_COUNT as u64), 1);
        let module = read_u32(&memory, info + info::MODS_ADDR as u64) as u64;
        assert_eq!(
            read_u32(&memory, module),
            0x10_1000,
            "on the page after .bss"
        );
        assert_eq!(read_u32(&memory, module + 4), 0x10_1000 + 12);
        assert_eq!(
            read_string(&memory, read_u32(&memory, module + 8) as u64),
            "initrd"
        );
        let mut bytes = [0u8; 12];
        memory.read_physical(0x10_1000, &mut bytes).expect("RAM");
        assert_eq!(&bytes, b"initrd bytes");

        let map_length = read_u32(&memory, info + info::MMAP_LENGTH as u64);
        let map = read_u32(&memory, info + info::MMAP_ADDR as u64) as u64;
        assert_eq!(map_length, 4 * 24);
        // The last entry: RAM from 1 MiB to the end, type 1.
        let last = map + 3 * 24;
        assert_eq!(read_u32(&memory, last), 20);
        assert_eq!(read_u32(&memory, last + 4), 0x10_0000);
        assert_eq!(read_u32(&memory, last + 12), 3 << 20);
        assert_eq!(read_u32(&memory, last + 20), MEMORY_AVAILABLE);

        // The firmware's tables: the RSDP in the BIOS ROM's segment, which the map reserves.
        let mut signature = [0u8; 8];
        memory
            .read_physical(loaded.acpi.rsdp, &mut signature)
            .expect("RAM");
        assert_eq!(&signature, b"RSD PTR ");
        assert!((BIOS_ROM..LOW_MEMORY_END).contains(&loaded.acpi.rsdp));
    }

    #[test]
    fn a_kernel_below_1_mib_or_past_the_ram_is_refused() {
        let image = kludge(FLAGS);
        let header = find_header(&image).expect("a header").expect("valid");
        let mut kernel = Kernel::parse(&image, header).expect("loadable");
        let mut small = VecMemory::new(1 << 20, false);
        assert!(
            load(&kernel, &mut small, "", &[])
                .unwrap_err()
                .0
                .contains("too little")
        );
        kernel.segments[0].address = 0x8_0000;
        let mut memory = VecMemory::new(4 << 20, false);
        let why = load(&kernel, &mut memory, "", &[]).unwrap_err().0;
        assert!(
            why.contains("outside the RAM a kernel may load in (0x100000..0x400000"),
            "{why}"
        );
    }

    #[test]
    fn a_32_bit_elf_loads_by_its_physical_addresses() {
        // A minimal ELF32: header, one PT_LOAD of 16 bytes at file offset 0x60, virtual
        // 0xc0100000 (a kernel linked high), physical 0x100000, memsz 0x20.
        let mut elf = vec![0u8; 0x70];
        elf[0..4].copy_from_slice(b"\x7fELF");
        elf[4] = 1; // 32-bit
        elf[5] = 1; // little-endian
        elf[6] = 1; // version
        let put16 = |elf: &mut Vec<u8>, at: usize, value: u16| {
            elf[at..at + 2].copy_from_slice(&value.to_le_bytes())
        };
        let put32 = |elf: &mut Vec<u8>, at: usize, value: u32| {
            elf[at..at + 4].copy_from_slice(&value.to_le_bytes())
        };
        put16(&mut elf, 16, 2); // ET_EXEC
        put16(&mut elf, 18, 3); // EM_386
        put32(&mut elf, 20, 1);
        put32(&mut elf, 24, 0xc010_0004); // e_entry: virtual, 4 bytes into the segment
        put32(&mut elf, 28, 0x34); // e_phoff
        put16(&mut elf, 40, 0x34); // e_ehsize
        put16(&mut elf, 42, 0x20); // e_phentsize
        put16(&mut elf, 44, 1); // e_phnum
        put32(&mut elf, 0x34, 1); // PT_LOAD
        put32(&mut elf, 0x38, 0x60); // p_offset
        put32(&mut elf, 0x3c, 0xc010_0000); // p_vaddr
        put32(&mut elf, 0x40, 0x10_0000); // p_paddr
        put32(&mut elf, 0x44, 0x10); // p_filesz
        put32(&mut elf, 0x48, 0x20); // p_memsz
        put32(&mut elf, 0x4c, 5); // R X
        // The multiboot header in the loaded bytes, at 0x60.
        let flags = header_flags::MEMORY_INFO;
        put32(&mut elf, 0x60, HEADER_MAGIC);
        put32(&mut elf, 0x64, flags);
        put32(
            &mut elf,
            0x68,
            0u32.wrapping_sub(HEADER_MAGIC).wrapping_sub(flags),
        );
        let header = find_header(&elf).expect("a header").expect("valid");
        let kernel = Kernel::parse(&elf, header).expect("an ELF32 kernel");
        assert_eq!(
            kernel.entry, 0x10_0004,
            "the virtual entry, moved as its segment is"
        );
        assert_eq!(kernel.loaded_by, "its 32-bit ELF program headers");
        assert_eq!(
            kernel.segments,
            vec![Segment {
                address: 0x10_0000,
                bytes: &elf[0x60..0x70],
                memory_size: 0x20
            }]
        );
        // The same file for another machine (EM_ARM, 40) is refused, header or not.
        put16(&mut elf, 18, 40);
        let header = find_header(&elf).expect("a header").expect("valid");
        let error = Kernel::parse(&elf, header).unwrap_err();
        assert!(error.0.contains("e_machine 40"), "{}", error.0);
    }
}
