//! Hostile guests, bounded and repeatable: random instructions at CPL 0 and random
//! hypercalls, several seeds each (the seed is the domain's number). Whatever happens to
//! the domains, the hypervisor must decide every exit, end normally, and lose nothing
//! (`run_machine` asserts that); every domain must end with a reason the trace gives.

mod common;

use common::{console, ending, run_machine};
use traplab_abi::event::Body;
use traplab_labs::machine_for;
use traplab_tracer::qemu::Start;

/// Every domain of `run` ended (exited or killed, with a reason), and `survived` of them
/// printed their summary line (`prefix` …; a random console write may come first on it).
fn every_domain_ended(events: &[traplab_abi::event::Event], domains: u16, prefix: &str) -> usize {
    let mut survived = 0;
    for dom in 1..=domains {
        let (_, _, reason) = ending(events, dom);
        assert!(!reason.is_empty(), "d{dom} ended with a reason");
        // Whatever the random code ran, the hypervisor had a handler for its exit.
        assert!(!reason.contains("unhandled exit"), "d{dom}: {reason}");
        if console(events, dom)
            .iter()
            .any(|line| line.contains(prefix))
        {
            survived += 1;
        }
    }
    survived
}

#[test]
fn random_instructions_in_four_domains_leave_the_hypervisor_standing() {
    let run = run_machine(&machine_for(&["fuzz-instructions"; 4]));
    let exits = run
        .events
        .iter()
        .filter(|event| matches!(event.body, Body::Exit(_)))
        .count();
    assert!(
        exits > 400,
        "the random code made the hypervisor work: {exits} exits"
    );
    let survived = every_domain_ended(&run.events, 4, "fuzz-instructions d");
    // Random CR3, IDT or GDT loads may end a domain early; most seeds run to the end.
    assert!(survived >= 1, "at least one seed ran all its rounds");
}

#[test]
fn random_hypercalls_in_three_domains_side_by_side_are_all_answered() {
    let mut machine = machine_for(&["fuzz-hypercalls"; 3]);
    machine.start = Start::Together;
    let run = run_machine(&machine);
    let calls = run
        .events
        .iter()
        .filter(|event| matches!(&event.body, Body::Exit(exit) if exit.exitcode == 0x81))
        .count();
    assert!(calls > 1000, "{calls} hypercalls");
    let survived = every_domain_ended(&run.events, 3, "fuzz-hypercalls d");
    assert!(survived >= 1, "at least one seed made all its calls");
}
