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
//! map is preallocated: elements are reused at once). Everything is read
//! before anything is written, and the key and birth time are checked in
//! between: what is left is a window of a few stores.

use tcptop_common::{CONN_ACTIVE, CONN_NO_FIN, ConnStats, ConnTuple, TCP_LISTEN};

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
    // Everything is read first, the record's own fields and then the
    // socket's; then the key and the record's birth time are checked
    // again, and only then is anything written, without a helper call in
    // between. A map element deleted and reused for another socket while
    // the reads ran (the map is preallocated: elements are reused at once)
    // is left alone: writing what this socket holds into the other's
    // record, with flags read from it, once lost a client's CONN_ACTIVE
    // (its SYN then counted as a byte sent) in a burst on a slow VM.
    // SAFETY: per the caller.
    let (sk, first, flags, origin, ends_known, family) = unsafe {
        (
            *key,
            (*st).first_ns,
            (*st).flags,
            (*st).origin,
            !conn::incomplete(&(*st).tuple),
            (*st).tuple.family,
        )
    };
    let tp = sk as *const u8;
    let state = Probe::read::<u8>(tp, off!(skc_state)).unwrap_or(0);
    if state == 0 || state == TCP_LISTEN {
        return;
    }
    let c = conn::read_counters::<Probe>(tp);
    let mut ends = ConnTuple {
        family,
        ..ConnTuple::default()
    };
    if !ends_known {
        conn::read_endpoints::<Probe>(tp, &mut ends);
    }
    let app = conn::read_app::<Probe>(tp, flags & CONN_ACTIVE != 0, flags & CONN_NO_FIN == 0);
    // SAFETY: per the caller.
    unsafe {
        if *key != sk || (*st).first_ns != first {
            return;
        }
        conn::store_read(
            st,
            state,
            &c,
            (!ends_known).then_some(&ends),
            app,
            flags,
            origin,
        );
    }
}
