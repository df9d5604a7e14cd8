//! ICEBP (`int1`, opcode 0xF1; exit code 0x88): deliver #DB after the instruction.
//!
//! ICEBP raises #DB as a trap (AMD APM vol. 3, INT1). We intercept it because QEMU's TCG
//! delivers it without passing the #DB exception intercept, so it would be invisible; the
//! hypervisor skips the one-byte instruction and gives the guest its #DB.

use super::{Next, instruction_length, undecodable};
use crate::deliver;
use crate::domain::Domain;

pub fn handle(domain: &mut Domain) -> Next {
    let Some(length) = instruction_length(domain) else {
        return undecodable(domain);
    };
    domain.skip_instruction(length);
    deliver!(
        domain,
        1,
        0,
        false,
        "ICEBP (INT1) raises #DB as a trap, after the instruction"
    )
}
