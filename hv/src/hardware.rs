//! The real machine under the hypervisor, as the library's decisions see it
//! (`traplab_hv::Machine`): the CPU's CPUID, the TSC, the hypervisor's timer, and the few
//! instructions only the physical CPU can run for a guest.

use crate::{control, time, timer};
use traplab_hv::Machine;

/// gdb debugs a domain: set once at boot by `gdb::enable`. The one flag that says so, here
/// rather than in `gdb`, which depends on this module ([`Machine::debugger_attached`],
/// `gdb::enabled`).
static DEBUGGER_ATTACHED: core::sync::atomic::AtomicBool =
    core::sync::atomic::AtomicBool::new(false);

/// gdb will debug a domain.
pub fn debugger_attaches() {
    DEBUGGER_ATTACHED.store(true, core::sync::atomic::Ordering::Relaxed);
}

/// Does gdb debug a domain?
pub fn debugger_attached() -> bool {
    DEBUGGER_ATTACHED.load(core::sync::atomic::Ordering::Relaxed)
}

/// This machine.
pub struct Hardware;

impl Machine for Hardware {
    fn cpuid(&self, leaf: u32, subleaf: u32) -> [u32; 4] {
        let answer = core::arch::x86_64::__cpuid_count(leaf, subleaf);
        [answer.eax, answer.ebx, answer.ecx, answer.edx]
    }

    fn tsc_hz(&self) -> u64 {
        time::tsc_hz()
    }

    fn timer_hz(&self) -> u32 {
        timer::rate_when_running()
    }

    fn now(&self) -> u64 {
        time::rdtsc()
    }

    fn wall_clock(&self) -> traplab_hv::machine::WallTime {
        time::wall_clock()
    }

    fn acknowledge_timer(&mut self) -> u64 {
        timer::take_pending();
        timer::ticks()
    }

    fn start_timer(&mut self) {
        timer::ensure_running();
    }

    fn quicken_timer(&mut self, hz: u32) {
        timer::ensure_at_least(hz);
    }

    fn halt_until(&mut self, tsc: u64) -> u64 {
        // Everything recorded is in the ring before we wait (`trace.rs`): a lone guest's HLT
        // waits here in the middle of its trap, and its `exit` must not wait with it.
        crate::trace::flush();
        let start = timer::ticks();
        while time::rdtsc() < tsc && !control::keys_typed() {
            // The hypervisor halts too: STI;HLT sleeps until its own timer's next tick
            // (taken by our IDT, `timer::tick`), then CLI and look at the clock again. GIF
            // is set between world switches, so the tick can come in.
            x86_64::instructions::interrupts::enable_and_hlt();
            x86_64::instructions::interrupts::disable();
        }
        timer::ticks() - start
    }

    fn keyboard(&self) -> bool {
        control::enabled()
    }

    fn debugger_attached(&self) -> bool {
        debugger_attached()
    }

    fn keys_typed(&mut self) -> bool {
        control::keys_typed()
    }

    fn take_keys(&mut self, domain: u16) -> alloc::vec::Vec<u8> {
        control::take_keys(domain)
    }

    fn discard_keys(&mut self) -> usize {
        control::discard_keys()
    }

    fn invalidate_page(&mut self, address: u64, asid: u32) {
        // SAFETY: INVLPGA only drops a TLB entry of the given address space.
        unsafe {
            core::arch::asm!("invlpga rax, ecx", in("rax") address, in("ecx") asid, options(nostack))
        };
    }

    fn set_xcr0(&mut self, value: u64) {
        use x86_64::registers::control::{Cr4, Cr4Flags};
        let host_cr4 = Cr4::read();
        if !host_cr4.contains(Cr4Flags::OSXSAVE) {
            // SAFETY: XSETBV needs our own CR4.OSXSAVE; the CPU has XSAVE (the guest could
            // enable it, `exit/xsetbv.rs`), and OSXSAVE only makes XGETBV/XSETBV legal.
            unsafe { Cr4::write(host_cr4 | Cr4Flags::OSXSAVE) };
        }
        // SAFETY: `exit/xsetbv.rs` checked the value against what the CPU supports, and
        // OSXSAVE is on.
        unsafe {
            core::arch::asm!("xsetbv", in("ecx") 0, in("eax") value as u32, in("edx") (value >> 32) as u32, options(nostack))
        };
    }

    fn load_breakpoint_address(&mut self, slot: u8, address: u64) {
        // SAFETY: DR0–DR3 belong to the guest (the hypervisor sets no breakpoints of its own).
        unsafe {
            match slot {
                0 => core::arch::asm!("mov dr0, {}", in(reg) address, options(nostack)),
                1 => core::arch::asm!("mov dr1, {}", in(reg) address, options(nostack)),
                2 => core::arch::asm!("mov dr2, {}", in(reg) address, options(nostack)),
                _ => core::arch::asm!("mov dr3, {}", in(reg) address, options(nostack)),
            }
        }
    }

    fn breakpoint_address(&self, slot: u8) -> u64 {
        let address: u64;
        // SAFETY: reading a debug register has no effect; CPL 0 may.
        unsafe {
            match slot {
                0 => core::arch::asm!("mov {}, dr0", out(reg) address, options(nostack, nomem)),
                1 => core::arch::asm!("mov {}, dr1", out(reg) address, options(nostack, nomem)),
                2 => core::arch::asm!("mov {}, dr2", out(reg) address, options(nostack, nomem)),
                _ => core::arch::asm!("mov {}, dr3", out(reg) address, options(nostack, nomem)),
            }
        }
        address
    }

    fn load_dr7(&mut self, value: u64) {
        // SAFETY: the hypervisor does not use the debug registers itself. Should an armed
        // breakpoint match an access of the hypervisor's, its #DB handler ignores it (cpu.rs).
        unsafe { core::arch::asm!("mov dr7, {}", in(reg) value, options(nostack)) };
    }
}
