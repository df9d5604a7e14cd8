//! `traplab bench`: what the trace costs.
//!
//! The `cpuid-loop` guest makes 20,000 CPUID exits and times them with the TSC. We run it
//! with the trace off (the baseline, measured in the same run) and with the lossless ring
//! on, `--runs` times each, and report the medians: cycles per trap, traps per second, the
//! traced/untraced ratio, events per second through the ring, and the time from starting
//! QEMU to the first event. `--split-driver` measures the split block driver instead: reads
//! per second through the ring against direct reads by the controller's owner.

use crate::cli::BenchArgs;
use crate::setup;
use std::process::ExitCode;
use std::time::{Duration, Instant};
use traplab_abi::event::Body;
use traplab_tracer::qemu::{HvStatus, Machine, TraceMode};
use traplab_tracer::session::{Item, Options, Session};

const GUEST: &str = "cpuid-loop";
/// The split driver's benchmark guest (`--split-driver`).
const STREAM: &str = "blk-stream";

/// One run of the guest.
#[derive(Debug, Clone, Copy)]
struct Sample {
    exits: u64,
    ticks: u64,
    events: u64,
    first_event: Option<Duration>,
    wall: Duration,
    tsc_hz: Option<u64>,
}

pub fn run(args: &BenchArgs) -> Result<ExitCode, super::Failure> {
    if args.ui {
        return super::bench_ui::run(args);
    }
    setup::ensure_qemu(args.yes)?;
    if args.split_driver {
        return split_driver(args);
    }
    let runs = args.runs.max(1);
    let mut off = Vec::new();
    let mut ring = Vec::new();
    // A benchmark run that goes wrong is the hypervisor's or QEMU's failure, not a usage error.
    let failed = |message: String| super::Failure::new(super::status::HV_FAILED, message);
    let machine = traplab_labs::machine_for(&[GUEST]);
    for _ in 0..runs {
        off.push(sample(&machine, TraceMode::Off).map_err(failed)?);
        ring.push(sample(&machine, TraceMode::Ring).map_err(failed)?);
    }
    let tsc_hz = ring.iter().find_map(|sample| sample.tsc_hz).unwrap_or(1);
    let per_exit = |samples: &[Sample]| {
        median(
            samples
                .iter()
                .map(|s| s.ticks as f64 / s.exits as f64)
                .collect(),
        )
    };
    let off_ticks = per_exit(&off);
    let ring_ticks = per_exit(&ring);
    let seconds = |ticks: f64| ticks / tsc_hz as f64;
    let events_per_second = median(
        ring.iter()
            .map(|s| s.events as f64 / seconds(s.ticks as f64))
            .collect(),
    );
    let first_event = median(
        ring.iter()
            .filter_map(|s| s.first_event)
            .map(|d| d.as_secs_f64() * 1e3)
            .collect(),
    );
    let wall_off = median(off.iter().map(|s| s.wall.as_secs_f64()).collect());
    let wall_ring = median(ring.iter().map(|s| s.wall.as_secs_f64()).collect());

    if args.json {
        println!(
            "{}",
            serde_json::json!({
                "guest": GUEST,
                "exits": off[0].exits,
                "runs": runs,
                "tsc_hz": tsc_hz,
                "untraced": { "cycles_per_trap": off_ticks, "traps_per_second": 1.0 / seconds(off_ticks), "wall_seconds": wall_off },
                "traced": { "cycles_per_trap": ring_ticks, "traps_per_second": 1.0 / seconds(ring_ticks), "wall_seconds": wall_ring,
                            "events_per_second": events_per_second, "events_per_trap": ring[0].events as f64 / ring[0].exits as f64 },
                "traced_over_untraced_time": ring_ticks / off_ticks,
                "first_event_ms": first_event,
            })
        );
    } else {
        println!(
            "{GUEST}: {} CPUID exits per run, median of {runs} run(s), TSC {:.2} GHz",
            off[0].exits,
            tsc_hz as f64 / 1e9
        );
        println!("                    cycles/trap   µs/trap   traps/s   wall s");
        for (name, ticks, wall) in [
            ("trace off (baseline)", off_ticks, wall_off),
            ("trace on (ring)", ring_ticks, wall_ring),
        ] {
            println!(
                "{name:<20} {ticks:>11.0} {:>9.2} {:>9.0} {wall:>8.2}",
                seconds(ticks) * 1e6,
                1.0 / seconds(ticks)
            );
        }
        println!(
            "traced / untraced time per trap: {:.2}x",
            ring_ticks / off_ticks
        );
        println!(
            "ring: {:.0} events/s ({:.1} events per trap), none lost; first event {:.0} ms after starting QEMU",
            events_per_second,
            ring[0].events as f64 / ring[0].exits as f64,
            first_event
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn median(mut values: Vec<f64>) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    values.sort_by(|a, b| a.total_cmp(b));
    values[values.len() / 2]
}

/// The split block driver's throughput: `blk-stream` reads 256 pages straight from the
/// controller it owns (the baseline, no hypervisor on the data path), then through blkfront
/// and the driver domain's blkback (the `swap-in` lab's machine with `blk-stream` as d1),
/// with the trace off and on.
fn split_driver(args: &BenchArgs) -> Result<ExitCode, super::Failure> {
    let runs = args.runs.max(1);
    let failed = |message: String| super::Failure::new(super::status::HV_FAILED, message);
    let lab = traplab_labs::find("swap-in")
        .map_err(|error| error.to_string())?
        .ok_or("the swap-in lab is missing from the catalogue")?;
    let mut through_ring = lab.machine();
    through_ring.guests[0] = traplab_tracer::qemu::Guest {
        name: STREAM.into(),
        elf: traplab_labs::guest_elf(STREAM),
    };
    let mut direct = traplab_labs::machine_for(&[STREAM]);
    direct.disk = through_ring
        .disk
        .clone()
        .map(|disk| traplab_tracer::qemu::Disk {
            owner: traplab_tracer::qemu::FIRST_GUEST,
            ..disk
        });
    let (mut baseline, mut off, mut ring) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..runs {
        baseline.push(sample(&direct, TraceMode::Off).map_err(failed)?);
        off.push(sample(&through_ring, TraceMode::Off).map_err(failed)?);
        ring.push(sample(&through_ring, TraceMode::Ring).map_err(failed)?);
    }
    let tsc_hz = ring.iter().find_map(|sample| sample.tsc_hz).unwrap_or(1) as f64;
    let per_read = |samples: &[Sample]| {
        median(
            samples
                .iter()
                .map(|s| s.ticks as f64 / s.exits as f64 / tsc_hz * 1e6)
                .collect(),
        )
    };
    let (direct_us, off_us, ring_us) = (per_read(&baseline), per_read(&off), per_read(&ring));
    let reads = baseline[0].exits;
    if args.json {
        println!(
            "{}",
            serde_json::json!({
                "guest": STREAM,
                "reads": reads,
                "sectors_per_read": traplab_abi::blkif::SECTORS_PER_PAGE,
                "runs": runs,
                "tsc_hz": tsc_hz,
                "direct": { "us_per_read": direct_us, "reads_per_second": 1e6 / direct_us },
                "ring_untraced": { "us_per_read": off_us, "reads_per_second": 1e6 / off_us },
                "ring_traced": { "us_per_read": ring_us, "reads_per_second": 1e6 / ring_us },
                "ring_over_direct": off_us / direct_us,
                "traced_over_untraced": ring_us / off_us,
            })
        );
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{STREAM}: {reads} reads of 4 KiB per run, median of {runs} run(s), TSC {:.2} GHz",
        tsc_hz / 1e9
    );
    println!("                                  µs/read    reads/s");
    for (name, us) in [
        ("direct, by the owner (baseline)", direct_us),
        ("through the ring, trace off", off_us),
        ("through the ring, trace on", ring_us),
    ] {
        println!("{name:<32} {us:>9.1} {:>10.0}", 1e6 / us);
    }
    println!(
        "the split driver costs {:.2}x a direct read; tracing it {:.2}x",
        off_us / direct_us,
        ring_us / off_us
    );
    Ok(ExitCode::SUCCESS)
}

fn sample(machine: &Machine, trace: TraceMode) -> Result<Sample, String> {
    let mut machine = machine.clone();
    machine.trace = trace;
    let started = Instant::now();
    let options = Options {
        timeout: Some(Duration::from_secs(600)),
        ..Options::default()
    };
    let session = Session::start(&machine, options).map_err(|error| error.to_string())?;
    let mut result: Option<(u64, u64)> = None;
    let (mut events, mut first_event, mut tsc_hz) = (0u64, None, None);
    let mut finish = None;
    for item in session {
        let line = match item {
            Item::Event(event) => {
                events += 1;
                first_event.get_or_insert_with(|| started.elapsed());
                match event.body {
                    Body::Boot(boot) => tsc_hz = Some(boot.tsc_hz),
                    Body::Lost(lost) => return Err(format!("the ring lost {} events", lost.count)),
                    Body::Console(console) => result = result.or(parse(&console.text)),
                    _ => {}
                }
                continue;
            }
            // With the trace off, the console goes to the hypervisor's log.
            Item::Log(line) => line,
            Item::Broken(message) => return Err(message),
            Item::Finished(done) => {
                finish = Some(done);
                continue;
            }
        };
        result = result.or(line.split_once("| ").and_then(|(_, text)| parse(text)));
    }
    let wall = started.elapsed();
    match finish {
        Some(done) if done.hv_status == Some(HvStatus::Done) => {}
        other => return Err(format!("the benchmark guest did not finish: {other:?}")),
    }
    let (exits, ticks) = result.ok_or("the benchmark guest printed no result")?;
    Ok(Sample {
        exits,
        ticks,
        events,
        first_event,
        wall,
        tsc_hz,
    })
}

/// A benchmark guest's result: `20000 CPUID exits in 1212679676 TSC ticks: …` or `256
/// reads of 8 sectors in 50213344 TSC ticks`: the count first, the ticks after `in`.
fn parse(text: &str) -> Option<(u64, u64)> {
    let mut words = text.split_whitespace();
    let count = words.next()?.parse().ok()?;
    words.by_ref().find(|word| *word == "in")?;
    let ticks = words.next()?.parse().ok()?;
    text.contains("TSC ticks").then_some((count, ticks))
}

#[cfg(test)]
mod tests {
    use super::parse;

    #[test]
    fn both_benchmark_guests_results_parse_and_other_lines_do_not() {
        assert_eq!(
            parse("20000 CPUID exits in 1212679676 TSC ticks: 60633 ticks per exit"),
            Some((20000, 1212679676))
        );
        assert_eq!(
            parse("256 reads of 8 sectors in 50213344 TSC ticks"),
            Some((256, 50213344))
        );
        assert_eq!(
            parse("blkback: d2 serves d1's disk 51712 (2048 sectors)"),
            None
        );
        assert_eq!(parse("1 thing in 2 places"), None);
    }
}
