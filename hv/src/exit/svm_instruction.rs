//! VMRUN, VMLOAD, VMSAVE, STGI, CLGI, SKINIT, INVLPGA run by a guest (exit codes 0x80,
//! 0x82–0x86, 0x7A): answer #UD.
//!
//! These instructions work on host-physical memory and on the global interrupt flag: a
//! guest that ran them would reach outside itself. This hypervisor offers no nested
//! virtualization (CPUID hides SVM from the guest), so it answers as a CPU without SVM
//! does: #UD. The #UD is made up by the hypervisor, so the event is marked synthetic.

use super::Exit;
use crate::decision::Decision;
use crate::deliver;
use crate::domain::Guest;
use traplab_abi::exit::{ExitReason, SvmInstruction};

pub fn handle(_exit: &Exit, guest: &Guest, instruction: SvmInstruction) -> Decision {
    let name = ExitReason::SvmInstruction(instruction).name();
    deliver!(
        guest,
        6,
        0,
        true,
        "{name} from a guest: no nested virtualization here, so the hypervisor answers as a CPU without SVM: #UD"
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{self, ENTRY, Test, trap};
    use traplab_abi::event::Action;
    use traplab_abi::svm::Event;

    #[test]
    fn vmrun_from_a_guest_gets_a_synthetic_ud_named_after_it() {
        // A CPU without SVM raises #UD for VMRUN (AMD APM vol. 3, VMRUN: "#UD: SVM not
        // enabled"). The CPU raised nothing here (an intercept): the #UD is made up.
        let mut test = Test::long_mode();
        test.gate(6, 0x20_f000);
        let run = test.run(test.exit(ExitReason::SvmInstruction(SvmInstruction::Vmrun)));
        assert_eq!(run.decision.action, Action::Reflect);
        assert!(
            run.decision.why.starts_with("VMRUN from a guest"),
            "{}",
            run.decision.why
        );
        let (event, handler, synthetic) = testing::injected(&run.decision);
        assert_eq!(event, Event::exception(6, 0));
        assert_eq!(handler, Some(0x20_f000));
        assert!(synthetic);
        assert!(run.injected().synthetic);
        assert_eq!(test.rip(), ENTRY, "#UD is a fault: RIP at the instruction");
    }

    #[test]
    fn every_svm_instruction_gets_ud_with_its_name() {
        let test = Test::long_mode();
        for (instruction, name) in [
            (SvmInstruction::Vmload, "VMLOAD"),
            (SvmInstruction::Vmsave, "VMSAVE"),
            (SvmInstruction::Stgi, "STGI"),
            (SvmInstruction::Clgi, "CLGI"),
            (SvmInstruction::Skinit, "SKINIT"),
            (SvmInstruction::Invlpga, "INVLPGA"),
        ] {
            let decision = test.decide(test.exit(ExitReason::SvmInstruction(instruction)));
            assert!(decision.why.starts_with(name), "{}", decision.why);
            assert_eq!(testing::injected(&decision).0.vector, 6);
        }
    }

    #[test]
    fn with_a_trap_table_entry_for_ud_it_is_bounced_and_still_synthetic() {
        let mut test = Test::long_mode();
        test.trap_table(&[trap(6, 0x20_f000)]);
        let decision = test.decide(test.exit(ExitReason::SvmInstruction(SvmInstruction::Clgi)));
        let bounce = testing::bounced(&decision);
        assert_eq!((bounce.vector, bounce.synthetic), (6, true));
    }
}
