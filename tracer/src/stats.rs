//! Statistics per exit reason, like `perf kvm stat`: how many exits, their share, and the
//! hypervisor's time per exit (min, average, median, 95th percentile, max).
//!
//! The time of one exit is the `cycles` of its `resume`: the TSC ticks the hypervisor
//! measured from the #VMEXIT to the VMRUN, less the time its domain was switched out while
//! other domains ran ([`Flow::cycles`]). Flows that never resumed (the domain ended in
//! them, the trace was cut) count as exits but have no time. Flows without an exit (an
//! upcall delivered when a domain is switched in) are no exits: they are counted apart.
//!
//! [`compute`] counts the exits of all domains, or of the flows given; [`per_domain`] makes
//! one table per domain.

use crate::flows::Flow;
use std::collections::HashMap;
use std::fmt::Write;
use traplab_abi::exit::ExitReason;

/// One exit reason.
#[derive(Debug, Clone, PartialEq)]
pub struct ReasonStats {
    /// `EXCP_PF`, `IOIO`, …
    pub reason: &'static str,
    /// `#PF`, `IOIO`, …
    pub class: &'static str,
    pub count: u64,
    /// Of all exits, 0.0–1.0.
    pub share: f64,
    /// Of all the hypervisor's time, 0.0–1.0.
    pub time_share: f64,
    /// Cycles; `None` when no exit of this reason resumed.
    pub min: Option<u64>,
    pub avg: Option<f64>,
    pub p50: Option<u64>,
    pub p95: Option<u64>,
    pub max: Option<u64>,
    pub total_cycles: u64,
}

/// The whole table.
#[derive(Debug, Clone, PartialEq)]
pub struct Stats {
    /// Most frequent first.
    pub rows: Vec<ReasonStats>,
    pub exits: u64,
    /// Flows without an exit (upcalls, starts): not in the rows.
    pub without_exit: u64,
    pub total_cycles: u64,
    /// TSC ticks per second, to show times in µs (`None`: show cycles).
    pub tsc_hz: Option<u64>,
}

/// The value at percentile `percent` of sorted `values` (nearest rank).
fn percentile(sorted: &[u64], percent: f64) -> Option<u64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((percent / 100.0) * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

/// The statistics of `flows`.
pub fn compute(flows: &[Flow], tsc_hz: Option<u64>) -> Stats {
    compute_where(flows, tsc_hz, |_| true)
}

/// One table per domain, in domain order: `(dom, its statistics)`.
pub fn per_domain(flows: &[Flow], tsc_hz: Option<u64>) -> Vec<(u16, Stats)> {
    let mut domains: Vec<u16> = flows.iter().map(|flow| flow.dom).collect();
    domains.sort_unstable();
    domains.dedup();
    domains
        .into_iter()
        .map(|dom| (dom, compute_where(flows, tsc_hz, |flow| flow.dom == dom)))
        .collect()
}

/// The statistics of the flows that pass `keep` (without copying them).
fn compute_where(flows: &[Flow], tsc_hz: Option<u64>, keep: impl Fn(&Flow) -> bool) -> Stats {
    let mut by_reason: HashMap<u32, (u64, Vec<u64>)> = HashMap::new();
    let mut without_exit = 0;
    for flow in flows.iter().filter(|flow| keep(flow)) {
        if !flow.has_exit() {
            without_exit += 1;
            continue;
        }
        let entry = by_reason.entry(flow.exitcode).or_default();
        entry.0 += 1;
        if let Some(cycles) = flow.cycles() {
            entry.1.push(cycles);
        }
    }
    let exits: u64 = by_reason.values().map(|(count, _)| count).sum();
    // Sums that saturate: each `cycles` is a measured time (a recording's line may still say
    // anything below u64::MAX), and a sum past 2^64 must not wrap to a small number, nor panic.
    let total_cycles = by_reason
        .values()
        .flat_map(|(_, cycles)| cycles.iter())
        .fold(0u64, |sum, &cycles| sum.saturating_add(cycles));
    let mut rows: Vec<ReasonStats> = by_reason
        .into_iter()
        .map(|(exitcode, (count, mut cycles))| {
            cycles.sort_unstable();
            let sum = cycles
                .iter()
                .fold(0u64, |sum, &cycles| sum.saturating_add(cycles));
            // Counted by code alone: the name and the class need no EXITINFO.
            let reason = ExitReason::from_code(exitcode as u64);
            ReasonStats {
                reason: reason.name(),
                class: reason.class(),
                count,
                share: count as f64 / exits.max(1) as f64,
                time_share: sum as f64 / total_cycles.max(1) as f64,
                min: cycles.first().copied(),
                avg: (!cycles.is_empty()).then(|| sum as f64 / cycles.len() as f64),
                p50: percentile(&cycles, 50.0),
                p95: percentile(&cycles, 95.0),
                max: cycles.last().copied(),
                total_cycles: sum,
            }
        })
        .collect();
    rows.sort_by(|a, b| b.count.cmp(&a.count).then(a.reason.cmp(b.reason)));
    Stats {
        rows,
        exits,
        without_exit,
        total_cycles,
        tsc_hz,
    }
}

impl Stats {
    /// A time in the table's unit: µs with the TSC rate, else cycles.
    pub fn time(&self, cycles: Option<f64>) -> String {
        match (cycles, self.tsc_hz) {
            (None, _) => "-".into(),
            (Some(cycles), Some(hz)) if hz > 0 => format!("{:.2}", cycles * 1e6 / hz as f64),
            (Some(cycles), _) => format!("{cycles:.0}"),
        }
    }

    pub fn unit(&self) -> &'static str {
        if self.tsc_hz.is_some_and(|hz| hz > 0) {
            "µs"
        } else {
            "cycles"
        }
    }

    /// The header and rows as text columns (shared by `traplab stats` and the TUI).
    pub fn table(&self) -> Vec<[String; 10]> {
        let unit = self.unit();
        let mut table = vec![[
            "exit reason".to_string(),
            "class".into(),
            "count".into(),
            "count%".into(),
            "time%".into(),
            format!("min {unit}"),
            format!("avg {unit}"),
            format!("p50 {unit}"),
            format!("p95 {unit}"),
            format!("max {unit}"),
        ]];
        for row in &self.rows {
            let time = |cycles: Option<u64>| self.time(cycles.map(|cycles| cycles as f64));
            table.push([
                row.reason.to_string(),
                row.class.to_string(),
                row.count.to_string(),
                format!("{:.2}%", row.share * 100.0),
                format!("{:.2}%", row.time_share * 100.0),
                time(row.min),
                self.time(row.avg),
                time(row.p50),
                time(row.p95),
                time(row.max),
            ]);
        }
        table
    }

    /// The table as text, columns aligned, with a total line.
    pub fn render(&self) -> String {
        let table = self.table();
        let mut widths = [0usize; 10];
        for row in &table {
            for (width, cell) in widths.iter_mut().zip(row) {
                *width = (*width).max(cell.chars().count());
            }
        }
        let mut text = String::new();
        for row in &table {
            for (column, (cell, width)) in row.iter().zip(widths).enumerate() {
                // The names read left to right; the numbers line up on the right.
                if column < 2 {
                    let _ = write!(text, "{cell:<width$}  ");
                } else {
                    let _ = write!(text, "{cell:>width$}  ");
                }
            }
            text.truncate(text.trim_end().len());
            text.push('\n');
        }
        let _ = writeln!(
            text,
            "\nTotal: {} exits, {} {} in the hypervisor{}",
            self.exits,
            self.time(Some(self.total_cycles as f64)),
            self.unit(),
            match self.tsc_hz {
                Some(hz) => format!(" (TSC {:.2} GHz)", hz as f64 / 1e9),
                None => String::new(),
            }
        );
        if self.without_exit > 0 {
            let _ = writeln!(
                text,
                "and {} flow(s) without an exit (an upcall or a start when a domain was switched in)",
                self.without_exit
            );
        }
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flows::{FlowEnd, NO_CYCLES, NO_EVENT, NO_FLOW, Opening};
    use traplab_abi::event::ScheduleWhy;

    fn flow(exitcode: u32, cycles: u64) -> Flow {
        Flow {
            first: 0,
            len: 1,
            away: NO_EVENT,
            back: NO_EVENT,
            tsc: 0,
            rip: 0,
            cycles,
            exitcode,
            opening: Opening::Exit,
            returned_by: NO_FLOW,
            returns_from: NO_FLOW,
            woke: NO_FLOW,
            woken_by: NO_FLOW,
            dom: 1,
            first_action: None,
            last_action: None,
            delivered: None,
            end: FlowEnd::Resumed,
        }
    }

    #[test]
    fn times_that_add_up_past_2_to_the_64_saturate_instead_of_wrapping() {
        // Two resumes of 2^63 cycles each (a recording may say so): the total is the most a
        // u64 holds, not 0, and nothing panics.
        let flows = [flow(0x7b, 1 << 63), flow(0x7b, 1 << 63)];
        let stats = compute(&flows, None);
        assert_eq!(stats.total_cycles, u64::MAX);
        assert_eq!(stats.rows[0].total_cycles, u64::MAX);
        assert!(stats.rows[0].avg.is_some_and(|avg| avg > 0.0));
    }

    #[test]
    fn one_table_per_domain_and_upcalls_apart() {
        let mut flows = vec![flow(0x7b, 10), flow(0x7b, 30), flow(0x81, 5)];
        flows[2].dom = 2;
        let mut upcall = flow(0, 7);
        upcall.dom = 2;
        upcall.opening = Opening::Switch(ScheduleWhy::Woken);
        flows.push(upcall);
        let all = compute(&flows, None);
        assert_eq!((all.exits, all.without_exit, all.total_cycles), (3, 1, 45));
        assert!(all.render().contains("and 1 flow(s) without an exit"));
        let domains = per_domain(&flows, None);
        let summary: Vec<(u16, u64, u64)> = domains
            .iter()
            .map(|(dom, stats)| (*dom, stats.exits, stats.without_exit))
            .collect();
        assert_eq!(summary, [(1, 2, 0), (2, 1, 1)]);
        assert_eq!(domains[1].1.rows[0].reason, "VMMCALL");
        assert_eq!(domains[0].1.rows[0].avg, Some(20.0));
    }

    #[test]
    fn percentiles_shares_and_units() {
        let mut flows: Vec<Flow> = (1..=100).map(|cycles| flow(0x7b, cycles * 1000)).collect();
        flows.push(flow(0x4e, 500_000));
        flows.push(flow(0x4e, NO_CYCLES));
        let stats = compute(&flows, Some(1_000_000_000));
        assert_eq!(stats.exits, 102);
        let ioio = &stats.rows[0];
        assert_eq!(
            (ioio.reason, ioio.count, ioio.min, ioio.max),
            ("IOIO", 100, Some(1000), Some(100_000))
        );
        assert_eq!((ioio.p50, ioio.p95), (Some(50_000), Some(95_000)));
        assert_eq!(ioio.avg, Some(50_500.0));
        let pf = &stats.rows[1];
        assert_eq!(
            (pf.class, pf.count, pf.min, pf.p95),
            ("#PF", 2, Some(500_000), Some(500_000))
        );
        assert!((pf.share - 2.0 / 102.0).abs() < 1e-9);
        assert!((pf.time_share + ioio.time_share - 1.0).abs() < 1e-9);
        let text = stats.render();
        assert!(text.starts_with("exit reason  class  count  count%   time%  min µs  avg µs  p50 µs  p95 µs  max µs\n"), "{text}");
        assert!(text.contains("IOIO         IOIO     100  98.04%  90.99%    1.00   50.50   50.00   95.00  100.00\n"), "{text}");
        assert_eq!(compute(&flows, None).unit(), "cycles");
    }
}
