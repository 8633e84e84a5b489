//! Batch output: aligned text tables, JSON lines and CSV.

pub mod csv;
pub mod escape;
pub mod jsonl;
pub mod record;
pub mod text;
pub mod units;

use std::cmp::Ordering;
use std::net::SocketAddr;

use crate::model::ConnKey;
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
            for (i, octet) in a.ip().octets().into_iter().enumerate() {
                if i > 0 {
                    out.push(b'.');
                }
                push_decimal(out, octet.into());
            }
            out.push(b':');
            push_decimal(out, a.port().into());
        }
        SocketAddr::V6(_) => {
            use std::io::Write as _;
            // Writing into a Vec cannot fail.
            let _ = write!(out, "{addr}");
        }
    }
}

/// Appends `n` in decimal.
pub fn push_decimal(out: &mut Vec<u8>, n: u64) {
    out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
}

/// Deterministic display order: busiest first (current RX+TX rate, then
/// total bytes), ties broken by endpoints so rows never jitter.
pub fn sort_rows(rows: &mut [&Row]) {
    // Keys are copied out once, in the rows' memory order: comparing rows
    // in place missed the cache on nearly every comparison under churn
    // (tens of thousands of rows scattered over the heap).
    rows.sort_by_cached_key(|r| SortKey::of(r));
}

/// What [`sort_rows`] orders by. A total order (ties end at the unique id).
#[derive(PartialEq, Eq)]
struct SortKey {
    /// `f64::total_cmp`'s integer for the rate.
    rate: i64,
    total: u64,
    key: ConnKey,
    id: u64,
}

impl SortKey {
    fn of(r: &Row) -> SortKey {
        SortKey {
            rate: total_order_key(r.tx_bps + r.rx_bps),
            total: r.counters.tx_bytes.saturating_add(r.counters.rx_bytes),
            key: r.key,
            id: r.id,
        }
    }
}

/// The integer whose order is `f64::total_cmp`'s (the same bit trick).
fn total_order_key(x: f64) -> i64 {
    let bits = x.to_bits() as i64;
    bits ^ ((((bits >> 63) as u64) >> 1) as i64)
}

impl Ord for SortKey {
    fn cmp(&self, other: &Self) -> Ordering {
        other
            .rate
            .cmp(&self.rate)
            .then(other.total.cmp(&self.total))
            .then_with(|| key_order(&self.key, &other.key))
            .then(self.id.cmp(&other.id))
    }
}

impl PartialOrd for SortKey {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// `a.cmp(b)`, faster where it decides most ties under churn (rows with the
/// same rate and bytes): IPv4 endpoints compare as integers, not through
/// `SocketAddr`'s enum and octet comparisons.
fn key_order(a: &ConnKey, b: &ConnKey) -> Ordering {
    fn v4(addr: &SocketAddr) -> Option<u64> {
        match addr {
            SocketAddr::V4(a) => Some(u64::from(a.ip().to_bits()) << 16 | u64::from(a.port())),
            SocketAddr::V6(_) => None,
        }
    }
    match (v4(&a.local), v4(&a.remote), v4(&b.local), v4(&b.remote)) {
        (Some(al), Some(ar), Some(bl), Some(br)) => a
            .proto
            .cmp(&b.proto)
            .then(al.cmp(&bl))
            .then(ar.cmp(&br))
            .then(a.netns.cmp(&b.netns)),
        _ => a.cmp(b),
    }
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

    #[test]
    fn key_order_is_ord() {
        use crate::model::Proto;
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
        let mut keys = Vec::new();
        for proto in [Proto::Tcp, Proto::Udp] {
            for &local in &addrs {
                for &remote in &addrs {
                    for netns in [1, 2] {
                        keys.push(ConnKey {
                            proto,
                            local,
                            remote,
                            netns,
                        });
                    }
                }
            }
        }
        for a in &keys {
            for b in &keys {
                assert_eq!(key_order(a, b), a.cmp(b), "{a:?} {b:?}");
            }
        }
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
