//! The command line (clap).

use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;

/// traplab: what exactly happens when a guest traps?
///
/// A small real hypervisor (AMD SVM, booted by QEMU) runs lab guests and records every step
/// of every trap: the exit, the hypervisor's decision, what it emulated or injected, and the
/// resume.
#[derive(Debug, Parser)]
#[command(name = "traplab", version, after_help = AFTER_HELP)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

const AFTER_HELP: &str = "\
Start with:   traplab list
              traplab trace hello
              traplab check hello --exercise 1
The book (one chapter per lab, with its exercises): mdbook serve book
Labs need qemu-system-x86_64; traplab offers to install it (Debian/Ubuntu) when it is missing.";

#[derive(Debug, Subcommand)]
pub enum Command {
    /// List the labs.
    List(ListArgs),
    /// Run a lab and print every event of its trace as it happens.
    Trace(TraceArgs),
    /// Measure the trace transport: trap rate with the trace off and on, events per second.
    Bench(BenchArgs),
    /// Run labs headless and check that they produce their expected flow, or grade an exercise.
    Check(crate::commands::check::CheckArgs),
    /// Write the traces the book shows (book/src/generated/) by running every lab.
    #[command(hide = true)]
    BookTraces(crate::commands::book_traces::BookTracesArgs),
}

#[derive(Debug, Args)]
pub struct ListArgs {
    /// Print a JSON array of labs (id, title, part, classes, guests) instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
#[command(after_help = "\
Exit status: the guest's exit status when the lab's domain exited; 137 when the
hypervisor killed a domain; 124 when the trace lost events or ended early; 125 when the
hypervisor or QEMU failed; 130 on Ctrl-C; 2 for usage errors.")]
pub struct TraceArgs {
    /// The lab to run (see `traplab list`).
    #[arg(required_unless_present = "guest")]
    pub lab: Option<String>,
    /// Run this guest program instead of a lab (guests/src/bin/NAME.rs), e.g. `bad-vmrun`.
    #[arg(long, value_name = "NAME", conflicts_with = "lab")]
    pub guest: Option<String>,
    /// Print JSON Lines (the recorded format, see tracer/SCHEMA.md) instead of text.
    #[arg(long)]
    pub json: bool,
    /// Also save the trace as JSON Lines in FILE.
    #[arg(long, value_name = "FILE")]
    pub record: Option<PathBuf>,
    /// Also print the hypervisor's own log (its serial console).
    #[arg(long, short)]
    pub verbose: bool,
    /// Install what is missing (QEMU) without asking.
    #[arg(long, short)]
    pub yes: bool,
    /// Turn on a hypervisor setting (repeat for several), e.g. `--setting intercept-rdtsc`;
    /// the settings are listed in abi/src/settings.rs. A lab's own settings stay on.
    #[arg(long = "setting", value_name = "NAME")]
    pub settings: Vec<String>,
    /// Pass ARG to QEMU as it is (repeat for several), e.g. `--qemu-arg=-s` to debug the
    /// hypervisor itself with QEMU's own gdb stub on port 1234.
    #[arg(long = "qemu-arg", value_name = "ARG", allow_hyphen_values = true)]
    pub qemu_args: Vec<String>,
    /// Stop the lab after this many seconds.
    #[arg(long, value_name = "SECONDS", default_value_t = 300)]
    pub timeout: u64,
}

#[derive(Debug, Args)]
pub struct BenchArgs {
    /// How many times to run each configuration (the median is reported).
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
    /// Print the figures as JSON.
    #[arg(long)]
    pub json: bool,
    /// Install what is missing (QEMU) without asking.
    #[arg(long, short)]
    pub yes: bool,
}
