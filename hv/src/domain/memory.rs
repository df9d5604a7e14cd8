//! A guest's memory, as the hypervisor reaches it.
//!
//! Guest RAM is one contiguous block of host frames, mapped page by page in the guest's
//! nested page tables. The hypervisor reads and writes it the way the CPU would: a
//! guest-physical address goes through the nested page tables, a guest-virtual one first
//! through the guest's own page tables (CR3), then through the nested ones.

use crate::memory::{self, PAGE_SIZE};
use crate::svm::npt::{Access, NestedPageTables};
use core::cell::Cell;
use traplab_abi::x86::{self, WalkError};

/// Why an access failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemoryError {
    /// The guest-virtual address is not mapped by the guest's page tables.
    NotMapped { address: u64, walk: WalkError },
    /// The guest-physical address is outside the memory the guest owns.
    NotGuestMemory { gpa: u64 },
}

pub struct GuestMemory {
    pub size: u64,
    pub npt: NestedPageTables,
    /// RAM is mapped on first touch (setting `lazy-memory`).
    pub lazy: bool,
    /// Pages mapped so far by [`GuestMemory::populate`].
    pub populated_pages: Cell<u64>,
}

impl GuestMemory {
    /// Allocate `size` bytes of RAM and map all of it, readable, writable and executable.
    pub fn new(size: u64) -> Option<GuestMemory> {
        let base = memory::alloc_frames(size / PAGE_SIZE)?;
        let npt = NestedPageTables::new()?;
        for offset in (0..size).step_by(PAGE_SIZE as usize) {
            npt.map(offset, base + offset, Access::ALL)?;
        }
        Some(GuestMemory {
            size,
            npt,
            lazy: false,
            populated_pages: Cell::new(0),
        })
    }

    /// `size` bytes of RAM, none of it mapped yet: each page gets a frame when first touched.
    pub fn new_lazy(size: u64) -> Option<GuestMemory> {
        Some(GuestMemory {
            size,
            npt: NestedPageTables::new()?,
            lazy: true,
            populated_pages: Cell::new(0),
        })
    }

    /// Give the unmapped RAM page `gpa` a fresh zeroed frame; its host-physical address.
    pub fn populate(&self, gpa: u64) -> Option<u64> {
        if gpa >= self.size {
            return None;
        }
        let frame = memory::alloc_frame()?;
        self.npt.map(gpa & !(PAGE_SIZE - 1), frame, Access::ALL)?;
        self.populated_pages.set(self.populated_pages.get() + 1);
        Some(frame)
    }

    /// The host address of `gpa`, through the nested page tables. With lazy memory the
    /// hypervisor's own access populates a page that is RAM but not mapped yet.
    fn host_address(&self, gpa: u64) -> Result<u64, MemoryError> {
        if let Some(host) = self.npt.translate(gpa) {
            return Ok(host);
        }
        if self.lazy
            && let Some(frame) = self.populate(gpa)
        {
            return Ok(frame | (gpa & (PAGE_SIZE - 1)));
        }
        Err(MemoryError::NotGuestMemory { gpa })
    }

    /// Copy guest-physical memory at `gpa` into `buffer`.
    pub fn read_physical(&self, gpa: u64, buffer: &mut [u8]) -> Result<(), MemoryError> {
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

    /// Copy `bytes` into guest-physical memory at `gpa`.
    pub fn write_physical(&self, gpa: u64, bytes: &[u8]) -> Result<(), MemoryError> {
        self.for_each_page(gpa, bytes.len(), |host, done, length| {
            // SAFETY: as in `read_physical`.
            unsafe {
                core::ptr::copy_nonoverlapping(bytes[done..].as_ptr(), host as *mut u8, length)
            };
        })
    }

    pub fn read_u64_physical(&self, gpa: u64) -> Result<u64, MemoryError> {
        let mut bytes = [0u8; 8];
        self.read_physical(gpa, &mut bytes)?;
        Ok(u64::from_le_bytes(bytes))
    }

    /// Split `[gpa, gpa + length)` at page boundaries and call `each(host, done, length)`.
    /// Checks every page before touching any.
    fn for_each_page(
        &self,
        gpa: u64,
        length: usize,
        mut each: impl FnMut(u64, usize, usize),
    ) -> Result<(), MemoryError> {
        let mut pieces = page_pieces(gpa, length);
        for (address, _, _) in pieces.clone() {
            self.host_address(address)?;
        }
        for (address, done, piece) in &mut pieces {
            each(self.host_address(address)?, done, piece);
        }
        Ok(())
    }

    /// Translate a guest-virtual address with the guest's page tables.
    /// `cr3` is `None` when the guest runs with paging off (virtual = physical).
    pub fn virtual_to_physical(&self, cr3: Option<u64>, gva: u64) -> Result<u64, MemoryError> {
        let Some(cr3) = cr3 else { return Ok(gva) };
        x86::translate(cr3, gva, |gpa| self.read_u64_physical(gpa).ok())
            .map(|translation| translation.physical)
            .map_err(|walk| MemoryError::NotMapped { address: gva, walk })
    }

    /// Copy guest-virtual memory into `buffer`, page by page.
    pub fn read_virtual(
        &self,
        cr3: Option<u64>,
        gva: u64,
        buffer: &mut [u8],
    ) -> Result<(), MemoryError> {
        for (address, done, length) in page_pieces(gva, buffer.len()) {
            let gpa = self.virtual_to_physical(cr3, address)?;
            self.read_physical(gpa, &mut buffer[done..done + length])?;
        }
        Ok(())
    }

    /// Copy `bytes` into guest-virtual memory, page by page; all pages are checked first.
    pub fn write_virtual(
        &self,
        cr3: Option<u64>,
        gva: u64,
        bytes: &[u8],
    ) -> Result<(), MemoryError> {
        for (address, _, _) in page_pieces(gva, bytes.len()) {
            let gpa = self.virtual_to_physical(cr3, address)?;
            self.host_address(gpa)?;
        }
        for (address, done, length) in page_pieces(gva, bytes.len()) {
            let gpa = self.virtual_to_physical(cr3, address)?;
            self.write_physical(gpa, &bytes[done..done + length])?;
        }
        Ok(())
    }
}

/// The pieces of `[start, start + length)` that do not cross a page boundary:
/// `(address, offset into the range, length)`.
fn page_pieces(start: u64, length: usize) -> impl Iterator<Item = (u64, usize, usize)> + Clone {
    let mut done = 0usize;
    core::iter::from_fn(move || {
        if done >= length {
            return None;
        }
        let address = start.wrapping_add(done as u64);
        let in_page = (PAGE_SIZE - (address & (PAGE_SIZE - 1))) as usize;
        let piece = in_page.min(length - done);
        let item = (address, done, piece);
        done += piece;
        Some(item)
    })
}
