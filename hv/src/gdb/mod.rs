//! gdb attaches to a guest: the hypervisor serves the GDB remote protocol for one domain.
//!
//! Like Xen's gdbsx or a KVM VMM's gdb server, the debugger talks to the hypervisor, which
//! owns the guest's state: registers are the VMCB's and the saved context's, memory is read
//! through the guest's page tables and then the nested ones. The protocol itself is the
//! `gdbstub` crate's state machine, fed one byte at a time from COM2 (`serial.rs`), after
//! the framing was checked (`traplab_hv::gdb::wire`: checksums, acknowledgments, packet
//! size); the guest-specific part is `target.rs` (`impl Target for Debuggee`: the domain and
//! what gdb set in it), the registers gdb sees are in `arch.rs`, and the `monitor` commands
//! in `monitor.rs`. The debugger lives outside the domain: the run loop holds a [`Debugger`]
//! (which owns the whole system, because gdbstub's target must own what it debugs and the
//! other domains run in the same loop) and calls it at three places, at the exits of the
//! domain it debugs, and wherever else the hypervisor has control (below).
//!
//! ## One domain, all-stop
//!
//! gdb debugs the domain the host names (`traplab gdb LAB --domain N`, fw_cfg
//! `opt/traplab/gdb`). While gdb holds it stopped, the hypervisor serves gdb and nothing
//! else runs: the other domains stop with it (gdb's "all-stop" mode). When gdb lets it go,
//! every domain keeps its place in the schedule.
//!
//! ## A session, whenever gdb comes
//!
//! gdb may connect at any time, and expects an answer to every packet within its
//! `remotetimeout` (2 s): the hypervisor reads COM2 at every exit of every domain, while it
//! idles, and while the *host* holds it stopped (`traplab run`'s pause, `control.rs`) —
//! not only at the debugged domain's exits. A session starts with gdb's first packet
//! (`qSupported`), and starts stopped, as gdb expects when it attaches: the debugged domain
//! stops before it next runs, every other domain at its next exit. Until gdb first comes,
//! the debugged domain waits at its first instruction (the domains before it run as usual).
//! A session ends when gdb detaches, kills, or — a serial line cannot tell that a socket
//! closed — when the next gdb's `qSupported` arrives; everything gdb set in the guest is
//! taken out then. (traplab relays gdb's port to COM2 and sends the `D` for a gdb that hung
//! up without one: `tracer/src/gdb_relay.rs`.)
//!
//! ## Where the guest stops
//!
//! The run loop (`run.rs`) asks us at three points of the debugged domain's exits:
//!
//! ```text
//!  before_entry ── VMRUN ── #VMEXIT ── at_exit ── decide, apply ── after_handling ─┐
//!   ▲ serve gdb while stopped;         │ gdb's own #DB / int3 / fetch trap?       │
//!   │ arm the step                     │ Ctrl-C? `monitor catch`?                 │
//!   └──────────────────────────────────┴──────────────── a step that is done? ────┘
//! ```
//!
//! and at [`meanwhile`] (another domain's exit, the idle loop) and [`while_host_holds`].
//!
//! - the first instruction: the domain waits for gdb before its first VMRUN;
//! - Ctrl-C: gdb's interrupt byte is seen at the next exit of any domain (the hypervisor's
//!   timer makes sure there is one, even when the guest spins), or while it idles;
//! - `monitor catch CLASS`: at an exit of that class, *before* the hypervisor decides;
//! - breakpoints: an `int3` gdb planted (an SWINT or #BP exit at its address), or a
//!   hardware breakpoint/watchpoint in a debug-register slot gdb owns (a #DB exit), or an
//!   access the hypervisor made in the CPU's place that gdb's watchpoint sees (no #DB:
//!   [`after_handling`]);
//! - a single step (below).
//!
//! ## Single-stepping, and keeping gdb's traps apart from the guest's
//!
//! A step sets RFLAGS.TF for one VMRUN; the #DB it causes is intercepted like every
//! exception, and since the step was gdb's, the hypervisor keeps it: the guest never sees
//! it — unless the guest had set TF itself, or one of its own breakpoints fired with the
//! step: then the #DB is the guest's too, it is delivered, and the step ends in the guest's
//! #DB handler, as a step of any instruction that traps. The TF is ours only while the guest runs — at every exit it is taken out again, before
//! the exit is recorded ([`take_out_step`]), so no event shows it and no exception frame,
//! bounce frame or PUSHF the hypervisor emulates ever contains it.
//! SYSCALL and SYSRET pass RFLAGS through R11 and SYSCALL masks it with SFMASK: over them
//! the step lends its TF to SFMASK or R11 for that VMRUN, so that it stops on the first
//! instruction of the kernel's entry (LSTAR; CSTAR from compatibility mode) or of the user
//! code, and gives it back at the exit
//! (`traplab_hv::gdb::step`): R11 never keeps gdb's TF for SYSRET to hand to user code.
//! When the stepped instruction traps and the hypervisor *injects* an event, the step must
//! end on the handler's first instruction, after the CPU has delivered the event: the
//! hypervisor then sets NX on every guest page in the nested page tables for one VMRUN, and
//! the first instruction fetch after the delivery exits (NPF) — a "fetch trap". An exit
//! the hypervisor emulates (CPUID, OUT, a bounce, …) completes the step by itself.
//! While gdb steps, the guest's maskable interrupts wait (`interrupts::assist`), as QEMU's
//! own gdb stub and KVM hold them: a step goes to the next instruction, not into the handler
//! of a tick that came due meanwhile. Once gdb lets the guest run, one that waited is
//! delivered as soon as the guest can take it (`apply::end_hold_for_step`).
//!
//! gdb's `int3`s are told apart from the guest's own by address; gdb's hardware
//! breakpoints take debug-register slots from DR3 down that the guest has not enabled. When
//! one of gdb's slots fires in the same #DB as a cause of the guest's own (its TF, a slot it
//! enabled), gdb stops, and the guest's #DB is then delivered with the guest's bits alone.

mod arch;
mod monitor;
mod serial;
mod target;

use crate::hardware::Hardware;
use crate::time::{rdtsc, tsc_hz};
use alloc::boxed::Box;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicU16, Ordering};
use gdbstub::common::Signal;
use gdbstub::stub::state_machine::GdbStubStateMachine;
use gdbstub::stub::{DisconnectReason, GdbStubBuilder, SingleThreadStopReason};
use gdbstub::target::ext::breakpoints::WatchKind;
use serial::Com2;
use traplab_abi::control::Break;
use traplab_abi::event::{Action, Body, InstructionBytes};
use traplab_abi::exit::ExitReason;
use traplab_abi::svm;
use traplab_abi::x86::RFlags;
use traplab_hv::decision::Effect;
use traplab_hv::delivery::DR6_SINGLE_STEP;
use traplab_hv::domain::vcpu::dr7_slot_enables;
use traplab_hv::gdb::step::{self, FlagRegisters, Lent, StepExit, SystemCall};
use traplab_hv::gdb::wire::{self, Ended, INTERRUPT, MAX_FRAME, Received, Receiver};
use traplab_hv::{Decision, Domain, DomainEnd, Exit, Guest, System, decide};

pub use monitor::note_decision;

type Machine = GdbStubStateMachine<'static, Debuggee, Com2>;
type StopReason = SingleThreadStopReason<u64>;

/// A packet under way is read to its end before the hypervisor goes on (gdb sends each one
/// whole), unless the line stays quiet this long (1/200 s)…
const QUIET_PER_SECOND: u64 = 200;
/// …and never longer than this in one go (1/50 s): a flood of bytes cannot starve the
/// domains.
const BUDGET_PER_SECOND: u64 = 50;

/// The domain gdb debugs.
static DOMAIN: AtomicU16 = AtomicU16::new(0);

/// Turn the gdb channel on: domain `id` will start stopped, waiting for gdb on COM2.
pub fn enable(id: u16) {
    DOMAIN.store(id, Ordering::Relaxed);
    crate::hardware::debugger_attaches();
    // Without exits, a spinning guest could never be interrupted with Ctrl-C.
    crate::timer::ensure_running();
}

/// Serve gdb? Set at boot from fw_cfg `opt/traplab/gdb` ([`enable`]).
pub fn enabled() -> bool {
    crate::hardware::debugger_attached()
}

/// What gdb asked for when it let the guest go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resume {
    Continue,
    Step,
}

/// An `int3` gdb planted, and the byte it replaced.
#[derive(Debug, Clone, Copy)]
pub struct SoftwareBreakpoint {
    pub address: u64,
    /// Where the `int3` went, guest-physical: it is taken out there, whatever the guest's
    /// page tables map at `address` by then (they may map another page, or none).
    pub gpa: u64,
    pub original: u8,
}

impl SoftwareBreakpoint {
    /// Put the guest's byte back, if gdb's `int3` is still there (the guest may have
    /// written that byte since: then it is the guest's, and stays).
    pub fn take_out(&self, domain: &mut Domain) {
        let mut byte = [0u8; 1];
        if domain.memory.read_physical(self.gpa, &mut byte).is_ok() && byte[0] == target::INT3 {
            let _ = domain.memory.write_physical(self.gpa, &[self.original]);
        }
    }
}

/// A debug-register slot gdb owns: an instruction breakpoint or a watchpoint.
#[derive(Debug, Clone, Copy)]
pub struct HardwareSlot {
    pub address: u64,
    pub length: u64,
    /// `None`: an instruction breakpoint.
    pub watch: Option<WatchKind>,
    /// The range gdb asked to watch, of which this slot watches a piece (`address`,
    /// `length`): a range longer than a slot takes several (`target.rs`).
    pub range: (u64, u64),
}

/// A single step in progress.
#[derive(Debug, Clone, Copy)]
struct SingleStep {
    /// RIP when gdb asked for the step: an exit that moves it has completed the step.
    start_rip: u64,
    /// How the step is armed for the next VMRUN.
    armed: Armed,
}

/// What an instruction does with RFLAGS, where a step's TF is the debugger's: PUSHF saves
/// it in the guest's memory, POPF and IRET load the guest's own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FlagsAccess {
    Neither,
    /// PUSHF: the copy it pushed holds our TF, which the guest must not see (its POPF would
    /// load it and trap).
    Pushes,
    /// POPF, IRET: RFLAGS is what they loaded, the guest's TF among them: ours is gone.
    Loads,
    /// STI: it sets IF. A CPU raises the step's #DB right after it, but QEMU 7.2's TCG holds
    /// the trap back for one more instruction, as only MOV SS and POP SS may (fixed in QEMU
    /// 9.2.4 and 10.0.1, "target/i386: do not block singlestep for STI"): the stop says so.
    SetsInterruptFlag,
    /// SYSCALL or SYSRET in long mode: RFLAGS goes through R11, SYSCALL's through SFMASK
    /// too, and the step's TF with it unless it is lent there (`step.rs`).
    ThroughR11(SystemCall),
}

/// What the instruction at the guest's RIP does with RFLAGS (`Neither` when it cannot be
/// read or decoded: a step over it then works as over any other).
fn flags_access(domain: &Domain) -> FlagsAccess {
    use iced_x86::Mnemonic::*;
    let vmcb = &domain.vcpu.vmcb;
    let mut bytes = [0u8; 15];
    let read = domain.read_virtual_prefix(vmcb.linear_rip(), &mut bytes);
    let long_mode = domain.vcpu.long_mode();
    match traplab_hv::instruction::decode(&bytes[..read], vmcb.code_bits(), vmcb.save.rip)
        .map(|instruction| instruction.mnemonic())
    {
        Some(Pushf | Pushfd | Pushfq) => FlagsAccess::Pushes,
        Some(Popf | Popfd | Popfq | Iret | Iretd | Iretq) => FlagsAccess::Loads,
        Some(Sti) => FlagsAccess::SetsInterruptFlag,
        // Outside long mode SYSCALL keeps TF and SYSRET only sets IF (APM vol. 3, SYSCALL,
        // SYSRET): a step over them is a step over any other instruction.
        Some(Syscall) if long_mode => FlagsAccess::ThroughR11(SystemCall::Syscall),
        Some(Sysret | Sysretq) if long_mode => FlagsAccess::ThroughR11(SystemCall::Sysret),
        _ => FlagsAccess::Neither,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Armed {
    /// Not yet (between an exit and the next VMRUN).
    No,
    /// RFLAGS.TF is ours; `guest_tf` is what the guest had; `flags`: what the stepped
    /// instruction does with RFLAGS, and so with our TF.
    TrapFlag { guest_tf: bool, flags: FlagsAccess },
    /// RFLAGS.TF is ours, and lent to SFMASK or R11 for a SYSCALL or SYSRET (`step.rs`);
    /// `dr6_before`: the guest's DR6 at the VMRUN, to tell the step's BS from one the guest
    /// left there ([`step::completed`]).
    ThroughSystemCall { lent: Lent, dr6_before: u64 },
    /// No instruction fetch allowed anywhere: stop at the first one.
    FetchTrap,
}

/// gdbstub's target: the system, which domain of it gdb debugs, and what gdb has set in
/// that domain.
pub struct Debuggee {
    pub system: System,
    /// The debugged domain's place in `system.domains` (domains are never removed).
    index: usize,
    pub resume: Resume,
    pub software_breakpoints: Vec<SoftwareBreakpoint>,
    /// DR0–DR3: the slots gdb owns.
    pub hardware_slots: [Option<HardwareSlot>; 4],
    /// `monitor catch`: stop at an exit of this class before the hypervisor decides.
    pub catch: Option<Break>,
    /// Stopped at an exit the hypervisor has not decided yet (for `monitor decision`).
    pub before_decision: bool,
    /// The debugged domain's vCPU is the one on the CPU: the CPU's debug registers are its
    /// own (otherwise gdb's slots reach the CPU when it is switched in, `run::switch_in`).
    pub on_cpu: bool,
    step: Option<SingleStep>,
    /// The step as it was armed for the VMRUN that just exited, once [`take_out_step`] took
    /// it out of the guest (for [`at_exit`]).
    disarmed: Option<SingleStep>,
}

/// gdb's hold on one domain: the line from gdb, and the session on it, if there is one.
pub struct Debugger {
    /// The protocol state of the session; `None` until gdb first speaks and after a session
    /// ended (and, briefly, while a call into it is running).
    machine: Option<Machine>,
    /// COM2, read here (a session writes through its own handle).
    port: Com2,
    /// The bytes from gdb, framed and checked.
    wire: Receiver,
    /// The domain has not run yet and waits at its first instruction for gdb's first
    /// session.
    first_stop: bool,
    /// gdb ended the domain while the hypervisor could not end it (the host held it
    /// stopped): the next hook that can, does.
    end: Option<DomainEnd>,
    /// The debugged domain has ended, and how: nothing is left to debug, and a gdb that
    /// comes now is told so ([`answer_after_the_end`]).
    ended: Option<Ended>,
    /// When noise on the line was last reported (TSC).
    noise_reported: u64,
    /// The `qSupported` that started the session, as gdb sent it: what gdb and the stub
    /// agreed on (`multiprocess+`, and with it the form of every thread id), told again to
    /// the state machine that replaces one a bad packet broke ([`refuse_packet`]).
    negotiated: Option<Vec<u8>>,
    target: Debuggee,
}

impl Debuggee {
    /// The domain gdb debugs.
    pub fn domain(&self) -> &Domain {
        &self.system.domains[self.index]
    }

    pub fn domain_mut(&mut self) -> &mut Domain {
        &mut self.system.domains[self.index]
    }
}

impl Debugger {
    pub fn system(&mut self) -> &mut System {
        &mut self.target.system
    }

    /// The id of the domain gdb debugs.
    pub fn domain_id(&self) -> u16 {
        self.target.domain().id
    }

    /// Domain `id`'s vCPU now has the CPU (the run loop loaded its debug registers, gdb's
    /// slots among them: `Vcpu::cpu_breakpoint_address`).
    pub fn switched_to(&mut self, id: u16) {
        self.target.on_cpu = id == self.domain_id();
    }
}

/// The instruction bytes of domain `id`'s exit event `body`, with the bytes gdb's
/// breakpoints replaced put back: the trace shows the guest's code, as gdb's own reads do
/// (`read_addrs`), not gdb's `int3`s, which the TUI would take for the guest changing its
/// code. (The hypervisor's handlers still see the bytes in memory: an `int3` of gdb's at
/// RIP is gdb's stop, `at_exit`.)
#[cold]
#[inline(never)]
pub fn hide_breakpoints(debugger: &Debugger, id: u16, body: &mut Body) {
    let Body::Exit(event) = body else { return };
    if id != debugger.domain_id() || debugger.target.software_breakpoints.is_empty() {
        return;
    }
    let rip = debugger.target.domain().vcpu.vmcb.linear_rip();
    let mut bytes = [0u8; 15];
    let length = event.insn.as_slice().len();
    bytes[..length].copy_from_slice(event.insn.as_slice());
    debugger.target.hide_int3s(rip, &mut bytes[..length]);
    event.insn = InstructionBytes::new(&bytes[..length]);
}

impl Debuggee {
    /// `data`, the guest's memory from `start`, with the bytes gdb's `int3`s replaced put
    /// back: what gdb reads (`read_addrs`) and the trace shows (`hide_breakpoints`).
    fn hide_int3s(&self, start: u64, data: &mut [u8]) {
        for breakpoint in &self.software_breakpoints {
            let offset = breakpoint.address.wrapping_sub(start);
            if let Some(byte) = usize::try_from(offset).ok().and_then(|at| data.get_mut(at)) {
                *byte = breakpoint.original;
            }
        }
    }
}

/// Attach a debugger to the domain gdb was asked for, if gdb is enabled and the system has
/// that domain: the domain will wait at its first instruction until gdb comes. `Err` gives
/// the system back when it runs without one.
pub fn attach(system: Box<System>) -> Result<Box<Debugger>, Box<System>> {
    let id = DOMAIN.load(Ordering::Relaxed);
    if !enabled() {
        return Err(system);
    }
    let Some(index) = system.domains.iter().position(|domain| domain.id == id) else {
        crate::log!("gdb: there is no domain {id} to debug: the guests run without a debugger");
        return Err(system);
    };
    let Some(port) = serial::init() else {
        crate::log!("gdb: no COM2 on this machine: the guests run without a debugger");
        return Err(system);
    };
    crate::log!(
        "gdb: d{id} ({}) waits for gdb on COM2",
        system.domains[index].name
    );
    Ok(Box::new(Debugger {
        machine: None,
        port,
        wire: Receiver::new(),
        first_stop: true,
        end: None,
        ended: None,
        noise_reported: 0,
        negotiated: None,
        target: Debuggee {
            system: *system,
            index,
            resume: Resume::Continue,
            software_breakpoints: Vec::new(),
            hardware_slots: [None; 4],
            catch: None,
            before_decision: false,
            on_cpu: false,
            step: None,
            disarmed: None,
        },
    }))
}

// The eight hooks the run loop calls (`before_entry`, `arm_step`, `take_out_step`, `at_exit`,
// `after_handling`, `meanwhile`, `while_host_holds`, `domain_ended`) are `#[cold]`: they run only with gdb attached, so the
// compiler lays the loop's code for an exit without gdb out together, away from their calls
// (under QEMU's TCG each page of code an exit runs costs a refill of QEMU's TLB after every
// world switch: book/src/speed.md).

/// Before VMRUN: serve gdb while it holds the guest stopped (or, the first time, until it
/// comes). The step gdb asked for is armed apart, last ([`arm_step`]).
#[cold]
pub fn before_entry(debugger: &mut Debugger) -> Option<DomainEnd> {
    if let Some(end) = debugger.end.take() {
        return Some(end);
    }
    if must_wait(debugger)
        && let Some(end) = serve(debugger, must_wait)
    {
        return Some(end);
    }
    None
}

/// After VMRUN, before the exit is recorded (`run::record_exit_event`): take gdb's step (its TF, and what it lent
/// to R11 or SFMASK, or its fetch trap) out of the guest, so that the exit's event shows the
/// guest's own registers, as every later event does.
#[cold]
pub fn take_out_step(debugger: &mut Debugger) {
    debugger.target.disarmed = disarm_step(debugger);
}

/// Right after an exit was recorded, before the hypervisor decides. `Some` when the exit
/// was gdb's own (a step, a breakpoint: the guest never sees it), or when gdb ended the
/// domain: that is the decision then.
#[cold]
pub fn at_exit(debugger: &mut Debugger, exit: &Exit) -> Option<Decision> {
    // Taken out already ([`take_out_step`]), or now.
    let step = match debugger.target.disarmed.take() {
        Some(step) => Some(step),
        None => disarm_step(debugger),
    };
    monitor::note_exit(debugger.target.domain(), exit);
    if let Some(end) = debugger.end.take() {
        return Some(killed(end));
    }

    if let Some((reason, own)) = own_stop(debugger, exit, step) {
        // `monitor traps` shows it while gdb holds the guest; the trace records it when the
        // run loop applies it, after the stop.
        if let OwnStop::Gdbs(decision) = &own {
            monitor::note_own_stop(decision.action, &decision.why, decision.at);
        }
        if let Some(end) = stop(debugger, reason) {
            return Some(killed(end));
        }
        return match own {
            OwnStop::Gdbs(decision) => Some(decision),
            // Decided now that gdb has let go: with what gdb changed at the stop.
            OwnStop::WithTheGuests => with_the_guests_own(debugger, exit, &reason),
        };
    }
    // Ctrl-C from gdb, a new session, any other packet: answer what has arrived. If gdb
    // holds the guest now, it stops here, before the hypervisor decides.
    if let Some(end) = poll(debugger) {
        return Some(killed(end));
    }
    if holds(debugger)
        && let Some(end) = serve(debugger, holds)
    {
        return Some(killed(end));
    }
    if let Some(point) = debugger.target.catch
        && point.matches(&crate::control::exit_facts(debugger.target.domain(), exit))
    {
        debugger.target.before_decision = true;
        let end = stop(debugger, StopReason::Signal(Signal::SIGTRAP));
        debugger.target.before_decision = false;
        if let Some(end) = end {
            return Some(killed(end));
        }
    }
    None
}

/// gdb ended the domain while the guest was stopped at this exit.
fn killed(end: DomainEnd) -> Decision {
    decide!(
        Action::Kill,
        "gdb asked to kill the domain (`kill`): the hypervisor ends it"
    )
    .ending(end)
}

/// After the hypervisor handled an exit and the guest will resume: has a step ended?
#[cold]
pub fn after_handling(debugger: &mut Debugger) -> Option<DomainEnd> {
    if let Some(end) = debugger.end.take() {
        return Some(end);
    }
    // An access the hypervisor made in the CPU's place hit gdb's watchpoint (a REP INS
    // element, a device's register, a pinned page-table entry: `delivery::with_breakpoints`).
    // The CPU never saw it, so no #DB came: gdb stops here, after the instruction, as at the
    // #DB the CPU raises for its own accesses.
    if let Some(slot) = debugger.target.domain_mut().vcpu.debugger_watchpoint.take()
        && let Some(HardwareSlot {
            watch: Some(kind),
            address,
            ..
        }) = debugger.target.hardware_slots[slot as usize]
    {
        return stop(
            debugger,
            StopReason::Watch {
                tid: (),
                kind,
                addr: address,
            },
        );
    }
    let step = debugger.target.step?;
    let vmcb = &debugger.target.domain().vcpu.vmcb;
    // An injected event completes the step at the handler (the fetch trap); an emulated
    // instruction or a bounce moved RIP: the step is done here.
    if !vmcb.injecting() && vmcb.save.rip != step.start_rip {
        debugger.target.step = None;
        return stop(debugger, StopReason::DoneStep);
    }
    None
}

/// The hypervisor has control and the debugged domain is off the CPU: another domain
/// exited, or nothing runs (the idle loop). Answer what gdb sent; if gdb holds its domain
/// stopped (Ctrl-C, a new session), nothing runs until it lets go (all-stop). `Some` when
/// gdb ended its domain: the run loop ends it.
#[cold]
pub fn meanwhile(debugger: &mut Debugger) -> Option<DomainEnd> {
    if let Some(end) = poll(debugger) {
        return Some(end);
    }
    if holds(debugger)
        && let Some(end) = serve(debugger, holds)
    {
        return Some(end);
    }
    debugger.end.take()
}

/// The host holds the hypervisor stopped (`control.rs` calls this while it waits): answer
/// gdb, without waiting for it — the host's hand decides when the hypervisor goes on, gdb's
/// decides when its domain runs after that. A kill is carried out once the host lets go.
#[cold]
pub fn while_host_holds(debugger: &mut Debugger) {
    if let Some(end) = poll(debugger) {
        debugger.end = Some(end);
    }
}

/// The domain ended: tell gdb, and end the session.
#[cold]
pub fn domain_ended(debugger: &mut Debugger, end: &DomainEnd) {
    let (ended, reason) = match end {
        DomainEnd::Exited { status, .. } => (
            Ended::Exited(*status as u8),
            StopReason::Exited(*status as u8),
        ),
        DomainEnd::Killed { .. } => (
            Ended::Terminated(Signal::SIGKILL.0),
            StopReason::Terminated(Signal::SIGKILL),
        ),
    };
    debugger.ended = Some(ended);
    // A `kill` gdb asked for meanwhile is moot now.
    debugger.end = None;
    let Some(machine) = debugger.machine.take() else {
        return;
    };
    if let GdbStubStateMachine::Running(running) = machine {
        let _ = running.report_stop(&mut debugger.target, reason);
    }
}

// ---- Stops ------------------------------------------------------------------------------

/// Was this exit caused by gdb itself: a step's #DB or fetch trap, gdb's `int3`, or a
/// hardware breakpoint in a slot gdb owns? Then the stop to report, and the decision.
fn own_stop(
    debugger: &mut Debugger,
    exit: &Exit,
    step: Option<SingleStep>,
) -> Option<(StopReason, OwnStop)> {
    let target = &debugger.target;
    let save = &target.domain().vcpu.vmcb.save;
    let rip = save.rip;
    match exit.reason {
        ExitReason::Exception { vector: 1, .. } => {
            let dr6 = save.dr6;
            // The step's #DB is gdb's alone only when the guest had no TF of its own (its own
            // single step traps on the same instruction, and its handler must see it) and no
            // breakpoint of the guest's fired with it. Else the #DB is the guest's: it is
            // delivered, and gdb's step ends at the guest's handler (the fetch trap, as any
            // step of an instruction that traps).
            // (A slot counts when the guest enabled it in DR7: QEMU's TCG sets Bn after a step
            // for any execution slot whose DRn is the next RIP, enabled or not.)
            let dr7 = save.dr7;
            let guest_breakpoints = (0..4).any(|slot| {
                dr6 & (1 << slot) != 0
                    && dr7 & dr7_slot_enables(slot) != 0
                    && target.hardware_slots[slot].is_none()
            });
            let gdb_s_step = match step.map(|step| step.armed) {
                Some(Armed::TrapFlag { guest_tf, .. }) => !guest_tf,
                Some(Armed::ThroughSystemCall { lent, .. }) => !lent.guest_traps(),
                _ => false,
            };
            let stepped = dr6 & DR6_SINGLE_STEP != 0 && !guest_breakpoints && gdb_s_step;
            let slot = (0..4)
                .find(|&slot| dr6 & (1 << slot) != 0 && target.hardware_slots[slot].is_some());
            if !stepped && slot.is_none() {
                // The guest's #DB: delivered as it is, but for gdb's step's BS, which the
                // guest never asked for (it had no TF).
                if gdb_s_step {
                    debugger.target.domain_mut().vcpu.vmcb.save.dr6 &= !DR6_SINGLE_STEP;
                }
                return None;
            }
            let owned_bits = DR6_SINGLE_STEP
                | target
                    .hardware_slots
                    .iter()
                    .enumerate()
                    .filter(|(_, s)| s.is_some())
                    .fold(0, |bits, (n, _)| bits | 1 << n);
            let reason = match slot.and_then(|slot| target.hardware_slots[slot]) {
                Some(HardwareSlot {
                    watch: Some(kind),
                    address,
                    ..
                }) => StopReason::Watch {
                    tid: (),
                    kind,
                    addr: address,
                },
                Some(_) => StopReason::HwBreak(()),
                None => StopReason::DoneStep,
            };
            // The guest's own causes came with gdb's slot (its breakpoint on the same
            // instruction, its own TF): gdb stops, and then the guest's #DB is delivered as
            // it would be without gdb, its handler seeing only its own bits in DR6. (BS
            // counts only with the guest's TF set: DR6 is sticky, and a BS its handler left
            // from an older step is no cause of this #DB.)
            let guest_tf = save.rflags & RFlags::TRAP_FLAG.bits() != 0;
            let guest_step = dr6 & DR6_SINGLE_STEP != 0 && !gdb_s_step && guest_tf;
            if slot.is_some() && (guest_breakpoints || guest_step) {
                let gdb_bits =
                    owned_bits & !DR6_SINGLE_STEP | if gdb_s_step { DR6_SINGLE_STEP } else { 0 };
                debugger.target.domain_mut().vcpu.vmcb.save.dr6 = dr6 & !gdb_bits;
                return Some((reason, OwnStop::WithTheGuests));
            }
            // gdb's bits come out of DR6: the guest's #DB handler never sees them.
            let mut decision = decide!(
                Action::Emulate,
                "a #DB caused by gdb ({}): the hypervisor stops the guest for gdb; the guest never sees it",
                describe(&reason)
            )
            .with(Effect::DebugRegister(6, dr6 & !owned_bits));
            if let Some(SingleStep {
                start_rip,
                armed:
                    Armed::TrapFlag {
                        flags: FlagsAccess::SetsInterruptFlag,
                        ..
                    },
            }) = step
                && rip != start_rip.wrapping_add(1)
            {
                decision.why = alloc::format!(
                    "{}; the step ran the STI at {start_rip:#x} and the instruction after it: QEMU's TCG holds the single-step trap after STI back for one instruction (a CPU raises it right after the STI; fixed in QEMU 9.2.4 and 10.0.1)",
                    decision.why
                )
                .into();
            }
            Some((reason, OwnStop::Gdbs(decision)))
        }
        ExitReason::Exception { vector: 3, .. } | ExitReason::SoftwareInterrupt => {
            let is_int3 = exit.reason != ExitReason::SoftwareInterrupt
                || exit.instruction.as_slice().first() == Some(&0xcc);
            if !is_int3
                || !target
                    .software_breakpoints
                    .iter()
                    .any(|breakpoint| breakpoint.address == rip)
            {
                return None;
            }
            let decision = decide!(
                Action::Emulate,
                "the int3 at {rip:#x} is gdb's breakpoint: the hypervisor stops the guest for gdb; the guest never sees it"
            );
            Some((StopReason::SwBreak(()), OwnStop::Gdbs(decision)))
        }
        ExitReason::Npf { info, .. }
            if info.fetch
                && matches!(
                    step,
                    Some(SingleStep {
                        armed: Armed::FetchTrap,
                        ..
                    })
                ) =>
        {
            let decision = decide!(
                Action::Emulate,
                "gdb's step ends here: the event was delivered and the guest is about to run its handler at {rip:#x}"
            );
            Some((StopReason::DoneStep, OwnStop::Gdbs(decision)))
        }
        _ => None,
    }
}

/// What an exit of gdb's own is.
#[allow(
    clippy::large_enum_variant,
    reason = "one per gdb stop, moved once: boxing it would only add an allocation"
)]
enum OwnStop {
    /// gdb's alone: the guest never sees it (this decision says so).
    Gdbs(Decision),
    /// gdb's slot and a cause of the guest's own raised the #DB together: the guest's #DB
    /// goes on after gdb's stop, DR6 holding the guest's bits alone ([`with_the_guests_own`]).
    WithTheGuests,
}

/// A #DB that gdb's slot and the guest's own causes raised together, once gdb has let the
/// guest go: the decision on the guest's #DB (reflected, or bounced to its trap table, as
/// without gdb), its DR6 the guest's bits alone. `None` if the domain is gone.
fn with_the_guests_own(
    debugger: &mut Debugger,
    exit: &Exit,
    reason: &StopReason,
) -> Option<Decision> {
    let id = debugger.domain_id();
    let guest_dr6 = debugger.target.domain().vcpu.vmcb.save.dr6;
    let (domain, others) = debugger.target.system.split(id)?;
    let guest = Guest {
        domain,
        others,
        machine: &Hardware,
    };
    let mut decision = traplab_hv::exit::handle(exit, &guest);
    decision.why = alloc::format!(
        "a #DB caused by gdb ({}) and by the guest itself: the hypervisor stops the guest for gdb, then goes on with the guest's own #DB (DR6 {guest_dr6:#x}, without gdb's bits): {}",
        describe(reason),
        decision.why
    )
    .into();
    Some(decision)
}

fn describe(reason: &StopReason) -> &'static str {
    match reason {
        StopReason::DoneStep => "a single step",
        StopReason::HwBreak(_) => "a hardware breakpoint",
        StopReason::Watch { .. } => "a watchpoint",
        _ => "a stop",
    }
}
/// Report a stop to gdb and serve it until it lets the guest go. `Some` when gdb killed
/// the domain.
fn stop(debugger: &mut Debugger, reason: StopReason) -> Option<DomainEnd> {
    debugger.target.step = None;
    let machine = debugger.machine.take()?;
    let machine = match machine {
        GdbStubStateMachine::Running(running) => running.report_stop(&mut debugger.target, reason),
        other => Ok(other),
    };
    match machine {
        Ok(machine) => debugger.machine = Some(machine),
        Err(error) => return lose_session(debugger, error),
    }
    serve(debugger, holds)
}

// ---- The line ---------------------------------------------------------------------------

/// Take what has arrived from gdb, without waiting for more — except for the rest of a
/// packet under way, which gdb sent whole: its answer goes out now, not an exit later for
/// every FIFO's worth of it (`serial.rs`).
fn poll(debugger: &mut Debugger) -> Option<DomainEnd> {
    let started = rdtsc();
    let mut last_byte = started;
    let quiet = tsc_hz() / QUIET_PER_SECOND;
    let budget = tsc_hz() / BUDGET_PER_SECOND;
    loop {
        let now = rdtsc();
        if now.wrapping_sub(started) > budget {
            break;
        }
        match debugger.port.try_read() {
            Some(byte) => {
                last_byte = now;
                if let Some(end) = receive(debugger, byte) {
                    return Some(end);
                }
            }
            None if debugger.wire.in_packet() && now.wrapping_sub(last_byte) < quiet => {
                core::hint::spin_loop();
            }
            None => break,
        }
    }
    report_noise(debugger, true);
    None
}

/// Answer gdb while `wait` says the guest waits: gdb holds it stopped, or (the first time)
/// it waits for gdb to come. `Some` when gdb killed the domain.
fn serve(debugger: &mut Debugger, wait: fn(&Debugger) -> bool) -> Option<DomainEnd> {
    // The trace up to this stop is in the ring while gdb holds the guest.
    crate::trace::flush();
    crate::control::show_stopped(true);
    let end = loop {
        if let Some(end) = debugger.end.take() {
            break Some(end);
        }
        if !wait(debugger) {
            break None;
        }
        match debugger.port.try_read() {
            Some(byte) => {
                if let Some(end) = receive(debugger, byte) {
                    break Some(end);
                }
            }
            None => {
                report_noise(debugger, true);
                core::hint::spin_loop();
            }
        }
    };
    crate::control::show_stopped(false);
    end
}

/// One byte from gdb, through the framing (`wire.rs`). `Some` when gdb ended the domain.
fn receive(debugger: &mut Debugger, byte: u8) -> Option<DomainEnd> {
    let received = debugger.wire.push(byte)?;
    report_noise(debugger, false);
    match received {
        Received::Packet(frame) => packet(debugger, &frame),
        // gdb got our last packet.
        Received::Ack => None,
        Received::Repeated => {
            crate::log!(
                "gdb: the same packet again before gdb acknowledged our answer (it read a `-` or waited too long for our `+`): acknowledged, not answered twice"
            );
            send(debugger, b"+");
            None
        }
        Received::Nak => {
            match com2(debugger) {
                Some(com2) => com2.resend(),
                // No session: what went last went through the debugger's own handle.
                None => debugger.port.resend(),
            }
            None
        }
        Received::Interrupt if debugger.machine.is_some() => {
            let fed = feed(debugger, INTERRUPT);
            answer_refusal(debugger, fed)
        }
        Received::Interrupt => None,
        Received::BadChecksum {
            length,
            sent,
            computed,
        } => {
            // Packet Acknowledgment: `-` asks gdb to send it again.
            match sent {
                Some(sent) => crate::log!(
                    "gdb: a packet of {length} bytes says checksum {sent:#04x}, its data sum to {computed:#04x}: answered `-` (send it again); the session goes on"
                ),
                None => crate::log!(
                    "gdb: a packet of {length} bytes has no hexadecimal checksum: answered `-` (send it again); the session goes on"
                ),
            }
            send(debugger, b"-");
            None
        }
        Received::Oversized { length } => {
            crate::log!(
                "gdb: dropped a packet of {length} bytes: the stub takes at most {MAX_FRAME} (its qSupported PacketSize); the session goes on"
            );
            None
        }
    }
}

/// A checked packet: it goes to the session — a new one if there is none, or if it is a new
/// gdb's first packet.
fn packet(debugger: &mut Debugger, frame: &[u8]) -> Option<DomainEnd> {
    if let Some(ended) = debugger.ended {
        answer_after_the_end(debugger, frame, ended);
        return None;
    }
    if debugger.machine.is_some() && wire::starts_session(frame) {
        end_session(
            debugger,
            "a new gdb connected (its qSupported came in the middle of a session): the old session is over",
        );
    }
    if debugger.machine.is_none() && !start_session(debugger) {
        return None;
    }
    if wire::unsupported(frame) {
        send(debugger, b"+");
        send(debugger, &wire::framed(b""));
        return None;
    }
    let clamped = wire::clamped(frame);
    for &byte in clamped.as_deref().unwrap_or(frame) {
        match feed(debugger, byte) {
            Fed::Taken => {}
            refused_or_ends => return answer_refusal(debugger, refused_or_ends),
        }
    }
    // What gdb negotiated is what the stub took: a `qSupported` it refused (gdbstub 0.7.10
    // refuses an empty feature, `qSupported:a+;;b+`) negotiated nothing, and replayed into
    // the next state machine it would only be refused again ([`renegotiate`]).
    if wire::starts_session(frame) && debugger.machine.is_some() {
        debugger.negotiated = Some(frame.to_vec());
    }
    None
}

/// A packet after the debugged domain ended: acknowledged, and answered by
/// [`wire::answer_after_the_end`] (gdb's `target remote` then says "The target is not
/// running"). There is no session to start: it would show gdb a domain that is gone.
fn answer_after_the_end(debugger: &mut Debugger, frame: &[u8], ended: Ended) {
    if wire::starts_session(frame) {
        crate::log!(
            "gdb: a gdb connected after d{} ended: told how it ended ({ended:?}); nothing is left to debug",
            debugger.domain_id()
        );
    }
    send(debugger, b"+");
    send(debugger, &wire::answer_after_the_end(frame, ended));
}

/// Bytes to gdb from the stub itself, outside what a session's state machine writes (an
/// acknowledgment, a refusal, the answers after the end), through the debugger's handle.
fn send(debugger: &mut Debugger, bytes: &[u8]) {
    for &byte in bytes {
        let _ = gdbstub::conn::Connection::write(&mut debugger.port, byte);
    }
}

/// Bytes that were no packet, dropped since the last report: say so before the next thing
/// gdb sent, or (`now_and_then`) at most once a second — a flood of noise must not become a
/// flood of log lines.
fn report_noise(debugger: &mut Debugger, now_and_then: bool) {
    let now = rdtsc();
    if now_and_then && now.wrapping_sub(debugger.noise_reported) < tsc_hz() {
        return;
    }
    let noise = debugger.wire.take_noise();
    if noise > 0 {
        debugger.noise_reported = now;
        crate::log!("gdb: ignored {noise} bytes outside any packet");
    }
}

// ---- The session --------------------------------------------------------------------------

/// gdb speaks, and there is no session: start one. It starts stopped, as gdb expects when
/// it attaches.
fn start_session(debugger: &mut Debugger) -> bool {
    let Some(com2) = Com2::handle() else {
        return false;
    };
    let stub = match GdbStubBuilder::new(com2)
        .packet_buffer_size(MAX_FRAME)
        .build()
    {
        Ok(stub) => stub,
        Err(error) => {
            crate::log!("gdb: no session: {error:?}");
            return false;
        }
    };
    match stub.run_state_machine(&mut debugger.target) {
        Ok(machine) => debugger.machine = Some(machine),
        Err(error) => {
            crate::log!("gdb: no session: {error:?}");
            return false;
        }
    }
    debugger.first_stop = false;
    crate::log!(
        "gdb: a new session; d{} stops for gdb",
        debugger.domain_id()
    );
    true
}

/// What one byte fed to the state machine came to.
enum Fed {
    /// Taken: the session goes on, or it was lost (`machine` is `None` then, and the log
    /// says why).
    Taken,
    /// The session asks the domain to end.
    Ends(DomainEnd),
    /// It completed a packet the stub cannot take while gdb holds the guest (`Gzz`,
    /// `Z0,zz,1`, a `qSupported` with an empty feature): the state machine is gone, and
    /// nothing has answered gdb yet — for gdb's packets [`answer_refusal`] does, for a
    /// replay nothing may ([`renegotiate`]). The error, for the log.
    Refused(alloc::string::String),
}

/// A byte's outcome, for a packet gdb sent: a refusal is answered here
/// ([`refuse_packet`]); `Some` when the domain is to end.
fn answer_refusal(debugger: &mut Debugger, fed: Fed) -> Option<DomainEnd> {
    match fed {
        Fed::Taken => None,
        Fed::Ends(end) => Some(end),
        Fed::Refused(error) => refuse_packet(debugger, &error),
    }
}

/// One byte into the state machine.
fn feed(debugger: &mut Debugger, byte: u8) -> Fed {
    let was_holding = holds(debugger);
    let Some(machine) = debugger.machine.take() else {
        return Fed::Taken;
    };
    let target = &mut debugger.target;
    let result = match machine {
        GdbStubStateMachine::Idle(idle) => idle.incoming_data(target, byte),
        GdbStubStateMachine::Running(running) => running.incoming_data(target, byte),
        other => Ok(other),
    };
    let machine = match result {
        Ok(GdbStubStateMachine::CtrlCInterrupt(interrupted)) => {
            interrupted.interrupt_handled(target, Some(StopReason::Signal(Signal::SIGINT)))
        }
        other => other,
    };
    let machine = match machine {
        Ok(GdbStubStateMachine::Disconnected(disconnected)) => {
            let reason = disconnected.get_reason();
            return match reason {
                DisconnectReason::Kill => {
                    // `vKill;pid` wants `OK` (GDB manual, "vKill"), which gdbstub sends only
                    // in extended mode: gdb would wait for it while the other domains run on.
                    // (After a plain `k`, which wants no answer, gdb hangs up and never reads
                    // it.)
                    send(debugger, &wire::framed(b"OK"));
                    end_session(debugger, "gdb killed the domain");
                    Fed::Ends(DomainEnd::Killed {
                        reason: "killed from gdb".into(),
                    })
                }
                _ => {
                    end_session(
                        debugger,
                        "detached; the guest runs on, and gdb may attach again",
                    );
                    Fed::Taken
                }
            };
        }
        Ok(machine) => machine,
        // A packet the stub cannot take while gdb holds the guest (`Gzz`, `Z0,zz,1`): the
        // caller answers it ([`answer_refusal`]), or, replaying, does not ([`renegotiate`]).
        Err(error) if was_holding && !error.is_connection_error() && !error.is_target_error() => {
            return Fed::Refused(alloc::format!("{error:?}"));
        }
        Err(error) => {
            lose_session(debugger, error);
            return Fed::Taken;
        }
    };
    debugger.machine = Some(machine);
    if was_holding && !holds(debugger) {
        let_go(debugger);
    }
    Fed::Taken
}

/// gdb let the guest go: a step starts from here, or none at all. (A step that Ctrl-C
/// stopped before it ended must not turn the next `continue` into a step.) While gdb steps,
/// the guest's interrupts wait (`interrupts::assist`); once it lets the guest run, the run
/// loop asks for the window of one that waited (`apply::end_hold_for_step`).
fn let_go(debugger: &mut Debugger) {
    let stepping = debugger.target.resume == Resume::Step;
    debugger.target.step = stepping.then(|| SingleStep {
        start_rip: debugger.target.domain().vcpu.vmcb.save.rip,
        armed: Armed::No,
    });
    debugger.target.domain_mut().vcpu.interrupts.held_for_step = stepping;
}

/// The session is over (gdb detached or went away, or the protocol broke): take out
/// everything gdb put in the guest, let it run on without a debugger, and wait for the next
/// session.
fn end_session(debugger: &mut Debugger, why: &str) {
    let target = &mut debugger.target;
    let breakpoints = core::mem::take(&mut target.software_breakpoints);
    let slots = core::mem::take(&mut target.hardware_slots);
    debugger.machine = None;
    target.catch = None;
    target.step = None;
    // Already taken out of the guest (`take_out_step`): nothing of it is left to undo, and a
    // later session must not take this one's step for its own.
    target.disarmed = None;
    target.resume = Resume::Continue;
    target.domain_mut().vcpu.interrupts.held_for_step = false;
    debugger.negotiated = None;
    let on_cpu = target.on_cpu;
    for breakpoint in &breakpoints {
        breakpoint.take_out(target.domain_mut());
    }
    for (slot, owned) in slots.iter().enumerate() {
        if owned.is_some() {
            target::clear_slot(target.domain_mut(), slot, on_cpu);
        }
    }
    crate::log!("gdb: {why}");
}

/// A packet gdbstub could not take while the guest was held: answer `E01` (GDB manual,
/// "Standard Replies": an error) and go on with a new state machine that starts where the
/// old one stood, stopped, and knows what gdb negotiated; nothing gdb set in the guest is
/// taken out, so that gdb's breakpoints stay where gdb believes they are.
fn refuse_packet(debugger: &mut Debugger, error: &str) -> Option<DomainEnd> {
    crate::log!(
        "gdb: a packet the stub cannot take ({error}): answered E01; the guest stays stopped, and what gdb set in it stays"
    );
    // The packet came whole and with a good checksum (`wire.rs` framed it), but gdbstub
    // acknowledges a packet only once it has parsed it: the `+` first (GDB manual, "Packet
    // Acknowledgment"), else gdb takes the E01 for a stale reply and sends the packet again.
    // (A packet gdbstub parsed and then could not take was acknowledged already: a second `+`
    // is skipped by gdb, which reads up to the next `$`.)
    send(debugger, b"+");
    send(debugger, &wire::framed(b"E01"));
    if !start_session(debugger) {
        end_session(debugger, "no new session after a bad packet");
        return None;
    }
    renegotiate(debugger)
}

/// gdbstub's state machine learns what gdb supports (`multiprocess+`) from gdb's
/// `qSupported` alone, and a new one starts knowing nothing: without this, its stop replies
/// would name threads without the process gdb expects (`thread:01` for `thread:p01.01`), and
/// gdb would take them for another process's. The new machine is given gdb's `qSupported`
/// again, its answer muted (gdb has it). Only a `qSupported` the stub took is saved
/// ([`packet`]); should the replay be refused all the same, nothing may answer it (gdb
/// asked nothing, and would take an `E01` for the answer to its next packet): the session
/// is dropped instead, and gdb's next packet starts a new one.
fn renegotiate(debugger: &mut Debugger) -> Option<DomainEnd> {
    let frame = debugger.negotiated.take()?;
    let mute = |debugger: &mut Debugger, muted: bool| {
        if let Some(com2) = com2(debugger) {
            com2.muted = muted;
        }
    };
    mute(debugger, true);
    for &byte in &frame {
        match feed(debugger, byte) {
            Fed::Taken => {}
            // A `qSupported` is no resume, kill or detach; were it one, the end stands.
            Fed::Ends(end) => return Some(end),
            Fed::Refused(error) => {
                end_session(
                    debugger,
                    &alloc::format!(
                        "session dropped: the new state machine refused gdb's qSupported, told again after a bad packet ({error}); the guest runs on, and gdb may attach again"
                    ),
                );
                return None;
            }
        }
    }
    mute(debugger, false);
    if debugger.machine.is_some() {
        debugger.negotiated = Some(frame);
    }
    None
}

/// A protocol error the framing cannot catch (a broken connection, or a bad packet while
/// the guest runs): the hypervisor and the guest live on, the session does not.
fn lose_session<E: core::fmt::Debug>(debugger: &mut Debugger, error: E) -> Option<DomainEnd> {
    end_session(
        debugger,
        &alloc::format!("session dropped: {error:?}; the guest runs on, and gdb may attach again"),
    );
    None
}

// ---- Steps ------------------------------------------------------------------------------

/// Just before VMRUN: a step waits to be armed. An event about to be injected makes it a
/// fetch trap (the step ends in the handler); otherwise TF.
/// Right before VMRUN, once the trap's `resume` is recorded (the TF of gdb's step is gdb's,
/// not the guest's, and no event shows it): arm the step gdb asked for, if any.
#[cold]
pub fn arm_step(debugger: &mut Debugger) {
    let Some(step) = debugger.target.step else {
        return;
    };
    if step.armed != Armed::No {
        return;
    }
    let domain = debugger.target.domain_mut();
    let armed = if domain.vcpu.vmcb.injecting() {
        domain.memory.forbid_fetches(true);
        domain.vcpu.vmcb.control.tlb_control = 1;
        Armed::FetchTrap
    } else {
        match flags_access(domain) {
            FlagsAccess::ThroughR11(instruction) => {
                let mut registers = flag_registers(domain);
                let lent = step::arm(instruction, &mut registers);
                set_flag_registers(domain, registers);
                Armed::ThroughSystemCall {
                    lent,
                    dr6_before: domain.vcpu.vmcb.save.dr6,
                }
            }
            flags => {
                let save = &mut domain.vcpu.vmcb.save;
                let guest_tf = RFlags::from_bits_truncate(save.rflags).contains(RFlags::TRAP_FLAG);
                save.rflags |= RFlags::TRAP_FLAG.bits();
                Armed::TrapFlag { guest_tf, flags }
            }
        }
    };
    debugger.target.step = Some(SingleStep { armed, ..step });
}

/// At an exit: take our TF or fetch trap out of the guest again. Returns the step as it was
/// armed.
fn disarm_step(debugger: &mut Debugger) -> Option<SingleStep> {
    let step = debugger.target.step?;
    debugger.target.step = Some(SingleStep {
        armed: Armed::No,
        ..step
    });
    let domain = debugger.target.domain_mut();
    match step.armed {
        Armed::TrapFlag { guest_tf, flags } => {
            // Did the instruction run? (Else an interrupt or a fault came first.)
            let ran = domain.vcpu.vmcb.save.rip != step.start_rip;
            match flags {
                // POPF or IRET loaded the guest's own TF: ours went with the old RFLAGS.
                FlagsAccess::Loads if ran => {}
                _ if !guest_tf => domain.vcpu.vmcb.save.rflags &= !RFlags::TRAP_FLAG.bits(),
                _ => {}
            }
            if flags == FlagsAccess::Pushes && ran && !guest_tf {
                untrap_pushed_flags(domain);
            }
        }
        Armed::ThroughSystemCall { lent, dr6_before } => {
            let vmcb = &domain.vcpu.vmcb;
            let ran = step::completed(StepExit {
                debug_exception: vmcb.control.exitcode == svm::exitcode::EXCP_BASE + 1,
                dr6_before,
                dr6: vmcb.save.dr6,
                rip_moved: vmcb.save.rip != step.start_rip,
            });
            let mut registers = flag_registers(domain);
            lent.give_back(ran, &mut registers);
            set_flag_registers(domain, registers);
        }
        Armed::FetchTrap => {
            domain.memory.forbid_fetches(false);
            domain.vcpu.vmcb.control.tlb_control = 1;
        }
        Armed::No => {}
    }
    Some(step)
}

/// The registers a step's TF passes through over SYSCALL and SYSRET (`step.rs`).
fn flag_registers(domain: &Domain) -> FlagRegisters {
    let vcpu = &domain.vcpu;
    FlagRegisters {
        rflags: vcpu.vmcb.save.rflags,
        r11: vcpu.context.r11,
        sfmask: vcpu.vmcb.save.sfmask,
    }
}

fn set_flag_registers(domain: &mut Domain, registers: FlagRegisters) {
    let vcpu = &mut domain.vcpu;
    vcpu.vmcb.save.rflags = registers.rflags;
    vcpu.context.r11 = registers.r11;
    vcpu.vmcb.save.sfmask = registers.sfmask;
}

/// A PUSHF gdb stepped saved RFLAGS with gdb's TF at the top of the guest's stack: clear it
/// there, or the guest's POPF would load it and take a #DB it never asked for. (TF is bit 8:
/// in the low two bytes, whatever the operand size.)
fn untrap_pushed_flags(domain: &mut Domain) {
    let vmcb = &domain.vcpu.vmcb;
    let top = vmcb
        .segment_base(traplab_hv::vmcb::segment::SS)
        .wrapping_add(vmcb.save.rsp)
        & vmcb.linear_address_mask();
    let mut low = [0u8; 2];
    if domain.read_virtual(top, &mut low).is_ok() {
        let flags = u16::from_le_bytes(low) & !(RFlags::TRAP_FLAG.bits() as u16);
        let _ = domain.write_virtual(top, &flags.to_le_bytes());
    }
}

// ---- The state machine --------------------------------------------------------------------

/// gdb holds its domain stopped: nothing runs until it lets go.
fn holds(debugger: &Debugger) -> bool {
    matches!(debugger.machine, Some(GdbStubStateMachine::Idle(_)))
}

/// The debugged domain may not run yet: gdb holds it, or it has not run yet and gdb has not
/// come.
fn must_wait(debugger: &Debugger) -> bool {
    holds(debugger) || (debugger.first_stop && debugger.machine.is_none())
}

fn com2(debugger: &mut Debugger) -> Option<&mut Com2> {
    match debugger.machine.as_mut()? {
        GdbStubStateMachine::Idle(inner) => Some(inner.borrow_conn()),
        GdbStubStateMachine::Running(inner) => Some(inner.borrow_conn()),
        GdbStubStateMachine::CtrlCInterrupt(inner) => Some(inner.borrow_conn()),
        GdbStubStateMachine::Disconnected(inner) => Some(inner.borrow_conn()),
    }
}

/// The machine's answers, for what gdb's monitor previews (`monitor.rs`).
fn hardware() -> &'static Hardware {
    &Hardware
}
