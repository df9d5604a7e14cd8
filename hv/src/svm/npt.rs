//! Nested page tables: the hypervisor's map from guest-physical to host-physical memory.
//!
//! With nested paging (AMD APM vol. 2, 15.25) every guest memory access is translated
//! twice: the guest's own page tables turn a guest-virtual address into a guest-physical
//! one, then these tables turn that into a host-physical one. They have the format of
//! ordinary long-mode page tables, rooted at the VMCB's N_CR3. A guest-physical address
//! these tables do not map causes a #VMEXIT(NPF) with the address in EXITINFO2: this is
//! how the hypervisor confines a guest to the memory it gave it.
//!
//! The walk is done as a user-mode access (15.25.5: "nested page table entries are
//! treated as user pages"), so every entry needs the U bit; QEMU's TCG enforces it.

use crate::frames::{self, PAGE_SIZE};
use traplab_abi::x86::pte;

/// Permissions of one guest-physical page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Access {
    pub write: bool,
    pub execute: bool,
}

impl Access {
    pub const ALL: Access = Access {
        write: true,
        execute: true,
    };
}

/// A set of nested page tables.
pub struct NestedPageTables {
    /// Host-physical address of the PML4: the VMCB's N_CR3.
    pub root: u64,
}

impl NestedPageTables {
    pub fn new() -> Option<NestedPageTables> {
        Some(NestedPageTables {
            root: frames::alloc_frame()?,
        })
    }

    /// Map the 4 KiB guest-physical page `gpa` to the host-physical page `hpa` (or change
    /// its permissions). `None` when no frame is left for a page table. Takes `&self`: the
    /// tables are frames we own, written through raw pointers, never Rust references.
    pub fn map(&self, gpa: u64, hpa: u64, access: Access) -> Option<()> {
        let entry = self.leaf_entry(gpa, true)?;
        let mut value = hpa | pte::PRESENT | pte::USER;
        if access.write {
            value |= pte::WRITABLE;
        }
        if !access.execute {
            value |= pte::NO_EXECUTE;
        }
        // SAFETY: `leaf_entry` returns a pointer into a page table we own.
        unsafe { entry.write_volatile(value) };
        Some(())
    }

    /// Unmap the 4 KiB guest-physical page `gpa` (a grant taken back): the next access
    /// exits with an NPF. The caller flushes the guest's TLB.
    pub fn unmap(&self, gpa: u64) {
        if let Some(entry) = self.leaf_entry(gpa, false) {
            // SAFETY: `leaf_entry` returns a pointer into a page table we own.
            unsafe { entry.write_volatile(0) };
        }
    }

    /// Forbid (or allow again) instruction fetches from every guest page at once, with the
    /// NX bit of the top-level entries: NX anywhere on the walk forbids the fetch (APM vol.
    /// 2, 5.6.1). The first fetch then exits with an NPF: gdb's step into an event handler
    /// uses that (`gdb/mod.rs`, through `GuestMemory::forbid_fetches`). The leaf entries keep their own permissions.
    pub fn set_no_execute_everywhere(&self, forbid: bool) {
        for index in 0..512u64 {
            let entry = (self.root + index * 8) as *mut u64;
            // SAFETY: the root is a page-table frame we own; 512 entries of 8 bytes.
            let value = unsafe { entry.read_volatile() };
            if value & pte::PRESENT == 0 {
                continue;
            }
            let value = if forbid {
                value | pte::NO_EXECUTE
            } else {
                value & !pte::NO_EXECUTE
            };
            // SAFETY: as above.
            unsafe { entry.write_volatile(value) };
        }
    }

    /// The host-physical address `gpa` maps to, if it is mapped.
    pub fn translate(&self, gpa: u64) -> Option<u64> {
        // SAFETY: `leaf_entry` returns a pointer into a page table we own.
        let entry = unsafe { self.leaf_entry(gpa, false)?.read_volatile() };
        (entry & pte::PRESENT != 0).then_some((entry & pte::ADDRESS) | (gpa & (PAGE_SIZE - 1)))
    }

    /// Walk to the PT entry of `gpa`, creating missing tables when `create`.
    fn leaf_entry(&self, gpa: u64, create: bool) -> Option<*mut u64> {
        let mut table = self.root;
        for level in (2..=4u32).rev() {
            let index = (gpa >> (12 + 9 * (level - 1))) & 0x1ff;
            let entry = (table + index * 8) as *mut u64;
            // SAFETY: `table` is a page-table frame we allocated, identity-mapped.
            let value = unsafe { entry.read_volatile() };
            table = if value & pte::PRESENT != 0 {
                value & pte::ADDRESS
            } else if create {
                let next = frames::alloc_frame()?;
                // Intermediate entries allow everything; the leaf decides.
                // SAFETY: as above.
                unsafe { entry.write_volatile(next | pte::PRESENT | pte::WRITABLE | pte::USER) };
                next
            } else {
                return None;
            };
        }
        Some((table + ((gpa >> 12) & 0x1ff) * 8) as *mut u64)
    }
}
