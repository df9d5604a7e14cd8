//! `traplab replay FILE`: open a recording in the terminal UI.

use super::status;
use crate::cli::ReplayArgs;
use crate::ui::{self, App, Options};
use std::io::IsTerminal;
use std::process::ExitCode;
use traplab_tracer::store::Trace;

pub fn run(args: &ReplayArgs) -> Result<ExitCode, super::Failure> {
    let (mut trace, mut loader) = Trace::start_loading(&args.file)
        .map_err(|error| format!("cannot read {}: {error}", args.file.display()))?;
    // The first piece (a chunk at least) says whether this is a recording at all, before
    // the screen opens on nothing.
    let whole = loader
        .load(&mut trace, Some(std::time::Duration::ZERO))
        .map_err(|error| format!("cannot read {}: {error}", args.file.display()))?;
    if (whole || trace.error().is_some())
        && let Some(failure) = super::load::not_a_recording(&args.file, &trace)
    {
        return Err(failure);
    }
    if !std::io::stdout().is_terminal() {
        return Err("traplab replay needs a terminal; `traplab stats` and `traplab export` work without one".into());
    }
    let app = App::loading(trace, loader, Options::from_environment());
    let (interrupted, app) =
        ui::terminal::replay(app).map_err(|error| format!("the terminal failed: {error}"))?;
    if interrupted {
        return Ok(ExitCode::from(status::INTERRUPTED));
    }
    // What the title said, said again once the screen is gone: a bad line (status 3), and
    // what is wrong with the trace itself (lost events, a gap, no end event), as notes.
    let whole = app.loader.is_none();
    let (_, code) = super::load::report(app.trace, whole);
    Ok(ExitCode::from(code))
}
