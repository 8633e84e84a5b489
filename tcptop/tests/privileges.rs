//! Root integration tests: once its programs are attached, tcptop holds no
//! capability that reading its maps does not need, in every thread, with
//! no_new_privs set; with --user it runs as that user; and either way it
//! still counts a connection made afterwards to the byte.
#![expect(
    clippy::unwrap_used,
    reason = "test and benchmark code: a failed unwrap fails the run"
)]

mod common;

use std::fs;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{NetNs, Tcptop, closed, of_conn, u};

const CAP_BPF: u32 = 39;
const CLI_BYTES: u64 = 345_678;
const SRV_BYTES: u64 = 876_543;

/// The capabilities tcptop must keep on this kernel. Map reads through fds
/// it holds need none, except before Linux 5.19 when
/// kernel.unprivileged_bpf_disabled is set: then every bpf() call needs
/// CAP_BPF.
fn expected_caps() -> u64 {
    let release = fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
    let mut nums = release
        .trim()
        .split(|c: char| !c.is_ascii_digit())
        .map(|n| n.parse::<u32>().unwrap());
    let version = (nums.next().unwrap(), nums.next().unwrap());
    let disabled = fs::read_to_string("/proc/sys/kernel/unprivileged_bpf_disabled")
        .map(|s| s.trim() != "0")
        .unwrap_or(true);
    if disabled && version < (5, 19) {
        1 << CAP_BPF
    } else {
        0
    }
}

/// The value of a `Name:\tvalue` line of /proc/PID/status.
fn field<'a>(status: &'a str, name: &str) -> &'a str {
    status
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
        .unwrap_or_else(|| panic!("no {name} in {status}"))
        .trim()
}

fn hex(status: &str, name: &str) -> u64 {
    u64::from_str_radix(field(status, name), 16).unwrap()
}

/// The four ids of a `Uid:` or `Gid:` line.
fn ids(status: &str, name: &str) -> Vec<u32> {
    field(status, name)
        .split_whitespace()
        .map(|n| n.parse().unwrap())
        .collect()
}

/// uid and gid of a user, from the password database.
fn account(name: &str) -> (u32, u32) {
    let out = Command::new("id").args(["-u", name]).output().unwrap();
    let uid = String::from_utf8(out.stdout)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let out = Command::new("id").args(["-g", name]).output().unwrap();
    let gid = String::from_utf8(out.stdout)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    (uid, gid)
}

/// Checks every thread of tcptop (capabilities are per thread): only the
/// expected capabilities in the effective, permitted and bounding sets,
/// none inheritable or ambient, no_new_privs, and the user's ids.
fn assert_dropped(pid: u32, uid: u32, gid: u32) {
    let want = expected_caps();
    let tasks: Vec<_> = fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    // The main thread and the ring buffer's event thread, at least.
    assert!(tasks.len() >= 2, "{tasks:?}");
    for task in tasks {
        let st = fs::read_to_string(task.join("status")).unwrap();
        let at = task.display();
        for set in ["CapEff", "CapPrm", "CapBnd"] {
            assert_eq!(hex(&st, set), want, "{set} of {at}:\n{st}");
        }
        for set in ["CapInh", "CapAmb"] {
            assert_eq!(hex(&st, set), 0, "{set} of {at}:\n{st}");
        }
        assert_eq!(field(&st, "NoNewPrivs"), "1", "{at}:\n{st}");
        assert_eq!(ids(&st, "Uid"), [uid; 4], "{at}:\n{st}");
        assert_eq!(ids(&st, "Gid"), [gid; 4], "{at}:\n{st}");
        if uid != 0 {
            // Only the user's primary group: no supplementary ones kept.
            assert_eq!(field(&st, "Groups"), gid.to_string(), "{at}:\n{st}");
        }
    }
}

/// Starts tcptop with `extra` flags, checks what it dropped, then makes a
/// connection with exact byte counts and checks that tcptop counted both
/// ends exactly.
fn dropped_and_exact(tag: &str, port: u16, extra: &[&str], uid: u32, gid: u32) {
    let ns = NetNs::new(tag);
    let port_s = port.to_string();
    let mut args = vec!["--port", &port_s];
    args.extend_from_slice(extra);
    let mut top = Tcptop::start(&args);
    // "attached" is printed after the drop: check before any traffic.
    assert_dropped(top.pid(), uid, gid);
    let progs = prog_ids(top.pid());
    assert!(progs.len() >= 5, "{progs:?}");

    let addr = format!("127.0.0.1:{port}");
    let (cli_n, srv_n) = (CLI_BYTES.to_string(), SRV_BYTES.to_string());
    let mut srv = ns.peer(&[
        "server",
        "--listen",
        &addr,
        "--name",
        "tt-priv-srv",
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
        "tt-priv-cli",
        "--send",
        &cli_n,
        "--recv",
        &srv_n,
    ]);
    let local = cli.local_at("done");
    cli.expect("finished");
    cli.wait_ok();
    srv.expect("finished");
    srv.wait_ok();
    top.wait_for(|r| r["local"] == local.as_str() && r["state"] == "CLOSED");
    top.pump(Duration::from_millis(600));
    // Still dropped after a while of collecting.
    assert_dropped(top.pid(), uid, gid);
    let (records, _) = top.stop();

    let fin = closed(&of_conn(&records, &local, &addr));
    assert_eq!(
        (u(fin, "tx_bytes"), u(fin, "rx_bytes")),
        (CLI_BYTES, SRV_BYTES)
    );
    assert_eq!(fin["comm"], "tt-priv-cli");
    let fin = closed(&of_conn(&records, &addr, &local));
    assert_eq!(
        (u(fin, "tx_bytes"), u(fin, "rx_bytes")),
        (SRV_BYTES, CLI_BYTES)
    );
    assert_eq!(fin["comm"], "tt-priv-srv");

    // Exiting without privileges still detaches everything: its programs
    // are freed an RCU grace period after their last fd closes.
    let deadline = Instant::now() + Duration::from_secs(5);
    let left = loop {
        let left: Vec<u32> = aya::programs::loaded_programs()
            .filter_map(Result::ok)
            .map(|p| p.id())
            .filter(|id| progs.contains(id))
            .collect();
        if left.is_empty() || Instant::now() > deadline {
            break left;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(left, Vec::<u32>::new(), "programs still loaded");
}

/// IDs of the eBPF programs a process holds (fds to `anon_inode:bpf-prog`).
/// Only this process's: other tcptop instances may run meanwhile.
fn prog_ids(pid: u32) -> Vec<u32> {
    let mut ids = Vec::new();
    for fd in fs::read_dir(format!("/proc/{pid}/fd")).unwrap() {
        let fd = fd.unwrap();
        let is_prog =
            fs::read_link(fd.path()).is_ok_and(|l| l.to_string_lossy() == "anon_inode:bpf-prog");
        let info = fs::read_to_string(format!(
            "/proc/{pid}/fdinfo/{}",
            fd.file_name().to_string_lossy()
        ));
        if let (true, Ok(info)) = (is_prog, info) {
            ids.push(field(&info, "prog_id").parse().unwrap());
        }
    }
    ids
}

#[test]
#[cfg_attr(not(tcptop_root), ignore = "needs root")]
fn capabilities_dropped_and_counting_exact() {
    common::require_root();
    let _g = common::serial();
    dropped_and_exact("priv-caps", 40201, &[], 0, 0);
}

#[test]
#[cfg_attr(not(tcptop_root), ignore = "needs root")]
fn runs_as_user_and_counting_exact() {
    common::require_root();
    let _g = common::serial();
    let (uid, gid) = account("nobody");
    dropped_and_exact("priv-user", 40202, &["--user", "nobody"], uid, gid);
}

/// An unknown --user: exit 1 with one line, no backtrace, no output.
#[test]
#[cfg_attr(not(tcptop_root), ignore = "needs root")]
fn unknown_user_is_one_line_exit_1() {
    common::require_root();
    let _g = common::serial();
    let out = Command::new(common::tcptop())
        .args(["--batch", "-n", "1", "--user", "nosuchuser"])
        .env("RUST_BACKTRACE", "1")
        .output()
        .unwrap();
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert_eq!(
        err, "tcptop: --user: there is no user named \"nosuchuser\"\n",
        "{err}"
    );
    assert!(out.stdout.is_empty());
}
