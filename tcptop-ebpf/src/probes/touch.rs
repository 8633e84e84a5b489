//! What moves a connection's numbers without a call the hooks count, for
//! touched sockets (`touch.rs`, the diagnostics' refresh path); and a read
//! of an idle connection the lazy walk left without a record, whose record
//! it makes (`conn::lazy_record`: the read program is attached on either
//! refresh path when the walk did). Raw tracepoints: the socket pointer is
//! all they take.
//!
//! - `tcp:tcp_retransmit_skb` (Linux 4.15+): a retransmit, also on a
//!   connection idle for the application (its peer gone quiet, a FIN
//!   resent from FIN_WAIT1 or LAST_ACK).
//! - `tcp:tcp_rcv_space_adjust` (Linux 4.16+): fired by every read of a
//!   socket's receive queue, recvmsg, splice() (tcp_read_sock) and
//!   TCP_ZEROCOPY_RECEIVE alike: the reads no call hook sees.

use aya_ebpf::{macros::raw_tracepoint, programs::RawTracePointContext};

use crate::{conn, kernel::Probe, touch};

#[raw_tracepoint(tracepoint = "tcp_retransmit_skb")]
pub fn tcp_retransmit_skb(ctx: RawTracePointContext) -> i32 {
    touch::touch(ctx.arg::<u64>(0));
    0
}

#[raw_tracepoint(tracepoint = "tcp_rcv_space_adjust")]
pub fn tcp_rcv_space_adjust(ctx: RawTracePointContext) -> i32 {
    let sk = ctx.arg::<u64>(0);
    conn::lazy_record::<Probe>(sk);
    touch::touch_read(sk);
    0
}
