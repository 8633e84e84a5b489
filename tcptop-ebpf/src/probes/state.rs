//! `sock:inet_sock_set_state`, raw.
//!
//! TP_PROTO(const struct sock *sk, const int oldstate, const int newstate):
//! fired by `inet_sk_set_state`/`tcp_set_state` on every TCP state change.
//! A socket entering SYN_SENT (connect, process context) or SYN_RECV (a child
//! created by a listener, softirq) is a connection born while we watch.

use aya_ebpf::{macros::raw_tracepoint, programs::RawTracePointContext};
use tcptop_common::{TCP_CLOSE, TCP_ESTABLISHED, TCP_LISTEN, TCP_SYN_RECV, TCP_SYN_SENT};

use crate::{conn, kernel};

#[raw_tracepoint(tracepoint = "inet_sock_set_state")]
pub fn inet_sock_set_state(ctx: RawTracePointContext) -> i32 {
    if !kernel::ready() {
        return 0;
    }
    let sk: u64 = ctx.arg(0);
    let oldstate = ctx.arg::<u64>(1) as u8;
    let newstate = ctx.arg::<u64>(2) as u8;
    // Listening sockets are not connections. (A child socket cloned from a
    // listener reports LISTEN -> SYN_RECV: that one we want.)
    if sk == 0 || newstate == TCP_LISTEN || (oldstate == TCP_LISTEN && newstate == TCP_CLOSE) {
        return 0;
    }
    let skp = sk as *const u8;
    match conn::lookup(sk) {
        Some(st) => {
            // Endpoints are filled in around the early transitions (the
            // source port is picked after SYN_SENT, a child's addresses after
            // SYN_RECV) and final from ESTABLISHED on: refresh them until
            // then. (Each refresh is ~11 probe reads; skipping them on the
            // closing transitions halves this program's cost per connection.)
            // Socket counters are not read here: send/receive calls, the
            // sock_ops callback and teardown keep them.
            // SAFETY: `st` points at a live map value.
            unsafe {
                let old = (*st).state;
                if old == TCP_SYN_SENT || old == TCP_SYN_RECV || newstate == TCP_ESTABLISHED {
                    conn::read_endpoints(skp, &mut (*st).tuple);
                }
                (*st).state = newstate;
            }
        }
        None => {
            if !conn::is_inet_tcp(skp) {
                return 0;
            }
            let born = newstate == TCP_SYN_SENT || newstate == TCP_SYN_RECV;
            if let Some(st) = conn::start(skp, born, newstate)
                && newstate == TCP_SYN_SENT
            {
                conn::set_owner(st);
            }
        }
    }
    0
}
