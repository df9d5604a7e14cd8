//! Pausing, stepping and breaking a live hypervisor through the control channel.

use std::time::{Duration, Instant};
use traplab_abi::control::{Break, Command};
use traplab_abi::event::{Action, Body, Event};
use traplab_labs::machine_for;
use traplab_tracer::qemu::{ControlStart, HvStatus, Machine};
use traplab_tracer::session::{Control, Item, Options, Session};

/// Read events until the hypervisor says it is stopped, and return them. Fails if it
/// does not stop within a minute.
fn until_stopped(session: &mut Session, control: &Control) -> Vec<Event> {
    let started = Instant::now();
    let mut events = Vec::new();
    loop {
        while let Some(item) = session.next_within(Some(Duration::from_millis(5))) {
            match item {
                Item::Event(event) => events.push(event),
                Item::Finished(finish) => {
                    panic!("QEMU finished while we waited for a stop: {finish:?}")
                }
                _ => {}
            }
        }
        if let Some(seq) = control.stopped_after()
            && events.last().is_some_and(|event| event.seq == seq)
        {
            return events;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the hypervisor never stopped; got {events:?}"
        );
    }
}

fn start(guest: &str) -> (Session, Control) {
    start_machine(machine_for(&[guest]))
}

/// Start `machine` stopped before its first event, and wait (at most a minute) for its
/// control mailbox.
fn start_machine(mut machine: Machine) -> (Session, Control) {
    machine.control = Some(ControlStart::Paused);
    let options = Options {
        timeout: Some(Duration::from_secs(120)),
        ..Options::default()
    };
    let mut session = Session::start(&machine, options).expect("QEMU starts");
    let started = Instant::now();
    let control = loop {
        if let Some(control) = session.control() {
            break control;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the ring never appeared"
        );
        std::thread::sleep(Duration::from_millis(10));
    };
    (session, control)
}

#[test]
fn break_on_page_fault_then_step_through_the_flow() {
    let (mut session, control) = start("page-fault");
    // Stopped after the first event, the boot event.
    let first = until_stopped(&mut session, &control);
    assert!(
        matches!(
            first.as_slice(),
            [Event {
                seq: 0,
                body: Body::Boot(_),
                ..
            }]
        ),
        "{first:?}"
    );

    control
        .send(Command::AddBreak(Break::parse("pf").expect("pf is #PF")))
        .unwrap();
    control.send(Command::Continue).unwrap();
    let before = until_stopped(&mut session, &control);
    let Some(Body::Exit(exit)) = before.last().map(|event| &event.body) else {
        panic!("stopped at an exit: {before:?}")
    };
    assert_eq!(exit.reason, "EXCP_PF");

    // Frozen: nothing more comes while we do not step.
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        session
            .next_within(Some(Duration::from_millis(50)))
            .is_none(),
        "no event while stopped"
    );

    // One step, one event: decide, inject, resume.
    let mut kinds = Vec::new();
    for _ in 0..3 {
        control.send(Command::Step).unwrap();
        let step = until_stopped(&mut session, &control);
        assert_eq!(step.len(), 1, "one event per step: {step:?}");
        kinds.push(step[0].body.kind());
        if let Body::Decide(decide) = &step[0].body {
            assert_eq!(decide.action, Action::Reflect);
        }
    }
    assert_eq!(kinds, ["decide", "inject", "resume"]);

    // Next trap: the next exit, whatever it is.
    control.send(Command::NextExit).unwrap();
    let next = until_stopped(&mut session, &control);
    assert!(matches!(
        next.last().map(|event| &event.body),
        Some(Body::Exit(_))
    ));

    control.send(Command::ClearBreaks).unwrap();
    control.send(Command::Continue).unwrap();
    let mut finish = None;
    while let Some(item) = session.next_item() {
        if let Item::Finished(done) = item {
            finish = Some(done);
        }
    }
    assert_eq!(finish.and_then(|done| done.hv_status), Some(HvStatus::Done));
}

#[test]
fn break_on_a_port_and_a_hypercall() {
    let (mut session, control) = start("hypercall");
    until_stopped(&mut session, &control);
    control
        .send(Command::AddBreak(Break::Hypercall(1)))
        .unwrap();
    control.send(Command::Continue).unwrap();
    let events = until_stopped(&mut session, &control);
    let Some(Body::Exit(exit)) = events.last().map(|event| &event.body) else {
        panic!("{events:?}")
    };
    assert_eq!(
        (exit.reason.as_ref(), exit.regs.rax),
        ("VMMCALL", 1),
        "the exit hypercall"
    );
    control.send(Command::Continue).unwrap();
    while session.next_item().is_some() {}

    let (mut session, control) = start("hello");
    until_stopped(&mut session, &control);
    control
        .send(Command::AddBreak(Break::parse("port:0x3f8").unwrap()))
        .unwrap();
    control.send(Command::Continue).unwrap();
    let events = until_stopped(&mut session, &control);
    assert!(
        matches!(events.last().map(|event| &event.body), Some(Body::Exit(exit)) if exit.reason == "IOIO")
    );
}

#[test]
fn pause_works_while_a_guest_spins_without_exits() {
    let mut machine = machine_for(&["spin"]);
    machine.control = Some(ControlStart::Run);
    machine.timer_hz = Some(50);
    let options = Options {
        timeout: Some(Duration::from_secs(120)),
        ..Options::default()
    };
    let mut session = Session::start(&machine, options).expect("QEMU starts");
    // Wait for the guest to start spinning: its "spinning" line, then a timer exit after it
    // (the guest itself makes no exit once it spins, so from then on only INTR exits come).
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let mut spinning = false;
    let mut events = Vec::new();
    loop {
        assert!(
            std::time::Instant::now() < deadline,
            "no INTR exit after the guest's \"spinning\" line within 60 s"
        );
        match session.next_within(Some(Duration::from_millis(10))) {
            Some(Item::Event(event)) => {
                let intr =
                    matches!(&event.body, Body::Exit(exit) if spinning && exit.reason == "INTR");
                spinning |=
                    matches!(&event.body, Body::Console(console) if console.text == "spinning");
                events.push(event);
                if intr {
                    break;
                }
            }
            Some(Item::Finished(finish)) => {
                panic!("QEMU stopped before the guest spun: {finish:?}")
            }
            _ => {}
        }
    }
    let control = session.control().expect("a controlled machine");
    control.send(Command::Pause).unwrap();
    events.extend(until_stopped(&mut session, &control));
    // Only the timer can have given the hypervisor control back: the guest makes no exits.
    let intr = events.iter().rev().find_map(|event| match &event.body {
        Body::Exit(exit) => Some(exit.reason.to_string()),
        _ => None,
    });
    assert_eq!(intr.as_deref(), Some("INTR"), "{events:?}");
    drop(session);
}

/// A stop is nobody's work: the seconds the hypervisor sits stopped at a break and between
/// steps are left out of the trap's time (`resume.cycles`, and the trace's clock), and the
/// hypervisor's timer, which ticked on meanwhile, does not turn the next exit into an INTR.
#[test]
fn the_time_stopped_at_a_break_is_not_hypervisor_time() {
    let mut machine = machine_for(&["page-fault"]);
    // As `traplab run` starts it: the timer on, 10 ticks a second.
    machine.timer_hz = Some(10);
    let (mut session, control) = start_machine(machine);
    let mut events = until_stopped(&mut session, &control);
    control
        .send(Command::AddBreak(Break::parse("pf").expect("pf is #PF")))
        .unwrap();
    control.send(Command::Continue).unwrap();
    events.extend(until_stopped(&mut session, &control));
    // A student reads the screen: a second at the exit, half a second at each step.
    std::thread::sleep(Duration::from_secs(1));
    for _ in 0..3 {
        control.send(Command::Step).unwrap();
        events.extend(until_stopped(&mut session, &control));
        std::thread::sleep(Duration::from_millis(500));
    }
    control.send(Command::NextExit).unwrap();
    let next = until_stopped(&mut session, &control);
    let Some(Body::Exit(next_exit)) = next.last().map(|event| &event.body) else {
        panic!("stopped at an exit: {next:?}")
    };
    let resumed_at = events
        .iter()
        .rev()
        .find_map(|event| match &event.body {
            Body::Resume(resume) => Some(resume.rip),
            _ => None,
        })
        .expect("the step's resume");
    // An echo of the stop would exit before the handler ran one instruction; a real tick
    // that comes later (a loaded machine may make the handler slow) finds it further on.
    assert!(
        !(next_exit.reason == "INTR" && next_exit.rip == resumed_at),
        "the handler's first exit is its own, not the tick that came during the stop: {next_exit:?}"
    );
    events.extend(next);

    let tsc_hz = events
        .iter()
        .find_map(|event| match &event.body {
            Body::Boot(boot) => Some(boot.tsc_hz),
            _ => None,
        })
        .expect("a boot event");
    let fault = events
        .iter()
        .position(|event| matches!(&event.body, Body::Exit(exit) if exit.reason == "EXCP_PF"))
        .expect("the #PF exit");
    let resume = events[fault..]
        .iter()
        .find_map(|event| match &event.body {
            Body::Resume(resume) => Some((event.tsc, resume.cycles)),
            _ => None,
        })
        .expect("its resume");
    let seconds = |ticks: u64| ticks as f64 / tsc_hz as f64;
    // 2.5 s stopped; the hypervisor's own work is a few milliseconds (a second leaves room
    // for a loaded machine and still tells the stop apart).
    assert!(
        seconds(resume.1) < 1.0,
        "the #PF took the hypervisor {} s",
        seconds(resume.1)
    );
    assert!(
        seconds(resume.0 - events[fault].tsc) < 1.0,
        "the trace's clock stood still while stopped: {} s from the exit to the resume",
        seconds(resume.0 - events[fault].tsc)
    );
    control.send(Command::ClearBreaks).unwrap();
    control.send(Command::Continue).unwrap();
    while session.next_item().is_some() {}
}
