//! Creating a domain: memory, the guest's ELF image, and the state it starts in.
//!
//! The guest boot protocol is documented in `traplab_abi::boot`: the guest starts in
//! 64-bit mode at its ELF entry point, with paging on (tables we build in its memory),
//! a flat GDT, a stack, and RDI pointing to a `BootInfo`.

use super::memory::GuestMemory;
use super::{Domain, ExitState};
use crate::device::uart::Uart;
use crate::intercepts;
use crate::memory;
use crate::svm::vmcb::{Segment, Vmcb, attrib};
use crate::svm::world_switch::GuestContext;
use alloc::borrow::Cow;
use alloc::boxed::Box;
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use object::read::elf::ElfFile64;
use object::{Endianness, Object, ObjectSection, ObjectSegment};
use traplab_abi::boot::{self, BootInfo};
use traplab_abi::x86::pte;

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

/// The guest's first CR0: PE (protected mode), MP, ET, NE (x87 errors as #MF),
/// WP (supervisor writes honour read-only pages), PG (paging).
const CR0: u64 = (1 << 0) | (1 << 1) | (1 << 4) | (1 << 5) | (1 << 16) | (1 << 31);
/// CR4: PAE (long mode needs it), OSFXSR and OSXMMEXCPT (SSE instructions work).
const CR4: u64 = (1 << 5) | (1 << 9) | (1 << 10);
/// EFER: LME and LMA (long mode active), NXE, and SVME: VMRUN refuses a guest without
/// EFER.SVME (AMD APM vol. 2, 15.5.1, "EFER.SVME is zero" is illegal guest state).
const EFER: u64 = (1 << 8) | (1 << 10) | (1 << 11) | (1 << 12);
/// The power-on PAT (AMD APM vol. 2, 7.8.2): WB, WT, UC-, UC, twice.
const PAT_DEFAULT: u64 = 0x0007_0406_0007_0406;

pub fn create(id: u16, name: String, elf: &[u8]) -> Result<Domain, LoadError> {
    let memory = if crate::settings::get().lazy_memory {
        GuestMemory::new_lazy(boot::GUEST_RAM_SIZE)
    } else {
        GuestMemory::new(boot::GUEST_RAM_SIZE)
    }
    .ok_or(LoadError::OutOfMemory)?;
    let (entry, image_end, mode) = load_elf(&memory, elf)?;
    build_boot_environment(&memory, id, image_end, mode).ok_or(LoadError::OutOfMemory)?;

    let vmcb_pa = memory::alloc_frame().ok_or(LoadError::OutOfMemory)?;
    // SAFETY: a fresh, zeroed, page-aligned frame that only this domain will use; a zeroed
    // VMCB is a valid value of the type (all fields are integers).
    let vmcb = unsafe { &mut *(vmcb_pa as *mut Vmcb) };
    intercepts::configure(vmcb, id as u32 + 1).ok_or(LoadError::OutOfMemory)?;
    vmcb.control.np_enable = 1;
    // The guest's clock starts near 0 when it is created: TSC_OFFSET = -now (15.30.5).
    vmcb.control.tsc_offset = crate::time::rdtsc().wrapping_neg();
    vmcb.control.n_cr3 = memory.npt.root;
    match mode {
        boot::GuestMode::Long64 => set_boot_state(vmcb, entry),
        boot::GuestMode::Protected32 => set_boot_state_32(vmcb, entry),
    }

    let mut context = Box::new(GuestContext::new());
    context.rdi = boot::BOOT_INFO;
    Ok(Domain {
        id,
        name,
        vmcb,
        vmcb_pa,
        context,
        memory,
        console: Uart::default(),
        exit: ExitState::default(),
        trap_table: Vec::new(),
        in_flight: Vec::new(),
        iret_intercept_suspended: false,
        software_interrupt_rip: None,
        timer: None,
        pending_interrupt: None,
        pv_mode: false,
        virtual_interrupt_flag: false,
        debugger: None,
        debug_registers: [0; 4],
        lab_device: Default::default(),
        page_tables: Default::default(),
    })
}

/// Copy the ELF's loadable segments to their addresses. Returns the entry point, the end
/// of the image, and the mode the guest asks to start in.
fn load_elf(memory: &GuestMemory, elf: &[u8]) -> Result<(u64, u64, boot::GuestMode), LoadError> {
    let file = ElfFile64::<Endianness>::parse(elf)
        .map_err(|error| LoadError::BadElf(format!("{error}")))?;
    let (mode, entry32) = guest_mode(&file)?;
    let mut image_end = boot::IMAGE_BASE;
    for segment in file.segments() {
        let (start, size) = (segment.address(), segment.size());
        let end = start
            .checked_add(size)
            .ok_or_else(|| LoadError::BadElf("segment wraps around".into()))?;
        if start < boot::IMAGE_BASE || end > memory.size {
            return Err(LoadError::BadElf(format!(
                "segment {start:#x}..{end:#x} is outside guest RAM {:#x}..{:#x}",
                boot::IMAGE_BASE,
                memory.size
            )));
        }
        let data = segment
            .data()
            .map_err(|error| LoadError::BadElf(format!("{error}")))?;
        memory
            .write_physical(start, data)
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
    memory: &GuestMemory,
    id: u16,
    image_end: u64,
    mode: boot::GuestMode,
) -> Option<()> {
    let info = BootInfo {
        magic: boot::BOOT_INFO_MAGIC,
        domain: id as u32,
        _reserved: 0,
        ram_size: memory.size,
        free_start: (image_end + 0xfff) & !0xfff,
        free_end: memory.size,
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
    let write =
        |address: u64, value: u64| memory.write_physical(address, &value.to_le_bytes()).ok();
    write(pml4, pdpt | table_flags)?;
    write(pdpt, pd | table_flags)?;
    write(pd, pt | table_flags)?;
    for page in 1..512u64 {
        write(pt + page * 8, (page << 12) | pte::PRESENT | pte::WRITABLE)?;
    }
    for large in 1..(memory.size >> 21) {
        write(
            pd + large * 8,
            (large << 21) | pte::PRESENT | pte::WRITABLE | pte::HUGE,
        )?;
    }
    Some(())
}

/// The guest state save area at the first VMRUN: 64-bit mode, CPL 0, interrupts off.
fn set_boot_state(vmcb: &mut Vmcb, entry: u64) {
    let flat = |selector: u16, attrib: u16| Segment {
        selector,
        attrib,
        limit: 0xffff_ffff,
        base: 0,
    };
    let save = &mut vmcb.save;
    save.cs = flat(0x08, attrib::CODE64_DPL0);
    save.ds = flat(0x10, attrib::DATA_DPL0);
    save.es = flat(0x10, attrib::DATA_DPL0);
    save.ss = flat(0x10, attrib::DATA_DPL0);
    save.fs = Segment::default();
    save.gs = Segment::default();
    save.gdtr = Segment {
        selector: 0,
        attrib: 0,
        limit: 23,
        base: boot::BOOT_GDT,
    };
    // No IDT yet: a fault before the guest loads its own is a triple fault.
    save.idtr = Segment::default();
    save.ldtr = Segment {
        selector: 0,
        attrib: attrib::LDT,
        limit: 0,
        base: 0,
    };
    save.tr = Segment {
        selector: 0,
        attrib: attrib::TSS64_BUSY,
        limit: 0x67,
        base: 0,
    };
    save.cpl = 0;
    save.efer = EFER;
    save.cr0 = CR0;
    save.cr3 = boot::BOOT_PAGE_TABLES;
    save.cr4 = CR4;
    save.dr6 = 0xffff_0ff0;
    save.dr7 = 0x400;
    save.rflags = 0x2;
    save.rip = entry;
    save.rsp = boot::BOOT_STACK_TOP;
    save.rax = 0;
    save.g_pat = PAT_DEFAULT;
}

/// The state of a 32-bit guest at its first VMRUN: protected mode, paging off, CPL 0.
fn set_boot_state_32(vmcb: &mut Vmcb, entry: u64) {
    set_boot_state(vmcb, entry);
    let save = &mut vmcb.save;
    save.cs.attrib = attrib::CODE32_DPL0;
    // PE, ET, NE: protected mode without paging; EFER only SVME (no long mode).
    save.cr0 = (1 << 0) | (1 << 4) | (1 << 5);
    save.cr3 = 0;
    save.cr4 = 0;
    save.efer = 1 << 12;
    save.tr = Segment {
        selector: 0,
        attrib: attrib::TSS32_BUSY,
        limit: 0x67,
        base: 0,
    };
}

/// The `domain created` event's reason text.
pub fn describe(domain: &Domain) -> Cow<'static, str> {
    Cow::Owned(format!(
        "{} KiB of RAM, entry {:#x}",
        domain.memory.size / 1024,
        domain.vmcb.save.rip
    ))
}
