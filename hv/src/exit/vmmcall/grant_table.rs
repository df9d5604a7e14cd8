//! `grant_table_op(cmd, arg)`: grants, as Xen's `do_grant_table_op`
//! (`xen/common/grant_table.c`; the ABI and where traplab differs is in
//! `traplab_abi::grant_table`).
//!
//! The hypercall itself returns 0 when it could read its structure; what happened is the
//! structure's `status`, a `GNTST_*` code, as in Xen. Every refusal is decided here, with
//! the check that failed in its reason; mapping happens in `apply.rs`, which puts the
//! granter's frame into the mapper's nested page tables.

use super::{Argument, finish};
use crate::decide;
use crate::decision::{Decision, Effect};
use crate::domain::Guest;
use alloc::boxed::Box;
use alloc::format;
use traplab_abi::event::Action;
use traplab_abi::grant_table::{
    ENTRIES, GrantEntryV1, MAP_AREA, cmd, flags, map, map_area, status,
};
use traplab_abi::hypercall::{self, error};

pub fn handle(guest: &Guest, next: u64, command: u64, arg: u64) -> Decision {
    // Xen's `do_grant_table_op(unsigned int cmd, …)`: bits 63:32 of the register are no part
    // of the command, and its bits 31:12 carry a continuation's progress
    // (`cmd::CONTINUATION_SHIFT`), which none of these commands takes: EINVAL.
    let command = command as u32 as u64;
    if command >> cmd::CONTINUATION_SHIFT != 0 {
        let decision = decide!(
            Action::Emulate,
            "grant_table_op({command:#x}): bits 31:12 of a command carry a continuation's progress, which none of these commands takes: as Xen, EINVAL"
        );
        return finish(decision, next, hypercall::GRANT_TABLE_OP, error::EINVAL);
    }
    let name = cmd::name(command).unwrap_or("grant_table_op");
    let result = match command {
        cmd::GRANT_ACCESS => grant_access(guest, arg),
        cmd::END_ACCESS => end_access(guest, arg),
        cmd::MAP_GRANT_REF => map_grant_ref(guest, arg),
        cmd::UNMAP_GRANT_REF => unmap_grant_ref(guest, arg),
        _ => {
            let decision = decide!(
                Action::Emulate,
                "grant_table_op({command}): no such command, the guest gets ENOSYS"
            );
            return finish(decision, next, hypercall::GRANT_TABLE_OP, error::ENOSYS);
        }
    };
    match result {
        Ok((decision, code)) => {
            let code_name = status::name(code).unwrap_or("?");
            let what = match &decision.what {
                Some(what) => format!("{what}; status {code} ({code_name})"),
                None => format!("{name}: status {code} ({code_name})"),
            };
            finish(decision.describe(what), next, hypercall::GRANT_TABLE_OP, 0)
        }
        Err(decision) => {
            let decision = (*decision).describe(format!("{name}: its structure at {arg:#x}"));
            finish(decision, next, hypercall::GRANT_TABLE_OP, error::EFAULT)
        }
    }
}

/// A command that read its structure: the decision and the status it writes back. `Err`:
/// the structure could not be read (EFAULT, nothing written; boxed, as it is rare).
type Outcome = Result<(Decision, i16), Box<Decision>>;

fn unreadable(name: &str, arg: u64) -> Box<Decision> {
    Box::new(decide!(
        Action::Emulate,
        "{name}: its structure at {arg:#x} is not memory the guest can read and write (unmapped, read-only, a supervisor page at CPL 3, or not its RAM), EFAULT"
    ))
}

/// The status written at `offset` of the structure, after the decision's other effects.
fn with_status<const N: usize>(
    decision: Decision,
    argument: &Argument<N>,
    offset: usize,
    code: i16,
) -> (Decision, i16) {
    (
        decision.with(argument.write(offset, &code.to_le_bytes())),
        code,
    )
}

/// Traplab's `GNTTABOP_grant_access`: fill entry `gref` of the caller's table.
fn grant_access(guest: &Guest, arg: u64) -> Outcome {
    const NAME: &str = "GNTTABOP_grant_access";
    let argument =
        Argument::<16>::read_for_output(guest, arg).map_err(|_| unreadable(NAME, arg))?;
    let (gref, domid, readonly, frame) = (
        argument.u32(0),
        argument.u16(4),
        argument.bytes[6] != 0,
        argument.u32(8),
    );
    const STATUS: usize = 12;
    let refuse = |decision: Decision, code| Ok(with_status(decision, &argument, STATUS, code));
    if gref >= ENTRIES {
        return refuse(
            decide!(
                Action::Emulate,
                "{NAME}: grant reference {gref} is outside the table (0 to {}): GNTST_bad_gntref",
                ENTRIES - 1
            ),
            status::BAD_GNTREF,
        );
    }
    let page = (frame as u64) << 12;
    if page >= guest.memory.size() {
        return refuse(
            decide!(
                Action::Emulate,
                "{NAME}: frame {frame:#x} is not a page of d{}'s memory: a domain can grant only what it owns, GNTST_bad_page",
                guest.id
            ),
            status::BAD_PAGE,
        );
    }
    if guest.grants.mapped[gref as usize] > 0 {
        return refuse(
            decide!(
                Action::Emulate,
                "{NAME}: grant {gref} is mapped by another domain right now: it cannot change under it, GNTST_eagain"
            ),
            status::EAGAIN,
        );
    }
    let entry = GrantEntryV1 {
        flags: flags::PERMIT_ACCESS | if readonly { flags::READONLY } else { 0 },
        domid,
        frame,
    };
    let access = if readonly { "read-only" } else { "read-write" };
    let decision = decide!(
        Action::Emulate,
        "{NAME}: d{} grants d{domid} {access} access to its page {page:#x}, as grant reference {gref}",
        guest.id
    )
    .with(Effect::GrantEntry { gref, entry })
    .describe(format!("{NAME}: grant {gref} = page {page:#x} for d{domid}, {access}"));
    Ok(with_status(decision, &argument, STATUS, status::OKAY))
}

/// Traplab's `GNTTABOP_end_access`: clear entry `gref`, unless someone maps it.
fn end_access(guest: &Guest, arg: u64) -> Outcome {
    const NAME: &str = "GNTTABOP_end_access";
    let argument = Argument::<8>::read_for_output(guest, arg).map_err(|_| unreadable(NAME, arg))?;
    let gref = argument.u32(0);
    const STATUS: usize = 4;
    if gref >= ENTRIES {
        let decision = decide!(
            Action::Emulate,
            "{NAME}: grant reference {gref} is outside the table, GNTST_bad_gntref"
        );
        return Ok(with_status(decision, &argument, STATUS, status::BAD_GNTREF));
    }
    let mapped = guest.grants.mapped[gref as usize];
    if mapped > 0 {
        // Linux's gnttab_end_foreign_access_ref fails the same way: GTF_reading or
        // GTF_writing is set while the grant is mapped.
        let decision = decide!(
            Action::Emulate,
            "{NAME}: grant {gref} is still mapped ({mapped} mapping): revoking it now would leave the mapper a page it may no longer have, GNTST_eagain"
        );
        return Ok(with_status(decision, &argument, STATUS, status::EAGAIN));
    }
    let decision = decide!(
        Action::Emulate,
        "{NAME}: grant {gref} ends: nobody may map the page any more"
    )
    .with(Effect::GrantEntry {
        gref,
        entry: GrantEntryV1::default(),
    });
    Ok(with_status(decision, &argument, STATUS, status::OKAY))
}

/// `GNTTABOP_map_grant_ref`: check grant `gref` of domain `dom`, and map its frame at
/// `host_addr` in the caller.
fn map_grant_ref(guest: &Guest, arg: u64) -> Outcome {
    const NAME: &str = "GNTTABOP_map_grant_ref";
    let argument =
        Argument::<32>::read_for_output(guest, arg).map_err(|_| unreadable(NAME, arg))?;
    let (host_addr, map_flags, gref, dom) = (
        argument.u64(0),
        argument.u32(8),
        argument.u32(12),
        argument.u16(16),
    );
    const STATUS: usize = 18;
    const HANDLE: usize = 20;
    let refuse = |decision: Decision, code| Ok(with_status(decision, &argument, STATUS, code));
    let readonly = map_flags & map::READONLY != 0;
    // Neither a device nor a host mapping asked for: Xen's `map_grant_ref` checks that first,
    // GNTST_bad_gntref.
    if map_flags & (map::DEVICE_MAP | map::HOST_MAP) == 0 {
        return refuse(
            decide!(
                Action::Emulate,
                "{NAME}: flags {map_flags:#x} ask for no mapping (neither GNTMAP_host_map nor GNTMAP_device_map is set): as Xen, GNTST_bad_gntref"
            ),
            status::BAD_GNTREF,
        );
    }
    // A mapper whose memory the hypervisor translates (an HVM guest's, Xen's
    // `paging_mode_external`) gets only host mappings, read-only or not: any other flag
    // (GNTMAP_device_map, application_map, contains_pte, or any other bit) is
    // GNTST_general_error in Xen's `map_grant_ref` and `create_grant_p2m_mapping`.
    let others = map_flags & !(map::HOST_MAP | map::READONLY);
    if others != 0 {
        return refuse(
            decide!(
                Action::Emulate,
                "{NAME}: flags {map_flags:#x} ask for more than a host mapping (bits {others:#x}: a device, application or PTE mapping), which a guest whose memory the hypervisor translates cannot have: as Xen, GNTST_general_error"
            ),
            status::GENERAL_ERROR,
        );
    }
    // Its own grant too: Xen's `map_grant_ref` looks the granter up by id alone (a domain
    // serving a block device to itself maps its own grants).
    let granter = match dom == guest.id {
        true => Some(guest.domain),
        false => guest.others.live(dom),
    };
    let Some(granter) = granter else {
        return refuse(
            decide!(
                Action::Emulate,
                "{NAME}: grant {gref} of d{dom}: there is no such domain (or it has ended), GNTST_bad_domain"
            ),
            status::BAD_DOMAIN,
        );
    };
    let Some(entry) = granter.grants.entry(gref) else {
        return refuse(
            decide!(
                Action::Emulate,
                "{NAME}: d{dom}'s table has no grant reference {gref} (0 to {}), GNTST_bad_gntref",
                ENTRIES - 1
            ),
            status::BAD_GNTREF,
        );
    };
    // Xen's `_set_status_v1`: a bad entry, one for another domain, and a write mapping of
    // a read-only grant all fail with GNTST_general_error; the reason says which.
    if entry.flags & flags::PERMIT_ACCESS == 0 {
        return refuse(
            decide!(
                Action::Emulate,
                "{NAME}: grant {gref} of d{dom} grants nothing (GTF_permit_access is clear): GNTST_general_error"
            ),
            status::GENERAL_ERROR,
        );
    }
    if entry.domid != guest.id {
        return refuse(
            decide!(
                Action::Emulate,
                "{NAME}: grant {gref} of d{dom} is for d{}, not for d{}: no permission, GNTST_general_error (as Xen)",
                entry.domid,
                guest.id
            ),
            status::GENERAL_ERROR,
        );
    }
    if entry.flags & flags::READONLY != 0 && !readonly {
        return refuse(
            decide!(
                Action::Emulate,
                "{NAME}: grant {gref} of d{dom} is read-only and d{} asks to map it writable: a write-pin of a read-only grant, GNTST_general_error (as Xen)",
                guest.id
            ),
            status::GENERAL_ERROR,
        );
    }
    let frame = (entry.frame as u64) << 12;
    if frame >= granter.memory.size() {
        return refuse(
            decide!(
                Action::Emulate,
                "{NAME}: grant {gref} names frame {:#x}, which is not d{dom}'s memory: GNTST_bad_page",
                entry.frame
            ),
            status::BAD_PAGE,
        );
    }
    // A page table the granter pinned may be written only through the hypervisor's checks
    // (`ptwr.rs`): a writable mapping of it elsewhere would bypass them. Xen's
    // get_page_type(PGT_writable_page) fails on a page-table page.
    if !readonly && let Some(level) = granter.pinned_level(frame) {
        return refuse(
            decide!(
                Action::Emulate,
                "{NAME}: grant {gref} names frame {:#x}, one of d{dom}'s pinned page tables (level {level}): a writable mapping of a page table is refused, GNTST_general_error (as Xen)",
                entry.frame
            ),
            status::GENERAL_ERROR,
        );
    }
    // The same for a page the granter's `pin_page_table` found in the pieces of its walk so
    // far (`domain/page_tables.rs`): it was not mapped writable when found, and will be
    // pinned at the end without a second look. In Xen the page holds its page-table type
    // (PGT_partial) while its validation is preempted, so get_page_type(PGT_writable_page)
    // fails on it as on a pinned table.
    let walk = granter.pv.pinning.as_ref();
    if !readonly && let Some(level) = walk.and_then(|pinning| pinning.seen.get(&frame)) {
        return refuse(
            decide!(
                Action::Emulate,
                "{NAME}: grant {gref} names frame {:#x}, a level-{level} page table d{dom}'s pin_page_table is pinning: a writable mapping of a page table is refused, GNTST_general_error (as Xen)",
                entry.frame
            ),
            status::GENERAL_ERROR,
        );
    }
    let area = map_area();
    if host_addr & 0xfff != 0 || !area.contains(&host_addr) {
        return refuse(
            decide!(
                Action::Emulate,
                "{NAME}: host_addr {host_addr:#x} is not a page of the grant-mapping area ({:#x} to {:#x}): GNTST_bad_virt_addr",
                area.start,
                area.end
            ),
            status::BAD_VIRT_ADDR,
        );
    }
    // A kernel given more than 1 GiB (`--memory`) has RAM where the area is: a grant
    // mapped there would hide a page of its own, and its unmap would leave a hole.
    if guest.memory.size() > MAP_AREA {
        return refuse(
            decide!(
                Action::Emulate,
                "{NAME}: d{}'s RAM ({} MiB) covers the grant-mapping area at {MAP_AREA:#x}: it has no page free to map a grant, GNTST_bad_virt_addr",
                guest.id,
                guest.memory.size() >> 20
            ),
            status::BAD_VIRT_ADDR,
        );
    }
    if guest.grants.mapped_at(host_addr) {
        return refuse(
            decide!(
                Action::Emulate,
                "{NAME}: a grant is mapped at {host_addr:#x} already: GNTST_bad_virt_addr"
            ),
            status::BAD_VIRT_ADDR,
        );
    }
    let handle = guest.grants.free_handle();
    let access = if readonly { "read-only" } else { "writable" };
    let decision = decide!(
        Action::Emulate,
        "{NAME}: grant {gref} of d{dom} is for d{} and allows it: the hypervisor maps d{dom}'s page {frame:#x} at {host_addr:#x} of d{}, {access}",
        guest.id,
        guest.id
    )
    .with(argument.write(HANDLE, &handle.to_le_bytes()))
    .describe(format!(
        "{NAME}: d{dom} grant {gref} at {host_addr:#x}, handle {handle}"
    ));
    // The mapping comes last: should the host have no memory for it, it writes its own
    // status over GNTST_okay.
    let (decision, code) = with_status(decision, &argument, STATUS, status::OKAY);
    let decision = decision.with(Effect::MapGrant {
        granter: dom,
        gref,
        host_addr,
        readonly,
        handle,
        status_at: argument.address(STATUS),
    });
    Ok((decision, code))
}

/// `GNTTABOP_unmap_grant_ref`: take the mapping `handle` away.
fn unmap_grant_ref(guest: &Guest, arg: u64) -> Outcome {
    const NAME: &str = "GNTTABOP_unmap_grant_ref";
    let argument =
        Argument::<24>::read_for_output(guest, arg).map_err(|_| unreadable(NAME, arg))?;
    let (host_addr, handle) = (argument.u64(0), argument.u32(16));
    const STATUS: usize = 20;
    let Some(mapping) = guest.grants.mapping(handle) else {
        let decision = decide!(
            Action::Emulate,
            "{NAME}: d{} has no mapping with handle {handle}: GNTST_bad_handle",
            guest.id
        );
        return Ok(with_status(decision, &argument, STATUS, status::BAD_HANDLE));
    };
    if host_addr == 0 {
        // Xen's unmap_common takes a host mapping away only at the address it is given
        // (`if ( op->host_addr && (op->flags & GNTMAP_host_map) )`), and a device mapping
        // only at `dev_bus_addr`, which traplab has none of: with neither, nothing is done,
        // and the status is GNTST_okay.
        let decision = decide!(
            Action::Emulate,
            "{NAME}: host_addr 0 names no mapping to take away, so handle {handle} stays mapped at {:#x} (as Xen's unmap_common): GNTST_okay",
            mapping.host_addr
        );
        return Ok(with_status(decision, &argument, STATUS, status::OKAY));
    }
    if host_addr != mapping.host_addr {
        let decision = decide!(
            Action::Emulate,
            "{NAME}: handle {handle} is mapped at {:#x}, not at {host_addr:#x}: GNTST_general_error",
            mapping.host_addr
        );
        return Ok(with_status(
            decision,
            &argument,
            STATUS,
            status::GENERAL_ERROR,
        ));
    }
    let decision = decide!(
        Action::Emulate,
        "{NAME}: the hypervisor takes d{}'s page (grant {}) away from {:#x} of d{}",
        mapping.granter,
        mapping.gref,
        mapping.host_addr,
        guest.id
    )
    .with(Effect::UnmapGrant(handle))
    .describe(format!("{NAME}: handle {handle}"));
    Ok(with_status(decision, &argument, STATUS, status::OKAY))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::grants::Mapping;
    use crate::domain::page_tables::Pinning;
    use crate::testing::{DATA, ENTRY, FRAMES, Run, Test, UNMAPPED, VMMCALL, VecMemory};
    use traplab_abi::boot::GUEST_RAM_SIZE;
    use traplab_abi::event::{GrantMap, GrantUnmap};
    use traplab_abi::grant_table::GrantRef;

    /// Where the tests map grants: the third page of the grant-mapping area.
    const HOST_ADDR: u64 = MAP_AREA + 0x2000;
    /// The granter's page the tests grant: frame 0x300, guest-physical 0x30_0000.
    const FRAME: u32 = 0x300;
    /// Where the tests put a second structure (the unmap after a map).
    const SECOND: u64 = DATA + 0x100;

    /// The test's domain (d1) at `grant_table_op(command, DATA)`, the structure at DATA.
    fn op(command: u64, arg: &[u8]) -> Test {
        let mut test = Test::hypercall(hypercall::GRANT_TABLE_OP, command, DATA);
        test.write(DATA, arg);
        test
    }

    /// Make `grant_table_op(command, arg)` the next call (RAX held the last result).
    fn next_call(test: &mut Test, command: u64, arg: u64) -> Run {
        test.vmrun();
        test.set_gpr(0, hypercall::GRANT_TABLE_OP);
        test.set_gpr(7, command);
        test.set_gpr(6, arg);
        test.call()
    }

    /// Traplab's `GrantAccess`: gref, domid, readonly, frame; status 0x7777 until written.
    fn grant_access(gref: GrantRef, domid: u16, readonly: bool, frame: u32) -> Vec<u8> {
        [
            &gref.to_le_bytes()[..],
            &domid.to_le_bytes(),
            &[readonly as u8, 0],
            &frame.to_le_bytes(),
            &0x7777u16.to_le_bytes(),
            &[0; 2],
        ]
        .concat()
    }

    /// Traplab's `EndAccess`: gref; status 0x7777 until written.
    fn end_access(gref: GrantRef) -> Vec<u8> {
        [&gref.to_le_bytes()[..], &0x7777u16.to_le_bytes(), &[0; 2]].concat()
    }

    /// `struct gnttab_map_grant_ref`: host_addr, flags, ref, dom; status and handle
    /// 0x7777 and 0xeeee_eeee until written.
    fn map_grant_ref(host_addr: u64, map_flags: u32, gref: GrantRef, dom: u16) -> Vec<u8> {
        [
            &host_addr.to_le_bytes()[..],
            &map_flags.to_le_bytes(),
            &gref.to_le_bytes(),
            &dom.to_le_bytes(),
            &0x7777u16.to_le_bytes(),
            &0xeeee_eeeeu32.to_le_bytes(),
            &[0; 8],
        ]
        .concat()
    }

    /// `struct gnttab_unmap_grant_ref`: host_addr, dev_bus_addr, handle; status 0x7777
    /// until written.
    fn unmap_grant_ref(host_addr: u64, handle: u32) -> Vec<u8> {
        [
            &host_addr.to_le_bytes()[..],
            &[0; 8],
            &handle.to_le_bytes(),
            &0x7777u16.to_le_bytes(),
            &[0; 2],
        ]
        .concat()
    }

    fn read_i16(test: &Test, gpa: u64) -> i16 {
        test.read_u64(gpa) as i16
    }

    fn read_u32(test: &Test, gpa: u64) -> u32 {
        test.read_u64(gpa) as u32
    }

    /// The hypercall returned 0 (it read its structure) and the guest continues after the
    /// VMMCALL; `status` is the structure's status at `offset`.
    fn assert_status(test: &Test, offset: u64, status: i16) {
        assert_eq!(test.gpr(0), 0, "the hypercall itself succeeded");
        assert_eq!(test.rip(), ENTRY + 3);
        assert_eq!(
            read_i16(test, DATA + offset),
            status,
            "expected {:?}",
            status::name(status)
        );
    }

    /// d1 at `GNTTABOP_map_grant_ref` of d2's grant 4 (`entry`) at [`HOST_ADDR`] with
    /// `map_flags`.
    fn mapping(entry: GrantEntryV1, map_flags: u32) -> Test {
        let mut test = op(
            cmd::MAP_GRANT_REF,
            &map_grant_ref(HOST_ADDR, map_flags, 4, 2),
        );
        test.add_domain(2).grants.table[4] = entry;
        test
    }

    /// [`mapping`] of [`FOR_D1`], writable, by a guest on `memory`.
    fn mapping_on(memory: VecMemory) -> Test {
        let mut test = Test::with_memory(memory);
        test.code(&VMMCALL);
        test.set_gpr(0, hypercall::GRANT_TABLE_OP);
        test.set_gpr(7, cmd::MAP_GRANT_REF);
        test.set_gpr(6, DATA);
        test.write(DATA, &map_grant_ref(HOST_ADDR, map::HOST_MAP, 4, 2));
        test.add_domain(2).grants.table[4] = FOR_D1;
        test
    }

    /// A read-write grant of d2's [`FRAME`] to d1.
    const FOR_D1: GrantEntryV1 = GrantEntryV1 {
        flags: flags::PERMIT_ACCESS,
        domid: 1,
        frame: FRAME,
    };

    // ---- GNTTABOP_grant_access and GNTTABOP_end_access (traplab's own) ----------------

    #[test]
    fn grant_access_fills_the_entry_and_writes_status_0_at_arg_plus_12() {
        // The entry is Xen's grant_entry_v1 (grant_table.h): GTF_permit_access, and
        // GTF_readonly for a read-only grant; `domid` may map `frame`.
        let mut test = op(cmd::GRANT_ACCESS, &grant_access(3, 2, true, FRAME));
        let run = test.call();
        assert_eq!(run.decision.action, Action::Emulate);
        assert_eq!(
            run.decision.why,
            "GNTTABOP_grant_access: d1 grants d2 read-only access to its page 0x300000, as grant reference 3"
        );
        assert_eq!(
            run.emulate().what,
            "GNTTABOP_grant_access: grant 3 = page 0x300000 for d2, read-only; status 0 (GNTST_okay); grant_table_op returned 0"
        );
        assert_status(&test, 12, status::OKAY);
        assert_eq!(
            test.domain.grants.table[3],
            GrantEntryV1 {
                flags: flags::PERMIT_ACCESS | flags::READONLY,
                domid: 2,
                frame: FRAME,
            }
        );
    }

    #[test]
    fn grant_access_read_write_has_only_permit_access() {
        let mut test = op(cmd::GRANT_ACCESS, &grant_access(0, 2, false, FRAME));
        test.call();
        assert_status(&test, 12, status::OKAY);
        assert_eq!(test.domain.grants.table[0].flags, flags::PERMIT_ACCESS);
    }

    #[test]
    fn grant_access_of_a_frame_outside_ram_is_gntst_bad_page() {
        let frame = (GUEST_RAM_SIZE >> 12) as u32;
        let mut test = op(cmd::GRANT_ACCESS, &grant_access(3, 2, false, frame));
        let run = test.call();
        assert_status(&test, 12, status::BAD_PAGE);
        assert_eq!(
            run.decision.why,
            "GNTTABOP_grant_access: frame 0x1000 is not a page of d1's memory: a domain can grant only what it owns, GNTST_bad_page"
        );
        assert_eq!(test.domain.grants.table[3], GrantEntryV1::default());
    }

    #[test]
    fn grant_access_of_a_reference_outside_the_table_is_gntst_bad_gntref() {
        let mut test = op(cmd::GRANT_ACCESS, &grant_access(ENTRIES, 2, false, FRAME));
        let run = test.call();
        assert_status(&test, 12, status::BAD_GNTREF);
        assert!(
            run.decision
                .why
                .contains("grant reference 32 is outside the table (0 to 31)")
        );
        assert_eq!(test.domain.grants, Default::default());
    }

    #[test]
    fn grant_access_to_an_entry_someone_maps_is_gntst_eagain() {
        let mut test = op(cmd::GRANT_ACCESS, &grant_access(3, 4, false, FRAME + 1));
        let granted = GrantEntryV1 {
            flags: flags::PERMIT_ACCESS | flags::WRITING,
            domid: 2,
            frame: FRAME,
        };
        test.domain.grants.table[3] = granted;
        test.domain.grants.mapped[3] = 1;
        let run = test.call();
        assert_status(&test, 12, status::EAGAIN);
        assert!(run.decision.why.contains("it cannot change under it"));
        assert_eq!(test.domain.grants.table[3], granted);
    }

    #[test]
    fn end_access_clears_an_entry_nobody_maps() {
        let mut test = op(cmd::END_ACCESS, &end_access(3));
        test.domain.grants.table[3] = FOR_D1;
        let run = test.call();
        assert_status(&test, 4, status::OKAY);
        assert_eq!(
            run.decision.why,
            "GNTTABOP_end_access: grant 3 ends: nobody may map the page any more"
        );
        assert_eq!(test.domain.grants.table[3], GrantEntryV1::default());
    }

    #[test]
    fn end_access_while_the_grant_is_mapped_is_gntst_eagain_and_keeps_it() {
        // Linux's gnttab_end_foreign_access_ref fails the same way while GTF_reading or
        // GTF_writing is set.
        let mut test = op(cmd::END_ACCESS, &end_access(3));
        let mapped = GrantEntryV1 {
            flags: flags::PERMIT_ACCESS | flags::READING,
            ..FOR_D1
        };
        test.domain.grants.table[3] = mapped;
        test.domain.grants.mapped[3] = 1;
        let run = test.call();
        assert_status(&test, 4, status::EAGAIN);
        assert_eq!(
            run.decision.why,
            "GNTTABOP_end_access: grant 3 is still mapped (1 mapping): revoking it now would leave the mapper a page it may no longer have, GNTST_eagain"
        );
        assert_eq!(test.domain.grants.table[3], mapped);
    }

    #[test]
    fn end_access_of_a_reference_outside_the_table_is_gntst_bad_gntref() {
        let mut test = op(cmd::END_ACCESS, &end_access(ENTRIES));
        test.call();
        assert_status(&test, 4, status::BAD_GNTREF);
    }

    // ---- GNTTABOP_map_grant_ref -------------------------------------------------------

    #[test]
    fn map_grant_ref_with_no_host_memory_left_is_gntst_general_error_and_the_mapper_lives() {
        // The handler cannot know that the host has no frame left for the nested page table
        // the mapping needs: the apply step finds it, and answers as Xen's map_grant_ref
        // does when create_grant_host_mapping fails, with the domain going on.
        let mut memory = VecMemory::new(GUEST_RAM_SIZE, false);
        memory.exhausted = true;
        let mut test = mapping_on(memory);
        let run = test.call();
        assert_eq!(run.kinds(), ["decide", "emulate"], "no grant_map, no kill");
        assert!(
            run.emulate()
                .what
                .contains("no host memory left for a nested page table: grant 4 of d2 is not mapped, and its status is GNTST_general_error (-1) instead"),
            "{}",
            run.emulate().what
        );
        assert_status(&test, 18, status::GENERAL_ERROR);
        assert!(test.foreign().is_empty());
        assert_eq!(test.domain.grants.mapping(0), None, "no handle taken");
        assert_eq!(test.other(2).grants.mapped[4], 0, "the grant is not in use");
        assert_eq!(
            test.domain.vcpu.run_state,
            crate::domain::vcpu::RunState::Runnable
        );
    }

    #[test]
    fn map_grant_ref_maps_the_granter_s_frame_at_host_addr_and_marks_the_grant_in_use() {
        // Xen's map_grant_ref (xen/common/grant_table.c): the entry checked, GTF_writing
        // set in it while the mapping lasts, a maptrack handle returned.
        let mut test = mapping(FOR_D1, map::HOST_MAP);
        let run = test.call();
        assert_eq!(run.decision.action, Action::Emulate);
        assert_eq!(
            run.decision.why,
            "GNTTABOP_map_grant_ref: grant 4 of d2 is for d1 and allows it: the hypervisor maps d2's page 0x300000 at 0x40002000 of d1, writable"
        );
        assert_eq!(
            run.decision.effects[..3],
            [
                Effect::GuestWrite {
                    address: DATA + 20,
                    bytes: vec![0; 4],
                },
                Effect::GuestWrite {
                    address: DATA + 18,
                    bytes: vec![0; 2],
                },
                Effect::MapGrant {
                    granter: 2,
                    gref: 4,
                    host_addr: HOST_ADDR,
                    readonly: false,
                    handle: 0,
                    status_at: DATA + 18,
                },
            ]
        );
        assert_eq!(run.kinds(), ["decide", "grant_map", "emulate"]);
        assert_eq!(
            run.grant_mapped(),
            &GrantMap {
                granter: 2,
                gref: 4,
                frame: 0x30_0000,
                host_addr: HOST_ADDR,
                readonly: false,
                handle: 0,
            }
        );
        assert_eq!(
            run.emulate().what,
            "GNTTABOP_map_grant_ref: d2 grant 4 at 0x40002000, handle 0; status 0 (GNTST_okay); grant_table_op returned 0"
        );
        assert_status(&test, 18, status::OKAY);
        assert_eq!(read_u32(&test, DATA + 20), 0, "the handle");
        // d1's nested page tables reach d2's host frame; the TLB is flushed.
        assert_eq!(
            test.foreign().into_iter().collect::<Vec<_>>(),
            [(HOST_ADDR, (FRAMES + 0x30_0000, true))]
        );
        assert_eq!(test.domain.vcpu.vmcb.control.tlb_control, 1);
        assert_eq!(
            test.domain.grants.mapping(0),
            Some(Mapping {
                granter: 2,
                gref: 4,
                host_addr: HOST_ADDR,
                readonly: false,
            })
        );
        let d2 = test.other(2);
        assert_eq!(d2.grants.mapped[4], 1);
        // Xen's _set_status_v1: GTF_reading for any mapping, GTF_writing for a writable one.
        assert_eq!(
            d2.grants.table[4].flags,
            flags::PERMIT_ACCESS | flags::READING | flags::WRITING
        );
    }

    #[test]
    fn a_read_only_mapping_is_mapped_read_only_and_marks_the_grant_reading() {
        let read_only = GrantEntryV1 {
            flags: flags::PERMIT_ACCESS | flags::READONLY,
            ..FOR_D1
        };
        let mut test = mapping(read_only, map::HOST_MAP | map::READONLY);
        let run = test.call();
        assert_status(&test, 18, status::OKAY);
        assert!(run.grant_mapped().readonly);
        assert_eq!(test.foreign()[&HOST_ADDR], (FRAMES + 0x30_0000, false));
        assert_eq!(
            test.other(2).grants.table[4].flags,
            flags::PERMIT_ACCESS | flags::READONLY | flags::READING
        );
    }

    #[test]
    fn a_second_mapping_gets_the_next_handle() {
        let mut test = mapping(FOR_D1, map::HOST_MAP);
        test.call();
        test.write(
            DATA,
            &map_grant_ref(HOST_ADDR + 0x1000, map::HOST_MAP, 4, 2),
        );
        let run = next_call(&mut test, cmd::MAP_GRANT_REF, DATA);
        assert_status(&test, 18, status::OKAY);
        assert_eq!(run.grant_mapped().handle, 1);
        assert_eq!(read_u32(&test, DATA + 20), 1);
        assert_eq!(test.other(2).grants.mapped[4], 2, "two mappings of grant 4");
        assert_eq!(test.foreign().len(), 2);
    }

    /// Run a map that must be refused with `code`; nothing is mapped and no handle
    /// written. The reason.
    fn refused(test: &mut Test, code: i16) -> String {
        let run = test.call();
        assert_status(test, 18, code);
        assert_eq!(run.kinds(), ["decide", "emulate"], "no grant_map");
        assert!(
            run.emulate().what.starts_with(&format!(
                "GNTTABOP_map_grant_ref: status {code} ({})",
                status::name(code).expect("a GNTST code")
            )),
            "{}",
            run.emulate().what
        );
        assert_eq!(read_u32(test, DATA + 20), 0xeeee_eeee, "no handle");
        assert!(test.foreign().is_empty());
        assert!(test.domain.grants.maptrack.iter().all(Option::is_none));
        assert_eq!(test.domain.vcpu.vmcb.control.tlb_control, 0);
        run.decision.why.into_owned()
    }

    #[test]
    fn map_of_a_grant_for_another_domain_is_gntst_general_error() {
        // Xen's _set_status_v1 (xen/common/grant_table.c): `PIN_FAIL(done,
        // GNTST_general_error, "Bad flags (%x) or dom (%d); expected d%d\n", …)`.
        let mut test = mapping(GrantEntryV1 { domid: 3, ..FOR_D1 }, map::HOST_MAP);
        let why = refused(&mut test, status::GENERAL_ERROR);
        assert!(why.contains("is for d3, not for d1"), "{why}");
        assert_eq!(test.other(2).grants.mapped[4], 0);
        assert_eq!(test.other(2).grants.table[4].flags, flags::PERMIT_ACCESS);
    }

    #[test]
    fn a_writable_map_of_a_read_only_grant_is_gntst_general_error() {
        // _set_status_v1: `PIN_FAIL(done, GNTST_general_error, "Attempt to write-pin a
        // r/o grant entry\n")`.
        let read_only = GrantEntryV1 {
            flags: flags::PERMIT_ACCESS | flags::READONLY,
            ..FOR_D1
        };
        let mut test = mapping(read_only, map::HOST_MAP);
        let why = refused(&mut test, status::GENERAL_ERROR);
        assert!(why.contains("is read-only"), "{why}");
        assert_eq!(
            test.other(2).grants.table[4].flags,
            flags::PERMIT_ACCESS | flags::READONLY
        );
    }

    #[test]
    fn map_of_an_entry_that_grants_nothing_is_gntst_general_error() {
        let mut test = mapping(GrantEntryV1::default(), map::HOST_MAP);
        let why = refused(&mut test, status::GENERAL_ERROR);
        assert!(why.contains("GTF_permit_access is clear"), "{why}");
    }

    #[test]
    fn a_domain_maps_its_own_grant_as_another_s() {
        // Xen's map_grant_ref looks the granter up by id alone: d1 maps its own grant 4 of
        // its page FRAME at HOST_ADDR, and unmaps it; the entry's flags follow, in its own
        // table.
        let mut test = op(
            cmd::MAP_GRANT_REF,
            &map_grant_ref(HOST_ADDR, map::HOST_MAP, 4, 1),
        );
        test.domain.grants.table[4] = FOR_D1;
        test.call();
        assert_status(&test, 18, status::OKAY);
        let grants = &test.domain.grants;
        assert_eq!((grants.mapped[4], grants.mapped_writable[4]), (1, 1));
        assert_ne!(grants.table[4].flags & flags::WRITING, 0);
        assert!(grants.mapped_at(HOST_ADDR));
        // And unmapped: the counts and flags back to none.
        test.write(SECOND, &unmap_grant_ref(HOST_ADDR, 0));
        next_call(&mut test, cmd::UNMAP_GRANT_REF, SECOND);
        let grants = &test.domain.grants;
        assert_eq!((grants.mapped[4], grants.mapped_writable[4]), (0, 0));
        assert_eq!(grants.table[4].flags & (flags::READING | flags::WRITING), 0);
    }

    #[test]
    fn map_of_a_grant_of_a_domain_that_does_not_exist_is_gntst_bad_domain() {
        let mut test = mapping(FOR_D1, map::HOST_MAP);
        test.write(DATA, &map_grant_ref(HOST_ADDR, map::HOST_MAP, 4, 9));
        let why = refused(&mut test, status::BAD_DOMAIN);
        assert!(why.contains("there is no such domain"), "{why}");
    }

    #[test]
    fn map_of_a_reference_outside_the_table_is_gntst_bad_gntref() {
        let mut test = mapping(FOR_D1, map::HOST_MAP);
        test.write(DATA, &map_grant_ref(HOST_ADDR, map::HOST_MAP, ENTRIES, 2));
        let why = refused(&mut test, status::BAD_GNTREF);
        assert!(why.contains("has no grant reference 32"), "{why}");
    }

    #[test]
    fn map_without_gntmap_host_map_is_gntst_bad_gntref() {
        // Xen's map_grant_ref: `if ( unlikely((op->flags & (GNTMAP_device_map |
        // GNTMAP_host_map)) == 0) ) { … op->status = GNTST_bad_gntref; }`.
        let mut test = mapping(FOR_D1, map::READONLY);
        let why = refused(&mut test, status::BAD_GNTREF);
        assert!(why.contains("ask for no mapping"), "{why}");
    }

    #[test]
    fn map_flags_beyond_a_host_mapping_are_gntst_general_error() {
        // A mapper whose memory the hypervisor translates gets host mappings only: Xen's
        // map_grant_ref refuses GNTMAP_device_map (bit 0), application_map (3) and
        // contains_pte (4) for it with GNTST_general_error, the host map bit or not.
        for flags in [
            1,
            1 | map::HOST_MAP,
            map::HOST_MAP | 1 << 3,
            map::HOST_MAP | 1 << 4,
            map::HOST_MAP | 1 << 16,
        ] {
            let mut test = mapping(FOR_D1, flags);
            let why = refused(&mut test, status::GENERAL_ERROR);
            assert!(
                why.contains("more than a host mapping"),
                "{flags:#x}: {why}"
            );
        }
        // Neither a host nor a device mapping: Xen's first check, GNTST_bad_gntref, whatever
        // else is asked.
        for flags in [0, 1 << 3, 1 << 4 | map::READONLY] {
            let mut test = mapping(FOR_D1, flags);
            let why = refused(&mut test, status::BAD_GNTREF);
            assert!(why.contains("ask for no mapping"), "{flags:#x}: {why}");
        }
    }

    #[test]
    fn map_of_a_grant_naming_a_frame_outside_the_granter_s_ram_is_gntst_bad_page() {
        let frame = (GUEST_RAM_SIZE >> 12) as u32;
        let mut test = mapping(GrantEntryV1 { frame, ..FOR_D1 }, map::HOST_MAP);
        let why = refused(&mut test, status::BAD_PAGE);
        assert!(why.contains("which is not d2's memory"), "{why}");
    }

    #[test]
    fn map_at_a_host_addr_that_is_misaligned_or_outside_the_area_is_gntst_bad_virt_addr() {
        let end = map_area().end;
        for host_addr in [HOST_ADDR + 0x10, MAP_AREA - 0x1000, end, 0x20_0000] {
            let mut test = mapping(FOR_D1, map::HOST_MAP);
            test.write(DATA, &map_grant_ref(host_addr, map::HOST_MAP, 4, 2));
            let why = refused(&mut test, status::BAD_VIRT_ADDR);
            assert!(
                why.contains(&format!(
                    "host_addr {host_addr:#x} is not a page of the grant-mapping area (0x40000000 to 0x40020000)"
                )),
                "{why}"
            );
        }
    }

    #[test]
    fn map_by_a_domain_whose_ram_covers_the_area_is_gntst_bad_virt_addr() {
        // The test's guest, with RAM up to 2 MiB past the area's start.
        let mut test = mapping_on(VecMemory::new(MAP_AREA + 0x20_0000, false));
        let why = refused(&mut test, status::BAD_VIRT_ADDR);
        assert!(
            why.contains("d1's RAM (1026 MiB) covers the grant-mapping area at 0x40000000"),
            "{why}"
        );
        assert!(test.foreign().is_empty(), "nothing mapped over its RAM");
        assert!(test.domain.grants.maptrack.is_empty());
    }

    #[test]
    fn a_grant_of_a_domain_that_has_ended_is_gntst_bad_domain() {
        use crate::domain::vcpu::RunState;
        let mut test = mapping(FOR_D1, map::HOST_MAP);
        test.other(2).vcpu.run_state = RunState::Ended;
        let why = refused(&mut test, status::BAD_DOMAIN);
        assert!(why.contains("(or it has ended)"), "{why}");
        assert!(test.foreign().is_empty());
    }

    #[test]
    fn the_last_page_of_the_area_may_be_mapped() {
        let last = map_area().end - 4096;
        let mut test = mapping(FOR_D1, map::HOST_MAP);
        test.write(DATA, &map_grant_ref(last, map::HOST_MAP, 4, 2));
        test.call();
        assert_status(&test, 18, status::OKAY);
        assert!(test.foreign().contains_key(&last));
    }

    #[test]
    fn map_where_a_grant_is_mapped_already_is_gntst_bad_virt_addr() {
        let mut test = mapping(FOR_D1, map::HOST_MAP);
        test.domain.grants.maptrack.push(Some(Mapping {
            granter: 3,
            gref: 0,
            host_addr: HOST_ADDR,
            readonly: true,
        }));
        let run = test.call();
        assert_status(&test, 18, status::BAD_VIRT_ADDR);
        assert_eq!(
            run.decision.why,
            "GNTTABOP_map_grant_ref: a grant is mapped at 0x40002000 already: GNTST_bad_virt_addr"
        );
        assert_eq!(test.domain.grants.maptrack.len(), 1);
        assert_eq!(test.other(2).grants.mapped[4], 0);
    }

    #[test]
    fn map_with_an_unreadable_structure_returns_efault_and_writes_nothing() {
        let mut test = mapping(FOR_D1, map::HOST_MAP);
        test.set_gpr(6, UNMAPPED);
        let run = test.call();
        assert_eq!(test.gpr(0) as i64, error::EFAULT);
        assert_eq!(
            run.decision.why,
            "GNTTABOP_map_grant_ref: its structure at 0x40000000 is not memory the guest can read and write (unmapped, read-only, a supervisor page at CPL 3, or not its RAM), EFAULT"
        );
        assert_eq!(
            run.emulate().what,
            "GNTTABOP_map_grant_ref: its structure at 0x40000000; grant_table_op returned -14 (EFAULT)"
        );
        assert!(test.foreign().is_empty());
    }

    // ---- GNTTABOP_unmap_grant_ref -----------------------------------------------------

    /// d1 with d2's grant 4 mapped at [`HOST_ADDR`] as handle 0, at
    /// `GNTTABOP_unmap_grant_ref` with `host_addr` and `handle` at [`SECOND`].
    fn unmapping(host_addr: u64, handle: u32) -> Test {
        let mut test = mapping(FOR_D1, map::HOST_MAP);
        test.call();
        assert_status(&test, 18, status::OKAY);
        test.write(SECOND, &unmap_grant_ref(host_addr, handle));
        test
    }

    fn unmap_status(test: &Test) -> i16 {
        read_i16(test, SECOND + 20)
    }

    #[test]
    fn unmap_takes_the_page_away_and_releases_the_grant() {
        // Xen's unmap_common: the mapping goes, the maptrack handle is freed, and the
        // granter's GTF_writing is cleared with its last mapping.
        let mut test = unmapping(HOST_ADDR, 0);
        let run = next_call(&mut test, cmd::UNMAP_GRANT_REF, SECOND);
        assert_eq!(
            run.decision.why,
            "GNTTABOP_unmap_grant_ref: the hypervisor takes d2's page (grant 4) away from 0x40002000 of d1"
        );
        assert_eq!(run.kinds(), ["decide", "grant_unmap", "emulate"]);
        assert_eq!(
            run.grant_unmapped(),
            &GrantUnmap {
                granter: 2,
                gref: 4,
                host_addr: HOST_ADDR,
                handle: 0,
            }
        );
        assert_eq!(test.gpr(0), 0);
        assert_eq!(unmap_status(&test), status::OKAY);
        assert!(test.foreign().is_empty(), "no longer in d1's nested tables");
        assert_eq!(
            test.domain.vcpu.vmcb.control.tlb_control, 1,
            "the TLB may hold the translation"
        );
        assert_eq!(test.domain.grants.mapping(0), None);
        let d2 = test.other(2);
        assert_eq!(d2.grants.mapped[4], 0);
        assert_eq!(d2.grants.table[4], FOR_D1, "GTF_writing cleared");
    }

    #[test]
    fn unmap_with_host_addr_0_leaves_the_mapping_and_returns_okay() {
        // unmap_common: `if ( op->host_addr && (op->flags & GNTMAP_host_map) )` guards the
        // only unmapping of a host mapping; without it the call does nothing, GNTST_okay.
        let mut test = unmapping(0, 0);
        let run = next_call(&mut test, cmd::UNMAP_GRANT_REF, SECOND);
        assert_eq!(unmap_status(&test), status::OKAY);
        assert_eq!(
            run.decision.why,
            format!(
                "GNTTABOP_unmap_grant_ref: host_addr 0 names no mapping to take away, so handle 0 stays mapped at {HOST_ADDR:#x} (as Xen's unmap_common): GNTST_okay"
            )
        );
        assert_eq!(test.foreign().len(), 1, "still in d1's nested tables");
        assert!(test.domain.grants.mapping(0).is_some());
        assert_eq!(test.other(2).grants.mapped[4], 1);
    }

    #[test]
    fn after_the_last_unmap_the_granter_may_end_access_and_the_handle_is_reused() {
        let mut test = unmapping(HOST_ADDR, 0);
        next_call(&mut test, cmd::UNMAP_GRANT_REF, SECOND);
        assert_eq!(test.domain.grants.free_handle(), 0);
        test.write(DATA, &map_grant_ref(HOST_ADDR, map::HOST_MAP, 4, 2));
        let run = next_call(&mut test, cmd::MAP_GRANT_REF, DATA);
        assert_eq!(run.grant_mapped().handle, 0);
    }

    #[test]
    fn one_of_two_mappings_unmapped_leaves_the_grant_in_use() {
        let mut test = unmapping(HOST_ADDR, 0);
        test.write(
            DATA,
            &map_grant_ref(HOST_ADDR + 0x1000, map::HOST_MAP, 4, 2),
        );
        next_call(&mut test, cmd::MAP_GRANT_REF, DATA);
        next_call(&mut test, cmd::UNMAP_GRANT_REF, SECOND);
        assert_eq!(unmap_status(&test), status::OKAY);
        let d2 = test.other(2);
        assert_eq!(d2.grants.mapped[4], 1);
        // Xen's _set_status_v1: GTF_reading for any mapping, GTF_writing for a writable one.
        assert_eq!(
            d2.grants.table[4].flags,
            flags::PERMIT_ACCESS | flags::READING | flags::WRITING
        );
    }

    #[test]
    fn a_pinned_page_table_is_mapped_read_only_or_not_at_all() {
        // d2 pinned the page it grants: mapped writable it would be written past the
        // hypervisor's checks (Xen: get_page_type(PGT_writable_page) fails).
        let mut test = mapping(FOR_D1, map::HOST_MAP);
        test.other(2)
            .pv
            .pinned_tables
            .insert((FRAME as u64) << 12, 1);
        let run = test.call();
        assert_status(&test, 18, status::GENERAL_ERROR);
        assert!(
            run.decision.why.contains("pinned page tables"),
            "{}",
            run.decision.why
        );
        let mut test = mapping(FOR_D1, map::HOST_MAP | map::READONLY);
        test.other(2)
            .pv
            .pinned_tables
            .insert((FRAME as u64) << 12, 1);
        test.call();
        assert_status(&test, 18, status::OKAY);
    }

    #[test]
    fn a_page_table_of_a_pin_under_way_is_mapped_read_only_or_not_at_all() {
        // d2's pin_page_table is walked in pieces, and its walk so far found the granted
        // page as a table: pinned at the end without a second look, it must not be mapped
        // writable in between (in Xen the page keeps its partial page-table type).
        let pinning = || {
            let table = (FRAME as u64) << 12;
            Some(Box::new(Pinning {
                found: vec![(table, 1)],
                seen: [(table, 1)].into(),
                ..Pinning::default()
            }))
        };
        let mut test = mapping(FOR_D1, map::HOST_MAP);
        test.other(2).pv.pinning = pinning();
        let run = test.call();
        assert_status(&test, 18, status::GENERAL_ERROR);
        assert!(
            run.decision.why.contains("pin_page_table is pinning"),
            "{}",
            run.decision.why
        );
        assert_eq!(test.other(2).grants.mapped[4], 0);
        let mut test = mapping(FOR_D1, map::HOST_MAP | map::READONLY);
        test.other(2).pv.pinning = pinning();
        test.call();
        assert_status(&test, 18, status::OKAY);
    }

    #[test]
    fn gtf_writing_goes_with_the_last_writable_mapping_and_gtf_reading_with_the_last() {
        // Handle 0 writable, handle 1 read-only, then handle 0 unmapped: the page is still
        // mapped, read-only (Xen's unmap_common_complete).
        let mut test = unmapping(HOST_ADDR, 0);
        test.write(
            DATA,
            &map_grant_ref(HOST_ADDR + 0x1000, map::HOST_MAP | map::READONLY, 4, 2),
        );
        next_call(&mut test, cmd::MAP_GRANT_REF, DATA);
        next_call(&mut test, cmd::UNMAP_GRANT_REF, SECOND);
        assert_eq!(unmap_status(&test), status::OKAY);
        let d2 = test.other(2);
        assert_eq!((d2.grants.mapped[4], d2.grants.mapped_writable[4]), (1, 0));
        assert_eq!(
            d2.grants.table[4].flags,
            flags::PERMIT_ACCESS | flags::READING
        );
    }

    #[test]
    fn unmap_of_a_handle_that_is_no_mapping_is_gntst_bad_handle() {
        let mut test = unmapping(HOST_ADDR, 1);
        let run = next_call(&mut test, cmd::UNMAP_GRANT_REF, SECOND);
        assert_eq!(
            run.decision.why,
            "GNTTABOP_unmap_grant_ref: d1 has no mapping with handle 1: GNTST_bad_handle"
        );
        assert_eq!(unmap_status(&test), status::BAD_HANDLE);
        assert_eq!(run.kinds(), ["decide", "emulate"]);
        assert_eq!(test.foreign().len(), 1, "handle 0 still mapped");
    }

    #[test]
    fn unmap_at_another_host_addr_than_the_handle_s_is_gntst_general_error() {
        let mut test = unmapping(HOST_ADDR + 0x1000, 0);
        let run = next_call(&mut test, cmd::UNMAP_GRANT_REF, SECOND);
        assert_eq!(
            run.decision.why,
            "GNTTABOP_unmap_grant_ref: handle 0 is mapped at 0x40002000, not at 0x40003000: GNTST_general_error"
        );
        assert_eq!(unmap_status(&test), status::GENERAL_ERROR);
        assert_eq!(test.foreign().len(), 1);
        assert_eq!(test.other(2).grants.mapped[4], 1);
    }

    #[test]
    fn an_unknown_command_returns_enosys() {
        let mut test = op(2, &[]);
        let run = test.call();
        assert_eq!(test.gpr(0) as i64, error::ENOSYS);
        assert_eq!(
            run.decision.why,
            "grant_table_op(2): no such command, the guest gets ENOSYS"
        );
        // Bits 63:32 are no part of the command (Xen's is an unsigned int).
        let mut test = op(1 << 32 | 2, &[]);
        let run = test.call();
        assert!(run.decision.why.starts_with("grant_table_op(2)"));
    }

    #[test]
    fn a_command_with_a_continuation_s_bits_is_einval() {
        let mut test = op(1 << 12 | cmd::END_ACCESS, &[]);
        let run = test.call();
        assert_eq!(test.gpr(0) as i64, error::EINVAL);
        assert!(
            run.decision.why.contains("bits 31:12"),
            "{}",
            run.decision.why
        );
        // Bits 11:0 are the command: 0x80 and up are commands there are none of.
        let mut test = op(0x80 | cmd::END_ACCESS, &[]);
        test.call();
        assert_eq!(test.gpr(0) as i64, error::ENOSYS);
    }
}
