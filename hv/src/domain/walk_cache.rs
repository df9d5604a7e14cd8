//! The hypervisor's own TLB for the guest's page walks, checked at every use.
//!
//! Every exit reads the instruction at RIP, and most read or write guest memory: each time,
//! a walk of the guest's page tables (four levels in long mode, AMD APM vol. 2, 5.3; three
//! or two outside it, 5.2), each entry a guest-physical read. A CPU keeps the result in its
//! TLB until the guest flushes it; the hypervisor cannot do that, since it does not see the
//! guest's page-table writes or its INVLPGs (they do not exit). So it remembers a walk
//! *with the entries it read*: the next walk of the same page through the same tables (CR3
//! and format) reads those entries again, from where they were, and if each still holds
//! the value it had, the walk would take the same path to the same
//! page — the remembered answer is the answer, without the rest of the walk (the reserved-bit
//! and presence checks, the address arithmetic). If any entry changed, it walks again.
//! Correct by construction: an entry is a value in guest memory, and the walk depends on
//! nothing else.

use super::memory::PAGE_SIZE;
use core::cell::Cell;
use traplab_abi::x86::{PageTableFormat, PageTables};

/// How many walks it keeps, direct-mapped by virtual page (a power of two).
const WALKS: usize = 4;

/// The deepest walk: four levels (long mode's 4-level paging).
const LEVELS: usize = 4;

/// One walk: where it went and what it read on the way. Each part in a `Cell` of its own
/// (reading guest memory takes `&self`), so that a lookup reads the parts it checks, one by
/// one, and stops at the first that differs: a `Cell` of the whole walk is read whole, a
/// copy of a hundred bytes at every exit's instruction fetch.
#[derive(Debug, Default)]
struct Walk {
    /// The tables walked ([`tables_key`]; `(0, 0)`: an empty slot).
    tables: Cell<(u64, u8)>,
    /// The 4 KiB virtual page walked, with bit 0 set (an empty slot has it clear).
    page: Cell<u64>,
    /// The guest-physical 4 KiB page it leads to.
    physical: Cell<u64>,
    /// The entries read, top level first: `(guest-physical address, value)`, the 8-byte
    /// word around a legacy 4-byte entry.
    entries: [Cell<(u64, u64)>; LEVELS],
    /// How many of `entries` the walk read (a large page ends it early).
    levels: Cell<u8>,
}

/// Page tables as two numbers that are equal when the tables are: CR3, and their format and
/// NX in a byte that is never 0 (an empty slot's).
fn tables_key(tables: PageTables) -> (u64, u8) {
    let format = match tables.format {
        PageTableFormat::Legacy { large_pages: false } => 1,
        PageTableFormat::Legacy { large_pages: true } => 2,
        PageTableFormat::Pae => 3,
        PageTableFormat::LongMode => 4,
    };
    (tables.cr3, format | u8::from(tables.no_execute) << 4)
}

/// The walks remembered.
#[derive(Debug, Default)]
pub struct WalkCache {
    walks: [Walk; WALKS],
}

/// The entries one walk reads, as it reads them (see [`WalkCache::remember`]).
#[derive(Debug, Default)]
pub struct Reads {
    entries: [(u64, u64); LEVELS],
    levels: u8,
}

impl Reads {
    /// The walk read `value` at guest-physical `gpa`.
    pub fn note(&mut self, gpa: u64, value: u64) {
        if let Some(slot) = self.entries.get_mut(self.levels as usize) {
            *slot = (gpa, value);
            self.levels += 1;
        }
    }
}

impl WalkCache {
    fn slot(&self, gva: u64) -> &Walk {
        &self.walks[(gva / PAGE_SIZE) as usize & (WALKS - 1)]
    }

    /// The guest-physical address of `gva` through `tables`, if a remembered walk of its
    /// page still holds: `read_u64` reads each of its entries again. Inlined into its two
    /// callers (`GuestMemory::virtual_to_physical`, and `GuestMemory::fetch_instruction`,
    /// which every exit runs for its instruction): the compiler stopped inlining it when the
    /// walk grew (it now lists the entries it used), and the call cost a CPUID trap 41
    /// instructions (book/src/speed.md).
    #[inline(always)]
    pub fn lookup(
        &self,
        tables: PageTables,
        gva: u64,
        mut read_u64: impl FnMut(u64) -> Option<u64>,
    ) -> Option<u64> {
        let walk = self.slot(gva);
        if walk.page.get() != (gva & !(PAGE_SIZE - 1)) | 1
            || walk.tables.get() != tables_key(tables)
        {
            return None;
        }
        let levels = usize::from(walk.levels.get()).min(LEVELS);
        let unchanged = walk.entries[..levels].iter().all(|entry| {
            let (gpa, value) = entry.get();
            read_u64(gpa) == Some(value)
        });
        unchanged.then(|| walk.physical.get() | (gva & (PAGE_SIZE - 1)))
    }

    /// Remember that the walk of `gva` through `tables`, which read `reads`, led to
    /// guest-physical `gpa`.
    pub fn remember(&self, tables: PageTables, gva: u64, reads: &Reads, gpa: u64) {
        let walk = self.slot(gva);
        walk.tables.set(tables_key(tables));
        walk.page.set((gva & !(PAGE_SIZE - 1)) | 1);
        walk.physical.set(gpa & !(PAGE_SIZE - 1));
        for (entry, read) in walk.entries.iter().zip(reads.entries) {
            entry.set(read);
        }
        walk.levels.set(reads.levels);
    }
}

#[cfg(test)]
mod tests {
    use crate::testing::{DATA, PD, Test};
    use traplab_abi::x86::pte;

    const TABLE: u64 = pte::PRESENT | pte::WRITABLE | pte::USER;

    fn read_u64(test: &Test, gva: u64) -> Option<u64> {
        let mut bytes = [0u8; 8];
        test.domain.read_virtual(gva, &mut bytes).ok()?;
        Some(u64::from_le_bytes(bytes))
    }

    /// A walk is remembered with its tables' format: the same CR3 read as PAE's tables
    /// (the guest left long mode and turned PAE paging on) is walked afresh.
    #[test]
    fn a_walk_is_the_same_only_in_the_same_format() {
        use super::{Reads, WalkCache};
        use traplab_abi::x86::{PageTableFormat, PageTables};
        let walks = WalkCache::default();
        let long_mode = PageTables::long_mode(0x1000, 0);
        walks.remember(long_mode, 0x5123, &Reads::default(), 0x9000);
        assert_eq!(walks.lookup(long_mode, 0x5123, |_| None), Some(0x9123));
        let pae = PageTables {
            format: PageTableFormat::Pae,
            ..long_mode
        };
        assert_eq!(walks.lookup(pae, 0x5123, |_| None), None);
    }

    /// The guest changes a page-table entry behind the hypervisor's back (no exit, no
    /// flush it could see): the next access walks again and goes where the tables say now.
    #[test]
    fn a_changed_entry_on_the_way_is_noticed() {
        let mut test = Test::long_mode();
        test.write_u64(DATA, 0x1111);
        test.write_u64(DATA + 0x20_0000, 0x2222);
        // The 2 MiB page at 0x4000_0000 - 2 MiB points at the first 2 MiB of RAM.
        let gva = 0x00e0_0000;
        let slot = PD + (gva >> 21) * 8;
        test.write_u64(slot, TABLE | pte::HUGE);
        assert_eq!(
            read_u64(&test, gva + DATA),
            Some(0x1111),
            "walked, remembered"
        );
        assert_eq!(
            read_u64(&test, gva + DATA),
            Some(0x1111),
            "remembered, checked"
        );
        test.write_u64(slot, 0x20_0000 | TABLE | pte::HUGE);
        assert_eq!(
            read_u64(&test, gva + DATA),
            Some(0x2222),
            "the entry moved it"
        );
        test.write_u64(slot, 0);
        assert_eq!(read_u64(&test, gva + DATA), None, "not present any more");
    }

    /// The instruction fetch at every exit (`GuestMemory::fetch_instruction`) reads what
    /// the prefix read does: walked the first time, remembered the next, walked again when an
    /// entry on the way changed, and page by page when the 15 bytes cross into another page.
    #[test]
    fn an_instruction_fetch_reads_what_the_prefix_read_does() {
        let mut test = Test::long_mode();
        let fetch = |test: &Test, gva: u64| {
            let mut fetched = [0u8; 15];
            let length = test.domain.fetch_instruction(gva, &mut fetched);
            let mut read = [0u8; 15];
            let expected = test.domain.read_virtual_prefix(gva, &mut read);
            assert_eq!((length, fetched), (expected, read), "at {gva:#x}");
            (length, fetched)
        };
        let code: Vec<u8> = (1..=15).collect();
        test.write(DATA, &code);
        let walked = fetch(&test, DATA);
        assert_eq!(walked.0, 15);
        assert_eq!(fetch(&test, DATA), walked, "remembered");
        // The 2 MiB page of DATA moved to the next 2 MiB of RAM: the fetch goes there.
        let slot = PD + (DATA >> 21) * 8;
        test.write(DATA + 0x20_0000, &[0x0f, 0xa2]);
        test.write_u64(slot, 0x20_0000 | TABLE | pte::HUGE);
        assert_eq!(
            fetch(&test, DATA).1[..2],
            [0x0f, 0xa2],
            "the entry moved it"
        );
        // The last 5 bytes of a page: the rest comes from the next.
        fetch(&test, DATA + 0x1000 - 5);
        // Not mapped at all: nothing read.
        assert_eq!(fetch(&test, 0x7fff_0000_0000).0, 0);
    }

    /// A remembered walk is for its CR3: another address space walks its own tables.
    #[test]
    fn another_cr3_walks_its_own_tables() {
        let mut test = Test::long_mode();
        test.write_u64(DATA, 0x1111);
        assert_eq!(read_u64(&test, DATA), Some(0x1111));
        // An empty PML4 at another page: nothing is mapped there.
        test.domain.vcpu.vmcb.save.cr3 = DATA + 0x1000;
        assert_eq!(read_u64(&test, DATA), None);
    }

    /// Checking a remembered walk reads the same entries a walk reads, no fewer: the cost
    /// saved is the walk's own work, never a read of guest memory.
    #[test]
    fn a_checked_walk_reads_each_entry_again() {
        let test = Test::long_mode();
        let before = test.memory_reads();
        read_u64(&test, DATA);
        let walked = test.memory_reads() - before;
        read_u64(&test, DATA);
        let checked = test.memory_reads() - before - walked;
        assert_eq!(
            walked, checked,
            "three entries of a 2 MiB page, then the data"
        );
    }
}
