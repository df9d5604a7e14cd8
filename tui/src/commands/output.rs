//! Standard output written by a thread of its own, so that a reader that does not read
//! (`traplab trace … | sleep 40`, a stuck pager) blocks that thread and never the run: the
//! time limit and Ctrl-C or SIGTERM still stop QEMU at once, and traplab still exits.
//!
//! ```text
//!   the run ──line──► queue (QUEUE lines) ──► writer thread ──► stdout
//!      │ queue full: wait, but give up when told to (the time limit passed, a signal came)
//! ```
//!
//! A full queue holds the run back, which holds the hypervisor back (it waits for the ring
//! reader): nothing is lost while the reader is merely slow. Once the run gives up, the
//! lines left are dropped and counted; the process exits even with the writer still stuck
//! in `write` (at exit, Rust does not wait for a stdout another thread holds).

use std::io::Write;
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Lines the queue holds before the run waits for the reader.
const QUEUE: usize = 4096;

/// How often a wait for the reader asks whether to give up.
const POLL: Duration = Duration::from_millis(5);

/// How long the lines still queued may take once the run gives up on its reader.
const GRACE: Duration = Duration::from_secs(1);

pub struct Output {
    queue: Option<SyncSender<String>>,
    writer: Option<JoinHandle<()>>,
    /// Lines dropped after giving up.
    dropped: u64,
    gave_up: bool,
}

impl Output {
    /// Standard output.
    pub fn stdout() -> Output {
        Output::to(std::io::stdout())
    }

    /// Any writer (the tests use a pipe that nobody reads).
    pub fn to(sink: impl Write + Send + 'static) -> Output {
        let (queue, lines) = mpsc::sync_channel(QUEUE);
        let writer = std::thread::spawn(move || write_lines(sink, lines));
        Output {
            queue: Some(queue),
            writer: Some(writer),
            dropped: 0,
            gave_up: false,
        }
    }

    /// Queue the line `make` makes (the newline is added). While the queue is full, wait
    /// for the reader, asking `give_up` every few milliseconds; once it says yes, this line
    /// and every later one are dropped, and not even made (the run still has the events
    /// its ring held to go through). A closed pipe drops lines quietly: it ends the output,
    /// not the run.
    pub fn line(&mut self, make: impl FnOnce() -> String, give_up: &dyn Fn() -> bool) {
        if self.gave_up {
            self.dropped += 1;
            return;
        }
        let Some(queue) = &self.queue else { return };
        let mut line = make();
        loop {
            match queue.try_send(line) {
                Ok(()) => return,
                Err(TrySendError::Disconnected(_)) => return,
                Err(TrySendError::Full(again)) => {
                    if give_up() {
                        self.gave_up = true;
                        self.dropped += 1;
                        return;
                    }
                    line = again;
                    std::thread::sleep(POLL);
                }
            }
        }
    }

    /// Wait until every queued line is written, or, once `give_up` says so, for
    /// `GRACE` more (a reader that reads takes the rest in that time: the last lines of
    /// a run stopped by Ctrl-C still come). Returns how many lines were not written (0 when
    /// all were).
    pub fn finish(mut self, give_up: &dyn Fn() -> bool) -> u64 {
        // Closing the queue lets the writer end once it has written the rest.
        drop(self.queue.take());
        let Some(writer) = self.writer.take() else {
            return self.dropped;
        };
        let mut giving_up: Option<Instant> = None;
        while !writer.is_finished() {
            if self.gave_up || give_up() {
                let since = *giving_up.get_or_insert_with(Instant::now);
                if since.elapsed() >= GRACE {
                    // The writer is stuck on a reader that does not read: leave it behind.
                    return self.dropped.max(1);
                }
            }
            std::thread::sleep(POLL);
        }
        let _ = writer.join();
        self.dropped
    }
}

/// The writer thread: lines in order, flushed whenever the queue is empty (a live trace
/// shows at once; a fast one is written in big pieces). A failed write (the reader has gone)
/// ends it: the queue closes, and the lines after it are dropped quietly.
fn write_lines(sink: impl Write, lines: Receiver<String>) {
    let mut out = std::io::BufWriter::new(sink);
    loop {
        let line = match lines.try_recv() {
            Ok(line) => line,
            Err(mpsc::TryRecvError::Empty) => {
                if out.flush().is_err() {
                    return;
                }
                match lines.recv() {
                    Ok(line) => line,
                    Err(_) => break,
                }
            }
            Err(mpsc::TryRecvError::Disconnected) => break,
        };
        if writeln!(out, "{line}").is_err() {
            return;
        }
    }
    let _ = out.flush();
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    /// A sink that takes nothing until `open` is set: a reader that does not read.
    struct Stuck {
        open: Arc<AtomicBool>,
        taken: Arc<std::sync::Mutex<Vec<u8>>>,
    }

    impl Write for Stuck {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            while !self.open.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(1));
            }
            if let Ok(mut taken) = self.taken.lock() {
                taken.extend_from_slice(bytes);
            }
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_reader_that_does_not_read_holds_the_run_back_until_it_gives_up() {
        let open = Arc::new(AtomicBool::new(false));
        let taken = Arc::new(std::sync::Mutex::new(Vec::new()));
        let mut output = Output::to(Stuck {
            open: Arc::clone(&open),
            taken: Arc::clone(&taken),
        });
        let started = Instant::now();
        let deadline = started + Duration::from_millis(300);
        let give_up = || Instant::now() >= deadline;
        for number in 0..QUEUE * 2 {
            output.line(|| format!("line {number}"), &give_up);
        }
        // Waited for the reader, and not for ever.
        assert!(started.elapsed() >= Duration::from_millis(300));
        assert!(started.elapsed() < Duration::from_secs(30));
        let unwritten = output.finish(&give_up);
        assert!(unwritten > 0, "the lines after giving up are not written");
        open.store(true, Ordering::Relaxed);
    }

    #[test]
    fn every_line_comes_out_in_order() {
        let open = Arc::new(AtomicBool::new(true));
        let taken = Arc::new(std::sync::Mutex::new(Vec::new()));
        let mut output = Output::to(Stuck {
            open,
            taken: Arc::clone(&taken),
        });
        let never = || false;
        for number in 0..10_000 {
            output.line(|| format!("{number}"), &never);
        }
        assert_eq!(output.finish(&never), 0);
        let text = String::from_utf8(taken.lock().map(|taken| taken.clone()).unwrap_or_default())
            .expect("UTF-8");
        let numbers: Vec<usize> = text
            .lines()
            .map(|line| line.parse().expect("a number"))
            .collect();
        assert_eq!(numbers, (0..10_000).collect::<Vec<_>>());
    }
}
