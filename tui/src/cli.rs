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
Labs need qemu-system-x86_64; traplab offers to install it (Debian/Ubuntu) when it is missing.";

#[derive(Debug, Subcommand)]
pub enum Command {
    /// List the labs.
    List(ListArgs),
    /// Run a lab and print every event of its trace as it happens.
    Trace(TraceArgs),
    /// Run a lab with gdb attached to its guest: it starts stopped at the guest's first
    /// instruction, and the gdb command line to attach is printed (`traplab trace --gdb`).
    Gdb(GdbArgs),
    /// Measure the trace transport: trap rate with the trace off and on, events per second.
    Bench(BenchArgs),
}

/// The TCP port gdb attaches to by default: 2159, IANA's "gdbremote" (QEMU's own stub for
/// debugging the hypervisor stays on 1234).
pub const GDB_PORT: u16 = 2159;

#[derive(Debug, Args)]
#[command(after_help = "\
The guest starts stopped at its first instruction; attach with the printed command, e.g.
  gdb -q target/bare/x86_64-unknown-linux-gnu/release/page-fault -ex 'target remote 127.0.0.1:2159'
Then: break, continue, stepi, x, info registers (with cr0, cr2, cr3, cr4, efer), watch, and
`monitor help` for the hypervisor's own commands (traps, catch, decision).
The trace is printed as with `traplab trace`; the exit status is the same.")]
pub struct GdbArgs {
    /// The lab to run (see `traplab list`); gdb attaches to its first guest (domain 0).
    #[arg(required_unless_present = "guest")]
    pub lab: Option<String>,
    /// Run this guest program instead of a lab.
    #[arg(long, value_name = "NAME", conflicts_with = "lab")]
    pub guest: Option<String>,
    /// The loopback TCP port for gdb.
    #[arg(long, default_value_t = GDB_PORT)]
    pub port: u16,
    /// Print the trace as JSON Lines instead of text.
    #[arg(long)]
    pub json: bool,
    /// Also print the hypervisor's own log (its serial console).
    #[arg(long, short)]
    pub verbose: bool,
    /// Install what is missing (QEMU) without asking.
    #[arg(long, short)]
    pub yes: bool,
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
    /// Serve gdb for the lab's first guest on this loopback port (default 2159): the guest
    /// starts stopped at its first instruction; the gdb command line is printed.
    #[arg(long, value_name = "PORT", num_args = 0..=1, default_missing_value = "2159")]
    pub gdb: Option<u16>,
    /// Stop the lab after this many seconds (default 300; none with --gdb).
    #[arg(long, value_name = "SECONDS")]
    pub timeout: Option<u64>,
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
