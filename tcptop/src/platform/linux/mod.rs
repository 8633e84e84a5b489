//! Linux backend: eBPF programs attached to kernel hooks (crate `tcptop-ebpf`).
//!
//! Start-up: check privileges, read kernel struct offsets from BTF, load the
//! programs with those offsets, attach, seed already-open connections from
//! /proc. Each collection: run the connection map's iterator (it brings
//! every record's state and socket counters up to date), read the map
//! (live connections), then the final records a background thread drained
//! from the ring buffer (closed connections), then the drop counters.

mod adopt;
mod btf;
mod caps;
mod convert;
mod events;
mod hooks;
mod mapread;
mod privdrop;
mod procfs;
mod refresh;
mod udp;

use std::collections::{HashMap as StdHashMap, HashSet};
use std::path::Path;

use aya::{
    Ebpf, EbpfLoader,
    maps::{HashMap, MapData, PerCpuArray, RingBuf},
};
use tcptop_common::{
    ConnEvent, ConnStats, DROP_MAP_FULL, DROP_RINGBUF, DROP_UDP_FLOWS, EVENT_CLOSE, GLOBAL_OFFSETS,
    MAP_CONNS, MAP_DROPS, MAP_EVENTS, MAP_UDP_FLOWS, Offsets, SKIP_CALLS, SKIP_RING,
};

use super::{DataSource, HookSet, SourceError, SourceOptions};
use crate::model::{ConnKey, ConnSample, ConnState, Counters, Drops, Proto, Snapshot};

const BTF_PATH: &str = "/sys/kernel/btf/vmlinux";

/// The eBPF data source. Dropping it detaches every program.
pub struct EbpfSource {
    // Field order matters: maps and the event thread go before `_ebpf`.
    conns: HashMap<MapData, u64, ConnStats>,
    drops: PerCpuArray<MapData, u64>,
    events: events::EventQueue,
    /// Drained events, kept between snapshots for its capacity.
    event_buf: Vec<ConnEvent>,
    /// The connection map's records, read in batches, likewise.
    live_buf: Vec<(u64, ConnStats)>,
    map_reader: mapread::MapReader,
    /// None when the UDP programs could not attach (a warning says so).
    udp: Option<udp::UdpFlows>,
    conn_iter: refresh::ConnIter,
    /// Connections found in /proc at start-up that the kernel side has not
    /// reported yet; reported with zero counters until it does.
    seeds: Vec<ConnSample>,
    /// Owners /proc named for connections the kernel reports (adopted at
    /// start-up, or called since): a sample of one without an owner of its
    /// own (no call yet) takes this one. Dropped when it closes.
    seed_owners: StdHashMap<ConnKey, (u32, String)>,
    hooks: String,
    warnings: Vec<String>,
    /// Benchmark instrument: `collect` only empties the ring buffer.
    skip_user: bool,
    /// Keeps programs loaded and links attached.
    _ebpf: Ebpf,
}

impl EbpfSource {
    pub fn open(opts: &SourceOptions) -> Result<Self, SourceError> {
        caps::check()?;
        caps::check_kernel()?;
        let btf_path = opts.btf.as_deref().unwrap_or(Path::new(BTF_PATH));
        let btf = read_btf(btf_path, opts.btf.is_some())?;
        let mut offsets = kernel_offsets(&btf)?;
        offsets.udp = u32::from(opts.udp);
        let noop = bench_noop();
        if noop {
            offsets.ready = 0;
        }
        let skip = BenchSkip::from_env()?;
        offsets.bench_skip = skip.kernel;
        caps::raise_memlock();

        let bytes = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/tcptop"));
        let mut ebpf = EbpfLoader::new()
            .override_global(GLOBAL_OFFSETS, &offsets, true)
            .map_max_entries(MAP_CONNS, opts.max_conns)
            .map_max_entries(MAP_UDP_FLOWS, opts.max_conns)
            .load(bytes)
            .map_err(|e| load_error(&e))?;

        // The kprobe set is for kernels without BTF tracing programs: it
        // takes raw tracepoints too (and so the VM matrix tests both kinds).
        let typed = opts.hooks != Some(HookSet::Kprobe)
            && std::env::var_os("TCPTOP_RAW_TRACEPOINTS").is_none_or(|v| v == "0");
        let mut tracing = hooks::TracingBtf::new(btf_path, typed);
        let btf_lifecycle = hooks::attach_lifecycle(&mut ebpf, &mut tracing).map_err(|e| {
            if e.contains("Operation not permitted") {
                SourceError::Privileges(caps::missing_message(&[]))
            } else {
                SourceError::Unsupported(format!(
                    "{e}.\nThis kernel ({}) lacks a hook tcptop needs (Linux 5.9 or newer \
                     with BTF is required).",
                    caps::kernel_release()
                ))
            }
        })?;
        let conn_iter = refresh::ConnIter::attach(&mut ebpf, &mut tracing).map_err(|e| {
            SourceError::Unsupported(format!(
                "{e}.\nThis kernel ({}) lacks BPF map iterators (Linux 5.9 or newer with BTF \
                 is required).",
                caps::kernel_release()
            ))
        })?;
        let candidates: Vec<HookSet> = match opts.hooks {
            Some(set) => vec![set],
            None => HookSet::ALL.to_vec(),
        };
        let set = hooks::attach_io(&mut ebpf, &candidates, &btf, &mut tracing)
            .map_err(|errors| no_hook_set(&errors, opts.hooks.is_some()))?;
        let mut warnings: Vec<String> = hooks::io_warning(set).into_iter().collect();
        let udp = if opts.udp {
            match udp::UdpFlows::attach(&mut ebpf, set, &btf, &mut tracing, opts) {
                Ok((u, warning)) => {
                    warnings.extend(warning);
                    Some(u)
                }
                Err(e) => {
                    warnings.push(e);
                    None
                }
            }
        } else {
            None
        };
        // After every hook: a connection adopted now has its teardown seen,
        // and one born meanwhile has its record already.
        let scan = procfs::scan_sockets(Path::new("/proc")).unwrap_or_default();
        if let Err(e) = adopt::adopt(&mut ebpf, &mut tracing, &scan.namespaces) {
            warnings.push(format!(
                "{e}: connections open before start show the state they had then until \
                 their first call"
            ));
        }
        drop(tracing);
        let mut hooks = String::from(set.as_str());
        if btf_lifecycle {
            hooks.push_str("+btf");
        }
        if noop {
            hooks.push_str("+noop");
        }
        if let Some(w) = skip.warning() {
            warnings.push(w);
        }
        if noop {
            warnings.push(format!(
                "{BENCH_NOOP} is set: every program is attached but returns at once, \
                 so nothing is counted (a benchmark of the hooks' own cost)"
            ));
        }
        let seeds = seeds(scan.sockets);
        let map_reader = mapread::MapReader::new(&ebpf).map_err(SourceError::Failed)?;
        let conns = take_map(&mut ebpf, MAP_CONNS, HashMap::try_from)?;
        let drops = take_map(&mut ebpf, MAP_DROPS, PerCpuArray::try_from)?;
        let ring = take_map(&mut ebpf, MAP_EVENTS, RingBuf::try_from)?;
        let events = events::EventQueue::start(ring)
            .map_err(|e| SourceError::Failed(format!("cannot start the event thread: {e}")))?;

        drop(btf);
        // Start-up parsed the kernel's BTF (megabytes) and is done with it:
        // hand the freed heap back to the system for the long run.
        // SAFETY: malloc_trim only releases free memory.
        unsafe { libc::malloc_trim(0) };
        keep_freed_memory();
        Ok(EbpfSource {
            conns,
            drops,
            events,
            event_buf: Vec::new(),
            live_buf: Vec::new(),
            map_reader,
            udp,
            conn_iter,
            seeds,
            seed_owners: StdHashMap::new(),
            hooks,
            warnings,
            skip_user: skip.user,
            _ebpf: ebpf,
        })
    }

    fn read_drops(&self) -> Drops {
        let sum = |idx: u32| -> u64 {
            self.drops
                .get(&idx, 0)
                .map(|v| v.iter().copied().fold(0u64, u64::saturating_add))
                .unwrap_or(0)
        };
        Drops {
            events: sum(DROP_RINGBUF),
            conns: sum(DROP_MAP_FULL).saturating_add(sum(DROP_UDP_FLOWS)),
            evicted: self.udp.as_ref().map_or(0, udp::UdpFlows::evicted),
        }
    }
}

impl DataSource for EbpfSource {
    fn hooks(&self) -> &str {
        &self.hooks
    }

    fn warnings(&self) -> &[String] {
        &self.warnings
    }

    fn drop_privileges(&mut self, user: Option<&str>) -> Result<(), SourceError> {
        // Capabilities are per thread: the event thread waits while this
        // one, then alone, drops them, and comes back without them.
        self.events.pause();
        let drops = &self.drops;
        let dropped = privdrop::drop_privileges(user, || drops.get(&DROP_RINGBUF, 0).is_ok());
        self.events
            .resume()
            .map_err(|e| SourceError::Failed(format!("cannot start the event thread: {e}")))?;
        match dropped {
            Ok(()) => Ok(()),
            Err(e) if user.is_some() => Err(SourceError::Privileges(e)),
            Err(e) => {
                self.warnings.push(format!(
                    "{e} (tcptop keeps running with the privileges it has)"
                ));
                Ok(())
            }
        }
    }

    fn collect(&mut self) -> Result<Snapshot, SourceError> {
        // The iterator visits every bucket of the map (--max-conns of them:
        // ~1 ms at the default 65,536), records or not: with none, one key
        // lookup says so and the walk is skipped (most of an idle tcptop's
        // CPU). A record born after this check waits for the next snapshot's
        // walk, as one born after the walk does.
        self.live_buf.clear();
        if self.skip_user {
            self.events.drain_into(&mut self.event_buf);
            self.event_buf.clear();
            return Ok(Snapshot {
                drops: self.read_drops(),
                ..Snapshot::default()
            });
        }
        if self.conns.keys().next().is_some() {
            self.conn_iter.run().map_err(|e| {
                SourceError::Failed(format!("cannot bring the connection map up to date: {e}"))
            })?;
            self.map_reader
                .read_all(&mut self.live_buf)
                .map_err(|e| SourceError::Failed(format!("cannot read the connection map: {e}")))?;
        }
        let mut live = Vec::with_capacity(self.live_buf.len());
        for (sk, st) in &self.live_buf {
            let sample = convert::sample(*sk, st, false);
            // A record is made at birth, before the kernel has filled in
            // every endpoint: connect() enters SYN_SENT before it picks the
            // source port, a listener's child enters SYN_RECV with the
            // listener's (empty) remote end. The iterator fills them in at a
            // later snapshot (the source port is picked within the connect
            // call); until then the record is left out, never shown with
            // port 0. (No connection has port 0 at either end.)
            if sample.key.local.port() == 0 || sample.key.remote.port() == 0 {
                continue;
            }
            live.push(sample);
        }
        // Events after the map walk, drained to the end now: a connection
        // whose entry the walk missed because it was just deleted has its
        // CLOSE event in the buffer already (it is submitted before the
        // delete), so it is reported closed in this same snapshot.
        self.events.drain_into(&mut self.event_buf);
        let mut closed: Vec<ConnSample> = Vec::with_capacity(self.event_buf.len());
        closed.extend(
            self.event_buf
                .iter()
                .filter(|ev| ev.kind == EVENT_CLOSE)
                .map(|ev| convert::sample(ev.sk, &ev.stats, true)),
        );
        if !closed.is_empty() {
            let gone: convert::IdSet = closed.iter().map(|c| c.id).collect();
            live.retain(|c| !gone.contains(&c.id));
        }
        if let Some(udp) = &mut self.udp {
            udp.collect(&mut live, &mut closed);
        }
        if !self.seeds.is_empty() {
            let known: HashSet<ConnKey> = live.iter().chain(closed.iter()).map(|c| c.key).collect();
            for s in self.seeds.extract_if(.., |s| known.contains(&s.key)) {
                if s.pid != 0 {
                    self.seed_owners.insert(s.key, (s.pid, s.comm));
                }
            }
            live.extend(self.seeds.iter().cloned());
        }
        if !self.seed_owners.is_empty() {
            for c in live.iter_mut().chain(closed.iter_mut()) {
                if c.pid == 0
                    && let Some((pid, comm)) = self.seed_owners.get(&c.key)
                {
                    c.pid = *pid;
                    c.comm.clone_from(comm);
                }
            }
            for c in &closed {
                self.seed_owners.remove(&c.key);
            }
        }
        Ok(Snapshot {
            live,
            closed,
            drops: self.read_drops(),
        })
    }
}

/// Every snapshot allocates the same few large buffers again (closed
/// connections, rows to sort: megabytes a second under churn). By default
/// glibc maps each one fresh and unmaps it on free, so every snapshot
/// page-faulted its buffers in again (~6% of tcptop's CPU under churn).
/// Serve buffers up to 32 MiB from the heap and keep up to 32 MiB of what
/// is freed there for the next snapshot: memory stays near its high-water
/// mark instead (bounded: a burst cannot pin more than that).
fn keep_freed_memory() {
    #[cfg(target_env = "gnu")]
    // SAFETY: mallopt only sets allocator parameters.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 32 << 20);
    }
}

fn take_map<T, E: std::fmt::Display>(
    ebpf: &mut Ebpf,
    name: &str,
    conv: impl FnOnce(aya::maps::Map) -> Result<T, E>,
) -> Result<T, SourceError> {
    let map = ebpf
        .take_map(name)
        .ok_or_else(|| SourceError::Failed(format!("eBPF object has no map {name:?}")))?;
    conv(map).map_err(|e| SourceError::Failed(format!("eBPF map {name:?}: {e}")))
}

fn read_btf(path: &Path, user_given: bool) -> Result<btf::Btf, SourceError> {
    if !user_given && !path.exists() {
        return Err(SourceError::Unsupported(format!(
            "this kernel ({}) does not expose BTF type information at {BTF_PATH}.\n\
             tcptop reads kernel structures at offsets taken from BTF: use a kernel built \
             with CONFIG_DEBUG_INFO_BTF=y (the default on Debian, Ubuntu, Fedora and RHEL \
             kernels since 2020), or pass this kernel's BTF with --btf FILE.",
            caps::kernel_release()
        )));
    }
    btf::Btf::from_file(path).map_err(|e| {
        SourceError::Unsupported(format!(
            "cannot use the kernel BTF at \"{}\": {e}",
            path.display()
        ))
    })
}

/// Benchmark instrument: with this set to 1, every program is loaded and
/// attached as usual but returns at its first instruction (the `ready`
/// flag stays 0), so a benchmark can measure what the hooks cost before
/// they do any work: the kernel's own dispatch, the floor under tcptop's
/// overhead (`scripts/bench.py`, `scripts/bench-peers.py`: `tcptop-noop`).
const BENCH_NOOP: &str = "TCPTOP_BENCH_NOOP";

fn bench_noop() -> bool {
    std::env::var_os(BENCH_NOOP).is_some_and(|v| v == "1")
}

/// Benchmark instrument: `TCPTOP_BENCH_SKIP=calls,ring,user` leaves parts
/// of tcptop's work out, so that `scripts/bench-peers.py` can measure what
/// each part costs a load (`tcptop-skip-*`): `calls`, the send/receive
/// programs return at once (no bytes, no owners from calls); `ring`, a
/// teardown deletes its record without sending the final copy; `user`,
/// user space only empties the ring buffer (no map walk, no rows, no
/// output). Whatever is left out is not counted: never for real use.
const BENCH_SKIP: &str = "TCPTOP_BENCH_SKIP";

#[derive(Debug, Default, PartialEq, Eq)]
struct BenchSkip {
    /// `SKIP_*` bits for the programs.
    kernel: u32,
    user: bool,
}

impl BenchSkip {
    fn from_env() -> Result<BenchSkip, SourceError> {
        match std::env::var(BENCH_SKIP) {
            Ok(v) => BenchSkip::parse(&v),
            Err(std::env::VarError::NotPresent) => Ok(BenchSkip::default()),
            Err(std::env::VarError::NotUnicode(_)) => Err(SourceError::Failed(format!(
                "{BENCH_SKIP}: expected a comma-separated list of calls, ring, user"
            ))),
        }
    }

    fn parse(v: &str) -> Result<BenchSkip, SourceError> {
        let mut skip = BenchSkip::default();
        for part in v.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            match part {
                "calls" => skip.kernel |= SKIP_CALLS,
                "ring" => skip.kernel |= SKIP_RING,
                "user" => skip.user = true,
                other => {
                    return Err(SourceError::Failed(format!(
                        "{BENCH_SKIP}: unknown part {other:?} (expected a comma-separated list \
                         of calls, ring, user)"
                    )));
                }
            }
        }
        Ok(skip)
    }

    fn warning(&self) -> Option<String> {
        let mut left = Vec::new();
        if self.kernel & SKIP_CALLS != 0 {
            left.push("send/receive calls");
        }
        if self.kernel & SKIP_RING != 0 {
            left.push("closed connections");
        }
        if self.user {
            left.push("everything but emptying the ring buffer in user space");
        }
        (!left.is_empty()).then(|| {
            format!(
                "{BENCH_SKIP} is set: {} left out, so counts are incomplete \
                 (a benchmark of what each part costs)",
                left.join(", ")
            )
        })
    }
}

/// Offsets of every kernel field the programs read, from the kernel's BTF.
fn kernel_offsets(btf: &btf::Btf) -> Result<Offsets, SourceError> {
    let off = |s: &str, m: &str| {
        btf.member_offset(s, m)
            .map_err(|e| SourceError::Unsupported(format!("unsupported kernel layout: {e}")))
    };
    if off("sock", "__sk_common")? != 0 {
        return Err(SourceError::Unsupported(
            "unsupported kernel layout: struct sock does not start with __sk_common".into(),
        ));
    }
    Ok(Offsets {
        skc_daddr: off("sock_common", "skc_daddr")?,
        skc_rcv_saddr: off("sock_common", "skc_rcv_saddr")?,
        skc_dport: off("sock_common", "skc_dport")?,
        skc_num: off("sock_common", "skc_num")?,
        skc_family: off("sock_common", "skc_family")?,
        skc_state: off("sock_common", "skc_state")?,
        skc_v6_daddr: off("sock_common", "skc_v6_daddr")?,
        skc_v6_rcv_saddr: off("sock_common", "skc_v6_rcv_saddr")?,
        skc_net: off("sock_common", "skc_net")?,
        sk_protocol: off("sock", "sk_protocol")?,
        sk_type: off("sock", "sk_type")?,
        inet_sport: off("inet_sock", "inet_sport")?,
        net_ns_inum: off("net", "ns.inum")?,
        tcp_srtt_us: off("tcp_sock", "srtt_us")?,
        tcp_segs_in: off("tcp_sock", "segs_in")?,
        tcp_segs_out: off("tcp_sock", "segs_out")?,
        tcp_total_retrans: off("tcp_sock", "total_retrans")?,
        task_group_leader: off("task_struct", "group_leader")?,
        task_comm: off("task_struct", "comm")?,
        // tcp_recvmsg(sk, msg, len, [nonblock,] flags, [addr_len]): the
        // return value follows the arguments for fexit.
        recv_ret_arg: match btf.func_param_count("tcp_recvmsg") {
            Some(n @ 4..=6) => n as u32,
            other => {
                return Err(SourceError::Unsupported(format!(
                    "unsupported kernel: tcp_recvmsg has {other:?} arguments in BTF (4 to 6 expected)"
                )));
            }
        },
        msghdr_name: off("msghdr", "msg_name")?,
        udp: 0,
        ready: 1,
        bench_skip: 0,
    })
}

fn load_error(e: &aya::EbpfError) -> SourceError {
    if is_eperm(e) {
        return SourceError::Privileges(caps::missing_message(&[]));
    }
    SourceError::Failed(format!(
        "the kernel refused tcptop's eBPF programs: {e}\n{:?}",
        e
    ))
}

fn is_eperm(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(io) = err.downcast_ref::<std::io::Error>()
            && io.raw_os_error() == Some(libc::EPERM)
        {
            return true;
        }
        cur = err.source();
    }
    false
}

/// A verifier log can run to thousands of lines: keep its first line (what
/// failed) and the last lines before the instruction count (why).
fn brief(e: &str) -> String {
    let lines: Vec<&str> = e.lines().filter(|l| !l.trim().is_empty()).collect();
    if lines.len() <= 4 {
        return lines.join(" / ");
    }
    let tail: Vec<&str> = lines
        .iter()
        .rev()
        .filter(|l| !l.starts_with("processed ") && !l.starts_with("verification time"))
        .take(2)
        .copied()
        .collect();
    let mut out = lines[0].to_string();
    for l in tail.into_iter().rev() {
        out.push_str(" / … ");
        out.push_str(l);
    }
    out
}

/// The error when no hook set could count send/receive calls.
fn no_hook_set(errors: &[(HookSet, String)], forced: bool) -> SourceError {
    let mut msg = if forced {
        String::from("the requested hook set is not available on this kernel")
    } else {
        String::from("no hook set can count send/receive calls on this kernel")
    };
    msg.push_str(&format!(" ({}):", caps::kernel_release()));
    for (set, e) in errors {
        msg.push_str(&format!("\n  {}: {}", set.as_str(), brief(e)));
    }
    if !forced {
        msg.push_str(
            "\ntcptop needs one of: BTF tracing programs (fentry), kprobes, or Linux 6.3+ tracepoints.",
        );
    }
    SourceError::Unsupported(msg)
}

/// TCP connections open before we started (`found` in /proc), with their
/// owners, as zero-counter samples. (UDP flows need no seeds: each call
/// names its owner.)
fn seeds(found: Vec<procfs::ProcSocket>) -> Vec<ConnSample> {
    let mut seen = StdHashMap::new();
    for s in found {
        let state = ConnState::from_tcp(s.state);
        // TIME_WAIT and request sockets are not full sockets: the kernel side
        // will never report them, so they would linger.
        if matches!(
            state,
            ConnState::TimeWait | ConnState::Listen | ConnState::NewSynRecv | ConnState::SynRecv
        ) {
            continue;
        }
        let key = ConnKey {
            proto: Proto::Tcp,
            local: s.local,
            remote: s.remote,
            netns: s.netns,
        };
        let (pid, comm) = s.owner.unwrap_or((0, String::new()));
        seen.entry(key).or_insert(ConnSample {
            key,
            id: 0,
            pid,
            comm,
            state,
            counters: Counters::default(),
            rtt_us: None,
        });
    }
    seen.into_values().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bench_skip_parses_its_parts() {
        assert_eq!(BenchSkip::parse("").unwrap(), BenchSkip::default());
        assert_eq!(BenchSkip::parse("").unwrap().warning(), None);
        let all = BenchSkip::parse("calls, ring,user").unwrap();
        assert_eq!(all.kernel, SKIP_CALLS | SKIP_RING);
        assert!(all.user);
        let ring = BenchSkip::parse("ring").unwrap();
        assert_eq!((ring.kernel, ring.user), (SKIP_RING, false));
        assert!(ring.warning().unwrap().contains("closed connections"));
        let err = BenchSkip::parse("ring,\x1b[31m").unwrap_err().to_string();
        assert!(
            err.contains("unknown part") && !err.contains('\x1b'),
            "{err}"
        );
    }
}
