//! The test peer moves the byte counts it is told to (tcptop's kernel
//! tests compare tcptop's numbers with them), on loopback, no root needed.
//!
//! Also why this file exists at all: cargo builds a package's binary for
//! its own integration tests, so `cargo test --workspace` builds
//! `tcptop-testpeer` for tcptop's tests, which run it from beside the
//! tcptop binary.
#![expect(
    clippy::unwrap_used,
    reason = "helpers of a test: a step that fails fails the test"
)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

const PEER: &str = env!("CARGO_BIN_EXE_tcptop-testpeer");

/// Starts the peer with `args`, stdout piped.
fn start(args: &[&str]) -> Child {
    Command::new(PEER)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap()
}

/// The peer's JSON lines, once it has exited successfully (killed after
/// 30 s: a wrong count leaves one side waiting for bytes).
fn finish(mut child: Child) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("tcptop-testpeer did not finish within 30 s");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    assert!(status.success(), "tcptop-testpeer failed: {status}");
    let out = BufReader::new(child.stdout.take().unwrap());
    out.lines()
        .map(|l| serde_json::from_str(&l.unwrap()).unwrap())
        .collect()
}

/// The first line of a running peer: where it listens.
fn listening(child: &mut Child) -> String {
    let mut line = String::new();
    BufReader::new(child.stdout.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();
    let v: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(v["event"], "listening", "{line}");
    v["local"].as_str().unwrap().to_string()
}

fn event<'a>(lines: &'a [Value], name: &str) -> &'a Value {
    lines
        .iter()
        .find(|l| l["event"] == name)
        .unwrap_or_else(|| panic!("no {name:?} line in {lines:?}"))
}

#[test]
fn tcp_exchange_completes_both_ways() {
    let mut server = start(&[
        "server",
        "--listen",
        "127.0.0.1:0",
        "--conns",
        "2",
        "--recv",
        "1000",
        "--send",
        "2000",
    ]);
    let addr = listening(&mut server);
    let client = start(&[
        "client",
        "--connect",
        &addr,
        "--conns",
        "2",
        "--send",
        "1000",
        "--recv",
        "2000",
    ]);
    let client = finish(client);
    let server = finish(server);
    // Each side read exactly what the other sent, or it would still wait.
    assert_eq!(event(&client, "done")["remote"], addr);
    assert_eq!(
        event(&server, "done")["remote"],
        event(&client, "done")["local"]
    );
    assert_eq!(event(&server, "finished")["conns"], 2);
}

#[test]
fn udp_server_counts_what_the_client_sent() {
    let mut server = start(&[
        "udp-server",
        "--listen",
        "127.0.0.1:0",
        "--datagrams",
        "20",
        "--reply",
        "10",
    ]);
    let addr = listening(&mut server);
    let client = start(&[
        "udp-client",
        "--to",
        &addr,
        "--count",
        "20",
        "--size",
        "100",
        "--reply",
        "10",
    ]);
    let client = finish(client);
    let server = finish(server);
    let local = event(&client, "done")["local"].as_str().unwrap();
    let port = local.rsplit(':').next().unwrap();
    let peers = event(&server, "done")["peers"].as_object().unwrap();
    assert_eq!(peers.len(), 1, "{peers:?}");
    let (from, seen) = peers.iter().next().unwrap();
    assert!(from.ends_with(&format!(":{port}")), "{from} vs {local}");
    assert_eq!(seen["datagrams"], 20);
    assert_eq!(seen["bytes"], 2000);
}
