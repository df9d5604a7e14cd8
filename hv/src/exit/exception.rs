//! Intercepted exceptions (exit codes 0x40–0x5F): reflect them into the guest's own IDT.
//!
//! The hypervisor intercepts every vector (AMD APM vol. 2, 15.12): the CPU stops *before*
//! delivering the exception and exits with the vector in the exit code, the error code in
//! EXITINFO1 and, for #PF, the faulting address in EXITINFO2 (CR2 is not written, 15.12.15).
//! An HVM guest owns its exceptions, so the hypervisor hands each one back: it puts it in
//! EVENTINJ and the CPU delivers it through the guest's IDT at the next VMRUN.
//!
//! If the exception happened while the CPU was delivering another event (EXITINTINFO is
//! valid: say the guest's IDT has no gate for the first one), the hypervisor combines the
//! two the way the CPU would have: #DF, or shutdown for a fault during #DF (the double-fault
//! rule in `traplab_abi::x86::combine`). A bare machine hides this chain; the trace shows it.

use super::{DomainEnd, Next};
use crate::decide;
use crate::domain::Domain;
use alloc::format;
use traplab_abi::event::Action;
use traplab_abi::svm::Event;
use traplab_abi::x86::{self, Combined};

pub fn handle(domain: &mut Domain, vector: u8) -> Next {
    let exception = x86::exception(vector);
    let error_code = domain.vmcb.control.exitinfo1 as u32;
    let interrupted = Event::decode(domain.vmcb.control.exitintinfo);

    match x86::combine(interrupted.map(|event| event.vector), vector) {
        Combined::TripleFault => {
            decide!(
                domain,
                Action::Kill,
                "{} while the CPU delivered #DF: a real CPU shuts down (triple fault), so the domain ends",
                exception.mnemonic
            );
            Next::End(DomainEnd::Killed {
                reason: format!("triple fault: {} while delivering #DF", exception.mnemonic),
            })
        }
        Combined::DoubleFault => {
            let first = interrupted.map_or("?", |event| x86::exception(event.vector).mnemonic);
            decide!(
                domain,
                Action::Reflect,
                "{} while the CPU delivered {}: the double-fault rule turns it into #DF, which the guest gets",
                exception.mnemonic,
                first
            );
            domain.inject(Event::exception(8, 0), false);
            Next::Resume
        }
        Combined::Deliver(_) => {
            if vector == 14 {
                // The intercepted #PF left CR2 alone; the guest's handler reads it there.
                domain.set_cr2(domain.vmcb.control.exitinfo2);
            }
            match domain.idt_handler(vector) {
                Some(handler) => decide!(
                    domain,
                    Action::Reflect,
                    "the guest owns its exceptions: reflect {} ({}) into its IDT, vector {}, handler {:#x}",
                    exception.mnemonic,
                    exception.name,
                    vector,
                    handler
                ),
                None => decide!(
                    domain,
                    Action::Reflect,
                    "reflect {} into the guest's IDT, vector {}: it has no present gate there, so the CPU will fault delivering it",
                    exception.mnemonic,
                    vector
                ),
            }
            domain.inject(Event::exception(vector, error_code), false);
            Next::Resume
        }
    }
}
