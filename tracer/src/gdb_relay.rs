//! gdb's port: a relay between gdb and the hypervisor's gdbstub on COM2.
//!
//! QEMU connects COM2 to us (a socket chardev, on its client side), and gdb connects to the
//! port traplab names (`--port`, 2159 by default); the relay passes the bytes both ways,
//! unchanged. Why not let QEMU listen on the port itself, as it can: a serial line carries
//! no hang-up. A gdb that goes away without detaching (killed, its terminal closed) left the
//! hypervisor holding the domain gdb had stopped, and, all-stop, every other domain with it,
//! for good. The relay sees the connection end: when gdb has spoken and hangs up without
//! having detached (`D`) or killed (`k`, `vKill`), it sends the hypervisor the `D` packet
//! gdb would have sent (GDB manual, "Packets"), and the domains run on, with nothing of
//! gdb's left in them. The hypervisor's side stays open from one gdb to the next, so what a
//! gdb sent just before it hung up is not lost either (QEMU's listening socket dropped what
//! it had not read yet when its peer closed).
//!
//! One gdb at a time, as QEMU's socket took them: the next waits until the one before has
//! gone.

use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// `D`, framed: `$`, the packet, `#`, and its checksum (the sum of its bytes mod 256).
const DETACH: &[u8] = b"$D#44";

/// The hypervisor's answer to it, `OK`: until it has come (or [`DETACH_ANSWER_WITHIN`] has
/// passed), no new gdb is let in, which would take it for the answer to its first packet.
const DETACH_ANSWER: &[u8] = b"$OK#9a";
const DETACH_ANSWER_WITHIN: Duration = Duration::from_secs(2);

/// How often a listener that has nobody waiting looks at the relay's state again.
const POLL: Duration = Duration::from_millis(20);

/// The relay, for as long as its session lives.
pub struct GdbRelay {
    gdb_port: u16,
    qemu_port: u16,
    shared: Arc<Shared>,
}

/// What the relay's two threads share.
struct Shared {
    /// The gdb connected now, if any: where the hypervisor's bytes go.
    gdb: Mutex<Option<TcpStream>>,
    /// The session is over, or QEMU's side has closed: the relay stops.
    over: AtomicBool,
    /// The hypervisor's bytes that came while no gdb was connected, kept only to see the
    /// answer to a `D` the relay sent.
    unheard: Mutex<Vec<u8>>,
    /// QEMU has connected and its bytes are being passed on, up to the end of its side.
    forwarding: AtomicBool,
}

impl GdbRelay {
    /// Listen for gdb on loopback `port` (0: a free port of the system's choosing,
    /// [`GdbRelay::gdb_port`]), and for QEMU on a loopback port of the system's choosing
    /// ([`GdbRelay::qemu_port`]), and relay from then on.
    pub fn listen(port: u16) -> io::Result<GdbRelay> {
        let for_gdb = TcpListener::bind((Ipv4Addr::LOCALHOST, port))?;
        let gdb_port = for_gdb.local_addr()?.port();
        let for_qemu = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
        let qemu_port = for_qemu.local_addr()?.port();
        for_gdb.set_nonblocking(true)?;
        for_qemu.set_nonblocking(true)?;
        let shared = Arc::new(Shared {
            gdb: Mutex::new(None),
            over: AtomicBool::new(false),
            unheard: Mutex::new(Vec::new()),
            forwarding: AtomicBool::new(false),
        });
        let relay_shared = Arc::clone(&shared);
        std::thread::spawn(move || relay(&for_gdb, &for_qemu, &relay_shared));
        Ok(GdbRelay {
            gdb_port,
            qemu_port,
            shared,
        })
    }

    /// The port gdb connects to: the one asked for, or the one the system chose for 0.
    pub fn gdb_port(&self) -> u16 {
        self.gdb_port
    }

    /// The port QEMU's COM2 connects to.
    pub fn qemu_port(&self) -> u16 {
        self.qemu_port
    }
}

impl Drop for GdbRelay {
    /// The session is over, and QEMU with it: what the hypervisor said last (a `W00`, the
    /// end of the guest gdb debugs) is passed on to gdb before its connection is closed.
    /// Closed at once, a gdb on a loaded machine saw "Remote connection closed" instead of
    /// the guest's exit, the forwarding thread not having run yet.
    fn drop(&mut self) {
        let deadline = Instant::now() + LAST_WORDS_WITHIN;
        while self.shared.forwarding.load(Ordering::Acquire) && Instant::now() < deadline {
            std::thread::sleep(POLL);
        }
        self.shared.end();
    }
}

/// How long the end of a session waits for the hypervisor's last bytes to reach gdb (QEMU
/// has ended: its side of the line gives them and then closes, at once but for the load).
const LAST_WORDS_WITHIN: Duration = Duration::from_secs(5);

impl Shared {
    /// Stop relaying: the gdb connected now sees its connection close, as when QEMU ended.
    fn end(&self) {
        self.over.store(true, Ordering::Relaxed);
        if let Some(gdb) = lock(&self.gdb).take() {
            let _ = gdb.shutdown(Shutdown::Both);
        }
    }

    fn is_over(&self) -> bool {
        self.over.load(Ordering::Relaxed)
    }
}

/// A lock that a panicking thread cannot take from the other: the data are bytes and a
/// stream, whole at every point.
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Accept `accept`'s next connection, looking at `shared` between tries; `None` when the
/// relay is over first.
fn next_connection(listener: &TcpListener, shared: &Shared) -> Option<TcpStream> {
    while !shared.is_over() {
        match listener.accept() {
            Ok((stream, _)) => {
                stream.set_nonblocking(false).ok()?;
                stream.set_nodelay(true).ok()?;
                return Some(stream);
            }
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => std::thread::sleep(POLL),
            Err(_) => return None,
        }
    }
    None
}

/// The relay's life: QEMU connects, then each gdb in turn is served.
fn relay(for_gdb: &TcpListener, for_qemu: &TcpListener, shared: &Arc<Shared>) {
    let Some(mut to_qemu) = next_connection(for_qemu, shared) else {
        return;
    };
    let Ok(from_qemu) = to_qemu.try_clone() else {
        return;
    };
    let forward_shared = Arc::clone(shared);
    shared.forwarding.store(true, Ordering::Release);
    std::thread::spawn(move || from_the_hypervisor(from_qemu, &forward_shared));
    while let Some(gdb) = next_connection(for_gdb, shared) {
        let Ok(gdb_reader) = gdb.try_clone() else {
            continue;
        };
        *lock(&shared.gdb) = Some(gdb);
        // The session may have ended between the accept and now, and nobody would shut
        // this gdb's connection down: its read below would wait for gdb for ever.
        if shared.is_over() {
            shared.end();
        }
        let hung_up_attached = from_gdb(gdb_reader, &mut to_qemu);
        lock(&shared.gdb).take();
        if hung_up_attached && !shared.is_over() {
            // Only an `OK` that comes after the `D` answers it: one the stub sent before
            // (to gdb's last `Z0` or `M`, say) must not let the next gdb in too early.
            lock(&shared.unheard).clear();
            if to_qemu.write_all(DETACH).is_err() {
                break;
            }
            await_detach_answer(shared);
        }
    }
}

/// Pass gdb's bytes to the hypervisor until gdb hangs up; whether it hung up still
/// attached: it had sent a packet, and its last was no detach and no kill.
fn from_gdb(mut gdb: TcpStream, to_qemu: &mut TcpStream) -> bool {
    let mut watch = PacketWatch::default();
    let mut buffer = [0u8; 4096];
    loop {
        let read = match gdb.read(&mut buffer) {
            Ok(0) | Err(_) => break,
            Ok(read) => read,
        };
        watch.saw(&buffer[..read]);
        if to_qemu.write_all(&buffer[..read]).is_err() {
            // QEMU is gone: nothing to detach from.
            return false;
        }
    }
    watch.attached()
}

/// Pass the hypervisor's bytes to the gdb connected now (or keep them aside while none
/// is) until QEMU's side closes; then the relay is over.
fn from_the_hypervisor(mut from_qemu: TcpStream, shared: &Shared) {
    let mut buffer = [0u8; 4096];
    loop {
        let read = match from_qemu.read(&mut buffer) {
            Ok(0) | Err(_) => break,
            Ok(read) => read,
        };
        let mut gdb = lock(&shared.gdb);
        match gdb.as_mut() {
            Some(gdb) => {
                let _ = gdb.write_all(&buffer[..read]);
            }
            None => {
                let mut unheard = lock(&shared.unheard);
                unheard.extend_from_slice(&buffer[..read]);
                // Only the answer to a `D` is looked for: keep no more than it.
                let keep = unheard.len().saturating_sub(DETACH_ANSWER.len() * 4);
                unheard.drain(..keep);
            }
        }
    }
    shared.end();
    shared.forwarding.store(false, Ordering::Release);
}

/// After the relay's `D`: wait (bounded) for the hypervisor's `OK`, so that the next gdb
/// does not read it as the answer to its own first packet.
fn await_detach_answer(shared: &Shared) {
    let deadline = Instant::now() + DETACH_ANSWER_WITHIN;
    while Instant::now() < deadline && !shared.is_over() {
        if lock(&shared.unheard)
            .windows(DETACH_ANSWER.len())
            .any(|window| window == DETACH_ANSWER)
        {
            return;
        }
        std::thread::sleep(POLL);
    }
}

/// What gdb has said so far, as far as the relay needs it: whether it began a session (any
/// packet does: gdb starts with `qSupported`, a plain client may start with `?`) and
/// whether a later packet ended it (`D`, `D;pid`, `k`, `vKill;pid`). Only packets whose
/// checksum is right count, as only those reach the stub: junk on the port begins nothing.
#[derive(Debug, Default)]
struct PacketWatch {
    /// The packet being read: its first bytes (enough to tell these apart) and the sum of
    /// all of them.
    packet: Option<(Vec<u8>, u8)>,
    /// After a packet's `#`: the checksum's digits so far.
    checksum: Option<(Vec<u8>, u8, Vec<u8>)>,
    began: bool,
    ended: bool,
}

/// How many of a packet's first bytes tell the packets apart here.
const PACKET_HEAD: usize = 5;

impl PacketWatch {
    fn saw(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            if let Some((head, sum, mut digits)) = self.checksum.take() {
                digits.push(byte);
                if digits.len() < 2 {
                    self.checksum = Some((head, sum, digits));
                } else if std::str::from_utf8(&digits)
                    .ok()
                    .and_then(|digits| u8::from_str_radix(digits, 16).ok())
                    == Some(sum)
                {
                    self.took(&head);
                }
                continue;
            }
            match (&mut self.packet, byte) {
                (_, b'$') => self.packet = Some((Vec::new(), 0)),
                (Some(_), b'#') => {
                    if let Some((head, sum)) = self.packet.take() {
                        self.checksum = Some((head, sum, Vec::new()));
                    }
                }
                (Some((head, sum)), byte) => {
                    *sum = sum.wrapping_add(byte);
                    if head.len() < PACKET_HEAD {
                        head.push(byte);
                    }
                }
                (None, _) => {}
            }
        }
    }

    /// A packet with a right checksum, by its first bytes.
    fn took(&mut self, head: &[u8]) {
        self.began = true;
        self.ended =
            head == b"D" || head.starts_with(b"D;") || head == b"k" || head.starts_with(b"vKill");
    }

    fn attached(&self) -> bool {
        self.began && !self.ended
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Port 0 asks the system for a free port, as `traplab gdb --port 0` does (its tests run
    /// side by side and would race for ports picked in advance): the relay says which, and
    /// bytes pass both ways between a gdb there and the side QEMU connects to.
    #[test]
    fn a_relay_on_port_0_listens_on_the_port_it_names_and_relays_both_ways() {
        let relay = GdbRelay::listen(0).expect("loopback ports");
        assert_ne!(relay.gdb_port(), 0);
        assert_ne!(relay.gdb_port(), relay.qemu_port());
        let mut qemu =
            TcpStream::connect((Ipv4Addr::LOCALHOST, relay.qemu_port())).expect("QEMU's side");
        let mut gdb =
            TcpStream::connect((Ipv4Addr::LOCALHOST, relay.gdb_port())).expect("gdb's side");
        let bound = Some(Duration::from_secs(60));
        qemu.set_read_timeout(bound).expect("a bound");
        gdb.set_read_timeout(bound).expect("a bound");
        gdb.write_all(b"$g#67").expect("gdb writes");
        let mut from_gdb = [0u8; 5];
        qemu.read_exact(&mut from_gdb)
            .expect("the hypervisor's side reads");
        assert_eq!(&from_gdb, b"$g#67");
        qemu.write_all(b"+$OK#9a").expect("the hypervisor answers");
        let mut answer = [0u8; 7];
        gdb.read_exact(&mut answer).expect("gdb reads");
        assert_eq!(&answer, b"+$OK#9a");
    }

    /// The session ends (the relay is dropped) right after QEMU said its last and closed:
    /// gdb still gets those last bytes (the guest's exit, `W00`) before its connection ends.
    #[test]
    fn the_hypervisor_s_last_words_reach_gdb_when_the_session_ends() {
        let relay = GdbRelay::listen(0).expect("loopback ports");
        let mut qemu =
            TcpStream::connect((Ipv4Addr::LOCALHOST, relay.qemu_port())).expect("QEMU's side");
        let mut gdb =
            TcpStream::connect((Ipv4Addr::LOCALHOST, relay.gdb_port())).expect("gdb's side");
        gdb.set_read_timeout(Some(Duration::from_secs(60)))
            .expect("a bound");
        // Until the relay has taken this gdb (bytes before that are not gdb's to see).
        let deadline = Instant::now() + Duration::from_secs(60);
        while lock(&relay.shared.gdb).is_none() {
            assert!(Instant::now() < deadline, "the relay never took gdb");
            std::thread::sleep(POLL);
        }
        qemu.write_all(b"$W00#b7")
            .expect("the hypervisor's last packet");
        drop(qemu);
        drop(relay);
        let mut heard = Vec::new();
        gdb.read_to_end(&mut heard).expect("gdb reads to the end");
        assert_eq!(heard, b"$W00#b7");
    }

    #[test]
    fn a_gdb_is_attached_from_its_first_packet_until_it_detaches_or_kills() {
        let attached = |chunks: &[&[u8]]| {
            let mut watch = PacketWatch::default();
            for chunk in chunks {
                watch.saw(chunk);
            }
            watch.attached()
        };
        assert!(!attached(&[]), "connected, silent");
        assert!(
            !attached(&[b"+", b"\x03"]),
            "an ack and a Ctrl-C are no packet"
        );
        assert!(attached(&[b"+$qSupported:multiprocess+#c6"]));
        assert!(
            attached(&[b"$qSupp", b"orted#37$g#67+$m200000,4#", b"5b"]),
            "split anywhere"
        );
        assert!(!attached(&[b"$qSupported#37", b"$D#44"]));
        assert!(!attached(&[b"$qSupported#37$D;1#b0"]));
        assert!(!attached(&[b"$qSupported#37$k#6b"]));
        assert!(!attached(&[b"$qSupported#37$vKill;1#6e"]));
        assert!(
            attached(&[b"$D#44$qSupported#37"]),
            "a new session after the detach"
        );
        assert!(
            attached(&[b"$qSupported#37$Dx#bc"]),
            "a packet that only starts with D is none of them"
        );
        assert!(
            !attached(&[b"-+\x03$g#00$qSupp$#zz$qSupported#38"]),
            "junk, and packets whose checksums are wrong, begin nothing"
        );
        assert!(attached(&[b"$?#3f"]), "a client's first packet may be any");
        assert!(
            attached(&[b"$qSupported#37$D#45"]),
            "a detach with a wrong checksum never reached the stub"
        );
    }

    /// The checksums of the packets the relay writes and looks for.
    #[test]
    fn the_relay_s_packets_are_framed_with_their_checksums() {
        let framed = |body: &[u8]| {
            let sum = body.iter().fold(0u8, |sum, &byte| sum.wrapping_add(byte));
            let mut packet = vec![b'$'];
            packet.extend_from_slice(body);
            packet.extend_from_slice(format!("#{sum:02x}").as_bytes());
            packet
        };
        assert_eq!(DETACH, framed(b"D").as_slice());
        assert_eq!(DETACH_ANSWER, framed(b"OK").as_slice());
    }
}
