//! `sock:sock_send_length` and `sock:sock_recv_length` (Linux ≥ 6.3), raw.
//!
//! TP_PROTO(struct sock *sk, int ret, int flags): fired by
//! `sock_sendmsg_nosec`/`sock_recvmsg_nosec` after every send/receive call on
//! any socket, in the calling process's context, with the call's return value:
//! the payload bytes moved, exactly once per call.

use aya_ebpf::{macros::raw_tracepoint, programs::RawTracePointContext};

use crate::{conn, kernel};

/// `MSG_PEEK`: data is left in the queue and will be counted when read.
const MSG_PEEK: i64 = 2;

#[raw_tracepoint(tracepoint = "sock_send_length")]
pub fn sock_send_length(ctx: RawTracePointContext) -> i32 {
    account(&ctx, true);
    0
}

#[raw_tracepoint(tracepoint = "sock_recv_length")]
pub fn sock_recv_length(ctx: RawTracePointContext) -> i32 {
    account(&ctx, false);
    0
}

#[inline(always)]
fn account(ctx: &RawTracePointContext, tx: bool) {
    if !kernel::ready() {
        return;
    }
    let sk: u64 = ctx.arg(0);
    // The arguments are 64-bit slots; `ret` and `flags` are C ints.
    let ret = ctx.arg::<u64>(1) as i32 as i64;
    let flags = ctx.arg::<u64>(2) as i32 as i64;
    if sk == 0 || ret <= 0 || (!tx && flags & MSG_PEEK != 0) {
        return;
    }
    let st = match conn::lookup(sk) {
        Some(p) => p,
        None => {
            let skp = sk as *const u8;
            if !conn::is_inet_tcp(skp) {
                return;
            }
            let state = kernel::read::<u8>(skp, kernel::off!(skc_state)).unwrap_or(0);
            match conn::start(skp, false, state) {
                Some(p) => p,
                None => return,
            }
        }
    };
    // SAFETY: `st` points at a live map value.
    let counter = unsafe {
        if tx {
            &raw mut (*st).tx_bytes
        } else {
            &raw mut (*st).rx_bytes
        }
    };
    conn::add(counter, ret as u64);
    conn::set_owner(st);
    conn::store_counters(st, &conn::read_counters(sk as *const u8));
}
