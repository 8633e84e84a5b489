//! The interactive display: application state and input handling. Drawing
//! is in `view`, the event loop in `event`, terminal set-up and restore in
//! `terminal`.
//!
//! The state is independent of the terminal: tests feed it snapshots and key
//! events and draw it on ratatui's `TestBackend`.

pub mod event;
pub mod items;
pub mod terminal;
pub mod view;

#[cfg(test)]
mod tests;

use std::cell::{Ref, RefCell};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use crossterm::event::{Event, KeyCode, KeyEvent, KeyEventKind, KeyModifiers};

use crate::model::{ConnState, Drops, ProcInfo, Proto, Snapshot};
use crate::names::{Resolver, Services};
use crate::table::{ConnTable, Filter, Row, RowAt};
use items::{Grouping, Item, ItemId, NameMatch, Names, SortKey};

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
    /// The kernel table's capacity (`--max-conns`), named when it is full.
    pub max_conns: u32,
}

/// Looks up a process for the detail pane: the data source's
/// (`DataSource::process_lookup`), or a test's.
pub use crate::platform::ProcLookup;

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
    /// Connections not tracked because the kernel's table is full: shown
    /// in the footer from the first one on, before any other status.
    table_full: Option<String>,
    /// Reverse DNS of remote addresses, shown if `show_dns` (key `n`).
    resolver: Resolver,
    show_dns: bool,
    /// Port names, shown if `show_ports` (key `s`).
    services: Services,
    show_ports: bool,
    /// Pauses so far: a frozen table is a new set of rows.
    pauses: u64,
    /// The lines in display order and the header's numbers, computed when
    /// what they depend on changed (`ViewKey`), not per frame: with
    /// 100,000 connections, filtering, grouping and sorting every frame
    /// made each key press cost tens of milliseconds.
    view: RefCell<Option<View>>,
    /// `--metrics-listen`: fed the table at each snapshot.
    metrics: Option<crate::metrics::Metrics>,
}

/// Where a line's connection is: in the table, or in the paused copy.
#[derive(Clone, Copy, Debug)]
enum RowSrc {
    Table(RowAt),
    Frozen(u32),
}

impl RowSrc {
    /// As [`items::PLACE_BITS`] bits: which list, then the place in it.
    fn pack(self) -> u64 {
        let (list, i) = match self {
            RowSrc::Table(RowAt::Live(i)) => (0, i),
            RowSrc::Table(RowAt::Closed(i)) => (1, i),
            RowSrc::Frozen(i) => (2, i),
        };
        list << 32 | u64::from(i)
    }

    fn unpack(v: u64) -> RowSrc {
        let i = v as u32;
        match v >> 32 {
            0 => RowSrc::Table(RowAt::Live(i)),
            1 => RowSrc::Table(RowAt::Closed(i)),
            _ => RowSrc::Frozen(i),
        }
    }
}

/// A line of the table: a connection, found again through where it is,
/// or a group, which owns its sums and texts.
#[derive(Debug)]
enum Line {
    /// A connection: where its row is (its identity is the row's; a view
    /// is rebuilt whenever the table's rows move). 16 bytes a line: with
    /// the identity copied in, 104, and 21 MB of lines at 200,000
    /// connections.
    Row(RowSrc),
    Group(Box<GroupLine>),
}

/// A group's line, owning its texts.
#[derive(Debug)]
struct GroupLine {
    id: ItemId,
    pid: u32,
    comm: String,
    workload: Option<String>,
    procs: usize,
    conns: usize,
    proto: Option<Proto>,
    local: Option<SocketAddr>,
    remote: Option<SocketAddr>,
    remote_ip: Option<IpAddr>,
    state: Option<ConnState>,
    rx_bps: f64,
    tx_bps: f64,
    rx_bytes: u64,
    tx_bytes: u64,
    rtt_us: Option<u32>,
    retrans: u64,
    closed: bool,
}

impl GroupLine {
    fn of(it: &Item<'_>) -> GroupLine {
        GroupLine {
            id: it.id,
            pid: it.pid,
            comm: it.comm.to_string(),
            workload: it.workload.map(str::to_string),
            procs: it.procs,
            conns: it.conns,
            proto: it.proto,
            local: it.local,
            remote: it.remote,
            remote_ip: it.remote_ip,
            state: it.state,
            rx_bps: it.rx_bps,
            tx_bps: it.tx_bps,
            rx_bytes: it.rx_bytes,
            tx_bytes: it.tx_bytes,
            rtt_us: it.rtt_us,
            retrans: it.retrans,
            closed: it.closed,
        }
    }

    fn item(&self) -> Item<'_> {
        Item {
            id: self.id,
            pid: self.pid,
            comm: &self.comm,
            workload: self.workload.as_deref(),
            procs: self.procs,
            conns: self.conns,
            proto: self.proto,
            local: self.local,
            remote: self.remote,
            remote_ip: self.remote_ip,
            state: self.state,
            rx_bps: self.rx_bps,
            tx_bps: self.tx_bps,
            rx_bytes: self.rx_bytes,
            tx_bytes: self.tx_bytes,
            rtt_us: self.rtt_us,
            retrans: self.retrans,
            closed: self.closed,
            row: None,
            pos: 0,
        }
    }
}

/// What the lines depend on.
#[derive(Clone, Debug, PartialEq)]
struct ViewKey {
    table: u64,
    pauses: Option<u64>,
    sort: SortKey,
    reverse: bool,
    grouping: Grouping,
    filter: String,
    show_dns: bool,
    show_ports: bool,
    /// The resolver's names, while the filter may match them.
    names: u64,
}

/// The table's lines in display order, and the header's numbers.
#[derive(Debug)]
pub struct View {
    key: ViewKey,
    lines: Vec<Line>,
    /// Rows on display before the live filter (`--pid`/`--port` applied).
    rows: usize,
    states: Vec<(&'static str, usize)>,
    /// Sums of the rows' rates (rx, tx).
    bps: (f64, f64),
    /// Whether any line names a workload (else no WORKLOAD column).
    any_workload: bool,
}

impl View {
    pub fn len(&self) -> usize {
        self.lines.len()
    }

    pub fn is_empty(&self) -> bool {
        self.lines.is_empty()
    }
}

impl App {
    pub fn new(settings: Settings, now: Instant) -> App {
        App {
            settings,
            table: {
                let mut t = ConnTable::with_linger(LINGER);
                t.keep_history();
                t
            },
            frozen: None,
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
            proc_lookup: Box::new(|_| ProcInfo::default()),
            status: None,
            table_full: None,
            resolver: Resolver::none(),
            show_dns: false,
            services: Services::builtin(),
            show_ports: false,
            pauses: 0,
            view: RefCell::new(None),
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

    /// Waits up to `timeout` for a DNS lookup to finish, then takes what
    /// finished (tests: no sleep loops). None if none finished; else, as
    /// [`poll_names`](Self::poll_names), whether the display changed.
    pub fn wait_names(&mut self, timeout: Duration) -> Option<bool> {
        let changed = self.resolver.wait(timeout)? && self.show_dns;
        self.dirty |= changed;
        Some(changed)
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

    /// Sets how the detail pane looks up a process (the source's).
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

    /// The footer's warning: the table full first, else the status.
    pub fn status(&self) -> Option<&str> {
        self.table_full.as_deref().or(self.status.as_deref())
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
        let before = (self.table.version(), self.table.drops());
        self.table
            .apply(snap, now, self.settings.interval.as_secs_f64());
        if let Some(m) = self.metrics.as_mut() {
            m.update(&self.table, now);
        }
        let dropped = self.table.drops().conns;
        if dropped > 0 {
            self.table_full = Some(crate::platform::table_full_warning(
                dropped,
                self.settings.max_conns,
            ));
        }
        self.refresh_detail();
        // Redrawn only if what is on screen changed: the rows (their
        // version), the drop counts (the table-full warning says the
        // count), the first snapshot, or the detail
        // pane's ages. Frames that showed nothing new were two fifths of
        // the idle display's CPU after start-up (1.5 ms a snapshot at
        // 200,000 connections).
        self.dirty |= self.snapshots == 1
            || self.detail
            || before != (self.table.version(), self.table.drops());
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
        let (index, len, to_id) = {
            let view = self.view();
            let len = view.len();
            let index = self.resolve(&view);
            let to = (index.unwrap_or(0) as isize)
                .saturating_add(step)
                .clamp(0, len.max(1) as isize - 1) as usize;
            (to, len, self.line_id(&view, to))
        };
        if len == 0 {
            return EventState::Consumed;
        }
        self.selected = to_id;
        self.sel_index = index;
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
                rows: {
                    self.pauses += 1;
                    self.table.rows().cloned().collect()
                },
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
                    .map(|w| crate::escape::untrusted(w.label()).to_lowercase());
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

    /// What the lines depend on, now.
    fn view_key(&self) -> ViewKey {
        ViewKey {
            table: self.table.version(),
            pauses: self.frozen.as_ref().map(|_| self.pauses),
            sort: self.sort,
            reverse: self.reverse,
            grouping: self.grouping,
            filter: self.filter.to_lowercase(),
            show_dns: self.show_dns,
            show_ports: self.show_ports,
            names: if self.filter.is_empty() || !self.show_dns {
                0
            } else {
                self.resolver.generation()
            },
        }
    }

    /// The lines in display order, computed again only if something they
    /// depend on changed since the last call.
    pub fn view(&self) -> Ref<'_, View> {
        let key = self.view_key();
        let stale = self.view.borrow().as_ref().is_none_or(|v| v.key != key);
        if stale {
            let built = self.build_view(key);
            *self.view.borrow_mut() = Some(built);
        }
        Ref::map(self.view.borrow(), |v| match v {
            Some(v) => v,
            None => unreachable!("built just above"),
        })
    }

    /// Rows on display: the live table, or the frozen one while paused;
    /// `--pid`/`--port` applied; each with where it is. With them, how
    /// many rows there are before that filter (room for the view's list).
    fn source_rows(&self) -> (impl Iterator<Item = (RowSrc, &Row)>, usize) {
        let f = &self.settings.filter;
        let (frozen, table) = match &self.frozen {
            Some(fr) => (Some(&fr.rows), None),
            None => (None, Some(&self.table)),
        };
        let most = frozen.map_or(0, Vec::len) + table.map_or(0, ConnTable::len);
        let rows = frozen
            .into_iter()
            .flat_map(|rows| {
                rows.iter()
                    .enumerate()
                    .map(|(i, r)| (RowSrc::Frozen(i as u32), r))
            })
            .chain(
                table
                    .into_iter()
                    .flat_map(|t| t.rows_at().map(|(at, r)| (RowSrc::Table(at), r))),
            )
            .filter(move |(_, r)| f.matches(r));
        (rows, most)
    }

    fn build_view(&self, key: ViewKey) -> View {
        // One list as long as the table (200,000 rows: 3.2 MB), sorted and
        // turned into the lines in place: the display's peak memory is the
        // first snapshot's, and every list made beside the rows raised it.
        let (all, most) = self.source_rows();
        // The filter also finds the names on display.
        let names = NameMatch::new(self.names(), &key.filter);
        let mut tally = StateTally::default();
        let mut bps = (0.0, 0.0);
        let mut shown = 0;
        let mut picked: Vec<(&Row, RowSrc)> = Vec::with_capacity(most);
        for (src, r) in all {
            shown += 1;
            tally.add(r.state);
            bps = (bps.0 + r.rx_bps, bps.1 + r.tx_bps);
            if items::matches(r, &key.filter) || names.matches(r) {
                picked.push((r, src));
            }
        }
        let states = tally.counts();
        let (lines, any_workload) = if key.grouping == Grouping::Connection {
            let any_workload = picked.iter().any(|(r, _)| r.workload.is_some());
            // The rows themselves, sorted in place of items, in the same
            // allocation (16 bytes an element all the way).
            let lines = items::sort_rows(
                picked,
                key.sort,
                key.reverse,
                RowSrc::pack,
                RowSrc::unpack,
                |src| self.row_of(src),
            )
            .map(Line::Row)
            .collect();
            (lines, any_workload)
        } else {
            let (rows, srcs): (Vec<&Row>, Vec<RowSrc>) = picked.into_iter().unzip();
            let mut list = items::build(&rows, key.grouping);
            items::sort(&mut list, key.sort, key.reverse);
            let any_workload = list.iter().any(|it| it.workload.is_some());
            let lines = list
                .iter()
                .map(|it| match it.row {
                    Some(_) => Line::Row(srcs[it.pos as usize]),
                    None => Line::Group(Box::new(GroupLine::of(it))),
                })
                .collect();
            (lines, any_workload)
        };
        View {
            key,
            lines,
            rows: shown,
            states,
            bps,
            any_workload,
        }
    }

    /// The row a connection line shows.
    fn row_of(&self, src: RowSrc) -> Option<&Row> {
        match src {
            RowSrc::Table(at) => self.table.row(at),
            RowSrc::Frozen(i) => self.frozen.as_ref()?.rows.get(i as usize),
        }
    }

    /// What line `i` of `view` shows: a connection or a group.
    fn line_id(&self, view: &View, i: usize) -> Option<ItemId> {
        match view.lines.get(i)? {
            Line::Row(src) => self.row_of(*src).map(|r| ItemId::Conn(r.key, r.id)),
            Line::Group(g) => Some(g.id),
        }
    }

    /// Lines `from..from + len` of `view`, as items.
    fn page<'a>(&'a self, view: &'a View, from: usize, len: usize) -> Vec<Item<'a>> {
        view.lines
            .iter()
            .skip(from)
            .take(len)
            .filter_map(|l| match l {
                Line::Row(src) => self.row_of(*src).map(Item::of_row),
                Line::Group(g) => Some(g.item()),
            })
            .collect()
    }

    /// Index of the selected line in `view`, falling back to the same
    /// position when it left. The common case (it did not move) costs one
    /// comparison.
    fn resolve(&self, view: &View) -> Option<usize> {
        if view.is_empty() {
            return None;
        }
        let here = self.sel_index.min(view.len() - 1);
        match self.selected {
            Some(id) if self.line_id(view, here) == Some(id) => Some(here),
            Some(id) => (0..view.len())
                .find(|&i| self.line_id(view, i) == Some(id))
                .or(Some(here)),
            None => Some(here),
        }
    }

    /// Where the selection and the scroll offset settle for a table
    /// `height` lines high showing `view`.
    fn settle(&self, view: &View, height: usize) -> Settled {
        let page = height.max(1);
        let index = self.resolve(view);
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
            id: index.and_then(|i| self.line_id(view, i)),
            offset: offset.min(view.len().saturating_sub(page)),
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
        let view = self.view();
        self.resolve(&view).and_then(|i| self.line_id(&view, i))
    }

    /// The selected connection (connection view only).
    fn selected_row(&self) -> Option<&Row> {
        let ItemId::Conn(key, id) = self.selected? else {
            return None;
        };
        let view = self.view();
        let i = self.resolve(&view)?;
        match view.lines.get(i) {
            Some(Line::Row(src)) => {
                let src = *src;
                drop(view);
                self.row_of(src).filter(|r| r.key == key && r.id == id)
            }
            _ => None,
        }
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

/// Rows counted by state.
#[derive(Default)]
struct StateTally(Vec<(ConnState, usize)>);

impl StateTally {
    fn add(&mut self, state: ConnState) {
        // A handful of distinct states: a linear scan beats hashing rows.
        match self.0.iter_mut().find(|(s, _)| *s == state) {
            Some((_, n)) => *n += 1,
            None => self.0.push((state, 1)),
        }
    }

    /// The counts, most common first (ties by name).
    fn counts(self) -> Vec<(&'static str, usize)> {
        let mut v: Vec<(&'static str, usize)> = self
            .0
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
}
