//! `traplab run <lab>`: run a lab under the terminal UI, live: the hypervisor waits after
//! boot; set breaks, continue, step through each trap, pause a spinning guest.

use super::status;
use crate::cli::RunArgs;
use crate::setup;
use crate::ui::app::LiveState;
use crate::ui::terminal::LiveEnd;
use crate::ui::{self, App, Options};
use std::io::IsTerminal;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use traplab_tracer::check::StreamFault;
use traplab_tracer::qemu::{Accel, ControlStart};
use traplab_tracer::recording::Recorder;
use traplab_tracer::session::{self, Session};

/// `--shell`: a Linux lab boots to `/shell` (`traplab_labs::linux::SHELL`) instead of its
/// `/init`; any other lab or program is a usage error.
fn shell(lab: &Option<String>, machine: &mut traplab_tracer::qemu::Machine) -> Result<(), String> {
    use traplab_labs::linux;
    let linux_lab = lab
        .as_deref()
        .and_then(|id| traplab_labs::lab(id).ok())
        .is_some_and(|lab| lab.boots_linux());
    let Some(first) = machine.guests.first_mut().filter(|_| linux_lab) else {
        return Err("--shell needs a Linux lab (linux-boot): its initramfs has the shell".into());
    };
    let line = first.cmdline.get_or_insert_with(String::new);
    line.push(' ');
    line.push_str(linux::SHELL_ARGUMENT);
    Ok(())
}

pub fn run(args: &RunArgs) -> Result<ExitCode, super::Failure> {
    // What is wrong with the command line first (a misspelled lab), then where it runs, and
    // only then what it needs: a Linux lab's machine fetches Debian's kernel (30 MB) for a
    // run that would not start without a terminal.
    if let Some(id) = &args.lab {
        traplab_labs::lab(id)?;
    }
    let accel = super::accelerator(args.accel, &[])?;
    if !std::io::stdout().is_terminal() {
        return Err("traplab run needs a terminal; `traplab trace` runs a lab without one".into());
    }
    super::bring_up_to_date(super::OlderBuild::Run)?;
    let (name, mut machine) = super::machine(
        &args.lab,
        &args.guest,
        &args.kernel,
        &args.settings,
        args.yes,
    )?;
    if args.shell {
        shell(&args.lab, &mut machine)?;
    }
    machine.control = Some(if args.running || args.shell {
        ControlStart::Run
    } else {
        ControlStart::Paused
    });
    // The hypervisor's timer lets a pause stop a guest that spins without exiting.
    machine.timer_hz = (args.timer_hz > 0).then_some(args.timer_hz);
    if args.shell {
        // The kernel's 250 Hz tick needs the hypervisor's timer (`hv/src/timer.rs`).
        machine.timer_hz = Some(args.timer_hz.max(traplab_labs::linux::SHELL_TIMER_HZ));
    }
    machine.accel = accel;
    super::attach_gdb(&mut machine, args.gdb, args.domain)?;
    super::keep_disk_image(&mut machine, &name, &args.disk)?;
    setup::ensure_qemu(args.yes)?;
    let recorder = match &args.record {
        Some(path) => Some(
            Recorder::create(path)
                .map_err(|error| format!("cannot write {}: {error}", path.display()))?,
        ),
        None => None,
    };
    let stop = Arc::new(AtomicBool::new(false));
    let options = session::Options {
        stop: Some(Arc::clone(&stop)),
        timeout: None,
        read_interval: None,
    };
    let session = Session::start(&machine, options).map_err(|error| error.to_string())?;
    // With gdb, the screen's title says where to attach; gdb, not the UI, resumes a guest
    // that gdb holds stopped (hv/README.md, "gdb and the guest").
    // The port is the one asked for, or the one the system chose for `--gdb 0`.
    // Under KVM the title says so: the trace is not the book's (`under_kvm_note`).
    let live = match machine.accel {
        Accel::Kvm => "live, KVM",
        Accel::Tcg => "live",
    };
    let mut app = App::live(&format!("{name} ({live})"), Options::from_environment());
    if let (Some(port), Some(live)) = (session.gdb_port(), app.live.as_mut()) {
        eprintln!("traplab: {}", super::gdb_command(&machine, port));
        live.gdb = Some(format!(
            "gdb {}: target remote :{port}",
            traplab_abi::event::domain_label(machine.gdb_domain)
        ));
    }
    app.expect_programs(
        machine
            .domains()
            .into_iter()
            .map(|(dom, guest)| (dom, guest.image.as_path())),
    );
    let ended = ui::terminal::live(app, session, stop, recorder);
    let (said, status) = after_the_screen(&ended);
    for line in said {
        eprintln!("traplab: {line}");
    }
    status.map(ExitCode::from)
}

/// What `traplab run` says once the screen is gone (lines for stderr) and the status it
/// exits with, from how the run ended: a value, so that a test can look at it without a
/// terminal or QEMU.
fn after_the_screen(ended: &LiveEnd) -> (Vec<String>, Result<u8, super::Failure>) {
    let mut said = Vec::new();
    // A recording that lacks events is incomplete whatever else happened (a Ctrl-C, the
    // terminal failing): said first, as `traplab trace` says it.
    let recording_fault = super::recording_fault(
        ended.recorded.unrecorded,
        ended.app.trace.len() as u64,
        ended.recorded.unflushed.as_ref(),
    );
    if let Some(fault) = &recording_fault {
        said.push(super::trace_fault(fault));
    }
    if let Err(error) = &ended.terminal {
        // The run stopped where the terminal failed: only the recording's fault is the
        // trace's to report, and it is what the status says first.
        let status = match recording_fault {
            Some(_) => status::TRACE_INCOMPLETE,
            None => status::USAGE,
        };
        let failure = super::Failure::new(status, format!("the terminal failed: {error}"));
        return (said, Err(failure));
    }
    if ended.interrupted {
        return (said, Ok(status::INTERRUPTED));
    }
    // What the title said of the trace, said again once the screen is gone. (A run the user
    // quit before its end has no end event: that is no fault.)
    let app = &ended.app;
    let finished = app
        .live
        .as_ref()
        .is_some_and(|live| matches!(live.state, LiveState::Finished(_)));
    let mut incomplete = recording_fault.is_some();
    if let Some(message) = &app.ring_fault {
        said.push(super::trace_fault(message));
        incomplete = true;
    }
    for fault in app.trace.faults() {
        if fault == StreamFault::Truncated && !finished {
            continue;
        }
        said.push(super::trace_fault(fault));
        incomplete = true;
    }
    let status = match incomplete {
        true => status::TRACE_INCOMPLETE,
        false => status::SUCCESS,
    };
    (said, Ok(status))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ui::terminal::Recorded;

    fn ended(unrecorded: u64, interrupted: bool, terminal: std::io::Result<()>) -> LiveEnd {
        let options = Options {
            color: false,
            guest_images: false,
            source_root: None,
        };
        LiveEnd {
            interrupted,
            app: App::live("test (live)", options),
            recorded: Recorded {
                unrecorded,
                unflushed: None,
            },
            terminal,
        }
    }

    #[test]
    fn a_recording_that_lacks_events_is_said_even_when_the_terminal_failed() {
        // It used to be dropped with the app: only "the terminal failed" was said, and the
        // status (2) did not say the recording was incomplete.
        let (said, status) = after_the_screen(&ended(3, false, Err(std::io::Error::other("gone"))));
        assert_eq!(
            said,
            ["TRACE FAULT: the recording is incomplete: writing 3 of the 0 events failed"]
        );
        assert_eq!(
            status,
            Err(crate::commands::Failure::new(
                status::TRACE_INCOMPLETE,
                "the terminal failed: gone"
            ))
        );
        // Without a recording fault, the terminal's failure is what is said.
        let (said, status) = after_the_screen(&ended(0, false, Err(std::io::Error::other("gone"))));
        assert!(said.is_empty(), "{said:?}");
        assert_eq!(status.map_err(|failure| failure.status), Err(status::USAGE));
    }

    #[test]
    fn a_recording_that_lacks_events_is_said_when_interrupted_or_quit() {
        let (said, status) = after_the_screen(&ended(2, true, Ok(())));
        assert_eq!(said.len(), 1, "{said:?}");
        assert_eq!(status, Ok(status::INTERRUPTED));
        // Quit before the end: no end event is no fault, the recording's is.
        let (said, status) = after_the_screen(&ended(2, false, Ok(())));
        assert_eq!(said.len(), 1, "{said:?}");
        assert_eq!(status, Ok(status::TRACE_INCOMPLETE));
        let (said, status) = after_the_screen(&ended(0, false, Ok(())));
        assert!(said.is_empty(), "{said:?}");
        assert_eq!(status, Ok(status::SUCCESS));
    }
}
