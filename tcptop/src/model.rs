//! Platform-neutral data: what a data source reports about connections.

use std::fmt;
use std::hash::{Hash, Hasher};
use std::net::SocketAddr;
use std::sync::Arc;

pub use compact_str::CompactString;

/// Transport protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Proto {
    Tcp,
    Udp,
}

impl Proto {
    pub fn as_str(self) -> &'static str {
        match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
        }
    }
}

/// What identifies a connection to the user: protocol, both endpoints and the
/// network namespace (the same 4-tuple can exist in two namespaces).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct ConnKey {
    pub proto: Proto,
    pub local: SocketAddr,
    pub remote: SocketAddr,
    pub netns: u32,
}

/// Hashes the fields `Eq` compares (IPv6 flow labels and scope ids aside:
/// equal keys still hash equal) as three or more 64-bit words. The derived
/// hash fed the (SipHash) hasher a dozen pieces per key, and the table
/// hashes a key per row per snapshot: tens of thousands a second under
/// churn.
impl Hash for ConnKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64(u64::from(self.netns) << 8 | self.proto as u64);
        for end in [&self.local, &self.remote] {
            match end {
                SocketAddr::V4(a) => {
                    state.write_u64(u64::from(a.ip().to_bits()) << 16 | u64::from(a.port()));
                }
                SocketAddr::V6(a) => {
                    state.write_u128(a.ip().to_bits());
                    state.write_u64(1 << 16 | u64::from(a.port()));
                }
            }
        }
    }
}

/// Connection state, with the kernel's TCP numbering.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ConnState {
    Established,
    SynSent,
    SynRecv,
    FinWait1,
    FinWait2,
    TimeWait,
    /// TCP CLOSE while the owner still holds the socket (e.g. after a reset).
    Close,
    /// The connection ended: shown once with its final counters.
    Closed,
    CloseWait,
    LastAck,
    Listen,
    Closing,
    NewSynRecv,
    /// A UDP flow that is still active (UDP has no states): shown as `-`.
    Flow,
    Unknown(u8),
}

impl ConnState {
    /// From the kernel's TCP state number (`include/net/tcp_states.h`).
    pub fn from_tcp(n: u8) -> ConnState {
        match n {
            1 => ConnState::Established,
            2 => ConnState::SynSent,
            3 => ConnState::SynRecv,
            4 => ConnState::FinWait1,
            5 => ConnState::FinWait2,
            6 => ConnState::TimeWait,
            7 => ConnState::Close,
            8 => ConnState::CloseWait,
            9 => ConnState::LastAck,
            10 => ConnState::Listen,
            11 => ConnState::Closing,
            12 => ConnState::NewSynRecv,
            n => ConnState::Unknown(n),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ConnState::Established => "ESTABLISHED",
            ConnState::SynSent => "SYN_SENT",
            ConnState::SynRecv => "SYN_RECV",
            ConnState::FinWait1 => "FIN_WAIT1",
            ConnState::FinWait2 => "FIN_WAIT2",
            ConnState::TimeWait => "TIME_WAIT",
            ConnState::Close => "CLOSE",
            ConnState::Closed => "CLOSED",
            ConnState::CloseWait => "CLOSE_WAIT",
            ConnState::LastAck => "LAST_ACK",
            ConnState::Listen => "LISTEN",
            ConnState::Closing => "CLOSING",
            ConnState::NewSynRecv => "NEW_SYN_RECV",
            ConnState::Flow => "-",
            ConnState::Unknown(_) => "UNKNOWN",
        }
    }
}

impl fmt::Display for ConnState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Cumulative counters of one connection since the source first saw it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    pub tx_bytes: u64,
    pub rx_bytes: u64,
    pub tx_packets: u64,
    pub rx_packets: u64,
    pub retrans: u64,
}

/// What runs a connection's owner: its control group and the workload
/// that group names. Every text is untrusted (chosen by whoever made the
/// group): escape before display.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Workload {
    /// Path relative to the cgroup v2 root, e.g. `/system.slice/nginx.service`.
    pub cgroup: String,
    /// The systemd unit (`nginx.service`, `session-3.scope`).
    pub unit: Option<String>,
    /// A container id's first 12 hex digits (docker, containerd, CRI-O,
    /// podman, LXC: the container's name).
    pub container: Option<String>,
    /// The Kubernetes pod as `namespace/name`, where the node's files say it.
    pub pod: Option<String>,
}

impl Workload {
    /// One name for a column: the pod, else the container, else the unit,
    /// else the cgroup path's last part.
    pub fn label(&self) -> &str {
        self.pod
            .as_deref()
            .or(self.container.as_deref())
            .or(self.unit.as_deref())
            .unwrap_or_else(|| match self.cgroup.rsplit('/').next() {
                Some(last) if !last.is_empty() => last,
                _ => "/",
            })
    }
}

/// Takes `v`'s last element, giving memory back as `v` empties: from 4,096
/// elements of room, whenever an eighth of it is unused, the room shrinks
/// to fit. For a buffer consumed while another grows (a snapshot's samples
/// into the table's rows, the kernel's records into samples: 35 MB each at
/// 200,000 connections), so that the peak is the larger of the two, not
/// their sum (in halves, a half of the samples was still held when the
/// rows were nearly whole: 3 MB over at 200,000). glibc shrinks a block in
/// place (a mapped one with mremap): nothing is copied.
pub fn pop_releasing<T>(v: &mut Vec<T>) -> Option<T> {
    let last = v.pop();
    release(v);
    last
}

/// [`pop_releasing`] for a consumer that only reads: `f` sees each element
/// where it is, last first, and it is dropped there. A 180-byte sample
/// moved out and into the consumer was a tenth of a busy snapshot's cost
/// in the table (100,000 rows).
pub fn consume_releasing<T>(v: &mut Vec<T>, mut f: impl FnMut(&T)) {
    while let Some(last) = v.last() {
        f(last);
        v.truncate(v.len() - 1);
        release(v);
    }
}

fn release<T>(v: &mut Vec<T>) {
    const RELEASE_FROM: usize = 4096;
    if v.capacity() >= RELEASE_FROM && v.len() <= v.capacity() - v.capacity() / 8 {
        v.shrink_to_fit();
    }
}

/// One connection as a source sees it at one moment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConnSample {
    pub key: ConnKey,
    /// Source-specific identity of this connection instance (the kernel
    /// socket address on Linux): tells a reused 4-tuple from its predecessor.
    pub id: u64,
    /// Owning process (TGID); 0 when not known yet.
    pub pid: u32,
    /// Process name as the kernel reports it: untrusted bytes, escape before display.
    pub comm: CompactString,
    pub state: ConnState,
    pub counters: Counters,
    /// Smoothed round-trip time in microseconds, when known.
    pub rtt_us: Option<u32>,
    /// The owner's control group, as the source identifies it (Linux: the
    /// cgroup v2 id; 0 when not known).
    pub cgroup_id: u64,
    /// What that control group runs, once the source resolved it.
    pub workload: Option<Arc<Workload>>,
    /// Whether this end opened the connection (connect(): the client) or
    /// was opened by a peer (a listener's child: the server); None when the
    /// source cannot tell (connections open before start, UDP, polling).
    pub active: Option<bool>,
}

/// What is known about a process, for the detail pane; None where it
/// could not be read (the process ended, or the platform cannot tell).
/// Untrusted text: escape before display.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProcInfo {
    /// Arguments joined by spaces.
    pub cmdline: Option<String>,
    /// User name, or the uid number when it has none.
    pub user: Option<String>,
}

/// Events the source could not deliver or record; shown to the user.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Drops {
    /// Lifecycle events lost because the ring buffer was full.
    pub events: u64,
    /// Connections not tracked because the connection map was full.
    pub conns: u64,
    /// UDP flows ended early (longest idle first) because the flow table
    /// was nearly full; each is reported CLOSED with its counters so far.
    pub evicted: u64,
}

impl Drops {
    pub fn any(&self) -> bool {
        self.events != 0 || self.conns != 0 || self.evicted != 0
    }
}

/// Everything a source reports at one collection.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    /// Connections alive now.
    pub live: Vec<ConnSample>,
    /// Connections that ended since the previous snapshot, with final counters.
    pub closed: Vec<ConnSample>,
    /// Cumulative drop counters.
    pub drops: Drops,
    /// False: `live` is every connection open now, and one not in it has
    /// gone. True: `live` is only the connections that changed since the
    /// previous snapshot (new ones included); every other one is still
    /// open and unchanged, and each that ended is in `closed`. A source
    /// that compares what it reads with what it reported last (Linux's
    /// eBPF source through `platform::changes`, the unprivileged mode)
    /// saves a copy and the table a lookup per idle connection.
    pub partial: bool,
    /// Connections the source reports once and keeps nothing of (Linux:
    /// idle connections open before start, named by the start-up walk,
    /// that the kernel has no record of yet): each stays live as it is,
    /// complete snapshots or not, until a later snapshot reports it in
    /// `live` (then it is an ordinary connection) or in `closed`. A
    /// sample here with id 0 is the same instance as the first one
    /// reported for its key.
    pub standing: Vec<ConnSample>,
}

/// A live TCP sample from 127.0.0.1:`port` to 127.0.0.1:80 (id `port`)
/// with `tx` bytes sent, for tests.
#[cfg(test)]
pub fn test_sample(port: u16, tx: u64) -> ConnSample {
    ConnSample {
        key: ConnKey {
            proto: Proto::Tcp,
            local: SocketAddr::from(([127, 0, 0, 1], port)),
            remote: SocketAddr::from(([127, 0, 0, 1], 80)),
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
        active: None,
        workload: None,
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn popping_gives_memory_back_as_it_empties() {
        use super::pop_releasing;
        let mut v: Vec<u64> = (0..100_000).collect();
        let mut got = Vec::new();
        while let Some(x) = pop_releasing(&mut v) {
            got.push(x);
            // Never more than an eighth of the room unused (above the floor).
            assert!(
                v.capacity() <= (v.len() + v.len() / 7 + 2).max(4096),
                "{} {}",
                v.len(),
                v.capacity()
            );
        }
        assert!(v.capacity() < 4096, "{}", v.capacity());
        // Every element, last first.
        assert!(got.iter().rev().copied().eq(0..100_000));
    }

    #[test]
    fn consuming_gives_memory_back_as_it_empties() {
        use super::consume_releasing;
        let mut v: Vec<String> = (0..100_000).map(|i| i.to_string()).collect();
        let mut got = Vec::new();
        consume_releasing(&mut v, |x| got.push(x.parse::<u32>().unwrap_or(u32::MAX)));
        assert!(v.is_empty() && v.capacity() < 4096, "{}", v.capacity());
        assert!(got.iter().rev().copied().eq(0..100_000));
    }
    use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};

    use super::*;

    fn hash(k: &ConnKey) -> u64 {
        BuildHasherDefault::<DefaultHasher>::default().hash_one(k)
    }

    #[test]
    fn keys_that_differ_in_any_field_hash_apart() {
        let base = ConnKey {
            proto: Proto::Tcp,
            local: "10.0.0.1:40000".parse().unwrap(),
            remote: "10.0.0.2:443".parse().unwrap(),
            netns: 4026531840,
        };
        let v6 = ConnKey {
            local: "[2001:db8::1]:40000".parse().unwrap(),
            remote: "[2001:db8::2]:443".parse().unwrap(),
            ..base
        };
        let mut keys = vec![base, v6];
        for k in [base, v6] {
            keys.push(ConnKey {
                proto: Proto::Udp,
                ..k
            });
            keys.push(ConnKey { netns: 1, ..k });
            keys.push(ConnKey {
                local: k.remote,
                remote: k.local,
                ..k
            });
            for (i, end) in [k.local, k.remote].into_iter().enumerate() {
                let mut port = end;
                port.set_port(end.port() + 1);
                let mut ip = end;
                ip.set_ip(match end.ip() {
                    std::net::IpAddr::V4(a) => {
                        std::net::Ipv4Addr::from_bits(a.to_bits() ^ 1 << 31).into()
                    }
                    std::net::IpAddr::V6(a) => {
                        std::net::Ipv6Addr::from_bits(a.to_bits() ^ 1 << 127).into()
                    }
                });
                for changed in [port, ip] {
                    keys.push(if i == 0 {
                        ConnKey {
                            local: changed,
                            ..k
                        }
                    } else {
                        ConnKey {
                            remote: changed,
                            ..k
                        }
                    });
                }
            }
        }
        // The same address as IPv4 and as IPv4-mapped IPv6 is two keys.
        keys.push(ConnKey {
            local: "[::ffff:10.0.0.1]:40000".parse().unwrap(),
            remote: "[::ffff:10.0.0.2]:443".parse().unwrap(),
            ..base
        });
        for (i, a) in keys.iter().enumerate() {
            assert_eq!(hash(a), hash(&a.clone()));
            for b in &keys[i + 1..] {
                assert_ne!(a, b, "the test lists a key twice");
                assert_ne!(hash(a), hash(b), "{a:?} and {b:?} hash the same");
            }
        }
    }
}
