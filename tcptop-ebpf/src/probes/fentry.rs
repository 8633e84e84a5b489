//! The "fentry" hook set: fexit programs on the TCP send/receive functions
//! (BTF tracing programs, Linux 5.5+; on kernels before 6.3 these replace
//! the sock_send_length/sock_recv_length tracepoints).
//!
//! - `int tcp_sendmsg(struct sock *sk, struct msghdr *msg, size_t size)`
//! - `int tcp_sendpage(struct sock *sk, struct page *page, int offset,
//!   size_t size, int flags)` (sendfile/splice before Linux 6.5)
//! - `int tcp_recvmsg(struct sock *sk, struct msghdr *msg, size_t len,
//!   [int nonblock,] int flags[, int *addr_len])`: `nonblock` before 5.19,
//!   `addr_len` until 6.16; the argument count comes from user space (BTF).
//!
//! fexit sees the return value: the bytes moved by the call, exactly once.
//! Its arguments are BTF-typed, so fields are read directly (`kernel::Direct`).
//! (Receive accounting through `tcp_cleanup_rbuf` would count bytes more
//! than once; per-call return values do not.)

use aya_ebpf::{macros::fexit, programs::FExitContext};

use crate::conn;
use crate::kernel::Direct;

#[fexit(function = "tcp_sendmsg")]
pub fn fexit_tcp_sendmsg(ctx: FExitContext) -> i32 {
    let sk: u64 = ctx.arg(0);
    let ret = ctx.arg::<u64>(3) as i32 as i64;
    conn::on_io::<Direct>(sk, ret, 0, true);
    0
}

#[fexit(function = "tcp_sendpage")]
pub fn fexit_tcp_sendpage(ctx: FExitContext) -> i32 {
    let sk: u64 = ctx.arg(0);
    let ret = ctx.arg::<u64>(5) as i32 as i64;
    conn::on_io::<Direct>(sk, ret, 0, true);
    0
}

// One program per argument layout: the return value sits right after the
// arguments, and reading past them is rejected by the verifier, so user space
// loads the one matching the kernel's BTF (see `recv_ret_arg`).

/// `tcp_recvmsg(sk, msg, len, flags)` (6.16+)
#[fexit(function = "tcp_recvmsg")]
pub fn fexit_tcp_recvmsg4(ctx: FExitContext) -> i32 {
    recv(ctx.arg(0), ctx.arg::<u64>(3), ctx.arg::<u64>(4))
}

/// `tcp_recvmsg(sk, msg, len, flags, addr_len)` (5.19 to 6.15)
#[fexit(function = "tcp_recvmsg")]
pub fn fexit_tcp_recvmsg5(ctx: FExitContext) -> i32 {
    recv(ctx.arg(0), ctx.arg::<u64>(3), ctx.arg::<u64>(5))
}

/// `tcp_recvmsg(sk, msg, len, nonblock, flags, addr_len)` (before 5.19)
#[fexit(function = "tcp_recvmsg")]
pub fn fexit_tcp_recvmsg6(ctx: FExitContext) -> i32 {
    recv(ctx.arg(0), ctx.arg::<u64>(4), ctx.arg::<u64>(6))
}

#[inline(always)]
fn recv(sk: u64, flags: u64, ret: u64) -> i32 {
    conn::on_io::<Direct>(sk, ret as i32 as i64, flags as i32 as i64, false);
    0
}
