//! An [`Exposition`] as text: OpenMetrics 1.0.0 or the Prometheus text
//! format 0.0.4, both written by prometheus-client (a collector that walks
//! the snapshot's series), and which one a request asked for.

use std::fmt;
use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::{Registry, Unit};

use super::aggregate::{Exposition, GAUGE_STATES, RTT_BUCKETS_US, SeriesValues};
use crate::model::Proto;

/// What a scrape is served in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// OpenMetrics 1.0.0 (what Prometheus asks for first).
    OpenMetrics = 0,
    /// The Prometheus text format 0.0.4 (curl, older clients, promtool).
    Text = 1,
}

impl Format {
    pub fn content_type(self) -> &'static str {
        match self {
            Format::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
            Format::Text => prometheus_client::encoding::prometheus_text::CONTENT_TYPE,
        }
    }
}

/// The format an `Accept` header prefers: OpenMetrics when it asks for
/// `application/openmetrics-text` (version 1.0.0 or unversioned) with a
/// quality at least that of `text/plain` (or `text/*`, `*/*`); otherwise,
/// and without the header, the Prometheus text format.
pub fn negotiate(accept: Option<&str>) -> Format {
    let Some(accept) = accept else {
        return Format::Text;
    };
    let (mut om, mut text) = (0.0f32, 0.0f32);
    for range in accept.split(',') {
        let mut parts = range.split(';').map(str::trim);
        let media = parts.next().unwrap_or("").to_ascii_lowercase();
        let (mut q, mut version) = (1.0f32, None);
        for p in parts {
            let Some((k, v)) = p.split_once('=') else {
                continue;
            };
            match k.trim().to_ascii_lowercase().as_str() {
                "q" => q = v.trim().parse().unwrap_or(0.0),
                "version" => version = Some(v.trim().trim_matches('"').to_string()),
                _ => {}
            }
        }
        match media.as_str() {
            "application/openmetrics-text" if version.as_deref().is_none_or(|v| v == "1.0.0") => {
                om = om.max(q)
            }
            "text/plain" if version.as_deref().is_none_or(|v| v == "0.0.4") => text = text.max(q),
            "text/*" | "*/*" => text = text.max(q),
            _ => {}
        }
    }
    if om > 0.0 && om >= text {
        Format::OpenMetrics
    } else {
        Format::Text
    }
}

/// The exposition in `format`.
pub fn encode(e: &Arc<Exposition>, format: Format) -> String {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(Snapshot(e.clone())));
    let mut out = String::with_capacity(4096 + e.series.len() * 600);
    // Writing into a String cannot fail; a collector error would be ours.
    let written = match format {
        Format::OpenMetrics => prometheus_client::encoding::text::encode(&mut out, &registry),
        Format::Text => prometheus_client::encoding::prometheus_text::encode(&mut out, &registry),
    };
    debug_assert!(written.is_ok());
    out
}

#[derive(Debug)]
struct Snapshot(Arc<Exposition>);

/// A series' labels, plus one more (the gauge's `state`, the drops'
/// `reason`).
struct With<'a>(
    &'a [(&'static str, String)],
    Option<(&'static str, &'a str)>,
);

impl EncodeLabelSet for With<'_> {
    fn encode(
        &self,
        encoder: &mut prometheus_client::encoding::LabelSetEncoder,
    ) -> Result<(), fmt::Error> {
        for (k, v) in self.0 {
            prometheus_client::encoding::EncodeLabel::encode(
                &(*k, v.as_str()),
                encoder.encode_label(),
            )?;
        }
        if let Some(extra) = &self.1 {
            prometheus_client::encoding::EncodeLabel::encode(extra, encoder.encode_label())?;
        }
        Ok(())
    }
}

type Pick = fn(&SeriesValues) -> u64;

/// Counters of every series, or of TCP series only.
const COUNTERS: [(&str, &str, Option<Unit>, bool, Pick); 6] = [
    (
        "tcptop_sent",
        "Payload bytes sent (TCP: the bytes the application queued into the socket, by any \
         path; UDP: each send call's bytes).",
        Some(Unit::Bytes),
        false,
        |s| s.totals.tx_bytes,
    ),
    (
        "tcptop_received",
        "Payload bytes received (TCP: the bytes the application read out of the socket, by any \
         path; UDP: each receive call's bytes).",
        Some(Unit::Bytes),
        false,
        |s| s.totals.rx_bytes,
    ),
    (
        "tcptop_sent_packets",
        "Packets sent (TCP: segments; UDP: datagrams).",
        None,
        false,
        |s| s.totals.tx_packets,
    ),
    (
        "tcptop_received_packets",
        "Packets received (TCP: segments; UDP: datagrams).",
        None,
        false,
        |s| s.totals.rx_packets,
    ),
    (
        "tcptop_tcp_retransmits",
        "TCP segments retransmitted.",
        None,
        true,
        |s| s.totals.retrans,
    ),
    (
        "tcptop_connections_closed",
        "TCP connections and UDP flows that ended.",
        None,
        false,
        |s| s.totals.closed,
    ),
];

impl Collector for Snapshot {
    fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), fmt::Error> {
        let e = &*self.0;
        let tcp = |s: &&SeriesValues| s.proto == Proto::Tcp;
        for (name, help, unit, tcp_only, pick) in &COUNTERS {
            let mut m = enc.encode_descriptor(name, help, unit.as_ref(), MetricType::Counter)?;
            for s in e.series.iter().filter(|s| !tcp_only || tcp(s)) {
                m.encode_family(&With(&s.labels, None))?
                    .encode_counter::<NoLabelSet, u64, u64>(&pick(s), None)?;
            }
        }

        let mut m = enc.encode_descriptor(
            "tcptop_tcp_connections",
            "Live TCP connections by state, at the latest snapshot.",
            None,
            MetricType::Gauge,
        )?;
        for s in e.series.iter().filter(tcp) {
            for (state, n) in GAUGE_STATES.iter().zip(s.states) {
                if n > 0 {
                    m.encode_family(&With(&s.labels, Some(("state", state))))?
                        .encode_gauge(&n)?;
                }
            }
        }

        let mut m = enc.encode_descriptor(
            "tcptop_tcp_rtt",
            "Smoothed round-trip time of TCP connections: one observation per connection with a \
             known RTT per snapshot it is in.",
            Some(&Unit::Seconds),
            MetricType::Histogram,
        )?;
        for s in e.series.iter().filter(tcp) {
            let buckets: Vec<(f64, u64)> = RTT_BUCKETS_US
                .iter()
                .map(|&us| f64::from(us) / 1e6)
                .chain([f64::INFINITY])
                .zip(s.rtt.counts)
                .collect();
            m.encode_family(&With(&s.labels, None))?
                .encode_histogram::<NoLabelSet>(
                    s.rtt.sum_us as f64 / 1e6,
                    s.rtt.count,
                    &buckets,
                    None,
                )?;
        }

        let mut m = enc.encode_descriptor(
            "tcptop_dropped_events",
            "What the kernel side could not record: events lost with the ring buffer full, \
             connections not tracked with the table full, UDP flows ended early with the flow \
             table nearly full (reported closed with their counters).",
            None,
            MetricType::Counter,
        )?;
        for (reason, n) in [
            ("ring_buffer_full", e.drops.events),
            ("conn_table_full", e.drops.conns),
            ("udp_flow_evicted", e.drops.evicted),
        ] {
            m.encode_family(&With(&[], Some(("reason", reason))))?
                .encode_counter::<NoLabelSet, u64, u64>(&n, None)?;
        }

        let mut m = enc.encode_descriptor(
            "tcptop_series_overflow",
            "Connections and flows counted in an overflow series (overflow=\"true\") because \
             their label set did not fit under --metrics-max-series.",
            None,
            MetricType::Counter,
        )?;
        m.encode_counter::<NoLabelSet, u64, u64>(&e.overflowed, None)?;

        let mut m = enc.encode_descriptor(
            "tcptop_snapshots",
            "Snapshots taken: the values above are as of the latest one.",
            None,
            MetricType::Counter,
        )?;
        m.encode_counter::<NoLabelSet, u64, u64>(&e.snapshots, None)?;

        let mut m = enc.encode_descriptor(
            "tcptop_build",
            "tcptop's version and data source (the kernel hook set, or diag).",
            None,
            MetricType::Info,
        )?;
        m.encode_info(&[
            ("version", env!("CARGO_PKG_VERSION")),
            ("source", e.source.as_str()),
        ])?;
        Ok(())
    }
}
