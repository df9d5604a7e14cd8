//! The screen's state and what each key does to it. Rendering (in `view`) is a pure
//! function of this state; nothing here draws.
//!
//! ```text
//!   Flows ──Enter──► Flow (swimlanes, meaning, detail | registers | code) ──Esc──► Flows
//!     │                └── w / W: along a notification to the upcall it caused, and back
//!     └──────────── 3 / S ──► Stats ──Enter: filter the flows by that class──┘
//! ```

use super::story::{Step, Story};
use ratatui::crossterm::event::{
    KeyCode, KeyEvent, KeyEventKind, KeyModifiers, MouseEvent, MouseEventKind,
};
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use traplab_abi::control::{Break, BreakWatch, Command, Keys};
use traplab_abi::event::Event;
use traplab_abi::event::{Action, Body};
use traplab_tracer::check::StreamFault;
use traplab_tracer::code::GuestImage;
use traplab_tracer::delivery;
use traplab_tracer::flows::{Flow, FlowEnd, Kind};
use traplab_tracer::session::{Control, Finish, Item};
use traplab_tracer::stats::{self, Stats};
use traplab_tracer::store::{Loader, Trace};

/// Which screen is up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Screen {
    /// One row per trap flow.
    Flows,
    /// The selected flow, step by step.
    Flow,
    /// Exits per reason.
    Stats,
}

/// The lower pane of the Flow screen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pane {
    Detail,
    Registers,
    Code,
    /// What the guests printed up to the step shown.
    Console,
}

impl Pane {
    pub const ALL: [Pane; 4] = [Pane::Detail, Pane::Registers, Pane::Code, Pane::Console];

    pub fn title(self) -> &'static str {
        match self {
            Pane::Detail => "Detail",
            Pane::Registers => "Registers",
            Pane::Code => "Code",
            Pane::Console => "Console",
        }
    }
}

/// How many flows in a row that repeat one another ([`Flow::repeats`]) fold into one row.
///
/// [`Flow::repeats`]: traplab_tracer::flows::Flow::repeats
pub const FOLD_AT_LEAST: usize = 3;

/// A row of the flows list: one flow, or a run of flows that repeat one another (a guest
/// printing a line traps once per byte, at the same OUT) folded into one line until ⏎
/// opens it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Row {
    /// Where its first flow is in [`App::visible`].
    pub start: usize,
    /// How many visible flows it stands for: 1, or the length of a folded run.
    pub len: usize,
}

impl Row {
    pub fn is_folded(&self) -> bool {
        self.len > 1
    }
}

/// A line the user is typing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prompt {
    pub purpose: Purpose,
    pub text: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// `/`: find a flow.
    Search,
    /// `b`: break on a trap class, vector, port or hypercall.
    Break,
    /// `i` (live): a line to type on domain `dom`'s COM1; Enter sends it with a newline.
    Type { dom: u16 },
}

/// The keys of a live run that mean nothing in a replay (`s` step, `t` next trap, `p`
/// pause, `i` type on COM1): once QEMU has stopped they say so.
const QEMU_ONLY_KEYS: [char; 4] = ['s', 't', 'p', 'i'];

/// What the hypervisor of a live run is doing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LiveState {
    /// Still booting: no control channel yet.
    Starting,
    Running,
    /// Stopped after the event with this `seq`.
    Stopped(u64),
    /// QEMU has stopped; why, in words.
    Finished(String),
}

/// A live run: the control channel and what we know of the hypervisor.
#[derive(Debug)]
pub struct Live {
    pub control: Option<Control>,
    pub state: LiveState,
    /// The last stop we moved the screen to (so a stop moves it once).
    followed: Option<u64>,
    /// The break `e` (finish) set at the return address, taken away at the next stop.
    finishing: Option<Break>,
    /// The stop we told the hypervisor to go on from (continue, step, `e`): until it has
    /// taken the command, its status still says it is stopped there, and that is no new
    /// stop (a loaded machine makes the wait long enough to see).
    resumed_from: Option<u64>,
    /// Where gdb attaches (`traplab run --gdb`: `gdb d1: target remote :2159`): in the title
    /// with the run's state, which a narrow terminal keeps when it cuts the lab's name.
    pub gdb: Option<String>,
}

/// How the app is set up (tests turn off what depends on files outside the recording).
#[derive(Debug, Clone)]
pub struct Options {
    /// Colours (off with `NO_COLOR`).
    pub color: bool,
    /// Read the guests' ELF files (symbols, source lines, code around RIP).
    pub guest_images: bool,
    /// Where the hypervisor's source tree is, for `file:line` of decisions.
    pub source_root: Option<PathBuf>,
}

impl Options {
    /// For a student's terminal: colours unless `NO_COLOR`, the guests and the sources of
    /// the traplab tree it runs in (`traplab_labs::tree`).
    pub fn from_environment() -> Options {
        let no_color = std::env::var_os("NO_COLOR").is_some_and(|value| !value.is_empty());
        let root = traplab_labs::tree::tree().root.clone();
        Options {
            color: !no_color,
            guest_images: true,
            source_root: root.join("hv").is_dir().then_some(root),
        }
    }
}

/// A prompt whose line no later `console` event of its domain has finished ([`App::prompts`]).
pub const NOT_FINISHED: u32 = u32::MAX;

/// Everything the screen shows.
pub struct App {
    pub trace: Trace,
    pub options: Options,
    pub screen: Screen,
    pub pane: Pane,
    pub help: bool,
    /// The flow numbers that pass the filters, in order.
    pub visible: Vec<u32>,
    /// The rows of the list: `visible`, with runs of repeated flows folded.
    pub rows: Vec<Row>,
    /// Fold runs of repeated flows (`z` turns it off and on).
    pub folding: bool,
    /// The runs the user opened, by their first flow's number.
    unfolded: HashSet<u32>,
    /// Position in `visible`.
    pub selected: usize,
    /// The selected flow's story and the step shown.
    pub story: Story,
    pub step: usize,
    /// Lines the lower pane is scrolled by (`J`/`K`); back to 0 at every step.
    pub pane_scroll: u16,
    /// How many lines the lower pane could be scrolled by when it was last drawn: `J` goes
    /// no further, so that `K` answers at once.
    pub pane_overflow: std::cell::Cell<u16>,
    pub class_filter: Option<&'static str>,
    pub action_filter: Option<Action>,
    /// The last search, for `n`/`N`.
    pub search: Option<String>,
    pub prompt: Option<Prompt>,
    /// One line for the status bar (a search that found nothing, a bad break).
    pub message: Option<String>,
    /// The live trace ring could not be read on (`Item::Broken`): the title says so for the
    /// rest of the run, whatever key comes (the status bar's message goes at the next one).
    pub ring_fault: Option<String>,
    /// Breakpoints, as the user typed them and as they match: a live run's hypervisor
    /// stops at them (`c`), a replay runs to them (`c` too).
    pub breaks: Vec<(String, Break)>,
    pub stats: Stats,
    pub stats_row: usize,
    pub live: Option<Live>,
    /// A recording still loading: the screen shows what is in and takes more each tick.
    pub loader: Option<Loader>,
    /// The `console` events of the trace, by event number, in order (the Console pane
    /// parses the few it shows).
    pub console: Vec<u32>,
    /// The prompts among them (lines shown before their newline): each one's place in
    /// `console`, and the event of the line that finished it ([`NOT_FINISHED`] until then),
    /// from which on the pane shows that line in its place.
    pub prompts: Vec<(usize, u32)>,
    /// Each domain's prompt whose line is not finished yet: its place in `prompts`.
    open_prompts: HashMap<Option<u16>, usize>,
    /// Guest images by domain (`None`: not there, or not read).
    images: HashMap<u16, Option<Rc<GuestImage>>>,
    /// The domains whose ELF file here is another build than the one the recording ran
    /// (`GuestImage::ran_in`): their images are left out, and a `sym:` break says why.
    other_builds: Vec<u16>,
    /// How many flows the filters and statistics have seen.
    seen_flows: usize,
    /// How many events they have seen (nothing to do while it stays the same).
    seen_events: usize,
    pub quit: bool,
    /// Ctrl-C ended it (a key in the terminal's raw mode, not a signal): the command says
    /// so in its status (130), as for a SIGINT.
    pub interrupted: bool,
}

impl App {
    pub fn new(trace: Trace, options: Options) -> App {
        let mut app = App {
            stats: stats::compute(&[], None),
            trace,
            options,
            screen: Screen::Flows,
            pane: Pane::Detail,
            help: false,
            visible: Vec::new(),
            rows: Vec::new(),
            folding: true,
            unfolded: HashSet::new(),
            selected: 0,
            story: Story::default(),
            step: 0,
            pane_scroll: 0,
            pane_overflow: std::cell::Cell::new(0),
            class_filter: None,
            action_filter: None,
            search: None,
            prompt: None,
            message: None,
            ring_fault: None,
            breaks: Vec::new(),
            stats_row: 0,
            live: None,
            loader: None,
            console: Vec::new(),
            prompts: Vec::new(),
            open_prompts: HashMap::new(),
            images: HashMap::new(),
            other_builds: Vec::new(),
            seen_flows: 0,
            seen_events: 0,
            quit: false,
            interrupted: false,
        };
        app.refresh();
        app.select(0);
        app
    }

    /// A recording that is still loading ([`Trace::start_loading`]): [`App::load_more`]
    /// takes in the rest.
    pub fn loading(trace: Trace, loader: Loader, options: Options) -> App {
        let mut app = App::new(trace, options);
        app.loader = Some(loader);
        app
    }

    /// Load more of the recording, for about `budget`; `true` when anything came.
    pub fn load_more(&mut self, budget: std::time::Duration) -> bool {
        let Some(loader) = self.loader.as_mut() else {
            return false;
        };
        let done = match loader.load(&mut self.trace, Some(budget)) {
            Ok(done) => done,
            Err(error) => {
                self.message = Some(format!("reading the recording failed: {error}"));
                true
            }
        };
        if done {
            self.loader = None;
        }
        let (step, selected) = (self.step, self.selected);
        self.refresh();
        if selected == 0 && self.story.steps.is_empty() {
            self.select(0);
        } else {
            self.step = step;
        }
        true
    }

    /// A live run's app: the trace grows with [`App::take_item`].
    pub fn live(name: &str, options: Options) -> App {
        let mut app = App::new(Trace::live(name), options);
        app.live = Some(Live {
            control: None,
            state: LiveState::Starting,
            followed: None,
            finishing: None,
            resumed_from: None,
            gdb: None,
        });
        app
    }

    /// The programs a live run's domains will run, by domain, known before the domains are
    /// created: a `sym:` break typed at the first stop, after the boot, finds its symbols.
    pub fn expect_programs<'a>(&mut self, programs: impl IntoIterator<Item = (u16, &'a Path)>) {
        if !self.options.guest_images {
            return;
        }
        for (dom, elf) in programs {
            self.images
                .entry(dom)
                .or_insert_with(|| GuestImage::load(elf).ok().map(Rc::new));
        }
    }

    /// The flow number selected, if any flow is visible.
    pub fn selected_flow(&self) -> Option<usize> {
        self.visible.get(self.selected).map(|&flow| flow as usize)
    }

    /// The guest image of domain `dom`.
    pub fn image(&self, dom: u16) -> Option<&GuestImage> {
        self.images.get(&dom)?.as_deref()
    }

    /// `symbol+offset` of a guest address in domain `dom`.
    pub fn symbol(&self, dom: u16, address: u64) -> Option<String> {
        self.image(dom)?.describe(address)
    }

    /// A `console` event: into the list, and a prompt of its domain before it is finished.
    fn take_console_line(&mut self, index: u32) {
        let Ok(Event {
            dom,
            body: Body::Console(line),
            ..
        }) = self.trace.event(index as usize)
        else {
            return;
        };
        if let Some(prompt) = self.open_prompts.remove(&dom) {
            self.prompts[prompt].1 = index;
        }
        self.console.push(index);
        if line.unfinished {
            self.open_prompts.insert(dom, self.prompts.len());
            self.prompts.push((self.console.len() - 1, NOT_FINISHED));
        }
    }

    /// Take in what grew: new flows into the filters and statistics, new domains' images.
    fn refresh(&mut self) {
        if self.trace.len() == self.seen_events && self.seen_events > 0 {
            return;
        }
        for index in self.seen_events..self.trace.len() {
            if self
                .trace
                .index_of(index)
                .is_some_and(|entry| entry.kind == Kind::Console)
            {
                self.take_console_line(index as u32);
            }
        }
        self.seen_events = self.trace.len();
        let flows = self.trace.flows();
        // The last flow may still be growing (a live run): re-check it.
        let from = self.seen_flows.saturating_sub(1);
        self.visible.retain(|&flow| (flow as usize) < from);
        for number in from..flows.len() {
            if self.passes(number) {
                self.visible.push(number as u32);
            }
        }
        self.seen_flows = flows.len();
        // While a big recording loads, the statistics wait for the whole of it.
        if self.loader.is_none() {
            self.stats = stats::compute(flows, self.trace.tsc_hz());
        }
        self.refold();
        if self.options.guest_images {
            for (dom, name) in self.trace.domains().to_vec() {
                if self.images.contains_key(&dom) {
                    continue;
                }
                let mut image = traplab_labs::recorded_guest_elf(&name)
                    .and_then(|elf| GuestImage::load(&elf).ok());
                // A recording made with another build of the program: its symbols and its
                // code would be the wrong ones (`GuestImage::ran_in`).
                if self.live.is_none()
                    && image
                        .as_ref()
                        .is_some_and(|image| image.ran_in(&self.trace, dom) == Some(false))
                {
                    image = None;
                    self.other_builds.push(dom);
                    self.message = Some(format!(
                        "{} ran another build of {name} than the one here: its symbols and code are left out",
                        traplab_abi::event::domain_label(dom)
                    ));
                }
                self.images.insert(dom, image.map(Rc::new));
            }
        }
    }

    /// Group `visible` into rows: a run of at least [`FOLD_AT_LEAST`] flows that repeat the
    /// run's first is one row, unless the user opened it; every other flow is a row.
    fn refold(&mut self) {
        let flows = self.trace.flows();
        self.rows.clear();
        let mut start = 0;
        while start < self.visible.len() {
            let first = self.visible[start];
            let run_of = &flows[first as usize];
            let mut end = start + 1;
            while end < self.visible.len() && flows[self.visible[end] as usize].repeats(run_of) {
                end += 1;
            }
            let len = end - start;
            if self.folding && len >= FOLD_AT_LEAST && !self.unfolded.contains(&first) {
                self.rows.push(Row { start, len });
            } else {
                self.rows.extend((start..end).map(|position| Row {
                    start: position,
                    len: 1,
                }));
            }
            start = end;
        }
    }

    /// The row that shows position `position` of `visible`.
    pub fn row_of(&self, position: usize) -> usize {
        self.rows
            .partition_point(|row| row.start <= position)
            .saturating_sub(1)
    }

    /// The selected row, if any flow is visible.
    pub fn selected_row(&self) -> Option<Row> {
        self.rows.get(self.row_of(self.selected)).copied()
    }

    /// Open the folded run at row `row`: its flows get a row each.
    fn unfold(&mut self, row: usize) {
        if let Some(run) = self.rows.get(row).filter(|run| run.is_folded()) {
            self.unfolded.insert(self.visible[run.start]);
            self.refold();
        }
    }

    /// New visible flows (the filters changed, or were dropped to show a flow).
    fn set_visible(&mut self, visible: Vec<u32>) {
        self.visible = visible;
        self.refold();
    }

    fn passes(&self, number: usize) -> bool {
        let flow = &self.trace.flows()[number];
        // A class names the flows of its exit and those that delivered it (`#BP`: an INT3's
        // SWINT flow too).
        self.class_filter
            .is_none_or(|class| flow.class() == class || flow.delivered_exception() == Some(class))
            && self.action_filter.is_none_or(|action| {
                flow.first_action == Some(action) || flow.last_action == Some(action)
            })
    }

    /// Recompute the visible flows after a filter changed, keeping the selection near.
    fn refilter(&mut self) {
        let keep = self.selected_flow();
        let visible = (0..self.trace.flows().len())
            .filter(|&number| self.passes(number))
            .map(|n| n as u32)
            .collect();
        self.set_visible(visible);
        let position = keep.map_or(0, |flow| {
            self.visible
                .partition_point(|&visible| (visible as usize) < flow)
        });
        self.select(position);
    }

    /// Select position `position` of the visible flows and start its story. A flow inside a
    /// folded run (a search found it, a step went past its neighbour) opens the run.
    pub fn select(&mut self, position: usize) {
        self.selected = position.min(self.visible.len().saturating_sub(1));
        let row = self.row_of(self.selected);
        if self
            .rows
            .get(row)
            .is_some_and(|run| run.is_folded() && run.start != self.selected)
        {
            self.unfold(row);
        }
        self.rebuild_story();
        self.step = self.story.start;
        self.pane_scroll = 0;
    }

    fn rebuild_story(&mut self) {
        self.story = match self.selected_flow() {
            Some(flow) => Story::of(&self.trace, flow),
            None => Story::default(),
        };
    }

    /// Move the selection by `delta` rows (a folded run is one).
    fn move_selection(&mut self, delta: isize) {
        let row = self
            .row_of(self.selected)
            .saturating_add_signed(delta)
            .min(self.rows.len().saturating_sub(1));
        self.select(self.rows.get(row).map_or(0, |row| row.start));
    }

    /// Select the last row (a folded run at the end stays folded).
    fn select_last_row(&mut self) {
        self.select(self.rows.last().map_or(0, |row| row.start));
    }

    /// One step forward or back; past either end of the story, into the next/previous flow.
    fn move_step(&mut self, forward: bool) {
        self.pane_scroll = 0;
        if forward {
            if self.step + 1 < self.story.steps.len() {
                self.step += 1;
            } else if self.selected + 1 < self.visible.len() {
                self.select(self.selected + 1);
            }
        } else if self.step > 0 {
            self.step -= 1;
        } else if self.selected > 0 {
            self.select(self.selected - 1);
            self.step = self.story.steps.len().saturating_sub(1);
        }
    }

    /// The text a search looks in: `seq class action reason rip symbol`.
    fn row_text(&self, flow: usize) -> String {
        let found = &self.trace.flows()[flow];
        let seq = self
            .trace
            .index_of(found.first as usize)
            .map_or(0, |entry| entry.seq);
        let symbol = self.symbol(found.dom, found.rip).unwrap_or_default();
        format!(
            "{seq} {} {} {}{} {} {:#x} {symbol}",
            traplab_abi::event::domain_label(found.dom),
            found.class(),
            found.action_text(),
            traplab_tracer::diff::links(&self.trace, found),
            found.reason(),
            found.rip
        )
        .to_lowercase()
    }

    /// Select the next (or previous) visible flow whose row contains `query`.
    fn find(&mut self, query: &str, forward: bool) {
        let query = query.to_lowercase();
        let count = self.visible.len();
        for distance in 1..=count {
            let position = if forward {
                (self.selected + distance) % count
            } else {
                (self.selected + count - distance % count) % count
            };
            if self
                .row_text(self.visible[position] as usize)
                .contains(&query)
            {
                self.select(position);
                self.message = None;
                return;
            }
        }
        self.message = Some(format!("no flow matches “{query}”"));
    }

    /// The classes and actions present, most frequent first: what `f` and `a` cycle through
    /// (the exits' classes, then those of flows without an exit: `upcall`, …, then the
    /// exceptions flows delivered that no exit was: `#DF`, an INT3's `#BP`).
    fn classes(&self) -> Vec<&'static str> {
        let mut classes: Vec<&'static str> = self.stats.rows.iter().map(|row| row.class).collect();
        if self.stats.without_exit > 0 {
            for flow in self.trace.flows().iter().filter(|flow| !flow.has_exit()) {
                if !classes.contains(&flow.class()) {
                    classes.push(flow.class());
                }
            }
        }
        // And the exceptions flows delivered that no exit was (#DF, an INT3's #BP).
        for flow in self.trace.flows() {
            if let Some(delivered) = flow.delivered_exception()
                && !classes.contains(&delivered)
            {
                classes.push(delivered);
            }
        }
        classes
    }

    /// Follow a link across domains from the selected story: `forward` from a notification
    /// to the upcall it caused (`w`), else back from an upcall to its notification (`W`).
    /// The screen shows the linked flow at the step that makes the link.
    fn follow_wake(&mut self, forward: bool) {
        let flows = self.trace.flows();
        let linked = self.story.flows.iter().find_map(|&number| {
            let flow = flows.get(number)?;
            let target = if forward { flow.woke } else { flow.woken_by };
            flows.get(target as usize).map(|_| target as usize)
        });
        let Some(target) = linked else {
            self.message = Some(
                if forward {
                    "w: this flow woke no other domain (no notification with an upcall)"
                } else {
                    "W: no other domain's notification caused this flow's upcall"
                }
                .into(),
            );
            return;
        };
        // The step that makes the link: the upcall's delivery, or the notification.
        let wanted = |kind: Kind| match kind {
            Kind::Inject | Kind::Bounce => forward,
            Kind::Notify => !forward,
            _ => false,
        };
        let step_event = flows[target]
            .events()
            .find(|&index| {
                self.trace
                    .index_of(index as usize)
                    .is_some_and(|entry| wanted(entry.kind))
            })
            .map(|index| index as usize);
        self.show_flow(target);
        if let Some(step) = step_event.and_then(|index| self.story.step_of(index)) {
            self.step = step;
        }
        self.screen = Screen::Flow;
    }

    /// Select flow number `flow`, dropping the filters when they hide it.
    fn show_flow(&mut self, flow: usize) {
        let position = match self
            .visible
            .iter()
            .position(|&visible| visible as usize == flow)
        {
            Some(position) => position,
            None => {
                self.class_filter = None;
                self.action_filter = None;
                self.set_visible((0..self.trace.flows().len() as u32).collect());
                flow
            }
        };
        self.select(position);
    }

    fn actions(&self) -> Vec<Action> {
        [
            Action::Emulate,
            Action::Reflect,
            Action::Bounce,
            Action::Forward,
            Action::Kill,
        ]
        .into_iter()
        .filter(|action| {
            self.trace
                .flows()
                .iter()
                .any(|flow| flow.first_action == Some(*action) || flow.last_action == Some(*action))
        })
        .collect()
    }

    fn cycle<T: Copy + PartialEq>(options: &[T], current: Option<T>) -> Option<T> {
        match current.and_then(|current| options.iter().position(|option| *option == current)) {
            None => options.first().copied(),
            Some(at) => options.get(at + 1).copied(),
        }
    }

    /// A key.
    pub fn handle_key(&mut self, key: KeyEvent) {
        if key.kind == KeyEventKind::Release {
            return;
        }
        // Ctrl-C quits, but for the guest's own: while a line is typed to its COM1 it is
        // the guest's (a terminal's interrupt character: the prompt sends it).
        let typing = self
            .prompt
            .as_ref()
            .is_some_and(|prompt| matches!(prompt.purpose, Purpose::Type { .. }));
        if key.code == KeyCode::Char('c')
            && key.modifiers.contains(KeyModifiers::CONTROL)
            && !typing
        {
            self.quit = true;
            self.interrupted = true;
            return;
        }
        if self.prompt.is_some() {
            self.handle_prompt_key(key);
            return;
        }
        if self.help {
            // Any key closes the help; `q` still quits.
            self.help = false;
            if key.code != KeyCode::Char('q') {
                return;
            }
        }
        self.message = None;
        if self.controls_qemu() && self.handle_live_key(key) {
            return;
        }
        match key.code {
            // The keys that controlled QEMU, once it has stopped.
            KeyCode::Char(key) if self.live.is_some() && QEMU_ONLY_KEYS.contains(&key) => {
                self.message = Some(
                    "QEMU has stopped: the run is a recorded trace now (h/l step through a flow; b and c find a break in it)"
                        .into(),
                );
            }
            KeyCode::Char('q') => self.quit = true,
            KeyCode::Char('?') => self.help = true,
            KeyCode::Char('1') => self.screen = Screen::Flows,
            KeyCode::Char('2') => self.screen = Screen::Flow,
            KeyCode::Char('3') | KeyCode::Char('S') => self.screen = Screen::Stats,
            KeyCode::Char('/') => {
                self.prompt = Some(Prompt {
                    purpose: Purpose::Search,
                    text: String::new(),
                })
            }
            KeyCode::Char('n') => {
                if let Some(query) = self.search.clone() {
                    self.find(&query, true);
                }
            }
            KeyCode::Char('N') => {
                if let Some(query) = self.search.clone() {
                    self.find(&query, false);
                }
            }
            KeyCode::Char('f') => {
                self.class_filter = App::cycle(&self.classes(), self.class_filter);
                self.refilter();
            }
            KeyCode::Char('a') => {
                self.action_filter = App::cycle(&self.actions(), self.action_filter);
                self.refilter();
            }
            KeyCode::Char('F') => {
                self.class_filter = None;
                self.action_filter = None;
                self.refilter();
            }
            KeyCode::Tab => {
                let at = Pane::ALL
                    .iter()
                    .position(|pane| *pane == self.pane)
                    .unwrap_or(0);
                self.pane = Pane::ALL[(at + 1) % Pane::ALL.len()];
                if self.screen == Screen::Flows {
                    self.screen = Screen::Flow;
                }
            }
            // A pane by its letter, as Tab, from any screen (Ctrl-D is the list's page down).
            KeyCode::Char(letter @ ('d' | 'r' | 'x' | 'o'))
                if !key
                    .modifiers
                    .intersects(KeyModifiers::CONTROL | KeyModifiers::ALT) =>
            {
                self.pane = match letter {
                    'd' => Pane::Detail,
                    'r' => Pane::Registers,
                    'x' => Pane::Code,
                    _ => Pane::Console,
                };
                if self.screen == Screen::Flows {
                    self.screen = Screen::Flow;
                }
            }
            KeyCode::Char('z') => {
                self.folding = !self.folding;
                self.unfolded.clear();
                self.refold();
            }
            KeyCode::BackTab => {
                let at = Pane::ALL
                    .iter()
                    .position(|pane| *pane == self.pane)
                    .unwrap_or(0);
                self.pane = Pane::ALL[(at + Pane::ALL.len() - 1) % Pane::ALL.len()];
            }
            KeyCode::Char('b') => {
                self.prompt = Some(Prompt {
                    purpose: Purpose::Break,
                    text: String::new(),
                })
            }
            KeyCode::Char('B') => self.breaks.clear(),
            KeyCode::Char('c') => self.run_to_break(),
            KeyCode::Char('e') => self.finish(),
            _ => match self.screen {
                Screen::Flows => self.handle_flows_key(key),
                Screen::Flow => self.handle_flow_key(key),
                Screen::Stats => self.handle_stats_key(key),
            },
        }
    }

    // ---- breaks and finish, in the recorded trace ----

    /// Run forward through the trace, from the step shown, to the next event a break
    /// matches: an exit it matches, or for a code break a resume at its address.
    fn run_to_break(&mut self) {
        if self.breaks.is_empty() {
            self.message = Some(
                "c: no breaks (b sets one: pf, port:0x3f8, rip:0x200240, sym:exception_entries…)"
                    .into(),
            );
            return;
        }
        let from = self.current_index().map_or(0, |index| index + 1);
        // The breaks watch the trace as the hypervisor's controller does; from the middle of
        // a trap, its exit is seen first (a delivery after it may stop a vector break).
        let mut watch = BreakWatch::default();
        if let Some(exit) = self.exit_before(from) {
            watch.see(exit.dom, &exit.body);
        }
        for index in from..self.trace.len() {
            let Some(entry) = self.trace.index_of(index) else {
                break;
            };
            if !matches!(
                entry.kind,
                Kind::Exit | Kind::Resume | Kind::Inject | Kind::Bounce | Kind::Schedule
            ) {
                continue;
            }
            let Ok(event) = self.trace.event(index) else {
                continue;
            };
            let seen = watch.see(event.dom, &event.body);
            let hit = self.breaks.iter().find(|(_, point)| seen.hits(point));
            if let Some((text, _)) = hit {
                self.message = Some(format!("break {text}: seq {}", event.seq));
                self.show_event(index);
                return;
            }
        }
        self.message = Some("c: no break matches from here to the end of the trace".into());
    }

    /// The exit of the trap that event number `index` is in, when that exit comes before it
    /// (a search for a break that starts in the middle of a trap).
    fn exit_before(&self, index: usize) -> Option<Event> {
        let flow = &self.trace.flows()[self.trace.flow_of(index)?];
        let first = flow.first as usize;
        if first >= index || !flow.has_exit() {
            return None;
        }
        self.trace.event(first).ok()
    }

    /// Show event number `index`: its flow, at its step.
    fn show_event(&mut self, index: usize) {
        if let Some(flow) = self.trace.flow_of(index) {
            self.show_flow(flow);
            self.step = self.story.step_of(index).unwrap_or(self.story.start);
            self.screen = Screen::Flow;
        }
    }

    /// The delivery the step shown is inside: the latest flow of the same domain, at or
    /// before the current event, that delivered an event whose handler has not returned
    /// by then (the innermost one, when a handler faults in turn).
    fn enclosing_delivery(&self) -> Option<usize> {
        let flows = self.trace.flows();
        let current = self.current_index()?;
        let here = self.story.flow_at(self.step)?;
        let dom = flows.get(here)?.dom;
        let returns_after = |flow: &Flow| match flows.get(flow.returned_by as usize) {
            Some(returning) => returning.last() as usize > current,
            None => flow.end != FlowEnd::Cut,
        };
        (0..=here).rev().find(|&number| {
            let flow = &flows[number];
            flow.dom == dom
                && flow.first as usize <= current
                && flow.delivered.is_some()
                && returns_after(flow)
        })
    }

    /// `e`, like gdb's `finish`: to the return of the delivery the step shown is inside
    /// (the `return` step when the trace has it; live, the hypervisor runs to the return
    /// address and stops there).
    fn finish(&mut self) {
        let Some(delivering) = self.enclosing_delivery() else {
            let undecided = self
                .story
                .flow_at(self.step)
                .and_then(|flow| self.trace.flows().get(flow))
                .is_some_and(|flow| flow.end == FlowEnd::Open && flow.delivered.is_none());
            self.message = Some(if undecided {
                "e: nothing is delivered in this trap yet: step (s) to its decision first".into()
            } else {
                "e: this step is in no handler the hypervisor delivered to".into()
            });
            return;
        };
        let flows = self.trace.flows();
        if let Some(returning) = flows.get(flows[delivering].returned_by as usize) {
            let ret = returning.events().find(|&index| {
                self.trace
                    .index_of(index as usize)
                    .is_some_and(|entry| entry.kind == Kind::Return)
            });
            if let Some(ret) = ret {
                self.show_event(ret as usize);
                return;
            }
        }
        // Not returned yet: only a live run can go on to it.
        let events: Vec<Event> = flows[delivering]
            .events()
            .filter_map(|index| self.trace.event(index as usize).ok())
            .collect();
        let (Some(address), true) = (delivery::return_address(&events), self.live.is_some()) else {
            self.message = Some("e: the handler does not return in this trace".into());
            return;
        };
        let point = Break::Code {
            start: address,
            end: address + 1,
            dom: Some(flows[delivering].dom),
        };
        if self.send(Command::AddBreak(point)) && self.send(Command::Continue) {
            if let Some(live) = self.live.as_mut() {
                live.finishing = Some(point);
            }
            self.message = Some(format!(
                "e: running to the handler's return, at {address:#x}"
            ));
        }
    }

    fn handle_flows_key(&mut self, key: KeyEvent) {
        match key.code {
            KeyCode::Char('j') | KeyCode::Down => self.move_selection(1),
            KeyCode::Char('k') | KeyCode::Up => self.move_selection(-1),
            KeyCode::PageDown | KeyCode::Char(' ') => self.move_selection(10),
            KeyCode::PageUp => self.move_selection(-10),
            KeyCode::Char('d') if key.modifiers.contains(KeyModifiers::CONTROL) => {
                self.move_selection(10)
            }
            KeyCode::Char('u') if key.modifiers.contains(KeyModifiers::CONTROL) => {
                self.move_selection(-10)
            }
            KeyCode::Char('g') | KeyCode::Home => self.select(0),
            KeyCode::Char('G') | KeyCode::End => self.select_last_row(),
            KeyCode::Enter | KeyCode::Char('l') | KeyCode::Right
                if self.selected_row().is_some_and(|row| row.is_folded()) =>
            {
                self.unfold(self.row_of(self.selected))
            }
            KeyCode::Enter | KeyCode::Char('l') | KeyCode::Right
                if self.selected_flow().is_some() =>
            {
                self.screen = Screen::Flow
            }
            KeyCode::Char('w') => self.follow_wake(true),
            KeyCode::Char('W') => self.follow_wake(false),
            _ => {}
        }
    }

    fn handle_flow_key(&mut self, key: KeyEvent) {
        // Ctrl-D is not `d`: a key with Ctrl or Alt held means nothing here.
        if key
            .modifiers
            .intersects(KeyModifiers::CONTROL | KeyModifiers::ALT)
        {
            return;
        }
        match key.code {
            KeyCode::Char('l') | KeyCode::Right | KeyCode::Char(' ') => self.move_step(true),
            KeyCode::Char('h') | KeyCode::Left | KeyCode::Backspace => self.move_step(false),
            KeyCode::Char('j') | KeyCode::Down | KeyCode::Char(']') => self.move_selection(1),
            KeyCode::Char('k') | KeyCode::Up | KeyCode::Char('[') => self.move_selection(-1),
            KeyCode::Char('g') | KeyCode::Home => self.step = 0,
            KeyCode::Char('G') | KeyCode::End => {
                self.step = self.story.steps.len().saturating_sub(1)
            }
            KeyCode::Char('J') => {
                self.pane_scroll = self
                    .pane_scroll
                    .saturating_add(1)
                    .min(self.pane_overflow.get())
            }
            KeyCode::Char('K') => {
                self.pane_scroll = self
                    .pane_scroll
                    .min(self.pane_overflow.get())
                    .saturating_sub(1)
            }
            KeyCode::Char('w') => self.follow_wake(true),
            KeyCode::Char('W') => self.follow_wake(false),
            KeyCode::Esc | KeyCode::Enter => self.screen = Screen::Flows,
            _ => {}
        }
    }

    fn handle_stats_key(&mut self, key: KeyEvent) {
        let rows = self.stats.rows.len();
        match key.code {
            KeyCode::Char('j') | KeyCode::Down => {
                self.stats_row = (self.stats_row + 1).min(rows.saturating_sub(1))
            }
            KeyCode::Char('k') | KeyCode::Up => self.stats_row = self.stats_row.saturating_sub(1),
            KeyCode::Enter => {
                if let Some(row) = self.stats.rows.get(self.stats_row) {
                    self.class_filter = Some(row.class);
                    self.action_filter = None;
                    self.refilter();
                    self.select(0);
                    self.screen = Screen::Flows;
                }
            }
            KeyCode::Esc => self.screen = Screen::Flows,
            _ => {}
        }
    }

    fn handle_prompt_key(&mut self, key: KeyEvent) {
        let Some(prompt) = self.prompt.as_mut() else {
            return;
        };
        match key.code {
            KeyCode::Esc => self.prompt = None,
            KeyCode::Backspace => {
                prompt.text.pop();
            }
            // Typing: Tab and Shift-Tab move the line to the next or previous domain of the
            // run. In a live run the list follows the latest flow, which is often another
            // domain's than the one the student means to type to.
            KeyCode::Tab | KeyCode::BackTab => {
                if let Purpose::Type { dom } = prompt.purpose {
                    let doms: Vec<u16> = self.trace.domains().iter().map(|(id, _)| *id).collect();
                    let forward = key.code == KeyCode::Tab;
                    prompt.purpose = Purpose::Type {
                        dom: next_domain(&doms, dom, forward),
                    };
                }
            }
            // A line editor's keys: Ctrl-U clears the line, Ctrl-W takes the last word back;
            // any other key with Ctrl or Alt types nothing.
            KeyCode::Char('u') if key.modifiers.contains(KeyModifiers::CONTROL) => {
                prompt.text.clear()
            }
            KeyCode::Char('w') if key.modifiers.contains(KeyModifiers::CONTROL) => {
                // The word starts after the last space: a space may be more than one byte
                // (a no-break space, an input method's wide space).
                let kept = prompt.text.trim_end();
                let start = kept
                    .char_indices()
                    .rfind(|(_, character)| character.is_whitespace())
                    .map_or(0, |(at, space)| at + space.len_utf8());
                prompt.text.truncate(start);
            }
            // Typing to a guest: Ctrl-C, Ctrl-D, Ctrl-Z and Ctrl-\ are a terminal's control
            // characters (interrupt, end of file, suspend, quit: ETX, EOT, SUB, FS), sent at
            // once after what is typed so far, as a terminal sends them; the line stays open.
            KeyCode::Char(letter @ ('c' | 'd' | 'z' | '\\'))
                if key.modifiers.contains(KeyModifiers::CONTROL)
                    && matches!(prompt.purpose, Purpose::Type { .. }) =>
            {
                let Purpose::Type { dom } = prompt.purpose else {
                    return;
                };
                let mut bytes = std::mem::take(&mut prompt.text).into_bytes();
                bytes.push(letter as u8 & 0x1f);
                self.type_keys(dom, &bytes);
            }
            KeyCode::Char(_)
                if key
                    .modifiers
                    .intersects(KeyModifiers::CONTROL | KeyModifiers::ALT) => {}
            KeyCode::Char(character) => prompt.text.push(character),
            KeyCode::Enter => {
                let Some(prompt) = self.prompt.take() else {
                    return;
                };
                if let Purpose::Type { dom } = prompt.purpose {
                    // Typed as it stands, blanks and an empty line included: Enter is the
                    // newline a terminal would send.
                    self.type_keys(dom, format!("{}\n", prompt.text).as_bytes());
                    return;
                }
                let text = prompt.text.trim().to_string();
                if text.is_empty() {
                    return;
                }
                match prompt.purpose {
                    Purpose::Search => {
                        self.search = Some(text.clone());
                        self.find(&text, true);
                    }
                    Purpose::Break => self.add_break(&text),
                    Purpose::Type { .. } => {}
                }
            }
            _ => {}
        }
    }

    /// Mouse: the wheel scrolls the list, the steps or the table.
    pub fn handle_mouse(&mut self, mouse: MouseEvent) {
        let delta: isize = match mouse.kind {
            MouseEventKind::ScrollDown => 1,
            MouseEventKind::ScrollUp => -1,
            _ => return,
        };
        self.help = false;
        match self.screen {
            Screen::Flows => self.move_selection(3 * delta),
            Screen::Flow => self.move_step(delta > 0),
            Screen::Stats => {
                self.stats_row = self
                    .stats_row
                    .saturating_add_signed(delta)
                    .min(self.stats.rows.len().saturating_sub(1))
            }
        }
    }

    // ---- live runs ----

    /// Keys that drive the hypervisor; `true` when the key was one of them.
    /// Is QEMU still running, for the keys that control it? Once it has stopped, `b`, `c`
    /// and the rest work on the trace the run left, as in a replay.
    pub fn controls_qemu(&self) -> bool {
        self.live
            .as_ref()
            .is_some_and(|live| !matches!(live.state, LiveState::Finished(_)))
    }

    /// A live run's keys ([`QEMU_ONLY_KEYS`] among them); `false` for the others.
    fn handle_live_key(&mut self, key: KeyEvent) -> bool {
        let command = match key.code {
            KeyCode::Char('p') => Command::Pause,
            KeyCode::Char('c') => Command::Continue,
            KeyCode::Char('s') => Command::Step,
            KeyCode::Char('t') => Command::NextExit,
            KeyCode::Char('B') => {
                self.breaks.clear();
                Command::ClearBreaks
            }
            KeyCode::Char('i') => {
                self.prompt = Some(Prompt {
                    purpose: Purpose::Type {
                        dom: self.typing_domain(),
                    },
                    text: String::new(),
                });
                return true;
            }
            _ => return false,
        };
        self.send(command);
        true
    }

    /// The domain whose COM1 `i` types on: the selected flow's, else d1 (a kernel's).
    fn typing_domain(&self) -> u16 {
        let flows = self.trace.flows();
        self.selected_flow()
            .and_then(|number| flows.get(number))
            .map(|flow| flow.dom)
            .unwrap_or(1)
    }

    /// Send `bytes` to domain `dom`'s COM1, as keys (`traplab_abi::control::Keys`).
    fn type_keys(&mut self, dom: u16, bytes: &[u8]) {
        for keys in Keys::split(dom, bytes) {
            if !self.send(Command::Input(keys)) {
                return;
            }
        }
        self.message = Some(format!(
            "typed {:?} on {}'s COM1",
            String::from_utf8_lossy(bytes),
            traplab_abi::event::domain_label(dom)
        ));
    }

    /// `sym:NAME` (or `sym:NAME+0xOFF`, one instruction in it, as the Flow pane writes an
    /// address) as the code it names in each domain whose program has it, from the guests'
    /// ELF files: a symbol is one program's, so each break holds its domain.
    fn symbol_breaks(&self, text: &str) -> Result<Vec<(u16, Break)>, String> {
        let (name, offset) = match text.rsplit_once('+') {
            Some((name, offset)) => {
                let offset = traplab_abi::parse_number(offset).ok_or_else(|| {
                    format!("“{text}”: after the + comes an offset, such as 0xe0")
                })?;
                (name.trim(), Some(offset))
            }
            None => (text.trim(), None),
        };
        let mut doms: Vec<u16> = self.images.keys().copied().collect();
        doms.sort_unstable();
        let mut breaks = Vec::new();
        for dom in doms {
            let Some(symbol) = self.image(dom).and_then(|image| image.symbols().find(name)) else {
                continue;
            };
            let size = symbol.size.max(1);
            let (start, end) = match offset {
                None => (symbol.address, symbol.address + size),
                Some(offset) if offset < size => {
                    (symbol.address + offset, symbol.address + offset + 1)
                }
                Some(offset) => {
                    return Err(format!(
                        "“{text}”: {name} is {size:#x} bytes long in d{dom}, {offset:#x} is past its end"
                    ));
                }
            };
            breaks.push((
                dom,
                Break::Code {
                    start,
                    end,
                    dom: Some(dom),
                },
            ));
        }
        if breaks.is_empty() {
            let known = self.images.values().filter(|image| image.is_some()).count();
            let other_builds: Vec<String> = self
                .other_builds
                .iter()
                .map(|&dom| traplab_abi::event::domain_label(dom))
                .collect();
            return Err(match (known, other_builds.is_empty()) {
                (_, false) => format!(
                    "no symbol “{name}” to go by: the ELF files here of {} are other builds than the recording's",
                    other_builds.join(", ")
                ),
                (0, true) => format!(
                    "no symbol “{name}”: no guest's ELF file is read yet (they are, once its domain is created)"
                ),
                _ => format!("no symbol “{name}” in the guests' ELF files"),
            });
        }
        Ok(breaks)
    }

    fn add_break(&mut self, text: &str) {
        let found = match text.split_once(':') {
            Some((kind, name)) if kind.trim().eq_ignore_ascii_case("sym") => {
                self.symbol_breaks(name).map(|breaks| match breaks.as_slice() {
                    [(_, point)] => vec![(text.to_string(), *point)],
                    // The same name in several programs: a break for each, named with its
                    // domain.
                    _ => breaks
                        .into_iter()
                        .map(|(dom, point)| (format!("{text} (d{dom})"), point))
                        .collect(),
                })
            }
            _ => Break::parse(text)
                .map(|point| vec![(text.to_string(), point)])
                .ok_or_else(|| {
                    format!(
                        "“{text}” is not a break: try pf, ud, cpuid, ioio, port:0x3f8, vector:14, hypercall:1, exit:0x7b, rip:0x200240, sym:exception_entries"
                    )
                }),
        };
        let found = match found {
            Ok(found) => found,
            Err(message) => {
                self.message = Some(message);
                return;
            }
        };
        // Live, the hypervisor keeps the breaks (one set while it boots goes to it once it is
        // up: `set_control`); a replay, or a run whose QEMU has stopped, only needs them here.
        let booting = self
            .live
            .as_ref()
            .is_some_and(|live| live.state == LiveState::Starting);
        for (label, point) in found {
            if !self.controls_qemu() || booting || self.send(Command::AddBreak(point)) {
                self.breaks.push((label, point));
            }
        }
    }

    /// Post a command to the hypervisor; `false` (and a message) when it could not be.
    fn send(&mut self, command: Command) -> bool {
        let Some(live) = self.live.as_ref() else {
            return false;
        };
        let Some(control) = live.control.as_ref() else {
            self.message = Some(match &live.state {
                LiveState::Finished(_) => "QEMU has stopped: nothing to control".into(),
                _ => "the hypervisor is not up yet".into(),
            });
            return false;
        };
        match control.send(command) {
            Ok(()) => {
                if matches!(
                    command,
                    Command::Continue | Command::Step | Command::NextExit
                ) && let Some(live) = self.live.as_mut()
                    && let LiveState::Stopped(seq) = live.state
                {
                    live.state = LiveState::Running;
                    live.resumed_from = Some(seq);
                }
                true
            }
            Err(error) => {
                self.message = Some(error.to_string());
                false
            }
        }
    }

    /// Give the app the control channel once the hypervisor is up.
    pub fn set_control(&mut self, control: Control) {
        if let Some(live) = self.live.as_mut() {
            // The breaks set while it booted.
            for (_, found) in &self.breaks {
                if let Err(error) = control.send(Command::AddBreak(*found)) {
                    self.message = Some(format!("a break did not reach the hypervisor: {error}"));
                }
            }
            live.control = Some(control);
            if live.state == LiveState::Starting {
                live.state = LiveState::Running;
            }
        }
    }

    /// Something from the running session.
    pub fn take_item(&mut self, item: Item) {
        match item {
            Item::Event(event) => self.trace.push_event(&event),
            Item::Log(_) => {}
            Item::Broken(message) => {
                self.message = Some(crate::commands::trace_fault(&message));
                self.ring_fault = Some(message);
            }
            Item::Finished(finish) => {
                if let Some(live) = self.live.as_mut() {
                    live.state = LiveState::Finished(describe_finish(&finish));
                    live.control = None;
                    if live.finishing.take().is_some() {
                        self.message = Some("e: QEMU stopped before the handler returned".into());
                    }
                }
            }
        }
    }

    /// After items came: take in the new flows, follow the tail while running, and move to
    /// where the hypervisor stopped when it stops.
    pub fn sync(&mut self) {
        let at_end = self.row_of(self.selected) + 1 >= self.rows.len();
        let before = (self.visible.len(), self.story.steps.len());
        self.refresh();
        let stopped = self
            .live
            .as_ref()
            .and_then(|live| live.control.as_ref())
            .and_then(Control::stopped_after);
        let Some(live) = self.live.as_mut() else {
            return;
        };
        if stopped.is_none() {
            // It has gone on: the next stop it shows is a new one.
            live.resumed_from = None;
        }
        // Stopped where we told it to go on from: it has not taken the command yet.
        let stopped = stopped.filter(|&seq| live.resumed_from != Some(seq));
        if let Some(seq) = stopped
            && !matches!(live.state, LiveState::Finished(_))
        {
            live.state = LiveState::Stopped(seq);
            // `e` reached its stop (or another break came first, as with gdb's finish):
            // its break goes, the user's stay, and the status says which stop this is, once
            // the event it stopped after has come through the reader (the stop is known
            // from the control word first; the hypervisor waits meanwhile).
            let arrived = self.trace.index_of_seq(seq).is_some();
            if let Some(finish) = live.finishing.take_if(|_| arrived) {
                if let Some(control) = live.control.clone() {
                    let _ = control.send(Command::ClearBreaks);
                    for (_, point) in &self.breaks {
                        let _ = control.send(Command::AddBreak(*point));
                    }
                }
                self.message = Some(finish_stop(&self.trace, &finish, seq));
            }
        } else if matches!(live.state, LiveState::Stopped(_)) && stopped.is_none() {
            live.state = LiveState::Running;
        }
        let follow_to = match stopped {
            Some(seq) if live.followed != Some(seq) => {
                self.trace.index_of_seq(seq).map(|index| (seq, index))
            }
            _ => None,
        };
        if let Some((seq, index)) = follow_to {
            // Show the event the hypervisor stopped after: its flow, and the step.
            if let Some(flow) = self.trace.flow_of(index)
                && let Some(live) = self.live.as_mut()
            {
                live.followed = Some(seq);
                let position = self
                    .visible
                    .iter()
                    .position(|&visible| visible as usize == flow);
                let position = position.unwrap_or_else(|| {
                    // A filter hides it: drop the filters rather than hide the stop.
                    self.class_filter = None;
                    self.action_filter = None;
                    self.set_visible((0..self.trace.flows().len() as u32).collect());
                    flow
                });
                self.select(position);
                self.step = self.story.step_of(index).unwrap_or(self.story.start);
                self.screen = Screen::Flow;
            }
            return;
        }
        if (self.visible.len(), self.story.steps.len()) != before {
            let step = self.step;
            if at_end && stopped.is_none() {
                self.select_last_row();
            } else {
                self.rebuild_story();
                self.step = step.min(self.story.steps.len().saturating_sub(1));
            }
        }
    }

    /// The event (number, parsed) at the current step.
    pub fn current_event(&self) -> Option<(usize, &traplab_abi::event::Event)> {
        self.story.event(self.step)
    }

    /// The current step.
    pub fn current_step(&self) -> Option<&Step> {
        self.story.steps.get(self.step)
    }

    /// The event number the current step stands at: its event, or for a folded step (the
    /// handler's run, the others' turn) the event that comes after it.
    pub fn current_index(&self) -> Option<usize> {
        self.story.steps[self.step.min(self.story.steps.len())..]
            .iter()
            .find_map(|step| match step {
                Step::Event { index, .. } => Some(*index),
                Step::Handler(_) | Step::Away(_) => None,
            })
    }
}

/// The domain after `dom` in `doms` (before it, `forward` false), round: where Tab moves the
/// typing prompt. `dom` itself when the run has no other domain (or has not said which yet).
fn next_domain(doms: &[u16], dom: u16, forward: bool) -> u16 {
    let Some(index) = doms.iter().position(|&known| known == dom) else {
        return doms.first().copied().unwrap_or(dom);
    };
    let step = if forward { 1 } else { doms.len() - 1 };
    doms[(index + step) % doms.len()]
}

/// What the title says of what is wrong with the trace itself, if anything: events the
/// hypervisor lost or that are missing, events out of order, the ring broken, or (once the
/// whole trace is in) no end event. Short, in capitals, as the bad-line marker is: a trace
/// with holes explains less than it seems to, and a student must see it on every screen.
pub fn trace_fault_marker(app: &App) -> Option<String> {
    let complete = app.loader.is_none()
        && app
            .live
            .as_ref()
            .is_none_or(|live| matches!(live.state, LiveState::Finished(_)));
    let mut marks: Vec<&str> = Vec::new();
    for fault in app.trace.faults() {
        let mark = match fault {
            StreamFault::Lost { .. } | StreamFault::Gap { .. } => "EVENTS MISSING",
            StreamFault::Backwards { .. } | StreamFault::AfterEnd { .. } => "EVENTS OUT OF ORDER",
            StreamFault::Truncated if complete && app.ring_fault.is_none() => "NO END EVENT",
            StreamFault::Truncated => continue,
        };
        if !marks.contains(&mark) {
            marks.push(mark);
        }
    }
    if app.ring_fault.is_some() {
        marks.push("TRACE RING BROKEN");
    }
    (!marks.is_empty()).then(|| marks.join(", "))
}

/// Where `e` stopped, when the hypervisor stopped after event `seq` while it ran to the
/// handler's return (`finish`, the break at the return address): there, or at another break
/// that came first.
pub fn finish_stop(trace: &Trace, finish: &Break, seq: u64) -> String {
    let event = trace
        .index_of_seq(seq)
        .and_then(|index| trace.event(index).ok());
    let rip = event.as_ref().and_then(|event| match &event.body {
        Body::Exit(exit) => Some(exit.rip),
        Body::Resume(resume) => Some(resume.rip),
        _ => None,
    });
    let dom = event.as_ref().and_then(|event| event.dom);
    let return_address = match finish {
        Break::Code { start, .. } => format!(" ({start:#x})"),
        _ => String::new(),
    };
    match rip {
        Some(rip) if finish.at(dom, rip) => {
            format!("e: stopped at the handler's return, {rip:#x} (seq {seq})")
        }
        _ => format!(
            "e: stopped after seq {seq}, before the handler's return{return_address}: another break came first"
        ),
    }
}

/// How QEMU stopped, in words.
pub fn describe_finish(finish: &Finish) -> String {
    if finish.interrupted {
        return "QEMU stopped (interrupted)".into();
    }
    if finish.timed_out {
        return "QEMU stopped: time limit".into();
    }
    match finish.hv_status {
        Some(traplab_tracer::qemu::HvStatus::Done) => {
            "QEMU stopped: the hypervisor finished".into()
        }
        Some(status) => format!("QEMU stopped: {}", status.explain()),
        None => format!(
            "QEMU died (exit code {:?}, signal {:?})",
            finish.exit_code, finish.signal
        ),
    }
}
