//! `iter/bpf_map_elem` over the connection map: run by user space right
//! before each snapshot reads the map (Linux 5.9+).
//!
//! The kernel calls this program once for every record in `CONNS`, in
//! tcptop's own context: nothing here runs on the traffic's path. It copies
//! into the record what its socket holds now: the state, the RTT, segment
//! and retransmit counters, and both endpoints while one is still unknown
//! (connect() picks the source port after entering SYN_SENT; a listener's
//! child gets its remote end after SYN_RECV; after that they never
//! change). That is why the hooks on the packet path only mark a
//! connection's birth, count calls and take the final record: a state
//! change, an RTT that moved or a retransmit is read here, once per
//! snapshot, instead of at each of the ten state changes of a short
//! connection, each a hash lookup on the packet path.
//!
//! A map iterator rather than the kernel's TCP socket iterator, which walks
//! only the sockets of the network namespace that creates it: connections
//! in every namespace are in the map.
//!
//! The socket is read with probe reads from the pointer the record is
//! keyed by. A record exists until the socket's teardown deletes it, so the
//! socket is normally alive; the one race is a record deleted and its map
//! element reused for another socket while this program runs on it (the
//! map is preallocated: elements are reused at once). The key is checked
//! again before anything is written, which leaves a window of a few
//! instructions, and teardown rewrites everything in the final record.

use tcptop_common::{ConnStats, TCP_LISTEN};

use crate::conn;
use crate::kernel::{self, Mem, Probe, off};

/// `struct bpf_iter__bpf_map_elem`, the program's context.
#[repr(C)]
pub struct IterMapElem {
    /// `struct bpf_iter_meta *` (the seq_file: nothing is written to it).
    meta: u64,
    map: u64,
    /// The element's key and value, both NULL at the end of the walk.
    key: *const u64,
    value: *mut ConnStats,
}

/// aya-ebpf has no attribute for iterator programs: the section name is
/// what the loader and the kernel go by.
#[unsafe(link_section = "iter/bpf_map_elem")]
#[unsafe(no_mangle)]
pub extern "C" fn tcptop_iter_conns(ctx: *const IterMapElem) -> i32 {
    // SAFETY: the kernel passes its context; the verifier checks the loads
    // and that key and value are dereferenced only when not NULL, within
    // the map's key and value sizes.
    unsafe {
        let key = core::ptr::read_volatile(&raw const (*ctx).key);
        let st = core::ptr::read_volatile(&raw const (*ctx).value);
        if !key.is_null() && !st.is_null() {
            on_record(key, st);
        }
    }
    0
}

/// # Safety
/// `key` and `st` are the current element's key and value.
#[inline(always)]
unsafe fn on_record(key: *const u64, st: *mut ConnStats) {
    if !kernel::ready() {
        return;
    }
    // SAFETY: per the caller.
    let sk = unsafe { *key };
    let tp = sk as *const u8;
    let state = Probe::read::<u8>(tp, off!(skc_state)).unwrap_or(0);
    let c = conn::read_counters::<Probe>(tp);
    // Reused for another socket meanwhile, or not a connection. (The
    // reads come first, so that the window after this check is short.)
    // SAFETY: per the caller.
    if unsafe { *key } != sk || state == 0 || state == TCP_LISTEN {
        return;
    }
    conn::store::<Probe>(st, tp, state, &c);
}
