//! One JSON object per connection per snapshot.

use std::io::{self, Write};

use serde::Serialize;

use super::escape::untrusted;
use crate::table::Row;

#[derive(Serialize)]
struct Record<'a> {
    /// Unix time of the snapshot, seconds (millisecond precision).
    ts: f64,
    pid: u32,
    comm: &'a str,
    proto: &'static str,
    local: String,
    remote: String,
    state: &'static str,
    tx_bytes: u64,
    rx_bytes: u64,
    tx_packets: u64,
    rx_packets: u64,
    tx_bps: u64,
    rx_bps: u64,
    rtt_us: Option<u32>,
    retrans: u64,
    netns: u32,
    /// Kernel hook set that produced the numbers.
    hooks: &'a str,
}

pub fn write(out: &mut impl Write, ts: f64, hooks: &str, rows: &[&Row]) -> io::Result<()> {
    let ts = (ts * 1000.0).round() / 1000.0;
    for r in rows {
        let comm = untrusted(&r.comm);
        let rec = Record {
            ts,
            pid: r.pid,
            comm: &comm,
            proto: r.key.proto.as_str(),
            local: super::fmt_addr(&r.key.local),
            remote: super::fmt_addr(&r.key.remote),
            state: r.state.as_str(),
            tx_bytes: r.counters.tx_bytes,
            rx_bytes: r.counters.rx_bytes,
            tx_packets: r.counters.tx_packets,
            rx_packets: r.counters.rx_packets,
            tx_bps: r.tx_bps.round() as u64,
            rx_bps: r.rx_bps.round() as u64,
            rtt_us: r.rtt_us,
            retrans: r.counters.retrans,
            netns: r.key.netns,
            hooks,
        };
        serde_json::to_writer(&mut *out, &rec)?;
        out.write_all(b"\n")?;
    }
    Ok(())
}
