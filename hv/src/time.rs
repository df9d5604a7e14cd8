//! Time: the TSC, calibrated once against the PIT.
//!
//! Every event carries a TSC stamp. To turn ticks into seconds the host needs the TSC
//! frequency; we measure it by letting PIT channel 2 (a fixed 1.193182 MHz clock) count
//! down 10 ms and reading the TSC before and after, the classic method (Linux
//! `arch/x86/kernel/tsc.c`, `pit_calibrate_tsc`). Under QEMU's TCG the guest TSC follows
//! the host clock, so the figure is the host's real time base.

use core::sync::atomic::{AtomicU64, Ordering};
use x86_64::instructions::port::Port;

/// TSC ticks per second, once [`calibrate_tsc`] has measured them.
static TSC_HZ: AtomicU64 = AtomicU64::new(0);

/// TSC ticks per second (0 before calibration).
pub fn tsc_hz() -> u64 {
    TSC_HZ.load(Ordering::Relaxed)
}

pub fn rdtsc() -> u64 {
    // SAFETY: RDTSC has no side effects; CR4.TSD is clear (we run at CPL 0 anyway).
    unsafe { core::arch::x86_64::_rdtsc() }
}

const PIT_HZ: u64 = 1_193_182;
const CALIBRATION_HZ: u64 = 100; // 10 ms

/// Measure TSC ticks per second.
pub fn calibrate_tsc() -> u64 {
    let mut gate = Port::<u8>::new(0x61);
    let mut command = Port::<u8>::new(0x43);
    let mut channel2 = Port::<u8>::new(0x42);
    let count = PIT_HZ / CALIBRATION_HZ;
    // SAFETY: ports 0x42/0x43/0x61 are the PC's PIT channel 2 and its gate; nothing else
    // in the hypervisor uses them.
    unsafe {
        // Gate channel 2 on, speaker off.
        let value = gate.read();
        gate.write((value & !0x02) | 0x01);
        // Channel 2, low byte then high byte, mode 0 (interrupt on terminal count), binary.
        command.write(0xb0);
        channel2.write(count as u8);
        channel2.write((count >> 8) as u8);
        let start = rdtsc();
        // Bit 5 of port 0x61 is channel 2's output: it rises at terminal count.
        while gate.read() & 0x20 == 0 {
            core::hint::spin_loop();
        }
        let hz = (rdtsc() - start) * CALIBRATION_HZ;
        TSC_HZ.store(hz, Ordering::Relaxed);
        hz
    }
}
