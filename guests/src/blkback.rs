//! blkback: the backend half of Xen's split block driver, in the domain that owns the disk
//! controller — a driver domain, or dom0 (Linux: `drivers/block/xen-blkback/`; the ABI:
//! `traplab_abi::blkif`).
//!
//! The backend maps the frontend's ring page (a grant), binds the frontend's event channel,
//! and then sleeps until an event says requests are there. For each request it takes a
//! *copy* first (a frontend may rewrite the slot while we work: every check and every use
//! reads the copy), checks it (`blkif::check_request`: the operation, the segments, the
//! sectors), maps each segment's page (a grant the frontend made for us: the hypervisor
//! refuses any other), moves the sectors between that page and the disk through the
//! controller this domain owns (`crate::ata`: port I/O that reaches the device without an
//! exit), unmaps the page, and answers. A request that fails a check gets an error response;
//! the backend goes on with the next. A ring whose indexes run ahead of what it can hold is
//! a frontend that lies: the backend stops serving it and lives on.

use crate::ata;
use crate::evtchn;
use crate::grant;
use crate::hprintln;
use crate::hypercall::Refusal;
use crate::sched;
use crate::store;
use crate::xenbus::{self, Device, State};
use traplab_abi::blkif::{
    BackRing, MAX_SEGMENTS, RING_SIZE, Request, Response, SECTOR_SIZE, SharedRing, check_request,
    operation, status,
};
use traplab_abi::evtchn::Port;
use traplab_abi::grant_table::MAP_AREA;
use traplab_abi::store::RELEASE_DOMAIN;

/// Where the ring is mapped: the first page of the grant-map area.
const RING_ADDRESS: u64 = MAP_AREA;
/// Where a request's segment `i` is mapped: the pages after the ring's.
fn segment_address(index: usize) -> u64 {
    MAP_AREA + (1 + index as u64) * 4096
}

/// Unmap the segments mapped with `handles`, the first at its [`segment_address`] and so on.
fn unmap_segments(handles: &[u32]) {
    for (index, &handle) in handles.iter().enumerate() {
        grant::unmap(handle, segment_address(index));
    }
}

/// What one connection did, for the driver domain to report.
#[derive(Debug, Default, Clone, Copy)]
pub struct Served {
    pub requests: u64,
    pub refused: u64,
    /// The frontend's ring indexes ran ahead of the ring: we stopped serving it.
    pub ring_broken: bool,
    /// The frontend's domain ended without closing the device (`@releaseDomain` said so).
    pub frontend_ended: bool,
}

/// Serve the one device the toolstack attaches to us (`me`), until its frontend closes.
///
/// A backend that cannot serve the device it was given (no disk, a ring it cannot map, a
/// port it cannot bind) undoes what it did, says why, and closes its end (state 6), as
/// Linux's blkback does through `xenbus_dev_fatal`: the frontend, waiting for it to connect,
/// sees the close and gives up (`xenbus::wait_for_state`), instead of waiting for ever.
pub fn serve(me: u16) -> Result<Served, Refusal> {
    let device = xenbus::wait_for_attach(me)?;
    let back = device.backend_dir();
    let served = connect_and_serve(me, &device);
    if let Err(refusal) = served {
        hprintln!(
            "blkback: d{me} cannot serve d{}'s disk {} ({refusal}): closing the device",
            device.frontend,
            device.vdev
        );
        let _ = xenbus::set_state(&back, State::Closed);
    }
    served
}

/// [`serve`]'s work once the toolstack has attached `device`: publish the disk, connect, and
/// answer requests until the frontend closes. Whatever failed leaves nothing mapped or bound.
fn connect_and_serve(me: u16, device: &Device) -> Result<Served, Refusal> {
    let disk = ata::identify().map_err(|error| {
        hprintln!("blkback: no disk: {error:?}");
        traplab_abi::hypercall::error::EINVAL
    })?;
    let front = device.frontend_dir();
    let back = device.backend_dir();
    xenbus::set_state(&back, State::InitWait)?;

    xenbus::wait_for_state(&front, State::Initialised)?;
    let ring_ref = xenbus::read_number(&front, "ring-ref")? as u32;
    let remote_port = xenbus::read_number(&front, "event-channel")? as Port;
    let ring_handle =
        grant::map(device.frontend, ring_ref, RING_ADDRESS, false).map_err(Refusal::Grant)?;
    let port = match bind_frontend_port(device.frontend, remote_port) {
        Ok(port) => port,
        Err(code) => {
            grant::unmap(ring_handle, RING_ADDRESS);
            return Err(code.into());
        }
    };
    // SAFETY: the grant is mapped at RING_ADDRESS, one page, in both the nested page tables
    // and ours (`grant::map`), until we unmap it below.
    let sring = unsafe { SharedRing::new(RING_ADDRESS as *mut u8) };
    let mut ring = BackRing::new(sring);
    // Said before the state changes: Connected wakes the frontend, which may run as soon as
    // our time slice ends, and a line printed after the write could come after its own.
    hprintln!(
        "blkback: d{me} serves d{}'s disk {} ({} sectors, {}): ring grant {ring_ref}, port {port}",
        device.frontend,
        device.vdev,
        disk.sectors,
        disk.model()
    );
    // The store port, which `@releaseDomain` makes pending when a domain ends: a frontend
    // that dies without closing (killed, say) does not leave us polling its port for ever
    // (Linux's blkback hears of it from its XenBus watch on the frontend). Then the device's
    // properties, and Connected (`io/blkif.h`: "Publish backend device properties", then
    // XenbusStateConnected): the frontend reads them once it sees it.
    let connected = store::watch_event(RELEASE_DOMAIN).and_then(|store_port| {
        xenbus::write_number(&back, "sectors", disk.sectors)
            .and_then(|()| xenbus::write_number(&back, "sector-size", SECTOR_SIZE as u64))
            .and_then(|()| xenbus::set_state(&back, State::Connected))
            .map(|()| store_port)
    });
    let store_port = match connected {
        Ok(store_port) => store_port,
        Err(code) => {
            grant::unmap(ring_handle, RING_ADDRESS);
            evtchn::close(port);
            return Err(code.into());
        }
    };

    let mut served = Served::default();
    loop {
        if ring.overflowed() {
            hprintln!(
                "blkback: d{}'s ring says req_prod = {} but we took up to {}: more than the {RING_SIZE} a ring holds; the frontend is broken and we stop serving it",
                device.frontend,
                ring.sring.req_prod(),
                ring.req_cons
            );
            served.ring_broken = true;
            break;
        }
        while let Some(request) = ring.take_request() {
            let response = answer(device, &request, disk.sectors, &mut served);
            ring.push_response(&response);
            if ring.overflowed() {
                break;
            }
        }
        if ring.overflowed() {
            // Answer what we took; the loop's top stops serving this ring.
            if ring.push_responses_and_check_notify() {
                evtchn::send(port);
            }
            continue;
        }
        // Nothing left: ask for an event at the next request, and look once more in case
        // one came just before (RING_FINAL_CHECK_FOR_REQUESTS). We ask *before* we answer:
        // the frontend, woken by our answer, may post its next request at once, and must
        // then send an event, since we are about to sleep. (Asking early only ever costs an
        // event too many, never one too few.)
        let more = ring.final_check_for_requests();
        if ring.push_responses_and_check_notify() {
            evtchn::send(port);
        }
        if more {
            continue;
        }
        if xenbus::read_state(&front) >= State::Closing {
            break;
        }
        if evtchn::pending(store_port) {
            evtchn::clear(store_port);
            if xenbus::released(device.frontend) {
                hprintln!(
                    "blkback: d{} has ended without closing its disk: d{me} closes its end",
                    device.frontend
                );
                served.frontend_ended = true;
                break;
            }
        }
        // Sleep until the frontend's event or the store's (SCHEDOP_poll: no upcall needed),
        // then forget the frontend's.
        sched::poll(&[port, store_port]);
        evtchn::clear(port);
    }

    grant::unmap(ring_handle, RING_ADDRESS);
    evtchn::close(port);
    xenbus::set_state(&back, State::Closed)?;
    Ok(served)
}

/// Our shared-info page, without an upcall (we poll for the frontend's events), and our
/// end of the frontend's channel `remote_port`.
fn bind_frontend_port(frontend: u16, remote_port: Port) -> Result<Port, i64> {
    let named = evtchn::init(None);
    if named < 0 {
        return Err(named);
    }
    evtchn::bind_interdomain(frontend, remote_port)
}

/// Do one request (already copied out of the ring) and say how it went.
fn answer(device: &Device, request: &Request, disk_sectors: u64, served: &mut Served) -> Response {
    served.requests += 1;
    let mut response = Response {
        id: request.id,
        operation: request.operation,
        status: status::OKAY,
        ..Default::default()
    };
    // EXERCISE bad-blkif.1: a request names the virtual disk it is for (`handle`); refuse
    // one that is not for this device's (`device.vdev`).
    if let Err(refusal) = check_request(request, disk_sectors) {
        served.refused += 1;
        hprintln!("blkback: request {} refused: {refusal}", request.id);
        response.status = refusal.status();
        return response;
    }
    let writing = request.operation == operation::WRITE;
    let segments = &request.seg[..request.nr_segments as usize];
    // Every segment's page is mapped before any sector moves, as Linux's blkback maps them
    // all first (`xen_blkbk_map`): a request with one bad grant does nothing at all, rather
    // than write its first segments to the disk and then fail.
    let mut handles = [0; MAX_SEGMENTS];
    for (index, segment) in segments.iter().enumerate() {
        // A write request: we only read the frontend's page. A read: we fill it.
        match grant::map(
            device.frontend,
            segment.gref,
            segment_address(index),
            writing,
        ) {
            Ok(handle) => handles[index] = handle,
            Err(code) => {
                unmap_segments(&handles[..index]);
                served.refused += 1;
                hprintln!(
                    "blkback: request {}: grant {} of d{} cannot be mapped (status {code}): error",
                    request.id,
                    segment.gref,
                    device.frontend
                );
                response.status = status::ERROR;
                return response;
            }
        }
    }
    let mut sector = request.sector_number;
    let mut failed = None;
    for (index, segment) in segments.iter().enumerate() {
        let address = segment_address(index);
        let count = (segment.last_sect - segment.first_sect + 1) as u64;
        let start = address + segment.first_sect as u64 * SECTOR_SIZE as u64;
        let length = count as usize * SECTOR_SIZE;
        let moved = if writing {
            // SAFETY: the granted page is mapped at `address` (read-only for a write
            // request), and the sectors lie inside it (check_request: last_sect ≤ 7).
            let bytes = unsafe { core::slice::from_raw_parts(start as *const u8, length) };
            ata::write(sector, bytes)
        } else {
            // SAFETY: as above, mapped writable for a read request.
            let bytes = unsafe { core::slice::from_raw_parts_mut(start as *mut u8, length) };
            ata::read(sector, bytes)
        };
        if let Err(error) = moved {
            failed = Some(error);
            break;
        }
        sector += count;
    }
    unmap_segments(&handles[..segments.len()]);
    if let Some(error) = failed {
        hprintln!("blkback: request {}: the disk says {error:?}", request.id);
        response.status = status::ERROR;
        return response;
    }
    hprintln!(
        "blkback: {} {} sectors at sector {} for d{}: okay",
        if writing { "wrote" } else { "read" },
        sector - request.sector_number,
        request.sector_number,
        device.frontend
    );
    response
}
