//! The expected flow of a lab, and checking a trace against it.
//!
//! Each `[[expect]]` table of a lab is one step of its flow: a [`Pattern`] over the JSON
//! form of an event, every key of which must be present in the event with that value. The
//! patterns must match events in order; other events may come between. Values compare
//! loosely where the trace writes numbers as hex strings: `exitinfo1 = 2` matches
//! `"exitinfo1": "0x2"`. A string `"sym:NAME+0x10"` is the address of symbol NAME in the
//! lab's first guest, plus 0x10; `"contains:TEXT"` matches a string that contains TEXT (for
//! console lines with addresses in them), `"prefix:TEXT"` one that starts with it (for the
//! instruction bytes at RIP: `insn = "prefix:0f0b"`). `"step:N.FIELD"` is the value of FIELD
//! in the event step N matched (1 is the first step): `rip = "step:1.rip"` on a `return`
//! says that the handler returned to the instruction that faulted at step 1 (a retry), not
//! past it. An array matches when each of its elements matches some element of the event's
//! array (`changes = [{ name = "cr0" }]`).
//!
//! Two keys are not fields. `quiet = [0]` on a step says that the domains listed had no event
//! at all between the step before and this one. `absent = [{ kind = "decide", dom = 1,
//! action = "forward" }]` says that no event matching one of those patterns came between
//! them (the `swap-in` exercise: d1 sends no second event for its second request; the
//! `swap-in` lab: dom0 sends no event, maps no grant, writes nothing while d1's page comes
//! back) — narrower than `quiet`, for a domain that may run in between, as a scheduler may
//! let it: a woken domain that is not boosted runs when a time slice ends, anywhere.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use traplab_abi::event::Event;
use traplab_tracer::json;
use traplab_tracer::symbols::Symbols;

/// What one step of an expected flow must see: the fields an event must have. (A *step*
/// is a place in the flow, "step 3 of 5"; the pattern is what the event there must match.)
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Pattern(pub Map<String, Value>);

impl Pattern {
    /// `kind field=value …`, for messages.
    pub fn describe(&self) -> String {
        let kind = self
            .0
            .get("kind")
            .and_then(Value::as_str)
            .unwrap_or("event");
        let fields: Vec<String> = self
            .0
            .iter()
            .filter(|(key, _)| *key != "kind")
            .map(|(key, value)| format!("{key}={value}"))
            .collect();
        if fields.is_empty() {
            kind.to_string()
        } else {
            format!("{kind} {}", fields.join(" "))
        }
    }
}

/// The fields of each kind of event (`tracer/SCHEMA.md`), besides `v`, `seq`, `tsc`, `dom`
/// and `kind`, which every event has.
const FIELDS: [(&str, &[&str]); 16] = [
    (
        "boot",
        &[
            "hv",
            "cpu",
            "svm_revision",
            "nested_paging",
            "nrip_save",
            "decode_assists",
            "tsc_hz",
            "ram_mib",
        ],
    ),
    ("domain", &["state", "name", "status", "reason"]),
    (
        "exit",
        &[
            "exitcode",
            "reason",
            "exitinfo1",
            "exitinfo2",
            "exitintinfo",
            "rip",
            "cs",
            "cpl",
            "rflags",
            "cr0",
            "cr2",
            "cr3",
            "cr4",
            "efer",
            "regs",
            "insn",
        ],
    ),
    ("decide", &["action", "why", "at"]),
    ("emulate", &["what", "changes"]),
    (
        "inject",
        &[
            "vector",
            "name",
            "type",
            "error_code",
            "cr2",
            "handler",
            "synthetic",
        ],
    ),
    (
        "bounce",
        &[
            "vector",
            "name",
            "error_code",
            "cr2",
            "handler",
            "frame",
            "interrupts",
            "synthetic",
        ],
    ),
    (
        "return",
        &["via", "vector", "name", "rip", "cs", "rflags", "rsp"],
    ),
    ("notify", &["to", "port", "from_port", "woke", "masked"]),
    (
        "grant_map",
        &[
            "granter",
            "gref",
            "frame",
            "host_addr",
            "readonly",
            "handle",
        ],
    ),
    ("grant_unmap", &["granter", "gref", "host_addr", "handle"]),
    ("resume", &["rip", "rflags", "regs", "cycles"]),
    ("schedule", &["from", "to", "why", "port"]),
    ("console", &["text", "unfinished"]),
    ("lost", &["count"]),
    ("end", &["status", "reason"]),
];

/// The key of a step that names the domains with no event since the step before.
const QUIET: &str = "quiet";
/// The key of a step that lists patterns no event since the step before may match.
const ABSENT: &str = "absent";

impl Pattern {
    /// The domains that must have had no event between the step before and this one.
    pub fn quiet(&self) -> Vec<u16> {
        self.0
            .get(QUIET)
            .and_then(Value::as_array)
            .map(|doms| {
                doms.iter()
                    .filter_map(|dom| dom.as_u64().and_then(|dom| u16::try_from(dom).ok()))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The patterns no event between the step before and this one may match.
    pub fn absent(&self) -> Vec<Pattern> {
        self.0
            .get(ABSENT)
            .and_then(Value::as_array)
            .map(|patterns| {
                patterns
                    .iter()
                    .filter_map(|pattern| pattern.as_object().cloned().map(Pattern))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The fields an event must have: the pattern without its rules about the events
    /// before it (`quiet`, `absent`).
    fn fields(&self) -> Map<String, Value> {
        let mut fields = self.0.clone();
        fields.remove(QUIET);
        fields.remove(ABSENT);
        fields
    }

    /// A field no event of the pattern's kind has (a typo, or a TOML key that landed in the
    /// last `[[expect]]` table by mistake), or a missing or unknown kind: the pattern could
    /// never match.
    pub fn unknown_field(&self) -> Option<String> {
        let Some(kind) = self.0.get("kind").and_then(Value::as_str) else {
            return Some("kind".into());
        };
        let Some((_, fields)) = FIELDS.iter().find(|(name, _)| *name == kind) else {
            return Some(format!("kind = {kind:?}"));
        };
        if let Some(quiet) = self.0.get(QUIET)
            && self.quiet().len() != quiet.as_array().map_or(usize::MAX, Vec::len)
        {
            return Some(format!("{QUIET} = {quiet} (a list of domain numbers)"));
        }
        if let Some(absent) = self.0.get(ABSENT) {
            let patterns = self.absent();
            if patterns.len() != absent.as_array().map_or(usize::MAX, Vec::len) {
                return Some(format!("{ABSENT} = {absent} (a list of patterns)"));
            }
            if let Some(wrong) = patterns.iter().find_map(Pattern::unknown_field) {
                return Some(format!("{wrong} (in {ABSENT})"));
            }
        }
        self.0
            .keys()
            .find(|key| {
                !["v", "seq", "tsc", "dom", "kind", QUIET, ABSENT].contains(&key.as_str())
                    && !fields.contains(&key.as_str())
            })
            .cloned()
    }
}

/// Where a trace leaves the expected flow.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{}", self.explain())]
pub struct Mismatch {
    /// 0-based index of the step that found no event.
    pub step: usize,
    pub expected: String,
    /// The seq of the event that matched the step before (`None` for the first step).
    pub after_seq: Option<u64>,
    /// The event of the step's kind most like the step, wherever it is: the nearest miss.
    pub nearest: Option<Nearest>,
    /// The step's event came, but an event its `quiet` or `absent` forbids came before it.
    pub intruder: Option<Intruder>,
}

/// An event that broke a step's rule about the events before it.
#[derive(Debug, Clone, PartialEq)]
pub struct Intruder {
    /// The rule, completing "with …": `a domain that had to stay quiet doing nothing
    /// before it`, `no decide dom=1 action=forward before it`.
    pub rule: String,
    /// The event, as a readable line.
    pub line: String,
}

/// The event of a missing step's kind that matches the most of the step's fields (and, among
/// those, has the texts most like the step's: `REP OUTS 27 element(s)` for 28): what the
/// student nearly got.
#[derive(Debug, Clone, PartialEq)]
pub struct Nearest {
    pub seq: u64,
    /// The event as a readable line.
    pub line: String,
    /// It came before the step before this one: the event is there, not in that order.
    pub earlier: bool,
}

impl Mismatch {
    pub fn explain(&self) -> String {
        let mut text = format!(
            "step {} of the expected flow did not happen: expected {}",
            self.step + 1,
            self.expected
        );
        if let Some(seq) = self.after_seq {
            text.push_str(&format!(" after event {seq}"));
        }
        if let Some(intruder) = &self.intruder {
            text.push_str(&format!(
                ", with {}; but this came first: {}",
                intruder.rule, intruder.line
            ));
            return text;
        }
        match &self.nearest {
            Some(nearest) => {
                text.push_str(&format!(
                    "; the nearest event of that kind was: {}",
                    nearest.line
                ));
                if let (true, Some(seq)) = (nearest.earlier, self.after_seq) {
                    text.push_str(&format!(
                        " (it came before event {seq}, which matched step {})",
                        self.step
                    ));
                }
            }
            None => text.push_str("; no event of that kind came"),
        }
        text
    }
}

/// The first event in `between` that `pattern`'s `quiet` or `absent` forbids.
fn intruder(
    pattern: &Pattern,
    between: std::ops::Range<usize>,
    events: &[Event],
    values: &[Value],
    symbols: &Symbols,
) -> Option<Intruder> {
    let quiet = pattern.quiet();
    let absent: Vec<(String, Map<String, Value>)> = pattern
        .absent()
        .iter()
        .map(|absent| (absent.describe(), absent.fields()))
        .collect();
    between.into_iter().find_map(|index| {
        let line = || traplab_tracer::text::line(&events[index]);
        if events[index].dom.is_some_and(|dom| quiet.contains(&dom)) {
            return Some(Intruder {
                rule: "a domain that had to stay quiet doing nothing before it".into(),
                line: line(),
            });
        }
        absent
            .iter()
            .find(|(_, fields)| matches(fields, &values[index], symbols))
            .map(|(described, _)| Intruder {
                rule: format!("no {described} before it"),
                line: line(),
            })
    })
}

/// Check `events` against the flow `patterns`, one per step. (A mismatch is boxed: it is
/// big, and rare.)
pub fn check(
    patterns: &[Pattern],
    events: &[Event],
    symbols: &Symbols,
) -> Result<(), Box<Mismatch>> {
    matched_events(patterns, events, symbols).map(|_| ())
}

/// Check `events` against the flow `patterns`; on a match, the index of the event each step
/// matched (the book marks them in the traces it shows).
pub fn matched_events(
    patterns: &[Pattern],
    events: &[Event],
    symbols: &Symbols,
) -> Result<Vec<usize>, Box<Mismatch>> {
    let values: Vec<Value> = events.iter().map(json::to_value).collect();
    let mut position = 0;
    let mut after_seq = None;
    let mut matched = Vec::with_capacity(patterns.len());
    for (index, pattern) in patterns.iter().enumerate() {
        let fields = earlier_steps(pattern.fields(), &matched, &values);
        match (position..values.len())
            .find(|&candidate| matches(&fields, &values[candidate], symbols))
        {
            Some(found) => {
                if let Some(intruder) = intruder(pattern, position..found, events, &values, symbols)
                {
                    return Err(Box::new(Mismatch {
                        step: index,
                        expected: pattern.describe(),
                        after_seq,
                        nearest: None,
                        intruder: Some(intruder),
                    }));
                }
                after_seq = Some(events[found].seq);
                position = found + 1;
                matched.push(found);
            }
            None => {
                let nearest = nearest(&fields, position, &values, symbols).map(|found| Nearest {
                    seq: events[found].seq,
                    line: traplab_tracer::text::line(&events[found]),
                    earlier: found < position,
                });
                return Err(Box::new(Mismatch {
                    step: index,
                    expected: pattern.describe(),
                    after_seq,
                    nearest,
                    intruder: None,
                }));
            }
        }
    }
    Ok(matched)
}

/// The event of `pattern`'s kind (and domain, when it names one) most like it: the most
/// fields matched, then the texts most alike (`nearest::similarity`). Among equals, the
/// first one from `position` on, then the last one before it: the nearest in the trace.
fn nearest(
    pattern: &Map<String, Value>,
    position: usize,
    values: &[Value],
    symbols: &Symbols,
) -> Option<usize> {
    let same = |key: &str, value: &Value| {
        pattern.get(key).is_none_or(|wanted| {
            value
                .get(key)
                .is_some_and(|actual| value_matches(wanted, actual, symbols))
        })
    };
    let score = |value: &Value| -> f64 {
        pattern
            .iter()
            .filter(|(key, _)| !["kind", "dom"].contains(&key.as_str()))
            .map(|(key, expected)| match (expected, value.get(key)) {
                (_, Some(actual)) if value_matches(expected, actual, symbols) => 1.0,
                // A text nearly right counts for part of a field, and never for a whole one.
                (Value::String(expected), Some(Value::String(actual))) => {
                    0.9 * crate::nearest::similarity(expected, actual)
                }
                _ => 0.0,
            })
            .sum()
    };
    let later = position..values.len();
    let earlier = (0..position.min(values.len())).rev();
    let mut best: Option<(usize, f64)> = None;
    for candidate in later.chain(earlier) {
        let value = &values[candidate];
        if !same("kind", value) || !same("dom", value) {
            continue;
        }
        let candidate_score = score(value);
        if best.is_none_or(|(_, best_score)| candidate_score > best_score) {
            best = Some((candidate, candidate_score));
        }
    }
    best.map(|(candidate, _)| candidate)
}

/// `fields` with each `"step:N.FIELD"` replaced by FIELD of the event step N matched
/// (`matched`: the events of the steps before this one). A step not matched yet, or a field
/// its event does not have, is `null`, which no event's field matches.
fn earlier_steps(
    mut fields: Map<String, Value>,
    matched: &[usize],
    values: &[Value],
) -> Map<String, Value> {
    for value in fields.values_mut() {
        let Some(reference) = value.as_str().and_then(|text| text.strip_prefix("step:")) else {
            continue;
        };
        let earlier = reference.split_once('.').and_then(|(step, field)| {
            let step: usize = step.parse().ok()?;
            let event = &values[*matched.get(step.checked_sub(1)?)?];
            event.get(field).cloned()
        });
        *value = earlier.unwrap_or(Value::Null);
    }
    fields
}

/// Does `event` have every field of `pattern`?
fn matches(pattern: &Map<String, Value>, event: &Value, symbols: &Symbols) -> bool {
    pattern.iter().all(|(key, expected)| match event.get(key) {
        Some(actual) => value_matches(expected, actual, symbols),
        // A flag the JSON leaves out when it is false (a console line's `unfinished`).
        None => *expected == Value::Bool(false),
    })
}

fn value_matches(expected: &Value, actual: &Value, symbols: &Symbols) -> bool {
    match (expected, actual) {
        (Value::Object(pattern), Value::Object(_)) => matches(pattern, actual, symbols),
        // An array pattern: each of its elements matches some element of the event's array.
        (Value::Array(patterns), Value::Array(elements)) => patterns.iter().all(|pattern| {
            elements
                .iter()
                .any(|element| value_matches(pattern, element, symbols))
        }),
        (Value::String(text), _) if text.starts_with("sym:") => symbols
            .resolve(&text[4..])
            .is_some_and(|address| as_number(actual) == Some(address)),
        (Value::String(text), Value::String(actual)) if text.starts_with("contains:") => {
            actual.contains(&text[9..])
        }
        (Value::String(text), Value::String(actual)) if text.starts_with("prefix:") => {
            actual.starts_with(&text[7..])
        }
        (Value::Number(_), Value::String(_)) | (Value::String(_), Value::Number(_)) => {
            as_number(expected).is_some() && as_number(expected) == as_number(actual)
        }
        _ => expected == actual,
    }
}

fn as_number(value: &Value) -> Option<u64> {
    match value {
        Value::Number(number) => number
            .as_u64()
            .or_else(|| number.as_i64().map(|n| n as u64)),
        Value::String(text) => traplab_abi::event::hex::parse(text),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use traplab_abi::event::{Body, Console, EventType, Inject};

    fn pattern(toml_text: &str) -> Pattern {
        toml::from_str(toml_text).unwrap()
    }

    fn events() -> Vec<Event> {
        let inject = Body::Inject(Inject {
            vector: 14,
            name: "#PF".into(),
            kind: EventType::Exception,
            error_code: Some(2),
            cr2: Some(0x4000_0000),
            handler: Some(0x20_04e0),
            synthetic: false,
        });
        vec![
            Event {
                seq: 0,
                tsc: 0,
                dom: Some(0),
                body: Body::Console(Console::line("a")),
            },
            Event {
                seq: 1,
                tsc: 0,
                dom: Some(0),
                body: inject,
            },
            Event {
                seq: 2,
                tsc: 0,
                dom: Some(0),
                body: Body::Console(Console::line("b")),
            },
        ]
    }

    #[test]
    fn a_step_may_name_a_field_of_an_earlier_step_s_event() {
        // Two injects: the second's handler named as the first's (`step:1.handler`).
        let patterns = |reference: &str| {
            [
                pattern(r#"kind = "inject""#),
                pattern(&format!("kind = \"inject\"\nhandler = \"{reference}\"")),
            ]
        };
        let mut twice = events();
        twice.push(twice[1].clone());
        let symbols = Symbols::default();
        assert_eq!(check(&patterns("step:1.handler"), &twice, &symbols), Ok(()));
        // A step that is not before it, or a field its event lacks, never matches.
        for reference in ["step:2.handler", "step:1.nothing", "step:0.handler"] {
            assert!(
                check(&patterns(reference), &twice, &symbols).is_err(),
                "{reference}"
            );
        }
        // Another handler the second time: no match.
        if let Body::Inject(inject) = &mut twice[3].body {
            inject.handler = Some(0x20_0600);
        }
        assert!(check(&patterns("step:1.handler"), &twice, &symbols).is_err());
    }

    #[test]
    fn patterns_match_in_order_with_loose_numbers() {
        let patterns = [
            pattern(r#"kind = "console""#),
            pattern(
                r#"kind = "inject"
                     vector = 14
                     error_code = "0x2"
                     cr2 = 0x40000000"#,
            ),
            pattern(
                r#"kind = "console"
                     text = "contains:b""#,
            ),
        ];
        assert_eq!(check(&patterns, &events(), &Symbols::default()), Ok(()));
    }

    #[test]
    fn every_kind_has_its_fields_and_a_typo_is_caught() {
        let known: Vec<&str> = FIELDS.iter().map(|(kind, _)| *kind).collect();
        let mut kinds = traplab_abi::event::Body::KINDS.to_vec();
        kinds.sort_unstable();
        let mut known_sorted = known.clone();
        known_sorted.sort_unstable();
        assert_eq!(known_sorted, kinds);
        assert_eq!(
            pattern("kind = \"notify\"\nto = 2\nport = 3").unknown_field(),
            None
        );
        assert_eq!(
            pattern("kind = \"schedule\"\nwhy = \"woken\"\nporte = 3").unknown_field(),
            Some("porte".into())
        );
    }

    #[test]
    fn a_quiet_domain_must_have_no_event_between_two_steps() {
        let mut events = events();
        for event in &mut events {
            event.dom = Some(1);
        }
        let symbols = Symbols::default();
        let steps = [
            pattern(r#"kind = "console""#),
            pattern("kind = \"console\"\ntext = \"b\"\nquiet = [0]"),
        ];
        assert_eq!(steps[1].unknown_field(), None);
        assert_eq!(check(&steps, &events, &symbols), Ok(()));
        // d0 does something between the two steps: the flow is broken, and the message
        // names what d0 did.
        events[1].dom = Some(0);
        let mismatch = check(&steps, &events, &symbols).unwrap_err();
        assert_eq!(mismatch.step, 1);
        let intruder = mismatch.intruder.clone().unwrap().line;
        assert!(intruder.contains("#PF"), "{intruder}");
        assert!(
            mismatch.explain().contains("stay quiet"),
            "{}",
            mismatch.explain()
        );
        // Before the step before, d0 may do what it likes.
        events[1].dom = Some(1);
        events[0].dom = Some(0);
        let steps = [
            pattern(r#"kind = "inject""#),
            pattern("kind = \"console\"\nquiet = [0]"),
        ];
        assert_eq!(check(&steps, &events, &symbols), Ok(()));
        assert_eq!(
            pattern("kind = \"console\"\nquiet = 0").unknown_field(),
            Some("quiet = 0 (a list of domain numbers)".into())
        );
    }

    #[test]
    fn an_absent_pattern_must_match_no_event_between_two_steps() {
        let events = events();
        let symbols = Symbols::default();
        let first = pattern("kind = \"console\"\ntext = \"a\"");
        // The console line comes after the inject: forbidding injects between breaks the flow.
        let forbids_inject = pattern(
            "kind = \"console\"\ntext = \"b\"\nabsent = [{ kind = \"inject\", vector = 14 }]",
        );
        assert_eq!(forbids_inject.unknown_field(), None);
        let mismatch = check(&[first.clone(), forbids_inject], &events, &symbols).unwrap_err();
        assert_eq!(mismatch.step, 1);
        let intruder = mismatch.intruder.clone().unwrap();
        assert!(intruder.rule.contains("no inject"), "{}", intruder.rule);
        assert!(intruder.line.contains("inject"), "{}", intruder.line);
        assert!(mismatch.explain().contains("but this came first"));
        // A pattern nothing between matches (another vector) leaves the flow whole.
        let forbids_other = pattern(
            "kind = \"console\"\ntext = \"b\"\nabsent = [{ kind = \"inject\", vector = 13 }]",
        );
        assert_eq!(check(&[first, forbids_other], &events, &symbols), Ok(()));
        // A typo inside is found like one outside.
        assert_eq!(
            pattern("kind = \"console\"\nabsent = [{ kind = \"inject\", vectr = 13 }]")
                .unknown_field(),
            Some("vectr (in absent)".into())
        );
        assert_eq!(
            pattern("kind = \"console\"\nabsent = 3").unknown_field(),
            Some("absent = 3 (a list of patterns)".into())
        );
    }

    #[test]
    fn a_missing_step_is_explained_with_the_nearest_event() {
        let patterns = [pattern(
            r#"kind = "inject"
                              vector = 13"#,
        )];
        let mismatch = check(&patterns, &events(), &Symbols::default()).unwrap_err();
        assert_eq!(mismatch.step, 0);
        assert!(
            mismatch.explain().contains("expected inject vector=13"),
            "{}",
            mismatch.explain()
        );
        assert!(
            mismatch.explain().contains("#PF (vector 14"),
            "{}",
            mismatch.explain()
        );
        let order = [
            pattern(
                r#"kind = "console"
                             text = "b""#,
            ),
            pattern(r#"kind = "inject""#),
        ];
        let mismatch = check(&order, &events(), &Symbols::default()).unwrap_err();
        assert_eq!((mismatch.step, mismatch.after_seq), (1, Some(2)));
    }

    #[test]
    fn a_console_step_may_ask_for_a_prompt_or_a_finished_line() {
        let prompt = json::to_value(&Event {
            seq: 1,
            tsc: 0,
            dom: Some(1),
            body: Body::Console(Console {
                text: "/ # ".into(),
                unfinished: true,
            }),
        });
        let line = json::to_value(&Event {
            seq: 2,
            tsc: 0,
            dom: Some(1),
            body: Body::Console(Console::line("/ # ls")),
        });
        let step = |unfinished: bool| {
            let mut pattern = Map::new();
            pattern.insert("text".into(), Value::String("contains:/ #".into()));
            pattern.insert("unfinished".into(), Value::Bool(unfinished));
            pattern
        };
        let symbols = Symbols::default();
        assert!(matches(&step(true), &prompt, &symbols));
        assert!(!matches(&step(true), &line, &symbols));
        assert!(matches(&step(false), &line, &symbols), "absent is false");
        assert!(!matches(&step(false), &prompt, &symbols));
    }
}
