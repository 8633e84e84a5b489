//! A bounded history of each connection's rates and RTT, for the sparklines
//! of the detail pane.

use std::collections::{HashMap, VecDeque};

use super::items::ItemId;
use crate::table::Row;

/// Samples kept per connection: 5 minutes at the default 1 s interval.
pub const CAPACITY: usize = 300;
/// Samples kept over all connections (12 bytes each): with more than
/// `BUDGET / CAPACITY` connections, each keeps a shorter history, so memory
/// stays bounded (~20 MB) however many connections there are.
pub const BUDGET: usize = 1_500_000;
/// The shortest history a connection keeps, whatever their number.
pub const MIN_SAMPLES: usize = 16;

/// One connection's samples, oldest first (rates as f32: a sparkline
/// needs no more precision).
#[derive(Clone, Debug, Default)]
pub struct Series {
    pub rx_bps: VecDeque<f32>,
    pub tx_bps: VecDeque<f32>,
    /// RTT in microseconds (0: not known at that sample).
    pub rtt_us: VecDeque<u32>,
    seen: u64,
}

impl Series {
    fn push(&mut self, r: &Row, cap: usize) {
        while self.rx_bps.len() >= cap {
            self.rx_bps.pop_front();
            self.tx_bps.pop_front();
            self.rtt_us.pop_front();
        }
        self.rx_bps.push_back(r.rx_bps as f32);
        self.tx_bps.push_back(r.tx_bps as f32);
        self.rtt_us.push_back(r.rtt_us.unwrap_or(0));
        if self.rx_bps.capacity() > 2 * cap.max(MIN_SAMPLES) {
            // The per-connection share shrank: give the memory back.
            self.rx_bps.shrink_to(cap);
            self.tx_bps.shrink_to(cap);
            self.rtt_us.shrink_to(cap);
        }
    }

    pub fn len(&self) -> usize {
        self.rx_bps.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rx_bps.is_empty()
    }
}

/// Series of every connection in the table; a connection's series leaves
/// with it.
#[derive(Debug, Default)]
pub struct History {
    series: HashMap<ItemId, Series, foldhash::fast::RandomState>,
    generation: u64,
}

impl History {
    /// Adds one sample per row, and forgets connections not in `rows`.
    pub fn record<'a>(&mut self, rows: impl Iterator<Item = &'a Row>) {
        self.generation += 1;
        let generation = self.generation;
        // The table's iterators know their length exactly.
        let (low, high) = rows.size_hint();
        let n = high.unwrap_or(low).max(1);
        let cap = (BUDGET / n).clamp(MIN_SAMPLES, CAPACITY);
        for r in rows {
            let s = self.series.entry(ItemId::Conn(r.key, r.id)).or_default();
            s.push(r, cap);
            s.seen = generation;
        }
        self.series.retain(|_, s| s.seen == generation);
    }

    pub fn get(&self, id: &ItemId) -> Option<&Series> {
        self.series.get(id)
    }

    pub fn len(&self) -> usize {
        self.series.len()
    }

    pub fn is_empty(&self) -> bool {
        self.series.is_empty()
    }

    /// Samples held over all connections.
    pub fn samples(&self) -> usize {
        self.series.values().map(Series::len).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{ConnKey, ConnSample, ConnState, Counters, Proto, Snapshot};
    use crate::table::ConnTable;
    use std::time::{Duration, Instant};

    fn sample(port: u16, tx: u64) -> ConnSample {
        ConnSample {
            key: ConnKey {
                proto: Proto::Tcp,
                local: format!("127.0.0.1:{port}").parse().unwrap(),
                remote: "127.0.0.1:80".parse().unwrap(),
                netns: 1,
            },
            id: u64::from(port),
            pid: 1,
            comm: "x".into(),
            state: ConnState::Established,
            counters: Counters {
                tx_bytes: tx,
                ..Default::default()
            },
            rtt_us: None,
            cgroup_id: 0,
            workload: None,
        }
    }

    #[test]
    fn bounded_and_pruned() {
        let mut t = ConnTable::new();
        let mut h = History::default();
        let t0 = Instant::now();
        for i in 0..(CAPACITY as u64 + 10) {
            let live = vec![sample(1, i * 10), sample(2, 0)];
            t.apply(
                Snapshot {
                    live,
                    ..Default::default()
                },
                t0 + Duration::from_secs(i),
                1.0,
            );
            h.record(t.rows());
        }
        let id = |p: u16| {
            let s = sample(p, 0);
            ItemId::Conn(s.key, s.id)
        };
        let s = h.get(&id(1)).unwrap();
        assert_eq!(s.len(), CAPACITY);
        assert_eq!(s.tx_bps.back(), Some(&10.0));
        assert_eq!(h.samples(), 2 * CAPACITY);
        assert_eq!(h.len(), 2);
        t.apply(
            Snapshot {
                live: vec![sample(1, 0)],
                ..Default::default()
            },
            t0 + Duration::from_secs(1000),
            1.0,
        );
        h.record(t.rows());
        assert!(
            h.get(&id(2)).is_none(),
            "a connection that left is forgotten"
        );
    }
}

#[cfg(test)]
mod budget_tests {
    use super::*;
    use crate::model::{ConnKey, ConnSample, ConnState, Counters, Proto, Snapshot};
    use crate::table::ConnTable;
    use std::time::{Duration, Instant};

    /// 20,000 connections for longer than the full history: memory is held
    /// to the budget, and every connection still keeps some history.
    #[test]
    fn many_connections_share_the_budget() {
        let mut t = ConnTable::new();
        let mut h = History::default();
        let t0 = Instant::now();
        let live: Vec<ConnSample> = (0..20_000u32)
            .map(|i| ConnSample {
                key: ConnKey {
                    proto: Proto::Tcp,
                    local: std::net::SocketAddr::from(([10, 0, (i >> 8) as u8, i as u8], 1000)),
                    remote: "127.0.0.1:80".parse().unwrap(),
                    netns: 1,
                },
                id: u64::from(i) + 1,
                pid: 1,
                comm: "x".into(),
                state: ConnState::Established,
                counters: Counters::default(),
                rtt_us: None,
                cgroup_id: 0,
                workload: None,
            })
            .collect();
        for i in 0..(CAPACITY as u64 + 5) {
            t.apply(
                Snapshot {
                    live: live.clone(),
                    ..Default::default()
                },
                t0 + Duration::from_secs(i),
                1.0,
            );
            h.record(t.rows());
        }
        assert_eq!(h.len(), 20_000);
        assert!(h.samples() <= BUDGET, "{} samples", h.samples());
        assert!(h.series.values().all(|s| s.len() >= MIN_SAMPLES));
    }
}
