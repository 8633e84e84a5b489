//! Reading kernel memory at offsets computed by user space from BTF.
//!
//! Rust eBPF has no CO-RE relocations, so every kernel struct field is read
//! with `bpf_probe_read_kernel` at an offset from the `OFFSETS` global, which
//! user space fills in from `/sys/kernel/btf/vmlinux` before loading.

use aya_ebpf::helpers::{bpf_get_current_task, bpf_probe_read_kernel};
use tcptop_common::Offsets;

#[unsafe(no_mangle)]
static OFFSETS: Offsets = Offsets {
    skc_daddr: 0,
    skc_rcv_saddr: 0,
    skc_dport: 0,
    skc_num: 0,
    skc_family: 0,
    skc_state: 0,
    skc_v6_daddr: 0,
    skc_v6_rcv_saddr: 0,
    skc_net: 0,
    sk_protocol: 0,
    sk_type: 0,
    inet_sport: 0,
    net_ns_inum: 0,
    tcp_srtt_us: 0,
    tcp_segs_in: 0,
    tcp_segs_out: 0,
    tcp_total_retrans: 0,
    task_group_leader: 0,
    task_comm: 0,
    task_tgid: 0,
    recv_ret_arg: 0,
    ready: 0,
};

/// Reads one offset from the read-only global (volatile, so the compiler
/// does not fold the all-zero initialiser that user space overrides).
macro_rules! off {
    ($field:ident) => {
        unsafe { core::ptr::read_volatile(&crate::kernel::offsets().$field) } as usize
    };
}
pub(crate) use off;

#[inline(always)]
pub fn offsets() -> &'static Offsets {
    &OFFSETS
}

#[inline(always)]
pub fn ready() -> bool {
    off!(ready) != 0
}

/// Reads a `T` at `base + offset` in kernel memory.
#[inline(always)]
pub fn read<T>(base: *const u8, offset: usize) -> Result<T, i32> {
    // SAFETY: bpf_probe_read_kernel validates the address; a bad pointer
    // yields an error, never a fault.
    unsafe { bpf_probe_read_kernel(base.wrapping_add(offset).cast::<T>()) }
}

/// Name of the current thread group's leader: the process name `ps` shows.
#[inline(always)]
pub fn leader_comm() -> [u8; 16] {
    // SAFETY: returns the current task pointer; only read through probe reads.
    let task = unsafe { bpf_get_current_task() } as *const u8;
    let leader: *const u8 = match read::<u64>(task, off!(task_group_leader)) {
        Ok(p) => p as *const u8,
        Err(_) => return [0; 16],
    };
    read::<[u8; 16]>(leader, off!(task_comm)).unwrap_or([0; 16])
}

/// TGID of the current task, read from `task_struct` (for program types
/// without `bpf_get_current_pid_tgid`, e.g. cgroup skb on older kernels).
#[inline(always)]
pub fn current_tgid() -> u32 {
    // SAFETY: returns the current task pointer; only read through probe reads.
    let task = unsafe { bpf_get_current_task() } as *const u8;
    read::<u32>(task, off!(task_tgid)).unwrap_or(0)
}

/// Turns a pointer the verifier types as a socket (no arithmetic allowed on
/// it) into a plain number, by copying it through the stack with a probe
/// read: `read` can then take field offsets from it. Needs the privileged
/// pointer-leak allowance (CAP_PERFMON), which tcptop has.
#[inline(always)]
pub fn launder(p: u64) -> u64 {
    let slot = core::hint::black_box(p);
    // SAFETY: reads our own stack slot.
    unsafe { bpf_probe_read_kernel(&raw const slot) }.unwrap_or(0)
}
