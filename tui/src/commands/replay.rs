//! `traplab replay FILE`: open a recording in the terminal UI.

use super::status;
use crate::cli::ReplayArgs;
use crate::ui::{self, App, Options};
use std::io::IsTerminal;
use std::process::ExitCode;
use traplab_tracer::store::Trace;

pub fn run(args: &ReplayArgs) -> Result<ExitCode, String> {
    if !std::io::stdout().is_terminal() {
        return Err("traplab replay needs a terminal; `traplab stats` and `traplab export` work without one".into());
    }
    let (trace, loader) = Trace::start_loading(&args.file)
        .map_err(|error| format!("cannot read {}: {error}", args.file.display()))?;
    let app = App::loading(trace, loader, Options::from_environment());
    let (interrupted, app) =
        ui::terminal::replay(app).map_err(|error| format!("the terminal failed: {error}"))?;
    let error = app.trace.error().map(|error| error.to_string());
    if interrupted {
        return Ok(ExitCode::from(status::INTERRUPTED));
    }
    match error {
        Some(error) => {
            eprintln!("traplab: {error}");
            Ok(ExitCode::from(status::TRACE_INCOMPLETE))
        }
        None => Ok(ExitCode::SUCCESS),
    }
}
