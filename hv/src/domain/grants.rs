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
    /// How many mappings (by any domain) each entry has now.
    pub mapped: [u32; ENTRIES as usize],
    /// What this domain has mapped, by handle (`None`: a handle free again).
    pub maptrack: Vec<Option<Mapping>>,
}

impl Default for Grants {
    fn default() -> Self {
        Grants {
            table: [GrantEntryV1::default(); ENTRIES as usize],
            mapped: [0; ENTRIES as usize],
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

    /// Is any page mapped at guest-physical `host_addr` already?
    pub fn mapped_at(&self, host_addr: u64) -> bool {
        self.maptrack
            .iter()
            .flatten()
            .any(|mapping| mapping.host_addr == host_addr)
    }
}
