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
//!
//! Where the kernel allows it, the walk also adopts every TCP connection a
//! process holds (`tcptop_owners_typed` on Linux 5.11+, `tcptop_owners_adopt`
//! before; named in the kernel after its lowest-pid holder) and counts,
//! per namespace, the TCP sockets held that the kernel counts as in use:
//! `adopt.rs` walks a namespace with the TCP iterator only where the
//! kernel counts more (connections no process holds: orphans, children
//! not yet accepted, the kernel's).

use std::collections::hash_map::Entry;

use aya::{Ebpf, programs::Iter};
use tcptop_common::{Adopted, ConnStats, ORIGIN_EXISTING, Owned, Standing};

use super::hooks::{LoadError, TracingBtf, program, refused_for_test};
use super::iter::{Split, link_iterator, walk};
use super::standing::Bases;
use crate::model::{CompactString, ConnSample};

/// Name of the iterator program in the eBPF object.
pub const PROGRAM: &str = "tcptop_owners";
/// The same walk, adopting the TCP connections held by files.
pub const PROGRAM_ADOPT: &str = "tcptop_owners_adopt";
/// The adopting walk with typed pointers (fewer probe reads; Linux 5.11+).
pub const PROGRAM_TYPED: &str = "tcptop_owners_typed";
/// The typed walk that hands idle connections to user space instead of
/// inserting records (where the table is allocated as records come).
pub const PROGRAM_LAZY: &str = "tcptop_owners_lazy";

pub use super::procfs::Owners;

/// What the walk found.
#[derive(Debug, Default)]
pub struct Walked {
    /// The owner of each socket, by inode (the naming walk's).
    pub owners: Owners,
    /// Where the walk adopted: each socket file's (inode, holder, name),
    /// once per holder, in the walk's order. Its records are named in the
    /// kernel, so the owners by inode are wanted only where a fallback
    /// names connections by inode ([`owners_of`]): made at every start,
    /// the map of 200,000 sockets was ~15 ms (random inserts into 8 MB),
    /// half of what reading the walk cost.
    pub owned: Vec<(u64, u32, CompactString)>,
    /// Each socket's `struct sock` (a TCP record's key) and inode, once
    /// per holder: connections the TCP iterator adopts are named by key.
    /// Empty where the walk adopted (its records are named already).
    pub sockets: Vec<Adopted>,
    /// Where the walk adopted (`PROGRAM_TYPED` or `PROGRAM_ADOPT`): the
    /// TCP sockets held that the kernel counts as in use, per namespace
    /// (inode number), each socket once however many hold it.
    pub held: Option<Held>,
    /// The program that walked.
    pub program: &'static str,
    /// The lazy walk's: the first sample of each connection it left
    /// without a record (id 0: see `Snapshot::standing`), and their
    /// baselines.
    pub standing: Vec<ConnSample>,
    pub bases: Bases,
}

/// Namespace inode -> TCP sockets in use held by a file.
pub type Held = foldhash::HashMap<u32, u64>;

/// The owner of each socket by inode, from an adopting walk's
/// [`Walked::owned`]: the lowest process id of its holders, as /proc's
/// scan gives.
pub fn owners_of(owned: Vec<(u64, u32, CompactString)>) -> Owners {
    let mut owners = Owners::default();
    owners.reserve(owned.len());
    for (inode, tgid, name) in owned {
        note_owner(&mut owners, inode, tgid, name);
    }
    owners
}

/// Keeps `tgid` as the owner of `inode` if it is the lowest seen.
fn note_owner(owners: &mut Owners, inode: u64, tgid: u32, name: CompactString) {
    match owners.entry(inode) {
        Entry::Vacant(slot) => {
            slot.insert((tgid, name));
        }
        Entry::Occupied(mut slot) if tgid < slot.get().0 => {
            slot.insert((tgid, name));
        }
        Entry::Occupied(_) => {}
    }
}

/// Walks every process's open files once; the owner of each socket,
/// adopting the TCP connections held where the kernel allows it (`lazy`:
/// the connection table is allocated as records come, so the lazy walk
/// is tried first; `expect`: about how many sockets processes hold, for
/// the room its findings take).
pub fn walk_owners(
    ebpf: &mut Ebpf,
    btf: &mut TracingBtf,
    lazy: bool,
    expect: usize,
) -> Result<Walked, LoadError> {
    const WHAT: &str = "the process files' iterator";
    // Its own test switch too: the TCP iterator's adoption with /proc's
    // owners is a path of its own.
    refused_for_test("owners", WHAT)?;
    // The typed adoption needs `bpf_sock_from_file` (Linux 5.11), the
    // other one only probe reads; either refused, the walk only names and
    // the TCP iterator walks every namespace (nothing is lost but time).
    // The lazy walk is the typed one that inserts no records.
    // `TCPTOP_TEST_REFUSE=owners-lazy` refuses the lazy walk,
    // `owners-typed` both typed ones, `owners-adopt` all three.
    let adopting = refused_for_test("owners-adopt", WHAT).and_then(|()| {
        let typed = refused_for_test("owners-typed", WHAT);
        let lazily = match (&typed, lazy) {
            (Ok(()), true) => refused_for_test("owners-lazy", WHAT)
                .and_then(|()| walk_with(ebpf, btf, PROGRAM_LAZY, WHAT, expect)),
            _ => Err(LoadError::other(WHAT, "not wanted")),
        };
        lazily
            .or_else(|_| typed.and_then(|()| walk_with(ebpf, btf, PROGRAM_TYPED, WHAT, 0)))
            .or_else(|_| walk_with(ebpf, btf, PROGRAM_ADOPT, WHAT, 0))
    });
    match adopting {
        Ok(w) => Ok(w),
        Err(_) => walk_with(ebpf, btf, PROGRAM, WHAT, 0),
    }
}

fn walk_with(
    ebpf: &mut Ebpf,
    btf: &mut TracingBtf,
    name: &'static str,
    what: &str,
    expect: usize,
) -> Result<Walked, LoadError> {
    let adopting = name != PROGRAM;
    let lazy = name == PROGRAM_LAZY;
    let walked = link_iterator(ebpf, btf, name, "task_file", None, what).and_then(|link| {
        // 16 pages a read: 2,048 records (315 of the lazy walk's).
        let mut buf = vec![0u8; 64 * 1024];
        let mut out = Records::new(adopting);
        out.lazy = lazy;
        if lazy {
            // Each connection's baseline and first sample: room made once.
            out.walked.bases.reserve(expect);
            out.walked.standing.reserve(expect);
        }
        walk(&link, &mut buf, |b| out.feed(b))
            .map(|()| Walked {
                program: name,
                ..out.done()
            })
            .map_err(|e| LoadError::kernel(format!("reading {what}"), &e))
    });
    if let Ok(prog) = program(ebpf, name)
        && let Ok(prog) = <&mut Iter>::try_from(prog)
    {
        let _ = prog.unload();
    }
    walked
}

const RECORD: usize = std::mem::size_of::<Owned>();
const STANDING: usize = std::mem::size_of::<Standing>();

/// The iterator's output as owners, however the reads split it.
#[derive(Debug, Default)]
struct Records {
    split: Split<RECORD>,
    /// The lazy walk's records, [`Standing`] each.
    split_lazy: Split<STANDING>,
    lazy: bool,
    walked: Walked,
    /// The last process's name, shared by its next sockets (they come
    /// together: the walk goes a process at a time).
    last: Option<(u32, [u8; 16], CompactString)>,
    /// Where the walk adopts: (`struct sock`, namespace) of each TCP
    /// socket in use, once per holder.
    tcp: Option<Vec<(u64, u32)>>,
}

impl Records {
    fn new(adopting: bool) -> Self {
        Records {
            tcp: adopting.then(Vec::new),
            ..Records::default()
        }
    }

    /// The walk's findings, with the sockets in use counted per namespace
    /// (each once).
    fn done(mut self) -> Walked {
        if let Some(mut tcp) = self.tcp.take() {
            tcp.sort_unstable();
            tcp.dedup_by_key(|&mut (sk, _)| sk);
            let mut held = Held::default();
            for (_, ns) in tcp {
                *held.entry(ns).or_default() += 1;
            }
            self.walked.held = Some(held);
        }
        self.walked
    }

    fn feed(&mut self, bytes: &[u8]) {
        if self.lazy {
            let mut split = std::mem::take(&mut self.split_lazy);
            split.feed(bytes, |r| self.add_standing(r));
            self.split_lazy = split;
            return;
        }
        let mut split = std::mem::take(&mut self.split);
        split.feed(bytes, |r| {
            self.add(parse(r));
        });
        self.split = split;
    }

    /// One record of the lazy walk: its owner as any adopting walk's, and
    /// the connection it left without a record (the first holder's).
    fn add_standing(&mut self, r: &[u8; STANDING]) {
        let (owned, stats) = r.split_at(RECORD);
        let Ok(owned) = <&[u8; RECORD]>::try_from(owned) else {
            return;
        };
        let o = parse(owned);
        let name = self.add(o);
        // SAFETY: `stats` is the rest of the record, the size of a
        // `ConnStats` (plain old data: every bit pattern valid);
        // read_unaligned makes no alignment assumption. (Aya hands an
        // iterator's output out as bytes: see `events::decode`.)
        let st = unsafe { std::ptr::read_unaligned(stats.as_ptr().cast::<ConnStats>()) };
        if st.origin != ORIGIN_EXISTING || o.sk == 0 || !self.walked.bases.note(o.sk, &st) {
            return;
        }
        // Named after this holder (its name decoded once per process).
        let mut sample = super::convert::sample_named(o.sk, &st, false, name);
        // The same instance as the record a hook makes later.
        sample.id = 0;
        sample.pid = o.tgid;
        if !super::incomplete(&sample.key) {
            self.walked.standing.push(sample);
        }
    }

    /// Keeps the lowest process id for each socket, as /proc's scan does
    /// (a socket inherited across fork is held by both). The holder's
    /// name, decoded.
    fn add(&mut self, o: Owned) -> CompactString {
        let name = match &self.last {
            Some((tgid, comm, name)) if *tgid == o.tgid && *comm == o.comm => name.clone(),
            _ => {
                // Any process can name itself with non-UTF-8 bytes: decoded
                // lossily.
                let name = super::convert::comm(&o.comm);
                self.last = Some((o.tgid, o.comm, name.clone()));
                name
            }
        };
        match &mut self.tcp {
            // Adopted and named in the kernel: only counted, and the
            // owner kept in case a fallback wants it.
            Some(tcp) => {
                if o.netns != 0 {
                    tcp.push((o.sk, o.netns));
                }
                self.walked.owned.push((o.inode, o.tgid, name.clone()));
            }
            None => {
                if o.sk != 0 {
                    self.walked.sockets.push(Adopted {
                        sk: o.sk,
                        inode: o.inode,
                    });
                }
                note_owner(&mut self.walked.owners, o.inode, o.tgid, name.clone());
            }
        }
        name
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
    let mut netns = [0u8; 4];
    netns.copy_from_slice(&b[20..24]);
    let mut comm = [0u8; 16];
    comm.copy_from_slice(&b[24..40]);
    Owned {
        inode: u64::from_ne_bytes(inode),
        sk: u64::from_ne_bytes(sk),
        tgid: u32::from_ne_bytes(tgid),
        netns: u32::from_ne_bytes(netns),
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
            netns: 0,
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
                b.extend_from_slice(&o.netns.to_ne_bytes());
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
    fn held_sockets_counted_once_per_namespace() {
        let held = |netns: u32, sk: u64, tgid: u32| Owned {
            sk,
            netns,
            ..owned(sk, tgid, b"x")
        };
        let records = [
            held(10, 1, 100),
            // The same socket in another process (inherited): once.
            held(10, 1, 200),
            held(10, 2, 100),
            held(20, 3, 300),
            // A unix socket, or a TCP socket not in use: not counted.
            held(0, 4, 300),
        ];
        let all = bytes(&records);
        for step in [1, 7, RECORD, all.len()] {
            let mut r = Records::new(true);
            for chunk in all.chunks(step) {
                r.feed(chunk);
            }
            let w = r.done();
            let held = w.held.expect("an adopting walk counts");
            assert_eq!(held.len(), 2, "reads of {step} bytes");
            assert_eq!((held[&10], held[&20]), (2, 1), "reads of {step} bytes");
            // Named in the kernel: no (sk, inode) pairs kept; the owners
            // by inode only made on demand.
            assert!(w.sockets.is_empty());
            assert!(w.owners.is_empty());
            let owners = owners_of(w.owned);
            assert_eq!(owners.len(), 4);
            assert_eq!(owners[&1], (100, CompactString::from("x")));
        }
        // The naming walk counts nothing and keeps the pairs.
        let mut r = Records::new(false);
        r.feed(&all);
        let w = r.done();
        assert!(w.held.is_none());
        assert_eq!(w.sockets.len(), records.len());
    }

    /// The lazy walk's records: [`Owned`], then a record for a
    /// connection no record has (zero otherwise).
    fn standing_bytes(records: &[(Owned, ConnStats)]) -> Vec<u8> {
        let mut out = Vec::new();
        for (o, st) in records {
            let owned = bytes(std::slice::from_ref(o));
            out.extend_from_slice(&owned);
            // SAFETY: ConnStats is plain old data, read as its bytes.
            let st = unsafe {
                std::slice::from_raw_parts(
                    (st as *const ConnStats).cast::<u8>(),
                    std::mem::size_of::<ConnStats>(),
                )
            };
            out.extend_from_slice(st);
        }
        out
    }

    /// A connection 127.0.0.1:`sport` -> 127.0.0.1:80 as the lazy walk
    /// writes it, its bytes before start baselined at `before`.
    fn walked(sport: u16, before: u64) -> ConnStats {
        let mut t = tcptop_common::ConnTuple {
            sport,
            dport: 80,
            family: 2,
            proto: 6,
            netns: 10,
            ..Default::default()
        };
        t.saddr[..4].copy_from_slice(&[127, 0, 0, 1]);
        t.daddr[..4].copy_from_slice(&[127, 0, 0, 1]);
        ConnStats {
            tuple: t,
            origin: ORIGIN_EXISTING,
            flags: tcptop_common::CONN_APP,
            state: 1,
            app_tx: before,
            app_rx: before,
            app_tx_base: before,
            app_rx_base: before,
            srtt_us8: 80,
            ..ConnStats::default()
        }
    }

    #[test]
    fn the_lazy_walk_leaves_idle_connections_standing() {
        let held = |sk: u64, tgid: u32, netns: u32| Owned {
            sk,
            netns,
            ..owned(sk, tgid, b"srv")
        };
        let records = [
            (held(1, 100, 10), walked(5_000, 1_000)),
            // The same socket in a child (inherited): the first kept.
            (held(1, 200, 10), walked(5_000, 9_999)),
            // A connection with a record already: named in the kernel.
            (held(2, 100, 10), ConnStats::default()),
            // Not a TCP socket in use.
            (held(3, 100, 0), ConnStats::default()),
            // Still connecting (no source port): baselined, not shown.
            (held(4, 100, 10), walked(0, 0)),
            (held(5, 300, 20), walked(5_001, 0)),
        ];
        let all = standing_bytes(&records);
        for step in [1, 7, STANDING, STANDING + 1, all.len()] {
            let mut r = Records::new(true);
            r.lazy = true;
            for chunk in all.chunks(step) {
                r.feed(chunk);
            }
            assert!(!r.split_lazy.cut(), "reads of {step} bytes");
            let w = r.done();
            let shown: Vec<(u16, u64, u32, u64)> = w
                .standing
                .iter()
                .map(|s| (s.key.local.port(), s.id, s.pid, s.counters.tx_bytes))
                .collect();
            assert_eq!(
                shown,
                [(5_000, 0, 100, 0), (5_001, 0, 300, 0)],
                "reads of {step} bytes"
            );
            assert_eq!(w.standing[0].rtt_us, Some(10));
            assert_eq!(w.standing[0].comm, "srv");
            assert_eq!(w.bases.len(), 3, "reads of {step} bytes");
            // Counted per namespace as any adopting walk counts.
            let held = w.held.expect("counted");
            assert_eq!((held[&10], held[&20]), (3, 1), "reads of {step} bytes");
            assert_eq!(owners_of(w.owned)[&1].0, 100);
        }
    }

    #[test]
    fn lowest_pid_wins_and_names_are_decoded() {
        let records = bytes(&[
            owned(7, 300, b"child"),
            owned(7, 200, b"parent"),
            owned(7, 400, b"grandchild"),
            // A full 16-byte name has no NUL; bad UTF-8 is replaced.
            owned(8, 50, b"0123456789abcdef"),
            owned(9, 51, b"a\xffb\x1b"),
        ]);
        // The naming walk's map, and the adopting walk's made on demand.
        let mut naming = Records::default();
        naming.feed(&records);
        let mut adopting = Records::new(true);
        adopting.feed(&records);
        for owners in [naming.done().owners, owners_of(adopting.done().owned)] {
            assert_eq!(owners[&7], (200, CompactString::from("parent")));
            assert_eq!(owners[&8], (50, CompactString::from("0123456789abcdef")));
            assert_eq!(owners[&9], (51, CompactString::from("a\u{fffd}b\u{1b}")));
        }
    }
}
