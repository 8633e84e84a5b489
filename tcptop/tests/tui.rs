//! End to end: the real binary's interactive display in a tmux pane, as
//! root, watching real loopback traffic in a fresh network namespace; the
//! user filters with `/` and quits with `q`, and the terminal is restored.

mod common;

use common::{NetNs, Tmux, forced_hooks, tcptop};

#[test]
#[cfg_attr(not(tcptop_root), ignore = "needs root")]
fn interactive_display_shows_filters_and_quits() {
    common::require_root();
    if !Tmux::available() {
        assert!(
            std::env::var_os("CI").is_none(),
            "tmux is missing: run scripts/setup"
        );
        eprintln!("skipping interactive_display_shows_filters_and_quits: tmux is not installed");
        return;
    }
    let _serial = common::serial();
    let ns = NetNs::new("tui");
    let port = 47_123;
    let addr = format!("127.0.0.1:{port}");
    let mut srv = ns.peer(&[
        "server",
        "--listen",
        &addr,
        "--name",
        "tt-tuisrv",
        "--recv",
        "300000",
        "--send",
        "200000",
    ]);
    srv.expect("listening");

    let hooks = forced_hooks()
        .map(|h| format!(" --hooks {h}"))
        .unwrap_or_default();
    let tmux = Tmux::start(
        "tui",
        160,
        40,
        &format!(
            "{} --interval 0.3 --no-dns{hooks}; echo \"tcptop exited: $?\"; exec sh",
            tcptop()
        ),
    );
    tmux.wait_for("the header", |s| s.contains("hooks:"));
    assert!(tmux.alternate_screen());

    let mut cli = ns.peer(&[
        "client",
        "--connect",
        &addr,
        "--name",
        "tt-tuicli",
        "--send",
        "300000",
        "--recv",
        "200000",
        "--wait-stdin",
    ]);
    cli.expect("connected");
    cli.poke();
    cli.expect("done");
    srv.expect("done");

    // Both ends, by process name, with the server's port.
    let s = tmux.wait_for("both peers with their totals", |s| {
        s.contains("tt-tuicli") && s.contains("tt-tuisrv") && s.contains("293.0 KiB")
    });
    assert!(s.contains(&format!(":{port}")), "{s}");

    // `/` filters as the user types.
    tmux.type_text("/tt-tuicli");
    let s = tmux.wait_for("the filtered table", |s| {
        s.contains("/tt-tuicli") && !s.contains("tt-tuisrv")
    });
    let rows: Vec<&str> = s.lines().filter(|l| l.contains("tt-tuicli")).collect();
    // One table row and the filter line.
    assert_eq!(rows.len(), 2, "{s}");
    assert!(rows[0].contains(&format!("127.0.0.1:{port}")), "{s}");
    tmux.keys(&["Enter"]);
    tmux.wait_for("the kept filter", |s| s.contains("filter: tt-tuicli"));

    tmux.keys(&["q"]);
    let s = tmux.wait_for("the shell again", |s| s.contains("tcptop exited: 0"));
    assert!(!tmux.alternate_screen(), "alternate screen left:\n{s}");
    assert!(!s.contains("hooks:"), "the display is gone:\n{s}");

    cli.poke();
    cli.wait_ok();
    srv.wait_ok();
}

#[test]
#[cfg_attr(not(tcptop_root), ignore = "needs root")]
fn sigterm_restores_the_terminal() {
    common::require_root();
    assert!(
        Tmux::available(),
        "tmux is missing (scripts/setup installs it)"
    );
    let _serial = common::serial();
    let pidfile = std::env::temp_dir().join(format!("tcptop-tui-{}.pid", std::process::id()));
    let _ = std::fs::remove_file(&pidfile);
    let tmux = Tmux::start(
        "tuiterm",
        100,
        30,
        &format!(
            "sh -c 'echo $$ > {}; exec {} --interval 0.5 --no-dns'; echo \"tcptop exited: $?\"; exec sh",
            pidfile.display(),
            tcptop()
        ),
    );
    tmux.wait_for("the header", |s| s.contains("hooks:"));
    assert!(tmux.alternate_screen());
    let pid: i32 = std::fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    // SAFETY: signalling the tcptop we started.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    let s = tmux.wait_for("the shell again", |s| s.contains("tcptop exited: 0"));
    assert!(!tmux.alternate_screen(), "alternate screen left:\n{s}");
    let _ = std::fs::remove_file(&pidfile);
}
