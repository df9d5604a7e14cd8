//! Grant tables: how one domain lets another map a page of its memory, on Xen's v1 ABI
//! (`xen/include/public/grant_table.h`).
//!
//! The granting domain fills an entry of its grant table: this *frame* (a guest-physical
//! page number of mine), for that *domain*, read-only or not. It passes the entry's index,
//! the *grant reference*, to the other domain out of band (the store). That domain asks the
//! hypervisor to map the grant (`GNTTABOP_map_grant_ref`) at a guest-physical address of
//! its own; the hypervisor checks the entry and maps the granter's host frame there in the
//! mapper's nested page tables. Both now reach the same memory. Unmapping
//! (`GNTTABOP_unmap_grant_ref`) takes the frame away again; the granter may end access only
//! once nobody maps it. A page the granter pinned as a page table (`pin_page_table`) is
//! mapped read-only or not at all (`GNTST_general_error` for a writable mapping, as Xen's
//! type check refuses one), as is a page the granter's `pin_page_table` has found while
//! its walk goes on; and a page mapped writable elsewhere cannot be pinned.
//!
//! Where traplab differs from Xen: Xen shares the table's pages with the granter, which
//! writes entries directly (and ends access with an atomic compare-and-exchange on the
//! flags); in traplab the hypervisor keeps the table and the granter fills and clears
//! entries with two hypercalls of traplab's own ([`cmd::GRANT_ACCESS`],
//! [`cmd::END_ACCESS`]), so that every change is a trap the trace shows, and a bad one is
//! refused with an error code. The entries, the map and unmap calls and the error codes are
//! Xen's.
//!
//! The calls are `grant_table_op(cmd, arg)` (hypercall [`crate::hypercall::GRANT_TABLE_OP`]),
//! `arg` the guest-virtual address of the command's structure: one operation a call. Xen's
//! takes a third argument, `count`, and does that many structures in a row; traplab reads
//! no count (RDX is ignored), so a guest that batches gets only its first done.

/// An index into a domain's grant table.
pub type GrantRef = u32;

/// How many entries a domain's grant table has in traplab.
pub const ENTRIES: u32 = 32;

/// Where a domain maps the pages others grant it: [`MAP_AREA_PAGES`] guest-physical pages
/// from here, above its RAM, that nothing else uses. A `host_addr` must be one of them. (A
/// Xen HVM guest maps grants over RAM pages it gave back to the hypervisor; traplab keeps
/// them apart, so a grant mapping is never mistaken for the guest's own memory.) The guest
/// maps the page into its own page tables to use it. A write to a page it mapped read-only
/// is #GP(0), as Xen answers an HVM guest; once unmapped, the slot is outside its memory, an
/// empty bus (reads all ones, writes go nowhere), as any address above its RAM. A domain whose RAM
/// reaches the area (a kernel run with `--memory` over 1024 MiB) has no room to map a grant:
/// `GNTTABOP_map_grant_ref` answers it `GNTST_bad_virt_addr`.
pub const MAP_AREA: u64 = 0x4000_0000;
pub const MAP_AREA_PAGES: u64 = 32;

/// The guest-physical addresses of the grant-mapping area.
pub const fn map_area() -> core::ops::Range<u64> {
    MAP_AREA..MAP_AREA + MAP_AREA_PAGES * 4096
}

/// One grant (Xen's `grant_entry_v1`): who may map which frame, how.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GrantEntryV1 {
    /// [`flags`].
    pub flags: u16,
    /// The domain that may map it.
    pub domid: u16,
    /// The granter's frame: its guest-physical address / 4096.
    pub frame: u32,
}

/// The flags of an entry (Xen's `GTF_*`).
pub mod flags {
    /// The entry grants access.
    pub const PERMIT_ACCESS: u16 = 1;
    /// Read-only: the mapper may only map it read-only.
    pub const READONLY: u16 = 1 << 2;
    /// Set by the hypervisor while the grant is mapped at all (in use), as Xen's
    /// `_set_status_v1` sets it for every mapping.
    pub const READING: u16 = 1 << 3;
    /// Set by the hypervisor while the grant is mapped writable somewhere.
    pub const WRITING: u16 = 1 << 4;
}

/// The commands of `grant_table_op`.
pub mod cmd {
    /// [`super::MapGrantRef`] (Xen's `GNTTABOP_map_grant_ref`).
    pub const MAP_GRANT_REF: u64 = 0;
    /// [`super::UnmapGrantRef`] (Xen's `GNTTABOP_unmap_grant_ref`).
    pub const UNMAP_GRANT_REF: u64 = 1;
    /// [`super::GrantAccess`]: fill one entry of the caller's table (traplab's own).
    pub const GRANT_ACCESS: u64 = 32;
    /// [`super::EndAccess`]: clear one entry of the caller's table, unless it is mapped
    /// (traplab's own).
    pub const END_ACCESS: u64 = 33;
    /// Bits 31:12 of a command carry a continuation's progress (Xen's
    /// `GNTTABOP_CONTINUATION_ARG_SHIFT`; the command is bits 11:0, `GNTTABOP_CMD_MASK`).
    /// Only Xen's `GNTTABOP_cache_flush` takes one: with any other command they are `EINVAL`.
    pub const CONTINUATION_SHIFT: u32 = 12;

    /// The command's name.
    pub fn name(cmd: u64) -> Option<&'static str> {
        Some(match cmd {
            MAP_GRANT_REF => "GNTTABOP_map_grant_ref",
            UNMAP_GRANT_REF => "GNTTABOP_unmap_grant_ref",
            GRANT_ACCESS => "GNTTABOP_grant_access",
            END_ACCESS => "GNTTABOP_end_access",
            _ => return None,
        })
    }
}

/// How a grant is mapped (Xen's `GNTMAP_*`).
pub mod map {
    /// Map it for a device's DMA (Xen's `GNTMAP_device_map`): not for a guest whose memory
    /// the hypervisor translates, as traplab's are.
    pub const DEVICE_MAP: u32 = 1 << 0;
    /// Map it into the caller's (guest-physical) address space at `host_addr`.
    pub const HOST_MAP: u32 = 1 << 1;
    /// Read-only.
    pub const READONLY: u32 = 1 << 2;
}

/// `GNTTABOP_map_grant_ref`: map grant `gref` of domain `dom` at guest-physical `host_addr`
/// of the caller. Out: `status` ([`status`]) and `handle`, which unmapping names.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MapGrantRef {
    pub host_addr: u64,
    /// [`map`].
    pub flags: u32,
    pub gref: GrantRef,
    pub dom: u16,
    pub status: i16,
    pub handle: u32,
    pub dev_bus_addr: u64,
}

/// `GNTTABOP_unmap_grant_ref`: unmap `handle` (mapped at `host_addr`). Out: `status`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UnmapGrantRef {
    pub host_addr: u64,
    pub dev_bus_addr: u64,
    pub handle: u32,
    pub status: i16,
    pub _pad: u16,
}

/// [`cmd::GRANT_ACCESS`]: entry `gref` grants `frame` to `domid`; `readonly` 1 for a
/// read-only grant. Out: `status`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GrantAccess {
    pub gref: GrantRef,
    pub domid: u16,
    pub readonly: u8,
    pub _pad: u8,
    pub frame: u32,
    pub status: i16,
    pub _pad2: u16,
}

/// [`cmd::END_ACCESS`]: clear entry `gref`. Out: `status` ([`status::EAGAIN`] while the
/// grant is mapped).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EndAccess {
    pub gref: GrantRef,
    pub status: i16,
    pub _pad: u16,
}

/// The status codes (Xen's `GNTST_*`).
pub mod status {
    pub const OKAY: i16 = 0;
    pub const GENERAL_ERROR: i16 = -1;
    pub const BAD_DOMAIN: i16 = -2;
    pub const BAD_GNTREF: i16 = -3;
    pub const BAD_HANDLE: i16 = -4;
    pub const BAD_VIRT_ADDR: i16 = -5;
    pub const PERMISSION_DENIED: i16 = -8;
    pub const BAD_PAGE: i16 = -9;
    pub const EAGAIN: i16 = -12;

    /// The code's name, as Xen spells it.
    pub fn name(status: i16) -> Option<&'static str> {
        Some(match status {
            OKAY => "GNTST_okay",
            GENERAL_ERROR => "GNTST_general_error",
            BAD_DOMAIN => "GNTST_bad_domain",
            BAD_GNTREF => "GNTST_bad_gntref",
            BAD_HANDLE => "GNTST_bad_handle",
            BAD_VIRT_ADDR => "GNTST_bad_virt_addr",
            PERMISSION_DENIED => "GNTST_permission_denied",
            BAD_PAGE => "GNTST_bad_page",
            EAGAIN => "GNTST_eagain",
            _ => return None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::{offset_of, size_of};

    #[test]
    fn the_structures_have_xen_s_layout() {
        assert_eq!(size_of::<GrantEntryV1>(), 8);
        assert_eq!(size_of::<MapGrantRef>(), 32);
        assert_eq!(offset_of!(MapGrantRef, gref), 12);
        assert_eq!(offset_of!(MapGrantRef, dom), 16);
        assert_eq!(offset_of!(MapGrantRef, status), 18);
        assert_eq!(offset_of!(MapGrantRef, handle), 20);
        assert_eq!(size_of::<UnmapGrantRef>(), 24);
        assert_eq!(offset_of!(UnmapGrantRef, handle), 16);
        assert_eq!(offset_of!(UnmapGrantRef, status), 20);
        assert_eq!(size_of::<GrantAccess>(), 16);
        assert_eq!(size_of::<EndAccess>(), 8);
        assert_eq!(status::name(status::EAGAIN), Some("GNTST_eagain"));
    }
}
