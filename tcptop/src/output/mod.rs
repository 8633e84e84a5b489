//! Batch output: aligned text tables, JSON lines and CSV.

pub mod csv;
pub mod jsonl;
pub mod record;
pub mod text;
pub mod units;

use std::net::SocketAddr;

use crate::table::Row;

/// `addr` as `Display` writes it (`1.2.3.4:80`, `[::1]:443`).
pub fn addr_text(addr: &SocketAddr) -> String {
    let mut out = Vec::with_capacity(21);
    push_addr(&mut out, addr);
    // push_addr writes ASCII digits, dots, colons and what `Display` writes.
    String::from_utf8(out).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

/// Appends `addr` as `Display` writes it, without the formatting machinery
/// for IPv4, which is most rows: batch output writes two per row, tens of
/// thousands a second under connection churn.
pub fn push_addr(out: &mut Vec<u8>, addr: &SocketAddr) {
    match addr {
        SocketAddr::V4(a) => {
            // Written into a stack buffer and appended once: appending each
            // piece cost a memcpy call per octet (perf).
            let mut text = [0u8; 21];
            let mut n = 0;
            for (i, octet) in a.ip().octets().into_iter().enumerate() {
                if i > 0 {
                    text[n] = b'.';
                    n += 1;
                }
                n += put_decimal(&mut text[n..], octet.into());
            }
            text[n] = b':';
            n += 1;
            n += put_decimal(&mut text[n..], a.port());
            out.extend_from_slice(&text[..n]);
        }
        SocketAddr::V6(_) => {
            use std::io::Write as _;
            // Writing into a Vec cannot fail.
            let _ = write!(out, "{addr}");
        }
    }
}

/// Writes `n` in decimal at the start of `out` (room for five digits);
/// returns how many bytes it wrote.
fn put_decimal(out: &mut [u8], n: u16) -> usize {
    let mut buf = itoa::Buffer::new();
    let digits = buf.format(n).as_bytes();
    out[..digits.len()].copy_from_slice(digits);
    digits.len()
}

/// Appends `n` in decimal.
pub fn push_decimal(out: &mut Vec<u8>, n: u64) {
    out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
}

/// Deterministic display order: busiest first (current RX+TX rate, then
/// total bytes), ties broken by endpoints so rows never jitter.
pub fn sort_rows(rows: &mut [&Row]) {
    let sorted: Vec<&Row> = sorted_order(rows)
        .iter()
        .map(|&i| rows[i as usize])
        .collect();
    rows.copy_from_slice(&sorted);
}

/// The indices of `rows` in [`sort_rows`] order.
///
/// Sorted as small keys copied out once, in the rows' memory order:
/// comparing rows in place missed the cache on nearly every comparison
/// under churn (tens of thousands of rows scattered over the heap), and
/// sorting whole `ConnKey`s moved 112 bytes per element per swap. Under
/// churn most rows tie on rate and bytes, so the endpoints decide: IPv4
/// endpoints are packed into integers here; any other pair compares the
/// full keys.
pub(crate) fn sorted_order(rows: &[&Row]) -> Vec<u32> {
    let mut places: Vec<Place> = rows
        .iter()
        .enumerate()
        .map(|(i, r)| Place::of(i, r))
        .collect();
    places.sort_unstable_by(|a, b| {
        b.rate
            .cmp(&a.rate)
            .then(b.total.cmp(&a.total))
            .then_with(|| {
                if (a.local | b.local) & NOT_V4 == 0 {
                    (a.local, a.remote, a.netns).cmp(&(b.local, b.remote, b.netns))
                } else {
                    rows[a.idx as usize].key.cmp(&rows[b.idx as usize].key)
                }
            })
            .then(a.id.cmp(&b.id))
    });
    places.into_iter().map(|p| p.idx).collect()
}

/// A row's sort key (48 bytes). A total order: ties end at the unique id.
struct Place {
    /// `f64::total_cmp`'s integer for the rate (descending).
    rate: i64,
    /// Bytes both ways (descending).
    total: u64,
    /// IPv4 both ends: protocol << 48 | address << 16 | port, in
    /// `ConnKey`'s order (protocol, then the local end). Otherwise
    /// [`NOT_V4`], and the full keys decide.
    local: u64,
    /// IPv4 both ends: address << 16 | port.
    remote: u64,
    id: u64,
    netns: u32,
    /// The row's index.
    idx: u32,
}

/// `Place::local` of a row with an IPv6 end.
const NOT_V4: u64 = 1 << 63;

impl Place {
    fn of(idx: usize, r: &Row) -> Place {
        fn v4(addr: &SocketAddr) -> Option<u64> {
            match addr {
                SocketAddr::V4(a) => Some(u64::from(a.ip().to_bits()) << 16 | u64::from(a.port())),
                SocketAddr::V6(_) => None,
            }
        }
        let (local, remote) = match (v4(&r.key.local), v4(&r.key.remote)) {
            (Some(l), Some(rm)) => ((r.key.proto as u64) << 48 | l, rm),
            _ => (NOT_V4, 0),
        };
        Place {
            rate: total_order_key(r.tx_bps + r.rx_bps),
            total: r.counters.tx_bytes.saturating_add(r.counters.rx_bytes),
            local,
            remote,
            id: r.id,
            netns: r.key.netns,
            // A table holds at most --max-conns rows (4,194,304) plus one
            // snapshot's closed ones: far below u32::MAX.
            idx: idx as u32,
        }
    }
}

/// The integer whose order is `f64::total_cmp`'s (the same bit trick).
fn total_order_key(x: f64) -> i64 {
    let bits = x.to_bits() as i64;
    bits ^ ((((bits >> 63) as u64) >> 1) as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_key_orders_as_total_cmp() {
        let rates = [
            f64::NEG_INFINITY,
            -1.5,
            -0.0,
            0.0,
            1e-300,
            0.4,
            0.5,
            1.0,
            12_345.678,
            1e300,
            f64::INFINITY,
            f64::NAN,
        ];
        for a in rates {
            for b in rates {
                let ours = total_order_key(a).cmp(&total_order_key(b));
                assert_eq!(ours, a.total_cmp(&b), "{a} {b}");
            }
        }
    }

    /// The compact keys order rows exactly as the full comparison does:
    /// busiest first, then by bytes, then `ConnKey`'s own order, then id.
    #[test]
    fn sort_is_the_full_comparison() {
        use std::time::{Duration, Instant};

        use crate::model::{ConnKey, ConnSample, ConnState, Counters, Proto, Snapshot};
        use crate::table::ConnTable;

        let addrs: Vec<SocketAddr> = [
            "0.0.0.0:0",
            "0.0.0.0:1",
            "0.0.0.1:0",
            "127.0.0.1:80",
            "127.0.0.1:8080",
            "128.0.0.0:1",
            "255.255.255.255:65535",
            "[::]:0",
            "[::1]:80",
            "[::ffff:127.0.0.1]:80",
        ]
        .iter()
        .map(|s| s.parse().unwrap())
        .collect();
        let mut samples = Vec::new();
        for proto in [Proto::Tcp, Proto::Udp] {
            for &local in &addrs {
                for &remote in &addrs {
                    for netns in [1, 2] {
                        let n = samples.len() as u64;
                        samples.push(ConnSample {
                            key: ConnKey {
                                proto,
                                local,
                                remote,
                                netns,
                            },
                            // Ids against the keys' order, so that they
                            // decide nothing the keys should.
                            id: 1_000_000 - n,
                            pid: 1,
                            comm: Default::default(),
                            state: ConnState::Established,
                            // Most rows tie on bytes (and on rate), as
                            // under churn; some do not.
                            counters: Counters {
                                tx_bytes: if n.is_multiple_of(7) { n } else { 64 },
                                ..Counters::default()
                            },
                            rtt_us: None,
                            cgroup_id: 0,
                            active: None,
                            workload: None,
                        });
                    }
                }
            }
        }
        let mut t = ConnTable::new();
        let t0 = Instant::now();
        t.apply(
            Snapshot {
                live: samples.clone(),
                ..Default::default()
            },
            t0,
            1.0,
        );
        // Rates: some rows move in the second snapshot.
        for (i, s) in samples.iter_mut().enumerate() {
            if i.is_multiple_of(11) {
                s.counters.rx_bytes += 1000 + (i % 3) as u64;
            }
        }
        t.apply(
            Snapshot {
                live: samples,
                ..Default::default()
            },
            t0 + Duration::from_secs(1),
            1.0,
        );
        let mut ours: Vec<&Row> = t.rows().collect();
        let mut want = ours.clone();
        want.sort_by(|a, b| {
            (b.tx_bps + b.rx_bps)
                .total_cmp(&(a.tx_bps + a.rx_bps))
                .then(
                    (b.counters.tx_bytes + b.counters.rx_bytes)
                        .cmp(&(a.counters.tx_bytes + a.counters.rx_bytes)),
                )
                .then(a.key.cmp(&b.key))
                .then(a.id.cmp(&b.id))
        });
        assert!(want[0].rx_bps > 0.0 && want.last().is_some_and(|r| r.rx_bps == 0.0));
        sort_rows(&mut ours);
        let ids = |rows: &[&Row]| rows.iter().map(|r| r.id).collect::<Vec<_>>();
        assert_eq!(ids(&ours), ids(&want));
    }

    #[test]
    fn addr_text_is_display() {
        let mut addrs: Vec<SocketAddr> = [
            "0.0.0.0:0",
            "255.255.255.255:65535",
            "127.0.0.1:8080",
            "10.0.100.9:443",
            "1.20.255.3:9",
            "[::1]:443",
            "[fe80::1%2]:22",
            "[::ffff:1.2.3.4]:53",
        ]
        .iter()
        .map(|s| s.parse().unwrap())
        .collect();
        for a in 0..=255u8 {
            let port = u16::from(a) * 257;
            addrs.push(SocketAddr::from(([a, 255 - a, a / 3, a % 10], port)));
        }
        for a in addrs {
            assert_eq!(addr_text(&a), a.to_string());
        }
    }
}
