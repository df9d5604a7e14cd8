//! Recording every step of every trap as an event in the shared-memory ring.
//!
//! Each event gets the next sequence number and a TSC stamp, is encoded (postcard) and
//! pushed into the ring (`traplab_abi::ring`). What happens when the ring is full depends
//! on the mode the host asked for (`opt/traplab/trace`):
//!
//! - `ring`: a host reads the trace. We wait for it to free space: nothing is lost, and a
//!   slow reader slows the guest down, which is the honest trade for a teaching tool.
//! - `lossy`: nobody promised to read. We drop the event but still use up its sequence
//!   number, and the next event that fits is preceded by `lost { count }`: the gap in `seq`
//!   and the `lost` event both tell the reader.
//! - `off`: no events at all (the baseline of `traplab bench`).

use crate::time::rdtsc;
use alloc::borrow::Cow;
use alloc::boxed::Box;
use core::fmt;
use spin::Mutex;
use traplab_abi::event::{self, Action, Body, Decide, Event, Lost};
use traplab_abi::ring::{self, PushError, Ring};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Ring,
    Lossy,
    Off,
}

impl Mode {
    pub fn parse(text: &str) -> Option<Mode> {
        match text {
            "ring" => Some(Mode::Ring),
            "lossy" => Some(Mode::Lossy),
            "off" => Some(Mode::Off),
            _ => None,
        }
    }
}

struct Tracer {
    mode: Mode,
    ring: Ring,
    next_seq: u64,
    dropped: u64,
    scratch: Box<[u8; ring::MAX_RECORD]>,
}

static TRACER: Mutex<Option<Tracer>> = Mutex::new(None);

/// The smallest ring we accept (`opt/traplab/ring-kib`): two maximal records must fit.
pub const MIN_RING_KIB: usize = 2 * ring::MAX_RECORD / 1024;

/// Set up the ring with `kib` KiB of data (clamped to what `memory.rs` reserves).
pub fn init(mode: Mode, kib: usize) {
    let size = (kib.clamp(MIN_RING_KIB, ring::DATA_SIZE / 1024)) * 1024;
    // The control mailbox shares the ring's header page: clean it before the ring's magic
    // tells the host it may look.
    crate::control::reset_mailbox();
    // SAFETY: `memory.rs` reserves [RING_PHYS, RING_PHYS + HEADER_SIZE + DATA_SIZE) for the
    // ring alone; it is RAM, identity-mapped, 8-aligned, and `size` <= DATA_SIZE.
    let ring = unsafe { Ring::create(ring::RING_PHYS as *mut u8, size) };
    *TRACER.lock() = Some(Tracer {
        mode,
        ring,
        next_seq: 0,
        dropped: 0,
        scratch: Box::new([0; ring::MAX_RECORD]),
    });
}

/// Is anybody reading? When not, callers skip building events, and the guest console
/// goes to the hypervisor log instead.
pub fn enabled() -> bool {
    TRACER
        .lock()
        .as_ref()
        .is_some_and(|tracer| tracer.mode != Mode::Off)
}

/// Is a host reading the ring (mode `ring`)?
pub fn has_reader() -> bool {
    TRACER
        .lock()
        .as_ref()
        .is_some_and(|tracer| tracer.mode == Mode::Ring)
}

/// Record one event about domain `dom` (`None`: about the hypervisor), then let the host's
/// controller stop us there if it wants to (`control::checkpoint`).
pub fn emit(dom: Option<u16>, body: Body) {
    let recorded = {
        let mut guard = TRACER.lock();
        let Some(tracer) = guard.as_mut() else { return };
        if tracer.mode == Mode::Off {
            return;
        }
        if tracer.dropped > 0 {
            let lost = Body::Lost(Lost {
                count: tracer.dropped,
            });
            if tracer.push(dom, lost).is_some() {
                tracer.dropped = 0;
            }
        }
        tracer.push(dom, body)
    };
    if let Some(event) = recorded {
        crate::control::checkpoint(&event);
    }
}

/// The seq of the last event recorded, if any.
pub fn last_seq() -> Option<u64> {
    TRACER
        .lock()
        .as_ref()
        .and_then(|tracer| tracer.next_seq.checked_sub(1))
}

/// `decide` events, with the source location: use the [`decide!`](crate::decide) macro.
pub fn decide(dom: u16, action: Action, why: fmt::Arguments, at: &'static str) {
    let tracing = enabled();
    if !tracing && !crate::gdb::enabled() {
        return;
    }
    let why = match why.as_str() {
        Some(text) => Cow::Borrowed(text),
        None => Cow::Owned(alloc::format!("{why}")),
    };
    // gdb's `monitor traps` remembers decisions too (a no-op without gdb).
    crate::gdb::note_decision(action, &why, at);
    if !tracing {
        return;
    }
    emit(
        Some(dom),
        Body::Decide(Decide {
            action,
            why,
            at: Cow::Borrowed(at),
        }),
    );
}

impl Tracer {
    /// Encode and push; the event, or `None` if it was dropped.
    fn push(&mut self, dom: Option<u16>, body: Body) -> Option<Event> {
        let event = Event {
            seq: self.next_seq,
            tsc: rdtsc(),
            dom,
            body,
        };
        self.next_seq += 1;
        let Ok(bytes) = event::to_wire(&event, &mut self.scratch[..]) else {
            // Larger than a record can be: a hypervisor bug, reported as a loss.
            self.dropped += 1;
            return None;
        };
        loop {
            match self.ring.push(bytes) {
                Ok(()) => return Some(event),
                Err(PushError::Full) if self.mode == Mode::Ring => core::hint::spin_loop(),
                Err(_) => {
                    self.dropped += 1;
                    return None;
                }
            }
        }
    }
}

/// `decide!(domain, Action::Reflect, "why, with {} formatting", args)`: record the
/// decision together with the file and line of the hypervisor source that made it.
#[macro_export]
macro_rules! decide {
    ($domain:expr, $action:expr, $($why:tt)+) => {
        $crate::trace::decide($domain.id, $action, format_args!($($why)+), concat!("hv/", file!(), ":", line!()))
    };
}
