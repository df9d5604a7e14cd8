//! SHUTDOWN (exit code 0x7F): the guest triple-faulted.
//!
//! On a bare machine the CPU would enter shutdown and the board would reset. Here only
//! this domain ends: the hypervisor and every other domain carry on (AMD APM vol. 2,
//! 15.13.3 "Shutdown intercept"). Because every exception is intercepted, the events
//! before this one show the faults that led here.

use super::Exit;
use crate::decide;
use crate::decision::Decision;
use crate::domain::Guest;
use traplab_abi::event::Action;

pub fn handle(_exit: &Exit, _guest: &Guest) -> Decision {
    decide!(
        Action::Kill,
        "the guest triple-faulted: a bare CPU would shut down, so only this domain ends"
    )
    .killing("triple fault (shutdown)")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{self, Test};
    use traplab_abi::exit::ExitReason;

    #[test]
    fn a_triple_fault_ends_only_this_domain() {
        // AMD APM vol. 2, 15.13.3: the shutdown intercept turns the guest's triple fault
        // into an exit instead of a reset of the machine.
        let mut test = Test::long_mode();
        let run = test.run(test.exit(ExitReason::Shutdown));
        assert_eq!(run.decision.action, Action::Kill);
        assert_eq!(testing::killed(&run.decision), "triple fault (shutdown)");
        assert!(run.decision.at.contains("src/exit/shutdown.rs:"));
        assert_eq!(run.applied.end.as_ref(), run.decision.end.as_deref());
        assert_eq!(
            run.kinds(),
            ["decide"],
            "nothing delivered, nothing emulated"
        );
    }
}
