//! `driver-domain`: one domain owns the whole disk controller.
//!
//! The lab's machine has a real disk: QEMU's legacy ATA controller with a raw image, which
//! the hypervisor gives, whole, to d1 (`[disk] owner = 1`). Two domains side by side, this
//! same program in each:
//!
//! - **d1, the driver domain**, finds itself the owner in its boot info, identifies the
//!   disk, writes a sector, flushes the disk's cache, reads the sector back and compares.
//!   Its port I/O makes no exit at all: its I/O permission map lets it through to the
//!   controller. Then it tells d2, through the store, that it is done.
//! - **d2**, waiting for that, reads the controller's status port: the access exits, and
//!   the hypervisor answers as an empty bus does, all ones, because the controller is d1's.
//!   Its driver's IDENTIFY then finds no drive. d2 is not killed: a PC without a disk would
//!   not kill a program that looks for one either.
#![no_std]
#![no_main]

use traplab_guests::ata::{self, SECTOR_SIZE};
use traplab_guests::{BootInfo, guest_main, hprintln, store};

const DONE_NODE: &str = "/local/domain/1/driver-domain/done";
/// The sector d1 writes: at byte 3 × 512 = 0x600 of the image file.
const MESSAGE_SECTOR: u64 = 3;
const MESSAGE: &[u8] = b"traplab: written by d1, the driver domain";

/// The sector's text, up to its first zero byte.
fn text(sector: &[u8]) -> &str {
    let length = sector
        .iter()
        .position(|&byte| byte == 0)
        .unwrap_or(sector.len());
    core::str::from_utf8(&sector[..length]).unwrap_or("(not text)")
}

fn driver_domain(info: &BootInfo) -> i32 {
    let status = use_the_disk(info);
    // Done, well or not: d2 waits for this, and would wait for ever.
    store::write(DONE_NODE, "1");
    status
}

/// d1's part: identify, write, read back. Its exit status.
fn use_the_disk(info: &BootInfo) -> i32 {
    if info.disk_owner != info.domain {
        hprintln!(
            "d1: the disk controller is not mine (BootInfo.disk_owner = {:#x})",
            info.disk_owner
        );
        return 1;
    }
    hprintln!("d1: the disk controller is mine (BootInfo.disk_owner = 1)");
    let disk = match ata::identify() {
        Ok(disk) => disk,
        Err(error) => {
            hprintln!("d1: identify: {error}");
            return 2;
        }
    };
    hprintln!(
        "d1: the disk is \"{}\", {} sectors of {SECTOR_SIZE} bytes",
        disk.model(),
        disk.sectors
    );
    // The message, padded with zeros to a whole sector.
    let mut sector = [0u8; SECTOR_SIZE];
    sector[..MESSAGE.len()].copy_from_slice(MESSAGE);
    if let Err(error) = ata::write(MESSAGE_SECTOR, &sector) {
        hprintln!("d1: writing sector {MESSAGE_SECTOR}: {error}");
        return 3;
    }
    let mut back = [0u8; SECTOR_SIZE];
    if let Err(error) = ata::read(MESSAGE_SECTOR, &mut back) {
        hprintln!("d1: reading sector {MESSAGE_SECTOR}: {error}");
        return 4;
    }
    let same = back == sector;
    hprintln!(
        "d1: sector {MESSAGE_SECTOR} written, flushed and read back: \"{}\"{}",
        text(&back),
        if same { "" } else { " (not what was written)" }
    );
    // EXERCISE driver-domain.1: read the disk's last sector and the one after it, and print
    // what the driver says of each (`d1: sector 2047: …`, `d1: sector 2048: …`).
    if same { 0 } else { 5 }
}

fn neighbour(info: &BootInfo) -> i32 {
    // d1 goes first: the only order between the two is this wait.
    let mut done = [0u8; 8];
    if store::wait(DONE_NODE, &mut done).is_err() {
        return 2;
    }
    let status = ata::status();
    hprintln!(
        "d2: the disk controller is d{}'s; its status port reads {status:#04x}",
        info.disk_owner
    );
    match ata::identify() {
        Ok(disk) => {
            hprintln!(
                "d2: identify found \"{}\": the controller is not d1's alone",
                disk.model()
            );
            1
        }
        Err(error) => {
            hprintln!("d2: identify: {error}");
            if status == 0xff { 0 } else { 3 }
        }
    }
}

fn main(info: &BootInfo) -> i32 {
    match info.domain {
        1 => driver_domain(info),
        2 => neighbour(info),
        other => {
            hprintln!("driver-domain runs as d1 and d2, not d{other}");
            1
        }
    }
}

guest_main!(main);
