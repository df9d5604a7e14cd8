//! The guest page tables a domain pinned (`pin_page_table` hypercall). The rule, as Xen's:
//! a pinned table is mapped read-only in the guest, so every write to it faults and the
//! hypervisor checks it (`exit/ptwr.rs`).
//!
//! Pinning walks every table under a root, and a guest decides how many there are (up to
//! every page of its RAM). So the walk is linear in the tables it finds (a set of those
//! found, never a scan), it does not look inside a level-1 table (its entries map pages,
//! never tables), it stops at a table pinned already (everything under a pinned table is
//! pinned: `apply.rs` pins a new lower table with its subtree), and it reads at most
//! [`PIN_READS_PER_EXIT`] words of guest memory per exit: a longer walk is a hypercall
//! continuation, as Xen's (`hypercall_create_continuation`): the VMMCALL's RIP stays, the
//! walk so far waits in [`Pinning`], and the VMMCALL runs again for the next piece. Nothing is
//! pinned until the walk is over, so a refusal halfway pins nothing.

use super::Domain;
use alloc::collections::BTreeSet;
use alloc::vec;
use alloc::vec::Vec;
use traplab_abi::x86::{self, PageTables, pte};

/// The most words of guest memory (page-table entries, and the 4 entries of each found
/// table's own mapping) one `pin_page_table` exit reads: 8 tables' worth of entries, as
/// `exit/ioio.rs` moves at most 4096 elements of a string instruction per exit.
pub const PIN_READS_PER_EXIT: usize = 4096;

/// A `pin_page_table` under way: its walk so far, kept between the exits of its
/// continuation (`Pv::pinning`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Pinning {
    /// The level-4 table being pinned.
    pub root: u64,
    /// The RIP of its VMMCALL: the same call at another place starts over.
    pub rip: u64,
    /// The tables found so far, depth first, each with its level; pinned together at the end.
    pub found: Vec<(u64, u8)>,
    /// The same tables, to ask whether one is known in O(log n).
    pub seen: BTreeSet<u64>,
    /// Where the walk is: the tables being read, outermost first.
    pub stack: Vec<WalkFrame>,
}

/// One table the walk is reading: its address, its level, the next entry to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WalkFrame {
    pub table: u64,
    pub level: u8,
    pub next: u16,
}

/// What one exit's piece of a pin walk did: the tables it found (after those of `Pinning`,
/// unless it starts `fresh`), where the walk stands now, and whether it is over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PinStep {
    pub fresh: bool,
    pub root: u64,
    pub rip: u64,
    pub found: Vec<(u64, u8)>,
    pub stack: Vec<WalkFrame>,
    /// Words of guest memory read.
    pub reads: usize,
    pub done: bool,
}

/// Why a page table may not be the domain's shared-info page: the hypervisor writes pending
/// event bits there (`evtchn.rs`), which would change entries behind the checks of
/// `check_entry` (`set_shared_info` refuses the other way round).
const SHARED_INFO_TABLE: &str =
    "a page table is the shared-info page, where the hypervisor writes pending events";

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
        // A PV kernel's tables are long mode's (`pin_page_table` walks four levels).
        let save = &self.vcpu.vmcb.save;
        let tables = PageTables::long_mode(save.cr3, save.efer);
        x86::translate(tables, page, self.memory.physical_address_bits(), |gpa| {
            self.memory.read_u64_physical(gpa).ok()
        })
        .is_ok_and(|translation| translation.writable)
    }

    /// The tables under `root` (a level-4 table), each with its level, in one go: what
    /// `pin_page_table` pins (but for tables pinned already, where it stops). `Err` with the
    /// reason when a table is not in guest RAM or is mapped writable.
    pub fn tables_under(&self, root: u64) -> Result<Vec<(u64, u8)>, &'static str> {
        Ok(self.walk(root & pte::ADDRESS, 0, None, usize::MAX)?.found)
    }

    /// The next piece of the `pin_page_table` of `root` by the VMMCALL at `rip`: it goes on
    /// from the walk kept in `pv.pinning` when that is this call's, else starts afresh.
    pub fn pin_walk(&self, root: u64, rip: u64, budget: usize) -> Result<PinStep, &'static str> {
        let root = root & pte::ADDRESS;
        let pending = self
            .pv
            .pinning
            .as_deref()
            .filter(|pinning| pinning.root == root && pinning.rip == rip);
        self.walk(root, rip, pending, budget)
    }

    /// Walk the tables under `root`, from where `pending` stopped (or from the root), until
    /// the walk is over or `budget` words have been read.
    fn walk(
        &self,
        root: u64,
        rip: u64,
        pending: Option<&Pinning>,
        budget: usize,
    ) -> Result<PinStep, &'static str> {
        let mut step = PinStep {
            fresh: pending.is_none(),
            root,
            rip,
            found: Vec::new(),
            stack: Vec::new(),
            reads: 0,
            done: false,
        };
        let mut seen = BTreeSet::new();
        match pending {
            Some(pinning) => step.stack = pinning.stack.clone(),
            None => {
                if root >= self.memory.size() {
                    return Err("a page table is not in guest RAM");
                }
                if self.pv.pinned_tables.contains_key(&root) {
                    step.done = true;
                    return Ok(step);
                }
                self.found(&mut step, &mut seen, root, 4)?;
            }
        }
        let known = |table: u64, seen: &BTreeSet<u64>| {
            self.pv.pinned_tables.contains_key(&table)
                || seen.contains(&table)
                || pending.is_some_and(|pinning| pinning.seen.contains(&table))
        };
        while step.reads < budget {
            let Some(frame) = step.stack.last_mut() else {
                break;
            };
            if frame.next == 512 {
                step.stack.pop();
                continue;
            }
            let (table, level) = (frame.table, frame.level);
            let address = table + 8 * frame.next as u64;
            frame.next += 1;
            step.reads += 1;
            let entry = self
                .memory
                .read_u64_physical(address)
                .map_err(|_| "a page table cannot be read")?;
            if entry & pte::PRESENT == 0 || is_leaf(level, entry) {
                continue;
            }
            let target = entry & pte::ADDRESS;
            if target >= self.memory.size() {
                return Err("a page table is not in guest RAM");
            }
            if !known(target, &seen) {
                self.found(&mut step, &mut seen, target, level - 1)?;
            }
        }
        step.done = step.stack.is_empty();
        Ok(step)
    }

    /// The walk found a new `table` at `level`: it must be mapped read-only (4 reads: the
    /// guest's page walk to it), and, unless it is a level-1 table (entries that map pages,
    /// never tables), its entries are read next.
    fn found(
        &self,
        step: &mut PinStep,
        seen: &mut BTreeSet<u64>,
        table: u64,
        level: u8,
    ) -> Result<(), &'static str> {
        step.reads += 4;
        if self.mapped_writable(table) {
            return Err("a page table is mapped writable");
        }
        if self.grants.mapped_writable_by_others(table) {
            return Err("a page table is mapped writable by another domain, through a grant");
        }
        if Some(table) == self.events.shared_info {
            return Err(SHARED_INFO_TABLE);
        }
        seen.insert(table);
        step.found.push((table, level));
        if level > 1 {
            step.stack.push(WalkFrame {
                table,
                level,
                next: 0,
            });
        }
        Ok(())
    }

    /// Every table reachable from `table` (at `level`) that is not pinned yet, into
    /// `tables`: a new lower table a checked entry links (`apply.rs`).
    pub fn collect_tables(
        &self,
        table: u64,
        level: u8,
        tables: &mut Vec<(u64, u8)>,
    ) -> Result<(), &'static str> {
        let mut seen: BTreeSet<u64> = tables.iter().map(|&(table, _)| table).collect();
        let mut work = vec![(table, level)];
        while let Some((table, level)) = work.pop() {
            if table >= self.memory.size() {
                return Err("a page table is not in guest RAM");
            }
            if self.pv.pinned_tables.contains_key(&table) || !seen.insert(table) {
                continue;
            }
            if Some(table) == self.events.shared_info {
                return Err(SHARED_INFO_TABLE);
            }
            tables.push((table, level));
            if level == 1 {
                continue;
            }
            for index in 0..512u64 {
                let entry = self
                    .memory
                    .read_u64_physical(table + index * 8)
                    .map_err(|_| "a page table cannot be read")?;
                if entry & pte::PRESENT != 0 && !is_leaf(level, entry) {
                    work.push((entry & pte::ADDRESS, level - 1));
                }
            }
        }
        Ok(())
    }

    /// May `entry` go into a pinned level-`level` table? (The rules: `exit/ptwr.rs`.)
    pub fn check_entry(&self, level: u8, entry: u64) -> Result<(), &'static str> {
        self.check_entry_once(level, entry, &mut BTreeSet::new())
    }

    /// Does an entry of the new level-`level` table at `table` (or of a table under it)
    /// break the rules? A table that cannot be read does. `checked`: the new tables already
    /// looked at in this check, each only once (a guest may link one table many times).
    fn entries_of_new_table_break_the_rules(
        &self,
        table: u64,
        level: u8,
        checked: &mut BTreeSet<u64>,
    ) -> bool {
        if !checked.insert(table) {
            return false;
        }
        (0..512u64).any(|index| {
            self.memory
                .read_u64_physical(table + index * 8)
                .map_or(true, |entry| {
                    self.check_entry_once(level, entry, checked).is_err()
                })
        })
    }

    /// [`Domain::check_entry`], with the new tables already checked.
    fn check_entry_once(
        &self,
        level: u8,
        entry: u64,
        checked: &mut BTreeSet<u64>,
    ) -> Result<(), &'static str> {
        if entry & pte::PRESENT == 0 {
            return Ok(());
        }
        let target = entry & pte::ADDRESS;
        if !is_leaf(level, entry) {
            if target >= self.memory.size() {
                return Err("points to a page table outside guest RAM");
            }
            if self.pv.pinned_tables.contains_key(&target) {
                return Ok(());
            }
            if self.mapped_writable(target) {
                return Err("points to a new page table the guest still maps writable");
            }
            if self.grants.mapped_writable_by_others(target) {
                return Err(
                    "points to a new page table another domain maps writable, through a grant",
                );
            }
            // A new table becomes pinned, so every entry in it must pass these rules too (as
            // Xen validates a page when it becomes a page table): else the guest could fill
            // it while it was writable with an entry mapping a pinned table writable.
            if self.entries_of_new_table_break_the_rules(target, level - 1, checked) {
                return Err("points to a new page table with an entry these rules refuse");
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
        // A range query in the sorted map, not a scan of every pinned table: this runs for
        // each entry of a new table too.
        if entry & pte::WRITABLE != 0
            && self
                .pv
                .pinned_tables
                .range(start..start + size)
                .next()
                .is_some()
        {
            return Err("maps a pinned page table writable");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{DATA, PD, PDPT, PML4, PT, Test};

    const TABLE: u64 = 0x1_4000;

    #[test]
    fn an_entry_is_a_leaf_at_level_1_or_with_ps_at_levels_2_and_3() {
        // AMD APM vol. 2, 5.3: PS in a PDE maps 2 MiB, in a PDPTE 1 GiB; PML4 has no PS.
        assert!(is_leaf(1, 0));
        assert!(is_leaf(2, pte::HUGE) && is_leaf(3, pte::HUGE));
        assert!(!is_leaf(2, 0) && !is_leaf(4, pte::HUGE));
    }

    #[test]
    fn a_not_present_entry_is_always_accepted() {
        // The CPU ignores every other bit of a not-present entry.
        let test = Test::long_mode();
        assert_eq!(test.domain.check_entry(1, !pte::PRESENT), Ok(()));
    }

    #[test]
    fn a_leaf_that_maps_memory_outside_the_guest_s_ram_is_refused() {
        let test = Test::long_mode();
        assert_eq!(
            test.domain.check_entry(1, 0x2000_0000 | pte::PRESENT),
            Err("maps memory outside guest RAM")
        );
        assert_eq!(test.domain.check_entry(1, DATA | pte::PRESENT), Ok(()));
    }

    #[test]
    fn a_large_leaf_is_checked_over_all_the_memory_it_maps() {
        // A 1 GiB page at 0 covers far more than the guest's 16 MiB.
        let test = Test::long_mode();
        assert!(
            test.domain
                .check_entry(3, pte::PRESENT | pte::HUGE)
                .is_err()
        );
    }

    #[test]
    fn a_leaf_that_maps_a_pinned_table_writable_is_refused_read_only_is_fine() {
        let mut test = Test::long_mode();
        test.pin_page_tables();
        let domain = &test.domain;
        assert_eq!(
            domain.check_entry(1, PD | pte::PRESENT | pte::WRITABLE),
            Err("maps a pinned page table writable")
        );
        assert_eq!(domain.check_entry(1, PD | pte::PRESENT), Ok(()));
    }

    #[test]
    fn a_lower_table_outside_the_guest_s_ram_is_refused() {
        let test = Test::long_mode();
        assert_eq!(
            test.domain.check_entry(2, 0x2000_0000 | pte::PRESENT),
            Err("points to a page table outside guest RAM")
        );
    }

    #[test]
    fn a_new_lower_table_must_be_mapped_read_only_first() {
        let mut test = Test::long_mode();
        test.pin_page_tables();
        let entry = TABLE | pte::PRESENT | pte::WRITABLE;
        assert_eq!(
            test.domain.check_entry(2, entry),
            Err("points to a new page table the guest still maps writable")
        );
        test.write_u64(PT + 8 * (TABLE >> 12), TABLE | pte::PRESENT);
        assert_eq!(test.domain.check_entry(2, entry), Ok(()));
    }

    #[test]
    fn a_new_lower_table_whose_entries_map_a_pinned_table_writable_is_refused() {
        // Xen validates every entry of a page that becomes a page table (`alloc_l1_table`).
        // Here a guest fills a table while it is writable, maps it read-only (a valid
        // store), then links it: its entry 0 maps the PML4 writable at 4 MiB.
        let mut test = Test::long_mode();
        test.pin_page_tables();
        test.write_u64(TABLE, PML4 | pte::PRESENT | pte::WRITABLE);
        test.write_u64(PT + 8 * (TABLE >> 12), TABLE | pte::PRESENT);
        assert!(
            test.domain
                .check_entry(2, TABLE | pte::PRESENT | pte::WRITABLE)
                .is_err()
        );
    }

    #[test]
    fn the_boot_tables_cannot_be_pinned_while_they_are_mapped_writable() {
        // The boot mapping is one writable 2 MiB page over the tables.
        let test = Test::long_mode();
        assert_eq!(
            test.domain.tables_under(PML4),
            Err("a page table is mapped writable")
        );
    }

    #[test]
    fn a_table_another_domain_maps_writable_through_a_grant_cannot_be_pinned() {
        // Grant 4 names the PT, and a writable mapping of it exists elsewhere: it could be
        // written past the checks (Xen refuses to pin a page with writable references).
        let mut test = Test::long_mode();
        test.read_only_page_tables();
        test.domain.grants.table[4].frame = (PT >> 12) as u32;
        test.domain.grants.mapped[4] = 1;
        test.domain.grants.mapped_writable[4] = 1;
        assert_eq!(
            test.domain.tables_under(PML4),
            Err("a page table is mapped writable by another domain, through a grant")
        );
        test.domain.grants.mapped_writable[4] = 0;
        assert!(test.domain.tables_under(PML4).is_ok(), "read-only is fine");
    }

    #[test]
    fn a_new_table_another_domain_maps_writable_through_a_grant_cannot_be_linked() {
        // The same through the other door: the tables are pinned, TABLE (read-only here,
        // empty) is granted and mapped writable elsewhere, and a PDE would link it.
        let mut test = Test::long_mode();
        test.pin_page_tables();
        test.write_u64(PT + 8 * (TABLE >> 12), TABLE | pte::PRESENT);
        test.domain.grants.table[4].frame = (TABLE >> 12) as u32;
        test.domain.grants.mapped_writable[4] = 1;
        assert_eq!(
            test.domain
                .check_entry(2, TABLE | pte::PRESENT | pte::WRITABLE),
            Err("points to a new page table another domain maps writable, through a grant")
        );
        test.domain.grants.mapped_writable[4] = 0;
        assert!(
            test.domain
                .check_entry(2, TABLE | pte::PRESENT | pte::WRITABLE)
                .is_ok()
        );
    }

    #[test]
    fn the_shared_info_page_cannot_be_pinned_as_a_page_table() {
        let mut test = Test::long_mode();
        test.read_only_page_tables();
        test.domain.events.shared_info = Some(PDPT);
        assert_eq!(test.domain.tables_under(PML4), Err(SHARED_INFO_TABLE));
        let mut tables = alloc::vec::Vec::new();
        assert_eq!(
            test.domain.collect_tables(PDPT, 3, &mut tables),
            Err(SHARED_INFO_TABLE)
        );
    }

    #[test]
    fn tables_under_a_root_are_every_table_reachable_from_it_with_its_level() {
        let mut test = Test::long_mode();
        test.read_only_page_tables();
        assert_eq!(
            test.domain.tables_under(PML4),
            Ok(alloc::vec![(PML4, 4), (PDPT, 3), (PD, 2), (PT, 1)])
        );
    }

    #[test]
    fn a_root_outside_the_guest_s_ram_cannot_be_pinned() {
        let test = Test::long_mode();
        assert_eq!(
            test.domain.tables_under(0x2000_0000),
            Err("a page table is not in guest RAM")
        );
    }

    #[test]
    fn a_walk_goes_on_only_for_its_own_root_and_vmmcall() {
        // The walk kept for one call is not another call's: another root, or the same root
        // at another RIP, starts afresh.
        let mut test = Test::long_mode();
        test.read_only_page_tables();
        let first = test.domain.pin_walk(PML4, 0x1000, 8).expect("a piece");
        assert!(first.fresh && !first.done);
        test.domain.pv.pinning = Some(alloc::boxed::Box::new(Pinning {
            root: PML4,
            rip: 0x1000,
            found: first.found.clone(),
            seen: first.found.iter().map(|&(table, _)| table).collect(),
            stack: first.stack.clone(),
        }));
        let next = test
            .domain
            .pin_walk(PML4, 0x1000, usize::MAX)
            .expect("the rest");
        assert!(!next.fresh && next.done);
        assert!(next.found.iter().all(|found| !first.found.contains(found)));
        for (root, rip) in [(PDPT, 0x1000), (PML4, 0x2000)] {
            let pinning = test.domain.pv.pinning.as_mut().expect("kept");
            (pinning.root, pinning.rip) = (root, rip);
            let step = test.domain.pin_walk(PML4, 0x1000, usize::MAX);
            assert!(step.is_ok_and(|step| step.fresh), "{root:#x} at {rip:#x}");
        }
    }

    #[test]
    fn the_walk_stops_at_a_table_pinned_already() {
        // Everything under a pinned table is pinned: nothing there to read again.
        let mut test = Test::long_mode();
        test.read_only_page_tables();
        test.domain.pv.pinned_tables.insert(PDPT, 3);
        let step = test.domain.pin_walk(PML4, 0, usize::MAX).expect("a walk");
        assert_eq!(step.found, [(PML4, 4)]);
        assert_eq!(
            step.reads,
            4 + 512,
            "the root's mapping and its entries only"
        );
    }

    #[test]
    fn a_table_that_points_back_to_its_root_is_visited_once() {
        // A hostile guest's cycle (PDPT entry 1 → the PML4) must not loop the hypervisor.
        let mut test = Test::long_mode();
        test.read_only_page_tables();
        test.write_u64(PDPT + 8, PML4 | pte::PRESENT);
        let tables = test.domain.tables_under(PML4).expect("the cycle is fine");
        assert_eq!(tables.len(), 4);
    }
}
