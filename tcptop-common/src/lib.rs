//! Types shared by the kernel programs (`tcptop-ebpf`) and user space (`tcptop`).
//!
//! Everything here is `#[repr(C)]`, `Copy`, made of fixed-width integers with
//! explicit padding, and has no invalid bit patterns: user space decodes it
//! from raw map and ring-buffer bytes.
#![no_std]

/// Name of the hash map `sk pointer -> ConnStats`.
pub const MAP_CONNS: &str = "CONNS";
/// Name of the ring buffer carrying [`ConnEvent`]s.
pub const MAP_EVENTS: &str = "EVENTS";
/// Name of the per-CPU array of drop counters, indexed by `DROP_*`.
pub const MAP_DROPS: &str = "DROPS";
/// Name of the hash map `ConnTuple -> UdpFlow` (UDP flows by 5-tuple and netns).
pub const MAP_UDP_FLOWS: &str = "UDP_FLOWS";
/// Name of the global holding kernel struct offsets ([`Offsets`]).
pub const GLOBAL_OFFSETS: &str = "OFFSETS";

/// Default capacity of the connection map.
pub const MAX_CONNS: u32 = 65_536;
/// Default capacity of the UDP flow map.
pub const MAX_UDP_FLOWS: u32 = 65_536;
/// Ring buffer size in bytes (power of two, multiple of the page size).
pub const EVENTS_BYTES: u32 = 4 << 20;

/// A lifecycle event could not be written: the ring buffer was full.
pub const DROP_RINGBUF: u32 = 0;
/// A connection could not be tracked: the connection map was full.
pub const DROP_MAP_FULL: u32 = 1;
/// A UDP flow could not be tracked: the flow map was full.
pub const DROP_UDP_FLOWS: u32 = 2;
/// Number of drop counters.
pub const DROP_COUNTERS: u32 = 3;

/// Address families, as in `<sys/socket.h>`.
pub const AF_INET: u16 = 2;
pub const AF_INET6: u16 = 10;
/// IP protocol numbers.
pub const IPPROTO_TCP: u8 = 6;
pub const IPPROTO_UDP: u8 = 17;

/// Kernel TCP states (`include/net/tcp_states.h`).
pub const TCP_ESTABLISHED: u8 = 1;
pub const TCP_SYN_SENT: u8 = 2;
pub const TCP_SYN_RECV: u8 = 3;
pub const TCP_FIN_WAIT2: u8 = 5;
pub const TCP_TIME_WAIT: u8 = 6;
pub const TCP_CLOSE: u8 = 7;
pub const TCP_LAST_ACK: u8 = 9;
pub const TCP_LISTEN: u8 = 10;
pub const TCP_CLOSING: u8 = 11;
/// A request socket (`struct request_sock`), not a full socket.
pub const TCP_NEW_SYN_RECV: u8 = 12;

/// Event kinds: a connection's final record (the only kind sent).
pub const EVENT_CLOSE: u32 = 3;

/// How the kernel side learned about a connection.
/// Seen from its first state change: counters start at zero.
pub const ORIGIN_BORN: u8 = 1;
/// Already existed when first seen: socket counters have a baseline.
pub const ORIGIN_EXISTING: u8 = 2;

/// Both endpoints of a connection as the kernel holds them.
///
/// IPv4 addresses use the first 4 bytes of `saddr`/`daddr` (network order);
/// IPv6 use all 16. Ports are in host order.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ConnTuple {
    pub saddr: [u8; 16],
    pub daddr: [u8; 16],
    pub sport: u16,
    pub dport: u16,
    pub family: u16,
    pub proto: u8,
    pub _pad0: u8,
    /// Inode number of the socket's network namespace.
    pub netns: u32,
}

/// Per-connection record kept in [`MAP_CONNS`].
///
/// `tx_*`/`rx_*` are updated with atomic adds (no lost increments); the
/// socket counters (`segs_*`, `srtt_us8`, `retrans`) are copies of the
/// kernel's own `tcp_sock` counters taken at each event, with `*_base` the
/// value when tcptop first saw an already-existing connection.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct ConnStats {
    pub tuple: ConnTuple,
    /// Explicit: `tuple` is 44 bytes, the counters below are 8-aligned.
    pub _pad_tuple: u32,
    /// Payload bytes sent/received by send/recv calls.
    pub tx_bytes: u64,
    pub rx_bytes: u64,
    /// `bpf_ktime_get_ns()` when first seen.
    pub first_ns: u64,
    pub segs_in: u32,
    pub segs_out: u32,
    pub segs_in_base: u32,
    pub segs_out_base: u32,
    /// Smoothed RTT in microseconds << 3, as the kernel keeps it (0: unknown).
    pub srtt_us8: u32,
    pub retrans: u32,
    pub retrans_base: u32,
    /// TGID of the process that last sent or received (0: not known yet).
    pub pid: u32,
    /// Thread-group leader's name, NUL padded.
    pub comm: [u8; 16],
    /// Kernel TCP state.
    pub state: u8,
    /// One of `ORIGIN_*`.
    pub origin: u8,
    pub _pad0: [u8; 2],
    /// `jiffies >> 8` (about a second) when `comm` was read: the name is
    /// re-read once per such epoch, so an exec shows.
    pub comm_epoch: u32,
}

/// A lifecycle event, sent through [`MAP_EVENTS`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct ConnEvent {
    /// One of `EVENT_*`.
    pub kind: u32,
    pub _pad0: u32,
    /// Kernel socket address: identifies the connection while it lives.
    pub sk: u64,
    pub stats: ConnStats,
}

/// One UDP flow in [`MAP_UDP_FLOWS`], keyed by its [`ConnTuple`] (local
/// address and port as the socket is bound, the datagram's peer, protocol
/// UDP, network namespace): counted at each send/receive call.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct UdpFlow {
    /// UDP payload bytes: the calls' return values.
    pub tx_bytes: u64,
    pub rx_bytes: u64,
    /// Datagrams: successful calls (a UDP_SEGMENT send or UDP_GRO receive
    /// moving several in one call counts as one).
    pub tx_packets: u64,
    pub rx_packets: u64,
    /// `bpf_ktime_get_ns()` of the first and the last call.
    pub first_ns: u64,
    pub last_ns: u64,
    /// TGID of the last process to send or receive on the flow.
    pub pid: u32,
    /// As [`ConnStats::comm_epoch`].
    pub comm_epoch: u32,
    /// Thread-group leader's name, NUL padded.
    pub comm: [u8; 16],
}

/// Byte offsets of the kernel struct fields the programs read, computed by
/// user space from the running kernel's BTF and written into the programs'
/// read-only data before load.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct Offsets {
    // struct sock_common (at offset 0 of struct sock)
    pub skc_daddr: u32,
    pub skc_rcv_saddr: u32,
    pub skc_dport: u32,
    pub skc_num: u32,
    pub skc_family: u32,
    pub skc_state: u32,
    pub skc_v6_daddr: u32,
    pub skc_v6_rcv_saddr: u32,
    pub skc_net: u32,
    // struct sock
    pub sk_protocol: u32,
    pub sk_type: u32,
    // struct inet_sock: source port, network order; unlike skc_num it is
    // not cleared when the socket releases its port on close.
    pub inet_sport: u32,
    // struct net: ns.inum
    pub net_ns_inum: u32,
    // struct tcp_sock
    pub tcp_srtt_us: u32,
    pub tcp_segs_in: u32,
    pub tcp_segs_out: u32,
    pub tcp_total_retrans: u32,
    // struct task_struct
    pub task_group_leader: u32,
    pub task_comm: u32,
    /// Number of `tcp_recvmsg` arguments, i.e. the position of its return
    /// value for fexit: 6 before Linux 5.19 (`int nonblock` before `flags`),
    /// 5 until `addr_len` went away, 4 since. `flags` is at 4 when there are
    /// 6, at 3 otherwise.
    pub recv_ret_arg: u32,
    // struct msghdr: the peer address of a send or receive call
    pub msghdr_name: u32,
    /// Non-zero when UDP flows are counted (not `--tcp`).
    pub udp: u32,
    /// Non-zero once filled in by user space; programs do nothing until then.
    pub ready: u32,
    /// Benchmark instrument: [`SKIP_CALLS`], [`SKIP_RING`] (0 in normal use).
    pub bench_skip: u32,
}

/// `Offsets::bench_skip`: the send/receive programs return at once (no
/// bytes, no owners from calls).
pub const SKIP_CALLS: u32 = 1;
/// `Offsets::bench_skip`: a teardown deletes the record without sending
/// its final copy through the ring buffer.
pub const SKIP_RING: u32 = 2;

#[cfg(feature = "user")]
mod user {
    // SAFETY: plain-old-data: repr(C), only integers and integer arrays, every
    // bit pattern is valid, padding is explicit.
    unsafe impl aya::Pod for super::ConnStats {}
    unsafe impl aya::Pod for super::ConnEvent {}
    unsafe impl aya::Pod for super::Offsets {}
    unsafe impl aya::Pod for super::ConnTuple {}
    unsafe impl aya::Pod for super::UdpFlow {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::size_of;

    #[test]
    fn layouts_have_no_implicit_padding() {
        assert_eq!(size_of::<ConnTuple>(), 16 + 16 + 2 + 2 + 2 + 1 + 1 + 4);
        assert_eq!(
            size_of::<ConnStats>(),
            size_of::<ConnTuple>() + 4 + 3 * 8 + 8 * 4 + 16 + 2 + 1 + 1 + 4
        );
        assert_eq!(size_of::<ConnEvent>(), 16 + size_of::<ConnStats>());
        assert_eq!(size_of::<Offsets>(), 24 * 4);
        assert_eq!(size_of::<UdpFlow>(), 6 * 8 + 8 + 16);
    }
}
