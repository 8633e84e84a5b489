//! One connection in one snapshot, as the machine-readable formats (JSON
//! lines, CSV) write it. Both use the same fields, in this order.

use serde::{Deserialize, Serialize};

use super::escape::untrusted;
use crate::table::Row;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// Unix time of the snapshot, seconds (millisecond precision).
    pub ts: f64,
    pub pid: u32,
    /// Process name, control characters escaped (names are untrusted).
    pub comm: String,
    pub proto: String,
    pub local: String,
    pub remote: String,
    pub state: String,
    pub tx_bytes: u64,
    pub rx_bytes: u64,
    pub tx_packets: u64,
    pub rx_packets: u64,
    /// Bytes per second over the last interval.
    pub tx_bps: u64,
    pub rx_bps: u64,
    pub rtt_us: Option<u32>,
    pub retrans: u64,
    pub netns: u32,
    /// Kernel hook set that produced the numbers.
    pub hooks: String,
}

impl Record {
    pub fn new(ts: f64, hooks: &str, r: &Row) -> Record {
        Record {
            ts: (ts * 1000.0).round() / 1000.0,
            pid: r.pid,
            comm: untrusted(&r.comm).into_owned(),
            proto: r.key.proto.as_str().to_string(),
            local: r.key.local.to_string(),
            remote: r.key.remote.to_string(),
            state: r.state.as_str().to_string(),
            tx_bytes: r.counters.tx_bytes,
            rx_bytes: r.counters.rx_bytes,
            tx_packets: r.counters.tx_packets,
            rx_packets: r.counters.rx_packets,
            tx_bps: r.tx_bps.round() as u64,
            rx_bps: r.rx_bps.round() as u64,
            rtt_us: r.rtt_us,
            retrans: r.counters.retrans,
            netns: r.key.netns,
            hooks: hooks.to_string(),
        }
    }
}
