//! Human-readable sizes and rates (binary prefixes, as top and iftop use).

const UNITS: [&str; 7] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];

/// 1023 -> "1023 B", 1536 -> "1.5 KiB", 10 MiB -> "10.0 MiB".
pub fn bytes(n: u64) -> String {
    scaled(n as f64, "")
}

/// Bytes per second: "0 B/s", "1.5 KiB/s".
pub fn rate(bps: f64) -> String {
    scaled(bps, "/s")
}

/// Bits per second with decimal prefixes, as link speeds are quoted:
/// "0 bit/s", "12.3 kbit/s", "1.0 Gbit/s".
pub fn bit_rate(bytes_per_sec: f64) -> String {
    const BITS: [&str; 7] = ["bit", "kbit", "Mbit", "Gbit", "Tbit", "Pbit", "Ebit"];
    let mut v = bytes_per_sec * 8.0;
    if !v.is_finite() || v < 0.0 {
        v = 0.0;
    }
    let mut i = 0;
    while v >= 999.95 && i + 1 < BITS.len() {
        v /= 1000.0;
        i += 1;
    }
    if i == 0 {
        format!("{} bit/s", v.round() as u64)
    } else {
        format!("{v:.1} {}/s", BITS[i])
    }
}

fn scaled(mut v: f64, suffix: &str) -> String {
    if !v.is_finite() || v < 0.0 {
        v = 0.0;
    }
    let mut i = 0;
    while v >= 1024.0 && i + 1 < UNITS.len() {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{} {}{suffix}", v.round() as u64, UNITS[0])
    } else {
        format!("{v:.1} {}{suffix}", UNITS[i])
    }
}

/// Microseconds as "85us", "1.2ms", "3.40s".
pub fn rtt(us: Option<u32>) -> String {
    match us {
        None => "-".into(),
        Some(u) if u < 1000 => format!("{u}us"),
        Some(u) if u < 1_000_000 => format!("{:.1}ms", f64::from(u) / 1000.0),
        Some(u) => format!("{:.2}s", f64::from(u) / 1_000_000.0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        let cases = [
            (0, "0 B"),
            (1023, "1023 B"),
            (1024, "1.0 KiB"),
            (1536, "1.5 KiB"),
            (10 * 1024 * 1024, "10.0 MiB"),
            (u64::MAX, "16.0 EiB"),
        ];
        for (n, want) in cases {
            assert_eq!(bytes(n), want, "{n}");
        }
    }

    #[test]
    fn rates() {
        assert_eq!(rate(0.0), "0 B/s");
        assert_eq!(rate(999.6), "1000 B/s");
        assert_eq!(rate(2048.0), "2.0 KiB/s");
        assert_eq!(rate(f64::NAN), "0 B/s");
        assert_eq!(rate(-5.0), "0 B/s");
    }

    #[test]
    fn bit_rates() {
        assert_eq!(bit_rate(0.0), "0 bit/s");
        assert_eq!(bit_rate(100.0), "800 bit/s");
        assert_eq!(bit_rate(125.0), "1.0 kbit/s");
        assert_eq!(bit_rate(1_250_000.0), "10.0 Mbit/s");
        assert_eq!(bit_rate(124_999.0), "1.0 Mbit/s");
        assert_eq!(bit_rate(f64::INFINITY), "0 bit/s");
        assert_eq!(bit_rate(-1.0), "0 bit/s");
    }

    #[test]
    fn rtts() {
        assert_eq!(rtt(None), "-");
        assert_eq!(rtt(Some(85)), "85us");
        assert_eq!(rtt(Some(1250)), "1.2ms");
        assert_eq!(rtt(Some(3_400_000)), "3.40s");
    }
}
