//! ICEBP (`int1`, opcode 0xF1; exit code 0x88): deliver #DB after the instruction.
//!
//! ICEBP raises #DB as a trap (AMD APM vol. 3, INT1). We intercept it because QEMU's TCG
//! delivers it without passing the #DB exception intercept, so it would be invisible; the
//! hypervisor skips the one-byte instruction and gives the guest its #DB.

use super::{Exit, undecodable};
use crate::decision::{Decision, Effect};
use crate::deliver;
use crate::domain::Guest;

pub fn handle(exit: &Exit, guest: &Guest) -> Decision {
    let Some(length) = exit.instruction_length(guest) else {
        return undecodable();
    };
    deliver!(
        guest,
        after[Effect::Rip(guest.vcpu.rip_after(length))],
        1,
        0,
        false,
        "ICEBP (INT1) raises #DB as a trap, after the instruction"
    )
}
