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

use crate::expect::{Mismatch, Step};
use serde_json::Value;
use traplab_abi::event::{Action, Body, Event};
use traplab_abi::svm;
use traplab_abi::x86;
use traplab_tracer::text;

/// How many console lines to quote as "what the guest printed instead".
const QUOTED_LINES: usize = 3;

/// The step as a sentence that completes "expected …": "the hypervisor to reflect #PF into
/// the guest's IDT (vector 14, error code 0x2)".
pub fn expectation(step: &Step) -> String {
    let kind = step.0.get("kind").and_then(Value::as_str).unwrap_or("");
    let sentence = match kind {
        "exit" => exit_expectation(step),
        "decide" => decide_expectation(step),
        "inject" => inject_expectation(step),
        "bounce" => {
            let vector = number(step, "vector");
            let name = vector.map_or("an exception".to_string(), |vector| {
                exception_name(vector as u8)
            });
            let mut text = format!(
                "the hypervisor to bounce {name} to the handler the guest registered with set_trap_table"
            );
            details(
                &mut text,
                step,
                &[("error_code", "error code"), ("cr2", "CR2")],
            );
            text
        }
        "emulate" => match step.0.get("what") {
            Some(what) => format!("the hypervisor to emulate {}", quoted(what)),
            None => {
                let names = changes(step);
                if names.is_empty() {
                    "the hypervisor to emulate something".into()
                } else {
                    format!("the hypervisor's emulation to change {names}")
                }
            }
        },
        "return" => {
            let name = number(step, "vector").map_or("a".to_string(), |vector| {
                format!("the {}", exception_name(vector as u8))
            });
            let via = match step.0.get("via").and_then(Value::as_str) {
                Some("iret") => " with IRET",
                Some("hypercall") => " with the iret hypercall",
                _ => "",
            };
            format!("{name} handler to return{via}")
        }
        "resume" => match step.0.get("rip") {
            Some(rip) => format!("the guest to continue at {}", quoted(rip)),
            None => "the guest to continue".into(),
        },
        "console" => match step.0.get("text") {
            Some(text) => format!("the guest to print {}", quoted(text)),
            None => "the guest to print a line".into(),
        },
        "domain" => domain_expectation(step),
        "end" => match number(step, "status") {
            Some(status) => format!("the hypervisor to end with status {status}"),
            None => "the hypervisor to end".into(),
        },
        _ => step.describe(),
    };
    match dom(step) {
        Some(dom) if kind != "domain" => format!("{sentence} (in domain {dom})"),
        _ => sentence,
    }
}

/// What happened instead of `step`, completing "but …": the hypervisor's decision at that
/// point, the exit or console line that came instead, or how the domain ended.
pub fn instead(step: &Step, mismatch: &Mismatch, events: &[Event]) -> String {
    let from = mismatch
        .after_seq
        .and_then(|seq| events.iter().position(|event| event.seq == seq))
        .map_or(0, |index| index + 1);
    let dom = dom(step);
    let later: Vec<&Event> = events[from..]
        .iter()
        .filter(|event| dom.is_none() || event.dom == dom)
        .collect();
    let kind = step.0.get("kind").and_then(Value::as_str).unwrap_or("");
    // The hypervisor's next decision, leaving out the guest's printing (one exit per byte),
    // which comes between almost everything.
    let decision = later
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
                Some(decide)
            }
            _ => None,
        });
    let next_of_kind = |wanted: &str| {
        later
            .iter()
            .find(|event| event.body.kind() == wanted)
            .map(|event| event_text(event))
    };
    let vector = number(step, "vector");

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
                    Body::Exit(exit) => {
                        vector.is_some_and(|vector| vector < 32 && exit.exitcode == 0x40 + vector)
                    }
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
                (None, None) => format!(
                    "no {} reached the hypervisor after that: the guest never raised it",
                    vector.map_or("event".into(), |vector| exception_name(vector as u8))
                ),
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
            let code = number(step, "exitcode");
            let reason = step.0.get("reason").and_then(Value::as_str);
            let same = later.iter().find(|event| match &event.body {
                Body::Exit(exit) => {
                    code.is_none_or(|code| exit.exitcode == code)
                        && reason.is_none_or(|reason| exit.reason == reason)
                }
                _ => false,
            });
            let name = code.map(svm::exit_name).or(reason);
            match (same, name) {
                (Some(event), Some(_)) => {
                    format!("the nearest such exit was different: {}", event_text(event))
                }
                (Some(event), None) => format!("the next exit was: {}", event_text(event)),
                (None, Some(name)) => format!("no {name} exit came"),
                (None, None) => "no exit came".into(),
            }
        }
        "console" => String::new(),
        "domain" => {
            let dom = dom.unwrap_or(0);
            match crate::run::ending(events, dom) {
                Some(ending) => format!("domain {dom} {}", ending.describe()),
                None => format!("domain {dom} never ended"),
            }
        }
        _ => match &mismatch.nearest {
            Some(nearest) => format!("the nearest event of that kind was: {nearest}"),
            None => "no event of that kind came".into(),
        },
    };

    // What the guest printed from there on is the student's own view of what went on.
    let printed: Vec<String> = later
        .iter()
        .filter_map(|event| match &event.body {
            Body::Console(console) => Some(format!("\"{}\"", console.text)),
            _ => None,
        })
        .take(QUOTED_LINES)
        .collect();
    let printed = match printed.len() {
        0 => "the guest printed nothing more".to_string(),
        _ => format!("the guest printed {}", printed.join(", ")),
    };
    if sentence.is_empty() {
        sentence = printed;
    } else if kind != "domain" {
        sentence = format!("{sentence}; then {printed}");
    }
    sentence
}

/// Is this exit the guest printing: an OUT to its console UART, or a console_write
/// hypercall?
fn is_console_output(exit: Option<&&Event>) -> bool {
    match exit.map(|event| &event.body) {
        Some(Body::Exit(exit)) if exit.exitcode == svm::exitcode::IOIO => {
            let info = svm::IoioInfo::decode(exit.exitinfo1);
            !info.input && (0x3f8..=0x3ff).contains(&info.port)
        }
        Some(Body::Exit(exit)) if exit.exitcode == svm::exitcode::VMMCALL => {
            exit.regs.rax == traplab_abi::hypercall::CONSOLE_WRITE
        }
        _ => false,
    }
}

/// `event 4 (dom0 emulate): OUT 'H' to the console UART; …`: an event inside a sentence.
fn event_text(event: &Event) -> String {
    let dom = event
        .dom
        .map_or("hv".to_string(), |dom| format!("dom{dom}"));
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

fn exit_expectation(step: &Step) -> String {
    let code = number(step, "exitcode");
    let reason = step.0.get("reason").and_then(Value::as_str);
    let mut text = match (code, reason) {
        (Some(code @ 0x40..=0x5f), _) => {
            let vector = (code - 0x40) as u8;
            format!(
                "the guest to raise {} (exit code {code:#x})",
                x86::exception(vector).mnemonic
            )
        }
        (Some(code), _) => format!(
            "the guest to exit with {} (exit code {code:#x})",
            svm::exit_name(code)
        ),
        (None, Some(reason)) if reason.starts_with("EXCP_") => format!(
            "the guest to raise {} (exit {reason})",
            &reason.replacen("EXCP_", "#", 1)
        ),
        (None, Some(reason)) => format!("the guest to exit with {reason}"),
        (None, None) => "the guest to exit to the hypervisor".into(),
    };
    details(
        &mut text,
        step,
        &[
            ("exitinfo1", "EXITINFO1"),
            ("exitinfo2", "EXITINFO2"),
            ("exitintinfo", "EXITINTINFO"),
            ("cpl", "CPL"),
            ("rip", "RIP"),
        ],
    );
    if let Some(insn) = step.0.get("insn") {
        text.push_str(&format!(", at the instruction {}", quoted(insn)));
    }
    if let Some(Value::Object(registers)) = step.0.get("regs") {
        let registers: Vec<String> = registers
            .iter()
            .map(|(name, value)| format!("{} = {}", name.to_uppercase(), plain(value)))
            .collect();
        text.push_str(&format!(", with {}", registers.join(", ")));
    }
    text
}

fn decide_expectation(step: &Step) -> String {
    let action = step.0.get("action").and_then(Value::as_str);
    let mut text = match action {
        Some("emulate") => "the hypervisor to emulate it".to_string(),
        Some("reflect") => "the hypervisor to reflect it into the guest's IDT".into(),
        Some("bounce") => "the hypervisor to bounce it to the guest's registered handler".into(),
        Some("forward") => "the hypervisor to forward it to another domain".into(),
        Some("kill") => "the hypervisor to kill the domain".into(),
        _ => "the hypervisor to decide".into(),
    };
    match step.0.get("why") {
        Some(Value::String(why)) if why.starts_with("contains:") => {
            text.push_str(&format!(" for a reason containing \"{}\"", &why[9..]))
        }
        Some(Value::String(why)) if why.starts_with("prefix:") => {
            text.push_str(&format!(" for a reason starting \"{}\"", &why[7..]))
        }
        Some(why) => text.push_str(&format!(", saying {}", quoted(why))),
        None => {}
    }
    if let Some(at) = step.0.get("at") {
        text.push_str(&format!(", at {}", quoted(at)));
    }
    text
}

fn inject_expectation(step: &Step) -> String {
    let vector = number(step, "vector");
    let kind = step.0.get("type").and_then(Value::as_str);
    let name = match (vector, kind) {
        (Some(vector), Some("interrupt")) => format!("interrupt {vector:#x}"),
        (Some(vector), Some("software")) if vector >= 32 => {
            format!("the software interrupt INT {vector:#x}")
        }
        (Some(vector), Some("software")) => {
            format!("{} as a software interrupt", exception_name(vector as u8))
        }
        (Some(vector), _) if vector < 32 => exception_name(vector as u8),
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
        step,
        &[
            ("error_code", "error code"),
            ("cr2", "CR2"),
            ("handler", "handler"),
        ],
    );
    match step.0.get("synthetic").and_then(Value::as_bool) {
        Some(true) => text.push_str(", made up by the hypervisor (synthetic)"),
        Some(false) => text.push_str(", as the CPU raised it (not synthetic)"),
        None => {}
    }
    text
}

fn domain_expectation(step: &Step) -> String {
    let dom = dom(step).unwrap_or(0);
    match step.0.get("state").and_then(Value::as_str) {
        Some("created") => format!("domain {dom} to be created"),
        Some("exited") => match number(step, "status") {
            Some(status) => format!("domain {dom} to exit with status {}", status as i64),
            None => format!("domain {dom} to exit"),
        },
        Some("killed") => match step.0.get("reason") {
            Some(reason) => format!("domain {dom} to be killed ({})", plain(reason)),
            None => format!("domain {dom} to be killed"),
        },
        _ => format!("domain {dom} to change state"),
    }
}

/// Append ", error code 0x2, CR2 0x40000000" for the fields the step names.
fn details(text: &mut String, step: &Step, fields: &[(&str, &str)]) {
    let parts: Vec<String> = fields
        .iter()
        .filter_map(|(key, label)| {
            step.0
                .get(*key)
                .map(|value| format!("{label} {}", plain(value)))
        })
        .collect();
    if !parts.is_empty() {
        text.push_str(&format!(" with {}", parts.join(", ")));
    }
}

fn changes(step: &Step) -> String {
    match step.0.get("changes") {
        Some(Value::Array(changes)) => changes
            .iter()
            .filter_map(|change| change.get("name").map(plain))
            .collect::<Vec<_>>()
            .join(" and "),
        _ => String::new(),
    }
}

fn dom(step: &Step) -> Option<u16> {
    step.0
        .get("dom")
        .and_then(Value::as_u64)
        .map(|dom| dom as u16)
}

fn number(step: &Step, key: &str) -> Option<u64> {
    match step.0.get(key)? {
        Value::Number(number) => number
            .as_u64()
            .or_else(|| number.as_i64().map(|n| n as u64)),
        Value::String(text) => traplab_abi::event::hex::parse(text),
        _ => None,
    }
}

/// `#PF (page fault)`.
fn exception_name(vector: u8) -> String {
    if vector >= 32 {
        return format!("vector {vector:#x}");
    }
    let exception = x86::exception(vector);
    format!("{} ({})", exception.mnemonic, exception.name)
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

    fn step(toml_text: &str) -> Step {
        toml::from_str(toml_text).expect("a valid step")
    }

    #[test]
    fn an_injection_reads_as_a_reflection() {
        let text = expectation(&step(
            "kind = \"inject\"\nvector = 14\nerror_code = 2\nsynthetic = false",
        ));
        assert_eq!(
            text,
            "the hypervisor to reflect #PF (page fault) into the guest's IDT (inject vector 14) with error code 2, as the CPU raised it (not synthetic)"
        );
        assert_eq!(
            expectation(&step(
                "kind = \"console\"\ntext = \"contains:three\"\ndom = 1"
            )),
            "the guest to print a line containing \"three\" (in domain 1)"
        );
        assert_eq!(
            expectation(&step("kind = \"exit\"\nexitcode = 0x4e\nexitinfo1 = 3")),
            "the guest to raise #PF (exit code 0x4e) with EXITINFO1 3"
        );
    }

    #[test]
    fn instead_names_the_decision_and_its_source_line() {
        let exit = Exit {
            exitcode: 0x46,
            reason: "EXCP_UD".into(),
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
        };
        let decide = Decide {
            action: Action::Reflect,
            why: "the guest owns its exceptions".into(),
            at: "hv/src/exit/exception.rs:98".into(),
        };
        let events = vec![
            Event {
                seq: 7,
                tsc: 0,
                dom: Some(0),
                body: Body::Exit(exit),
            },
            Event {
                seq: 8,
                tsc: 0,
                dom: Some(0),
                body: Body::Decide(decide),
            },
        ];
        let expected = step("kind = \"decide\"\naction = \"emulate\"");
        let mismatch = Mismatch {
            step: 1,
            expected: expected.describe(),
            after_seq: Some(7),
            nearest: None,
        };
        assert_eq!(
            instead(&expected, &mismatch, &events),
            "the hypervisor reflected it into the guest's IDT at hv/src/exit/exception.rs:98: \"the guest owns its exceptions\"; then the guest printed nothing more"
        );
    }
}
