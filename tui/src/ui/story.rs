//! The story of one trap, step by step: the flow's events, and, when the flow delivered an
//! event to a guest handler, the handler's run (folded into one step) and the flow that
//! returns from it. When the flow's domain was switched out in the middle of it, what the
//! other domains did meanwhile is folded into one step too.
//!
//! ```text
//!  exit ─► decide ─► inject ─► resume ─► [the handler runs] ─► exit IRET ─► decide ─► return ─► resume
//!  └──────────── the delivering flow ──┘                        └──────── the returning flow ────────┘
//!
//!  exit ─► decide ─► notify ─► schedule away ─► [d2 runs meanwhile] ─► schedule back ─► resume
//!  └───────────────────────────── one flow, in two parts ───────────────────────────────────┘
//! ```
//!
//! Opening either flow tells the same story; the cursor starts at the flow that was opened.

use traplab_abi::event::{Body, Event};
use traplab_tracer::flows::{Kind, NO_EVENT, NO_FLOW};
use traplab_tracer::recording::LineError;
use traplab_tracer::store::Trace;

/// How many events between a delivery and its return we look at to summarise the handler.
const HANDLER_SCAN_LIMIT: usize = 20_000;
/// How many of the handler's console lines the summary quotes.
const HANDLER_QUOTES: usize = 3;

/// One step.
#[derive(Debug, Clone)]
pub enum Step {
    /// An event of the trace (its number, and the event or why it cannot be read).
    Event {
        index: usize,
        event: Box<Result<Event, LineError>>,
    },
    /// The guest's handler runs, between the delivering flow and the returning one.
    Handler(Handler),
    /// The flow's domain is switched out; other domains run.
    Away(Away),
}

/// What the other domains did while a flow's domain was switched out.
#[derive(Debug, Clone, PartialEq)]
pub struct Away {
    /// The domain that waits.
    pub dom: u16,
    /// How many events came meanwhile.
    pub events: usize,
    /// The domains that ran, each with how many traps (flows) it had, in domain order.
    pub ran: Vec<(u16, usize)>,
    /// The first console lines they printed: (domain, text).
    pub console: Vec<(u16, String)>,
}

/// What the guest's handler did between the delivery and the return.
#[derive(Debug, Clone, PartialEq)]
pub struct Handler {
    pub dom: u16,
    /// `#PF`.
    pub name: String,
    /// The handler's first instruction (the resume's RIP), when known.
    pub entry: Option<u64>,
    /// The handler's own traps: how many, by class, most frequent first.
    pub traps: usize,
    pub classes: Vec<(&'static str, usize)>,
    /// The first console lines it printed.
    pub console: Vec<String>,
}

/// The steps of the selected flow's story.
#[derive(Debug, Clone, Default)]
pub struct Story {
    pub steps: Vec<Step>,
    /// The step where the opened flow's `exit` is.
    pub start: usize,
    /// The flow numbers the story covers (the delivering one, then the returning one).
    pub flows: Vec<usize>,
}

impl Story {
    /// The story of flow number `flow`.
    pub fn of(trace: &Trace, flow: usize) -> Story {
        let flows = trace.flows();
        let Some(opened) = flows.get(flow) else {
            return Story::default();
        };
        let (delivering, returning) = if opened.returns_from != NO_FLOW {
            (opened.returns_from as usize, Some(flow))
        } else if opened.returned_by != NO_FLOW {
            (flow, Some(opened.returned_by as usize))
        } else {
            (flow, None)
        };
        let mut story = Story::default();
        push_flow(trace, delivering, &mut story);
        if let Some(returning) = returning {
            story
                .steps
                .push(Step::Handler(handler(trace, delivering, returning)));
            if returning == flow {
                story.start = story.steps.len();
            }
            push_flow(trace, returning, &mut story);
        }
        story
    }

    /// The event of step `step`, if it is an event that reads.
    pub fn event(&self, step: usize) -> Option<(usize, &Event)> {
        match self.steps.get(step)? {
            Step::Event { index, event } => {
                event.as_ref().as_ref().ok().map(|event| (*index, event))
            }
            Step::Handler(_) | Step::Away(_) => None,
        }
    }

    /// The step of event number `index`.
    pub fn step_of(&self, index: usize) -> Option<usize> {
        self.steps
            .iter()
            .position(|step| matches!(step, Step::Event { index: at, .. } if *at == index))
    }

    /// The flow that step `step` belongs to (the handler step belongs to the delivery).
    pub fn flow_at(&self, step: usize) -> Option<usize> {
        let handler = self
            .steps
            .iter()
            .position(|step| matches!(step, Step::Handler(_)));
        match handler {
            Some(handler) if step > handler => self.flows.get(1).copied(),
            _ => self.flows.first().copied(),
        }
    }
}

fn push_flow(trace: &Trace, flow: usize, story: &mut Story) {
    let Some(found) = trace.flows().get(flow) else {
        return;
    };
    story.flows.push(flow);
    for index in found.events() {
        if found.back != NO_EVENT && index == found.back {
            story
                .steps
                .push(Step::Away(away(trace, found.dom, found.away, found.back)));
        }
        let index = index as usize;
        story.steps.push(Step::Event {
            index,
            event: Box::new(trace.event(index)),
        });
    }
}

/// What happened between the `schedule` that switched `dom` out (event `out`) and the one
/// that switched it back in (`back`).
fn away(trace: &Trace, dom: u16, out: u32, back: u32) -> Away {
    let (first, last) = (out as usize + 1, back as usize);
    let flows = trace.flows();
    let mut ran: Vec<(u16, usize)> = Vec::new();
    let begin = flows.partition_point(|flow| (flow.first as usize) < first);
    let end = flows.partition_point(|flow| (flow.first as usize) < last);
    for flow in &flows[begin..end] {
        match ran.iter_mut().find(|(other, _)| *other == flow.dom) {
            Some((_, count)) => *count += 1,
            None => ran.push((flow.dom, 1)),
        }
    }
    ran.sort_unstable();
    let mut console = Vec::new();
    for index in first..last.min(first + HANDLER_SCAN_LIMIT) {
        if console.len() >= HANDLER_QUOTES {
            break;
        }
        let Some(entry) = trace.index_of(index) else {
            break;
        };
        if entry.kind == Kind::Console
            && let Ok(Event {
                body: Body::Console(line),
                dom: Some(other),
                ..
            }) = trace.event(index)
            && !line.unfinished
        {
            console.push((other, line.text.to_string()));
        }
    }
    Away {
        dom,
        events: last.saturating_sub(first),
        ran,
        console,
    }
}

fn handler(trace: &Trace, delivering: usize, returning: usize) -> Handler {
    let flows = trace.flows();
    let (from, to) = (&flows[delivering], &flows[returning]);
    let name = from
        .events()
        .filter_map(|index| trace.event(index as usize).ok())
        .find_map(|event| match event.body {
            Body::Inject(inject) => Some(inject.name.to_string()),
            Body::Bounce(bounce) => Some(bounce.name.to_string()),
            _ => None,
        })
        .unwrap_or_else(|| "the event".into());
    let entry = trace
        .event(from.last() as usize)
        .ok()
        .and_then(|event| match event.body {
            Body::Resume(resume) => Some(resume.rip),
            _ => None,
        });
    let mut classes: Vec<(&'static str, usize)> = Vec::new();
    let inner = &flows[delivering + 1..returning];
    for flow in inner.iter().filter(|flow| flow.dom == from.dom) {
        match classes.iter_mut().find(|(class, _)| *class == flow.class()) {
            Some((_, count)) => *count += 1,
            None => classes.push((flow.class(), 1)),
        }
    }
    classes.sort_by_key(|&(_, count)| std::cmp::Reverse(count));
    let mut console = Vec::new();
    let scan_end = (to.first as usize).min(from.last() as usize + 1 + HANDLER_SCAN_LIMIT);
    for index in from.last() as usize + 1..scan_end {
        if console.len() >= HANDLER_QUOTES {
            break;
        }
        let is_console = trace
            .index_of(index)
            .is_some_and(|entry| entry.kind == Kind::Console && entry.dom == from.dom);
        if is_console
            && let Ok(Event {
                body: Body::Console(line),
                ..
            }) = trace.event(index)
            && !line.unfinished
        {
            console.push(line.text.to_string());
        }
    }
    Handler {
        dom: from.dom,
        name,
        entry,
        traps: inner.iter().filter(|flow| flow.dom == from.dom).count(),
        classes,
        console,
    }
}

impl Away {
    /// The step's meaning, in one sentence.
    pub fn sentence(&self) -> String {
        let me = traplab_abi::event::domain_label(self.dom);
        let ran: Vec<String> = self
            .ran
            .iter()
            .map(|(dom, traps)| {
                format!(
                    "{} ({traps} trap{})",
                    traplab_abi::event::domain_label(*dom),
                    if *traps == 1 { "" } else { "s" }
                )
            })
            .collect();
        let ran = if ran.is_empty() {
            "no domain traps (the CPU may idle)".to_string()
        } else {
            format!(
                "{} run{}",
                ran.join(" and "),
                if ran.len() == 1 { "s" } else { "" }
            )
        };
        let printed = if self.console.is_empty() {
            String::new()
        } else {
            let lines: Vec<String> = self
                .console
                .iter()
                .map(|(dom, text)| format!("{}: “{text}”", traplab_abi::event::domain_label(*dom)))
                .collect();
            format!(", printing {}", lines.join(" / "))
        };
        format!(
            "{me} is switched out and waits; meanwhile {ran}{printed} ({} events). Its trap goes on when the hypervisor switches back to it.",
            self.events
        )
    }
}

impl Handler {
    /// The step's meaning, in one sentence.
    pub fn sentence(&self, symbol: &dyn Fn(u64) -> Option<String>) -> String {
        let entry = match self.entry {
            Some(entry) => match symbol(entry) {
                Some(name) => format!(" at {entry:#x} ({name})"),
                None => format!(" at {entry:#x}"),
            },
            None => String::new(),
        };
        let traps = if self.traps == 0 {
            "without trapping".to_string()
        } else {
            let classes: Vec<String> = self
                .classes
                .iter()
                .map(|(class, count)| format!("{class} ×{count}"))
                .collect();
            format!(
                "trapping {} more time(s) on its own ({})",
                self.traps,
                classes.join(", ")
            )
        };
        let printed = if self.console.is_empty() {
            String::new()
        } else {
            format!(", and prints “{}”", self.console.join(" / "))
        };
        format!(
            "The guest's {} handler runs{entry}, {traps}{printed}; then it returns.",
            self.name
        )
    }
}
