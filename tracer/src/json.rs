//! The public form of an event: one JSON object per line (JSON Lines), documented in
//! `tracer/SCHEMA.md`. Every object starts with `"v"` (the schema version), `"seq"`,
//! `"tsc"`, `"dom"` (absent for the hypervisor itself) and `"kind"`, followed by the fields
//! of that kind.
//!
//! The Rust types in `traplab_abi::event` are the single definition; this module only moves
//! the variant name into `"kind"` and back.

use serde_json::{Map, Value};
use traplab_abi::SCHEMA_VERSION;
use traplab_abi::event::{Body, Event};

/// Why a line is not an event.
#[derive(Debug, Clone, thiserror::Error, PartialEq)]
pub enum JsonError {
    #[error("not JSON: {0}")]
    Syntax(String),
    #[error("not a JSON object")]
    NotAnObject,
    #[error("missing or invalid field \"{0}\"")]
    Field(&'static str),
    #[error("schema version {found}, this traplab reads version {SCHEMA_VERSION}")]
    Version { found: u64 },
    #[error("unknown kind \"{0}\"")]
    UnknownKind(String),
    #[error("bad \"{kind}\" event: {message}")]
    Body { kind: String, message: String },
    /// A field has the wrong type (found while indexing a recording, before the kind is known).
    #[error("bad field: {0}")]
    Data(String),
    /// The line's `seq` does not come after the one of the event before it (found while
    /// reading a recording: a line on its own has no order).
    #[error(
        "seq {found} after seq {previous}: a trace's seq only goes up, so this line repeats an event or is out of order"
    )]
    OutOfOrder { previous: u64, found: u64 },
    /// The line's `seq` jumps ahead, and the events after it go on from before it, from
    /// `next` on line `next_line`: this line's `seq` is the wrong one (`order.rs`).
    /// `previous` is `None` at the start.
    #[error("{}", jumps_ahead(*previous, *found, *next_line, *next))]
    JumpsAhead {
        previous: Option<u64>,
        found: u64,
        next_line: usize,
        next: u64,
    },
    /// The line is longer than any event (`recording::MAX_LINE`): it was read past to its
    /// newline, never held whole.
    #[error(
        "the line is longer than {limit} bytes, far longer than any event: skipped (read past, not held in memory)"
    )]
    TooLong { limit: usize },
    /// `dom` is there for a kind that is the hypervisor's own, or missing for one that is
    /// always about a domain (`SCHEMA.md`, "Which events have a `dom`").
    #[error("{}", dom_rule_broken(kind, *has_dom))]
    Dom { kind: &'static str, has_dom: bool },
    /// `"dom": null`. The hypervisor's own events leave `dom` out (`SCHEMA.md`); `null` is
    /// no domain, and read as absent it would let a line that names none pass for the
    /// hypervisor's (or for a `lost` event's "no domain").
    #[error(
        "\"dom\" is null: an event about the hypervisor has no \"dom\" at all, and null names no domain"
    )]
    DomNull,
}

/// What a [`JsonError::JumpsAhead`] says.
fn jumps_ahead(previous: Option<u64>, found: u64, next_line: usize, next: u64) -> String {
    let from = match previous {
        Some(previous) => format!("seq {previous}"),
        None => "the start".to_string(),
    };
    format!(
        "seq {found} jumps ahead of {from}, but line {next_line} goes on from before it with seq {next}: this line's seq is wrong"
    )
}

/// What a [`JsonError::Dom`] says.
fn dom_rule_broken(kind: &str, has_dom: bool) -> String {
    match has_dom {
        true => format!(
            "an event of kind \"{kind}\" is the hypervisor's own and has no \"dom\", but this one has one"
        ),
        false => {
            format!(
                "an event of kind \"{kind}\" is always about a domain, but this one has no \"dom\""
            )
        }
    }
}

/// Whether the events of a kind carry `dom` (`SCHEMA.md`, "Which events have a `dom`").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DomRule {
    /// Always about a domain: an exit and every step of its trap, a domain's change, its
    /// console line, a notification or grant it made.
    Always,
    /// The hypervisor's own: its boot, its CPU's switches, its end.
    Never,
    /// A `lost` event has the `dom` of the event the hypervisor was recording when it saw
    /// the loss, which may be its own.
    Either,
}

/// The [`DomRule`] of `body`'s kind. (Every kind is named: a new kind must say which.)
fn dom_rule(body: &Body) -> DomRule {
    match body {
        Body::Boot(_) | Body::Schedule(_) | Body::End(_) => DomRule::Never,
        Body::Lost(_) => DomRule::Either,
        Body::Domain(_)
        | Body::Exit(_)
        | Body::Decide(_)
        | Body::Emulate(_)
        | Body::Inject(_)
        | Body::Bounce(_)
        | Body::Return(_)
        | Body::Notify(_)
        | Body::GrantMap(_)
        | Body::GrantUnmap(_)
        | Body::Resume(_)
        | Body::Console(_) => DomRule::Always,
    }
}

/// Does `dom` (present or not) fit the kind of `body`?
fn check_dom(body: &Body, dom: Option<u16>) -> Result<(), JsonError> {
    let fits = match dom_rule(body) {
        DomRule::Always => dom.is_some(),
        DomRule::Never => dom.is_none(),
        DomRule::Either => true,
    };
    match fits {
        true => Ok(()),
        false => Err(JsonError::Dom {
            kind: body.kind(),
            has_dom: dom.is_some(),
        }),
    }
}

/// A `resume` event's `cycles` that no measurement gives: `u64::MAX`, which the flows use
/// to mean "no time" (`flows::NO_CYCLES`), so the time columns would go blank without a
/// word. The hypervisor counts the TSC ticks from the exit to the VMRUN.
pub fn check_cycles(cycles: u64) -> Result<(), JsonError> {
    if cycles == crate::flows::NO_CYCLES {
        return Err(JsonError::Body {
            kind: "resume".into(),
            message: format!("cycles {cycles} is u64::MAX, not a measured time"),
        });
    }
    Ok(())
}

/// The JSON object of an event.
pub fn to_value(event: &Event) -> Value {
    let mut object = Map::new();
    object.insert("v".into(), SCHEMA_VERSION.into());
    object.insert("seq".into(), event.seq.into());
    object.insert("tsc".into(), event.tsc.into());
    if let Some(dom) = event.dom {
        object.insert("dom".into(), dom.into());
    }
    object.insert("kind".into(), event.body.kind().into());
    // serde writes the body as {"<kind>": {fields}}: lift the fields up.
    if let Ok(Value::Object(mut wrapped)) = serde_json::to_value(&event.body)
        && let Some(Value::Object(fields)) = wrapped.remove(event.body.kind())
    {
        object.extend(fields);
    }
    Value::Object(object)
}

/// One line of JSON, without the newline.
pub fn to_line(event: &Event) -> String {
    to_value(event).to_string()
}

/// Parse one line.
pub fn from_line(line: &str) -> Result<Event, JsonError> {
    let value: Value =
        serde_json::from_str(line).map_err(|error| JsonError::Syntax(error.to_string()))?;
    from_value(value)
}

/// Parse one JSON object.
pub fn from_value(value: Value) -> Result<Event, JsonError> {
    let Value::Object(mut object) = value else {
        return Err(JsonError::NotAnObject);
    };
    let version = object
        .remove("v")
        .and_then(|v| v.as_u64())
        .ok_or(JsonError::Field("v"))?;
    if version != SCHEMA_VERSION as u64 {
        return Err(JsonError::Version { found: version });
    }
    let seq = object
        .remove("seq")
        .and_then(|v| v.as_u64())
        .ok_or(JsonError::Field("seq"))?;
    let tsc = object
        .remove("tsc")
        .and_then(|v| v.as_u64())
        .ok_or(JsonError::Field("tsc"))?;
    let dom = match object.remove("dom") {
        // The hypervisor's own events leave it out; `null` is no domain and no absence.
        None => None,
        Some(Value::Null) => return Err(JsonError::DomNull),
        // A domain id: below Xen's reserved ids (`DOMID_FIRST_RESERVED`, 0x7ff0, where
        // `DOMID_SELF` is), which name no domain.
        Some(value) => Some(
            value
                .as_u64()
                .filter(|&dom| dom < u64::from(traplab_abi::evtchn::DOMID_SELF))
                .and_then(|dom| u16::try_from(dom).ok())
                .ok_or(JsonError::Field("dom"))?,
        ),
    };
    let kind = match object.remove("kind") {
        Some(Value::String(kind)) => kind,
        _ => return Err(JsonError::Field("kind")),
    };
    if !Body::KINDS.contains(&kind.as_str()) {
        return Err(JsonError::UnknownKind(kind));
    }
    let mut wrapped = Map::new();
    wrapped.insert(kind.clone(), Value::Object(object));
    let body: Body =
        serde_json::from_value(Value::Object(wrapped)).map_err(|error| JsonError::Body {
            kind,
            message: error.to_string(),
        })?;
    if let Body::Resume(resume) = &body {
        check_cycles(resume.cycles)?;
    }
    check_dom(&body, dom)?;
    Ok(Event {
        seq,
        tsc,
        dom,
        body,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::borrow::Cow;
    use traplab_abi::event::{Action, Console, Decide, End, Exit, InstructionBytes, Registers};

    fn exit() -> Event {
        Event {
            seq: 3,
            tsc: 99,
            dom: Some(0),
            body: Body::Exit(Exit {
                exitcode: 0x4e,
                reason: Cow::Borrowed("EXCP_PF"),
                exitinfo1: 2,
                exitinfo2: 0x4000_0000,
                exitintinfo: 0,
                rip: 0x20_1000,
                cs: 8,
                cpl: 0,
                rflags: 0x46,
                cr0: 0x8001_0033,
                cr2: 0,
                cr3: 0x10000,
                cr4: 0x620,
                efer: 0x1d00,
                regs: Registers {
                    rax: 42,
                    ..Registers::default()
                },
                insn: InstructionBytes::new(&[0x48, 0xc7, 0x00, 0x2a, 0, 0, 0]),
            }),
        }
    }

    #[test]
    fn the_line_starts_with_the_envelope_and_flattens_the_body() {
        let line = to_line(&exit());
        assert!(line.starts_with(r#"{"v":1,"seq":3,"tsc":99,"dom":0,"kind":"exit","exitcode":78,"reason":"EXCP_PF","exitinfo1":"0x2","exitinfo2":"0x40000000""#), "{line}");
        assert!(line.contains(r#""insn":"48c7002a000000""#));
        assert_eq!(from_line(&line).unwrap(), exit());
    }

    #[test]
    fn a_dom_among_xen_s_reserved_ids_is_a_bad_field() {
        // 0x7ff0 (DOMID_SELF) and up name no domain; 65535 once read as "no domain".
        for dom in [0x7ff0, 65535] {
            let line =
                format!(r#"{{"v":1,"seq":0,"tsc":1,"dom":{dom},"kind":"console","text":"hi"}}"#);
            assert!(
                matches!(from_line(&line), Err(JsonError::Field("dom"))),
                "{dom}"
            );
        }
        let line = r#"{"v":1,"seq":0,"tsc":1,"dom":32751,"kind":"console","text":"hi"}"#;
        assert_eq!(from_line(line).map(|event| event.dom), Ok(Some(0x7fef)));
    }

    #[test]
    fn hypervisor_events_have_no_dom() {
        let event = Event {
            seq: 0,
            tsc: 1,
            dom: None,
            body: Body::End(End {
                status: 0,
                reason: "done".into(),
            }),
        };
        let line = to_line(&event);
        assert_eq!(
            line,
            r#"{"v":1,"seq":0,"tsc":1,"kind":"end","status":0,"reason":"done"}"#
        );
        assert_eq!(from_line(&line).unwrap(), event);
    }

    #[test]
    fn a_kind_about_a_domain_needs_its_dom_and_the_hypervisor_s_own_have_none() {
        // A guest's console line without the guest: whose lane would it go in?
        assert_eq!(
            from_line(r#"{"v":1,"seq":0,"tsc":1,"kind":"console","text":"hi"}"#),
            Err(JsonError::Dom {
                kind: "console",
                has_dom: false
            })
        );
        let end = r#"{"v":1,"seq":9,"tsc":1,"dom":1,"kind":"end","status":0,"reason":"done"}"#;
        let error = from_line(end).expect_err("the hypervisor's end is nobody's domain's");
        assert_eq!(
            error.to_string(),
            "an event of kind \"end\" is the hypervisor's own and has no \"dom\", but this one has one"
        );
        let schedule = r#"{"v":1,"seq":6,"tsc":7,"dom":2,"kind":"schedule","from":1,"to":null,"why":"slice_over","port":null}"#;
        assert!(matches!(from_line(schedule), Err(JsonError::Dom { .. })));
        // `lost` comes with the dom of the event it was recorded before, or none.
        for lost in [
            r#"{"v":1,"seq":3,"tsc":1,"kind":"lost","count":2}"#,
            r#"{"v":1,"seq":3,"tsc":1,"dom":1,"kind":"lost","count":2}"#,
        ] {
            assert!(from_line(lost).is_ok(), "{lost}");
        }
        // Every kind has its rule, and every kind in the recordings the tests use keeps it.
        for kind in Body::KINDS {
            let about_a_domain = !matches!(kind, "boot" | "schedule" | "end" | "lost");
            let sample = crate::sample::event_channel_ping()
                .into_iter()
                .find(|event| event.body.kind() == kind);
            if let Some(event) = sample {
                assert_eq!(
                    dom_rule(&event.body) == DomRule::Always,
                    about_a_domain,
                    "{kind}"
                );
                assert_eq!(check_dom(&event.body, event.dom), Ok(()), "{kind}");
            }
        }
    }

    #[test]
    fn a_null_dom_is_a_bad_line_not_a_missing_dom() {
        // `dom` is absent for the hypervisor (SCHEMA.md); `null` names no domain, and reading
        // it as absent would let a line that means nothing pass for the hypervisor's.
        for line in [
            r#"{"v":1,"seq":9,"tsc":1,"dom":null,"kind":"end","status":0,"reason":"done"}"#,
            r#"{"v":1,"seq":3,"tsc":1,"dom":null,"kind":"lost","count":2}"#,
            r#"{"v":1,"seq":0,"tsc":1,"dom":null,"kind":"console","text":"hi"}"#,
        ] {
            let error = from_line(line).expect_err(line);
            assert_eq!(error, JsonError::DomNull, "{line}");
            assert_eq!(
                error.to_string(),
                "\"dom\" is null: an event about the hypervisor has no \"dom\" at all, and null names no domain"
            );
        }
        // The writer leaves `dom` out for the hypervisor's events: it never writes the null
        // its reader refuses.
        for event in crate::sample::event_channel_ping() {
            let line = to_line(&event);
            assert_eq!(line.contains(r#""dom""#), event.dom.is_some(), "{line}");
            assert!(!line.contains(r#""dom":null"#), "{line}");
        }
    }

    #[test]
    fn an_unfinished_line_says_so_and_a_finished_one_says_nothing_of_it() {
        let prompt = Event {
            seq: 5,
            tsc: 9,
            dom: Some(1),
            body: Body::Console(Console {
                text: "/ # ".into(),
                unfinished: true,
            }),
        };
        let line = to_line(&prompt);
        assert_eq!(
            line,
            r#"{"v":1,"seq":5,"tsc":9,"dom":1,"kind":"console","text":"/ # ","unfinished":true}"#
        );
        assert_eq!(from_line(&line).unwrap(), prompt);
        let finished = r#"{"v":1,"seq":5,"tsc":9,"dom":1,"kind":"console","text":"/ # ls","unfinished":false}"#;
        assert_eq!(
            to_line(&from_line(finished).unwrap()),
            r#"{"v":1,"seq":5,"tsc":9,"dom":1,"kind":"console","text":"/ # ls"}"#
        );
    }

    #[test]
    fn the_kinds_of_domains_side_by_side_round_trip() {
        use traplab_abi::event::{GrantMap, GrantUnmap, Notify, Schedule, ScheduleWhy};
        let events = [
            Event {
                seq: 5,
                tsc: 6,
                dom: Some(1),
                body: Body::Notify(Notify {
                    to: 2,
                    port: 3,
                    from_port: 1,
                    woke: true,
                    masked: false,
                }),
            },
            Event {
                seq: 6,
                tsc: 7,
                dom: None,
                body: Body::Schedule(Schedule {
                    from: Some(1),
                    to: None,
                    why: ScheduleWhy::SliceOver,
                    port: None,
                }),
            },
            Event {
                seq: 7,
                tsc: 8,
                dom: Some(2),
                body: Body::GrantMap(GrantMap {
                    granter: 1,
                    gref: 5,
                    frame: 0x230,
                    host_addr: 0x4000_0000,
                    readonly: true,
                    handle: 9,
                }),
            },
            Event {
                seq: 8,
                tsc: 9,
                dom: Some(2),
                body: Body::GrantUnmap(GrantUnmap {
                    granter: 1,
                    gref: 5,
                    host_addr: 0x4000_0000,
                    handle: 9,
                }),
            },
        ];
        let lines: Vec<String> = events.iter().map(to_line).collect();
        assert_eq!(
            lines[0],
            r#"{"v":1,"seq":5,"tsc":6,"dom":1,"kind":"notify","to":2,"port":3,"from_port":1,"woke":true,"masked":false}"#
        );
        assert_eq!(
            lines[1],
            r#"{"v":1,"seq":6,"tsc":7,"kind":"schedule","from":1,"to":null,"why":"slice_over","port":null}"#,
            "the idle loop is null; the schedule is the hypervisor's (no dom)"
        );
        assert_eq!(
            lines[2],
            r#"{"v":1,"seq":7,"tsc":8,"dom":2,"kind":"grant_map","granter":1,"gref":5,"frame":"0x230","host_addr":"0x40000000","readonly":true,"handle":9}"#
        );
        for (line, event) in lines.iter().zip(&events) {
            assert_eq!(&from_line(line).unwrap(), event, "{line}");
        }
    }

    #[test]
    fn every_kind_of_bad_line_has_its_error() {
        assert!(matches!(from_line("{\"v\":1,"), Err(JsonError::Syntax(_))));
        assert_eq!(from_line("[1]"), Err(JsonError::NotAnObject));
        assert_eq!(from_line(r#"{"seq":1}"#), Err(JsonError::Field("v")));
        assert_eq!(
            from_line(r#"{"v":7,"seq":1,"tsc":0,"kind":"end"}"#),
            Err(JsonError::Version { found: 7 })
        );
        assert_eq!(
            from_line(r#"{"v":1,"seq":1,"tsc":0,"kind":"party"}"#),
            Err(JsonError::UnknownKind("party".into()))
        );
        let bad = from_line(
            r#"{"v":1,"seq":1,"tsc":0,"kind":"decide","action":"dance","why":"","at":""}"#,
        );
        assert!(matches!(bad, Err(JsonError::Body { .. })), "{bad:?}");
        let decide = Event {
            seq: 1,
            tsc: 0,
            dom: Some(2),
            body: Body::Decide(Decide {
                action: Action::Reflect,
                why: "w".into(),
                at: "hv/src/x.rs:1".into(),
            }),
        };
        assert_eq!(from_line(&to_line(&decide)).unwrap(), decide);
    }
}
