//! A domain's paravirtual state: what a guest that knows it runs on traplab asked for by
//! hypercall, as a Xen PV guest does.

use super::page_tables::Pinning;
use alloc::boxed::Box;
use alloc::collections::BTreeMap;
use alloc::vec::Vec;
use traplab_abi::hypercall::TrapInfo;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Pv {
    /// Handlers registered with `set_trap_table`: exceptions with an entry are bounced
    /// (`delivery.rs`). Empty: every exception is reflected through the guest's IDT.
    pub trap_table: Vec<TrapInfo>,
    /// Pinned guest page tables: guest-physical page → level (`page_tables.rs`).
    pub pinned_tables: BTreeMap<u64, u8>,
    /// PV mode (`set_pv_mode`): the kernel runs at CPL 3 and the hypervisor emulates its
    /// privileged instructions (`exit/privileged.rs`).
    pub enabled: bool,
    /// A PV kernel's interrupt flag, which its emulated CLI and STI change.
    pub virtual_interrupt_flag: bool,
    /// A `pin_page_table` whose walk goes on at its VMMCALL's next run (`page_tables.rs`).
    pub pinning: Option<Box<Pinning>>,
}

impl Pv {
    /// The trap-table entry for `vector`, if the guest registered one.
    pub fn trap_table_entry(&self, vector: u8) -> Option<TrapInfo> {
        self.trap_table
            .iter()
            .copied()
            .find(|entry| entry.vector == vector)
    }
}
