//! Two traces side by side, aligned flow by flow: the same lab with another setting, or
//! the same faults reflected in one domain and bounced in another.
//!
//! Flows are aligned on their trap class (the exit code) with a Myers diff (the `similar`
//! crate), so the same fault lines up however differently it was handled; aligned flows
//! whose handling differs (the decision, the event delivered, how it ended, whether it woke
//! another domain) are marked.

use crate::flows::{Flow, NO_FLOW};
use crate::store::Trace;
use similar::{Algorithm, DiffOp, capture_diff_slices};
use traplab_abi::event::domain_label;

/// One side: a trace and, optionally, only one of its domains.
#[derive(Debug, Clone, Copy)]
pub struct Side<'a> {
    pub trace: &'a Trace,
    pub dom: Option<u16>,
}

impl<'a> Side<'a> {
    /// The flow numbers this side compares.
    pub fn flows(&self) -> Vec<usize> {
        let flows = self.trace.flows();
        (0..flows.len())
            .filter(|&number| self.dom.is_none_or(|dom| flows[number].dom == dom))
            .collect()
    }
}

/// One row of the alignment: flow numbers in the left and the right trace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Row {
    /// The same class, handled the same way.
    Same(usize, usize),
    /// The same class, handled differently.
    Differs(usize, usize),
    OnlyLeft(usize),
    OnlyRight(usize),
}

impl Row {
    /// `=`, `≠`, `<`, `>`.
    pub fn marker(self) -> char {
        match self {
            Row::Same(..) => '=',
            Row::Differs(..) => '≠',
            Row::OnlyLeft(_) => '<',
            Row::OnlyRight(_) => '>',
        }
    }
}

/// Whether two flows of the same class were handled the same way.
pub fn same_handling(left: &Flow, right: &Flow) -> bool {
    left.first_action == right.first_action
        && left.last_action == right.last_action
        && left.delivered == right.delivered
        && left.end == right.end
        && (left.woke == NO_FLOW) == (right.woke == NO_FLOW)
        && (left.woken_by == NO_FLOW) == (right.woken_by == NO_FLOW)
}

/// A flow's links to other flows across domains, in a few characters: `→d2` when its
/// `notify` woke d2's upcall, `←d1` when its upcall came from d1's `notify`.
pub fn links(trace: &Trace, flow: &Flow) -> String {
    let flows = trace.flows();
    let mut text = String::new();
    if let Some(woken) = flows.get(flow.woke as usize) {
        text.push_str(&format!("→{}", domain_label(woken.dom)));
    }
    if let Some(sender) = flows.get(flow.woken_by as usize) {
        text.push_str(&format!("←{}", domain_label(sender.dom)));
    }
    text
}

/// Align the flows of `left` and `right`.
pub fn align(left: Side, right: Side) -> Vec<Row> {
    let left_flows = left.flows();
    let right_flows = right.flows();
    // Exits align on their code; a flow without an exit (an upcall on a switch) has none,
    // and aligns only with another such flow of the same class.
    let key = |side: &Side, numbers: &[usize]| -> Vec<(bool, u32, &'static str)> {
        numbers
            .iter()
            .map(|&n| {
                let flow = &side.trace.flows()[n];
                (flow.has_exit(), flow.exitcode, flow.class())
            })
            .collect()
    };
    let left_keys = key(&left, &left_flows);
    let right_keys = key(&right, &right_flows);
    let mut rows = Vec::new();
    for op in capture_diff_slices(Algorithm::Myers, &left_keys, &right_keys) {
        match op {
            DiffOp::Equal {
                old_index,
                new_index,
                len,
            } => {
                for offset in 0..len {
                    let (a, b) = (
                        left_flows[old_index + offset],
                        right_flows[new_index + offset],
                    );
                    let same = same_handling(&left.trace.flows()[a], &right.trace.flows()[b]);
                    rows.push(if same {
                        Row::Same(a, b)
                    } else {
                        Row::Differs(a, b)
                    });
                }
            }
            DiffOp::Delete {
                old_index, old_len, ..
            } => {
                rows.extend(
                    left_flows[old_index..old_index + old_len]
                        .iter()
                        .map(|&a| Row::OnlyLeft(a)),
                );
            }
            DiffOp::Insert {
                new_index, new_len, ..
            } => {
                rows.extend(
                    right_flows[new_index..new_index + new_len]
                        .iter()
                        .map(|&b| Row::OnlyRight(b)),
                );
            }
            DiffOp::Replace {
                old_index,
                old_len,
                new_index,
                new_len,
            } => {
                rows.extend(
                    left_flows[old_index..old_index + old_len]
                        .iter()
                        .map(|&a| Row::OnlyLeft(a)),
                );
                rows.extend(
                    right_flows[new_index..new_index + new_len]
                        .iter()
                        .map(|&b| Row::OnlyRight(b)),
                );
            }
        }
    }
    rows
}

/// How many rows of each kind: (same, differs, only left, only right).
pub fn summary(rows: &[Row]) -> (usize, usize, usize, usize) {
    rows.iter().fold(
        (0, 0, 0, 0),
        |(same, differs, left, right), row| match row {
            Row::Same(..) => (same + 1, differs, left, right),
            Row::Differs(..) => (same, differs + 1, left, right),
            Row::OnlyLeft(_) => (same, differs, left + 1, right),
            Row::OnlyRight(_) => (same, differs, left, right + 1),
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Trace {
        let mut trace = Trace::live("ping");
        for event in crate::sample::event_channel_ping() {
            trace.push_event(&event);
        }
        trace
    }

    #[test]
    fn a_flow_that_woke_another_domain_differs_from_one_that_did_not() {
        let trace = sample();
        let flows = trace.flows();
        assert_eq!(links(&trace, &flows[1]), "→d2");
        assert_eq!(links(&trace, &flows[0]), "←d1");
        assert_eq!(links(&trace, &flows[2]), "");
        // d1's send and d2's block are both VMMCALL exits: aligned, but handled differently.
        let rows = align(
            Side {
                trace: &trace,
                dom: Some(1),
            },
            Side {
                trace: &trace,
                dom: Some(2),
            },
        );
        assert_eq!(rows[0], Row::Differs(1, 0));
        let mut quiet = flows[1].clone();
        quiet.woke = NO_FLOW;
        quiet.first_action = flows[0].first_action;
        quiet.last_action = flows[0].last_action;
        quiet.delivered = flows[0].delivered;
        assert!(!same_handling(&quiet, &flows[0]), "only one was woken");
        quiet.woken_by = 1;
        assert!(same_handling(&quiet, &flows[0]));
    }
}
