//! VMEXIT_INVALID (exit code -1): VMRUN refused the guest state in the VMCB.
//!
//! The CPU checks the guest state at every VMRUN (AMD APM vol. 2, 15.5.1) and, when it is
//! illegal, exits at once without running the guest. The hypervisor built that state, so
//! this is its fault or the guest's doing: QEMU's TCG also exits this way when a guest
//! writes CR4 bits it considers reserved, where a real CPU raises #GP in the guest
//! (`quirks.rs` corrects that case). Anything else ends the domain, never the hypervisor.

use super::Exit;
use crate::decide;
use crate::decision::Decision;
use crate::domain::Guest;
use traplab_abi::event::Action;

pub fn handle(exit: &Exit, guest: &Guest) -> Decision {
    if let Some(decision) = crate::quirks::invalid_state(guest, &exit.instruction) {
        return decision;
    }
    decide!(
        Action::Kill,
        "VMRUN refused this domain's state (VMEXIT_INVALID): it cannot run, so it ends"
    )
    .killing("VMRUN refused the guest state (VMEXIT_INVALID)")
}
