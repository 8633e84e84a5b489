//! Root churn test: 2,000 new short-lived TCP connections per second for
//! 60 s (120,000 connections), each exchanging known byte counts. Every
//! connection must be reported closed exactly once on each side with its
//! exact bytes: nothing lost, nothing counted twice. tcptop's memory and CPU
//! are printed for BENCHMARKS.md (targets live there, not in assertions).
#![expect(
    clippy::unwrap_used,
    reason = "test and benchmark code: a failed unwrap fails the run"
)]

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, ChildStderr, Command, Stdio};
use std::time::Duration;

use common::NetNs;
use serde_json::Value;

const RATE: u32 = 2_000;
const SECS: u32 = 60;
const SEND: u64 = 300;
const RECV: u64 = 700;

fn status_kib(pid: u32, field: &str) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    s.lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn cpu_secs(pid: u32) -> f64 {
    // utime + stime, in clock ticks (fields 14 and 15 of /proc/PID/stat).
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = s.rsplit(')').next().unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks: u64 = f.get(11).and_then(|v| v.parse().ok()).unwrap_or(0)
        + f.get(12).and_then(|v| v.parse().ok()).unwrap_or(0);
    // SAFETY: sysconf has no preconditions.
    ticks as f64 / unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64
}

/// tcptop in batch jsonl mode, one snapshot every `interval` seconds, for
/// connections on `port`, past its start-up line; with the rest of its
/// stderr.
fn start_top(interval: &str, port: &str) -> (Child, BufReader<ChildStderr>) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tcptop"));
    cmd.args([
        "--batch",
        "--format",
        "jsonl",
        "--interval",
        interval,
        "--port",
        port,
    ]);
    if let Some(set) = common::forced_hooks() {
        cmd.args(["--hooks", &set]);
    }
    let mut top = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut err = BufReader::new(top.stderr.take().unwrap());
    // Warnings (an optional program the kernel refused) come first.
    let mut first = String::new();
    loop {
        first.clear();
        err.read_line(&mut first).unwrap();
        if !first.starts_with("tcptop: warning:") {
            break;
        }
    }
    assert!(first.starts_with("tcptop: attached"), "{first}");
    (top, err)
}

#[test]
#[cfg_attr(not(tcptop_root), ignore = "needs root")]
fn churn_2000_per_second_for_60_s_is_exact() {
    common::require_root();
    let _g = common::serial();
    let ns = NetNs::new("churn");
    // The test's own namespace: room for 120,000 client ports (TIME_WAIT
    // sockets of loopback connections are reused after 1 s by default).
    let st = Command::new("ip")
        .args(["netns", "exec", &ns.name, "sysctl", "-qw"])
        .arg("net.ipv4.ip_local_port_range=1024 65000")
        .status()
        .unwrap();
    assert!(st.success());
    let total = RATE * SECS;
    let addr = "127.0.0.1:40401";

    let (mut top, err) = start_top("1", "40401");
    let top_pid = top.id();

    // Tally records as they stream (120,000 x 2 closed records).
    let out = BufReader::new(top.stdout.take().unwrap());
    let tally = std::thread::spawn(move || {
        let (mut client, mut server, mut wrong) = (0u64, 0u64, Vec::new());
        for line in out.lines() {
            let v: Value = serde_json::from_str(&line.unwrap()).unwrap();
            if v["state"] != "CLOSED" {
                continue;
            }
            let (tx, rx) = (v["tx_bytes"].as_u64(), v["rx_bytes"].as_u64());
            if v["remote"] == addr {
                client += 1;
                if (tx, rx) != (Some(SEND), Some(RECV)) && wrong.len() < 5 {
                    wrong.push(v);
                }
            } else if v["local"] == addr {
                server += 1;
                if (tx, rx) != (Some(RECV), Some(SEND)) && wrong.len() < 5 {
                    wrong.push(v);
                }
            }
        }
        (client, server, wrong)
    });

    let n = total.to_string();
    let (send, recv) = (SEND.to_string(), RECV.to_string());
    let mut srv = ns.peer(&[
        "server",
        "--listen",
        addr,
        "--conns",
        &n,
        "--recv",
        &send,
        "--send",
        &recv,
        "--name",
        "tt-churn-srv",
    ]);
    srv.expect("listening");
    let mut cli = ns.peer(&[
        "client",
        "--connect",
        addr,
        "--conns",
        &n,
        "--send",
        &send,
        "--recv",
        &recv,
        "--rate",
        &RATE.to_string(),
        "--name",
        "tt-churn-cli",
    ]);
    let mut peak_rss = 0;
    let fin = loop {
        // Sample tcptop's memory while the load runs.
        peak_rss = peak_rss.max(status_kib(top_pid, "VmRSS:"));
        match cli.try_expect("finished", Duration::from_secs(1)) {
            Some(v) => break v,
            None => continue,
        }
    };
    srv.expect("finished");
    std::thread::sleep(Duration::from_millis(2500));
    let hwm = status_kib(top_pid, "VmHWM:");
    let cpu = cpu_secs(top_pid);
    // SAFETY: signalling our own child.
    unsafe { libc::kill(top_pid as i32, libc::SIGTERM) };
    let st = top.wait().unwrap();
    assert!(st.success(), "{st}");
    let rest: Vec<String> = err.lines().map(Result::unwrap).collect();
    let rest = rest.join("\n");
    let (client, server, wrong) = tally.join().unwrap();

    let per_sec = fin["per_sec"].as_f64().unwrap();
    let secs = fin["secs"].as_f64().unwrap();
    eprintln!(
        "churn: {total} connections in {secs:.1} s ({per_sec:.0}/s); tcptop peak RSS {:.1} MiB \
         (VmHWM {:.1} MiB), CPU {cpu:.2} s ({:.1}% of a core)",
        peak_rss as f64 / 1024.0,
        hwm as f64 / 1024.0,
        100.0 * cpu / secs
    );
    assert!(
        rest.contains("dropped 0 events (ring buffer full), 0 connections (table full)"),
        "{rest}"
    );
    assert!(wrong.is_empty(), "inexact records: {wrong:#?}");
    assert_eq!(client, u64::from(total), "client-side CLOSED records");
    assert_eq!(server, u64::from(total), "server-side CLOSED records");
    if per_sec < f64::from(RATE) * 0.95 {
        eprintln!("note: the machine held only {per_sec:.0} connections/s, not {RATE}");
    }
}

/// Connections as fast as one process makes them (tcptop-testpeer
/// churn-self: ~19,000 a second here, two closed records each), with a
/// snapshot only every 5 s: the ring buffer (4 MiB, ~27,000 records) would
/// overflow between the reader's 1 s backstop polls if the kernel side did
/// not wake it as the ring fills (it asks how full the ring is only once
/// per 32 records a CPU submits). Every connection is reported closed on
/// both sides, and nothing is dropped.
#[test]
#[cfg_attr(not(tcptop_root), ignore = "needs root")]
fn max_rate_burst_wakes_the_reader() {
    common::require_root();
    let _g = common::serial();
    let ns = NetNs::new("maxburst");
    let addr = "127.0.0.1:40402";
    let (mut top, err) = start_top("5", "40402");
    let top_pid = top.id();
    let out = BufReader::new(top.stdout.take().unwrap());
    let tally = std::thread::spawn(move || {
        let mut closed = 0u64;
        for line in out.lines() {
            let v: Value = serde_json::from_str(&line.unwrap()).unwrap();
            if v["state"] == "CLOSED" {
                closed += 1;
            }
        }
        closed
    });
    let mut load = ns.peer(&["churn-self", "--listen", addr, "--secs", "3"]);
    let done = load.expect("churn-self");
    let conns = done["conns"].as_u64().unwrap();
    // SAFETY: signalling our own child.
    unsafe { libc::kill(top_pid as i32, libc::SIGTERM) };
    let st = top.wait().unwrap();
    assert!(st.success(), "{st}");
    let rest: Vec<String> = err.lines().map(Result::unwrap).collect();
    let rest = rest.join("\n");
    let closed = tally.join().unwrap();
    eprintln!(
        "max-rate burst: {conns} connections in 3 s ({:.0} closed records a second)",
        2.0 * conns as f64 / 3.0
    );
    assert!(
        rest.contains("dropped 0 events (ring buffer full), 0 connections (table full)"),
        "{rest}"
    );
    assert_eq!(closed, 2 * conns, "CLOSED records, both sides");
}
