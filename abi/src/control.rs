//! The control channel: how the host pauses, steps and breaks the hypervisor.
//!
//! It lives in the trace ring's header page (see [`crate::ring`]), so the host reaches it
//! through the same shared RAM file. The host posts commands into a small ring of slots;
//! the hypervisor takes them at every *checkpoint*: right after it records an event. When
//! it stops there, it publishes the `seq` of that event in the status word and spins,
//! taking commands, until one lets it go on.
//!
//! So stepping is event by event: a break on #PF stops right after the `exit` event, before
//! the hypervisor decides; one step shows the `decide`, the next the `inject`, the next the
//! `resume`.
//!
//! Layout (offsets from `RING_PHYS`, inside the ring's 4 KiB header):
//!
//! | offset | field     | written by | meaning                                           |
//! |--------|-----------|------------|---------------------------------------------------|
//! | 1024   | `posted`  | host       | commands ever posted                              |
//! | 1088   | `taken`   | hv         | commands ever taken                               |
//! | 1152   | `status`  | hv         | bit 63: stopped; bits 62:0: the seq it stopped after |
//! | 1216   | slots     | host       | [`SLOTS`] slots of 4 × u64: opcode and arguments   |

use core::sync::atomic::{AtomicU64, Ordering};

pub const POSTED_OFFSET: usize = 1024;
pub const TAKEN_OFFSET: usize = 1088;
pub const STATUS_OFFSET: usize = 1152;
pub const SLOTS_OFFSET: usize = 1216;
pub const SLOTS: usize = 16;
const SLOT_WORDS: usize = 4;

const _: () = assert!(SLOTS_OFFSET + SLOTS * SLOT_WORDS * 8 <= crate::ring::HEADER_SIZE);

/// Bit 63 of the status word: the hypervisor is stopped.
pub const STOPPED: u64 = 1 << 63;

/// What the host can ask.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// Stop at the next checkpoint.
    Pause,
    /// Run until a breakpoint matches.
    Continue,
    /// Run until the next event, then stop.
    Step,
    /// Run until the next `exit` event (the next trap), then stop.
    NextExit,
    /// Stop after every `exit` event that matches.
    AddBreak(Break),
    /// Forget every breakpoint.
    ClearBreaks,
    /// Keys typed on the host, for a domain's COM1 (`traplab run`).
    Input(Keys),
}

/// Up to 16 bytes typed on the host for domain `domain`'s COM1: they arrive in its UART's
/// receiver (`hv/src/device/uart.rs`) as if typed on a terminal wired to it. Longer input is
/// posted as several commands ([`Keys::split`]), in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Keys {
    pub domain: u16,
    len: u8,
    bytes: [u8; Keys::MAX],
}

impl Keys {
    /// The most bytes one command carries: two of the slot's words.
    pub const MAX: usize = 16;

    /// `text` for `domain`, in commands of at most [`Keys::MAX`] bytes.
    pub fn split(domain: u16, text: &[u8]) -> impl Iterator<Item = Keys> + '_ {
        text.chunks(Keys::MAX).map(move |chunk| {
            let mut bytes = [0; Keys::MAX];
            bytes[..chunk.len()].copy_from_slice(chunk);
            Keys {
                domain,
                len: chunk.len() as u8,
                bytes,
            }
        })
    }

    /// The bytes typed.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes[..self.len as usize]
    }
}

/// Where to stop: checked against every `exit` event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Break {
    /// An exit with this exit code (0x4e: #PF, 0x7b: IOIO, 0x72: CPUID, …).
    ExitCode(u64),
    /// An exception or software interrupt with this vector (an EXCP_* exit, or an
    /// INT n / INT3 the guest executed), or a delivery of it that no such exit made (an
    /// exception the hypervisor raises itself, #AC or #MC on request, an NMI, or the #DF
    /// it makes of two faults): [`Break::matches_delivery`].
    Vector(u8),
    /// An IN/OUT on this port.
    Port(u16),
    /// A hypercall with this number.
    Hypercall(u64),
    /// The guest at an address in `start..end` (one instruction, or a function): an exit
    /// there, or a resume there — the guest goes on there, as at a handler's first
    /// instruction. Checked against `exit` and `resume` events. In domain `dom`, or in any
    /// (`None`): a symbol is one program's, and another domain's program may have other
    /// code at the same address.
    Code {
        start: u64,
        end: u64,
        dom: Option<u16>,
    },
}

impl Command {
    /// The slot words.
    pub fn encode(self) -> [u64; SLOT_WORDS] {
        match self {
            Command::Pause => [1, 0, 0, 0],
            Command::Continue => [2, 0, 0, 0],
            Command::Step => [3, 0, 0, 0],
            Command::NextExit => [4, 0, 0, 0],
            Command::AddBreak(Break::ExitCode(code)) => [5, 1, code, 0],
            Command::AddBreak(Break::Vector(vector)) => [5, 2, vector as u64, 0],
            Command::AddBreak(Break::Port(port)) => [5, 3, port as u64, 0],
            Command::AddBreak(Break::Hypercall(number)) => [5, 4, number, 0],
            // The domain above the kind's byte, plus one (0: any domain).
            Command::AddBreak(Break::Code { start, end, dom }) => {
                [5, 5 | dom.map_or(0, |dom| dom as u64 + 1) << 8, start, end]
            }
            Command::ClearBreaks => [6, 0, 0, 0],
            Command::Input(keys) => {
                let word = |half: usize| {
                    let mut eight = [0; 8];
                    eight.copy_from_slice(&keys.bytes[half * 8..half * 8 + 8]);
                    u64::from_le_bytes(eight)
                };
                [
                    7 | (keys.domain as u64) << 8 | (keys.len as u64) << 24,
                    word(0),
                    word(1),
                    0,
                ]
            }
        }
    }

    /// `None` for words that are not a command.
    pub fn decode(words: [u64; SLOT_WORDS]) -> Option<Command> {
        Some(match words {
            [1, ..] => Command::Pause,
            [2, ..] => Command::Continue,
            [3, ..] => Command::Step,
            [4, ..] => Command::NextExit,
            [5, 1, code, _] => Command::AddBreak(Break::ExitCode(code)),
            [5, 2, vector, _] => Command::AddBreak(Break::Vector(u8::try_from(vector).ok()?)),
            [5, 3, port, _] => Command::AddBreak(Break::Port(u16::try_from(port).ok()?)),
            [5, 4, number, _] => Command::AddBreak(Break::Hypercall(number)),
            [5, kind, start, end] if kind & 0xff == 5 && start < end => {
                let dom = match kind >> 8 {
                    0 => None,
                    plus_one => Some(u16::try_from(plus_one - 1).ok()?),
                };
                Command::AddBreak(Break::Code { start, end, dom })
            }
            [6, ..] => Command::ClearBreaks,
            [opcode, low, high, _] if opcode & 0xff == 7 => {
                let len = (opcode >> 24) as u8;
                if opcode >> 32 != 0 || len as usize > Keys::MAX {
                    return None;
                }
                let mut bytes = [0; Keys::MAX];
                bytes[..8].copy_from_slice(&low.to_le_bytes());
                bytes[8..].copy_from_slice(&high.to_le_bytes());
                Command::Input(Keys {
                    domain: (opcode >> 8) as u16,
                    len,
                    bytes,
                })
            }
            _ => return None,
        })
    }
}

/// What a breakpoint looks at in an exit: the exit code, EXITINFO1, RAX, the instruction
/// bytes (for the vector of INT n) and where the guest is: which domain, at which RIP.
#[derive(Debug, Clone, Copy)]
pub struct ExitFacts<'a> {
    pub dom: Option<u16>,
    pub exitcode: u64,
    pub rip: u64,
    pub exitinfo1: u64,
    pub rax: u64,
    pub instruction: &'a [u8],
}

impl<'a> ExitFacts<'a> {
    /// What a breakpoint looks at in a recorded `exit` event of domain `dom`.
    #[cfg(feature = "events")]
    pub fn of(dom: Option<u16>, exit: &'a crate::event::Exit) -> ExitFacts<'a> {
        ExitFacts {
            dom,
            exitcode: exit.exitcode,
            rip: exit.rip,
            exitinfo1: exit.exitinfo1,
            rax: exit.regs.rax,
            instruction: exit.insn.as_slice(),
        }
    }

    /// The vector the guest raised, for an exception's exit or an INT n's.
    pub fn raised(&self) -> Option<u8> {
        use crate::exit::ExitReason;
        match ExitReason::decode(self.exitcode, self.exitinfo1, 0) {
            ExitReason::Exception { vector, .. } => Some(vector),
            ExitReason::SoftwareInterrupt => software_interrupt_vector(self.instruction),
            _ => None,
        }
    }
}

/// What the breaks look at in one event of a trace, and what they must remember from the
/// events before it: the vector the trap's exit raised, for a delivery later in the same
/// trap ([`Break::matches_delivery`]). The hypervisor's controller and a replay both watch
/// the trace through one, so that a break stops at the same events in both.
#[cfg(feature = "events")]
#[derive(Debug, Clone, Copy, Default)]
pub struct BreakWatch {
    raised: Option<u8>,
}

/// One event as the breaks see it ([`BreakWatch::see`]).
#[cfg(feature = "events")]
#[derive(Debug, Clone, Copy)]
pub struct Seen<'a> {
    dom: Option<u16>,
    /// An exit's facts.
    pub exit: Option<ExitFacts<'a>>,
    /// Where a resume lets the guest go on (the first instruction of a handler the
    /// hypervisor delivered to, say).
    resumes_at: Option<u64>,
    /// The vector an `inject` or a `bounce` delivers.
    delivered: Option<u8>,
    /// The vector the trap's exit raised, for a delivery.
    raised: Option<u8>,
}

#[cfg(feature = "events")]
impl BreakWatch {
    /// Take the next event, of domain `dom`: what the breaks look at in it. An exit starts
    /// a trap (its vector is remembered); a resume or a switch of domains ends it.
    pub fn see<'a>(&mut self, dom: Option<u16>, body: &'a crate::event::Body) -> Seen<'a> {
        use crate::event::Body;
        let exit = match body {
            Body::Exit(exit) => Some(ExitFacts::of(dom, exit)),
            _ => None,
        };
        match body {
            Body::Exit(_) => self.raised = exit.as_ref().and_then(ExitFacts::raised),
            Body::Resume(_) | Body::Schedule(_) => self.raised = None,
            _ => {}
        }
        Seen {
            dom,
            exit,
            resumes_at: match body {
                Body::Resume(resume) => Some(resume.rip),
                _ => None,
            },
            delivered: match body {
                Body::Inject(inject) => Some(inject.vector),
                Body::Bounce(bounce) => Some(bounce.vector),
                _ => None,
            },
            raised: self.raised,
        }
    }
}

#[cfg(feature = "events")]
impl Seen<'_> {
    /// Does `point` stop here: an exit it matches, a resume at its code, or a delivery of
    /// its vector that no exit of that vector made?
    pub fn hits(&self, point: &Break) -> bool {
        self.exit.as_ref().is_some_and(|exit| point.matches(exit))
            || self.resumes_at.is_some_and(|rip| point.at(self.dom, rip))
            || self
                .delivered
                .is_some_and(|vector| point.matches_delivery(vector, self.raised))
    }
}

impl Break {
    pub fn matches(&self, exit: &ExitFacts) -> bool {
        use crate::exit::ExitReason;
        let reason = ExitReason::decode(exit.exitcode, exit.exitinfo1, 0);
        match *self {
            Break::ExitCode(code) => exit.exitcode == code,
            Break::Vector(vector) => exit.raised() == Some(vector),
            Break::Port(port) => {
                matches!(reason, ExitReason::Ioio { info, .. } if info.port == port)
            }
            Break::Hypercall(number) => reason == ExitReason::Vmmcall && exit.rax == number,
            Break::Code { .. } => self.at(exit.dom, exit.rip),
        }
    }

    /// Does a delivery of `vector` (an `inject` or a `bounce`) match, in a trap whose exit
    /// raised `raised` ([`ExitFacts::raised`]; `None` for another exit, or a delivery after a
    /// switch of domains)? A vector break stops at the delivery when no exit of that vector
    /// came first: the exit and its reflection are one stop, and an exception the guest never
    /// raised (an NMI, a #DF made of two #PF) has nothing else to stop at.
    pub fn matches_delivery(&self, vector: u8, raised: Option<u8>) -> bool {
        matches!(*self, Break::Vector(wanted) if wanted == vector && raised != Some(vector))
    }

    /// Does domain `dom`'s guest being at `rip` (an exit's, or a resume's) match?
    pub fn at(&self, dom: Option<u16>, rip: u64) -> bool {
        matches!(*self, Break::Code { start, end, dom: wanted }
            if (start..end).contains(&rip) && (wanted.is_none() || wanted == dom))
    }

    /// Parse what a user types: `pf`, `#PF`, `ud`, `vector:14`, `port:0x3f8`,
    /// `hypercall:1`, `exit:0x72`, or an exit name (`cpuid`, `ioio`, `vmmcall`, `hlt`, `npf`).
    pub fn parse(text: &str) -> Option<Break> {
        let text = text.trim();
        let number = crate::parse_number;
        if let Some((kind, value)) = text.split_once(':') {
            let kind = kind.trim();
            return if kind.eq_ignore_ascii_case("vector") {
                Some(Break::Vector(u8::try_from(number(value)?).ok()?))
            } else if kind.eq_ignore_ascii_case("port") {
                Some(Break::Port(u16::try_from(number(value)?).ok()?))
            } else if kind.eq_ignore_ascii_case("hypercall") {
                Some(Break::Hypercall(number(value)?))
            } else if kind.eq_ignore_ascii_case("exit") {
                Some(Break::ExitCode(number(value)?))
            } else if kind.eq_ignore_ascii_case("rip") {
                let start = number(value)?;
                Some(Break::Code {
                    start,
                    end: start.checked_add(1)?,
                    dom: None,
                })
            } else {
                None
            };
        }
        let name = text.trim_start_matches('#');
        if let Some(exception) = crate::x86::EXCEPTIONS.iter().find(|row| {
            row.mnemonic
                .trim_start_matches('#')
                .eq_ignore_ascii_case(name)
        }) {
            return Some(Break::Vector(exception.vector));
        }
        (0..0x410u64)
            .find(|&code| {
                crate::exit::ExitReason::from_code(code)
                    .name()
                    .eq_ignore_ascii_case(name)
            })
            .map(Break::ExitCode)
    }
}

/// The vector of `int3` (3), `into` (4), `int1`/`icebp` (1) or `int imm8`.
pub fn software_interrupt_vector(instruction: &[u8]) -> Option<u8> {
    // Skip legacy prefixes and REX: they do not change which INT it is.
    let opcode_at = instruction.iter().position(|&byte| {
        !matches!(
            byte,
            0x26 | 0x2e | 0x36 | 0x3e | 0x64 | 0x65 | 0x66 | 0x67 | 0xf0 | 0xf2 | 0xf3 | 0x40
                ..=0x4f
        )
    })?;
    match instruction[opcode_at] {
        0xcc => Some(3),
        0xce => Some(4),
        0xf1 => Some(1),
        0xcd => instruction.get(opcode_at + 1).copied(),
        _ => None,
    }
}

/// The control words, for either side.
#[derive(Debug)]
pub struct Mailbox {
    header: *mut u8,
}

// SAFETY: a pointer into memory shared with the other side; every shared word is accessed
// atomically.
unsafe impl Send for Mailbox {}
// SAFETY: as above; the host serialises its own posts.
unsafe impl Sync for Mailbox {}

/// Why a command could not be posted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PostError {
    /// The hypervisor has not taken the earlier commands yet.
    Full,
}

impl Mailbox {
    /// # Safety
    /// `header` must point to the ring's header page (`HEADER_SIZE` bytes, 8-aligned), valid
    /// while the `Mailbox` lives. Only one host thread posts at a time.
    pub unsafe fn new(header: *mut u8) -> Mailbox {
        Mailbox { header }
    }

    fn word(&self, offset: usize) -> &AtomicU64 {
        // SAFETY: the offsets are 8-aligned and inside the header (the constructor's contract).
        unsafe { AtomicU64::from_ptr(self.header.add(offset).cast()) }
    }

    /// The hypervisor side: forget what an earlier run left (at boot, before anything is posted).
    pub fn reset(&self) {
        self.word(STATUS_OFFSET).store(0, Ordering::Relaxed);
        self.word(TAKEN_OFFSET).store(0, Ordering::Relaxed);
        self.word(POSTED_OFFSET).store(0, Ordering::Release);
    }

    /// The host side: post one command.
    pub fn post(&self, command: Command) -> Result<(), PostError> {
        let posted = self.word(POSTED_OFFSET).load(Ordering::Relaxed);
        let taken = self.word(TAKEN_OFFSET).load(Ordering::Acquire);
        if posted - taken >= SLOTS as u64 {
            return Err(PostError::Full);
        }
        let slot = SLOTS_OFFSET + (posted as usize % SLOTS) * SLOT_WORDS * 8;
        for (index, word) in command.encode().into_iter().enumerate() {
            self.word(slot + index * 8).store(word, Ordering::Relaxed);
        }
        self.word(POSTED_OFFSET)
            .store(posted + 1, Ordering::Release);
        Ok(())
    }

    /// The hypervisor side: take the next command, if any. Words that are not a command
    /// are skipped.
    pub fn take(&self) -> Option<Command> {
        loop {
            let taken = self.word(TAKEN_OFFSET).load(Ordering::Relaxed);
            let posted = self.word(POSTED_OFFSET).load(Ordering::Acquire);
            if taken >= posted {
                return None;
            }
            let slot = SLOTS_OFFSET + (taken as usize % SLOTS) * SLOT_WORDS * 8;
            let mut words = [0u64; SLOT_WORDS];
            for (index, word) in words.iter_mut().enumerate() {
                *word = self.word(slot + index * 8).load(Ordering::Relaxed);
            }
            self.word(TAKEN_OFFSET).store(taken + 1, Ordering::Release);
            if let Some(command) = Command::decode(words) {
                return Some(command);
            }
        }
    }

    /// The hypervisor side: say whether it is stopped, and after which event.
    pub fn set_status(&self, stopped_after: Option<u64>) {
        let word = stopped_after.map_or(0, |seq| STOPPED | seq);
        self.word(STATUS_OFFSET).store(word, Ordering::Release);
    }

    /// The host side: `Some(seq)` while the hypervisor is stopped after event `seq`.
    pub fn stopped_after(&self) -> Option<u64> {
        let word = self.word(STATUS_OFFSET).load(Ordering::Acquire);
        (word & STOPPED != 0).then_some(word & !STOPPED)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_round_trip() {
        for command in [
            Command::Pause,
            Command::Continue,
            Command::Step,
            Command::NextExit,
            Command::AddBreak(Break::ExitCode(0x4e)),
            Command::AddBreak(Break::Vector(14)),
            Command::AddBreak(Break::Port(0x3f8)),
            Command::AddBreak(Break::Hypercall(1)),
            Command::AddBreak(Break::Code {
                start: 0x20_0240,
                end: 0x20_0300,
                dom: None,
            }),
            Command::AddBreak(Break::Code {
                start: 0x20_0240,
                end: 0x20_0241,
                dom: Some(2),
            }),
            Command::ClearBreaks,
        ]
        .into_iter()
        .chain(Keys::split(1, b"ls -l /proc/interrupts\n").map(Command::Input))
        {
            assert_eq!(Command::decode(command.encode()), Some(command));
        }
        let lengths: [usize; 3] = core::array::from_fn(|index| {
            Keys::split(3, &[b'x'; 40])
                .nth(index)
                .map_or(0, |keys| keys.bytes().len())
        });
        assert_eq!(
            lengths,
            [16, 16, 8],
            "split in order, at most 16 bytes each"
        );
        assert_eq!(
            Command::decode([7 | 17 << 24, 0, 0, 0]),
            None,
            "at most 16 bytes"
        );
        assert_eq!(Command::decode([99, 0, 0, 0]), None);
        assert_eq!(Command::decode([5, 2, 300, 0]), None, "a vector is a byte");
        assert_eq!(Command::decode([5, 5, 9, 9]), None, "an empty range");
    }

    #[test]
    fn breaks_parse_like_a_student_types_them() {
        assert_eq!(Break::parse("pf"), Some(Break::Vector(14)));
        assert_eq!(Break::parse("#PF"), Some(Break::Vector(14)));
        assert_eq!(Break::parse("ud"), Some(Break::Vector(6)));
        assert_eq!(Break::parse("nmi"), Some(Break::Vector(2)));
        assert_eq!(Break::parse("cpuid"), Some(Break::ExitCode(0x72)));
        assert_eq!(Break::parse("IOIO"), Some(Break::ExitCode(0x7b)));
        assert_eq!(Break::parse("npf"), Some(Break::ExitCode(0x400)));
        assert_eq!(Break::parse("port:0x3f8"), Some(Break::Port(0x3f8)));
        assert_eq!(Break::parse("hypercall:1"), Some(Break::Hypercall(1)));
        assert_eq!(Break::parse("vector:0x80"), Some(Break::Vector(0x80)));
        assert_eq!(Break::parse("exit:0x78"), Some(Break::ExitCode(0x78)));
        assert_eq!(
            Break::parse("rip:0x200240"),
            Some(Break::Code {
                start: 0x200240,
                end: 0x200241,
                dom: None,
            })
        );
        assert_eq!(Break::parse("port:70000"), None);
        assert_eq!(Break::parse("nonsense"), None);
    }

    #[test]
    fn a_vector_break_matches_a_delivery_no_exit_of_its_vector_made() {
        // #DF made of two #PF: the exit raised 14, the delivery is 8.
        assert!(Break::Vector(8).matches_delivery(8, Some(14)));
        // An NMI the hypervisor sends, after a VMMCALL exit (no vector raised).
        assert!(Break::Vector(2).matches_delivery(2, None));
        // A reflected #PF stopped at its exit already.
        assert!(!Break::Vector(14).matches_delivery(14, Some(14)));
        assert!(!Break::Vector(14).matches_delivery(8, Some(14)));
        assert!(!Break::ExitCode(0x4e).matches_delivery(14, None));
        let int3 = ExitFacts {
            dom: Some(1),
            exitcode: 0x75,
            rip: 0,
            exitinfo1: 0,
            rax: 0,
            instruction: &[0xcc],
        };
        assert_eq!(int3.raised(), Some(3));
    }

    #[test]
    fn breaks_match_exits() {
        let exit = |exitcode, exitinfo1, rax, instruction: &'static [u8]| ExitFacts {
            dom: Some(1),
            exitcode,
            rip: 0x20_00b6,
            exitinfo1,
            rax,
            instruction,
        };
        assert!(Break::Vector(14).matches(&exit(0x4e, 2, 0, &[])));
        assert!(!Break::Vector(14).matches(&exit(0x4d, 0, 0, &[])));
        assert!(Break::Vector(3).matches(&exit(0x75, 0, 0, &[0xcc])));
        assert!(Break::Vector(0x80).matches(&exit(0x75, 0, 0, &[0xcd, 0x80])));
        assert!(!Break::Vector(0x80).matches(&exit(0x75, 0, 0, &[0xcd, 0x81])));
        assert!(Break::Port(0x3f8).matches(&exit(0x7b, 0x03f8_0010, 0, &[])));
        assert!(!Break::Port(0x3f9).matches(&exit(0x7b, 0x03f8_0010, 0, &[])));
        assert!(Break::Hypercall(1).matches(&exit(0x81, 0, 1, &[])));
        assert!(Break::ExitCode(0x72).matches(&exit(0x72, 0, 0, &[])));
        // The guest at an address: any exit there, and (`at`) a resume there.
        let code = Break::parse("rip:0x2000b6").unwrap();
        assert!(code.matches(&exit(0x4e, 2, 0, &[])));
        assert!(code.at(Some(1), 0x20_00b6) && !code.at(Some(1), 0x20_00b7));
        assert!(code.at(Some(2), 0x20_00b6), "an address is any domain's");
        assert!(
            !Break::Vector(14).at(Some(1), 0x20_00b6),
            "only a code break looks at a resume"
        );
        // A symbol is one domain's: the same address in another domain is other code.
        let symbol = Break::Code {
            start: 0x20_00b0,
            end: 0x20_00c0,
            dom: Some(1),
        };
        assert!(symbol.matches(&exit(0x4e, 2, 0, &[])));
        assert!(symbol.at(Some(1), 0x20_00b6));
        assert!(!symbol.at(Some(2), 0x20_00b6) && !symbol.at(None, 0x20_00b6));
    }

    #[test]
    fn the_mailbox_passes_commands_in_order_and_refuses_when_full() {
        let mut header = [0u64; crate::ring::HEADER_SIZE / 8];
        // SAFETY: `header` outlives the mailbox and is the size of a header page.
        let mailbox = unsafe { Mailbox::new(header.as_mut_ptr().cast()) };
        mailbox.reset();
        assert_eq!(mailbox.take(), None);
        for _ in 0..SLOTS {
            mailbox.post(Command::Step).unwrap();
        }
        assert_eq!(mailbox.post(Command::Pause), Err(PostError::Full));
        assert_eq!(mailbox.take(), Some(Command::Step));
        mailbox.post(Command::AddBreak(Break::Port(0x3f8))).unwrap();
        for _ in 1..SLOTS {
            assert_eq!(mailbox.take(), Some(Command::Step));
        }
        assert_eq!(mailbox.take(), Some(Command::AddBreak(Break::Port(0x3f8))));
        assert_eq!(mailbox.stopped_after(), None);
        mailbox.set_status(Some(42));
        assert_eq!(mailbox.stopped_after(), Some(42));
        mailbox.set_status(None);
        assert_eq!(mailbox.stopped_after(), None);
    }
}
