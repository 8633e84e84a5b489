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
//! its record learns CLOSE, its endpoints and whether a FIN was sent (the
//! send sequence counts it: `conn::read_app`) here. The orderly ends (from
//! LAST_ACK, FIN_WAIT2 or CLOSING: a FIN was sent) go straight on to
//! teardown. Every transition to CLOSE also leaves the socket and whether it
//! sent a FIN in a per-CPU slot, for the teardown of a connection that has
//! no record (`destroy.rs`), which follows on the same CPU.
//!
//! Where the kernel refused the map iterator (`SETTING_FILL_ESTABLISHED`),
//! nothing else completes a record's endpoints: the transition to
//! ESTABLISHED does (a lookup per connection end, on those hosts only).

use aya_ebpf::{macros::map, maps::PerCpuArray};
use aya_ebpf::{
    macros::{btf_tracepoint, raw_tracepoint},
    programs::{BtfTracePointContext, RawTracePointContext},
};
use tcptop_common::{
    CONN_NO_FIN, CONN_STILLBORN, TCP_CLOSE, TCP_CLOSE_WAIT, TCP_CLOSING, TCP_ESTABLISHED,
    TCP_FIN_WAIT1, TCP_FIN_WAIT2, TCP_LAST_ACK, TCP_SYN_RECV, TCP_SYN_SENT,
};

use crate::kernel::{self, Direct, Mem, Probe};
use crate::{conn, sock, touch};

/// The last socket this CPU saw enter CLOSE, and whether it had sent a FIN
/// (1) or not (0).
#[map(name = "LAST_CLOSE")]
static LAST_CLOSE: PerCpuArray<[u64; 2]> = PerCpuArray::with_max_entries(1, 0);

/// Whether `sk` is the socket this CPU last saw enter CLOSE, and then
/// whether it had sent a FIN.
#[inline(always)]
pub fn last_close_fin(sk: u64) -> Option<bool> {
    let [last, fin] = *LAST_CLOSE.get(0)?;
    (last == sk).then_some(fin != 0)
}

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
    if oldstate == TCP_ESTABLISHED {
        leaving_established::<M>(sk, newstate);
    }
    if newstate == TCP_SYN_SENT || newstate == TCP_SYN_RECV {
        if !kernel::ready() || sk == 0 {
            return;
        }
        let tp = sock::tcp_sock::<M>(sk);
        if tp != 0 {
            // connect() runs in its caller's context: the owner. A
            // listener's child is made in softirq: its owner comes with
            // its first call.
            conn::start_born::<M>(tp as *const u8, newstate, newstate == TCP_SYN_SENT);
            if newstate == TCP_SYN_SENT {
                // Its source port is picked after this: user space finds
                // it in a dump of connecting sockets until it is known.
                touch::touch(sk);
            }
        }
    } else if newstate == TCP_CLOSE {
        if !kernel::ready() {
            return;
        }
        let orderly =
            oldstate == TCP_LAST_ACK || oldstate == TCP_FIN_WAIT2 || oldstate == TCP_CLOSING;
        let fin = orderly || oldstate == TCP_FIN_WAIT1;
        if let Some(slot) = LAST_CLOSE.get_ptr_mut(0) {
            // SAFETY: per-CPU slot; only this CPU writes it.
            unsafe { *slot = [sk, u64::from(fin)] };
        }
        if orderly {
            return;
        }
        if let Some(st) = conn::lookup(sk) {
            // Endpoints now: a failed connect() disconnects the socket,
            // which zeroes its ports and addresses, before its teardown.
            let tp = M::tcp_sock(sk);
            // SAFETY: `st` points at a live map value.
            unsafe {
                if tp != 0 {
                    conn::read_endpoints::<M>(tp as *const u8, &mut (*st).tuple);
                }
                (*st).state = TCP_CLOSE;
                if !fin {
                    (*st).flags |= CONN_NO_FIN;
                }
                if oldstate == TCP_SYN_RECV
                    && (*st).pid == 0
                    && (*st).tx_bytes == 0
                    && (*st).rx_bytes == 0
                {
                    (*st).flags |= CONN_STILLBORN;
                }
            }
        }
    } else if newstate == TCP_FIN_WAIT2 || newstate == TCP_CLOSE_WAIT {
        // States a connection can rest in for as long as its peer or its
        // application waits: seen at the next snapshot, not at the next
        // full refresh. (Set after this tracepoint: user space refreshes
        // a touched socket at two snapshots in a row.)
        touch::touch(sk);
    } else if newstate == TCP_ESTABLISHED
        && kernel::fill_established()
        && kernel::ready()
        && let Some(st) = conn::lookup(sk)
    {
        let tp = M::tcp_sock(sk);
        // SAFETY: `st` points at a live map value.
        unsafe {
            if tp != 0 && conn::incomplete(&(*st).tuple) {
                conn::read_endpoints::<M>(tp as *const u8, &mut (*st).tuple);
            }
            (*st).state = TCP_ESTABLISHED;
        }
        touch::touch_record(st, sk);
    }
}

/// After the lazy walk (`kernel::lazy`), a connection open before start
/// may have no record: it gets one as it leaves ESTABLISHED (its state
/// shows from here on; user space rebases its counters on the walk's
/// baseline), touched for the diagnostics' refresh. A lookup per
/// connection end, on those hosts only.
#[inline(always)]
fn leaving_established<M: Mem>(sk: u64, newstate: u8) {
    if sk == 0 || !kernel::ready() || !kernel::lazy() || conn::lookup(sk).is_some() {
        return;
    }
    let tp = sock::tcp_sock::<M>(sk);
    if tp == 0 {
        return;
    }
    // The socket still says ESTABLISHED: its send sequence holds no FIN
    // yet, whatever comes next (a reset sends none).
    if let Some(st) = conn::start_existing_fin::<M>(tp as *const u8, newstate, (0, 0), false) {
        touch::touch_record(st, sk);
    }
}
