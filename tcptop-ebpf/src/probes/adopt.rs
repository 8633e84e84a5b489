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

use tcptop_common::{TCP_CLOSE, TCP_LISTEN, TCP_NEW_SYN_RECV, TCP_TIME_WAIT};

use crate::kernel::{self, Mem, Probe, off};
use crate::{conn, sock};

/// `struct bpf_iter__tcp`, the program's context.
#[repr(C)]
pub struct IterTcp {
    /// `struct bpf_iter_meta *` (the seq_file: nothing is written to it).
    meta: u64,
    /// `struct sock_common *`, NULL at the end of the walk.
    sk_common: u64,
    uid: u32,
}

/// aya-ebpf has no attribute for iterator programs: the section name is
/// what the loader and the kernel go by.
#[unsafe(link_section = "iter/tcp")]
#[unsafe(no_mangle)]
pub extern "C" fn tcptop_adopt_tcp(ctx: *const IterTcp) -> i32 {
    // SAFETY: the kernel passes its context; the verifier checks the load.
    let skc = unsafe { core::ptr::read_volatile(&raw const (*ctx).sk_common) };
    if skc != 0 && kernel::ready() {
        // A typed pointer: a plain number for probe reads at offsets.
        adopt(kernel::launder(skc));
    }
    0
}

#[inline(always)]
fn adopt(sk: u64) {
    // The state first: TIME_WAIT and request sockets are only a
    // `sock_common`, whose other fields must not be read as a `sock`'s.
    let state = Probe::read::<u8>(sk as *const u8, off!(skc_state)).unwrap_or(0);
    if state == 0
        || state == TCP_LISTEN
        || state == TCP_CLOSE
        || state == TCP_TIME_WAIT
        || state == TCP_NEW_SYN_RECV
    {
        return;
    }
    let tp = sock::tcp_sock::<Probe>(sk);
    if tp != 0 {
        // A record already there is a connection born since the hooks
        // attached: it is kept. A full map is counted as a drop.
        let _ = conn::start_existing::<Probe>(tp as *const u8, state, (0, 0));
    }
}
