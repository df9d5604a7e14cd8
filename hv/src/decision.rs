//! A decision: what the hypervisor does with one exit, as a value.
//!
//! Every handler in `exit/` is a pure function from the exit and a read-only view of the
//! guest ([`Guest`](crate::domain::Guest)) to a [`Decision`]: one of the five actions, the
//! one-line reason and the source line that chose it, and the [`Effect`]s that carry it out
//! — the registers, VMCB fields, guest memory and device accesses it changes, and how far
//! RIP moves. Nothing happens while a handler runs; `apply.rs` does it all afterwards, in
//! one fixed order, and records the events. So a decision can be tested on the host with a
//! synthetic exit, and every trace has the same shape.

use crate::domain::evtchn::{Callback, PortState};
use crate::domain::interrupts::Timers;
use crate::domain::page_tables::{NewTables, PinStep};
use crate::domain::vcpu::{InstructionAt, Wait};
use crate::emulate::Access;
use alloc::borrow::Cow;
use alloc::boxed::Box;
use alloc::string::String;
use alloc::vec::Vec;
use traplab_abi::event::{self, Action, Argument, Arguments, ReturnPath};
use traplab_abi::evtchn::Port;
use traplab_abi::grant_table::{GrantEntryV1, GrantRef};
use traplab_abi::hypercall::TrapInfo;
use traplab_abi::svm;
use traplab_abi::x86::RFlags;

/// How a domain ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DomainEnd {
    /// It asked to stop (the exit hypercall, or HLT with nothing to wait for).
    Exited { status: i32, reason: String },
    /// The hypervisor stopped it.
    Killed { reason: String },
}

/// What the hypervisor does with an exit.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    pub action: Action,
    /// One line, in a student's words.
    pub why: Cow<'static, str>,
    /// Where in the hypervisor's source: `hv/src/exit/exception.rs:42` (see [`decide!`](crate::decide)).
    pub at: &'static str,
    /// What changes, in this order.
    pub effects: Vec<Effect>,
    /// What the emulation did, for the `emulate` event (the machine's reports of its
    /// effects follow it); `None` and nothing reported: no `emulate` event.
    pub what: Option<Words>,
    /// An event for the guest: injected (the CPU delivers it) or bounced (the hypervisor does).
    /// (This and the next two are rare, and boxed: a decision is moved a few times on the
    /// way from its handler to `apply`, and under TCG every byte moved costs.)
    pub delivery: Option<Box<Delivery>>,
    /// A guest handler returns (the end of an earlier delivery).
    pub returning: Option<Box<Returning>>,
    /// The domain ends.
    pub end: Option<Box<DomainEnd>>,
}

/// One change the hypervisor makes for a decision. `apply.rs` performs them in order and
/// records each register it changes (name, old, new) for the `emulate` event.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    // ---- The vCPU's registers and VMCB fields -------------------------------------------
    /// A general register, by its encoding number (0 = RAX … 15 = R15).
    Gpr(u8, u64),
    /// Continue the guest at this RIP. It ends an interrupt shadow (after STI or MOV SS):
    /// the instruction after it has run.
    Rip(u64),
    Rflags(u64),
    /// RFLAGS.RF cleared, whatever RFLAGS the effects before it left (an MMIO arithmetic
    /// instruction's flags are worked out as it is applied): the instruction completed
    /// (`delivery::after_completed`).
    ClearResumeFlag,
    /// RFLAGS.RF set, whatever RFLAGS the effects before it left: a fault is about to be
    /// delivered, and the RFLAGS image a CPU pushes for a fault has RF set
    /// (`delivery::exception`).
    SetResumeFlag,
    /// CR0, CR2, CR3 or CR4.
    ControlRegister(u8, u64),
    /// The guest's EFER (SVME stays set behind its back: VMRUN requires it).
    Efer(u64),
    /// The guest's task priority, CR8: with V_INTR_MASKING the CPU keeps it in the VMCB's
    /// V_TPR (AMD APM vol. 2, 15.21.1).
    TaskPriority(u8),
    /// DR0–DR3 (kept by the hypervisor and loaded into the CPU), DR6 or DR7.
    DebugRegister(u8, u64),
    /// A watchpoint of gdb's (in debug-register slot n, lent to it) saw an access the
    /// hypervisor made in the CPU's place: gdb stops the guest once the exit is applied
    /// (`Vcpu::debugger_watchpoint`, `gdb::after_handling`), as at the #DB the CPU raises for
    /// its own accesses.
    DebuggerWatchpoint(u8),
    /// An MSR the VMCB holds for the guest.
    Msr(VmcbMsr, u64),
    /// An MSR the hypervisor keeps in the vCPU (`Vcpu::msrs`: the MTRRs, MCG_STATUS).
    VcpuMsr(u32, u64),
    /// The guest's TSC offset (its TSC = the host's + this, AMD APM vol. 2, 15.30.5).
    TscOffset(u64),
    /// Flush the guest's TLB at the next VMRUN (TLB_CONTROL, APM vol. 2, 15.16).
    FlushTlb,
    /// The guest is no longer in an interrupt shadow (HLT ends it).
    EndInterruptShadow,
    /// The instruction at the new RIP runs before any interrupt: the interrupt shadow of an
    /// STI that turned interrupts on (AMD APM vol. 3, STI), emulated for a PV kernel. After
    /// the `Rip`, which ends a shadow.
    BeginInterruptShadow,
    // ---- Devices and guest memory ---------------------------------------------------------
    /// An I/O port access (`device/mod.rs` routes it).
    Port(PortAccess),
    /// An MMIO access (the lab device, the local APIC).
    Mmio(MmioAccess),
    /// Elements of MOVS, STOS or LODS, some of them on the device bus.
    MemoryString(MemoryString),
    /// Request an interrupt in the guest's local APIC (its timer fired).
    LocalApicRequest(u8),
    /// PIT channel 0's output pulses: IRQ 0's edge, latched by the 8259A (its timer fired).
    PitTick,
    /// The RTC's timer is due at this TSC: its flags come up to date, IRQ 8 follows IRQF,
    /// and the timer is armed for its next event (`Devices::rtc_tick`).
    RtcTick(u64),
    /// The access to the RTC's registers at this instruction waits for the interrupt the
    /// RTC's tick raises (`exit/ioio.rs`): once, the vCPU remembers
    /// ([`Vcpu::rtc_access_waited_at`]).
    ///
    /// [`Vcpu::rtc_access_waited_at`]: crate::domain::vcpu::Vcpu::rtc_access_waited_at
    RtcAccessWaits(InstructionAt),
    /// Bytes for the domain's console (the `console_write` hypercall).
    Console(Vec<u8>),
    /// The unfinished line the guest waits for input after, shown as a prompt: a `console`
    /// event marked unfinished (`Uart::waits_after_prompt`).
    ConsolePrompt,
    /// A checked entry written into a pinned page table at guest-physical `gpa`; the
    /// writable leaves of the pinned tables follow (the old entry's out, the new one's in).
    PageTableEntry {
        gpa: u64,
        level: u8,
        entry: u64,
    },
    /// Pin these page tables (guest-physical page, level), and count their writable leaves:
    /// every write to them is checked. The handler found them all (`domain/page_tables.rs`):
    /// applying it reads no guest memory and cannot fail, and it comes before the
    /// `PageTableEntry` that links them, so no table is ever linked unpinned.
    PinPageTables(Box<NewTables>),
    /// A `pin_page_table` goes on at its VMMCALL's next run: this exit's piece of the walk,
    /// kept with the rest (`domain/page_tables.rs`); `None`: no pin is under way any more.
    PinContinuation(Option<Box<PinStep>>),
    /// Give the unmapped RAM page at `gpa` a host frame (lazy memory).
    Populate(u64),
    // ---- Paravirtual state -------------------------------------------------------------------
    TrapTable(Vec<TrapInfo>),
    PvMode(bool),
    /// A PV kernel's interrupt flag, which its emulated CLI and STI change.
    VirtualInterruptFlag(bool),
    // ---- Interrupts ----------------------------------------------------------------------
    /// The guest's timers from now on: with the one it asked for (`set_timer`), or as its
    /// timers' ticks leave them (`VirtualInterrupts::poll`: a periodic one's next deadline, a
    /// one-shot's gone).
    Timers(Timers),
    /// The interrupt waiting for the guest to take it.
    PendingInterrupt(Option<u8>),
    /// Halt the physical CPU until one of the guest's timers is due and its tick interrupts
    /// the guest: its interrupt pending, or requested at the device the timer goes through
    /// (`Domain::timer_ticks`).
    HaltUntilInterrupt,
    /// V_IRQ and the VINTR intercept (APM vol. 2, 15.21.4): `Some(vector)` asks the CPU to
    /// exit when the guest can take an interrupt, `None` withdraws the request.
    InterruptWindow(Option<u8>),
    // ---- The vCPU's bookkeeping -----------------------------------------------------------
    /// The innermost delivered event's handler will never run (its delivery faulted), or
    /// has returned.
    PopInFlight,
    /// The RIP of an INT n about to be injected (RIP moved past it), to put back if its
    /// delivery faults; `None` forgets it.
    SoftwareInterruptRip(Option<u64>),
    /// Let the next IRET run without an exit (`exit/iret.rs`); the intercept is back on at
    /// the next exit.
    SuspendIretIntercept,
    /// The NMI line is raised: the NMI is delivered as soon as no NMI handler runs (an NMI
    /// asked for by `raise_event` while one does).
    RequestNmi,
    /// Single-step the IRET at RIP (RFLAGS.TF set by the hypervisor) so that the CPU exits
    /// right after it, where a waiting NMI can go in ([`crate::domain::vcpu::Vcpu::nmi_window`]).
    OpenNmiWindow,
    /// The step's #DB came: the window is over, DR6 is the guest's again.
    CloseNmiWindow,
    // ---- The machine under the hypervisor ------------------------------------------------
    /// Take the hypervisor's own pending timer interrupt (`exit/intr.rs`).
    AcknowledgeHostTimer,
    /// Start the hypervisor's timer if it is off (the guest's timer needs it).
    StartHostTimer,
    /// Start the hypervisor's timer if it is off, and run it at least this often (up to
    /// `machine::TIMER_MAX_HZ`): a guest's timer at this rate (`set_timer`).
    QuickenHostTimer(u32),
    /// INVLPGA: drop the TLB entry of `address` in the guest's address space.
    InvalidatePage {
        address: u64,
        asid: u32,
    },
    /// XSETBV on the physical CPU (the guest's XCR0 stays loaded while it runs).
    Xcr0(u64),
    /// From now on every MOV to CR3 exits: the domain pins page tables, and tables it did not
    /// pin could map the pinned ones writable, so `exit/cr.rs` loads only a pinned root. (A
    /// CR0 write that changes more than TS and MP, and every CR4 write, exit in every domain:
    /// `cr.rs` also keeps a pinning domain's WP and PG set.)
    InterceptCr3Writes,
    // ---- Other domains: event channels, grants, the store, the scheduler ------------------
    /// Write a hypercall's output (a port, a handle, a status) at guest-virtual `address`
    /// (the handler checked it translates).
    GuestWrite {
        address: u64,
        bytes: Vec<u8>,
    },
    /// Port `port` of domain `domain` (this one, or the other end of a channel) becomes
    /// `state`.
    PortState {
        domain: u16,
        port: Port,
        state: PortState,
    },
    /// The guest-physical page of the domain's shared-info page.
    SharedInfo(u64),
    /// How the domain takes its upcall.
    Callback(Callback),
    /// Make `port` of domain `to` pending (`from_port`: the sending port, 0 for a virtual
    /// interrupt), and wake `to` if it waits for it: the `notify` event.
    Notify {
        to: u16,
        port: Port,
        from_port: Port,
    },
    /// Clear `port`'s mask bit; an event pending there is owed its upcall now.
    Unmask(Port),
    /// The domain watches the store's node `path`: each write of it makes the domain's store
    /// port pending (`store_watch_event`; the port is bound by a `PortState` before it).
    StoreWatch {
        path: String,
    },
    /// Set or clear `evtchn_upcall_mask` in the shared-info page.
    UpcallMask(bool),
    /// Entry `gref` of the domain's own grant table.
    GrantEntry {
        gref: GrantRef,
        entry: GrantEntryV1,
    },
    /// Map grant `gref` of domain `granter` at guest-physical `host_addr`, known by
    /// `handle`: the `grant_map` event. Should the host have no memory left for the nested
    /// page table it needs, the mapping fails as Xen's does (`GNTST_general_error` at
    /// `status_at`, the guest's status field) and the mapper lives on.
    MapGrant {
        granter: u16,
        gref: GrantRef,
        host_addr: u64,
        readonly: bool,
        handle: u32,
        status_at: u64,
    },
    /// Unmap the grant mapped as `handle`: the `grant_unmap` event.
    UnmapGrant(u32),
    /// Set a node of the store; a domain waiting for it wakes.
    StoreWrite {
        path: String,
        value: String,
    },
    /// The vCPU waits for `Wait`; the scheduler runs another (`schedule.rs`).
    Block(Wait),
    /// The vCPU lets the other runnable ones go first.
    Yield,
}

/// The MSRs the VMCB keeps for the guest (AMD APM vol. 2, appendix B, state save area).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VmcbMsr {
    SysenterCs,
    SysenterEsp,
    SysenterEip,
    Pat,
    Star,
    Lstar,
    Cstar,
    Sfmask,
    FsBase,
    GsBase,
    KernelGsBase,
}

impl VmcbMsr {
    /// The change's name in the `emulate` event.
    pub fn name(self) -> &'static str {
        match self {
            VmcbMsr::SysenterCs => "sysenter_cs",
            VmcbMsr::SysenterEsp => "sysenter_esp",
            VmcbMsr::SysenterEip => "sysenter_eip",
            VmcbMsr::Pat => "pat",
            VmcbMsr::Star => "star",
            VmcbMsr::Lstar => "lstar",
            VmcbMsr::Cstar => "cstar",
            VmcbMsr::Sfmask => "sfmask",
            VmcbMsr::FsBase => "fs_base",
            VmcbMsr::GsBase => "gs_base",
            VmcbMsr::KernelGsBase => "kernel_gs_base",
        }
    }
}

/// An I/O port access.
#[derive(Debug, Clone, PartialEq)]
pub enum PortAccess {
    /// IN: `size` bytes from `port` into AL, AX or EAX.
    In { port: u16, size: u8 },
    /// OUT `value` (`size` bytes) to `port`.
    Out { port: u16, size: u8, value: u32 },
    /// INS: one element from `port` to each of these places, in order.
    InString {
        port: u16,
        size: u8,
        to: Vec<StringElement>,
    },
    /// OUTS: the element at each of these places to `port`, in order.
    OutString {
        port: u16,
        size: u8,
        from: Vec<StringElement>,
    },
}

/// Where one element of INS or OUTS is, as the guest's CPU reaches it (the handler has
/// checked the address as the CPU checks it: canonical, translated, allowed at its CPL; the
/// segment's limit is not checked).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StringElement {
    /// In the guest's RAM, at this guest-virtual address.
    Ram(u64),
    /// Not RAM: at guest-physical `gpa` on the device bus (an MMIO window, or nothing:
    /// reads all ones, writes go nowhere), where the CPU would have gone too, through
    /// guest-virtual `address` (whose walk sets accessed and dirty bits as for RAM).
    Device { address: u64, gpa: u64 },
}

/// The elements of a string instruction that moves memory (not a port), some of them on
/// the device bus, each `size` bytes, in the order the CPU would move them: each read from
/// its first side and written to its second. The registers it steps (RSI, RDI, RCX) are
/// effects of their own.
#[derive(Debug, Clone, PartialEq)]
pub struct MemoryString {
    pub size: u8,
    pub elements: Vec<(StringSide, StringSide)>,
}

/// One side of an element of MOVS, STOS or LODS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StringSide {
    /// A place in memory (MOVS's both sides, STOS's destination, LODS's source).
    Memory(StringElement),
    /// AL, AX, EAX or RAX: STOS's source, LODS's destination.
    Accumulator,
}

/// An MMIO access, emulated because the CPU exited before it happened: `access` (decoded
/// from the instruction, `emulate.rs`) at guest-physical `gpa`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MmioAccess {
    pub gpa: u64,
    pub access: Access,
}

/// An event for the guest.
#[derive(Debug, Clone, PartialEq)]
pub enum Delivery {
    /// Put it in EVENTINJ: the CPU delivers it through the guest's IDT at the next VMRUN
    /// (AMD APM vol. 2, 15.20). `handler`: the IDT gate's target, if the gate is present.
    Inject {
        event: svm::Event,
        handler: Option<u64>,
        synthetic: bool,
    },
    /// The hypervisor delivers it itself (`delivery.rs`): the frame is written on the
    /// guest's stack and the guest continues in the handler.
    Bounce(Bounce),
}

/// A bounce, worked out in full by `delivery.rs`.
#[derive(Debug, Clone, PartialEq)]
pub struct Bounce {
    pub vector: u8,
    /// An exception, or the guest's own INT n (whose frame has no error code).
    pub kind: svm::EventType,
    pub error_code: Option<u32>,
    pub handler: u64,
    /// Where the frame goes (the handler's RSP), and its words from the lowest address up.
    pub frame: u64,
    pub words: Vec<u64>,
    /// RFLAGS in the handler.
    pub rflags: u64,
    pub synthetic: bool,
}

/// A handler returns: what the `return` event says.
#[derive(Debug, Clone, PartialEq)]
pub struct Returning {
    pub via: ReturnPath,
    /// The event whose handler returns, when the hypervisor delivered it.
    pub event: Option<(u8, svm::EventType)>,
    pub rip: u64,
    pub cs: u16,
    pub rflags: u64,
    pub rsp: u64,
}

/// What an emulation did, in a student's words (the `emulate` event).
///
/// Text made with `format!` costs more than all the rest of a CPUID exit (about 1,400
/// instructions, counted by single-stepping one traced exit in QEMU's own gdb stub), and it
/// is the same words at every trap but for a few numbers. So a handler on a hot path
/// gives a [`Words::Template`]: a fixed text whose `{}` stand for values it lists. The
/// hypervisor never formats it: the ring carries the template by number and the values
/// as numbers, and the host writes the line (`traplab_abi::event::render`).
#[derive(Clone)]
pub enum Words {
    /// Written already (a fixed text, or one formatted by a handler off the hot path).
    Ready(Cow<'static, str>),
    /// A template and the values of its `{}`, in order.
    Template(&'static str, Arguments),
}

impl Words {
    /// `template`'s `{}` filled with `arguments`, by whoever reads them.
    pub fn template<const N: usize>(template: &'static str, arguments: [Argument; N]) -> Words {
        Words::Template(template, Arguments::new(arguments))
    }

    /// The `emulate` event's `what` and `arguments`: a template stays a template.
    pub fn into_parts(self) -> (Cow<'static, str>, Arguments) {
        match self {
            Words::Ready(text) => (text, Arguments::default()),
            Words::Template(template, arguments) => (Cow::Borrowed(template), arguments),
        }
    }

    /// The text (formatted here: for tests, and for a line that must be one string).
    pub fn render(&self) -> Cow<'static, str> {
        match self {
            Words::Ready(text) => text.clone(),
            Words::Template(template, arguments) => {
                Cow::Owned(event::render(template, arguments.iter()))
            }
        }
    }
}

impl From<&'static str> for Words {
    fn from(text: &'static str) -> Words {
        Words::Ready(Cow::Borrowed(text))
    }
}

impl From<String> for Words {
    fn from(text: String) -> Words {
        Words::Ready(Cow::Owned(text))
    }
}

impl From<Cow<'static, str>> for Words {
    fn from(text: Cow<'static, str>) -> Words {
        Words::Ready(text)
    }
}

/// Two descriptions are equal when they say the same (tests compare decisions).
impl PartialEq for Words {
    fn eq(&self, other: &Words) -> bool {
        self.render() == other.render()
    }
}

impl core::fmt::Debug for Words {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "{:?}", self.render())
    }
}

impl core::fmt::Display for Words {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(&self.render())
    }
}

impl Decision {
    /// A decision with no effects yet (use [`decide!`](crate::decide)).
    #[inline]
    pub fn new(action: Action, why: Cow<'static, str>, at: &'static str) -> Decision {
        // Room for what most handlers list (the registers of a CPUID, RIP): one allocation.
        Decision::made(action, why, at, Vec::with_capacity(6), None)
    }

    /// A decision made in one go, its effects and its words known: for a handler on the
    /// hottest path, which returns it as it makes it. (One made first and then filled in was
    /// copied out whole, about 200 bytes, and its empty words dropped through a call.)
    #[inline(always)]
    pub fn made(
        action: Action,
        why: Cow<'static, str>,
        at: &'static str,
        effects: Vec<Effect>,
        what: Option<Words>,
    ) -> Decision {
        Decision {
            action,
            why,
            at,
            effects,
            what,
            delivery: None,
            returning: None,
            end: None,
        }
    }

    /// Add an effect.
    #[inline]
    pub fn with(mut self, effect: Effect) -> Decision {
        self.effects.push(effect);
        self
    }

    /// Add effects.
    #[inline]
    pub fn with_all(mut self, effects: impl IntoIterator<Item = Effect>) -> Decision {
        self.effects.extend(effects);
        self
    }

    /// Say what the emulation did (the `emulate` event): a text, or [`Words::template`].
    #[inline]
    pub fn describe(mut self, what: impl Into<Words>) -> Decision {
        self.what = Some(what.into());
        self
    }

    #[inline]
    pub fn deliver(mut self, delivery: Delivery) -> Decision {
        self.delivery = Some(Box::new(delivery));
        self
    }

    #[inline]
    pub fn returning(mut self, returning: Returning) -> Decision {
        self.returning = Some(Box::new(returning));
        self
    }

    /// The domain ends after this decision.
    #[inline]
    pub fn ending(mut self, end: DomainEnd) -> Decision {
        self.end = Some(Box::new(end));
        self
    }

    /// The domain is killed, for `reason` (the `domain` event's words).
    #[inline]
    pub fn killing(self, reason: impl Into<String>) -> Decision {
        self.ending(DomainEnd::Killed {
            reason: reason.into(),
        })
    }
}

/// The RIP the guest will have once `effects` are applied (its current one is `current`).
pub fn rip_after(effects: &[Effect], current: u64) -> u64 {
    effects
        .iter()
        .rev()
        .find_map(|effect| match effect {
            Effect::Rip(rip) => Some(*rip),
            _ => None,
        })
        .unwrap_or(current)
}

/// The RFLAGS the guest will have once `effects` are applied (its current one is `current`).
pub fn rflags_after(effects: &[Effect], current: u64) -> u64 {
    let resume_flag = RFlags::RESUME_FLAG.bits();
    effects.iter().fold(current, |rflags, effect| match effect {
        Effect::Rflags(value) => *value,
        Effect::ClearResumeFlag => rflags & !resume_flag,
        Effect::SetResumeFlag => rflags | resume_flag,
        _ => rflags,
    })
}

/// `decide!(Action::Emulate, "why, with {} formatting", args)`: a [`Decision`] with its
/// reason and the file and line of the hypervisor source that made it.
#[macro_export]
macro_rules! decide {
    ($action:expr, $($why:tt)+) => {
        $crate::decision::Decision::new(
            $action,
            $crate::decision::reason(format_args!($($why)+)),
            $crate::here!(),
        )
    };
}

/// The source location of the macro call, as the trace shows it: `hv/src/exit/cr.rs:42`.
/// (The prefix comes from the build script: cargo names the file relative to the
/// workspace, which is `hv/` for the hypervisor and the repository for its host tests.)
#[macro_export]
macro_rules! here {
    () => {
        concat!(env!("TRAPLAB_HV_SOURCE_PREFIX"), file!(), ":", line!())
    };
}

/// A reason's text: borrowed when it has no arguments, formatted otherwise.
pub fn reason(why: core::fmt::Arguments) -> Cow<'static, str> {
    match why.as_str() {
        Some(text) => Cow::Borrowed(text),
        None => Cow::Owned(alloc::fmt::format(why)),
    }
}
