//! XSETBV (exit code 0x8D): the guest sets XCR0, which state components XSAVE manages.
//!
//! XSETBV is always intercepted (15.9). At CPL > 0 it is #GP(0) (AMD APM vol. 3, XSETBV),
//! which the intercept comes before (as QEMU's maintainers note of it, and KVM's
//! `kvm_emulate_xsetbv` checks the CPL itself): the hypervisor raises it. With CR4.OSXSAVE
//! clear it is #UD, which on a CPU comes before the intercept (KVM: "#UD due to
//! CR4.OSXSAVE=0 has priority over the intercept") but under QEMU's TCG after it (its
//! `helper_xsetbv` raises it): the hypervisor raises that too, for TCG. It then checks the
//! value as the CPU would
//! (Intel SDM vol. 1, 13.3, and the XSETBV reference): ECX must be 0, x87 (bit 0) must stay
//! set, AVX (bit 2) needs SSE (bit 1), MPX's two components (bits 3 and 4) go together, and
//! so do AVX-512's three (bits 7:5), which also need AVX; and only components the CPU has
//! (CPUID 0xD) may be set; else #GP(0). A value the CPU refuses must not reach the CPU's
//! own XSETBV: the #GP would be the hypervisor's, and end the machine. Then it
//! executes XSETBV itself: the hypervisor does not use XSAVE, so the guest's XCR0 can stay
//! in the CPU (that needs the hypervisor's own CR4.OSXSAVE).
//!
//! Under QEMU 7.2's TCG no guest gets here: its CPU (`qemu64`) has no XSAVE, so a guest's
//! MOV to CR4 with OSXSAVE is #GP(0) — the hypervisor's own when it intercepts CR writes
//! (`exit/cr.rs`), else TCG's VMEXIT_INVALID corrected to #GP (`quirks.rs`, which TCG
//! also gives with `+xsave`); and the hypervisor's own hangs (measured). So XSETBV raises
//! #UD first (CR4.OSXSAVE clear). The `other-intercepts` lab
//! shows that #UD; this handler is for CPUs that let a guest enable XSAVE.

use super::{Exit, undecodable};
use crate::decision::{Decision, Effect};
use crate::domain::Guest;
use crate::{decide, deliver};
use alloc::format;
use traplab_abi::event::Action;
use traplab_abi::x86::Cr4Flags;

/// XCR0's state components (Intel SDM vol. 1, 13.1): x87, SSE and AVX's upper halves.
const X87: u64 = 1 << 0;
const SSE: u64 = 1 << 1;
const AVX: u64 = 1 << 2;
/// XCR0's MPX components: BNDREGS and BNDCSR.
const MPX: u64 = 0b11 << 3;
/// XCR0's AVX-512 components: opmask, ZMM_Hi256 and Hi16_ZMM.
const AVX_512: u64 = 0b111 << 5;

pub fn handle(exit: &Exit, guest: &Guest) -> Decision {
    let Some(length) = exit.instruction_length(guest) else {
        return undecodable(exit, guest);
    };
    let save = &guest.vcpu.vmcb.save;
    if save.cr4 & Cr4Flags::OSXSAVE.bits() == 0 {
        return deliver!(
            guest,
            6,
            0,
            true,
            "XSETBV with CR4.OSXSAVE clear: the OS has not enabled XSAVE, #UD, as hardware does"
        );
    }
    if save.cpl != 0 {
        let cpl = save.cpl;
        return deliver!(
            guest,
            13,
            0,
            true,
            "XSETBV at CPL {cpl}: only the kernel may set XCR0, #GP(0), as hardware does"
        );
    }
    let index = guest.gpr(1) as u32;
    let value = (guest.gpr(2) << 32) | (guest.gpr(0) & 0xffff_ffff);
    let [eax, _, _, edx] = guest.machine.cpuid(0xd, 0);
    let supported = (edx as u64) << 32 | eax as u64;
    let invalid = if index != 0 {
        Some("names an XCR other than XCR0")
    } else if value & X87 == 0 {
        Some("clears x87 (bit 0)")
    } else if value & AVX != 0 && value & SSE == 0 {
        Some("sets AVX without SSE")
    } else if !matches!(value & MPX, 0 | MPX) {
        Some("sets one of MPX's two components (bits 3 and 4) without the other")
    } else if !matches!(value & AVX_512, 0 | AVX_512) {
        Some("sets some of AVX-512's three components (bits 7:5), not all")
    } else if value & AVX_512 != 0 && value & AVX == 0 {
        Some("sets AVX-512 without AVX")
    } else if value & !supported != 0 {
        Some("sets a component this CPU does not have")
    } else {
        None
    };
    if let Some(why) = invalid {
        return deliver!(
            guest,
            13,
            0,
            true,
            "XSETBV XCR{index} = {value:#x} {why}: #GP(0), as hardware does"
        );
    }
    decide!(
        Action::Emulate,
        "XSETBV XCR0 = {value:#x}: valid, so the hypervisor sets it (XCR0 stays the guest's: the hypervisor does not use XSAVE)"
    )
    .with(Effect::Xcr0(value))
    .with(Effect::Rip(guest.vcpu.rip_after(length)))
    .describe(format!("XCR0 = {value:#x}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{self, ENTRY, Run, Test};
    use traplab_abi::exit::ExitReason;
    use traplab_abi::svm::Event;

    /// XSETBV (`0f 01 d1`) of `value` (EDX:EAX) to XCR`index` (ECX). The fake CPU has
    /// x87, SSE and AVX state (CPUID 0xD: 0b111).
    fn xsetbv(index: u64, value: u64) -> (Test, Run) {
        let mut test = Test::long_mode();
        test.domain.vcpu.vmcb.save.cr4 |= Cr4Flags::OSXSAVE.bits();
        test.code(&[0x0f, 0x01, 0xd1]);
        test.set_gpr(1, index);
        test.set_gpr(0, value & 0xffff_ffff);
        test.set_gpr(2, value >> 32);
        let run = test.run(test.exit(ExitReason::Xsetbv));
        (test, run)
    }

    /// #GP(0), as the CPU raises for an invalid XCR0 (Intel SDM vol. 1, 13.3), and the
    /// physical CPU's XCR0 untouched.
    fn assert_general_protection(test: &Test, run: &Run, why: &str) {
        assert_eq!(run.decision.action, Action::Reflect);
        assert!(run.decision.why.contains(why), "{}", run.decision.why);
        let (event, _, synthetic) = testing::injected(&run.decision);
        assert_eq!(event, Event::exception(13, 0));
        assert!(synthetic);
        assert!(test.machine.calls.is_empty());
        assert_eq!(test.rip(), ENTRY);
    }

    #[test]
    fn xsetbv_with_cr4_osxsave_clear_is_a_ud_and_at_cpl_3_a_gp() {
        // AMD APM vol. 3, XSETBV: #UD while CR4.OSXSAVE is clear (a CPU raises it before the
        // intercept, QEMU's TCG after), #GP(0) at CPL > 0 (after the intercept): the
        // hypervisor raises them where the CPU has not, and XCR0 stays as it was.
        let mut test = Test::long_mode();
        test.code(&[0x0f, 0x01, 0xd1]);
        test.set_gpr(0, 0b11);
        let run = test.run(test.exit(ExitReason::Xsetbv));
        assert_eq!(testing::injected(&run.decision).0, Event::exception(6, 0));
        assert!(test.machine.calls.is_empty());
        let mut test = Test::long_mode();
        test.domain.vcpu.vmcb.save.cr4 |= Cr4Flags::OSXSAVE.bits();
        test.domain.vcpu.vmcb.save.cpl = 3;
        test.code(&[0x0f, 0x01, 0xd1]);
        test.set_gpr(0, 0b11);
        let run = test.run(test.exit(ExitReason::Xsetbv));
        assert_general_protection(&test, &run, "at CPL 3");
    }

    #[test]
    fn an_xcr_other_than_xcr0_is_a_gp() {
        let (test, run) = xsetbv(1, 0b11);
        assert_general_protection(&test, &run, "an XCR other than XCR0");
    }

    #[test]
    fn clearing_x87_is_a_gp() {
        let (test, run) = xsetbv(0, 0b110);
        assert_general_protection(&test, &run, "clears x87");
    }

    #[test]
    fn avx_without_sse_is_a_gp() {
        let (test, run) = xsetbv(0, 0b101);
        assert_general_protection(&test, &run, "AVX without SSE");
    }

    #[test]
    fn part_of_avx_512_or_of_mpx_or_avx_512_without_avx_is_a_gp() {
        // On a CPU that has them all (x87 … AVX-512: CPUID 0xD's EAX = 0xff).
        for (value, why) in [
            (
                0b0110_0111,
                "AVX-512's three components (bits 7:5), not all",
            ),
            (0b0000_1111, "one of MPX's two components"),
            (0b1110_0011, "AVX-512 without AVX"),
        ] {
            let mut test = Test::long_mode();
            test.domain.vcpu.vmcb.save.cr4 |= Cr4Flags::OSXSAVE.bits();
            test.machine.xsave_components = 0xff;
            test.code(&[0x0f, 0x01, 0xd1]);
            test.set_gpr(0, value);
            let run = test.run(test.exit(ExitReason::Xsetbv));
            assert_general_protection(&test, &run, why);
        }
    }

    #[test]
    fn avx_512_with_avx_is_set_where_the_cpu_has_it() {
        let mut test = Test::long_mode();
        test.domain.vcpu.vmcb.save.cr4 |= Cr4Flags::OSXSAVE.bits();
        test.machine.xsave_components = 0xff;
        test.code(&[0x0f, 0x01, 0xd1]);
        test.set_gpr(0, 0b1110_0111);
        test.run(test.exit(ExitReason::Xsetbv));
        assert_eq!(test.machine.calls, ["xsetbv 0xe7"]);
    }

    #[test]
    fn a_component_the_cpu_does_not_have_is_a_gp() {
        // MPX's two components, which the fake CPU does not have.
        let (test, run) = xsetbv(0, 0b1_1111);
        assert_general_protection(&test, &run, "a component this CPU does not have");
    }

    #[test]
    fn a_valid_xcr0_is_set_by_the_cpu_s_own_xsetbv() {
        let (test, run) = xsetbv(0, 0b111);
        assert_eq!(run.decision.action, Action::Emulate);
        assert_eq!(
            run.decision.effects,
            [Effect::Xcr0(0b111), Effect::Rip(ENTRY + 3)]
        );
        assert_eq!(test.machine.calls, ["xsetbv 0x7"]);
        assert_eq!(test.rip(), ENTRY + 3);
    }
}
