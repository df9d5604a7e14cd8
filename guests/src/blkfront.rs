//! blkfront: the frontend half of Xen's split block driver, in the domain that uses the disk
//! (Linux: `drivers/block/xen-blkfront.c`; the ABI: `traplab_abi::blkif`).
//!
//! The frontend has no disk. It shares one page with the backend — the ring — through a
//! grant, and one event channel. To read or write a page it grants the backend that page,
//! puts a request on the ring and, unless the backend is still busy with earlier ones
//! (notification hold-off), sends an event. The backend's response comes back on the ring,
//! announced by an event: our upcall.
//!
//! [`Blkfront::transfer`] waits for its response with interrupts on and the CPU halted, so
//! it can be called from an exception handler (the `swap-in` lab's page-fault handler): the
//! vCPU blocks, the hypervisor runs the backend, and the backend's event interrupts the halt
//! through our IDT. The upcall runs on a stack of its own (IST slot 1): the page-fault
//! handler's frame is on the runtime's trap stack, which an upcall on the same stack would
//! overwrite. The upcall only takes the event; the waiting code takes the responses
//! itself (Linux takes them in the interrupt handler and wakes the waiting task:
//! one task here, so the same in fewer steps).

use crate::evtchn::{self, CALLBACK_VECTOR};
use crate::grant;
use crate::hypercall::Refusal;
use crate::traps::{self, TrapFrame};
use crate::xenbus::{self, Device, State};
use traplab_abi::blkif::{
    Answers, FrontRing, MAX_SEGMENTS, Request, Response, SECTORS_PER_PAGE, Segment, SharedRing,
    Taken, operation, status,
};
use traplab_abi::evtchn::Port;
use traplab_abi::grant_table::GrantRef;

/// The grant reference of the ring page.
pub const RING_GREF: GrantRef = 0;
/// The grant reference of the page a transfer moves (one at a time).
pub const DATA_GREF: GrantRef = 1;

#[repr(C, align(4096))]
struct Page([u8; 4096]);

/// The ring we share with the backend.
static mut RING_PAGE: Page = Page([0; 4096]);

/// The upcall's own stack (see the module's docs).
#[repr(C, align(16))]
struct Stack([u8; 16 * 1024]);
static mut UPCALL_STACK: Stack = Stack([0; 16 * 1024]);

/// The frontend, connected.
pub struct Blkfront {
    pub device: Device,
    ring: FrontRing,
    pub port: Port,
    /// The disk's size, as the backend published it.
    pub sectors: u64,
    next_id: u64,
    /// Responses taken from the ring while waiting for another one.
    answers: Answers,
    /// The backend answered more than it was asked ([`Failure::BackendBroken`]): from then
    /// on every request fails, as Linux's blkfront keeps the device in `BLKIF_STATE_ERROR`.
    broken: bool,
}

/// Why a transfer failed: the backend's status (`BLKIF_RSP_*`), or a grant's (`GNTST_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    Backend(i16),
    Grant(i16),
    RingFull,
    /// The backend published more responses than there were requests: it lies, or is
    /// broken, and nothing more is read from it (Linux's blkfront marks the device broken,
    /// `RING_RESPONSE_PROD_OVERFLOW`).
    BackendBroken,
}

/// Connect to the backend the toolstack gave us (frontend `me`, the one disk [`xenbus::VDEV`]),
/// XenBus state by state (see `xenbus`'s table).
///
/// A connection that fails (the backend closed before it connected: ENODEV) undoes what it
/// did and closes our end (state 6), as Linux's blkfront does: the toolstack finds it
/// closed once our domain has ended.
pub fn connect(me: u16) -> Result<Blkfront, Refusal> {
    let front = crate::text!(128, "/local/domain/{me}/device/vbd/{}", xenbus::VDEV);
    let backend = xenbus::read_number(&front, "backend-id")? as u16;
    let device = Device {
        frontend: me,
        backend,
        vdev: xenbus::VDEV,
    };
    let connected = handshake(device);
    if connected.is_err() {
        let _ = xenbus::set_state(&front, State::Closed);
    }
    connected
}

/// [`connect`]'s steps once we know the backend: on failure, the ring's grant and the port
/// are given back.
fn handshake(device: Device) -> Result<Blkfront, Refusal> {
    let front = device.frontend_dir();
    let back = device.backend_dir();
    xenbus::wait_for_state(&back, State::InitWait)?;

    // Events: our shared-info page, and the upcall on a stack of its own.
    // The stack is a static used only by this vector.
    let stack_top = (&raw mut UPCALL_STACK) as u64 + size_of::<Stack>() as u64;
    traps::set_stack(CALLBACK_VECTOR, stack_top);
    check(evtchn::init(Some(upcall)))?;

    // The ring: initialised by us, granted to the backend, writable.
    let page = (&raw mut RING_PAGE) as u64;
    // SAFETY: a static page of ours, 4096 bytes, aligned; only the ring uses it.
    let sring = unsafe { SharedRing::new(page as *mut u8) };
    sring.init();
    let ring = FrontRing::new(sring);
    let granted = grant::grant_access(RING_GREF, device.backend, page, false);
    if granted != 0 {
        return Err(Refusal::Grant(granted));
    }
    let port = match evtchn::alloc_unbound(device.backend) {
        Ok(port) => port,
        Err(code) => {
            grant::end_access(RING_GREF);
            return Err(code.into());
        }
    };
    let connected = xenbus::write_number(&front, "ring-ref", RING_GREF as u64)
        .and_then(|()| xenbus::write_number(&front, "event-channel", port as u64))
        .and_then(|()| xenbus::set_state(&front, State::Initialised))
        .and_then(|()| xenbus::wait_for_state(&back, State::Connected))
        // The disk's size is a backend device property, published with Connected
        // (`io/blkif.h`: "Query backend device properties" once the backend is Connected).
        .and_then(|_| xenbus::read_published_number(&back, "sectors"))
        .and_then(|sectors| xenbus::set_state(&front, State::Connected).map(|()| sectors));
    let sectors = match connected {
        Ok(sectors) => sectors,
        Err(code) => {
            // A backend that closed has unmapped the ring: the grant ends. One that
            // connected before our own write failed may still map it: then the page stays
            // granted, and we say so rather than take it back.
            evtchn::close(port);
            let ended = grant::end_access(RING_GREF);
            if ended != 0 {
                crate::hprintln!(
                    "blkfront: the ring's grant is still in use by d{} (status {ended}): its page stays the backend's",
                    device.backend
                );
            }
            return Err(code.into());
        }
    };
    Ok(Blkfront {
        device,
        ring,
        port,
        sectors,
        next_id: 1,
        answers: Answers::default(),
        broken: false,
    })
}

/// The upcall: take the pending ports (clearing their bits, as Linux's upcall does). Its
/// work is done by returning: the halted code after it looks at the ring.
fn upcall(_frame: &mut TrapFrame) {
    evtchn::take_pending(|_| {});
}

impl Blkfront {
    /// Move one page between guest-physical `page` and the 8 sectors at `sector`
    /// (`operation::READ` fills the page, `WRITE` stores it), and wait for the response.
    pub fn transfer(&mut self, op: u8, sector: u64, page: u64) -> Result<(), Failure> {
        let readonly = op == operation::WRITE; // the backend only reads a page we write out
        let granted = grant::grant_access(DATA_GREF, self.device.backend, page, readonly);
        if granted != 0 {
            return Err(Failure::Grant(granted));
        }
        let request = self.page_request(op, sector, DATA_GREF);
        let response = self.submit(&request);
        // Whatever happened, the backend may no longer reach the page. If it still can (the
        // grant is in use: the backend has not unmapped it), that is what the caller must
        // hear first, whatever the answer: the page is not ours to reuse yet.
        let ended = grant::end_access(DATA_GREF);
        if ended != 0 {
            return Err(Failure::Grant(ended));
        }
        let response = response?;
        if response.status != status::OKAY {
            return Err(Failure::Backend(response.status));
        }
        Ok(())
    }

    /// The next request: `op` on the 8 sectors at `sector`, one segment, the whole page
    /// granted as `gref`.
    pub fn page_request(&self, op: u8, sector: u64, gref: GrantRef) -> Request {
        let mut segments = [Segment::default(); MAX_SEGMENTS];
        segments[0] = Segment {
            gref,
            first_sect: 0,
            last_sect: SECTORS_PER_PAGE - 1,
            _pad: 0,
        };
        Request {
            operation: op,
            nr_segments: 1,
            handle: self.device.vdev,
            id: self.next_id,
            sector_number: sector,
            seg: segments,
            ..Default::default()
        }
    }

    /// Post `request` as it is (a hostile frontend's garbage too) and wait for its response.
    pub fn submit(&mut self, request: &Request) -> Result<Response, Failure> {
        self.submit_without_waiting(request)?;
        self.wait_for_response(request.id)
    }

    /// Post `request`: make it visible, and send an event unless the backend is still
    /// working through earlier ones (it will find this one before it sleeps).
    pub fn submit_without_waiting(&mut self, request: &Request) -> Result<(), Failure> {
        self.post(request)?;
        self.publish();
        Ok(())
    }

    /// Put `request` on the ring, not yet visible to the backend (see [`Blkfront::publish`]).
    pub fn post(&mut self, request: &Request) -> Result<(), Failure> {
        if self.broken {
            return Err(Failure::BackendBroken);
        }
        self.next_id = self.next_id.wrapping_add(1);
        if !self.ring.push_request(request) {
            return Err(Failure::RingFull);
        }
        Ok(())
    }

    /// Make every posted request visible, and send an event unless the backend is still
    /// working through earlier ones (RING_PUSH_REQUESTS_AND_CHECK_NOTIFY): one event for
    /// all the requests posted since the last one.
    pub fn publish(&mut self) {
        if self.ring.push_requests_and_check_notify() {
            self.notify();
        }
    }

    /// Send the backend an event, whatever the ring says.
    pub fn notify(&self) {
        evtchn::send(self.port);
    }

    /// The ring, for a hostile frontend that writes what an honest one would not.
    pub fn ring(&mut self) -> &mut FrontRing {
        &mut self.ring
    }

    /// Wait, halted with interrupts on, for the backend's event, then take the responses
    /// until the one with `id` is there; [`Failure::BackendBroken`] once the backend has
    /// answered more than it was asked, or answered every request but not `id`.
    ///
    /// Every response sends us an event: after taking responses we always ask for an event
    /// at the next one (`final_check_for_responses` moves `rsp_event` past what we took, as
    /// Linux's `blkif_interrupt` does). So we sleep first: the event for our request is
    /// owed, and if it already came while we were busy (interrupts off, as the runtime
    /// keeps them outside this halt), it is still pending and wakes the halt at once,
    /// through the upcall — the step of the trace that shows the backend's answer arrive.
    /// Called with interrupts on, the upcall may have taken that event already, and a halt
    /// first could wait for ever: then the ring is looked at first.
    pub fn wait_for_response(&mut self, id: u64) -> Result<Response, Failure> {
        if let Some(response) = self.answers.take(id) {
            return Ok(response);
        }
        let mut sleep_first = !x86_64::instructions::interrupts::are_enabled();
        x86_64::instructions::interrupts::disable();
        loop {
            // Before a halt, which nothing more from this backend would end: it answered
            // more than it was asked, or every request has its answer and ours is not among
            // them (it answered another id: Linux's blkfront, "response references no
            // pending request").
            if self.broken || self.ring.overflowed() || self.ring.in_flight() == 0 {
                self.broken = true;
                return Err(Failure::BackendBroken);
            }
            if sleep_first {
                // `sti; hlt`: the interrupt flag takes effect after HLT starts, so a
                // pending event wakes the HLT instead of slipping in before it.
                x86_64::instructions::interrupts::enable_and_hlt();
                x86_64::instructions::interrupts::disable();
            }
            sleep_first = true;
            // The responses there, the others' kept (`Answers::take_from`).
            match self.answers.take_from(&mut self.ring, id) {
                Taken::Found(response) => return Ok(response),
                Taken::Broken => self.broken = true,
                Taken::Waiting => {}
            }
        }
    }

    /// Say goodbye: state 5 (Closing), an event so the backend looks, then wait until it is
    /// closed and close our end.
    pub fn disconnect(self) -> Result<(), Refusal> {
        let front = self.device.frontend_dir();
        let back = self.device.backend_dir();
        xenbus::set_state(&front, State::Closing)?;
        evtchn::send(self.port);
        xenbus::wait_for_state(&back, State::Closed)?;
        evtchn::close(self.port);
        let ended = grant::end_access(RING_GREF);
        if ended != 0 {
            return Err(Refusal::Grant(ended));
        }
        Ok(xenbus::set_state(&front, State::Closed)?)
    }
}

fn check(result: i64) -> Result<(), i64> {
    if result < 0 { Err(result) } else { Ok(()) }
}
