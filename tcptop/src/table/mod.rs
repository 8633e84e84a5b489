//! The connection table: latest counters per connection, and rates computed
//! from counter deltas between two snapshots.

pub mod history;
mod samples;

use std::cell::OnceCell;
use std::hash::BuildHasher;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hashbrown::HashTable;

use crate::model::{
    CompactString, ConnKey, ConnSample, ConnState, Counters, Drops, Snapshot, Workload,
    consume_releasing,
};
use history::{Point, Series};
use samples::Samples;

/// A moment in 8 bytes (an `Instant` takes 16, and a row kept two):
/// nanoseconds since a base well before any moment the process meets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Stamp(std::num::NonZeroU64);

impl Stamp {
    /// The base: up to 2^32 s (136 years) before the first use, as far
    /// back as the platform's clock goes (Linux: any distance; a clock
    /// counting from boot, not before it).
    fn base() -> Instant {
        static BASE: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
        *BASE.get_or_init(|| {
            let now = Instant::now();
            [1u64 << 32, 1 << 24, 1 << 16, 1 << 8]
                .into_iter()
                .find_map(|s| now.checked_sub(Duration::from_secs(s)))
                .unwrap_or(now)
        })
    }

    fn of(t: Instant) -> Stamp {
        let n = u64::try_from(t.saturating_duration_since(Stamp::base()).as_nanos())
            .unwrap_or(u64::MAX);
        Stamp(std::num::NonZeroU64::new(n).unwrap_or(std::num::NonZeroU64::MIN))
    }

    fn instant(self) -> Instant {
        Stamp::base() + Duration::from_nanos(self.0.get())
    }
}

/// One connection as the user sees it.
#[derive(Clone, Debug, PartialEq)]
pub struct Row {
    pub key: ConnKey,
    /// The source's identity of this connection instance (0: not known yet).
    pub id: u64,
    pub pid: u32,
    pub comm: CompactString,
    pub state: ConnState,
    /// Cumulative since first seen.
    pub counters: Counters,
    pub rtt_us: Option<u32>,
    /// What runs the owner (its control group), once known.
    pub workload: Option<Arc<Workload>>,
    /// Whether this end opened the connection (see [`ConnSample::active`]).
    pub active: Option<bool>,
    /// Bytes per second over the table's rate window (the last interval,
    /// or a rolling 2/10/40 s window).
    pub tx_bps: f64,
    pub rx_bps: f64,
    /// When the table first saw this connection ([`Row::first_seen`]).
    first: Stamp,
    /// When the table learnt that it ended ([`Row::closed_at`]).
    closed: Option<Stamp>,
    /// Bytes (tx, rx) at the previous snapshot, for the next rate (the
    /// other counters have no rate: 24 bytes a row less).
    prev: (u64, u64),
    /// Rates over the last interval (tx, rx); `tx_bps`/`rx_bps` hold the
    /// table's chosen window.
    interval_bps: (f64, f64),
    /// The counters where they moved, over the longest window.
    samples: Samples,
    /// The table's snapshot count when a live sample last reported this
    /// row: rows no snapshot reported leave the live map.
    seen: u32,
    /// Lower-case text the live filter searches: built on first use (only
    /// the TUI's filter asks; batch mode never pays for it) and again only
    /// after the fields in it change (formatting it per frame cost ~3 ms at
    /// 10,000 rows).
    search: OnceCell<Box<str>>,
    /// Rates and RTT at each snapshot, for sparklines (tables that keep
    /// history only).
    history: Series,
    /// The table's pass after which this live row stopped changing (0: it
    /// still changes, every pass visits it): see [`ConnTable::apply`].
    settled_at: u32,
    /// Last reported as standing ([`Snapshot::standing`]): a complete
    /// snapshot that leaves it out has not seen it end.
    standing: bool,
}

impl Row {
    /// When the table first saw this connection.
    pub fn first_seen(&self) -> Instant {
        self.first.instant()
    }

    /// When the table learnt that it ended (None while it is alive).
    pub fn closed_at(&self) -> Option<Instant> {
        self.closed.map(Stamp::instant)
    }

    /// A row first seen at `first` (the snapshot's moment, as a stamp made
    /// once per snapshot: 200,000 new rows computed it 200,000 times).
    fn new(s: &ConnSample, first: Stamp) -> Row {
        Row {
            key: s.key,
            id: s.id,
            pid: s.pid,
            comm: s.comm.clone(),
            state: s.state,
            counters: s.counters,
            rtt_us: s.rtt_us,
            workload: s.workload.clone(),
            active: s.active,
            tx_bps: 0.0,
            rx_bps: 0.0,
            first,
            closed: None,
            prev: (0, 0),
            interval_bps: (0.0, 0.0),
            samples: Samples::default(),
            seen: 0,
            search: OnceCell::new(),
            history: Series::default(),
            settled_at: 0,
            standing: false,
        }
    }

    /// One pass of [`ConnTable::apply`] over this row: interval and
    /// windowed rates, a counter sample, a history point; its bytes since
    /// the previous pass added to `totals` (rx, tx). True if a rate moved.
    fn pass(&mut self, p: &Pass, totals: &mut (u64, u64)) -> bool {
        let rates = (self.interval_bps, self.tx_bps, self.rx_bps);
        self.interval_bps = (
            rate(self.counters.tx_bytes, self.prev.0, p.secs),
            rate(self.counters.rx_bytes, self.prev.1, p.secs),
        );
        // A row first seen closed (most rows under churn) needs no
        // history: without one its windowed rate is its interval rate,
        // and it never moves again. It saves an allocation per row.
        if p.samples && (self.closed.is_none() || !self.samples.is_empty()) {
            self.record_sample(p.now);
        }
        self.apply_window(p.window, p.now);
        if let Some(share) = p.history {
            let point = Point {
                rx_bps: self.rx_bps as f32,
                tx_bps: self.tx_bps as f32,
                rtt_us: self.rtt_us.unwrap_or(0),
            };
            self.history.push(point, share);
        }
        let c = (self.counters.tx_bytes, self.counters.rx_bytes);
        totals.0 = totals.0.saturating_add(c.1.saturating_sub(self.prev.1));
        totals.1 = totals.1.saturating_add(c.0.saturating_sub(self.prev.0));
        self.prev = c;
        rates != (self.interval_bps, self.tx_bps, self.rx_bps)
    }

    /// Whether a pass over this row, its counters unchanged, would change
    /// nothing but the length of its history: no rate to fall to zero, no
    /// counter sample to take or drop, one run of the same point in the
    /// history.
    fn settled(&self, samples: bool, history: bool) -> bool {
        // (Zero rates over any window: the interval's are zero too.)
        self.tx_bps == 0.0
            && self.rx_bps == 0.0
            && (self.counters.tx_bytes, self.counters.rx_bytes) == self.prev
            && (!samples || self.samples.is_still())
            && (!history || self.history.is_one_run())
    }

    /// Adds the history points of the passes that skipped this settled row
    /// (up to `pass`, with the share `cap` they had, if the table keeps
    /// history), and marks it as changing again.
    fn wake(&mut self, pass: u32, cap: Option<usize>) {
        if self.settled_at != 0 {
            if let Some(cap) = cap {
                let last = self.history.last();
                self.history
                    .push_n(last, pass.wrapping_sub(self.settled_at), cap);
            }
            self.settled_at = 0;
        }
    }

    /// Records the counters at `now`, if they moved since the last sample:
    /// between two samples they were constant, so an idle connection keeps
    /// one sample instead of one per snapshot (40 at a 1 s interval, ~1 KB
    /// a row, most of a large idle table's memory), and that without an
    /// allocation.
    fn record_sample(&mut self, now: u64) {
        let c = (self.counters.tx_bytes, self.counters.rx_bytes);
        let longest = RateWindow::LONGEST.as_nanos() as u64;
        self.samples.record(now, c, self.prev, longest);
    }

    /// Sets `tx_bps`/`rx_bps` to the average over `w` ending at `now`. A
    /// sample holds from its time until the next one (counters that did not
    /// move are not sampled again): the counters `w` ago are those of the
    /// newest sample at least `w` old, and the rate is over `w`; if no
    /// sample is that old (a younger connection), over the time since the
    /// oldest. With a single sample of now, the interval rate.
    fn apply_window(&mut self, w: RateWindow, now: u64) {
        let (tx, rx) = match w.duration() {
            None => self.interval_bps,
            Some(span) => {
                let c = (self.counters.tx_bytes, self.counters.rx_bytes);
                let base = self.samples.base(now, span, c);
                match base {
                    Some((secs, btx, brx)) if !secs.is_zero() => {
                        let secs = secs.as_secs_f64();
                        (
                            rate(self.counters.tx_bytes, btx, secs),
                            rate(self.counters.rx_bytes, brx, secs),
                        )
                    }
                    _ => self.interval_bps,
                }
            }
        };
        self.tx_bps = tx;
        self.rx_bps = rx;
    }

    /// Process name (escaped), PID, protocol, both endpoints, state and
    /// the owner's control group (path, unit, container, pod), in lower
    /// case: what the live filter matches.
    pub fn search_text(&self) -> &str {
        self.search.get_or_init(|| {
            let mut text = format!(
                "{} {} {} {} {} {}",
                crate::escape::untrusted(&self.comm),
                self.pid,
                self.key.proto.as_str(),
                self.key.local,
                self.key.remote,
                self.state.as_str(),
            );
            if let Some(w) = &self.workload {
                for part in [
                    Some(&w.cgroup),
                    w.unit.as_ref(),
                    w.container.as_ref(),
                    w.pod.as_ref(),
                ]
                .into_iter()
                .flatten()
                {
                    text.push(' ');
                    text.push_str(&crate::escape::untrusted(part));
                }
            }
            text.make_ascii_lowercase();
            text.into_boxed_str()
        })
    }

    pub fn is_closed(&self) -> bool {
        self.state == ConnState::Closed
    }

    /// Takes a newer sample of the same connection. Counters never go
    /// backwards (the kernel side copies socket counters racily). Returns
    /// whether anything the row shows changed.
    fn update(&mut self, s: &ConnSample) -> bool {
        let before = self.counters;
        let c = &mut self.counters;
        let n = s.counters;
        c.tx_bytes = c.tx_bytes.max(n.tx_bytes);
        c.rx_bytes = c.rx_bytes.max(n.rx_bytes);
        c.tx_packets = c.tx_packets.max(n.tx_packets);
        c.rx_packets = c.rx_packets.max(n.rx_packets);
        c.retrans = c.retrans.max(n.retrans);
        if s.id != 0 {
            self.id = s.id;
        }
        let mut changed = self.state != s.state;
        if s.pid != 0 && (s.pid != self.pid || s.comm != self.comm) {
            self.pid = s.pid;
            self.comm.clone_from(&s.comm);
            changed = true;
        }
        self.state = s.state;
        if s.workload.is_some() && s.workload != self.workload {
            self.workload.clone_from(&s.workload);
            changed = true;
        }
        if changed {
            self.search.take();
        }
        let mut shown = changed || self.counters != before;
        if s.active.is_some() && s.active != self.active {
            self.active = s.active;
            shown = true;
        }
        if s.rtt_us.is_some() && s.rtt_us != self.rtt_us {
            self.rtt_us = s.rtt_us;
            shown = true;
        }
        shown
    }

    fn same_instance(&self, s: &ConnSample) -> bool {
        self.id == 0 || s.id == 0 || self.id == s.id
    }
}

/// How rates are averaged (iftop's 2 s / 10 s / 40 s, or the last interval).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum RateWindow {
    #[default]
    Interval,
    Secs2,
    Secs10,
    Secs40,
}

impl RateWindow {
    const LONGEST: Duration = Duration::from_secs(40);

    pub fn duration(self) -> Option<Duration> {
        match self {
            RateWindow::Interval => None,
            RateWindow::Secs2 => Some(Duration::from_secs(2)),
            RateWindow::Secs10 => Some(Duration::from_secs(10)),
            RateWindow::Secs40 => Some(Self::LONGEST),
        }
    }

    /// The next window, for a key that cycles them.
    pub fn next(self) -> RateWindow {
        match self {
            RateWindow::Interval => RateWindow::Secs2,
            RateWindow::Secs2 => RateWindow::Secs10,
            RateWindow::Secs10 => RateWindow::Secs40,
            RateWindow::Secs40 => RateWindow::Interval,
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            RateWindow::Interval => "interval",
            RateWindow::Secs2 => "2s",
            RateWindow::Secs10 => "10s",
            RateWindow::Secs40 => "40s",
        }
    }
}

/// Bytes per second from two cumulative counter readings. A counter that
/// went backwards or a zero-length interval gives 0, never a panic or NaN.
pub fn rate(now: u64, before: u64, secs: f64) -> f64 {
    if secs.is_nan() || secs <= 0.0 {
        return 0.0;
    }
    now.saturating_sub(before) as f64 / secs
}

#[derive(Debug, Default)]
pub struct ConnTable {
    /// Live connections. A row keeps its place until a row leaves (the last
    /// one then takes that place); new rows go at the end. Dense, so the
    /// passes over every row read memory in order.
    live: Vec<Row>,
    /// Where each live row is in `live`, found by its key's hash: only the
    /// position is stored (4 bytes a row, not a second copy of the key).
    index: HashTable<u32>,
    /// Keys are hashed with a per-process random seed: connection tuples
    /// are chosen partly by remote peers.
    hasher: foldhash::fast::RandomState,
    /// Connections that ended: those of the latest snapshot, plus older ones
    /// still within `linger`.
    closed: Vec<Row>,
    /// How long closed rows stay after the snapshot that reported them
    /// (None: for that one snapshot only).
    linger: Option<Duration>,
    drops: Drops,
    last: Option<Instant>,
    /// The first snapshot's time: sample times count from it.
    epoch: Option<Instant>,
    /// Bytes seen since the table started, over all connections (rx, tx).
    totals: (u64, u64),
    window: RateWindow,
    /// Snapshots applied: marks the live rows each one reported.
    generation: u32,
    /// Changes to what `rows` returns (snapshots, expiry, the rate
    /// window): a display caches its sorted lines until this moves.
    version: u64,
    /// No counter samples are kept (rates over the last interval only: a
    /// batch run whose window cannot change).
    no_samples: bool,
    /// Each row keeps a sparkline history (the display's table).
    keep_history: bool,
    /// Beside each live row: whether the next pass visits it (false: it is
    /// settled, see [`apply`](Self::apply)). The same as the row's
    /// `settled_at == 0`, kept apart so that the pass finds the rows to
    /// visit without reading the settled ones.
    visit: Vec<bool>,
    /// The history share of the latest pass (0: none yet).
    share: usize,
    /// The next pass visits every row (what a pass does changed).
    visit_all: bool,
}

/// How many rows ahead [`ConnTable::apply`]'s pass asks for a busy row's
/// allocations' headers, then for the lines they point to (the render
/// bench, 100,000 busy rows: 16-18 ms a snapshot against 20-24 without;
/// from 8/4 to 32/12 rows ahead alike, within this machine's noise).
const PREFETCH_HEADERS: usize = 24;
const PREFETCH_LINES: usize = 8;

/// Asks the processor to bring `x`'s cache line in (nothing elsewhere).
#[inline(always)]
fn prefetch<T>(x: &T) {
    // SAFETY: a prefetch reads nothing a program can see and never
    // faults, whatever the address; SSE is in every x86_64 processor.
    #[cfg(target_arch = "x86_64")]
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(
            std::ptr::from_ref(x).cast::<i8>(),
        );
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = x;
}

/// Asks for a row's side allocation `ring` (a counter-sample ring or the
/// history's runs): its header, or with `deep` its newest element's line.
#[inline(always)]
fn prefetch_ring<T>(ring: Option<&std::collections::VecDeque<T>>, deep: bool) {
    if let Some(ring) = ring {
        if deep {
            if let Some(x) = ring.back() {
                prefetch(x);
            }
        } else {
            prefetch(ring);
        }
    }
}

/// Where [`ConnTable::apply`] is in a snapshot's live samples.
struct Taking {
    /// The row after the last one matched: tried first.
    next: usize,
    /// Whether a row changed or was made.
    moved: bool,
    stamp: Stamp,
    generation: u32,
    /// The passes before this one.
    skipped: u32,
}

/// What one pass of [`ConnTable::apply`] does to each row.
struct Pass {
    /// Seconds since the previous snapshot.
    secs: f64,
    /// The snapshot's time ([`ConnTable::nanos`]).
    now: u64,
    window: RateWindow,
    /// Counter samples are kept (for windowed rates).
    samples: bool,
    /// A history point is added, with this share (the display's table).
    history: Option<usize>,
}

/// Where a row is in the table, to find it again cheaply.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RowAt {
    /// A live row: by its place among the live ones.
    Live(u32),
    /// A closed row: by its place among the closed ones.
    Closed(u32),
}

/// The position of the live row with `key` (hashed to `hash`).
fn find(index: &HashTable<u32>, live: &[Row], hash: u64, key: &ConnKey) -> Option<usize> {
    index
        .find(hash, |&i| {
            live.get(i as usize).is_some_and(|r| r.key == *key)
        })
        .map(|&i| i as usize)
}

impl ConnTable {
    /// Closed connections are shown for one snapshot (batch output).
    pub fn new() -> Self {
        Self::default()
    }

    /// Closed connections stay, with their final counters and zero rates,
    /// until `linger` has passed since the snapshot that reported them (the
    /// interactive display dims them for a few seconds).
    pub fn with_linger(linger: Duration) -> Self {
        ConnTable {
            linger: Some(linger),
            ..Self::default()
        }
    }

    /// The rows of the latest snapshot only: live connections and those that
    /// closed in it (not the ones still lingering from earlier snapshots).
    /// What a log writes, so a closed connection is logged once.
    pub fn latest(&self) -> impl Iterator<Item = &Row> {
        self.live().chain(self.closed_latest())
    }

    /// The live connections.
    pub fn live(&self) -> impl Iterator<Item = &Row> {
        self.live.iter()
    }

    /// The connections that closed in the latest snapshot (not those still
    /// lingering from earlier ones).
    pub fn closed_latest(&self) -> impl Iterator<Item = &Row> {
        let last = self.last.map(Stamp::of);
        self.closed.iter().filter(move |r| r.closed == last)
    }

    /// Applies a snapshot taken at `now`. `nominal_secs` is used as the
    /// rate interval for the first snapshot.
    ///
    /// Connections closed since the previous snapshot are kept for this one
    /// snapshot (or for the linger time), state CLOSED, with final counters;
    /// then they leave. A connection reusing the 4-tuple of a closed one is a
    /// new row.
    pub fn apply(&mut self, snap: Snapshot, now: Instant, nominal_secs: f64) {
        // Whether anything a row shows, or the set of rows, changed: a
        // display sorts again only then (20,000 idle rows: a sort per
        // snapshot was a sixth of the display's CPU).
        let mut moved = !snap.closed.is_empty();
        let secs = match self.last {
            Some(t) => now.saturating_duration_since(t).as_secs_f64(),
            None => nominal_secs,
        };
        self.last = Some(now);
        let now_ns = self.nanos(now);
        let stamp = Stamp::of(now);
        self.drops = snap.drops;
        if self.linger.is_some() {
            self.expire(now);
        } else {
            moved |= !self.closed.is_empty();
            self.closed.clear();
        }

        // Rows are updated where they are, not taken out and put back: with
        // tens of thousands of live connections, rebuilding the table moved
        // every row twice, most of tcptop's CPU (perf, 18,000 idle
        // connections).
        // (0 is never a generation: a settled row's `settled_at` is one.)
        self.generation = self.generation.wrapping_add(1).max(1);
        let generation = self.generation;
        // The passes before this one.
        let skipped = generation.wrapping_sub(1);
        for mut s in snap.closed {
            s.state = ConnState::Closed;
            let hash = self.hasher.hash_one(s.key);
            let mut row = match find(&self.index, &self.live, hash, &s.key) {
                Some(i) if self.live[i].same_instance(&s) => {
                    let mut r = self.remove_live(i, hash);
                    let _ = r.update(&s);
                    r
                }
                // None, or a different instance: that one waits for its
                // own sample.
                _ => Row::new(&s, stamp),
            };
            row.closed = Some(stamp);
            self.closed.push(row);
        }
        let new = (snap.live.len() + snap.standing.len()).saturating_sub(self.live.len());
        self.live.reserve(new);
        {
            let (live, hasher) = (&self.live, &self.hasher);
            self.index
                .reserve(new, |&i| hasher.hash_one(live[i as usize].key));
        }
        // A source reports its connections in much the same order each
        // time (the kernel's map is read bucket by bucket), and rows are
        // in the order they were first met here: the row after the last
        // one matched is tried before any hashing, so a table that did not
        // change is walked in memory order (random lookups into 100,000
        // rows were two thirds of a snapshot's cost).
        //
        // Samples are taken from the end and their memory is given back as
        // the rows grow: the first snapshot of 200,000 connections held
        // 35 MB of samples beside 74 MB of new rows, the peak of tcptop's
        // memory. Rows are met (and made) in reverse report order every
        // time, so the guess above walks them forward all the same.
        //
        // Standing samples first: a sample of the same connection in
        // `live` is newer (the source read it after the start-up walk).
        let mut samples = snap.live;
        let mut standing = snap.standing;
        let mut take = Taking {
            next: 0,
            moved,
            stamp,
            generation,
            skipped,
        };
        // Two loops, one body: a sample moved through a (sample, flag)
        // pair was a copy of 180 bytes more per sample (the render bench's
        // snapshot, 100,000 rows: ~20 ms against ~25).
        consume_releasing(&mut standing, |s| self.take_live(s, true, &mut take));
        consume_releasing(&mut samples, |s| self.take_live(s, false, &mut take));
        moved = take.moved;
        // Rows this snapshot did not report are gone (in a partial one:
        // unchanged, still open; standing rows: until reported closed).
        // From the end: the row that takes a leaving row's place was
        // already looked at.
        if !snap.partial {
            for i in (0..self.live.len()).rev() {
                if self.live[i].seen != generation && !self.live[i].standing {
                    let hash = self.hasher.hash_one(self.live[i].key);
                    self.remove_live(i, hash);
                    moved = true;
                }
            }
        }
        // The pass over the rows: rates, counter samples, history. A live
        // row that stopped changing (zero rates, its samples and history at
        // rest: most of a large idle table) is settled: the passes after
        // skip it, without reading its memory (at 200,000 idle rows the pass
        // read 70 MB a snapshot), and the history points they would have
        // added (the same point again) are added when it changes again or
        // is read ([`history`](Self::history)). Every row is visited when the
        // history share changes.
        let share = history::share(self.len());
        let all = share != self.share || self.visit_all;
        let was = self.keep_history.then_some(self.share);
        self.share = share;
        self.visit_all = false;
        let pass = Pass {
            secs,
            now: now_ns,
            window: self.window,
            samples: !self.no_samples,
            history: self.keep_history.then_some(share),
        };
        let mut totals = self.totals;
        for i in 0..self.live.len() {
            // The rows are walked in memory order (the processor reads
            // ahead), but each busy row's counter samples and history are
            // two allocations elsewhere, a chain of two loads each: asked
            // for ahead of time, in two steps.
            for (ahead, deep) in [(PREFETCH_HEADERS, false), (PREFETCH_LINES, true)] {
                if let (Some(r), Some(&visit)) =
                    (self.live.get(i + ahead), self.visit.get(i + ahead))
                    && (all || visit)
                {
                    r.samples.prefetch(deep);
                    r.history.prefetch(deep);
                }
            }
            let (Some(r), Some(visit)) = (self.live.get_mut(i), self.visit.get_mut(i)) else {
                break;
            };
            if all || *visit {
                r.wake(skipped, was);
                moved |= r.pass(&pass, &mut totals);
                *visit = !r.settled(pass.samples, self.keep_history);
                if !*visit {
                    r.settled_at = generation;
                }
            }
        }
        for r in self.closed.iter_mut() {
            r.wake(skipped, was);
            moved |= r.pass(&pass, &mut totals);
        }
        self.totals = totals;
        if moved {
            self.version += 1;
        }
    }

    /// A row's rates and RTT at each snapshot, oldest first (empty unless
    /// the table keeps history), the points of the passes that skipped it
    /// while it was settled included.
    pub fn history<'a>(&self, row: &'a Row) -> std::borrow::Cow<'a, Series> {
        if !self.keep_history || row.settled_at == 0 || row.settled_at == self.generation {
            return std::borrow::Cow::Borrowed(&row.history);
        }
        let mut h = row.history.clone();
        h.push_n(
            h.last(),
            self.generation.wrapping_sub(row.settled_at),
            self.share,
        );
        std::borrow::Cow::Owned(h)
    }

    /// `t` as nanoseconds since the first snapshot (set on the first call).
    fn nanos(&mut self, t: Instant) -> u64 {
        let epoch = *self.epoch.get_or_insert(t);
        u64::try_from(t.saturating_duration_since(epoch).as_nanos()).unwrap_or(u64::MAX)
    }

    /// One live sample of [`apply`](Self::apply) (`standing`: from
    /// `Snapshot::standing`): its row updated where it is, or made.
    #[inline(always)]
    fn take_live(&mut self, s: &ConnSample, standing: bool, t: &mut Taking) {
        let at = match self.live.get(t.next) {
            Some(r) if r.key == s.key => Some(t.next),
            _ => find(&self.index, &self.live, self.hasher.hash_one(s.key), &s.key),
        };
        match at {
            Some(i) => {
                t.next = i + 1;
                let r = &mut self.live[i];
                let changed = if r.same_instance(s) {
                    r.update(s)
                } else {
                    *r = Row::new(s, t.stamp);
                    true
                };
                if changed {
                    r.wake(t.skipped, self.keep_history.then_some(self.share));
                    self.visit[i] = true;
                    t.moved = true;
                }
                r.seen = t.generation;
                r.standing = standing;
            }
            None => {
                let i = self.live.len();
                let hash = self.hasher.hash_one(s.key);
                let (live, hasher) = (&self.live, &self.hasher);
                self.index
                    .insert_unique(hash, i as u32, |&j| hasher.hash_one(live[j as usize].key));
                let mut r = Row::new(s, t.stamp);
                r.seen = t.generation;
                r.standing = standing;
                self.live.push(r);
                self.visit.push(true);
                t.moved = true;
            }
        }
    }

    /// Takes the live row at `i` (its key hashed to `hash`) out; the last
    /// row takes its place.
    fn remove_live(&mut self, i: usize, hash: u64) -> Row {
        if let Ok(e) = self.index.find_entry(hash, |&j| j as usize == i) {
            e.remove();
        }
        let row = self.live.swap_remove(i);
        self.visit.swap_remove(i);
        if let Some(moved) = self.live.get(i) {
            let last = self.live.len() as u32;
            let hash = self.hasher.hash_one(moved.key);
            if let Some(at) = self.index.find_mut(hash, |&j| j == last) {
                *at = i as u32;
            }
        }
        row
    }

    /// Chooses how rates are averaged, and recomputes them now.
    pub fn set_window(&mut self, w: RateWindow) {
        self.version += 1;
        self.window = w;
        if let Some(now) = self.last {
            let now = self.nanos(now);
            for r in self.live.iter_mut().chain(self.closed.iter_mut()) {
                r.apply_window(w, now);
            }
        }
    }

    pub fn window(&self) -> RateWindow {
        self.window
    }

    /// Removes closed rows whose linger time has passed at `now` (without a
    /// linger time, closed rows leave only at the next snapshot).
    pub fn expire(&mut self, now: Instant) {
        if let Some(linger) = self.linger {
            let before = self.closed.len();
            self.closed.retain(|r| {
                r.closed
                    .is_none_or(|t| now.saturating_duration_since(t.instant()) < linger)
            });
            if self.closed.len() != before {
                self.version += 1;
            }
        }
    }

    /// Rates over the last interval only, for good: no row keeps counter
    /// samples (batch mode with the interval window; the display keeps
    /// them, its window can change).
    pub fn interval_rates_only(&mut self) {
        self.no_samples = true;
        self.window = RateWindow::Interval;
        self.visit_all = true;
    }

    /// Each row keeps a history of its rates and RTT for sparklines, all
    /// rows sharing one memory budget ([`history::BUDGET`]).
    pub fn keep_history(&mut self) {
        self.keep_history = true;
        self.visit_all = true;
    }

    /// Moves with every change to the rows or their rates (not with a
    /// snapshot that changed nothing on display).
    pub fn version(&self) -> u64 {
        self.version
    }

    /// The rows, each with where it is ([`get`](Self::get) finds it again
    /// while `version` has not moved).
    pub fn rows_at(&self) -> impl Iterator<Item = (RowAt, &Row)> {
        self.live
            .iter()
            .enumerate()
            .map(|(i, r)| (RowAt::Live(i as u32), r))
            .chain(
                self.closed
                    .iter()
                    .enumerate()
                    .map(|(i, r)| (RowAt::Closed(i as u32), r)),
            )
    }

    /// The row at `at` (as `rows_at` gave it, while the table's
    /// `version` has not moved).
    pub fn row(&self, at: RowAt) -> Option<&Row> {
        match at {
            RowAt::Live(i) => self.live.get(i as usize),
            RowAt::Closed(i) => self.closed.get(i as usize),
        }
    }

    /// Bytes received and sent over all connections since the table started.
    pub fn totals(&self) -> (u64, u64) {
        self.totals
    }

    /// Live connections, then those closed since the previous snapshot.
    pub fn rows(&self) -> impl Iterator<Item = &Row> {
        self.live.iter().chain(self.closed.iter())
    }

    pub fn len(&self) -> usize {
        self.live.len() + self.closed.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn drops(&self) -> Drops {
        self.drops
    }
}

/// Whether the cgroup `path` is `prefix` or below it, path part by path
/// part (`/system.slice` holds `/system.slice/a.service`, not
/// `/system.slices`); a prefix ending in `/` or naming a part's beginning
/// with `*` is not special: parts are whole.
fn cgroup_has_prefix(path: &str, prefix: &str) -> bool {
    let prefix = prefix.trim_end_matches('/');
    if prefix.is_empty() {
        return true;
    }
    match path.strip_prefix(prefix) {
        Some(rest) => rest.is_empty() || rest.starts_with('/'),
        None => false,
    }
}

/// What the user asked to see.
#[derive(Clone, Debug, Default)]
pub struct Filter {
    pub pids: Vec<u32>,
    pub ports: Vec<u16>,
    /// `-4` / `-6`: only these families (neither set: both).
    pub only_v4: bool,
    pub only_v6: bool,
    /// `--tcp` / `--udp`: only these protocols (neither set: both).
    pub only_tcp: bool,
    pub only_udp: bool,
    /// `--cgroup PREFIX`: only connections whose owner's cgroup path starts
    /// with one of these (a connection whose group is not known yet does
    /// not match).
    pub cgroups: Vec<String>,
}

impl Filter {
    /// Whether every row matches (nothing was asked for).
    pub fn is_empty(&self) -> bool {
        self.pids.is_empty()
            && self.ports.is_empty()
            && self.cgroups.is_empty()
            && self.only_v4 == self.only_v6
            && self.only_tcp == self.only_udp
    }

    pub fn matches(&self, r: &Row) -> bool {
        let v4 = r.key.remote.is_ipv4();
        let tcp = r.key.proto == crate::model::Proto::Tcp;
        (self.cgroups.is_empty()
            || r.workload
                .as_ref()
                .is_some_and(|w| self.cgroups.iter().any(|p| cgroup_has_prefix(&w.cgroup, p))))
            && (self.pids.is_empty() || self.pids.contains(&r.pid))
            && (self.ports.is_empty()
                || self.ports.contains(&r.key.local.port())
                || self.ports.contains(&r.key.remote.port()))
            && (self.only_v4 == self.only_v6 || if v4 { self.only_v4 } else { self.only_v6 })
            && (self.only_tcp == self.only_udp || if tcp { self.only_tcp } else { self.only_udp })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Proto;
    use std::time::Duration;

    fn sample(lport: u16, id: u64, tx: u64, rx: u64) -> ConnSample {
        ConnSample {
            key: ConnKey {
                proto: Proto::Tcp,
                local: format!("127.0.0.1:{lport}").parse().unwrap(),
                remote: "127.0.0.1:80".parse().unwrap(),
                netns: 1,
            },
            id,
            pid: 10,
            comm: "curl".into(),
            state: ConnState::Established,
            counters: Counters {
                tx_bytes: tx,
                rx_bytes: rx,
                ..Default::default()
            },
            rtt_us: Some(50),
            cgroup_id: 0,
            active: None,
            workload: None,
        }
    }

    fn snap(live: Vec<ConnSample>, closed: Vec<ConnSample>) -> Snapshot {
        Snapshot {
            live,
            closed,
            drops: Drops::default(),
            partial: false,
            standing: Vec::new(),
        }
    }

    /// A row's size is what the table's memory scales with (100,000
    /// connections: 200,000 rows). Where it grows, look again.
    #[test]
    fn a_row_and_a_stamp_stay_small() {
        assert!(
            std::mem::size_of::<Row>() <= 304,
            "{}",
            std::mem::size_of::<Row>()
        );
        assert_eq!(std::mem::size_of::<Option<Stamp>>(), 8);
        // A stamp gives its moment back exactly, before and after now.
        let now = Instant::now();
        for t in [
            now,
            now + Duration::from_nanos(1),
            now + Duration::from_secs(86_400),
        ] {
            assert_eq!(Stamp::of(t).instant(), t);
        }
        if let Some(t) = now.checked_sub(Duration::from_secs(3)) {
            assert_eq!(Stamp::of(t).instant(), t);
        }
    }

    #[test]
    fn rate_guards() {
        assert_eq!(rate(100, 0, 2.0), 50.0);
        assert_eq!(rate(100, 200, 2.0), 0.0);
        assert_eq!(rate(100, 0, 0.0), 0.0);
        assert_eq!(rate(100, 0, f64::NAN), 0.0);
        assert_eq!(rate(u64::MAX, 0, 1.0), u64::MAX as f64);
    }

    #[test]
    fn rates_from_deltas() {
        let mut t = ConnTable::new();
        let t0 = Instant::now();
        t.apply(snap(vec![sample(1000, 7, 1000, 0)], vec![]), t0, 1.0);
        let r = t.rows().next().unwrap();
        assert_eq!(r.tx_bps, 1000.0);
        t.apply(
            snap(vec![sample(1000, 7, 3000, 500)], vec![]),
            t0 + Duration::from_secs(2),
            1.0,
        );
        let r = t.rows().next().unwrap();
        assert_eq!((r.tx_bps, r.rx_bps), (1000.0, 250.0));
        assert_eq!(r.counters.tx_bytes, 3000);
    }

    /// A partial snapshot reports only what changed: the rows it leaves
    /// out stay live with their counters and an interval rate of 0, its
    /// windowed rate still counts their earlier bytes, and only `closed`
    /// (or a complete snapshot) takes one out.
    #[test]
    fn partial_snapshot_keeps_unreported_rows() {
        let mut t = ConnTable::new();
        let t0 = Instant::now();
        let secs = |n| t0 + Duration::from_secs(n);
        let s = |p: &[ConnSample], c: &[ConnSample], partial: bool| Snapshot {
            partial,
            ..snap(p.to_vec(), c.to_vec())
        };
        let by_port = |t: &ConnTable, p: u16| t.live().find(|r| r.key.local.port() == p).cloned();
        let (a, b) = (sample(1000, 7, 0, 0), sample(1001, 8, 0, 0));
        t.apply(s(&[a, b], &[], false), t0, 1.0);
        t.apply(s(&[sample(1000, 7, 1000, 10)], &[], true), secs(1), 1.0);
        assert_eq!(by_port(&t, 1000).map(|r| r.tx_bps), Some(1000.0));
        assert_eq!(by_port(&t, 1001).map(|r| r.tx_bps), Some(0.0));
        t.apply(s(&[sample(1001, 8, 500, 0)], &[], true), secs(2), 1.0);
        let ra = by_port(&t, 1000).expect("unreported row kept");
        assert_eq!(
            (ra.counters.tx_bytes, ra.tx_bps, ra.rx_bps),
            (1000, 0.0, 0.0)
        );
        assert_eq!(by_port(&t, 1001).map(|r| r.tx_bps), Some(500.0));
        t.set_window(RateWindow::Secs2);
        assert_eq!(by_port(&t, 1000).map(|r| r.tx_bps), Some(500.0));
        t.set_window(RateWindow::Interval);
        // An empty partial snapshot changes nothing but the rates.
        t.apply(s(&[], &[], true), secs(3), 1.0);
        assert_eq!(t.live().count(), 2);
        assert_eq!(by_port(&t, 1001).map(|r| r.tx_bps), Some(0.0));
        // Closed: out of the live rows, shown closed once.
        let mut fin = sample(1000, 7, 1200, 10);
        fin.state = ConnState::Closed;
        t.apply(s(&[], &[fin], true), secs(4), 1.0);
        assert!(by_port(&t, 1000).is_none());
        let c: Vec<_> = t
            .closed_latest()
            .map(|r| (r.key.local.port(), r.counters.tx_bytes))
            .collect();
        assert_eq!(c, [(1000, 1200)]);
        // A complete snapshot without a row: that row is gone.
        t.apply(s(&[], &[], false), secs(5), 1.0);
        assert_eq!(t.live().count(), 0);
    }

    /// A standing row (reported once, no record behind it) outlives
    /// complete snapshots that leave it out; a later live sample of the
    /// same key makes it an ordinary row (the same row: a standing sample
    /// has id 0), and a CLOSED sample ends it.
    #[test]
    fn standing_rows_outlive_complete_snapshots() {
        let mut t = ConnTable::new();
        let t0 = Instant::now();
        let secs = |n| t0 + Duration::from_secs(n);
        let by_port = |t: &ConnTable, p: u16| t.live().find(|r| r.key.local.port() == p).cloned();
        let ports = |t: &ConnTable| {
            let mut p: Vec<u16> = t.live().map(|r| r.key.local.port()).collect();
            p.sort_unstable();
            p
        };
        let first = Snapshot {
            standing: vec![sample(1000, 0, 100, 10), sample(1001, 0, 0, 0)],
            ..snap(vec![sample(2000, 9, 5, 5)], vec![])
        };
        t.apply(first, t0, 1.0);
        assert_eq!(ports(&t), [1000, 1001, 2000]);
        // Complete snapshots that leave the standing rows out: they stay,
        // as they were; the ordinary row left out is gone.
        t.apply(snap(vec![sample(2000, 9, 5, 5)], vec![]), secs(1), 1.0);
        t.apply(snap(vec![], vec![]), secs(2), 1.0);
        assert_eq!(ports(&t), [1000, 1001]);
        assert_eq!(by_port(&t, 1000).map(|r| r.counters.tx_bytes), Some(100));
        // Its record's first sample: the same row, counting on, ordinary
        // from now on (a complete snapshot without it ends it).
        t.apply(snap(vec![sample(1000, 7, 300, 10)], vec![]), secs(3), 1.0);
        let r = by_port(&t, 1000).expect("the standing row, updated");
        assert_eq!((r.id, r.counters.tx_bytes, r.tx_bps), (7, 300, 200.0));
        assert_eq!(r.first_seen(), t0);
        t.apply(snap(vec![], vec![]), secs(4), 1.0);
        assert_eq!(ports(&t), [1001]);
        // A CLOSED sample ends a standing row.
        let mut fin = sample(1001, 8, 40, 0);
        fin.state = ConnState::Closed;
        t.apply(snap(vec![], vec![fin]), secs(5), 1.0);
        assert_eq!(t.live().count(), 0);
        let closed: Vec<_> = t
            .closed_latest()
            .map(|r| (r.key.local.port(), r.counters.tx_bytes))
            .collect();
        assert_eq!(closed, [(1001, 40)]);
    }

    /// A standing sample and a live one of the same connection in one
    /// snapshot (its first call came between the start-up walk and the
    /// read): one row, as the live sample says, and not standing.
    #[test]
    fn a_live_sample_wins_over_a_standing_one() {
        let mut t = ConnTable::new();
        let t0 = Instant::now();
        let mut live = sample(1000, 7, 500, 20);
        live.state = ConnState::FinWait1;
        let first = Snapshot {
            standing: vec![sample(1000, 0, 100, 10)],
            ..snap(vec![live], vec![])
        };
        t.apply(first, t0, 1.0);
        let rows: Vec<_> = t
            .live()
            .map(|r| (r.id, r.state, r.counters.tx_bytes))
            .collect();
        assert_eq!(rows, [(7, ConnState::FinWait1, 500)]);
        t.apply(snap(vec![], vec![]), t0 + Duration::from_secs(1), 1.0);
        assert_eq!(t.live().count(), 0);
    }

    #[test]
    fn counters_never_go_backwards() {
        let mut t = ConnTable::new();
        let t0 = Instant::now();
        let mut s = sample(1000, 7, 100, 100);
        s.counters.tx_packets = 9;
        t.apply(snap(vec![s], vec![]), t0, 1.0);
        let mut s = sample(1000, 7, 100, 100);
        s.counters.tx_packets = 8;
        t.apply(snap(vec![s], vec![]), t0 + Duration::from_secs(1), 1.0);
        assert_eq!(t.rows().next().unwrap().counters.tx_packets, 9);
    }

    /// Snapshots in another order, with rows leaving (each leaving row's
    /// place taken by the last one), arriving and closing: every row is
    /// found again, by key and by where it is, with its own counters.
    #[test]
    fn rows_found_again_after_reorder_and_removal() {
        let mut t = ConnTable::new();
        let t0 = Instant::now();
        let all: Vec<u16> = (1..=60).collect();
        let snap_of = |ports: &[u16], step: u64| {
            ports
                .iter()
                .map(|&p| sample(p, u64::from(p), u64::from(p) * 10 + step, 0))
                .collect::<Vec<_>>()
        };
        t.apply(snap(snap_of(&all, 0), vec![]), t0, 1.0);
        // Since when each port has been live without a break.
        let mut since: std::collections::HashMap<u16, u64> = all.iter().map(|&p| (p, 0)).collect();
        let orders: [Vec<u16>; 4] = [
            all.iter().rev().copied().collect(),
            all.iter().copied().filter(|p| p % 3 != 0).collect(),
            (40..=90).chain(1..=10).collect(),
            (1..=90).filter(|p| p % 7 != 0).rev().collect(),
        ];
        for (step, ports) in orders.iter().enumerate() {
            let step = step as u64 + 1;
            // Port 5 closes in the first of them.
            let closed = if step == 1 {
                vec![sample(5, 5, 999, 0)]
            } else {
                vec![]
            };
            let ports: Vec<u16> = ports.iter().copied().filter(|&p| p != 5).collect();
            t.apply(
                snap(snap_of(&ports, step), closed),
                t0 + Duration::from_secs(step),
                1.0,
            );
            since.retain(|p, _| ports.contains(p));
            for &p in &ports {
                since.entry(p).or_insert(step);
            }
            let mut want = ports.clone();
            want.sort_unstable();
            let mut live: Vec<u16> = t
                .rows_at()
                .filter(|(_, r)| !r.is_closed())
                .map(|(at, r)| {
                    assert_eq!(t.row(at).map(|g| g.key), Some(r.key), "{at:?}");
                    let p = r.key.local.port();
                    assert_eq!(r.counters.tx_bytes, u64::from(p) * 10 + step, "port {p}");
                    let first = t0 + Duration::from_secs(since[&p]);
                    assert_eq!(r.first_seen(), first, "port {p}: the same row throughout");
                    p
                })
                .collect();
            live.sort_unstable();
            assert_eq!(live, want, "step {step}");
        }
    }

    /// The version a display re-sorts on moves when a row or a rate
    /// changes, and only then.
    #[test]
    fn version_moves_only_with_what_is_shown() {
        let mut t = ConnTable::new();
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let partial = |live| Snapshot {
            partial: true,
            ..snap(live, vec![])
        };
        t.apply(snap(vec![sample(1000, 7, 10, 0)], vec![]), t0, 1.0);
        let v = t.version();
        assert!(v > 0, "a new row");
        // Its rate falls to 0: shown.
        t.apply(partial(vec![]), at(1), 1.0);
        assert_ne!(t.version(), v);
        let v = t.version();
        // Nothing reported, nothing moving; the same sample again.
        t.apply(partial(vec![]), at(2), 1.0);
        t.apply(partial(vec![sample(1000, 7, 10, 0)]), at(3), 1.0);
        assert_eq!(t.version(), v, "nothing changed on display");
        // An RTT alone.
        let mut s = sample(1000, 7, 10, 0);
        s.rtt_us = Some(250);
        t.apply(partial(vec![s]), at(4), 1.0);
        assert_ne!(t.version(), v);
        let v = t.version();
        // Bytes.
        t.apply(partial(vec![sample(1000, 7, 11, 0)]), at(5), 1.0);
        assert_ne!(t.version(), v);
        t.apply(partial(vec![]), at(6), 1.0);
        let v = t.version();
        // A new row, a row gone (a complete snapshot without it).
        t.apply(partial(vec![sample(1001, 8, 0, 0)]), at(7), 1.0);
        assert_ne!(t.version(), v);
        let v = t.version();
        t.apply(snap(vec![sample(1000, 7, 11, 0)], vec![]), at(8), 1.0);
        assert_ne!(t.version(), v);
        assert_eq!(t.len(), 1);
    }

    #[test]
    fn closed_shown_once_then_removed() {
        let mut t = ConnTable::new();
        let t0 = Instant::now();
        t.apply(snap(vec![sample(1000, 7, 10, 0)], vec![]), t0, 1.0);
        t.apply(
            snap(vec![], vec![sample(1000, 7, 30, 5)]),
            t0 + Duration::from_secs(1),
            1.0,
        );
        let r = t.rows().next().unwrap();
        assert!(r.is_closed());
        assert_eq!((r.counters.tx_bytes, r.tx_bps), (30, 20.0));
        t.apply(snap(vec![], vec![]), t0 + Duration::from_secs(2), 1.0);
        assert!(t.is_empty());
    }

    #[test]
    fn closed_lingers_then_leaves() {
        let mut t = ConnTable::with_linger(Duration::from_secs(5));
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        t.apply(snap(vec![sample(1000, 7, 10, 0)], vec![]), t0, 1.0);
        t.apply(snap(vec![], vec![sample(1000, 7, 30, 5)]), at(1), 1.0);
        let r = t.rows().next().unwrap();
        assert!(r.is_closed());
        assert_eq!(r.closed_at(), Some(at(1)));
        assert_eq!((r.counters.tx_bytes, r.tx_bps, r.rx_bps), (30, 20.0, 5.0));
        for s in 2..=5 {
            t.apply(snap(vec![], vec![]), at(s), 1.0);
            let r = t.rows().next().unwrap();
            assert_eq!(
                (r.counters.tx_bytes, r.counters.rx_bytes, r.tx_bps, r.rx_bps),
                (30, 5, 0.0, 0.0),
                "final counters and zero rates at {s} s"
            );
        }
        t.apply(snap(vec![], vec![]), at(6), 1.0);
        assert!(t.is_empty(), "gone 5 s after the close was reported");
        assert_eq!(t.totals(), (5, 30));
    }

    #[test]
    fn expire_between_snapshots_and_reused_tuple() {
        let mut t = ConnTable::with_linger(Duration::from_secs(5));
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        t.apply(snap(vec![sample(1000, 7, 10, 0)], vec![]), t0, 1.0);
        t.apply(
            snap(vec![sample(1000, 8, 1, 0)], vec![sample(1000, 7, 10, 0)]),
            at(1000),
            1.0,
        );
        assert_eq!(t.len(), 2, "the new instance and the lingering old one");
        t.expire(at(5999));
        assert_eq!(t.len(), 2);
        t.expire(at(6000));
        assert_eq!(t.len(), 1);
        assert_eq!(t.rows().next().unwrap().id, 8);
    }

    #[test]
    fn without_linger_expire_keeps_the_snapshot() {
        let mut t = ConnTable::new();
        let t0 = Instant::now();
        t.apply(snap(vec![], vec![sample(1000, 7, 10, 0)]), t0, 1.0);
        t.expire(t0 + Duration::from_secs(3600));
        assert_eq!(t.len(), 1, "batch mode shows each closed row once");
    }

    #[test]
    fn first_seen_is_kept_across_updates() {
        let mut t = ConnTable::new();
        let t0 = Instant::now();
        t.apply(snap(vec![sample(1000, 7, 10, 0)], vec![]), t0, 1.0);
        t.apply(
            snap(vec![sample(1000, 7, 20, 0)], vec![]),
            t0 + Duration::from_secs(1),
            1.0,
        );
        assert_eq!(t.rows().next().unwrap().first_seen(), t0);
        assert_eq!(t.totals(), (0, 20));
    }

    #[test]
    fn opened_and_closed_between_snapshots_is_kept() {
        let mut t = ConnTable::new();
        let t0 = Instant::now();
        t.apply(snap(vec![], vec![]), t0, 1.0);
        t.apply(
            snap(vec![], vec![sample(2000, 9, 123, 456)]),
            t0 + Duration::from_secs(1),
            1.0,
        );
        let r = t.rows().next().unwrap();
        assert_eq!((r.counters.tx_bytes, r.counters.rx_bytes), (123, 456));
        assert_eq!(r.state, ConnState::Closed);
    }

    #[test]
    fn reused_tuple_is_a_new_connection() {
        let mut t = ConnTable::new();
        let t0 = Instant::now();
        t.apply(snap(vec![sample(1000, 7, 500, 0)], vec![]), t0, 1.0);
        // Old instance closed and a new one with the same tuple opened.
        t.apply(
            snap(vec![sample(1000, 8, 20, 0)], vec![sample(1000, 7, 600, 0)]),
            t0 + Duration::from_secs(1),
            1.0,
        );
        assert_eq!(t.len(), 2, "the old instance's final report is not lost");
        let new = t.rows().find(|r| !r.is_closed()).unwrap();
        assert_eq!((new.id, new.counters.tx_bytes, new.tx_bps), (8, 20, 20.0));
        let old = t.rows().find(|r| r.is_closed()).unwrap();
        assert_eq!((old.id, old.counters.tx_bytes, old.tx_bps), (7, 600, 100.0));
    }

    #[test]
    fn new_instance_replaces_the_row_and_unreported_rows_leave() {
        let mut t = ConnTable::new();
        let t0 = Instant::now();
        let t1 = t0 + Duration::from_secs(1);
        t.apply(
            snap(vec![sample(1000, 7, 500, 0), sample(2000, 9, 1, 0)], vec![]),
            t0,
            1.0,
        );
        // The same tuple as a new instance, the old one's close never
        // reported; the other connection is not in this snapshot.
        t.apply(snap(vec![sample(1000, 8, 20, 0)], vec![]), t1, 1.0);
        assert_eq!(t.len(), 1, "a row no snapshot reports stays");
        let r = t.rows().next().unwrap();
        assert_eq!(
            (r.id, r.counters.tx_bytes, r.tx_bps, r.first_seen()),
            (8, 20, 20.0, t1),
            "the new instance inherited the old one's row"
        );
        t.apply(snap(vec![], vec![]), t1 + Duration::from_secs(1), 1.0);
        assert!(t.is_empty());
    }

    #[test]
    fn seed_merges_with_first_kernel_sample() {
        let mut t = ConnTable::new();
        let t0 = Instant::now();
        let mut seed = sample(1000, 0, 0, 0);
        seed.pid = 33;
        t.apply(snap(vec![seed], vec![]), t0, 1.0);
        let mut s = sample(1000, 5, 40, 0);
        s.pid = 0;
        t.apply(snap(vec![s], vec![]), t0 + Duration::from_secs(1), 1.0);
        let r = t.rows().next().unwrap();
        assert_eq!((r.id, r.pid, r.counters.tx_bytes), (5, 33, 40));
    }

    #[test]
    fn rolling_windows() {
        let mut t = ConnTable::new();
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        // 1000 B/s for 10 s, then 11000 B/s for 2 s.
        let mut tx = 0;
        for s in 0..=12u64 {
            tx += if s == 0 {
                0
            } else if s <= 10 {
                1000
            } else {
                11_000
            };
            t.apply(snap(vec![sample(1000, 7, tx, 0)], vec![]), at(s), 1.0);
        }
        let r = |t: &ConnTable| t.rows().next().unwrap().tx_bps;
        assert_eq!(r(&t), 11_000.0, "interval");
        t.set_window(RateWindow::Secs2);
        assert_eq!(r(&t), 11_000.0);
        t.set_window(RateWindow::Secs10);
        assert_eq!(r(&t), (8_000.0 + 22_000.0) / 10.0);
        // Younger than the window: averaged over its whole life.
        t.set_window(RateWindow::Secs40);
        assert_eq!(r(&t), 32_000.0 / 12.0);
        assert_eq!(t.window(), RateWindow::Secs40);
        // The window survives new snapshots.
        t.apply(
            snap(vec![sample(1000, 7, tx + 1200, 0)], vec![]),
            at(13),
            1.0,
        );
        assert_eq!(r(&t), 33_200.0 / 13.0);
        assert_eq!(RateWindow::Secs40.next(), RateWindow::Interval);
    }

    #[test]
    fn window_samples_are_bounded() {
        let mut t = ConnTable::new();
        let t0 = Instant::now();
        for s in 0..200u64 {
            t.apply(
                snap(vec![sample(1000, 7, s * 10, 0)], vec![]),
                t0 + Duration::from_secs(s),
                1.0,
            );
        }
        let row = t.rows().next().unwrap();
        // 41 samples cover the window at a 1 s interval; the ring drops
        // the older ones when it fills.
        assert!(row.samples.capacity() <= 64, "{}", row.samples.capacity());
        t.set_window(RateWindow::Secs40);
        assert_eq!(t.rows().next().unwrap().tx_bps, 10.0);
    }

    /// An idle connection keeps one sample, however long it idles, and its
    /// windowed rates stay right when it wakes: 1,000 bytes in the last
    /// second after a minute of nothing is 100 B/s over 10 s, 25 over 40.
    #[test]
    fn idle_rows_keep_one_sample_and_true_window_rates() {
        let mut t = ConnTable::new();
        let t0 = Instant::now();
        for s in 0..=60u64 {
            t.apply(
                snap(vec![sample(1000, 7, 500, 0)], vec![]),
                t0 + Duration::from_secs(s),
                1.0,
            );
        }
        assert_eq!(t.rows().next().unwrap().samples.len(), 1);
        t.apply(
            snap(vec![sample(1000, 7, 1500, 0)], vec![]),
            t0 + Duration::from_secs(61),
            1.0,
        );
        assert_eq!(t.rows().next().unwrap().samples.len(), 2);
        for (w, want) in [
            (RateWindow::Interval, 1000.0),
            (RateWindow::Secs2, 500.0),
            (RateWindow::Secs10, 100.0),
            (RateWindow::Secs40, 25.0),
        ] {
            t.set_window(w);
            assert_eq!(t.rows().next().unwrap().tx_bps, want, "{w:?}");
        }
        // A connection younger than the window: over its whole life.
        t.apply(
            snap(
                vec![sample(1000, 7, 1500, 0), sample(2000, 8, 0, 0)],
                vec![],
            ),
            t0 + Duration::from_secs(62),
            1.0,
        );
        t.apply(
            snap(
                vec![sample(1000, 7, 1500, 0), sample(2000, 8, 300, 0)],
                vec![],
            ),
            t0 + Duration::from_secs(65),
            1.0,
        );
        let young = t.rows().find(|r| r.id == 8).unwrap();
        assert_eq!(young.tx_bps, 100.0, "300 bytes over its 3 s");
    }

    #[test]
    fn latest_excludes_lingering_closed_rows() {
        let mut t = ConnTable::with_linger(Duration::from_secs(5));
        let t0 = Instant::now();
        t.apply(snap(vec![sample(1000, 7, 10, 0)], vec![]), t0, 1.0);
        t.apply(
            snap(vec![sample(2000, 8, 1, 0)], vec![sample(1000, 7, 30, 5)]),
            t0 + Duration::from_secs(1),
            1.0,
        );
        assert_eq!(t.latest().count(), 2);
        t.apply(
            snap(vec![sample(2000, 8, 2, 0)], vec![]),
            t0 + Duration::from_secs(2),
            1.0,
        );
        assert_eq!(t.len(), 2, "closed row still lingers on screen");
        let latest: Vec<u16> = t.latest().map(|r| r.key.local.port()).collect();
        assert_eq!(latest, [2000], "but is logged once");
    }

    #[test]
    fn search_text_follows_state_and_owner() {
        let mut t = ConnTable::new();
        let t0 = Instant::now();
        let mut s = sample(1000, 7, 0, 0);
        s.pid = 0;
        s.comm = CompactString::default();
        t.apply(snap(vec![s], vec![]), t0, 1.0);
        let text = t.rows().next().unwrap().search_text().to_string();
        assert_eq!(text, " 0 tcp 127.0.0.1:1000 127.0.0.1:80 established");
        let mut s = sample(1000, 7, 5, 0);
        s.comm = "Nginx\x1b".into();
        s.state = ConnState::CloseWait;
        t.apply(snap(vec![s], vec![]), t0 + Duration::from_secs(1), 1.0);
        let r = t.rows().next().unwrap();
        assert_eq!(
            r.search_text(),
            "nginx\\x1b 10 tcp 127.0.0.1:1000 127.0.0.1:80 close_wait"
        );
    }

    #[test]
    fn filter_by_family_and_protocol() {
        let mut t = ConnTable::new();
        let mut v6 = sample(3000, 3, 0, 0);
        v6.key.local = "[::1]:3000".parse().unwrap();
        v6.key.remote = "[::1]:80".parse().unwrap();
        let mut udp = sample(4000, 4, 0, 0);
        udp.key.proto = Proto::Udp;
        t.apply(
            snap(vec![sample(1000, 1, 0, 0), v6, udp], vec![]),
            Instant::now(),
            1.0,
        );
        let count = |f: Filter| t.rows().filter(|r| f.matches(r)).count();
        assert_eq!(count(Filter::default()), 3);
        let only = |v4, v6, tcp, udp| Filter {
            only_v4: v4,
            only_v6: v6,
            only_tcp: tcp,
            only_udp: udp,
            ..Filter::default()
        };
        assert_eq!(count(only(true, false, false, false)), 2);
        assert_eq!(count(only(false, true, false, false)), 1);
        assert_eq!(count(only(true, true, false, false)), 3);
        assert_eq!(count(only(false, false, true, false)), 2);
        assert_eq!(count(only(false, false, false, true)), 1);
        assert_eq!(count(only(false, true, false, true)), 0);
    }

    #[test]
    fn filter_by_pid_and_port() {
        let mut t = ConnTable::new();
        t.apply(
            snap(vec![sample(1000, 1, 0, 0), sample(2000, 2, 0, 0)], vec![]),
            Instant::now(),
            1.0,
        );
        let f = Filter {
            pids: vec![],
            ports: vec![2000],
            ..Filter::default()
        };
        assert_eq!(t.rows().filter(|r| f.matches(r)).count(), 1);
        let f = Filter {
            pids: vec![10],
            ports: vec![80],
            ..Filter::default()
        };
        assert_eq!(t.rows().filter(|r| f.matches(r)).count(), 2);
        let f = Filter {
            pids: vec![11],
            ports: vec![],
            ..Filter::default()
        };
        assert_eq!(t.rows().filter(|r| f.matches(r)).count(), 0);
    }

    #[test]
    fn filter_by_cgroup_prefix_whole_parts() {
        let in_group = |path: &str, port| ConnSample {
            workload: Some(Arc::new(Workload {
                cgroup: path.into(),
                unit: None,
                container: None,
                pod: None,
            })),
            ..sample(port, u64::from(port), 0, 0)
        };
        let mut t = ConnTable::new();
        t.apply(
            snap(
                vec![
                    in_group("/system.slice/nginx.service", 1),
                    in_group("/system.slices/other.service", 2),
                    in_group("/kubepods.slice/kubepods-pod1.slice", 3),
                    sample(4, 4, 0, 0),
                ],
                vec![],
            ),
            Instant::now(),
            1.0,
        );
        let count = |prefixes: &[&str]| {
            let f = Filter {
                cgroups: prefixes.iter().map(|p| p.to_string()).collect(),
                ..Filter::default()
            };
            t.rows().filter(|r| f.matches(r)).count()
        };
        assert_eq!(count(&[]), 4);
        assert_eq!(count(&["/system.slice"]), 1);
        assert_eq!(count(&["/system.slice/"]), 1);
        assert_eq!(count(&["/system.slice/nginx.service"]), 1);
        assert_eq!(count(&["/system.slice", "/kubepods.slice"]), 2);
        assert_eq!(count(&["/"]), 3, "every known group, not the unknown one");
        assert_eq!(count(&["/nothing"]), 0);
    }

    /// Settled rows skipped by the pass give the same rates, totals,
    /// histories and versions as a table that visits every row, through
    /// idling, bursts, RTT changes, partial and complete snapshots, rows
    /// that close or vanish, and a history share that changes with the
    /// number of rows.
    #[test]
    fn skipping_settled_rows_changes_nothing_shown() {
        for (window, history, batch) in [
            (RateWindow::Interval, true, false),
            (RateWindow::Secs2, true, false),
            (RateWindow::Secs10, false, false),
            (RateWindow::Interval, false, true),
        ] {
            let make = || {
                let mut t = ConnTable::with_linger(Duration::from_secs(3));
                if history {
                    t.keep_history();
                }
                if batch {
                    t.interval_rates_only();
                } else {
                    t.set_window(window);
                }
                t
            };
            let (mut fast, mut every) = (make(), make());
            let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
            let mut rand = move |n: u64| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                seed % n
            };
            // Connection i: its counters, RTT, open or not, standing
            // (reported once, id 0, until it changes: a third of those
            // open at the first snapshot).
            let n = 7_000usize;
            let mut conns: Vec<(u64, u64, u32, bool, bool)> = vec![(0, 0, 50, false, false); n];
            let mut open = 4_000usize;
            for (i, c) in conns.iter_mut().take(open).enumerate() {
                c.3 = true;
                c.4 = i % 3 == 0;
            }
            let t0 = Instant::now();
            let mut skipped_some = false;
            let mut was_complete = false;
            for step in 0..120u64 {
                // Rows come and go: the share moves across 5,000 rows.
                let target = if (step / 30) % 2 == 0 { 6_500 } else { 4_000 };
                let complete = rand(4) == 0;
                let mut live = Vec::new();
                let mut closed = Vec::new();
                let mut standing = Vec::new();
                for (i, c) in conns.iter_mut().enumerate() {
                    let key_sample = |c: &(u64, u64, u32, bool, bool)| {
                        let mut s = sample(i as u16 + 1, 1 + i as u64, c.0, c.1);
                        s.key.local =
                            std::net::SocketAddr::from(([10, 0, (i >> 8) as u8, i as u8], 1000));
                        s.rtt_us = Some(c.2);
                        s
                    };
                    if !c.3 {
                        if open < target && rand(50) == 0 {
                            c.3 = true;
                            open += 1;
                            live.push(key_sample(c));
                        }
                        continue;
                    }
                    if open > target && rand(40) == 0 {
                        c.3 = false;
                        open -= 1;
                        // Closed with a sample, or just gone (only a
                        // complete snapshot says so; a standing one
                        // only ends with its sample).
                        if rand(2) == 0 || !complete || c.4 {
                            closed.push(key_sample(c));
                        }
                        c.4 = false;
                        continue;
                    }
                    // Most idle, a few busy now and then, RTT moving.
                    let mut changed = false;
                    if i % 97 == 0 || rand(300) == 0 {
                        c.0 += rand(10_000);
                        c.1 += rand(3);
                        changed = true;
                    }
                    if rand(500) == 0 {
                        c.2 = 40 + rand(30) as u32;
                        changed = true;
                    }
                    if step == 0 && c.4 {
                        let mut s = key_sample(c);
                        s.id = 0;
                        standing.push(s);
                    } else if changed || (complete && !c.4) {
                        c.4 = false;
                        live.push(key_sample(c));
                    }
                }
                let s = Snapshot {
                    live,
                    closed,
                    drops: Drops::default(),
                    partial: !complete,
                    standing,
                };
                let now = t0 + Duration::from_millis(1000 * step + rand(40));
                fast.apply(s.clone(), now, 1.0);
                every.visit_all = true;
                every.apply(s, now, 1.0);
                assert_eq!(
                    (fast.visit.len(), every.visit.len()),
                    (fast.live.len(), every.live.len())
                );
                skipped_some |= fast.visit.iter().any(|v| !v);
                // Every open connection is a live row, standing or not,
                // once a complete snapshot reported the idle ones.
                was_complete |= complete;
                if was_complete {
                    assert_eq!(fast.live().count(), open, "step {step}");
                }
                assert_eq!(fast.version(), every.version(), "step {step}");
                assert_eq!(fast.totals(), every.totals(), "step {step}");
                assert_eq!(fast.len(), every.len(), "step {step}");
                for (a, b) in fast.rows().zip(every.rows()) {
                    assert_eq!(a.key, b.key, "step {step}");
                    let what = |t: &ConnTable, r: &Row| {
                        (
                            r.interval_bps,
                            r.tx_bps,
                            r.rx_bps,
                            t.history(r).iter().collect::<Vec<_>>(),
                            // (Memory too: a ring let go as before.)
                            r.samples.clone(),
                        )
                    };
                    assert_eq!(what(&fast, a), what(&every, b), "step {step}, {:?}", a.key);
                }
            }
            assert!(skipped_some, "no row ever settled ({window:?})");
        }
    }
}
