//! The interactive display: application state and input handling. Drawing
//! is in `view`, the event loop in `event`, terminal set-up and restore in
//! `terminal`.
//!
//! The state is independent of the terminal: tests feed it snapshots and key
//! events and draw it on ratatui's `TestBackend`.

pub mod event;
pub mod history;
pub mod items;
pub mod process;
pub mod terminal;
pub mod view;

#[cfg(test)]
mod tests;

use std::time::{Duration, Instant};

use crossterm::event::{Event, KeyCode, KeyEvent, KeyEventKind, KeyModifiers};

use crate::model::{ConnState, Drops, Snapshot};
use crate::names::{Resolver, Services};
use crate::table::{ConnTable, Filter, Row};
use history::History;
use items::{Grouping, Item, ItemId, NameMatch, Names, SortKey};
use process::ProcInfo;

/// How long a closed connection stays on screen, dimmed.
pub const LINGER: Duration = Duration::from_secs(5);

/// Whether an input handler used the event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventState {
    Consumed,
    NotConsumed,
}

/// Fixed for the session: from the command line and the data source.
#[derive(Clone, Debug)]
pub struct Settings {
    /// The data source's mechanism (`DataSource::hooks`).
    pub hooks: String,
    pub interval: Duration,
    /// Rates in bits per second.
    pub bits: bool,
    /// `--pid` / `--port`.
    pub filter: Filter,
    /// What the source cannot show, for the header (`DataSource::notice`).
    pub notice: Option<String>,
}

/// Looks up a process for the detail pane (tests replace /proc).
pub type ProcLookup = Box<dyn Fn(u32) -> ProcInfo>;

/// The table as it was when the user paused.
#[derive(Debug)]
struct Frozen {
    rows: Vec<Row>,
    drops: Drops,
    totals: (u64, u64),
}

pub struct App {
    settings: Settings,
    table: ConnTable,
    frozen: Option<Frozen>,
    history: History,
    sort: SortKey,
    reverse: bool,
    /// Live filter text, as typed.
    filter: String,
    editing_filter: bool,
    help: bool,
    detail: bool,
    /// The process shown in the detail pane, looked up when it opened.
    detail_proc: Option<(u32, ProcInfo)>,
    grouping: Grouping,
    /// The selected line, followed across refreshes by identity.
    selected: Option<ItemId>,
    /// Its position last time, used when it leaves.
    sel_index: usize,
    /// First line shown, and lines that fit (from the last frame).
    offset: usize,
    page: usize,
    /// Time of the latest snapshot or tick.
    now: Instant,
    /// Snapshots received (0: still waiting for the first).
    snapshots: u64,
    quit: bool,
    dirty: bool,
    proc_lookup: ProcLookup,
    /// A non-fatal problem to show in the footer (e.g. the log cannot be written).
    status: Option<String>,
    /// Reverse DNS of remote addresses, shown if `show_dns` (key `n`).
    resolver: Resolver,
    show_dns: bool,
    /// Port names, shown if `show_ports` (key `s`).
    services: Services,
    show_ports: bool,
    /// `--metrics-listen`: fed the table at each snapshot.
    metrics: Option<crate::metrics::Metrics>,
}

impl App {
    pub fn new(settings: Settings, now: Instant) -> App {
        App {
            settings,
            table: ConnTable::with_linger(LINGER),
            frozen: None,
            history: History::default(),
            sort: SortKey::default(),
            reverse: false,
            filter: String::new(),
            editing_filter: false,
            help: false,
            detail: false,
            detail_proc: None,
            grouping: Grouping::default(),
            selected: None,
            sel_index: 0,
            offset: 0,
            page: 1,
            now,
            snapshots: 0,
            quit: false,
            dirty: true,
            proc_lookup: Box::new(process::lookup),
            status: None,
            resolver: Resolver::none(),
            show_dns: false,
            services: Services::builtin(),
            show_ports: false,
            metrics: None,
        }
    }

    /// Feeds `metrics` the table after each snapshot (paused or not).
    pub fn with_metrics(mut self, metrics: Option<crate::metrics::Metrics>) -> App {
        self.metrics = metrics;
        self
    }

    /// Replaces the reverse DNS resolver (by default none: nothing is
    /// looked up; the interactive display passes the system's).
    pub fn with_resolver(mut self, resolver: Resolver) -> App {
        self.resolver = resolver;
        self
    }

    /// Replaces the port names (by default the built-in table).
    pub fn with_services(mut self, services: Services) -> App {
        self.services = services;
        self
    }

    /// Whether host names (reverse DNS) and port names are shown; both off
    /// by default, toggled by `n` and `s`.
    pub fn show_names(mut self, dns: bool, ports: bool) -> App {
        self.show_dns = dns;
        self.show_ports = ports;
        self.dirty = true;
        self
    }

    /// Collects finished DNS lookups without blocking (the event loop calls
    /// it every render tick); true, and a redraw due, if a shown name changed.
    pub fn poll_names(&mut self) -> bool {
        let changed = self.resolver.poll() && self.show_dns;
        self.dirty |= changed;
        changed
    }

    /// DNS lookups queued or running.
    pub fn names_pending(&self) -> usize {
        self.resolver.pending()
    }

    /// The names on display (None: off).
    fn names(&self) -> Names<'_> {
        Names {
            hosts: self.show_dns.then_some(&self.resolver),
            services: self.show_ports.then_some(&self.services),
        }
    }

    /// Asks for the names of `ips` (the remote hosts on screen) if host
    /// names are shown: cached ones are kept fresh, others looked up.
    fn want_names(&mut self, ips: &[std::net::IpAddr]) {
        if self.show_dns {
            for ip in ips {
                self.resolver.lookup(*ip);
            }
        }
    }

    /// Replaces the /proc lookup of the detail pane.
    pub fn with_proc_lookup(mut self, f: ProcLookup) -> App {
        self.proc_lookup = f;
        self
    }

    pub fn should_quit(&self) -> bool {
        self.quit
    }

    /// True once if something changed since the last call: the event loop
    /// redraws only then.
    pub fn take_dirty(&mut self) -> bool {
        std::mem::take(&mut self.dirty)
    }

    /// Averages rates over the last interval or a rolling window.
    pub fn set_rate_window(&mut self, w: crate::table::RateWindow) {
        self.table.set_window(w);
        self.dirty = true;
    }

    pub fn rate_window(&self) -> crate::table::RateWindow {
        self.table.window()
    }

    /// Shows (or clears) a non-fatal problem in the footer.
    pub fn set_status(&mut self, status: Option<String>) {
        if self.status != status {
            self.status = status;
            self.dirty = true;
        }
    }

    pub fn status(&self) -> Option<&str> {
        self.status.as_deref()
    }

    /// The latest snapshot's rows (closed ones once), `--pid`/`--port`
    /// applied, in output order: what `--log` writes.
    pub fn snapshot_rows(&self) -> Vec<&Row> {
        let f = &self.settings.filter;
        let mut rows: Vec<&Row> = self.table.latest().filter(|r| f.matches(r)).collect();
        crate::output::sort_rows(&mut rows);
        rows
    }

    /// A new snapshot from the data source, taken at `now`. Collected even
    /// while paused; the display then keeps showing the frozen table.
    pub fn on_snapshot(&mut self, snap: Snapshot, now: Instant) {
        self.now = now;
        self.snapshots += 1;
        self.table
            .apply(snap, now, self.settings.interval.as_secs_f64());
        if let Some(m) = self.metrics.as_mut() {
            m.update(&self.table, now);
        }
        self.history.record(self.table.rows());
        self.refresh_detail();
        self.dirty = true;
    }

    /// Time passes without data: closed rows past their linger time leave.
    pub fn on_tick(&mut self, now: Instant) {
        self.now = now;
        let before = self.table.len();
        self.table.expire(now);
        if self.frozen.is_none() && self.table.len() != before {
            self.dirty = true;
        }
    }

    pub fn on_event(&mut self, ev: &Event) -> EventState {
        match ev {
            Event::Key(k) if k.kind != KeyEventKind::Release => self.on_key(*k),
            Event::Resize(..) => {
                self.dirty = true;
                EventState::Consumed
            }
            _ => EventState::NotConsumed,
        }
    }

    pub fn on_key(&mut self, key: KeyEvent) -> EventState {
        let state = self.key(key);
        if state == EventState::Consumed {
            self.dirty = true;
        }
        state
    }

    fn key(&mut self, key: KeyEvent) -> EventState {
        let ctrl = key.modifiers.contains(KeyModifiers::CONTROL);
        if ctrl && matches!(key.code, KeyCode::Char('c')) {
            self.quit = true;
            return EventState::Consumed;
        }
        if self.editing_filter && self.filter_key(key) == EventState::Consumed {
            return EventState::Consumed;
        }
        if self.help {
            match key.code {
                KeyCode::Char('q') => self.quit = true,
                _ => self.help = false,
            }
            return EventState::Consumed;
        }
        if self.move_key(key) == EventState::Consumed {
            return EventState::Consumed;
        }
        match key.code {
            KeyCode::Char('q') => self.quit = true,
            KeyCode::Char('?') | KeyCode::F(1) => self.help = true,
            KeyCode::Char('/') => self.editing_filter = true,
            KeyCode::Esc if self.detail => self.close_detail(),
            KeyCode::Esc if !self.filter.is_empty() => self.filter.clear(),
            KeyCode::Char('p') | KeyCode::Char(' ') => self.toggle_pause(),
            KeyCode::Char('<') | KeyCode::Char(',') => self.set_sort(self.sort.step(-1)),
            KeyCode::Char('>') | KeyCode::Char('.') => self.set_sort(self.sort.step(1)),
            KeyCode::Char('r') => self.reverse = !self.reverse,
            KeyCode::Char('g') => {
                self.grouping = self.grouping.next();
                self.close_detail();
            }
            KeyCode::Char('b') => self.settings.bits = !self.settings.bits,
            KeyCode::Char('n') => self.show_dns = !self.show_dns,
            KeyCode::Char('s') => self.show_ports = !self.show_ports,
            KeyCode::Char('w') => {
                let next = self.table.window().next();
                self.set_rate_window(next);
            }
            KeyCode::Enter if self.detail => self.close_detail(),
            KeyCode::Enter => self.open(),
            _ => return EventState::NotConsumed,
        }
        EventState::Consumed
    }

    /// Keys while typing the filter; navigation keys fall through.
    fn filter_key(&mut self, key: KeyEvent) -> EventState {
        match key.code {
            KeyCode::Char(c) => self.filter.push(c),
            KeyCode::Backspace => {
                self.filter.pop();
            }
            KeyCode::Enter => self.editing_filter = false,
            KeyCode::Esc => {
                self.filter.clear();
                self.editing_filter = false;
            }
            _ => return EventState::NotConsumed,
        }
        self.sel_index = 0;
        self.selected = None;
        EventState::Consumed
    }

    fn move_key(&mut self, key: KeyEvent) -> EventState {
        let page = self.page.max(1) as isize;
        let step: isize = match key.code {
            KeyCode::Up | KeyCode::Char('k') => -1,
            KeyCode::Down | KeyCode::Char('j') => 1,
            KeyCode::PageUp => -page,
            KeyCode::PageDown => page,
            KeyCode::Home => isize::MIN / 2,
            KeyCode::End => isize::MAX / 2,
            _ => return EventState::NotConsumed,
        };
        let (index, len) = {
            let items = self.items();
            (self.resolve(&items), items.len())
        };
        if len == 0 {
            return EventState::Consumed;
        }
        let to = (index.unwrap_or(0) as isize)
            .saturating_add(step)
            .clamp(0, len as isize - 1) as usize;
        let id = self.items().get(to).map(|i| i.id);
        self.selected = id;
        self.sel_index = to;
        self.refresh_detail();
        EventState::Consumed
    }

    fn set_sort(&mut self, key: SortKey) {
        self.sort = key;
        self.reverse = false;
    }

    fn toggle_pause(&mut self) {
        self.frozen = match self.frozen {
            Some(_) => None,
            None => Some(Frozen {
                rows: self.table.rows().cloned().collect(),
                drops: self.table.drops(),
                totals: self.table.totals(),
            }),
        };
    }

    /// Enter: details of a connection; on a group, its connections.
    fn open(&mut self) {
        let Some(id) = self.selected_item_id() else {
            return;
        };
        match id {
            ItemId::Conn(..) => {
                self.detail = true;
                self.detail_proc = None;
                self.refresh_detail();
            }
            ItemId::Process(pid) => {
                self.grouping = Grouping::Connection;
                if pid != 0 {
                    self.filter = pid.to_string();
                }
                self.selected = None;
                self.sel_index = 0;
            }
            ItemId::Remote(ip) => {
                self.grouping = Grouping::Connection;
                self.filter = ip.to_string();
                self.selected = None;
                self.sel_index = 0;
            }
            ItemId::Workload(h) => {
                // Its connections: the filter finds the label (escaped,
                // in lower case, as the filter matches).
                let label = self
                    .table
                    .rows()
                    .find(|r| items::workload_id(r) == h)
                    .and_then(|r| r.workload.as_deref())
                    .map(|w| crate::output::escape::untrusted(w.label()).to_lowercase());
                self.grouping = Grouping::Connection;
                if let Some(label) = label {
                    self.filter = label;
                }
                self.selected = None;
                self.sel_index = 0;
            }
        }
    }

    fn close_detail(&mut self) {
        self.detail = false;
        self.detail_proc = None;
    }

    /// Looks the detail pane's process up again if the selection moved to
    /// another process.
    fn refresh_detail(&mut self) {
        if !self.detail {
            return;
        }
        let pid = self.selected_row().map(|r| r.pid);
        match (pid, &self.detail_proc) {
            (Some(pid), Some((p, _))) if *p == pid => {}
            (Some(pid), _) => self.detail_proc = Some((pid, (self.proc_lookup)(pid))),
            (None, _) => self.detail_proc = None,
        }
    }

    /// Rows on display: the live table, or the frozen one while paused;
    /// `--pid`/`--port` applied.
    fn rows(&self) -> Vec<&Row> {
        let f = &self.settings.filter;
        match &self.frozen {
            Some(fr) => fr.rows.iter().filter(|r| f.matches(r)).collect(),
            None => self.table.rows().filter(|r| f.matches(r)).collect(),
        }
    }

    /// The lines of the table, in display order.
    pub fn items(&self) -> Vec<Item<'_>> {
        let needle = self.filter.to_lowercase();
        // The filter also finds the names on display.
        let names = NameMatch::new(self.names(), &needle);
        let rows: Vec<&Row> = self
            .rows()
            .into_iter()
            .filter(|r| items::matches(r, &needle) || names.matches(r))
            .collect();
        let mut list = items::build(&rows, self.grouping);
        items::sort(&mut list, self.sort, self.reverse);
        list
    }

    /// Index of the selected line in `items`, falling back to the same
    /// position when it left.
    fn resolve(&self, items: &[Item<'_>]) -> Option<usize> {
        if items.is_empty() {
            return None;
        }
        self.selected
            .and_then(|id| items.iter().position(|i| i.id == id))
            .or(Some(self.sel_index.min(items.len() - 1)))
    }

    /// Where the selection and the scroll offset settle for a table
    /// `height` lines high showing `items`.
    fn settle(&self, items: &[Item<'_>], height: usize) -> Settled {
        let page = height.max(1);
        let index = self.resolve(items);
        let mut offset = self.offset;
        if let Some(i) = index {
            if i < offset {
                offset = i;
            } else if i >= offset + page {
                offset = i + 1 - page;
            }
        }
        Settled {
            index,
            id: index.map(|i| items[i].id),
            offset: offset.min(items.len().saturating_sub(page)),
            page,
        }
    }

    /// Keeps what `settle` computed, for the next frame and for keys.
    fn keep(&mut self, s: &Settled) {
        self.page = s.page;
        self.offset = s.offset;
        if let (Some(i), Some(id)) = (s.index, s.id) {
            self.sel_index = i;
            self.selected = Some(id);
        }
    }

    fn selected_item_id(&self) -> Option<ItemId> {
        let items = self.items();
        self.resolve(&items).map(|i| items[i].id)
    }

    /// The selected connection (connection view only).
    fn selected_row(&self) -> Option<&Row> {
        let ItemId::Conn(key, id) = self.selected? else {
            return None;
        };
        self.rows().into_iter().find(|r| r.key == key && r.id == id)
    }

    fn drops(&self) -> Drops {
        self.frozen
            .as_ref()
            .map_or_else(|| self.table.drops(), |f| f.drops)
    }

    fn totals(&self) -> (u64, u64) {
        self.frozen
            .as_ref()
            .map_or_else(|| self.table.totals(), |f| f.totals)
    }

    /// Connections tracked by the app's history (for tests and benchmarks).
    pub fn tracked(&self) -> usize {
        self.history.len()
    }

    /// Draws the whole screen.
    pub fn draw(&mut self, frame: &mut ratatui::Frame<'_>) {
        view::draw(self, frame);
    }
}

/// Selection and scroll position for one frame.
#[derive(Clone, Copy, Debug)]
struct Settled {
    index: Option<usize>,
    id: Option<ItemId>,
    offset: usize,
    page: usize,
}

/// The app's counts by state, most common first (ties by name).
fn state_counts(rows: &[&Row]) -> Vec<(&'static str, usize)> {
    // A handful of distinct states: a linear scan beats hashing 10,000 rows.
    let mut v: Vec<(ConnState, usize)> = Vec::new();
    for r in rows {
        match v.iter_mut().find(|(s, _)| *s == r.state) {
            Some((_, n)) => *n += 1,
            None => v.push((r.state, 1)),
        }
    }
    let mut v: Vec<(&'static str, usize)> = v
        .into_iter()
        // Active UDP flows have no state word of their own ("-" in the table).
        .map(|(s, n)| {
            (
                if s == ConnState::Flow {
                    "UDP"
                } else {
                    s.as_str()
                },
                n,
            )
        })
        .collect();
    v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    v
}
