//! `frontend-dies` (test guest): a frontend that connects its disk and dies without closing
//! it, in the place of the `swap-in` lab's d1 (`labs/tests/split_driver.rs`).
//!
//! It connects to the backend through blkfront (XenBus states, the ring, the port), then
//! loads an empty IDT and faults: a triple fault, and the hypervisor kills it. Its state
//! stays Connected and it sends no last event: dom0's toolstack and the backend in the
//! driver domain hear of the end only from the store's `@releaseDomain`, and both end
//! normally instead of waiting for ever.
#![no_std]
#![no_main]

use traplab_guests::{BootInfo, blkfront, guest_main, hprintln, traps};

/// The frontend's domain, as the `swap-in` lab's toolstack attaches the disk to it.
const DOMU: u16 = 1;

fn main(_info: &BootInfo) -> i32 {
    let front = match blkfront::connect(DOMU) {
        Ok(front) => front,
        Err(code) => {
            hprintln!("d1: could not connect to the disk: {code}");
            return 40;
        }
    };
    hprintln!(
        "d1: disk {} connected, backend d{}: now d1 dies without closing it",
        front.device.vdev,
        front.device.backend
    );
    traps::triple_fault()
}

guest_main!(main);
