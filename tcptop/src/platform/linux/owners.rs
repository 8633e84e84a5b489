//! The owners of sockets open before start, from the kernel's iterator
//! over every process's open files (`tcptop_owners`, kernel side in
//! `tcptop-ebpf/src/probes/owners.rs`): one walk at start-up, then the
//! program is unloaded.
//!
//! The same answer as /proc's descriptor links (`procfs::scan`: socket
//! inode -> lowest process id holding it, with its name), at a fraction
//! of the cost: /proc makes a dentry and an inode for each descriptor it
//! lists and resolves each link again, half of tcptop's start-up CPU at
//! 200,000 sockets. Where the kernel refuses the iterator, /proc it is.

use std::collections::hash_map::Entry;

use aya::{Ebpf, programs::Iter};
use tcptop_common::{Adopted, Owned};

use super::hooks::{LoadError, TracingBtf, program, refused_for_test};
use super::iter::{Split, link_iterator, walk};
use crate::model::CompactString;

/// Name of the iterator program in the eBPF object.
pub const PROGRAM: &str = "tcptop_owners";

pub use super::procfs::Owners;

/// What the walk found.
#[derive(Debug, Default)]
pub struct Walked {
    /// The owner of each socket, by inode.
    pub owners: Owners,
    /// Each socket's `struct sock` (a TCP record's key) and inode, once
    /// per holder: connections the TCP iterator adopts are named by key.
    pub sockets: Vec<Adopted>,
}

/// Walks every process's open files once; the owner of each socket.
pub fn walk_owners(ebpf: &mut Ebpf, btf: &mut TracingBtf) -> Result<Walked, LoadError> {
    const WHAT: &str = "the process files' iterator";
    // Its own test switch too: the TCP iterator's adoption with /proc's
    // owners is a path of its own.
    refused_for_test("owners", WHAT)?;
    let walked = link_iterator(ebpf, btf, PROGRAM, "task_file", None, WHAT).and_then(|link| {
        // 16 pages a read: 2,048 records.
        let mut buf = vec![0u8; 64 * 1024];
        let mut out = Records::default();
        walk(&link, &mut buf, |b| out.feed(b))
            .map(|()| out.walked)
            .map_err(|e| LoadError::kernel(format!("reading {WHAT}"), &e))
    });
    if let Ok(prog) = program(ebpf, PROGRAM)
        && let Ok(prog) = <&mut Iter>::try_from(prog)
    {
        let _ = prog.unload();
    }
    walked
}

const RECORD: usize = std::mem::size_of::<Owned>();

/// The iterator's output as owners, however the reads split it.
#[derive(Debug, Default)]
struct Records {
    split: Split<RECORD>,
    walked: Walked,
    /// The last process's name, shared by its next sockets (they come
    /// together: the walk goes a process at a time).
    last: Option<(u32, [u8; 16], CompactString)>,
}

impl Records {
    fn feed(&mut self, bytes: &[u8]) {
        let mut split = std::mem::take(&mut self.split);
        split.feed(bytes, |r| self.add(parse(r)));
        self.split = split;
    }

    /// Keeps the lowest process id for each socket, as /proc's scan does
    /// (a socket inherited across fork is held by both).
    fn add(&mut self, o: Owned) {
        let name = match &self.last {
            Some((tgid, comm, name)) if *tgid == o.tgid && *comm == o.comm => name.clone(),
            _ => {
                let len = o.comm.iter().position(|&b| b == 0).unwrap_or(o.comm.len());
                // Any process can name itself with non-UTF-8 bytes: decode lossily.
                let name = CompactString::from_utf8_lossy(&o.comm[..len]);
                self.last = Some((o.tgid, o.comm, name.clone()));
                name
            }
        };
        if o.sk != 0 {
            self.walked.sockets.push(Adopted {
                sk: o.sk,
                inode: o.inode,
            });
        }
        match self.walked.owners.entry(o.inode) {
            Entry::Vacant(slot) => {
                slot.insert((o.tgid, name));
            }
            Entry::Occupied(mut slot) if o.tgid < slot.get().0 => {
                slot.insert((o.tgid, name));
            }
            Entry::Occupied(_) => {}
        }
    }
}

/// One record (`RECORD` bytes, native order, as the program wrote it).
fn parse(b: &[u8; RECORD]) -> Owned {
    let mut inode = [0u8; 8];
    inode.copy_from_slice(&b[0..8]);
    let mut sk = [0u8; 8];
    sk.copy_from_slice(&b[8..16]);
    let mut tgid = [0u8; 4];
    tgid.copy_from_slice(&b[16..20]);
    let mut comm = [0u8; 16];
    comm.copy_from_slice(&b[24..40]);
    Owned {
        inode: u64::from_ne_bytes(inode),
        sk: u64::from_ne_bytes(sk),
        tgid: u32::from_ne_bytes(tgid),
        _pad: 0,
        comm,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owned(inode: u64, tgid: u32, name: &[u8]) -> Owned {
        let mut comm = [0u8; 16];
        comm[..name.len()].copy_from_slice(name);
        Owned {
            inode,
            // A kernel address of its own for each socket.
            sk: 0xffff_8880_0000_0000 + inode * 4096,
            tgid,
            _pad: 0,
            comm,
        }
    }

    fn bytes(records: &[Owned]) -> Vec<u8> {
        records
            .iter()
            .flat_map(|o| {
                let mut b = Vec::with_capacity(RECORD);
                b.extend_from_slice(&o.inode.to_ne_bytes());
                b.extend_from_slice(&o.sk.to_ne_bytes());
                b.extend_from_slice(&o.tgid.to_ne_bytes());
                b.extend_from_slice(&[0xaa; 4]);
                b.extend_from_slice(&o.comm);
                b
            })
            .collect()
    }

    #[test]
    fn owners_whole_however_the_reads_cut_them() {
        let records: Vec<Owned> = (1..=30u64)
            .map(|i| owned(1_000 + i, 100 + (i / 7) as u32, b"nginx"))
            .collect();
        let all = bytes(&records);
        for step in 1..=all.len() {
            let mut r = Records::default();
            for chunk in all.chunks(step) {
                r.feed(chunk);
            }
            assert_eq!(
                r.walked.owners.len(),
                records.len(),
                "reads of {step} bytes"
            );
            for o in &records {
                assert_eq!(
                    r.walked.owners.get(&o.inode),
                    Some(&(o.tgid, CompactString::from("nginx"))),
                    "reads of {step} bytes"
                );
            }
            // Every socket's key and inode, in the walk's order.
            let keys: Vec<Adopted> = records
                .iter()
                .map(|o| Adopted {
                    sk: o.sk,
                    inode: o.inode,
                })
                .collect();
            assert_eq!(r.walked.sockets, keys, "reads of {step} bytes");
            assert!(!r.split.cut(), "reads of {step} bytes");
        }
        // A cut record at the end stays out.
        let mut r = Records::default();
        r.feed(&all[..all.len() - 5]);
        assert_eq!(r.walked.owners.len(), records.len() - 1);
    }

    #[test]
    fn lowest_pid_wins_and_names_are_decoded() {
        let mut r = Records::default();
        r.feed(&bytes(&[
            owned(7, 300, b"child"),
            owned(7, 200, b"parent"),
            owned(7, 400, b"grandchild"),
            // A full 16-byte name has no NUL; bad UTF-8 is replaced.
            owned(8, 50, b"0123456789abcdef"),
            owned(9, 51, b"a\xffb\x1b"),
        ]));
        assert_eq!(r.walked.owners[&7], (200, CompactString::from("parent")));
        assert_eq!(
            r.walked.owners[&8],
            (50, CompactString::from("0123456789abcdef"))
        );
        assert_eq!(
            r.walked.owners[&9],
            (51, CompactString::from("a\u{fffd}b\u{1b}"))
        );
    }
}
