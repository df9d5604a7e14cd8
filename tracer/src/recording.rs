//! Recordings: a trace saved as JSON Lines (`traplab trace --record FILE`), read back by
//! `traplab replay`, `stats`, `diff` and the checker.
//!
//! Reading never panics and never hides a bad line: a recording reads up to its first bad
//! line, and the error names that line's number; the events before it are kept. A line whose
//! `seq` does not come after the one before it (a repeat, a step back) is a bad line too.

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

/// The first line that is not an event.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{path}:{line}: {error}")]
pub struct LineError {
    pub path: String,
    /// 1-based line number.
    pub line: usize,
    pub error: JsonError,
}

/// What a recording holds: the events up to the first bad line, and that line's error.
#[derive(Debug)]
pub struct Recording {
    pub path: PathBuf,
    pub events: Vec<Event>,
    pub error: Option<LineError>,
}

/// Read a whole recording. `Err` only when the file cannot be read at all.
pub fn read(path: &Path) -> io::Result<Recording> {
    let file = File::open(path)?;
    let mut events = Vec::new();
    let mut error = None;
    for (index, line) in BufReader::new(file).lines().enumerate() {
        let line = match line {
            Ok(line) => line,
            Err(io_error) if io_error.kind() == io::ErrorKind::InvalidData => {
                error = Some(LineError {
                    path: path.display().to_string(),
                    line: index + 1,
                    error: JsonError::Syntax("not UTF-8 text".into()),
                });
                break;
            }
            Err(io_error) => return Err(io_error),
        };
        if line.trim().is_empty() {
            continue;
        }
        let previous = events.last().map(|event: &Event| event.seq);
        match json::from_line(&line)
            .and_then(|event| json::check_order(previous, event.seq).map(|()| event))
        {
            Ok(event) => events.push(event),
            Err(json_error) => {
                error = Some(LineError {
                    path: path.display().to_string(),
                    line: index + 1,
                    error: json_error,
                });
                break;
            }
        }
    }
    Ok(Recording {
        path: path.to_path_buf(),
        events,
        error,
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
            body: Body::Console(Console {
                text: text.to_string().into(),
            }),
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
    fn a_truncated_last_line_names_its_line_and_keeps_the_rest() {
        let path = temporary("truncated");
        let first = json::to_line(&console(0, "a"));
        let second = json::to_line(&console(1, "b"));
        std::fs::write(&path, format!("{first}\n\n{}", &second[..second.len() / 2])).unwrap();
        let recording = read(&path).unwrap();
        assert_eq!(recording.events.len(), 1);
        let error = recording.error.unwrap();
        assert_eq!(error.line, 3);
        assert!(matches!(error.error, JsonError::Syntax(_)));
        assert!(error.to_string().contains(":3: not JSON"), "{error}");
        std::fs::remove_file(path).unwrap();
    }

    #[test]
    fn a_seq_out_of_order_is_a_bad_line() {
        let path = temporary("out-of-order");
        let lines: Vec<String> = [0, 1, 1]
            .into_iter()
            .map(|seq| json::to_line(&console(seq, "x")))
            .collect();
        std::fs::write(&path, lines.join("\n")).unwrap();
        let recording = read(&path).unwrap();
        assert_eq!(recording.events.len(), 2);
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
