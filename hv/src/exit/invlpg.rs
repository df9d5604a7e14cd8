//! INVLPG (exit code 0x79): the guest drops one page's translation from its TLB.
//!
//! Without decode assists EXITINFO1 does not hold the address, so we decode the operand.
//! The hypervisor does the flush with INVLPGA, which invalidates a page in a chosen address
//! space: the guest's ASID (AMD APM vol. 2, 15.16.3).

use super::{Next, instruction_length, undecodable};
use crate::decide;
use crate::domain::Domain;
use alloc::format;
use traplab_abi::event::Action;

pub fn handle(domain: &mut Domain) -> Next {
    let Some(instruction) = domain.decode() else {
        return undecodable(domain);
    };
    let Some(length) = instruction_length(domain) else {
        return undecodable(domain);
    };
    let next_rip = domain.vmcb.save.rip + length;
    let Some(address) = instruction.virtual_address(0, 0, |register, _, _| match register {
        iced_x86::Register::RIP => Some(next_rip),
        // Segment bases: 0 in 64-bit mode, except FS and GS.
        iced_x86::Register::FS => Some(domain.vmcb.save.fs.base),
        iced_x86::Register::GS => Some(domain.vmcb.save.gs.base),
        register if register.is_segment_register() => Some(0),
        register => crate::decode::gpr(register).map(|(number, _)| domain.gpr(number)),
    }) else {
        return undecodable(domain);
    };
    let asid = domain.vmcb.control.guest_asid;
    decide!(
        domain,
        Action::Emulate,
        "INVLPG {address:#x}: the hypervisor flushes that page in the guest's address space (INVLPGA, ASID {asid})"
    );
    // SAFETY: INVLPGA only drops a TLB entry of the given address space.
    unsafe {
        core::arch::asm!("invlpga rax, ecx", in("rax") address, in("ecx") asid, options(nostack))
    };
    domain.skip_instruction(length);
    domain.emulated(format!("flushed the TLB entry of {address:#x}"));
    Next::Resume
}
