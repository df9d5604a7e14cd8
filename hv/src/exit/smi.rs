//! A system-management interrupt (exit code 0x62 SMI): the machine's firmware's.
//!
//! An SMI asks the CPU to enter system-management mode, where the firmware handles the
//! machine (power, thermal events, emulated legacy devices). The hypervisor intercepts it
//! (`intercepts.rs`) so that it never lands in the middle of a guest: at the #VMEXIT the SMI
//! is held pending by GIF = 0 (AMD APM vol. 2, 15.17, "Global Interrupt Flag"), and when the
//! world switch sets GIF again (STGI) the CPU enters SMM, runs the firmware's handler and
//! returns to the hypervisor. The guest did nothing: it resumes where it was.

use super::Exit;
use crate::decide;
use crate::decision::Decision;
use crate::domain::Guest;
use traplab_abi::event::Action;

pub fn handle(_exit: &Exit, _guest: &Guest) -> Decision {
    decide!(
        Action::Emulate,
        "a system-management interrupt from the machine arrived while the guest ran: the CPU enters the firmware's SMM handler once GIF is set again, and comes back to the hypervisor; the guest resumes where it was and never sees it"
    )
    .describe("the machine's SMI, the firmware's: nothing for the guest")
}

#[cfg(test)]
mod tests {
    use crate::testing::Test;
    use traplab_abi::event::Action;
    use traplab_abi::exit::ExitReason;

    #[test]
    fn a_physical_smi_is_the_firmware_s_and_the_guest_resumes_where_it_was() {
        let mut test = Test::long_mode();
        let rip = test.rip();
        let run = test.run(test.exit(ExitReason::Smi));
        assert_eq!(run.decision.action, Action::Emulate);
        assert!(run.decision.end.is_none() && run.decision.effects.is_empty());
        assert_eq!(test.rip(), rip);
        assert!(
            run.decision.at.contains("src/exit/smi.rs:"),
            "{}",
            run.decision.at
        );
    }
}
