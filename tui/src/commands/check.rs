//! `traplab check <lab>`, `traplab check --all`, `traplab check <lab> --exercise N`: run
//! labs headless and grade them — does the trace show the lab's expected flow (or the
//! solved exercise's), and did every domain end as it should? A mismatch is explained in a
//! student's words; `--json` prints one JSON line per check for graders.
//!
//! The grading itself is `traplab_labs::grade`, the same the tests use.

use super::status;
use crate::setup;
use clap::Args;
use std::io::Write;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use traplab_labs::grade::{self, Verdict};
use traplab_labs::{Exercise, Lab};
use traplab_tracer::qemu::Machine;
use traplab_tracer::session::{self, Options};
use traplab_tracer::symbols::Symbols;

#[derive(Debug, Args)]
#[command(after_help = "\
Examples:
  traplab check page-fault                 the lab's own flow
  traplab check page-fault --exercise 1    grade exercise 1 (its chapter in the book says what to do)
  traplab check --all --json               every lab, one JSON line each (for graders)

Exit status: 0 when every check passed; 1 when one did not (the explanation says which
step did not happen and what the hypervisor did instead); 130 on Ctrl-C; 2 for usage errors.")]
pub struct CheckArgs {
    /// The lab to check (see `traplab list`).
    #[arg(required_unless_present = "all", conflicts_with = "all")]
    pub lab: Option<String>,
    /// Check every lab's own flow.
    #[arg(long)]
    pub all: bool,
    /// Grade exercise N of the lab instead of its own flow: the code you changed must
    /// produce the exercise's flow.
    #[arg(long, value_name = "N", conflicts_with = "all")]
    pub exercise: Option<u32>,
    /// Print one JSON object per check (lab, exercise, passed, steps, matched, problems).
    #[arg(long)]
    pub json: bool,
    /// Install what is missing (QEMU) without asking.
    #[arg(long, short)]
    pub yes: bool,
    /// Stop a lab after this many seconds.
    #[arg(long, value_name = "SECONDS", default_value_t = 120)]
    pub timeout: u64,
    #[command(flatten)]
    pub disk: crate::cli::DiskImage,
}

pub fn run(args: &CheckArgs) -> Result<ExitCode, String> {
    let labs = traplab_labs::all().map_err(|error| error.to_string())?;
    let selected: Vec<&Lab> = match &args.lab {
        Some(id) => vec![labs.iter().find(|lab| &lab.id == id).ok_or_else(|| {
            format!("there is no lab called \"{id}\"; `traplab list` shows them")
        })?],
        None => labs.iter().collect(),
    };
    let exercise = match (args.exercise, selected.as_slice()) {
        (Some(number), [lab]) => Some(lab.exercise(number).ok_or_else(
            || match lab.exercises.len() {
                0 => format!("lab {} has no exercises", lab.id),
                count => format!("lab {} has exercises 1 to {count}, not {number}", lab.id),
            },
        )?),
        _ => None,
    };
    if let (Some(image), true) = (&args.disk.image, args.all) {
        return Err(format!(
            "--disk {}: one image is for one lab, not for --all",
            image.display()
        ));
    }
    setup::ensure_qemu(args.yes)?;

    let stop = Arc::new(AtomicBool::new(false));
    let handler_stop = Arc::clone(&stop);
    // Ctrl-C stops the lab that runs (QEMU in order), then we stop. Ignore the error if a
    // handler exists already.
    let _ = ctrlc::set_handler(move || handler_stop.store(true, Ordering::SeqCst));
    let options = Options {
        stop: Some(Arc::clone(&stop)),
        timeout: Some(Duration::from_secs(args.timeout)),
        read_interval: None,
    };

    let mut out = std::io::stdout().lock();
    let mut passed = 0;
    for lab in &selected {
        let mut machine = lab.machine();
        super::keep_disk_image(&mut machine, &lab.id, &args.disk)?;
        let verdict = check(lab, &machine, exercise, &options)?;
        if stop.load(Ordering::SeqCst) {
            return Ok(ExitCode::from(status::INTERRUPTED));
        }
        passed += verdict.passed as usize;
        // A closed pipe (`| head`) ends the output, not the checks.
        let _ = if args.json {
            writeln!(
                out,
                "{}",
                serde_json::to_string(&verdict).map_err(|error| error.to_string())?
            )
        } else {
            write!(out, "{}", verdict.report(lab, exercise))
        };
    }
    if selected.len() > 1 && !args.json {
        let _ = writeln!(out, "{passed} of {} labs passed", selected.len());
    }
    Ok(if passed == selected.len() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// Run `lab` once on `machine` (the lab's own, perhaps with a kept disk image) and grade it.
fn check(
    lab: &Lab,
    machine: &Machine,
    exercise: Option<&Exercise>,
    options: &Options,
) -> Result<Verdict, String> {
    let elf = traplab_labs::guest_elf(&lab.guests[0]);
    let symbols = Symbols::load(&elf)
        .map_err(|error| format!("cannot read the symbols of {}: {error}", elf.display()))?;
    let run = session::collect(machine, options.clone()).map_err(|error| error.to_string())?;
    Ok(grade::grade(lab, exercise, &run, &symbols))
}
