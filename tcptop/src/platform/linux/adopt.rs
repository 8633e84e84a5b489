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
use std::os::fd::{AsFd, AsRawFd, OwnedFd};

use aya::{Ebpf, programs::Iter};

use super::hooks::{TracingBtf, chain, program};
use super::procfs::NetNs;
use super::refresh::{BPF_LINK_CREATE, BPF_TRACE_ITER, LinkCreate, bpf, walk};

/// Name of the iterator program in the eBPF object.
pub const PROGRAM: &str = "tcptop_adopt_tcp";

/// Walks the TCP sockets of our own namespace and of each of `namespaces`
/// (entered through its process's `/proc/<pid>/ns/net`), adopting every
/// connection into the map. Returns how many namespaces were walked.
pub fn adopt(ebpf: &mut Ebpf, btf: &mut TracingBtf, namespaces: &[NetNs]) -> Result<usize, String> {
    let btf = btf.parsed()?;
    let prog: &mut Iter = program(ebpf, PROGRAM)?
        .try_into()
        .map_err(|e| format!("{PROGRAM}: {e}"))?;
    prog.load("tcp", btf)
        .map_err(|e| format!("cannot load the TCP socket iterator: {}", chain(&e)))?;
    let walked = match prog.fd() {
        Ok(fd) => {
            let attr = LinkCreate {
                prog_fd: fd.as_fd().as_raw_fd() as u32,
                attach_type: BPF_TRACE_ITER,
                ..LinkCreate::default()
            };
            bpf(BPF_LINK_CREATE, &attr)
                .map_err(|e| format!("cannot link the TCP socket iterator: {e}"))
                .map(|link| walk_namespaces(&link, namespaces))
        }
        Err(e) => Err(format!("{PROGRAM}: {}", chain(&e))),
    };
    // The link went with `walk_namespaces`; the program runs no more.
    let _ = prog.unload();
    walked
}

/// Runs the iterator in our namespace, then in each of `namespaces`, on a
/// thread of its own: setns moves only the calling thread, and this one
/// ends here.
fn walk_namespaces(link: &OwnedFd, namespaces: &[NetNs]) -> usize {
    std::thread::scope(|s| {
        s.spawn(|| {
            let mut buf = vec![0u8; 4096];
            let own = own_netns();
            let mut walked = usize::from(walk(link, &mut buf).is_ok());
            for ns in namespaces.iter().filter(|ns| Some(ns.inode) != own) {
                // The process may have exited (or moved: then we walk
                // where it is now, which is harmless).
                let Ok(f) = File::open(format!("/proc/{}/ns/net", ns.pid)) else {
                    continue;
                };
                // SAFETY: setns on a namespace file we hold open; it moves
                // only this thread, which ends when the walks are done.
                if unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) } == 0
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

/// Inode of our own network namespace.
fn own_netns() -> Option<u32> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self/ns/net")
        .ok()
        .and_then(|m| u32::try_from(m.ino()).ok())
}
