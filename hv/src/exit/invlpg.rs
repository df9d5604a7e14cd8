//! INVLPG (exit code 0x79): the guest drops one page's translation from its TLB.
//!
//! Without decode assists EXITINFO1 does not hold the address, so we decode the operand.
//! The hypervisor does the flush with INVLPGA, which invalidates a page in a chosen address
//! space: the guest's ASID (AMD APM vol. 2, 15.16.3).

use super::{Exit, undecodable};
use crate::decide;
use crate::decision::{Decision, Effect};
use crate::domain::Guest;
use alloc::format;
use traplab_abi::event::Action;

pub fn handle(exit: &Exit, guest: &Guest) -> Decision {
    let Some(instruction) = exit.decode_instruction(guest) else {
        return undecodable();
    };
    let next = guest.vcpu.rip_after(instruction.len() as u64);
    let save = &guest.vcpu.vmcb.save;
    let Some(address) = instruction.virtual_address(0, 0, |register, _, _| match register {
        iced_x86::Register::RIP => Some(next),
        // Segment bases: 0 in 64-bit mode, except FS and GS.
        iced_x86::Register::FS => Some(save.fs.base),
        iced_x86::Register::GS => Some(save.gs.base),
        register if register.is_segment_register() => Some(0),
        register => crate::instruction::gpr(register).map(|(number, _)| guest.gpr(number)),
    }) else {
        return undecodable();
    };
    let asid = guest.vcpu.vmcb.control.guest_asid;
    decide!(
        Action::Emulate,
        "INVLPG {address:#x}: the hypervisor flushes that page in the guest's address space (INVLPGA, ASID {asid})"
    )
    .with(Effect::InvalidatePage { address, asid })
    .with(Effect::Rip(next))
    .describe(format!("flushed the TLB entry of {address:#x}"))
}
