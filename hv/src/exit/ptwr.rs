//! A write to a page table the guest pinned: check the new entry, then write it (Xen's
//! "ptwr", page-table write emulation). Reached from a #PF exit (`exception.rs`).
//!
//! A Xen PV guest has no nested paging: its page tables translate to host-physical memory
//! directly, so the hypervisor must see every change to them, or a guest could map memory
//! it does not own. The rule Xen enforces, and this hypervisor too once a domain pins its
//! tables (`pin_page_table`): a page-table page may only be mapped read-only. So the
//! guest's store to an entry raises a #PF (a write to a read-only page); the hypervisor,
//! which intercepts every #PF, sees that the target is a pinned table, checks the new entry,
//! writes it and skips the store, and the guest never sees the fault. An entry is refused
//! when it:
//!
//! - maps memory outside the domain's RAM;
//! - maps a pinned page table writable (the guest could then change it behind our back);
//! - points to a new lower-level table that the guest has not mapped read-only.
//!
//! A refused write gets the guest the #PF it raised, reflected as usual. (With nested paging
//! the hardware confines a guest anyway; this lab shows the PV mechanism. Doing it with the
//! nested page tables instead does not work under QEMU's TCG: its page walker writes to
//! every table it reads, so read-only tables would fault on every TLB miss.)

use super::{Exit, undecodable};
use crate::decide;
use crate::decision::{Decision, Effect};
use crate::domain::Guest;
use crate::emulate::{self, Access};
use alloc::format;
use alloc::string::String;
use traplab_abi::event::Action;
use traplab_abi::x86::PageFaultCode;

/// What became of a #PF exit, as far as page-table writes go.
pub enum PageTableWrite {
    /// Not a write to a pinned table: an ordinary #PF.
    NotPinned,
    /// Checked, to be written and skipped: the guest continues after its store (or the
    /// store cannot be decoded, and the domain ends).
    Done(Decision),
    /// Refused, for this reason: the guest gets the #PF its store raised.
    Refused(String),
}

/// Is this #PF exit (error code `error_code` at `linear`) a write to a pinned page table?
/// Then check it, and write it or refuse it.
pub fn handle(exit: &Exit, guest: &Guest, error_code: u32, linear: u64) -> PageTableWrite {
    let code = PageFaultCode(error_code);
    if guest.pv.pinned_tables.is_empty() || !code.present() || !code.write() {
        return PageTableWrite::NotPinned;
    }
    let Ok(gpa) = guest.memory.virtual_to_physical(guest.cr3(), linear) else {
        return PageTableWrite::NotPinned;
    };
    let Some(level) = guest.pinned_level(gpa) else {
        return PageTableWrite::NotPinned;
    };
    let (table, index) = (gpa & !0xfff, (gpa & 0xfff) / 8);
    let Some(instruction) = exit.decode_instruction(guest) else {
        return PageTableWrite::Done(undecodable());
    };
    let access =
        emulate::memory_access(guest, &instruction).filter(|_| emulate::plain(&instruction));
    let Some(Access::Write { width: 8, value }) = access.filter(|_| gpa % 8 == 0) else {
        return PageTableWrite::Refused(format!(
            "a write to the level-{level} page table at {table:#x} that is not one aligned 8-byte MOV"
        ));
    };
    if let Err(why) = guest.check_entry(level, value) {
        return PageTableWrite::Refused(format!(
            "entry {index} of the level-{level} table at {table:#x} = {value:#x} {why}"
        ));
    }
    PageTableWrite::Done(
        decide!(
            Action::Emulate,
            "a store to a pinned level-{level} page table (entry {index} = {value:#x}): the entry is valid, so the hypervisor writes it"
        )
        .with(Effect::PageTableEntry {
            gpa,
            level,
            entry: value,
        })
        .with(Effect::Rip(guest.vcpu.rip_after(instruction.len() as u64)))
        .describe(format!(
            "level-{level} table at {table:#x}: entry {index} = {value:#x}"
        )),
    )
}
