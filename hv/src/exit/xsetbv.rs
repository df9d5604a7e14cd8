//! XSETBV (exit code 0x8D): the guest sets XCR0, which state components XSAVE manages.
//!
//! XSETBV is always intercepted (15.9). The hypervisor checks the value as the CPU would
//! (Intel SDM vol. 1, 13.3): ECX must be 0, x87 (bit 0) must stay set, AVX (bit 2) needs
//! SSE (bit 1), and only components the CPU has (CPUID 0xD) may be set; else #GP(0). Then it
//! executes XSETBV itself: the hypervisor does not use XSAVE, so the guest's XCR0 can stay
//! in the CPU (that needs the hypervisor's own CR4.OSXSAVE).
//!
//! Under QEMU 7.2's TCG no guest gets here: a guest's MOV to CR4 with OSXSAVE ends in
//! VMEXIT_INVALID (corrected to #GP, `quirks.rs`), and the hypervisor's own hangs (both
//! measured), so XSETBV raises #UD first (CR4.OSXSAVE clear). The `other-intercepts` lab
//! shows that #UD; this handler is for CPUs that let a guest enable XSAVE.

use super::{Next, instruction_length, undecodable};
use crate::domain::Domain;
use crate::{decide, deliver};
use alloc::format;
use traplab_abi::event::Action;

pub fn handle(domain: &mut Domain) -> Next {
    let Some(length) = instruction_length(domain) else {
        return undecodable(domain);
    };
    let index = domain.gpr(1) as u32;
    let value = (domain.gpr(2) << 32) | (domain.gpr(0) & 0xffff_ffff);
    let supported = core::arch::x86_64::__cpuid_count(0xd, 0);
    let supported = (supported.edx as u64) << 32 | supported.eax as u64;
    let invalid = if index != 0 {
        Some("names an XCR other than XCR0")
    } else if value & 1 == 0 {
        Some("clears x87 (bit 0)")
    } else if value & 0b100 != 0 && value & 0b10 == 0 {
        Some("sets AVX without SSE")
    } else if value & !supported != 0 {
        Some("sets a component this CPU does not have")
    } else {
        None
    };
    if let Some(why) = invalid {
        return deliver!(
            domain,
            13,
            0,
            true,
            "XSETBV XCR{index} = {value:#x} {why}: #GP(0), as hardware does"
        );
    }
    decide!(
        domain,
        Action::Emulate,
        "XSETBV XCR0 = {value:#x}: valid, so the hypervisor sets it (XCR0 stays the guest's: the hypervisor does not use XSAVE)"
    );
    let host_cr4 = x86_64::registers::control::Cr4::read();
    if !host_cr4.contains(x86_64::registers::control::Cr4Flags::OSXSAVE) {
        // SAFETY: XSETBV needs our own CR4.OSXSAVE; the CPU has XSAVE (the guest could
        // enable it), and OSXSAVE only makes XGETBV/XSETBV legal.
        unsafe {
            x86_64::registers::control::Cr4::write(
                host_cr4 | x86_64::registers::control::Cr4Flags::OSXSAVE,
            )
        };
    }
    // SAFETY: a value checked above against what the CPU supports, with OSXSAVE on.
    unsafe {
        core::arch::asm!("xsetbv", in("ecx") 0, in("eax") value as u32, in("edx") (value >> 32) as u32, options(nostack))
    };
    domain.skip_instruction(length);
    domain.emulated(format!("XCR0 = {value:#x}"));
    Next::Resume
}
