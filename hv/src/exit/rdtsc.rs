//! RDTSC and RDTSCP (exit codes 0x6E, 0x87): read the time stamp counter for the guest.
//!
//! Every domain has its own TSC: the host's plus the VMCB's TSC_OFFSET, which the hypervisor
//! sets at creation so that the guest's clock starts near 0 (AMD APM vol. 2, 15.30.5). The
//! CPU applies the offset itself when RDTSC is not intercepted; intercepted, the hypervisor
//! does the same sum. RDTSCP also returns TSC_AUX in ECX (0 here).

use super::{Exit, undecodable};
use crate::decide;
use crate::decision::{Decision, Effect};
use crate::domain::Guest;
use alloc::format;
use traplab_abi::event::Action;

pub fn handle(exit: &Exit, guest: &Guest, rdtscp: bool) -> Decision {
    let Some(length) = exit.instruction_length(guest) else {
        return undecodable();
    };
    let offset = guest.vcpu.vmcb.control.tsc_offset;
    let value = exit.tsc.wrapping_add(offset);
    decide!(
        Action::Emulate,
        "{}: the guest's clock is the host TSC plus its offset {:#x}",
        if rdtscp { "RDTSCP" } else { "RDTSC" },
        offset
    )
    .with(Effect::Gpr(0, value & 0xffff_ffff))
    .with(Effect::Gpr(2, value >> 32))
    .with_all(rdtscp.then_some(Effect::Gpr(1, 0)))
    .with(Effect::Rip(guest.vcpu.rip_after(length)))
    .describe(format!("TSC = {value:#x}"))
}
