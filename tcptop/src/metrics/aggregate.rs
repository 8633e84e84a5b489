//! Rows of the connection table → labelled series with monotonic totals.
//!
//! Each connection (row) is tracked by its key: the counters already added
//! to a series. At each snapshot its growth since then is added to the
//! series its label set names now, so a series' totals only grow: a closed
//! connection's final counters are in them, a connection whose owner
//! changes (a /proc seed, then the kernel's caller) leaves what it moved so
//! far where it was. A connection that ends is counted once in
//! `connections_closed`, also one that opened and closed between two
//! snapshots.
//!
//! At most `max_series` label sets exist; a connection whose label set is
//! new when they are all taken goes to its protocol's overflow series
//! (`overflow="true"`), and `tcptop_series_overflow_total` counts it once.
//! A series no live connection maps to that has not grown for
//! [`IDLE_SERIES`] is dropped (its slot freed); should its label set come
//! back, it restarts from zero, which Prometheus reads as a counter reset.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::Options;
use super::labels::{Labeler, Labels, Level, canonical_ip, ephemeral_range, overflow_labels};
use crate::model::{ConnKey, ConnState, Counters, Drops, Proto};
use crate::table::{ConnTable, Filter, Row};

/// A series that no live connection maps to and that has not grown for
/// this long is dropped.
pub const IDLE_SERIES: Duration = Duration::from_secs(600);

/// How long the bytes of a new connection whose owner is not known yet
/// are held back (a listener's child is ownerless until its server's first
/// call, and a snapshot can read that call's bytes before the call's hook
/// names the owner): then, or when it ends, they go to the series without
/// `comm`.
pub const OWNER_GRACE: Duration = Duration::from_secs(5);

/// Upper bounds of the RTT histogram's buckets, in microseconds (exposed in
/// seconds; +Inf on top).
pub const RTT_BUCKETS_US: [u32; 14] = [
    50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000,
    1_000_000,
];

/// At the remote level, remote addresses tracked for the ranking at most
/// (beyond that a new address goes to `other` until old ones expire).
const MAX_REMOTES: usize = 65_536;

/// TCP states of the connections gauge, in the order of [`state_slot`].
pub const GAUGE_STATES: [&str; 13] = [
    "ESTABLISHED",
    "SYN_SENT",
    "SYN_RECV",
    "FIN_WAIT1",
    "FIN_WAIT2",
    "TIME_WAIT",
    "CLOSE",
    "CLOSE_WAIT",
    "LAST_ACK",
    "LISTEN",
    "CLOSING",
    "NEW_SYN_RECV",
    "UNKNOWN",
];

fn state_slot(s: ConnState) -> usize {
    match s {
        ConnState::Established => 0,
        ConnState::SynSent => 1,
        ConnState::SynRecv => 2,
        ConnState::FinWait1 => 3,
        ConnState::FinWait2 => 4,
        ConnState::TimeWait => 5,
        ConnState::Close => 6,
        ConnState::CloseWait => 7,
        ConnState::LastAck => 8,
        ConnState::Listen => 9,
        ConnState::Closing => 10,
        ConnState::NewSynRecv => 11,
        ConnState::Closed | ConnState::Flow | ConnState::Unknown(_) => 12,
    }
}

/// A series' counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Totals {
    pub tx_bytes: u64,
    pub rx_bytes: u64,
    pub tx_packets: u64,
    pub rx_packets: u64,
    pub retrans: u64,
    pub closed: u64,
}

impl Totals {
    fn add(&mut self, d: &Counters) {
        self.tx_bytes = self.tx_bytes.saturating_add(d.tx_bytes);
        self.rx_bytes = self.rx_bytes.saturating_add(d.rx_bytes);
        self.tx_packets = self.tx_packets.saturating_add(d.tx_packets);
        self.rx_packets = self.rx_packets.saturating_add(d.rx_packets);
        self.retrans = self.retrans.saturating_add(d.retrans);
    }
}

/// The RTT histogram: one observation per TCP connection with a known
/// smoothed RTT per snapshot it is in.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Rtt {
    /// Per bucket, not cumulative; the last is above the largest bound.
    pub counts: [u64; RTT_BUCKETS_US.len() + 1],
    pub sum_us: u64,
    pub count: u64,
}

impl Rtt {
    fn observe(&mut self, us: u32) {
        let i = RTT_BUCKETS_US.partition_point(|&b| b < us);
        self.counts[i] += 1;
        self.sum_us = self.sum_us.saturating_add(u64::from(us));
        self.count += 1;
    }
}

/// One series' values at a snapshot.
#[derive(Clone, Debug, PartialEq)]
pub struct SeriesValues {
    pub labels: Arc<Labels>,
    pub proto: Proto,
    pub totals: Totals,
    /// Live TCP connections by state ([`GAUGE_STATES`]).
    pub states: [u32; GAUGE_STATES.len()],
    pub rtt: Rtt,
}

/// Everything one scrape shows: the values after a snapshot.
#[derive(Clone, Debug, PartialEq)]
pub struct Exposition {
    pub series: Vec<SeriesValues>,
    pub drops: Drops,
    /// Connections that went to an overflow series.
    pub overflowed: u64,
    /// Snapshots taken (also tells two expositions apart).
    pub snapshots: u64,
    /// The data source's mechanism (`tcptop_build_info{source}`).
    pub source: String,
}

struct Series {
    v: SeriesValues,
    /// Tracked live connections mapped here.
    refs: u32,
    /// When it last grew or lost its last connection.
    touched: Instant,
    overflow: bool,
}

/// What a tracked connection contributed, and where.
struct Tracked {
    id: u64,
    /// Counters already added.
    last: Counters,
    slot: usize,
    /// What its label set was made from.
    pid: u32,
    comm: Box<str>,
    workload: Option<Arc<crate::model::Workload>>,
    named: bool,
    /// The update that last saw it.
    seen: u64,
}

impl Tracked {
    fn same_instance(&self, r: &Row) -> bool {
        self.id == 0 || r.id == 0 || self.id == r.id
    }

    fn same_labels(&self, r: &Row, named: bool, level: Level) -> bool {
        *self.comm == *r.comm
            && self.named == named
            && (level != Level::Connection || self.pid == r.pid)
            && match (&self.workload, &r.workload) {
                (None, None) => true,
                (Some(a), Some(b)) => Arc::ptr_eq(a, b) || a == b,
                _ => false,
            }
    }
}

/// Bytes per remote address, for the remote level's top N.
#[derive(Default)]
struct Remotes {
    top: usize,
    by_ip: HashMap<IpAddr, Remote>,
    named: usize,
}

struct Remote {
    bytes: u64,
    seen: Instant,
    named: bool,
}

impl Remotes {
    /// Whether `ip` has a series of its own; a new address gets one while
    /// fewer than N have.
    fn named(&mut self, ip: IpAddr, now: Instant) -> bool {
        if let Some(r) = self.by_ip.get_mut(&ip) {
            r.seen = now;
            return r.named;
        }
        if self.by_ip.len() >= MAX_REMOTES {
            return false;
        }
        let named = self.named < self.top;
        self.named += usize::from(named);
        self.by_ip.insert(
            ip,
            Remote {
                bytes: 0,
                seen: now,
                named,
            },
        );
        named
    }

    fn add(&mut self, ip: IpAddr, bytes: u64) {
        if let Some(r) = self.by_ip.get_mut(&ip) {
            r.bytes = r.bytes.saturating_add(bytes);
        }
    }

    /// Forgets addresses unseen for [`IDLE_SERIES`], then names the top N
    /// by bytes (ties: those named already, then the lower address).
    fn rank(&mut self, now: Instant) {
        self.by_ip
            .retain(|_, r| now.saturating_duration_since(r.seen) < IDLE_SERIES);
        let mut order: Vec<(u64, bool, IpAddr)> = self
            .by_ip
            .iter()
            .map(|(ip, r)| (r.bytes, r.named, *ip))
            .collect();
        order.sort_unstable_by(|a, b| b.0.cmp(&a.0).then(b.1.cmp(&a.1)).then(a.2.cmp(&b.2)));
        for (i, (_, _, ip)) in order.iter().enumerate() {
            if let Some(r) = self.by_ip.get_mut(ip) {
                r.named = i < self.top;
            }
        }
        self.named = order.len().min(self.top);
    }
}

/// Series from the table, kept across snapshots.
pub struct Aggregator {
    labeler: Labeler,
    max_series: usize,
    slots: Vec<Option<Series>>,
    free: Vec<usize>,
    index: HashMap<Arc<Labels>, usize>,
    /// Series in use, overflow series aside.
    used: usize,
    overflow_slot: [Option<usize>; 2],
    conns: HashMap<ConnKey, Tracked>,
    remotes: Remotes,
    overflowed: u64,
    snapshots: u64,
    drops: Drops,
    source: String,
}

impl Aggregator {
    pub fn new(opts: Options, source: &str) -> Aggregator {
        Aggregator {
            labeler: Labeler {
                level: opts.level,
                ephemeral: ephemeral_range(),
            },
            max_series: opts.max_series,
            slots: Vec::new(),
            free: Vec::new(),
            index: HashMap::new(),
            used: 0,
            overflow_slot: [None, None],
            conns: HashMap::new(),
            remotes: Remotes {
                top: opts.top_remotes,
                ..Remotes::default()
            },
            overflowed: 0,
            snapshots: 0,
            drops: Drops::default(),
            source: source.to_string(),
        }
    }

    /// For tests: another ephemeral port range than this machine's.
    #[cfg(test)]
    pub(super) fn with_ephemeral(mut self, range: (u16, u16)) -> Aggregator {
        self.labeler.ephemeral = range;
        self
    }

    /// Takes the table after a snapshot was applied: the rows `filter`
    /// selects, those that closed in it first (they end their tracking
    /// before a new instance of the same endpoints starts one).
    pub fn update(&mut self, table: &ConnTable, filter: &Filter, now: Instant) {
        self.snapshots += 1;
        self.drops = table.drops();
        for s in self.slots.iter_mut().flatten() {
            s.v.states = [0; GAUGE_STATES.len()];
        }
        for r in table.closed_latest().filter(|r| filter.matches(r)) {
            self.account(r, true, now);
        }
        for r in table.live().filter(|r| filter.matches(r)) {
            self.account(r, false, now);
        }
        // Connections the table no longer has (gone without a report).
        let snapshot = self.snapshots;
        let slots = &mut self.slots;
        self.conns.retain(|_, t| {
            let keep = t.seen == snapshot;
            if !keep {
                release(slots, t.slot, now);
            }
            keep
        });
        if self.labeler.level == Level::Remote {
            self.remotes.rank(now);
        }
        self.expire(now);
    }

    fn account(&mut self, r: &Row, closed: bool, now: Instant) {
        let level = self.labeler.level;
        let ip = canonical_ip(&r.key.remote);
        let named = level == Level::Remote && self.remotes.named(ip, now);
        let snapshot = self.snapshots;
        // An ownerless new connection's growth waits for its owner.
        let hold =
            r.pid == 0 && !closed && now.saturating_duration_since(r.first_seen()) < OWNER_GRACE;
        let counters = if hold {
            Counters::default()
        } else {
            r.counters
        };
        // Whether the row is the tracked connection (then, if it closed,
        // its tracking ends here).
        let mut was_tracked = true;
        let (slot, delta) = match self.conns.get_mut(&r.key) {
            // The common case: a connection seen before, same label set.
            Some(t) if t.same_instance(r) && t.same_labels(r, named, level) => {
                let d = growth(&t.last, &counters);
                t.last = newest(&t.last, &counters);
                if r.id != 0 {
                    t.id = r.id;
                }
                t.seen = snapshot;
                (t.slot, d)
            }
            // Same connection, another label set (its owner became known,
            // its remote's rank changed): what it moves from now on goes
            // to the new series.
            Some(t) if t.same_instance(r) => {
                let (old, d) = (t.slot, growth(&t.last, &counters));
                let slot = self.slot_for(r, named, now, Some(old));
                acquire(&mut self.slots, slot);
                release(&mut self.slots, old, now);
                if let Some(t) = self.conns.get_mut(&r.key) {
                    t.last = newest(&t.last, &counters);
                    t.slot = slot;
                    t.pid = r.pid;
                    t.comm = r.comm.as_str().into();
                    t.workload = r.workload.clone();
                    t.named = named;
                    t.seen = snapshot;
                    if r.id != 0 {
                        t.id = r.id;
                    }
                }
                (slot, d)
            }
            // Closed and never tracked (opened and closed between two
            // snapshots, most rows under churn), or another instance of
            // tracked endpoints: counted on its own.
            _ if closed => {
                was_tracked = false;
                (self.slot_for(r, named, now, None), counters)
            }
            // New, or a new instance replacing one that vanished.
            _ => {
                let slot = self.slot_for(r, named, now, None);
                acquire(&mut self.slots, slot);
                let t = Tracked {
                    id: r.id,
                    last: counters,
                    slot,
                    pid: r.pid,
                    comm: r.comm.as_str().into(),
                    workload: r.workload.clone(),
                    named,
                    seen: snapshot,
                };
                if let Some(old) = self.conns.insert(r.key, t) {
                    release(&mut self.slots, old.slot, now);
                }
                (slot, counters)
            }
        };
        if level == Level::Remote {
            self.remotes
                .add(ip, delta.tx_bytes.saturating_add(delta.rx_bytes));
        }
        if closed
            && was_tracked
            && let Some(t) = self.conns.remove(&r.key)
        {
            release(&mut self.slots, t.slot, now);
        }
        let Some(s) = self.slots.get_mut(slot).and_then(Option::as_mut) else {
            return;
        };
        s.v.totals.add(&delta);
        if closed {
            s.v.totals.closed += 1;
        }
        if closed || delta != Counters::default() {
            s.touched = now;
        }
        if r.key.proto == Proto::Tcp {
            if !closed {
                s.v.states[state_slot(r.state)] += 1;
            }
            if let Some(us) = r.rtt_us {
                s.v.rtt.observe(us);
            }
        }
    }

    /// The slot of `r`'s label set: its series, a new one while there is
    /// room, else the overflow series of its protocol (counted once per
    /// connection: `from` is the slot it had, if any).
    fn slot_for(&mut self, r: &Row, named: bool, now: Instant, from: Option<usize>) -> usize {
        let labels = self.labeler.labels(r, named);
        if let Some(&slot) = self.index.get(&labels) {
            return slot;
        }
        if self.used < self.max_series {
            self.used += 1;
            return self.insert(Arc::new(labels), r.key.proto, false, now);
        }
        let was_overflow = from.is_some_and(|s| {
            self.slots
                .get(s)
                .is_some_and(|s| s.as_ref().is_some_and(|s| s.overflow))
        });
        if !was_overflow {
            self.overflowed += 1;
        }
        let p = usize::from(r.key.proto == Proto::Udp);
        if let Some(slot) = self.overflow_slot[p]
            && self.slots.get(slot).is_some_and(Option::is_some)
        {
            return slot;
        }
        let slot = self.insert(
            Arc::new(overflow_labels(r.key.proto)),
            r.key.proto,
            true,
            now,
        );
        self.overflow_slot[p] = Some(slot);
        slot
    }

    fn insert(&mut self, labels: Arc<Labels>, proto: Proto, overflow: bool, now: Instant) -> usize {
        let series = Series {
            v: SeriesValues {
                labels: labels.clone(),
                proto,
                totals: Totals::default(),
                states: [0; GAUGE_STATES.len()],
                rtt: Rtt::default(),
            },
            refs: 0,
            touched: now,
            overflow,
        };
        let slot = match self.free.pop() {
            Some(i) => {
                self.slots[i] = Some(series);
                i
            }
            None => {
                self.slots.push(Some(series));
                self.slots.len() - 1
            }
        };
        if !overflow {
            self.index.insert(labels, slot);
        }
        slot
    }

    /// Drops series that no live connection maps to and that have not
    /// grown for [`IDLE_SERIES`].
    fn expire(&mut self, now: Instant) {
        for (i, cell) in self.slots.iter_mut().enumerate() {
            let idle = cell.as_ref().is_some_and(|s| {
                s.refs == 0 && now.saturating_duration_since(s.touched) >= IDLE_SERIES
            });
            if idle && let Some(s) = cell.take() {
                if s.overflow {
                    for o in &mut self.overflow_slot {
                        if *o == Some(i) {
                            *o = None;
                        }
                    }
                } else {
                    self.index.remove(&s.v.labels);
                    self.used -= 1;
                }
                self.free.push(i);
            }
        }
    }

    /// The values to serve.
    pub fn exposition(&self) -> Exposition {
        Exposition {
            series: self.slots.iter().flatten().map(|s| s.v.clone()).collect(),
            drops: self.drops,
            overflowed: self.overflowed,
            snapshots: self.snapshots,
            source: self.source.clone(),
        }
    }

    /// Label sets in use (overflow series included).
    pub fn series_count(&self) -> usize {
        self.slots.iter().flatten().count()
    }

    /// Connections tracked (for tests: bounded by the table).
    pub fn tracked(&self) -> usize {
        self.conns.len()
    }
}

fn growth(last: &Counters, now: &Counters) -> Counters {
    Counters {
        tx_bytes: now.tx_bytes.saturating_sub(last.tx_bytes),
        rx_bytes: now.rx_bytes.saturating_sub(last.rx_bytes),
        tx_packets: now.tx_packets.saturating_sub(last.tx_packets),
        rx_packets: now.rx_packets.saturating_sub(last.rx_packets),
        retrans: now.retrans.saturating_sub(last.retrans),
    }
}

fn newest(a: &Counters, b: &Counters) -> Counters {
    Counters {
        tx_bytes: a.tx_bytes.max(b.tx_bytes),
        rx_bytes: a.rx_bytes.max(b.rx_bytes),
        tx_packets: a.tx_packets.max(b.tx_packets),
        rx_packets: a.rx_packets.max(b.rx_packets),
        retrans: a.retrans.max(b.retrans),
    }
}

fn acquire(slots: &mut [Option<Series>], slot: usize) {
    if let Some(Some(s)) = slots.get_mut(slot) {
        s.refs += 1;
    }
}

fn release(slots: &mut [Option<Series>], slot: usize, now: Instant) {
    if let Some(Some(s)) = slots.get_mut(slot) {
        s.refs = s.refs.saturating_sub(1);
        s.touched = now;
    }
}
