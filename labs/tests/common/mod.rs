//! What the lab tests share: running guests to the end, and reading the trace.
#![allow(dead_code, reason = "each test file uses a different part")]

use std::time::Duration;
use traplab_abi::event::{Body, DomainState, Event};
use traplab_labs::machine_for;
use traplab_tracer::qemu::{HvStatus, Machine};
use traplab_tracer::session::{self, Options, Run};

/// Run `guests` (domain 0, 1, …) to the end; the run itself must be sound: the hypervisor
/// ends normally, the ring is readable, no event is missing, the first event is `boot`.
pub fn run(guests: &[&str]) -> Run {
    run_machine(&machine_for(guests))
}

/// Run `machine` to the end, with the same checks as [`run`].
pub fn run_machine(machine: &Machine) -> Run {
    let options = Options { timeout: Some(Duration::from_secs(120)), ..Options::default() };
    let run = session::collect(machine, options).expect("QEMU starts");
    assert_eq!(run.finish.hv_status, Some(HvStatus::Done), "the hypervisor ends normally: {:?}\n{}", run.finish, run.log.join("\n"));
    assert!(run.broken.is_empty(), "the ring is sound: {:?}", run.broken);
    assert!(run.faults.is_empty(), "no gap, no loss, an end event: {:?}", run.faults);
    assert!(matches!(run.events.first().map(|e| &e.body), Some(Body::Boot(_))), "the first event is boot");
    run
}

/// The console lines of domain `dom`.
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

/// How domain `dom` ended: `(state, status, reason)`.
pub fn ending(events: &[Event], dom: u16) -> (DomainState, Option<i32>, String) {
    events
        .iter()
        .rev()
        .find_map(|event| match &event.body {
            Body::Domain(domain) if event.dom == Some(dom) && domain.state != DomainState::Created => {
                Some((domain.state, domain.status, domain.reason.as_deref().unwrap_or("").to_string()))
            }
            _ => None,
        })
        .expect("the domain ended")
}
