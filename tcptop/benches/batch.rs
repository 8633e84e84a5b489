//! Batch mode under connection churn: one snapshot of 40,000 closed
//! connections (one second of the maximum-rate churn load, both ends)
//! through the table, the sort and JSON lines, as `tcptop --batch --format
//! jsonl` does each interval. Method and results: BENCHMARKS.md.
#![expect(
    clippy::unwrap_used,
    reason = "test and benchmark code: a failed unwrap fails the run"
)]

use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use tcptop::model::{ConnKey, ConnSample, ConnState, Counters, Proto, Snapshot};
use tcptop::output::jsonl;
use tcptop::table::{ConnTable, Row};

const CLOSED: usize = 40_000;

fn closed(n: usize) -> Vec<ConnSample> {
    (0..n)
        .map(|i| {
            let client = 32768 + (i / 2 % 28_000) as u16;
            let (local, remote) = if i % 2 == 0 {
                (format!("127.0.0.1:{client}"), "127.0.0.1:30000".to_string())
            } else {
                ("127.0.0.1:30000".to_string(), format!("127.0.0.1:{client}"))
            };
            ConnSample {
                key: ConnKey {
                    proto: Proto::Tcp,
                    local: local.parse().unwrap(),
                    remote: remote.parse().unwrap(),
                    netns: 4026531840,
                },
                id: 0xffff_8880_0000_0000 + i as u64 * 2304,
                pid: 1000 + (i % 4) as u32,
                comm: "python3".into(),
                state: ConnState::Closed,
                counters: Counters {
                    tx_bytes: 64,
                    rx_bytes: 64,
                    tx_packets: 4,
                    rx_packets: 4,
                    retrans: 0,
                },
                rtt_us: Some(30 + (i % 7) as u32),
                cgroup_id: 0,
                active: None,
                workload: None,
            }
        })
        .collect()
}

fn snapshot(c: &mut Criterion) {
    let mut table = ConnTable::new();
    let t0 = Instant::now();
    let samples = closed(CLOSED);
    let mut out = Vec::with_capacity(16 << 20);
    let mut s = 0;
    c.bench_function("batch_jsonl_40k_closed", |b| {
        b.iter(|| {
            s += 1;
            let snap = Snapshot {
                closed: samples.clone(),
                ..Default::default()
            };
            table.apply(snap, t0 + Duration::from_secs(s), 1.0);
            // As batch mode does it: JSON lines sort as they write.
            let rows: Vec<&Row> = table.rows().collect();
            out.clear();
            jsonl::write(&mut out, 1795616833.2, "tracepoint+btf", &rows).unwrap();
        });
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20).measurement_time(Duration::from_secs(8));
    targets = snapshot
}
criterion_main!(benches);
