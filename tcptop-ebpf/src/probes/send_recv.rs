//! `sock:sock_send_length` and `sock:sock_recv_length` (Linux ≥ 6.3), raw.
//!
//! TP_PROTO(struct sock *sk, int ret, int flags): fired by
//! `sock_sendmsg_nosec`/`sock_recvmsg_nosec` after every send/receive call on
//! any socket, in the calling process's context, with the call's return value:
//! the payload bytes moved, exactly once per call.

use aya_ebpf::{macros::raw_tracepoint, programs::RawTracePointContext};

use crate::conn;

#[raw_tracepoint(tracepoint = "sock_send_length")]
pub fn sock_send_length(ctx: RawTracePointContext) -> i32 {
    on_call(&ctx, true);
    0
}

#[raw_tracepoint(tracepoint = "sock_recv_length")]
pub fn sock_recv_length(ctx: RawTracePointContext) -> i32 {
    on_call(&ctx, false);
    0
}

#[inline(always)]
fn on_call(ctx: &RawTracePointContext, tx: bool) {
    let sk: u64 = ctx.arg(0);
    // The arguments are 64-bit slots; `ret` and `flags` are C ints.
    let ret = ctx.arg::<u64>(1) as i32 as i64;
    let flags = ctx.arg::<u64>(2) as i32 as i64;
    conn::on_io(sk, ret, flags, tx);
}
