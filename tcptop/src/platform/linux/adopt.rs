//! Connections open before tcptop started, adopted into the connection map
//! at start-up by the kernel's TCP socket iterator (`tcptop_adopt_tcp`,
//! kernel side in `tcptop-ebpf/src/probes/adopt.rs`), once per network
//! namespace, after every hook is attached. Each gets its record with its
//! socket counters baselined; from then on the map's iterator keeps its
//! state, RTT and packets current, exactly as for a connection born since,
//! instead of it showing the state /proc gave at start-up until its first
//! call. The program writes each one's record key and socket inode to the
//! walk's output: /proc's descriptor links name their owners by inode
//! (`EbpfSource::open`), with no dump of the socket diagnostics.
//!
//! A TCP iterator walks the namespace of the thread that creates it, so a
//! thread of its own enters each namespace in turn (setns, which needs
//! CAP_SYS_ADMIN: without it only our own namespace is walked, and the
//! others' connections show from /proc as before). The program is unloaded
//! when done: it runs once.
//!
//! Where the owners' walk adopted the connections held by files
//! (`owners::PROGRAM_TYPED` or `PROGRAM_ADOPT`), a namespace is walked
//! only if the kernel counts a different number of TCP sockets in use
//! there (its sockstat's `inuse`, v4 and v6: listening or hashed
//! connections) than that walk found held: the others are connections no
//! process holds (orphans, children not yet accepted, the kernel's own).
//! Each walk visits every TCP socket of the machine (the table is shared)
//! to find its namespace's: at 200,000 sockets in 5 namespaces, 6 walks
//! were a fifth of start-up. The count is read after that walk: a socket
//! opened or closed in between makes the numbers differ and the namespace
//! is walked (time lost, nothing else). Only a held socket caught between
//! its state and its hashing (connect(), listen()) while an unheld
//! connection from before start exists could hide that one: it would then
//! be recorded at its first call, as where no walk runs.

use std::fs::File;
use std::os::fd::{AsFd, OwnedFd};

use aya::{Ebpf, programs::Iter};
use rustix::thread::{LinkNameSpaceType, move_into_link_name_space};
use tcptop_common::Adopted;

use super::diag::DiagSocket;
use super::hooks::{LoadError, TracingBtf, program, refused_for_test};
use super::iter::{Split, link_iterator, walk};
use super::owners::Held;
use super::procfs::{self, NsFile};
use crate::model::CompactString;

/// Name of the iterator program in the eBPF object that writes each
/// adopted connection's record key and socket inode.
pub const PROGRAM: &str = "tcptop_adopt_tcp";
/// The same, writing nothing (the owners were named by record key).
pub const PROGRAM_ONLY: &str = "tcptop_adopt_only";

/// What the walks did.
#[derive(Debug, Default)]
pub struct Walked {
    /// Namespaces whose connections are all adopted: walked to the end,
    /// or left out because the owners' walk adopted every one.
    pub namespaces: usize,
    /// Of those, the ones left out.
    pub skipped: usize,
    /// Each connection adopted (or found with a record): its record's key
    /// and its socket's inode, which /proc's descriptor links name.
    pub adopted: Vec<Adopted>,
}

/// Walks the TCP sockets of our own namespace and of each of `namespaces`
/// (entered through its process's `/proc/<pid>/ns/net`), adopting every
/// connection into the map; with `inodes`, each one's record key and
/// socket inode are in [`Walked::adopted`] (for naming by /proc's links).
/// With `held` (the owners' walk adopted what files hold), a namespace
/// whose every TCP socket in use was held is not walked, and where none
/// needs a walk the iterator is not even loaded.
pub fn adopt(
    ebpf: &mut Ebpf,
    btf: &mut TracingBtf,
    namespaces: &[NsFile],
    inodes: bool,
    held: Option<&Held>,
    files: &[(u64, u32, CompactString)],
) -> Result<Walked, LoadError> {
    let own = procfs::own_netns();
    // The TCP sockets in use the owners' walk found held in a namespace
    // (None: it did not adopt, and every namespace is walked).
    let held_in = |inode: Option<u32>| Some(held?.get(&inode?).copied().unwrap_or(0));
    // Our own namespace's count, read once for both of its checks.
    let own_in_use = held.and_then(|_| procfs::tcp_in_use(std::path::Path::new("/proc/self/net")));
    let walk_own = match (held_in(own), own_in_use) {
        (Some(held), Some(in_use)) => {
            in_use != held && !own_unheld_only_listeners(held, in_use, files)
        }
        _ => true,
    };
    let others: Vec<&NsFile> = namespaces
        .iter()
        .filter(|ns| Some(ns.inode) != own)
        .collect();
    let to_walk: Vec<&NsFile> = others
        .iter()
        .copied()
        .filter(|ns| {
            held_in(Some(ns.inode)).is_none_or(|held| {
                procfs::net_dir(&ns.path)
                    .as_deref()
                    .and_then(procfs::tcp_in_use)
                    != Some(held)
            })
        })
        .collect();
    let skipped = usize::from(!walk_own) + (others.len() - to_walk.len());
    if !walk_own && to_walk.is_empty() {
        return Ok(Walked {
            namespaces: skipped,
            skipped,
            adopted: Vec::new(),
        });
    }
    let name = if inodes { PROGRAM } else { PROGRAM_ONLY };
    let walked = link_iterator(ebpf, btf, name, "tcp", None, "the TCP socket iterator")
        .map(|link| walk_namespaces(&link, walk_own, &to_walk));
    // The link went with `walk_namespaces`; the program runs no more.
    if let Ok(prog) = program(ebpf, name)
        && let Ok(prog) = <&mut Iter>::try_from(prog)
    {
        let _ = prog.unload();
    }
    walked.map(|w| Walked {
        namespaces: w.namespaces + skipped,
        skipped,
        adopted: w.adopted,
    })
}

/// Whether the TCP sockets in use in our own namespace (`in_use`, of which
/// the owners' walk found `held`) that no file the walk saw holds
/// (`files`: each socket file's inode, holder and name) are all
/// listeners: then none is a connection to adopt, and the
/// namespace is not walked. A listener held by a process tcptop cannot
/// see (tcptop in a container with the host's network and a pid
/// namespace of its own) made every start walk the machine's whole table
/// of TCP sockets (~40 ms at 200,000). The listeners come from the socket
/// diagnostics (a dump of listeners only: the kernel then reads its table
/// of listeners, not the connections'). The counts are read after the
/// walk: a socket opened or closed in between makes them differ, and the
/// namespace is walked.
fn own_unheld_only_listeners(held: u64, in_use: u64, files: &[(u64, u32, CompactString)]) -> bool {
    const MOST: usize = 4096;
    if refused_for_test("listeners", "the listeners' dump").is_err() {
        return false;
    }
    if in_use <= held {
        return false;
    }
    let mut listeners = Vec::new();
    let dumped = DiagSocket::open()
        .and_then(|mut d| d.dump_tcp(1 << tcptop_common::TCP_LISTEN, &mut listeners));
    if dumped.is_err() || listeners.len() > MOST {
        return false;
    }
    let mut unheld: std::collections::HashSet<u64> =
        listeners.iter().map(|l| u64::from(l.inode)).collect();
    // A listener no file refers to (inode 0): none holds it.
    let no_file = listeners.iter().filter(|l| l.inode == 0).count() as u64;
    unheld.remove(&0);
    for (inode, ..) in files {
        if unheld.is_empty() {
            break;
        }
        unheld.remove(inode);
    }
    in_use == held + unheld.len() as u64 + no_file
}

/// Runs the iterator in our namespace (with `own`), then in each of
/// `namespaces`, on a thread of its own: setns moves only the calling
/// thread, and this one ends here.
fn walk_namespaces(link: &OwnedFd, own: bool, namespaces: &[&NsFile]) -> Walked {
    std::thread::scope(|s| {
        s.spawn(|| {
            // A page of records a read (the kernel fills it from its own
            // buffer of 8 pages).
            let mut buf = vec![0u8; 4096];
            let mut out = Records::default();
            let mut walked = usize::from(own && walk(link, &mut buf, |b| out.feed(b)).is_ok());
            for ns in namespaces {
                // The process may have exited (or moved: then we walk
                // where it is now, which is harmless).
                let Ok(f) = File::open(&ns.path) else {
                    continue;
                };
                // setns moves only this thread, which ends when the walks
                // are done.
                if move_into_link_name_space(f.as_fd(), Some(LinkNameSpaceType::Network)).is_ok()
                    && walk(link, &mut buf, |b| out.feed(b)).is_ok()
                {
                    walked += 1;
                }
            }
            Walked {
                namespaces: walked,
                skipped: 0,
                adopted: out.done,
            }
        })
        .join()
        .unwrap_or_default()
    })
}

/// The iterator's output as whole [`Adopted`] records, however the reads
/// split it.
#[derive(Debug, Default)]
struct Records {
    split: Split<RECORD>,
    done: Vec<Adopted>,
}

const RECORD: usize = std::mem::size_of::<Adopted>();

impl Records {
    fn feed(&mut self, bytes: &[u8]) {
        let done = &mut self.done;
        self.split.feed(bytes, |r| done.push(parse(r)));
    }
}

/// One record (`RECORD` bytes, native order, as the program wrote it).
fn parse(b: &[u8; RECORD]) -> Adopted {
    let word = |at: usize| {
        let mut w = [0u8; 8];
        w.copy_from_slice(&b[at..at + 8]);
        u64::from_ne_bytes(w)
    };
    Adopted {
        sk: word(0),
        inode: word(8),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes(records: &[Adopted]) -> Vec<u8> {
        records
            .iter()
            .flat_map(|a| [a.sk.to_ne_bytes(), a.inode.to_ne_bytes()])
            .flatten()
            .collect()
    }

    #[test]
    fn records_whole_however_the_reads_cut_them() {
        let want: Vec<Adopted> = (1..=40u64)
            .map(|i| Adopted {
                sk: 0xffff_8880_0000_0000 + i * 2048,
                inode: 1_000_000 + i,
            })
            .collect();
        let all = bytes(&want);
        // Every read size, from a byte at a time to all at once.
        for step in 1..=all.len() {
            let mut r = Records::default();
            for chunk in all.chunks(step) {
                r.feed(chunk);
            }
            assert_eq!(r.done, want, "reads of {step} bytes");
            assert!(!r.split.cut(), "reads of {step} bytes");
        }
        // A cut record at the end stays out.
        let mut r = Records::default();
        r.feed(&all[..all.len() - 3]);
        assert_eq!(r.done, want[..want.len() - 1]);
    }
}
