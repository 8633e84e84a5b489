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
/// Name of the global holding what user space decided at load ([`Config`]).
pub const GLOBAL_CONFIG: &str = "CONFIG";

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
/// Not a drop: UDP flows the kernel programs made (inserted into the flow
/// map), so that user space, which alone removes them, knows the map is
/// empty without walking its buckets (a walk of an empty hash map visits
/// every bucket: ~1 ms a snapshot at 524,288).
pub const COUNT_UDP_FLOWS_MADE: u32 = 3;
/// Number of counters in the drop counters' array.
pub const DROP_COUNTERS: u32 = 4;

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
pub const TCP_FIN_WAIT1: u8 = 4;
pub const TCP_FIN_WAIT2: u8 = 5;
pub const TCP_TIME_WAIT: u8 = 6;
pub const TCP_CLOSE: u8 = 7;
pub const TCP_CLOSE_WAIT: u8 = 8;
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
/// `tx_bytes`/`rx_bytes` are updated with atomic adds at each send/receive
/// call (no lost increments); the socket counters (`segs_*`, `srtt_us8`,
/// `retrans`) and the application's bytes (`app_*`, see [`app_bytes`]) are
/// copies of the kernel's own `tcp_sock` counters taken whenever the socket
/// is read (each snapshot, teardown), with `*_base` the value when tcptop
/// first saw an already-existing connection.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct ConnStats {
    pub tuple: ConnTuple,
    /// The touch generation (`SETTINGS[SETTING_TOUCH_GEN]`) in which a
    /// call or the transition to ESTABLISHED last put this socket into
    /// [`MAP_TOUCHED`] (0: never). Also the padding after `tuple` (44
    /// bytes; the counters below are 8-aligned).
    pub touched: u32,
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
    /// `CONN_*` bits.
    pub flags: u8,
    pub _pad0: u8,
    /// `jiffies >> 8` (about a second) when `comm` was read: the name is
    /// re-read once per such epoch, so an exec shows.
    pub comm_epoch: u32,
    /// Bytes the application wrote into and read from the socket since it
    /// was made, by every path (send/recv, sendfile, splice, zero-copy...),
    /// from the socket's own counters (see [`app_bytes`]); valid when
    /// `flags` has [`CONN_APP`].
    pub app_tx: u64,
    pub app_rx: u64,
    /// `app_tx`/`app_rx` when tcptop started tracking a connection that
    /// already existed (0 for one born while watched).
    pub app_tx_base: u64,
    pub app_rx_base: u64,
    /// The owner's cgroup (v2) id (its directory's inode), read with the
    /// owner (0: not known yet).
    pub cgroup_id: u64,
}

/// `ConnStats::flags`: `app_tx`/`app_rx` have been read from the socket.
pub const CONN_APP: u8 = 1;
/// `ConnStats::flags`: born by connect() (its SYN counts in `bytes_acked`
/// and the send sequence).
pub const CONN_ACTIVE: u8 = 2;
/// `ConnStats::flags`: reached CLOSE without having sent a FIN (reset,
/// refused, aborted), so the send sequence holds no FIN.
pub const CONN_NO_FIN: u8 = 4;
/// `ConnStats::flags`: a listener's child that went from SYN_RECV to CLOSE
/// before any call on it. The kernel makes such a child when two CPUs take
/// the last packet of one handshake at once (it keeps the other child) or
/// when a reset ends it before accept(): no application ever saw it, and
/// its teardown reports nothing (it was a CLOSED row of zero bytes beside
/// the real connection's).
pub const CONN_STILLBORN: u8 = 8;

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
    /// As [`ConnStats::cgroup_id`].
    pub cgroup_id: u64,
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
    // struct tcp_sock: the counters behind the application's bytes
    pub tcp_bytes_acked: u32,
    pub tcp_bytes_received: u32,
    pub tcp_write_seq: u32,
    pub tcp_snd_una: u32,
    pub tcp_rcv_nxt: u32,
    pub tcp_copied_seq: u32,
    // struct sock_common: skc_flags (sk_flags, unsigned long), and the bit
    // of SOCK_DONE in it
    // (set when the peer's FIN has arrived)
    pub sk_flags: u32,
    pub sock_done_bit: u32,
    // The socket's inode number (as /proc/<pid>/fd links name it):
    // sock.sk_socket -> socket.file -> file.f_inode -> inode.i_ino
    pub sk_socket: u32,
    pub socket_file: u32,
    pub file_inode: u32,
    pub inode_ino: u32,
    // The owners' iterator (`tcptop_owners`): a socket file's
    // file.private_data is its struct socket, whose `file` points back;
    // task_struct.tgid is the process id /proc shows.
    pub file_private_data: u32,
    pub task_tgid: u32,
    // socket.sk: the record key of the socket a file holds.
    pub socket_sk: u32,
    /// `sizeof(struct sock)`: a field below it is read directly through a
    /// typed `struct sock` pointer, one past it with a probe read.
    pub sock_size: u32,
    /// The TCP window (`tcp_window`): where in `struct tcp_sock` it
    /// starts, and its length in bytes (0: no window, each counter is read
    /// on its own).
    pub tcp_window: u32,
    pub tcp_window_len: u32,
}

/// The most bytes of `struct tcp_sock` the TCP window copies.
pub const TCP_WINDOW_MAX: usize = 512;

/// The TCP window: one stretch of `struct tcp_sock` holding every counter
/// an adopted connection is baselined from, copied with one probe read
/// instead of nine (the owners' walk at start-up adopts every connection
/// the machine holds: at 200,000 cold sockets the one copy saves ~60 ms of
/// CPU, in paired runs). As `(start, length)`,
/// from the counters' offsets in `o`; None where they are too far apart,
/// or where a copy made from low addresses to high would read them in an
/// order `read_app` does not allow (each sequence before what is measured
/// against it: the copied sequence before `rcv_nxt`, the write sequence
/// before `snd_una`, each of `snd_una` and `rcv_nxt` before the byte
/// counter it is paired with), or where the window would begin inside
/// `struct sock` (its fields are read directly, after the copy).
pub fn tcp_window(o: &Offsets) -> Option<(u32, u32)> {
    let fields = [
        (o.tcp_copied_seq, 4),
        (o.tcp_write_seq, 4),
        (o.tcp_snd_una, 4),
        (o.tcp_rcv_nxt, 4),
        (o.tcp_bytes_acked, 8),
        (o.tcp_bytes_received, 8),
        (o.tcp_srtt_us, 4),
        (o.tcp_segs_in, 4),
        (o.tcp_segs_out, 4),
    ];
    let start = fields.iter().map(|&(at, _)| at).min()? & !7;
    let end = fields.iter().map(|&(at, size)| at + size).max()?;
    let len = (end - start).next_multiple_of(8);
    let ordered = o.tcp_copied_seq < o.tcp_rcv_nxt
        && o.tcp_write_seq < o.tcp_snd_una
        && o.tcp_snd_una < o.tcp_bytes_acked
        && o.tcp_rcv_nxt < o.tcp_bytes_received;
    (ordered && start >= o.sock_size && len as usize <= TCP_WINDOW_MAX).then_some((start, len))
}

/// What the TCP socket iterator (`tcptop_adopt_tcp`) writes for each
/// connection it adopts: its record's key and its socket's inode number
/// (0 for a socket no file holds), so that user space names its owner
/// from /proc's descriptor links without a dump of the diagnostics.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Adopted {
    pub sk: u64,
    pub inode: u64,
}

/// What the process files' iterator (`tcptop_owners`) writes for each
/// socket a process holds: the socket's inode number (as
/// `/proc/<pid>/fd` links name it), its `struct sock` (the record key,
/// so that a connection the TCP iterator adopts is named without that
/// walk writing anything), the holder's process id and name (its
/// thread group leader's). One walk of every
/// process's descriptors in the kernel, instead of a readlink per
/// descriptor through /proc.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Owned {
    pub inode: u64,
    /// The `struct sock` the file's socket holds (a TCP record's key).
    pub sk: u64,
    pub tgid: u32,
    /// The adopting walks only (`tcptop_owners_typed`,
    /// `tcptop_owners_adopt`): the namespace (inode number) of a TCP
    /// socket the kernel counts as in use there (listening or connected:
    /// `inuse` in that namespace's /proc/net/sockstat), 0 for any other.
    pub netns: u32,
    pub comm: [u8; 16],
}

/// What the lazy walk (`tcptop_owners_lazy`, Linux 6.1+) writes for each
/// socket a process holds: [`Owned`], then, for a TCP connection the
/// kernel has no record of, the record the eager walks would have
/// inserted (counters baselined now, named after this holder;
/// `stats.origin` is [`ORIGIN_EXISTING`]), all zero otherwise. User space
/// shows it until the connection's first call or state change makes a
/// record, and rebases that record's counters on this baseline: the
/// connection table holds only connections that did something since
/// start (200,000 idle ones were 78 MB of kernel memory to zero).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct Standing {
    pub owned: Owned,
    pub stats: ConnStats,
}

/// Name of the one-element array of run-time settings ([`SETTING_*`]), which
/// user space may change after load (unlike [`Offsets`]).
pub const MAP_SETTINGS: &str = "SETTINGS";
/// `SETTINGS[0]` bit: no map iterator refreshes records (the kernel refused
/// it), so the state program completes a record's endpoints and state when
/// its connection is established (a lookup per connection end, paid only
/// then).
pub const SETTING_FILL_ESTABLISHED: u32 = 1;
/// `SETTINGS[0]` bit: the programs put each socket whose record may have
/// changed into [`MAP_TOUCHED`] (once per generation for a call), so that
/// a snapshot refreshes only those (the socket diagnostics' refresh path).
pub const SETTING_TOUCH: u32 = 2;
/// `SETTINGS[0]` bit: the lazy walk left idle connections without a
/// record (`Standing`), and the read and retransmit tracepoints make one
/// for such a socket (ESTABLISHED, no record) when they see it: what moves
/// it then may be what no call hook sees (a splice() read,
/// TCP_ZEROCOPY_RECEIVE, a sockmap redirect, a retransmit).
pub const SETTING_LAZY_READS: u32 = 4;
/// Index in `SETTINGS` of the touch generation, which user space advances
/// at each snapshot.
pub const SETTING_TOUCH_GEN: u32 = 1;
/// Entries of `SETTINGS`.
pub const SETTINGS_LEN: u32 = 2;

/// Name of the ring buffer of touched sockets (`struct sock *` as `u64`,
/// with [`SETTING_TOUCH`]): calls, state changes a connection can rest in,
/// retransmits, reads by any path.
pub const MAP_TOUCHED: &str = "TOUCHED";
/// Its size in bytes: 131,072 touches (16 bytes each with the ring's
/// header) between two snapshots before one is lost (then counted, and
/// the next snapshot refreshes every record).
pub const TOUCHED_BYTES: u32 = 2 << 20;
/// Name of the per-CPU state of touching ([`TouchCpu`]).
pub const MAP_TOUCH_CPU: &str = "TOUCH_CPU";

/// Per CPU: what touching needs to remember.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct TouchCpu {
    /// Touches not put because the ring was full, or after one was not in
    /// the same generation (a running count).
    pub lost: u64,
    /// The generation, plus one, in which this CPU last lost a touch: it
    /// tries no more puts in that generation, and counts each as lost (the
    /// snapshot after the last of them refreshes every record).
    pub lost_gen: u64,
    /// The socket this CPU last touched for a read (`tcp_rcv_space_adjust`
    /// fires at every receive call), and in which generation plus one.
    pub read_sk: u64,
    pub read_gen: u64,
}
/// Whether a TCP connection in `state` has queued its FIN (it counts one
/// in the send sequence). For CLOSE, `close_fin` says (see [`CONN_NO_FIN`]).
#[inline(always)]
pub fn fin_sent(state: u8, close_fin: bool) -> bool {
    match state {
        TCP_FIN_WAIT1 | TCP_FIN_WAIT2 | TCP_TIME_WAIT | TCP_LAST_ACK | TCP_CLOSING => true,
        TCP_CLOSE => close_fin,
        _ => false,
    }
}

/// The bytes an application wrote into and read from a TCP socket since it
/// was made, by any path (send/recv calls, sendfile, splice, zero-copy
/// receive, io_uring: whatever moves the socket's sequence counters), from
/// the kernel's per-socket counters, as `(tx, rx)`:
///
/// - `acked` (`tcp_sock.bytes_acked`, `tcpi_bytes_acked`) counts what the
///   peer acknowledged, the SYN included on the active side (`syn`) and the
///   FIN once acknowledged; `unacked` (`write_seq - snd_una`, inet_diag's
///   `idiag_wqueue`) what is queued but not acknowledged yet, the FIN
///   included once queued (`fin_sent`). Sent = both, less the SYN and FIN.
/// - `received` (`bytes_received`, `tcpi_bytes_received`) counts what
///   arrived in order, the peer's FIN included; `unread` (`rcv_nxt -
///   copied_seq`, `idiag_rqueue`) what the application has not read yet,
///   the FIN included until it reads it (a read at the end consumes it).
///   Read = received less unread, less the FIN once read (`fin_rcvd` and
///   nothing unread).
///
/// None when the counters are not those of a connection past its
/// handshake (a queue longer than 2 GiB, or less than the SYN/FIN it
/// should hold: values from a socket still being set up).
#[inline(always)]
pub fn app_bytes(
    acked: u64,
    received: u64,
    unacked: u32,
    unread: u32,
    syn: bool,
    fin_sent: bool,
    fin_rcvd: bool,
) -> Option<(u64, u64)> {
    if unacked >= 1 << 31 || unread >= 1 << 31 {
        return None;
    }
    let tx = (acked + unacked as u64).checked_sub(syn as u64 + fin_sent as u64)?;
    let read_fin = fin_rcvd && unread == 0;
    let rx = received.checked_sub(unread as u64 + read_fin as u64)?;
    Some((tx, rx))
}

/// What user space decides before load, frozen with the programs (the
/// run-time settings that may change later are a map: `MAP_SETTINGS`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct Config {
    /// Non-zero once filled in by user space; programs do nothing until then.
    pub ready: u32,
    /// Non-zero when UDP flows are counted (not `--tcp`).
    pub udp: u32,
    /// Benchmark instrument: [`SKIP_CALLS`], [`SKIP_RING`] (0 in normal use).
    /// User space sets it only when built with its `bench-switches` feature
    /// (or debug assertions): it stays here, as data, in every build.
    pub bench_skip: u32,
    /// Non-zero where the connection table is allocated as records come
    /// (Linux 6.1+) and the lazy walk may leave connections open before
    /// start without a record: a TCP socket without one that leaves
    /// ESTABLISHED gets one then, so that its state shows.
    pub lazy: u32,
}

/// `Config::bench_skip`: the send/receive programs return at once (no
/// bytes, no owners from calls).
pub const SKIP_CALLS: u32 = 1;
/// `Config::bench_skip`: a teardown deletes the record without sending
/// its final copy through the ring buffer.
pub const SKIP_RING: u32 = 2;

#[cfg(feature = "user")]
mod user {
    // SAFETY: plain-old-data: repr(C), only integers and integer arrays, every
    // bit pattern is valid, padding is explicit.
    unsafe impl aya::Pod for super::ConnStats {}
    unsafe impl aya::Pod for super::ConnEvent {}
    unsafe impl aya::Pod for super::Offsets {}
    unsafe impl aya::Pod for super::Config {}
    unsafe impl aya::Pod for super::ConnTuple {}
    unsafe impl aya::Pod for super::UdpFlow {}
    unsafe impl aya::Pod for super::TouchCpu {}
    unsafe impl aya::Pod for super::Standing {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::size_of;

    /// `struct tcp_sock` as four kernels lay it out (from their BTF):
    /// (copied_seq, write_seq, snd_una, rcv_nxt, bytes_acked,
    /// bytes_received, srtt_us, segs_in, segs_out), `sizeof(struct sock)`.
    fn layout(f: [u32; 9], sock_size: u32) -> Offsets {
        Offsets {
            tcp_copied_seq: f[0],
            tcp_write_seq: f[1],
            tcp_snd_una: f[2],
            tcp_rcv_nxt: f[3],
            tcp_bytes_acked: f[4],
            tcp_bytes_received: f[5],
            tcp_srtt_us: f[6],
            tcp_segs_in: f[7],
            tcp_segs_out: f[8],
            sock_size,
            ..Offsets::default()
        }
    }

    #[test]
    fn tcp_window_where_the_layout_allows() {
        // 6.18: the counters grouped by cache line since 6.8.
        let k618 = layout([1464, 1576, 1672, 1664, 1824, 1752, 1680, 1760, 1536], 784);
        assert_eq!(tcp_window(&k618), Some((1464, 368)));
        // 6.12 (Debian 12's backport).
        let k612 = layout([1520, 1636, 1720, 1712, 1840, 1784, 1728, 1792, 1600], 776);
        assert_eq!(tcp_window(&k612), Some((1520, 328)));
        // 6.1 and 5.10: bytes_received before rcv_nxt, the write sequence
        // after snd_una: a copy would read them out of order.
        let k61 = layout([1468, 1852, 1508, 1464, 1496, 1448, 1672, 1456, 1480], 776);
        assert_eq!(tcp_window(&k61), None);
        let k510 = layout([1428, 1812, 1468, 1424, 1456, 1408, 1632, 1416, 1440], 768);
        assert_eq!(tcp_window(&k510), None);
        // In order but too far apart.
        let wide = layout([1000, 1100, 1200, 1300, 1400, 1520, 1000, 1000, 1000], 768);
        assert_eq!(tcp_window(&wide), None);
        let just = layout([1000, 1100, 1200, 1300, 1400, 1504, 1000, 1000, 1000], 768);
        assert_eq!(tcp_window(&just), Some((1000, 512)));
        // Not inside struct sock; an unaligned start rounds down.
        assert_eq!(
            tcp_window(&layout(
                [1464, 1576, 1672, 1664, 1824, 1752, 1680, 1760, 1536],
                1465
            )),
            None
        );
        let odd = layout([1468, 1576, 1672, 1664, 1824, 1752, 1680, 1760, 1536], 784);
        assert_eq!(tcp_window(&odd), Some((1464, 368)));
    }

    #[test]
    fn layouts_have_no_implicit_padding() {
        assert_eq!(size_of::<ConnTuple>(), 16 + 16 + 2 + 2 + 2 + 1 + 1 + 4);
        assert_eq!(
            size_of::<ConnStats>(),
            size_of::<ConnTuple>() + 4 + 3 * 8 + 8 * 4 + 16 + 4 + 4 + 5 * 8
        );
        assert_eq!(size_of::<ConnEvent>(), 16 + size_of::<ConnStats>());
        assert_eq!(size_of::<Offsets>(), 39 * 4);
        assert_eq!(size_of::<Adopted>(), 2 * 8);
        assert_eq!(size_of::<Owned>(), 8 + 8 + 4 + 4 + 16);
        assert_eq!(
            size_of::<Standing>(),
            size_of::<Owned>() + size_of::<ConnStats>()
        );
        assert_eq!(size_of::<Config>(), 4 * 4);
        assert_eq!(size_of::<TouchCpu>(), 4 * 8);
        assert_eq!(size_of::<UdpFlow>(), 6 * 8 + 8 + 16 + 8);
    }

    /// The counters `ss -ti` showed for a real loopback exchange (client
    /// sent 1,000 bytes, server 2,000; the client shut down its side, the
    /// server read everything and then the end).
    #[test]
    fn app_bytes_from_real_counters() {
        // Client right after connect: bytes_acked 1 (its SYN).
        assert_eq!(app_bytes(1, 0, 0, 0, true, false, false), Some((0, 0)));
        // Client in SYN_SENT: the SYN queued, not acknowledged.
        assert_eq!(app_bytes(0, 0, 1, 0, true, false, false), Some((0, 0)));
        // Client after sending 1,000 (acked) and its FIN (acked): FIN_WAIT2.
        assert_eq!(
            app_bytes(1002, 2000, 0, 2000, true, true, false),
            Some((1000, 0))
        );
        // Server: 1,001 received (with the FIN), 601 unread (600 + FIN).
        assert_eq!(
            app_bytes(2000, 1001, 0, 601, false, false, true),
            Some((2000, 400))
        );
        // Server after reading the rest: the FIN went with the last read.
        assert_eq!(
            app_bytes(2000, 1001, 0, 0, false, false, true),
            Some((2000, 1000))
        );
        // Sent but not acknowledged yet, FIN queued: 500 of data.
        assert_eq!(app_bytes(1, 0, 501, 0, true, true, false), Some((500, 0)));
        // Counters of a socket being set up.
        assert_eq!(app_bytes(0, 0, 0, 0, true, false, false), None);
        assert_eq!(app_bytes(0, 0, 1 << 31, 0, false, false, false), None);
        assert_eq!(app_bytes(0, 0, 0, 0, false, false, true), None);
    }

    #[test]
    fn fin_sent_by_state() {
        for s in [
            TCP_FIN_WAIT1,
            TCP_FIN_WAIT2,
            TCP_TIME_WAIT,
            TCP_LAST_ACK,
            TCP_CLOSING,
        ] {
            assert!(fin_sent(s, false));
        }
        for s in [TCP_ESTABLISHED, TCP_SYN_SENT, TCP_SYN_RECV, TCP_CLOSE_WAIT] {
            assert!(!fin_sent(s, true));
        }
        assert!(fin_sent(TCP_CLOSE, true));
        assert!(!fin_sent(TCP_CLOSE, false));
    }
}
