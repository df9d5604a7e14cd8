//! VMMCALL (exit code 0x81): the hypercall.
//!
//! The ABI (numbers, registers, errors, the trap table and the bounce frame) is in
//! `traplab_abi::hypercall`. Arguments are untrusted: a pointer is translated through the
//! guest's page tables and must land in the guest's memory, or the guest gets EFAULT and
//! nothing else happens.

use super::{DomainEnd, Next, instruction_length, undecodable};
use crate::domain::{Domain, event_name};
use crate::trace;
use crate::{decide, deliver};
use alloc::format;
use alloc::vec;
use alloc::vec::Vec;
use traplab_abi::event::{Action, Body, EventType, Return, ReturnPath};
use traplab_abi::hypercall::{self, IretFrame, TRAP_TABLE_MAX, TrapInfo, error};
use traplab_abi::svm::Event;

pub fn handle(domain: &mut Domain) -> Next {
    let Some(length) = instruction_length(domain) else {
        return undecodable(domain);
    };
    let number = domain.gpr(0);
    let (first, second) = (domain.gpr(7), domain.gpr(6));

    let result: i64 = match number {
        hypercall::CONSOLE_WRITE => {
            decide!(
                domain,
                Action::Emulate,
                "hypercall console_write({first:#x}, {second}): the hypervisor writes the guest's buffer to its console"
            );
            console_write(domain, first, second)
        }
        hypercall::EXIT => {
            let status = first as i32;
            decide!(
                domain,
                Action::Emulate,
                "hypercall exit({status}): the domain asks to end"
            );
            domain.emulated(format!("exit({status})"));
            return Next::End(DomainEnd::Exited {
                status,
                reason: "exit hypercall".into(),
            });
        }
        hypercall::SET_TRAP_TABLE => {
            decide!(
                domain,
                Action::Emulate,
                "hypercall set_trap_table({first:#x}): from now on the hypervisor delivers the listed exceptions itself (bounce)"
            );
            set_trap_table(domain, first)
        }
        hypercall::IRET => {
            decide!(
                domain,
                Action::Emulate,
                "hypercall iret: the guest's bounced handler returns; the hypervisor restores the frame at RSP"
            );
            match iret(domain) {
                Ok(()) => return Next::Resume,
                Err(code) => code,
            }
        }
        hypercall::RAISE_EVENT => return raise_event(domain, length, first, second),
        hypercall::PIN_PAGE_TABLE => {
            decide!(
                domain,
                Action::Emulate,
                "hypercall pin_page_table({first:#x}): from now on the hypervisor checks every write to these page tables"
            );
            match domain.pin_page_table(first) {
                Ok(pinned) => pinned as i64,
                Err(_) => error::EINVAL,
            }
        }
        hypercall::SET_TIMER => {
            match second {
                0 => decide!(
                    domain,
                    Action::Emulate,
                    "hypercall set_timer({first:#x}, 0): the guest stops its timer"
                ),
                _ => decide!(
                    domain,
                    Action::Emulate,
                    "hypercall set_timer({first:#x}, {second} µs): the hypervisor will interrupt the guest periodically"
                ),
            }
            set_timer(domain, first, second)
        }
        hypercall::SET_PV_MODE => {
            decide!(
                domain,
                Action::Emulate,
                "hypercall set_pv_mode({first}): the hypervisor will emulate the privileged instructions this kernel runs at CPL 3"
            );
            match first {
                0 | 1 => {
                    domain.pv_mode = first == 1;
                    // The kernel's virtual interrupt flag starts as its RFLAGS.IF is now.
                    domain.virtual_interrupt_flag = domain.vmcb.save.rflags & (1 << 9) != 0;
                    0
                }
                _ => error::EINVAL,
            }
        }
        // EXERCISE hypercall.1: add `domain_id` (number 8): it returns the caller's domain
        // number (`domain.id`). Decide with Action::Emulate and a reason, like the others.
        _ => {
            decide!(
                domain,
                Action::Emulate,
                "hypercall number {number} does not exist: the guest gets ENOSYS"
            );
            error::ENOSYS
        }
    };
    finish(domain, length, number, result);
    Next::Resume
}

/// RAX = result, RIP past the VMMCALL, and the `emulate` event.
fn finish(domain: &mut Domain, length: u64, number: u64, result: i64) {
    domain.set_gpr(0, result as u64);
    domain.skip_instruction(length);
    let outcome = match error::name(result) {
        Some(name) => format!("returned {result} ({name})"),
        None => format!("returned {result}"),
    };
    domain.emulated(format!(
        "{} {outcome}",
        hypercall::name(number).unwrap_or("unknown hypercall")
    ));
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

/// Check the vector and the period, then arm the timer (`domain/interrupts.rs`).
fn set_timer(domain: &mut Domain, vector: u64, period_us: u64) -> i64 {
    // Vectors 0–31 are the CPU's exceptions: an interrupt there would look like a fault.
    let Ok(vector @ 32..=255) = u8::try_from(vector) else {
        return error::EINVAL;
    };
    if period_us != 0
        && !(hypercall::TIMER_PERIOD_MIN_US..=hypercall::TIMER_PERIOD_MAX_US).contains(&period_us)
    {
        return error::EINVAL;
    }
    domain.set_timer(vector, period_us);
    0
}

/// Read the table (entries of 16 bytes up to one whose handler is 0) and replace ours.
/// A table pointer of 0 clears it: every exception is reflected again.
fn set_trap_table(domain: &mut Domain, table: u64) -> i64 {
    let mut entries = Vec::new();
    if table != 0 {
        loop {
            let mut bytes = [0u8; 16];
            let address = table.wrapping_add(16 * entries.len() as u64);
            if domain.read_virtual(address, &mut bytes).is_err() {
                return error::EFAULT;
            }
            let entry = TrapInfo::from_bytes(bytes);
            if entry.handler == 0 {
                break;
            }
            if entries.len() == TRAP_TABLE_MAX {
                return error::EINVAL;
            }
            entries.push(entry);
        }
    }
    domain.trap_table = entries;
    0
}

/// The iret hypercall: restore RAX, RIP, RFLAGS and RSP from the frame at RSP.
fn iret(domain: &mut Domain) -> Result<(), i64> {
    let mut bytes = [0u8; 48];
    domain
        .read_virtual(domain.vmcb.save.rsp, &mut bytes)
        .map_err(|_| error::EFAULT)?;
    let word = |index: usize| {
        u64::from_le_bytes(bytes[index * 8..index * 8 + 8].try_into().unwrap_or([0; 8]))
    };
    let frame = IretFrame {
        rax: word(0),
        rip: word(1),
        cs: word(2),
        rflags: word(3),
        rsp: word(4),
        ss: word(5),
    };
    let save = &domain.vmcb.save;
    // No privilege change through iret: CS and SS must be what they are now.
    if frame.cs != save.cs.selector as u64 || frame.ss != save.ss.selector as u64 {
        return Err(error::EINVAL);
    }
    // The guest may restore the status flags, TF, IF, DF, AC and ID; IOPL, NT, VM and the
    // virtual-interrupt flags stay as the hypervisor has them (as IRET at CPL > 0 would).
    const GUEST_FLAGS: u64 = 0b1
        | 0b100
        | 0b1_0000
        | 0b100_0000
        | 0b1000_0000
        | (1 << 8)
        | (1 << 9)
        | (1 << 10)
        | (1 << 11)
        | (1 << 18)
        | (1 << 21);
    let rflags = (save.rflags & !GUEST_FLAGS) | (frame.rflags & GUEST_FLAGS) | 0x2;
    let returning = domain.in_flight.pop();
    domain.set_gpr(0, frame.rax);
    domain.set_gpr(4, frame.rsp);
    domain.record("rflags", domain.vmcb.save.rflags, rflags);
    domain.vmcb.save.rflags = rflags;
    domain.set_rip(frame.rip);
    domain.emulated("iret: the bounced handler's frame restored");
    if trace::enabled() {
        trace::emit(
            Some(domain.id),
            Body::Return(Return {
                via: ReturnPath::Hypercall,
                vector: returning.map(|event| event.vector),
                name: returning.map(|event| event_name(event.vector, event.kind)),
                rip: frame.rip,
                cs: frame.cs as u16,
                rflags,
                rsp: frame.rsp,
            }),
        );
    }
    Ok(())
}

/// raise_event(vector, error_code): deliver the event when the hypercall returns.
fn raise_event(domain: &mut Domain, length: u64, vector: u64, error_code: u64) -> Next {
    let Ok(vector) = u8::try_from(vector) else {
        decide!(
            domain,
            Action::Emulate,
            "hypercall raise_event({vector}): not a vector, EINVAL"
        );
        finish(domain, length, hypercall::RAISE_EVENT, error::EINVAL);
        return Next::Resume;
    };
    if vector >= 32 {
        decide!(
            domain,
            Action::Emulate,
            "hypercall raise_event({vector}): only exceptions and NMI can be raised, EINVAL"
        );
        finish(domain, length, hypercall::RAISE_EVENT, error::EINVAL);
        return Next::Resume;
    }
    // EXERCISE alignment-check.1: a CPU raises #AC only at CPL 3, with CR0.AM and RFLAGS.AC
    // set: refuse raise_event(#AC) otherwise, with EINVAL (and a decision that says why).
    // EXERCISE simd-exception.1: with CR4.OSXMMEXCPT clear, a CPU raises #UD instead of #XM
    // for an unmasked SIMD error: deliver that for raise_event(#XM).
    // EXERCISE machine-check.1: with CR4.MCE clear, a CPU does not deliver #MC: it shuts
    // down. Kill the domain for raise_event(#MC) then, as `exception.rs` does for a triple fault.
    // The hypercall completes (RAX = 0, RIP past it), then the event arrives, as if raised
    // right after the VMMCALL.
    domain.set_gpr(0, 0);
    domain.skip_instruction(length);
    if vector == 2 {
        decide!(
            domain,
            Action::Emulate,
            "hypercall raise_event(NMI): the hypervisor sends the guest a non-maskable interrupt (EVENTINJ type NMI)"
        );
        domain.inject(
            Event {
                vector: 2,
                kind: EventType::Nmi,
                error_code: None,
            },
            true,
        );
        return Next::Resume;
    }
    let name = event_name(vector, EventType::Exception);
    deliver!(
        domain,
        vector,
        error_code as u32,
        true,
        "hypercall raise_event({name}): the guest asks for an exception QEMU's TCG cannot raise natively, and gets it as hardware would deliver it"
    )
}
