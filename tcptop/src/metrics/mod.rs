//! Metrics for Prometheus (`--metrics-listen`): tcptop's own connection
//! table, aggregated into labelled series at each snapshot and served over
//! HTTP at `/metrics`.
//!
//! * `aggregate`: rows → series. Counters are monotonic totals (each
//!   connection's growth since the previous snapshot is added to its series,
//!   so a closed connection's bytes stay in its series' totals), at most
//!   `--metrics-max-series` label sets plus an overflow series per protocol,
//!   idle series dropped after [`IDLE_SERIES`].
//! * `labels`: what a row's label set is at each `--metrics-level`.
//! * `encode`: an [`Exposition`] (the values of one snapshot, immutable) in
//!   OpenMetrics or the Prometheus text format, through prometheus-client;
//!   which one a request gets (its Accept header).
//! * `server`: the listener (bound at start-up, before privileges are
//!   dropped) and an HTTP/1 server on a thread of its own with its own
//!   runtime. The collecting loop only swaps an `Arc` after each snapshot;
//!   the server encodes at scrape time, at most once per snapshot and format,
//!   so a slow, stalled or numerous scraper never delays a snapshot.

mod aggregate;
mod encode;
mod labels;
pub mod server;
#[cfg(test)]
mod tests;

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

pub use aggregate::{Aggregator, Exposition, IDLE_SERIES, RTT_BUCKETS_US, SeriesValues};
pub use encode::{Format, encode, negotiate};
pub use labels::{Level, Role, service_port};

use crate::table::{ConnTable, Filter};

/// How series are made (from the flags).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Options {
    pub level: Level,
    /// Label sets at most (`--metrics-max-series`); the overflow series
    /// (one per protocol) come on top.
    pub max_series: usize,
    /// At the remote level, remote addresses with series of their own
    /// (`--metrics-top-remotes`): the top N by bytes.
    pub top_remotes: usize,
}

/// Default for [`Options::max_series`].
pub const DEFAULT_MAX_SERIES: u32 = 2000;
/// Default for [`Options::top_remotes`].
pub const DEFAULT_TOP_REMOTES: u32 = 100;

/// The latest snapshot's values, shared between the collecting loop (which
/// replaces them) and the server (which encodes them).
#[derive(Debug)]
pub struct Shared {
    current: Mutex<Arc<Exposition>>,
    /// The latest encoding in each format, with the snapshot it is of:
    /// concurrent scrapers of one snapshot share one buffer.
    cache: Mutex<[Option<(u64, bytes::Bytes)>; 2]>,
}

impl Shared {
    pub fn new(first: Exposition) -> Shared {
        Shared {
            current: Mutex::new(Arc::new(first)),
            cache: Mutex::new([None, None]),
        }
    }

    /// Replaces the values served (the lock is held for a pointer swap).
    pub fn publish(&self, e: Arc<Exposition>) {
        *self.current.lock().unwrap_or_else(PoisonError::into_inner) = e;
    }

    pub fn current(&self) -> Arc<Exposition> {
        self.current
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The latest values encoded in `format`: encoded by the first request
    /// after a snapshot, shared by the others.
    pub fn body(&self, format: Format) -> bytes::Bytes {
        let e = self.current();
        let mut cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
        let slot = &mut cache[format as usize];
        if let Some((snapshot, body)) = slot
            && *snapshot == e.snapshots
        {
            return body.clone();
        }
        let body = bytes::Bytes::from(encode(&e, format));
        *slot = Some((e.snapshots, body.clone()));
        body
    }
}

/// The collecting loop's end: fed the table once per snapshot, it updates
/// the series and hands the server their values.
pub struct Metrics {
    agg: Aggregator,
    filter: Filter,
    shared: Arc<Shared>,
}

impl Metrics {
    /// `source`: the data source's mechanism (`DataSource::hooks`), for
    /// `tcptop_build_info`. `filter`: the connections the flags select
    /// (the metrics count those only).
    pub fn new(opts: Options, source: &str, filter: Filter) -> Metrics {
        let agg = Aggregator::new(opts, source);
        let shared = Arc::new(Shared::new(agg.exposition()));
        Metrics {
            agg,
            filter,
            shared,
        }
    }

    /// What the server reads.
    pub fn shared(&self) -> Arc<Shared> {
        self.shared.clone()
    }

    /// Takes the table after a snapshot was applied to it.
    pub fn update(&mut self, table: &ConnTable, now: Instant) {
        self.agg.update(table, &self.filter, now);
        self.shared.publish(Arc::new(self.agg.exposition()));
    }
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}
