//! Platform-neutral data: what a data source reports about connections.

use std::fmt;
use std::net::SocketAddr;

use serde::Serialize;

/// Transport protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
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
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnKey {
    pub proto: Proto,
    pub local: SocketAddr,
    pub remote: SocketAddr,
    pub netns: u32,
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
    pub comm: String,
    pub state: ConnState,
    pub counters: Counters,
    /// Smoothed round-trip time in microseconds, when known.
    pub rtt_us: Option<u32>,
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
}
