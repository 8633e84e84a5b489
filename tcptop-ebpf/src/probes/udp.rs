//! UDP flows and their owners, through cgroup programs on the cgroup v2 root
//! (every socket on the machine, in every network namespace):
//!
//! - `cgroup_skb/egress`: `ip_finish_output`/`ip6_finish_output`, before
//!   fragmentation and GSO segmentation: one call per datagram or GSO train;
//! - `cgroup_skb/ingress`: `sk_filter` in `udp_queue_rcv_one_skb`, after
//!   reassembly, for each socket a datagram is delivered to;
//! - `cgroup/sock_create`, `cgroup/sock_release`: a UDP socket's creator is
//!   its first known owner; its owner entry goes with it.
//!
//! - raw tracepoint `udp_fail_queue_rcv_skb(rc, sk, ...)`: a datagram the
//!   ingress program just counted did not fit the socket's receive buffer
//!   (IPv4 always; IPv6 since Linux 6.6).
//!
//! Both skb programs return 1: they observe, never drop.

use aya_ebpf::{
    macros::{cgroup_skb, cgroup_sock, raw_tracepoint},
    programs::{RawTracePointContext, SkBuffContext, SockContext},
};
use tcptop_common::{AF_INET, AF_INET6, IPPROTO_UDP};

use crate::{kernel, udp};

#[cgroup_skb(egress)]
pub fn tcptop_udp_egress(ctx: SkBuffContext) -> i32 {
    udp::on_skb(&ctx, true);
    1
}

#[cgroup_skb(ingress)]
pub fn tcptop_udp_ingress(ctx: SkBuffContext) -> i32 {
    udp::on_skb(&ctx, false);
    1
}

#[raw_tracepoint(tracepoint = "udp_fail_queue_rcv_skb")]
pub fn udp_fail_queue_rcv_skb(ctx: RawTracePointContext) -> i32 {
    if kernel::ready() {
        udp::on_queue_failed(ctx.arg::<u64>(1));
    }
    0
}

#[cgroup_sock(sock_create)]
pub fn tcptop_udp_create(ctx: SockContext) -> i32 {
    if kernel::ready() && is_udp(&ctx) {
        let sk = kernel::launder(ctx.sock as u64);
        udp::note_owner(
            sk,
            kernel::current_tgid(),
            kernel::leader_comm::<kernel::Probe>,
        );
    }
    1
}

#[cgroup_sock(sock_release)]
pub fn tcptop_udp_release(ctx: SockContext) -> i32 {
    if kernel::ready() && is_udp(&ctx) {
        udp::forget_owner(kernel::launder(ctx.sock as u64));
    }
    1
}

#[inline(always)]
fn is_udp(ctx: &SockContext) -> bool {
    // SAFETY: context fields the verifier lets cgroup sock programs read.
    let (family, ty, proto) =
        unsafe { ((*ctx.sock).family, (*ctx.sock).type_, (*ctx.sock).protocol) };
    (family == u32::from(AF_INET) || family == u32::from(AF_INET6))
        && ty == u32::from(udp::SOCK_DGRAM)
        && proto == u32::from(IPPROTO_UDP)
}
