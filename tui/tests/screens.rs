//! Every screen of the terminal UI, drawn into ratatui's `TestBackend` after real key
//! events, compared with the snapshots in `tests/snapshots/` (insta). The recordings under
//! `tests/recordings/` come from real runs (`traplab trace LAB --record FILE`).
//! `page-fault` and `reflect-vs-bounce` were recorded before domains were numbered as Xen
//! numbers them: their guests are domains 0 and 1 (`d0`, `d1`), which is how old
//! recordings still read. `event-channel` is two domains side by side, recorded; the
//! snapshots of that case come from `traplab_tracer::sample`, a smaller trace written by
//! hand after the event order of `tracer/SCHEMA.md`.
//!
//! The guests' ELF files and the hypervisor's sources are left out (`Options`), so that the
//! snapshots show only what the recordings hold; `the_code_pane_names_the_guest_symbol`
//! checks the ELF side.

use ratatui::Terminal;
use ratatui::backend::TestBackend;
use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyModifiers, MouseEvent, MouseEventKind};
use std::path::PathBuf;
use traplab_tracer::store::Trace;
use traplab_tui::ui::app::{LiveState, Pane, Purpose, Screen};
use traplab_tui::ui::{App, Options};

fn recording(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/recordings")
        .join(name)
}

fn plain() -> Options {
    Options {
        color: false,
        guest_images: false,
        source_root: None,
    }
}

fn open(name: &str) -> App {
    let trace = Trace::open(&recording(name)).expect("the recording reads");
    let mut app = App::new(trace, plain());
    // The name is the path: keep the snapshots free of where the repository is.
    app.trace.name = name.to_string();
    app
}

/// Type `keys`: characters as they are, `<Enter>`, `<Tab>`, `<Esc>`, `<Down>`, `<Up>` as named.
fn press(app: &mut App, keys: &str) {
    let mut rest = keys;
    while let Some(character) = rest.chars().next() {
        let (code, length) = if character == '<'
            && let Some(end) = rest.find('>')
        {
            let code = match &rest[1..end] {
                "Enter" => KeyCode::Enter,
                "Tab" => KeyCode::Tab,
                "Esc" => KeyCode::Esc,
                "Down" => KeyCode::Down,
                "Up" => KeyCode::Up,
                "Right" => KeyCode::Right,
                "Left" => KeyCode::Left,
                "End" => KeyCode::End,
                other => panic!("no key <{other}>"),
            };
            (code, end + 1)
        } else {
            (KeyCode::Char(character), character.len_utf8())
        };
        app.handle_key(KeyEvent::new(code, KeyModifiers::NONE));
        rest = &rest[length..];
    }
}

fn draw(app: &App, width: u16, height: u16) -> String {
    let mut terminal = Terminal::new(TestBackend::new(width, height)).expect("a test terminal");
    terminal
        .draw(|frame| frame.render_widget(app, frame.area()))
        .expect("draws");
    terminal.backend().to_string()
}

/// A live trace of `bodies`, `seq` 0, 1, 2, …, every one about d1 but the first (the boot).
fn of_d1(name: &str, bodies: impl IntoIterator<Item = traplab_abi::event::Body>) -> Trace {
    let mut trace = Trace::live(name);
    for (seq, body) in bodies.into_iter().enumerate() {
        trace.push_event(&traplab_abi::event::Event {
            seq: seq as u64,
            tsc: 100 * seq as u64,
            dom: (seq > 0).then_some(1),
            body,
        });
    }
    trace
}

/// A guest's console bytes reach the terminal only printable: busybox's `ESC[6n` (a cursor
/// query whose answer comes back as keys), a bell, a tab — on the Flows list, a flow's steps
/// and the Console pane.
#[test]
fn a_guest_s_control_characters_never_reach_the_terminal() {
    use traplab_abi::event::{Action, Body, Console};
    use traplab_tracer::sample;
    let printed = "/ # \u{1b}[6n\u{7}\tok";
    let bodies = [
        Body::Boot(sample::boot()),
        sample::created("shell"),
        Body::Exit(sample::exit(0x7b, 0x20_0100, &[0xee])),
        sample::decide(Action::Emulate, "OUT to the console UART", "ioio.rs"),
        Body::Console(Console::line(printed)),
        sample::resume(0x20_0101, 10),
    ];
    let trace = of_d1("shell (sample)", bodies);
    let mut app = App::new(trace, plain());
    for keys in ["", "<Enter>", "llll", "o"] {
        press(&mut app, keys);
        let screen = draw(&app, 100, 30);
        assert!(
            !screen
                .chars()
                .any(|character| character.is_control() && character != '\n'),
            "after {keys:?}: {screen:?}"
        );
    }
    assert!(draw(&app, 100, 30).contains("␛[6n␇ ok"));
}

#[test]
fn the_flows_list() {
    let app = open("page-fault.jsonl");
    insta::assert_snapshot!("flows", draw(&app, 80, 24));
}

#[test]
fn search_finds_the_page_fault() {
    let mut app = open("page-fault.jsonl");
    press(&mut app, "/EXCP_PF");
    insta::assert_snapshot!("search_typing", draw(&app, 80, 24));
    press(&mut app, "<Enter>");
    assert_eq!(
        app.trace.flows()[app.selected_flow().unwrap()].class(),
        "#PF"
    );
    insta::assert_snapshot!("search_found", draw(&app, 80, 24));
    press(&mut app, "/nothing-like-this<Enter>");
    assert!(draw(&app, 80, 24).contains("no flow matches “nothing-like-this”"));
}

/// exit → decide → inject → resume → handler → exit IRET → decide → return → resume.
#[test]
fn stepping_through_the_reflected_page_fault() {
    let mut app = open("page-fault.jsonl");
    press(&mut app, "/EXCP_PF<Enter><Enter>");
    assert_eq!(app.screen, Screen::Flow);
    let names = [
        "exit",
        "decide",
        "inject",
        "resume",
        "handler",
        "iret_exit",
        "iret_decide",
        "return",
        "resume_after",
    ];
    for (position, name) in names.iter().enumerate() {
        assert_eq!(app.step, position);
        insta::assert_snapshot!(format!("pf_step_{position}_{name}"), draw(&app, 80, 24));
        press(&mut app, "l");
    }
    // Past the end of the story: the next flow.
    assert_eq!(app.step, app.story.start);
    press(&mut app, "h");
    assert_eq!(
        app.story.steps.len(),
        9,
        "back into the #PF story, at its last step"
    );
}

#[test]
fn the_preview_of_a_handler_s_return_tells_the_return() {
    // The IRET row's story is the whole delivery it ends; its preview tells its own exit and
    // decision, the step ⏎ opens it at, not the #PF's exit at the story's start.
    let mut app = open("page-fault.jsonl");
    press(&mut app, "/IRET<Enter>");
    let screen = draw(&app, 80, 24);
    let preview: String = screen
        .lines()
        .skip_while(|line| !line.contains("Flow 110/158"))
        .collect();
    assert!(preview.contains("(#VMEXIT IRET)"), "{screen}");
    assert!(!preview.contains("EXCP_PF"), "{screen}");
    press(&mut app, "<Enter>");
    assert!(
        matches!(
            app.story.event(app.step),
            Some((_, event)) if matches!(event.body, traplab_abi::event::Body::Exit(_))
        ),
        "opened at the IRET's exit"
    );
    assert!(draw(&app, 80, 24).contains("#VMEXIT IRET"));
}

#[test]
fn registers_and_code_panes() {
    let mut app = open("page-fault.jsonl");
    press(&mut app, "/EXCP_PF<Enter><Enter>lll<Tab>");
    assert_eq!(app.pane, Pane::Registers);
    insta::assert_snapshot!("registers_at_resume", draw(&app, 80, 24));
    press(&mut app, "<Tab>");
    insta::assert_snapshot!("code_without_elf", draw(&app, 80, 24));
    press(&mut app, "hhh");
    insta::assert_snapshot!("code_at_the_exit_without_elf", draw(&app, 80, 24));
}

#[test]
fn statistics_and_filtering_from_them() {
    let mut app = open("page-fault.jsonl");
    press(&mut app, "3");
    insta::assert_snapshot!("stats", draw(&app, 80, 24));
    // On a terminal too short for the table, the selected row stays in view.
    press(&mut app, "jjj");
    let short = draw(&app, 80, 8);
    assert!(
        short.contains("VMMCALL"),
        "the last row, selected:\n{short}"
    );
    press(&mut app, "kkk");
    let short = draw(&app, 80, 8);
    assert!(
        short.contains("IOIO") && !short.contains("VMMCALL"),
        "{short}"
    );
    press(&mut app, "j<Enter>");
    assert_eq!(app.screen, Screen::Flows);
    assert_eq!(app.class_filter, Some("#PF"));
    insta::assert_snapshot!("filtered_by_class", draw(&app, 80, 24));
    // `f` cycles the classes present (most frequent first), `a` the actions, `F` clears.
    press(&mut app, "F");
    assert_eq!(app.visible.len(), 158);
    press(&mut app, "f");
    assert_eq!((app.class_filter, app.visible.len()), (Some("IOIO"), 155));
    press(&mut app, "fa");
    assert_eq!(app.class_filter, Some("#PF"));
    assert_eq!(app.action_filter, Some(traplab_abi::event::Action::Emulate));
    assert!(app.visible.is_empty(), "no #PF is emulated");
    assert!(draw(&app, 80, 24).contains("no flow passes the filter (F clears it)"));
    press(&mut app, "F/iret<Enter>");
    assert_eq!(
        app.trace.flows()[app.selected_flow().unwrap()].class(),
        "IRET"
    );
    press(&mut app, "/IOIO<Enter>n");
    let first = app.selected;
    press(&mut app, "nN");
    assert_eq!(app.selected, first, "n then N comes back");
}

#[test]
fn help() {
    let mut app = open("page-fault.jsonl");
    press(&mut app, "?");
    let screen = draw(&app, 80, 24);
    // A replay has no QEMU: quitting says what is wrong with the trace.
    assert!(!screen.contains("QEMU"), "{screen}");
    assert!(
        screen.contains("any faults of the trace go to stderr"),
        "{screen}"
    );
    insta::assert_snapshot!("help", screen);
    press(&mut app, "x");
    assert!(!app.help, "any key closes it");
}

#[test]
fn the_live_help_fits_80_by_24() {
    let mut app = App::live("page-fault (live)", plain());
    press(&mut app, "?");
    let screen = draw(&app, 80, 24);
    assert!(screen.contains("Any key closes this help."), "{screen}");
    assert!(screen.contains("type a line on COM1"), "{screen}");
    assert!(screen.contains("quit (stops QEMU"), "{screen}");
}

/// A live run whose QEMU has stopped holds the whole trace: `b`, `c` and the status bar
/// work as in a replay, not as commands to a QEMU that is gone.
#[test]
fn once_qemu_has_stopped_the_keys_work_on_the_trace_as_in_a_replay() {
    let mut app = App::live("page-fault (live)", plain());
    let recorded = traplab_tracer::recording::read(&recording("page-fault.jsonl"))
        .expect("the recording reads");
    for event in &recorded.events {
        app.take_item(traplab_tracer::session::Item::Event(event.clone()));
    }
    app.take_item(traplab_tracer::session::Item::Finished(
        traplab_tracer::session::Finish {
            exit_code: Some(1),
            signal: None,
            hv_status: Some(traplab_tracer::qemu::HvStatus::Done),
            stderr: String::new(),
            interrupted: false,
            timed_out: false,
            stopped: None,
            ring_broken: false,
        },
    ));
    assert!(!app.controls_qemu());
    let screen = draw(&app, 80, 24);
    assert!(!screen.contains("p pause"), "the replay's keys:\n{screen}");
    press(&mut app, "bpf<Enter>");
    assert_eq!(app.breaks.len(), 1, "{:?}", app.message);
    press(&mut app, "c");
    let flow = app.selected_flow().expect("c found the break");
    assert_eq!(app.trace.flows()[flow].class(), "#PF");
    press(&mut app, "s");
    assert!(
        app.message
            .as_deref()
            .is_some_and(|message| message.starts_with("QEMU has stopped")),
        "{:?}",
        app.message
    );
    press(&mut app, "?");
    assert!(draw(&app, 80, 24).contains("run forward to the next break"));
}

#[test]
fn reflect_and_bounce_in_two_domains() {
    let mut app = open("reflect-vs-bounce.jsonl");
    // The action filter cycles emulate → reflect → bounce.
    press(&mut app, "aaa");
    insta::assert_snapshot!("bounced_flows", draw(&app, 100, 30));
    press(&mut app, "<Down><Down><Down><Enter>");
    insta::assert_snapshot!("bounced_pf", draw(&app, 100, 30));
    press(&mut app, "llll");
    insta::assert_snapshot!("bounced_pf_handler", draw(&app, 100, 30));
}

#[test]
fn a_big_terminal_shows_more() {
    let mut app = open("page-fault.jsonl");
    press(&mut app, "/EXCP_PF<Enter><Enter>");
    insta::assert_snapshot!("pf_exit_160x48", draw(&app, 160, 48));
}

#[test]
fn a_truncated_recording_shows_its_first_bad_line_and_what_came_before() {
    let original = std::fs::read_to_string(recording("page-fault.jsonl")).unwrap();
    let lines: Vec<&str> = original.lines().collect();
    let path = std::env::temp_dir().join(format!(
        "traplab-screens-{}-truncated.jsonl",
        std::process::id()
    ));
    std::fs::write(
        &path,
        format!("{}\n{}", lines[..190].join("\n"), &lines[190][..40]),
    )
    .unwrap();
    let mut app = App::new(Trace::open(&path).unwrap(), plain());
    app.trace.name = "truncated.jsonl".into();
    let error = app.trace.error().expect("an error").to_string();
    assert!(error.contains("truncated.jsonl:191: not JSON"), "{error}");
    assert_eq!(app.trace.len(), 190);
    press(&mut app, "G");
    insta::assert_snapshot!("truncated", draw(&app, 80, 24));
    std::fs::remove_file(path).unwrap();
}

#[test]
fn mouse_wheel_scrolls() {
    let mut app = open("page-fault.jsonl");
    let wheel = |kind| MouseEvent {
        kind,
        column: 10,
        row: 10,
        modifiers: KeyModifiers::NONE,
    };
    // Three rows down: past the folded console output and the #PF, to the IRET.
    app.handle_mouse(wheel(MouseEventKind::ScrollDown));
    assert_eq!(app.row_of(app.selected), 3);
    assert_eq!(
        app.trace.flows()[app.selected_flow().unwrap()].class(),
        "IRET"
    );
    app.handle_mouse(wheel(MouseEventKind::ScrollUp));
    assert_eq!(app.selected, 0);
    press(&mut app, "j<Enter>");
    app.handle_mouse(wheel(MouseEventKind::ScrollDown));
    assert_eq!(app.step, 1);
}

/// A trace of `lab` run now, with the guests of this build (whose ELF files then match it).
fn run_now(lab: &str) -> Trace {
    let lab = traplab_labs::lab(lab).expect("a lab");
    let machine = lab.machine().expect("its machine");
    let run =
        traplab_labs::run::collect(&machine, traplab_labs::run::TIMEOUT).expect("QEMU starts");
    let mut trace = Trace::live(format!("{} (run now)", lab.id));
    for event in &run.events {
        trace.push_event(event);
    }
    trace
}

/// A recording made with another build of a guest (the committed ones, once the guests
/// change): its ELF here would name the wrong functions, so the screen leaves them out and
/// says why. A run of this build is taken; the same run with other bytes at every exit's
/// instruction is another build's.
#[test]
fn a_recording_of_another_build_is_shown_without_that_guest_s_symbols() {
    use traplab_abi::event::{Body, InstructionBytes};
    let options = Options {
        guest_images: true,
        ..plain()
    };
    let this_build = run_now("page-fault");
    let mut other = Trace::live("other-build");
    for index in 0..this_build.len() {
        let mut event = this_build.event(index).expect("an event");
        if let Body::Exit(exit) = &mut event.body {
            let mut bytes = exit.insn.as_slice().to_vec();
            if let Some(first) = bytes.first_mut() {
                *first ^= 0xff;
            }
            exit.insn = InstructionBytes::new(&bytes);
        }
        other.push_event(&event);
    }
    let app = App::new(this_build, options.clone());
    assert!(
        app.image(1).is_some(),
        "this build's run: {:?}",
        app.message
    );
    let mut app = App::new(other, options);
    assert!(app.image(1).is_none());
    assert!(
        app.message
            .as_deref()
            .is_some_and(|message| message.contains("ran another build of page-fault")),
        "{:?}",
        app.message
    );
    press(&mut app, "bsym:traplab_guest_main<Enter>");
    assert!(
        app.message
            .as_deref()
            .is_some_and(|message| message.contains("other builds than the recording's")),
        "{:?}",
        app.message
    );
}

#[test]
fn the_code_pane_names_the_guest_symbol() {
    let trace = run_now("page-fault");
    let mut app = App::new(
        trace,
        Options {
            color: false,
            guest_images: true,
            source_root: Some(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")),
        },
    );
    press(&mut app, "/EXCP_PF<Enter><Enter>x");
    // The guests are built with the workspace (`labs/build.rs`): a missing ELF is a failure.
    let image = app
        .image(1)
        .expect("the page-fault guest's ELF, built with the workspace");
    let rip = app.trace.flows()[app.selected_flow().unwrap()].rip;
    let symbol = image
        .describe(rip)
        .expect("the faulting RIP is in a function");
    let screen = draw(&app, 120, 40);
    assert!(screen.contains(&symbol), "{symbol} in\n{screen}");
    assert!(
        screen.contains(&format!("▶ {rip:#x}")),
        "the trapping instruction is marked\n{screen}"
    );
    assert!(
        screen.contains("hypervisor decision at hv/src/exit/"),
        "{screen}"
    );
    // The source line is the guest's own, where `write_volatile` was inlined, not the
    // library's; the library functions inlined there are named after it.
    let source = image.source(rip).expect("the guest's line");
    assert!(source.file.ends_with("guests/src/bin/page-fault.rs"));
    let place = format!(
        "guests/src/bin/page-fault.rs:{} in page_fault::main",
        source.line
    );
    assert!(screen.contains(&place), "{place} in\n{screen}");
    assert!(
        screen.contains(".write_volatile(42)"),
        "the line itself\n{screen}"
    );
    assert!(
        screen.contains("inlined there: core::ptr::mut_ptr::<impl *mut T>::write_volatile"),
        "{screen}"
    );
}

#[test]
fn tiny_terminals_do_not_break_it() {
    let mut app = open("reflect-vs-bounce.jsonl");
    for keys in ["", "/#PF<Enter><Enter>", "llll", "<Tab>", "<Tab>", "3", "?"] {
        press(&mut app, keys);
        for (width, height) in [(1, 1), (10, 4), (20, 6), (40, 12), (80, 24)] {
            let screen = draw(&app, width, height);
            assert_eq!(screen.lines().count(), height as usize);
        }
    }
}

/// `page-fault.jsonl` with `edit` applied to its lines, opened under `name`.
fn edited(name: &str, edit: impl FnOnce(&mut Vec<String>)) -> App {
    let original =
        std::fs::read_to_string(recording("page-fault.jsonl")).expect("the recording reads");
    let mut lines: Vec<String> = original.lines().map(str::to_string).collect();
    edit(&mut lines);
    let path = std::env::temp_dir().join(format!("traplab-screens-{}-{name}", std::process::id()));
    std::fs::write(&path, lines.join("\n") + "\n").expect("a temporary file");
    let mut app = App::new(Trace::open(&path).expect("the edited recording"), plain());
    app.trace.name = name.into();
    std::fs::remove_file(path).expect("the temporary file goes");
    app
}

#[test]
fn a_trace_with_missing_events_says_so_on_every_screen() {
    // Two lines taken out (a resume and the next exit): a gap in seq. The title says so on
    // the list, on a flow, and on the statistics, whatever the keys.
    let mut app = edited("gap.jsonl", |lines| {
        lines.drain(186..188);
    });
    assert!(draw(&app, 100, 30).contains("EVENTS MISSING"));
    press(&mut app, "j<Enter>");
    assert!(draw(&app, 100, 30).contains("EVENTS MISSING"));
    press(&mut app, "S");
    assert_eq!(app.screen, Screen::Stats);
    assert!(draw(&app, 100, 30).contains("EVENTS MISSING"));
    // A whole recording, nothing taken out: no marker.
    let app = open("page-fault.jsonl");
    assert!(!draw(&app, 100, 30).contains("MISSING"));
    // Its end event taken out: the trace is read whole, and has no end.
    let app = edited("no-end.jsonl", |lines| {
        lines.pop();
    });
    assert!(draw(&app, 100, 30).contains("NO END EVENT"));
}

#[test]
fn every_warning_fits_the_title_at_80_columns_with_bad_lines_too() {
    // Bad lines, a gap in seq and no end event, under a long path: at 80 columns the path
    // and the bad lines' wording give way, never a warning, on the list, a flow and the
    // statistics; at 160 everything is said in full.
    let mut app = edited("combo.jsonl", |lines| {
        lines.pop();
        lines.drain(186..188);
        for _ in 0..20 {
            lines.insert(20, "not an event".to_string());
        }
    });
    app.trace.name = "/home/student/recordings/combo.jsonl".into();
    for keys in ["", "/EXCP_PF<Enter><Enter>", "3"] {
        press(&mut app, keys);
        let screen = draw(&app, 80, 24);
        let title = screen.lines().next().expect("a title line");
        for words in ["20 BAD LINES", "EVENTS MISSING", "NO END EVENT", "? help"] {
            assert!(
                title.contains(words),
                "after {keys:?}, no {words:?}: {title}"
            );
        }
        assert!(title.contains("combo.jsonl"), "{title}");
    }
    let screen = draw(&app, 160, 24);
    let title = screen.lines().next().expect("a title line");
    assert!(
        title.contains(
            " traplab · /home/student/recordings/combo.jsonl · 157 flows · \
             20 BAD LINES from 21: skipped · EVENTS MISSING, NO END EVENT"
        ),
        "{title}"
    );
}

#[test]
fn a_pane_s_letter_opens_it_from_the_list_as_tab_does() {
    let mut app = open("page-fault.jsonl");
    press(&mut app, "o");
    assert_eq!((app.screen, app.pane), (Screen::Flow, Pane::Console));
    press(&mut app, "<Esc>r");
    assert_eq!((app.screen, app.pane), (Screen::Flow, Pane::Registers));
    // Ctrl-D on the list is still its page down.
    press(&mut app, "<Esc>");
    ctrl(&mut app, 'd');
    assert_eq!(app.screen, Screen::Flows);
    // `z` folds and unfolds from the flow screen too.
    press(&mut app, "d");
    let folding = app.folding;
    press(&mut app, "z");
    assert_eq!((app.screen, app.folding), (Screen::Flow, !folding));
}

#[test]
fn the_typing_prompt_names_the_domain_the_line_goes_to() {
    // No flow selected yet: d1's COM1, and the prompt says so, as it says any other.
    let mut app = App::live("live", plain());
    press(&mut app, "i");
    let screen = draw(&app, 100, 30);
    assert!(screen.contains("type on d1's COM1"), "{screen}");
}

#[test]
fn tab_moves_the_typing_prompt_to_the_run_s_other_domains() {
    // A live run with two domains (ping is d1, pong d2): the line goes to the selected
    // flow's domain first, and Tab and Shift-Tab move it round the run's domains.
    let mut app = App::live("live", plain());
    for event in traplab_tracer::sample::event_channel_ping() {
        app.take_item(traplab_tracer::session::Item::Event(event));
    }
    let typing_to = |app: &App| match app.prompt.as_ref().map(|prompt| prompt.purpose) {
        Some(Purpose::Type { dom }) => dom,
        other => panic!("no typing prompt: {other:?}"),
    };
    press(&mut app, "i");
    let first = typing_to(&app);
    let other = if first == 1 { 2 } else { 1 };
    press(&mut app, "<Tab>");
    assert_eq!(typing_to(&app), other);
    let screen = draw(&app, 120, 30);
    assert!(
        screen.contains(&format!("type on d{other}'s COM1")),
        "{screen}"
    );
    press(&mut app, "<Tab>");
    assert_eq!(typing_to(&app), first);
    app.handle_key(KeyEvent::new(KeyCode::BackTab, KeyModifiers::SHIFT));
    assert_eq!(typing_to(&app), other);
    // What was typed stays; Tab is not a character of the line.
    press(&mut app, "ls<Tab>");
    assert_eq!(
        app.prompt.as_ref().map(|prompt| prompt.text.as_str()),
        Some("ls")
    );
}

#[test]
fn a_broken_trace_ring_stays_in_the_title_after_the_next_key() {
    let mut app = App::live("live", plain());
    app.take_item(traplab_tracer::session::Item::Broken(
        "the ring's header is corrupt".into(),
    ));
    press(&mut app, "j");
    let screen = draw(&app, 100, 30);
    assert!(screen.contains("TRACE RING BROKEN"), "{screen}");
}

#[test]
fn a_trace_with_no_flow_yet_draws_at_every_size() {
    // A live run starts with no flow: its screen is drawn while the terminal may be tiny
    // (three rows leave the list no row for its "no trap flows (yet)").
    let app = App::new(Trace::live("booting (sample)"), plain());
    for (width, height) in [(1, 1), (80, 3), (80, 4), (80, 24)] {
        let screen = draw(&app, width, height);
        assert_eq!(screen.lines().count(), height as usize);
    }
    assert!(draw(&app, 80, 24).contains("no trap flows (yet)"));
}

/// `f` offers the exceptions flows delivered too: an INT3 the hypervisor reflects is a SWINT
/// flow, and `#BP` finds it.
#[test]
fn the_class_filter_names_a_flow_by_the_exception_it_delivered() {
    let mut trace = Trace::live("breakpoint (sample)");
    for event in traplab_tracer::sample::breakpoint_then_out() {
        trace.push_event(&event);
    }
    let mut app = App::new(trace, plain());
    let mut offered = Vec::new();
    for _ in 0..4 {
        press(&mut app, "f");
        offered.push(app.class_filter);
        if app.class_filter == Some("#BP") {
            break;
        }
    }
    assert_eq!(app.class_filter, Some("#BP"), "offered {offered:?}");
    let flows = app.trace.flows();
    let shown: Vec<&str> = app
        .visible
        .iter()
        .map(|&number| flows[number as usize].class())
        .collect();
    assert_eq!(shown, ["SWINT"]);
}

#[test]
fn a_long_name_is_cut_before_the_state_the_title_gives() {
    // A recording's path can fill the title: the filter (and RUNNING, a bad line, the
    // breaks) must stay in view at 80 columns, the name cut instead.
    let mut trace = Trace::live(format!(
        "/home/student/{}/page-fault.jsonl",
        "labs/".repeat(20)
    ));
    for event in traplab_tracer::sample::event_channel_ping() {
        trace.push_event(&event);
    }
    let mut app = App::new(trace, plain());
    press(&mut app, "f");
    let screen = draw(&app, 80, 24);
    let title = screen.lines().next().expect("a title line");
    assert!(title.contains("filter "), "{title}");
    assert!(title.contains("flows"), "{title}");
    // The path gives up its start, keeping the file name and as much of the rest as fits.
    assert!(title.contains("…/labs/"), "{title}");
    assert!(title.contains("/page-fault.jsonl"), "{title}");
    assert!(title.contains("? help"), "{title}");
}

#[test]
fn a_step_s_sentence_is_shown_whole_on_a_small_terminal() {
    // At 80×24 the sentence of each step of the #PF flow ends as it ends, not mid-way: the
    // lanes and the pane below give it the rows it needs.
    let mut app = open("page-fault.jsonl");
    press(&mut app, "/EXCP_PF<Enter><Enter>");
    for _ in 0..app.story.steps.len() {
        let screen = draw(&app, 80, 24);
        let lines: Vec<&str> = screen.lines().collect();
        let start = lines
            .iter()
            .position(|line| line.contains("what happens"))
            .expect("the step's title");
        let end = lines[start + 1..]
            .iter()
            .position(|line| line.contains("Detail"))
            .map(|offset| start + 1 + offset)
            .expect("the pane below");
        let sentence = lines[start + 1..end].join(" ");
        let sentence = sentence.trim_matches(|c: char| c == '"' || c.is_whitespace());
        assert!(
            sentence.ends_with('.') || sentence.ends_with(')') || sentence.ends_with(':'),
            "cut: {sentence:?}"
        );
        press(&mut app, "l");
    }
}

fn ctrl(app: &mut App, character: char) {
    app.handle_key(KeyEvent::new(
        KeyCode::Char(character),
        KeyModifiers::CONTROL,
    ));
}

#[test]
fn a_register_note_wraps_under_its_register_and_j_reaches_its_end() {
    // The recording cut before the handler's IRET: at the resume, the trace cannot say where
    // the CPU pushed the frame, and the RSP note says why in a long sentence. It wraps at the
    // pane's width, indented under its register, and scrolling down reaches its last words.
    let mut app = edited("no-iret.jsonl", |lines| lines.truncate(300));
    press(&mut app, "/EXCP_PF<Enter><Enter>lllr");
    for (width, height) in [(80, 24), (120, 40)] {
        app.pane_scroll = 0;
        draw(&app, width, height);
        for _ in 0..50 {
            press(&mut app, "J");
        }
        let screen = draw(&app, width, height);
        assert!(
            screen.contains("handler to tell where"),
            "{width}×{height}:\n{screen}"
        );
        let first = screen
            .lines()
            .position(|line| line.contains("│rsp: below the frame"))
            .expect("the note's first row");
        let next = screen.lines().nth(first + 1).expect("a second row");
        // The backend quotes each row.
        assert!(next.starts_with("\"│     "), "under the register: {next}");
    }
}

#[test]
fn j_scrolls_the_pane_no_further_than_its_end_so_k_answers_at_once() {
    let mut app = open("page-fault.jsonl");
    press(&mut app, "/EXCP_PF<Enter><Enter>r");
    draw(&app, 80, 24);
    let overflow = app.pane_overflow.get();
    assert!(overflow > 0, "the registers do not fit 80×24");
    for _ in 0..50 {
        press(&mut app, "J");
    }
    assert_eq!(app.pane_scroll, overflow);
    press(&mut app, "K");
    assert_eq!(app.pane_scroll, overflow - 1);
}

#[test]
fn keys_with_ctrl_are_not_their_letters() {
    // In the flow screen Ctrl-D is not `d` (the Detail pane).
    let mut app = open("page-fault.jsonl");
    press(&mut app, "/EXCP_PF<Enter><Enter>r");
    let pane = format!("{:?}", app.pane);
    ctrl(&mut app, 'd');
    assert_eq!(format!("{:?}", app.pane), pane);
    // In a prompt Ctrl-W takes the last word back and Ctrl-U clears the line.
    press(&mut app, "/page fault");
    ctrl(&mut app, 'w');
    assert_eq!(
        app.prompt.as_ref().map(|prompt| prompt.text.as_str()),
        Some("page ")
    );
    ctrl(&mut app, 'u');
    assert_eq!(
        app.prompt.as_ref().map(|prompt| prompt.text.as_str()),
        Some("")
    );
    // A space of more than one byte (a no-break space, an input method's wide space) is a
    // space, not the middle of a character.
    press(&mut app, "page\u{a0}fault\u{3000}kind");
    ctrl(&mut app, 'w');
    assert_eq!(
        app.prompt.as_ref().map(|prompt| prompt.text.as_str()),
        Some("page\u{a0}fault\u{3000}")
    );
    ctrl(&mut app, 'w');
    assert_eq!(
        app.prompt.as_ref().map(|prompt| prompt.text.as_str()),
        Some("page\u{a0}")
    );
    press(&mut app, "<Esc>");
    // Ctrl-C quits as an interrupt: the command's status is 130, as for a SIGINT.
    ctrl(&mut app, 'c');
    assert!(app.quit && app.interrupted);
}

/// The hand-made trace of two domains and an event channel.
fn event_channel() -> App {
    let mut trace = Trace::live("event-channel (sample)");
    for event in traplab_tracer::sample::event_channel_ping() {
        trace.push_event(&event);
    }
    App::new(trace, plain())
}

/// At 80 columns the status line's keys end with `q quit` and the title with `? help`: the
/// keys' words get shorter, the title's name gives way.
#[test]
fn the_keys_and_help_fit_80_columns() {
    let last_line = |screen: &str| screen.lines().last().unwrap_or_default().to_string();
    // A flow with a wake link has the most keys of the replay's.
    let mut app = event_channel();
    press(&mut app, "j<Enter>");
    let screen = draw(&app, 80, 24);
    let keys = last_line(&screen);
    assert!(
        keys.contains("w/W wake") && keys.contains("q quit"),
        "{keys}"
    );
    assert!(draw(&app, 120, 24).contains("Tab detail/regs/code/console"));
    // A live run stopped at a break: the title keeps its state and `? help`.
    let mut app = App::live("page-fault (live)", plain());
    for event in traplab_tracer::sample::event_channel_ping() {
        app.take_item(traplab_tracer::session::Item::Event(event));
    }
    press(&mut app, "bpf<Enter>bud<Enter>");
    app.live.as_mut().expect("a live run").state = LiveState::Stopped(448);
    let title_has = |app: &App, said: &[&str]| {
        let screen = draw(app, 80, 24);
        let title = screen.lines().next().unwrap_or_default().to_string();
        for words in said {
            assert!(title.contains(words), "no {words:?}: {title}");
        }
    };
    let state = ["STOPPED after seq 448", "break pf,ud", "? help"];
    title_has(&app, &[&["page-fault (live)"][..], &state].concat());
    // With gdb (`traplab run --gdb`): where it attaches is the run's state too, kept when
    // the lab's name gives way.
    app.live.as_mut().expect("a live run").gdb = Some("gdb d1: target remote :2159".into());
    title_has(
        &app,
        &[&["gdb d1: target remote :2159"][..], &state].concat(),
    );
}

#[test]
fn a_notification_and_its_upcall_in_their_own_lanes() {
    let mut app = event_channel();
    insta::assert_snapshot!("domains_flows", draw(&app, 80, 24));
    // d1's send: exit, decide forward, notify d2 (in d2's lane), the switch to d2, what d2
    // did meanwhile (one step), the switch back, the resume.
    press(&mut app, "j<Enter>");
    assert_eq!(app.trace.flows()[app.selected_flow().unwrap()].dom, 1);
    insta::assert_snapshot!("domains_send_exit", draw(&app, 100, 30));
    press(&mut app, "ll");
    let screen = draw(&app, 100, 30);
    assert!(screen.contains("◀ port 3 pending (woken)"), "{screen}");
    assert!(
        screen.contains("Its upcall is flow #1 in d2: w follows it."),
        "{screen}"
    );
    press(&mut app, "lll");
    assert!(matches!(
        app.current_step(),
        Some(traplab_tui::ui::story::Step::Away(_))
    ));
    insta::assert_snapshot!("domains_send_away", draw(&app, 100, 30));
    // w: to the upcall d1's notification caused, in d2's blocked flow, at the injection.
    press(&mut app, "w");
    assert_eq!(app.selected_flow(), Some(0));
    assert!(matches!(
        app.current_event().map(|(_, event)| &event.body),
        Some(traplab_abi::event::Body::Inject(_))
    ));
    insta::assert_snapshot!("domains_upcall", draw(&app, 100, 30));
    // W: back to the notification.
    press(&mut app, "W");
    assert_eq!(app.selected_flow(), Some(1));
    assert!(matches!(
        app.current_event().map(|(_, event)| &event.body),
        Some(traplab_abi::event::Body::Notify(_))
    ));
    // A flow without a link says so.
    press(&mut app, "jjw");
    assert!(draw(&app, 100, 30).contains("w: this flow woke no other domain"));
}

#[test]
fn an_upcall_without_an_exit_opens_as_a_flow_of_its_own() {
    let mut trace = Trace::live("upcall at start (sample)");
    for event in traplab_tracer::sample::upcall_at_start() {
        trace.push_event(&event);
    }
    let mut app = App::new(trace, plain());
    press(&mut app, "j");
    let screen = draw(&app, 80, 24);
    assert!(screen.contains("upcall"), "{screen}");
    assert!(
        screen.contains("The hypervisor switches its CPU from d1 to d2"),
        "the preview tells the switch and the delivery:\n{screen}"
    );
    press(&mut app, "<Enter>");
    insta::assert_snapshot!("domains_upcall_without_exit", draw(&app, 100, 30));
    press(&mut app, "r");
    assert!(
        draw(&app, 100, 30)
            .contains("no exit in this flow: it began when the hypervisor switched its domain in")
    );
    press(&mut app, "W");
    assert_eq!(app.selected_flow(), Some(0), "back to d1's send");
}

#[test]
fn a_recorded_send_is_linked_to_the_upcall_it_caused_in_the_other_domain() {
    use traplab_abi::event::Action;
    use traplab_tracer::flows::NO_FLOW;
    let mut app = open("event-channel.jsonl");
    let flows = app.trace.flows().to_vec();
    let send = flows
        .iter()
        .position(|flow| flow.dom == 1 && flow.first_action == Some(Action::Forward))
        .expect("d1's send, decided forward");
    assert_ne!(flows[send].woke, NO_FLOW, "the send woke something");
    let upcall = &flows[flows[send].woke as usize];
    assert_eq!(
        (upcall.dom, upcall.delivered),
        (2, Some(0x2f)),
        "d2's callback vector"
    );
    assert_eq!(upcall.woken_by as usize, send);
    assert!(
        flows[send].was_away(),
        "d1 was switched out in the middle of its send"
    );
    // On screen: open the send and follow the link with w.
    press(&mut app, &"j".repeat(send));
    assert_eq!(app.selected_flow(), Some(send));
    press(&mut app, "<Enter>w");
    assert_eq!(app.selected_flow(), Some(flows[send].woke as usize));
    assert!(matches!(
        app.current_event().map(|(_, event)| &event.body),
        Some(traplab_abi::event::Body::Inject(_))
    ));
    let screen = draw(&app, 100, 30);
    assert!(screen.contains("woken by d1's send"), "{screen}");
}

/// The seed's scenario, recorded (`traplab trace swap-in --record`): d1's page fault leads
/// to a send that wakes the driver domain d2, whose answer wakes d1 with its upcall; dom0
/// has no flow in between, and `w` follows each notification to the flow it woke.
#[test]
fn the_swap_in_page_fault_crosses_to_the_driver_domain_and_back() {
    use traplab_abi::event::Action;
    use traplab_tracer::flows::NO_FLOW;
    let mut app = open("swap-in.jsonl");
    let flows = app.trace.flows().to_vec();
    let fault = flows
        .iter()
        .position(|flow| flow.dom == 1 && flow.exitcode == 0x4e)
        .expect("d1's #PF");
    // d1's handler sends: forward, and the flow it woke is d2's.
    let send = (fault..flows.len())
        .find(|&index| flows[index].dom == 1 && flows[index].first_action == Some(Action::Forward))
        .expect("the handler's send");
    assert_ne!(flows[send].woke, NO_FLOW, "the send woke the backend");
    let backend = flows[send].woke as usize;
    assert_eq!(flows[backend].dom, 2, "the driver domain");
    // d2's answer: forward, and it woke d1 with its callback vector.
    let answer = (backend..flows.len())
        .find(|&index| flows[index].dom == 2 && flows[index].first_action == Some(Action::Forward))
        .expect("blkback's notification");
    assert_ne!(flows[answer].woke, NO_FLOW, "the answer woke d1");
    let upcall = &flows[flows[answer].woke as usize];
    assert_eq!((upcall.dom, upcall.delivered), (1, Some(0x2f)));
    // The #PF's handler returns after the upcall's; dom0 has no flow from the fault to it.
    let returned = flows[fault].returned_by as usize;
    assert_ne!(returned as u32, NO_FLOW, "the #PF handler returns");
    assert!(returned > answer);
    assert!(
        flows[fault..=returned].iter().all(|flow| flow.dom != 0),
        "dom0 stays out of d1's page-in"
    );
    // On screen: open the send, follow its notification into d2's lane (z: a row per flow,
    // so that `j` counts flows).
    press(&mut app, "z");
    press(&mut app, &"j".repeat(send));
    press(&mut app, "<Enter>w");
    assert_eq!(app.selected_flow(), Some(backend));
    let screen = draw(&app, 100, 30);
    assert!(screen.contains("woken by d1's send"), "{screen}");
}

/// A decision's sentence says what the hypervisor went on to do: an INTR exit is emulated
/// and nothing is skipped, the exit hypercall ends the domain, an OUT moves RIP past itself.
#[test]
fn a_decision_says_what_the_hypervisor_did() {
    let mut app = open("event-channel.jsonl");
    press(&mut app, "/INTR<Enter><Enter>l");
    let screen = draw(&app, 100, 30);
    assert!(screen.contains("decide: emulate"), "{screen}");
    assert!(screen.contains("changes nothing in the guest"), "{screen}");
    assert!(screen.contains("no instruction is skipped"), "{screen}");
    assert!(!screen.contains("skip the instruction"), "{screen}");

    let mut app = open("page-fault.jsonl");
    // The first flow: an OUT to the console, emulated (⏎ unfolds its run, ⏎ opens it).
    press(&mut app, "<Enter><Enter>l");
    let screen = draw(&app, 100, 30);
    assert!(screen.contains("then moves RIP past the"), "{screen}");
    // The last: the exit hypercall.
    press(&mut app, "<Esc>G<Enter>l");
    let screen = draw(&app, 100, 30);
    assert!(screen.contains("the domain ends"), "{screen}");
    assert!(screen.contains("nothing to resume"), "{screen}");
    assert!(!screen.contains("skip the instruction"), "{screen}");
}

/// A guest printing a line traps once per byte at the same OUT: such runs are one row each
/// (the page-fault lab's 158 flows are six rows), ⏎ unfolds one, `z` unfolds them all.
#[test]
fn repeated_console_flows_fold_into_one_row() {
    let mut app = open("page-fault.jsonl");
    assert_eq!(app.visible.len(), 158);
    assert_eq!(app.rows.len(), 6, "{:?}", app.rows);
    let screen = draw(&app, 100, 30);
    assert!(
        screen.contains("IOIO    ▸ ×46 OUT to the console UART, printing “"),
        "{screen}"
    );
    assert!(
        screen.contains("and 45 more like it: ⏎ unfolds them"),
        "{screen}"
    );
    // One j: past the run, on the lab's own first flow.
    press(&mut app, "j");
    assert_eq!(
        app.trace.flows()[app.selected_flow().unwrap()].class(),
        "#PF"
    );
    // ⏎ on the run opens it, in place; a second ⏎ opens its first flow.
    press(&mut app, "k<Enter>");
    assert_eq!(app.screen, Screen::Flows);
    assert_eq!(app.rows.len(), 6 + 45);
    assert!(draw(&app, 100, 30).contains("      6   0.034800 d0   IOIO    emulate"));
    press(&mut app, "<Enter>");
    assert_eq!((app.screen, app.selected_flow()), (Screen::Flow, Some(0)));
    // z: every flow a row of its own; z again: folded again.
    press(&mut app, "<Esc>z");
    assert_eq!(app.rows.len(), 158);
    press(&mut app, "z");
    assert_eq!(app.rows.len(), 6);
    // A search that lands inside a folded run opens it.
    press(&mut app, "/IOIO<Enter>");
    assert_eq!(app.selected, 1);
    assert!(!app.rows[0].is_folded());
    assert_eq!(app.row_of(app.selected), 1);
}

/// At the resume into the #PF handler, the Registers pane shows what the handler's first
/// instruction sees: RSP on the frame the CPU pushed (placed by the handler's IRET), CR2 as
/// the inject set it; after the IRET, what the IRET popped.
#[test]
fn the_registers_at_a_delivery_are_the_handler_s() {
    let mut app = open("page-fault.jsonl");
    press(&mut app, "/EXCP_PF<Enter><Enter>lllr");
    let screen = draw(&app, 120, 40);
    assert!(
        screen.contains("the #PF handler's start (seq 190 + delivery)"),
        "{screen}"
    );
    assert!(
        screen.contains("rsp     0x21fe60 →   0x20ffd0*"),
        "{screen}"
    );
    assert!(
        screen.contains("cr2          0x0 → 0x40000000*"),
        "{screen}"
    );
    assert!(
        screen.contains("rsp: on the 48-byte frame the CPU pushed at VMRUN"),
        "{screen}"
    );
    // The resume after the handler's IRET: back on the faulting code's stack.
    press(&mut app, "G");
    let screen = draw(&app, 120, 40);
    assert!(
        screen.contains("rsp     0x20ffd8 →   0x21fe60*"),
        "{screen}"
    );
}

/// At the inject step, the Detail pane decodes the exception frame the CPU will push at
/// VMRUN: where it goes (found at the handler's IRET) and each slot.
#[test]
fn the_inject_step_decodes_the_frame_the_cpu_pushes() {
    let mut app = open("page-fault.jsonl");
    press(&mut app, "/EXCP_PF<Enter><Enter>ll");
    let screen = draw(&app, 140, 40);
    assert!(
        screen.contains("frame      48 bytes the CPU pushes at VMRUN, at 0x20ffd0: the handler's RSP (found at its IRET, seq 440)"),
        "{screen}"
    );
    for slot in [
        "  +0x00    error code        0x2  what the handler pops before its IRET",
        "  +0x08    rip          0x2000b6  the trapping instruction: the IRET runs it again",
        "  +0x18    rflags            0x6",
        "  +0x20    rsp          0x21fe60  the interrupted code's stack",
        "  +0x28    ss                  ·",
    ] {
        assert!(screen.contains(slot), "{slot} in\n{screen}");
    }
}

/// The Console pane (`o`): what the guests printed up to the step shown, the latest last.
#[test]
fn the_console_pane_shows_what_was_printed_so_far() {
    let mut app = open("page-fault.jsonl");
    press(&mut app, "/EXCP_PF<Enter><Enter>o");
    assert_eq!(app.pane, Pane::Console);
    let screen = draw(&app, 100, 30);
    assert!(
        screen.contains("d0 | writing 42 to 0x40000000, which is not mapped"),
        "{screen}"
    );
    assert!(
        !screen.contains("mapping a free frame"),
        "not yet: {screen}"
    );
    // At the handler's return, the handler's line is in; the lab's last line is not yet.
    press(&mut app, "G");
    let screen = draw(&app, 100, 30);
    assert!(
        screen.contains("d0 | #PF at 0x40000000, error code 0x2: mapping a free"),
        "{screen}"
    );
    assert!(!screen.contains("the write was retried"), "{screen}");
    insta::assert_snapshot!("console_at_the_return", screen);
}

/// A prompt, shown before its newline (`/ # `, unfinished), is in the Console pane until
/// the line it begins comes whole; then only the whole line is.
#[test]
fn the_console_pane_replaces_a_prompt_with_the_line_that_finishes_it() {
    use traplab_abi::event::{Action, Body, Console};
    use traplab_tracer::sample;
    let mut bodies = vec![Body::Boot(sample::boot()), sample::created("shell")];
    for (rip, console) in [
        (
            0x20_0100,
            Console {
                text: "/ # ".into(),
                unfinished: true,
            },
        ),
        (0x20_0200, Console::line("/ # ls")),
    ] {
        bodies.extend([
            Body::Exit(sample::exit(0x7b, rip, &[0xee])),
            sample::decide(Action::Emulate, "OUT to the console UART", "ioio.rs"),
            Body::Console(console),
            sample::resume(rip + 1, 10),
        ]);
    }
    let trace = of_d1("shell (sample)", bodies);
    let mut app = App::new(trace, plain());
    let prompts = |screen: &str| {
        screen
            .lines()
            .filter_map(|line| line.split("d1 | ").nth(1))
            .map(|text| text.trim_end_matches([' ', '│', '"']).to_string())
            .collect::<Vec<_>>()
    };
    press(&mut app, "<Enter>Go");
    let screen = draw(&app, 100, 30);
    assert_eq!(prompts(&screen), ["/ #"], "the prompt alone: {screen}");
    press(&mut app, "<Esc>j<Enter>Go");
    let screen = draw(&app, 100, 30);
    assert_eq!(
        prompts(&screen),
        ["/ # ls"],
        "the whole line, once: {screen}"
    );
    assert!(
        screen.contains("1 line(s) printed up to this step"),
        "the prompt is not counted: {screen}"
    );
}

/// Breaks in a replay: `b rip:…` (or `sym:…`, with the guests' ELF files) and `c` run
/// forward to where the trace sees the guest at that code — an exit there, or a resume
/// there, as at a handler's first instruction.
#[test]
fn a_replay_runs_to_a_break_on_a_rip() {
    let mut app = open("page-fault.jsonl");
    press(&mut app, "c");
    assert!(draw(&app, 100, 30).contains("c: no breaks"));
    // The #PF handler's entry: the guest gets there at the resume that delivers #PF.
    press(&mut app, "brip:0x200240<Enter>");
    assert!(
        draw(&app, 100, 30).contains("break rip:0x200240"),
        "in the title"
    );
    press(&mut app, "c");
    assert_eq!(app.screen, Screen::Flow);
    let (_, event) = app.current_event().expect("an event");
    assert_eq!(event.seq, 190);
    assert!(matches!(event.body, traplab_abi::event::Body::Resume(_)));
    assert!(draw(&app, 100, 30).contains("break rip:0x200240: seq 190"));
    press(&mut app, "c");
    assert!(draw(&app, 100, 30).contains("no break matches from here to the end"));
    // Without the ELF files a symbol cannot be found, and says so.
    press(&mut app, "Bbsym:traplab_guest_main<Enter>");
    assert!(draw(&app, 100, 30).contains("no symbol “traplab_guest_main”"));
    assert!(app.breaks.is_empty());
}

/// A vector break stops at a delivery no exit of its vector made: the #DF the hypervisor
/// makes of a #PF during a #PF's delivery, where no exit says #DF. The #PF's own
/// reflection is no second stop for `b pf`.
#[test]
fn a_replay_s_vector_break_stops_at_a_double_fault_made_of_two_page_faults() {
    use traplab_abi::event::{Action, Body, Event, Inject};
    use traplab_abi::svm::EventType;
    use traplab_tracer::sample;
    let inject = |vector: u8, name: &'static str| {
        Body::Inject(Inject {
            vector,
            name: name.into(),
            kind: EventType::Exception,
            error_code: Some(0),
            cr2: Some(0x5fff_fff8),
            handler: Some(0x20_3000),
            synthetic: false,
        })
    };
    let bodies = [
        Body::Boot(sample::boot()),
        sample::created("double-fault"),
        // The first #PF, reflected; then the second, during its delivery: #DF.
        Body::Exit(sample::exit(0x4e, 0x20_0100, &[0xc7, 0x00])),
        sample::decide(
            Action::Reflect,
            "the guest owns its exceptions",
            "exception.rs",
        ),
        inject(14, "#PF"),
        sample::resume(0x20_2000, 10),
        Body::Exit(sample::exit(0x4e, 0x20_2000, &[0x50])),
        sample::decide(
            Action::Reflect,
            "#PF while the CPU delivered #PF",
            "exception.rs",
        ),
        inject(8, "#DF"),
        sample::resume(0x20_3000, 10),
    ];
    let app = || {
        let mut trace = Trace::live("double-fault (sample)");
        for (seq, body) in bodies.iter().enumerate() {
            let dom = (seq > 0).then_some(1);
            trace.push_event(&Event {
                seq: seq as u64,
                tsc: 100 * seq as u64,
                dom,
                body: body.clone(),
            });
        }
        App::new(trace, plain())
    };
    let mut app_df = app();
    press(&mut app_df, "bdf<Enter>c");
    let (_, event) = app_df.current_event().expect("stopped at an event");
    assert_eq!(event.seq, 8, "the #DF's inject: {event:?}");
    // `b pf` stops at a #PF's exit, not again at its reflection: shown at the first trap's
    // exit (seq 2), `c` goes past that trap's inject of #PF to the second #PF's exit.
    let mut app = app();
    assert_eq!(app.current_event().map(|(_, event)| event.seq), Some(2));
    press(&mut app, "bpf<Enter>c");
    let (_, event) = app.current_event().expect("stopped at an event");
    assert_eq!(
        event.seq, 6,
        "the second #PF's exit, not the first's inject"
    );
}

#[test]
fn a_replay_runs_to_a_break_on_a_symbol() {
    let mut app = App::new(
        run_now("page-fault"),
        Options {
            guest_images: true,
            ..plain()
        },
    );
    assert!(
        app.image(1).is_some(),
        "the page-fault guest's ELF, built with the workspace"
    );
    // The guest's main: the only exit in it is the write that faults.
    press(&mut app, "bsym:traplab_guest_main<Enter>c");
    let (_, event) = app.current_event().expect("an event");
    assert!(
        matches!(&event.body, traplab_abi::event::Body::Exit(exit) if exit.reason == "EXCP_PF"),
        "{event:?}"
    );
}

/// `e`, like gdb's `finish`: from anywhere in a delivery or its handler's traps, to the
/// handler's return.
/// A live `e` runs the hypervisor to the handler's return address; when it stops, the status
/// says where: at the return, or at another break that came first. (The stop itself needs
/// QEMU: `tests/live.rs`.)
#[test]
fn a_live_finish_says_where_it_stopped() {
    use traplab_abi::control::Break;
    use traplab_tui::ui::app::finish_stop;
    let app = open("page-fault.jsonl");
    let finish = Break::Code {
        start: 0x2000b6,
        end: 0x2000b7,
        dom: Some(0),
    };
    // Seq 443: the resume at 0x2000b6 after the #PF handler's IRET.
    assert_eq!(
        finish_stop(&app.trace, &finish, 443),
        "e: stopped at the handler's return, 0x2000b6 (seq 443)"
    );
    // Seq 447: a console OUT's resume, elsewhere.
    assert_eq!(
        finish_stop(&app.trace, &finish, 447),
        "e: stopped after seq 447, before the handler's return (0x2000b6): another break came first"
    );
}

#[test]
fn finish_goes_to_the_handler_s_return() {
    let mut app = open("page-fault.jsonl");
    let is_return = |app: &App| {
        matches!(
            app.current_event().map(|(_, event)| &event.body),
            Some(traplab_abi::event::Body::Return(_))
        )
    };
    // From the #PF's injection.
    press(&mut app, "/EXCP_PF<Enter><Enter>lle");
    assert!(is_return(&app));
    assert_eq!(app.current_event().unwrap().1.seq, 442);
    // From a trap of the handler's own: a console OUT it made (the third row, unfolded).
    press(&mut app, "<Esc>gjj<Enter><Enter>");
    assert_eq!(
        app.trace.flows()[app.selected_flow().unwrap()].class(),
        "IOIO"
    );
    assert_eq!(app.current_event().unwrap().1.seq, 191);
    press(&mut app, "e");
    assert!(is_return(&app), "{:?}", app.message);
    assert_eq!(app.current_event().unwrap().1.seq, 442);
    // Before the #PF, in no handler.
    press(&mut app, "<Esc>g<Enter><Enter>e");
    assert!(!is_return(&app));
    assert!(draw(&app, 100, 30).contains("e: this step is in no handler"));
}
