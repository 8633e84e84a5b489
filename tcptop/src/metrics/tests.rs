//! The aggregator on real tables, the exposition's text in both formats,
//! negotiation and the HTTP answers (no socket).

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::*;
use crate::model::{ConnKey, ConnSample, ConnState, Counters, Drops, Proto, Snapshot, Workload};
use crate::table::ConnTable;

const EPH: (u16, u16) = (32768, 60999);

fn conn(lport: u16, rport: u16, id: u64, comm: &str, tx: u64, rx: u64) -> ConnSample {
    ConnSample {
        key: ConnKey {
            proto: Proto::Tcp,
            local: format!("10.0.0.1:{lport}").parse().unwrap(),
            remote: format!("10.0.0.2:{rport}").parse().unwrap(),
            netns: 4026531840,
        },
        id,
        pid: 100,
        comm: comm.into(),
        state: ConnState::Established,
        counters: Counters {
            tx_bytes: tx,
            rx_bytes: rx,
            tx_packets: tx / 100,
            rx_packets: rx / 100,
            retrans: 0,
        },
        rtt_us: Some(30),
        cgroup_id: 0,
        active: None,
        workload: None,
    }
}

fn udp(lport: u16, id: u64, comm: &str, tx: u64) -> ConnSample {
    let mut s = conn(lport, 53, id, comm, tx, 0);
    s.key.proto = Proto::Udp;
    s.state = ConnState::Flow;
    s.rtt_us = None;
    s
}

/// A table, an aggregator and a clock: one `step` is one snapshot.
struct Rig {
    table: ConnTable,
    agg: Aggregator,
    filter: crate::table::Filter,
    t0: Instant,
    now: Instant,
}

impl Rig {
    fn new(level: Level, max_series: usize) -> Rig {
        Rig::with(Options {
            level,
            max_series,
            top_remotes: 2,
        })
    }

    fn with(opts: Options) -> Rig {
        let t0 = Instant::now();
        Rig {
            table: ConnTable::new(),
            agg: Aggregator::new(opts, "tracepoint+btf").with_ephemeral(EPH),
            filter: crate::table::Filter::default(),
            t0,
            now: t0,
        }
    }

    fn step_at(
        &mut self,
        secs: u64,
        live: Vec<ConnSample>,
        closed: Vec<ConnSample>,
    ) -> Arc<Exposition> {
        self.now = self.t0 + Duration::from_secs(secs);
        self.table.apply(
            Snapshot {
                live,
                closed,
                drops: Drops {
                    events: 3,
                    conns: 2,
                    evicted: 1,
                },
                partial: false,
                standing: Vec::new(),
            },
            self.now,
            1.0,
        );
        self.agg.update(&self.table, &self.filter, self.now);
        Arc::new(self.agg.exposition())
    }
}

/// The series whose labels include every `(name, value)` of `want` and
/// no label `overflow`, unless asked for.
fn find<'a>(e: &'a Exposition, want: &[(&str, &str)]) -> Option<&'a SeriesValues> {
    e.series.iter().find(|s| {
        want.iter()
            .all(|(k, v)| s.labels.iter().any(|(lk, lv)| lk == k && lv == v))
            && (want.iter().any(|(k, _)| *k == "overflow")
                || !s.labels.iter().any(|(k, _)| *k == "overflow"))
    })
}

fn totals(e: &Exposition, comm: &str) -> aggregate::Totals {
    find(e, &[("comm", comm)])
        .unwrap_or_else(|| panic!("no series of {comm}: {:#?}", e.series))
        .totals
}

#[test]
fn names_labels_and_both_formats() {
    let mut rig = Rig::new(Level::Process, 100);
    let mut c = conn(45000, 443, 1, "curl", 1000, 2500);
    c.counters.retrans = 2;
    c.rtt_us = Some(1800);
    c.workload = Some(Arc::new(Workload {
        cgroup: "/system.slice/nginx.service".into(),
        unit: Some("nginx.service".into()),
        container: None,
        pod: None,
    }));
    let e = rig.step_at(1, vec![c, udp(5353, 2, "avahi", 300)], vec![]);
    let om = encode(&e, Format::OpenMetrics);
    let labels = r#"{proto="tcp",comm="curl",workload="nginx.service",unit="nginx.service"}"#;
    for line in [
        "# TYPE tcptop_sent_bytes counter".to_string(),
        "# UNIT tcptop_sent_bytes bytes".to_string(),
        format!("tcptop_sent_bytes_total{labels} 1000"),
        format!("tcptop_received_bytes_total{labels} 2500"),
        format!("tcptop_sent_packets_total{labels} 10"),
        format!("tcptop_received_packets_total{labels} 25"),
        format!("tcptop_tcp_retransmits_total{labels} 2"),
        format!("tcptop_connections_closed_total{labels} 0"),
        "# TYPE tcptop_tcp_connections gauge".to_string(),
        format!(
            "tcptop_tcp_connections{} 1",
            labels.replace('}', r#",state="ESTABLISHED"}"#)
        ),
        "# TYPE tcptop_tcp_rtt_seconds histogram".to_string(),
        "# UNIT tcptop_tcp_rtt_seconds seconds".to_string(),
        format!(
            "tcptop_tcp_rtt_seconds_bucket{} 0",
            labels.replace('{', r#"{le="0.001","#)
        ),
        format!(
            "tcptop_tcp_rtt_seconds_bucket{} 1",
            labels.replace('{', r#"{le="0.0025","#)
        ),
        format!(
            "tcptop_tcp_rtt_seconds_bucket{} 1",
            labels.replace('{', r#"{le="+Inf","#)
        ),
        format!("tcptop_tcp_rtt_seconds_sum{labels} 0.0018"),
        format!("tcptop_tcp_rtt_seconds_count{labels} 1"),
        r#"tcptop_sent_bytes_total{proto="udp",comm="avahi"} 300"#.to_string(),
        r#"tcptop_dropped_events_total{reason="ring_buffer_full"} 3"#.to_string(),
        r#"tcptop_dropped_events_total{reason="conn_table_full"} 2"#.to_string(),
        r#"tcptop_dropped_events_total{reason="udp_flow_evicted"} 1"#.to_string(),
        "tcptop_series_overflow_total 0".to_string(),
        "tcptop_snapshots_total 1".to_string(),
        "# TYPE tcptop_build info".to_string(),
        format!(
            r#"tcptop_build_info{{version="{}",source="tracepoint+btf"}} 1"#,
            env!("CARGO_PKG_VERSION")
        ),
    ] {
        assert!(om.lines().any(|l| l == line), "no line {line:?} in\n{om}");
    }
    assert!(om.ends_with("# EOF\n"), "{om}");
    // TCP-only families leave UDP series out.
    for family in [
        "tcptop_tcp_retransmits_total",
        "tcptop_tcp_connections",
        "tcptop_tcp_rtt",
    ] {
        assert!(
            !om.lines()
                .any(|l| l.starts_with(family) && l.contains("udp")),
            "{family} has a UDP series:\n{om}"
        );
    }

    let text = encode(&e, Format::Text);
    for line in [
        "# TYPE tcptop_sent_bytes_total counter".to_string(),
        format!("tcptop_sent_bytes_total{labels} 1000"),
        "# TYPE tcptop_build_info gauge".to_string(),
        "# TYPE tcptop_tcp_rtt_seconds histogram".to_string(),
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "no line {line:?} in\n{text}"
        );
    }
    assert!(
        !text.contains("# EOF") && !text.contains("# UNIT"),
        "{text}"
    );
}

#[test]
fn counters_keep_closed_connections_and_never_go_backwards() {
    let mut rig = Rig::new(Level::Process, 100);
    let e = rig.step_at(1, vec![conn(45000, 443, 1, "curl", 100, 10)], vec![]);
    assert_eq!(
        (totals(&e, "curl").tx_bytes, totals(&e, "curl").closed),
        (100, 0)
    );
    // A reading that went backwards (racy kernel copy) adds nothing.
    let e = rig.step_at(2, vec![conn(45000, 443, 1, "curl", 90, 10)], vec![]);
    assert_eq!(totals(&e, "curl").tx_bytes, 100);
    // It closes with its final counters; a second one opens.
    let e = rig.step_at(
        3,
        vec![conn(45001, 443, 2, "curl", 7, 0)],
        vec![conn(45000, 443, 1, "curl", 150, 20)],
    );
    let t = totals(&e, "curl");
    assert_eq!((t.tx_bytes, t.rx_bytes, t.closed), (157, 20, 1));
    // The first is gone from the table; its bytes stay.
    let e = rig.step_at(4, vec![conn(45001, 443, 2, "curl", 8, 0)], vec![]);
    let t = totals(&e, "curl");
    assert_eq!((t.tx_bytes, t.rx_bytes, t.closed), (158, 20, 1));
    // One that opened and closed between two snapshots counts whole.
    let e = rig.step_at(5, vec![], vec![conn(45002, 443, 3, "curl", 1000, 1)]);
    let t = totals(&e, "curl");
    // The second vanished without a close report: what it moved stays.
    assert_eq!((t.tx_bytes, t.rx_bytes, t.closed), (1158, 21, 2));
    assert_eq!(rig.agg.tracked(), 0);
    assert_eq!(e.snapshots, 5);
}

#[test]
fn reused_endpoints_and_owner_changes() {
    let mut rig = Rig::new(Level::Process, 100);
    let unknown = |e: &Exposition| {
        e.series
            .iter()
            .find(|s| s.labels.iter().all(|(k, _)| *k != "comm"))
            .map(|s| s.totals.tx_bytes)
    };
    // A connection seen before its owner is known (a listener's child
    // before its server's first call): its bytes wait for the owner.
    let mut seed = conn(45000, 443, 1, "", 50, 0);
    seed.pid = 0;
    let e = rig.step_at(1, vec![seed], vec![]);
    assert_eq!(unknown(&e), Some(0));
    let e = rig.step_at(2, vec![conn(45000, 443, 1, "wget", 80, 0)], vec![]);
    assert_eq!(unknown(&e), Some(0));
    assert_eq!(totals(&e, "wget").tx_bytes, 80);
    // One whose owner stays unknown past the grace time: its bytes are
    // counted without comm from then on.
    let mut orphan = conn(46000, 443, 9, "", 7, 0);
    orphan.pid = 0;
    rig.step_at(
        2,
        vec![conn(45000, 443, 1, "wget", 80, 0), orphan.clone()],
        vec![],
    );
    let g = aggregate::OWNER_GRACE.as_secs();
    let e = rig.step_at(
        2 + g,
        vec![conn(45000, 443, 1, "wget", 80, 0), orphan],
        vec![],
    );
    assert_eq!(unknown(&e), Some(7));
    // Then its owner appears: what it moves from then on is the owner's.
    let e = rig.step_at(
        3 + g,
        vec![
            conn(45000, 443, 1, "wget", 80, 0),
            conn(46000, 443, 9, "late", 10, 0),
        ],
        vec![],
    );
    assert_eq!((unknown(&e), totals(&e, "late").tx_bytes), (Some(7), 3));
    // The same endpoints: the old instance's close and a new instance in
    // one snapshot.
    let e = rig.step_at(
        4 + g,
        vec![conn(45000, 443, 2, "wget", 5, 0)],
        vec![conn(45000, 443, 1, "wget", 100, 0)],
    );
    let t = totals(&e, "wget");
    assert_eq!((t.tx_bytes, t.closed), (100 + 5, 1));
    let e = rig.step_at(5 + g, vec![conn(45000, 443, 2, "wget", 9, 0)], vec![]);
    assert_eq!(totals(&e, "wget").tx_bytes, 109);
    assert_eq!(rig.agg.tracked(), 1);
}

#[test]
fn series_are_capped_and_overflow_is_counted_once() {
    let mut rig = Rig::new(Level::Process, 2);
    rig.step_at(
        1,
        vec![
            conn(40001, 443, 1, "a", 1, 0),
            conn(40002, 443, 2, "b", 10, 0),
        ],
        vec![],
    );
    let live = vec![
        conn(40001, 443, 1, "a", 1, 0),
        conn(40002, 443, 2, "b", 10, 0),
        conn(40003, 443, 3, "c", 100, 0),
        conn(40004, 443, 4, "d", 1000, 0),
        udp(40005, 5, "e", 7),
    ];
    let e = rig.step_at(2, live.clone(), vec![]);
    assert_eq!(
        (totals(&e, "a").tx_bytes, totals(&e, "b").tx_bytes),
        (1, 10)
    );
    assert!(find(&e, &[("comm", "c")]).is_none());
    let over = find(&e, &[("proto", "tcp"), ("overflow", "true")]).unwrap();
    assert_eq!(over.totals.tx_bytes, 1100);
    assert_eq!(over.labels.len(), 2, "{:?}", over.labels);
    let udp_over = find(&e, &[("proto", "udp"), ("overflow", "true")]).unwrap();
    assert_eq!(udp_over.totals.tx_bytes, 7);
    assert_eq!(e.overflowed, 3);
    // The same connections again: not counted again.
    let mut grown = live.clone();
    for s in &mut grown {
        s.counters.tx_bytes *= 2;
    }
    let e = rig.step_at(3, grown, vec![]);
    assert_eq!(e.overflowed, 3);
    let all: u64 = e.series.iter().map(|s| s.totals.tx_bytes).sum();
    assert_eq!(all, 2 * 1118, "no byte lost");
    // Every connection closes: still capped, nothing recounted.
    let e = rig.step_at(4, vec![], live);
    assert_eq!(e.overflowed, 3);
    assert_eq!(e.series.len(), 4);
    assert_eq!(e.series.iter().map(|s| s.totals.closed).sum::<u64>(), 5);
    // Encoded, the overflow series carries only proto and overflow.
    let om = encode(&e, Format::OpenMetrics);
    assert!(
        om.lines()
            .any(|l| l == r#"tcptop_sent_bytes_total{proto="tcp",overflow="true"} 2200"#),
        "{om}"
    );
}

#[test]
fn idle_series_leave_after_ten_minutes_live_ones_stay() {
    let mut rig = Rig::new(Level::Process, 2);
    rig.step_at(0, vec![conn(40001, 443, 1, "idle", 5, 0)], vec![]);
    rig.step_at(
        1,
        vec![conn(40001, 443, 1, "idle", 5, 0)],
        vec![conn(40002, 443, 2, "gone", 9, 0)],
    );
    let secs = IDLE_SERIES.as_secs();
    // Just before the idle time: both still there.
    let e = rig.step_at(secs, vec![conn(40001, 443, 1, "idle", 5, 0)], vec![]);
    assert_eq!(e.series.len(), 2);
    let e = rig.step_at(secs + 1, vec![conn(40001, 443, 1, "idle", 5, 0)], vec![]);
    assert_eq!(e.series.len(), 1, "{:#?}", e.series);
    assert!(
        find(&e, &[("comm", "idle")]).is_some(),
        "a live connection keeps its series"
    );
    // The freed slot takes a new label set (no overflow).
    let e = rig.step_at(
        secs + 2,
        vec![
            conn(40001, 443, 1, "idle", 5, 0),
            conn(40003, 443, 3, "new", 1, 0),
        ],
        vec![],
    );
    assert_eq!(e.overflowed, 0);
    assert_eq!(totals(&e, "new").tx_bytes, 1);
    // Back after expiry, a label set restarts from zero.
    let e = rig.step_at(
        secs + 3,
        vec![conn(40001, 443, 1, "idle", 5, 0)],
        vec![conn(40004, 443, 4, "gone", 4, 0)],
    );
    assert_eq!(e.overflowed, 1, "two label sets in use: it overflows");
    // When the idle connection goes, its series leaves 10 minutes later.
    rig.step_at(secs + 4, vec![], vec![]);
    let e = rig.step_at(2 * secs + 4, vec![], vec![]);
    assert!(find(&e, &[("comm", "idle")]).is_none());
}

#[test]
fn hostile_names_are_escaped() {
    let mut rig = Rig::new(Level::Process, 10);
    let mut c = conn(40001, 443, 1, "e\"\n\x1b[31m\\", 1, 0);
    c.workload = Some(Arc::new(Workload {
        cgroup: "/x.slice/a\"b}\n{.service".into(),
        unit: Some("a\"b}\n{.service".into()),
        container: None,
        pod: Some("ns/p\u{202e}od".into()),
    }));
    let e = rig.step_at(1, vec![c], vec![]);
    for format in [Format::OpenMetrics, Format::Text] {
        let body = encode(&e, format);
        let line = body
            .lines()
            .find(|l| l.starts_with("tcptop_sent_bytes_total{"))
            .unwrap();
        assert_eq!(
            line,
            r#"tcptop_sent_bytes_total{proto="tcp",comm="e\"\\x0a\\x1b[31m\\\\",workload="ns/p\\u{202e}od",unit="a\"b}\\x0a{.service",pod="ns/p\\u{202e}od"} 1"#
        );
        assert!(
            !body.contains('\x1b') && !body.contains('\u{202e}'),
            "{body}"
        );
    }
}

#[test]
fn remote_level_names_the_top_addresses_and_service_ports() {
    let mut rig = Rig::new(Level::Remote, 100);
    let to = |ip: &str, lport: u16, rport: u16, id: u64, tx: u64| {
        let mut s = conn(lport, rport, id, "app", tx, 0);
        s.key.remote = if ip.contains(':') {
            format!("[{ip}]:{rport}")
        } else {
            format!("{ip}:{rport}")
        }
        .parse()
        .unwrap();
        s
    };
    let of = |e: &Exposition, ip: &str, port: &str, role: &str| {
        find(e, &[("remote_ip", ip), ("port", port), ("role", role)]).map(|s| s.totals.tx_bytes)
    };
    // Two names: the first two addresses seen get them.
    rig.step_at(
        1,
        vec![
            to("192.0.2.1", 45000, 443, 1, 10),
            to("192.0.2.2", 45001, 443, 2, 20),
        ],
        vec![],
    );
    let e = rig.step_at(
        2,
        vec![
            to("192.0.2.1", 45000, 443, 1, 10),
            to("192.0.2.2", 45001, 443, 2, 20),
            to("192.0.2.3", 45002, 443, 3, 5000),
            // Served here: a client of our 8080 from its ephemeral port.
            to("::ffff:192.0.2.4", 8080, 51000, 4, 1),
        ],
        vec![],
    );
    assert_eq!(of(&e, "192.0.2.1", "443", "client"), Some(10));
    assert_eq!(of(&e, "192.0.2.2", "443", "client"), Some(20));
    assert_eq!(of(&e, "other", "443", "client"), Some(5000));
    assert_eq!(of(&e, "other", "8080", "server"), Some(1));
    // Then the top two by bytes: .3 and .2; .1's series stays (and stops
    // growing), its growth goes to other.
    let e = rig.step_at(
        3,
        vec![
            to("192.0.2.1", 45000, 443, 1, 11),
            to("192.0.2.2", 45001, 443, 2, 22),
            to("192.0.2.3", 45002, 443, 3, 5003),
            to("::ffff:192.0.2.4", 8080, 51000, 4, 1),
        ],
        vec![],
    );
    assert_eq!(of(&e, "192.0.2.3", "443", "client"), Some(3));
    assert_eq!(of(&e, "192.0.2.2", "443", "client"), Some(22));
    assert_eq!(of(&e, "192.0.2.1", "443", "client"), Some(10));
    assert_eq!(of(&e, "other", "443", "client"), Some(5001));
    let sum: u64 = e.series.iter().map(|s| s.totals.tx_bytes).sum();
    assert_eq!(sum, 11 + 22 + 5003 + 1);
    // No series carries an ephemeral port.
    for s in &e.series {
        for (k, v) in s.labels.iter() {
            if *k == "port" {
                assert!(
                    !(45000..=51000).contains(&v.parse::<u16>().unwrap()),
                    "{s:?}"
                );
            }
        }
    }
}

#[test]
fn connection_level_labels() {
    let mut rig = Rig::new(Level::Connection, 10);
    let mut v6 = conn(45000, 443, 2, "curl", 3, 0);
    v6.key.local = "[2001:db8::1]:45000".parse().unwrap();
    v6.key.remote = "[2001:db8::2]:443".parse().unwrap();
    let e = rig.step_at(1, vec![conn(45000, 443, 1, "curl", 9, 0), v6], vec![]);
    let om = encode(&e, Format::OpenMetrics);
    for want in [
        r#"tcptop_sent_bytes_total{proto="tcp",comm="curl",pid="100",local="10.0.0.1:45000",remote="10.0.0.2:443",netns="4026531840"} 9"#,
        r#"tcptop_sent_bytes_total{proto="tcp",comm="curl",pid="100",local="[2001:db8::1]:45000",remote="[2001:db8::2]:443",netns="4026531840"} 3"#,
    ] {
        assert!(om.lines().any(|l| l == want), "no {want} in\n{om}");
    }
}

#[test]
fn rtt_histogram_and_state_gauge() {
    let mut rig = Rig::new(Level::Process, 10);
    let mut a = conn(40001, 443, 1, "x", 0, 0);
    a.rtt_us = Some(50);
    let mut b = conn(40002, 443, 2, "x", 0, 0);
    b.rtt_us = Some(51);
    b.state = ConnState::CloseWait;
    let mut c = conn(40003, 443, 3, "x", 0, 0);
    c.rtt_us = Some(3_000_000);
    let mut d = conn(40004, 443, 4, "x", 0, 0);
    d.rtt_us = None;
    let e = rig.step_at(1, vec![a.clone(), b, c, d], vec![]);
    let s = find(&e, &[("comm", "x")]).unwrap();
    assert_eq!(s.rtt.count, 3);
    assert_eq!(s.rtt.counts[0], 1, "50 µs is in le=0.00005");
    assert_eq!(s.rtt.counts[1], 1, "51 µs in le=0.0001");
    assert_eq!(s.rtt.counts[RTT_BUCKETS_US.len()], 1, "3 s in +Inf only");
    assert_eq!(s.rtt.sum_us, 3_000_101);
    assert_eq!(s.states[0], 3, "ESTABLISHED");
    assert_eq!(s.states[7], 1, "CLOSE_WAIT");
    // One observation per connection per snapshot; closing ones count too.
    let e = rig.step_at(2, vec![], vec![a]);
    let s = find(&e, &[("comm", "x")]).unwrap();
    assert_eq!(s.rtt.count, 4);
    assert_eq!(s.states, [0; 13], "no live connection");
}

#[test]
fn filters_apply() {
    let mut rig = Rig::new(Level::Process, 10);
    rig.filter.ports = vec![443];
    let e = rig.step_at(
        1,
        vec![
            conn(40001, 443, 1, "in", 1, 0),
            conn(40002, 80, 2, "out", 1, 0),
        ],
        vec![],
    );
    assert!(find(&e, &[("comm", "in")]).is_some());
    assert!(find(&e, &[("comm", "out")]).is_none());
}

#[test]
fn negotiation() {
    let prometheus_2_42 = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
    for (accept, want) in [
        (None, Format::Text),
        (Some(prometheus_2_42), Format::OpenMetrics),
        (Some("application/openmetrics-text"), Format::OpenMetrics),
        (
            Some("Application/OpenMetrics-Text; Version=1.0.0"),
            Format::OpenMetrics,
        ),
        (Some("text/plain"), Format::Text),
        (Some("*/*"), Format::Text),
        (
            Some("text/plain;version=0.0.4;q=1,application/openmetrics-text;q=0.5"),
            Format::Text,
        ),
        (
            Some("application/openmetrics-text;version=0.0.1"),
            Format::Text,
        ),
        (Some("application/openmetrics-text;q=0"), Format::Text),
        (Some("application/json"), Format::Text),
        (Some("garbage;;;=,"), Format::Text),
    ] {
        assert_eq!(negotiate(accept), want, "{accept:?}");
    }
}

#[test]
fn http_answers() {
    let mut rig = Rig::new(Level::Process, 10);
    let e = rig.step_at(1, vec![conn(40001, 443, 1, "x", 1, 0)], vec![]);
    let shared = Shared::new((*e).clone());
    let get = |method: &str, path: &str, accept: Option<&str>| {
        let mut req = hyper::Request::builder().method(method).uri(path);
        if let Some(a) = accept {
            req = req.header("accept", a);
        }
        server::respond(&shared, &req.body(()).unwrap())
    };
    let ct = |r: &hyper::Response<_>| r.headers()["content-type"].to_str().unwrap().to_string();
    let r = get("GET", "/metrics", None);
    assert_eq!(r.status(), 200);
    assert_eq!(ct(&r), "text/plain; version=0.0.4; charset=utf-8");
    let r = get(
        "GET",
        "/metrics?x=1",
        Some("application/openmetrics-text; version=1.0.0"),
    );
    assert_eq!(r.status(), 200);
    assert_eq!(
        ct(&r),
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    );
    assert_eq!(get("HEAD", "/metrics", None).status(), 200);
    for path in [
        "/",
        "/metrics/",
        "/metricsx",
        "/favicon.ico",
        "/debug/pprof",
    ] {
        assert_eq!(get("GET", path, None).status(), 404, "{path}");
    }
    let r = get("POST", "/metrics", None);
    assert_eq!(r.status(), 405);
    assert_eq!(r.headers()["allow"], "GET, HEAD");
}

#[test]
fn one_encoding_per_snapshot_and_format() {
    let mut rig = Rig::new(Level::Process, 10);
    let e = rig.step_at(1, vec![conn(40001, 443, 1, "x", 1, 0)], vec![]);
    let shared = Shared::new((*e).clone());
    let a = shared.body(Format::OpenMetrics);
    let b = shared.body(Format::OpenMetrics);
    assert_eq!(
        a.as_ptr(),
        b.as_ptr(),
        "the second scrape shares the first's buffer"
    );
    let t = shared.body(Format::Text);
    assert_ne!(a, t);
    let e = rig.step_at(2, vec![conn(40001, 443, 1, "x", 2, 0)], vec![]);
    shared.publish(e);
    let c = shared.body(Format::OpenMetrics);
    assert_ne!(a, c, "a new snapshot is encoded anew");
    assert!(
        std::str::from_utf8(&c)
            .unwrap()
            .contains("tcptop_snapshots_total 2")
    );
}

#[test]
fn feed_publishes_each_snapshot() {
    let mut m = Metrics::new(
        Options {
            level: Level::Process,
            max_series: 10,
            top_remotes: 1,
        },
        "diag",
        crate::table::Filter::default(),
    );
    let shared = m.shared();
    assert_eq!(shared.current().snapshots, 0);
    let mut table = ConnTable::new();
    table.apply(
        Snapshot {
            live: vec![conn(40001, 443, 1, "x", 5, 0)],
            ..Snapshot::default()
        },
        Instant::now(),
        1.0,
    );
    m.update(&table, Instant::now());
    let e = shared.current();
    assert_eq!((e.snapshots, e.source.as_str()), (1, "diag"));
    assert_eq!(totals(&e, "x").tx_bytes, 5);
}
