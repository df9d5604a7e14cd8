//! Intercepted exceptions (exit codes 0x40–0x5F): hand them back to the guest.
//!
//! The hypervisor intercepts every vector (AMD APM vol. 2, 15.12): the CPU stops *before*
//! delivering the exception and exits with the vector in the exit code, the error code in
//! EXITINFO1 and, for #PF, the faulting address in EXITINFO2 (CR2 is not written). An HVM
//! guest owns its exceptions, so the hypervisor gives each one back — reflected through the
//! guest's IDT, or bounced to a handler it registered (`delivery.rs`).
//!
//! If the exception happened while the CPU was delivering another event (EXITINTINFO is
//! valid: say the guest's IDT has no gate for the first one), the hypervisor combines the
//! two the way the CPU would have: #DF, or shutdown for a fault during #DF (the double-fault
//! rule in `traplab_abi::x86::combine`). A bare machine hides this chain; the trace shows it.

use super::Exit;
use super::privileged::{self, PrivilegedOp};
use super::ptwr::{self, PageTableWrite};
use crate::decision::{Decision, Effect};
use crate::domain::Guest;
use crate::{decide, deliver};
use alloc::format;
use alloc::vec::Vec;
use traplab_abi::event::Action;
use traplab_abi::svm::EventType;
use traplab_abi::x86::{self, Combined};

pub fn handle(exit: &Exit, guest: &Guest, vector: u8, error_code: u32, address: u64) -> Decision {
    let exception = x86::exception(vector);
    let interrupted = exit.interrupted;
    // EXERCISE invalid-opcode.1: emulate a UD2 (`0f 0b`, in `exit.instruction`) here
    // instead of reflecting the #UD: decide Action::Emulate, skip its two bytes
    // (`Effect::Rip(guest.vcpu.rip_after(2))`), say what was emulated
    // (`.describe("UD2 …")`) and return that decision.
    let mut first = Vec::new();
    if let Some(event) = interrupted {
        // The interrupted event was not delivered: its handler never ran.
        if guest
            .vcpu
            .in_flight
            .last()
            .is_some_and(|top| top.vector == event.vector)
        {
            first.push(Effect::PopInFlight);
        }
        // We moved RIP past the INT n before injecting it (a software interrupt returns
        // after itself). Its delivery failed, so the fault belongs to the INT n itself:
        // put RIP back, as a CPU that delivered it natively would report (KVM does the same).
        if event.kind == EventType::Software
            && let Some(rip) = guest.vcpu.software_interrupt_rip
        {
            first.push(Effect::Rip(rip));
            first.push(Effect::SoftwareInterruptRip(None));
        }
    } else if let Some(decision) = crate::quirks::correct(guest, &exit.instruction, vector) {
        return decision;
    } else if vector == 13 {
        // A PV kernel's privileged instruction is the hypervisor's to emulate (privileged.rs).
        match privileged::handle(exit, guest, error_code) {
            PrivilegedOp::NotPv => {}
            PrivilegedOp::Done(decision) => return decision,
            PrivilegedOp::GuestsFault(why) => {
                return deliver!(guest, 13, error_code, false, "{why}");
            }
        }
    } else if vector == 14 {
        // A store to a pinned page table is the hypervisor's to check (ptwr.rs).
        match ptwr::handle(exit, guest, error_code, address) {
            PageTableWrite::NotPinned => {}
            PageTableWrite::Done(decision) => return decision,
            PageTableWrite::Refused(why) => {
                return deliver!(
                    guest,
                    after[Effect::ControlRegister(2, address)],
                    14,
                    error_code,
                    false,
                    "{why}: refused, so the guest gets the #PF its store raised"
                );
            }
        }
    }

    match x86::combine(interrupted.map(|event| event.vector), vector) {
        Combined::TripleFault => decide!(
            Action::Kill,
            "{} while the CPU delivered #DF: a real CPU shuts down (triple fault), so the domain ends",
            exception.mnemonic
        )
        .with_all(first)
        .killing(format!(
            "triple fault: {} while delivering #DF",
            exception.mnemonic
        )),
        Combined::DoubleFault => {
            // EXERCISE double-fault.1: a real CPU writes CR2 when it detects a page fault,
            // even one it then turns into #DF (Linux's #DF handler reads CR2 to recognise a
            // stack overflow). Do the same before delivering the #DF.
            let interrupted = interrupted.map_or("?", |event| x86::exception(event.vector).mnemonic);
            deliver!(
                guest,
                after first,
                8,
                0,
                false,
                "{} while the CPU delivered {}: the double-fault rule makes it #DF",
                exception.mnemonic,
                interrupted
            )
        }
        Combined::Deliver(_) => {
            if vector == 14 {
                // The intercepted #PF left CR2 alone; the guest's handler reads it there.
                first.push(Effect::ControlRegister(2, address));
            }
            if let Some(corrected) = crate::quirks::error_code(guest, interrupted, error_code) {
                return deliver!(
                    guest,
                    after first,
                    vector,
                    corrected,
                    false,
                    "the guest owns its exceptions ({} {}; QEMU's TCG reported error code {error_code:#x}, a real CPU reports {corrected:#x}, the IDT index of the gate)",
                    exception.mnemonic,
                    exception.name
                );
            }
            deliver!(
                guest,
                after first,
                vector,
                error_code,
                false,
                "the guest owns its exceptions ({} {})",
                exception.mnemonic,
                exception.name
            )
        }
    }
}
