//! Taking data out: `--log FILE` (CSV appended every interval) and
//! `--format csv`, with real traffic; a log that cannot be opened or
//! written.

mod common;

use std::process::Command;
use std::time::Duration;

use common::{NetNs, Tcptop, tcptop};
use serde_json::Value;
use tcptop::output::{csv, record::Record};

/// What the CSV log holds is exactly what jsonl printed for the same
/// snapshots: same rows, same values (CSV parsed back with the documented
/// formula guard undone).
#[test]
#[cfg_attr(not(tcptop_root), ignore = "needs root")]
fn csv_log_matches_jsonl_with_real_traffic() {
    common::require_root();
    let _g = common::serial();
    let dir = std::env::temp_dir().join(format!("tcptop-log-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let log = dir.join("conns.csv");
    let _ = std::fs::remove_file(&log);
    let ns = NetNs::new("csvlog");
    let mut top = Tcptop::start(&["--port", "40201", "--log", log.to_str().unwrap()]);
    // A process name a spreadsheet would run as a formula.
    let mut srv = ns.peer(&[
        "server",
        "--listen",
        "127.0.0.1:40201",
        "--name",
        "=1+1",
        "--recv",
        "3000",
        "--send",
        "4000",
    ]);
    srv.expect("listening");
    let cli = ns.peer(&[
        "client",
        "--connect",
        "127.0.0.1:40201",
        "--name=-csv-cli",
        "--send",
        "3000",
        "--recv",
        "4000",
        "--hold-ms",
        "500",
    ]);
    cli.wait_ok();
    srv.wait_ok();
    top.pump(Duration::from_millis(600));
    let (records, _) = top.stop();
    let logged = csv::read(std::fs::File::open(&log).unwrap()).unwrap();
    let printed: Vec<Record> = records
        .iter()
        .map(|v: &Value| serde_json::from_value(v.clone()).unwrap())
        .collect();
    assert!(!printed.is_empty());
    assert_eq!(logged, printed);
    assert!(
        logged
            .iter()
            .any(|r| r.comm == "=1+1" && r.state == "CLOSED" && r.tx_bytes == 4000)
    );
    assert!(
        logged
            .iter()
            .any(|r| r.comm == "-csv-cli" && r.rx_bytes == 4000)
    );
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains(",'=1+1,") && text.contains(",'-csv-cli,"),
        "{text}"
    );
    assert_eq!(text.matches("ts,pid,comm").count(), 1);
    let _ = std::fs::remove_dir_all(&dir);
}

/// `--format csv` on stdout: one header, rows that parse back.
#[test]
#[cfg_attr(not(tcptop_root), ignore = "needs root")]
fn format_csv_on_stdout() {
    common::require_root();
    let _g = common::serial();
    let out = Command::new(tcptop())
        .args(["--batch", "-q", "-n", "2", "-i", "0.2", "--format", "csv"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.starts_with("ts,pid,comm,proto,local,remote,state,"),
        "{text}"
    );
    assert_eq!(text.matches("ts,pid,comm").count(), 1);
    csv::read(text.as_bytes()).unwrap();
}

/// A log that cannot be opened: one message, exit 1, before anything is
/// loaded. A log that fails while running (disk full: /dev/full): reported,
/// and monitoring goes on.
#[test]
#[cfg_attr(not(tcptop_root), ignore = "needs root")]
fn unusable_log_files() {
    common::require_root();
    let _g = common::serial();
    let out = Command::new(tcptop())
        .args(["--batch", "-n", "1", "--log", "/nonexistent-dir/log.csv"])
        .output()
        .unwrap();
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert_eq!(
        err.trim(),
        "tcptop: cannot open the log file \"/nonexistent-dir/log.csv\": No such file or directory (os error 2)"
    );
    assert!(out.stdout.is_empty());

    let out = Command::new(tcptop())
        .args(["--batch", "-n", "3", "-i", "0.2", "--log", "/dev/full"])
        .output()
        .unwrap();
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("log file \"/dev/full\": No space left on device"),
        "{err}"
    );
    assert_eq!(
        String::from_utf8(out.stdout)
            .unwrap()
            .matches("tcptop ")
            .count(),
        3,
        "all snapshots still printed"
    );
}

/// A process whose name carries terminal escape sequences: the text table,
/// JSON lines and CSV show the name escaped, never a raw control byte.
#[test]
#[cfg_attr(not(tcptop_root), ignore = "needs root")]
fn hostile_process_name_is_escaped_everywhere() {
    common::require_root();
    let _g = common::serial();
    let ns = NetNs::new("hostile");
    let evil = "\x1b[2J\x1b]0;x\x07ev";
    let dir = std::env::temp_dir().join(format!("tcptop-hostile-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let log = dir.join("h.csv");
    let _ = std::fs::remove_file(&log);
    let text = Command::new(tcptop())
        .args(["--batch", "-q", "-i", "0.3", "-n", "8", "--port", "40202"])
        .args(["--log", log.to_str().unwrap()])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let mut srv = ns.peer(&[
        "server",
        "--listen",
        "127.0.0.1:40202",
        &format!("--name={evil}"),
        "--recv",
        "10",
        "--send",
        "10",
    ]);
    srv.expect("listening");
    let cli = ns.peer(&[
        "client",
        "--connect",
        "127.0.0.1:40202",
        "--send",
        "10",
        "--recv",
        "10",
        "--hold-ms",
        "700",
    ]);
    cli.wait_ok();
    srv.wait_ok();
    let out = text.wait_with_output().unwrap();
    assert!(out.status.success());
    let shown = String::from_utf8(out.stdout).unwrap();
    assert!(shown.contains("\\x1b[2J\\x1b]0;x\\x07ev"), "{shown}");
    assert!(
        !shown.bytes().any(|b| b == 0x1b || b == 0x07),
        "raw control byte on stdout"
    );
    let logged = std::fs::read(&log).unwrap();
    assert!(
        !logged.iter().any(|&b| b == 0x1b || b == 0x07),
        "raw control byte in the log"
    );
    let recs = csv::read(logged.as_slice()).unwrap();
    assert!(recs.iter().any(|r| r.comm == "\\x1b[2J\\x1b]0;x\\x07ev"));
    let _ = std::fs::remove_dir_all(&dir);
}
