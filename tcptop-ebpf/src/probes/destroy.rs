//! `tcp:tcp_destroy_sock`, BTF-typed or raw (see `state.rs`).
//!
//! TP_PROTO(struct sock *sk): fired by `tcp_v4_destroy_sock` (also used for
//! IPv6) when a TCP socket is torn down: after the last close and after the
//! connection reached CLOSE. The record leaves the map here, and its final
//! counters leave through the ring buffer.

use aya_ebpf::{
    macros::{btf_tracepoint, raw_tracepoint},
    programs::{BtfTracePointContext, RawTracePointContext},
};
use tcptop_common::TCP_CLOSE;

use crate::conn;
use crate::kernel::{self, Direct, Mem, Probe};

#[btf_tracepoint(function = "tcp_destroy_sock")]
pub fn btf_tcp_destroy_sock(ctx: BtfTracePointContext) -> i32 {
    on_destroy::<Direct>(ctx.arg::<u64>(0));
    0
}

#[raw_tracepoint(tracepoint = "tcp_destroy_sock")]
pub fn tcp_destroy_sock(ctx: RawTracePointContext) -> i32 {
    on_destroy::<Probe>(ctx.arg(0));
    0
}

#[inline(always)]
fn on_destroy<M: Mem>(sk: u64) {
    if !kernel::ready() {
        return;
    }
    if let Some(st) = conn::lookup(sk) {
        let tp = M::tcp_sock(sk);
        if tp != 0 {
            conn::refresh_counters::<M>(st, tp as *const u8);
        }
        // SAFETY: `st` points at a live map value.
        unsafe { (*st).state = TCP_CLOSE };
        conn::emit_close(sk, st);
        conn::remove(sk);
    }
}
