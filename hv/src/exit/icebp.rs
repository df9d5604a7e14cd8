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
        return undecodable(exit, guest);
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

#[cfg(test)]
mod tests {
    use crate::testing::{self, ENTRY, Test, trap};
    use traplab_abi::event::Action;
    use traplab_abi::exit::ExitReason;
    use traplab_abi::svm::Event;

    #[test]
    fn icebp_reflects_db_with_rip_after_the_instruction() {
        // INT1 raises #DB as a trap: the frame's RIP is the next instruction (AMD APM
        // vol. 3, INT1). The CPU did raise it (an intercept), so it is not synthetic.
        let mut test = Test::long_mode();
        test.code(&[0xf1]);
        test.gate(1, 0x20_9000);
        let run = test.run(test.exit(ExitReason::Icebp));
        assert_eq!(run.decision.action, Action::Reflect);
        let (event, handler, synthetic) = testing::injected(&run.decision);
        assert_eq!(event, Event::exception(1, 0));
        assert_eq!(event.error_code, None, "#DB has no error code");
        assert_eq!(handler, Some(0x20_9000));
        assert!(!synthetic);
        assert_eq!(test.rip(), ENTRY + 1);
        assert!(run.decision.at.contains("src/exit/icebp.rs:"));
    }

    #[test]
    fn icebp_bounced_to_a_trap_table_handler_pushes_the_next_rip() {
        let mut test = Test::long_mode();
        test.code(&[0xf1]);
        test.trap_table(&[trap(1, 0x20_9000)]);
        let decision = test.decide(test.exit(ExitReason::Icebp));
        let bounce = testing::bounced(&decision);
        assert_eq!(
            bounce.words[0],
            ENTRY + 1,
            "the frame's RIP: after the INT1"
        );
    }

    #[test]
    fn icebp_at_an_unmapped_rip_kills_the_domain() {
        let test = Test::long_mode();
        let decision = test.decide(testing::exit(ExitReason::Icebp, &[]));
        assert_eq!(
            testing::killed(&decision),
            "undecodable instruction at the exit"
        );
    }
}
