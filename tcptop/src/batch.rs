//! The event loop of batch and headless mode: collect every interval,
//! update the table, write output (none in headless mode) and feed the
//! metrics; stop on the iteration count, Ctrl-C or SIGTERM. Returning (on
//! any path) drops the data source, which detaches the kernel programs.

use std::io::{self, Write};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use tokio::signal::unix::{SignalKind, signal};
use tokio::time::{MissedTickBehavior, interval_at};

use crate::cli::{Cli, Format};
use crate::output::{self, csv, jsonl, text};
use crate::platform::DataSource;
use crate::table::{ConnTable, Filter, Row, RowAt};

#[derive(Debug, thiserror::Error)]
pub enum BatchError {
    #[error(transparent)]
    Source(#[from] crate::platform::SourceError),
    #[error("cannot write output: {0}")]
    Output(io::Error),
    #[error("cannot install signal handlers: {0}")]
    Signals(io::Error),
}

pub async fn run_batch(
    source: &mut dyn DataSource,
    cli: &Cli,
    mut log: Option<csv::CsvLog>,
    mut metrics: Option<crate::metrics::Metrics>,
) -> Result<(), BatchError> {
    let filter = cli.filter();
    let secs = cli.interval.as_secs_f64();
    let mut table = ConnTable::new();
    table.set_window(cli.rate_window.into());
    if cli.rate_window == crate::cli::Window::Interval {
        // Nothing can change the window later: no samples to keep.
        table.interval_rates_only();
    }
    let mut ticker = interval_at(tokio::time::Instant::now() + cli.interval, cli.interval);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut sigint = signal(SignalKind::interrupt()).map_err(BatchError::Signals)?;
    let mut sigterm = signal(SignalKind::terminate()).map_err(BatchError::Signals)?;
    for w in source.warnings() {
        eprintln!("tcptop: warning: {w}");
    }
    if !cli.quiet {
        // "attached": the kernel programs are in place (tests wait for it).
        let verb = match source.notice() {
            Some(notice) => {
                eprintln!("tcptop: notice: {notice}");
                "started"
            }
            None => "attached",
        };
        eprintln!(
            "tcptop: {verb} (hooks: {}); a snapshot every {secs} s",
            source.hooks()
        );
        if let Some(addr) = cli.metrics_listen {
            eprintln!(
                "tcptop: metrics at http://{addr}/metrics (level {}, at most {} series)",
                crate::metrics::Level::from(cli.metrics_level).as_str(),
                cli.metrics_max_series
            );
        }
    }
    let mut done = 0u64;
    let mut warned_full = false;
    let mut kept = Kept::default();
    loop {
        // A signal ends the run after one last snapshot: connections that
        // closed since the previous one are reported, not lost.
        let last = tokio::select! {
            _ = ticker.tick() => false,
            _ = sigint.recv() => true,
            _ = sigterm.recv() => true,
        };
        let snap = source.collect()?;
        let now = Instant::now();
        table.apply(snap, now, secs);
        let dropped = table.drops().conns;
        if dropped > 0 && !warned_full {
            // Once, when it starts (the count at exit is in the summary).
            warned_full = true;
            eprintln!(
                "tcptop: warning: {}",
                crate::platform::table_full_warning(dropped, cli.max_conns())
            );
        }
        if let Some(m) = metrics.as_mut() {
            m.update(&table, now);
        }
        // Headless: nothing on stdout (the log, if any, is written).
        if (!cli.headless || log.is_some())
            && write_snapshot(
                source,
                cli,
                (&table, &filter, &mut kept),
                log.as_mut(),
                done == 0,
            )? == Written::ReaderGone
        {
            return Ok(());
        }
        done += 1;
        if last || cli.iterations.is_some_and(|n| done >= n) {
            break;
        }
    }
    if !cli.quiet {
        let d = table.drops();
        eprintln!(
            "tcptop: dropped {} events (ring buffer full), {} connections (table full), \
             evicted {} idle UDP flows (table nearly full)",
            d.events, d.conns, d.evicted
        );
    }
    // The process ends next and its memory goes back whole: freeing
    // 200,000 rows one at a time first took ~15 ms of CPU.
    std::mem::forget(table);
    Ok(())
}

#[derive(Debug, PartialEq, Eq)]
enum Written {
    Ok,
    /// `tcptop -b | head`: the reader is gone, stop quietly.
    ReaderGone,
}

/// The rows a filter let through at a table version: while the version
/// stands still, nothing a row shows has changed and no row has moved, so
/// they are the same rows at the same places (an idle table of 200,000
/// rows walked through the filter at every snapshot for nothing).
#[derive(Debug, Default)]
struct Kept {
    version: Option<u64>,
    at: Vec<RowAt>,
}

/// The rows of `table` that `filter` lets through, in the table's order.
fn filtered<'t>(table: &'t ConnTable, filter: &Filter, kept: &mut Kept) -> Vec<&'t Row> {
    if filter.is_empty() {
        return table.rows().collect();
    }
    if kept.version != Some(table.version()) {
        kept.at.clear();
        kept.at.extend(
            table
                .rows_at()
                .filter(|(_, r)| filter.matches(r))
                .map(|(at, _)| at),
        );
        kept.version = Some(table.version());
    }
    kept.at.iter().filter_map(|&at| table.row(at)).collect()
}

/// One snapshot's rows to the log and (but in headless mode) to stdout.
fn write_snapshot(
    source: &dyn DataSource,
    cli: &Cli,
    (table, filter, kept): (&ConnTable, &Filter, &mut Kept),
    log: Option<&mut csv::CsvLog>,
    first: bool,
) -> Result<Written, BatchError> {
    let mut rows = filtered(table, filter, kept);
    // JSON lines sort as they write (formatting rows in memory order);
    // the other outputs take the rows sorted.
    if cli.format != Format::Jsonl || log.is_some() {
        output::sort_rows(&mut rows);
    }
    let ts = unix_now();
    if let Some(log) = log
        && let Err(e) = log.append(ts, source.hooks(), &rows)
    {
        // Keep monitoring: the next snapshot tries again.
        eprintln!("tcptop: {e}");
    }
    if cli.headless {
        return Ok(Written::Ok);
    }
    // Stdout is line-buffered: a write(2) per row, which under churn
    // (tens of thousands of closed rows a second) cost more than all the
    // rest of tcptop. One buffer per snapshot, flushed at its end.
    let mut out = io::BufWriter::with_capacity(OUT_BUFFER, io::stdout().lock());
    let written = match cli.format {
        Format::Jsonl => jsonl::write(&mut out, ts, source.hooks(), &rows),
        Format::Csv => csv::write(&mut out, first, ts, source.hooks(), &rows),
        Format::Text => text::write(
            &mut out,
            &text::Header {
                time: &clock_time(),
                hooks: source.hooks(),
                drops: table.drops(),
            },
            &rows,
        ),
    }
    .and_then(|()| out.flush());
    match written {
        Ok(()) => Ok(Written::Ok),
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(Written::ReaderGone),
        Err(e) => Err(BatchError::Output(e)),
    }
}

/// Bytes of batch output gathered before a write(2).
const OUT_BUFFER: usize = 64 * 1024;

pub fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// Local wall-clock time as HH:MM:SS (the C library's localtime_r, through
/// `time`); the Unix time in seconds if the offset cannot be had.
fn clock_time() -> String {
    match time::OffsetDateTime::now_local() {
        Ok(t) => format!("{:02}:{:02}:{:02}", t.hour(), t.minute(), t.second()),
        Err(_) => format!(
            "{}",
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0)
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(lport: u16, tx: u64) -> crate::model::ConnSample {
        crate::model::ConnSample {
            key: crate::model::ConnKey {
                proto: crate::model::Proto::Tcp,
                local: format!("127.0.0.1:{lport}").parse().unwrap(),
                remote: "127.0.0.1:80".parse().unwrap(),
                netns: 1,
            },
            id: u64::from(lport),
            pid: 10,
            comm: "curl".into(),
            state: crate::model::ConnState::Established,
            counters: crate::model::Counters {
                tx_bytes: tx,
                ..Default::default()
            },
            rtt_us: None,
            cgroup_id: 0,
            active: None,
            workload: None,
        }
    }

    /// The kept rows are the filter's answer at every step: an idle
    /// snapshot (kept), a counter moving, a row leaving (the last row
    /// takes its place), rows coming.
    #[test]
    fn kept_rows_are_what_the_filter_says() {
        let mut table = ConnTable::new();
        let filter = Filter {
            ports: vec![3, 5],
            ..Filter::default()
        };
        let mut kept = Kept::default();
        let t0 = Instant::now();
        let steps: Vec<Vec<crate::model::ConnSample>> = vec![
            (1..=6).map(|p| sample(p, 0)).collect(),
            (1..=6).map(|p| sample(p, 0)).collect(),
            (1..=6).map(|p| sample(p, u64::from(p == 5))).collect(),
            // Port 1 leaves: port 6's row moves into its place.
            (2..=6).map(|p| sample(p, u64::from(p == 5))).collect(),
            (2..=8)
                .map(|p| sample(p % 7 + 1, u64::from(p == 5)))
                .collect(),
        ];
        let mut versions = Vec::new();
        for (i, live) in steps.into_iter().enumerate() {
            let snap = crate::model::Snapshot {
                live,
                ..Default::default()
            };
            table.apply(snap, t0 + std::time::Duration::from_secs(i as u64 + 1), 1.0);
            versions.push(table.version());
            let want: Vec<_> = table.rows().filter(|r| filter.matches(r)).collect();
            let got = filtered(&table, &filter, &mut kept);
            let ports =
                |rows: &[&Row]| -> Vec<u16> { rows.iter().map(|r| r.key.local.port()).collect() };
            assert_eq!(ports(&got), ports(&want), "step {i}");
            assert_eq!(kept.version, Some(table.version()));
        }
        // The idle snapshot left the version (and the kept rows) alone.
        assert_eq!(versions[0], versions[1]);
        assert!(versions[2] != versions[1] && versions[3] != versions[2]);
        // Without a filter: every row, nothing kept.
        let mut none = Kept::default();
        assert_eq!(
            filtered(&table, &Filter::default(), &mut none).len(),
            table.len()
        );
        assert_eq!(none.version, None);
    }

    /// HH:MM:SS, also with other threads running (`time` once refused to
    /// read the local offset then, and the fallback is the Unix time).
    #[test]
    fn clock_time_with_threads() {
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let other = std::thread::spawn(move || rx.recv());
        let t = clock_time();
        drop(tx);
        let _ = other.join();
        let parts: Vec<&str> = t.split(':').collect();
        assert_eq!(parts.len(), 3, "{t}");
        for (p, max) in parts.iter().zip([23, 59, 60]) {
            assert_eq!(p.len(), 2, "{t}");
            assert!(p.parse::<u32>().is_ok_and(|v| v <= max), "{t}");
        }
    }
}
