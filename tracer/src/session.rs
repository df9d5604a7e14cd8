//! One run of the machine: start QEMU, read the trace ring and the hypervisor's log while
//! it runs, and stop it cleanly.
//!
//! ```text
//!   traplab ──creates──► /dev/shm/traplab-….ram ◄──maps── QEMU (guest RAM, share=on)
//!      │                        │ the hv writes events into the ring at RING_PHYS
//!      └──────── maps and reads the ring ◄──┘
//!   QEMU stdout (COM1) ──thread──► hypervisor log lines
//! ```
//!
//! No orphan QEMU, ever: QEMU runs in its own process group with PR_SET_PDEATHSIG, so it
//! dies if traplab dies (even by SIGKILL); dropping a [`Session`] kills and reaps it; the
//! RAM file, and a temporary disk image (`disk.rs`), are unlinked as soon as QEMU has them
//! open.

use crate::disk;
use crate::gdb_relay::GdbRelay;
use crate::qemu::{self, HvStatus, Machine};
use memmap2::MmapRaw;
use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Read};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::PathBuf;
use std::process::{Child, Command as Process, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use traplab_abi::control::{Command, Mailbox};
use traplab_abi::event::Event;
use traplab_abi::ring::{self, ReadError, Ring};
use traplab_abi::wire::Decoder;

/// What a running session yields, in order of arrival.
#[derive(Debug)]
#[allow(
    clippy::large_enum_variant,
    reason = "events are nearly every item; boxing each would cost an allocation"
)]
pub enum Item {
    Event(Event),
    /// One line of the hypervisor's own log (COM1, QEMU's stdout).
    Log(String),
    /// The ring held something that is not an event: the trace cannot be trusted past it.
    Broken(String),
    /// QEMU has stopped. Nothing follows.
    Finished(Finish),
}

/// How QEMU stopped.
#[derive(Debug, Clone)]
pub struct Finish {
    /// QEMU's exit code, or `None` when a signal ended it.
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    /// The hypervisor's status, when it reported one.
    pub hv_status: Option<HvStatus>,
    /// What QEMU wrote to its stderr.
    pub stderr: String,
    /// We stopped QEMU because of Ctrl-C / the stop flag.
    pub interrupted: bool,
    /// We stopped QEMU because the session's time limit passed.
    pub timed_out: bool,
    /// The caller stopped QEMU ([`Session::stop`]), and why, in its words.
    pub stopped: Option<String>,
    /// The trace ring could not be read on (`Item::Broken`): the trace is incomplete,
    /// whatever the hypervisor's status.
    pub ring_broken: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error("{program} is not installed. Install it with: {install}", program = qemu::PROGRAM, install = qemu::install_text())]
    QemuMissing,
    #[error("{what}: {error}")]
    Io { what: String, error: std::io::Error },
}

fn io_error(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> SessionError {
    let what = what.into();
    move |error| SessionError::Io { what, error }
}

/// How often a session reads a ring that events flow into (`Session::read_interval`).
pub const BATCH_INTERVAL: Duration = Duration::from_millis(1);

/// Options beyond the machine itself.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Set it (from a Ctrl-C handler, another thread) to stop QEMU.
    pub stop: Option<Arc<AtomicBool>>,
    /// Stop QEMU after this long.
    pub timeout: Option<Duration>,
    /// Read the ring at most this often: a deliberately slow reader. With
    /// `TraceMode::Lossy` and a small ring the hypervisor then drops events: how the tests
    /// prove that a loss is reported. (With `TraceMode::Ring` it waits instead.)
    pub read_interval: Option<Duration>,
}

/// The machine's RAM, shared with QEMU (and, through [`Control`], with other threads).
struct SharedRam {
    path: PathBuf,
    unlinked: AtomicBool,
    map: MmapRaw,
    _file: File,
}

/// A new name for one of a run's temporary files, `traplab-PID-N.EXTENSION`: in
/// /dev/shm (memory) when there is one, else the system's temporary folder.
///
/// A run removes its files, but one that was killed (SIGKILL, as a test or a timeout does)
/// could not, and its PID is given to another process later (Linux reuses them, from 32,768
/// by default): a new run with that PID found its name taken ("File exists") and could not
/// start. So the first name a process asks for sweeps the folder of the files of runs that
/// no longer run, its own PID's among them ([`remove_left_behind`]).
fn temporary_path(extension: &str) -> PathBuf {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    static SWEPT: std::sync::Once = std::sync::Once::new();
    let dir = if std::path::Path::new("/dev/shm").is_dir() {
        PathBuf::from("/dev/shm")
    } else {
        std::env::temp_dir()
    };
    SWEPT.call_once(|| remove_left_behind(&dir));
    dir.join(format!(
        "traplab-{}-{}.{extension}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ))
}

/// Remove from `dir` the temporary files (`traplab-PID-N.…`) of runs whose process is gone
/// (no `/proc/PID`), and those named by this process's PID: called before this process made
/// any, they are a dead run's that had its PID. A killed run's RAM file held up to its RAM
/// size of memory in /dev/shm, and its name blocked the next run with its PID. Files that
/// are not traplab's, or that cannot be removed (another user's), stay.
fn remove_left_behind(dir: &std::path::Path) {
    // Without /proc no process could be told alive: nothing is removed.
    if !std::path::Path::new("/proc/self").exists() {
        return;
    }
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|name| name.strip_prefix("traplab-"))
            .and_then(|rest| rest.split_once('-'))
            .and_then(|(pid, _)| pid.parse::<u32>().ok())
        else {
            continue;
        };
        let gone = !std::path::Path::new("/proc").join(pid.to_string()).exists();
        if gone || pid == std::process::id() {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

impl SharedRam {
    fn create(mib: u32) -> Result<SharedRam, SessionError> {
        let path = temporary_path("ram");
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(io_error(format!("creating {}", path.display())))?;
        file.set_len(mib as u64 * 1024 * 1024)
            .map_err(io_error("sizing the RAM file"))?;
        // The file is ours (create_new) and only QEMU shares it; we touch the ring and the
        // mailbox through atomics and after acquire loads, as `traplab_abi` requires.
        let map = MmapRaw::map_raw(&file).map_err(io_error("mapping the RAM file"))?;
        Ok(SharedRam {
            path,
            unlinked: AtomicBool::new(false),
            map,
            _file: file,
        })
    }

    /// The ring's header page inside the mapping.
    fn ring_header(&self) -> *mut u8 {
        // SAFETY: the mapping is `ram_mib` MiB, far more than RING_PHYS + HEADER_SIZE.
        unsafe { self.map.as_mut_ptr().add(ring::RING_PHYS as usize) }
    }

    fn unlink(&self) {
        if !self.unlinked.swap(true, Ordering::Relaxed) {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

impl Drop for SharedRam {
    fn drop(&mut self) {
        self.unlink();
    }
}

/// A running (or finished) machine.
pub struct Session {
    child: Child,
    ram: Arc<SharedRam>,
    /// The disk's image, when the machine has a disk.
    disk: Option<disk::Image>,
    /// gdb's port, when the machine has one.
    gdb_relay: Option<GdbRelay>,
    controlled: bool,
    ring: Option<Ring>,
    /// Turns the ring's compact records back into events (`traplab_abi::wire`).
    decoder: Decoder,
    /// Bytes the hypervisor had written into the ring when we last read it.
    ring_written: u64,
    log: Receiver<String>,
    log_thread: Option<JoinHandle<()>>,
    stderr: Arc<Mutex<String>>,
    stderr_thread: Option<JoinHandle<()>>,
    pending: VecDeque<Item>,
    finished: bool,
    broken: bool,
    /// Mode `ring`: the hypervisor waits for room in the ring, so a ring nobody empties any
    /// more stops it for good.
    hv_waits_for_the_reader: bool,
    options: Options,
    started: Instant,
    interrupted: bool,
    timed_out: bool,
    stopped: Option<String>,
    idle: u32,
    last_read: Instant,
}

impl Session {
    /// Start QEMU with `machine`.
    pub fn start(machine: &Machine, options: Options) -> Result<Session, SessionError> {
        let program = qemu::find().ok_or(SessionError::QemuMissing)?;
        let ram = Arc::new(SharedRam::create(machine.ram_mib)?);
        let disk = match &machine.disk {
            Some(disk) => Some(disk::Image::prepare(disk, &temporary_path("disk")).map_err(
                io_error(match &disk.image {
                    Some(path) => format!("preparing the disk image {}", path.display()),
                    None => "creating the disk image".to_string(),
                }),
            )?),
            None => None,
        };
        // gdb's port is ours, relayed to COM2: bound before QEMU starts, which connects to it.
        let gdb_relay = match machine.gdb_port {
            Some(port) => Some(
                GdbRelay::listen(port)
                    .map_err(io_error(format!("listening for gdb on 127.0.0.1:{port}")))?,
            ),
            None => None,
        };
        let mut command = Process::new(program);
        command
            .args(qemu::arguments(
                machine,
                &ram.path,
                disk.as_ref().map(disk::Image::path),
                gdb_relay.as_ref().map(GdbRelay::qemu_port),
            ))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        // SAFETY: between fork and exec we only make async-signal-safe system calls.
        unsafe {
            command.pre_exec(|| {
                // Our own process group: a Ctrl-C in the terminal reaches traplab, which
                // stops QEMU in order, instead of QEMU dying under us.
                libc::setpgid(0, 0);
                // If traplab dies, for any reason, QEMU gets SIGKILL.
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let mut child = command.spawn().map_err(io_error("starting QEMU"))?;
        let stdout = child.stdout.take().ok_or_else(|| SessionError::Io {
            what: "QEMU's stdout".into(),
            error: std::io::Error::other("not captured"),
        })?;
        let (sender, log) = mpsc::channel();
        let log_thread = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if sender.send(line).is_err() {
                    break;
                }
            }
        });
        let stderr = Arc::new(Mutex::new(String::new()));
        let stderr_thread = child.stderr.take().map(|mut pipe| {
            let stderr = Arc::clone(&stderr);
            std::thread::spawn(move || {
                let mut text = String::new();
                let _ = pipe.read_to_string(&mut text);
                if let Ok(mut shared) = stderr.lock() {
                    shared.push_str(&text);
                }
            })
        });
        Ok(Session {
            child,
            ram,
            disk,
            gdb_relay,
            controlled: machine.control.is_some(),
            hv_waits_for_the_reader: machine.trace == qemu::TraceMode::Ring,
            ring: None,
            decoder: Decoder::new(),
            ring_written: 0,
            log,
            log_thread: Some(log_thread),
            stderr,
            stderr_thread,
            pending: VecDeque::new(),
            finished: false,
            broken: false,
            options,
            started: Instant::now(),
            interrupted: false,
            timed_out: false,
            stopped: None,
            idle: 0,
            last_read: Instant::now(),
        })
    }

    /// The loopback port gdb attaches to, when the machine serves gdb: the one
    /// [`Machine::gdb_port`](qemu::Machine::gdb_port) asked for, or, for 0, the free port
    /// the system chose.
    pub fn gdb_port(&self) -> Option<u16> {
        self.gdb_relay.as_ref().map(GdbRelay::gdb_port)
    }

    /// QEMU's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The hand on the hypervisor, once it is up (its ring is there) and when the machine
    /// was started with `control`.
    pub fn control(&mut self) -> Option<Control> {
        if !self.controlled {
            return None;
        }
        if self.ring.is_none() {
            self.poll_ring();
        }
        self.ring.as_ref()?;
        // SAFETY: the header page lives as long as `ram`, which the Control keeps alive;
        // Control serialises its posts with a lock.
        let mailbox = unsafe { Mailbox::new(self.ram.ring_header()) };
        Some(Control {
            _ram: Arc::clone(&self.ram),
            mailbox: Arc::new(Mutex::new(mailbox)),
        })
    }

    /// Has QEMU stopped and everything been handed out?
    pub fn is_done(&self) -> bool {
        self.finished && self.pending.is_empty()
    }

    /// Read what the ring holds now into `pending`. Returns how many events came.
    fn poll_ring(&mut self) -> usize {
        if self.broken {
            return 0;
        }
        if self.ring.is_none() {
            let length = self.ram.map.len();
            // SAFETY: the mapping is `length` bytes, page-aligned, and lives as long as the
            // session (`ram` is an Arc the session holds; `Ring` is never used after drop).
            match unsafe { Ring::attach(self.ram.ring_header(), length - ring::RING_PHYS as usize) }
            {
                Ok(attached) => {
                    self.ring = Some(attached);
                    // QEMU has the file open (the hypervisor wrote to it): the name can go.
                    // So can a temporary disk image's: QEMU opened its drives before the
                    // hypervisor ran.
                    self.ram.unlink();
                    if let Some(disk) = &self.disk {
                        disk.unlink();
                    }
                }
                Err(ReadError::NotReady) => return 0,
                Err(error) => {
                    self.break_ring(format!("the trace ring is unusable: {error:?}"));
                    return 0;
                }
            }
        }
        let Some(ring) = self.ring.as_mut() else {
            return 0;
        };
        let mut events = Vec::new();
        let mut undecodable = None;
        let decoder = &mut self.decoder;
        // Records build on the ones before them: after one that does not decode, the rest
        // cannot be trusted, and are not shown.
        let result = ring.consume(|record| {
            if undecodable.is_some() || self.broken {
                return;
            }
            // A ring record holds one event or several (a trap's, gathered).
            match decoder.decode(record, &mut events) {
                Ok(()) => {}
                Err(error) => {
                    undecodable = Some(format!("a ring record is not an event: {error:?}"));
                }
            }
        });
        let count = events.len();
        self.ring_written = ring.written();
        self.pending.extend(events.into_iter().map(Item::Event));
        if let Err(error) = result {
            self.break_ring(format!("the trace ring is corrupt: {error:?}"));
        }
        if let Some(message) = undecodable {
            self.break_ring(message);
        }
        count
    }

    /// The ring cannot be read on: say so, and in mode `ring` stop QEMU. Nobody empties the
    /// ring any more, and in that mode the hypervisor waits for room without end
    /// (`hv/src/trace.rs`): left running, the run would sit until its time limit, or for
    /// ever under gdb. (A lossy ring's hypervisor drops events instead, and runs to its end.)
    fn break_ring(&mut self, message: String) {
        if self.broken {
            return;
        }
        self.broken = true;
        self.pending.push_back(Item::Broken(message));
        if self.hv_waits_for_the_reader {
            self.stop("the trace ring broke: nothing after it can be read");
        }
    }

    fn poll_log(&mut self) {
        while let Ok(line) = self.log.try_recv() {
            self.pending.push_back(Item::Log(line));
        }
    }

    /// QEMU has exited: collect the rest of everything, then `Finished`.
    fn finish(&mut self, status: std::process::ExitStatus) {
        self.poll_ring();
        if let Some(thread) = self.log_thread.take() {
            let _ = thread.join();
        }
        self.poll_log();
        if let Some(thread) = self.stderr_thread.take() {
            let _ = thread.join();
        }
        let stderr = self
            .stderr
            .lock()
            .map(|text| text.clone())
            .unwrap_or_default();
        let exit_code = status.code();
        // QEMU's own failure (a bad option, a kernel file it cannot open) exits with 1, the
        // code the hypervisor's "done" makes too (`isa-debug-exit`: (0 << 1) | 1). A
        // hypervisor that ran has set its ring up: without it, the 1 is QEMU's.
        let hv_status = exit_code
            .and_then(HvStatus::from_qemu_exit_code)
            .filter(|&status| status != HvStatus::Done || self.ring.is_some());
        self.pending.push_back(Item::Finished(Finish {
            exit_code,
            signal: status.signal(),
            hv_status,
            stderr,
            interrupted: self.interrupted,
            timed_out: self.timed_out,
            stopped: self.stopped.clone(),
            ring_broken: self.broken,
        }));
        self.finished = true;
    }

    /// Bytes the hypervisor wrote into the ring, as far as we have read it (records with
    /// their headers: `traplab bench`'s bytes per event).
    pub fn ring_bytes(&self) -> u64 {
        self.ring_written
    }

    /// The next item, waiting for it if needed; `None` after `Finished`.
    pub fn next_item(&mut self) -> Option<Item> {
        self.next_within(None)
    }

    /// Stop QEMU now; the items already read still come, then `Finished` with
    /// [`Finish::stopped`] set to `why`. For a caller that has seen enough: a guest stuck on
    /// the same fault will not finish.
    pub fn stop(&mut self, why: impl Into<String>) {
        if !self.finished && self.stopped.is_none() {
            self.stopped = Some(why.into());
            self.kill();
        }
    }

    /// Stop QEMU when the stop flag is set or the time limit has passed: checked before
    /// anything is handed out, so that a trace that never pauses cannot outrun the limit.
    fn enforce_limits(&mut self) {
        if self.finished || self.interrupted || self.timed_out || self.stopped.is_some() {
            return;
        }
        let stop_requested = self
            .options
            .stop
            .as_ref()
            .is_some_and(|stop| stop.load(Ordering::Relaxed));
        let too_late = self
            .options
            .timeout
            .is_some_and(|limit| self.started.elapsed() > limit);
        if stop_requested || too_late {
            self.interrupted = stop_requested;
            self.timed_out = too_late && !stop_requested;
            self.kill();
        }
    }

    /// The next item, waiting at most `limit` (for ever with `None`); `None` when nothing
    /// came in time or after `Finished` (see [`Session::is_done`]).
    pub fn next_within(&mut self, limit: Option<Duration>) -> Option<Item> {
        let called = Instant::now();
        loop {
            self.enforce_limits();
            if limit.is_some_and(|limit| called.elapsed() >= limit) && self.pending.is_empty() {
                return None;
            }
            if let Some(item) = self.pending.pop_front() {
                return Some(item);
            }
            if self.finished {
                return None;
            }
            let interval = self.read_interval();
            if self.last_read.elapsed() >= interval {
                self.last_read = Instant::now();
                if self.poll_ring() > 0 {
                    self.idle = 0;
                    continue;
                }
                self.idle = (self.idle + 1).min(100);
            }
            self.poll_log();
            if !self.pending.is_empty() {
                continue;
            }
            match self.child.try_wait() {
                Ok(Some(status)) => {
                    self.finish(status);
                    continue;
                }
                Ok(None) => {}
                Err(_) => {
                    self.kill();
                    continue;
                }
            }
            if self.interrupted || self.timed_out || self.stopped.is_some() {
                // QEMU was killed: wait for it, then everything it left comes.
                if let Ok(status) = self.child.wait() {
                    self.finish(status);
                }
                continue;
            }
            // Nothing to do until the next read.
            let next_read = self
                .read_interval()
                .saturating_sub(self.last_read.elapsed());
            std::thread::sleep(next_read.max(Duration::from_micros(20)));
        }
    }

    /// How long after one read of the ring the next one comes. While events flow, every
    /// [`BATCH_INTERVAL`]: each read takes all the hypervisor wrote meanwhile, and a reader
    /// that woke for every trap would take CPU time from QEMU, which shares the machine's
    /// cores with it. When the ring was empty, the wait grows from 20 µs to 2 ms: a trace
    /// that starts again is read at once, and an idle one costs little.
    fn read_interval(&self) -> Duration {
        match self.options.read_interval {
            Some(interval) => interval,
            None if self.idle == 0 => BATCH_INTERVAL,
            None => Duration::from_micros(20 * u64::from(self.idle)),
        }
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
    }
}

/// Pause, step and break the hypervisor (see `traplab_abi::control`). Cheap to clone and
/// to send to another thread; it keeps the shared RAM mapped.
#[derive(Clone)]
pub struct Control {
    _ram: Arc<SharedRam>,
    mailbox: Arc<Mutex<Mailbox>>,
}

impl std::fmt::Debug for Control {
    fn fmt(&self, formatter: &mut std::fmt::Formatter) -> std::fmt::Result {
        formatter.write_str("Control")
    }
}

impl Control {
    /// Post a command; waits (up to a second) while the mailbox is full.
    pub fn send(&self, command: Command) -> Result<(), SessionError> {
        let started = Instant::now();
        let mailbox = self.mailbox.lock().map_err(|_| SessionError::Io {
            what: "the control mailbox".into(),
            error: std::io::Error::other("a thread panicked while posting"),
        })?;
        while mailbox.post(command).is_err() {
            if started.elapsed() > Duration::from_secs(1) {
                return Err(SessionError::Io {
                    what: "the control mailbox".into(),
                    error: std::io::Error::other("the hypervisor does not take commands"),
                });
            }
            std::thread::sleep(Duration::from_micros(100));
        }
        Ok(())
    }

    /// `Some(seq)` while the hypervisor is stopped after event `seq`.
    pub fn stopped_after(&self) -> Option<u64> {
        self.mailbox.lock().ok()?.stopped_after()
    }
}

impl Iterator for Session {
    type Item = Item;
    fn next(&mut self) -> Option<Item> {
        self.next_item()
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        if !self.finished {
            self.kill();
            let _ = self.child.wait();
        }
    }
}

/// A whole run, collected: for tests, the checker and benchmarks.
#[derive(Debug, Clone)]
pub struct Run {
    pub events: Vec<Event>,
    /// The hypervisor's log lines.
    pub log: Vec<String>,
    /// Ring problems (`Item::Broken`).
    pub broken: Vec<String>,
    /// Broken stream promises: gaps, losses, a missing `end`.
    pub faults: Vec<crate::check::StreamFault>,
    pub finish: Finish,
}

/// Run `machine` to its end and keep everything it produced.
pub fn collect(machine: &Machine, options: Options) -> Result<Run, SessionError> {
    collect_observed(machine, options, |_| None)
}

/// How often [`collect_observed`] shows its observer a tick while no event comes.
pub const TICK: Duration = Duration::from_millis(200);

/// [`collect`], showing `observe` each event as it comes (`Some(event)`) and, while none
/// comes, a tick (`None`) every [`TICK`]: a progress line, a watch for a guest that is
/// stuck. When `observe` returns `Some(why)`, QEMU is stopped ([`Session::stop`]) and the
/// run's `finish.stopped` says why.
pub fn collect_observed(
    machine: &Machine,
    options: Options,
    mut observe: impl FnMut(Option<&Event>) -> Option<String>,
) -> Result<Run, SessionError> {
    let mut session = Session::start(machine, options)?;
    let mut check = crate::check::StreamCheck::new();
    let (mut events, mut log, mut broken) = (Vec::new(), Vec::new(), Vec::new());
    let mut finish = None;
    while !session.is_done() {
        let Some(item) = session.next_within(Some(TICK)) else {
            if let Some(why) = observe(None) {
                session.stop(why);
            }
            continue;
        };
        match item {
            Item::Event(event) => {
                check.observe(&event);
                if let Some(why) = observe(Some(&event)) {
                    session.stop(why);
                }
                events.push(event);
            }
            Item::Log(line) => log.push(line),
            Item::Broken(message) => broken.push(message),
            Item::Finished(done) => finish = Some(done),
        }
    }
    let finish = finish.ok_or_else(|| SessionError::Io {
        what: "QEMU".into(),
        error: std::io::Error::other("the session ended without finishing"),
    })?;
    Ok(Run {
        events,
        log,
        broken,
        faults: check.finish(),
        finish,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A killed run's files go (its PID runs no more: PIDs stop below 2^22 on Linux), and so
    /// do those by this process's PID (a dead run's, made before it had this PID); a live
    /// process's stay (PID 1's), and so do files that are not a run's.
    #[test]
    fn the_files_of_runs_that_are_gone_are_removed_and_no_others() {
        let dir = std::env::temp_dir().join(format!("traplab-sweep-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("a temporary folder");
        let gone = dir.join("traplab-4194305-0.ram");
        let same_pid = dir.join(format!("traplab-{}-0.ram", std::process::id()));
        let live = dir.join("traplab-1-7.disk");
        let other = dir.join("traplab-notes-4194305.txt");
        for path in [&gone, &same_pid, &live, &other] {
            std::fs::write(path, b"").expect("writable");
        }
        remove_left_behind(&dir);
        assert!(!gone.exists(), "a dead run's RAM file");
        assert!(!same_pid.exists(), "a dead run's, by this process's PID");
        assert!(live.exists(), "a live process's file");
        assert!(other.exists(), "not a run's file");
        std::fs::remove_dir_all(&dir).expect("removable");
    }
}
