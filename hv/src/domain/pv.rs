//! A domain's paravirtual state: what a guest that knows it runs on traplab asked for by
//! hypercall, as a Xen PV guest does.

use super::page_tables::{NewTables, Pinning, WritableLeaves};
use alloc::boxed::Box;
use alloc::collections::BTreeMap;
use alloc::vec::Vec;
use traplab_abi::hypercall::TrapInfo;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Pv {
    /// Handlers registered with `set_trap_table`: exceptions with an entry are bounced
    /// (`delivery.rs`) while the kernel runs (`Domain::bounces_events`). Empty: every
    /// exception is reflected through the guest's IDT.
    pub trap_table: Vec<TrapInfo>,
    /// Pinned guest page tables: guest-physical page → level (`page_tables.rs`).
    pub pinned_tables: BTreeMap<u64, u8>,
    /// The writable leaf entries of the pinned tables, by the memory they map: no page they
    /// cover may become a table (`page_tables.rs`).
    pub writable_leaves: WritableLeaves,
    /// PV mode (`set_pv_mode`): the kernel runs at CPL 3 and the hypervisor emulates its
    /// privileged instructions (`exit/privileged.rs`).
    pub enabled: bool,
    /// A PV kernel's interrupt flag, which its emulated CLI and STI change.
    pub virtual_interrupt_flag: bool,
    /// A `pin_page_table` whose walk goes on at its VMMCALL's next run (`page_tables.rs`).
    pub pinning: Option<Box<Pinning>>,
}

impl Pv {
    /// Pin these tables, and count their writable leaves.
    pub fn pin(&mut self, new: NewTables) {
        self.pinned_tables.extend(new.tables);
        self.writable_leaves.extend(new.leaves);
    }

    /// Entry `old` of a pinned level-`level` table became `new`: the writable leaves follow,
    /// the old one's count out, the new one's in (Xen's put_page_from_l1e and
    /// get_page_from_l1e of a `mod_l1_entry`).
    pub fn entry_written(&mut self, level: u8, old: u64, new: u64) {
        self.writable_leaves.remove(level, old);
        self.writable_leaves.add(level, new);
    }

    /// The trap-table entry for `vector`, if the guest registered one.
    pub fn trap_table_entry(&self, vector: u8) -> Option<TrapInfo> {
        self.trap_table
            .iter()
            .copied()
            .find(|entry| entry.vector == vector)
    }
}
