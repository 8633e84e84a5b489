//! The unprivileged mode: TCP connections from the kernel's socket
//! diagnostics alone (`diagview.rs`), as `ss` reads them, with owners from
//! /proc. Needs no capability; sees the connections of tcptop's own network
//! namespace (entering another needs CAP_SYS_ADMIN), the owners /proc lets
//! it see (all of them as root, the user's own otherwise).
//!
//! Each snapshot is a dump: a connection's bytes are its socket's counters
//! (`tcptop_common::app_bytes`: the same stream bytes the eBPF mode
//! counts), less what they were when tcptop first saw it open; one that
//! appears after start counts from its birth. A connection that has gone
//! since the previous dump is reported CLOSED with what the last dump
//! showed; one that opens and closes between two dumps is not seen, nor is
//! UDP.
//!
//! The dump is read as it comes, never stored. Most connections are idle
//! most of the time: each socket's answer is hashed ([`digest`]) and
//! compared with the last one, under its cookie, and only a changed
//! socket's sample is made (10,000 idle connections: tcptop's share of a
//! core from ~3.3% to ~2.6%, nearly all of it the kernel making the dump).

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasher, Hash, Hasher};
use std::net::{IpAddr, SocketAddr};
use std::path::Path;

use tcptop_common::TCP_LISTEN;

use super::diag::{DiagConn, DiagSocket};
use super::diagview::{self, Baseline};
use super::procfs;
use crate::model::{ConnKey, ConnSample, ConnState, Drops, Snapshot};
use crate::platform::{DataSource, SourceError, SourceOptions};

/// One connection being followed, by its socket's cookie (never reused,
/// unlike a 4-tuple). A dump visits every socket each snapshot and most
/// are idle: what that visit reads is kept small (32 bytes a socket with
/// its key: 20,000 of them fit a core's L2 cache), the rest is behind a
/// pointer, read only when the socket changed.
struct Followed {
    /// What the socket's answer was at the last dump ([`digest`]).
    digest: u64,
    /// The generation of the last dump that showed it.
    seen: u64,
    cold: Box<Cold>,
}

/// What a changed connection's sample is made from.
struct Cold {
    base: Baseline,
    /// Opened by connect() (its SYN counts).
    active: bool,
    last: ConnSample,
}

pub struct DiagSource {
    sock: DiagSocket,
    /// Our own network namespace's inode (the rows' netns).
    netns: u32,
    /// One batch of a dump.
    scratch: Vec<DiagConn>,
    /// Per socket per snapshot: foldhash (random seed), not SipHash.
    followed: HashMap<u64, Followed, foldhash::fast::RandomState>,
    /// Sockets first seen in the current dump, taken in after it (a new
    /// connection's side is told by the listeners, all known by then).
    fresh: Vec<DiagConn>,
    /// The listeners of the current dump: (netns, local address).
    listeners: HashSet<(u32, SocketAddr), foldhash::fast::RandomState>,
    owners: procfs::Owners,
    /// How many times `owners` was read: part of each digest, so a new
    /// reading makes every connection's owner looked at again.
    owners_gen: u64,
    /// Our effective uid: /proc shows the owners of our own sockets, not
    /// (without privileges) another user's.
    euid: u32,
    cgroups: super::cgroup::Resolver,
    generation: u64,
    /// The connections new or changed in the last dump (each snapshot
    /// after the first reports only these: `Snapshot::partial`).
    changed: Vec<ConnSample>,
    /// Whether a complete snapshot was reported (the first one is).
    reported: bool,
    warnings: Vec<String>,
    notice: String,
}

impl DiagSource {
    /// Opens the socket diagnostics of our own namespace; `why` says why
    /// the full mode is not used (shown with the notice).
    pub fn open(opts: &SourceOptions, why: Option<String>) -> Result<DiagSource, SourceError> {
        let sock = DiagSocket::open().map_err(|e| {
            SourceError::Unsupported(format!(
                "cannot read the kernel's socket diagnostics (NETLINK_SOCK_DIAG, what ss \
                 uses): {e}"
            ))
        })?;
        let mut warnings = Vec::new();
        if let Some(why) = why {
            // The first line of the full mode's refusal says why.
            warnings.push(format!(
                "running unprivileged: {}",
                why.lines().next().unwrap_or_default()
            ));
        }
        if opts.udp {
            warnings.push("UDP flows are not shown without eBPF".into());
        }
        let exe = std::env::current_exe()
            .map(|p| p.display().to_string())
            .unwrap_or_else(|_| "tcptop".into());
        let notice = format!(
            "unprivileged (socket diagnostics): no UDP, no connections shorter than a \
             snapshot, this namespace only; full mode: sudo setcap \
             cap_bpf,cap_perfmon,cap_net_admin+ep {exe}"
        );
        let mut source = DiagSource {
            sock,
            netns: procfs::own_netns().unwrap_or(0),
            scratch: Vec::new(),
            followed: HashMap::default(),
            fresh: Vec::new(),
            listeners: HashSet::default(),
            owners: procfs::socket_owners(Path::new("/proc")).unwrap_or_default(),
            owners_gen: 0,
            euid: rustix::process::geteuid().as_raw(),
            cgroups: super::cgroup::Resolver::new(),
            generation: 0,
            changed: Vec::new(),
            reported: false,
            warnings,
            notice,
        };
        // Connections open now count from now.
        source.follow(true).map_err(dump_error)?;
        Ok(source)
    }

    /// Dumps the namespace's connections and brings `followed` up to
    /// date; returns the connections that went away, and adds those new
    /// or changed since the previous dump to `changed`. `first`:
    /// everything open is adopted with its counters now as baseline.
    fn follow(&mut self, first: bool) -> std::io::Result<Vec<ConnSample>> {
        self.fresh.clear();
        self.listeners.clear();
        self.generation += 1;
        let generation = self.generation;
        let netns = self.netns;
        let owners_gen = self.owners_gen;
        let hasher = self.followed.hasher().clone();
        let states = diagview::CONN_STATES | 1 << TCP_LISTEN;
        let result = {
            let Self {
                sock,
                scratch,
                followed,
                fresh,
                listeners,
                owners,
                changed,
                ..
            } = self;
            sock.dump_tcp_each(states, scratch, &mut |c| {
                if c.state == TCP_LISTEN {
                    listeners.insert((netns, diagview::key(netns, c).local));
                    return;
                }
                let Some(f) = followed.get_mut(&c.cookie) else {
                    fresh.push(*c);
                    return;
                };
                f.seen = generation;
                let digest = digest(&hasher, c, owners_gen);
                if f.digest == digest {
                    // Idle since the last dump: most connections, most
                    // of the time. Nothing else is read.
                    return;
                }
                f.digest = digest;
                let key = diagview::key(netns, c);
                if let Some(s) = update(&mut f.cold, key, c, owners) {
                    changed.push(s);
                }
            })
        };
        if let Err(e) = result {
            // Half a dump: the sockets it did not reach must not be taken
            // for gone, and what changed stays in `changed` for the next
            // snapshot (their digests are taken). The next one dumps again.
            self.fresh.clear();
            return Err(e);
        }
        // New sockets whose owner /proc should show: read it again (at
        // most once a snapshot), so that they are named from their first
        // row; the next dump then looks at every connection's owner.
        let unknown = !first
            && self.fresh.iter().any(|c| {
                c.inode != 0
                    && !self.owners.contains_key(&u64::from(c.inode))
                    && (c.uid == self.euid || self.euid == 0)
            });
        if unknown && let Ok(owners) = procfs::socket_owners(Path::new("/proc")) {
            self.owners = owners;
            self.owners_gen += 1;
        }
        let mut gone = Vec::new();
        for c in std::mem::take(&mut self.fresh) {
            let key = diagview::key(netns, &c);
            // Open before start (the first dump), or born since: then
            // from zero, its SYN counted if it was opened by connect()
            // (no listener on its local end).
            let (base, active) = if first {
                (diagview::baseline(&c).unwrap_or_default(), false)
            } else {
                (Baseline::default(), !self.listening(&key))
            };
            let mut cold = Box::new(Cold {
                base,
                active,
                last: diagview::sample(key, &c, &base, active),
            });
            // Reported: the first snapshot reports every connection, a
            // later one what is new.
            let sample =
                update(&mut cold, key, &c, &self.owners).unwrap_or_else(|| cold.last.clone());
            self.changed.push(sample);
            self.followed.insert(
                c.cookie,
                Followed {
                    digest: digest(&hasher, &c, self.owners_gen),
                    seen: generation,
                    cold,
                },
            );
        }
        self.followed.retain(|_, f| {
            if f.seen == generation {
                return true;
            }
            // Gone since the last dump (its 4-tuple may be another
            // socket's now: that one is new).
            gone.push(closed_sample(&f.cold.last));
            false
        });
        Ok(gone)
    }

    /// Whether a listener of this namespace takes connections to `k`'s
    /// local end.
    fn listening(&self, k: &ConnKey) -> bool {
        let any = match k.local.ip() {
            IpAddr::V4(_) => IpAddr::from([0u8; 4]),
            IpAddr::V6(_) => IpAddr::from([0u8; 16]),
        };
        let l = &self.listeners;
        l.contains(&(k.netns, k.local))
            || l.contains(&(k.netns, SocketAddr::new(any, k.local.port())))
            // A dual-stack listener on [::] takes IPv4 connections too.
            || l.contains(&(k.netns, SocketAddr::new(IpAddr::from([0u8; 16]), k.local.port())))
    }
}

/// What a socket's answer says that a row shows (its state, owner,
/// counters as far as they can be told, RTT), hashed: an equal digest at
/// the next dump means an unchanged row. `owners_gen` is in it: a new
/// reading of /proc may name another owner.
fn digest(hasher: &foldhash::fast::RandomState, c: &DiagConn, owners_gen: u64) -> u64 {
    let mut h = hasher.build_hasher();
    (c.state, c.inode, c.wqueue, c.rqueue, owners_gen).hash(&mut h);
    if let Some(i) = &c.info {
        (i.bytes_acked, i.bytes_received, i.segs_in, i.segs_out).hash(&mut h);
        (i.total_retrans, i.rtt_us).hash(&mut h);
        // Whether each direction can be told (diagview::app_bytes).
        (
            diagview::told(i.last_ack_recv_ms),
            diagview::told(i.last_data_recv_ms),
        )
            .hash(&mut h);
    }
    h.finish()
}

/// A followed connection's sample from its new answer, if it differs from
/// the last one reported.
fn update(
    cold: &mut Cold,
    key: ConnKey,
    c: &DiagConn,
    owners: &procfs::Owners,
) -> Option<ConnSample> {
    let mut s = diagview::sample(key, c, &cold.base, cold.active);
    // Counters never go back (a dump races with the socket).
    let prev = &cold.last.counters;
    s.counters.tx_bytes = s.counters.tx_bytes.max(prev.tx_bytes);
    s.counters.rx_bytes = s.counters.rx_bytes.max(prev.rx_bytes);
    // The owner /proc names, else the last one known (a socket whose
    // owner closed it, or handed it on, is still the same connection).
    match owners.get(&u64::from(c.inode)) {
        Some((pid, comm)) => {
            s.pid = *pid;
            s.comm.clone_from(comm);
        }
        None => {
            s.pid = cold.last.pid;
            s.comm.clone_from(&cold.last.comm);
        }
    }
    if s.pid == cold.last.pid
        && s.comm == cold.last.comm
        && s.state == cold.last.state
        && s.counters == cold.last.counters
        && s.rtt_us == cold.last.rtt_us
    {
        return None;
    }
    cold.last = s.clone();
    Some(s)
}

/// The last sample of a connection that ended, as its CLOSED row.
fn closed_sample(last: &ConnSample) -> ConnSample {
    ConnSample {
        state: ConnState::Closed,
        ..last.clone()
    }
}

fn dump_error(e: std::io::Error) -> SourceError {
    SourceError::Failed(format!("cannot read the kernel's socket diagnostics: {e}"))
}

impl DataSource for DiagSource {
    fn hooks(&self) -> &str {
        "diag"
    }

    fn process_lookup(&self) -> crate::platform::ProcLookup {
        Box::new(procfs::process_info)
    }

    fn warnings(&self) -> &[String] {
        &self.warnings
    }

    fn notice(&self) -> Option<&str> {
        Some(&self.notice)
    }

    fn drop_privileges(&mut self, user: Option<&str>) -> Result<(), SourceError> {
        // Nothing here needs a privilege: give up whatever we have (and
        // become `user`), as the eBPF mode does.
        match super::privdrop::drop_privileges(user, || true) {
            Ok(()) => Ok(()),
            Err(e) if user.is_some() => Err(SourceError::Privileges(e)),
            Err(_) => Ok(()),
        }
    }

    fn collect(&mut self) -> Result<Snapshot, SourceError> {
        let mut closed = self.follow(false).map_err(dump_error)?;
        // The first snapshot is every connection; later ones what changed.
        let partial = std::mem::replace(&mut self.reported, true);
        let mut live = if partial {
            std::mem::take(&mut self.changed)
        } else {
            self.changed.clear();
            self.followed
                .values()
                .map(|f| f.cold.last.clone())
                .collect()
        };
        // Owners named by /proc: their groups from /proc too.
        self.cgroups.fill(&mut live);
        self.cgroups.fill(&mut closed);
        Ok(Snapshot {
            live,
            closed,
            drops: Drops::default(),
            partial,
            standing: Vec::new(),
        })
    }
}
