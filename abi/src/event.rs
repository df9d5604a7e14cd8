//! The trace events: one per step of a trap, from the exit to the resume.
//!
//! The hypervisor builds an [`Event`] at every step and pushes it, as a compact record
//! ([`wire`](crate::wire)), into the shared-memory [`ring`](crate::ring). The host decodes
//! it and writes it as one JSON
//! object per line (see `tracer/SCHEMA.md` for the public JSON form). The Rust types here
//! are the single definition of both forms.
//!
//! 64-bit registers and addresses are `"0x…"` strings in JSON (a JSON number loses bits
//! above 2^53) and plain integers on the wire; `#[serde(with = "hex")]` does both.

use alloc::borrow::Cow;
use alloc::string::String;
use alloc::vec::Vec;
use serde::{Deserialize, Serialize};

pub use crate::svm::EventType;

pub use crate::SCHEMA_VERSION;

/// Text that is usually a constant in the hypervisor and owned on the host.
pub type Text = Cow<'static, str>;

/// One step of a trap.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Position in the stream: 0, 1, 2, … with no gaps. A gap means lost events.
    pub seq: u64,
    /// The hypervisor's time stamp counter when the event was recorded.
    pub tsc: u64,
    /// The domain the event is about; `None` for the hypervisor itself.
    pub dom: Option<u16>,
    pub body: Body,
}

/// What happened. The variant name, in snake case, is the JSON `"kind"`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Body {
    Boot(Boot),
    Domain(DomainChange),
    Exit(Exit),
    Decide(Decide),
    Emulate(Emulate),
    Inject(Inject),
    Bounce(Bounce),
    Return(Return),
    Notify(Notify),
    GrantMap(GrantMap),
    GrantUnmap(GrantUnmap),
    Resume(Resume),
    Schedule(Schedule),
    Console(Console),
    Lost(Lost),
    End(End),
}

impl Body {
    /// Every `"kind"`, in the order of the enum.
    pub const KINDS: [&'static str; 16] = [
        "boot",
        "domain",
        "exit",
        "decide",
        "emulate",
        "inject",
        "bounce",
        "return",
        "notify",
        "grant_map",
        "grant_unmap",
        "resume",
        "schedule",
        "console",
        "lost",
        "end",
    ];

    /// The JSON `"kind"` of this body.
    pub fn kind(&self) -> &'static str {
        match self {
            Body::Boot(_) => "boot",
            Body::Domain(_) => "domain",
            Body::Exit(_) => "exit",
            Body::Decide(_) => "decide",
            Body::Emulate(_) => "emulate",
            Body::Inject(_) => "inject",
            Body::Bounce(_) => "bounce",
            Body::Return(_) => "return",
            Body::Notify(_) => "notify",
            Body::GrantMap(_) => "grant_map",
            Body::GrantUnmap(_) => "grant_unmap",
            Body::Resume(_) => "resume",
            Body::Schedule(_) => "schedule",
            Body::Console(_) => "console",
            Body::Lost(_) => "lost",
            Body::End(_) => "end",
        }
    }
}

/// The hypervisor is up: what it runs on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Boot {
    /// `traplab-hv <version>`.
    pub hv: Text,
    /// The CPU vendor string from CPUID leaf 0.
    pub cpu: Text,
    /// SVM revision (CPUID 0x8000_000A EAX).
    pub svm_revision: u32,
    /// CPUID 0x8000_000A EDX bits the hypervisor cares about.
    pub nested_paging: bool,
    pub nrip_save: bool,
    pub decode_assists: bool,
    /// TSC ticks per second, measured against the PIT at boot.
    pub tsc_hz: u64,
    /// Megabytes of RAM the machine has.
    pub ram_mib: u32,
}

/// A domain changed state: it was created, it exited, it was killed. (Not to be confused
/// with the hypervisor's `Domain`, the guest itself: this is an event about one.)
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DomainChange {
    pub state: DomainState,
    /// The guest program's name (`page-fault`).
    pub name: Text,
    /// The exit status, for `exited`.
    pub status: Option<i32>,
    /// Why, for `exited` and `killed`.
    pub reason: Option<Text>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DomainState {
    Created,
    Exited,
    Killed,
}

/// General-purpose registers of the guest.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Registers {
    #[serde(with = "hex")]
    pub rax: u64,
    #[serde(with = "hex")]
    pub rbx: u64,
    #[serde(with = "hex")]
    pub rcx: u64,
    #[serde(with = "hex")]
    pub rdx: u64,
    #[serde(with = "hex")]
    pub rsi: u64,
    #[serde(with = "hex")]
    pub rdi: u64,
    #[serde(with = "hex")]
    pub rbp: u64,
    #[serde(with = "hex")]
    pub rsp: u64,
    #[serde(with = "hex")]
    pub r8: u64,
    #[serde(with = "hex")]
    pub r9: u64,
    #[serde(with = "hex")]
    pub r10: u64,
    #[serde(with = "hex")]
    pub r11: u64,
    #[serde(with = "hex")]
    pub r12: u64,
    #[serde(with = "hex")]
    pub r13: u64,
    #[serde(with = "hex")]
    pub r14: u64,
    #[serde(with = "hex")]
    pub r15: u64,
}

impl Registers {
    /// The values by the registers' numbers in an instruction's encoding (RAX, RCX, RDX,
    /// RBX, RSP, RBP, RSI, RDI, R8–R15: `x86::GPR_NAMES`), the ring's order (`wire`).
    #[inline(always)]
    pub fn by_number(&self) -> [u64; 16] {
        [
            self.rax, self.rcx, self.rdx, self.rbx, self.rsp, self.rbp, self.rsi, self.rdi,
            self.r8, self.r9, self.r10, self.r11, self.r12, self.r13, self.r14, self.r15,
        ]
    }

    /// [`Registers::by_number`]'s values back as registers.
    pub fn from_numbers(values: [u64; 16]) -> Registers {
        let [
            rax,
            rcx,
            rdx,
            rbx,
            rsp,
            rbp,
            rsi,
            rdi,
            r8,
            r9,
            r10,
            r11,
            r12,
            r13,
            r14,
            r15,
        ] = values;
        Registers {
            rax,
            rbx,
            rcx,
            rdx,
            rsi,
            rdi,
            rbp,
            rsp,
            r8,
            r9,
            r10,
            r11,
            r12,
            r13,
            r14,
            r15,
        }
    }

    /// Names and values in the order gdb and the APM list them.
    pub fn named(&self) -> [(&'static str, u64); 16] {
        [
            ("rax", self.rax),
            ("rbx", self.rbx),
            ("rcx", self.rcx),
            ("rdx", self.rdx),
            ("rsi", self.rsi),
            ("rdi", self.rdi),
            ("rbp", self.rbp),
            ("rsp", self.rsp),
            ("r8", self.r8),
            ("r9", self.r9),
            ("r10", self.r10),
            ("r11", self.r11),
            ("r12", self.r12),
            ("r13", self.r13),
            ("r14", self.r14),
            ("r15", self.r15),
        ]
    }
}

/// The CPU left the guest (#VMEXIT): the VMCB's exit fields and the guest state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Exit {
    /// The SVM exit code (APM vol. 2, appendix C).
    pub exitcode: u64,
    /// Its name ([`ExitReason::name`](crate::exit::ExitReason::name)): a function of
    /// `exitcode`, `exitinfo1` and `exitinfo2`. The hypervisor leaves it empty and the ring's
    /// reader names it (`wire::Decoder`): looking the name up at every trap cost the
    /// hypervisor a call to another page of code, which under QEMU's TCG is two blocks looked
    /// up (book chapter "What a trap costs").
    pub reason: Text,
    #[serde(with = "hex")]
    pub exitinfo1: u64,
    #[serde(with = "hex")]
    pub exitinfo2: u64,
    /// The event that was being delivered when the exit happened (EVENTINJ format).
    #[serde(with = "hex")]
    pub exitintinfo: u64,
    #[serde(with = "hex")]
    pub rip: u64,
    pub cs: u16,
    pub cpl: u8,
    #[serde(with = "hex")]
    pub rflags: u64,
    #[serde(with = "hex")]
    pub cr0: u64,
    #[serde(with = "hex")]
    pub cr2: u64,
    #[serde(with = "hex")]
    pub cr3: u64,
    #[serde(with = "hex")]
    pub cr4: u64,
    #[serde(with = "hex")]
    pub efer: u64,
    pub regs: Registers,
    /// Up to 15 bytes at RIP, read by the hypervisor through the guest's page tables
    /// (empty when RIP is not mapped).
    pub insn: InstructionBytes,
}

impl Exit {
    /// The exit decoded: its reason with what EXITINFO1 and EXITINFO2 say.
    pub fn exit_reason(&self) -> crate::exit::ExitReason {
        crate::exit::ExitReason::decode(self.exitcode, self.exitinfo1, self.exitinfo2)
    }
}

/// How the trace names an event delivered to a guest: `#PF`, `NMI`, `#BP (INT3)`,
/// `INT 0x80`, `interrupt 0x20`.
pub fn delivery_name(vector: u8, kind: EventType) -> Text {
    match (kind, vector) {
        (EventType::Exception | EventType::Nmi, vector) => {
            Cow::Borrowed(crate::x86::exception(vector).mnemonic)
        }
        (EventType::Software, 3) => Cow::Borrowed("#BP (INT3)"),
        (EventType::Software, 4) => Cow::Borrowed("#OF (INTO)"),
        (EventType::Software, vector) => Cow::Owned(alloc::format!("INT {vector:#x}")),
        (EventType::Interrupt, vector) => Cow::Owned(alloc::format!("interrupt {vector:#x}")),
    }
}

/// Up to 15 instruction bytes (the longest x86 instruction), kept inline so that building
/// an exit event allocates nothing. JSON: a hex string, `"0f0b"`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct InstructionBytes {
    length: u8,
    bytes: [u8; 15],
}

impl InstructionBytes {
    /// No bytes.
    pub const EMPTY: InstructionBytes = InstructionBytes {
        length: 0,
        bytes: [0; 15],
    };

    /// The first 15 bytes of `bytes`.
    pub fn new(bytes: &[u8]) -> InstructionBytes {
        let mut inline = [0u8; 15];
        let length = bytes.len().min(15);
        inline[..length].copy_from_slice(&bytes[..length]);
        InstructionBytes {
            length: length as u8,
            bytes: inline,
        }
    }

    /// The bytes `read` puts into a zeroed buffer of 15, as many as it says it read: read
    /// in place (the instruction fetch at every exit), not into a buffer of the caller's and
    /// copied. A byte past what it read stays zero, as [`InstructionBytes::new`] leaves it,
    /// so that two of the same instruction compare equal.
    #[inline]
    pub fn read(read: impl FnOnce(&mut [u8; 15]) -> usize) -> InstructionBytes {
        let mut bytes = InstructionBytes::EMPTY;
        let length = read(&mut bytes.bytes).min(15);
        if length < 15 {
            // A read that stopped short (the next page does not translate) may have left
            // some of what it tried.
            bytes.bytes[length..].fill(0);
        }
        bytes.length = length as u8;
        bytes
    }

    pub fn as_slice(&self) -> &[u8] {
        &self.bytes[..self.length as usize]
    }
}

impl Serialize for InstructionBytes {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        hex_bytes::serialize(self.as_slice(), serializer)
    }
}

impl<'de> Deserialize<'de> for InstructionBytes {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let bytes = hex_bytes::deserialize(deserializer)?;
        if bytes.len() > 15 {
            return Err(serde::de::Error::custom("more than 15 instruction bytes"));
        }
        Ok(InstructionBytes::new(&bytes))
    }
}

/// What the hypervisor does with the exit, why, and where in its source it decided.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Decide {
    pub action: Action,
    /// One line, in a student's words.
    pub why: Text,
    /// `hv/src/exit/exception.rs:42`.
    pub at: Text,
}

/// The five things a hypervisor can do with a trap.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Handle the exit in the hypervisor, without the guest's handlers: do the operation on
    /// the guest's behalf (RIP moves past the instruction only when one was completed: not
    /// for an INTR, nor for the exit hypercall, which ends the domain).
    Emulate,
    /// Re-inject the event so the CPU delivers it through the guest's own IDT.
    Reflect,
    /// Deliver it to a handler the guest registered by hypercall (Xen PV style).
    Bounce,
    /// Notify another domain.
    Forward,
    /// End the domain.
    Kill,
}

impl Action {
    pub fn name(self) -> &'static str {
        match self {
            Action::Emulate => "emulate",
            Action::Reflect => "reflect",
            Action::Bounce => "bounce",
            Action::Forward => "forward",
            Action::Kill => "kill",
        }
    }
}

/// What an emulation changed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Emulate {
    /// One line: `CPUID leaf 0x1: set ECX bit 31 (hypervisor present)`. In the hypervisor
    /// it may be a template whose `{}` stand for [`Emulate::arguments`].
    pub what: Text,
    /// The values of `what`'s `{}`, in order, when the hypervisor sends a template: the
    /// hot handlers do not format their line (each trap would pay for it); the host puts
    /// the values in ([`render`]) as it reads the record, so a recording, the JSON and
    /// every host program see the finished line and these are empty.
    #[serde(skip)]
    pub arguments: Arguments,
    pub changes: Vec<Change>,
}

/// One value in a template's `{}`.
#[derive(Debug, Clone, PartialEq)]
pub enum Argument {
    /// A number written `0x1f`.
    Hex(u64),
    /// A number written `31`.
    Unsigned(u64),
    /// A number written `-22`.
    Signed(i64),
    /// Words (a name, a phrase).
    Text(Text),
}

/// How many values a template may have.
pub const MAX_ARGUMENTS: usize = 4;

/// A template's values: a few, kept in place (the hypervisor allocates nothing for them).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Arguments {
    values: [Option<Argument>; MAX_ARGUMENTS],
}

impl Arguments {
    /// The values, in order: at most [`MAX_ARGUMENTS`], which the compiler checks.
    pub fn new<const N: usize>(values: [Argument; N]) -> Arguments {
        const {
            assert!(
                N <= MAX_ARGUMENTS,
                "a template has at most MAX_ARGUMENTS values"
            )
        };
        let mut arguments = Arguments::default();
        for (slot, value) in arguments.values.iter_mut().zip(values) {
            *slot = Some(value);
        }
        arguments
    }

    pub fn iter(&self) -> impl Iterator<Item = &Argument> {
        self.values.iter().map_while(Option::as_ref)
    }

    pub fn len(&self) -> usize {
        self.iter().count()
    }

    pub fn is_empty(&self) -> bool {
        self.values[0].is_none()
    }

    /// Let go of the texts among the values that own their words: after this the values own
    /// no memory (the hypervisor then forgets a recorded event instead of dropping it).
    #[inline]
    pub fn release_texts(&mut self) {
        for value in self.values.iter_mut().flatten() {
            // Every kind named: one that owns memory, added, must be let go of here.
            match value {
                Argument::Text(text) => release(text),
                Argument::Hex(_) | Argument::Unsigned(_) | Argument::Signed(_) => {}
            }
        }
    }
}

/// Let go of a text's words if it owns them: after this it owns no memory. Where it is
/// inlined (the hypervisor empties a trap's events at every trap), only the test: a text the
/// hypervisor records is a fixed one as a rule.
#[inline]
pub fn release(text: &mut Text) {
    if let Cow::Owned(_) = text {
        release_words(text);
    }
}

/// [`release`]'s rest, apart.
#[cold]
#[inline(never)]
fn release_words(text: &mut Text) {
    if let Cow::Owned(words) = core::mem::replace(text, Cow::Borrowed("")) {
        drop(words);
    }
}

/// `template` with each `{}` replaced by the next of `arguments` (a `{}` with no value
/// left stays as it is). The one place a template becomes words: the host calls it for a
/// record, the hypervisor's tests for a decision.
pub fn render<'a>(template: &str, arguments: impl IntoIterator<Item = &'a Argument>) -> String {
    use core::fmt::Write;
    let mut arguments = arguments.into_iter();
    let mut words = String::with_capacity(template.len() + 16);
    let mut rest = template;
    while let Some(at) = rest.find("{}") {
        words.push_str(&rest[..at]);
        // Writing into a String cannot fail.
        let _ = match arguments.next() {
            Some(Argument::Hex(value)) => write!(words, "{value:#x}"),
            Some(Argument::Unsigned(value)) => write!(words, "{value}"),
            Some(Argument::Signed(value)) => write!(words, "{value}"),
            Some(Argument::Text(text)) => words.write_str(text),
            None => words.write_str("{}"),
        };
        rest = &rest[at + 2..];
    }
    words.push_str(rest);
    words
}

/// One register or location an emulation changed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Change {
    /// `rax`, `rip`, `cr3`, `msr 0xc0000080`, …
    pub name: Text,
    #[serde(with = "hex")]
    pub old: u64,
    #[serde(with = "hex")]
    pub new: u64,
}

/// An event the hypervisor puts in EVENTINJ for the CPU to deliver at the next VMRUN.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Inject {
    pub vector: u8,
    /// `#PF`, `NMI`, `INT 0x80`, …
    pub name: Text,
    #[serde(rename = "type")]
    pub kind: EventType,
    pub error_code: Option<u32>,
    /// The CR2 the hypervisor set for a #PF.
    #[serde(with = "hex_option")]
    pub cr2: Option<u64>,
    /// The guest handler the CPU will enter: the offset in the guest's IDT gate
    /// (`None` when the gate is not present or cannot be read).
    #[serde(with = "hex_option")]
    pub handler: Option<u64>,
    /// `true` when the hypervisor made up this event rather than reflecting one the
    /// CPU raised (QEMU's TCG cannot raise some classes natively).
    pub synthetic: bool,
}

/// The hypervisor delivered an exception itself, to a handler the guest registered with
/// `set_trap_table` (Xen PV style): it wrote a frame on the guest's stack and moved RIP.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Bounce {
    pub vector: u8,
    /// `#PF`, …
    pub name: Text,
    pub error_code: Option<u32>,
    /// The CR2 the hypervisor set for a #PF.
    #[serde(with = "hex_option")]
    pub cr2: Option<u64>,
    /// The registered handler, where the guest continues.
    #[serde(with = "hex")]
    pub handler: u64,
    /// The guest-virtual address of the bounce frame (the handler's RSP).
    #[serde(with = "hex")]
    pub frame: u64,
    /// Whether the handler runs with interrupts on (its trap-table flag).
    pub interrupts: bool,
    /// `true` when the hypervisor made up the event (see `Inject::synthetic`).
    pub synthetic: bool,
}

/// A guest handler returned: the end of an event's delivery.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Return {
    /// How: `iret` (the IRET instruction, intercepted) or `hypercall` (the `iret` hypercall
    /// after a bounce).
    pub via: ReturnPath,
    /// The event whose handler returns, when the hypervisor delivered it (`None` for an IRET
    /// that ends no event the hypervisor delivered, e.g. the guest's own jump to ring 3).
    pub vector: Option<u8>,
    /// Its name (`#PF`), when known.
    pub name: Option<Text>,
    /// Where the guest continues.
    #[serde(with = "hex")]
    pub rip: u64,
    pub cs: u16,
    #[serde(with = "hex")]
    pub rflags: u64,
    #[serde(with = "hex")]
    pub rsp: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReturnPath {
    Iret,
    Hypercall,
}

/// The hypervisor runs the guest again (VMRUN).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Resume {
    /// The first guest instruction that will run: the handler when an event is being
    /// injected, else the VMCB's RIP.
    #[serde(with = "hex")]
    pub rip: u64,
    #[serde(with = "hex")]
    pub rflags: u64,
    pub regs: Registers,
    /// Ticks from the exit to this resume (the hypervisor's share of this trap).
    pub cycles: u64,
}

/// The hypervisor notified another domain (the effect of a `forward` decision): `port` of
/// domain `to` is pending now. The upcall comes when `to` runs, in its own lane.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Notify {
    /// The domain notified.
    pub to: u16,
    /// Its port that is pending now.
    pub port: u32,
    /// The sender's port.
    pub from_port: u32,
    /// The receiver was blocked and is runnable again.
    pub woke: bool,
    /// The receiver masked the port (or all its upcalls): the event waits, pending.
    pub masked: bool,
}

/// The hypervisor mapped a grant into the calling domain (`GNTTABOP_map_grant_ref`): its
/// guest-physical `host_addr` now reaches the granter's page.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GrantMap {
    /// The domain that granted the page, and its grant reference.
    pub granter: u16,
    pub gref: u32,
    /// The granter's guest-physical page.
    #[serde(with = "hex")]
    pub frame: u64,
    /// Where the mapper sees it (guest-physical).
    #[serde(with = "hex")]
    pub host_addr: u64,
    pub readonly: bool,
    /// What the mapper names it by when it unmaps.
    pub handle: u32,
}

/// The hypervisor unmapped a grant (`GNTTABOP_unmap_grant_ref`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GrantUnmap {
    pub granter: u16,
    pub gref: u32,
    #[serde(with = "hex")]
    pub host_addr: u64,
    pub handle: u32,
}

/// The hypervisor switched its CPU from one domain's vCPU to another's (or to its idle
/// loop: `to` = none; or from it: `from` = none). Recorded in the hypervisor's lane.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Schedule {
    pub from: Option<u16>,
    pub to: Option<u16>,
    pub why: ScheduleWhy,
    /// For `woken`: the port whose event woke `to`.
    pub port: Option<u32>,
}

/// Why the hypervisor switched.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ScheduleWhy {
    /// A domain runs for the first time.
    Start,
    /// `from` used up its time slice and another domain was runnable.
    SliceOver,
    /// `from` blocked (HLT, `SCHEDOP_block`/`poll`, a store wait).
    Blocked,
    /// `from` yielded (`SCHEDOP_yield`).
    Yielded,
    /// An event woke `to`, which runs first (Xen's credit scheduler boosts a woken vCPU).
    Woken,
    /// `from` ended.
    Ended,
}

impl ScheduleWhy {
    pub fn name(self) -> &'static str {
        match self {
            ScheduleWhy::Start => "start",
            ScheduleWhy::SliceOver => "slice over",
            ScheduleWhy::Blocked => "blocked",
            ScheduleWhy::Yielded => "yielded",
            ScheduleWhy::Woken => "woken",
            ScheduleWhy::Ended => "ended",
        }
    }
}

/// How traces name a domain: `d0` for the control domain (dom0), `d1`, `d2`, … for the
/// others (Xen's `d<id>` notation).
pub fn domain_label(dom: u16) -> alloc::string::String {
    alloc::format!("d{dom}")
}

/// Text a guest wrote to its console, one line per event (without the newline).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Console {
    pub text: Text,
    /// The line has no newline yet, and the guest waits for input after it: a shell's
    /// prompt. The line is sent again, whole, once its newline comes (in the event that
    /// ends it, which repeats this text): a reader that shows lines replaces this one then.
    /// Absent from JSON when `false` (a recording before it reads as `false`).
    #[serde(default)]
    pub unfinished: bool,
}

impl Console {
    /// What a line of text (`traplab trace`, the hypervisor's log) puts after an unfinished
    /// line's text.
    pub const UNFINISHED_NOTE: &'static str = "   (no newline yet: the guest waits for input)";

    /// A finished line.
    pub fn line(text: impl Into<Text>) -> Console {
        Console {
            text: text.into(),
            unfinished: false,
        }
    }
}

/// By hand for one field: JSON leaves `unfinished` out when it is `false` (almost every
/// line), and the wire's postcard, which has no field names to leave one out by, always
/// writes it.
impl Serialize for Console {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let leave_out = serializer.is_human_readable() && !self.unfinished;
        let mut fields = serializer.serialize_struct("Console", 2 - usize::from(leave_out))?;
        fields.serialize_field("text", &self.text)?;
        if leave_out {
            fields.skip_field("unfinished")?;
        } else {
            fields.serialize_field("unfinished", &self.unfinished)?;
        }
        fields.end()
    }
}

/// Events that never reached the host. `count` events are missing before this one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Lost {
    pub count: u64,
}

/// The hypervisor is done and powers off. The last event of a complete trace.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct End {
    /// The status QEMU exits with (see `hv/src/power.rs`).
    pub status: u8,
    /// Why the hypervisor stopped.
    pub reason: Text,
}

/// `u64` as `"0x…"` in human-readable formats (JSON), as an integer in binary ones.
pub mod hex {
    use alloc::format;
    use serde::de::Error;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(value: &u64, serializer: S) -> Result<S::Ok, S::Error> {
        if serializer.is_human_readable() {
            serializer.collect_str(&format_args!("{value:#x}"))
        } else {
            serializer.serialize_u64(*value)
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<u64, D::Error> {
        if deserializer.is_human_readable() {
            let text = <Cow<'de, str>>::deserialize(deserializer)?;
            parse(&text).ok_or_else(|| D::Error::custom(format!("not a 0x… number: {text:?}")))
        } else {
            u64::deserialize(deserializer)
        }
    }

    use alloc::borrow::Cow;

    /// Parse `0x1f` (or a plain decimal number).
    pub fn parse(text: &str) -> Option<u64> {
        crate::parse_number(text)
    }
}

/// `Option<u64>` with [`hex`] inside.
pub mod hex_option {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    #[derive(Serialize, Deserialize)]
    struct Wrapped(#[serde(with = "super::hex")] u64);

    pub fn serialize<S: Serializer>(value: &Option<u64>, serializer: S) -> Result<S::Ok, S::Error> {
        value.map(Wrapped).serialize(serializer)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<u64>, D::Error> {
        Ok(Option::<Wrapped>::deserialize(deserializer)?.map(|wrapped| wrapped.0))
    }
}

/// Bytes as a hex string (`"0f0b"`) in human-readable formats, as bytes in binary ones.
pub mod hex_bytes {
    use alloc::string::String;
    use alloc::vec::Vec;
    use core::fmt::Write;
    use serde::de::Error;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &[u8], serializer: S) -> Result<S::Ok, S::Error> {
        if serializer.is_human_readable() {
            let mut text = String::with_capacity(bytes.len() * 2);
            for byte in bytes {
                // Writing to a String cannot fail.
                let _ = write!(text, "{byte:02x}");
            }
            serializer.serialize_str(&text)
        } else {
            serializer.serialize_bytes(bytes)
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<u8>, D::Error> {
        if deserializer.is_human_readable() {
            let text = <alloc::borrow::Cow<'de, str>>::deserialize(deserializer)?;
            if text.len() % 2 != 0 {
                return Err(D::Error::custom("odd number of hex digits"));
            }
            (0..text.len())
                .step_by(2)
                .map(|i| {
                    text.get(i..i + 2)
                        .and_then(|pair| u8::from_str_radix(pair, 16).ok())
                        .ok_or_else(|| D::Error::custom("not a hex byte string"))
                })
                .collect()
        } else {
            <serde_bytes_compat::ByteBuf>::deserialize(deserializer).map(|buf| buf.0)
        }
    }

    /// A minimal owned byte buffer that deserializes from `bytes` or a sequence
    /// (postcard encodes `serialize_bytes` as a length-prefixed byte string).
    mod serde_bytes_compat {
        use alloc::vec::Vec;
        use core::fmt;
        use serde::de::{Deserialize, Deserializer, SeqAccess, Visitor};

        pub struct ByteBuf(pub Vec<u8>);

        impl<'de> Deserialize<'de> for ByteBuf {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                struct BytesVisitor;
                impl<'de> Visitor<'de> for BytesVisitor {
                    type Value = ByteBuf;
                    fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
                        formatter.write_str("bytes")
                    }
                    fn visit_bytes<E>(self, bytes: &[u8]) -> Result<ByteBuf, E> {
                        Ok(ByteBuf(bytes.to_vec()))
                    }
                    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<ByteBuf, A::Error> {
                        let mut bytes = Vec::new();
                        while let Some(byte) = seq.next_element()? {
                            bytes.push(byte);
                        }
                        Ok(ByteBuf(bytes))
                    }
                }
                deserializer.deserialize_bytes(BytesVisitor)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instruction_bytes_read_in_place_equal_the_same_bytes_given() {
        let cpuid = InstructionBytes::read(|bytes| {
            bytes[..2].copy_from_slice(&[0x0f, 0xa2]);
            2
        });
        assert_eq!(cpuid, InstructionBytes::new(&[0x0f, 0xa2]));
        // A read that wrote more than it says it read (a fetch that stopped at a page that
        // does not translate) leaves nothing past its length: equal all the same.
        let short = InstructionBytes::read(|bytes| {
            bytes.fill(0xcc);
            3
        });
        assert_eq!(short, InstructionBytes::new(&[0xcc; 3]));
        assert_eq!(short.as_slice(), [0xcc; 3]);
        let all = InstructionBytes::read(|bytes| {
            bytes.fill(0x90);
            99
        });
        assert_eq!(all.as_slice(), [0x90; 15]);
    }

    #[test]
    fn a_template_takes_its_values_in_order_and_keeps_what_has_none() {
        let arguments = Arguments::new([
            Argument::Hex(0x1f),
            Argument::Unsigned(31),
            Argument::Signed(-22),
            Argument::Text(Cow::Borrowed("EINVAL")),
        ]);
        assert_eq!(arguments.len(), 4);
        assert_eq!(
            render("{} = {} = {} ({}) {}", arguments.iter()),
            "0x1f = 31 = -22 (EINVAL) {}"
        );
        assert_eq!(render("no values", []), "no values");
        assert!(Arguments::default().is_empty());
    }

    pub(crate) fn sample_exit() -> Event {
        Event {
            seq: 7,
            tsc: 123_456,
            dom: Some(0),
            body: Body::Exit(Exit {
                exitcode: 0x4e,
                reason: Cow::Borrowed("EXCP_PF"),
                exitinfo1: 2,
                exitinfo2: 0x4000_0000,
                exitintinfo: 0,
                rip: 0x20_1234,
                cs: 8,
                cpl: 0,
                rflags: 0x2,
                cr0: 0x8005_0033,
                cr2: 0,
                cr3: 0x10000,
                cr4: 0x620,
                efer: 0x1d00,
                regs: Registers {
                    rax: u64::MAX,
                    rsp: 0x7ff00,
                    ..Registers::default()
                },
                insn: InstructionBytes::new(&[0xc7, 0x00, 0x2a, 0x00, 0x00, 0x00]),
            }),
        }
    }

    #[test]
    fn json_uses_hex_strings() {
        let event = sample_exit();
        let json = serde_json::to_value(&event).unwrap();
        assert_eq!(json["body"]["exit"]["exitinfo2"], "0x40000000");
        assert_eq!(json["body"]["exit"]["regs"]["rax"], "0xffffffffffffffff");
        assert_eq!(json["body"]["exit"]["insn"], "c7002a000000");
        assert_eq!(json["body"]["exit"]["exitcode"], 0x4e);
        let back: Event = serde_json::from_value(json).unwrap();
        assert_eq!(back, event);
    }
}
