//! cgroup `sock_ops`, attached to the cgroup v2 root.
//!
//! For every connection established while we run, ask the kernel to call us
//! on each RTT sample (`BPF_SOCK_OPS_RTT_CB`, from `tcp_rtt_estimator` via
//! `tcp_bpf_rtt(sk, mrtt_us, srtt)`), so RTT and segment counters stay fresh
//! between the owner's send/receive calls. `args[1]` is the new smoothed RTT
//! (µs << 3); the context's own `srtt_us` is one sample stale.

use aya_ebpf::{
    bindings::{
        BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB, BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB,
        BPF_SOCK_OPS_RTT_CB, BPF_SOCK_OPS_RTT_CB_FLAG,
    },
    macros::sock_ops,
    programs::SockOpsContext,
};

use crate::{conn, kernel};

#[sock_ops]
pub fn tcptop_sockops(ctx: SockOpsContext) -> u32 {
    if !kernel::ready() {
        return 1;
    }
    match ctx.op() {
        BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB | BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB => {
            let flags = ctx.cb_flags() | BPF_SOCK_OPS_RTT_CB_FLAG;
            let _ = ctx.set_cb_flags(flags as i32);
        }
        BPF_SOCK_OPS_RTT_CB => on_rtt(&ctx),
        _ => {}
    }
    1
}

#[inline(always)]
fn on_rtt(ctx: &SockOpsContext) {
    // SAFETY: reading fields of the context the kernel handed us.
    let (sk, srtt8, segs_in, segs_out, retrans) = unsafe {
        let ops = &*ctx.ops;
        (
            ops.__bindgen_anon_2.sk as u64,
            ops.__bindgen_anon_1.args[1],
            ops.segs_in,
            ops.segs_out,
            ops.total_retrans,
        )
    };
    if sk == 0 {
        return;
    }
    if let Some(st) = conn::lookup(sk) {
        conn::store_counters(
            st,
            &conn::SockCounters {
                srtt_us8: srtt8,
                segs_in,
                segs_out,
                retrans,
            },
        );
        // SAFETY: `st` points at a live map value.
        unsafe { (*st).sockops = 1 };
    }
}
