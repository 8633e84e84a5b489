//! `iter/task_file`: the kernel's iterator over every process's open
//! files, run by user space once at start-up (Linux 5.8+), after the
//! hooks are attached, to name the owners of sockets opened before
//! tcptop started.
//!
//! For each socket file it writes an [`Owned`]: the socket's inode number
//! (what `/proc/<pid>/fd` links show as `socket:[N]`), the process id and
//! the task's name. The kernel walks the descriptor tables in place; /proc
//! made a dentry and an inode per descriptor for the listing and resolved
//! each link again (half of tcptop's start-up CPU at 200,000 sockets).
//! Threads that share their process's table are skipped by the kernel;
//! a thread with a table of its own (unshare(CLONE_FILES)) is walked too.
//!
//! `tcptop_owners_typed` (Linux 5.11+, direct loads where it can) and
//! `tcptop_owners_adopt` (probe reads only, for older kernels) also adopt
//! each TCP connection it finds, as the TCP iterator does (`adopt.rs`),
//! named after the first process holding it (the walk goes in process id
//! order, so the lowest, as /proc's scan picks), and marks each TCP socket
//! the kernel counts in its namespace's `inuse` (hashed: listening or
//! connected) with that namespace. Where every such socket of a namespace
//! is held by a file, user space needs no TCP iterator walk of it: that
//! walk visits every socket of the machine to find one namespace's, once
//! per namespace.

use aya_ebpf::bindings::seq_file;
use aya_ebpf::helpers::{bpf_seq_write, bpf_sock_from_file};
use aya_ebpf::{macros::map, maps::PerCpuArray};
use tcptop_common::{ConnStats, Owned, Standing, TCP_CLOSE, TCP_ESTABLISHED};

use super::adopt::connection;
use crate::kernel::{self, Direct, Mem, Probe, Windowed, off};
use crate::{conn, sock};

/// `struct bpf_iter__task_file`, the program's context.
#[repr(C)]
pub struct IterTaskFile {
    /// `struct bpf_iter_meta *`, whose first member is the `seq_file`.
    meta: u64,
    /// `struct task_struct *`, NULL at the end of the walk.
    task: u64,
    fd: u32,
    _pad: u32,
    /// `struct file *`.
    file: u64,
}

/// aya-ebpf has no attribute for iterator programs: the section name is
/// what the loader and the kernel go by.
#[unsafe(link_section = "iter/task_file")]
#[unsafe(no_mangle)]
pub extern "C" fn tcptop_owners(ctx: *const IterTaskFile) -> i32 {
    run(ctx, false)
}

/// The same walk, adopting each TCP connection held by a file (see the
/// module's documentation).
#[unsafe(link_section = "iter/task_file")]
#[unsafe(no_mangle)]
pub extern "C" fn tcptop_owners_adopt(ctx: *const IterTaskFile) -> i32 {
    run(ctx, true)
}

#[inline(always)]
fn run(ctx: *const IterTaskFile, adopt: bool) -> i32 {
    let Some((task, file)) = task_file(ctx) else {
        return 0;
    };
    // Typed pointers: plain numbers for probe reads at offsets.
    let (task, file) = (kernel::launder(task), kernel::launder(file));
    let Some((socket, inode)) = socket_inode(file) else {
        return 0;
    };
    let mut out = Owned {
        inode,
        sk: Probe::read::<u64>(socket as *const u8, off!(socket_sk)).unwrap_or(0),
        tgid: Probe::read::<u32>(task as *const u8, off!(task_tgid)).unwrap_or(0),
        netns: 0,
        comm: leader_comm(task),
    };
    if out.tgid == 0 {
        return 0;
    }
    if adopt {
        out.netns = adopt_held::<Probe>(out.sk, out.tgid, &out.comm);
    }
    write(ctx, &mut out);
    0
}

/// The adopting walk with typed pointers (Linux 5.11+: `bpf_sock_from_file`):
/// the file, its socket, its `struct sock` and the task are read with
/// direct loads, and only the fields past `struct sock` (ports, TCP
/// counters) with probe reads (`Mixed`): 13 probe reads a connection
/// instead of 35, which were a fifth of start-up at 200,000 sockets; 5
/// where the kernel's layout lets one read copy the TCP counters
/// (`Windowed`).
#[unsafe(link_section = "iter/task_file")]
#[unsafe(no_mangle)]
pub extern "C" fn tcptop_owners_typed(ctx: *const IterTaskFile) -> i32 {
    let Some((task, file)) = task_file(ctx) else {
        return 0;
    };
    // SAFETY: `file` is the context's typed file, not NULL; the helper
    // returns NULL for a file that is not a socket's.
    let socket = unsafe { bpf_sock_from_file(file as *mut _) } as u64;
    if socket == 0 {
        return 0;
    }
    let inode = match Direct::read::<u64>(file as *const u8, off!(file_inode)) {
        Ok(i) if i != 0 => Direct::read::<u64>(i as *const u8, off!(inode_ino)).unwrap_or(0),
        _ => 0,
    };
    let tgid = Direct::read::<u32>(task as *const u8, off!(task_tgid)).unwrap_or(0);
    if inode == 0 || tgid == 0 {
        return 0;
    }
    let comm = match Direct::read::<u64>(task as *const u8, off!(task_group_leader)) {
        Ok(leader) if leader != 0 => kernel::read16::<Direct>(leader as *const u8, off!(task_comm)),
        _ => [0; 16],
    };
    let sk = Direct::read::<u64>(socket as *const u8, off!(socket_sk)).unwrap_or(0);
    let netns = adopt_held::<Windowed>(sk, tgid, &comm);
    let mut out = Owned {
        inode,
        // A plain number for user space (the typed pointer stays here).
        sk: kernel::launder(sk),
        tgid,
        netns,
        comm,
    };
    write(ctx, &mut out);
    0
}

/// This CPU's record of the lazy walk, built in place (208 bytes: too
/// much beside the walk's own on the 512-byte stack).
#[map(name = "STANDING")]
static STANDING: PerCpuArray<Standing> = PerCpuArray::with_max_entries(1, 0);

/// The typed walk that leaves records out (Linux 6.1+, where the
/// connection table is allocated as records come): for a TCP connection
/// a process holds and no record has, it writes the record the other
/// walks insert (named after this holder) after the [`Owned`] part of a
/// [`Standing`]; user space shows it as it is until the connection does
/// something, and the hooks make its record then (a call, its way out of
/// ESTABLISHED). A socket held by several processes is written for each;
/// user space keeps the first (the walk goes in process id order).
#[unsafe(link_section = "iter/task_file")]
#[unsafe(no_mangle)]
pub extern "C" fn tcptop_owners_lazy(ctx: *const IterTaskFile) -> i32 {
    let Some((task, file)) = task_file(ctx) else {
        return 0;
    };
    // SAFETY: as in `tcptop_owners_typed`.
    let socket = unsafe { bpf_sock_from_file(file as *mut _) } as u64;
    if socket == 0 {
        return 0;
    }
    let inode = match Direct::read::<u64>(file as *const u8, off!(file_inode)) {
        Ok(i) if i != 0 => Direct::read::<u64>(i as *const u8, off!(inode_ino)).unwrap_or(0),
        _ => 0,
    };
    let tgid = Direct::read::<u32>(task as *const u8, off!(task_tgid)).unwrap_or(0);
    if inode == 0 || tgid == 0 {
        return 0;
    }
    let Some(rec) = STANDING.get_ptr_mut(0) else {
        return 0;
    };
    // SAFETY: this CPU's slot; iterator programs do not nest.
    let rec = unsafe { &mut *rec };
    let comm = match Direct::read::<u64>(task as *const u8, off!(task_group_leader)) {
        Ok(leader) if leader != 0 => kernel::read16::<Direct>(leader as *const u8, off!(task_comm)),
        _ => [0; 16],
    };
    let sk = Direct::read::<u64>(socket as *const u8, off!(socket_sk)).unwrap_or(0);
    rec.stats.origin = 0;
    let netns = standing_held::<Windowed>(sk, tgid, &comm, &mut rec.stats);
    rec.owned = Owned {
        inode,
        sk: kernel::launder(sk),
        tgid,
        netns,
        comm,
    };
    let seq = seq_of(ctx);
    // SAFETY: `rec` is this CPU's map value, its size given.
    unsafe {
        bpf_seq_write(
            seq as *mut seq_file,
            (rec as *mut Standing).cast(),
            core::mem::size_of::<Standing>() as u32,
        );
    }
    0
}

/// [`adopt_held`] for the lazy walk: a connection without a record is
/// written into `stats` (its `origin` set) instead of inserted; one with
/// a record is named as there.
#[inline(always)]
fn standing_held<M: Mem>(sk: u64, tgid: u32, comm: &[u8; 16], stats: &mut ConnStats) -> u32 {
    if sk == 0 || sock::kind::<M>(sk as *const u8) != sock::Kind::Tcp {
        return 0;
    }
    let state = M::read::<u8>(sk as *const u8, off!(skc_state)).unwrap_or(0);
    if state == 0 || state == TCP_CLOSE {
        return 0;
    }
    // Only an established connection stands without a record: one in any
    // other state (a connect() in progress, its endpoints not all known;
    // one closing, whose next state changes make no record) is adopted
    // now, as the eager walks do. Few are.
    if connection(state) && state != TCP_ESTABLISHED {
        M::prepare(sk);
        if let Some(netns) = conn::adopt_named::<M>(sk as *const u8, state, tgid, comm) {
            return netns;
        }
    } else if connection(state) {
        match conn::lookup(sk) {
            Some(p) => conn::name_if_unowned(p, tgid, comm),
            None => {
                M::prepare(sk);
                conn::existing_into::<M>(stats, sk as *const u8, state, (0, 0), true);
                stats.pid = tgid;
                stats.comm = *comm;
                return stats.tuple.netns;
            }
        }
    }
    sock::netns::<M>(sk as *const u8)
}

/// The context's task and file (typed pointers), None at the end of the
/// walk or before user space is ready.
#[inline(always)]
fn task_file(ctx: *const IterTaskFile) -> Option<(u64, u64)> {
    // SAFETY: the kernel passes its context; the verifier checks the loads.
    let (task, file) = unsafe {
        (
            core::ptr::read_volatile(&raw const (*ctx).task),
            core::ptr::read_volatile(&raw const (*ctx).file),
        )
    };
    (task != 0 && file != 0 && kernel::ready()).then_some((task, file))
}

/// The walk's `seq_file` (a typed pointer: the helper takes only that).
#[inline(always)]
fn seq_of(ctx: *const IterTaskFile) -> u64 {
    // SAFETY: the kernel passes its context; the verifier checks both loads.
    unsafe {
        let meta = core::ptr::read_volatile(&raw const (*ctx).meta) as *const u64;
        core::ptr::read_volatile(meta)
    }
}

/// Writes `out` to the walk's output.
#[inline(always)]
fn write(ctx: *const IterTaskFile, out: &mut Owned) {
    let seq = seq_of(ctx);
    // A full buffer: the kernel runs this program again for this file in
    // the next read.
    // SAFETY: `out` is on our stack, its size given.
    unsafe {
        bpf_seq_write(
            seq as *mut seq_file,
            (out as *mut Owned).cast(),
            core::mem::size_of::<Owned>() as u32,
        );
    }
}

/// Adopts the TCP connection `sk` (the socket of a file held by `tgid`,
/// named `comm`) unless it has a record, named after that process unless
/// a call named it; the socket's namespace (inode number) if it is a TCP
/// socket the kernel counts as in use there (listening or connected), 0
/// for anything else.
///
/// No helper takes the socket: reached from a file, it is untrusted to
/// 6.18's verifier (`bpf_skc_to_tcp_sock` refuses it), so its kind is
/// checked by reads. The file holds the socket for the program's run.
#[inline(always)]
fn adopt_held<M: Mem>(sk: u64, tgid: u32, comm: &[u8; 16]) -> u32 {
    if sk == 0 || sock::kind::<M>(sk as *const u8) != sock::Kind::Tcp {
        return 0;
    }
    let state = M::read::<u8>(sk as *const u8, off!(skc_state)).unwrap_or(0);
    if state == 0 || state == TCP_CLOSE {
        return 0;
    }
    if connection(state) {
        M::prepare(sk);
        if let Some(netns) = conn::adopt_named::<M>(sk as *const u8, state, tgid, comm) {
            return netns;
        }
    }
    sock::netns::<M>(sk as *const u8)
}

/// The name of `task`'s thread group leader: the process name `ps` shows,
/// as the hooks name a caller (`kernel::leader_comm`).
#[inline(always)]
fn leader_comm(task: u64) -> [u8; 16] {
    match Probe::read::<u64>(task as *const u8, off!(task_group_leader)) {
        Ok(leader) if leader != 0 => kernel::read16::<Probe>(leader as *const u8, off!(task_comm)),
        _ => [0; 16],
    }
}

/// The `struct socket` and inode number of `file` if it is a socket's
/// file: its private data is a `struct socket` whose `file` points back
/// to it (a file opened with O_PATH on a socket's path in a filesystem is
/// not one).
#[inline(always)]
fn socket_inode(file: u64) -> Option<(u64, u64)> {
    let read_ptr = |base: u64, offset: usize| -> u64 {
        if base == 0 {
            0
        } else {
            Probe::read::<u64>(base as *const u8, offset).unwrap_or(0)
        }
    };
    let socket = read_ptr(file, off!(file_private_data));
    if socket == 0 || read_ptr(socket, off!(socket_file)) != file {
        return None;
    }
    let inode = read_ptr(file, off!(file_inode));
    match read_ptr(inode, off!(inode_ino)) {
        0 => None,
        ino => Some((socket, ino)),
    }
}
