//! Root integration tests for UDP flows: the real binary and kernel, real
//! datagrams of known sizes inside a fresh network namespace; every flow's
//! bytes and datagrams asserted exactly, on both ends.
#![expect(
    clippy::unwrap_used,
    reason = "test and benchmark code: a failed unwrap fails the run"
)]

mod common;

use std::time::Duration;

use common::{NetNs, Peer, Tcptop, of_conn, u};
use serde_json::Value;

fn sock(ip: &str, port: u16) -> String {
    if ip.contains(':') {
        format!("[{ip}]:{port}")
    } else {
        format!("{ip}:{port}")
    }
}

fn port_of(addr: &str) -> u16 {
    addr.rsplit(':').next().unwrap().parse().unwrap()
}

/// How tcptop shows the local end of an unconnected socket bound to the
/// wildcard address, whose datagrams go to or come from peers on `ip`:
/// the wildcard of the flow's family (an IPv4 peer of a dual-stack socket
/// makes an IPv4 flow) and the port its getsockname() reported (`local`).
fn bound(ip: &str, local: &str) -> String {
    let any = if ip.contains(':') { "::" } else { "0.0.0.0" };
    sock(any, port_of(local))
}

/// What one flow must add up to, seen from its `local` end.
struct Want<'a> {
    local: String,
    remote: String,
    tx: (u64, u64),
    rx: (u64, u64),
    pid: u32,
    comm: &'a str,
    /// Wall clock before its client's last round of datagrams.
    last_round: f64,
}

/// The flow was seen live (state "-") and then ended exactly once, as
/// CLOSED with exact final counters, no sooner than the idle timeout
/// after its last datagram, and nothing was reported for it afterwards.
fn check_flow(records: &[Value], w: &Want, netns: u64, idle: f64) {
    let recs = of_conn(records, &w.local, &w.remote);
    let ctx = format!("flow {} -> {}", w.local, w.remote);
    assert!(!recs.is_empty(), "{ctx}: no records");
    assert!(recs.iter().all(|r| r["proto"] == "udp"), "{ctx}");
    assert!(
        recs.iter().any(|r| r["state"] == "-"),
        "{ctx}: never seen live: {recs:#?}"
    );
    let closed: Vec<_> = recs.iter().filter(|r| r["state"] == "CLOSED").collect();
    assert_eq!(closed.len(), 1, "{ctx}: want one CLOSED record: {recs:#?}");
    assert_eq!(
        recs.last().unwrap()["state"],
        "CLOSED",
        "{ctx}: records after CLOSED"
    );
    let fin = closed[0];
    assert_eq!(
        (u(fin, "tx_bytes"), u(fin, "tx_packets")),
        w.tx,
        "{ctx}: sent bytes, datagrams"
    );
    assert_eq!(
        (u(fin, "rx_bytes"), u(fin, "rx_packets")),
        w.rx,
        "{ctx}: received bytes, datagrams"
    );
    assert_eq!(u(fin, "pid"), u64::from(w.pid), "{ctx}: owner");
    assert_eq!(fin["comm"], w.comm, "{ctx}");
    assert_eq!(u(fin, "netns"), netns, "{ctx}");
    assert!(fin["rtt_us"].is_null(), "{ctx}");
    let ended = fin["ts"].as_f64().unwrap();
    // The flow's last datagram came after its client's last round began.
    assert!(
        ended >= w.last_round + idle - 0.05,
        "{ctx}: ended {:.2} s after its last round of datagrams began (idle timeout {idle} s)",
        ended - w.last_round
    );
}

/// Three servers and three clients exchange datagrams of known sizes:
/// - A, connected, 20 x 100 bytes to S1, answered with 10 bytes each;
/// - C, unconnected, 5 x 64 bytes to S1 (IPv4-mapped from a v6 socket when
///   `mapped`), answered with 10 bytes each: S1's one socket has two flows;
/// - B, unconnected, 15 x 333 bytes to each of S2 and S3, which only
///   receive: B's one socket has two flows, and the receivers' owners
///   come from the receive side alone.
fn flows(tag: &str, ip: &str, base: u16, mapped: bool) {
    const IDLE: f64 = 1.5;
    let ns = NetNs::new(tag);
    let mut top = Tcptop::start(&["--udp", "--idle-timeout", &IDLE.to_string()]);
    // Several peers block in receives at once here: more than a kernel
    // without preemption gives the kprobe set's return probes slots for
    // on a small machine (tcptop warns; `hooks::io_warning`).
    if let Some(w) = top
        .warnings
        .iter()
        .find(|w| w.contains("calls of each hooked function"))
    {
        eprintln!("skipping flows({tag}): exact counts cannot hold here (known limitation): {w}");
        return;
    }
    let (s1, s2, s3) = (sock(ip, base), sock(ip, base + 1), sock(ip, base + 2));
    let server = |addr: &str, name: &str, datagrams: &str, reply: &str| -> Peer {
        let mut p = ns.peer(&[
            "udp-server",
            "--listen",
            addr,
            "--name",
            name,
            "--datagrams",
            datagrams,
            "--reply",
            reply,
        ]);
        p.expect("listening");
        p
    };
    let mut srv1 = server(&s1, "tt-udp-s1", "25", "10");
    let mut srv2 = server(&s2, "tt-udp-s2", "15", "0");
    let mut srv3 = server(&s3, "tt-udp-s3", "15", "0");

    let mut a = ns.peer(&[
        "udp-client",
        "--to",
        &s1,
        "--connected",
        "--count",
        "20",
        "--size",
        "100",
        "--reply",
        "10",
        "--name",
        "tt-udp-a",
    ]);
    let c_to = if mapped {
        format!("[::ffff:{ip}]:{base}")
    } else {
        s1.clone()
    };
    let mut c = ns.peer(&[
        "udp-client",
        "--to",
        &c_to,
        "--count",
        "5",
        "--size",
        "64",
        "--reply",
        "10",
        "--name",
        "tt-udp-c",
    ]);
    let mut b = ns.peer(&[
        "udp-client",
        "--to",
        &s2,
        "--to",
        &s3,
        "--count",
        "15",
        "--size",
        "333",
        "--name",
        "tt-udp-b",
    ]);
    let (a_done, b_done, c_done) = (a.expect("done"), b.expect("done"), c.expect("done"));
    let local = |d: &Value| d["local"].as_str().unwrap().to_string();
    let (a_local, b_local, c_local) = (local(&a_done), local(&b_done), local(&c_done));
    let last = |d: &Value| d["last_round_ts"].as_f64().unwrap();
    let (a_last, b_last, c_last) = (last(&a_done), last(&b_done), last(&c_done));
    // What the servers saw, by peer: the truth the flows must match.
    let by_peer = [
        srv1.expect("done"),
        srv2.expect("done"),
        srv3.expect("done"),
    ];
    let pids = (
        a.pid(),
        b.pid(),
        c.pid(),
        srv1.pid(),
        srv2.pid(),
        srv3.pid(),
    );
    for p in [a, b, c, srv1, srv2, srv3] {
        p.wait_ok();
    }
    // The servers see the address each client's datagrams came from.
    let (a_at, b_at, c_at) = (
        sock(ip, port_of(&a_local)),
        sock(ip, port_of(&b_local)),
        sock(ip, port_of(&c_local)),
    );
    assert_eq!(by_peer[0]["peers"][&a_at]["bytes"], 2000, "{by_peer:?}");
    assert_eq!(by_peer[0]["peers"][&c_at]["bytes"], 320, "{by_peer:?}");
    assert_eq!(by_peer[1]["peers"][&b_at]["bytes"], 4995, "{by_peer:?}");
    assert_eq!(by_peer[2]["peers"][&b_at]["bytes"], 4995, "{by_peer:?}");
    // A client's own flows show its socket as bound: connected, the
    // address connect() chose; unconnected, the wildcard (C's IPv4-mapped
    // flow from a dual-stack socket: the IPv4 wildcard).
    let (b_own, c_own) = (bound(ip, &b_local), bound(ip, &c_local));
    assert_eq!(a_local, a_at, "connected client A reports its address");

    // Every flow ends after the idle timeout; wait for the last one.
    for (l, r) in [(&s3, &b_at), (&b_own, &s3)] {
        top.wait_for(|v| {
            v["local"] == l.as_str() && v["remote"] == r.as_str() && v["state"] == "CLOSED"
        });
    }
    top.pump(Duration::from_millis(600));
    let (records, stderr) = top.stop();
    assert!(
        stderr.contains("dropped 0 events (ring buffer full), 0 connections (table full)"),
        "{stderr}"
    );
    assert!(
        records.iter().all(|r| r["proto"] == "udp"),
        "--udp shows UDP only"
    );

    let netns = ns.inode();
    let (a_pid, b_pid, c_pid, s1_pid, s2_pid, s3_pid) = pids;
    let wants = [
        Want {
            local: a_at.clone(),
            remote: s1.clone(),
            tx: (2000, 20),
            rx: (200, 20),
            pid: a_pid,
            comm: "tt-udp-a",
            last_round: a_last,
        },
        Want {
            local: s1.clone(),
            remote: a_at.clone(),
            tx: (200, 20),
            rx: (2000, 20),
            pid: s1_pid,
            comm: "tt-udp-s1",
            last_round: a_last,
        },
        Want {
            local: c_own.clone(),
            remote: s1.clone(),
            tx: (320, 5),
            rx: (50, 5),
            pid: c_pid,
            comm: "tt-udp-c",
            last_round: c_last,
        },
        Want {
            local: s1.clone(),
            remote: c_at.clone(),
            tx: (50, 5),
            rx: (320, 5),
            pid: s1_pid,
            comm: "tt-udp-s1",
            last_round: c_last,
        },
        Want {
            local: b_own.clone(),
            remote: s2.clone(),
            tx: (4995, 15),
            rx: (0, 0),
            pid: b_pid,
            comm: "tt-udp-b",
            last_round: b_last,
        },
        Want {
            local: b_own.clone(),
            remote: s3.clone(),
            tx: (4995, 15),
            rx: (0, 0),
            pid: b_pid,
            comm: "tt-udp-b",
            last_round: b_last,
        },
        Want {
            local: s2.clone(),
            remote: b_at.clone(),
            tx: (0, 0),
            rx: (4995, 15),
            pid: s2_pid,
            comm: "tt-udp-s2",
            last_round: b_last,
        },
        Want {
            local: s3.clone(),
            remote: b_at.clone(),
            tx: (0, 0),
            rx: (4995, 15),
            pid: s3_pid,
            comm: "tt-udp-s3",
            last_round: b_last,
        },
    ];
    for w in &wants {
        check_flow(&records, w, netns, IDLE);
    }
    // Nothing else in the namespace: exactly these eight flows.
    let mut seen: Vec<(String, String)> = records
        .iter()
        .filter(|r| r["netns"].as_u64() == Some(netns))
        .map(|r| {
            (
                r["local"].as_str().unwrap().into(),
                r["remote"].as_str().unwrap().into(),
            )
        })
        .collect();
    seen.sort();
    seen.dedup();
    assert_eq!(seen.len(), wants.len(), "{seen:#?}");
}

#[test]
#[cfg_attr(not(tcptop_root), ignore = "needs root")]
fn udp_v4_flows_exact() {
    common::require_root();
    let _g = common::serial();
    flows("udp4", "127.0.0.1", 40301, true);
}

#[test]
#[cfg_attr(not(tcptop_root), ignore = "needs root")]
fn udp_v6_flows_exact() {
    common::require_root();
    let _g = common::serial();
    flows("udp6", "::1", 40311, false);
}

/// Flows made after every earlier flow ended: user space knows the flow
/// table is empty (as many flows taken out as the programs made) and does
/// not walk it, until a program makes one again. Each round's flows are
/// seen live and end exactly.
#[test]
#[cfg_attr(not(tcptop_root), ignore = "needs root")]
fn udp_flows_after_the_table_emptied() {
    common::require_root();
    let _g = common::serial();
    const IDLE: f64 = 1.0;
    let ns = NetNs::new("udpagain");
    let mut top = Tcptop::start(&["--udp", "--idle-timeout", &IDLE.to_string()]);
    let mut wants = Vec::new();
    for (round, port) in [(1u64, 40351u16), (2, 40352)] {
        let s = sock("127.0.0.1", port);
        let count = (3 * round).to_string();
        let mut srv = ns.peer(&[
            "udp-server",
            "--listen",
            &s,
            "--name",
            "tt-udp-again",
            "--datagrams",
            &count,
            "--reply",
            "7",
        ]);
        srv.expect("listening");
        let mut c = ns.peer(&[
            "udp-client",
            "--to",
            &s,
            "--connected",
            "--count",
            &count,
            "--size",
            "111",
            "--reply",
            "7",
            "--name",
            "tt-udp-cl",
        ]);
        let done = c.expect("done");
        let local = done["local"].as_str().unwrap().to_string();
        let last = done["last_round_ts"].as_f64().unwrap();
        srv.expect("done");
        let (srv_pid, c_pid) = (srv.pid(), c.pid());
        srv.wait_ok();
        c.wait_ok();
        // Both ends end (idle): the table is empty again.
        for (l, r) in [(&local, &s), (&s, &local)] {
            top.wait_for(|v| {
                v["local"] == l.as_str() && v["remote"] == r.as_str() && v["state"] == "CLOSED"
            });
        }
        let n = 3 * round;
        wants.push(Want {
            local: local.clone(),
            remote: s.clone(),
            tx: (111 * n, n),
            rx: (7 * n, n),
            pid: c_pid,
            comm: "tt-udp-cl",
            last_round: last,
        });
        wants.push(Want {
            local: s.clone(),
            remote: local,
            tx: (7 * n, n),
            rx: (111 * n, n),
            pid: srv_pid,
            comm: "tt-udp-again",
            last_round: last,
        });
        // A snapshot or two with nothing in the table.
        top.pump(Duration::from_millis(1200));
    }
    let (records, stderr) = top.stop();
    assert!(
        stderr.contains("dropped 0 events (ring buffer full), 0 connections (table full)"),
        "{stderr}"
    );
    for w in &wants {
        check_flow(&records, w, ns.inode(), IDLE);
    }
}

/// `--tcp` shows no UDP flow, `--udp` no TCP connection.
#[test]
#[cfg_attr(not(tcptop_root), ignore = "needs root")]
fn protocol_filters() {
    common::require_root();
    let _g = common::serial();
    let ns = NetNs::new("udpf");
    let mut tcp_only = Tcptop::start(&["--tcp"]);
    let mut udp_only = Tcptop::start(&["--udp"]);
    let mut srv = ns.peer(&[
        "udp-server",
        "--listen",
        "127.0.0.1:40321",
        "--datagrams",
        "3",
        "--reply",
        "1",
    ]);
    srv.expect("listening");
    let mut cli = ns.peer(&[
        "udp-client",
        "--to",
        "127.0.0.1:40321",
        "--count",
        "3",
        "--size",
        "9",
        "--reply",
        "1",
    ]);
    cli.expect("done");
    let mut tsrv = ns.peer(&["server", "--listen", "127.0.0.1:40322", "--recv", "5"]);
    tsrv.expect("listening");
    let mut tcli = ns.peer(&["client", "--connect", "127.0.0.1:40322", "--send", "5"]);
    tcli.expect("done");
    let netns = ns.inode();
    udp_only.wait_for(|r| r["netns"].as_u64() == Some(netns) && r["rx_bytes"] == 3);
    tcp_only.wait_for(|r| r["netns"].as_u64() == Some(netns) && r["tx_bytes"] == 5);
    let (t, _) = tcp_only.stop();
    let (u, _) = udp_only.stop();
    assert!(t.iter().all(|r| r["proto"] == "tcp"), "{t:#?}");
    assert!(u.iter().all(|r| r["proto"] == "udp"), "{u:#?}");
}

/// A receive-only UDP socket opened before tcptop starts is attributed to
/// its owner (the process making the receive calls), and its flow is exact
/// from the first datagram. With `blocked`, the server is already blocked
/// in its first receive call when tcptop attaches.
fn existing_receive_only_socket(tag: &str, port: u16, blocked: bool) {
    let ns = NetNs::new(tag);
    let addr = format!("127.0.0.1:{port}");
    let mut args = vec![
        "udp-server",
        "--listen",
        &addr,
        "--name",
        "tt-udp-old",
        "--datagrams",
        "4",
    ];
    if !blocked {
        args.push("--wait-stdin");
    }
    let mut srv = ns.peer(&args);
    srv.expect("listening");
    let mut top = Tcptop::start(&["--udp"]);
    if !blocked {
        srv.poke();
    }
    let mut cli = ns.peer(&[
        "udp-client",
        "--to",
        &addr,
        "--count",
        "4",
        "--size",
        "1000",
        "--name",
        "tt-udp-new",
    ]);
    let local = cli.local_at("done");
    let from = format!("127.0.0.1:{}", port_of(&local));
    srv.expect("done");
    let srv_pid = u64::from(srv.pid());
    let r = top.wait_for(|r| {
        r["local"] == addr.as_str() && r["remote"] == from.as_str() && r["rx_packets"] == 4
    });
    assert_eq!(u(&r, "rx_bytes"), 4000);
    assert_eq!(u(&r, "tx_bytes"), 0);
    assert_eq!(u(&r, "pid"), srv_pid, "{r}");
    assert_eq!(r["comm"], "tt-udp-old");
}

#[test]
#[cfg_attr(not(tcptop_root), ignore = "needs root")]
fn existing_receive_only_socket_owner() {
    common::require_root();
    let _g = common::serial();
    existing_receive_only_socket("udpold", 40331, false);
}

/// As for TCP (kernel.rs): a receive call already blocked when tcptop
/// attaches is counted when it returns, by the tracepoint set only
/// (function-exit hooks are not called for a call entered before they
/// were attached).
#[test]
#[cfg_attr(not(tcptop_root), ignore = "needs root")]
fn udp_call_in_flight_at_start_is_counted() {
    common::require_root();
    let _g = common::serial();
    let hooks = common::active_hooks();
    if !hooks.starts_with("tracepoint") {
        eprintln!(
            "skipping udp_call_in_flight_at_start_is_counted: the {hooks} hook set cannot \
             see calls entered before it attached (known limitation)"
        );
        return;
    }
    existing_receive_only_socket("udpinfl", 40332, true);
}

/// A burst into a small receive buffer that is read late: datagrams the
/// kernel drops for lack of room are not counted as received; what the
/// application reads is, exactly.
fn full_receive_buffer(tag: &str, ip: &str, port: u16) {
    let ns = NetNs::new(tag);
    let addr = sock(ip, port);
    let mut top = Tcptop::start(&["--udp"]);
    let mut srv = ns.peer(&[
        "udp-server",
        "--listen",
        &addr,
        "--datagrams",
        "300",
        "--rcvbuf",
        "4096",
        "--read-after-ms",
        "500",
        // Long enough that no datagram reaches the socket after the server
        // stopped reading (it would count as received but never be read):
        // in an emulated VM a sender can stall for hundreds of ms.
        "--drain-ms",
        "1500",
    ]);
    srv.expect("listening");
    let mut cli = ns.peer(&[
        "udp-client",
        "--to",
        &addr,
        "--count",
        "300",
        "--size",
        "1000",
    ]);
    let from = sock(ip, port_of(cli.expect("done")["local"].as_str().unwrap()));
    let done = srv.expect("done");
    let read = &done["peers"][&from];
    let (datagrams, bytes) = (
        read["datagrams"].as_u64().unwrap(),
        read["bytes"].as_u64().unwrap(),
    );
    assert!(
        datagrams < 300,
        "nothing was dropped: the test proves nothing ({done})"
    );
    assert!(datagrams > 0, "{done}");
    let r = top.wait_for(|r| {
        r["local"] == addr.as_str() && r["remote"] == from.as_str() && r["rx_packets"] == datagrams
    });
    assert_eq!(u(&r, "rx_bytes"), bytes, "{r}");
    let own = bound(ip, &from);
    let c = top.wait_for(|r| r["local"] == own.as_str() && r["tx_packets"] == 300);
    assert_eq!(u(&c, "tx_bytes"), 300_000);
    // No later snapshot disagrees.
    top.pump(Duration::from_millis(600));
    let (records, _) = top.stop();
    for r in of_conn(&records, &addr, &from) {
        assert!(u(r, "rx_packets") <= datagrams, "{r}");
    }
}

#[test]
#[cfg_attr(not(tcptop_root), ignore = "needs root")]
fn full_receive_buffer_v4() {
    common::require_root();
    let _g = common::serial();
    full_receive_buffer("udpfull4", "127.0.0.1", 40341);
}

#[test]
#[cfg_attr(not(tcptop_root), ignore = "needs root")]
fn full_receive_buffer_v6() {
    common::require_root();
    let _g = common::serial();
    full_receive_buffer("udpfull6", "::1", 40342);
}

/// A UDP port scan (1,500 ports at 200/s) wider than the flow table: the longest idle flows are
/// ended early (reported CLOSED with their counters, counted as evicted),
/// so every probe is accounted for and nothing is dropped.
#[test]
#[cfg_attr(not(tcptop_root), ignore = "needs root")]
fn port_scan_evicts_idle_flows() {
    common::require_root();
    let _g = common::serial();
    let ns = NetNs::new("udpscan");
    const PORTS: u64 = 1500;
    let mut top = Tcptop::start(&["--udp", "--max-conns", "1024"]);
    // From Linux 6.1 (hash maps allocate from the BPF memory allocator)
    // the flows table is allocated as flows come, not preallocated: its
    // limit and the eviction below must hold all the same. Before, it is
    // preallocated (run-time allocation warns in the kernel's log there).
    const NO_PREALLOC: u32 = 1;
    let flags = common::map_flags("UDP_FLOWS", 1024);
    let want = if common::kernel_version() >= (6, 1) {
        NO_PREALLOC
    } else {
        0
    };
    assert_eq!(
        flags.iter().map(|f| f & NO_PREALLOC).collect::<Vec<_>>(),
        [want],
        "the flows table's flags: {flags:?}"
    );
    let mut cli = ns.peer(&[
        "udp-client",
        "--to",
        "127.0.0.1:41000",
        "--ports",
        &PORTS.to_string(),
        "--count",
        "1",
        "--size",
        "10",
        // 200 new flows/s: well within what eviction at a 0.2 s interval
        // sustains with --max-conns 1024 (20% headroom = 204 flows per
        // interval), even in a slow emulated VM; a faster scan is counted
        // as dropped instead.
        "--gap-us",
        "5000",
    ]);
    let local = cli.local_at("done");
    let from = bound("127.0.0.1", &local);
    cli.wait_ok();
    top.pump(Duration::from_millis(1000));
    let (records, stderr) = top.stop();
    assert!(
        stderr.contains("dropped 0 events (ring buffer full), 0 connections (table full)"),
        "{stderr}"
    );
    let evicted: u64 = stderr
        .split("evicted ")
        .nth(1)
        .and_then(|t| t.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no eviction count in {stderr}"));
    assert!(evicted > 0, "{stderr}");
    // Each probed port: one flow, exactly one datagram of 10 bytes.
    let mut last: std::collections::BTreeMap<String, &Value> = Default::default();
    for r in records.iter().filter(|r| r["local"] == from.as_str()) {
        last.insert(r["remote"].as_str().unwrap().to_string(), r);
    }
    assert_eq!(last.len() as u64, PORTS, "flows seen");
    for (remote, r) in &last {
        assert_eq!(
            (u(r, "tx_bytes"), u(r, "tx_packets")),
            (10, 1),
            "{remote}: {r}"
        );
    }
    let ended_early = records
        .iter()
        .filter(|r| r["local"] == from.as_str() && r["state"] == "CLOSED")
        .count() as u64;
    assert!(
        ended_early >= evicted,
        "{ended_early} CLOSED vs {evicted} evicted"
    );
}

/// `--tcp` does not attach the UDP programs at all; the default attaches
/// those of its hook set: four cgroup hooks (tracepoint set), four fexit
/// programs (fentry), four kprobe pairs (kprobe).
#[test]
#[cfg_attr(not(tcptop_root), ignore = "needs root")]
fn tcp_only_attaches_no_udp_programs() {
    common::require_root();
    let _g = common::serial();
    let hooks = common::active_hooks();
    common::wait_no_programs();
    let udp_programs = || {
        common::loaded_tcptop_programs()
            .into_iter()
            .filter(|n| {
                ["tcptop_udp_", "fexit_udp", "kprobe_udp", "kretprobe_udp"]
                    .iter()
                    .any(|p| n.starts_with(p))
            })
            .collect::<Vec<_>>()
    };
    let top = Tcptop::start(&["--tcp"]);
    assert_eq!(
        udp_programs(),
        Vec::<String>::new(),
        "--tcp loaded UDP programs"
    );
    drop(top.stop());
    common::wait_no_programs();
    let top = Tcptop::start(&[]);
    let loaded = udp_programs();
    let want = if hooks.starts_with("kprobe") { 8 } else { 4 };
    assert_eq!(loaded.len(), want, "hooks {hooks}: {loaded:?}");
    drop(top.stop());
}

/// Where the kernel refuses the cgroup programs (or tcptop lacks
/// CAP_NET_ADMIN), the tracepoint set cannot tell the peer of an
/// unconnected socket's datagram: tcptop says so and goes on; a connected
/// socket's flow stays exact (its peer is the socket's own).
#[test]
#[cfg_attr(not(tcptop_root), ignore = "needs root")]
fn connected_flows_exact_without_cgroup_programs() {
    common::require_root();
    let _g = common::serial();
    let hooks = common::active_hooks();
    if !hooks.starts_with("tracepoint") {
        // The fentry and kprobe sets read the peer from the call itself.
        eprintln!("connected_flows_exact_without_cgroup_programs: {hooks} uses no cgroup program");
        return;
    }
    let ns = NetNs::new("nocgroup");
    let mut top = Tcptop::start_with_env(
        common::INTERVAL,
        &["--udp", "--port", "40391"],
        &[("TCPTOP_TEST_REFUSE", "cgroup")],
    );
    let said = top.warnings.join("\n");
    assert!(
        said.contains("the peers of unconnected UDP sockets are not shown")
            && said.contains("refused by the kernel (EPERM"),
        "{said}"
    );
    let s = "127.0.0.1:40391";
    let mut srv = ns.peer(&[
        "udp-server",
        "--listen",
        s,
        "--datagrams",
        "7",
        "--reply",
        "5",
    ]);
    srv.expect("listening");
    let mut cli = ns.peer(&[
        "udp-client",
        "--to",
        s,
        "--connected",
        "--count",
        "7",
        "--size",
        "123",
        "--reply",
        "5",
    ]);
    let local = cli.local_at("done");
    cli.wait_ok();
    srv.expect("done");
    srv.wait_ok();
    let f = top.wait_for(|r| {
        r["local"] == local.as_str()
            && r["remote"] == s
            && r["tx_bytes"].as_u64() == Some(7 * 123)
            && r["rx_bytes"].as_u64() == Some(7 * 5)
    });
    assert_eq!((u(&f, "tx_packets"), u(&f, "rx_packets")), (7, 7), "{f}");
    drop(top.stop());
}
