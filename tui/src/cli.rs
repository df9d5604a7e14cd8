//! The command line (clap).

use crate::commands::status::{self, *};
use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;

/// traplab: what exactly happens when a guest traps?
///
/// A small real hypervisor (AMD SVM, booted by QEMU) runs lab guests and records every step
/// of every trap: the exit, the hypervisor's decision, what it emulated or injected, and the
/// resume.
#[derive(Debug, Parser)]
#[command(name = "traplab", version, after_help = after_help())]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

const START: &str = "\
Start with:   traplab list
              traplab trace hello
              traplab run page-fault      (then: b pf ⏎  c  s s s …  ? for the keys)
              traplab check hello --exercise 1
The book (one chapter per lab, with its exercises): traplab book-traces, then mdbook serve book
Labs need qemu-system-x86_64; traplab offers to install it (Debian/Ubuntu) when it is missing.";

/// Which tree's hypervisor and guests a command runs (`traplab_labs::tree`).
const TREE: &str = "\
traplab runs the hypervisor and the guests of the traplab tree (a folder with Cargo.toml
and labs/catalogue/) that the current directory is in; else of the one the traplab program
is in; else of the one it was built in. A message about a missing program says which tree
it looked in.";

/// `traplab --help`'s last part: where to start, which tree, every exit status.
fn after_help() -> String {
    format!(
        "{START}\n\n{TREE}\n\n{}\nEach command's --help lists the statuses it can give.",
        status::help(&status::all())
    )
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// List the labs: each one's id, title and the trap classes it shows.
    List(ListArgs),
    /// Run a lab and print every event of its trace as it happens.
    Trace(TraceArgs),
    /// Run a lab with gdb attached to one of its domains (the first guest, d1, unless
    /// --domain says otherwise): it starts stopped at its first instruction, and the gdb
    /// command line to attach is printed (`traplab trace --gdb`).
    Gdb(GdbArgs),
    /// Measure what a trap costs: the bare world switch, traplab untraced, traced; the ratios,
    /// instructions per trap (-icount), events per second, bytes per event, and the CPU time
    /// the VM's host stole meanwhile.
    Bench(BenchArgs),
    /// Run a lab under the terminal UI: break on a trap, step through it event by event.
    Run(RunArgs),
    /// Open a recording (from `traplab trace --record FILE`) in the terminal UI.
    Replay(ReplayArgs),
    /// Exits per reason and the hypervisor's time for them (like `perf kvm stat`).
    Stats(StatsArgs),
    /// Write a recording in another format: `--format perfetto` for ui.perfetto.dev.
    Export(ExportArgs),
    /// Two recordings side by side, aligned flow by flow.
    Diff(DiffArgs),
    /// Run labs headless and check that they produce their expected flow, or grade an exercise.
    Check(crate::commands::check::CheckArgs),
    /// Write the traces the book shows (book/src/generated/) by running every lab.
    #[command(hide = true)]
    BookTraces(crate::commands::book_traces::BookTracesArgs),
}

/// `--disk FILE`, for every command that runs a lab: the image behind the lab's disk.
#[derive(Debug, Clone, Default, Args)]
pub struct DiskImage {
    /// For a lab with a disk: use FILE as the disk's raw image (sector N at byte N × 512)
    /// and keep it after the run. A missing FILE is created, all zeros, at the lab's size;
    /// an existing one is used as it is. Without it the run makes a temporary image.
    #[arg(long = "disk", value_name = "FILE")]
    pub image: Option<PathBuf>,
}

/// What runs instead of a lab: `--guest NAME`, `--kernel FILE`. A kernel's option given
/// alone counts too, so that clap asks for the missing --kernel, not for a lab as well.
const INSTEAD_OF_A_LAB: [&str; 6] = ["guest", "kernel", "initrd", "append", "memory", "input"];

/// `--kernel FILE` and its options, for every command that runs a lab: run a kernel of one's
/// own instead, alone in d1.
///
/// The options conflict with a lab and a guest as --kernel does: clap lets an option's
/// `requires` go unmet when what it requires conflicts with something given, so
/// `trace hello --initrd FILE` would otherwise drop the initrd without a word.
#[derive(Debug, Clone, Default, Args)]
pub struct KernelArgs {
    /// Run this kernel image instead of a lab: a Linux bzImage, a multiboot v1 kernel (32-bit
    /// ELF, or any image with the multiboot address fields) or a traplab ELF64 guest. It runs
    /// alone as d1, named after the file.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["lab", "guest"])]
    pub kernel: Option<PathBuf>,
    /// With --kernel: load FILE as the kernel's initrd (a multiboot kernel's first module).
    #[arg(long, value_name = "FILE", requires = "kernel", conflicts_with_all = ["lab", "guest"])]
    pub initrd: Option<PathBuf>,
    /// With --kernel: the kernel's command line (one argument: quote it).
    #[arg(
        long,
        value_name = "ARGS",
        requires = "kernel",
        conflicts_with_all = ["lab", "guest"],
        allow_hyphen_values = true
    )]
    pub append: Option<String>,
    /// With --kernel only: the domain's RAM in MiB (default 16; 2 to 2048, which the
    /// hypervisor takes from QEMU's RAM below 4 GiB). QEMU's RAM grows to hold it.
    #[arg(
        long,
        value_name = "MIB",
        requires = "kernel",
        conflicts_with_all = ["lab", "guest"],
        value_parser = domain_memory
    )]
    pub memory: Option<u32>,
    /// With --kernel: TEXT typed ahead on the kernel's serial port (COM1), as if typed before
    /// it started: sent, with hardware flow control, once the kernel raises RTS, it waits in
    /// the UART's receiver until the kernel reads it. `\n` is a newline (`$'hello\nquit\n'`
    /// in bash, or a literal `\n` here).
    #[arg(
        long,
        value_name = "TEXT",
        requires = "kernel",
        conflicts_with_all = ["lab", "guest"],
        allow_hyphen_values = true
    )]
    pub input: Option<String>,
}

/// `--memory MIB`: a domain's RAM, as the hypervisor takes it (`MIN_DOMAIN_MIB` to
/// `MAX_DOMAIN_MIB`): refused here, before QEMU starts, rather than by the hypervisor.
fn domain_memory(value: &str) -> Result<u32, String> {
    use traplab_tracer::qemu::{MAX_DOMAIN_MIB, MIN_DOMAIN_MIB};
    let mib: u32 = value
        .parse()
        .map_err(|_| "a number of MiB, e.g. 64".to_string())?;
    match mib {
        MIN_DOMAIN_MIB..=MAX_DOMAIN_MIB => Ok(mib),
        0..MIN_DOMAIN_MIB => Err(format!("a domain has at least {MIN_DOMAIN_MIB} MiB of RAM")),
        _ => Err(format!(
            "at most {MAX_DOMAIN_MIB} MiB: the hypervisor takes every domain's RAM from QEMU's RAM below 4 GiB"
        )),
    }
}

/// The TCP port gdb attaches to by default: 2159, IANA's "gdbremote" (QEMU's own stub for
/// debugging the hypervisor stays on 1234).
pub const GDB_PORT: u16 = 2159;

#[derive(Debug, Args)]
#[command(after_help = "\
The debugged domain starts stopped at its first instruction; attach with the printed
command, e.g.
  gdb -q target/bare/x86_64-unknown-linux-gnu/release/page-fault -ex 'target remote 127.0.0.1:2159'
Then: break, continue, stepi, x, info registers (with cr0, cr2, cr3, cr4, cr8, efer and
k_gs_base), watch, and `monitor help` for the hypervisor's own commands (traps, catch,
decision, domains).
Domains are numbered as in Xen: a lab's guests are d1, d2, …; d0 is its control domain,
when it has one. `--domain 2` debugs the second guest.
The trace is printed as with `traplab trace`, and the exit status is the same (without 124:
gdb takes no time limit).")]
pub struct GdbArgs {
    /// The lab to run (see `traplab list`).
    #[arg(required_unless_present_any = INSTEAD_OF_A_LAB)]
    pub lab: Option<String>,
    /// The domain gdb attaches to: 1 is the lab's first guest (the default), 2 the second,
    /// 0 its control domain.
    #[arg(long, value_name = "N")]
    pub domain: Option<u16>,
    /// Run this guest program instead of a lab.
    #[arg(long, value_name = "NAME", conflicts_with = "lab")]
    pub guest: Option<String>,
    #[command(flatten)]
    pub kernel: KernelArgs,
    /// The loopback TCP port for gdb (0: a free one of the system's choosing; the gdb
    /// command line printed names it).
    #[arg(long, default_value_t = GDB_PORT)]
    pub port: u16,
    /// Who runs the guests: QEMU's TCG (the default: the labs' traces and checks are TCG's,
    /// its quirks included), or KVM where the host offers nested SVM (`kvm`; `auto` takes it
    /// when it can). Under KVM, traplab says so first.
    #[arg(long, value_enum, default_value_t = AccelChoice::Tcg)]
    pub accel: AccelChoice,
    #[command(flatten)]
    pub disk: DiskImage,
    /// Print the trace as JSON Lines instead of text.
    #[arg(long)]
    pub json: bool,
    /// Also print the hypervisor's own log (its serial console).
    #[arg(long, short)]
    pub verbose: bool,
    /// Install or fetch what is missing (QEMU; a Linux lab's kernel) without asking.
    #[arg(long, short)]
    pub yes: bool,
}

#[derive(Debug, Args)]
pub struct ListArgs {
    /// Print a JSON array of labs (id, title, part, classes, guests, dom0, start, disk)
    /// instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
#[command(after_help = trace_help())]
pub struct TraceArgs {
    /// The lab to run (see `traplab list`).
    #[arg(required_unless_present_any = INSTEAD_OF_A_LAB)]
    pub lab: Option<String>,
    /// Run this guest program instead of a lab (guests/src/bin/NAME.rs), e.g. `bad-vmrun`.
    #[arg(long, value_name = "NAME", conflicts_with = "lab")]
    pub guest: Option<String>,
    #[command(flatten)]
    pub kernel: KernelArgs,
    /// Print JSON Lines (the recorded format, see tracer/SCHEMA.md) instead of text.
    #[arg(long)]
    pub json: bool,
    /// Also save the trace as JSON Lines in FILE.
    #[arg(long, value_name = "FILE")]
    pub record: Option<PathBuf>,
    /// Also print the hypervisor's own log (its serial console), each line where it came
    /// among the events, behind a flow --only or --hide holds (to stderr with --json).
    #[arg(long, short)]
    pub verbose: bool,
    /// Install or fetch what is missing (QEMU; a Linux lab's kernel) without asking.
    #[arg(long, short)]
    pub yes: bool,
    /// Turn on a hypervisor setting (repeat for several), e.g. `--setting intercept-rdtsc`;
    /// the settings are listed in abi/src/settings.rs. A lab's own settings stay on.
    /// (Not `bench-bare`, `traplab bench`'s baseline: a trace would miss its CPUIDs.)
    #[arg(long = "setting", value_name = "NAME")]
    pub settings: Vec<String>,
    /// Pass ARG to QEMU as it is (repeat for several), e.g. `--qemu-arg=-s` to debug the
    /// hypervisor itself with QEMU's own gdb stub on port 1234.
    #[arg(long = "qemu-arg", value_name = "ARG", allow_hyphen_values = true)]
    pub qemu_args: Vec<String>,
    /// Who runs the guests: QEMU's TCG (the default: the labs' traces and checks are TCG's,
    /// its quirks included), or KVM where the host offers nested SVM (`kvm`; `auto` takes it
    /// when it can, and TCG with --qemu-arg=-icount, which counts TCG's instructions; `kvm`
    /// with it is refused). Under KVM, traplab says so first.
    #[arg(long, value_enum, default_value_t = AccelChoice::Tcg)]
    pub accel: AccelChoice,
    /// Serve gdb for one of the lab's domains on this loopback port (default 2159; 0: a
    /// free one of the system's choosing): it starts stopped at its first instruction; the
    /// gdb command line is printed.
    #[arg(long, value_name = "PORT", num_args = 0..=1, default_missing_value = "2159")]
    pub gdb: Option<u16>,
    /// With --gdb: the domain gdb attaches to (1, the lab's first guest, by default; 0 is
    /// its control domain, when it has one).
    #[arg(long, value_name = "N", requires = "gdb")]
    pub domain: Option<u16>,
    /// Stop the lab after this many seconds (default 300; 0: no limit; none by default with
    /// --gdb or with QEMU's own gdb stub, --qemu-arg=-s or -S).
    #[arg(long, value_name = "SECONDS")]
    pub timeout: Option<u64>,
    #[command(flatten)]
    pub disk: DiskImage,
    /// Print only the events of the trap flows of CLASS (repeat for several): a class as the
    /// TUI's list names it (#PF, IOIO, CPUID, upcall) or an exit reason as the trace spells
    /// it (EXCP_PF, INTR, VMMCALL). An exception a flow delivered names it too: an INT3 the
    /// hypervisor intercepts is a SWINT flow that delivers #BP, which `--only SWINT` and
    /// `--only '#BP'` both show (a flow's events are printed once its resume says what it
    /// delivered). The boot, the domains' start and end, the switches between domains and
    /// the guest's console lines are always printed. This filters what is printed, never
    /// what is recorded: --record keeps every event.
    #[arg(long, value_name = "CLASS")]
    pub only: Vec<String>,
    /// Leave out the events of the trap flows of CLASS (repeat for several), as --only
    /// names them; printed only, never recorded.
    #[arg(long, value_name = "CLASS")]
    pub hide: Vec<String>,
}

#[derive(Debug, Args)]
#[command(after_help = "\
With --ui: no QEMU; a recording of --events events (or --file) is loaded and drawn as
`traplab replay` would, and the load time, the time to the first frame, the resident
memory per event and the time to jump to the last flow are printed. Build with --release.")]
pub struct BenchArgs {
    /// Measure the terminal UI on a big recording instead of the trace transport.
    #[arg(long)]
    pub ui: bool,
    /// With --ui: how many events the generated recording has.
    #[arg(long, default_value_t = 1_000_000, requires = "ui")]
    pub events: usize,
    /// With --ui: open this recording instead of generating one.
    #[arg(long, value_name = "FILE", requires = "ui")]
    pub file: Option<PathBuf>,
    /// Measure the split block driver instead: `blk-stream` reads 256 pages straight from
    /// the disk controller it owns (the baseline), then through blkfront and the driver
    /// domain's blkback, with the trace off and on.
    #[arg(long, conflicts_with = "ui")]
    pub split_driver: bool,
    /// Measure a Linux boot instead (the linux-boot lab): the time from starting QEMU to
    /// the kernel's first program (/init's marker) on bare QEMU, under traplab with the trace
    /// off, and traced; exits and events per second, the bytes through the ring and the size
    /// of the recording.
    #[arg(long, conflicts_with_all = ["ui", "split_driver"])]
    pub linux: bool,
    /// Measure a kernel's boot instead: FILE (a Linux bzImage or a multiboot kernel, as
    /// `trace --kernel` takes it), from starting QEMU to its first console line that contains
    /// --until's TEXT, on bare QEMU (-kernel), under traplab with the trace off, and traced.
    #[arg(
        long,
        value_name = "FILE",
        requires = "until",
        conflicts_with_all = ["ui", "split_driver", "linux"]
    )]
    pub kernel: Option<PathBuf>,
    /// With --kernel: the console text that ends the boot being measured.
    #[arg(
        long,
        value_name = "TEXT",
        requires = "kernel",
        allow_hyphen_values = true
    )]
    pub until: Option<String>,
    /// With --kernel: its initrd (a multiboot kernel's first module).
    #[arg(long, value_name = "FILE", requires = "kernel")]
    pub initrd: Option<PathBuf>,
    /// With --kernel: its command line (one argument: quote it).
    #[arg(
        long,
        value_name = "ARGS",
        requires = "kernel",
        allow_hyphen_values = true
    )]
    pub append: Option<String>,
    /// With --kernel: its RAM in MiB (default 16; 2 to 2048), under traplab and bare QEMU.
    #[arg(long, value_name = "MIB", requires = "kernel", value_parser = domain_memory)]
    pub memory: Option<u32>,
    /// How many times to run each configuration (the median is reported). The bench of
    /// CPUID traps runs them in rounds, each round the three configurations back to back;
    /// its ratios are the median of the rounds' ratios, printed with their spread.
    #[arg(long, default_value_t = 5)]
    pub runs: usize,
    /// Who runs the guests: QEMU's TCG, or KVM where the host offers nested SVM (`auto`
    /// takes KVM when it can). The report says which; instruction counts (-icount) are TCG's.
    #[arg(long, value_enum, default_value_t = AccelChoice::Auto)]
    pub accel: AccelChoice,
    /// Print the figures as JSON.
    #[arg(long)]
    pub json: bool,
    /// Install or fetch what is missing (QEMU; a Linux lab's kernel) without asking.
    #[arg(long, short)]
    pub yes: bool,
}

/// `--accel`: who runs the guests (`commands::accelerator`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum AccelChoice {
    Auto,
    Tcg,
    Kvm,
}

#[derive(Debug, Args)]
#[command(after_help = stats_help())]
pub struct StatsArgs {
    /// A recording (from `traplab trace --record FILE`), or a lab to run now.
    #[arg(id = "lab", value_name = "FILE|LAB", required_unless_present_any = ["guest", "kernel"])]
    pub what: Option<String>,
    /// Run this guest program now instead (guests/src/bin/NAME.rs).
    #[arg(long, value_name = "NAME", conflicts_with = "lab")]
    pub guest: Option<String>,
    #[command(flatten)]
    pub kernel: KernelArgs,
    /// Only the exits of this domain (1 is a lab's first guest, d1; 0 its control domain).
    #[arg(long, visible_alias = "dom", value_name = "N")]
    pub domain: Option<u16>,
    /// Print JSON (times in cycles) instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Install or fetch what is missing (QEMU; a Linux lab's kernel) without asking.
    #[arg(long, short)]
    pub yes: bool,
}

// The variants' docs are `--help`'s words too, where a URL stays as it is written.
#[allow(rustdoc::bare_urls)]
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum ExportFormat {
    /// Chrome trace-event JSON: open it at https://ui.perfetto.dev (one track per domain and
    /// one for the hypervisor's switches, one slice per trap flow, its steps nested inside,
    /// arrows from delivery to return and from a notification to the upcall it caused).
    Perfetto,
}

#[derive(Debug, Args)]
#[command(after_help = status::help(&[SUCCESS, USAGE, BAD_RECORDING, TRACE_INCOMPLETE]))]
pub struct ExportArgs {
    /// A recording (from `traplab trace --record FILE`).
    pub file: PathBuf,
    #[arg(long, value_enum, default_value = "perfetto")]
    pub format: ExportFormat,
    /// Write here instead of to stdout.
    #[arg(long, short, value_name = "FILE")]
    pub output: Option<PathBuf>,
}

/// `traplab diff --help`'s last part.
const DIFF_MARKERS: &str = "\
Flows are aligned on their trap class; the marker between the sides says:
  =  the same class, handled the same way      ≠  the same class, handled differently
  <  only on the left                           >  only on the right
A flow that woke another domain is marked →d2, one whose upcall another domain's
notification caused ←d1. Compare two domains of one recording with the same FILE twice, e.g.
  traplab trace reflect-vs-bounce --record rvb.jsonl
  traplab diff rvb.jsonl rvb.jsonl --left-dom 1 --right-dom 2";

#[derive(Debug, Args)]
#[command(after_help = format!("{DIFF_MARKERS}\n\n{}", status::help(&[SUCCESS, USAGE, BAD_RECORDING, TRACE_INCOMPLETE])))]
pub struct DiffArgs {
    /// The left recording.
    pub left: PathBuf,
    /// The right recording.
    pub right: PathBuf,
    /// Only the flows of this domain on the left (1 is a lab's first guest, d1).
    #[arg(long, value_name = "N")]
    pub left_dom: Option<u16>,
    /// Only the flows of this domain on the right.
    #[arg(long, value_name = "N")]
    pub right_dom: Option<u16>,
    /// Show every row (runs of flows handled the same way are folded otherwise).
    #[arg(long)]
    pub all: bool,
}

/// The keys of the terminal UI (`run` and `replay`).
const UI_KEYS: &str = "\
Keys: j/k or ↓/↑ next/previous flow · h/l or ←/→ step back/forward one event ·
⏎ open a flow (or unfold a folded run ▸ ×N), Esc back to the list · z fold/unfold runs of
repeated flows · w/W the upcall a notification caused / the
notification that caused an upcall, in another domain · Tab (or d r x o) Detail, Registers,
Code, Console ·
/ search, n/N next/previous match · f/a filter by class/action, F clear ·
1 2 3 Flows, Flow, Stats · g/G first/last · J/K scroll the lower pane · mouse wheel
scrolls · b/B break on pf, port:0x3f8, rip:0x200240, sym:NAME…, clear · c run forward to the
next break · e finish: to the return of the handler the step is in · ? help · q quit.
Honours NO_COLOR. A recording with a bad line shows every other line's event and says which
line is bad (status 3); one that lacks events (a gap in seq, lost events, no end event, an
event after it) is shown all the same, and replay exits with 123. Each is said again on
stderr once the screen closes, as a TRACE FAULT. The status is the whole file's: quit
before a big recording is all in, and replay reads the rest without a screen (saying how far
it is) before it exits, so that a bad line or a gap further on is said and counted all the
same; Ctrl-C stops that reading at once (the rest is left unread, and nothing is said of a
file not all read: the title showed what was found), and replay exits with 130.";

/// `traplab replay --help`'s last part: the keys, the statuses.
fn replay_help() -> String {
    format!(
        "{UI_KEYS}\n\n{}",
        status::help(&[SUCCESS, USAGE, BAD_RECORDING, TRACE_INCOMPLETE, INTERRUPTED])
    )
}

/// `traplab trace --help`'s last part.
fn trace_help() -> String {
    format!(
        "The time limit holds whatever reads the output: a reader that does not read is given up\n\
         on when it passes (or at Ctrl-C, SIGTERM), and the lines it did not take are counted.\n\n\
         Exit status: the guest's own when the lab's domain exited (the labs' guests exit with 0\n\
         when all goes right; with several domains, the first that exited with another status),\n\
         unless\n{}",
        status::lines(&[
            USAGE,
            BUILD_FAILED,
            TRACE_INCOMPLETE,
            TIMED_OUT,
            HV_FAILED,
            INTERRUPTED,
            DOMAIN_KILLED
        ])
    )
}

/// `traplab stats --help`'s last part.
fn stats_help() -> String {
    format!(
        "The time of an exit is the hypervisor's share of the trap: the TSC ticks from the #VMEXIT\n\
         to the VMRUN (the `cycles` of each `resume` event, less the time the domain was switched\n\
         out while others ran; a stop at a break, a step or gdb is never counted), shown in µs with the TSC rate the hypervisor measured at boot. With\n\
         several domains, a table per domain follows the one of all exits (d1, d2, …: the numbers\n\
         Xen gives its domains). A recording with a bad line, or an incomplete one, gives the\n\
         table of the events it holds; a file that is not a recording gives none.\n\n{}\n(the last four only when it runs a lab now; its time limit is then 300 s, not --timeout, which stats has not)",
        status::help(&[
            SUCCESS,
            USAGE,
            BAD_RECORDING,
            TRACE_INCOMPLETE,
            BUILD_FAILED,
            TIMED_OUT,
            HV_FAILED,
            INTERRUPTED
        ])
    )
}

/// `traplab run --help`'s last part: the live keys, then the others, then the statuses.
fn run_help() -> String {
    format!(
        "{RUN_KEYS}\n\n{}",
        status::help(&[SUCCESS, USAGE, BUILD_FAILED, TRACE_INCOMPLETE, INTERRUPTED])
    )
}

#[derive(Debug, Args)]
#[command(after_help = run_help())]
pub struct RunArgs {
    /// The lab to run (see `traplab list`).
    #[arg(required_unless_present_any = INSTEAD_OF_A_LAB)]
    pub lab: Option<String>,
    /// Run this guest program instead of a lab (guests/src/bin/NAME.rs).
    #[arg(long, value_name = "NAME", conflicts_with = "lab")]
    pub guest: Option<String>,
    #[command(flatten)]
    pub kernel: KernelArgs,
    /// Also save the trace as JSON Lines in FILE (open it later with `traplab replay`).
    #[arg(long, value_name = "FILE")]
    pub record: Option<PathBuf>,
    /// Start running instead of waiting after boot.
    #[arg(long)]
    pub running: bool,
    /// Also serve gdb for one of the lab's domains on this loopback port (default 2159; 0: a
    /// free one of the system's choosing, named in the title): it waits at its first
    /// instruction for gdb, which resumes it (see `traplab gdb`). gdb may attach at any time,
    /// also while the UI holds the hypervisor.
    #[arg(long, value_name = "PORT", num_args = 0..=1, default_missing_value = "2159")]
    pub gdb: Option<u16>,
    /// With --gdb: the domain gdb attaches to (1, the lab's first guest, by default).
    #[arg(long, value_name = "N", requires = "gdb")]
    pub domain: Option<u16>,
    /// The hypervisor's timer, ticks per second (its INTR exits let a pause stop a guest
    /// that spins without exiting); 0 turns it off.
    #[arg(long, value_name = "HZ", default_value_t = 10)]
    pub timer_hz: u32,
    /// Turn on a hypervisor setting (repeat for several), e.g. `--setting intercept-rdtsc`
    /// (not `bench-bare`, `traplab bench`'s baseline: a trace would miss its CPUIDs).
    #[arg(long = "setting", value_name = "NAME")]
    pub settings: Vec<String>,
    /// Who runs the guests: QEMU's TCG (the default: the labs' traces and checks are TCG's,
    /// its quirks included), or KVM where the host offers nested SVM (`kvm`; `auto` takes it
    /// when it can). Under KVM, traplab says so first.
    #[arg(long, value_enum, default_value_t = AccelChoice::Tcg)]
    pub accel: AccelChoice,
    #[command(flatten)]
    pub disk: DiskImage,
    /// Install or fetch what is missing (QEMU; a Linux lab's kernel) without asking.
    #[arg(long, short)]
    pub yes: bool,
    /// With a Linux lab (linux-boot): boot to an interactive busybox shell on its serial
    /// console instead of its /init (the kernel's `rdinit=/shell`), running at once with the
    /// hypervisor's timer at Linux's 250 Hz; `i` types a command line, and the flows show
    /// the traps each command causes.
    #[arg(long)]
    pub shell: bool,
}

/// What `traplab run --help` says after the options: the live keys, then the others.
const RUN_KEYS: &str = "\
The hypervisor waits after its boot event. Then:
  b pf ⏎   break on #PF (also: ud, gp, cpuid, ioio, port:0x3f8, vector:14, hypercall:1, exit:0x7b,
           rip:0x200240 and sym:NAME: an exit there, or a resume there, as a handler's entry)
  c        continue until a break: the hypervisor stops at the exit, before it decides
  s        step one event: the decision, then the injection, then the resume
  e        finish: run to the return of the handler the step is in (after its injection)
  t        run to the next trap · p pause (even while a guest spins) · B clear the breaks
  i        type a line on COM1 of the selected flow's domain (d1 if none): a kernel reads it
Keys: j/k or ↓/↑ next/previous flow · h/l or ←/→ step back/forward one event ·
⏎ open a flow (or unfold a folded run ▸ ×N), Esc back to the list · z fold/unfold runs of
repeated flows · w/W along a notification to another domain ·
Tab (or d r x o) Detail, Registers, Code, Console ·
/ search, n/N next/previous match · f/a filter by class/action, F clear ·
1 2 3 Flows, Flow, Stats · g/G first/last · mouse wheel scrolls · ? help · q quit.
J/K scroll the lower pane. Quitting stops QEMU. Honours NO_COLOR. Ctrl-C from outside
(SIGINT, SIGTERM) stops it too.";

#[derive(Debug, Args)]
#[command(after_help = replay_help())]
pub struct ReplayArgs {
    /// A recording (from `traplab trace --record FILE` or `traplab run --record FILE`).
    pub file: PathBuf,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("traplab").chain(args.iter().copied()))
    }

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn a_kernel_replaces_the_lab_in_trace_run_gdb_and_check() {
        for command in ["trace", "run", "gdb", "check"] {
            let kernel = |cli: Cli| match cli.command {
                Command::Trace(args) => (args.lab, args.kernel),
                Command::Run(args) => (args.lab, args.kernel),
                Command::Gdb(args) => (args.lab, args.kernel),
                Command::Check(args) => (args.lab, args.kernel),
                other => panic!("{other:?}"),
            };
            let parsed = parse(&[
                command, "--kernel", "k.elf", "--initrd", "i.img", "--append", "-v a,b",
                "--memory", "64", "--input", "ls\\n",
            ])
            .unwrap_or_else(|error| panic!("{command}: {error}"));
            let (lab, args) = kernel(parsed);
            assert_eq!(lab, None);
            assert_eq!(args.kernel, Some("k.elf".into()));
            assert_eq!(args.initrd, Some("i.img".into()));
            assert_eq!(args.append.as_deref(), Some("-v a,b"));
            assert_eq!(args.memory, Some(64));
            assert_eq!(args.input.as_deref(), Some("ls\\n"));
            let error = |args: &[&str]| {
                parse(&[&[command], args].concat())
                    .err()
                    .unwrap_or_else(|| panic!("{command} {args:?} parsed"))
                    .kind()
            };
            use clap::error::ErrorKind;
            assert_eq!(
                error(&["hello", "--kernel", "k"]),
                ErrorKind::ArgumentConflict
            );
            assert_eq!(
                error(&["--guest", "hello", "--kernel", "k"]),
                ErrorKind::ArgumentConflict
            );
            // Refused, not dropped without a word.
            for with_a_lab in [
                ["hello", "--initrd", "i"].as_slice(),
                &["hello", "--append", "a"],
                &["hello", "--memory", "64"],
                &["hello", "--input", "x"],
                &["--guest", "hello", "--initrd", "i"],
            ] {
                assert_eq!(
                    error(with_a_lab),
                    ErrorKind::ArgumentConflict,
                    "{with_a_lab:?}"
                );
            }
            for without_kernel in [
                ["--initrd", "i"].as_slice(),
                &["--append", "a"],
                &["--memory", "64"],
                &["--input", "x"],
            ] {
                assert_eq!(
                    error(without_kernel),
                    ErrorKind::MissingRequiredArgument,
                    "{without_kernel:?}"
                );
            }
            assert_eq!(
                error(&[]),
                ErrorKind::MissingRequiredArgument,
                "a lab, a guest or a kernel"
            );
        }
    }

    #[test]
    fn a_domains_memory_fits_below_4_gib() {
        assert_eq!(domain_memory("2048"), Ok(2048));
        assert_eq!(domain_memory("2"), Ok(2));
        assert_eq!(
            domain_memory("2049"),
            Err("at most 2048 MiB: the hypervisor takes every domain's RAM from QEMU's RAM below 4 GiB".into())
        );
        for too_little in ["0", "1"] {
            assert_eq!(
                domain_memory(too_little),
                Err("a domain has at least 2 MiB of RAM".into())
            );
        }
        assert_eq!(domain_memory("1G"), Err("a number of MiB, e.g. 64".into()));
        let error = parse(&["trace", "--kernel", "k", "--memory", "4096"])
            .err()
            .map(|error| error.to_string())
            .unwrap_or_default();
        assert!(
            error.contains("invalid value '4096' for '--memory <MIB>': at most 2048 MiB"),
            "{error}"
        );
    }
}
