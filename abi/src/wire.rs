//! How events travel through the ring: one compact record per event, and one or more
//! records in a ring record (the hypervisor gathers a trap's events and pushes them at once:
//! `hv/src/trace.rs`).
//!
//! A CPUID trap is four events (`exit`, `decide`, `emulate`, `resume`), and the hypervisor
//! writes them at every trap: their encoding is on the hot path. These four kinds have a
//! fixed layout, written by hand; every other kind is the [`Event`] in postcard. Both sides
//! keep the same state, so that a record carries only what the reader cannot know already:
//!
//! - the record's kind and two flags in its first byte: `seq` is the last one's plus one,
//!   the domain is the last record's (then neither follows);
//! - `seq` and `tsc` as the difference from the event before (a few thousand ticks);
//! - an exit's reason: its name is a function of its exit code and EXITINFOs
//!   ([`ExitReason::name`]), which the reader calls, so that the hypervisor does not;
//! - an exit's numbers (exit code, EXITINFO, RIP, CS, RFLAGS, control registers, EFER) and
//!   the general registers, against that domain's values in its last record that had them:
//!   a mask of the ones that changed (two bytes), then each of those XORed with its old value
//!   (a value that did not change costs one bit). The hypervisor reads them from its VMCB as
//!   it compares them ([`ExitSource`]): no event is built for an exit or a resume;
//! - an `emulate` line as its template (a fixed text, below) and the values of its `{}`
//!   (`Emulate::arguments`): the host writes the line, the hypervisor never formats it;
//! - a text that is the same every time (`decide`'s `why` without arguments, its source
//!   line `at`, a changed register's name: a `&'static str` in the hypervisor) is sent once
//!   with a number, then by its number;
//! - an `emulate` change of a register whose old value the reader has (the exit's, as a
//!   rule) as its number with a flag, and the new value. A general register's change moves
//!   the domain's reference, so the `resume` after it has nothing to repeat: its mask is 0.
//!
//! Small numbers (counts, text numbers) are LEB128 varints (7 bits a byte, low first), as
//! postcard writes them; wide ones (a register XORed with its old value, RIP, RFLAGS, a
//! time) are *sized*: a byte that says how many bytes follow (0–8), then those, low first
//! (`Writer::sized`: one store of eight bytes, where a varint is a loop of a store a byte).
//!
//! The writer moves a domain's reference in place as it writes a record, and notes what it
//! moved (`Undo`); what the reader has moves on only when the record was pushed
//! (`Encoder::commit`): a record a lossy ring drops teaches the reader nothing, so the writer
//! takes back what it moved before the next one.
//!
//! The JSON a user reads and records (`tracer/SCHEMA.md`) is not this: the host turns each
//! record back into the same [`Event`] the hypervisor had.

use crate::event::{
    Action, Argument, Arguments, Body, Change, Decide, Emulate, Event, Exit, InstructionBytes,
    MAX_ARGUMENTS, Registers, Resume, Text, render,
};
use crate::exit::ExitReason;
use crate::x86::{GPR_NAMES, RIP_NAME, register_by_address};
use alloc::borrow::Cow;
use alloc::collections::BTreeMap;
use alloc::string::String;
use alloc::vec::Vec;

/// The first byte of a record: its kind in the low three bits, and flags that leave out
/// what the event before already says.
mod tag {
    pub const POSTCARD: u8 = 0;
    pub const EXIT: u8 = 1;
    pub const DECIDE: u8 = 2;
    pub const EMULATE: u8 = 3;
    pub const RESUME: u8 = 4;
    /// The kind's bits.
    pub const KIND: u8 = 0x07;
    /// Its `seq` is the last one's plus one (as a rule): no difference follows.
    pub const NEXT_SEQ: u8 = 0x08;
    /// It is about the same domain as the last record: no domain follows.
    pub const SAME_DOMAIN: u8 = 0x10;
}

/// How a text field begins: one varint, `2n + 1` for the text numbered `n` (the common
/// case: one number), or one of these.
mod text {
    /// The text follows (length, UTF-8 bytes), used this once.
    pub const INLINE: u64 = 0;
    /// A number, then the text: the reader keeps it under that number.
    pub const DEFINE: u64 = 2;
}

/// How a template's value begins ([`Argument`]).
mod argument_kind {
    pub const HEX: u8 = 0;
    pub const UNSIGNED: u8 = 1;
    pub const SIGNED: u8 = 2;
    pub const TEXT: u8 = 3;
}

/// Why a record could not be written or read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WireError {
    /// The record does not fit in the buffer.
    TooLong,
    /// The record ends early, or has a tag, action or text number that is not valid.
    Malformed(&'static str),
    /// A postcard record did not decode.
    Postcard,
}

/// The values one domain's records XOR against: its general registers, which every exit,
/// emulate and resume moves, and its last exit's other numbers, which only an exit moves.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Reference {
    regs: [u64; 16],
    exit: ExitReference,
}

/// A reference's part that only an exit moves.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct ExitReference {
    /// The exit's numbers but its registers ([`ExitSource::field`]).
    fields: [u64; EXIT_FIELDS],
    /// Its instruction bytes: a loop traps at the same instruction again.
    insn: InstructionBytes,
}

/// How many of an exit's numbers [`ExitSource::field`] lists.
pub const EXIT_FIELDS: usize = 13;

/// Where an exit record's values come from, read as they are compared with the domain's
/// reference ([`Encoder::encode_exit`]): an [`Exit`] event (the host's tests and benches, and
/// the hypervisor's exits while gdb or the host's controller looks at the event), or the
/// hypervisor's VMCB and registers themselves, so that an exit is recorded without an event
/// built first (a copy of every value at every traced trap).
///
/// Each value is asked for by its index, a constant once the encoder is inlined: it is then
/// read where it is compared, one load, and never kept in a register meanwhile (an array of
/// them was loaded at once, and the registers it took spilled to the stack).
pub trait ExitSource {
    /// The exit's numbers but its registers, by index: exit code, EXITINFO1, EXITINFO2,
    /// EXITINTINFO, RIP, CS, CPL, RFLAGS, CR0, CR2, CR3, CR4, EFER.
    fn field(&self, index: usize) -> u64;
    /// A general register by its number (RAX, RCX, RDX, RBX, RSP, RBP, RSI, RDI, R8–R15:
    /// [`GPR_NAMES`]).
    fn reg(&self, number: usize) -> u64;
    /// The instruction's bytes at RIP.
    fn insn(&self) -> &InstructionBytes;
}

impl ExitSource for Exit {
    fn field(&self, index: usize) -> u64 {
        match index {
            0 => self.exitcode,
            1 => self.exitinfo1,
            2 => self.exitinfo2,
            3 => self.exitintinfo,
            EXIT_RIP => self.rip,
            5 => self.cs.into(),
            6 => self.cpl.into(),
            7 => self.rflags,
            8 => self.cr0,
            9 => self.cr2,
            10 => self.cr3,
            11 => self.cr4,
            _ => self.efer,
        }
    }

    fn reg(&self, number: usize) -> u64 {
        self.regs.by_number()[number & 15]
    }

    fn insn(&self) -> &InstructionBytes {
        &self.insn
    }
}

/// Where a resume record's values come from ([`Encoder::encode_resume`]), as for an exit
/// ([`ExitSource`]): a [`Resume`] event, or the hypervisor's vCPU itself.
pub trait ResumeSource {
    /// Where guest code goes on.
    fn rip(&self) -> u64;
    fn rflags(&self) -> u64;
    /// A general register by its number, as [`ExitSource::reg`].
    fn reg(&self, number: usize) -> u64;
    /// The trap's cycles, from the exit to the resume.
    fn cycles(&self) -> u64;
}

impl ResumeSource for Resume {
    fn rip(&self) -> u64 {
        self.rip
    }

    fn rflags(&self) -> u64 {
        self.rflags
    }

    fn reg(&self, number: usize) -> u64 {
        self.regs.by_number()[number & 15]
    }

    fn cycles(&self) -> u64 {
        self.cycles
    }
}

/// Where RIP is among [`ExitSource::field`]'s numbers.
const EXIT_RIP: usize = 4;

/// An `exit` record's instruction bytes are the domain's last exit's (instead of a length).
const SAME_INSTRUCTION: u8 = 0xff;

/// An `emulate` change of RIP.
const RIP: u8 = 16;
/// An `emulate` change named by a text (a control register, an MSR, `v_intr`, …).
const NAMED: u8 = 0xff;
/// With a register's number: its old value is the one the reader has (the exit's), as a
/// rule: only the new one follows.
const OLD_AS_KNOWN: u8 = 0x80;

/// A change's register by number: 0–15 in [`GPR_NAMES`], or [`RIP`]. The hypervisor
/// names its changes with [`GPR_NAMES`] and [`RIP_NAME`], which are known by their address
/// without reading them; any other string (a host's event, a control register's or an
/// MSR's name) is looked for in the same table, by its bytes.
fn register_number(name: &str) -> Option<u8> {
    if let Some(number) = register_by_address(name) {
        return Some(number);
    }
    register_number_by_name(name)
}

/// Apart from [`register_number`]: a CPUID trap's changes never come here.
#[inline(never)]
fn register_number_by_name(name: &str) -> Option<u8> {
    if name == RIP_NAME {
        return Some(RIP);
    }
    let number = GPR_NAMES.iter().position(|&gpr| gpr == name)?;
    Some(number as u8)
}

/// The state both sides keep.
#[derive(Debug, Clone, Default)]
struct State {
    seq: u64,
    tsc: u64,
    /// The domain of the last record.
    dom: Option<u16>,
    /// By [`slot`]: domain N at N. The first [`INLINE_SLOTS`] are kept here, in the state
    /// itself: in the hypervisor that is the tracer's static, on the one page of
    /// statics an exit reads (`hv/linker.ld`), where a vector's allocation of its own was a
    /// page more at every traced trap, which under QEMU's TCG costs a refill of its TLB.
    slots: [Reference; INLINE_SLOTS],
    /// Slots from [`INLINE_SLOTS`] on: the domains after the first two.
    more: Vec<Reference>,
}

/// How many slots [`State`] keeps in itself: dom0's and dom1's, a lab's usual domains.
const INLINE_SLOTS: usize = 2;

/// Where a domain's reference is kept. (The hypervisor's own events have none: an exit, an
/// emulate or a resume is always about a domain, and one that is not goes by postcard.)
fn slot(dom: u16) -> usize {
    usize::from(dom)
}

/// A domain's reference before its first record.
const NO_REFERENCE: Reference = Reference {
    regs: [0; 16],
    exit: ExitReference {
        fields: [0; EXIT_FIELDS],
        insn: InstructionBytes::EMPTY,
    },
};

impl State {
    /// A domain's reference as it is, without making one (the reader's side: a record that
    /// reads no reference, a `decide`, must not make one for whatever domain it names).
    fn reference(&self, slot: usize) -> Reference {
        let kept = match slot.checked_sub(INLINE_SLOTS) {
            None => self.slots.get(slot),
            Some(index) => self.more.get(index),
        };
        kept.copied().unwrap_or(NO_REFERENCE)
    }

    /// A domain's reference, made if it is new. Inlined, as is [`diff`]: under QEMU's TCG
    /// each return looks its target up again after a world switch (book/src/speed.md), and
    /// these run at every trap.
    #[inline]
    fn reference_mut(&mut self, slot: usize) -> &mut Reference {
        match slot.checked_sub(INLINE_SLOTS) {
            None => &mut self.slots[slot],
            Some(index) => self.more_reference(index),
        }
    }

    /// A reference after the first [`INLINE_SLOTS`], made if it is new. Apart from
    /// [`State::reference_mut`]: a lab's usual trap never comes here, and inlined, this made
    /// the encoder a quarter bigger.
    #[inline(never)]
    fn more_reference(&mut self, index: usize) -> &mut Reference {
        if self.more.len() <= index {
            self.more.resize(index + 1, NO_REFERENCE);
        }
        &mut self.more[index]
    }
}

/// What the record being written changed in its domain's reference, to take back if it is
/// not pushed ([`Encoder::commit`] forgets it; the next record's start puts it back).
///
/// The reference is moved in place, value by value as the record is written: a value
/// that did not change costs a comparison and nothing else. (It was kept twice, the
/// reader's and the next, and a record wrote every value into the next before comparing:
/// 29 stores and loads an exit, whatever changed.) What a record moved is noted here, each
/// value once ([`Undo::save`]): what a record that was dropped (a lossy ring) or did not fit
/// (written again in the next ring record) had moved goes back, and the writer's reference is
/// the reader's again.
#[derive(Debug, Clone, Copy)]
struct Undo {
    /// The slot of the reference the record moved.
    slot: usize,
    /// Bit N: value N of [`Undo::values`] holds what value N was ([`REGS`] general registers,
    /// then the [`EXIT_FIELDS`] exit numbers).
    saved: u32,
    values: [u64; REGS + EXIT_FIELDS],
    /// The exit's instruction bytes before the record, if it moved them.
    insn: Option<InstructionBytes>,
}

/// How many general registers a reference keeps: the first of an [`Undo`]'s values.
const REGS: usize = 16;

// An undo's mask has a bit for each of a reference's values.
const _: () = assert!(REGS + EXIT_FIELDS <= u32::BITS as usize);

impl Undo {
    const NOTHING: Undo = Undo {
        slot: 0,
        saved: 0,
        values: [0; REGS + EXIT_FIELDS],
        insn: None,
    };

    /// Value `index` (of a reference's registers, then its exit numbers) was `old` before
    /// the record: kept, if the record has not moved it already.
    #[inline(always)]
    fn save(&mut self, index: usize, old: u64) {
        let bit = 1u32 << index;
        if self.saved & bit == 0 {
            self.saved |= bit;
            self.values[index] = old;
        }
    }

    fn is_empty(&self) -> bool {
        self.saved == 0 && self.insn.is_none()
    }
}

/// How many sets of two texts the writer remembers in its cache (a power of two). A trap
/// uses a handful of texts; 64 keep the whole tracer's state, in the hypervisor, on one 4 KiB
/// page with the other statics an exit reads (`hv/linker.ld`): each page more costs every
/// trap a refill of QEMU's software TLB. Two ways a set, because with one a CPUID trap's
/// five texts had two in the same place, which sent both to the map behind the cache at
/// every trap (about 120 instructions).
const TEXT_SETS: usize = 32;
/// How many new texts one record may define; more are sent inline.
const NEW_TEXTS: usize = 8;

/// A `&'static str` by its address and length: the same text every time it comes.
type TextKey = (usize, usize);

/// The hypervisor's side.
#[derive(Debug)]
pub struct Encoder {
    state: State,
    /// Texts already sent, by [`TextKey`], with their numbers.
    texts: BTreeMap<TextKey, u64>,
    /// The same, a few of them by address: most lookups end here, in a few instructions.
    /// Each set's most recently learnt text first.
    cache: [[(TextKey, u64); 2]; TEXT_SETS],
    next_text: u64,
    /// What the record being written will change, once it is pushed.
    pending: Pending,
    /// What it changed in its domain's reference already, to take back if it is not.
    undo: Undo,
}

/// The state a written record moves to, kept until it is pushed.
#[derive(Debug, Default)]
struct Pending {
    seq: u64,
    tsc: u64,
    dom: Option<u16>,
    texts: [(TextKey, u64); NEW_TEXTS],
    new_texts: usize,
}

impl Default for Encoder {
    fn default() -> Encoder {
        Encoder {
            state: State::default(),
            texts: BTreeMap::new(),
            cache: [[((0, 0), 0); 2]; TEXT_SETS],
            next_text: 0,
            pending: Pending::default(),
            undo: Undo::NOTHING,
        }
    }
}

/// A text's set in the cache: the top bits of its key times 2^64 / φ (Fibonacci hashing,
/// Knuth, TAOCP vol. 3, 6.4), which spreads keys that differ in any bits. (The address's low
/// bits alone let three of a CPUID trap's five texts meet in one set after an unrelated
/// change had moved them, and two of them went to the map behind the cache at every trap.)
fn cache_index((address, length): TextKey) -> usize {
    let key = (address ^ length.rotate_right(16)) as u64;
    (key.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> (64 - TEXT_SETS.trailing_zeros())) as usize
}

impl Encoder {
    pub fn new() -> Encoder {
        Encoder::default()
    }

    /// Write the event `seq`, `tsc`, `dom`, `body` (an [`Event`]'s fields, passed apart so
    /// that the hypervisor never moves a body to build one) into `buffer`; the record is the
    /// returned bytes. Call [`Encoder::commit`] once the ring took it.
    pub fn encode<'a>(
        &mut self,
        seq: u64,
        tsc: u64,
        dom: Option<u16>,
        body: &Body,
        buffer: &'a mut [u8],
    ) -> Result<&'a [u8], WireError> {
        // An exit, an emulate or a resume is written against its domain's reference: one
        // about no domain (there is none) goes by postcard. A decide reads no reference.
        match (body, dom) {
            (Body::Exit(exit), Some(dom)) => self.encode_exit_event(seq, tsc, dom, exit, buffer),
            (Body::Resume(resume), Some(dom)) => {
                self.encode_resume_event(seq, tsc, dom, resume, buffer)
            }
            (Body::Decide(_), _) | (Body::Emulate(_), Some(_)) => {
                self.encode_decision(seq, tsc, dom, body, buffer)
            }
            _ => {
                self.start_record(seq, tsc, dom);
                encode_postcard(seq, tsc, dom, body, Writer { buffer, length: 0 })
            }
        }
    }

    /// An exit's record, its values read from `exit` as they are compared with the domain's
    /// reference: the hypervisor passes its VMCB (no event is built first), the host an
    /// [`Exit`] event.
    #[inline]
    pub fn encode_exit<'a>(
        &mut self,
        seq: u64,
        tsc: u64,
        dom: u16,
        exit: &impl ExitSource,
        buffer: &'a mut [u8],
    ) -> Result<&'a [u8], WireError> {
        let (mut out, flags) = self.start_compact(seq, tsc, Some(dom), buffer);
        let slot = slot(dom);
        let Encoder { state, undo, .. } = self;
        undo.slot = slot;
        let reference = state.reference_mut(slot);
        // No reason: the reader names it from the exit code and EXITINFOs.
        diff(
            &mut out,
            |index| exit.field(index),
            &mut reference.exit.fields,
            undo,
            REGS,
        );
        diff(
            &mut out,
            |number| exit.reg(number),
            &mut reference.regs,
            undo,
            0,
        );
        let insn = exit.insn();
        if *insn == reference.exit.insn {
            out.byte(SAME_INSTRUCTION);
        } else {
            out.byte(insn.as_slice().len() as u8);
            out.bytes(insn.as_slice());
            undo.insn = Some(core::mem::replace(&mut reference.exit.insn, *insn));
        }
        out.finish_with_tag(tag::EXIT | flags)
    }

    /// [`Encoder::encode_exit`] from an exit's event. Apart from [`Encoder::encode`]: the
    /// hypervisor records its exits from the VMCB, and inlined here this made the encoder of
    /// its other records (a decide, an emulate) a page bigger (the book's "What a trap costs").
    #[inline(never)]
    fn encode_exit_event<'a>(
        &mut self,
        seq: u64,
        tsc: u64,
        dom: u16,
        exit: &Exit,
        buffer: &'a mut [u8],
    ) -> Result<&'a [u8], WireError> {
        self.encode_exit(seq, tsc, dom, exit, buffer)
    }

    /// [`Encoder::encode_resume`] from a resume's event, apart as
    /// [`Encoder::encode_exit_event`] is.
    #[inline(never)]
    fn encode_resume_event<'a>(
        &mut self,
        seq: u64,
        tsc: u64,
        dom: u16,
        resume: &Resume,
        buffer: &'a mut [u8],
    ) -> Result<&'a [u8], WireError> {
        self.encode_resume(seq, tsc, dom, resume, buffer)
    }

    /// A resume's record: where the guest goes on, its RFLAGS, its registers against the
    /// domain's reference (an emulate's changes moved it already: most resumes repeat none),
    /// and the trap's cycles.
    #[inline]
    pub fn encode_resume<'a>(
        &mut self,
        seq: u64,
        tsc: u64,
        dom: u16,
        resume: &impl ResumeSource,
        buffer: &'a mut [u8],
    ) -> Result<&'a [u8], WireError> {
        let (mut out, flags) = self.start_compact(seq, tsc, Some(dom), buffer);
        let slot = slot(dom);
        let Encoder { state, undo, .. } = self;
        undo.slot = slot;
        out.sized(resume.rip());
        out.sized(resume.rflags());
        let regs = &mut state.reference_mut(slot).regs;
        diff(&mut out, |number| resume.reg(number), regs, undo, 0);
        out.sized(resume.cycles());
        out.finish_with_tag(tag::RESUME | flags)
    }

    /// A `decide`, or an `emulate` about a domain ([`Encoder::encode`] sends any other
    /// body by postcard).
    fn encode_decision<'a>(
        &mut self,
        seq: u64,
        tsc: u64,
        dom: Option<u16>,
        body: &Body,
        buffer: &'a mut [u8],
    ) -> Result<&'a [u8], WireError> {
        let (mut out, flags) = self.start_compact(seq, tsc, dom, buffer);
        let kind = match (body, dom) {
            (Body::Decide(decide), _) => {
                out.byte(action_number(decide.action));
                self.text(&mut out, &decide.why);
                self.text(&mut out, &decide.at);
                tag::DECIDE
            }
            (Body::Emulate(emulate), Some(dom)) => {
                self.emulate(&mut out, slot(dom), emulate);
                tag::EMULATE
            }
            _ => return Err(WireError::Malformed("a kind with no compact record")),
        };
        out.finish_with_tag(kind | flags)
    }

    /// An emulate's template, its values, and its changes: a general register's or RIP's
    /// by number, its old value against the one the reader has (the exit's, as a rule) and
    /// its new one against the old. The general registers' changes move the domain's
    /// reference: the resume that follows then has nothing left to say about them.
    fn emulate(&mut self, out: &mut Writer, slot: usize, emulate: &Emulate) {
        self.text(out, &emulate.what);
        out.varint(emulate.arguments.len() as u64);
        for argument in emulate.arguments.iter() {
            match argument {
                Argument::Hex(value) => {
                    out.byte(argument_kind::HEX);
                    out.sized(*value);
                }
                Argument::Unsigned(value) => {
                    out.byte(argument_kind::UNSIGNED);
                    out.sized(*value);
                }
                Argument::Signed(value) => {
                    out.byte(argument_kind::SIGNED);
                    out.sized(zigzag(*value));
                }
                Argument::Text(text) => {
                    out.byte(argument_kind::TEXT);
                    self.text(out, text);
                }
            }
        }
        out.varint(emulate.changes.len() as u64);
        self.undo.slot = slot;
        for change in &emulate.changes {
            let Some(number) = register_number(&change.name) else {
                out.byte(NAMED);
                self.text(out, &change.name);
                out.sized(change.old);
                out.sized(change.new);
                continue;
            };
            // RIP's old value is the exit's, which an emulate does not move.
            let reference = self.state.reference_mut(slot);
            let was = match number {
                RIP => reference.exit.fields[EXIT_RIP],
                _ => reference.regs[number as usize],
            };
            if number != RIP {
                self.undo.save(number as usize, was);
                reference.regs[number as usize] = change.new;
            }
            if change.old == was {
                out.byte(number | OLD_AS_KNOWN);
            } else {
                out.byte(number);
                out.sized(change.old ^ was);
            }
            out.sized(change.new ^ change.old);
        }
    }

    /// A compact record's start: what an earlier record that was not pushed moved is taken
    /// back, the record's `seq`, `tsc` and domain are noted for [`Encoder::commit`], and its
    /// `seq`, `tsc` and domain written as what they add to the record before; the tag's room
    /// is left first, and its flags returned ([`Writer::finish_with_tag`] writes it).
    #[inline(always)]
    fn start_compact<'a>(
        &mut self,
        seq: u64,
        tsc: u64,
        dom: Option<u16>,
        buffer: &'a mut [u8],
    ) -> (Writer<'a>, u8) {
        self.start_record(seq, tsc, dom);
        let mut out = Writer { buffer, length: 0 };
        // The first byte, the tag, is written last, once its kind and flags are known. (Not
        // first, from a `match` of the kind alone: the compiler turns such a `match` into a
        // table in memory, a page the hypervisor would touch at every trap for one byte.)
        out.byte(0);
        let mut flags = 0;
        if seq == self.state.seq.wrapping_add(1) {
            flags |= tag::NEXT_SEQ;
        } else {
            core::hint::cold_path();
            out.varint(seq.wrapping_sub(self.state.seq));
        }
        out.sized(zigzag(tsc.wrapping_sub(self.state.tsc) as i64));
        if dom == self.state.dom {
            flags |= tag::SAME_DOMAIN;
        } else {
            core::hint::cold_path();
            out.varint(dom.map_or(0, |dom| dom as u64 + 1));
        }
        (out, flags)
    }

    /// Any record's start (all of it for a postcard record): what an earlier record that was
    /// not pushed moved goes back, and this one's `seq`, `tsc` and domain wait for
    /// [`Encoder::commit`].
    #[inline(always)]
    fn start_record(&mut self, seq: u64, tsc: u64, dom: Option<u16>) {
        if !self.undo.is_empty() {
            core::hint::cold_path();
            self.roll_back();
        }
        self.pending.seq = seq;
        self.pending.tsc = tsc;
        self.pending.dom = dom;
        self.pending.new_texts = 0;
    }

    /// The last record was not pushed: the values it moved in its domain's reference go
    /// back to what the reader has.
    #[inline(never)]
    fn roll_back(&mut self) {
        let undo = core::mem::replace(&mut self.undo, Undo::NOTHING);
        let reference = self.state.reference_mut(undo.slot);
        let mut rest = undo.saved;
        while rest != 0 {
            let index = rest.trailing_zeros() as usize;
            match index.checked_sub(REGS) {
                None => reference.regs[index] = undo.values[index],
                Some(field) => reference.exit.fields[field] = undo.values[index],
            }
            rest &= rest - 1;
        }
        if let Some(insn) = undo.insn {
            reference.exit.insn = insn;
        }
    }

    /// One ring record holding `events` back to back, each committed as it is written: what
    /// the hypervisor pushes for a trap (`hv/src/trace.rs` does the same in the ring's
    /// reservation, event by event). For the host's benches and tests.
    pub fn encode_gathered(&mut self, events: &[Event]) -> Result<Vec<u8>, WireError> {
        let mut buffer = alloc::vec![0u8; crate::ring::MAX_RECORD];
        let mut length = 0;
        for event in events {
            let tail = &mut buffer[length..];
            length += self
                .encode(event.seq, event.tsc, event.dom, &event.body, tail)?
                .len();
            self.commit();
        }
        buffer.truncate(length);
        Ok(buffer)
    }

    /// The record written last is in the ring: the reader knows what it taught. Inlined into
    /// the hypervisor's push at every event (a call's return is a block QEMU's TCG looks up
    /// again after every world switch); the texts learnt, rare once a trace runs, apart.
    #[inline(always)]
    pub fn commit(&mut self) {
        let pending = &mut self.pending;
        self.state.seq = pending.seq;
        self.state.tsc = pending.tsc;
        self.state.dom = pending.dom;
        // What the record moved in its domain's reference is the reader's now.
        self.undo.saved = 0;
        self.undo.insn = None;
        if pending.new_texts != 0 {
            core::hint::cold_path();
            self.learn_new_texts();
        }
    }

    /// [`Encoder::commit`]'s rest: the texts the record defined are the reader's now.
    #[inline(never)]
    fn learn_new_texts(&mut self) {
        let new_texts = core::mem::take(&mut self.pending.new_texts);
        for index in 0..new_texts {
            let (key, number) = self.pending.texts[index];
            self.texts.insert(key, number);
            self.remember(key, number);
            self.next_text = self.next_text.max(number + 1);
        }
    }

    /// Put a text the reader knows first in its set of the cache.
    fn remember(&mut self, key: TextKey, number: u64) {
        let set = &mut self.cache[cache_index(key)];
        set[1] = set[0];
        set[0] = (key, number);
    }

    /// A text: by number when it is a `&'static str` the reader knows (or learns now).
    /// The common case, a text in the cache, is a few instructions where it is called; the
    /// rest is apart, so that it does not make every caller's code bigger.
    #[inline]
    fn text(&mut self, out: &mut Writer, value: &Text) {
        if let Cow::Borrowed(fixed) = value {
            let key = (fixed.as_ptr() as usize, fixed.len());
            let set = &self.cache[cache_index(key)];
            let (cached, number) = if set[0].0 == key { set[0] } else { set[1] };
            if cached == key && key != (0, 0) {
                return out.varint(2 * number + 1);
            }
        }
        // The writer's place goes and comes back by value: a writer whose address a call
        // takes lives in memory, and each byte written would store its length there.
        let writer = Writer {
            buffer: &mut *out.buffer,
            length: out.length,
        };
        out.length = self.text_not_cached(writer, value);
    }

    /// [`Encoder::text`]'s rest; the writer's length after it.
    #[inline(never)]
    fn text_not_cached(&mut self, mut out: Writer, value: &Text) -> usize {
        self.write_not_cached(&mut out, value);
        out.length
    }

    /// What [`Encoder::text_not_cached`] writes: apart, so that its early returns all leave
    /// `out` for it to hand back.
    fn write_not_cached(&mut self, out: &mut Writer, value: &Text) {
        let Cow::Borrowed(fixed) = value else {
            out.varint(text::INLINE);
            return out.string(value);
        };
        let key = (fixed.as_ptr() as usize, fixed.len());
        if let Some(&number) = self.texts.get(&key) {
            // The reader has it: back into the cache, where the next lookup finds it.
            self.remember(key, number);
            return out.varint(2 * number + 1);
        }
        // Defined earlier in this same record?
        let pending = &self.pending.texts[..self.pending.new_texts];
        if let Some(&(_, number)) = pending.iter().find(|(k, _)| *k == key) {
            return out.varint(2 * number + 1);
        }
        if self.pending.new_texts == NEW_TEXTS {
            out.varint(text::INLINE);
            return out.string(fixed);
        }
        let number = self.next_text + self.pending.new_texts as u64;
        self.pending.texts[self.pending.new_texts] = (key, number);
        self.pending.new_texts += 1;
        out.varint(text::DEFINE);
        out.varint(number);
        out.string(fixed)
    }
}

/// Any other kind: the tag, then the [`Event`] in postcard. Apart from [`Encoder::encode`]:
/// the serializer is most of the code, and a trap's four compact records are the rest; the
/// hypervisor's hot code stays small (`hv/linker.ld`).
#[inline(never)]
fn encode_postcard<'a>(
    seq: u64,
    tsc: u64,
    dom: Option<u16>,
    body: &Body,
    mut out: Writer<'a>,
) -> Result<&'a [u8], WireError> {
    out.byte(tag::POSTCARD);
    // An `emulate`'s template values are not serialized (`Emulate::arguments`): one that
    // comes this way (about no domain) goes as its finished line.
    let rendered;
    let body = match body {
        Body::Emulate(emulate) if !emulate.arguments.is_empty() => {
            rendered = Body::Emulate(Emulate {
                what: Cow::Owned(render(&emulate.what, emulate.arguments.iter())),
                arguments: Arguments::default(),
                changes: emulate.changes.clone(),
            });
            &rendered
        }
        _ => body,
    };
    // Postcard writes a struct as its fields in order: this tuple is an `Event`.
    let rest = out.buffer.get_mut(out.length..).ok_or(WireError::TooLong)?;
    let used = postcard::to_slice(&(seq, tsc, dom, body), rest)
        .map_err(|_| WireError::TooLong)?
        .len();
    out.length += used;
    out.finish()
}

/// The values `value(0)`, `value(1)`, … against `reference` (N ≤ 16), moving the reference to them: a mask of 16 bits
/// with bit N set when value N differs, then each that differs XORed with its old value,
/// lowest first. The mask's two bytes are left first and written at the end, so that each
/// value is compared, and written if it changed, in one pass. The comparisons are written
/// out one by one (a loop kept the values in an array on the stack, and counted): a value
/// that did not change costs a load, a comparison and a branch, read where it lives (the
/// hypervisor's VMCB, through [`ExitSource`]), and a trap changes a few registers. (The
/// reference's old values go to `undo`, its value `first + N` for value N.)
#[inline(always)]
fn diff<const N: usize>(
    out: &mut Writer,
    value: impl Fn(usize) -> u64,
    reference: &mut [u64; N],
    undo: &mut Undo,
    first: usize,
) {
    const { assert!(N <= 16) };
    let at = out.length;
    out.length += 2;
    let mut mask = 0u16;
    macro_rules! compare {
        ($($index:literal)*) => {$(
            if let Some(old) = reference.get_mut($index)
                && value($index) != *old
            {
                changed(out, undo, first + $index, value($index), old);
                mask |= 1 << $index;
            }
        )*};
    }
    compare!(0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15);
    if let Some(slot) = out.buffer.get_mut(at..at + 2) {
        slot.copy_from_slice(&mask.to_le_bytes());
    }
}

/// [`diff`]'s value `index` changed from `*old` to `value`: it is written, XORed with the
/// old one, and the reference moves to it (the old one kept in `undo`). Apart: [`diff`]
/// compares each value in a place of its own, and each would have held a copy of this.
#[inline(never)]
fn changed(out: &mut Writer, undo: &mut Undo, index: usize, value: u64, old: &mut u64) {
    out.sized(value ^ *old);
    undo.save(index, *old);
    *old = value;
}

/// What [`diff`] wrote, back into `values`.
fn read_diff<const N: usize>(
    input: &mut Reader,
    reference: &[u64; N],
    values: &mut [u64; N],
) -> Result<(), WireError> {
    let mask = u16::from_le_bytes([input.byte()?, input.byte()?]);
    if N < 16 && mask >> N != 0 {
        return Err(WireError::Malformed(
            "a register mask with bits beyond its registers",
        ));
    }
    *values = *reference;
    let mut rest = mask;
    while rest != 0 {
        let index = rest.trailing_zeros() as usize;
        values[index] ^= input.sized()?;
        rest &= rest - 1;
    }
    Ok(())
}

/// The host's side.
#[derive(Debug, Default)]
pub struct Decoder {
    state: State,
    /// The texts the writer numbered, by number (0, 1, 2, … as it defines them).
    texts: Vec<String>,
}

impl Decoder {
    pub fn new() -> Decoder {
        Decoder::default()
    }

    /// The events a ring record holds, appended to `events`: one or more records back to
    /// back (the hypervisor gathers a trap's events into one ring record). Ring records must
    /// come in the order they were written. On an error, the events before the bad record are
    /// in `events` already.
    pub fn decode(&mut self, record: &[u8], events: &mut Vec<Event>) -> Result<(), WireError> {
        let mut input = Reader { bytes: record };
        if input.bytes.is_empty() {
            return Err(WireError::Malformed("an empty ring record"));
        }
        while !input.bytes.is_empty() {
            events.push(self.decode_one(&mut input)?);
        }
        Ok(())
    }

    /// The next record of `input`.
    fn decode_one(&mut self, input: &mut Reader) -> Result<Event, WireError> {
        let first = input.byte()?;
        let tag = first & tag::KIND;
        let flags = first & !tag::KIND;
        if tag > tag::RESUME || flags & !(tag::NEXT_SEQ | tag::SAME_DOMAIN) != 0 {
            return Err(WireError::Malformed("record tag"));
        }
        if first == tag::POSTCARD {
            let (mut event, rest): (Event, _) =
                postcard::take_from_bytes(input.bytes).map_err(|_| WireError::Postcard)?;
            input.bytes = rest;
            // The hypervisor leaves an exit's reason to the reader ([`Exit::reason`]).
            if let Body::Exit(exit) = &mut event.body
                && exit.reason.is_empty()
            {
                exit.reason = Cow::Borrowed(exit.exit_reason().name());
            }
            // The compact records after it count from it.
            self.state.seq = event.seq;
            self.state.tsc = event.tsc;
            self.state.dom = event.dom;
            return Ok(event);
        }
        if tag == tag::POSTCARD {
            return Err(WireError::Malformed("a postcard record with flags"));
        }
        let seq = match flags & tag::NEXT_SEQ {
            0 => self.state.seq.wrapping_add(input.varint()?),
            _ => self.state.seq.wrapping_add(1),
        };
        let tsc = self.state.tsc.wrapping_add(unzigzag(input.sized()?) as u64);
        let dom = if flags & tag::SAME_DOMAIN != 0 {
            self.state.dom
        } else {
            match input.varint()? {
                0 => None,
                plus_one => Some(
                    u16::try_from(plus_one - 1)
                        .map_err(|_| WireError::Malformed("domain number"))?,
                ),
            }
        };
        let slot = match dom {
            Some(dom) => slot(dom),
            // A decide reads no reference.
            None if tag == tag::DECIDE => 0,
            None => return Err(WireError::Malformed("a domain's record without its domain")),
        };
        let mut reference = self.state.reference(slot);
        let body = match tag {
            tag::EXIT => {
                let mut fields = [0u64; EXIT_FIELDS];
                read_diff(input, &reference.exit.fields, &mut fields)?;
                reference.exit.fields = fields;
                let [
                    exitcode,
                    exitinfo1,
                    exitinfo2,
                    exitintinfo,
                    rip,
                    cs,
                    cpl,
                    rflags,
                    cr0,
                    cr2,
                    cr3,
                    cr4,
                    efer,
                ] = fields;
                let cs = u16::try_from(cs).map_err(|_| WireError::Malformed("cs"))?;
                let cpl = u8::try_from(cpl).map_err(|_| WireError::Malformed("cpl"))?;
                let regs = read_regs(input, &mut reference)?;
                let insn = match input.byte()? {
                    SAME_INSTRUCTION => reference.exit.insn,
                    length @ 0..=15 => InstructionBytes::new(input.take(length as usize)?),
                    _ => return Err(WireError::Malformed("more than 15 instruction bytes")),
                };
                reference.exit.insn = insn;
                Body::Exit(Exit {
                    exitcode,
                    reason: Cow::Borrowed(
                        ExitReason::decode(exitcode, exitinfo1, exitinfo2).name(),
                    ),
                    exitinfo1,
                    exitinfo2,
                    exitintinfo,
                    rip,
                    cs,
                    cpl,
                    rflags,
                    cr0,
                    cr2,
                    cr3,
                    cr4,
                    efer,
                    regs,
                    insn,
                })
            }
            tag::DECIDE => Body::Decide(Decide {
                action: action(input.byte()?)?,
                why: self.text(input)?,
                at: self.text(input)?,
            }),
            tag::EMULATE => {
                let template = self.text(input)?;
                let count = input.varint()?;
                if count > MAX_ARGUMENTS as u64 {
                    return Err(WireError::Malformed("argument count"));
                }
                let mut arguments = Vec::with_capacity(count as usize);
                for _ in 0..count {
                    arguments.push(match input.byte()? {
                        argument_kind::HEX => Argument::Hex(input.sized()?),
                        argument_kind::UNSIGNED => Argument::Unsigned(input.sized()?),
                        argument_kind::SIGNED => Argument::Signed(unzigzag(input.sized()?)),
                        argument_kind::TEXT => Argument::Text(self.text(input)?),
                        _ => return Err(WireError::Malformed("argument kind")),
                    });
                }
                // The host's event carries the finished line (`Emulate::arguments`).
                let what = if arguments.is_empty() {
                    template
                } else {
                    Cow::Owned(render(&template, &arguments))
                };
                let count = input.varint()?;
                // Each change takes at least two bytes: a count beyond that is a lie.
                if count > input.bytes.len() as u64 / 2 {
                    return Err(WireError::Malformed("change count"));
                }
                let mut changes = Vec::with_capacity(count as usize);
                for _ in 0..count {
                    let change = match input.byte()? {
                        NAMED => Change {
                            name: self.text(input)?,
                            old: input.sized()?,
                            new: input.sized()?,
                        },
                        first => {
                            let number = first & !OLD_AS_KNOWN;
                            let (name, was) = match number {
                                RIP => (RIP_NAME, reference.exit.fields[EXIT_RIP]),
                                0..16 => {
                                    (GPR_NAMES[number as usize], reference.regs[number as usize])
                                }
                                _ => return Err(WireError::Malformed("register number")),
                            };
                            let old = match first & OLD_AS_KNOWN {
                                0 => input.sized()? ^ was,
                                _ => was,
                            };
                            let new = input.sized()? ^ old;
                            if number != RIP {
                                reference.regs[number as usize] = new;
                            }
                            Change {
                                name: Cow::Borrowed(name),
                                old,
                                new,
                            }
                        }
                    };
                    changes.push(change);
                }
                Body::Emulate(Emulate {
                    what,
                    arguments: Arguments::default(),
                    changes,
                })
            }
            tag::RESUME => Body::Resume(Resume {
                rip: input.sized()?,
                rflags: input.sized()?,
                regs: read_regs(input, &mut reference)?,
                cycles: input.sized()?,
            }),
            _ => return Err(WireError::Malformed("record tag")),
        };
        if matches!(body, Body::Exit(_) | Body::Emulate(_) | Body::Resume(_)) {
            *self.state.reference_mut(slot) = reference;
        }
        self.state.seq = seq;
        self.state.tsc = tsc;
        self.state.dom = dom;
        Ok(Event {
            seq,
            tsc,
            dom,
            body,
        })
    }

    fn text(&mut self, input: &mut Reader) -> Result<Text, WireError> {
        match input.varint()? {
            known if known % 2 == 1 => {
                let number = known / 2;
                usize::try_from(number)
                    .ok()
                    .and_then(|number| self.texts.get(number))
                    .map(|value| Cow::Owned(value.clone()))
                    .ok_or(WireError::Malformed("a text number never defined"))
            }
            text::INLINE => Ok(Cow::Owned(input.string()?)),
            text::DEFINE => {
                let number = input.varint()?;
                let value = input.string()?;
                // Numbers come in order: the next one, or one a dropped record had defined.
                match usize::try_from(number) {
                    Ok(number) if number < self.texts.len() => self.texts[number] = value.clone(),
                    Ok(number) if number == self.texts.len() => self.texts.push(value.clone()),
                    _ => return Err(WireError::Malformed("a text number out of order")),
                }
                Ok(Cow::Owned(value))
            }
            _ => Err(WireError::Malformed("text kind")),
        }
    }
}

fn read_regs(input: &mut Reader, reference: &mut Reference) -> Result<Registers, WireError> {
    let mut values = [0u64; 16];
    read_diff(input, &reference.regs, &mut values)?;
    reference.regs = values;
    Ok(Registers::from_numbers(values))
}

fn action_number(action: Action) -> u8 {
    match action {
        Action::Emulate => 0,
        Action::Reflect => 1,
        Action::Bounce => 2,
        Action::Forward => 3,
        Action::Kill => 4,
    }
}

fn action(number: u8) -> Result<Action, WireError> {
    Ok(match number {
        0 => Action::Emulate,
        1 => Action::Reflect,
        2 => Action::Bounce,
        3 => Action::Forward,
        4 => Action::Kill,
        _ => return Err(WireError::Malformed("action")),
    })
}

/// A signed difference as an unsigned varint: 0, -1, 1, -2, … → 0, 1, 2, 3, …
fn zigzag(value: i64) -> u64 {
    ((value << 1) ^ (value >> 63)) as u64
}

fn unzigzag(value: u64) -> i64 {
    (value >> 1) as i64 ^ -((value & 1) as i64)
}

/// How many bytes a number needs, low first: 0 for 0, 8 for one with bit 63 set.
fn sized_length(value: u64) -> usize {
    ((u64::BITS + 7 - value.leading_zeros()) / 8) as usize
}

/// Writes a record into a buffer. Writing never fails on the way: what does not fit is
/// counted but not written, and [`Writer::finish`] says whether it all fit. (One check at
/// the end instead of an error to pass back from every byte: a trap writes about 70 bytes,
/// and those checks were a fifth of the encoder's instructions.)
struct Writer<'a> {
    buffer: &'a mut [u8],
    /// The bytes written, or that would have been: more than `buffer.len()` when the record
    /// did not fit.
    length: usize,
}

impl<'a> Writer<'a> {
    #[inline]
    fn byte(&mut self, value: u8) {
        if let Some(slot) = self.buffer.get_mut(self.length) {
            *slot = value;
        }
        self.length += 1;
    }

    #[inline]
    fn varint(&mut self, mut value: u64) {
        while value >= 0x80 {
            self.byte(value as u8 | 0x80);
            value >>= 7;
        }
        self.byte(value as u8)
    }

    /// A wide number, sized: how many bytes it needs (0–8: none for 0), then those bytes,
    /// low first. With room for all nine, it is written as a byte and one store of eight
    /// (the bytes beyond its size are written over by what comes next, or lie unused past
    /// the record): about a dozen instructions for any value, where a varint of a register
    /// XORed with its old value (five bytes, say) was a loop of five rounds.
    #[inline]
    fn sized(&mut self, value: u64) {
        let size = sized_length(value);
        let at = self.length;
        match self.buffer.get_mut(at..at + 9) {
            Some(slots) => {
                slots[0] = size as u8;
                slots[1..].copy_from_slice(&value.to_le_bytes());
            }
            None => {
                core::hint::cold_path();
                self.sized_near_the_end(value, size);
                return;
            }
        }
        self.length = at + 1 + size;
    }

    /// [`Writer::sized`] with fewer than nine bytes of room left: byte by byte, counting
    /// what does not fit.
    #[inline(never)]
    fn sized_near_the_end(&mut self, value: u64, size: usize) {
        self.byte(size as u8);
        for byte in &value.to_le_bytes()[..size] {
            self.byte(*byte);
        }
    }

    // Inlined like the others: a call that takes a writer's address would make it live in
    // memory all through `Encoder::encode` (see `Encoder::text`).
    #[inline]
    fn bytes(&mut self, bytes: &[u8]) {
        let end = self.length + bytes.len();
        if let Some(slots) = self.buffer.get_mut(self.length..end) {
            slots.copy_from_slice(bytes);
        }
        self.length = end;
    }

    fn string(&mut self, text: &str) {
        self.varint(text.len() as u64);
        self.bytes(text.as_bytes())
    }

    /// The compact record, its first byte `tag` (the room [`Encoder::start_compact`] left),
    /// if it fit.
    #[inline(always)]
    fn finish_with_tag(self, tag: u8) -> Result<&'a [u8], WireError> {
        if let Some(first) = self.buffer.first_mut() {
            *first = tag;
        }
        self.finish()
    }

    /// The record, if it fit.
    fn finish(self) -> Result<&'a [u8], WireError> {
        self.buffer.get(..self.length).ok_or(WireError::TooLong)
    }
}

struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    fn byte(&mut self) -> Result<u8, WireError> {
        let (&first, rest) = self
            .bytes
            .split_first()
            .ok_or(WireError::Malformed("the record ends early"))?;
        self.bytes = rest;
        Ok(first)
    }

    fn varint(&mut self) -> Result<u64, WireError> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let byte = self.byte()?;
            value |= ((byte & 0x7f) as u64) << shift;
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(WireError::Malformed("a number longer than 64 bits"))
    }

    /// What [`Writer::sized`] wrote.
    fn sized(&mut self) -> Result<u64, WireError> {
        let size = self.byte()?;
        if size > 8 {
            return Err(WireError::Malformed("a sized number of more than 8 bytes"));
        }
        let mut bytes = [0u8; 8];
        bytes[..size as usize].copy_from_slice(self.take(size as usize)?);
        Ok(u64::from_le_bytes(bytes))
    }

    fn take(&mut self, length: usize) -> Result<&'a [u8], WireError> {
        if length > self.bytes.len() {
            return Err(WireError::Malformed("the record ends early"));
        }
        let (taken, rest) = self.bytes.split_at(length);
        self.bytes = rest;
        Ok(taken)
    }

    fn string(&mut self) -> Result<String, WireError> {
        let length = self.varint()?;
        let length = usize::try_from(length).map_err(|_| WireError::Malformed("text length"))?;
        let bytes = self.take(length)?;
        core::str::from_utf8(bytes)
            .map(String::from)
            .map_err(|_| WireError::Malformed("text that is not UTF-8"))
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use crate::event::{Console, Lost};
    use alloc::vec;

    /// A domain's CPUID trap, then another domain's, as the hypervisor writes them.
    fn trap(seq: u64, dom: u16, rax: u64) -> Vec<Event> {
        let regs = Registers {
            rax,
            rsp: 0x1ff_f000,
            ..Registers::default()
        };
        let bodies = [
            Body::Exit(Exit {
                exitcode: 0x72,
                reason: Cow::Borrowed("CPUID"),
                exitinfo1: 0,
                exitinfo2: 0,
                exitintinfo: 0,
                rip: 0x20_0037,
                cs: 8,
                cpl: 0,
                rflags: 2,
                cr0: 0x8000_0011,
                cr2: 0,
                cr3: 0x1000,
                cr4: 0x20,
                efer: 0x1500,
                regs,
                insn: InstructionBytes::new(&[0x0f, 0xa2]),
            }),
            Body::Decide(Decide {
                action: Action::Emulate,
                why: Cow::Borrowed("CPUID is intercepted"),
                at: Cow::Borrowed("hv/src/exit/cpuid.rs:24"),
            }),
            Body::Emulate(Emulate {
                what: Cow::Owned(alloc::format!("CPUID leaf {rax:#x}")),
                arguments: Arguments::default(),
                // A register, RIP (both by number) and a named change, each unlike the
                // exit's value once (`dropped`, `through`'s other tests, vary RAX).
                changes: vec![
                    Change {
                        name: Cow::Borrowed("rax"),
                        old: rax,
                        new: 0xd,
                    },
                    Change {
                        name: Cow::Borrowed("rip"),
                        old: 0x20_0037,
                        new: 0x20_0039,
                    },
                    Change {
                        name: Cow::Borrowed("r15"),
                        old: 7,
                        new: 8,
                    },
                    Change {
                        name: Cow::Borrowed("cr8"),
                        old: 0,
                        new: 2,
                    },
                ],
            }),
            Body::Resume(Resume {
                rip: 0x20_0039,
                rflags: 2,
                regs: Registers { rax: 0xd, ..regs },
                cycles: 9420,
            }),
        ];
        bodies
            .into_iter()
            .enumerate()
            .map(|(index, body)| Event {
                seq: seq + index as u64,
                tsc: 1_000_000 + (seq + index as u64) * 2500,
                dom: Some(dom),
                body,
            })
            .collect()
    }

    /// The one event `record` holds.
    fn one(decoder: &mut Decoder, record: &[u8]) -> Result<Event, WireError> {
        let mut events = Vec::new();
        decoder.decode(record, &mut events)?;
        assert_eq!(events.len(), 1, "one record, one event");
        Ok(events.remove(0))
    }

    /// Encode and push each event (`dropped`: the ones a lossy ring refused), decode what
    /// was pushed.
    fn through(events: &[Event], dropped: &[u64]) -> (Vec<Event>, Vec<usize>) {
        let (mut encoder, mut decoder) = (Encoder::new(), Decoder::new());
        let mut buffer = vec![0u8; 8192];
        let (mut decoded, mut sizes) = (Vec::new(), Vec::new());
        for event in events {
            let record = encoder
                .encode(event.seq, event.tsc, event.dom, &event.body, &mut buffer)
                .expect("fits")
                .to_vec();
            if dropped.contains(&event.seq) {
                continue;
            }
            encoder.commit();
            sizes.push(record.len());
            decoded.push(one(&mut decoder, &record).expect("decodes"));
        }
        (decoded, sizes)
    }

    #[test]
    fn a_sized_number_reads_back_and_one_that_does_not_fit_is_refused() {
        for bits in 0..=64u32 {
            let value = u64::MAX.checked_shr(64 - bits).unwrap_or(0);
            for value in [value, value.wrapping_add(1), value / 2] {
                let length = 1 + sized_length(value);
                // With room for the whole store, exactly enough, and one byte short.
                for size in [length + 9, length, length - 1] {
                    let mut buffer = vec![0u8; size];
                    let mut out = Writer {
                        buffer: &mut buffer,
                        length: 0,
                    };
                    out.sized(value);
                    out.byte(0xa5);
                    assert_eq!(out.length, length + 1, "{value:#x}");
                    let Ok(written) = out.finish() else {
                        assert!(size < length + 1, "{value:#x} did not fit in {size}");
                        continue;
                    };
                    let mut input = Reader { bytes: written };
                    assert_eq!(input.sized(), Ok(value));
                    // What follows it was not overwritten by the store of eight.
                    assert_eq!(input.byte(), Ok(0xa5));
                    assert!(input.bytes.is_empty());
                }
            }
        }
        assert_eq!(sized_length(0), 0);
        assert_eq!(sized_length(0xff), 1);
        assert_eq!(sized_length(0x100), 2);
        assert_eq!(sized_length(u64::MAX), 8);
        let mut input = Reader {
            bytes: &[9, 0, 0, 0, 0, 0, 0, 0, 0, 0],
        };
        assert!(input.sized().is_err(), "nine bytes are more than a u64");
    }

    #[test]
    fn a_varint_reads_back_and_one_that_does_not_fit_is_refused() {
        for bits in 0..=64u32 {
            let value = u64::MAX.checked_shr(64 - bits).unwrap_or(0);
            for value in [value, value.wrapping_add(1), value / 2] {
                let length = (64 - value.leading_zeros()).div_ceil(7).max(1) as usize;
                // With room to spare, exactly enough, and one byte short.
                for size in [length + 5, length, length - 1] {
                    let mut buffer = vec![0u8; size];
                    let mut out = Writer {
                        buffer: &mut buffer,
                        length: 0,
                    };
                    out.varint(value);
                    assert_eq!(out.length, length, "{value:#x}");
                    let Ok(written) = out.finish() else {
                        assert!(size < length, "{value:#x} did not fit in {size}");
                        continue;
                    };
                    let mut input = Reader { bytes: written };
                    assert_eq!(input.varint(), Ok(value));
                    assert!(input.bytes.is_empty());
                }
            }
        }
    }

    #[test]
    fn every_event_comes_back_as_it_was_written() {
        let mut events = trap(0, 1, 0);
        events.extend(trap(4, 2, 0x4000_0000));
        events.push(Event {
            seq: 8,
            tsc: 999, // a clock that went back: still exact
            dom: None,
            body: Body::Console(Console::line("hello")),
        });
        events.extend(trap(9, 1, 1));
        events.push(Event {
            seq: 13,
            tsc: 1_000,
            dom: Some(1),
            body: Body::Console(Console {
                text: "/ # ".into(),
                unfinished: true,
            }),
        });
        let (decoded, _) = through(&events, &[]);
        assert_eq!(decoded, events);
    }

    #[test]
    fn a_domain_s_kind_about_no_domain_goes_by_postcard() {
        // Exits, emulates and resumes are written against their domain's reference; the
        // hypervisor's own have none, and come back all the same.
        let mut events = trap(0, 1, 0);
        for event in &mut events {
            event.dom = None;
        }
        events.extend(trap(4, 1, 0));
        let (decoded, _) = through(&events, &[]);
        assert_eq!(decoded, events);
        let mut buffer = vec![0u8; 8192];
        for event in &events[..4] {
            let record = Encoder::new()
                .encode(event.seq, event.tsc, None, &event.body, &mut buffer)
                .expect("fits")
                .to_vec();
            let compact = matches!(event.body, Body::Decide(_));
            assert_eq!(record[0] == tag::POSTCARD, !compact, "{:?}", event.body);
        }
        // An emulate's template about no domain arrives as its finished line: its values are
        // not serialized, and sent as they are the reader would print the `{}`s.
        let template = Body::Emulate(Emulate {
            what: Cow::Borrowed("CPUID leaf {}"),
            arguments: Arguments::new([Argument::Hex(0xd)]),
            changes: Vec::new(),
        });
        let record = Encoder::new()
            .encode(0, 1, None, &template, &mut buffer)
            .expect("fits")
            .to_vec();
        let mut decoded = Vec::new();
        Decoder::new()
            .decode(&record, &mut decoded)
            .expect("a record");
        match &decoded[0].body {
            Body::Emulate(emulate) => assert_eq!(emulate.what, "CPUID leaf 0xd"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn the_reader_names_an_exit_the_hypervisor_left_unnamed() {
        // As the hypervisor records them: no reason. A #PF (exit code 0x4e), a write to CR3
        // (0x13) and a CPUID, compact and (about no domain) by postcard.
        let mut events = Vec::new();
        for (seq, (exitcode, named)) in [(0x4e, "EXCP_PF"), (0x13, "WRITE_CR3"), (0x72, "CPUID")]
            .into_iter()
            .enumerate()
        {
            let mut exit = trap(0, 1, 0).swap_remove(0);
            let Body::Exit(body) = &mut exit.body else {
                panic!("{exit:?}")
            };
            body.exitcode = exitcode;
            body.reason = Cow::Borrowed("");
            exit.seq = seq as u64;
            events.push((exit, named));
        }
        let mut unnamed: Vec<Event> = events.iter().map(|(event, _)| event.clone()).collect();
        unnamed.extend(unnamed.clone().into_iter().map(|event| Event {
            seq: event.seq + 3,
            dom: None,
            ..event
        }));
        let (decoded, _) = through(&unnamed, &[]);
        for (index, event) in decoded.iter().enumerate() {
            let Body::Exit(exit) = &event.body else {
                panic!("{event:?}")
            };
            assert_eq!(exit.reason, events[index % 3].1, "{event:?}");
        }
    }

    #[test]
    fn a_ring_record_that_gathers_a_trap_s_events_decodes_to_each_of_them() {
        // As the hypervisor gathers: each record written after the one before, committed at
        // once, and the ring record pushed when the trap is over. A postcard record (the
        // console line) sits among the compact ones.
        let mut events = trap(0, 1, 0);
        events.push(Event {
            seq: 4,
            tsc: 1_020_000,
            dom: Some(1),
            body: Body::Console(Console::line("hello")),
        });
        events.extend(trap(5, 1, 1));
        let mut encoder = Encoder::new();
        let ring_records =
            [&events[..5], &events[5..]].map(|trap| encoder.encode_gathered(trap).expect("fits"));
        let mut decoder = Decoder::new();
        let mut decoded = Vec::new();
        for record in &ring_records {
            decoder.decode(record, &mut decoded).expect("decodes");
        }
        assert_eq!(decoded, events);
        // A record cut short inside its second event: the first is there, then the error.
        let (mut decoder, mut decoded) = (Decoder::new(), Vec::new());
        let first_length = Encoder::new()
            .encode(
                0,
                events[0].tsc,
                events[0].dom,
                &events[0].body,
                &mut [0u8; 8192],
            )
            .expect("fits")
            .len();
        let cut = &ring_records[0][..first_length + 2];
        assert!(decoder.decode(cut, &mut decoded).is_err());
        assert_eq!(decoded, events[..1]);
        assert!(Decoder::new().decode(&[], &mut decoded).is_err());
    }
    #[test]
    fn a_resume_repeats_no_register_its_emulate_changed() {
        // A trap whose emulate sets RAX, then its resume with that RAX; and the same trap
        // with nothing changed. Both resumes say "no register changed": the same size.
        let mut changed = trap(0, 1, 0);
        let Body::Exit(exit) = &changed[0].body else {
            panic!("a trap starts with its exit")
        };
        let regs = exit.regs;
        let Body::Emulate(emulate) = &mut changed[2].body else {
            panic!("the third event is the emulate")
        };
        emulate.changes = vec![Change {
            name: Cow::Borrowed("rax"),
            old: regs.rax,
            new: 0x1234_5678,
        }];
        let Body::Resume(resume) = &mut changed[3].body else {
            panic!("a trap ends with its resume")
        };
        resume.regs = Registers {
            rax: 0x1234_5678,
            ..regs
        };
        let mut unchanged = changed.clone();
        let Body::Emulate(emulate) = &mut unchanged[2].body else {
            panic!("the third event is the emulate")
        };
        emulate.changes.clear();
        let Body::Resume(resume) = &mut unchanged[3].body else {
            panic!("a trap ends with its resume")
        };
        resume.regs = regs;
        let (decoded, changed_sizes) = through(&changed, &[]);
        assert_eq!(decoded, changed);
        let (decoded, unchanged_sizes) = through(&unchanged, &[]);
        assert_eq!(decoded, unchanged);
        assert_eq!(changed_sizes[3], unchanged_sizes[3]);
        // A record the ring dropped moved nothing: the resume then carries RAX itself.
        let (decoded, sizes) = through(&changed, &[2]);
        assert_eq!(decoded, [&changed[..2], &changed[3..]].concat());
        assert!(sizes[2] > unchanged_sizes[3]);
    }

    #[test]
    fn a_repeated_trap_costs_a_fraction_of_the_first() {
        let mut events = trap(0, 1, 0);
        events.extend(trap(4, 1, 0));
        let (decoded, sizes) = through(&events, &[]);
        assert_eq!(decoded, events);
        let (first, second): (usize, usize) = (sizes[..4].iter().sum(), sizes[4..].iter().sum());
        // The texts are numbers now, the registers and the exit's fields bits of a mask.
        assert!(
            second + 50 < first,
            "first trap {first} bytes, second {second}"
        );
        // Against postcard, which writes every field every time.
        let postcard: usize = events[4..]
            .iter()
            .map(|event| {
                postcard::to_slice(event, &mut [0u8; 8192])
                    .expect("encodes")
                    .len()
            })
            .sum();
        assert!(
            second * 3 < postcard * 2,
            "{second} bytes; postcard {postcard}"
        );
        std::eprintln!("a repeated trap: {second} bytes; postcard {postcard}; the first {first}");
    }

    #[test]
    fn a_text_the_cache_let_go_is_still_sent_by_its_number() {
        // Three texts in one set of the cache (two ways): the third pushes the first out,
        // and the first, used again, is found in the map behind the cache, not defined again.
        let texts: Vec<&'static str> = (0..4096)
            .map(|n| &*alloc::boxed::Box::leak(alloc::format!("why {n}").into_boxed_str()))
            .collect();
        let key = |text: &str| (text.as_ptr() as usize, text.len());
        let first = texts[0];
        let same_set: Vec<&str> = texts[1..]
            .iter()
            .copied()
            .filter(|text| cache_index(key(text)) == cache_index(key(first)))
            .take(2)
            .collect();
        assert_eq!(same_set.len(), 2, "4,096 texts over 32 sets");
        let decide = |seq: u64, why: &'static str| Event {
            seq,
            tsc: seq,
            dom: Some(1),
            body: Body::Decide(Decide {
                action: Action::Emulate,
                why: Cow::Borrowed(why),
                at: Cow::Borrowed("hv/src/exit/cpuid.rs:24"),
            }),
        };
        let events = [
            decide(0, first),
            decide(1, same_set[0]),
            decide(2, same_set[1]),
            decide(3, first),
        ];
        let (decoded, sizes) = through(&events, &[]);
        assert_eq!(decoded, events);
        assert!(sizes[3] + first.len() <= sizes[0], "by number: {sizes:?}");
    }

    #[test]
    fn a_text_a_record_uses_twice_is_defined_once() {
        // Two changes named by the same new text: the record defines it at the first and
        // refers to that definition at the second.
        let change = |new: u64| Change {
            name: Cow::Borrowed("cr4"),
            old: 0,
            new,
        };
        let events = [Event {
            seq: 0,
            tsc: 0,
            dom: Some(1),
            body: Body::Emulate(Emulate {
                what: Cow::Borrowed("twice"),
                arguments: Arguments::default(),
                changes: vec![change(1), change(2)],
            }),
        }];
        let (decoded, sizes) = through(&events, &[]);
        assert_eq!(decoded, events);
        let once = through(
            &[Event {
                body: Body::Emulate(Emulate {
                    what: Cow::Borrowed("twice"),
                    arguments: Arguments::default(),
                    changes: vec![change(1)],
                }),
                ..events[0].clone()
            }],
            &[],
        )
        .1;
        // The second change: NAMED, the text's number, its old value (0: a size of 0) and
        // its new one (2: a size of 1, then the byte). Defined again, the text alone would
        // have cost more (a definition, its number, its length, its three bytes).
        assert_eq!(sizes[0], once[0] + 5, "{sizes:?} {once:?}");
    }

    #[test]
    fn a_record_with_many_new_texts_sends_the_rest_inline() {
        // Changes named by text (general registers and RIP go by number).
        const NAMES: [&str; 12] = [
            "cr0", "cr2", "cr3", "cr4", "efer", "v_intr", "cr8", "dr7", "pat", "star", "lstar",
            "cstar",
        ];
        let emulate = |seq: u64| Event {
            seq,
            tsc: seq,
            dom: Some(1),
            body: Body::Emulate(Emulate {
                what: Cow::Borrowed("many"),
                arguments: Arguments::default(),
                changes: NAMES
                    .iter()
                    .map(|name| Change {
                        name: Cow::Borrowed(name),
                        old: 0,
                        new: 1,
                    })
                    .collect(),
            }),
        };
        let events = [emulate(0), emulate(1), emulate(2)];
        let (decoded, sizes) = through(&events, &[]);
        assert_eq!(decoded, events);
        // The first record numbered 8 texts; the second the other 5; the third none.
        assert!(sizes[2] < sizes[1] && sizes[1] < sizes[0], "{sizes:?}");
    }

    /// The hypervisor sends an `emulate` line as a template and its values; the reader gets
    /// the finished line, and a repeated one costs the template's number and the values.
    #[test]
    fn a_template_arrives_as_its_finished_line() {
        let emulate = |seq: u64, leaf: u64| Event {
            seq,
            tsc: seq,
            dom: Some(1),
            body: Body::Emulate(Emulate {
                what: Cow::Borrowed("CPUID leaf {} subleaf {}: {} ({})"),
                arguments: Arguments::new([
                    Argument::Hex(leaf),
                    Argument::Unsigned(0),
                    Argument::Text(Cow::Borrowed("unchanged")),
                    Argument::Signed(-22),
                ]),
                changes: Vec::new(),
            }),
        };
        let events = [emulate(0, 0xd), emulate(1, 0x8000_0001)];
        let mut encoder = Encoder::new();
        let mut decoder = Decoder::new();
        let (mut sizes, mut lines) = (Vec::new(), Vec::new());
        for event in &events {
            let record = encoder
                .encode_gathered(core::slice::from_ref(event))
                .expect("fits");
            sizes.push(record.len());
            let Body::Emulate(decoded) = one(&mut decoder, &record).expect("decodes").body else {
                panic!("not an emulate event");
            };
            assert!(decoded.arguments.is_empty(), "the host's line is finished");
            let Body::Emulate(sent) = &event.body else {
                unreachable!()
            };
            assert_eq!(decoded.what, render(&sent.what, sent.arguments.iter()));
            lines.push(decoded.what);
        }
        assert_eq!(
            lines,
            [
                "CPUID leaf 0xd subleaf 0: unchanged (-22)",
                "CPUID leaf 0x80000001 subleaf 0: unchanged (-22)"
            ]
        );
        assert!(sizes[1] * 2 < sizes[0], "a repeated template: {sizes:?}");
    }

    #[test]
    fn a_record_the_ring_dropped_teaches_the_reader_nothing() {
        // The first exit (and the text numbers it would define) is lost; a `lost` event says
        // so, and everything after still decodes exactly.
        let mut events = trap(0, 1, 7);
        events.push(Event {
            seq: 4,
            tsc: 1_020_000,
            dom: None,
            body: Body::Lost(Lost { count: 1 }),
        });
        events.extend(trap(5, 1, 7));
        let (decoded, _) = through(&events, &[0]);
        assert_eq!(decoded, events[1..]);
    }

    #[test]
    fn an_emulate_or_a_resume_moves_only_the_registers_and_a_lost_exit_nothing() {
        // The second trap's exit is lost, at another RIP with another CR3: its emulate and
        // resume, and the third trap's exit, are still written against the first trap's
        // exit, the one the reader has, and decode exactly. The third trap (with another
        // CR3) has no emulate, as a decision that changes nothing: its resume alone must not
        // move the exit's part either, or the fourth trap's exit is written against the
        // first trap's.
        let mut events = trap(0, 1, 7);
        let mut second = trap(4, 1, 8);
        if let Body::Exit(exit) = &mut second[0].body {
            (exit.rip, exit.cr3) = (0x30_0000, 0x2000);
        }
        events.extend(second);
        let mut third: Vec<Event> = trap(8, 1, 9)
            .into_iter()
            .filter(|event| !matches!(event.body, Body::Emulate(_)))
            .collect();
        if let Body::Exit(exit) = &mut third[0].body {
            exit.cr3 = 0x3000;
        }
        events.extend(third);
        events.extend(trap(12, 1, 9));
        let (decoded, _) = through(&events, &[4]);
        let kept: Vec<Event> = events.into_iter().filter(|event| event.seq != 4).collect();
        assert_eq!(decoded, kept);
    }

    #[test]
    fn a_record_that_did_not_fit_is_written_again_by_the_same_encoder() {
        // As the hypervisor does when a record does not fit behind the others in a ring
        // record: the encoder that failed, having filled part of the reference the record
        // moves to, writes it again into the next ring record.
        let events = [trap(0, 1, 7), trap(4, 1, 8)].concat();
        let (mut encoder, mut decoder) = (Encoder::new(), Decoder::new());
        let mut buffer = vec![0u8; 8192];
        for event in &events {
            let mut short = [0u8; 4];
            let encoded = encoder.encode(event.seq, event.tsc, event.dom, &event.body, &mut short);
            assert_eq!(encoded, Err(WireError::TooLong), "{event:?}");
            let record = encoder
                .encode(event.seq, event.tsc, event.dom, &event.body, &mut buffer)
                .expect("fits")
                .to_vec();
            encoder.commit();
            assert_eq!(one(&mut decoder, &record).expect("decodes"), *event);
        }
    }

    #[test]
    fn a_decide_about_any_domain_makes_the_reader_keep_nothing_for_it() {
        // A decide reads no reference: the reader keeps none for the domain it names, even
        // the last one a domain number can say (the ring is the hypervisor's, but a record
        // must not cost the host megabytes).
        let event = Event {
            seq: 0,
            tsc: 0,
            dom: Some(u16::MAX),
            body: Body::Decide(Decide {
                action: Action::Kill,
                why: Cow::Borrowed("why"),
                at: Cow::Borrowed("hv/src/exit/x.rs:1"),
            }),
        };
        let (decoded, _) = through(core::slice::from_ref(&event), &[]);
        assert_eq!(decoded, [event]);
        let mut decoder = Decoder::new();
        let record = Encoder::new().encode_gathered(&decoded).expect("fits");
        let mut events = Vec::new();
        decoder.decode(&record, &mut events).expect("decodes");
        assert!(
            decoder.state.more.is_empty(),
            "{}",
            decoder.state.more.len()
        );
    }

    #[test]
    fn a_broken_record_is_an_error_never_a_panic() {
        let events = trap(0, 1, 3);
        let mut encoder = Encoder::new();
        let records: Vec<_> = events
            .iter()
            .map(|event| {
                encoder
                    .encode_gathered(core::slice::from_ref(event))
                    .expect("fits")
            })
            .collect();
        for (index, record) in records.iter().enumerate() {
            for cut in 0..record.len() {
                let mut decoder = Decoder::new();
                for earlier in &records[..index] {
                    one(&mut decoder, earlier).expect("whole records decode");
                }
                assert!(
                    one(&mut decoder, &record[..cut]).is_err(),
                    "record {index} cut at {cut}"
                );
            }
        }
        // A number never defined, an unknown tag, a change count beyond the record.
        assert_eq!(
            one(&mut Decoder::new(), &[tag::DECIDE, 1, 0, 2, 0, 2 * 9 + 1]),
            Err(WireError::Malformed("a text number never defined"))
        );
        // A kind that does not exist, a flag that does not, a postcard record with a flag.
        for first in [7, tag::EXIT | 0x20, tag::POSTCARD | tag::NEXT_SEQ] {
            assert!(one(&mut Decoder::new(), &[first, 0]).is_err(), "{first:#x}");
        }
        assert!(
            one(
                &mut Decoder::new(),
                &[tag::EMULATE, 1, 0, 2, 0, 0, 0xff, 0x7f]
            )
            .is_err()
        );
        // Too small a buffer is an error too, whatever byte the record would end at.
        assert_eq!(
            Encoder::new().encode(
                events[0].seq,
                events[0].tsc,
                events[0].dom,
                &events[0].body,
                &mut [0u8; 8]
            ),
            Err(WireError::TooLong)
        );
    }

    #[test]
    fn a_record_is_written_whole_or_not_at_all() {
        // Each kind, a postcard one among them: one byte short of its length is too short,
        // its length is enough, and the bytes are those a big buffer gets.
        let mut events = trap(0, 1, 3);
        events.push(Event {
            seq: 4,
            tsc: 9000,
            dom: None,
            body: Body::Lost(crate::event::Lost { count: 2 }),
        });
        for event in &events {
            let mut roomy = [0u8; 512];
            let whole = Encoder::new()
                .encode(event.seq, event.tsc, event.dom, &event.body, &mut roomy)
                .expect("it fits")
                .to_vec();
            for short in 0..whole.len() {
                let mut buffer = vec![0u8; short];
                let encoded = Encoder::new().encode(
                    event.seq,
                    event.tsc,
                    event.dom,
                    &event.body,
                    &mut buffer,
                );
                assert_eq!(
                    encoded,
                    Err(WireError::TooLong),
                    "{short} bytes for {event:?}"
                );
            }
            let mut exact = vec![0u8; whole.len()];
            let encoded =
                Encoder::new().encode(event.seq, event.tsc, event.dom, &event.body, &mut exact);
            assert_eq!(encoded.map(<[u8]>::to_vec), Ok(whole));
        }
    }
}
