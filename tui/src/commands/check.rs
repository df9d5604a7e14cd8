//! `traplab check <lab>`, `traplab check --all`, `traplab check <lab> --exercise N`: run
//! labs headless and grade them — does the trace show the lab's expected flow (or the
//! solved exercise's), and did every domain end as it should? A mismatch is explained in a
//! student's words; `--json` prints one JSON line per check for graders.
//!
//! `traplab check --kernel FILE` (or `--guest NAME`) grades a program that is not a lab the
//! way a kernel test suite is graded on QEMU: it passes when it ends by itself with the exit
//! status it should (`--status`, 0 by default: a write of 0 to isa-debug-exit, or a lab
//! guest's `exit(0)`), and the trace is whole.
//!
//! Before it runs anything, check rebuilds what changed in the hypervisor and the guests
//! ([`super::bring_up_to_date`]): it grades the code as it is, never the programs of an older build. A run
//! whose domain is stuck on one fault stops early (`traplab_labs::run::watch`), and on a
//! terminal a line says how the check is going ([`ProgressLine`]).
//!
//! The grading itself is `traplab_labs::grade`, the same the tests use.

use super::Failure;
use super::progress::ProgressLine;
use super::status::{self, BUILD_FAILED, INTERRUPTED, NOT_PASSED, SUCCESS, USAGE};
use crate::setup;
use clap::Args;
use std::io::Write;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use traplab_labs::grade::{self, Problem, Verdict};
use traplab_labs::run::Progress;
use traplab_labs::{Exercise, Lab};
use traplab_tracer::qemu::Machine;
use traplab_tracer::session::Options;
use traplab_tracer::symbols::Symbols;

#[derive(Debug, Args)]
#[command(after_help = check_help())]
pub struct CheckArgs {
    /// The lab to check (see `traplab list`).
    #[arg(
        required_unless_present_any = ["all", "guest", "kernel", "initrd", "append", "memory"],
        conflicts_with = "all"
    )]
    pub lab: Option<String>,
    /// Check every lab's own flow.
    #[arg(long, conflicts_with_all = ["guest", "kernel"])]
    pub all: bool,
    /// Check this guest program instead of a lab (guests/src/bin/NAME.rs): it passes when
    /// it exits with --status.
    #[arg(long, value_name = "NAME", conflicts_with = "lab")]
    pub guest: Option<String>,
    #[command(flatten)]
    pub kernel: crate::cli::KernelArgs,
    /// With --kernel or --guest: the exit status it must end with (a kernel's: the value it
    /// writes to isa-debug-exit, port 0xf4).
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub status: i32,
    /// Grade exercise N of the lab instead of its own flow: the code you changed must
    /// produce the exercise's flow.
    #[arg(long, value_name = "N", conflicts_with = "all")]
    pub exercise: Option<u32>,
    /// Print one JSON object per check (lab, exercise, passed, steps, matched, problems).
    #[arg(long)]
    pub json: bool,
    /// Install or fetch what is missing (QEMU; a Linux lab's kernel) without asking.
    #[arg(long, short)]
    pub yes: bool,
    /// Stop a lab after this many seconds.
    #[arg(long, value_name = "SECONDS", default_value_t = 120)]
    pub timeout: u64,
    #[command(flatten)]
    pub disk: crate::cli::DiskImage,
}

/// `traplab check --help`'s last part.
fn check_help() -> String {
    format!(
        "Examples:
  traplab check page-fault                 the lab's own flow
  traplab check page-fault --exercise 1    grade exercise 1 (its chapter in the book says what to do)
  traplab check --all --json               every lab, one JSON line each (for graders)
  traplab check --kernel FILE              a kernel of your own: it must end with status 0 by itself

First, check rebuilds what changed in the hypervisor and the guests (the same cargo build as
`cargo build`): it grades the code as it is now, never an older build. A domain that takes
the same fault {stuck} times in a row, with the same registers (a handler that never fixes
it), is stuck: its run stops there, and the report says which fault repeats. On a terminal,
a line shows how the check is going.

{}",
        status::help(&[SUCCESS, NOT_PASSED, USAGE, BUILD_FAILED, INTERRUPTED]),
        stuck = traplab_labs::run::STUCK_AFTER
    )
}

pub fn run(args: &CheckArgs) -> Result<ExitCode, Failure> {
    if args.kernel.kernel.is_some() || args.guest.is_some() {
        return run_program(args);
    }
    if args.status != 0 {
        return Err("--status is for --kernel or --guest: a lab says itself how it ends".into());
    }
    let labs = traplab_labs::all().map_err(|error| error.to_string())?;
    let selected: Vec<&Lab> = match &args.lab {
        Some(id) => vec![
            labs.iter()
                .find(|lab| &lab.id == id)
                .ok_or_else(|| traplab_labs::no_such_lab(id, &labs))?,
        ],
        None => labs.iter().collect(),
    };
    let exercise = match (args.exercise, selected.as_slice()) {
        (Some(number), [lab]) => Some(lab.exercise(number).ok_or_else(
            || match lab.exercises.len() {
                0 => format!("lab {} has no exercises", lab.id),
                1 => format!("lab {} has one exercise, number 1, not {number}", lab.id),
                count => format!("lab {} has exercises 1 to {count}, not {number}", lab.id),
            },
        )?),
        _ => None,
    };
    if let (Some(image), true) = (&args.disk.image, args.all) {
        return Err(format!(
            "--disk {}: one image is for one lab, not for --all",
            image.display()
        )
        .into());
    }
    let mut progress = ProgressLine::stderr();
    super::bring_up_to_date(super::OlderBuild::Refuse)?;
    setup::ensure_qemu(args.yes)?;
    let (stop, options) = stoppable(args.timeout);

    // Debian's Linux kernel, if a lab to check boots it: asked for (or fetched) once, before
    // the first lab. Without it, those labs are not passed, and the others still graded.
    let no_kernel = match selected.iter().find(|lab| lab.boots_linux()) {
        Some(lab) => setup::ensure_lab_kernel(lab, args.yes).err(),
        None => None,
    };
    let mut out = std::io::stdout().lock();
    let mut passed = 0;
    for (number, lab) in selected.iter().enumerate() {
        if let (Some(why), true) = (&no_kernel, lab.boots_linux()) {
            let verdict = without_its_kernel(lab, exercise.map(|exercise| exercise.number), why);
            write_verdict(&mut out, args.json, &verdict, || {
                verdict.report(lab, exercise)
            })?;
            continue;
        }
        // An exercise may run its own guests (its guest as d1 and d2, say).
        let runs = exercise.map_or_else(|| (*lab).clone(), |exercise| exercise.lab(lab));
        let mut machine = runs.machine()?;
        super::keep_disk_image(&mut machine, &lab.id, &args.disk)?;
        let name = match (exercise, selected.len()) {
            (Some(exercise), _) => format!("{} exercise {}", lab.id, exercise.number),
            (None, 1) => lab.id.clone(),
            (None, count) => format!("{} ({} of {count})", lab.id, number + 1),
        };
        let symbols = lab_symbols(&runs)?;
        let verdict = check(
            lab,
            &machine,
            exercise,
            &options,
            &symbols,
            &name,
            &mut progress,
        )?;
        if stop.load(Ordering::SeqCst) {
            return Ok(ExitCode::from(status::INTERRUPTED));
        }
        passed += verdict.passed as usize;
        write_verdict(&mut out, args.json, &verdict, || {
            verdict.report(lab, exercise)
        })?;
    }
    if selected.len() > 1 && !args.json {
        let _ = writeln!(out, "{passed} of {} labs passed", selected.len());
    }
    Ok(ExitCode::from(if passed == selected.len() {
        status::SUCCESS
    } else {
        status::NOT_PASSED
    }))
}

/// The symbols of a lab's first guest, which its expected flow may name.
fn lab_symbols(lab: &Lab) -> Result<Symbols, String> {
    lab.symbols().map_err(|error| {
        format!(
            "{error} (the guests of {})",
            traplab_labs::tree::tree().describe()
        )
    })
}

/// A stop flag that Ctrl-C raises (it stops the lab that runs, QEMU in order, then we
/// stop), and the run options with it and the time limit.
fn stoppable(timeout: u64) -> (Arc<AtomicBool>, Options) {
    let stop = Arc::new(AtomicBool::new(false));
    let handler_stop = Arc::clone(&stop);
    // Ignore the error if a handler exists already.
    let _ = ctrlc::set_handler(move || handler_stop.store(true, Ordering::SeqCst));
    let options = Options {
        stop: Some(Arc::clone(&stop)),
        timeout: Some(Duration::from_secs(timeout)),
        read_interval: None,
    };
    (stop, options)
}

/// Run `lab` once on `machine` (the lab's own, perhaps with a kept disk image) and grade it;
/// meanwhile the progress line says how checking `name` goes.
fn check(
    lab: &Lab,
    machine: &Machine,
    exercise: Option<&Exercise>,
    options: &Options,
    symbols: &Symbols,
    name: &str,
    progress: &mut ProgressLine<std::io::Stderr>,
) -> Result<Verdict, String> {
    let run = traplab_labs::run::watch(machine, options.clone(), |run: Progress| {
        progress.show(&format!(
            "checking {name}: {} events, {} s",
            run.events,
            run.elapsed.as_secs()
        ));
    })
    .map_err(|error| error.to_string())?;
    progress.clear();
    Ok(grade::grade(lab, exercise, &run, symbols))
}

/// The verdict on a lab that boots Linux when Debian's kernel could not be had: not passed,
/// and why, with what fetches it.
fn without_its_kernel(lab: &Lab, exercise: Option<u32>, why: &str) -> Verdict {
    Verdict {
        lab: lab.id.clone(),
        exercise,
        passed: false,
        steps: lab.expect.len(),
        matched: 0,
        events: 0,
        problems: vec![Problem::Run {
            explanation: format!(
                "not run: it boots Debian's Linux kernel, which is not here ({why})"
            ),
        }],
    }
}

/// One verdict on `out`: a JSON line, or the report `text` makes. A closed pipe (`| head`)
/// ends the output, not the checks.
fn write_verdict(
    out: &mut impl Write,
    json: bool,
    verdict: &Verdict,
    text: impl FnOnce() -> String,
) -> Result<(), String> {
    let _ = match json {
        true => writeln!(
            out,
            "{}",
            serde_json::to_string(verdict).map_err(|error| error.to_string())?
        ),
        false => write!(out, "{}", text()),
    };
    Ok(())
}

/// `check --kernel FILE` or `check --guest NAME`: run it alone, as `trace` would, and grade
/// it as a lab with no flow to show whose one domain must exit with `--status`.
fn run_program(args: &CheckArgs) -> Result<ExitCode, Failure> {
    if args.exercise.is_some() {
        return Err("--exercise grades a lab's exercise, not a --kernel or a --guest".into());
    }
    let (name, mut machine) = super::machine(&None, &args.guest, &args.kernel, &[], args.yes)?;
    super::keep_disk_image(&mut machine, &name, &args.disk)?;
    let mut progress = ProgressLine::stderr();
    if args.guest.is_some() {
        // A guest program of this tree: graded as it is now (a kernel file is what it is).
        super::bring_up_to_date(super::OlderBuild::Refuse)?;
    }
    setup::ensure_qemu(args.yes)?;
    let (stop, options) = stoppable(args.timeout);
    let program = program_lab(&name, args.status);
    // A kernel image may be no ELF at all (the multiboot address fields): then it has no
    // symbols, and nothing here needs them.
    let symbols = match &args.kernel.kernel {
        Some(image) => Symbols::load(image).unwrap_or_default(),
        None => lab_symbols(&program)?,
    };
    let verdict = check(
        &program,
        &machine,
        None,
        &options,
        &symbols,
        &name,
        &mut progress,
    )?;
    if stop.load(Ordering::SeqCst) {
        return Ok(ExitCode::from(status::INTERRUPTED));
    }
    let how_to_look = match (&args.kernel.kernel, &args.guest) {
        (Some(image), _) => format!("traplab trace --kernel {}", image.display()),
        (None, guest) => format!(
            "traplab trace --guest {}",
            guest.as_deref().unwrap_or(&name)
        ),
    };
    write_verdict(&mut std::io::stdout().lock(), args.json, &verdict, || {
        program_report(&verdict, &name, args.status, &how_to_look)
    })?;
    Ok(ExitCode::from(if verdict.passed {
        status::SUCCESS
    } else {
        status::NOT_PASSED
    }))
}

/// A kernel or guest program checked as a lab: one domain (d1), no flow to show, and the
/// status it must exit with.
fn program_lab(name: &str, exit_status: i32) -> Lab {
    Lab {
        id: name.into(),
        title: name.into(),
        part: String::new(),
        classes: Vec::new(),
        guests: vec![name.into()],
        dom0: None,
        start: Default::default(),
        summary: String::new(),
        settings: Vec::new(),
        disk: None,
        boot: None,
        status: exit_status,
        killed: Vec::new(),
        expect: Vec::new(),
        questions: Vec::new(),
        exercises: Vec::new(),
    }
}

/// What `check --kernel` says: passed, or why not and how to see the whole run.
fn program_report(verdict: &Verdict, name: &str, exit_status: i32, how_to_look: &str) -> String {
    if verdict.passed {
        return format!("{name}: passed (it exited with status {exit_status})\n");
    }
    let mut text = format!("{name}: NOT PASSED\n");
    for problem in &verdict.problems {
        text.push_str(&format!("  - {}\n", problem.explanation()));
    }
    text.push_str(&format!("  `{how_to_look}` shows the whole trace.\n"));
    text
}
