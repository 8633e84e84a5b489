//! One JSON object per connection per snapshot: the fields of
//! [`Record`](super::record::Record), in its order, written exactly as
//! `serde_json` writes a `Record` (the test below holds them together).
//!
//! Written by hand because under connection churn this is tens of
//! thousands of lines a second and was the largest part of tcptop's own
//! CPU: serde escapes every key and value byte by byte and the record
//! allocates both addresses. Here the keys are literals, the addresses,
//! protocol, state and numbers are ASCII written straight into one reused
//! buffer, and only the process name goes through `serde_json`'s
//! escaping when it holds a byte JSON must escape.

use std::io::{self, IoSlice, Write};

use super::{push_addr, push_decimal, sorted_order};
use crate::escape::untrusted;
use crate::table::Row;

/// Writes `rows` (in any order) as JSON lines, in [`sort_rows`] order.
///
/// Each line is formatted in the order the rows come (their order in
/// memory, when they come straight from the table), then the lines are
/// written in sorted order. Formatting the rows in sorted order instead
/// jumps around the heap: under churn, tens of thousands of rows a second,
/// nearly every field read missed the cache and that was the largest part
/// of tcptop's own CPU.
///
/// The lines go to `out` as vectored writes, [`BATCH`] lines each, straight
/// from where they were formatted: gathering them into a buffer in sorted
/// order first was a tenth of tcptop's CPU under churn (perf), a copy that
/// `writev(2)` leaves to the kernel, which copies them once anyway.
///
/// [`sort_rows`]: super::sort_rows
pub fn write(out: &mut impl Write, ts: f64, hooks: &str, rows: &[&Row]) -> io::Result<()> {
    // Per snapshot, not per row: the time and the hook set are the same on
    // every line.
    let ts = serde_json::to_vec(&super::record::snapshot_time(ts)).map_err(io::Error::other)?;
    let hooks = serde_json::to_vec(hooks).map_err(io::Error::other)?;
    let mut text = Vec::with_capacity(rows.len() * LINE_GUESS);
    // Where each row's line starts in `text`, and where the last one ends.
    let mut starts = Vec::with_capacity(rows.len() + 1);
    for r in rows {
        starts.push(text.len());
        push_line(&mut text, &ts, &hooks, r)?;
    }
    starts.push(text.len());
    let order = sorted_order(rows);
    let mut lines = Vec::with_capacity(order.len().min(BATCH));
    for batch in order.chunks(BATCH) {
        lines.clear();
        lines.extend(batch.iter().map(|&i| {
            let i = i as usize;
            IoSlice::new(&text[starts[i]..starts[i + 1]])
        }));
        write_all_vectored(out, &mut lines)?;
    }
    Ok(())
}

/// Lines per vectored write: Linux's `IOV_MAX`, the most one `writev(2)` takes.
const BATCH: usize = 1024;

/// Writes every byte of `bufs` (`Write::write_all_vectored` is unstable).
fn write_all_vectored(out: &mut impl Write, mut bufs: &mut [IoSlice<'_>]) -> io::Result<()> {
    while !bufs.is_empty() {
        match out.write_vectored(bufs) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => IoSlice::advance_slices(&mut bufs, n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// A typical line's length, to size the buffer once.
const LINE_GUESS: usize = 320;

/// Appends one row's line (with its newline).
fn push_line(chunk: &mut Vec<u8>, ts: &[u8], hooks: &[u8], r: &Row) -> io::Result<()> {
    chunk.extend_from_slice(b"{\"ts\":");
    chunk.extend_from_slice(ts);
    chunk.extend_from_slice(b",\"pid\":");
    push_decimal(chunk, r.pid.into());
    chunk.extend_from_slice(b",\"comm\":");
    push_json_str(chunk, &untrusted(&r.comm))?;
    chunk.extend_from_slice(b",\"proto\":\"");
    chunk.extend_from_slice(r.key.proto.as_str().as_bytes());
    chunk.extend_from_slice(b"\",\"local\":\"");
    push_addr(chunk, &r.key.local);
    chunk.extend_from_slice(b"\",\"remote\":\"");
    push_addr(chunk, &r.key.remote);
    chunk.extend_from_slice(b"\",\"state\":\"");
    chunk.extend_from_slice(r.state.as_str().as_bytes());
    let c = &r.counters;
    for (key, n) in [
        (&b"\",\"tx_bytes\":"[..], c.tx_bytes),
        (b",\"rx_bytes\":", c.rx_bytes),
        (b",\"tx_packets\":", c.tx_packets),
        (b",\"rx_packets\":", c.rx_packets),
        (b",\"tx_bps\":", r.tx_bps.round() as u64),
        (b",\"rx_bps\":", r.rx_bps.round() as u64),
    ] {
        chunk.extend_from_slice(key);
        push_decimal(chunk, n);
    }
    chunk.extend_from_slice(b",\"rtt_us\":");
    match r.rtt_us {
        Some(us) => push_decimal(chunk, us.into()),
        None => chunk.extend_from_slice(b"null"),
    }
    chunk.extend_from_slice(b",\"retrans\":");
    push_decimal(chunk, c.retrans);
    chunk.extend_from_slice(b",\"netns\":");
    push_decimal(chunk, r.key.netns.into());
    let w = r.workload.as_deref();
    for (key, v) in [
        (&b",\"cgroup\":"[..], w.map(|w| w.cgroup.as_str())),
        (b",\"unit\":", w.and_then(|w| w.unit.as_deref())),
        (b",\"container\":", w.and_then(|w| w.container.as_deref())),
        (b",\"pod\":", w.and_then(|w| w.pod.as_deref())),
    ] {
        chunk.extend_from_slice(key);
        match v {
            Some(s) => push_json_str(chunk, &untrusted(s))?,
            None => chunk.extend_from_slice(b"null"),
        }
    }
    chunk.extend_from_slice(b",\"hooks\":");
    chunk.extend_from_slice(hooks);
    chunk.extend_from_slice(b"}\n");
    Ok(())
}

/// `s` as a JSON string. Printable ASCII other than `"` and `\` (nearly
/// every process name) needs no escaping; anything else is left to
/// `serde_json`.
fn push_json_str(out: &mut Vec<u8>, s: &str) -> io::Result<()> {
    if s.bytes()
        .all(|b| (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\')
    {
        out.push(b'"');
        out.extend_from_slice(s.as_bytes());
        out.push(b'"');
        Ok(())
    } else {
        serde_json::to_writer(out, s).map_err(io::Error::other)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;
    use crate::model::{ConnKey, ConnSample, ConnState, Counters, Proto, Snapshot};
    use crate::output::record::Record;
    use crate::table::ConnTable;

    /// Takes at most `max` bytes per call, and fails every third call with
    /// `Interrupted`, as a pipe or a signal can make `writev(2)` do.
    struct Trickle {
        out: Vec<u8>,
        max: usize,
        calls: usize,
    }

    impl Write for Trickle {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.write_vectored(&[IoSlice::new(buf)])
        }

        fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
            self.calls += 1;
            if self.calls.is_multiple_of(3) {
                return Err(io::ErrorKind::Interrupted.into());
            }
            let mut n = 0;
            for b in bufs {
                let take = b.len().min(self.max - n);
                self.out.extend_from_slice(&b[..take]);
                n += take;
                if n == self.max {
                    break;
                }
            }
            Ok(n)
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn short_and_interrupted_writes_lose_nothing() {
        let samples: Vec<ConnSample> = (0..3000u32)
            .map(|i| ConnSample {
                key: ConnKey {
                    proto: Proto::Tcp,
                    local: format!("10.0.{}.{}:{}", i / 256, i % 256, 1000 + i)
                        .parse()
                        .unwrap(),
                    remote: "127.0.0.1:80".parse().unwrap(),
                    netns: 1,
                },
                id: u64::from(i),
                pid: i,
                comm: compact_str::format_compact!("p{i}"),
                state: ConnState::Closed,
                counters: Counters {
                    tx_bytes: u64::from(i % 7),
                    ..Default::default()
                },
                rtt_us: None,
                cgroup_id: 0,
                active: None,
                workload: None,
            })
            .collect();
        let mut t = ConnTable::new();
        t.apply(
            Snapshot {
                closed: samples,
                ..Default::default()
            },
            Instant::now(),
            1.0,
        );
        let rows: Vec<&Row> = t.rows().collect();
        let mut want = Vec::new();
        write(&mut want, 5.0, "x", &rows).unwrap();
        // More lines than one vectored write takes, and the same bytes
        // when each call moves a few bytes, ends inside a line or fails.
        assert!(rows.len() > 2 * BATCH);
        assert_eq!(want.iter().filter(|&&b| b == b'\n').count(), rows.len());
        for max in [1, 7, 300, 4096, 1 << 20] {
            let mut w = Trickle {
                out: Vec::new(),
                max,
                calls: 0,
            };
            write(&mut w, 5.0, "x", &rows).unwrap();
            assert!(w.out == want, "max {max}: the output differs");
        }
    }

    #[test]
    fn same_bytes_as_serde_for_every_kind_of_field() {
        let names = [
            "curl",
            "",
            "a\"b",
            "back\\slash",
            "esc\x1b[2Jx",
            "tab\there",
            "del\x7f",
            "ünï ✓",
            "gpj.\u{202e}exe",
            "=cmd|' /C calc'!A0",
            "0123456789abcdef",
        ];
        let addrs = [
            "127.0.0.1:80",
            "0.0.0.0:0",
            "255.255.255.255:65535",
            "10.1.22.133:54321",
            "[::1]:443",
            "[::ffff:1.2.3.4]:53",
            "[fe80::1%2]:22",
            "[2001:db8::dead:beef]:65535",
        ];
        let live: Vec<ConnSample> = names
            .iter()
            .enumerate()
            .map(|(i, name)| ConnSample {
                key: ConnKey {
                    proto: if i % 3 == 0 { Proto::Udp } else { Proto::Tcp },
                    local: addrs[i % addrs.len()].parse().unwrap(),
                    remote: addrs[(i * 5 + 3) % addrs.len()].parse().unwrap(),
                    netns: [0, 4026531840, u32::MAX][i % 3],
                },
                id: i as u64 + 1,
                pid: [0, 1, 4_194_304, u32::MAX][i % 4],
                comm: (*name).into(),
                state: [
                    ConnState::Established,
                    ConnState::Flow,
                    ConnState::Unknown(77),
                ][i % 3],
                counters: Counters {
                    tx_bytes: [0, 9, 10, u64::MAX][i % 4],
                    rx_bytes: 10u64.pow(i as u32),
                    tx_packets: i as u64 * 1001,
                    rx_packets: u64::MAX - i as u64,
                    retrans: i as u64,
                },
                rtt_us: if i % 2 == 0 {
                    Some(i as u32 * 99_999)
                } else {
                    None
                },
                cgroup_id: i as u64,
                active: None,
                // Every kind of control group, hostile names included.
                workload: match i % 3 {
                    0 => None,
                    1 => Some(std::sync::Arc::new(crate::model::Workload {
                        cgroup: format!("/system.slice/{name}.service"),
                        unit: Some(format!("{name}.service")),
                        container: None,
                        pod: None,
                    })),
                    _ => Some(std::sync::Arc::new(crate::model::Workload {
                        cgroup: format!("/kubepods.slice/x/{name}"),
                        unit: None,
                        container: Some((*name).to_string()),
                        pod: Some(format!("ns/{name}")),
                    })),
                },
            })
            .collect();
        let mut t = ConnTable::new();
        let now = Instant::now();
        t.apply(
            Snapshot {
                live: live.clone(),
                ..Default::default()
            },
            now,
            1.0,
        );
        // A second snapshot, so that rates are not zero.
        let mut more = live;
        for s in &mut more {
            s.counters.tx_bytes = s.counters.tx_bytes.saturating_add(12_345);
        }
        t.apply(
            Snapshot {
                live: more,
                ..Default::default()
            },
            now + std::time::Duration::from_millis(700),
            1.0,
        );
        let rows: Vec<&Row> = t.rows().collect();
        assert_eq!(rows.len(), names.len());
        // Lines come out in sort_rows order whatever order the rows come in.
        let mut sorted = rows.clone();
        crate::output::sort_rows(&mut sorted);
        let mut reversed = sorted.clone();
        reversed.reverse();
        assert_ne!(
            rows.iter().map(|r| r.id).collect::<Vec<_>>(),
            sorted.iter().map(|r| r.id).collect::<Vec<_>>(),
            "the table's order is already sorted: the test would prove nothing"
        );
        for (ts, hooks) in [
            (1795616833.2126, "tracepoint+btf"),
            (0.0, ""),
            (1.0005, "odd\"hooks\\"),
        ] {
            let mut want = Vec::new();
            for r in &sorted {
                serde_json::to_writer(&mut want, &Record::new(ts, hooks, r)).unwrap();
                want.push(b'\n');
            }
            let want = String::from_utf8(want).unwrap();
            for input in [&rows, &sorted, &reversed] {
                let mut ours = Vec::new();
                write(&mut ours, ts, hooks, input).unwrap();
                assert_eq!(String::from_utf8(ours).unwrap(), want);
            }
        }
    }
}
