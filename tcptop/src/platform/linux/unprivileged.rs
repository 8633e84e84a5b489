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

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::path::Path;

use tcptop_common::TCP_LISTEN;

use super::diagview::{self, Baseline, DiagView};
use super::procfs;
use crate::model::{ConnKey, ConnSample, ConnState, Drops, Snapshot};
use crate::platform::{DataSource, SourceError, SourceOptions};

/// One connection being followed: which socket (a 4-tuple can be reused),
/// its baseline and whether it was opened by connect().
struct Followed {
    cookie: u64,
    base: Baseline,
    active: bool,
    last: ConnSample,
    seen: u64,
}

pub struct DiagSource {
    view: DiagView,
    /// Per socket per snapshot: foldhash (random seed), not SipHash.
    followed: HashMap<ConnKey, Followed, foldhash::fast::RandomState>,
    owners: HashMap<u64, (u32, String)>,
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
        let states = diagview::CONN_STATES | 1 << TCP_LISTEN;
        let (mut view, _) = DiagView::open(&[], states).map_err(|e| {
            SourceError::Unsupported(format!(
                "cannot read the kernel's socket diagnostics (NETLINK_SOCK_DIAG, what ss \
                 uses): {e}"
            ))
        })?;
        view.dump().map_err(dump_error)?;
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
            view,
            followed: HashMap::default(),
            owners: procfs::socket_owners(Path::new("/proc")).unwrap_or_default(),
            cgroups: super::cgroup::Resolver::new(),
            generation: 0,
            changed: Vec::new(),
            reported: false,
            warnings,
            notice,
        };
        // Connections open now count from now.
        source.follow(true);
        Ok(source)
    }

    /// Brings `followed` up to date with the last dump; returns the
    /// connections that went away, and leaves those new or changed since
    /// the previous dump in `changed`. `first`: everything open is adopted
    /// with its counters now as baseline.
    fn follow(&mut self, first: bool) -> Vec<ConnSample> {
        self.changed.clear();
        self.generation += 1;
        let generation = self.generation;
        let listeners: HashSet<(u32, SocketAddr), foldhash::fast::RandomState> = self
            .view
            .conns()
            .filter(|(_, c)| c.state == TCP_LISTEN)
            .map(|(k, _)| (k.netns, k.local))
            .collect();
        let listening = |k: &ConnKey| {
            let any = match k.local.ip() {
                IpAddr::V4(_) => IpAddr::from([0u8; 4]),
                IpAddr::V6(_) => IpAddr::from([0u8; 16]),
            };
            listeners.contains(&(k.netns, k.local))
                || listeners.contains(&(k.netns, SocketAddr::new(any, k.local.port())))
                // A dual-stack listener on [::] takes IPv4 connections too.
                || listeners.contains(&(k.netns, SocketAddr::new(IpAddr::from([0u8; 16]), k.local.port())))
        };
        let mut unknown_owner = false;
        let mut gone = Vec::new();
        for (key, c) in self.view.conns() {
            if c.state == TCP_LISTEN {
                continue;
            }
            let (f, new) = match self.followed.get_mut(&key) {
                Some(f) if f.cookie == c.cookie => (f, false),
                _ => {
                    // New: open before start (the first dump), or born
                    // since: then from zero, its SYN counted if it was
                    // opened by connect() (no listener on its local end).
                    let (base, active) = if first {
                        (diagview::baseline(c).unwrap_or_default(), false)
                    } else {
                        (Baseline::default(), !listening(&key))
                    };
                    let last = diagview::sample(key, c, &base, active);
                    let old = self.followed.insert(
                        key,
                        Followed {
                            cookie: c.cookie,
                            base,
                            active,
                            last,
                            seen: generation,
                        },
                    );
                    // Its 4-tuple was another socket's, gone since the
                    // last dump: that one ended.
                    if let Some(old) = old {
                        gone.push(closed_sample(&old.last));
                    }
                    match self.followed.get_mut(&key) {
                        Some(f) => (f, true),
                        None => continue,
                    }
                }
            };
            let mut s = diagview::sample(key, c, &f.base, f.active);
            let owner = self.owners.get(&u64::from(c.inode));
            if owner.is_none() && c.inode != 0 {
                unknown_owner = true;
            }
            // Counters never go back (a dump races with the socket).
            let prev = &f.last.counters;
            s.counters.tx_bytes = s.counters.tx_bytes.max(prev.tx_bytes);
            s.counters.rx_bytes = s.counters.rx_bytes.max(prev.rx_bytes);
            let same_owner = match owner {
                Some((pid, comm)) => f.last.pid == *pid && f.last.comm == *comm,
                None => f.last.pid == 0,
            };
            f.seen = generation;
            if !new
                && same_owner
                && s.state == f.last.state
                && s.counters == f.last.counters
                && s.rtt_us == f.last.rtt_us
            {
                // Idle since the last dump: most connections, most of the
                // time. Nothing to copy, nothing for the table to look up.
                continue;
            }
            if let Some((pid, comm)) = owner {
                s.pid = *pid;
                s.comm.clone_from(comm);
            }
            self.changed.push(s.clone());
            f.last = s;
        }
        if unknown_owner {
            // New sockets: /proc once more (at most once a snapshot), and
            // their owners from the next snapshot on.
            if let Ok(owners) = procfs::socket_owners(Path::new("/proc")) {
                self.owners = owners;
            }
        }
        self.followed.retain(|_, f| {
            if f.seen == generation {
                return true;
            }
            gone.push(closed_sample(&f.last));
            false
        });
        gone
    }
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
        self.view.dump().map_err(dump_error)?;
        let mut closed = self.follow(false);
        // The first snapshot is every connection; later ones what changed.
        let partial = std::mem::replace(&mut self.reported, true);
        let mut live = if partial {
            std::mem::take(&mut self.changed)
        } else {
            self.followed.values().map(|f| f.last.clone()).collect()
        };
        // Owners named by /proc: their groups from /proc too.
        self.cgroups.fill(&mut live);
        self.cgroups.fill(&mut closed);
        Ok(Snapshot {
            live,
            closed,
            drops: Drops::default(),
            partial,
        })
    }
}
