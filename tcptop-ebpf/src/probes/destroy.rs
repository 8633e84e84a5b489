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
use tcptop_common::{CONN_STILLBORN, TCP_CLOSE};

use crate::kernel::{self, Direct, Mem, Probe};
use crate::{conn, sock};

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
        // SAFETY: `st` points at a live map value.
        if unsafe { (*st).flags } & CONN_STILLBORN != 0 {
            // A child no application saw (see CONN_STILLBORN).
            conn::remove(sk);
            return;
        }
        // The final record: endpoints too if still incomplete (a
        // connection shorter than a snapshot interval was never refreshed
        // by the iterator). An orderly close keeps them (inet_sport, unlike
        // skc_num, survives the port's release).
        conn::emit_close::<M>(sk, st, M::tcp_sock(sk) as *const u8);
        conn::remove(sk);
    } else {
        // A connection open before tcptop started, not adopted at start-up
        // (`adopt.rs`), that had no call since (every connection born
        // since has a record): user space shows it
        // from /proc at start-up, and learns here that it ended. Sockets
        // that never connected (and listeners) have no remote port.
        let tp = sock::tcp_sock::<M>(sk);
        if tp == 0 {
            return;
        }
        // Whether it sent a FIN (its send sequence counts it): known if
        // this CPU just saw it enter CLOSE, as an orderly end does right
        // before its teardown; otherwise it had no FIN to send (an
        // application holding a reset socket closes it later).
        let fin = super::state::last_close_fin(sk).unwrap_or(false);
        if let Some(st) = conn::existing::<M>(tp as *const u8, TCP_CLOSE, (0, 0), fin)
            // SAFETY: `st` points at this CPU's scratch slot.
            && unsafe { (*st).tuple.dport } != 0
        {
            conn::emit_close::<M>(sk, st, core::ptr::null());
        }
    }
}
