//! x86-64 architecture facts the trace carries: exception vectors and their classes,
//! the page-fault error code, the page-table walks (legacy, PAE and long mode's), and the bits of the registers
//! that decide how the CPU runs (RFLAGS, CR0, CR4, EFER: the `x86_64` crate's flag types).
//!
//! References: AMD APM vol. 2, chapter 8 "Exceptions and Interrupts" and chapter 5
//! "Page Translation and Protection"; Intel SDM vol. 3A, chapter 6 and chapter 4.

pub use x86_64::registers::control::{Cr0Flags, Cr4Flags};
pub use x86_64::registers::model_specific::EferFlags;
pub use x86_64::registers::rflags::RFlags;

/// The registers' names, three bytes each (`r8` and `r9` padded with a space nobody reads),
/// in the order [`GPR_NAMES`] and [`RIP_NAME`] give them. One static, so that a name is
/// known by its address alone ([`register_by_address`]): the trace's encoder finds which
/// register an `emulate` changed without reading the name, and the hypervisor keeps these
/// bytes on the page of statics every exit reads (`hv/linker.ld`: under QEMU's TCG each
/// page more costs a trap a refill of QEMU's TLB).
static REGISTER_NAME_BYTES: [u8; 3 * 17] = *b"raxrcxrdxrbxrsprbprsirdir8 r9 r10r11r12r13r14r15rip";

/// The name at `index` in [`REGISTER_NAME_BYTES`], `length` bytes long.
const fn register_name(index: usize, length: usize) -> &'static str {
    let (_, rest) = REGISTER_NAME_BYTES.split_at(3 * index);
    let (name, _) = rest.split_at(length);
    match core::str::from_utf8(name) {
        Ok(name) => name,
        Err(_) => panic!("a register's name is ASCII"),
    }
}

/// The general registers' names by their encoding number (0 = RAX … 15 = R15, as ModRM,
/// SIB and REX number them: Intel SDM vol. 2A, 2.1.5, table 2-2; AMD APM vol. 3, 1.4).
pub static GPR_NAMES: [&str; 16] = [
    register_name(0, 3),
    register_name(1, 3),
    register_name(2, 3),
    register_name(3, 3),
    register_name(4, 3),
    register_name(5, 3),
    register_name(6, 3),
    register_name(7, 3),
    register_name(8, 2),
    register_name(9, 2),
    register_name(10, 3),
    register_name(11, 3),
    register_name(12, 3),
    register_name(13, 3),
    register_name(14, 3),
    register_name(15, 3),
];

/// RIP's name, from the same bytes.
pub static RIP_NAME: &str = register_name(16, 3);

/// Which register `name` is when it is one of [`GPR_NAMES`] (0–15) or [`RIP_NAME`] (16)
/// itself, the same bytes at the same address; `None` for any other string, even one that
/// reads `rax`. No byte of `name` is read.
pub fn register_by_address(name: &str) -> Option<u8> {
    let offset = (name.as_ptr() as usize).wrapping_sub(REGISTER_NAME_BYTES.as_ptr() as usize);
    let index = offset / 3;
    let length = match index {
        8 | 9 => 2,
        _ => 3,
    };
    (offset.is_multiple_of(3) && index <= 16 && name.len() == length).then_some(index as u8)
}

/// How an exception combines with one that occurs while it is being delivered
/// (Intel SDM vol. 3A, 6.15, table 6-4 and 6-5; AMD APM vol. 2, 8.2.9).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExceptionClass {
    Benign,
    Contributory,
    PageFault,
    DoubleFault,
}

/// Whether the saved RIP points at the faulting instruction (fault), after it (trap),
/// or nowhere reliable (abort); or no exception at all: NMI's vector, and the vectors AMD64
/// reserves (AMD APM vol. 2, table 8-1), which EVENTINJ refuses as exceptions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExceptionType {
    Fault,
    Trap,
    FaultOrTrap,
    Interrupt,
    Abort,
    Reserved,
}

/// One row of the exception table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exception {
    pub vector: u8,
    /// `#PF`, `#UD`, … (`NMI` for vector 2).
    pub mnemonic: &'static str,
    pub name: &'static str,
    /// The SVM exit reason name for this vector's intercept (`EXCP_PF`).
    pub exit_name: &'static str,
    pub has_error_code: bool,
    pub class: ExceptionClass,
    pub kind: ExceptionType,
}

const fn row(
    vector: u8,
    mnemonic: &'static str,
    name: &'static str,
    exit_name: &'static str,
    has_error_code: bool,
    class: ExceptionClass,
    kind: ExceptionType,
) -> Exception {
    Exception {
        vector,
        mnemonic,
        name,
        exit_name,
        has_error_code,
        class,
        kind,
    }
}

use ExceptionClass::{Benign, Contributory, DoubleFault, PageFault};
use ExceptionType::{Abort, Fault, FaultOrTrap, Interrupt, Reserved, Trap};

/// Vectors 0–31 (AMD APM vol. 2, table 8-1; Intel SDM vol. 3A, table 6-1).
pub const EXCEPTIONS: [Exception; 32] = [
    row(
        0,
        "#DE",
        "divide error",
        "EXCP_DE",
        false,
        Contributory,
        Fault,
    ),
    row(1, "#DB", "debug", "EXCP_DB", false, Benign, FaultOrTrap),
    row(
        2,
        "NMI",
        "non-maskable interrupt",
        "EXCP_NMI",
        false,
        Benign,
        Interrupt,
    ),
    row(3, "#BP", "breakpoint", "EXCP_BP", false, Benign, Trap),
    row(4, "#OF", "overflow", "EXCP_OF", false, Benign, Trap),
    row(
        5,
        "#BR",
        "bound range exceeded",
        "EXCP_BR",
        false,
        Benign,
        Fault,
    ),
    row(6, "#UD", "invalid opcode", "EXCP_UD", false, Benign, Fault),
    row(
        7,
        "#NM",
        "device not available",
        "EXCP_NM",
        false,
        Benign,
        Fault,
    ),
    row(
        8,
        "#DF",
        "double fault",
        "EXCP_DF",
        true,
        DoubleFault,
        Abort,
    ),
    row(
        9,
        "#CSO",
        "coprocessor segment overrun, reserved in AMD64",
        "EXCP_9",
        false,
        Benign,
        Reserved,
    ),
    row(
        10,
        "#TS",
        "invalid TSS",
        "EXCP_TS",
        true,
        Contributory,
        Fault,
    ),
    row(
        11,
        "#NP",
        "segment not present",
        "EXCP_NP",
        true,
        Contributory,
        Fault,
    ),
    row(
        12,
        "#SS",
        "stack fault",
        "EXCP_SS",
        true,
        Contributory,
        Fault,
    ),
    row(
        13,
        "#GP",
        "general protection",
        "EXCP_GP",
        true,
        Contributory,
        Fault,
    ),
    row(14, "#PF", "page fault", "EXCP_PF", true, PageFault, Fault),
    row(15, "#15", "reserved", "EXCP_15", false, Benign, Reserved),
    row(
        16,
        "#MF",
        "x87 floating-point error",
        "EXCP_MF",
        false,
        Benign,
        Fault,
    ),
    row(17, "#AC", "alignment check", "EXCP_AC", true, Benign, Fault),
    row(18, "#MC", "machine check", "EXCP_MC", false, Benign, Abort),
    row(
        19,
        "#XM",
        "SIMD floating-point",
        "EXCP_XM",
        false,
        Benign,
        Fault,
    ),
    row(
        20,
        "#VE",
        "virtualization exception, Intel's: reserved on AMD",
        "EXCP_VE",
        false,
        Benign,
        Reserved,
    ),
    row(
        21,
        "#CP",
        "control protection",
        "EXCP_CP",
        true,
        Contributory,
        Fault,
    ),
    row(22, "#22", "reserved", "EXCP_22", false, Benign, Reserved),
    row(23, "#23", "reserved", "EXCP_23", false, Benign, Reserved),
    row(24, "#24", "reserved", "EXCP_24", false, Benign, Reserved),
    row(25, "#25", "reserved", "EXCP_25", false, Benign, Reserved),
    row(26, "#26", "reserved", "EXCP_26", false, Benign, Reserved),
    row(27, "#27", "reserved", "EXCP_27", false, Benign, Reserved),
    row(
        28,
        "#HV",
        "hypervisor injection",
        "EXCP_HV",
        false,
        Benign,
        Fault,
    ),
    row(
        29,
        "#VC",
        "VMM communication",
        "EXCP_VC",
        true,
        Benign,
        Fault,
    ),
    row(
        30,
        "#SX",
        "security exception",
        "EXCP_SX",
        true,
        Benign,
        Fault,
    ),
    row(31, "#31", "reserved", "EXCP_31", false, Benign, Reserved),
];

/// The table row of `vector` (vectors above 31 are interrupts, not exceptions).
pub fn exception(vector: u8) -> &'static Exception {
    &EXCEPTIONS[(vector & 31) as usize]
}

/// A vector as a student reads it: `#PF (page fault)` for an exception, `interrupt 0x20`
/// above 31.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Vector(pub u8);

impl core::fmt::Display for Vector {
    fn fmt(&self, formatter: &mut core::fmt::Formatter) -> core::fmt::Result {
        match self.0 {
            vector @ 0..32 => {
                let exception = exception(vector);
                write!(formatter, "{} ({})", exception.mnemonic, exception.name)
            }
            vector => write!(formatter, "interrupt {vector:#x}"),
        }
    }
}

/// The bits an operand of `size` bytes holds (1, 2, 4 or 8): AL, AX, EAX or RAX.
pub fn operand_mask(size: u8) -> u64 {
    match size {
        1 => 0xff,
        2 => 0xffff,
        4 => 0xffff_ffff,
        _ => u64::MAX,
    }
}

/// Is the address canonical, bits 63:47 all equal (AMD APM vol. 2, 5.3.1)?
pub fn canonical(address: u64) -> bool {
    let top = address >> 47;
    top == 0 || top == 0x1_ffff
}

/// What the CPU does when `second` is raised while it delivers `first`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Combined {
    /// Deliver `second`: the two are handled one after the other.
    Deliver(u8),
    /// Deliver #DF (error code 0) instead.
    DoubleFault,
    /// A fault while delivering #DF: the CPU shuts down (triple fault).
    TripleFault,
}

/// The double-fault rule (Intel SDM vol. 3A, table 6-5; AMD APM vol. 2, 8.2.9):
///
/// | first \ second | benign  | contributory | page fault |
/// |----------------|---------|--------------|------------|
/// | benign         | serial  | serial       | serial     |
/// | contributory   | serial  | #DF          | serial     |
/// | page fault     | serial  | #DF          | #DF        |
/// | double fault   | serial  | shutdown     | shutdown   |
///
/// `first` is the exception whose delivery was interrupted: `None` if nothing was being
/// delivered, or an event that is not an exception (an external interrupt, an NMI, an
/// INT n), which is benign whatever its vector (Intel SDM vol. 3A, table 6-4).
pub fn combine(first: Option<u8>, second: u8) -> Combined {
    let Some(first) = first else {
        return Combined::Deliver(second);
    };
    let first = if first < 32 {
        exception(first).class
    } else {
        Benign
    };
    let second_class = exception(second).class;
    match (first, second_class) {
        (DoubleFault, Contributory | PageFault | DoubleFault) => Combined::TripleFault,
        (Contributory, Contributory) => Combined::DoubleFault,
        (PageFault, Contributory | PageFault) => Combined::DoubleFault,
        _ => Combined::Deliver(second),
    }
}

/// The page-fault error code (AMD APM vol. 2, 8.4.2; Intel SDM vol. 3A, 4.7).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageFaultCode(pub u32);

impl PageFaultCode {
    /// Each bit: (mask, name, meaning when set, meaning when clear).
    pub const BITS: [(u32, &'static str, &'static str, &'static str); 7] = [
        (1 << 0, "P", "protection violation", "page not present"),
        (1 << 1, "W/R", "write", "read"),
        (
            1 << 2,
            "U/S",
            "user-mode access (CPL 3)",
            "supervisor-mode access",
        ),
        (1 << 3, "RSVD", "reserved bit set in a paging entry", ""),
        (1 << 4, "I/D", "instruction fetch", ""),
        (1 << 5, "PK", "protection key", ""),
        (1 << 6, "SS", "shadow stack access", ""),
    ];

    pub fn present(self) -> bool {
        self.0 & 1 != 0
    }
    pub fn write(self) -> bool {
        self.0 & 2 != 0
    }
    pub fn user(self) -> bool {
        self.0 & 4 != 0
    }
    pub fn reserved(self) -> bool {
        self.0 & 8 != 0
    }
    pub fn fetch(self) -> bool {
        self.0 & 16 != 0
    }

    /// The names of the bits that are set, as `P|W/R|U/S`.
    pub fn flag_names(self) -> impl Iterator<Item = &'static str> {
        Self::BITS
            .into_iter()
            .filter(move |bit| self.0 & bit.0 != 0)
            .map(|bit| bit.1)
    }
}

/// Page-table entry bits the walks use (AMD APM vol. 2, 5.4): a legacy 4-byte entry has the
/// same low twelve.
pub mod pte {
    pub const PRESENT: u64 = 1 << 0;
    pub const WRITABLE: u64 = 1 << 1;
    pub const USER: u64 = 1 << 2;
    pub const WRITE_THROUGH: u64 = 1 << 3;
    pub const CACHE_DISABLE: u64 = 1 << 4;
    pub const ACCESSED: u64 = 1 << 5;
    pub const DIRTY: u64 = 1 << 6;
    /// PS: in a PDPTE it maps 1 GiB, in a PDE 2 MiB.
    pub const HUGE: u64 = 1 << 7;
    /// G: in an entry that maps a page, the translation is global (CR4.PGE). In a PML4E
    /// and a PDPE that points to a directory, AMD reserves it (see `reserved_bits`).
    pub const GLOBAL: u64 = 1 << 8;
    pub const NO_EXECUTE: u64 = 1 << 63;
    /// Bits 51:12: the physical address of the next table or the page.
    pub const ADDRESS: u64 = 0x000f_ffff_ffff_f000;
}

/// A successful walk: the physical address and the combined permissions on the way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Translation {
    pub physical: u64,
    pub writable: bool,
    pub user: bool,
    pub executable: bool,
    /// 4 KiB, 2 MiB or 1 GiB; 4 MiB in legacy paging.
    pub page_size: u64,
    /// Where the entries the walk used are, those with an accessed bit (bit 5, in the
    /// entry's first byte whatever its size): the guest-physical address of each, top
    /// level first, the page's own last (its dirty bit is bit 6). The first
    /// [`Translation::entry_count`] are used. PAE's page-directory pointers have no
    /// accessed bit and are not listed.
    pub entries: [u64; 4],
    pub entry_count: u8,
}

impl Translation {
    /// The entries the walk used ([`Translation::entries`]), the page's last.
    pub fn walked_entries(&self) -> &[u64] {
        &self.entries[..self.entry_count as usize]
    }
}

/// Why a walk stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WalkError {
    /// The entry at this level is not present: 1 is a page table, 2 a page directory, 3 a
    /// PDPT (PAE's four pointers outside long mode), 4 the PML4.
    NotPresent { level: u8 },
    /// The address is not canonical (bits 63:47 are not all equal).
    NonCanonical,
    /// A page-table page could not be read (it is outside the memory we can see).
    Unreadable { table: u64 },
    /// The entry at this level sets a reserved bit: an address bit at or above the CPU's
    /// physical-address width, PS in a PML4 entry, bit 8 in a PML4 entry or in a PDPT entry
    /// that points to a directory (AMD's), an address bit a large page does not use, or NX
    /// while EFER.NXE is clear. The CPU raises #PF with RSVD (error code bit 3)
    /// and reads nothing through it (AMD APM vol. 2, 5.3.3 and 8.4.2).
    Reserved { level: u8 },
}

/// The bits of a page-table entry at `level` (4 = PML4 … 1 = PT) that must be zero, for a
/// CPU whose physical addresses have `address_bits` bits (CPUID 8000_0008:EAX\[7:0\]).
/// `large`: the entry maps a 1 GiB (level 3) or 2 MiB (level 2) page. Bits 62:52 are
/// available to software in long mode, and NX depends on EFER.NXE ([`PageTables`]): they
/// are not here.
pub fn reserved_bits(level: u8, large: bool, address_bits: u32) -> u64 {
    let address_bits = address_bits.clamp(32, 52);
    // Bits 51:address_bits of the address field.
    let mut reserved = pte::ADDRESS & !((1u64 << address_bits) - 1);
    match (level, large) {
        // PS must be 0 in a PML4E; bit 8 is MBZ in a PML4E and in a PDPE that points to a
        // page directory (AMD APM vol. 2, 5.3.3; Intel ignores it, and so does QEMU's TCG:
        // `hv/src/quirks.rs`). A legacy PAE pointer has it reserved too (bits 8:5).
        (4, _) => reserved |= pte::HUGE | pte::GLOBAL,
        (3, false) => reserved |= pte::GLOBAL,
        // A 1 GiB page's address starts at bit 30; bits 29:13 are reserved (12 is PAT).
        (3, true) => reserved |= 0x3fff_e000,
        // A 2 MiB page's: bits 20:13.
        (2, true) => reserved |= 0x1f_e000,
        _ => {}
    }
    reserved
}

/// How a guest's page tables are laid out, which CR0.PG, CR4.PAE, CR4.PSE and EFER.LMA
/// choose (AMD APM vol. 2, 5.1, table 5-1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PageTableFormat {
    /// Legacy 32-bit paging (5.2): a page directory and page tables of 1,024 4-byte
    /// entries; with `large_pages` (CR4.PSE) a directory entry with PS maps 4 MiB.
    Legacy { large_pages: bool },
    /// PAE paging outside long mode (5.2): a table of four page-directory pointers, then a
    /// page directory (an entry with PS maps 2 MiB) and page tables of 8-byte entries.
    Pae,
    /// Long mode's 4-level paging (5.3).
    LongMode,
}

/// A guest's page tables: the root (CR3), how they are laid out, and whether bit 63 of
/// their 8-byte entries is NX (EFER.NXE; without it the bit is reserved, APM vol. 2, 5.6.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageTables {
    pub cr3: u64,
    pub format: PageTableFormat,
    pub no_execute: bool,
}

impl PageTables {
    /// The tables the guest's control registers name, or `None` when paging is off.
    pub fn of(cr0: u64, cr3: u64, cr4: u64, efer: u64) -> Option<PageTables> {
        if cr0 & Cr0Flags::PAGING.bits() == 0 {
            return None;
        }
        let format = if efer & EferFlags::LONG_MODE_ACTIVE.bits() != 0 {
            PageTableFormat::LongMode
        } else if cr4 & Cr4Flags::PHYSICAL_ADDRESS_EXTENSION.bits() != 0 {
            PageTableFormat::Pae
        } else {
            PageTableFormat::Legacy {
                large_pages: cr4 & Cr4Flags::PAGE_SIZE_EXTENSION.bits() != 0,
            }
        };
        let no_execute = efer & EferFlags::NO_EXECUTE_ENABLE.bits() != 0;
        Some(PageTables {
            cr3,
            format,
            no_execute,
        })
    }

    /// Long mode's tables at `cr3`, with NX if `efer` has NXE.
    pub fn long_mode(cr3: u64, efer: u64) -> PageTables {
        PageTables {
            cr3,
            format: PageTableFormat::LongMode,
            no_execute: efer & EferFlags::NO_EXECUTE_ENABLE.bits() != 0,
        }
    }

    /// The linear address these tables translate for `address`: itself in long mode, its
    /// low 32 bits outside it, where a linear address has 32 (an access that runs past
    /// 4 GiB wraps to 0).
    pub fn linear(&self, address: u64) -> u64 {
        match self.format {
            PageTableFormat::LongMode => address,
            _ => address & 0xffff_ffff,
        }
    }
}

/// Walk the page tables `tables` for `virtual_address`, on a CPU whose physical addresses
/// have `address_bits` bits: an entry with a reserved bit set stops the walk
/// ([`WalkError::Reserved`]) before anything is read through it. Outside long mode a linear
/// address has 32 bits: the upper ones of `virtual_address` are not looked at.
///
/// `read_u64` reads one 8-byte word at a physical address (8-byte aligned; a 4-byte entry
/// of legacy paging is half of one); the hypervisor passes a function that reads
/// guest-physical memory through its nested page tables.
pub fn translate(
    tables: PageTables,
    virtual_address: u64,
    address_bits: u32,
    read_u64: impl FnMut(u64) -> Option<u64>,
) -> Result<Translation, WalkError> {
    let mut walk = Walk {
        address_bits,
        // Bit 63 of an 8-byte entry: NX, or reserved.
        extra_reserved: if tables.no_execute {
            0
        } else {
            pte::NO_EXECUTE
        },
        read_u64,
        entries: [0; 4],
        entry_count: 0,
    };
    let translation = match tables.format {
        PageTableFormat::LongMode => walk.long_mode(tables.cr3, virtual_address),
        PageTableFormat::Pae => walk.pae(tables.cr3, virtual_address as u32),
        PageTableFormat::Legacy { large_pages } => {
            walk.legacy(tables.cr3, virtual_address as u32, large_pages)
        }
    }?;
    Ok(Translation {
        entries: walk.entries,
        entry_count: walk.entry_count,
        ..translation
    })
}

/// Permissions met on the way down, all levels' together.
#[derive(Clone, Copy)]
struct Permissions {
    writable: bool,
    user: bool,
    executable: bool,
}

impl Permissions {
    const ALL: Permissions = Permissions {
        writable: true,
        user: true,
        executable: true,
    };

    fn and(self, entry: u64) -> Permissions {
        Permissions {
            writable: self.writable && entry & pte::WRITABLE != 0,
            user: self.user && entry & pte::USER != 0,
            executable: self.executable && entry & pte::NO_EXECUTE == 0,
        }
    }

    /// The translation to `base`, a page of `page_size` bytes, at `offset` into it.
    fn leaf(self, base: u64, page_size: u64, offset: u64) -> Translation {
        Translation {
            physical: base | (offset & (page_size - 1)),
            writable: self.writable,
            user: self.user,
            executable: self.executable,
            page_size,
            // Filled in by `translate`, from the walk.
            entries: [0; 4],
            entry_count: 0,
        }
    }
}

/// What every walk needs: the CPU's physical-address width, the reserved bits of an 8-byte
/// entry besides [`reserved_bits`] (NX without EFER.NXE; PAE's bits 62:52), and a way to
/// read memory.
struct Walk<F> {
    address_bits: u32,
    extra_reserved: u64,
    read_u64: F,
    /// The entries used so far ([`Translation::entries`]).
    entries: [u64; 4],
    entry_count: u8,
}

/// Where one level of a walk leads: the next table, or the page.
enum Next {
    Table(u64),
    Page(Translation),
}

impl<F: FnMut(u64) -> Option<u64>> Walk<F> {
    /// One level of 512 8-byte entries (long mode's four, PAE's directory and table): the
    /// entry `virtual_address` picks in `table`, checked, and where it leads. 9 bits of the
    /// address index each level, from bit 12 up.
    fn level(
        &mut self,
        level: u8,
        table: u64,
        virtual_address: u64,
        permissions: &mut Permissions,
    ) -> Result<Next, WalkError> {
        let shift = 12 + 9 * (level as u64 - 1);
        let index = (virtual_address >> shift) & 0x1ff;
        let entry = (self.read_u64)(table + index * 8).ok_or(WalkError::Unreadable { table })?;
        if entry & pte::PRESENT == 0 {
            return Err(WalkError::NotPresent { level });
        }
        self.used(table + index * 8);
        *permissions = permissions.and(entry);
        let large = (level == 2 || level == 3) && entry & pte::HUGE != 0;
        if entry & (reserved_bits(level, large, self.address_bits) | self.extra_reserved) != 0 {
            return Err(WalkError::Reserved { level });
        }
        if level == 1 || large {
            let page_size = 1u64 << shift;
            let base = entry & pte::ADDRESS & !(page_size - 1);
            return Ok(Next::Page(permissions.leaf(
                base,
                page_size,
                virtual_address,
            )));
        }
        Ok(Next::Table(entry & pte::ADDRESS))
    }

    /// Levels `top` down to 1 from `table`: where the walk ends.
    fn levels(
        &mut self,
        top: u8,
        mut table: u64,
        virtual_address: u64,
    ) -> Result<Translation, WalkError> {
        let mut permissions = Permissions::ALL;
        for level in (1..=top).rev() {
            match self.level(level, table, virtual_address, &mut permissions)? {
                Next::Table(next) => table = next,
                Next::Page(translation) => return Ok(translation),
            }
        }
        unreachable!("level 1 is always a leaf")
    }

    /// Long mode's walk: four levels from CR3 (AMD APM vol. 2, 5.3).
    fn long_mode(&mut self, cr3: u64, virtual_address: u64) -> Result<Translation, WalkError> {
        if !canonical(virtual_address) {
            return Err(WalkError::NonCanonical);
        }
        self.levels(4, cr3 & pte::ADDRESS, virtual_address)
    }

    /// PAE's walk outside long mode (AMD APM vol. 2, 5.2: figures 5-9 to 5-13): CR3 (bits
    /// 31:5) names a table of four 8-byte page-directory pointers, one for each GiB of the
    /// 32-bit address (its bits 31:30), then a page directory and page tables of 8-byte
    /// entries as long mode's, whose bits 62:52 are reserved here.
    ///
    /// A pointer has no permission bits, and its bits 2:1, 8:5 and 63:52 are reserved. This
    /// walk counts only 63:52 (and the address bits beyond the CPU's width): QEMU's TCG sets
    /// bit 5 in a pointer it used, the accessed bit of a long-mode entry, which no CPU writes
    /// there (an Intel CPU checks the low ones when it loads the four pointers into
    /// registers, at a MOV to CR3, CR0 or CR4, SDM vol. 3A, 4.4.1). Counted, they would fail
    /// a guest for what its CPU did.
    fn pae(&mut self, cr3: u64, virtual_address: u32) -> Result<Translation, WalkError> {
        const POINTER_RESERVED: u64 = 0xfff0_0000_0000_0000;
        const ENTRY_RESERVED: u64 = 0x7ff0_0000_0000_0000;
        let virtual_address = virtual_address as u64;
        let pointers = cr3 & 0xffff_ffe0;
        let pointer = (self.read_u64)(pointers + (virtual_address >> 30) * 8)
            .ok_or(WalkError::Unreadable { table: pointers })?;
        if pointer & pte::PRESENT == 0 {
            return Err(WalkError::NotPresent { level: 3 });
        }
        if pointer & (POINTER_RESERVED | reserved_bits(3, false, self.address_bits)) != 0 {
            return Err(WalkError::Reserved { level: 3 });
        }
        self.extra_reserved |= ENTRY_RESERVED;
        self.levels(2, pointer & pte::ADDRESS, virtual_address)
    }

    /// Legacy 32-bit paging's walk (AMD APM vol. 2, 5.2: figures 5-4 to 5-8): CR3 (bits
    /// 31:12) names a page directory of 1,024 4-byte entries, one for each 4 MiB of the
    /// address (its bits 31:22); an entry with PS, when CR4.PSE is set, maps a 4 MiB page
    /// (its bits 20:13 are the page's address bits 39:32, PSE-40, and bit 21 is reserved),
    /// else names a page table of 1,024 entries, one for each 4 KiB (bits 21:12). No NX: a
    /// 4-byte entry has no bit for it.
    fn legacy(
        &mut self,
        cr3: u64,
        virtual_address: u32,
        large_pages: bool,
    ) -> Result<Translation, WalkError> {
        let virtual_address = virtual_address as u64;
        let directory = cr3 & 0xffff_f000;
        let entry = self
            .read_u32(directory + (virtual_address >> 22) * 4)
            .ok_or(WalkError::Unreadable { table: directory })?;
        if entry & pte::PRESENT == 0 {
            return Err(WalkError::NotPresent { level: 2 });
        }
        self.used(directory + (virtual_address >> 22) * 4);
        let permissions = Permissions::ALL.and(entry);
        if large_pages && entry & pte::HUGE != 0 {
            let high = (entry >> 13) & 0xff;
            let base = (entry & 0xffc0_0000) | (high << 32);
            if entry & (1 << 21) != 0 || base >> self.address_bits.clamp(32, 52) != 0 {
                return Err(WalkError::Reserved { level: 2 });
            }
            return Ok(permissions.leaf(base, 4 << 20, virtual_address));
        }
        let table = entry & 0xffff_f000;
        let entry = self
            .read_u32(table + ((virtual_address >> 12) & 0x3ff) * 4)
            .ok_or(WalkError::Unreadable { table })?;
        if entry & pte::PRESENT == 0 {
            return Err(WalkError::NotPresent { level: 1 });
        }
        self.used(table + ((virtual_address >> 12) & 0x3ff) * 4);
        Ok(permissions
            .and(entry)
            .leaf(entry & 0xffff_f000, 4096, virtual_address))
    }

    /// The walk used the present entry at `address` ([`Translation::entries`]).
    fn used(&mut self, address: u64) {
        if let Some(slot) = self.entries.get_mut(self.entry_count as usize) {
            *slot = address;
            self.entry_count += 1;
        }
    }

    /// The 4-byte entry at `address`: one half of the 8-byte word around it.
    fn read_u32(&mut self, address: u64) -> Option<u64> {
        let word = (self.read_u64)(address & !7)?;
        Some((word >> ((address & 4) * 8)) as u32 as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::collections::BTreeMap;

    #[test]
    fn table_is_indexed_by_vector() {
        for (index, row) in EXCEPTIONS.iter().enumerate() {
            assert_eq!(row.vector as usize, index);
        }
        assert_eq!(exception(14).mnemonic, "#PF");
        assert!(exception(14).has_error_code);
        assert!(!exception(6).has_error_code);
    }

    #[test]
    fn double_fault_rule() {
        assert_eq!(combine(None, 13), Combined::Deliver(13));
        assert_eq!(
            combine(Some(6), 13),
            Combined::Deliver(13),
            "benign then #GP: serial"
        );
        assert_eq!(combine(Some(13), 13), Combined::DoubleFault);
        assert_eq!(combine(Some(0), 11), Combined::DoubleFault);
        assert_eq!(combine(Some(14), 14), Combined::DoubleFault);
        assert_eq!(combine(Some(14), 13), Combined::DoubleFault);
        assert_eq!(
            combine(Some(13), 14),
            Combined::Deliver(14),
            "contributory then #PF: serial"
        );
        assert_eq!(combine(Some(8), 13), Combined::TripleFault);
        assert_eq!(combine(Some(8), 14), Combined::TripleFault);
        assert_eq!(combine(Some(8), 6), Combined::Deliver(6));
        assert_eq!(
            combine(Some(0x20), 13),
            Combined::Deliver(13),
            "interrupt then #GP"
        );
    }

    #[test]
    fn vectors_are_named_once() {
        use alloc::string::ToString;
        assert_eq!(Vector(14).to_string(), "#PF (page fault)");
        assert_eq!(Vector(0x20).to_string(), "interrupt 0x20");
        assert!(canonical(0xffff_8000_0000_0000) && canonical(0x7fff_ffff_ffff));
        assert!(!canonical(0x8000_0000_0000));
    }

    #[test]
    fn page_fault_code_names() {
        let code = PageFaultCode(0b10110);
        assert!(code.write() && code.user() && code.fetch() && !code.present());
        let names: alloc::vec::Vec<_> = code.flag_names().collect();
        assert_eq!(names, ["W/R", "U/S", "I/D"]);
    }

    /// Long mode's tables at 0x1000, with NX (EFER.NXE).
    fn long_mode() -> PageTables {
        PageTables::long_mode(0x1000, EferFlags::NO_EXECUTE_ENABLE.bits())
    }

    /// Page tables in a map from physical address to entry.
    fn tables(entries: &[(u64, u64)]) -> BTreeMap<u64, u64> {
        entries.iter().copied().collect()
    }

    #[test]
    fn walk_4k_2m_and_not_present() {
        use pte::*;
        let memory = tables(&[
            (0x1000, 0x2000 | PRESENT | WRITABLE | USER), // PML4[0]
            (0x2000 + 8, 0x3000 | PRESENT | WRITABLE),    // PDPT[1] (1 GiB)
            (0x3000, 0x4000 | PRESENT | WRITABLE),        // PD[0]
            (0x4000 + 5 * 8, 0x7000 | PRESENT | NO_EXECUTE), // PT[5], read-only, NX
            (0x3000 + 8, 0x0060_0000 | PRESENT | WRITABLE | HUGE), // PD[1]: 2 MiB page
        ]);
        let read = |address: u64| memory.get(&address).copied().or(Some(0));
        let small = translate(long_mode(), 0x4000_5123, 40, read).unwrap();
        assert_eq!(small.physical, 0x7123);
        assert!(!small.writable && !small.user && !small.executable);
        assert_eq!(small.page_size, 4096);
        assert_eq!(
            small.walked_entries(),
            [0x1000, 0x2000 + 8, 0x3000, 0x4000 + 5 * 8],
            "the entries used, the page's last"
        );
        let huge = translate(long_mode(), 0x4020_1234, 40, read).unwrap();
        assert_eq!(huge.physical, 0x0060_1234);
        assert_eq!(huge.page_size, 2 << 20);
        assert_eq!(huge.walked_entries(), [0x1000, 0x2000 + 8, 0x3000 + 8]);
        assert_eq!(
            translate(long_mode(), 0x8000_0000, 40, read),
            Err(WalkError::NotPresent { level: 3 })
        );
        assert_eq!(
            translate(long_mode(), 0x4000_6000, 40, read),
            Err(WalkError::NotPresent { level: 1 })
        );
        assert_eq!(
            translate(long_mode(), 0x0000_8000_0000_0000, 40, read),
            Err(WalkError::NonCanonical)
        );
        assert_eq!(
            translate(long_mode(), 0, 40, |_| None),
            Err(WalkError::Unreadable { table: 0x1000 })
        );
    }

    /// 4-byte legacy entries in a map of 8-byte words, as memory holds them.
    fn legacy_tables(entries: &[(u64, u32)]) -> BTreeMap<u64, u64> {
        let mut words = BTreeMap::new();
        for &(address, entry) in entries {
            let word: &mut u64 = words.entry(address & !7).or_default();
            *word |= (entry as u64) << ((address & 4) * 8);
        }
        words
    }

    #[test]
    fn legacy_32_bit_paging_walks_two_levels_of_4_byte_entries() {
        use pte::*;
        let (present, writable, user, huge) =
            (PRESENT as u32, WRITABLE as u32, USER as u32, HUGE as u32);
        let memory = legacy_tables(&[
            // PD[1] (4 MiB–8 MiB): a page table; PT[3] and PT[5] (odd: the word's high half).
            (0x1000 + 4, 0x2000 | present | writable | user),
            (0x2000 + 3 * 4, 0x9000 | present | user),
            (0x2000 + 5 * 4, 0xa000 | present | writable | user),
            // PD[3] (12 MiB–16 MiB): a 4 MiB page at 8 MiB, address bits 39:32 = 1.
            (
                0x1000 + 3 * 4,
                0x0080_0000 | (1 << 13) | present | writable | huge,
            ),
            // PD[4]: PS with a reserved bit 21.
            (0x1000 + 4 * 4, 0x0080_0000 | (1 << 21) | present | huge),
        ]);
        let read = |address: u64| memory.get(&address).copied().or(Some(0));
        let legacy = |large_pages| PageTables {
            cr3: 0x1000,
            format: PageTableFormat::Legacy { large_pages },
            no_execute: false,
        };
        let small = translate(legacy(true), 0x0040_3abc, 40, read).unwrap();
        assert_eq!(small.physical, 0x9abc);
        assert!(!small.writable && small.user && small.executable);
        assert_eq!(small.page_size, 4096);
        let odd = translate(legacy(true), 0x0040_5000, 40, read).unwrap();
        assert_eq!(odd.physical, 0xa000, "the entry in the word's upper half");
        assert!(odd.writable);
        assert_eq!(
            odd.walked_entries(),
            [0x1000 + 4, 0x2000 + 5 * 4],
            "each 4-byte entry's own address, not its word's"
        );
        // Only the low 32 bits of the address count outside long mode.
        let truncated = translate(legacy(true), 0xffff_ffff_0040_3abc, 40, read);
        assert_eq!(truncated.map(|t| t.physical), Ok(0x9abc));
        let large = translate(legacy(true), 0x00c1_2345, 40, read).unwrap();
        assert_eq!(
            large.physical, 0x1_0081_2345,
            "PSE-36: bits 20:13 are bits 39:32"
        );
        assert_eq!(large.page_size, 4 << 20);
        assert_eq!(
            translate(legacy(true), 0x0100_0000, 40, read),
            Err(WalkError::Reserved { level: 2 })
        );
        // Without CR4.PSE the PS bit is ignored: the entry names a page table (at 8 MiB,
        // all zeros here: not present).
        assert_eq!(
            translate(legacy(false), 0x00c1_2345, 40, read),
            Err(WalkError::NotPresent { level: 1 })
        );
        assert_eq!(
            translate(legacy(true), 0x0080_0000, 40, read),
            Err(WalkError::NotPresent { level: 2 })
        );
    }

    #[test]
    fn pae_paging_walks_four_pointers_then_two_levels_of_8_byte_entries() {
        use pte::*;
        let memory = tables(&[
            // PDPT at 0x1020 (CR3 bits 31:5); pointer 1 (1 GiB–2 GiB): a page directory.
            (0x1020 + 8, 0x3000 | PRESENT),
            (0x3000 + 2 * 8, 0x4000 | PRESENT | WRITABLE | USER), // PD[2]
            (0x4000 + 7 * 8, 0x8000 | PRESENT | USER | NO_EXECUTE), // PT[7]
            (0x3000 + 3 * 8, 0x0060_0000 | PRESENT | WRITABLE | HUGE), // PD[3]: 2 MiB
            // Pointer 2 has the accessed bit QEMU's TCG sets (bit 5, reserved in a PAE
            // pointer, which the CPU checks when it loads the pointers, not in a walk) and
            // names the same directory; pointer 3 sets bit 52, reserved.
            (0x1020 + 2 * 8, 0x3000 | PRESENT | ACCESSED),
            (0x1020 + 3 * 8, (1 << 52) | 0x5000 | PRESENT),
        ]);
        let read = |address: u64| memory.get(&address).copied().or(Some(0));
        let pae = PageTables {
            cr3: 0x1020,
            format: PageTableFormat::Pae,
            no_execute: true,
        };
        let small = translate(pae, 0x4040_7123, 40, read).unwrap();
        assert_eq!(small.physical, 0x8123);
        assert!(!small.writable && small.user && !small.executable);
        assert_eq!(
            small.walked_entries(),
            [0x3000 + 2 * 8, 0x4000 + 7 * 8],
            "not the pointer: it has no accessed bit"
        );
        let huge = translate(pae, 0x4060_0042, 40, read).unwrap();
        assert_eq!((huge.physical, huge.page_size), (0x0060_0042, 2 << 20));
        assert_eq!(
            translate(pae, 0x0000_1000, 40, read),
            Err(WalkError::NotPresent { level: 3 })
        );
        assert_eq!(
            translate(pae, 0x8040_7123, 40, read).map(|t| t.physical),
            Ok(0x8123)
        );
        assert_eq!(
            translate(pae, 0xc000_0000, 40, read),
            Err(WalkError::Reserved { level: 3 })
        );
        assert_eq!(
            translate(pae, 0x4080_0000, 40, read),
            Err(WalkError::NotPresent { level: 2 })
        );
    }

    #[test]
    fn reserved_bits_stop_a_walk_in_every_format() {
        use pte::*;
        let read_from = |memory: BTreeMap<u64, u64>| {
            move |address: u64| memory.get(&address).copied().or(Some(0))
        };
        // Bit 8 in a long-mode PML4E, and in a PDPE that points to a directory: reserved
        // on AMD. In a PDE that points to a table it is ignored, and the walk goes on.
        let long_mode = PageTables::long_mode(0x1000, 0);
        let global_pml4e = tables(&[(0x1000, 0x2000 | PRESENT | GLOBAL)]);
        assert_eq!(
            translate(long_mode, 0, 40, read_from(global_pml4e)),
            Err(WalkError::Reserved { level: 4 })
        );
        let global_pdpe = tables(&[
            (0x1000, 0x2000 | PRESENT),
            (0x2000, 0x3000 | PRESENT | GLOBAL),
        ]);
        assert_eq!(
            translate(long_mode, 0, 40, read_from(global_pdpe)),
            Err(WalkError::Reserved { level: 3 })
        );
        let global_pde = tables(&[
            (0x1000, 0x2000 | PRESENT),
            (0x2000, 0x3000 | PRESENT),
            (0x3000, 0x4000 | PRESENT | GLOBAL),
            (0x4000, 0x5000 | PRESENT | GLOBAL),
        ]);
        assert_eq!(
            translate(long_mode, 0x123, 40, read_from(global_pde)).map(|t| t.physical),
            Ok(0x5123)
        );
        // NX in a long-mode PML4 entry: a bit without EFER.NXE, reserved.
        let nx = tables(&[(0x1000, 0x2000 | PRESENT | NO_EXECUTE)]);
        let without_nxe = PageTables::long_mode(0x1000, 0);
        assert_eq!(
            translate(without_nxe, 0, 40, read_from(nx)),
            Err(WalkError::Reserved { level: 4 })
        );
        // PAE: bit 52 of a page-directory entry (long mode leaves 62:52 to software).
        let pae = PageTables {
            cr3: 0x1000,
            format: PageTableFormat::Pae,
            no_execute: true,
        };
        let high = tables(&[(0x1000, 0x3000 | PRESENT), (0x3000, (1 << 52) | PRESENT)]);
        assert_eq!(
            translate(pae, 0, 40, read_from(high)),
            Err(WalkError::Reserved { level: 2 })
        );
        // Legacy 4 MiB pages: all eight of bits 20:13 are address bits 39:32, and those
        // beyond a 36-bit CPU's width are reserved.
        let legacy = PageTables {
            cr3: 0x1000,
            format: PageTableFormat::Legacy { large_pages: true },
            no_execute: false,
        };
        let entry = (0x0040_0000 | (0x81 << 13) | PRESENT | HUGE) as u32;
        let memory = legacy_tables(&[(0x1000, entry)]);
        assert_eq!(
            translate(legacy, 0x1234, 40, read_from(memory.clone())).map(|t| t.physical),
            Ok(0x81_0040_1234)
        );
        assert_eq!(
            translate(legacy, 0x1234, 36, read_from(memory)),
            Err(WalkError::Reserved { level: 2 })
        );
    }

    #[test]
    fn outside_long_mode_a_linear_address_has_32_bits() {
        use pte::*;
        let pae = PageTables {
            cr3: 0x1000,
            format: PageTableFormat::Pae,
            no_execute: true,
        };
        let memory = tables(&[
            (0x1000, 0x3000 | PRESENT),
            (0x3000, 0x0020_0000 | PRESENT | WRITABLE | HUGE),
        ]);
        let read = |address: u64| memory.get(&address).copied().or(Some(0));
        let wide = translate(pae, 0xffff_ffff_0000_0042, 40, read);
        assert_eq!(wide.map(|t| t.physical), Ok(0x0020_0042));
        assert_eq!(pae.linear(0x1_0000_0010), 0x10, "past 4 GiB: wraps to 0");
        assert_eq!(long_mode().linear(0x1_0000_0010), 0x1_0000_0010);
    }

    #[test]
    fn the_control_registers_choose_the_format() {
        let (pg, pe) = (
            Cr0Flags::PAGING.bits(),
            Cr0Flags::PROTECTED_MODE_ENABLE.bits(),
        );
        let (pae, pse) = (
            Cr4Flags::PHYSICAL_ADDRESS_EXTENSION.bits(),
            Cr4Flags::PAGE_SIZE_EXTENSION.bits(),
        );
        let lma = EferFlags::LONG_MODE_ACTIVE.bits();
        let format = |cr0, cr4, efer| PageTables::of(cr0, 0x1000, cr4, efer).map(|t| t.format);
        assert_eq!(format(pe, pae, lma), None, "paging off");
        assert_eq!(
            format(pe | pg, 0, 0),
            Some(PageTableFormat::Legacy { large_pages: false })
        );
        assert_eq!(
            format(pe | pg, pse, 0),
            Some(PageTableFormat::Legacy { large_pages: true })
        );
        assert_eq!(format(pe | pg, pae | pse, 0), Some(PageTableFormat::Pae));
        assert_eq!(format(pe | pg, pae, lma), Some(PageTableFormat::LongMode));
    }

    #[test]
    fn an_entry_with_a_reserved_bit_stops_the_walk_before_it_is_followed() {
        use pte::*;
        // PML4[0] names a PDPT at bit 48: beyond 40 address bits, reserved. Nothing is read
        // through it (the read function would say so).
        let memory = tables(&[(0x1000, (1 << 48) | 0x2000 | PRESENT | WRITABLE)]);
        let read = |address: u64| {
            assert!(
                address < 1 << 40,
                "read through a reserved entry at {address:#x}"
            );
            memory.get(&address).copied().or(Some(0))
        };
        assert_eq!(
            translate(long_mode(), 0x1000, 40, read),
            Err(WalkError::Reserved { level: 4 })
        );
        // With 52 address bits the same bit is an address: the walk goes on (and finds no
        // table there).
        let wide = |address: u64| memory.get(&address).copied().or(Some(0));
        assert_eq!(
            translate(long_mode(), 0x1000, 52, wide),
            Err(WalkError::NotPresent { level: 3 })
        );
        // PS in a PML4E, and a 2 MiB page with bit 13 set, are reserved too.
        let ps = tables(&[(0x1000, 0x2000 | PRESENT | HUGE)]);
        let read = |address: u64| ps.get(&address).copied().or(Some(0));
        assert_eq!(
            translate(long_mode(), 0, 40, read),
            Err(WalkError::Reserved { level: 4 })
        );
        let large = tables(&[
            (0x1000, 0x2000 | PRESENT),
            (0x2000, 0x3000 | PRESENT),
            (0x3000, 0x0060_2000 | PRESENT | HUGE),
        ]);
        let read = |address: u64| large.get(&address).copied().or(Some(0));
        assert_eq!(
            translate(long_mode(), 0, 40, read),
            Err(WalkError::Reserved { level: 2 })
        );
        assert_eq!(reserved_bits(1, false, 40), 0x000f_ff00_0000_0000);
    }
}
