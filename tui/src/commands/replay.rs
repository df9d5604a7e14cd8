//! `traplab replay FILE`: open a recording in the terminal UI.

use super::status;
use super::{Failure, progress::ProgressLine};
use crate::cli::ReplayArgs;
use crate::ui::{self, App, Options};
use std::io::IsTerminal;
use std::path::Path;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use traplab_tracer::store::{Loader, Trace};

pub fn run(args: &ReplayArgs) -> Result<ExitCode, Failure> {
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
    // One flag for the screen and for what comes after it: Ctrl-C is a key on the screen,
    // a signal after it.
    let signal = ui::terminal::signal_flag();
    let (interrupted, app) = ui::terminal::replay(app, &signal)
        .map_err(|error| format!("the terminal failed: {error}"))?;
    if interrupted {
        return Ok(ExitCode::from(status::INTERRUPTED));
    }
    after_the_screen(&args.file, app.trace, app.loader, &signal).map(ExitCode::from)
}

/// What `replay` does once the screen is gone: the status of the whole recording, the
/// same as `stats` would give it. The user may quit before the whole file is in (a big
/// recording, a quick `q`): the rest is read now, without a screen, so that a bad line or a
/// gap further on is said and counted all the same (a status that said "all is well" of
/// lines never read would be a loss hidden). Then what is wrong is said on stderr, as the
/// title said it: each bad line and each fault of the trace as a `TRACE FAULT`. A signal
/// (`signal`, Ctrl-C) while the rest is read stops it: status 130 at once, and nothing said
/// of a file not all read.
fn after_the_screen(
    file: &Path,
    mut trace: Trace,
    loader: Option<Loader>,
    signal: &AtomicBool,
) -> Result<u8, Failure> {
    if let Some(mut loader) = loader
        && read_the_rest(file, &mut trace, &mut loader, signal)? == Reading::Stopped
    {
        return Ok(status::INTERRUPTED);
    }
    let (_, code) = super::load::report(trace);
    Ok(code)
}

/// How [`read_the_rest`] ended.
#[derive(Debug, PartialEq, Eq)]
enum Reading {
    /// The whole file is in.
    Done,
    /// A signal stopped it.
    Stopped,
}

/// Read what is left of `file` into `trace`, saying how far it is on a terminal's stderr.
/// `signal` is looked at before each piece (a tenth of a second's reading): once it is set,
/// the progress line is cleared and no more is read.
fn read_the_rest(
    file: &Path,
    trace: &mut Trace,
    loader: &mut Loader,
    signal: &AtomicBool,
) -> Result<Reading, Failure> {
    let mut progress = ProgressLine::stderr();
    let budget = Some(std::time::Duration::from_millis(100));
    loop {
        if signal.load(Ordering::SeqCst) {
            progress.clear();
            return Ok(Reading::Stopped);
        }
        progress.show(&format!(
            "traplab: checking the rest of {} (the screen closed before it was read; Ctrl-C stops): {:.0}%",
            file.display(),
            loader.progress() * 100.0
        ));
        match loader.load(trace, budget) {
            Ok(true) => break,
            Ok(false) => {}
            Err(error) => {
                progress.clear();
                return Err(format!("cannot read {}: {error}", file.display()).into());
            }
        }
    }
    progress.clear();
    Ok(Reading::Done)
}

#[cfg(test)]
mod tests {
    use super::*;
    use traplab_abi::event::{Body, Console, End, Event};

    /// A recording longer than the first piece `replay` loads before its screen opens:
    /// 40 000 console lines (about 3 MiB), then `last` in place of its end event.
    fn longer_than_a_piece(name: &str, last: &str) -> std::path::PathBuf {
        let path =
            std::env::temp_dir().join(format!("traplab-replay-{}-{name}", std::process::id()));
        let mut text = String::new();
        for seq in 0..40_000 {
            let event = Event {
                seq,
                tsc: seq * 10,
                dom: Some(1),
                body: Body::Console(Console::line(format!("line {seq} of a long recording"))),
            };
            text.push_str(&traplab_tracer::json::to_line(&event));
            text.push('\n');
        }
        text.push_str(last);
        text.push('\n');
        std::fs::write(&path, text).expect("a temporary recording");
        path
    }

    /// The screen closed after the first piece: what `after_the_screen` gives.
    fn status_after_a_quick_quit(path: &Path) -> Result<u8, Failure> {
        let (mut trace, mut loader) = Trace::start_loading(path).expect("the recording opens");
        let whole = loader
            .load(&mut trace, Some(std::time::Duration::ZERO))
            .expect("the first piece reads");
        assert!(!whole, "the recording is longer than the first piece");
        after_the_screen(path, trace, Some(loader), &AtomicBool::new(false))
    }

    #[test]
    fn a_quit_before_the_whole_recording_is_in_still_gives_the_status_of_the_whole_file() {
        // The bad line is the last one, far past what the screen had read: it exited with 0.
        let bad = longer_than_a_piece("bad-last-line.jsonl", "not an event");
        let status = status_after_a_quick_quit(&bad);
        let _ = std::fs::remove_file(&bad);
        assert_eq!(status, Ok(status::BAD_RECORDING));
        // The same recording with its end event is complete.
        let end = Event {
            seq: 40_000,
            tsc: 400_000,
            dom: None,
            body: Body::End(End {
                status: 0,
                reason: "every domain has ended".into(),
            }),
        };
        let good = longer_than_a_piece("whole.jsonl", &traplab_tracer::json::to_line(&end));
        let status = status_after_a_quick_quit(&good);
        let _ = std::fs::remove_file(&good);
        assert_eq!(status, Ok(status::SUCCESS));
        // Without its end event, it is incomplete: no longer "quit early, so no fault".
        let no_end = longer_than_a_piece("no-end.jsonl", "");
        let status = status_after_a_quick_quit(&no_end);
        let _ = std::fs::remove_file(&no_end);
        assert_eq!(status, Ok(status::TRACE_INCOMPLETE));
    }

    #[test]
    fn a_signal_while_the_rest_is_read_stops_the_reading_with_130() {
        let path = longer_than_a_piece("signal.jsonl", "not an event");
        let (mut trace, mut loader) = Trace::start_loading(&path).expect("the recording opens");
        loader
            .load(&mut trace, Some(std::time::Duration::ZERO))
            .expect("the first piece reads");
        let (events, read) = (trace.len(), loader.progress());
        // Ctrl-C came as the screen closed: nothing more is read.
        let signal = AtomicBool::new(true);
        let reading = read_the_rest(&path, &mut trace, &mut loader, &signal);
        assert_eq!(reading, Ok(Reading::Stopped));
        assert_eq!(
            (trace.len(), loader.progress()),
            (events, read),
            "no more read"
        );
        // The bad last line is not reached: the status says the reading was stopped.
        let status = after_the_screen(&path, trace, Some(loader), &signal);
        let _ = std::fs::remove_file(&path);
        assert_eq!(status, Ok(status::INTERRUPTED));
    }
}
