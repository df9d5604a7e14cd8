//! A trace held compactly: a million events in well under 200 bytes each.
//!
//! A recording's lines stay where they are (in the file, or for a live run in one byte
//! buffer); the store keeps, per event, only an [`EventIndex`] (where its line is, its
//! `seq`, `tsc`, domain and kind: 32 bytes) and, per trap, a [`Flow`]. An event is parsed
//! in full only when someone looks at it ([`Trace::event`]), which the screen does for a
//! few dozen events at a time.
//!
//! Loading reads each line once with a small serde struct that borrows what it needs
//! ([`Facts`]) and skips the rest (registers, instruction bytes). A line that is not an
//! event stops the load: [`Trace::error`] names it, and everything before it is kept.

use crate::check::{StreamCheck, StreamFault};
use crate::flows::{self, Assembler, Facts, Flow, Kind, Switch};
use crate::json::{self, JsonError};
use crate::recording::LineError;
use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use traplab_abi::SCHEMA_VERSION;
use traplab_abi::event::{Action, DomainState, Event, EventType, ScheduleWhy};

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
    /// The first bad line, where loading stopped.
    error: Option<LineError>,
    /// Lines read so far (the next line's number is this plus one).
    lines: usize,
    /// Blank lines, as (events before them, line number after them): to name the line of an
    /// event that fails to parse later, without storing a line number per event.
    blank_lines: Vec<(u32, u32)>,
    /// Where the next line starts in a file source.
    end_offset: u64,
}

/// How much of a file is read at once while loading.
const CHUNK: usize = 2 << 20;

/// A recording being loaded: where the file is read up to.
#[derive(Debug)]
pub struct Loader {
    file: File,
    buffer: Vec<u8>,
    /// Bytes of an unfinished line carried over from the previous chunk.
    carried: usize,
    read: u64,
    total: u64,
    done: bool,
}

impl Loader {
    /// Read and index more of the file: all of it with `None`, else until `budget` has
    /// passed (a chunk at least). `Ok(true)` once the whole file is in, or a bad line ended it.
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
        if self.carried == self.buffer.len() {
            // One line longer than a chunk: grow until it fits.
            self.buffer.resize(self.buffer.len() * 2, 0);
        }
        let read = self.file.read(&mut self.buffer[self.carried..])?;
        self.read += read as u64;
        let filled = self.carried + read;
        // The complete lines of the chunk; their facts are read in parallel (that is the
        // slow part), then indexed in order.
        let mut lines = Vec::new();
        let mut start = 0;
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
        if read == 0 {
            // The last line has no newline: take it as it is (a truncated line fails here).
            if start < filled {
                trace.take_line(&self.buffer[start..filled], trace.end_offset);
            }
            self.finish(trace);
            return Ok(());
        }
        self.buffer.copy_within(start..filled, 0);
        self.carried = filled - start;
        Ok(())
    }

    fn finish(&mut self, trace: &mut Trace) {
        self.done = true;
        self.buffer = Vec::new();
        trace.finished_loading();
    }
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
            lines: 0,
            blank_lines: Vec::new(),
            end_offset: 0,
        }
    }

    /// Load a recording. `Err` only when the file cannot be read; a bad line ends the load
    /// with [`Trace::error`] set.
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
                read: 0,
                total,
                done: false,
            },
        ))
    }

    fn finished_loading(&mut self) {
        // The vectors grew by doubling: give the slack back.
        self.events.shrink_to_fit();
        self.flows.shrink_to_fit();
    }

    /// Index one line; `false` (and [`Trace::error`] set) when it is not an event.
    fn take_line(&mut self, line: &[u8], offset: u64) -> bool {
        self.take_facts(parse_line(line), line.len() as u32, offset)
    }

    /// Index one line from its [`parse_line`] result.
    fn take_facts(
        &mut self,
        facts: Result<Option<Facts>, JsonError>,
        len: u32,
        offset: u64,
    ) -> bool {
        self.lines += 1;
        // Events in seq order, each once: the index looks events up by seq (a binary
        // search), and a step back would read as a gap of a negative size.
        let facts = facts.and_then(|facts| match facts {
            Some(facts) => {
                json::check_order(self.events.last().map(|event| event.seq), facts.seq)?;
                Ok(Some(facts))
            }
            None => Ok(None),
        });
        match facts {
            Ok(Some(facts)) => {
                self.index(&facts, offset, len);
                true
            }
            Ok(None) => {
                self.blank_lines
                    .push((self.events.len() as u32, self.lines as u32));
                true
            }
            Err(error) => {
                self.error = Some(LineError {
                    path: self.name.clone(),
                    line: self.lines,
                    error,
                });
                false
            }
        }
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
        self.check
            .observe_parts(facts.seq, facts.lost, facts.kind == Kind::End);
        if let Some(hz) = facts.tsc_hz {
            self.tsc_hz = Some(hz);
        }
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

    /// The first bad line, if loading stopped at one.
    pub fn error(&self) -> Option<&LineError> {
        self.error.as_ref()
    }

    /// The recording's path (`None` for a live run).
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// Broken promises of the stream so far: gaps, losses, no `end` (yet).
    pub fn faults(&self) -> Vec<StreamFault> {
        self.check.faults_so_far()
    }

    /// The line number of event number `index`.
    pub fn line_number(&self, index: usize) -> usize {
        let blanks = self
            .blank_lines
            .partition_point(|&(before, _)| before as usize <= index);
        index + 1 + blanks
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

/// The fields of a line that the index and the assembler need. Borrowed strings: these
/// values never contain JSON escapes (kinds, actions, types, hex numbers).
#[derive(serde::Deserialize)]
struct Header<'a> {
    v: Option<u64>,
    seq: Option<u64>,
    tsc: Option<u64>,
    dom: Option<u64>,
    kind: Option<&'a str>,
    exitcode: Option<u64>,
    rip: Option<&'a str>,
    action: Option<&'a str>,
    vector: Option<u8>,
    cycles: Option<u64>,
    state: Option<&'a str>,
    /// Owned: a domain's name may contain escapes.
    name: Option<String>,
    tsc_hz: Option<u64>,
    count: Option<u64>,
    /// `inject`: the EVENTINJ type.
    #[serde(rename = "type")]
    event_type: Option<&'a str>,
    /// `notify`: the domain notified; `schedule`: the domains switched from and to.
    from: Option<u64>,
    to: Option<u64>,
    /// `notify`, `schedule`: the port.
    port: Option<u32>,
    /// `schedule`: why (a `decide` has a `why` too, in words that may hold escapes).
    #[serde(borrow)]
    why: Option<std::borrow::Cow<'a, str>>,
}

/// The facts of one line; `None` for a blank line.
fn parse_line(line: &[u8]) -> Result<Option<Facts>, JsonError> {
    if line.iter().all(u8::is_ascii_whitespace) {
        Ok(None)
    } else {
        read_facts(line).map(Some)
    }
}

/// Read the [`Facts`] of one line, with the same errors as [`json::from_line`] for what
/// it checks: JSON syntax, the envelope (`v`, `seq`, `tsc`, `dom`, `kind`) and the fields
/// a flow is built from.
pub fn read_facts(line: &[u8]) -> Result<Facts, JsonError> {
    let header: Header = serde_json::from_slice(line).map_err(|error| {
        if error.is_data() {
            JsonError::Data(error.to_string())
        } else {
            JsonError::Syntax(error.to_string())
        }
    })?;
    let version = header.v.ok_or(JsonError::Field("v"))?;
    if version != SCHEMA_VERSION as u64 {
        return Err(JsonError::Version { found: version });
    }
    let seq = header.seq.ok_or(JsonError::Field("seq"))?;
    let tsc = header.tsc.ok_or(JsonError::Field("tsc"))?;
    let dom = match header.dom {
        None => None,
        Some(dom) => Some(
            u16::try_from(dom)
                .ok()
                .filter(|&dom| dom != NO_DOM)
                .ok_or(JsonError::Field("dom"))?,
        ),
    };
    let kind_name = header.kind.ok_or(JsonError::Field("kind"))?;
    let kind =
        Kind::from_name(kind_name).ok_or_else(|| JsonError::UnknownKind(kind_name.to_string()))?;
    let body_error = |message: &str| JsonError::Body {
        kind: kind_name.to_string(),
        message: message.to_string(),
    };
    let mut facts = Facts {
        seq,
        tsc,
        dom,
        kind,
        ..Facts::default()
    };
    let hex = |text: Option<&str>| text.and_then(traplab_abi::event::hex::parse);
    match kind {
        Kind::Boot => {
            facts.tsc_hz = Some(
                header
                    .tsc_hz
                    .ok_or_else(|| body_error("missing field `tsc_hz`"))?,
            )
        }
        Kind::Exit => {
            facts.exitcode = Some(
                header
                    .exitcode
                    .ok_or_else(|| body_error("missing field `exitcode`"))?,
            );
            facts.rip =
                Some(hex(header.rip).ok_or_else(|| body_error("missing or bad field `rip`"))?);
        }
        Kind::Decide => {
            let action = match header.action {
                Some("emulate") => Action::Emulate,
                Some("reflect") => Action::Reflect,
                Some("bounce") => Action::Bounce,
                Some("forward") => Action::Forward,
                Some("kill") => Action::Kill,
                Some(other) => return Err(body_error(&format!("unknown action `{other}`"))),
                None => return Err(body_error("missing field `action`")),
            };
            facts.action = Some(action);
        }
        Kind::Inject | Kind::Bounce => {
            facts.vector = Some(
                header
                    .vector
                    .ok_or_else(|| body_error("missing field `vector`"))?,
            );
            if kind == Kind::Inject {
                facts.event_type = Some(match header.event_type {
                    Some("exception") => EventType::Exception,
                    Some("nmi") => EventType::Nmi,
                    Some("interrupt") => EventType::Interrupt,
                    Some("software") => EventType::Software,
                    _ => return Err(body_error("missing or unknown `type`")),
                });
            }
        }
        Kind::Notify => {
            let to =
                domain_field(header.to).ok_or_else(|| body_error("missing or bad field `to`"))?;
            let port = header
                .port
                .ok_or_else(|| body_error("missing field `port`"))?;
            facts.notified = Some((to, port));
        }
        Kind::Schedule => {
            let why = match header.why.as_deref() {
                Some("start") => ScheduleWhy::Start,
                Some("slice_over") => ScheduleWhy::SliceOver,
                Some("blocked") => ScheduleWhy::Blocked,
                Some("yielded") => ScheduleWhy::Yielded,
                Some("woken") => ScheduleWhy::Woken,
                Some("ended") => ScheduleWhy::Ended,
                _ => return Err(body_error("missing or unknown `why`")),
            };
            let domain = |value: Option<u64>, name: &str| match value {
                None => Ok(None),
                Some(value) => domain_field(Some(value))
                    .map(Some)
                    .ok_or_else(|| body_error(&format!("bad field `{name}`"))),
            };
            facts.switch = Some(Switch {
                from: domain(header.from, "from")?,
                to: domain(header.to, "to")?,
                why,
                port: header.port,
            });
        }
        Kind::Return => {
            facts.vector = header.vector;
            facts.rip = hex(header.rip);
        }
        Kind::Resume => {
            facts.rip = hex(header.rip);
            let cycles = header
                .cycles
                .ok_or_else(|| body_error("missing field `cycles`"))?;
            json::check_cycles(cycles)?;
            facts.cycles = Some(cycles);
        }
        Kind::Domain => {
            facts.domain_state = Some(match header.state {
                Some("created") => DomainState::Created,
                Some("exited") => DomainState::Exited,
                Some("killed") => DomainState::Killed,
                _ => return Err(body_error("missing or unknown `state`")),
            });
            facts.domain_name = header.name;
        }
        Kind::Lost => {
            facts.lost = Some(
                header
                    .count
                    .ok_or_else(|| body_error("missing field `count`"))?,
            )
        }
        Kind::Emulate | Kind::GrantMap | Kind::GrantUnmap | Kind::Console | Kind::End => {}
    }
    Ok(facts)
}

/// A domain number in a field (`to`, `from`): 0 to 65534.
fn domain_field(value: Option<u64>) -> Option<u16> {
    value
        .and_then(|value| u16::try_from(value).ok())
        .filter(|&dom| dom != NO_DOM)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flows::FlowEnd;
    use traplab_abi::event::{Body, Console, Decide, Resume};

    fn temporary(name: &str) -> PathBuf {
        std::env::temp_dir().join(format!("traplab-store-test-{}-{name}", std::process::id()))
    }

    #[test]
    fn facts_match_the_full_parse() {
        for line in [
            r#"{"v":1,"seq":187,"tsc":1234,"dom":0,"kind":"exit","exitcode":78,"reason":"EXCP_PF","exitinfo1":"0x2","exitinfo2":"0x40000000","exitintinfo":"0x0","rip":"0x2003d1","cs":8,"cpl":0,"rflags":"0x2","cr0":"0x0","cr2":"0x0","cr3":"0x0","cr4":"0x0","efer":"0x0","regs":{"rax":"0x0","rbx":"0x0","rcx":"0x0","rdx":"0x0","rsi":"0x0","rdi":"0x0","rbp":"0x0","rsp":"0x0","r8":"0x0","r9":"0x0","r10":"0x0","r11":"0x0","r12":"0x0","r13":"0x0","r14":"0x0","r15":"0x0"},"insn":"0f0b"}"#,
            r#"{"v":1,"seq":188,"tsc":1240,"dom":0,"kind":"decide","action":"reflect","why":"w","at":"hv/src/exit/exception.rs:57"}"#,
            r##"{"v":1,"seq":189,"tsc":1251,"dom":0,"kind":"inject","vector":14,"name":"#PF","type":"exception","error_code":2,"cr2":"0x40000000","handler":"0x200550","synthetic":false}"##,
            r#"{"v":1,"seq":0,"tsc":1,"kind":"console","text":"a \"quoted\" line"}"#,
            r#"{"v":1,"seq":1,"tsc":2,"dom":3,"kind":"domain","state":"created","name":"page\u002dfault","status":null,"reason":null}"#,
            r#"{"v":1,"seq":2,"tsc":3,"dom":1,"kind":"decide","action":"forward","why":"a \"quoted\" reason","at":"hv/src/exit/vmmcall.rs:9"}"#,
            r#"{"v":1,"seq":3,"tsc":4,"dom":1,"kind":"notify","to":2,"port":3,"from_port":1,"woke":true,"masked":false}"#,
            r#"{"v":1,"seq":4,"tsc":5,"kind":"schedule","from":1,"to":2,"why":"woken","port":3}"#,
            r#"{"v":1,"seq":5,"tsc":6,"kind":"schedule","from":null,"to":1,"why":"start","port":null}"#,
            r#"{"v":1,"seq":6,"tsc":7,"kind":"schedule","from":2,"to":null,"why":"slice_over","port":null}"#,
            r#"{"v":1,"seq":7,"tsc":8,"dom":2,"kind":"inject","vector":243,"name":"interrupt 0xf3","type":"interrupt","error_code":null,"cr2":null,"handler":"0x200800","synthetic":false}"#,
            r#"{"v":1,"seq":8,"tsc":9,"dom":2,"kind":"grant_map","granter":1,"gref":5,"frame":"0x230","host_addr":"0x40000000","readonly":false,"handle":0}"#,
            r#"{"v":1,"seq":9,"tsc":10,"dom":2,"kind":"grant_unmap","granter":1,"gref":5,"host_addr":"0x40000000","handle":0}"#,
        ] {
            let event = json::from_line(line).expect("a valid event");
            assert_eq!(read_facts(line.as_bytes()), Ok(Facts::of(&event)), "{line}");
        }
    }

    #[test]
    fn bad_lines_have_the_errors_of_the_full_parse() {
        assert!(matches!(
            read_facts(b"{\"v\":1,"),
            Err(JsonError::Syntax(_))
        ));
        assert_eq!(read_facts(br#"{"seq":1}"#), Err(JsonError::Field("v")));
        assert_eq!(
            read_facts(br#"{"v":7,"seq":1,"tsc":0,"kind":"end"}"#),
            Err(JsonError::Version { found: 7 })
        );
        assert_eq!(
            read_facts(br#"{"v":1,"seq":1,"tsc":0,"kind":"party"}"#),
            Err(JsonError::UnknownKind("party".into()))
        );
        assert!(matches!(
            read_facts(br#"{"v":1,"seq":"one","tsc":0,"kind":"end"}"#),
            Err(JsonError::Data(_))
        ));
        assert!(matches!(
            read_facts(br#"{"v":1,"seq":1,"tsc":0,"kind":"decide","action":"dance"}"#),
            Err(JsonError::Body { .. })
        ));
        assert!(matches!(
            read_facts(
                br#"{"v":1,"seq":1,"tsc":0,"kind":"schedule","from":1,"to":2,"why":"bored"}"#
            ),
            Err(JsonError::Body { .. })
        ));
        assert!(matches!(
            read_facts(br#"{"v":1,"seq":1,"tsc":0,"dom":1,"kind":"notify","to":65535,"port":1}"#),
            Err(JsonError::Body { .. })
        ));
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
    fn a_bad_line_stops_the_load_and_keeps_what_came_before() {
        let path = temporary("bad-line");
        let console = |seq, text: &str| {
            line(
                seq,
                Body::Console(Console {
                    text: text.to_string().into(),
                }),
            )
        };
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
                "{}\n\n{decide}\n{}\n{}",
                console(0, "a"),
                &console(2, "b")[..20],
                console(3, "c")
            ),
        )
        .unwrap();
        let trace = Trace::open(&path).unwrap();
        assert_eq!(trace.len(), 2);
        let error = trace.error().expect("an error");
        assert_eq!(error.line, 4);
        assert!(
            error
                .to_string()
                .ends_with(":4: not JSON: EOF while parsing an object at line 1 column 20"),
            "{error}"
        );
        assert_eq!(trace.line_number(1), 3, "the blank line counts");
        assert_eq!(trace.event(1).unwrap().seq, 1);
        std::fs::remove_file(path).unwrap();
    }

    #[test]
    fn a_seq_that_repeats_or_goes_back_stops_the_load_at_its_line() {
        let console = |seq| {
            line(
                seq,
                Body::Console(Console {
                    text: "x".to_string().into(),
                }),
            )
        };
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
