//! gdb attaches to a guest: the hypervisor serves the GDB remote protocol for domain 0.
//!
//! Like Xen's gdbsx or a KVM VMM's gdb server, the debugger talks to the hypervisor, which
//! owns the guest's state: registers are the VMCB's and the saved context's, memory is read
//! through the guest's page tables and then the nested ones. The protocol itself is the
//! `gdbstub` crate's state machine, fed one byte at a time from COM2 (`serial.rs`); the
//! guest-specific part is `target.rs` (`impl Target for Domain`), the registers gdb sees are
//! in `arch.rs`, and the `monitor` commands in `monitor.rs`.
//!
//! ## Where the guest stops
//!
//! The run loop (`run.rs`) asks us at three points:
//!
//! ```text
//!  before_entry ── VMRUN ── #VMEXIT ── at_exit ── exit::handle ── after_handling ─┐
//!   ▲ serve gdb while stopped;         │ gdb's own #DB / int3 / fetch trap?       │
//!   │ arm the step                     │ Ctrl-C? `monitor catch`?                 │
//!   └──────────────────────────────────┴──────────────── a step that is done? ────┘
//! ```
//!
//! - the first instruction: the session starts stopped, before the first VMRUN;
//! - Ctrl-C: gdb's interrupt byte is seen at the next exit (the hypervisor's timer makes
//!   sure there is one, even when the guest spins);
//! - `monitor catch CLASS`: at an exit of that class, *before* the hypervisor decides;
//! - breakpoints: an `int3` gdb planted (an SWINT or #BP exit at its address), or a
//!   hardware breakpoint/watchpoint in a debug-register slot gdb owns (a #DB exit);
//! - a single step (below).
//!
//! ## Single-stepping, and keeping gdb's traps apart from the guest's
//!
//! A step sets RFLAGS.TF for one VMRUN; the #DB it causes is intercepted like every
//! exception, and since the step was gdb's, the hypervisor keeps it: the guest never sees
//! it. The TF is ours only while the guest runs — at every exit it is taken out again, so
//! no exception frame, bounce frame or PUSHF the hypervisor emulates ever contains it.
//! When the stepped instruction traps and the hypervisor *injects* an event, the step must
//! end on the handler's first instruction, after the CPU has delivered the event: the
//! hypervisor then sets NX on every guest page in the nested page tables for one VMRUN, and
//! the first instruction fetch after the delivery exits (NPF) — a "fetch trap". An exit
//! the hypervisor emulates (CPUID, OUT, a bounce, …) completes the step by itself.
//!
//! gdb's `int3`s are told apart from the guest's own by address; gdb's hardware
//! breakpoints take debug-register slots from DR3 down that the guest has not enabled.

mod arch;
mod monitor;
mod serial;
mod target;

use crate::decide;
use crate::domain::Domain;
use crate::exit::{DomainEnd, Next};
use alloc::boxed::Box;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, Ordering};
use gdbstub::common::Signal;
use gdbstub::stub::state_machine::GdbStubStateMachine;
use gdbstub::stub::{DisconnectReason, GdbStub, SingleThreadStopReason};
use gdbstub::target::ext::breakpoints::WatchKind;
use serial::Com2;
use traplab_abi::control::Break;
use traplab_abi::event::Action;
use traplab_abi::svm::exitcode;

pub use monitor::note_decision;

type Machine = GdbStubStateMachine<'static, Domain, Com2>;
type StopReason = SingleThreadStopReason<u64>;

/// RFLAGS.TF: trap after the next instruction.
const RFLAGS_TF: u64 = 1 << 8;
/// DR6.BS: the #DB came from single-stepping; B0–B3: from breakpoint slot 0–3.
const DR6_BS: u64 = 1 << 14;
/// NPF EXITINFO1 bit 4: the access was an instruction fetch (APM vol. 2, 15.25.6).
const NPF_FETCH: u64 = 1 << 4;

/// Serve gdb? Set at boot from fw_cfg `opt/traplab/gdb`.
static ENABLED: AtomicBool = AtomicBool::new(false);

/// Turn the gdb channel on: domain 0 will start stopped, waiting for gdb on COM2.
pub fn enable() {
    ENABLED.store(true, Ordering::Relaxed);
    // Without exits, a spinning guest could never be interrupted with Ctrl-C.
    crate::timer::ensure_running();
}

pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
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
    pub original: u8,
}

/// A debug-register slot gdb owns: an instruction breakpoint or a watchpoint.
#[derive(Debug, Clone, Copy)]
pub struct HardwareSlot {
    pub address: u64,
    pub length: u64,
    /// `None`: an instruction breakpoint.
    pub watch: Option<WatchKind>,
}

/// A single step in progress.
#[derive(Debug, Clone, Copy)]
struct Step {
    /// RIP when gdb asked for the step: an exit that moves it has completed the step.
    start_rip: u64,
    /// How the step is armed for the next VMRUN.
    armed: Armed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Armed {
    /// Not yet (between an exit and the next VMRUN).
    No,
    /// RFLAGS.TF is ours; `guest_tf` is what the guest had.
    TrapFlag { guest_tf: bool },
    /// NX on every guest page: stop at the first instruction fetch.
    FetchTrap,
}

/// gdb's hold on one domain: a session, or (after gdb detached, or after a protocol error
/// dropped the session) a channel listening for the next one.
pub struct Debugger {
    /// The protocol state of the session; `None` while detached (and, briefly, while a call
    /// into it is running).
    machine: Option<Machine>,
    /// While detached: the channel, watched for the first byte of a new session.
    listener: Option<Com2>,
    pub resume: Resume,
    pub software_breakpoints: Vec<SoftwareBreakpoint>,
    /// DR0–DR3: the slots gdb owns.
    pub hardware_slots: [Option<HardwareSlot>; 4],
    /// `monitor catch`: stop at an exit of this class before the hypervisor decides.
    pub catch: Option<Break>,
    /// Stopped at an exit the hypervisor has not handled yet (for `monitor decision`).
    pub before_decision: bool,
    step: Option<Step>,
}

/// Attach a debugger to `domain` if gdb is enabled and this is domain 0: the session
/// starts with the guest stopped at its first instruction.
pub fn attach(domain: &mut Domain) {
    if !enabled() || domain.id != 0 {
        return;
    }
    let Some(com2) = Com2::open() else {
        crate::log!("gdb: no COM2 on this machine: the guest runs without a debugger");
        return;
    };
    crate::log!("gdb: domain 0 ({}) waits for gdb on COM2", domain.name);
    domain.debugger = Some(Box::new(Debugger {
        machine: None,
        listener: None,
        resume: Resume::Continue,
        software_breakpoints: Vec::new(),
        hardware_slots: [None; 4],
        catch: None,
        before_decision: false,
        step: None,
    }));
    match GdbStub::new(com2).run_state_machine(domain) {
        Ok(machine) => put_machine(domain, machine),
        Err(_) => domain.debugger = None,
    }
}

/// Before VMRUN: serve gdb while it holds the guest stopped, then arm a step.
pub fn before_entry(domain: &mut Domain) -> Option<DomainEnd> {
    domain.debugger.as_ref()?;
    if is_stopped(domain)
        && let Some(end) = serve(domain)
    {
        return Some(end);
    }
    arm_step(domain);
    None
}

/// Right after an exit was recorded, before the hypervisor handles it. `Some` when the exit
/// was gdb's own (a step, a breakpoint): the guest never sees it.
pub fn at_exit(domain: &mut Domain) -> Option<Next> {
    domain.debugger.as_ref()?;
    let step = disarm_step(domain);
    monitor::note_exit(domain);

    if let Some(reason) = own_stop(domain, step) {
        return Some(stop(domain, reason).unwrap_or(Next::Resume));
    }
    // Ctrl-C from gdb, or a byte of any other packet: feed what has arrived. Detached: a
    // new session starts with its first packet, and stops the guest as gdb attaches.
    reattach(domain);
    if let Some(end) = poll(domain) {
        return Some(Next::End(end));
    }
    let catch = domain.debugger.as_ref().and_then(|debugger| debugger.catch);
    if let Some(point) = catch
        && point.matches(&crate::control::exit_facts(domain))
    {
        domain.debugger.as_mut()?.before_decision = true;
        let end = stop(domain, StopReason::Signal(Signal::SIGTRAP));
        domain.debugger.as_mut()?.before_decision = false;
        if let Some(end) = end {
            return Some(end);
        }
    }
    None
}

/// After the hypervisor handled an exit and the guest will resume: has a step ended?
pub fn after_handling(domain: &mut Domain) -> Option<DomainEnd> {
    let debugger = domain.debugger.as_ref()?;
    let step = debugger.step?;
    let injecting = domain.vmcb.control.eventinj & (1 << 31) != 0;
    // An injected event completes the step at the handler (the fetch trap); an emulated
    // instruction or a bounce moved RIP: the step is done here.
    if !injecting && domain.vmcb.save.rip != step.start_rip {
        if let Some(debugger) = domain.debugger.as_mut() {
            debugger.step = None;
        }
        return match stop(domain, StopReason::DoneStep) {
            Some(Next::End(end)) => Some(end),
            _ => None,
        };
    }
    None
}

/// The domain ended: tell gdb, and end the session.
pub fn domain_ended(domain: &mut Domain, end: &DomainEnd) {
    let Some(machine) = take_machine(domain) else {
        return;
    };
    let reason = match end {
        DomainEnd::Exited { status, .. } => StopReason::Exited(*status as u8),
        DomainEnd::Killed { .. } => StopReason::Terminated(Signal::SIGKILL),
    };
    if let GdbStubStateMachine::Running(running) = machine {
        let _ = running.report_stop(domain, reason);
    }
    domain.debugger = None;
}

// ---- Stops ------------------------------------------------------------------------------

/// Was this exit caused by gdb itself: a step's #DB or fetch trap, gdb's `int3`, or a
/// hardware breakpoint in a slot gdb owns?
fn own_stop(domain: &mut Domain, step: Option<Step>) -> Option<StopReason> {
    let code = domain.vmcb.control.exitcode;
    let rip = domain.vmcb.save.rip;
    let debugger = domain.debugger.as_ref()?;
    if code == exitcode::EXCP_BASE + 1 {
        let dr6 = domain.vmcb.save.dr6;
        let stepped = dr6 & DR6_BS != 0
            && matches!(
                step,
                Some(Step {
                    armed: Armed::TrapFlag { .. },
                    ..
                })
            );
        let slot =
            (0..4).find(|&slot| dr6 & (1 << slot) != 0 && debugger.hardware_slots[slot].is_some());
        if !stepped && slot.is_none() {
            return None;
        }
        let owned_bits = DR6_BS
            | debugger
                .hardware_slots
                .iter()
                .enumerate()
                .filter(|(_, s)| s.is_some())
                .fold(0, |bits, (n, _)| bits | 1 << n);
        domain.vmcb.save.dr6 &= !owned_bits;
        let reason = match slot.and_then(|slot| debugger.hardware_slots[slot]) {
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
        decide!(
            domain,
            Action::Emulate,
            "a #DB caused by gdb ({}): the hypervisor stops the guest for gdb; the guest never sees it",
            describe(&reason)
        );
        return Some(reason);
    }
    let is_int3 = code == exitcode::EXCP_BASE + 3
        || (code == exitcode::SWINT && domain.exit.instruction.as_slice().first() == Some(&0xcc));
    if is_int3
        && debugger
            .software_breakpoints
            .iter()
            .any(|breakpoint| breakpoint.address == rip)
    {
        decide!(
            domain,
            Action::Emulate,
            "the int3 at {rip:#x} is gdb's breakpoint: the hypervisor stops the guest for gdb; the guest never sees it"
        );
        return Some(StopReason::SwBreak(()));
    }
    if code == exitcode::NPF
        && domain.vmcb.control.exitinfo1 & NPF_FETCH != 0
        && matches!(
            step,
            Some(Step {
                armed: Armed::FetchTrap,
                ..
            })
        )
    {
        decide!(
            domain,
            Action::Emulate,
            "gdb's step ends here: the event was delivered and the guest is about to run its handler at {rip:#x}"
        );
        return Some(StopReason::DoneStep);
    }
    None
}

fn describe(reason: &StopReason) -> &'static str {
    match reason {
        StopReason::DoneStep => "a single step",
        StopReason::HwBreak(_) => "a hardware breakpoint",
        StopReason::Watch { .. } => "a watchpoint",
        _ => "a stop",
    }
}

/// Report a stop to gdb and serve it until it lets the guest go. `Some(Next::End)` when gdb
/// killed the domain.
fn stop(domain: &mut Domain, reason: StopReason) -> Option<Next> {
    if let Some(debugger) = domain.debugger.as_mut() {
        debugger.step = None;
    }
    let machine = take_machine(domain)?;
    let machine = match machine {
        GdbStubStateMachine::Running(running) => running.report_stop(domain, reason),
        other => Ok(other),
    };
    match machine {
        Ok(machine) => put_machine(domain, machine),
        Err(error) => return lose_session(domain, error).map(Next::End),
    }
    serve(domain).map(Next::End)
}

/// Pass the bytes that have arrived from gdb to the state machine, without waiting.
fn poll(domain: &mut Domain) -> Option<DomainEnd> {
    while let Some(byte) = com2(domain)?.try_read() {
        if let Some(end) = feed(domain, byte) {
            return Some(end);
        }
        if is_stopped(domain) {
            return serve(domain);
        }
    }
    None
}

/// gdb holds the guest stopped: answer its packets until it resumes, detaches or kills.
fn serve(domain: &mut Domain) -> Option<DomainEnd> {
    crate::control::show_stopped(true);
    let end = loop {
        if !is_stopped(domain) {
            break None;
        }
        let Some(byte) = com2(domain).and_then(Com2::try_read) else {
            core::hint::spin_loop();
            continue;
        };
        if let Some(end) = feed(domain, byte) {
            break Some(end);
        }
    };
    crate::control::show_stopped(false);
    if end.is_none()
        && let Some(debugger) = domain.debugger.as_mut()
        && debugger.resume == Resume::Step
    {
        debugger.step = Some(Step {
            start_rip: domain.vmcb.save.rip,
            armed: Armed::No,
        });
    }
    end
}

/// One byte into the state machine. `Some` when the session asks the domain to end.
fn feed(domain: &mut Domain, byte: u8) -> Option<DomainEnd> {
    let machine = take_machine(domain)?;
    let result = match machine {
        GdbStubStateMachine::Idle(idle) => idle.incoming_data(domain, byte),
        GdbStubStateMachine::Running(running) => running.incoming_data(domain, byte),
        other => Ok(other),
    };
    let machine = match result {
        Ok(machine) => machine,
        Err(error) => return lose_session(domain, error),
    };
    match machine {
        GdbStubStateMachine::CtrlCInterrupt(interrupted) => {
            match interrupted.interrupt_handled(domain, Some(StopReason::Signal(Signal::SIGINT))) {
                Ok(machine) => put_machine(domain, machine),
                Err(error) => return lose_session(domain, error),
            }
            None
        }
        GdbStubStateMachine::Disconnected(disconnected) => {
            let reason = disconnected.get_reason();
            detach(domain);
            match reason {
                DisconnectReason::Kill => Some(DomainEnd::Killed {
                    reason: "killed from gdb".into(),
                }),
                _ => None,
            }
        }
        machine => {
            put_machine(domain, machine);
            None
        }
    }
}

/// gdb left (or the protocol broke): remove everything gdb put in the guest, let the guest
/// run on without a debugger, and listen for the next session.
fn detach(domain: &mut Domain) {
    let Some(debugger) = domain.debugger.as_mut() else {
        return;
    };
    let breakpoints = core::mem::take(&mut debugger.software_breakpoints);
    let slots = core::mem::replace(&mut debugger.hardware_slots, [None; 4]);
    debugger.machine = None;
    debugger.catch = None;
    debugger.step = None;
    debugger.resume = Resume::Continue;
    debugger.listener = Com2::open();
    for breakpoint in &breakpoints {
        let _ = domain.write_virtual(breakpoint.address, &[breakpoint.original]);
    }
    for (slot, owned) in slots.iter().enumerate() {
        if owned.is_some() {
            target::clear_slot(domain, slot);
        }
    }
    crate::log!("gdb: detached; the guest runs on, and gdb may attach again");
}

/// Detached, and gdb speaks again (`+` or `$` starts every session): a new session, which
/// begins with the guest stopped, as gdb expects when it attaches.
fn reattach(domain: &mut Domain) {
    let Some(debugger) = domain.debugger.as_mut() else {
        return;
    };
    let Some(listener) = debugger.listener.as_mut() else {
        return;
    };
    let Some(byte) = listener.try_read() else {
        return;
    };
    if byte != b'$' && byte != b'+' {
        return; // noise between sessions
    }
    let Some(com2) = debugger.listener.take() else {
        return;
    };
    crate::log!("gdb: a new session");
    match GdbStub::new(com2).run_state_machine(domain) {
        Ok(machine) => put_machine(domain, machine),
        Err(error) => {
            lose_session(domain, error);
            return;
        }
    }
    if byte == b'$' {
        let _ = feed(domain, byte);
    }
}

/// A protocol error (a malformed or oversized packet, a broken connection): the hypervisor
/// and the guest live on, the session does not.
fn lose_session<E: core::fmt::Debug>(domain: &mut Domain, error: E) -> Option<DomainEnd> {
    crate::log!("gdb: session dropped: {error:?}");
    detach(domain);
    None
}

// ---- Steps ------------------------------------------------------------------------------

/// Just before VMRUN: a step waits to be armed. An event about to be injected makes it a
/// fetch trap (the step ends in the handler); otherwise TF.
fn arm_step(domain: &mut Domain) {
    let Some(step) = domain.debugger.as_ref().and_then(|debugger| debugger.step) else {
        return;
    };
    if step.armed != Armed::No {
        return;
    }
    let injecting = domain.vmcb.control.eventinj & (1 << 31) != 0;
    let armed = if injecting {
        domain.memory.npt.set_no_execute_everywhere(true);
        domain.vmcb.control.tlb_control = 1;
        Armed::FetchTrap
    } else {
        let guest_tf = domain.vmcb.save.rflags & RFLAGS_TF != 0;
        domain.vmcb.save.rflags |= RFLAGS_TF;
        Armed::TrapFlag { guest_tf }
    };
    if let Some(debugger) = domain.debugger.as_mut() {
        debugger.step = Some(Step { armed, ..step });
    }
}

/// At an exit: take our TF or NX out of the guest again. Returns the step as it was armed.
fn disarm_step(domain: &mut Domain) -> Option<Step> {
    let debugger = domain.debugger.as_mut()?;
    let step = debugger.step?;
    debugger.step = Some(Step {
        armed: Armed::No,
        ..step
    });
    match step.armed {
        Armed::TrapFlag { guest_tf } => {
            if !guest_tf {
                domain.vmcb.save.rflags &= !RFLAGS_TF;
            }
        }
        Armed::FetchTrap => {
            domain.memory.npt.set_no_execute_everywhere(false);
            domain.vmcb.control.tlb_control = 1;
        }
        Armed::No => {}
    }
    Some(step)
}

// ---- The state machine, kept in the domain --------------------------------------------

fn take_machine(domain: &mut Domain) -> Option<Machine> {
    domain.debugger.as_mut()?.machine.take()
}

fn put_machine(domain: &mut Domain, machine: Machine) {
    if let Some(debugger) = domain.debugger.as_mut() {
        debugger.machine = Some(machine);
    }
}

fn is_stopped(domain: &Domain) -> bool {
    domain
        .debugger
        .as_ref()
        .is_some_and(|debugger| matches!(debugger.machine, Some(GdbStubStateMachine::Idle(_))))
}

fn com2(domain: &mut Domain) -> Option<&mut Com2> {
    match domain.debugger.as_mut()?.machine.as_mut()? {
        GdbStubStateMachine::Idle(inner) => Some(inner.borrow_conn()),
        GdbStubStateMachine::Running(inner) => Some(inner.borrow_conn()),
        GdbStubStateMachine::CtrlCInterrupt(inner) => Some(inner.borrow_conn()),
        GdbStubStateMachine::Disconnected(inner) => Some(inner.borrow_conn()),
    }
}
