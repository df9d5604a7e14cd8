//! `bad-blkif`: a hostile frontend, against the backend in the driver domain and the
//! hypervisor. Runs as d1 in the `bad-blkif` lab (dom0 and the driver domain d2 run the
//! `swap-in` program: the toolstack and an honest blkback).
//!
//! Each attack, and who stops it:
//!
//! 0. a state that names none (Xen's 7, Reconfiguring, which this driver does not use, in a
//!    long value), written before connecting → the backend waits, blocked, for one it
//!    knows (`xenbus`);
//! 1. touch the disk controller d2 owns → the hypervisor: reads all ones, writes dropped;
//! 2. a request naming grant 7, which d1 never made → the backend tries to map it, the
//!    hypervisor refuses the map, the backend answers ERROR; and a write whose second
//!    segment names it → the backend maps every segment first: ERROR, nothing written;
//! 3. a read past the end of the disk → blkback's check, ERROR;
//! 4. `nr_segments` = 12 → blkback's check, ERROR (a request holds 11);
//! 5. a request rewritten after it was posted (before the event) → blkback reads it once,
//!    into its own copy, and checks and uses that copy: ERROR, for the request it checked;
//! 6. `req_prod` far ahead of anything the ring can hold → blkback stops serving d1, and
//!    lives on.
//!
//! d1 prints each answer; the `bad-blkif` lab checks them.
#![no_std]
#![no_main]

use traplab_abi::ata;
use traplab_abi::blkif::{Response, operation, status};
use traplab_guests::blkfront::{self, Blkfront, DATA_GREF};
use traplab_guests::xenbus::{self, State};
use traplab_guests::{BootInfo, grant, guest_main, hprintln};
use x86_64::instructions::port::Port;

#[repr(C, align(4096))]
struct Page([u8; 4096]);

/// The page the honest-looking requests name.
static mut PAGE: Page = Page([0; 4096]);

/// A virtual disk d1 was never given (`handle`): 0x1234.
const OTHER_DISK: u16 = 4660;

/// A grant reference d1 never fills.
const NEVER_GRANTED: u32 = 7;

/// Attack 0's state: Xen's 7 (Reconfiguring), which this driver does not use, in a value
/// longer than any state's text.
const NO_STATE: &str = "7, Reconfiguring: no state of this driver";

/// What attack 2b would have written to sector 0, had blkback written its first segment.
const MARKER: &[u8] = b"bad-blkif wrote this";

fn main(info: &BootInfo) -> i32 {
    if info.domain != 1 {
        hprintln!("bad-blkif runs as d1, the frontend");
        return 1;
    }
    // 1. The controller is d2's.
    // SAFETY: reading a status port has no side effect on anything of ours.
    let status_port = unsafe { Port::<u8>::new(ata::COMMAND_BLOCK + 7).read() };
    hprintln!("d1: the disk controller's status port reads {status_port:#x}");

    // 0. A state the backend does not know, once the toolstack has made the device (so that
    // its own "1" does not overwrite it).
    let front_dir = traplab_guests::text!(128, "/local/domain/1/device/vbd/{}", xenbus::VDEV);
    if xenbus::read_number(&front_dir, "backend-id").is_ok() {
        let state = xenbus::node(&front_dir, "state");
        let written = traplab_guests::store::write(state.as_str(), NO_STATE);
        hprintln!("d1: a state that names none written: {written}");
    }

    let mut front = match blkfront::connect(1) {
        Ok(front) => front,
        Err(code) => {
            hprintln!("d1: could not connect: {code}");
            return 2;
        }
    };
    let page = (&raw mut PAGE) as u64;

    // 2. A grant that does not exist.
    let request = front.page_request(operation::READ, 0, NEVER_GRANTED);
    report(&mut front, "grant 7, never granted", &request);

    // With a real grant from here on: the backend may map the page.
    grant::grant_access(DATA_GREF, front.device.backend, page, false);

    // 2b. A write of two segments, the second's grant never made: blkback maps every
    // segment before it moves a sector, so the first one is not written either.
    // SAFETY: PAGE is ours, and MARKER fits in it; the backend maps it only while it
    // serves a request, which it is not doing now.
    unsafe {
        core::ptr::copy_nonoverlapping(MARKER.as_ptr(), page as *mut u8, MARKER.len());
    }
    let mut request = front.page_request(operation::WRITE, 0, DATA_GREF);
    request.nr_segments = 2;
    request.seg[1] = request.seg[0];
    request.seg[1].gref = NEVER_GRANTED;
    report(
        &mut front,
        "a write whose second grant was never made",
        &request,
    );

    // 3. Past the end.
    let request = front.page_request(operation::READ, front.sectors - 4, DATA_GREF);
    report(&mut front, "8 sectors from 4 before the end", &request);

    // 4. Twelve segments.
    let mut request = front.page_request(operation::READ, 0, DATA_GREF);
    request.nr_segments = 12;
    report(&mut front, "nr_segments 12", &request);

    // A request for another virtual disk than the one we were given.
    let mut request = front.page_request(operation::READ, 0, DATA_GREF);
    request.handle = OTHER_DISK;
    report(&mut front, "a request for disk 4660", &request);

    // 5. Posted, then rewritten before the event: a read of sector 0 that becomes a
    // request of 12 segments once it is on the ring. (Once the backend has answered, the
    // slot holds its response: a frontend that writes it then only spoils its own answer.)
    // As a rule the backend reads the slot once, after the rewrite: it waits for the event,
    // which comes after it. (If it was still awake from the last request, and the
    // scheduler ran it between the two writes, it read the honest request instead.) Either
    // way one answer, for the one copy it read. That it checks and uses that copy, never the
    // slot again, is what a race on a real machine would test: the host test
    // `take_request_returns_a_copy_the_frontend_cannot_change` rewrites the slot between the
    // check and the use.
    let mut request = front.page_request(operation::READ, 0, DATA_GREF);
    request.id = 100;
    let ring = front.ring();
    ring.push_request(&request);
    ring.push_requests_and_check_notify();
    let mut rewritten = request;
    rewritten.nr_segments = 12;
    let index = ring.req_prod_pvt.wrapping_sub(1);
    ring.sring.write_request(index, &rewritten);
    front.notify();
    match front.wait_for_response(request.id) {
        Ok(response) => hprintln!(
            "d1: rewritten after posting: {} (one answer, for the copy blkback read)",
            describe(&response)
        ),
        Err(failure) => hprintln!("d1: rewritten after posting: {failure:?}"),
    }
    grant::end_access(DATA_GREF);

    // 6. Indexes that run ahead.
    let ring = front.ring();
    let lie = ring.req_prod_pvt.wrapping_add(40);
    ring.sring.set_req_prod(lie);
    hprintln!("d1: req_prod set to {lie}, 40 requests ahead of the ring");
    front.notify();
    let back = front.device.backend_dir();
    match xenbus::wait_for_state(&back, State::Closed) {
        Ok(_) => hprintln!("d1: the backend closed the connection"),
        Err(code) => hprintln!("d1: the backend's state is lost: {code}"),
    }
    let _ = grant::end_access(blkfront::RING_GREF);
    let _ = xenbus::set_state(&front.device.frontend_dir(), State::Closed);
    0
}

/// Submit `request` and print how it was answered.
fn report(front: &mut Blkfront, what: &str, request: &traplab_abi::blkif::Request) {
    match front.submit(request) {
        Ok(response) => hprintln!("d1: {what}: {}", describe(&response)),
        Err(failure) => hprintln!("d1: {what}: failed: {failure:?}"),
    }
}

fn describe(response: &Response) -> &'static str {
    status::name(response.status).unwrap_or("an unknown status")
}

guest_main!(main);
