//! The TSC rate, chosen from several measurements against the PIT.
//!
//! The hypervisor stamps every event with the TSC, and the host turns ticks into time with
//! the rate measured at boot (`time.rs`, the program's half). One measurement lets PIT
//! channel 2 (a fixed 1.193182 MHz clock) count down and reads the TSC when it starts and
//! when it ends. Both clocks run on while the machine is busy elsewhere (under QEMU's TCG
//! both follow the host's clock), so a pause in the *middle* costs nothing; a pause at an
//! *edge* — between the PIT's terminal count and the read that notices it — stretches the
//! TSC side alone. That is how one boot on a loaded machine measured 6.86 GHz where the
//! host runs at 2.5–2.9.
//!
//! So each measurement brackets both edges: the TSC just before and after the write that
//! starts the count, and just before the last read that saw the count still running and
//! after the read that saw it end. The width of the two brackets is how far off the
//! measurement can be (its uncertainty). The choice here is the pure part, tested on the
//! host: keep the measurements known to within 1 %, take the median of their rates (the
//! method of Linux's `quick_pit_calibrate`, which also trusts only a PIT edge it read
//! quickly); when none is that good, the one with the least uncertainty.

use alloc::vec::Vec;

/// The PIT's input clock, Hz.
pub const PIT_HZ: u64 = 1_193_182;

/// A measurement is trusted when its uncertainty is at most 1/`PRECISION` of its length.
const PRECISION: u64 = 100;

/// One measurement: `tsc_ticks` TSC ticks across `pit_ticks` ticks of the PIT, known to
/// within `uncertainty` TSC ticks (the time the reads around its two edges took).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sample {
    pub pit_ticks: u64,
    pub tsc_ticks: u64,
    pub uncertainty: u64,
}

impl Sample {
    /// From the TSC read around each edge: just before and after the start of the count,
    /// and `end` just before the last read that saw it running and just after the read
    /// that saw it over. The measurement runs from the middle of one bracket to the middle
    /// of the other.
    pub fn from_edges(pit_ticks: u64, start: (u64, u64), end: (u64, u64)) -> Sample {
        let middle = |(before, after): (u64, u64)| before / 2 + after / 2 + (before & after & 1);
        Sample {
            pit_ticks,
            tsc_ticks: middle(end).saturating_sub(middle(start)),
            uncertainty: start.1.saturating_sub(start.0) + end.1.saturating_sub(end.0),
        }
    }

    /// TSC ticks per second by this measurement (`None` for an empty one).
    pub fn hz(&self) -> Option<u64> {
        if self.pit_ticks == 0 || self.tsc_ticks == 0 {
            return None;
        }
        u64::try_from(self.tsc_ticks as u128 * PIT_HZ as u128 / self.pit_ticks as u128).ok()
    }

    fn trusted(&self) -> bool {
        self.uncertainty.saturating_mul(PRECISION) <= self.tsc_ticks
    }
}

/// The TSC rate the measurements give: the median of the trusted ones (the upper of the
/// two middle ones for an even count), or, when none is trusted, the one with the least
/// uncertainty. `None` when no measurement gives a rate.
pub fn estimate(samples: &[Sample]) -> Option<u64> {
    let mut trusted: Vec<u64> = samples
        .iter()
        .filter(|sample| sample.trusted())
        .filter_map(Sample::hz)
        .collect();
    if trusted.is_empty() {
        return samples
            .iter()
            .filter(|sample| sample.hz().is_some())
            .min_by_key(|sample| sample.uncertainty)
            .and_then(Sample::hz);
    }
    trusted.sort_unstable();
    Some(trusted[trusted.len() / 2])
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 5 ms of the PIT.
    const PIT_TICKS: u64 = PIT_HZ / 200;

    /// A measurement of an `mhz` TSC, `late` TSC ticks long at its end (the read that saw
    /// the terminal count came that late), with brackets of `width` ticks.
    fn sample(mhz: u64, late: u64, width: u64) -> Sample {
        let ticks = mhz * 1_000_000 * PIT_TICKS / PIT_HZ;
        Sample::from_edges(
            PIT_TICKS,
            (1_000, 1_000 + width),
            (1_000 + ticks, 1_000 + ticks + width + late),
        )
    }

    #[test]
    fn a_measurement_runs_between_the_middles_of_its_brackets() {
        let sample = Sample::from_edges(10, (100, 110), (1_100, 1_130));
        assert_eq!(sample.tsc_ticks, 1_115 - 105);
        assert_eq!(sample.uncertainty, 40);
        assert_eq!(Sample::from_edges(1, (7, 9), (11, 13)).tsc_ticks, 4);
    }

    #[test]
    fn the_rate_is_ticks_per_second_of_the_pit() {
        let rate = |pit_ticks, tsc_ticks| {
            Sample {
                pit_ticks,
                tsc_ticks,
                uncertainty: 0,
            }
            .hz()
        };
        assert_eq!(rate(PIT_HZ, 2_500_000_000), Some(2_500_000_000));
        assert_eq!(rate(PIT_HZ / 2, 1_250_000_000), Some(2_500_000_000));
        // 10 ms is 11,931 PIT ticks, not quite 11,931.82.
        assert_eq!(rate(11_931, 25_000_000), Some(2_500_171_821));
    }

    #[test]
    fn a_measurement_stretched_at_its_end_is_not_trusted_and_does_not_count() {
        // The boot that measured 6.86 GHz: one read came 16 ms late after the terminal
        // count. Its bracket shows it; the median of the others is the host's 2.7 GHz.
        let samples = [
            sample(2_700, 0, 200),
            sample(2_700, 43_000_000, 200),
            sample(2_701, 0, 300),
            sample(2_699, 0, 250),
            sample(2_700, 0, 200),
        ];
        assert!(!samples[1].trusted());
        let hz = estimate(&samples).expect("a rate");
        assert!((2_699_000_000..=2_701_000_000).contains(&hz), "{hz}");
    }

    #[test]
    fn the_median_ignores_a_trusted_outlier_on_either_side() {
        // An outlier within its own 1 %: still one against four.
        let samples = [
            sample(2_700, 0, 100),
            sample(2_760, 0, 100),
            sample(2_700, 0, 100),
            sample(2_640, 0, 100),
            sample(2_700, 0, 100),
        ];
        let hz = estimate(&samples).expect("a rate");
        assert!((2_699_000_000..=2_701_000_000).contains(&hz), "{hz}");
    }

    #[test]
    fn with_no_trusted_measurement_the_least_uncertain_one_is_taken() {
        let samples = [
            sample(6_860, 43_000_000, 200),
            sample(2_900, 200_000, 200),
            sample(3_500, 3_000_000, 200),
        ];
        assert!(samples.iter().all(|sample| !sample.trusted()));
        let hz = estimate(&samples).expect("a rate");
        assert_eq!(Some(hz), samples[1].hz());
    }

    #[test]
    fn no_measurement_no_rate() {
        assert_eq!(estimate(&[]), None);
        let empty = Sample {
            pit_ticks: 0,
            tsc_ticks: 0,
            uncertainty: 0,
        };
        assert_eq!(estimate(&[empty]), None);
    }
}
