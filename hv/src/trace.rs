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
//! In mode `ring` the records are *gathered*: written one after the other, in place, into a
//! ring record reserved at the ring's head, which is published at [`flush`] — before every
//! VMRUN, so a trap's events travel together — or when the next record would not fit. A
//! publish is a lock and an atomic handshake with the reader: once a trap instead of once an
//! event, and no copy (the encoder writes where the reader reads). Everything that waits
//! flushes first (the run loop's idle, a stop for the host or for gdb, the power-off), so the
//! reader never waits for an event the hypervisor has recorded. (A lossy ring drops a whole
//! ring record: it gets one event a record, so that a drop loses one event and the encoder
//! knows which.)
//!
//! This module only writes the ring. What happens around an event (the host's pause and
//! step, gdb's list of recent decisions) is the run loop's to call (`run::record`).

use crate::clock::trace_clock;
use core::sync::atomic::{AtomicU8, Ordering};
use spin::Mutex;
use traplab_abi::event::{Body, Lost};
use traplab_abi::ring::{self, PushError, Ring};
use traplab_abi::wire::{Encoder, ExitSource, ResumeSource, WireError};

/// How an event is written: by the encoder, as event `seq` at `tsc`, into the room given; the
/// record's length. (An event's body, or an exit or a resume read straight from the vCPU.)
type Encode<'a> = dyn FnMut(&mut Encoder, u64, u64, &mut [u8]) -> Result<usize, WireError> + 'a;

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
    /// How many bytes of the ring's reservation hold records gathered for the next publish
    /// (mode `ring`). The events are encoded straight into the ring, where the reader will
    /// read them: no buffer of the hypervisor's own to fill and copy at every trap.
    gathered: usize,
    /// Writes each event as a compact record (`traplab_abi::wire`).
    encoder: Encoder,
}

static TRACER: Mutex<Option<Tracer>> = Mutex::new(None);

/// The tracer's mode, as a number (`init` sets it): `OFF` until then.
static MODE: AtomicU8 = AtomicU8::new(OFF);
const OFF: u8 = 0;
const RING: u8 = 1;
const LOSSY: u8 = 2;

/// The smallest ring we accept (`opt/traplab/ring-kib`): two maximal records must fit
/// (`Ring::reserve` needs room for one, and a wrap skips at most another).
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
        gathered: 0,
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
    emit_with(dom, &mut |encoder, seq, tsc, room| {
        encoder.encode(seq, tsc, dom, body, room).map(<[u8]>::len)
    })
}

/// Record domain `dom`'s exit, its values read from `exit` (the vCPU itself) as the encoder
/// compares them with what the reader has: no event is built and copied first. Its seq, as
/// [`emit`].
#[inline]
pub fn emit_exit(dom: u16, exit: &impl ExitSource) -> Option<u64> {
    emit_with(Some(dom), &mut |encoder, seq, tsc, room| {
        encoder
            .encode_exit(seq, tsc, dom, exit, room)
            .map(<[u8]>::len)
    })
}

/// Record domain `dom`'s resume, read from `resume` (the vCPU itself), as [`emit_exit`].
#[inline]
pub fn emit_resume(dom: u16, resume: &impl ResumeSource) -> Option<u64> {
    emit_with(Some(dom), &mut |encoder, seq, tsc, room| {
        encoder
            .encode_resume(seq, tsc, dom, resume, room)
            .map(<[u8]>::len)
    })
}

/// Record `bodies`, a trap's events about domain `dom`, in order, as [`emit`] would one by
/// one, under one hold of the tracer: the run loop's when nothing but the trace looks at them
/// (`run.rs`), where each [`emit`] took the tracer's lock and read its mode again.
pub fn emit_all(dom: u16, bodies: &[Body]) {
    let mut guard = TRACER.lock();
    let Some(tracer) = guard.as_mut().filter(|_| mode() != Transport::Off) else {
        return;
    };
    let dom = Some(dom);
    for body in bodies {
        tracer.record(dom, &mut |encoder, seq, tsc, room| {
            encoder.encode(seq, tsc, dom, body, room).map(<[u8]>::len)
        });
    }
}

/// Record one event about `dom`, written by `encode`.
#[inline(always)]
fn emit_with(dom: Option<u16>, encode: &mut Encode) -> Option<u64> {
    let mut guard = TRACER.lock();
    let tracer = guard.as_mut().filter(|_| mode() != Transport::Off)?;
    tracer.record(dom, encode)
}

/// The seq of the last event recorded, if any.
pub fn last_seq() -> Option<u64> {
    TRACER
        .lock()
        .as_ref()
        .and_then(|tracer| tracer.next_seq.checked_sub(1))
}

/// Publish the records gathered so far (mode `ring`; nothing to do otherwise). Called before
/// VMRUN and before anything that waits.
#[inline]
pub fn flush() {
    // Before every VMRUN: untraced, one load.
    if mode() == Transport::Ring {
        flush_gathered();
    }
}

fn flush_gathered() {
    // The lock is held only when the hypervisor panicked inside the tracer (one CPU, no
    // interrupts in here): then the record being written is unfinished, and stays unsent.
    if let Some(mut guard) = TRACER.try_lock()
        && let Some(tracer) = guard.as_mut()
    {
        tracer.flush();
    }
}

impl Tracer {
    /// Record one event about `dom`, written by `encode`, after the `lost` event that says
    /// how many went before it, if any did: its seq, or `None` when it was dropped.
    #[inline(always)]
    fn record(&mut self, dom: Option<u16>, encode: &mut Encode) -> Option<u64> {
        if self.dropped > 0 && !self.push_lost(dom) {
            return None;
        }
        self.push(encode)
    }

    /// Encode, and gather (mode `ring`) or push; its seq, or `None` if it was dropped.
    /// Inlined into the run loop's `record_with`, with one call of the encoder: under QEMU's
    /// TCG each return is a block looked up again after every world switch, and this saves
    /// one a traced trap, the prologue and epilogue of a call at every event too.
    #[inline(always)]
    fn push(&mut self, encode: &mut Encode) -> Option<u64> {
        let seq = self.next_seq;
        self.next_seq += 1;
        let tsc = trace_clock();
        if mode() != Transport::Ring {
            return self.push_alone(seq, tsc, encode);
        }
        if self.gathered == 0 {
            self.reserve();
        }
        let length = match self.encode_gathered(seq, tsc, encode) {
            Some(length) => length,
            None => {
                core::hint::cold_path();
                self.encode_in_next_record(seq, tsc, encode)?
            }
        };
        // A ring that a reader empties takes every record, in order (`reserve` waits for
        // room): the reader will know what this record taught from now on.
        self.encoder.commit();
        self.gathered += length;
        Some(seq)
    }

    /// Before the next event, the `lost` event that says how many went: `false` when there
    /// was no room for it either. Apart from [`emit`], which would hold a second copy of
    /// [`Tracer::push`] for it.
    #[cold]
    #[inline(never)]
    fn push_lost(&mut self, dom: Option<u16>) -> bool {
        let lost = Body::Lost(Lost {
            count: self.dropped,
        });
        let mut encode_lost = |encoder: &mut Encoder, seq, tsc, room: &mut [u8]| {
            encoder.encode(seq, tsc, dom, &lost, room).map(<[u8]>::len)
        };
        if self.push(&mut encode_lost).is_none() {
            // Still no room (`push` counted the `lost` event itself). The event `emit` was
            // asked to record goes too (its seq used, and counted): recorded now, it would
            // come before the `lost` event that explains the gap ahead of it (the host may
            // free room between the two pushes).
            self.next_seq += 1;
            self.dropped += 1;
            return false;
        }
        self.dropped = 0;
        true
    }

    /// Event `seq` did not fit behind the records gathered: they go, and it starts the next
    /// ring record; its length there, or `None` (counted as dropped) when it does not fit
    /// a ring record of its own either. Apart from [`Tracer::push`], which it would double
    /// in size.
    #[cold]
    #[inline(never)]
    fn encode_in_next_record(&mut self, seq: u64, tsc: u64, encode: &mut Encode) -> Option<usize> {
        if self.gathered > 0 {
            self.flush();
            self.reserve();
            let encoded = self.encode_gathered(seq, tsc, encode);
            if encoded.is_some() {
                return encoded;
            }
        }
        // Larger than a record can be: a hypervisor bug, reported as a loss.
        self.dropped += 1;
        None
    }

    /// Encode event `seq` into the ring's reservation, behind the records gathered there:
    /// its length, or `None` when it does not fit.
    #[inline]
    fn encode_gathered(&mut self, seq: u64, tsc: u64, encode: &mut Encode) -> Option<usize> {
        let room = self.ring.reservation().get_mut(self.gathered..)?;
        encode(&mut self.encoder, seq, tsc, room).ok()
    }

    /// Reserve a whole ring record's room at the ring's head, waiting for the reader to free
    /// it: the wait comes before a trap's first event is written, so the reader never waits
    /// for one the hypervisor holds.
    #[inline]
    fn reserve(&mut self) {
        loop {
            match self.ring.reserve(ring::MAX_RECORD) {
                Ok(_) => break,
                Err(PushError::Full) => core::hint::spin_loop(),
                Err(PushError::TooLarge) => unreachable!("MAX_RECORD is what a record may be"),
            }
        }
    }

    /// Publish the gathered records as one ring record.
    fn flush(&mut self) {
        if self.gathered == 0 {
            return;
        }
        self.ring.publish(self.gathered);
        self.gathered = 0;
    }

    /// Mode `lossy`: one event, one ring record, dropped when the ring has no room for a
    /// whole ring record. (Apart from [`Tracer::push`]: the usual mode is `ring`.)
    #[cold]
    #[inline(never)]
    fn push_alone(&mut self, seq: u64, tsc: u64, encode: &mut Encode) -> Option<u64> {
        let encoded = match self.ring.reserve(ring::MAX_RECORD) {
            Ok(room) => encode(&mut self.encoder, seq, tsc, room).ok(),
            Err(_) => None,
        };
        let Some(length) = encoded else {
            // No room, or larger than a record can be (a hypervisor bug): a loss.
            self.dropped += 1;
            return None;
        };
        self.ring.publish(length);
        self.encoder.commit();
        Some(seq)
    }
}
