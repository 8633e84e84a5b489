//! `tcp:tcp_retransmit_skb`, BTF-typed or raw (see `state.rs`).
//!
//! TP_PROTO(const struct sock *sk, const struct sk_buff *skb, ...): fired
//! when TCP retransmits a segment, SYNs included. `connect()` enters
//! SYN_SENT (where the record is made) before the kernel picks the source
//! port, and the endpoints are otherwise re-read only at the next state
//! change: a connect the peer never answers would show port 0 for as long
//! as it waits. Its first SYN retransmit (after 1 s) fills the port in.
//! Every retransmit also refreshes the socket counters, so the RETRANS
//! column of a waiting connect (or of a stalled connection making no
//! calls) moves. Retransmits are rare, so this costs next to nothing.

use aya_ebpf::{
    macros::{btf_tracepoint, raw_tracepoint},
    programs::{BtfTracePointContext, RawTracePointContext},
};
use tcptop_common::TCP_SYN_SENT;

use crate::conn;
use crate::kernel::{self, Direct, Mem, Probe};

#[btf_tracepoint(function = "tcp_retransmit_skb")]
pub fn btf_tcp_retransmit_skb(ctx: BtfTracePointContext) -> i32 {
    on_retransmit::<Direct>(ctx.arg::<u64>(0));
    0
}

#[raw_tracepoint(tracepoint = "tcp_retransmit_skb")]
pub fn tcp_retransmit_skb(ctx: RawTracePointContext) -> i32 {
    on_retransmit::<Probe>(ctx.arg(0));
    0
}

#[inline(always)]
fn on_retransmit<M: Mem>(sk: u64) {
    if !kernel::ready() {
        return;
    }
    if let Some(st) = conn::lookup(sk) {
        let tp = M::tcp_sock(sk);
        if tp == 0 {
            return;
        }
        // SAFETY: `st` points at a live map value.
        unsafe {
            if (*st).state == TCP_SYN_SENT {
                conn::read_endpoints::<M>(tp as *const u8, &mut (*st).tuple);
            }
        }
        // The RETRANS column moves when a segment is retransmitted, not at
        // the next call (a waiting connect makes none).
        conn::refresh_counters::<M>(st, tp as *const u8);
    }
}
