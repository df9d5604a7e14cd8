//! `traplab`: the command a student runs.
//!
//! Each subcommand is one file in `commands/`; slow work (QEMU, the trace stream) lives in
//! the `traplab-tracer` crate, the lab catalogue in `traplab-labs`.

mod cli;
mod commands;
mod setup;

use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    let result = match cli.command {
        cli::Command::List(args) => commands::list::run(&args),
        cli::Command::Trace(args) => commands::trace::run(&args),
        cli::Command::Bench(args) => commands::bench::run(&args),
        cli::Command::Check(args) => commands::check::run(&args),
        cli::Command::BookTraces(args) => commands::book_traces::run(&args),
    };
    match result {
        Ok(code) => code,
        Err(error) => {
            eprintln!("traplab: {error}");
            ExitCode::from(commands::status::USAGE)
        }
    }
}
