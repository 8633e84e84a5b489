//! tcptop: a top-style, real-time per-connection network monitor.
//!
//! Layers, bottom up: `platform` (where data comes from: the eBPF backend on
//! Linux and its fallbacks, the kernel's socket lists on macOS, behind the
//! `DataSource` trait), `model`
//! (platform-neutral samples), `escape` (text from outside, made safe to
//! show), `table` (connection state and rates), `output` (text, JSON lines,
//! CSV), `metrics` (series for Prometheus and their HTTP server), `batch`
//! (the batch and headless event loop), `ui` (the interactive display),
//! `cli` (flags).

pub mod batch;
pub mod cli;
pub mod escape;
pub mod metrics;
pub mod model;
pub mod names;
pub mod output;
pub mod platform;
pub mod table;
pub mod ui;

use std::process::ExitCode;

use clap::Parser;

/// Parses the command line, runs, and turns every error into one message
/// on stderr and exit code 1 (clap exits 2 on bad flags).
pub fn main_entry() -> ExitCode {
    let cli = cli::Cli::parse();
    match run(&cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tcptop: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: &cli::Cli) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(batch::BatchError::Signals)?;
    // A log that cannot be opened is an error before anything starts.
    let log = cli
        .log
        .as_deref()
        .map(output::csv::CsvLog::open)
        .transpose()?;
    // So is a metrics address that cannot be listened on. Bound now, before
    // privileges are dropped (a port below 1024 works when started as root);
    // served once they are.
    let listener = cli.metrics_listen.map(metrics::server::bind).transpose()?;
    let mut source = platform::open_default(&platform::SourceOptions {
        kind: cli.source.into(),
        udp: !cli.tcp || cli.udp,
        linux: platform::LinuxOptions {
            btf: cli.btf.clone(),
            hooks: cli.hooks.map(Into::into),
            udp_idle: cli.idle_timeout,
            max_conns: cli.max_conns,
            cgroup_filter: !cli.cgroups.is_empty(),
        },
    })?;
    // Loading and attaching needed privileges that collecting does not:
    // give them up (and become --user) before the run loop starts.
    source.drop_privileges(cli.user.as_deref())?;
    // The server's thread starts with the reduced credentials.
    let metrics = match listener {
        Some(listener) => {
            let m = metrics::Metrics::new(cli.metrics_options(), source.hooks(), cli.filter());
            metrics::server::spawn(listener, m.shared())?;
            Some(m)
        }
        None => None,
    };
    if cli.batch || cli.headless {
        return Ok(rt.block_on(batch::run_batch(source.as_mut(), cli, log, metrics))?);
    }
    // Privileges and the kernel were checked by open_default, before the
    // terminal changes; errors print after the guard restored it.
    Ok(rt.block_on(ui::event::run_interactive(
        source.as_mut(),
        cli,
        log,
        metrics,
    ))?)
}
