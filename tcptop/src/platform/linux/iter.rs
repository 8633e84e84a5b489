//! The connection map's iterator (`tcptop_iter_conns`, kernel side in
//! `tcptop-ebpf/src/probes/iter.rs`): run right before each snapshot reads
//! the map, it copies every connection's current state, socket counters
//! and (while incomplete) endpoints from its socket into its record.
//!
//! Aya loads the program; the link and the iterators made from it are two
//! bpf() commands (`bpf.rs`): aya links iterators without a target (this
//! one's target is a map) and turns a link into an iterator only once,
//! consuming it, where a snapshot needs a fresh one each time. The link is
//! a file descriptor we own: dropping it detaches.

use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use aya::{Ebpf, maps::Map, programs::Iter};
use tcptop_common::MAP_CONNS;

use super::bpf;
use super::hooks::{LoadError, TracingBtf, program, refused_for_test};

/// Name of the iterator program in the eBPF object.
pub const PROGRAM: &str = "tcptop_iter_conns";

/// Partial walks accepted in one run: 4,194,304 records (the most
/// --max-conns allows) at a million per read, with room to spare.
const MAX_PARTIAL_READS: u32 = 16;

/// The connection map's attached iterator.
pub struct ConnIter {
    link: OwnedFd,
    /// Read buffer for the iterator's (empty) output: the kernel walks the
    /// map until the buffer is full or the walk ends.
    buf: Vec<u8>,
}

impl ConnIter {
    /// Loads the iterator program and links it to the connection map.
    /// Needs BTF tracing programs and map iterators (Linux 5.9+).
    pub fn attach(ebpf: &mut Ebpf, btf: &mut TracingBtf) -> Result<Self, LoadError> {
        // A descriptor of its own: loading borrows `ebpf`, which holds the map.
        let map_fd = conns_fd(ebpf)?
            .try_clone_to_owned()
            .map_err(|e| LoadError::kernel("duplicating the connection map's descriptor", &e))?;
        let link = link_iterator(
            ebpf,
            btf,
            PROGRAM,
            "bpf_map_elem",
            Some(map_fd.as_fd()),
            "the connection map's iterator",
        )?;
        Ok(ConnIter {
            link,
            buf: vec![0; 4096],
        })
    }

    /// Walks the connection map once, bringing its records up to date.
    pub fn run(&mut self) -> io::Result<()> {
        walk(&self.link, &mut self.buf, |_| {})
    }
}

/// The connection map's descriptor (owned by `ebpf`).
pub(super) fn conns_fd(ebpf: &Ebpf) -> Result<BorrowedFd<'_>, LoadError> {
    match ebpf.map(MAP_CONNS) {
        Some(Map::HashMap(m)) => Ok(m.fd().as_fd()),
        _ => Err(LoadError::other(
            MAP_CONNS,
            "the eBPF object has no such hash map",
        )),
    }
}

/// Loads the iterator program `name` for the kernel's iterator `target`
/// and links it (to the map `map_fd`, for a map element iterator);
/// `what` names it in messages. The link is a descriptor we own:
/// dropping it detaches.
pub(super) fn link_iterator(
    ebpf: &mut Ebpf,
    btf: &mut TracingBtf,
    name: &str,
    target: &str,
    map_fd: Option<BorrowedFd<'_>>,
    what: &str,
) -> Result<OwnedFd, LoadError> {
    refused_for_test("iter", what)?;
    let btf = btf.parsed()?;
    let prog: &mut Iter = program(ebpf, name)?
        .try_into()
        .map_err(|e| LoadError::other(name, format!("{e}")))?;
    prog.load(target, btf)
        .map_err(|e| LoadError::kernel(format!("loading {what}"), &e))?;
    let prog_fd = prog
        .fd()
        .map_err(|e| LoadError::kernel(format!("loading {what}"), &e))?
        .as_fd();
    bpf::link_iterator(prog_fd, map_fd)
        .map_err(|e| LoadError::kernel(format!("linking {what}"), &e))
}

/// Makes an iterator from the iterator link `link` and runs it to the end,
/// handing what its program writes to `output` as it is read (`buf` at a
/// time; a program's record may be split between two calls). A read
/// walks until `buf` is full or the walk ends (0), except that one read
/// call visits at most a million objects (the kernel's MAX_ITER_OBJECTS)
/// and, having nothing to return, fails with EAGAIN; the next read goes
/// on from there. --max-conns allows 4,194,304 records: a few reads at
/// most.
pub(super) fn walk(
    link: &OwnedFd,
    buf: &mut [u8],
    mut output: impl FnMut(&[u8]),
) -> io::Result<()> {
    let mut iter = File::from(bpf::iter_create(link.as_fd())?);
    let mut again = 0;
    loop {
        match iter.read(buf) {
            Ok(0) => return Ok(()),
            Ok(n) => output(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock && again < MAX_PARTIAL_READS => {
                again += 1;
            }
            Err(e) => return Err(e),
        }
    }
}

/// An iterator's output of fixed-size records (`N` bytes each, as its
/// program wrote them with `bpf_seq_write`) whole, however the reads cut
/// it: the start of a record a read cut waits for the rest.
#[derive(Debug, Default)]
pub(super) struct Split<const N: usize> {
    partial: Vec<u8>,
}

impl<const N: usize> Split<N> {
    /// Hands each whole record of `bytes` (with what the last call left)
    /// to `each`, in order.
    pub(super) fn feed(&mut self, mut bytes: &[u8], mut each: impl FnMut(&[u8; N])) {
        if !self.partial.is_empty() {
            let take = (N - self.partial.len()).min(bytes.len());
            let (head, rest) = bytes.split_at(take);
            self.partial.extend_from_slice(head);
            bytes = rest;
            if self.partial.len() < N {
                return;
            }
            if let Ok(record) = <&[u8; N]>::try_from(self.partial.as_slice()) {
                each(record);
            }
            self.partial.clear();
        }
        let (whole, rest) = bytes.as_chunks::<N>();
        whole.iter().for_each(&mut each);
        self.partial.extend_from_slice(rest);
    }

    /// Whether a cut record is waiting for its rest.
    #[cfg(test)]
    pub(super) fn cut(&self) -> bool {
        !self.partial.is_empty()
    }
}
