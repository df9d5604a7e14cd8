//! A guest's memory, as the hypervisor reaches it.
//!
//! Guest RAM is guest-physical 0 up to [`GuestMemory::size`], mapped to host frames by the
//! nested page tables. The hypervisor reads and writes it the way the CPU would: a
//! guest-physical address goes through the nested page tables, a guest-virtual one first
//! through the guest's own page tables (CR3), then through the nested ones. The trait is the
//! seam between the decisions (this library) and the machine: the bare-metal program backs
//! it with real frames (`guest_ram.rs`), the host tests with a plain vector
//! (`testing.rs`).

use super::walk_cache::{Reads, WalkCache};
use alloc::vec::Vec;
use traplab_abi::grant_table::map_area;
use traplab_abi::x86::{self, PageTableFormat, PageTables, WalkError};

pub const PAGE_SIZE: u64 = 4096;

/// An access the guest's own CPU makes (an instruction the hypervisor carries out for it,
/// INS or OUTS): what the page-protection checks look at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CpuAccess {
    /// A write to memory (INS), not a read (OUTS).
    pub write: bool,
    /// At CPL 3: a user-mode access.
    pub user: bool,
    /// CR0.WP: supervisor writes honour read-only pages too.
    pub write_protect: bool,
}

/// Why the guest's CPU cannot make an access: the fault it raises, or worse.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccessFault {
    /// The address is not canonical: #GP(0), or #SS(0) for a stack reference (AMD APM
    /// vol. 2, 5.3.1 and 8.2.13). No page is walked.
    NonCanonical,
    /// The segment refuses it, outside 64-bit mode: beyond its limit, a segment that is not
    /// writable (or readable) for the access, or not usable (a null selector): #GP(0), or
    /// #SS(0) through SS (AMD APM vol. 2, 4.8 and 4.12). No page is walked. Why, in words.
    Segment(&'static str),
    /// The page tables refuse it: #PF with this error code, CR2 = `address` (the first
    /// byte of the access on the page that failed; APM vol. 2, 8.4.2).
    PageFault { address: u64, error_code: u32 },
    /// A data access not aligned to its size while the CPU checks alignment (CPL 3, CR0.AM
    /// and RFLAGS.AC: `Vcpu::alignment_checks`): #AC(0) (AMD APM vol. 2, 8.2.17). Checked
    /// after the pages, this model's order (the Intel SDM puts #GP, #PF and #AC in one class
    /// whose order is the implementation's, vol. 3A, 6.9). QEMU's TCG never raises it: the
    /// hypervisor does, for the accesses it makes in the CPU's place.
    Misaligned,
    /// The walk or the access leads outside the guest's RAM: no fault the guest could
    /// handle. A CPU would exit with a nested page fault there, which ends the domain
    /// (`exit/npf/mod.rs`); the hypervisor, doing the access itself, ends it the same way.
    Memory(MemoryError),
}

/// #PF error code bits (AMD APM vol. 2, 8.4.2): P (the page was present: a protection
/// violation), W/R (a write), U/S (at CPL 3).
pub mod page_fault_code {
    pub const PRESENT: u32 = 1 << 0;
    pub const WRITE: u32 = 1 << 1;
    pub const USER: u32 = 1 << 2;
    /// RSVD: an entry on the way set a reserved bit.
    pub const RESERVED: u32 = 1 << 3;
}

/// Why an access failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemoryError {
    /// The guest-virtual address is not mapped by the guest's page tables.
    NotMapped { address: u64, walk: WalkError },
    /// The guest-physical address is outside the memory the guest owns.
    NotGuestMemory { gpa: u64 },
}

/// The guest-physical memory of one domain.
pub trait GuestMemory {
    /// The size of the guest's RAM in bytes: guest-physical `0..size`.
    fn size(&self) -> u64;

    /// Copy guest-physical memory at `gpa` into `buffer` (any length; every page is checked
    /// before a byte is copied). With lazy memory, the hypervisor's own access maps a page
    /// of RAM that was not touched yet, silently.
    fn read_physical(&self, gpa: u64, buffer: &mut [u8]) -> Result<(), MemoryError>;

    /// Copy `bytes` into guest-physical memory at `gpa`; every page is checked first.
    fn write_physical(&mut self, gpa: u64, bytes: &[u8]) -> Result<(), MemoryError>;

    /// Zero guest-physical memory from `gpa` up to `end` (a loader's .bss), a page at a time.
    fn zero_physical(&mut self, gpa: u64, end: u64) -> Result<(), MemoryError> {
        let zeros = [0u8; 4096];
        let mut at = gpa;
        while at < end {
            let length = (end - at).min(zeros.len() as u64);
            self.write_physical(at, &zeros[..length as usize])?;
            at += length;
        }
        Ok(())
    }

    /// The width of a physical address on the CPU the guest sees (CPUID 8000_0008:EAX\[7:0\]):
    /// a page-table entry with an address bit at or above it is reserved.
    fn physical_address_bits(&self) -> u32;

    /// Is guest-physical page `gpa` mapped in the nested page tables?
    fn is_mapped(&self, gpa: u64) -> bool;

    /// RAM is mapped on first touch (setting `lazy-memory`).
    fn lazy(&self) -> bool;

    /// While `on`, the hypervisor's reads only look: a page of lazy RAM that was not touched
    /// yet reads as the zeros its first touch will find, and stays unmapped. gdb reads this
    /// way ([`crate::Domain::look_virtual_prefix`]): a debugger must not change what the guest
    /// will see, and the guest's first touch must still be its nested page fault. Nothing is
    /// written while it is on: it is set only around that read.
    fn look_only(&self, on: bool);

    /// Give the unmapped RAM page at `gpa` a fresh zeroed frame: its host-physical address,
    /// or `None` when no memory is left.
    fn populate(&mut self, gpa: u64) -> Option<u64>;

    /// How many pages [`GuestMemory::populate`] has mapped so far.
    fn populated_pages(&self) -> u64;

    /// The host frame behind the RAM page at `gpa`: what another domain maps when this one
    /// grants it the page (`exit/vmmcall/grant_table.rs`). `None` outside RAM; with lazy
    /// memory the page gets its frame now.
    fn host_frame(&self, gpa: u64) -> Option<u64>;

    /// Map host `frame`, another domain's page, at guest-physical `gpa` (a grant, outside
    /// this domain's RAM), writable or read-only and never executable. `false`: no memory
    /// left for a nested page table.
    fn map_foreign(&mut self, gpa: u64, frame: u64, writable: bool) -> bool;

    /// Take away the page [`GuestMemory::map_foreign`] mapped at `gpa`.
    fn unmap_foreign(&mut self, gpa: u64);

    /// Forbid (or allow again) instruction fetches from every guest page at once: the first
    /// fetch then exits with an NPF (gdb's step into an event handler, `gdb/mod.rs`).
    fn forbid_fetches(&mut self, forbid: bool);

    fn read_u64_physical(&self, gpa: u64) -> Result<u64, MemoryError> {
        let mut bytes = [0u8; 8];
        self.read_physical(gpa, &mut bytes)?;
        Ok(u64::from_le_bytes(bytes))
    }

    /// Translate a guest-virtual address with the guest's page tables (`tables` is `None`
    /// when paging is off: virtual = physical).
    fn virtual_to_physical(
        &self,
        tables: Option<PageTables>,
        gva: u64,
    ) -> Result<u64, MemoryError> {
        let Some(tables) = tables else {
            return Ok(unpaged(gva));
        };
        let gva = tables.linear(gva);
        let walks = self.walk_cache();
        if let Some(gpa) = walks
            .and_then(|walks| walks.lookup(tables, gva, |gpa| self.read_u64_physical(gpa).ok()))
        {
            return Ok(gpa);
        }
        let mut reads = Reads::default();
        let gpa = x86::translate(tables, gva, self.physical_address_bits(), |gpa| {
            let value = self.read_u64_physical(gpa).ok()?;
            reads.note(gpa, value);
            Some(value)
        })
        .map(|translation| translation.physical)
        .map_err(|walk| MemoryError::NotMapped { address: gva, walk })?;
        if let Some(walks) = walks {
            walks.remember(tables, gva, &reads, gpa);
        }
        Ok(gpa)
    }

    /// Where this memory remembers its guest's page walks (`walk_cache.rs`), if it does.
    fn walk_cache(&self) -> Option<&WalkCache> {
        None
    }

    /// Copy guest-virtual memory into `buffer`, page by page.
    fn read_virtual(
        &self,
        tables: Option<PageTables>,
        gva: u64,
        buffer: &mut [u8],
    ) -> Result<(), MemoryError> {
        // Most reads (an instruction, a gate, a frame) are inside one page: one translation.
        if !buffer.is_empty() && (gva % PAGE_SIZE) as usize + buffer.len() <= PAGE_SIZE as usize {
            let gpa = self.virtual_to_physical(tables, gva)?;
            return self.read_physical(gpa, buffer);
        }
        for (address, done, length) in page_pieces(gva, buffer.len()) {
            let gpa = self.virtual_to_physical(tables, address)?;
            self.read_physical(gpa, &mut buffer[done..done + length])?;
        }
        Ok(())
    }

    /// The guest-physical address of every page of `[gva, gva + length)`: where a write
    /// there would go. `Err` names the first address that does not translate.
    fn physical_pieces(
        &self,
        tables: Option<PageTables>,
        gva: u64,
        length: usize,
    ) -> Result<Vec<(u64, usize, usize)>, MemoryError> {
        page_pieces(gva, length)
            .map(|(address, done, piece)| {
                let gpa = self.virtual_to_physical(tables, address)?;
                if gpa >= self.size() {
                    return Err(MemoryError::NotGuestMemory { gpa });
                }
                Ok((gpa, done, piece))
            })
            .collect()
    }

    /// Translate `gva` as the guest's CPU does for a data access, with its checks: the
    /// canonical form (in long mode), every level present, and the page-protection checks (AMD APM vol. 2,
    /// 5.6: a user access needs U/S set at every level; a write needs R/W set at every
    /// level, at CPL 3 always, at CPL 0–2 when CR0.WP is set). `tables` is `None` when paging
    /// is off: physical = linear (`unpaged`), nothing to check.
    fn cpu_translate(
        &self,
        tables: Option<PageTables>,
        gva: u64,
        access: CpuAccess,
    ) -> Result<u64, AccessFault> {
        let Some(tables) = tables else {
            return Ok(unpaged(gva));
        };
        let gva = tables.linear(gva);
        let mut error_code = 0;
        if access.write {
            error_code |= page_fault_code::WRITE;
        }
        if access.user {
            error_code |= page_fault_code::USER;
        }
        let address_bits = self.physical_address_bits();
        let translation = match x86::translate(tables, gva, address_bits, |gpa| {
            self.read_u64_physical(gpa).ok()
        }) {
            Ok(translation) => translation,
            Err(WalkError::NonCanonical) => return Err(AccessFault::NonCanonical),
            // A reserved bit is a protection fault of the page walk: P and RSVD set.
            Err(WalkError::Reserved { .. }) => {
                return Err(AccessFault::PageFault {
                    address: gva,
                    error_code: error_code | page_fault_code::PRESENT | page_fault_code::RESERVED,
                });
            }
            Err(WalkError::NotPresent { .. }) => {
                return Err(AccessFault::PageFault {
                    address: gva,
                    error_code,
                });
            }
            Err(walk) => {
                return Err(AccessFault::Memory(MemoryError::NotMapped {
                    address: gva,
                    walk,
                }));
            }
        };
        let refused = (access.user && !translation.user)
            || (access.write && !translation.writable && (access.user || access.write_protect));
        if refused {
            return Err(AccessFault::PageFault {
                address: gva,
                error_code: error_code | page_fault_code::PRESENT,
            });
        }
        Ok(translation.physical)
    }

    /// [`GuestMemory::physical_pieces`] for an access the guest's CPU makes, checked as
    /// [`GuestMemory::cpu_translate`] checks it, page by page: the first page that fails
    /// names the fault (its CR2 is that page's first byte of the access).
    fn cpu_pieces(
        &self,
        tables: Option<PageTables>,
        gva: u64,
        length: usize,
        access: CpuAccess,
    ) -> Result<Vec<(u64, usize, usize)>, AccessFault> {
        // In long mode every byte's address must be canonical, and the CPU checks that
        // before it walks a page (AMD APM vol. 2, 5.3.1): an access whose first page is
        // unmapped but whose last byte is past the canonical hole is #GP, not #PF. (QEMU's
        // TCG walks page by page and raises the #PF first.)
        if let Some(tables) = tables
            && tables.format == PageTableFormat::LongMode
            && length > 0
            && !(x86::canonical(gva) && x86::canonical(gva.wrapping_add(length as u64 - 1)))
        {
            return Err(AccessFault::NonCanonical);
        }
        page_pieces(gva, length)
            .map(|(address, done, piece)| {
                let gpa = self.cpu_translate(tables, address, access)?;
                if gpa
                    .checked_add(piece as u64)
                    .is_none_or(|end| end > self.size())
                {
                    return Err(AccessFault::Memory(MemoryError::NotGuestMemory { gpa }));
                }
                Ok((gpa, done, piece))
            })
            .collect()
    }

    /// Copy `bytes` into guest-virtual memory; every page is checked before one is written.
    fn write_virtual(
        &mut self,
        tables: Option<PageTables>,
        gva: u64,
        bytes: &[u8],
    ) -> Result<(), MemoryError> {
        for (gpa, done, length) in self.physical_pieces(tables, gva, bytes.len())? {
            self.write_physical(gpa, &bytes[done..done + length])?;
        }
        Ok(())
    }

    /// Set the accessed bit of every entry the walk of `gva` uses and, for a `write`, the
    /// dirty bit of the page's entry: what the guest's CPU does in its walk for an access it
    /// makes (AMD APM vol. 2, 5.4.2 "Accessed (A) Bit" and "Dirty (D) Bit"), and so what the
    /// hypervisor does for an access it makes in the CPU's place (an element of a string
    /// instruction, a bounce frame, a hypercall's output), as Xen's page walk does for its
    /// emulator and its copies to the guest. (Not for its own looks at guest memory: gdb's,
    /// the trace's.) Bits 5 and 6 are in an entry's first byte whatever its size: only that
    /// byte is written, and only when a bit was clear. An entry outside the domain's own RAM
    /// (a table in a page another domain granted it, in the grant-mapping area) is left as
    /// it is: the hypervisor does not write another domain's frame for it, where a CPU's
    /// update through a read-only grant would fault.
    fn mark_walked(
        &mut self,
        tables: Option<PageTables>,
        gva: u64,
        write: bool,
    ) -> Result<(), MemoryError> {
        let Some(tables) = tables else { return Ok(()) };
        let gva = tables.linear(gva);
        let translation = x86::translate(tables, gva, self.physical_address_bits(), |gpa| {
            self.read_u64_physical(gpa).ok()
        })
        .map_err(|walk| MemoryError::NotMapped { address: gva, walk })?;
        let entries = translation.walked_entries();
        for (index, &entry) in entries.iter().enumerate() {
            if entry >= self.size() || map_area().contains(&entry) {
                continue;
            }
            let mut bits = x86::pte::ACCESSED as u8;
            if write && index + 1 == entries.len() {
                bits |= x86::pte::DIRTY as u8;
            }
            let mut first = [0u8];
            self.read_physical(entry, &mut first)?;
            if first[0] & bits != bits {
                self.write_physical(entry, &[first[0] | bits])?;
            }
        }
        Ok(())
    }

    /// [`GuestMemory::read_virtual`] for a read the guest's CPU would make: its page walks
    /// set the accessed bits ([`GuestMemory::mark_walked`]).
    fn cpu_read_virtual(
        &mut self,
        tables: Option<PageTables>,
        gva: u64,
        buffer: &mut [u8],
    ) -> Result<(), MemoryError> {
        for (address, _, _) in page_pieces(gva, buffer.len()) {
            self.mark_walked(tables, address, false)?;
        }
        self.read_virtual(tables, gva, buffer)
    }

    /// [`GuestMemory::write_virtual`] for a write the guest's CPU would make: its page
    /// walks set the accessed bits and the pages' dirty bits ([`GuestMemory::mark_walked`]).
    fn cpu_write_virtual(
        &mut self,
        tables: Option<PageTables>,
        gva: u64,
        bytes: &[u8],
    ) -> Result<(), MemoryError> {
        // Every page checked first, as `write_virtual` does: nothing is marked or written
        // when one of them does not translate or is not the domain's RAM.
        let pieces = self.physical_pieces(tables, gva, bytes.len())?;
        for (address, _, _) in page_pieces(gva, bytes.len()) {
            self.mark_walked(tables, address, true)?;
        }
        for (gpa, done, length) in pieces {
            self.write_physical(gpa, &bytes[done..done + length])?;
        }
        Ok(())
    }

    /// The 15 bytes at guest-virtual `gva`, as [`GuestMemory::read_virtual_prefix`] reads
    /// them (how many it read), for the instruction fetch at every exit: when the bytes are
    /// in one page whose walk is remembered (`walk_cache.rs`), checked and read here, in one
    /// function; the prefix read otherwise. (Through the prefix read, the translation and the
    /// read, each a call returning its own `Result`, the fetch of a CPUID trap's two bytes was
    /// 250 instructions, book/src/speed.md.)
    fn fetch_instruction(
        &self,
        tables: Option<PageTables>,
        gva: u64,
        buffer: &mut [u8; 15],
    ) -> usize {
        if let Some(tables) = tables
            && (gva % PAGE_SIZE) as usize + buffer.len() <= PAGE_SIZE as usize
            && let Some(walks) = self.walk_cache()
        {
            let linear = tables.linear(gva);
            let remembered = walks.lookup(tables, linear, |gpa| self.read_u64_physical(gpa).ok());
            if let Some(gpa) = remembered
                && self.read_physical(gpa, buffer).is_ok()
            {
                return buffer.len();
            }
        }
        self.read_virtual_prefix(tables, gva, buffer)
    }

    /// Read guest-virtual memory page by page, up to the first page that does not
    /// translate; how many bytes were read (instruction fetch, gdb's memory reads).
    fn read_virtual_prefix(
        &self,
        tables: Option<PageTables>,
        gva: u64,
        buffer: &mut [u8],
    ) -> usize {
        // Most instructions do not cross a page: one walk, one copy.
        if (gva % PAGE_SIZE) as usize + buffer.len() <= PAGE_SIZE as usize {
            return match self.read_virtual(tables, gva, buffer) {
                Ok(()) => buffer.len(),
                Err(_) => 0,
            };
        }
        let mut length = 0;
        for (address, done, piece) in page_pieces(gva, buffer.len()) {
            if self
                .read_virtual(tables, address, &mut buffer[done..done + piece])
                .is_err()
            {
                break;
            }
            length = done + piece;
        }
        length
    }
}

/// The physical address of linear address `gva` with paging off. The CPU is not in long mode
/// then (long mode needs paging, AMD APM vol. 2, 14.6): a linear address has 32 bits, so one
/// computed past 4 GiB, an access that runs over the top, wraps to 0, and physical = linear.
fn unpaged(gva: u64) -> u64 {
    gva & 0xffff_ffff
}

/// The pieces of `[start, start + length)` that do not cross a page boundary:
/// `(address, offset into the range, length)`.
pub fn page_pieces(start: u64, length: usize) -> impl Iterator<Item = (u64, usize, usize)> + Clone {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::VecMemory;

    #[test]
    fn with_paging_off_an_access_over_the_top_of_4_gib_wraps_to_0() {
        // Two bytes at 0xffff_ffff: the first there (outside the guest's RAM), the second at
        // 0. The second piece's address is 0, not 4 GiB.
        let memory = VecMemory::new(0x10_0000, false);
        let pieces = page_pieces(0xffff_ffff, 2)
            .map(|(address, _, _)| memory.virtual_to_physical(None, address))
            .collect::<Vec<_>>();
        assert_eq!(pieces, [Ok(0xffff_ffff), Ok(0)]);
        assert_eq!(
            memory.cpu_translate(
                None,
                0x1_0000_0010,
                CpuAccess {
                    write: false,
                    user: false,
                    write_protect: false
                }
            ),
            Ok(0x10)
        );
    }
}
