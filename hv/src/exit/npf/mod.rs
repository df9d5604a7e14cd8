//! Nested page fault (exit code 0x400 NPF): a guest-physical access the nested page tables
//! do not allow.
//!
//! EXITINFO2 holds the guest-physical address, EXITINFO1 a #PF-style error code plus two
//! bits saying whether the CPU was walking the guest's own page tables (AMD APM vol. 2,
//! 15.25.6). Each reason the hypervisor leaves a hole in the nested page tables has its
//! file here:
//!
//! | the address is…                                   | file          | the hypervisor…           |
//! |---------------------------------------------------|---------------|---------------------------|
//! | the MMIO window of the lab device                 | `mmio.rs`     | emulates the device access |
//! | RAM of the domain not touched yet (`lazy-memory`) | `populate.rs` | maps a fresh frame          |
//! | anything else                                     | here          | ends the domain             |

mod mmio;
mod populate;

use super::Exit;
use crate::decide;
use crate::decision::Decision;
use crate::device::Devices;
use crate::domain::Guest;
use alloc::format;
use traplab_abi::event::Action;
use traplab_abi::svm::NpfInfo;

pub fn handle(exit: &Exit, guest: &Guest, gpa: u64, info: NpfInfo) -> Decision {
    if Devices::claims(gpa) {
        return mmio::handle(exit, guest, gpa);
    }
    let size = guest.memory.size();
    if gpa < size && !info.present && guest.memory.lazy() {
        return populate::handle(exit, guest, gpa);
    }
    let access = if info.fetch {
        "instruction fetch"
    } else if info.write {
        "write"
    } else {
        "read"
    };
    let during = if info.guest_page_walk {
        " while walking its page tables"
    } else {
        ""
    };
    decide!(
        Action::Kill,
        "{access} of guest-physical {gpa:#x}{during}: outside the {} MiB the guest owns, and no device is there",
        size >> 20
    )
    .killing(format!(
        "{access} of guest-physical {gpa:#x}, which it does not own"
    ))
}
