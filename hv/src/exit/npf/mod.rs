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

use super::{DomainEnd, Next};
use crate::decide;
use crate::domain::Domain;
use alloc::format;
use traplab_abi::event::Action;
use traplab_abi::svm::NpfInfo;

pub fn handle(domain: &mut Domain) -> Next {
    let gpa = domain.vmcb.control.exitinfo2;
    let info = NpfInfo::decode(domain.vmcb.control.exitinfo1);
    if crate::device::lab_device::contains(gpa) {
        return mmio::handle(domain, gpa);
    }
    if gpa < domain.memory.size && !info.present && domain.memory.lazy {
        return populate::handle(domain, gpa);
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
        domain,
        Action::Kill,
        "{access} of guest-physical {gpa:#x}{during}: outside the {} MiB the guest owns, and no device is there",
        domain.memory.size >> 20
    );
    Next::End(DomainEnd::Killed {
        reason: format!("{access} of guest-physical {gpa:#x}, which it does not own"),
    })
}
