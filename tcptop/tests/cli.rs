//! The command line as a user meets it: bad flags and missing privileges
//! give one clear message and an exit code, never a backtrace.
#![allow(clippy::unwrap_used)]

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
}

/// Without privileges: exit 1, one paragraph naming the capabilities and
/// the setcap line. Needs root to switch to an unprivileged user.
#[test]
fn unprivileged_user_gets_capability_message() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        // Already unprivileged: run directly.
        let (code, err) = run(&["--batch", "-n", "1"]);
        assert_eq!(code, 1, "{err}");
        assert!(err.contains("CAP_BPF"), "{err}");
        return;
    }
    let out = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
            TCPTOP,
            "--batch",
            "-n",
            "1",
        ])
        .output()
        .unwrap();
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("Missing: CAP_BPF, CAP_PERFMON, CAP_NET_ADMIN"),
        "{err}"
    );
    assert!(
        err.contains("sudo setcap cap_bpf,cap_perfmon,cap_net_admin+ep "),
        "{err}"
    );
    assert!(
        !err.contains("panicked") && !err.contains("backtrace"),
        "{err}"
    );
    assert!(out.stdout.is_empty());
}

/// A bad --btf file: one message naming the file, exit 1, nothing loaded.
#[test]
fn bad_btf_file_is_a_clear_error() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!(
            "skipping bad_btf_file_is_a_clear_error: needs root (privileges are checked first)"
        );
        return;
    }
    let (code, err) = run(&["--batch", "-n", "1", "--btf", "/nonexistent/vmlinux"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("\"/nonexistent/vmlinux\""), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    let (code, err) = run(&["--batch", "-n", "1", "--btf", "/proc/self/status"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("malformed kernel BTF"), "{err}");
    assert_eq!(err.lines().count(), 1, "one message: {err}");
}
