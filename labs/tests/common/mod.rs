//! What the lab tests share: running guests to the end, and reading the trace.
#![allow(dead_code, reason = "each test file uses a different part")]

use traplab_abi::event::{Body, DomainState, Event};
use traplab_labs::machine_for;
use traplab_tracer::qemu::{HvStatus, Machine};
use traplab_tracer::session::Run;

/// Run `guests` (d1, d2, …) to the end; the run itself must be sound: the hypervisor
/// ends normally, the ring is readable, no event is missing, the first event is `boot`.
pub fn run(guests: &[&str]) -> Run {
    run_machine(&machine_for(guests))
}

/// Run `machine` to the end, with the same checks as [`run`].
pub fn run_machine(machine: &Machine) -> Run {
    let run = traplab_labs::run::collect(machine, traplab_labs::run::TIMEOUT).expect("QEMU starts");
    assert_eq!(
        run.finish.hv_status,
        Some(HvStatus::Done),
        "the hypervisor ends normally: {:?}\n{}",
        run.finish,
        run.log.join("\n")
    );
    assert!(run.broken.is_empty(), "the ring is sound: {:?}", run.broken);
    assert!(
        run.faults.is_empty(),
        "no gap, no loss, an end event: {:?}",
        run.faults
    );
    assert!(
        matches!(run.events.first().map(|e| &e.body), Some(Body::Boot(_))),
        "the first event is boot"
    );
    run
}

pub use traplab_labs::run::console;

/// How domain `dom` ended: `(state, status, reason)`.
pub fn ending(events: &[Event], dom: u16) -> (DomainState, Option<i32>, String) {
    let ending = traplab_labs::run::ending(events, dom).expect("the domain ended");
    (ending.state, ending.status, ending.reason)
}

/// The index of the first event at or after `from` that `pick` accepts.
pub fn index_of(events: &[Event], from: usize, pick: impl Fn(&Event) -> bool) -> usize {
    events[from..]
        .iter()
        .position(pick)
        .map(|offset| from + offset)
        .unwrap_or_else(|| panic!("no such event after index {from}"))
}
