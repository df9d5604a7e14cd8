//! Where the offline commands (`stats`, `export`, `diff`, `replay`) get a trace: a
//! recording, or, for `stats`, a lab run on the spot.

use super::{Failure, status};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use traplab_tracer::qemu::Machine;
use traplab_tracer::session::{Item, Options, Session};
use traplab_tracer::store::Trace;

/// Open a recording. A file with no event at all (every line bad, or none) is not a
/// recording: an error. A bad line in one is reported on stderr and skipped (the trace holds
/// every other line's event), and so is what the trace lacks (a gap, lost events, no end
/// event); the status to exit with says whether there was either ([`report`]).
pub fn recording(path: &Path) -> Result<(Trace, u8), Failure> {
    let trace =
        Trace::open(path).map_err(|error| format!("cannot read {}: {error}", path.display()))?;
    if let Some(failure) = not_a_recording(path, &trace) {
        return Err(failure);
    }
    Ok(report(trace))
}

/// The error for a file read (so far) into `trace` that holds no event: `/etc/passwd` is
/// not an empty recording. `None` when it has events, counting one held back while the
/// file loads (a recording cut from a longer one: its first event waits for the lines after
/// it, `order.rs`), which a bad line after it does not make "no recording".
pub fn not_a_recording(path: &Path, trace: &Trace) -> Option<Failure> {
    if !trace.holds_no_event() {
        return None;
    }
    let why = match trace.error() {
        Some(error) => format!("its line {} is not an event ({})", error.line, error.error),
        None => "it holds no event".to_string(),
    };
    Some(Failure::new(
        status::BAD_RECORDING,
        format!(
            "{} is not a recording: {why}; `traplab trace LAB --record FILE` makes one",
            path.display()
        ),
    ))
}

/// Say on stderr what is wrong with a trace read to its end, each thing a
/// [`super::trace_fault`]; the exit status that says it: [`status::BAD_RECORDING`] for a bad line, else
/// [`status::TRACE_INCOMPLETE`] when events are missing or the end event is (the commands
/// show what the trace holds all the same: the status is what tells a script it is not all).
pub fn report(trace: Trace) -> (Trace, u8) {
    let mut bad_line = false;
    let mut incomplete = false;
    if let Some(error) = trace.error() {
        // The error quotes the file, which may hold a terminal's control characters: shown,
        // not obeyed.
        super::say_trace_fault(traplab_tracer::text::printable(&error.to_string()));
        eprintln!(
            "traplab: {} skipped (the first named above); {} events read",
            match trace.bad_lines() {
                1 => "that line was".to_string(),
                lines => format!(
                    "{lines} bad lines ({}) were",
                    line_runs(trace.bad_line_runs())
                ),
            },
            trace.len()
        );
        bad_line = true;
    }
    for (fault, line) in trace.faults_by_line() {
        match line {
            Some(line) => super::say_trace_fault(format!(
                "{}:{line}: {fault}",
                traplab_tracer::text::printable(&trace.name)
            )),
            None => super::say_trace_fault(fault),
        }
        incomplete = true;
    }
    let code = status::of_recordings(&[
        if bad_line {
            status::BAD_RECORDING
        } else {
            status::SUCCESS
        },
        if incomplete {
            status::TRACE_INCOMPLETE
        } else {
            status::SUCCESS
        },
    ]);
    (trace, code)
}

/// How many runs of bad lines [`report`] names; the rest it counts. (A recording with log
/// lines mixed in, `traplab trace LAB 2>&1 >FILE`, has a run for every other line: naming
/// each would make a message of a million numbers.)
const RUNS_NAMED: usize = 10;

/// Runs of line numbers in words, the first [`RUNS_NAMED`] of them: `lines 7, 101–140`, then
/// `… and 5 more runs (12 lines)`.
fn line_runs(runs: &[(usize, usize)]) -> String {
    let (named, more) = runs.split_at(runs.len().min(RUNS_NAMED));
    let named: Vec<String> = named
        .iter()
        .map(|&(first, last)| match first == last {
            true => first.to_string(),
            false => format!("{first}–{last}"),
        })
        .collect();
    let mut words = format!("lines {}", named.join(", "));
    if !more.is_empty() {
        let lines: usize = more.iter().map(|&(first, last)| last - first + 1).sum();
        words.push_str(&format!(
            " … and {} more {} ({lines} {})",
            more.len(),
            plural(more.len(), "run"),
            plural(lines, "line")
        ));
    }
    words
}

/// `word`, with an `s` unless there is one.
fn plural(count: usize, word: &str) -> String {
    match count {
        1 => word.to_string(),
        _ => format!("{word}s"),
    }
}

/// Domain `dom`, which option `flag` names, is one of `trace`'s; else the usage error that
/// says which domains it has.
pub fn has_domain(trace: &Trace, dom: u16, flag: &str) -> Result<(), Failure> {
    if trace.flows().iter().any(|flow| flow.dom == dom) || trace.domain_name(dom).is_some() {
        return Ok(());
    }
    let there: Vec<String> = trace
        .domains()
        .iter()
        .map(|(dom, name)| format!("{dom} ({name})"))
        .collect();
    Err(format!(
        "{flag} {dom}: {} has no domain {dom}; its domains are {}",
        trace.name,
        if there.is_empty() {
            "none".to_string()
        } else {
            there.join(", ")
        }
    )
    .into())
}

/// A recording when `what` is a file, else the lab of that name, run now without a screen.
/// Something else that is there and is no lab (a directory) is read as a recording all the
/// same, so that the error says why it cannot be one, as `replay`'s does.
pub fn file_or_lab(what: &str, yes: bool) -> Result<(Trace, u8), Failure> {
    let path = Path::new(what);
    if path.is_file() {
        return recording(path);
    }
    let labs = traplab_labs::all().map_err(|error| error.to_string())?;
    let lab = labs.iter().find(|lab| lab.id == what);
    if lab.is_none() && path.exists() {
        return recording(path);
    }
    let Some(lab) = lab else {
        let suggestion =
            traplab_labs::nearest::did_you_mean(what, labs.iter().map(|lab| lab.id.as_str()))
                .map(|suggestion| format!("; {suggestion}"))
                .unwrap_or_default();
        return Err(format!(
            "\"{what}\" is neither a recording (no such file) nor a lab{suggestion} (`traplab list` shows the labs)"
        )
        .into());
    };
    crate::setup::ensure_lab_kernel(lab, yes)?;
    super::bring_up_to_date(super::OlderBuild::Run)?;
    run_now(&lab.id, &lab.machine()?, yes)
}

/// Run `machine` (called `name`) now without a screen: its trace, and the status that says
/// whether the run went right.
pub fn run_now(name: &str, machine: &Machine, yes: bool) -> Result<(Trace, u8), Failure> {
    crate::setup::ensure_qemu(yes)?;
    let stop = Arc::new(AtomicBool::new(false));
    let handler_stop = Arc::clone(&stop);
    let _ = ctrlc::set_handler(move || handler_stop.store(true, Ordering::SeqCst));
    let options = Options {
        stop: Some(stop),
        timeout: Some(Duration::from_secs(300)),
        read_interval: None,
    };
    let session = Session::start(machine, options).map_err(|error| error.to_string())?;
    let mut trace = Trace::live(format!("{name} (run now)"));
    let mut broken = false;
    let mut finish = None;
    for item in session {
        match item {
            Item::Event(event) => trace.push_event(&event),
            Item::Broken(message) => {
                super::say_trace_fault(message);
                broken = true;
            }
            Item::Finished(done) => finish = Some(done),
            Item::Log(_) => {}
        }
    }
    let incomplete = broken || !trace.faults().is_empty();
    let (trace, _) = report(trace);
    // The table shows what the run did; the status says whether the run went right.
    let code = match &finish {
        Some(finish) => status::of_run(finish, incomplete).unwrap_or(status::SUCCESS),
        None => status::HV_FAILED,
    };
    if code == status::TIMED_OUT {
        eprintln!("traplab: {name} did not finish in time; QEMU stopped");
    }
    Ok((trace, code))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_first_runs_of_bad_lines_are_named_and_the_rest_counted() {
        assert_eq!(line_runs(&[(7, 7), (101, 140)]), "lines 7, 101–140");
        let ten: Vec<(usize, usize)> = (1..=10).map(|run| (run * 10, run * 10)).collect();
        assert_eq!(
            line_runs(&ten),
            "lines 10, 20, 30, 40, 50, 60, 70, 80, 90, 100",
            "ten runs are all named"
        );
        let mut eleven = ten.clone();
        eleven.push((200, 201));
        assert!(
            line_runs(&eleven).ends_with("90, 100 … and 1 more run (2 lines)"),
            "{}",
            line_runs(&eleven)
        );
        let mut twelve = eleven;
        twelve.push((300, 300));
        assert!(
            line_runs(&twelve).ends_with("100 … and 2 more runs (3 lines)"),
            "{}",
            line_runs(&twelve)
        );
    }
}
