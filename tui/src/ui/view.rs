//! Drawing: `impl Widget for &App`. A pure function of the app's state — the tests render
//! it into ratatui's `TestBackend` and compare the text.
//!
//! ```text
//!  ┌ title: recording · flows · filters · live state ─────────────────────── ? help ┐
//!  │ Flows: one row per trap                                                         │
//!  │ Flow:  swimlanes (guest │ hypervisor │ one per other domain), the step's meaning, │
//!  │        and Detail | Registers | Code                                            │
//!  │ Stats: per exit reason                                                          │
//!  └ status: a prompt, a message, or the keys ────────────────────────────────────────┘
//! ```

use super::app::{App, LiveState, Pane, Purpose, Row, Screen};
use super::story::Step;
use ratatui::buffer::Buffer;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Clear, Paragraph, Widget, Wrap};
use traplab_abi::event::{Body, Event};
use traplab_abi::exit::ExitReason;
use traplab_abi::x86::EferFlags;
use traplab_tracer::code;
use traplab_tracer::delivery;
use traplab_tracer::explain::{self, Context};
use traplab_tracer::flows::FlowEnd;
use traplab_tracer::store::NO_DOM;
use traplab_tracer::text::{made_printable, printable};

/// Styles, with and without colour (`NO_COLOR`: only bold, reverse, underline and dim).
#[derive(Clone, Copy)]
struct Theme {
    color: bool,
}

impl Theme {
    fn pick(&self, colored: Style, plain: Style) -> Style {
        if self.color { colored } else { plain }
    }
    fn title(&self) -> Style {
        self.pick(
            Style::new()
                .fg(Color::Black)
                .bg(Color::Cyan)
                .add_modifier(Modifier::BOLD),
            Style::new().add_modifier(Modifier::REVERSED | Modifier::BOLD),
        )
    }
    fn lit(&self) -> Style {
        self.pick(
            Style::new().fg(Color::Black).bg(Color::Yellow),
            Style::new().add_modifier(Modifier::REVERSED),
        )
    }
    fn changed(&self) -> Style {
        self.pick(
            Style::new().fg(Color::Yellow).add_modifier(Modifier::BOLD),
            Style::new().add_modifier(Modifier::BOLD | Modifier::UNDERLINED),
        )
    }
    fn dim(&self) -> Style {
        self.pick(
            Style::new().fg(Color::DarkGray),
            Style::new().add_modifier(Modifier::DIM),
        )
    }
    fn warn(&self) -> Style {
        self.pick(
            Style::new().fg(Color::Red).add_modifier(Modifier::BOLD),
            Style::new().add_modifier(Modifier::BOLD),
        )
    }
    fn key(&self) -> Style {
        self.pick(
            Style::new().fg(Color::Cyan).add_modifier(Modifier::BOLD),
            Style::new().add_modifier(Modifier::BOLD),
        )
    }
    fn header(&self) -> Style {
        Style::new().add_modifier(Modifier::BOLD | Modifier::UNDERLINED)
    }
}

/// `text` cut or padded to `width` characters.
fn fit(text: &str, width: usize) -> String {
    let count = text.chars().count();
    if count <= width {
        format!("{text:<width$}")
    } else if width == 0 {
        String::new()
    } else {
        format!("{}…", text.chars().take(width - 1).collect::<String>())
    }
}

/// Time since the first event, in seconds (or TSC ticks without a rate).
fn time(app: &App, tsc: u64) -> String {
    let ticks = tsc.saturating_sub(app.trace.start_tsc());
    match app.trace.tsc_hz() {
        Some(hz) if hz > 0 => format!("{:.6}", ticks as f64 / hz as f64),
        _ => ticks.to_string(),
    }
}

impl Widget for &App {
    fn render(self, area: Rect, buf: &mut Buffer) {
        let theme = Theme {
            color: self.options.color,
        };
        let [title, body, status] = Layout::vertical([
            Constraint::Length(1),
            Constraint::Min(0),
            Constraint::Length(1),
        ])
        .areas(area);
        render_title(self, theme, title, buf);
        match self.screen {
            Screen::Flows => render_flows(self, theme, body, buf),
            Screen::Flow => render_flow(self, theme, body, buf),
            Screen::Stats => render_stats(self, theme, body, buf),
        }
        render_status(self, theme, status, buf);
        if self.help {
            render_help(self, theme, area, buf);
        }
    }
}

fn render_title(app: &App, theme: Theme, area: Rect, buf: &mut Buffer) {
    // What the title says of the run's state (RUNNING, STOPPED, a bad line, the filter, the
    // breaks) matters more than the trace's name, which can be a long path: `title_text`
    // gives up the name's start first, so that the state stays in view on a narrow terminal.
    let mut before = vec![format!("{} flows", app.trace.flows().len())];
    if app.class_filter.is_some() || app.action_filter.is_some() {
        before.push(format!(
            "filter {}{}",
            app.class_filter.unwrap_or("any class"),
            app.action_filter
                .map(|action| format!(" + {}", action.name()))
                .unwrap_or_default()
        ));
    }
    // The bad lines, from the fullest wording to the shortest: the status line gives the
    // first one's error in full.
    let bad_lines = match (app.trace.error(), app.trace.bad_lines()) {
        (None, _) => vec![],
        (Some(error), 1) => vec![
            format!("BAD LINE {}: skipped", error.line),
            format!("BAD LINE {}", error.line),
        ],
        (Some(error), lines) => vec![
            format!("{lines} BAD LINES from {}: skipped", error.line),
            format!("{lines} BAD LINES from {}", error.line),
            format!("{lines} BAD LINES"),
        ],
    };
    let mut after = Vec::new();
    if let Some(marker) = super::app::trace_fault_marker(app) {
        after.push(marker);
    }
    if let Some(loader) = &app.loader {
        after.push(format!("loading {:.0}%", loader.progress() * 100.0));
    }
    if let Some(live) = &app.live {
        after.push(match &live.state {
            LiveState::Starting => "starting QEMU…".to_string(),
            LiveState::Running => "RUNNING".to_string(),
            LiveState::Stopped(seq) => format!("STOPPED after seq {seq}"),
            LiveState::Finished(why) => why.clone(),
        });
    }
    if !app.breaks.is_empty() {
        let texts: Vec<&str> = app.breaks.iter().map(|(text, _)| text.as_str()).collect();
        after.push(format!("break {}", texts.join(",")));
    }
    // Where gdb attaches, last: the run's state and its breaks change, and matter more (the
    // command is on stderr too, from the start).
    if let Some(gdb) = app.live.as_ref().and_then(|live| live.gdb.clone()) {
        after.push(gdb);
    }
    let mut wordings: Vec<String> = if bad_lines.is_empty() {
        vec![[before.clone(), after.clone()].concat().join(" · ")]
    } else {
        bad_lines
            .iter()
            .map(|bad| {
                [before.clone(), vec![bad.clone()], after.clone()]
                    .concat()
                    .join(" · ")
            })
            .collect()
    };
    // The shortest: without the count of flows, which the list shows anyway (when
    // something else is left to say).
    let shortest_bad = bad_lines.last().cloned();
    let without_count = [
        before[1..].to_vec(),
        shortest_bad.into_iter().collect(),
        after,
    ]
    .concat()
    .join(" · ");
    if !without_count.is_empty() {
        wordings.push(without_count);
    }
    buf.set_line(
        area.x,
        area.y,
        &Line::styled(
            title_text(&app.trace.name, &wordings, area.width as usize),
            theme.title(),
        ),
        area.width,
    );
}

/// The title line, `width` characters: ` traplab · NAME · STATE` and `? help` at the right.
/// `states` are the state's wordings, the fullest first. What gives way when it is too long,
/// in this order: the path's start (`…/labs/pf.jsonl`, down to its file name), the word
/// `traplab`, the fuller wordings, the rest of the name; the state (a warning above all: the
/// trace cannot be trusted whole) is cut only when nothing else is left to give.
fn title_text(name: &str, states: &[String], width: usize) -> String {
    // With a space before it, so that the state never runs into it.
    const HELP_HINT: &str = " ? help ";
    let room = width.saturating_sub(HELP_HINT.len());
    let length = |text: &str| text.chars().count();
    let fullest = states.first().map_or("", String::as_str);
    let shortest = states.last().map_or("", String::as_str);
    // The name in at most `room` characters: whole, or the end of its path.
    let path_end = |room: usize| -> Option<String> {
        if length(name) <= room {
            return Some(name.to_string());
        }
        name.match_indices('/')
            .map(|(slash, _)| format!("…{}", &name[slash..]))
            .find(|end| length(end) <= room)
    };
    let tries = [(" traplab · ", fullest)]
        .into_iter()
        .chain(states.iter().map(|state| (" ", state.as_str())));
    for (start, state) in tries {
        let name_room = room.saturating_sub(length(start) + length(" · ") + length(state));
        if let Some(name) = path_end(name_room) {
            return format!(
                "{}{HELP_HINT}",
                fit(&format!("{start}{name} · {state}"), room)
            );
        }
    }
    // A few characters of the name, or none.
    let name_room = room.saturating_sub(length(" ") + length(" · ") + length(shortest));
    let left = if name_room >= 8 {
        format!(" {} · {shortest}", fit(name, name_room))
    } else {
        format!(" {shortest}")
    };
    if length(&left) <= room || (room > 0 && room >= width / 2) {
        format!("{}{HELP_HINT}", fit(&left, room))
    } else {
        fit(&left, width)
    }
}

fn render_status(app: &App, theme: Theme, area: Rect, buf: &mut Buffer) {
    let line = if let Some(prompt) = &app.prompt {
        let label = match prompt.purpose {
            Purpose::Search => "/".to_string(),
            Purpose::Break => {
                "break on (pf, ioio, port:0x3f8, hypercall:1, rip:0x200240, sym:exception_entries): "
                    .to_string()
            }
            // Which domain: the selected flow's at first, and in a live run the list follows
            // the latest flow, which may be another domain's than the one the student means:
            // Tab moves the line to the next domain.
            Purpose::Type { dom } => format!(
                "type on {}'s COM1 (Tab: another domain, ⏎ sends the line, Esc cancels): ",
                traplab_abi::event::domain_label(dom)
            ),
        };
        Line::from(vec![
            Span::styled(label, theme.key()),
            Span::raw(prompt.text.clone()),
            Span::styled("█", theme.dim()),
        ])
    } else if let Some(message) = &app.message {
        Line::styled(message.clone(), theme.warn())
    } else if let Some(error) = app.trace.error() {
        Line::styled(
            format!("{}:{}: {}", app.trace.name, error.line, error.error),
            theme.warn(),
        )
    } else {
        // Each key, what it does, and the shorter words a narrow terminal gets (80 columns:
        // every key on the line, `q quit` last).
        let keys: &[(&str, &str, &str)] = match (app.screen, app.controls_qemu()) {
            (Screen::Flows, false) => &[
                ("j/k", "move", "move"),
                ("⏎", "open", "open"),
                ("z", "fold", "fold"),
                ("/", "search", "search"),
                ("f/a", "class/action filter", "filter"),
                ("3", "stats", "stats"),
                ("q", "quit", "quit"),
            ],
            (Screen::Flow, false) if !wake_links(app).is_empty() => &[
                ("h/l", "step", "step"),
                ("j/k", "flow", "flow"),
                ("w/W", "wake link", "wake"),
                ("Tab", "detail/regs/code/console", "pane"),
                ("Esc", "list", "list"),
                ("q", "quit", "quit"),
            ],
            (Screen::Flow, false) => &[
                ("h/l", "step", "step"),
                ("j/k", "flow", "flow"),
                ("Tab", "detail/regs/code/console", "pane"),
                ("Esc", "list", "list"),
                ("q", "quit", "quit"),
            ],
            (Screen::Stats, _) => &[
                ("j/k", "move", "move"),
                ("⏎", "show these flows", "show"),
                ("1", "flows", "flows"),
                ("q", "quit", "quit"),
            ],
            (Screen::Flow, true) => &[
                ("b", "break", "break"),
                ("c", "continue", "continue"),
                ("s", "step", "step"),
                ("p", "pause", "pause"),
                ("h/l", "look", "look"),
                ("Tab", "pane", "pane"),
                ("q", "quit", "quit"),
            ],
            // The list: `l` is not a step here, it opens the flow (as ⏎).
            (_, true) => &[
                ("b", "break", "break"),
                ("c", "continue", "continue"),
                ("s", "step", "step"),
                ("p", "pause", "pause"),
                ("⏎", "open", "open"),
                ("q", "quit", "quit"),
            ],
        };
        // ` key what ` each.
        let wide: usize = keys
            .iter()
            .map(|(key, what, _)| key.chars().count() + what.chars().count() + 3)
            .sum();
        let narrow = wide > area.width as usize;
        let mut spans = Vec::new();
        for (key, what, short) in keys {
            spans.push(Span::styled(format!(" {key}"), theme.key()));
            spans.push(Span::raw(format!(
                " {} ",
                if narrow { short } else { what }
            )));
        }
        Line::from(spans)
    };
    Paragraph::new(line).render(area, buf);
}

/// The rows of the flows list: a header and one line per flow.
fn flow_row(app: &App, flow_number: usize, width: usize) -> String {
    let flow = &app.trace.flows()[flow_number];
    let seq = app
        .trace
        .index_of(flow.first as usize)
        .map_or(0, |entry| entry.seq);
    let symbol = app.symbol(flow.dom, flow.rip).unwrap_or_default();
    // The action, a cross for a killed domain, and the links across domains (→d2: this
    // flow's notification woke d2's upcall).
    let action = format!(
        "{}{}{}",
        flow.action_text(),
        if flow.end == FlowEnd::Killed {
            " ✝"
        } else {
            ""
        },
        traplab_tracer::diff::links(&app.trace, flow)
    );
    let text = format!(
        "{seq:>7} {:>10} {:<4} {:<7} {:<11} {:>10} {}",
        time(app, flow.tsc),
        traplab_abi::event::domain_label(flow.dom),
        flow.class(),
        fit(&action, 11),
        format!("{:#x}", flow.rip),
        short_symbol(&symbol)
    );
    fit(&text, width)
}

/// The row of a folded run: where it starts, then `▸ ×150` and what the run does —
/// `OUT to the console UART, printing “…”` — in place of the action and RIP columns.
fn folded_row(app: &App, row: Row, width: usize) -> String {
    let flows = app.trace.flows();
    let first = &flows[app.visible[row.start] as usize];
    let last = &flows[app.visible[row.start + row.len - 1] as usize];
    let seq = app
        .trace
        .index_of(first.first as usize)
        .map_or(0, |entry| entry.seq);
    let access = match app.trace.event(first.first as usize) {
        Ok(Event {
            body: Body::Exit(exit),
            ..
        }) => explain::repeated_access(&exit),
        _ => None,
    };
    let what = access.unwrap_or_else(|| {
        let symbol = app.symbol(first.dom, first.rip).unwrap_or_default();
        format!(
            "{} at {:#x} {}",
            first.action_text(),
            first.rip,
            short_symbol(&symbol)
        )
    });
    let printed = run_console(app, first.dom, first.first as usize, last.last() as usize);
    let printed = if printed.is_empty() {
        String::new()
    } else {
        format!(", printing {}", printed.join(" "))
    };
    let text = format!(
        "{seq:>7} {:>10} {:<4} {:<7} ▸ ×{} {}{printed}",
        time(app, first.tsc),
        traplab_abi::event::domain_label(first.dom),
        first.class(),
        row.len,
        what.trim_end()
    );
    fit(&text, width)
}

/// How many events of a folded run are looked at for the lines it printed.
const RUN_CONSOLE_SCAN: usize = 5_000;

/// The console lines domain `dom` printed between events `first` and `last` (the first
/// few, quoted).
fn run_console(app: &App, dom: u16, first: usize, last: usize) -> Vec<String> {
    let mut lines = Vec::new();
    for index in first..=last.min(first + RUN_CONSOLE_SCAN) {
        let is_console = app.trace.index_of(index).is_some_and(|entry| {
            entry.kind == traplab_tracer::flows::Kind::Console && entry.dom == dom
        });
        if is_console
            && let Ok(Event {
                body: Body::Console(line),
                ..
            }) = app.trace.event(index)
            && !line.unfinished
        {
            lines.push(format!("“{}”", printable(&line.text)));
            if lines.len() == 3 {
                break;
            }
        }
    }
    lines
}

fn render_flows(app: &App, theme: Theme, area: Rect, buf: &mut Buffer) {
    let [list, preview] = Layout::vertical([Constraint::Min(3), Constraint::Length(5)]).areas(area);
    let block = Block::bordered().title(" Flows: one row per trap ");
    let inner = block.inner(list);
    block.render(list, buf);
    let width = inner.width as usize;
    let header = fit(
        &format!(
            "{:>7} {:>10} {:<4} {:<7} {:<11} {:>10} symbol",
            "seq", "time s", "dom", "class", "action", "rip"
        ),
        width,
    );
    buf.set_line(
        inner.x,
        inner.y,
        &Line::styled(header, theme.header()),
        inner.width,
    );
    let rows = inner.height.saturating_sub(1) as usize;
    // The line goes under the header, when there is a row for it (a terminal of 3 rows
    // leaves the list none).
    if app.visible.is_empty() && inner.height >= 2 {
        let text = if app.trace.flows().is_empty() {
            "no trap flows (yet)"
        } else {
            "no flow passes the filter (F clears it)"
        };
        buf.set_line(
            inner.x,
            inner.y + 1,
            &Line::styled(text, theme.dim()),
            inner.width,
        );
    }
    // Keep the selection in view, a little above the middle.
    let selected_row = app.row_of(app.selected);
    let top = selected_row
        .saturating_sub(rows / 3)
        .min(app.rows.len().saturating_sub(rows));
    for (line, row_number) in (top..app.rows.len()).take(rows).enumerate() {
        let row = app.rows[row_number];
        let text = if row.is_folded() {
            folded_row(app, row, width)
        } else {
            flow_row(app, app.visible[row.start] as usize, width)
        };
        let style = if row_number == selected_row {
            theme.lit()
        } else {
            Style::new()
        };
        buf.set_line(
            inner.x,
            inner.y + 1 + line as u16,
            &Line::styled(text, style),
            inner.width,
        );
    }
    // The selected flow in words.
    let mut lines = Vec::new();
    if let Some(flow_number) = app.selected_flow() {
        // A trap in two sentences: its exit and its decision; a flow without an exit (an
        // upcall when its domain was switched in): the switch and the delivery. From the
        // step opening the row lands on: a handler's return is told in the story of the
        // delivery it ends, after the delivery's own steps.
        let has_exit = app
            .trace
            .flows()
            .get(flow_number)
            .is_some_and(|flow| flow.has_exit());
        for step in app.story.steps.iter().skip(app.story.start) {
            if let Step::Event { event, index } = step
                && let Ok(event) = event.as_ref()
                && match event.body {
                    Body::Exit(_) | Body::Decide(_) => has_exit,
                    Body::Schedule(_) | Body::Inject(_) | Body::Bounce(_) => !has_exit,
                    _ => false,
                }
            {
                lines.push(Line::raw(sentence(app, *index, event)));
            }
            if lines.len() == 2 {
                break;
            }
        }
        let run = match app.selected_row() {
            Some(row) if row.is_folded() => {
                format!("and {} more like it: ⏎ unfolds them ", row.len - 1)
            }
            _ => String::new(),
        };
        let title = format!(
            " Flow {}/{} {run}",
            flow_number + 1,
            app.trace.flows().len()
        );
        Paragraph::new(lines)
            .wrap(Wrap { trim: true })
            .block(Block::bordered().title(title))
            .render(preview, buf);
    } else {
        let hint = if app.controls_qemu() {
            "The hypervisor waits after its boot. b: break on a trap (pf, ud, ioio, port:0x3f8, hypercall:1…), c: continue, s: step one event, ?: all keys."
        } else {
            ""
        };
        Paragraph::new(hint)
            .wrap(Wrap { trim: true })
            .block(Block::bordered())
            .render(preview, buf);
    }
}

/// The sentence of event number `index`, with the context the story gives it.
fn sentence(app: &App, index: usize, event: &Event) -> String {
    let dom = event.dom.unwrap_or(u16::MAX);
    let symbol = |address| app.symbol(dom, address);
    // A resume after an inject/bounce in the same flow enters the handler.
    let delivering = match &event.body {
        Body::Resume(_) => app.story.steps.iter().rev().find_map(|step| match step {
            Step::Event { event: found, .. } => match found.as_ref() {
                Ok(found) if found.seq < event.seq && found.seq.saturating_add(8) > event.seq => {
                    match &found.body {
                        Body::Inject(inject) => Some(inject.name.to_string()),
                        Body::Bounce(bounce) => Some(bounce.name.to_string()),
                        Body::Exit(_) => Some(String::new()),
                        _ => None,
                    }
                }
                _ => None,
            },
            Step::Handler(_) | Step::Away(_) => None,
        }),
        _ => None,
    }
    .filter(|name| !name.is_empty());
    explain::sentence(
        event,
        &Context {
            symbol: &symbol,
            tsc_hz: app.trace.tsc_hz(),
            delivering,
            outcome: outcome_of_decision(app, index, event),
            trap_cycles: match event.body {
                Body::Resume(_) => app
                    .trace
                    .flow_of(index)
                    .and_then(|flow| app.trace.flows()[flow].cycles()),
                _ => None,
            },
            d0_is_a_guest: app.trace.d0_is_a_guest(),
        },
    )
}

/// For a `decide` event: what the hypervisor did after it, from the rest of its flow —
/// once the flow is over (a live run stopped at the decision has not done it yet).
fn outcome_of_decision(app: &App, index: usize, event: &Event) -> Option<explain::Outcome> {
    if !matches!(event.body, Body::Decide(_)) {
        return None;
    }
    let flow = &app.trace.flows()[app.trace.flow_of(index)?];
    if flow.end == FlowEnd::Open {
        return None;
    }
    let after: Vec<Event> = flow
        .events()
        .filter(|&later| later as usize > index)
        .filter_map(|later| app.trace.event(later as usize).ok())
        .collect();
    Some(explain::Outcome::after(&after))
}

/// How many other domains get a lane of their own; the events of any further domain share
/// the last one, named by their domain.
const OTHER_LANES: usize = 3;

/// The lanes of the Flow screen: the flow's own domain, the hypervisor, then each other
/// domain of the trace.
struct Lanes {
    own: u16,
    others: Vec<u16>,
}

impl Lanes {
    fn of(app: &App, own: u16) -> Lanes {
        let mut others: Vec<u16> = app
            .trace
            .domains()
            .iter()
            .map(|(dom, _)| *dom)
            .filter(|dom| *dom != own)
            .collect();
        // A domain the story names but the trace never created (a cut recording).
        for step in &app.story.steps {
            if let Step::Event { event, .. } = step
                && let Ok(event) = event.as_ref()
                && let Some(dom) = event.dom
                && dom != own
                && !others.contains(&dom)
            {
                others.push(dom);
            }
        }
        others.sort_unstable();
        Lanes { own, others }
    }

    /// How many lanes: own, hypervisor, the others.
    fn count(&self) -> usize {
        2 + self.others.len().min(OTHER_LANES)
    }

    /// Put `text` in the lane of domain `dom` (an empty text leaves the lane as it is).
    fn put(&self, texts: &mut [String], dom: u16, text: String) {
        if text.is_empty() {
            return;
        }
        let (lane, text) = if dom == self.own {
            (0, text)
        } else {
            match self.others.iter().position(|other| *other == dom) {
                Some(position) if position < OTHER_LANES => (2 + position, text),
                // A domain beyond the lanes (or a trace of one domain): say whose it is.
                _ => (
                    texts.len() - 1,
                    format!("{}: {text}", traplab_abi::event::domain_label(dom)),
                ),
            }
        };
        texts[lane] = text;
    }
}

/// What one step shows in each lane: the flow's domain, the hypervisor, the other domains.
fn lanes(app: &App, step: &Step, lanes: &Lanes) -> Vec<String> {
    let mut texts = vec![String::new(); lanes.count()];
    let event = match step {
        Step::Event { event, .. } => event,
        Step::Handler(handler) => {
            let traps = if handler.traps == 0 {
                String::new()
            } else {
                format!(", {} traps", handler.traps)
            };
            texts[1] = "┆".into();
            lanes.put(
                &mut texts,
                handler.dom,
                format!("┆ {} handler runs{traps}", handler.name),
            );
            return texts;
        }
        Step::Away(away) => {
            texts[1] = "┆ runs the others".into();
            lanes.put(&mut texts, away.dom, "┆ switched out: waits".into());
            for (dom, traps) in &away.ran {
                lanes.put(
                    &mut texts,
                    *dom,
                    format!("┆ runs: {traps} trap{}", if *traps == 1 { "" } else { "s" }),
                );
            }
            return texts;
        }
    };
    let event = match event.as_ref() {
        Ok(event) => event,
        Err(error) => {
            texts[1] = format!("unreadable: {}", error.error);
            return texts;
        }
    };
    let label = traplab_abi::event::domain_label;
    let dom = event.dom.unwrap_or(NO_DOM);
    let (guest, hv) = match &event.body {
        Body::Exit(exit) => (
            format!("{:#x} traps ──▶", exit.rip),
            format!("#VMEXIT {}", exit.reason),
        ),
        Body::Decide(decide) => (String::new(), format!("decide: {}", decide.action.name())),
        Body::Emulate(emulate) => (String::new(), format!("emulate: {}", emulate.what)),
        Body::Inject(inject) => (String::new(), format!("inject {} → EVENTINJ", inject.name)),
        Body::Bounce(bounce) => (
            String::new(),
            format!("bounce {} → frame {:#x}", bounce.name, bounce.frame),
        ),
        Body::Return(ret) => (
            format!("{} handler returns ──▶", ret.name.as_deref().unwrap_or("a")),
            format!(
                "return via {}",
                match ret.via {
                    traplab_abi::event::ReturnPath::Iret => "IRET",
                    traplab_abi::event::ReturnPath::Hypercall => "hypercall",
                }
            ),
        ),
        Body::Resume(resume) => {
            let symbol = app
                .symbol(dom, resume.rip)
                .map(|name| format!(" {name}"))
                .unwrap_or_default();
            (
                format!("◀── runs at {:#x}{symbol}", resume.rip),
                "VMRUN".into(),
            )
        }
        Body::Console(console) => (format!("prints “{}”", console.text), String::new()),
        Body::Notify(notify) => {
            // The notified domain's lane shows what the notification did there.
            let state = if notify.woke {
                " (woken)"
            } else if notify.masked {
                " (masked)"
            } else {
                ""
            };
            lanes.put(
                &mut texts,
                notify.to,
                format!("◀ port {} pending{state}", notify.port),
            );
            (
                String::new(),
                format!("notify {} port {}", label(notify.to), notify.port),
            )
        }
        Body::GrantMap(map) => {
            lanes.put(
                &mut texts,
                map.granter,
                format!("gref {} mapped by {}", map.gref, label(dom)),
            );
            (
                format!(
                    "◀ maps {}'s page at {:#x}",
                    label(map.granter),
                    map.host_addr
                ),
                format!("grant_map gref {} of {}", map.gref, label(map.granter)),
            )
        }
        Body::GrantUnmap(unmap) => (
            format!("◀ unmaps {:#x}", unmap.host_addr),
            format!("grant_unmap handle {}", unmap.handle),
        ),
        Body::Schedule(schedule) => {
            if let Some(from) = schedule.from {
                lanes.put(
                    &mut texts,
                    from,
                    format!("⏸ switched out ({})", schedule.why.name()),
                );
            }
            if let Some(to) = schedule.to {
                lanes.put(&mut texts, to, "▶ switched in".into());
            }
            (String::new(), traplab_tracer::text::switch(schedule))
        }
        Body::Domain(_) | Body::Boot(_) | Body::End(_) | Body::Lost(_) => {
            (String::new(), traplab_tracer::text::detail(event))
        }
    };
    texts[1] = hv;
    if event.dom.is_some() {
        lanes.put(&mut texts, dom, guest);
    }
    texts
}

/// The flows the story's flows are linked to across domains, in words: `woke d2 → flow #1
/// (w)`, `woken by d1's send, flow #2 (W)`.
fn wake_links(app: &App) -> Vec<String> {
    let flows = app.trace.flows();
    let label = traplab_abi::event::domain_label;
    let mut links = Vec::new();
    for &number in &app.story.flows {
        let Some(flow) = flows.get(number) else {
            continue;
        };
        if let Some(woken) = flows.get(flow.woke as usize) {
            links.push(format!(
                "woke {} → flow #{} (w)",
                label(woken.dom),
                flow.woke + 1
            ));
        }
        if let Some(sender) = flows.get(flow.woken_by as usize) {
            links.push(format!(
                "woken by {}'s send, flow #{} (W)",
                label(sender.dom),
                flow.woken_by + 1
            ));
        }
    }
    links
}

/// What a step means, in a sentence (the Flow screen's "what happens").
fn step_sentence(app: &App, step: &Step) -> String {
    match step {
        Step::Event { event, index } => match event.as_ref() {
            Ok(event) => sentence(app, *index, event),
            Err(error) => format!("This line cannot be read: {error}"),
        },
        Step::Handler(handler) => handler.sentence(&|address| app.symbol(handler.dom, address)),
        Step::Away(away) => away.sentence(),
    }
}

/// How many rows `text` takes wrapped at `width` columns, as the step's paragraph wraps it
/// (ratatui's own count, so that the two cannot disagree).
fn wrapped_lines(text: &str, width: u16) -> u16 {
    let rows = Paragraph::new(text)
        .wrap(Wrap { trim: true })
        .line_count(width.max(1));
    rows.min(u16::MAX as usize) as u16
}

fn render_flow(app: &App, theme: Theme, area: Rect, buf: &mut Buffer) {
    let Some(flow_number) = app.selected_flow() else {
        Paragraph::new("No flow selected: press 1 for the list.")
            .block(Block::bordered())
            .render(area, buf);
        return;
    };
    let flow = &app.trace.flows()[flow_number];
    // The step's meaning.
    let meaning = app
        .current_step()
        .map(|step| step_sentence(app, step))
        .unwrap_or_default();
    let meaning = format!("{meaning}{}", link_note(app));
    // Live, stopped at this very event: say what the next step will show.
    let stopped_here = match (
        app.live.as_ref().map(|live| &live.state),
        app.current_event(),
    ) {
        (Some(LiveState::Stopped(seq)), Some((_, event))) if event.seq == *seq => Some(&event.body),
        _ => None,
    };
    let meaning = match stopped_here {
        Some(Body::Exit(_)) => format!(
            "{meaning} The hypervisor is stopped here, before it decides: s shows its decision."
        ),
        Some(Body::Resume(_)) => {
            format!("{meaning} (Stopped here: s steps into the guest's next event, c continues.)")
        }
        Some(_) => format!("{meaning} (Stopped here: s shows the next step.)"),
        None => meaning,
    };
    let steps = app.story.steps.len() as u16;
    let small = area.height < 30;
    let lanes_height = (steps + 3).min(if small { 9 } else { 14 }).max(5);
    let lanes_height = if small {
        lanes_height.min(8)
    } else {
        lanes_height
    };
    // The sentence whole, with its title line, as far as the pane below keeps 3 rows (and the
    // lanes 5, when the sentence needs more): cut, it ended mid-way, with the hint for the
    // next key in its last words.
    // As many rows as the flow's longest sentence takes, so that the pane below stays where
    // it is while the student steps through the flow.
    let rows = |text: &str| wrapped_lines(text, area.width) + 1;
    let note = link_note(app);
    let wanted = app
        .story
        .steps
        .iter()
        .map(|step| rows(&format!("{}{note}", step_sentence(app, step))))
        .fold(rows(&meaning), u16::max);
    let meaning_height = wanted
        .max(if small { 4 } else { 5 })
        .min(area.height.saturating_sub(lanes_height + 3))
        .max(2);
    let lanes_height = if lanes_height + meaning_height + 3 > area.height {
        area.height.saturating_sub(meaning_height + 3).max(5)
    } else {
        lanes_height
    };
    let meaning_height = meaning_height
        .min(area.height.saturating_sub(lanes_height + 3))
        .max(2);
    let [lanes_area, meaning_area, pane_area] = Layout::vertical([
        Constraint::Length(lanes_height),
        Constraint::Length(meaning_height),
        Constraint::Min(3),
    ])
    .areas(area);

    // Swimlanes.
    let seq_range = match (
        app.trace.index_of(flow.first as usize),
        app.trace.index_of(flow.last() as usize),
    ) {
        (Some(first), Some(last)) => format!("seq {}–{}", first.seq, last.seq),
        _ => String::new(),
    };
    let took = match (flow.cycles(), app.trace.tsc_hz()) {
        (Some(cycles), Some(hz)) if hz > 0 => {
            format!(" · {:.1} µs", cycles as f64 * 1e6 / hz as f64)
        }
        (Some(cycles), _) => format!(" · {cycles} cycles"),
        (None, _) if flow.end == FlowEnd::Open => " · PENDING".into(),
        _ => String::new(),
    };
    let title = format!(
        " Flow {}/{}: {} {} {} · {seq_range}{took} ",
        flow_number + 1,
        app.trace.flows().len(),
        traplab_abi::event::domain_label(flow.dom),
        flow.class(),
        flow.action_text()
    );
    let mut block = Block::bordered().title(title);
    let links = wake_links(app);
    if !links.is_empty() {
        block = block.title_bottom(format!(" {} ", links.join(" · ")));
    }
    let inner = block.inner(lanes_area);
    block.render(lanes_area, buf);
    let lanes_of = Lanes::of(app, flow.dom);
    let width = inner.width as usize;
    let seq_width = 7;
    let count = lanes_of.count();
    // The marker and seq, a space, and a separator before each lane after the first.
    let lane_space = width.saturating_sub(seq_width + 1 + (count - 1));
    // One domain: half each for it and the hypervisor; more: a lane each, the hypervisor's
    // (in the middle) taking what the division leaves.
    let mut widths = vec![lane_space / count; count];
    widths[1] = lane_space - widths[0] * (count - 1);
    let name_of = |dom: u16| {
        let label = traplab_abi::event::domain_label(dom);
        app.trace
            .domain_name(dom)
            .map_or(label.clone(), |name| format!("{label} {name}"))
    };
    let mut titles = vec![
        format!("guest {}", name_of(flow.dom)),
        " hypervisor".to_string(),
    ];
    for (position, dom) in lanes_of.others.iter().take(OTHER_LANES).enumerate() {
        let more = lanes_of.others.len() > OTHER_LANES && position == OTHER_LANES - 1;
        titles.push(format!(
            " {}{}",
            name_of(*dom),
            if more { " +" } else { "" }
        ));
    }
    let mut header = format!("{:>seq_width$} ", "seq");
    for (lane, (title, lane_width)) in titles.iter().zip(&widths).enumerate() {
        if lane > 0 {
            header.push('│');
        }
        header.push_str(&fit(title, *lane_width));
    }
    buf.set_line(
        inner.x,
        inner.y,
        &Line::styled(fit(&header, width), theme.header()),
        inner.width,
    );
    let rows = inner.height.saturating_sub(1) as usize;
    let top = app
        .step
        .saturating_sub(rows.saturating_sub(2))
        .min(app.story.steps.len().saturating_sub(rows));
    for (row, index) in (top..app.story.steps.len()).take(rows).enumerate() {
        let step = &app.story.steps[index];
        // What a guest chose (its console's bytes, a store value in an emulate line) is shown
        // printable: raw, a control character would reach the terminal.
        let texts: Vec<String> = lanes(app, step, &lanes_of)
            .into_iter()
            .map(made_printable)
            .collect();
        let seq = match step {
            Step::Event { index, .. } => app
                .trace
                .index_of(*index)
                .map_or(String::new(), |entry| entry.seq.to_string()),
            Step::Handler(_) | Step::Away(_) => "…".into(),
        };
        let marker = if index == app.step { "▶" } else { " " };
        let mut text = format!(
            "{marker}{seq:>width$} {}",
            fit(&texts[0], widths[0]),
            width = seq_width - 1
        );
        for (text_of_lane, lane_width) in texts.iter().zip(&widths).skip(1) {
            text.push_str(&format!(
                "│ {}",
                fit(text_of_lane, lane_width.saturating_sub(1))
            ));
        }
        let style = if index == app.step {
            theme.lit()
        } else if index > app.step {
            theme.dim()
        } else {
            Style::new()
        };
        buf.set_line(
            inner.x,
            inner.y + 1 + row as u16,
            &Line::styled(fit(&text, width), style),
            inner.width,
        );
    }

    let step_title = format!(
        " Step {}/{}: what happens ",
        app.step + 1,
        app.story.steps.len()
    );
    // Only a top border: on a small terminal every line of the sentence counts.
    Paragraph::new(meaning)
        .wrap(Wrap { trim: true })
        .block(Block::new().borders(Borders::TOP).title(step_title))
        .render(meaning_area, buf);

    // The pane: tabs in its title.
    let mut title = vec![Span::raw(" ")];
    for pane in Pane::ALL {
        let style = if pane == app.pane {
            theme.lit()
        } else {
            theme.dim()
        };
        title.push(Span::styled(format!(" {} ", pane.title()), style));
        title.push(Span::raw(" "));
    }
    let inner = Block::bordered().inner(pane_area);
    let lines = match app.pane {
        Pane::Detail => detail_lines(app, theme, inner.width as usize),
        Pane::Registers => register_lines(app, theme, inner.width as usize),
        Pane::Code => code_lines(app, theme),
        Pane::Console => console_lines(app, theme, inner.height as usize),
    };
    let overflow = (lines.len() as u16).saturating_sub(inner.height);
    app.pane_overflow.set(overflow);
    title.push(Span::styled(
        if overflow > 0 {
            "(Tab · J/K scroll) "
        } else {
            "(Tab) "
        },
        theme.dim(),
    ));
    let block = Block::bordered().title(Line::from(title));
    Paragraph::new(lines)
        .scroll((app.pane_scroll.min(overflow), 0))
        .block(block)
        .render(pane_area, buf);
}

fn detail_lines(app: &App, theme: Theme, width: usize) -> Vec<Line<'static>> {
    match app.current_step() {
        Some(Step::Event { event, index }) => match event.as_ref() {
            Ok(event) => {
                let mut rows = explain::fields(event);
                // At the inject: the exception frame the CPU will push, decoded.
                if matches!(event.body, Body::Inject(_))
                    && let Some(frame) = delivered_frame(app)
                {
                    rows.extend(frame.rows());
                }
                let label_width = rows
                    .iter()
                    .map(|(label, _)| label.chars().count())
                    .max()
                    .unwrap_or(0)
                    .min(14);
                rows.into_iter()
                    .map(|(label, value)| {
                        Line::from(vec![
                            Span::styled(format!("{} ", fit(&label, label_width)), theme.key()),
                            Span::raw(fit(&value, width.saturating_sub(label_width + 1))),
                        ])
                    })
                    .collect()
            }
            Err(error) => vec![
                Line::styled(
                    format!("line {}: {}", app.trace.line_number(*index), error.error),
                    theme.warn(),
                ),
                Line::raw(app.trace.raw_line(*index).unwrap_or_default()),
            ],
        },
        Some(Step::Handler(handler)) => {
            let mut lines = vec![Line::raw(format!(
                "the {} handler's own traps: {}",
                handler.name, handler.traps
            ))];
            for (class, count) in &handler.classes {
                lines.push(Line::raw(format!("  {class:<8} ×{count}")));
            }
            for text in &handler.console {
                lines.push(Line::raw(format!("prints “{text}”")));
            }
            lines
        }
        Some(Step::Away(away)) => {
            let label = traplab_abi::event::domain_label;
            let mut lines = vec![Line::raw(format!(
                "{} is switched out for {} events; meanwhile:",
                label(away.dom),
                away.events
            ))];
            for (dom, traps) in &away.ran {
                lines.push(Line::raw(format!("  {:<8} {traps} trap(s)", label(*dom))));
            }
            for (dom, text) in &away.console {
                lines.push(Line::raw(format!("{} prints “{text}”", label(*dom))));
            }
            lines
        }
        None => Vec::new(),
    }
}

/// What the current step tells about a link across domains: a notification's upcall, or
/// the notification that caused an upcall. Empty for other steps.
fn link_note(app: &App) -> String {
    let Some((_, event)) = app.current_event() else {
        return String::new();
    };
    let flows = app.trace.flows();
    let Some(flow) = app.story.flow_at(app.step).and_then(|flow| flows.get(flow)) else {
        return String::new();
    };
    let label = traplab_abi::event::domain_label;
    match &event.body {
        Body::Notify(notify) => match flows.get(flow.woke as usize) {
            Some(woken) if woken.dom == notify.to => format!(
                " Its upcall is flow #{} in {}: w follows it.",
                flow.woke + 1,
                label(woken.dom)
            ),
            _ => String::new(),
        },
        Body::Inject(_) | Body::Bounce(_) => match flows.get(flow.woken_by as usize) {
            Some(sender) => format!(
                " {}'s notification made it pending, in flow #{}: W goes back to it.",
                label(sender.dom),
                flow.woken_by + 1
            ),
            None => String::new(),
        },
        _ => String::new(),
    }
}

/// The exit and resume events of the flow the current step belongs to.
fn exit_and_resume(app: &App) -> (Option<Event>, Option<Event>) {
    let Some(flow) = app
        .story
        .flow_at(app.step)
        .and_then(|flow| app.trace.flows().get(flow))
    else {
        return (None, None);
    };
    let exit = app.trace.event(flow.first as usize).ok();
    let resume = app
        .trace
        .event(flow.last() as usize)
        .ok()
        .filter(|event| matches!(event.body, Body::Resume(_)));
    (exit, resume)
}

/// The events of the flow the current step belongs to, in order.
fn current_flow_events(app: &App) -> Vec<Event> {
    let Some(flow) = app
        .story
        .flow_at(app.step)
        .and_then(|flow| app.trace.flows().get(flow))
    else {
        return Vec::new();
    };
    flow.events()
        .filter_map(|index| app.trace.event(index as usize).ok())
        .collect()
}

/// The frame the CPU pushed for the event the story's delivering flow injected, placed by
/// the handler's IRET when the story has it.
fn delivered_frame(app: &App) -> Option<delivery::Frame> {
    let flows = app.trace.flows();
    let delivering = flows.get(*app.story.flows.first()?)?;
    let events: Vec<Event> = delivering
        .events()
        .filter_map(|index| app.trace.event(index as usize).ok())
        .collect();
    // The returning flow begins with the handler's IRET exit.
    let iret = app
        .story
        .flows
        .get(1)
        .and_then(|&returning| app.trace.event(flows.get(returning)?.first as usize).ok())
        .filter(|event| {
            matches!(&event.body, Body::Exit(exit) if exit.exit_reason() == ExitReason::Iret)
        });
    delivery::frame(&events, iret.as_ref())
}

fn register_lines(app: &App, theme: Theme, width: usize) -> Vec<Line<'static>> {
    let (exit, resume) = exit_and_resume(app);
    let Some(Event {
        body: Body::Exit(exit),
        seq: exit_seq,
        ..
    }) = exit
    else {
        return vec![Line::raw(
            "no exit in this flow: it began when the hypervisor switched its domain in",
        )];
    };
    // After: what the guest's first instruction sees once the flow lets it go on — for a
    // delivery, after the CPU pushed the frame (the resume event is recorded before).
    let in_delivering_flow = app.story.flow_at(app.step) == app.story.flows.first().copied();
    let frame = in_delivering_flow.then(|| delivered_frame(app)).flatten();
    let after = delivery::goes_on(&current_flow_events(app), frame.as_ref());
    let known = |name: &str, value: u64| {
        after
            .as_ref()
            .filter(|after| !after.unknown.contains(&name))
            .map(|_| value)
    };
    let mut rows: Vec<(&str, u64, Option<u64>)> = vec![
        ("rip", exit.rip, after.as_ref().map(|after| after.rip)),
        (
            "rflags",
            exit.rflags,
            after.as_ref().map(|after| after.rflags),
        ),
    ];
    let after_regs = after.as_ref().map(|after| after.regs.named());
    for (position, (name, value)) in exit.regs.named().into_iter().enumerate() {
        let later = after_regs.and_then(|regs| known(name, regs[position].1));
        rows.push((name, value, later));
    }
    for (name, value, later) in [
        ("cr0", exit.cr0, after.as_ref().map(|after| after.cr0)),
        ("cr2", exit.cr2, after.as_ref().map(|after| after.cr2)),
        ("cr3", exit.cr3, after.as_ref().map(|after| after.cr3)),
        ("cr4", exit.cr4, after.as_ref().map(|after| after.cr4)),
        ("efer", exit.efer, after.as_ref().map(|after| after.efer)),
    ] {
        rows.push((name, value, later));
    }
    let value_width = rows
        .iter()
        .map(|(_, a, b)| {
            format!("{a:#x}")
                .len()
                .max(b.map_or(1, |b| format!("{b:#x}").len()))
        })
        .max()
        .unwrap_or(3);
    let cell = 6 + value_width + 3 + value_width + 3;
    let groups = (width / cell).clamp(1, 3);
    let per_group = rows.len().div_ceil(groups);
    let resume_text = match (resume.as_ref().map(|event| event.seq), &frame) {
        (None, _) => "no resume".to_string(),
        (Some(seq), Some(frame)) => {
            format!("the {} handler's start (seq {seq} + delivery)", frame.name)
        }
        (Some(seq), None) => format!("the resume (seq {seq})"),
    };
    let mut lines = vec![Line::styled(
        format!("exit (seq {exit_seq}) → {resume_text}; * changed"),
        theme.dim(),
    )];
    for row in 0..per_group {
        let mut spans = Vec::new();
        for group in 0..groups {
            let Some((name, before, after)) = rows.get(group * per_group + row) else {
                continue;
            };
            let changed = after.is_some_and(|after| after != *before);
            let after_text = after.map_or("·".to_string(), |after| format!("{after:#x}"));
            spans.push(Span::styled(format!("{name:<6}"), theme.key()));
            spans.push(Span::raw(format!(
                "{:>value_width$} → ",
                format!("{before:#x}")
            )));
            spans.push(Span::styled(
                format!(
                    "{after_text:>value_width$}{} ",
                    if changed { "*" } else { " " }
                ),
                if changed {
                    theme.changed()
                } else {
                    Style::new()
                },
            ));
            spans.push(Span::raw("  "));
        }
        lines.push(Line::from(spans));
    }
    for note in after.iter().flat_map(|after| &after.notes) {
        for row in note_rows(note, width) {
            lines.push(Line::styled(row, theme.dim()));
        }
    }
    lines
}

/// A note on registers, `rsp: why`, wrapped at `width` columns, its later rows indented under
/// the words past `rsp: `: the register it is about stays alone on the left. The pane's lines
/// are its rows, so that J/K scroll through every one of them.
fn note_rows(note: &str, width: usize) -> Vec<String> {
    let (label, text) = match note.split_once(": ") {
        // On a pane too narrow for a column under the label, the note wraps as plain text.
        Some((label, text)) if 2 * (label.chars().count() + 2) <= width => {
            (format!("{label}: "), text)
        }
        _ => (String::new(), note),
    };
    let indent = label.chars().count();
    let room = width.saturating_sub(indent).max(1);
    let mut rows: Vec<String> = Vec::new();
    for word in text.split_whitespace() {
        match rows.last_mut() {
            Some(row) if row.chars().count() + 1 + word.chars().count() <= room => {
                row.push(' ');
                row.push_str(word);
            }
            _ => rows.push(word.to_string()),
        }
    }
    rows.into_iter()
        .enumerate()
        .map(|(number, row)| {
            if number == 0 {
                format!("{label}{row}")
            } else {
                format!("{:indent$}{row}", "")
            }
        })
        .collect()
}

/// The address the current step is about, and the domain.
fn step_address(app: &App) -> Option<(u16, u64)> {
    match app.current_step()? {
        Step::Handler(handler) => Some((handler.dom, handler.entry?)),
        Step::Away(_) => None,
        Step::Event { event, .. } => {
            let event = event.as_ref().as_ref().ok()?;
            let dom = event.dom?;
            let address = match &event.body {
                Body::Exit(exit) => exit.rip,
                Body::Inject(inject) => inject.handler?,
                Body::Bounce(bounce) => bounce.handler,
                Body::Resume(resume) => resume.rip,
                Body::Return(ret) => ret.rip,
                _ => match exit_and_resume(app).0?.body {
                    Body::Exit(exit) => exit.rip,
                    _ => return None,
                },
            };
            Some((dom, address))
        }
    }
}

fn code_lines(app: &App, theme: Theme) -> Vec<Line<'static>> {
    let mut lines = Vec::new();
    let (exit, _) = exit_and_resume(app);
    let exit = exit.and_then(|event| match event.body {
        Body::Exit(exit) => Some(exit),
        _ => None,
    });
    // The hypervisor's decision, from its source tree.
    let decision = app.story.flow_at(app.step).and_then(|flow| {
        let flow = app.trace.flows().get(flow)?;
        flow.events()
            .find_map(|index| match app.trace.event(index as usize).ok()?.body {
                Body::Decide(decide) => Some(decide.at.to_string()),
                _ => None,
            })
    });
    if let Some((dom, address)) = step_address(app) {
        let image = app.image(dom);
        let symbol = image
            .and_then(|image| image.describe(address))
            .unwrap_or_else(|| "(no symbol)".into());
        // The guest's own line, not the library function the compiler inlined there.
        let source = image.and_then(|image| image.source(address));
        let place = source
            .as_ref()
            .map(|source| {
                let function = source
                    .function
                    .as_deref()
                    .map(|function| format!(" in {function}"))
                    .unwrap_or_default();
                format!(" — {}:{}{function}", short_path(&source.file), source.line)
            })
            .unwrap_or_default();
        lines.push(Line::styled(
            format!(
                "guest {} at {address:#x}: {symbol}{place}",
                traplab_abi::event::domain_label(dom)
            ),
            theme.header(),
        ));
        if let Some(source) = &source {
            if let Some((_, _, excerpt)) = app.options.source_root.as_deref().and_then(|root| {
                code::source_excerpt(
                    root,
                    &format!("{}:{}", short_path(&source.file), source.line),
                    0,
                )
            }) {
                for (number, text) in excerpt {
                    lines.push(Line::raw(format!("  {number:>4} {}", text.trim_end())));
                }
            }
            if !source.inlined.is_empty() {
                // From the guest's line inwards: what it called, and where that was.
                let chain: Vec<String> = source
                    .inlined
                    .iter()
                    .rev()
                    .map(|frame| {
                        let function = frame.function.as_deref().unwrap_or("?");
                        match (&frame.file, frame.line) {
                            (Some(file), Some(line)) => {
                                format!("{function} ({}:{line})", library_path(file))
                            }
                            _ => function.to_string(),
                        }
                    })
                    .collect();
                lines.push(Line::styled(
                    format!("  inlined there: {}", chain.join(" → ")),
                    theme.dim(),
                ));
            }
        }
        // EFER.LMA clear: the guest runs in legacy (32-bit) mode, and its bytes decode so.
        let long_mode = exit.as_ref().is_none_or(|exit| {
            EferFlags::from_bits_truncate(exit.efer).contains(EferFlags::LONG_MODE_ACTIVE)
        });
        let bitness = if long_mode { 64 } else { 32 };
        let insn: &[u8] = match &exit {
            Some(exit) if exit.rip == address => exit.insn.as_slice(),
            _ => &[],
        };
        let listing = code::around(image, address, insn, bitness, 3, 5);
        if listing.is_empty() {
            lines.push(Line::styled(
                "(no code: the guest's ELF is not here and the exit carries no bytes)",
                theme.dim(),
            ));
        }
        for instruction in listing {
            let here = instruction.address == address;
            let text = format!(
                "{} {:#x}  {:<24} {}",
                if here { "▶" } else { " " },
                instruction.address,
                code::hex_bytes(&instruction.bytes),
                instruction.text
            );
            lines.push(Line::styled(
                text,
                if here { theme.lit() } else { Style::new() },
            ));
        }
        if let Some(exit) = &exit
            && exit.rip == address
            && image
                .and_then(|image| image.code_at(address, exit.insn.as_slice().len()))
                .is_some_and(|bytes| bytes != exit.insn.as_slice())
        {
            lines.push(Line::styled(
                format!(
                    "note: at run time the bytes were {} (the guest changed its code)",
                    code::hex_bytes(exit.insn.as_slice())
                ),
                theme.warn(),
            ));
        }
    }
    if let Some(at) = decision {
        lines.push(Line::styled(
            format!("hypervisor decision at {at}"),
            theme.header(),
        ));
        match app
            .options
            .source_root
            .as_deref()
            .and_then(|root| code::source_excerpt(root, &at, 2))
        {
            Some((_, line, excerpt)) => {
                for (number, text) in excerpt {
                    let here = number == line;
                    lines.push(Line::styled(
                        format!("{} {number:>4} {text}", if here { "▶" } else { " " }),
                        if here { theme.lit() } else { Style::new() },
                    ));
                }
            }
            None => lines.push(Line::styled(
                "(the hypervisor's source tree is not here)",
                theme.dim(),
            )),
        }
    }
    lines
}

/// The console lines printed up to the current step, the latest at the bottom: as many as
/// `height` rows hold. A prompt whose line was finished by then is left out: the finished
/// line repeats it whole.
fn console_lines(app: &App, theme: Theme, height: usize) -> Vec<Line<'static>> {
    let until = app.current_index().unwrap_or(usize::MAX);
    let printed = app
        .console
        .partition_point(|&index| index as usize <= until);
    let finished_by_now = |&(_, finished): &(usize, u32)| finished as usize <= until;
    let replaced: Vec<usize> = app
        .prompts
        .iter()
        .take_while(|(place, _)| *place < printed)
        .filter(|prompt| finished_by_now(prompt))
        .map(|(place, _)| *place)
        .collect();
    let count = printed - replaced.len();
    if count == 0 {
        return vec![Line::styled("(nothing printed yet)", theme.dim())];
    }
    let shown = height.saturating_sub(1).max(1);
    let mut lines = vec![Line::styled(
        format!(
            "{count} line(s) printed up to this step{}",
            if count > shown {
                "; the last ones:"
            } else {
                ":"
            }
        ),
        theme.dim(),
    )];
    let places: Vec<usize> = (0..printed)
        .rev()
        .filter(|place| replaced.binary_search(place).is_err())
        .take(shown)
        .collect();
    for &place in places.iter().rev() {
        if let Ok(Event {
            dom,
            body: Body::Console(line),
            ..
        }) = app.trace.event(app.console[place] as usize)
        {
            let dom = dom.map_or("hv".to_string(), traplab_abi::event::domain_label);
            lines.push(Line::from(vec![
                Span::styled(format!("{dom:<3}| "), theme.key()),
                Span::raw(printable(&line.text).into_owned()),
            ]));
        }
    }
    lines
}

/// A guest symbol without the guests' crate prefix, which every one of them has.
fn short_symbol(symbol: &str) -> String {
    symbol.replace("traplab_guests::", "")
}

/// `core/src/ptr/mod.rs` from `/rustc/<hash>/library/core/src/ptr/mod.rs`.
fn library_path(path: &str) -> &str {
    match path.find("/library/") {
        Some(at) => &path[at + "/library/".len()..],
        None => short_path(path),
    }
}

/// `guests/src/bin/page-fault.rs` from an absolute DWARF path.
fn short_path(path: &str) -> &str {
    for marker in ["/guests/", "/hv/", "/abi/"] {
        if let Some(at) = path.rfind(marker) {
            return &path[at + 1..];
        }
    }
    path
}

fn render_stats(app: &App, theme: Theme, area: Rect, buf: &mut Buffer) {
    let table = app.stats.table();
    let mut widths = [0usize; 10];
    for row in &table {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    // Two spaces between columns when they fit, one on a small terminal.
    let separator = if widths.iter().sum::<usize>() + 2 * 9 + 2 <= area.width as usize {
        "  "
    } else {
        " "
    };
    let format_row = |row: &[String; 10]| -> String {
        row.iter()
            .zip(widths)
            .enumerate()
            .map(|(column, (cell, width))| {
                if column < 2 {
                    format!("{cell:<width$}")
                } else {
                    format!("{cell:>width$}")
                }
            })
            .collect::<Vec<_>>()
            .join(separator)
    };
    let block = Block::bordered().title(format!(
        " Exits per reason: {} exits, hypervisor time from exit to resume ",
        app.stats.exits
    ));
    let inner = block.inner(area);
    block.render(area, buf);
    let mut lines = vec![Line::styled(format_row(&table[0]), theme.header())];
    // The rows that fit under the header and above the total (a blank line and its line):
    // scrolled so that the selected one is among them, as the Flows list is.
    let room = (inner.height as usize).saturating_sub(3).max(1);
    let first = (app.stats_row + 1).saturating_sub(room);
    for (position, row) in table[1..].iter().enumerate().skip(first).take(room) {
        let style = if position == app.stats_row {
            theme.lit()
        } else {
            Style::new()
        };
        lines.push(Line::styled(format_row(row), style));
    }
    lines.push(Line::raw(""));
    lines.push(Line::styled(
        format!(
            "Total {} {} in the hypervisor. ⏎ shows the flows of the selected reason.",
            app.stats.time(Some(app.stats.total_cycles as f64)),
            app.stats.unit()
        ),
        theme.dim(),
    ));
    Paragraph::new(lines).render(inner, buf);
}

const HELP: &[(&str, &str)] = &[
    ("j k ↓ ↑", "next / previous flow"),
    ("h l ← →", "step back / forward one event (Flow screen)"),
    (
        "⏎ Esc",
        "open the flow (a folded run ×N: unfold it) / back to the list",
    ),
    (
        "z",
        "fold / unfold every run of repeated flows (same trap, same RIP)",
    ),
    ("w W", "follow a notification to its upcall / back"),
    ("g G PgDn/Up", "first / last; ten rows on (Flows list)"),
    ("e", "finish: to the return of the handler this step is in"),
    (
        "Tab d r x o",
        "Detail, Registers, Code, Console (what the guests printed)",
    ),
    ("J K", "scroll the Detail/Registers/Code pane"),
    ("/ n N", "search flows, next / previous match"),
    ("f a F", "filter by class, by action, clear"),
    ("1 2 3", "Flows, Flow, Stats (the mouse wheel scrolls)"),
];

/// A replay's keys, and a live run's once QEMU has stopped: the trace is all there is.
const REPLAY_HELP: &[(&str, &str)] = &[
    (
        "b B",
        "break on pf, port:0x3f8, rip:0x200240, sym:NAME…; clear them",
    ),
    ("c", "run forward to the next break"),
    // `replay` reads the rest of a recording quit early, to say all that is wrong with it.
    (
        "q Ctrl-C",
        "quit: any faults of the trace go to stderr (Ctrl-C: 130, at once)",
    ),
];

const LIVE_HELP: &[(&str, &str)] = &[
    (
        "b",
        "break on pf, ioio, port:0x3f8, hypercall:1, rip:0x200240, sym:NAME",
    ),
    ("B", "clear the breaks"),
    ("c", "continue (until a break)"),
    ("s", "step: one event (decide, inject, resume…)"),
    ("t", "run to the next trap (exit)"),
    ("p", "pause (works while a guest spins)"),
    (
        "i",
        "type a line on COM1 (Tab: another domain; ^C ^D go to it)",
    ),
    ("q Ctrl-C", "quit (stops QEMU; Ctrl-C: status 130)"),
];

fn render_help(app: &App, theme: Theme, area: Rect, buf: &mut Buffer) {
    let mut lines = Vec::new();
    for (keys, what) in HELP.iter().chain(if app.controls_qemu() {
        LIVE_HELP
    } else {
        REPLAY_HELP
    }) {
        lines.push(Line::from(vec![
            Span::styled(format!("{keys:<12}"), theme.key()),
            Span::raw(*what),
        ]));
    }
    lines.push(Line::raw(""));
    lines.push(Line::styled("Any key closes this help.", theme.dim()));
    let height = (lines.len() as u16 + 2).min(area.height);
    let width = 84.min(area.width);
    let popup = Rect {
        x: area.x + (area.width - width) / 2,
        y: area.y + (area.height - height) / 2,
        width,
        height,
    };
    Clear.render(popup, buf);
    Paragraph::new(lines)
        .wrap(Wrap { trim: false })
        .block(Block::bordered().title(" Keys "))
        .render(popup, buf);
}
