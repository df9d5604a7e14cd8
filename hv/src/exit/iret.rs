//! IRET (exit code 0x74): a guest handler returns. The end of every flow.
//!
//! The hypervisor intercepts IRET only to *see* the return (AMD APM vol. 2, 15.9: the
//! intercept is taken before the instruction executes). It reads the frame the IRET will
//! pop, records where the guest goes back to, and lets the CPU execute the IRET itself:
//! emulating it (privilege checks, segment loads, NMI unblocking) would teach less and risk
//! more. Resuming at the IRET with the intercept on would exit again at once, so the
//! intercept is off for this one IRET and back on at the next exit (`Vcpu::after_vmrun`): every handler
//! is entered through an exit, so no return is missed.

use super::Exit;
use crate::decide;
use crate::decision::{Decision, Effect, Returning};
use crate::domain::Guest;
use traplab_abi::event::{Action, ReturnPath, delivery_name};

pub fn handle(exit: &Exit, guest: &Guest) -> Decision {
    let returning = guest.vcpu.in_flight.last().copied();
    let name = returning.map(|event| delivery_name(event.vector, event.kind));
    // IRETQ (REX.W) pops 8-byte RIP, CS, RFLAGS, RSP, SS; IRETD pops 4-byte EIP, CS, EFLAGS
    // (and ESP, SS when it returns to an outer privilege level).
    let wide = exit
        .instruction
        .as_slice()
        .iter()
        .take_while(|&&byte| byte != 0xcf)
        .any(|&byte| byte & 0xf8 == 0x48);
    let size = if wide { 8 } else { 4 };
    let save = &guest.vcpu.vmcb.save;
    let mut frame = [0u8; 40];
    let readable = guest.read_virtual(save.rsp, &mut frame[..5 * size]).is_ok();
    let word = |index: usize| {
        let mut bytes = [0u8; 8];
        bytes[..size].copy_from_slice(&frame[index * size..(index + 1) * size]);
        u64::from_le_bytes(bytes)
    };
    let (rip, cs, rflags) = (word(0), word(1) as u16, word(2));
    let rsp = if wide || cs & 3 != save.cpl as u16 {
        word(3)
    } else {
        save.rsp + 3 * size as u64
    };
    let decision = match (&name, readable) {
        (Some(name), true) => decide!(
            Action::Emulate,
            "the guest's {name} handler returns with IRET to {rip:#x}: the hypervisor notes it and lets the CPU execute the IRET"
        ),
        (None, true) => decide!(
            Action::Emulate,
            "an IRET to {rip:#x} that ends no event the hypervisor delivered: the hypervisor lets the CPU execute it"
        ),
        (_, false) => decide!(
            Action::Emulate,
            "an IRET whose frame the hypervisor cannot read: the CPU will execute it (and fault if it cannot either)"
        ),
    };
    let decision = decision
        .with(Effect::PopInFlight)
        .with(Effect::SuspendIretIntercept);
    if !readable {
        return decision;
    }
    decision.returning(Returning {
        via: ReturnPath::Iret,
        event: returning.map(|event| (event.vector, event.kind)),
        rip,
        cs,
        rflags,
        rsp,
    })
}
