//! The trace's clock: the TSC less the time the hypervisor sat stopped.
//!
//! A stop is nobody's work. The host stops the hypervisor at a break or between steps
//! (`control.rs`), gdb holds it while it reads the guest (`gdb/`); either may last
//! minutes. The time a stop lasts is counted here, and the trace leaves it out: events are
//! stamped with [`trace_clock`] (`trace.rs`) and a trap's `cycles` are counted on it
//! (`run.rs`). So a #PF stepped event by event costs the hypervisor what it costs
//! unstopped, and a pair of `schedule` events around a stop does not count it as time a
//! domain was away either. The guests' own time (their TSC, their timers) is the real one.

use crate::time::rdtsc;
use core::sync::atomic::{AtomicU64, Ordering};

/// TSC ticks the hypervisor has sat stopped, for the host or for gdb, since boot.
static STOPPED_TICKS: AtomicU64 = AtomicU64::new(0);
/// The TSC when the stop under way began; 0 while running.
static STOPPED_SINCE: AtomicU64 = AtomicU64::new(0);
/// How many stops are under way: gdb may be answered, and stop its guest, while the host
/// holds the hypervisor stopped (`control::hold`). Only the outermost stop is timed.
static STOPS_UNDER_WAY: AtomicU64 = AtomicU64::new(0);

/// TSC ticks spent stopped so far (the stop under way not included).
pub fn stopped_ticks() -> u64 {
    STOPPED_TICKS.load(Ordering::Relaxed)
}

/// The trace's clock: the TSC less the time the hypervisor sat stopped.
pub fn trace_clock() -> u64 {
    rdtsc() - stopped_ticks()
}

/// A stop begins (the host's, or gdb's).
pub fn begin_stop() {
    if STOPS_UNDER_WAY.fetch_add(1, Ordering::Relaxed) == 0 {
        STOPPED_SINCE.store(rdtsc(), Ordering::Relaxed);
    }
}

/// The stop under way ends: count it.
pub fn end_stop() {
    let outermost = STOPS_UNDER_WAY.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |depth| {
        depth.checked_sub(1)
    }) == Ok(1);
    if !outermost {
        return;
    }
    let since = STOPPED_SINCE.swap(0, Ordering::Relaxed);
    if since != 0 {
        STOPPED_TICKS.fetch_add(rdtsc() - since, Ordering::Relaxed);
        // The hypervisor's timer ticked on while we were stopped, and its interrupt waits
        // in the PIC: taken at the next VMRUN it would exit the guest at once (an INTR
        // exit that is only an echo of the stop). Take it here instead, as a tick of ours.
        crate::timer::take_pending();
    }
}
