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

/// Does event `seq` come after `previous` (the seq of the event before it, if any)? A
/// recording's events are in the order the hypervisor numbered them, each once.
pub fn check_order(previous: Option<u64>, seq: u64) -> Result<(), JsonError> {
    match previous {
        Some(previous) if seq <= previous => Err(JsonError::OutOfOrder {
            previous,
            found: seq,
        }),
        _ => Ok(()),
    }
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
        None | Some(Value::Null) => None,
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
    use traplab_abi::event::{Action, Console, Decide, Exit, InstructionBytes, Registers};

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
            body: Body::Console(Console::line("hi")),
        };
        let line = to_line(&event);
        assert_eq!(
            line,
            r#"{"v":1,"seq":0,"tsc":1,"kind":"console","text":"hi"}"#
        );
        assert_eq!(from_line(&line).unwrap(), event);
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
