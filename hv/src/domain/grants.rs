//! A domain's grant table and the grants it has mapped (Xen's `struct grant_table` and its
//! maptrack; the ABI is `traplab_abi::grant_table`).
//!
//! The *table* holds what this domain grants others: one v1 entry per grant reference. The
//! *maptrack* holds what this domain has mapped of others' grants, one slot per handle: the
//! hypervisor needs it to unmap by handle, and to refuse a granter that ends access while
//! its page is still mapped somewhere.

use alloc::vec::Vec;
use traplab_abi::grant_table::{ENTRIES, GrantEntryV1, GrantRef};

/// A grant this domain has mapped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mapping {
    pub granter: u16,
    pub gref: GrantRef,
    /// Where this domain sees the page (guest-physical).
    pub host_addr: u64,
    pub readonly: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grants {
    /// What this domain grants: entry `gref`.
    pub table: [GrantEntryV1; ENTRIES as usize],
    /// How many mappings (by any domain) each entry has now ...
    pub mapped: [u32; ENTRIES as usize],
    /// ... and how many of them are writable (Xen's GTF_reading while the first is not 0,
    /// GTF_writing while the second is not).
    pub mapped_writable: [u32; ENTRIES as usize],
    /// What this domain has mapped, by handle (`None`: a handle free again).
    pub maptrack: Vec<Option<Mapping>>,
}

impl Default for Grants {
    fn default() -> Self {
        Grants {
            table: [GrantEntryV1::default(); ENTRIES as usize],
            mapped: [0; ENTRIES as usize],
            mapped_writable: [0; ENTRIES as usize],
            maptrack: Vec::new(),
        }
    }
}

impl Grants {
    /// The entry `gref`, if the table has one.
    pub fn entry(&self, gref: GrantRef) -> Option<GrantEntryV1> {
        self.table.get(gref as usize).copied()
    }

    /// The handle the next mapping gets: the lowest free one.
    pub fn free_handle(&self) -> u32 {
        self.maptrack
            .iter()
            .position(Option::is_none)
            .unwrap_or(self.maptrack.len()) as u32
    }

    /// The mapping with `handle`, if it is one.
    pub fn mapping(&self, handle: u32) -> Option<Mapping> {
        self.maptrack.get(handle as usize).copied().flatten()
    }

    /// Does another domain map this domain's page `page` (guest-physical) writable through
    /// a grant now?
    pub fn mapped_writable_by_others(&self, page: u64) -> bool {
        self.pages_mapped_writable_by_others()
            .any(|mapped| mapped == page & !0xfff)
    }

    /// The pages of this domain that other domains map writable now (one per grant so
    /// mapped: at most [`ENTRIES`]).
    pub fn pages_mapped_writable_by_others(&self) -> impl Iterator<Item = u64> + '_ {
        self.table
            .iter()
            .zip(self.mapped_writable)
            .filter(|&(_, writable)| writable > 0)
            .map(|(entry, _)| (entry.frame as u64) << 12)
    }

    /// Is any page mapped at guest-physical `host_addr` already?
    pub fn mapped_at(&self, host_addr: u64) -> bool {
        self.mapping_at(host_addr).is_some()
    }

    /// The mapping at guest-physical page `host_addr`, if there is one.
    pub fn mapping_at(&self, host_addr: u64) -> Option<Mapping> {
        self.maptrack
            .iter()
            .flatten()
            .find(|mapping| mapping.host_addr == host_addr)
            .copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const AT: u64 = 0x4000_0000;

    fn mapping(host_addr: u64) -> Option<Mapping> {
        Some(Mapping {
            granter: 2,
            gref: 0,
            host_addr,
            readonly: false,
        })
    }

    #[test]
    fn a_new_mapping_gets_the_lowest_free_handle() {
        // Xen's get_maptrack_handle: a freed handle is used again.
        let mut grants = Grants::default();
        assert_eq!(grants.free_handle(), 0);
        grants.maptrack = alloc::vec![mapping(AT), None, mapping(AT + 0x2000)];
        assert_eq!(grants.free_handle(), 1);
        grants.maptrack[1] = mapping(AT + 0x1000);
        assert_eq!(grants.free_handle(), 3);
    }

    #[test]
    fn a_freed_or_unknown_handle_names_no_mapping() {
        let grants = Grants {
            maptrack: alloc::vec![None, mapping(AT)],
            ..Grants::default()
        };
        assert_eq!(grants.mapping(0), None);
        assert_eq!(grants.mapping(1), mapping(AT));
        assert_eq!(grants.mapping(2), None);
        assert!(grants.mapped_at(AT));
        assert!(!grants.mapped_at(AT + 0x1000));
        assert_eq!(grants.entry(ENTRIES), None);
        assert_eq!(grants.entry(0), Some(GrantEntryV1::default()));
    }
}
