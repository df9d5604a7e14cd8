//! VMMCALL (exit code 0x81): the hypercall.
//!
//! The ABI (numbers, registers, errors, the trap table and the bounce frame) is in
//! `traplab_abi::hypercall`. Arguments are untrusted: a pointer is translated through the
//! guest's page tables and must land in the guest's memory, or the guest gets EFAULT and
//! nothing else happens.

use super::{Exit, undecodable};
use crate::decision::{Decision, Delivery, DomainEnd, Effect, Returning};
use crate::domain::Guest;
use crate::domain::interrupts::VirtualTimer;
use crate::{decide, deliver};
use alloc::format;
use alloc::vec;
use alloc::vec::Vec;
use traplab_abi::event::{Action, EventType, ReturnPath, delivery_name};
use traplab_abi::hypercall::{self, IretFrame, TRAP_TABLE_MAX, TrapInfo, error};
use traplab_abi::svm::Event;
use traplab_abi::x86::RFlags;

pub fn handle(exit: &Exit, guest: &Guest) -> Decision {
    let Some(length) = exit.instruction_length(guest) else {
        return undecodable();
    };
    let next = guest.vcpu.rip_after(length);
    let number = guest.gpr(0);
    let (first, second) = (guest.gpr(7), guest.gpr(6));

    match number {
        hypercall::CONSOLE_WRITE => {
            let decision = decide!(
                Action::Emulate,
                "hypercall console_write({first:#x}, {second}): the hypervisor writes the guest's buffer to its console"
            );
            match console_write(guest, first, second) {
                Ok(bytes) => {
                    let written = bytes.len() as i64;
                    finish(decision.with(Effect::Console(bytes)), next, number, written)
                }
                Err(code) => finish(decision, next, number, code),
            }
        }
        hypercall::EXIT => {
            let status = first as i32;
            decide!(
                Action::Emulate,
                "hypercall exit({status}): the domain asks to end"
            )
            .describe(format!("exit({status})"))
            .ending(DomainEnd::Exited {
                status,
                reason: "exit hypercall".into(),
            })
        }
        hypercall::SET_TRAP_TABLE => {
            let decision = decide!(
                Action::Emulate,
                "hypercall set_trap_table({first:#x}): from now on the hypervisor delivers the listed exceptions itself (bounce)"
            );
            match trap_table(guest, first) {
                Ok(entries) => finish(decision.with(Effect::TrapTable(entries)), next, number, 0),
                Err(code) => finish(decision, next, number, code),
            }
        }
        hypercall::IRET => {
            let decision = decide!(
                Action::Emulate,
                "hypercall iret: the guest's bounced handler returns; the hypervisor restores the frame at RSP"
            );
            iret(guest, decision, next)
        }
        hypercall::RAISE_EVENT => raise_event(guest, next, first, second),
        hypercall::PIN_PAGE_TABLE => {
            let decision = decide!(
                Action::Emulate,
                "hypercall pin_page_table({first:#x}): from now on the hypervisor checks every write to these page tables"
            );
            match guest.tables_under(first) {
                Ok(tables) => {
                    let new = tables
                        .iter()
                        .filter(|(table, _)| !guest.pv.pinned_tables.contains_key(table))
                        .count() as i64;
                    finish(
                        decision.with(Effect::PinPageTables(tables)),
                        next,
                        number,
                        new,
                    )
                }
                Err(_) => finish(decision, next, number, error::EINVAL),
            }
        }
        hypercall::SET_TIMER => {
            let decision = match second {
                0 => decide!(
                    Action::Emulate,
                    "hypercall set_timer({first:#x}, 0): the guest stops its timer"
                ),
                _ => decide!(
                    Action::Emulate,
                    "hypercall set_timer({first:#x}, {second} µs): the hypervisor will interrupt the guest periodically"
                ),
            };
            set_timer(exit, guest, decision, next, first, second)
        }
        hypercall::SET_PV_MODE => {
            let decision = decide!(
                Action::Emulate,
                "hypercall set_pv_mode({first}): the hypervisor will emulate the privileged instructions this kernel runs at CPL 3"
            );
            match first {
                0 | 1 => {
                    // The kernel's virtual interrupt flag starts as its RFLAGS.IF is now.
                    let interrupts = RFlags::from_bits_truncate(guest.vcpu.vmcb.save.rflags)
                        .contains(RFlags::INTERRUPT_FLAG);
                    let decision = decision
                        .with(Effect::PvMode(first == 1))
                        .with(Effect::VirtualInterruptFlag(interrupts));
                    finish(decision, next, number, 0)
                }
                _ => finish(decision, next, number, error::EINVAL),
            }
        }
        // EXERCISE hypercall.1: add `domain_id` (number 8): it returns the caller's domain
        // number (`guest.id`). Decide with Action::Emulate and a reason, like the others.
        _ => {
            let decision = decide!(
                Action::Emulate,
                "hypercall number {number} does not exist: the guest gets ENOSYS"
            );
            finish(decision, next, number, error::ENOSYS)
        }
    }
}

/// The hypercall returns: RAX = result, RIP past the VMMCALL, and the `emulate` event says
/// what it returned.
fn finish(mut decision: Decision, next: u64, number: u64, result: i64) -> Decision {
    let outcome = match error::name(result) {
        Some(name) => format!("returned {result} ({name})"),
        None => format!("returned {result}"),
    };
    let call = hypercall::name(number).unwrap_or("unknown hypercall");
    let what = match decision.what.take() {
        Some(before) => format!("{before}; {call} {outcome}"),
        None => format!("{call} {outcome}"),
    };
    decision
        .with(Effect::Gpr(0, result as u64))
        .with(Effect::Rip(next))
        .describe(what)
}

/// The bytes of `console_write(buffer, length)`.
fn console_write(guest: &Guest, buffer: u64, length: u64) -> Result<Vec<u8>, i64> {
    if length > hypercall::CONSOLE_WRITE_MAX {
        return Err(error::EINVAL);
    }
    let mut bytes = vec![0u8; length as usize];
    guest
        .read_virtual(buffer, &mut bytes)
        .map_err(|_| error::EFAULT)?;
    Ok(bytes)
}

/// Check the vector and the period, then arm (or stop) the timer: the hypervisor's own
/// timer must run for it to notice the deadlines (`domain/interrupts.rs`).
fn set_timer(
    exit: &Exit,
    guest: &Guest,
    decision: Decision,
    next: u64,
    vector: u64,
    period_us: u64,
) -> Decision {
    // Vectors 0–31 are the CPU's exceptions: an interrupt there would look like a fault.
    let Ok(vector @ 32..=255) = u8::try_from(vector) else {
        return finish(decision, next, hypercall::SET_TIMER, error::EINVAL);
    };
    if period_us == 0 {
        return finish(
            decision.with(Effect::Timer(None)),
            next,
            hypercall::SET_TIMER,
            0,
        );
    }
    if !(hypercall::TIMER_PERIOD_MIN_US..=hypercall::TIMER_PERIOD_MAX_US).contains(&period_us) {
        return finish(decision, next, hypercall::SET_TIMER, error::EINVAL);
    }
    let period_tsc = ((guest.machine.tsc_hz() as u128 * period_us as u128) / 1_000_000) as u64;
    let timer = VirtualTimer {
        vector,
        period_tsc,
        due_tsc: exit.tsc + period_tsc,
    };
    let hz = guest.machine.timer_hz();
    let decision = decision
        .with(Effect::Timer(Some(timer)))
        .with(Effect::StartHostTimer)
        .describe(format!(
            "timer armed: interrupt {vector:#x} every {period_us} µs, noticed at the hypervisor's {hz} Hz ticks"
        ));
    finish(decision, next, hypercall::SET_TIMER, 0)
}

/// Read the table (entries of 16 bytes up to one whose handler is 0). A table pointer of 0
/// clears it: every exception is reflected again.
fn trap_table(guest: &Guest, table: u64) -> Result<Vec<TrapInfo>, i64> {
    let mut entries = Vec::new();
    if table == 0 {
        return Ok(entries);
    }
    loop {
        let mut bytes = [0u8; 16];
        let address = table.wrapping_add(16 * entries.len() as u64);
        guest
            .read_virtual(address, &mut bytes)
            .map_err(|_| error::EFAULT)?;
        let entry = TrapInfo::from_bytes(bytes);
        if entry.handler == 0 {
            return Ok(entries);
        }
        if entries.len() == TRAP_TABLE_MAX {
            return Err(error::EINVAL);
        }
        entries.push(entry);
    }
}

/// The iret hypercall: restore RAX, RIP, RFLAGS and RSP from the frame at RSP.
fn iret(guest: &Guest, decision: Decision, next: u64) -> Decision {
    let save = &guest.vcpu.vmcb.save;
    let mut bytes = [0u8; 48];
    if guest.read_virtual(save.rsp, &mut bytes).is_err() {
        return finish(decision, next, hypercall::IRET, error::EFAULT);
    }
    let word = |index: usize| {
        let mut word = [0u8; 8];
        word.copy_from_slice(&bytes[index * 8..index * 8 + 8]);
        u64::from_le_bytes(word)
    };
    let frame = IretFrame {
        rax: word(0),
        rip: word(1),
        cs: word(2),
        rflags: word(3),
        rsp: word(4),
        ss: word(5),
    };
    // No privilege change through iret: CS and SS must be what they are now.
    if frame.cs != save.cs.selector as u64 || frame.ss != save.ss.selector as u64 {
        return finish(decision, next, hypercall::IRET, error::EINVAL);
    }
    // The guest may restore the status flags, TF, IF, DF, AC and ID; IOPL, NT, VM and the
    // virtual-interrupt flags stay as the hypervisor has them (as IRET at CPL > 0 would).
    let guest_flags = RFlags::CARRY_FLAG
        | RFlags::PARITY_FLAG
        | RFlags::AUXILIARY_CARRY_FLAG
        | RFlags::ZERO_FLAG
        | RFlags::SIGN_FLAG
        | RFlags::TRAP_FLAG
        | RFlags::INTERRUPT_FLAG
        | RFlags::DIRECTION_FLAG
        | RFlags::OVERFLOW_FLAG
        | RFlags::ALIGNMENT_CHECK
        | RFlags::ID;
    let rflags = (save.rflags & !guest_flags.bits()) | (frame.rflags & guest_flags.bits()) | 0x2;
    let returning = guest.vcpu.in_flight.last().copied();
    decision
        .with(Effect::Gpr(0, frame.rax))
        .with(Effect::Gpr(4, frame.rsp))
        .with(Effect::Rflags(rflags))
        .with(Effect::Rip(frame.rip))
        .with(Effect::PopInFlight)
        .describe("iret: the bounced handler's frame restored")
        .returning(Returning {
            via: ReturnPath::Hypercall,
            event: returning.map(|event| (event.vector, event.kind)),
            rip: frame.rip,
            cs: frame.cs as u16,
            rflags,
            rsp: frame.rsp,
        })
}

/// raise_event(vector, error_code): the hypercall completes (RAX = 0, RIP past it), then the
/// event arrives, as if raised right after the VMMCALL.
fn raise_event(guest: &Guest, next: u64, vector: u64, error_code: u64) -> Decision {
    let Ok(vector) = u8::try_from(vector) else {
        let decision = decide!(
            Action::Emulate,
            "hypercall raise_event({vector}): not a vector, EINVAL"
        );
        return finish(decision, next, hypercall::RAISE_EVENT, error::EINVAL);
    };
    if vector >= 32 {
        let decision = decide!(
            Action::Emulate,
            "hypercall raise_event({vector}): only exceptions and NMI can be raised, EINVAL"
        );
        return finish(decision, next, hypercall::RAISE_EVENT, error::EINVAL);
    }
    // EXERCISE alignment-check.1: a CPU raises #AC only at CPL 3, with CR0.AM and RFLAGS.AC
    // set: refuse raise_event(#AC) otherwise, with EINVAL (and a decision that says why).
    // EXERCISE simd-exception.1: with CR4.OSXMMEXCPT clear, a CPU raises #UD instead of #XM
    // for an unmasked SIMD error: deliver that for raise_event(#XM).
    // EXERCISE machine-check.1: with CR4.MCE clear, a CPU does not deliver #MC: it shuts
    // down. Kill the domain for raise_event(#MC) then, as `exception.rs` does for a triple fault.
    let returned = [Effect::Gpr(0, 0), Effect::Rip(next)];
    if vector == 2 {
        return decide!(
            Action::Emulate,
            "hypercall raise_event(NMI): the hypervisor sends the guest a non-maskable interrupt (EVENTINJ type NMI)"
        )
        .with_all(returned)
        .deliver(Delivery::Inject {
            event: Event {
                vector: 2,
                kind: EventType::Nmi,
                error_code: None,
            },
            handler: guest.idt_handler(2),
            synthetic: true,
        });
    }
    let name = delivery_name(vector, EventType::Exception);
    deliver!(
        guest,
        after returned,
        vector,
        error_code as u32,
        true,
        "hypercall raise_event({name}): the guest asks for an exception QEMU's TCG cannot raise natively, and gets it as hardware would deliver it"
    )
}
