//! Connections open before start that the lazy walk (`owners.rs`,
//! `tcptop_owners_lazy`) left without a kernel record: their baselines,
//! by socket.
//!
//! The walk hands each idle connection's first sample to user space
//! instead of inserting a record (at 200,000 connections the table to
//! hold them was 78 MB of kernel memory zeroed at start-up). The
//! connection's record is made later by a hook, at its first call or on
//! its way out of ESTABLISHED, with a baseline of its own taken then: what
//! moved between the walk and that moment (an ACK for data queued before
//! start, a call in flight) would be lost. So every sample of such a
//! record, and its CLOSE, is rebased here on the walk's baseline (the
//! earlier, smaller one), as `diagview::rebase` does for connections
//! adopted from a dump. 40 bytes a connection; an entry leaves with the
//! connection's CLOSE.

use std::hash::BuildHasher;

use tcptop_common::{CONN_APP, ConnStats, ORIGIN_EXISTING};

use super::diagview::{self, Baseline};

/// An application byte count the walk could not read (the socket moved
/// while it read): only the record's own baseline counts then.
const UNKNOWN: u64 = u64::MAX;

/// The walk's baseline of each connection it left without a record, by
/// its `struct sock` address (the record's key).
#[derive(Debug, Default)]
pub struct Bases {
    by_sk: foldhash::HashMap<u64, Base>,
}

/// A [`Baseline`] and a check of the connection's endpoints: a baseline
/// left behind (its CLOSE lost to a full ring) is not applied to another
/// connection that later has the same socket address. 32 bytes.
#[derive(Clone, Copy, Debug)]
struct Base {
    app_tx: u64,
    app_rx: u64,
    segs_in: u32,
    segs_out: u32,
    retrans: u32,
    /// [`check`] of the connection's endpoints.
    check: u32,
}

impl Base {
    fn baseline(&self) -> Baseline {
        Baseline {
            app_tx: self.app_tx,
            app_rx: self.app_rx,
            segs_in: self.segs_in,
            segs_out: self.segs_out,
            retrans: self.retrans,
        }
    }
}

/// A hash of a record's endpoints and namespace (a check, not a key).
fn check(st: &ConnStats) -> u32 {
    let t = &st.tuple;
    let h = foldhash::fast::FixedState::default()
        .hash_one((t.saddr, t.daddr, t.sport, t.dport, t.netns));
    (h ^ (h >> 32)) as u32
}

impl Bases {
    /// Keeps the walk's record `st` of socket `sk` as its baseline, unless
    /// one is kept already (a socket held by several processes is written
    /// once for each; the first, the lowest process id, names it). Whether
    /// it was new.
    pub fn note(&mut self, sk: u64, st: &ConnStats) -> bool {
        let app = st.flags & CONN_APP != 0;
        let base = Base {
            app_tx: if app { st.app_tx_base } else { UNKNOWN },
            app_rx: if app { st.app_rx_base } else { UNKNOWN },
            segs_in: st.segs_in_base,
            segs_out: st.segs_out_base,
            retrans: st.retrans_base,
            check: check(st),
        };
        match self.by_sk.entry(sk) {
            std::collections::hash_map::Entry::Occupied(_) => false,
            std::collections::hash_map::Entry::Vacant(v) => {
                v.insert(base);
                true
            }
        }
    }

    /// Rebases the copy `st` of socket `sk`'s record on the walk's
    /// baseline, if it is the record of a connection the walk left out.
    pub fn rebase(&self, sk: u64, st: &mut ConnStats) {
        if st.origin != ORIGIN_EXISTING {
            return;
        }
        if let Some(b) = self.by_sk.get(&sk).filter(|b| b.check == check(st)) {
            apply(st, &b.baseline());
        }
    }

    /// [`rebase`](Self::rebase) for the final copy of a connection that
    /// ended: its baseline is let go.
    pub fn end(&mut self, sk: u64, st: &mut ConnStats) {
        if st.origin != ORIGIN_EXISTING {
            return;
        }
        // Let go in any case: the socket address is torn down.
        if let Some(b) = self.by_sk.remove(&sk).filter(|b| b.check == check(st)) {
            apply(st, &b.baseline());
        }
    }

    /// Makes room for `n` baselines at once (a table regrown a step at a
    /// time moved every entry again at each step).
    pub fn reserve(&mut self, n: usize) {
        self.by_sk.reserve(n);
    }

    pub fn len(&self) -> usize {
        self.by_sk.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_sk.is_empty()
    }

    /// Lets every baseline go (another path took those connections over).
    pub fn clear(&mut self) {
        self.by_sk = foldhash::HashMap::default();
    }
}

fn apply(st: &mut ConnStats, b: &Baseline) {
    if b.app_tx == UNKNOWN || b.app_rx == UNKNOWN {
        // The packets' baselines only; the bytes count from the record's.
        let had = Baseline {
            app_tx: st.app_tx_base,
            app_rx: st.app_rx_base,
            ..*b
        };
        if st.flags & CONN_APP != 0 {
            diagview::rebase(st, &had);
        } else {
            st.segs_in_base = b.segs_in;
            st.segs_out_base = b.segs_out;
            st.retrans_base = b.retrans;
        }
        return;
    }
    diagview::rebase(st, b);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::platform::linux::convert;

    /// The walk's record of a connection that had moved `tx`/`rx` bytes
    /// and `segs` segments each way before start.
    fn walked(tx: u64, rx: u64, segs: u32) -> ConnStats {
        ConnStats {
            origin: ORIGIN_EXISTING,
            flags: CONN_APP,
            app_tx: tx,
            app_rx: rx,
            app_tx_base: tx,
            app_rx_base: rx,
            segs_in: segs,
            segs_out: segs,
            segs_in_base: segs,
            segs_out_base: segs,
            retrans: 1,
            retrans_base: 1,
            ..ConnStats::default()
        }
    }

    /// A record a hook made later: `moved` more bytes each way had gone
    /// by then (an ACK of data queued before start), `more` since.
    fn recorded(base: &ConnStats, moved: u64, more: u64) -> ConnStats {
        let then = ConnStats {
            app_tx: base.app_tx + moved,
            app_rx: base.app_rx + moved,
            app_tx_base: base.app_tx + moved,
            app_rx_base: base.app_rx + moved,
            segs_in_base: base.segs_in + 3,
            segs_out_base: base.segs_out + 3,
            ..*base
        };
        ConnStats {
            app_tx: then.app_tx + more,
            app_rx: then.app_rx + more,
            segs_in: then.segs_in_base + 5,
            segs_out: then.segs_out_base + 5,
            first_ns: 99,
            ..then
        }
    }

    #[test]
    fn a_record_counts_from_the_walk() {
        let mut b = Bases::default();
        let w = walked(1_000, 2_000, 10);
        assert!(b.note(0xa, &w));
        // A second holder of the same socket: the first kept.
        assert!(!b.note(0xa, &walked(5_000, 5_000, 50)));
        assert_eq!(b.len(), 1);
        let mut st = recorded(&w, 300, 700);
        b.rebase(0xa, &mut st);
        let s = convert::sample(0xa, &st, false);
        assert_eq!((s.counters.tx_bytes, s.counters.rx_bytes), (1_000, 1_000));
        assert_eq!((s.counters.tx_packets, s.counters.rx_packets), (8, 8));
        assert_eq!(s.counters.retrans, 0);
        // Another socket's record, or one born under tcptop: as it is.
        let as_is = |sk: u64, st: &ConnStats| convert::sample(sk, st, false);
        let mut other = recorded(&w, 300, 700);
        b.rebase(0xb, &mut other);
        assert_eq!(as_is(0xb, &other), as_is(0xb, &recorded(&w, 300, 700)));
        assert_eq!(as_is(0xb, &other).counters.tx_bytes, 700);
        let born = || ConnStats {
            origin: tcptop_common::ORIGIN_BORN,
            ..recorded(&w, 300, 700)
        };
        let mut st = born();
        b.rebase(0xa, &mut st);
        assert_eq!(as_is(0xa, &st), as_is(0xa, &born()));
        // Its CLOSE: rebased, and the baseline let go.
        let mut fin = recorded(&w, 300, 900);
        b.end(0xa, &mut fin);
        let s = convert::sample(0xa, &fin, true);
        assert_eq!((s.counters.tx_bytes, s.counters.rx_bytes), (1_200, 1_200));
        assert!(b.is_empty());
    }

    /// A baseline left behind (its connection's CLOSE lost) is not
    /// applied to another connection at the same socket address.
    #[test]
    fn another_connection_at_the_same_address_is_left_alone() {
        let mut b = Bases::default();
        let w = walked(1_000, 2_000, 10);
        b.note(0xa, &w);
        let mut other = recorded(&walked(50, 60, 2), 0, 700);
        other.tuple.sport = 40_000;
        let before = convert::sample(0xa, &other, false);
        b.rebase(0xa, &mut other);
        assert_eq!(convert::sample(0xa, &other, false), before);
        b.end(0xa, &mut other);
        assert_eq!(convert::sample(0xa, &other, false), before);
        assert!(b.is_empty());
    }

    /// Where the walk could not read the bytes, the record's own
    /// baseline counts for them (never from the connection's birth); the
    /// packets still count from the walk.
    #[test]
    fn bytes_the_walk_could_not_read() {
        let mut b = Bases::default();
        let mut w = walked(1_000, 2_000, 10);
        w.flags = 0;
        b.note(0xa, &w);
        let mut st = recorded(&walked(1_000, 2_000, 10), 300, 700);
        b.rebase(0xa, &mut st);
        let s = convert::sample(0xa, &st, false);
        assert_eq!((s.counters.tx_bytes, s.counters.rx_bytes), (700, 700));
        assert_eq!(s.counters.tx_packets, 8);
        // A record without bytes either (a CLOSE whose read failed):
        // nothing counted from birth.
        let mut fin = recorded(&walked(1_000, 2_000, 10), 300, 700);
        fin.flags = 0;
        b.end(0xa, &mut fin);
        let s = convert::sample(0xa, &fin, true);
        assert_eq!((s.counters.tx_bytes, s.counters.rx_bytes), (0, 0));
        assert_eq!(s.counters.rx_packets, 8);
    }
}
