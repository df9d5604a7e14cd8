//! Time: the TSC, calibrated once against the PIT, and the time of day, read once from the
//! PC's real-time clock.
//!
//! Every event carries a TSC stamp. To turn ticks into seconds the host needs the TSC
//! frequency; we measure it by letting PIT channel 2 (a fixed 1.193182 MHz clock) count
//! down and reading the TSC before and after, the classic method (Linux
//! `arch/x86/kernel/tsc.c`). Under QEMU's TCG the guest TSC follows the host clock, so the
//! figure is the host's real time base. A busy host can stall QEMU right at the end of a
//! measurement and inflate it, so we take several short ones, each bracketing its edges
//! with TSC reads, and the library chooses (`traplab_hv::calibration`, tested on the host).

use core::sync::atomic::{AtomicU64, Ordering};
use traplab_hv::calibration::{self, PIT_HZ, Sample};
use traplab_hv::device::rtc;
use traplab_hv::machine::WallTime;
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

/// The time of day when [`read_wall_clock`] read the RTC (seconds since 1970, UTC), and
/// the TSC then.
static WALL_AT_READ: AtomicU64 = AtomicU64::new(0);
static TSC_AT_READ: AtomicU64 = AtomicU64::new(0);

/// The time of day now: the RTC's time at boot, moved on by the TSC. (Its seconds turn
/// over on the TSC's count from that reading, not on the real RTC's edges: the guests' RTCs
/// follow this clock, update cycles included.)
pub fn wall_clock() -> WallTime {
    let hz = tsc_hz().max(1);
    let ticks = rdtsc().saturating_sub(TSC_AT_READ.load(Ordering::Relaxed));
    WallTime {
        seconds: WALL_AT_READ.load(Ordering::Relaxed) + ticks / hz,
        nanos: ((ticks % hz) as u128 * 1_000_000_000 / hz as u128) as u32,
    }
}

/// Read the PC's real-time clock (an MC146818 at ports 0x70/0x71, which QEMU sets to the
/// host's UTC time) once: the guests' emulated RTCs show this time, moved on by the TSC.
/// The registers change once a second: wait until no update is in progress (status A bit
/// 7), and read until two readings agree. Call after [`calibrate_tsc`].
pub fn read_wall_clock() {
    let mut previous = None;
    for _ in 0..8 {
        let reading = read_rtc_once();
        if previous == Some(reading) {
            break;
        }
        previous = Some(reading);
    }
    if let Some(time) = previous {
        WALL_AT_READ.store(time.seconds(), Ordering::Relaxed);
        TSC_AT_READ.store(rdtsc(), Ordering::Relaxed);
    }
}

fn read_rtc_once() -> rtc::Time {
    let mut index = Port::<u8>::new(0x70);
    let mut data = Port::<u8>::new(0x71);
    let mut register = |number: u8| {
        // SAFETY: ports 0x70/0x71 are the PC's RTC; nothing else in the hypervisor uses them,
        // and reading its registers has no side effect (status C, which does, is not read).
        unsafe {
            index.write(number);
            data.read()
        }
    };
    // An update takes under 2 ms after UIP rises (the MC146818's datasheet: UIP is set 244 µs
    // before it, the update itself takes under 2 ms). Wait at most 10 ms, on the TSC: a bound
    // in reads, once a million, waited for seconds when QEMU's RTC kept UIP latched until its
    // update timer ran, which its main loop did late under valgrind (10 G of QEMU's
    // instructions in one boot, measured with tools/qemu-cost.sh). The readings are compared
    // until two agree (`read_wall_clock`), so one taken during an update is not kept.
    let deadline = rdtsc().saturating_add(tsc_hz() / 100);
    while register(0x0a) & 0x80 != 0 && rdtsc() < deadline {}
    let status_b = register(0x0b);
    let decode = |value: u8| rtc::decode(status_b, value);
    let hour = rtc::decode_hour(status_b, register(0x04));
    // Register 0x32 holds the century on a PC (and on QEMU); trust it only if it is sane.
    let century = match decode(register(0x32)) {
        century @ 19..=99 => century as u32,
        _ => 20,
    };
    rtc::Time {
        year: century * 100 + decode(register(0x09)) as u32,
        month: decode(register(0x08)).clamp(1, 12),
        day: decode(register(0x07)).clamp(1, 31),
        // Not read: the day of the week follows from the date, and `seconds` ignores it.
        weekday: 1,
        hour,
        minute: decode(register(0x02)).min(59),
        second: decode(register(0x00)).min(59),
    }
}

/// How many measurements, and how long each: 7 of 5 ms, 35 ms at boot.
const SAMPLES: usize = 7;
const SAMPLE_HZ: u64 = 200;

/// What to assume if no measurement gave a rate (it cannot happen: the TSC always moves).
const FALLBACK_HZ: u64 = 1_000_000_000;

/// Take `hz` as the TSC's rate: measured ([`calibrate_tsc`]), or given by the host
/// (`opt/traplab/tsc-hz`). Given, it skips the calibration, which polls the PIT for 35 ms of
/// the host's time: how much work that is depends on how fast the host runs QEMU (under
/// valgrind, a different number of polls every boot).
pub fn set_tsc_hz(hz: u64) -> u64 {
    TSC_HZ.store(hz, Ordering::Relaxed);
    hz
}

/// Measure TSC ticks per second.
pub fn calibrate_tsc() -> u64 {
    let samples: [Sample; SAMPLES] = core::array::from_fn(|_| measure(PIT_HZ / SAMPLE_HZ));
    set_tsc_hz(calibration::estimate(&samples).unwrap_or(FALLBACK_HZ))
}

/// One measurement: PIT channel 2 counts `count` ticks down; the TSC is read around the
/// write that starts it and around each read of its output, and the last two reads (still
/// running, then over) bracket its end.
fn measure(count: u64) -> Sample {
    let mut gate = Port::<u8>::new(0x61);
    let mut command = Port::<u8>::new(0x43);
    let mut channel2 = Port::<u8>::new(0x42);
    // SAFETY: ports 0x42/0x43/0x61 are the PC's PIT channel 2 and its gate; nothing else
    // in the hypervisor uses them.
    unsafe {
        // Gate channel 2 on, speaker off.
        let value = gate.read();
        gate.write((value & !0x02) | 0x01);
        // Channel 2, low byte then high byte, mode 0 (interrupt on terminal count), binary:
        // the output goes low now and rises at terminal count; writing the high byte of the
        // count starts it.
        command.write(0xb0);
        channel2.write(count as u8);
        let before = rdtsc();
        channel2.write((count >> 8) as u8);
        let after = rdtsc();
        let mut running_at = after;
        loop {
            let read_at = rdtsc();
            // Bit 5 of port 0x61 is channel 2's output.
            let over = gate.read() & 0x20 != 0;
            if over {
                return Sample::from_edges(count, (before, after), (running_at, rdtsc()));
            }
            running_at = read_at;
            core::hint::spin_loop();
        }
    }
}
