//! A write to a page table the guest pinned: check the new entry, then write it (Xen's
//! "ptwr", page-table write emulation). Reached from a #PF exit (`exception.rs`).
//!
//! A Xen PV guest has no nested paging: its page tables translate to host-physical memory
//! directly, so the hypervisor must see every change to them, or a guest could map memory
//! it does not own. The rule Xen enforces, and this hypervisor too once a domain pins its
//! tables (`pin_page_table`): a page-table page may only be mapped read-only. So the
//! guest's store to an entry raises a #PF (a write to a read-only page: at CPL 0 only while
//! CR0.WP is set, which a pin needs and the hypervisor then keeps, `cr.rs`); the hypervisor,
//! which intercepts every #PF, sees that the target is a pinned table, checks the new entry,
//! writes it and skips the store, and the guest never sees the fault. An entry is refused
//! when it:
//!
//! - maps memory outside the domain's RAM;
//! - maps a pinned page table writable (the guest could then change it behind our back);
//! - points to a pinned table of another level than the entry's (Xen's type check);
//! - points to a new lower-level table that is unfit to be one: mapped writable (by the
//!   guest at its 1:1 address, by a leaf of a pinned table, by another domain through a
//!   grant), the shared-info page, or with an entry these rules refuse
//!   (`domain/page_tables.rs`). A new table that passes is pinned with its subtree, by the
//!   same decision.
//!
//! A refused write gets the guest the #PF it raised, reflected as usual. (With nested paging
//! the hardware confines a guest anyway; this lab shows the PV mechanism. Doing it with the
//! nested page tables instead does not work under QEMU's TCG: its page walker writes to
//! every table it reads, so read-only tables would fault on every TLB miss.)

use super::{Exit, undecodable};
use crate::decide;
use crate::decision::{Decision, Effect};
use crate::delivery::{self, DataAccess, Progress};
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
    let Ok(gpa) = guest
        .memory
        .virtual_to_physical(guest.page_tables(), linear)
    else {
        return PageTableWrite::NotPinned;
    };
    let Some(level) = guest.pinned_level(gpa) else {
        return PageTableWrite::NotPinned;
    };
    // Only a store that faulted for the read-only mapping alone is one the hypervisor
    // writes in the CPU's place. One the CPU refused for another reason as well (a store at
    // CPL 3 to a supervisor page, AMD APM vol. 2, 5.6 "Page-Protection Checks") is the
    // guest's own #PF, as Xen's `fixup_page_fault` emulates only the guest kernel's
    // stores: else user code could rewrite page tables its kernel keeps from it.
    if guest.cpu_pieces(linear, 8, false).is_err() {
        return PageTableWrite::NotPinned;
    }
    let (table, index) = (gpa & !0xfff, (gpa & 0xfff) / 8);
    let Some(instruction) = exit.decode_instruction(guest) else {
        return PageTableWrite::Done(undecodable(exit, guest));
    };
    let access = emulate::memory_access(guest, &instruction, gpa)
        .filter(|_| emulate::plain(&instruction))
        .map(|(_, access)| access);
    let Some(Access::Write { width: 8, value }) = access.filter(|_| gpa % 8 == 0) else {
        return PageTableWrite::Refused(format!(
            "a write to the level-{level} page table at {table:#x} that is not one aligned 8-byte MOV"
        ));
    };
    let new_tables = match guest.check_entry(level, value) {
        Ok(new_tables) => new_tables,
        Err(why) => {
            return PageTableWrite::Refused(format!(
                "entry {index} of the level-{level} table at {table:#x} = {value:#x} {why}"
            ));
        }
    };
    // The new tables the entry links are pinned before it is written, in the same apply: the
    // check found them, so applying walks nothing and no table is linked unpinned.
    let pin = (!new_tables.tables.is_empty())
        .then(|| Effect::PinPageTables(alloc::boxed::Box::new(new_tables)));
    // A data breakpoint on the entry: the CPU's store faulted, the hypervisor's did it.
    let store = [DataAccess {
        linear,
        size: 8,
        write: true,
    }];
    let decision = decide!(
            Action::Emulate,
            "a store to a pinned level-{level} page table (entry {index} = {value:#x}): the entry is valid, so the hypervisor writes it"
        )
        .with_all(pin)
        .with(Effect::PageTableEntry {
            gpa,
            level,
            entry: value,
        })
        .with(Effect::Rip(guest.vcpu.rip_after(instruction.len() as u64)))
        .describe(format!(
            "level-{level} table at {table:#x}: entry {index} = {value:#x}"
        ));
    PageTableWrite::Done(delivery::with_breakpoints(
        guest,
        None,
        &store,
        decision,
        Progress::Completed,
    ))
}

#[cfg(test)]
mod tests {
    use crate::decision::Effect;
    use crate::domain::page_tables::NewTables;
    use crate::testing::{self, DATA, ENTRY, PD, PML4, PT, Run, SHARED_INFO, Test};
    use alloc::boxed::Box;
    use alloc::vec;
    use traplab_abi::event::Action;
    use traplab_abi::exit::ExitReason;
    use traplab_abi::svm::Event;
    use traplab_abi::x86::pte;

    /// `mov [rax], rcx`: the guest's 8-byte store of an entry.
    const STORE: [u8; 3] = [0x48, 0x89, 0x08];
    /// #PF error code of a supervisor write to a present, read-only page: P and W/R (AMD
    /// APM vol. 2, 8.4.2). With CR0.WP set, CPL 0 honours read-only pages too.
    const WRITE_TO_READ_ONLY: u32 = 0b11;
    /// A free page of the first 2 MiB (mapped with 4 KiB pages), for a new table.
    const TABLE: u64 = 0x1_4000;

    /// The guest stores `entry` at the virtual (= physical) address `at` with `bytes`, and
    /// the store faults: the #PF exit, run.
    fn store(test: &mut Test, bytes: &[u8], at: u64, entry: u64, error_code: u32) -> Run {
        test.code(bytes);
        test.set_gpr(0, at);
        test.set_gpr(1, entry);
        test.gate(14, 0x20_c000);
        let exit = test.exit(ExitReason::Exception {
            vector: 14,
            error_code,
            address: at,
        });
        test.run(exit)
    }

    /// The store was refused: the guest gets its own #PF, with CR2, and the table is as it was.
    fn assert_refused(test: &Test, run: &Run, at: u64, before: u64, why: &str) {
        assert_eq!(run.decision.action, Action::Reflect, "{}", run.decision.why);
        assert!(run.decision.why.contains(why), "{}", run.decision.why);
        let (event, _, synthetic) = testing::injected(&run.decision);
        assert_eq!(event, Event::exception(14, WRITE_TO_READ_ONLY));
        assert!(!synthetic, "the guest's store raised it");
        assert_eq!(
            test.domain.vcpu.vmcb.save.cr2, at,
            "CR2 = the faulting address"
        );
        assert_eq!(test.read_u64(at), before, "nothing written");
        assert_eq!(test.rip(), ENTRY);
    }

    #[test]
    fn a_valid_store_to_a_pinned_table_is_written_by_the_hypervisor_and_skipped() {
        // Entry 256 of the first 2 MiB's page table maps DATA (1 MiB); the guest remaps it
        // to the next frame, read-write: inside its RAM, no table mapped writable.
        let mut test = Test::long_mode();
        test.pin_page_tables();
        let at = PT + 8 * 256;
        let old = test.read_u64(at);
        let entry = (DATA + 0x1000) | pte::PRESENT | pte::WRITABLE;
        let run = store(&mut test, &STORE, at, entry, WRITE_TO_READ_ONLY);
        assert_eq!(run.decision.action, Action::Emulate, "{}", run.decision.why);
        assert!(run.decision.at.contains("src/exit/ptwr.rs:"));
        assert_eq!(
            run.decision.effects,
            [
                Effect::PageTableEntry {
                    gpa: at,
                    level: 1,
                    entry
                },
                Effect::Rip(ENTRY + 3)
            ]
        );
        assert_eq!(
            run.kinds(),
            ["decide", "emulate"],
            "the guest never sees a #PF"
        );
        assert_eq!(test.read_u64(at), entry);
        assert!(run.changes().contains(&("page table entry", old, entry)));
        assert_eq!(
            test.domain.vcpu.vmcb.control.tlb_control, 1,
            "the old entry may be cached"
        );
        assert_eq!(test.rip(), ENTRY + 3);
    }

    #[test]
    fn a_valid_store_to_a_watched_entry_is_written_and_then_traps() {
        // DR0 watches the entry's 8 bytes for writes: the CPU's store faulted before its
        // breakpoint check, the hypervisor wrote the entry, and raises the #DB trap after.
        let mut test = Test::long_mode();
        test.pin_page_tables();
        test.gate(1, 0x20_1000);
        let at = PT + 8 * 256;
        test.watch(at, 8, false);
        let entry = (DATA + 0x1000) | pte::PRESENT | pte::WRITABLE;
        let run = store(&mut test, &STORE, at, entry, WRITE_TO_READ_ONLY);
        assert_eq!(test.read_u64(at), entry, "written");
        assert_eq!(testing::injected(&run.decision).0.vector, 1);
        assert_eq!(test.domain.vcpu.vmcb.save.dr6 & 0xf, 1, "B0");
        assert_eq!(test.rip(), ENTRY + 3, "after the store");
    }

    #[test]
    fn a_store_that_maps_a_pinned_table_writable_is_refused_with_the_guest_s_pf() {
        // Entry 0x10 of the page table maps the PML4 itself: writable, the guest could
        // change its tables without the hypervisor seeing it.
        let mut test = Test::long_mode();
        test.pin_page_tables();
        let at = PT + 8 * (PML4 >> 12);
        let before = test.read_u64(at);
        let entry = PML4 | pte::PRESENT | pte::WRITABLE;
        let run = store(&mut test, &STORE, at, entry, WRITE_TO_READ_ONLY);
        assert_refused(&test, &run, at, before, "maps a pinned page table writable");
    }

    #[test]
    fn a_store_that_maps_memory_outside_the_guest_s_ram_is_refused() {
        let mut test = Test::long_mode();
        test.pin_page_tables();
        let at = PT + 8 * 256;
        let before = test.read_u64(at);
        let run = store(
            &mut test,
            &STORE,
            at,
            0x2000_0000 | pte::PRESENT,
            WRITE_TO_READ_ONLY,
        );
        assert_refused(&test, &run, at, before, "maps memory outside guest RAM");
    }

    #[test]
    fn a_new_lower_table_the_guest_still_maps_writable_is_refused() {
        // PD entry 2 pointing to a page table at 0x14000, which the guest can still write:
        // it could put anything in it after the check.
        let mut test = Test::long_mode();
        test.pin_page_tables();
        let at = PD + 8 * 2;
        let before = test.read_u64(at);
        let entry = 0x1_4000 | pte::PRESENT | pte::WRITABLE;
        let run = store(&mut test, &STORE, at, entry, WRITE_TO_READ_ONLY);
        assert_refused(&test, &run, at, before, "still maps writable");
    }

    #[test]
    fn a_new_lower_table_mapped_read_only_is_accepted_and_pinned_with_it() {
        let mut test = Test::long_mode();
        test.pin_page_tables();
        // The guest made its new table read-only first (a checked store to the pinned PT).
        test.write_pinned_entry(PT + 8 * 0x14, TABLE | pte::PRESENT);
        let at = PD + 8 * 2;
        let entry = TABLE | pte::PRESENT | pte::WRITABLE;
        let run = store(&mut test, &STORE, at, entry, WRITE_TO_READ_ONLY);
        assert_eq!(run.decision.action, Action::Emulate, "{}", run.decision.why);
        // The decision pins it, before the entry that links it: applying walks nothing,
        // and no table is linked unpinned.
        let new = NewTables {
            tables: vec![(TABLE, 1)],
            ..NewTables::default()
        };
        assert_eq!(
            run.decision.effects,
            [
                Effect::PinPageTables(Box::new(new)),
                Effect::PageTableEntry {
                    gpa: at,
                    level: 2,
                    entry
                },
                Effect::Rip(ENTRY + 3)
            ]
        );
        assert_eq!(test.domain.pinned_level(TABLE), Some(1));
    }

    #[test]
    fn a_new_table_mapped_writable_by_another_entry_is_refused() {
        // Two checked stores: entry 5 of the pinned PT maps TABLE writable at 0x5000 (valid:
        // TABLE is no table yet), then PD entry 2 would link TABLE as a PT. Its 1:1 mapping
        // is read-only, but the guest could write the new table at 0x5000 past the checks:
        // Xen refuses a page-table type to a page with writable mappings.
        let mut test = Test::long_mode();
        test.pin_page_tables();
        test.write_pinned_entry(PT + 8 * 0x14, TABLE | pte::PRESENT);
        let alias = PT + 8 * 5;
        let run = store(
            &mut test,
            &STORE,
            alias,
            TABLE | pte::PRESENT | pte::WRITABLE,
            WRITE_TO_READ_ONLY,
        );
        assert_eq!(run.decision.action, Action::Emulate, "{}", run.decision.why);
        test.domain.vcpu.vmcb.save.rip = ENTRY;
        let at = PD + 8 * 2;
        let before = test.read_u64(at);
        let entry = TABLE | pte::PRESENT | pte::WRITABLE;
        let run = store(&mut test, &STORE, at, entry, WRITE_TO_READ_ONLY);
        assert_refused(
            &test,
            &run,
            at,
            before,
            "an entry of a pinned table maps writable",
        );
        assert_eq!(test.domain.pinned_level(TABLE), None);
        // The guest takes the alias away (a checked store): now TABLE may be linked.
        test.domain.vcpu.vmcb.save.rip = ENTRY;
        store(&mut test, &STORE, alias, 0, WRITE_TO_READ_ONLY);
        test.domain.vcpu.vmcb.save.rip = ENTRY;
        let run = store(&mut test, &STORE, at, entry, WRITE_TO_READ_ONLY);
        assert_eq!(run.decision.action, Action::Emulate, "{}", run.decision.why);
        assert_eq!(test.domain.pinned_level(TABLE), Some(1));
    }

    #[test]
    fn a_pinned_table_linked_at_another_level_is_refused() {
        // The PML4 linked from a PD entry would be read as a PT: its entry 0 (the PDPT,
        // writable) a leaf that maps the PDPT writable at 4 MiB. Xen's get_page_type fails
        // on the type mismatch.
        let mut test = Test::long_mode();
        test.pin_page_tables();
        let at = PD + 8 * 2;
        let before = test.read_u64(at);
        let run = store(
            &mut test,
            &STORE,
            at,
            PML4 | pte::PRESENT | pte::WRITABLE,
            WRITE_TO_READ_ONLY,
        );
        assert_refused(
            &test,
            &run,
            at,
            before,
            "points to a page table of another level",
        );
    }

    #[test]
    fn the_shared_info_page_linked_as_a_new_table_is_refused() {
        // Mapped read-only, the shared-info page would pass as a new PT; but the hypervisor
        // writes pending event bits there: an event on port 1 would set bit 1 (R/W) of its
        // entry 256, here mapping the PML4.
        let mut test = Test::long_mode();
        test.pin_page_tables();
        test.domain.events.shared_info = Some(SHARED_INFO);
        test.write_pinned_entry(PT + 8 * (SHARED_INFO >> 12), SHARED_INFO | pte::PRESENT);
        test.write_u64(SHARED_INFO + 0x800, PML4 | pte::PRESENT);
        let at = PD + 8 * 2;
        let before = test.read_u64(at);
        let entry = SHARED_INFO | pte::PRESENT | pte::WRITABLE;
        let run = store(&mut test, &STORE, at, entry, WRITE_TO_READ_ONLY);
        assert_refused(&test, &run, at, before, "the shared-info page");
        assert_eq!(test.domain.pinned_level(SHARED_INFO), None);
    }

    #[test]
    fn a_store_that_is_not_one_aligned_8_byte_mov_is_refused() {
        // `mov [rax], ecx` writes half an entry: the hypervisor checks whole entries only.
        let mut test = Test::long_mode();
        test.pin_page_tables();
        let at = PT + 8 * 256;
        let before = test.read_u64(at);
        let run = store(&mut test, &[0x89, 0x08], at, DATA | 1, WRITE_TO_READ_ONLY);
        assert_refused(&test, &run, at, before, "not one aligned 8-byte MOV");
    }

    #[test]
    fn without_pinned_tables_a_write_fault_is_an_ordinary_pf() {
        let mut test = Test::long_mode();
        test.read_only_page_tables();
        let at = PT + 8 * 256;
        let before = test.read_u64(at);
        let run = store(&mut test, &STORE, at, DATA | 1, WRITE_TO_READ_ONLY);
        assert_refused(&test, &run, at, before, "the guest owns its exceptions");
        assert!(run.decision.at.contains("src/exit/exception.rs:"));
    }

    #[test]
    fn a_user_store_to_a_supervisor_page_table_is_the_guest_s_own_pf() {
        // The PT's own page is supervisor-only: a store to it at CPL 3 faults for that as
        // well as for read-only (P, W/R and U/S in the error code), and a CPU would raise #PF
        // however valid the entry. The hypervisor writes nothing: the #PF is the guest's.
        let mut test = Test::long_mode();
        test.pin_page_tables();
        test.write_u64(PT + 8 * (PT >> 12), PT | pte::PRESENT);
        test.domain.vcpu.vmcb.save.cpl = 3;
        let at = PT + 8 * 256;
        let before = test.read_u64(at);
        let entry = (DATA + 0x1000) | pte::PRESENT | pte::WRITABLE;
        let run = store(&mut test, &STORE, at, entry, 0b111);
        assert_eq!(run.decision.action, Action::Reflect, "{}", run.decision.why);
        assert!(run.decision.at.contains("src/exit/exception.rs:"));
        assert_eq!(test.read_u64(at), before, "nothing written");
    }

    #[test]
    fn a_read_fault_on_a_pinned_table_is_an_ordinary_pf() {
        // Only a write (W/R set) to a present page can be a page-table write.
        let mut test = Test::long_mode();
        test.pin_page_tables();
        let run = store(&mut test, &[0x48, 0x8b, 0x08], PT, 0, 0b01); // mov rcx, [rax]
        assert_eq!(run.decision.action, Action::Reflect);
        assert!(run.decision.at.contains("src/exit/exception.rs:"));
    }

    #[test]
    fn an_undecodable_store_to_a_pinned_table_kills_the_domain() {
        let mut test = Test::long_mode();
        test.pin_page_tables();
        let run = store(&mut test, &[0xff, 0xff], PT, 0, WRITE_TO_READ_ONLY);
        assert_eq!(
            testing::killed(&run.decision),
            "undecodable instruction at the exit"
        );
    }
}
