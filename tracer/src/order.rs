//! A recording's events in `seq` order, with the blame for a wrong `seq` on its own line.
//!
//! A trace's `seq` only goes up (`SCHEMA.md`), so a line whose `seq` is not above the one
//! before it is a bad line. Compared with the line before alone, one line whose `seq` jumps
//! far ahead (a digit too many, a line pasted from another recording) would make every line
//! after it "go back", and the error would name the next line, a good one. So a line that
//! jumps ahead is held back, and judged by the [`LOOK_AHEAD`] event lines after it:
//!
//! ```text
//!   seq 1, seq 1000000, seq 2000000, seq 2, seq 3 …   the lines after go on from before the
//!                                                     jumps: both jumping lines are bad
//!   seq 1, seq 500,     seq 501,     seq 502 …        they go on after it: a gap (events 2
//!                                                     to 499 are missing, which the stream
//!                                                     check reports)
//! ```
//!
//! The judgement: of the held line and the lines after it, the ones whose `seq` is above the
//! last event taken, keep a longest rising run of `seq`s (the most lines that can all be
//! right, so the fewest blamed). The held line is taken when it starts such a run, else it
//! is a bad line. Between runs of the same length, the one that starts from the lower `seq`
//! wins (`1, 500, 3, 502`: 500 is blamed, not 3), then the earlier line (of a repeat, the
//! second is blamed). The judgement is made once [`LOOK_AHEAD`] lines came after the held
//! one and the longest run reaches the newest line; while it does not, the file has left
//! that run for another that may still grow longer, and the judgement waits, up to
//! [`MAX_LOOK_AHEAD`] lines (`1, 100 … 108, 2, 3 …`: at 16 lines the nine wrong lines are
//! the longer run, but the file goes on with 2, 3 …; at 17 the right run is as long, and
//! the wrong lines lose).
//!
//! What that promises. A recording whose `seq`s only rise is taken whole, each jump a gap
//! (a recording filtered with grep, a jump on the last line). A line that is not above the
//! last event taken (a repeat, a step back) is a bad line at once. Every line is either
//! taken or a bad line named by its number: none is dropped without a word. Wrong lines
//! that jump ahead of the right lines after them lose only themselves when they are at most
//! [`LOOK_AHEAD`] in a row, in any order, and at least as many right lines follow them
//! within [`MAX_LOOK_AHEAD`] lines of the first (and before the file ends).
//!
//! The limits, inherent to `seq` and to a bounded window (tests pin both):
//!
//! - More than [`LOOK_AHEAD`] wrong lines in a row that rise (`1, 100 … 116, 2, 3 …`): the
//!   first and the [`LOOK_AHEAD`] after it are one run that reaches the newest line, with
//!   no other in sight, exactly what a real jump followed by its events looks like. It is
//!   taken, and the right lines after it are bad lines (each "goes back"), each named. Any
//!   window of bounded length can be filled by such a run; telling it from a real jump
//!   takes the lines after the window. So do fewer right lines after the wrong ones than
//!   there were wrong ones, before the file ends or within [`MAX_LOOK_AHEAD`] lines.
//! - Wrong lines that rise from below a real jump and go on into its run (`1, 500, 3, 4,
//!   501 …`): either 500 is wrong or 3 and 4 are, and `seq` cannot say which; the reading
//!   that blames fewer lines wins (500).
//!
//! A line in its place (the next `seq`, with nothing held) is taken at once: holding costs
//! only around a jump.
//! Both readers of recordings (`recording::read` and `store::Trace`) order their lines here.

use crate::json::JsonError;
use std::collections::VecDeque;

/// How many event lines after a held line judge it, at least.
pub const LOOK_AHEAD: usize = 16;

/// How many event lines after a held line judge it at most: the judgement waits past
/// [`LOOK_AHEAD`] while the longest run does not reach the newest line (the file has gone
/// back to another run), up to this many.
pub const MAX_LOOK_AHEAD: usize = 4 * LOOK_AHEAD;

/// What to do with a line: take its event, or skip it as bad (`line` is 1-based).
#[derive(Debug, PartialEq)]
pub enum Verdict<T> {
    Take { line: usize, item: T },
    Bad { line: usize, error: JsonError },
}

/// A line held back until the lines after it say whether its `seq` is right.
#[derive(Debug)]
struct Held<T> {
    seq: u64,
    line: usize,
    item: T,
}

/// What becomes of the first held line.
enum Judgement {
    /// Its `seq` is not above the last event taken (a jump before it was taken).
    Behind,
    Take,
    /// A run of lines that goes on from before it beats it: the first of them.
    Blame {
        next_line: usize,
        next: u64,
    },
}

/// Who wins the judgement of the first held line ([`SeqOrder::rival_of_first`]).
enum Contest {
    /// Its run: it is taken.
    First,
    /// The run of this held line, which goes on from below it: the first line is bad.
    Rival(usize),
    /// The longest run does not reach the newest line: wait for more lines.
    Undecided,
}

/// Follows the `seq` of a recording's event lines (see the module's documentation).
#[derive(Debug)]
pub struct SeqOrder<T> {
    /// The `seq` of the last event taken (`None` before the first).
    last: Option<u64>,
    /// The lines not judged yet, in line order: the first jumps ahead of `last`, the others
    /// came after it (at most [`LOOK_AHEAD`] of them).
    held: VecDeque<Held<T>>,
}

impl<T> Default for SeqOrder<T> {
    fn default() -> Self {
        SeqOrder {
            last: None,
            held: VecDeque::new(),
        }
    }
}

impl<T> SeqOrder<T> {
    pub fn new() -> SeqOrder<T> {
        SeqOrder::default()
    }

    /// The event of line `line`, whose `seq` is `seq`: the verdicts it allows, on it and on
    /// lines held before it, in the order to apply them (the events taken are in line
    /// order, and so in `seq` order).
    pub fn next(&mut self, line: usize, seq: u64, item: T) -> Vec<Verdict<T>> {
        if self.last.is_some_and(|last| seq <= last) {
            // Behind an event already taken: this line is out of place, whatever is held.
            return vec![self.out_of_order(line, seq)];
        }
        self.held.push_back(Held { seq, line, item });
        self.judge(LOOK_AHEAD)
    }

    /// The recording is read: every line still held is judged by the lines there are.
    pub fn finish(&mut self) -> Vec<Verdict<T>> {
        self.judge(0)
    }

    /// Is a line held, waiting for the lines after it? Its event may still be taken: a
    /// reader that has taken none yet is not looking at an empty recording.
    pub fn holds(&self) -> bool {
        !self.held.is_empty()
    }

    /// Judge the held lines from the first, while that can be done: a line behind the last
    /// event taken is bad and the next `seq` is taken, at once; a jump, once `look_ahead`
    /// lines came after it.
    fn judge(&mut self, look_ahead: usize) -> Vec<Verdict<T>> {
        let mut verdicts = Vec::new();
        while let Some(first) = self.held.front() {
            let expected = self.last.map_or(0, |last| last.saturating_add(1));
            let judgement = if self.last.is_some_and(|last| first.seq <= last) {
                // Held behind a jump that was then taken.
                Judgement::Behind
            } else if first.seq == expected {
                Judgement::Take
            } else if self.held.len() > look_ahead {
                // More lines may settle it (`look_ahead` 0: the file is read, none come).
                let more_to_come = look_ahead > 0 && self.held.len() <= MAX_LOOK_AHEAD;
                match self.rival_of_first(more_to_come) {
                    Contest::Undecided => break,
                    Contest::Rival(rival) => Judgement::Blame {
                        next_line: self.held[rival].line,
                        next: self.held[rival].seq,
                    },
                    Contest::First => Judgement::Take,
                }
            } else {
                break;
            };
            let Some(first) = self.held.pop_front() else {
                break;
            };
            verdicts.push(match judgement {
                Judgement::Behind => self.out_of_order(first.line, first.seq),
                Judgement::Take => {
                    self.last = Some(first.seq);
                    Verdict::Take {
                        line: first.line,
                        item: first.item,
                    }
                }
                Judgement::Blame { next_line, next } => Verdict::Bad {
                    line: first.line,
                    error: JsonError::JumpsAhead {
                        previous: self.last,
                        found: first.seq,
                        next_line,
                        next,
                    },
                },
            });
        }
        verdicts
    }

    /// Which held line starts the run of `seq`s that wins (see the module's documentation):
    /// the first held line, or a rival that beats every run the first line starts. A rival
    /// always goes on from below the first line: one from above it would have the first
    /// line in front, a longer run. With `more_to_come`, a winner whose longest run does
    /// not reach the newest held line waits for more lines: the file has left that run, and
    /// the run it goes on with may still grow longer.
    fn rival_of_first(&self, more_to_come: bool) -> Contest {
        // From each held line (0 for one that is not above `last`): the longest rising run
        // of seqs above `last` that starts there, and the longest that also ends at the
        // newest line; both computed from the newest line back.
        let above_last = |seq: u64| self.last.is_none_or(|last| seq > last);
        let newest = self.held.len() - 1;
        let mut run_from = vec![0usize; self.held.len()];
        let mut run_to_newest_from = vec![0usize; self.held.len()];
        for start in (0..self.held.len()).rev() {
            let seq = self.held[start].seq;
            if !above_last(seq) {
                continue;
            }
            let after = || (start + 1..self.held.len()).filter(|&after| self.held[after].seq > seq);
            run_from[start] = 1 + after().map(|after| run_from[after]).max().unwrap_or(0);
            run_to_newest_from[start] = match start == newest {
                true => 1,
                false => after()
                    .map(|after| run_to_newest_from[after])
                    .filter(|&run| run > 0)
                    .max()
                    .map_or(0, |run| run + 1),
            };
        }
        // Longer first; on a tie the lower seq; on a tie again the earlier line.
        let rank = |index: usize| (run_from[index], std::cmp::Reverse(self.held[index].seq));
        let winner = (0..self.held.len())
            .filter(|&index| run_from[index] > 0)
            .max_by(|&one, &other| rank(one).cmp(&rank(other)).then(other.cmp(&one)))
            .unwrap_or(0);
        if more_to_come && run_to_newest_from[winner] < run_from[winner] {
            return Contest::Undecided;
        }
        match winner {
            0 => Contest::First,
            rival => Contest::Rival(rival),
        }
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
            for verdict in order.next(index + 1, seq, seq) {
                note(verdict);
            }
        }
        for verdict in order.finish() {
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

    fn bad(said: &[(usize, String)]) -> Vec<usize> {
        let mut lines: Vec<usize> = said
            .iter()
            .filter(|(_, what)| !what.starts_with("take"))
            .map(|(line, _)| *line)
            .collect();
        lines.sort_unstable();
        lines
    }

    #[test]
    fn wrong_lines_in_a_row_are_their_own_errors_and_the_lines_after_them_are_kept() {
        // Lines 3 and 4 jump far ahead, the second further than the first: it used to
        // "confirm" the first, and every line after them went back.
        let mut seqs = vec![0, 1, 1_000_000, 2_000_000];
        seqs.extend(2..40);
        let said = verdicts(&seqs);
        assert_eq!(bad(&said), [3, 4], "{said:?}");
        assert_eq!(taken(&said).len(), seqs.len() - 2);
        assert!(
            said.contains(&(
                4,
                "seq 2000000 jumps ahead of seq 1, but line 5 goes on from before it with seq 2: this line's seq is wrong".to_string()
            )),
            "{said:?}"
        );
        // As many wrong lines in a row as LOOK_AHEAD / 2, in any order, lose only themselves
        // when they all jump ahead of the right lines after them.
        let mut seqs = vec![0, 1];
        seqs.extend([900, 5_000, 700, 800, 100_000, 90, 91, 6_000]);
        seqs.extend(2..40);
        assert_eq!(bad(&verdicts(&seqs)), (3..=10).collect::<Vec<_>>());
        // A wrong line just ahead (5 where 2 belongs) is one too.
        let mut seqs = vec![0, 1, 5];
        seqs.extend(3..30);
        assert_eq!(bad(&verdicts(&seqs)), [3]);
        // Between runs of the same length, the lower start wins; then the earlier line.
        assert_eq!(bad(&verdicts(&[0, 1, 500, 3, 502])), [3]);
        // The limit: wrong lines that rise from below a real jump are the longer run.
        assert_eq!(bad(&verdicts(&[0, 1, 500, 3, 4, 501])), [3]);
    }

    /// Every line is either taken or named as bad: none is lost without a word.
    fn each_line_once(said: &[(usize, String)], lines: usize) {
        let mut named: Vec<usize> = said.iter().map(|(line, _)| *line).collect();
        named.sort_unstable();
        assert_eq!(named, (1..=lines).collect::<Vec<_>>(), "{said:?}");
    }

    #[test]
    fn more_wrong_lines_than_right_ones_in_the_window_lose_only_themselves() {
        // Nine wrong lines in a row that rise (a block pasted from another recording),
        // then the right ones: within LOOK_AHEAD lines of the first wrong one, the wrong run
        // (9) was the longer, it was taken, and every right line after it "went back".
        // The file went on with the right run: the judgement waits until one run is the
        // longest and reaches the newest line.
        let mut seqs = vec![0, 1];
        seqs.extend(100..=108);
        seqs.extend(2..60);
        let said = verdicts(&seqs);
        assert_eq!(bad(&said), (3..=11).collect::<Vec<_>>(), "{said:?}");
        each_line_once(&said, seqs.len());
        // As many as LOOK_AHEAD wrong lines in a row, in any order, when at least as many
        // right lines follow them.
        let mut seqs = vec![0, 1];
        seqs.extend([900, 5_000, 700, 800, 100_000, 90, 91, 6_000]);
        seqs.extend(200..208);
        seqs.extend(2..60);
        assert_eq!(bad(&verdicts(&seqs)), (3..=18).collect::<Vec<_>>());
        // A real jump whose run a stray line below it interrupts at the window's edge: the
        // judgement waits one line more, and the stray line alone is bad.
        let mut seqs = vec![0, 1];
        seqs.extend(500..515);
        seqs.push(9);
        seqs.extend(515..540);
        let said = verdicts(&seqs);
        assert_eq!(bad(&said), [18], "{said:?}");
        each_line_once(&said, seqs.len());
    }

    #[test]
    fn the_limits_are_pinned_and_every_line_judged_wrong_is_named() {
        // 1. More wrong lines in a row than LOOK_AHEAD, all rising: the first of them and
        // the LOOK_AHEAD after it are one run that reaches the newest line, and no right
        // line is in sight: it reads as a real jump (a gap) and is taken. The right lines
        // after it then go back: each is a bad line, named by its number.
        let mut seqs = vec![0, 1];
        seqs.extend(100..=(100 + LOOK_AHEAD as u64));
        seqs.extend(2..40);
        let said = verdicts(&seqs);
        let right_lines_after = seqs.len() - (3 + LOOK_AHEAD);
        assert_eq!(
            bad(&said),
            ((4 + LOOK_AHEAD)..=seqs.len()).collect::<Vec<_>>()
        );
        assert_eq!(bad(&said).len(), right_lines_after);
        assert!(said.contains(&(4 + LOOK_AHEAD, format!("seq 2 after seq {}: a trace's seq only goes up, so this line repeats an event or is out of order", 100 + LOOK_AHEAD))), "{said:?}");
        each_line_once(&said, seqs.len());
        // 2. Wrong lines that rise from below a real jump and go on into its run (`1, 500,
        // 3, 4, 501, 502…`): either 500 is wrong or 3 and 4 are, and `seq` cannot say
        // which. The reading that blames fewer lines wins: 500.
        let mut seqs = vec![0, 1, 500, 3, 4];
        seqs.extend(501..530);
        let said = verdicts(&seqs);
        assert_eq!(bad(&said), [3], "{said:?}");
        each_line_once(&said, seqs.len());
        // 3. Wrong lines after which fewer right lines come than there were wrong ones
        // (here the file ends after 4 of them), or not enough within MAX_LOOK_AHEAD lines:
        // the longer run, the wrong one, is kept, and the right lines are named bad.
        let mut seqs = vec![0, 1];
        seqs.extend(100..=108);
        seqs.extend(2..6);
        let said = verdicts(&seqs);
        assert_eq!(bad(&said), (12..=15).collect::<Vec<_>>(), "{said:?}");
        each_line_once(&said, seqs.len());
    }

    #[test]
    fn a_recording_of_gaps_alone_is_taken_whole() {
        // Every line a jump (a recording filtered with grep): each is a gap, none is wrong.
        let seqs: Vec<u64> = (0..100).map(|step| step * 7 + step % 3).collect();
        let said = verdicts(&seqs);
        assert_eq!(taken(&said), (1..=100).collect::<Vec<_>>());
    }

    #[test]
    fn a_jump_the_lines_after_go_on_from_is_a_gap() {
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
        // Two gaps in a row: every seq rises, so every line is taken.
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
        let said = verdicts(&[0, 1, 9, 1, 10]);
        assert_eq!(taken(&said), [1, 2, 3, 5]);
        assert!(said[2].1.starts_with("seq 1 after seq 1"), "{said:?}");
        assert_eq!(said[2].0, 4, "{said:?}");
        // A line behind a held jump that is then taken: its own error, judged after it.
        let said = verdicts(&[3, 4, 9, 2, 10]);
        assert_eq!(taken(&said), [1, 2, 3, 5]);
        assert_eq!(bad(&said), [4]);
        assert!(
            said.contains(&(4, "seq 2 after seq 9: a trace's seq only goes up, so this line repeats an event or is out of order".to_string())),
            "{said:?}"
        );
    }
}
