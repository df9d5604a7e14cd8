//! Recordings: a trace saved as JSON Lines (`traplab trace --record FILE`), read back by
//! `traplab replay`, `stats`, `diff` and the checker.
//!
//! Reading never panics and never hides a bad line: a bad line is skipped, the error names
//! the first one's number, and every other line's event is kept (the one a bad line held
//! shows as a gap in `seq`). A line whose `seq` does not come after the one before it (a
//! repeat, a step back) is a bad line too. (`store::Trace` reads recordings the same way,
//! indexed instead of held.)

use crate::json::{self, JsonError};
use std::fs::File;
use std::io::{self, BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};
use traplab_abi::event::Event;

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

    pub fn write(&mut self, event: &Event) -> io::Result<()> {
        self.writer.write_all(json::to_line(event).as_bytes())?;
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

/// What a recording holds: the events of its good lines, the first bad line's error, and how
/// many lines were bad.
#[derive(Debug)]
pub struct Recording {
    pub path: PathBuf,
    pub events: Vec<Event>,
    pub error: Option<LineError>,
    pub bad_lines: usize,
}

/// Read a whole recording. `Err` only when the file cannot be read at all.
pub fn read(path: &Path) -> io::Result<Recording> {
    let file = File::open(path)?;
    let mut events = Vec::new();
    let mut error = None;
    let mut bad_lines = 0;
    for (index, line) in BufReader::new(file).split(b'\n').enumerate() {
        let line = line?;
        if line.trim_ascii().is_empty() {
            continue;
        }
        let previous = events.last().map(|event: &Event| event.seq);
        let event = std::str::from_utf8(&line)
            .map_err(|_| JsonError::Syntax("not UTF-8 text".into()))
            .and_then(json::from_line)
            .and_then(|event| json::check_order(previous, event.seq).map(|()| event));
        match event {
            Ok(event) => events.push(event),
            Err(json_error) => {
                bad_lines += 1;
                error.get_or_insert(LineError {
                    path: path.display().to_string(),
                    line: index + 1,
                    error: json_error,
                });
            }
        }
    }
    Ok(Recording {
        path: path.to_path_buf(),
        events,
        error,
        bad_lines,
    })
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
    fn binary_garbage_is_an_error_not_a_panic() {
        let path = temporary("garbage");
        std::fs::write(&path, [0xff, 0xfe, 0x00, b'\n']).unwrap();
        let recording = read(&path).unwrap();
        assert!(recording.events.is_empty());
        assert_eq!(recording.error.unwrap().line, 1);
        std::fs::remove_file(path).unwrap();
    }
}
