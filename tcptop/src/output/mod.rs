//! Batch output: aligned text tables, JSON lines and CSV.

pub mod csv;
pub mod escape;
pub mod jsonl;
pub mod record;
pub mod text;
pub mod units;

use std::net::SocketAddr;

use crate::table::Row;

/// `addr` as `Display` writes it (`1.2.3.4:80`, `[::1]:443`), without the
/// formatting machinery for IPv4, which is most rows: batch output writes
/// two per row, tens of thousands a second under connection churn.
pub fn addr_text(addr: &SocketAddr) -> String {
    match addr {
        SocketAddr::V4(a) => {
            let mut out = String::with_capacity(21);
            for (i, octet) in a.ip().octets().into_iter().enumerate() {
                if i > 0 {
                    out.push('.');
                }
                push_decimal(&mut out, octet.into());
            }
            out.push(':');
            push_decimal(&mut out, a.port().into());
            out
        }
        SocketAddr::V6(_) => addr.to_string(),
    }
}

fn push_decimal(out: &mut String, mut n: u32) {
    let mut digits = [0u8; 10];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    for &d in &digits[i..] {
        out.push(char::from(d));
    }
}

/// Deterministic display order: busiest first (current RX+TX rate, then
/// total bytes), ties broken by endpoints so rows never jitter.
pub fn sort_rows(rows: &mut [&Row]) {
    // A total order (ties end at the unique id), so an unstable sort gives
    // the same result, cheaper.
    rows.sort_unstable_by(|a, b| {
        let rate = |r: &Row| r.tx_bps + r.rx_bps;
        let total = |r: &Row| r.counters.tx_bytes.saturating_add(r.counters.rx_bytes);
        rate(b)
            .total_cmp(&rate(a))
            .then_with(|| total(b).cmp(&total(a)))
            .then_with(|| a.key.cmp(&b.key))
            .then_with(|| a.id.cmp(&b.id))
    });
}

#[cfg(test)]
mod tests {
    use super::*;

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
