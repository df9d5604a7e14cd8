//! Recording every step of every trap as an event in the shared-memory ring.
//!
//! Each event gets the next sequence number and a TSC stamp (on the trace's clock, which
//! stands still while the hypervisor is stopped: `clock::trace_clock`), is encoded as a
//! compact record (`traplab_abi::wire`: what the reader knows already is left out) and
//! pushed into the ring (`traplab_abi::ring`). What happens when the ring is full depends
//! on the mode the host asked for (`opt/traplab/trace`):
//!
//! - `ring`: a host reads the trace. We wait for it to free space: nothing is lost, and a
//!   slow reader slows the guest down, which is the honest trade for a teaching tool.
//! - `lossy`: nobody promised to read. We drop the event but still use up its sequence
//!   number, and the next event that fits is preceded by `lost { count }`: the gap in `seq`
//!   and the `lost` event both tell the reader.
//! - `off`: no events at all (the baseline of `traplab bench`).
//!
//! This module only writes the ring. What happens around an event (the host's pause and
//! step, gdb's list of recent decisions) is the run loop's to call (`run::record`).

use crate::clock::trace_clock;
use alloc::boxed::Box;
use core::sync::atomic::{AtomicU8, Ordering};
use spin::Mutex;
use traplab_abi::event::{Body, Lost};
use traplab_abi::ring::{self, PushError, Ring};
use traplab_abi::wire::Encoder;

/// Who reads the trace, and so what a full ring means (fw_cfg `opt/traplab/trace`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Ring,
    Lossy,
    Off,
}

impl Transport {
    pub fn parse(text: &str) -> Option<Transport> {
        match text {
            "ring" => Some(Transport::Ring),
            "lossy" => Some(Transport::Lossy),
            "off" => Some(Transport::Off),
            _ => None,
        }
    }
}

struct Tracer {
    ring: Ring,
    next_seq: u64,
    dropped: u64,
    scratch: Box<[u8; ring::MAX_RECORD]>,
    /// Writes each event as a compact record (`traplab_abi::wire`).
    encoder: Encoder,
}

static TRACER: Mutex<Option<Tracer>> = Mutex::new(None);

/// The tracer's mode, as a number (`init` sets it): `OFF` until then.
static MODE: AtomicU8 = AtomicU8::new(OFF);
const OFF: u8 = 0;
const RING: u8 = 1;
const LOSSY: u8 = 2;

/// The smallest ring we accept (`opt/traplab/ring-kib`): two maximal records must fit.
pub const MIN_RING_KIB: usize = 2 * ring::MAX_RECORD / 1024;

/// Set up the ring with `kib` KiB of data (clamped to what `frames.rs` reserves). The
/// control mailbox in its header page must be reset first (`main.rs` does).
pub fn init(mode: Transport, kib: usize) {
    let size = (kib.clamp(MIN_RING_KIB, ring::DATA_SIZE / 1024)) * 1024;
    // SAFETY: `memory.rs` reserves [RING_PHYS, RING_PHYS + HEADER_SIZE + DATA_SIZE) for the
    // ring alone; it is RAM, identity-mapped, 8-aligned, and `size` <= DATA_SIZE.
    let ring = unsafe { Ring::create(ring::RING_PHYS as *mut u8, size) };
    let number = match mode {
        Transport::Off => OFF,
        Transport::Ring => RING,
        Transport::Lossy => LOSSY,
    };
    MODE.store(number, Ordering::Relaxed);
    *TRACER.lock() = Some(Tracer {
        ring,
        next_seq: 0,
        dropped: 0,
        scratch: Box::new([0; ring::MAX_RECORD]),
        encoder: Encoder::new(),
    });
}

/// Is anybody reading? When not, callers skip building events, and the guest console
/// goes to the hypervisor log instead.
pub fn enabled() -> bool {
    mode() != Transport::Off
}

/// Is a host reading the ring (mode `ring`)?
pub fn has_reader() -> bool {
    mode() == Transport::Ring
}

/// The mode, read without the tracer's lock (the run loop asks several times an exit).
fn mode() -> Transport {
    match MODE.load(Ordering::Relaxed) {
        RING => Transport::Ring,
        LOSSY => Transport::Lossy,
        _ => Transport::Off,
    }
}

/// Record one event about domain `dom` (`None`: about the hypervisor). Its seq, or `None`
/// when nothing was recorded (the trace is off, or the event was dropped).
#[inline]
pub fn emit(dom: Option<u16>, body: &Body) -> Option<u64> {
    let mut guard = TRACER.lock();
    let tracer = guard.as_mut()?;
    if mode() == Transport::Off {
        return None;
    }
    if tracer.dropped > 0 {
        let lost = Body::Lost(Lost {
            count: tracer.dropped,
        });
        if tracer.push(dom, &lost).is_none() {
            // Still no room (`push` counted the `lost` event itself). This event goes too:
            // recorded now, it would come before the `lost` event that explains the gap
            // ahead of it (the host may free room between the two pushes).
            tracer.next_seq += 1;
            tracer.dropped += 1;
            return None;
        }
        tracer.dropped = 0;
    }
    tracer.push(dom, body)
}

/// The seq of the last event recorded, if any.
pub fn last_seq() -> Option<u64> {
    TRACER
        .lock()
        .as_ref()
        .and_then(|tracer| tracer.next_seq.checked_sub(1))
}

impl Tracer {
    /// Encode and push; its seq, or `None` if it was dropped.
    #[inline]
    fn push(&mut self, dom: Option<u16>, body: &Body) -> Option<u64> {
        let seq = self.next_seq;
        self.next_seq += 1;
        let encoded = self
            .encoder
            .encode(seq, trace_clock(), dom, body, &mut self.scratch[..]);
        let Ok(bytes) = encoded else {
            // Larger than a record can be: a hypervisor bug, reported as a loss.
            self.dropped += 1;
            return None;
        };
        loop {
            match self.ring.push(bytes) {
                Ok(()) => {
                    self.encoder.commit();
                    return Some(seq);
                }
                Err(PushError::Full) if mode() == Transport::Ring => core::hint::spin_loop(),
                Err(_) => {
                    self.dropped += 1;
                    return None;
                }
            }
        }
    }
}
