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

/// One connection's points, oldest first, as runs of equal points: an idle
/// connection's history (the same zero rates and RTT, snapshot after
/// snapshot) is one run kept in the row, with nothing allocated (at
/// 200,000 idle connections, 16 points each were ~40 MB). Runs that ended
/// are in one allocation that never holds more than the share.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Series {
    /// Older runs, oldest first: a point and how many snapshots had it
    /// (boxed: 8 bytes in every row, the ring only in rows whose rates
    /// moved).
    #[expect(
        clippy::box_collection,
        reason = "8 bytes in each of 200,000 rows instead of a 32-byte VecDeque"
    )]
    runs: Option<Box<VecDeque<(Point, u32)>>>,
    /// The newest run (`count` 0: no points yet).
    last: Point,
    count: u32,
    /// Points in all runs.
    len: u32,
}

impl Series {
    /// Adds `p`, dropping the oldest points beyond `cap`.
    pub(super) fn push(&mut self, p: Point, cap: usize) {
        let cap = u32::try_from(cap.max(1)).unwrap_or(u32::MAX);
        if self.count > 0 && p == self.last {
            self.count += 1;
        } else {
            if self.count > 0 {
                let runs = self.runs.get_or_insert_default();
                let len = runs.len();
                let share = cap as usize;
                if len == runs.capacity() && len < share {
                    // Grow by doubling, but never past the share (a
                    // VecDeque doubles to the next power of two).
                    runs.reserve_exact((2 * len).max(4).min(share) - len);
                } else if runs.capacity() > 2 * share {
                    // The per-connection share shrank: give the memory back.
                    runs.shrink_to(share);
                }
                runs.push_back((self.last, self.count));
            }
            self.last = p;
            self.count = 1;
        }
        self.len += 1;
        while self.len > cap {
            match self.runs.as_mut().and_then(|r| r.front_mut()) {
                Some(front) if front.1 > 1 => front.1 -= 1,
                Some(_) => {
                    if let Some(runs) = &mut self.runs {
                        runs.pop_front();
                        if runs.is_empty() {
                            // Only the newest run is left: in the row.
                            self.runs = None;
                        }
                    }
                }
                None => self.count -= 1,
            }
            self.len -= 1;
        }
    }

    /// Adds `n` points `p`, as many calls of [`push`](Self::push) would.
    pub(super) fn push_n(&mut self, p: Point, n: u32, cap: usize) {
        if n == 0 {
            return;
        }
        if self.runs.is_none() && (self.count == 0 || p == self.last) {
            // One run: it grows, and its oldest points go past `cap`.
            let cap = u32::try_from(cap.max(1)).unwrap_or(u32::MAX);
            self.last = p;
            self.count = self.count.saturating_add(n).min(cap);
            self.len = self.count;
            return;
        }
        // `cap` pushes of one point leave that point alone in the series:
        // more would change nothing.
        for _ in 0..(n as usize).min(cap.max(1)) {
            self.push(p, cap);
        }
    }

    /// As [`Samples::prefetch`](super::samples::Samples::prefetch), for
    /// the runs (`deep`: the newest run's line).
    pub(super) fn prefetch(&self, deep: bool) {
        super::prefetch_ring(self.runs.as_deref(), deep);
    }

    /// The newest point (the default point if there is none).
    pub(super) fn last(&self) -> Point {
        self.last
    }

    /// All its points are one run of the same point (and there is one).
    pub(super) fn is_one_run(&self) -> bool {
        self.runs.is_none() && self.count > 0
    }

    /// The points, oldest first.
    pub fn iter(&self) -> impl Iterator<Item = Point> + '_ {
        self.runs
            .iter()
            .flat_map(|r| r.iter())
            .copied()
            .chain(std::iter::once((self.last, self.count)))
            .flat_map(|(p, n)| std::iter::repeat_n(p, n as usize))
    }

    pub fn len(&self) -> usize {
        self.len as usize
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Runs held in memory outside the row (what the budget bounds).
    pub fn capacity(&self) -> usize {
        self.runs.as_ref().map_or(0, |r| r.capacity())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{ConnKey, ConnSample, Snapshot};
    use crate::table::ConnTable;
    use std::time::{Duration, Instant};

    use crate::model::test_sample as sample;

    fn history_of(t: &ConnTable, port: u16) -> std::borrow::Cow<'_, Series> {
        t.history(t.rows().find(|r| r.key.local.port() == port).unwrap())
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
        let last = s.iter().last().unwrap();
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
            // Rates that change at every snapshot: no two points alike.
            let mut live = live.clone();
            for c in &mut live {
                c.counters.tx_bytes = i * i;
            }
            t.apply(
                Snapshot {
                    live,
                    ..Default::default()
                },
                t0 + Duration::from_secs(i),
                1.0,
            );
        }
        assert_eq!(t.len(), 20_000);
        let held: usize = t.rows().map(|r| t.history(r).capacity()).sum();
        assert!(held <= BUDGET, "{held} points held");
        assert!(t.rows().all(|r| t.history(r).len() >= MIN_SAMPLES));
    }

    /// An idle connection's history is one run, in the row: nothing
    /// allocated, however long; a change starts a new run, and the oldest
    /// points leave first.
    #[test]
    fn runs_of_equal_points() {
        let mut s = Series::default();
        let p = |rx| Point {
            rx_bps: rx,
            tx_bps: 0.0,
            rtt_us: 9,
        };
        for _ in 0..500 {
            s.push(p(0.0), CAPACITY);
        }
        assert_eq!((s.len(), s.capacity()), (CAPACITY, 0));
        assert!(s.iter().all(|x| x == p(0.0)));
        s.push(p(5.0), CAPACITY);
        s.push(p(5.0), CAPACITY);
        s.push(p(0.0), CAPACITY);
        assert_eq!(s.len(), CAPACITY);
        let all: Vec<Point> = s.iter().collect();
        assert_eq!(all.len(), CAPACITY);
        assert_eq!(&all[CAPACITY - 3..], &[p(5.0), p(5.0), p(0.0)]);
        assert!(all[..CAPACITY - 3].iter().all(|x| *x == p(0.0)));
        // A smaller share: the oldest go, across runs.
        s.push(p(1.0), 3);
        let all: Vec<Point> = s.iter().collect();
        assert_eq!(all, [p(5.0), p(0.0), p(1.0)]);
    }

    /// Against the plainest model (every point, the newest `cap` kept),
    /// through long runs, short ones, a share that shrinks and grows:
    /// the points, and the allocation bounded by twice the share.
    #[test]
    fn same_points_as_a_plain_list() {
        let p = |rx: u32| Point {
            rx_bps: rx as f32,
            tx_bps: 0.0,
            rtt_us: 9,
        };
        let mut s = Series::default();
        let mut model: Vec<Point> = Vec::new();
        let mut x: u64 = 7;
        for step in 0..20_000u32 {
            // The share moves as the table grows and shrinks.
            let cap = match step / 2_000 % 4 {
                0 => CAPACITY,
                1 => MIN_SAMPLES,
                2 => 40,
                _ => 5,
            };
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            // Mostly runs of a few equal points, some long.
            let point = p(((x >> 33) % if step % 500 < 100 { 1 } else { 3 }) as u32);
            s.push(point, cap);
            model.push(point);
            if model.len() > cap {
                model.drain(..model.len() - cap);
            }
            assert_eq!(s.iter().collect::<Vec<_>>(), model, "step {step}");
            assert_eq!(s.len(), model.len());
            // (A smaller share gives memory back at the next new run.)
            assert!(
                s.capacity() <= 2 * CAPACITY,
                "step {step}: {}",
                s.capacity()
            );
            if step % 2_000 >= 1_000 {
                assert!(
                    s.capacity() <= 2 * cap.max(4),
                    "step {step}: {}",
                    s.capacity()
                );
            }
        }
    }

    #[test]
    fn share_is_clamped() {
        assert_eq!(share(0), CAPACITY);
        assert_eq!(share(1), CAPACITY);
        assert_eq!(share(BUDGET / 100), 100);
        assert_eq!(share(10_000_000), MIN_SAMPLES);
    }

    /// `push_n` is `n` pushes, in every state a series can be in.
    #[test]
    fn push_n_is_n_pushes() {
        let p = |rx| Point {
            rx_bps: rx,
            tx_bps: 0.0,
            rtt_us: 9,
        };
        for before in [
            vec![],
            vec![1.0],
            vec![1.0, 1.0, 2.0],
            vec![2.0, 1.0, 1.0, 1.0],
        ] {
            for cap in [1, 2, 3, 5, 16] {
                for n in [0u32, 1, 2, 4, 17, 1000] {
                    for with in [1.0, 2.0] {
                        let mut a = Series::default();
                        for &x in &before {
                            a.push(p(x), cap);
                        }
                        let mut b = a.clone();
                        a.push_n(p(with), n, cap);
                        for _ in 0..n {
                            b.push(p(with), cap);
                        }
                        let what = |s: &Series| (s.iter().collect::<Vec<_>>(), s.len());
                        assert_eq!(what(&a), what(&b), "{before:?} cap {cap} n {n} {with}");
                    }
                }
            }
        }
    }
}
