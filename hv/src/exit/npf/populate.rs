//! The first touch of RAM the domain has not used yet (setting `lazy-memory`): map a frame.
//!
//! With lazy memory the nested page tables start empty: each page of guest RAM gets a host
//! frame only when the guest first touches it, as a hypervisor that overcommits memory (or
//! a balloon driver's host) does. The faulting instruction then runs again and works.
//! (The hypervisor's own accesses to guest memory — loading the image, reading a hypercall's
//! buffer — populate pages silently.)

use super::super::Exit;
use crate::decide;
use crate::decision::{Decision, Effect};
use crate::domain::Guest;
use traplab_abi::event::Action;

pub fn handle(_exit: &Exit, _guest: &Guest, gpa: u64) -> Decision {
    let page = gpa & !0xfff;
    // EXERCISE lazy-memory.1: map the next page too, if it is RAM that is not mapped yet
    // (`guest.memory.is_mapped`, with the parameter renamed `guest`): a sequential toucher
    // then takes half the exits. Say so in the emulation (`.describe(…)`, which the
    // machine's report of the frames follows): `… and 0x… ahead …`.
    // The nested page tables change: flush the guest's TLB at VMRUN (a cached "not mapped"
    // is not kept, but a clean slate is the rule whenever the tables change).
    decide!(
        Action::Emulate,
        "guest-physical {page:#x} is this domain's RAM, not touched before: the hypervisor gives it a frame now, and the access runs again"
    )
    .with(Effect::Populate(page))
    .with(Effect::FlushTlb)
}
