//! IRET (exit code 0x74): a guest handler returns. The end of every flow.
//!
//! The hypervisor intercepts IRET only to *see* the return (AMD APM vol. 2, 15.9: the
//! intercept is taken before the instruction executes). It reads the frame the IRET will
//! pop, records where the guest goes back to, and lets the CPU execute the IRET itself:
//! emulating it (privilege checks, segment loads, NMI unblocking) would teach less and risk
//! more. Resuming at the IRET with the intercept on would exit again at once, so the
//! intercept is off for this one IRET and back on at the next exit (`run.rs`): every handler
//! is entered through an exit, so no return is missed.

use super::Next;
use crate::decide;
use crate::domain::{Domain, event_name};
use crate::svm::vmcb::misc1;
use crate::trace;
use traplab_abi::event::{Action, Body, Return, ReturnPath};

pub fn handle(domain: &mut Domain) -> Next {
    let returning = domain.in_flight.pop();
    let name = returning.map(|event| event_name(event.vector, event.kind));
    // IRETQ (REX.W) pops 8-byte RIP, CS, RFLAGS, RSP, SS; IRETD pops 4-byte EIP, CS, EFLAGS
    // (and ESP, SS when it returns to an outer privilege level).
    let wide = domain
        .exit
        .instruction
        .as_slice()
        .iter()
        .take_while(|&&byte| byte != 0xcf)
        .any(|&byte| byte & 0xf8 == 0x48);
    let size = if wide { 8 } else { 4 };
    let mut frame = [0u8; 40];
    let readable = domain
        .read_virtual(domain.vmcb.save.rsp, &mut frame[..5 * size])
        .is_ok();
    let word = |index: usize| {
        let mut bytes = [0u8; 8];
        bytes[..size].copy_from_slice(&frame[index * size..(index + 1) * size]);
        u64::from_le_bytes(bytes)
    };
    let (rip, cs, rflags) = (word(0), word(1) as u16, word(2));
    let rsp = if wide || cs & 3 != domain.vmcb.save.cpl as u16 {
        word(3)
    } else {
        domain.vmcb.save.rsp + 3 * size as u64
    };
    match (&name, readable) {
        (Some(name), true) => decide!(
            domain,
            Action::Emulate,
            "the guest's {name} handler returns with IRET to {rip:#x}: the hypervisor notes it and lets the CPU execute the IRET"
        ),
        (None, true) => decide!(
            domain,
            Action::Emulate,
            "an IRET to {rip:#x} that ends no event the hypervisor delivered: the hypervisor lets the CPU execute it"
        ),
        (_, false) => decide!(
            domain,
            Action::Emulate,
            "an IRET whose frame the hypervisor cannot read: the CPU will execute it (and fault if it cannot either)"
        ),
    }
    if readable && trace::enabled() {
        trace::emit(
            Some(domain.id),
            Body::Return(Return {
                via: ReturnPath::Iret,
                vector: returning.map(|event| event.vector),
                name,
                rip,
                cs,
                rflags,
                rsp,
            }),
        );
    }
    domain.vmcb.control.intercept_misc1 &= !misc1::IRET;
    domain.iret_intercept_suspended = true;
    if readable {
        domain.exit.resume_at = Some(rip);
    }
    Next::Resume
}
