//! The real terminal: raw mode and the alternate screen while the UI runs, restored on
//! every way out — quitting, a panic, Ctrl-C (a key in raw mode, or SIGINT/SIGTERM from
//! outside), and QEMU's death (which only ends the run; the screen stays to be read).
//!
//! ```text
//!   session thread:  Session::next_within ──Message──► channel ──► UI loop: App::take_item
//!   UI loop:         keys/mouse (crossterm) ──► App::handle_* ;  draw when something changed
//! ```
//! The session lives on its own thread so the screen never waits for QEMU; QEMU itself is
//! started on the main thread, since PR_SET_PDEATHSIG ties its life to the starting thread.

use super::app::App;
use ratatui::Terminal;
use ratatui::backend::CrosstermBackend;
use ratatui::crossterm::event::{
    self, DisableMouseCapture, EnableMouseCapture, Event as TermEvent,
};
use ratatui::crossterm::execute;
use ratatui::crossterm::terminal::{
    EnterAlternateScreen, LeaveAlternateScreen, disable_raw_mode, enable_raw_mode,
};
use std::io::{self, Stdout};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, Instant};
use traplab_tracer::recording::Recorder;
use traplab_tracer::session::{Control, Item, Session};

/// How long the loop waits for a key before looking at the session again.
const TICK: Duration = Duration::from_millis(25);
/// Redraw at least this often (the live state may change without an event).
const REDRAW: Duration = Duration::from_millis(250);

/// Put the terminal back as we found it. Safe to call more than once.
pub fn restore() {
    let _ = disable_raw_mode();
    let _ = execute!(
        io::stdout(),
        DisableMouseCapture,
        LeaveAlternateScreen,
        ratatui::crossterm::cursor::Show
    );
}

/// Restores the terminal when dropped (quitting, an error, unwinding from a panic).
struct Guard;

impl Drop for Guard {
    fn drop(&mut self) {
        restore();
    }
}

fn enter() -> io::Result<(Guard, Terminal<CrosstermBackend<Stdout>>)> {
    // A panic prints its message on the restored terminal, not into the alternate screen.
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        restore();
        previous(info);
    }));
    enable_raw_mode()?;
    let guard = Guard;
    execute!(io::stdout(), EnterAlternateScreen, EnableMouseCapture)?;
    let mut terminal = Terminal::new(CrosstermBackend::new(io::stdout()))?;
    terminal.clear()?;
    Ok((guard, terminal))
}

/// How long the UI has to quit in order after a signal before the process leaves anyway.
const SIGNAL_GRACE: Duration = Duration::from_secs(2);

/// SIGINT, SIGTERM or SIGHUP from outside the terminal (in raw mode a typed Ctrl-C is a
/// key). The UI loop sees the flag within a tick and quits in order, stopping QEMU. When
/// the terminal is gone (SIGHUP), crossterm can be stuck reading its end of file for ever:
/// then, after a grace period, restore what we can and exit; QEMU dies with us
/// (PR_SET_PDEATHSIG). A command that goes on once its screen is gone (`replay` reading the
/// rest of a recording) looks at the flag too, and stops within the grace period.
pub fn signal_flag() -> Arc<AtomicBool> {
    let flag = Arc::new(AtomicBool::new(false));
    let handler_flag = Arc::clone(&flag);
    // ctrlc runs this on its own thread, not in the signal handler: sleeping is fine.
    let _ = ctrlc::set_handler(move || {
        handler_flag.store(true, Ordering::SeqCst);
        std::thread::sleep(SIGNAL_GRACE);
        restore();
        std::process::exit(crate::commands::status::INTERRUPTED as i32);
    });
    flag
}

/// Keys and the mouse until the app quits. `poll` runs each tick; it returns whether
/// anything changed.
fn event_loop(
    app: &mut App,
    signal: &AtomicBool,
    mut poll: impl FnMut(&mut App) -> bool,
) -> io::Result<()> {
    let (_guard, mut terminal) = enter()?;
    let mut dirty = true;
    let mut drawn = Instant::now();
    loop {
        dirty |= poll(app);
        if signal.load(Ordering::SeqCst) {
            app.quit = true;
        }
        if app.quit {
            return Ok(());
        }
        if dirty || drawn.elapsed() > REDRAW {
            terminal.draw(|frame| frame.render_widget(&*app, frame.area()))?;
            dirty = false;
            drawn = Instant::now();
        }
        if event::poll(TICK)? {
            match event::read()? {
                TermEvent::Key(key) => app.handle_key(key),
                TermEvent::Mouse(mouse) => app.handle_mouse(mouse),
                _ => {}
            }
            dirty = true;
        }
    }
}

/// How long each tick may spend loading a big recording (keys stay answered).
const LOAD_BUDGET: Duration = Duration::from_millis(40);

/// `traplab replay`: browse a trace, loading the rest of it while the screen is up.
/// `signal` is the command's [`signal_flag`]. Returns whether a signal ended it, and the app
/// (to report a bad line).
pub fn replay(mut app: App, signal: &AtomicBool) -> io::Result<(bool, App)> {
    event_loop(&mut app, signal, |app| app.load_more(LOAD_BUDGET))?;
    Ok((signal.load(Ordering::SeqCst) || app.interrupted, app))
}

/// What the session thread tells the UI.
#[allow(
    clippy::large_enum_variant,
    reason = "nearly every message is an item; boxing each would cost an allocation"
)]
enum Message {
    Item(Item),
    /// The hypervisor is up: its control channel.
    Control(Control),
}

/// What became of a live run's `--record`: the events it lacks because writing them failed,
/// and the error of the last write (the flush of what was buffered), if that failed.
#[derive(Debug, Default)]
pub struct Recorded {
    pub unrecorded: u64,
    pub unflushed: Option<io::Error>,
}

/// How a live run under the UI ended. The run, and what its recording lacks, are there
/// whether the screen closed in order or the terminal failed.
pub struct LiveEnd {
    /// A signal (or Ctrl-C, a key in raw mode) ended it.
    pub interrupted: bool,
    pub app: App,
    /// What the recording (if any) lacks.
    pub recorded: Recorded,
    /// The terminal's error, when it failed (the run stopped there).
    pub terminal: io::Result<()>,
}

/// `traplab run`: the live session under the UI. `stop` is the session's stop flag.
pub fn live(
    mut app: App,
    mut session: Session,
    stop: Arc<AtomicBool>,
    mut recorder: Option<Recorder>,
) -> LiveEnd {
    let signal = signal_flag();
    let (sender, receiver) = mpsc::channel();
    let reader = std::thread::spawn(move || {
        let mut has_control = false;
        loop {
            if !has_control && let Some(control) = session.control() {
                has_control = true;
                if sender.send(Message::Control(control)).is_err() {
                    break;
                }
            }
            match session.next_within(Some(Duration::from_millis(20))) {
                Some(item) => {
                    let finished = matches!(item, Item::Finished(_));
                    if sender.send(Message::Item(item)).is_err() || finished {
                        break;
                    }
                }
                None if session.is_done() => break,
                None => {}
            }
        }
        // Dropping the session kills QEMU if it still runs.
        drop(session);
    });
    // Events the recording lacks because writing them failed: said at the end (`run.rs`).
    let mut recorded = Recorded::default();
    let result = event_loop(&mut app, &signal, |app| {
        drain(app, &receiver, recorder.as_mut(), &mut recorded.unrecorded)
    });
    // Quitting stops QEMU: the session sees the flag within a few milliseconds.
    stop.store(true, Ordering::SeqCst);
    drop(receiver);
    let _ = reader.join();
    recorded.unflushed = recorder.and_then(|recorder| recorder.finish().err());
    LiveEnd {
        interrupted: signal.load(Ordering::SeqCst) || app.interrupted,
        app,
        recorded,
        terminal: result,
    }
}

fn drain(
    app: &mut App,
    receiver: &Receiver<Message>,
    mut recorder: Option<&mut Recorder>,
    unrecorded: &mut u64,
) -> bool {
    let mut changed = false;
    // A bounded batch per tick, so keys stay answered under a busy trace.
    for _ in 0..20_000 {
        let Ok(message) = receiver.try_recv() else {
            break;
        };
        changed = true;
        match message {
            Message::Control(control) => app.set_control(control),
            Message::Item(item) => {
                if let (Item::Event(event), Some(recorder)) = (&item, recorder.as_deref_mut())
                    && let Err(error) = recorder.write(event)
                {
                    *unrecorded += 1;
                    app.message = Some(format!(
                        "recording failed: {error} ({unrecorded} event(s) unrecorded)"
                    ));
                }
                app.take_item(item);
            }
        }
    }
    let before = app.live.as_ref().map(|live| live.state.clone());
    app.sync();
    changed || app.live.as_ref().map(|live| live.state.clone()) != before
}
