//! INT n, INT3 and INTO (exit code 0x75 SWINT): deliver them as the CPU would.
//!
//! Under QEMU's TCG a guest's `int3` (and `into`) does not raise an intercepted #BP (#OF):
//! it exits as SWINT, like every INT n form (see ../shared/DESIGN.md). TCG reports no vector
//! in EXITINFO1 (real CPUs with decode assists do), so we decode the instruction. A software
//! interrupt pushes the address of the *next* instruction, so we move RIP past it. Then:
//! a domain with a trap-table entry for the vector gets it bounced (`delivery.rs`);
//! otherwise it is reflected as a software interrupt event (EVENTINJ type 4), which keeps
//! the gate's DPL check (AMD APM vol. 2, 15.20, 8.9.3).

use super::{Next, instruction_length, undecodable};
use crate::domain::Domain;
use crate::{decide, deliver};
use iced_x86::Mnemonic;
use traplab_abi::event::Action;
use traplab_abi::svm::{Event, EventType};

pub fn handle(domain: &mut Domain) -> Next {
    let Some(instruction) = domain.decode() else {
        return undecodable(domain);
    };
    let vector = match instruction.mnemonic() {
        Mnemonic::Int3 => 3,
        Mnemonic::Into => 4,
        Mnemonic::Int => instruction.immediate8(),
        _ => return undecodable(domain),
    };
    let Some(length) = instruction_length(domain) else {
        return undecodable(domain);
    };
    domain.software_interrupt_rip = Some(domain.vmcb.save.rip);
    domain.skip_instruction(length);
    if domain.trap_table_entry(vector).is_some() {
        return deliver!(
            domain,
            vector,
            0,
            false,
            "the guest's own software interrupt {vector:#x} (returning after the instruction)"
        );
    }
    // EXERCISE breakpoint.1: this describes `int 3` (cd 03) as INT3 (cc): tell the two forms
    // apart by the instruction, not by the vector.
    match vector {
        3 => decide!(
            domain,
            Action::Reflect,
            "INT3 (TCG exits on it as SWINT, not as a #BP intercept): reflect #BP into the guest's IDT, returning after the INT3"
        ),
        4 => decide!(
            domain,
            Action::Reflect,
            "INTO with OF set (TCG exits on it as SWINT): reflect #OF into the guest's IDT, returning after the INTO"
        ),
        _ => decide!(
            domain,
            Action::Reflect,
            "the guest's own software interrupt: reflect vector {vector:#x} into its IDT, returning after the instruction"
        ),
    }
    domain.inject(
        Event {
            vector,
            kind: EventType::Software,
            error_code: None,
        },
        false,
    );
    Next::Resume
}
