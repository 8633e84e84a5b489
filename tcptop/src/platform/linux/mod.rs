//! Linux backend: eBPF programs attached to kernel hooks (crate `tcptop-ebpf`).
//!
//! Start-up: check privileges, read kernel struct offsets from BTF, load the
//! programs with those offsets, attach, seed already-open connections from
//! /proc. Each collection: run the connection map's iterator (it brings
//! every record's state and socket counters up to date), read the map
//! (live connections), then the final records a background thread drained
//! from the ring buffer (closed connections), then the drop counters.

mod adopt;
mod bpf;
mod btf;
mod caps;
mod cgroup;
mod convert;
pub mod diag;
mod diagview;
mod events;
mod hooks;
mod iter;
mod mapread;
mod objflags;
mod owners;
mod privdrop;
pub mod procfs;
mod release;
mod standing;
mod touched;
mod udp;
pub mod unprivileged;
mod users;

use foldhash::{HashMap as StdHashMap, HashMapExt, HashSet};
use std::path::Path;

use aya::{
    Ebpf, EbpfLoader,
    maps::{Array, HashMap, MapData, PerCpuArray, RingBuf},
};
use tcptop_common::{
    COUNT_UDP_FLOWS_MADE, Config, ConnEvent, ConnStats, DROP_MAP_FULL, DROP_RINGBUF,
    DROP_UDP_FLOWS, EVENT_CLOSE, GLOBAL_CONFIG, GLOBAL_OFFSETS, MAP_CONNS, MAP_DROPS, MAP_EVENTS,
    MAP_SETTINGS, MAP_UDP_FLOWS, ORIGIN_EXISTING, Offsets, SETTING_FILL_ESTABLISHED,
    SETTING_LAZY_READS, SKIP_CALLS, SKIP_RING, TCP_SYN_SENT,
};

use super::{DataSource, HookSet, SourceError, SourceOptions};
use crate::model::{
    CompactString, ConnKey, ConnSample, ConnState, Counters, Drops, Proto, Snapshot, pop_releasing,
};

const BTF_PATH: &str = "/sys/kernel/btf/vmlinux";

/// Every map user space asks the eBPF object for by name (a test checks
/// them against the object; so are the programs each module lists).
#[cfg(test)]
const MAPS: [&str; 7] = [
    MAP_CONNS,
    MAP_DROPS,
    MAP_EVENTS,
    MAP_SETTINGS,
    MAP_UDP_FLOWS,
    tcptop_common::MAP_TOUCHED,
    tcptop_common::MAP_TOUCH_CPU,
];

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
    /// None where the kernel refused the map iterator.
    conn_iter: Option<iter::ConnIter>,
    /// The socket diagnostics' view, where an iterator was refused: it
    /// refreshes records (no map iterator) and shows connections adopted
    /// from its first dump (no TCP socket iterator).
    diag: Option<diagview::DiagView>,
    /// Owners' cgroup ids to paths and workloads.
    cgroups: cgroup::Resolver,
    /// Connections found in /proc at start-up that the kernel side has not
    /// reported yet; reported with zero counters until it does.
    seeds: Vec<ConnSample>,
    /// Owners /proc named for connections the kernel reports (adopted at
    /// start-up, or called since): the first sample of one without an
    /// owner of its own (no call yet) takes this one; the table keeps it.
    seed_owners: StdHashMap<ConnKey, (u32, CompactString)>,
    /// Owners of the connections the TCP iterator adopted, by record key:
    /// the first snapshot names those without an owner of their own.
    sk_owners: SkOwners,
    /// What the last snapshots reported: later ones carry only changes.
    reported: crate::platform::changes::Reported,
    /// The records by key, kept between snapshots for its capacity.
    records: diagview::Records,
    /// Where the programs put touched sockets (the diagnostics' refresh
    /// path): snapshots refresh only those.
    touched: Option<touched::Touched>,
    hooks: String,
    warnings: Vec<String>,
    /// Benchmark instrument: `collect` only empties the ring buffer.
    skip_user: bool,
    /// Snapshots collected so far.
    collected: u64,
    /// The lazy walk's idle connections, for the first snapshot
    /// (`Snapshot::standing`).
    standing: Vec<ConnSample>,
    /// Their baselines, by socket: the records hooks make later for them
    /// are rebased on these (standing.rs).
    bases: standing::Bases,
    /// Whether the read program makes their records
    /// (`SETTING_LAZY_READS`): until the last of them ends.
    lazy_reads: bool,
    /// Keeps programs loaded and links attached.
    _ebpf: Ebpf,
}

impl EbpfSource {
    pub fn open(opts: &SourceOptions) -> Result<Self, SourceError> {
        caps::check()?;
        release::check_kernel()?;
        let btf_path = opts.linux.btf.as_deref().unwrap_or(Path::new(BTF_PATH));
        let btf = read_btf(btf_path, opts.linux.btf.is_some())?;
        let offsets = kernel_offsets(&btf)?;
        let noop = bench_noop();
        let skip = BenchSkip::from_env()?;
        // Records only for connections that do something (the lazy walk),
        // where the connection table is allocated as records come (the BPF
        // memory allocator: Linux 6.1+) rather than zeroed whole at load.
        let lazy = btf.has_struct("bpf_mem_alloc");
        caps::raise_memlock();

        let embedded = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/tcptop"));
        // The UDP flows and connection tables allocated as entries come,
        // where the kernel's hash maps can (objflags.rs); an object not as
        // built loads as is (and the owners' walk inserts every record).
        let patched = lazy
            .then(|| {
                objflags::with_maps_flags(
                    embedded,
                    &[
                        (
                            MAP_UDP_FLOWS,
                            std::mem::size_of::<tcptop_common::ConnTuple>(),
                            std::mem::size_of::<tcptop_common::UdpFlow>(),
                            objflags::NO_PREALLOC,
                        ),
                        (
                            MAP_CONNS,
                            std::mem::size_of::<u64>(),
                            std::mem::size_of::<ConnStats>(),
                            objflags::NO_PREALLOC,
                        ),
                    ],
                )
                .ok()
            })
            .flatten();
        // An object not as built: the eager walk, and the kernel's `lazy`
        // off (it makes records for sockets the lazy walk left without one:
        // a lookup at each connection's end for nothing otherwise).
        let lazy = patched.is_some();
        let config = Config {
            ready: u32::from(!noop),
            udp: u32::from(opts.udp),
            bench_skip: skip.kernel,
            lazy: u32::from(lazy),
        };
        let bytes = patched.as_ref().map_or(embedded, objflags::Patched::bytes);
        let mut ebpf = EbpfLoader::new()
            .override_global(GLOBAL_OFFSETS, &offsets, true)
            .override_global(GLOBAL_CONFIG, &config, true)
            .map_max_entries(MAP_CONNS, opts.linux.max_conns())
            .map_max_entries(MAP_UDP_FLOWS, opts.linux.max_conns())
            .map_max_entries(tcptop_common::MAP_TOUCHED, touched::ring_bytes())
            .load(bytes)
            .map_err(|e| load_error(&e))?;

        // The kprobe set is for kernels without BTF tracing programs: it
        // takes raw tracepoints too (and so the VM matrix tests both kinds).
        let typed = opts.linux.hooks != Some(HookSet::Kprobe)
            && std::env::var_os("TCPTOP_RAW_TRACEPOINTS").is_none_or(|v| v == "0");
        let mut tracing = hooks::TracingBtf::new(&btf, typed);
        let btf_lifecycle =
            hooks::attach_lifecycle(&mut ebpf, &mut tracing).map_err(|e| required(&e))?;
        let mut warnings = Vec::new();
        // The map iterator is optional: where the kernel refuses it, the
        // kernel's socket diagnostics refresh the records instead, and the
        // state program completes their endpoints at ESTABLISHED.
        let mut touched = None;
        let conn_iter = match iter::ConnIter::attach(&mut ebpf, &mut tracing) {
            Ok(it) => Some(it),
            Err(e) => {
                hooks::unload(&mut ebpf, [iter::PROGRAM.to_string()]);
                // And a snapshot refreshes only the records the programs
                // touch (touched.rs): touching starts before any hook
                // attaches, so nothing a hook does is missed.
                match touched::Touched::start(&mut ebpf) {
                    Ok((t, lost)) => {
                        warnings.extend(lost);
                        touched = Some(t);
                    }
                    Err(e) => {
                        set_settings(&mut ebpf, SETTING_FILL_ESTABLISHED)?;
                        warnings.push(format!(
                            "{e}: every snapshot dumps the socket diagnostics of every namespace"
                        ));
                    }
                }
                warnings.push(format!(
                    "{e}: live connections' state, RTT and counters come from the \
                     kernel's socket diagnostics instead (sock_diag)"
                ));
                None
            }
        };
        let candidates: Vec<HookSet> = match opts.linux.hooks {
            Some(set) => vec![set],
            None => HookSet::ALL.to_vec(),
        };
        let set = hooks::attach_io(&mut ebpf, &candidates, &btf, &mut tracing)
            .map_err(|errors| no_hook_set(&errors, opts.linux.hooks.is_some()))?;
        warnings.extend(hooks::io_warning(set));
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
        // Owners of the sockets open before start: one walk of every
        // process's files in the kernel, or /proc's descriptor links where
        // the kernel refuses that iterator (the same answer, slower).
        // The sockets processes hold, about (their connections' room in
        // the lazy walk's findings): the machine's sockets or open files,
        // not above the table's size.
        let expect = procfs::machine_load()
            .map_or(0, |m| m.sockets.max(m.open_files))
            .min(u64::from(opts.linux.max_conns()));
        let expect = usize::try_from(expect).unwrap_or(0);
        let kernel_owners = match owners::walk_owners(&mut ebpf, &mut tracing, lazy, expect) {
            Ok(o) => Some(o),
            Err(e) => {
                warnings.push(format!(
                    "{e}: the owners of connections open before start are read from \
                     /proc's descriptor links instead (a slower start)"
                ));
                None
            }
        };
        let by_kernel = kernel_owners.is_some();
        let mut scan = procfs::scan(Path::new("/proc"), !by_kernel).unwrap_or_default();
        // Each socket's record key and inode, from that walk.
        let mut sockets = Vec::new();
        // Where that walk adopted the connections files hold: the TCP
        // sockets in use it found held, per namespace.
        let mut held = None;
        let mut owners_program = "";
        // An adopting walk's owners, made into `scan.owners` only where a
        // fallback below names connections by inode.
        let mut owned = Vec::new();
        // The lazy walk's idle connections, and their baselines.
        let mut standing = Vec::new();
        let mut bases = standing::Bases::default();
        if let Some(o) = kernel_owners {
            scan.owners = o.owners;
            sockets = o.sockets;
            held = o.held;
            owners_program = o.program;
            owned = o.owned;
            standing = o.standing;
            bases = o.bases;
        }
        let namespaces = procfs::namespace_files(&scan.namespaces);
        // Whether the TCP iterator adopted them, and in every namespace.
        let own = procfs::own_netns();
        let every = 1 + namespaces.iter().filter(|ns| Some(ns.inode) != own).count();
        let mut adopted_all = false;
        let mut walked = adopt::Walked::default();
        // The adoption writes each connection's inode only for /proc's
        // owners: the kernel's walk gave each socket's record key.
        let adopted = match adopt::adopt(
            &mut ebpf,
            &mut tracing,
            &namespaces,
            !by_kernel,
            held.as_ref(),
            &owned,
        ) {
            Ok(w) => {
                adopted_all = w.namespaces == every;
                walked = w;
                true
            }
            Err(e) => {
                warnings.push(format!(
                    "{e}: connections open before start are read from the kernel's socket \
                     diagnostics until their first call"
                ));
                false
            }
        };
        drop(tracing);
        if says_for_test("adoption") {
            warnings.push(format!(
                "test: adoption: owners' walk ({owners_program}) adopted: {}; namespaces: \
                 {every}, all adopted: {adopted_all}, left out of the TCP iterator's walks: {}",
                held.is_some(),
                walked.skipped
            ));
        }
        let mut hooks = String::from(set.as_str());
        if btf_lifecycle {
            hooks.push_str("+btf");
        }
        if conn_iter.is_none() {
            hooks.push_str("+diag");
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
        // Where the TCP iterator was refused, the first dump adopts every
        // connection without a record (below): the lazy walk's among them.
        if !adopted {
            standing = Vec::new();
            bases.clear();
        }
        // Connections the lazy walk left without a record get theirs at a
        // read no call hook sees (splice, zero-copy): their rows move live,
        // not only at their end. The program is the touches' read one
        // (attached already on the diagnostics' path); on while such
        // connections are open (each read of any socket costs a lookup).
        let mut lazy_reads = false;
        if !bases.is_empty() {
            let set = match touched.as_mut() {
                Some(t) => t.lazy_reads(true),
                None if conn_iter.is_some() => {
                    warnings.extend(touched::attach_for_lazy(&mut ebpf));
                    set_settings(&mut ebpf, SETTING_LAZY_READS).map_err(|e| e.to_string())
                }
                None => Err("the touches' programs are not in use".to_string()),
            };
            match set {
                Ok(()) => lazy_reads = true,
                Err(e) => warnings.push(format!("{e}: {}", touched::LAZY_READS_LOST)),
            }
        }
        let mut map_reader = mapread::MapReader::new(&ebpf).map_err(SourceError::Failed)?;
        // The first read's records: one per connection held, less those
        // the lazy walk left without one.
        map_reader.expect(
            scan.owners
                .len()
                .max(owned.len())
                .saturating_sub(bases.len()),
        );
        let mut owners_by_inode = |scan: &mut procfs::Scan| {
            if !owned.is_empty() {
                scan.owners = owners::owners_of(std::mem::take(&mut owned));
            }
        };
        if !adopted {
            owners_by_inode(&mut scan);
        }
        // Where an iterator was refused, the kernel's socket diagnostics
        // stand in (diagview.rs): one netlink socket per namespace, made
        // now (entering a namespace needs CAP_SYS_ADMIN), and a first dump
        // that adopts the connections no record has.
        // The owners of connections open before start, by their sockets'
        // inodes in a dump of the diagnostics (/proc's tables only where
        // no dump can name them all: reading them made the kernel walk its
        // whole table of connections per namespace and print each, a
        // quarter of start-up at 200,000 sockets).
        let mut seed_owners = StdHashMap::new();
        let mut complete = false;
        let diag = if conn_iter.is_none() || !adopted {
            let adopt = (!adopted).then_some((&mut map_reader, &scan.owners, &mut seed_owners));
            match open_diag(&namespaces, adopt) {
                Ok((view, failed)) => {
                    complete = failed.is_empty();
                    if !failed.is_empty() {
                        warnings.push(format!(
                            "socket diagnostics: cannot enter {} network namespace(s) \
                             (their connections show what the hooks record: bytes and \
                             states at birth and ESTABLISHED): {}",
                            failed.len(),
                            failed.join("; ")
                        ));
                    }
                    Some(view)
                }
                Err(e) => {
                    warnings.push(format!(
                        "socket diagnostics unavailable ({e}): live connections show what \
                         the hooks record (bytes per call, states at birth and ESTABLISHED)"
                    ));
                    None
                }
            }
        } else {
            None
        };
        // Adopted by the TCP iterator: named by the inodes it wrote.
        // Adopted from the diagnostics: named as they were adopted.
        let named = if adopted { adopted_all } else { complete };
        let sk_owners = if adopted_all {
            SkOwners::new(
                if by_kernel { &sockets } else { &walked.adopted },
                &scan.owners,
            )
        } else {
            SkOwners::default()
        };
        drop(walked);
        drop(sockets);
        let seeds = if named {
            Vec::new()
        } else {
            owners_by_inode(&mut scan);
            seed_owners.clear();
            seeds(procfs::sockets(Path::new("/proc"), &scan))
        };
        drop(scan);
        drop(owned);
        // Without the diagnostics, touches refresh nothing.
        if diag.is_none()
            && let Some(t) = touched.take()
        {
            t.stop();
        }
        let conns = take_map(&mut ebpf, MAP_CONNS, HashMap::try_from)?;
        let drops = take_map(&mut ebpf, MAP_DROPS, PerCpuArray::try_from)?;
        let ring = take_map(&mut ebpf, MAP_EVENTS, RingBuf::try_from)?;
        let events = events::EventQueue::start(ring)
            .map_err(|e| SourceError::Failed(format!("cannot start the event thread: {e}")))?;

        drop(btf);
        tune_heap();
        Ok(EbpfSource {
            conns,
            drops,
            events,
            event_buf: Vec::new(),
            live_buf: Vec::new(),
            map_reader,
            udp,
            conn_iter,
            diag,
            cgroups: cgroup::Resolver::new(),
            seeds,
            seed_owners,
            sk_owners,
            standing,
            bases,
            lazy_reads,
            reported: Default::default(),
            records: diagview::Records::new(),
            touched,
            hooks,
            warnings,
            skip_user: skip.user,
            collected: 0,
            _ebpf: ebpf,
        })
    }

    /// Reads every record, refreshed by the map iterator or from dumps of
    /// the socket diagnostics, as a sample into `live` (`complete`: the
    /// snapshot reports each) or, where dumps refresh them after the read,
    /// into `live_buf`; connections adopted from the first dump that
    /// changed go to `adopted_live`.
    fn read_all(
        &mut self,
        complete: bool,
        live: &mut Vec<ConnSample>,
        adopted_live: &mut Vec<ConnSample>,
    ) -> Result<(), SourceError> {
        // Records are refreshed from the dump where no iterator did it.
        let refresh = self.conn_iter.is_none();
        let dumps = self
            .diag
            .as_ref()
            .is_some_and(|v| refresh || v.has_adopted());
        // The iterator visits every bucket of the map (--max-conns of them:
        // ~1 ms at the default 65,536), records or not: with none, one key
        // lookup says so and the walk is skipped (most of an idle tcptop's
        // CPU). A record born after this check waits for the next snapshot's
        // walk, as one born after the walk does.
        let mut read = 0;
        if self.conns.keys().next().is_some() {
            if let Some(it) = &mut self.conn_iter {
                it.run().map_err(|e| {
                    SourceError::Failed(format!("cannot bring the connection map up to date: {e}"))
                })?;
            }
            if dumps {
                // Kept whole: the dumps below find records by endpoints.
                self.map_reader
                    .read_all(&mut self.live_buf)
                    .map_err(map_failed)?;
            } else {
                if complete {
                    live.reserve(self.map_reader.expected());
                }
                // As many as the last read found: a margin could take the
                // hash table to its next size for good.
                self.reported.expect(self.map_reader.last());
                let (owners, reported, bases) =
                    (&mut self.sk_owners, &mut self.reported, &self.bases);
                self.map_reader
                    .read_each(|keys, values| {
                        for (&sk, st) in keys.iter().zip(values) {
                            take_record(sk, st, bases, owners, reported, live);
                        }
                    })
                    .map_err(map_failed)?;
            }
            read = self.map_reader.last();
        }
        if let Some(t) = &mut self.touched {
            t.full_done(read);
        }
        if let Some(view) = self.diag.as_mut().filter(|_| dumps) {
            // Only the namespaces of records it refreshes, or of connections
            // it adopted: each dump costs milliseconds, records or not.
            let mut wanted: HashSet<u32> = view.adopted_namespaces().collect();
            if refresh {
                wanted.extend(self.live_buf.iter().map(|(_, st)| st.tuple.netns));
            }
            let records = &mut self.records;
            records.index(&self.live_buf, refresh);
            let records = &*records;
            let live_buf = &mut self.live_buf;
            let reported = &mut self.reported;
            let mut syn_sent = Vec::new();
            let mut untold = Vec::new();
            view.dump_each(
                |ns| wanted.contains(&ns),
                |k, c, adopted| {
                    if records.matched(&k, c, adopted, live_buf, &mut untold) {
                        return;
                    }
                    if c.state == TCP_SYN_SENT && records.connecting(&k) {
                        syn_sent.push((k, *c));
                    }
                    if let Some(b) = adopted {
                        let s = diagview::sample(k, c, b, false);
                        if reported.keep(&s) {
                            adopted_live.push(s);
                        }
                    }
                },
            )
            .map_err(diag_failed)?;
            records.complete_connecting(&syn_sent, live_buf);
            if let Some(t) = &mut self.touched {
                if t.says() {
                    eprintln!(
                        "touches: full refresh of {} records, {} untold",
                        live_buf.len(),
                        untold.len()
                    );
                }
                for sk in untold {
                    t.again(sk);
                }
            }
        }
        Ok(())
    }

    /// Reports the records of the touched `sockets` into `live` (with
    /// `every`, every record as it is read: the first snapshot, whose
    /// untouched records are as the TCP iterator adopted them or the hooks
    /// made them), each touched one refreshed first by one query of the
    /// socket diagnostics (one still connecting: from a dump of its
    /// namespace's connecting sockets). A touched socket without a record
    /// has ended (its CLOSE event is in the ring): it goes to `missing`.
    fn refresh_touched(
        &mut self,
        sockets: &[u64],
        every: bool,
        live: &mut Vec<ConnSample>,
        missing: &mut Vec<u64>,
    ) -> Result<(), SourceError> {
        let (Some(view), Some(touched)) = (self.diag.as_mut(), self.touched.as_mut()) else {
            return Ok(());
        };
        if every {
            live.reserve(self.map_reader.expected());
            self.reported.expect(self.map_reader.last());
        } else {
            self.reported.expect(sockets.len());
        }
        let (owners, reported, bases) = (&mut self.sk_owners, &mut self.reported, &self.bases);
        // Touched records still connecting (no source port yet).
        let mut connecting = Vec::new();
        let mut failed = None;
        // (test instrument) answers that left a count untold
        let mut untold = 0usize;
        let mut visit = |sk: u64, mut st: ConnStats, refresh: bool| {
            // After a failed query the snapshot fails: no more queries
            // (each may wait out the diagnostics' timeout).
            if failed.is_some() {
                return;
            }
            if refresh {
                if st.tuple.sport == 0 {
                    if st.tuple.dport != 0 {
                        connecting.push((sk, st));
                        touched.again(sk);
                        return;
                    }
                } else {
                    // Not found: ended (its CLOSE event follows), or in a
                    // namespace made after start: the record as the hooks
                    // keep it.
                    match view.refresh(&mut st) {
                        Ok(true) => {
                            untold += 1;
                            touched.again(sk);
                        }
                        Ok(false) => {}
                        Err(e) => {
                            failed.get_or_insert(e);
                        }
                    }
                }
            }
            take_record(sk, &st, bases, owners, reported, live);
        };
        if every {
            self.map_reader
                .read_each(|keys, values| {
                    for (&sk, st) in keys.iter().zip(values) {
                        visit(sk, *st, sockets.binary_search(&sk).is_ok());
                    }
                })
                .map_err(map_failed)?;
            touched.full_done(self.map_reader.last());
        } else {
            for &sk in sockets {
                match self.conns.get(&sk, 0) {
                    Ok(st) => visit(sk, st, true),
                    Err(_) => missing.push(sk),
                }
            }
        }
        if touched.says() {
            eprintln!(
                "touches: refreshed {} (every record: {every}; {} without a record, \
                 {untold} untold, {} connecting), {} samples",
                sockets.len(),
                missing.len(),
                connecting.len(),
                live.len(),
            );
        }
        if let Some(e) = failed {
            return Err(diag_failed(e));
        }
        if connecting.is_empty() {
            return Ok(());
        }
        let records = &mut self.records;
        records.index(&connecting, true);
        let wanted: HashSet<u32> = connecting.iter().map(|(_, st)| st.tuple.netns).collect();
        let mut syn_sent = Vec::new();
        view.dump_states_each(
            1 << TCP_SYN_SENT,
            |ns| wanted.contains(&ns),
            |k, c, _| {
                if records.connecting(&k) {
                    syn_sent.push((k, *c));
                }
            },
        )
        .map_err(diag_failed)?;
        records.complete_connecting(&syn_sent, &mut connecting);
        for (sk, st) in connecting {
            take_record(sk, &st, bases, owners, reported, live);
        }
        Ok(())
    }

    /// Counter `idx` of the drop counters' array, summed over CPUs (None
    /// if it cannot be read).
    fn counter(&self, idx: u32) -> Option<u64> {
        self.drops
            .get(&idx, 0)
            .ok()
            .map(|v| v.iter().copied().fold(0u64, u64::saturating_add))
    }

    fn read_drops(&self) -> Drops {
        let sum = |idx: u32| self.counter(idx).unwrap_or(0);
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

    fn process_lookup(&self) -> crate::platform::ProcLookup {
        Box::new(procfs::process_info)
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
        self.live_buf.clear();
        // The first snapshot has been applied (its samples, the start-up's
        // owners and records are gone): the heap's free pages between
        // live blocks go back to the system, once (9 MiB of 101 at 200,000
        // connections).
        self.collected += 1;
        if self.collected == 2 {
            release_free_heap();
        }
        if self.skip_user {
            self.events.drain_into(&mut self.event_buf);
            self.event_buf.clear();
            return Ok(Snapshot {
                drops: self.read_drops(),
                ..Snapshot::default()
            });
        }
        // Only what changed since the last snapshot goes into this one
        // (all of it in the first, and after a connection went missing).
        let complete = self.reported.begin();
        // Where touches are put (diag refresh path), only the touched
        // records, unless every connection must be seen (adopted ones
        // without a record have no touches).
        let refresh = match self.touched.as_mut() {
            Some(t) => {
                let adopted = self.diag.as_ref().is_none_or(|v| v.has_adopted());
                t.begin(complete, adopted)
            }
            None => touched::Refresh::Full,
        };
        // Adopted connections that made no call yet (no record), as the
        // dump shows them: those that changed, taken as they are read.
        let mut adopted_live = Vec::new();
        let partial = matches!(refresh, touched::Refresh::Only(_));
        // Touched sockets without a record: ended, or adopted from a dump.
        let mut missing = Vec::new();
        // Only the records that changed become samples (writing one per
        // record was 35 MB at 200,000 records, each snapshot), as they are
        // read where nothing refreshes them after the read (a copy of the
        // whole map in between was 35 MB of fresh pages more).
        let mut live = Vec::new();
        match refresh {
            touched::Refresh::Full => self.read_all(complete, &mut live, &mut adopted_live)?,
            touched::Refresh::First(sockets) => {
                self.refresh_touched(&sockets, true, &mut live, &mut missing)?;
            }
            touched::Refresh::Only(sockets) => {
                self.refresh_touched(&sockets, false, &mut live, &mut missing)?;
            }
        }
        // Records the dumps refreshed: taken from the end, their memory
        // given back as the samples grow (both were held whole at once: 70
        // MB at 200,000), in the order the map gave them, as records read
        // as they come are (the table meets its rows in the same order
        // each time).
        if !self.live_buf.is_empty() {
            self.live_buf.reverse();
            if complete {
                live.reserve(self.live_buf.len());
            }
            self.reported.expect(self.live_buf.len());
            while let Some((sk, st)) = pop_releasing(&mut self.live_buf) {
                take_record(
                    sk,
                    &st,
                    &self.bases,
                    &mut self.sk_owners,
                    &mut self.reported,
                    &mut live,
                );
            }
        }
        // Events after the map walk, drained to the end now: a connection
        // whose entry the walk missed because it was just deleted has its
        // CLOSE event in the buffer already (it is submitted before the
        // delete), so it is reported closed in this same snapshot.
        self.events.drain_into(&mut self.event_buf);
        if let Some(t) = self.touched.as_mut() {
            let ended: HashSet<u64> = self.event_buf.iter().map(|ev| ev.sk).collect();
            t.ended(&ended);
            // A touched socket without a record that did not end: one
            // adopted from the first dump (no call yet) changed state.
            if self.diag.as_ref().is_some_and(|v| v.has_adopted())
                && missing.iter().any(|sk| !ended.contains(sk))
            {
                t.full_next();
            }
        }
        let mut closed: Vec<ConnSample> = Vec::with_capacity(self.event_buf.len());
        for ev in self.event_buf.iter().filter(|ev| ev.kind == EVENT_CLOSE) {
            // One the lazy walk left without a record counts from its
            // baseline (standing.rs), as does one adopted from the first
            // dump.
            let mut st = ev.stats;
            self.bases.end(ev.sk, &mut st);
            match &mut self.diag {
                Some(view) if st.origin == ORIGIN_EXISTING => {
                    let key = convert::key(&st);
                    if let Some(b) = view.adopted(&key) {
                        diagview::rebase(&mut st, b);
                        view.forget(&key);
                    }
                    closed.push(convert::sample(ev.sk, &st, true));
                }
                _ => {
                    let mut c = convert::sample(ev.sk, &st, true);
                    self.sk_owners.fill(ev.sk, &mut c);
                    closed.push(c);
                }
            }
        }
        // The last connection the lazy walk left without a record ended:
        // reads need no lookup any more.
        if self.lazy_reads && self.bases.is_empty() {
            self.lazy_reads = false;
            let _ = match self.touched.as_mut() {
                Some(t) => t.lazy_reads(false),
                None => {
                    let fill = if self.conn_iter.is_some() {
                        0
                    } else {
                        SETTING_FILL_ESTABLISHED
                    };
                    set_settings(&mut self._ebpf, fill).map_err(|e| e.to_string())
                }
            };
        }
        // Every record was read: the first snapshot named those it could
        // (the table keeps a row's owner); the rest had an owner of their
        // own or none /proc could see.
        if !partial && !self.sk_owners.pids.is_empty() {
            self.sk_owners = SkOwners::default();
            // Given back before the table makes its rows.
            release_free_heap();
        }
        if !closed.is_empty() {
            let gone: convert::IdSet = closed.iter().map(|c| c.id).collect();
            live.retain(|c| !gone.contains(&c.id));
        }
        let records_end = live.len();
        // (A counter that cannot be read: the table is walked.)
        let made = self
            .udp
            .as_ref()
            .and_then(|_| self.counter(COUNT_UDP_FLOWS_MADE));
        if let Some(udp) = &mut self.udp {
            udp.collect(made, &mut live, &mut closed);
        }
        if !self.seeds.is_empty() {
            // The lazy walk's connections are named already (and reported
            // once, as standing rows): their seeds go.
            if !self.standing.is_empty() {
                let standing: HashSet<ConnKey> = self.standing.iter().map(|s| s.key).collect();
                self.seeds.retain(|s| !standing.contains(&s.key));
            }
            let known: HashSet<ConnKey> = live
                .iter()
                .chain(&closed)
                .chain(&adopted_live)
                .map(|c| c.key)
                .collect();
            for s in self.seeds.extract_if(.., |s| known.contains(&s.key)) {
                if s.pid != 0 {
                    self.seed_owners.insert(s.key, (s.pid, s.comm));
                }
            }
            live.extend(self.seeds.iter().cloned());
        }
        let reported = &mut self.reported;
        let others = live.split_off(records_end);
        live.extend(others.into_iter().filter(|s| reported.keep(s)));
        if !adopted_live.is_empty() {
            // One that ended since the dump: its CLOSED sample says it.
            if !closed.is_empty() {
                let closed_keys: HashSet<ConnKey> = closed.iter().map(|c| c.key).collect();
                adopted_live.retain(|s| !closed_keys.contains(&s.key));
            }
            // The smaller list into the larger (at start-up, 200,000
            // adopted connections were 35 MB copied once more).
            if adopted_live.len() > live.len() {
                std::mem::swap(&mut live, &mut adopted_live);
            }
            live.append(&mut adopted_live);
        }
        for c in &closed {
            reported.closed(&c.key);
        }
        if partial {
            // Only touched records were read: the others were not missed.
            reported.finish_partial();
        } else {
            reported.finish();
        }
        if complete {
            // The change hashes of a complete snapshot were noted at once
            // (changes.rs), from lists the heap keeps once freed: given
            // back before the table makes its rows (5 MiB more at the
            // peak otherwise, at 200,000 connections).
            release_free_heap();
        }
        if !self.seed_owners.is_empty() {
            // Once: the table keeps a row's owner when later samples have
            // none (held for every snapshot, the owners of 200,000
            // connections open before start were ~35 MB, and a lookup and
            // a copied name per connection per snapshot).
            for c in live.iter_mut().chain(closed.iter_mut()) {
                if let Some((pid, comm)) = self.seed_owners.remove(&c.key)
                    && c.pid == 0
                {
                    c.pid = pid;
                    c.comm = comm;
                }
            }
            if self.seed_owners.is_empty() {
                self.seed_owners = StdHashMap::new();
            }
        }
        // The lazy walk's idle connections, once: the table keeps them
        // until their records report them, or their CLOSE. One that ended
        // already is left out (its CLOSED sample says it).
        let mut standing = std::mem::take(&mut self.standing);
        if !standing.is_empty() && !closed.is_empty() {
            let closed_keys: HashSet<ConnKey> = closed.iter().map(|c| c.key).collect();
            standing.retain(|s| !closed_keys.contains(&s.key));
        }
        self.cgroups.fill(&mut live);
        self.cgroups.fill(&mut closed);
        self.cgroups.fill(&mut standing);
        Ok(Snapshot {
            live,
            closed,
            drops: self.read_drops(),
            partial: !complete,
            standing,
        })
    }
}

/// Puts the record of socket `sk` into `live` as a sample (named after
/// its holder found at start-up if no call named it) if the snapshot
/// reports it: changed, or the snapshot is complete.
///
/// A record is made at birth, before the kernel has filled in every
/// endpoint: connect() enters SYN_SENT before it picks the source port, a
/// listener's child enters SYN_RECV with the listener's (empty) remote
/// end. The iterator (or the dump, or the transition to ESTABLISHED) fills
/// them in later (the source port is picked within the connect call);
/// until then the record is left out, never shown with port 0. (No
/// connection has port 0 at either end.)
fn take_record(
    sk: u64,
    st: &ConnStats,
    bases: &standing::Bases,
    owners: &mut SkOwners,
    reported: &mut crate::platform::changes::Reported,
    live: &mut Vec<ConnSample>,
) {
    // One the lazy walk left without a record counts from its baseline.
    let mut sample = if st.origin == ORIGIN_EXISTING && !bases.is_empty() {
        let mut st = *st;
        bases.rebase(sk, &mut st);
        convert::sample(sk, &st, false)
    } else {
        convert::sample(sk, st, false)
    };
    owners.fill(sk, &mut sample);
    if incomplete(&sample.key) || !reported.keep(&sample) {
        return;
    }
    live.push(sample);
}

/// Whether a record's endpoints are not all known yet (see the kernel's
/// `conn::incomplete`: no connection has port 0 or an unspecified address
/// at either end).
fn incomplete(k: &ConnKey) -> bool {
    k.local.port() == 0
        || k.remote.port() == 0
        || k.local.ip().is_unspecified()
        || k.remote.ip().is_unspecified()
}

/// Gives the heap's free pages back to the system (glibc keeps freed
/// memory below the top of its heap mapped otherwise).
fn release_free_heap() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim only releases free memory.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Two changes to glibc's allocator, for the long run (other C libraries
/// keep their defaults):
///
/// * Start-up parsed the kernel's BTF (megabytes) and is done with it:
///   the freed heap goes back to the system (malloc_trim).
/// * Every snapshot allocates the same few large buffers again (closed
///   connections, rows to sort: megabytes a second under churn). By
///   default glibc maps each one fresh and unmaps it on free, so every
///   snapshot page-faulted its buffers in again (~6% of tcptop's CPU under
///   churn). Serve buffers up to 32 MiB from the heap and keep up to
///   32 MiB of what is freed there for the next snapshot: memory stays
///   near its high-water mark instead (bounded: a burst cannot pin more
///   than that).
fn tune_heap() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim only releases free memory, mallopt only sets
    // allocator parameters. Both are glibc extensions that no crate wraps
    // (libc declares them, for glibc only).
    unsafe {
        libc::malloc_trim(0);
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
            release::kernel_release()
        )));
    }
    btf::Btf::from_file(path).map_err(|e| {
        SourceError::Unsupported(format!(
            "cannot use the kernel BTF at \"{}\": {e}",
            path.display()
        ))
    })
}

/// Whether this build reads the benchmark and test switches
/// (`TCPTOP_BENCH_NOOP`, `TCPTOP_BENCH_SKIP`, `TCPTOP_TEST_REFUSE`): with
/// debug assertions (the tests' builds) or the `bench-switches` feature
/// (the benchmark scripts' release builds). Elsewhere the reads are
/// compiled out and the switches do nothing.
const SWITCHES: bool = cfg!(any(debug_assertions, feature = "bench-switches"));

/// Benchmark instrument: with this set to 1, every program is loaded and
/// attached as usual but returns at its first instruction (the `ready`
/// flag stays 0), so a benchmark can measure what the hooks cost before
/// they do any work: the kernel's own dispatch, the floor under tcptop's
/// overhead (`scripts/bench.py`, `scripts/bench-peers.py`: `tcptop-noop`).
/// Read only where [`SWITCHES`] says.
const BENCH_NOOP: &str = "TCPTOP_BENCH_NOOP";

/// Test instrument: `TCPTOP_TEST_SAY=adoption` adds a line among the
/// start-up's warnings saying how connections open before start were
/// adopted (which walks ran), so that a test can tell the paths apart;
/// `touches`, a line on stderr per snapshot on the touched path
/// (`touched.rs`).
/// Read only where [`SWITCHES`] says.
fn says_for_test(what: &str) -> bool {
    SWITCHES
        && std::env::var("TCPTOP_TEST_SAY").is_ok_and(|v| v.split(',').any(|k| k.trim() == what))
}

fn bench_noop() -> bool {
    SWITCHES && std::env::var_os(BENCH_NOOP).is_some_and(|v| v == "1")
}

/// Benchmark instrument: `TCPTOP_BENCH_SKIP=calls,ring,user` leaves parts
/// of tcptop's work out, so that `scripts/bench-peers.py` can measure what
/// each part costs a load (`tcptop-skip-*`): `calls`, the send/receive
/// programs return at once (no per-call counts and no owners from calls;
/// TCP bytes still come from the socket's counters at each read); `ring`, a
/// teardown deletes its record without sending the final copy; `user`,
/// user space only empties the ring buffer (no map walk, no rows, no
/// output). Whatever is left out is not counted: never for real use. Read
/// only where [`SWITCHES`] says.
const BENCH_SKIP: &str = "TCPTOP_BENCH_SKIP";

#[derive(Debug, Default, PartialEq, Eq)]
struct BenchSkip {
    /// `SKIP_*` bits for the programs.
    kernel: u32,
    user: bool,
}

impl BenchSkip {
    fn from_env() -> Result<BenchSkip, SourceError> {
        if !SWITCHES {
            return Ok(BenchSkip::default());
        }
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
    let mut o = Offsets {
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
        tcp_bytes_acked: off("tcp_sock", "bytes_acked")?,
        tcp_bytes_received: off("tcp_sock", "bytes_received")?,
        tcp_write_seq: off("tcp_sock", "write_seq")?,
        tcp_snd_una: off("tcp_sock", "snd_una")?,
        tcp_rcv_nxt: off("tcp_sock", "rcv_nxt")?,
        tcp_copied_seq: off("tcp_sock", "copied_seq")?,
        sk_flags: off("sock_common", "skc_flags")?,
        // enum sock_flags has begun SOCK_DEAD, SOCK_DONE since Linux 2.6.
        sock_done_bit: 1,
        sk_socket: off("sock", "sk_socket")?,
        socket_file: off("socket", "file")?,
        file_inode: off("file", "f_inode")?,
        inode_ino: off("inode", "i_ino")?,
        file_private_data: off("file", "private_data")?,
        task_tgid: off("task_struct", "tgid")?,
        socket_sk: off("socket", "sk")?,
        sock_size: btf
            .struct_size("sock")
            .map_err(|e| SourceError::Unsupported(format!("unsupported kernel layout: {e}")))?,
        tcp_window: 0,
        tcp_window_len: 0,
    };
    // Without a window (test switch: TCPTOP_TEST_REFUSE=window) each TCP
    // counter is read on its own, as on kernels whose layout has none.
    if hooks::refused_for_test("window", "the TCP window").is_ok()
        && let Some((start, len)) = tcptop_common::tcp_window(&o)
    {
        (o.tcp_window, o.tcp_window_len) = (start, len);
    }
    Ok(o)
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
fn no_hook_set(errors: &[(HookSet, hooks::LoadError)], forced: bool) -> SourceError {
    // Every set refused (EPERM) is a matter of privileges or policy, not of
    // the kernel's age.
    if errors
        .iter()
        .all(|(_, e)| e.cause() == hooks::Cause::Refused)
    {
        return SourceError::Privileges(caps::missing_message(&[]));
    }
    let mut msg = if forced {
        String::from("the requested hook set is not available on this kernel")
    } else {
        String::from("no hook set can count send/receive calls on this kernel")
    };
    msg.push_str(&format!(" ({}):", release::kernel_release()));
    for (set, e) in errors {
        msg.push_str(&format!("\n  {}: {e}", set.as_str()));
        if *set == HookSet::Tracepoint && e.cause() == hooks::Cause::Missing {
            msg.push_str(" (these tracepoints exist since Linux 6.3)");
        }
    }
    if !forced {
        msg.push_str(
            "\ntcptop needs one of: BTF tracing programs (fentry), kprobes, or Linux 6.3+ tracepoints.",
        );
    }
    SourceError::Unsupported(msg)
}

/// The error when a program every hook set needs (birth and teardown)
/// cannot be attached: refused, or not in this kernel.
fn required(e: &hooks::LoadError) -> SourceError {
    match e.cause() {
        hooks::Cause::Refused => {
            SourceError::Privileges(format!("{e}\n{}", caps::missing_message(&[])))
        }
        _ => SourceError::Unsupported(format!(
            "{e}.\nThis kernel ({}) lacks a hook tcptop needs (the tracepoints \
             inet_sock_set_state and tcp_destroy_sock, Linux 4.16+).",
            release::kernel_release()
        )),
    }
}

/// A failed read of the connection map, as the snapshot's error.
fn map_failed(e: std::io::Error) -> SourceError {
    SourceError::Failed(format!("cannot read the connection map: {e}"))
}

/// A failed dump or query of the socket diagnostics, likewise.
fn diag_failed(e: std::io::Error) -> SourceError {
    SourceError::Failed(format!("cannot read the kernel's socket diagnostics: {e}"))
}

/// What adopting from the diagnostics needs: the records' reader, the
/// owners of sockets by inode (/proc), and where to put the adopted
/// connections' owners.
type AdoptWith<'a> = (
    &'a mut mapread::MapReader,
    &'a procfs::Owners,
    &'a mut StdHashMap<ConnKey, (u32, CompactString)>,
);

/// The owners of the connections the TCP iterator adopted, by record key
/// (a pid each; the names once per process).
#[derive(Debug, Default)]
struct SkOwners {
    pids: StdHashMap<u64, u32>,
    comms: StdHashMap<u32, CompactString>,
}

impl SkOwners {
    /// From (record key, socket inode) pairs (the owners' walk's, or the
    /// TCP iterator's where that walk was refused) and the owners by
    /// socket inode.
    fn new(adopted: &[tcptop_common::Adopted], owners: &procfs::Owners) -> Self {
        let mut named = SkOwners::default();
        for a in adopted {
            if let Some((pid, comm)) = owners.get(&a.inode).filter(|_| a.inode != 0) {
                named.pids.insert(a.sk, *pid);
                named.comms.entry(*pid).or_insert_with(|| comm.clone());
            }
        }
        named
    }

    /// Names `sample`, the record `sk`'s, if it has no owner of its own.
    fn fill(&mut self, sk: u64, sample: &mut ConnSample) {
        if self.pids.is_empty() || sample.pid != 0 {
            return;
        }
        if let Some(pid) = self.pids.remove(&sk)
            && let Some(comm) = self.comms.get(&pid)
        {
            sample.pid = pid;
            sample.comm.clone_from(comm);
        }
    }
}

fn open_diag(
    namespaces: &[procfs::NsFile],
    adopt_with: Option<AdoptWith<'_>>,
) -> std::io::Result<(diagview::DiagView, Vec<String>)> {
    let (mut view, failed) = diagview::DiagView::open(namespaces, diagview::CONN_STATES)?;
    // The TCP iterator adopted them (a dump of every namespace for
    // nothing: 0.3 s of CPU at 200,000 sockets).
    let Some((reader, owners, seed_owners)) = adopt_with else {
        return Ok((view, failed));
    };
    let mut records = Vec::new();
    reader.read_all(&mut records)?;
    let known: HashSet<ConnKey> = records.iter().map(|(_, st)| convert::key(st)).collect();
    // The dump names each socket's inode: its owner, without /proc's
    // tables.
    view.adopt_unknown(
        |k| known.contains(k),
        |k, inode| {
            if let Some(owner) = owners.get(&u64::from(inode)) {
                seed_owners.insert(k, owner.clone());
            }
        },
    )?;
    Ok((view, failed))
}

/// Writes the run-time settings (`SETTING_*` bits) the programs read.
fn set_settings(ebpf: &mut Ebpf, bits: u32) -> Result<(), SourceError> {
    let map = ebpf
        .map_mut(MAP_SETTINGS)
        .ok_or_else(|| SourceError::Failed(format!("eBPF object has no map {MAP_SETTINGS:?}")))?;
    let mut settings: Array<&mut MapData, u32> = Array::try_from(map)
        .map_err(|e| SourceError::Failed(format!("eBPF map {MAP_SETTINGS:?}: {e}")))?;
    settings
        .set(0, &bits, 0)
        .map_err(|e| SourceError::Failed(format!("cannot write the programs' settings: {e}")))
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
        let (pid, comm) = s.owner.unwrap_or_default();
        seen.entry(key).or_insert(ConnSample {
            key,
            id: 0,
            pid,
            comm,
            state,
            counters: Counters::default(),
            rtt_us: None,
            cgroup_id: 0,
            active: None,
            workload: None,
        });
    }
    seen.into_values().collect()
}

/// Makes the calling thread nicer by `by` (the nice value is per thread
/// on Linux, and `setpriority(PRIO_PROCESS, 0)` sets the caller's). Raising
/// it needs no privilege; a failure only leaves it as it was.
pub fn lower_thread_priority(by: i32) {
    // SAFETY: getpriority and setpriority take plain integers; errno is
    // only read to tell a result of -1 from an error.
    unsafe {
        *libc::__errno_location() = 0;
        let now = libc::getpriority(libc::PRIO_PROCESS, 0);
        if now == -1 && *libc::__errno_location() != 0 {
            return;
        }
        libc::setpriority(libc::PRIO_PROCESS, 0, (now + by).min(19));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A dual-stack listener's child of an IPv4 peer, read between its
    /// ports and its IPv4-mapped addresses, shows the listener's `::`:
    /// not a connection to show yet (it was the 6.12 kprobe flake: the
    /// record was taken as complete and never re-read).
    #[test]
    fn incomplete_endpoints_are_not_shown() {
        let key = |l: &str, r: &str| ConnKey {
            proto: Proto::Tcp,
            local: l.parse().unwrap(),
            remote: r.parse().unwrap(),
            netns: 1,
        };
        assert!(!incomplete(&key("127.0.0.1:80", "127.0.0.1:40000")));
        assert!(!incomplete(&key("[::1]:80", "[::1]:40000")));
        assert!(incomplete(&key("127.0.0.1:0", "127.0.0.1:40000")));
        assert!(incomplete(&key("127.0.0.1:80", "127.0.0.1:0")));
        assert!(incomplete(&key("[::]:80", "[::]:40000")));
        assert!(incomplete(&key("0.0.0.0:80", "127.0.0.1:40000")));
        assert!(incomplete(&key("127.0.0.1:80", "0.0.0.0:40000")));
    }

    /// Every map, global and program user space asks for by name is in the
    /// embedded eBPF object. Its names are string literals in the eBPF
    /// crate: `#[map(name = ...)]` takes a literal only (aya-ebpf-macros
    /// parses a `LitStr` and emits `export_name`), so it cannot use
    /// `tcptop_common::MAP_*`; program names are the functions' names.
    /// Parsed as aya would before loading, no kernel needed.
    #[test]
    fn embedded_object_has_every_name_user_space_uses() {
        let bytes = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/tcptop"));
        let mut obj = aya_obj::Object::parse(bytes).unwrap();
        let mut programs = hooks::program_names();
        programs.extend(udp::program_names());
        programs.extend(touched::PROGRAMS.map(String::from));
        programs.push(iter::PROGRAM.to_string());
        programs.push(adopt::PROGRAM.to_string());
        programs.push(adopt::PROGRAM_ONLY.to_string());
        let mut missing: Vec<String> = MAPS
            .into_iter()
            .filter(|m| !obj.maps.contains_key(*m))
            .map(|m| format!("map {m}"))
            .chain(
                programs
                    .iter()
                    .filter(|p| !obj.programs.contains_key(*p))
                    .map(|p| format!("program {p}")),
            )
            .collect();
        // What `EbpfLoader::override_global` does with them: the symbols
        // exist and have the sizes of `Offsets` and `Config`.
        let offsets = [0u8; std::mem::size_of::<Offsets>()];
        let config = [0u8; std::mem::size_of::<Config>()];
        for (name, bytes) in [(GLOBAL_OFFSETS, &offsets[..]), (GLOBAL_CONFIG, &config[..])] {
            if let Err(e) =
                obj.patch_map_data(std::collections::HashMap::from([(name, (bytes, true))]))
            {
                missing.push(format!("global {name}: {e}"));
            }
        }
        assert!(missing.is_empty(), "not in the eBPF object: {missing:#?}");
    }

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
