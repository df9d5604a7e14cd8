//! A mismatch between a lab's expected flow and a trace, in a student's words.
//!
//! The checker (`expect.rs`) knows *which* step did not happen; this module says what that
//! step means and what happened instead, using the hypervisor's own `decide` events (their
//! action, their reason, and the source line that made them):
//!
//! ```text
//! step 3 of 5: expected the hypervisor to emulate it, but it reflected it into the
//! guest's IDT at hv/src/exit/exception.rs:98: "the guest owns its exceptions (#UD invalid opcode): …"
//! ```

use crate::expect::{Mismatch, Pattern};
use serde_json::Value;
use traplab_abi::event::{Action, Body, Event, EventType, delivery_name, domain_label};
use traplab_abi::exit::ExitReason;
use traplab_abi::x86;
use traplab_tracer::text;

/// How many console lines to quote as "what the guest printed instead".
const QUOTED_LINES: usize = 3;

/// The pattern as a sentence that completes "expected …": "the hypervisor to reflect #PF into
/// the guest's IDT (vector 14, error code 0x2)".
pub fn expectation(pattern: &Pattern) -> String {
    let kind = pattern.0.get("kind").and_then(Value::as_str).unwrap_or("");
    let sentence = match kind {
        "exit" => exit_expectation(pattern),
        "decide" => decide_expectation(pattern),
        "inject" => inject_expectation(pattern),
        "bounce" => {
            let vector = number(pattern, "vector");
            let name = vector.map_or("an exception".to_string(), |vector| {
                x86::Vector(vector as u8).to_string()
            });
            let mut text = format!(
                "the hypervisor to bounce {name} to the handler the guest registered with set_trap_table"
            );
            details(
                &mut text,
                pattern,
                &[("error_code", "error code", hex), ("cr2", "CR2", hex)],
            );
            text
        }
        "emulate" => match pattern.0.get("what") {
            Some(what) => format!("the hypervisor to emulate {}", quoted(what)),
            None => {
                let names = changes(pattern);
                if names.is_empty() {
                    "the hypervisor to emulate something".into()
                } else {
                    format!("the hypervisor's emulation to change {names}")
                }
            }
        },
        "return" => {
            let name = number(pattern, "vector").map_or("a".to_string(), |vector| {
                format!("the {}", x86::Vector(vector as u8))
            });
            let via = match pattern.0.get("via").and_then(Value::as_str) {
                Some("iret") => " with IRET",
                Some("hypercall") => " with the iret hypercall",
                _ => "",
            };
            // `rip = "step:1.rip"`: back to the instruction of that step (a retry).
            let to = match pattern.0.get("rip").and_then(Value::as_str) {
                Some(step) if step.starts_with("step:") => {
                    let number = step[5..].split('.').next().unwrap_or("?");
                    format!(" to the instruction of step {number} (a retry), not past it")
                }
                _ => String::new(),
            };
            format!("{name} handler to return{via}{to}")
        }
        "resume" => match pattern.0.get("rip") {
            Some(rip) => format!("the guest to continue at {}", quoted(rip)),
            None => "the guest to continue".into(),
        },
        "console" => match pattern.0.get("text") {
            Some(text) => format!("the guest to print {}", quoted(text)),
            None => "the guest to print a line".into(),
        },
        "domain" => domain_expectation(pattern),
        "notify" => notify_expectation(pattern),
        "schedule" => schedule_expectation(pattern),
        "grant_map" | "grant_unmap" => {
            let verb = if kind == "grant_map" { "map" } else { "unmap" };
            let granter = number(pattern, "granter").map(|dom| domain_label(dom as u16));
            let mut text = match (number(pattern, "gref"), granter) {
                (Some(gref), Some(granter)) => {
                    format!("the hypervisor to {verb} grant reference {gref} of {granter}")
                }
                (Some(gref), None) => format!("the hypervisor to {verb} grant reference {gref}"),
                (None, Some(granter)) => format!("the hypervisor to {verb} a grant of {granter}"),
                (None, None) => format!("the hypervisor to {verb} a grant"),
            };
            details(
                &mut text,
                pattern,
                &[
                    ("host_addr", "guest-physical address", hex),
                    ("handle", "handle", plain),
                ],
            );
            text.push_str(flag(pattern, "readonly", ", read-only", ", writable"));
            text
        }
        "end" => match number(pattern, "status") {
            Some(status) => format!("the hypervisor to end with status {status}"),
            None => "the hypervisor to end".into(),
        },
        _ => pattern.describe(),
    };
    let sentence = match dom(pattern) {
        Some(dom) if kind != "domain" => format!("{sentence} (in {})", domain_label(dom)),
        _ => sentence,
    };
    let quiet: Vec<String> = pattern.quiet().into_iter().map(domain_label).collect();
    let sentence = match quiet.len() {
        0 => sentence,
        _ => format!(
            "{sentence}, and nothing at all from {} since the step before",
            quiet.join(" or ")
        ),
    };
    let absent: Vec<String> = pattern.absent().iter().map(expectation).collect();
    match absent.len() {
        0 => sentence,
        _ => format!(
            "{sentence}, and, since the step before, not {}",
            absent.join(", nor ")
        ),
    }
}

/// What happened instead of an event matching `pattern`, completing "but …": the
/// hypervisor's decision at that point, the exit or console line that came instead, or how
/// the domain ended.
pub fn instead(pattern: &Pattern, mismatch: &Mismatch, events: &[Event]) -> String {
    if let Some(intruder) = &mismatch.intruder {
        return format!(
            "this came before it, against the step's rule ({}): {}",
            intruder.rule,
            intruder.line.trim_start()
        );
    }
    let from = mismatch
        .after_seq
        .and_then(|seq| events.iter().position(|event| event.seq == seq))
        .map_or(0, |index| index + 1);
    let dom = dom(pattern);
    let later: Vec<&Event> = events[from..]
        .iter()
        .filter(|event| dom.is_none() || event.dom == dom)
        .collect();
    let kind = pattern.0.get("kind").and_then(Value::as_str).unwrap_or("");
    // The hypervisor's next decision, leaving out the guest's printing (one exit per byte),
    // which comes between almost everything.
    let decision_event = later
        .iter()
        .enumerate()
        .find_map(|(index, event)| match &event.body {
            Body::Decide(decide)
                if !is_console_output(
                    later[..index]
                        .iter()
                        .rev()
                        .find(|event| matches!(event.body, Body::Exit(_))),
                ) =>
            {
                Some((event.seq, decide))
            }
            _ => None,
        });
    let decision = decision_event.map(|(_, decide)| decide);
    let decision_seq = decision_event.map(|(seq, _)| seq);
    let next_of_kind = |wanted: &str| {
        later
            .iter()
            .find(|event| event.body.kind() == wanted)
            .map(|event| event_text(event))
    };
    let vector = number(pattern, "vector");
    // The step before this one, by the event it matched: what "came" is counted from.
    let previous = mismatch
        .after_seq
        .map(|seq| format!("step {}'s event (event {seq})", mismatch.step));
    let since = previous
        .as_ref()
        .map_or(String::new(), |previous| format!(" after {previous}"));
    let before = previous.as_ref().map_or(String::new(), |previous| {
        format!(", which came before {previous}")
    });

    let mut sentence = match kind {
        // An event delivered: was it delivered otherwise, did its exception happen at all?
        "inject" | "bounce" if vector.is_some() => {
            let delivered = later.iter().find(|event| match &event.body {
                Body::Inject(inject) => Some(inject.vector as u64) == vector,
                Body::Bounce(bounce) => Some(bounce.vector as u64) == vector,
                _ => false,
            });
            let raised = later
                .iter()
                .enumerate()
                .find(|(_, event)| match &event.body {
                    Body::Exit(exit) => matches!(
                        exit.exit_reason(),
                        ExitReason::Exception { vector: raised, .. } if Some(raised as u64) == vector
                    ),
                    _ => false,
                });
            let its_decision = raised.and_then(|(index, _)| {
                later[index..].iter().find_map(|event| match &event.body {
                    Body::Decide(decide) => Some(decide),
                    _ => None,
                })
            });
            match (delivered, its_decision) {
                (Some(event), _) => format!("it was delivered otherwise: {}", event_text(event)),
                (None, Some(decide)) => decided(decide),
                (None, None) => {
                    let name = vector.map_or("event".to_string(), |vector| {
                        x86::Vector(vector as u8).to_string()
                    });
                    format!(
                        "no {name} reached the hypervisor after that: the guest never raised it"
                    )
                }
            }
        }
        "decide" | "inject" | "bounce" => match decision {
            // The decision was the expected kind of action: the details differ.
            Some(decide) if kind == "inject" && decide.action == Action::Reflect => {
                match next_of_kind("inject") {
                    Some(line) => format!("it injected something else: {line}"),
                    None => decided(decide),
                }
            }
            Some(decide) if kind == "bounce" && decide.action == Action::Bounce => {
                match next_of_kind("bounce") {
                    Some(line) => format!("it bounced something else: {line}"),
                    None => decided(decide),
                }
            }
            Some(decide) => decided(decide),
            None => "the hypervisor made no decision after that".into(),
        },
        "emulate" => match (decision, next_of_kind("emulate")) {
            (Some(decide), _) if decide.action != Action::Emulate => decided(decide),
            (_, Some(line)) => format!("its next emulation was: {line}"),
            (Some(decide), None) => decided(decide),
            (None, None) => "the hypervisor emulated nothing after that".into(),
        },
        "exit" => {
            let code = number(pattern, "exitcode");
            let reason = pattern.0.get("reason").and_then(Value::as_str);
            let same = later.iter().find(|event| match &event.body {
                Body::Exit(exit) => {
                    code.is_none_or(|code| exit.exitcode == code)
                        && reason.is_none_or(|reason| exit.reason == reason)
                }
                _ => false,
            });
            let name = code
                .map(|code| ExitReason::from_code(code).name())
                .or(reason);
            match (same, name) {
                (Some(event), Some(_)) => {
                    format!("the nearest such exit was different: {}", event_text(event))
                }
                (Some(event), None) => format!("the next exit was: {}", event_text(event)),
                (None, Some(name)) => format!("no {name} exit came{since}"),
                (None, None) => format!("no exit came{since}"),
            }
        }
        "console" => String::new(),
        "domain" => {
            let dom = dom.unwrap_or(traplab_tracer::qemu::FIRST_GUEST);
            match crate::run::ending(events, dom) {
                // It ended as asked but too early: the order is what failed, and saying only
                // how it ended would read as what was expected.
                Some(ending) if crate::run::ending(&events[from..], dom).is_none() => {
                    format!("{} {}{before}", domain_label(dom), ending.describe())
                }
                Some(ending) => format!("{} {}", domain_label(dom), ending.describe()),
                None => format!("{} never ended", domain_label(dom)),
            }
        }
        "notify" => match (decision, next_of_kind("notify")) {
            (_, Some(line)) => format!("it notified otherwise: {line}"),
            (Some(decide), None) if decide.action != Action::Forward => decided(decide),
            _ => "the hypervisor notified no other domain after that".into(),
        },
        "schedule" => match next_of_kind("schedule") {
            Some(line) => format!("the next switch was different: {line}"),
            None => "the hypervisor switched to no other domain after that".into(),
        },
        "grant_map" | "grant_unmap" => match (next_of_kind(kind), decision) {
            (Some(line), _) => format!("the nearest one was different: {line}"),
            (None, Some(decide)) => decided(decide),
            (None, None) => "the hypervisor made no decision after that".into(),
        },
        // The nearest event of the kind, below, says it all.
        _ if mismatch.nearest.is_some() => String::new(),
        _ => "no event of that kind came".into(),
    };
    // What the guest printed from there on is the student's own view of what went on (its
    // finished lines: a prompt comes again whole in the line that ends it).
    let quoted: Vec<&str> = later
        .iter()
        .filter_map(|event| match &event.body {
            Body::Console(console) if !console.unfinished => Some(console.text.as_ref()),
            _ => None,
        })
        .take(QUOTED_LINES)
        .collect();
    let printed = match quoted.len() {
        0 => "the guest printed nothing more".to_string(),
        _ => {
            let lines: Vec<String> = quoted.iter().map(|line| format!("\"{line}\"")).collect();
            format!("the guest printed {}", lines.join(", "))
        }
    };
    // The event of that kind most like the step, wherever it is, unless the sentence quotes
    // it already (that event, or a line with its text): a near miss (`REP OUTS 27
    // element(s)` for 28, a line with 4 for 5) says more than what merely came next.
    let nearest = mismatch
        .nearest
        .as_ref()
        .and_then(|nearest| {
            events
                .iter()
                .find(|event| event.seq == nearest.seq)
                .map(|event| (nearest, event))
        })
        .filter(|(nearest, event)| {
            let already_quoted = match &event.body {
                Body::Console(console) => quoted.contains(&console.text.as_ref()),
                _ => false,
            };
            kind != "domain"
                && !already_quoted
                && !sentence.contains(&format!("event {} (", nearest.seq))
                && decision_seq != Some(nearest.seq)
        })
        .map(|(nearest, event)| {
            let when = if nearest.earlier { before.as_str() } else { "" };
            format!("the nearest {kind} event was {}{when}", event_text(event))
        });

    if sentence.is_empty() {
        sentence = printed;
    } else if kind != "domain" {
        sentence = format!("{sentence}; then {printed}");
    }
    if let Some(nearest) = nearest {
        sentence = format!("{sentence}; {nearest}");
    }
    sentence
}

/// Is this exit the guest printing: an OUT to its console UART, or a console_write
/// hypercall?
fn is_console_output(exit: Option<&&Event>) -> bool {
    let Some(Body::Exit(exit)) = exit.map(|event| &event.body) else {
        return false;
    };
    match exit.exit_reason() {
        // An OUT to any of the UART's eight registers: a byte to send, or the UART's setup.
        ExitReason::Ioio { info, .. } => {
            let uart = traplab_abi::boot::CONSOLE_PORT..=traplab_abi::boot::CONSOLE_PORT + 7;
            !info.input && uart.contains(&info.port)
        }
        ExitReason::Vmmcall => exit.regs.rax == traplab_abi::hypercall::CONSOLE_WRITE,
        _ => false,
    }
}

/// `event 4 (d1 emulate): OUT 'H' to the console UART; …`: an event inside a sentence.
fn event_text(event: &Event) -> String {
    let dom = text::who(event.dom);
    format!(
        "event {} ({dom} {}): {}",
        event.seq,
        event.body.kind(),
        text::detail(event)
    )
}

/// "it reflected it into the guest's IDT at hv/src/exit/exception.rs:98: \"why\"".
fn decided(decide: &traplab_abi::event::Decide) -> String {
    let what = match decide.action {
        Action::Emulate => "emulated it",
        Action::Reflect => "reflected it into the guest's IDT",
        Action::Bounce => "bounced it to the guest's registered handler",
        Action::Forward => "forwarded it to another domain",
        Action::Kill => "killed the domain",
    };
    format!("the hypervisor {what} at {}: \"{}\"", decide.at, decide.why)
}

fn exit_expectation(pattern: &Pattern) -> String {
    let code = number(pattern, "exitcode");
    let reason = pattern.0.get("reason").and_then(Value::as_str);
    // An exception exit reads as the guest raising it.
    let mut text = match (code, reason) {
        (Some(code), _) => match ExitReason::from_code(code) {
            ExitReason::Exception { vector, .. } => format!(
                "the guest to raise {} (exit code {code:#x})",
                x86::exception(vector).mnemonic
            ),
            other => format!(
                "the guest to exit with {} (exit code {code:#x})",
                other.name()
            ),
        },
        // The trace's name of an exception exit (`EXCP_PF`) is in the abi's exception table.
        (None, Some(reason)) => match (0..32)
            .map(x86::exception)
            .find(|exception| exception.exit_name == reason)
        {
            Some(exception) => format!("the guest to raise {} (exit {reason})", exception.mnemonic),
            None => format!("the guest to exit with {reason}"),
        },
        (None, None) => "the guest to exit to the hypervisor".into(),
    };
    details(
        &mut text,
        pattern,
        &[
            ("exitinfo1", "EXITINFO1", hex),
            ("exitinfo2", "EXITINFO2", hex),
            ("exitintinfo", "EXITINTINFO", hex),
            ("cpl", "CPL", plain),
            ("rip", "RIP", hex),
        ],
    );
    if let Some(insn) = pattern.0.get("insn") {
        text.push_str(&format!(", at the instruction {}", quoted(insn)));
    }
    if let Some(Value::Object(registers)) = pattern.0.get("regs") {
        let registers: Vec<String> = registers
            .iter()
            .map(|(name, value)| format!("{} = {}", name.to_uppercase(), plain(value)))
            .collect();
        text.push_str(&format!(", with {}", registers.join(", ")));
    }
    text
}

fn decide_expectation(pattern: &Pattern) -> String {
    let action = pattern.0.get("action").and_then(Value::as_str);
    let mut text = match action {
        Some("emulate") => "the hypervisor to emulate it".to_string(),
        Some("reflect") => "the hypervisor to reflect it into the guest's IDT".into(),
        Some("bounce") => "the hypervisor to bounce it to the guest's registered handler".into(),
        Some("forward") => "the hypervisor to forward it to another domain".into(),
        Some("kill") => "the hypervisor to kill the domain".into(),
        _ => "the hypervisor to decide".into(),
    };
    match pattern.0.get("why") {
        Some(Value::String(why)) if why.starts_with("contains:") => {
            text.push_str(&format!(" for a reason containing \"{}\"", &why[9..]))
        }
        Some(Value::String(why)) if why.starts_with("prefix:") => {
            text.push_str(&format!(" for a reason starting \"{}\"", &why[7..]))
        }
        Some(why) => text.push_str(&format!(", saying {}", quoted(why))),
        None => {}
    }
    if let Some(at) = pattern.0.get("at") {
        text.push_str(&format!(", at {}", quoted(at)));
    }
    text
}

fn inject_expectation(pattern: &Pattern) -> String {
    let vector = number(pattern, "vector");
    let kind = pattern.0.get("type").and_then(Value::as_str);
    let name = match (vector, kind) {
        (Some(vector), Some("interrupt")) => {
            delivery_name(vector as u8, EventType::Interrupt).into_owned()
        }
        (Some(vector), Some("software")) if vector >= 32 => format!(
            "the software interrupt {}",
            delivery_name(vector as u8, EventType::Software)
        ),
        (Some(vector), Some("software")) => {
            format!("{} as a software interrupt", x86::Vector(vector as u8))
        }
        (Some(vector), _) if vector < 32 => x86::Vector(vector as u8).to_string(),
        (Some(vector), _) => format!("vector {vector:#x}"),
        (None, _) => "an event".into(),
    };
    let mut text = match vector {
        Some(vector) => format!(
            "the hypervisor to reflect {name} into the guest's IDT (inject vector {vector})"
        ),
        None => format!("the hypervisor to inject {name}"),
    };
    details(
        &mut text,
        pattern,
        &[
            ("error_code", "error code", hex),
            ("cr2", "CR2", hex),
            ("handler", "handler", hex),
        ],
    );
    text.push_str(flag(
        pattern,
        "synthetic",
        ", made up by the hypervisor (synthetic)",
        ", as the CPU raised it (not synthetic)",
    ));
    text
}

/// What a pattern's boolean `key` adds: `yes` when it asks for true, `no` for false,
/// nothing when it does not say.
fn flag(pattern: &Pattern, key: &str, yes: &'static str, no: &'static str) -> &'static str {
    match pattern.0.get(key).and_then(Value::as_bool) {
        Some(true) => yes,
        Some(false) => no,
        None => "",
    }
}

fn domain_expectation(pattern: &Pattern) -> String {
    let dom = dom(pattern).map_or("a domain".to_string(), domain_label);
    match pattern.0.get("state").and_then(Value::as_str) {
        Some("created") => format!("{dom} to be created"),
        Some("exited") => match number(pattern, "status") {
            Some(status) => format!("{dom} to exit with status {}", status as i64),
            None => format!("{dom} to exit"),
        },
        Some("killed") => match pattern.0.get("reason") {
            Some(reason) => format!("{dom} to be killed ({})", plain(reason)),
            None => format!("{dom} to be killed"),
        },
        _ => format!("{dom} to change state"),
    }
}

/// "the hypervisor to notify d2's port 3 and wake it".
fn notify_expectation(pattern: &Pattern) -> String {
    let to = number(pattern, "to").map(|dom| domain_label(dom as u16));
    let mut text = match (to, number(pattern, "port")) {
        (Some(to), Some(port)) => format!("the hypervisor to notify {to}'s port {port}"),
        (Some(to), None) => format!("the hypervisor to notify {to}"),
        (None, Some(port)) => format!("the hypervisor to notify port {port} of another domain"),
        (None, None) => "the hypervisor to notify another domain".into(),
    };
    if let Some(port) = number(pattern, "from_port") {
        text.push_str(&format!(", sent on port {port}"));
    }
    text.push_str(flag(
        pattern,
        "woke",
        ", and wake it (it was blocked)",
        ", without waking it (it was not blocked)",
    ));
    text.push_str(flag(
        pattern,
        "masked",
        ", while it masks the port",
        ", with the port unmasked",
    ));
    text
}

/// "the hypervisor to switch from d1 to d2, because an event woke d2 (port 3)".
fn schedule_expectation(pattern: &Pattern) -> String {
    let side = |key: &str| number(pattern, key).map(|dom| domain_label(dom as u16));
    let mut text = match (side("from"), side("to")) {
        (Some(from), Some(to)) => format!("the hypervisor to switch from {from} to {to}"),
        (Some(from), None) => format!("the hypervisor to switch away from {from}"),
        (None, Some(to)) => format!("the hypervisor to switch to {to}"),
        (None, None) => "the hypervisor to switch its CPU to another domain".into(),
    };
    let why = match pattern.0.get("why").and_then(Value::as_str) {
        Some("start") => Some("to start it".to_string()),
        Some("slice_over") => Some("because the time slice was over".into()),
        Some("blocked") => Some("because the domain blocked".into()),
        Some("yielded") => Some("because the domain yielded".into()),
        Some("woken") => Some(match number(pattern, "port") {
            Some(port) => format!("because an event on port {port} woke it"),
            None => "because an event woke it".into(),
        }),
        Some("ended") => Some("because the domain ended".into()),
        _ => None,
    };
    if let Some(why) = why {
        text.push_str(&format!(", {why}"));
    }
    text
}

/// A field's key in the pattern, its name for a student, and how its value reads.
type Field<'a> = (&'a str, &'a str, fn(&Value) -> String);

/// Append ", error code 0x2, CR2 0x40000000" for the fields the pattern names.
fn details(text: &mut String, pattern: &Pattern, fields: &[Field]) {
    let parts: Vec<String> = fields
        .iter()
        .filter_map(|(key, label, shown)| {
            pattern
                .0
                .get(*key)
                .map(|value| format!("{label} {}", shown(value)))
        })
        .collect();
    if !parts.is_empty() {
        text.push_str(&format!(" with {}", parts.join(", ")));
    }
}

fn changes(pattern: &Pattern) -> String {
    match pattern.0.get("changes") {
        Some(Value::Array(changes)) => changes
            .iter()
            .filter_map(|change| change.get("name").map(plain))
            .collect::<Vec<_>>()
            .join(" and "),
        _ => String::new(),
    }
}

fn dom(pattern: &Pattern) -> Option<u16> {
    pattern
        .0
        .get("dom")
        .and_then(Value::as_u64)
        .map(|dom| dom as u16)
}

fn number(pattern: &Pattern, key: &str) -> Option<u64> {
    match pattern.0.get(key)? {
        Value::Number(number) => number
            .as_u64()
            .or_else(|| number.as_i64().map(|n| n as u64)),
        Value::String(text) => traplab_abi::event::hex::parse(text),
        _ => None,
    }
}

/// A machine value (an error code, EXITINFO1, an address) as the trace shows it: a number
/// in hex, even a small one, so that the expected `0x3` reads beside the trace's `0x2`.
/// Anything else as [`plain`].
fn hex(value: &Value) -> String {
    match value.as_u64() {
        Some(number) => format!("{number:#x}"),
        None => plain(value),
    }
}

/// A pattern value as a student reads it: `"text"`, `a line containing "text"`, the
/// symbol's name, a number in hex.
fn quoted(value: &Value) -> String {
    match value {
        Value::String(text) => match text.split_once(':') {
            Some(("contains", rest)) => format!("a line containing \"{rest}\""),
            Some(("prefix", rest)) => format!("something starting with \"{rest}\""),
            Some(("sym", rest)) => format!("`{rest}`"),
            _ => format!("\"{text}\""),
        },
        other => plain(other),
    }
}

/// A pattern value without quotes: numbers in hex, patterns spelled out.
fn plain(value: &Value) -> String {
    match value {
        Value::Number(number) => match number.as_u64() {
            Some(small @ 0..=9) => small.to_string(),
            Some(number) => format!("{number:#x}"),
            None => number.to_string(),
        },
        Value::String(text) if text.starts_with("sym:") => format!("`{}`", &text[4..]),
        Value::String(text) if text.starts_with("contains:") || text.starts_with("prefix:") => {
            quoted(value)
        }
        Value::String(text) => text.clone(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use traplab_abi::event::{Decide, Exit};

    fn pattern(toml_text: &str) -> Pattern {
        toml::from_str(toml_text).expect("a valid pattern")
    }

    #[test]
    fn a_return_to_an_earlier_step_s_instruction_reads_as_a_retry() {
        assert_eq!(
            expectation(&pattern(
                "kind = \"return\"\nvector = 0\nrip = \"step:1.rip\""
            )),
            "the #DE (divide error) handler to return to the instruction of step 1 (a retry), not past it"
        );
    }

    #[test]
    fn an_injection_reads_as_a_reflection() {
        let text = expectation(&pattern(
            "kind = \"inject\"\nvector = 14\nerror_code = 2\nsynthetic = false",
        ));
        assert_eq!(
            text,
            "the hypervisor to reflect #PF (page fault) into the guest's IDT (inject vector 14) with error code 0x2, as the CPU raised it (not synthetic)"
        );
        assert_eq!(
            expectation(&pattern(
                "kind = \"console\"\ntext = \"contains:three\"\ndom = 1"
            )),
            "the guest to print a line containing \"three\" (in d1)"
        );
        assert_eq!(
            expectation(&pattern("kind = \"exit\"\nexitcode = 0x4e\nexitinfo1 = 3")),
            "the guest to raise #PF (exit code 0x4e) with EXITINFO1 0x3"
        );
    }

    #[test]
    fn exits_and_deliveries_are_named_as_the_abi_names_them() {
        // An exception exit named by the trace's reason: NMI is vector 2's mnemonic.
        assert_eq!(
            expectation(&pattern("kind = \"exit\"\nreason = \"EXCP_NMI\"")),
            "the guest to raise NMI (exit EXCP_NMI)"
        );
        assert_eq!(
            expectation(&pattern("kind = \"exit\"\nexitcode = 0x7b")),
            "the guest to exit with IOIO (exit code 0x7b)"
        );
        assert_eq!(
            expectation(&pattern("kind = \"exit\"\nreason = \"CPUID\"")),
            "the guest to exit with CPUID"
        );
        assert_eq!(
            expectation(&pattern(
                "kind = \"inject\"\nvector = 0x80\ntype = \"software\""
            )),
            "the hypervisor to reflect the software interrupt INT 0x80 into the guest's IDT (inject vector 128)"
        );
        assert_eq!(
            expectation(&pattern(
                "kind = \"inject\"\nvector = 0x20\ntype = \"interrupt\""
            )),
            "the hypervisor to reflect interrupt 0x20 into the guest's IDT (inject vector 32)"
        );
        assert_eq!(
            expectation(&pattern("kind = \"return\"\nvector = 6\nvia = \"iret\"")),
            "the #UD (invalid opcode) handler to return with IRET"
        );
    }

    #[test]
    fn notifications_switches_and_grants_read_as_sentences() {
        assert_eq!(
            expectation(&pattern(
                "kind = \"notify\"\ndom = 1\nto = 2\nport = 3\nwoke = true"
            )),
            "the hypervisor to notify d2's port 3, and wake it (it was blocked) (in d1)"
        );
        assert_eq!(
            expectation(&pattern(
                "kind = \"schedule\"\nfrom = 1\nto = 2\nwhy = \"woken\"\nport = 3"
            )),
            "the hypervisor to switch from d1 to d2, because an event on port 3 woke it"
        );
        assert_eq!(
            expectation(&pattern("kind = \"schedule\"\nto = 0\nwhy = \"start\"")),
            "the hypervisor to switch to d0, to start it"
        );
        assert_eq!(
            expectation(&pattern(
                "kind = \"grant_map\"\ngranter = 1\ngref = 5\nreadonly = false"
            )),
            "the hypervisor to map grant reference 5 of d1, writable"
        );
        assert_eq!(
            expectation(&pattern("kind = \"domain\"\ndom = 2\nstate = \"killed\"")),
            "d2 to be killed"
        );
    }

    #[test]
    fn a_missing_notification_names_what_the_hypervisor_decided_instead() {
        let mut send = exit(0x81, "VMMCALL");
        send.regs.rax = traplab_abi::hypercall::EVENT_CHANNEL_OP;
        let events = events(
            3,
            vec![
                Body::Exit(send),
                decide(
                    Action::Emulate,
                    "hypercall event_channel_op EVTCHNOP_send: port 1 is not bound: EINVAL",
                    "hv/src/exit/vmmcall.rs:171",
                ),
            ],
        );
        let expected = pattern("kind = \"notify\"\nto = 2\nport = 3");
        assert_eq!(
            instead(&expected, &mismatch(&expected, None), &events),
            "the hypervisor emulated it at hv/src/exit/vmmcall.rs:171: \"hypercall event_channel_op EVTCHNOP_send: port 1 is not bound: EINVAL\"; then the guest printed nothing more"
        );
        let switch = pattern("kind = \"schedule\"\nwhy = \"woken\"");
        assert!(
            instead(&switch, &mismatch(&switch, None), &events)
                .starts_with("the hypervisor switched to no other domain after that")
        );
    }

    fn console(text: &str) -> Body {
        Body::Console(traplab_abi::event::Console::line(text.to_string()))
    }

    fn emulate(what: &str) -> Body {
        Body::Emulate(traplab_abi::event::Emulate {
            what: what.to_string().into(),
            arguments: Default::default(),
            changes: Vec::new(),
        })
    }

    /// The explanation `traplab check` gives for `steps` on `events`: the checker finds the
    /// missing step, this module says what happened instead.
    fn explained(steps: &[Pattern], events: &[Event]) -> String {
        let mismatch =
            crate::expect::check(steps, events, &traplab_tracer::symbols::Symbols::default())
                .expect_err("a step is missing");
        instead(&steps[mismatch.step], &mismatch, events)
    }

    #[test]
    fn a_near_miss_before_the_step_before_is_shown() {
        // hello.1 with the greeting's `\n` left out: one REP OUTS of 27 bytes, and the line
        // is only printed when the domain ends, after the HLT.
        let events = events(
            10,
            vec![
                Body::Exit(exit(0x7b, "IOIO")),
                decide(
                    Action::Emulate,
                    "string I/O to the console UART",
                    "hv/src/exit/ioio.rs:80",
                ),
                emulate("REP OUTS 27 element(s) of 1 byte(s) to port 0x3f8 (console UART)"),
                Body::Exit(exit(0x78, "HLT")),
                console("Hello from a traplab guest!"),
            ],
        );
        let steps = [
            pattern("kind = \"exit\"\nreason = \"IOIO\""),
            pattern("kind = \"console\"\ntext = \"Hello from a traplab guest!\""),
            pattern(
                "kind = \"emulate\"\nwhat = \"REP OUTS 28 element(s) of 1 byte(s) to port 0x3f8 (console UART)\"",
            ),
        ];
        assert_eq!(
            explained(&steps, &events),
            "the hypervisor emulated nothing after that; then the guest printed nothing more; the nearest emulate event was event 12 (d1 emulate): REP OUTS 27 element(s) of 1 byte(s) to port 0x3f8 (console UART), which came before step 2's event (event 14)"
        );
    }

    #[test]
    fn an_exit_that_came_only_before_the_step_before_is_said_to_have() {
        // page-fault.1 unsolved: its one #PF came before the step that matched the guest's
        // line, and no second one after it. "No #PF came" alone would contradict the
        // nearest event quoted next.
        let mut fault = exit(0x4e, "EXCP_PF");
        fault.exitinfo1 = 2;
        let events = events(
            20,
            vec![
                Body::Exit(fault),
                console("mapped"),
                Body::Exit(exit(0x78, "HLT")),
            ],
        );
        let steps = [
            pattern("kind = \"console\"\ntext = \"mapped\""),
            pattern("kind = \"exit\"\nexitcode = 0x4e\nexitinfo1 = 3"),
        ];
        assert_eq!(
            explained(&steps, &events),
            "no EXCP_PF exit came after step 1's event (event 21); then the guest printed nothing more; the nearest exit event was event 20 (d1 exit): EXCP_PF at 0x200000: #PF (page fault), error code 0x2 (W/R), address 0x0, which came before step 1's event (event 21)"
        );
    }

    #[test]
    fn a_domain_that_ended_before_the_step_before_is_said_to_have() {
        let mut events = events(
            5,
            vec![
                Body::Domain(traplab_abi::event::DomainChange {
                    state: traplab_abi::event::DomainState::Exited,
                    name: "a".into(),
                    status: Some(0),
                    reason: Some("exit hypercall".into()),
                }),
                console("a"),
            ],
        );
        events[1].dom = Some(2);
        let steps = [
            pattern("kind = \"console\"\ntext = \"a\"\ndom = 2"),
            pattern("kind = \"domain\"\ndom = 1\nstate = \"exited\"\nstatus = 0"),
        ];
        let explanation = explained(&steps, &events);
        assert!(
            explanation.ends_with(
                "d1 exited with status 0 (exit hypercall), which came before step 1's event (event 6)"
            ),
            "{explanation}"
        );
    }

    #[test]
    fn the_line_the_guest_nearly_printed_is_shown() {
        // cr-write.1 with a count one short: the line comes, but past the three lines quoted.
        let mut bodies: Vec<Body> = [
            "CR0 with PG and not PE",
            "CR3 with a reserved bit",
            "CR4 with FSGSBASE (bit 16)",
            "EFER with a reserved bit",
        ]
        .into_iter()
        .map(console)
        .collect();
        bodies.push(console("cr-write: 4 invalid writes refused with #GP"));
        let events = events(1, bodies);
        let steps = [pattern(
            "kind = \"console\"\ntext = \"contains:5 invalid writes refused with #GP\"",
        )];
        let explanation = explained(&steps, &events);
        assert!(
            explanation.ends_with(
                "; the nearest console event was event 5 (d1 console): | cr-write: 4 invalid writes refused with #GP"
            ),
            "{explanation}"
        );
        // A near line already quoted among what the guest printed is not shown twice.
        let quoted = [pattern(
            "kind = \"console\"\ntext = \"CR0 with PG and not PX\"",
        )];
        let explanation = explained(&quoted, &events);
        assert!(
            explanation.starts_with("the guest printed \"CR0 with PG and not PE\"")
                && !explanation.contains("nearest"),
            "{explanation}"
        );
    }

    fn exit(exitcode: u64, reason: &str) -> Exit {
        Exit {
            exitcode,
            reason: reason.to_string().into(),
            exitinfo1: 0,
            exitinfo2: 0,
            exitintinfo: 0,
            rip: 0x20_0000,
            cs: 8,
            cpl: 0,
            rflags: 2,
            cr0: 0,
            cr2: 0,
            cr3: 0,
            cr4: 0,
            efer: 0,
            regs: Default::default(),
            insn: Default::default(),
        }
    }

    fn decide(action: Action, why: &str, at: &str) -> Body {
        Body::Decide(Decide {
            action,
            why: why.to_string().into(),
            at: at.to_string().into(),
        })
    }

    /// The events of d1, numbered from `seq`.
    fn events(seq: u64, bodies: Vec<Body>) -> Vec<Event> {
        bodies
            .into_iter()
            .zip(seq..)
            .map(|(body, seq)| Event {
                seq,
                tsc: 0,
                dom: Some(1),
                body,
            })
            .collect()
    }

    fn mismatch(expected: &Pattern, after_seq: Option<u64>) -> Mismatch {
        Mismatch {
            step: 1,
            expected: expected.describe(),
            after_seq,
            nearest: None,
            intruder: None,
        }
    }

    #[test]
    fn instead_names_the_decision_and_its_source_line() {
        let events = events(
            7,
            vec![
                Body::Exit(exit(0x46, "EXCP_UD")),
                decide(
                    Action::Reflect,
                    "the guest owns its exceptions",
                    "hv/src/exit/exception.rs:98",
                ),
            ],
        );
        let expected = pattern("kind = \"decide\"\naction = \"emulate\"");
        assert_eq!(
            instead(&expected, &mismatch(&expected, Some(7)), &events),
            "the hypervisor reflected it into the guest's IDT at hv/src/exit/exception.rs:98: \"the guest owns its exceptions\"; then the guest printed nothing more"
        );
    }

    #[test]
    fn instead_passes_over_the_guest_printing_and_finds_the_raised_exception() {
        let mut out = exit(0x7b, "IOIO");
        // `out dx, al` to COM1 (port 0x3f8 in EXITINFO1 bits 31:16).
        out.exitinfo1 = 0x03f8_0210;
        let events = events(
            1,
            vec![
                Body::Exit(out),
                decide(
                    Action::Emulate,
                    "the console UART",
                    "hv/src/exit/ioio.rs:40",
                ),
                Body::Exit(exit(0x4e, "EXCP_PF")),
                decide(
                    Action::Kill,
                    "the guest has no #PF handler",
                    "hv/src/exit/exception.rs:70",
                ),
            ],
        );
        let expected = pattern("kind = \"decide\"\naction = \"reflect\"");
        assert_eq!(
            instead(&expected, &mismatch(&expected, None), &events),
            "the hypervisor killed the domain at hv/src/exit/exception.rs:70: \"the guest has no #PF handler\"; then the guest printed nothing more",
            "the emulated console byte is not the decision the step is about"
        );
        // The #PF was raised, and its decision says why it was not injected.
        let injected = pattern("kind = \"inject\"\nvector = 14");
        assert!(
            instead(&injected, &mismatch(&injected, None), &events)
                .starts_with("the hypervisor killed the domain at hv/src/exit/exception.rs:70")
        );
        // No #UD exit at all: the guest never raised it.
        let undefined = pattern("kind = \"inject\"\nvector = 6");
        assert_eq!(
            instead(&undefined, &mismatch(&undefined, None), &events),
            "no #UD (invalid opcode) reached the hypervisor after that: the guest never raised it; then the guest printed nothing more"
        );
    }
}
