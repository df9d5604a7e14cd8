//! Two traces side by side, aligned flow by flow: the same lab with another setting, or
//! the same faults reflected in one domain and bounced in another.
//!
//! Flows are aligned on their trap class (the exit code) with a Myers diff (the `similar`
//! crate), so the same fault lines up however differently it was handled; aligned flows
//! whose handling differs (the decision, the event delivered, how it ended) are marked.

use crate::flows::Flow;
use crate::store::Trace;
use similar::{Algorithm, DiffOp, capture_diff_slices};

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
}

/// Align the flows of `left` and `right`.
pub fn align(left: Side, right: Side) -> Vec<Row> {
    let left_flows = left.flows();
    let right_flows = right.flows();
    let key = |side: &Side, numbers: &[usize]| -> Vec<u32> {
        numbers
            .iter()
            .map(|&n| side.trace.flows()[n].exitcode)
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
