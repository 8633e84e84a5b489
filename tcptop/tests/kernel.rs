//! Root integration tests: the real binary, real kernel hooks, real loopback
//! TCP traffic of known sizes inside a fresh network namespace.
#![expect(
    clippy::unwrap_used,
    reason = "test and benchmark code: a failed unwrap fails the run"
)]

mod common;

use std::time::Duration;

use common::{NetNs, Peer, Tcptop, closed, of_conn, u};
use serde_json::Value;

const CLI_BYTES: u64 = 1_234_567;
const SRV_BYTES: u64 = 765_432;

/// One client/server exchange with exact bytes both ways; checks bytes,
/// owner, state sequence, packets and RTT against the kernel's TCP_INFO.
fn exchange(tag: &str, ip: &str, port: u16) {
    let ns = NetNs::new(tag);
    let mut top = Tcptop::start(&["--port", &port.to_string()]);
    let addr = if ip.contains(':') {
        format!("[{ip}]:{port}")
    } else {
        format!("{ip}:{port}")
    };
    let cli_n = CLI_BYTES.to_string();
    let srv_n = SRV_BYTES.to_string();
    let mut srv = ns.peer(&[
        "server",
        "--listen",
        &addr,
        "--name",
        "tt-server",
        "--recv",
        &cli_n,
        "--send",
        &srv_n,
    ]);
    srv.expect("listening");
    let mut cli = ns.peer(&[
        "client",
        "--connect",
        &addr,
        "--name",
        "tt-client",
        "--send",
        &cli_n,
        "--recv",
        &srv_n,
        "--wait-stdin",
    ]);
    let connected = cli.expect("connected");
    let cli_local = connected["local"].as_str().unwrap().to_string();
    cli.poke();
    let cli_done = cli.expect("done");
    srv.expect("done");

    // Idle now: a snapshot begun after the exchange holds the RTT the
    // kernel has. The first one that shows every byte may not be it: its
    // state was read (iterator or diagnostics) before its byte counters,
    // and the last calls can end between the two (seen on 6.12 in the
    // VM: 1078 µs read mid-transfer against 511 µs at the end). The
    // snapshot after it began once every byte was counted.
    let netns = ns.inode();
    let full = |r: &Value| {
        r["local"] == cli_local.as_str()
            && r["tx_bytes"].as_u64() == Some(CLI_BYTES)
            && r["rx_bytes"].as_u64() == Some(SRV_BYTES)
    };
    let first_ts = top.wait_for(full)["ts"].as_f64().unwrap();
    let idle = top.wait_for(|r| full(r) && r["ts"].as_f64().unwrap() > first_ts);
    assert_eq!(idle["state"], "ESTABLISHED");
    assert_eq!(u(&idle, "netns"), netns);
    let kernel_rtt = u(&cli_done, "rtt_us") as f64;
    let ours = u(&idle, "rtt_us") as f64;
    assert!(
        (ours - kernel_rtt).abs() <= 0.2 * kernel_rtt.max(1.0),
        "rtt_us {ours} vs TCP_INFO {kernel_rtt}"
    );

    let (cli_pid, srv_pid) = (u64::from(cli.pid()), u64::from(srv.pid()));
    cli.poke();
    let cli_end = cli.expect("closing");
    cli.wait_ok();
    let srv_end = srv.expect("closing");
    srv.expect("finished");
    srv.wait_ok();
    top.pump(Duration::from_millis(800));
    let (records, stderr) = top.stop();
    assert!(
        stderr.contains("dropped 0 events (ring buffer full), 0 connections (table full)"),
        "{stderr}"
    );

    // The hook set in use is in every record (and is the forced one, if any).
    let hooks = records[0]["hooks"].as_str().unwrap().to_string();
    assert!(records.iter().all(|r| r["hooks"] == hooks.as_str()));
    if let Some(set) = common::forced_hooks() {
        assert!(hooks.starts_with(&set), "{hooks} vs forced {set}");
    }
    // BTF-typed tracepoints load on every kernel of the test matrix: a
    // silent fall back to the raw ones would hide a verifier rejection.
    // (The kprobe set and TCPTOP_RAW_TRACEPOINTS=1 take raw ones.)
    let raw = std::env::var_os("TCPTOP_RAW_TRACEPOINTS").is_some_and(|v| v != "0");
    assert_eq!(
        hooks.contains("+btf"),
        !raw && !hooks.starts_with("kprobe") && !common::refused("tp_btf"),
        "{hooks}"
    );
    if common::refused("iter") {
        assert!(hooks.ends_with("+diag"), "{hooks}");
    }

    // Listening sockets are not connections.
    assert!(
        !records
            .iter()
            .any(|r| r["state"] == "LISTEN"
                || r["remote"].as_str().is_some_and(|a| a.ends_with(":0"))),
        "listener reported"
    );

    // Client side.
    let c = of_conn(&records, &cli_local, &addr);
    let fin = closed(&c);
    assert_eq!(u(fin, "tx_bytes"), CLI_BYTES);
    assert_eq!(u(fin, "rx_bytes"), SRV_BYTES);
    assert_eq!(u(fin, "pid"), cli_pid);
    assert_eq!(fin["comm"], "tt-client");
    assert_eq!(fin["proto"], "tcp");
    // States: ESTABLISHED before CLOSED, nothing after CLOSED.
    let states: Vec<&str> = c.iter().map(|r| r["state"].as_str().unwrap()).collect();
    let est = states.iter().position(|s| *s == "ESTABLISHED").unwrap();
    assert_eq!(states.last(), Some(&"CLOSED"), "{states:?}");
    assert!(est < states.len() - 1);
    // Packets: what TCP_INFO counted just before close, plus at most the
    // closing handshake (FIN, ACK).
    let (tx_p, rx_p) = (u(fin, "tx_packets"), u(fin, "rx_packets"));
    let (k_out, k_in) = (u(&cli_end, "segs_out"), u(&cli_end, "segs_in"));
    assert!(
        tx_p >= k_out && tx_p <= k_out + 4,
        "tx_packets {tx_p} vs segs_out {k_out}"
    );
    assert!(
        rx_p >= k_in && rx_p <= k_in + 4,
        "rx_packets {rx_p} vs segs_in {k_in}"
    );
    // Retransmits: the kernel's own count (TCP_INFO) just before close,
    // plus at most a retransmitted FIN or two. Loopback rarely retransmits,
    // but an emulated CPU can stall past the retransmit timer (the 6.12
    // VM did once).
    let (r, k_r) = (u(fin, "retrans"), u(&cli_end, "total_retrans"));
    assert!(
        r >= k_r && r <= k_r + 2,
        "retrans {r} vs total_retrans {k_r}"
    );

    // Server side (accepted socket): owned by the server process.
    let s = of_conn(&records, &addr, &cli_local);
    let fin = closed(&s);
    assert_eq!(u(fin, "tx_bytes"), SRV_BYTES);
    assert_eq!(u(fin, "rx_bytes"), CLI_BYTES);
    assert_eq!(u(fin, "pid"), srv_pid);
    assert_eq!(fin["comm"], "tt-server");
    let (s_out, s_in) = (u(&srv_end, "segs_out"), u(&srv_end, "segs_in"));
    let (tx_p, rx_p) = (u(fin, "tx_packets"), u(fin, "rx_packets"));
    assert!(
        tx_p >= s_out && tx_p <= s_out + 4,
        "server tx_packets {tx_p} vs {s_out}"
    );
    assert!(
        rx_p >= s_in && rx_p <= s_in + 4,
        "server rx_packets {rx_p} vs {s_in}"
    );
    assert!(s.iter().any(|r| r["state"] == "ESTABLISHED"));
}

#[test]
#[cfg_attr(not(tcptop_root), ignore = "needs root")]
fn ipv4_exchange_exact() {
    common::require_root();
    let _g = common::serial();
    exchange("v4", "127.0.0.1", 40101);
}

#[test]
#[cfg_attr(not(tcptop_root), ignore = "needs root")]
fn ipv6_exchange_exact() {
    common::require_root();
    let _g = common::serial();
    exchange("v6", "::1", 40102);
}

/// A connection opened before tcptop starts is shown from the first
/// snapshot (seeded from /proc with its owner), and its bytes since then are
/// exact on both ends. With `server_blocked`, the server is already blocked in
/// a receive call on the socket when tcptop attaches.
fn existing_connection(tag: &str, port: u16, server_blocked: bool, env: &[(&str, &str)]) {
    let ns = NetNs::new(tag);
    let addr = format!("127.0.0.1:{port}");
    let mut srv_args = vec![
        "server",
        "--listen",
        &addr,
        "--name",
        "tt-old-srv",
        "--recv",
        "5000",
        "--send",
        "7000",
    ];
    if !server_blocked {
        srv_args.push("--wait-stdin");
    }
    let mut srv = ns.peer(&srv_args);
    srv.expect("listening");
    let mut cli = ns.peer(&[
        "client",
        "--connect",
        &addr,
        "--name",
        "tt-old-cli",
        "--send",
        "5000",
        "--recv",
        "7000",
        "--wait-stdin",
    ]);
    let local = cli.local_at("connected");
    if !server_blocked {
        srv.expect("accepted");
    }

    let mut top = Tcptop::start_with_env(common::INTERVAL, &["--port", &port.to_string()], env);
    let refused_owners = env
        .iter()
        .any(|(k, v)| *k == "TCPTOP_TEST_REFUSE" && v.split(',').any(|x| x == "owners"));
    if refused_owners {
        let said = top.warnings.join("\n");
        assert!(
            said.contains("the process files' iterator: refused by the kernel (EPERM"),
            "{said}"
        );
    }
    if env.iter().any(|(k, _)| *k == "TCPTOP_TEST_SAY") {
        check_adoption_said(&top, env);
    }
    let seeded = top.wait_for(|r| r["local"] == local.as_str());
    assert_eq!(seeded["state"], "ESTABLISHED");
    assert_eq!(u(&seeded, "pid"), u64::from(cli.pid()));
    assert_eq!(seeded["comm"], "tt-old-cli");
    assert_eq!(u(&seeded, "tx_bytes"), 0);
    let hooks = seeded["hooks"].as_str().unwrap().to_string();

    finish_held(srv, cli, !server_blocked);
    top.pump(Duration::from_millis(800));
    let (records, _) = top.stop();
    let fin = closed(&of_conn(&records, &local, &addr));
    assert_eq!((u(fin, "tx_bytes"), u(fin, "rx_bytes")), (5000, 7000));
    assert_eq!(fin["comm"], "tt-old-cli");
    let fin = closed(&of_conn(&records, &addr, &local));
    assert_eq!(
        (u(fin, "tx_bytes"), u(fin, "rx_bytes")),
        (7000, 5000),
        "hooks {hooks}"
    );
    assert_eq!(fin["comm"], "tt-old-srv");
}

#[test]
#[cfg_attr(not(tcptop_root), ignore = "needs root")]
fn existing_connection_is_seen() {
    common::require_root();
    let _g = common::serial();
    existing_connection("existing", 40103, false, &[]);
}

/// What `TCPTOP_TEST_SAY=adoption` says of the start-up: the owners' walk
/// adopted the connections files hold wherever the suite and `env` leave
/// it (the process files' iterator not refused), with typed pointers on
/// Linux 5.11+ (`bpf_sock_from_file`) unless that program is refused, and
/// then the test's own namespace, whose every TCP socket a process holds,
/// is one the TCP iterator did not walk; otherwise the TCP iterator
/// walked them all.
/// Runs a held exchange to its end: the server (with `poke_server`; a
/// blocked one moves on its own) and the client are told to move their
/// bytes, the client once more, after it said "done", to close; both must
/// exit cleanly.
fn finish_held(mut srv: Peer, mut cli: Peer, poke_server: bool) {
    if poke_server {
        srv.poke();
    }
    cli.poke();
    cli.expect("done");
    cli.poke();
    cli.wait_ok();
    srv.wait_ok();
}

fn check_adoption_said(top: &Tcptop, env: &[(&str, &str)]) {
    let refusing = |kind: &str| {
        common::refused(kind)
            || env
                .iter()
                .any(|(k, v)| *k == "TCPTOP_TEST_REFUSE" && v.split(',').any(|x| x == kind))
    };
    let by_owners = !(refusing("iter") || refusing("owners") || refusing("owners-adopt"));
    let said = adoption_said(top);
    assert!(said.contains(&format!("adopted: {by_owners};")), "{said}");
    if by_owners {
        let typed = !refusing("owners-typed") && common::kernel_version() >= (5, 11);
        // The lazy walk where the connection table is allocated as records
        // come (the BPF memory allocator: Linux 6.1).
        let lazy = typed && !refusing("owners-lazy") && common::kernel_version() >= (6, 1);
        let program = if lazy {
            "tcptop_owners_lazy"
        } else if typed {
            "tcptop_owners_typed"
        } else {
            "tcptop_owners_adopt"
        };
        assert!(
            said.contains(&format!("owners' walk ({program})")),
            "{said}"
        );
    }
    let left_out = left_out_of_walks(top);
    if by_owners {
        assert!(left_out >= 1, "{said}");
    } else {
        assert_eq!(left_out, 0, "{said}");
    }
}

/// The line `TCPTOP_TEST_SAY=adoption` makes tcptop print at start-up.
fn adoption_said(top: &Tcptop) -> &str {
    top.warnings
        .iter()
        .find(|w| w.contains("test: adoption:"))
        .unwrap_or_else(|| panic!("no adoption line in {:?}", top.warnings))
}

/// Namespaces left out of the TCP iterator's walks, as that line says.
fn left_out_of_walks(top: &Tcptop) -> usize {
    let said = adoption_said(top);
    said.rsplit("walks: ")
        .next()
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("{said}"))
}

/// The owners' walk adopts the connections processes hold, and the TCP
/// iterator leaves out the namespaces whose every TCP socket in use was
/// held (the test's own: a listener and both ends, all held).
#[test]
#[cfg_attr(not(tcptop_root), ignore = "needs root")]
fn existing_connection_adopted_by_the_owners_walk() {
    common::require_root();
    let _g = common::serial();
    existing_connection(
        "existing-held",
        40114,
        false,
        &[("TCPTOP_TEST_SAY", "adoption")],
    );
}

/// The same with the eager typed walk (Linux 5.11-6.0's, which inserts
/// a record for every connection; forced here on newer kernels, whose
/// walk leaves idle ones without one).
#[test]
#[cfg_attr(not(tcptop_root), ignore = "needs root")]
fn existing_connection_adopted_by_the_owners_walk_eagerly() {
    existing_connection_refusing("existing-eager", 40127, "owners-lazy");
}

/// The same with the adopting walk of probe reads only (Linux 5.10's,
/// which lacks `bpf_sock_from_file`; forced here on newer kernels).
#[test]
#[cfg_attr(not(tcptop_root), ignore = "needs root")]
fn existing_connection_adopted_by_the_owners_walk_untyped() {
    existing_connection_refusing("existing-untyped", 40117, "owners-typed");
}

/// The same where the owners' walk may only name (its adopting programs
/// refused, as a kernel's verifier might): the TCP iterator walks every
/// namespace and adopts, the walk's (socket, inode) pairs name them.
#[test]
#[cfg_attr(not(tcptop_root), ignore = "needs root")]
fn existing_connection_adopted_by_the_tcp_iterator() {
    existing_connection_refusing("existing-walked", 40115, "owners-adopt");
}

/// tcptop in a network namespace of the test's, in a pid namespace of its
/// own (a container with its own pids): the sockets there are held by
/// processes it cannot see. A listener only: not a connection to adopt,
/// so the namespace's TCP walk is left out (it visits every TCP socket of
/// the machine); with the listener dump refused, walked. A connection
/// besides: walked, and the connection adopted, its bytes exact.
#[test]
#[cfg_attr(not(tcptop_root), ignore = "needs root")]
fn unseen_holders_walked_only_for_connections() {
    common::require_root();
    let _g = common::serial();
    let port = 40126;
    let addr = format!("127.0.0.1:{port}");
    let ns = NetNs::new("unseen");
    let start = |env: &[(&str, &str)]| {
        let mut cmd = std::process::Command::new("ip");
        cmd.args([
            "netns",
            "exec",
            &ns.name,
            "unshare",
            "--pid",
            "--mount-proc",
        ])
        .arg("--kill-child")
        .arg(common::tcptop())
        .args([
            "--batch",
            "--format",
            "jsonl",
            "--interval",
            common::INTERVAL,
        ])
        .args(["--port", &port.to_string()])
        .env("TCPTOP_TEST_SAY", "adoption")
        .envs(env.iter().copied());
        Tcptop::launch(cmd)
    };
    // Namespaces left out of the TCP iterator's walks: ours, and any
    // other named one the host has that needs no walk.
    let left_out = left_out_of_walks;
    let mut srv = ns.peer(&[
        "server",
        "--listen",
        &addr,
        "--recv",
        "4000",
        "--send",
        "3000",
        "--wait-stdin",
    ]);
    srv.expect("listening");
    let by_owners =
        !(common::refused("iter") || common::refused("owners") || common::refused("owners-adopt"));
    let top = start(&[]);
    let listener_only = left_out(&top);
    drop(top);
    let refuse = common::refusing("listeners");
    let top = start(&[("TCPTOP_TEST_REFUSE", refuse.as_str())]);
    let walked = left_out(&top);
    drop(top);
    // Ours walked only where the listener is not known to be one, or
    // where the owners' walk counted nothing (refused).
    assert_eq!(
        listener_only,
        walked + usize::from(by_owners),
        "a listener only: ours left out"
    );
    let mut cli = ns.peer(&[
        "client",
        "--connect",
        &addr,
        "--send",
        "4000",
        "--recv",
        "3000",
        "--wait-stdin",
    ]);
    let local = cli.local_at("connected");
    srv.expect("accepted");
    let mut top = start(&[]);
    assert_eq!(left_out(&top), walked, "a connection unseen: ours walked");
    finish_held(srv, cli, true);
    let end = top.wait_for(|r| r["local"] == local.as_str() && r["state"] == "CLOSED");
    assert_eq!(
        (u(&end, "tx_bytes"), u(&end, "rx_bytes")),
        (4000, 3000),
        "{end}"
    );
}

/// A connection adopted with bytes already moved and still queued: before
/// tcptop starts, the client sent 3,000 bytes the server has not read yet
/// (they wait in its receive queue) and the server sent 2,000 the client
/// has not read. Every counter the adoption baselines from is then away
/// from its start (bytes acked and received, the sequences written, read
/// and expected), so a counter read at the wrong place, or in the wrong
/// order, shows in the totals: from start-up on, the client writes 5,000
/// more and reads 7,000 (the 2,000 queued among them), the server reads
/// 8,000 (the 3,000 queued among them) and writes 5,000 more. Both read
/// with splice(), which no call hook counts: what they read is told by
/// the socket's counters against the adoption's baseline alone.
fn adopted_with_bytes_queued(tag: &str, port: u16, refuse: &str) {
    common::require_root();
    let _g = common::serial();
    let ns = NetNs::new(tag);
    let addr = format!("127.0.0.1:{port}");
    let mut srv = ns.peer(&[
        "server",
        "--listen",
        &addr,
        "--name",
        "tt-q-srv",
        "--recv",
        "8000",
        "--send",
        "7000",
        "--send-first",
        "2000",
        "--recv-with",
        "splice",
        "--wait-stdin",
    ]);
    srv.expect("listening");
    let mut cli = ns.peer(&[
        "client",
        "--connect",
        &addr,
        "--name",
        "tt-q-cli",
        "--send",
        "8000",
        "--send-first",
        "3000",
        "--recv",
        "7000",
        "--recv-with",
        "splice",
        "--wait-stdin",
    ]);
    let local = cli.local_at("connected");
    srv.expect("accepted");
    let refuse = common::refusing(refuse);
    let mut top = Tcptop::start_with_env(
        common::INTERVAL,
        &["--port", &port.to_string()],
        &[("TCPTOP_TEST_REFUSE", &refuse)],
    );
    let seeded = top.wait_for(|r| r["local"] == local.as_str());
    assert_eq!((u(&seeded, "tx_bytes"), u(&seeded, "rx_bytes")), (0, 0));
    finish_held(srv, cli, true);
    top.pump(Duration::from_millis(800));
    let (records, _) = top.stop();
    let fin = closed(&of_conn(&records, &local, &addr));
    assert_eq!(
        (u(fin, "tx_bytes"), u(fin, "rx_bytes")),
        (5000, 7000),
        "{fin}"
    );
    let fin = closed(&of_conn(&records, &addr, &local));
    assert_eq!(
        (u(fin, "tx_bytes"), u(fin, "rx_bytes")),
        (5000, 8000),
        "{fin}"
    );
}

/// Adopted by the owners' walk with the TCP window where this kernel's
/// layout has one (Linux 6.8+ groups the counters; 6.12 and the host).
#[test]
#[cfg_attr(not(tcptop_root), ignore = "needs root")]
fn adopted_with_bytes_queued_is_exact() {
    adopted_with_bytes_queued("queued", 40118, "");
}

/// The same with each counter read on its own (as on 5.10 and 6.1, whose
/// layouts have no window; forced here).
#[test]
#[cfg_attr(not(tcptop_root), ignore = "needs root")]
fn adopted_with_bytes_queued_without_the_tcp_window() {
    adopted_with_bytes_queued("queued-nowin", 40119, "window");
}

/// `existing_connection` with `kind` of program refused (on top of what
/// the suite refuses), saying how it adopted.
fn existing_connection_refusing(tag: &str, port: u16, kind: &str) {
    common::require_root();
    let _g = common::serial();
    let refuse = common::refusing(kind);
    existing_connection(
        tag,
        port,
        false,
        &[
            ("TCPTOP_TEST_REFUSE", &refuse),
            ("TCPTOP_TEST_SAY", "adoption"),
        ],
    );
}

/// A connection no process holds when tcptop starts (its server has not
/// accepted it yet: it waits in the listener's queue) is adopted all the
/// same: the owners' walk cannot see it, the kernel counts one more TCP
/// socket in use in that namespace than the walk found held, and the TCP
/// iterator walks it. Shown from the first snapshot; exact, and named,
/// once accepted.
#[test]
#[cfg_attr(not(tcptop_root), ignore = "needs root")]
fn unaccepted_connection_is_adopted() {
    common::require_root();
    let _g = common::serial();
    let ns = NetNs::new("unaccepted");
    let addr = "127.0.0.1:40116";
    let mut srv = ns.peer(&[
        "server",
        "--listen",
        addr,
        "--name",
        "tt-q-srv",
        "--recv",
        "5000",
        "--send",
        "7000",
        "--wait-before-accept",
    ]);
    srv.expect("listening");
    let mut cli = ns.peer(&[
        "client",
        "--connect",
        addr,
        "--name",
        "tt-q-cli",
        "--send",
        "5000",
        "--recv",
        "7000",
        "--wait-stdin",
    ]);
    let local = cli.local_at("connected");
    let mut top = Tcptop::start(&["--port", "40116"]);
    // The queued end, before any process has it.
    let queued = top.wait_for(|r| r["local"] == addr && r["remote"] == local.as_str());
    assert_eq!(queued["state"], "ESTABLISHED");
    assert_eq!(u(&queued, "tx_bytes"), 0);
    let held = top.wait_for(|r| r["local"] == local.as_str());
    assert_eq!(held["comm"], "tt-q-cli");
    finish_held(srv, cli, true);
    top.pump(Duration::from_millis(800));
    let (records, _) = top.stop();
    let fin = closed(&of_conn(&records, addr, &local));
    assert_eq!((u(fin, "tx_bytes"), u(fin, "rx_bytes")), (7000, 5000));
    assert_eq!(fin["comm"], "tt-q-srv");
    let fin = closed(&of_conn(&records, &local, addr));
    assert_eq!((u(fin, "tx_bytes"), u(fin, "rx_bytes")), (5000, 7000));
}

/// The same where the kernel refuses the iterator over processes' files
/// (forced here): owners come from /proc's descriptor links, and the
/// start-up says so.
#[test]
#[cfg_attr(not(tcptop_root), ignore = "needs root")]
fn existing_connection_named_from_proc() {
    common::require_root();
    let _g = common::serial();
    let refuse = common::refusing("owners");
    existing_connection(
        "existing-proc",
        40113,
        false,
        &[("TCPTOP_TEST_REFUSE", &refuse)],
    );
}

/// A connection's state and socket counters move without any call on it:
/// the client below never sends or receives, yet tcptop shows the packets
/// of its handshake exactly (as the kernel's TCP_INFO counts them), its
/// handshake RTT, then CLOSE_WAIT and the peer's FIN when the server goes.
/// (Read from the socket at each snapshot by the connection map's iterator:
/// no hook on the packet path traces them.)
#[test]
#[cfg_attr(not(tcptop_root), ignore = "needs root")]
fn state_and_counters_move_without_calls() {
    common::require_root();
    let _g = common::serial();
    let ns = NetNs::new("nocalls");
    let addr = "127.0.0.1:40161";
    let mut top = Tcptop::start(&["--port", "40161"]);
    let mut srv = ns.peer(&["server", "--listen", addr, "--name", "tt-nc-srv"]);
    srv.expect("listening");
    let mut cli = ns.peer(&[
        "client",
        "--connect",
        addr,
        "--name",
        "tt-nc-cli",
        "--wait-stdin",
    ]);
    let hello = cli.expect("connected");
    let local = hello["local"].as_str().unwrap().to_string();
    let (out, inn) = (u(&hello, "segs_out"), u(&hello, "segs_in"));
    let up = top.wait_for(|r| {
        r["local"] == local.as_str()
            && r["state"] == "ESTABLISHED"
            && r["tx_packets"].as_u64() == Some(out)
            && r["rx_packets"].as_u64() == Some(inn)
    });
    assert!(u(&up, "rtt_us") > 0, "{up}");
    assert_eq!(u(&up, "pid"), u64::from(cli.pid()));
    assert_eq!((u(&up, "tx_bytes"), u(&up, "rx_bytes")), (0, 0));

    // The server ends: its FIN arrives, the client makes no call.
    drop(srv);
    let cw = top.wait_for(|r| r["local"] == local.as_str() && r["state"] == "CLOSE_WAIT");
    assert_eq!(u(&cw, "rx_packets"), inn + 1, "the FIN: {cw}");

    cli.poke();
    cli.expect("done");
    cli.poke();
    cli.wait_ok();
    top.pump(Duration::from_millis(600));
    let (records, _) = top.stop();
    let fin = closed(&of_conn(&records, &local, addr));
    assert_eq!(fin["comm"], "tt-nc-cli");
    assert_eq!((u(fin, "tx_bytes"), u(fin, "rx_bytes")), (0, 0));
}

/// An idle connection made before tcptop starts, in a fresh namespace
/// `tag`: a server on 127.0.0.1:`port` named `<name>-srv` that accepted it
/// and a client named `<name>-cli`, both waiting on stdin. Returns the
/// namespace, the server, the client and the client's local address.
fn idle_pair(tag: &str, port: u16, name: &str) -> (NetNs, Peer, Peer, String) {
    let ns = NetNs::new(tag);
    let addr = format!("127.0.0.1:{port}");
    let (srv_name, cli_name) = (format!("{name}-srv"), format!("{name}-cli"));
    let mut srv = ns.peer(&[
        "server",
        "--listen",
        &addr,
        "--name",
        &srv_name,
        "--wait-stdin",
    ]);
    srv.expect("listening");
    let mut cli = ns.peer(&[
        "client",
        "--connect",
        &addr,
        "--name",
        &cli_name,
        "--wait-stdin",
    ]);
    let local = cli.local_at("connected");
    srv.expect("accepted");
    (ns, srv, cli, local)
}

/// A connection open before tcptop started, on which neither end makes a
/// data call afterwards, is still reported closed when it ends, on both
/// sides, with the owners /proc showed at start-up. (The client is killed:
/// its socket is torn down with no call; the server reads only the end of
/// the stream.)
#[test]
#[cfg_attr(not(tcptop_root), ignore = "needs root")]
fn idle_existing_connection_ends() {
    common::require_root();
    let _g = common::serial();
    let (_ns, mut srv, cli, local) = idle_pair("idleold", 40162, "tt-io");
    let addr = "127.0.0.1:40162";

    let mut top = Tcptop::start(&["--port", "40162"]);
    top.wait_for(|r| r["local"] == local.as_str() && r["comm"] == "tt-io-cli");
    top.wait_for(|r| r["remote"] == local.as_str() && r["comm"] == "tt-io-srv");
    drop(cli);
    srv.poke();
    srv.wait_ok();
    top.pump(Duration::from_millis(800));
    let (records, _) = top.stop();
    for (l, r, comm) in [
        (local.as_str(), addr, "tt-io-cli"),
        (addr, local.as_str(), "tt-io-srv"),
    ] {
        let fin = closed(&of_conn(&records, l, r));
        assert_eq!(fin["comm"], comm, "{fin}");
        assert_eq!((u(fin, "tx_bytes"), u(fin, "rx_bytes")), (0, 0), "{fin}");
    }
}

/// A connection open before tcptop started is live from the first
/// snapshot, not only from its first call: its RTT shows at once, and a
/// state change with no call on its end (the peer's FIN: CLOSE_WAIT) shows
/// with the packet that made it, under the owner /proc showed at start-up.
#[test]
#[cfg_attr(not(tcptop_root), ignore = "needs root")]
fn idle_existing_connection_is_live() {
    common::require_root();
    let _g = common::serial();
    let (_ns, mut srv, cli, local) = idle_pair("oldlive", 40163, "tt-ol");
    let addr = "127.0.0.1:40163";

    let mut top = Tcptop::start(&["--port", "40163"]);
    for (l, r, comm) in [
        (local.as_str(), addr, "tt-ol-cli"),
        (addr, local.as_str(), "tt-ol-srv"),
    ] {
        let up = top.wait_for(|x| x["local"] == l && x["remote"] == r && !x["rtt_us"].is_null());
        assert!(u(&up, "rtt_us") > 0, "{up}");
        assert_eq!(up["state"], "ESTABLISHED", "{up}");
        assert_eq!(up["comm"], comm, "{up}");
        assert_eq!((u(&up, "tx_packets"), u(&up, "rx_packets")), (0, 0), "{up}");
    }

    // The client is killed: its FIN reaches the server, which makes no call.
    drop(cli);
    let cw = top.wait_for(|x| x["local"] == addr && x["state"] == "CLOSE_WAIT");
    assert_eq!(u(&cw, "rx_packets"), 1, "the FIN: {cw}");
    assert_eq!(cw["comm"], "tt-ol-srv", "{cw}");

    srv.poke();
    srv.wait_ok();
    top.pump(Duration::from_millis(800));
    let (records, _) = top.stop();
    let fin = closed(&of_conn(&records, addr, &local));
    assert_eq!(fin["comm"], "tt-ol-srv", "{fin}");
    assert_eq!((u(fin, "tx_bytes"), u(fin, "rx_bytes")), (0, 0), "{fin}");
    // The client's FIN, then the ACK of the server's FIN from the client's
    // orphaned socket.
    assert_eq!(u(fin, "rx_packets"), 2, "{fin}");
}

/// A connection open before tcptop started and idle at start (on 6.1+ the
/// lazy walk leaves it without a record), whose server then reads with
/// splice() alone: no call hook sees that read, yet its row shows the
/// bytes while the connection is still open (the read tracepoint makes
/// its record), named after its owner, and exact at its end.
#[test]
#[cfg_attr(not(tcptop_root), ignore = "needs root")]
fn idle_existing_connection_read_by_splice_is_live() {
    common::require_root();
    let _g = common::serial();
    const BYTES: u64 = 54_321;
    let ns = NetNs::new("lazyread");
    let addr = "127.0.0.1:40166";
    let n = BYTES.to_string();
    let mut srv = ns.peer(&[
        "server",
        "--listen",
        addr,
        "--name",
        "tt-lr-srv",
        "--recv",
        &n,
        "--recv-with",
        "splice",
        "--wait-stdin",
    ]);
    srv.expect("listening");
    let mut cli = ns.peer(&[
        "client",
        "--connect",
        addr,
        "--name",
        "tt-lr-cli",
        "--send",
        &n,
        "--wait-stdin",
    ]);
    let local = cli.local_at("connected");
    srv.expect("accepted");

    let mut top = Tcptop::start(&["--port", "40166"]);
    let up = top.wait_for(|r| r["local"] == addr && r["remote"] == local.as_str());
    assert_eq!((u(&up, "tx_bytes"), u(&up, "rx_bytes")), (0, 0), "{up}");
    // Past the first snapshots.
    top.pump(Duration::from_millis(800));
    cli.poke();
    cli.expect("done");
    srv.poke();
    srv.expect("done");
    // The server now waits in read() for the end of the stream: no call
    // returns until the client closes. Where the read tracepoint is
    // refused (TCPTOP_TEST_REFUSE=touch) the bytes show at the end only.
    if !common::refused("touch") {
        let read = top.wait_for(|r| {
            r["local"] == addr
                && r["remote"] == local.as_str()
                && r["state"] == "ESTABLISHED"
                && r["rx_bytes"].as_u64() == Some(BYTES)
        });
        assert_eq!(read["comm"], "tt-lr-srv", "{read}");
        assert_eq!(u(&read, "tx_bytes"), 0, "{read}");
    }
    cli.poke();
    cli.wait_ok();
    srv.wait_ok();
    top.pump(Duration::from_millis(800));
    let (records, _) = top.stop();
    let fin = closed(&of_conn(&records, addr, &local));
    assert_eq!(fin["comm"], "tt-lr-srv", "{fin}");
    assert_eq!(
        (u(fin, "tx_bytes"), u(fin, "rx_bytes")),
        (0, BYTES),
        "{fin}"
    );
    let fin = closed(&of_conn(&records, &local, addr));
    assert_eq!(
        (u(fin, "tx_bytes"), u(fin, "rx_bytes")),
        (BYTES, 0),
        "{fin}"
    );
}

/// 5,000 idle connections (2,500 pairs) open before tcptop starts: every
/// one is in one snapshot, live, with its owner. More records than one
/// batch read of the map holds (4,096), all adopted at start-up in the
/// test's namespace.
#[test]
#[cfg_attr(not(tcptop_root), ignore = "needs root")]
fn many_existing_connections_in_one_snapshot() {
    common::require_root();
    let _g = common::serial();
    const PAIRS: usize = 2500;
    let ns = NetNs::new("many");
    let mut hold = ns.peer(&[
        "hold-self",
        "--listen",
        "127.0.0.1:40164",
        "--pairs",
        &PAIRS.to_string(),
    ]);
    assert_eq!(u(&hold.expect("holding"), "sockets"), 2 * PAIRS as u64);
    let owner = u64::from(hold.pid());

    // One snapshot a second: 5,000 lines each (the VMs' emulated CPUs
    // cannot parse five times that a second in a debug build).
    let mut top = Tcptop::start_with_interval("1", &["--port", "40164"]);
    top.pump(Duration::from_millis(3500));
    hold.poke();
    hold.wait_ok();
    let (records, _) = top.stop();
    let mut by_snapshot: std::collections::BTreeMap<String, Vec<&Value>> = Default::default();
    for r in &records {
        by_snapshot.entry(r["ts"].to_string()).or_default().push(r);
    }
    let fullest = by_snapshot
        .values()
        .map(|rs| {
            let live: std::collections::HashSet<(String, String)> = rs
                .iter()
                .filter(|r| {
                    r["state"] == "ESTABLISHED"
                        && r["pid"].as_u64() == Some(owner)
                        && !r["rtt_us"].is_null()
                })
                .map(|r| (r["local"].to_string(), r["remote"].to_string()))
                .collect();
            live.len()
        })
        .max()
        .unwrap_or(0);
    assert_eq!(
        fullest,
        2 * PAIRS,
        "live connections in the fullest snapshot"
    );
}

/// A table too small for the machine's connections: the first snapshot
/// that finds connections dropped warns once on stderr, naming the flag
/// and its value, and the exit summary counts them.
#[test]
#[cfg_attr(not(tcptop_root), ignore = "needs root")]
fn full_table_warns_naming_the_flag() {
    common::require_root();
    let _g = common::serial();
    const PAIRS: usize = 1200;
    let ns = NetNs::new("full");
    let mut top = Tcptop::start(&["--max-conns", "1024", "--port", "40165"]);
    let mut hold = ns.peer(&[
        "hold-self",
        "--listen",
        "127.0.0.1:40165",
        "--pairs",
        &PAIRS.to_string(),
    ]);
    assert_eq!(u(&hold.expect("holding"), "sockets"), 2 * PAIRS as u64);
    top.pump(Duration::from_millis(1500));
    hold.poke();
    hold.wait_ok();
    let (_, stderr) = top.stop();
    let warning = "tcptop: warning: connection table full: ";
    assert_eq!(stderr.matches(warning).count(), 1, "{stderr}");
    assert!(
        stderr.contains("restart with a larger --max-conns (now 1024)"),
        "{stderr}"
    );
    let summary = stderr
        .lines()
        .find(|l| l.contains("connections (table full)"))
        .unwrap_or_default();
    assert!(!summary.contains(" 0 connections (table full)"), "{stderr}");
}

/// A receive call already blocked when tcptop attaches is counted when it
/// returns, on every hook set: function-exit hooks (fexit, kretprobe) are
/// never called for a call entered before they were attached, but the
/// socket's own counters move (read at each snapshot and at teardown).
#[test]
#[cfg_attr(not(tcptop_root), ignore = "needs root")]
fn call_in_flight_at_start_is_counted() {
    common::require_root();
    let _g = common::serial();
    existing_connection("inflight", 40106, true, &[]);
}

/// Data that no send or receive call carries: the client sends with
/// sendfile() from a file, the server reads it with splice() into a pipe
/// (as proxies do) and answers with splice() from a pipe. Both ends are
/// exact, live and at close.
#[test]
#[cfg_attr(not(tcptop_root), ignore = "needs root")]
fn sendfile_and_splice_are_counted() {
    common::require_root();
    let _g = common::serial();
    const UP: u64 = 3_456_789;
    const DOWN: u64 = 234_567;
    let ns = NetNs::new("splice");
    let addr = "127.0.0.1:40107";
    let mut top = Tcptop::start(&["--port", "40107"]);
    let (up, down) = (UP.to_string(), DOWN.to_string());
    let mut srv = ns.peer(&[
        "server",
        "--listen",
        addr,
        "--name",
        "tt-splice",
        "--recv",
        &up,
        "--recv-with",
        "splice",
        "--send",
        &down,
        "--send-with",
        "splice",
    ]);
    srv.expect("listening");
    let mut cli = ns.peer(&[
        "client",
        "--connect",
        addr,
        "--name",
        "tt-sendfile",
        "--send",
        &up,
        "--send-with",
        "sendfile",
        "--recv",
        &down,
        "--wait-stdin",
    ]);
    let local = cli.local_at("connected");
    cli.poke();
    cli.expect("done");
    srv.expect("done");
    // Idle: the live rows are exact.
    for (l, r, tx, rx) in [
        (local.as_str(), addr, UP, DOWN),
        (addr, local.as_str(), DOWN, UP),
    ] {
        top.wait_for(|rec| {
            rec["local"] == l
                && rec["remote"] == r
                && rec["tx_bytes"].as_u64() == Some(tx)
                && rec["rx_bytes"].as_u64() == Some(rx)
        });
    }
    cli.poke();
    cli.wait_ok();
    srv.expect("finished");
    top.pump(Duration::from_millis(800));
    let (records, _) = top.stop();
    let fin = closed(&of_conn(&records, &local, addr));
    assert_eq!(
        (u(fin, "tx_bytes"), u(fin, "rx_bytes")),
        (UP, DOWN),
        "{fin}"
    );
    assert_eq!(fin["comm"], "tt-sendfile");
    let fin = closed(&of_conn(&records, addr, &local));
    assert_eq!(
        (u(fin, "tx_bytes"), u(fin, "rx_bytes")),
        (DOWN, UP),
        "{fin}"
    );
    assert_eq!(fin["comm"], "tt-splice");
}

/// 500 short-lived connections in a burst: every one is reported closed,
/// once, with exact bytes on both sides, and nothing is dropped.
#[test]
#[cfg_attr(not(tcptop_root), ignore = "needs root")]
fn burst_of_short_connections() {
    common::require_root();
    let _g = common::serial();
    const N: usize = 500;
    let ns = NetNs::new("burst");
    let addr = "127.0.0.1:40104";
    let mut top = Tcptop::start(&["--port", "40104"]);
    let n = N.to_string();
    let mut srv = ns.peer(&[
        "server",
        "--listen",
        addr,
        "--name",
        "tt-burst-srv",
        "--conns",
        &n,
        "--recv",
        "1000",
        "--send",
        "3000",
    ]);
    srv.expect("listening");
    let mut cli = ns.peer(&[
        "client",
        "--connect",
        addr,
        "--name",
        "tt-burst-cli",
        "--conns",
        &n,
        "--send",
        "1000",
        "--recv",
        "3000",
        "--verbose",
    ]);
    let cli_pid = u64::from(cli.pid());
    // The client's own view of each connection's local address. A port can
    // come back within the burst (the server closes first, so the client
    // keeps no TIME_WAIT), so ports are compared as multisets.
    let mut used: Vec<String> = (0..N).map(|_| cli.local_at("done")).collect();
    cli.wait_ok();
    srv.wait_ok();
    top.pump(Duration::from_millis(1000));
    let (records, stderr) = top.stop();
    assert!(
        stderr.contains("dropped 0 events (ring buffer full), 0 connections (table full)"),
        "{stderr}"
    );
    let closed: Vec<&Value> = records.iter().filter(|r| r["state"] == "CLOSED").collect();
    let client_side: Vec<&&Value> = closed.iter().filter(|r| r["remote"] == addr).collect();
    let server_side: Vec<&&Value> = closed.iter().filter(|r| r["local"] == addr).collect();
    // On a mismatch, which records are extra or missing: the client's
    // ports beside the client-side records', every record of a port seen
    // more often than the client used it, and what tcptop said.
    let odd = |side: &[&&Value], end: &str| -> String {
        let mut seen: std::collections::HashMap<String, Vec<&Value>> = Default::default();
        for r in side {
            seen.entry(r[end].as_str().unwrap_or("?").to_string())
                .or_default()
                .push(r);
        }
        seen.retain(|port, rs| rs.len() != used.iter().filter(|u| *u == port).count());
        format!("{seen:#?}\nstderr: {stderr}")
    };
    assert_eq!(client_side.len(), N, "{}", odd(&client_side, "local"));
    assert_eq!(server_side.len(), N, "{}", odd(&server_side, "remote"));
    for r in &client_side {
        assert_eq!((u(r, "tx_bytes"), u(r, "rx_bytes")), (1000, 3000), "{r}");
        assert_eq!(u(r, "pid"), cli_pid);
    }
    // On a mismatch, every record of that connection's 4-tuple.
    let all_of = |local: &str, remote: &str| -> String {
        let rs: Vec<String> = of_conn(&records, local, remote)
            .iter()
            .map(|r| r.to_string())
            .collect();
        rs.join("\n")
    };
    for r in &server_side {
        let remote = r["remote"].as_str().unwrap_or("?");
        assert_eq!(
            (u(r, "tx_bytes"), u(r, "rx_bytes")),
            (3000, 1000),
            "{r}\nall records of it:\n{}",
            all_of(addr, remote)
        );
        assert_eq!(r["comm"], "tt-burst-srv");
    }
    // Each connection exactly once: the local addresses reported are the
    // ones the client used, as many times as it used them.
    let mut ports: Vec<String> = client_side
        .iter()
        .map(|r| r["local"].as_str().unwrap().to_string())
        .collect();
    ports.sort_unstable();
    used.sort_unstable();
    assert_eq!(ports, used);
}

/// Programs are detached on every exit path: SIGTERM, Ctrl-C (SIGINT),
/// reaching --iterations, and even SIGKILL (links are file descriptors).
#[test]
#[cfg_attr(not(tcptop_root), ignore = "needs root")]
fn programs_detached_on_every_exit() {
    common::require_root();
    let _g = common::serial();
    // Programs of the previous test are freed after an RCU grace period.
    common::wait_no_programs();
    assert!(
        common::loaded_tcptop_programs().is_empty(),
        "programs left over before the test"
    );
    for sig in [libc::SIGTERM, libc::SIGINT, libc::SIGKILL] {
        let top = Tcptop::start(&[]);
        let loaded = common::loaded_tcptop_programs();
        // Lifecycle and send/receive programs (how many of the latter
        // depends on the hook set), and UDP ones unless refused.
        assert!(loaded.len() >= 4, "{loaded:?}");
        // The teardown program, raw or BTF-typed.
        assert!(
            loaded
                .iter()
                .any(|n| n.starts_with("tcp_destroy_soc") || n.starts_with("btf_tcp_destroy")),
            "{loaded:?}"
        );
        // SAFETY: signalling our own child.
        unsafe { libc::kill(top.pid() as i32, sig) };
        common::wait_no_programs();
        assert_eq!(
            common::loaded_tcptop_programs(),
            Vec::<String>::new(),
            "after signal {sig}"
        );
        drop(top);
    }
    let st = std::process::Command::new(common::tcptop())
        .args(["--batch", "-n", "1", "-i", "0.1", "-q"])
        .output()
        .unwrap();
    assert!(st.status.success());
    common::wait_no_programs();
    assert!(common::loaded_tcptop_programs().is_empty());
}

/// A refused connect is one connection, reported closed once with both of
/// its ports (the kernel zeroes the local port number before the CLOSE
/// transition; tcptop must not show ":0").
#[test]
#[cfg_attr(not(tcptop_root), ignore = "needs root")]
fn refused_connect_keeps_its_ports() {
    common::require_root();
    let _g = common::serial();
    let ns = NetNs::new("refused");
    let mut top = Tcptop::start(&["--port", "40105"]);
    let cli = ns.peer(&[
        "client",
        "--connect",
        "127.0.0.1:40105",
        "--name",
        "tt-refused",
    ]);
    let pid = u64::from(cli.pid());
    let st = { cli }.child.wait().unwrap();
    assert!(!st.success(), "connect should have been refused");
    top.pump(Duration::from_millis(600));
    let (records, _) = top.stop();
    let mine: Vec<&Value> = records
        .iter()
        .filter(|r| r["remote"] == "127.0.0.1:40105")
        .collect();
    assert_eq!(mine.len(), 1, "{mine:#?}");
    let r = mine[0];
    assert_eq!(r["state"], "CLOSED");
    assert!(!r["local"].as_str().unwrap().ends_with(":0"), "{r}");
    assert_eq!(u(r, "pid"), pid);
    assert_eq!(r["comm"], "tt-refused");
    assert_eq!((u(r, "tx_bytes"), u(r, "rx_bytes")), (0, 0));
}

/// Raw sockets with protocol TCP (sniffers, scanners) are not connections:
/// they must not be tracked (they never reach tcp_destroy_sock).
#[test]
#[cfg_attr(not(tcptop_root), ignore = "needs root")]
fn raw_tcp_sockets_are_not_connections() {
    common::require_root();
    let _g = common::serial();
    let ns = NetNs::new("raw");
    let mut top = Tcptop::start(&[]);
    let script = "import socket\n\
        s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_TCP)\n\
        s.sendto(b'\\x00' * 40, ('127.0.0.1', 0))\n\
        s.settimeout(2)\n\
        print(len(s.recv(100)))\n";
    let out = std::process::Command::new("ip")
        .args(["netns", "exec", &ns.name, "python3", "-c", script])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    top.pump(Duration::from_millis(600));
    let (records, _) = top.stop();
    let netns = ns.inode();
    let mine: Vec<&Value> = records.iter().filter(|r| u(r, "netns") == netns).collect();
    assert!(mine.is_empty(), "raw socket reported: {mine:#?}");
}

/// A dual-stack server ([::]) accepting an IPv4 client: its socket is IPv6
/// with IPv4-mapped addresses, shown as IPv4, bytes exact on both ends.
#[test]
#[cfg_attr(not(tcptop_root), ignore = "needs root")]
fn ipv4_mapped_server_socket_shown_as_ipv4() {
    common::require_root();
    let _g = common::serial();
    let ns = NetNs::new("mapped");
    let mut top = Tcptop::start(&["--port", "40107"]);
    let mut srv = ns.peer(&[
        "server",
        "--listen",
        "[::]:40107",
        "--name",
        "tt-dual-srv",
        "--recv",
        "2222",
        "--send",
        "3333",
    ]);
    srv.expect("listening");
    let mut cli = ns.peer(&[
        "client",
        "--connect",
        "127.0.0.1:40107",
        "--name",
        "tt-v4-cli",
        "--send",
        "2222",
        "--recv",
        "3333",
    ]);
    let local = cli.local_at("done");
    cli.wait_ok();
    srv.wait_ok();
    top.pump(Duration::from_millis(600));
    let (records, _) = top.stop();
    let fin = closed(&of_conn(&records, "127.0.0.1:40107", &local));
    assert_eq!((u(fin, "tx_bytes"), u(fin, "rx_bytes")), (3333, 2222));
    assert_eq!(fin["comm"], "tt-dual-srv");
    assert!(
        !records
            .iter()
            .any(|r| r["local"].as_str().unwrap().contains("::ffff:")),
        "mapped address shown raw"
    );
}

/// The owner is whoever uses a connection now: a forked child writing on an
/// inherited socket takes it over, and a process that execs shows its new
/// name (same PID). Bytes stay exact across both.
#[test]
#[cfg_attr(not(tcptop_root), ignore = "needs root")]
fn owner_follows_fork_and_exec() {
    common::require_root();
    let _g = common::serial();
    let ns = NetNs::new("exec");
    let mut top = Tcptop::start(&["--port", "40111"]);
    let mut srv = ns.peer(&[
        "server",
        "--listen",
        "127.0.0.1:40111",
        "--name",
        "tt-exec-srv",
        "--recv",
        "1111",
    ]);
    srv.expect("listening");
    // bash writes 5 bytes, then execs python3 (same PID), which writes 1100
    // on the same socket (fd 3), then forks a child that writes 6.
    let script = r#"
        exec 3<>/dev/tcp/127.0.0.1/40111
        printf hello >&3
        echo "{\"event\":\"wrote\",\"pid\":$$}"
        sleep 1.5
        exec python3 -c 'import os, time
os.write(3, b"x" * 1100)
print("{\"event\":\"exec\"}", flush=True)
time.sleep(1.5)
pid = os.fork()
if pid == 0:
    os.write(3, b"world!")
    print("{\"event\":\"child\",\"pid\":%d}" % os.getpid(), flush=True)
    time.sleep(1.5)
    os._exit(0)
os.waitpid(pid, 0)'
    "#;
    let mut sh = ns.spawn("bash", &["-c", script]);
    let bash_pid = sh.expect("wrote")["pid"].as_u64().unwrap();
    let first = top.wait_for(|r| r["tx_bytes"] == 5);
    assert_eq!(u(&first, "pid"), bash_pid, "{first}");
    assert_eq!(first["comm"], "bash", "{first}");
    sh.expect("exec");
    let execd = top.wait_for(|r| r["tx_bytes"] == 1105);
    assert_eq!(u(&execd, "pid"), bash_pid, "{execd}");
    assert_eq!(execd["comm"], "python3", "exec renames: {execd}");
    let child_pid = sh.expect("child")["pid"].as_u64().unwrap();
    assert_ne!(child_pid, bash_pid);
    let forked = top.wait_for(|r| r["tx_bytes"] == 1111);
    assert_eq!(u(&forked, "pid"), child_pid, "{forked}");
    sh.wait_ok();
    srv.expect("finished");
    let done = top.wait_for(|r| r["state"] == "CLOSED" && r["tx_bytes"] == 1111);
    assert_eq!(done["comm"], "python3", "{done}");
}

/// Stopping tcptop (SIGTERM or Ctrl-C) takes one last snapshot: a
/// connection that closed since the previous one is still reported.
#[test]
#[cfg_attr(not(tcptop_root), ignore = "needs root")]
fn last_snapshot_on_signal() {
    common::require_root();
    let _g = common::serial();
    let ns = NetNs::new("last");
    for sig in [libc::SIGTERM, libc::SIGINT] {
        // No tick comes in this test's lifetime: only the signal snapshots.
        let top = Tcptop::start_with_interval("600", &["--port", "40121"]);
        let mut srv = ns.peer(&["server", "--listen", "127.0.0.1:40121", "--recv", "4321"]);
        srv.expect("listening");
        let mut cli = ns.peer(&["client", "--connect", "127.0.0.1:40121", "--send", "4321"]);
        cli.expect("finished");
        srv.expect("finished");
        let records = top.stop_with(sig);
        let fin: Vec<&Value> = records
            .iter()
            .filter(|r| r["state"] == "CLOSED" && r["remote"] == "127.0.0.1:40121")
            .collect();
        assert_eq!(fin.len(), 1, "signal {sig}: {records:#?}");
        assert_eq!(u(fin[0], "tx_bytes"), 4321);
    }
}

/// The benchmark instrument `TCPTOP_BENCH_NOOP=1` (the floor under
/// tcptop's overhead in BENCHMARKS.md) must measure what it says: every
/// program loaded and attached, none of them counting anything.
#[test]
#[cfg_attr(not(tcptop_root), ignore = "needs root")]
fn bench_noop_attaches_everything_and_counts_nothing() {
    common::require_root();
    let _g = common::serial();
    let ns = NetNs::new("noop");
    // Programs of the previous test are freed after an RCU grace period.
    common::wait_no_programs();
    assert!(
        common::loaded_tcptop_programs().is_empty(),
        "programs left over before the test"
    );
    let top = Tcptop::start_with_interval(common::INTERVAL, &["--port", "40131"]);
    let attached = common::loaded_tcptop_programs();
    top.stop();
    common::wait_no_programs();

    let top = Tcptop::start_with_env(
        common::INTERVAL,
        &["--port", "40131"],
        &[("TCPTOP_BENCH_NOOP", "1")],
    );
    assert!(
        top.warnings.iter().any(|w| w.contains("TCPTOP_BENCH_NOOP")),
        "{:?}",
        top.warnings
    );
    let mut noop = common::loaded_tcptop_programs();
    let mut want = attached.clone();
    noop.sort();
    want.sort();
    assert_eq!(noop, want, "the same programs, attached");
    let mut srv = ns.peer(&["server", "--listen", "127.0.0.1:40131", "--recv", "777"]);
    srv.expect("listening");
    exchange_shows_nothing(&ns, top, srv, "127.0.0.1:40131", "the programs idle");
}

/// A client sends 777 bytes to `srv` (listening on `addr`, reading 777)
/// while `top` watches; `top` must report no row at all (`why`).
fn exchange_shows_nothing(ns: &NetNs, mut top: Tcptop, mut srv: Peer, addr: &str, why: &str) {
    let mut cli = ns.peer(&["client", "--connect", addr, "--send", "777"]);
    cli.expect("finished");
    srv.expect("finished");
    top.pump(Duration::from_millis(800));
    let (records, _) = top.stop();
    assert!(records.is_empty(), "rows with {why}: {records:#?}");
}

/// The benchmark instrument `TCPTOP_BENCH_SKIP` (what each part of
/// tcptop's work costs a load, in BENCHMARKS.md) must leave out exactly
/// what it names and keep the rest: `calls` the send/receive programs'
/// counting, `ring` the final copies of closed connections, `user` all of
/// user space's work but emptying the ring buffer.
#[test]
#[cfg_attr(not(tcptop_root), ignore = "needs root")]
fn bench_skip_leaves_out_what_it_names() {
    common::require_root();
    let _g = common::serial();
    let ns = NetNs::new("skip");

    // tcptop with `part` left out, watching `port`, and a server there
    // that reads 777 bytes.
    let start = |part: &str, port: u16| {
        let addr = format!("127.0.0.1:{port}");
        let top = Tcptop::start_with_env(
            common::INTERVAL,
            &["--port", &port.to_string()],
            &[("TCPTOP_BENCH_SKIP", part)],
        );
        assert!(
            top.warnings.iter().any(|w| w.contains("TCPTOP_BENCH_SKIP")),
            "{:?}",
            top.warnings
        );
        let mut srv = ns.peer(&["server", "--listen", &addr, "--recv", "777"]);
        srv.expect("listening");
        (top, srv, addr)
    };

    // calls: the connection is born and torn down as usual, its packets
    // are the kernel's, and its bytes too: without the call hooks they
    // come from the socket's own sequence counters alone, exactly.
    let (mut top, mut srv, addr) = start("calls", 40133);
    let addr = addr.as_str();
    let mut cli = ns.peer(&["client", "--connect", addr, "--send", "777"]);
    let local = cli.local_at("done");
    cli.expect("finished");
    srv.expect("finished");
    top.wait_for(|r| r["local"] == local.as_str() && r["state"] == "CLOSED");
    let (records, _) = top.stop();
    let fin = closed(&of_conn(&records, &local, addr));
    assert_eq!((u(fin, "tx_bytes"), u(fin, "rx_bytes")), (777, 0), "{fin}");
    assert!(u(fin, "tx_packets") > 0, "{fin}");

    // ring: live rows as usual, calls counted, no closed rows.
    let (mut top, mut srv, addr) = start("ring", 40134);
    let addr = addr.as_str();
    let mut cli = ns.peer(&["client", "--connect", addr, "--send", "777", "--wait-stdin"]);
    let local = cli.local_at("connected");
    cli.poke();
    cli.expect("done");
    top.wait_for(|r| r["local"] == local.as_str() && r["tx_bytes"].as_u64() == Some(777));
    cli.poke();
    cli.wait_ok();
    srv.expect("finished");
    top.pump(Duration::from_millis(800));
    let (records, _) = top.stop();
    let ends: Vec<_> = records
        .iter()
        .filter(|r| r["state"] == "CLOSED" && r["remote"] == addr)
        .collect();
    assert!(
        ends.is_empty(),
        "closed rows with the ring left out: {ends:#?}"
    );

    // user: the programs count, user space reports nothing.
    let (top, srv, addr) = start("user", 40135);
    exchange_shows_nothing(&ns, top, srv, &addr, "user space left out");
}

/// A connect the peer never answers stays in SYN_SENT (here: its SYNs are
/// dropped because the listener's accept queue is full, all inside a
/// private namespace). The kernel picks the source port after the
/// SYN_SENT transition: tcptop must show the real port, never port 0,
/// while the connection waits.
#[test]
#[cfg_attr(not(tcptop_root), ignore = "needs root")]
fn stuck_connect_shows_its_port() {
    common::require_root();
    let _g = common::serial();
    let ns = NetNs::new("stuck");
    let mut top = Tcptop::start(&["--port", "40151"]);
    // listen(0): one connection fills the accept queue, the next SYN is
    // dropped and retransmitted (after 1 s, then every 1 s on 6.18's linear
    // SYN timeouts, after 3 s, 7 s, ... on 6.1 and 6.12).
    let script = r#"
import socket, struct, sys, time
l = socket.socket(); l.bind(("127.0.0.1", 40151)); l.listen(0)
a = socket.create_connection(("127.0.0.1", 40151))
time.sleep(0.2)
b = socket.socket(); b.setblocking(False)
try:
    b.connect(("127.0.0.1", 40151))
except BlockingIOError:
    pass
print('{"event":"connecting","local":"127.0.0.1:%d"}' % b.getsockname()[1], flush=True)
sys.stdin.readline()
# tcp_info.tcpi_total_retrans (offset 100): the SYNs retransmitted so far,
# before and after the snapshot the test then looks at.
for _ in range(2):
    info = b.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 104)
    print('{"event":"retrans","n":%d}' % struct.unpack_from("I", info, 100)[0], flush=True)
    sys.stdin.readline()
"#;
    let mut py = ns.spawn("python3", &["-c", script]);
    let connecting = py.expect("connecting");
    let local = connecting["local"].as_str().unwrap().to_string();
    let waiting = top.wait_for(|r| r["local"] == local.as_str() && r["state"] == "SYN_SENT");
    assert_eq!(waiting["remote"], "127.0.0.1:40151");
    assert_eq!(waiting["comm"], "python3");
    // Two more retransmits' worth of snapshots: never without its port.
    top.pump(Duration::from_millis(2500));
    // Its RETRANS column counts the SYNs retransmitted while it waits, as
    // the kernel does: read before and after two more snapshots (equal
    // unless a retransmit fell in between).
    py.poke();
    let before = py.expect("retrans")["n"].as_u64().unwrap();
    assert!(before >= 1, "no SYN retransmitted: the test did not wait");
    top.pump(Duration::from_millis(600));
    py.poke();
    let after = py.expect("retrans")["n"].as_u64().unwrap();
    let last = top
        .records
        .iter()
        .rev()
        .find(|r| r["local"] == local.as_str() && r["state"] == "SYN_SENT")
        .unwrap();
    let shown = last["retrans"].as_u64().unwrap();
    assert!(
        (before..=after).contains(&shown),
        "a waiting connect shows {shown} retransmits, the kernel counted {before} then {after}"
    );
    py.poke();
    py.wait_ok();
    let (records, _) = top.stop();
    let unbound: Vec<&Value> = records
        .iter()
        .filter(|r| r["local"] == "127.0.0.1:0")
        .collect();
    assert!(unbound.is_empty(), "shown without its port: {unbound:#?}");
}

/// Every optional program refused at once (TCPTOP_TEST_REFUSE makes the
/// loader treat them as refused with EPERM, as a security policy does on
/// some hosts): the map and TCP socket iterators, BTF-typed tracepoints,
/// fentry (unless the suite forces a set) and the UDP cgroup programs.
/// tcptop says what each refusal costs, names the refresh path in `hooks`,
/// and still counts a connection made before start (its receive already
/// blocked) and one made after, exactly, live with its RTT and at close.
#[test]
#[cfg_attr(not(tcptop_root), ignore = "needs root")]
fn refused_programs_fall_back() {
    common::require_root();
    let _g = common::serial();
    let mut refuse = String::from("iter,tp_btf,cgroup");
    if common::forced_hooks().is_none() {
        refuse.push_str(",fentry");
    }
    let ns = NetNs::new("refused");
    let addr = "127.0.0.1:40108";
    // The server is blocked in its receive when tcptop starts.
    let mut old_srv = ns.peer(&[
        "server",
        "--listen",
        addr,
        "--name",
        "tt-ref-srv",
        "--recv",
        "5000",
        "--send",
        "7000",
    ]);
    old_srv.expect("listening");
    let mut old_cli = ns.peer(&[
        "client",
        "--connect",
        addr,
        "--name",
        "tt-ref-cli",
        "--send",
        "5000",
        "--recv",
        "7000",
        "--wait-stdin",
    ]);
    let old_local = old_cli.local_at("connected");
    let mut top = Tcptop::start_with_env(
        common::INTERVAL,
        &["--port", "40108", "--port", "40109"],
        &[("TCPTOP_TEST_REFUSE", &refuse)],
    );
    let said = top.warnings.join("\n");
    for what in [
        "the connection map's iterator: refused by the kernel (EPERM",
        "the TCP socket iterator: refused by the kernel (EPERM",
        "the process files' iterator: refused by the kernel (EPERM",
        "socket diagnostics",
    ] {
        assert!(said.contains(what), "no warning about {what:?}:\n{said}");
    }
    if common::forced_hooks().is_none() {
        assert!(said.contains("UDP"), "{said}");
    }

    // Made before start: live from the first snapshot with its RTT.
    let seen = top.wait_for(|r| r["local"] == old_local.as_str() && !r["rtt_us"].is_null());
    let hooks = seen["hooks"].as_str().unwrap().to_string();
    assert!(hooks.ends_with("+diag"), "{hooks}");
    assert!(!hooks.contains("+btf"), "{hooks}");
    match common::forced_hooks() {
        // The suite forced a set: tcptop keeps it, refusals elsewhere or not.
        Some(set) => assert!(hooks.starts_with(&set), "{hooks} (forced {set})"),
        None => assert!(!hooks.starts_with("fentry"), "{hooks}"),
    }
    assert_eq!(seen["state"], "ESTABLISHED");
    assert_eq!(seen["comm"], "tt-ref-cli");
    old_cli.poke();
    old_cli.expect("done");
    old_cli.poke();

    // Made after start.
    let new_addr = "127.0.0.1:40109";
    let mut srv = ns.peer(&[
        "server", "--listen", new_addr, "--recv", "4321", "--send", "1234",
    ]);
    srv.expect("listening");
    let mut cli = ns.peer(&[
        "client",
        "--connect",
        new_addr,
        "--send",
        "4321",
        "--recv",
        "1234",
        "--wait-stdin",
    ]);
    let local = cli.local_at("connected");
    cli.poke();
    let done = cli.expect("done");
    let live = top.wait_for(|r| {
        r["local"] == local.as_str()
            && r["tx_bytes"].as_u64() == Some(4321)
            && r["rx_bytes"].as_u64() == Some(1234)
            && r["tx_packets"].as_u64() == Some(u(&done, "segs_out"))
    });
    assert_eq!(live["state"], "ESTABLISHED");
    assert!(u(&live, "rtt_us") > 0, "{live}");
    cli.poke();
    cli.wait_ok();
    srv.wait_ok();
    old_cli.wait_ok();
    old_srv.wait_ok();
    top.pump(Duration::from_millis(800));
    let (records, _) = top.stop();
    let fin = closed(&of_conn(&records, &local, new_addr));
    assert_eq!(
        (u(fin, "tx_bytes"), u(fin, "rx_bytes")),
        (4321, 1234),
        "{fin}"
    );
    let fin = closed(&of_conn(&records, &old_local, addr));
    assert_eq!(
        (u(fin, "tx_bytes"), u(fin, "rx_bytes")),
        (5000, 7000),
        "{fin}"
    );
    let fin = closed(&of_conn(&records, addr, &old_local));
    assert_eq!(
        (u(fin, "tx_bytes"), u(fin, "rx_bytes")),
        (7000, 5000),
        "{fin}"
    );
    assert_eq!(fin["comm"], "tt-ref-srv");
}

/// tcptop on the touched-sockets refresh path whatever this host allows
/// (the iterators treated as refused, besides what the suite refuses),
/// showing `port`, with `env` too.
fn on_touched_path(port: &str, env: &[(&str, &str)]) -> Tcptop {
    on_touched_path_every(common::INTERVAL, port, env)
}

/// [`on_touched_path`] with a snapshot every `interval` seconds.
fn on_touched_path_every(interval: &str, port: &str, env: &[(&str, &str)]) -> Tcptop {
    let refuse = common::refusing("iter");
    let mut all = vec![("TCPTOP_TEST_REFUSE", refuse.as_str())];
    all.extend_from_slice(env);
    Tcptop::start_with_env(interval, &["--port", port], &all)
}

/// Where the kernel refuses the map iterator (forced here: the iterators
/// treated as refused), a snapshot refreshes only the records the programs
/// touched. Each kind of touch, seen live: a call (the client's send), a
/// read no call hook sees (the server reads only with splice()), the
/// transition to ESTABLISHED, and a state the connection rests in
/// (CLOSE_WAIT, the client making no call after its server was killed).
#[test]
#[cfg_attr(not(tcptop_root), ignore = "needs root")]
fn touched_connections_are_refreshed() {
    common::require_root();
    let _g = common::serial();
    const BYTES: u64 = 123_457;
    let ns = NetNs::new("touched");
    let addr = "127.0.0.1:40171";
    let mut top = on_touched_path("40171", &[]);
    let n = BYTES.to_string();
    let mut srv = ns.peer(&[
        "server",
        "--listen",
        addr,
        "--name",
        "tt-touch-srv",
        "--recv",
        &n,
        "--recv-with",
        "splice",
    ]);
    srv.expect("listening");
    let mut cli = ns.peer(&[
        "client",
        "--connect",
        addr,
        "--name",
        "tt-touch-cli",
        "--send",
        &n,
        "--wait-stdin",
    ]);
    let local = cli.local_at("connected");
    let up = top.wait_for(|r| {
        r["local"] == local.as_str() && r["remote"] == addr && r["state"] == "ESTABLISHED"
    });
    assert!(up["hooks"].as_str().unwrap().ends_with("+diag"), "{up}");
    // Past the snapshots that refresh it for its birth.
    top.pump(Duration::from_millis(800));
    cli.poke();
    cli.expect("done");
    srv.expect("done");
    top.wait_for(|r| r["local"] == local.as_str() && r["tx_bytes"].as_u64() == Some(BYTES));
    // Without the read tracepoint (TCPTOP_TEST_REFUSE=touch) a read by
    // splice shows at the next full refresh, a minute later: only its end
    // is checked then.
    if !common::refused("touch") {
        top.wait_for(|r| {
            r["local"] == addr
                && r["remote"] == local.as_str()
                && r["state"] == "ESTABLISHED"
                && r["rx_bytes"].as_u64() == Some(BYTES)
        });
    }
    drop(srv);
    top.wait_for(|r| r["local"] == local.as_str() && r["state"] == "CLOSE_WAIT");
    cli.poke();
    cli.wait_ok();
    top.pump(Duration::from_millis(800));
    let (records, _) = top.stop();
    let fin = closed(&of_conn(&records, &local, addr));
    assert_eq!(
        (u(fin, "tx_bytes"), u(fin, "rx_bytes")),
        (BYTES, 0),
        "{fin}"
    );
    let fin = closed(&of_conn(&records, addr, &local));
    assert_eq!(
        (u(fin, "tx_bytes"), u(fin, "rx_bytes")),
        (0, BYTES),
        "{fin}"
    );
}

/// A touch lost in the generation a snapshot has just begun: that snapshot
/// sees the loss and refreshes every record, and a read after its refresh,
/// still in that generation on the same CPU, puts no touch (the CPU lost
/// one in it already). Such a read must still make the next snapshot
/// refresh everything, or its connection shows its old count until the
/// full refresh a minute later. The gap between the generation and the
/// ring's reading (microseconds) is made 2 s here
/// (`TCPTOP_TEST_TOUCH_GAP_MS`): the server reads 300 connections in it
/// (600 touches for a ring of 256), then the other 100 after that
/// snapshot's refresh, on the same CPU.
#[test]
#[cfg_attr(not(tcptop_root), ignore = "needs root")]
fn reads_after_a_counted_loss_are_refreshed() {
    common::require_root();
    let _g = common::serial();
    const N: usize = 400;
    const FIRST: usize = 300;
    let ns = NetNs::new("touchgap");
    let addr = "127.0.0.1:40173";
    let mut top = on_touched_path_every(
        "4",
        "40173",
        &[
            ("TCPTOP_TEST_TOUCH_RING", "4096"),
            ("TCPTOP_TEST_SAY", "touches"),
            ("TCPTOP_TEST_TOUCH_GAP_MS", "2000"),
        ],
    );
    // Every server end has 1,000 bytes waiting; reads in two parts, each
    // on a line, all on one CPU.
    let script = r#"
import os, socket, sys
os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
l = socket.socket(); l.bind(("127.0.0.1", 40173)); l.listen(1024)
pairs = []
for _ in range(int(sys.argv[1])):
    c = socket.create_connection(("127.0.0.1", 40173))
    s, _ = l.accept()
    pairs.append((c, s))
for c, _ in pairs:
    c.sendall(b"x" * 1000)
def read(s):
    got = 0
    while got < 1000:
        got += len(s.recv(1000 - got))
print('{"event":"holding"}', flush=True)
sys.stdin.readline()
for _, s in pairs[:int(sys.argv[2])]:
    read(s)
print('{"event":"first"}', flush=True)
sys.stdin.readline()
for _, s in pairs[int(sys.argv[2]):]:
    read(s)
print('{"event":"moved"}', flush=True)
sys.stdin.readline()
"#;
    let (n, first) = (N.to_string(), FIRST.to_string());
    let mut py = ns.spawn("python3", &["-c", script, &n, &first]);
    py.expect("holding");
    let wait = Duration::from_secs(20);
    // Only a snapshot that begins from now on: the lines of one that began
    // while the connections were being made are still queued (the first
    // comes one interval after start; in a guest under emulation making
    // 400 connections can take longer), and its ring may be read before
    // the reads below begin (a 5.10 guest's run failed so, taking the
    // first snapshot's line).
    top.wait_stderr(Duration::ZERO, |_| false);
    // A snapshot has begun (its generation written, the ring not read
    // yet): the first reads now.
    let written = top
        .wait_stderr(wait, |l| l.contains(" written"))
        .expect("no snapshot began");
    let generation: u32 = written
        .trim_start_matches("touches: generation ")
        .trim_end_matches(" written")
        .parse()
        .unwrap();
    py.poke();
    py.expect("first");
    let begun = top
        .wait_stderr(wait, |l| {
            l.contains(&format!("generation {generation} sockets"))
        })
        .expect("the snapshot did not go on");
    assert!(
        begun.contains("lost_some true") && begun.ends_with(": full"),
        "the first reads' lost touches were not seen by the snapshot they began in: {begun}"
    );
    // Its refresh read every record: the other reads now, in the same
    // generation (the next begins 4 s after this one did).
    top.wait_stderr(wait, |l| l.starts_with("touches: full refresh"))
        .expect("no full refresh");
    py.poke();
    py.expect("moved");
    let next = format!("generation {} written", generation.wrapping_add(1));
    assert!(
        top.wait_stderr(Duration::ZERO, |l| l.contains(&next))
            .is_none(),
        "the second reads ended after the next snapshot began: nothing tested"
    );
    // Two more snapshots (4 s apart).
    let shown = |records: &[Value]| {
        let mut latest: std::collections::HashMap<&str, u64> = Default::default();
        for r in records.iter().filter(|r| r["local"] == addr) {
            latest.insert(r["remote"].as_str().unwrap(), u(r, "rx_bytes"));
        }
        latest.values().filter(|&&rx| rx == 1000).count()
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while std::time::Instant::now() < deadline && shown(&top.records) < N {
        top.pump(Duration::from_millis(500));
    }
    let (records, stderr) = top.stop();
    assert_eq!(
        shown(&records),
        N,
        "server ends showing the 1,000 bytes they read\n{stderr}"
    );
    py.poke();
    py.wait_ok();
}

/// The ring of touched sockets made one page (256 touches): 400 idle
/// connections that each move 1,000 bytes at once put 800 touches into it
/// between two snapshots, so most are lost; the snapshot after a lost
/// touch refreshes every record, and every row shows its bytes live.
#[test]
#[cfg_attr(not(tcptop_root), ignore = "needs root")]
fn lost_touches_refresh_everything() {
    common::require_root();
    let _g = common::serial();
    const N: usize = 400;
    let ns = NetNs::new("touchlost");
    let addr = "127.0.0.1:40172";
    // (With a line per snapshot on what it refreshed: printed if this
    // fails.)
    let mut top = on_touched_path(
        "40172",
        &[
            ("TCPTOP_TEST_TOUCH_RING", "4096"),
            ("TCPTOP_TEST_SAY", "touches"),
        ],
    );
    // N connections to itself, idle until a line comes; then each client
    // sends 1,000 bytes and each server end reads them, all at once.
    let script = r#"
import socket, sys
l = socket.socket(); l.bind(("127.0.0.1", 40172)); l.listen(1024)
pairs = []
for _ in range(int(sys.argv[1])):
    c = socket.create_connection(("127.0.0.1", 40172))
    s, _ = l.accept()
    pairs.append((c, s))
print('{"event":"holding"}', flush=True)
sys.stdin.readline()
for c, _ in pairs:
    c.sendall(b"x" * 1000)
for _, s in pairs:
    got = 0
    while got < 1000:
        got += len(s.recv(1000 - got))
print('{"event":"moved"}', flush=True)
sys.stdin.readline()
"#;
    let n = N.to_string();
    let mut py = ns.spawn("python3", &["-c", script, &n]);
    py.expect("holding");
    top.pump(Duration::from_millis(600));
    py.poke();
    py.expect("moved");
    let moved = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    // The latest record of each connection end, until all show the bytes
    // (the map kept as records are parsed: rebuilt from all of them at each
    // look, it fell behind the 4,000 lines a second tcptop writes here, in
    // an emulated VM).
    let mut latest: std::collections::HashMap<(String, String), Value> = Default::default();
    let mut parsed = 0;
    let mut take = |records: &[Value], latest: &mut std::collections::HashMap<_, _>| {
        for r in &records[parsed..] {
            latest.insert((r["local"].to_string(), r["remote"].to_string()), r.clone());
        }
        parsed = records.len();
    };
    let shown = |latest: &std::collections::HashMap<(String, String), Value>| {
        let sent = latest
            .values()
            .filter(|r| r["remote"] == addr && r["tx_bytes"].as_u64() == Some(1000))
            .count();
        let received = latest
            .values()
            .filter(|r| r["local"] == addr && r["rx_bytes"].as_u64() == Some(1000))
            .count();
        (sent, received)
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while std::time::Instant::now() < deadline {
        top.pump(Duration::from_millis(200));
        take(&top.records, &mut latest);
        if shown(&latest) == (N, N) {
            break;
        }
    }
    // Judged on everything tcptop wrote until now, parsed or not: lines
    // wait in the channel while the parser is behind. Stopped while the
    // connections are still open (their closing records would carry the
    // final counts, whatever the live refresh did); the last snapshot
    // before exit is an ordinary one.
    let (records, stderr) = top.stop();
    take(&records, &mut latest);
    let (sent, received) = shown(&latest);
    if (sent, received) != (N, N) {
        // Either end: a client that shows less than it sent, a server
        // end that shows less than it read; each with every record of it.
        for r in latest
            .values()
            .filter(|r| {
                (r["local"] == addr && r["rx_bytes"].as_u64() != Some(1000))
                    || (r["remote"] == addr && r["tx_bytes"].as_u64() != Some(1000))
            })
            .take(10)
        {
            eprintln!("STUCK {r}");
            for h in common::of_conn(
                &records,
                r["local"].as_str().unwrap(),
                r["remote"].as_str().unwrap(),
            ) {
                eprintln!(
                    "  at {} pid {} rx {} packets {} state {}",
                    h["ts"], h["pid"], h["rx_bytes"], h["rx_packets"], h["state"]
                );
            }
        }
        let last = records.last().map(|r| r["ts"].clone());
        eprintln!(
            "ROWS {} of {} records; moved at {moved:.3}, last record at {last:?}",
            latest.len(),
            records.len()
        );
        eprintln!("STDERR\n{stderr}");
    }
    assert_eq!(
        (sent, received),
        (N, N),
        "live rows showing the 1,000 bytes"
    );
    assert!(
        stderr.contains("dropped 0 events (ring buffer full), 0 connections (table full)"),
        "{stderr}"
    );
    py.poke();
    py.wait_ok();
}
