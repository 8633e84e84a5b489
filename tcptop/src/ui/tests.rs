//! Headless tests of the interactive display: scripted snapshots and keys,
//! drawn on ratatui's TestBackend, compared with committed insta snapshots
//! (`cargo insta review` to update them). No sleeps: time is given
//! explicitly, or tokio's paused clock drives the event loop.

use std::collections::VecDeque;
use std::io;
use std::time::{Duration, Instant};

use crossterm::event::{Event, KeyCode, KeyEvent, KeyModifiers};
use ratatui::Terminal;
use ratatui::backend::TestBackend;
use ratatui::buffer::Buffer;
use ratatui::style::{Color, Modifier};

use super::{App, Settings};
use crate::model::ProcInfo;
use crate::model::{ConnKey, ConnSample, ConnState, Counters, Drops, Proto, Snapshot};
use crate::platform::{DataSource, SourceError};
use crate::table::Filter;

/// A data source that replays scripted snapshots (then empty ones).
pub struct ScriptedSource {
    pub script: VecDeque<Result<Snapshot, SourceError>>,
}

impl DataSource for ScriptedSource {
    fn hooks(&self) -> &str {
        "scripted"
    }

    fn collect(&mut self) -> Result<Snapshot, SourceError> {
        self.script
            .pop_front()
            .unwrap_or_else(|| Ok(Snapshot::default()))
    }
}

fn conn(
    pid: u32,
    comm: &str,
    local: &str,
    remote: &str,
    state: ConnState,
    rx: u64,
    tx: u64,
) -> ConnSample {
    ConnSample {
        key: ConnKey {
            proto: Proto::Tcp,
            local: local.parse().unwrap(),
            remote: remote.parse().unwrap(),
            netns: 4026531840,
        },
        id: u64::from(pid) << 16 | u64::from(local.len() as u16),
        pid,
        comm: comm.into(),
        state,
        counters: Counters {
            rx_bytes: rx,
            tx_bytes: tx,
            rx_packets: rx / 1000,
            tx_packets: tx / 1000,
            retrans: pid as u64 % 3,
        },
        rtt_us: Some(200 + pid % 1000 * 10),
        cgroup_id: 0,
        active: None,
        workload: None,
    }
}

/// Five connections; `t` scales their counters (t-th second of traffic).
fn scene(t: u64) -> Vec<ConnSample> {
    use ConnState::*;
    vec![
        conn(
            4242,
            "curl",
            "10.0.0.2:51000",
            "93.184.216.34:443",
            Established,
            t * 3_000_000,
            t * 20_000,
        ),
        conn(
            812,
            "sshd",
            "10.0.0.2:22",
            "10.0.0.9:60022",
            Established,
            t * 4_000,
            t * 90_000,
        ),
        conn(
            3100,
            "postgres",
            "127.0.0.1:5432",
            "127.0.0.1:41234",
            Established,
            t * 500,
            t * 500,
        ),
        conn(
            3100,
            "postgres",
            "127.0.0.1:5432",
            "127.0.0.1:41236",
            CloseWait,
            0,
            0,
        ),
        conn(
            666,
            "evil\x1b[2Jname",
            "[2001:db8::1]:40000",
            "[2001:db8::2]:443",
            Established,
            t * 150_000_000,
            t * 10,
        ),
    ]
}

fn snap(live: Vec<ConnSample>) -> Snapshot {
    Snapshot {
        live,
        ..Default::default()
    }
}

fn settings() -> Settings {
    Settings {
        hooks: "scripted".into(),
        interval: Duration::from_secs(1),
        bits: false,
        filter: Filter::default(),
        notice: None,
        max_conns: 65_536,
    }
}

fn fake_proc(pid: u32) -> ProcInfo {
    ProcInfo {
        cmdline: Some(format!("fake-{pid} --title \x1b]0;pwned\x07 -v")),
        user: Some("alice\x1b[31m".into()),
    }
}

struct Harness {
    app: App,
    term: Terminal<TestBackend>,
    t0: Instant,
}

impl Harness {
    fn new(w: u16, h: u16) -> Harness {
        let t0 = Instant::now();
        Harness {
            app: App::new(settings(), t0).with_proc_lookup(Box::new(fake_proc)),
            term: Terminal::new(TestBackend::new(w, h)).unwrap(),
            t0,
        }
    }

    /// Feeds scene(1..=n) one second apart.
    fn with_scene(mut self, n: u64) -> Harness {
        for t in 1..=n {
            self.feed(t, snap(scene(t)));
        }
        self
    }

    fn feed(&mut self, sec: u64, s: Snapshot) {
        let now = self.t0 + Duration::from_secs(sec);
        self.app.on_snapshot(s, now);
    }

    fn keys(&mut self, keys: &str) {
        for c in keys.chars() {
            self.code(KeyCode::Char(c));
        }
    }

    fn code(&mut self, code: KeyCode) {
        self.app.on_key(KeyEvent::new(code, KeyModifiers::NONE));
    }

    fn draw(&mut self) -> String {
        let app = &mut self.app;
        self.term.draw(|f| app.draw(f)).unwrap();
        let text = screen(self.term.backend().buffer());
        assert!(!text.contains('\x1b'), "raw escape on screen:\n{text}");
        text
    }

    fn buffer(&self) -> &Buffer {
        self.term.backend().buffer()
    }
}

/// The screen as plain lines (trailing spaces trimmed).
fn screen(b: &Buffer) -> String {
    let w = b.area.width as usize;
    let mut out = String::new();
    for line in b.content.chunks(w) {
        let s: String = line.iter().map(|c| c.symbol()).collect();
        out.push_str(s.trim_end());
        out.push('\n');
    }
    out
}

/// Row index of the first screen line containing `needle`.
fn line_of(b: &Buffer, needle: &str) -> u16 {
    screen(b)
        .lines()
        .position(|l| l.contains(needle))
        .unwrap_or_else(|| panic!("{needle:?} not on screen")) as u16
}

#[test]
fn default_view() {
    let mut h = Harness::new(140, 14).with_scene(2);
    insta::assert_snapshot!(h.draw());
    // The busiest connection first, and it is selected.
    let b = h.buffer();
    let y = line_of(b, "evil");
    assert_eq!(y, 4);
    assert!(b[(0, y)].modifier.contains(Modifier::REVERSED));
    // Rates are coloured by magnitude.
    let x = screen(b)
        .lines()
        .nth(y as usize)
        .unwrap()
        .find("143.1 MiB/s")
        .unwrap() as u16;
    assert_eq!(b[(x + 2, y)].fg, Color::Red);
}

/// A source that shows less than it could says so on a fourth header
/// line (escaped like any text from outside), and the table moves down.
#[test]
fn notice_in_the_header() {
    let t0 = Instant::now();
    let mut h = Harness {
        app: App::new(
            Settings {
                notice: Some("unprivileged (socket diagnostics): no UDP\x1b[31m".into()),
                ..settings()
            },
            t0,
        )
        .with_proc_lookup(Box::new(fake_proc)),
        term: Terminal::new(TestBackend::new(140, 14)).unwrap(),
        t0,
    }
    .with_scene(2);
    let text = h.draw();
    let lines: Vec<&str> = text.lines().collect();
    assert!(
        lines[3].starts_with("unprivileged (socket diagnostics): no UDP\\x1b[31m"),
        "{text}"
    );
    assert_eq!(line_of(h.buffer(), "evil"), 5, "{text}");
}

/// Connections whose owners' control groups are known: a WORKLOAD column
/// (pod, else container, else unit, else the group's last part; escaped),
/// grouping by workload on `g`, Enter on a group filters to it, the
/// detail pane shows the group and what it names, and the live filter
/// finds a unit.
#[test]
fn workload_column_grouping_and_detail() {
    use std::sync::Arc;
    let group = |cgroup: &str, unit: Option<&str>, container: Option<&str>, pod: Option<&str>| {
        Some(Arc::new(crate::model::Workload {
            cgroup: cgroup.into(),
            unit: unit.map(str::to_string),
            container: container.map(str::to_string),
            pod: pod.map(str::to_string),
        }))
    };
    let scene_w = |t: u64| {
        let mut s = scene(t);
        s[0].workload = group(
            "/user.slice/user-1000.slice/session-2.scope",
            Some("session-2.scope"),
            None,
            None,
        );
        s[1].workload = group(
            "/system.slice/sshd.service",
            Some("sshd.service"),
            None,
            None,
        );
        s[2].workload = group(
            "/system.slice/postgresql.service",
            Some("postgresql.service"),
            None,
            None,
        );
        s[3].workload = s[2].workload.clone();
        s[4].workload = group(
            "/kubepods.slice/kubepods-pod1.slice/cri-containerd-0123.scope",
            Some("cri-containerd-0123.scope"),
            Some("0123456789ab"),
            Some("shop/cart\x1b[31m"),
        );
        s
    };
    let mut h = Harness::new(160, 14);
    for t in 1..=2 {
        h.feed(t, snap(scene_w(t)));
    }
    let s = h.draw();
    insta::assert_snapshot!("workload_column", s);
    assert!(s.contains("WORKLOAD"), "{s}");
    assert!(!s.contains('\x1b'), "{s}");
    h.keys("gg");
    let g = h.draw();
    insta::assert_snapshot!("group_workload", g);
    assert!(
        g.contains("group: workload") && g.contains("lines: 4"),
        "{g}"
    );
    // Enter on a workload's line lists its connections.
    h.code(KeyCode::End);
    h.code(KeyCode::Enter);
    let e = h.draw();
    assert!(
        e.contains("group: connection") && e.contains("filter: "),
        "{e}"
    );
    h.code(KeyCode::Esc);
    // The live filter finds a unit.
    h.keys("/sshd.serv");
    let f = h.draw();
    assert!(f.contains("1 shown"), "{f}");
    h.code(KeyCode::Esc);
    // The busiest connection (the pod's) in the detail pane.
    h.code(KeyCode::Home);
    h.code(KeyCode::Enter);
    let d = h.draw();
    assert!(
        d.contains("/kubepods.slice/kubepods-pod1.slice/cri-containerd-0123.scope"),
        "{d}"
    );
    assert!(
        d.contains("container 0123456789ab  pod shop/cart\\x1b[31m"),
        "{d}"
    );
}

#[test]
fn waiting_for_first_snapshot() {
    let mut h = Harness::new(100, 8);
    insta::assert_snapshot!(h.draw());
}

#[test]
fn sorting_moves_and_reverses() {
    let mut h = Harness::new(140, 12).with_scene(2);
    // From the default (RX/s+TX/s) six steps left: PROCESS, A to Z.
    h.keys("<<<<<<");
    insta::assert_snapshot!("sort_process", h.draw());
    h.keys("r");
    insta::assert_snapshot!("sort_process_reversed", h.draw());
    // Right past the end wraps around to PID.
    h.keys(">>>>>>>>>>>>>");
    let s = h.draw();
    assert!(s.contains("sort: PID ▼"), "numbers: biggest first\n{s}");
    assert!(s.contains("PID▼"), "{s}");
}

#[test]
fn ties_are_stable() {
    // Two idle connections with equal numbers keep their order frame to frame.
    let mut h = Harness::new(140, 12);
    let idle = |port: u16| {
        conn(
            9,
            "idle",
            &format!("127.0.0.1:{port}"),
            "127.0.0.1:80",
            ConnState::Established,
            0,
            0,
        )
    };
    let mut first = None;
    for t in 1..=5 {
        let mut live = vec![idle(1001), idle(1002), idle(1003)];
        if t % 2 == 0 {
            live.reverse();
        }
        h.feed(t, snap(live));
        let s = h.draw();
        let order: Vec<usize> = ["1001", "1002", "1003"]
            .iter()
            .map(|p| s.find(&format!("127.0.0.1:{p}")).unwrap())
            .collect();
        assert!(order.windows(2).all(|w| w[0] < w[1]), "{s}");
        first.get_or_insert(s.clone());
        assert_eq!(first.as_deref(), Some(s.as_str()));
    }
}

#[test]
fn live_filter() {
    let mut h = Harness::new(140, 12).with_scene(2);
    h.keys("/443");
    insta::assert_snapshot!("filter_typing", h.draw());
    h.code(KeyCode::Enter);
    h.keys("q"); // not typed into the filter any more: quits
    assert!(h.app.should_quit());
    let mut h = Harness::new(140, 12).with_scene(2);
    h.keys("/POSTGRES");
    h.code(KeyCode::Enter);
    let s = h.draw();
    assert_eq!(s.matches("postgres").count(), 2, "{s}");
    h.keys("/");
    h.code(KeyCode::Backspace);
    h.code(KeyCode::Esc);
    let s = h.draw();
    assert!(
        s.contains("curl") && s.contains("q quit"),
        "Esc clears:\n{s}"
    );
    h.keys("/close_wait");
    let s = h.draw();
    assert!(s.contains("41236") && !s.contains("41234"), "{s}");
    h.keys("/");
    h.code(KeyCode::Esc);
    h.keys("/no such thing");
    insta::assert_snapshot!("filter_no_match", h.draw());
}

#[test]
fn pause_freezes_display_while_collecting() {
    let mut h = Harness::new(140, 12).with_scene(2);
    h.keys("p");
    let paused = h.draw();
    insta::assert_snapshot!("paused", paused);
    h.feed(3, snap(scene(30)));
    assert_eq!(h.draw(), paused, "frozen while paused");
    h.keys("p");
    let resumed = h.draw();
    assert!(!resumed.contains("PAUSED"));
    assert_ne!(
        resumed,
        paused.replace("   PAUSED", ""),
        "new data after resume"
    );
    assert!(resumed.contains("4.0 GiB"), "{resumed}");
}

#[test]
fn help_overlay() {
    let mut h = Harness::new(100, 24).with_scene(2);
    h.keys("?");
    insta::assert_snapshot!(h.draw());
    h.code(KeyCode::Down);
    assert!(!h.draw().contains(" keys "), "any key closes help");
}

#[test]
fn detail_pane() {
    let mut h = Harness::new(110, 30).with_scene(1);
    for t in 2..=40 {
        // Varying load so the sparklines have a shape.
        let mut s = scene(t);
        s[0].counters.rx_bytes = (1..=t).map(|i| (i % 7) * 100_000).sum();
        s[0].rtt_us = Some(300 + (t as u32 % 5) * 100);
        h.feed(t, snap(s));
    }
    h.code(KeyCode::Down);
    h.code(KeyCode::Enter);
    let s = h.draw();
    insta::assert_snapshot!(s);
    assert!(s.contains("fake-4242 --title \\x1b]0;pwned\\x07 -v"), "{s}");
    assert!(s.contains("user alice\\x1b[31m"), "{s}");
    // Moving the selection moves the pane to the next connection.
    h.code(KeyCode::Down);
    assert!(h.draw().contains("10.0.0.2:22 → 10.0.0.9:60022"));
    h.code(KeyCode::Esc);
    assert!(!h.draw().contains("Esc closes"));
}

#[test]
fn grouping_by_process_and_remote() {
    let mut h = Harness::new(140, 12).with_scene(2);
    h.keys("g");
    insta::assert_snapshot!("group_process", h.draw());
    h.keys("gg");
    insta::assert_snapshot!("group_remote", h.draw());
    h.keys("g");
    assert!(h.draw().contains("group: connection"));
    // Enter on a process group lists its connections.
    h.keys("g");
    h.code(KeyCode::End);
    h.code(KeyCode::Enter);
    let s = h.draw();
    assert!(
        s.contains("group: connection") && s.contains("filter: 3100"),
        "{s}"
    );
}

#[test]
fn narrow_terminal() {
    let mut h = Harness::new(80, 24).with_scene(2);
    let s = h.draw();
    insta::assert_snapshot!(s);
    for col in ["PID", "PROCESS", "REMOTE", "RX/s", "TX/s"] {
        assert!(s.lines().nth(3).unwrap().contains(col), "{col} kept:\n{s}");
    }
}

#[test]
fn tiny_terminal_does_not_panic() {
    for (w, h) in [(1, 1), (10, 3), (20, 5), (40, 6)] {
        let mut h = Harness::new(w, h).with_scene(2);
        h.keys("?");
        h.draw();
        h.code(KeyCode::Esc);
        h.code(KeyCode::Enter);
        h.draw();
        h.code(KeyCode::PageDown);
        h.draw();
    }
}

#[test]
fn closed_rows_dimmed_then_gone() {
    let mut h = Harness::new(140, 12).with_scene(1);
    let mut live = scene(2);
    let gone = live.remove(1);
    let mut closed = gone.clone();
    closed.counters.tx_bytes += 1000;
    h.app.on_snapshot(
        Snapshot {
            live,
            closed: vec![closed],
            drops: Drops::default(),
            partial: false,
            standing: Vec::new(),
        },
        h.t0 + Duration::from_secs(2),
    );
    let s = h.draw();
    insta::assert_snapshot!("closed_dimmed", s);
    let y = line_of(h.buffer(), "sshd");
    let cell = &h.buffer()[(0, y)];
    assert!(cell.modifier.contains(Modifier::DIM), "{cell:?}");
    assert_eq!(cell.fg, Color::DarkGray);
    // Still there 4.9 s later, with its final counters; gone at 5 s.
    h.app.on_tick(h.t0 + Duration::from_millis(6900));
    assert!(h.draw().contains("sshd"));
    h.app.on_tick(h.t0 + Duration::from_millis(7000));
    assert!(!h.draw().contains("sshd"));
}

#[test]
fn drops_in_warning_colour() {
    let mut h = Harness::new(140, 8);
    let mut s = snap(scene(1));
    s.drops = Drops {
        events: 3,
        conns: 1,
        evicted: 0,
    };
    h.app.on_snapshot(s, h.t0);
    let text = h.draw();
    assert!(text.contains("dropped: 3 events, 1 conns"), "{text}");
    let y = line_of(h.buffer(), "dropped");
    let x = text
        .lines()
        .nth(y as usize)
        .unwrap()
        .find("dropped")
        .unwrap() as u16;
    assert_eq!(h.buffer()[(x, y)].bg, Color::Red);
}

/// From the first connection the kernel's full table could not track, the
/// footer says so and names the flag, over a start-up warning.
#[test]
fn table_full_warning_in_footer() {
    let mut h = Harness::new(160, 8);
    h.app.set_status(Some("warning: a start-up problem".into()));
    h.app.on_snapshot(snap(scene(1)), h.t0);
    let text = h.draw();
    assert!(
        text.contains("a start-up problem") && !text.contains("--max-conns"),
        "{text}"
    );
    let mut s = snap(scene(2));
    s.drops.conns = 7;
    h.app.on_snapshot(s, h.t0 + Duration::from_secs(1));
    let text = h.draw();
    let footer = text.lines().last().unwrap();
    assert!(
        footer.contains(
            "connection table full: 7 connections not tracked; \
             restart with a larger --max-conns (now 65536)"
        ),
        "{text}"
    );
}

#[test]
fn selection_follows_connection() {
    let mut h = Harness::new(140, 12).with_scene(2);
    h.code(KeyCode::Down); // curl, second busiest
    h.draw();
    // sshd becomes the busiest: curl moves, the selection goes with it.
    let mut s = scene(3);
    s[1].counters.tx_bytes = 10_000_000_000;
    h.feed(3, snap(s));
    let text = h.draw();
    let y = line_of(h.buffer(), "curl");
    assert!(
        h.buffer()[(0, y)].modifier.contains(Modifier::REVERSED),
        "{text}"
    );
    assert_ne!(y, line_of(h.buffer(), "sshd"));
    // Home / End / PageDown.
    h.code(KeyCode::End);
    h.draw();
    let y = line_of(h.buffer(), "41236");
    assert!(h.buffer()[(0, y)].modifier.contains(Modifier::REVERSED));
}

#[test]
fn bits_flag() {
    let mut h = Harness::new(140, 10).with_scene(2);
    h.keys("b");
    let s = h.draw();
    assert!(s.contains("Gbit/s") && s.contains("Mbit/s"), "{s}");
}

/// Keys delivered by the paused tokio clock at the given offsets.
fn scripted_keys(
    keys: Vec<(u64, KeyEvent)>,
) -> impl futures_util::Stream<Item = io::Result<Event>> + Unpin {
    Box::pin(futures_util::stream::unfold(
        (tokio::time::Instant::now(), keys.into_iter()),
        |(start, mut it)| async move {
            let (ms, key) = it.next()?;
            tokio::time::sleep_until(start + Duration::from_millis(ms)).await;
            Some((Ok(Event::Key(key)), (start, it)))
        },
    ))
}

fn key(c: char) -> KeyEvent {
    KeyEvent::new(KeyCode::Char(c), KeyModifiers::NONE)
}

#[tokio::test(start_paused = true)]
async fn event_loop_quits_on_q_and_ctrl_c() {
    for quit in [
        key('q'),
        KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL),
    ] {
        let mut term = Terminal::new(TestBackend::new(120, 10)).unwrap();
        let mut app = App::new(settings(), tokio::time::Instant::now().into_std());
        let mut source = ScriptedSource {
            script: (1..=10).map(|t| Ok(snap(scene(t)))).collect(),
        };
        let keys = scripted_keys(vec![
            (1210, key('/')),
            (1220, key('c')),
            (1230, key('u')),
            (1240, KeyEvent::new(KeyCode::Enter, KeyModifiers::NONE)),
            (2225, quit),
        ]);
        super::event::run(
            &mut term,
            &mut app,
            &mut source,
            keys,
            std::future::pending(),
            None,
        )
        .await
        .unwrap();
        let s = screen(term.backend().buffer());
        assert!(s.contains("filter: cu"), "{s}");
        assert!(s.contains("curl") && !s.contains("sshd"), "{s}");
        // Three collections (0 s, 1 s, 2 s): data and rendering were both live.
        assert_eq!(source.script.len(), 7);
    }
}

#[tokio::test(start_paused = true)]
async fn event_loop_stops_on_shutdown_and_end_of_input() {
    let mut term = Terminal::new(TestBackend::new(120, 10)).unwrap();
    let mut app = App::new(settings(), tokio::time::Instant::now().into_std());
    let mut source = ScriptedSource {
        script: VecDeque::new(),
    };
    let shutdown = tokio::time::sleep(Duration::from_secs(3));
    super::event::run(
        &mut term,
        &mut app,
        &mut source,
        futures_util::stream::pending(),
        shutdown,
        None,
    )
    .await
    .unwrap();
    super::event::run(
        &mut term,
        &mut app,
        &mut source,
        futures_util::stream::empty(),
        std::future::pending(),
        None,
    )
    .await
    .unwrap();
}

#[tokio::test(start_paused = true)]
async fn collector_error_ends_the_loop_with_its_message() {
    let mut term = Terminal::new(TestBackend::new(120, 10)).unwrap();
    let mut app = App::new(settings(), tokio::time::Instant::now().into_std());
    let mut source = ScriptedSource {
        script: VecDeque::from([
            Ok(snap(scene(1))),
            Ok(snap(scene(2))),
            Err(SourceError::Failed(
                "cannot read the connection map: Bad file descriptor (os error 9)".into(),
            )),
        ]),
    };
    let err = super::event::run(
        &mut term,
        &mut app,
        &mut source,
        futures_util::stream::pending(),
        std::future::pending(),
        None,
    )
    .await
    .unwrap_err();
    let last_frame = screen(term.backend().buffer());
    insta::assert_snapshot!(format!("{last_frame}---\ntcptop: {err}"));
}

/// `--log` failing while running (disk full): the message is shown in the
/// footer, escaped, the display keeps working, and success clears it.
#[test]
fn log_write_error_in_status_line() {
    let mut h = Harness::new(100, 8).with_scene(1);
    h.app.set_status(Some(
        "log file \"/dev/full\": No space left on device (os error 28)".into(),
    ));
    let s = h.draw();
    assert!(
        s.lines()
            .last()
            .unwrap_or("")
            .contains("No space left on device"),
        "{s}"
    );
    insta::assert_snapshot!(s);
    h.app.set_status(None);
    let s = h.draw();
    assert!(s.contains("quit"), "{s}");
}

/// What `--log` writes: the latest snapshot's rows, a closed connection
/// once (not again while it lingers dimmed on screen).
#[test]
fn snapshot_rows_log_closed_connections_once() {
    let mut h = Harness::new(100, 8).with_scene(2);
    let n = h.app.snapshot_rows().len();
    assert!(n > 0);
    let mut closing = scene(3);
    let gone = closing.remove(0);
    let mut s = snap(closing);
    s.closed.push(gone.clone());
    h.feed(3, s);
    let rows = h.app.snapshot_rows();
    assert_eq!(rows.len(), n);
    assert_eq!(rows.iter().filter(|r| r.is_closed()).count(), 1);
    let mut later = scene(4);
    later.retain(|c| c.key != gone.key);
    h.feed(4, snap(later));
    let rows = h.app.snapshot_rows();
    assert_eq!(rows.iter().filter(|r| r.is_closed()).count(), 0);
    assert_eq!(rows.len(), n - 1);
}

/// --metrics-listen with the display: every snapshot reaches the metrics,
/// paused or not, closed connections counted once though they linger.
#[test]
fn metrics_are_fed_every_snapshot_paused_or_not() {
    let metrics = crate::metrics::Metrics::new(
        crate::metrics::Options {
            level: crate::metrics::Level::Process,
            max_series: 100,
            top_remotes: 10,
        },
        "scripted",
        Filter::default(),
    );
    let shared = metrics.shared();
    let t0 = Instant::now();
    let mut h = Harness {
        app: App::new(settings(), t0)
            .with_proc_lookup(Box::new(fake_proc))
            .with_metrics(Some(metrics)),
        term: Terminal::new(TestBackend::new(100, 8)).unwrap(),
        t0,
    };
    let curl_tx = |_: &Harness| {
        let e = shared.current();
        e.series
            .iter()
            .find(|s| s.labels.iter().any(|(k, v)| *k == "comm" && v == "curl"))
            .map(|s| (s.totals.tx_bytes, s.totals.closed))
    };
    h.feed(1, snap(scene(1)));
    assert_eq!(curl_tx(&h), Some((20_000, 0)));
    h.keys("p");
    h.feed(2, snap(scene(2)));
    assert_eq!(curl_tx(&h), Some((40_000, 0)), "paused: still fed");
    let mut closing = scene(3);
    let gone = closing.remove(0);
    let mut s = snap(closing);
    s.closed.push(gone);
    h.feed(3, s);
    h.feed(4, snap(scene(4).split_off(1)));
    assert_eq!(
        curl_tx(&h),
        Some((60_000, 1)),
        "closed once, lingering or not"
    );
    assert_eq!(shared.current().snapshots, 4);
}

/// `w` cycles the rate window; the header says which one is in use.
#[test]
fn rate_window_key() {
    let mut h = Harness::new(140, 8).with_scene(3);
    assert!(h.draw().contains("rates: interval"));
    h.keys("w");
    assert!(h.draw().contains("rates: 2s"));
    h.keys("www");
    assert!(h.draw().contains("rates: interval"));
}

// Host and port names. The fake resolver answers at once on the resolver's
// worker threads; `settle_names` draws and polls until every lookup the
// screen asked for has come back.

/// A fake reverse DNS: names for some of `scene`'s addresses.
fn fake_dns(ip: std::net::IpAddr) -> Option<String> {
    match ip.to_string().as_str() {
        "93.184.216.34" => Some("www.example.org.".into()),
        "10.0.0.9" => Some("bastion.lan".into()),
        "127.0.0.1" => Some("localhost".into()),
        "2001:db8::2" => Some("evil\x1b[2J\x1b]0;pwned\x07.example".into()),
        _ => None,
    }
}

/// How long a fake lookup (a thread and a match) may take before a test
/// calls it lost: a bound on a hang, generous for a loaded machine (it
/// once took over 5 s with two builds and the test threads on 2 cores).
const NAMES_BOUND: Duration = Duration::from_secs(60);

fn fake_resolver() -> crate::names::Resolver {
    crate::names::Resolver::new(Default::default(), std::sync::Arc::new(fake_dns))
}

/// A fixed port table, whatever /etc/services says on this machine.
fn fake_services() -> crate::names::Services {
    crate::names::Services::parse("ssh 22/tcp\nhttps 443/tcp\npostgresql 5432/tcp\n")
}

impl Harness {
    /// Names on (`dns`, `ports`), from the fakes.
    fn with_names(mut self, dns: bool, ports: bool) -> Harness {
        self.app = self
            .app
            .with_resolver(fake_resolver())
            .with_services(fake_services())
            .show_names(dns, ports);
        self
    }

    /// Draws and takes finished lookups (waiting for the workers'
    /// results, never sleeping) until none is outstanding; the last frame.
    fn settle_names(&mut self) -> String {
        loop {
            let s = self.draw();
            self.app.poll_names();
            if self.app.names_pending() == 0 {
                return self.draw();
            }
            assert!(
                self.app.wait_names(NAMES_BOUND).is_some(),
                "lookups never finished:\n{s}"
            );
        }
    }
}

#[test]
fn host_names_shown() {
    let mut h = Harness::new(140, 12).with_scene(2).with_names(true, false);
    let s = h.settle_names();
    insta::assert_snapshot!(s);
    assert!(s.contains("www.example.org:443"), "{s}");
    assert!(
        s.contains("bastion.lan:60022") && s.contains("localhost:41234"),
        "{s}"
    );
    // Local addresses keep their numbers; so does an address without a name.
    assert!(
        s.contains("10.0.0.2:51000") && s.contains("[2001:db8::1]:40000"),
        "{s}"
    );
    // The live filter finds the names on display.
    h.keys("/bastion");
    let f = h.draw();
    assert!(f.contains("sshd") && !f.contains("curl"), "{f}");
    h.code(KeyCode::Esc);
    // `n` turns them off and on again, live.
    h.keys("n");
    let off = h.draw();
    assert!(
        off.contains("93.184.216.34:443") && !off.contains("example.org"),
        "{off}"
    );
    h.keys("/bastion");
    assert!(
        h.draw().contains("no connections match"),
        "names off: not found"
    );
    h.code(KeyCode::Esc);
    h.keys("n");
    assert!(h.draw().contains("www.example.org:443"));
    // Grouped by remote host: the names alone.
    h.keys("ggg");
    let g = h.settle_names();
    assert!(
        g.contains("www.example.org ") && g.contains("localhost "),
        "{g}"
    );
}

#[test]
fn detail_pane_shows_host_name() {
    let mut h = Harness::new(110, 30).with_scene(2).with_names(true, false);
    h.settle_names();
    h.code(KeyCode::Down); // curl → 93.184.216.34
    h.code(KeyCode::Enter);
    let s = h.settle_names();
    insta::assert_snapshot!(s);
    assert!(s.contains("host      www.example.org"), "{s}");
    // Numbers stay in the endpoints line.
    assert!(s.contains("10.0.0.2:51000 → 93.184.216.34:443"), "{s}");
    h.code(KeyCode::Up); // evil → 2001:db8::2, a hostile name
    let s = h.draw();
    assert!(
        s.contains("host      evil\\x1b[2J\\x1b]0;pwned\\x07.example"),
        "{s}"
    );
    // A remote address without a name.
    h.code(KeyCode::Esc);
    h.app.on_snapshot(
        snap(vec![conn(
            7,
            "nameless",
            "10.0.0.2:40000",
            "192.0.2.7:9999",
            ConnState::Established,
            1_000_000_000,
            0,
        )]),
        h.t0 + Duration::from_secs(3),
    );
    h.code(KeyCode::Home);
    h.code(KeyCode::Enter);
    let s = h.settle_names();
    assert!(s.contains("host      (no name)"), "{s}");
    assert!(s.contains("192.0.2.7:9999"), "{s}");
}

#[test]
fn hostile_dns_name_escaped() {
    let mut h = Harness::new(140, 12).with_scene(2).with_names(true, true);
    // `draw` also asserts that no raw ESC reaches the screen.
    let s = h.settle_names();
    insta::assert_snapshot!(s);
    assert!(
        s.contains("evil\\x1b[2J\\x1b]0;pwned\\x07.example:https"),
        "{s}"
    );
}

#[test]
fn port_names_on_and_off() {
    let mut h = Harness::new(140, 12).with_scene(2).with_names(false, true);
    let s = h.draw();
    insta::assert_snapshot!("port_names_on", s);
    assert!(
        s.contains("93.184.216.34:https") && s.contains("[2001:db8::2]:https"),
        "{s}"
    );
    assert!(
        s.contains("10.0.0.2:ssh") && s.contains("127.0.0.1:postgresql"),
        "{s}"
    );
    // Ports without a name keep their number.
    assert!(
        s.contains("10.0.0.2:51000") && s.contains("127.0.0.1:41234"),
        "{s}"
    );
    // The live filter finds port names (local or remote).
    // ("postgresql": not in the process name "postgres")
    h.keys("/postgresql");
    h.code(KeyCode::Enter);
    let f = h.draw();
    assert_eq!(f.matches("postgresql").count(), 3, "2 rows + filter:\n{f}");
    h.code(KeyCode::Esc);
    h.keys("/ssh");
    h.code(KeyCode::Enter);
    let f = h.draw();
    assert!(f.contains("sshd") && !f.contains("curl"), "{f}");
    h.code(KeyCode::Esc);
    h.keys("s");
    let off = h.draw();
    insta::assert_snapshot!("port_names_off", off);
    assert!(
        off.contains("93.184.216.34:443") && !off.contains("https"),
        "{off}"
    );
    h.keys("/https");
    assert!(h.draw().contains("no connections match"));
}

#[test]
fn names_arriving_mark_the_display_dirty() {
    let mut h = Harness::new(140, 12).with_scene(2).with_names(true, false);
    h.draw();
    h.app.take_dirty();
    while !h.app.poll_names() {
        let changed = h.app.wait_names(NAMES_BOUND);
        assert!(changed.is_some(), "no name arrived");
        if changed == Some(true) {
            break;
        }
    }
    assert!(h.app.take_dirty(), "a new name redraws");
    // Names off: lookups that finish change nothing on screen.
    let mut h = Harness::new(140, 12).with_scene(2).with_names(true, false);
    h.draw();
    h.keys("n");
    h.app.take_dirty();
    while h.app.names_pending() > 0 {
        assert!(!h.app.poll_names());
        // That poll may have taken the last one: nothing left to wait for.
        if h.app.names_pending() == 0 {
            break;
        }
        let changed = h.app.wait_names(NAMES_BOUND);
        assert_eq!(
            changed,
            Some(false),
            "lookups never finished, or changed the screen"
        );
    }
    assert!(!h.app.take_dirty());
}

/// A resolver that blocks until the test ends never holds up the loop:
/// data, keys and frames go on, addresses stay numeric.
#[tokio::test(start_paused = true)]
async fn event_loop_never_waits_for_dns() {
    let (release, gate) = std::sync::mpsc::channel::<()>();
    let gate = std::sync::Mutex::new(gate);
    let blocking = crate::names::Resolver::new(
        Default::default(),
        std::sync::Arc::new(move |_| {
            let _ = gate.lock().map(|g| g.recv());
            Some("late.example".into())
        }),
    );
    let mut term = Terminal::new(TestBackend::new(140, 12)).unwrap();
    let mut app = App::new(settings(), tokio::time::Instant::now().into_std())
        .with_resolver(blocking)
        .show_names(true, false);
    let mut source = ScriptedSource {
        script: (1..=10).map(|t| Ok(snap(scene(t)))).collect(),
    };
    let keys = scripted_keys(vec![(1210, key('/')), (1220, key('c')), (2225, key('q'))]);
    super::event::run(
        &mut term,
        &mut app,
        &mut source,
        keys,
        std::future::pending(),
        None,
    )
    .await
    .unwrap();
    let s = screen(term.backend().buffer());
    assert!(s.contains("/c") && s.contains("93.184.216.34:443"), "{s}");
    assert_eq!(source.script.len(), 7);
    assert!(app.names_pending() > 0);
    drop(release);
}

/// A start-up warning from the data source (e.g. the UDP programs could not attach)
/// is shown in the status line, not written under the display.
#[tokio::test(start_paused = true)]
async fn source_warning_in_status_line() {
    struct Warned(ScriptedSource, Vec<String>);
    impl DataSource for Warned {
        fn hooks(&self) -> &str {
            self.0.hooks()
        }
        fn collect(&mut self) -> Result<Snapshot, SourceError> {
            self.0.collect()
        }
        fn warnings(&self) -> &[String] {
            &self.1
        }
    }
    let mut term = Terminal::new(TestBackend::new(100, 8)).unwrap();
    let mut app = App::new(settings(), Instant::now());
    let mut source = Warned(
        ScriptedSource {
            script: (1..=3).map(|t| Ok(snap(scene(t)))).collect(),
        },
        vec!["no cgroup v2 mount found".into()],
    );
    let keys = scripted_keys(vec![(1500, key('q'))]);
    super::event::run(
        &mut term,
        &mut app,
        &mut source,
        keys,
        std::future::pending(),
        None,
    )
    .await
    .unwrap();
    let s = screen(term.backend().buffer());
    assert!(
        s.lines()
            .last()
            .unwrap_or("")
            .contains("warning: no cgroup v2 mount found"),
        "{s}"
    );
}

/// A connection line is 16 bytes, as is what the view sorts: the sorted
/// list becomes the lines in its own memory (at 200,000 connections, 3.2
/// MB once instead of two lists beside the rows).
#[test]
fn lines_fit_where_the_sorted_rows_were() {
    use super::{Line, RowSrc};
    use crate::table::Row;
    use std::mem::{align_of, size_of};
    assert_eq!(size_of::<Line>(), 16);
    assert_eq!(size_of::<(&Row, RowSrc)>(), size_of::<Line>());
    assert_eq!(align_of::<(&Row, RowSrc)>(), align_of::<Line>());
}

/// A snapshot that changes nothing on screen does not redraw it; one that
/// moves a counter, the drop counts, or any snapshot while the detail pane
/// (with its ages) is open does.
#[test]
fn only_snapshots_that_change_the_screen_redraw() {
    let mut h = Harness::new(140, 12).with_scene(2);
    h.draw();
    // The same counters twice: the rates fall to zero (a change), then
    // stay there (none).
    h.feed(3, snap(scene(2)));
    assert!(h.app.take_dirty(), "rates fell to zero: redrawn");
    h.feed(4, snap(scene(2)));
    assert!(!h.app.take_dirty(), "nothing moved: not redrawn");
    let before = h.draw();
    h.feed(5, snap(scene(2)));
    assert!(!h.app.take_dirty());
    assert_eq!(h.draw(), before, "the frame not redrawn is the frame");
    // Counters moved.
    h.feed(6, snap(scene(3)));
    assert!(h.app.take_dirty(), "bytes moved: redrawn");
    h.feed(7, snap(scene(3)));
    h.app.take_dirty();
    h.feed(8, snap(scene(3)));
    assert!(!h.app.take_dirty());
    // Drops counted, nothing else.
    let mut s = snap(scene(3));
    s.drops.events = 7;
    h.feed(9, s);
    assert!(h.app.take_dirty(), "a drop: redrawn");
    assert!(h.draw().contains("dropped: 7 events"));
    // The detail pane shows ages: every snapshot redraws.
    h.code(KeyCode::Enter);
    h.app.take_dirty();
    let mut s = snap(scene(3));
    s.drops.events = 7;
    h.feed(10, s);
    assert!(h.app.take_dirty(), "detail pane open: redrawn");
}
