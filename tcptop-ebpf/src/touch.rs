//! Touched sockets: where the kernel refused the map iterator, user space
//! refreshes a record from the socket diagnostics only when something may
//! have changed it, instead of dumping every connection of every namespace
//! at each snapshot (at 200,000 sockets, ~0.8 s of CPU a snapshot). The
//! programs put such a socket into the `TOUCHED` ring: a call (once per
//! record per generation: user space advances the generation at each
//! snapshot), a record completed at ESTABLISHED, a connect() begun, a
//! state a connection can rest in (FIN_WAIT2, CLOSE_WAIT), a retransmit, a
//! read by any path (splice, zero-copy). Only with `SETTING_TOUCH`.
//!
//! A touch that does not fit is counted (`TouchCpu::lost`), and then the
//! next snapshot refreshes every record, as without touches. So is every
//! touch left out after one did not fit (in the same generation, on the
//! same CPU): the snapshot that saw the first loss may have read its
//! records already.

use aya_ebpf::{
    bindings::BPF_RB_NO_WAKEUP,
    macros::map,
    maps::{PerCpuArray, RingBuf},
};
use tcptop_common::{ConnStats, TOUCHED_BYTES, TouchCpu};

use crate::kernel;

#[map(name = "TOUCHED")]
static TOUCHED: RingBuf = RingBuf::with_byte_size(TOUCHED_BYTES, 0);

#[map(name = "TOUCH_CPU")]
static TOUCH_CPU: PerCpuArray<TouchCpu> = PerCpuArray::with_max_entries(1, 0);

/// Puts `sk` into the ring (generation `generation`), unless this CPU
/// already lost one in this generation; a touch not put is counted.
///
/// Each one left out is counted, not only the first: the snapshot that
/// advanced to this generation reads the count after that, and may have
/// seen the first loss (and refreshed every record at once), while a touch
/// left out after its refresh would be seen by nothing until the full
/// refresh a minute later (`reads_after_a_counted_loss_are_refreshed` in
/// `tcptop/tests/kernel.rs`; seen once in a 6.1 guest as 8 of 400 rows
/// stuck at their old counts).
#[inline(always)]
fn put(sk: u64, generation: u32) {
    let Some(cpu) = TOUCH_CPU.get_ptr_mut(0) else {
        return;
    };
    let lost_gen = u64::from(generation) + 1;
    // SAFETY: per-CPU slot. A program interrupting this one on the same
    // CPU (softirq) may write it too: the worst is a lost count of one
    // touch or a second put, never a lost put counted as done.
    unsafe {
        // (No attempt while this CPU's ring space is known to be gone.)
        if (*cpu).lost_gen == lost_gen || TOUCHED.output(&sk, BPF_RB_NO_WAKEUP as u64).is_err() {
            (*cpu).lost += 1;
            (*cpu).lost_gen = lost_gen;
        }
    }
}

/// Touches `sk` (no record at hand, or one whose change must be seen
/// whatever was touched before: a state change).
#[inline(always)]
pub fn touch(sk: u64) {
    if let Some(generation) = kernel::touch_gen() {
        put(sk, generation);
    }
}

/// Touches the socket `sk` of record `st` once per generation (a call:
/// its counters moved).
#[inline(always)]
pub fn touch_record(st: *mut ConnStats, sk: u64) {
    let Some(generation) = kernel::touch_gen() else {
        return;
    };
    // SAFETY: `st` points at a live map value. Two CPUs may both see an
    // old generation: the socket is put twice, which user space merges.
    unsafe {
        if (*st).touched == generation {
            return;
        }
        (*st).touched = generation;
    }
    put(sk, generation);
}

/// Touches `sk` for a read (any path), once per generation while this CPU
/// reads the same socket (the tracepoint fires at every receive call).
#[inline(always)]
pub fn touch_read(sk: u64) {
    let Some(generation) = kernel::touch_gen() else {
        return;
    };
    let Some(cpu) = TOUCH_CPU.get_ptr_mut(0) else {
        return;
    };
    let read_gen = u64::from(generation) + 1;
    // SAFETY: per-CPU slot (see `put`).
    unsafe {
        if (*cpu).read_sk == sk && (*cpu).read_gen == read_gen {
            return;
        }
        (*cpu).read_sk = sk;
        (*cpu).read_gen = read_gen;
    }
    put(sk, generation);
}
