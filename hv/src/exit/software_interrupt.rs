//! INT n, INT3 and INTO (exit code 0x75 SWINT): deliver them as the CPU would.
//!
//! Under QEMU's TCG a guest's `int3` (and `into`) does not raise an intercepted #BP (#OF):
//! it exits as SWINT, like every INT n form (see ../shared/DESIGN.md). TCG reports no vector
//! in EXITINFO1 (real CPUs with decode assists do), so we decode the instruction. A software
//! interrupt pushes the address of the *next* instruction, so we move RIP past it. Then:
//! a domain with a trap-table entry for the vector gets it bounced (`delivery.rs`);
//! otherwise it is reflected as a software interrupt event (EVENTINJ type 4), which keeps
//! the gate's DPL check (AMD APM vol. 2, 15.20, 8.9.3).

use super::{Exit, undecodable};
use crate::decision::{Decision, Delivery, Effect};
use crate::domain::Guest;
use crate::{decide, deliver};
use iced_x86::Mnemonic;
use traplab_abi::event::Action;
use traplab_abi::svm::{Event, EventType};

pub fn handle(exit: &Exit, guest: &Guest) -> Decision {
    let Some(instruction) = exit.decode_instruction(guest) else {
        return undecodable();
    };
    let vector = match instruction.mnemonic() {
        Mnemonic::Int3 => 3,
        Mnemonic::Into => 4,
        Mnemonic::Int => instruction.immediate8(),
        _ => return undecodable(),
    };
    let rip = guest.vcpu.vmcb.save.rip;
    let first = [
        Effect::SoftwareInterruptRip(Some(rip)),
        Effect::Rip(guest.vcpu.rip_after(instruction.len() as u64)),
    ];
    if guest.trap_table_entry(vector).is_some() {
        return deliver!(
            guest,
            after first,
            vector,
            0,
            false,
            "the guest's own software interrupt {vector:#x} (returning after the instruction)"
        );
    }
    // EXERCISE breakpoint.1: this describes `int 3` (cd 03) as INT3 (cc): tell the two forms
    // apart by the instruction, not by the vector.
    let decision = match vector {
        3 => decide!(
            Action::Reflect,
            "INT3 (TCG exits on it as SWINT, not as a #BP intercept): reflect #BP into the guest's IDT, returning after the INT3"
        ),
        4 => decide!(
            Action::Reflect,
            "INTO with OF set (TCG exits on it as SWINT): reflect #OF into the guest's IDT, returning after the INTO"
        ),
        _ => decide!(
            Action::Reflect,
            "the guest's own software interrupt: reflect vector {vector:#x} into its IDT, returning after the instruction"
        ),
    };
    decision.with_all(first).deliver(Delivery::Inject {
        event: Event {
            vector,
            kind: EventType::Software,
            error_code: None,
        },
        handler: guest.idt_handler(vector),
        synthetic: false,
    })
}
