//! What both the connection records (`conn.rs`) and the UDP flows
//! (`udp.rs`) need of a socket and of the programs' shared state: its
//! kind, family, namespace and addresses, the drop counters, the owner's
//! name epoch and atomic counter adds. Neither of those two imports the
//! other for these.

use core::intrinsics::{AtomicOrdering, atomic_xadd};

use aya_ebpf::{helpers::bpf_jiffies64, macros::map, maps::PerCpuArray};
use tcptop_common::{
    AF_INET, AF_INET6, COUNT_UDP_FLOWS_MADE, ConnTuple, DROP_COUNTERS, IPPROTO_TCP, IPPROTO_UDP,
};

use crate::kernel::{self, Mem, Probe, off};

#[map(name = "DROPS")]
static DROPS: PerCpuArray<u64> = PerCpuArray::with_max_entries(DROP_COUNTERS, 0);

pub fn count_drop(which: u32) {
    if let Some(p) = DROPS.get_ptr_mut(which) {
        // SAFETY: per-CPU slot, only this CPU writes it while we run.
        unsafe { *p += 1 };
    }
}

/// Counts a UDP flow made ([`COUNT_UDP_FLOWS_MADE`]): atomically, as a
/// program interrupted on this CPU by another (softirq) must not lose it.
#[inline(always)]
pub fn count_made_flow() {
    if let Some(p) = DROPS.get_ptr_mut(COUNT_UDP_FLOWS_MADE) {
        add(p, 1);
    }
}

/// Socket family, or 0 if unreadable.
#[inline(always)]
pub fn family<M: Mem>(sk: *const u8) -> u16 {
    M::read::<u16>(sk, off!(skc_family)).unwrap_or(0)
}

/// `SOCK_STREAM`: raw sockets can have protocol TCP too, but are not connections.
const SOCK_STREAM: u16 = 1;

pub const SOCK_DGRAM: u16 = 2;

/// What an inet socket is, for the send/receive hooks.
#[derive(PartialEq, Eq)]
pub enum Kind {
    Tcp,
    Udp,
    Other,
}

/// TCP stream or UDP datagram socket of the inet families, or anything else.
#[inline(always)]
pub fn kind<M: Mem>(sk: *const u8) -> Kind {
    let fam = family::<M>(sk);
    if fam != AF_INET && fam != AF_INET6 {
        return Kind::Other;
    }
    transport::<M>(sk)
}

/// TCP stream, UDP datagram or anything else, for a socket already known
/// to be of an inet family (raw sockets can carry either protocol number).
#[inline(always)]
pub fn transport<M: Mem>(sk: *const u8) -> Kind {
    let proto = M::read::<u16>(sk, off!(sk_protocol)).unwrap_or(0);
    let ty = M::read::<u16>(sk, off!(sk_type)).unwrap_or(0);
    if proto == IPPROTO_TCP as u16 && ty == SOCK_STREAM {
        Kind::Tcp
    } else if proto == IPPROTO_UDP as u16 && ty == SOCK_DGRAM {
        Kind::Udp
    } else {
        Kind::Other
    }
}

/// `sk` as a TCP stream socket of the inet families (typed `tcp_sock` for
/// direct reads), or 0 when it is anything else.
#[inline(always)]
pub fn tcp_sock<M: Mem>(sk: u64) -> u64 {
    let tp = M::tcp_sock(sk);
    if tp != 0 && kind::<M>(tp as *const u8) == Kind::Tcp {
        tp
    } else {
        0
    }
}

/// Inode number of the network namespace of `sk` (0 if unreadable): the
/// pointer followed with `M`'s loads, or with probe reads where loading it
/// costs the verifier more than the reads cost (`Mem::FOLLOW_POINTERS`).
#[inline(always)]
pub fn netns<M: Mem>(sk: *const u8) -> u32 {
    if M::FOLLOW_POINTERS {
        netns_with::<M>(sk)
    } else {
        netns_with::<Probe>(M::plain(sk as u64) as *const u8)
    }
}

/// `sk->skc_net->ns.inum`, both read with `R`.
#[inline(always)]
fn netns_with<R: Mem>(sk: *const u8) -> u32 {
    let net = R::read::<u64>(sk, off!(skc_net)).unwrap_or(0) as *const u8;
    if net.is_null() {
        0
    } else {
        R::read::<u32>(net, off!(net_ns_inum)).unwrap_or(0)
    }
}

/// Reads both addresses and the remote port of `sk` for `t.family`: the
/// `sock_common` part of the endpoints (the local port is the caller's).
#[inline(always)]
pub fn read_addrs<M: Mem>(sk: *const u8, t: &mut ConnTuple) {
    if t.family == AF_INET6 {
        t.saddr = kernel::read16::<M>(sk, off!(skc_v6_rcv_saddr));
        t.daddr = kernel::read16::<M>(sk, off!(skc_v6_daddr));
    } else {
        // Network byte order in memory: the bytes as they are.
        let s = M::read::<u32>(sk, off!(skc_rcv_saddr)).unwrap_or(0);
        let d = M::read::<u32>(sk, off!(skc_daddr)).unwrap_or(0);
        t.saddr = [0; 16];
        t.daddr = [0; 16];
        t.saddr[..4].copy_from_slice(&s.to_ne_bytes());
        t.daddr[..4].copy_from_slice(&d.to_ne_bytes());
    }
    t.dport = u16::from_be(M::read::<u16>(sk, off!(skc_dport)).unwrap_or(0));
}

/// About a second per value: jiffies / 256, so 1.02 s at Debian's HZ=250
/// (0.26 s at HZ=1000, 2.6 s at HZ=100). Reading jiffies is one load;
/// `bpf_ktime_get_ns` reads the clock source (the TSC), which perf showed
/// at ~10% of the send/receive programs' time when it was read per call.
#[inline(always)]
pub fn comm_epoch() -> u32 {
    // SAFETY: helper without preconditions.
    (unsafe { bpf_jiffies64() } >> 8) as u32
}

/// Adds `n` to a byte counter without losing concurrent increments.
#[inline(always)]
pub fn add(counter: *mut u64, n: u64) {
    // The bpf target does not declare 64-bit atomic RMW, so `AtomicU64` has
    // no `fetch_add`; the intrinsic lowers to the BPF atomic add instruction.
    // SAFETY: `counter` points into a live map value, 8-byte aligned.
    unsafe { atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(counter, n) };
}

/// `MSG_PEEK`: data is left in the queue and will be counted when read.
pub const MSG_PEEK: i64 = 2;
/// `MSG_ERRQUEUE`: reads queued errors and timestamps, not data.
pub const MSG_ERRQUEUE: i64 = 0x2000;
