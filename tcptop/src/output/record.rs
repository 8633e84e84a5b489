//! One connection in one snapshot, as the machine-readable formats (JSON
//! lines, CSV) write it. Both use the same fields, in this order.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};

use crate::escape::untrusted;
use crate::table::Row;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Record<'a> {
    /// Unix time of the snapshot, seconds (millisecond precision).
    pub ts: f64,
    pub pid: u32,
    /// Process name, control characters escaped (names are untrusted).
    pub comm: Cow<'a, str>,
    pub proto: Cow<'a, str>,
    pub local: Cow<'a, str>,
    pub remote: Cow<'a, str>,
    pub state: Cow<'a, str>,
    pub tx_bytes: u64,
    pub rx_bytes: u64,
    pub tx_packets: u64,
    pub rx_packets: u64,
    /// Bytes per second over the rate window (`--rate-window`: the last
    /// interval by default).
    pub tx_bps: u64,
    pub rx_bps: u64,
    pub rtt_us: Option<u32>,
    pub retrans: u64,
    pub netns: u32,
    /// The owner's control group: its path under the cgroup v2 root, its
    /// systemd unit, container (12 hex digits) and Kubernetes pod
    /// (`namespace/name`), null when not known (all escaped: untrusted).
    pub cgroup: Option<Cow<'a, str>>,
    pub unit: Option<Cow<'a, str>>,
    pub container: Option<Cow<'a, str>>,
    pub pod: Option<Cow<'a, str>>,
    /// Kernel hook set that produced the numbers.
    pub hooks: Cow<'a, str>,
}

/// A snapshot's Unix time as records carry it: millisecond precision.
pub fn snapshot_time(ts: f64) -> f64 {
    (ts * 1000.0).round() / 1000.0
}

impl<'a> Record<'a> {
    /// Borrows what it can from `r` (written once per row per snapshot:
    /// under connection churn, tens of thousands a second).
    pub fn new(ts: f64, hooks: &'a str, r: &'a Row) -> Record<'a> {
        Record {
            ts: snapshot_time(ts),
            pid: r.pid,
            comm: untrusted(&r.comm),
            proto: Cow::Borrowed(r.key.proto.as_str()),
            local: Cow::Owned(super::addr_text(&r.key.local)),
            remote: Cow::Owned(super::addr_text(&r.key.remote)),
            state: Cow::Borrowed(r.state.as_str()),
            tx_bytes: r.counters.tx_bytes,
            rx_bytes: r.counters.rx_bytes,
            tx_packets: r.counters.tx_packets,
            rx_packets: r.counters.rx_packets,
            tx_bps: r.tx_bps.round() as u64,
            rx_bps: r.rx_bps.round() as u64,
            rtt_us: r.rtt_us,
            retrans: r.counters.retrans,
            netns: r.key.netns,
            cgroup: r.workload.as_ref().map(|w| untrusted(&w.cgroup)),
            unit: r
                .workload
                .as_ref()
                .and_then(|w| w.unit.as_deref().map(untrusted)),
            container: r
                .workload
                .as_ref()
                .and_then(|w| w.container.as_deref().map(untrusted)),
            pod: r
                .workload
                .as_ref()
                .and_then(|w| w.pod.as_deref().map(untrusted)),
            hooks: Cow::Borrowed(hooks),
        }
    }
}
