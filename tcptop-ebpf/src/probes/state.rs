//! `sock:inet_sock_set_state`, as a BTF-typed tracepoint (direct reads) or
//! a raw one (probe reads) where BTF-typed programs cannot load.
//!
//! TP_PROTO(const struct sock *sk, const int oldstate, const int newstate):
//! fired by `inet_sk_set_state`/`tcp_set_state` on every TCP state change,
//! ten times for a short connection's two ends. Only two of them matter
//! here: a socket entering SYN_SENT (connect, in the caller's context: the
//! owner) or SYN_RECV (a child made by a listener, in softirq) is a
//! connection born while we watch. The state a connection is in is read by
//! the snapshot's iterator (`iter.rs`), not traced: every other transition
//! returns before touching the map, so the packet path pays only the call.
//!
//! Except one kind: a transition to CLOSE that no teardown follows at once
//! (a refused or reset connection, whose socket the application may keep
//! open, and a failed connect() then disconnects, zeroing its endpoints):
//! its record learns CLOSE and its endpoints here. The orderly ends (from
//! LAST_ACK, FIN_WAIT2 or CLOSING) go straight on to teardown.

use aya_ebpf::{
    macros::{btf_tracepoint, raw_tracepoint},
    programs::{BtfTracePointContext, RawTracePointContext},
};
use tcptop_common::{
    TCP_CLOSE, TCP_CLOSING, TCP_FIN_WAIT2, TCP_LAST_ACK, TCP_SYN_RECV, TCP_SYN_SENT,
};

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
    if newstate == TCP_SYN_SENT || newstate == TCP_SYN_RECV {
        if !kernel::ready() || sk == 0 {
            return;
        }
        let tp = conn::tcp_sock::<M>(sk);
        if tp != 0 {
            // connect() runs in its caller's context: the owner. A
            // listener's child is made in softirq: its owner comes with
            // its first call.
            conn::start_born::<M>(tp as *const u8, newstate, newstate == TCP_SYN_SENT);
        }
    } else if newstate == TCP_CLOSE
        && oldstate != TCP_LAST_ACK
        && oldstate != TCP_FIN_WAIT2
        && oldstate != TCP_CLOSING
        && kernel::ready()
        && let Some(st) = conn::lookup(sk)
    {
        // Endpoints now: a failed connect() disconnects the socket, which
        // zeroes its ports and addresses, before its teardown.
        let tp = M::tcp_sock(sk);
        // SAFETY: `st` points at a live map value.
        unsafe {
            if tp != 0 {
                conn::read_endpoints::<M>(tp as *const u8, &mut (*st).tuple);
            }
            (*st).state = TCP_CLOSE;
        }
    }
}
