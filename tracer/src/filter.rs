//! `traplab trace --only CLASS` and `--hide CLASS`: which events of a running trace are
//! printed, by the class of the trap flow they belong to.
//!
//! A class is what the TUI calls a flow (`#PF`, `IOIO`, `upcall`, [`Flow::class`]) or the
//! exit reason the trace spells (`EXCP_PF`, `INTR`, `VMMCALL`, [`Flow::reason`]), in any
//! case, the `#` optional; an exception a flow delivered names it too
//! ([`Flow::delivered_exception`]): `--only '#BP'` shows the SWINT flow of an INT3 the
//! hypervisor reflects as #BP, `--only '#DF'` the #PF flow that delivered a double fault. The
//! events come one at a time, so the filter builds the flows as the TUI does
//! ([`Assembler`]) and asks which flow each event is in; a flow's events wait until it is
//! known what it delivered (its resume, or its domain switched out), and every event that
//! came meanwhile waits behind them: the order printed is the trace's. Events that belong to
//! no trap — the boot, a domain's start and end, the hypervisor's switches between
//! domains, the guest's console lines, the end — are always printed: they are the run's
//! frame, and a student hiding IOIO still wants to read what the guest printed.
//!
//! The hypervisor's own log lines (`traplab trace --verbose`) belong to no trap either: they
//! are never left out, but they wait behind held events like the rest ([`ClassFilter::take_log`]),
//! so that each comes where it came in the run.
//!
//! It only chooses what is printed: a recording keeps every event.

use crate::flows::{self, Assembler, Facts, Flow, FlowEnd, Kind, NO_EVENT};
use std::collections::VecDeque;
use traplab_abi::event::Event;
use traplab_abi::exit::ExitReason;
use traplab_abi::svm::exitcode;

/// What the filter gives to print, in the run's order.
#[derive(Debug, Clone, PartialEq)]
#[allow(
    clippy::large_enum_variant,
    reason = "events are nearly every line, as in `session::Item`; boxing each would cost an allocation"
)]
pub enum Line {
    Event(Event),
    /// A line of the hypervisor's log (`--verbose`).
    Log(String),
}

/// Which classes to print: `--only` (none: every class) less `--hide`.
#[derive(Debug)]
pub struct ClassFilter {
    only: Vec<String>,
    hide: Vec<String>,
    assembler: Assembler,
    flows: Vec<Flow>,
    /// How many events it has seen: the next event's index.
    seen: u32,
    /// Whether each flow is printed, by flow number, once it is known.
    verdicts: Vec<Option<bool>>,
    /// Lines not printed yet, in order, with their flow (`None`: the run's frame, or a log
    /// line): the events of a flow whose verdict waits ([`ClassFilter::undecided`]) and all
    /// after them.
    held: VecDeque<(Line, Option<usize>)>,
    /// The flows whose verdicts the held events wait for (one, as a rule: a domain's trap
    /// is done or switched out before another's begins).
    undecided: Vec<usize>,
}

/// Is all that `flow` delivers known? At its end (the resume), or once its domain was
/// switched out: the hypervisor records a trap's delivery before either. (A flow switched
/// back in may deliver more, an upcall or an interrupt: its verdict stays the one made at
/// the switch, where the TUI's `f`, which sees the whole flow, may name it by that too.)
fn delivered_all(flow: &Flow) -> bool {
    flow.end != FlowEnd::Open || flow.away != NO_EVENT
}

/// The classes of flows without an exit ([`Flow::class`]).
const CLASSES_WITHOUT_EXIT: [&str; 3] = ["upcall", "interrupt", "schedule"];

/// A class as compared: without its `#`, in lower case.
fn normalise(name: &str) -> String {
    name.trim().trim_start_matches('#').to_ascii_lowercase()
}

/// Every name a class can be given: each exit's class and reason, and the classes of flows
/// without an exit.
pub fn known_classes() -> Vec<&'static str> {
    let mut names: Vec<&'static str> = Vec::new();
    let codes = (0..=exitcode::NPF).chain([exitcode::INVALID]);
    for reason in codes.map(ExitReason::from_code) {
        if matches!(reason, ExitReason::Unknown(_)) {
            continue;
        }
        for name in [reason.class(), reason.name()] {
            if !names.contains(&name) {
                names.push(name);
            }
        }
    }
    names.extend(CLASSES_WITHOUT_EXIT);
    names
}

impl ClassFilter {
    /// A filter printing the classes `only` (every class when empty) except `hide`. An
    /// unknown class is an error that says which names there are.
    pub fn new(only: &[String], hide: &[String]) -> Result<ClassFilter, String> {
        let known: Vec<String> = known_classes().iter().map(|name| normalise(name)).collect();
        for name in only.iter().chain(hide) {
            if !known.contains(&normalise(name)) {
                return Err(format!(
                    "no trap class “{name}”: name one as the TUI's list does (#PF, IOIO, CPUID, upcall, …) or as the trace's exit reason (EXCP_PF, INTR, VMMCALL, …)"
                ));
            }
        }
        Ok(ClassFilter {
            only: only.iter().map(|name| normalise(name)).collect(),
            hide: hide.iter().map(|name| normalise(name)).collect(),
            assembler: Assembler::new(),
            flows: Vec::new(),
            seen: 0,
            verdicts: Vec::new(),
            held: VecDeque::new(),
            undecided: Vec::new(),
        })
    }

    /// Take the next event of the trace; `print` is given, in order, the lines that are to
    /// be printed now: this event, or none while a flow's verdict waits, or those that waited.
    pub fn take(&mut self, event: Event, print: &mut impl FnMut(Line)) {
        if self.only.is_empty() && self.hide.is_empty() {
            // Nothing to choose: no flows to build either.
            print(Line::Event(event));
            return;
        }
        let facts = Facts::of(&event);
        let index = self.seen;
        self.seen += 1;
        self.assembler.observe(index, &facts, &mut self.flows);
        let outside_traps = matches!(
            facts.kind,
            Kind::Boot | Kind::End | Kind::Lost | Kind::Domain | Kind::Schedule | Kind::Console
        );
        let flow = match outside_traps {
            true => None,
            false => flows::flow_of(&self.flows, self.assembler.continued(), index),
        };
        if let Some(flow) = flow
            && self.verdict(flow).is_none()
            && !self.undecided.contains(&flow)
        {
            self.undecided.push(flow);
        }
        self.held.push_back((Line::Event(event), flow));
        // (The switch-out's `schedule` is the frame's, and ends what the flow delivers.)
        let mut undecided = core::mem::take(&mut self.undecided);
        undecided.retain(|&flow| {
            let done = delivered_all(&self.flows[flow]);
            if done {
                self.verdicts[flow] = Some(self.passes(&self.flows[flow]));
            }
            !done
        });
        self.undecided = undecided;
        self.release(print);
    }

    /// Take a line of the hypervisor's log: printed now, or behind the events held before it.
    pub fn take_log(&mut self, line: String, print: &mut impl FnMut(Line)) {
        self.held.push_back((Line::Log(line), None));
        self.release(print);
    }

    /// The end of the trace: what waits is printed by what is known.
    pub fn finish(&mut self, print: &mut impl FnMut(Line)) {
        for flow in core::mem::take(&mut self.undecided) {
            self.verdicts[flow] = Some(self.passes(&self.flows[flow]));
        }
        self.release(print);
    }

    /// Print or drop the held lines up to the first whose flow's verdict waits.
    fn release(&mut self, print: &mut impl FnMut(Line)) {
        while let Some((_, flow)) = self.held.front() {
            let shown = match *flow {
                None => true,
                Some(flow) => match self.verdict(flow) {
                    Some(shown) => shown,
                    None => return,
                },
            };
            if let Some((line, _)) = self.held.pop_front()
                && shown
            {
                print(line);
            }
        }
    }

    /// Flow `flow`'s verdict, if known (made room for when the flow is new).
    fn verdict(&mut self, flow: usize) -> Option<bool> {
        if self.verdicts.len() <= flow {
            self.verdicts.resize(flow + 1, None);
        }
        self.verdicts[flow]
    }

    fn passes(&self, flow: &Flow) -> bool {
        let delivered = flow.delivered_exception().map(normalise);
        let names = [
            Some(normalise(flow.class())),
            Some(normalise(flow.reason())),
            delivered,
        ];
        let named = |list: &[String]| {
            list.iter()
                .any(|name| names.iter().flatten().any(|known| known == name))
        };
        (self.only.is_empty() || named(&self.only)) && !named(&self.hide)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Class names as `ClassFilter::new` takes them.
    fn owned(names: &[&str]) -> Vec<String> {
        names.iter().map(|name| name.to_string()).collect()
    }

    /// The kinds of the events a filter prints from the hand-made two-domain trace.
    fn printed(only: &[&str], hide: &[&str]) -> Vec<(u64, &'static str)> {
        let mut filter = ClassFilter::new(&owned(only), &owned(hide)).expect("known classes");
        let mut printed = Vec::new();
        let mut print = |line: Line| {
            if let Line::Event(event) = line {
                printed.push((event.seq, event.body.kind()));
            }
        };
        for event in crate::sample::event_channel_ping() {
            filter.take(event, &mut print);
        }
        filter.finish(&mut print);
        printed
    }

    #[test]
    fn only_keeps_the_flows_of_a_class_and_what_frames_the_run() {
        let all = printed(&[], &[]);
        let vmmcall = printed(&["VMMCALL"], &[]);
        assert!(vmmcall.len() < all.len());
        // Every exit printed is a hypercall's; the boot and the end are there too.
        let sample = crate::sample::event_channel_ping();
        for (seq, kind) in &vmmcall {
            if *kind == "exit" {
                let event = sample.iter().find(|event| event.seq == *seq).unwrap();
                let traplab_abi::event::Body::Exit(exit) = &event.body else {
                    unreachable!()
                };
                assert_eq!(exit.reason, "VMMCALL");
            }
        }
        assert!(vmmcall.iter().any(|(_, kind)| *kind == "boot"));
        assert!(vmmcall.iter().any(|(_, kind)| *kind == "end"));
        // The same class in the TUI's words, in any case.
        assert_eq!(printed(&["vmmcall"], &[]), vmmcall);
    }

    #[test]
    fn hide_leaves_out_a_class_with_every_event_of_its_flows() {
        let all = printed(&[], &[]);
        let without = printed(&[], &["VMMCALL"]);
        assert!(without.len() < all.len());
        // d2's upcall is delivered in the flow of the hypercall it blocked in: it goes too.
        assert!(
            !without.iter().any(|(_, kind)| *kind == "inject"),
            "{without:?}"
        );
        // The handler's IRET is a class of its own, and the guest's console stays.
        assert!(without.iter().any(|(_, kind)| *kind == "return"));
        assert!(without.iter().any(|(_, kind)| *kind == "console"));
        // --only and --hide of the same class print only what frames the run.
        let nothing = printed(&["IRET"], &["IRET"]);
        assert!(
            nothing
                .iter()
                .all(|(_, kind)| ["boot", "domain", "schedule", "console", "end"].contains(kind)),
            "{nothing:?}"
        );
    }

    /// An event's `seq` (the tests that use it take no log lines).
    fn seq(line: Line) -> u64 {
        match line {
            Line::Event(event) => event.seq,
            Line::Log(line) => panic!("a log line: {line}"),
        }
    }

    /// An INT3 the hypervisor intercepts and reflects (a SWINT flow that delivers #BP), then
    /// an OUT: what is printed after each event, then after the trace's end.
    fn breakpoint_then_out(only: &[&str], hide: &[&str]) -> Vec<Vec<u64>> {
        filtered(only, hide, usize::MAX)
    }

    /// [`breakpoint_then_out`]'s first `events` events.
    fn filtered(only: &[&str], hide: &[&str], events: usize) -> Vec<Vec<u64>> {
        let mut filter = ClassFilter::new(&owned(only), &owned(hide)).expect("known classes");
        let mut after_each = Vec::new();
        for event in crate::sample::breakpoint_then_out()
            .into_iter()
            .take(events)
        {
            let mut printed = Vec::new();
            filter.take(event, &mut |line| printed.push(seq(line)));
            after_each.push(printed);
        }
        let mut printed = Vec::new();
        filter.finish(&mut |line| printed.push(seq(line)));
        after_each.push(printed);
        after_each
    }

    #[test]
    fn an_exception_a_flow_delivered_names_it_and_its_events_wait_until_it_is_known() {
        let held: Vec<u64> = Vec::new();
        // The SWINT flow's events wait for its resume, then come in order.
        let bp = breakpoint_then_out(&["#BP"], &[]);
        assert_eq!(bp[..2], [vec![0], vec![1]], "the frame at once");
        assert_eq!(bp[2..5], [held.clone(), held.clone(), held.clone()]);
        assert_eq!(bp[5], [2, 3, 4, 5], "at the resume, the whole flow");
        assert!(
            bp[6..].iter().all(Vec::is_empty),
            "the OUT's flow is not #BP's: {bp:?}"
        );
        // In the TUI's words, or by its exit class, the same.
        assert_eq!(breakpoint_then_out(&["bp"], &[]), bp);
        assert_eq!(breakpoint_then_out(&["SWINT"], &[]), bp);
        // Hidden by the exception it delivered.
        let hidden = breakpoint_then_out(&[], &["#BP"]);
        assert_eq!(hidden[5], held, "{hidden:?}");
        assert_eq!(hidden[6..9].concat(), [6, 7, 8], "the OUT's flow stays");
    }

    #[test]
    fn a_log_line_waits_behind_a_held_flow_and_is_never_left_out() {
        // --only #BP: a log line comes while the SWINT flow waits for its resume (after its
        // exit, event 2), and another while the OUT's flow, which is left out, waits.
        let mut filter = ClassFilter::new(&owned(&["#BP"]), &[]).expect("known classes");
        let mut printed = Vec::new();
        let mut print = |line: Line| {
            printed.push(match line {
                Line::Event(event) => event.seq.to_string(),
                Line::Log(line) => line,
            })
        };
        for event in crate::sample::breakpoint_then_out() {
            let seq = event.seq;
            filter.take(event, &mut print);
            match seq {
                2 => filter.take_log("during the INT3".into(), &mut print),
                6 => filter.take_log("during the OUT".into(), &mut print),
                _ => {}
            }
        }
        filter.finish(&mut print);
        assert_eq!(
            printed,
            [
                "0",
                "1",
                "2",
                "during the INT3",
                "3",
                "4",
                "5",
                "during the OUT"
            ],
            "in the run's order; the OUT's events left out, not its log line"
        );
        // Without --only or --hide a log line is printed at once.
        let mut filter = ClassFilter::new(&[], &[]).expect("no classes");
        let mut printed = Vec::new();
        filter.take_log("at once".into(), &mut |line| printed.push(line));
        assert_eq!(printed, [Line::Log("at once".into())]);
    }

    #[test]
    fn a_flow_the_trace_ends_in_is_printed_at_the_end_by_what_is_known() {
        // --only IOIO: the OUT's flow, whose events wait for its resume ...
        assert_eq!(
            breakpoint_then_out(&["IOIO"], &[]).concat(),
            [0, 1, 6, 7, 8]
        );
        // ... which never comes: at the end, by its class.
        let cut = filtered(&["IOIO"], &[], 8);
        assert_eq!(cut[6..8], [Vec::<u64>::new(), Vec::new()], "waiting");
        assert_eq!(cut[8], [6, 7], "the end");
    }

    #[test]
    fn a_flow_switched_out_is_printed_at_its_switch_not_at_its_resume() {
        // d2 blocks in its SCHEDOP_block (seq 4–6) and is switched out (seq 7); its flow
        // resumes only after d1's send (seq 15). What it delivered is known at the switch:
        // its events come then, not after d1's whole flow.
        let mut filter = ClassFilter::new(&owned(&["VMMCALL"]), &[]).expect("a known class");
        let mut printed = Vec::new();
        for event in crate::sample::event_channel_ping() {
            let at = event.seq;
            filter.take(event, &mut |line| printed.push(seq(line)));
            if at == 7 {
                assert!(printed.ends_with(&[4, 5, 6, 7]), "{printed:?}");
            }
        }
    }

    #[test]
    fn a_class_is_named_as_the_tui_or_the_trace_names_it() {
        for name in [
            "#PF", "pf", "EXCP_PF", "IOIO", "ioio", "INTR", "VMMCALL", "upcall",
        ] {
            assert!(ClassFilter::new(&[name.to_string()], &[]).is_ok(), "{name}");
        }
        let error = ClassFilter::new(&["IOOI".to_string()], &[]).unwrap_err();
        assert!(error.contains("no trap class “IOOI”"), "{error}");
    }
}
