//! UDP send/receive calls (see `udp.rs`).
//!
//! The tracepoint set counts them in its `sock_send_length`/
//! `sock_recv_length` programs (`conn::on_io`); the cgroup `sendmsg4/6`
//! and `recvmsg4/6` programs here (cgroup v2 root: every socket, every
//! network namespace) hand it the peer address of calls that carry one.
//! They run only for UDP calls with an address (`sendmsg`: unconnected
//! sends; `recvmsg`: receives that ask for the sender), and return 1:
//! they observe, never refuse or rewrite.
//!
//! The fentry and kprobe sets hook the UDP functions themselves, with the
//! call's `msghdr` at hand:
//! - `int udp_sendmsg(struct sock *sk, struct msghdr *msg, size_t len)`,
//!   `udpv6_sendmsg` (same);
//! - `int udp_recvmsg(struct sock *sk, struct msghdr *msg, size_t len,
//!   [int nonblock,] int flags[, int *addr_len])`, `udpv6_recvmsg`
//!   (same layout as `tcp_recvmsg` in every kernel: one program per layout).

use aya_ebpf::{
    helpers::bpf_get_current_pid_tgid,
    macros::{cgroup_sock_addr, fexit, kprobe, kretprobe, map},
    maps::HashMap,
    programs::{FExitContext, ProbeContext, RetProbeContext, SockAddrContext},
};
use tcptop_common::{AF_INET, AF_INET6};

use super::kprobe;
use crate::kernel;
use crate::udp;

// --- tracepoint set: peer addresses from the cgroup hooks ---

#[cgroup_sock_addr(sendmsg4)]
pub fn tcptop_udp_sendmsg4(ctx: SockAddrContext) -> i32 {
    hand_over(&ctx, true, false);
    1
}

#[cgroup_sock_addr(sendmsg6)]
pub fn tcptop_udp_sendmsg6(ctx: SockAddrContext) -> i32 {
    hand_over(&ctx, true, true);
    1
}

#[cgroup_sock_addr(recvmsg4)]
pub fn tcptop_udp_recvmsg4(ctx: SockAddrContext) -> i32 {
    hand_over(&ctx, false, false);
    1
}

#[cgroup_sock_addr(recvmsg6)]
pub fn tcptop_udp_recvmsg6(ctx: SockAddrContext) -> i32 {
    hand_over(&ctx, false, true);
    1
}

/// `v6`: the hook of the IPv6 path, where only `user_ip6` may be read
/// (only `user_ip4` on the IPv4 path).
#[inline(always)]
fn hand_over(ctx: &SockAddrContext, tx: bool, v6: bool) {
    if !kernel::ready() || !kernel::udp_enabled() {
        return;
    }
    let a = ctx.sock_addr;
    // SAFETY: context fields the verifier lets these programs read.
    let (port, sk) = unsafe { ((*a).user_port, (*a).__bindgen_anon_1.sk as u64) };
    if sk == 0 {
        return;
    }
    let mut addr = [0u8; 16];
    // Network order in memory: the bytes as they are.
    let family = if v6 {
        // SAFETY: as above.
        let ip6 = unsafe { (*a).user_ip6 };
        for (i, w) in ip6.iter().enumerate() {
            addr[i * 4..i * 4 + 4].copy_from_slice(&w.to_ne_bytes());
        }
        AF_INET6
    } else {
        // SAFETY: as above.
        addr[..4].copy_from_slice(&unsafe { (*a).user_ip4 }.to_ne_bytes());
        AF_INET
    };
    // `user_port` holds the port in network order in its first two bytes.
    let port = u16::from_be(port as u16);
    udp::hand_over(kernel::launder(sk), tx, family, port, addr);
}

// --- fentry set ---

#[fexit(function = "udp_sendmsg")]
pub fn fexit_udp_sendmsg(ctx: FExitContext) -> i32 {
    let sk = kernel::launder(ctx.arg(0));
    // The IPv4-mapped path of udpv6_sendmsg: counted by the outer call.
    if !udp::is_inet6(sk) {
        send_exit(sk, ctx.arg(1), ctx.arg::<u64>(3));
    }
    0
}

#[fexit(function = "udpv6_sendmsg")]
pub fn fexit_udpv6_sendmsg(ctx: FExitContext) -> i32 {
    send_exit(kernel::launder(ctx.arg(0)), ctx.arg(1), ctx.arg::<u64>(3));
    0
}

#[inline(always)]
fn send_exit(sk: u64, msg: u64, ret: u64) {
    udp::on_function_exit(sk, ret as i32 as i64, 0, msg, true);
}

// One program per argument layout, as for tcp_recvmsg (fentry.rs).

/// `(sk, msg, len, flags)` (6.16+)
#[fexit(function = "udp_recvmsg")]
pub fn fexit_udp_recvmsg4(ctx: FExitContext) -> i32 {
    recv_exit(&ctx, ctx.arg::<u64>(3), ctx.arg::<u64>(4))
}

/// `(sk, msg, len, flags, addr_len)` (5.19 to 6.15)
#[fexit(function = "udp_recvmsg")]
pub fn fexit_udp_recvmsg5(ctx: FExitContext) -> i32 {
    recv_exit(&ctx, ctx.arg::<u64>(3), ctx.arg::<u64>(5))
}

/// `(sk, msg, len, nonblock, flags, addr_len)` (before 5.19)
#[fexit(function = "udp_recvmsg")]
pub fn fexit_udp_recvmsg6(ctx: FExitContext) -> i32 {
    recv_exit(&ctx, ctx.arg::<u64>(4), ctx.arg::<u64>(6))
}

#[fexit(function = "udpv6_recvmsg")]
pub fn fexit_udpv6_recvmsg4(ctx: FExitContext) -> i32 {
    recv_exit(&ctx, ctx.arg::<u64>(3), ctx.arg::<u64>(4))
}

#[fexit(function = "udpv6_recvmsg")]
pub fn fexit_udpv6_recvmsg5(ctx: FExitContext) -> i32 {
    recv_exit(&ctx, ctx.arg::<u64>(3), ctx.arg::<u64>(5))
}

#[fexit(function = "udpv6_recvmsg")]
pub fn fexit_udpv6_recvmsg6(ctx: FExitContext) -> i32 {
    recv_exit(&ctx, ctx.arg::<u64>(4), ctx.arg::<u64>(6))
}

#[inline(always)]
fn recv_exit(ctx: &FExitContext, flags: u64, ret: u64) -> i32 {
    let sk = kernel::launder(ctx.arg(0));
    udp::on_function_exit(
        sk,
        ret as i32 as i64,
        flags as i32 as i64,
        ctx.arg(1),
        false,
    );
    0
}

// --- kprobe set ---

/// Calls in flight: thread (pid_tgid) -> (sk, flags, msg).
#[map(name = "UDP_INFLIGHT")]
static UDP_INFLIGHT: HashMap<u64, [u64; 3]> = HashMap::with_max_entries(16_384, 0);

#[inline(always)]
fn enter(sk: Option<u64>, flags: u64, msg: Option<u64>) {
    if let (Some(sk), Some(msg)) = (sk, msg) {
        let _ = UDP_INFLIGHT.insert(&bpf_get_current_pid_tgid(), &[sk, flags, msg], 0);
    }
}

/// `inet4_only`: the exit of `udp_sendmsg`, which leaves the call of an
/// IPv6 socket (the IPv4-mapped path of `udpv6_sendmsg`, whose entry
/// recorded nothing) to the outer call's exit.
#[inline(always)]
fn exit(ret: u64, tx: bool, inet4_only: bool) {
    let tid = bpf_get_current_pid_tgid();
    // SAFETY: the value is copied out before the entry is removed.
    let Some(&[sk, flags, msg]) = (unsafe { UDP_INFLIGHT.get(&tid) }) else {
        return;
    };
    if inet4_only && udp::is_inet6(sk) {
        return;
    }
    let _ = UDP_INFLIGHT.remove(&tid);
    udp::on_function_exit(sk, ret as i32 as i64, flags as i32 as i64, msg, tx);
}

#[kprobe]
pub fn kprobe_udp_sendmsg(ctx: ProbeContext) -> u32 {
    if let Some(sk) = ctx.arg::<u64>(0)
        && !udp::is_inet6(sk)
    {
        enter(Some(sk), 0, ctx.arg::<u64>(1));
    }
    0
}

#[kretprobe]
pub fn kretprobe_udp_sendmsg(ctx: RetProbeContext) -> u32 {
    exit(ctx.ret::<u64>(), true, true);
    0
}

#[kprobe]
pub fn kprobe_udpv6_sendmsg(ctx: ProbeContext) -> u32 {
    enter(ctx.arg::<u64>(0), 0, ctx.arg::<u64>(1));
    0
}

#[kretprobe]
pub fn kretprobe_udpv6_sendmsg(ctx: RetProbeContext) -> u32 {
    exit(ctx.ret::<u64>(), true, false);
    0
}

#[inline(always)]
fn recv_enter(ctx: &ProbeContext) {
    enter(
        ctx.arg::<u64>(0),
        kprobe::recv_flags(ctx),
        ctx.arg::<u64>(1),
    );
}

#[kprobe]
pub fn kprobe_udp_recvmsg(ctx: ProbeContext) -> u32 {
    recv_enter(&ctx);
    0
}

#[kretprobe]
pub fn kretprobe_udp_recvmsg(ctx: RetProbeContext) -> u32 {
    exit(ctx.ret::<u64>(), false, false);
    0
}

#[kprobe]
pub fn kprobe_udpv6_recvmsg(ctx: ProbeContext) -> u32 {
    recv_enter(&ctx);
    0
}

#[kretprobe]
pub fn kretprobe_udpv6_recvmsg(ctx: RetProbeContext) -> u32 {
    exit(ctx.ret::<u64>(), false, false);
    0
}
