//! The connection map and the operations every probe shares: find or start
//! tracking a socket, refresh its socket counters, emit lifecycle events.

use aya_ebpf::{
    bindings::{BPF_ANY, BPF_NOEXIST, BPF_RB_AVAIL_DATA, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP},
    helpers::{bpf_get_current_pid_tgid, bpf_ktime_get_ns},
    macros::map,
    maps::{HashMap, PerCpuArray, RingBuf},
};
use tcptop_common::{
    CONN_ACTIVE, CONN_APP, CONN_NO_FIN, ConnEvent, ConnStats, ConnTuple, DROP_MAP_FULL,
    DROP_RINGBUF, EVENT_CLOSE, EVENTS_BYTES, IPPROTO_TCP, MAX_CONNS, ORIGIN_BORN, ORIGIN_EXISTING,
    SKIP_CALLS, SKIP_RING, TCP_CLOSE, TCP_SYN_RECV, TCP_SYN_SENT,
};

use crate::kernel::{self, Mem, off};
use crate::sock::{
    Kind, MSG_ERRQUEUE, MSG_PEEK, add, comm_epoch, count_drop, family, kind, netns, read_addrs,
    tcp_sock,
};
use crate::udp;

#[map(name = "CONNS")]
static CONNS: HashMap<u64, ConnStats> = HashMap::with_max_entries(MAX_CONNS, 0);

#[map(name = "EVENTS")]
static EVENTS: RingBuf = RingBuf::with_byte_size(EVENTS_BYTES, 0);

/// Wake user space only when the ring buffer is filling up: it drains on a
/// timer otherwise, so a burst of short connections costs no wake-ups.
const WAKEUP_THRESHOLD: u64 = (EVENTS_BYTES / 8) as u64;

/// How full the ring is is asked once per this many events a CPU submits:
/// the answer reads the consumer's position, a cache line user space writes
/// from another CPU, which cost ~150 ns per event (a fifth of a short
/// connection's teardown) when asked every time. The ring can then pass
/// the threshold by at most this many events per CPU before the wake-up
/// (the threshold is 1/8 of the ring: ~3,400 events).
const QUERY_EVERY: u64 = 32;

/// Events submitted, per CPU (one slot).
#[map(name = "SUBMITTED")]
static SUBMITTED: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

/// Reads both endpoints and the network namespace of `sk`.
#[inline(always)]
pub fn read_tuple<M: Mem>(sk: *const u8, t: &mut ConnTuple) {
    t.family = family::<M>(sk);
    t.proto = IPPROTO_TCP;
    read_endpoints::<M>(sk, t);
    t.netns = netns::<M>(sk);
}

/// Re-reads addresses and ports (family and namespace never change).
#[inline(always)]
pub fn read_endpoints<M: Mem>(sk: *const u8, t: &mut ConnTuple) {
    read_addrs::<M>(sk, t);
    // skc_num (host order) is in sock_common, on the line the addresses
    // were just read from; inet_sport (network order) is in inet_sock, a
    // cache line of its own (a miss per connection the owners' walk adopts
    // from cold sockets). Closing releases the port and zeroes skc_num
    // before the CLOSE transition is traced: inet_sport, which keeps it,
    // is read then (and while no port is chosen yet, when both are 0).
    t.sport = match M::read::<u16>(sk, off!(skc_num)) {
        Ok(num) if num != 0 => num,
        _ => u16::from_be(M::read::<u16>(sk, off!(inet_sport)).unwrap_or(0)),
    };
}

/// Socket counters of a `tcp_sock`.
pub struct SockCounters {
    pub srtt_us8: u32,
    pub segs_in: u32,
    pub segs_out: u32,
    pub retrans: u32,
}

#[inline(always)]
pub fn read_counters<M: Mem>(tp: *const u8) -> SockCounters {
    SockCounters {
        srtt_us8: M::read(tp, off!(tcp_srtt_us)).unwrap_or(0),
        segs_in: M::read(tp, off!(tcp_segs_in)).unwrap_or(0),
        segs_out: M::read(tp, off!(tcp_segs_out)).unwrap_or(0),
        retrans: M::read(tp, off!(tcp_total_retrans)).unwrap_or(0),
    }
}

/// Stores socket counters read from a `tcp_sock` in its record. Racing
/// CPUs may store slightly older values; user space never lets a counter
/// go backwards.
#[inline(always)]
fn store_counters(st: *mut ConnStats, c: &SockCounters) {
    // SAFETY: `st` points at a live map value or a reserved ring slot.
    unsafe {
        if c.srtt_us8 != 0 {
            (*st).srtt_us8 = c.srtt_us8;
        }
        (*st).segs_in = c.segs_in;
        (*st).segs_out = c.segs_out;
        (*st).retrans = c.retrans;
    }
}

/// Writes `state` and the counters `c` (read from the socket `tp`) into its
/// record `st` (in the map, or the final copy in the ring), both endpoints
/// if the record does not have them yet, and the application's bytes.
#[inline(always)]
pub fn store<M: Mem>(st: *mut ConnStats, tp: *const u8, state: u8, c: &SockCounters) {
    // SAFETY: `st` points at a live map value or a reserved ring slot.
    unsafe {
        if incomplete(&(*st).tuple) {
            read_endpoints::<M>(tp, &mut (*st).tuple);
        }
        (*st).state = state;
        let flags = (*st).flags;
        if let Some((tx, rx)) =
            read_app::<M>(tp, flags & CONN_ACTIVE != 0, flags & CONN_NO_FIN == 0)
        {
            // A connection adopted before its bytes could be read takes its
            // baseline at the first read.
            if flags & CONN_APP == 0 && (*st).origin == ORIGIN_EXISTING {
                (*st).app_tx_base = tx;
                (*st).app_rx_base = rx;
            }
            (*st).app_tx = tx;
            (*st).app_rx = rx;
            (*st).flags = flags | CONN_APP;
        }
    }
    store_counters(st, c);
}

/// Writes into the record `st` what was read from its socket beforehand
/// (`state`, the counters `c`, the endpoints `ends` if the record lacked
/// them, the application's bytes `app` computed with the record's `flags`
/// and `origin` as they were then): stores only, for the map iterator,
/// which must not call a helper between checking that the element is
/// still this socket's and writing it (`probes/iter.rs`). The flags are
/// not written back whole: a bit is or-ed in.
///
/// # Safety
/// `st` points at a live map value.
#[inline(always)]
pub unsafe fn store_read(
    st: *mut ConnStats,
    state: u8,
    c: &SockCounters,
    ends: Option<&ConnTuple>,
    app: Option<(u64, u64)>,
    flags: u8,
    origin: u8,
) {
    // SAFETY: per the caller.
    unsafe {
        if let Some(e) = ends
            && incomplete(&(*st).tuple)
        {
            (*st).tuple.saddr = e.saddr;
            (*st).tuple.daddr = e.daddr;
            (*st).tuple.sport = e.sport;
            (*st).tuple.dport = e.dport;
        }
        (*st).state = state;
        if let Some((tx, rx)) = app {
            // A connection adopted before its bytes could be read takes
            // its baseline at the first read.
            if flags & CONN_APP == 0 && origin == ORIGIN_EXISTING {
                (*st).app_tx_base = tx;
                (*st).app_rx_base = rx;
            }
            (*st).app_tx = tx;
            (*st).app_rx = rx;
            (*st).flags |= CONN_APP;
        }
    }
    store_counters(st, c);
}

/// The bytes the application wrote into and read from the TCP socket `tp`
/// since it was made (`tcptop_common::app_bytes`, which says from which
/// counters), or None while they cannot be told (`syn`: born by connect();
/// `close_fin`: if in CLOSE, whether it sent a FIN).
///
/// Nothing here holds the socket's lock, and the kernel moves each pair
/// (`bytes_acked` then `snd_una`; `bytes_received` then `rcv_nxt`) in two
/// stores: the reads are ordered so that a race can only make the result
/// smaller than the truth, never larger (user space keeps a counter's
/// highest value, so an overshoot would stay on screen). The copied and
/// written sequences first, then what is measured against them; the
/// pairs read around their partner, and dropped if that moved meanwhile.
/// The state after the send sequence, so that a FIN it counts is known;
/// the FIN-arrived flag after the read sequence, likewise.
#[inline(always)]
pub fn read_app<M: Mem>(tp: *const u8, syn: bool, close_fin: bool) -> Option<(u64, u64)> {
    let copied = M::read::<u32>(tp, off!(tcp_copied_seq)).ok()?;
    let sk_flags = M::read::<u64>(tp, off!(sk_flags)).ok()?;
    let write_seq = M::read::<u32>(tp, off!(tcp_write_seq)).ok()?;
    let state = M::read::<u8>(tp, off!(skc_state)).ok()?;
    let una = M::read::<u32>(tp, off!(tcp_snd_una)).ok()?;
    let acked = M::read::<u64>(tp, off!(tcp_bytes_acked)).ok()?;
    let una_again = M::again::<u32>(tp, off!(tcp_snd_una)).ok()?;
    let nxt = M::read::<u32>(tp, off!(tcp_rcv_nxt)).ok()?;
    let received = M::read::<u64>(tp, off!(tcp_bytes_received)).ok()?;
    let nxt_again = M::again::<u32>(tp, off!(tcp_rcv_nxt)).ok()?;
    if una != una_again || nxt != nxt_again || state == TCP_SYN_SENT || state == TCP_SYN_RECV {
        return None;
    }
    // An active connection whose SYN was never acknowledged moved nothing
    // (and its send sequence may not be set up yet: connect() can fail
    // between choosing it and the SYN).
    if syn && acked == 0 {
        return Some((0, 0));
    }
    let fin_rcvd = (sk_flags >> off!(sock_done_bit)) & 1 != 0;
    tcptop_common::app_bytes(
        acked,
        received,
        write_seq.wrapping_sub(una),
        nxt.wrapping_sub(copied),
        syn,
        tcptop_common::fin_sent(state, close_fin),
        fin_rcvd,
    )
}

/// Whether a record's endpoints are still being filled in by the kernel:
/// connect() picks the source port after entering SYN_SENT, a listener's
/// child gets its remote end after SYN_RECV, and a dual-stack listener's
/// child of an IPv4 peer gets its IPv4-mapped addresses after both ports
/// (a reader in between sees the listener's `::`). Once both ports and
/// both addresses are set the endpoints never change (a failed connect()
/// zeroes them again when it disconnects: they are not re-read then). No
/// connection has port 0 or an unspecified address at either end.
#[inline(always)]
pub fn incomplete(t: &ConnTuple) -> bool {
    t.sport == 0 || t.dport == 0 || unspecified(&t.saddr) || unspecified(&t.daddr)
}

/// All zero: `0.0.0.0` (the rest of the bytes are zero for IPv4) or `::`.
#[inline(always)]
fn unspecified(a: &[u8; 16]) -> bool {
    // SAFETY: 16 bytes read as two u64 (unaligned: a byte array).
    let w = unsafe { core::ptr::read_unaligned(a.as_ptr().cast::<[u64; 2]>()) };
    w[0] | w[1] == 0
}

/// Records the calling process as the connection's owner. Only called from
/// process context (send/receive calls, connect), never from softirq, where
/// `current` is whichever task the packet happened to interrupt. The name is
/// re-read when the owner changes and once a second (an exec renames).
#[inline(always)]
pub fn set_owner<M: Mem>(st: *mut ConnStats) {
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    let epoch = comm_epoch();
    // SAFETY: `st` points at a live map value.
    if unsafe { (*st).pid != tgid || (*st).comm_epoch != epoch } {
        write_owner::<M>(st, tgid, epoch);
    }
}

/// Writes `tgid`, its leader's name, its cgroup and the epoch of that
/// read into `st`.
#[inline(always)]
fn write_owner<M: Mem>(st: *mut ConnStats, tgid: u32, epoch: u32) {
    // SAFETY: `st` points at a live map value or a record on the stack.
    unsafe {
        (*st).pid = tgid;
        (*st).comm = kernel::leader_comm();
        (*st).cgroup_id = kernel::current_cgroup();
        (*st).comm_epoch = epoch;
    }
}

/// Names the record `st` after `tgid` (its leader's name `comm`) if no
/// call has named it yet: a connection open before start, named by the
/// process holding its socket. The name epoch stays 0, so the owner's
/// first call writes its own name and cgroup over this.
#[inline(always)]
pub fn name_if_unowned(st: *mut ConnStats, tgid: u32, comm: &[u8; 16]) {
    // SAFETY: `st` points at a live map value.
    unsafe {
        if (*st).pid == 0 {
            (*st).pid = tgid;
            (*st).comm = *comm;
        }
    }
}

#[inline(always)]
pub fn lookup(sk: u64) -> Option<*mut ConnStats> {
    CONNS.get_ptr_mut(&sk)
}

pub fn remove(sk: u64) {
    let _ = CONNS.remove(&sk);
}

/// A record being built, per CPU: a whole [`ConnStats`] on the stack of a
/// program that may also go down the UDP path would pass the verifier's
/// 512-byte stack limit.
#[map(name = "SCRATCH")]
static SCRATCH: PerCpuArray<ConnStats> = PerCpuArray::with_max_entries(1, 0);

/// A record for the TCP socket `tp`, open before we saw it, built in this
/// CPU's scratch slot: its socket counters are baselined now, its
/// application's bytes as they were before a call that moved `moved` (tx,
/// rx) just now (see [`read_app`] for `close_fin`).
#[inline(always)]
pub fn existing<M: Mem>(
    tp: *const u8,
    state: u8,
    moved: (u64, u64),
    close_fin: bool,
) -> Option<*mut ConnStats> {
    let p = SCRATCH.get_ptr_mut(0)?;
    // SAFETY: this CPU's slot; a program that interrupts this one on the
    // same CPU (softirq) and builds a record too may clobber it, which
    // costs that one record's baseline, no memory safety.
    existing_into::<M>(unsafe { &mut *p }, tp, state, moved, close_fin);
    Some(p)
}

/// [`existing`], built in `st` (a per-CPU slot: see there).
#[inline(always)]
pub fn existing_into<M: Mem>(
    st: &mut ConnStats,
    tp: *const u8,
    state: u8,
    moved: (u64, u64),
    close_fin: bool,
) {
    *st = ConnStats::default();
    read_tuple::<M>(tp, &mut st.tuple);
    if let Some((tx, rx)) = read_app::<M>(tp, false, close_fin) {
        st.app_tx = tx;
        st.app_rx = rx;
        st.app_tx_base = tx.saturating_sub(moved.0);
        st.app_rx_base = rx.saturating_sub(moved.1);
        st.flags = CONN_APP;
    }
    let c = read_counters::<M>(tp);
    st.srtt_us8 = c.srtt_us8;
    st.segs_in = c.segs_in;
    st.segs_out = c.segs_out;
    st.retrans = c.retrans;
    st.origin = ORIGIN_EXISTING;
    st.segs_in_base = c.segs_in;
    st.segs_out_base = c.segs_out;
    st.retrans_base = c.retrans;
    st.state = state;
    // SAFETY: helper without preconditions.
    st.first_ns = unsafe { bpf_ktime_get_ns() };
}

/// Starts tracking the TCP socket `tp` (see [`tcp_sock`]), open before we
/// saw its first state change: its counters are baselined now, as they
/// were before a call that moved `moved` (tx, rx).
#[inline(always)]
pub fn start_existing<M: Mem>(
    tp: *const u8,
    state: u8,
    moved: (u64, u64),
) -> Option<*mut ConnStats> {
    start_existing_fin::<M>(tp, state, moved, true)
}

/// [`start_existing`], `close_fin` saying whether a connection in CLOSE
/// sent a FIN (see [`read_app`]).
#[inline(always)]
pub fn start_existing_fin<M: Mem>(
    tp: *const u8,
    state: u8,
    moved: (u64, u64),
    close_fin: bool,
) -> Option<*mut ConnStats> {
    let key = tp as u64;
    let st = existing::<M>(tp, state, moved, close_fin)?;
    // SAFETY: `st` points at this CPU's scratch slot.
    if CONNS
        .insert(&key, unsafe { &*st }, BPF_NOEXIST as u64)
        .is_err()
    {
        // Either another CPU inserted it first (fine: use theirs) or the map is full.
        if let Some(p) = lookup(key) {
            return Some(p);
        }
        count_drop(DROP_MAP_FULL);
        return None;
    }
    lookup(key)
}

/// The socket that last had a record in [`lazy_record`], per CPU: a
/// process reading one socket call after call costs one lookup.
#[map(name = "LAZY_LAST")]
static LAZY_LAST: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

/// Makes the record of the socket `sk` if the lazy walk left it without
/// one (ESTABLISHED, no record; only with `SETTING_LAZY_READS`), called at
/// a read by any path, which no call hook may see: splice()
/// (`tcp_read_sock`), TCP_ZEROCOPY_RECEIVE. User space counts it from the
/// walk's baseline, so what moved before is not lost. In process context
/// only (the record is built in the CPU's scratch slot, which a softirq
/// program may also use: not called from the retransmit tracepoint).
///
/// Its baseline is the socket's counters after the read that made it: for
/// a socket the walk gave no baseline (born while the table was full) the
/// bytes of that one read are not counted. Where the table is full the
/// socket keeps no record, and no drop is counted for it (one per read
/// would count one connection many times): its row shows the walk's
/// numbers until its end, which is exact.
#[inline(always)]
pub fn lazy_record<M: Mem>(sk: u64) {
    // `lazy` first: a constant to the verifier, which then drops the rest
    // from the programs of a kernel without the lazy walk (5.10).
    if sk == 0 || !kernel::lazy() || !kernel::lazy_reads() {
        return;
    }
    let Some(last) = LAZY_LAST.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: this CPU's slot; a program interrupting this one on the same
    // CPU may write it too: the worst is one lookup more.
    unsafe {
        if *last == sk {
            return;
        }
        *last = sk;
    }
    if lookup(sk).is_some() {
        return;
    }
    let tp = tcp_sock::<M>(sk);
    if tp == 0 {
        return;
    }
    // Only an established connection: a record made for one that ended
    // (its teardown seen already) would never be deleted.
    if M::read::<u8>(tp as *const u8, off!(skc_state)) != Ok(tcptop_common::TCP_ESTABLISHED) {
        return;
    }
    if let Some(st) = existing::<M>(
        tp as *const u8,
        tcptop_common::TCP_ESTABLISHED,
        (0, 0),
        false,
    ) {
        // SAFETY: `st` points at this CPU's scratch slot.
        let _ = CONNS.insert(&sk, unsafe { &*st }, BPF_NOEXIST as u64);
    }
}

/// Adopts the TCP socket `tp` (a connection open before start) as
/// [`start_existing`] does, named after `tgid` (its leader's name `comm`),
/// the process holding it, unless a call named it first. A new record is
/// named before it is inserted: no lookup after the insert (the owners'
/// walk adopts every connection the machine holds). The socket's
/// namespace, as read for the record (None if no record could be built).
#[inline(always)]
pub fn adopt_named<M: Mem>(tp: *const u8, state: u8, tgid: u32, comm: &[u8; 16]) -> Option<u32> {
    let key = tp as u64;
    let st = existing::<M>(tp, state, (0, 0), true)?;
    // SAFETY: `st` points at this CPU's scratch slot.
    let netns = unsafe {
        (*st).pid = tgid;
        (*st).comm = *comm;
        (*st).tuple.netns
    };
    // SAFETY: as above.
    if CONNS
        .insert(&key, unsafe { &*st }, BPF_NOEXIST as u64)
        .is_err()
    {
        // A record exists (the hooks met the socket since they attached),
        // or the map is full.
        match lookup(key) {
            Some(p) => name_if_unowned(p, tgid, comm),
            None => count_drop(DROP_MAP_FULL),
        }
    }
    Some(netns)
}

/// Starts tracking the TCP socket `tp` (see [`tcp_sock`]) at its first
/// state change (SYN_SENT or SYN_RECV): counters from zero, and with
/// `owner` (connect, in process context) the caller as its owner. Writes
/// the whole record at once and needs no pointer to it afterwards: no
/// lookup after the insert.
#[inline(always)]
pub fn start_born<M: Mem>(tp: *const u8, state: u8, owner: bool) {
    let key = tp as u64;
    let mut st = ConnStats::default();
    read_tuple::<M>(tp, &mut st.tuple);
    st.origin = ORIGIN_BORN;
    if state == TCP_SYN_SENT {
        st.flags = CONN_ACTIVE;
    }
    st.state = state;
    // SAFETY: helper without preconditions.
    st.first_ns = unsafe { bpf_ktime_get_ns() };
    if owner {
        let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
        write_owner::<M>(&raw mut st, tgid, comm_epoch());
    }
    match CONNS.insert(&key, &st, BPF_NOEXIST as u64) {
        Ok(()) => {}
        Err(EEXIST) => {
            // A record under this socket's address whose teardown we never
            // saw belongs to an earlier socket: it ends here, with its
            // counters, and this one starts over. (Not expected: every
            // TCP socket's teardown is traced.)
            if let Some(old) = lookup(key) {
                emit_close::<M>(key, old, core::ptr::null());
            }
            if CONNS.insert(&key, &st, BPF_ANY as u64).is_err() {
                count_drop(DROP_MAP_FULL);
            }
        }
        Err(_) => count_drop(DROP_MAP_FULL),
    }
}

/// `-EEXIST`, as the map helpers return it.
const EEXIST: i32 = -17;

/// Sends a connection's final record: `st` in state CLOSE and, when `tp`
/// (its `tcp_sock`) is not null, with what the socket holds now (see
/// [`store`]). The only event there is: while a connection lives, user
/// space reads the map; its final counters exist nowhere else once the
/// entry is deleted. (Per-transition events would cost a ring-buffer write
/// per state change and user-space memory under churn, for nothing the map
/// does not show.)
///
/// `st` is read, never written: the socket's last values go into the copy
/// in the ring. The map record is deleted right after, and writing it
/// first took its cache line from the CPU whose calls last wrote the
/// owner fields, for nothing.
#[inline(always)]
pub fn emit_close<M: Mem>(sk: u64, st: *const ConnStats, tp: *const u8) {
    if kernel::skips(SKIP_RING) {
        return;
    }
    match EVENTS.reserve::<ConnEvent>(0) {
        Some(mut entry) => {
            let ev = entry.as_mut_ptr();
            // SAFETY: `ev` is a reserved, exclusively owned ring-buffer slot;
            // `st` points at a live map value or a record on the stack.
            unsafe {
                (*ev).kind = EVENT_CLOSE;
                (*ev)._pad0 = 0;
                (*ev).sk = sk;
                (*ev).stats = *st;
                if tp.is_null() {
                    (*ev).stats.state = TCP_CLOSE;
                } else {
                    store::<M>(&raw mut (*ev).stats, tp, TCP_CLOSE, &read_counters::<M>(tp));
                }
            }
            let flags =
                if time_to_ask() && EVENTS.query(BPF_RB_AVAIL_DATA as u64) > WAKEUP_THRESHOLD {
                    BPF_RB_FORCE_WAKEUP
                } else {
                    BPF_RB_NO_WAKEUP
                };
            entry.submit(flags as u64);
        }
        None => count_drop(DROP_RINGBUF),
    }
}

/// Counts one submitted event on this CPU; true once every [`QUERY_EVERY`].
#[inline(always)]
fn time_to_ask() -> bool {
    match SUBMITTED.get_ptr_mut(0) {
        Some(n) => {
            // SAFETY: per-CPU slot; a program that interrupts this one on
            // the same CPU (softirq) may lose an increment, which only
            // shifts when the ring is next asked.
            unsafe {
                *n += 1;
                *n % QUERY_EVERY == 0
            }
        }
        None => true,
    }
}

/// Accounts one send (`tx`) or receive call on `sk` that returned `ret`
/// (bytes moved, or a negative errno). Called in the caller's context by
/// every hook set, once per call; the tracepoint set's calls include UDP
/// sockets' (counted in `udp.rs`).
#[inline(always)]
pub fn on_io<M: Mem>(sk: u64, ret: i64, flags: i64, tx: bool) {
    // A failed call moved nothing. (A UDP call that fails after its cgroup
    // hook leaves a handover behind: see `udp::UDP_PEERS`.)
    if !kernel::ready() || sk == 0 || ret < 0 || kernel::skips(SKIP_CALLS) {
        return;
    }
    // A call that moves data (or reads the end of it: ret 0).
    let data = tx || flags & (MSG_PEEK | MSG_ERRQUEUE) == 0;
    // Only TCP sockets are in the map: a hit needs no kind check.
    let st = match lookup(sk) {
        Some(p) if data && ret > 0 => p,
        Some(_) => return,
        None => {
            let tp = tcp_sock::<M>(sk);
            if tp == 0 {
                // A zero-length datagram is one datagram: UDP counts ret 0.
                if kernel::udp_enabled() && kind::<M>(sk as *const u8) == Kind::Udp {
                    udp::on_traced_call::<M>(sk, ret, flags, tx);
                }
                return;
            }
            if !data {
                return;
            }
            // Open before tcptop started and not adopted at start-up (its
            // namespace was not walked: `probes/adopt.rs`; every connection
            // born since has a record, unless the map was full at its
            // birth): tracked from its first call on, the end of its data
            // (ret 0) included, so that its state shows from here on.
            let state = M::read::<u8>(tp as *const u8, off!(skc_state)).unwrap_or(0);
            let n = ret as u64;
            let moved = if tx { (n, 0) } else { (0, n) };
            match start_existing::<M>(tp as *const u8, state, moved) {
                Some(p) if ret > 0 => p,
                _ => return,
            }
        }
    };
    // SAFETY: `st` points at a live map value.
    let counter = unsafe {
        if tx {
            &raw mut (*st).tx_bytes
        } else {
            &raw mut (*st).rx_bytes
        }
    };
    // The owner before the bytes: a snapshot that reads the bytes this
    // call moved reads its owner with them (the atomic add orders the
    // stores), never the previous owner's name on them (seen on 5.10 in
    // QEMU: a forked child's first bytes shown under its parent's PID).
    set_owner::<M>(st);
    add(counter, ret as u64);
    // After the counters: a snapshot that takes this touch reads them.
    crate::touch::touch_record(st, sk);
    // State, RTT, segments, retransmits and the application's bytes by
    // every path (`read_app`: also what no call hook sees, such as a
    // splice() read, or a call already in progress when the hooks
    // attached) are not read here: the snapshot's iterator
    // (`probes/iter.rs`) copies them from the socket right before user
    // space reads the map, and teardown takes the last.
}
