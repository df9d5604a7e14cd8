//! RDTSC and RDTSCP (exit codes 0x6E, 0x87): read the time stamp counter for the guest.
//!
//! Every domain has its own TSC: the host's plus the VMCB's TSC_OFFSET, which the hypervisor
//! sets at creation so that the guest's clock starts near 0 (AMD APM vol. 2, 15.30.5). The
//! CPU applies the offset itself when RDTSC is not intercepted; intercepted, the hypervisor
//! does the same sum. RDTSCP also returns TSC_AUX in ECX (0 here).

use super::{Next, instruction_length, undecodable};
use crate::decide;
use crate::domain::Domain;
use alloc::format;
use traplab_abi::event::Action;
use traplab_abi::svm::exitcode;

pub fn handle(domain: &mut Domain) -> Next {
    let Some(length) = instruction_length(domain) else {
        return undecodable(domain);
    };
    let rdtscp = domain.vmcb.control.exitcode == exitcode::RDTSCP;
    let offset = domain.vmcb.control.tsc_offset;
    decide!(
        domain,
        Action::Emulate,
        "{}: the guest's clock is the host TSC plus its offset {:#x}",
        if rdtscp { "RDTSCP" } else { "RDTSC" },
        offset
    );
    let value = crate::time::rdtsc().wrapping_add(offset);
    domain.set_gpr(0, value & 0xffff_ffff);
    domain.set_gpr(2, value >> 32);
    if rdtscp {
        domain.set_gpr(1, 0);
    }
    domain.skip_instruction(length);
    domain.emulated(format!("TSC = {value:#x}"));
    Next::Resume
}
