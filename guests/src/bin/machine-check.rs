//! `machine-check`: #MC, the CPU reporting a hardware error.
//!
//! A real CPU raises #MC when its error-checking logic finds a problem it cannot correct
//! (a multi-bit memory error, a bus error); details are in the machine-check MSRs. QEMU's
//! TCG never does (only its monitor's `mce` command can). The guest asks the hypervisor for
//! one (`raise_event(18)`): a synthetic event.
//!
//! A CPU delivers #MC only when the OS has set CR4.MCE; with CR4.MCE clear, a machine check
//! shuts the processor down (AMD APM vol. 2, "#MC—Machine-Check Exception"). The guest asks
//! twice: with CR4.MCE set, and again after clearing it. As it is, the hypervisor delivers
//! both; the lab's exercise makes the second end the domain, as the shutdown would.
//!
//! #MC is an abort: a real handler returns only when MCG_STATUS.RIPV says the interrupted
//! program can restart. Nothing is broken here (the guest asked for the event), so this one
//! returns.
#![no_std]
#![no_main]

use traplab_guests::hypercall::raise_event;
use traplab_guests::traps::{TrapFrame, set_handler};
use traplab_guests::{BootInfo, guest_main, println};

const CR4_MCE: u64 = 1 << 6;

fn cr4() -> u64 {
    let value: u64;
    // SAFETY: reading CR4 has no side effects (CPL 0).
    unsafe { core::arch::asm!("mov {0}, cr4", out(reg) value) };
    value
}

/// Set or clear CR4.MCE: whether the OS takes machine checks.
fn set_machine_checks(on: bool) {
    let value = if on {
        cr4() | CR4_MCE
    } else {
        cr4() & !CR4_MCE
    };
    // SAFETY: changes CR4.MCE alone.
    unsafe { core::arch::asm!("mov cr4, {0}", in(reg) value) };
}

fn machine_check(frame: &mut TrapFrame) {
    println!(
        "#MC at {:#x}: the hardware reports an error it could not correct (CR4.MCE {})",
        frame.rip,
        u8::from(cr4() & CR4_MCE != 0)
    );
}

fn main(_info: &BootInfo) -> i32 {
    set_handler(18, machine_check);
    set_machine_checks(true);
    println!("CR4.MCE set: asking the hypervisor for a machine check");
    raise_event(18, 0);
    set_machine_checks(false);
    println!("CR4.MCE clear: asking again, where a CPU would shut down");
    raise_event(18, 0);
    println!("the #MC came with CR4.MCE clear: a CPU would have shut down instead");
    0
}

guest_main!(main);
