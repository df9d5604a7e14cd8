//! A progress line on the terminal: how a check, or a rebuild before a run, is going.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

/// How often the progress line is rewritten: often enough to look alive, rarely enough to
/// cost nothing.
const PROGRESS_EVERY: Duration = Duration::from_millis(100);

/// A line that says how a command is going (a check, a rebuild), rewritten in place — only on a terminal: a log
/// file or a grader's pipe gets the results, not a progress line's leftovers.
pub struct ProgressLine<W: Write> {
    /// `None` when the output is not a terminal.
    out: Option<W>,
    /// When the line was last written; `None` while nothing is shown.
    shown: Option<Instant>,
}

impl ProgressLine<std::io::Stderr> {
    pub fn stderr() -> ProgressLine<std::io::Stderr> {
        let stderr = std::io::stderr();
        ProgressLine::new(stderr.is_terminal().then_some(stderr))
    }
}

impl<W: Write> ProgressLine<W> {
    pub fn new(out: Option<W>) -> ProgressLine<W> {
        ProgressLine { out, shown: None }
    }

    /// Show `text` in place of the line before (not more often than `PROGRESS_EVERY`).
    pub fn show(&mut self, text: &str) {
        let Some(out) = &mut self.out else { return };
        if self
            .shown
            .is_some_and(|shown| shown.elapsed() < PROGRESS_EVERY)
        {
            return;
        }
        // Back to the start of the line, the text, and erase what a longer line left.
        let _ = write!(out, "\r{text}\x1b[K");
        let _ = out.flush();
        self.shown = Some(Instant::now());
    }

    /// Erase the line, so that what comes next starts on a clean one.
    pub fn clear(&mut self) {
        if let (Some(out), Some(_)) = (&mut self.out, self.shown.take()) {
            let _ = write!(out, "\r\x1b[K");
            let _ = out.flush();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_progress_line_is_rewritten_in_place_and_only_on_a_terminal() {
        let mut terminal = ProgressLine::new(Some(Vec::new()));
        terminal.show("checking hello: 10 events, 0 s");
        // Too soon after the last: skipped.
        terminal.show("checking hello: 11 events, 0 s");
        terminal.clear();
        assert_eq!(
            String::from_utf8_lossy(terminal.out.as_deref().unwrap_or_default()),
            "\rchecking hello: 10 events, 0 s\x1b[K\r\x1b[K"
        );
        let mut pipe: ProgressLine<Vec<u8>> = ProgressLine::new(None);
        pipe.show("checking hello: 10 events, 0 s");
        pipe.clear();
        assert!(pipe.out.is_none(), "nothing is written off a terminal");
    }
}
