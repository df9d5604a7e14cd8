//! `traplab replay FILE`: open a recording in the terminal UI.

use super::status;
use super::{Failure, progress::ProgressLine};
use crate::cli::ReplayArgs;
use crate::ui::{self, App, Options};
use std::io::IsTerminal;
use std::path::Path;
use std::process::ExitCode;
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
    let (interrupted, app) =
        ui::terminal::replay(app).map_err(|error| format!("the terminal failed: {error}"))?;
    if interrupted {
        return Ok(ExitCode::from(status::INTERRUPTED));
    }
    after_the_screen(&args.file, app.trace, app.loader).map(ExitCode::from)
}

/// What `replay` does once the screen is gone: the status of the whole recording, the
/// same as `stats` would give it. The user may quit before the whole file is in (a big
/// recording, a quick `q`): the rest is read now, without a screen, so that a bad line or a
/// gap further on is said and counted all the same (a status that said "all is well" of
/// lines never read would be a loss hidden). Then what is wrong is said on stderr, as the
/// title said it: each bad line and each fault of the trace as a `TRACE FAULT`.
fn after_the_screen(file: &Path, mut trace: Trace, loader: Option<Loader>) -> Result<u8, Failure> {
    if let Some(mut loader) = loader {
        read_the_rest(file, &mut trace, &mut loader)?;
    }
    let (_, code) = super::load::report(trace);
    Ok(code)
}

/// Read what is left of `file` into `trace`, saying how far it is on a terminal's stderr
/// (Ctrl-C stops it, with status 130).
fn read_the_rest(file: &Path, trace: &mut Trace, loader: &mut Loader) -> Result<(), Failure> {
    let mut progress = ProgressLine::stderr();
    let budget = Some(std::time::Duration::from_millis(100));
    loop {
        progress.show(&format!(
            "traplab: checking the rest of {} (the screen closed before it was read): {:.0}%",
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
    Ok(())
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
        after_the_screen(path, trace, Some(loader))
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
}
