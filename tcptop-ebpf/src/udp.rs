//! UDP flows: one [`UdpFlow`] per (local, peer, netns), counted at each
//! send or receive call on a UDP socket, in the caller's context, on the
//! same hooks that count TCP calls (see `probes/`):
//!
//! - bytes are the call's return value, datagrams the successful calls;
//!   like TCP, a datagram is counted when the application reads it (one the
//!   kernel drops for lack of receive-buffer room never is);
//! - the owner is the calling process;
//! - the peer is the call's own address when it has one (`sendto`,
//!   `recvfrom`: read from the call's `msghdr` by the fexit and kprobe
//!   sets, handed over by the cgroup `sendmsg`/`recvmsg` hooks with the
//!   tracepoint set), else the connected socket's peer; the local end is
//!   the socket's as bound (the wildcard address for a socket bound to it).
//!
//! Why not per packet (cgroup skb programs): those run for every packet on
//! the machine, TCP included, which cost each short TCP connection ~4 µs;
//! these hooks run only for calls on UDP sockets (the TCP ones were
//! running anyway).

use aya_ebpf::{
    bindings::BPF_NOEXIST,
    helpers::{bpf_get_current_pid_tgid, bpf_ktime_get_ns},
    macros::map,
    maps::{HashMap, LruHashMap},
};
use tcptop_common::{
    AF_INET, AF_INET6, ConnTuple, DROP_UDP_FLOWS, IPPROTO_UDP, MAX_UDP_FLOWS, UdpFlow,
};

use crate::kernel::{self, Mem, Probe, off};
use crate::sock::{self, MSG_ERRQUEUE, MSG_PEEK};

#[map(name = "UDP_FLOWS")]
static UDP_FLOWS: HashMap<ConnTuple, UdpFlow> = HashMap::with_max_entries(MAX_UDP_FLOWS, 0);

/// The peer address of one call.
///
/// Passed around as a whole value, family 0 for none, not as an
/// `Option<Peer>`: LLVM leaves a `None`'s payload unwritten and may load it
/// anyway before it branches on the tag, and Linux 5.10's verifier rejects
/// any read of a stack slot never written on the path it checks ("invalid
/// read from stack R10 off=-240 size=8" in the kprobe programs, which
/// inline this). Since 5.12 the verifier lets privileged programs read
/// them.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Peer {
    /// `AF_INET` (address in the first 4 bytes), `AF_INET6`, or 0: no peer.
    family: u16,
    /// Host order.
    port: u16,
    _pad: u32,
    addr: [u8; 16],
}

impl Peer {
    const NONE: Peer = Peer {
        family: 0,
        port: 0,
        _pad: 0,
        addr: [0; 16],
    };
}

/// A peer address the cgroup `sendmsg`/`recvmsg` hooks saw, for the
/// `sock_send_length`/`sock_recv_length` tracepoint of the same call.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Handover {
    sk: u64,
    peer: Peer,
}

/// Calls in flight on a thread: (thread id << 1 | tx) -> the peer its
/// cgroup hook saw. LRU: a send that failed after its hook (the tracepoint
/// skips failed calls before any map work) leaves its entry behind; the
/// thread's next hooked call on any socket replaces it, but a next call on
/// the same socket that has no hook (a `send()` after `connect()`) would
/// take that stale peer: rare, and the bytes still count, on that socket.
/// Threads that exit leave theirs to be evicted.
#[map(name = "UDP_PEERS")]
static UDP_PEERS: LruHashMap<u64, Handover> = LruHashMap::with_max_entries(16_384, 0);

#[inline(always)]
fn handover_key(tx: bool) -> u64 {
    ((bpf_get_current_pid_tgid() & 0xffff_ffff) << 1) | u64::from(tx)
}

/// Called by the cgroup hooks: `peer` is the address of the call now in
/// progress on this thread on socket `sk` (a plain number).
#[inline(always)]
pub fn hand_over(sk: u64, tx: bool, family: u16, port: u16, addr: [u8; 16]) {
    let h = Handover {
        sk,
        peer: Peer {
            family,
            port,
            _pad: 0,
            addr,
        },
    };
    let _ = UDP_PEERS.insert(&handover_key(tx), &h, 0);
}

/// The peer a cgroup hook handed over for this thread's call on `sk`, or
/// [`Peer::NONE`].
#[inline(always)]
fn take_handover(sk: u64, tx: bool) -> Peer {
    let key = handover_key(tx);
    // SAFETY: the value is copied out before the entry is removed.
    let Some(h) = unsafe { UDP_PEERS.get(&key) }.copied() else {
        return Peer::NONE;
    };
    let _ = UDP_PEERS.remove(&key);
    if h.sk == sk { h.peer } else { Peer::NONE }
}

/// A call on UDP socket `sk` (as the tracepoint gives it: typed for
/// `Direct`) returned `ret`, seen by a send/receive tracepoint: the peer,
/// if the call had one, comes from the cgroup hook that ran during the call.
#[inline(always)]
pub fn on_traced_call<M: Mem>(sk: u64, ret: i64, flags: i64, tx: bool) {
    // (`on_io` has already left failed calls out.)
    let peer = take_handover(M::plain(sk), tx);
    if !tx && flags & (MSG_PEEK | MSG_ERRQUEUE) != 0 {
        return;
    }
    count::<M>(sk, ret as u64, tx, peer);
}

/// A call on UDP socket `sk` (a plain number) with message `msg` returned
/// `ret`, seen at the UDP function's exit (fexit, kretprobe): the peer, if
/// the call had one, is in the message (for a receive, filled in by then).
#[inline(always)]
pub fn on_function_exit(sk: u64, ret: i64, flags: i64, msg: u64, tx: bool) {
    if !kernel::ready()
        || !kernel::udp_enabled()
        || ret < 0
        || (!tx && flags & (MSG_PEEK | MSG_ERRQUEUE) != 0)
    {
        return;
    }
    // UDP-Lite sockets share these functions; the tracepoint set leaves
    // them out too.
    if sock::transport::<Probe>(sk as *const u8) != sock::Kind::Udp {
        return;
    }
    count::<Probe>(sk, ret as u64, tx, msg_peer(msg).unwrap_or(Peer::NONE));
}

/// `udp_sendmsg` is also called by `udpv6_sendmsg` for an IPv4-mapped
/// destination: counted there, at the outer call, not twice.
#[inline(always)]
pub fn is_inet6(sk: u64) -> bool {
    sock::family::<Probe>(sk as *const u8) == AF_INET6
}

/// The address in `msg->msg_name` (a `sockaddr_in` or `sockaddr_in6`),
/// if any.
#[inline(always)]
fn msg_peer(msg: u64) -> Option<Peer> {
    if msg == 0 {
        return None;
    }
    let name = Probe::read::<u64>(msg as *const u8, off!(msghdr_name)).ok()?;
    if name == 0 {
        return None;
    }
    let name = name as *const u8;
    // struct sockaddr_in / sockaddr_in6 (uapi): family, port (network
    // order), then the address at 4 or 8.
    let family = Probe::read::<u16>(name, 0).ok()?;
    let port = u16::from_be(Probe::read::<u16>(name, 2).ok()?);
    let mut addr = [0u8; 16];
    if family == AF_INET {
        addr[..4].copy_from_slice(&Probe::read::<[u8; 4]>(name, 4).ok()?);
    } else if family == AF_INET6 {
        addr = kernel::read16::<Probe>(name, 8);
    } else {
        return None;
    }
    Some(Peer {
        family,
        port,
        _pad: 0,
        addr,
    })
}

/// `::ffff:a.b.c.d`
#[inline(always)]
fn is_v4_mapped(a: &[u8; 16]) -> bool {
    a[..10] == [0; 10] && a[10] == 0xff && a[11] == 0xff
}

/// Counts `bytes` moved by one call on `sk`, for the calling process.
/// Only `sock_common` fields are read (the local port from `skc_num`, not
/// `inet_sock`'s `inet_sport`): a typed `struct sock` pointer reaches them
/// with plain loads.
#[inline(always)]
fn count<M: Mem>(sk: u64, bytes: u64, tx: bool, peer: Peer) {
    let skc = sk as *const u8;
    let mut t = ConnTuple {
        proto: IPPROTO_UDP,
        family: sock::family::<M>(skc),
        ..ConnTuple::default()
    };
    sock::read_addrs::<M>(skc, &mut t);
    // A live socket's bound port (host order; zeroed only at close).
    t.sport = M::read::<u16>(skc, off!(skc_num)).unwrap_or(0);
    if peer.family != 0 {
        let p = peer;
        t.daddr = p.addr;
        t.dport = p.port;
        if p.family == AF_INET && t.family == AF_INET6 {
            // An IPv4 peer of a dual-stack socket (the IPv4 cgroup hook
            // runs for an IPv4-mapped destination): mapped, then made an
            // IPv4 flow below.
            t.daddr = [0; 16];
            t.daddr[12..].copy_from_slice(&p.addr[..4]);
            t.daddr[10] = 0xff;
            t.daddr[11] = 0xff;
        }
    }
    // A dual-stack socket talking IPv4: an IPv4 flow, as on the wire.
    if t.family == AF_INET6 && is_v4_mapped(&t.daddr) {
        t.family = AF_INET;
        let (d, s) = (t.daddr, t.saddr);
        t.daddr = [0; 16];
        t.daddr[..4].copy_from_slice(&d[12..]);
        t.saddr = [0; 16];
        if is_v4_mapped(&s) {
            t.saddr[..4].copy_from_slice(&s[12..]);
        }
    }
    t.netns = sock::netns::<M>(skc);

    // SAFETY: helper without preconditions.
    let now = unsafe { bpf_ktime_get_ns() };
    let f = match UDP_FLOWS.get_ptr_mut(&t) {
        Some(f) => f,
        None => {
            let fresh = UdpFlow {
                first_ns: now,
                last_ns: now,
                ..UdpFlow::default()
            };
            // Another CPU may insert the same flow first: then use theirs.
            if UDP_FLOWS.insert(&t, &fresh, BPF_NOEXIST as u64).is_ok() {
                sock::count_made_flow();
            }
            match UDP_FLOWS.get_ptr_mut(&t) {
                Some(f) => f,
                None => {
                    sock::count_drop(DROP_UDP_FLOWS);
                    return;
                }
            }
        }
    };
    let pid = (bpf_get_current_pid_tgid() >> 32) as u32;
    let epoch = sock::comm_epoch();
    // SAFETY: `f` points at a live map value; counters are 8-byte aligned.
    unsafe {
        if tx {
            sock::add(&raw mut (*f).tx_bytes, bytes);
            sock::add(&raw mut (*f).tx_packets, 1);
        } else {
            sock::add(&raw mut (*f).rx_bytes, bytes);
            sock::add(&raw mut (*f).rx_packets, 1);
        }
        (*f).last_ns = now;
        if (*f).pid != pid || (*f).comm_epoch != epoch {
            (*f).pid = pid;
            (*f).comm = kernel::leader_comm();
            (*f).cgroup_id = kernel::current_cgroup();
            (*f).comm_epoch = epoch;
        }
    }
}
