//! Socket lists read one interval apart, made into snapshots.
//!
//! A socket's counters are the kernel's since the socket was created; one
//! that was open when tcptop started counts from then (its first counters
//! are its baseline), one created since counts from its birth. A socket
//! that is gone from the next read is reported CLOSED once, with what the
//! last read showed: the bytes it moved after that read, and any socket
//! that opens and closes between two reads, are not seen.
//!
//! TCP: every connection but listeners and sockets without a peer. UDP:
//! sockets that moved data since tcptop started (a bound, idle socket is
//! not a flow), with the peer an unconnected socket has (none: `0.0.0.0:0`
//! or `[::]:0`).

use std::collections::HashMap;

use super::parse::{Pcb, PcbStats};
use crate::model::{CompactString, ConnKey, ConnSample, ConnState, Counters, Proto, Snapshot};

/// XNU's `TCPS_LISTEN` (`bsd/netinet/tcp_fsm.h`).
const TCPS_LISTEN: i32 = 1;

/// A TCP state in XNU's numbering (`bsd/netinet/tcp_fsm.h`).
pub fn conn_state(t_state: i32) -> ConnState {
    match t_state {
        0 => ConnState::Close,
        1 => ConnState::Listen,
        2 => ConnState::SynSent,
        3 => ConnState::SynRecv,
        4 => ConnState::Established,
        5 => ConnState::CloseWait,
        6 => ConnState::FinWait1,
        7 => ConnState::Closing,
        8 => ConnState::LastAck,
        9 => ConnState::FinWait2,
        10 => ConnState::TimeWait,
        n => ConnState::Unknown(u8::try_from(n).unwrap_or(u8::MAX)),
    }
}

/// Which socket: the 4-tuple can be reused, the pcb generation never is
/// (but is 0 for Skywalk's user-space flows, told apart by their tuple).
type Id = (ConnKey, u64);

struct Followed {
    base: PcbStats,
    /// `t_rxtshift` at the previous read.
    rxtshift: i32,
    last: ConnSample,
    /// Reported live at least once (UDP: once it moved data).
    shown: bool,
    seen: u64,
}

/// Follows the sockets from one read to the next.
#[derive(Default)]
pub struct Tracker {
    followed: HashMap<Id, Followed>,
    reads: u64,
}

impl Tracker {
    pub fn new() -> Tracker {
        Tracker::default()
    }

    /// Brings the followed sockets up to date with `pcbs` (both lists, read
    /// now) and returns the snapshot: live ones, and those gone since the
    /// previous call. `name` gives a process's name (empty when unknown;
    /// asked once per process per call). The first call adopts what is
    /// open, counting from now.
    pub fn update<'a>(
        &mut self,
        pcbs: impl IntoIterator<Item = &'a Pcb>,
        name: &mut dyn FnMut(u32) -> String,
    ) -> Snapshot {
        self.reads += 1;
        let (read, first) = (self.reads, self.reads == 1);
        let mut names: HashMap<u32, CompactString> = HashMap::new();
        for pcb in pcbs {
            let Some(tcp_state) = wanted(pcb) else {
                continue;
            };
            let key = ConnKey {
                proto: pcb.proto,
                local: pcb.local,
                remote: pcb.remote,
                netns: 0,
            };
            let rxtshift = pcb.tcp.map_or(0, |t| t.rxtshift);
            let f = self.followed.entry((key, pcb.gencnt)).or_insert_with(|| {
                let base = if first {
                    pcb.stats
                } else {
                    PcbStats::default()
                };
                Followed {
                    base,
                    rxtshift: if first { rxtshift } else { 0 },
                    last: ConnSample {
                        key,
                        id: pcb.gencnt,
                        pid: 0,
                        comm: CompactString::default(),
                        state: ConnState::Flow,
                        counters: Counters::default(),
                        rtt_us: None,
                        cgroup_id: 0,
                        active: None,
                        workload: None,
                    },
                    shown: false,
                    seen: read,
                }
            });
            f.seen = read;
            let prev = f.last.counters;
            let s = &pcb.stats;
            // Counters never go back (a socket's counters do not; a
            // baseline from a racing read might).
            let c = Counters {
                tx_bytes: s
                    .tx_bytes
                    .saturating_sub(f.base.tx_bytes)
                    .max(prev.tx_bytes),
                rx_bytes: s
                    .rx_bytes
                    .saturating_sub(f.base.rx_bytes)
                    .max(prev.rx_bytes),
                tx_packets: s
                    .tx_packets
                    .saturating_sub(f.base.tx_packets)
                    .max(prev.tx_packets),
                rx_packets: s
                    .rx_packets
                    .saturating_sub(f.base.rx_packets)
                    .max(prev.rx_packets),
                // Retransmit timeouts seen at reads: each rise of the
                // backoff is one (a lower bound: fast retransmits, and a
                // timeout whose backoff an ACK undid between two reads,
                // are not seen).
                retrans: prev.retrans.saturating_add(
                    u64::try_from(rxtshift.saturating_sub(f.rxtshift)).unwrap_or(0),
                ),
            };
            f.rxtshift = rxtshift;
            let moved = c.tx_bytes | c.rx_bytes | c.tx_packets | c.rx_packets != 0;
            f.shown |= pcb.proto == Proto::Tcp || moved;
            let pid = owner(pcb);
            let comm = if pid == 0 {
                CompactString::default()
            } else {
                names
                    .entry(pid)
                    .or_insert_with(|| CompactString::from(name(pid)))
                    .clone()
            };
            let last = &mut f.last;
            // A process that exited keeps the name it had.
            if !(comm.is_empty() && pid == last.pid) {
                last.comm = comm;
            }
            last.pid = pid;
            last.counters = c;
            last.state = tcp_state.map_or(ConnState::Flow, conn_state);
            last.rtt_us = pcb.tcp.and_then(|t| t.srtt_us);
        }
        let mut closed = Vec::new();
        self.followed.retain(|_, f| {
            if f.seen == read {
                return true;
            }
            if f.shown {
                let mut s = f.last.clone();
                s.state = ConnState::Closed;
                closed.push(s);
            }
            false
        });
        let mut live: Vec<ConnSample> = self
            .followed
            .values()
            .filter(|f| f.shown)
            .map(|f| f.last.clone())
            .collect();
        live.sort_by_key(|s| (s.key, s.id));
        closed.sort_by_key(|s| (s.key, s.id));
        Snapshot {
            live,
            closed,
            drops: Default::default(),
            partial: false,
            standing: Vec::new(),
        }
    }
}

/// Whether a socket is followed: Some(TCP state) for a TCP connection,
/// Some(None) for a UDP socket; None for a listener or a TCP socket
/// without a peer.
fn wanted(pcb: &Pcb) -> Option<Option<i32>> {
    match (pcb.proto, pcb.tcp) {
        (Proto::Udp, _) => Some(None),
        (Proto::Tcp, Some(t)) => {
            let peer = pcb.remote.port() != 0 && !pcb.remote.ip().is_unspecified();
            (t.state != TCPS_LISTEN && peer).then_some(Some(t.state))
        }
        (Proto::Tcp, None) => None,
    }
}

/// The process a socket's traffic is counted for: the last one that made
/// a call on it (the caller, as on Linux), else the one it acts for or was
/// made by; 0 when neither is known.
fn owner(pcb: &Pcb) -> u32 {
    [pcb.last_pid, pcb.e_pid]
        .into_iter()
        .find_map(|p| u32::try_from(p).ok().filter(|&p| p != 0))
        .unwrap_or(0)
}
