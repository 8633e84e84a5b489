//! The "kprobe" hook set: kprobe/kretprobe pairs on the TCP send/receive
//! functions, for kernels with kprobes but without BTF tracing programs.
//! Same functions and signatures as the fentry set (see fentry.rs): the
//! entry probe saves the socket (and receive flags) per thread, the return
//! probe accounts the call's return value.

use core::hint::black_box;

use aya_ebpf::{
    helpers::bpf_get_current_pid_tgid,
    macros::{kprobe, kretprobe, map},
    maps::HashMap,
    programs::{ProbeContext, RetProbeContext},
};

use crate::{
    conn,
    kernel::{Probe, off},
};

/// Calls in flight: thread (pid_tgid) -> (sk, flags).
#[map(name = "INFLIGHT")]
static INFLIGHT: HashMap<u64, [u64; 2]> = HashMap::with_max_entries(16_384, 0);

#[inline(always)]
fn enter(sk: Option<u64>, flags: u64) {
    if let Some(sk) = sk {
        let _ = INFLIGHT.insert(&bpf_get_current_pid_tgid(), &[sk, flags], 0);
    }
}

#[inline(always)]
fn exit(ret: u64, tx: bool) {
    let tid = bpf_get_current_pid_tgid();
    // SAFETY: the value is copied out before the entry is removed.
    let Some(&[sk, flags]) = (unsafe { INFLIGHT.get(&tid) }) else {
        return;
    };
    let _ = INFLIGHT.remove(&tid);
    conn::on_io::<Probe>(sk, ret as i32 as i64, flags as i32 as i64, tx);
}

#[kprobe]
pub fn kprobe_tcp_sendmsg(ctx: ProbeContext) -> u32 {
    enter(ctx.arg::<u64>(0), 0);
    0
}

#[kretprobe]
pub fn kretprobe_tcp_sendmsg(ctx: RetProbeContext) -> u32 {
    exit(ctx.ret::<u64>(), true);
    0
}

#[kprobe]
pub fn kprobe_tcp_sendpage(ctx: ProbeContext) -> u32 {
    enter(ctx.arg::<u64>(0), 0);
    0
}

#[kretprobe]
pub fn kretprobe_tcp_sendpage(ctx: RetProbeContext) -> u32 {
    exit(ctx.ret::<u64>(), true);
    0
}

#[kprobe]
pub fn kprobe_tcp_recvmsg(ctx: ProbeContext) -> u32 {
    enter(ctx.arg::<u64>(0), recv_flags(&ctx));
    0
}

/// The `flags` argument of a `*_recvmsg(sk, msg, len, [nonblock,] flags,
/// ...)` entry (the layout of this kernel's `tcp_recvmsg`, which the UDP
/// functions share).
#[inline(always)]
pub fn recv_flags(ctx: &ProbeContext) -> u64 {
    // Read both candidates at constant offsets, then choose a value: left
    // alone, the compiler turns the choice into a variable offset into the
    // context (pt_regs), which the verifier rejects.
    let a3 = black_box(ctx.arg::<u64>(3));
    let a4 = black_box(ctx.arg::<u64>(4));
    let flags = if off!(recv_ret_arg) == 6 { a4 } else { a3 };
    flags.unwrap_or(0)
}

#[kretprobe]
pub fn kretprobe_tcp_recvmsg(ctx: RetProbeContext) -> u32 {
    exit(ctx.ret::<u64>(), false);
    0
}
