//! UDP flows: one [`UdpFlow`] per (local, remote, netns) 5-tuple, counted per
//! datagram where the IP layer hands it to or takes it from a socket (the
//! cgroup skb hooks on the cgroup v2 root, see `probes/udp.rs`).
//!
//! Why there and not at the send/receive calls: an unconnected socket
//! (`sendto`/`recvfrom`) talks to many peers, and only the datagram carries
//! the peer's address. Egress runs in the sending process's context (UDP
//! output is synchronous), so the sender is the flow's owner; ingress runs
//! in softirq, so receive-side owners come from `UDP_OWNERS`, which the
//! send/receive call hooks, egress and socket creation keep up to date.

use aya_ebpf::{
    EbpfContext,
    bindings::{__sk_buff, BPF_NOEXIST},
    helpers::bpf_ktime_get_ns,
    macros::map,
    maps::{HashMap, LruHashMap, PerCpuArray},
    programs::SkBuffContext,
};
use tcptop_common::{
    AF_INET, AF_INET6, ConnTuple, DROP_UDP_FLOWS, IPPROTO_UDP, MAX_UDP_FLOWS, UdpFlow, UdpOwner,
};

use crate::conn;
use crate::kernel::{self, Probe};

#[map(name = "UDP_FLOWS")]
static UDP_FLOWS: HashMap<ConnTuple, UdpFlow> = HashMap::with_max_entries(MAX_UDP_FLOWS, 0);

/// A cache, not a record: least recently used sockets make room (a socket
/// whose release we never saw must not fill it for good).
#[map(name = "UDP_OWNERS")]
static UDP_OWNERS: LruHashMap<u64, UdpOwner> = LruHashMap::with_max_entries(MAX_UDP_FLOWS, 0);

/// The datagram the ingress program counted last on this CPU, so that
/// `udp_fail_queue_rcv_skb`, which fires right after on the same CPU when
/// the socket's receive buffer is full, can take it back out.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct LastRx {
    sk: u64,
    tuple: ConnTuple,
    _pad: u32,
    payload: u64,
    datagrams: u64,
}

#[map(name = "UDP_LAST_RX")]
static UDP_LAST_RX: PerCpuArray<LastRx> = PerCpuArray::with_max_entries(1, 0);

const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86DD;
const UDP_HEADER: u32 = 8;
pub const SOCK_DGRAM: u16 = 2;

/// Records `pid` (named `comm`) as the last user of socket `sk`; the name
/// is re-read when the user changes and once a second (an exec renames).
/// Returns the name epoch it compared against (see `conn::comm_epoch`).
#[inline(always)]
pub fn note_owner(sk: u64, pid: u32, comm: impl FnOnce() -> [u8; 16]) -> u32 {
    let epoch = conn::comm_epoch();
    if let Some(o) = UDP_OWNERS.get_ptr_mut(&sk) {
        // SAFETY: `o` points at a live map value.
        unsafe {
            if (*o).pid != pid || (*o).comm_epoch != epoch {
                (*o).pid = pid;
                (*o).comm = comm();
                (*o).comm_epoch = epoch;
            }
        }
        return epoch;
    }
    let o = UdpOwner {
        pid,
        comm_epoch: epoch,
        comm: comm(),
    };
    let _ = UDP_OWNERS.insert(&sk, &o, 0);
    epoch
}

pub fn forget_owner(sk: u64) {
    let _ = UDP_OWNERS.remove(&sk);
}

/// The byte at `off` from the network header, by direct packet access (no
/// helper call: this runs for every packet, TCP included). None when the
/// linear part of the packet is shorter (the caller then skips the packet;
/// IP headers always sit in the linear part).
#[inline(always)]
fn l4_proto(skb: *const __sk_buff, off: usize) -> Option<u8> {
    // SAFETY: context fields; the bounds check below is the verifier's.
    let (data, end) = unsafe { ((*skb).data as usize, (*skb).data_end as usize) };
    if data + off + 1 > end {
        return None;
    }
    // SAFETY: within [data, data_end), checked above.
    Some(unsafe { *((data + off) as *const u8) })
}

/// Counts one datagram (or UDP GSO/GRO train) leaving (`egress`) or reaching
/// a socket. `skb->data` is at the network header at both hooks.
#[inline(always)]
pub fn on_skb(ctx: &SkBuffContext, egress: bool) {
    if !kernel::ready() {
        return;
    }
    let skb = ctx.as_ptr() as *const __sk_buff;
    // SAFETY: context fields the verifier lets cgroup skb programs read.
    let (proto, len, gso_segs, skp) = unsafe {
        (
            (*skb).protocol,
            (*skb).len,
            (*skb).gso_segs,
            (*skb).__bindgen_anon_2.sk as u64,
        )
    };
    if skp == 0 {
        return;
    }
    let mut t = ConnTuple {
        proto: IPPROTO_UDP,
        ..ConnTuple::default()
    };
    let (l3, ports): (u32, [u8; 4]);
    if proto == u32::from(ETH_P_IP.to_be()) {
        // Most packets are TCP: one byte decides, read in place.
        if l4_proto(skb, 9) != Some(IPPROTO_UDP) {
            return;
        }
        let Ok(h) = ctx.load::<[u8; 20]>(0) else {
            return;
        };
        l3 = u32::from(h[0] & 0x0f) * 4;
        if l3 < 20 {
            return;
        }
        let Ok(p) = ctx.load::<[u8; 4]>(l3 as usize) else {
            return;
        };
        ports = p;
        t.family = AF_INET;
        let (src, dst) = if egress {
            (&mut t.saddr, &mut t.daddr)
        } else {
            (&mut t.daddr, &mut t.saddr)
        };
        src[..4].copy_from_slice(&h[12..16]);
        dst[..4].copy_from_slice(&h[16..20]);
    } else if proto == u32::from(ETH_P_IPV6.to_be()) {
        // Extension headers before UDP are not followed (rare for UDP).
        if l4_proto(skb, 6) != Some(IPPROTO_UDP) {
            return;
        }
        let (Ok(a), Ok(b), Ok(p)) = (
            ctx.load::<[u8; 16]>(8),
            ctx.load::<[u8; 16]>(24),
            ctx.load::<[u8; 4]>(40),
        ) else {
            return;
        };
        l3 = 40;
        ports = p;
        t.family = AF_INET6;
        if egress {
            t.saddr = a;
            t.daddr = b;
        } else {
            t.saddr = b;
            t.daddr = a;
        }
    } else {
        return;
    }
    if len < l3 + UDP_HEADER {
        return;
    }
    let src_port = u16::from_be_bytes([ports[0], ports[1]]);
    let dst_port = u16::from_be_bytes([ports[2], ports[3]]);
    (t.sport, t.dport) = if egress {
        (src_port, dst_port)
    } else {
        (dst_port, src_port)
    };
    let sk = kernel::launder(skp);
    let skc = sk as *const u8;
    // Raw sockets can send UDP-protocol packets too; they are not flows.
    // (The packet is IP, so the socket is of an inet family.)
    if conn::transport::<Probe>(skc) != conn::Kind::Udp {
        return;
    }
    t.netns = conn::netns::<Probe>(skc);
    let payload = u64::from(len - l3 - UDP_HEADER);
    let datagrams = if gso_segs > 1 { u64::from(gso_segs) } else { 1 };

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
            let _ = UDP_FLOWS.insert(&t, &fresh, BPF_NOEXIST as u64);
            match UDP_FLOWS.get_ptr_mut(&t) {
                Some(f) => f,
                None => {
                    conn::count_drop(DROP_UDP_FLOWS);
                    return;
                }
            }
        }
    };
    // SAFETY: `f` points at a live map value; counters are 8-byte aligned.
    unsafe {
        if egress {
            conn::add(&raw mut (*f).tx_bytes, payload);
            conn::add(&raw mut (*f).tx_packets, datagrams);
        } else {
            conn::add(&raw mut (*f).rx_bytes, payload);
            conn::add(&raw mut (*f).rx_packets, datagrams);
        }
        (*f).last_ns = now;
    }
    if !egress && let Some(last) = UDP_LAST_RX.get_ptr_mut(0) {
        // SAFETY: per-CPU slot, only this CPU touches it while we run.
        unsafe {
            (*last).sk = sk;
            (*last).tuple = t;
            (*last).payload = payload;
            (*last).datagrams = datagrams;
        }
    }
    if egress {
        // UDP output runs synchronously in the sender's context.
        let pid = kernel::current_tgid();
        let epoch = note_owner(sk, pid, kernel::leader_comm::<Probe>);
        // SAFETY: as above.
        unsafe {
            if (*f).pid != pid || (*f).comm_epoch != epoch {
                (*f).pid = pid;
                (*f).comm = kernel::leader_comm::<Probe>();
                (*f).comm_epoch = epoch;
            }
        }
    } else if let Some(o) = UDP_OWNERS.get_ptr(&sk) {
        // SAFETY: `f` and `o` point at live map values.
        unsafe {
            if (*f).pid != (*o).pid || (*f).comm_epoch != (*o).comm_epoch {
                (*f).pid = (*o).pid;
                (*f).comm = (*o).comm;
                (*f).comm_epoch = (*o).comm_epoch;
            }
        }
    }
}

/// The socket `sk` could not queue the datagram just counted by ingress on
/// this CPU (receive buffer full): the application never gets it, so it is
/// taken back out of the flow's received counters.
#[inline(always)]
pub fn on_queue_failed(sk: u64) {
    let Some(last) = UDP_LAST_RX.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: per-CPU slot, only this CPU touches it while we run.
    unsafe {
        if sk == 0 || (*last).sk != sk {
            return;
        }
        (*last).sk = 0;
        if let Some(f) = UDP_FLOWS.get_ptr_mut(&(*last).tuple) {
            // Two's complement: adding the negation subtracts, atomically.
            conn::add(&raw mut (*f).rx_bytes, (*last).payload.wrapping_neg());
            conn::add(&raw mut (*f).rx_packets, (*last).datagrams.wrapping_neg());
        }
    }
}
