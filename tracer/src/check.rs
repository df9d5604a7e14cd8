//! What a complete trace promises: `seq` counts 0, 1, 2, … without a gap, no event was
//! lost, and it ends with the hypervisor's `end` event. [`StreamCheck`] watches a stream
//! and says when a promise is broken.

use traplab_abi::event::{Body, Event};

/// A broken promise.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StreamFault {
    /// `found` came where `expected` should have: the events from `expected` to `found - 1`
    /// are missing.
    #[error("{}", gap(*expected, *found))]
    Gap { expected: u64, found: u64 },
    /// `seq` went back, or repeated: events out of order, or the same one twice.
    #[error(
        "seq {found} came after seq {previous}: events are out of order or repeated (seq only goes up)"
    )]
    Backwards { previous: u64, found: u64 },
    #[error("the hypervisor lost {count} event(s) before seq {seq}")]
    Lost { count: u64, seq: u64 },
    #[error("the trace ends without the hypervisor's end event: it is incomplete")]
    Truncated,
    /// An event after `end`, which is the last one.
    #[error("seq {seq} came after the hypervisor's end event, which is the last one")]
    AfterEnd { seq: u64 },
}

/// What a [`StreamFault::Gap`] says: how many events, which seqs, and the jump.
fn gap(expected: u64, found: u64) -> String {
    let missing = found.saturating_sub(expected);
    let which = match missing {
        1 => format!("1 event is missing (seq {expected})"),
        _ => format!(
            "{missing} events are missing (seq {expected} to {})",
            found.saturating_sub(1)
        ),
    };
    match expected.checked_sub(1) {
        Some(previous) => format!("{which}: seq jumped from {previous} to {found}"),
        None => format!("{which}: the first event is seq {found}"),
    }
}

/// Follows a stream of events.
#[derive(Debug, Default)]
pub struct StreamCheck {
    /// The last `seq` seen (`None` before the first event).
    last_seq: Option<u64>,
    ended: bool,
    faults: Vec<StreamFault>,
}

impl StreamCheck {
    pub fn new() -> StreamCheck {
        StreamCheck::default()
    }

    /// Look at the next event; returns the faults it reveals (a `lost` event after a gap
    /// reveals both).
    pub fn observe(&mut self, event: &Event) -> Vec<StreamFault> {
        let lost = match &event.body {
            Body::Lost(lost) => Some(lost.count),
            _ => None,
        };
        self.observe_parts(event.seq, lost, matches!(event.body, Body::End(_)))
    }

    /// [`StreamCheck::observe`] from the parts that matter: the event's `seq`, the count of
    /// a `lost` event, and whether it is the `end` event (for readers that do not build
    /// whole events, like [`crate::store`]).
    pub fn observe_parts(&mut self, seq: u64, lost: Option<u64>, end: bool) -> Vec<StreamFault> {
        let mut faults = Vec::new();
        if self.ended {
            faults.push(StreamFault::AfterEnd { seq });
        }
        // The seq this event should have: 0 first, then one more than the last (none after
        // u64::MAX, which a recording's line may say: nothing can follow it).
        let expected = match self.last_seq {
            None => Some(0),
            Some(last) => last.checked_add(1),
        };
        match (expected, self.last_seq) {
            (Some(expected), _) if seq > expected => faults.push(StreamFault::Gap {
                expected,
                found: seq,
            }),
            (Some(expected), _) if seq == expected => {}
            // Not a gap of a negative size: the order itself is broken.
            (_, Some(previous)) => faults.push(StreamFault::Backwards {
                previous,
                found: seq,
            }),
            (_, None) => {}
        }
        if let Some(count) = lost {
            faults.push(StreamFault::Lost { count, seq });
        }
        self.last_seq = Some(seq);
        if end {
            self.ended = true;
        }
        self.faults.extend(faults.iter().cloned());
        faults
    }

    /// The faults seen so far, plus `Truncated` while the `end` event has not come.
    pub fn faults_so_far(&self) -> Vec<StreamFault> {
        let mut faults = self.faults.clone();
        if !self.ended {
            faults.push(StreamFault::Truncated);
        }
        faults
    }

    /// The stream is over: every fault seen, plus `Truncated` without an `end` event.
    pub fn finish(mut self) -> Vec<StreamFault> {
        if !self.ended {
            self.faults.push(StreamFault::Truncated);
        }
        self.faults
    }

    /// How many events have been seen (the next expected `seq`; it stays at u64::MAX after
    /// a seq of u64::MAX).
    pub fn count(&self) -> u64 {
        self.last_seq.map_or(0, |last| last.saturating_add(1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use traplab_abi::event::{Console, End, Lost};

    fn event(seq: u64, body: Body) -> Event {
        Event {
            seq,
            tsc: 0,
            dom: None,
            body,
        }
    }

    /// Any event but `end`.
    fn line() -> Body {
        Body::Console(Console::line("x"))
    }

    fn end() -> Body {
        Body::End(End {
            status: 0,
            reason: "done".into(),
        })
    }

    #[test]
    fn a_complete_stream_has_no_fault() {
        let mut check = StreamCheck::new();
        for seq in 0..3 {
            assert_eq!(
                check.observe(&event(seq, Body::Console(Console::line("x")))),
                []
            );
        }
        assert_eq!(check.observe(&event(3, end())), []);
        assert_eq!(check.count(), 4);
        assert!(check.finish().is_empty());
    }

    #[test]
    fn a_gap_says_how_many_events_are_missing_and_from_where_seq_jumped() {
        let said = |expected, found| StreamFault::Gap { expected, found }.to_string();
        assert_eq!(
            said(29, 30),
            "1 event is missing (seq 29): seq jumped from 28 to 30"
        );
        assert_eq!(
            said(29, 32),
            "3 events are missing (seq 29 to 31): seq jumped from 28 to 32"
        );
        assert_eq!(
            said(0, 2),
            "2 events are missing (seq 0 to 1): the first event is seq 2"
        );
    }

    #[test]
    fn gaps_losses_and_truncation_are_faults() {
        let mut check = StreamCheck::new();
        assert_eq!(check.observe(&event(0, line())), []);
        assert_eq!(
            check.observe(&event(5, line())),
            [StreamFault::Gap {
                expected: 1,
                found: 5
            }]
        );
        assert_eq!(
            check.observe(&event(6, Body::Lost(Lost { count: 2 }))),
            [StreamFault::Lost { count: 2, seq: 6 }]
        );
        assert_eq!(
            check.observe(&event(9, Body::Lost(Lost { count: 2 }))),
            [
                StreamFault::Gap {
                    expected: 7,
                    found: 9
                },
                StreamFault::Lost { count: 2, seq: 9 }
            ]
        );
        assert_eq!(check.finish().len(), 5, "the four, and no end event");
        let mut back = StreamCheck::new();
        for seq in [0, 1, 2] {
            back.observe(&event(seq, line()));
        }
        assert_eq!(
            back.observe(&event(1, line())),
            [StreamFault::Backwards {
                previous: 2,
                found: 1
            }]
        );
        assert_eq!(
            back.observe(&event(1, line()))
                .first()
                .map(ToString::to_string),
            Some(
                "seq 1 came after seq 1: events are out of order or repeated (seq only goes up)"
                    .to_string()
            ),
            "a repeat, not a gap of a negative size"
        );
        let mut cut = StreamCheck::new();
        cut.observe(&event(0, Body::Lost(Lost { count: 1 })));
        assert_eq!(cut.finish().last(), Some(&StreamFault::Truncated));
    }

    #[test]
    fn an_event_after_end_breaks_the_order() {
        let mut check = StreamCheck::new();
        assert_eq!(check.observe(&event(0, end())), []);
        assert_eq!(
            check.observe(&event(1, line())),
            [StreamFault::AfterEnd { seq: 1 }]
        );
        assert_eq!(check.finish(), [StreamFault::AfterEnd { seq: 1 }]);
    }

    #[test]
    fn a_seq_of_u64_max_is_taken_without_wrapping() {
        let mut check = StreamCheck::new();
        assert!(check.observe_parts(0, None, false).is_empty());
        let faults = check.observe_parts(u64::MAX, None, false);
        assert_eq!(
            faults,
            [StreamFault::Gap {
                expected: 1,
                found: u64::MAX
            }]
        );
        assert!(
            !check.observe_parts(u64::MAX, None, false).is_empty(),
            "the same seq again"
        );
        assert!(
            !check.observe_parts(u64::MAX - 1, None, false).is_empty(),
            "backwards"
        );
    }
}
