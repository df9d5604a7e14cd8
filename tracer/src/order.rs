//! A recording's events in `seq` order, with the blame for a wrong `seq` on its own line.
//!
//! A trace's `seq` only goes up (`SCHEMA.md`), so a line whose `seq` is not above the one
//! before it is a bad line. Compared with the line before alone, one line whose `seq` jumps
//! far ahead (a digit too many, a line pasted from another recording) would make every line
//! after it "go back", and the error would name the next line, a good one. So a line that
//! jumps ahead is held back until the next event says which it was:
//!
//! ```text
//!   seq 1, seq 1000000, seq 2, seq 3     the next goes on from before the jump: the
//!                                        jumping line is bad (its own error), 2 and 3 are kept
//!   seq 1, seq 500,     seq 501          the next goes on after it: a gap (events 2 to 499
//!                                        are missing, which the stream check reports)
//! ```
//!
//! A recording that ends on a jump keeps it (a gap). One line of look-ahead cannot tell
//! every case apart (`1, 500, 3, 502`: was 500 wrong, or 3?), but whichever it blames, only
//! that one line is lost, never the lines after it. Both readers of recordings
//! (`recording::read` and `store::Trace`) order their lines here.

use crate::json::JsonError;

/// What to do with a line: take its event, or skip it as bad (`line` is 1-based).
#[derive(Debug, PartialEq)]
pub enum Verdict<T> {
    Take { line: usize, item: T },
    Bad { line: usize, error: JsonError },
}

/// At most two verdicts come from one line (the held line's, then its own).
pub type Verdicts<T> = [Option<Verdict<T>>; 2];

/// A line held back because its `seq` jumps ahead.
#[derive(Debug)]
struct Held<T> {
    seq: u64,
    line: usize,
    item: T,
}

/// Follows the `seq` of a recording's event lines (see the module's documentation).
#[derive(Debug)]
pub struct SeqOrder<T> {
    /// The `seq` of the last event taken (`None` before the first).
    last: Option<u64>,
    held: Option<Held<T>>,
}

impl<T> Default for SeqOrder<T> {
    fn default() -> Self {
        SeqOrder {
            last: None,
            held: None,
        }
    }
}

impl<T> SeqOrder<T> {
    pub fn new() -> SeqOrder<T> {
        SeqOrder::default()
    }

    /// The event of line `line`, whose `seq` is `seq`: the verdicts on it and on a line held
    /// before it, in the order to apply them (the events taken are in `seq` order).
    pub fn next(&mut self, line: usize, seq: u64, item: T) -> Verdicts<T> {
        if self.last.is_some_and(|last| seq <= last) {
            // Behind an event already taken: this line is out of place, whatever is held.
            return [Some(self.out_of_order(line, seq)), None];
        }
        let Some(held) = self.held.take() else {
            return [self.arrive(line, seq, item), None];
        };
        if seq >= held.seq {
            // The jump was real: the line after it goes on from it (or repeats it).
            self.last = Some(held.seq);
            let taken = Verdict::Take {
                line: held.line,
                item: held.item,
            };
            let this = match seq == held.seq {
                true => Some(self.out_of_order(line, seq)),
                false => self.arrive(line, seq, item),
            };
            return [Some(taken), this];
        }
        // This line goes on from before the jump: the held line's seq is the wrong one.
        let blamed = Verdict::Bad {
            line: held.line,
            error: JsonError::JumpsAhead {
                previous: self.last,
                found: held.seq,
                next_line: line,
                next: seq,
            },
        };
        [Some(blamed), self.arrive(line, seq, item)]
    }

    /// The recording is read: a line still held is taken (its jump is a gap).
    pub fn finish(&mut self) -> Option<Verdict<T>> {
        let held = self.held.take()?;
        self.last = Some(held.seq);
        Some(Verdict::Take {
            line: held.line,
            item: held.item,
        })
    }

    /// A line after the last event taken, with nothing held: taken when it is the next
    /// `seq`, held when it jumps ahead.
    fn arrive(&mut self, line: usize, seq: u64, item: T) -> Option<Verdict<T>> {
        let expected = match self.last {
            None => 0,
            Some(last) => last.saturating_add(1),
        };
        if seq > expected {
            self.held = Some(Held { seq, line, item });
            return None;
        }
        self.last = Some(seq);
        Some(Verdict::Take { line, item })
    }

    fn out_of_order(&self, line: usize, seq: u64) -> Verdict<T> {
        Verdict::Bad {
            line,
            error: JsonError::OutOfOrder {
                previous: self.last.unwrap_or(0),
                found: seq,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The verdicts on lines 1, 2, … with these seqs: (line, taken or the error's start).
    fn verdicts(seqs: &[u64]) -> Vec<(usize, String)> {
        let mut order = SeqOrder::new();
        let mut said = Vec::new();
        let mut note = |verdict: Verdict<u64>| {
            said.push(match verdict {
                Verdict::Take { line, item } => (line, format!("take {item}")),
                Verdict::Bad { line, error } => (line, error.to_string()),
            })
        };
        for (index, &seq) in seqs.iter().enumerate() {
            for verdict in order.next(index + 1, seq, seq).into_iter().flatten() {
                note(verdict);
            }
        }
        if let Some(verdict) = order.finish() {
            note(verdict);
        }
        said
    }

    fn taken(said: &[(usize, String)]) -> Vec<usize> {
        said.iter()
            .filter(|(_, what)| what.starts_with("take"))
            .map(|(line, _)| *line)
            .collect()
    }

    #[test]
    fn a_seq_that_jumps_far_ahead_is_its_own_line_s_error_not_the_next_one_s() {
        let said = verdicts(&[0, 1, 1_000_000, 2, 3, 4]);
        assert_eq!(taken(&said), [1, 2, 4, 5, 6], "every other line is kept");
        let bad: Vec<&(usize, String)> = said
            .iter()
            .filter(|(_, what)| !what.starts_with("take"))
            .collect();
        assert_eq!(bad.len(), 1, "{said:?}");
        assert_eq!(bad[0].0, 3, "the line that jumped");
        assert_eq!(
            bad[0].1,
            "seq 1000000 jumps ahead of seq 1, but line 4 goes on from before it with seq 2: this line's seq is wrong"
        );
        // On the first line, too.
        let said = verdicts(&[99, 0, 1]);
        assert_eq!(taken(&said), [2, 3]);
        assert_eq!(
            said[0],
            (
                1,
                "seq 99 jumps ahead of the start, but line 2 goes on from before it with seq 0: this line's seq is wrong".to_string()
            )
        );
    }

    #[test]
    fn a_jump_the_next_line_goes_on_from_is_a_gap() {
        assert_eq!(
            verdicts(&[0, 1, 500, 501]),
            [
                (1, "take 0".to_string()),
                (2, "take 1".to_string()),
                (3, "take 500".to_string()),
                (4, "take 501".to_string())
            ]
        );
        // A recording that ends on the jump, or begins after seq 0 (events lost before).
        assert_eq!(taken(&verdicts(&[0, 1, 500])), [1, 2, 3]);
        assert_eq!(taken(&verdicts(&[7, 8])), [1, 2]);
        // Two gaps in a row, each confirmed by the line after it.
        assert_eq!(taken(&verdicts(&[0, 5, 9, 10])), [1, 2, 3, 4]);
    }

    #[test]
    fn a_step_back_or_a_repeat_is_its_own_line_s_error() {
        let said = verdicts(&[0, 1, 1, 2]);
        assert_eq!(taken(&said), [1, 2, 4]);
        assert!(said.contains(&(
            3,
            "seq 1 after seq 1: a trace's seq only goes up, so this line repeats an event or is out of order".to_string()
        )));
        // A repeat of a held line: the held one is taken, the repeat is the bad one.
        let said = verdicts(&[0, 5, 5, 6]);
        assert_eq!(taken(&said), [1, 2, 4]);
        assert_eq!(said.iter().filter(|(line, _)| *line == 3).count(), 1);
        // A line behind the last taken while one is held: its own error, the held one waits.
        let said = verdicts(&[3, 4, 9, 2, 10]);
        assert_eq!(taken(&said), [1, 2, 3, 5]);
        assert!(said[2].1.starts_with("seq 2 after seq 4"), "{said:?}");
    }
}
