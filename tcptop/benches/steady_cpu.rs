//! The interactive event loop's steady CPU use: 1,000 connections whose
//! counters all change every second, a 1 s interval, drawn through the
//! crossterm backend (escape sequences written to a sink) on a 160x48
//! screen. Reports process CPU time over wall time (target: under 2% of one
//! core). `TCPTOP_BENCH_SECS` sets the duration (default 30).
#![expect(
    clippy::unwrap_used,
    reason = "test and benchmark code: a failed unwrap fails the run"
)]

mod fake;

use std::time::{Duration, Instant};

use ratatui::backend::CrosstermBackend;
use ratatui::layout::Rect;
use ratatui::{Terminal, TerminalOptions, Viewport};
use tcptop::ui::{App, event};

fn cpu_time() -> Duration {
    // SAFETY: getrusage fills the struct it is given.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == "--list") {
        return;
    }
    // `cargo bench` passes --bench; `cargo test --all-targets` does not: a
    // one-second smoke run then.
    let default_secs = if args.iter().any(|a| a == "--bench") {
        30
    } else {
        1
    };
    let secs: u64 = std::env::var("TCPTOP_BENCH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default_secs);
    let conns = 1000;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut source = fake::Busy::new(conns);
    let mut term = Terminal::with_options(
        CrosstermBackend::new(std::io::sink()),
        TerminalOptions {
            viewport: Viewport::Fixed(Rect::new(0, 0, 160, 48)),
        },
    )
    .unwrap();
    let mut app = App::new(fake::settings(), Instant::now());
    let (wall0, cpu0) = (Instant::now(), cpu_time());
    rt.block_on(async {
        event::run(
            &mut term,
            &mut app,
            &mut source,
            futures_util::stream::pending(),
            tokio::time::sleep(Duration::from_secs(secs)),
            None,
        )
        .await
    })
    .unwrap();
    let (wall, cpu) = (wall0.elapsed(), cpu_time() - cpu0);
    println!(
        "steady_cpu: {conns} connections, 1 s interval, {:.1} s: {:.3} s CPU = {:.2}% of one core \
         ({} snapshots, {:.2} ms CPU per snapshot incl. the fake source)",
        wall.as_secs_f64(),
        cpu.as_secs_f64(),
        100.0 * cpu.as_secs_f64() / wall.as_secs_f64(),
        source.step,
        1000.0 * cpu.as_secs_f64() / source.step.max(1) as f64,
    );
}
