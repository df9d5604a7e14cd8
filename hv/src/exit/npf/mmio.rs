//! An access to the lab device's MMIO window: emulate it.
//!
//! The access did not happen: the CPU exited before it. So the hypervisor decodes the
//! instruction (its width, its direction, its register or immediate), performs the
//! device's side of it (`device/lab_device.rs`), puts a read's value in the destination
//! register, and moves RIP past the instruction — all that a device emulator in QEMU or
//! Xen's ioreq server does for an MMIO exit.

use super::super::{Exit, undecodable};
use crate::decide;
use crate::decision::{Decision, Effect, MmioAccess};
use crate::domain::Guest;
use crate::emulate::{self, Access};
use alloc::format;
use traplab_abi::event::Action;

pub fn handle(exit: &Exit, guest: &Guest, gpa: u64) -> Decision {
    let Some(instruction) = exit.decode_instruction(guest) else {
        return undecodable();
    };
    let access =
        emulate::memory_access(guest, &instruction).filter(|_| emulate::plain(&instruction));
    let Some(access) = access else {
        return decide!(
            Action::Kill,
            "an access to the MMIO device at {gpa:#x} by an instruction the hypervisor does not emulate (only MOV and MOVZX)"
        )
        .killing(format!(
            "unemulated MMIO instruction at {:#x}",
            guest.vcpu.vmcb.save.rip
        ));
    };
    let next = guest.vcpu.rip_after(instruction.len() as u64);
    // The device says what it did when the access is applied (`device/mod.rs`).
    let decision = match access {
        Access::Read { width, into } => decide!(
            Action::Emulate,
            "a {width}-byte read of guest-physical {gpa:#x}: the lab device's MMIO window, emulated by the hypervisor"
        )
        .with(Effect::Mmio(MmioAccess::Read { gpa, width, into })),
        Access::Write { width, value } => decide!(
            Action::Emulate,
            "a {width}-byte write of {value:#x} to guest-physical {gpa:#x}: the lab device's MMIO window, emulated by the hypervisor"
        )
        .with(Effect::Mmio(MmioAccess::Write { gpa, width, value })),
    };
    decision.with(Effect::Rip(next))
}
