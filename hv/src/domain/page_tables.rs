//! The guest page tables a domain pinned (`pin_page_table` hypercall). The rule, as Xen's:
//! a pinned table is mapped read-only in the guest, so every write to it faults and the
//! hypervisor checks it (`exit/ptwr.rs`).

use super::Domain;
use alloc::vec::Vec;
use traplab_abi::x86::{self, pte};

/// An entry's PS bit makes it a leaf at these levels (2 MiB, 1 GiB pages).
pub fn is_leaf(level: u8, entry: u64) -> bool {
    level == 1 || ((level == 2 || level == 3) && entry & pte::HUGE != 0)
}

/// The size a leaf entry maps at `level`.
fn leaf_size(level: u8) -> u64 {
    1 << (12 + 9 * (level as u64 - 1))
}

impl Domain {
    /// The level (4 = PML4 … 1 = PT) of the pinned page table that holds `gpa`.
    pub fn pinned_level(&self, gpa: u64) -> Option<u8> {
        self.pv.pinned_tables.get(&(gpa & !0xfff)).copied()
    }

    /// Is the page at guest-physical `page` mapped writable at its 1:1 address? (The
    /// hypervisor checks the guest's only mapping of its RAM, the identity map.)
    fn mapped_writable(&self, page: u64) -> bool {
        let cr3 = self.vcpu.vmcb.save.cr3;
        x86::translate(cr3, page, |gpa| self.memory.read_u64_physical(gpa).ok())
            .is_ok_and(|translation| translation.writable)
    }

    /// The tables under `root` (a level-4 table), each with its level: what
    /// `pin_page_table` pins. `Err` with the reason when a table is not in guest RAM or is
    /// mapped writable.
    pub fn tables_under(&self, root: u64) -> Result<Vec<(u64, u8)>, &'static str> {
        let mut tables = Vec::new();
        self.collect_tables(root & pte::ADDRESS, 4, &mut tables)?;
        if tables.iter().any(|&(table, _)| self.mapped_writable(table)) {
            return Err("a page table is mapped writable");
        }
        Ok(tables)
    }

    /// Every table reachable from `table` (at `level`), into `tables`.
    pub fn collect_tables(
        &self,
        table: u64,
        level: u8,
        tables: &mut Vec<(u64, u8)>,
    ) -> Result<(), &'static str> {
        if table >= self.memory.size() {
            return Err("a page table is not in guest RAM");
        }
        if tables.iter().any(|&(known, _)| known == table) {
            return Ok(());
        }
        tables.push((table, level));
        for index in 0..512u64 {
            let entry = self
                .memory
                .read_u64_physical(table + index * 8)
                .map_err(|_| "a page table cannot be read")?;
            if entry & pte::PRESENT != 0 && !is_leaf(level, entry) {
                self.collect_tables(entry & pte::ADDRESS, level - 1, tables)?;
            }
        }
        Ok(())
    }

    /// May `entry` go into a pinned level-`level` table? (The rules: `exit/ptwr.rs`.)
    pub fn check_entry(&self, level: u8, entry: u64) -> Result<(), &'static str> {
        if entry & pte::PRESENT == 0 {
            return Ok(());
        }
        let target = entry & pte::ADDRESS;
        if !is_leaf(level, entry) {
            if target >= self.memory.size() {
                return Err("points to a page table outside guest RAM");
            }
            if !self.pv.pinned_tables.contains_key(&target) && self.mapped_writable(target) {
                return Err("points to a new page table the guest still maps writable");
            }
            return Ok(());
        }
        // EXERCISE pt-write.1: Xen refuses superpages in PV page tables unless told otherwise:
        // refuse a 2 MiB or 1 GiB leaf, with a reason that says "superpage".
        let size = leaf_size(level);
        let start = target & !(size - 1);
        if start
            .checked_add(size)
            .is_none_or(|end| end > self.memory.size())
        {
            return Err("maps memory outside guest RAM");
        }
        if entry & pte::WRITABLE != 0
            && self
                .pv
                .pinned_tables
                .keys()
                .any(|&table| (start..start + size).contains(&table))
        {
            return Err("maps a pinned page table writable");
        }
        Ok(())
    }
}
