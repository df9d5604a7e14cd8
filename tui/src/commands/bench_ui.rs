//! `traplab bench --ui`: how the screen copes with a big recording. Not a timed test: it
//! prints the figures.
//!
//! It writes a recording of `--events` events (1,000,000 by default) shaped like a real
//! trace — UART writes (exit, decide, emulate, resume) with a reflected #PF, its handler and
//! its IRET every so often — unless `--file` names one, then measures:
//! - first frame: as `traplab replay` opens a file — the first 40 ms slice of the load,
//!   then the first screen drawn (80×24, TestBackend); the rest loads while it is up;
//! - whole load: reading and indexing the whole file, assembling the flows, statistics;
//! - resident memory per event: VmRSS after the whole load minus before it;
//! - jump time: from the first flow to the last (`G`, ⏎) and drawing it.
//!
//! Targets (issue 5): under 1 s to the first frame, under 200 bytes per event. Build with
//! `--release` for meaningful figures.

use crate::cli::BenchArgs;
use crate::ui::{App, Options};
use ratatui::Terminal;
use ratatui::backend::TestBackend;
use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;
use traplab_abi::event::{
    Action, Body, Boot, Change, Console, Decide, Emulate, Event, EventType, Exit, Inject,
    InstructionBytes, Registers, Resume, Return, ReturnPath, Schedule, ScheduleWhy,
};
use traplab_tracer::json;
use traplab_tracer::store::Trace;

/// What `traplab replay` loads before its first frame.
/// The generated recording's one guest: d1, a lab's first domain.
const GUEST: u16 = traplab_tracer::qemu::FIRST_GUEST;
const FIRST_SLICE: std::time::Duration = std::time::Duration::from_millis(40);

pub fn run(args: &BenchArgs) -> Result<ExitCode, super::Failure> {
    let (path, generated) = match &args.file {
        Some(path) if path.exists() => (path.clone(), false),
        Some(path) => {
            // Written once, kept for the next runs.
            generate(path, args.events)
                .map_err(|error| format!("cannot write {}: {error}", path.display()))?;
            (path.clone(), false)
        }
        None => {
            let path = std::env::temp_dir().join(format!(
                "traplab-bench-{}-{}.jsonl",
                std::process::id(),
                args.events
            ));
            let started = Instant::now();
            generate(&path, args.events)
                .map_err(|error| format!("cannot write {}: {error}", path.display()))?;
            eprintln!(
                "wrote {} events to {} in {:.1} s",
                args.events,
                path.display(),
                started.elapsed().as_secs_f64()
            );
            (path, true)
        }
    };
    let result = measure(&path, args.json);
    if generated {
        let _ = std::fs::remove_file(&path);
    }
    result
}

fn measure(path: &Path, as_json: bool) -> Result<ExitCode, super::Failure> {
    let bytes = std::fs::metadata(path)
        .map_err(|error| error.to_string())?
        .len();
    let rss_before = resident_bytes();
    let started = Instant::now();
    // As `traplab replay` does: the first frame comes after the first slice of the load,
    // the rest loads while the screen is up.
    let (trace, loader) = Trace::start_loading(path)
        .map_err(|error| format!("cannot read {}: {error}", path.display()))?;
    let options = Options {
        color: true,
        guest_images: false,
        source_root: None,
    };
    let mut app = App::loading(trace, loader, options);
    app.load_more(FIRST_SLICE);
    let mut terminal =
        Terminal::new(TestBackend::new(80, 24)).map_err(|error| error.to_string())?;
    terminal
        .draw(|frame| frame.render_widget(&app, frame.area()))
        .map_err(|error| error.to_string())?;
    let first_frame = started.elapsed();
    while app.loader.is_some() {
        app.load_more(std::time::Duration::from_secs(3600));
    }
    let load = started.elapsed();
    let events = app.trace.len();
    let flows = app.trace.flows().len();
    let rss_after = resident_bytes();
    let jump_started = Instant::now();
    let press = |app: &mut App, code| app.handle_key(KeyEvent::new(code, KeyModifiers::NONE));
    press(&mut app, KeyCode::Char('G'));
    press(&mut app, KeyCode::Enter);
    // The last row may be a folded run of repeated flows (a guest's console writes): ⏎
    // unfolded it, and the last flow is at its end.
    if app.selected + 1 != app.visible.len() {
        press(&mut app, KeyCode::Char('G'));
        press(&mut app, KeyCode::Enter);
    }
    terminal
        .draw(|frame| frame.render_widget(&app, frame.area()))
        .map_err(|error| error.to_string())?;
    let jump = jump_started.elapsed();
    if app.selected + 1 != app.visible.len() {
        return Err("the jump did not reach the last flow".into());
    }
    let per_event = match (rss_before, rss_after) {
        (Some(before), Some(after)) => {
            Some(after.saturating_sub(before) as f64 / events.max(1) as f64)
        }
        _ => None,
    };
    if as_json {
        println!(
            "{}",
            serde_json::json!({
                "file_bytes": bytes, "events": events, "flows": flows,
                "load_seconds": load.as_secs_f64(), "first_frame_seconds": first_frame.as_secs_f64(),
                "resident_bytes_per_event": per_event, "jump_to_last_flow_seconds": jump.as_secs_f64(),
                "release_build": !cfg!(debug_assertions),
            })
        );
    } else {
        println!(
            "{events} events ({flows} flows, {:.0} MB of JSON Lines){}",
            bytes as f64 / 1e6,
            if cfg!(debug_assertions) {
                "  [debug build: use --release]"
            } else {
                ""
            }
        );
        println!(
            "first frame (first slice + draw):   {:>8.3} s   (target < 1 s)",
            first_frame.as_secs_f64()
        );
        println!(
            "whole load (read, index, flows, stats): {:>4.3} s",
            load.as_secs_f64()
        );
        match per_event {
            Some(bytes) => {
                println!("resident memory per event:          {bytes:>8.1} B   (target < 200 B)")
            }
            None => println!("resident memory per event:          unknown (no /proc/self/status)"),
        }
        println!(
            "jump from the first to the last flow: {:>6.1} ms",
            jump.as_secs_f64() * 1e3
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// VmRSS from /proc/self/status, in bytes.
fn resident_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|line| line.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Write a realistic recording of `count` events.
fn generate(path: &PathBuf, count: usize) -> std::io::Result<()> {
    let mut out = Lines {
        out: BufWriter::new(std::fs::File::create(path)?),
        seq: 0,
        tsc: 1_000_000,
    };
    let regs = Registers {
        rax: 0x41,
        rbx: 5,
        rcx: 0x16,
        rdx: 0x3f8,
        rsp: 0x21fe60,
        r14: 0x21ff9e,
        ..Registers::default()
    };
    let exit = |exitcode: u64,
                reason: &'static str,
                exitinfo1: u64,
                exitinfo2: u64,
                rip: u64,
                insn: &[u8]| Exit {
        exitcode,
        reason: reason.into(),
        exitinfo1,
        exitinfo2,
        exitintinfo: 0,
        rip,
        cs: 8,
        cpl: 0,
        rflags: 0x6,
        cr0: 0x8001_0033,
        cr2: 0,
        cr3: 0x10_0000,
        cr4: 0x620,
        efer: 0x1d00,
        regs,
        insn: InstructionBytes::new(insn),
    };
    out.write(
        None,
        Body::Boot(Boot {
            hv: "traplab-hv bench".into(),
            cpu: "AuthenticAMD".into(),
            svm_revision: 1,
            nested_paging: true,
            nrip_save: false,
            decode_assists: false,
            tsc_hz: 2_600_000_000,
            ram_mib: 256,
        }),
        0,
    )?;
    // The one guest starts, as every run's does.
    out.write(
        None,
        Body::Schedule(Schedule {
            from: None,
            to: Some(GUEST),
            why: ScheduleWhy::Start,
            port: None,
        }),
        1_000,
    )?;
    let mut round = 0u64;
    while (out.seq as usize) < count {
        round += 1;
        if round.is_multiple_of(64) {
            // A reflected page fault, its handler's line, and its IRET.
            out.write(
                Some(GUEST),
                Body::Exit(exit(
                    0x4e,
                    "EXCP_PF",
                    2,
                    0x4000_0000,
                    0x2000b6,
                    &[0x48, 0xc7, 0x04, 0x25, 0, 0, 0, 0x40, 0x2a, 0, 0, 0],
                )),
                40_000,
            )?;
            out.write(Some(GUEST), Body::Decide(Decide { action: Action::Reflect, why: "the guest owns its exceptions (#PF page fault): reflect #PF into the guest's IDT, vector 14, handler 0x200240".into(), at: "hv/src/exit/exception.rs:92".into() }), 3_000)?;
            out.write(
                Some(GUEST),
                Body::Inject(Inject {
                    vector: 14,
                    name: "#PF".into(),
                    kind: EventType::Exception,
                    error_code: Some(2),
                    cr2: Some(0x4000_0000),
                    handler: Some(0x200240),
                    synthetic: false,
                }),
                2_000,
            )?;
            out.write(
                Some(GUEST),
                Body::Resume(Resume {
                    rip: 0x200240,
                    rflags: 6,
                    regs,
                    cycles: 60_000,
                }),
                2_000,
            )?;
            out.write(
                Some(GUEST),
                Body::Console(Console::line(
                    "#PF at 0x40000000, error code 0x2: mapping a free frame there",
                )),
                9_000,
            )?;
            out.write(
                Some(GUEST),
                Body::Exit(exit(0x74, "IRET", 0, 0, 0x20015d, &[0x48, 0xcf])),
                9_000,
            )?;
            out.write(
                Some(GUEST),
                Body::Decide(Decide {
                    action: Action::Emulate,
                    why: "the guest's #PF handler returns with IRET to 0x2000b6".into(),
                    at: "hv/src/exit/iret.rs:35".into(),
                }),
                2_000,
            )?;
            out.write(
                Some(GUEST),
                Body::Return(Return {
                    via: ReturnPath::Iret,
                    vector: Some(14),
                    name: Some("#PF".into()),
                    rip: 0x2000b6,
                    cs: 8,
                    rflags: 6,
                    rsp: 0x21fe60,
                }),
                2_000,
            )?;
            out.write(
                Some(GUEST),
                Body::Resume(Resume {
                    rip: 0x2000b6,
                    rflags: 6,
                    regs,
                    cycles: 30_000,
                }),
                2_000,
            )?;
            continue;
        }
        // One byte to the console UART.
        out.write(
            Some(GUEST),
            Body::Exit(exit(0x7b, "IOIO", 0x03f8_0210, 0x200bf5, 0x200bf4, &[0xee])),
            20_000,
        )?;
        out.write(
            Some(GUEST),
            Body::Decide(Decide {
                action: Action::Emulate,
                why: "OUT to port 0x3f8 (console UART): the hypervisor emulates every port".into(),
                at: "hv/src/exit/ioio.rs:27".into(),
            }),
            3_000,
        )?;
        out.write(
            Some(GUEST),
            Body::Emulate(Emulate {
                what: "OUT 'A' to the console UART".into(),
                arguments: Default::default(),
                changes: vec![Change {
                    name: "rip".into(),
                    old: 0x200bf4,
                    new: 0x200bf5,
                }],
            }),
            2_000,
        )?;
        out.write(
            Some(GUEST),
            Body::Resume(Resume {
                rip: 0x200bf5,
                rflags: 6,
                regs,
                cycles: 45_000,
            }),
            2_000,
        )?;
    }
    out.out.flush()
}

/// The recording being written: the next `seq` and the clock.
struct Lines {
    out: BufWriter<std::fs::File>,
    seq: u64,
    tsc: u64,
}

impl Lines {
    /// One event, `ticks` after the previous one.
    fn write(&mut self, dom: Option<u16>, body: Body, ticks: u64) -> std::io::Result<()> {
        self.tsc += ticks;
        let line = json::to_line(&Event {
            seq: self.seq,
            tsc: self.tsc,
            dom,
            body,
        });
        self.seq += 1;
        self.out.write_all(line.as_bytes())?;
        self.out.write_all(b"\n")
    }
}
