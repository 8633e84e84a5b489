//! Harness for root integration tests: a fresh network namespace per test,
//! the real tcptop binary in batch jsonl mode, and tcptop-testpeer processes
//! that move exactly known byte counts and report their kernel TCP_INFO.
#![expect(dead_code, reason = "each test binary uses a part of the harness")]
#![expect(
    clippy::unwrap_used,
    reason = "test code: a failed unwrap fails the test"
)]

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use serde_json::Value;

pub mod cgroup;
pub mod http;

/// Root tests load programs and count the kernel's loaded programs: run them
/// one at a time even when the harness runs tests in parallel.
static SERIAL: Mutex<()> = Mutex::new(());

pub fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// Root tests carry `#[cfg_attr(not(tcptop_root), ignore = "needs root")]`:
/// built by another user (tcptop's build script sets `tcptop_root` when
/// it runs as root), they are reported as ignored, never as passed. Built
/// as root and run as another user, they fail here rather than pass.
pub fn require_root() {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    assert!(
        root,
        "needs root (loads eBPF programs, creates network namespaces): these tests were \
         built as root; run them as root"
    );
}

/// The tcptop under test: the one cargo built with these tests, or the
/// binary `TCPTOP_TEST_BIN` names (scripts/test runs the exact-count tests
/// in the VMs on the static release binary that the packages ship).
pub fn tcptop() -> &'static str {
    static BIN: OnceLock<String> = OnceLock::new();
    BIN.get_or_init(|| match std::env::var("TCPTOP_TEST_BIN") {
        Ok(path) if !path.is_empty() => path,
        _ => env!("CARGO_BIN_EXE_tcptop").to_string(),
    })
}

/// The test peer (crate `tcptop-testpeer`): cargo names the binaries of
/// this package only (`CARGO_BIN_EXE_*`), so it is found where cargo puts
/// every binary of the workspace for this profile and target: beside
/// tcptop. `cargo test --workspace` builds it (the peer's own test needs
/// it); a test of this package alone runs whatever was built last.
pub fn peer_bin() -> &'static str {
    static PEER: OnceLock<String> = OnceLock::new();
    PEER.get_or_init(|| {
        let path = Path::new(env!("CARGO_BIN_EXE_tcptop")).with_file_name("tcptop-testpeer");
        assert!(
            path.is_file(),
            "the test peer is missing ({}): build it first with `cargo build -p \
             tcptop-testpeer` (with --release or --target as these tests were built)",
            path.display()
        );
        path.to_string_lossy().into_owned()
    })
}

/// A network namespace with `lo` up, deleted on drop.
pub struct NetNs {
    pub name: String,
}

impl NetNs {
    pub fn new(tag: &str) -> NetNs {
        let name = format!("tcptop-{tag}-{}", std::process::id());
        let _ = Command::new("ip")
            .args(["netns", "del", &name])
            .stderr(Stdio::null())
            .status();
        run(&["ip", "netns", "add", &name]);
        run(&["ip", "-n", &name, "link", "set", "lo", "up"]);
        NetNs { name }
    }

    /// Inode of the namespace, as tcptop reports it in `netns`.
    pub fn inode(&self) -> u64 {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(format!("/run/netns/{}", self.name))
            .unwrap()
            .ino()
    }

    /// Starts tcptop-testpeer inside the namespace.
    pub fn peer(&self, args: &[&str]) -> Peer {
        self.spawn(peer_bin(), args)
    }

    /// Starts `program` inside the namespace; it reports JSON lines with
    /// an `event` field on stdout, like the test peer.
    pub fn spawn(&self, program: &str, args: &[&str]) -> Peer {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name, program]).args(args);
        Peer::start(cmd)
    }

    /// Starts the test peer inside the namespace, in the control group
    /// whose `cgroup.procs` file is `procs` (a shell moves itself there,
    /// then enters the namespace: `ip netns exec` mounts a sysfs of its
    /// own, without the cgroup2 mount).
    pub fn peer_in_cgroup(&self, procs: &str, args: &[&str]) -> Peer {
        let script = format!("echo $$ > '{procs}' && exec ip netns exec \"$0\" \"$@\"");
        let mut cmd = Command::new("sh");
        cmd.args(["-c", &script, &self.name, peer_bin()]).args(args);
        Peer::start(cmd)
    }
}

impl Peer {
    fn start(mut cmd: Command) -> Peer {
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let lines = lines_of(child.stdout.take().unwrap());
        let stdin = child.stdin.take();
        Peer {
            child,
            lines,
            stdin,
        }
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

fn run(cmd: &[&str]) {
    let st = Command::new(cmd[0]).args(&cmd[1..]).status().unwrap();
    assert!(st.success(), "{cmd:?} failed");
}

fn lines_of(r: impl std::io::Read + Send + 'static) -> Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(r).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

pub struct Peer {
    pub child: Child,
    lines: Receiver<String>,
    stdin: Option<ChildStdin>,
}

/// A number field of a record (the test fails naming it if absent).
pub fn u(v: &Value, f: &str) -> u64 {
    v[f].as_u64()
        .unwrap_or_else(|| panic!("field {f} missing in {v}"))
}

/// The one CLOSED record among a connection's records (exactly one must
/// exist).
pub fn closed<'a>(recs: &[&'a Value]) -> &'a Value {
    let c: Vec<_> = recs.iter().filter(|r| r["state"] == "CLOSED").collect();
    assert_eq!(c.len(), 1, "want exactly one CLOSED record, got {recs:#?}");
    c[0]
}

impl Peer {
    /// The `local` address of this peer's socket in its next `event` line.
    pub fn local_at(&mut self, event: &str) -> String {
        let v = self.expect(event);
        v["local"]
            .as_str()
            .unwrap_or_else(|| panic!("no local address in {v}"))
            .to_string()
    }

    /// Next JSON line with this `event`, within 20 s.
    pub fn expect(&mut self, event: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = self
                .lines
                .recv_timeout(left)
                .unwrap_or_else(|_| panic!("peer did not report {event:?}"));
            let v: Value = serde_json::from_str(&line).unwrap();
            if v["event"] == event {
                return v;
            }
        }
    }

    /// Next JSON line with this `event` within `wait`, or None.
    pub fn try_expect(&mut self, event: &str, wait: Duration) -> Option<Value> {
        let deadline = Instant::now() + wait;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = self.lines.recv_timeout(left).ok()?;
            let v: Value = serde_json::from_str(&line).unwrap();
            if v["event"] == event {
                return Some(v);
            }
        }
    }

    pub fn poke(&mut self) {
        let s = self.stdin.as_mut().unwrap();
        s.write_all(b"go\n").unwrap();
        s.flush().unwrap();
    }

    pub fn pid(&self) -> u32 {
        // `ip netns exec` execs the peer: same pid.
        self.child.id()
    }

    pub fn wait_ok(mut self) {
        let st = self.child.wait().unwrap();
        assert!(st.success(), "peer failed: {st}");
    }
}

/// A failing test must not leave processes behind (they would hold the
/// harness's pipes open).
impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The tcptop binary in batch jsonl mode.
pub struct Tcptop {
    child: Child,
    lines: Receiver<String>,
    stderr: Receiver<String>,
    /// Lines of stderr [`Tcptop::wait_stderr`] took (given back by `stop`).
    stderr_seen: Vec<String>,
    pub records: Vec<Value>,
    /// The `tcptop: warning:` lines printed before `tcptop: attached`.
    pub warnings: Vec<String>,
}

pub const INTERVAL: &str = "0.2";

/// `TCPTOP_TEST_HOOKS=fentry|kprobe|tracepoint` runs the suite with that
/// hook set forced (scripts/test and the VM matrix run it once per set the
/// kernel has); unset, tcptop picks the best.
pub fn forced_hooks() -> Option<String> {
    std::env::var("TCPTOP_TEST_HOOKS")
        .ok()
        .filter(|s| !s.is_empty())
}

/// Whether the suite runs with `kind` of program refused
/// (`TCPTOP_TEST_REFUSE=iter,fentry,tp_btf,kprobe,cgroup,touch`: scripts/test runs
/// it so on every host, so that the fallbacks are tested where the kernel
/// allows everything).
pub fn refused(kind: &str) -> bool {
    std::env::var("TCPTOP_TEST_REFUSE").is_ok_and(|v| v.split(',').any(|k| k.trim() == kind))
}

/// The suite's `TCPTOP_TEST_REFUSE` with `kind` added: for a test that
/// needs a fallback whatever the host allows.
pub fn refusing(kind: &str) -> String {
    match std::env::var("TCPTOP_TEST_REFUSE") {
        Ok(v) if !v.trim().is_empty() => format!("{v},{kind}"),
        _ => kind.to_string(),
    }
}

/// tcptop's benchmark and test switches, read only by builds with debug
/// assertions or the `bench-switches` feature (the tests are built alike).
const SWITCHES: [&str; 6] = [
    "TCPTOP_BENCH_NOOP",
    "TCPTOP_BENCH_SKIP",
    "TCPTOP_TEST_REFUSE",
    "TCPTOP_TEST_SAY",
    "TCPTOP_TEST_TOUCH_GAP_MS",
    "TCPTOP_TEST_TOUCH_RING",
];

/// A switch asked for (in `env` or by the whole run) where tcptop would
/// ignore it fails the test here, saying why.
fn require_switches(env: &[(&str, &str)]) {
    let asked = SWITCHES
        .into_iter()
        .find(|s| env.iter().any(|(k, _)| k == s) || std::env::var_os(s).is_some());
    if let Some(switch) = asked
        && std::env::var_os("TCPTOP_TEST_BIN").is_some()
    {
        panic!("{switch} is ignored by the release binary under test (TCPTOP_TEST_BIN)");
    }
    if let Some(switch) = asked
        && !cfg!(any(debug_assertions, feature = "bench-switches"))
    {
        panic!(
            "{switch} is read only by builds with debug assertions or the bench-switches \
             feature: run these tests with `--features bench-switches`"
        );
    }
}

impl Tcptop {
    /// Starts tcptop and waits until its programs are attached.
    pub fn start(extra: &[&str]) -> Tcptop {
        Tcptop::start_with_interval(INTERVAL, extra)
    }

    /// As [`Tcptop::start`], with another snapshot interval (seconds).
    pub fn start_with_interval(interval: &str, extra: &[&str]) -> Tcptop {
        Tcptop::start_with_env(interval, extra, &[])
    }

    /// As [`Tcptop::start_with_interval`], with more environment variables.
    pub fn start_with_env(interval: &str, extra: &[&str], env: &[(&str, &str)]) -> Tcptop {
        require_switches(env);
        let mut cmd = Command::new(tcptop());
        cmd.envs(env.iter().copied());
        cmd.args(["--batch", "--format", "jsonl", "--interval", interval]);
        cmd.args(extra);
        Tcptop::launch(cmd)
    }

    /// Starts tcptop with exactly `args` (e.g. `--headless`), and waits
    /// until its programs are attached.
    pub fn start_raw(args: &[&str]) -> Tcptop {
        require_switches(&[]);
        let mut cmd = Command::new(tcptop());
        cmd.args(args);
        Tcptop::launch(cmd)
    }

    /// Runs `cmd` (tcptop, or a program that executes it, with its flags;
    /// `--hooks` is added when the run forces a hook set) and waits until
    /// tcptop's programs are attached.
    pub fn launch(mut cmd: Command) -> Tcptop {
        if let Some(set) = forced_hooks() {
            cmd.args(["--hooks", &set]);
        }
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let lines = lines_of(child.stdout.take().unwrap());
        let stderr = lines_of(child.stderr.take().unwrap());
        // Made first, so that a start that fails the checks below is
        // killed when the test fails (one left running kept its programs
        // attached and failed the next tests' checks for leftovers).
        let mut t = Tcptop {
            child,
            lines,
            stderr,
            stderr_seen: Vec::new(),
            records: Vec::new(),
            warnings: Vec::new(),
        };
        let first = loop {
            // A bound on a hang, not a measure of speed: a first start in
            // an emulated VM (two of them sharing two cores) parses the
            // kernel's BTF and verifies every program in software, and took
            // more than 30 s once.
            let line = t
                .stderr
                .recv_timeout(Duration::from_secs(120))
                .expect("tcptop printed nothing on stderr");
            if !line.starts_with("tcptop: warning:") && !line.starts_with("tcptop: notice:") {
                break line;
            }
            t.warnings.push(line);
        };
        // "attached" (eBPF) or "started" (the unprivileged mode).
        assert!(
            first.starts_with("tcptop: attached") || first.starts_with("tcptop: started"),
            "tcptop did not start: {first}"
        );
        t
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Collects records for `d`, and no longer: lines that arrive faster
    /// than they are parsed (5,000 a second in an emulated VM) wait in the
    /// channel for the next pump or for [`Tcptop::stop`]. (Reading on
    /// while lines were waiting never ended on Linux 5.10's VM, and the
    /// parsed records filled its memory.)
    pub fn pump(&mut self, d: Duration) {
        let deadline = Instant::now() + d;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            match self.lines.recv_timeout(left) {
                Ok(l) => self.records.push(serde_json::from_str(&l).unwrap()),
                Err(_) => break,
            }
        }
    }

    /// After tcptop exited: every line it wrote that is still waiting.
    fn drain(&mut self) {
        // The channel closes at the end of tcptop's output; the timeout
        // only guards against a descriptor some other process still holds.
        while let Ok(l) = self.lines.recv_timeout(Duration::from_secs(5)) {
            self.records.push(serde_json::from_str(&l).unwrap());
        }
    }

    /// Waits until a record matches `pred` (up to 10 s), returning it.
    pub fn wait_for(&mut self, pred: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(10);
        if let Some(v) = self.records.iter().find(|v| pred(v)) {
            return v.clone();
        }
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let Ok(l) = self.lines.recv_timeout(left) else {
                // What tcptop did say, so that a failure explains itself.
                let tail: Vec<String> = self
                    .records
                    .iter()
                    .rev()
                    .take(8)
                    .map(Value::to_string)
                    .collect();
                panic!(
                    "no matching tcptop record within 10 s; {} records, the last ones (newest first):\n{}",
                    self.records.len(),
                    tail.join("\n")
                );
            };
            let v: Value = serde_json::from_str(&l).unwrap();
            self.records.push(v.clone());
            if pred(&v) {
                return v;
            }
        }
    }

    /// The next line of stderr that `pred` accepts, within `wait` (None
    /// after that); the records written meanwhile are kept.
    pub fn wait_stderr(&mut self, wait: Duration, pred: impl Fn(&str) -> bool) -> Option<String> {
        let deadline = Instant::now() + wait;
        loop {
            while let Ok(l) = self.lines.try_recv() {
                self.records.push(serde_json::from_str(&l).unwrap());
            }
            let left = deadline.saturating_duration_since(Instant::now());
            // (Past the deadline: the lines already written, no waiting.)
            let line = if left.is_zero() {
                self.stderr.try_recv().ok()
            } else {
                let step = left.min(Duration::from_millis(50));
                self.stderr.recv_timeout(step).ok()
            };
            match line {
                Some(line) => {
                    self.stderr_seen.push(line.clone());
                    if pred(&line) {
                        return Some(line);
                    }
                }
                None if left.is_zero() => return None,
                None => {}
            }
        }
    }

    /// Sends `sig`, waits for a clean exit; every record.
    pub fn stop_with(mut self, sig: i32) -> Vec<Value> {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.child.id() as i32, sig) };
        let st = self.child.wait().unwrap();
        assert!(st.success(), "tcptop exited with {st}");
        self.drain();
        std::mem::take(&mut self.records)
    }

    /// SIGTERM, then the exit status and the rest of stderr.
    pub fn stop(mut self) -> (Vec<Value>, String) {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let st = self.child.wait().unwrap();
        self.drain();
        let mut err = std::mem::take(&mut self.stderr_seen);
        err.extend(self.stderr.try_iter());
        assert!(st.success(), "tcptop exited with {st}: {err:?}");
        (std::mem::take(&mut self.records), err.join("\n"))
    }
}

/// The hook set tcptop picks on this kernel (honouring TCPTOP_TEST_HOOKS),
/// read from the text header.
pub fn active_hooks() -> String {
    let mut cmd = Command::new(tcptop());
    cmd.args(["--batch", "-n", "1", "-i", "0.1", "-q"]);
    if let Some(set) = forced_hooks() {
        cmd.args(["--hooks", &set]);
    }
    let out = cmd.output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    text.split_whitespace()
        .skip_while(|w| *w != "hooks:")
        .nth(1)
        .unwrap_or_else(|| panic!("no hook set in {text}"))
        .to_string()
}

impl Drop for Tcptop {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Records of one connection, by local and remote endpoint strings.
pub fn of_conn<'a>(records: &'a [Value], local: &str, remote: &str) -> Vec<&'a Value> {
    records
        .iter()
        .filter(|r| r["local"] == local && r["remote"] == remote)
        .collect()
}

/// Names of tcptop's programs currently loaded in the kernel.
pub fn loaded_tcptop_programs() -> Vec<String> {
    // Kernel program names keep 15 characters.
    const OURS: [&str; 16] = [
        "tcptop_iter_con",
        "btf_sock_send_l",
        "btf_sock_recv_l",
        "btf_inet_sock_s",
        "btf_tcp_destroy",
        "tcptop_udp_",
        "sock_send_lengt",
        "sock_recv_lengt",
        "inet_sock_set_s",
        "tcp_destroy_soc",
        "fexit_tcp_",
        "kprobe_tcp_",
        "kretprobe_tcp_",
        "fexit_udp",
        "kprobe_udp",
        "kretprobe_udp",
    ];
    aya::programs::loaded_programs()
        .filter_map(Result::ok)
        .filter_map(|p| p.name_as_str().map(str::to_owned))
        .filter(|n| OURS.iter().any(|o| n.starts_with(o)))
        .collect()
}

/// The running kernel's (major, minor) version.
pub fn kernel_version() -> (u32, u32) {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
    let mut parts = release
        .trim()
        .split(|c: char| !c.is_ascii_digit())
        .map(|p| p.parse::<u32>().unwrap_or(0));
    (parts.next().unwrap_or(0), parts.next().unwrap_or(0))
}

/// The flags of each loaded map named `name` with `max_entries` entries.
pub fn map_flags(name: &str, max_entries: u32) -> Vec<u32> {
    aya::maps::loaded_maps()
        .filter_map(Result::ok)
        .filter(|m| m.name_as_str() == Some(name) && m.max_entries() == max_entries)
        .map(|m| m.map_flags())
        .collect()
}

/// Waits (up to 5 s) for the kernel to free tcptop's programs: a program
/// goes away an RCU grace period after its last file descriptor closes.
pub fn wait_no_programs() {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !loaded_tcptop_programs().is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A private tmux server (its own socket) with one pane, for driving the
/// interactive display like a user; killed on drop.
pub struct Tmux {
    socket: String,
}

impl Tmux {
    /// True if tmux is installed (scripts/setup installs it).
    pub fn available() -> bool {
        Command::new("tmux")
            .arg("-V")
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }

    /// Starts `cmd` (run by sh) in a `w` x `h` pane.
    pub fn start(tag: &str, w: u16, h: u16, cmd: &str) -> Tmux {
        let t = Tmux {
            socket: format!("tcptop-{tag}-{}", std::process::id()),
        };
        let st = t
            .cmd()
            .args(["new-session", "-d", "-s", "t", "-x"])
            .arg(w.to_string())
            .arg("-y")
            .arg(h.to_string())
            .args(["sh", "-c", cmd])
            .status()
            .unwrap();
        assert!(st.success(), "tmux did not start");
        t
    }

    fn cmd(&self) -> Command {
        let mut c = Command::new("tmux");
        c.args(["-L", &self.socket]);
        c
    }

    /// `tmux send-keys` with key names ("Enter", "Escape", "q").
    pub fn keys(&self, keys: &[&str]) {
        let st = self
            .cmd()
            .args(["send-keys", "-t", "t"])
            .args(keys)
            .status()
            .unwrap();
        assert!(st.success());
    }

    /// Types `text` literally, one key at a time.
    pub fn type_text(&self, text: &str) {
        let st = self
            .cmd()
            .args(["send-keys", "-t", "t", "-l", text])
            .status()
            .unwrap();
        assert!(st.success());
    }

    /// The pane's visible text.
    pub fn capture(&self) -> String {
        let out = self
            .cmd()
            .args(["capture-pane", "-p", "-t", "t"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// True while the program in the pane uses the alternate screen.
    pub fn alternate_screen(&self) -> bool {
        let out = self
            .cmd()
            .args(["display-message", "-p", "-t", "t", "#{alternate_on}"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim() == "1"
    }

    /// Polls the pane (up to 15 s) until `pred` holds; returns the screen.
    pub fn wait_for(&self, what: &str, pred: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let s = self.capture();
            if pred(&s) {
                return s;
            }
            assert!(Instant::now() < deadline, "{what}: not on screen:\n{s}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.cmd().arg("kill-server").status();
    }
}
