//! WBINVD and INVD (exit codes 0x89 and 0x76): the guest flushes its caches.
//!
//! WBINVD writes every modified cache line back to memory and invalidates the caches; INVD
//! invalidates them *without* writing back (AMD APM vol. 3, "WBINVD", "INVD"). Both are
//! privileged (CPL 0) and legal in any kernel: Linux runs WBINVD when it changes memory
//! types (MTRRs, PAT) and on the way to suspend. A CPU allows them, so a hypervisor must too.
//!
//! Both are intercepted (`intercepts.rs`): INVD because a guest must never throw away cache
//! lines that hold *other* domains' or the hypervisor's data, WBINVD because a real
//! hypervisor would have to flush the host's caches for a guest with a device doing DMA.
//! Guest memory here is ordinary, coherent RAM and no guest device does DMA, so there is
//! nothing to flush: the hypervisor treats INVD as WBINVD (as KVM does) and skips the
//! instruction. (QEMU's TCG has no caches at all, and reports an INVD as a WBINVD exit.)

use super::{Exit, undecodable};
use crate::decide;
use crate::decision::{Decision, Effect};
use crate::domain::Guest;
use traplab_abi::event::Action;

pub fn handle(exit: &Exit, guest: &Guest, invalidate_only: bool) -> Decision {
    let Some(length) = exit.instruction_length(guest) else {
        return undecodable(exit, guest);
    };
    // TCG's WBINVD exit may be an INVD (`quirks.rs`): the instruction says which.
    let invalidate_only = invalidate_only
        || exit
            .decode_instruction(guest)
            .is_some_and(|instruction| instruction.mnemonic() == iced_x86::Mnemonic::Invd);
    let decision = if invalidate_only {
        decide!(
            Action::Emulate,
            "INVD: the guest would throw away cache lines without writing them back, which could hold other domains' data; the hypervisor does it as WBINVD, and with coherent RAM and no DMA there is nothing to write back"
        )
    } else {
        decide!(
            Action::Emulate,
            "WBINVD: the guest flushes its caches; its memory is coherent RAM and no device of it does DMA, so there is nothing to write back: the hypervisor skips it"
        )
    };
    decision
        .with(Effect::Rip(guest.vcpu.rip_after(length)))
        .describe(if invalidate_only {
            "INVD: done as WBINVD (nothing to flush)"
        } else {
            "WBINVD: nothing to flush"
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{self, ENTRY, Test};
    use traplab_abi::exit::ExitReason;

    #[test]
    fn an_invd_that_tcg_reports_as_wbinvd_is_named_invd() {
        let mut test = Test::long_mode();
        test.code(&[0x0f, 0x08]); // invd
        let exit = test.exit(ExitReason::Wbinvd);
        let run = test.run(exit);
        assert!(run.decision.why.starts_with("INVD"), "{}", run.decision.why);
        assert_eq!(test.rip(), ENTRY + 2);
    }

    #[test]
    fn wbinvd_is_allowed_and_skipped() {
        // WBINVD is `0f 09`: two bytes. A CPU allows it at CPL 0: the domain lives.
        let mut test = Test::long_mode();
        test.code(&[0x0f, 0x09]);
        let run = test.run(test.exit(ExitReason::Wbinvd));
        assert_eq!(run.decision.action, Action::Emulate);
        assert_eq!(run.decision.effects, [Effect::Rip(ENTRY + 2)]);
        assert_eq!(run.emulate().what, "WBINVD: nothing to flush");
        assert_eq!(test.rip(), ENTRY + 2);
    }

    #[test]
    fn invd_is_done_as_wbinvd() {
        let mut test = Test::long_mode();
        test.code(&[0x0f, 0x08]);
        let run = test.run(test.exit(ExitReason::Invd));
        assert_eq!(run.decision.action, Action::Emulate);
        assert!(
            run.decision.why.starts_with("INVD: "),
            "{}",
            run.decision.why
        );
        assert_eq!(test.rip(), ENTRY + 2);
    }

    #[test]
    fn wbinvd_at_an_unmapped_rip_kills_the_domain() {
        let test = Test::long_mode();
        let decision = test.decide(testing::exit(ExitReason::Wbinvd, &[]));
        assert_eq!(decision.action, Action::Kill);
    }
}
