//! PAUSE (exit code 0x77): the guest spins, waiting for something.
//!
//! PAUSE is the spin-wait hint of a lock loop. Intercepting it tells the hypervisor that
//! this virtual CPU is wasting its time: a hypervisor with other work runs another domain
//! (KVM's "pause-loop exiting"). This one runs domains one at a time, so it notes the spin
//! and lets the guest go on.

use super::{Exit, undecodable};
use crate::decide;
use crate::decision::{Decision, Effect};
use crate::domain::Guest;
use traplab_abi::event::Action;

pub fn handle(exit: &Exit, guest: &Guest) -> Decision {
    let Some(length) = exit.instruction_length(guest) else {
        return undecodable(exit, guest);
    };
    decide!(
        Action::Emulate,
        "PAUSE: the guest spins; with another domain ready a hypervisor would switch to it here"
    )
    .with(Effect::Rip(guest.vcpu.rip_after(length)))
    .describe("PAUSE: nothing else to run, the guest goes on")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{self, ENTRY, Test};
    use traplab_abi::exit::ExitReason;

    #[test]
    fn pause_is_noted_and_skipped() {
        // PAUSE is `f3 90` (REP NOP): two bytes to skip.
        let mut test = Test::long_mode();
        test.code(&[0xf3, 0x90]);
        let run = test.run(test.exit(ExitReason::Pause));
        assert_eq!(run.decision.action, Action::Emulate);
        assert_eq!(run.decision.effects, [Effect::Rip(ENTRY + 2)]);
        assert_eq!(
            run.emulate().what,
            "PAUSE: nothing else to run, the guest goes on"
        );
        assert_eq!(test.rip(), ENTRY + 2);
    }

    #[test]
    fn pause_at_an_unmapped_rip_kills_the_domain() {
        let test = Test::long_mode();
        let decision = test.decide(testing::exit(ExitReason::Pause, &[]));
        assert_eq!(decision.action, Action::Kill);
    }
}
