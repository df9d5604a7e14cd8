//! The GDB remote protocol's framing, checked before the stub sees a byte.
//!
//! gdbstub's own receiver takes the line on trust: a byte between packets that is not `+`,
//! `-` or Ctrl-C, a wrong checksum, a packet longer than its buffer, even gdb's `-` asking
//! for a retransmission, and the session ends with an error. A serial line is exactly where
//! such bytes come from, and the protocol says what to do with each (GDB manual, "Remote
//! Protocol"):
//!
//! - *Overview*: a packet is `$`*packet-data*`#`*checksum*, the checksum being "the
//!   two-digit hexadecimal … modulo 256 sum of all characters between the leading `$` and
//!   the trailing `#`"; `$`, `#` and `}` never appear raw inside (binary data escapes them),
//!   so a `$` in the middle of a packet means the one before was cut off.
//! - *Packet Acknowledgment*: "When either the host or the target machine receives a
//!   packet, the first response expected is an acknowledgment: either `+` (to indicate the
//!   package was received correctly) or `-` (to request retransmission)". So a packet with a
//!   bad checksum is answered with `-` and the session goes on; a `-` from gdb asks for our
//!   last packet again ([`Sent`]). And gdb sends a packet again when it reads `-` where it
//!   waits for our `+`, or none comes in time: the same packet once more, before gdb has
//!   acknowledged our answer to it, is that copy ([`Received::Repeated`]) — answered twice,
//!   gdb would take the second answer for the answer to its next packet. (A `-` meant for
//!   someone else reaches gdb easily: the serial line cannot tell that the client on the
//!   socket changed, and the noise the last one left in the UART is answered after gdb
//!   connected.)
//! - *Interrupts*: Ctrl-C is the byte 0x03 *between* packets (inside one it is data).
//! - `qSupported`'s `PacketSize` tells gdb the longest packet the stub takes ([`MAX_FRAME`]);
//!   a longer one is dropped here, whole, and the session goes on.
//!
//! Anything else between packets is noise: counted ([`Receiver::take_noise`]) and dropped.
//! Only well-formed packets with a good checksum reach gdbstub. This is pure (no device, no
//! session), so the host tests it; the stub that uses it is the program's `gdb/` module.

use alloc::vec::Vec;

/// The stub's packet buffer, which holds a whole frame (`$`, data, `#`, two checksum digits):
/// gdbstub reports its size as `qSupported`'s `PacketSize`, and gdb sends no longer packet.
pub const MAX_FRAME: usize = 4096;

/// The most bytes one `m` packet reads ([`clamped`]): what gdb asks for at most with the
/// packet size it is told (`PacketSize=0x1000`, gdb reads half of it), and one packet never
/// holds the hypervisor for longer than that takes.
pub const MAX_M: u64 = MAX_FRAME as u64 / 2;

/// The longest reply kept for a retransmission: an `m` of [`MAX_M`] bytes.
const MAX_REPLY: usize = 2 * MAX_M as usize + 4;

/// gdb's interrupt: Ctrl-C, sent as a bare byte between packets.
pub const INTERRUPT: u8 = 0x03;

/// What a byte from the line completed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Received {
    /// A whole packet with a good checksum, as it came: `$data#cs`.
    Packet(Vec<u8>),
    /// The last packet again, before gdb acknowledged our answer to it: gdb's copy, sent
    /// again. Acknowledge it (`+`), do not answer it twice.
    Repeated,
    /// `+`: gdb got our last packet.
    Ack,
    /// `-`: gdb asks for our last packet again.
    Nak,
    /// Ctrl-C between packets.
    Interrupt,
    /// A packet whose checksum is not the sum of its data (`sent` is `None` when the two
    /// characters after `#` are not hexadecimal): answer `-`.
    BadChecksum {
        length: usize,
        sent: Option<u8>,
        computed: u8,
    },
    /// A packet longer than [`MAX_FRAME`]: dropped, whatever its checksum.
    Oversized { length: usize },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Between packets.
    Between,
    /// After `$`: the data.
    Data,
    /// After `#`: the first checksum digit.
    Checksum1,
    /// The second checksum digit; the first one as it came.
    Checksum2(u8),
}

/// Bytes from gdb in, whole checked packets out.
#[derive(Debug)]
pub struct Receiver {
    state: State,
    /// The frame so far, while it fits in [`MAX_FRAME`].
    frame: Vec<u8>,
    /// Its length, kept or not.
    length: usize,
    /// The sum of its data so far.
    sum: u8,
    /// Bytes dropped as noise since [`Receiver::take_noise`] last asked.
    noise: usize,
    /// The last packet passed on, until gdb's `+` acknowledges our answer to it.
    unacknowledged: Option<Vec<u8>>,
}

impl Default for Receiver {
    fn default() -> Self {
        Receiver::new()
    }
}

impl Receiver {
    pub const fn new() -> Receiver {
        Receiver {
            state: State::Between,
            frame: Vec::new(),
            length: 0,
            sum: 0,
            noise: 0,
            unacknowledged: None,
        }
    }

    /// One byte from the line; what it completed, if anything.
    pub fn push(&mut self, byte: u8) -> Option<Received> {
        if byte == b'$' {
            // A new packet; one that was not finished was cut off (Overview: no raw `$`
            // inside a packet).
            if self.state != State::Between {
                self.noise += self.length;
            }
            self.begin();
            return None;
        }
        match self.state {
            State::Between => match byte {
                b'+' => {
                    self.unacknowledged = None;
                    Some(Received::Ack)
                }
                b'-' => Some(Received::Nak),
                INTERRUPT => Some(Received::Interrupt),
                _ => {
                    self.noise += 1;
                    None
                }
            },
            State::Data => {
                self.keep(byte);
                if byte == b'#' {
                    self.state = State::Checksum1;
                } else {
                    self.sum = self.sum.wrapping_add(byte);
                }
                None
            }
            State::Checksum1 => {
                self.keep(byte);
                self.state = State::Checksum2(byte);
                None
            }
            State::Checksum2(first) => {
                self.keep(byte);
                self.state = State::Between;
                Some(self.finish(first, byte))
            }
        }
    }

    /// Is a packet under way (a `$` seen, its checksum not yet)?
    pub fn in_packet(&self) -> bool {
        self.state != State::Between
    }

    /// How many bytes were dropped as noise since the last call.
    pub fn take_noise(&mut self) -> usize {
        core::mem::take(&mut self.noise)
    }

    fn begin(&mut self) {
        self.state = State::Data;
        self.frame.clear();
        self.frame.push(b'$');
        self.length = 1;
        self.sum = 0;
    }

    fn keep(&mut self, byte: u8) {
        self.length += 1;
        if self.frame.len() < MAX_FRAME {
            self.frame.push(byte);
        }
    }

    fn finish(&mut self, first: u8, second: u8) -> Received {
        let length = self.length;
        if length > MAX_FRAME {
            self.frame.clear();
            return Received::Oversized { length };
        }
        let sent = hex_digit(first)
            .zip(hex_digit(second))
            .map(|(high, low)| high << 4 | low);
        if sent != Some(self.sum) {
            return Received::BadChecksum {
                length,
                sent,
                computed: self.sum,
            };
        }
        let frame = core::mem::take(&mut self.frame);
        if self.unacknowledged.as_ref() == Some(&frame) {
            return Received::Repeated;
        }
        self.unacknowledged = Some(frame.clone());
        Received::Packet(frame)
    }
}

fn hex_digit(character: u8) -> Option<u8> {
    (character as char).to_digit(16).map(|digit| digit as u8)
}

/// The data of a checked frame: between `$` and `#`.
pub fn data(frame: &[u8]) -> &[u8] {
    let end = frame.len().saturating_sub(3);
    frame.get(1..end).unwrap_or_default()
}

/// Does this packet start a session? gdb sends `qSupported` first on every connection
/// ("qSupported … consolidates multiple feature probes at startup"), and never again in
/// it: seen in the middle of a session, it means that gdb went away without a word (a
/// serial line cannot tell) and a new one has come.
pub fn starts_session(frame: &[u8]) -> bool {
    data(frame).starts_with(b"qSupported")
}

/// A packet the stub answers with the empty reply, "not supported" (GDB manual, "Packets"):
/// `Z3`/`z3`, a read watchpoint, which x86 does not have (its debug registers watch writes,
/// or reads and writes: AMD APM vol. 2, 13.1.1.5). gdb then sets an access watchpoint (`Z4`)
/// and reports a hit as a read only when the value did not change, as it does with
/// gdbserver.
pub fn unsupported(frame: &[u8]) -> bool {
    let data = data(frame);
    data.starts_with(b"Z3,") || data.starts_with(b"z3,")
}

/// `frame`, or, for an `m` that asks for more than [`MAX_M`] bytes, the same `m` for
/// `MAX_M` of them: the reply may hold fewer bytes than asked for (GDB manual, "m addr,
/// length"), and one packet must not stop every domain while megabytes are read.
pub fn clamped(frame: &[u8]) -> Option<Vec<u8>> {
    let request = data(frame).strip_prefix(b"m")?;
    let comma = request.iter().position(|&byte| byte == b',')?;
    let length = core::str::from_utf8(&request[comma + 1..]).ok()?;
    let length = u64::from_str_radix(length, 16).ok()?;
    (length > MAX_M).then(|| {
        let mut shorter = b"m".to_vec();
        shorter.extend_from_slice(&request[..=comma]);
        shorter.extend_from_slice(alloc::format!("{MAX_M:x}").as_bytes());
        framed(&shorter)
    })
}

/// How the debugged domain ended, as a stop reply says it (GDB manual, "Stop Reply
/// Packets"): `W`*AA*, the process exited with status *AA*; `X`*AA*, a signal *AA*
/// terminated it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    Exited(u8),
    Terminated(u8),
}

/// The answer to a packet that comes once the debugged domain has ended (a gdb that
/// connects later, or the last one going on): `?` gets the stop reply that says how it
/// ended, which gdb's `target remote` reports as "The target is not running"; any other
/// packet gets the empty answer, the protocol's "not supported" ("Standard Replies"), so
/// that gdb never waits for one. The whole frame, `$data#cs`.
pub fn answer_after_the_end(frame: &[u8], ended: Ended) -> Vec<u8> {
    let data = data(frame);
    let reply = match (data, ended) {
        (b"?", Ended::Exited(status)) => alloc::format!("W{status:02x}"),
        (b"?", Ended::Terminated(signal)) => alloc::format!("X{signal:02x}"),
        // A detach or a kill of what is gone: done (GDB manual, "D", "vKill"), so that gdb,
        // or the relay detaching for it, does not wait for an answer.
        _ if data == b"D" || data.starts_with(b"D;") || data.starts_with(b"vKill;") => "OK".into(),
        _ => alloc::string::String::new(),
    };
    framed(reply.as_bytes())
}

/// `data` as a packet: `$data#cs`, the checksum the two-digit hexadecimal sum of the data
/// modulo 256 ("Overview"). (The data must need no escaping: `$`, `#` and `}` do.)
pub fn framed(data: &[u8]) -> Vec<u8> {
    let sum = data.iter().fold(0u8, |sum, &byte| sum.wrapping_add(byte));
    let mut frame = Vec::with_capacity(data.len() + 4);
    frame.push(b'$');
    frame.extend_from_slice(data);
    frame.extend_from_slice(alloc::format!("#{sum:02x}").as_bytes());
    frame
}

/// The last packet the stub sent, kept for gdb's `-` (Packet Acknowledgment: "`-` to
/// request retransmission"). Fed every byte the stub writes; acknowledgments and other bytes
/// between packets are not kept.
#[derive(Debug, Default)]
pub struct Sent {
    frame: Vec<u8>,
    /// Bytes of the checksum still to come; `None` between packets.
    to_come: Option<u8>,
    /// `frame` holds a whole packet.
    complete: bool,
}

impl Sent {
    pub const fn new() -> Sent {
        Sent {
            frame: Vec::new(),
            to_come: None,
            complete: false,
        }
    }

    /// A byte the stub wrote.
    pub fn note(&mut self, byte: u8) {
        match (self.to_come, byte) {
            (None, b'$') => {
                self.frame.clear();
                self.complete = false;
                self.frame.push(byte);
                self.to_come = Some(u8::MAX);
            }
            (None, _) => {}
            (Some(left), _) => {
                // The largest reply, an `m` of MAX_M bytes, is twice that in hexadecimal
                // and 4 more: kept whole, to be sent again whole. (Anything longer is not
                // kept, and not sent again cut short.)
                if self.frame.len() <= MAX_REPLY {
                    self.frame.push(byte);
                }
                self.to_come = match (left, byte) {
                    (u8::MAX, b'#') => Some(2),
                    (u8::MAX, _) => Some(u8::MAX),
                    (1, _) => {
                        self.complete = self.frame.len() <= MAX_REPLY;
                        None
                    }
                    (left, _) => Some(left - 1),
                };
            }
        }
    }

    /// The last whole packet, to send again.
    pub fn last(&self) -> Option<&[u8]> {
        self.complete.then_some(self.frame.as_slice())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `$data#cs`, with the right checksum.
    fn packet(data: &str) -> Vec<u8> {
        framed(data.as_bytes())
    }

    fn push_all(receiver: &mut Receiver, bytes: &[u8]) -> Vec<Received> {
        bytes
            .iter()
            .filter_map(|&byte| receiver.push(byte))
            .collect()
    }

    #[test]
    fn a_good_packet_comes_out_whole() {
        let mut receiver = Receiver::new();
        let frame = packet("qSupported:multiprocess+");
        assert_eq!(
            push_all(&mut receiver, &frame),
            vec![Received::Packet(frame.clone())]
        );
        assert!(starts_session(&frame));
        assert_eq!(data(&frame), b"qSupported:multiprocess+");
        assert!(!receiver.in_packet());
    }

    #[test]
    fn acks_naks_and_ctrl_c_between_packets() {
        let mut receiver = Receiver::new();
        let mut bytes = b"+-\x03".to_vec();
        bytes.extend(packet("?"));
        assert_eq!(
            push_all(&mut receiver, &bytes),
            vec![
                Received::Ack,
                Received::Nak,
                Received::Interrupt,
                Received::Packet(packet("?"))
            ]
        );
        assert_eq!(receiver.take_noise(), 0);
    }

    #[test]
    fn a_bad_checksum_is_reported_and_the_next_packet_is_fine() {
        let mut receiver = Receiver::new();
        let mut bytes = b"$g#00".to_vec();
        bytes.extend(b"$g#zz");
        bytes.extend(packet("g"));
        assert_eq!(
            push_all(&mut receiver, &bytes),
            vec![
                Received::BadChecksum {
                    length: 5,
                    sent: Some(0),
                    computed: b'g'
                },
                Received::BadChecksum {
                    length: 5,
                    sent: None,
                    computed: b'g'
                },
                Received::Packet(packet("g")),
            ]
        );
    }

    #[test]
    fn ctrl_c_and_plus_inside_a_packet_are_data() {
        // An `X` packet's binary data may hold 0x03, `+` and `-` raw.
        let mut receiver = Receiver::new();
        let frame = packet("X200000,3:\x03+-");
        assert_eq!(
            push_all(&mut receiver, &frame),
            vec![Received::Packet(frame.clone())]
        );
    }

    #[test]
    fn an_oversized_packet_is_dropped_and_the_next_one_gets_through() {
        let mut receiver = Receiver::new();
        let mut big = String::from("M200000,8000:");
        big.extend(std::iter::repeat_n('a', 2 * 1024 * 1024));
        let mut bytes = packet(&big);
        bytes.extend(packet("?"));
        assert_eq!(
            push_all(&mut receiver, &bytes),
            vec![
                Received::Oversized {
                    length: big.len() + 4
                },
                Received::Packet(packet("?"))
            ]
        );
        // The largest packet that fits the stub's buffer still gets through.
        let fits = "m".repeat(MAX_FRAME - 4);
        assert_eq!(
            push_all(&mut receiver, &packet(&fits)),
            vec![Received::Packet(packet(&fits))]
        );
        let one_more = "m".repeat(MAX_FRAME - 3);
        assert_eq!(
            push_all(&mut receiver, &packet(&one_more)),
            vec![Received::Oversized {
                length: MAX_FRAME + 1
            }]
        );
    }

    #[test]
    fn noise_is_counted_and_a_cut_packet_is_noise() {
        let mut receiver = Receiver::new();
        let mut bytes = b"\xff\xfe garbage".to_vec();
        bytes.extend(b"$m200000,");
        bytes.extend(packet("?"));
        assert_eq!(
            push_all(&mut receiver, &bytes),
            vec![Received::Packet(packet("?"))]
        );
        assert_eq!(receiver.take_noise(), 10 + 9);
        assert_eq!(receiver.take_noise(), 0);
    }

    #[test]
    fn a_kibibyte_of_junk_leaves_the_line_ready_for_the_next_packet() {
        let mut receiver = Receiver::new();
        // Every byte value, `$` and `#` among them, four times over.
        let junk: Vec<u8> = (0..1024u32).map(|n| (n * 37 % 256) as u8).collect();
        push_all(&mut receiver, &junk);
        assert_eq!(
            push_all(&mut receiver, &packet("qSupported:xmlRegisters=i386")),
            vec![Received::Packet(packet("qSupported:xmlRegisters=i386"))]
        );
    }

    #[test]
    fn a_packet_sent_again_before_gdb_acknowledged_the_answer_is_a_copy() {
        // gdb read a stray `-` while it waited for our `+`, and sent qSupported again.
        let mut receiver = Receiver::new();
        let first = packet("qSupported:xmlRegisters=i386");
        let mut bytes = first.clone();
        bytes.extend(&first);
        // Our answer reaches gdb, which acknowledges it and asks the next thing; then the
        // same question again is a question again.
        bytes.push(b'+');
        bytes.extend(packet("vMustReplyEmpty"));
        bytes.push(b'+');
        bytes.extend(packet("vMustReplyEmpty"));
        assert_eq!(
            push_all(&mut receiver, &bytes),
            vec![
                Received::Packet(first),
                Received::Repeated,
                Received::Ack,
                Received::Packet(packet("vMustReplyEmpty")),
                Received::Ack,
                Received::Packet(packet("vMustReplyEmpty")),
            ]
        );
    }

    #[test]
    fn sent_keeps_the_last_whole_packet_and_not_the_acks() {
        let mut sent = Sent::new();
        assert_eq!(sent.last(), None);
        for &byte in b"+$OK#9a" {
            sent.note(byte);
        }
        assert_eq!(sent.last(), Some(&b"$OK#9a"[..]));
        // A packet being written is not yet the last one.
        for &byte in b"+$S05#b" {
            sent.note(byte);
        }
        assert_eq!(sent.last(), None);
        sent.note(b'8');
        assert_eq!(sent.last(), Some(&b"$S05#b8"[..]));
    }

    #[test]
    fn a_packet_after_the_end_gets_how_the_domain_ended_or_the_empty_answer() {
        assert_eq!(
            answer_after_the_end(&packet("?"), Ended::Exited(0)),
            b"$W00#b7".to_vec()
        );
        assert_eq!(
            answer_after_the_end(&packet("?"), Ended::Terminated(9)),
            b"$X09#c1".to_vec()
        );
        assert_eq!(
            answer_after_the_end(&packet("qSupported:multiprocess+"), Ended::Exited(3)),
            b"$#00".to_vec()
        );
        assert_eq!(
            answer_after_the_end(&packet("g"), Ended::Terminated(9)),
            b"$#00".to_vec()
        );
        // A detach or a kill of what is gone: done.
        for request in ["D", "D;1", "vKill;1"] {
            assert_eq!(
                answer_after_the_end(&packet(request), Ended::Exited(0)),
                framed(b"OK"),
                "{request}"
            );
        }
    }

    #[test]
    fn a_long_reply_is_sent_again_whole() {
        // An `m` of MAX_M bytes: 2 × MAX_M hexadecimal digits, and `$`, `#` and the checksum.
        let reply = framed("ab".repeat(MAX_M as usize).as_bytes());
        let mut sent = Sent::new();
        for &byte in &reply {
            sent.note(byte);
        }
        assert_eq!(sent.last(), Some(reply.as_slice()));
        // Longer than any reply: not kept, rather than sent again cut short.
        for &byte in &framed("ab".repeat(MAX_M as usize + 1).as_bytes()) {
            sent.note(byte);
        }
        assert_eq!(sent.last(), None);
    }

    #[test]
    fn an_m_for_more_than_max_m_bytes_is_one_for_max_m_and_z3_is_not_supported() {
        assert_eq!(
            clamped(&packet("m200000,ffffffffffffffff")),
            Some(framed(b"m200000,800"))
        );
        assert_eq!(clamped(&packet("m200000,800")), None, "gdb's largest");
        assert_eq!(clamped(&packet("mzz")), None, "gdbstub refuses it");
        assert!(unsupported(&packet("Z3,21f008,8")) && unsupported(&packet("z3,21f008,8")));
        assert!(!unsupported(&packet("Z2,21f008,8")));
    }

    #[test]
    fn a_framed_packet_is_what_the_receiver_takes() {
        let mut receiver = Receiver::new();
        let frame = framed(b"W2a");
        assert_eq!(frame, b"$W2a#ea".to_vec());
        assert_eq!(
            push_all(&mut receiver, &frame),
            vec![Received::Packet(frame)]
        );
    }
}
