//! Command-line interface.

use std::time::Duration;

use clap::{Parser, ValueEnum};

#[derive(Debug, Parser)]
#[command(
    name = "tcptop",
    version = env!("TCPTOP_VERSION"),
    about = "Top-style real-time monitor of network connections: per-connection bytes, \
             packets, rates, TCP state and RTT, with the owning process.",
    after_help = "Linux: the full mode (eBPF: exact bytes per connection by every path, \
                  short-lived connections, UDP) needs root, or CAP_BPF and CAP_PERFMON \
                  (CAP_NET_ADMIN for the peers of unconnected UDP sockets, CAP_SYS_ADMIN for \
                  other network namespaces): sudo setcap cap_bpf,cap_perfmon,cap_net_admin+ep \
                  $(command -v tcptop)\n\n\
                  Without them tcptop runs unprivileged on the kernel's socket diagnostics \
                  (as ss does): TCP connections of its own network namespace with owner, \
                  state, RTT, retransmits, and bytes from each socket's counters \
                  (tcp_info bytes_acked and bytes_received, less what is still queued, \
                  SYN and FIN: the same stream bytes the full mode counts, but read once \
                  per interval, so a connection that opens and closes between two \
                  snapshots is not seen) and no UDP.\n\n\
                  macOS: no privileges needed. tcptop reads the kernel's socket lists \
                  (sysctl net.inet.tcp.pcblist_n and net.inet.udp.pcblist_n, as netstat \
                  does) once per interval: TCP and UDP sockets with owner, state, RTT, \
                  retransmit backoff and each socket's byte and packet counters; a \
                  connection that opens and closes between two reads is not seen, and \
                  the Linux-only flags (--hooks, --btf, --idle-timeout, --max-conns, \
                  --cgroup, --user) are refused.\n\n\
                  As a service: tcptop --headless --metrics-listen 127.0.0.1:9911 (nothing on \
                  stdout; start-up lines, warnings and the exit summary on stderr; runs until \
                  SIGTERM or SIGINT), and Prometheus scrapes http://127.0.0.1:9911/metrics."
)]
#[command(group(clap::ArgGroup::new("headless_sink").args(["metrics_listen", "log"]).multiple(true)))]
pub struct Cli {
    /// Print snapshots to stdout instead of the interactive display.
    #[arg(short, long)]
    pub batch: bool,

    /// Run as a service: no display and nothing on stdout, until SIGTERM or
    /// SIGINT. Needs --metrics-listen (or --log); start-up lines, warnings
    /// and the exit summary go to stderr (-q: warnings only).
    #[arg(long, conflicts_with_all = ["batch", "format"], requires = "headless_sink")]
    pub headless: bool,

    /// Serve metrics for Prometheus at http://ADDR:PORT/metrics (OpenMetrics,
    /// or the Prometheus text format for clients that ask for it), e.g.
    /// 127.0.0.1:9911. Works with the display, --batch and --headless; the
    /// metrics count the connections the filters select.
    #[arg(long, value_name = "ADDR:PORT", value_parser = parse_listen)]
    pub metrics_listen: Option<std::net::SocketAddr>,

    /// Labels of the metrics: process (proto, comm, workload, unit,
    /// container, pod), remote (also remote_ip for the top
    /// --metrics-top-remotes addresses by bytes, other for the rest, the
    /// service port and role) or connection (also pid, local and remote
    /// address:port, netns: a series per connection).
    #[arg(long, value_enum, default_value_t = MetricsLevel::Process, requires = "metrics_listen")]
    pub metrics_level: MetricsLevel,

    /// At most this many label sets (each: the counters, a connections
    /// gauge per TCP state and the RTT histogram), at any level; a
    /// connection whose label set does not fit is counted in an overflow
    /// series (overflow="true") and in tcptop_series_overflow_total. A
    /// series with no live connection is dropped after 10 minutes without
    /// growth.
    #[arg(long, value_name = "N", default_value_t = crate::metrics::DEFAULT_MAX_SERIES,
          value_parser = clap::value_parser!(u32).range(1..=1_000_000), requires = "metrics_listen")]
    pub metrics_max_series: u32,

    /// At --metrics-level remote: this many remote addresses (the most
    /// bytes) have series of their own, the others are remote_ip="other".
    #[arg(long, value_name = "N", default_value_t = crate::metrics::DEFAULT_TOP_REMOTES,
          value_parser = clap::value_parser!(u32).range(0..=100_000), requires = "metrics_listen")]
    pub metrics_top_remotes: u32,

    /// Seconds between snapshots (fractions allowed, 0.1 to 3600).
    #[arg(short, long, default_value = "1", value_parser = parse_interval)]
    pub interval: Duration,

    /// Exit after this many snapshots (batch mode; default: run until interrupted).
    #[arg(short = 'n', long, value_parser = clap::value_parser!(u64).range(1..))]
    pub iterations: Option<u64>,

    /// Output format in batch mode.
    #[arg(short, long, value_enum, default_value_t = Format::Text)]
    pub format: Format,

    /// Show only connections of this process ID (repeatable).
    #[arg(short, long = "pid", value_name = "PID")]
    pub pids: Vec<u32>,

    /// Show only connections whose owner runs in this cgroup (v2) or below
    /// it, e.g. /system.slice/nginx.service or /kubepods.slice (repeatable;
    /// paths as the `cgroup` field shows them).
    #[arg(long = "cgroup", value_name = "PREFIX")]
    pub cgroups: Vec<String>,

    /// Show only connections with this local or remote port (repeatable).
    #[arg(short = 'P', long = "port", value_name = "PORT")]
    pub ports: Vec<u16>,

    /// Where data comes from: eBPF programs (Linux, needs privileges), what
    /// the kernel tells any user (Linux: the socket diagnostics, TCP only;
    /// macOS: the kernel's socket lists, pcblist), or auto: eBPF, and the
    /// unprivileged source when eBPF programs may not be loaded (macOS:
    /// always pcblist).
    #[arg(long, value_enum, default_value_t = Source::Auto)]
    pub source: Source,

    /// Kernel hook set counting send/receive calls (Linux; default: the best
    /// this kernel has).
    #[arg(long, value_enum)]
    pub hooks: Option<Hooks>,

    /// Kernel type information (BTF) to use instead of /sys/kernel/btf/vmlinux,
    /// e.g. for a kernel built without CONFIG_DEBUG_INFO_BTF (Linux).
    #[arg(long, value_name = "FILE")]
    pub btf: Option<std::path::PathBuf>,

    /// Show rates in bits per second (kbit/s, Mbit/s) instead of bytes per second.
    #[arg(long)]
    pub bits: bool,

    /// Show only IPv4 connections (IPv4-mapped IPv6 peers count as IPv4).
    #[arg(short = '4', long = "ipv4")]
    pub ipv4: bool,

    /// Show only IPv6 connections.
    #[arg(short = '6', long = "ipv6")]
    pub ipv6: bool,

    /// Show only TCP connections (and do not attach the UDP programs).
    #[arg(long)]
    pub tcp: bool,

    /// Show only UDP flows.
    #[arg(long)]
    pub udp: bool,

    /// Seconds without a send or receive call after which a UDP flow has ended: it is
    /// shown once more as CLOSED with its final counters (fractions
    /// allowed, 0.1 to 3600; default 30; Linux).
    #[arg(long, value_name = "SECS", value_parser = parse_interval)]
    pub idle_timeout: Option<Duration>,

    /// Capacity of the kernel tables: TCP connections, and UDP flows (each
    /// about 200 bytes of kernel memory). A connection beyond it is counted
    /// as dropped; UDP flows are ended early, longest idle first, when the
    /// flow table is 90% full (1024 to 4194304; Linux). Default: sized at
    /// start-up to the machine's sockets and open files now, with 50%
    /// headroom (65,536 at least).
    #[arg(long, value_name = "N",
          value_parser = clap::value_parser!(u32).range(1024..=i64::from(crate::platform::LIMIT_MAX_CONNS)))]
    pub max_conns: Option<u32>,

    /// Average rates over the last interval or a rolling window of 2, 10 or
    /// 40 seconds, like iftop (key `w` in the interactive display).
    #[arg(long, value_enum, default_value_t = Window::Interval)]
    pub rate_window: Window,

    /// Do not look up host names of remote addresses (reverse DNS) in the
    /// interactive display (key `n`); batch output is always numeric.
    #[arg(long)]
    pub no_dns: bool,

    /// Do not show port names such as https for 443 in the interactive
    /// display (key `s`).
    #[arg(long)]
    pub no_port_names: bool,

    /// Append CSV rows to FILE every interval (a header first if the file
    /// is new), in batch mode and in the interactive display.
    #[arg(long, value_name = "FILE")]
    pub log: Option<std::path::PathBuf>,

    /// Once the kernel programs are attached, run as this user (e.g.
    /// nobody) instead of root. Capabilities are dropped either way (Linux:
    /// tcptop needs no privileges on macOS).
    #[arg(long, value_name = "NAME")]
    pub user: Option<String>,

    /// Do not print the start-up line on stderr in batch mode.
    #[arg(short, long)]
    pub quiet: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// An aligned table per snapshot.
    Text,
    /// One JSON object per connection per snapshot.
    Jsonl,
    /// CSV: a header, then one row per connection per snapshot.
    Csv,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum MetricsLevel {
    /// Per process name and workload.
    Process,
    /// Also per remote address (top N) and service port.
    Remote,
    /// Per connection (opt-in: a series each).
    Connection,
}

impl From<MetricsLevel> for crate::metrics::Level {
    fn from(l: MetricsLevel) -> Self {
        use crate::metrics::Level;
        match l {
            MetricsLevel::Process => Level::Process,
            MetricsLevel::Remote => Level::Remote,
            MetricsLevel::Connection => Level::Connection,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Window {
    Interval,
    #[value(name = "2s")]
    S2,
    #[value(name = "10s")]
    S10,
    #[value(name = "40s")]
    S40,
}

impl From<Window> for crate::table::RateWindow {
    fn from(w: Window) -> Self {
        use crate::table::RateWindow;
        match w {
            Window::Interval => RateWindow::Interval,
            Window::S2 => RateWindow::Secs2,
            Window::S10 => RateWindow::Secs10,
            Window::S40 => RateWindow::Secs40,
        }
    }
}

impl Cli {
    /// How metrics series are made.
    pub fn metrics_options(&self) -> crate::metrics::Options {
        crate::metrics::Options {
            level: self.metrics_level.into(),
            max_series: self.metrics_max_series as usize,
            top_remotes: self.metrics_top_remotes as usize,
        }
    }

    /// `--max-conns`, or the default sized to the machine at start-up
    /// ([`default_max_conns`](crate::platform::default_max_conns)).
    pub fn max_conns(&self) -> u32 {
        self.max_conns
            .unwrap_or_else(crate::platform::default_max_conns)
    }

    /// The connections the flags select.
    pub fn filter(&self) -> crate::table::Filter {
        crate::table::Filter {
            pids: self.pids.clone(),
            ports: self.ports.clone(),
            only_v4: self.ipv4,
            only_v6: self.ipv6,
            only_tcp: self.tcp,
            only_udp: self.udp,
            cgroups: self.cgroups.clone(),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Source {
    /// eBPF when allowed, else the socket diagnostics.
    Auto,
    /// eBPF programs only (an error without the privileges).
    Ebpf,
    /// The kernel's socket diagnostics only (unprivileged).
    Diag,
}

impl From<Source> for crate::platform::SourceKind {
    fn from(s: Source) -> Self {
        use crate::platform::SourceKind;
        match s {
            Source::Auto => SourceKind::Auto,
            Source::Ebpf => SourceKind::Ebpf,
            Source::Diag => SourceKind::Diag,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Hooks {
    /// fexit programs on tcp_sendmsg/tcp_recvmsg (lowest cost).
    Fentry,
    /// kprobes on the same functions.
    Kprobe,
    /// sock:sock_send_length/sock_recv_length tracepoints (Linux 6.3+).
    Tracepoint,
}

impl From<Hooks> for crate::platform::HookSet {
    fn from(h: Hooks) -> Self {
        match h {
            Hooks::Fentry => crate::platform::HookSet::Fentry,
            Hooks::Kprobe => crate::platform::HookSet::Kprobe,
            Hooks::Tracepoint => crate::platform::HookSet::Tracepoint,
        }
    }
}

fn parse_listen(s: &str) -> Result<std::net::SocketAddr, String> {
    s.parse().map_err(|_| {
        format!("\"{s}\" is not an address and port: use e.g. 127.0.0.1:9911 or [::1]:9911")
    })
}

fn parse_interval(s: &str) -> Result<Duration, String> {
    let secs: f64 = s
        .parse()
        .map_err(|_| format!("\"{s}\" is not a number of seconds"))?;
    if !secs.is_finite() || !(0.1..=3600.0).contains(&secs) {
        return Err(format!("\"{s}\" is out of range: use 0.1 to 3600 seconds"));
    }
    Ok(Duration::from_secs_f64(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interval_parsing() {
        assert_eq!(parse_interval("1").unwrap(), Duration::from_secs(1));
        assert_eq!(parse_interval("0.25").unwrap(), Duration::from_millis(250));
        assert!(parse_interval("0").is_err());
        assert!(parse_interval("abc").is_err());
        assert!(parse_interval("NaN").is_err());
        assert!(parse_interval("1e9").is_err());
    }

    #[test]
    fn parses_repeatable_filters() {
        let cli = Cli::try_parse_from([
            "tcptop", "--batch", "-p", "1", "--pid", "2", "--port", "80", "-P", "443", "-f",
            "jsonl", "-n", "3",
        ])
        .unwrap();
        assert_eq!(cli.pids, vec![1, 2]);
        assert_eq!(cli.ports, vec![80, 443]);
        assert_eq!(cli.format, Format::Jsonl);
        assert_eq!(cli.iterations, Some(3));
        assert!(Cli::try_parse_from(["tcptop", "-n", "0"]).is_err());
        let cli = Cli::try_parse_from(["tcptop", "-6", "--udp", "--rate-window", "10s"]).unwrap();
        let f = cli.filter();
        assert!(f.only_v6 && !f.only_v4 && f.only_udp && !f.only_tcp);
        assert_eq!(
            crate::table::RateWindow::from(cli.rate_window),
            crate::table::RateWindow::Secs10
        );
        assert!(Cli::try_parse_from(["tcptop", "--rate-window", "5s"]).is_err());
        assert!(Cli::try_parse_from(["tcptop", "--bits"]).unwrap().bits);
        let cli = Cli::try_parse_from(["tcptop", "--no-dns", "--no-port-names"]).unwrap();
        assert!(cli.no_dns && cli.no_port_names);
        assert!(Cli::try_parse_from(["tcptop", "--port", "70000"]).is_err());
    }

    #[test]
    fn metrics_and_headless_flags() {
        let cli = Cli::try_parse_from(["tcptop", "--headless", "--metrics-listen", "[::1]:9911"])
            .unwrap();
        assert!(cli.headless);
        assert_eq!(cli.metrics_listen, Some("[::1]:9911".parse().unwrap()));
        let o = cli.metrics_options();
        assert_eq!(o.level, crate::metrics::Level::Process);
        assert_eq!((o.max_series, o.top_remotes), (2000, 100));
        let cli = Cli::try_parse_from([
            "tcptop",
            "-b",
            "--metrics-listen",
            "127.0.0.1:9911",
            "--metrics-level",
            "remote",
            "--metrics-max-series",
            "50",
            "--metrics-top-remotes",
            "5",
        ])
        .unwrap();
        let o = cli.metrics_options();
        assert_eq!(o.level, crate::metrics::Level::Remote);
        assert_eq!((o.max_series, o.top_remotes), (50, 5));
        assert!(Cli::try_parse_from(["tcptop", "--headless", "--log", "x.csv"]).is_ok());
        for bad in [
            &["tcptop", "--headless"][..],
            &[
                "tcptop",
                "--headless",
                "-b",
                "--metrics-listen",
                "127.0.0.1:1",
            ],
            &[
                "tcptop",
                "--headless",
                "-f",
                "csv",
                "--metrics-listen",
                "127.0.0.1:1",
            ],
            &["tcptop", "--metrics-level", "remote"],
            &["tcptop", "--metrics-max-series", "10"],
            &["tcptop", "--metrics-listen", "localhost:9911"],
            &["tcptop", "--metrics-listen", "127.0.0.1"],
            &[
                "tcptop",
                "--metrics-listen",
                "127.0.0.1:1",
                "--metrics-max-series",
                "0",
            ],
            &[
                "tcptop",
                "--metrics-listen",
                "127.0.0.1:1",
                "--metrics-level",
                "pod",
            ],
        ] {
            assert!(Cli::try_parse_from(bad).is_err(), "{bad:?} was accepted");
        }
    }
}
