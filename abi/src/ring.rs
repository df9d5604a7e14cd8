//! The trace ring: how events get from the hypervisor to the host without loss.
//!
//! The ring lives in the hypervisor's RAM at [`RING_PHYS`]. QEMU backs the machine's RAM
//! with a shared file (`-object memory-backend-file,share=on`), and the host maps the same
//! file: it reads the ring while the machine runs, the way xentrace reads Xen's trace
//! buffers. No device, no exit, no copy through QEMU, and none in the hypervisor: it encodes
//! its events straight into the ring's memory.
//!
//! Layout (offsets from [`RING_PHYS`]):
//!
//! | offset | field       | written by | meaning                                          |
//! |--------|-------------|------------|--------------------------------------------------|
//! | 0      | `magic`     | hv         | [`MAGIC`] once the header is valid               |
//! | 8      | `version`   | hv         | [`RING_VERSION`]                                 |
//! | 16     | `data_size` | hv         | bytes in the data area (a multiple of 8)         |
//! | 128    | `tail`      | host       | bytes ever consumed (only grows)                 |
//! | 4096   | data        | hv         | records                                          |
//!
//! A record is a little-endian `u32` length, the encoded event, and padding to 8. A record
//! never wraps: when one does not fit before the end of the data area, the producer writes
//! the length [`WRAP`] and continues at offset 0. The producer reserves room at the head,
//! writes the record there (`Ring::reserve`: the hypervisor encodes its events in place) and
//! publishes it by storing its length, with release ordering, last: a record's length is
//! its commit. A length of 0 is where the records end for now (an empty record is not
//! sent), so before it publishes a
//! record the producer zeroes the length of the one after it. The consumer reads records
//! while their lengths are not 0, and frees their space by storing `tail`.
//!
//! Why the commit is in the record and not a `head` in the header: under QEMU's TCG every
//! world switch empties QEMU's software TLB, so each page the hypervisor touches at a trap
//! costs a refill (about 2,000 of QEMU's instructions, `book/src/speed.md`). A `head` stored
//! at every trap made the header one more page; now the producer touches the header only
//! when the room it last saw runs out, and reads `tail` again (once every few thousand
//! traps in a 16 MiB ring; at every trap only while the ring is full and the producer
//! waits, or drops, as it must).
//!
//! When the ring is full the producer waits for the consumer (lossless); a producer with
//! no consumer counts what it drops and reports it as a `lost` event (see `hv/src/trace.rs`).

use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};

/// Where the ring starts in the machine's physical memory (32 MiB). The hypervisor's
/// memory map (`hv/src/frames.rs`) keeps this range for it.
pub const RING_PHYS: u64 = 0x0200_0000;
/// The header page.
pub const HEADER_SIZE: usize = 4096;
/// The data area the hypervisor uses.
pub const DATA_SIZE: usize = 16 << 20;
/// The ring's protocol, in its header, and the records' encoding (`wire`) with it: 2 since a
/// record's length is its commit (1 had a `head` in the header), 3 since an exit's record
/// leaves its reason for the reader to name, 4 since a `console` record says whether its
/// line is unfinished (a prompt), 5 since wide numbers are sized (`wire`). A reader and a hypervisor of different
/// protocols refuse each other ([`ReadError::Version`]); the JSON a user records is another
/// matter ([`SCHEMA_VERSION`](crate::SCHEMA_VERSION)).
pub const RING_VERSION: u32 = 5;
/// `magic` once the hypervisor has set up the ring.
pub const MAGIC: u64 = u64::from_le_bytes(*b"TRPLRING");
/// The length of a record that says "continue at offset 0".
pub const WRAP: u32 = u32::MAX;
/// The largest record the producer accepts.
pub const MAX_RECORD: usize = 8192;

const MAGIC_OFFSET: usize = 0;
const VERSION_OFFSET: usize = 8;
const DATA_SIZE_OFFSET: usize = 16;
const TAIL_OFFSET: usize = 128;
/// Room the producer keeps free behind a record for the next one's length, which it zeroes
/// (8: records are 8-aligned).
const NEXT_LENGTH: u64 = 8;

/// The bytes a record of `payload` bytes takes in the ring: its length, then the payload,
/// padded to 8.
pub const fn record_size(payload: usize) -> u64 {
    ((4 + payload + 7) & !7) as u64
}

/// Why a record could not be pushed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushError {
    /// The consumer has not freed enough space yet.
    Full,
    /// The record is larger than [`MAX_RECORD`].
    TooLarge,
}

/// Why the ring cannot be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadError {
    /// No valid header (yet): the hypervisor has not set the ring up.
    NotReady,
    /// The header's version is not ours.
    Version { found: u32 },
    /// The header claims a data area larger than the mapping.
    Size { data_size: u64 },
    /// A record length that cannot be right, at this byte position of the stream.
    Corrupt { position: u64, length: u32 },
}

/// A view of the ring's memory. Both sides use it: the hypervisor with the ring's
/// physical address, the host with the address where it mapped QEMU's RAM file.
#[derive(Debug)]
pub struct Ring {
    base: *mut u8,
    data_size: u64,
    /// The producer's reservation: payload bytes it may write at the head before it
    /// publishes them ([`Ring::reserve`]); 0 when it has none.
    reserved: usize,
    /// Where in the data area the reserved record starts (its length, then the payload).
    reserved_at: u64,
    /// The producer's: bytes it has ever written (the head). The consumer's: bytes it has
    /// ever read (the tail, which it also stores in the header).
    position: u64,
    /// `position` in the data area (`position % data_size`, kept as it moves: a division
    /// is a call into QEMU's helpers under TCG).
    offset: u64,
    /// The producer's: `tail` as it last read it from the header. The consumer only frees
    /// room, so the room this shows is there, and the header is read again only when it
    /// is not enough.
    tail_seen: u64,
}

// SAFETY: a `Ring` is a pointer into memory shared with the other side; all shared
// fields are accessed atomically and data bytes only after the acquire that publishes them.
unsafe impl Send for Ring {}

impl Ring {
    fn field(&self, offset: usize) -> &AtomicU64 {
        // SAFETY: `base` points to at least HEADER_SIZE bytes (the constructors' contract),
        // the offset is 8-aligned and below HEADER_SIZE, and these fields are only ever
        // accessed atomically by either side.
        unsafe { AtomicU64::from_ptr(self.base.add(offset).cast()) }
    }

    fn data(&self) -> *mut u8 {
        // SAFETY: the data area follows the header inside the same allocation.
        unsafe { self.base.add(HEADER_SIZE) }
    }

    /// Set up an empty ring (the producer does this once, before pushing).
    ///
    /// # Safety
    /// `base` must point to `HEADER_SIZE + data_size` writable bytes, 8-aligned, that
    /// nothing but this ring and one consumer use while the `Ring` lives.
    pub unsafe fn create(base: *mut u8, data_size: usize) -> Ring {
        assert!(data_size.is_multiple_of(8) && data_size >= 2 * MAX_RECORD);
        let ring = Ring {
            base,
            data_size: data_size as u64,
            reserved: 0,
            reserved_at: 0,
            position: 0,
            offset: 0,
            tail_seen: 0,
        };
        ring.length_at(0).store(0, Ordering::Relaxed);
        ring.field(TAIL_OFFSET).store(0, Ordering::Relaxed);
        ring.field(DATA_SIZE_OFFSET)
            .store(data_size as u64, Ordering::Relaxed);
        ring.field(VERSION_OFFSET)
            .store(RING_VERSION as u64, Ordering::Relaxed);
        // Magic last: a consumer that sees it sees a consistent header.
        ring.field(MAGIC_OFFSET).store(MAGIC, Ordering::Release);
        ring
    }

    /// Attach to a ring the producer has set up.
    ///
    /// # Safety
    /// `base` must point to `mapped` readable and writable bytes, 8-aligned, that stay
    /// mapped while the `Ring` lives.
    pub unsafe fn attach(base: *mut u8, mapped: usize) -> Result<Ring, ReadError> {
        if mapped < HEADER_SIZE {
            return Err(ReadError::NotReady);
        }
        let probe = Ring {
            base,
            data_size: 0,
            reserved: 0,
            reserved_at: 0,
            position: 0,
            offset: 0,
            tail_seen: 0,
        };
        if probe.field(MAGIC_OFFSET).load(Ordering::Acquire) != MAGIC {
            return Err(ReadError::NotReady);
        }
        let version = probe.field(VERSION_OFFSET).load(Ordering::Relaxed) as u32;
        if version != RING_VERSION {
            return Err(ReadError::Version { found: version });
        }
        let data_size = probe.field(DATA_SIZE_OFFSET).load(Ordering::Relaxed);
        if data_size as usize > mapped - HEADER_SIZE
            || !data_size.is_multiple_of(8)
            || data_size < 2 * MAX_RECORD as u64
        {
            return Err(ReadError::Size { data_size });
        }
        let tail = probe.field(TAIL_OFFSET).load(Ordering::Acquire);
        Ok(Ring {
            base,
            data_size,
            reserved: 0,
            reserved_at: 0,
            position: tail,
            offset: tail % data_size,
            tail_seen: tail,
        })
    }

    /// The length word of the record at `offset` in the data area.
    fn length_at(&self, offset: u64) -> &AtomicU32 {
        debug_assert!(offset.is_multiple_of(8) && offset + 4 <= self.data_size);
        // SAFETY: the offset is inside the data area and 8-aligned (callers keep records
        // 8-aligned in a data area whose size is a multiple of 8), and a length word is only
        // ever accessed atomically by either side.
        unsafe { AtomicU32::from_ptr(self.data().add(offset as usize).cast()) }
    }

    /// Bytes that went through the ring since it was set up (records with their lengths
    /// and padding, and the skips at the end of the data area): what the trace cost in
    /// memory traffic. The producer's count is what it wrote, the consumer's what it read.
    pub fn written(&self) -> u64 {
        self.position
    }

    /// Where the record after the one of `size` bytes at `offset` starts: the data area's
    /// end is its start again (a record never wraps, so it never goes past the end).
    #[inline]
    fn after(&self, offset: u64, size: u64) -> u64 {
        let next = offset + size;
        if next == self.data_size { 0 } else { next }
    }

    /// Is there room for `bytes` more at the head? Reads `tail` from the header only when
    /// the tail last seen says no.
    #[inline]
    fn has_room(&mut self, bytes: u64) -> bool {
        if self.position + bytes - self.tail_seen <= self.data_size {
            return true;
        }
        self.tail_seen = self.field(TAIL_OFFSET).load(Ordering::Acquire);
        self.position + bytes - self.tail_seen <= self.data_size
    }

    /// Append one record (producer side): [`Ring::reserve`], copy, [`Ring::publish`].
    pub fn push(&mut self, payload: &[u8]) -> Result<(), PushError> {
        self.reserve(payload.len())?[..payload.len()].copy_from_slice(payload);
        self.publish(payload.len());
        Ok(())
    }

    /// Make room at the head for a record of up to `max` payload bytes, and lend them to the
    /// producer to write in place (the hypervisor encodes its events straight into the ring:
    /// no copy, and no buffer of its own to touch at every trap). Nothing is visible to the
    /// consumer until [`Ring::publish`]; a new reservation replaces one not published.
    ///
    /// A record never wraps: when `max` bytes do not fit before the end of the data area,
    /// the [`WRAP`] skip is published first, on its own, so that a ring the consumer has
    /// emptied always has room for the record after it (with the skip and the record
    /// counted together, the smallest ring could never hold a maximal one).
    #[inline]
    pub fn reserve(&mut self, max: usize) -> Result<&mut [u8], PushError> {
        if max > MAX_RECORD {
            return Err(PushError::TooLarge);
        }
        self.reserved = 0;
        let need = record_size(max);
        let offset = self.offset;
        let to_end = self.data_size - offset;
        if need > to_end {
            // The skip's room, and the next length's at offset 0, which must read 0 before
            // the skip tells the consumer to go there.
            if !self.has_room(to_end + NEXT_LENGTH) {
                return Err(PushError::Full);
            }
            self.length_at(0).store(0, Ordering::Relaxed);
            self.length_at(offset).store(WRAP, Ordering::Release);
            self.position += to_end;
            self.offset = 0;
        }
        if !self.has_room(need + NEXT_LENGTH) {
            return Err(PushError::Full);
        }
        self.reserved = max;
        self.reserved_at = self.offset;
        Ok(self.reservation())
    }

    /// The payload bytes reserved at the head (empty without a reservation).
    #[inline]
    pub fn reservation(&mut self) -> &mut [u8] {
        // SAFETY: `reserve` checked that the record's length and `reserved` payload bytes fit
        // between `reserved_at` and the end of the data area, and that the consumer has freed
        // them; it reads none of them before `publish` stores the record's length.
        unsafe {
            core::slice::from_raw_parts_mut(
                self.data().add(self.reserved_at as usize + 4),
                self.reserved,
            )
        }
    }

    /// Publish the first `length` bytes of the reservation as one record.
    ///
    /// # Panics
    /// If `length` is more than was reserved.
    #[inline]
    pub fn publish(&mut self, length: usize) {
        assert!(
            length <= self.reserved,
            "a record longer than its reservation"
        );
        if length == 0 {
            // A length of 0 is where the records end: an empty record is not sent.
            self.reserved = 0;
            return;
        }
        let size = record_size(length);
        // The next record's length first (`reserve` made sure it is free): the consumer
        // stops there until that record is published in turn.
        let next = self.after(self.reserved_at, size);
        self.length_at(next).store(0, Ordering::Relaxed);
        // The commit: the release orders the payload and the zero above before it.
        self.length_at(self.reserved_at)
            .store(length as u32, Ordering::Release);
        self.reserved = 0;
        self.position += size;
        self.offset = next;
    }

    /// Read every published record, oldest first, and free their space (consumer side).
    /// Returns how many records `each` saw.
    pub fn consume(&mut self, mut each: impl FnMut(&[u8])) -> Result<usize, ReadError> {
        let (mut tail, mut offset) = (self.position, self.offset);
        let mut count = 0;
        loop {
            // Acquire: what the producer wrote before this length is visible after it.
            let length = self.length_at(offset).load(Ordering::Acquire);
            if length == 0 {
                break;
            }
            // The producer is never more than the data area ahead of where this call began:
            // it waits for the `tail` stored at the end. Further would be lengths that loop.
            let size = match length {
                WRAP => self.data_size - offset,
                _ => record_size(length as usize),
            };
            let too_far = tail + size - self.position > self.data_size;
            let malformed =
                length != WRAP && (length as usize > MAX_RECORD || offset + size > self.data_size);
            if too_far || malformed {
                self.free(tail, offset);
                return Err(ReadError::Corrupt {
                    position: tail,
                    length,
                });
            }
            if length == WRAP {
                tail += size;
                offset = 0;
                continue;
            }
            // SAFETY: `offset + 4 .. offset + 4 + length` is inside the data area (checked
            // above) and was published by the producer's release store of its length.
            let payload = unsafe {
                core::slice::from_raw_parts(self.data().add(offset as usize + 4), length as usize)
            };
            each(payload);
            count += 1;
            tail += size;
            offset = self.after(offset, size);
        }
        self.free(tail, offset);
        Ok(count)
    }

    /// The consumer has read everything before `tail`: the producer may write there again.
    fn free(&mut self, tail: u64, offset: u64) {
        self.position = tail;
        self.offset = offset;
        self.field(TAIL_OFFSET).store(tail, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use alloc::vec;
    use alloc::vec::Vec;

    fn memory(data_size: usize) -> Vec<u64> {
        vec![0u64; (HEADER_SIZE + data_size) / 8]
    }

    #[test]
    fn records_come_out_in_order_across_wraps() {
        let data_size = 4 * MAX_RECORD;
        let mut backing = memory(data_size);
        let base = backing.as_mut_ptr().cast::<u8>();
        // SAFETY: `backing` outlives both views and has the size they need.
        let mut producer = unsafe { Ring::create(base, data_size) };
        // SAFETY: as above.
        let mut consumer = unsafe { Ring::attach(base, backing.len() * 8) }.unwrap();
        let mut seen = Vec::new();
        for round in 0..1000u32 {
            let payload = vec![round as u8; (round as usize * 37) % 3000];
            loop {
                match producer.push(&payload) {
                    Ok(()) => break,
                    Err(PushError::Full) => {
                        consumer
                            .consume(|record| seen.push(record.to_vec()))
                            .unwrap();
                    }
                    Err(other) => panic!("{other:?}"),
                }
            }
        }
        consumer
            .consume(|record| seen.push(record.to_vec()))
            .unwrap();
        // Every round's record, in order, but the empty ones: a length of 0 marks the end.
        let sent: Vec<usize> = (0..1000).filter(|round| round * 37 % 3000 != 0).collect();
        assert_eq!(seen.len(), sent.len());
        for (&round, record) in sent.iter().zip(&seen) {
            assert_eq!(record.len(), (round * 37) % 3000);
            assert!(record.iter().all(|&byte| byte == round as u8));
        }
        assert_eq!(consumer.written(), producer.written(), "everything read");
    }

    #[test]
    fn a_full_ring_refuses_instead_of_overwriting() {
        let data_size = 2 * MAX_RECORD;
        let mut backing = memory(data_size);
        // SAFETY: `backing` outlives the view.
        let mut ring = unsafe { Ring::create(backing.as_mut_ptr().cast(), data_size) };
        let mut pushed = 0;
        while ring.push(&[1; 1000]).is_ok() {
            pushed += 1;
        }
        assert_eq!(pushed, data_size / 1008);
        assert_eq!(ring.push(&[0; MAX_RECORD + 1]), Err(PushError::TooLarge));
    }

    #[test]
    fn maximal_records_written_in_place_pass_through_the_smallest_ring() {
        // The hypervisor reserves MAX_RECORD bytes for every trap and publishes what it
        // wrote. In a ring of two maximal records, the reservation that must wrap needs its
        // skip and a whole record: more than the ring, unless the skip goes first.
        let data_size = 2 * MAX_RECORD;
        let mut backing = memory(data_size);
        let base = backing.as_mut_ptr().cast::<u8>();
        // SAFETY: `backing` outlives both views and has the size they need.
        let mut producer = unsafe { Ring::create(base, data_size) };
        // SAFETY: as above.
        let mut consumer = unsafe { Ring::attach(base, backing.len() * 8) }.unwrap();
        let mut seen = Vec::new();
        for round in 0..50usize {
            let length = [MAX_RECORD, 100, MAX_RECORD - 3, 1][round % 4];
            let mut waits = 0;
            loop {
                match producer.reserve(MAX_RECORD) {
                    Ok(room) => {
                        assert_eq!(room.len(), MAX_RECORD);
                        room[..length].fill(round as u8);
                        break;
                    }
                    Err(PushError::Full) => {
                        waits += 1;
                        assert!(waits < 3, "round {round}: no room in an emptied ring");
                        consumer
                            .consume(|record| seen.push(record.to_vec()))
                            .unwrap();
                    }
                    Err(other) => panic!("{other:?}"),
                }
            }
            assert_eq!(producer.reservation().len(), MAX_RECORD);
            producer.publish(length);
            assert!(producer.reservation().is_empty());
        }
        consumer
            .consume(|record| seen.push(record.to_vec()))
            .unwrap();
        assert_eq!(seen.len(), 50);
        for (round, record) in seen.iter().enumerate() {
            assert_eq!(
                record.len(),
                [MAX_RECORD, 100, MAX_RECORD - 3, 1][round % 4]
            );
            assert!(record.iter().all(|&byte| byte == round as u8));
        }
    }

    #[test]
    fn the_producer_leaves_the_header_alone_while_it_has_room() {
        // Under TCG each page the hypervisor touches at a trap costs it a TLB refill: the
        // header is touched only when the room last seen runs out.
        let data_size = 4 * MAX_RECORD;
        let mut backing = memory(data_size);
        let base = backing.as_mut_ptr().cast::<u8>();
        // SAFETY: `backing` outlives both views and has the size they need.
        let mut producer = unsafe { Ring::create(base, data_size) };
        let header = backing[..HEADER_SIZE / 8].to_vec();
        for round in 0..100u8 {
            producer.push(&[round; 40]).unwrap();
        }
        assert_eq!(
            backing[..HEADER_SIZE / 8],
            header[..],
            "the header did not change"
        );
        // SAFETY: as above.
        let mut consumer = unsafe { Ring::attach(base, backing.len() * 8) }.unwrap();
        assert_eq!(consumer.consume(|_| ()), Ok(100));
        assert_eq!(consumer.written(), 100 * record_size(40));
    }

    #[test]
    fn a_reservation_is_invisible_until_it_is_published() {
        let data_size = 2 * MAX_RECORD;
        let mut backing = memory(data_size);
        let base = backing.as_mut_ptr().cast::<u8>();
        // SAFETY: `backing` outlives both views and has the size they need.
        let mut producer = unsafe { Ring::create(base, data_size) };
        // SAFETY: as above.
        let mut consumer = unsafe { Ring::attach(base, backing.len() * 8) }.unwrap();
        producer.reserve(64).unwrap().fill(7);
        assert_eq!(consumer.consume(|_| panic!("nothing is published")), Ok(0));
        producer.publish(5);
        let mut seen = Vec::new();
        assert_eq!(consumer.consume(|record| seen.push(record.to_vec())), Ok(1));
        assert_eq!(seen, [vec![7; 5]]);
        // An empty record is not sent: its length would read as the end.
        producer.push(&[]).unwrap();
        producer.push(b"after").unwrap();
        seen.clear();
        assert_eq!(consumer.consume(|record| seen.push(record.to_vec())), Ok(1));
        assert_eq!(seen, [b"after".to_vec()]);
    }

    #[test]
    #[should_panic(expected = "a record longer than its reservation")]
    fn publishing_more_than_was_reserved_is_a_bug() {
        let data_size = 2 * MAX_RECORD;
        let mut backing = memory(data_size);
        // SAFETY: `backing` outlives the view.
        let mut ring = unsafe { Ring::create(backing.as_mut_ptr().cast(), data_size) };
        ring.reserve(10).unwrap();
        ring.publish(11);
    }

    #[test]
    fn consumer_rejects_missing_header_and_garbage() {
        let data_size = 2 * MAX_RECORD;
        let mut backing = memory(data_size);
        let base = backing.as_mut_ptr().cast::<u8>();
        // SAFETY: `backing` outlives the views.
        let attached = unsafe { Ring::attach(base, backing.len() * 8) };
        assert_eq!(attached.unwrap_err(), ReadError::NotReady);
        // SAFETY: as above.
        let mut ring = unsafe { Ring::create(base, data_size) };
        ring.push(b"hello").unwrap();
        // Corrupt the length of the record.
        backing[HEADER_SIZE / 8] = 0x7fff_0000;
        // SAFETY: as above.
        let mut consumer =
            unsafe { Ring::attach(backing.as_mut_ptr().cast(), backing.len() * 8) }.unwrap();
        assert!(matches!(
            consumer.consume(|_| ()),
            Err(ReadError::Corrupt { position: 0, .. })
        ));
    }

    #[test]
    fn lengths_that_lead_back_to_themselves_are_corrupt_not_a_loop() {
        let data_size = 2 * MAX_RECORD;
        let mut backing = memory(data_size);
        let base = backing.as_mut_ptr().cast::<u8>();
        // SAFETY: `backing` outlives the views.
        unsafe { Ring::create(base, data_size) };
        // A record, then a skip where the next one would be: back to the record, for ever.
        let first = MAX_RECORD as u64;
        backing[HEADER_SIZE / 8] = first;
        backing[(HEADER_SIZE + record_size(MAX_RECORD) as usize) / 8] = u64::from(WRAP);
        // SAFETY: as above.
        let mut consumer = unsafe { Ring::attach(base, backing.len() * 8) }.unwrap();
        let mut seen = 0;
        assert!(matches!(
            consumer.consume(|_| seen += 1),
            Err(ReadError::Corrupt { .. })
        ));
        assert_eq!(seen, 1, "the record once, then the loop refused");
        // A skip at offset 0 sends the reader back to it.
        backing[HEADER_SIZE / 8] = u64::from(WRAP);
        // SAFETY: as above.
        let mut consumer = unsafe { Ring::attach(base, backing.len() * 8) }.unwrap();
        assert!(matches!(
            consumer.consume(|_| ()),
            Err(ReadError::Corrupt { .. })
        ));
    }

    #[test]
    fn producer_and_consumer_on_two_threads() {
        let data_size = 2 * MAX_RECORD;
        let mut backing = memory(data_size);
        let base = backing.as_mut_ptr().cast::<u8>();
        // SAFETY: `backing` outlives both threads (joined below).
        let mut producer = unsafe { Ring::create(base, data_size) };
        // SAFETY: as above.
        let mut consumer = unsafe { Ring::attach(base, backing.len() * 8) }.unwrap();
        let writer = std::thread::spawn(move || {
            for n in 0..100_000u64 {
                while producer.push(&n.to_le_bytes()).is_err() {
                    core::hint::spin_loop();
                }
            }
        });
        let mut next = 0u64;
        while next < 100_000 {
            consumer
                .consume(|record| {
                    assert_eq!(u64::from_le_bytes(record.try_into().unwrap()), next);
                    next += 1;
                })
                .unwrap();
        }
        writer.join().unwrap();
        drop(backing);
    }
}
