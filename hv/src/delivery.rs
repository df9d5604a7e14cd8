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
//! handled the way a CPU handles a missing IDT gate (#GP, then #DF, then shutdown), each
//! step said in the one decision.
//!
//! Handlers use the [`deliver!`](crate::deliver) macro: it records the decision with the
//! caller's source line. Everything here is worked out before anything changes: the
//! decision carries the whole bounce frame.

use crate::decision::{Bounce, Decision, Delivery, Effect};
use crate::domain::Guest;
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;
use traplab_abi::event::Action;
use traplab_abi::hypercall::TrapInfo;
use traplab_abi::svm::Event;
use traplab_abi::x86::{self, Combined, RFlags};

/// The System V red zone: 128 bytes below RSP that a function may use without moving RSP.
/// A bounce frame goes below it, as Linux puts signal frames.
const RED_ZONE: u64 = 128;

/// Deliver exception `vector` to the guest, reflected or bounced, after the effects `first`
/// (a RIP moved past the instruction, CR2 set). `why` says why the guest gets it; `at` is
/// the caller's source line.
pub fn exception(
    guest: &Guest,
    first: Vec<Effect>,
    vector: u8,
    error_code: u32,
    synthetic: bool,
    why: fmt::Arguments,
    at: &'static str,
) -> Decision {
    if guest.pv.trap_table.is_empty() {
        let how = reflect_how(guest, vector);
        return Decision::new(Action::Reflect, format!("{why}: {how}").into(), at)
            .with_all(first)
            .deliver(Delivery::Inject {
                event: Event::exception(vector, error_code),
                handler: guest.idt_handler(vector),
                synthetic,
            });
    }

    // Bounce: follow the trap table; a missing entry is a missing gate.
    let mut steps = format!("{why}: ");
    let (mut vector, mut error_code) = (vector, error_code);
    loop {
        let mnemonic = x86::exception(vector).mnemonic;
        if let Some(entry) = guest.trap_table_entry(vector) {
            steps.push_str(&format!(
                "the guest registered a {mnemonic} handler with set_trap_table: the hypervisor delivers it itself, to {:#x}",
                entry.handler
            ));
            return bounce(
                guest, first, vector, error_code, entry, synthetic, steps, at,
            );
        }
        let (next, next_code, name) = match x86::combine(Some(vector), 13) {
            Combined::Deliver(_) => (13, vector as u32 * 8 + 2, "#GP"),
            Combined::DoubleFault => (8, 0, "#DF"),
            Combined::TripleFault => {
                steps.push_str(&format!(
                    "no trap-table entry for {mnemonic} while delivering it: as a CPU in a triple fault, the domain ends"
                ));
                return Decision::new(Action::Kill, steps.into(), at)
                    .with_all(first)
                    .killing(format!("triple fault: no trap-table entry for {mnemonic}"));
            }
        };
        steps.push_str(&format!(
            "no trap-table entry for {mnemonic}: as a CPU that finds no IDT gate, the hypervisor raises {name} instead; "
        ));
        (vector, error_code) = (next, next_code);
    }
}

/// How a reflected exception will arrive: which IDT gate, which handler.
fn reflect_how(guest: &Guest, vector: u8) -> String {
    let mnemonic = x86::exception(vector).mnemonic;
    match guest.idt_handler(vector) {
        Some(handler) => format!(
            "reflect {mnemonic} into the guest's IDT, vector {vector}, handler {handler:#x}"
        ),
        None => format!(
            "reflect {mnemonic} into the guest's IDT, vector {vector}: it has no present gate there, so the CPU will fault delivering it"
        ),
    }
}

/// What [`exception`] would do with `vector` now, in words (gdb's `monitor decision`).
pub fn preview(guest: &Guest, vector: u8) -> String {
    if guest.pv.trap_table.is_empty() {
        return reflect_how(guest, vector);
    }
    let mnemonic = x86::exception(vector).mnemonic;
    match guest.trap_table_entry(vector) {
        Some(entry) => format!(
            "bounce {mnemonic} to the handler the guest registered with set_trap_table, {:#x}",
            entry.handler
        ),
        None => format!(
            "no trap-table entry for {mnemonic}: the hypervisor raises #GP instead, as a CPU that finds no IDT gate"
        ),
    }
}

/// The bounce: the frame the hardware would push, 128 bytes below the interrupted RSP, and
/// the handler's RFLAGS. A frame the guest's stack cannot take ends the domain, as in Xen.
#[allow(clippy::too_many_arguments)]
fn bounce(
    guest: &Guest,
    first: Vec<Effect>,
    vector: u8,
    error_code: u32,
    entry: TrapInfo,
    synthetic: bool,
    why: String,
    at: &'static str,
) -> Decision {
    let save = &guest.vcpu.vmcb.save;
    let interrupted_rsp = save.rsp;
    // What the CPU pushes for an exception in 64-bit mode, highest address first:
    // SS, RSP, RFLAGS, CS, RIP (the one after `first`), then the error code if the vector
    // has one. The frame lists them from the lowest address up.
    let has_error_code = x86::exception(vector).has_error_code;
    let mut words: Vec<u64> = Vec::with_capacity(6);
    if has_error_code {
        words.push(error_code as u64);
    }
    let rip = crate::decision::rip_after(&first, save.rip);
    words.extend([
        rip,
        save.cs.selector as u64,
        save.rflags,
        interrupted_rsp,
        save.ss.selector as u64,
    ]);
    let top = interrupted_rsp.wrapping_sub(RED_ZONE) & !15;
    let frame = top.wrapping_sub(8 * words.len() as u64);
    if let Err(error) = guest
        .memory
        .physical_pieces(guest.cr3(), frame, 8 * words.len())
    {
        return Decision::new(
            Action::Kill,
            format!(
                "the bounce frame at {frame:#x} cannot be written ({error:?}): the guest's stack is broken, so (as Xen) the domain ends"
            )
            .into(),
            at,
        )
        .with_all(first)
        .killing(format!("cannot write a bounce frame at {frame:#x}"));
    }
    // The handler runs with TF, NT and RF clear, and IF clear unless its entry keeps it.
    let mut flags = RFlags::from_bits_retain(save.rflags)
        - (RFlags::TRAP_FLAG | RFlags::NESTED_TASK | RFlags::RESUME_FLAG);
    if entry.flags & TrapInfo::INTERRUPTS_ON == 0 {
        flags -= RFlags::INTERRUPT_FLAG;
    }
    Decision::new(Action::Bounce, why.into(), at)
        .with_all(first)
        .deliver(Delivery::Bounce(Bounce {
            vector,
            error_code: has_error_code.then_some(error_code),
            handler: entry.handler,
            frame,
            words,
            rflags: flags.bits(),
            synthetic,
        }))
}

/// `deliver!(guest, vector, error_code, synthetic, "why {}", args)`: deliver an exception
/// (reflect or bounce, see [`exception`]) and record why, with this source line.
/// `deliver!(guest, after effects, vector, …)` first applies `effects` (an iterable of
/// [`Effect`]s).
#[macro_export]
macro_rules! deliver {
    ($guest:expr, after $first:expr, $vector:expr, $error_code:expr, $synthetic:expr, $($why:tt)+) => {
        $crate::delivery::exception(
            $guest,
            ::core::iter::IntoIterator::into_iter($first).collect(),
            $vector,
            $error_code,
            $synthetic,
            format_args!($($why)+),
            $crate::here!(),
        )
    };
    ($guest:expr, $vector:expr, $error_code:expr, $synthetic:expr, $($why:tt)+) => {
        $crate::delivery::exception(
            $guest,
            ::alloc::vec::Vec::new(),
            $vector,
            $error_code,
            $synthetic,
            format_args!($($why)+),
            $crate::here!(),
        )
    };
}
