//! The interactive event loop: one `tokio::select!` over data (the refresh
//! interval), input, a render tick and shutdown signals, turned into one
//! [`AppEvent`] at a time. Data rate and render rate are independent: data
//! comes every interval, the screen is redrawn at most every render tick and
//! only when something changed.

use std::future::Future;
use std::io;
use std::time::Duration;

use crossterm::event::Event;
use futures_util::{Stream, StreamExt};
use ratatui::Terminal;
use ratatui::backend::Backend;
use tokio::time::{Instant, MissedTickBehavior, interval};

use super::App;
use crate::model::Snapshot;
use crate::platform::{DataSource, SourceError};

/// At most this often the screen is redrawn (if anything changed).
pub const RENDER_TICK: Duration = Duration::from_millis(50);

#[derive(Debug, thiserror::Error)]
pub enum UiError {
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error("cannot read the keyboard: {0}")]
    Input(io::Error),
    #[error("cannot draw on the terminal: {0}")]
    Draw(String),
}

/// Everything the loop reacts to.
#[derive(Debug)]
pub enum AppEvent {
    Data(Result<Snapshot, SourceError>),
    Input(Event),
    InputError(io::Error),
    InputClosed,
    Render,
    Shutdown,
}

/// Runs until the user quits, input ends, `shutdown` resolves (SIGINT,
/// SIGTERM) or the source fails. The first collection happens at once.
pub async fn run<B: Backend>(
    terminal: &mut Terminal<B>,
    app: &mut App,
    source: &mut dyn DataSource,
    mut input: impl Stream<Item = io::Result<Event>> + Unpin,
    shutdown: impl Future<Output = ()>,
    mut log: Option<&mut crate::output::csv::CsvLog>,
) -> Result<(), UiError> {
    let mut data = interval(app.settings.interval);
    data.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut render = interval(RENDER_TICK);
    render.set_missed_tick_behavior(MissedTickBehavior::Skip);
    tokio::pin!(shutdown);
    // Start-up warnings go to the status line (stderr is under the display);
    // a log write error takes the line while it lasts.
    let warning = source.warnings().first().map(|w| format!("warning: {w}"));
    app.set_status(warning.clone());
    while !app.should_quit() {
        let ev = tokio::select! {
            biased;
            _ = data.tick() => AppEvent::Data(source.collect()),
            ev = input.next() => match ev {
                Some(Ok(ev)) => AppEvent::Input(ev),
                Some(Err(e)) => AppEvent::InputError(e),
                None => AppEvent::InputClosed,
            },
            _ = render.tick() => AppEvent::Render,
            () = &mut shutdown => AppEvent::Shutdown,
        };
        match ev {
            AppEvent::Data(snap) => {
                app.on_snapshot(snap?, Instant::now().into_std());
                if let Some(log) = log.as_deref_mut() {
                    // A failed write (disk full…) is shown, not fatal; the
                    // next snapshot tries again and clears it on success.
                    let written = log.append(
                        crate::batch::unix_now(),
                        source.hooks(),
                        &app.snapshot_rows(),
                    );
                    app.set_status(written.err().or_else(|| warning.clone()));
                }
            }
            AppEvent::Input(ev) => {
                app.on_event(&ev);
            }
            AppEvent::InputError(e) => return Err(UiError::Input(e)),
            AppEvent::InputClosed | AppEvent::Shutdown => break,
            AppEvent::Render => {
                app.on_tick(Instant::now().into_std());
                // Host names looked up meanwhile (never waits for one).
                app.poll_names();
                if app.take_dirty() {
                    terminal
                        .draw(|f| app.draw(f))
                        .map_err(|e| UiError::Draw(e.to_string()))?;
                }
            }
        }
    }
    Ok(())
}

/// The terminal's events, read by a thread of their own that waits in
/// crossterm's blocking `read`. (crossterm's `EventStream` asks for an
/// event each time the loop wakes, 20 times a second, and while its own
/// waiting thread holds the reader's lock that try spins through seven
/// `sched_yield` calls: a sixth of the idle display's CPU after start-up,
/// 20 of 124 perf samples at 200,000 idle connections.) The thread
/// stays blocked in `read` when the display ends; the process exits next.
fn keyboard() -> io::Result<impl Stream<Item = io::Result<Event>> + Unpin> {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    std::thread::Builder::new()
        .name("tcptop-keys".into())
        .spawn(move || {
            loop {
                let ev = crossterm::event::read();
                let failed = ev.is_err();
                // The display gone, or the terminal unreadable: done.
                if tx.send(ev).is_err() || failed {
                    break;
                }
            }
        })?;
    Ok(futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx)))
}

/// The interactive display on the real terminal, with the real keyboard;
/// SIGINT and SIGTERM quit. The terminal is restored before this returns.
pub async fn run_interactive(
    source: &mut dyn DataSource,
    cli: &crate::cli::Cli,
    mut log: Option<crate::output::csv::CsvLog>,
    metrics: Option<crate::metrics::Metrics>,
) -> Result<(), UiError> {
    use tokio::signal::unix::{SignalKind, signal};
    let signals = |k| signal(k).map_err(UiError::Input);
    let mut sigint = signals(SignalKind::interrupt())?;
    let mut sigterm = signals(SignalKind::terminate())?;
    let shutdown = async move {
        tokio::select! {
            _ = sigint.recv() => {}
            _ = sigterm.recv() => {}
        }
    };
    let settings = super::Settings {
        hooks: source.hooks().to_string(),
        interval: cli.interval,
        bits: cli.bits,
        filter: cli.filter(),
        notice: source.notice().map(str::to_string),
        max_conns: cli.max_conns(),
    };
    let mut app = App::new(settings, Instant::now().into_std())
        .with_proc_lookup(source.process_lookup())
        .with_resolver(crate::names::Resolver::system())
        .with_services(crate::names::Services::load())
        .show_names(!cli.no_dns, !cli.no_port_names)
        .with_metrics(metrics);
    app.set_rate_window(cli.rate_window.into());
    let mut guard = super::terminal::TerminalGuard::enter().map_err(UiError::Input)?;
    let input = keyboard().map_err(UiError::Input)?;
    let done = run(
        &mut guard.terminal,
        &mut app,
        source,
        input,
        shutdown,
        log.as_mut(),
    )
    .await;
    drop(guard);
    // The process ends next and its memory goes back whole: freeing the
    // table's rows one at a time first (200,000 of them: ~15 ms of CPU)
    // would only delay the exit.
    std::mem::forget(app);
    done
}
