//! The split block driver: how one domain reads and writes a disk that another domain
//! owns, on Xen's ABI (`xen/include/public/io/ring.h` and `xen/include/public/io/blkif.h`).
//!
//! The domain that owns the disk runs the *backend* (Xen: `blkback` in dom0); the domain
//! that wants a disk runs the *frontend* (Xen: `blkfront`). They share one page, the
//! *ring*, and an event channel ([`crate::evtchn`]). The frontend allocates the page,
//! initialises it ([`SharedRing::init`]), grants it to the backend ([`crate::grant_table`])
//! and publishes the grant reference and its port in the store ([`crate::store`]), as Xen's
//! frontends publish `ring-ref` and `event-channel` in xenstore. The backend maps the grant:
//! from then on both domains read and write the same 4 KiB.
//!
//! The shared page (`struct blkif_sring`, x86-64), offsets from its start:
//!
//! | offset | field       | written by | meaning                                                  |
//! |--------|-------------|------------|----------------------------------------------------------|
//! | 0      | `req_prod`  | frontend   | requests ever published (a free-running counter)         |
//! | 4      | `req_event` | backend    | "notify me when `req_prod` reaches this"                 |
//! | 8      | `rsp_prod`  | backend    | responses ever published                                 |
//! | 12     | `rsp_event` | frontend   | "notify me when `rsp_prod` reaches this"                 |
//! | 16     | padding     | frontend   | 48 zero bytes (Xen keeps a few for netif/tapif flags)    |
//! | 64     | `ring[32]`  | both       | [`RING_SIZE`] entries of [`ENTRY_SIZE`] bytes            |
//!
//! An entry holds a [`Request`] until the backend has read it; the backend then writes
//! [`Response`]s into the *same* slots, in order: its n-th response goes to the slot the
//! n-th request came from (it may answer another request: its `id` says which). That is
//! why a frontend never has more than [`RING_SIZE`] requests in flight: a request's slot is
//! free again only once a response in it has been read.
//!
//! The indexes never wrap at [`RING_SIZE`]: they count for ever, as `u32`s that wrap at
//! 2³², and the slot of index `i` is `i & (RING_SIZE - 1)`. Differences such as
//! `req_prod - req_cons` (wrapping) are always right, which is why the ring size must be a
//! power of two: 2³² is then a multiple of it, so slot numbers stay in step across the wrap.
//!
//! One read, step by step:
//!
//! 1. The frontend grants the page the data should land in, fills a [`Request`]
//!    ([`operation::READ`], a [`Segment`] naming the grant and sectors 0–7 of the page,
//!    the disk sector), and [`FrontRing::push_request`]s it. It then
//!    [`FrontRing::push_requests_and_check_notify`]: `req_prod` moves, and if the backend
//!    asked to be told ([`needs_notify`]), the frontend sends on the event channel.
//! 2. The backend, woken, [`BackRing::take_request`]s until there are none, checks each
//!    ([`check_request`]), does it (maps the grant, copies the sectors), and
//!    [`BackRing::push_response`]s the status. It publishes them
//!    ([`BackRing::push_responses_and_check_notify`]), notifying if the frontend asked.
//!    Before it sleeps it makes a [`BackRing::final_check_for_requests`].
//! 3. The frontend, woken, [`FrontRing::take_response`]s, finds its request by `id`, and
//!    makes a [`FrontRing::final_check_for_responses`] before it sleeps.
//!
//! Xen's macros and their counterparts here:
//!
//! | Xen (`io/ring.h`)                       | here                                         |
//! |-----------------------------------------|----------------------------------------------|
//! | `SHARED_RING_INIT`                      | [`SharedRing::init`]                         |
//! | `FRONT_RING_INIT`, `BACK_RING_INIT`     | [`FrontRing::new`], [`BackRing::new`]        |
//! | `RING_FREE_REQUESTS`, `RING_FULL`       | [`FrontRing::free_requests`], [`FrontRing::full`] |
//! | `RING_GET_REQUEST` and `req_prod_pvt++` | [`FrontRing::push_request`]                  |
//! | `RING_PUSH_REQUESTS_AND_CHECK_NOTIFY`   | [`FrontRing::push_requests_and_check_notify`] |
//! | `RING_HAS_UNCONSUMED_REQUESTS`          | [`BackRing::unconsumed_requests`]            |
//! | `RING_REQUEST_PROD_OVERFLOW`            | [`BackRing::overflowed`]                     |
//! | `RING_COPY_REQUEST` and `req_cons++`    | [`BackRing::take_request`]                   |
//! | `RING_FINAL_CHECK_FOR_REQUESTS`         | [`BackRing::final_check_for_requests`]       |
//! | `RING_GET_RESPONSE` and `rsp_prod_pvt++`| [`BackRing::push_response`]                  |
//! | `RING_PUSH_RESPONSES_AND_CHECK_NOTIFY`  | [`BackRing::push_responses_and_check_notify`] |
//! | `RING_HAS_UNCONSUMED_RESPONSES`         | [`FrontRing::unconsumed_responses`]          |
//! | `RING_FINAL_CHECK_FOR_RESPONSES`        | [`FrontRing::final_check_for_responses`]     |
//!
//! Where traplab differs from Xen: the ring is always one 4 KiB page, so its size is the
//! constant [`RING_SIZE`] (Xen computes `nr_ents` at init, and may use several pages,
//! `ring-page-order`); a sector is always 512 bytes (no `feature-large-sector-size`); the
//! backend does reads and writes only (no write barriers, flushes, discards or indirect
//! requests: it answers [`status::EOPNOTSUPP`]); and the layout is x86-64's (on 32-bit x86
//! a `u64` is 4-aligned, and Xen's request is 108 bytes). Both ends also refuse to read
//! more than an honest other end could have written ([`BackRing::overflowed`],
//! [`FrontRing::overflowed`]), as Linux's blkback and blkfront do.

use core::mem::{offset_of, size_of};
use core::ptr;
use core::sync::atomic::{AtomicU32, Ordering, fence};

use crate::grant_table::GrantRef;

/// The bytes in a sector: the unit of [`Request::sector_number`] and of a segment's
/// `first_sect`/`last_sect` (Xen: always 512, whatever the disk's own sector size).
pub const SECTOR_SIZE: usize = 512;
/// The sectors in one 4 KiB page: a segment's sectors are 0 to `SECTORS_PER_PAGE - 1`.
pub const SECTORS_PER_PAGE: u8 = 8;
/// The most segments one request carries (Xen's `BLKIF_MAX_SEGMENTS_PER_REQUEST`): 11 is
/// what keeps a request at 112 bytes, so that 32 of them fit in a page beside the header.
pub const MAX_SEGMENTS: usize = 11;
/// The size of the shared page, and of the pages segments name.
pub const PAGE_SIZE: usize = 4096;
/// The bytes before the first entry: the four indexes and 48 bytes of padding.
pub const HEADER_SIZE: usize = 64;
/// The bytes of one entry: the union of a [`Request`] (112) and a [`Response`] (16).
pub const ENTRY_SIZE: usize = 112;
/// The entries in a one-page ring: (4096 − 64) / 112 = 36, rounded down to 32.
pub const RING_SIZE: u32 = ring_size(PAGE_SIZE);

/// How many entries fit in a ring of `page` bytes: as many as fit after the header,
/// rounded *down* to a power of two (Xen's `__CONST_RING_SIZE`, whose `__RD32` does the
/// rounding). A power of two, because slots are found by masking a free-running index
/// (see the module documentation). 0 when not even one entry fits.
pub const fn ring_size(page: usize) -> u32 {
    let entries = page.saturating_sub(HEADER_SIZE) / ENTRY_SIZE;
    // Xen's indexes are 32-bit: a ring can have at most 2³¹ entries.
    let entries = if entries > u32::MAX as usize {
        u32::MAX
    } else {
        entries as u32
    };
    match entries.checked_ilog2() {
        Some(log) => 1 << log,
        None => 0,
    }
}

/// What a request asks for (Xen's `BLKIF_OP_*`). traplab's backends do
/// [`READ`](operation::READ) and [`WRITE`](operation::WRITE); the others are named so that
/// a trace can say what was refused.
pub mod operation {
    /// Read sectors from the disk into the segments' pages.
    pub const READ: u8 = 0;
    /// Write the segments' pages to the disk.
    pub const WRITE: u8 = 1;
    /// A write that waits for every earlier one to reach the disk (unsupported here).
    pub const WRITE_BARRIER: u8 = 2;
    /// Flush the disk's write cache (unsupported here).
    pub const FLUSH_DISKCACHE: u8 = 3;
    /// Reserved (once used by blktap).
    pub const RESERVED_1: u8 = 4;
    /// Tell the disk a range of sectors is no longer used (unsupported here).
    pub const DISCARD: u8 = 5;
    /// A request whose segments are in separate granted pages (unsupported here).
    pub const INDIRECT: u8 = 6;

    /// The operation's name, as Xen spells it.
    pub fn name(op: u8) -> Option<&'static str> {
        Some(match op {
            READ => "BLKIF_OP_READ",
            WRITE => "BLKIF_OP_WRITE",
            WRITE_BARRIER => "BLKIF_OP_WRITE_BARRIER",
            FLUSH_DISKCACHE => "BLKIF_OP_FLUSH_DISKCACHE",
            RESERVED_1 => "BLKIF_OP_RESERVED_1",
            DISCARD => "BLKIF_OP_DISCARD",
            INDIRECT => "BLKIF_OP_INDIRECT",
            _ => return None,
        })
    }
}

/// How a request ended: [`Response::status`] (Xen's `BLKIF_RSP_*`).
pub mod status {
    /// Done.
    pub const OKAY: i16 = 0;
    /// Not done: the request was wrong or the disk failed (Xen: "-EIO").
    pub const ERROR: i16 = -1;
    /// Not done: the backend does not do this operation.
    pub const EOPNOTSUPP: i16 = -2;

    /// The status's name, as Xen spells it.
    pub fn name(status: i16) -> Option<&'static str> {
        Some(match status {
            OKAY => "BLKIF_RSP_OKAY",
            ERROR => "BLKIF_RSP_ERROR",
            EOPNOTSUPP => "BLKIF_RSP_EOPNOTSUPP",
            _ => return None,
        })
    }
}

/// One piece of a request's data (Xen's `blkif_request_segment`): sectors `first_sect` to
/// `last_sect` (both included) of a page the frontend granted. A request's segments follow
/// each other on the disk: together they are one run of sectors from `sector_number`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Segment {
    /// The grant of the page the data comes from (write) or goes to (read). +0
    pub gref: GrantRef,
    /// The first sector of the page to transfer, 0 to 7. +4
    pub first_sect: u8,
    /// The last sector of the page to transfer (included), `first_sect` to 7. +5
    pub last_sect: u8,
    /// Padding to 8 bytes, as the C compiler adds after two `u8`s. +6
    pub _pad: u16,
}

/// A read or write (Xen's `blkif_request`, x86-64 layout).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Request {
    /// [`operation`]. +0
    pub operation: u8,
    /// How many of `seg` are used: 1 to [`MAX_SEGMENTS`]. +1
    pub nr_segments: u8,
    /// Which of the backend's disks (Xen's `blkif_vdev_t`); traplab's backends have one. +2
    pub handle: u16,
    /// Padding: C aligns `id` to 8. +4
    pub _pad: u32,
    /// The frontend's own tag, echoed in the response: responses may come in any order,
    /// and this is how the frontend tells which request one answers. +8
    pub id: u64,
    /// The first disk sector (of [`SECTOR_SIZE`] bytes) to read or write. +16
    pub sector_number: u64,
    /// The pages, in disk order. +24
    pub seg: [Segment; MAX_SEGMENTS],
}

/// The answer to one request (Xen's `blkif_response`).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Response {
    /// The request's `id`. +0
    pub id: u64,
    /// The request's `operation`. +8
    pub operation: u8,
    /// Padding: C aligns `status` to 2. +9
    pub _pad: u8,
    /// [`status`]. +10
    pub status: i16,
    /// Padding: the C struct is 8-aligned, so its size rounds up to 16. +12
    pub _pad2: u32,
}

// The layout is Xen's on x86-64: the other end may be a C driver, so every offset counts.
const _: () = {
    assert!(size_of::<Segment>() == 8);
    assert!(offset_of!(Segment, first_sect) == 4);
    assert!(offset_of!(Segment, last_sect) == 5);
    assert!(size_of::<Request>() == 112);
    assert!(align_of::<Request>() == 8);
    assert!(offset_of!(Request, nr_segments) == 1);
    assert!(offset_of!(Request, handle) == 2);
    assert!(offset_of!(Request, id) == 8);
    assert!(offset_of!(Request, sector_number) == 16);
    assert!(offset_of!(Request, seg) == 24);
    assert!(size_of::<Response>() == 16);
    assert!(offset_of!(Response, operation) == 8);
    assert!(offset_of!(Response, status) == 10);
    // An entry is the union of the two.
    assert!(ENTRY_SIZE == size_of::<Request>() && ENTRY_SIZE >= size_of::<Response>());
    // Entries stay 8-aligned in an 8-aligned page, as `read_volatile` of a Request needs.
    assert!(HEADER_SIZE.is_multiple_of(8) && ENTRY_SIZE.is_multiple_of(8));
    assert!(RING_SIZE == 32);
    assert!(HEADER_SIZE + RING_SIZE as usize * ENTRY_SIZE <= PAGE_SIZE);
    assert!(SECTORS_PER_PAGE as usize * SECTOR_SIZE == PAGE_SIZE);
};

// Offsets of the four indexes in the page.
const REQ_PROD: usize = 0;
const REQ_EVENT: usize = 4;
const RSP_PROD: usize = 8;
const RSP_EVENT: usize = 12;
const PADDING: usize = 16;

// The barriers, under Xen's names, at the places Xen's macros have them.
//
// On x86 the CPU keeps stores in order among themselves and loads in order among
// themselves, so `wmb` and `rmb` only have to stop the *compiler* from moving accesses
// across them; a `Release`/`Acquire` fence would do. `mb` is different: x86 lets a load
// pass an earlier store (the store sits in the store buffer while the load goes ahead),
// and "store my index, then load the other end's event" is exactly that pattern: it needs
// an `mfence`, which is what `fence(SeqCst)` becomes. We use `SeqCst` for all three: one
// rule that is right on every CPU, and a ring costs a few fences per batch, not per byte.

/// Xen's `wmb()`: the writes before it are seen before the writes after it.
fn wmb() {
    fence(Ordering::SeqCst);
}

/// Xen's `rmb()`: the reads before it happen before the reads after it.
fn rmb() {
    fence(Ordering::SeqCst);
}

/// Xen's `mb()`: every access before it happens before every access after it, in
/// particular a store before a later load.
fn mb() {
    fence(Ordering::SeqCst);
}

/// The hold-off rule both `PUSH_..._AND_CHECK_NOTIFY` macros share: having moved a
/// producer index from `old` to `new`, notify the other end if its `event` lies in
/// `(old, new]`, that is, if one of the entries just published is the one it asked to be
/// woken for.
///
/// Measured backwards from `new` with wrapping subtraction, `event` is inside the batch
/// when it is nearer to `new` than `old` is: `new - event < new - old`. This stays right
/// when the counters wrap past `u32::MAX`, where `old < event <= new` would not.
pub fn needs_notify(old: u32, new: u32, event: u32) -> bool {
    new.wrapping_sub(event) < new.wrapping_sub(old)
}

/// The shared ring page (`struct blkif_sring`), seen through a raw pointer: both ends
/// change it, at any time, so nothing here ever holds a Rust reference to its contents.
///
/// The four indexes are read and written as `AtomicU32`s: each is one whole 32-bit access
/// that the compiler may not split, merge or leave out. They carry no ordering of their own
/// (`Relaxed`): [`FrontRing`] and [`BackRing`] put Xen's barriers around them. Entries are
/// copied in and out with volatile accesses, exactly once each.
#[derive(Debug)]
pub struct SharedRing {
    base: *mut u8,
}

// SAFETY: a `SharedRing` is a pointer into memory that is shared anyway (with another
// domain); it touches the indexes only atomically and the entries only by volatile copies,
// so moving it to another thread adds no access that was not already possible.
unsafe impl Send for SharedRing {}

impl SharedRing {
    /// A view of the ring page at `page`.
    ///
    /// # Safety
    /// `page` must point to [`PAGE_SIZE`] readable and writable bytes, 8-aligned, that
    /// stay mapped while the value lives. (The other end may write them at any time: that
    /// is expected.)
    pub unsafe fn new(page: *mut u8) -> SharedRing {
        SharedRing { base: page }
    }

    fn index(&self, offset: usize) -> &AtomicU32 {
        // SAFETY: `base` points to PAGE_SIZE bytes, 8-aligned, mapped while `self` lives
        // (`new`'s contract); `offset` is one of the four header words, 4-aligned and inside
        // the page; and both ends only ever access these words whole (Xen's macros read and
        // write them as aligned 32-bit words, which x86 does atomically).
        unsafe { AtomicU32::from_ptr(self.base.add(offset).cast()) }
    }

    /// The address of the entry for free-running index `index`.
    fn slot(&self, index: u32) -> *mut u8 {
        let slot = (index & (RING_SIZE - 1)) as usize;
        // SAFETY: slot < RING_SIZE, and HEADER_SIZE + RING_SIZE * ENTRY_SIZE <= PAGE_SIZE
        // (asserted above): the entry is inside the page.
        unsafe { self.base.add(HEADER_SIZE + slot * ENTRY_SIZE) }
    }

    /// Make the page an empty ring (Xen's `SHARED_RING_INIT`): no requests, no responses,
    /// and both events at 1, so that the first entry published on either side notifies
    /// the other end. The frontend does this once, before it grants the page; the entries
    /// are left as they are (nothing reads an entry before its index is published).
    pub fn init(&self) {
        self.set_req_prod(0);
        self.set_rsp_prod(0);
        self.set_req_event(1);
        self.set_rsp_event(1);
        // SAFETY: bytes PADDING..HEADER_SIZE are inside the page (`new`'s contract); a
        // byte array needs no alignment.
        unsafe {
            ptr::write_volatile(
                self.base.add(PADDING).cast::<[u8; HEADER_SIZE - PADDING]>(),
                [0; HEADER_SIZE - PADDING],
            )
        };
    }

    /// `req_prod`: the requests the frontend has published.
    pub fn req_prod(&self) -> u32 {
        self.index(REQ_PROD).load(Ordering::Relaxed)
    }

    /// `req_event`: the backend wants a notification when `req_prod` reaches this.
    pub fn req_event(&self) -> u32 {
        self.index(REQ_EVENT).load(Ordering::Relaxed)
    }

    /// `rsp_prod`: the responses the backend has published.
    pub fn rsp_prod(&self) -> u32 {
        self.index(RSP_PROD).load(Ordering::Relaxed)
    }

    /// `rsp_event`: the frontend wants a notification when `rsp_prod` reaches this.
    pub fn rsp_event(&self) -> u32 {
        self.index(RSP_EVENT).load(Ordering::Relaxed)
    }

    /// Set `req_prod` (the frontend's to write).
    pub fn set_req_prod(&self, v: u32) {
        self.index(REQ_PROD).store(v, Ordering::Relaxed);
    }

    /// Set `req_event` (the backend's to write).
    pub fn set_req_event(&self, v: u32) {
        self.index(REQ_EVENT).store(v, Ordering::Relaxed);
    }

    /// Set `rsp_prod` (the backend's to write).
    pub fn set_rsp_prod(&self, v: u32) {
        self.index(RSP_PROD).store(v, Ordering::Relaxed);
    }

    /// Set `rsp_event` (the frontend's to write).
    pub fn set_rsp_event(&self, v: u32) {
        self.index(RSP_EVENT).store(v, Ordering::Relaxed);
    }

    /// Write `request` into the entry of free-running index `index` (slot
    /// `index & (RING_SIZE - 1)`).
    pub fn write_request(&self, index: u32, request: &Request) {
        // SAFETY: the slot is inside the page, 8-aligned (page 8-aligned, HEADER_SIZE and
        // ENTRY_SIZE multiples of 8) and ENTRY_SIZE == size_of::<Request>() bytes long.
        unsafe { ptr::write_volatile(self.slot(index).cast::<Request>(), *request) }
    }

    /// A copy of the request in the entry of index `index`.
    ///
    /// One volatile read of the whole entry: the compiler must copy it exactly once, and
    /// may not go back to the page later for a field. That matters because the other end
    /// can rewrite the entry at any time (see [`BackRing::take_request`]).
    pub fn read_request(&self, index: u32) -> Request {
        // SAFETY: as in `write_request`; and every bit pattern is a valid `Request` (it is
        // all integers), so whatever the other end left there is a value we may hold.
        unsafe { ptr::read_volatile(self.slot(index).cast::<Request>()) }
    }

    /// Write `response` into the entry of index `index` (its first 16 bytes).
    pub fn write_response(&self, index: u32, response: &Response) {
        // SAFETY: the slot is inside the page, 8-aligned, and at least 16 bytes long.
        unsafe { ptr::write_volatile(self.slot(index).cast::<Response>(), *response) }
    }

    /// A copy of the response in the entry of index `index` (one volatile read).
    pub fn read_response(&self, index: u32) -> Response {
        // SAFETY: as in `write_response`; every bit pattern is a valid `Response`.
        unsafe { ptr::read_volatile(self.slot(index).cast::<Response>()) }
    }
}

/// The responses a frontend took from the ring for requests nobody waits for yet: a backend
/// answers in any order (Linux's blkfront keeps a shadow entry per request for this). At
/// most [`RING_SIZE`] can be: one per request in flight.
#[derive(Debug, Clone)]
pub struct Answers {
    kept: [Option<Response>; RING_SIZE as usize],
}

/// What [`Answers::take_from`] found in the ring.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Taken {
    /// The response waited for.
    Found(Response),
    /// Not yet (the others it took are kept).
    Waiting,
    /// More answers for others than requests can be waiting: one is for no request of ours.
    /// The backend is broken.
    Broken,
}

impl Default for Answers {
    fn default() -> Answers {
        Answers {
            kept: [None; RING_SIZE as usize],
        }
    }
}

impl Answers {
    /// The response to `id`, if it was taken from the ring earlier.
    pub fn take(&mut self, id: u64) -> Option<Response> {
        self.kept
            .iter_mut()
            .find_map(|slot| slot.take_if(|response| response.id == id))
    }

    /// Take every response `ring` holds, keeping the others', until `id`'s is there; then
    /// ask for an event at the next one and look once more (Xen's
    /// `RING_FINAL_CHECK_FOR_RESPONSES`).
    pub fn take_from(&mut self, ring: &mut FrontRing, id: u64) -> Taken {
        let mut found = None;
        let mut broken = false;
        loop {
            while let Some(response) = ring.take_response() {
                if response.id == id {
                    found = Some(response);
                } else if let Some(slot) = self.kept.iter_mut().find(|slot| slot.is_none()) {
                    *slot = Some(response);
                } else {
                    broken = true;
                }
            }
            if !ring.final_check_for_responses() {
                break;
            }
        }
        match (found, broken) {
            (Some(response), _) => Taken::Found(response),
            (None, true) => Taken::Broken,
            (None, false) => Taken::Waiting,
        }
    }
}

/// The frontend's private view of the ring (Xen's `blkif_front_ring`): the shared page,
/// and two counters only the frontend knows.
#[derive(Debug)]
pub struct FrontRing {
    /// The shared page.
    pub sring: SharedRing,
    /// Requests written into the ring, published or not: the next one goes to this index.
    /// `sring.req_prod` catches up when the frontend pushes.
    pub req_prod_pvt: u32,
    /// Responses read: the next response to read is at this index.
    pub rsp_cons: u32,
}

impl FrontRing {
    /// The frontend's view of a ring (Xen's `FRONT_RING_INIT`): nothing produced, nothing
    /// consumed. It does not touch the page: call [`SharedRing::init`] first.
    pub fn new(sring: SharedRing) -> FrontRing {
        FrontRing {
            sring,
            req_prod_pvt: 0,
            rsp_cons: 0,
        }
    }

    /// How many more requests fit (Xen's `RING_FREE_REQUESTS`): a slot is in use from the
    /// moment a request is written into it until its response has been read.
    pub fn free_requests(&self) -> u32 {
        RING_SIZE.wrapping_sub(self.req_prod_pvt.wrapping_sub(self.rsp_cons))
    }

    /// No slot is free (Xen's `RING_FULL`).
    pub fn full(&self) -> bool {
        self.free_requests() == 0
    }

    /// Write `request` into the next slot (Xen's `RING_GET_REQUEST` on `req_prod_pvt`,
    /// then `req_prod_pvt++`); false, and nothing written, when the ring is full. The
    /// backend does not see it until [`Self::push_requests_and_check_notify`].
    pub fn push_request(&mut self, request: &Request) -> bool {
        if self.full() {
            return false;
        }
        self.sring.write_request(self.req_prod_pvt, request);
        self.req_prod_pvt = self.req_prod_pvt.wrapping_add(1);
        true
    }

    /// Publish the requests written since the last push, and say whether the backend must
    /// be notified (Xen's `RING_PUSH_REQUESTS_AND_CHECK_NOTIFY`): true when its
    /// `req_event` is among the requests just published ([`needs_notify`]). The caller
    /// then sends on the event channel.
    pub fn push_requests_and_check_notify(&mut self) -> bool {
        // Only the frontend writes `req_prod`: this is our own last value.
        let old = self.sring.req_prod();
        let new = self.req_prod_pvt;
        // The backend must see the requests' bytes before it sees `req_prod` move:
        // otherwise it could read a slot we have not finished writing.
        wmb();
        self.sring.set_req_prod(new);
        // The backend must see the new `req_prod` before we read its `req_event`. A
        // backend going to sleep sets `req_event` and then re-reads `req_prod`
        // ([`BackRing::final_check_for_requests`]); with a full barrier on both sides, at
        // least one of us sees the other's store: either it finds our requests, or we find
        // its event and notify. Without it (x86 lets this load pass the store above) both
        // could miss, and the requests would wait with nobody awake to take them.
        mb();
        needs_notify(old, new, self.sring.req_event())
    }

    /// Responses published and not yet read (Xen's `RING_HAS_UNCONSUMED_RESPONSES`); none
    /// at all once the backend has [`Self::overflowed`]: [`Self::take_response`] reads
    /// nothing from it then, and a count above zero would keep a frontend that waits for
    /// one looking for ever.
    pub fn unconsumed_responses(&self) -> u32 {
        match self.overflowed() {
            true => 0,
            false => self.sring.rsp_prod().wrapping_sub(self.rsp_cons),
        }
    }

    /// The backend published more responses than there are requests in flight: it lies (or
    /// is broken), and [`Self::take_response`] reads nothing more from it. Xen's `ring.h`
    /// trusts the backend here; Linux's blkfront has checked since 2021, when frontends
    /// stopped trusting backends (`RING_RESPONSE_PROD_OVERFLOW`, with the looser bound
    /// `rsp_prod - rsp_cons > RING_SIZE`).
    pub fn overflowed(&self) -> bool {
        self.sring.rsp_prod().wrapping_sub(self.rsp_cons) > self.in_flight()
    }

    /// Requests written whose responses have not been read.
    pub fn in_flight(&self) -> u32 {
        self.req_prod_pvt.wrapping_sub(self.rsp_cons)
    }

    /// A copy of the next response, and `rsp_cons++`; `None` when there is none (or when
    /// the backend [`Self::overflowed`]).
    pub fn take_response(&mut self) -> Option<Response> {
        let rsp_prod = self.sring.rsp_prod();
        // Read the response only after `rsp_prod`: the backend wrote the entry before it
        // moved `rsp_prod` (its `wmb`), and we must not read the entry from before that.
        rmb();
        let published = rsp_prod.wrapping_sub(self.rsp_cons);
        if published == 0 || published > self.in_flight() {
            return None;
        }
        let response = self.sring.read_response(self.rsp_cons);
        self.rsp_cons = self.rsp_cons.wrapping_add(1);
        Some(response)
    }

    /// Before going to sleep: are there responses after all? (Xen's
    /// `RING_FINAL_CHECK_FOR_RESPONSES`.) When there are none, it first asks the backend to
    /// notify the next one (`rsp_event = rsp_cons + 1`) and then looks again: a response
    /// published between the first look and the request to be notified would otherwise
    /// wait, unnoticed, for a notification the backend saw no reason to send.
    pub fn final_check_for_responses(&mut self) -> bool {
        self.final_check_for_responses_with(|| ())
    }

    /// [`Self::final_check_for_responses`], running `meanwhile` in the window where the
    /// backend may publish unseen (the tests use it to push a response there).
    fn final_check_for_responses_with(&mut self, meanwhile: impl FnOnce()) -> bool {
        if self.unconsumed_responses() > 0 {
            return true;
        }
        // The window: the backend may publish now, against our old `rsp_event`, and not
        // notify. The second look below is what finds such a response.
        meanwhile();
        self.sring.set_rsp_event(self.rsp_cons.wrapping_add(1));
        // Our `rsp_event` must be visible before we re-read `rsp_prod`: the other half of
        // the handshake in `BackRing::push_responses_and_check_notify`.
        mb();
        self.unconsumed_responses() > 0
    }
}

/// The backend's private view of the ring (Xen's `blkif_back_ring`).
#[derive(Debug)]
pub struct BackRing {
    /// The shared page.
    pub sring: SharedRing,
    /// Responses written into the ring, published or not: the next one goes to this index.
    pub rsp_prod_pvt: u32,
    /// Requests read: the next request to read is at this index.
    pub req_cons: u32,
}

impl BackRing {
    /// The backend's view of a ring the frontend has initialised (Xen's `BACK_RING_INIT`).
    pub fn new(sring: SharedRing) -> BackRing {
        BackRing {
            sring,
            rsp_prod_pvt: 0,
            req_cons: 0,
        }
    }

    /// How far beyond `req_cons` an honest frontend may have written: the slots whose
    /// responses we have written, less those we have taken requests from since.
    fn room(&self) -> u32 {
        RING_SIZE.wrapping_sub(self.req_cons.wrapping_sub(self.rsp_prod_pvt))
    }

    /// Requests published and not yet taken (Xen's `RING_HAS_UNCONSUMED_REQUESTS`): the
    /// smaller of what `req_prod` claims and what an honest frontend could have written
    /// (the room: [`RING_SIZE`] less the requests taken and not yet answered), as Xen
    /// computes it.
    pub fn unconsumed_requests(&self) -> u32 {
        let published = self.sring.req_prod().wrapping_sub(self.req_cons);
        published.min(self.room())
    }

    /// The frontend's `req_prod` is one no honest frontend could have written: more than
    /// [`RING_SIZE`] ahead of the oldest request still waiting for its response (Xen's
    /// `RING_REQUEST_PROD_OVERFLOW`, `req_prod - rsp_prod_pvt > RING_SIZE`), or behind
    /// requests we already took (which the wrapping difference `req_prod - req_cons` shows
    /// as huge). Both are one test: `req_prod - req_cons` more than the room,
    /// [`RING_SIZE`] less the requests taken and not yet answered. On a fresh ring that is
    /// `req_prod - req_cons > RING_SIZE`.
    ///
    /// blkback, on seeing this, stops serving the ring ("Frontend provided bogus ring
    /// requests"); here [`Self::take_request`] returns `None` for as long as it holds, and
    /// a backend should check it and disconnect the frontend.
    pub fn overflowed(&self) -> bool {
        self.sring.req_prod().wrapping_sub(self.req_cons) > self.room()
    }

    /// A copy of the next request, and `req_cons++` (Xen's `RING_COPY_REQUEST`); `None`
    /// when there is none, or when the frontend [`Self::overflowed`].
    ///
    /// The request is copied out of the page first, and everything after reads only the
    /// copy. Reading fields from the page one at a time would let a malicious frontend
    /// change a field between the backend's check and its use (a *double fetch*: check
    /// `nr_segments <= 11`, then loop over a different `nr_segments`). That bug was in
    /// Xen's own backends: XSA-155, whose fix added `RING_COPY_REQUEST`.
    pub fn take_request(&mut self) -> Option<Request> {
        // Read `req_prod` once: the frontend may move it again, and every decision below
        // must be about the same value.
        let req_prod = self.sring.req_prod();
        // Read the request only after `req_prod`: the frontend wrote the entry before it
        // moved `req_prod` (its `wmb`), and we must not read the entry from before that.
        rmb();
        let published = req_prod.wrapping_sub(self.req_cons);
        if published == 0 || published > self.room() {
            return None;
        }
        let request = self.sring.read_request(self.req_cons);
        self.req_cons = self.req_cons.wrapping_add(1);
        Some(request)
    }

    /// Write `response` into the next slot (Xen's `RING_GET_RESPONSE` on `rsp_prod_pvt`,
    /// then `rsp_prod_pvt++`). The frontend does not see it until
    /// [`Self::push_responses_and_check_notify`].
    ///
    /// There must be a request taken and not yet answered: a response beyond that would
    /// overwrite a slot whose request has not been read, so it is dropped instead (Xen's
    /// macro does not check; traplab keeps the ring intact and the mistake visible as a
    /// response that never comes).
    pub fn push_response(&mut self, response: &Response) {
        if self.rsp_prod_pvt == self.req_cons {
            return;
        }
        self.sring.write_response(self.rsp_prod_pvt, response);
        self.rsp_prod_pvt = self.rsp_prod_pvt.wrapping_add(1);
    }

    /// Publish the responses written since the last push, and say whether the frontend
    /// must be notified (Xen's `RING_PUSH_RESPONSES_AND_CHECK_NOTIFY`).
    pub fn push_responses_and_check_notify(&mut self) -> bool {
        // Only the backend writes `rsp_prod`: this is our own last value.
        let old = self.sring.rsp_prod();
        let new = self.rsp_prod_pvt;
        // The frontend must see the responses' bytes before it sees `rsp_prod` move.
        wmb();
        self.sring.set_rsp_prod(new);
        // The frontend must see the new `rsp_prod` before we read its `rsp_event`: the
        // same handshake as in `FrontRing::push_requests_and_check_notify`.
        mb();
        needs_notify(old, new, self.sring.rsp_event())
    }

    /// Before going to sleep: are there requests after all? (Xen's
    /// `RING_FINAL_CHECK_FOR_REQUESTS`.) When there are none, it sets
    /// `req_event = req_cons + 1` (notify me when the next request is published) and looks
    /// again: a request published between the first look and the new `req_event` was
    /// pushed against the old event, so its frontend saw no reason to notify; only this
    /// second look finds it.
    pub fn final_check_for_requests(&mut self) -> bool {
        self.final_check_for_requests_with(|| ())
    }

    /// [`Self::final_check_for_requests`], running `meanwhile` in the window where the
    /// frontend may publish unseen (the tests use it to push a request there).
    fn final_check_for_requests_with(&mut self, meanwhile: impl FnOnce()) -> bool {
        if self.unconsumed_requests() > 0 {
            return true;
        }
        // The window: the frontend may publish now, against our old `req_event`, and not
        // notify. The second look below is what finds such a request.
        meanwhile();
        self.sring.set_req_event(self.req_cons.wrapping_add(1));
        // Our `req_event` must be visible before we re-read `req_prod`: the other half of
        // the handshake in `FrontRing::push_requests_and_check_notify`.
        mb();
        self.unconsumed_requests() > 0
    }
}

/// Why a backend refuses a request (the checks Linux's blkback makes before it does one).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Not [`operation::READ`] or [`operation::WRITE`].
    UnknownOperation(u8),
    /// A read or write of nothing: `nr_segments` is 0.
    NoSegments,
    /// `nr_segments` is more than [`MAX_SEGMENTS`].
    TooManySegments(u8),
    /// A segment whose sectors are not a range inside one page: `first > last`, or
    /// `last >= SECTORS_PER_PAGE`.
    BadSectors {
        /// Which segment (0-based).
        segment: u8,
        /// Its `first_sect`.
        first: u8,
        /// Its `last_sect`.
        last: u8,
    },
    /// The sectors run past the end of the disk (or past `u64::MAX`).
    PastTheEnd {
        /// The request's `sector_number`.
        sector: u64,
        /// The sectors it moves ([`sectors`]).
        count: u64,
        /// The disk's size in sectors.
        disk_sectors: u64,
    },
}

impl Refusal {
    /// The response's status: [`status::EOPNOTSUPP`] for an operation the backend does not
    /// do, [`status::ERROR`] for a malformed request (as blkback answers).
    pub fn status(self) -> i16 {
        match self {
            Refusal::UnknownOperation(_) => status::EOPNOTSUPP,
            _ => status::ERROR,
        }
    }
}

impl core::fmt::Display for Refusal {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match *self {
            Refusal::UnknownOperation(op) => match operation::name(op) {
                Some(name) => write!(
                    f,
                    "operation {op} ({name}) is not done here: only reads and writes"
                ),
                None => write!(f, "operation {op} is not a block operation"),
            },
            Refusal::NoSegments => {
                write!(
                    f,
                    "nr_segments is 0: a read or write moves at least one segment"
                )
            }
            Refusal::TooManySegments(n) => write!(
                f,
                "nr_segments {n} is more than the {MAX_SEGMENTS} a request may carry"
            ),
            Refusal::BadSectors {
                segment,
                first,
                last,
            } => {
                if first > last {
                    write!(
                        f,
                        "segment {segment}: first_sect {first} is after last_sect {last}"
                    )
                } else {
                    write!(
                        f,
                        "segment {segment}: last_sect {last} is past the page's last sector ({})",
                        SECTORS_PER_PAGE - 1
                    )
                }
            }
            Refusal::PastTheEnd {
                sector,
                count,
                disk_sectors,
            } => write!(
                f,
                "{count} sectors from sector {sector} run past the disk's end ({disk_sectors})"
            ),
        }
    }
}

/// The sectors a request moves: `last_sect - first_sect + 1` summed over its first
/// `nr_segments` segments. Meant for a request [`check_request`] accepted; on any other it
/// still returns a number without panicking (a backwards segment counts 0, and at most
/// [`MAX_SEGMENTS`] segments count).
pub fn sectors(request: &Request) -> u64 {
    request
        .seg
        .iter()
        .take(usize::from(request.nr_segments))
        .map(|seg| (u64::from(seg.last_sect) + 1).saturating_sub(u64::from(seg.first_sect)))
        .sum()
}

/// Check a request (a copy from [`BackRing::take_request`]) before doing it, as blkback
/// does: a read or write; 1 to [`MAX_SEGMENTS`] segments; each segment's sectors a range
/// inside its page; and the run of sectors inside a disk of `disk_sectors` sectors. The
/// first failed check is the refusal.
pub fn check_request(request: &Request, disk_sectors: u64) -> Result<(), Refusal> {
    if request.operation != operation::READ && request.operation != operation::WRITE {
        return Err(Refusal::UnknownOperation(request.operation));
    }
    let used = usize::from(request.nr_segments);
    if used == 0 {
        return Err(Refusal::NoSegments);
    }
    if used > MAX_SEGMENTS {
        return Err(Refusal::TooManySegments(request.nr_segments));
    }
    for (segment, seg) in (0u8..).zip(&request.seg[..used]) {
        if seg.first_sect > seg.last_sect || seg.last_sect >= SECTORS_PER_PAGE {
            return Err(Refusal::BadSectors {
                segment,
                first: seg.first_sect,
                last: seg.last_sect,
            });
        }
    }
    let count = sectors(request);
    // `checked_add`: a sector_number near u64::MAX must not wrap round to a small end that
    // passes the test (blkback checks `end < sector_number` for the same reason).
    match request.sector_number.checked_add(count) {
        Some(end) if end <= disk_sectors => Ok(()),
        _ => Err(Refusal::PastTheEnd {
            sector: request.sector_number,
            count,
            disk_sectors,
        }),
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use alloc::boxed::Box;
    use alloc::string::ToString;
    use core::sync::atomic::AtomicBool;
    use std::time::{Duration, Instant};

    /// A ring page, page-aligned as a real one is.
    #[repr(C, align(4096))]
    struct Page([u8; PAGE_SIZE]);

    /// A page on the heap that both ends' views point into. Only raw pointers reach it
    /// after creation, as in the real thing, where the other end is another domain.
    struct Shared(*mut Page);

    impl Shared {
        fn new() -> Shared {
            Shared(Box::into_raw(Box::new(Page([0; PAGE_SIZE]))))
        }

        fn base(&self) -> *mut u8 {
            self.0.cast()
        }

        /// One more view of the page (each end has its own).
        fn view(&self) -> SharedRing {
            // SAFETY: the page is PAGE_SIZE bytes, 4096-aligned, and freed only when `self`
            // drops, after the views (declared later, dropped first).
            unsafe { SharedRing::new(self.base()) }
        }

        /// The byte at `offset` of the page, as the other end would see it.
        fn byte(&self, offset: usize) -> u8 {
            assert!(offset < PAGE_SIZE);
            // SAFETY: inside the page.
            unsafe { self.base().add(offset).read_volatile() }
        }

        /// A little-endian u64 at `offset`.
        fn u64_at(&self, offset: usize) -> u64 {
            u64::from_le_bytes(core::array::from_fn(|i| self.byte(offset + i)))
        }

        /// A freshly initialised ring and both ends' views of it.
        fn ends(&self) -> (FrontRing, BackRing) {
            let front = self.view();
            front.init();
            (FrontRing::new(front), BackRing::new(self.view()))
        }

        /// As `ends`, with every index starting at `start`, as if `start` requests had
        /// already gone round and the backend had then gone to sleep.
        fn ends_at(&self, start: u32) -> (FrontRing, BackRing) {
            let (mut front, mut back) = self.ends();
            front.sring.set_req_prod(start);
            front.sring.set_rsp_prod(start);
            front.sring.set_req_event(start.wrapping_add(1));
            front.sring.set_rsp_event(start.wrapping_add(1));
            front.req_prod_pvt = start;
            front.rsp_cons = start;
            back.req_cons = start;
            back.rsp_prod_pvt = start;
            (front, back)
        }
    }

    impl Drop for Shared {
        fn drop(&mut self) {
            // SAFETY: made by Box::into_raw in `new`, freed once, here.
            drop(unsafe { Box::from_raw(self.0) });
        }
    }

    /// A request whose every field differs, so a wrong offset or a lost field shows.
    fn request(id: u64) -> Request {
        let mut seg = [Segment::default(); MAX_SEGMENTS];
        for (n, s) in (0u8..).zip(seg.iter_mut()) {
            *s = Segment {
                gref: 0x100 + u32::from(n),
                first_sect: n % 4,
                last_sect: 4 + n % 4,
                _pad: 0,
            };
        }
        Request {
            operation: operation::WRITE,
            nr_segments: MAX_SEGMENTS as u8,
            handle: 0x5a5a,
            _pad: 0,
            id,
            sector_number: 0x0102_0304_0506_0708 ^ id,
            seg,
        }
    }

    fn response(id: u64) -> Response {
        Response {
            id,
            operation: operation::READ,
            status: status::EOPNOTSUPP,
            ..Default::default()
        }
    }

    /// A read of sectors `first..=last` of one page, to disk sector `sector` on.
    fn read(sector: u64, first: u8, last: u8) -> Request {
        let mut request = Request {
            operation: operation::READ,
            nr_segments: 1,
            sector_number: sector,
            ..Default::default()
        };
        request.seg[0] = Segment {
            gref: 7,
            first_sect: first,
            last_sect: last,
            _pad: 0,
        };
        request
    }

    #[test]
    fn entries_sit_where_xen_puts_them() {
        assert_eq!(size_of::<Request>(), 112);
        assert_eq!(size_of::<Response>(), 16);
        assert_eq!(size_of::<Segment>(), 8);
        assert_eq!(offset_of!(Request, id), 8);
        assert_eq!(offset_of!(Request, sector_number), 16);
        assert_eq!(offset_of!(Request, seg), 24);
        assert_eq!(offset_of!(Response, status), 10);
        assert_eq!(RING_SIZE, 32);

        // Index 33 is slot 1: the entry starts at 64 + 112.
        let page = Shared::new();
        let (mut front, _back) = page.ends_at(33);
        assert!(front.push_request(&request(0x1122_3344_5566_7788)));
        let slot = HEADER_SIZE + ENTRY_SIZE;
        assert_eq!(page.byte(slot), operation::WRITE);
        assert_eq!(page.byte(slot + 1), MAX_SEGMENTS as u8);
        assert_eq!(page.byte(slot + 2), 0x5a);
        assert_eq!(page.u64_at(slot + 8), 0x1122_3344_5566_7788);
        assert_eq!(
            page.u64_at(slot + 16),
            0x0102_0304_0506_0708 ^ 0x1122_3344_5566_7788
        );
        // seg[10]: gref 0x10a at +24 + 80, first_sect 2 at +4, last_sect 6 at +5.
        assert_eq!(page.byte(slot + 24 + 80), 0x0a);
        assert_eq!(page.byte(slot + 24 + 80 + 1), 0x01);
        assert_eq!(page.byte(slot + 24 + 80 + 4), 2);
        assert_eq!(page.byte(slot + 24 + 80 + 5), 6);
        // Nothing spilled into slot 2.
        assert!((slot + ENTRY_SIZE..slot + 2 * ENTRY_SIZE).all(|at| page.byte(at) == 0));

        // A response overlays the first 16 bytes of its slot; status at +10.
        let view = page.view();
        view.write_response(2, &response(9));
        let slot = HEADER_SIZE + 2 * ENTRY_SIZE;
        assert_eq!(page.u64_at(slot), 9);
        assert_eq!(page.byte(slot + 8), operation::READ);
        assert_eq!(page.byte(slot + 10), 0xfe); // -2, little-endian
        assert_eq!(page.byte(slot + 11), 0xff);
    }

    #[test]
    fn ring_size_rounds_down_to_a_power_of_two() {
        assert_eq!(ring_size(4096), 32); // 36 entries fit
        assert_eq!(ring_size(8192), 64); // 72 fit
        assert_eq!(ring_size(16384), 128); // 145 fit
        assert_eq!(ring_size(HEADER_SIZE + 3 * ENTRY_SIZE), 2);
        assert_eq!(ring_size(HEADER_SIZE + ENTRY_SIZE), 1);
        assert_eq!(ring_size(HEADER_SIZE + ENTRY_SIZE - 1), 0);
        assert_eq!(ring_size(0), 0);
    }

    #[test]
    fn init_sets_the_indexes_and_clears_the_padding_only() {
        let page = Shared::new();
        // SAFETY: inside the page; no view exists yet.
        unsafe { page.base().write_bytes(0xaa, PAGE_SIZE) };
        let ring = page.view();
        ring.init();
        assert_eq!(
            (
                ring.req_prod(),
                ring.req_event(),
                ring.rsp_prod(),
                ring.rsp_event()
            ),
            (0, 1, 0, 1)
        );
        // The header words are little-endian u32s at 0, 4, 8, 12.
        ring.set_req_prod(0x1122_3344);
        ring.set_rsp_event(0x5566_7788);
        assert_eq!(page.byte(0), 0x44);
        assert_eq!(page.byte(3), 0x11);
        assert_eq!(page.byte(12), 0x88);
        assert_eq!(page.byte(4), 1);
        assert_eq!(page.byte(8), 0);
        assert!((PADDING..HEADER_SIZE).all(|at| page.byte(at) == 0));
        assert_eq!(page.byte(HEADER_SIZE), 0xaa);
    }

    #[test]
    fn what_one_end_writes_the_other_reads() {
        let page = Shared::new();
        let (mut front, mut back) = page.ends();
        assert_eq!(back.take_request(), None);
        assert!(front.push_request(&request(1)));
        assert!(front.push_request(&request(2)));
        // Written but not pushed: the backend does not see them yet.
        assert_eq!(back.unconsumed_requests(), 0);
        assert_eq!(back.take_request(), None);
        front.push_requests_and_check_notify();
        assert_eq!(back.unconsumed_requests(), 2);
        assert_eq!(back.take_request(), Some(request(1)));
        assert_eq!(back.take_request(), Some(request(2)));
        assert_eq!(back.take_request(), None);

        back.push_response(&response(2));
        assert_eq!(front.take_response(), None); // not pushed yet
        back.push_responses_and_check_notify();
        assert_eq!(front.unconsumed_responses(), 1);
        assert_eq!(front.take_response(), Some(response(2)));
        assert_eq!(front.take_response(), None);
        assert_eq!(front.free_requests(), RING_SIZE - 1);
    }

    #[test]
    fn the_indexes_run_on_past_u32_max() {
        let page = Shared::new();
        let start = u32::MAX - 2;
        let (mut front, mut back) = page.ends_at(start);
        // Five requests: indexes MAX-2 ..= MAX+2, slots 29, 30, 31, 0, 1.
        for id in 0..5 {
            assert!(front.push_request(&request(id)));
        }
        assert_eq!(front.req_prod_pvt, 2);
        assert_eq!(front.free_requests(), RING_SIZE - 5);
        assert!(front.push_requests_and_check_notify());
        assert_eq!(back.unconsumed_requests(), 5);
        assert!(!back.overflowed());
        for id in 0..5 {
            assert_eq!(back.take_request(), Some(request(id)));
            back.push_response(&response(id));
        }
        assert_eq!(back.take_request(), None);
        assert_eq!(back.req_cons, 2);
        assert!(back.push_responses_and_check_notify());
        assert!(!front.overflowed());
        for id in 0..5 {
            assert_eq!(front.take_response(), Some(response(id)));
        }
        assert_eq!(front.take_response(), None);
        assert_eq!(front.free_requests(), RING_SIZE);
        // Slot 0 holds the response to the fourth request (index u32::MAX + 1 = 0).
        assert_eq!(page.u64_at(HEADER_SIZE), 3);
    }

    #[test]
    fn a_full_ring_takes_no_more_until_a_response_is_read() {
        let page = Shared::new();
        let (mut front, mut back) = page.ends_at(u32::MAX - 10);
        for id in 0..u64::from(RING_SIZE) {
            assert!(front.push_request(&request(id)));
        }
        assert!(front.full());
        assert!(!front.push_request(&request(99)));
        front.push_requests_and_check_notify();
        // The backend taking a request frees nothing: its slot waits for the response.
        assert_eq!(back.take_request(), Some(request(0)));
        assert!(front.full());
        back.push_response(&response(0));
        back.push_responses_and_check_notify();
        assert!(front.full()); // published, but not read yet
        assert_eq!(front.take_response(), Some(response(0)));
        assert_eq!(front.free_requests(), 1);
        assert!(front.push_request(&request(99)));
    }

    #[test]
    fn answers_for_other_requests_are_kept_until_their_turn() {
        let page = Shared::new();
        let (mut front, mut back) = page.ends();
        let mut answers = Answers::default();
        for id in [1, 2] {
            front.push_request(&request(id));
        }
        front.push_requests_and_check_notify();
        while back.take_request().is_some() {}
        back.push_response(&response(2));
        back.push_responses_and_check_notify();
        assert_eq!(answers.take_from(&mut front, 1), Taken::Waiting, "2's kept");
        back.push_response(&response(1));
        back.push_responses_and_check_notify();
        assert_eq!(answers.take_from(&mut front, 1), Taken::Found(response(1)));
        assert_eq!(answers.take(2), Some(response(2)));
        assert_eq!(answers.take(2), None, "once");
    }

    #[test]
    fn a_backend_that_answers_another_id_leaves_nothing_in_flight_to_wait_for() {
        // Request 1 answered as 2: the ring owes the frontend nothing more, and blkfront
        // calls the backend broken instead of halting for an answer that cannot come.
        let page = Shared::new();
        let (mut front, mut back) = page.ends();
        let mut answers = Answers::default();
        front.push_request(&request(1));
        front.push_requests_and_check_notify();
        back.take_request();
        back.push_response(&response(2));
        back.push_responses_and_check_notify();
        assert_eq!(answers.take_from(&mut front, 1), Taken::Waiting);
        assert_eq!(front.in_flight(), 0);
    }

    #[test]
    fn more_answers_for_others_than_can_be_waiting_break_the_backend() {
        let page = Shared::new();
        let (mut front, mut back) = page.ends();
        let mut answers = Answers::default();
        // A full table of answers nobody claimed...
        for round in 0..2 {
            for id in 0..RING_SIZE as u64 / 2 {
                front.push_request(&request(100 + round * 100 + id));
            }
            front.push_requests_and_check_notify();
            while let Some(taken) = back.take_request() {
                back.push_response(&response(taken.id));
            }
            back.push_responses_and_check_notify();
            assert_eq!(answers.take_from(&mut front, 1), Taken::Waiting);
        }
        // ...and one more for a request not waited for: it has nowhere to go.
        front.push_request(&request(1));
        front.push_request(&request(7));
        front.push_requests_and_check_notify();
        while back.take_request().is_some() {}
        back.push_response(&response(7));
        back.push_responses_and_check_notify();
        assert_eq!(answers.take_from(&mut front, 1), Taken::Broken);
    }

    #[test]
    fn a_response_with_no_request_to_answer_is_dropped() {
        let page = Shared::new();
        let (mut front, mut back) = page.ends();
        front.push_request(&request(1));
        front.push_requests_and_check_notify();
        // Not taken yet: answering now would overwrite request 1 in its slot.
        back.push_response(&response(1));
        assert_eq!(back.rsp_prod_pvt, 0);
        assert_eq!(back.take_request(), Some(request(1)));
        back.push_response(&response(1));
        back.push_response(&response(2)); // one too many
        assert_eq!(back.rsp_prod_pvt, 1);
    }

    #[test]
    fn needs_notify_when_the_event_lies_in_the_new_batch() {
        // (old, new, event, notify?)
        let cases = [
            (0, 1, 1, true),            // the first request a sleeping backend waits for
            (1, 2, 1, false),           // it was already told about index 1
            (0, 3, 1, true),            // a batch of three containing the event
            (0, 3, 3, true),            // the event is the batch's last entry
            (0, 3, 4, false),           // it waits for one more than we published
            (5, 5, 6, false),           // nothing published
            (5, 5, 5, false),           // nothing published, event already passed
            (7, 9, 7, false),           // the event is `old`: that one was notified before
            (u32::MAX - 1, 1, 0, true), // the batch wraps; event 0 is in it
            (u32::MAX - 1, 1, u32::MAX, true),
            (u32::MAX - 1, 1, 1, true),
            (u32::MAX - 1, 1, 2, false),
            (u32::MAX - 1, 1, u32::MAX - 1, false),
        ];
        for (old, new, event, notify) in cases {
            assert_eq!(
                needs_notify(old, new, event),
                notify,
                "old {old} new {new} event {event}"
            );
        }
    }

    #[test]
    fn the_frontend_notifies_a_sleeping_backend_once() {
        let page = Shared::new();
        let (mut front, mut back) = page.ends();
        // Fresh ring: req_event = 1, as a backend that is waiting for the first request.
        front.push_request(&request(1));
        assert!(front.push_requests_and_check_notify());
        // The backend has been told and not yet run: no second notification.
        front.push_request(&request(2));
        assert!(!front.push_requests_and_check_notify());
        // Pushing nothing never notifies.
        assert!(!front.push_requests_and_check_notify());
        // The backend runs, drains the ring and goes to sleep.
        assert!(back.final_check_for_requests());
        while back.take_request().is_some() {}
        assert!(!back.final_check_for_requests());
        assert_eq!(back.sring.req_event(), back.req_cons + 1);
        // The next request wakes it again.
        front.push_request(&request(3));
        assert!(front.push_requests_and_check_notify());
        front.push_request(&request(4));
        assert!(!front.push_requests_and_check_notify());
    }

    #[test]
    fn the_backend_notifies_a_sleeping_frontend_once() {
        let page = Shared::new();
        let (mut front, mut back) = page.ends_at(u32::MAX);
        for id in 0..3 {
            front.push_request(&request(id));
        }
        front.push_requests_and_check_notify();
        for _ in 0..3 {
            back.take_request();
        }
        // rsp_event = start + 1: the frontend waits for the first response.
        back.push_response(&response(0));
        assert!(back.push_responses_and_check_notify());
        back.push_response(&response(1));
        assert!(!back.push_responses_and_check_notify());
        // The frontend reads both and goes to sleep.
        assert!(front.take_response().is_some());
        assert!(front.take_response().is_some());
        assert!(!front.final_check_for_responses());
        assert_eq!(front.sring.rsp_event(), front.rsp_cons.wrapping_add(1));
        back.push_response(&response(2));
        assert!(back.push_responses_and_check_notify());
    }

    #[test]
    fn the_final_check_finds_a_request_pushed_while_it_looked() {
        let page = Shared::new();
        let (mut front, mut back) = page.ends();
        front.push_request(&request(1));
        assert!(front.push_requests_and_check_notify());
        assert_eq!(back.take_request(), Some(request(1)));
        // The backend finds the ring empty and is about to set req_event = 2; just then
        // the frontend publishes request 2. req_event still says 1, which request 2 does
        // not reach: the frontend sees no reason to notify.
        let mut notified = None;
        let work = back.final_check_for_requests_with(|| {
            front.push_request(&request(2));
            notified = Some(front.push_requests_and_check_notify());
        });
        assert_eq!(notified, Some(false));
        // Only the second look, after req_event is set, keeps request 2 from waiting for
        // ever.
        assert!(work);
        assert_eq!(back.take_request(), Some(request(2)));
    }

    #[test]
    fn the_final_check_finds_a_response_pushed_while_it_looked() {
        let page = Shared::new();
        let (mut front, mut back) = page.ends();
        for id in 1..=2 {
            front.push_request(&request(id));
        }
        front.push_requests_and_check_notify();
        back.take_request();
        back.take_request();
        back.push_response(&response(1));
        assert!(back.push_responses_and_check_notify());
        assert_eq!(front.take_response(), Some(response(1)));
        let mut notified = None;
        let work = front.final_check_for_responses_with(|| {
            back.push_response(&response(2));
            notified = Some(back.push_responses_and_check_notify());
        });
        assert_eq!(notified, Some(false));
        assert!(work);
        assert_eq!(front.take_response(), Some(response(2)));
    }

    #[test]
    fn a_frontend_that_claims_too_many_requests_is_refused() {
        let page = Shared::new();
        let (front, mut back) = page.ends_at(1000);
        // 32 requests is what an honest frontend may post on an idle ring.
        front.sring.set_req_prod(1000 + 32);
        assert!(!back.overflowed());
        assert_eq!(back.unconsumed_requests(), 32);
        // 33 is one more than there are slots.
        front.sring.set_req_prod(1000 + 33);
        assert!(back.overflowed());
        assert_eq!(back.take_request(), None);
        assert_eq!(back.req_cons, 1000);

        // With 5 taken and not yet answered, only 27 slots are free for new requests: 28
        // beyond req_cons is a lie too (Xen's test: req_prod - rsp_prod_pvt > RING_SIZE).
        front.sring.set_req_prod(1000 + 5);
        for _ in 0..5 {
            assert!(back.take_request().is_some());
        }
        front.sring.set_req_prod(1005 + 27);
        assert!(!back.overflowed());
        front.sring.set_req_prod(1005 + 28);
        assert!(back.overflowed());
        assert_eq!(back.unconsumed_requests(), 27); // Xen's min: what could be real
        assert_eq!(back.take_request(), None);

        // A req_prod that goes backwards, behind what was already taken.
        front.sring.set_req_prod(1004);
        assert!(back.overflowed());
        assert_eq!(back.take_request(), None);
        // Honest again: served again.
        front.sring.set_req_prod(1006);
        assert!(!back.overflowed());
        assert!(back.take_request().is_some());
    }

    #[test]
    fn a_backend_that_claims_too_many_responses_is_refused() {
        let page = Shared::new();
        let (mut front, back) = page.ends();
        front.push_request(&request(1));
        front.push_requests_and_check_notify();
        back.sring.set_rsp_prod(2); // two answers to one request
        assert!(front.overflowed());
        // Nothing to read from it, and nothing said to be there: a frontend that looked
        // again while the count said 1 would look for ever.
        assert_eq!(front.unconsumed_responses(), 0);
        assert_eq!(front.take_response(), None);
        assert!(!front.final_check_for_responses());
        back.sring.set_rsp_prod(1);
        assert!(!front.overflowed());
        assert!(front.take_response().is_some());
    }

    #[test]
    fn take_request_returns_a_copy_the_frontend_cannot_change() {
        let page = Shared::new();
        let (mut front, mut back) = page.ends();
        let mut honest = read(0, 0, 7);
        honest.id = 1;
        front.push_request(&honest);
        front.push_requests_and_check_notify();
        let copy = back.take_request().unwrap();
        assert_eq!(check_request(&copy, 8), Ok(()));
        // The frontend rewrites the slot after the check: the backend's copy stays what
        // it checked.
        let mut evil = honest;
        evil.nr_segments = 200;
        evil.sector_number = u64::MAX;
        front.sring.write_request(0, &evil);
        assert_eq!(back.sring.read_request(0), evil);
        assert_eq!(copy, honest);
    }

    #[test]
    fn check_request_refuses_each_malformed_request() {
        let disk = 1000;
        let mut op = read(0, 0, 7);
        op.operation = operation::FLUSH_DISKCACHE;
        let mut none = read(0, 0, 7);
        none.nr_segments = 0;
        let mut twelve = request(1);
        twelve.operation = operation::READ;
        twelve.sector_number = 0;
        twelve.nr_segments = 12;
        let mut third_bad = request(1);
        third_bad.sector_number = 0;
        third_bad.seg[2].last_sect = 8;
        let cases = [
            (op, Refusal::UnknownOperation(3), status::EOPNOTSUPP),
            (none, Refusal::NoSegments, status::ERROR),
            (twelve, Refusal::TooManySegments(12), status::ERROR),
            (
                read(0, 5, 3),
                Refusal::BadSectors {
                    segment: 0,
                    first: 5,
                    last: 3,
                },
                status::ERROR,
            ),
            (
                third_bad,
                Refusal::BadSectors {
                    segment: 2,
                    first: 2,
                    last: 8,
                },
                status::ERROR,
            ),
            (
                read(996, 0, 7),
                Refusal::PastTheEnd {
                    sector: 996,
                    count: 8,
                    disk_sectors: disk,
                },
                status::ERROR,
            ),
        ];
        for (request, refusal, status) in cases {
            assert_eq!(check_request(&request, disk), Err(refusal), "{refusal}");
            assert_eq!(refusal.status(), status);
        }
        assert_eq!(
            Refusal::TooManySegments(12).to_string(),
            "nr_segments 12 is more than the 11 a request may carry"
        );
        assert_eq!(
            Refusal::UnknownOperation(9).to_string(),
            "operation 9 is not a block operation"
        );
    }

    #[test]
    fn check_request_accepts_up_to_the_last_sector_and_no_further() {
        // 11 segments of 5 sectors each (first n%4, last 4+n%4): 55 sectors.
        let mut request = request(1);
        assert_eq!(sectors(&request), 55);
        request.sector_number = 945;
        assert_eq!(check_request(&request, 1000), Ok(()));
        request.sector_number = 946;
        assert_eq!(
            check_request(&request, 1000),
            Err(Refusal::PastTheEnd {
                sector: 946,
                count: 55,
                disk_sectors: 1000
            })
        );
        // One sector, the disk's last.
        assert_eq!(check_request(&read(999, 3, 3), 1000), Ok(()));
        assert!(check_request(&read(1000, 3, 3), 1000).is_err());
        // Only the first nr_segments segments count.
        request.nr_segments = 2;
        assert_eq!(sectors(&request), 10);
    }

    #[test]
    fn a_sector_number_near_u64_max_does_not_wrap_round() {
        // u64::MAX - 3 + 8 would wrap to 4, which is inside any disk.
        let request = read(u64::MAX - 3, 0, 7);
        assert_eq!(
            check_request(&request, u64::MAX),
            Err(Refusal::PastTheEnd {
                sector: u64::MAX - 3,
                count: 8,
                disk_sectors: u64::MAX
            })
        );
        assert_eq!(check_request(&read(u64::MAX - 8, 0, 7), u64::MAX), Ok(()));
    }

    #[test]
    fn names() {
        assert_eq!(operation::name(operation::READ), Some("BLKIF_OP_READ"));
        assert_eq!(
            operation::name(operation::INDIRECT),
            Some("BLKIF_OP_INDIRECT")
        );
        assert_eq!(operation::name(7), None);
        assert_eq!(
            status::name(status::EOPNOTSUPP),
            Some("BLKIF_RSP_EOPNOTSUPP")
        );
        assert_eq!(status::name(-3), None);
    }

    /// An event channel's pending bit: `send` sets it, `wait` sleeps until it is set and
    /// clears it. A notification sent before the wait is not lost; one never sent is a hang,
    /// which the deadline turns into a failure.
    #[derive(Default)]
    struct Port(AtomicBool);

    impl Port {
        fn send(&self) {
            self.0.store(true, Ordering::SeqCst);
        }

        fn wait(&self, who: &str) {
            let start = Instant::now();
            while !self.0.swap(false, Ordering::SeqCst) {
                assert!(
                    start.elapsed() < Duration::from_secs(30),
                    "{who} waited for a notification that never came"
                );
                std::thread::yield_now();
            }
        }
    }

    #[test]
    fn two_ends_on_two_threads_sleep_and_wake_without_losing_a_request() {
        const COUNT: u64 = 20_000;
        let page = Shared::new();
        let (mut front, mut back) = page.ends_at(u32::MAX - 1000);
        let (to_back, to_front) = (&Port::default(), &Port::default());
        std::thread::scope(|scope| {
            scope.spawn(move || {
                let mut answered = 0;
                while answered < COUNT {
                    while let Some(request) = back.take_request() {
                        assert_eq!(request.id, answered);
                        back.push_response(&response(request.id));
                        answered += 1;
                    }
                    if back.push_responses_and_check_notify() {
                        to_front.send();
                    }
                    if answered < COUNT && !back.final_check_for_requests() {
                        to_back.wait("the backend");
                    }
                }
            });
            let (mut sent, mut received) = (0, 0);
            while received < COUNT {
                while sent < COUNT && front.push_request(&request(sent)) {
                    sent += 1;
                }
                if front.push_requests_and_check_notify() {
                    to_back.send();
                }
                while let Some(response) = front.take_response() {
                    assert_eq!(response.id, received);
                    received += 1;
                }
                let can_push = sent < COUNT && !front.full();
                if received < COUNT && !can_push && !front.final_check_for_responses() {
                    to_front.wait("the frontend");
                }
            }
        });
    }
}
