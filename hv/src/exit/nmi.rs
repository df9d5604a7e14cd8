//! A physical NMI (exit code 0x61 NMI): the machine's, not the guest's.
//!
//! The hypervisor intercepts NMIs (`intercepts.rs`), so that one arriving while a guest runs
//! comes to the hypervisor instead of going through the guest's IDT: the machine's NMIs (a
//! watchdog, a hardware error, QEMU's monitor command `nmi`) are the host's to handle. At the
//! #VMEXIT the NMI is still pending, held off by GIF = 0 (AMD APM vol. 2, 15.17, "Global
//! Interrupt Flag"); when the world switch sets GIF again (STGI), the CPU delivers it through
//! the hypervisor's own IDT (`cpu.rs`), which has nothing to do with it and returns. The
//! guest did nothing: it resumes where it was, and never sees the NMI. (A guest's own NMIs
//! are virtual: its local APIC's, or `raise_event(NMI)`; the hypervisor injects those.)

use super::Exit;
use crate::decide;
use crate::decision::Decision;
use crate::domain::Guest;
use traplab_abi::event::Action;

pub fn handle(_exit: &Exit, _guest: &Guest) -> Decision {
    decide!(
        Action::Emulate,
        "a non-maskable interrupt from the machine (not the guest's: a guest's NMIs are virtual) arrived while the guest ran: the hypervisor takes it through its own IDT once GIF is set again; the guest resumes where it was and never sees it"
    )
    .describe("the machine's NMI, taken by the hypervisor: nothing for the guest")
}

#[cfg(test)]
mod tests {
    use crate::testing::Test;
    use traplab_abi::event::Action;
    use traplab_abi::exit::ExitReason;

    #[test]
    fn a_physical_nmi_is_the_hypervisor_s_and_the_guest_resumes_where_it_was() {
        // It used to have no handler, and the domain running when the machine's NMI came
        // was killed for it.
        let mut test = Test::long_mode();
        let rip = test.rip();
        let run = test.run(test.exit(ExitReason::Nmi));
        assert_eq!(run.decision.action, Action::Emulate);
        assert!(run.decision.end.is_none() && run.decision.delivery.is_none());
        assert!(
            run.decision.effects.is_empty(),
            "nothing changes for the guest"
        );
        assert_eq!(test.rip(), rip);
        assert!(
            run.decision.at.contains("src/exit/nmi.rs:"),
            "{}",
            run.decision.at
        );
    }
}
