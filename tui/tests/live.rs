//! The live UI's breaks and `e` (finish) against a real hypervisor: the app is driven as
//! `traplab run` drives it (items in, `sync`, keys), without a terminal.

use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use std::time::{Duration, Instant};
use traplab_abi::event::{Body, DomainState};
use traplab_tracer::qemu::ControlStart;
use traplab_tracer::session::{Item, Options as SessionOptions, Session};
use traplab_tui::ui::app::LiveState;
use traplab_tui::ui::{App, Options};

fn keys(app: &mut App, text: &str) {
    for character in text.chars() {
        let code = if character == '\n' {
            KeyCode::Enter
        } else {
            KeyCode::Char(character)
        };
        app.handle_key(KeyEvent::new(code, KeyModifiers::NONE));
    }
}

/// Feed the session's items to the app until the hypervisor stops after a new event; the
/// `seq` it stopped after.
fn until_stopped(app: &mut App, session: &mut Session, after: Option<u64>) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        assert!(Instant::now() < deadline, "the hypervisor never stopped");
        if let Some(control) = session.control()
            && app.live.as_ref().is_some_and(|live| live.control.is_none())
        {
            app.set_control(control);
        }
        while let Some(item) = session.next_within(Some(Duration::from_millis(5))) {
            assert!(
                !matches!(item, Item::Finished(_)),
                "QEMU finished: {item:?}"
            );
            app.take_item(item);
        }
        app.sync();
        if let Some(LiveState::Stopped(seq)) = app.live.as_ref().map(|live| &live.state)
            && Some(*seq) != after
            && app.trace.index_of_seq(*seq).is_some()
        {
            return *seq;
        }
    }
}

#[test]
fn finish_runs_the_hypervisor_to_the_handler_s_return_and_forgets_its_break() {
    let mut machine = traplab_labs::machine_for(&["page-fault"]);
    machine.control = Some(ControlStart::Paused);
    let (mut session, mut app) = start(&machine, 120, "page-fault");
    let boot = until_stopped(&mut app, &mut session, None);
    keys(&mut app, "bpf\nc");
    let fault = until_stopped(&mut app, &mut session, Some(boot));
    let (_, event) = app.current_event().expect("the stop is shown");
    let Body::Exit(exit) = &event.body else {
        panic!("stopped at {event:?}")
    };
    assert_eq!(exit.reason, "EXCP_PF");
    let faulting = exit.rip;

    // Stopped before the decision: nothing to finish yet.
    keys(&mut app, "e");
    assert!(
        app.message
            .as_deref()
            .is_some_and(|message| message.contains("nothing is delivered in this trap yet")),
        "{:?}",
        app.message
    );
    // Two steps: the decision, the injection.
    keys(&mut app, "s");
    let decided = until_stopped(&mut app, &mut session, Some(fault));
    keys(&mut app, "s");
    let injected = until_stopped(&mut app, &mut session, Some(decided));
    // The handler has not run yet: `e` lets the hypervisor run to its return address.
    keys(&mut app, "e");
    let returned = until_stopped(&mut app, &mut session, Some(injected));
    let (_, event) = app.current_event().expect("the stop is shown");
    let Body::Resume(resume) = &event.body else {
        panic!("stopped at {event:?}")
    };
    assert_eq!(resume.rip, faulting, "back at the write, to retry it");
    assert!(
        app.message
            .as_deref()
            .is_some_and(|message| message.starts_with("e: stopped at the handler's return")),
        "{:?}",
        app.message
    );
    assert!(
        app.story.steps.iter().any(|step| matches!(
            step,
            traplab_tui::ui::story::Step::Event { event, .. }
                if matches!(event.as_ref(), Ok(event) if matches!(event.body, Body::Return(_)))
        )),
        "the story now holds the handler's return"
    );
    assert!(returned > fault);
    // Its break is gone, the user's stays: the guest runs to its end (no more #PF).
    assert_eq!(app.breaks.len(), 1);
    keys(&mut app, "c");
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut finished = false;
    while !finished {
        assert!(Instant::now() < deadline, "the lab never ended");
        match session.next_within(Some(Duration::from_millis(5))) {
            Some(Item::Finished(_)) => finished = true,
            Some(item) => app.take_item(item),
            None => app.sync(),
        }
        assert!(
            !matches!(
                app.live.as_ref().map(|live| &live.state),
                Some(LiveState::Stopped(seq)) if *seq > returned
            ),
            "stopped again after the return"
        );
    }
}

#[test]
fn a_vector_break_stops_the_hypervisor_at_a_double_fault_no_exit_raised() {
    // double-fault: a #PF whose delivery faults again; the hypervisor delivers #DF, which
    // no exit names. `b df` must stop there, not let the lab run to its end.
    let mut machine = traplab_labs::machine_for(&["double-fault"]);
    machine.control = Some(ControlStart::Paused);
    let (mut session, mut app) = start(&machine, 120, "double-fault");
    let boot = until_stopped(&mut app, &mut session, None);
    keys(&mut app, "bdf\nc");
    until_stopped(&mut app, &mut session, Some(boot));
    let (_, event) = app.current_event().expect("the stop is shown");
    let Body::Inject(inject) = &event.body else {
        panic!("stopped at {event:?}")
    };
    assert_eq!(inject.vector, 8);
}

#[test]
fn a_symbol_break_typed_at_the_boot_stops_only_in_the_domain_whose_program_has_it() {
    // reflect-vs-bounce: d1 (faults-reflect) and d2 (faults-bounce) are different programs;
    // only d2's has `bounce_entries`, and d1 has other code at the same addresses. At the
    // first stop, after the boot, no domain exists yet: the programs are known all the same
    // (`App::expect_programs`, as `traplab run` calls it).
    let mut machine = traplab_labs::machine_for(&["faults-reflect", "faults-bounce"]);
    machine.control = Some(ControlStart::Paused);
    let (mut session, mut app) = start_with(&machine, 120, "reflect-vs-bounce", true);
    let boot = until_stopped(&mut app, &mut session, None);
    keys(&mut app, "bsym:bounce_entries\n");
    assert_eq!(app.breaks.len(), 1, "{:?}", app.message);
    keys(&mut app, "c");
    until_stopped(&mut app, &mut session, Some(boot));
    let (_, event) = app.current_event().expect("the stop is shown");
    assert_eq!(
        event.dom,
        Some(2),
        "stopped in d1, whose program has no bounce_entries: {event:?}"
    );
    // One instruction in it, as the Flow pane writes an address; an offset past its end is
    // refused and says why.
    keys(&mut app, "bsym:bounce_entries+0x10\n");
    assert_eq!(app.breaks.len(), 2, "{:?}", app.message);
    keys(&mut app, "bsym:bounce_entries+0x100000\n");
    assert_eq!(app.breaks.len(), 2);
    assert!(
        app.message
            .as_deref()
            .is_some_and(|message| message.contains("is past its end")),
        "{:?}",
        app.message
    );
}

/// Start `machine` under a session that QEMU's time limit ends after `seconds`, and a live
/// app titled `title`, drawn without colours, guest images or sources.
fn start(machine: &traplab_tracer::qemu::Machine, seconds: u64, title: &str) -> (Session, App) {
    start_with(machine, seconds, title, false)
}

/// [`start`], with the guests' ELF files read (`guest_images`) from the machine's programs
/// at once, as `traplab run` reads them (`App::expect_programs`).
fn start_with(
    machine: &traplab_tracer::qemu::Machine,
    seconds: u64,
    title: &str,
    guest_images: bool,
) -> (Session, App) {
    let options = SessionOptions {
        timeout: Some(Duration::from_secs(seconds)),
        ..SessionOptions::default()
    };
    let session = Session::start(machine, options).expect("QEMU starts");
    let mut app = App::live(
        title,
        Options {
            color: false,
            guest_images,
            source_root: None,
        },
    );
    app.expect_programs(
        machine
            .domains()
            .into_iter()
            .map(|(dom, guest)| (dom, guest.image.as_path())),
    );
    (session, app)
}

/// Feed the session's items to the app until one of domain 1's events is `wanted`, within a
/// bound.
fn until_event(app: &mut App, session: &mut Session, what: &str, wanted: impl Fn(&Body) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        assert!(Instant::now() < deadline, "never came: {what}");
        if let Some(control) = session.control()
            && app.live.as_ref().is_some_and(|live| live.control.is_none())
        {
            app.set_control(control);
        }
        while let Some(item) = session.next_within(Some(Duration::from_millis(5))) {
            let seen = match &item {
                Item::Event(event) => event.dom == Some(1) && wanted(&event.body),
                Item::Finished(finish) => panic!("QEMU finished before {what}: {finish:?}"),
                _ => false,
            };
            app.take_item(item);
            if seen {
                return;
            }
        }
        app.sync();
    }
}

fn console_line(line: &'static str) -> impl Fn(&Body) -> bool {
    move |body| matches!(body, Body::Console(console) if console.text == line)
}

#[test]
fn i_types_a_line_on_a_kernel_s_com1_and_the_kernel_reads_it_by_interrupt() {
    // serial-echo waits for a line with its UART's receiver interrupt on and no timer: with
    // keys forwarded, the hypervisor halts until one comes (instead of ending the domain).
    let mut machine = traplab_labs::machine_for(&["serial-echo"]);
    machine.control = Some(ControlStart::Run);
    let (mut session, mut app) = start(&machine, 180, "serial-echo");
    let waits_for_a_key = |body: &Body| matches!(body, Body::Decide(decide) if decide.why.contains("blocks until a key the host types on COM1"));
    until_event(
        &mut app,
        &mut session,
        "the HLT that waits for a key",
        waits_for_a_key,
    );
    keys(&mut app, "ihello world\n");
    assert_eq!(
        app.message.as_deref(),
        Some("typed \"hello world\\n\" on d1's COM1")
    );
    until_event(
        &mut app,
        &mut session,
        "the keys in the trace",
        |body| matches!(body, Body::Emulate(emulate) if emulate.what.starts_with("the host typed \"hello world\\n\" on COM1")),
    );
    until_event(
        &mut app,
        &mut session,
        "the echo",
        console_line("you typed: hello world (11 bytes)"),
    );
    until_event(&mut app, &mut session, "the next wait", waits_for_a_key);
    // While a line is typed, Ctrl-C is the guest's interrupt character (ETX), sent at once
    // after what is typed so far, not the UI's quit.
    keys(&mut app, "iab");
    app.handle_key(KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL));
    assert!(!app.quit, "Ctrl-C while typing is the guest's");
    assert!(app.prompt.is_some(), "the line stays open");
    keys(&mut app, "\n");
    until_event(
        &mut app,
        &mut session,
        "the echo of a line with its ETX",
        console_line("you typed: ab\u{3} (3 bytes)"),
    );
    until_event(&mut app, &mut session, "the next wait", waits_for_a_key);
    keys(&mut app, "iquit\n");
    until_event(
        &mut app,
        &mut session,
        "the end",
        |body| matches!(body, Body::Domain(change) if change.state == DomainState::Exited && change.status == Some(0)),
    );
}

/// Keys typed for a kernel blocked in HLT while another domain spins reach it at the next
/// tick of the hypervisor's timer, and wake it at once, as a device's interrupt kicks a vCPU
/// in Xen. (They used to wait until the CPU idled, which the spinning domain never lets
/// happen: the kernel never read its line.)
#[test]
fn keys_for_a_blocked_kernel_wake_it_while_another_domain_spins() {
    let mut machine = traplab_labs::machine_for(&["serial-echo", "spin"]);
    machine.start = traplab_tracer::qemu::Start::Together;
    machine.control = Some(ControlStart::Run);
    machine.timer_hz = Some(100);
    let (mut session, mut app) = start(&machine, 180, "serial-echo beside spin");
    until_event(
        &mut app,
        &mut session,
        "d1's HLT that blocks while d2 runs",
        |body| matches!(body, Body::Decide(decide) if decide.why.contains("blocks until its timer or an event interrupts it")),
    );
    // Straight to d1's COM1: `i` types for the selected flow's domain, and the list follows
    // d2's ticks.
    let control = session.control().expect("the control mailbox");
    for keys in traplab_abi::control::Keys::split(1, b"hello\n") {
        control
            .send(traplab_abi::control::Command::Input(keys))
            .expect("the keys are posted");
    }
    until_event(
        &mut app,
        &mut session,
        "the echo, while d2 still spins",
        console_line("you typed: hello (5 bytes)"),
    );
    // The keys went in at one of d2's timer exits, and are said after that trap's events,
    // not between its exit and its decision.
    let events: Vec<_> = (0..app.trace.len())
        .filter_map(|index| app.trace.event(index).ok())
        .collect();
    let typed = events
        .iter()
        .position(|event| matches!(&event.body, Body::Emulate(emulate) if event.dom == Some(1) && emulate.what.starts_with("the host typed \"hello\\n\"")))
        .expect("the keys in d1's lane");
    let before = events[..typed]
        .iter()
        .rev()
        .find(|event| event.dom == Some(2))
        .expect("d2 ran before");
    assert!(
        matches!(before.body, Body::Decide(_) | Body::Emulate(_)),
        "the keys came inside d2's trap, after {before:?}"
    );
}

/// A domain's timer that falls due while it is off the CPU is in the trace, said in its lane
/// right after the `schedule` that switches it back in. d1 (`timer-irq`) runs beside d2
/// (`spin`): d1's HLTs block while d2 spins, and the tick noticed at one of d2's timer exits
/// wakes d1 (`woken`); d1 is also preempted while it prints (`slice_over`), and ticks due
/// meanwhile are said as it comes back. (Both used to be silent: the trace showed an
/// interrupt injected that nothing had raised.)
#[test]
fn a_timer_tick_due_while_its_domain_was_off_the_cpu_is_said_as_it_comes_back() {
    let mut machine = traplab_labs::machine_for(&["timer-irq", "spin"]);
    machine.start = traplab_tracer::qemu::Start::Together;
    let (mut session, mut app) = start(&machine, 180, "timer-irq beside spin");
    let off_the_cpu = |body: &Body| matches!(body, Body::Emulate(emulate) if emulate.what == "the guest's timer was due while it was off the CPU: its interrupt is pending");
    // d1 halts three times, each time blocked until such a tick wakes it: one comes within
    // its first few ticks said (bounded: `until_event` has a deadline, and so has this loop).
    let mut said = 0;
    let woken = loop {
        said += 1;
        assert!(said <= 50, "no tick woke d1 among its first 50 said");
        until_event(
            &mut app,
            &mut session,
            "a tick of d1's timer said",
            off_the_cpu,
        );
        let events: Vec<_> = (0..app.trace.len())
            .filter_map(|index| app.trace.event(index).ok())
            .collect();
        let tick = events.len() - 1;
        assert!(
            events[tick].dom == Some(1) && off_the_cpu(&events[tick].body),
            "the last event is the tick: {:?}",
            events[tick]
        );
        let Body::Schedule(switch) = &events[tick - 1].body else {
            panic!(
                "the tick comes right after the switch to d1, not after {:?}",
                events[tick - 1]
            )
        };
        assert_eq!(switch.to, Some(1));
        if switch.why == traplab_abi::event::ScheduleWhy::Woken {
            break events;
        }
        assert_eq!(switch.why, traplab_abi::event::ScheduleWhy::SliceOver);
    };
    // The tick that woke it was noticed at d2's timer exit: that trap is the last of d2's
    // before the switch.
    let tick = woken.len() - 1;
    let d2_exit = woken[..tick]
        .iter()
        .rev()
        .find(|event| event.dom == Some(2) && matches!(event.body, Body::Exit(_)))
        .expect("d2 ran while d1 was blocked");
    assert!(
        matches!(&d2_exit.body, Body::Exit(exit) if exit.exitcode == traplab_abi::exit::ExitReason::Intr.code()),
        "noticed at d2's INTR exit, not {d2_exit:?}"
    );
    assert!(
        woken[..tick - 1]
            .iter()
            .rev()
            .take_while(|event| event.seq > d2_exit.seq)
            .all(|event| event.dom == Some(2)),
        "nothing of d1's between d2's exit and the switch"
    );
}

#[test]
fn a_shell_on_linux_s_console_runs_the_line_i_types() {
    // `traplab run linux-boot --shell`: Debian's kernel boots to a busybox shell on ttyS0;
    // the line typed with `i` reaches it through COM1's IRQ 4, as keys on a terminal would.
    let fetched = traplab_labs::linux::fetched()
        .map(Ok)
        .unwrap_or_else(traplab_labs::linux::fetch);
    fetched.unwrap_or_else(|why| panic!("Debian's kernel and busybox: {why}"));
    let lab = traplab_labs::lab("linux-boot").expect("the lab");
    let mut machine = lab.machine().expect("the lab's machine");
    let line = machine.guests[0].cmdline.get_or_insert_with(String::new);
    line.push(' ');
    line.push_str(traplab_labs::linux::SHELL_ARGUMENT);
    machine.control = Some(ControlStart::Run);
    machine.timer_hz = Some(traplab_labs::linux::SHELL_TIMER_HZ);
    let (mut session, mut app) = start(&machine, 300, "linux-boot");
    until_event(
        &mut app,
        &mut session,
        "the shell's banner",
        console_line("a busybox shell on ttyS0: poweroff -f ends it"),
    );
    // Its prompt, before any line is typed: the kernel halts to wait for a key with "/ # "
    // on the line (and busybox's ESC[6n, its question for the cursor's place) and no
    // newline, and the hypervisor shows it unfinished.
    until_event(
        &mut app,
        &mut session,
        "the shell's prompt",
        |body| matches!(body, Body::Console(console) if console.unfinished && console.text.starts_with("/ # ")),
    );
    // The shell computes the answer: only its output is this line, not the echo of the
    // command line typed.
    keys(&mut app, "iecho answer-$((6*7))\n");
    until_event(
        &mut app,
        &mut session,
        "the command's output",
        |body| matches!(body, Body::Console(console) if console.text.ends_with("answer-42") && !console.text.contains("echo")),
    );
    keys(&mut app, "ipoweroff -f\n");
    until_event(
        &mut app,
        &mut session,
        "the end",
        |body| matches!(body, Body::Domain(change) if change.state == DomainState::Exited),
    );
}
