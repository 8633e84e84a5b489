//! The unprivileged mode: tcptop without any capability, on the kernel's
//! socket diagnostics alone (`--source diag`, or `auto` when eBPF programs
//! may not be loaded). Needs root only to make the namespace and drop to
//! nobody with setpriv.
#![expect(
    clippy::unwrap_used,
    reason = "test and benchmark code: a failed unwrap fails the run"
)]

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::{NetNs, of_conn, u};
use serde_json::Value;

/// tcptop as nobody, with no capability, inside `ns`, in jsonl batch mode
/// for `n` snapshots; extra flags after.
fn unprivileged(ns: &NetNs, n: u32, extra: &[&str]) -> std::process::Child {
    let n = n.to_string();
    Command::new("ip")
        .args(["netns", "exec", &ns.name, "setpriv"])
        .args([
            "--reuid=nobody",
            "--regid=nogroup",
            "--clear-groups",
            "--inh-caps=-all",
            "--bounding-set=-all",
        ])
        .args([
            common::tcptop(),
            "--batch",
            "--format",
            "jsonl",
            "--interval",
            "0.3",
            "-n",
            &n,
        ])
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Reads tcptop's stderr until it says it has started (its first dump is
/// done: what is open then counts from then); the rest is gathered by a
/// thread whose result is the whole of stderr.
fn started(top: &mut std::process::Child) -> std::thread::JoinHandle<String> {
    use std::io::{BufRead, Read};
    let mut err = std::io::BufReader::new(top.stderr.take().unwrap());
    let mut seen = String::new();
    loop {
        let mut line = String::new();
        let n = err.read_line(&mut line).unwrap();
        assert!(n > 0, "tcptop ended before it started:\n{seen}");
        seen.push_str(&line);
        if line.starts_with("tcptop: started") {
            break;
        }
    }
    std::thread::spawn(move || {
        let mut rest = String::new();
        let _ = err.read_to_string(&mut rest);
        seen + &rest
    })
}

/// Without privileges tcptop does not exit: it shows live TCP connections
/// of its namespace with state and RTT, says what it cannot show and how
/// to get the full mode, counts the stream bytes of a connection made
/// after it started exactly (and of one made before, from its start),
/// reports a connection that ended as CLOSED with its counters, and exits
/// 0 after --iterations.
#[test]
#[cfg_attr(not(tcptop_root), ignore = "needs root")]
fn unprivileged_mode_shows_live_tcp() {
    common::require_root();
    let _g = common::serial();
    let ns = NetNs::new("unpriv");
    // One open before tcptop starts, which moves 300 bytes before and
    // 5,000 / 7,000 after.
    let old_addr = "127.0.0.1:40301";
    let mut old_srv = ns.peer(&[
        "server", "--listen", old_addr, "--recv", "5300", "--send", "7000",
    ]);
    old_srv.expect("listening");
    let mut old_cli = ns.peer(&[
        "client",
        "--connect",
        old_addr,
        "--send",
        "5300",
        "--recv",
        "7000",
        "--wait-stdin",
        "--send-first",
        "300",
    ]);
    let old_local = old_cli.local_at("connected");

    let addr = "127.0.0.1:40302";
    let mut srv = ns.peer(&[
        "server", "--listen", addr, "--recv", "1000", "--send", "2000",
    ]);
    srv.expect("listening");

    let mut top = unprivileged(&ns, 12, &["--port", "40301", "--port", "40302"]);
    // Connections open at start count from then (their bytes before are
    // not shown): the new one is made only once tcptop has started (a slow
    // machine took over 500 ms to get there, and the test's connection was
    // then one open at start).
    let stderr = started(&mut top);
    let mut cli = ns.peer(&[
        "client",
        "--connect",
        addr,
        "--send",
        "1000",
        "--recv",
        "2000",
        "--wait-stdin",
    ]);
    let local = cli.local_at("connected");
    cli.poke();
    let done = cli.expect("done");
    old_cli.poke();
    old_cli.expect("done");
    std::thread::sleep(Duration::from_millis(1000));
    cli.poke();
    cli.wait_ok();
    srv.wait_ok();
    old_cli.poke();
    old_cli.wait_ok();
    old_srv.wait_ok();

    let out = top.wait_with_output().unwrap();
    let stderr = stderr.join().unwrap();
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("tcptop: notice: unprivileged"), "{stderr}");
    assert!(stderr.contains("setcap cap_bpf,cap_perfmon"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    let records: Vec<Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(records.iter().all(|r| r["hooks"] == "diag"), "{records:?}");

    // The new connection, live and idle: exact, with state and RTT.
    let c = of_conn(&records, &local, addr);
    // The last live record: a snapshot may fall between the client's send
    // and the server's answer (a slow VM took one there), but the second of
    // idle after "done" leaves at least one after both.
    let idle = c
        .iter()
        .rev()
        .find(|r| r["state"] == "ESTABLISHED")
        .unwrap_or_else(|| panic!("no live record: {c:#?}"));
    assert_eq!(
        (u(idle, "tx_bytes"), u(idle, "rx_bytes")),
        (1000, 2000),
        "{c:#?}"
    );
    // Idle for a second after "done", at 0.3 s a snapshot: a row in each
    // (each snapshot after the first reports only the connections that
    // changed, and the table keeps the others).
    let idle_rows = c
        .iter()
        .filter(|r| r["state"] == "ESTABLISHED" && r["rx_bytes"].as_u64() == Some(2000))
        .count();
    assert!(idle_rows >= 2, "{c:#?}");
    assert!(u(idle, "rtt_us") > 0, "{idle}");
    assert_eq!(u(idle, "tx_packets"), u(&done, "segs_out"), "{idle}");
    let fin = c.iter().find(|r| r["state"] == "CLOSED").expect("closed");
    assert_eq!((u(fin, "tx_bytes"), u(fin, "rx_bytes")), (1000, 2000));
    // Its server end: the same bytes the other way.
    let s = of_conn(&records, addr, &local);
    assert!(
        s.iter()
            .any(|r| r["tx_bytes"].as_u64() == Some(2000) && r["rx_bytes"].as_u64() == Some(1000)),
        "{s:#?}"
    );

    // The old one: counted from tcptop's start.
    let o = of_conn(&records, &old_local, old_addr);
    assert!(
        o.iter()
            .any(|r| r["tx_bytes"].as_u64() == Some(5000) && r["rx_bytes"].as_u64() == Some(7000)),
        "{o:#?}"
    );
}

/// `--source ebpf` without privileges keeps the full mode's clear error
/// and exit 1 instead of degrading.
#[test]
#[cfg_attr(not(tcptop_root), ignore = "needs root")]
fn source_ebpf_without_privileges_is_an_error() {
    common::require_root();
    let _g = common::serial();
    let ns = NetNs::new("unpriv-ebpf");
    let out = unprivileged(&ns, 1, &["--source", "ebpf"])
        .wait_with_output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("Missing: CAP_BPF, CAP_PERFMON"), "{err}");
    assert!(err.starts_with("tcptop: loading eBPF programs"), "{err}");
    assert!(!err.contains("tcptop: tcptop"), "{err}");
    assert!(out.stdout.is_empty());
}

/// Owners come from /proc, which shows an unprivileged tcptop the
/// processes of its own user: a connection such a process makes after
/// start is named in its first row; another user's (root's here) is shown
/// without an owner, its bytes as exact.
#[test]
#[cfg_attr(not(tcptop_root), ignore = "needs root")]
fn unprivileged_mode_names_its_own_users_processes() {
    common::require_root();
    let _g = common::serial();
    let ns = NetNs::new("unpriv-own");
    let as_nobody = |args: &[&str]| {
        let mut all = vec![
            "--reuid=nobody",
            "--regid=nogroup",
            "--clear-groups",
            "--inh-caps=-all",
            common::peer_bin(),
        ];
        all.extend_from_slice(args);
        ns.spawn("setpriv", &all)
    };
    let mine = "127.0.0.1:40311";
    let theirs = "127.0.0.1:40312";
    let mut my_srv = as_nobody(&["server", "--listen", mine, "--recv", "1234", "--send", "0"]);
    my_srv.expect("listening");
    let mut their_srv = ns.peer(&[
        "server", "--listen", theirs, "--recv", "4321", "--send", "0",
    ]);
    their_srv.expect("listening");

    // Stopped by SIGTERM once every byte was sent (its last snapshot), not
    // after a number of snapshots: on 6.12 in a loaded emulated guest, 8
    // snapshots (2.4 s) ended before the client's send (CI, 1234 bytes
    // never seen). 1,000 snapshots (5 minutes) only bound the run.
    let mut top = unprivileged(&ns, 1000, &["--port", "40311", "--port", "40312"]);
    let stderr = started(&mut top);
    let mut my_cli = as_nobody(&[
        "client",
        "--connect",
        mine,
        "--send",
        "1234",
        "--recv",
        "0",
        "--wait-stdin",
    ]);
    let my_local = my_cli.local_at("connected");
    let mut their_cli = ns.peer(&[
        "client",
        "--connect",
        theirs,
        "--send",
        "4321",
        "--recv",
        "0",
        "--wait-stdin",
    ]);
    let their_local = their_cli.local_at("connected");
    my_cli.poke();
    my_cli.expect("done");
    their_cli.poke();
    their_cli.expect("done");
    // A snapshot after both sends, then the last one on SIGTERM.
    std::thread::sleep(Duration::from_millis(700));
    // SAFETY: kill(2) on the pid of a child not yet waited for.
    assert_eq!(unsafe { libc::kill(top.id() as i32, libc::SIGTERM) }, 0);

    let out = top.wait_with_output().unwrap();
    let stderr = stderr.join().unwrap();
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    my_cli.poke();
    my_cli.wait_ok();
    my_srv.wait_ok();
    their_cli.poke();
    their_cli.wait_ok();
    their_srv.wait_ok();
    let records: Vec<Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();

    let mine = of_conn(&records, &my_local, mine);
    let first = mine
        .first()
        .unwrap_or_else(|| panic!("no row: {records:#?}"));
    assert_eq!(first["comm"], "tcptop-testpeer", "{mine:#?}");
    assert!(u(first, "pid") > 0, "{first}");
    assert!(mine.iter().any(|r| u(r, "tx_bytes") == 1234), "{mine:#?}");

    let theirs = of_conn(&records, &their_local, theirs);
    assert!(!theirs.is_empty(), "{records:#?}");
    assert!(theirs.iter().all(|r| u(r, "pid") == 0), "{theirs:#?}");
    assert!(
        theirs.iter().any(|r| u(r, "tx_bytes") == 4321),
        "{theirs:#?}"
    );
}
