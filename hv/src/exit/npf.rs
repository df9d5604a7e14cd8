//! Nested page fault (exit code 0x400 NPF): the guest touched guest-physical memory that
//! its nested page tables do not give it.
//!
//! EXITINFO2 holds the guest-physical address, EXITINFO1 a #PF-style error code plus two
//! bits saying whether the CPU was walking the guest's own page tables (AMD APM vol. 2,
//! 15.25.6). All of a guest's RAM is mapped from the start, so an NPF means an access
//! outside it: there is no device there, and the domain is killed.

use super::{DomainEnd, Next};
use crate::decide;
use crate::domain::Domain;
use alloc::format;
use traplab_abi::event::Action;
use traplab_abi::svm::NpfInfo;

pub fn handle(domain: &mut Domain) -> Next {
    let gpa = domain.vmcb.control.exitinfo2;
    let info = NpfInfo::decode(domain.vmcb.control.exitinfo1);
    let access = if info.fetch {
        "instruction fetch"
    } else if info.write {
        "write"
    } else {
        "read"
    };
    let during = if info.guest_page_walk { " while walking its page tables" } else { "" };
    decide!(
        domain,
        Action::Kill,
        "{access} of guest-physical {gpa:#x}{during}: outside the {} MiB the guest owns, and no device is there",
        domain.memory.size >> 20
    );
    Next::End(DomainEnd::Killed { reason: format!("{access} of guest-physical {gpa:#x}, which it does not own") })
}
