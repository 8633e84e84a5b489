//! A row's counter samples for the rolling rate windows, in 16 bytes and
//! no allocation while the counters do not move.
//!
//! Counters are sampled only when they moved: between two samples they
//! were constant. An idle row needs a single sample (its counters are the
//! row's), so only its time is kept; a ring is allocated when the counters
//! move, and let go once the last move is older than the longest window.
//! At 200,000 idle rows a ring each was 64 bytes a row (the ring and its
//! one-sample allocation): 13 MB.

use std::collections::VecDeque;
use std::time::Duration;

/// `still` when there is no sample outside a ring.
const NONE: u64 = u64::MAX;

/// A sample: (time in nanoseconds since the table's first snapshot,
/// tx_bytes, rx_bytes). 24 bytes (an `Instant` would make it 32).
pub(super) type Sample = (u64, u64, u64);

#[derive(Clone, Debug, PartialEq)]
pub(super) struct Samples {
    /// Without a ring: the time of the only sample, whose counters are the
    /// row's current ones ([`NONE`]: no sample).
    still: u64,
    #[expect(
        clippy::box_collection,
        reason = "8 bytes in each of 200,000 rows instead of a 32-byte VecDeque"
    )]
    ring: Option<Box<VecDeque<Sample>>>,
}

impl Default for Samples {
    fn default() -> Self {
        Samples {
            still: NONE,
            ring: None,
        }
    }
}

impl Samples {
    pub(super) fn is_empty(&self) -> bool {
        self.still == NONE && self.ring.is_none()
    }

    /// One sample and no ring: recording the same counters again changes
    /// nothing.
    pub(super) fn is_still(&self) -> bool {
        self.still != NONE && self.ring.is_none()
    }

    /// Asks the processor for this row's ring (`deep`: the newest
    /// sample's line, which the next pass reads and writes beside; else
    /// the ring's header, so that a later deep call does not wait on it).
    pub(super) fn prefetch(&self, deep: bool) {
        super::prefetch_ring(self.ring.as_deref(), deep);
    }

    /// Samples held (1 for a row idle over the longest window).
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        match &self.ring {
            Some(ring) => ring.len(),
            None => usize::from(self.still != NONE),
        }
    }

    /// The ring's room, for tests of its bound (0 without one).
    #[cfg(test)]
    pub(super) fn capacity(&self) -> usize {
        self.ring.as_ref().map_or(0, |r| r.capacity())
    }

    /// Records counters `c` at `now`; `prev` are those of the previous
    /// snapshot, which the newest sample holds. `longest` is the longest
    /// window: older samples are only kept as its baseline.
    pub(super) fn record(&mut self, now: u64, c: (u64, u64), prev: (u64, u64), longest: u64) {
        let Some(ring) = &mut self.ring else {
            if self.still == NONE {
                // The first sample: its counters are the row's.
                self.still = now;
            } else if c != prev {
                // They moved: the still sample becomes the baseline.
                let mut ring = VecDeque::with_capacity(4);
                ring.push_back((self.still, prev.0, prev.1));
                ring.push_back((now, c.0, c.1));
                self.ring = Some(Box::new(ring));
                self.still = NONE;
            }
            return;
        };
        debug_assert!(ring.back().is_none_or(|s| (s.1, s.2) == prev));
        if c == prev {
            // Idle: once the last move is older than the longest window,
            // every window's baseline is the newest sample, and that alone
            // is kept (as a time: its counters are the row's).
            if let Some(&(t, _, _)) = ring.back()
                && now.saturating_sub(t) >= longest
            {
                self.still = t;
                self.ring = None;
            }
            return;
        }
        if ring.len() == ring.capacity() {
            // Full: samples older than the longest window leave now, not
            // at every push, keeping one at or beyond it as the baseline.
            // The ring holds at most twice what the window needs.
            while ring.len() > 1
                && ring
                    .get(1)
                    .is_some_and(|s| now.saturating_sub(s.0) >= longest)
            {
                ring.pop_front();
            }
        }
        ring.push_back((now, c.0, c.1));
    }

    /// The baseline of a window `span` ending at `now`, for a row whose
    /// counters are `c`: the newest sample at least `span` old, as (`span`,
    /// its counters); if none is that old, the oldest, as (its age, its
    /// counters). None without samples.
    pub(super) fn base(&self, now: u64, span: Duration, c: (u64, u64)) -> Option<Base> {
        let age = |t: u64| Duration::from_nanos(now.saturating_sub(t));
        match &self.ring {
            None if self.still == NONE => None,
            None => {
                let a = age(self.still);
                Some((a.min(span), c.0, c.1))
            }
            Some(ring) => match ring.iter().rev().find(|s| age(s.0) >= span) {
                Some(&(_, tx, rx)) => Some((span, tx, rx)),
                None => ring.front().map(|&(t, tx, rx)| (age(t), tx, rx)),
            },
        }
    }
}

/// A window's baseline: (its length, tx_bytes, rx_bytes).
pub(super) type Base = (Duration, u64, u64);

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;
    const LONGEST: u64 = 40 * S;

    #[test]
    fn idle_rows_allocate_nothing() {
        let mut s = Samples::default();
        assert!(s.is_empty());
        assert_eq!(s.base(0, Duration::from_secs(2), (5, 5)), None);
        s.record(0, (5, 7), (0, 0), LONGEST);
        for t in 1..100 {
            s.record(t * S, (5, 7), (5, 7), LONGEST);
        }
        assert!(s.ring.is_none());
        assert_eq!(s.len(), 1);
        // Its age, up to the window, and its counters: a rate of 0.
        assert_eq!(
            s.base(99 * S, Duration::from_secs(10), (5, 7)),
            Some((Duration::from_secs(10), 5, 7))
        );
        assert_eq!(
            s.base(0, Duration::from_secs(10), (5, 7)),
            Some((Duration::ZERO, 5, 7))
        );
    }

    /// Against the plainest model (every sample, none ever dropped): each
    /// window's baseline is the same, through moves and idle stretches,
    /// and the ring stays bounded.
    #[test]
    fn same_baselines_as_every_sample_kept() {
        let mut s = Samples::default();
        let mut all: Vec<Sample> = Vec::new();
        let mut c = (0u64, 0u64);
        let mut x: u64 = 3;
        for step in 0..5_000u64 {
            let now = step * S / 2;
            let prev = c;
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            // Busy, then idle past the longest window, then busy again.
            if step % 400 < 250 && !(x >> 40).is_multiple_of(3) {
                c.0 += (x >> 20) % 1000;
                c.1 += 1;
            }
            s.record(now, c, prev, LONGEST);
            if all.last().is_none_or(|l| (l.1, l.2) != c) {
                all.push((now, c.0, c.1));
            }
            for span in [2, 10, 40] {
                let span = Duration::from_secs(span);
                let age = |t: u64| Duration::from_nanos(now - t);
                let want = match all.iter().rev().find(|a| age(a.0) >= span) {
                    Some(&(_, tx, rx)) => (span, tx, rx),
                    None => all.first().map(|&(t, tx, rx)| (age(t), tx, rx)).unwrap(),
                };
                let got = s.base(now, span, c).unwrap();
                // Same counters; the age differs only where the model's
                // oldest sample is younger than the window.
                assert_eq!(
                    (got.1, got.2),
                    (want.1, want.2),
                    "step {step} span {span:?}"
                );
                assert_eq!(got.0, want.0, "step {step} span {span:?}");
            }
            // 40 s at 0.5 s a sample: 81 needed, the ring at most twice.
            assert!(s.capacity() <= 2 * 128, "{}", s.capacity());
        }
    }

    #[test]
    fn a_move_keeps_the_baseline_and_idling_lets_the_ring_go() {
        let mut s = Samples::default();
        s.record(0, (0, 0), (0, 0), LONGEST);
        s.record(10 * S, (100, 0), (0, 0), LONGEST);
        assert_eq!(s.len(), 2);
        // 2 s ending at 11 s: the move at 10 s is its baseline.
        assert_eq!(
            s.base(11 * S, Duration::from_secs(2), (100, 0)),
            Some((Duration::from_secs(2), 0, 0))
        );
        assert_eq!(
            s.base(11 * S, Duration::from_secs(1), (100, 0)),
            Some((Duration::from_secs(1), 100, 0))
        );
        // Idle for less than the longest window: the ring stays.
        s.record(49 * S, (100, 0), (100, 0), LONGEST);
        assert_eq!(s.len(), 2);
        // Then it goes, and the windows see the same baselines.
        s.record(50 * S, (100, 0), (100, 0), LONGEST);
        assert!(s.ring.is_none());
        assert_eq!(
            s.base(51 * S, Duration::from_secs(40), (100, 0)),
            Some((Duration::from_secs(40), 100, 0))
        );
        // And comes back on the next move, from that baseline: still
        // since the move at 10 s.
        s.record(52 * S, (150, 0), (100, 0), LONGEST);
        assert_eq!(s.len(), 2);
        assert_eq!(
            s.base(52 * S, Duration::from_secs(10), (150, 0)),
            Some((Duration::from_secs(10), 100, 0))
        );
    }
}
