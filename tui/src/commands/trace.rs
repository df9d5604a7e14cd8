//! `traplab trace <lab>`: run a lab headless and print every event as it happens, with
//! the guest's console output in between; or JSON Lines with `--json`.

use super::output::Output;
use super::status;
use crate::cli::TraceArgs;
use crate::setup;
use std::collections::VecDeque;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use traplab_abi::event::{Body, DomainState, Event, domain_label};
use traplab_tracer::check::StreamCheck;
use traplab_tracer::filter::{ClassFilter, Line};
use traplab_tracer::qemu::HvStatus;
use traplab_tracer::recording::Recorder;
use traplab_tracer::session::{Finish, Item, Options, Session};
use traplab_tracer::{json, text};

/// Seconds a lab may run (without --gdb).
const DEFAULT_TIMEOUT: u64 = 300;

/// How many hypervisor log lines to show when something fails.
const LOG_TAIL: usize = 20;

pub fn run(args: &TraceArgs) -> Result<ExitCode, super::Failure> {
    // A misspelled lab, or an accelerator the host lacks, is said at once, before any build.
    if let Some(id) = &args.lab {
        traplab_labs::lab(id)?;
    }
    let accel = super::accelerator(args.accel, &args.qemu_args)?;
    super::bring_up_to_date(super::OlderBuild::Run)?;
    let (name, mut machine) = super::machine(
        &args.lab,
        &args.guest,
        &args.kernel,
        &args.settings,
        args.yes,
    )?;
    machine.extra_args = args.qemu_args.clone();
    machine.accel = accel;
    super::attach_gdb(&mut machine, args.gdb, args.domain)?;
    super::keep_disk_image(&mut machine, &name, &args.disk)?;
    // What is printed (--only/--hide); the recording and the checks see every event.
    let mut printed = ClassFilter::new(&args.only, &args.hide)?;
    setup::ensure_qemu(args.yes)?;
    if let Some(note) = super::under_kvm_note(machine.accel) {
        eprintln!("{note}");
    }

    let stop = Arc::new(AtomicBool::new(false));
    let handler_stop = Arc::clone(&stop);
    // Ctrl-C: stop QEMU in order, then exit with 130. (Ignore the error if a handler
    // exists already.)
    let _ = ctrlc::set_handler(move || handler_stop.store(true, Ordering::SeqCst));

    let mut recorder = match &args.record {
        Some(path) => Some(
            Recorder::create(path)
                .map_err(|error| format!("cannot write {}: {error}", path.display()))?,
        ),
        None => None,
    };
    // A person at gdb takes their time, at traplab's gdb stub or at QEMU's own (debugging
    // the hypervisor: `--qemu-arg=-s --qemu-arg=-S`): no time limit unless asked for.
    // `--timeout 0`: none either.
    let qemu_gdb = args
        .qemu_args
        .iter()
        .any(|arg| matches!(arg.as_str(), "-s" | "-S") || arg.starts_with("-gdb"));
    let timeout = match (args.timeout, args.gdb.is_some() || qemu_gdb) {
        (Some(0), _) => None,
        (Some(seconds), _) => Some(Duration::from_secs(seconds)),
        (None, true) => None,
        (None, false) => Some(Duration::from_secs(DEFAULT_TIMEOUT)),
    };
    let options = Options {
        stop: Some(Arc::clone(&stop)),
        timeout,
        read_interval: None,
    };
    let mut session = Session::start(&machine, options).map_err(|error| error.to_string())?;
    // The time limit and a signal end the command whatever its reader does: waiting for a
    // reader that does not read gives up then (`output.rs`), and the session stops QEMU.
    let deadline = timeout.map(|timeout| Instant::now() + timeout);
    let give_up = || {
        stop.load(Ordering::SeqCst) || deadline.is_some_and(|deadline| Instant::now() >= deadline)
    };
    // The port gdb attaches to: the one asked for, or the one the system chose for 0.
    if let Some(port) = session.gdb_port() {
        // On stderr: stdout stays the trace (and valid JSON Lines with --json).
        let dom = machine.gdb_domain;
        let name = machine
            .domain(dom)
            .map_or(String::new(), |guest| format!(" ({})", guest.name));
        eprintln!(
            "traplab: {}{name} waits for gdb on 127.0.0.1:{port}; attach with",
            traplab_abi::event::domain_label(dom)
        );
        eprintln!("  {}", super::gdb_command(&machine, port));
    }

    let mut out = Output::stdout();
    // One line of the trace: an event, or (--verbose) a line of the hypervisor's log, which
    // goes to stderr with --json, so that stdout stays JSON Lines.
    let show = |out: &mut Output, line: Line| match line {
        Line::Event(event) => out.line(|| event_line(&event, args.json), &give_up),
        Line::Log(line) if args.json => eprintln!("hv log| {line}"),
        Line::Log(line) => out.line(|| format!("hv log| {line}"), &give_up),
    };
    let mut check = StreamCheck::new();
    let mut log_tail = VecDeque::new();
    let mut killed = false;
    let mut ended = Ended::default();
    let mut finish = None;
    // Events the recording lacks because writing them failed (a full disk): the run is then
    // incomplete, as for a loss in the stream, and the first error is said once.
    let mut unrecorded = 0u64;
    for item in &mut session {
        match item {
            Item::Event(event) => {
                for fault in check.observe(&event) {
                    super::say_trace_fault(fault);
                }
                if let Body::Domain(domain) = &event.body {
                    match domain.state {
                        DomainState::Killed => killed = true,
                        DomainState::Exited => ended.exited(event.dom, domain.status),
                        DomainState::Created => {}
                    }
                }
                if let Some(recorder) = recorder.as_mut()
                    && let Err(error) = recorder.write(&event)
                {
                    if unrecorded == 0 {
                        eprintln!(
                            "traplab: recording failed: {error} (the events the recording lacks are counted at the end)"
                        );
                    }
                    unrecorded += 1;
                }
                printed.take(event, &mut |line| show(&mut out, line));
            }
            Item::Log(line) => {
                if args.verbose {
                    // In its place among the events, behind a flow --only or --hide holds.
                    printed.take_log(line.clone(), &mut |line| show(&mut out, line));
                }
                log_tail.push_back(line);
                if log_tail.len() > LOG_TAIL {
                    log_tail.pop_front();
                }
            }
            Item::Broken(message) => super::say_trace_fault(message),
            Item::Finished(done) => finish = Some(done),
        }
    }
    // What --only or --hide still held back (a flow whose resume never came).
    printed.finish(&mut |line| show(&mut out, line));
    let unflushed = match recorder.map(Recorder::finish) {
        Some(Err(error)) => Some(error),
        _ => None,
    };
    let events = check.count();
    let mut faults: Vec<String> = check
        .finish()
        .iter()
        .map(|fault| fault.to_string())
        .collect();
    if let Some(fault) = super::recording_fault(unrecorded, events, unflushed.as_ref()) {
        faults.push(fault);
    }
    let Some(finish) = finish else {
        return Ok(ExitCode::from(status::HV_FAILED));
    };

    let mut code = exit_code(&finish, killed, ended.status(), !faults.is_empty());
    if code != 0 || !faults.is_empty() {
        for fault in &faults {
            super::say_trace_fault(fault);
        }
        report_failure(&finish, &log_tail, args.verbose);
    }
    if !args.json {
        let outcome = match (killed, ended.failed, ended.status()) {
            (true, _, _) => "a domain was killed".to_string(),
            (false, Some((dom, status)), _) => format!(
                "{} exited with status {status}",
                dom.map_or("the hypervisor".to_string(), domain_label)
            ),
            (false, None, Some(status)) => format!("the guest exited with status {status}"),
            (false, None, None) => "no domain ended".to_string(),
        };
        let lost = if faults.is_empty() {
            "none lost".to_string()
        } else {
            format!("{} trace fault(s)", faults.len())
        };
        out.line(
            || format!("-- {name}: {outcome}; {events} events, {lost}"),
            &give_up,
        );
    }
    let unwritten = out.finish(&give_up);
    if unwritten > 0 {
        // The run may have ended in time, but its output did not: the limit is the command's.
        eprintln!("traplab: nothing read the output in time: {unwritten} line(s) were not written");
        code = if stop.load(Ordering::SeqCst) {
            status::INTERRUPTED
        } else {
            status::TIMED_OUT
        };
    }
    Ok(ExitCode::from(code))
}

/// How the lab's domains exited: a lab goes right when every one of them exits with 0, so
/// the first that does not is the one that counts, whichever domain exits last.
#[derive(Debug, Default)]
struct Ended {
    /// The first domain that exited with a status other than 0, and that status.
    failed: Option<(Option<u16>, i32)>,
    /// A domain exited (its status).
    any: Option<i32>,
}

impl Ended {
    fn exited(&mut self, dom: Option<u16>, status: Option<i32>) {
        let Some(status) = status else { return };
        self.any = Some(status);
        if status != 0 && self.failed.is_none() {
            self.failed = Some((dom, status));
        }
    }

    /// The status the lab ended with: the first failure's, else 0 (`None`: none exited).
    fn status(&self) -> Option<i32> {
        self.failed.map(|(_, status)| status).or(self.any)
    }
}

/// The exit status (see `traplab trace --help`): what went wrong with the run, else how
/// the lab's domains ended.
fn exit_code(finish: &Finish, killed: bool, status: Option<i32>, faulty: bool) -> u8 {
    if let Some(code) = status::of_run(finish, faulty) {
        return code;
    }
    if killed {
        return status::DOMAIN_KILLED;
    }
    match status {
        Some(status) => (status & 0xff) as u8,
        None => status::HV_FAILED,
    }
}

fn report_failure(finish: &Finish, log_tail: &VecDeque<String>, verbose: bool) {
    if finish.interrupted {
        eprintln!("traplab: interrupted; QEMU stopped.");
        return;
    }
    if finish.timed_out {
        eprintln!("traplab: the lab did not finish in time; QEMU stopped.");
    }
    match finish.hv_status {
        Some(HvStatus::Done) => {}
        Some(hv) => eprintln!("traplab: the hypervisor stopped: {}", hv.explain()),
        None => eprintln!(
            "traplab: QEMU stopped without a hypervisor status (exit code {:?}, signal {:?})",
            finish.exit_code, finish.signal
        ),
    }
    if !finish.stderr.trim().is_empty() {
        eprintln!("QEMU said:\n{}", finish.stderr.trim_end());
    }
    if !verbose && !log_tail.is_empty() && finish.hv_status != Some(HvStatus::Done) {
        eprintln!("the hypervisor's log ended with:");
        for line in log_tail {
            eprintln!("  {line}");
        }
    }
}

impl From<crate::cli::GdbArgs> for TraceArgs {
    /// `traplab gdb LAB` is `traplab trace LAB --gdb PORT`.
    fn from(args: crate::cli::GdbArgs) -> TraceArgs {
        TraceArgs {
            lab: args.lab,
            guest: args.guest,
            kernel: args.kernel,
            json: args.json,
            record: None,
            verbose: args.verbose,
            yes: args.yes,
            settings: Vec::new(),
            qemu_args: Vec::new(),
            accel: args.accel,
            gdb: Some(args.port),
            domain: args.domain,
            timeout: None,
            disk: args.disk,
            only: Vec::new(),
            hide: Vec::new(),
        }
    }
}

/// An event as `trace` prints it: JSON (`--json`) or one line of text.
fn event_line(event: &Event, json: bool) -> String {
    if json {
        json::to_line(event)
    } else {
        text::line(event)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn finish(hv_status: Option<HvStatus>) -> Finish {
        Finish {
            exit_code: Some(1),
            signal: None,
            hv_status,
            stderr: String::new(),
            interrupted: false,
            timed_out: false,
            stopped: None,
            ring_broken: false,
        }
    }

    #[test]
    fn each_way_a_run_ends_has_its_status() {
        let done = finish(Some(HvStatus::Done));
        assert_eq!(exit_code(&done, false, Some(0), false), 0);
        assert_eq!(
            exit_code(&done, false, Some(3), false),
            3,
            "the guest's own"
        );
        assert_eq!(
            exit_code(&done, true, Some(0), false),
            status::DOMAIN_KILLED
        );
        assert_eq!(
            exit_code(&done, false, Some(0), true),
            status::TRACE_INCOMPLETE
        );
        assert_eq!(exit_code(&done, false, None, false), status::HV_FAILED);
        assert_eq!(
            exit_code(&finish(None), false, None, true),
            status::HV_FAILED
        );
        let late = Finish {
            timed_out: true,
            ..finish(None)
        };
        assert_eq!(exit_code(&late, false, None, true), status::TIMED_OUT);
        let stopped = Finish {
            interrupted: true,
            ..finish(None)
        };
        assert_eq!(exit_code(&stopped, false, None, true), status::INTERRUPTED);
    }

    #[test]
    fn with_several_domains_the_first_that_failed_gives_the_status() {
        // swap-in's order: d2 ends first, then d1 (here with 3), then d0 with 0.
        let mut ended = Ended::default();
        for (dom, status) in [(2, 0), (1, 3), (0, 0)] {
            ended.exited(Some(dom), Some(status));
        }
        assert_eq!(ended.failed, Some((Some(1), 3)));
        assert_eq!(ended.status(), Some(3));
        let mut all_well = Ended::default();
        for dom in [2, 1, 0] {
            all_well.exited(Some(dom), Some(0));
        }
        assert_eq!(all_well.status(), Some(0));
        assert_eq!(Ended::default().status(), None, "none exited");
    }
}
