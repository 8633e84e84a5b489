//! The kernel's socket diagnostics (`diag.rs`: NETLINK_SOCK_DIAG, what
//! `ss -ti` reads) as a view of the live TCP connections of every network
//! namespace tcptop could enter at start-up.
//!
//! Used where the kernel refused a BPF iterator (a security policy, an
//! older kernel): the map iterator (records' state, RTT, segments,
//! retransmits, application bytes and missing endpoints are refreshed from
//! the last dump instead, matched by endpoints and namespace), the TCP
//! socket iterator (connections open before start are adopted from the
//! first dump: their counters then are their baseline). The unprivileged
//! mode (`unprivileged.rs`) reads nothing else.
//!
//! A netlink socket answers for the namespace it was made in: one per
//! namespace, made at start-up (entering another namespace needs
//! CAP_SYS_ADMIN, which is dropped after start). Namespaces made later are
//! not dumped: their connections keep what the kernel programs record
//! (bytes per call, the state at birth and ESTABLISHED) until teardown.

// foldhash: a key per connection per snapshot (SipHash was a tenth of a
// snapshot's CPU with 200,000 connections).
use foldhash::{HashMap, HashMapExt};
use std::fs::File;
use std::io;
use std::net::{IpAddr, SocketAddr};

use tcptop_common::{
    CONN_ACTIVE, CONN_APP, CONN_NO_FIN, ConnStats, ORIGIN_EXISTING, TCP_CLOSE_WAIT, TCP_CLOSING,
    TCP_LAST_ACK, TCP_LISTEN, TCP_NEW_SYN_RECV, TCP_SYN_SENT, TCP_TIME_WAIT,
};

use super::convert::{self, unmap};
use super::diag::{DiagConn, DiagSocket, TcpInfo};
use super::procfs::NsFile;
use crate::model::{CompactString, ConnKey, ConnSample, ConnState, Counters, Proto};

/// Every state but LISTEN, TIME_WAIT and NEW_SYN_RECV (not connections,
/// or no longer full sockets: the kernel programs never track them).
pub const CONN_STATES: u32 =
    ((1 << 13) - 2) & !(1 << TCP_LISTEN) & !(1 << TCP_TIME_WAIT) & !(1 << TCP_NEW_SYN_RECV);

/// What a connection's counters were when tcptop first saw it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Baseline {
    pub app_tx: u64,
    pub app_rx: u64,
    pub segs_in: u32,
    pub segs_out: u32,
    pub retrans: u32,
}

/// The dumps of every namespace tcptop holds a socket for.
pub struct DiagView {
    /// (namespace inode, its socket).
    sockets: Vec<(u32, DiagSocket)>,
    /// One batch of a streamed dump (`dump_each`).
    scratch: Vec<DiagConn>,
    /// Connections open before start adopted from the first dump.
    adopted: HashMap<ConnKey, Baseline>,
    states: u32,
}

impl DiagView {
    /// A socket in our own namespace and, when `namespaces` is given (and
    /// we may enter them), one in each of those. Returns the view and what
    /// could not be opened.
    pub fn open(namespaces: &[NsFile], states: u32) -> io::Result<(DiagView, Vec<String>)> {
        let own = super::procfs::own_netns().unwrap_or(0);
        let mut sockets = vec![(own, DiagSocket::open()?)];
        let mut failed = Vec::new();
        for ns in namespaces.iter().filter(|ns| ns.inode != own) {
            let opened = File::open(&ns.path).and_then(|f| DiagSocket::open_in(&f));
            match opened {
                Ok(s) => sockets.push((ns.inode, s)),
                // The process may have gone; its namespace with it, or not.
                Err(e) => failed.push(format!("network namespace {}: {e}", ns.inode)),
            }
        }
        Ok((
            DiagView {
                sockets,
                scratch: Vec::new(),
                adopted: HashMap::new(),
                states,
            },
            failed,
        ))
    }

    /// Dumps the namespaces `wanted` says (a dump walks the kernel's whole
    /// table of connections, of every namespace: 3 to 6 ms even for an
    /// empty one), handing each connection to `each` as it is read, with
    /// its key and its baseline if it was adopted. Nothing of the dump is
    /// kept: the eBPF source matches its records against it as it comes
    /// (at 200,000 connections, the stored dump and its index were 60 MB).
    pub fn dump_each(
        &mut self,
        wanted: impl Fn(u32) -> bool,
        each: impl FnMut(ConnKey, &DiagConn, Option<&Baseline>),
    ) -> io::Result<()> {
        self.dump_states_each(self.states, wanted, each)
    }

    /// [`dump_each`](Self::dump_each) of the connections in `states` (a
    /// mask of `1 << state`) only.
    pub fn dump_states_each(
        &mut self,
        states: u32,
        wanted: impl Fn(u32) -> bool,
        mut each: impl FnMut(ConnKey, &DiagConn, Option<&Baseline>),
    ) -> io::Result<()> {
        let adopted = &self.adopted;
        for (netns, sock) in &mut self.sockets {
            if !wanted(*netns) {
                continue;
            }
            let netns = *netns;
            sock.dump_tcp_each(states, &mut self.scratch, &mut |c| {
                let k = key(netns, c);
                let b = adopted.get(&k);
                each(k, c, b);
            })?;
        }
        Ok(())
    }

    /// Asks the record's namespace for its connection (`st`: endpoints
    /// complete) and refreshes the record from the answer; left as it is
    /// where the connection ended or tcptop holds no socket for that
    /// namespace. Whether the answer left a count untold ([`apply`]).
    pub fn refresh(&mut self, st: &mut ConnStats) -> io::Result<bool> {
        let k = convert::key(st);
        let Some((_, sock)) = self.sockets.iter_mut().find(|(ns, _)| *ns == k.netns) else {
            return Ok(false);
        };
        Ok(match sock.query(k.local, k.remote)? {
            Some(c) => apply(&c, st, self.adopted.get(&k)),
            None => false,
        })
    }

    /// Dumps every namespace and adopts each connection `known` is false
    /// for (the kernel programs have no record of it: it was open before
    /// start), with its counters now as its baseline; `each` is told each
    /// one adopted and its socket's inode.
    pub fn adopt_unknown(
        &mut self,
        known: impl Fn(&ConnKey) -> bool,
        mut each: impl FnMut(ConnKey, u32),
    ) -> io::Result<()> {
        let adopted = &mut self.adopted;
        for (netns, sock) in &mut self.sockets {
            let netns = *netns;
            sock.dump_tcp_each(self.states, &mut self.scratch, &mut |c| {
                let k = key(netns, c);
                if c.state == TCP_LISTEN || known(&k) {
                    return;
                }
                if let Some(b) = baseline(c) {
                    adopted.insert(k, b);
                    each(k, c.inode);
                }
            })?;
        }
        Ok(())
    }

    /// Whether any connection adopted from the first dump has not ended.
    pub fn has_adopted(&self) -> bool {
        !self.adopted.is_empty()
    }

    /// The namespaces of connections adopted from the first dump that have
    /// not ended yet.
    pub fn adopted_namespaces(&self) -> impl Iterator<Item = u32> + '_ {
        self.adopted.keys().map(|k| k.netns)
    }

    /// The baseline of a connection adopted from the first dump.
    pub fn adopted(&self, key: &ConnKey) -> Option<&Baseline> {
        self.adopted.get(key)
    }

    /// Forgets an adopted connection (it ended).
    pub fn forget(&mut self, key: &ConnKey) {
        self.adopted.remove(key);
    }
}

/// The kernel's records of one snapshot by key, to match a streamed dump
/// against (the smaller side indexed: the records, not the dump).
pub struct Records {
    by_key: HashMap<ConnKey, usize>,
    /// Records of the same key as one in `by_key` (an ended connection's
    /// record beside its 4-tuple's new one): rare.
    more: Vec<(ConnKey, usize)>,
    /// Records whose source port is not known yet (connect() picks it
    /// after entering SYN_SENT), by namespace, local address and remote
    /// end.
    connecting: HashMap<(u32, IpAddr, SocketAddr), usize>,
    /// Whether matched records are refreshed (no map iterator did it).
    refresh: bool,
}

impl Records {
    pub fn new() -> Records {
        Records {
            by_key: HashMap::new(),
            more: Vec::new(),
            connecting: HashMap::new(),
            refresh: false,
        }
    }

    /// Indexes `records` (the index is kept between snapshots: a new one
    /// each time was 20 MB of fresh pages at 200,000 records).
    pub fn index(&mut self, records: &[(u64, ConnStats)], refresh: bool) {
        let r = self;
        r.by_key.clear();
        r.more.clear();
        r.connecting.clear();
        r.refresh = refresh;
        r.by_key.reserve(records.len());
        for (i, (_, st)) in records.iter().enumerate() {
            let k = convert::key(st);
            if st.tuple.sport != 0 {
                if let Some(j) = r.by_key.insert(k, i) {
                    r.more.push((k, j));
                }
            } else if refresh && st.tuple.dport != 0 {
                r.connecting.insert((k.netns, k.local.ip(), k.remote), i);
            }
        }
    }

    /// Whether a record has the dumped connection `k` (refreshing it from
    /// `c`, with `adopted`'s baseline, where no iterator does; a record
    /// whose count the answer left untold goes to `untold`).
    pub fn matched(
        &self,
        k: &ConnKey,
        c: &DiagConn,
        adopted: Option<&Baseline>,
        records: &mut [(u64, ConnStats)],
        untold: &mut Vec<u64>,
    ) -> bool {
        let Some(&i) = self.by_key.get(k) else {
            return false;
        };
        if self.refresh {
            let also = self.more.iter().filter(|(mk, _)| mk == k).map(|&(_, j)| j);
            for j in std::iter::once(i).chain(also) {
                if let Some((sk, st)) = records.get_mut(j)
                    && apply(c, st, adopted)
                {
                    untold.push(*sk);
                }
            }
        }
        true
    }

    /// Whether the dumped connection `k` may be a connecting record's.
    pub fn connecting(&self, k: &ConnKey) -> bool {
        !self.connecting.is_empty()
            && self
                .connecting
                .contains_key(&(k.netns, k.local.ip(), k.remote))
    }

    /// Completes each connecting record that exactly one of the dump's
    /// SYN_SENT connections `syn_sent` fits: its source port, its
    /// counters.
    pub fn complete_connecting(
        &self,
        syn_sent: &[(ConnKey, DiagConn)],
        records: &mut [(u64, ConnStats)],
    ) {
        for (at, &i) in &self.connecting {
            let mut fits = syn_sent
                .iter()
                .filter(|(k, _)| (k.netns, k.local.ip(), k.remote) == *at);
            if let (Some((_, c)), None) = (fits.next(), fits.next())
                && let Some((_, st)) = records.get_mut(i)
            {
                st.tuple.sport = c.local.port();
                // Asked again at the next snapshot anyway (connecting).
                let _ = apply(c, st, None);
            }
        }
    }
}

/// The key of a dumped connection, addresses as the kernel records show
/// them (an IPv4 peer of a dual-stack socket as IPv4).
pub fn key(netns: u32, c: &DiagConn) -> ConnKey {
    ConnKey {
        proto: Proto::Tcp,
        local: unmap(c.local),
        remote: unmap(c.remote),
        netns,
    }
}

/// Whether a connection in `state` has had its peer's FIN arrive (counted
/// in `bytes_received`). In CLOSE it cannot be told: not assumed.
fn fin_received(state: u8) -> bool {
    matches!(
        state,
        TCP_CLOSE_WAIT | TCP_LAST_ACK | TCP_CLOSING | TCP_TIME_WAIT
    )
}

/// The application's bytes of a dumped connection, never more than it
/// moved: written and read, each None where this answer cannot tell it.
/// `active`: it was opened by connect() (its SYN counts), `close_fin`: if
/// in CLOSE, whether it sent a FIN.
///
/// The kernel reads the message's queues before tcp_info, outside the
/// socket's lock (tcp_diag_get_info): an ACK that arrives in between
/// leaves the bytes it acknowledged in both `wqueue` and `bytes_acked`,
/// data that arrives leaves itself out of `rqueue` but in
/// `bytes_received`: counted twice ([`app_bytes_upper`]; seen in a burst
/// as a 3,000-byte send shown as 6,000, a row the table then kept). Such
/// a race needs an ACK (data) to arrive right then, which tcp_info's own
/// clock says: where one arrived within [`RACE_MS`], that direction is
/// not told (the table keeps the last count; the calls' own counts go
/// on).
pub fn app_bytes(
    c: &DiagConn,
    active: bool,
    close_fin: bool,
) -> Option<(Option<u64>, Option<u64>)> {
    let (tx, rx) = app_bytes_upper(c, active, close_fin)?;
    let info = c.info.as_ref()?;
    Some((
        told(info.last_ack_recv_ms).then_some(tx),
        told(info.last_data_recv_ms).then_some(rx),
    ))
}

/// Whether a direction whose last ACK (data) arrived `ms` ago can be told
/// from an answer ([`app_bytes`]).
pub fn told(ms: u32) -> bool {
    ms >= RACE_MS
}

/// How long ago the last ACK (data) must have arrived for the kernel's
/// two reads not to have raced it: tcp_info counts in jiffies (a tick of
/// 1 to 10 ms), and one may fall between the arrival and the read.
const RACE_MS: u32 = 20;

/// The application's bytes by `tcptop_common::app_bytes` from the
/// message's queues and tcp_info: exact, or more than moved where the
/// kernel's two reads raced (see [`app_bytes`]); a baseline may take it.
fn app_bytes_upper(c: &DiagConn, active: bool, close_fin: bool) -> Option<(u64, u64)> {
    let info = c.info.as_ref()?;
    if c.state == TCP_SYN_SENT || c.state == tcptop_common::TCP_SYN_RECV {
        return None;
    }
    if active && info.bytes_acked == 0 {
        return Some((0, 0));
    }
    tcptop_common::app_bytes(
        info.bytes_acked,
        info.bytes_received,
        c.wqueue,
        c.rqueue,
        active,
        tcptop_common::fin_sent(c.state, close_fin),
        fin_received(c.state),
    )
}

/// A sample of a dumped connection that has no kernel record, counted
/// from `base` (no owner: /proc names it, `EbpfSource::collect`).
pub fn sample(key: ConnKey, c: &DiagConn, base: &Baseline, active: bool) -> ConnSample {
    let (tx, rx) = match app_bytes(c, active, true) {
        // An untold count: the baseline's (the table keeps the larger).
        Some((tx, rx)) => (tx.unwrap_or(base.app_tx), rx.unwrap_or(base.app_rx)),
        None => (base.app_tx, base.app_rx),
    };
    let info = c.info.as_ref();
    let seg = |f: fn(&TcpInfo) -> u32| info.map_or(0, f);
    ConnSample {
        key,
        id: 0,
        pid: 0,
        comm: CompactString::default(),
        state: ConnState::from_tcp(c.state),
        counters: Counters {
            tx_bytes: tx.saturating_sub(base.app_tx),
            rx_bytes: rx.saturating_sub(base.app_rx),
            tx_packets: u64::from(seg(|i| i.segs_out).wrapping_sub(base.segs_out)),
            rx_packets: u64::from(seg(|i| i.segs_in).wrapping_sub(base.segs_in)),
            retrans: u64::from(seg(|i| i.total_retrans).wrapping_sub(base.retrans)),
        },
        rtt_us: info.map(|i| i.rtt_us).filter(|&r| r != 0),
        cgroup_id: 0,
        active: None,
        workload: None,
    }
}

/// A connection's counters now, as the baseline of one open before start.
pub fn baseline(c: &DiagConn) -> Option<Baseline> {
    let info = c.info.as_ref()?;
    // More than moved only makes the counts since then smaller.
    let (app_tx, app_rx) = app_bytes_upper(c, false, true)?;
    Some(Baseline {
        app_tx,
        app_rx,
        segs_in: info.segs_in,
        segs_out: info.segs_out,
        retrans: info.total_retrans,
    })
}

/// Gives the copy `st` of a record of an existing connection (made by its
/// first call, or at its teardown) the baseline `b` taken when the first
/// dump adopted it (the earlier one wins if the record has one too: a
/// first call may have made the record before the first dump).
pub fn rebase(st: &mut ConnStats, b: &Baseline) {
    if st.origin != ORIGIN_EXISTING {
        return;
    }
    let had = st.flags & CONN_APP != 0;
    st.app_tx_base = if had {
        st.app_tx_base.min(b.app_tx)
    } else {
        b.app_tx
    };
    st.app_rx_base = if had {
        st.app_rx_base.min(b.app_rx)
    } else {
        b.app_rx
    };
    if !had {
        // Nothing read from the socket yet: its counters are the baseline's.
        st.app_tx = st.app_tx.max(b.app_tx);
        st.app_rx = st.app_rx.max(b.app_rx);
    }
    st.segs_in_base = b.segs_in;
    st.segs_out_base = b.segs_out;
    st.retrans_base = b.retrans;
    st.flags |= CONN_APP;
}

/// Writes what the dump says of a connection into the copy `st` of its
/// record: state, RTT, segments, retransmits and application bytes, with
/// `adopted`'s baseline (see [`rebase`]). Whether a count of bytes was
/// left untold (an ACK or data arrived just then, [`app_bytes`]): the
/// caller asks again at the next snapshot, or an idle connection would
/// show the old count until its next touch (seen on 5.10 in an emulated
/// guest: 10 of 400 rows after a full refresh).
#[must_use]
pub fn apply(c: &DiagConn, st: &mut ConnStats, adopted: Option<&Baseline>) -> bool {
    st.state = c.state;
    let Some(info) = &c.info else {
        return false;
    };
    if info.rtt_us != 0 {
        st.srtt_us8 = info.rtt_us.saturating_mul(8);
    }
    st.segs_in = info.segs_in;
    st.segs_out = info.segs_out;
    st.retrans = info.total_retrans;
    if let Some(b) = adopted {
        rebase(st, b);
    }
    // An existing connection with no baseline for its bytes gets none
    // here: counting from its birth would count what came before start.
    if st.origin == ORIGIN_EXISTING && st.flags & CONN_APP == 0 {
        return false;
    }
    let active = st.flags & CONN_ACTIVE != 0;
    let close_fin = st.flags & CONN_NO_FIN == 0;
    if let Some((tx, rx)) = app_bytes(c, active, close_fin) {
        // An untold count keeps the record's (not more than moved).
        if st.flags & CONN_APP == 0 {
            (st.app_tx, st.app_rx) = (0, 0);
        }
        st.app_tx = tx.unwrap_or(st.app_tx);
        st.app_rx = rx.unwrap_or(st.app_rx);
        st.flags |= CONN_APP;
        return tx.is_none() || rx.is_none();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use tcptop_common::{ORIGIN_BORN, TCP_CLOSE, TCP_ESTABLISHED, TCP_FIN_WAIT2};

    fn conn(state: u8, acked: u64, received: u64, wq: u32, rq: u32) -> DiagConn {
        DiagConn {
            family: 2,
            state,
            local: "127.0.0.1:5000".parse().unwrap(),
            remote: "127.0.0.1:40000".parse().unwrap(),
            cookie: 1,
            inode: 1,
            uid: 0,
            rqueue: rq,
            wqueue: wq,
            info: Some(TcpInfo {
                rtt_us: 30,
                segs_in: 10,
                segs_out: 12,
                total_retrans: 1,
                bytes_acked: acked,
                bytes_received: received,
                last_data_recv_ms: RACE_MS,
                last_ack_recv_ms: RACE_MS,
                ..TcpInfo::default()
            }),
        }
    }

    #[test]
    fn a_race_of_the_kernels_two_reads_never_counts_more() {
        // A server (not active) that wrote 3,000 bytes, its peer's ACK
        // arriving between the queue's read and tcp_info's: not told.
        let mut c = conn(TCP_ESTABLISHED, 3000, 0, 3000, 0);
        c.info.as_mut().unwrap().last_ack_recv_ms = 0;
        assert_eq!(app_bytes_upper(&c, false, true), Some((6000, 0)));
        assert_eq!(app_bytes(&c, false, true), Some((None, Some(0))));
        // Settled: told.
        c.info.as_mut().unwrap().last_ack_recv_ms = RACE_MS;
        assert_eq!(app_bytes(&c, false, true), Some((Some(6000), Some(0))));
        // Data within the clock's last ticks: the bytes read are not told,
        // and a record keeps what it had.
        let mut c = conn(TCP_ESTABLISHED, 0, 900, 0, 100);
        c.info.as_mut().unwrap().last_data_recv_ms = RACE_MS - 1;
        assert_eq!(app_bytes(&c, false, true), Some((Some(0), None)));
        let mut st = ConnStats {
            origin: ORIGIN_BORN,
            app_rx: 300,
            flags: CONN_APP,
            ..ConnStats::default()
        };
        // Untold: the caller asks again at the next snapshot.
        assert!(apply(&c, &mut st, None));
        assert_eq!((st.app_tx, st.app_rx), (0, 300));
        // Settled: told, and nothing to ask again.
        c.info.as_mut().unwrap().last_data_recv_ms = RACE_MS;
        assert!(!apply(&c, &mut st, None));
        assert_eq!((st.app_tx, st.app_rx), (0, 800));
    }

    #[test]
    fn states_dumped() {
        for s in [1, 2, 3, 4, 5, 7, 8, 9, 11] {
            assert!(CONN_STATES & 1 << s != 0, "{s}");
        }
        for s in [0, 6, 10, 12] {
            assert!(CONN_STATES & 1 << s == 0, "{s}");
        }
    }

    #[test]
    fn records_refreshed_from_a_dump() {
        // A client born by connect(): its SYN and FIN are not data.
        let mut st = ConnStats {
            origin: ORIGIN_BORN,
            flags: CONN_ACTIVE,
            ..ConnStats::default()
        };
        let _ = apply(&conn(TCP_FIN_WAIT2, 1002, 2000, 0, 2000), &mut st, None);
        assert_eq!(
            (st.app_tx, st.app_rx, st.flags & CONN_APP),
            (1000, 0, CONN_APP)
        );
        assert_eq!(
            (st.state, st.srtt_us8 >> 3, st.segs_in),
            (TCP_FIN_WAIT2, 30, 10)
        );

        // An existing connection adopted from the first dump: its baseline.
        let mut st = ConnStats {
            origin: ORIGIN_EXISTING,
            ..ConnStats::default()
        };
        let first = baseline(&conn(TCP_ESTABLISHED, 500, 700, 0, 100)).unwrap();
        assert_eq!((first.app_tx, first.app_rx), (500, 600));
        let _ = apply(
            &conn(TCP_ESTABLISHED, 800, 900, 0, 0),
            &mut st,
            Some(&first),
        );
        assert_eq!(
            (st.app_tx - st.app_tx_base, st.app_rx - st.app_rx_base),
            (300, 300)
        );
        assert_eq!(st.segs_in_base, 10);

        // An existing record with no baseline anywhere stays without bytes.
        let mut st = ConnStats {
            origin: ORIGIN_EXISTING,
            ..ConnStats::default()
        };
        let _ = apply(&conn(TCP_ESTABLISHED, 800, 900, 0, 0), &mut st, None);
        assert_eq!(st.flags & CONN_APP, 0);
    }

    #[test]
    fn closed_socket_fin_from_the_record() {
        let c = conn(TCP_CLOSE, 11, 0, 0, 0);
        assert_eq!(app_bytes(&c, true, true), Some((Some(9), Some(0))));
        assert_eq!(app_bytes(&c, true, false), Some((Some(10), Some(0))));
    }
}
