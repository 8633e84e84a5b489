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

use aya::Ebpf;
use aya::maps::{HashMap, Map, MapData};
use tcptop_common::ConnStats;

use super::bpf::lookup_batch;
use super::iter::conns_fd;

/// Records asked for per call at first; doubled when one bucket holds more
/// (the kernel then answers ENOSPC).
const FIRST_BATCH: usize = 4096;
/// No bucket can hold more records than the map (--max-conns allows
/// 4,194,304): ENOSPC past this is an error, not a reason to grow again.
const MAX_BATCH: usize = 1 << 23;

/// The connection map (a descriptor of its own) and buffers for reading
/// it, kept between snapshots.
pub struct MapReader {
    map: HashMap<MapData, u64, ConnStats>,
    keys: Vec<u64>,
    values: Vec<ConnStats>,
    /// How many records the last read found: room for as many (and a
    /// little more) is made before the next, instead of doubling the
    /// buffer as it fills (at 200,000 records the last doubling held 23
    /// and 46 MB at once).
    last: usize,
}

impl MapReader {
    pub fn new(ebpf: &Ebpf) -> Result<Self, String> {
        let fd = conns_fd(ebpf)
            .map_err(|e| e.to_string())?
            .try_clone_to_owned()
            .map_err(|e| format!("cannot duplicate the connection map's descriptor: {e}"))?;
        // Aya checks the map's key and value sizes against the types.
        let map = MapData::from_fd(fd)
            .map_err(|e| e.to_string())
            .and_then(|data| HashMap::try_from(Map::HashMap(data)).map_err(|e| e.to_string()))
            .map_err(|e| format!("the connection map: {e}"))?;
        Ok(MapReader {
            map,
            keys: Vec::new(),
            values: Vec::new(),
            last: 0,
        })
    }

    /// About `n` records are expected at the first read (the sockets
    /// found held at start-up): room for them is made at once, not grown
    /// a doubling at a time (at 200,000 records the copies and the fresh
    /// pages of each regrowth cost ~25 ms).
    pub fn expect(&mut self, n: usize) {
        self.last = self.last.max(n);
    }

    /// Records the last read found (before the first: the number
    /// expected).
    pub fn last(&self) -> usize {
        self.last
    }

    /// Records the next read will likely find (room for as many is made
    /// before it, a little more for new ones).
    pub fn expected(&self) -> usize {
        self.last + self.last / 16
    }

    /// Appends every `(socket, record)` of the map to `out`.
    pub fn read_all(&mut self, out: &mut Vec<(u64, ConnStats)>) -> io::Result<()> {
        out.reserve(self.expected());
        self.read_each(|keys, values| out.extend(keys.iter().copied().zip(values.iter().copied())))
    }

    /// Hands every `(socket, record)` of the map to `f`, a bpf() call's
    /// worth at a time, without a copy of the whole map in between (35 MB
    /// of fresh pages, written and read once, at 200,000 records).
    pub fn read_each(&mut self, mut f: impl FnMut(&[u64], &[ConnStats])) -> io::Result<()> {
        let mut n = 0;
        let read = self.read_into(|keys, values| {
            n += keys.len();
            f(keys, values);
        });
        self.last = n;
        read
    }

    fn read_into(&mut self, mut f: impl FnMut(&[u64], &[ConnStats])) -> io::Result<()> {
        if self.keys.is_empty() {
            self.keys.resize(FIRST_BATCH, 0);
            self.values.resize(FIRST_BATCH, ConnStats::default());
        }
        // The kernel's cursor for a hash map: a bucket number.
        let (mut cursor, mut next) = (0u32, 0u32);
        let mut first = true;
        loop {
            let (n, result) = lookup_batch(
                &self.map,
                (!first).then_some(&cursor),
                &mut next,
                &mut self.keys,
                &mut self.values,
            );
            f(&self.keys[..n], &self.values[..n]);
            match result.err() {
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
