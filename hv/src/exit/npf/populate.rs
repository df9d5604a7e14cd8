//! The first touch of RAM the domain has not used yet (setting `lazy-memory`): map a frame.
//!
//! With lazy memory the nested page tables start empty: each page of guest RAM gets a host
//! frame only when the guest first touches it, as a hypervisor that overcommits memory (or
//! a balloon driver's host) does. The faulting instruction then runs again and works.
//! (The hypervisor's own accesses to guest memory — loading the image, reading a hypercall's
//! buffer — populate pages silently.)

use super::super::{DomainEnd, Next};
use crate::decide;
use crate::domain::Domain;
use alloc::format;
use traplab_abi::event::Action;

pub fn handle(domain: &mut Domain, gpa: u64) -> Next {
    let page = gpa & !0xfff;
    decide!(
        domain,
        Action::Emulate,
        "guest-physical {page:#x} is this domain's RAM, not touched before: the hypervisor gives it a frame now, and the access runs again"
    );
    let Some(frame) = domain.memory.populate(page) else {
        decide!(
            domain,
            Action::Kill,
            "no host memory left to give guest-physical {page:#x}"
        );
        return Next::End(DomainEnd::Killed {
            reason: "out of host memory".into(),
        });
    };
    // EXERCISE lazy-memory.1: map the next page too, if it is RAM that is not mapped yet
    // (`domain.memory.npt.translate`): a sequential toucher then takes half the exits. Say so
    // in the emulation: `… and 0x… ahead …`.
    // The nested page tables changed: flush the guest's TLB at VMRUN (a cached "not mapped"
    // is not kept, but a clean slate is the rule whenever the tables change).
    domain.vmcb.control.tlb_control = 1;
    let pages = domain.memory.populated_pages.get();
    domain.emulated(format!(
        "mapped guest-physical {page:#x} to host frame {frame:#x} ({pages} pages now)"
    ));
    Next::Resume
}
