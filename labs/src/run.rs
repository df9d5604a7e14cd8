//! Running a lab headless to its end, and reading what its trace says about how it went:
//! was the run itself sound, how did each domain end, what did it print.
//!
//! `traplab check`, the book's trace generator and the tests all run labs this way.

use std::time::Duration;
use traplab_abi::event::{Body, DomainState, Event};
use traplab_tracer::qemu::{HvStatus, Machine};
use traplab_tracer::session::{self, Options, Run, SessionError};

/// Long enough for any lab under TCG on a slow machine (they take about a second here).
pub const TIMEOUT: Duration = Duration::from_secs(120);

/// Run `machine` to its end and keep everything it produced.
pub fn collect(machine: &Machine, timeout: Duration) -> Result<Run, SessionError> {
    session::collect(
        machine,
        Options {
            timeout: Some(timeout),
            ..Options::default()
        },
    )
}

/// What is wrong with the run itself, apart from the lab's flow: the hypervisor failed or
/// did not finish, or the trace cannot be trusted (a gap, a loss, no `end`). Empty when the
/// run is sound. Each entry is one sentence.
pub fn unsound(run: &Run) -> Vec<String> {
    let mut problems = Vec::new();
    let finish = &run.finish;
    if finish.interrupted {
        problems.push("the run was interrupted (Ctrl-C)".to_string());
    }
    if finish.timed_out {
        problems.push(
            "the lab did not finish in time, so QEMU was stopped: does a guest spin forever?"
                .to_string(),
        );
    }
    match finish.hv_status {
        Some(HvStatus::Done) => {}
        Some(status) => problems.push(format!(
            "the hypervisor stopped with an error: {}",
            status.explain()
        )),
        None if !finish.timed_out && !finish.interrupted => problems.push(format!(
            "QEMU stopped without a hypervisor status (exit code {:?}, signal {:?}){}",
            finish.exit_code,
            finish.signal,
            if finish.stderr.trim().is_empty() {
                String::new()
            } else {
                format!("; QEMU said: {}", finish.stderr.trim())
            }
        )),
        None => {}
    }
    for broken in &run.broken {
        problems.push(format!("the trace ring is broken: {broken}"));
    }
    for fault in &run.faults {
        problems.push(format!("the trace is incomplete: {fault}"));
    }
    if !matches!(
        run.events.first().map(|event| &event.body),
        Some(Body::Boot(_))
    ) {
        problems.push("the trace does not start with the hypervisor's boot event".to_string());
    }
    problems
}

/// How a domain ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ending {
    pub state: DomainState,
    /// The exit status, when it exited.
    pub status: Option<i32>,
    /// Why, in the hypervisor's words (`exit hypercall`, `triple fault: …`).
    pub reason: String,
}

impl Ending {
    /// "exited with status 0 (exit hypercall)", "was killed: triple fault: …".
    pub fn describe(&self) -> String {
        match (self.state, self.status) {
            (DomainState::Killed, _) => format!("was killed: {}", self.reason),
            (_, Some(status)) => format!("exited with status {status} ({})", self.reason),
            _ => format!("ended ({})", self.reason),
        }
    }
}

/// How domain `dom` ended, from its last `domain` event; `None` when it never ended.
pub fn ending(events: &[Event], dom: u16) -> Option<Ending> {
    events.iter().rev().find_map(|event| match &event.body {
        Body::Domain(domain) if event.dom == Some(dom) && domain.state != DomainState::Created => {
            Some(Ending {
                state: domain.state,
                status: domain.status,
                reason: domain.reason.as_deref().unwrap_or("").to_string(),
            })
        }
        _ => None,
    })
}

/// The console lines of domain `dom`, in order.
pub fn console(events: &[Event], dom: u16) -> Vec<String> {
    events
        .iter()
        .filter(|event| event.dom == Some(dom))
        .filter_map(|event| match &event.body {
            Body::Console(console) => Some(console.text.to_string()),
            _ => None,
        })
        .collect()
}
