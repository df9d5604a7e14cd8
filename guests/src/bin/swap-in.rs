//! `swap-in`: a domU's page fault that wakes the block backend in a driver domain — the trap
//! of "Anatomy of a trap", end to end.
//!
//! The same program runs in every domain of the lab, in the part its number gives it:
//!
//! - **dom0, the toolstack**, creates the virtual disk's two directories in the store (the
//!   frontend is d1, the backend is the domain that owns the disk controller), then waits
//!   until the frontend's domain has ended (the store's `@releaseDomain`). When dom0 owns
//!   the controller itself (the `swap-in-dom0` lab) it is the backend too: "it is NORMALLY
//!   dom0, but doesn't have to be".
//! - **the driver domain**, which owns the disk controller (`BootInfo::disk_owner`), runs
//!   blkback: it serves d1's requests from the real disk.
//! - **d1, the domU**, keeps one page of its memory in "swap" on that disk. It writes the page
//!   out through blkfront, unmaps it and wipes its frame; then it touches it. The #PF comes to
//!   its own handler (reflected by the hypervisor), which reads the page back from swap:
//!   request → event → the hypervisor forwards → the backend wakes, reads the disk through
//!   the controller it owns, answers → event → d1's upcall → the handler maps the page and
//!   returns, and the access that faulted runs again and sees the data.
#![no_std]
#![no_main]

use traplab_abi::blkif::{SECTORS_PER_PAGE, operation};
use traplab_abi::boot::NO_DISK;
use traplab_guests::blkfront::{self, Blkfront};
use traplab_guests::traps::{self, TrapFrame};
use traplab_guests::xenbus::{self, Device, State};
use traplab_guests::{BootInfo, blkback, guest_main, hprintln, paging};
use x86_64::registers::control::Cr2;

/// The domU: the frontend, and the one that pages.
const DOMU: u16 = 1;
/// Where d1 keeps the page that goes to swap (a virtual address of its own).
const SWAPPED_PAGE: u64 = 0x6000_0000;
/// Its swap slot: page 1 of the disk, sectors 8–15 (byte 4096 of the image file).
const SWAP_SECTOR: u64 = 8;
/// The #PF vector.
const PAGE_FAULT: u8 = 14;

/// What the page holds: a line that says what it is, then byte `i` = `i` mod 251 (a prime,
/// so no sector repeats another).
const HEADER: &[u8] = b"traplab swap-in: d1's page, kept in swap at sector 8\n";

fn expected_byte(index: usize) -> u8 {
    HEADER.get(index).copied().unwrap_or((index % 251) as u8)
}

/// d1's frontend, for the page-fault handler. One CPU: the handler runs only while `main`
/// touches the swapped page, never while `main` uses the frontend itself.
static mut FRONT: Option<Blkfront> = None;
/// The frame the swapped page lives in when it is in memory.
static mut FRAME: u64 = 0;

fn main(info: &BootInfo) -> i32 {
    let me = info.domain as u16;
    let backend = info.disk_owner;
    if backend == NO_DISK {
        hprintln!("swap-in: this lab needs a disk controller owned by a domain (a [disk] owner)");
        return 10;
    }
    let backend = backend as u16;
    let device = Device {
        frontend: DOMU,
        backend,
        vdev: xenbus::VDEV,
    };
    match me {
        0 => toolstack(&device, me == backend),
        _ if me == backend => driver_domain(me),
        DOMU => domu(),
        other => {
            hprintln!("swap-in: d{other} has no part in this lab");
            11
        }
    }
}

/// dom0: attach the disk to d1 (served by `device.backend`), and wait for the end.
fn toolstack(device: &Device, also_backend: bool) -> i32 {
    if let Err(code) = xenbus::create_vbd(device) {
        hprintln!("d0: could not create the virtual disk's directories: {code}");
        return 20;
    }
    hprintln!(
        "d0: toolstack: disk {} of d{} attached, backend in d{}",
        device.vdev,
        device.frontend,
        device.backend
    );
    if also_backend {
        // EXERCISE swap-in-dom0.1: once the disk is closed, read d1's swap slot (sector 8)
        // straight from the disk, and print the first line it holds.
        return driver_domain(0);
    }
    // Nothing more to do: dom0 sleeps (blocked) until the frontend's domain has ended, as
    // Xen's toolstack waits for `@releaseDomain`, and then looks at what it left.
    if let Err(code) = xenbus::wait_for_release(device.frontend) {
        hprintln!("d0: lost the store: {code}");
        return 21;
    }
    match xenbus::read_state(&device.frontend_dir()) {
        State::Closed => hprintln!("d0: d{}'s disk is closed", device.frontend),
        left => hprintln!(
            "d0: d{} has ended and left its disk {left:?}: its backend, d{}, closes it",
            device.frontend,
            device.backend
        ),
    }
    0
}

/// The domain that owns the disk controller: blkback.
fn driver_domain(me: u16) -> i32 {
    match blkback::serve(me) {
        Ok(served) => {
            let why = match (served.ring_broken, served.frontend_ended) {
                (true, _) => "; the frontend's ring was broken, and the connection closed",
                (_, true) => "; the frontend ended without closing",
                _ => "",
            };
            hprintln!(
                "d{me}: blkback done: {} requests, {} refused{why}",
                served.requests,
                served.refused
            );
            0
        }
        Err(refusal) => {
            hprintln!("d{me}: blkback failed: {refusal}");
            30
        }
    }
}

/// d1: page out, touch, page in through the fault handler, check.
fn domu() -> i32 {
    let mut front = match blkfront::connect(DOMU) {
        Ok(front) => front,
        Err(refusal) => {
            hprintln!("d1: could not connect to the disk: {refusal}");
            return 40;
        }
    };
    hprintln!(
        "d1: disk {} connected: backend d{}, {} sectors, port {}",
        front.device.vdev,
        front.device.backend,
        front.sectors,
        front.port
    );

    // The page, mapped at SWAPPED_PAGE and filled.
    let Some(frame) = paging::map_new(SWAPPED_PAGE, paging::Flags::WRITABLE) else {
        return 41;
    };
    for index in 0..4096 {
        // SAFETY: SWAPPED_PAGE is mapped to our fresh frame, writable.
        unsafe { ((SWAPPED_PAGE + index as u64) as *mut u8).write_volatile(expected_byte(index)) };
    }

    // Page out: the frame goes to the disk, then leaves our page tables and is wiped.
    // EXERCISE swap-in.1: write a second page to swap (at sector 16) together with this
    // one, with one event for both: post both requests, then publish once.
    if let Err(failure) = front.transfer(operation::WRITE, SWAP_SECTOR, frame) {
        hprintln!("d1: writing the page to swap failed: {failure:?}");
        return 42;
    }
    paging::unmap(SWAPPED_PAGE);
    // SAFETY: the frame is ours and no longer mapped anywhere but at its identity address.
    unsafe { core::ptr::write_bytes(frame as *mut u8, 0, 4096) };
    hprintln!(
        "d1: page {SWAPPED_PAGE:#x} written to swap (sectors {SWAP_SECTOR}-{}), unmapped, its frame wiped",
        SWAP_SECTOR + SECTORS_PER_PAGE as u64 - 1
    );

    // SAFETY: one CPU; the handler reads these only during the touch below.
    unsafe {
        FRAME = frame;
        FRONT = Some(front);
    }
    traps::set_handler(PAGE_FAULT, page_fault);

    // The touch: a #PF, and when the handler returns, this same load again.
    // SAFETY: SWAPPED_PAGE is unmapped now; the handler maps it back before the load retries.
    let first = unsafe { (SWAPPED_PAGE as *const u8).read_volatile() };
    let mut differences = 0;
    for index in 0..4096 {
        // SAFETY: mapped again by the handler.
        let byte = unsafe { ((SWAPPED_PAGE + index as u64) as *const u8).read_volatile() };
        if byte != expected_byte(index) {
            differences += 1;
        }
    }
    if differences != 0 {
        hprintln!("d1: the page came back with {differences} wrong bytes");
        return 43;
    }
    hprintln!(
        "d1: the retried access read {:?}: all 4096 bytes are back",
        first as char
    );

    // SAFETY: the handler is done with it.
    let Some(front) = (unsafe { (*(&raw mut FRONT)).take() }) else {
        return 44;
    };
    match front.disconnect() {
        Ok(()) => 0,
        Err(code) => {
            hprintln!("d1: disconnecting failed: {code}");
            45
        }
    }
}

/// d1's #PF handler: a fault on the swapped page reads it back from swap; any other fault
/// is a bug.
fn page_fault(frame: &mut TrapFrame) {
    let address = Cr2::read_raw();
    if address & !0xfff != SWAPPED_PAGE {
        hprintln!(
            "d1: #PF at {address:#x} (RIP {:#x}, error {:#x}): not the swapped page",
            frame.rip,
            frame.error_code
        );
        traplab_guests::hypercall::exit(46);
    }
    hprintln!(
        "d1: #PF at {address:#x}: the page is in swap, reading sectors {SWAP_SECTOR}-{}",
        SWAP_SECTOR + SECTORS_PER_PAGE as u64 - 1
    );
    // SAFETY: one CPU; `domu` set them before the touch and does not use them meanwhile.
    let (front, page) = unsafe { ((*(&raw mut FRONT)).as_mut(), FRAME) };
    let Some(front) = front else {
        traplab_guests::hypercall::exit(47);
    };
    if let Err(failure) = front.transfer(operation::READ, SWAP_SECTOR, page) {
        hprintln!("d1: reading the page back failed: {failure:?}");
        traplab_guests::hypercall::exit(48);
    }
    if paging::map(SWAPPED_PAGE, page, paging::Flags::WRITABLE).is_err() {
        traplab_guests::hypercall::exit(49);
    }
    hprintln!("d1: page {SWAPPED_PAGE:#x} is back in frame {page:#x}: the access runs again");
}

guest_main!(main);
