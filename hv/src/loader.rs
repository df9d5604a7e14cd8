//! Creating a domain: memory, the guest's ELF image, and the state it starts in.
//!
//! The guest boot protocol is documented in `traplab_abi::boot`: the guest starts in
//! 64-bit mode at its ELF entry point, with paging on (tables we build in its memory),
//! a flat GDT, a stack, and RDI pointing to a `BootInfo` (the vCPU's first state is
//! `traplab_hv::domain::vcpu`'s; the nested page tables and intercepts are set up here).

use crate::guest_ram::GuestRam;
use crate::intercepts;
use alloc::borrow::Cow;
use alloc::boxed::Box;
use alloc::format;
use alloc::string::String;
use object::read::elf::ElfFile64;
use object::{Endianness, Object, ObjectSection, ObjectSegment};
use traplab_abi::boot::{self, BootInfo};
use traplab_abi::x86::pte;
use traplab_hv::device::ata;
use traplab_hv::domain::{Domain, GuestMemory};

/// Why a domain could not be created.
#[derive(Debug)]
pub enum LoadError {
    OutOfMemory,
    BadElf(String),
}

impl core::fmt::Display for LoadError {
    fn fmt(&self, formatter: &mut core::fmt::Formatter) -> core::fmt::Result {
        match self {
            LoadError::OutOfMemory => formatter.write_str("out of memory"),
            LoadError::BadElf(why) => write!(formatter, "bad ELF: {why}"),
        }
    }
}

/// Domain `id` running `elf`, on a machine whose disk controller `disk` says who owns.
pub fn create(
    id: u16,
    name: String,
    elf: &[u8],
    disk: ata::Assignment,
) -> Result<Domain, LoadError> {
    let mut memory = if crate::settings::get().lazy_memory {
        GuestRam::new_lazy(boot::GUEST_RAM_SIZE)
    } else {
        GuestRam::new(boot::GUEST_RAM_SIZE)
    }
    .ok_or(LoadError::OutOfMemory)?;
    let (entry, image_end, mode) = load_elf(&mut memory, elf)?;
    build_boot_environment(&mut memory, id, image_end, mode, disk).ok_or(LoadError::OutOfMemory)?;
    let nested_root = memory.npt.root;

    let mut domain = Domain::new(id, name, Box::new(memory));
    domain.devices.disk = disk;
    let vcpu = &mut domain.vcpu;
    intercepts::configure(&mut vcpu.vmcb, id, disk).ok_or(LoadError::OutOfMemory)?;
    let control = &mut vcpu.vmcb.control;
    control.np_enable = 1;
    control.n_cr3 = nested_root;
    // The guest's clock starts near 0 when it is created: TSC_OFFSET = -now (15.30.5).
    control.tsc_offset = crate::time::rdtsc().wrapping_neg();
    match mode {
        boot::GuestMode::Long64 => vcpu.set_long_mode_boot_state(entry),
        boot::GuestMode::Protected32 => vcpu.set_protected_mode_boot_state(entry),
    }
    Ok(domain)
}

/// Copy the ELF's loadable segments to their addresses. Returns the entry point, the end
/// of the image, and the mode the guest asks to start in.
fn load_elf(memory: &mut GuestRam, elf: &[u8]) -> Result<(u64, u64, boot::GuestMode), LoadError> {
    let file = ElfFile64::<Endianness>::parse(elf)
        .map_err(|error| LoadError::BadElf(format!("{error}")))?;
    let (mode, entry32) = guest_mode(&file)?;
    let mut image_end = boot::IMAGE_BASE;
    for segment in file.segments() {
        let (start, size) = (segment.address(), segment.size());
        let end = start
            .checked_add(size)
            .ok_or_else(|| LoadError::BadElf("segment wraps around".into()))?;
        if start < boot::IMAGE_BASE || end > memory.size() {
            return Err(LoadError::BadElf(format!(
                "segment {start:#x}..{end:#x} is outside guest RAM {:#x}..{:#x}",
                boot::IMAGE_BASE,
                memory.size()
            )));
        }
        let data = segment
            .data()
            .map_err(|error| LoadError::BadElf(format!("{error}")))?;
        memory
            .write_physical(start, data)
            .map_err(|_| LoadError::BadElf("segment not in RAM".into()))?;
        // The rest of the segment (.bss) is zeros, as every ELF loader makes it: written
        // here, so that with lazy memory the whole image is mapped before the guest runs
        // and only the RAM it never had faults in.
        let zeros = [0u8; 4096];
        let mut at = start + data.len() as u64;
        while at < end {
            let length = (end - at).min(zeros.len() as u64);
            memory
                .write_physical(at, &zeros[..length as usize])
                .map_err(|_| LoadError::BadElf("segment not in RAM".into()))?;
            at += length;
        }
        image_end = image_end.max(end);
    }
    let entry = match mode {
        boot::GuestMode::Long64 => file.entry(),
        boot::GuestMode::Protected32 => entry32.unwrap_or(0),
    };
    if entry < boot::IMAGE_BASE || entry >= image_end {
        return Err(LoadError::BadElf(format!(
            "entry point {entry:#x} is outside the image"
        )));
    }
    Ok((entry, image_end, mode))
}

/// The guest's `traplab` ELF note, if it has one (`traplab_abi::boot::GuestMode`): the mode
/// and, for a 32-bit guest, its entry point.
fn guest_mode(file: &ElfFile64<Endianness>) -> Result<(boot::GuestMode, Option<u64>), LoadError> {
    let Some(section) = file.section_by_name(boot::MODE_NOTE_SECTION) else {
        return Ok((boot::GuestMode::Long64, None));
    };
    let data = section
        .data()
        .map_err(|error| LoadError::BadElf(format!("{error}")))?;
    // An ELF note: namesz, descsz, type, the name padded to 4, the descriptor.
    let word = |at: usize| {
        data.get(at..at + 4)
            .map(|bytes| u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]))
    };
    let (Some(name_size), Some(desc_size), Some(kind)) = (word(0), word(4), word(8)) else {
        return Err(LoadError::BadElf("a truncated traplab note".into()));
    };
    let desc_at = 12 + (name_size as usize).div_ceil(4) * 4;
    let name = data.get(12..12 + name_size as usize).unwrap_or_default();
    if name != boot::MODE_NOTE_NAME || kind != boot::MODE_NOTE_TYPE || desc_size != 8 {
        return Err(LoadError::BadElf(
            "a traplab note that is not a mode note".into(),
        ));
    }
    let entry = word(desc_at + 4).map(u64::from);
    match word(desc_at) {
        Some(32) => Ok((boot::GuestMode::Protected32, entry)),
        Some(64) => Ok((boot::GuestMode::Long64, None)),
        other => Err(LoadError::BadElf(format!("unknown guest mode {other:?}"))),
    }
}

/// The boot info, the boot GDT and the boot page tables, in guest memory.
fn build_boot_environment(
    memory: &mut GuestRam,
    id: u16,
    image_end: u64,
    mode: boot::GuestMode,
    disk: ata::Assignment,
) -> Option<()> {
    let info = BootInfo {
        magic: boot::BOOT_INFO_MAGIC,
        domain: id as u32,
        disk_owner: disk.boot_info(),
        ram_size: memory.size(),
        free_start: (image_end + 0xfff) & !0xfff,
        free_end: memory.size(),
    };
    // SAFETY: BootInfo is plain integers (repr C): viewing it as bytes is fine.
    let bytes = unsafe {
        core::slice::from_raw_parts(
            (&info as *const BootInfo).cast::<u8>(),
            core::mem::size_of::<BootInfo>(),
        )
    };
    memory.write_physical(boot::BOOT_INFO, bytes).ok()?;

    // Null, code (0x08: 64-bit, or 32-bit for a protected-mode guest), data (0x10).
    let code = match mode {
        boot::GuestMode::Long64 => 0x00af_9a00_0000_ffff,
        boot::GuestMode::Protected32 => 0x00cf_9a00_0000_ffff,
    };
    let gdt: [u64; 3] = [0, code, 0x00cf_9200_0000_ffff];
    for (index, descriptor) in gdt.iter().enumerate() {
        memory
            .write_physical(boot::BOOT_GDT + index as u64 * 8, &descriptor.to_le_bytes())
            .ok()?;
    }

    // PML4 → PDPT → PD; the first 2 MiB through a PT with page 0 left out, the rest as
    // 2 MiB pages. The upper levels allow user access, so a guest can hand a page to
    // CPL 3 by changing only the leaf.
    let pml4 = boot::BOOT_PAGE_TABLES;
    let (pdpt, pd, pt) = (pml4 + 0x1000, pml4 + 0x2000, pml4 + 0x3000);
    let table_flags = pte::PRESENT | pte::WRITABLE | pte::USER;
    let mut write =
        |address: u64, value: u64| memory.write_physical(address, &value.to_le_bytes()).ok();
    write(pml4, pdpt | table_flags)?;
    write(pdpt, pd | table_flags)?;
    write(pd, pt | table_flags)?;
    for page in 1..512u64 {
        write(pt + page * 8, (page << 12) | pte::PRESENT | pte::WRITABLE)?;
    }
    let size = boot::GUEST_RAM_SIZE;
    for large in 1..(size >> 21) {
        write(
            pd + large * 8,
            (large << 21) | pte::PRESENT | pte::WRITABLE | pte::HUGE,
        )?;
    }
    Some(())
}

/// The `domain created` event's reason text.
pub fn describe(domain: &Domain) -> Cow<'static, str> {
    Cow::Owned(format!(
        "{} KiB of RAM, entry {:#x}",
        domain.memory.size() / 1024,
        domain.vcpu.vmcb.save.rip
    ))
}
