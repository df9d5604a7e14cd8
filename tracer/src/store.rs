//! A trace held compactly: a million events in well under 200 bytes each.
//!
//! A recording's lines stay where they are (in the file, or for a live run in one byte
//! buffer); the store keeps, per event, only an [`EventIndex`] (where its line is, its
//! `seq`, `tsc`, domain and kind: 32 bytes) and, per trap, a [`Flow`]. An event is read
//! back and parsed again only when someone looks at it ([`Trace::event`]), which the
//! screen does for a few dozen events at a time.
//!
//! Loading parses each line once, in full (every field checked, as when it is shown), on
//! as many threads as there are CPUs, keeps its [`Facts`] and lets the rest go. A line
//! that is not an event is skipped and the load goes on: [`Trace::error`] names the first,
//! [`Trace::bad_lines`] counts them, and the event a skipped line held shows as a gap in
//! `seq` (a bad line loses that line, never the thousands after it: a `seq` that jumps ahead
//! is judged by the lines after it, `order.rs`). A line longer than
//! [`MAX_LINE`] is a bad line, read past without being held. A file whose first
//! [`NOT_A_RECORDING_AFTER`] lines hold no event is no recording: loading stops there. (The
//! full parse costs about 10 µs a line, 2 s for a traced Linux boot of 200,000 events on
//! two cores, where the facts alone took 0.4 s; a bad field found at once is worth it.)

use crate::check::{StreamCheck, StreamFault};
use crate::flows::{self, Assembler, Facts, Flow, Kind};
use crate::json::{self, JsonError};
use crate::order::{SeqOrder, Verdict};
use crate::recording::{self, LineError, MAX_LINE};
use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use traplab_abi::event::{DomainState, Event};

/// Where one event's line is, and what every list needs without parsing it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventIndex {
    /// Byte offset of the line in the source.
    pub offset: u64,
    pub seq: u64,
    pub tsc: u64,
    /// The line's length, without its newline.
    pub len: u32,
    /// The domain, or [`NO_DOM`] for the hypervisor itself.
    pub dom: u16,
    pub kind: Kind,
}

/// `dom` of an event about the hypervisor itself (the JSON has no `"dom"`).
pub const NO_DOM: u16 = u16::MAX;

const _: () = assert!(
    std::mem::size_of::<EventIndex>() == 32,
    "the index is a quarter of the budget per event"
);

impl EventIndex {
    pub fn dom(&self) -> Option<u16> {
        (self.dom != NO_DOM).then_some(self.dom)
    }
}

/// Where the lines are.
#[derive(Debug)]
enum Source {
    /// A recording: lines are read back with `pread` when shown.
    File(File),
    /// A live run: its lines, as they came.
    Memory(Vec<u8>),
}

/// A trace: the events' index, the flows, and what the stream promised and broke.
#[derive(Debug)]
pub struct Trace {
    /// A file's path, or a name for a live run (`page-fault (live)`).
    pub name: String,
    path: Option<PathBuf>,
    source: Source,
    events: Vec<EventIndex>,
    flows: Vec<Flow>,
    assembler: Assembler,
    check: StreamCheck,
    tsc_hz: Option<u64>,
    /// Each domain's guest program, by `dom`, from its `domain created` event.
    domains: Vec<(u16, String)>,
    /// The first bad line (loading skips each and goes on) ...
    error: Option<LineError>,
    /// ... and the numbers of all of them, as runs of consecutive lines: a million bad
    /// lines in a row are one run, not a million numbers.
    bad_lines: LineRuns,
    /// Lines read so far (the next line's number is this plus one).
    lines: usize,
    /// (event number, its line number) of each event whose line is not the one after the
    /// previous event's (a blank or bad line came between): to name the line of an event
    /// that fails to parse later, without storing a line number per event.
    line_jumps: Vec<(u32, u32)>,
    /// The event number at which each of `check`'s faults came to light, in order: to name
    /// a recording's line where the stream broke a promise.
    fault_events: Vec<u32>,
    /// Puts the lines' events in `seq` order, holding back one that jumps ahead (and the
    /// lines after it, until they judge it).
    order: SeqOrder<Pending>,
    /// Where the next line starts in a file source.
    end_offset: u64,
    /// A `schedule` event came: domains are numbered as Xen numbers them, d0 the control
    /// domain. A recording made before domains side by side has none, and numbered its
    /// guests from 0 (`SCHEMA.md`).
    side_by_side: bool,
}

/// After this many bad lines without one event, a file is no recording: loading stops.
pub const NOT_A_RECORDING_AFTER: usize = 1000;

/// How much of a file is read at once while loading.
const CHUNK: usize = 2 << 20;

const _: () = assert!(
    MAX_LINE < CHUNK,
    "a chunk holds a whole line that is not too long, with room to read more"
);

/// A line's event waiting for its place in `seq` order (`order.rs`).
#[derive(Debug)]
struct Pending {
    facts: Facts,
    offset: u64,
    len: u32,
}

/// A recording being loaded: where the file is read up to.
#[derive(Debug)]
pub struct Loader {
    file: File,
    buffer: Vec<u8>,
    /// Bytes of an unfinished line carried over from the previous chunk.
    carried: usize,
    /// Reading past a line longer than [`MAX_LINE`] (already counted as bad): how many of
    /// its bytes so far.
    skipping: Option<u64>,
    read: u64,
    total: u64,
    done: bool,
}

impl Loader {
    /// Read and index more of the file: all of it with `None`, else until `budget` has
    /// passed (a chunk at least). `Ok(true)` once the whole file is in, or it is found to be no
    /// recording ([`NOT_A_RECORDING_AFTER`]).
    pub fn load(
        &mut self,
        trace: &mut Trace,
        budget: Option<std::time::Duration>,
    ) -> io::Result<bool> {
        let started = std::time::Instant::now();
        while !self.done {
            self.load_chunk(trace)?;
            if budget.is_some_and(|budget| started.elapsed() >= budget) {
                break;
            }
        }
        Ok(self.done)
    }

    /// How far the load is, 0.0–1.0.
    pub fn progress(&self) -> f64 {
        if self.done || self.total == 0 {
            1.0
        } else {
            self.read as f64 / self.total as f64
        }
    }

    fn load_chunk(&mut self, trace: &mut Trace) -> io::Result<()> {
        let read = self.file.read(&mut self.buffer[self.carried..])?;
        self.read += read as u64;
        let filled = self.carried + read;
        let mut start = 0;
        if let Some(skipped) = self.skipping {
            // The rest of a line too long to hold: read past it to its newline.
            match self.buffer[..filled].iter().position(|&byte| byte == b'\n') {
                Some(newline) => {
                    trace.end_offset += skipped + newline as u64 + 1;
                    self.skipping = None;
                    start = newline + 1;
                }
                None if read == 0 => {
                    self.finish(trace);
                    return Ok(());
                }
                None => {
                    self.skipping = Some(skipped + filled as u64);
                    self.carried = 0;
                    return Ok(());
                }
            }
        }
        // The complete lines of the chunk; their facts are read in parallel (that is the
        // slow part), then indexed in order.
        let mut lines = Vec::new();
        while let Some(newline) = self.buffer[start..filled]
            .iter()
            .position(|&byte| byte == b'\n')
        {
            lines.push(start..start + newline);
            start += newline + 1;
        }
        let buffer = &self.buffer;
        let threads = std::thread::available_parallelism()
            .map_or(1, |count| count.get())
            .clamp(1, 8);
        let per_thread = lines.len().div_ceil(threads).max(1);
        let facts: Vec<Result<Option<Facts>, JsonError>> = std::thread::scope(|scope| {
            let workers: Vec<_> = lines
                .chunks(per_thread)
                .map(|part| {
                    scope.spawn(move || {
                        part.iter()
                            .map(|range| parse_line(&buffer[range.clone()]))
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            // A worker only panics on a bug in the parser: pass that panic on.
            workers
                .into_iter()
                .flat_map(|worker| {
                    worker
                        .join()
                        .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
                })
                .collect()
        });
        for (range, facts) in lines.iter().zip(facts) {
            if !trace.take_facts(facts, range.len() as u32, trace.end_offset) {
                self.finish(trace);
                return Ok(());
            }
            trace.end_offset += range.len() as u64 + 1;
        }
        let unfinished = filled - start;
        if read == 0 {
            // The last line has no newline: take it as it is (a truncated line fails here).
            if unfinished > 0 {
                trace.take_line(&self.buffer[start..filled], trace.end_offset);
            }
            self.finish(trace);
            return Ok(());
        }
        if unfinished > MAX_LINE {
            // No event is this long: the line is bad, and the rest of it is read past
            // without being held (a file without newlines is not read whole into memory).
            self.carried = 0;
            if !trace.take_facts(Err(too_long()), 0, trace.end_offset) {
                self.finish(trace);
                return Ok(());
            }
            self.skipping = Some(unfinished as u64);
            return Ok(());
        }
        self.buffer.copy_within(start..filled, 0);
        self.carried = unfinished;
        Ok(())
    }

    fn finish(&mut self, trace: &mut Trace) {
        self.done = true;
        self.buffer = Vec::new();
        trace.finished_loading();
    }
}

/// The error of a line longer than [`MAX_LINE`].
fn too_long() -> JsonError {
    JsonError::TooLong { limit: MAX_LINE }
}

impl Trace {
    /// An empty trace that grows with [`Trace::push_event`] (a live run).
    pub fn live(name: impl Into<String>) -> Trace {
        Trace::empty(name.into(), None, Source::Memory(Vec::new()))
    }

    fn empty(name: String, path: Option<PathBuf>, source: Source) -> Trace {
        Trace {
            name,
            path,
            source,
            events: Vec::new(),
            flows: Vec::new(),
            assembler: Assembler::new(),
            check: StreamCheck::new(),
            tsc_hz: None,
            domains: Vec::new(),
            error: None,
            bad_lines: LineRuns::default(),
            lines: 0,
            line_jumps: Vec::new(),
            fault_events: Vec::new(),
            order: SeqOrder::new(),
            end_offset: 0,
            side_by_side: false,
        }
    }

    /// Load a recording. `Err` only when the file cannot be read; a bad line is skipped,
    /// named by [`Trace::error`] (the first) and counted by [`Trace::bad_lines`].
    pub fn open(path: &Path) -> io::Result<Trace> {
        let (mut trace, mut loader) = Trace::start_loading(path)?;
        while !loader.load(&mut trace, None)? {}
        Ok(trace)
    }

    /// Start loading a recording a piece at a time ([`Loader::load`]), so that a screen can
    /// show the first flows of a big file at once and the rest as it comes.
    pub fn start_loading(path: &Path) -> io::Result<(Trace, Loader)> {
        let file = File::open(path)?;
        let total = file.metadata()?.len();
        let source = Source::File(file.try_clone()?);
        let trace = Trace::empty(path.display().to_string(), Some(path.to_path_buf()), source);
        Ok((
            trace,
            Loader {
                file,
                buffer: vec![0u8; CHUNK],
                carried: 0,
                skipping: None,
                read: 0,
                total,
                done: false,
            },
        ))
    }

    fn finished_loading(&mut self) {
        // A line held back for its jump in `seq` stays: its jump is a gap.
        for verdict in self.order.finish() {
            self.apply(verdict);
        }
        // The vectors grew by doubling: give the slack back.
        self.events.shrink_to_fit();
        self.flows.shrink_to_fit();
        self.line_jumps.shrink_to_fit();
        self.bad_lines.runs.shrink_to_fit();
    }

    /// Index one line; one that is not an event is skipped and counted as bad.
    fn take_line(&mut self, line: &[u8], offset: u64) {
        self.take_facts(parse_line(line), line.len() as u32, offset);
    }

    /// Index one line from its [`parse_line`] result; `false` when loading should stop.
    fn take_facts(
        &mut self,
        facts: Result<Option<Facts>, JsonError>,
        len: u32,
        offset: u64,
    ) -> bool {
        self.lines += 1;
        let line = self.lines;
        match facts {
            // Events in seq order, each once: the index looks events up by seq (a binary
            // search), and a step back would read as a gap of a negative size.
            Ok(Some(facts)) => {
                let seq = facts.seq;
                let pending = Pending { facts, offset, len };
                for verdict in self.order.next(line, seq, pending) {
                    self.apply(verdict);
                }
            }
            // A blank line: the events after it are a line further down.
            Ok(None) => {}
            Err(error) => self.bad_line(line, error),
        }
        // So many lines and not one event: this is no recording (a log, a binary), and
        // reading all of it would only take time and memory to say so. An event held for
        // its seq is one (a recording cut from a longer one begins with a held event).
        !(self.holds_no_event() && self.bad_lines() >= NOT_A_RECORDING_AFTER)
    }

    fn apply(&mut self, verdict: Verdict<Pending>) {
        match verdict {
            Verdict::Take { line, item } => {
                let after_previous = match self.events.len() {
                    0 => 1,
                    count => self.line_number(count - 1) + 1,
                };
                if line != after_previous {
                    self.line_jumps
                        .push((self.events.len() as u32, line as u32));
                }
                self.index(&item.facts, item.offset, item.len);
            }
            Verdict::Bad { line, error } => self.bad_line(line, error),
        }
    }

    fn bad_line(&mut self, line: usize, error: JsonError) {
        self.bad_lines.add(line);
        recording::keep_first(
            &mut self.error,
            LineError {
                path: self.name.clone(),
                line,
                error,
            },
        );
    }

    fn index(&mut self, facts: &Facts, offset: u64, len: u32) {
        let index = self.events.len() as u32;
        self.events.push(EventIndex {
            offset,
            seq: facts.seq,
            tsc: facts.tsc,
            len,
            dom: facts.dom.unwrap_or(NO_DOM),
            kind: facts.kind,
        });
        let faults = self
            .check
            .observe_parts(facts.seq, facts.lost, facts.kind == Kind::End);
        self.fault_events.extend(faults.iter().map(|_| index));
        if let Some(hz) = facts.tsc_hz {
            self.tsc_hz = Some(hz);
        }
        self.side_by_side |= facts.kind == Kind::Schedule;
        if let (Some(DomainState::Created), Some(dom), Some(name)) =
            (facts.domain_state, facts.dom, &facts.domain_name)
        {
            self.domains.retain(|(known, _)| *known != dom);
            self.domains.push((dom, name.clone()));
        }
        self.assembler.observe(index, facts, &mut self.flows);
    }

    /// Add one event of a live run (it is kept as its JSON line, like a recording).
    pub fn push_event(&mut self, event: &Event) {
        let line = json::to_line(event);
        let Source::Memory(bytes) = &mut self.source else {
            // A recording does not grow; nothing calls this for one.
            return;
        };
        let offset = bytes.len() as u64;
        bytes.extend_from_slice(line.as_bytes());
        bytes.push(b'\n');
        self.lines += 1;
        self.index(&Facts::of(event), offset, line.len() as u32);
    }

    /// How many events.
    pub fn len(&self) -> usize {
        self.events.len()
    }

    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }

    /// Has the trace no event at all, neither indexed nor held back while loading (an
    /// event whose `seq` jumps ahead waits for the lines after it, `order.rs`)? A trace
    /// that holds one is a recording even while [`Trace::is_empty`].
    pub fn holds_no_event(&self) -> bool {
        self.events.is_empty() && !self.order.holds()
    }

    /// The index entry of event number `index`.
    pub fn index_of(&self, index: usize) -> Option<&EventIndex> {
        self.events.get(index)
    }

    /// The event whose `seq` is `seq` (events are in `seq` order).
    pub fn index_of_seq(&self, seq: u64) -> Option<usize> {
        let index = self.events.partition_point(|event| event.seq < seq);
        (self.events.get(index)?.seq == seq).then_some(index)
    }

    pub fn flows(&self) -> &[Flow] {
        &self.flows
    }

    /// The flow that holds event number `index` as one of its own (a `schedule` event
    /// that ends one flow's first part and begins another flow names the later).
    pub fn flow_of(&self, index: usize) -> Option<usize> {
        flows::flow_of(&self.flows, self.assembler.continued(), index as u32)
    }

    /// The flows still waiting for their end, at most one per domain (a live run stopped
    /// inside one, or domains switched out in the middle of a trap).
    pub fn open_flows(&self) -> Vec<usize> {
        self.assembler
            .open_flows()
            .into_iter()
            .map(|flow| flow as usize)
            .collect()
    }

    /// Does d0 name a guest of the lab, not the control domain? In a recording made before
    /// domains side by side (no `schedule` event), which numbered the guests from 0.
    pub fn d0_is_a_guest(&self) -> bool {
        !self.side_by_side
    }

    /// TSC ticks per second, from the `boot` event.
    pub fn tsc_hz(&self) -> Option<u64> {
        self.tsc_hz
    }

    /// The TSC of the first event: time zero for the screen.
    pub fn start_tsc(&self) -> u64 {
        self.events.first().map_or(0, |event| event.tsc)
    }

    /// The guest program of domain `dom`.
    pub fn domain_name(&self, dom: u16) -> Option<&str> {
        self.domains
            .iter()
            .find(|(known, _)| *known == dom)
            .map(|(_, name)| name.as_str())
    }

    /// Every domain, in order of creation.
    pub fn domains(&self) -> &[(u16, String)] {
        &self.domains
    }

    /// The first bad line, if there is one (loading skipped it and went on).
    pub fn error(&self) -> Option<&LineError> {
        self.error.as_ref()
    }

    /// How many lines were not events, and skipped.
    pub fn bad_lines(&self) -> usize {
        self.bad_lines.count()
    }

    /// The numbers of the lines that were not events, as runs of consecutive lines (first,
    /// last), in line order: every line skipped can be named.
    pub fn bad_line_runs(&self) -> &[(usize, usize)] {
        self.bad_lines.runs()
    }

    /// The recording's path (`None` for a live run).
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// Broken promises of the stream so far: gaps, losses, no `end` (yet).
    pub fn faults(&self) -> Vec<StreamFault> {
        self.check.faults_so_far()
    }

    /// [`Trace::faults`], each with the line of a recording where it came to light: the
    /// line of the event after a gap, of a `lost` event, of an event after `end`. `None` for
    /// a live run's, and for a missing `end` event, which no line shows.
    pub fn faults_by_line(&self) -> Vec<(StreamFault, Option<usize>)> {
        self.faults()
            .into_iter()
            .enumerate()
            .map(|(number, fault)| {
                let line = self
                    .path
                    .as_ref()
                    .and(self.fault_events.get(number))
                    .map(|&index| self.line_number(index as usize));
                (fault, line)
            })
            .collect()
    }

    /// The line number of event number `index`: counted on from the last event at or
    /// before it whose line came after a blank or bad line.
    pub fn line_number(&self, index: usize) -> usize {
        let jumps = self
            .line_jumps
            .partition_point(|&(event, _)| event as usize <= index);
        match jumps.checked_sub(1).map(|last| self.line_jumps[last]) {
            Some((event, line)) => line as usize + (index - event as usize),
            None => index + 1,
        }
    }

    /// The raw JSON line of event number `index`.
    pub fn raw_line(&self, index: usize) -> io::Result<String> {
        let entry = self
            .events
            .get(index)
            .ok_or_else(|| io::Error::other("no such event"))?;
        let mut bytes = vec![0u8; entry.len as usize];
        match &self.source {
            Source::File(file) => file.read_exact_at(&mut bytes, entry.offset)?,
            Source::Memory(memory) => {
                let start = entry.offset as usize;
                let line = memory
                    .get(start..start + bytes.len())
                    .ok_or_else(|| io::Error::other("outside the buffer"))?;
                bytes.copy_from_slice(line);
            }
        }
        String::from_utf8(bytes)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "not UTF-8"))
    }

    /// Event number `index`, parsed in full. A line that indexed but does not parse (a
    /// field the index did not look at is wrong), or a file changed under us, is a
    /// [`LineError`] naming its line.
    pub fn event(&self, index: usize) -> Result<Event, LineError> {
        let line_error = |error| LineError {
            path: self.name.clone(),
            line: self.line_number(index),
            error,
        };
        let line = self.raw_line(index).map_err(|error| {
            line_error(JsonError::Syntax(format!("cannot read the line: {error}")))
        })?;
        json::from_line(&line).map_err(line_error)
    }
}

/// Line numbers kept as runs of consecutive lines, `(first, last)`, in order: the memory is
/// one run's (16 bytes) for each run, however long, and the count of lines stays exact. (A
/// bad line between two events is a run of its own: a recording with log lines mixed in
/// holds a run per log line, half of what the index holds for the event beside it.)
#[derive(Debug, Default)]
struct LineRuns {
    /// In line order, none overlapping, none touching the next (those are one run).
    runs: Vec<(usize, usize)>,
    /// How many lines the runs hold.
    count: usize,
}

impl LineRuns {
    /// Add line `line`. Verdicts on lines held for their `seq` come after those on later
    /// lines behind them (`order.rs`): a line may land before the last run, and join the
    /// run before it, the run after it, or both into one. A line already held is held once.
    fn add(&mut self, line: usize) {
        // The first run that ends at or after `line`: `line` goes in it, or just before it.
        let at = self.runs.partition_point(|&(_, last)| last < line);
        if self.runs.get(at).is_some_and(|&(first, _)| first <= line) {
            return;
        }
        self.count += 1;
        let joins_before = at > 0 && self.runs[at - 1].1 + 1 == line;
        let joins_after = self
            .runs
            .get(at)
            .is_some_and(|&(first, _)| first == line + 1);
        match (joins_before, joins_after) {
            // It fills the hole between two runs: they become one.
            (true, true) => {
                self.runs[at - 1].1 = self.runs[at].1;
                self.runs.remove(at);
            }
            (true, false) => self.runs[at - 1].1 = line,
            (false, true) => self.runs[at].0 = line,
            // A run of its own (nearly always at the end: a push).
            (false, false) => self.runs.insert(at, (line, line)),
        }
    }

    fn count(&self) -> usize {
        self.count
    }

    fn runs(&self) -> &[(usize, usize)] {
        &self.runs
    }
}

/// The facts of one line; `None` for a blank line. The line is parsed in full, every field
/// checked as [`Trace::event`] will check it when it is shown (`json::from_line`): a
/// field the flows do not need (an exit's `exitinfo1`, an `end` without its `status`) is
/// still a bad line, found here and named by its number, not later on a screen or never
/// by a command that only counts (`stats`, `diff`, `export`).
fn parse_line(line: &[u8]) -> Result<Option<Facts>, JsonError> {
    if line.len() > MAX_LINE {
        return Err(too_long());
    }
    if line.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    let text = std::str::from_utf8(line)
        .map_err(|error| JsonError::Syntax(format!("not UTF-8: {error}")))?;
    let event = json::from_line(text)?;
    Ok(Some(Facts::of(&event)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flows::FlowEnd;
    use traplab_abi::event::{Action, Body, Console, Decide, Resume};

    fn temporary(name: &str) -> PathBuf {
        std::env::temp_dir().join(format!("traplab-store-test-{}-{name}", std::process::id()))
    }

    #[test]
    fn bad_lines_have_the_errors_of_the_full_parse() {
        let parsed = |line: &[u8]| parse_line(line);
        assert!(matches!(parsed(b"{\"v\":1,"), Err(JsonError::Syntax(_))));
        assert_eq!(parsed(br#"{"seq":1}"#), Err(JsonError::Field("v")));
        assert_eq!(
            parsed(br#"{"v":7,"seq":1,"tsc":0,"kind":"end"}"#),
            Err(JsonError::Version { found: 7 })
        );
        assert_eq!(
            parsed(br#"{"v":1,"seq":1,"tsc":0,"kind":"party"}"#),
            Err(JsonError::UnknownKind("party".into()))
        );
        assert!(parsed(br#"{"v":1,"seq":"one","tsc":0,"kind":"end"}"#).is_err());
        assert!(parsed(br#"{"v":1,"seq":1,"tsc":0,"kind":"decide","action":"dance"}"#).is_err());
        assert!(
            parsed(br#"{"v":1,"seq":1,"tsc":0,"kind":"schedule","from":1,"to":2,"why":"bored"}"#)
                .is_err()
        );
        assert!(parsed(b"{\"v\":1,\"seq\":1,\"tsc\":0,\"kind\":\"end\",\xff}").is_err());
    }

    #[test]
    fn a_bad_field_the_flows_do_not_need_is_a_bad_line_all_the_same() {
        // An exit's EXITINFO1 and an end's status play no part in the flows, but a recording
        // that has them wrong is not a trace: its line is named when it loads, before any
        // command counts what came before it (`stats`, `diff`, `export`).
        let good = line(0, Body::Console(Console::line("hello")));
        let exit = r#"{"v":1,"seq":1,"tsc":1234,"dom":0,"kind":"exit","exitcode":78,"reason":"EXCP_PF","exitinfo1":"zz","exitinfo2":"0x40000000","exitintinfo":"0x0","rip":"0x2003d1","cs":8,"cpl":0,"rflags":"0x2","cr0":"0x0","cr2":"0x0","cr3":"0x0","cr4":"0x0","efer":"0x0","regs":{"rax":"0x0","rbx":"0x0","rcx":"0x0","rdx":"0x0","rsi":"0x0","rdi":"0x0","rbp":"0x0","rsp":"0x0","r8":"0x0","r9":"0x0","r10":"0x0","r11":"0x0","r12":"0x0","r13":"0x0","r14":"0x0","r15":"0x0"},"insn":"0f0b"}"#;
        let end = r#"{"v":1,"seq":1,"tsc":20,"kind":"end","reason":"every domain has ended"}"#;
        for bad in [exit, end] {
            let path = temporary("bad-field");
            std::fs::write(&path, format!("{good}\n{bad}\n")).expect("a temporary file");
            let trace = Trace::open(&path).expect("readable");
            let _ = std::fs::remove_file(&path);
            assert_eq!(trace.len(), 1, "the good line before it is kept");
            let error = trace.error().expect("the bad line is named");
            assert_eq!(error.line, 2, "{error:?}");
        }
        // A name with a JSON escape is a name (a borrowed string could not hold it).
        let escaped = r#"{"v":1,"seq":1,"tsc":2,"dom":3,"kind":"domain","state":"created","name":"page\u002dfault","status":null,"reason":null}"#;
        assert!(matches!(parse_line(escaped.as_bytes()), Ok(Some(_))));
        let kind = r#"{"v":1,"seq":9,"tsc":20,"kind":"\u0065nd","status":0,"reason":"r"}"#;
        assert!(
            matches!(parse_line(kind.as_bytes()), Ok(Some(_))),
            "{:?}",
            parse_line(kind.as_bytes())
        );
    }

    fn line(seq: u64, body: Body) -> String {
        json::to_line(&Event {
            seq,
            tsc: seq * 10,
            dom: Some(0),
            body,
        })
    }

    #[test]
    fn a_bad_line_is_named_and_skipped_and_the_events_after_it_are_kept() {
        let path = temporary("bad-line");
        let console = |seq, text: &str| line(seq, Body::Console(Console::line(text.to_string())));
        let decide = line(
            1,
            Body::Decide(Decide {
                action: Action::Emulate,
                why: "w".into(),
                at: "a".into(),
            }),
        );
        std::fs::write(
            &path,
            format!(
                "{}\n\n{decide}\n{}\n{}\nnot json\n{}\n",
                console(0, "a"),
                &console(2, "b")[..20],
                console(3, "c"),
                console(4, "d")
            ),
        )
        .unwrap();
        let trace = Trace::open(&path).unwrap();
        assert_eq!(trace.len(), 4, "every event but the bad lines'");
        let error = trace.error().expect("an error");
        assert_eq!(error.line, 4, "the first bad line is named");
        assert!(
            error
                .to_string()
                .ends_with(":4: not JSON: EOF while parsing an object at line 1 column 20"),
            "{error}"
        );
        assert_eq!(trace.bad_lines(), 2);
        assert_eq!(trace.line_number(1), 3, "the blank line counts");
        assert_eq!(trace.line_number(2), 5, "and so does a bad line");
        assert_eq!(trace.line_number(3), 7);
        assert_eq!(trace.event(2).unwrap().seq, 3);
        assert_eq!(trace.event(3).unwrap().seq, 4);
        assert!(
            trace.faults().contains(&StreamFault::Gap {
                expected: 2,
                found: 3
            }),
            "the bad line's event is missing: {:?}",
            trace.faults()
        );
        // Each fault with the line where it came to light: the gap at seq 3's line, after
        // the bad line; the missing end event at none.
        assert_eq!(
            trace.faults_by_line(),
            [
                (
                    StreamFault::Gap {
                        expected: 2,
                        found: 3
                    },
                    Some(5)
                ),
                (StreamFault::Truncated, None)
            ]
        );
        std::fs::remove_file(path).unwrap();
    }

    #[test]
    fn a_file_of_many_lines_and_no_event_is_given_up_on() {
        let path = temporary("no-events");
        let junk = "root:x:0:0:root:/root:/bin/bash\n".repeat(NOT_A_RECORDING_AFTER * 3);
        std::fs::write(&path, junk).unwrap();
        let trace = Trace::open(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        assert!(trace.is_empty());
        assert_eq!(trace.bad_lines(), NOT_A_RECORDING_AFTER, "read no further");
        assert_eq!(trace.error().map(|error| error.line), Some(1));
    }

    #[test]
    fn a_seq_that_repeats_or_goes_back_is_a_bad_line() {
        let console = |seq| line(seq, Body::Console(Console::line("x".to_string())));
        for (seqs, bad_line, message) in [
            (
                [1000, 1001, 999],
                3,
                "seq 999 after seq 1001: a trace's seq only goes up, so this line repeats an event or is out of order",
            ),
            (
                [7, 8, 8],
                3,
                "seq 8 after seq 8: a trace's seq only goes up, so this line repeats an event or is out of order",
            ),
        ] {
            let path = temporary(&format!("order-{bad_line}-{}", seqs[2]));
            let lines: Vec<String> = seqs.iter().map(|&seq| console(seq)).collect();
            std::fs::write(&path, lines.join("\n")).unwrap();
            let trace = Trace::open(&path).unwrap();
            assert_eq!(trace.len(), 2, "the events before the bad line are kept");
            let error = trace.error().expect("the bad line");
            assert_eq!(error.line, bad_line);
            assert!(error.to_string().ends_with(message), "{error}");
            assert!(
                !trace.faults().iter().any(|fault| matches!(
                    fault,
                    StreamFault::Gap { expected, found } if found < expected
                )),
                "no gap of a negative size: {:?}",
                trace.faults()
            );
            std::fs::remove_file(path).unwrap();
        }
    }

    #[test]
    fn a_seq_far_ahead_is_its_own_line_s_error_and_every_line_after_it_is_kept() {
        // Line 3 says seq 1000000 where 2 belongs; lines 4 to 6 go on from 2. Judged against
        // the line before alone, every line after it went "back", and line 4 was blamed.
        let console = |seq| line(seq, Body::Console(Console::line("x".to_string())));
        let path = temporary("far-ahead");
        let seqs = [0, 1, 1_000_000, 2, 3, 4];
        let lines: Vec<String> = seqs.iter().map(|&seq| console(seq)).collect();
        std::fs::write(&path, lines.join("\n") + "\n").unwrap();
        let trace = Trace::open(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        assert_eq!(trace.len(), 5, "only the bad line is skipped");
        assert_eq!(trace.bad_lines(), 1);
        let error = trace.error().expect("the bad line");
        assert_eq!(error.line, 3, "{error}");
        assert!(
            error.to_string().ends_with(
                ":3: seq 1000000 jumps ahead of seq 1, but line 4 goes on from before it with seq 2: this line's seq is wrong"
            ),
            "{error}"
        );
        assert_eq!(
            trace.faults(),
            [StreamFault::Truncated],
            "no gap, no step back: the events 0 to 4 are all there"
        );
        assert_eq!(trace.event(2).unwrap().seq, 2);
        assert_eq!(trace.line_number(2), 4, "seq 2 is on line 4");
        assert_eq!(trace.line_number(4), 6);

        // A real jump (the lines after it go on from it) is a gap, and no bad line; so is a
        // jump on the last line.
        for (seqs, kept) in [(vec![0, 1, 500, 501], 4), (vec![0, 1, 500], 3)] {
            let path = temporary("real-jump");
            let lines: Vec<String> = seqs.iter().map(|&seq| console(seq)).collect();
            std::fs::write(&path, lines.join("\n")).unwrap();
            let trace = Trace::open(&path).unwrap();
            std::fs::remove_file(&path).unwrap();
            assert_eq!((trace.len(), trace.bad_lines()), (kept, 0), "{seqs:?}");
            assert!(
                trace.faults().contains(&StreamFault::Gap {
                    expected: 2,
                    found: 500
                }),
                "{:?}",
                trace.faults()
            );
            assert_eq!(trace.line_number(2), 3);
        }
    }

    #[test]
    fn two_lines_far_ahead_in_a_row_are_their_own_errors_and_the_lines_after_them_are_kept() {
        // Lines 3 and 4 say 1000000 and 2000000 where 2 and 3 belong. Judged one line ahead,
        // the second "confirmed" the first: every line after them went back, and the error
        // named line 5, a good one.
        let console = |seq| line(seq, Body::Console(Console::line("x".to_string())));
        let path = temporary("two-far-ahead");
        let mut seqs = vec![0, 1, 1_000_000, 2_000_000];
        seqs.extend(4..100);
        let lines: Vec<String> = seqs.iter().map(|&seq| console(seq)).collect();
        std::fs::write(&path, lines.join("\n") + "\n").unwrap();
        let trace = Trace::open(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        assert_eq!(trace.bad_lines(), 2, "{:?}", trace.error());
        assert_eq!(
            trace.len(),
            seqs.len() - 2,
            "only the two bad lines are skipped"
        );
        assert_eq!(trace.error().map(|error| error.line), Some(3));
        assert_eq!(
            trace.faults(),
            [
                StreamFault::Gap {
                    expected: 2,
                    found: 4
                },
                StreamFault::Truncated
            ],
            "the events of the two bad lines are missing, and no more"
        );
        assert_eq!(trace.line_number(2), 5, "seq 4 is on line 5");
    }

    #[test]
    fn a_held_first_event_keeps_a_file_of_bad_lines_a_recording() {
        // A recording cut from a longer one begins after seq 0: its first event waits for
        // the lines after it. A thousand bad lines after it do not make the file "no
        // recording", and the events after them are read.
        let console = |seq| line(seq, Body::Console(Console::line("x".to_string())));
        let path = temporary("held-first");
        let mut text = console(3) + "\n";
        text.push_str(&"not an event\n".repeat(NOT_A_RECORDING_AFTER));
        for seq in 4..638 {
            text.push_str(&console(seq));
            text.push('\n');
        }
        std::fs::write(&path, text).unwrap();
        let trace = Trace::open(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        assert_eq!(trace.bad_lines(), NOT_A_RECORDING_AFTER);
        assert_eq!(
            trace.len(),
            635,
            "the held event and every one after the bad lines"
        );
    }

    #[test]
    fn a_line_too_long_for_any_event_is_its_own_error_and_is_not_held_whole() {
        let console = |seq| line(seq, Body::Console(Console::line("x".to_string())));
        // A line of three chunks between two events, and one that fits a chunk but not
        // MAX_LINE: each is a bad line, named by its number.
        let path = temporary("too-long");
        let long = "x".repeat(3 * CHUNK);
        let fits_a_chunk = "y".repeat(MAX_LINE + 1);
        std::fs::write(
            &path,
            format!(
                "{}\n{long}\n{}\n{fits_a_chunk}\n{}\n",
                console(0),
                console(1),
                console(2)
            ),
        )
        .unwrap();
        let trace = Trace::open(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        assert_eq!(trace.len(), 3, "the events around the long lines are kept");
        assert_eq!(trace.bad_lines(), 2);
        let error = trace.error().expect("the long line");
        assert_eq!(error.line, 2);
        assert_eq!(error.error, JsonError::TooLong { limit: MAX_LINE });
        assert_eq!(
            (trace.line_number(1), trace.line_number(2)),
            (3, 5),
            "the lines after a long one are counted right"
        );
        assert_eq!(
            trace.event(2).unwrap().seq,
            2,
            "and read back from their offset"
        );
        assert_eq!(trace.faults(), [StreamFault::Truncated]);

        // A file without a newline: read a chunk at a time, never held whole.
        let path = temporary("no-newline");
        std::fs::write(&path, "z".repeat(5 * CHUNK)).unwrap();
        let (mut trace, mut loader) = Trace::start_loading(&path).unwrap();
        let mut pieces = 0;
        while !loader
            .load(&mut trace, Some(std::time::Duration::ZERO))
            .unwrap()
        {
            assert_eq!(loader.buffer.len(), CHUNK, "the buffer never grows");
            pieces += 1;
        }
        std::fs::remove_file(&path).unwrap();
        assert!(pieces >= 4, "{pieces}");
        assert!(trace.is_empty());
        assert_eq!(trace.bad_lines(), 1);
        assert_eq!(trace.error().map(|error| error.line), Some(1));
    }

    #[test]
    fn an_event_without_the_dom_its_kind_needs_is_its_line_s_error() {
        let good = line(0, Body::Console(Console::line("hello")));
        let no_dom = r#"{"v":1,"seq":1,"tsc":20,"kind":"console","text":"whose?"}"#;
        let after = line(2, Body::Console(Console::line("bye")));
        let path = temporary("no-dom");
        std::fs::write(&path, format!("{good}\n{no_dom}\n{after}\n")).unwrap();
        let trace = Trace::open(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        assert_eq!(trace.len(), 2);
        let error = trace.error().expect("the line without its dom");
        assert_eq!(error.line, 2);
        assert!(
            error.to_string().ends_with(
                ":2: an event of kind \"console\" is always about a domain, but this one has no \"dom\""
            ),
            "{error}"
        );
    }

    #[test]
    fn a_null_dom_is_its_line_s_error_and_the_lines_around_it_are_kept() {
        let good = line(0, Body::Console(Console::line("hello")));
        let null_dom =
            r#"{"v":1,"seq":1,"tsc":20,"dom":null,"kind":"end","status":0,"reason":"done"}"#;
        let after = line(2, Body::Console(Console::line("bye")));
        let path = temporary("null-dom");
        std::fs::write(&path, format!("{good}\n{null_dom}\n{after}\n")).unwrap();
        let trace = Trace::open(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        assert_eq!(trace.len(), 2, "the lines before and after it");
        assert_eq!(trace.bad_lines(), 1);
        let error = trace.error().expect("the line whose dom is null");
        assert!(
            error.to_string().ends_with(":2: \"dom\" is null: an event about the hypervisor has no \"dom\" at all, and null names no domain"),
            "{error}"
        );
    }

    #[test]
    fn every_bad_line_is_named_in_line_order_whenever_it_was_judged() {
        // Line 3 jumps ahead and is held; line 4 goes back, and is judged bad first; the
        // lines after line 3 judge it bad. The last line repeats the one before it.
        let mut seqs = vec![0, 1, 1_000, 1];
        seqs.extend(2..30);
        seqs.push(29);
        let text: Vec<String> = seqs
            .iter()
            .map(|&seq| line(seq, Body::Console(Console::line("x"))))
            .collect();
        let path = temporary("named-bad-lines");
        std::fs::write(&path, text.join("\n") + "\n").unwrap();
        let trace = Trace::open(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        let last = seqs.len();
        assert_eq!(trace.bad_line_runs(), [(3, 4), (last, last)]);
        assert_eq!(trace.bad_lines(), 3);
        assert_eq!(
            trace.len() + trace.bad_lines(),
            seqs.len(),
            "no line unaccounted for"
        );
        assert_eq!(
            trace.error().map(|error| error.line),
            Some(3),
            "the first line"
        );
    }

    #[test]
    fn bad_lines_are_kept_as_runs_joined_whichever_order_they_come_in() {
        let mut lines = LineRuns::default();
        for line in [3, 4, 5, 9] {
            lines.add(line);
        }
        assert_eq!(
            lines.runs(),
            [(3, 5), (9, 9)],
            "in order: joined to the last run"
        );
        // Late verdicts (`order.rs`): just before a run, between two runs, in the hole
        // between two.
        lines.add(2);
        assert_eq!(lines.runs(), [(2, 5), (9, 9)], "joined to the run after it");
        lines.add(1);
        assert_eq!(lines.runs(), [(1, 5), (9, 9)]);
        lines.add(7);
        assert_eq!(lines.runs(), [(1, 5), (7, 7), (9, 9)], "a run of its own");
        lines.add(8);
        assert_eq!(lines.runs(), [(1, 5), (7, 9)], "two runs made one");
        lines.add(6);
        assert_eq!(lines.runs(), [(1, 9)]);
        lines.add(4);
        assert_eq!(lines.runs(), [(1, 9)], "a line held already is held once");
        assert_eq!(lines.count(), 9);
    }

    #[test]
    fn a_hundred_thousand_bad_lines_in_a_row_are_one_run() {
        // One event, then lines that are none (no longer "not a recording": an event came).
        let path = temporary("long-run-of-bad-lines");
        let mut text = line(0, Body::Console(Console::line("x")));
        text.push('\n');
        text.push_str(&"root:x:0:0:root:/root:/bin/bash\n".repeat(100_000));
        text.push_str(&line(1, Body::Console(Console::line("y"))));
        text.push_str("\nnot an event either\n");
        std::fs::write(&path, text).unwrap();
        let trace = Trace::open(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        assert_eq!(trace.len(), 2);
        assert_eq!(trace.bad_lines(), 100_001, "every bad line counted");
        assert_eq!(
            trace.bad_line_runs(),
            [(2, 100_001), (100_003, 100_003)],
            "held as two runs, not 100,001 numbers"
        );
        assert_eq!(trace.error().map(|error| error.line), Some(2));
    }

    #[test]
    fn cycles_of_u64_max_are_a_bad_line_not_a_blank_time() {
        let path = temporary("cycles-max");
        let resume = |seq, cycles| {
            line(
                seq,
                Body::Resume(Resume {
                    rip: 1,
                    rflags: 2,
                    regs: Default::default(),
                    cycles,
                }),
            )
        };
        std::fs::write(
            &path,
            format!("{}\n{}\n", resume(0, 10), resume(1, u64::MAX)),
        )
        .unwrap();
        let trace = Trace::open(&path).unwrap();
        let error = trace.error().expect("the bad line");
        assert_eq!(error.line, 2);
        assert!(
            error
                .to_string()
                .ends_with(":2: bad \"resume\" event: cycles 18446744073709551615 is u64::MAX, not a measured time"),
            "{error}"
        );
        // The full parse says the same.
        assert_eq!(
            json::from_line(&resume(1, u64::MAX)).err(),
            Some(error.error.clone())
        );
        std::fs::remove_file(path).unwrap();
    }

    #[test]
    fn a_live_trace_grows_and_reads_back() {
        let mut trace = Trace::live("test");
        let resume = Body::Resume(Resume {
            rip: 1,
            rflags: 2,
            regs: Default::default(),
            cycles: 5,
        });
        trace.push_event(&Event {
            seq: 0,
            tsc: 0,
            dom: Some(0),
            body: resume.clone(),
        });
        assert_eq!(trace.event(0).unwrap().body, resume);
        assert_eq!(
            trace.flows().len(),
            0,
            "a resume without an exit is no flow"
        );
        assert!(trace.faults().contains(&StreamFault::Truncated));
        assert_eq!(FlowEnd::Open as u8, 0);
    }
}
