//! `traplab run <lab>`: run a lab under the terminal UI, live: the hypervisor waits after
//! boot; set breaks, continue, step through each trap, pause a spinning guest.

use super::status;
use crate::cli::RunArgs;
use crate::setup;
use crate::ui::{self, App, Options};
use std::io::IsTerminal;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use traplab_tracer::qemu::ControlStart;
use traplab_tracer::recording::Recorder;
use traplab_tracer::session::{self, Session};

pub fn run(args: &RunArgs) -> Result<ExitCode, super::Failure> {
    // What is wrong with the command line first (a misspelled lab), then where it runs.
    let (name, mut machine) = super::machine(
        &args.lab,
        &args.guest,
        &args.kernel,
        &args.settings,
        args.yes,
    )?;
    if !std::io::stdout().is_terminal() {
        return Err("traplab run needs a terminal; `traplab trace` runs a lab without one".into());
    }
    machine.control = Some(if args.running {
        ControlStart::Run
    } else {
        ControlStart::Paused
    });
    // The hypervisor's timer lets a pause stop a guest that spins without exiting.
    machine.timer_hz = (args.timer_hz > 0).then_some(args.timer_hz);
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
    let title = match machine.gdb_port {
        Some(port) => {
            eprintln!("traplab: {}", super::gdb_command(&machine, port));
            format!(
                "{name} (live) · gdb {}: target remote 127.0.0.1:{port}",
                traplab_abi::event::domain_label(machine.gdb_domain)
            )
        }
        None => format!("{name} (live)"),
    };
    let app = App::live(&title, Options::from_environment());
    let interrupted = ui::terminal::live(app, session, stop, recorder)
        .map_err(|error| format!("the terminal failed: {error}"))?;
    Ok(if interrupted {
        ExitCode::from(status::INTERRUPTED)
    } else {
        ExitCode::SUCCESS
    })
}
