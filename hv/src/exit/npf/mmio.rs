//! An access to the lab device's MMIO window: emulate it.
//!
//! The access did not happen: the CPU exited before it. So the hypervisor decodes the
//! instruction (its width, its direction, its register or immediate), performs the
//! device's side of it (`device/lab_device.rs`), puts a read's value in the destination
//! register, and moves RIP past the instruction — all that a device emulator in QEMU or
//! Xen's ioreq server does for an MMIO exit.

use super::super::{DomainEnd, Next, undecodable};
use crate::decide;
use crate::device::lab_device;
use crate::domain::Domain;
use crate::emulate::{self, Access};
use alloc::format;
use traplab_abi::event::Action;

pub fn handle(domain: &mut Domain, gpa: u64) -> Next {
    let Some(instruction) = domain.decode() else {
        return undecodable(domain);
    };
    let access =
        emulate::memory_access(domain, &instruction).filter(|_| emulate::plain(&instruction));
    let Some(access) = access else {
        decide!(
            domain,
            Action::Kill,
            "an access to the MMIO device at {gpa:#x} by an instruction the hypervisor does not emulate (only MOV and MOVZX)"
        );
        return Next::End(DomainEnd::Killed {
            reason: format!("unemulated MMIO instruction at {:#x}", domain.vmcb.save.rip),
        });
    };
    let offset = gpa - lab_device::BASE;
    let what = match access {
        Access::Read { width, .. } => {
            decide!(
                domain,
                Action::Emulate,
                "a {width}-byte read of guest-physical {gpa:#x}: the lab device's MMIO window, emulated by the hypervisor"
            );
            let (value, what) = domain.lab_device.read(offset, width);
            emulate::complete_read(domain, access, value);
            what
        }
        Access::Write { width, value } => {
            decide!(
                domain,
                Action::Emulate,
                "a {width}-byte write of {value:#x} to guest-physical {gpa:#x}: the lab device's MMIO window, emulated by the hypervisor"
            );
            let (what, console) = domain.lab_device.write(offset, width, value);
            if let Some(line) = console {
                domain.console_line(line);
            }
            what
        }
    };
    domain.skip_instruction(instruction.len() as u64);
    domain.emulated(format!("lab device: {what}"));
    Next::Resume
}
