//! Connections open before tcptop started, adopted into the connection map
//! at start-up by the kernel's TCP socket iterator (`tcptop_adopt_tcp`,
//! kernel side in `tcptop-ebpf/src/probes/adopt.rs`), once per network
//! namespace, after every hook is attached. Each gets its record with its
//! socket counters baselined; from then on the map's iterator keeps its
//! state, RTT and packets current, exactly as for a connection born since,
//! instead of it showing the state /proc gave at start-up until its first
//! call. (/proc still names the owners: `EbpfSource::collect`.)
//!
//! A TCP iterator walks the namespace of the thread that creates it, so a
//! thread of its own enters each namespace in turn (setns, which needs
//! CAP_SYS_ADMIN: without it only our own namespace is walked, and the
//! others' connections show from /proc as before). The program is unloaded
//! when done: it runs once.

use std::fs::File;
use std::os::fd::{AsFd, OwnedFd};

use aya::{Ebpf, programs::Iter};
use rustix::thread::{LinkNameSpaceType, move_into_link_name_space};

use super::hooks::{LoadError, TracingBtf, program};
use super::iter::{link_iterator, walk};
use super::procfs::{self, NsFile};

/// Name of the iterator program in the eBPF object.
pub const PROGRAM: &str = "tcptop_adopt_tcp";

/// Walks the TCP sockets of our own namespace and of each of `namespaces`
/// (entered through its process's `/proc/<pid>/ns/net`), adopting every
/// connection into the map. Returns how many namespaces were walked.
pub fn adopt(
    ebpf: &mut Ebpf,
    btf: &mut TracingBtf,
    namespaces: &[NsFile],
) -> Result<usize, LoadError> {
    let walked = link_iterator(ebpf, btf, PROGRAM, "tcp", None, "the TCP socket iterator")
        .map(|link| walk_namespaces(&link, namespaces));
    // The link went with `walk_namespaces`; the program runs no more.
    if let Ok(prog) = program(ebpf, PROGRAM)
        && let Ok(prog) = <&mut Iter>::try_from(prog)
    {
        let _ = prog.unload();
    }
    walked
}

/// Runs the iterator in our namespace, then in each of `namespaces`, on a
/// thread of its own: setns moves only the calling thread, and this one
/// ends here.
fn walk_namespaces(link: &OwnedFd, namespaces: &[NsFile]) -> usize {
    std::thread::scope(|s| {
        s.spawn(|| {
            let mut buf = vec![0u8; 4096];
            let own = procfs::own_netns();
            let mut walked = usize::from(walk(link, &mut buf).is_ok());
            for ns in namespaces.iter().filter(|ns| Some(ns.inode) != own) {
                // The process may have exited (or moved: then we walk
                // where it is now, which is harmless).
                let Ok(f) = File::open(&ns.path) else {
                    continue;
                };
                // setns moves only this thread, which ends when the walks
                // are done.
                if move_into_link_name_space(f.as_fd(), Some(LinkNameSpaceType::Network)).is_ok()
                    && walk(link, &mut buf).is_ok()
                {
                    walked += 1;
                }
            }
            walked
        })
        .join()
        .unwrap_or(0)
    })
}
