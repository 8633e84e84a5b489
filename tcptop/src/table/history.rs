//! A bounded history of each connection's rates and RTT, for the sparklines
//! of the detail pane. Each row keeps its own series (the display's table
//! records one point per row per snapshot; batch mode records none).

use std::collections::VecDeque;

/// Points kept per connection: 5 minutes at the default 1 s interval.
pub const CAPACITY: usize = 300;
/// Points kept over all connections (12 bytes each): with more than
/// `BUDGET / CAPACITY` connections, each keeps a shorter history, so memory
/// stays bounded (~20 MB) however many connections there are.
pub const BUDGET: usize = 1_500_000;
/// The shortest history a connection keeps, whatever their number.
pub const MIN_SAMPLES: usize = 16;

/// How many points each of `rows` connections keeps.
pub fn share(rows: usize) -> usize {
    (BUDGET / rows.max(1)).clamp(MIN_SAMPLES, CAPACITY)
}

/// One sample: rates as f32 (a sparkline needs no more precision), RTT in
/// microseconds (0: not known at that sample).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Point {
    pub rx_bps: f32,
    pub tx_bps: f32,
    pub rtt_us: u32,
}

/// One connection's points, oldest first, in one allocation that never
/// holds more than the connection's share.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Series {
    points: VecDeque<Point>,
}

impl Series {
    /// Adds `p`, dropping the oldest points beyond `cap`.
    pub(super) fn push(&mut self, p: Point, cap: usize) {
        let cap = cap.max(1);
        while self.points.len() >= cap {
            self.points.pop_front();
        }
        let len = self.points.len();
        if len == self.points.capacity() {
            // Grow by doubling, but never past the share (a VecDeque
            // doubles to the next power of two: up to 1.7 times the
            // share, held by every row).
            self.points.reserve_exact((2 * len).max(4).min(cap) - len);
        } else if self.points.capacity() > 2 * cap {
            // The per-connection share shrank: give the memory back.
            self.points.shrink_to(cap);
        }
        self.points.push_back(p);
    }

    pub fn iter(&self) -> impl DoubleEndedIterator<Item = &Point> + ExactSizeIterator {
        self.points.iter()
    }

    pub fn len(&self) -> usize {
        self.points.len()
    }

    pub fn is_empty(&self) -> bool {
        self.points.is_empty()
    }

    /// Memory held for points (what the budget bounds).
    pub fn capacity(&self) -> usize {
        self.points.capacity()
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
            rtt_us: Some(70),
            cgroup_id: 0,
            workload: None,
        }
    }

    fn history_of(t: &ConnTable, port: u16) -> &Series {
        t.rows()
            .find(|r| r.key.local.port() == port)
            .unwrap()
            .history()
    }

    #[test]
    fn bounded_and_follows_the_row() {
        let mut t = ConnTable::new();
        t.keep_history();
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
        }
        let s = history_of(&t, 1);
        assert_eq!(s.len(), CAPACITY);
        assert!(s.capacity() <= CAPACITY, "{}", s.capacity());
        let last = s.iter().next_back().unwrap();
        assert_eq!((last.tx_bps, last.rx_bps, last.rtt_us), (10.0, 0.0, 70));
        assert_eq!(history_of(&t, 2).len(), CAPACITY);
        // A new instance on the same tuple starts a new history.
        let mut s = sample(1, 0);
        s.id = 99;
        t.apply(
            Snapshot {
                live: vec![s],
                ..Default::default()
            },
            t0 + Duration::from_secs(1000),
            1.0,
        );
        assert_eq!(history_of(&t, 1).len(), 1);
    }

    #[test]
    fn batch_tables_keep_none() {
        let mut t = ConnTable::new();
        t.apply(
            Snapshot {
                live: vec![sample(1, 5)],
                ..Default::default()
            },
            Instant::now(),
            1.0,
        );
        assert!(history_of(&t, 1).is_empty());
    }

    /// 20,000 connections for longer than the full history: memory is held
    /// to the budget, and every connection still keeps some history.
    #[test]
    fn many_connections_share_the_budget() {
        let mut t = ConnTable::new();
        t.keep_history();
        let t0 = Instant::now();
        let live: Vec<ConnSample> = (0..20_000u32)
            .map(|i| ConnSample {
                key: ConnKey {
                    local: std::net::SocketAddr::from(([10, 0, (i >> 8) as u8, i as u8], 1000)),
                    ..sample(1, 0).key
                },
                id: u64::from(i) + 1,
                ..sample(1, 0)
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
        }
        assert_eq!(t.len(), 20_000);
        let held: usize = t.rows().map(|r| r.history().capacity()).sum();
        assert!(held <= BUDGET, "{held} points held");
        assert!(t.rows().all(|r| r.history().len() >= MIN_SAMPLES));
    }

    #[test]
    fn share_is_clamped() {
        assert_eq!(share(0), CAPACITY);
        assert_eq!(share(1), CAPACITY);
        assert_eq!(share(BUDGET / 100), 100);
        assert_eq!(share(10_000_000), MIN_SAMPLES);
    }
}
