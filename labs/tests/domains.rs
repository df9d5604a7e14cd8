//! Domains side by side, booted for real: two guests under the hypervisor in QEMU, and the
//! exact steps between them — the forward, the wake, the switch, the upcall; the grant
//! mapped and unmapped; every refusal with its code; a deadlock that kills only its domain.

mod common;

use common::{console, ending, index_of, run_machine};
use traplab_abi::event::{Action, Body, DomainState, EventType, ScheduleWhy};
use traplab_labs::{guest_elf, machine_for};
use traplab_tracer::qemu::Start;
use traplab_tracer::session::Run;
use traplab_tracer::symbols::Symbols;

/// Run `guests` as d1, d2, … side by side.
fn together(guests: &[&str]) -> Run {
    let mut machine = machine_for(guests);
    machine.start = Start::Together;
    run_machine(&machine)
}

#[test]
fn a_send_is_forwarded_and_the_upcall_runs_in_the_other_domain_first_if_it_was_woken() {
    let run = together(&["event-channel", "event-channel"]);
    let events = &run.events;
    // d1's send: event_channel_op (10), EVTCHNOP_send (4).
    let send = index_of(events, 0, |event| {
        event.dom == Some(1)
            && matches!(&event.body, Body::Exit(exit) if exit.exitcode == 0x81 && exit.regs.rax == 10 && exit.regs.rdi == 4)
    });
    let Body::Exit(send_exit) = &events[send].body else {
        unreachable!()
    };
    // Decided forward, in d1's lane, by the event-channel handler.
    let Body::Decide(decide) = &events[send + 1].body else {
        panic!("{:#?}", &events[send..send + 3])
    };
    assert_eq!(decide.action, Action::Forward);
    assert!(
        decide
            .at
            .starts_with("hv/src/exit/vmmcall/event_channel.rs:"),
        "{}",
        decide.at
    );
    assert!(
        decide.why.contains("port 1 is connected to port 1 of d2"),
        "{}",
        decide.why
    );
    // Its one effect on d2: port 1 pending, and d2 woken if it was blocked in its HLT
    // (`woke`, checked against the schedule below).
    let Body::Notify(notify) = &events[send + 2].body else {
        panic!("{:#?}", &events[send..send + 4])
    };
    assert_eq!(events[send + 2].dom, Some(1), "the sender's event");
    assert_eq!(
        (notify.to, notify.port, notify.from_port, notify.masked),
        (2, 1, 1, false)
    );
    // The upcall comes the next time d2 runs. When d2 was blocked in its HLT, as it is
    // unless a time slice ended between its store write and its HLT (a matter of the
    // machine's speed), the event woke it and it runs first, before d1's send resumes.
    let switch = index_of(
        events,
        send,
        |event| matches!(&event.body, Body::Schedule(schedule) if schedule.to == Some(2)),
    );
    let Body::Schedule(schedule) = &events[switch].body else {
        unreachable!()
    };
    assert_eq!(events[switch].dom, None, "the hypervisor's lane");
    let inject = index_of(events, switch, |event| {
        event.dom == Some(2) && matches!(event.body, Body::Inject(_))
    });
    if notify.woke {
        assert_eq!(
            (schedule.from, schedule.to, schedule.why, schedule.port),
            (Some(1), Some(2), ScheduleWhy::Woken, Some(1))
        );
        assert!(
            events[send..switch]
                .iter()
                .all(|event| event.dom == Some(1) && !matches!(event.body, Body::Resume(_))),
            "d1's send is not resumed before the switch"
        );
        assert_eq!(
            inject,
            switch + 1,
            "in d2's lane: the rest of its HLT, the upcall"
        );
    } else {
        assert_ne!(
            schedule.why,
            ScheduleWhy::Woken,
            "no boost for a runnable domain"
        );
    }
    let Body::Inject(upcall) = &events[inject].body else {
        unreachable!()
    };
    assert_eq!((upcall.vector, upcall.kind), (0x2f, EventType::Interrupt));
    let handler = upcall
        .handler
        .expect("d2's IDT has a gate for its callback vector");
    let into_handler = index_of(events, inject, |event| {
        event.dom == Some(2) && matches!(event.body, Body::Resume(_))
    });
    let Body::Resume(resume) = &events[into_handler].body else {
        unreachable!()
    };
    assert_eq!(resume.rip, handler, "d2 continues in its handler");
    // The handler finds port 1 pending, and returns with IRET.
    let upcall_line = index_of(events, inject, |event| {
        event.dom == Some(2)
            && matches!(&event.body, Body::Console(line) if line.text == "d2: upcall: port 1 is pending")
    });
    index_of(events, upcall_line, |event| {
        event.dom == Some(2) && matches!(&event.body, Body::Return(ret) if ret.vector == Some(0x2f))
    });
    // d1's send resumes after the VMMCALL, with RAX = 0.
    let d1_back = index_of(events, send, |event| {
        event.dom == Some(1) && matches!(event.body, Body::Resume(_))
    });
    let Body::Resume(back) = &events[d1_back].body else {
        unreachable!()
    };
    assert_eq!(back.rip, send_exit.rip + 3, "past the VMMCALL");
    assert_eq!(back.regs.rax, 0, "EVTCHNOP_send returned 0");
    if notify.woke {
        assert!(d1_back > upcall_line, "the woken domain ran first");
    }
    assert_eq!(
        console(events, 1).last().map(String::as_str),
        Some("d1: send returned 0; d1 goes on")
    );
    for dom in [1, 2] {
        assert_eq!(ending(events, dom).1, Some(0), "d{dom}");
    }
}

#[test]
fn a_grant_maps_the_granter_s_own_frame_and_the_message_arrives() {
    let run = together(&["shared-page", "shared-page"]);
    let events = &run.events;
    let page = Symbols::load(&guest_elf("shared-page"))
        .expect("the guest's symbols")
        .address_of("shared_page::PAGE")
        .expect("the granted page");
    let map = index_of(events, 0, |event| matches!(event.body, Body::GrantMap(_)));
    let Body::GrantMap(mapped) = &events[map].body else {
        unreachable!()
    };
    assert_eq!(events[map].dom, Some(2), "the mapper's event");
    assert_eq!(
        (
            mapped.granter,
            mapped.gref,
            mapped.frame,
            mapped.host_addr,
            mapped.readonly,
            mapped.handle
        ),
        (1, 0, page, 0x4000_0000, false, 0)
    );
    let unmap = index_of(events, map, |event| {
        matches!(event.body, Body::GrantUnmap(_))
    });
    let Body::GrantUnmap(unmapped) = &events[unmap].body else {
        unreachable!()
    };
    assert_eq!(
        (
            unmapped.granter,
            unmapped.gref,
            unmapped.host_addr,
            unmapped.handle
        ),
        (1, 0, 0x4000_0000, 0)
    );
    // d2 wrote through its mapping, with plain stores: no exit between the map's resume and
    // the line that says it wrote (the line itself is one console_write exit).
    assert!(
        console(events, 1)
            .contains(&"d1: my page now says \"hello from d2, through d1's own page\"".to_string()),
        "{:?}",
        console(events, 1)
    );
    assert!(console(events, 1).contains(&"d1: grant 0 ended: status 0".to_string()));
    for dom in [1, 2] {
        assert_eq!(ending(events, dom).1, Some(0), "d{dom}");
    }
}

#[test]
fn every_bad_request_gets_its_code_and_both_domains_go_on() {
    let run = together(&["bad-sharing", "bad-sharing"]);
    let events = &run.events;
    assert_eq!(
        console(events, 1),
        [
            "d1: shared info: 0",
            "d1: send on port 5, never allocated: -22",
            "d1: bind to d7, which does not exist: -3",
            "d1: grant a frame that is not mine: GNTST_bad_page",
            "d1: revoke grant 3 while d2 maps it: GNTST_eagain",
            "d1: revoke grant 3 once d2 unmapped it: GNTST_okay",
        ]
    );
    assert_eq!(
        console(events, 2),
        [
            "d2: map grant 0 of d1, made for d3: GNTST_general_error",
            "d2: map read-only grant 1 of d1 writable: GNTST_general_error",
            "d2: map grant 3 of d1: handle 0",
            "d2: unmap: GNTST_okay",
        ]
    );
    // Nothing crossed: one grant mapped and unmapped, no notification at all.
    let maps = events
        .iter()
        .filter(|event| matches!(event.body, Body::GrantMap(_)))
        .count();
    let notifies = events
        .iter()
        .filter(|event| matches!(event.body, Body::Notify(_)))
        .count();
    assert_eq!((maps, notifies), (1, 0));
    // Each refusal's reason says which check failed.
    let reasons: Vec<&str> = events
        .iter()
        .filter_map(|event| match &event.body {
            Body::Decide(decide) => Some(decide.why.as_ref()),
            _ => None,
        })
        .collect();
    for expected in [
        "port 5 was never allocated or bound",
        "there is no domain 7",
        "is not a page of d1's memory",
        "is for d3, not for d2",
        "is read-only and d2 asks to map it writable",
        "is still mapped (1 mapping)",
    ] {
        assert!(
            reasons.iter().any(|why| why.contains(expected)),
            "{expected}"
        );
    }
    for dom in [1, 2] {
        assert_eq!(ending(events, dom).1, Some(0), "d{dom}");
    }
}

#[test]
fn a_domain_that_waits_for_what_nothing_can_send_is_killed_and_the_next_runs() {
    // In turn: bad-block blocks with nothing alive to wake it; hello runs after it.
    let run = common::run(&["bad-block", "hello"]);
    let events = &run.events;
    let (state, _, reason) = ending(events, 1);
    assert_eq!(state, DomainState::Killed);
    assert!(reason.starts_with("deadlock"), "{reason}");
    assert_eq!(console(events, 1), ["blocking, and nothing can wake me"]);
    let blocked = index_of(
        events,
        0,
        |event| matches!(&event.body, Body::Schedule(schedule) if schedule.from == Some(1) && schedule.why == ScheduleWhy::Blocked),
    );
    let killed = index_of(events, blocked, |event| {
        event.dom == Some(1) && matches!(event.body, Body::Domain(_))
    });
    assert!(blocked < killed);
    assert_eq!(ending(events, 2).1, Some(0));
    assert_eq!(console(events, 2), ["Hello from a traplab guest!"]);
}

/// Two domains' x87/SSE states, side by side: each yields to the other a hundred times
/// between writing its registers and reading them back. The hypervisor leaves a vCPU's x87
/// state and MXCSR in the CPU across its exits, and gives them back to its image only when
/// the other vCPU is switched in (`hv/src/svm/fpu.rs`): each finds its own values, not the
/// other's (their patterns, MXCSR, FCW and x87 registers all differ).
#[test]
fn each_domain_finds_its_own_x87_and_sse_state_after_a_hundred_switches() {
    let run = together(&["fpu-across-exits", "fpu-across-exits"]);
    let yields = |from, to| {
        run.events
            .iter()
            .filter(|event| {
                matches!(&event.body, Body::Schedule(schedule)
                    if schedule.why == ScheduleWhy::Yielded
                        && (schedule.from, schedule.to) == (Some(from), Some(to)))
            })
            .count()
    };
    // Each yield while both run switches to the other (about 100 each way); the last ones,
    // after one of them ended, have nowhere to go, and a tick of the scheduler's timer may
    // take the place of a few.
    assert!(
        yields(1, 2) >= 90 && yields(2, 1) >= 90,
        "the two domains took turns: {} switches from d1 to d2, {} back",
        yields(1, 2),
        yields(2, 1)
    );
    for dom in [1, 2] {
        assert_eq!(
            console(&run.events, dom),
            ["XMM0-XMM15, MXCSR, the x87 FCW and two x87 registers intact after 100 exits"],
            "d{dom}"
        );
        assert_eq!(ending(&run.events, dom).1, Some(0), "d{dom}");
    }
}

#[test]
fn a_hardware_breakpoint_a_guest_set_itself_survives_a_switch_to_another_domain() {
    // d1 writes DR0 and DR7 itself (not intercepted: the CPU's registers), yields, and d2
    // runs meanwhile on the same CPU; back in d1, its breakpoint fires. The hypervisor keeps
    // what the CPU held when d1 left, and loads it again (a copy from before was loaded over
    // it, and the breakpoint never fired).
    let run = together(&["breakpoint-across-switch", "hello"]);
    let events = &run.events;
    let yielded = index_of(
        events,
        0,
        |event| matches!(&event.body, Body::Schedule(schedule) if schedule.from == Some(1) && schedule.to == Some(2)),
    );
    let back = index_of(
        events,
        yielded,
        |event| matches!(&event.body, Body::Schedule(schedule) if schedule.to == Some(1)),
    );
    assert!(
        events[yielded..back]
            .iter()
            .any(|event| event.dom == Some(2)),
        "d2 ran between"
    );
    let lines = console(events, 1);
    assert!(
        lines
            .iter()
            .any(|line| line.starts_with("#DB breakpoint 0 at ")),
        "{lines:#?}"
    );
    assert_eq!(ending(events, 1).0, DomainState::Exited);
    assert_eq!(ending(events, 1).1, Some(0), "{lines:#?}");
}
