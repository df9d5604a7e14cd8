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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{self, Test};
    use traplab_abi::exit::ExitReason;
    use traplab_abi::svm::Event;

    #[test]
    fn vmexit_invalid_after_a_guest_s_mov_to_cr4_is_tcg_s_quirk_and_becomes_a_gp() {
        // TCG checks the guest's new CR4 against VMRUN's rules and exits with
        // VMEXIT_INVALID; a real CPU raises #GP(0) in the guest (`quirks.rs`).
        let mut test = Test::long_mode();
        test.code(&[0x0f, 0x22, 0xe0]); // mov cr4, rax
        let decision = test.decide(test.exit(ExitReason::Invalid));
        assert_eq!(decision.action, Action::Reflect);
        let (event, _, synthetic) = testing::injected(&decision);
        assert_eq!(event, Event::exception(13, 0));
        assert!(synthetic);
        assert!(decision.at.contains("src/quirks.rs:"), "{}", decision.at);
    }

    #[test]
    fn any_other_vmexit_invalid_kills_the_domain_not_the_hypervisor() {
        let mut test = Test::long_mode();
        test.code(&[0x90]); // nop
        let decision = test.decide(test.exit(ExitReason::Invalid));
        assert_eq!(decision.action, Action::Kill);
        assert_eq!(
            testing::killed(&decision),
            "VMRUN refused the guest state (VMEXIT_INVALID)"
        );
        assert!(decision.at.contains("src/exit/invalid.rs:"));
    }

    #[test]
    fn vmexit_invalid_with_no_instruction_bytes_kills_the_domain() {
        let test = Test::long_mode();
        let decision = test.decide(testing::exit(ExitReason::Invalid, &[]));
        assert_eq!(decision.action, Action::Kill);
    }
}
