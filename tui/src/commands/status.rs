//! The exit statuses of `traplab`: one cause each, the same number in every command, so that
//! a script (or a grader) can tell them apart. [`STATUSES`] is the one table: `traplab
//! --help` shows it, each command's `--help` shows the lines of the statuses it can give, and
//! the book's CLI reference repeats it (a test keeps the book in step).
//!
//! 124 is what timeout(1) returns when its time limit passes, and nothing else here means it.

use traplab_tracer::qemu::HvStatus;
use traplab_tracer::session::Finish;

/// Everything went right: `trace`, the guest exited with 0; `check`, every check passed.
pub const SUCCESS: u8 = 0;
/// `check`: a check did not pass.
pub const NOT_PASSED: u8 = 1;
/// Bad usage: an unknown lab, a file that cannot be read or written.
pub const USAGE: u8 = 2;
/// A file that is not a recording, or a recording with a bad line.
pub const BAD_RECORDING: u8 = 3;
/// `check`: the hypervisor or the guests do not build, or cannot be rebuilt.
pub const BUILD_FAILED: u8 = 4;
/// The trace lost events, had a gap, ended before the hypervisor's `end` event or went on
/// after it, or its `--record` file lacks events.
pub const TRACE_INCOMPLETE: u8 = 123;
/// The lab ran past its time limit (`--timeout`); QEMU was stopped.
pub const TIMED_OUT: u8 = 124;
/// The hypervisor or QEMU failed.
pub const HV_FAILED: u8 = 125;
/// Stopped by Ctrl-C or SIGTERM.
pub const INTERRUPTED: u8 = 130;
/// The hypervisor killed a domain.
pub const DOMAIN_KILLED: u8 = 137;

/// Every status and its cause, in a user's words.
pub const STATUSES: [(u8, &str); 10] = [
    (
        SUCCESS,
        "success (trace: the guest exited with 0; check: every check passed)",
    ),
    (
        NOT_PASSED,
        "check: a check did not pass (the report says which step, and what happened instead)",
    ),
    (
        USAGE,
        "usage: a bad option, an unknown lab or guest, a file that cannot be read or written, QEMU or a Linux lab's kernel not there (the message says how to get it)",
    ),
    (
        BAD_RECORDING,
        "not a recording, or a recording with a bad line (the message names the line)",
    ),
    (
        BUILD_FAILED,
        "the hypervisor or the guests do not build (any command that runs a lab: nothing ran), or, for check, cargo is not there to rebuild them (nothing was graded)",
    ),
    (
        TRACE_INCOMPLETE,
        "the trace is incomplete: events lost, a gap or a step back in seq, the ring broken, no end event, or trace --record or run --record could not write every event; for a recording that stats, export, diff or replay read, events lost, a gap in seq, no end event or an event after it (what it holds is shown all the same; 3 and 123 are the whole file's: replay quit before it is all in reads the rest once its screen closes)",
    ),
    (
        TIMED_OUT,
        "the lab ran past its time limit (--timeout), as with timeout(1); QEMU was stopped",
    ),
    (HV_FAILED, "the hypervisor or QEMU failed"),
    (
        INTERRUPTED,
        "interrupted by Ctrl-C or SIGTERM; QEMU was stopped (replay: the rest of a recording it was reading once its screen closed is left unread)",
    ),
    (DOMAIN_KILLED, "the hypervisor killed a domain"),
];

/// The cause of `status`.
fn cause(status: u8) -> &'static str {
    STATUSES
        .iter()
        .find(|(code, _)| *code == status)
        .map_or("", |(_, cause)| cause)
}

/// One line per status of `statuses`: `  124  the lab ran past …`.
pub fn lines(statuses: &[u8]) -> String {
    let lines: Vec<String> = statuses
        .iter()
        .map(|status| format!("  {status:>3}  {}", cause(*status)))
        .collect();
    lines.join("\n")
}

/// "Exit status:" and one line per status of `statuses`, for a command's `--help`.
pub fn help(statuses: &[u8]) -> String {
    format!("Exit status:\n{}", lines(statuses))
}

/// Every status, for `traplab --help`.
pub fn all() -> Vec<u8> {
    STATUSES.iter().map(|(status, _)| *status).collect()
}

/// The whole table as Markdown, as the book's CLI reference has it.
pub fn markdown() -> String {
    let mut text = String::from("| status | cause |\n|-------:|-------|\n");
    for (status, cause) in STATUSES {
        text.push_str(&format!("| {status} | {cause} |\n"));
    }
    text
}

/// The status of the recordings a command read (each [`BAD_RECORDING`],
/// [`TRACE_INCOMPLETE`] or [`SUCCESS`]): a bad line says more than the gap in `seq` it
/// leaves, so it comes first; then a recording that is incomplete.
pub fn of_recordings(statuses: &[u8]) -> u8 {
    [BAD_RECORDING, TRACE_INCOMPLETE]
        .into_iter()
        .find(|status| statuses.contains(status))
        .unwrap_or(SUCCESS)
}

/// The status of a run of a lab that did not go as it should, whatever the lab did: it was
/// interrupted, ran out of time, the hypervisor or QEMU failed, or the trace cannot be
/// trusted (`incomplete`). `None` when the run itself was sound.
pub fn of_run(finish: &Finish, incomplete: bool) -> Option<u8> {
    if finish.interrupted {
        Some(INTERRUPTED)
    } else if finish.timed_out {
        Some(TIMED_OUT)
    } else if finish.ring_broken {
        // The session stopped QEMU itself (mode `ring`): no hypervisor status to read.
        Some(TRACE_INCOMPLETE)
    } else if finish.hv_status != Some(HvStatus::Done) {
        Some(HV_FAILED)
    } else if incomplete {
        Some(TRACE_INCOMPLETE)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_status_has_one_cause() {
        let mut codes: Vec<u8> = STATUSES.iter().map(|(code, _)| *code).collect();
        codes.sort_unstable();
        codes.dedup();
        assert_eq!(codes.len(), STATUSES.len(), "no status twice");
        assert!(STATUSES.iter().all(|(_, cause)| !cause.is_empty()));
        assert_eq!(
            help(&[TIMED_OUT, HV_FAILED]),
            "Exit status:\n  124  the lab ran past its time limit (--timeout), as with timeout(1); QEMU was stopped\n  125  the hypervisor or QEMU failed"
        );
    }

    #[test]
    fn the_book_has_the_same_table() {
        let book =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../book/src/reference/cli.md");
        let text = std::fs::read_to_string(&book).expect("the book's CLI reference");
        assert!(
            text.contains(&markdown()),
            "{} must have this table:\n{}",
            book.display(),
            markdown()
        );
    }

    #[test]
    fn a_bad_line_in_either_recording_comes_before_an_incomplete_one() {
        assert_eq!(of_recordings(&[SUCCESS, SUCCESS]), SUCCESS);
        assert_eq!(
            of_recordings(&[TRACE_INCOMPLETE, SUCCESS]),
            TRACE_INCOMPLETE
        );
        assert_eq!(
            of_recordings(&[TRACE_INCOMPLETE, BAD_RECORDING]),
            BAD_RECORDING
        );
        assert_eq!(of_recordings(&[]), SUCCESS);
    }

    #[test]
    fn a_run_that_timed_out_is_124_whatever_else_went_wrong() {
        let finish = Finish {
            exit_code: None,
            signal: Some(9),
            hv_status: None,
            stderr: String::new(),
            interrupted: false,
            timed_out: true,
            stopped: None,
            ring_broken: false,
        };
        assert_eq!(of_run(&finish, true), Some(TIMED_OUT));
        let interrupted = Finish {
            interrupted: true,
            ..finish.clone()
        };
        assert_eq!(of_run(&interrupted, true), Some(INTERRUPTED));
        let done = Finish {
            hv_status: Some(HvStatus::Done),
            timed_out: false,
            ..finish
        };
        assert_eq!(of_run(&done, false), None);
        assert_eq!(of_run(&done, true), Some(TRACE_INCOMPLETE));
        // A broken ring: the session stopped QEMU (no hypervisor status), the trace is what
        // is wrong.
        let broken = Finish {
            hv_status: None,
            exit_code: None,
            signal: Some(9),
            ring_broken: true,
            stopped: Some("the trace ring broke".into()),
            ..done
        };
        assert_eq!(of_run(&broken, true), Some(TRACE_INCOMPLETE));
    }
}
