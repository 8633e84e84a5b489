//! `iter/tcp`: the kernel's TCP socket iterator, run by user space once per
//! network namespace at start-up (Linux 5.9+), after the hooks are attached.
//!
//! Every connection open before tcptop started gets its record here, with
//! its socket counters baselined (as at a first call): from then on the
//! map's own iterator (`iter.rs`) keeps its state, RTT, segments and
//! retransmits current, and its teardown sends its final record, even if
//! it never makes another call. Connections born since the hooks attached
//! have their record already (the insert leaves it as it is).
//!
//! The TCP iterator walks the namespace that creates it (user space enters
//! each one), listeners, request and TIME_WAIT sockets included. On Linux
//! 5.15+ it runs this program with the socket locked and skips sockets
//! already unhashed, so a socket adopted here cannot be torn down before
//! its record exists. Earlier kernels walk without the lock: a connection
//! torn down in the few instructions between the state read and the insert
//! leaves a record behind, which the next socket at that address replaces
//! (`conn::start_born`).

use aya_ebpf::bindings::seq_file;
use aya_ebpf::helpers::bpf_seq_write;
use tcptop_common::{Adopted, TCP_CLOSE, TCP_LISTEN, TCP_NEW_SYN_RECV, TCP_TIME_WAIT};

use crate::kernel::{self, Direct, Mem, Probe, off};
use crate::{conn, sock};

/// `struct bpf_iter__tcp`, the program's context.
#[repr(C)]
pub struct IterTcp {
    /// `struct bpf_iter_meta *`, whose first member is the `seq_file` the
    /// walk's output goes to: an [`Adopted`] per connection.
    meta: u64,
    /// `struct sock_common *`, NULL at the end of the walk.
    sk_common: u64,
    uid: u32,
}

/// aya-ebpf has no attribute for iterator programs: the section name is
/// what the loader and the kernel go by.
///
/// This one writes each adopted connection's record key and socket inode
/// (an [`Adopted`]): where the kernel refused the process files' iterator,
/// /proc's descriptor links name the owners by inode.
#[unsafe(link_section = "iter/tcp")]
#[unsafe(no_mangle)]
pub extern "C" fn tcptop_adopt_tcp(ctx: *const IterTcp) -> i32 {
    run(ctx, true)
}

/// The same adoption, writing nothing: the process files' iterator named
/// every socket's owner by its record key already (four probe reads and a
/// record per connection less).
#[unsafe(link_section = "iter/tcp")]
#[unsafe(no_mangle)]
pub extern "C" fn tcptop_adopt_only(ctx: *const IterTcp) -> i32 {
    run(ctx, false)
}

#[inline(always)]
fn run(ctx: *const IterTcp, write: bool) -> i32 {
    // SAFETY: the kernel passes its context; the verifier checks the load.
    let skc = unsafe { core::ptr::read_volatile(&raw const (*ctx).sk_common) };
    // The record from direct loads through the typed pointer (a probe
    // read per field cost a fifth of start-up at 200,000 sockets).
    if skc != 0 && kernel::ready() && adopt(skc) && write {
        // A plain number for probe reads at offsets (the pointers to the
        // socket's file are not all typed on every kernel).
        let sk = kernel::launder(skc);
        // The seq_file stays a typed pointer (the helper takes only that):
        // `meta->seq`, a direct load.
        // SAFETY: the kernel passes its context; the verifier checks both
        // loads.
        let seq = unsafe {
            let meta = core::ptr::read_volatile(&raw const (*ctx).meta) as *const u64;
            core::ptr::read_volatile(meta)
        };
        let out = Adopted {
            sk,
            inode: inode(sk),
        };
        // A full buffer: the kernel runs this program again for this
        // socket in the next read (the insert above keeps the record).
        // SAFETY: `out` is on our stack, its size given.
        unsafe {
            bpf_seq_write(
                seq as *mut seq_file,
                (&raw const out).cast(),
                core::mem::size_of::<Adopted>() as u32,
            );
        }
    }
    0
}

/// The inode number of the socket file holding `sk` (0 for a socket no
/// file holds, a kernel socket).
#[inline(always)]
fn inode(sk: u64) -> u64 {
    let read_ptr = |base: u64, offset: usize| -> u64 {
        if base == 0 {
            0
        } else {
            Probe::read::<u64>(base as *const u8, offset).unwrap_or(0)
        }
    };
    let socket = read_ptr(sk, off!(sk_socket));
    let file = read_ptr(socket, off!(socket_file));
    let inode = read_ptr(file, off!(file_inode));
    read_ptr(inode, off!(inode_ino))
}

/// Adopts `skc` (the iterator's typed `sock_common`) if it is a
/// connection; whether it is one (with a record now).
#[inline(always)]
fn adopt(skc: u64) -> bool {
    // The state first: TIME_WAIT and request sockets are only a
    // `sock_common`, whose other fields must not be read as a `sock`'s
    // (the typed conversion below also refuses them).
    let state = Direct::read::<u8>(skc as *const u8, off!(skc_state)).unwrap_or(0);
    if !connection(state) {
        return false;
    }
    let tp = sock::tcp_sock::<Direct>(skc);
    // A record already there is a connection born since the hooks
    // attached: it is kept. A full map is counted as a drop.
    tp != 0 && conn::start_existing::<Direct>(tp as *const u8, state, (0, 0)).is_some()
}

/// Whether a TCP socket in `state` is a connection to adopt: not a
/// listener, not closed, not one of the minimal sockets (TIME_WAIT, a
/// request) that are only a `sock_common`.
#[inline(always)]
pub fn connection(state: u8) -> bool {
    !(state == 0
        || state == TCP_LISTEN
        || state == TCP_CLOSE
        || state == TCP_TIME_WAIT
        || state == TCP_NEW_SYN_RECV)
}
