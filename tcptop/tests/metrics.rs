//! Root integration tests of `--metrics-listen`: a real Prometheus server
//! scraping tcptop with the deploy/ scrape config, promtool on real
//! scrapes at every level, 100 concurrent scrapers (and stalled ones)
//! against a collecting tcptop, the systemd unit's capabilities, and a
//! port below 1024 bound before the privilege drop. Prometheus and promtool
//! come from Debian's `prometheus` package (scripts/setup installs it):
//! without them these tests fail, they never pass.

#![expect(
    clippy::unwrap_used,
    reason = "test and benchmark code: a failed unwrap fails the run"
)]

mod common;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::cgroup::Groups;
use common::http;
use common::{NetNs, Tcptop};
use serde_json::Value;

const CLI_BYTES: u64 = 123_456;
const SRV_BYTES: u64 = 654_321;
/// A process name with a quote, a backslash, a newline and braces.
const HOSTILE: &str = "tt\"a\\b\n{c}";
/// The same, as tcptop writes untrusted names (and so as Prometheus
/// stores the label).
const HOSTILE_LABEL: &str = r#"tt"a\\b\x0a{c}"#;

fn deploy(file: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../deploy")
        .join(file)
}

/// A tool from Debian's prometheus package: its absence fails the test.
fn require_tool(name: &str) {
    let ok = Command::new(name)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        ok,
        "`{name}` is not installed: run scripts/setup (it installs Debian's prometheus \
         package, which has prometheus and promtool)"
    );
}

/// A loopback port nobody listens on now.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A sample: name, labels (unescaped), value.
type Sample = (String, Vec<(String, String)>, f64);

/// One sample line of a scrape (None for comments).
fn parse_sample(line: &str) -> Option<Sample> {
    if line.starts_with('#') || line.is_empty() {
        return None;
    }
    let (name_end, mut rest) = match line.find('{') {
        Some(i) => (i, &line[i + 1..]),
        None => {
            let i = line.find(' ')?;
            (i, &line[i..])
        }
    };
    let name = line[..name_end].to_string();
    let mut labels = Vec::new();
    if line.as_bytes()[name_end] == b'{' {
        loop {
            if let Some(r) = rest.strip_prefix('}') {
                rest = r;
                break;
            }
            rest = rest.strip_prefix(',').unwrap_or(rest);
            let eq = rest.find("=\"")?;
            let key = rest[..eq].to_string();
            let mut value = String::new();
            let mut chars = rest[eq + 2..].char_indices();
            let end = loop {
                let (i, c) = chars.next()?;
                match c {
                    '\\' => match chars.next()?.1 {
                        'n' => value.push('\n'),
                        c => value.push(c),
                    },
                    '"' => break i,
                    c => value.push(c),
                }
            };
            rest = &rest[eq + 2 + end + 1..];
            labels.push((key, value));
        }
    }
    let value = rest.split_whitespace().next()?.parse().ok()?;
    Some((name, labels, value))
}

/// Sum of `metric` by the value of its label `by`, from a scrape.
fn sum_by(body: &str, metric: &str, by: &str) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    for (name, labels, v) in body.lines().filter_map(parse_sample) {
        if name == metric
            && let Some((_, key)) = labels.iter().find(|(k, _)| k == by)
        {
            *out.entry(key.clone()).or_insert(0.0) += v;
        }
    }
    out
}

fn scrape(addr: &str, accept: Option<&str>) -> http::Response {
    let r = http::get(addr, "/metrics", accept).unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    r
}

/// Scrapes until `pred` holds (up to 20 s); the last body.
fn scrape_until(addr: &str, what: &str, pred: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let body = scrape(addr, None).text().to_string();
        if pred(&body) {
            return body;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: not in the scrape:\n{body}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Known traffic in `ns` on `addr`: a server (in the control group
/// `server_procs`, if given) answering two clients, one of them with a
/// hostile name; every connection closed when this returns.
fn traffic(ns: &NetNs, addr: &str, server_procs: Option<&str>) {
    let (cli_n, srv_n) = (CLI_BYTES.to_string(), SRV_BYTES.to_string());
    let srv_args = [
        "server",
        "--listen",
        addr,
        "--recv",
        &cli_n,
        "--send",
        &srv_n,
        "--conns",
        "2",
        "--name",
        "tt-prom-srv",
    ];
    let mut srv = match server_procs {
        Some(procs) => ns.peer_in_cgroup(procs, &srv_args),
        None => ns.peer(&srv_args),
    };
    srv.expect("listening");
    for name in ["tt-prom-cli", HOSTILE] {
        let cli = ns.peer(&[
            "client",
            "--connect",
            addr,
            "--send",
            &cli_n,
            "--recv",
            &srv_n,
            "--name",
            name,
        ]);
        cli.wait_ok();
    }
    srv.wait_ok();
}

/// What the traffic above makes, by comm: (sent, received, closed).
fn expected() -> BTreeMap<String, (f64, f64, f64)> {
    let (c, s) = (CLI_BYTES as f64, SRV_BYTES as f64);
    BTreeMap::from([
        ("tt-prom-srv".to_string(), (2.0 * s, 2.0 * c, 2.0)),
        ("tt-prom-cli".to_string(), (c, s, 1.0)),
        (HOSTILE_LABEL.to_string(), (c, s, 1.0)),
    ])
}

/// (sent, received, closed) by comm in a scrape.
fn seen(body: &str) -> BTreeMap<String, (f64, f64, f64)> {
    let sent = sum_by(body, "tcptop_sent_bytes_total", "comm");
    let recv = sum_by(body, "tcptop_received_bytes_total", "comm");
    let closed = sum_by(body, "tcptop_connections_closed_total", "comm");
    sent.iter()
        .filter(|(k, _)| k.starts_with("tt"))
        .map(|(k, v)| {
            let r = recv.get(k).copied().unwrap_or(0.0);
            let c = closed.get(k).copied().unwrap_or(0.0);
            (k.clone(), (*v, r, c))
        })
        .collect()
}

/// A Prometheus server on loopback scraping `target` with
/// deploy/prometheus.yml (a 1 s interval); killed and its data removed on
/// drop.
struct Prometheus {
    child: Child,
    dir: PathBuf,
    addr: String,
}

impl Prometheus {
    fn start(target: &str) -> Prometheus {
        require_tool("prometheus");
        let dir = std::env::temp_dir().join(format!("tcptop-prometheus-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let mut config = std::fs::read_to_string(deploy("prometheus.yml")).unwrap();
        for (from, to) in [
            ("scrape_interval: 15s", "scrape_interval: 1s".to_string()),
            ("scrape_timeout: 10s", "scrape_timeout: 1s".to_string()),
            ("\"127.0.0.1:9911\"", format!("\"{target}\"")),
        ] {
            assert_eq!(
                config.matches(from).count(),
                1,
                "deploy/prometheus.yml no longer has `{from}` once: update this test"
            );
            config = config.replace(from, &to);
        }
        let config_file = dir.join("prometheus.yml");
        std::fs::write(&config_file, config).unwrap();
        let addr = format!("127.0.0.1:{}", free_port());
        let log = std::fs::File::create(dir.join("log")).unwrap();
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config_file.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .arg("--log.level=warn")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        let mut p = Prometheus { child, dir, addr };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if http::get(&p.addr, "/-/ready", None).is_ok_and(|r| r.status == 200) {
                return p;
            }
            if let Ok(Some(st)) = p.child.try_wait() {
                panic!("prometheus exited ({st}):\n{}", p.log());
            }
            assert!(
                Instant::now() < deadline,
                "prometheus not ready in 30 s:\n{}",
                p.log()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("log")).unwrap_or_default()
    }

    /// An instant query through the HTTP API: the whole answer.
    fn query(&self, expr: &str) -> Value {
        let path = format!("/api/v1/query?query={}", http::encode_query(expr));
        let r = http::get(&self.addr, &path, None).unwrap();
        serde_json::from_slice(&r.body).unwrap()
    }

    /// The vector `expr` gives, as label `by` → value.
    fn by(&self, expr: &str, by: &str) -> BTreeMap<String, f64> {
        let v = self.query(expr);
        assert_eq!(v["status"], "success", "{expr}: {v}");
        v["data"]["result"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| {
                (
                    s["metric"][by].as_str().unwrap_or("").to_string(),
                    s["value"][1].as_str().unwrap().parse::<f64>().unwrap(),
                )
            })
            .collect()
    }

    /// Polls (up to 30 s) until `check` holds; `check` says what it saw.
    fn wait_for(&self, what: &str, check: impl Fn(&Prometheus) -> Result<(), String>) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match check(self) {
                Ok(()) => return,
                Err(saw) => assert!(Instant::now() < deadline, "{what}: {saw}\n{}", self.log()),
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Prometheus scrapes a headless tcptop with deploy/prometheus.yml;
/// queries through its HTTP API give exactly the known bytes per process
/// name (a hostile one included) and the service's workload; every query
/// of the Grafana dashboard is valid PromQL.
#[test]
#[cfg_attr(not(tcptop_root), ignore = "needs root")]
fn prometheus_sees_exact_bytes_by_comm_and_workload() {
    common::require_root();
    require_tool("prometheus");
    let _g = common::serial();
    let svc = "/system.slice/tcptop-metrics-test.service";
    let mut groups = Groups::new();
    let svc_procs = groups.make(svc);
    let ns = NetNs::new("prom");
    let addr = "127.0.0.1:40471";
    let metrics = format!("127.0.0.1:{}", free_port());
    let top = Tcptop::start_raw(&[
        "--headless",
        "--metrics-listen",
        &metrics,
        "--interval",
        "0.2",
        "--port",
        "40471",
    ]);
    let prom = Prometheus::start(&metrics);
    prom.wait_for("tcptop's target is up", |p| {
        let up = p.by(r#"up{job="tcptop"}"#, "job");
        (up.get("tcptop") == Some(&1.0))
            .then_some(())
            .ok_or(format!("up: {up:?}"))
    });

    traffic(&ns, addr, Some(&svc_procs));
    let want = expected();
    prom.wait_for("exact bytes by comm", |p| {
        let sel = r#"{job="tcptop", comm=~"tt.*"}"#;
        let sent = p.by(
            &format!("sum by (comm) (tcptop_sent_bytes_total{sel})"),
            "comm",
        );
        let recv = p.by(
            &format!("sum by (comm) (tcptop_received_bytes_total{sel})"),
            "comm",
        );
        let closed = p.by(
            &format!("sum by (comm) (tcptop_connections_closed_total{sel})"),
            "comm",
        );
        let got: BTreeMap<String, (f64, f64, f64)> = sent
            .iter()
            .map(|(k, v)| {
                let r = recv.get(k).copied().unwrap_or(-1.0);
                let c = closed.get(k).copied().unwrap_or(-1.0);
                (k.clone(), (*v, r, c))
            })
            .collect();
        (got == want)
            .then_some(())
            .ok_or(format!("{got:?}, want {want:?}"))
    });
    // The server ran in a systemd service's group.
    prom.wait_for("the server's workload", |p| {
        let q = r#"sum by (workload, unit) (tcptop_sent_bytes_total{comm="tt-prom-srv"})"#;
        let v = p.query(q);
        let r = &v["data"]["result"];
        let ok = r.as_array().is_some_and(|a| a.len() == 1)
            && r[0]["metric"]["workload"] == "tcptop-metrics-test.service"
            && r[0]["metric"]["unit"] == "tcptop-metrics-test.service"
            && r[0]["value"][1] == (2 * SRV_BYTES).to_string().as_str();
        ok.then_some(()).ok_or(format!("{v}"))
    });
    // Every scrape parsed: the target is healthy, with no error.
    let t = prom.query("up");
    assert_eq!(t["data"]["result"][0]["value"][1], "1", "{t}");
    let targets: Value =
        serde_json::from_slice(&http::get(&prom.addr, "/api/v1/targets", None).unwrap().body)
            .unwrap();
    let target = &targets["data"]["activeTargets"][0];
    assert_eq!(target["health"], "up", "{targets}");
    assert_eq!(target["lastError"], "", "{targets}");

    // The dashboard's queries, with Grafana's variables filled in.
    let dash: Value = serde_json::from_str(
        &std::fs::read_to_string(deploy("grafana/tcptop-dashboard.json")).unwrap(),
    )
    .unwrap();
    let mut exprs = 0;
    for panel in dash["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = target["expr"]
                .as_str()
                .unwrap()
                .replace("$__rate_interval", "5s")
                .replace("$instance", ".*")
                .replace("$workload", ".*");
            let v = prom.query(&expr);
            assert_eq!(v["status"], "success", "{expr}: {v}");
            exprs += 1;
        }
    }
    assert!(exprs >= 10, "{exprs} queries in the dashboard");

    drop(prom);
    let (records, err) = top.stop();
    assert!(records.is_empty(), "headless wrote to stdout: {records:?}");
    assert!(err.contains("tcptop: dropped "), "{err}");
    drop(groups);
}

/// At every level, a scrape of real traffic (a hostile process name
/// included) passes `promtool check metrics` without a lint, serves both
/// formats by the Accept header, and counts the bytes exactly.
#[test]
#[cfg_attr(not(tcptop_root), ignore = "needs root")]
fn promtool_accepts_real_scrapes_at_every_level() {
    common::require_root();
    require_tool("promtool");
    let _g = common::serial();
    let ns = NetNs::new("promtool");
    for (i, level) in ["process", "remote", "connection"].into_iter().enumerate() {
        // Near the top of the ephemeral range (32768-60999 here): the
        // clients' ports are almost always lower, so the `remote` level
        // must know which end connected, not guess from the numbers.
        let port = 60472 + i as u16;
        let addr = format!("127.0.0.1:{port}");
        let metrics = format!("127.0.0.1:{}", free_port());
        let port_s = port.to_string();
        let top = Tcptop::start_raw(&[
            "--headless",
            "--metrics-listen",
            &metrics,
            "--metrics-level",
            level,
            "--interval",
            "0.2",
            "--port",
            &port_s,
        ]);
        traffic(&ns, &addr, None);
        let want = expected();
        let body = scrape_until(&metrics, level, |b| seen(b) == want);
        if level == "remote" {
            // Loopback peers: one remote address, the service port only.
            let ports = sum_by(&body, "tcptop_sent_bytes_total", "port");
            assert_eq!(ports.keys().collect::<Vec<_>>(), [&port_s], "{body}");
            let ips = sum_by(&body, "tcptop_sent_bytes_total", "remote_ip");
            assert_eq!(ips.keys().collect::<Vec<_>>(), ["127.0.0.1"], "{body}");
        }
        if level == "connection" {
            let conns = body
                .lines()
                .filter_map(parse_sample)
                .filter(|(n, l, _)| {
                    n == "tcptop_sent_bytes_total"
                        && l.iter().any(|(k, v)| k == "comm" && v.starts_with("tt"))
                })
                .count();
            assert_eq!(conns, 4, "two connections, two ends: {body}");
        }

        let text = scrape(&metrics, None);
        assert_eq!(
            text.header("content-type"),
            Some("text/plain; version=0.0.4; charset=utf-8")
        );
        let mut check = Command::new("promtool")
            .args(["check", "metrics"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        check.stdin.take().unwrap().write_all(&text.body).unwrap();
        let out = check.wait_with_output().unwrap();
        let said = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            out.status.success() && said.trim().is_empty(),
            "{level}: promtool: {said}\n{}",
            text.text()
        );

        let om = scrape(
            &metrics,
            Some("application/openmetrics-text; version=1.0.0"),
        );
        assert_eq!(
            om.header("content-type"),
            Some("application/openmetrics-text; version=1.0.0; charset=utf-8")
        );
        assert!(om.text().ends_with("# EOF\n"), "{}", om.text());
        assert_eq!(seen(om.text()), want);
        assert_eq!(http::get(&metrics, "/", None).unwrap().status, 404);
        drop(top);
    }
}

/// VmRSS and VmHWM of a process, in KiB.
fn memory(pid: u32) -> (u64, u64) {
    let st = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib = |name: &str| {
        st.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap()
    };
    (kib("VmRSS:"), kib("VmHWM:"))
}

/// 100 scrapers for 30 s, in a loop, beside clients that stalled (half a
/// request; a request whose answer they never read), against tcptop in
/// batch mode with a series per connection: no snapshot is late, every
/// scraper is answered, stalled clients are dropped, memory stays
/// bounded.
#[test]
#[cfg_attr(not(tcptop_root), ignore = "needs root")]
fn hundred_scrapers_never_delay_a_snapshot() {
    common::require_root();
    let _g = common::serial();
    let ns = NetNs::new("scrapers");
    let mut hold = ns.peer(&["hold-self", "--listen", "127.0.0.1:40481", "--pairs", "200"]);
    hold.expect("holding");
    let metrics = format!("127.0.0.1:{}", free_port());
    let interval = 0.25;
    let mut top = Tcptop::start_with_interval(
        "0.25",
        &[
            "--port",
            "40481",
            "--metrics-listen",
            &metrics,
            "--metrics-level",
            "connection",
        ],
    );
    // Every connection has its series before the storm.
    let body = scrape_until(&metrics, "400 connections", |b| {
        b.lines()
            .filter_map(parse_sample)
            .filter(|(n, _, _)| n == "tcptop_tcp_connections")
            .count()
            >= 400
    });
    let size = body.len();

    // Stalled: half a request, and whole requests never read.
    let mut half: Vec<TcpStream> = (0..10)
        .map(|_| {
            let mut s = TcpStream::connect(&metrics).unwrap();
            s.write_all(b"GET /metr").unwrap();
            s
        })
        .collect();
    let unread: Vec<TcpStream> = (0..10)
        .map(|_| {
            let mut s = TcpStream::connect(&metrics).unwrap();
            s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
                .unwrap();
            s
        })
        .collect();

    let stop = Arc::new(AtomicBool::new(false));
    let errors = Arc::new(AtomicU64::new(0));
    let t0 = Instant::now();
    let wall0 = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let scrapers: Vec<_> = (0..100)
        .map(|i| {
            let (stop, errors, metrics) = (stop.clone(), errors.clone(), metrics.clone());
            std::thread::spawn(move || {
                let accept = (i % 2 == 0).then_some("application/openmetrics-text; version=1.0.0");
                let mut ok = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    match http::get(&metrics, "/metrics", accept) {
                        Ok(r) if r.status == 200 && r.body.len() > 1000 => ok += 1,
                        _ => {
                            errors.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
                ok
            })
        })
        .collect();
    let pid = top.pid();
    let mut rss = Vec::new();
    while t0.elapsed() < Duration::from_secs(30) {
        top.pump(Duration::from_secs(1));
        rss.push(memory(pid).0);
    }
    let window = t0.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    let answered: Vec<u64> = scrapers.into_iter().map(|t| t.join().unwrap()).collect();

    // Snapshots: the distinct timestamps of the records written during the
    // storm (each snapshot writes 400 rows with one).
    let mut ts: Vec<f64> = top
        .records
        .iter()
        .filter_map(|r| r["ts"].as_f64())
        .filter(|&t| t >= wall0 && t <= wall0 + window)
        .collect();
    ts.sort_by(f64::total_cmp);
    ts.dedup();
    let gaps: Vec<f64> = ts.windows(2).map(|w| w[1] - w[0]).collect();
    let max_gap = gaps.iter().copied().fold(0.0, f64::max);
    let expected = window / interval;
    eprintln!(
        "{} snapshots in {window:.1} s (expected ~{expected:.0}), largest gap {max_gap:.3} s; \
         scrapes answered {} (min per scraper {}), errors {}, body {size} bytes; \
         RSS KiB {rss:?}, peak {} KiB",
        ts.len(),
        answered.iter().sum::<u64>(),
        answered.iter().min().unwrap(),
        errors.load(Ordering::Relaxed),
        memory(pid).1,
    );
    assert!(
        ts.len() as f64 >= 0.8 * expected,
        "{} snapshots in {window:.1} s at {interval} s",
        ts.len()
    );
    assert!(
        max_gap < 4.0 * interval,
        "a snapshot came {max_gap:.3} s after the previous one"
    );
    assert!(
        answered.iter().all(|&n| n > 0),
        "a scraper was never answered: {answered:?}"
    );
    assert_eq!(errors.load(Ordering::Relaxed), 0, "failed scrapes");
    // Memory: flat over the storm's last 20 s, and small at its peak.
    let late = &rss[rss.len().saturating_sub(20)..];
    let (lo, hi) = (late.iter().min().unwrap(), late.iter().max().unwrap());
    assert!(
        hi - lo < 32 * 1024,
        "RSS grew from {lo} to {hi} KiB: {rss:?}"
    );
    assert!(memory(pid).1 < 256 * 1024, "peak RSS {} KiB", memory(pid).1);
    // The half request was dropped (header timeout); the unread one's
    // connection is closed too, past its keep-alive and grace times at most.
    for s in &mut half {
        s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let mut b = Vec::new();
        match s.read_to_end(&mut b) {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
            Err(e) => panic!("a half request is still open after 30 s: {e}"),
        }
    }
    drop(unread);
    let (_, err) = top.stop();
    assert!(err.contains("tcptop: dropped "), "{err}");
    hold.poke();
    hold.wait_ok();
}

/// The value of `Key=` in deploy/tcptop.service, split on spaces.
fn unit_setting(key: &str) -> Vec<String> {
    let unit = std::fs::read_to_string(deploy("tcptop.service")).unwrap();
    unit.lines()
        .find_map(|l| l.strip_prefix(&format!("{key}=")))
        .unwrap_or_else(|| panic!("no {key}= in deploy/tcptop.service"))
        .split_whitespace()
        .map(str::to_string)
        .collect()
}

/// tcptop as deploy/tcptop.service runs it (its ExecStart flags, as an
/// unprivileged user with only the unit's capabilities, ambient, and
/// no_new_privs) loads its programs and counts exactly.
#[test]
#[cfg_attr(not(tcptop_root), ignore = "needs root")]
fn the_units_capabilities_are_enough() {
    common::require_root();
    let _g = common::serial();
    let caps = unit_setting("AmbientCapabilities");
    assert_eq!(caps, unit_setting("CapabilityBoundingSet"));
    assert!(!caps.is_empty());
    let set = format!(
        "-all,{}",
        caps.iter()
            .map(|c| format!("+{}", c.trim_start_matches("CAP_").to_ascii_lowercase()))
            .collect::<Vec<_>>()
            .join(",")
    );
    let exec = unit_setting("ExecStart");
    let metrics = format!("127.0.0.1:{}", free_port());
    let mut cmd = Command::new("setpriv");
    cmd.args([
        "--reuid=nobody",
        "--regid=nogroup",
        "--clear-groups",
        "--no-new-privs",
        &format!("--inh-caps={set}"),
        &format!("--ambient-caps={set}"),
        &format!("--bounding-set={set}"),
        common::tcptop(),
    ]);
    for a in &exec[1..] {
        cmd.arg(match a.as_str() {
            "127.0.0.1:9911" => metrics.as_str(),
            // A fresher snapshot than the unit's.
            "5" => "0.2",
            a => a,
        });
    }
    cmd.args(["--port", "40476"]);
    let top = Tcptop::launch(cmd);
    let ns = NetNs::new("unit");
    traffic(&ns, "127.0.0.1:40476", None);
    let want = expected();
    let body = scrape_until(&metrics, "exact bytes", |b| seen(b) == want);
    let source = body
        .lines()
        .filter_map(parse_sample)
        .find(|(n, _, _)| n == "tcptop_build_info")
        .and_then(|(_, l, _)| l.into_iter().find(|(k, _)| k == "source"))
        .map(|(_, v)| v)
        .unwrap();
    assert_ne!(source, "diag", "the unprivileged mode, not eBPF");
    drop(top);
}

/// A port below 1024 is bound before the privilege drop: tcptop started
/// as root with --user nobody serves it, and every thread, the server's
/// included, runs as nobody.
#[test]
#[cfg_attr(not(tcptop_root), ignore = "needs root")]
fn a_port_below_1024_is_bound_before_the_drop() {
    common::require_root();
    let _g = common::serial();
    let port = (900..1000)
        .find(|p| TcpListener::bind(("127.0.0.1", *p)).is_ok())
        .expect("a free port below 1024");
    let metrics = format!("127.0.0.1:{port}");
    let top = Tcptop::start(&["--user", "nobody", "--metrics-listen", &metrics]);
    let r = scrape(&metrics, None);
    assert!(r.text().contains("tcptop_build_info"), "{}", r.text());
    let nobody = String::from_utf8(
        Command::new("id")
            .args(["-u", "nobody"])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap()
    .trim()
    .to_string();
    let mut names = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{}/task", top.pid())).unwrap() {
        let task = task.unwrap().path();
        let status = std::fs::read_to_string(task.join("status")).unwrap();
        let name = std::fs::read_to_string(task.join("comm")).unwrap();
        let uid = status
            .lines()
            .find_map(|l| l.strip_prefix("Uid:"))
            .unwrap()
            .split_whitespace()
            .map(str::to_string)
            .collect::<Vec<_>>();
        assert_eq!(uid, [nobody.as_str(); 4], "{name}: {status}");
        let eff = status
            .lines()
            .find_map(|l| l.strip_prefix("CapEff:"))
            .unwrap()
            .trim()
            .to_string();
        assert_eq!(
            u64::from_str_radix(&eff, 16).unwrap() & !(1 << 39),
            0,
            "{name}: {status}"
        );
        names.push(name.trim().to_string());
    }
    assert!(names.iter().any(|n| n == "tcptop-metrics"), "{names:?}");
    drop(top);
}
