//! `traplab bench`: what a trap costs, and how far that is from the limit.
//!
//! The `cpuid-loop` guest makes 20,000 CPUID exits and times them with the TSC. We run it
//! three ways, in the same run: the bare world switch (hypervisor setting `bench-bare`: the
//! run loop answers CPUID and nothing else — the least a hypervisor can do, the baseline),
//! traplab with the trace off, and with the lossless ring on; in `--runs` rounds, each of
//! which runs the three back to back (the load of the moment weighs on a round's three
//! alike), and report the medians: µs per trap, traps per second, the ratios (the median
//! of the rounds' ratios), events per second and bytes per event through the ring, and the
//! time from starting QEMU to the first event.
//! Under TCG each configuration also runs once under `-icount shift=0,sleep=off`, where
//! the TSC counts executed instructions: instructions per trap, the same on a loaded
//! machine as on an idle one. `--split-driver` measures the split block driver instead:
//! reads per second through the ring against direct reads by the controller's owner.

use crate::cli::BenchArgs;
use crate::setup;
use std::process::ExitCode;
use std::time::{Duration, Instant};
use traplab_abi::event::{Body, DomainState};
use traplab_tracer::qemu::{Accel, HvStatus, Machine, TraceMode};
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
    /// The bytes the events took in the ring (records with their headers).
    ring_bytes: u64,
    first_event: Option<Duration>,
    tsc_hz: Option<u64>,
}

pub fn run(args: &BenchArgs) -> Result<ExitCode, super::Failure> {
    if args.ui {
        // The terminal UI alone, on a generated recording: nothing to build.
        return super::bench_ui::run(args);
    }
    // An accelerator the host lacks is said before any build.
    let accel = super::accelerator(args.accel, &[])?;
    super::bring_up_to_date(super::OlderBuild::Run)?;
    setup::ensure_qemu(args.yes)?;
    if args.split_driver {
        return split_driver(args, accel);
    }
    if args.linux {
        let lab = traplab_labs::lab("linux-boot")?;
        setup::ensure_lab_kernel(&lab, args.yes)?;
        let boot = KernelBoot {
            name: "linux-boot".into(),
            machine: lab.machine()?,
            until: LINUX_MARKER.into(),
            what: "to /init's marker".into(),
        };
        return kernel_boot(args, accel, boot);
    }
    if let (Some(image), Some(until)) = (&args.kernel, &args.until) {
        let kernel = crate::cli::KernelArgs {
            kernel: Some(image.clone()),
            initrd: args.initrd.clone(),
            append: args.append.clone(),
            memory: args.memory,
            input: None,
        };
        let (name, machine) = super::machine(&None, &None, &kernel, &[], args.yes)?;
        let boot = KernelBoot {
            name,
            machine,
            what: format!("to {until:?}"),
            until: until.clone(),
        };
        return kernel_boot(args, accel, boot);
    }
    let runs = args.runs.max(1);
    // A benchmark run that goes wrong is the hypervisor's or QEMU's failure, not a usage error.
    let failed = |message: String| super::Failure::new(super::status::HV_FAILED, message);
    let mut machine = traplab_labs::machine_for(&[GUEST]);
    machine.accel = accel;
    // The guest's TSC is the host's (TCG reads it for RDTSC; KVM passes it through): its rate,
    // measured here once, is given to every timed run, where the hypervisor's own
    // calibration against the emulated PIT moves with the host's load (15% off in one run).
    let host_hz = host_tsc_hz();
    let timed = |machine: Machine| match host_hz {
        Some(hz) => with_tsc_hz(machine, hz),
        None => machine,
    };
    // In rounds: each round runs the three configurations back to back, so that the load of
    // the moment (this machine is shared) weighs on the three of a round alike; a ratio is
    // the median of the rounds' ratios.
    let mut measured: Vec<Measured> = CONFIGS
        .iter()
        .map(|&config| Measured {
            config,
            samples: Vec::new(),
            instructions: None,
        })
        .collect();
    // This machine is a VM on a shared host: what that host gives to others while we wait
    // for it shows in /proc/stat as "steal", and moves every wall-clock figure below.
    let before = CpuTimes::now();
    let load_before = load_average();
    for _ in 0..runs {
        for configuration in &mut measured {
            let machine = timed(configuration.config.machine(&machine));
            configuration
                .samples
                .push(sample(&machine).map_err(failed)?);
        }
    }
    let steal = before
        .zip(CpuTimes::now())
        .and_then(|(before, after)| before.steal_percent(after));
    let load_after = load_average();
    // -icount is TCG's: under KVM there is no instruction count.
    if accel == Accel::Tcg {
        for configuration in &mut measured {
            let machine = counting_instructions(&configuration.config.machine(&machine));
            configuration.instructions = Some(sample(&machine).map_err(failed)?);
        }
    }
    let reader = reader_throughput(READER_EVENTS).map_err(failed)?;
    let conditions = Conditions {
        machine: this_machine(),
        tsc_from_host: host_hz.is_some(),
        steal_percent: steal,
        load_average: load_before.zip(load_after),
    };
    let report = Report::new(&measured, runs, accel, reader, conditions);
    if args.json {
        println!("{}", report.json());
    } else {
        print!("{}", report.text());
    }
    Ok(ExitCode::SUCCESS)
}

/// One configuration of the hypervisor that `bench` measures.
#[derive(Debug, Clone, Copy)]
struct Config {
    /// How the report names it.
    name: &'static str,
    /// The JSON key.
    key: &'static str,
    /// A hypervisor setting it needs.
    setting: Option<&'static str>,
    trace: TraceMode,
}

/// The baseline first: the least a hypervisor does per trap (the run loop answers CPUID
/// and goes back, `hv/src/bench_bare.rs`); then traplab's exit path untraced; then traced.
const CONFIGS: [Config; 3] = [
    Config {
        name: "bare world switch (baseline)",
        key: "bare",
        setting: Some(traplab_abi::settings::BENCH_BARE),
        trace: TraceMode::Off,
    },
    Config {
        name: "traplab, trace off",
        key: "untraced",
        setting: None,
        trace: TraceMode::Off,
    },
    Config {
        name: "traplab, trace on (ring)",
        key: "traced",
        setting: None,
        trace: TraceMode::Ring,
    },
];

impl Config {
    fn machine(&self, base: &Machine) -> Machine {
        let mut machine = base.clone();
        machine.trace = self.trace;
        machine.settings.extend(self.setting.map(String::from));
        machine
    }
}

/// The same run under `-icount shift=0,sleep=off`: QEMU's clock then advances one
/// nanosecond per executed instruction and the TSC with it, so the guest's "ticks per
/// exit" count the instructions of a round trip (VMRUN counts as one): the same figure in
/// every run, however loaded the machine.
fn counting_instructions(machine: &Machine) -> Machine {
    let mut machine = machine.clone();
    machine
        .extra_args
        .extend(["-icount", "shift=0,sleep=off"].map(String::from));
    machine
}

/// The host's TSC rate, measured against its monotonic clock over 200 ms, when the TSC
/// runs at a constant rate (`constant_tsc` and `nonstop_tsc` in /proc/cpuinfo); `None`
/// otherwise, and the hypervisor calibrates its own.
fn host_tsc_hz() -> Option<u64> {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    let flags = cpuinfo.lines().find(|line| line.starts_with("flags"))?;
    let has = |flag: &str| flags.split_whitespace().any(|word| word == flag);
    if !(has("constant_tsc") && has("nonstop_tsc")) {
        return None;
    }
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::_rdtsc;
        let started = Instant::now();
        // SAFETY: RDTSC reads a counter; the CPU has one (the `flags` above name it).
        let first = unsafe { _rdtsc() };
        std::thread::sleep(Duration::from_millis(200));
        // SAFETY: as above.
        let last = unsafe { _rdtsc() };
        let seconds = started.elapsed().as_secs_f64();
        Some((last.wrapping_sub(first) as f64 / seconds) as u64)
    }
    #[cfg(not(target_arch = "x86_64"))]
    None
}

/// What the figures are of: the host's CPU model and count, and QEMU's version (`Intel(R)
/// Xeon(R) … × 2, QEMU emulator version 7.2.…`).
fn this_machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|text| {
            text.lines()
                .find_map(|line| line.strip_prefix("model name"))
                .map(|rest| rest.trim_start_matches([' ', '\t', ':']).to_string())
        })
        .unwrap_or_else(|| "an unknown CPU".into());
    let cpus = std::thread::available_parallelism().map_or(1, usize::from);
    let qemu = traplab_tracer::qemu::find()
        .and_then(|qemu| {
            std::process::Command::new(qemu)
                .arg("--version")
                .output()
                .ok()
        })
        .and_then(|output| {
            String::from_utf8_lossy(&output.stdout)
                .lines()
                .next()
                .map(str::to_string)
        })
        .unwrap_or_else(|| "QEMU of an unknown version".into());
    format!("{cpu} × {cpus}, {qemu}")
}

/// The one-minute load average (/proc/loadavg's first figure).
fn load_average() -> Option<f64> {
    std::fs::read_to_string("/proc/loadavg")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// `machine` with the hypervisor given its TSC rate (`opt/traplab/tsc-hz`).
fn with_tsc_hz(mut machine: Machine, hz: u64) -> Machine {
    machine.extra_args.extend([
        "-fw_cfg".to_string(),
        format!("name=opt/traplab/tsc-hz,string={hz}"),
    ]);
    machine
}

/// A configuration's runs.
struct Measured {
    config: Config,
    samples: Vec<Sample>,
    /// The run under -icount (TCG only).
    instructions: Option<Sample>,
}

impl Measured {
    /// Median TSC ticks per trap over the runs.
    fn ticks_per_trap(&self) -> f64 {
        median(
            self.samples
                .iter()
                .map(|s| s.ticks as f64 / s.exits as f64)
                .collect(),
        )
    }

    fn instructions_per_trap(&self) -> Option<f64> {
        self.instructions
            .map(|sample| sample.ticks as f64 / sample.exits as f64)
    }
}

/// The figures `bench` prints, computed once for the text and the JSON.
struct Report {
    runs: usize,
    accel: Accel,
    exits: u64,
    tsc_hz: f64,
    /// Per configuration: name, key, µs per trap, instructions per trap.
    rows: Vec<(&'static str, &'static str, f64, Option<f64>)>,
    /// Per configuration: ticks per trap in each round, in order.
    rounds: Vec<Vec<f64>>,
    events_per_second: f64,
    events_per_trap: f64,
    bytes_per_event: f64,
    first_event_ms: f64,
    /// Events per second the host's reader takes from a ring a synthetic producer fills.
    reader_events_per_second: f64,
    /// Where and how the timed rounds ran.
    conditions: Conditions,
}

/// Where and how the timed rounds ran: what moves the times but not the counts.
#[derive(Debug, Default)]
struct Conditions {
    /// The machine the figures are of: its CPU, how many, and QEMU's version.
    machine: String,
    /// The TSC rate is the host's, measured by the bench and given to the hypervisor (else
    /// the hypervisor's own calibration, against the emulated PIT).
    tsc_from_host: bool,
    /// The share of the CPU time stolen from this VM during the timed rounds, in percent.
    steal_percent: Option<f64>,
    /// /proc/loadavg's one-minute figure before and after the timed rounds.
    load_average: Option<(f64, f64)>,
}

/// One configuration against another.
struct Ratio {
    /// The median of `rounds`.
    time: f64,
    /// Each round's ratio of times, in order.
    rounds: Vec<f64>,
    /// The ratio of instructions per trap (TCG's -icount).
    instructions: Option<f64>,
}

/// The targets, printed beside the ratios.
const UNTRACED_OVER_BARE_TARGET: f64 = 1.5;
const TRACED_OVER_UNTRACED_TARGET: f64 = 1.2;
const BYTES_PER_EVENT_TARGET: f64 = 48.0;
const READER_TARGET: f64 = 1_000_000.0;
/// Instructions of the hypervisor's work per traced trap, under `-icount`.
const TRACED_INSTRUCTIONS_TARGET: f64 = 1_500.0;

impl Report {
    fn new(
        measured: &[Measured],
        runs: usize,
        accel: Accel,
        reader: f64,
        conditions: Conditions,
    ) -> Report {
        let tsc_hz = measured
            .iter()
            .flat_map(|m| &m.samples)
            .find_map(|sample| sample.tsc_hz)
            .unwrap_or(1) as f64;
        let micros = |ticks: f64| ticks / tsc_hz * 1e6;
        let rows = measured
            .iter()
            .map(|m| {
                (
                    m.config.name,
                    m.config.key,
                    micros(m.ticks_per_trap()),
                    m.instructions_per_trap(),
                )
            })
            .collect();
        let rounds = measured
            .iter()
            .map(|m| {
                m.samples
                    .iter()
                    .map(|s| s.ticks as f64 / s.exits as f64)
                    .collect()
            })
            .collect();
        let traced = measured
            .iter()
            .find(|m| m.config.trace == TraceMode::Ring)
            .map(|m| m.samples.as_slice())
            .unwrap_or_default();
        let seconds = |ticks: u64| ticks as f64 / tsc_hz;
        Report {
            runs,
            accel,
            exits: measured
                .first()
                .and_then(|m| m.samples.first())
                .map_or(0, |s| s.exits),
            tsc_hz,
            rows,
            rounds,
            events_per_second: median(
                traced
                    .iter()
                    .map(|s| s.events as f64 / seconds(s.ticks))
                    .collect(),
            ),
            events_per_trap: median(
                traced
                    .iter()
                    .map(|s| s.events as f64 / s.exits as f64)
                    .collect(),
            ),
            bytes_per_event: median(
                traced
                    .iter()
                    .map(|s| s.ring_bytes as f64 / s.events as f64)
                    .collect(),
            ),
            first_event_ms: median(
                traced
                    .iter()
                    .filter_map(|s| s.first_event)
                    .map(|d| d.as_secs_f64() * 1e3)
                    .collect(),
            ),
            reader_events_per_second: reader,
            conditions,
        }
    }

    /// Row `i` against row `j`: in time, the median of the rounds' ratios (the runs of one
    /// round shared the machine's load of the moment); in instructions.
    fn ratio(&self, i: usize, j: usize) -> Ratio {
        let rounds: Vec<f64> = self.rounds[i]
            .iter()
            .zip(&self.rounds[j])
            .map(|(time_i, time_j)| time_i / time_j)
            .collect();
        let (_, _, _, count_i) = self.rows[i];
        let (_, _, _, count_j) = self.rows[j];
        Ratio {
            time: median(rounds.clone()),
            rounds,
            instructions: count_i.zip(count_j).map(|(a, b)| a / b),
        }
    }

    fn text(&self) -> String {
        use std::fmt::Write;
        let mut out = String::new();
        let _ = writeln!(
            out,
            "{GUEST}: {} CPUID exits per run, medians of {} round(s) (a round runs the three back to back), TSC {:.2} GHz ({}), accelerator {}",
            self.exits,
            self.runs,
            self.tsc_hz / 1e9,
            match self.conditions.tsc_from_host {
                true => "the host's, measured and given to the hypervisor",
                false => "the hypervisor's calibration",
            },
            self.accel.name()
        );
        let _ = writeln!(out, "machine: {}", self.conditions.machine);
        let _ = writeln!(
            out,
            "{:<30} {:>9} {:>9}   {:>12}",
            "", "µs/trap", "traps/s", "instr./trap"
        );
        for (name, _, micros, instructions) in &self.rows {
            let instructions =
                instructions.map_or("n/a".to_string(), |count| format!("{count:.0}"));
            let _ = writeln!(
                out,
                "{name:<30} {micros:>9.2} {:>9.0}   {instructions:>12}",
                1e6 / micros
            );
        }
        let ratio_line = |label: &str, ratio: Ratio, target: f64| {
            let count = ratio.instructions.map_or(String::new(), |count| {
                format!(", {count:.2}x in instructions")
            });
            // The spread says how much the machine's load moved the figure.
            let low = ratio.rounds.iter().copied().fold(f64::INFINITY, f64::min);
            let high = ratio.rounds.iter().copied().fold(0.0, f64::max);
            let spread = if ratio.rounds.len() > 1 {
                format!(" (rounds {low:.2}–{high:.2}x)")
            } else {
                String::new()
            };
            // A run with more work cannot take less time: below 1, the load of the moment
            // (on this machine, or its host) moved the runs more than the work did.
            let moved = match ratio.time < 1.0 {
                true => "; below 1: the machine's load moved the runs, the instruction counts hold",
                false => "",
            };
            format!(
                "{label}: {:.2}x in time{spread}{count} (target ≤ {target}x){moved}\n",
                ratio.time
            )
        };
        out.push_str(&ratio_line(
            "untraced / bare",
            self.ratio(1, 0),
            UNTRACED_OVER_BARE_TARGET,
        ));
        out.push_str(&ratio_line(
            "traced / untraced",
            self.ratio(2, 1),
            TRACED_OVER_UNTRACED_TARGET,
        ));
        let _ = writeln!(
            out,
            "ring: {:.0} events/s ({:.1} events per trap, {:.1} bytes per event, target ≤ {BYTES_PER_EVENT_TARGET}), none lost; first event {:.0} ms after starting QEMU",
            self.events_per_second, self.events_per_trap, self.bytes_per_event, self.first_event_ms
        );
        let _ = writeln!(
            out,
            "host reader: {:.0} events/s from a ring a synthetic producer fills (target ≥ {READER_TARGET})",
            self.reader_events_per_second
        );
        if let Some(steal) = self.conditions.steal_percent {
            let _ = writeln!(
                out,
                "steal: {steal:.0}% of this machine's CPU time went to others during the timed rounds (the VM's host took it); the times move with it, the instruction counts do not"
            );
        }
        if let Some((before, after)) = self.conditions.load_average {
            let _ = writeln!(
                out,
                "load average (1 min): {before:.2} before the timed rounds, {after:.2} after, on {} CPU(s): other work on this machine moves the times too, which steal does not show",
                std::thread::available_parallelism().map_or(1, usize::from)
            );
        }
        if self.accel == Accel::Tcg {
            let _ = writeln!(
                out,
                "instr./trap: the same runs under -icount shift=0,sleep=off (the TSC counts instructions; VMRUN is one); a traced trap's target ≤ {TRACED_INSTRUCTIONS_TARGET}. Both columns are the traps' alone: the guest's own loop (timed with a NOP for its CPUID) is taken out",
            );
        }
        out
    }

    fn json(&self) -> serde_json::Value {
        let mut configs = serde_json::Map::new();
        for (_, key, micros, instructions) in &self.rows {
            configs.insert(
                (*key).into(),
                serde_json::json!({
                    "us_per_trap": micros,
                    "traps_per_second": 1e6 / micros,
                    "instructions_per_trap": instructions,
                }),
            );
        }
        let untraced = self.ratio(1, 0);
        let traced = self.ratio(2, 1);
        serde_json::json!({
            "guest": GUEST,
            "accel": self.accel.name(),
            "exits": self.exits,
            "runs": self.runs,
            "tsc_hz": self.tsc_hz,
            "tsc_from_host": self.conditions.tsc_from_host,
            "machine": self.conditions.machine,
            "load_average": self.conditions.load_average.map(|(before, after)| serde_json::json!({"before": before, "after": after})),
            "configs": configs,
            "untraced_over_bare": {
                "time": untraced.time,
                "time_by_round": untraced.rounds,
                "instructions": untraced.instructions,
            },
            "traced_over_untraced": {
                "time": traced.time,
                "time_by_round": traced.rounds,
                "instructions": traced.instructions,
            },
            "ring": {
                "events_per_second": self.events_per_second,
                "events_per_trap": self.events_per_trap,
                "bytes_per_event": self.bytes_per_event,
            },
            "reader_events_per_second": self.reader_events_per_second,
            "first_event_ms": self.first_event_ms,
            "steal_percent": self.conditions.steal_percent,
        })
    }
}

/// The machine's CPU time so far, from the first line of /proc/stat (in ticks: user, nice,
/// system, idle, iowait, irq, softirq, steal; guest time is counted in user already).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct CpuTimes {
    /// Time the VM's vCPUs wanted to run while its host ran something else.
    steal: u64,
    total: u64,
}

impl CpuTimes {
    /// `None` where there is no /proc/stat or its `cpu` line has no steal (an old kernel).
    fn now() -> Option<CpuTimes> {
        CpuTimes::parse(&std::fs::read_to_string("/proc/stat").ok()?)
    }

    fn parse(stat: &str) -> Option<CpuTimes> {
        let line = stat.lines().find(|line| line.starts_with("cpu "))?;
        let ticks: Vec<u64> = line
            .split_whitespace()
            .skip(1)
            .take(8)
            .map(|field| field.parse().ok())
            .collect::<Option<_>>()?;
        Some(CpuTimes {
            steal: *ticks.get(7)?,
            total: ticks.iter().sum(),
        })
    }

    /// The steal from `self` to `later`, in percent of all the CPU time between them.
    fn steal_percent(self, later: CpuTimes) -> Option<f64> {
        let total = later.total.checked_sub(self.total)?;
        let steal = later.steal.checked_sub(self.steal)?;
        (total > 0).then(|| 100.0 * steal as f64 / total as f64)
    }
}

/// How many events the reader measurement moves.
const READER_EVENTS: u64 = 2_000_000;

/// The host side alone: events per second the reader takes from the ring and decodes — as a
/// session does (`tracer/src/session.rs`) — while a producer thread fills the ring as fast as
/// it can with the four events of a CPUID trap, encoded as the hypervisor encodes them. The
/// hypervisor under TCG makes a few tens of thousands a second: this says how far the
/// reader is from being the limit. An error when the reader's own records do not encode or
/// decode (the measurement would mean nothing).
fn reader_throughput(events: u64) -> Result<f64, String> {
    // Two traps' ring records, each the trap's four events gathered as the hypervisor
    // gathers them (`hv/src/trace.rs`): the first teaches the reader the texts, the second
    // is what every trap after it looks like; the producer sends the first once, then the
    // second again and again (each decodes to the next four events).
    let mut encoder = traplab_abi::wire::Encoder::new();
    let mut gathered = |seq| {
        encoder
            .encode_gathered(&cpuid_trap_events(seq))
            .map_err(|error| format!("the reader's bench could not encode a trap: {error:?}"))
    };
    let (first, every_other) = (gathered(0)?, gathered(4)?);
    read_through_ring(&first, &every_other, events)
}

/// Push `first` once, then `every_other` again and again, from a producer thread into a
/// ring, and decode them on this one until `events` events came out: the events decoded a
/// second. An error, at once, when a record does not decode or the ring breaks.
fn read_through_ring(first: &[u8], every_other: &[u8], events: u64) -> Result<f64, String> {
    use std::sync::atomic::{AtomicBool, Ordering};
    use traplab_abi::ring::{HEADER_SIZE, Ring};
    const DATA_SIZE: usize = 4 << 20;
    let mut memory = vec![0u64; (HEADER_SIZE + DATA_SIZE) / 8];
    let base = memory.as_mut_ptr() as *mut u8;
    // SAFETY: `memory` is HEADER_SIZE + DATA_SIZE bytes, 8-aligned, and outlives both
    // threads (they are scoped); the producer only pushes and the consumer only consumes,
    // the one-producer-one-consumer protocol the ring is made for.
    let mut producer = unsafe { Ring::create(base, DATA_SIZE) };
    // SAFETY: as above; the header is set up.
    let mut consumer = unsafe { Ring::attach(base, HEADER_SIZE + DATA_SIZE) }
        .map_err(|error| format!("the reader's bench could not attach its ring: {error:?}"))?;
    let (producer_ring, consumer_ring) = (SendRing(&mut producer), SendRing(&mut consumer));
    // Set when the reader gives up: the producer would wait for room for ever.
    let stop = &AtomicBool::new(false);
    let started = Instant::now();
    let read = std::thread::scope(|scope| {
        scope.spawn(move || {
            let ring = producer_ring;
            for trap in 0..events.div_ceil(4) {
                let record = if trap == 0 { first } else { every_other };
                while ring.0.push(record).is_err() {
                    if stop.load(Ordering::Relaxed) {
                        return;
                    }
                    std::hint::spin_loop();
                }
            }
        });
        let ring = consumer_ring;
        let mut decoder = traplab_abi::wire::Decoder::new();
        let mut decoded = 0u64;
        let mut batch = Vec::new();
        let mut failure = None;
        while decoded < events && failure.is_none() {
            // A record that does not decode ends the measurement: without the events it
            // should have given, `decoded` would never reach `events`. (The producer then
            // waits for room no one makes: it is told to stop.)
            let consumed = ring.0.consume(|record| {
                batch.clear();
                match decoder.decode(record, &mut batch) {
                    // A record of no event would leave `decoded` where it is for ever.
                    Ok(()) if batch.is_empty() => failure = Some("a record held no event".into()),
                    Ok(()) => decoded += batch.len() as u64,
                    Err(error) => failure = Some(format!("a record did not decode: {error:?}")),
                }
            });
            if let Err(error) = consumed {
                failure = Some(format!("the ring broke: {error:?}"));
            }
        }
        stop.store(true, Ordering::Relaxed);
        match failure {
            Some(failure) => Err(format!("the reader's bench stopped: {failure}")),
            None => Ok(()),
        }
    });
    read?;
    Ok(events as f64 / started.elapsed().as_secs_f64())
}

/// A ring handle that moves to another thread.
struct SendRing<'a>(&'a mut traplab_abi::ring::Ring);
// SAFETY: each handle is used by one thread only, and the ring's protocol (a record's length
// stored with release and loaded with acquire, and the same for `tail`) is what makes a
// producer and a consumer on two threads safe.
unsafe impl Send for SendRing<'_> {}

/// The events of one CPUID trap of `cpuid-loop`, with the values a real one has, from `seq`.
fn cpuid_trap_events(seq: u64) -> Vec<traplab_abi::event::Event> {
    use traplab_abi::event::{
        Action, Argument, Arguments, Change, Decide, Emulate, Event, Exit, InstructionBytes,
        Registers, Resume,
    };
    let regs = Registers {
        rax: 0,
        rcx: 0,
        rsp: 0x1ff_f000,
        ..Registers::default()
    };
    let body = [
        Body::Exit(Exit {
            exitcode: 0x72,
            reason: "CPUID".into(),
            exitinfo1: 0,
            exitinfo2: 0,
            exitintinfo: 0,
            rip: 0x20_0037,
            cs: 0x08,
            cpl: 0,
            rflags: 0x2,
            cr0: 0x8000_0011,
            cr2: 0,
            cr3: 0x1000,
            cr4: 0x20,
            efer: 0x1500,
            regs,
            insn: InstructionBytes::new(&[0x0f, 0xa2, 0xeb, 0xfc]),
        }),
        Body::Decide(Decide {
            action: Action::Emulate,
            why: "CPUID is intercepted: the hypervisor answers with the CPU it wants the guest to see".into(),
            at: "hv/src/exit/cpuid.rs:24".into(),
        }),
        // A template and its values, as the hypervisor sends it: the reader writes the line.
        Body::Emulate(Emulate {
            what: "CPUID leaf {} subleaf {}: {}".into(),
            arguments: Arguments::new([
                Argument::Hex(0),
                Argument::Hex(0),
                Argument::Text("the real CPU's answer, unchanged".into()),
            ]),
            changes: vec![
                Change { name: "rax".into(), old: 0, new: 0xd },
                Change { name: "rbx".into(), old: 0x4, new: 0x6874_7541 },
                Change { name: "rcx".into(), old: 0, new: 0x444d_4163 },
                Change { name: "rip".into(), old: 0x20_0037, new: 0x20_0039 },
            ],
        }),
        Body::Resume(Resume {
            rip: 0x20_0039,
            rflags: 0x2,
            regs: Registers { rax: 0xd, rbx: 0x6874_7541, rcx: 0x444d_4163, ..regs },
            cycles: 9420,
        }),
    ];
    body.into_iter()
        .enumerate()
        .map(|(index, body)| Event {
            seq: seq + index as u64,
            tsc: 1_000_000 + (seq + index as u64) * 3000,
            dom: Some(1),
            body,
        })
        .collect()
}

/// The middle value; of an even count, the mean of the two in the middle (the upper one
/// alone would lean every ratio towards its worst round).
fn median(mut values: Vec<f64>) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    values.sort_by(|a, b| a.total_cmp(b));
    let middle = values.len() / 2;
    match values.len() % 2 {
        1 => values[middle],
        _ => (values[middle - 1] + values[middle]) / 2.0,
    }
}

/// The split block driver's throughput: `blk-stream` reads 256 pages straight from the
/// controller it owns (the baseline, no hypervisor on the data path), then through blkfront
/// and the driver domain's blkback (the `swap-in` lab's machine with `blk-stream` as d1),
/// with the trace off and on.
fn split_driver(args: &BenchArgs, accel: Accel) -> Result<ExitCode, super::Failure> {
    let runs = args.runs.max(1);
    let failed = |message: String| super::Failure::new(super::status::HV_FAILED, message);
    let lab = traplab_labs::find("swap-in")
        .map_err(|error| error.to_string())?
        .ok_or("the swap-in lab is missing from the catalogue")?;
    let mut through_ring = lab.machine()?;
    through_ring.guests[0] =
        traplab_tracer::qemu::Guest::new(STREAM, traplab_labs::guest_elf(STREAM));
    let mut direct = traplab_labs::machine_for(&[STREAM]);
    direct.disk = through_ring
        .disk
        .clone()
        .map(|disk| traplab_tracer::qemu::Disk {
            owner: traplab_tracer::qemu::FIRST_GUEST,
            ..disk
        });
    let with = |machine: &Machine, trace: TraceMode| {
        let mut machine = machine.clone();
        machine.trace = trace;
        machine.accel = accel;
        machine
    };
    let (mut baseline, mut off, mut ring) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..runs {
        baseline.push(sample(&with(&direct, TraceMode::Off)).map_err(failed)?);
        off.push(sample(&with(&through_ring, TraceMode::Off)).map_err(failed)?);
        ring.push(sample(&with(&through_ring, TraceMode::Ring)).map_err(failed)?);
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
                "accel": accel.name(),
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
        "{STREAM}: {reads} reads of 4 KiB per run, median of {runs} run(s), TSC {:.2} GHz, accelerator {}",
        tsc_hz / 1e9,
        accel.name()
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

/// One boot of Linux to its `/init`'s marker: how long it took from the start, and for a
/// traced boot what went through the ring.
#[derive(Debug, Clone, Copy, Default)]
struct Boot {
    seconds: f64,
    exits: u64,
    events: u64,
    ring_bytes: u64,
    /// The bytes of the same events as JSON Lines (what `--record` writes).
    recording_bytes: u64,
}

/// A kernel boot to measure: the machine that boots it under traplab, and the console text
/// that ends it.
struct KernelBoot {
    /// The lab, or the kernel's file name.
    name: String,
    machine: Machine,
    until: String,
    /// What the report calls the end: `to /init's marker`.
    what: String,
}

/// A kernel's boot to its `until` line, three ways: bare QEMU (`-kernel`, the same kernel,
/// initrd and command line), traplab with the trace off, and traced.
fn kernel_boot(
    args: &BenchArgs,
    accel: Accel,
    boot: KernelBoot,
) -> Result<ExitCode, super::Failure> {
    let runs = args.runs.max(1);
    let failed = |message: String| super::Failure::new(super::status::HV_FAILED, message);
    let KernelBoot {
        name,
        mut machine,
        until,
        what,
    } = boot;
    machine.accel = accel;
    let (mut bare, mut off, mut traced) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..runs {
        // Traced first: a kernel the hypervisor cannot boot, or that ends before the line,
        // is then reported in the trace's words.
        for (trace, boots) in [(TraceMode::Ring, &mut traced), (TraceMode::Off, &mut off)] {
            let mut machine = machine.clone();
            machine.trace = trace;
            boots.push(traplab_boot(&machine, &until).map_err(failed)?);
        }
        bare.push(bare_kernel_boot(&machine, &until).map_err(failed)?);
    }
    let seconds = |boots: &[Boot]| median(boots.iter().map(|boot| boot.seconds).collect());
    let (bare_s, off_s, traced_s) = (seconds(&bare), seconds(&off), seconds(&traced));
    let traced_rates = TracedRates::of(&traced);
    if args.json {
        println!(
            "{}",
            serde_json::json!({
                "boot": name,
                "until": until,
                "runs": runs,
                "accel": accel.name(),
                "bare_qemu_s": bare_s,
                "untraced_s": off_s,
                "traced_s": traced_s,
                "untraced_over_bare": off_s / bare_s,
                "traced_over_untraced": traced_s / off_s,
                "exits": traced_rates.exits,
                "events": traced_rates.events,
                "exits_per_s": traced_rates.exits_per_s,
                "events_per_s": traced_rates.events_per_s,
                "ring_bytes": traced_rates.ring_bytes,
                "recording_bytes": traced_rates.recording_bytes,
            })
        );
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{name} {what}, median of {runs} run(s), accelerator {}:",
        accel.name()
    );
    for (name, s) in [
        ("bare QEMU (-kernel)", bare_s),
        ("traplab, trace off", off_s),
        ("traplab, traced", traced_s),
    ] {
        println!("  {name:<22} {s:>7.2} s");
    }
    println!(
        "  untraced / bare {:.2}x, traced / untraced {:.2}x",
        off_s / bare_s,
        traced_s / off_s
    );
    println!(
        "  traced: {} exits ({:.0}/s), {} events ({:.0}/s), {:.1} MB through the ring, a {:.1} MB recording",
        traced_rates.exits,
        traced_rates.exits_per_s,
        traced_rates.events,
        traced_rates.events_per_s,
        traced_rates.ring_bytes as f64 / 1e6,
        traced_rates.recording_bytes as f64 / 1e6
    );
    Ok(ExitCode::SUCCESS)
}

/// The traced boots' counts and rates, each the median of the runs' own (as the times are),
/// a rate being its own run's count over its own time: the last run's counts over the median
/// time were neither one run's nor a median.
struct TracedRates {
    exits: u64,
    events: u64,
    exits_per_s: f64,
    events_per_s: f64,
    ring_bytes: u64,
    recording_bytes: u64,
}

impl TracedRates {
    fn of(boots: &[Boot]) -> TracedRates {
        let each = |value: fn(&Boot) -> f64| median(boots.iter().map(value).collect());
        // A count's median, whole (two middle runs' mean rounded).
        let count = |value: fn(&Boot) -> u64| {
            let middle = median(boots.iter().map(|boot| value(boot) as f64).collect());
            if middle.is_finite() {
                middle.round() as u64
            } else {
                0
            }
        };
        TracedRates {
            exits: count(|boot| boot.exits),
            events: count(|boot| boot.events),
            exits_per_s: each(|boot| boot.exits as f64 / boot.seconds),
            events_per_s: each(|boot| boot.events as f64 / boot.seconds),
            ring_bytes: count(|boot| boot.ring_bytes),
            recording_bytes: count(|boot| boot.recording_bytes),
        }
    }
}

/// The marker the linux-boot lab's `/init` prints.
const LINUX_MARKER: &str = "TRAPLAB-LINUX-MARKER";

/// One boot under traplab, to the first console line containing `until` (on the console
/// events, or in the hypervisor's log when the trace is off); QEMU is stopped there.
fn traplab_boot(machine: &Machine, until: &str) -> Result<Boot, String> {
    let started = Instant::now();
    let options = Options {
        timeout: Some(Duration::from_secs(600)),
        ..Options::default()
    };
    let mut session = Session::start(machine, options).map_err(|error| error.to_string())?;
    let mut boot = Boot::default();
    while let Some(item) = session.next_item() {
        let marker = match &item {
            Item::Event(event) => {
                boot.events += 1;
                boot.recording_bytes +=
                    serde_json::to_string(event).map_or(0, |line| line.len() as u64 + 1);
                match &event.body {
                    Body::Exit(_) => boot.exits += 1,
                    Body::Lost(lost) => return Err(format!("the ring lost {} events", lost.count)),
                    Body::Domain(change) if change.state != DomainState::Created => {
                        return Err(format!(
                            "{} {} before a line with {until:?}: {}",
                            change.name,
                            format!("{:?}", change.state).to_lowercase(),
                            change.reason.as_deref().unwrap_or("no reason given")
                        ));
                    }
                    _ => {}
                }
                matches!(&event.body, Body::Console(console) if console.text.contains(until))
            }
            // A guest's console line in the log: `d1| text`.
            Item::Log(line) => line
                .split_once("| ")
                .is_some_and(|(_, text)| text.contains(until)),
            Item::Broken(message) => return Err(message.clone()),
            Item::Finished(done) => {
                return Err(format!("QEMU ended before a line with {until:?}: {done:?}"));
            }
        };
        if marker {
            boot.seconds = started.elapsed().as_secs_f64();
            boot.ring_bytes = session.ring_bytes();
            session.stop("the bench saw the marker");
            return Ok(boot);
        }
    }
    Err(format!("the trace ended before a line with {until:?}"))
}

/// The same kernel, initrd and command line under QEMU's own `-kernel`, to the first line
/// containing `until` (`traplab_labs::bare_qemu`).
fn bare_kernel_boot(machine: &Machine, until: &str) -> Result<Boot, String> {
    let guest = machine.guests.first().ok_or("the lab has no guest")?;
    let kernel = traplab_labs::bare_qemu::Kernel {
        image: &guest.image,
        initrd: guest.initrd.as_deref(),
        append: guest.cmdline.as_deref().unwrap_or(""),
        // The RAM the domain has under traplab.
        memory_mib: guest
            .memory_mib
            .unwrap_or(traplab_tracer::qemu::DEFAULT_DOMAIN_MIB),
        // Compared with traplab's run under the same accelerator.
        accel: machine.accel,
    };
    let (_, took) = traplab_labs::bare_qemu::boot_until(&kernel, until, Duration::from_secs(600))?;
    Ok(Boot {
        seconds: took.as_secs_f64(),
        ..Boot::default()
    })
}

fn sample(machine: &Machine) -> Result<Sample, String> {
    let started = Instant::now();
    let options = Options {
        timeout: Some(Duration::from_secs(600)),
        ..Options::default()
    };
    let mut session = Session::start(machine, options).map_err(|error| error.to_string())?;
    let mut result: Option<(u64, u64)> = None;
    let (mut events, mut first_event, mut tsc_hz) = (0u64, None, None);
    let mut finish = None;
    while let Some(item) = session.next_item() {
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
    match finish {
        Some(done) if done.hv_status == Some(HvStatus::Done) => {}
        other => return Err(format!("the benchmark guest did not finish: {other:?}")),
    }
    let (exits, ticks) = result.ok_or("the benchmark guest printed no result")?;
    Ok(Sample {
        exits,
        ticks,
        events,
        ring_bytes: session.ring_bytes(),
        first_event,
        tsc_hz,
    })
}

/// A benchmark guest's result: `20000 CPUID exits in 1212679676 TSC ticks: …; the loop's
/// own, its CPUID a NOP: 80012 TSC ticks` or `256 reads of 8 sectors in 50213344 TSC
/// ticks`: the count first, and the ticks after `in`, less the loop's own when the guest
/// timed it (`cpuid-loop`): what is left is the traps' alone, the guest's four instructions
/// a round taken out.
fn parse(text: &str) -> Option<(u64, u64)> {
    let mut words = text.split_whitespace();
    let count = words.next()?.parse().ok()?;
    words.by_ref().find(|word| *word == "in")?;
    let ticks: u64 = words.next()?.parse().ok()?;
    let own = match text.split_once(LOOP_OWN) {
        Some((_, rest)) => rest.split_whitespace().next()?.parse().ok()?,
        None => 0,
    };
    text.contains("TSC ticks")
        .then_some((count, ticks.checked_sub(own)?))
}

/// What `cpuid-loop` prints before the ticks its loop takes with a NOP for its CPUID.
const LOOP_OWN: &str = "its CPUID a NOP: ";

#[cfg(test)]
mod tests {
    use super::{
        CONFIGS, Conditions, CpuTimes, Measured, Report, Sample, parse, read_through_ring,
        reader_throughput,
    };
    use std::sync::mpsc;
    use std::time::Duration;
    use traplab_tracer::qemu::Accel;

    #[test]
    fn a_kernel_boot_s_rates_are_each_run_s_own_then_the_median() {
        use super::{Boot, TracedRates};
        let boot = |seconds: f64, exits: u64| Boot {
            seconds,
            exits,
            ..Boot::default()
        };
        // Rates 100, 150 and 110 a second: the median is 110, the third run's own (the last
        // run's count over the median time would be 400 / 3).
        let rates = TracedRates::of(&[boot(4.0, 400), boot(2.0, 300), boot(3.0, 330)]);
        assert_eq!(rates.exits_per_s, 110.0);
        assert_eq!(rates.exits, 330);
    }

    #[test]
    fn the_reader_bench_decodes_the_traps_it_pushes() {
        let rate = reader_throughput(40_000).expect("the bench's own traps decode");
        assert!(rate.is_finite() && rate > 0.0, "{rate}");
        // What the reader measures decoding is the traps the producer pushes, event for
        // event: the first record, then the one every later trap repeats.
        let mut encoder = traplab_abi::wire::Encoder::new();
        let mut decoder = traplab_abi::wire::Decoder::new();
        for seq in [0, 4] {
            let mut trap = super::cpuid_trap_events(seq);
            let record = encoder.encode_gathered(&trap).expect("a trap encodes");
            let mut decoded = Vec::new();
            decoder.decode(&record, &mut decoded).expect("and decodes");
            // An emulate's template arrives as its finished line (`abi/src/wire.rs`).
            for event in &mut trap {
                if let traplab_abi::event::Body::Emulate(emulate) = &mut event.body {
                    emulate.what =
                        traplab_abi::event::render(&emulate.what, emulate.arguments.iter()).into();
                    emulate.arguments = Default::default();
                }
            }
            assert_eq!(decoded, trap);
        }
    }

    #[test]
    fn a_record_the_reader_cannot_decode_ends_its_bench_with_an_error() {
        // 0xff is no record's tag. Before, the reader kept waiting for events that would never
        // come: on another thread, with a bound, so that a hang fails the test.
        let (sender, receiver) = mpsc::channel();
        std::thread::spawn(move || {
            let _ = sender.send(read_through_ring(&[0xff], &[0xff], 40_000));
        });
        let result = receiver
            .recv_timeout(Duration::from_secs(120))
            .expect("the reader's bench gives up on a bad record instead of waiting for ever");
        let error = result.expect_err("a record that does not decode is an error");
        assert!(error.contains("a record did not decode"), "{error}");
        assert!(error.contains("record tag"), "{error}");
    }

    /// A configuration measured in rounds of 1,000 traps taking these many ticks per trap.
    fn measured(index: usize, ticks_per_trap: &[u64]) -> Measured {
        Measured {
            config: CONFIGS[index],
            samples: ticks_per_trap
                .iter()
                .map(|&ticks| Sample {
                    exits: 1000,
                    ticks: ticks * 1000,
                    events: 4000,
                    ring_bytes: 120_000,
                    first_event: None,
                    tsc_hz: Some(1_000_000_000),
                })
                .collect(),
            instructions: None,
        }
    }

    #[test]
    fn steal_is_the_eighth_number_of_the_cpu_line_against_the_first_eight() {
        let before = "cpu  100 0 50 800 10 0 5 35 0 0\ncpu0 50 0 25 400 5 0 2 18 0 0\nintr 1\n";
        let after = "cpu  200 0 100 1300 10 0 5 135 0 0\ncpu0 1 1 1 1 1 1 1 1 1 1\n";
        let (before, after) = (CpuTimes::parse(before), CpuTimes::parse(after));
        assert_eq!(
            before,
            Some(CpuTimes {
                steal: 35,
                total: 1000
            })
        );
        assert_eq!(
            after,
            Some(CpuTimes {
                steal: 135,
                total: 1750
            })
        );
        let percent = before.zip(after).and_then(|(b, a)| b.steal_percent(a));
        // 100 ticks of steal out of 750.
        assert!(
            percent.is_some_and(|p| (p - 100.0 * 100.0 / 750.0).abs() < 1e-9),
            "{percent:?}"
        );
        // A line without steal (four numbers: an old kernel) says nothing.
        assert_eq!(CpuTimes::parse("cpu  1 2 3 4\n"), None);
        assert_eq!(CpuTimes::parse("intr 5\n"), None);
    }

    #[test]
    fn the_median_of_an_even_count_is_the_mean_of_its_middle_two() {
        assert_eq!(super::median(vec![1.4, 1.1]), 1.25);
        assert_eq!(super::median(vec![3.0, 1.0, 2.0]), 2.0);
        assert!(super::median(Vec::new()).is_nan());
    }

    #[test]
    fn a_ratio_is_the_median_of_the_rounds_ratios_not_the_ratio_of_medians() {
        // The second round ran while the machine was busy: its untraced run took 5x longer
        // than its bare one. Per round: 1.5, 5.45…, 1.25 → 1.5. The medians' ratio (11 and
        // 50 ticks) would say 4.5.
        let report = Report::new(
            &[
                measured(0, &[10, 11, 40]),
                measured(1, &[15, 60, 50]),
                measured(2, &[18, 72, 60]),
            ],
            3,
            Accel::Tcg,
            0.0,
            Conditions::default(),
        );
        let untraced_over_bare = report.ratio(1, 0);
        assert!((untraced_over_bare.time - 1.5).abs() < 1e-9);
        assert_eq!(untraced_over_bare.rounds.len(), 3);
        assert!((untraced_over_bare.rounds[1] - 60.0 / 11.0).abs() < 1e-9);
        assert_eq!(untraced_over_bare.instructions, None);
        let traced_over_untraced = report.ratio(2, 1);
        assert!((traced_over_untraced.time - 1.2).abs() < 1e-9);
        assert!(
            report
                .text()
                .contains("untraced / bare: 1.50x in time (rounds 1.25–5.45x)"),
            "{}",
            report.text()
        );
        assert!(
            report.text().contains("a traced trap's target ≤ 1500"),
            "{}",
            report.text()
        );
        // The table shows each configuration's median time: 11 and 50 ticks at 1 GHz.
        assert!((report.rows[0].2 - 0.011).abs() < 1e-9);
        assert!((report.rows[1].2 - 0.050).abs() < 1e-9);
    }

    #[test]
    fn both_benchmark_guests_results_parse_and_other_lines_do_not() {
        assert_eq!(
            parse("20000 CPUID exits in 1212679676 TSC ticks: 60633 ticks per exit"),
            Some((20000, 1212679676))
        );
        // The loop's own ticks, timed with a NOP for its CPUID, are taken out: under
        // -icount, 4 instructions a round of the guest's (here 3,380,000 less 80,000: 165 a
        // trap, the hypervisor's alone).
        assert_eq!(
            parse(
                "20000 CPUID exits in 3380000 TSC ticks: 169 ticks per exit; the loop's own, its CPUID a NOP: 80000 TSC ticks"
            ),
            Some((20000, 3_300_000))
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
