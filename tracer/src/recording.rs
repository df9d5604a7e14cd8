//! Recordings: a trace saved as JSON Lines (`traplab trace --record FILE`), read back by
//! `traplab replay`, `stats`, `diff` and the checker.
//!
//! Reading never panics and never hides a bad line: a bad line is skipped, the error names
//! the first one's number, and every other line's event is kept (the one a bad line held
//! shows as a gap in `seq`). A line whose `seq` does not fit between its neighbours (a
//! repeat, a step back, a jump far ahead that the lines after it do not go on from: `order.rs`)
//! is a bad line too, and so is a line longer than [`MAX_LINE`]. (`store::Trace` reads
//! recordings the same way, indexed instead of held.)

use crate::json::{self, JsonError};
use crate::order::{SeqOrder, Verdict};
use std::fs::File;
use std::io::{self, BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};
use traplab_abi::event::Event;

/// The longest line a reader of recordings takes, in bytes. An event comes from one record
/// of the hypervisor's ring, at most 8 KiB (`traplab_abi::ring::MAX_RECORD`); its JSON is
/// longer (a register change of a few bytes in the ring is some 60 characters of JSON, a
/// text byte may be escaped as six), but the longest line of the tests' recordings is 600
/// bytes. A line of 1 MiB, 128 times the largest ring record, is no event, and reading on
/// without a limit would hold a file without newlines (a binary, a log with CR line ends)
/// in memory whole, as one line.
pub const MAX_LINE: usize = 1 << 20;

/// Writes events, one JSON line each.
pub struct Recorder {
    writer: BufWriter<File>,
}

impl Recorder {
    pub fn create(path: &Path) -> io::Result<Recorder> {
        Ok(Recorder {
            writer: BufWriter::new(File::create(path)?),
        })
    }

    /// Write one event's line. A line longer than [`MAX_LINE`] is refused (an
    /// `InvalidData` error, nothing written): reading the recording back would reject it.
    /// No event of the hypervisor comes near that size (see [`MAX_LINE`]), but a recording
    /// must never hold a line its own reader calls bad; the caller counts the refused event
    /// as one it could not record, a trace fault.
    pub fn write(&mut self, event: &Event) -> io::Result<()> {
        let line = json::to_line(event);
        if line.len() > MAX_LINE {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "the event of seq {} is a line of {} bytes, longer than {MAX_LINE} bytes, which no reader of recordings takes",
                    event.seq,
                    line.len()
                ),
            ));
        }
        self.writer.write_all(line.as_bytes())?;
        self.writer.write_all(b"\n")
    }

    pub fn finish(mut self) -> io::Result<()> {
        self.writer.flush()
    }
}

/// A line that is not an event.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{path}:{line}: {error}")]
pub struct LineError {
    pub path: String,
    /// 1-based line number.
    pub line: usize,
    pub error: JsonError,
}

/// Keep in `first` whichever of it and `error` is on the earlier line: a line held back for
/// its `seq` (`order.rs`) is judged after the lines behind it.
pub fn keep_first(first: &mut Option<LineError>, error: LineError) {
    if first.as_ref().is_none_or(|first| error.line < first.line) {
        *first = Some(error);
    }
}

/// What a recording holds: the events of its good lines, the first bad line's error, and how
/// many lines were bad.
#[derive(Debug)]
pub struct Recording {
    pub path: PathBuf,
    pub events: Vec<Event>,
    pub error: Option<LineError>,
    pub bad_lines: usize,
}

impl Recording {
    fn apply(&mut self, verdict: Verdict<Event>) {
        match verdict {
            Verdict::Take { item, .. } => self.events.push(item),
            Verdict::Bad { line, error } => self.bad_line(line, error),
        }
    }

    fn bad_line(&mut self, line: usize, error: JsonError) {
        self.bad_lines += 1;
        keep_first(
            &mut self.error,
            LineError {
                path: self.path.display().to_string(),
                line,
                error,
            },
        );
    }
}

/// Read a whole recording. `Err` only when the file cannot be read at all.
pub fn read(path: &Path) -> io::Result<Recording> {
    let mut reader = BufReader::new(File::open(path)?);
    let mut recording = Recording {
        path: path.to_path_buf(),
        events: Vec::new(),
        error: None,
        bad_lines: 0,
    };
    let mut order = SeqOrder::new();
    let mut line = Vec::new();
    let mut number = 0;
    while let Some(read) = next_line(&mut reader, &mut line)? {
        number += 1;
        if read == LineRead::TooLong {
            recording.bad_line(number, JsonError::TooLong { limit: MAX_LINE });
            continue;
        }
        if line.trim_ascii().is_empty() {
            continue;
        }
        let event = std::str::from_utf8(&line)
            .map_err(|_| JsonError::Syntax("not UTF-8 text".into()))
            .and_then(json::from_line);
        match event {
            Ok(event) => {
                for verdict in order.next(number, event.seq, event) {
                    recording.apply(verdict);
                }
            }
            Err(error) => recording.bad_line(number, error),
        }
    }
    for verdict in order.finish() {
        recording.apply(verdict);
    }
    Ok(recording)
}

/// How [`next_line`] found a line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LineRead {
    /// The whole line is in the buffer (without its newline).
    Whole,
    /// The line is longer than [`MAX_LINE`]: it was read past up to its newline, and none of
    /// it is kept.
    TooLong,
}

/// Read the next line of `reader` into `line`; `None` at the end of the file. At most
/// [`MAX_LINE`] bytes of a line are ever held.
fn next_line(reader: &mut impl BufRead, line: &mut Vec<u8>) -> io::Result<Option<LineRead>> {
    line.clear();
    let mut started = false;
    let mut too_long = false;
    loop {
        let available = match reader.fill_buf() {
            Ok(available) => available,
            Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
            Err(error) => return Err(error),
        };
        if available.is_empty() {
            // The end of the file: a last line without its newline is a line all the same.
            return Ok(started.then_some(if too_long {
                LineRead::TooLong
            } else {
                LineRead::Whole
            }));
        }
        started = true;
        let newline = available.iter().position(|&byte| byte == b'\n');
        let part = &available[..newline.unwrap_or(available.len())];
        if !too_long && line.len() + part.len() > MAX_LINE {
            too_long = true;
            line.clear();
            line.shrink_to(0);
        }
        if !too_long {
            line.extend_from_slice(part);
        }
        let used = newline.map_or(available.len(), |at| at + 1);
        reader.consume(used);
        if newline.is_some() {
            return Ok(Some(if too_long {
                LineRead::TooLong
            } else {
                LineRead::Whole
            }));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use traplab_abi::event::{Body, Console};

    fn console(seq: u64, text: &str) -> Event {
        Event {
            seq,
            tsc: seq * 10,
            dom: Some(0),
            body: Body::Console(Console::line(text.to_string())),
        }
    }

    fn temporary(name: &str) -> PathBuf {
        std::env::temp_dir().join(format!(
            "traplab-recording-test-{}-{name}",
            std::process::id()
        ))
    }

    #[test]
    fn round_trip() {
        let path = temporary("round-trip");
        let mut recorder = Recorder::create(&path).unwrap();
        let events = [console(0, "a"), console(1, "b \"quoted\"")];
        for event in &events {
            recorder.write(event).unwrap();
        }
        recorder.finish().unwrap();
        let recording = read(&path).unwrap();
        assert_eq!(recording.events, events);
        assert!(recording.error.is_none());
        std::fs::remove_file(path).unwrap();
    }

    #[test]
    fn the_recorder_refuses_a_line_its_reader_would_not_take() {
        // No event of the hypervisor comes near MAX_LINE, but a recording must never hold a
        // line that reading it back rejects: the write fails (a trace fault for the caller),
        // and nothing of the line is in the file.
        let path = temporary("too-long-to-write");
        let mut recorder = Recorder::create(&path).unwrap();
        recorder.write(&console(0, "a")).unwrap();
        let huge = console(1, &"x".repeat(MAX_LINE));
        let error = recorder
            .write(&huge)
            .expect_err("a line longer than MAX_LINE");
        assert_eq!(error.kind(), io::ErrorKind::InvalidData);
        assert!(
            error.to_string().contains("longer than 1048576 bytes"),
            "{error}"
        );
        recorder.write(&console(2, "c")).unwrap();
        recorder.finish().unwrap();
        let recording = read(&path).unwrap();
        std::fs::remove_file(path).unwrap();
        assert_eq!(recording.bad_lines, 0, "{:?}", recording.error);
        assert_eq!(recording.events, [console(0, "a"), console(2, "c")]);
    }

    #[test]
    fn a_bad_line_is_named_and_skipped_and_the_rest_kept() {
        let path = temporary("truncated");
        let first = json::to_line(&console(0, "a"));
        let second = json::to_line(&console(1, "b"));
        let third = json::to_line(&console(2, "c"));
        let mut bytes = format!("{first}\n\n{}\n", &second[..second.len() / 2]).into_bytes();
        bytes.extend_from_slice(b"\xff\n");
        bytes.extend_from_slice(third.as_bytes());
        std::fs::write(&path, bytes).unwrap();
        let recording = read(&path).unwrap();
        let seqs: Vec<u64> = recording.events.iter().map(|event| event.seq).collect();
        assert_eq!(
            seqs,
            [0, 2],
            "the bad lines are skipped, the one after them kept"
        );
        assert_eq!(
            recording.bad_lines, 2,
            "a cut line and one that is not UTF-8"
        );
        let error = recording.error.unwrap();
        assert_eq!(error.line, 3);
        assert!(matches!(error.error, JsonError::Syntax(_)));
        assert!(error.to_string().contains(":3: not JSON"), "{error}");
        std::fs::remove_file(path).unwrap();
    }

    #[test]
    fn a_seq_out_of_order_is_a_bad_line() {
        let path = temporary("out-of-order");
        let lines: Vec<String> = [0, 1, 1, 2]
            .into_iter()
            .map(|seq| json::to_line(&console(seq, "x")))
            .collect();
        std::fs::write(&path, lines.join("\n")).unwrap();
        let recording = read(&path).unwrap();
        let seqs: Vec<u64> = recording.events.iter().map(|event| event.seq).collect();
        assert_eq!(
            seqs,
            [0, 1, 2],
            "the repeat is skipped, the event after it kept"
        );
        assert_eq!(recording.bad_lines, 1);
        let error = recording.error.unwrap();
        assert_eq!(
            (error.line, error.error),
            (
                3,
                JsonError::OutOfOrder {
                    previous: 1,
                    found: 1
                }
            )
        );
        std::fs::remove_file(path).unwrap();
    }

    #[test]
    fn a_seq_far_ahead_is_its_own_line_s_error_and_the_lines_after_it_are_kept() {
        let path = temporary("far-ahead");
        let lines: Vec<String> = [0, 1, 1_000_000, 2, 3]
            .into_iter()
            .map(|seq| json::to_line(&console(seq, "x")))
            .collect();
        std::fs::write(&path, lines.join("\n")).unwrap();
        let recording = read(&path).unwrap();
        std::fs::remove_file(path).unwrap();
        let seqs: Vec<u64> = recording.events.iter().map(|event| event.seq).collect();
        assert_eq!(seqs, [0, 1, 2, 3], "only the line that jumped is skipped");
        assert_eq!(recording.bad_lines, 1);
        let error = recording.error.unwrap();
        assert_eq!(
            (error.line, error.error),
            (
                3,
                JsonError::JumpsAhead {
                    previous: Some(1),
                    found: 1_000_000,
                    next_line: 4,
                    next: 2
                }
            )
        );
    }

    #[test]
    fn a_line_longer_than_max_line_is_its_own_error_and_reading_goes_on() {
        let path = temporary("too-long");
        let first = json::to_line(&console(0, "a"));
        let second = json::to_line(&console(1, "b"));
        let long = "x".repeat(2 * MAX_LINE + 7);
        std::fs::write(&path, format!("{first}\n{long}\n{second}\n{long}")).unwrap();
        let recording = read(&path).unwrap();
        std::fs::remove_file(path).unwrap();
        let seqs: Vec<u64> = recording.events.iter().map(|event| event.seq).collect();
        assert_eq!(seqs, [0, 1]);
        assert_eq!(
            recording.bad_lines, 2,
            "the long line, and the last one without its newline"
        );
        let error = recording.error.unwrap();
        assert_eq!(
            (error.line, error.error),
            (2, JsonError::TooLong { limit: MAX_LINE })
        );
    }

    #[test]
    fn a_long_line_is_read_past_not_held() {
        // A small buffer: the line comes in many pieces, and `line` never holds more than
        // MAX_LINE bytes of it.
        let text = format!("{}\nafter\n", "x".repeat(MAX_LINE + 1));
        let mut reader = BufReader::with_capacity(4096, text.as_bytes());
        let mut line = Vec::new();
        assert_eq!(
            next_line(&mut reader, &mut line).unwrap(),
            Some(LineRead::TooLong)
        );
        assert!(line.capacity() <= MAX_LINE + 4096, "{}", line.capacity());
        assert_eq!(
            next_line(&mut reader, &mut line).unwrap(),
            Some(LineRead::Whole)
        );
        assert_eq!(line, b"after");
        assert_eq!(next_line(&mut reader, &mut line).unwrap(), None);
        // Exactly MAX_LINE bytes is a line.
        let text = "y".repeat(MAX_LINE);
        let mut reader = BufReader::new(text.as_bytes());
        assert_eq!(
            next_line(&mut reader, &mut line).unwrap(),
            Some(LineRead::Whole)
        );
        assert_eq!(line.len(), MAX_LINE);
    }

    #[test]
    fn binary_garbage_is_an_error_not_a_panic() {
        let path = temporary("garbage");
        std::fs::write(&path, [0xff, 0xfe, 0x00, b'\n']).unwrap();
        let recording = read(&path).unwrap();
        assert!(recording.events.is_empty());
        assert_eq!(recording.error.unwrap().line, 1);
        std::fs::remove_file(path).unwrap();
    }
}
