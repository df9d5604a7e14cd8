//! The run loop: VMRUN, #VMEXIT, decide, apply, resume — and the order domains run in.
//!
//! ```text
//!   ┌──────────────► world_switch (VMRUN) ── the guest runs ──┐
//!   │                                                          ▼
//!   │ resume event                                   #VMEXIT: Exit::read, exit event
//!   │ (apply::before_resume: the pending                       │
//!   │  interrupt, an interrupted delivery)          exit::handle: the decision (pure)
//!   │                                                          │
//!   └──────────── no switch ◄── apply: the effects, the events, in one fixed order
//!                                                              │
//!          the vCPU blocks, yields, woke another, used its slice, or the domain ended
//!                                                              ▼
//!                         schedule event; the next vCPU (`schedule.rs`), or idle
//! ```
//!
//! Domains start in turn (each when the one before has ended: independent lab guests) or
//! together (side by side: the scheduler switches between them). A vCPU that leaves the CPU
//! in the middle of an exit is *parked*: the rest of that exit's handling (the pending
//! interrupt, the `resume` event) happens when it runs again, after the `schedule` event
//! that says why. So a woken domain's trace reads: schedule (woken by port N), inject (its
//! upcall), its handler's exits, return.
//!
//! Every event goes through [`record`], which is also where the host's controller may stop
//! the hypervisor (`control.rs`) and where gdb's `monitor traps` learns of decisions; when
//! neither is in use, an exit and a resume go straight to the trace, read from the vCPU
//! without an event built first, and, when a host reads the trace, the rest of a trap's
//! events at once ([`only_the_trace_looks`]). gdb's
//! own hooks are called here, at the same three places every time, for the domain it
//! debugs: before VMRUN, right after the exit is recorded (before anything is decided), and
//! after the decision. gdb is answered everywhere else the hypervisor has control too — at
//! the other domains' exits, while it idles, while the host holds it stopped — since gdb
//! may attach at any time and waits only two seconds for an answer (`gdb/mod.rs`).

use crate::gdb::{self, Debugger};
use crate::hardware::Hardware;
use crate::loader;
use crate::svm::world_switch::world_switch;
use crate::svm::{Host, fpu};
use crate::time::rdtsc;
use crate::{bench_bare, clock, control, trace};
use alloc::borrow::Cow;
use alloc::boxed::Box;
use alloc::collections::BTreeMap;
use alloc::vec::Vec;
use traplab_abi::event::{self, Body, DomainState, Schedule, ScheduleWhy};
use traplab_abi::evtchn::Port;
use traplab_abi::exit::ExitReason;
use traplab_hv::apply::{self, Applied};
use traplab_hv::domain::vcpu::RunState;
use traplab_hv::record::{self, VcpuExit, VcpuResume};
use traplab_hv::schedule::{self, Start, Switch};
use traplab_hv::{Domain, DomainEnd, Exit, Guest, Machine, System};

/// The domains the loop runs: on their own, or with gdb attached to one of them
/// (gdbstub's target owns what it debugs, so the debugger holds the system).
pub enum Running {
    Alone(Box<System>),
    Debugged(Box<Debugger>),
}

impl Running {
    pub fn system(&mut self) -> &mut System {
        match self {
            Running::Alone(system) => system,
            Running::Debugged(debugger) => debugger.system(),
        }
    }

    /// gdb, if it debugs domain `id`.
    fn debugger_of(&mut self, id: u16) -> Option<&mut Debugger> {
        match self {
            Running::Debugged(debugger) if debugger.domain_id() == id => Some(debugger),
            _ => None,
        }
    }

    /// Record an event of the run loop ([`record`]): while the host holds the hypervisor
    /// stopped after it, gdb is answered.
    fn record(&mut self, dom: Option<u16>, body: &Body) {
        record_with(dom, body, &mut || {
            if let Running::Debugged(debugger) = self {
                gdb::while_host_holds(debugger);
            }
        });
    }

    /// The hypervisor has control, and the domain gdb debugs is not the one that exited
    /// (`current`), or none runs: answer gdb, and stop here while it holds its domain
    /// (all-stop). gdb may end its domain from here.
    #[inline]
    fn answer_gdb(&mut self, current: Option<u16>) {
        if let Running::Debugged(_) = self {
            self.answer_gdb_debugged(current);
        }
    }

    /// [`Running::answer_gdb`] with gdb attached: apart, so that the run loop's code for an
    /// exit without gdb, the usual case, stays together (under QEMU's TCG each page of code
    /// an exit runs costs a refill of QEMU's TLB after every world switch).
    #[cold]
    #[inline(never)]
    fn answer_gdb_debugged(&mut self, current: Option<u16>) {
        let Running::Debugged(debugger) = self else {
            return;
        };
        let id = debugger.domain_id();
        if current == Some(id) {
            return; // its own hooks answer (`run_vcpu`)
        }
        if let Some(end) = gdb::meanwhile(debugger) {
            finish(self, id, end);
        }
    }
}

/// Record one event (`dom`: the domain it is about, `None` for the hypervisor), then let
/// the host stop us there if it wants to. A guest's console line goes to the hypervisor's
/// log when no host reads the trace.
pub fn record(dom: Option<u16>, body: &Body) {
    record_with(dom, body, &mut || {});
}

/// [`record`], with what to do while the host holds the hypervisor stopped after the event.
fn record_with(dom: Option<u16>, body: &Body, meanwhile: &mut dyn FnMut()) {
    if let Body::Console(console) = body
        && !trace::has_reader()
    {
        console_to_log(dom, console);
    }
    if let Body::Decide(decide) = body {
        // gdb's `monitor traps` remembers decisions too (a no-op without gdb).
        gdb::note_decision(decide.action, &decide.why, &decide.at);
    }
    if let Some(seq) = trace::emit(dom, body) {
        control::checkpoint(seq, dom, body, meanwhile);
    }
}

/// Record the events of other domains that a trap caused (`Scheduler::said`), in order.
#[cold]
#[inline(never)]
fn record_said(running: &mut Running, said: &mut Vec<(u16, Body)>) {
    for (other, body) in said.drain(..) {
        running.record(Some(other), &body);
    }
}

/// A guest's console line in the hypervisor's log; an unfinished one (a prompt) says so, as
/// `traplab trace` does, since the finished line comes again whole. Apart from
/// [`record_with`]: formatting needs a large stack frame, which every event paid for on entry
/// (saving and restoring registers around it) when this was inlined there.
#[cold]
#[inline(never)]
fn console_to_log(dom: Option<u16>, console: &event::Console) {
    let unfinished = match console.unfinished {
        true => event::Console::UNFINISHED_NOTE,
        false => "",
    };
    crate::console::write_fmt(format_args!(
        "d{}| {}{unfinished}\n",
        dom.unwrap_or(0),
        console.text
    ));
}

/// Why a vCPU left the CPU.
enum Off {
    /// Its domain ended.
    Ended(DomainEnd),
    /// The scheduler runs another (or the same, if no other is runnable).
    Switched(Switch),
}

/// The rest of an exit's handling, owed by a vCPU that left the CPU at that exit.
struct Parked {
    exit: Exit,
    /// [`clock::stopped_ticks`] at the exit.
    stopped_at_exit: u64,
    applied: Applied,
}

/// A trap's last event, the `resume`, owed until the guest really goes on: it is made and
/// recorded just before VMRUN, after gdb's last chances to stop the guest there
/// (`gdb::after_handling`, `gdb::before_entry`). So it shows the registers the guest resumes
/// with, gdb's changes made while it held the guest included, and a guest that gdb ends
/// there has none. (One that gdb stops or ends while the host holds the hypervisor at the
/// resume itself has it: gdb's checks run once more after it, before VMRUN.)
struct OwedResume {
    /// The TSC at the exit.
    exit_tsc: u64,
    /// [`clock::stopped_ticks`] at the exit.
    stopped_at_exit: u64,
    /// Where guest code goes on when that is not RIP (`Applied::resume_at`).
    resume_at: Option<u64>,
}

impl OwedResume {
    /// The trap's cycles on the trace's clock: from the exit to now, less the time the
    /// hypervisor sat stopped since.
    fn cycles(&self) -> u64 {
        (rdtsc() - self.exit_tsc) - (clock::stopped_ticks() - self.stopped_at_exit)
    }

    fn new(exit: &Exit, stopped_at_exit: u64, applied: &Applied) -> OwedResume {
        OwedResume {
            exit_tsc: exit.tsc,
            stopped_at_exit,
            resume_at: applied.resume_at,
        }
    }
}

/// What the loop remembers between vCPUs.
struct Scheduler {
    /// The vCPU that ran last.
    current: Option<u16>,
    /// Domains whose `created` event has been recorded.
    created: Vec<u16>,
    parked: BTreeMap<u16, Parked>,
    /// Events of other domains a trap caused (keys typed for a blocked domain,
    /// `wake_on_keys`): recorded once the trap is over (after its `resume`, or after the
    /// `schedule` that switches its domain out), so that they never come inside another
    /// domain's events (`tracer/SCHEMA.md`).
    said: Vec<(u16, Body)>,
}

/// Run every domain to its end: in turn, or side by side (`start`).
pub fn run_all(domains: Vec<Domain>, start: Start, host: &Host) {
    let mut system = System::new(domains, start);
    for (index, domain) in system.domains.iter_mut().enumerate() {
        domain.vcpu.run_state = match (start, index) {
            (Start::Together, _) | (Start::InTurn, 0) => RunState::Runnable,
            _ => RunState::Waiting,
        };
    }
    let together = start == Start::Together && system.domains.len() > 1;
    let mut machine = Hardware;
    if together {
        // The scheduler preempts on the hypervisor's own timer (`schedule.rs`).
        machine.start_timer();
    }
    let mut running = match gdb::attach(Box::new(system)) {
        Ok(debugger) => Running::Debugged(debugger),
        Err(system) => Running::Alone(system),
    };
    // The host's stop after the boot, if it asked for one: taken here, where gdb can be
    // answered during it (`control.rs`).
    control::when_ready(&mut || {
        if let Running::Debugged(debugger) = &mut running {
            gdb::while_host_holds(debugger);
        }
    });
    let mut scheduler = Scheduler {
        current: None,
        created: Vec::new(),
        parked: BTreeMap::new(),
        said: Vec::new(),
    };
    let mut next = schedule::next(&running.system().domains, None);
    // The vCPU a woken one preempted, whose turn the round robin goes on from.
    let mut preempted: Option<u16> = None;
    if let Some(first) = next {
        record_schedule(&mut running, None, Some(first), ScheduleWhy::Start, None);
    }
    loop {
        let id = match next {
            Some(id) => id,
            None => match idle(&mut running, &mut machine) {
                Some(id) => id,
                // Nothing can run or wake any more: the next domain in turn, if one waits
                // (the ones before it were killed as deadlocked), or the end.
                None => match start_next_in_turn(running.system()) {
                    Some(id) => {
                        record_schedule(&mut running, None, Some(id), ScheduleWhy::Start, None);
                        id
                    }
                    None => return,
                },
            },
        };
        let owed = switch_in(&mut running, &mut scheduler, id, &mut machine);
        let off = run_vcpu(&mut running, id, host, &mut machine, &mut scheduler, owed);
        let woken = match off {
            Off::Switched(Switch::Woke { to, .. }) => Some(to),
            _ => None,
        };
        let (why, port) = match off {
            Off::Ended(end) => {
                finish(&mut running, id, end);
                start_next_in_turn(running.system());
                (ScheduleWhy::Ended, None)
            }
            Off::Switched(Switch::Blocked) => (ScheduleWhy::Blocked, None),
            Off::Switched(Switch::Yielded) => (ScheduleWhy::Yielded, None),
            Off::Switched(Switch::SliceOver) => (ScheduleWhy::SliceOver, None),
            Off::Switched(Switch::Woke { port, .. }) => (ScheduleWhy::Woken, port),
        };
        next = schedule::after(&running.system().domains, id, woken, &mut preempted);
        if next != Some(id) {
            record_schedule(&mut running, Some(id), next, why, port);
            record_said(&mut running, &mut scheduler.said);
        }
    }
}

/// In turn: when no domain is runnable or blocked, the next one waiting starts. Its id.
fn start_next_in_turn(system: &mut System) -> Option<u16> {
    let busy = system.domains.iter().any(|domain| {
        matches!(
            domain.vcpu.run_state,
            RunState::Runnable | RunState::Blocked(_)
        )
    });
    if system.start != Start::InTurn || busy {
        return None;
    }
    let waiting = schedule::next_in_turn(&system.domains)?;
    system.domain_mut(waiting)?.vcpu.run_state = RunState::Runnable;
    Some(waiting)
}

fn record_schedule(
    running: &mut Running,
    from: Option<u16>,
    to: Option<u16>,
    why: ScheduleWhy,
    port: Option<Port>,
) {
    running.record(
        None,
        &Body::Schedule(Schedule {
            from,
            to,
            why,
            port,
        }),
    );
}

/// Nothing is runnable: the hypervisor idles until a blocked vCPU's timer is due, and
/// returns the vCPU it woke. `None`: every domain has ended; or the blocked ones wait for
/// something nothing can send any more (no timer whose tick could end a wait,
/// `schedule::earliest_timer`; nobody left to send an event): they are killed, as a
/// deadlock. With gdb, it wakes at every tick of its own timer to answer gdb.
fn idle(running: &mut Running, machine: &mut Hardware) -> Option<u16> {
    loop {
        running.answer_gdb(None);
        let system = running.system();
        // A domain's end (gdb's `kill` just now, or a deadlocked one below) may have woken
        // another, through the store's `@releaseDomain`: it runs.
        if let Some(woken) = schedule::next(&system.domains, None) {
            record_schedule(running, None, Some(woken), ScheduleWhy::Woken, None);
            return Some(woken);
        }
        let system = running.system();
        if !system
            .domains
            .iter()
            .any(|domain| domain.vcpu.run_state.is_blocked())
        {
            return None;
        }
        // A blocked kernel that waits for its serial port while the host forwards keys
        // (`traplab run`): a key can still wake it.
        let listening = machine.keyboard()
            && system.domains.iter().any(|domain| {
                domain.vcpu.run_state.is_blocked() && domain.devices.console.listening()
            });
        let due = schedule::earliest_timer(&system.domains);
        if due.is_none() && !listening {
            // One at a time, and first one that no other's end can wake: its end may wake a
            // domain that waits for `@releaseDomain` (a toolstack, a backend), which then
            // runs (the top of the loop) instead of dying too.
            let blocked = system
                .domains
                .iter()
                .filter(|domain| domain.vcpu.run_state.is_blocked());
            let victim = blocked
                .clone()
                .find(|domain| !schedule::woken_by_an_end(domain))
                .or_else(|| blocked.clone().next())
                .map(|domain| domain.id);
            if let Some(id) = victim {
                let end = DomainEnd::Killed {
                    reason: "deadlock: every domain waits, and nothing is left that could wake one (no timer whose tick ends its wait, no domain to send an event)".into(),
                };
                finish(running, id, end);
            }
            continue;
        }
        let due = due.unwrap_or(u64::MAX);
        let until = match running {
            // gdb waits two seconds for an answer: look at its line every 1/100 s (the
            // hypervisor's timer runs with gdb, `gdb::enable`, and wakes the HLT).
            Running::Debugged(_) => due.min(machine.now() + crate::time::tsc_hz() / 100),
            Running::Alone(_) => due,
        };
        if listening {
            // Its ticks wake the HLT below to look for keys (`Hardware::halt_until`).
            machine.start_timer();
        }
        // (`halt_until` publishes everything recorded before it waits.)
        machine.halt_until(until);
        let (woken_by_keys, mut said) = wake_on_keys(running, machine, None);
        // Here every domain waits or has ended: what is left was typed for one that has
        // ended or never was, and would wake this loop at once, again and again.
        let dropped = machine.discard_keys();
        if dropped > 0 {
            crate::log!("{dropped} typed bytes dropped: their domain has ended or is not there");
        }
        // What the keys did comes after the `schedule` that switches in a domain they woke,
        // as the first events of its flow's second part (`tracer/SCHEMA.md`).
        if let Some(woken) = woken_by_keys {
            record_schedule(running, None, Some(woken), ScheduleWhy::Woken, None);
        }
        record_said(running, &mut said);
        if let Some(woken) = woken_by_keys {
            return Some(woken);
        }
        let woken = wake_on_timers(running.system(), None, machine.now(), &mut said);
        // As keys' (above): what the ticks did comes after the `schedule` of a domain they woke.
        if let Some((woken, port)) = woken {
            record_schedule(running, None, Some(woken), ScheduleWhy::Woken, port);
        }
        record_said(running, &mut said);
        if let Some((woken, _)) = woken {
            return Some(woken);
        }
    }
}

/// Keys the host typed for blocked domains (but `except`) go into their COM1
/// (`apply::keys_from_host`); a vCPU halted for an interrupt that now has one to take is
/// runnable again. The first one woken, and the events that say so, each with its domain,
/// for the caller to record (after the trap it is in, if any: not inside it).
fn wake_on_keys(
    running: &mut Running,
    machine: &mut Hardware,
    except: Option<u16>,
) -> (Option<u16>, Vec<(u16, Body)>) {
    let mut said = Vec::new();
    if !machine.keys_typed() {
        return (None, said);
    }
    let mut first = None;
    let ids: Vec<u16> = running
        .system()
        .domains
        .iter()
        .map(|domain| domain.id)
        .collect();
    for id in ids.into_iter().filter(|&id| Some(id) != except) {
        let mut events = Vec::new();
        let Some(domain) = running.system().domain_mut(id) else {
            continue;
        };
        if !domain.vcpu.run_state.is_blocked() {
            continue;
        }
        apply::keys_from_host(domain, machine, &mut events);
        // An interrupt for it wakes it, as Xen's `vcpu_kick` does whatever IF says (once per
        // batch of keys: a vCPU that IF holds the interrupt from blocks again).
        if let RunState::Blocked(wait) = &domain.vcpu.run_state
            && schedule::woken_by_interrupt(wait)
            && domain.pending_interrupt().is_some()
        {
            domain.vcpu.run_state = RunState::Runnable;
            first = first.or(Some(id));
        }
        said.extend(events.into_iter().map(|body| (id, body)));
    }
    (first, said)
}

/// Blocked vCPUs (other than `running`) whose timers are due at `now`: their tick becomes
/// pending, and those it wakes are runnable again. The first one woken, with the port its
/// tick was an event on (a timer bound to `VIRQ_TIMER`); what the ticks did goes into `said`,
/// each event with its domain, for the caller to record (after the trap it is in, if any).
fn wake_on_timers(
    system: &mut System,
    running: Option<u16>,
    now: u64,
    said: &mut Vec<(u16, Body)>,
) -> Option<(u16, Option<Port>)> {
    let mut first = None;
    for domain in &mut system.domains {
        if Some(domain.id) == running {
            continue;
        }
        if !domain.vcpu.run_state.is_blocked() {
            continue;
        }
        let mut events = Vec::new();
        let woke = apply::timer_ticks_off_an_exit(domain, now, OFF_THE_CPU, &mut events);
        if let Some(port) = woke {
            first = first.or(Some((domain.id, port)));
        }
        said.extend(events.into_iter().map(|body| (domain.id, body)));
    }
    first
}

/// How a tick noticed while its domain was switched out begins its `emulate`.
const OFF_THE_CPU: &str = "the guest's timer was due while it was off the CPU";

/// Put vCPU `id` on the CPU: its `created` event the first time, the debug registers, XCR0
/// and x87/SSE state VMRUN does not switch, a due timer, and what it still owes of the exit
/// it left at (its `resume`, owed to `run_vcpu`, which records it before VMRUN).
fn switch_in(
    running: &mut Running,
    scheduler: &mut Scheduler,
    id: u16,
    machine: &mut Hardware,
) -> Option<OwedResume> {
    let previous = scheduler.current.replace(id);
    let system = running.system();
    // The XCR0 in the CPU: the previous vCPU's (an XSETBV of its own loaded it), or the
    // value after reset. (A CPU without XSAVE, as QEMU's qemu64, never gets another.)
    let loaded_xcr0 = previous
        .and_then(|previous| system.domain(previous))
        .map_or(1, |domain| domain.vcpu.xcr0);
    let domain = system.domain_mut(id)?;
    domain.vcpu.ticks_run = 0;
    if !scheduler.created.contains(&id) {
        scheduler.created.push(id);
        let created = Body::Domain(event::DomainChange {
            state: DomainState::Created,
            name: Cow::Owned(domain.name.clone()),
            status: None,
            reason: Some(loader::describe(domain)),
        });
        running.record(Some(id), &created);
    }
    if let Some(previous) = previous.filter(|&previous| previous != id) {
        keep_debug_registers(running, previous, machine);
    }
    let domain = running.system().domain_mut(id)?;
    if previous != Some(id) {
        // DR0–DR3, XCR0 and the x87/SSE state are not in the VMCB: the CPU's are the
        // running guest's (`exit/dr.rs`, `exit/xsetbv.rs`, `svm/fpu.rs`).
        domain.vcpu.load_debug_registers(machine);
        if domain.vcpu.xcr0 != loaded_xcr0 {
            machine.set_xcr0(domain.vcpu.xcr0);
        }
        if let Running::Debugged(debugger) = running {
            debugger.switched_to(id);
        }
        // The x87 state and MXCSR in the CPU: the previous vCPU's, back to its image (this
        // one's are loaded by its world switch).
        if let Some(previous) = previous.and_then(|previous| running.system().domain_mut(previous))
        {
            fpu::take_out(&mut previous.vcpu.context);
        }
    }
    let domain = running.system().domain_mut(id)?;
    // Its timers that fell due while it was off the CPU (the idle loop and other domains'
    // exits tick only those of blocked vCPUs; a preempted one's wait for it). Or, when no
    // other vCPU ran since (it yielded, or its slice ended, with nobody else to run; or it
    // blocked and the idle loop woke it), those due by now.
    let when = match previous == Some(id) {
        true => "the guest's timer was due by the time the hypervisor ran it again",
        false => OFF_THE_CPU,
    };
    let mut events = Vec::new();
    apply::timer_ticks_off_an_exit(domain, machine.now(), when, &mut events);
    let parked = scheduler.parked.remove(&id);
    let owed = parked.and_then(
        |Parked {
             exit,
             stopped_at_exit,
             mut applied,
         }| {
            apply::before_resume(domain, &exit, &mut applied, &mut events);
            // Only the trace shows a resume.
            trace::enabled().then(|| OwedResume::new(&exit, stopped_at_exit, &applied))
        },
    );
    for body in events {
        running.record(Some(id), &body);
    }
    owed
}

/// Run vCPU `id` until it leaves the CPU.
///
/// Never inlined: every exit goes round this loop, and `linker.ld` starts it on a page of
/// its own, so that it spans one page of QEMU's TLB whatever the code around it.
#[inline(never)]
fn run_vcpu(
    running: &mut Running,
    id: u16,
    host: &Host,
    machine: &mut Hardware,
    scheduler: &mut Scheduler,
    mut owed: Option<OwedResume>,
) -> Off {
    let mut events = Vec::new();
    let mut spare_changes = Vec::new();
    let bare = bench_bare::on();
    // Who reads a decision's events: the trace, and gdb's `monitor traps`.
    let recording = trace::enabled() || matches!(running, Running::Debugged(_));
    loop {
        // gdb may hold the guest stopped here (`gdb/mod.rs`). Once it lets the guest run, an
        // interrupt that waited for its steps asks for its window.
        if let Some(debugger) = running.debugger_of(id) {
            if let Some(end) = gdb::before_entry(debugger) {
                return Off::Ended(end);
            }
            let released = debugger
                .system()
                .domain_mut(id)
                .and_then(apply::end_hold_for_step);
            if let Some(body) = released {
                running.record(Some(id), &body);
            }
        }
        // The guest goes on now: the last trap's resume (see `OwedResume`). The host may
        // hold the hypervisor at it, and gdb is answered meanwhile (a Ctrl-C, a kill): gdb's
        // checks above run once more before VMRUN. (Registers gdb changes in a stop that
        // begins there show at the next exit, not in this resume.)
        if let Some(owed) = owed.take() {
            record_resume(running, id, &owed);
            // Events of other domains the trap caused come after its resume.
            if !scheduler.said.is_empty() {
                record_said(running, &mut scheduler.said);
            }
            continue;
        }
        // gdb is answered at every domain's VMRUN (its own domain's: by the hooks above and
        // in `at_exit`): here, between this domain's traps, so that what gdb does to its own
        // domain meanwhile (a Ctrl-C that holds everything, a `kill` and the end it records)
        // never lands between the `exit` and the `decide` of another's trap.
        running.answer_gdb(Some(id));
        if let Some(debugger) = running.debugger_of(id) {
            gdb::arm_step(debugger);
        }
        let plain = only_the_trace_looks(running);
        let Some(domain) = running.system().domain_mut(id) else {
            return Off::Ended(DomainEnd::Killed {
                reason: "no such domain".into(),
            });
        };
        domain.vcpu.before_vmrun();
        // The trap's events go to the reader as one ring record (`trace.rs`).
        trace::flush();
        loop {
            // SAFETY: the VMCB was set up by `loader::create` and is changed only by the
            // apply step and gdb, through fields VMRUN checks; `host.save_area` was filled
            // by VMSAVE in `svm::enable`.
            unsafe {
                world_switch(
                    &mut *domain.vcpu.context,
                    domain.vcpu.vmcb_address(),
                    host.save_area,
                )
            };
            domain.vcpu.after_vmrun();
            // The benchmark's baseline (`bench_bare`): a CPUID answered and VMRUN again, in
            // this loop of its own: nothing else of the exit path, not even its tests for
            // gdb and the trace.
            if !(bare && bench_bare::answered(domain)) {
                break;
            }
            domain.vcpu.before_vmrun();
        }
        let exit = Exit::read(domain, rdtsc());
        let stopped_at_exit = clock::stopped_ticks();
        if trace::enabled() {
            if plain {
                // Its record read straight from the vCPU: no event built first.
                trace::emit_exit(id, &VcpuExit::new(domain, &exit));
            } else {
                record_exit_event(running, id, &exit);
            }
        }
        // An exit of gdb's own (its breakpoint, its single step) is not the guest's.
        let gdb_decision = running
            .debugger_of(id)
            .and_then(|debugger| gdb::at_exit(debugger, &exit));
        let system = running.system();
        let decision = match gdb_decision {
            Some(decision) => decision,
            None => {
                let Some((domain, others)) = system.split(id) else {
                    continue;
                };
                traplab_hv::exit::handle(
                    &exit,
                    &Guest {
                        domain,
                        others,
                        machine: &Hardware,
                    },
                )
            }
        };
        let Some((domain, mut others)) = system.split_mut(id) else {
            continue;
        };
        let mut applied = apply::apply(
            domain,
            &mut others,
            decision,
            machine,
            &mut events,
            &mut spare_changes,
            recording,
        );

        // The scheduler's part: a tick of the hypervisor's timer counts against the slice
        // and may wake a blocked vCPU whose timer is due.
        if applied.end.is_none() && exit.reason == ExitReason::Intr {
            let woken = wake_on_timers(system, Some(id), exit.tsc, &mut scheduler.said);
            schedule::charge_tick(&mut system.domains, id);
            // Keys typed for a blocked domain raise its COM1's interrupt now, not when the
            // CPU next idles (a device's interrupt kicks its vCPU, as Xen's `vcpu_kick`).
            // What that says is recorded after this trap's events, not inside them.
            let (by_keys, said) = wake_on_keys(running, machine, Some(id));
            scheduler.said.extend(said);
            // Untraced, their order does not matter: now.
            if !trace::enabled() {
                record_said(running, &mut scheduler.said);
            }
            let woken = woken.or(by_keys.map(|to| (to, None)));
            let system = running.system();
            // A vCPU woken by its timer or a key runs next, as one woken by an event does.
            if applied.switch.is_none() {
                applied.switch = match woken {
                    Some((to, port)) => Some(Switch::Woke { to, port }),
                    None if schedule::slice_over(
                        &system.domains,
                        id,
                        crate::timer::rate_when_running(),
                    ) =>
                    {
                        Some(Switch::SliceOver)
                    }
                    None => None,
                };
            }
        }
        let system = running.system();
        let Some(domain) = system.domain_mut(id) else {
            continue;
        };
        if applied.end.is_none() && applied.switch.is_none() {
            apply::keys_from_host(domain, machine, &mut events);
            apply::before_resume(domain, &exit, &mut applied, &mut events);
            // The guest goes on: its resume is the trap's last event, owed until VMRUN (top
            // of the loop). (When the vCPU leaves the CPU instead, it is owed when the vCPU
            // is back: `switch_in`.)
            if trace::enabled() {
                owed = Some(OwedResume::new(&exit, stopped_at_exit, &applied));
            }
        }
        // Recorded where they are (an event is a few hundred bytes, and moving it costs),
        // from this one place: under QEMU's TCG each place a call returns to is a block
        // looked up again after every world switch. When nothing but a host's trace looks
        // (and no console line goes to the log instead), all at once.
        if plain && trace::has_reader() {
            trace::emit_all(id, &events);
        } else {
            for body in &events {
                running.record(Some(id), body);
            }
        }
        apply::recycle(&mut events, &mut spare_changes);
        if let Some(end) = applied.end {
            return Off::Ended(end);
        }
        // gdb's step may be done here (the exit moved RIP on), before the vCPU leaves the CPU
        // too (a yield, a send that wakes another domain): gdb is told now, not at the next
        // exit, one instruction too late.
        if let Some(debugger) = running.debugger_of(id)
            && let Some(end) = gdb::after_handling(debugger)
        {
            return Off::Ended(end);
        }
        if let Some(switch) = applied.switch {
            scheduler.parked.insert(
                id,
                Parked {
                    exit,
                    stopped_at_exit,
                    applied,
                },
            );
            return Off::Switched(switch);
        }
    }
}

/// Does nothing but the trace look at an exit's or a resume's event? Then it is recorded
/// straight from the vCPU (`trace::emit_exit`, `trace::emit_resume`), the same record as
/// from its event, without building the event first: an exit's is every register and a
/// dozen numbers, copied at every traced trap. gdb takes its `int3`s out of an exit's
/// instruction bytes, and the host's controller stops at events it looks at
/// (`control::checkpoint`): for them, the event is built ([`record_exit_event`]).
#[inline]
fn only_the_trace_looks(running: &Running) -> bool {
    matches!(running, Running::Alone(_)) && !control::enabled()
}

/// An exit's event, built and recorded: gdb or the host's controller looks at it
/// ([`only_the_trace_looks`]). gdb's `int3`s are taken out of its instruction bytes.
#[cold]
#[inline(never)]
fn record_exit_event(running: &mut Running, id: u16, exit: &Exit) {
    // gdb's single step is gdb's: out of the guest before its registers are recorded (else
    // `gdb::at_exit` takes it out, next).
    if let Some(debugger) = running.debugger_of(id) {
        gdb::take_out_step(debugger);
    }
    let Some(domain) = running.system().domain(id) else {
        return;
    };
    let mut body = Body::Exit(record::exit_event(domain, exit));
    if let Running::Debugged(debugger) = running {
        gdb::hide_breakpoints(debugger, id, &mut body);
    }
    running.record(Some(id), &body);
    discard_recorded(body);
}

/// An exit's event and a resume (`record_resume`), once recorded, dropped as their own type
/// rather than as a `Body`: a `Body`'s drop glue (every kind of event) is a call, and under
/// QEMU's TCG the return from that call looks its target up again after every world switch,
/// at every traced trap; an exit's (a text, empty: the reader names the reason, and the rest
/// numbers) and a resume's (only numbers) are a few instructions here, or none. (A trap's
/// other events are emptied where they are: `apply::recycle`.)
fn discard_recorded(body: Body) {
    match body {
        Body::Exit(exit) => drop(exit),
        // Only numbers: nothing to drop. (Bound, so that it is moved out of the `Body`, which
        // then has nothing left to drop either; `_` would leave the whole `Body` to drop.)
        Body::Resume(_resume) => {}
        other => drop(other),
    }
}

/// Record the `resume` vCPU `id` owes (`OwedResume`), as the guest goes on now. (A domain
/// stays in the system once it has ended: it is always there.)
fn record_resume(running: &mut Running, id: u16, owed: &OwedResume) {
    let plain = only_the_trace_looks(running);
    let Some(domain) = running.system().domain(id) else {
        return;
    };
    let resume = VcpuResume::new(domain, owed.resume_at, owed.cycles());
    if plain {
        trace::emit_resume(id, &resume);
        return;
    }
    let resume = Body::Resume(record::resume_event(&resume));
    running.record(Some(id), &resume);
    discard_recorded(resume);
}

/// Vcpu `id` leaves the CPU: its DR0–DR3 as the CPU holds them go into its copies, which
/// the next switch to it loads again. Its own MOV to DRn reached the CPU (a MOV to DR0–DR3
/// exits only while every DR access does, `Vcpu::debug_register_intercepts`): a copy kept
/// only at intercepted MOVs would load a stale address over the guest's breakpoint. Not in a
/// slot lent to gdb, where the CPU has gdb's address and the copy is the guest's
/// (`Vcpu::lent_slots`).
fn keep_debug_registers(running: &mut Running, id: u16, machine: &Hardware) {
    if let Some(domain) = running.system().domain_mut(id) {
        domain.vcpu.keep_breakpoint_addresses(machine);
    }
}

/// Domain `id` is over: tell gdb, flush its console, undo what it held of the others (its
/// channels' other ends become unbound again, and the grants it mapped are released:
/// `apply::release_holds`), say how it ended and what the others lost, and tell the store's
/// watchers (`apply::release_domain`).
fn finish(running: &mut Running, id: u16, end: DomainEnd) {
    // Once: an end asked for twice (gdb's `kill` held while the domain's own end was being
    // decided) is over the first time.
    let ended = running
        .system()
        .domain(id)
        .is_none_or(|domain| domain.vcpu.run_state == RunState::Ended);
    if ended {
        return;
    }
    if let Some(debugger) = running.debugger_of(id) {
        gdb::domain_ended(debugger, &end);
    }
    let system = running.system();
    let Some((domain, mut others)) = system.split_mut(id) else {
        return;
    };
    domain.vcpu.run_state = RunState::Ended;
    let console = domain
        .devices
        .console
        .flush()
        .map(|line| Body::Console(event::Console::line(line)));
    let (state, status, reason) = match &end {
        DomainEnd::Exited { status, reason } => {
            (DomainState::Exited, Some(*status), reason.clone())
        }
        DomainEnd::Killed { reason } => (DomainState::Killed, None, reason.clone()),
    };
    crate::log!(
        "domain {} ({}) {:?}: {}",
        domain.id,
        domain.name,
        state,
        reason
    );
    let ended = Body::Domain(event::DomainChange {
        state,
        name: Cow::Owned(domain.name.clone()),
        status,
        reason: Some(Cow::Owned(reason)),
    });
    let released = apply::release_holds(domain, &mut others);
    // Recorded once the domain's hold on the others is undone: the host may stop the
    // hypervisor after either event, and gdb be answered there.
    if let Some(console) = console {
        running.record(Some(id), &console);
    }
    running.record(Some(id), &ended);
    for (other, body) in released {
        running.record(Some(other), &body);
    }
    // The store's `@releaseDomain`: whoever waits for or watches it hears of the end.
    let Some((_, mut others)) = running.system().split_mut(id) else {
        return;
    };
    for (other, body) in apply::release_domain(id, &mut others) {
        running.record(Some(other), &body);
    }
}
