//! `sock:sock_send_length` and `sock:sock_recv_length` (Linux ≥ 6.3),
//! BTF-typed or raw (see `state.rs`).
//!
//! TP_PROTO(struct sock *sk, int ret, int flags): fired by
//! `sock_sendmsg_nosec`/`sock_recvmsg_nosec` after every send/receive call on
//! any socket, in the calling process's context, with the call's return value:
//! the payload bytes moved, exactly once per call.

use aya_ebpf::{
    macros::{btf_tracepoint, raw_tracepoint},
    programs::{BtfTracePointContext, RawTracePointContext},
};

use crate::conn;
use crate::kernel::{Direct, Probe};

#[btf_tracepoint(function = "sock_send_length")]
pub fn btf_sock_send_length(ctx: BtfTracePointContext) -> i32 {
    let (sk, ret, flags) = (ctx.arg::<u64>(0), ctx.arg::<u64>(1), ctx.arg::<u64>(2));
    conn::on_io::<Direct>(sk, ret as i32 as i64, flags as i32 as i64, true);
    0
}

#[btf_tracepoint(function = "sock_recv_length")]
pub fn btf_sock_recv_length(ctx: BtfTracePointContext) -> i32 {
    let (sk, ret, flags) = (ctx.arg::<u64>(0), ctx.arg::<u64>(1), ctx.arg::<u64>(2));
    conn::on_io::<Direct>(sk, ret as i32 as i64, flags as i32 as i64, false);
    0
}

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
    conn::on_io::<Probe>(sk, ret, flags, tx);
}
