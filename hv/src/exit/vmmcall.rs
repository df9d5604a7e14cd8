//! VMMCALL (exit code 0x81): the hypercall.
//!
//! The ABI (numbers, registers, errors) is in `traplab_abi::hypercall`. Arguments are
//! untrusted: a pointer is translated through the guest's page tables and must land in
//! the guest's memory, or the guest gets EFAULT and nothing else happens.

use super::{DomainEnd, Next, instruction_length, undecodable};
use crate::decide;
use crate::domain::Domain;
use alloc::format;
use alloc::vec;
use traplab_abi::event::Action;
use traplab_abi::hypercall::{self, error};

pub fn handle(domain: &mut Domain) -> Next {
    let Some(length) = instruction_length(domain) else { return undecodable(domain) };
    let number = domain.gpr(0);
    let (first, second) = (domain.gpr(7), domain.gpr(6));

    let result: i64 = match number {
        hypercall::CONSOLE_WRITE => {
            decide!(domain, Action::Emulate, "hypercall console_write({first:#x}, {second}): the hypervisor writes the guest's buffer to its console");
            console_write(domain, first, second)
        }
        hypercall::EXIT => {
            let status = first as i32;
            decide!(domain, Action::Emulate, "hypercall exit({status}): the domain asks to end");
            domain.emulated(format!("exit({status})"));
            return Next::End(DomainEnd::Exited { status, reason: "exit hypercall".into() });
        }
        _ => {
            decide!(domain, Action::Emulate, "hypercall number {number} does not exist: the guest gets ENOSYS");
            error::ENOSYS
        }
    };
    domain.set_gpr(0, result as u64);
    domain.skip_instruction(length);
    let outcome = match error::name(result) {
        Some(name) => format!("returned {result} ({name})"),
        None => format!("returned {result}"),
    };
    domain.emulated(format!("{} {outcome}", hypercall::name(number).unwrap_or("unknown hypercall")));
    Next::Resume
}

fn console_write(domain: &mut Domain, buffer: u64, length: u64) -> i64 {
    if length > hypercall::CONSOLE_WRITE_MAX {
        return error::EINVAL;
    }
    let mut bytes = vec![0u8; length as usize];
    if domain.read_virtual(buffer, &mut bytes).is_err() {
        return error::EFAULT;
    }
    domain.console_write(&bytes);
    length as i64
}
