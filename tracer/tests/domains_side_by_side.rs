//! Flows of domains side by side, built from hand-made traces: which events a flow owns
//! when its domain is switched out, which notification woke a domain, and what the
//! Perfetto export and the one-line text say about them (`tracer/SCHEMA.md`, "Domains
//! side by side").

use traplab_abi::event::*;
use traplab_tracer::flows::NO_FLOW;
use traplab_tracer::sample::{self, created, resume, schedule, upcall};
use traplab_tracer::store::Trace;

/// Events numbered from 0 (`seq` = index), 20,000 TSC ticks apart.
#[derive(Default)]
struct Events(Vec<Event>);

impl Events {
    fn push(&mut self, dom: Option<u16>, body: Body) -> usize {
        let seq = self.0.len() as u64;
        self.0.push(Event {
            seq,
            tsc: 1_000_000 + seq * 20_000,
            dom,
            body,
        });
        seq as usize
    }

    fn trace(&self) -> Trace {
        let mut trace = Trace::live("side by side");
        for event in &self.0 {
            trace.push_event(event);
        }
        trace
    }
}

/// An exit with `code` at `rip`.
fn exit(code: u64, rip: u64) -> Body {
    Body::Exit(sample::exit(code, rip, &[0x90]))
}

const VMMCALL: u64 = 0x81;
const HLT: u64 = 0x78;
const IOIO: u64 = 0x7b;

fn decide(action: Action) -> Body {
    sample::decide(action, "why", "hv/src/exit/mod.rs:1")
}

fn notify(to: u16, port: u32, woke: bool, masked: bool) -> Body {
    Body::Notify(Notify {
        to,
        port,
        from_port: 1,
        woke,
        masked,
    })
}

/// Two domains created and `first` started: the events every scenario begins with.
fn two_domains(first: u16) -> Events {
    let mut events = Events::default();
    events.push(None, Body::Boot(sample::boot()));
    events.push(Some(1), created("one"));
    events.push(Some(2), created("two"));
    events.push(None, schedule(None, Some(first), ScheduleWhy::Start, None));
    events
}

#[test]
fn keys_typed_for_a_switched_out_domain_belong_to_no_flow() {
    // d1 blocks in HLT; d2 runs; keys typed for d1 are recorded (after d2's trap) while d1
    // is still away. d1's flow goes on only at the schedule that switches it back in.
    let mut events = two_domains(1);
    events.push(Some(1), exit(HLT, 0x20_0400));
    events.push(Some(1), decide(Action::Emulate));
    let out = events.push(None, schedule(Some(1), Some(2), ScheduleWhy::Blocked, None));
    events.push(Some(2), exit(IOIO, 0x20_0500));
    events.push(Some(2), decide(Action::Emulate));
    events.push(Some(2), resume(0x20_0501, 10_000));
    let keys = events.push(
        Some(1),
        sample::emulate("the host typed \"x\" on COM1", &[]),
    );
    let d2_exit = events.push(Some(2), exit(IOIO, 0x20_0510));
    events.push(Some(2), decide(Action::Emulate));
    events.push(Some(2), resume(0x20_0511, 10_000));
    events.push(Some(2), exit(HLT, 0x20_0520));
    events.push(Some(2), decide(Action::Emulate));
    let back = events.push(None, schedule(Some(2), Some(1), ScheduleWhy::Blocked, None));
    events.push(Some(1), resume(0x20_0401, 500_000));
    let trace = events.trace();
    let flows = trace.flows();
    let d1 = &flows[0];
    let own: Vec<u32> = d1.events().collect();
    assert!(
        !own.contains(&(keys as u32)) && !own.contains(&(d2_exit as u32)),
        "d1's flow owns {own:?}"
    );
    assert_eq!(d1.back, back as u32, "it goes on from the schedule back in");
    assert_eq!(trace.flow_of(keys), None, "the keys' event is in no flow");
    // Its cycles: 500,000 less the time it was away, from the schedule out to the one back.
    let away = (back - out) as u64 * 20_000;
    assert_eq!(d1.cycles(), Some(500_000 - away));
}

#[test]
fn keys_that_wake_a_domain_open_the_second_part_of_its_flow() {
    // d1 blocks in HLT; at d2's timer tick keys come for d1, whose interrupt wakes it: the
    // schedule back comes first, then the keys' event, then d1's resume.
    let mut events = two_domains(1);
    events.push(Some(1), exit(HLT, 0x20_0400));
    events.push(Some(1), decide(Action::Emulate));
    events.push(None, schedule(Some(1), Some(2), ScheduleWhy::Blocked, None));
    events.push(Some(2), exit(0x60, 0x20_0500)); // INTR
    events.push(Some(2), decide(Action::Emulate));
    let back = events.push(None, schedule(Some(2), Some(1), ScheduleWhy::Woken, None));
    let keys = events.push(
        Some(1),
        sample::emulate("the host typed \"x\" on COM1", &[]),
    );
    events.push(Some(1), resume(0x20_0401, 500_000));
    let trace = events.trace();
    let d1 = &trace.flows()[0];
    assert_eq!(d1.back, back as u32);
    assert_eq!(trace.flow_of(keys), Some(0), "the keys' event is d1's");
}

/// No flow woke another, nor was woken by one.
fn assert_no_links(events: &Events) {
    for flow in events.trace().flows() {
        assert_eq!((flow.woke, flow.woken_by), (NO_FLOW, NO_FLOW), "{flow:?}");
    }
}

/// An event from no port to the domain itself: a tick of its own timer on its VIRQ_TIMER
/// port, or the store's watch event for a node it wrote (the hypervisor's, both).
fn own_tick(dom: u16, port: u32, woke: bool) -> Body {
    Body::Notify(Notify {
        to: dom,
        port,
        from_port: 0,
        woke,
        masked: false,
    })
}

#[test]
fn a_domain_woken_by_its_own_timer_s_tick_is_woken_by_no_flow() {
    // d2's timer ticks on its port 5 (VIRQ_TIMER) at one of its INTR exits, while its upcalls
    // are masked: an event with no upcall. Later d2 halts, blocked; its next tick, noticed at
    // d1's INTR exit, wakes it: the switch back names port 5, and the tick's `notify` and
    // `emulate` open the second part of d2's flow. No domain sent either tick: no flow woke
    // d2's, neither the earlier INTR flow (the same port) nor the HLT flow itself.
    let mut events = two_domains(2);
    events.push(Some(2), exit(0x60, 0x20_0300)); // INTR
    events.push(Some(2), decide(Action::Emulate));
    events.push(Some(2), own_tick(2, 5, false));
    events.push(Some(2), resume(0x20_0300, 40_000));
    events.push(Some(2), exit(HLT, 0x20_0400));
    events.push(Some(2), decide(Action::Emulate));
    events.push(None, schedule(Some(2), Some(1), ScheduleWhy::Blocked, None));
    events.push(Some(1), exit(0x60, 0x20_0500)); // INTR
    events.push(Some(1), decide(Action::Emulate));
    events.push(
        None,
        schedule(Some(1), Some(2), ScheduleWhy::Woken, Some(5)),
    );
    let tick = events.push(Some(2), own_tick(2, 5, true));
    events.push(
        Some(2),
        sample::emulate(
            "the guest's timer was due while it was off the CPU: the tick is an event on port 5 (bound to VIRQ_TIMER)",
            &[],
        ),
    );
    events.push(Some(2), resume(0x20_0401, 90_000));
    let trace = events.trace();
    let flows = trace.flows();
    let (index, halted) = flows
        .iter()
        .enumerate()
        .find(|(_, flow)| flow.dom == 2 && flow.exitcode == HLT as u32)
        .expect("d2's HLT");
    assert_eq!(
        trace.flow_of(tick),
        Some(index),
        "the tick is the HLT flow's"
    );
    assert_eq!(halted.woken_by, NO_FLOW, "no flow sent the tick");
    assert!(
        flows.iter().all(|flow| flow.woke == NO_FLOW),
        "no flow woke another"
    );
}

#[test]
fn an_event_the_hypervisor_raises_for_the_running_domain_itself_links_no_flow() {
    // d1's timer ticks on its port 5 (VIRQ_TIMER) at its INTR exit while its upcalls are
    // masked; its next hypercall unmasks them and the upcall comes. Then it writes /x, which
    // it watches: the store's watch event makes its store port 4 pending, and the upcall
    // comes in the write's own trap. Both are the hypervisor's events for d1 (from no port,
    // to d1 itself): no flow is "woken by d1's send".
    let mut events = two_domains(1);
    events.push(Some(1), exit(0x60, 0x20_0500)); // INTR
    events.push(Some(1), decide(Action::Emulate));
    events.push(Some(1), own_tick(1, 5, false));
    events.push(Some(1), resume(0x20_0500, 40_000));
    events.push(Some(1), exit(VMMCALL, 0x20_0600));
    events.push(Some(1), decide(Action::Emulate));
    events.push(Some(1), upcall());
    events.push(Some(1), resume(0x20_0900, 40_000));
    events.push(Some(1), exit(VMMCALL, 0x20_0700));
    events.push(Some(1), decide(Action::Emulate));
    events.push(Some(1), own_tick(1, 4, false));
    events.push(Some(1), upcall());
    events.push(Some(1), resume(0x20_0900, 40_000));
    assert_no_links(&events);
}

#[test]
fn an_upcall_the_hypervisor_s_own_event_brings_is_not_blamed_on_a_stale_send() {
    // d2 sends on d1's port 3, which d1 masked; d1 takes it by a poll (no upcall, and no
    // event says so). Later d1's timer ticks on its port 5 at its INTR exit, and the upcall
    // follows in that trap: it is the tick's, not d1's old send's.
    let mut events = two_domains(2);
    events.push(Some(2), exit(VMMCALL, 0x20_0500));
    events.push(Some(2), decide(Action::Forward));
    events.push(Some(2), notify(1, 3, false, true));
    events.push(Some(2), exit(VMMCALL, 0x20_0600));
    events.push(Some(2), decide(Action::Emulate));
    events.push(None, schedule(Some(2), Some(1), ScheduleWhy::Yielded, None));
    events.push(Some(1), exit(0x60, 0x20_0700)); // INTR
    events.push(Some(1), decide(Action::Emulate));
    events.push(Some(1), own_tick(1, 5, false));
    events.push(Some(1), upcall());
    events.push(Some(1), resume(0x20_0900, 40_000));
    assert_no_links(&events);
}

#[test]
fn a_wake_on_one_port_is_not_blamed_on_a_notification_of_another() {
    // d1 sends on d2's port 3, which d2 masked: it stays pending and wakes no one. Later
    // d2 blocks in HLT, and its timer's port 5 wakes it.
    let mut events = two_domains(1);
    events.push(Some(1), exit(VMMCALL, 0x20_0500));
    events.push(Some(1), decide(Action::Forward));
    events.push(Some(1), notify(2, 3, false, true));
    events.push(Some(1), resume(0x20_0503, 50_000));
    events.push(Some(1), exit(VMMCALL, 0x20_0600));
    events.push(Some(1), decide(Action::Emulate));
    events.push(None, schedule(Some(1), Some(2), ScheduleWhy::Yielded, None));
    events.push(Some(2), exit(HLT, 0x20_0400));
    events.push(Some(2), decide(Action::Emulate));
    events.push(None, schedule(Some(2), Some(1), ScheduleWhy::Blocked, None));
    events.push(Some(1), resume(0x20_0603, 50_000));
    events.push(Some(1), exit(HLT, 0x20_0700));
    events.push(Some(1), decide(Action::Emulate));
    events.push(None, schedule(Some(1), None, ScheduleWhy::Blocked, None));
    events.push(None, schedule(None, Some(2), ScheduleWhy::Woken, Some(5)));
    // Its timer's tick woke it (an event from no port), and its upcall follows.
    events.push(Some(2), own_tick(2, 5, true));
    events.push(Some(2), upcall());
    events.push(Some(2), resume(0x20_0401, 90_000));
    let trace = events.trace();
    let flows = trace.flows();
    let halted = flows
        .iter()
        .find(|flow| flow.dom == 2 && flow.exitcode == HLT as u32)
        .expect("d2's HLT");
    assert_eq!(
        halted.woken_by, NO_FLOW,
        "port 5 woke it, not d1's send on port 3, at the switch or at the upcall"
    );
    assert!(flows.iter().all(|flow| flow.woke == NO_FLOW));
}

#[test]
fn the_perfetto_arrow_to_a_domain_woken_from_a_poll_goes_forward_in_time() {
    // d2 polls (no upcall); d1's send wakes it; d2's polled flow goes on with its resume.
    let mut events = two_domains(2);
    events.push(Some(2), exit(VMMCALL, 0x20_0400));
    events.push(Some(2), decide(Action::Emulate));
    events.push(None, schedule(Some(2), Some(1), ScheduleWhy::Blocked, None));
    events.push(Some(1), exit(VMMCALL, 0x20_0500));
    events.push(Some(1), decide(Action::Forward));
    events.push(Some(1), notify(2, 3, true, false));
    events.push(
        None,
        schedule(Some(1), Some(2), ScheduleWhy::Woken, Some(3)),
    );
    events.push(Some(2), resume(0x20_0403, 200_000));
    let trace = events.trace();
    let mut out = Vec::new();
    traplab_tracer::export::perfetto(&trace, &mut out).expect("the export");
    let value: serde_json::Value = serde_json::from_slice(&out).expect("JSON");
    let arrows = value["traceEvents"].as_array().expect("events");
    let at = |phase: &str| {
        arrows
            .iter()
            .find(|event| event["ph"] == phase && event["cat"] == "wake")
            .and_then(|event| event["ts"].as_f64())
            .expect("the wake arrow")
    };
    let (start, end) = (at("s"), at("f"));
    assert!(
        end >= start,
        "the arrow goes from {start} µs back to {end} µs"
    );
}

#[test]
fn the_resume_line_does_not_call_the_time_other_domains_ran_the_hypervisor_s() {
    let events = traplab_tracer::sample::event_channel_ping();
    let resume = events
        .iter()
        .find(|event| event.seq == 24)
        .expect("d1's resume after d2 ran");
    let line = traplab_tracer::text::line(resume);
    assert!(line.contains("320000 cycles since the exit"), "{line}");
}
