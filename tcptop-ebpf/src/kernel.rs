//! Reading kernel memory at offsets computed by user space from BTF.
//!
//! Rust eBPF has no CO-RE relocations, so every kernel struct field is read
//! at an offset from the `OFFSETS` global, which user space fills in from
//! `/sys/kernel/btf/vmlinux` before loading. How it is read depends on what
//! the verifier knows about the pointer ([`Mem`]).

use aya_ebpf::helpers::generated;
use aya_ebpf::helpers::{
    bpf_get_current_cgroup_id, bpf_get_current_task, bpf_probe_read_kernel, bpf_skc_to_tcp_sock,
};
use aya_ebpf::{
    macros::map,
    maps::{Array, PerCpuArray},
};
use tcptop_common::{
    Config, Offsets, SETTING_FILL_ESTABLISHED, SETTING_LAZY_READS, SETTING_TOUCH,
    SETTING_TOUCH_GEN, SETTINGS_LEN, TCP_WINDOW_MAX,
};

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
    recv_ret_arg: 0,
    msghdr_name: 0,
    tcp_bytes_acked: 0,
    tcp_bytes_received: 0,
    tcp_write_seq: 0,
    tcp_snd_una: 0,
    tcp_rcv_nxt: 0,
    tcp_copied_seq: 0,
    sk_flags: 0,
    sock_done_bit: 0,
    sk_socket: 0,
    socket_file: 0,
    file_inode: 0,
    inode_ino: 0,
    file_private_data: 0,
    task_tgid: 0,
    socket_sk: 0,
    sock_size: 0,
    tcp_window: 0,
    tcp_window_len: 0,
};

/// Reads one offset from the read-only global (volatile, so the compiler
/// does not fold the all-zero initialiser that user space overrides).
macro_rules! off {
    ($field:ident) => {
        // SAFETY: a read of a field of a static, which lives for ever.
        unsafe { core::ptr::read_volatile(&crate::kernel::offsets().$field) } as usize
    };
}
pub(crate) use off;

#[inline(always)]
pub fn offsets() -> &'static Offsets {
    &OFFSETS
}

/// What user space decided at load (frozen, read-only like `OFFSETS`).
#[unsafe(no_mangle)]
static CONFIG: Config = Config {
    ready: 0,
    udp: 0,
    bench_skip: 0,
    lazy: 0,
};

/// One field of `CONFIG` (volatile, as `off!`).
macro_rules! config {
    ($field:ident) => {
        // SAFETY: a read of a static's field.
        unsafe { core::ptr::read_volatile(&CONFIG.$field) }
    };
}

#[inline(always)]
pub fn ready() -> bool {
    config!(ready) != 0
}

/// Whether the benchmark instrument leaves out `part` (`SKIP_*`; user
/// space sets `bench_skip` only in builds with its `bench-switches`
/// feature or debug assertions, 0 otherwise). In normal use: a load from the global `ready` was just read from, a mask and a
/// branch never taken (the verifier keeps them: bpftool shows 4 more
/// instructions in the send program).
#[inline(always)]
pub fn skips(part: u32) -> bool {
    config!(bench_skip) & part != 0
}

/// Run-time settings user space may change after load (`SETTING_*`).
#[map(name = "SETTINGS")]
static SETTINGS: Array<u32> = Array::with_max_entries(SETTINGS_LEN, 0);

/// Whether records are completed at ESTABLISHED (no map iterator).
#[inline(always)]
pub fn fill_established() -> bool {
    SETTINGS
        .get(0)
        .is_some_and(|v| *v & SETTING_FILL_ESTABLISHED != 0)
}

/// Whether a socket the lazy walk left without a record gets one when a
/// read or retransmit tracepoint sees it (`SETTING_LAZY_READS`).
#[inline(always)]
pub fn lazy_reads() -> bool {
    ready()
        && SETTINGS
            .get(0)
            .is_some_and(|v| *v & SETTING_LAZY_READS != 0)
}

/// Whether a connection open before start may have no record (the lazy
/// walk: `Config::lazy`).
#[inline(always)]
pub fn lazy() -> bool {
    config!(lazy) != 0
}

/// The touch generation, when touched sockets are put into the
/// `TOUCHED` ring (`SETTING_TOUCH`: the diagnostics' refresh path).
#[inline(always)]
pub fn touch_gen() -> Option<u32> {
    let on = ready() && SETTINGS.get(0).is_some_and(|v| *v & SETTING_TOUCH != 0);
    if !on {
        return None;
    }
    SETTINGS.get(SETTING_TOUCH_GEN).copied()
}

/// Whether UDP flows are counted (not `--tcp`).
#[inline(always)]
pub fn udp_enabled() -> bool {
    config!(udp) != 0
}

/// How a program reads kernel memory.
///
/// A raw tracepoint, kprobe or cgroup program holds kernel pointers as plain
/// numbers: every field costs a `bpf_probe_read_kernel` call ([`Probe`]).
/// A BTF-typed program (tp_btf, fexit) gets pointers the verifier knows the
/// type of: a field is one load instruction, which the verifier checks
/// against the kernel's BTF and the JIT makes fault-safe ([`Direct`]). The
/// offsets come from a frozen read-only global, so the verifier sees them as
/// constants. Pointers read out of a structure stay typed, so chains
/// (`sk->skc_net->ns.inum`) stay direct.
pub trait Mem {
    /// The `T` at `base + offset` (`T` a primitive, or an array of them
    /// within one field).
    fn read<T: Copy>(base: *const u8, offset: usize) -> Result<T, i32>;
    /// `sk` as a `struct tcp_sock` pointer, or 0 when it is not a full TCP
    /// socket. Direct reads of fields past `struct sock` (ports, TCP
    /// counters) need this type; probe reads do not care, and the socket
    /// kind is checked in `sock::tcp_sock` either way.
    fn tcp_sock(sk: u64) -> u64;
    /// `p` as a plain number that [`Probe`] reads can take offsets from.
    fn plain(p: u64) -> u64;
    /// The `T` at `base + offset` read from the kernel's memory again,
    /// never from a copy: a value that may have moved since it was read
    /// first (`conn::read_app`).
    #[inline(always)]
    fn again<T: Copy>(base: *const u8, offset: usize) -> Result<T, i32> {
        Self::read(base, offset)
    }
    /// Called before the counters of the TCP socket `sk` are read at
    /// once (a connection adopted).
    #[inline(always)]
    fn prepare(_sk: u64) {}
    /// Whether a pointer read out of a structure is followed with direct
    /// loads (`sock::netns`). The verifier checks each direct load of a
    /// pointer field from a trusted pointer by looking up the type's
    /// `__safe_trusted` and `__safe_rcu` variants by name, a linear search
    /// of the kernel's BTF, at every path that reaches it: in the send and
    /// receive programs, half their load time (13 ms each on 6.18), for a
    /// read made only when a record is made. The owners' walk makes it for
    /// every socket, in one program: there the loads are worth it.
    const FOLLOW_POINTERS: bool = false;
}

/// Kernel memory through `bpf_probe_read_kernel`.
pub enum Probe {}

impl Mem for Probe {
    #[inline(always)]
    fn read<T: Copy>(base: *const u8, offset: usize) -> Result<T, i32> {
        // SAFETY: bpf_probe_read_kernel validates the address; a bad
        // pointer yields an error, never a fault.
        unsafe { bpf_probe_read_kernel(base.wrapping_add(offset).cast::<T>()) }
    }

    #[inline(always)]
    fn tcp_sock(sk: u64) -> u64 {
        sk
    }

    #[inline(always)]
    fn plain(p: u64) -> u64 {
        p
    }
}

/// Kernel memory through plain loads from BTF-typed pointers.
pub enum Direct {}

impl Mem for Direct {
    #[inline(always)]
    fn read<T: Copy>(base: *const u8, offset: usize) -> Result<T, i32> {
        // SAFETY: the verifier has checked this load against the pointer's
        // BTF type (a field of it, within bounds), and the JIT turns it into
        // a load that yields zero instead of faulting on a bad address.
        Ok(unsafe { core::ptr::read_volatile(base.wrapping_add(offset).cast::<T>()) })
    }

    #[inline(always)]
    fn tcp_sock(sk: u64) -> u64 {
        // SAFETY: `sk` is a BTF-typed socket pointer from the program's
        // arguments; the helper checks it (full socket, TCP, stream).
        unsafe { bpf_skc_to_tcp_sock(sk as *mut _) as u64 }
    }

    #[inline(always)]
    fn plain(p: u64) -> u64 {
        launder(p)
    }
}

/// Kernel memory through a typed `struct sock` pointer the helpers may not
/// take (6.18's verifier calls one reached from a file untrusted): fields
/// within `struct sock` (its `sock_common`, protocol, type) are direct
/// loads, fields past it (the ports of `inet_sock`, the counters of
/// `tcp_sock`) probe reads. `sock_size` is a constant to the verifier, so
/// each read is checked as one or the other, never both.
pub enum Mixed {}

impl Mem for Mixed {
    const FOLLOW_POINTERS: bool = true;

    #[inline(always)]
    fn read<T: Copy>(base: *const u8, offset: usize) -> Result<T, i32> {
        if offset + core::mem::size_of::<T>() <= off!(sock_size) {
            Direct::read(base, offset)
        } else {
            Probe::read(base, offset)
        }
    }

    #[inline(always)]
    fn tcp_sock(sk: u64) -> u64 {
        // No helper takes it; `sock::tcp_sock` checks the kind by reads.
        sk
    }

    #[inline(always)]
    fn plain(p: u64) -> u64 {
        launder(p)
    }
}

/// This CPU's copy of one socket's TCP window ([`Windowed`]).
#[repr(C)]
pub struct Window {
    /// The socket copied from (0: none).
    sock: u64,
    bytes: [u64; TCP_WINDOW_MAX / 8],
}

#[map(name = "TCP_WINDOW")]
static TCP_WINDOW: PerCpuArray<Window> = PerCpuArray::with_max_entries(1, 0);

/// [`Mixed`], with the TCP window (`tcptop_common::tcp_window`): before a
/// connection is adopted ([`Mem::prepare`]), one probe read copies the
/// stretch of its `tcp_sock` that holds every counter it is baselined from
/// into this CPU's slot, and reads within that stretch are loads from the
/// copy. The owners' walk adopts every connection the machine holds: at
/// 200,000 cold sockets, one copy instead of nine probe reads at scattered
/// places saves ~60 ms of start-up CPU. Where user space found no window (the counters too
/// far apart, or in an order a copy from low addresses up would read
/// wrongly), every read is [`Mixed`]'s.
///
/// Only the owners' walk uses it, run by one thread: nothing writes the
/// slot between a copy and its reads. A read checks that the copy is of its
/// socket all the same.
pub enum Windowed {}

impl Windowed {
    /// Where the `size` bytes at `offset` in `base` are in this CPU's
    /// copy, if they are.
    #[inline(always)]
    fn copied(base: *const u8, offset: usize, size: usize) -> Option<*const u8> {
        let (start, len) = (off!(tcp_window), off!(tcp_window_len));
        if offset < start || offset + size > start + len || len > TCP_WINDOW_MAX {
            return None;
        }
        let w = TCP_WINDOW.get_ptr(0)?;
        // SAFETY: this CPU's slot, a map value; the offset is within its
        // bytes (checked above, and by the verifier, to which the offsets
        // are constants).
        unsafe {
            if (*w).sock != base as u64 {
                return None;
            }
            Some((&raw const (*w).bytes).cast::<u8>().add(offset - start))
        }
    }
}

impl Mem for Windowed {
    const FOLLOW_POINTERS: bool = true;

    #[inline(always)]
    fn read<T: Copy>(base: *const u8, offset: usize) -> Result<T, i32> {
        match Self::copied(base, offset, core::mem::size_of::<T>()) {
            // SAFETY: within the copy (above); the window starts at a
            // multiple of 8 and each field is at its natural alignment.
            Some(p) => Ok(unsafe { core::ptr::read(p.cast::<T>()) }),
            None => Mixed::read(base, offset),
        }
    }

    #[inline(always)]
    fn again<T: Copy>(base: *const u8, offset: usize) -> Result<T, i32> {
        Mixed::read(base, offset)
    }

    #[inline(always)]
    fn prepare(sk: u64) {
        let (start, len) = (off!(tcp_window), off!(tcp_window_len));
        if len == 0 || len > TCP_WINDOW_MAX {
            return;
        }
        let Some(w) = TCP_WINDOW.get_ptr_mut(0) else {
            return;
        };
        // SAFETY: this CPU's slot; `len` bytes fit in it (checked above).
        // bpf_probe_read_kernel validates the source: a bad address leaves
        // the slot unused (its socket 0), never a fault.
        unsafe {
            (*w).sock = 0;
            let done = generated::bpf_probe_read_kernel(
                (&raw mut (*w).bytes).cast(),
                len as u32,
                (sk as *const u8).wrapping_add(start).cast(),
            );
            if done == 0 {
                (*w).sock = sk;
            }
        }
    }

    #[inline(always)]
    fn tcp_sock(sk: u64) -> u64 {
        Mixed::tcp_sock(sk)
    }

    #[inline(always)]
    fn plain(p: u64) -> u64 {
        Mixed::plain(p)
    }
}

/// The 16 bytes at `base + offset` (an IPv6 address, a task name), as two
/// 8-byte loads (a direct read must be a primitive width); zeros if
/// unreadable.
#[inline(always)]
pub fn read16<M: Mem>(base: *const u8, offset: usize) -> [u8; 16] {
    match M::read::<[u64; 2]>(base, offset) {
        // SAFETY: 16 bytes either way; any bit pattern is valid.
        Ok(w) => unsafe { core::mem::transmute::<[u64; 2], [u8; 16]>(w) },
        Err(_) => [0; 16],
    }
}

/// Name of the current thread group's leader: the process name `ps` shows.
///
/// Probe reads from `bpf_get_current_task` in every program, typed or not:
/// the typed current task (`bpf_get_current_task_btf`, direct loads) needs
/// Linux 5.11, and a program that calls a helper its kernel lacks does not
/// load (5.10: "invalid func unknown#158"). The cost is two probe-read
/// calls instead of two loads, some tens of nanoseconds, paid only when a
/// record's owner changes or its ~1 s epoch turns (`conn::set_owner`,
/// `udp::count`): once or twice per connection (its connect, a listener's
/// child's first call) and once a second per busy one, never per call.
#[inline(always)]
pub fn leader_comm() -> [u8; 16] {
    // SAFETY: helper without preconditions; the pointer is only read
    // through probe reads.
    let task = unsafe { bpf_get_current_task() } as *const u8;
    let leader: *const u8 = match Probe::read::<u64>(task, off!(task_group_leader)) {
        Ok(p) => p as *const u8,
        Err(_) => return [0; 16],
    };
    read16::<Probe>(leader, off!(task_comm))
}

/// The current task's cgroup (v2) id: the inode of its directory under the
/// cgroup2 mount, which user space resolves to a path and a workload. It
/// runs with the owner's name, so once a second per connection at most.
#[inline(always)]
pub fn current_cgroup() -> u64 {
    // SAFETY: helper without preconditions (Linux 4.18+, tracing programs).
    unsafe { bpf_get_current_cgroup_id() }
}

/// Turns a pointer the verifier types as a socket (no arithmetic allowed on
/// it) into a plain number, by copying it through the stack with a probe
/// read: `Probe::read` can then take field offsets from it. Needs the privileged
/// pointer-leak allowance (CAP_PERFMON), which tcptop has.
#[inline(always)]
pub fn launder(p: u64) -> u64 {
    let slot = core::hint::black_box(p);
    // SAFETY: reads our own stack slot.
    unsafe { bpf_probe_read_kernel(&raw const slot) }.unwrap_or(0)
}
