//! The one place where a decision happens to the guest.
//!
//! A handler only *decides* (`exit/`); here the decision is carried out: the VMCB and the
//! registers are written, guest memory and the devices are touched, the event is injected
//! or bounced. And here the trap's events are recorded, always in the same order:
//!
//! ```text
//!   exit (run.rs) ─► decide ─► console … ─► emulate ─► inject | bounce ─► return ─┐
//!                                                                                 │
//!   resume (run.rs) ◄── inject | emulate (before_resume: the pending interrupt) ◄──┘
//! ```
//!
//! - `decide`: the action, the reason, the source line;
//! - `console`: lines a device access completed (the UART's transmit register, the lab
//!   device's doorbell, the `console_write` hypercall);
//! - `emulate`: what was done and every register it changed (old → new), when the decision
//!   says what it did or the machine reports something (the value a device returned);
//! - `inject` (EVENTINJ: the CPU delivers it) or `bounce` (the hypervisor delivered it);
//! - `return`: a handler returned;
//! - then, before VMRUN, [`before_resume`]: an event whose delivery the exit interrupted is
//!   delivered again, and the guest's pending interrupt is injected (or the CPU is asked
//!   to exit as soon as the guest can take it).
//!
//! Effects are applied in the order the decision lists them. One of them can fail where
//! the handler could not know it would (no host memory left for a page): the domain is then
//! killed, with a second `decide` that says why.

use crate::decision::{
    Bounce, Decision, Delivery, DomainEnd, Effect, MemoryString, MmioAccess, PortAccess, Returning,
    StringElement, StringSide, VmcbMsr, Words,
};
use crate::device::{PlatformTimer, TimerSource, Written, lapic, rtc};
use crate::domain::Domain;
use crate::domain::OthersMut;
use crate::domain::evtchn::PortState;
use crate::domain::grants::Mapping;
use crate::domain::interrupts::{self, Assist, Tick, TimerTarget, VirtualTimer};
use crate::domain::memory::MemoryError;
use crate::domain::page_tables::{PinStep, Pinning};
use crate::domain::vcpu::{IN_FLIGHT_MAX, InFlight};
use crate::domain::vcpu::{InstructionAt, NmiWindow, RunState};
use crate::emulate::{Access, Destination, Operation, sign_extend};
use crate::exit::Exit;
use crate::here;
use crate::machine::Machine;
use crate::schedule::{self, Switch};
use crate::vmcb::{INTERRUPT_SHADOW, cr_write, misc1, v_intr};
use alloc::borrow::Cow;
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use traplab_abi::event::{
    self, Action, Arguments, Body, Change, Console, Decide, Emulate, EventType, GrantMap,
    GrantUnmap, Inject, Notify, Resume, Return,
};
use traplab_abi::evtchn::Port;
use traplab_abi::exit::ExitReason;
use traplab_abi::grant_table::{flags as grant_flags, status};
use traplab_abi::svm;
use traplab_abi::x86::operand_mask;
use traplab_abi::x86::{EferFlags, GPR_NAMES, RFlags, RIP_NAME};

/// What became of a decision, for the run loop.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Applied {
    /// The domain ends.
    pub end: Option<DomainEnd>,
    /// Where guest code continues when it is not at the VMCB's RIP: the handler of an
    /// injected event (the CPU enters it at VMRUN), or the target of an IRET.
    pub resume_at: Option<u64>,
    /// An event waits in EVENTINJ for the next VMRUN.
    pub injected: bool,
    /// The scheduler should switch to another vCPU, and why (`run.rs`).
    pub switch: Option<Switch>,
}

/// Carry out `decision` for `domain` (and, for its effects on them, the other domains and
/// the store), appending its events to `events`. `recording`: a trace records them; when
/// none does, the `emulate` event, which only the trace reads, is not written at all. The
/// `emulate`'s changes are noted in `spare_changes`'s room, which [`recycle`] gives back once
/// the events are recorded.
pub fn apply(
    domain: &mut Domain,
    others: &mut OthersMut,
    mut decision: Decision,
    machine: &mut dyn Machine,
    events: &mut Vec<Body>,
    spare_changes: &mut Vec<Change>,
    recording: bool,
) -> Applied {
    // The decision's parts are taken out where they are used, each when it is: moved out
    // all at once, its words (a hundred bytes or so) were copied at every trap, traced or
    // not, and twice.
    let effects = core::mem::take(&mut decision.effects);
    // Untraced (`traplab bench`'s middle run) nobody reads the events of a decision.
    if recording {
        events.push(Body::Decide(Decide {
            action: decision.action,
            why: core::mem::take(&mut decision.why),
            at: Cow::Borrowed(decision.at),
        }));
    }

    let mut applied = Applied::default();
    // Room for a CPUID's registers and RIP at once (growing it costs allocations), kept from
    // the trap before (`recycle`): a new buffer was an allocation and a free at every traced
    // trap, calls whose returns QEMU's TCG looks up again after every world switch.
    let mut changes = core::mem::take(spare_changes);
    if recording {
        changes.reserve(6);
    }
    let mut reports = Vec::new();
    let mut step = Step {
        domain: &mut *domain,
        others: &mut *others,
        machine: &mut *machine,
        changes: &mut changes,
        reports: &mut reports,
        events: &mut *events,
        switch: &mut applied.switch,
        recording,
    };
    if let Err(failure) = effects
        .into_iter()
        .try_for_each(|effect| step.effect(effect))
    {
        return failed(failure, events);
    }

    let what = match (&mut decision.what, reports.is_empty()) {
        _ if !recording => None,
        // A template goes as it is: the host fills it in (`Words`).
        (what @ Some(_), true) => what.take().map(Words::into_parts),
        (Some(what), false) => Some((
            Cow::Owned(format!("{what}: {}", joined(&reports))),
            Arguments::default(),
        )),
        (None, false) => Some((Cow::Owned(joined(&reports)), Arguments::default())),
        (None, true) => None,
    };
    if let Some((what, arguments)) = what {
        events.push(Body::Emulate(Emulate {
            what,
            arguments,
            changes,
        }));
    } else {
        // No `emulate` took the buffer (an untraced trap, a decision that says nothing): it
        // goes back as it came, for the next trap.
        changes.clear();
        *spare_changes = changes;
    }

    match decision.delivery.take().map(|delivery| *delivery) {
        Some(Delivery::Inject {
            event,
            handler,
            synthetic,
        }) => {
            inject(domain, event, handler, synthetic, events);
            applied.injected = true;
            applied.resume_at = handler;
        }
        Some(Delivery::Bounce(bounce)) => {
            if let Err(failure) = bounce_to(domain, &bounce, events) {
                return failed(failure, events);
            }
        }
        None => {}
    }

    if let Some(returning) = decision.returning.as_deref() {
        if returning.via == event::ReturnPath::Iret {
            applied.resume_at = Some(returning.rip);
        }
        events.push(Body::Return(return_event(returning)));
    }
    applied.end = decision.end.take().map(|end| *end);
    applied
}

/// Before VMRUN, after the exit's decision: an interrupted delivery is made again, and
/// the guest's pending interrupt goes in if the guest can take it (`domain/interrupts.rs`).
pub fn before_resume(
    domain: &mut Domain,
    exit: &Exit,
    applied: &mut Applied,
    events: &mut Vec<Body>,
) {
    // An exit can interrupt the delivery of an event (EXITINTINFO valid: an NPF while the
    // CPU pushed an exception frame, say). Unless the handler decided what to deliver (the
    // exception handlers do), the event must be delivered again (AMD APM vol. 2, 15.7.2).
    let handled = matches!(
        exit.reason,
        ExitReason::Exception { .. } | ExitReason::SoftwareInterrupt
    );
    if let Some(interrupted) = exit.interrupted
        && !handled
        && !applied.injected
    {
        // Its first delivery never reached the handler: the event stays in flight once.
        let first = InFlight {
            vector: interrupted.vector,
            kind: interrupted.kind,
        };
        if domain.vcpu.in_flight.last() == Some(&first) {
            domain.vcpu.in_flight.pop();
        }
        let handler = domain.idt_handler(interrupted.vector);
        inject(domain, interrupted, handler, false, events);
        applied.injected = true;
        applied.resume_at = handler.or(applied.resume_at);
    }

    // An NMI the local APIC was asked for (an NMI IPI to itself) goes before any maskable
    // interrupt: RFLAGS.IF does not hold it back; an NMI handler that has not yet run IRET
    // does (`Vcpu::nmi_blocked`), and so does an interrupt shadow (after MOV SS or STI, as
    // Xen's and KVM's SVM code block it). Not while an IRET the hypervisor lets through is
    // about to run either: the handler entered first would return through that IRET's
    // suspended intercept, unseen. It waits for the next exit.
    // Nor while a `pin_page_table` goes on (its VMMCALL runs again for the next piece): the
    // walk is one instruction, and no handler of the guest's may change its tables halfway
    // through it (`interrupts::assist` holds a maskable interrupt there too).
    let pinning = domain
        .pv
        .pinning
        .as_ref()
        .is_some_and(|pinning| pinning.rip == domain.vcpu.vmcb.save.rip);
    if domain.devices.lapic.nmi_requested
        && !domain.vcpu.nmi_blocked
        && domain.vcpu.vmcb.control.interrupt_shadow & INTERRUPT_SHADOW == 0
        && !domain.vcpu.iret_intercept_suspended
        && !pinning
        && !applied.injected
        && !domain.vcpu.vmcb.injecting()
    {
        domain.devices.lapic.nmi_requested = false;
        let event = svm::Event {
            vector: 2,
            kind: EventType::Nmi,
            error_code: None,
        };
        let handler = domain.idt_handler(2);
        inject(domain, event, handler, false, events);
        applied.injected = true;
        applied.resume_at = handler.or(applied.resume_at);
    }

    match interrupts::assist(domain) {
        Assist::Nothing => {}
        Assist::Inject(vector) => {
            // Asked for a VINTR exit earlier, but another exit (HLT, say) came first.
            let control = &mut domain.vcpu.vmcb.control;
            control.virtual_interrupt = interrupts::window_request(control.virtual_interrupt, None);
            control.intercept_misc1 &= !misc1::VINTR;
            // The timer's interrupt is taken; an upcall stays owed until the guest clears
            // `evtchn_upcall_pending` (`domain/evtchn.rs`); the local APIC's is in service
            // until the guest's EOI.
            if domain.devices.lapic.next_to_deliver() == Some(vector) {
                domain.devices.lapic.delivered(vector);
            } else if domain.vcpu.interrupts.pending == Some(vector) {
                domain.vcpu.interrupts.pending = None;
            } else if domain.devices.pic.presented() == Some(vector) {
                // The CPU's INTA: the PIC's request becomes in service until EOI.
                domain.devices.pic.acknowledge();
            }
            let event = svm::Event {
                vector,
                kind: EventType::Interrupt,
                error_code: None,
            };
            let handler = domain.idt_handler(vector);
            inject(domain, event, handler, false, events);
            applied.injected = true;
            applied.resume_at = handler.or(applied.resume_at);
            domain.vcpu.interrupts.waiting_for_gdb = false;
        }
        Assist::RequestWindow { vector, why } => events.push(window_changed(
            domain,
            Some(vector),
            format!(
                "interrupt {vector:#x} is pending but {why}: V_IRQ set and VINTR intercepted, so the CPU exits when the guest can take it"
            ),
        )),
        Assist::HeldForStep(vector) => {
            // A window asked for earlier (IF was 0) would bring a VINTR exit before the
            // stepped instruction, at every step: withdrawn until gdb lets the guest run.
            domain.vcpu.interrupts.waiting_for_gdb = true;
            events.push(window_changed(
                domain,
                None,
                format!(
                    "interrupt {vector:#x} is pending but gdb is single-stepping the guest: it waits until gdb lets the guest run, so that the step goes to the next instruction (QEMU's gdb stub and KVM hold interrupts during a step too)"
                ),
            ));
        }
    }
}

/// gdb let a vCPU run (`continue`, or a detach) after an interrupt waited for it: for its
/// steps, at this vCPU's last resume ([`Assist::HeldForStep`]), or below the task priority
/// gdb lowered ([`task_priority_from_debugger`]). The interrupt asks for its window, so that
/// the CPU exits (VINTR) as soon as the guest can take it and it is injected there, as any
/// other that waited. Called by the run loop before VMRUN while gdb is attached; the event
/// that says so, when there was one to ask for.
pub fn end_hold_for_step(domain: &mut Domain) -> Option<Body> {
    let interrupts = &mut domain.vcpu.interrupts;
    if interrupts.held_for_step || !core::mem::take(&mut interrupts.waiting_for_gdb) {
        return None;
    }
    let vector = match interrupts::assist(domain) {
        Assist::Inject(vector) | Assist::RequestWindow { vector, .. } => vector,
        Assist::Nothing | Assist::HeldForStep(_) => return None,
    };
    Some(window_changed(
        domain,
        Some(vector),
        format!(
            "gdb lets the guest run: interrupt {vector:#x}, held while gdb stepped or below the task priority gdb lowered, asks for its window (V_IRQ set, VINTR intercepted): the CPU exits as soon as the guest can take it"
        ),
    ))
}

/// gdb wrote CR8 (`set $cr8`) while the vCPU is stopped: the task priority goes into V_TPR
/// and the local APIC's TPR, as the guest's own MOV CR8 puts it (`Effect::TaskPriority`). An
/// interrupt the old priority held back may get through now: a CPU delivers it as soon as
/// the priority lets it (Intel SDM vol. 3A, 11.8.3.1 "Task and Processor Priorities"), not at
/// the guest's next exit, so it asks for its window before the guest runs again
/// ([`end_hold_for_step`]). A vCPU halted or blocked meanwhile (gdb stopped it in the idle
/// loop) wakes when the new priority lets an interrupt of the local APIC's through that the
/// old one held back, as a halted CPU does, and as a key's interrupt wakes it (`run.rs`).
pub fn task_priority_from_debugger(domain: &mut Domain, priority: u8) {
    let control = &mut domain.vcpu.vmcb.control;
    if control.virtual_interrupt & v_intr::TPR == u64::from(priority) {
        return;
    }
    control.virtual_interrupt = (control.virtual_interrupt & !v_intr::TPR) | u64::from(priority);
    let held_back = domain.devices.lapic.next_to_deliver().is_none();
    domain.devices.lapic.tpr = priority << 4;
    domain.vcpu.interrupts.waiting_for_gdb = true;
    let released = held_back && domain.devices.lapic.next_to_deliver().is_some();
    if released
        && let RunState::Blocked(wait) = &domain.vcpu.run_state
        && schedule::woken_by_interrupt(wait)
    {
        domain.vcpu.run_state = RunState::Runnable;
    }
}

/// Ask the CPU for a VINTR exit with `vector` as soon as the guest can take it, or withdraw
/// the request (`None`), and the `emulate` that says so (`what`) and shows the change, if any.
fn window_changed(domain: &mut Domain, vector: Option<u8>, what: String) -> Body {
    let mut changes = Vec::new();
    set_interrupt_window(domain, vector, &mut changes);
    Body::Emulate(Emulate {
        what: Cow::Owned(what),
        arguments: Arguments::default(),
        changes,
    })
}

/// Once a trap's events are recorded: they go, and the buffer their `emulate` noted its
/// changes in comes back, empty, for [`apply`] to note the next trap's in. Of several (a
/// key typed, an interrupt window asked for), the one with the most room.
///
/// The events are emptied where they are (moving one, a few hundred bytes, is a copy of its
/// own) and then forgotten. Dropped as `Body`s, each went through the drop code of every kind
/// of event, out of line: under QEMU's TCG a call into it and the returns from it were three
/// blocks looked up a traced trap (book chapter "What a trap costs"). Inlined into the run
/// loop for the same reason: a call of its own is two blocks more.
#[inline(always)]
pub fn recycle(events: &mut Vec<Body>, spare_changes: &mut Vec<Change>) {
    for body in events.iter_mut() {
        empty(body, spare_changes);
    }
    spare_changes.clear();
    // SAFETY: shortening a vector only forgets its elements; `empty` left none that owns
    // memory, so nothing leaks.
    unsafe { events.set_len(0) };
}

/// Let go of what a recorded event owns, each part as its own type, so that it can be
/// forgotten ([`recycle`]); an `emulate`'s buffer of changes goes to `spare_changes` if it
/// has more room. Inlined into [`recycle`], itself inlined into the run loop.
#[inline(always)]
fn empty(body: &mut Body, spare_changes: &mut Vec<Change>) {
    // Every field named: one that owns memory, added to these kinds, must be let go of here,
    // and the compiler says so.
    match body {
        Body::Decide(Decide { action: _, why, at }) => {
            event::release(why);
            event::release(at);
        }
        Body::Emulate(Emulate {
            what,
            arguments,
            changes,
        }) => {
            event::release(what);
            arguments.release_texts();
            if changes.capacity() > spare_changes.capacity() {
                core::mem::swap(spare_changes, changes);
            }
            if changes.capacity() != 0 {
                free_changes(core::mem::take(changes));
            }
        }
        // Only numbers: nothing to let go of.
        Body::Resume(Resume {
            rip: _,
            rflags: _,
            regs: _,
            cycles: _,
        }) => {}
        // Any other kind (an injection, a return, a notification…): dropped whole through
        // `Body`'s drop code, and in its place a `lost` of nothing, which owns no memory.
        other => *other = Body::Lost(event::Lost { count: 0 }),
    }
}

/// A buffer of changes [`empty`] has no use for, let go of apart: it is rare, and its drop
/// code inlined sat among the run loop's code of every trap.
#[cold]
#[inline(never)]
fn free_changes(changes: Vec<Change>) {
    drop(changes);
}

/// Keys the host typed for this domain's COM1 (`traplab run`): into its receiver before the
/// guest resumes, where they may raise IRQ 4; the trace says what came and what it did.
pub fn keys_from_host(domain: &mut Domain, machine: &mut dyn Machine, events: &mut Vec<Body>) {
    // Without a terminal forwarding keys (`traplab trace`, `bench`) none can come: this
    // runs at every exit, so it asks nothing more.
    if !machine.keyboard() {
        return;
    }
    let keys = machine.take_keys(domain.id);
    if keys.is_empty() {
        return;
    }
    let mut what = format!(
        "the host typed {:?} on COM1: into its receiver",
        String::from_utf8_lossy(&keys)
    );
    if let Some(line) = domain.devices.serial_input(&keys) {
        what.push_str("; ");
        what.push_str(&line);
    }
    events.push(words_only(what));
}

/// An `emulate` that only says `what` the hypervisor did: no register of the guest's
/// changed (keys typed, ticks off an exit, what a domain's end did to the others).
fn words_only(what: String) -> Body {
    Body::Emulate(Emulate {
        what: Cow::Owned(what),
        arguments: Arguments::default(),
        changes: Vec::new(),
    })
}

/// `domain`'s timers due at `now` tick while no exit of its own is being handled: while it is
/// blocked (a tick may wake it: Xen's `vcpu_unblock`), or as it is switched in. Each tick is
/// in the trace as at an exit (`tick_due_timers`), and an `emulate` that begins with `when`
/// says what the ticks did. The caller records `events` after the running trap's, as it does
/// what keys typed for a switched-out domain did (`tracer/SCHEMA.md`). Whether a tick woke
/// it, and the port of the one that did (`Some(None)`: an interrupt).
pub fn timer_ticks_off_an_exit(
    domain: &mut Domain,
    now: u64,
    when: &str,
    events: &mut Vec<Body>,
) -> Option<Option<Port>> {
    let (words, woke) = tick_due_timers(domain, now, events);
    if !words.is_empty() {
        events.push(words_only(format!("{when}: {}", words.join("; "))));
    }
    woke
}

/// `domain`'s timers due at `now` tick ([`Domain::timer_ticks`]); a blocked vCPU a tick wakes
/// is runnable again ([`schedule::woken_by_timer`]). A tick that is an event on the port bound
/// to VIRQ_TIMER is a `notify` in `events`, from port 0, the hypervisor's own (every port made
/// pending is in the trace), as at the hypervisor's timer interrupt (`exit/intr.rs`). What
/// each tick did, in words, and the port of the tick that woke the vCPU, if one did
/// (`Some(None)`: an interrupt).
fn tick_due_timers(
    domain: &mut Domain,
    now: u64,
    events: &mut Vec<Body>,
) -> (Vec<String>, Option<Option<Port>>) {
    let mut woke = None;
    let mut words = Vec::new();
    for tick in domain.timer_ticks(now) {
        let wakes = match &domain.vcpu.run_state {
            RunState::Blocked(wait) => schedule::woken_by_timer(wait, domain, &tick),
            _ => false,
        };
        if wakes {
            domain.vcpu.run_state = RunState::Runnable;
        }
        let port = match tick {
            Tick::Event { port, pending } => {
                events.push(Body::Notify(Notify {
                    to: domain.id,
                    port,
                    from_port: 0,
                    woke: wakes,
                    masked: pending.masked || domain.upcalls_masked(),
                }));
                Some(port)
            }
            _ => None,
        };
        if wakes {
            woke = woke.or(Some(port));
        }
        words.extend(tick.words());
    }
    (words, woke)
}

/// An effect the handler could not foresee failing: the domain ends.
struct Failure {
    why: String,
    reason: String,
    at: &'static str,
}

/// How many bytes of an `emulate` event the devices' words may take. A ring record holds
/// 8 KiB (`traplab_abi::ring::MAX_RECORD`), and a string instruction moves up to 4,096
/// elements an exit (`exit/ioio.rs`): thousands of device accesses, a line each, would not
/// fit, and the whole event would be lost.
const REPORTS_BUDGET: usize = 4096;

/// The devices' words for the `emulate` event: all of them, or as many as fit in
/// [`REPORTS_BUDGET`] and how many more there were, said, not dropped silently.
fn joined(reports: &[String]) -> String {
    let mut text = String::new();
    for (index, report) in reports.iter().enumerate() {
        let separator = if index == 0 { "" } else { ", " };
        if text.len() + separator.len() + report.len() > REPORTS_BUDGET {
            let left = reports.len() - index;
            text.push_str(&format!(
                "{separator}and {left} more, left out of the trace (an event's words stay under {REPORTS_BUDGET} bytes)"
            ));
            break;
        }
        text.push_str(separator);
        text.push_str(report);
    }
    text
}

fn failed(failure: Failure, events: &mut Vec<Body>) -> Applied {
    events.push(Body::Decide(Decide {
        action: Action::Kill,
        why: Cow::Owned(failure.why),
        at: Cow::Borrowed(failure.at),
    }));
    Applied {
        end: Some(DomainEnd::Killed {
            reason: failure.reason,
        }),
        ..Applied::default()
    }
}

/// One effect being applied, with what it records.
struct Step<'a, 'o> {
    domain: &'a mut Domain,
    others: &'a mut OthersMut<'o>,
    machine: &'a mut dyn Machine,
    /// Registers changed so far (old → new), for the `emulate` event.
    changes: &'a mut Vec<Change>,
    /// What the machine said it did (a device's answer), for the `emulate` event.
    reports: &'a mut Vec<String>,
    events: &'a mut Vec<Body>,
    switch: &'a mut Option<Switch>,
    /// Does anybody read the `emulate` event? Without a reader its changes are not noted.
    recording: bool,
}

impl Step<'_, '_> {
    /// Note a register change for the `emulate` event, when one is recorded.
    fn note(&mut self, name: &'static str, old: u64, new: u64) {
        if self.recording {
            record(self.changes, name, old, new);
        }
    }

    fn console(&mut self, line: Option<String>) {
        if let Some(text) = line {
            self.events.push(Body::Console(Console::line(text)));
        }
    }

    /// What a port write did: the console line it completed, and what the device says of it.
    fn port_written(&mut self, written: Written) {
        if !written.what.is_empty() {
            self.reports.push(written.what);
        }
        self.console(written.console);
    }

    /// Apply one effect: a general register and RIP, the effects of the most frequent traps
    /// (a CPUID's five, an I/O port's two), here, in the loop over a decision's effects,
    /// which stays small; the other kinds in [`Step::other_effect`]. (With every kind
    /// inlined the loop spanned three pages of code, and under QEMU's TCG each jump between
    /// two of them is a block looked up again after every world switch.)
    #[inline(always)]
    fn effect(&mut self, effect: Effect) -> Result<(), Failure> {
        match effect {
            Effect::Gpr(number, value) => self.gpr(number, value),
            Effect::Rip(rip) => self.rip(rip),
            other => return self.other_effect(other),
        }
        // Those two own nothing: forgotten, not dropped, which would be a call of the
        // drop code of every kind of effect (a jump table, 90 instructions).
        core::mem::forget(effect);
        Ok(())
    }

    #[inline(always)]
    fn gpr(&mut self, number: u8, value: u64) {
        let vcpu = &mut self.domain.vcpu;
        let old = vcpu.gpr_64(number);
        vcpu.set_gpr(number, value);
        self.note(GPR_NAMES[(number & 15) as usize], old, value);
    }

    fn rflags(&mut self, rflags: u64) {
        let old = core::mem::replace(&mut self.domain.vcpu.vmcb.save.rflags, rflags);
        self.note("rflags", old, rflags);
    }

    /// The guest's CR8, which with V_INTR_MASKING the CPU keeps in the VMCB's V_TPR (AMD
    /// APM vol. 2, 15.21.1).
    fn task_priority(&mut self, priority: u8) {
        let control = &mut self.domain.vcpu.vmcb.control;
        let old = control.virtual_interrupt & v_intr::TPR;
        control.virtual_interrupt = (control.virtual_interrupt & !v_intr::TPR) | priority as u64;
        self.note("cr8", old, priority as u64);
    }

    /// RIP moves on: the instruction after an interrupt shadow (STI, MOV SS) has run.
    #[inline(always)]
    fn rip(&mut self, rip: u64) {
        let vcpu = &mut self.domain.vcpu;
        let old = core::mem::replace(&mut vcpu.vmcb.save.rip, rip);
        vcpu.vmcb.control.interrupt_shadow &= !INTERRUPT_SHADOW;
        self.note(RIP_NAME, old, rip);
    }

    /// [`Step::effect`]'s other kinds (and the two it applies itself, so that every kind
    /// has its one place here too).
    #[inline(never)]
    fn other_effect(&mut self, effect: Effect) -> Result<(), Failure> {
        let vcpu = &mut self.domain.vcpu;
        match effect {
            Effect::Gpr(number, value) => self.gpr(number, value),
            Effect::Rip(rip) => self.rip(rip),
            Effect::Rflags(rflags) => self.rflags(rflags),
            Effect::ClearResumeFlag => {
                let rflags = self.domain.vcpu.vmcb.save.rflags & !RFlags::RESUME_FLAG.bits();
                self.rflags(rflags);
            }
            Effect::SetResumeFlag => {
                let rflags = self.domain.vcpu.vmcb.save.rflags | RFlags::RESUME_FLAG.bits();
                self.rflags(rflags);
            }
            Effect::ControlRegister(number, value) => {
                let save = &mut vcpu.vmcb.save;
                let (name, slot) = match number {
                    0 => ("cr0", &mut save.cr0),
                    2 => ("cr2", &mut save.cr2),
                    3 => ("cr3", &mut save.cr3),
                    _ => ("cr4", &mut save.cr4),
                };
                let old = core::mem::replace(slot, value);
                self.note(name, old, value);
            }
            Effect::Efer(value) => {
                // VMRUN refuses a guest without EFER.SVME (APM vol. 2, 15.5.1): it stays set
                // behind the guest's back, and the guest never sees it.
                let svme = EferFlags::SECURE_VIRTUAL_MACHINE_ENABLE.bits();
                let old = core::mem::replace(&mut vcpu.vmcb.save.efer, value | svme);
                self.note("efer", old & !svme, value & !svme);
            }
            Effect::TaskPriority(priority) => {
                // CR8 is the local APIC's TPR bits 7:4 (Intel SDM vol. 3A, 11.8.6.1): the
                // APIC holds back what CR8 says.
                self.domain.devices.lapic.tpr = priority << 4;
                self.task_priority(priority);
            }
            // The guest's view (`Vcpu::guest_dr7`): in a slot lent to gdb, the CPU keeps gdb's
            // address and bits.
            Effect::DebugRegister(number, value) => {
                let old = match number {
                    0..=3 => {
                        let slot = number as usize;
                        let old = core::mem::replace(&mut vcpu.debug_registers[slot], value);
                        self.machine
                            .load_breakpoint_address(number, vcpu.cpu_breakpoint_address(slot));
                        old
                    }
                    6 => core::mem::replace(&mut vcpu.vmcb.save.dr6, value),
                    _ => {
                        let old = vcpu.guest_dr7();
                        vcpu.set_guest_dr7(value);
                        self.machine.load_dr7(vcpu.vmcb.save.dr7);
                        // GD set or cleared: every DR access exits, or DR7 writes alone again.
                        vcpu.intercept_debug_registers(Some(&*self.machine));
                        old
                    }
                };
                let name = ["dr0", "dr1", "dr2", "dr3", "dr4", "dr5", "dr6", "dr7"];
                self.note(name[(number & 7) as usize], old, value);
            }
            Effect::Msr(msr, value) => {
                let save = &mut vcpu.vmcb.save;
                let slot = match msr {
                    VmcbMsr::SysenterCs => &mut save.sysenter_cs,
                    VmcbMsr::SysenterEsp => &mut save.sysenter_esp,
                    VmcbMsr::SysenterEip => &mut save.sysenter_eip,
                    VmcbMsr::Pat => &mut save.g_pat,
                    VmcbMsr::Star => &mut save.star,
                    VmcbMsr::Lstar => &mut save.lstar,
                    VmcbMsr::Cstar => &mut save.cstar,
                    VmcbMsr::Sfmask => &mut save.sfmask,
                    VmcbMsr::FsBase => &mut save.fs.base,
                    VmcbMsr::GsBase => &mut save.gs.base,
                    VmcbMsr::KernelGsBase => &mut save.kernel_gs_base,
                };
                let old = core::mem::replace(slot, value);
                self.note(msr.name(), old, value);
            }
            Effect::VcpuMsr(msr, value) => {
                let old = vcpu.msrs.insert(msr, value).unwrap_or(0);
                self.note(traplab_abi::msr::name(msr).unwrap_or("msr"), old, value);
            }
            Effect::TscOffset(offset) => {
                let old = core::mem::replace(&mut vcpu.vmcb.control.tsc_offset, offset);
                self.note("tsc_offset", old, offset);
            }
            Effect::FlushTlb => vcpu.vmcb.control.tlb_control = 1,
            Effect::DebuggerWatchpoint(slot) => vcpu.debugger_watchpoint = Some(slot),
            Effect::EndInterruptShadow => vcpu.vmcb.control.interrupt_shadow = 0,
            Effect::BeginInterruptShadow => vcpu.vmcb.control.interrupt_shadow = INTERRUPT_SHADOW,
            Effect::Port(access) => self.port(access)?,
            Effect::Mmio(access) => self.mmio(access),
            Effect::MemoryString(string) => self.memory_string(string)?,
            Effect::LocalApicRequest(vector) => {
                let what = self.domain.devices.local_apic_tick(vector);
                self.reports.push(what);
            }
            Effect::PitTick => {
                let what = self.domain.devices.pit_tick();
                self.reports.push(what);
            }
            Effect::RtcTick(now) => {
                let what = self.domain.rtc_tick(now);
                self.reports.push(what);
            }
            Effect::RtcAccessWaits(at) => self.domain.vcpu.rtc_access_waited_at = Some(at),
            Effect::Console(bytes) => {
                for byte in bytes {
                    let line = self.domain.devices.console.transmit(byte);
                    self.console(line);
                }
            }
            Effect::ConsolePrompt => {
                let text = self.domain.devices.console.prompt();
                self.events.push(Body::Console(Console {
                    text: text.into(),
                    unfinished: true,
                }));
            }
            Effect::PageTableEntry { gpa, level, entry } => {
                let memory = &mut self.domain.memory;
                let old = memory.read_u64_physical(gpa).unwrap_or(0);
                memory
                    .write_physical(gpa, &entry.to_le_bytes())
                    .map_err(|error| Failure {
                        why: format!(
                            "the page-table entry at {gpa:#x} cannot be written ({error:?})"
                        ),
                        reason: format!("cannot write a page-table entry at {gpa:#x}"),
                        at: here!(),
                    })?;
                self.note("page table entry", old, entry);
                // A new lower table it links was pinned by the decision's `PinPageTables`,
                // before: nothing is walked here.
                self.domain.pv.entry_written(level, old, entry);
                // The entry changed: the guest's TLB may hold the old one.
                self.domain.vcpu.vmcb.control.tlb_control = 1;
            }
            Effect::PinPageTables(tables) => self.domain.pv.pin(*tables),
            Effect::PinContinuation(None) => self.domain.pv.pinning = None,
            Effect::PinContinuation(Some(step)) => {
                let PinStep {
                    fresh,
                    root,
                    rip,
                    found,
                    leaves,
                    stack,
                    ..
                } = *step;
                let pinning = self.domain.pv.pinning.get_or_insert_default();
                if fresh {
                    **pinning = Pinning {
                        root,
                        rip,
                        ..Pinning::default()
                    };
                }
                pinning.seen.extend(found.iter().copied());
                pinning.found.extend(found);
                pinning.leaves.extend(leaves);
                pinning.stack = stack;
            }
            Effect::Populate(gpa) => {
                let Some(frame) = self.domain.memory.populate(gpa) else {
                    return Err(Failure {
                        why: format!("no host memory left to give guest-physical {gpa:#x}"),
                        reason: "out of host memory".into(),
                        at: here!(),
                    });
                };
                let pages = self.domain.memory.populated_pages();
                self.reports.push(format!(
                    "mapped guest-physical {gpa:#x} to host frame {frame:#x} ({pages} pages now)"
                ));
            }
            Effect::TrapTable(entries) => self.domain.pv.trap_table = entries,
            Effect::PvMode(on) => self.domain.pv.enabled = on,
            Effect::VirtualInterruptFlag(on) => {
                let old = core::mem::replace(&mut self.domain.pv.virtual_interrupt_flag, on);
                self.note("virtual IF", old as u64, on as u64);
            }
            Effect::Timers(timers) => vcpu.interrupts.timers = timers,
            Effect::PendingInterrupt(vector) => vcpu.interrupts.pending = vector,
            Effect::HaltUntilInterrupt => {
                let mut ticks = 0;
                let mut came = Vec::new();
                // Until the tick the handler decided on (`schedule::halt_ends_at`: the first
                // of a timer of its that can interrupt it), or a key typed for it raises its
                // COM1's interrupt. This domain is the only one that runs or waits
                // (`exit/hlt.rs`): a key for another is for one that has ended or not
                // started, and is dropped, as the idle loop drops it. (It used to end the
                // halt, and the HLT returned with no interrupt to take, which a CPU never
                // does.)
                let waking = schedule::halt_ends_at(self.domain)
                    .filter(|_| self.domain.pending_interrupt().is_none());
                if let Some(due) = waking {
                    loop {
                        ticks += self.machine.halt_until(due);
                        if self.machine.now() >= due {
                            let now = self.machine.now();
                            came.extend(self.timer_ticks(now));
                            break;
                        }
                        keys_from_host(self.domain, self.machine, self.events);
                        self.machine.discard_keys();
                        if self.domain.pending_interrupt().is_some() {
                            break;
                        }
                    }
                }
                let plural = if ticks == 1 { "" } else { "s" };
                self.reports.push(format!(
                    "the hypervisor waited {ticks} tick{plural} of its own timer for the guest's timer"
                ));
                self.reports.extend(came);
            }
            Effect::InterruptWindow(vector) => {
                set_interrupt_window(self.domain, vector, self.changes)
            }
            Effect::PopInFlight => {
                vcpu.in_flight.pop();
            }
            Effect::SoftwareInterruptRip(rip) => vcpu.software_interrupt_rip = rip,
            Effect::SuspendIretIntercept => {
                vcpu.vmcb.control.intercept_misc1 &= !misc1::IRET;
                vcpu.iret_intercept_suspended = true;
                vcpu.iret_not_yet_run = Some(vcpu.vmcb.save.rip);
            }
            Effect::RequestNmi => self.domain.devices.lapic.nmi_requested = true,
            Effect::OpenNmiWindow => {
                let save = &vcpu.vmcb.save;
                vcpu.nmi_window = Some(NmiWindow {
                    iret_at: save.rip,
                    dr6: save.dr6,
                    stepped: false,
                });
                let rflags = save.rflags | RFlags::TRAP_FLAG.bits();
                self.rflags(rflags);
            }
            Effect::CloseNmiWindow => vcpu.nmi_window = None,
            Effect::AcknowledgeHostTimer => {
                let tick = self.machine.acknowledge_timer();
                self.reports.push(format!("timer tick {tick} acknowledged"));
            }
            Effect::StartHostTimer => self.machine.start_timer(),
            Effect::QuickenHostTimer(hz) => {
                self.machine.start_timer();
                self.machine.quicken_timer(hz);
            }
            Effect::InvalidatePage { address, asid } => self.machine.invalidate_page(address, asid),
            Effect::Xcr0(value) => {
                vcpu.xcr0 = value;
                self.machine.set_xcr0(value);
            }
            Effect::InterceptCr3Writes => vcpu.vmcb.control.intercept_cr |= cr_write(3),
            Effect::GuestWrite { address, bytes } => {
                self.domain
                    .cpu_write_virtual(address, &bytes)
                    .map_err(|error| Failure {
                        why: format!(
                            "the hypercall's output at {address:#x} cannot be written ({error:?})"
                        ),
                        reason: format!("cannot write a hypercall's output at {address:#x}"),
                        at: here!(),
                    })?;
            }
            Effect::PortState {
                domain,
                port,
                state,
            } => {
                // A freed port's pending bit goes with it (Xen's evtchn_free), or a port
                // allocated there next would start pending.
                let cleared = self.any_domain(domain).is_some_and(|target| {
                    if let Some(slot) = target.events.ports.get_mut(port as usize) {
                        *slot = state;
                    }
                    state == PortState::Free && target.clear_pending(port)
                });
                if cleared {
                    self.reports.push(format!(
                        "d{domain}'s port {port} was pending: the bit is cleared"
                    ));
                }
            }
            Effect::SharedInfo(page) => {
                let moved = self
                    .domain
                    .move_shared_info(page)
                    .map_err(|error| Failure {
                        why: format!("the shared-info page cannot move to {page:#x} ({error:?})"),
                        reason: format!("cannot move the shared-info page to {page:#x}"),
                        at: here!(),
                    })?;
                if let Some(old) = moved {
                    self.reports.push(format!(
                        "the shared-info page moved from {old:#x} to {page:#x}, its contents with it"
                    ));
                }
            }
            Effect::Callback(callback) => self.domain.events.callback = callback,
            Effect::Notify {
                to,
                port,
                from_port,
            } => self.notify(to, port, from_port),
            Effect::Unmask(port) => {
                if self.domain.unmask(port) {
                    self.reports
                        .push(format!("port {port} was pending: its upcall is owed now"));
                }
            }
            Effect::UpcallMask(masked) => self.domain.set_upcall_mask(masked),
            Effect::GrantEntry { gref, entry } => {
                if let Some(slot) = self.domain.grants.table.get_mut(gref as usize) {
                    *slot = entry;
                }
            }
            Effect::MapGrant {
                granter,
                gref,
                host_addr,
                readonly,
                handle,
                status_at,
            } => self.map_grant(granter, gref, host_addr, readonly, handle, status_at)?,
            Effect::UnmapGrant(handle) => self.unmap_grant(handle),
            Effect::StoreWrite { path, value } => {
                for other in self.others.iter_mut() {
                    if let RunState::Blocked(wait) = &other.vcpu.run_state
                        && schedule::woken_by_store(wait, &path)
                    {
                        other.vcpu.run_state = RunState::Runnable;
                        self.reports
                            .push(format!("{path} written: d{} wakes", other.id));
                    }
                }
                // Each domain that watches the node hears of it on its store port (xenstored's
                // watch event on its event channel): a `notify`, from no port.
                let watchers: Vec<u16> = self.others.store.watchers(&path).collect();
                self.others.store.write(self.domain.id, path, value);
                for watcher in watchers {
                    let port = self
                        .any_domain(watcher)
                        .and_then(|domain| domain.events.store_port());
                    if let Some(port) = port {
                        self.notify(watcher, port, 0);
                    }
                }
            }
            Effect::StoreWatch { path } => self.others.store.watch(self.domain.id, path),
            Effect::Block(wait) => {
                self.domain.vcpu.run_state = RunState::Blocked(wait);
                *self.switch = Some(Switch::Blocked);
            }
            Effect::Yield => *self.switch = Some(Switch::Yielded),
        }
        Ok(())
    }

    /// Domain `id`: this one, or one of the others.
    fn any_domain(&mut self, id: u16) -> Option<&mut Domain> {
        match id == self.domain.id {
            true => Some(&mut *self.domain),
            false => self.others.domain_mut(id),
        }
    }

    /// Make `port` of domain `to` pending, and wake `to` if it waits for that (Xen's
    /// `evtchn_set_pending` and `vcpu_unblock`): the `notify` event.
    fn notify(&mut self, to: u16, port: Port, from_port: Port) {
        let Some(target) = self.any_domain(to) else {
            return;
        };
        let (pending, woke) = schedule::event_arrives(target, port);
        let upcalls_masked = target.upcalls_masked();
        // Another domain woken runs next.
        if woke && to != self.domain.id {
            *self.switch = Some(Switch::Woke {
                to,
                port: Some(port),
            });
        }
        self.events.push(Body::Notify(Notify {
            to,
            port,
            from_port,
            woke,
            masked: pending.masked || upcalls_masked,
        }));
    }

    /// Map grant `gref` of `granter` into this domain at `host_addr` (the handler checked
    /// the entry): the granter's host frame goes into this domain's nested page tables.
    /// With no host memory left for them, the status at `status_at` says so instead.
    fn map_grant(
        &mut self,
        granter: u16,
        gref: u32,
        host_addr: u64,
        readonly: bool,
        handle: u32,
        status_at: u64,
    ) -> Result<(), Failure> {
        let refused = |why: String| Failure {
            reason: format!("grant {gref} of d{granter} cannot be mapped"),
            why,
            at: here!(),
        };
        let Some(owner) = self.granter(granter) else {
            return Err(refused(format!("d{granter} is gone")));
        };
        let frame_gpa = owner
            .grants
            .entry(gref)
            .map_or(0, |entry| (entry.frame as u64) << 12);
        let Some(frame) = owner.memory.host_frame(frame_gpa) else {
            return Err(refused(format!(
                "page {frame_gpa:#x} of d{granter} has no frame"
            )));
        };
        if !self.domain.memory.map_foreign(host_addr, frame, !readonly) {
            // What the handler could not know: the host has no frame left for a nested page
            // table. Xen's map_grant_ref answers a failed create_grant_host_mapping with
            // GNTST_general_error, and the mapper goes on: it is the host's shortage, not
            // the guest's fault. Nothing is mapped, no handle is taken.
            self.domain
                .cpu_write_virtual(status_at, &status::GENERAL_ERROR.to_le_bytes())
                .map_err(|error| {
                    refused(format!(
                        "its status at {status_at:#x} cannot be written ({error:?})"
                    ))
                })?;
            self.reports.push(format!(
                "no host memory left for a nested page table: grant {gref} of d{granter} is not mapped, and its status is GNTST_general_error ({}) instead",
                status::GENERAL_ERROR
            ));
            return Ok(());
        }
        // Xen's `_set_status_v1`: GTF_reading for every mapping, GTF_writing too for a
        // writable one.
        if let Some(owner) = self.granter(granter) {
            let slot = gref as usize;
            owner.grants.mapped[slot] += 1;
            owner.grants.table[slot].flags |= grant_flags::READING;
            if !readonly {
                owner.grants.mapped_writable[slot] += 1;
                owner.grants.table[slot].flags |= grant_flags::WRITING;
            }
        }
        let slot = handle as usize;
        let maptrack = &mut self.domain.grants.maptrack;
        if maptrack.len() <= slot {
            maptrack.resize(slot + 1, None);
        }
        maptrack[slot] = Some(Mapping {
            granter,
            gref,
            host_addr,
            readonly,
        });
        // A page appeared where there was none: no stale translation can exist, but the
        // guest's TLB is flushed all the same, as after any change of its nested tables.
        self.domain.vcpu.vmcb.control.tlb_control = 1;
        self.events.push(Body::GrantMap(GrantMap {
            granter,
            gref,
            frame: frame_gpa,
            host_addr,
            readonly,
            handle,
        }));
        Ok(())
    }

    /// The domain whose grant table a grant mapping counts in: another, or this one (a domain
    /// may map its own grants, as in Xen).
    fn granter(&mut self, id: u16) -> Option<&mut Domain> {
        match id == self.domain.id {
            true => Some(&mut *self.domain),
            false => self.others.domain_mut(id),
        }
    }

    /// Take the grant mapped as `handle` away from this domain again.
    fn unmap_grant(&mut self, handle: u32) {
        let Some(mapping) = self.domain.grants.mapping(handle) else {
            return;
        };
        self.domain.memory.unmap_foreign(mapping.host_addr);
        self.domain.grants.maptrack[handle as usize] = None;
        // The guest's TLB may still hold the translation to the granter's frame.
        self.domain.vcpu.vmcb.control.tlb_control = 1;
        if let Some(owner) = self.granter(mapping.granter) {
            release_grant(owner, mapping);
        }
        self.events.push(Body::GrantUnmap(GrantUnmap {
            granter: mapping.granter,
            gref: mapping.gref,
            host_addr: mapping.host_addr,
            handle,
        }));
    }

    /// An I/O port access, through the device bus.
    fn port(&mut self, access: PortAccess) -> Result<(), Failure> {
        let (PortAccess::In { port, size }
        | PortAccess::Out { port, size, .. }
        | PortAccess::InString { port, size, .. }
        | PortAccess::OutString { port, size, .. }) = &access;
        let (port, size) = (*port, *size);
        if rtc::reaches_registers(port, size) {
            self.rtc_due_first();
            // The access that waited for the RTC's interrupt runs now (the effects before
            // the `Rip` leave RIP at the instruction): the next one may wait again.
            let vcpu = &mut self.domain.vcpu;
            if vcpu.rtc_access_waited_at == Some(InstructionAt::of(vcpu)) {
                vcpu.rtc_access_waited_at = None;
            }
        }
        let devices = &mut self.domain.devices;
        match access {
            PortAccess::In { port, size } => {
                let value = devices.port_read(port, size, &*self.machine);
                self.read_into(Destination::low(0, size), value as u64);
                let what = self.domain.devices.describe_in(port, value);
                self.reports.push(what);
                self.serial_interrupt();
            }
            PortAccess::Out { port, size, value } => {
                self.watching_the_timer(|apply| {
                    let devices = &mut apply.domain.devices;
                    let written = devices.port_write(port, size, value, &*apply.machine);
                    apply.port_written(written);
                });
                self.serial_interrupt();
            }
            PortAccess::InString { port, size, to } => {
                for element in to {
                    let value = self.domain.devices.port_read(port, size, &*self.machine);
                    self.write_element(element, size, value as u64)?;
                }
                self.serial_interrupt();
            }
            PortAccess::OutString { port, size, from } => {
                // (The elements written before one that cannot be read still count.)
                self.watching_the_timer(|apply| {
                    for element in from {
                        let value = apply.read_element(element, size)? as u32;
                        let devices = &mut apply.domain.devices;
                        let written = devices.port_write(port, size, value, &*apply.machine);
                        apply.port_written(written);
                    }
                    Ok(())
                })?;
                self.serial_interrupt();
            }
        }
        Ok(())
    }

    /// Before an access to the RTC's registers: its timer's tick, if it is due and the
    /// hypervisor has not looked yet, came first. (On an MC146818 the flag is set and IRQ 8
    /// rises at the event, and the PIC latches the edge, before a read of status C that
    /// comes after it clears them: that read must not take the flag without its edge.) Here
    /// the guest cannot take that IRQ 8 before the access (interrupts off, say): when it
    /// could, the handler decided that the interrupt comes first and the access waits
    /// (`exit/ioio.rs`, `rtc_interrupt_first`), as a CPU takes it between instructions; a tick
    /// that fell due between the exit and this line is one during the instruction.
    fn rtc_due_first(&mut self) {
        let now = self.machine.now();
        let timer = self.domain.vcpu.interrupts.timers.rtc;
        if timer.is_some_and(|timer| timer.due_tsc <= now) {
            let what = self.domain.rtc_tick(now);
            self.reports.push(format!(
                "the RTC's timer was due before this access: {what}"
            ));
        }
    }

    /// A port access may have moved COM1's interrupt line, or the RTC's (a read of status
    /// C lowers it, an enable may raise it): follow them (`Devices`).
    fn serial_interrupt(&mut self) {
        if let Some(what) = self.domain.devices.follow_serial_interrupt() {
            self.reports.push(what);
        }
        if let Some(what) = self.domain.devices.follow_rtc_interrupt() {
            self.reports.push(what);
        }
    }

    /// An MMIO access, through the device bus: the device sees the reads and writes the
    /// instruction makes, in its order (a read-modify-write is a read, then a write).
    fn mmio(&mut self, MmioAccess { gpa, access }: MmioAccess) {
        match access {
            Access::Read {
                width,
                into,
                signed,
            } => {
                let value = self.device_read(gpa, width);
                let value = if signed {
                    sign_extend(value, width)
                } else {
                    value
                };
                self.read_into(into, value);
            }
            Access::Write { width, value } => self.device_write(gpa, width, value),
            Access::Arithmetic {
                width,
                operation,
                operand,
                into,
            } => {
                let memory = self.device_read(gpa, width);
                // The memory is the left operand when it is the destination, the right one
                // after a register (`sub r, [m]`: r - [m]).
                let (left, right) = match into {
                    None => (memory, operand),
                    Some(_) => (operand, memory),
                };
                let rflags = self.domain.vcpu.vmcb.save.rflags;
                let (result, rflags) = operation.evaluate(left, right, width, rflags);
                self.rflags(rflags);
                match into {
                    _ if !operation.writes_result() => {}
                    None => self.device_write(gpa, width, result),
                    Some(register) => self.read_into(register, result),
                }
            }
            Access::Exchange {
                width,
                register,
                value,
            } => {
                let old = self.device_read(gpa, width);
                self.device_write(gpa, width, value);
                self.read_into(register, old);
            }
            Access::CompareExchange {
                width,
                accumulator,
                source,
            } => {
                let memory = self.device_read(gpa, width);
                // The flags are a CMP of the accumulator with what was read.
                let rflags = self.domain.vcpu.vmcb.save.rflags;
                let (_, rflags) = Operation::Compare.evaluate(accumulator, memory, width, rflags);
                self.rflags(rflags);
                if memory == accumulator {
                    self.device_write(gpa, width, source);
                } else {
                    self.device_write(gpa, width, memory);
                    self.read_into(Destination::low(0, width), memory);
                }
            }
            Access::ExchangeAdd {
                width,
                register,
                value,
            } => {
                let memory = self.device_read(gpa, width);
                let rflags = self.domain.vcpu.vmcb.save.rflags;
                let (sum, rflags) = Operation::Add.evaluate(memory, value, width, rflags);
                self.rflags(rflags);
                self.device_write(gpa, width, sum);
                self.read_into(register, memory);
            }
        }
    }

    /// MOVS, STOS or LODS with a device on one side at least: each element read, then
    /// written, in the CPU's order, RAM through the guest's page tables (the handler checked
    /// each place as the CPU would), the device bus through the devices.
    fn memory_string(
        &mut self,
        MemoryString { size, elements }: MemoryString,
    ) -> Result<(), Failure> {
        for (from, to) in elements {
            let value = match from {
                StringSide::Memory(place) => self.read_element(place, size)?,
                StringSide::Accumulator => self.domain.gpr(0) & operand_mask(size),
            };
            match to {
                StringSide::Memory(place) => self.write_element(place, size, value)?,
                StringSide::Accumulator => self.read_into(Destination::low(0, size), value),
            }
        }
        Ok(())
    }

    /// One element of a string instruction (INS, OUTS, MOVS, STOS, LODS), `size` bytes at
    /// `place`.
    fn read_element(&mut self, place: StringElement, size: u8) -> Result<u64, Failure> {
        match place {
            StringElement::Ram(address) => {
                let mut bytes = [0u8; 8];
                self.domain
                    .cpu_read_virtual(address, &mut bytes[..size as usize])
                    .map_err(|error| unreachable_memory("a string read from", address, error))?;
                Ok(u64::from_le_bytes(bytes))
            }
            StringElement::Device { address, gpa } => {
                self.domain
                    .mark_walked(address, false)
                    .map_err(|error| unreachable_memory("a string read from", address, error))?;
                Ok(self.device_read(gpa, size))
            }
        }
    }

    /// The low `size` bytes of `value` to `place`, one element of a string instruction.
    fn write_element(&mut self, place: StringElement, size: u8, value: u64) -> Result<(), Failure> {
        match place {
            StringElement::Ram(address) => self
                .domain
                .cpu_write_virtual(address, &value.to_le_bytes()[..size as usize])
                .map_err(|error| unreachable_memory("a string write to", address, error)),
            StringElement::Device { address, gpa } => {
                self.domain
                    .mark_walked(address, true)
                    .map_err(|error| unreachable_memory("a string write to", address, error))?;
                self.device_write(gpa, size, value);
                Ok(())
            }
        }
    }

    /// Read `width` bytes of the device at `gpa`, which says what it did.
    fn device_read(&mut self, gpa: u64, width: u8) -> u64 {
        let (value, what) = self.domain.devices.mmio_read(gpa, width, &*self.machine);
        self.reports.push(what);
        value & operand_mask(width)
    }

    /// Write the low `width` bytes of `value` to the device at `gpa`: it says what it did,
    /// may ring the console, and may have changed the guest's timer.
    fn device_write(&mut self, gpa: u64, width: u8, value: u64) {
        self.watching_the_timer(|apply| {
            let devices = &mut apply.domain.devices;
            let written = devices.mmio_write(gpa, width, value, &*apply.machine);
            apply.console(written.console);
            apply.reports.push(written.what);
        });
        // The APIC's TPR and CR8 are one register (CR8 is TPR bits 7:4, Intel SDM vol. 3A,
        // 11.8.6.1): after a write of the TPR, a MOV from CR8 reads the same.
        if lapic::contains(gpa) {
            self.task_priority(self.domain.devices.lapic.tpr >> 4);
        }
    }

    /// Device writes (`write`): when they change what one of the guest's device timers
    /// depends on (`Devices::timer_state`), that timer is worked out again, as at the TSC read
    /// just before them ([`Step::device_timers`]). The one way a port or MMIO write reaches
    /// the devices.
    fn watching_the_timer<T>(&mut self, write: impl FnOnce(&mut Self) -> T) -> T {
        let (before, written_at) = (self.domain.devices.timer_state(), self.machine.now());
        let result = write(self);
        let after = self.domain.devices.timer_state();
        if after != before {
            self.device_timers(
                written_at,
                after.pit != before.pit,
                after.local_apic != before.local_apic,
                after.rtc != before.rtc,
            );
        }
        result
    }

    /// PIT channel 0 and the PIC's IRQ 0 (`pit_changed`), the APIC's timer
    /// (`local_apic_changed`), or the RTC's next event (`rtc_changed`: its rate, enables,
    /// alarm or clock), changed, by a write at TSC `now` (read just before it): that
    /// timer of the guest's is what its device now makes it, and the hypervisor's own timer
    /// runs to notice when it is due. The other timers count on untouched, as on a PC.
    ///
    /// Worked out as at the write, not at the hypervisor's later look at the clock: a
    /// one-shot armed with a count shorter than the hypervisor's own work after the write
    /// (Linux arms the APIC's with counts of a few dozen) has a deadline that passes before
    /// this line runs, and a device asked *then* would say it had fired already. A CPU's
    /// APIC counts to 0 and requests the interrupt; here the timer gets that deadline, past
    /// or not, and its tick comes at the hypervisor's next look.
    fn device_timers(
        &mut self,
        now: u64,
        pit_changed: bool,
        local_apic_changed: bool,
        rtc_changed: bool,
    ) {
        let tsc_hz = self.machine.tsc_hz().max(1);
        // A tick that fell due under a timer being replaced, which the hypervisor has not
        // noticed yet (it looks at its own timer's ticks), happened before this write: it is
        // delivered now, to its device, before the new timer replaces the old. (Else a
        // one-shot whose deadline passed is replaced by the next and never fires: Linux
        // rearms the PIT in its tick handler, with IRQ 0 masked, and unmasks it after.) The
        // write has already reached the device: all writes that change a timer leave what a
        // tick does the same, but for ICW1, which clears the PIC's IRR, and so the PIT's edge
        // from before it.
        let timers = self.domain.vcpu.interrupts.timers;
        let cleared_by_icw1 = timers
            .pit
            .is_some_and(|timer| timer.target == TimerTarget::Irq0 && timer.due_tsc <= now)
            && self.domain.devices.pic.initialising();
        if cleared_by_icw1 {
            // Its deadline passes without a tick: the PIT's timer alone, polled.
            let pit_alone = interrupts::VirtualInterrupts {
                timers: interrupts::Timers {
                    pit: timers.pit,
                    ..interrupts::Timers::default()
                },
                ..interrupts::VirtualInterrupts::default()
            };
            self.domain.vcpu.interrupts.timers.pit = pit_alone.poll(now).1.timers.pit;
            self.reports.push(
                "the PIT's edge due before this write is gone: ICW1 cleared the PIC's IRR".into(),
            );
        }
        for what in self.timer_ticks(now) {
            self.reports.push(format!(
                "the guest's timer was due before this write: {what}"
            ));
        }
        if pit_changed {
            let pit = self.domain.devices.pit_timer(now, tsc_hz);
            let stopped = "PIT channel 0 idle, or IRQ 0 masked with nothing latched";
            self.device_timer(pit, now, tsc_hz, stopped, |timers| &mut timers.pit);
        }
        if local_apic_changed {
            let local_apic = self.domain.devices.local_apic_timer(now, tsc_hz);
            let stopped = "the local APIC's timer stopped, masked or its one shot fired";
            self.device_timer(local_apic, now, tsc_hz, stopped, |timers| {
                &mut timers.local_apic
            });
        }
        if rtc_changed {
            let rtc = self.domain.devices.rtc_timer();
            let stopped = "no periodic, alarm or update-ended interrupt of the RTC's is enabled";
            self.device_timer(rtc, now, tsc_hz, stopped, |timers| &mut timers.rtc);
        }
    }

    /// The domain's timers due at `now` tick, and what each did, in words ([`tick_due_timers`]:
    /// the running domain's, which no tick wakes).
    fn timer_ticks(&mut self, now: u64) -> Vec<String> {
        tick_due_timers(self.domain, now, self.events).0
    }

    /// One device timer, as [`Step::device_timers`] works it out: kept at `slot` of the
    /// guest's timers, and said when it changed (`stopped`: what its stop means).
    fn device_timer(
        &mut self,
        timer: Option<PlatformTimer>,
        now: u64,
        tsc_hz: u64,
        stopped: &str,
        slot: impl Fn(&mut interrupts::Timers) -> &mut Option<VirtualTimer>,
    ) {
        // (A PIT tick the PIC holds in its IRR stays there: masked, or with the ticks gone to
        // the IO-APIC, it is simply not presented, as on a PC.)
        let virtual_timer = timer.map(VirtualTimer::from);
        let old = core::mem::replace(slot(&mut self.domain.vcpu.interrupts.timers), virtual_timer);
        if old == virtual_timer {
            return;
        }
        match timer {
            Some(timer) => {
                self.machine.start_timer();
                let said = self.watch_timer(timer, now, tsc_hz);
                self.reports.push(format!("the guest's timer: {said}"));
            }
            None if old.is_some() => self
                .reports
                .push(format!("the guest's timer stops: {stopped}")),
            None => {}
        }
    }

    /// Make the hypervisor's own timer look as often as `timer` fires, or its ticks would
    /// merge; and say what `timer` is. (Not for an edge latched behind IRQ 0's mask: the
    /// unmask, a write that reprograms the timer, delivers it if it is due by then, and a
    /// host timer quickened for it stayed quick for the rest of a boot. Only a read of IRR or
    /// a poll meanwhile may find it up to a tick of the hypervisor's own timer late.)
    fn watch_timer(&mut self, timer: PlatformTimer, now: u64, tsc_hz: u64) -> String {
        let PlatformTimer {
            vector,
            countdown,
            source,
        } = timer;
        if source != TimerSource::PitMasked {
            // The RTC's timer is a one-shot to its next event, but its events come as often
            // as its fastest enabled source: the periodic rate, else once a second.
            let every = match source {
                TimerSource::Rtc => self.domain.devices.rtc.shortest_interval_nanos(),
                _ => None,
            };
            let interval = every
                .map(|nanos| (nanos as u128 * tsc_hz as u128 / 1_000_000_000) as u64)
                .or(countdown.period_tsc)
                .unwrap_or(countdown.due_tsc.saturating_sub(now))
                .max(1);
            self.machine
                .quicken_timer(tsc_hz.div_ceil(interval).min(u32::MAX as u64) as u32);
        }
        // To the nearest µs: a period computed in TSC ticks is a tick short of a round one.
        let micros =
            |tsc: u64| ((tsc as u128 * 1_000_000 + tsc_hz as u128 / 2) / tsc_hz as u128) as u64;
        let when = match countdown.period_tsc {
            Some(period) => format!("every {} µs", micros(period)),
            None => format!(
                "once, in {} µs",
                micros(countdown.due_tsc.saturating_sub(now))
            ),
        };
        match source {
            TimerSource::LocalApic => {
                format!("the local APIC's timer {when}, at vector {vector:#x}")
            }
            TimerSource::Pit => format!("PIT channel 0 {when}, IRQ 0 at vector {vector:#x}"),
            TimerSource::PitThroughIoApic => format!(
                "PIT channel 0 {when}, through pin 2 of the IO-APIC to the local APIC at vector {vector:#x}"
            ),
            TimerSource::PitMasked => format!(
                "PIT channel 0's next edge, {when}, latched in the PIC's IRR behind IRQ 0's mask (vector {vector:#x} once unmasked)"
            ),
            TimerSource::Rtc => format!(
                "the RTC's next interrupt event ({}), {when}, on IRQ 8 (vector {vector:#x})",
                self.domain.devices.rtc.enabled_events()
            ),
        }
    }

    /// A value read from a device lands in a register, as a MOV or IN writes it.
    fn read_into(&mut self, into: Destination, value: u64) {
        let old = self.domain.vcpu.gpr_64(into.register);
        self.gpr(into.register, into.merge(old, value));
    }
}

/// An INS or OUTS element the handler found in the guest's RAM is not there when applied:
/// the domain cannot go on.
fn unreachable_memory(access: &str, address: u64, error: MemoryError) -> Failure {
    Failure {
        why: format!("{access} {address:#x}, which the guest cannot reach ({error:?})"),
        reason: format!("{access} {address:#x}"),
        at: here!(),
    }
}

/// Domain `id` has ended: the store lists it in `@releaseDomain` (`Store::release`; xenstored
/// fires that watch when the hypervisor's VIRQ_DOM_EXC tells it a domain died). A domain
/// blocked in `store_watch` on the node wakes; each domain that watches it with
/// `store_watch_event` finds its store port pending, and wakes if it polls it. So a
/// toolstack hears that its guest is gone, and a backend that its frontend is, and neither
/// waits for ever. The events that say so, each with the domain it is about: no trap of
/// theirs is under way, and they come after the `domain` event that ends `id`.
pub fn release_domain(id: u16, others: &mut OthersMut) -> Vec<(u16, Body)> {
    let path = others.store.release(id);
    let watchers: Vec<u16> = others.store.watchers(path).collect();
    let mut said = Vec::new();
    for domain in others.iter_mut() {
        let blocked_on_it = matches!(&domain.vcpu.run_state,
            RunState::Blocked(wait) if schedule::woken_by_store(wait, path));
        let mut what = Vec::new();
        if blocked_on_it {
            domain.vcpu.run_state = RunState::Runnable;
            what.push(format!(
                "d{id} has ended: the store lists it in {path}, which d{} waits for in store_watch: it wakes",
                domain.id
            ));
        }
        // Its watch, if it has one, hears of it too: the two are apart.
        let watches = watchers.contains(&domain.id);
        if let Some(port) = domain.events.store_port().filter(|_| watches) {
            let (_, woke) = schedule::event_arrives(domain, port);
            let woken = match woke {
                true => ", and it wakes",
                false => "",
            };
            what.push(format!(
                "d{id} has ended: the store lists it in {path}, which d{} watches: its store port {port} is pending{woken}",
                domain.id
            ));
        }
        said.extend(what.into_iter().map(|what| (domain.id, words_only(what))));
    }
    said
}

/// `domain` has ended: let go of what it held of the others, as Xen's `domain_kill` does.
/// Each of its channels' other ends is unbound again, waiting for it (`evtchn_destroy`
/// closes every port; a send there is dropped, as on any unbound port), and each grant it
/// had mapped is released (`gnttab_release_mappings`), so that the granter may end its
/// access. The events that say so, each in the lane of the domain it changed (after the
/// `domain` event that ends `domain`: no trap of theirs is under way): a backend sees why
/// its port stopped delivering, a frontend why its `end_access` now succeeds.
pub fn release_holds(domain: &mut Domain, others: &mut OthersMut) -> Vec<(u16, Body)> {
    let id = domain.id;
    let mut said = Vec::new();
    let mut say = |other: u16, what: String| said.push((other, words_only(what)));
    for (port, state) in domain.events.ports.iter().enumerate() {
        if let PortState::Interdomain {
            remote,
            remote_port,
        } = *state
            && let Some(peer) = others.domain_mut(remote)
            && let Some(slot) = peer.events.ports.get_mut(remote_port as usize)
        {
            *slot = PortState::Unbound { remote: id };
            say(
                remote,
                format!(
                    "d{id} has ended: its port {port} is closed, so d{remote}'s port {remote_port}, the channel's other end, is unbound again, waiting for d{id} (Xen's evtchn_close): a send on it is dropped"
                ),
            );
        }
    }
    for (handle, slot) in domain.grants.maptrack.iter_mut().enumerate() {
        let Some(mapping) = slot.take() else {
            continue;
        };
        let Some(owner) = others.domain_mut(mapping.granter) else {
            continue;
        };
        release_grant(owner, mapping);
        let left = owner
            .grants
            .mapped
            .get(mapping.gref as usize)
            .copied()
            .unwrap_or(0);
        let now = match left {
            0 => String::from("no domain maps it now: end_access can take it back"),
            1 => String::from("1 mapping of it is left"),
            left => format!("{left} mappings of it are left"),
        };
        say(
            mapping.granter,
            format!(
                "d{id} has ended: its mapping of d{}'s grant {} (handle {handle}) is released (Xen's gnttab_release_mappings): {now}",
                mapping.granter, mapping.gref
            ),
        );
    }
    domain.grants.maptrack.clear();
    said
}

/// One mapping of `owner`'s grant is gone: count it, and clear the entry's in-use flags as
/// Xen's `unmap_common_complete` does: GTF_writing with the last writable mapping,
/// GTF_reading with the last one.
pub fn release_grant(owner: &mut Domain, mapping: Mapping) {
    let slot = mapping.gref as usize;
    let grants = &mut owner.grants;
    let (Some(count), Some(writable)) = (
        grants.mapped.get_mut(slot),
        grants.mapped_writable.get_mut(slot),
    ) else {
        return;
    };
    *count = count.saturating_sub(1);
    if !mapping.readonly {
        *writable = writable.saturating_sub(1);
    }
    if *writable == 0 {
        grants.table[slot].flags &= !grant_flags::WRITING;
    }
    if *count == 0 {
        grants.table[slot].flags &= !grant_flags::READING;
    }
}

/// Note a register change for the `emulate` event (unchanged registers are left out).
fn record(changes: &mut Vec<Change>, name: &'static str, old: u64, new: u64) {
    if old != new {
        changes.push(Change {
            name: Cow::Borrowed(name),
            old,
            new,
        });
    }
}

/// Ask the CPU for a VINTR exit with `vector` (V_IRQ and the intercept), or withdraw it.
fn set_interrupt_window(domain: &mut Domain, vector: Option<u8>, changes: &mut Vec<Change>) {
    let control = &mut domain.vcpu.vmcb.control;
    let old = control.virtual_interrupt;
    let new = interrupts::window_request(old, vector);
    control.virtual_interrupt = new;
    match vector {
        Some(_) => control.intercept_misc1 |= misc1::VINTR,
        None => control.intercept_misc1 &= !misc1::VINTR,
    }
    record(changes, "v_intr", old, new);
}

/// Put `event` in EVENTINJ: VMRUN delivers it through the guest's IDT (AMD APM vol. 2,
/// 15.20). A #PF's CR2 was set by an effect before (an intercepted #PF did not write it).
fn inject(
    domain: &mut Domain,
    event: svm::Event,
    handler: Option<u64>,
    synthetic: bool,
    events: &mut Vec<Body>,
) {
    let vcpu = &mut domain.vcpu;
    vcpu.vmcb.control.eventinj = event.encode();
    if event.kind == EventType::Nmi {
        vcpu.nmi_blocked = true;
    }
    let dropped = vcpu.push_in_flight(InFlight {
        vector: event.vector,
        kind: event.kind,
    });
    note_dropped(dropped, events);
    events.push(Body::Inject(Inject {
        vector: event.vector,
        name: event::delivery_name(event.vector, event.kind),
        kind: event.kind,
        error_code: event.error_code,
        cr2: reads_cr2(event.kind, event.vector).then_some(vcpu.vmcb.save.cr2),
        handler,
        synthetic,
    }));
}

/// Does the handler of exception `vector` read CR2, so that its delivery's event says what
/// CR2 holds? A #PF's handler reads the faulting address there, and a #DF's may: a CPU
/// writes CR2 when it detects a #PF (AMD APM vol. 2, 8.2.15), also one it turns into #DF, and Linux's
/// #DF handler reads it to tell a kernel stack overflow from other double faults.
fn reads_cr2(kind: EventType, vector: u8) -> bool {
    kind == EventType::Exception && (vector == 14 || vector == 8)
}

/// The trace says when the oldest event in flight was forgotten to make room for a new one
/// (`Vcpu::push_in_flight`): its handler, should it ever return, returns unnamed.
fn note_dropped(dropped: Option<InFlight>, events: &mut Vec<Body>) {
    if let Some(oldest) = dropped {
        events.push(Body::Emulate(Emulate {
            what: Cow::Owned(format!(
                "more than {IN_FLIGHT_MAX} delivered events whose handlers never returned: the oldest, {}, is forgotten",
                event::delivery_name(oldest.vector, oldest.kind)
            )),
            arguments: Arguments::default(),
            changes: Vec::new(),
        }));
    }
}

/// Deliver an exception the way Xen's `do_guest_trap` does: the frame on the guest's
/// stack, RSP at it, RIP at the handler (`delivery.rs` worked out all of it).
fn bounce_to(domain: &mut Domain, bounce: &Bounce, events: &mut Vec<Body>) -> Result<(), Failure> {
    let bytes: Vec<u8> = bounce
        .words
        .iter()
        .flat_map(|word| word.to_le_bytes())
        .collect();
    domain
        .cpu_write_virtual(bounce.frame, &bytes)
        .map_err(|error| Failure {
            why: format!(
                "the bounce frame at {:#x} cannot be written ({error:?}): the guest's stack is broken, so (as Xen) the domain ends",
                bounce.frame
            ),
            reason: format!("cannot write a bounce frame at {:#x}", bounce.frame),
            at: here!(),
        })?;
    let vcpu = &mut domain.vcpu;
    vcpu.set_gpr(4, bounce.frame);
    vcpu.vmcb.save.rip = bounce.handler;
    vcpu.vmcb.control.interrupt_shadow &= !INTERRUPT_SHADOW;
    vcpu.vmcb.save.rflags = bounce.rflags;
    let dropped = vcpu.push_in_flight(InFlight {
        vector: bounce.vector,
        kind: bounce.kind,
    });
    let cr2 = reads_cr2(bounce.kind, bounce.vector).then_some(vcpu.vmcb.save.cr2);
    // Whether the handler takes interrupts: RFLAGS.IF, or a PV kernel's virtual flag (its
    // RFLAGS.IF stays set; the entry's CLEAR_IF cleared the virtual one before this).
    let interrupts = domain.interrupts_enabled();
    note_dropped(dropped, events);
    events.push(Body::Bounce(event::Bounce {
        vector: bounce.vector,
        name: event::delivery_name(bounce.vector, bounce.kind),
        error_code: bounce.error_code,
        cr2,
        handler: bounce.handler,
        frame: bounce.frame,
        interrupts,
        synthetic: bounce.synthetic,
    }));
    Ok(())
}

fn return_event(returning: &Returning) -> Return {
    Return {
        via: returning.via,
        vector: returning.event.map(|(vector, _)| vector),
        name: returning
            .event
            .map(|(vector, kind)| event::delivery_name(vector, kind)),
        rip: returning.rip,
        cs: returning.cs,
        rflags: returning.rflags,
        rsp: returning.rsp,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decide;
    use crate::decision::Words;
    use crate::testing::{ENTRY, Test, UD0, UNMAPPED, VecMemory};
    use crate::vmcb::v_intr;
    use traplab_abi::boot::GUEST_RAM_SIZE;
    use traplab_abi::event::{Argument, Registers, ReturnPath, Text};
    use traplab_abi::svm::{Event, NpfInfo};

    const HANDLER: u64 = 0x21_5000;

    /// Apply `decision` to the test's domain, as the run loop does, without deciding.
    fn apply_to(test: &mut Test, decision: Decision) -> (Applied, Vec<Body>) {
        let mut events = Vec::new();
        let mut others = OthersMut::new(&mut test.others, &mut test.store);
        let applied = apply(
            &mut test.domain,
            &mut others,
            decision,
            &mut test.machine,
            &mut events,
            &mut Vec::new(),
            true,
        );
        (applied, events)
    }

    /// With no trace recording, neither the `decide` nor the `emulate` event is written,
    /// and no change is noted; the effects are the same. With one, a template goes out as
    /// it is, with its values: the hypervisor never formats it.
    #[test]
    fn without_a_trace_a_decision_records_nothing_and_with_one_a_template_stays_a_template() {
        let decision = decide!(Action::Emulate, "a test")
            .with(Effect::Gpr(3, 7))
            .describe(Words::template(
                "set RBX to {}",
                [event::Argument::Unsigned(7)],
            ));
        let mut test = Test::long_mode();
        let mut events = Vec::new();
        let mut others = OthersMut::new(&mut test.others, &mut test.store);
        apply(
            &mut test.domain,
            &mut others,
            decision.clone(),
            &mut test.machine,
            &mut events,
            &mut Vec::new(),
            false,
        );
        assert!(events.is_empty(), "{events:?}");
        assert_eq!(test.gpr(3), 7);
        test.domain.vcpu.set_gpr(3, 0);
        let (_, events) = apply_to(&mut test, decision);
        assert_eq!(kinds(&events), ["decide", "emulate"]);
        let Body::Emulate(emulate) = &events[1] else {
            unreachable!("the kinds say so")
        };
        assert_eq!(emulate.what, "set RBX to {}");
        assert_eq!(
            event::render(&emulate.what, emulate.arguments.iter()),
            "set RBX to 7"
        );
        assert_eq!(emulate.changes.len(), 1, "rbx");
    }

    fn kinds(events: &[Body]) -> Vec<&'static str> {
        events.iter().map(Body::kind).collect()
    }

    /// A guest at a PAUSE (an exit that changes nothing but RIP) with interrupt 0x20
    /// pending and an IDT gate for it.
    fn pending_at_a_pause() -> Test {
        let mut test = Test::long_mode();
        test.code(&[0xf3, 0x90]);
        test.gate(0x20, HANDLER);
        test.domain.vcpu.interrupts.pending = Some(0x20);
        test
    }

    #[test]
    fn the_events_of_a_decision_come_in_one_fixed_order() {
        // decide, console…, emulate, inject | bounce, return: whatever the decision lists,
        // every trace has the same shape.
        let mut test = Test::long_mode();
        let decision = decide!(Action::Emulate, "every part at once")
            .returning(Returning {
                via: ReturnPath::Hypercall,
                event: None,
                rip: ENTRY,
                cs: 0x08,
                rflags: 0x2,
                rsp: 0x7_ff00,
            })
            .deliver(Delivery::Inject {
                event: Event::exception(6, 0),
                handler: Some(HANDLER),
                synthetic: true,
            })
            .describe("everything")
            .with(Effect::Gpr(3, 7))
            .with(Effect::Console(b"one\ntwo\n".to_vec()));
        let (applied, events) = apply_to(&mut test, decision);
        assert_eq!(
            kinds(&events),
            [
                "decide", "console", "console", "emulate", "inject", "return"
            ]
        );
        let Body::Decide(decide) = &events[0] else {
            panic!("{events:?}")
        };
        assert_eq!(
            (decide.action, decide.why.as_ref()),
            (Action::Emulate, "every part at once")
        );
        assert!(decide.at.contains("src/apply.rs:"));
        assert_eq!(applied.end, None);
    }

    #[test]
    fn an_effect_that_fails_kills_the_domain_with_a_second_decide_that_says_why() {
        // The handler could not know the host has no frame left for the page.
        let mut memory = VecMemory::new(GUEST_RAM_SIZE, true);
        memory.exhausted = true;
        let mut test = Test::with_memory(memory);
        let run = test.run(test.exit(ExitReason::Npf {
            gpa: 0x50_0000,
            info: NpfInfo::decode(0),
        }));
        assert_eq!(
            run.decision.action,
            Action::Emulate,
            "the handler decided to map it"
        );
        assert_eq!(run.kinds(), ["decide", "decide"]);
        let failed = run.decides()[1];
        assert_eq!(failed.action, Action::Kill);
        assert_eq!(
            failed.why,
            "no host memory left to give guest-physical 0x500000"
        );
        assert!(failed.at.contains("src/apply.rs:"), "{}", failed.at);
        assert_eq!(
            run.applied.end,
            Some(DomainEnd::Killed {
                reason: "out of host memory".into()
            })
        );
        // The effects after the failing one never happen.
        assert_eq!(test.domain.vcpu.vmcb.control.tlb_control, 0, "no TLB flush");
    }

    #[test]
    fn register_changes_are_recorded_old_to_new_and_unchanged_ones_left_out() {
        let mut test = Test::long_mode();
        test.set_gpr(3, 1);
        let decision = decide!(Action::Emulate, "three writes")
            .with(Effect::Gpr(3, 7))
            .with(Effect::Gpr(1, 0)) // RCX is 0 already
            .with(Effect::Rip(ENTRY + 2))
            .describe("a test");
        let (_, events) = apply_to(&mut test, decision);
        let changes = noted_changes(&events);
        assert_eq!(changes, [("rbx", 1, 7), ("rip", ENTRY, ENTRY + 2)]);
        assert_eq!(test.gpr(3), 7);
    }

    /// The changes the `emulate` after a decision's `decide` notes: (name, old, new).
    fn noted_changes(events: &[Body]) -> Vec<(&str, u64, u64)> {
        let Some(Body::Emulate(emulate)) = events.get(1) else {
            panic!("no emulate after the decide: {events:?}")
        };
        emulate
            .changes
            .iter()
            .map(|change| (change.name.as_ref(), change.old, change.new))
            .collect()
    }

    /// Once a trap's events are recorded, `recycle` empties them and hands the `emulate`'s
    /// buffer of changes back, empty but with its room, and the next traced trap notes its
    /// changes there: no allocation, and the same changes as with a new buffer.
    #[test]
    fn the_changes_buffer_comes_back_empty_and_the_next_trap_notes_its_changes_in_it() {
        let mut test = Test::long_mode();
        let decision = |value| {
            decide!(Action::Emulate, "a write")
                .with(Effect::Gpr(3, value))
                .describe("a test")
        };
        let mut events = Vec::new();
        let mut spare = Vec::new();
        let mut others = OthersMut::new(&mut test.others, &mut test.store);
        let machine = &mut test.machine;
        apply(
            &mut test.domain,
            &mut others,
            decision(7),
            machine,
            &mut events,
            &mut spare,
            true,
        );
        assert_eq!(kinds(&events), ["decide", "emulate"]);
        recycle(&mut events, &mut spare);
        assert!(events.is_empty(), "{events:?}");
        assert!(spare.is_empty());
        let (room, buffer) = (spare.capacity(), spare.as_ptr());
        assert!(
            room >= 6,
            "the buffer keeps the room apply made in it: {room}"
        );
        apply(
            &mut test.domain,
            &mut others,
            decision(9),
            machine,
            &mut events,
            &mut spare,
            true,
        );
        assert_eq!(noted_changes(&events), [("rbx", 7, 9)]);
        let Some(Body::Emulate(emulate)) = events.get(1) else {
            panic!("{events:?}")
        };
        assert_eq!(emulate.changes.as_ptr(), buffer, "noted in the same buffer");
        assert_eq!(emulate.changes.capacity(), room, "and not grown");
        assert!(
            spare.is_empty() && spare.capacity() == 0,
            "it is the event's now"
        );
    }

    /// What `recycle` forgets owns nothing: each kind of event it empties lets go of its
    /// texts and buffers, and any other kind is dropped and replaced by a `lost` of nothing.
    #[test]
    fn an_emptied_event_owns_no_memory() {
        let owned = |words: &str| -> Text { Cow::Owned(words.to_string()) };
        let mut spare = Vec::with_capacity(2);
        let mut events = vec![
            Body::Decide(Decide {
                action: Action::Emulate,
                why: owned("why"),
                at: owned("here"),
            }),
            Body::Emulate(Emulate {
                what: owned("{} then {}"),
                arguments: Arguments::new([Argument::Hex(1), Argument::Text(owned("words"))]),
                changes: Vec::with_capacity(8),
            }),
            // Less room than `spare`, which keeps its own: this one is dropped.
            Body::Emulate(Emulate {
                what: Cow::Borrowed("a key"),
                arguments: Arguments::default(),
                changes: Vec::with_capacity(1),
            }),
            Body::Console(Console::line(owned("a line"))),
        ];
        let owns_memory = |body: &Body| {
            let owns = |text: &Text| matches!(text, Cow::Owned(_));
            match body {
                Body::Decide(decide) => owns(&decide.why) || owns(&decide.at),
                Body::Emulate(emulate) => {
                    owns(&emulate.what)
                        || emulate.changes.capacity() != 0
                        || emulate
                            .arguments
                            .iter()
                            .any(|argument| matches!(argument, Argument::Text(text) if owns(text)))
                }
                Body::Lost(lost) => lost.count != 0,
                _ => true,
            }
        };
        assert!(events.iter().all(owns_memory));
        for body in &mut events {
            empty(body, &mut spare);
        }
        for body in &events {
            assert!(!owns_memory(body), "{body:?}");
        }
        assert_eq!(spare.capacity(), 8, "the roomiest buffer is kept");
        let Body::Emulate(emulate) = &events[1] else {
            panic!("{events:?}")
        };
        assert_eq!(
            emulate.arguments.iter().collect::<Vec<_>>(),
            [&Argument::Hex(1), &Argument::Text(Cow::Borrowed(""))],
            "a number stays as it is"
        );
        // A resume (the run loop records it with the decision's events) is only numbers.
        let resume = Body::Resume(Resume {
            rip: 0x20_0039,
            rflags: 2,
            regs: Registers::default(),
            cycles: 9420,
        });
        let mut emptied = resume.clone();
        empty(&mut emptied, &mut spare);
        assert_eq!(emptied, resume, "a resume stays as it is");
    }

    /// A trap with no `emulate` (its decision says nothing) leaves the buffer where it was;
    /// of several `emulate`s, `recycle` keeps the buffer with the most room, and a buffer
    /// with more room than theirs stays (an `emulate` of a key typed has none).
    #[test]
    fn the_changes_buffer_stays_without_an_emulate_and_the_roomiest_comes_back() {
        let mut test = Test::long_mode();
        let mut events = Vec::new();
        let mut spare = Vec::with_capacity(8);
        let (buffer, room) = (spare.as_ptr(), spare.capacity());
        let mut others = OthersMut::new(&mut test.others, &mut test.store);
        let silent = decide!(Action::Emulate, "nothing to say");
        let machine = &mut test.machine;
        apply(
            &mut test.domain,
            &mut others,
            silent,
            machine,
            &mut events,
            &mut spare,
            true,
        );
        assert_eq!(kinds(&events), ["decide"]);
        assert_eq!(
            (spare.as_ptr(), spare.capacity()),
            (buffer, room),
            "given back"
        );

        let emulate = |room| {
            Body::Emulate(Emulate {
                what: Cow::Borrowed("a key"),
                arguments: Arguments::default(),
                changes: Vec::with_capacity(room),
            })
        };
        let mut events = vec![emulate(1), emulate(16), emulate(4)];
        let most = events.iter().map(|body| match body {
            Body::Emulate(emulate) => emulate.changes.capacity(),
            _ => 0,
        });
        let most = most.max().unwrap_or(0);
        recycle(&mut events, &mut spare);
        assert!(events.is_empty() && spare.is_empty());
        assert_eq!(spare.capacity(), most);

        let kept = (spare.as_ptr(), spare.capacity());
        let mut events = vec![emulate(0), emulate(4)];
        recycle(&mut events, &mut spare);
        assert!(events.is_empty());
        assert_eq!(
            (spare.as_ptr(), spare.capacity()),
            kept,
            "the roomier one stays"
        );
    }

    #[test]
    fn a_uart_write_that_completes_a_line_gives_a_console_event() {
        let mut test = Test::long_mode();
        let out = |byte: u8| {
            Effect::Port(PortAccess::Out {
                port: 0x3f8,
                size: 1,
                value: byte as u32,
            })
        };
        let decision = decide!(Action::Emulate, "four OUTs").with_all(b"ok\nx".map(out));
        let (_, events) = apply_to(&mut test, decision);
        assert_eq!(kinds(&events), ["decide", "console"]);
        let Body::Console(console) = &events[1] else {
            panic!("{events:?}")
        };
        assert_eq!(console.text, "ok");
        assert_eq!(
            test.domain.devices.console.flush().as_deref(),
            Some("x"),
            "the rest waits for its newline"
        );
    }

    #[test]
    fn an_injection_fills_eventinj_and_records_the_event_in_flight() {
        // EVENTINJ: vector, type, error code valid, valid (AMD APM vol. 2, 15.20).
        let mut test = Test::long_mode();
        test.gate(14, HANDLER);
        let run = test.run(test.exit(ExitReason::Exception {
            vector: 14,
            error_code: 0b10,
            address: 0x40_0000,
        }));
        let control = &test.domain.vcpu.vmcb.control;
        assert_eq!(control.eventinj, Event::exception(14, 0b10).encode());
        assert!(test.domain.vcpu.vmcb.injecting());
        assert_eq!(
            test.domain.vcpu.in_flight,
            [InFlight {
                vector: 14,
                kind: EventType::Exception
            }]
        );
        assert!(run.applied.injected);
        assert_eq!(
            run.applied.resume_at,
            Some(HANDLER),
            "the CPU enters the handler"
        );
        let inject = run.injected();
        assert_eq!(
            (inject.error_code, inject.cr2),
            (Some(0b10), Some(0x40_0000))
        );
    }

    #[test]
    fn events_a_guest_never_returns_from_are_bounded_and_the_oldest_dropped_is_said() {
        // A guest whose #UD handler jumps back instead of returning: every #UD stays in
        // flight. Past IN_FLIGHT_MAX the oldest goes, and the trace says which.
        let mut test = Test::long_mode();
        test.gate(6, HANDLER);
        test.code(&UD0);
        test.domain.vcpu.in_flight.push(InFlight {
            vector: 14,
            kind: EventType::Exception,
        });
        for _ in 0..IN_FLIGHT_MAX - 1 {
            let run = test.run(test.exit(ExitReason::Exception {
                vector: 6,
                error_code: 0,
                address: 0,
            }));
            assert_eq!(run.kinds(), ["decide", "inject"]);
            test.vmrun();
        }
        assert_eq!(test.domain.vcpu.in_flight.len(), IN_FLIGHT_MAX);
        for round in 0..1000 {
            let run = test.run(test.exit(ExitReason::Exception {
                vector: 6,
                error_code: 0,
                address: 0,
            }));
            test.vmrun();
            assert_eq!(run.kinds(), ["decide", "emulate", "inject"], "{round}");
            let dropped = if round == 0 { "#PF" } else { "#UD" };
            assert_eq!(
                run.emulate().what,
                format!(
                    "more than 64 delivered events whose handlers never returned: the oldest, {dropped}, is forgotten"
                )
            );
            assert_eq!(test.domain.vcpu.in_flight.len(), IN_FLIGHT_MAX);
        }
    }

    #[test]
    fn a_bounced_event_is_bounded_in_flight_too() {
        let mut test = Test::long_mode();
        test.trap_table(&[crate::testing::trap(6, HANDLER)]);
        for _ in 0..IN_FLIGHT_MAX {
            test.domain.vcpu.in_flight.push(InFlight {
                vector: 3,
                kind: EventType::Software,
            });
        }
        test.code(&UD0);
        let run = test.run(test.exit(ExitReason::Exception {
            vector: 6,
            error_code: 0,
            address: 0,
        }));
        assert_eq!(run.kinds(), ["decide", "emulate", "bounce"]);
        assert!(
            run.emulate()
                .what
                .contains("the oldest, #BP (INT3), is forgotten")
        );
        assert_eq!(test.domain.vcpu.in_flight.len(), IN_FLIGHT_MAX);
        assert_eq!(
            test.domain.vcpu.in_flight.last(),
            Some(&InFlight {
                vector: 6,
                kind: EventType::Exception
            })
        );
    }

    #[test]
    fn a_bounce_frame_that_cannot_be_written_when_applied_kills_the_domain() {
        // `delivery.rs` checked the stack when it decided; applying checks again.
        let mut test = Test::long_mode();
        let decision = decide!(Action::Bounce, "a bounce to a broken stack").deliver(
            Delivery::Bounce(Bounce {
                vector: 6,
                kind: EventType::Exception,
                error_code: None,
                handler: HANDLER,
                frame: UNMAPPED,
                words: alloc::vec![0; 5],
                rflags: 0x2,
                synthetic: false,
            }),
        );
        let (applied, events) = apply_to(&mut test, decision);
        assert_eq!(kinds(&events), ["decide", "decide"]);
        assert_eq!(
            applied.end,
            Some(DomainEnd::Killed {
                reason: "cannot write a bounce frame at 0x40000000".into()
            })
        );
        assert_eq!(test.rip(), ENTRY, "the guest did not enter the handler");
        assert!(test.domain.vcpu.in_flight.is_empty());
    }

    #[test]
    fn a_delivery_an_exit_interrupted_is_made_again_before_resume() {
        // The CPU was pushing the #PF frame when the stack's page (lazy memory) exited
        // with EXITINTINFO = #PF (AMD APM vol. 2, 15.7.2). Once the page is mapped, the #PF
        // goes in again, and is still the one event in flight.
        let mut test = Test::lazy();
        test.gate(14, HANDLER);
        test.domain.vcpu.in_flight.push(InFlight {
            vector: 14,
            kind: EventType::Exception,
        });
        let exit = Exit {
            interrupted: Some(Event::exception(14, 0b10)),
            ..test.exit(ExitReason::Npf {
                gpa: 0x7_f000,
                info: NpfInfo::decode(0b10),
            })
        };
        let run = test.run(exit);
        assert_eq!(run.kinds(), ["decide", "emulate", "inject"]);
        let inject = run.injected();
        assert_eq!((inject.vector, inject.error_code), (14, Some(0b10)));
        assert_eq!(run.applied.resume_at, Some(HANDLER));
        assert_eq!(
            test.domain.vcpu.in_flight,
            [InFlight {
                vector: 14,
                kind: EventType::Exception
            }],
            "one #PF handler will run, and return once"
        );
    }

    #[test]
    fn an_exception_exit_s_interrupted_event_is_left_to_its_handler() {
        // #PF while delivering #PF: `exception.rs` decided #DF; nothing else goes in.
        let mut test = Test::long_mode();
        test.gate(8, HANDLER);
        let exit = Exit {
            interrupted: Some(Event::exception(14, 0)),
            ..test.exit(ExitReason::Exception {
                vector: 14,
                error_code: 0,
                address: 0,
            })
        };
        let run = test.run(exit);
        assert_eq!(run.kinds(), ["decide", "inject"]);
        assert_eq!(run.injected().vector, 8);
    }

    #[test]
    fn a_double_fault_s_inject_says_what_its_handler_finds_in_cr2() {
        // A #DF handler may read CR2 (Linux's does, to recognise a kernel stack overflow):
        // the trace shows the value, as it does for a #PF.
        let mut test = Test::long_mode();
        test.gate(8, HANDLER);
        test.domain.vcpu.vmcb.save.cr2 = 0x5fff_fff8;
        let exit = Exit {
            interrupted: Some(Event::exception(14, 0)),
            ..test.exit(ExitReason::Exception {
                vector: 14,
                error_code: 0b10,
                address: 0x5fff_fff8,
            })
        };
        let run = test.run(exit);
        assert_eq!(
            (run.injected().vector, run.injected().cr2),
            (8, Some(0x5fff_fff8))
        );
    }

    #[test]
    fn a_pending_interrupt_is_injected_before_resume_when_if_is_set() {
        let mut test = pending_at_a_pause();
        test.interrupts_on();
        // An earlier window request that another exit overtook is withdrawn.
        test.domain.vcpu.vmcb.control.virtual_interrupt = interrupts::window_request(0, Some(0x20));
        test.domain.vcpu.vmcb.control.intercept_misc1 |= misc1::VINTR;
        let run = test.run(test.exit(ExitReason::Pause));
        assert_eq!(run.kinds(), ["decide", "emulate", "inject"]);
        let inject = run.injected();
        assert_eq!((inject.vector, inject.kind), (0x20, EventType::Interrupt));
        assert_eq!(run.applied.resume_at, Some(HANDLER));
        assert_eq!(test.domain.vcpu.interrupts.pending, None);
        let control = &test.domain.vcpu.vmcb.control;
        assert_eq!(control.virtual_interrupt & v_intr::IRQ, 0);
        assert_eq!(control.intercept_misc1 & misc1::VINTR, 0);
    }

    #[test]
    fn with_if_clear_the_cpu_is_asked_to_exit_when_the_guest_can_take_it() {
        // V_IRQ with the VINTR intercept: the CPU exits as soon as the guest could take a
        // virtual interrupt (AMD APM vol. 2, 15.21.4).
        let mut test = pending_at_a_pause();
        let run = test.run(test.exit(ExitReason::Pause));
        assert_eq!(run.kinds(), ["decide", "emulate", "emulate"]);
        let Some(Body::Emulate(request)) = run.events.last() else {
            panic!("{:?}", run.kinds())
        };
        assert!(
            request
                .what
                .contains("the guest has interrupts off (RFLAGS.IF = 0)")
        );
        let control = &test.domain.vcpu.vmcb.control;
        assert_ne!(control.virtual_interrupt & v_intr::IRQ, 0);
        assert_eq!(
            control.virtual_interrupt >> v_intr::VECTOR_SHIFT & 0xff,
            0x20
        );
        assert_ne!(control.intercept_misc1 & misc1::VINTR, 0);
        assert_eq!(request.changes.len(), 1, "v_intr");
        assert_eq!(request.changes[0].name, "v_intr");
        assert_eq!(
            test.domain.vcpu.interrupts.pending,
            Some(0x20),
            "still pending"
        );
        assert!(!test.domain.vcpu.vmcb.injecting());
    }

    #[test]
    fn in_an_interrupt_shadow_the_window_is_requested_too() {
        // After STI or MOV SS the next instruction runs before any interrupt (APM vol. 2,
        // 15.21.5). A host tick (INTR) leaves RIP, and so the shadow, alone.
        let mut test = pending_at_a_pause();
        test.interrupts_on();
        test.domain.vcpu.vmcb.control.interrupt_shadow = 1;
        let run = test.run(test.exit(ExitReason::Intr));
        let Some(Body::Emulate(request)) = run.events.last() else {
            panic!("{:?}", run.kinds())
        };
        assert!(request.what.contains("the guest is in an interrupt shadow"));
        assert!(!run.kinds().contains(&"inject"));
    }

    #[test]
    fn while_another_event_is_injected_the_interrupt_waits_for_the_window() {
        let mut test = pending_at_a_pause();
        test.interrupts_on();
        test.code(&[0x0f, 0x01, 0xd1]); // XSETBV with CR4.OSXSAVE clear: #UD
        let run = test.run(test.exit(ExitReason::Exception {
            vector: 6,
            error_code: 0,
            address: 0,
        }));
        assert_eq!(run.kinds(), ["decide", "inject", "emulate"]);
        assert_eq!(run.injected().vector, 6, "the #UD goes first");
        assert!(
            run.emulate()
                .what
                .contains("another event is being delivered first")
        );
        // The CPU delivers the #UD, then exits on the window; the interrupt follows.
        test.vmrun();
        let vintr = test.run(test.exit(ExitReason::Vintr));
        assert_eq!(vintr.injected().vector, 0x20);
    }

    #[test]
    fn a_window_already_requested_is_not_requested_again() {
        let mut test = pending_at_a_pause();
        test.domain.vcpu.vmcb.control.virtual_interrupt = interrupts::window_request(0, Some(0x20));
        let run = test.run(test.exit(ExitReason::Pause));
        assert_eq!(run.kinds(), ["decide", "emulate"]);
    }

    #[test]
    fn while_gdb_steps_an_interrupt_the_guest_could_take_waits_and_says_why() {
        // IF = 1 and no shadow: without the hold it is injected (above).
        let mut test = pending_at_a_pause();
        test.interrupts_on();
        test.domain.vcpu.interrupts.held_for_step = true;
        let run = test.run(test.exit(ExitReason::Pause));
        assert_eq!(run.kinds(), ["decide", "emulate", "emulate"]);
        let Some(Body::Emulate(held)) = run.events.last() else {
            panic!("{:?}", run.kinds())
        };
        assert!(
            held.what
                .contains("gdb is single-stepping the guest: it waits")
        );
        assert!(held.changes.is_empty(), "no window was asked for");
        assert!(!test.domain.vcpu.vmcb.injecting());
        assert_eq!(
            test.domain.vcpu.interrupts.pending,
            Some(0x20),
            "still pending"
        );
    }

    #[test]
    fn while_gdb_steps_a_window_asked_for_earlier_is_withdrawn() {
        // IF was 0 at an earlier exit: V_IRQ and the VINTR intercept are set. Left there, the
        // CPU would exit (VINTR) before each stepped instruction once IF is 1.
        let mut test = pending_at_a_pause();
        test.domain.vcpu.vmcb.control.virtual_interrupt = interrupts::window_request(0, Some(0x20));
        test.domain.vcpu.vmcb.control.intercept_misc1 |= misc1::VINTR;
        test.domain.vcpu.interrupts.held_for_step = true;
        let run = test.run(test.exit(ExitReason::Pause));
        let Some(Body::Emulate(held)) = run.events.last() else {
            panic!("{:?}", run.kinds())
        };
        assert!(held.what.contains("gdb is single-stepping the guest"));
        assert_eq!(held.changes.len(), 1, "v_intr");
        let control = &test.domain.vcpu.vmcb.control;
        assert_eq!(control.virtual_interrupt & v_intr::IRQ, 0);
        assert_eq!(control.intercept_misc1 & misc1::VINTR, 0);
    }

    #[test]
    fn when_gdb_lets_the_guest_run_a_held_interrupt_asks_for_its_window() {
        let mut test = pending_at_a_pause();
        test.interrupts_on();
        test.domain.vcpu.interrupts.held_for_step = true;
        test.run(test.exit(ExitReason::Pause));
        assert!(test.domain.vcpu.interrupts.waiting_for_gdb);
        assert!(
            end_hold_for_step(&mut test.domain).is_none(),
            "still stepping: it waits"
        );
        test.domain.vcpu.interrupts.held_for_step = false; // gdb: `continue`
        let Some(Body::Emulate(release)) = end_hold_for_step(&mut test.domain) else {
            panic!("an interrupt waited: its window is asked for")
        };
        assert!(release.what.contains("held while gdb stepped"));
        assert!(end_hold_for_step(&mut test.domain).is_none(), "once");
        let control = &test.domain.vcpu.vmcb.control;
        assert_ne!(control.virtual_interrupt & v_intr::IRQ, 0);
        assert_ne!(control.intercept_misc1 & misc1::VINTR, 0);
        // The CPU exits at once (IF = 1): the VINTR exit injects it.
        test.vmrun();
        let vintr = test.run(test.exit(ExitReason::Vintr));
        assert_eq!(vintr.injected().vector, 0x20);
    }

    #[test]
    fn when_gdb_lets_the_guest_run_after_a_resume_that_held_nothing_nothing_is_asked() {
        // gdb continued from a stop at an exit it had not decided yet (`monitor catch`): the
        // exit's own resume, after the `continue`, offered the interrupt as usual.
        let mut test = pending_at_a_pause();
        test.interrupts_on();
        test.run(test.exit(ExitReason::Pause));
        assert!(test.domain.vcpu.vmcb.injecting(), "injected at that resume");
        assert!(end_hold_for_step(&mut test.domain).is_none());
    }

    // ---- timer_ticks_off_an_exit: ticks with no exit of the domain's own ----------------

    /// How the run loop begins a tick noticed off the CPU (`run.rs`).
    const OFF: &str = "the guest's timer was due while it was off the CPU";

    /// `set_timer`'s timer, due at 5,000 every 1,000, its vector 0x20.
    fn set_timer_due_at_5000(test: &mut Test) {
        test.domain.vcpu.interrupts.timers.set_timer = Some(VirtualTimer {
            vector: 0x20,
            period_tsc: 1_000,
            due_tsc: 5_000,
            target: TimerTarget::Pending,
        });
    }

    #[test]
    fn a_blocked_vcpu_s_virq_timer_tick_is_a_notify_that_says_it_woke() {
        // Halted with a callback and upcalls on: the tick's event kicks it (Xen's
        // `vcpu_mark_events_pending`), and the trace has the port made pending.
        let mut test = Test::long_mode();
        test.interrupts_on();
        test.domain.events.shared_info = Some(crate::testing::SHARED_INFO);
        test.domain.events.ports[2] = PortState::Virq(traplab_abi::evtchn::virq::TIMER);
        test.domain.events.callback = crate::domain::evtchn::Callback::Vector(0xf3);
        set_timer_due_at_5000(&mut test);
        test.domain.vcpu.run_state = RunState::Blocked(crate::domain::vcpu::Wait::Interrupt);
        let mut events = Vec::new();
        assert_eq!(
            timer_ticks_off_an_exit(&mut test.domain, 4_999, OFF, &mut events),
            None
        );
        assert!(events.is_empty(), "nothing due, nothing said: {events:?}");
        let woke = timer_ticks_off_an_exit(&mut test.domain, 5_000, OFF, &mut events);
        assert_eq!(woke, Some(Some(2)));
        assert_eq!(test.domain.vcpu.run_state, RunState::Runnable);
        let [Body::Notify(notify), Body::Emulate(emulate)] = events.as_slice() else {
            panic!("a notify, then what the tick did: {events:?}")
        };
        assert_eq!(
            (
                notify.to,
                notify.port,
                notify.from_port,
                notify.woke,
                notify.masked
            ),
            (test.domain.id, 2, 0, true, false)
        );
        assert_eq!(
            emulate.what,
            "the guest's timer was due while it was off the CPU: the tick is an event on port 2 (bound to VIRQ_TIMER)"
        );
    }

    #[test]
    fn a_tick_due_while_a_vcpu_was_switched_out_is_said_as_it_comes_back() {
        // A vCPU that was preempted, not blocked: nothing to wake, its interrupt pending
        // (injected at its resume), and the trace says where it came from.
        let mut test = Test::long_mode();
        set_timer_due_at_5000(&mut test);
        let mut events = Vec::new();
        assert_eq!(
            timer_ticks_off_an_exit(&mut test.domain, 5_500, OFF, &mut events),
            None
        );
        assert_eq!(test.domain.vcpu.interrupts.pending, Some(0x20));
        let [Body::Emulate(emulate)] = events.as_slice() else {
            panic!("what the tick did: {events:?}")
        };
        assert_eq!(
            emulate.what,
            "the guest's timer was due while it was off the CPU: its interrupt is pending"
        );
    }

    #[test]
    fn a_task_priority_gdb_lowers_lets_the_interrupt_it_held_come_before_the_guest_runs() {
        // The local APIC enabled, CR8 = 15: interrupt 0x40 (class 4) requested waits. gdb
        // sets CR8 to 0 while the vCPU is stopped: as the guest runs again, the interrupt asks
        // for its window at once, where it used to wait for the guest's next exit.
        let mut test = Test::long_mode();
        test.interrupts_on();
        test.gate(0x40, HANDLER);
        test.domain.devices.lapic.svr = 0x1ff;
        task_priority_from_debugger(&mut test.domain, 15);
        test.domain.devices.lapic.request(0x40);
        assert_eq!(test.domain.pending_interrupt(), None, "held back by CR8");
        assert!(
            end_hold_for_step(&mut test.domain).is_none(),
            "nothing gets through yet"
        );
        task_priority_from_debugger(&mut test.domain, 0);
        assert_eq!(test.domain.devices.lapic.tpr, 0);
        let control = &test.domain.vcpu.vmcb.control;
        assert_eq!(control.virtual_interrupt & v_intr::TPR, 0, "V_TPR");
        let Some(Body::Emulate(release)) = end_hold_for_step(&mut test.domain) else {
            panic!("the interrupt CR8 no longer holds back asks for its window")
        };
        assert!(release.what.contains("interrupt 0x40"), "{}", release.what);
        let control = &test.domain.vcpu.vmcb.control;
        assert_ne!(control.virtual_interrupt & v_intr::IRQ, 0, "V_IRQ set");
        assert_ne!(control.intercept_misc1 & misc1::VINTR, 0);
        assert!(end_hold_for_step(&mut test.domain).is_none(), "once");
        // The CPU exits at once (IF = 1): the VINTR exit injects it.
        test.vmrun();
        let vintr = test.run(test.exit(ExitReason::Vintr));
        assert_eq!(vintr.injected().vector, 0x40);
    }

    #[test]
    fn a_task_priority_gdb_lowers_wakes_a_vcpu_halted_for_the_interrupt_it_held() {
        // Halted (blocked: another domain ran, or gdb stopped it in the idle loop) with
        // interrupt 0x40 held back by CR8 = 15: nothing else would ever wake it. A CPU would
        // take the interrupt as soon as the priority lets it.
        let mut test = Test::long_mode();
        test.interrupts_on();
        test.domain.devices.lapic.svr = 0x1ff;
        task_priority_from_debugger(&mut test.domain, 15);
        test.domain.devices.lapic.request(0x40);
        test.domain.vcpu.run_state = RunState::Blocked(crate::domain::vcpu::Wait::Interrupt);
        task_priority_from_debugger(&mut test.domain, 5);
        assert!(
            test.domain.vcpu.run_state.is_blocked(),
            "class 4 is still below priority 5"
        );
        task_priority_from_debugger(&mut test.domain, 3);
        assert_eq!(test.domain.vcpu.run_state, RunState::Runnable);
        // Raised again, or changed while the PIC presents an IRQ that CR8 does not hold
        // back (blocked with IF = 0, in a poll): nothing is released, nobody wakes.
        test.domain.vcpu.run_state =
            RunState::Blocked(crate::domain::vcpu::Wait::Poll(alloc::vec![3]));
        task_priority_from_debugger(&mut test.domain, 15);
        test.initialise_the_pics(0xfe, 0xff);
        test.domain.devices.pic.raise_irq_0();
        assert!(test.domain.pending_interrupt().is_some(), "IRQ 0 presented");
        task_priority_from_debugger(&mut test.domain, 14);
        assert!(
            test.domain.vcpu.run_state.is_blocked(),
            "class 4 still held"
        );
    }

    #[test]
    fn a_domain_s_end_unbinds_its_peers_and_releases_its_grants_and_says_so_in_their_lanes() {
        // d1 (the test's domain) ends. Its port 2 is bound to d2's port 5; it had mapped
        // d2's grant 7, writable, as handle 0, and d2's grant 7 has a second mapping (d3's).
        let mut test = Test::long_mode();
        test.domain.events.ports[2] = PortState::Interdomain {
            remote: 2,
            remote_port: 5,
        };
        test.domain.grants.maptrack.push(Some(Mapping {
            granter: 2,
            gref: 7,
            host_addr: 0x4000_0000,
            readonly: false,
        }));
        let d2 = test.add_domain(2);
        d2.events.ports[5] = PortState::Interdomain {
            remote: 1,
            remote_port: 2,
        };
        d2.grants.mapped[7] = 2;
        d2.grants.mapped_writable[7] = 1;
        d2.grants.table[7].flags |= grant_flags::READING | grant_flags::WRITING;
        let mut others = OthersMut::new(&mut test.others, &mut test.store);
        let said = release_holds(&mut test.domain, &mut others);
        let said: Vec<(u16, &str)> = said
            .iter()
            .map(|(id, body)| match body {
                Body::Emulate(emulate) => (*id, emulate.what.as_ref()),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(
            said,
            [
                (
                    2,
                    "d1 has ended: its port 2 is closed, so d2's port 5, the channel's other end, is unbound again, waiting for d1 (Xen's evtchn_close): a send on it is dropped"
                ),
                (
                    2,
                    "d1 has ended: its mapping of d2's grant 7 (handle 0) is released (Xen's gnttab_release_mappings): 1 mapping of it is left"
                ),
            ]
        );
        let d2 = test.other(2);
        assert_eq!(d2.events.ports[5], PortState::Unbound { remote: 1 });
        assert_eq!((d2.grants.mapped[7], d2.grants.mapped_writable[7]), (1, 0));
        assert_eq!(
            d2.grants.table[7].flags & (grant_flags::READING | grant_flags::WRITING),
            grant_flags::READING,
            "the last writable mapping gone: GTF_writing cleared, GTF_reading kept"
        );
        assert!(test.domain.grants.maptrack.is_empty());
    }
}
