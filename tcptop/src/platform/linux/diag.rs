//! TCP sockets read through the kernel's socket diagnostics
//! (NETLINK_SOCK_DIAG, inet_diag: what `ss -ti` reads), for kernels that
//! refuse BPF iterators and for the unprivileged mode.
//!
//! A netlink socket answers for the network namespace it was created in,
//! for as long as it lives: [`DiagSocket::open_in`] creates one inside
//! another namespace on a thread of its own (setns needs CAP_SYS_ADMIN;
//! the thread ends there), and the socket then dumps that namespace
//! without any privilege. Reading the dump needs none either.
//!
//! One dump is a request per family (`struct inet_diag_req_v2`,
//! SOCK_DIAG_BY_FAMILY with NLM_F_DUMP) and a multi-part reply: each
//! `recv` returns one datagram, the kernel's next batch of whole messages
//! (`struct inet_diag_msg` and its attributes, one per socket), until
//! NLMSG_DONE or NLMSG_ERROR. The kernel fills the next batch inside our
//! `recv` (netlink_recvmsg calls netlink_dump), so one batch at a time is
//! queued and SO_RCVBUF does not matter (measured: a 4 MiB one changes
//! nothing). A batch is at most SKB_WITH_OVERHEAD(32 KiB), see
//! [`RECV_BUF_LEN`].
//!
//! Cost (Linux 6.18, release build, 2 busy cores, three runs): a dump of
//! 10,000 established loopback connections takes 12 to 18 ms of CPU
//! (about as much wall time), nearly all in the kernel (parsing: 0.5 ms).
//! Of that, 3.2 to 6.5 ms is paid even for an empty namespace: each
//! family's dump walks the whole established hash table (262,144 buckets
//! here), which all namespaces share unless one was given its own at
//! creation (Linux 6.1+, net.ipv4.tcp_child_ehash_entries).
//!
//! Parsing is a set of pure functions over byte slices, tested on
//! hand-made replies; `from_ne_bytes` on checked sub-slices, no casts.

use std::fs::File;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::{AsFd, OwnedFd};
use std::time::Duration;

use rustix::io::Errno;
use rustix::net::netlink::{self, SocketAddrNetlink};
use rustix::net::sockopt::{Timeout, set_socket_timeout};
use rustix::net::{AddressFamily, RecvFlags, SendFlags, SocketFlags, SocketType};
use rustix::thread::{LinkNameSpaceType, move_into_link_name_space};

/// Receive buffer, reused by every dump of a socket. The kernel sizes each
/// batch from the largest buffer we have passed to recv, capped at
/// SKB_WITH_OVERHEAD(32 KiB) (netlink_recvmsg, netlink_dump; never below
/// NLMSG_GOODSIZE, 8 KiB at most), so 32 KiB holds every batch and a
/// larger buffer is never filled. Measured (ignored test
/// `dump_10000_connections`, 10,000 connections, 4 MB of replies): 8 KiB
/// batches take 502 recv calls, 32 KiB ones 129 (of 32,232 bytes), and
/// 64 or 128 KiB buffers the same 129; the CPU time per dump is the same
/// within noise for all (the kernel's work dominates).
const RECV_BUF_LEN: usize = 32 * 1024;

/// A dump that stalls this long on one batch is given up (the kernel
/// produces each batch inside our recv call, so only a wedged kernel or
/// a lost reply would get here; better an error than a frozen refresh).
const RECV_TIMEOUT: Duration = Duration::from_secs(5);

// Netlink (include/uapi/linux/netlink.h).
/// `sizeof(struct nlmsghdr)`: nlmsg_len u32, nlmsg_type u16, nlmsg_flags
/// u16, nlmsg_seq u32, nlmsg_pid u32.
const NLMSG_HDRLEN: usize = 16;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLM_F_REQUEST: u16 = 0x01;
/// NLM_F_ROOT | NLM_F_MATCH.
const NLM_F_DUMP: u16 = 0x300;
/// `struct nlattr` / `struct rtattr` header: length u16, type u16.
const NLA_HDRLEN: usize = 4;
/// The type bits of an attribute's type (without NLA_F_NESTED and
/// NLA_F_NET_BYTEORDER).
const NLA_TYPE_MASK: u16 = 0x3fff;

// Socket diagnostics (include/uapi/linux/sock_diag.h, inet_diag.h).
const SOCK_DIAG_BY_FAMILY: u16 = 20;
/// `sizeof(struct inet_diag_req_v2)`: family, protocol, ext, pad (u8
/// each), idiag_states u32, `struct inet_diag_sockid` (48 bytes).
const INET_DIAG_REQ_V2_LEN: usize = 56;
/// `sizeof(struct inet_diag_msg)`: family, state, timer, retrans (u8
/// each), `struct inet_diag_sockid` (48), expires, rqueue, wqueue, uid,
/// inode (u32 each).
const INET_DIAG_MSG_LEN: usize = 72;
/// Attribute carrying `struct tcp_info` (tcp_diag_get_info).
const INET_DIAG_INFO: u16 = 2;
/// `INET_DIAG_NOCOOKIE` (~0U): the request's cookie, unused by a dump.
const INET_DIAG_NOCOOKIE: u32 = !0;

// Offsets in `struct inet_diag_msg`; the socket id starts at 4.
const MSG_SPORT: usize = 4; // __be16 idiag_sport
const MSG_DPORT: usize = 6; // __be16 idiag_dport
const MSG_SRC: usize = 8; // __be32 idiag_src[4]
const MSG_DST: usize = 24; // __be32 idiag_dst[4]
const MSG_COOKIE: usize = 44; // __u32 idiag_cookie[2] (after idiag_if at 40)
const MSG_RQUEUE: usize = 56; // after idiag_expires at 52
const MSG_WQUEUE: usize = 60;
const MSG_UID: usize = 64;
const MSG_INODE: usize = 68;

const AF_INET: u8 = 2;
const AF_INET6: u8 = 10;
const IPPROTO_TCP: u8 = 6;

/// Byte offsets of the `struct tcp_info` fields read here
/// (include/uapi/linux/tcp.h; every field is naturally aligned, so no
/// padding: eight u8 (state .. the two bit-field bytes) end at 8, then
/// u32s up to tcpi_total_retrans at 100, u64s from tcpi_pacing_rate at
/// 104). A kernel older than a field sends a shorter struct: the field is
/// then absent, read as 0 (see [`TcpInfo::len`]). The test
/// `tcp_info_offsets_are_the_headers` checks them against a transcription
/// of the struct laid out by the compiler.
pub mod tcp_info {
    /// `__u32 tcpi_last_data_sent` (ms).
    pub const LAST_DATA_SENT: usize = 44;
    /// `__u32 tcpi_last_data_recv` (ms).
    pub const LAST_DATA_RECV: usize = 52;
    /// `__u32 tcpi_last_ack_recv` (ms).
    pub const LAST_ACK_RECV: usize = 56;
    /// `__u32 tcpi_rtt` (µs).
    pub const RTT: usize = 68;
    /// `__u32 tcpi_rttvar` (µs).
    pub const RTTVAR: usize = 72;
    /// `__u32 tcpi_snd_cwnd` (segments).
    pub const SND_CWND: usize = 80;
    /// `__u32 tcpi_total_retrans`; the struct of Linux 2.6 to 3.14 ends
    /// after it (104 bytes).
    pub const TOTAL_RETRANS: usize = 100;
    /// `__u64 tcpi_bytes_acked` (Linux 4.1+).
    pub const BYTES_ACKED: usize = 120;
    /// `__u64 tcpi_bytes_received` (Linux 4.1+).
    pub const BYTES_RECEIVED: usize = 128;
    /// `__u32 tcpi_segs_out` (Linux 4.2+).
    pub const SEGS_OUT: usize = 136;
    /// `__u32 tcpi_segs_in` (Linux 4.2+).
    pub const SEGS_IN: usize = 140;
    /// `__u32 tcpi_notsent_bytes` (Linux 4.6+).
    pub const NOTSENT_BYTES: usize = 144;
    /// `__u32 tcpi_min_rtt` (µs, Linux 4.6+).
    pub const MIN_RTT: usize = 148;
    /// `__u32 tcpi_data_segs_in` (Linux 4.6+).
    pub const DATA_SEGS_IN: usize = 152;
    /// `__u32 tcpi_data_segs_out` (Linux 4.6+).
    pub const DATA_SEGS_OUT: usize = 156;
    /// `__u64 tcpi_delivery_rate` (bytes/s, Linux 4.9+).
    pub const DELIVERY_RATE: usize = 160;
    /// `__u32 tcpi_delivered` (Linux 4.18+).
    pub const DELIVERED: usize = 192;
    /// `__u64 tcpi_bytes_sent` (Linux 4.19+).
    pub const BYTES_SENT: usize = 200;
    /// `__u64 tcpi_bytes_retrans` (Linux 4.19+).
    pub const BYTES_RETRANS: usize = 208;
    /// `sizeof(struct tcp_info)` as of Linux 6.7 (up to
    /// tcpi_total_rto_time); newer kernels append fields, which are
    /// ignored.
    pub const LEN_6_7: usize = 248;
}

/// One TCP socket from an inet_diag dump.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DiagConn {
    /// AF_INET (2) or AF_INET6 (10). An AF_INET6 socket talking IPv4 has
    /// v4-mapped addresses.
    pub family: u16,
    /// Kernel TCP state number (`tcptop_common::TCP_*`: 1 = ESTABLISHED
    /// ... 10 = LISTEN). As inet_diag reports it: a request socket
    /// (TCP_NEW_SYN_RECV inside the kernel) shows as 3 = SYN_RECV, and a
    /// TIME_WAIT socket with its substate (6 = TIME_WAIT, or 5 =
    /// FIN_WAIT2 for one that went to sleep in FIN_WAIT2). The state mask
    /// of a dump matches these same numbers (asking for SYN_RECV brings the
    /// request sockets).
    pub state: u8,
    /// Local address and port as the kernel has them (no v4-mapped
    /// conversion, IPv6 scope and flow info 0). A listener bound to any
    /// address shows 0.0.0.0 or `::`.
    pub local: SocketAddr,
    /// Remote end; 0.0.0.0:0 or `[::]:0` for a listener.
    pub remote: SocketAddr,
    /// The socket's cookie (`idiag_cookie`, two u32 halves, low first):
    /// the same number as SO_COOKIE and bpf_get_socket_cookie.
    pub cookie: u64,
    /// Socket inode (sock_i_ino); 0 for TIME_WAIT and request sockets,
    /// and for a socket no file refers to any more (closed, orphaned).
    pub inode: u32,
    /// Owner uid, as seen from the user namespace of the netlink socket's
    /// opener; 0 for TIME_WAIT and request sockets.
    pub uid: u32,
    /// `idiag_rqueue` (tcp_diag_get_info): for a connection, rcv_nxt -
    /// copied_seq, bytes received in order that the application has not
    /// read, plus 1 once the peer's FIN arrived; for a listener, the
    /// accept queue's length; 0 for TIME_WAIT and request sockets.
    pub rqueue: u32,
    /// `idiag_wqueue`: for a connection, write_seq - snd_una, bytes written
    /// and not yet acknowledged (plus 1 for an unacknowledged SYN or FIN);
    /// for a listener, its backlog (the accept queue's limit).
    pub wqueue: u32,
    /// `struct tcp_info` (INET_DIAG_INFO), when the kernel sent it: it
    /// does for every full socket, not for TIME_WAIT and request sockets.
    pub info: Option<TcpInfo>,
}

/// The `struct tcp_info` fields tcptop uses (include/uapi/linux/tcp.h,
/// filled by tcp_get_info in net/ipv4/tcp.c). A field that a shorter,
/// older struct does not reach is 0; `len` says how much came. For a
/// listener the kernel fills only its queue fields, pacing rates,
/// reordering and (on recent kernels) snd_cwnd: the others here are 0.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TcpInfo {
    /// Bytes of `struct tcp_info` the kernel sent (248 on Linux 6.7, 280
    /// on 6.18).
    pub len: u32,
    /// `tcpi_rtt`: smoothed RTT (srtt_us >> 3), µs; 0 before the first
    /// sample.
    pub rtt_us: u32,
    /// `tcpi_rttvar`: RTT variation (mdev_us >> 2), µs.
    pub rttvar_us: u32,
    /// `tcpi_min_rtt`: windowed minimum RTT (tcp_min_rtt), µs; u32::MAX
    /// while no RTT was sampled (Linux 4.6+).
    pub min_rtt_us: u32,
    /// `tcpi_snd_cwnd`: congestion window, segments.
    pub snd_cwnd: u32,
    /// `tcpi_total_retrans`: segments retransmitted over the lifetime.
    pub total_retrans: u32,
    /// `tcpi_segs_out`: segments sent, every kind (SYN, pure ACKs,
    /// retransmissions), counted per GSO segment (Linux 4.2+).
    pub segs_out: u32,
    /// `tcpi_segs_in`: segments received, pure ACKs included; an
    /// accepted socket's count starts at 1 for the SYN (its SYN-ACK is
    /// not in its segs_out: the request socket sent it) (Linux 4.2+).
    pub segs_in: u32,
    /// `tcpi_data_segs_out`: segments sent that carry data,
    /// retransmissions included (Linux 4.6+).
    pub data_segs_out: u32,
    /// `tcpi_data_segs_in`: segments received that carry data (Linux 4.6+).
    pub data_segs_in: u32,
    /// `tcpi_bytes_acked`: how far snd_una advanced (tcp_snd_una_update):
    /// data the peer acknowledged, plus 1 for our SYN on the connecting
    /// side (an accepted socket starts past its SYN-ACK: 0) and 1 for our
    /// FIN once acknowledged (Linux 4.1+).
    pub bytes_acked: u64,
    /// `tcpi_bytes_received`: how far rcv_nxt advanced
    /// (tcp_rcv_nxt_update): data received in order, plus 1 for the
    /// peer's FIN; not its SYN (Linux 4.1+).
    pub bytes_received: u64,
    /// `tcpi_bytes_sent`: payload bytes transmitted, retransmissions
    /// included, SYN and FIN not (Linux 4.19+).
    pub bytes_sent: u64,
    /// `tcpi_bytes_retrans`: payload bytes retransmitted (Linux 4.19+).
    pub bytes_retrans: u64,
    /// `tcpi_delivered`: segments delivered to the peer (acknowledged,
    /// SACKed included), the SYN or SYN-ACK included: 2 for a client
    /// whose one data segment was acknowledged, 1 for its server (Linux
    /// 4.18+).
    pub delivered: u32,
    /// `tcpi_notsent_bytes`: written but not yet sent (write_seq -
    /// snd_nxt) (Linux 4.6+).
    pub notsent_bytes: u32,
    /// `tcpi_delivery_rate`: the latest delivery rate sample, bytes/s
    /// (Linux 4.9+).
    pub delivery_rate: u64,
    /// `tcpi_last_data_sent`: ms since data was last sent.
    pub last_data_sent_ms: u32,
    /// `tcpi_last_data_recv`: ms since data was last received.
    pub last_data_recv_ms: u32,
    /// `tcpi_last_ack_recv`: ms since an ACK was last received.
    pub last_ack_recv_ms: u32,
}

/// A NETLINK_SOCK_DIAG socket bound to the network namespace it was
/// created in.
#[derive(Debug)]
pub struct DiagSocket {
    fd: OwnedFd,
    /// Receive buffer, kept for every dump.
    buf: Box<[u8]>,
    /// Sequence number of the latest request; replies to others (a dump
    /// given up halfway) are skipped.
    seq: u32,
    /// A dump was started and not read to its end: its rest must be read
    /// away before the next request (the kernel refuses a second dump on a
    /// socket with EBUSY while one runs).
    unfinished: bool,
    /// The kernel answers the legacy request (`TCPDIAG_GETSOCK`, struct
    /// inet_diag_req): one walk of its connection table for both families,
    /// where a SOCK_DIAG_BY_FAMILY request per family walks it twice.
    /// Cleared (and per-family requests used) if it refuses one.
    legacy: bool,
}

impl DiagSocket {
    /// A socket for the caller's network namespace.
    pub fn open() -> io::Result<DiagSocket> {
        Ok(DiagSocket::from_fd(new_socket()?))
    }

    /// A socket for the network namespace of `netns`, an open
    /// `/proc/<pid>/ns/net` (or `/run/netns/<name>`) file. Created on a
    /// short-lived thread that enters that namespace (setns: needs
    /// CAP_SYS_ADMIN); the socket stays bound to it, usable without
    /// privileges from any thread.
    pub fn open_in(netns: &File) -> io::Result<DiagSocket> {
        let fd = std::thread::scope(|s| {
            s.spawn(|| -> io::Result<OwnedFd> {
                // setns moves only this thread, which ends here.
                move_into_link_name_space(netns.as_fd(), Some(LinkNameSpaceType::Network))?;
                new_socket()
            })
            .join()
        })
        .map_err(|_| io::Error::other("the thread entering the network namespace panicked"))??;
        Ok(DiagSocket::from_fd(fd))
    }

    fn from_fd(fd: OwnedFd) -> DiagSocket {
        DiagSocket {
            fd,
            buf: vec![0; RECV_BUF_LEN].into_boxed_slice(),
            seq: 0,
            unfinished: false,
            legacy: true,
        }
    }

    /// Dumps every TCP socket of both families whose state is in `states`
    /// (a bit mask, `1 << state`, state numbers as in
    /// [`DiagConn::state`]), appending to `out` (cleared by the caller).
    /// On error, `out` may hold part of the dump.
    pub fn dump_tcp(&mut self, states: u32, out: &mut Vec<DiagConn>) -> io::Result<()> {
        self.dump_tcp_with(states, out, &mut |_| {})
    }

    /// Dumps like [`dump_tcp`](Self::dump_tcp), handing each batch's
    /// sockets to `each` as the batch is read (`scratch` holds one batch,
    /// ~100 sockets): nothing of the dump is kept (stored, 200,000
    /// sockets took 43 MB).
    pub fn dump_tcp_each(
        &mut self,
        states: u32,
        scratch: &mut Vec<DiagConn>,
        each: &mut impl FnMut(&DiagConn),
    ) -> io::Result<()> {
        scratch.clear();
        self.dump_tcp_with(states, scratch, &mut |batch| {
            batch.drain(..).for_each(|c| each(&c));
        })
    }

    /// `dump_tcp`, calling `batch` with `out` after each batch is read.
    fn dump_tcp_with(
        &mut self,
        states: u32,
        out: &mut Vec<DiagConn>,
        batch: &mut dyn FnMut(&mut Vec<DiagConn>),
    ) -> io::Result<()> {
        if self.unfinished {
            self.read_away();
        }
        if self.legacy {
            // The kernel walks its whole table of connections for each
            // request, however few of them are this namespace's: a walk
            // costs 1.5 to 3 ms with nothing to find (262,144 buckets).
            self.seq = self.seq.wrapping_add(1);
            let before = out.len();
            match self.dump(&legacy_request(states, self.seq), out, batch) {
                Ok(()) => return Ok(()),
                // Not (or no longer) supported: per family from now on.
                Err(e)
                    if matches!(
                        e.raw_os_error(),
                        Some(libc::EINVAL | libc::ENOENT | libc::EOPNOTSUPP)
                    ) =>
                {
                    out.truncate(before);
                    self.legacy = false;
                }
                Err(e) => return Err(e),
            }
        }
        self.dump_family(AF_INET, states, out, batch)?;
        self.dump_family(AF_INET6, states, out, batch)
    }

    fn dump_family(
        &mut self,
        family: u8,
        states: u32,
        out: &mut Vec<DiagConn>,
        batch: &mut dyn FnMut(&mut Vec<DiagConn>),
    ) -> io::Result<()> {
        self.seq = self.seq.wrapping_add(1);
        let req = request(family, states, self.seq);
        self.dump(&req, out, batch)
    }

    /// The TCP socket with these endpoints, if this namespace has one in
    /// a connection's state (one lookup in the kernel's table: what a
    /// snapshot asks of a socket the kernel programs touched).
    pub fn query(&mut self, local: SocketAddr, remote: SocketAddr) -> io::Result<Option<DiagConn>> {
        if self.unfinished {
            self.read_away();
        }
        self.seq = self.seq.wrapping_add(1);
        let req = query_request(local, remote, self.seq);
        let kernel = SocketAddrNetlink::new(0, 0);
        retry(|| rustix::net::sendto(&self.fd, &req, SendFlags::empty(), &kernel))?;
        let mut out = Vec::with_capacity(1);
        // One reply: the socket, or NLMSG_ERROR (ENOENT: none). A reply
        // to an earlier request given up (a timeout) is skipped.
        loop {
            let n = self.recv()?;
            let batch = self.buf.get(..n).unwrap_or_default();
            match parse_batch(batch, self.seq, &mut out) {
                Ok(_) if !out.is_empty() => break,
                Ok(_) => {}
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(None),
                Err(e) => return Err(e),
            }
        }
        // Without a connection of these endpoints the kernel's lookup
        // falls back to a listener on the local port.
        Ok(out
            .pop()
            .filter(|c| c.remote.port() != 0 && c.state != tcptop_common::TCP_LISTEN))
    }

    /// Sends a dump request and reads its whole reply into `out`, calling
    /// `each_batch` after each batch.
    fn dump(
        &mut self,
        req: &[u8],
        out: &mut Vec<DiagConn>,
        each_batch: &mut dyn FnMut(&mut Vec<DiagConn>),
    ) -> io::Result<()> {
        let kernel = SocketAddrNetlink::new(0, 0);
        retry(|| rustix::net::sendto(&self.fd, req, SendFlags::empty(), &kernel))?;
        self.unfinished = true;
        loop {
            let n = self.recv()?;
            let batch = self.buf.get(..n).unwrap_or_default();
            let done = parse_batch(batch, self.seq, out)? == Batch::Done;
            each_batch(out);
            if done {
                self.unfinished = false;
                return Ok(());
            }
        }
    }

    /// One datagram of the reply into the buffer; its length.
    fn recv(&mut self) -> io::Result<usize> {
        // TRUNC: the datagram's full length, to tell a cut one.
        let (_, n) = retry(|| rustix::net::recv(&self.fd, &mut self.buf[..], RecvFlags::TRUNC))
            .map_err(|e| match e.kind() {
                io::ErrorKind::WouldBlock => io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("no socket diagnostics reply within {RECV_TIMEOUT:?}"),
                ),
                _ => e,
            })?;
        if n > self.buf.len() {
            return Err(invalid(format!(
                "a socket diagnostics reply of {n} bytes did not fit the {}-byte buffer",
                self.buf.len()
            )));
        }
        if n == 0 {
            return Err(invalid("empty socket diagnostics reply".into()));
        }
        Ok(n)
    }

    /// Reads away what is left of a dump given up halfway, without
    /// waiting: the kernel queues the next batch inside each recv, so
    /// when nothing is queued the dump is over.
    fn read_away(&mut self) {
        loop {
            match rustix::net::recv(&self.fd, &mut self.buf[..], RecvFlags::DONTWAIT) {
                Ok((_, n)) if n > 0 => {}
                Err(Errno::INTR) => {}
                _ => break,
            }
        }
        self.unfinished = false;
    }
}

/// A NETLINK_SOCK_DIAG socket in the calling thread's namespace.
fn new_socket() -> io::Result<OwnedFd> {
    let fd = rustix::net::socket_with(
        AddressFamily::NETLINK,
        SocketType::RAW,
        SocketFlags::CLOEXEC,
        Some(netlink::SOCK_DIAG),
    )?;
    set_socket_timeout(&fd, Timeout::Recv, Some(RECV_TIMEOUT))?;
    Ok(fd)
}

/// Calls `f` again while it fails with EINTR.
fn retry<T>(mut f: impl FnMut() -> rustix::io::Result<T>) -> io::Result<T> {
    loop {
        match f() {
            Err(Errno::INTR) => {}
            r => return r.map_err(io::Error::from),
        }
    }
}

fn invalid(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

/// The dump request for one family: `struct nlmsghdr` and `struct
/// inet_diag_req_v2`, every TCP socket whose state is in `states`.
fn request(family: u8, states: u32, seq: u32) -> [u8; NLMSG_HDRLEN + INET_DIAG_REQ_V2_LEN] {
    const LEN: usize = NLMSG_HDRLEN + INET_DIAG_REQ_V2_LEN;
    let mut b = [0u8; LEN];
    b[0..4].copy_from_slice(&(LEN as u32).to_ne_bytes());
    b[4..6].copy_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
    b[6..8].copy_from_slice(&(NLM_F_REQUEST | NLM_F_DUMP).to_ne_bytes());
    b[8..12].copy_from_slice(&seq.to_ne_bytes());
    // nlmsg_pid 0: the kernel answers the sending socket's port anyway.
    let r = NLMSG_HDRLEN;
    b[r] = family;
    b[r + 1] = IPPROTO_TCP;
    // Only tcp_info: each extension costs bytes per socket in every batch
    // (and MEMINFO/SKMEMINFO, CONG, TOS reads per socket), and tcptop
    // needs none of the others. The queues come in the message itself.
    b[r + 2] = 1 << (INET_DIAG_INFO - 1);
    b[r + 4..r + 8].copy_from_slice(&states.to_ne_bytes());
    // The socket id (ports, addresses, interface) stays 0: no filter.
    let cookie = r + 8 + 40;
    b[cookie..cookie + 4].copy_from_slice(&INET_DIAG_NOCOOKIE.to_ne_bytes());
    b[cookie + 4..cookie + 8].copy_from_slice(&INET_DIAG_NOCOOKIE.to_ne_bytes());
    b
}

/// The request for one socket by its endpoints (`struct nlmsghdr`, `struct
/// inet_diag_req_v2` without NLM_F_DUMP): the kernel answers with its
/// message and tcp_info, or ENOENT. An IPv4 pair is asked as AF_INET: the
/// kernel's lookup finds a dual-stack socket's IPv4 connection by it too.
fn query_request(
    local: SocketAddr,
    remote: SocketAddr,
    seq: u32,
) -> [u8; NLMSG_HDRLEN + INET_DIAG_REQ_V2_LEN] {
    let (family, src, dst) = match (local.ip(), remote.ip()) {
        (IpAddr::V4(l), IpAddr::V4(r)) => {
            let mut s = [0u8; 16];
            let mut d = [0u8; 16];
            s[..4].copy_from_slice(&l.octets());
            d[..4].copy_from_slice(&r.octets());
            (AF_INET, s, d)
        }
        (l, r) => (AF_INET6, v6_octets(l), v6_octets(r)),
    };
    let mut b = request(family, !0, seq);
    b[6..8].copy_from_slice(&NLM_F_REQUEST.to_ne_bytes());
    let id = NLMSG_HDRLEN + 8;
    b[id..id + 2].copy_from_slice(&local.port().to_be_bytes());
    b[id + 2..id + 4].copy_from_slice(&remote.port().to_be_bytes());
    b[id + 4..id + 20].copy_from_slice(&src);
    b[id + 20..id + 36].copy_from_slice(&dst);
    b
}

fn v6_octets(a: IpAddr) -> [u8; 16] {
    match a {
        IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
        IpAddr::V6(v6) => v6.octets(),
    }
}

/// `TCPDIAG_GETSOCK`: the legacy request type (`struct inet_diag_req`),
/// answered for both families at once (the kernel asks for AF_UNSPEC).
const TCPDIAG_GETSOCK: u16 = 18;
/// `struct inet_diag_req`: family, lengths, ext, a 48-byte socket id,
/// states, dbs.
const INET_DIAG_REQ_LEN: usize = 60;

/// The legacy dump request: every TCP socket of both families whose state
/// is in `states`, tcp_info included; the replies are `inet_diag_msg`s
/// with this type.
fn legacy_request(states: u32, seq: u32) -> [u8; NLMSG_HDRLEN + INET_DIAG_REQ_LEN] {
    const LEN: usize = NLMSG_HDRLEN + INET_DIAG_REQ_LEN;
    let mut b = [0u8; LEN];
    b[0..4].copy_from_slice(&(LEN as u32).to_ne_bytes());
    b[4..6].copy_from_slice(&TCPDIAG_GETSOCK.to_ne_bytes());
    b[6..8].copy_from_slice(&(NLM_F_REQUEST | NLM_F_DUMP).to_ne_bytes());
    b[8..12].copy_from_slice(&seq.to_ne_bytes());
    let r = NLMSG_HDRLEN;
    // idiag_family is not read for a dump (AF_UNSPEC: both families).
    b[r] = AF_INET;
    b[r + 3] = 1 << (INET_DIAG_INFO - 1);
    // The socket id: no filter, no cookie.
    let cookie = r + 4 + 40;
    b[cookie..cookie + 4].copy_from_slice(&INET_DIAG_NOCOOKIE.to_ne_bytes());
    b[cookie + 4..cookie + 8].copy_from_slice(&INET_DIAG_NOCOOKIE.to_ne_bytes());
    b[r + 52..r + 56].copy_from_slice(&states.to_ne_bytes());
    b
}

/// What a batch of a reply ended with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Batch {
    /// More batches follow.
    More,
    /// NLMSG_DONE: the dump is complete.
    Done,
}

/// Parses one datagram of a dump reply to request `seq`: appends each
/// socket to `out`, skips messages of other requests and of other
/// types. A datagram holds whole messages; one cut short, or a length
/// that runs past the end, is an error (InvalidData). NLMSG_ERROR is the
/// kernel's errno as an error.
pub fn parse_batch(mut b: &[u8], seq: u32, out: &mut Vec<DiagConn>) -> io::Result<Batch> {
    while !b.is_empty() {
        let (Some(len), Some(ty), Some(msg_seq)) = (u32_at(b, 0), u16_at(b, 4), u32_at(b, 8))
        else {
            return Err(invalid(format!(
                "socket diagnostics reply cut short: {} bytes where a message header takes {NLMSG_HDRLEN}",
                b.len()
            )));
        };
        let len = len as usize;
        if len < NLMSG_HDRLEN || len > b.len() {
            return Err(invalid(format!(
                "socket diagnostics message of length {len} in {} bytes",
                b.len()
            )));
        }
        let payload = b.get(NLMSG_HDRLEN..len).unwrap_or_default();
        if msg_seq == seq {
            match ty {
                SOCK_DIAG_BY_FAMILY | TCPDIAG_GETSOCK => {
                    if let Some(conn) = parse_diag_msg(payload)? {
                        out.push(conn);
                    }
                }
                // The dump's status (netlink_dump_done): 0, or an error
                // that cut it short.
                NLMSG_DONE => {
                    return match i32_at(payload, 0) {
                        Some(err) if err < 0 => Err(io::Error::from_raw_os_error(-err)),
                        _ => Ok(Batch::Done),
                    };
                }
                NLMSG_ERROR => return parse_error(payload).map(|()| Batch::Done),
                // NLMSG_NOOP and anything else: nothing for us.
                _ => {}
            }
        }
        b = b.get(align4(len)..).unwrap_or_default();
    }
    Ok(Batch::More)
}

/// `struct nlmsgerr`: a negative errno (the request was refused: e.g.
/// EINVAL for a malformed one), or 0 (an acknowledgement).
fn parse_error(payload: &[u8]) -> io::Result<()> {
    match i32_at(payload, 0) {
        Some(0) => Ok(()),
        Some(err) if err < 0 && err > i32::MIN => Err(io::Error::from_raw_os_error(-err)),
        Some(err) => Err(invalid(format!("socket diagnostics error {err}"))),
        None => Err(invalid("socket diagnostics error message cut short".into())),
    }
}

/// One `struct inet_diag_msg` and its attributes (the message's payload).
/// None for a family other than AF_INET/AF_INET6 (skipped); an error when
/// shorter than the struct. Attributes are read while well-formed: a
/// malformed one ends the walk (the socket keeps what came before).
pub fn parse_diag_msg(p: &[u8]) -> io::Result<Option<DiagConn>> {
    let Some(msg) = p.get(..INET_DIAG_MSG_LEN) else {
        return Err(invalid(format!(
            "socket diagnostics message of {} bytes, shorter than struct inet_diag_msg ({INET_DIAG_MSG_LEN})",
            p.len()
        )));
    };
    let family = msg[0];
    let state = msg[1];
    let sport = be16_at(msg, MSG_SPORT).unwrap_or(0);
    let dport = be16_at(msg, MSG_DPORT).unwrap_or(0);
    let (local, remote) = match family {
        AF_INET => (
            SocketAddr::V4(SocketAddrV4::new(ipv4_at(msg, MSG_SRC), sport)),
            SocketAddr::V4(SocketAddrV4::new(ipv4_at(msg, MSG_DST), dport)),
        ),
        AF_INET6 => (
            SocketAddr::V6(SocketAddrV6::new(ipv6_at(msg, MSG_SRC), sport, 0, 0)),
            SocketAddr::V6(SocketAddrV6::new(ipv6_at(msg, MSG_DST), dport, 0, 0)),
        ),
        _ => return Ok(None),
    };
    let cookie_lo = u32_at(msg, MSG_COOKIE).unwrap_or(0);
    let cookie_hi = u32_at(msg, MSG_COOKIE + 4).unwrap_or(0);
    let mut info = None;
    let mut attrs = p.get(align4(INET_DIAG_MSG_LEN)..).unwrap_or_default();
    while let (Some(len), Some(ty)) = (u16_at(attrs, 0), u16_at(attrs, 2)) {
        let len = usize::from(len);
        if len < NLA_HDRLEN || len > attrs.len() {
            break;
        }
        if ty & NLA_TYPE_MASK == INET_DIAG_INFO {
            info = Some(parse_tcp_info(
                attrs.get(NLA_HDRLEN..len).unwrap_or_default(),
            ));
        }
        attrs = attrs.get(align4(len)..).unwrap_or_default();
    }
    Ok(Some(DiagConn {
        family: u16::from(family),
        state,
        local,
        remote,
        cookie: u64::from(cookie_lo) | u64::from(cookie_hi) << 32,
        inode: u32_at(msg, MSG_INODE).unwrap_or(0),
        uid: u32_at(msg, MSG_UID).unwrap_or(0),
        rqueue: u32_at(msg, MSG_RQUEUE).unwrap_or(0),
        wqueue: u32_at(msg, MSG_WQUEUE).unwrap_or(0),
        info,
    }))
}

/// `struct tcp_info` of any length: a field the bytes do not reach in
/// full is 0.
pub fn parse_tcp_info(b: &[u8]) -> TcpInfo {
    use tcp_info::*;
    let u32f = |off| u32_at(b, off).unwrap_or(0);
    let u64f = |off| u64_at(b, off).unwrap_or(0);
    TcpInfo {
        len: u32::try_from(b.len()).unwrap_or(u32::MAX),
        rtt_us: u32f(RTT),
        rttvar_us: u32f(RTTVAR),
        min_rtt_us: u32f(MIN_RTT),
        snd_cwnd: u32f(SND_CWND),
        total_retrans: u32f(TOTAL_RETRANS),
        segs_out: u32f(SEGS_OUT),
        segs_in: u32f(SEGS_IN),
        data_segs_out: u32f(DATA_SEGS_OUT),
        data_segs_in: u32f(DATA_SEGS_IN),
        bytes_acked: u64f(BYTES_ACKED),
        bytes_received: u64f(BYTES_RECEIVED),
        bytes_sent: u64f(BYTES_SENT),
        bytes_retrans: u64f(BYTES_RETRANS),
        delivered: u32f(DELIVERED),
        notsent_bytes: u32f(NOTSENT_BYTES),
        delivery_rate: u64f(DELIVERY_RATE),
        last_data_sent_ms: u32f(LAST_DATA_SENT),
        last_data_recv_ms: u32f(LAST_DATA_RECV),
        last_ack_recv_ms: u32f(LAST_ACK_RECV),
    }
}

/// NLMSG_ALIGN / NLA_ALIGN: the next multiple of 4.
fn align4(n: usize) -> usize {
    n.saturating_add(3) & !3
}

fn bytes_at<const N: usize>(b: &[u8], off: usize) -> Option<[u8; N]> {
    b.get(off..off.checked_add(N)?)?.try_into().ok()
}

fn u16_at(b: &[u8], off: usize) -> Option<u16> {
    bytes_at(b, off).map(u16::from_ne_bytes)
}

fn be16_at(b: &[u8], off: usize) -> Option<u16> {
    bytes_at(b, off).map(u16::from_be_bytes)
}

fn u32_at(b: &[u8], off: usize) -> Option<u32> {
    bytes_at(b, off).map(u32::from_ne_bytes)
}

fn i32_at(b: &[u8], off: usize) -> Option<i32> {
    bytes_at(b, off).map(i32::from_ne_bytes)
}

fn u64_at(b: &[u8], off: usize) -> Option<u64> {
    bytes_at(b, off).map(u64::from_ne_bytes)
}

/// An address in network byte order, as the kernel stores it.
fn ipv4_at(b: &[u8], off: usize) -> Ipv4Addr {
    bytes_at::<4>(b, off).map_or(Ipv4Addr::UNSPECIFIED, Ipv4Addr::from)
}

fn ipv6_at(b: &[u8], off: usize) -> Ipv6Addr {
    bytes_at::<16>(b, off).map_or(Ipv6Addr::UNSPECIFIED, Ipv6Addr::from)
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::mem::offset_of;
    use std::net::{TcpListener, TcpStream};
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::MetadataExt;
    use std::process::Command;
    use std::time::Instant;

    use tcptop_common::{TCP_ESTABLISHED, TCP_LISTEN};

    use super::*;

    /// `struct tcp_info` of include/uapi/linux/tcp.h (Linux 6.7), field
    /// for field, for its layout only (the two bit-field bytes as u8).
    #[repr(C)]
    struct TcpInfoC {
        tcpi_state: u8,
        tcpi_ca_state: u8,
        tcpi_retransmits: u8,
        tcpi_probes: u8,
        tcpi_backoff: u8,
        tcpi_options: u8,
        tcpi_wscale: u8,
        tcpi_app_limited_client_fail: u8,
        tcpi_rto: u32,
        tcpi_ato: u32,
        tcpi_snd_mss: u32,
        tcpi_rcv_mss: u32,
        tcpi_unacked: u32,
        tcpi_sacked: u32,
        tcpi_lost: u32,
        tcpi_retrans: u32,
        tcpi_fackets: u32,
        tcpi_last_data_sent: u32,
        tcpi_last_ack_sent: u32,
        tcpi_last_data_recv: u32,
        tcpi_last_ack_recv: u32,
        tcpi_pmtu: u32,
        tcpi_rcv_ssthresh: u32,
        tcpi_rtt: u32,
        tcpi_rttvar: u32,
        tcpi_snd_ssthresh: u32,
        tcpi_snd_cwnd: u32,
        tcpi_advmss: u32,
        tcpi_reordering: u32,
        tcpi_rcv_rtt: u32,
        tcpi_rcv_space: u32,
        tcpi_total_retrans: u32,
        tcpi_pacing_rate: u64,
        tcpi_max_pacing_rate: u64,
        tcpi_bytes_acked: u64,
        tcpi_bytes_received: u64,
        tcpi_segs_out: u32,
        tcpi_segs_in: u32,
        tcpi_notsent_bytes: u32,
        tcpi_min_rtt: u32,
        tcpi_data_segs_in: u32,
        tcpi_data_segs_out: u32,
        tcpi_delivery_rate: u64,
        tcpi_busy_time: u64,
        tcpi_rwnd_limited: u64,
        tcpi_sndbuf_limited: u64,
        tcpi_delivered: u32,
        tcpi_delivered_ce: u32,
        tcpi_bytes_sent: u64,
        tcpi_bytes_retrans: u64,
        tcpi_dsack_dups: u32,
        tcpi_reord_seen: u32,
        tcpi_rcv_ooopack: u32,
        tcpi_snd_wnd: u32,
        tcpi_rcv_wnd: u32,
        tcpi_rehash: u32,
        tcpi_total_rto: u16,
        tcpi_total_rto_recoveries: u16,
        tcpi_total_rto_time: u32,
    }

    #[test]
    fn tcp_info_offsets_are_the_headers() {
        use tcp_info::*;
        assert_eq!(LAST_DATA_SENT, offset_of!(TcpInfoC, tcpi_last_data_sent));
        assert_eq!(LAST_DATA_RECV, offset_of!(TcpInfoC, tcpi_last_data_recv));
        assert_eq!(LAST_ACK_RECV, offset_of!(TcpInfoC, tcpi_last_ack_recv));
        assert_eq!(RTT, offset_of!(TcpInfoC, tcpi_rtt));
        assert_eq!(RTTVAR, offset_of!(TcpInfoC, tcpi_rttvar));
        assert_eq!(SND_CWND, offset_of!(TcpInfoC, tcpi_snd_cwnd));
        assert_eq!(TOTAL_RETRANS, offset_of!(TcpInfoC, tcpi_total_retrans));
        assert_eq!(BYTES_ACKED, offset_of!(TcpInfoC, tcpi_bytes_acked));
        assert_eq!(BYTES_RECEIVED, offset_of!(TcpInfoC, tcpi_bytes_received));
        assert_eq!(SEGS_OUT, offset_of!(TcpInfoC, tcpi_segs_out));
        assert_eq!(SEGS_IN, offset_of!(TcpInfoC, tcpi_segs_in));
        assert_eq!(NOTSENT_BYTES, offset_of!(TcpInfoC, tcpi_notsent_bytes));
        assert_eq!(MIN_RTT, offset_of!(TcpInfoC, tcpi_min_rtt));
        assert_eq!(DATA_SEGS_IN, offset_of!(TcpInfoC, tcpi_data_segs_in));
        assert_eq!(DATA_SEGS_OUT, offset_of!(TcpInfoC, tcpi_data_segs_out));
        assert_eq!(DELIVERY_RATE, offset_of!(TcpInfoC, tcpi_delivery_rate));
        assert_eq!(DELIVERED, offset_of!(TcpInfoC, tcpi_delivered));
        assert_eq!(BYTES_SENT, offset_of!(TcpInfoC, tcpi_bytes_sent));
        assert_eq!(BYTES_RETRANS, offset_of!(TcpInfoC, tcpi_bytes_retrans));
        assert_eq!(LEN_6_7, size_of::<TcpInfoC>());
    }

    // ---- replies built by hand ----

    fn nlmsg(ty: u16, seq: u32, payload: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend(((NLMSG_HDRLEN + payload.len()) as u32).to_ne_bytes());
        v.extend(ty.to_ne_bytes());
        v.extend(2u16.to_ne_bytes()); // NLM_F_MULTI
        v.extend(seq.to_ne_bytes());
        v.extend(4242u32.to_ne_bytes());
        v.extend(payload);
        v.resize(align4(v.len()), 0);
        v
    }

    fn attr(ty: u16, data: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend(((NLA_HDRLEN + data.len()) as u16).to_ne_bytes());
        v.extend(ty.to_ne_bytes());
        v.extend(data);
        v.resize(align4(v.len()), 0);
        v
    }

    /// A `struct inet_diag_msg` for `c` (family, state, endpoints, cookie,
    /// queues, uid, inode), then `attrs`.
    fn diag_msg(c: &DiagConn, attrs: &[Vec<u8>]) -> Vec<u8> {
        let mut m = vec![0u8; INET_DIAG_MSG_LEN];
        m[0] = c.family as u8;
        m[1] = c.state;
        m[2] = 1; // idiag_timer
        m[4..6].copy_from_slice(&c.local.port().to_be_bytes());
        m[6..8].copy_from_slice(&c.remote.port().to_be_bytes());
        let ip = |a: &SocketAddr| match a {
            SocketAddr::V4(a) => {
                let mut b = [0u8; 16];
                b[..4].copy_from_slice(&a.ip().octets());
                b
            }
            SocketAddr::V6(a) => a.ip().octets(),
        };
        m[8..24].copy_from_slice(&ip(&c.local));
        m[24..40].copy_from_slice(&ip(&c.remote));
        m[40..44].copy_from_slice(&7u32.to_ne_bytes()); // idiag_if
        m[44..48].copy_from_slice(&(c.cookie as u32).to_ne_bytes());
        m[48..52].copy_from_slice(&((c.cookie >> 32) as u32).to_ne_bytes());
        m[52..56].copy_from_slice(&200u32.to_ne_bytes()); // idiag_expires
        m[56..60].copy_from_slice(&c.rqueue.to_ne_bytes());
        m[60..64].copy_from_slice(&c.wqueue.to_ne_bytes());
        m[64..68].copy_from_slice(&c.uid.to_ne_bytes());
        m[68..72].copy_from_slice(&c.inode.to_ne_bytes());
        for a in attrs {
            m.extend(a);
        }
        m
    }

    /// A full `struct tcp_info` (every byte we do not set 0xa5, so that a
    /// wrong offset shows), and what parsing its first `len` bytes gives.
    fn tcp_info_of(len: usize) -> (Vec<u8>, TcpInfo) {
        use tcp_info::*;
        let mut b = vec![0xa5u8; 256];
        let put32 = |b: &mut Vec<u8>, off: usize, v: u32| {
            b[off..off + 4].copy_from_slice(&v.to_ne_bytes());
            v
        };
        let put64 = |b: &mut Vec<u8>, off: usize, v: u64| {
            b[off..off + 8].copy_from_slice(&v.to_ne_bytes());
            v
        };
        let full = TcpInfo {
            len: 256,
            rtt_us: put32(&mut b, RTT, 1234),
            rttvar_us: put32(&mut b, RTTVAR, 567),
            min_rtt_us: put32(&mut b, MIN_RTT, 89),
            snd_cwnd: put32(&mut b, SND_CWND, 10),
            total_retrans: put32(&mut b, TOTAL_RETRANS, 3),
            segs_out: put32(&mut b, SEGS_OUT, 40),
            segs_in: put32(&mut b, SEGS_IN, 41),
            data_segs_out: put32(&mut b, DATA_SEGS_OUT, 30),
            data_segs_in: put32(&mut b, DATA_SEGS_IN, 31),
            bytes_acked: put64(&mut b, BYTES_ACKED, 0x1_0000_0001),
            bytes_received: put64(&mut b, BYTES_RECEIVED, 0x2_0000_0002),
            bytes_sent: put64(&mut b, BYTES_SENT, 0x3_0000_0003),
            bytes_retrans: put64(&mut b, BYTES_RETRANS, 1448),
            delivered: put32(&mut b, DELIVERED, 29),
            notsent_bytes: put32(&mut b, NOTSENT_BYTES, 100),
            delivery_rate: put64(&mut b, DELIVERY_RATE, 1 << 33),
            last_data_sent_ms: put32(&mut b, LAST_DATA_SENT, 11),
            last_data_recv_ms: put32(&mut b, LAST_DATA_RECV, 12),
            last_ack_recv_ms: put32(&mut b, LAST_ACK_RECV, 13),
        };
        b.truncate(len);
        // What a struct of `len` bytes holds: a field it does not reach in
        // full is 0.
        let has = |off: usize, size: usize| off + size <= len;
        let z32 = |off, v: u32| if has(off, 4) { v } else { 0 };
        let z64 = |off, v: u64| if has(off, 8) { v } else { 0 };
        let want = TcpInfo {
            len: len as u32,
            rtt_us: z32(RTT, full.rtt_us),
            rttvar_us: z32(RTTVAR, full.rttvar_us),
            min_rtt_us: z32(MIN_RTT, full.min_rtt_us),
            snd_cwnd: z32(SND_CWND, full.snd_cwnd),
            total_retrans: z32(TOTAL_RETRANS, full.total_retrans),
            segs_out: z32(SEGS_OUT, full.segs_out),
            segs_in: z32(SEGS_IN, full.segs_in),
            data_segs_out: z32(DATA_SEGS_OUT, full.data_segs_out),
            data_segs_in: z32(DATA_SEGS_IN, full.data_segs_in),
            bytes_acked: z64(BYTES_ACKED, full.bytes_acked),
            bytes_received: z64(BYTES_RECEIVED, full.bytes_received),
            bytes_sent: z64(BYTES_SENT, full.bytes_sent),
            bytes_retrans: z64(BYTES_RETRANS, full.bytes_retrans),
            delivered: z32(DELIVERED, full.delivered),
            notsent_bytes: z32(NOTSENT_BYTES, full.notsent_bytes),
            delivery_rate: z64(DELIVERY_RATE, full.delivery_rate),
            last_data_sent_ms: z32(LAST_DATA_SENT, full.last_data_sent_ms),
            last_data_recv_ms: z32(LAST_DATA_RECV, full.last_data_recv_ms),
            last_ack_recv_ms: z32(LAST_ACK_RECV, full.last_ack_recv_ms),
        };
        (b, want)
    }

    fn v4_conn(info: Option<TcpInfo>) -> DiagConn {
        DiagConn {
            family: 2,
            state: TCP_ESTABLISHED,
            local: "10.1.2.3:40000".parse().unwrap(),
            remote: "192.168.200.1:443".parse().unwrap(),
            cookie: 0x1234_5678_9abc_def0,
            inode: 987_654,
            uid: 1000,
            rqueue: 600,
            wqueue: 0x8000_0001,
            info,
        }
    }

    fn v6_conn(info: Option<TcpInfo>) -> DiagConn {
        DiagConn {
            family: 10,
            state: 8, // CLOSE_WAIT
            local: "[2001:db8::1]:8080".parse().unwrap(),
            remote: "[::ffff:10.0.0.9]:51000".parse().unwrap(),
            cookie: 42,
            inode: 1,
            uid: 0,
            rqueue: 1,
            wqueue: 0,
            info,
        }
    }

    const SEQ: u32 = 77;
    const INET_DIAG_SHUTDOWN: u16 = 8;

    /// An IPv4 socket with a full tcp_info after another attribute, an
    /// IPv6 one with the 104-byte tcp_info of Linux 3.14, then DONE.
    fn dump_reply() -> (Vec<Vec<u8>>, Vec<DiagConn>) {
        let (full, full_info) = tcp_info_of(LEN_FULL);
        let (short, short_info) = tcp_info_of(104);
        let v4 = v4_conn(Some(full_info));
        let v6 = v6_conn(Some(short_info));
        let msgs = vec![
            nlmsg(
                SOCK_DIAG_BY_FAMILY,
                SEQ,
                &diag_msg(
                    &v4,
                    &[attr(INET_DIAG_SHUTDOWN, &[0]), attr(INET_DIAG_INFO, &full)],
                ),
            ),
            nlmsg(
                SOCK_DIAG_BY_FAMILY,
                SEQ,
                &diag_msg(&v6, &[attr(INET_DIAG_INFO, &short)]),
            ),
            nlmsg(NLMSG_DONE, SEQ, &0i32.to_ne_bytes()),
        ];
        (msgs, vec![v4, v6])
    }

    const LEN_FULL: usize = 256;

    #[test]
    fn request_is_an_inet_diag_req_v2_dump() {
        let r = request(AF_INET6, 1 << TCP_ESTABLISHED | 1 << TCP_LISTEN, 9);
        assert_eq!(r.len(), 72);
        assert_eq!(u32_at(&r, 0), Some(72));
        assert_eq!(u16_at(&r, 4), Some(20));
        assert_eq!(u16_at(&r, 6), Some(0x301));
        assert_eq!(u32_at(&r, 8), Some(9));
        assert_eq!(u32_at(&r, 12), Some(0));
        assert_eq!(&r[16..20], &[10, 6, 2, 0]);
        assert_eq!(u32_at(&r, 20), Some(0x402));
        assert!(r[24..64].iter().all(|&b| b == 0));
        assert!(r[64..72].iter().all(|&b| b == 0xff));
    }

    #[test]
    fn legacy_request_is_an_inet_diag_req_dump() {
        let r = legacy_request(1 << TCP_ESTABLISHED, 7);
        assert_eq!(r.len(), 76);
        assert_eq!(u32_at(&r, 0), Some(76));
        assert_eq!(u16_at(&r, 4), Some(18));
        assert_eq!(u16_at(&r, 6), Some(0x301));
        assert_eq!(u32_at(&r, 8), Some(7));
        assert_eq!(&r[16..20], &[2, 0, 0, 2]);
        assert!(r[20..60].iter().all(|&b| b == 0));
        assert!(r[60..68].iter().all(|&b| b == 0xff));
        assert_eq!(u32_at(&r, 68), Some(1 << TCP_ESTABLISHED));
        assert_eq!(u32_at(&r, 72), Some(0));
    }

    #[test]
    fn query_request_names_one_socket() {
        let (l, r): (SocketAddr, SocketAddr) = (
            "10.1.2.3:40000".parse().unwrap(),
            "192.168.0.9:443".parse().unwrap(),
        );
        let b = query_request(l, r, 7);
        assert_eq!(u32_at(&b, 0), Some(72));
        assert_eq!(u16_at(&b, 4), Some(SOCK_DIAG_BY_FAMILY));
        // A request, not a dump.
        assert_eq!(u16_at(&b, 6), Some(NLM_F_REQUEST));
        assert_eq!(u32_at(&b, 8), Some(7));
        assert_eq!((b[16], b[17], b[18]), (AF_INET, IPPROTO_TCP, 1 << 1));
        // inet_diag_sockid: ports big-endian, then source (local) and
        // destination (remote) addresses, the interface, no cookie.
        assert_eq!(&b[24..28], &[0x9c, 0x40, 0x01, 0xbb]);
        assert_eq!(&b[28..32], &[10, 1, 2, 3]);
        assert!(b[32..44].iter().all(|&x| x == 0));
        assert_eq!(&b[44..48], &[192, 168, 0, 9]);
        assert_eq!(u32_at(&b, 60), Some(0));
        assert!(b[64..72].iter().all(|&x| x == 0xff));

        // IPv6 (and one IPv4 end of a mixed pair, mapped).
        let (l, r): (SocketAddr, SocketAddr) = (
            "[2001:db8::1]:5".parse().unwrap(),
            "1.2.3.4:6".parse().unwrap(),
        );
        let b = query_request(l, r, 8);
        assert_eq!(b[16], AF_INET6);
        assert_eq!(
            &b[28..44],
            &"2001:db8::1".parse::<Ipv6Addr>().unwrap().octets()
        );
        assert_eq!(
            &b[44..60],
            &Ipv4Addr::new(1, 2, 3, 4).to_ipv6_mapped().octets()
        );
    }

    #[test]
    fn parses_a_multi_message_dump() {
        let (msgs, want) = dump_reply();
        let mut out = Vec::new();
        assert_eq!(
            parse_batch(&msgs.concat(), SEQ, &mut out).unwrap(),
            Batch::Done
        );
        assert_eq!(out, want);
        let info = out[1].info.unwrap();
        // The short struct: up to tcpi_total_retrans, nothing after.
        assert_eq!((info.len, info.rtt_us, info.total_retrans), (104, 1234, 3));
        assert_eq!(
            (info.bytes_acked, info.segs_out, info.bytes_sent),
            (0, 0, 0)
        );

        // The same over three datagrams.
        let mut out = Vec::new();
        assert_eq!(parse_batch(&msgs[0], SEQ, &mut out).unwrap(), Batch::More);
        assert_eq!(parse_batch(&msgs[1], SEQ, &mut out).unwrap(), Batch::More);
        assert_eq!(parse_batch(&msgs[2], SEQ, &mut out).unwrap(), Batch::Done);
        assert_eq!(out, want);
    }

    #[test]
    fn tcp_info_of_every_length() {
        for len in 0..=LEN_FULL {
            let (b, want) = tcp_info_of(len);
            assert_eq!(parse_tcp_info(&b), want, "{len} bytes");
        }
        // A field cut in the middle is absent: bytes_received is 128..136.
        let (b, _) = tcp_info_of(132);
        let info = parse_tcp_info(&b);
        assert_eq!((info.bytes_acked, info.bytes_received), (0x1_0000_0001, 0));
    }

    #[test]
    fn a_socket_without_tcp_info() {
        let c = v4_conn(None);
        let msg = nlmsg(
            SOCK_DIAG_BY_FAMILY,
            SEQ,
            &diag_msg(&c, &[attr(INET_DIAG_SHUTDOWN, &[3])]),
        );
        let mut out = Vec::new();
        assert_eq!(parse_batch(&msg, SEQ, &mut out).unwrap(), Batch::More);
        assert_eq!(out, [c]);
    }

    #[test]
    fn malformed_attributes_end_the_walk() {
        let (info, _) = tcp_info_of(LEN_FULL);
        let c = v4_conn(None);
        let good = attr(INET_DIAG_INFO, &info);
        // rta_len below its own header, then a valid INFO: not reached.
        let mut tiny = attr(INET_DIAG_SHUTDOWN, &[0]);
        tiny[0..2].copy_from_slice(&2u16.to_ne_bytes());
        // rta_len past the end of the message.
        let mut long = good.clone();
        long[0..2].copy_from_slice(&(LEN_FULL as u16 + 100).to_ne_bytes());
        for attrs in [vec![tiny, good.clone()], vec![long], vec![vec![4, 0, 2]]] {
            let msg = nlmsg(SOCK_DIAG_BY_FAMILY, SEQ, &diag_msg(&c, &attrs));
            let mut out = Vec::new();
            assert_eq!(parse_batch(&msg, SEQ, &mut out).unwrap(), Batch::More);
            assert_eq!(out, [c]);
        }
        // A flag bit in the type (NLA_F_NET_BYTEORDER) does not hide INFO.
        let mut flagged = good;
        flagged[2..4].copy_from_slice(&(INET_DIAG_INFO | 0x4000).to_ne_bytes());
        let msg = nlmsg(SOCK_DIAG_BY_FAMILY, SEQ, &diag_msg(&c, &[flagged]));
        let mut out = Vec::new();
        parse_batch(&msg, SEQ, &mut out).unwrap();
        assert!(out[0].info.is_some());
    }

    #[test]
    fn nlmsg_error_is_the_errno() {
        for errno in [libc::EPERM, libc::EINVAL, libc::EBUSY] {
            let mut payload = (-errno).to_ne_bytes().to_vec();
            payload.extend(&request(AF_INET, 2, SEQ)[..NLMSG_HDRLEN]);
            let msg = nlmsg(NLMSG_ERROR, SEQ, &payload);
            let err = parse_batch(&msg, SEQ, &mut Vec::new()).unwrap_err();
            assert_eq!(err.raw_os_error(), Some(errno));
        }
        // An acknowledgement ends the exchange.
        let ack = nlmsg(NLMSG_ERROR, SEQ, &0i32.to_ne_bytes());
        assert_eq!(
            parse_batch(&ack, SEQ, &mut Vec::new()).unwrap(),
            Batch::Done
        );
        // An error message cut short, or a positive "errno".
        for payload in [vec![0xff, 0xff], 5i32.to_ne_bytes().to_vec()] {
            let msg = nlmsg(NLMSG_ERROR, SEQ, &payload);
            let err = parse_batch(&msg, SEQ, &mut Vec::new()).unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        }
        // DONE carrying the error that ended the dump.
        let done = nlmsg(NLMSG_DONE, SEQ, &(-libc::ENOBUFS).to_ne_bytes());
        let err = parse_batch(&done, SEQ, &mut Vec::new()).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::ENOBUFS));
        // DONE without its status (never seen) still ends the dump.
        let done = nlmsg(NLMSG_DONE, SEQ, &[]);
        assert_eq!(
            parse_batch(&done, SEQ, &mut Vec::new()).unwrap(),
            Batch::Done
        );
    }

    #[test]
    fn other_requests_and_families_are_skipped() {
        let (msgs, want) = dump_reply();
        let mut stale = msgs.clone();
        for m in &mut stale {
            m[8..12].copy_from_slice(&(SEQ - 1).to_ne_bytes());
        }
        let mut unix = v4_conn(None);
        unix.family = 1;
        let unix = nlmsg(SOCK_DIAG_BY_FAMILY, SEQ, &diag_msg(&unix, &[]));
        let noop = nlmsg(1, SEQ, &[]);
        let mut out = Vec::new();
        let all = [stale.concat(), unix, noop, msgs.concat()].concat();
        assert_eq!(parse_batch(&all, SEQ, &mut out).unwrap(), Batch::Done);
        assert_eq!(out, want);
        // After DONE, nothing more is read.
        let mut out = Vec::new();
        let after = [msgs[2].clone(), msgs[0].clone()].concat();
        assert_eq!(parse_batch(&after, SEQ, &mut out).unwrap(), Batch::Done);
        assert!(out.is_empty());
    }

    #[test]
    fn truncated_input_is_an_error_never_a_panic() {
        let (msgs, want) = dump_reply();
        let all = msgs.concat();
        let ends: Vec<usize> = msgs
            .iter()
            .scan(0, |end, m| {
                *end += m.len();
                Some(*end)
            })
            .collect();
        for k in 0..all.len() {
            let mut out = Vec::new();
            let r = parse_batch(&all[..k], SEQ, &mut out);
            match ends.iter().position(|&e| e == k) {
                // Whole messages: those before the cut.
                Some(i) => {
                    assert_eq!(r.unwrap(), Batch::More, "cut at {k}");
                    assert_eq!(out, want[..=i.min(1)], "cut at {k}");
                }
                None if k == 0 => assert_eq!(r.unwrap(), Batch::More),
                None => {
                    let e = r.expect_err(&format!("cut at {k}"));
                    assert_eq!(e.kind(), io::ErrorKind::InvalidData);
                }
            }
        }
        // A message whose length is below its header, or a diag message
        // shorter than struct inet_diag_msg.
        let mut bad = msgs[0].clone();
        bad[0..4].copy_from_slice(&8u32.to_ne_bytes());
        assert!(parse_batch(&bad, SEQ, &mut Vec::new()).is_err());
        let short = nlmsg(SOCK_DIAG_BY_FAMILY, SEQ, &[2; 50]);
        assert!(parse_batch(&short, SEQ, &mut Vec::new()).is_err());
        assert!(parse_diag_msg(&[]).is_err());
    }

    // ---- the real kernel ----

    fn is_root(test: &str) -> bool {
        let root = std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0);
        if !root {
            eprintln!("skipping {test}: needs root (creates a network namespace, setns)");
        }
        root
    }

    /// A network namespace with `lo` up, deleted on drop.
    struct TestNs {
        name: String,
    }

    impl TestNs {
        fn new(tag: &str) -> TestNs {
            let name = format!("tcptop-diag-{tag}-{}", std::process::id());
            let ip = |args: &[&str]| Command::new("ip").args(args).status().unwrap().success();
            let _ = Command::new("ip")
                .args(["netns", "del", &name])
                .stderr(std::process::Stdio::null())
                .status();
            assert!(ip(&["netns", "add", &name]));
            assert!(ip(&["-n", &name, "link", "set", "lo", "up"]));
            TestNs { name }
        }

        fn file(&self) -> File {
            File::open(format!("/run/netns/{}", self.name)).unwrap()
        }

        /// Runs `f` on a thread inside the namespace (sockets it creates
        /// stay there).
        fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
            let ns = self.file();
            std::thread::scope(|s| {
                s.spawn(|| {
                    move_into_link_name_space(ns.as_fd(), Some(LinkNameSpaceType::Network))
                        .unwrap();
                    f()
                })
                .join()
                .unwrap()
            })
        }
    }

    impl Drop for TestNs {
        fn drop(&mut self) {
            let _ = Command::new("ip")
                .args(["netns", "del", &self.name])
                .status();
        }
    }

    struct Pair {
        listener: TcpListener,
        client: TcpStream,
        server: TcpStream,
    }

    fn pair(addr: &str) -> Pair {
        let listener = TcpListener::bind(addr).unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        Pair {
            listener,
            client,
            server,
        }
    }

    fn cookie(s: &impl AsFd) -> u64 {
        rustix::net::sockopt::socket_cookie(s).unwrap()
    }

    fn inode(s: &impl AsRawFd) -> u32 {
        let link = std::fs::read_link(format!("/proc/self/fd/{}", s.as_raw_fd())).unwrap();
        let link = link.to_str().unwrap();
        link.trim_start_matches("socket:[")
            .trim_end_matches(']')
            .parse()
            .unwrap()
    }

    fn find<'a>(conns: &'a [DiagConn], s: &impl AsFd) -> Option<&'a DiagConn> {
        let c = cookie(s);
        conns.iter().find(|d| d.cookie == c)
    }

    const ESTABLISHED: u32 = 1 << TCP_ESTABLISHED;
    const ALL_STATES: u32 = 0xffff;

    #[test]
    fn dumps_a_namespace_from_outside() {
        if !is_root("dumps_a_namespace_from_outside") {
            return;
        }
        let ns = TestNs::new("dump");
        let pairs = ns.run(|| [pair("127.0.0.1:0"), pair("[::1]:0")]);
        for p in &pairs {
            let mut p_client = &p.client;
            let mut p_server = &p.server;
            p_client.write_all(&[7; 1000]).unwrap();
            p_server.read_exact(&mut [0; 400]).unwrap();
        }
        let mut sock = DiagSocket::open_in(&ns.file()).unwrap();
        let mut conns = Vec::new();
        // Until the data is acknowledged (it is in the server's queue then).
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            conns.clear();
            sock.dump_tcp(ESTABLISHED, &mut conns).unwrap();
            // Both families in one walk: every kernel since 3.3 answers
            // the legacy request.
            assert!(sock.legacy, "the legacy request was refused");
            let acked = pairs.iter().all(|p| {
                find(&conns, &p.client)
                    .and_then(|c| c.info)
                    .map(|i| i.bytes_acked)
                    == Some(1001)
            });
            if acked || Instant::now() > deadline {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(conns.len(), 4, "{conns:#?}");
        for (p, family) in pairs.iter().zip([2, 10]) {
            let client = find(&conns, &p.client).unwrap();
            let server = find(&conns, &p.server).unwrap();
            eprintln!("client {client:?}\nserver {server:?}");
            for (d, s) in [(client, &p.client), (server, &p.server)] {
                assert_eq!(d.family, family);
                assert_eq!(d.state, TCP_ESTABLISHED);
                assert_eq!(d.local, s.local_addr().unwrap());
                assert_eq!(d.remote, s.peer_addr().unwrap());
                assert_eq!(d.inode, inode(s));
                assert_eq!(d.uid, 0);
                assert_eq!(d.wqueue, 0);
                let i = d.info.unwrap();
                assert!(i.len as usize >= tcp_info::LEN_6_7, "{i:?}");
                assert!(i.rtt_us > 0 && i.segs_out > 0 && i.segs_in > 0, "{i:?}");
                assert_eq!(
                    (i.total_retrans, i.bytes_retrans, i.notsent_bytes),
                    (0, 0, 0)
                );
            }
            assert_eq!(client.rqueue, 0);
            assert_eq!(server.rqueue, 600);
            let (c, s) = (client.info.unwrap(), server.info.unwrap());
            // SYN + data on the connecting side; the accepted one sent none.
            assert_eq!(
                (c.bytes_acked, c.bytes_sent, c.bytes_received),
                (1001, 1000, 0)
            );
            assert_eq!(
                (s.bytes_acked, s.bytes_sent, s.bytes_received),
                (0, 0, 1000)
            );
            assert_eq!((c.data_segs_out, c.data_segs_in), (1, 0));
            assert_eq!((s.data_segs_out, s.data_segs_in), (0, 1));
            // SYN, ACK, data: sent by one, all received by the other (its
            // count starts with the SYN).
            assert_eq!((c.segs_out, s.segs_in), (3, 3));
            // Delivered: SYN and data; the SYN-ACK.
            assert_eq!((c.delivered, s.delivered), (2, 1));
        }

        // The listeners come only with LISTEN in the mask.
        for p in &pairs {
            assert!(find(&conns, &p.listener).is_none());
        }
        conns.clear();
        sock.dump_tcp(ESTABLISHED | 1 << TCP_LISTEN, &mut conns)
            .unwrap();
        assert_eq!(conns.len(), 6);
        for p in &pairs {
            let l = find(&conns, &p.listener).unwrap();
            eprintln!("listener {l:?}");
            assert_eq!(l.state, TCP_LISTEN);
            assert_eq!(l.local, p.listener.local_addr().unwrap());
            assert_eq!(l.remote.port(), 0);
            assert!(l.remote.ip().is_unspecified());
            assert_eq!(l.inode, inode(&p.listener));
            // Accept queue empty; wqueue is the backlog.
            assert_eq!(l.rqueue, 0);
            assert!(l.wqueue > 0);
        }

        // Our own namespace does not see them.
        let mut host = Vec::new();
        DiagSocket::open()
            .unwrap()
            .dump_tcp(ALL_STATES, &mut host)
            .unwrap();
        for p in &pairs {
            for s in [cookie(&p.client), cookie(&p.server), cookie(&p.listener)] {
                assert!(host.iter().all(|d| d.cookie != s));
            }
        }

        // Without privileges (uid 65534 on this thread alone: its
        // capabilities go with uid 0), the socket still dumps; opening
        // one in another namespace does not.
        std::thread::scope(|s| {
            s.spawn(|| {
                rustix::thread::set_thread_uid(rustix::thread::Uid::from_raw(65534)).unwrap();
                let mut conns = Vec::new();
                sock.dump_tcp(ESTABLISHED, &mut conns).unwrap();
                assert_eq!(conns.len(), 4);
                let err = DiagSocket::open_in(&ns.file()).unwrap_err();
                assert_eq!(err.raw_os_error(), Some(libc::EPERM));
                // Its own namespace, unprivileged from the start.
                DiagSocket::open()
                    .unwrap()
                    .dump_tcp(ALL_STATES, &mut conns)
                    .unwrap();
            })
            .join()
            .unwrap();
        });

        // Not a namespace file.
        let err = DiagSocket::open_in(&File::open("/proc/self/status").unwrap()).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EINVAL));
    }

    #[test]
    fn a_dump_given_up_halfway() {
        if !is_root("a_dump_given_up_halfway") {
            return;
        }
        // 100 connections: 40 KB of replies, more than one batch.
        let ns = TestNs::new("halfway");
        let _pairs: Vec<Pair> = ns.run(|| (0..50).map(|_| pair("127.0.0.1:0")).collect());
        let mut sock = DiagSocket::open_in(&ns.file()).unwrap();
        let start = |sock: &mut DiagSocket| {
            sock.seq += 1;
            let req = request(AF_INET, ESTABLISHED, sock.seq);
            let kernel = SocketAddrNetlink::new(0, 0);
            rustix::net::sendto(&sock.fd, &req, SendFlags::empty(), &kernel).unwrap();
            let n = sock.recv().unwrap();
            let mut part = Vec::new();
            assert_eq!(
                parse_batch(&sock.buf[..n], sock.seq, &mut part).unwrap(),
                Batch::More
            );
            assert!(!part.is_empty() && part.len() < 100);
            sock.unfinished = true;
        };
        // The kernel refuses a second dump while one runs...
        start(&mut sock);
        sock.unfinished = false;
        let err = sock.dump_tcp(ESTABLISHED, &mut Vec::new()).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EBUSY));
        // ...so the next dump reads away what is left first.
        let mut conns = Vec::new();
        sock.dump_tcp(ESTABLISHED, &mut conns).unwrap();
        assert_eq!(conns.len(), 100);
        start(&mut sock);
        conns.clear();
        sock.dump_tcp(ESTABLISHED, &mut conns).unwrap();
        assert_eq!(conns.len(), 100);
    }

    /// This thread's CPU time (user + system), ns.
    fn thread_cpu_ns() -> u64 {
        let s = std::fs::read_to_string("/proc/thread-self/schedstat").unwrap();
        s.split_whitespace().next().unwrap().parse().unwrap()
    }

    fn open_files_limit() -> u64 {
        let limits = std::fs::read_to_string("/proc/self/limits").unwrap();
        let line = limits
            .lines()
            .find(|l| l.starts_with("Max open files"))
            .unwrap();
        line.split_whitespace()
            .nth(3)
            .unwrap()
            .parse()
            .unwrap_or(u64::MAX)
    }

    /// One family's dump, counting its batches: (recv calls, largest
    /// batch, bytes); each batch's bytes are appended to `keep`.
    fn batches(
        sock: &mut DiagSocket,
        family: u8,
        out: &mut Vec<DiagConn>,
        keep: &mut Vec<Vec<u8>>,
    ) -> (usize, usize, usize) {
        sock.seq += 1;
        let req = request(family, ESTABLISHED, sock.seq);
        rustix::net::sendto(
            &sock.fd,
            &req,
            SendFlags::empty(),
            &SocketAddrNetlink::new(0, 0),
        )
        .unwrap();
        let (mut calls, mut largest, mut bytes) = (0, 0, 0);
        loop {
            let n = sock.recv().unwrap();
            (calls, largest, bytes) = (calls + 1, largest.max(n), bytes + n);
            keep.push(sock.buf[..n].to_vec());
            if parse_batch(&sock.buf[..n], sock.seq, out).unwrap() == Batch::Done {
                return (calls, largest, bytes);
            }
        }
    }

    /// The cost of a dump: an empty namespace (the kernel still walks its
    /// whole established hash table, shared by all namespaces, once per
    /// family) and one with 10,000 established loopback connections, by
    /// receive buffer size. Run by hand:
    /// `cargo test -p tcptop --lib dump_10000 -- --ignored --nocapture`.
    #[test]
    #[ignore = "benchmark (5,000 connection pairs): run by hand with --ignored --nocapture"]
    fn dump_10000_connections() {
        if !is_root("dump_10000_connections") {
            return;
        }
        if open_files_limit() < 10_100 {
            eprintln!("skipping dump_10000_connections: needs 10,100 open files (ulimit -n)");
            return;
        }
        const PAIRS: usize = 5000;
        let empty = TestNs::new("empty");
        let ns = TestNs::new("bench");
        let start = Instant::now();
        let _sockets = ns.run(|| {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            let addr = listener.local_addr().unwrap();
            let mut v = Vec::with_capacity(2 * PAIRS);
            for _ in 0..PAIRS {
                v.push(TcpStream::connect(addr).unwrap());
                v.push(listener.accept().unwrap().0);
            }
            (listener, v)
        });
        eprintln!("{PAIRS} pairs connected in {:?}", start.elapsed());
        const RUNS: u32 = 20;
        let mut out = Vec::with_capacity(2 * PAIRS);
        for (what, ns, want) in [
            ("empty namespace", &empty, 0),
            ("10,000 connections", &ns, 2 * PAIRS),
        ] {
            for (buf_len, rcvbuf) in [
                (8 << 10, None),
                (16 << 10, None),
                (32 << 10, None),
                (64 << 10, None),
                (128 << 10, None),
                (64 << 10, Some(4 << 20)),
            ] {
                let mut sock = DiagSocket::open_in(&ns.file()).unwrap();
                sock.buf = vec![0; buf_len].into_boxed_slice();
                if let Some(size) = rcvbuf {
                    rustix::net::sockopt::set_socket_recv_buffer_size_force(&sock.fd, size)
                        .unwrap();
                }
                out.clear();
                let mut kept = Vec::new();
                let (c4, l4, b4) = batches(&mut sock, AF_INET, &mut out, &mut kept);
                let (c6, l6, _) = batches(&mut sock, AF_INET6, &mut out, &mut kept);
                assert_eq!(out.len(), want);
                // User space's share: parsing the same batches again.
                let parse = Instant::now();
                for _ in 0..RUNS {
                    out.clear();
                    for b in &kept {
                        let seq = u32_at(b, 8).unwrap();
                        parse_batch(b, seq, &mut out).unwrap();
                    }
                }
                let parse_ms = parse.elapsed().as_secs_f64() * 1e3 / f64::from(RUNS);
                let (wall, cpu) = (Instant::now(), thread_cpu_ns());
                for _ in 0..RUNS {
                    out.clear();
                    sock.dump_tcp(ESTABLISHED, &mut out).unwrap();
                    assert_eq!(out.len(), want);
                }
                let ms = wall.elapsed().as_secs_f64() * 1e3 / f64::from(RUNS);
                let cpu_ms = (thread_cpu_ns() - cpu) as f64 / 1e6 / f64::from(RUNS);
                eprintln!(
                    "{what}: buffer {:>3} KiB{}: {ms:.2} ms per dump, {cpu_ms:.2} ms CPU \
                     ({parse_ms:.2} ms parsing); recv calls v4 {c4} (largest {l4} B, {b4} B in all), v6 {c6} (largest {l6} B)",
                    buf_len >> 10,
                    rcvbuf.map_or(String::new(), |r| format!(" SO_RCVBUF {} KiB", r >> 10)),
                );
            }
        }
    }
}
