//! How an exception reaches the guest: two models, side by side.
//!
//! - **Reflect** (HVM): put the event in EVENTINJ; at the next VMRUN the CPU delivers it
//!   through the guest's own IDT, exactly as if the guest had taken it without us
//!   (AMD APM vol. 2, 15.20 "Event Injection").
//! - **Bounce** (PV, as Xen's `do_guest_trap`): the guest registered handlers with the
//!   `set_trap_table` hypercall. The hypervisor delivers the exception *itself*: it writes an
//!   exception frame on the guest's stack and moves RIP to the handler. The CPU's IDT is not
//!   involved; the handler returns with the `iret` hypercall. The frame layout is documented
//!   in `traplab_abi::hypercall`.
//!
//! A domain with a trap table gets every exception bounced; a vector it has no entry for is
//! handled the way a CPU handles a missing IDT gate (#GP, then #DF, then shutdown).
//!
//! Use the [`deliver!`](crate::deliver) macro: it records the decision with the caller's
//! source line.

use crate::domain::{Domain, InFlight, event_name};
use crate::exit::{DomainEnd, Next};
use crate::trace;
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;
use traplab_abi::event::{Action, Body, Bounce, EventType};
use traplab_abi::hypercall::TrapInfo;
use traplab_abi::svm::Event;
use traplab_abi::x86::{self, Combined};

/// The System V red zone: 128 bytes below RSP that a function may use without moving RSP.
/// A bounce frame goes below it, as Linux puts signal frames.
const RED_ZONE: u64 = 128;
const RFLAGS_TF: u64 = 1 << 8;
const RFLAGS_IF: u64 = 1 << 9;
const RFLAGS_NT: u64 = 1 << 14;
const RFLAGS_RF: u64 = 1 << 16;

/// Deliver exception `vector` to the guest: reflect or bounce. `why` says why the guest gets
/// it; `at` is the caller's source line.
pub fn exception(
    domain: &mut Domain,
    vector: u8,
    error_code: u32,
    synthetic: bool,
    why: fmt::Arguments,
    at: &'static str,
) -> Next {
    if domain.trap_table.is_empty() {
        let how = reflect_how(domain, vector);
        trace::decide(domain.id, Action::Reflect, format_args!("{why}: {how}"), at);
        domain.inject(Event::exception(vector, error_code), synthetic);
        return Next::Resume;
    }

    // Bounce: follow the trap table; a missing entry is a missing gate.
    let (mut vector, mut error_code) = (vector, error_code);
    let mut first_why = Some(why);
    loop {
        let mnemonic = x86::exception(vector).mnemonic;
        let prefix = match first_why.take() {
            Some(why) => format!("{why}: "),
            None => String::new(),
        };
        if let Some(entry) = domain.trap_table_entry(vector) {
            trace::decide(
                domain.id,
                Action::Bounce,
                format_args!(
                    "{prefix}the guest registered a {mnemonic} handler with set_trap_table: the hypervisor delivers it itself, to {:#x}",
                    entry.handler
                ),
                at,
            );
            return bounce(domain, vector, error_code, entry, synthetic);
        }
        let next = match x86::combine(Some(vector), 13) {
            Combined::Deliver(_) => (13, vector as u32 * 8 + 2, "#GP"),
            Combined::DoubleFault => (8, 0, "#DF"),
            Combined::TripleFault => {
                trace::decide(
                    domain.id,
                    Action::Kill,
                    format_args!(
                        "{prefix}no trap-table entry for {mnemonic} while delivering it: as a CPU in a triple fault, the domain ends"
                    ),
                    at,
                );
                return Next::End(DomainEnd::Killed {
                    reason: format!("triple fault: no trap-table entry for {mnemonic}"),
                });
            }
        };
        trace::decide(
            domain.id,
            Action::Bounce,
            format_args!(
                "{prefix}no trap-table entry for {mnemonic}: as a CPU that finds no IDT gate, the hypervisor raises {} instead",
                next.2
            ),
            at,
        );
        (vector, error_code) = (next.0, next.1);
    }
}

/// How a reflected exception will arrive: which IDT gate, which handler.
fn reflect_how(domain: &Domain, vector: u8) -> String {
    let mnemonic = x86::exception(vector).mnemonic;
    match domain.idt_handler(vector) {
        Some(handler) => format!(
            "reflect {mnemonic} into the guest's IDT, vector {vector}, handler {handler:#x}"
        ),
        None => format!(
            "reflect {mnemonic} into the guest's IDT, vector {vector}: it has no present gate there, so the CPU will fault delivering it"
        ),
    }
}

/// What [`exception`] would do with `vector` now, without doing it (gdb's `monitor
/// decision`).
pub fn preview(domain: &Domain, vector: u8) -> String {
    if domain.trap_table.is_empty() {
        return reflect_how(domain, vector);
    }
    let mnemonic = x86::exception(vector).mnemonic;
    match domain.trap_table_entry(vector) {
        Some(entry) => format!(
            "bounce {mnemonic} to the handler the guest registered with set_trap_table, {:#x}",
            entry.handler
        ),
        None => format!(
            "no trap-table entry for {mnemonic}: the hypervisor raises #GP instead, as a CPU that finds no IDT gate"
        ),
    }
}

/// Write the bounce frame and move the guest to the handler.
fn bounce(
    domain: &mut Domain,
    vector: u8,
    error_code: u32,
    entry: TrapInfo,
    synthetic: bool,
) -> Next {
    let save = &domain.vmcb.save;
    let interrupted_rsp = save.rsp;
    // What the CPU pushes for an exception in 64-bit mode, highest address first:
    // SS, RSP, RFLAGS, CS, RIP, then the error code if the vector has one.
    let mut words: Vec<u64> = Vec::with_capacity(6);
    if x86::exception(vector).has_error_code {
        words.push(error_code as u64);
    }
    words.extend([
        save.rip,
        save.cs.selector as u64,
        save.rflags,
        interrupted_rsp,
        save.ss.selector as u64,
    ]);
    let top = interrupted_rsp.wrapping_sub(RED_ZONE) & !15;
    let frame = top - 8 * words.len() as u64;
    let bytes: Vec<u8> = words.iter().flat_map(|word| word.to_le_bytes()).collect();
    if let Err(error) = domain.write_virtual(frame, &bytes) {
        crate::decide!(
            domain,
            Action::Kill,
            "the bounce frame at {frame:#x} cannot be written ({error:?}): the guest's stack is broken, so (as Xen) the domain ends"
        );
        return Next::End(DomainEnd::Killed {
            reason: format!("cannot write a bounce frame at {frame:#x}"),
        });
    }
    domain.set_gpr(4, frame);
    domain.set_rip(entry.handler);
    let old_flags = domain.vmcb.save.rflags;
    let mut flags = old_flags & !(RFLAGS_TF | RFLAGS_NT | RFLAGS_RF);
    if entry.flags & TrapInfo::INTERRUPTS_ON == 0 {
        flags &= !RFLAGS_IF;
    }
    domain.record("rflags", old_flags, flags);
    domain.vmcb.save.rflags = flags;
    domain.in_flight.push(InFlight {
        vector,
        kind: EventType::Exception,
    });
    if trace::enabled() {
        let has_error_code = x86::exception(vector).has_error_code;
        trace::emit(
            Some(domain.id),
            Body::Bounce(Bounce {
                vector,
                name: event_name(vector, EventType::Exception),
                error_code: has_error_code.then_some(error_code),
                cr2: (vector == 14).then_some(domain.vmcb.save.cr2),
                handler: entry.handler,
                frame,
                interrupts: flags & RFLAGS_IF != 0,
                synthetic,
            }),
        );
    }
    Next::Resume
}

/// `deliver!(domain, vector, error_code, synthetic, "why {}", args)`: deliver an exception
/// (reflect or bounce, see [`exception`]) and record why, with this source line.
#[macro_export]
macro_rules! deliver {
    ($domain:expr, $vector:expr, $error_code:expr, $synthetic:expr, $($why:tt)+) => {
        $crate::delivery::exception(
            $domain,
            $vector,
            $error_code,
            $synthetic,
            format_args!($($why)+),
            concat!("hv/", file!(), ":", line!()),
        )
    };
}
