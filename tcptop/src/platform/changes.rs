//! What a source reported last, so that a snapshot can carry only what
//! changed ([`Snapshot::partial`](crate::model::Snapshot::partial)).
//!
//! Most connections on a busy server are idle at any one snapshot; a
//! source that reads every one of them each time (a map read, a socket
//! diagnostics dump) still need not copy them into the snapshot, nor the
//! table look each one up. Per connection this keeps 16 bytes: a hash of
//! its key and a hash of everything the sample says. A sample whose hash
//! matches the one reported last is left out; two different samples
//! hashing alike (1 in 2^64) would hide one change until the next.
//! Connections are told apart by the hash of their key: two keys hashing
//! alike only make both report every time.
//!
//! A connection the source stops reporting without a CLOSED sample (a
//! lost ring-buffer record) would stay in the table for good: when that is
//! seen, the next snapshot is complete again.

use std::hash::{BuildHasher, Hash, Hasher};

use foldhash::HashMap;

use crate::model::{ConnKey, ConnSample};

pub struct Reported {
    /// Key hash → (sample hash, generation when last seen).
    last: HashMap<u64, (u64, u32)>,
    generation: u32,
    /// Entries seen in this generation.
    touched: usize,
    /// This snapshot reports every connection.
    complete: bool,
    /// A complete snapshot's (key hash, sample hash) pairs, in report
    /// order, put into `last` at once in the order of its buckets.
    pending: Vec<(u64, u64)>,
    hasher: foldhash::fast::FixedState,
}

impl Default for Reported {
    fn default() -> Self {
        Reported {
            last: HashMap::default(),
            generation: 0,
            touched: 0,
            complete: true,
            pending: Vec::new(),
            hasher: foldhash::fast::FixedState::default(),
        }
    }
}

impl Reported {
    /// Starts a snapshot; whether it reports every connection (the first
    /// one, and the one after a connection went without a CLOSED sample).
    pub fn begin(&mut self) -> bool {
        self.generation = self.generation.wrapping_add(1);
        self.touched = 0;
        self.complete
    }

    /// Makes room for `n` connections at once (more than are known: the
    /// difference is new), instead of growing a step at a time: at
    /// 200,000 connections the first snapshot's 17 regrowths left 6.5 MB
    /// of freed tables in the heap.
    pub fn expect(&mut self, n: usize) {
        self.last.reserve(n.saturating_sub(self.last.len()));
        if self.complete {
            self.pending.reserve_exact(n);
        }
    }

    /// Whether `s` goes into this snapshot: new, changed since it was last
    /// reported, or the snapshot is complete. Call once per connection.
    pub fn keep(&mut self, s: &ConnSample) -> bool {
        let key = self.key_hash(&s.key);
        let sample = self.sample_hash(key, s);
        if self.complete {
            // Kept whatever it says: noted later, with the others.
            self.pending.push((key, sample));
            return true;
        }
        self.note(key, sample)
    }

    /// Notes `sample` as what `key` said last; whether that changed.
    fn note(&mut self, key: u64, sample: u64) -> bool {
        let generation = self.generation;
        let entry = self.last.entry(key).or_insert((!sample, 0));
        if entry.1 != generation {
            self.touched += 1;
        }
        entry.1 = generation;
        let changed = entry.0 != sample;
        entry.0 = sample;
        changed
    }

    /// Notes a complete snapshot's samples, in the order of the buckets
    /// they go to: one by one in report order, each touched a random line
    /// of a table of 6 MB (200,000 connections: 46 ms of the first
    /// snapshot, nearly all cache misses). Samples of one key stay in
    /// their order (the last one is what it said last).
    fn note_pending(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        let pending = std::mem::take(&mut self.pending);
        self.last
            .reserve(pending.len().saturating_sub(self.last.len()));
        // hashbrown's bucket is the low bits of the hash; ordering by
        // them is only a matter of speed, never of what is noted.
        let bits = (self.last.capacity() * 8 / 7)
            .next_power_of_two()
            .trailing_zeros();
        let hasher = self.last.hasher().clone();
        // The bucket's bits on top, the place in report order below (8
        // bytes a sample): each hash made once, and a key's samples in
        // their order. (A table too large for both: report order.)
        let low = 64 - bits.min(64);
        let place = if low >= 64 {
            u64::MAX
        } else {
            (1u64 << low) - 1
        };
        let mut order: Vec<u64> = Vec::with_capacity(pending.len());
        if bits > 0 && (pending.len() as u64) <= place {
            order.extend(
                pending
                    .iter()
                    .enumerate()
                    .map(|(i, &(k, _))| hasher.hash_one(k) << low | i as u64),
            );
            order.sort_unstable();
        } else {
            order.extend(0..pending.len() as u64);
        }
        for &o in &order {
            if let Some(&(key, sample)) = pending.get((o & place) as usize) {
                self.note(key, sample);
            }
        }
    }

    /// `key` ended (its CLOSED sample is in this snapshot).
    pub fn closed(&mut self, key: &ConnKey) {
        self.note_pending();
        let k = self.key_hash(key);
        if let Some(&(_, g)) = self.last.get(&k) {
            if g == self.generation {
                self.touched -= 1;
            }
            self.last.remove(&k);
        }
    }

    /// Ends the snapshot: forgets connections not reported in it, and
    /// makes the next snapshot complete if there were any (they went
    /// without a CLOSED sample, and the table still has them).
    pub fn finish(&mut self) {
        self.note_pending();
        self.complete = false;
        if self.touched == self.last.len() {
            return;
        }
        let generation = self.generation;
        self.last.retain(|_, &mut (_, g)| g == generation);
        self.complete = true;
    }

    /// Ends a snapshot that looked only at some connections (those the
    /// source knew had moved): the others were not missed.
    pub fn finish_partial(&mut self) {
        self.note_pending();
        self.complete = false;
    }

    fn key_hash(&self, k: &ConnKey) -> u64 {
        self.hasher.hash_one(k)
    }

    /// A hash of everything `s` says, its key given as the key's hash
    /// `key` (the addresses are the slow part to hash: once is enough).
    fn sample_hash(&self, key: u64, s: &ConnSample) -> u64 {
        let mut h = self.hasher.build_hasher();
        key.hash(&mut h);
        s.id.hash(&mut h);
        s.pid.hash(&mut h);
        s.comm.hash(&mut h);
        s.state.hash(&mut h);
        let c = &s.counters;
        (
            c.tx_bytes,
            c.rx_bytes,
            c.tx_packets,
            c.rx_packets,
            c.retrans,
        )
            .hash(&mut h);
        s.rtt_us.hash(&mut h);
        s.cgroup_id.hash(&mut h);
        s.active.hash(&mut h);
        h.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::model::test_sample as sample;

    fn kept(r: &mut Reported, samples: &[ConnSample]) -> (bool, Vec<u16>) {
        let complete = r.begin();
        let kept = samples
            .iter()
            .filter(|s| r.keep(s))
            .map(|s| s.key.local.port())
            .collect();
        (complete, kept)
    }

    #[test]
    fn only_changes_after_the_first() {
        let mut r = Reported::default();
        assert_eq!(
            kept(&mut r, &[sample(1, 0), sample(2, 0)]),
            (true, vec![1, 2])
        );
        r.finish();
        assert_eq!(
            kept(&mut r, &[sample(1, 0), sample(2, 5)]),
            (false, vec![2])
        );
        r.finish();
        assert_eq!(
            kept(&mut r, &[sample(1, 0), sample(2, 5), sample(3, 0)]),
            (false, vec![3])
        );
        r.finish();
        let mut owner = sample(1, 0);
        owner.pid = 2;
        assert_eq!(
            kept(&mut r, &[owner.clone(), sample(2, 5), sample(3, 0)]),
            (false, vec![1])
        );
        r.finish();
        // One ends with its CLOSED sample: nothing is missing.
        assert_eq!(kept(&mut r, &[sample(2, 5), sample(3, 0)]), (false, vec![]));
        r.closed(&owner.key);
        r.finish();
        assert_eq!(kept(&mut r, &[sample(2, 5), sample(3, 0)]), (false, vec![]));
        r.finish();
    }

    #[test]
    fn a_connection_gone_without_closed_makes_the_next_complete() {
        let mut r = Reported::default();
        kept(&mut r, &[sample(1, 0), sample(2, 0)]);
        r.finish();
        assert_eq!(kept(&mut r, &[sample(2, 0)]), (false, vec![]));
        r.finish();
        assert_eq!(kept(&mut r, &[sample(2, 0)]), (true, vec![2]));
        r.finish();
        assert_eq!(kept(&mut r, &[sample(2, 0)]), (false, vec![]));
        r.finish();
        // A closed one that was also reported live in the same snapshot
        // (its record read, then its CLOSE drained) is not missing.
        assert_eq!(kept(&mut r, &[sample(2, 1)]), (false, vec![2]));
        r.closed(&sample(2, 1).key);
        r.finish();
        assert_eq!(kept(&mut r, &[]), (false, vec![]));
    }

    /// A complete snapshot's samples are noted together, in bucket order:
    /// what each key said last is its last sample, whatever the order.
    #[test]
    fn a_complete_snapshot_noted_at_once() {
        let mut r = Reported::default();
        let all: Vec<ConnSample> = (1..=20_000u16).map(|p| sample(p, 0)).collect();
        let mut first = all.clone();
        // One key twice: the later sample is what it said last.
        first.push(sample(7, 9));
        r.expect(first.len());
        let (complete, kept_ports) = kept(&mut r, &first);
        assert!(complete);
        assert_eq!(kept_ports.len(), first.len());
        r.finish();
        let mut next = all.clone();
        next[6] = sample(7, 9);
        next[99] = sample(100, 1);
        next[19_999] = sample(20_000, 3);
        assert_eq!(kept(&mut r, &next), (false, vec![100, 20_000]));
        r.finish();
        // Nothing went missing: the next is not complete.
        assert_eq!(kept(&mut r, &next), (false, vec![]));
    }
}
