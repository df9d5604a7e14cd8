//! The guest page tables a domain pinned (`pin_page_table` hypercall). The rule, as Xen's:
//! a pinned table is never writable by the guest, by any mapping, nor by another domain
//! through a grant. So every write to it faults and the hypervisor checks it
//! (`exit/ptwr.rs`).
//!
//! A page becomes a table in two ways: the walk of `pin_page_table` finds it under the root,
//! or a checked entry of a pinned table links it as a new lower table. Either way it must be
//! fit for it, as in Xen a page takes a page-table type (`get_page_type(PGT_lN_page_table)`)
//! only when it has no other:
//!
//! - it is in guest RAM, and not the shared-info page (the hypervisor writes pending event
//!   bits there, behind the checks);
//! - nothing maps it writable: not its 1:1 address in the tables the guest runs on, not
//!   another domain through a grant, not a leaf entry of a pinned table, nor one of the
//!   tables pinned with it. Xen counts a page's writable mappings (its `PGT_writable_page`
//!   type count) and refuses a page-table type while that count is not 0; here the writable
//!   leaves of the pinned tables are counted by the range each maps ([`WritableLeaves`]),
//!   kept as tables are pinned and as their entries are written, so a page asks three
//!   ranges (its 4 KiB, 2 MiB and 1 GiB ones), never a scan;
//! - it is used at one level only: Xen's `get_page_type` fails when a page of one type is
//!   asked for as another, so a level-4 table linked where a level-1 table goes (its
//!   entries then read as leaves, mapping tables writable) is refused. Xen allows one
//!   exception, a read-only link of a table to one of its own level (`get_linear_pagetable`,
//!   a kernel's window on its own tables); traplab refuses every level mismatch, which is
//!   simpler and costs its guests nothing;
//! - every entry in it passes the rules too (Xen validates each entry of a page that becomes
//!   a table: `alloc_l1_table`, `get_page_from_l1e`): a leaf maps no table writable.
//!
//! Pinning walks every table under a root, and a guest decides how many there are (up to
//! every page of its RAM). So the walk is linear in the tables it finds (a map of those
//! found, never a scan), it reads level-1 tables too (their entries map pages, and a
//! writable one may map a table), it stops at a table pinned already (everything under a
//! pinned table is pinned, a new lower table with its subtree), and it reads at most
//! [`PIN_READS_PER_EXIT`] words of guest memory per exit: a longer walk is a hypercall
//! continuation, as Xen's (`hypercall_create_continuation`): the VMMCALL's RIP stays, the
//! walk so far waits in [`Pinning`], and the VMMCALL runs again for the next piece. Nothing is
//! pinned until the walk is over, so a refusal halfway pins nothing. Between the pieces other
//! domains run; the guest's interrupts wait while its RIP is at the VMMCALL (the walk is one
//! instruction: `domain/interrupts.rs`), but the walk is kept while it runs other code too
//! (gdb moved its RIP), and goes on if the same VMMCALL runs again. The checks of a table
//! found so far hold because nothing may map it writable meanwhile, neither a grant
//! (`exit/vmmcall/grant_table.rs`) nor a checked entry of a pinned table, which may not link
//! it either ([`Domain::check_entry`]), as in Xen the page holds its page-table type from
//! the moment the walk validates it.
//!
//! Not implemented: unpinning (Xen's `MMUEXT_UNPIN_TABLE`): a page stays a table for the
//! domain's life, its writes checked and its writable leaves counted, even once no entry
//! links it any more.
//!
//! The tables the guest runs on are pinned too, or being pinned: the mappings counted are the
//! pinned tables', and of the tables under CR3 only the 1:1 address of a new table is asked,
//! so tables it ran on unpinned could map a pinned one writable anywhere else. So
//! `pin_page_table` pins only the tables CR3 points to, or others once those are pinned, and
//! from then on a MOV to CR3 may load only a pinned root ([`Domain::may_run_on`]; `exit/cr.rs`
//! for a kernel at CPL 0, whose CR3 writes then exit, `exit/privileged.rs` for a PV kernel),
//! as a Xen guest runs on a validated root only.

use super::Domain;
use alloc::collections::BTreeMap;
use alloc::vec::Vec;
use traplab_abi::x86::{self, Cr0Flags, PageTables, pte};

/// The most words of guest memory (page-table entries, and the 4 entries of each found
/// table's own mapping) one `pin_page_table` exit reads: 8 tables' worth of entries, as
/// `exit/ioio.rs` moves at most 4096 elements of a string instruction per exit.
pub const PIN_READS_PER_EXIT: usize = 4096;

/// Present, writable leaf entries of page tables, counted by the memory each maps: its level
/// (1: 4 KiB, 2: 2 MiB, 3: 1 GiB) and its first address. Xen keeps a writable-mapping count
/// per page (`PGT_writable_page`); a 2 MiB leaf would be 512 of those here, so a leaf is one
/// count for its whole range, and a page is mapped writable iff one of the three aligned
/// ranges that hold it has a count.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WritableLeaves {
    counts: BTreeMap<(u8, u64), u32>,
}

impl WritableLeaves {
    /// Count `entry` of a level-`level` table, if it is a present, writable leaf.
    pub fn add(&mut self, level: u8, entry: u64) {
        if let Some(range) = writable_leaf(level, entry) {
            let count = self.counts.entry(range).or_default();
            *count = count.saturating_add(1);
        }
    }

    /// `entry` of a level-`level` table is gone: its count, if it was a writable leaf.
    pub fn remove(&mut self, level: u8, entry: u64) {
        let Some(range) = writable_leaf(level, entry) else {
            return;
        };
        if let Some(count) = self.counts.get_mut(&range) {
            *count -= 1;
            if *count == 0 {
                self.counts.remove(&range);
            }
        }
    }

    /// Add the counts of `other`.
    pub fn extend(&mut self, other: WritableLeaves) {
        for (range, more) in other.counts {
            let count = self.counts.entry(range).or_default();
            *count = count.saturating_add(more);
        }
    }

    /// Does a counted leaf map the page at `page` writable?
    pub fn cover(&self, page: u64) -> bool {
        (1..=3).any(|level| {
            let start = page & pte::ADDRESS & !(leaf_size(level) - 1);
            self.counts.contains_key(&(level, start))
        })
    }
}

/// The range key of a present, writable leaf entry of a level-`level` table, or `None`.
fn writable_leaf(level: u8, entry: u64) -> Option<(u8, u64)> {
    let writable = pte::PRESENT | pte::WRITABLE;
    (entry & writable == writable && is_leaf(level, entry))
        .then(|| (level, entry & pte::ADDRESS & !(leaf_size(level) - 1)))
}

/// Tables to pin at once, each with its level, and the writable leaves among their entries:
/// what a `pin_page_table` or a checked entry decided (`Effect::PinPageTables`), so that
/// applying it walks nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NewTables {
    pub tables: Vec<(u64, u8)>,
    pub leaves: WritableLeaves,
}

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
    /// The same tables → their level, to ask in O(log n) whether one is known, at which
    /// level, and whether a leaf maps one.
    pub seen: BTreeMap<u64, u8>,
    /// The writable leaves of the tables found so far.
    pub leaves: WritableLeaves,
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

/// What one exit's piece of a pin walk did: the tables it found and their writable leaves
/// (after those of `Pinning`, unless it starts `fresh`), where the walk stands now, and
/// whether it is over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PinStep {
    pub fresh: bool,
    pub root: u64,
    pub rip: u64,
    pub found: Vec<(u64, u8)>,
    pub leaves: WritableLeaves,
    pub stack: Vec<WalkFrame>,
    /// Words of guest memory read.
    pub reads: usize,
    pub done: bool,
}

/// Why a page may not become a page table (the rules: the module's doc), in the words of
/// each way in: the walk of `pin_page_table`, and a checked entry linking a new table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Unfit {
    /// The hypervisor writes pending event bits there (`evtchn.rs`), which would change
    /// entries behind the checks (`set_shared_info` refuses the other way round).
    SharedInfo,
    /// Writable at its 1:1 address, in the tables the guest runs on.
    MappedWritable,
    /// Another domain maps it writable, through a grant.
    GrantedWritable,
    /// A leaf of a pinned table maps it writable.
    PinnedLeaf,
    /// A leaf of a table pinned in the same go maps it writable.
    NewLeaf,
    /// Known as a table of another level.
    OtherLevel,
}

impl Unfit {
    fn pinning(self) -> &'static str {
        match self {
            Unfit::SharedInfo => {
                "a page table is the shared-info page, where the hypervisor writes pending events"
            }
            Unfit::MappedWritable => "a page table is mapped writable",
            Unfit::GrantedWritable => {
                "a page table is mapped writable by another domain, through a grant"
            }
            Unfit::PinnedLeaf => "a page table is mapped writable by an entry of a pinned table",
            Unfit::NewLeaf => "a page table is mapped writable by an entry of a table being pinned",
            Unfit::OtherLevel => "a page table is linked at two levels",
        }
    }

    fn linking(self) -> &'static str {
        match self {
            Unfit::SharedInfo => {
                "points to a new page table that is the shared-info page, where the hypervisor writes pending events"
            }
            Unfit::MappedWritable => "points to a new page table the guest still maps writable",
            Unfit::GrantedWritable => {
                "points to a new page table another domain maps writable, through a grant"
            }
            Unfit::PinnedLeaf => {
                "points to a new page table that an entry of a pinned table maps writable"
            }
            Unfit::NewLeaf => {
                "points to a new page table that an entry of the new tables maps writable"
            }
            Unfit::OtherLevel => "points to a page table of another level",
        }
    }
}

/// A checked entry's new tables so far: what will be pinned, and each one's level.
#[derive(Default)]
struct Subtree {
    new: NewTables,
    levels: BTreeMap<u64, u8>,
}

/// Why a checked entry is refused that maps writable a table the walk under way has found:
/// as in Xen, where the page holds a page-table type from the moment the walk validates it
/// (`get_page_type`), so no writable mapping of it can be made (a grant is refused the same
/// way, `exit/vmmcall/grant_table.rs`).
const BEING_PINNED_MAPPED: &str =
    "maps writable a page table that the pin_page_table under way has checked";
/// Why a checked entry is refused that links a table the walk under way has found: the walk
/// pins it, with its leaves, when it ends (pinned now as well, its writable leaves would be
/// counted twice); until then it is not a table to link (Xen's is partially validated).
const BEING_PINNED_LINKED: &str =
    "points to a page table that the pin_page_table under way has not finished pinning";

/// Why a checked entry that links a new table is refused for an entry inside it.
const NEW_TABLE_ENTRY_REFUSED: &str = "points to a new page table with an entry these rules refuse";

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

    /// May the domain run on the page tables under `root` (a MOV to CR3)? Before it pins any,
    /// on any; once it pinned some, only on a root it pinned; while its first pin is under
    /// way, only on the root being pinned. Tables it did not pin could map the pinned ones
    /// writable, and its stores through them would change them unchecked. Xen's guests run on
    /// a validated root only (`new_guest_cr3` takes a page-table type for it, "Bad CR3"
    /// otherwise); traplab validates by pinning.
    pub fn may_run_on(&self, root: u64) -> bool {
        let root = root & pte::ADDRESS;
        match (&self.pv.pinning, self.pv.pinned_tables.is_empty()) {
            (None, true) => true,
            // A first pin under way walks CR3's own tables (`pin_refusal`): those only.
            (Some(pinning), true) => pinning.root == root,
            // Something is pinned: a pinned root, not one a walk under way may yet refuse.
            (_, false) => self.pinned_level(root) == Some(4),
        }
    }

    /// Is the page at guest-physical `page` mapped writable at its 1:1 address? (The
    /// tables the guest runs on may not be pinned yet: their identity map is asked here, the
    /// pinned tables' other mappings by [`WritableLeaves`].)
    fn mapped_writable(&self, page: u64) -> bool {
        // A PV kernel's tables are long mode's (`pin_page_table` walks four levels).
        let save = &self.vcpu.vmcb.save;
        let tables = PageTables::long_mode(save.cr3, save.efer);
        x86::translate(tables, page, self.memory.physical_address_bits(), |gpa| {
            self.memory.read_u64_physical(gpa).ok()
        })
        .is_ok_and(|translation| translation.writable)
    }

    /// May the page at `table` become a page table? `new_leaf`: a leaf of the tables that
    /// become tables with it maps it writable. (The rules: the module's doc; the level is the
    /// caller's to compare, as only it knows the level it meets the page at.)
    fn unfit_as_table(&self, table: u64, new_leaf: bool) -> Option<Unfit> {
        if self.mapped_writable(table) {
            Some(Unfit::MappedWritable)
        } else if self.grants.mapped_writable_by_others(table) {
            Some(Unfit::GrantedWritable)
        } else if Some(table) == self.events.shared_info {
            Some(Unfit::SharedInfo)
        } else if self.pv.writable_leaves.cover(table) {
            Some(Unfit::PinnedLeaf)
        } else if new_leaf {
            Some(Unfit::NewLeaf)
        } else {
            None
        }
    }

    /// The tables under `root` (a level-4 table), each with its level, and their writable
    /// leaves, in one go: what `pin_page_table` pins (but for tables pinned already, where it
    /// stops). `Err` with the reason when a table is unfit (the module's doc).
    pub fn tables_under(&self, root: u64) -> Result<NewTables, &'static str> {
        if let Some(why) = self.root_refusal(root) {
            return Err(why);
        }
        let step = self.walk(root, 0, None, usize::MAX)?;
        Ok(NewTables {
            tables: step.found,
            leaves: step.leaves,
        })
    }

    /// The next piece of the `pin_page_table` of `root` by the VMMCALL at `rip`: it goes on
    /// from the walk kept in `pv.pinning` when that is this call's, else starts afresh. Each
    /// piece asks again whether the domain may pin (`pin_refusal`): gdb may have
    /// changed its registers in between (the guest cannot: its CR0 and CR3 writes exit).
    pub fn pin_walk(&self, root: u64, rip: u64, budget: usize) -> Result<PinStep, &'static str> {
        if let Some(why) = self.root_refusal(root).or_else(|| self.pin_refusal(root)) {
            return Err(why);
        }
        let pending = self
            .pv
            .pinning
            .as_deref()
            .filter(|pinning| pinning.root == root && pinning.rip == rip);
        self.walk(root, rip, pending, budget)
    }

    /// Why the domain may not pin the tables under `root` now, whatever they hold, if it may
    /// not. A pinned table is read-only to the guest, and at CPL 0 read-only holds only while
    /// CR0.WP is set (AMD APM vol. 2, 3.1.1): with WP clear the kernel's own stores would
    /// change its tables without a fault. The walk reads long mode's four-level tables. And
    /// the tables the domain runs on are pinned first (or are these), since the walk asks
    /// them only whether they map a new table writable at its 1:1 address (the module's doc).
    /// Once something is pinned the domain keeps all three: `exit/cr.rs` refuses a CR0 write
    /// that clears WP or PG and a CR3 write of a root not pinned ([`Domain::may_run_on`]).
    fn pin_refusal(&self, root: u64) -> Option<&'static str> {
        if self.vcpu.vmcb.save.cr0 & Cr0Flags::WRITE_PROTECT.bits() == 0 {
            return Some(
                "CR0.WP is clear, so the kernel's own writes ignore read-only pages and would change pinned tables without a fault, unchecked (set CR0.WP first)",
            );
        }
        if !self.vcpu.long_mode() {
            return Some(
                "the domain is not in long mode, and pinning walks long mode's four-level tables",
            );
        }
        let running_on = self.vcpu.vmcb.save.cr3 & pte::ADDRESS;
        if running_on != root && self.pinned_level(running_on) != Some(4) {
            return Some(
                "the domain runs on page tables that are not pinned (CR3's root), which could map these writable anywhere but at their 1:1 address: pin those first, as a Xen guest runs on a validated root only",
            );
        }
        None
    }

    /// Why `root` is no address a table could be pinned at, if it is not: a table's address
    /// is page-aligned, with no bit beyond the address field (as MOV CR3 takes a pinned
    /// root), not one with bits dropped silently; and it is in guest RAM.
    fn root_refusal(&self, root: u64) -> Option<&'static str> {
        if root & !pte::ADDRESS != 0 {
            Some("the root is no page table's address (page-aligned, bits 51:12)")
        } else if root >= self.memory.size() {
            Some("a page table is not in guest RAM")
        } else {
            None
        }
    }

    /// Walk the tables under `root`, from where `pending` stopped (or from the root), until
    /// the walk is over or `budget` words have been read. (Its callers check the root itself
    /// first, `root_refusal`.)
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
            leaves: WritableLeaves::default(),
            stack: Vec::new(),
            reads: 0,
            done: false,
        };
        let mut seen = BTreeMap::new();
        match pending {
            Some(pinning) => step.stack = pinning.stack.clone(),
            None => {
                // Pinned already: refused, as Xen's MMUEXT_PIN_L4_TABLE refuses a page whose
                // pin bit is set ("already pinned", -EINVAL).
                if let Some(&level) = self.pv.pinned_tables.get(&root) {
                    return Err(match level {
                        4 => "the root is pinned already",
                        _ => Unfit::OtherLevel.pinning(),
                    });
                }
                self.found(&mut step, &mut seen, pending, root, 4)?;
            }
        }
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
            if entry & pte::PRESENT == 0 {
                continue;
            }
            if is_leaf(level, entry) {
                self.leaf(&mut step, &seen, pending, level, entry)?;
                continue;
            }
            let target = entry & pte::ADDRESS;
            if target >= self.memory.size() {
                return Err("a page table is not in guest RAM");
            }
            let known = self
                .pv
                .pinned_tables
                .get(&target)
                .or_else(|| seen.get(&target))
                .or_else(|| pending.and_then(|pinning| pinning.seen.get(&target)));
            match known {
                None => self.found(&mut step, &mut seen, pending, target, level - 1)?,
                Some(&known) if known != level - 1 => return Err(Unfit::OtherLevel.pinning()),
                // Pinned already (so is everything under it), or found before: read once.
                Some(_) => {}
            }
        }
        step.done = step.stack.is_empty();
        // A walk in pieces: other domains ran in between, and a table found in an earlier
        // piece was looked at then. `map_grant_ref` refuses them a writable mapping of it;
        // looked at again before all is pinned, at one look-up per such grant.
        if let Some(pinning) = pending.filter(|_| step.done)
            && self
                .grants
                .pages_mapped_writable_by_others()
                .any(|page| seen.contains_key(&page) || pinning.seen.contains_key(&page))
        {
            return Err(Unfit::GrantedWritable.pinning());
        }
        Ok(step)
    }

    /// The walk found a new `table` at `level`: it must be fit to be one (4 reads: the
    /// guest's page walk to it), and its entries are read next, a level-1 table's too (its
    /// leaves may map a table writable).
    fn found(
        &self,
        step: &mut PinStep,
        seen: &mut BTreeMap<u64, u8>,
        pending: Option<&Pinning>,
        table: u64,
        level: u8,
    ) -> Result<(), &'static str> {
        step.reads += 4;
        // A leaf read earlier in the walk may map this table: the other half of `leaf`.
        let new_leaf =
            step.leaves.cover(table) || pending.is_some_and(|pinning| pinning.leaves.cover(table));
        if let Some(unfit) = self.unfit_as_table(table, new_leaf) {
            return Err(unfit.pinning());
        }
        seen.insert(table, level);
        step.found.push((table, level));
        step.stack.push(WalkFrame {
            table,
            level,
            next: 0,
        });
        Ok(())
    }

    /// The walk read a leaf `entry` at `level`: if it is writable, it must map no pinned
    /// table and no table found so far (a table found later asks the leaves in `found`),
    /// and it is counted with the new tables.
    fn leaf(
        &self,
        step: &mut PinStep,
        seen: &BTreeMap<u64, u8>,
        pending: Option<&Pinning>,
        level: u8,
        entry: u64,
    ) -> Result<(), &'static str> {
        let Some((_, start)) = writable_leaf(level, entry) else {
            return Ok(());
        };
        let range = start..start + leaf_size(level);
        if self.maps_a_pinned_table(range.clone()) {
            return Err("an entry maps a pinned page table writable");
        }
        if seen.range(range.clone()).next().is_some()
            || pending.is_some_and(|pinning| pinning.seen.range(range).next().is_some())
        {
            return Err(Unfit::NewLeaf.pinning());
        }
        step.leaves.add(level, entry);
        Ok(())
    }

    /// May `entry` go into a pinned level-`level` table? (The rules: `exit/ptwr.rs`.) `Ok`
    /// with the new tables it links, to be pinned with it, and their writable leaves.
    pub fn check_entry(&self, level: u8, entry: u64) -> Result<NewTables, &'static str> {
        let mut subtree = Subtree::default();
        self.check_entry_once(level, entry, &mut subtree)?;
        Ok(subtree.new)
    }

    /// Do the entries of the new level-`level` table at `table` (and of the new tables under
    /// it) pass the rules? Its writable leaves are counted into `subtree`, and each must map
    /// none of the new tables found so far (a table found later asks the leaves in
    /// `check_entry_once`). A table that cannot be read does not pass.
    fn check_new_table(
        &self,
        table: u64,
        level: u8,
        subtree: &mut Subtree,
    ) -> Result<(), &'static str> {
        for index in 0..512u64 {
            let entry = self
                .memory
                .read_u64_physical(table + index * 8)
                .map_err(|_| NEW_TABLE_ENTRY_REFUSED)?;
            if let Some((_, start)) = writable_leaf(level, entry) {
                let range = start..start + leaf_size(level);
                if subtree.levels.range(range).next().is_some() {
                    return Err(Unfit::NewLeaf.linking());
                }
                subtree.new.leaves.add(level, entry);
            }
            self.check_entry_once(level, entry, subtree)
                .map_err(|_| NEW_TABLE_ENTRY_REFUSED)?;
        }
        Ok(())
    }

    /// [`Domain::check_entry`], with the new tables found so far in `subtree`.
    fn check_entry_once(
        &self,
        level: u8,
        entry: u64,
        subtree: &mut Subtree,
    ) -> Result<(), &'static str> {
        if entry & pte::PRESENT == 0 {
            return Ok(());
        }
        let target = entry & pte::ADDRESS;
        if !is_leaf(level, entry) {
            if target >= self.memory.size() {
                return Err("points to a page table outside guest RAM");
            }
            // A table pinned already, or new and met before in this check (a guest may link
            // one table many times): only at its own level (Xen's get_page_type fails on a
            // type mismatch; see the module's doc for the linear tables Xen allows).
            let known = self
                .pv
                .pinned_tables
                .get(&target)
                .or_else(|| subtree.levels.get(&target));
            if let Some(&known) = known {
                return match known == level - 1 {
                    true => Ok(()),
                    false => Err(Unfit::OtherLevel.linking()),
                };
            }
            if self.being_pinned(target..target + 0x1000) {
                return Err(BEING_PINNED_LINKED);
            }
            if let Some(unfit) = self.unfit_as_table(target, subtree.new.leaves.cover(target)) {
                return Err(unfit.linking());
            }
            subtree.levels.insert(target, level - 1);
            subtree.new.tables.push((target, level - 1));
            // A new table becomes pinned, so every entry in it must pass these rules too (as
            // Xen validates a page when it becomes a page table): else the guest could fill
            // it while it was writable with an entry mapping a pinned table writable.
            self.check_new_table(target, level - 1, subtree)?;
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
        if entry & pte::WRITABLE != 0 && self.maps_a_pinned_table(start..start + size) {
            return Err("maps a pinned page table writable");
        }
        if entry & pte::WRITABLE != 0 && self.being_pinned(start..start + size) {
            return Err(BEING_PINNED_MAPPED);
        }
        Ok(())
    }

    /// Does the guest-physical `range` hold a table that the `pin_page_table` under way has
    /// found? Its checks were made when the walk read it, and hold only while nothing can
    /// write it (the module's doc): a kept walk goes on at its VMMCALL even after the guest
    /// ran other code meanwhile.
    fn being_pinned(&self, range: core::ops::Range<u64>) -> bool {
        self.pv
            .pinning
            .as_ref()
            .is_some_and(|pinning| pinning.seen.range(range).next().is_some())
    }

    /// Does the guest-physical `range` a leaf maps hold a pinned table? A range query in the
    /// sorted map, not a scan of every pinned table: it runs for each leaf of a table that
    /// is pinned or linked.
    fn maps_a_pinned_table(&self, range: core::ops::Range<u64>) -> bool {
        self.pv.pinned_tables.range(range).next().is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{DATA, PD, PDPT, PML4, PT, SHARED_INFO, Test};
    use alloc::vec;

    const TABLE: u64 = 0x1_4000;
    /// More free pages of the first 2 MiB (mapped with 4 KiB pages), for more new tables.
    const TABLE_2: u64 = 0x1_5000;
    const TABLE_3: u64 = 0x1_6000;

    /// The tables are pinned, and `tables` are mapped read-only at their 1:1 addresses (the
    /// checked stores a guest makes before it links them).
    fn pinned_with_read_only(tables: &[u64]) -> Test {
        let mut test = Test::long_mode();
        test.pin_page_tables();
        for &table in tables {
            test.write_pinned_entry(PT + 8 * (table >> 12), table | pte::PRESENT);
        }
        test
    }

    #[test]
    fn an_entry_is_a_leaf_at_level_1_or_with_ps_at_levels_2_and_3() {
        // AMD APM vol. 2, 5.3: PS in a PDE maps 2 MiB, in a PDPTE 1 GiB; PML4 has no PS.
        assert!(is_leaf(1, 0));
        assert!(is_leaf(2, pte::HUGE) && is_leaf(3, pte::HUGE));
        assert!(!is_leaf(2, 0) && !is_leaf(4, pte::HUGE));
    }

    #[test]
    fn a_writable_leaf_covers_its_whole_range_and_is_counted_per_entry() {
        let mut leaves = WritableLeaves::default();
        let writable = pte::PRESENT | pte::WRITABLE;
        leaves.add(2, 0x40_0000 | writable | pte::HUGE);
        assert!(leaves.cover(0x40_0000) && leaves.cover(0x5f_f000));
        assert!(!leaves.cover(0x60_0000) && !leaves.cover(0x3f_f000));
        // Read-only, not present, or not a leaf: not counted.
        for (level, entry) in [
            (1, DATA | pte::PRESENT),
            (1, DATA | pte::WRITABLE),
            (2, DATA | writable),
        ] {
            leaves.add(level, entry);
        }
        assert!(!leaves.cover(DATA));
        // Two entries map DATA writable: it stays covered until both are gone.
        leaves.add(1, DATA | writable);
        leaves.add(1, DATA | writable);
        leaves.remove(1, DATA | writable);
        assert!(leaves.cover(DATA));
        leaves.remove(1, DATA | writable);
        assert!(!leaves.cover(DATA));
        // An entry never counted is no count to take away.
        leaves.remove(1, DATA | writable);
        assert!(!leaves.cover(DATA));
    }

    #[test]
    fn a_not_present_entry_is_always_accepted() {
        // The CPU ignores every other bit of a not-present entry.
        let test = Test::long_mode();
        assert_eq!(
            test.domain.check_entry(1, !pte::PRESENT),
            Ok(NewTables::default())
        );
    }

    #[test]
    fn a_leaf_that_maps_memory_outside_the_guest_s_ram_is_refused() {
        let test = Test::long_mode();
        assert_eq!(
            test.domain.check_entry(1, 0x2000_0000 | pte::PRESENT),
            Err("maps memory outside guest RAM")
        );
        assert_eq!(
            test.domain.check_entry(1, DATA | pte::PRESENT),
            Ok(NewTables::default())
        );
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
        assert_eq!(
            domain.check_entry(1, PD | pte::PRESENT),
            Ok(NewTables::default())
        );
    }

    #[test]
    fn a_table_the_pin_under_way_has_found_can_be_neither_mapped_writable_nor_linked() {
        // A pin_page_table's walk is kept, and the guest runs other code (gdb moved its RIP
        // off the VMMCALL) that writes its pinned tables: an entry that maps writable a table
        // the walk checked already (it could then change it behind the checks, and the same
        // VMMCALL would go on with the walk) or that links it is refused.
        let mut test = pinned_with_read_only(&[TABLE]);
        test.domain.pv.pinning = Some(alloc::boxed::Box::new(Pinning {
            root: TABLE,
            found: vec![(TABLE, 4)],
            seen: [(TABLE, 4)].into_iter().collect(),
            ..Pinning::default()
        }));
        let domain = &test.domain;
        assert_eq!(
            domain.check_entry(1, TABLE | pte::PRESENT | pte::WRITABLE),
            Err(BEING_PINNED_MAPPED)
        );
        assert_eq!(
            domain.check_entry(1, TABLE | pte::PRESENT),
            Ok(NewTables::default()),
            "read-only is fine"
        );
        assert_eq!(
            domain.check_entry(4, TABLE | pte::PRESENT | pte::WRITABLE),
            Err(BEING_PINNED_LINKED)
        );
        // Once no walk is under way, it is a table like another to link.
        test.domain.pv.pinning = None;
        assert!(
            test.domain
                .check_entry(4, TABLE | pte::PRESENT | pte::WRITABLE)
                .is_ok()
        );
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
        test.write_pinned_entry(PT + 8 * (TABLE >> 12), TABLE | pte::PRESENT);
        // Accepted, with the new table to pin (it is empty: no writable leaf).
        let new = NewTables {
            tables: vec![(TABLE, 1)],
            leaves: WritableLeaves::default(),
        };
        assert_eq!(test.domain.check_entry(2, entry), Ok(new));
    }

    #[test]
    fn a_new_lower_table_whose_entries_map_a_pinned_table_writable_is_refused() {
        // Xen validates every entry of a page that becomes a page table (`alloc_l1_table`).
        // Here a guest fills a table while it is writable, maps it read-only (a valid
        // store), then links it: its entry 0 maps the PML4 writable at 4 MiB.
        let mut test = Test::long_mode();
        test.pin_page_tables();
        test.write_u64(TABLE, PML4 | pte::PRESENT | pte::WRITABLE);
        test.write_pinned_entry(PT + 8 * (TABLE >> 12), TABLE | pte::PRESENT);
        assert_eq!(
            test.domain
                .check_entry(2, TABLE | pte::PRESENT | pte::WRITABLE),
            Err(NEW_TABLE_ENTRY_REFUSED)
        );
    }

    #[test]
    fn a_new_table_comes_with_its_subtree_and_their_writable_leaves() {
        // A new PD (TABLE) whose entry 0 links a new PT (TABLE_2), which maps DATA
        // writable: both are pinned with the entry, and DATA counts as mapped writable.
        let mut test = pinned_with_read_only(&[TABLE, TABLE_2]);
        test.write_u64(TABLE, TABLE_2 | pte::PRESENT | pte::WRITABLE);
        test.write_u64(TABLE_2, DATA | pte::PRESENT | pte::WRITABLE);
        let new = test
            .domain
            .check_entry(3, TABLE | pte::PRESENT | pte::WRITABLE)
            .expect("a valid subtree");
        assert_eq!(new.tables, [(TABLE, 2), (TABLE_2, 1)]);
        assert!(new.leaves.cover(DATA) && !new.leaves.cover(TABLE));
    }

    #[test]
    fn a_new_table_that_a_pinned_table_also_maps_writable_is_refused() {
        // Xen: a page cannot take a page-table type while it has writable mappings (its
        // PGT_writable_page type count). The guest made TABLE read-only at its 1:1 address,
        // but entry 5 of the pinned PT maps it writable at 0x5000 too.
        let mut test = pinned_with_read_only(&[TABLE]);
        test.write_pinned_entry(PT + 8 * 5, TABLE | pte::PRESENT | pte::WRITABLE);
        let link = TABLE | pte::PRESENT | pte::WRITABLE;
        assert_eq!(
            test.domain.check_entry(2, link),
            Err(Unfit::PinnedLeaf.linking())
        );
        // Unmapped at 0x5000 (a checked store): the count is 0 again, and the link is fine.
        test.write_pinned_entry(PT + 8 * 5, 0);
        assert!(test.domain.check_entry(2, link).is_ok());
    }

    #[test]
    fn a_new_table_that_the_new_tables_map_writable_is_refused() {
        // Within one new subtree, a leaf read after the table it maps (TABLE_2's entry 1
        // maps the new PD, TABLE) and one read before it (TABLE_2's entry 0 maps TABLE_3,
        // which TABLE's entry 1 links next).
        let link = TABLE | pte::PRESENT | pte::WRITABLE;
        for (leaf, maps) in [(1, TABLE), (0, TABLE_3)] {
            let mut test = pinned_with_read_only(&[TABLE, TABLE_2, TABLE_3]);
            test.write_u64(TABLE, TABLE_2 | pte::PRESENT | pte::WRITABLE);
            test.write_u64(TABLE + 8, TABLE_3 | pte::PRESENT | pte::WRITABLE);
            test.write_u64(TABLE_2 + 8 * leaf, maps | pte::PRESENT | pte::WRITABLE);
            assert!(test.domain.check_entry(3, link).is_err(), "{maps:#x}");
            // Read-only, the same leaf is fine.
            test.write_u64(TABLE_2 + 8 * leaf, maps | pte::PRESENT);
            assert!(test.domain.check_entry(3, link).is_ok(), "{maps:#x}");
        }
        // The new table's own entry maps it writable: refused by name.
        let mut test = pinned_with_read_only(&[TABLE]);
        test.write_u64(TABLE + 8, TABLE | pte::PRESENT | pte::WRITABLE);
        assert_eq!(
            test.domain.check_entry(2, link),
            Err(Unfit::NewLeaf.linking())
        );
    }

    #[test]
    fn a_pinned_table_cannot_be_linked_at_another_level() {
        // Xen's get_page_type fails on a type mismatch: the PML4 linked where a PT goes
        // would have its entries read as leaves, its entry 0 mapping the PDPT writable.
        let mut test = Test::long_mode();
        test.pin_page_tables();
        let domain = &test.domain;
        let link = pte::PRESENT | pte::WRITABLE;
        assert_eq!(
            domain.check_entry(2, PML4 | link),
            Err(Unfit::OtherLevel.linking())
        );
        assert_eq!(
            domain.check_entry(4, PT | link),
            Err(Unfit::OtherLevel.linking())
        );
        // At its own level, a pinned table may be linked again: nothing new to pin.
        assert_eq!(domain.check_entry(2, PT | link), Ok(NewTables::default()));
    }

    #[test]
    fn a_new_table_cannot_be_met_at_two_levels() {
        // A new PD (TABLE) links the pinned PML4 as a PT: refused, for an entry of the new
        // table.
        let mut test = pinned_with_read_only(&[TABLE, TABLE_2]);
        test.write_u64(TABLE, PML4 | pte::PRESENT);
        let link = TABLE | pte::PRESENT | pte::WRITABLE;
        assert_eq!(
            test.domain.check_entry(3, link),
            Err(NEW_TABLE_ENTRY_REFUSED)
        );
        // TABLE links itself: met as a PD, then as a PT.
        test.write_u64(TABLE, TABLE | pte::PRESENT);
        assert_eq!(
            test.domain.check_entry(3, link),
            Err(NEW_TABLE_ENTRY_REFUSED)
        );
        // Twice at one level is fine: one table to pin.
        test.write_u64(TABLE, TABLE_2 | pte::PRESENT);
        test.write_u64(TABLE + 8, TABLE_2 | pte::PRESENT);
        let new = test
            .domain
            .check_entry(3, link)
            .expect("one PT, linked twice");
        assert_eq!(new.tables, [(TABLE, 2), (TABLE_2, 1)]);
    }

    #[test]
    fn the_shared_info_page_cannot_be_linked_as_a_new_table() {
        // The hypervisor sets pending bits there (`evtchn.rs`): entries that change behind
        // the checks. Mapped read-only and empty, it is still refused.
        let mut test = pinned_with_read_only(&[SHARED_INFO]);
        test.domain.events.shared_info = Some(SHARED_INFO);
        assert_eq!(
            test.domain
                .check_entry(2, SHARED_INFO | pte::PRESENT | pte::WRITABLE),
            Err(Unfit::SharedInfo.linking())
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
        let mut test = pinned_with_read_only(&[TABLE]);
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
        assert_eq!(
            test.domain.tables_under(PML4),
            Err(Unfit::SharedInfo.pinning())
        );
    }

    #[test]
    fn tables_under_a_root_are_every_table_reachable_from_it_with_its_level() {
        let mut test = Test::long_mode();
        test.read_only_page_tables();
        let new = test.domain.tables_under(PML4).expect("read-only tables");
        assert_eq!(new.tables, [(PML4, 4), (PDPT, 3), (PD, 2), (PT, 1)]);
        // Their writable leaves: the PT's 4 KiB pages (DATA), the PD's 2 MiB pages (from
        // 2 MiB on); the tables themselves are read-only.
        assert!(new.leaves.cover(DATA) && new.leaves.cover(0x20_0000));
        assert!(
            new.tables
                .iter()
                .all(|&(table, _)| !new.leaves.cover(table))
        );
    }

    #[test]
    fn a_second_writable_mapping_of_a_table_stops_the_pin() {
        // The 1:1 mapping of every table is read-only, but entry 5 of the PT maps the PML4
        // writable at 0x5000: the walk reads the PT's leaves and refuses (Xen validates
        // every entry of a new level-1 table, get_page_from_l1e).
        let mut test = Test::long_mode();
        test.read_only_page_tables();
        test.write_u64(PT + 8 * 5, PML4 | pte::PRESENT | pte::WRITABLE);
        assert_eq!(
            test.domain.tables_under(PML4),
            Err(Unfit::NewLeaf.pinning())
        );
        test.write_u64(PT + 8 * 5, PML4 | pte::PRESENT);
        assert!(test.domain.tables_under(PML4).is_ok(), "read-only is fine");
    }

    #[test]
    fn a_large_page_read_before_the_table_it_maps_stops_the_pin() {
        // PD entry 2 maps 8–10 MiB writable at 4 MiB (a 2 MiB page); entry 3 links a PT at
        // 8 MiB, whose 1:1 mapping (PD entry 4) is read-only. The leaf is read first: the
        // table, found after, asks the leaves read so far.
        let mut test = Test::long_mode();
        test.read_only_page_tables();
        let table = 0x80_0000;
        test.write_u64(PD + 8 * 2, table | pte::PRESENT | pte::WRITABLE | pte::HUGE);
        test.write_u64(PD + 8 * 3, table | pte::PRESENT | pte::WRITABLE);
        test.write_u64(PD + 8 * 4, table | pte::PRESENT | pte::HUGE);
        assert_eq!(
            test.domain.tables_under(PML4),
            Err(Unfit::NewLeaf.pinning())
        );
        test.write_u64(PD + 8 * 2, table | pte::PRESENT | pte::HUGE);
        let new = test.domain.tables_under(PML4).expect("read-only is fine");
        assert!(new.tables.contains(&(table, 1)));
    }

    #[test]
    fn a_second_pin_counts_the_first_one_s_leaves_and_tables() {
        // Two roots: the boot tables are pinned; a second root (TABLE) links a new PDPT
        // (TABLE_2). Mapped writable by a pinned PT's entry, TABLE cannot be pinned; and a
        // 1 GiB page in the new PDPT may not map the pinned tables writable.
        let mut test = pinned_with_read_only(&[TABLE, TABLE_2]);
        test.write_u64(TABLE, TABLE_2 | pte::PRESENT | pte::WRITABLE);
        test.write_pinned_entry(PT + 8 * 5, TABLE | pte::PRESENT | pte::WRITABLE);
        assert_eq!(
            test.domain.tables_under(TABLE),
            Err(Unfit::PinnedLeaf.pinning())
        );
        test.write_pinned_entry(PT + 8 * 5, 0);
        test.write_u64(TABLE_2, pte::PRESENT | pte::WRITABLE | pte::HUGE);
        assert_eq!(
            test.domain.tables_under(TABLE),
            Err("an entry maps a pinned page table writable")
        );
        test.write_u64(TABLE_2, pte::PRESENT | pte::HUGE);
        let new = test.domain.tables_under(TABLE).expect("read-only is fine");
        assert_eq!(new.tables, [(TABLE, 4), (TABLE_2, 3)]);
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
            seen: first.found.iter().copied().collect(),
            leaves: first.leaves.clone(),
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
    fn a_table_pinned_at_one_level_cannot_be_pinned_at_another() {
        // Found under the new root at level 2, the PDPT is pinned at level 3; and the PT
        // cannot be a root.
        let mut test = Test::long_mode();
        test.read_only_page_tables();
        test.domain.pv.pinned_tables.insert(PD, 3);
        assert_eq!(
            test.domain.tables_under(PML4),
            Err(Unfit::OtherLevel.pinning())
        );
        test.domain.pv.pinned_tables.insert(PT, 1);
        assert_eq!(
            test.domain.tables_under(PT),
            Err(Unfit::OtherLevel.pinning())
        );
    }

    #[test]
    fn a_table_that_points_back_to_its_root_is_refused_not_walked_again() {
        // A hostile guest's cycle (PDPT entry 1 → the PML4; or the PML4's entry 1 → itself,
        // a recursive mapping) links a table at a second level: refused at once (Xen allows
        // the second as a read-only linear table; traplab does not), and the walk ends.
        for (at, level) in [(PDPT + 8, "PDPT"), (PML4 + 8, "PML4")] {
            let mut test = Test::long_mode();
            test.read_only_page_tables();
            test.write_u64(at, PML4 | pte::PRESENT);
            assert_eq!(
                test.domain.tables_under(PML4),
                Err(Unfit::OtherLevel.pinning()),
                "{level}"
            );
        }
    }
}
