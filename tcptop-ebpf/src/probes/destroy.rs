//! `tcp:tcp_destroy_sock`, raw.
//!
//! TP_PROTO(struct sock *sk): fired by `tcp_v4_destroy_sock` (also used for
//! IPv6) when a TCP socket is torn down: after the last close and after the
//! connection reached CLOSE. The record leaves the map here, and its final
//! counters leave through the ring buffer.

use aya_ebpf::{macros::raw_tracepoint, programs::RawTracePointContext};
use tcptop_common::TCP_CLOSE;

use crate::{conn, kernel};

#[raw_tracepoint(tracepoint = "tcp_destroy_sock")]
pub fn tcp_destroy_sock(ctx: RawTracePointContext) -> i32 {
    if !kernel::ready() {
        return 0;
    }
    let sk: u64 = ctx.arg(0);
    if let Some(st) = conn::lookup(sk) {
        conn::store_counters(st, &conn::read_counters(sk as *const u8));
        // SAFETY: `st` points at a live map value.
        unsafe { (*st).state = TCP_CLOSE };
        conn::emit_close(sk, st);
        conn::remove(sk);
    }
    0
}
