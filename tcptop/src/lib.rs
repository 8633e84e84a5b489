//! tcptop: a top-style, real-time per-connection network monitor.
//!
//! Layers, bottom up: `platform` (where data comes from: the eBPF backend on
//! Linux, behind the `DataSource` trait), `model` (platform-neutral samples),
//! `table` (connection state and rates), `output` (text and JSON lines),
//! `app` (the event loop), `cli` (flags).

pub mod app;
pub mod cli;
pub mod model;
pub mod output;
pub mod platform;
pub mod table;

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

fn run(cli: &cli::Cli) -> Result<(), app::AppError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(app::AppError::Signals)?;
    let mut source = platform::open_default(&platform::SourceOptions {
        btf: cli.btf.clone(),
        hooks: cli.hooks.map(Into::into),
    })?;
    if !cli.batch {
        eprintln!(
            "tcptop: the interactive display is not built yet; printing text snapshots (as --batch)"
        );
    }
    rt.block_on(app::run_batch(source.as_mut(), cli))
}
