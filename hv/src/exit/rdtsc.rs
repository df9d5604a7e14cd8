//! RDTSC and RDTSCP (exit codes 0x6E, 0x87): read the time stamp counter for the guest.
//!
//! Every domain has its own TSC: the host's plus the VMCB's TSC_OFFSET, which the hypervisor
//! sets at creation so that the guest's clock starts near 0 (AMD APM vol. 2, 15.30.5). The
//! CPU applies the offset itself when RDTSC is not intercepted; intercepted, the hypervisor
//! does the same sum.
//!
//! RDTSCP also returns MSR TSC_AUX in ECX, which the hypervisor does not emulate: the CPU the
//! guest sees has no RDTSCP (CPUID Fn8000_0001_EDX[27] clear, `cpuid.rs`), and such a CPU
//! raises #UD for it (AMD APM vol. 3, RDTSCP, "Exceptions"), RIP on the instruction. So does
//! the hypervisor, the event marked synthetic: the intercept came first. The exit comes only
//! where the host's CPU has RDTSCP and RDTSC is intercepted (`intercept-rdtsc`, under KVM
//! or TCG with `+rdtscp`); QEMU's `qemu64` raises #UD itself.

use super::{Exit, undecodable};
use crate::decision::{Decision, Effect};
use crate::domain::Guest;
use crate::{decide, deliver};
use alloc::format;
use traplab_abi::event::Action;

pub fn handle(exit: &Exit, guest: &Guest, rdtscp: bool) -> Decision {
    let Some(length) = exit.instruction_length(guest) else {
        return undecodable(exit, guest);
    };
    // QEMU's TCG reports a guest's RDTSCP as an RDTSC exit (`quirks.rs`): the instruction
    // says which it is.
    let rdtscp = rdtscp
        || exit
            .decode_instruction(guest)
            .is_some_and(|instruction| instruction.mnemonic() == iced_x86::Mnemonic::Rdtscp);
    if rdtscp {
        return deliver!(
            guest,
            6,
            0,
            true,
            "RDTSCP from the guest: the CPU it sees has no RDTSCP (CPUID Fn8000_0001_EDX[27] clear: the hypervisor does not emulate MSR TSC_AUX, which it returns in ECX), so the hypervisor answers as such a CPU: #UD"
        );
    }
    let offset = guest.vcpu.vmcb.control.tsc_offset;
    let value = exit.tsc.wrapping_add(offset);
    decide!(
        Action::Emulate,
        "RDTSC: the guest's clock is the host TSC plus its offset {:#x}",
        offset
    )
    .with(Effect::Gpr(0, value & 0xffff_ffff))
    .with(Effect::Gpr(2, value >> 32))
    .with(Effect::Rip(guest.vcpu.rip_after(length)))
    .describe(format!("TSC = {value:#x}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{self, ENTRY, Test};
    use traplab_abi::exit::ExitReason;

    #[test]
    fn rdtscp_on_a_cpu_whose_cpuid_has_none_is_a_synthetic_ud_the_rip_on_it() {
        // AMD APM vol. 3, RDTSCP: #UD when CPUID Fn8000_0001_EDX[RDTSCP] = 0, which is what
        // the guest is shown. Its own exit (0x87), and the RDTSC exit TCG reports it as.
        for reason in [ExitReason::Rdtscp, ExitReason::Rdtsc] {
            let mut test = Test::long_mode();
            test.code(&[0x0f, 0x01, 0xf9]); // rdtscp
            test.gate(6, 0x20_f000);
            test.set_gpr(1, 0x55);
            assert!(!crate::exit::cpuid::guest_sees(
                &test.guest(),
                0x8000_0001,
                3,
                27
            ));
            let decision = test.decide(test.exit(reason));
            assert_eq!(decision.action, Action::Reflect, "{}", decision.why);
            assert!(decision.why.starts_with("RDTSCP from the guest"));
            let (event, _, synthetic) = testing::injected(&decision);
            assert_eq!((event.vector, synthetic), (6, true));
            test.run(test.exit(reason));
            assert_eq!(test.gpr(1), 0x55, "no TSC_AUX in ECX");
            assert_eq!(test.rip(), ENTRY, "a fault: RIP on the RDTSCP");
        }
    }

    #[test]
    fn rdtsc_gives_the_host_tsc_plus_the_guest_s_offset_in_edx_eax() {
        // AMD APM vol. 2, 15.30.5: the guest reads TSC + TSC_OFFSET. Here the guest's clock
        // is 0x1_0000_0005 at the exit: EDX = 1, EAX = 5.
        let mut test = Test::long_mode();
        test.code(&[0x0f, 0x31]);
        let now = test.machine.now.get();
        test.domain.vcpu.vmcb.control.tsc_offset = 0x1_0000_0005u64.wrapping_sub(now);
        test.set_gpr(0, u64::MAX);
        let run = test.run(test.exit(ExitReason::Rdtsc));
        assert_eq!(run.decision.action, Action::Emulate);
        assert_eq!(
            (test.gpr(2), test.gpr(0)),
            (1, 5),
            "the upper halves cleared"
        );
        assert_eq!(test.rip(), ENTRY + 2);
        assert_eq!(run.emulate().what, "TSC = 0x100000005");
    }

    #[test]
    fn a_negative_offset_makes_the_guest_s_clock_start_near_zero() {
        let mut test = Test::long_mode();
        test.code(&[0x0f, 0x31]);
        test.domain.vcpu.vmcb.control.tsc_offset = (-900_000i64) as u64;
        test.run(test.exit(ExitReason::Rdtsc));
        assert_eq!(test.gpr(0), test.machine.now.get() - 900_000);
    }

    #[test]
    fn rdtsc_at_an_unmapped_rip_kills_the_domain() {
        let test = Test::long_mode();
        let decision = test.decide(testing::exit(ExitReason::Rdtsc, &[]));
        assert_eq!(decision.action, Action::Kill);
    }
}
