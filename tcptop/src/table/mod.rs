//! The connection table: latest counters per connection, and rates computed
//! from counter deltas between two snapshots.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::model::{ConnKey, ConnSample, ConnState, Counters, Drops, Snapshot};

/// One connection as the user sees it.
#[derive(Clone, Debug, PartialEq)]
pub struct Row {
    pub key: ConnKey,
    /// The source's identity of this connection instance (0: not known yet).
    pub id: u64,
    pub pid: u32,
    pub comm: String,
    pub state: ConnState,
    /// Cumulative since first seen.
    pub counters: Counters,
    pub rtt_us: Option<u32>,
    /// Bytes per second over the last interval.
    pub tx_bps: f64,
    pub rx_bps: f64,
    /// When the table first saw this connection.
    pub first_seen: Instant,
    /// When the table learnt that it ended (None while it is alive).
    pub closed_at: Option<Instant>,
    /// Counters at the previous snapshot, for the next rate.
    prev: Counters,
    /// Lower-case text the live filter searches, rebuilt only when the
    /// fields in it change (formatting it per frame cost ~3 ms at 10,000 rows).
    search: String,
}

impl Row {
    fn new(s: ConnSample, now: Instant) -> Row {
        let mut row = Row {
            key: s.key,
            id: s.id,
            pid: s.pid,
            comm: s.comm,
            state: s.state,
            counters: s.counters,
            rtt_us: s.rtt_us,
            tx_bps: 0.0,
            rx_bps: 0.0,
            first_seen: now,
            closed_at: None,
            prev: Counters::default(),
            search: String::new(),
        };
        row.refresh_search();
        row
    }

    /// Process name (escaped), PID, protocol, both endpoints and state, in
    /// lower case: what the live filter matches.
    pub fn search_text(&self) -> &str {
        &self.search
    }

    fn refresh_search(&mut self) {
        use std::fmt::Write as _;
        self.search.clear();
        let _ = write!(
            self.search,
            "{} {} {} {} {} {}",
            crate::output::escape::untrusted(&self.comm),
            self.pid,
            self.key.proto.as_str(),
            self.key.local,
            self.key.remote,
            self.state.as_str(),
        );
        self.search.make_ascii_lowercase();
    }

    pub fn is_closed(&self) -> bool {
        self.state == ConnState::Closed
    }

    /// Takes a newer sample of the same connection. Counters never go
    /// backwards (the kernel side copies socket counters racily).
    fn update(&mut self, s: ConnSample) {
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
            self.comm = s.comm;
            changed = true;
        }
        self.state = s.state;
        if s.rtt_us.is_some() {
            self.rtt_us = s.rtt_us;
        }
        if changed {
            self.refresh_search();
        }
    }

    fn same_instance(&self, s: &ConnSample) -> bool {
        self.id == 0 || s.id == 0 || self.id == s.id
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
    /// Live connections.
    live: HashMap<ConnKey, Row>,
    /// Connections that ended: those of the latest snapshot, plus older ones
    /// still within `linger`.
    closed: Vec<Row>,
    /// How long closed rows stay after the snapshot that reported them
    /// (None: for that one snapshot only).
    linger: Option<Duration>,
    drops: Drops,
    last: Option<Instant>,
    /// Bytes seen since the table started, over all connections (rx, tx).
    totals: (u64, u64),
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
        let last = self.last;
        self.live
            .values()
            .chain(self.closed.iter().filter(move |r| r.closed_at == last))
    }

    /// Applies a snapshot taken at `now`. `nominal_secs` is used as the
    /// rate interval for the first snapshot.
    ///
    /// Connections closed since the previous snapshot are kept for this one
    /// snapshot (or for the linger time), state CLOSED, with final counters;
    /// then they leave. A connection reusing the 4-tuple of a closed one is a
    /// new row.
    pub fn apply(&mut self, snap: Snapshot, now: Instant, nominal_secs: f64) {
        let secs = match self.last {
            Some(t) => now.saturating_duration_since(t).as_secs_f64(),
            None => nominal_secs,
        };
        self.last = Some(now);
        self.drops = snap.drops;
        if self.linger.is_some() {
            self.expire(now);
        } else {
            self.closed.clear();
        }

        let mut prev = std::mem::take(&mut self.live);
        let mut take = |s: ConnSample| match prev.remove(&s.key) {
            Some(mut r) if r.same_instance(&s) => {
                r.update(s);
                r
            }
            Some(other) => {
                // A different instance: keep it for its own sample.
                prev.insert(other.key, other);
                Row::new(s, now)
            }
            None => Row::new(s, now),
        };
        for mut s in snap.closed {
            s.state = ConnState::Closed;
            let mut row = take(s);
            row.closed_at = Some(now);
            self.closed.push(row);
        }
        for s in snap.live {
            let row = take(s);
            self.live.insert(row.key, row);
        }
        let (mut rx, mut tx) = self.totals;
        for r in self.live.values_mut().chain(self.closed.iter_mut()) {
            r.tx_bps = rate(r.counters.tx_bytes, r.prev.tx_bytes, secs);
            r.rx_bps = rate(r.counters.rx_bytes, r.prev.rx_bytes, secs);
            rx = rx.saturating_add(r.counters.rx_bytes.saturating_sub(r.prev.rx_bytes));
            tx = tx.saturating_add(r.counters.tx_bytes.saturating_sub(r.prev.tx_bytes));
            r.prev = r.counters;
        }
        self.totals = (rx, tx);
    }

    /// Removes closed rows whose linger time has passed at `now` (without a
    /// linger time, closed rows leave only at the next snapshot).
    pub fn expire(&mut self, now: Instant) {
        if let Some(linger) = self.linger {
            self.closed.retain(|r| {
                r.closed_at
                    .is_none_or(|t| now.saturating_duration_since(t) < linger)
            });
        }
    }

    /// Bytes received and sent over all connections since the table started.
    pub fn totals(&self) -> (u64, u64) {
        self.totals
    }

    /// Live connections, then those closed since the previous snapshot.
    pub fn rows(&self) -> impl Iterator<Item = &Row> {
        self.live.values().chain(self.closed.iter())
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

/// What the user asked to see.
#[derive(Clone, Debug, Default)]
pub struct Filter {
    pub pids: Vec<u32>,
    pub ports: Vec<u16>,
}

impl Filter {
    pub fn matches(&self, r: &Row) -> bool {
        (self.pids.is_empty() || self.pids.contains(&r.pid))
            && (self.ports.is_empty()
                || self.ports.contains(&r.key.local.port())
                || self.ports.contains(&r.key.remote.port()))
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
        }
    }

    fn snap(live: Vec<ConnSample>, closed: Vec<ConnSample>) -> Snapshot {
        Snapshot {
            live,
            closed,
            drops: Drops::default(),
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
        assert_eq!(r.closed_at, Some(at(1)));
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
        assert_eq!(t.rows().next().unwrap().first_seen, t0);
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
        s.comm = String::new();
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
        };
        assert_eq!(t.rows().filter(|r| f.matches(r)).count(), 1);
        let f = Filter {
            pids: vec![10],
            ports: vec![80],
        };
        assert_eq!(t.rows().filter(|r| f.matches(r)).count(), 2);
        let f = Filter {
            pids: vec![11],
            ports: vec![],
        };
        assert_eq!(t.rows().filter(|r| f.matches(r)).count(), 0);
    }
}
