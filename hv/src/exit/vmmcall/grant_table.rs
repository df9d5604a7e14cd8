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
    ENTRIES, GrantEntryV1, MAP_AREA, MAP_AREA_PAGES, cmd, flags, map, status,
};
use traplab_abi::hypercall::{self, error};

pub fn handle(guest: &Guest, next: u64, command: u64, arg: u64) -> Decision {
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
        "{name}: its structure at {arg:#x} is not in the guest's memory, EFAULT"
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
    let argument = Argument::<16>::read(guest, arg).map_err(|_| unreadable(NAME, arg))?;
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
    let argument = Argument::<8>::read(guest, arg).map_err(|_| unreadable(NAME, arg))?;
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
    let argument = Argument::<32>::read(guest, arg).map_err(|_| unreadable(NAME, arg))?;
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
    if map_flags & map::HOST_MAP == 0 {
        return refuse(
            decide!(
                Action::Emulate,
                "{NAME}: flags {map_flags:#x} ask for no mapping (GNTMAP_host_map is not set): as Xen, GNTST_bad_gntref"
            ),
            status::BAD_GNTREF,
        );
    }
    let granter = match guest.others.domain(dom) {
        Some(granter) => granter,
        None => {
            let why = match dom == guest.id {
                true => "a domain maps other domains' grants, not its own",
                false => "there is no such domain",
            };
            return refuse(
                decide!(
                    Action::Emulate,
                    "{NAME}: grant {gref} of d{dom}: {why}, GNTST_bad_domain"
                ),
                status::BAD_DOMAIN,
            );
        }
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
    let area = MAP_AREA..MAP_AREA + MAP_AREA_PAGES * 4096;
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
    .with(Effect::MapGrant {
        granter: dom,
        gref,
        host_addr,
        readonly,
        handle,
    })
    .with(argument.write(HANDLE, &handle.to_le_bytes()))
    .describe(format!(
        "{NAME}: d{dom} grant {gref} at {host_addr:#x}, handle {handle}"
    ));
    Ok(with_status(decision, &argument, STATUS, status::OKAY))
}

/// `GNTTABOP_unmap_grant_ref`: take the mapping `handle` away.
fn unmap_grant_ref(guest: &Guest, arg: u64) -> Outcome {
    const NAME: &str = "GNTTABOP_unmap_grant_ref";
    let argument = Argument::<24>::read(guest, arg).map_err(|_| unreadable(NAME, arg))?;
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
    if host_addr != 0 && host_addr != mapping.host_addr {
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
