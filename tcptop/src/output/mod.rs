//! Batch output: aligned text tables, JSON lines and CSV.

pub mod csv;
pub mod escape;
pub mod jsonl;
pub mod record;
pub mod text;
pub mod units;

use crate::table::Row;

/// Deterministic display order: busiest first (current RX+TX rate, then
/// total bytes), ties broken by endpoints so rows never jitter.
pub fn sort_rows(rows: &mut [&Row]) {
    rows.sort_by(|a, b| {
        let rate = |r: &Row| r.tx_bps + r.rx_bps;
        let total = |r: &Row| r.counters.tx_bytes.saturating_add(r.counters.rx_bytes);
        rate(b)
            .total_cmp(&rate(a))
            .then_with(|| total(b).cmp(&total(a)))
            .then_with(|| a.key.cmp(&b.key))
            .then_with(|| a.id.cmp(&b.id))
    });
}
