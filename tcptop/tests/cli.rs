//! The command line as a user meets it: bad flags and missing privileges
//! give one clear message and an exit code, never a backtrace.
#![expect(
    clippy::unwrap_used,
    reason = "test and benchmark code: a failed unwrap fails the run"
)]

use std::process::Command;

const TCPTOP: &str = env!("CARGO_BIN_EXE_tcptop");

fn run(args: &[&str]) -> (i32, String) {
    let out = Command::new(TCPTOP).args(args).output().unwrap();
    let err = String::from_utf8(out.stderr).unwrap();
    (out.status.code().unwrap_or(-1), err)
}

#[test]
fn bad_flags_exit_2_with_clap_message() {
    for args in [
        &["--no-such-flag"][..],
        &["--interval", "abc"],
        &["--interval", "0"],
        &["--format", "xml"],
        &["--port", "70000"],
        &["--pid", "-3"],
        &["--iterations", "0"],
        &["--headless"],
        &[
            "--headless",
            "--batch",
            "--metrics-listen",
            "127.0.0.1:9911",
        ],
        &["--metrics-listen", "localhost:9911"],
        &["--metrics-level", "remote"],
        &[
            "--metrics-listen",
            "127.0.0.1:9911",
            "--metrics-max-series",
            "0",
        ],
    ] {
        let (code, err) = run(args);
        assert_eq!(code, 2, "{args:?}: {err}");
        assert!(err.starts_with("error:"), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{err}");
    }
}

#[test]
fn help_and_version() {
    let (code, _) = run(&["--version"]);
    assert_eq!(code, 0);
    let out = Command::new(TCPTOP).arg("--help").output().unwrap();
    let help = String::from_utf8(out.stdout).unwrap();
    assert!(
        help.contains("--batch") && help.contains("setcap"),
        "{help}"
    );
    assert!(
        help.contains("--headless") && help.contains("--metrics-listen <ADDR:PORT>"),
        "{help}"
    );
}

/// An address that cannot be listened on stops tcptop before anything is
/// loaded: one line naming it, exit 1 (as any user: it is bound first).
#[test]
fn metrics_address_in_use_is_one_message() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let (code, err) = run(&["--headless", "--metrics-listen", &addr]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.starts_with(&format!("tcptop: cannot listen for metrics on {addr}: ")),
        "{err}"
    );
    assert!(err.contains("choose another port"), "{err}");
    assert_eq!(err.lines().count(), 1, "one message: {err}");
}

/// Without privileges tcptop degrades instead of refusing: it runs on the
/// socket diagnostics, says so in one notice naming the setcap line, and
/// exits 0 after --iterations; `--source ebpf` keeps the full mode's error
/// (exit 1, the missing capabilities, the setcap line, one prefix). Needs
/// root to switch to an unprivileged user.
#[test]
fn unprivileged_user_degrades_or_gets_capability_message() {
    let as_nobody = |extra: &[&str]| {
        // SAFETY: geteuid has no preconditions.
        let mut cmd = if unsafe { libc::geteuid() } != 0 {
            Command::new(TCPTOP)
        } else {
            let mut c = Command::new("setpriv");
            c.args([
                "--reuid=65534",
                "--regid=65534",
                "--clear-groups",
                "--inh-caps=-all",
                TCPTOP,
            ]);
            c
        };
        let out = cmd
            .args(["--batch", "-n", "1", "--interval", "0.1"])
            .args(extra)
            .output()
            .unwrap();
        let err = String::from_utf8(out.stderr).unwrap();
        assert!(
            !err.contains("panicked") && !err.contains("backtrace"),
            "{err}"
        );
        (out.status.code(), err, out.stdout)
    };
    let (code, err, _) = as_nobody(&[]);
    assert_eq!(code, Some(0), "{err}");
    assert!(err.contains("tcptop: notice: unprivileged"), "{err}");
    assert!(
        err.contains("sudo setcap cap_bpf,cap_perfmon,cap_net_admin+ep "),
        "{err}"
    );

    let (code, err, stdout) = as_nobody(&["--source", "ebpf"]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("Missing: CAP_BPF, CAP_PERFMON."), "{err}");
    assert!(
        err.contains("sudo setcap cap_bpf,cap_perfmon,cap_net_admin+ep "),
        "{err}"
    );
    assert!(!err.contains("tcptop: tcptop"), "doubled prefix: {err}");
    assert!(stdout.is_empty());
}

/// A bad --btf file: one message naming the file, exit 1, nothing loaded.
#[test]
#[cfg_attr(not(tcptop_root), ignore = "needs root")]
fn bad_btf_file_is_a_clear_error() {
    // Privileges are checked first: without them the BTF is never read.
    // SAFETY: geteuid has no preconditions.
    assert_eq!(
        unsafe { libc::geteuid() },
        0,
        "built as root, run as another user: run the tests as root"
    );
    let (code, err) = run(&["--batch", "-n", "1", "--btf", "/nonexistent/vmlinux"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("\"/nonexistent/vmlinux\""), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    let (code, err) = run(&["--batch", "-n", "1", "--btf", "/proc/self/status"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("malformed kernel BTF"), "{err}");
    assert_eq!(err.lines().count(), 1, "one message: {err}");
}
