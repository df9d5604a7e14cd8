//! `traplab`: the command a student runs.
//!
//! Each subcommand is one file in `commands/`; slow work (QEMU, the trace stream) lives in
//! the `traplab-tracer` crate, the lab catalogue in `traplab-labs`.

use clap::Parser;
use std::process::ExitCode;
use traplab_tui::{cli, commands};

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    let result = match cli.command {
        cli::Command::List(args) => commands::list::run(&args),
        cli::Command::Trace(args) => commands::trace::run(&args),
        cli::Command::Gdb(args) => commands::trace::run(&args.into()),
        cli::Command::Bench(args) => commands::bench::run(&args),
        cli::Command::Stats(args) => commands::stats::run(&args),
        cli::Command::Export(args) => commands::export::run(&args),
        cli::Command::Diff(args) => commands::diff::run(&args),
        cli::Command::Replay(args) => commands::replay::run(&args),
        cli::Command::Run(args) => commands::run::run(&args),
        cli::Command::Check(args) => commands::check::run(&args),
        cli::Command::BookTraces(args) => commands::book_traces::run(&args),
    };
    match result {
        Ok(code) => code,
        Err(failure) => {
            eprintln!("traplab: {}", failure.message);
            ExitCode::from(failure.status)
        }
    }
}
