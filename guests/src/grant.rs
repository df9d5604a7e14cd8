//! Grants from the guest's side (`grant_table_op`, `traplab_abi::grant_table`): share a
//! page of ours with another domain, or map a page another domain shared with us.

use crate::hypercall::grant_table_op;
use crate::paging;
use traplab_abi::grant_table::{
    EndAccess, GrantAccess, GrantRef, MapGrantRef, UnmapGrantRef, cmd, map, status,
};

fn op<T>(command: u64, argument: &mut T) -> i64 {
    // SAFETY: `argument` is the structure `command` expects, and lives across the call.
    unsafe { grant_table_op(command, argument as *mut T as u64) }
}

/// A status, or the hypercall's own error when it could not read the structure.
fn status_of(result: i64, status: i16) -> i16 {
    if result < 0 { result as i16 } else { status }
}

/// Grant domain `to` access to our page at `page` (guest-physical) as entry `gref`.
/// A `GNTST_*` status.
pub fn grant_access(gref: GrantRef, to: u16, page: u64, readonly: bool) -> i16 {
    let mut argument = GrantAccess {
        gref,
        domid: to,
        readonly: readonly as u8,
        frame: (page >> 12) as u32,
        ..Default::default()
    };
    status_of(op(cmd::GRANT_ACCESS, &mut argument), argument.status)
}

/// End grant `gref` (`GNTST_eagain` while someone maps it).
pub fn end_access(gref: GrantRef) -> i16 {
    let mut argument = EndAccess {
        gref,
        ..Default::default()
    };
    status_of(op(cmd::END_ACCESS, &mut argument), argument.status)
}

/// Map grant `gref` of domain `from` at guest-physical `host_addr` (a page of
/// `traplab_abi::grant_table::MAP_AREA`), and at the same virtual address in our page
/// tables. The handle, or the `GNTST_*` status.
pub fn map(from: u16, gref: GrantRef, host_addr: u64, readonly: bool) -> Result<u32, i16> {
    let mut argument = MapGrantRef {
        host_addr,
        flags: map::HOST_MAP | if readonly { map::READONLY } else { 0 },
        gref,
        dom: from,
        ..Default::default()
    };
    let code = status_of(op(cmd::MAP_GRANT_REF, &mut argument), argument.status);
    if code != status::OKAY {
        return Err(code);
    }
    // The hypervisor mapped it in the nested page tables; our own page tables must map it
    // too before we can touch it, writable or not as this grant is (the address is reused
    // for the next grant, which may be the other kind).
    let mut flags = paging::Flags::NO_EXECUTE;
    if !readonly {
        flags |= paging::Flags::WRITABLE;
    }
    let mapped = match paging::translate(host_addr) {
        None => paging::map(host_addr, host_addr, flags).is_ok(),
        // Mapped already to itself (an earlier grant's page): only the flags change. Mapped
        // to another frame (the guest's own page there): no place for a grant, which it
        // would never reach through that mapping.
        Some(physical) if physical == host_addr => paging::set_flags(host_addr, flags),
        Some(_) => false,
    };
    if !mapped {
        // The hypervisor's mapping stands: undone, or the granter could never end its grant
        // (`GNTST_eagain` while mapped), and the handle would be lost with it.
        unmap(argument.handle, host_addr);
        return Err(status::GENERAL_ERROR);
    }
    Ok(argument.handle)
}

/// Unmap the grant mapped as `handle` at `host_addr`. A `GNTST_*` status.
pub fn unmap(handle: u32, host_addr: u64) -> i16 {
    let mut argument = UnmapGrantRef {
        host_addr,
        handle,
        ..Default::default()
    };
    status_of(op(cmd::UNMAP_GRANT_REF, &mut argument), argument.status)
}
