//! A data source with `n` connections whose counters grow by different
//! amounts every collection, so rates, order and every cell change.

use tcptop::model::{ConnKey, ConnSample, ConnState, Counters, Proto, Snapshot};
use tcptop::platform::{DataSource, SourceError};

pub struct Busy {
    pub conns: Vec<ConnSample>,
    pub step: u64,
}

impl Busy {
    pub fn new(n: usize) -> Busy {
        let conns = (0..n)
            .map(|i| {
                let i = i as u32;
                ConnSample {
                    key: ConnKey {
                        proto: Proto::Tcp,
                        local: format!("10.{}.{}.1:{}", i / 250 % 250, i % 250, 20000 + i % 40000)
                            .parse()
                            .unwrap(),
                        remote: format!("192.168.{}.{}:443", i / 200 % 200, i % 200)
                            .parse()
                            .unwrap(),
                        netns: 4026531840,
                    },
                    id: u64::from(i) + 1,
                    pid: 1000 + i % 300,
                    comm: compact_str::format_compact!("worker-{}", i % 300),
                    state: ConnState::Established,
                    counters: Counters::default(),
                    rtt_us: Some(100 + i % 5000),
                    cgroup_id: 0,
                    active: None,
                    workload: None,
                }
            })
            .collect();
        Busy { conns, step: 0 }
    }
}

impl DataSource for Busy {
    fn hooks(&self) -> &str {
        "bench"
    }

    fn collect(&mut self) -> Result<Snapshot, SourceError> {
        self.step += 1;
        for (i, c) in self.conns.iter_mut().enumerate() {
            // Pseudo-random growth, different per connection and step.
            let x = (i as u64 + 1).wrapping_mul(2654435761) ^ self.step.wrapping_mul(40503);
            c.counters.rx_bytes += x % 5_000_000;
            c.counters.tx_bytes += (x >> 7) % 300_000;
            c.counters.rx_packets += x % 3000;
            c.counters.tx_packets += (x >> 3) % 500;
        }
        Ok(Snapshot {
            live: self.conns.clone(),
            ..Default::default()
        })
    }
}

/// Display settings every benchmark uses: 1 s interval, no filter.
pub fn settings() -> tcptop::ui::Settings {
    tcptop::ui::Settings {
        hooks: "bench".into(),
        interval: std::time::Duration::from_secs(1),
        bits: false,
        filter: tcptop::table::Filter::default(),
        notice: None,
        max_conns: 65_536,
    }
}
