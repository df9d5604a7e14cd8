//! MONITOR, MWAIT and MWAIT with a condition (exit codes 0x8A, 0x8B, 0x8C): answer #UD.
//!
//! The CPU the guest sees has no MONITOR/MWAIT: CPUID.1:ECX[3] is cleared (`cpuid.rs`),
//! as Xen and KVM hide it from HVM guests by default. A CPU without it raises #UD for
//! both instructions (AMD APM vol. 3, MONITOR, MWAIT), and so does the hypervisor, the
//! event marked synthetic: the CPU raised nothing (the intercept came first). A real CPU
//! with the feature checks #UD before the intercept only at CPL > 0 (AMD APM vol. 2, 15.9),
//! so these exits come from a kernel, on a host whose CPU has MONITOR (`-accel kvm -cpu
//! host`, or TCG with `+monitor`); QEMU's `qemu64` raises #UD itself.

use super::Exit;
use crate::decision::Decision;
use crate::deliver;
use crate::domain::Guest;

pub fn handle(exit: &Exit, guest: &Guest) -> Decision {
    let name = exit.reason.name();
    deliver!(
        guest,
        6,
        0,
        true,
        "{name} from the guest: the CPU it sees has no MONITOR/MWAIT (CPUID.1:ECX[3] clear), so the hypervisor answers as such a CPU: #UD"
    )
}

#[cfg(test)]
mod tests {
    use crate::testing::{self, Test};
    use traplab_abi::event::Action;
    use traplab_abi::exit::ExitReason;

    #[test]
    fn monitor_and_mwait_get_a_synthetic_ud_not_the_end_of_the_domain() {
        // Before, no handler took these exits, and the domain was killed for an exit the
        // hypervisor did not know: a CPU never does more than #UD here.
        for (reason, bytes) in [
            (ExitReason::Monitor, &[0x0f, 0x01, 0xc8][..]),
            (ExitReason::Mwait, &[0x0f, 0x01, 0xc9][..]),
            (ExitReason::MwaitConditional, &[0x0f, 0x01, 0xc9][..]),
        ] {
            let mut test = Test::long_mode();
            test.code(bytes);
            test.gate(6, 0x20_f000);
            let decision = test.decide(test.exit(reason));
            assert_eq!(decision.action, Action::Reflect, "{}", decision.why);
            let (event, _, synthetic) = testing::injected(&decision);
            assert_eq!((event.vector, synthetic), (6, true));
        }
    }
}
