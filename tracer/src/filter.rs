//! `traplab trace --only CLASS` and `--hide CLASS`: which events of a running trace are
//! printed, by the class of the trap flow they belong to.
//!
//! A class is what the TUI calls a flow (`#PF`, `IOIO`, `upcall`, [`Flow::class`]) or the
//! exit reason the trace spells (`EXCP_PF`, `INTR`, `VMMCALL`, [`Flow::reason`]), in any
//! case, the `#` optional. The events come one at a time, so the filter builds the flows as
//! the TUI does ([`Assembler`]) and asks which flow each event is in. Events that belong to
//! no trap — the boot, a domain's start and end, the hypervisor's switches between
//! domains, the guest's console lines, the end — are always printed: they are the run's
//! frame, and a student hiding IOIO still wants to read what the guest printed.
//!
//! It only chooses what is printed: a recording keeps every event.

use crate::flows::{self, Assembler, Facts, Flow, Kind};
use traplab_abi::event::Event;
use traplab_abi::exit::ExitReason;
use traplab_abi::svm::exitcode;

/// Which classes to print: `--only` (none: every class) less `--hide`.
#[derive(Debug)]
pub struct ClassFilter {
    only: Vec<String>,
    hide: Vec<String>,
    assembler: Assembler,
    flows: Vec<Flow>,
    /// How many events it has seen: the next event's index.
    seen: u32,
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
        })
    }

    /// Take the next event of the trace; whether to print it.
    pub fn shows(&mut self, event: &Event) -> bool {
        if self.only.is_empty() && self.hide.is_empty() {
            // Nothing to choose: no flows to build either.
            return true;
        }
        let facts = Facts::of(event);
        let index = self.seen;
        self.seen += 1;
        self.assembler.observe(index, &facts, &mut self.flows);
        let outside_traps = matches!(
            facts.kind,
            Kind::Boot | Kind::End | Kind::Lost | Kind::Domain | Kind::Schedule | Kind::Console
        );
        if outside_traps {
            return true;
        }
        match flows::flow_of(&self.flows, self.assembler.continued(), index) {
            Some(flow) => self.passes(&self.flows[flow]),
            None => true,
        }
    }

    fn passes(&self, flow: &Flow) -> bool {
        let names = [normalise(flow.class()), normalise(flow.reason())];
        let named = |list: &[String]| list.iter().any(|name| names.contains(name));
        (self.only.is_empty() || named(&self.only)) && !named(&self.hide)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The kinds of the events a filter prints from the hand-made two-domain trace.
    fn printed(only: &[&str], hide: &[&str]) -> Vec<(u64, &'static str)> {
        let owned = |names: &[&str]| {
            names
                .iter()
                .map(|name| name.to_string())
                .collect::<Vec<_>>()
        };
        let mut filter = ClassFilter::new(&owned(only), &owned(hide)).expect("known classes");
        crate::sample::event_channel_ping()
            .into_iter()
            .filter(|event| filter.shows(event))
            .map(|event| (event.seq, event.body.kind()))
            .collect()
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
