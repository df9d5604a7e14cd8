//! Creating a domain: memory, the guest's kernel image, and the state it starts in.
//!
//! Two kinds of image boot (`traplab_hv::image` tells them apart):
//! - traplab's own lab guests, 64-bit ELF files: the boot protocol is `traplab_abi::boot`'s.
//!   The guest starts in 64-bit mode at its ELF entry point, with paging on (tables we build
//!   in its memory), a flat GDT, a stack, and RDI pointing to a `BootInfo`;
//! - multiboot v1 kernels, which know nothing of traplab (`traplab_hv::image::multiboot`):
//!   32-bit protected mode, paging off, EAX = 0x2badb002, EBX = the boot information.
//!
//! The vCPU's first state is `traplab_hv::domain::vcpu`'s; the nested page tables and the
//! intercepts are set up here.

use crate::guest_ram::GuestRam;
use crate::intercepts;
use alloc::borrow::Cow;
use alloc::boxed::Box;
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use object::read::elf::ElfFile64;
use object::{Endianness, Object, ObjectSection, ObjectSegment};
use traplab_abi::boot::{self, BootInfo};
use traplab_abi::x86::pte;
use traplab_hv::device::ata;
use traplab_hv::device::pc_testdev::PcTestdev;
use traplab_hv::domain::{Domain, GuestMemory};
use traplab_hv::image::{self, Format, linux, multiboot};

/// Why a domain could not be created.
#[derive(Debug)]
pub enum LoadError {
    OutOfMemory,
    BadElf(String),
    /// The image is not one we boot, or cannot be booted as it asks.
    BadImage(image::ImageError),
}

impl core::fmt::Display for LoadError {
    fn fmt(&self, formatter: &mut core::fmt::Formatter) -> core::fmt::Result {
        match self {
            LoadError::OutOfMemory => formatter.write_str("out of memory"),
            LoadError::BadElf(why) => write!(formatter, "bad ELF: {why}"),
            LoadError::BadImage(why) => write!(formatter, "{why}"),
        }
    }
}

impl From<image::ImageError> for LoadError {
    fn from(error: image::ImageError) -> LoadError {
        LoadError::BadImage(error)
    }
}

/// What the host passed with a domain's image (fw_cfg `opt/traplab/domN/…`).
pub struct BootOptions {
    /// RAM in bytes (`memory-mib`; [`boot::GUEST_RAM_SIZE`] when not given).
    pub memory: u64,
    /// The kernel's command line (`cmdline`), for a multiboot kernel.
    pub command_line: Option<String>,
    /// The initrd (`initrd`): a multiboot kernel's first module.
    pub initrd: Option<Vec<u8>>,
    /// Bytes typed ahead on COM1 (`input`): they wait in its receiver when the guest starts.
    pub input: Option<Vec<u8>>,
}

/// Domain `id`, named `name`, running `image`, on a machine whose disk controller `disk`
/// says who owns.
pub fn create(
    id: u16,
    name: String,
    image: &[u8],
    options: &BootOptions,
    disk: ata::Assignment,
) -> Result<Domain, LoadError> {
    let format = image::identify(image)?;
    let mut memory = if crate::settings::get().lazy_memory {
        GuestRam::new_lazy(options.memory)
    } else {
        GuestRam::new(options.memory)
    }
    .ok_or(LoadError::OutOfMemory)?;
    let nested_root = memory.nested_root();
    let start = match format {
        Format::TraplabElf64 => {
            if options.command_line.is_some() || options.initrd.is_some() {
                return Err(LoadError::BadImage(image::ImageError(
                    "a traplab lab guest takes no command line and no initrd (they are for multiboot kernels)".into(),
                )));
            }
            let (entry, image_end, mode) = load_elf(&mut memory, image)?;
            build_boot_environment(&mut memory, id, image_end, mode, disk)
                .ok_or(LoadError::OutOfMemory)?;
            Start::Traplab(entry, mode)
        }
        Format::Multiboot(kernel) => {
            // GRUB and QEMU start the command line with the kernel's own name.
            let command_line = match &options.command_line {
                Some(arguments) => format!("{name} {arguments}"),
                None => name.clone(),
            };
            let modules: Vec<multiboot::BootModule> = options
                .initrd
                .iter()
                .map(|bytes| multiboot::BootModule {
                    bytes,
                    string: "initrd",
                })
                .collect();
            let loaded = multiboot::load(&kernel, &mut memory, &command_line, &modules)?;
            // The CPU's descriptor caches hold flat segments at entry (§3.2), and the
            // selectors must name something should the kernel reload them before its own
            // GDT: the boot GDT's 32-bit entries.
            build_boot_gdt(&mut memory, boot::GuestMode::Protected32)
                .ok_or(LoadError::OutOfMemory)?;
            Start::Multiboot(loaded)
        }
        Format::Linux(kernel) => {
            let command_line = options.command_line.as_deref().unwrap_or("");
            Start::Linux(linux::load(
                &kernel,
                &mut memory,
                command_line,
                options.initrd.as_deref(),
            )?)
        }
    };

    let mut domain = Domain::new(id, name, Box::new(memory));
    domain.devices.disk = disk;
    if matches!(start, Start::Multiboot(_) | Start::Linux(_)) {
        // A PC kernel finds the MTRRs as its BIOS left them (`image/firmware.rs`).
        let mtrrs = image::firmware::MTRRS
            .iter()
            .chain([&image::firmware::MTRR_DEFAULT]);
        for &(msr, value) in mtrrs {
            domain.vcpu.msrs.insert(msr, value);
        }
    }
    // QEMU's pc-testdev is there only when asked for, as `-device pc-testdev` on QEMU.
    if crate::settings::get().pc_testdev {
        domain.devices.testdev = Some(PcTestdev::default());
    }
    if let Some(input) = &options.input {
        domain.devices.console.receive(input);
    }
    let vcpu = &mut domain.vcpu;
    intercepts::configure(vcpu, id, disk).ok_or(LoadError::OutOfMemory)?;
    let control = &mut vcpu.vmcb.control;
    control.np_enable = 1;
    control.n_cr3 = nested_root;
    // The guest's clock starts near 0 when it is created: TSC_OFFSET = -now (15.30.5).
    control.tsc_offset = crate::time::rdtsc().wrapping_neg();
    match start {
        Start::Traplab(entry, boot::GuestMode::Long64) => vcpu.set_long_mode_boot_state(entry),
        Start::Traplab(entry, boot::GuestMode::Protected32) => {
            vcpu.set_protected_mode_boot_state(entry)
        }
        Start::Linux(loaded) => vcpu.set_linux_boot_state(
            loaded.entry,
            loaded.zero_page,
            (linux::GDT, linux::GDT_LIMIT),
            (linux::BOOT_CS, linux::BOOT_DS),
        ),
        Start::Multiboot(loaded) => vcpu.set_multiboot_boot_state(loaded.entry, loaded.info),
    }
    Ok(domain)
}

/// How the vCPU starts.
enum Start {
    Traplab(u64, boot::GuestMode),
    Multiboot(multiboot::Loaded),
    Linux(linux::Loaded),
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
        // The ELF gABI: a segment's file bytes never exceed its memory size. More would be
        // written past `end`, above where the guest is told its free memory starts.
        if data.len() as u64 > size {
            return Err(LoadError::BadElf(format!(
                "segment {start:#x}..{end:#x} has more bytes in the file ({}) than in memory (p_filesz > p_memsz)",
                data.len()
            )));
        }
        memory
            .write_physical(start, data)
            .map_err(|_| LoadError::BadElf("segment not in RAM".into()))?;
        // The rest of the segment (.bss) is zeros, as every ELF loader makes it: written
        // here, so that with lazy memory the whole image is mapped before the guest runs
        // and only the RAM it never had faults in.
        memory
            .zero_physical(start + data.len() as u64, end)
            .map_err(|_| LoadError::BadElf("segment not in RAM".into()))?;
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
    build_boot_gdt(memory, mode)?;

    // PML4 → PDPT → PD; the first 2 MiB through a PT with page 0 left out, the rest as
    // 2 MiB pages. The upper levels allow user access, so a guest can hand a page to
    // CPL 3 by changing only the leaf.
    let pml4 = boot::BOOT_PAGE_TABLES;
    let (pdpt, pd, pt) = (pml4 + 0x1000, pml4 + 0x2000, pml4 + 0x3000);
    let table_flags = pte::PRESENT | pte::WRITABLE | pte::USER;
    // One page directory maps 1 GiB: a lab guest with more RAM sees its first GiB mapped.
    let size = memory.size().min(1 << 30);
    let mut write =
        |address: u64, value: u64| memory.write_physical(address, &value.to_le_bytes()).ok();
    write(pml4, pdpt | table_flags)?;
    write(pdpt, pd | table_flags)?;
    write(pd, pt | table_flags)?;
    for page in 1..512u64 {
        write(pt + page * 8, (page << 12) | pte::PRESENT | pte::WRITABLE)?;
    }
    for large in 1..(size >> 21) {
        write(
            pd + large * 8,
            (large << 21) | pte::PRESENT | pte::WRITABLE | pte::HUGE,
        )?;
    }
    Some(())
}

/// The boot GDT: null, code (0x08: 64-bit, or 32-bit for a protected-mode guest), data (0x10).
fn build_boot_gdt(memory: &mut GuestRam, mode: boot::GuestMode) -> Option<()> {
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
    Some(())
}

/// The `domain created` event's reason text: its RAM, and how it starts.
pub fn describe(domain: &Domain) -> Cow<'static, str> {
    let save = &domain.vcpu.vmcb.save;
    let ram = domain.memory.size() / 1024;
    let paging = save.cr0 & (1 << 31) != 0;
    if !paging && save.rax == traplab_abi::multiboot::BOOTLOADER_MAGIC as u64 {
        return Cow::Owned(format!(
            "a multiboot kernel: {ram} KiB of RAM, entry {:#x} in 32-bit protected mode with paging off, EAX = {:#x}, EBX = {:#x} (its boot information)",
            save.rip, save.rax, domain.vcpu.context.rbx
        ));
    }
    if !paging && save.cs.selector == traplab_hv::image::linux::BOOT_CS {
        return Cow::Owned(format!(
            "a Linux kernel (bzImage): {ram} KiB of RAM, entry {:#x} in 32-bit protected mode with paging off by the 32-bit boot protocol, ESI = {:#x} (its zero page, struct boot_params)",
            save.rip, domain.vcpu.context.rsi
        ));
    }
    Cow::Owned(format!("{ram} KiB of RAM, entry {:#x}", save.rip))
}
