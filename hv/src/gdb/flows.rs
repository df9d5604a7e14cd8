//! The trap flows gdb's `monitor traps` and `monitor decision` talk about: the debugged
//! domain's last exits, each with the hypervisor's decision on it.
//!
//! Not every exit is the guest's trap. The hypervisor's own timer interrupts the guest
//! (an INTR exit) a hundred times a second so that it keeps control (`timer.rs`), and gdb's
//! own stops — its single steps, its `int3`s, its watchpoints — are exits too. `monitor
//! traps` lists them all; `monitor decision` ("what did the hypervisor decide?") means the
//! guest's last trap, so it passes over both. Pure, so the host tests it.

use alloc::collections::VecDeque;
use alloc::string::String;

/// How many flows are kept.
pub const KEPT: usize = 64;

/// Whose exit a flow is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// The guest's: an exception, an instruction the hypervisor intercepts, a hypercall…
    Trap,
    /// The hypervisor's own timer tick (an INTR exit).
    Tick,
    /// gdb's own stop: a step, a breakpoint, a watchpoint.
    Gdb,
}

/// One exit and what the hypervisor decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Flow {
    /// The exit, as `monitor traps` shows it (`EXCP_PF at 0x200123`).
    pub exit: String,
    pub kind: Kind,
    /// `None` until the hypervisor decided.
    pub decision: Option<String>,
}

/// The last [`KEPT`] flows, oldest first.
#[derive(Debug, Default)]
pub struct Flows {
    recent: VecDeque<Flow>,
}

impl Flows {
    pub const fn new() -> Flows {
        Flows {
            recent: VecDeque::new(),
        }
    }

    /// An exit happened.
    pub fn exit(&mut self, exit: String, kind: Kind) {
        if self.recent.len() == KEPT {
            self.recent.pop_front();
        }
        self.recent.push_back(Flow {
            exit,
            kind,
            decision: None,
        });
    }

    /// The hypervisor decided: the first decision after an exit is that exit's.
    pub fn decided(&mut self, decision: String) {
        if let Some(flow) = self.recent.back_mut()
            && flow.decision.is_none()
        {
            flow.decision = Some(decision);
        }
    }

    /// The last exit was gdb's own stop, decided so.
    pub fn gdbs_own(&mut self, decision: String) {
        if let Some(flow) = self.recent.back_mut() {
            flow.kind = Kind::Gdb;
        }
        self.decided(decision);
    }

    /// The last `count` flows, oldest first.
    pub fn last(&self, count: usize) -> impl Iterator<Item = &Flow> {
        self.recent
            .iter()
            .skip(self.recent.len().saturating_sub(count))
    }

    pub fn is_empty(&self) -> bool {
        self.recent.is_empty()
    }

    /// The guest's last decided trap: neither a timer tick nor gdb's own stop.
    pub fn last_trap(&self) -> Option<&Flow> {
        self.recent
            .iter()
            .rev()
            .find(|flow| flow.kind == Kind::Trap && flow.decision.is_some())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `stepi` over the faulting store of the page-fault lab: the #PF exit (reflected), a
    /// timer tick while the step was armed, then the fetch trap that ends gdb's step.
    fn after_a_stepi_over_the_fault() -> Flows {
        let mut flows = Flows::new();
        flows.exit("EXCP_DB at 0x200120".into(), Kind::Trap);
        flows.gdbs_own("emulate: a #DB caused by gdb (a single step)".into());
        flows.exit("EXCP_PF at 0x200123".into(), Kind::Trap);
        flows.decided("reflect: the guest owns its exceptions (#PF page fault)".into());
        flows.decided("a later decision of the same flow".into());
        flows.exit("INTR at 0x200123".into(), Kind::Tick);
        flows.decided("emulate: the hypervisor's timer".into());
        flows.exit("NPF at 0x200400".into(), Kind::Trap);
        flows.gdbs_own("emulate: gdb's step ends here".into());
        flows
    }

    #[test]
    fn the_last_trap_is_the_guests_not_a_tick_nor_gdbs_step() {
        let flows = after_a_stepi_over_the_fault();
        let last = flows.last_trap().expect("a trap");
        assert_eq!(last.exit, "EXCP_PF at 0x200123");
        assert_eq!(
            last.decision.as_deref(),
            Some("reflect: the guest owns its exceptions (#PF page fault)")
        );
    }

    #[test]
    fn traps_lists_every_flow_ticks_and_gdbs_own_included() {
        let flows = after_a_stepi_over_the_fault();
        let exits: Vec<&str> = flows.last(3).map(|flow| flow.exit.as_str()).collect();
        assert_eq!(
            exits,
            ["EXCP_PF at 0x200123", "INTR at 0x200123", "NPF at 0x200400"]
        );
        assert_eq!(flows.last(100).count(), 4);
    }

    #[test]
    fn an_undecided_exit_is_not_the_last_trap() {
        let mut flows = after_a_stepi_over_the_fault();
        flows.exit("EXCP_UD at 0x200500".into(), Kind::Trap);
        assert_eq!(
            flows.last_trap().map(|flow| flow.exit.as_str()),
            Some("EXCP_PF at 0x200123")
        );
        assert!(Flows::new().last_trap().is_none());
    }

    #[test]
    fn only_the_last_flows_are_kept() {
        let mut flows = Flows::new();
        for n in 0..KEPT + 5 {
            flows.exit(format!("exit {n}"), Kind::Trap);
        }
        assert_eq!(flows.last(usize::MAX).count(), KEPT);
        assert_eq!(
            flows.last(1).next().map(|f| f.exit.as_str()),
            Some("exit 68")
        );
    }
}
