//! A guest's RAM on the real machine: host frames behind the domain's nested page tables.
//!
//! Guest RAM is guest-physical `0..size`, one contiguous block of host frames mapped page
//! by page (or, with lazy memory, a frame per page on first touch). The hypervisor reaches
//! it through the nested page tables, as the CPU does: this is the bare-metal side of
//! `traplab_hv::domain::GuestMemory`, whose page walks and virtual accesses are written
//! once, in the library.
//!
//! One shortcut: while RAM is still the one block it was mapped as, guest-physical `gpa`
//! is host `base + gpa`, and that is what the nested tables would say too — so the
//! hypervisor's own reads (the guest's page-table entries and the instruction at RIP, at
//! every exit) skip the lookup ([`GuestRam::contiguous`]). The guest's page walk itself is
//! not shortened: that is the library's, entry by entry (AMD APM vol. 2, 5.3).

use crate::frames;
use crate::svm::npt::{Access, NestedPageTables};
use core::cell::Cell;
use traplab_hv::domain::memory::{GuestMemory, MemoryError, PAGE_SIZE, page_pieces};
use traplab_hv::domain::walk_cache::WalkCache;

pub struct GuestRam {
    size: u64,
    /// Private: every change to the mapping goes through this file, which keeps
    /// [`GuestRam::recent`] true to it.
    npt: NestedPageTables,
    /// The last guest pages translated, direct-mapped by page number: `(page | 1, host
    /// frame)`. Every exit reads the instruction at RIP through the guest's page tables (four
    /// levels in long mode), each entry a guest-physical read that would walk the nested tables in
    /// software again; the same few pages come back at every exit. Only mappings that
    /// exist are remembered, and a mapping that changes or goes empties it
    /// ([`GuestRam::forget_translations`]), so it never answers what the tables would not.
    recent: [Cell<(u64, u64)>; RECENT],
    /// `Some(base)` while every page of RAM is mapped where [`GuestRam::new`] put it: the
    /// host frame of guest-physical `gpa < size` is `base + gpa`, no lookup needed. `None`
    /// with lazy memory (a frame per page, wherever one is free), and for good once a
    /// mapping of a RAM page changes ([`GuestRam::remapped`]).
    contiguous: Option<u64>,
    /// The guest's page walks remembered (`walk_cache.rs`).
    walks: WalkCache,
    /// RAM is mapped on first touch (setting `lazy-memory`).
    lazy: bool,
    /// Pages mapped so far by [`GuestMemory::populate`].
    populated_pages: Cell<u64>,
    /// Reads only look ([`GuestMemory::look_only`]): an untouched lazy page is not mapped.
    looking: Cell<bool>,
    /// The CPU's physical-address width, asked once: every guest page walk needs it.
    address_bits: u32,
}

/// How many translations [`GuestRam::recent`] keeps (a power of two).
const RECENT: usize = 16;

/// What an untouched page of lazy RAM holds, for a read that only looks
/// ([`GuestMemory::look_only`]): the zeros [`GuestRam::map_fresh_frame`] would give it. Read,
/// never mapped into a guest.
#[repr(align(4096))]
struct ZeroPage([u8; PAGE_SIZE as usize]);
static UNTOUCHED: ZeroPage = ZeroPage([0; PAGE_SIZE as usize]);

/// The machine's physical-address width (the guest's CPUID passes leaf 8000_0008 through).
fn machine_address_bits() -> u32 {
    traplab_hv::Machine::cpuid(&crate::hardware::Hardware, 0x8000_0008, 0)[0] & 0xff
}

impl GuestRam {
    /// Allocate `size` bytes of RAM and map all of it, readable, writable and executable.
    pub fn new(size: u64) -> Option<GuestRam> {
        let base = frames::alloc_frames(size / PAGE_SIZE)?;
        let npt = NestedPageTables::new()?;
        for offset in (0..size).step_by(PAGE_SIZE as usize) {
            npt.map(offset, base + offset, Access::ALL)?;
        }
        Some(GuestRam {
            size,
            npt,
            recent: Default::default(),
            contiguous: Some(base),
            walks: WalkCache::default(),
            lazy: false,
            populated_pages: Cell::new(0),
            looking: Cell::new(false),
            address_bits: machine_address_bits(),
        })
    }

    /// `size` bytes of RAM, none of it mapped yet: each page gets a frame when first touched.
    pub fn new_lazy(size: u64) -> Option<GuestRam> {
        Some(GuestRam {
            size,
            npt: NestedPageTables::new()?,
            recent: Default::default(),
            contiguous: None,
            walks: WalkCache::default(),
            lazy: true,
            populated_pages: Cell::new(0),
            looking: Cell::new(false),
            address_bits: machine_address_bits(),
        })
    }

    /// The host-physical address of the nested page tables' root: the VMCB's N_CR3.
    pub fn nested_root(&self) -> u64 {
        self.npt.root
    }

    /// A mapping changed or went: what [`GuestRam::recent`] remembers may be stale.
    fn forget_translations(&self) {
        for slot in &self.recent {
            slot.set((0, 0));
        }
    }

    /// The mapping of guest-physical page `gpa` changes (a grant mapped or taken back): if
    /// that is a page of RAM, RAM is no longer the one block [`GuestRam::contiguous`] says.
    /// (Grants go to their own area, above RAM for the labs' guests, so this is rare.)
    fn remapped(&mut self, gpa: u64) {
        self.forget_translations();
        if gpa < self.size {
            self.contiguous = None;
        }
    }

    /// The host address of `[gpa, gpa + length)` when it lies inside RAM that is still one
    /// block: one addition, and the range needs no splitting at page boundaries.
    #[inline]
    fn direct(&self, gpa: u64, length: usize) -> Option<u64> {
        let base = self.contiguous?;
        let end = gpa.checked_add(length as u64)?;
        (end <= self.size).then_some(base + gpa)
    }

    /// Map a fresh zeroed frame at the RAM page `gpa` (through `&self`: the tables are
    /// frames the hypervisor owns, written through raw pointers).
    fn map_fresh_frame(&self, gpa: u64) -> Option<u64> {
        if gpa >= self.size {
            return None;
        }
        let frame = frames::alloc_frame()?;
        self.forget_translations();
        self.npt.map(gpa & !(PAGE_SIZE - 1), frame, Access::ALL)?;
        self.populated_pages.set(self.populated_pages.get() + 1);
        Some(frame)
    }

    /// The host address of `gpa`, through the nested page tables. With lazy memory the
    /// hypervisor's own access populates a page that is RAM but not mapped yet, unless it
    /// only looks (gdb's read): then the page is read as the zeros it will get.
    fn host_address(&self, gpa: u64) -> Result<u64, MemoryError> {
        if let Some(host) = self.direct(gpa, 1) {
            return Ok(host);
        }
        let page = gpa & !(PAGE_SIZE - 1);
        let offset = gpa & (PAGE_SIZE - 1);
        let slot = &self.recent[(gpa / PAGE_SIZE) as usize & (RECENT - 1)];
        let (remembered, frame) = slot.get();
        if remembered == page | 1 {
            return Ok(frame | offset);
        }
        if let Some(host) = self.npt.translate(gpa) {
            slot.set((page | 1, host & !(PAGE_SIZE - 1)));
            return Ok(host);
        }
        if self.lazy && self.looking.get() && gpa < self.size {
            // Not remembered in `recent`: the page is still unmapped.
            return Ok(UNTOUCHED.0.as_ptr() as u64 | offset);
        }
        if self.lazy
            && let Some(frame) = self.map_fresh_frame(gpa)
        {
            return Ok(frame | (gpa & (PAGE_SIZE - 1)));
        }
        Err(MemoryError::NotGuestMemory { gpa })
    }

    /// [`GuestMemory::read_u64_physical`] through the nested page tables (lazy memory, or a
    /// RAM page remapped), or split in two when it crosses a page.
    fn read_u64_translated(&self, gpa: u64) -> Result<u64, MemoryError> {
        if !gpa.is_multiple_of(8) {
            let mut bytes = [0u8; 8];
            self.read_physical(gpa, &mut bytes)?;
            return Ok(u64::from_le_bytes(bytes));
        }
        let host = self.host_address(gpa)?;
        // SAFETY: `host` is the host-physical (identity-mapped) address of 8 aligned bytes
        // of guest RAM, inside one page.
        Ok(unsafe { (host as *const u64).read_volatile() })
    }

    /// [`GuestMemory::read_physical`] page by page, through the nested page tables.
    fn read_pages(&self, gpa: u64, buffer: &mut [u8]) -> Result<(), MemoryError> {
        self.for_each_page(gpa, buffer.len(), |host, done, length| {
            // SAFETY: `host` is a host-physical (identity-mapped) address of guest RAM that
            // stays mapped for `length` bytes inside one page.
            unsafe {
                core::ptr::copy_nonoverlapping(
                    host as *const u8,
                    buffer[done..].as_mut_ptr(),
                    length,
                )
            };
        })
    }

    /// Split `[gpa, gpa + length)` at page boundaries and call `each(host, done, length)`.
    /// Checks every page before touching any. Each page is translated once when the range
    /// spans at most two (an instruction, a page-table entry, a gate: every access of the
    /// exit path); a longer range is translated twice, to check and to copy — a walk of the
    /// nested tables is done in software here, and the exit path does several per exit.
    fn for_each_page(
        &self,
        gpa: u64,
        length: usize,
        mut each: impl FnMut(u64, usize, usize),
    ) -> Result<(), MemoryError> {
        // Most accesses (an instruction, an entry, a frame) are inside one page.
        if length != 0 && (gpa % PAGE_SIZE) as usize + length <= PAGE_SIZE as usize {
            each(self.host_address(gpa)?, 0, length);
            return Ok(());
        }
        let mut pieces = page_pieces(gpa, length);
        match (pieces.next(), pieces.next(), pieces.next()) {
            (first, second, None) => {
                let translated = |piece: Option<(u64, usize, usize)>| {
                    piece
                        .map(|(address, done, length)| {
                            self.host_address(address).map(|host| (host, done, length))
                        })
                        .transpose()
                };
                let (first, second) = (translated(first)?, translated(second)?);
                for (host, done, length) in first.into_iter().chain(second) {
                    each(host, done, length);
                }
            }
            _ => {
                for (address, _, _) in page_pieces(gpa, length) {
                    self.host_address(address)?;
                }
                for (address, done, piece) in page_pieces(gpa, length) {
                    each(self.host_address(address)?, done, piece);
                }
            }
        }
        Ok(())
    }
}

impl GuestMemory for GuestRam {
    fn size(&self) -> u64 {
        self.size
    }

    fn physical_address_bits(&self) -> u32 {
        self.address_bits
    }

    #[inline]
    fn read_physical(&self, gpa: u64, buffer: &mut [u8]) -> Result<(), MemoryError> {
        if let Some(host) = self.direct(gpa, buffer.len()) {
            // SAFETY: `host` is the host-physical (identity-mapped) address of
            // `buffer.len()` bytes of guest RAM, all of them in the one block.
            unsafe {
                core::ptr::copy_nonoverlapping(host as *const u8, buffer.as_mut_ptr(), buffer.len())
            };
            return Ok(());
        }
        self.read_pages(gpa, buffer)
    }

    fn write_physical(&mut self, gpa: u64, bytes: &[u8]) -> Result<(), MemoryError> {
        if let Some(host) = self.direct(gpa, bytes.len()) {
            // SAFETY: as in `read_physical`.
            unsafe { core::ptr::copy_nonoverlapping(bytes.as_ptr(), host as *mut u8, bytes.len()) };
            return Ok(());
        }
        self.for_each_page(gpa, bytes.len(), |host, done, length| {
            // SAFETY: as in `read_physical`.
            unsafe {
                core::ptr::copy_nonoverlapping(bytes[done..].as_ptr(), host as *mut u8, length)
            };
        })
    }

    /// A page-table entry (every guest page walk reads several): one load when RAM is one
    /// block, else one translation and one load; never the general copy.
    #[inline]
    fn read_u64_physical(&self, gpa: u64) -> Result<u64, MemoryError> {
        if gpa.is_multiple_of(8)
            && let Some(host) = self.direct(gpa, 8)
        {
            // SAFETY: `host` is the host-physical (identity-mapped) address of 8 aligned
            // bytes of guest RAM.
            return Ok(unsafe { (host as *const u64).read_volatile() });
        }
        self.read_u64_translated(gpa)
    }

    fn walk_cache(&self) -> Option<&WalkCache> {
        Some(&self.walks)
    }

    fn is_mapped(&self, gpa: u64) -> bool {
        self.npt.translate(gpa).is_some()
    }

    fn lazy(&self) -> bool {
        self.lazy
    }

    fn look_only(&self, on: bool) {
        self.looking.set(on);
    }

    fn populate(&mut self, gpa: u64) -> Option<u64> {
        self.map_fresh_frame(gpa)
    }

    fn populated_pages(&self) -> u64 {
        self.populated_pages.get()
    }

    fn host_frame(&self, gpa: u64) -> Option<u64> {
        if gpa >= self.size {
            return None;
        }
        self.host_address(gpa & !(PAGE_SIZE - 1)).ok()
    }

    fn map_foreign(&mut self, gpa: u64, frame: u64, writable: bool) -> bool {
        let access = Access {
            write: writable,
            execute: false,
        };
        self.remapped(gpa);
        self.npt
            .map(gpa & !(PAGE_SIZE - 1), frame, access)
            .is_some()
    }

    fn unmap_foreign(&mut self, gpa: u64) {
        self.remapped(gpa);
        self.npt.unmap(gpa & !(PAGE_SIZE - 1));
    }

    fn forbid_fetches(&mut self, forbid: bool) {
        self.npt.set_no_execute_everywhere(forbid);
    }
}
