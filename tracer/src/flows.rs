//! Trap flows: the events of one trap, from its `exit` to its `resume`.
//!
//! ```text
//!  exit ─► decide ─► [emulate] [inject | bounce] [console] ─► resume      one flow
//!                                  │
//!                                  └─ the guest's handler runs (its own flows) ─► IRET exit ─► … return ─► resume
//! ```
//!
//! The hypervisor handles one exit at a time, so a flow is a *contiguous* run of events:
//! it starts at an `exit` and ends at the `resume` (or at the `domain` event that ends the
//! domain). A flow that delivered an event (`inject`/`bounce`) is linked to the later flow
//! whose `return` ends that delivery, so the TUI can tell the whole story: exit → decide →
//! inject → handler → return → resume.
//!
//! [`Assembler`] builds flows incrementally from [`Facts`], the few fields of each event it
//! needs, so the same code serves a recording of a million events and a live run.

use std::collections::HashMap;
use traplab_abi::event::{Action, DomainState};
use traplab_abi::exit::ExitReason;

/// What kind of event, in one byte (the JSON `"kind"`).
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
    Resume,
    Console,
    Lost,
    End,
}

impl Kind {
    pub const ALL: [Kind; 12] = [
        Kind::Boot,
        Kind::Domain,
        Kind::Exit,
        Kind::Decide,
        Kind::Emulate,
        Kind::Inject,
        Kind::Bounce,
        Kind::Return,
        Kind::Resume,
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
    /// `resume`: TSC ticks from the exit.
    pub cycles: Option<u64>,
    /// `domain`.
    pub domain_state: Option<DomainState>,
    pub domain_name: Option<String>,
    /// `boot`.
    pub tsc_hz: Option<u64>,
    /// `lost`.
    pub lost: Option<u64>,
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
            Body::Inject(inject) => facts.vector = Some(inject.vector),
            Body::Bounce(bounce) => facts.vector = Some(bounce.vector),
            Body::Return(ret) => {
                facts.vector = ret.vector;
                facts.rip = Some(ret.rip);
            }
            Body::Resume(resume) => {
                facts.rip = Some(resume.rip);
                facts.cycles = Some(resume.cycles);
            }
            Body::Lost(lost) => facts.lost = Some(lost.count),
            Body::Emulate(_) | Body::Console(_) | Body::End(_) => {}
        }
        facts
    }
}

/// "No such flow" in the `u32` links of [`Flow`] (a `u32` instead of `Option<usize>` keeps
/// a flow small: a million-event recording holds a quarter of a million flows).
pub const NO_FLOW: u32 = u32::MAX;
/// "No cycle count" (the flow never resumed).
pub const NO_CYCLES: u64 = u64::MAX;

/// How a flow ended.
#[repr(u8)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlowEnd {
    /// Still waiting for its resume (a live run, or the hypervisor stopped in it).
    Open,
    /// VMRUN: the guest runs again.
    Resumed,
    /// The domain ended in this flow (`exit` hypercall).
    Exited,
    /// The hypervisor killed the domain (a triple fault, a fatal error).
    Killed,
    /// The trace ended, or lost events, before the flow did.
    Cut,
}

/// One trap flow: events `first .. first + len` of the trace.
#[derive(Debug, Clone, PartialEq)]
pub struct Flow {
    /// Index of the `exit` event.
    pub first: u32,
    /// How many events the flow has, `exit` included.
    pub len: u32,
    /// The exit's TSC.
    pub tsc: u64,
    /// The guest's RIP at the exit.
    pub rip: u64,
    /// TSC ticks from the exit to the resume, as the hypervisor measured them, or [`NO_CYCLES`].
    pub cycles: u64,
    /// The SVM exit code (`INVALID`, -1, is kept as `0xffff_ffff`, as TCG writes it).
    pub exitcode: u32,
    /// The later flow whose `return` ends the event this flow delivered, or [`NO_FLOW`].
    pub returned_by: u32,
    /// For a flow with a `return`: the flow that delivered the event, or [`NO_FLOW`].
    pub returns_from: u32,
    pub dom: u16,
    /// The first and the last decision (they differ when one decision leads to another,
    /// e.g. a bounce without a trap-table entry becomes a #GP).
    pub first_action: Option<Action>,
    pub last_action: Option<Action>,
    /// The vector the flow delivered (`inject`/`bounce`).
    pub delivered: Option<u8>,
    pub end: FlowEnd,
}

impl Flow {
    /// The trap class, as the labs name it: `#PF` for an exception, else the exit name (`IOIO`).
    pub fn class(&self) -> &'static str {
        class_of(self.exitcode as u64)
    }

    /// The exit reason, as the trace's `"reason"` spells it (`EXCP_PF`).
    pub fn reason(&self) -> &'static str {
        ExitReason::from_code(self.exitcode as u64).name()
    }

    /// `reflect`, or `bounce→kill` when the decisions changed.
    pub fn action_text(&self) -> String {
        match (self.first_action, self.last_action) {
            (Some(first), Some(last)) if first != last => {
                format!("{}→{}", first.name(), last.name())
            }
            (Some(first), _) => first.name().to_string(),
            (None, _) if self.end == FlowEnd::Open => "pending".into(),
            (None, _) => "-".into(),
        }
    }

    /// Index of the last event.
    pub fn last(&self) -> u32 {
        self.first + self.len.saturating_sub(1)
    }

    pub fn contains(&self, event: u32) -> bool {
        event >= self.first && event < self.first + self.len
    }

    pub fn cycles(&self) -> Option<u64> {
        (self.cycles != NO_CYCLES).then_some(self.cycles)
    }
}

/// The trap class of an exit code: `#PF` for an exception, else the exit name
/// ([`ExitReason::class`]; a flow keeps only the code, and the class needs no EXITINFO).
pub fn class_of(exitcode: u64) -> &'static str {
    ExitReason::from_code(exitcode).class()
}

/// Builds flows from events, one at a time, in trace order.
#[derive(Debug, Default)]
pub struct Assembler {
    /// The flow that has its exit but not yet its end.
    open: Option<u32>,
    /// Per domain, the deliveries whose handler has not returned yet: (flow, vector).
    /// A stack, since a handler can fault in turn (a #PF inside the #PF handler).
    undelivered: HashMap<u16, Vec<(u32, u8)>>,
}

impl Assembler {
    pub fn new() -> Assembler {
        Assembler::default()
    }

    /// The flow still waiting for its end, if any.
    pub fn open_flow(&self) -> Option<u32> {
        self.open
    }

    /// Take event number `index` (its position in the trace) into the flows.
    pub fn observe(&mut self, index: u32, facts: &Facts, flows: &mut Vec<Flow>) {
        match facts.kind {
            Kind::Exit => {
                // An exit while a flow is open means the trace skipped its end.
                self.close(flows, FlowEnd::Cut);
                self.open = Some(flows.len() as u32);
                flows.push(Flow {
                    first: index,
                    len: 1,
                    tsc: facts.tsc,
                    rip: facts.rip.unwrap_or(0),
                    cycles: NO_CYCLES,
                    exitcode: facts
                        .exitcode
                        .map_or(u32::MAX, |code| code.min(u32::MAX as u64) as u32),
                    returned_by: NO_FLOW,
                    returns_from: NO_FLOW,
                    dom: facts.dom.unwrap_or(u16::MAX),
                    first_action: None,
                    last_action: None,
                    delivered: None,
                    end: FlowEnd::Open,
                });
            }
            // Nothing in a flow follows these: the hypervisor starts, stops, or lost events.
            Kind::Boot | Kind::End | Kind::Lost => self.close(flows, FlowEnd::Cut),
            _ => {
                let Some(open) = self.open else { return };
                let Some(flow) = flows.get_mut(open as usize) else {
                    return;
                };
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
                                .entry(flow.dom)
                                .or_default()
                                .push((open, vector));
                        }
                    }
                    Kind::Return => {
                        let dom = flow.dom;
                        if let Some(vector) = facts.vector
                            && let Some(stack) = self.undelivered.get_mut(&dom)
                            && let Some(position) = stack
                                .iter()
                                .rposition(|&(_, delivered)| delivered == vector)
                        {
                            let (delivering, _) = stack.remove(position);
                            // Anything delivered after it and still open never returned
                            // (its handler did not IRET): forget it.
                            stack.truncate(position);
                            flows[open as usize].returns_from = delivering;
                            flows[delivering as usize].returned_by = open;
                        }
                    }
                    Kind::Resume => {
                        flow.cycles = facts.cycles.unwrap_or(NO_CYCLES);
                        flow.end = FlowEnd::Resumed;
                        self.open = None;
                    }
                    Kind::Domain => match facts.domain_state {
                        Some(DomainState::Exited) if facts.dom == Some(flow.dom) => {
                            flow.end = FlowEnd::Exited;
                            self.open = None;
                        }
                        Some(DomainState::Killed) if facts.dom == Some(flow.dom) => {
                            flow.end = FlowEnd::Killed;
                            self.open = None;
                        }
                        _ => {}
                    },
                    _ => {}
                }
                if self.open.is_none() {
                    let dom = flows[open as usize].dom;
                    if matches!(flows[open as usize].end, FlowEnd::Exited | FlowEnd::Killed) {
                        self.undelivered.remove(&dom);
                    }
                }
            }
        }
    }

    fn close(&mut self, flows: &mut [Flow], end: FlowEnd) {
        if let Some(open) = self.open.take()
            && let Some(flow) = flows.get_mut(open as usize)
        {
            flow.end = end;
        }
    }
}

/// The flow that holds event `index`, by binary search (flows are in trace order).
pub fn flow_of(flows: &[Flow], index: u32) -> Option<usize> {
    let after = flows.partition_point(|flow| flow.first <= index);
    let candidate = after.checked_sub(1)?;
    flows[candidate].contains(index).then_some(candidate)
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

    fn feed(events: &[Facts]) -> Vec<Flow> {
        let mut assembler = Assembler::new();
        let mut flows = Vec::new();
        for (index, event) in events.iter().enumerate() {
            assembler.observe(index as u32, event, &mut flows);
        }
        flows
    }

    fn exit(code: u64) -> Facts {
        Facts {
            exitcode: Some(code),
            rip: Some(0x1000),
            ..facts(Kind::Exit, Some(0))
        }
    }

    fn decide(action: Action) -> Facts {
        Facts {
            action: Some(action),
            ..facts(Kind::Decide, Some(0))
        }
    }

    fn deliver(kind: Kind, vector: Option<u8>) -> Facts {
        Facts {
            vector,
            ..facts(kind, Some(0))
        }
    }

    fn resume(cycles: u64) -> Facts {
        Facts {
            cycles: Some(cycles),
            ..facts(Kind::Resume, Some(0))
        }
    }

    #[test]
    fn a_reflected_fault_and_its_return_are_two_linked_flows() {
        let flows = feed(&[
            facts(Kind::Boot, None),
            exit(0x4e),
            decide(Action::Reflect),
            deliver(Kind::Inject, Some(14)),
            resume(100),
            facts(Kind::Console, Some(0)),
            exit(0x7b),
            decide(Action::Emulate),
            facts(Kind::Emulate, Some(0)),
            resume(50),
            exit(0x74),
            decide(Action::Emulate),
            deliver(Kind::Return, Some(14)),
            resume(70),
        ]);
        assert_eq!(flows.len(), 3);
        assert_eq!(
            (
                flows[0].first,
                flows[0].len,
                flows[0].class(),
                flows[0].cycles
            ),
            (1, 4, "#PF", 100)
        );
        assert_eq!(flows[0].first_action, Some(Action::Reflect));
        assert_eq!(flows[0].delivered, Some(14));
        assert_eq!(flows[0].returned_by, 2);
        assert_eq!(flows[2].returns_from, 0);
        assert_eq!(flows[1].returned_by, NO_FLOW);
        assert_eq!(flows[1].class(), "IOIO");
        assert!(flows.iter().all(|flow| flow.end == FlowEnd::Resumed));
        assert_eq!(
            flow_of(&flows, 5),
            None,
            "the console line between flows is in none"
        );
        assert_eq!(flow_of(&flows, 8), Some(1));
        assert_eq!(flow_of(&flows, 0), None);
    }

    #[test]
    fn chained_decisions_killed_domains_and_cut_traces() {
        let killed = Facts {
            domain_state: Some(DomainState::Killed),
            ..facts(Kind::Domain, Some(0))
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
}
