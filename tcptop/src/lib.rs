//! tcptop: a top-style, real-time per-connection network monitor.
//!
//! Layers, bottom up: `platform` (where data comes from: the eBPF backend on
//! Linux and its fallbacks, behind the `DataSource` trait), `model`
//! (platform-neutral samples), `escape` (text from outside, made safe to
//! show), `table` (connection state and rates), `output` (text, JSON lines,
//! CSV), `batch` (the batch event loop), `ui` (the interactive display),
//! `cli` (flags).

pub mod batch;
pub mod cli;
pub mod escape;
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
    let mut cli = cli::Cli::parse();
    if cli.max_conns.is_none() {
        cli.max_conns = Some(platform::default_max_conns());
    }
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
    let mut source = platform::open_default(&platform::SourceOptions {
        kind: cli.source.into(),
        btf: cli.btf.clone(),
        hooks: cli.hooks.map(Into::into),
        udp_idle: cli.idle_timeout,
        max_conns: cli.max_conns(),
        udp: !cli.tcp || cli.udp,
    })?;
    // Loading and attaching needed privileges that collecting does not:
    // give them up (and become --user) before the run loop starts.
    source.drop_privileges(cli.user.as_deref())?;
    if cli.batch {
        return Ok(rt.block_on(batch::run_batch(source.as_mut(), cli, log))?);
    }
    // Privileges and the kernel were checked by open_default, before the
    // terminal changes; errors print after the guard restored it.
    Ok(rt.block_on(ui::event::run_interactive(source.as_mut(), cli, log))?)
}
