//! `sock:inet_sock_set_state`, as a BTF-typed tracepoint (direct reads) or
//! a raw one (probe reads) where BTF-typed programs cannot load.
//!
//! TP_PROTO(const struct sock *sk, const int oldstate, const int newstate):
//! fired by `inet_sk_set_state`/`tcp_set_state` on every TCP state change.
//! A socket entering SYN_SENT (connect, process context) or SYN_RECV (a child
//! created by a listener, softirq) is a connection born while we watch.

use aya_ebpf::{
    macros::{btf_tracepoint, raw_tracepoint},
    programs::{BtfTracePointContext, RawTracePointContext},
};
use tcptop_common::{TCP_CLOSE, TCP_ESTABLISHED, TCP_LISTEN, TCP_SYN_RECV, TCP_SYN_SENT};

use crate::conn;
use crate::kernel::{self, Direct, Mem, Probe};

#[btf_tracepoint(function = "inet_sock_set_state")]
pub fn btf_inet_sock_set_state(ctx: BtfTracePointContext) -> i32 {
    let (sk, old, new) = (ctx.arg::<u64>(0), ctx.arg::<u64>(1), ctx.arg::<u64>(2));
    on_state::<Direct>(sk, old as u8, new as u8);
    0
}

#[raw_tracepoint(tracepoint = "inet_sock_set_state")]
pub fn inet_sock_set_state(ctx: RawTracePointContext) -> i32 {
    let sk: u64 = ctx.arg(0);
    on_state::<Probe>(sk, ctx.arg::<u64>(1) as u8, ctx.arg::<u64>(2) as u8);
    0
}

#[inline(always)]
fn on_state<M: Mem>(sk: u64, oldstate: u8, newstate: u8) {
    if !kernel::ready() {
        return;
    }
    // Listening sockets are not connections. (A child socket cloned from a
    // listener reports LISTEN -> SYN_RECV: that one we want.)
    if sk == 0 || newstate == TCP_LISTEN || (oldstate == TCP_LISTEN && newstate == TCP_CLOSE) {
        return;
    }
    match conn::lookup(sk) {
        Some(st) => {
            // Endpoints are filled in around the early transitions (the
            // source port is picked after SYN_SENT, a child's addresses after
            // SYN_RECV) and final from ESTABLISHED on: refresh them until
            // then. (Skipping them on the closing transitions halves this
            // program's cost per connection.) Socket counters are not read
            // here: send/receive calls and teardown keep them.
            // SAFETY: `st` points at a live map value.
            unsafe {
                let old = (*st).state;
                if old == TCP_SYN_SENT || old == TCP_SYN_RECV || newstate == TCP_ESTABLISHED {
                    let tp = M::tcp_sock(sk);
                    if tp != 0 {
                        conn::read_endpoints::<M>(tp as *const u8, &mut (*st).tuple);
                    }
                }
                (*st).state = newstate;
            }
        }
        None => {
            let tp = conn::tcp_sock::<M>(sk);
            if tp == 0 {
                return;
            }
            if newstate == TCP_SYN_SENT || newstate == TCP_SYN_RECV {
                // Born while we watch. connect() runs in its caller's
                // context: the owner. A listener's child is made in
                // softirq: its owner comes with its first call.
                conn::start_born::<M>(tp as *const u8, newstate, newstate == TCP_SYN_SENT);
            } else {
                let _ = conn::start_existing::<M>(tp as *const u8, newstate);
            }
        }
    }
}
