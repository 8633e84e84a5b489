//! Reading the whole connection map with `BPF_MAP_LOOKUP_BATCH` (Linux
//! 5.6+): a bpf() call per few thousand records, where walking it key by
//! key takes two per record (next key, lookup): with 18,000 connections,
//! 36,000 system calls a snapshot, most of tcptop's CPU.
//!
//! The kernel copies a hash map's buckets whole, each under its lock, and
//! resumes at the next bucket: a record deleted or added elsewhere meanwhile
//! makes no other record missed or returned twice (a walk that resumes by
//! position within a bucket, as the map's iterator does across reads, can
//! do both).

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};

use aya::Ebpf;
use tcptop_common::ConnStats;

use super::refresh::conns_fd;

/// `enum bpf_cmd` value (include/uapi/linux/bpf.h).
const BPF_MAP_LOOKUP_BATCH: libc::c_long = 24;

/// `union bpf_attr` for the batch commands.
#[repr(C)]
#[derive(Default)]
struct Batch {
    in_batch: u64,
    out_batch: u64,
    keys: u64,
    values: u64,
    count: u32,
    map_fd: u32,
    elem_flags: u64,
    flags: u64,
}

/// Records asked for per call at first; doubled when one bucket holds more
/// (the kernel then answers ENOSPC).
const FIRST_BATCH: usize = 4096;
/// No bucket can hold more records than the map (--max-conns allows
/// 4,194,304): ENOSPC past this is an error, not a reason to grow again.
const MAX_BATCH: usize = 1 << 23;

/// The connection map (a descriptor of its own) and buffers for reading
/// it, kept between snapshots.
pub struct MapReader {
    map: OwnedFd,
    keys: Vec<u64>,
    values: Vec<ConnStats>,
}

impl MapReader {
    pub fn new(ebpf: &Ebpf) -> Result<Self, String> {
        let map = conns_fd(ebpf)
            .map_err(|e| e.to_string())?
            .try_clone_to_owned()
            .map_err(|e| format!("cannot duplicate the connection map's descriptor: {e}"))?;
        Ok(MapReader {
            map,
            keys: Vec::new(),
            values: Vec::new(),
        })
    }

    /// Appends every `(socket, record)` of the map to `out`.
    pub fn read_all(&mut self, out: &mut Vec<(u64, ConnStats)>) -> io::Result<()> {
        let fd = self.map.as_raw_fd();
        if self.keys.is_empty() {
            self.keys.resize(FIRST_BATCH, 0);
            self.values.resize(FIRST_BATCH, ConnStats::default());
        }
        // The kernel's cursor for a hash map: a bucket number.
        let (mut cursor, mut next) = (0u32, 0u32);
        let mut first = true;
        loop {
            let mut attr = Batch {
                in_batch: if first {
                    0
                } else {
                    std::ptr::from_ref(&cursor) as u64
                },
                out_batch: std::ptr::from_mut(&mut next) as u64,
                keys: self.keys.as_mut_ptr() as u64,
                values: self.values.as_mut_ptr() as u64,
                count: u32::try_from(self.keys.len()).unwrap_or(u32::MAX),
                map_fd: fd as u32,
                ..Batch::default()
            };
            // SAFETY: `attr` is a live `union bpf_attr` prefix of the size
            // passed; keys and values hold `count` records of the map's key
            // and value sizes, the cursors one u32 each.
            let r = unsafe {
                libc::syscall(
                    libc::SYS_bpf,
                    BPF_MAP_LOOKUP_BATCH,
                    std::ptr::from_mut(&mut attr),
                    std::mem::size_of::<Batch>() as libc::c_uint,
                )
            };
            let err = (r < 0).then(io::Error::last_os_error);
            let n = (attr.count as usize).min(self.keys.len());
            out.extend(
                self.keys[..n]
                    .iter()
                    .copied()
                    .zip(self.values[..n].iter().copied()),
            );
            match err {
                None => {}
                // The end of the map (with the last records, if any).
                Some(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(()),
                // One bucket holds more than the buffers: larger ones, and
                // the same bucket again.
                Some(e)
                    if e.raw_os_error() == Some(libc::ENOSPC)
                        && n == 0
                        && self.keys.len() < MAX_BATCH =>
                {
                    let len = self.keys.len() * 2;
                    self.keys.resize(len, 0);
                    self.values.resize(len, ConnStats::default());
                    continue;
                }
                Some(e) => return Err(e),
            }
            cursor = next;
            first = false;
        }
    }
}
