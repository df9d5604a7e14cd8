//! Where the offline commands (`stats`, `export`, `diff`, `replay`) get a trace: a
//! recording, or, for `stats`, a lab run on the spot.

use super::status;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use traplab_tracer::session::{Item, Options, Session};
use traplab_tracer::store::Trace;

/// Open a recording. A bad line is reported on stderr (the trace holds what came before);
/// the status to exit with says whether there was one.
pub fn recording(path: &Path) -> Result<(Trace, u8), String> {
    let trace =
        Trace::open(path).map_err(|error| format!("cannot read {}: {error}", path.display()))?;
    Ok(report(trace))
}

/// Say on stderr what is wrong with a trace; the exit status that says it.
pub fn report(trace: Trace) -> (Trace, u8) {
    let mut code = 0;
    if let Some(error) = trace.error() {
        eprintln!("traplab: {error}");
        eprintln!(
            "traplab: the recording is read up to line {}: {} events before it",
            error.line - 1,
            trace.len()
        );
        code = status::TRACE_INCOMPLETE;
    }
    for fault in trace.faults() {
        eprintln!("traplab: note: {fault}");
    }
    (trace, code)
}

/// A recording when `what` is a file, else the lab of that name, run now without a screen.
pub fn file_or_lab(what: &str, yes: bool) -> Result<(Trace, u8), String> {
    let path = Path::new(what);
    if path.is_file() {
        return recording(path);
    }
    let Some(lab) = traplab_labs::find(what).map_err(|error| error.to_string())? else {
        return Err(format!(
            "\"{what}\" is neither a recording nor a lab (`traplab list` shows the labs)"
        ));
    };
    crate::setup::ensure_qemu(yes)?;
    let stop = Arc::new(AtomicBool::new(false));
    let handler_stop = Arc::clone(&stop);
    let _ = ctrlc::set_handler(move || handler_stop.store(true, Ordering::SeqCst));
    let options = Options {
        stop: Some(stop),
        timeout: Some(Duration::from_secs(300)),
        read_interval: None,
    };
    let session = Session::start(&lab.machine(), options).map_err(|error| error.to_string())?;
    let mut trace = Trace::live(format!("{} (run now)", lab.id));
    for item in session {
        match item {
            Item::Event(event) => trace.push_event(&event),
            Item::Broken(message) => eprintln!("traplab: TRACE FAULT: {message}"),
            Item::Finished(finish) if finish.interrupted => {
                return Ok((trace, status::INTERRUPTED));
            }
            Item::Log(_) | Item::Finished(_) => {}
        }
    }
    Ok(report(trace))
}
