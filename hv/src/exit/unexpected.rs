//! Every exit without a handler of its own.
//!
//! The hypervisor intercepts only what it handles, so this should not happen; when it does
//! (or when VMRUN refuses the guest state: exit code -1, VMEXIT_INVALID) the domain ends
//! with the exit's name. A guest never takes the hypervisor down.

use super::Exit;
use crate::decide;
use crate::decision::Decision;
use crate::domain::Guest;
use alloc::format;
use traplab_abi::event::Action;

pub fn handle(exit: &Exit, _guest: &Guest) -> Decision {
    let (name, code) = (exit.reason.name(), exit.reason.code());
    decide!(
        Action::Kill,
        "exit {name} ({code:#x}) has no handler here: the domain ends, the hypervisor does not"
    )
    .killing(format!("unhandled exit {name} ({code:#x})"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{self, Test};
    use traplab_abi::exit::ExitReason;

    #[test]
    fn an_exit_without_a_handler_kills_the_domain_and_names_the_exit() {
        // Task switches are not intercepted by this hypervisor: one would be a surprise.
        let mut test = Test::long_mode();
        let run = test.run(test.exit(ExitReason::TaskSwitch));
        assert_eq!(run.decision.action, Action::Kill);
        assert_eq!(
            testing::killed(&run.decision),
            "unhandled exit TASK_SWITCH (0x7d)"
        );
        assert!(run.decision.why.contains("the hypervisor does not"));
        assert!(run.decision.at.contains("src/exit/unexpected.rs:"));
        assert_eq!(run.applied.end.as_ref(), run.decision.end.as_deref());
    }
}
