//! `blk-stream` (benchmark guest): reads the disk as fast as it can, timed with the TSC.
//! `traplab bench --split-driver` runs it two ways, each with the trace off and on:
//!
//! - **direct**: it owns the disk controller (`BootInfo::disk_owner` is its own domain) and
//!   reads with the polled ATA driver: the baseline, no hypervisor on the data path;
//! - **split**: it is d1, a frontend, beside dom0's toolstack and the driver domain d2
//!   (both running the `swap-in` program); it keeps [`IN_FLIGHT`] requests on the ring —
//!   one page each, posted together and published with one event — and waits for them.
//!
//! Either way it moves [`PAGES`] pages of 8 sectors and prints
//! `N reads of 8 sectors in T TSC ticks`.
#![no_std]
#![no_main]

use core::arch::x86_64::_rdtsc;
use traplab_abi::blkif::{SECTOR_SIZE, SECTORS_PER_PAGE, operation};
use traplab_guests::blkfront::{self, Blkfront};
use traplab_guests::{BootInfo, ata, grant, guest_main, hprintln, paging};

/// Pages read per run.
const PAGES: u64 = 256;
/// Requests on the ring at once (each with its own page and grant, 1..=16).
const IN_FLIGHT: usize = 16;

fn main(info: &BootInfo) -> i32 {
    let me = info.domain;
    let result = if info.disk_owner == me {
        direct()
    } else {
        split(me as u16)
    };
    match result {
        Ok(ticks) => {
            hprintln!("{PAGES} reads of {SECTORS_PER_PAGE} sectors in {ticks} TSC ticks");
            0
        }
        Err(why) => {
            hprintln!("blk-stream: {why}");
            1
        }
    }
}

/// Read PAGES pages straight from the controller this domain owns.
fn direct() -> Result<u64, &'static str> {
    let mut page = [0u8; SECTORS_PER_PAGE as usize * SECTOR_SIZE];
    // SAFETY: RDTSC is not intercepted and has no side effects.
    let start = unsafe { _rdtsc() };
    for index in 0..PAGES {
        ata::read(index * SECTORS_PER_PAGE as u64, &mut page)
            .map_err(|_| "a direct read failed")?;
    }
    // SAFETY: as above.
    Ok(unsafe { _rdtsc() } - start)
}

/// Read PAGES pages through blkfront, IN_FLIGHT at a time.
fn split(me: u16) -> Result<u64, &'static str> {
    let mut front: Blkfront = blkfront::connect(me).map_err(|_| "no connection")?;
    let backend = front.device.backend;
    let mut pages = [0u64; IN_FLIGHT];
    for (slot, page) in pages.iter_mut().enumerate() {
        *page = paging::alloc_frame().ok_or("no memory")?;
        let gref = blkfront::DATA_GREF + slot as u32;
        if grant::grant_access(gref, backend, *page, false) != 0 {
            return Err("a grant failed");
        }
    }
    // SAFETY: RDTSC is not intercepted and has no side effects.
    let start = unsafe { _rdtsc() };
    let mut sector = 0;
    for _ in 0..PAGES / IN_FLIGHT as u64 {
        let mut ids = [0u64; IN_FLIGHT];
        for (slot, id) in ids.iter_mut().enumerate() {
            let gref = blkfront::DATA_GREF + slot as u32;
            let request = front.page_request(operation::READ, sector, gref);
            *id = request.id;
            front.post(&request).map_err(|_| "the ring is full")?;
            sector += SECTORS_PER_PAGE as u64;
        }
        front.publish();
        for id in ids {
            match front.wait_for_response(id) {
                Ok(response) if response.status == 0 => {}
                Ok(_) => return Err("a read failed"),
                Err(_) => return Err("the backend broke the ring"),
            }
        }
    }
    // SAFETY: as above.
    let ticks = unsafe { _rdtsc() } - start;
    for slot in 0..IN_FLIGHT {
        grant::end_access(blkfront::DATA_GREF + slot as u32);
    }
    front.disconnect().map_err(|_| "disconnecting failed")?;
    Ok(ticks)
}

guest_main!(main);
