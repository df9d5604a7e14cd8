//! Trap flows: the events of one trap, from its `exit` to its `resume`, one domain at a time.
//!
//! ```text
//!  exit ─► decide ─► [emulate] [notify] [inject | bounce] ─► resume      one flow
//!                                  │
//!                                  └─ the guest's handler runs (its own flows) ─► IRET exit ─► … return ─► resume
//! ```
//!
//! The hypervisor handles one exit at a time, and a domain runs until it traps. When the
//! domain goes on after its trap, the flow is a *contiguous* run of its events, from its
//! `exit` to its `resume` (or to the `domain` event that ends the domain in it). When the
//! hypervisor switches to another domain instead (a `schedule` event in the hypervisor's
//! lane), the flow stays open, *away*, while the others run, and goes on when its domain
//! runs again:
//!
//! ```text
//!  d1: exit ─► decide ─► notify d2 ─┐                                   ┌─► resume     d1's flow: two parts
//!  hv:                          schedule d1 → d2 (woken)        schedule d2 → d1
//!  d2:                               └─► inject (upcall) ─► resume … exit ─► … ─┘         d2's flows
//! ```
//!
//! So a flow has up to two parts: from its first event to the `schedule` that switched it
//! out ([`Flow::away`]), and from the `schedule` that switched it back in ([`Flow::back`]) to
//! its end. The events between are other domains' (and other flows'). When a domain is
//! switched in without an open flow (it starts, or is woken to take an upcall) and gets an
//! event delivered, that is a flow without an exit ([`Opening::Switch`]): it starts at the
//! `schedule` event.
//!
//! Flows are linked three ways, so the TUI can tell a whole story:
//! - a flow that delivered an event (`inject`/`bounce`) to the later flow of the same domain
//!   whose `return` ends that delivery ([`Flow::returned_by`], [`Flow::returns_from`]);
//! - a flow whose `notify` made another domain's port pending to the flow of that domain
//!   that delivered the upcall, or to its flow that was blocked waiting for the event and
//!   goes on without one (a `SCHEDOP_poll`) ([`Flow::woke`], [`Flow::woken_by`]): a
//!   `forward` decision and its consequence, in another lane.
//!
//! [`Assembler`] builds flows incrementally from [`Facts`], the few fields of each event it
//! needs, so the same code serves a recording of a million events and a live run.

use std::collections::HashMap;
use traplab_abi::event::{Action, DomainState, EventType, ScheduleWhy};
use traplab_abi::exit::ExitReason;

/// What kind of event, in one byte (the JSON `"kind"`). The order is `Body::KINDS`'s.
#[repr(u8)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Kind {
    #[default]
    Boot,
    Domain,
    Exit,
    Decide,
    Emulate,
    Inject,
    Bounce,
    Return,
    Notify,
    GrantMap,
    GrantUnmap,
    Resume,
    Schedule,
    Console,
    Lost,
    End,
}

impl Kind {
    pub const ALL: [Kind; 16] = [
        Kind::Boot,
        Kind::Domain,
        Kind::Exit,
        Kind::Decide,
        Kind::Emulate,
        Kind::Inject,
        Kind::Bounce,
        Kind::Return,
        Kind::Notify,
        Kind::GrantMap,
        Kind::GrantUnmap,
        Kind::Resume,
        Kind::Schedule,
        Kind::Console,
        Kind::Lost,
        Kind::End,
    ];

    /// The JSON `"kind"` (the same order as `Body::KINDS`).
    pub fn name(self) -> &'static str {
        traplab_abi::event::Body::KINDS[self as usize]
    }

    pub fn from_name(name: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|kind| kind.name() == name)
    }
}

/// A `schedule` event's switch: from one domain (or the idle loop: `None`) to another.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Switch {
    pub from: Option<u16>,
    pub to: Option<u16>,
    pub why: ScheduleWhy,
    /// For `woken`: the port whose event woke `to`.
    pub port: Option<u32>,
}

/// The facts about one event that the index and the assembler need, read from its line
/// without building the whole event (a recording may hold millions).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Facts {
    pub seq: u64,
    pub tsc: u64,
    pub dom: Option<u16>,
    pub kind: Kind,
    /// `exit`: the exit code; `exit`/`return`/`resume`: the RIP.
    pub exitcode: Option<u64>,
    pub rip: Option<u64>,
    /// `decide`.
    pub action: Option<Action>,
    /// `inject`/`bounce`/`return`: the vector delivered or returned from.
    pub vector: Option<u8>,
    /// `inject`: its EVENTINJ type. An event-channel upcall is an interrupt, never an
    /// exception.
    pub event_type: Option<EventType>,
    /// `resume`: TSC ticks from the exit.
    pub cycles: Option<u64>,
    /// `domain`.
    pub domain_state: Option<DomainState>,
    pub domain_name: Option<String>,
    /// `boot`.
    pub tsc_hz: Option<u64>,
    /// `lost`.
    pub lost: Option<u64>,
    /// `notify` of a send (another domain's, or a store watch's for another domain): the
    /// domain notified, and its port that is pending now ...
    pub notified: Option<(u16, u32)>,
    /// ... and whether the notification woke that domain from a block.
    pub woke: bool,
    /// `notify` of the hypervisor's own event for the domain (from port 0 to itself): the
    /// port it made pending.
    pub raised: Option<u32>,
    /// `schedule`.
    pub switch: Option<Switch>,
}

impl Facts {
    /// The facts of a whole event (live runs, tests).
    pub fn of(event: &traplab_abi::event::Event) -> Facts {
        use traplab_abi::event::Body;
        let mut facts = Facts {
            seq: event.seq,
            tsc: event.tsc,
            dom: event.dom,
            ..Facts::default()
        };
        facts.kind = Kind::from_name(event.body.kind()).unwrap_or_default();
        match &event.body {
            Body::Boot(boot) => facts.tsc_hz = Some(boot.tsc_hz),
            Body::Domain(domain) => {
                facts.domain_state = Some(domain.state);
                facts.domain_name = Some(domain.name.to_string());
            }
            Body::Exit(exit) => {
                facts.exitcode = Some(exit.exitcode);
                facts.rip = Some(exit.rip);
            }
            Body::Decide(decide) => facts.action = Some(decide.action),
            Body::Inject(inject) => {
                facts.vector = Some(inject.vector);
                facts.event_type = Some(inject.kind);
            }
            Body::Bounce(bounce) => facts.vector = Some(bounce.vector),
            Body::Return(ret) => {
                facts.vector = ret.vector;
                facts.rip = Some(ret.rip);
            }
            Body::Resume(resume) => {
                facts.rip = Some(resume.rip);
                facts.cycles = Some(resume.cycles);
            }
            Body::Notify(notify) => {
                // From no port to the domain that runs (or is switched back in): the
                // hypervisor's own event for it, a tick of its timer on its VIRQ_TIMER port or
                // the store's watch event for a node it wrote. No flow sent it.
                match notify.from_port == 0 && event.dom == Some(notify.to) {
                    true => facts.raised = Some(notify.port),
                    false => facts.notified = Some((notify.to, notify.port)),
                }
                facts.woke = notify.woke;
            }
            Body::Schedule(schedule) => {
                facts.switch = Some(Switch {
                    from: schedule.from,
                    to: schedule.to,
                    why: schedule.why,
                    port: schedule.port,
                })
            }
            Body::Lost(lost) => facts.lost = Some(lost.count),
            Body::Emulate(_)
            | Body::GrantMap(_)
            | Body::GrantUnmap(_)
            | Body::Console(_)
            | Body::End(_) => {}
        }
        facts
    }

    /// Could this delivery be an event-channel upcall? An interrupt (the callback vector)
    /// or a bounce to a vector above the exceptions (the callback address); an exception
    /// never is one.
    fn may_be_upcall(&self) -> bool {
        match self.kind {
            Kind::Inject => self.event_type == Some(EventType::Interrupt),
            Kind::Bounce => self.vector.is_some_and(|vector| vector >= 32),
            _ => false,
        }
    }
}

/// "No such flow" in the `u32` links of [`Flow`] (a `u32` instead of `Option<usize>` keeps
/// a flow small: a million-event recording holds a quarter of a million flows).
pub const NO_FLOW: u32 = u32::MAX;
/// "No such event" in [`Flow::away`] and [`Flow::back`].
pub const NO_EVENT: u32 = u32::MAX;
/// "No cycle count" (the flow never resumed).
pub const NO_CYCLES: u64 = u64::MAX;

/// How a flow ended.
#[repr(u8)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlowEnd {
    /// Still waiting for its resume (a live run, the hypervisor stopped in it, or its
    /// domain is switched out and has not run again yet).
    Open,
    /// VMRUN: the guest runs again.
    Resumed,
    /// The domain ended in this flow (`exit` hypercall).
    Exited,
    /// The hypervisor killed the domain (a triple fault, a fatal error).
    Killed,
    /// The trace ended, or lost events, before the flow did; or the trace broke the order
    /// a flow's events come in (`tracer/SCHEMA.md`).
    Cut,
}

/// How a flow began.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Opening {
    /// With an `exit` of its domain: a trap.
    Exit,
    /// With the `schedule` event that switched its domain in, without an exit of its own:
    /// the domain starts, or is woken to take an event (an upcall).
    Switch(ScheduleWhy),
}

/// One trap flow: its own events are `first ..= away` and `back ..= last` (or all of
/// `first ..= last` when it was never switched out).
#[derive(Debug, Clone, PartialEq)]
pub struct Flow {
    /// Index of its first event: the `exit`, or for [`Opening::Switch`] the `schedule`.
    pub first: u32,
    /// How many events the flow spans, from `first` to its last event. A flow that was
    /// switched out spans the events of the domains that ran meanwhile, which are not its
    /// own ([`Flow::contains`]).
    pub len: u32,
    /// The `schedule` event that switched its domain out in this flow, or [`NO_EVENT`].
    pub away: u32,
    /// Where its events go on after [`Flow::away`]: the `schedule` event that switched its
    /// domain back in (or the event that ended the domain while it was away), or [`NO_EVENT`].
    pub back: u32,
    /// The TSC of its first event.
    pub tsc: u64,
    /// The guest's RIP at the exit; for a flow without an exit, where the guest resumes.
    pub rip: u64,
    /// The hypervisor's TSC ticks for this trap, or [`NO_CYCLES`]: the `cycles` of its
    /// resume, less the time its domain was switched out (other domains ran then).
    pub cycles: u64,
    /// The SVM exit code (`INVALID`, -1, is kept as `0xffff_ffff`, as TCG writes it); 0 for
    /// a flow without an exit.
    pub exitcode: u32,
    pub opening: Opening,
    /// The later flow whose `return` ends the event this flow delivered, or [`NO_FLOW`].
    pub returned_by: u32,
    /// For a flow with a `return`: the flow that delivered the event, or [`NO_FLOW`].
    pub returns_from: u32,
    /// The flow (of the domain this flow's `notify` named) that delivered the upcall the
    /// notification made pending, or [`NO_FLOW`].
    pub woke: u32,
    /// For a flow that delivered an upcall: the flow whose `notify` made it pending, or
    /// [`NO_FLOW`].
    pub woken_by: u32,
    pub dom: u16,
    /// The first and the last decision (they differ when one decision leads to another,
    /// e.g. a bounce without a trap-table entry becomes a #GP).
    pub first_action: Option<Action>,
    pub last_action: Option<Action>,
    /// The vector the flow delivered (`inject`/`bounce`).
    pub delivered: Option<u8>,
    pub end: FlowEnd,
}

const _: () = assert!(
    std::mem::size_of::<Flow>() <= 72,
    "a flow per trap stays small: a million-event recording holds a quarter of a million"
);

impl Flow {
    /// A flow just opened at event `first`: one event long, nothing linked, nothing
    /// decided yet.
    fn opening(dom: u16, first: u32, tsc: u64, opening: Opening, exitcode: u32) -> Flow {
        Flow {
            first,
            len: 1,
            away: NO_EVENT,
            back: NO_EVENT,
            tsc,
            rip: 0,
            cycles: NO_CYCLES,
            exitcode,
            opening,
            returned_by: NO_FLOW,
            returns_from: NO_FLOW,
            woke: NO_FLOW,
            woken_by: NO_FLOW,
            dom,
            first_action: None,
            last_action: None,
            delivered: None,
            end: FlowEnd::Open,
        }
    }

    /// The trap class, as the labs name it: `#PF` for an exception, else the exit name
    /// (`IOIO`). A flow without an exit is an `upcall` (it delivers an event a notification
    /// made pending), an `interrupt` (it delivers another pending event when its domain
    /// runs again) or a `schedule` (its domain just runs).
    pub fn class(&self) -> &'static str {
        match self.opening {
            Opening::Exit => class_of(self.exitcode as u64),
            Opening::Switch(_) if self.delivered.is_none() => "schedule",
            Opening::Switch(why) if why == ScheduleWhy::Woken || self.woken_by != NO_FLOW => {
                "upcall"
            }
            Opening::Switch(_) => "interrupt",
        }
    }

    /// The exit reason, as the trace's `"reason"` spells it (`EXCP_PF`); `-` without an exit.
    pub fn reason(&self) -> &'static str {
        match self.opening {
            Opening::Exit => ExitReason::from_code(self.exitcode as u64).name(),
            Opening::Switch(_) => "-",
        }
    }

    /// The exception the flow delivered (`#BP`, `#DF`, …), whatever its exit was: an INT3
    /// the hypervisor intercepts is a SWINT flow that delivers #BP, a #PF met during a #PF's
    /// delivery a #PF flow that delivers #DF. `None` when nothing was delivered, or a vector
    /// from 32 up (an interrupt, an upcall). (By its vector alone: an interrupt a kernel
    /// put below 32, as no PC's does, would be named as the exception there.)
    pub fn delivered_exception(&self) -> Option<&'static str> {
        let vector = self.delivered?;
        traplab_abi::x86::EXCEPTIONS
            .get(usize::from(vector))
            .map(|exception| exception.mnemonic)
    }

    /// Did the flow begin with an exit (a trap), not with a switch?
    pub fn has_exit(&self) -> bool {
        self.opening == Opening::Exit
    }

    /// `reflect`, or `bounce→kill` when the decisions changed.
    pub fn action_text(&self) -> String {
        match (self.first_action, self.last_action) {
            (Some(first), Some(last)) if first != last => {
                format!("{}→{}", first.name(), last.name())
            }
            (Some(first), _) => first.name().to_string(),
            (None, _) if self.end == FlowEnd::Open => "pending".into(),
            (None, _) if !self.has_exit() => "switch".into(),
            (None, _) => "-".into(),
        }
    }

    /// Index of the last event.
    pub fn last(&self) -> u32 {
        self.first + self.len.saturating_sub(1)
    }

    /// Was its domain switched out in the middle of this flow?
    pub fn was_away(&self) -> bool {
        self.away != NO_EVENT
    }

    /// Is event `event` one of this flow's own?
    pub fn contains(&self, event: u32) -> bool {
        if event < self.first || event > self.last() {
            return false;
        }
        if !self.was_away() {
            return true;
        }
        event <= self.away || (self.back != NO_EVENT && event >= self.back)
    }

    /// The flow's own events, in order: its first part and, after a switch, its second.
    pub fn events(&self) -> impl Iterator<Item = u32> + use<> {
        let last = self.last();
        let first_part_end = if self.was_away() { self.away } else { last };
        let second_part = (self.was_away() && self.back != NO_EVENT).then_some(self.back..=last);
        (self.first..=first_part_end).chain(second_part.into_iter().flatten())
    }

    pub fn cycles(&self) -> Option<u64> {
        (self.cycles != NO_CYCLES).then_some(self.cycles)
    }

    /// Does this flow repeat `earlier`: the same trap of the same domain at the same
    /// instruction, handled the same way, and part of no longer story (it delivered
    /// nothing, returned from nothing, woke no one and was not switched out)? A guest
    /// printing a line traps once per byte at its OUT: such runs fold into one row of the
    /// TUI's list.
    pub fn repeats(&self, earlier: &Flow) -> bool {
        let on_its_own = |flow: &Flow| {
            flow.has_exit()
                && flow.end == FlowEnd::Resumed
                && flow.delivered.is_none()
                && !flow.was_away()
                && [
                    flow.returned_by,
                    flow.returns_from,
                    flow.woke,
                    flow.woken_by,
                ]
                .iter()
                .all(|&link| link == NO_FLOW)
        };
        on_its_own(self)
            && on_its_own(earlier)
            && (self.dom, self.exitcode, self.rip) == (earlier.dom, earlier.exitcode, earlier.rip)
            && (self.first_action, self.last_action) == (earlier.first_action, earlier.last_action)
    }
}

/// The trap class of an exit code: `#PF` for an exception, else the exit name
/// ([`ExitReason::class`]; a flow keeps only the code, and the class needs no EXITINFO).
pub fn class_of(exitcode: u64) -> &'static str {
    ExitReason::from_code(exitcode).class()
}

/// A domain was switched in: the `schedule` event, and why.
#[derive(Debug, Clone, Copy)]
struct SwitchedIn {
    index: u32,
    tsc: u64,
    why: ScheduleWhy,
}

/// A notification whose upcall has not come yet.
#[derive(Debug, Clone, Copy)]
struct Pending {
    port: u32,
    /// The flow with the `notify`.
    sender: u32,
    /// The notification woke the domain from a block.
    woke: bool,
}

/// How many notifications may wait for their upcall in one domain (a domain that never
/// takes its upcalls must not make the assembler grow without end).
const PENDING_MAX: usize = 256;

/// Builds flows from events, one at a time, in trace order.
#[derive(Debug, Default)]
pub struct Assembler {
    /// Per domain, the flow that has its first event but not yet its end.
    open: HashMap<u16, u32>,
    /// Per domain, the `schedule` that switched it in, until its next event.
    switched_in: HashMap<u16, SwitchedIn>,
    /// Per domain, the port its open flow's upcall is for, as far as the trace says: the one
    /// the switch that woke it named, or the one the hypervisor's own event for it made
    /// pending (a `notify` from port 0 to itself); until the flow ends or the next switch in.
    woken_by_port: HashMap<u16, u32>,
    /// Per domain switched out inside a flow: the TSC when it went.
    away_since: HashMap<u16, u64>,
    /// Per flow that went away and came back: the ticks it was away.
    away_ticks: HashMap<u32, u64>,
    /// Per domain, the deliveries whose handler has not returned yet: (flow, vector).
    /// A stack, since a handler can fault in turn (a #PF inside the #PF handler).
    undelivered: HashMap<u16, Vec<(u32, u8)>>,
    /// Per domain notified, the notifications whose upcall has not come yet, oldest first.
    pending: HashMap<u16, Vec<Pending>>,
    /// The flows with a second part, in the order of their `back` (for [`flow_of`]).
    continued: Vec<u32>,
    /// The last event's `seq`: one that skips some says events are missing.
    last_seq: Option<u64>,
}

impl Assembler {
    pub fn new() -> Assembler {
        Assembler::default()
    }

    /// The flows still waiting for their end, one per domain at most, in flow order.
    pub fn open_flows(&self) -> Vec<u32> {
        let mut open: Vec<u32> = self.open.values().copied().collect();
        open.sort_unstable();
        open
    }

    /// The flows that went on after a switch, in the order they went on.
    pub fn continued(&self) -> &[u32] {
        &self.continued
    }

    /// Take event number `index` (its position in the trace) into the flows.
    pub fn observe(&mut self, index: u32, facts: &Facts, flows: &mut Vec<Flow>) {
        // Events are missing before this one (a recording with lines taken out says so only
        // by its seqs): nothing open goes on across them, as after a `lost` event. Else the
        // flow they cut short would take the next trap's events as its own.
        if let Some(last) = self.last_seq
            && facts.seq > last.saturating_add(1)
        {
            self.cut_all(flows);
        }
        self.last_seq = Some(facts.seq);
        match facts.kind {
            Kind::Boot => {
                // A new hypervisor run: nothing of the last one goes on.
                self.cut_all(flows);
                self.undelivered.clear();
                self.pending.clear();
            }
            // Nothing in a flow follows these: the hypervisor stops, or lost events.
            Kind::End | Kind::Lost => self.cut_all(flows),
            Kind::Schedule => self.switch(index, facts, flows),
            Kind::Exit => self.exit(index, facts, flows),
            _ => self.step(index, facts, flows),
        }
    }

    fn exit(&mut self, index: u32, facts: &Facts, flows: &mut Vec<Flow>) {
        let Some(dom) = facts.dom else { return };
        // An exit while this domain's flow is open means the trace skipped its end.
        if let Some(open) = self.open.remove(&dom) {
            flows[open as usize].end = FlowEnd::Cut;
        }
        // The domain runs: whatever switched it in is over.
        self.switched_in.remove(&dom);
        self.woken_by_port.remove(&dom);
        self.open.insert(dom, flows.len() as u32);
        let exitcode = facts
            .exitcode
            .map_or(u32::MAX, |code| code.min(u32::MAX as u64) as u32);
        let flow = Flow::opening(dom, index, facts.tsc, Opening::Exit, exitcode);
        flows.push(Flow {
            rip: facts.rip.unwrap_or(0),
            ..flow
        });
    }

    /// A `schedule` event: the domain switched out leaves its flow open, away; the domain
    /// switched in goes on with its next event.
    fn switch(&mut self, index: u32, facts: &Facts, flows: &mut [Flow]) {
        let Some(switch) = facts.switch else { return };
        if let Some(from) = switch.from
            && let Some(&open) = self.open.get(&from)
        {
            let flow = &mut flows[open as usize];
            if !flow.was_away() {
                flow.away = index;
                flow.len = index - flow.first + 1;
                self.away_since.insert(from, facts.tsc);
            } else {
                // A flow has two parts at most (`tracer/SCHEMA.md`): a third cannot be
                // shown as this flow's, so the flow is cut where its second part ended.
                flow.end = FlowEnd::Cut;
                self.open.remove(&from);
                self.away_since.remove(&from);
            }
        }
        if let Some(to) = switch.to {
            self.switched_in.insert(
                to,
                SwitchedIn {
                    index,
                    tsc: facts.tsc,
                    why: switch.why,
                },
            );
            match (switch.why, switch.port) {
                (ScheduleWhy::Woken, Some(port)) => {
                    self.woken_by_port.insert(to, port);
                    // A flow blocked waiting for the event (SCHEDOP_poll, a store wait, a
                    // HLT) goes on now: the notification woke it, upcall or not.
                    if let Some(&blocked) = self.open.get(&to) {
                        self.link_upcall(to, blocked, flows);
                    }
                }
                _ => {
                    self.woken_by_port.remove(&to);
                }
            }
        }
    }

    /// Any other event of a domain: a step of its open flow, or the first step of a flow
    /// without an exit right after the domain was switched in.
    fn step(&mut self, index: u32, facts: &Facts, flows: &mut Vec<Flow>) {
        let Some(dom) = facts.dom else { return };
        // A console line or a domain's end does not make the domain's next step: only what
        // the hypervisor does for it when it runs again does.
        let runs = !matches!(facts.kind, Kind::Console | Kind::Domain);
        let switched_in = if runs {
            self.switched_in.remove(&dom)
        } else {
            None
        };
        let open = match self.open.get(&dom) {
            Some(&open) => {
                let flow = &mut flows[open as usize];
                if flow.was_away() && flow.back == NO_EVENT {
                    // Its domain is switched out. An event about it meanwhile (keys typed for
                    // it while another domain runs) is no step of its flow, which goes on
                    // only from the `schedule` that switches the domain back in, or from the
                    // `domain` event that ends it while away.
                    if switched_in.is_none() && facts.kind != Kind::Domain {
                        return;
                    }
                    let back =
                        switched_in.map_or((index, facts.tsc), |switch| (switch.index, switch.tsc));
                    flow.back = back.0;
                    self.continued.push(open);
                    if let Some(since) = self.away_since.remove(&dom) {
                        self.away_ticks.insert(open, back.1.saturating_sub(since));
                    }
                }
                open
            }
            None => match switched_in {
                Some(switch) if runs && facts.kind != Kind::Exit => {
                    self.open_without_exit(dom, switch, flows)
                }
                // Not in any flow (a console line between traps, a domain created).
                _ => return,
            },
        };
        let flow = &mut flows[open as usize];
        flow.len = index - flow.first + 1;
        match facts.kind {
            Kind::Decide => {
                flow.first_action = flow.first_action.or(facts.action);
                flow.last_action = facts.action.or(flow.last_action);
            }
            Kind::Inject | Kind::Bounce => {
                if let Some(vector) = facts.vector {
                    flow.delivered = Some(vector);
                    self.undelivered
                        .entry(dom)
                        .or_default()
                        .push((open, vector));
                }
                if facts.may_be_upcall() {
                    self.link_upcall(dom, open, flows);
                }
            }
            Kind::Return => {
                if let Some(vector) = facts.vector
                    && let Some(stack) = self.undelivered.get_mut(&dom)
                    && let Some(position) = stack
                        .iter()
                        // Not its own delivery: a flow that delivers and then returns
                        // returns from an earlier one.
                        .rposition(|&(flow, delivered)| delivered == vector && flow != open)
                {
                    let (delivering, _) = stack.remove(position);
                    // Anything delivered after it and still open never returned (its
                    // handler did not IRET): forget it, but for this flow's own delivery,
                    // whose handler is still to return.
                    let later = stack.split_off(position);
                    stack.extend(later.into_iter().filter(|&(flow, _)| flow == open));
                    flows[open as usize].returns_from = delivering;
                    flows[delivering as usize].returned_by = open;
                }
            }
            Kind::Notify => {
                // The hypervisor's own event for the domain: an upcall in this flow is for
                // its port, which no flow sent, and not for another domain's send that waits
                // (stale: a poll takes a port without an upcall, and no event says so).
                if let Some(port) = facts.raised {
                    self.woken_by_port.entry(dom).or_insert(port);
                }
                if let Some((to, port)) = facts.notified {
                    let waiting = self.pending.entry(to).or_default();
                    if waiting.len() == PENDING_MAX {
                        waiting.remove(0);
                    }
                    waiting.push(Pending {
                        port,
                        sender: open,
                        woke: facts.woke,
                    });
                }
            }
            Kind::Resume => {
                let away = self.away_ticks.remove(&open).unwrap_or(0);
                flow.cycles = facts
                    .cycles
                    .map_or(NO_CYCLES, |cycles| cycles.saturating_sub(away));
                if !flow.has_exit() {
                    flow.rip = facts.rip.unwrap_or(0);
                }
                flow.end = FlowEnd::Resumed;
                self.close(dom, open);
            }
            Kind::Domain => match facts.domain_state {
                Some(DomainState::Exited) => {
                    flow.end = FlowEnd::Exited;
                    self.close(dom, open);
                    self.undelivered.remove(&dom);
                }
                Some(DomainState::Killed) => {
                    flow.end = FlowEnd::Killed;
                    self.close(dom, open);
                    self.undelivered.remove(&dom);
                }
                _ => {}
            },
            _ => {}
        }
    }

    /// A flow that begins at the `schedule` that switched `dom` in.
    fn open_without_exit(&mut self, dom: u16, switch: SwitchedIn, flows: &mut Vec<Flow>) -> u32 {
        let number = flows.len() as u32;
        flows.push(Flow::opening(
            dom,
            switch.index,
            switch.tsc,
            Opening::Switch(switch.why),
            0,
        ));
        self.open.insert(dom, number);
        number
    }

    /// Flow `receiver` of `dom` delivers what may be an upcall: link it to the notification
    /// that made it pending — the one on the port that woke `dom`, else the oldest — and to
    /// the later notifications of the same port, which found it pending already. Of a
    /// woken domain, the notification that woke it: notifications of the port before it had
    /// been taken already (a domain blocks only with nothing to take), though no event says
    /// so (a poll clears a pending bit without an upcall), and caused nothing here. So a
    /// domain's own `bind_interdomain`, which makes its new port pending (as Xen's does), is
    /// not taken for what woke it when another domain sends on that port later.
    fn link_upcall(&mut self, dom: u16, receiver: u32, flows: &mut [Flow]) {
        // The port a `schedule` said woke the domain holds for its flow's upcalls until the
        // flow ends (`close`): a later `inject` must not take another port's notification.
        let woken_port = self.woken_by_port.get(&dom).copied();
        // Linked already, at the `schedule` that woke it (by its port): its upcall's
        // `inject` must not take another port's notification for its cause.
        if flows
            .get(receiver as usize)
            .is_some_and(|flow| flow.woken_by != NO_FLOW)
        {
            return;
        }
        let Some(waiting) = self.pending.get_mut(&dom) else {
            return;
        };
        // A schedule that names the port that woke the domain links that port's notification
        // or none: a notification of another port did not wake it.
        let position = match woken_port {
            Some(port) => waiting
                .iter()
                .rposition(|pending| pending.port == port && pending.woke)
                .or_else(|| waiting.iter().position(|pending| pending.port == port)),
            None => (!waiting.is_empty()).then_some(0),
        };
        let Some(position) = position else { return };
        let port = waiting[position].port;
        let mut index = 0;
        waiting.retain(|pending| {
            let this = index;
            index += 1;
            if pending.port != port {
                return true;
            }
            // A flow is not woken by itself: a domain's own send (on a loopback channel, or
            // its `bind_interdomain` making its new port pending) whose upcall comes in the
            // same flow.
            if pending.sender == receiver {
                return false;
            }
            if this >= position {
                flows[pending.sender as usize].woke = receiver;
            }
            if this == position {
                flows[receiver as usize].woken_by = pending.sender;
            }
            false
        });
    }

    fn close(&mut self, dom: u16, open: u32) {
        if self.open.get(&dom) == Some(&open) {
            self.open.remove(&dom);
            self.woken_by_port.remove(&dom);
        }
        self.away_since.remove(&dom);
        self.away_ticks.remove(&open);
    }

    /// Every open flow ends here, unfinished.
    fn cut_all(&mut self, flows: &mut [Flow]) {
        for (_, open) in self.open.drain() {
            if let Some(flow) = flows.get_mut(open as usize) {
                flow.end = FlowEnd::Cut;
            }
        }
        self.switched_in.clear();
        self.woken_by_port.clear();
        self.away_since.clear();
        self.away_ticks.clear();
    }
}

/// The flow that holds event `index` as one of its own: by binary search over the flows'
/// first parts (in trace order, they do not overlap) and over the second parts of the flows
/// that went on after a switch (`continued`, in the order of their `back`). A `schedule`
/// event can be the last of one flow's first part and the first of another flow: the later
/// flow is named.
pub fn flow_of(flows: &[Flow], continued: &[u32], index: u32) -> Option<usize> {
    let after = flows.partition_point(|flow| flow.first <= index);
    if let Some(candidate) = after.checked_sub(1)
        && flows[candidate].contains(index)
    {
        return Some(candidate);
    }
    let after = continued.partition_point(|&flow| {
        flows
            .get(flow as usize)
            .is_some_and(|flow| flow.back <= index)
    });
    let candidate = *continued.get(after.checked_sub(1)?)? as usize;
    flows
        .get(candidate)
        .is_some_and(|flow| flow.contains(index))
        .then_some(candidate)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(kind: Kind, dom: Option<u16>) -> Facts {
        Facts {
            kind,
            dom,
            ..Facts::default()
        }
    }

    /// Flows and the flows that went on after a switch.
    fn assemble(events: &[Facts]) -> (Vec<Flow>, Vec<u32>) {
        let mut assembler = Assembler::new();
        let mut flows = Vec::new();
        for (index, event) in events.iter().enumerate() {
            assembler.observe(index as u32, event, &mut flows);
        }
        (flows, assembler.continued().to_vec())
    }

    fn feed(events: &[Facts]) -> Vec<Flow> {
        assemble(events).0
    }

    fn exit_of(dom: u16, code: u64) -> Facts {
        Facts {
            exitcode: Some(code),
            rip: Some(0x1000),
            ..facts(Kind::Exit, Some(dom))
        }
    }

    fn exit(code: u64) -> Facts {
        exit_of(1, code)
    }

    fn decide_of(dom: u16, action: Action) -> Facts {
        Facts {
            action: Some(action),
            ..facts(Kind::Decide, Some(dom))
        }
    }

    fn decide(action: Action) -> Facts {
        decide_of(1, action)
    }

    fn deliver_of(dom: u16, kind: Kind, vector: Option<u8>) -> Facts {
        Facts {
            vector,
            event_type: (kind == Kind::Inject).then_some(EventType::Exception),
            ..facts(kind, Some(dom))
        }
    }

    fn deliver(kind: Kind, vector: Option<u8>) -> Facts {
        deliver_of(1, kind, vector)
    }

    /// An event-channel upcall: an interrupt through `dom`'s IDT.
    fn upcall(dom: u16, vector: u8) -> Facts {
        Facts {
            vector: Some(vector),
            event_type: Some(EventType::Interrupt),
            ..facts(Kind::Inject, Some(dom))
        }
    }

    fn resume_of(dom: u16, cycles: u64) -> Facts {
        Facts {
            cycles: Some(cycles),
            rip: Some(0x2000),
            ..facts(Kind::Resume, Some(dom))
        }
    }

    fn resume(cycles: u64) -> Facts {
        resume_of(1, cycles)
    }

    fn notify(from: u16, to: u16, port: u32) -> Facts {
        Facts {
            notified: Some((to, port)),
            ..facts(Kind::Notify, Some(from))
        }
    }

    /// A `notify` that woke its receiver from a block.
    fn notify_waking(from: u16, to: u16, port: u32) -> Facts {
        Facts {
            woke: true,
            ..notify(from, to, port)
        }
    }

    fn schedule(from: Option<u16>, to: Option<u16>, why: ScheduleWhy, port: Option<u32>) -> Facts {
        Facts {
            switch: Some(Switch {
                from,
                to,
                why,
                port,
            }),
            ..facts(Kind::Schedule, None)
        }
    }

    fn at(mut facts: Facts, tsc: u64) -> Facts {
        facts.tsc = tsc;
        facts
    }

    #[test]
    fn kinds_are_named_in_the_order_of_the_schema() {
        let names: Vec<&str> = Kind::ALL.iter().map(|kind| kind.name()).collect();
        assert_eq!(names, traplab_abi::event::Body::KINDS);
        assert_eq!(Kind::from_name("grant_unmap"), Some(Kind::GrantUnmap));
        assert_eq!(Kind::from_name("party"), None);
    }

    /// `facts` as event `seq` of the trace.
    fn numbered(mut facts: Facts, seq: u64) -> Facts {
        facts.seq = seq;
        facts
    }

    #[test]
    fn events_missing_between_two_cut_the_flow_they_leave_open() {
        // A recording with two lines taken out: the IOIO's resume and the next #PF's exit.
        // The IOIO's flow must not take the #PF's decision and resume as its own.
        let flows = feed(&[
            numbered(exit(0x7b), 10),
            numbered(decide(Action::Emulate), 11),
            numbered(decide(Action::Reflect), 14),
            numbered(deliver(Kind::Inject, Some(14)), 15),
            numbered(resume(7), 16),
        ]);
        assert_eq!(flows.len(), 1, "{flows:?}");
        assert_eq!(flows[0].end, FlowEnd::Cut);
        assert_eq!(flows[0].last_action, Some(Action::Emulate));
    }

    #[test]
    fn a_flow_that_delivers_then_returns_does_not_return_from_itself() {
        // Valid input, if unusual: the handler of vector 14 returns in the flow that
        // delivered it. It used to link the flow to itself, and the TUI's story of the
        // handler sliced the flows between the two backwards, and panicked.
        let flows = feed(&[
            exit(0x74),
            decide(Action::Reflect),
            deliver(Kind::Inject, Some(14)),
            deliver(Kind::Return, Some(14)),
            resume(5),
        ]);
        assert_eq!(flows.len(), 1);
        assert_eq!(flows[0].returns_from, NO_FLOW);
        assert_eq!(flows[0].returned_by, NO_FLOW);
        // A delivers 14; B delivers 14 and returns from A's; C returns from B's, which
        // B's return must not have forgotten.
        let flows = feed(&[
            exit(0x4e),
            deliver(Kind::Inject, Some(14)),
            resume(5),
            exit(0x74),
            deliver(Kind::Inject, Some(14)),
            deliver(Kind::Return, Some(14)),
            resume(5),
            exit(0x74),
            deliver(Kind::Return, Some(14)),
            resume(5),
        ]);
        assert_eq!(flows.len(), 3);
        assert_eq!(flows[1].returns_from, 0);
        assert_eq!(flows[2].returns_from, 1);
    }

    #[test]
    fn a_reflected_fault_and_its_return_are_two_linked_flows() {
        let flows = feed(&[
            facts(Kind::Boot, None),
            schedule(None, Some(1), ScheduleWhy::Start, None),
            exit(0x4e),
            decide(Action::Reflect),
            deliver(Kind::Inject, Some(14)),
            resume(100),
            facts(Kind::Console, Some(1)),
            exit(0x7b),
            decide(Action::Emulate),
            facts(Kind::Emulate, Some(1)),
            resume(50),
            exit(0x74),
            decide(Action::Emulate),
            deliver(Kind::Return, Some(14)),
            resume(70),
        ]);
        assert_eq!(
            flows.len(),
            3,
            "the start of d1 is no flow: its first step is an exit"
        );
        assert_eq!(
            (
                flows[0].first,
                flows[0].len,
                flows[0].class(),
                flows[0].cycles
            ),
            (2, 4, "#PF", 100)
        );
        assert_eq!(flows[0].first_action, Some(Action::Reflect));
        assert_eq!(flows[0].delivered, Some(14));
        assert_eq!(flows[0].returned_by, 2);
        assert_eq!(flows[2].returns_from, 0);
        assert_eq!(flows[1].returned_by, NO_FLOW);
        assert_eq!(flows[1].class(), "IOIO");
        assert!(flows.iter().all(|flow| flow.end == FlowEnd::Resumed));
        assert!(flows.iter().all(|flow| !flow.was_away()));
        assert_eq!(
            flow_of(&flows, &[], 6),
            None,
            "the console line between flows is in none"
        );
        assert_eq!(flow_of(&flows, &[], 9), Some(1));
        assert_eq!(flow_of(&flows, &[], 1), None, "the start is in no flow");
        assert_eq!(flow_of(&flows, &[], 0), None);
    }

    #[test]
    fn chained_decisions_killed_domains_and_cut_traces() {
        let killed = Facts {
            domain_state: Some(DomainState::Killed),
            ..facts(Kind::Domain, Some(1))
        };
        let flows = feed(&[
            exit(0x4e),
            decide(Action::Bounce),
            decide(Action::Kill),
            killed,
            exit(0x72),
            decide(Action::Emulate),
            facts(Kind::End, None),
        ]);
        assert_eq!(flows[0].end, FlowEnd::Killed);
        assert_eq!(flows[0].action_text(), "bounce→kill");
        assert_eq!(flows[0].len, 4);
        assert_eq!(flows[1].end, FlowEnd::Cut);
        assert_eq!(flows[1].cycles(), None);
    }

    #[test]
    fn an_open_flow_is_pending() {
        let flows = feed(&[exit(0x4e)]);
        assert_eq!(flows[0].end, FlowEnd::Open);
        assert_eq!(flows[0].action_text(), "pending");
    }

    #[test]
    fn nested_deliveries_return_in_order() {
        let flows = feed(&[
            exit(0x4e),
            deliver(Kind::Inject, Some(14)),
            resume(1),
            exit(0x46),
            deliver(Kind::Inject, Some(6)),
            resume(1),
            exit(0x74),
            deliver(Kind::Return, Some(6)),
            resume(1),
            exit(0x74),
            deliver(Kind::Return, Some(14)),
            resume(1),
        ]);
        assert_eq!((flows[0].returned_by, flows[1].returned_by), (3, 2));
    }

    #[test]
    fn an_exception_is_classed_by_its_mnemonic_other_exits_by_their_name() {
        // An exception (0x4e: vector 14) is classed by its mnemonic, named by the trace's reason.
        assert_eq!(class_of(0x4e), "#PF");
        assert_eq!(class_of(0x42), "NMI", "vector 2 is the NMI exception");
        assert_eq!(class_of(0x7b), "IOIO");
        assert_eq!(class_of(0x13), "WRITE_CR3");
        // A flow keeps INVALID (-1) as 32 bits, as QEMU's TCG writes it.
        assert_eq!(class_of(0xffff_ffff), "INVALID");
        let flows = feed(&[exit(0x4e), resume(1), exit(0x7b), resume(1)]);
        assert_eq!((flows[0].reason(), flows[1].reason()), ("EXCP_PF", "IOIO"));
    }

    /// The contract of `tracer/SCHEMA.md`, "Domains side by side": d1 sends on an event
    /// channel, which wakes d2 (blocked in `SCHEDOP_block`); the woken domain runs first,
    /// takes its upcall, and blocks again; d1 goes on.
    fn ping() -> Vec<Facts> {
        vec![
            /* 0 */ facts(Kind::Boot, None),
            /* 1 */ at(schedule(None, Some(2), ScheduleWhy::Start, None), 10),
            // d2 blocks, waiting for an event: its flow stays open.
            /* 2 */
            at(exit_of(2, 0x81), 20),
            /* 3 */ decide_of(2, Action::Emulate),
            /* 4 */ facts(Kind::Emulate, Some(2)),
            /* 5 */ at(schedule(Some(2), None, ScheduleWhy::Blocked, None), 30),
            /* 6 */ at(schedule(None, Some(1), ScheduleWhy::Start, None), 40),
            // d1 sends on its port 1, bound to d2's port 3: forward, notify, d2 runs first.
            /* 7 */
            at(exit_of(1, 0x81), 100),
            /* 8 */ decide_of(1, Action::Forward),
            /* 9 */ notify(1, 2, 3),
            /* 10 */ facts(Kind::Emulate, Some(1)),
            /* 11 */ at(schedule(Some(1), Some(2), ScheduleWhy::Woken, Some(3)), 130),
            // d2's blocked flow goes on: the upcall, then VMRUN in its handler.
            /* 12 */
            upcall(2, 0xf3),
            /* 13 */ at(resume_of(2, 500), 520),
            /* 14 */ facts(Kind::Console, Some(2)),
            // d2's handler returns and d2 blocks again: d1 runs on.
            /* 15 */
            exit_of(2, 0x74),
            /* 16 */ decide_of(2, Action::Emulate),
            /* 17 */ deliver_of(2, Kind::Return, Some(0xf3)),
            /* 18 */ resume_of(2, 1),
            /* 19 */ at(exit_of(2, 0x81), 600),
            /* 20 */ decide_of(2, Action::Emulate),
            /* 21 */ at(schedule(Some(2), Some(1), ScheduleWhy::Blocked, None), 650),
            /* 22 */ at(resume_of(1, 600), 700),
            /* 23 */ facts(Kind::End, None),
        ]
    }

    #[test]
    fn a_domain_switched_out_keeps_its_flow_open_until_it_runs_again() {
        let (flows, continued) = assemble(&ping());
        let classes: Vec<(u16, &str)> = flows.iter().map(|flow| (flow.dom, flow.class())).collect();
        assert_eq!(
            classes,
            [(2, "VMMCALL"), (1, "VMMCALL"), (2, "IRET"), (2, "VMMCALL")]
        );
        let (blocked, send) = (&flows[0], &flows[1]);
        // d2's block: exit … schedule away at 5; back at the switch 11, upcall, resume.
        assert_eq!(
            (blocked.first, blocked.away, blocked.back, blocked.last()),
            (2, 5, 11, 13)
        );
        assert_eq!(
            blocked.events().collect::<Vec<_>>(),
            [2, 3, 4, 5, 11, 12, 13]
        );
        assert_eq!(blocked.end, FlowEnd::Resumed);
        assert_eq!(
            blocked.cycles(),
            Some(400),
            "500 ticks from its exit, less the 100 it was away (30 → 130)"
        );
        assert!(!blocked.contains(7), "d1's exit is not d2's");
        // d1's send: away at 11 (d2 runs first), back at 21, resumes at 22.
        assert_eq!(send.events().collect::<Vec<_>>(), [7, 8, 9, 10, 11, 21, 22]);
        assert_eq!(send.end, FlowEnd::Resumed);
        // Its time is the hypervisor's own: 600 ticks less the 520 d1 was away (130 → 650).
        assert_eq!(send.cycles(), Some(80));
        assert_eq!(continued, [0, 1]);
        // The last block of d2 never ends: the trace stops while it waits.
        assert_eq!((flows[3].end, flows[3].away), (FlowEnd::Cut, 21));
        // Every event of a flow is found in it; a schedule shared by two flows names the later.
        assert_eq!(flow_of(&flows, &continued, 12), Some(0));
        assert_eq!(flow_of(&flows, &continued, 22), Some(1));
        assert_eq!(flow_of(&flows, &continued, 9), Some(1));
        assert_eq!(
            flow_of(&flows, &continued, 14),
            None,
            "a console line between traps"
        );
        assert_eq!(flow_of(&flows, &continued, 6), None, "d1's start");
        assert_eq!(flow_of(&flows, &continued, 21), Some(3));
    }

    #[test]
    fn a_forward_is_linked_to_the_upcall_it_caused() {
        let (flows, _) = assemble(&ping());
        assert_eq!(flows[1].first_action, Some(Action::Forward));
        assert_eq!(flows[1].woke, 0, "d1's send woke d2's blocked flow");
        assert_eq!(flows[0].woken_by, 1);
        assert_eq!(flows[0].delivered, Some(0xf3));
        assert_eq!(
            flows[0].returned_by, 2,
            "the upcall's handler returns in flow 2"
        );
        assert_eq!((flows[2].woke, flows[2].woken_by), (NO_FLOW, NO_FLOW));
    }

    #[test]
    fn a_forward_is_linked_to_the_poll_it_woke_without_an_upcall() {
        // d2 polls its port (blocked); d1 sends; d2's poll returns, no upcall delivered.
        let events = vec![
            facts(Kind::Boot, None),
            at(schedule(None, Some(2), ScheduleWhy::Start, None), 10),
            at(exit_of(2, 0x81), 20),
            decide_of(2, Action::Emulate),
            at(schedule(Some(2), Some(1), ScheduleWhy::Blocked, None), 30),
            at(exit_of(1, 0x81), 100),
            decide_of(1, Action::Forward),
            notify(1, 2, 3),
            at(schedule(Some(1), Some(2), ScheduleWhy::Woken, Some(3)), 130),
            at(resume_of(2, 200), 220),
            facts(Kind::End, None),
        ];
        let (flows, _) = assemble(&events);
        assert_eq!((flows[0].dom, flows[1].dom), (2, 1));
        assert_eq!(flows[1].woke, 0, "d1's send woke d2's poll");
        assert_eq!(flows[0].woken_by, 1);
        assert_eq!(flows[0].delivered, None, "no upcall");
    }

    #[test]
    fn a_wake_is_the_send_that_woke_and_not_the_domain_s_own_bind_before_it() {
        // d2 binds an interdomain port (the hypervisor makes the new port 1 pending, as Xen
        // does: a notify to itself that wakes nobody), takes it by polling, and blocks; d1
        // sends on it and wakes d2. The wake is d1's, not d2's own bind's.
        let events = vec![
            facts(Kind::Boot, None),
            at(schedule(None, Some(2), ScheduleWhy::Start, None), 10),
            at(exit_of(2, 0x81), 20),
            decide_of(2, Action::Emulate),
            notify(2, 2, 1),
            at(resume_of(2, 10), 30),
            at(exit_of(2, 0x81), 40),
            decide_of(2, Action::Emulate),
            at(schedule(Some(2), Some(1), ScheduleWhy::Blocked, None), 50),
            at(exit_of(1, 0x81), 60),
            decide_of(1, Action::Forward),
            notify_waking(1, 2, 1),
            at(schedule(Some(1), Some(2), ScheduleWhy::Woken, Some(1)), 70),
            at(resume_of(2, 80), 80),
            facts(Kind::End, None),
        ];
        let (flows, _) = assemble(&events);
        let doms: Vec<u16> = flows.iter().map(|flow| flow.dom).collect();
        assert_eq!(doms, [2, 2, 1]);
        assert_eq!(flows[1].woken_by, 2, "d1's send woke d2's blocked flow");
        assert_eq!(flows[2].woke, 1);
        assert_eq!(flows[0].woke, NO_FLOW, "d2's own bind woke nothing");
    }

    #[test]
    fn an_upcall_keeps_the_cause_its_wake_named_and_not_an_older_notification() {
        // d2 blocks; d3 sends on port 2 (masked at d2: it stays pending, wakes nobody); d1
        // sends on port 1 and wakes d2 (the schedule names port 1); d2 takes its upcall.
        // d2's flow was woken by d1's send: the upcall's inject must not relink it to d3's.
        let events = vec![
            facts(Kind::Boot, None),
            at(schedule(None, Some(2), ScheduleWhy::Start, None), 10),
            at(exit_of(2, 0x81), 20),
            decide_of(2, Action::Emulate),
            at(schedule(Some(2), Some(3), ScheduleWhy::Blocked, None), 30),
            at(exit_of(3, 0x81), 40),
            decide_of(3, Action::Forward),
            notify(3, 2, 2),
            at(resume_of(3, 10), 50),
            at(schedule(Some(3), Some(1), ScheduleWhy::Yielded, None), 60),
            at(exit_of(1, 0x81), 100),
            decide_of(1, Action::Forward),
            notify(1, 2, 1),
            at(schedule(Some(1), Some(2), ScheduleWhy::Woken, Some(1)), 130),
            Facts {
                vector: Some(0xf3),
                event_type: Some(EventType::Interrupt),
                ..facts(Kind::Inject, Some(2))
            },
            at(resume_of(2, 200), 220),
            facts(Kind::End, None),
        ];
        let (flows, _) = assemble(&events);
        let doms: Vec<u16> = flows.iter().map(|flow| flow.dom).collect();
        assert_eq!(doms, [2, 3, 1]);
        assert_eq!(flows[0].woken_by, 2, "d1's send, on the port that woke it");
        assert_eq!(flows[2].woke, 0);
        assert_eq!(flows[1].woke, NO_FLOW, "d3's send woke nothing");
    }

    #[test]
    fn an_upcall_without_an_exit_of_its_own_is_a_flow_that_starts_at_the_switch() {
        // d2 was preempted by its time slice (its flow resumed later); d1 sends while d2 is
        // runnable; when d2 runs again its upcall comes without an exit of its own.
        let flows = feed(&[
            schedule(None, Some(1), ScheduleWhy::Start, None),
            exit_of(1, 0x81),
            decide_of(1, Action::Forward),
            notify(1, 2, 3),
            notify(1, 2, 3),
            resume_of(1, 10),
            exit_of(1, 0x81),
            decide_of(1, Action::Emulate),
            schedule(Some(1), Some(2), ScheduleWhy::Yielded, None),
            upcall(2, 0xf3),
            resume_of(2, 5),
        ]);
        let upcall = &flows[2];
        assert_eq!(
            (
                upcall.first,
                upcall.len,
                upcall.dom,
                upcall.class(),
                upcall.reason()
            ),
            (8, 3, 2, "upcall", "-")
        );
        assert!(!upcall.has_exit());
        assert_eq!(upcall.rip, 0x2000, "where the guest resumes: its handler");
        assert_eq!(upcall.woken_by, 0, "the first send made the port pending");
        assert_eq!(flows[0].woke, 2);
        assert_eq!(flows[1].woke, NO_FLOW, "d1's yield sent nothing");
        assert_eq!(flows[1].away, 8, "d1 yielded and is away");
        assert_eq!(flows[1].end, FlowEnd::Open);
    }

    #[test]
    fn a_start_with_a_resume_is_a_schedule_flow_and_an_exception_is_no_upcall() {
        let flows = feed(&[
            schedule(None, Some(1), ScheduleWhy::Start, None),
            resume_of(1, 3),
            exit_of(2, 0x81),
            decide_of(2, Action::Forward),
            notify(2, 1, 4),
            resume_of(2, 1),
            // d1's next delivery is its own #PF: not the upcall.
            exit(0x4e),
            deliver(Kind::Inject, Some(14)),
            resume(1),
        ]);
        assert_eq!(
            (flows[0].class(), flows[0].first, flows[0].end),
            ("schedule", 0, FlowEnd::Resumed)
        );
        assert_eq!(flows[0].action_text(), "switch");
        assert_eq!(flows[1].woke, NO_FLOW);
        assert_eq!(flows[2].woken_by, NO_FLOW);
    }

    #[test]
    fn a_third_part_cuts_the_flow_and_a_domain_may_end_while_away() {
        let killed = Facts {
            domain_state: Some(DomainState::Killed),
            ..facts(Kind::Domain, Some(2))
        };
        let flows = feed(&[
            exit_of(1, 0x78),
            schedule(Some(1), Some(2), ScheduleWhy::Blocked, None),
            exit_of(2, 0x81),
            schedule(Some(2), Some(1), ScheduleWhy::SliceOver, None),
            facts(Kind::Emulate, Some(1)),
            schedule(Some(1), Some(3), ScheduleWhy::SliceOver, None),
            killed,
        ]);
        assert_eq!(flows[0].end, FlowEnd::Cut, "switched out twice in one flow");
        assert_eq!(flows[0].events().collect::<Vec<_>>(), [0, 1, 3, 4]);
        assert_eq!(flows[1].end, FlowEnd::Killed);
        assert_eq!(flows[1].events().collect::<Vec<_>>(), [2, 3, 6]);
    }

    #[test]
    fn a_flow_repeats_the_same_trap_at_the_same_instruction_handled_the_same_way() {
        let out = |rip: u64| {
            [
                Facts {
                    rip: Some(rip),
                    ..exit(0x7b)
                },
                decide(Action::Emulate),
                facts(Kind::Emulate, Some(1)),
                resume(10),
            ]
        };
        let mut events: Vec<Facts> = [out(0x10), out(0x10), out(0x20)].concat();
        // A #PF at the same RIP, reflected: delivered, so it never repeats.
        events.extend([
            Facts {
                rip: Some(0x20),
                ..exit(0x4e)
            },
            decide(Action::Reflect),
            deliver(Kind::Inject, Some(14)),
            resume(10),
        ]);
        let flows = feed(&events);
        assert!(flows[1].repeats(&flows[0]));
        assert!(!flows[2].repeats(&flows[1]), "another instruction");
        assert!(!flows[3].repeats(&flows[2]), "another trap");
        assert!(
            !flows[3].repeats(&flows[3]),
            "a delivery is part of a story"
        );
    }
}
