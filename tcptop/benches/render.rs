//! Building and drawing one frame of the interactive display with 10,000
//! connections (target: under 5 ms). Method and results: BENCHMARKS.md.
#![expect(
    clippy::unwrap_used,
    reason = "test and benchmark code: a failed unwrap fails the run"
)]

mod fake;

use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use ratatui::Terminal;
use ratatui::backend::TestBackend;
use tcptop::platform::DataSource;
use tcptop::ui::App;

fn app_with(n: usize) -> App {
    let mut source = fake::Busy::new(n);
    let t0 = Instant::now();
    let mut app = App::new(fake::settings(), t0);
    for s in 1..=3 {
        app.on_snapshot(source.collect().unwrap(), t0 + Duration::from_secs(s));
    }
    app
}

fn frame(c: &mut Criterion) {
    let mut app = app_with(10_000);
    // A large terminal: more cells to fill than any real one.
    let mut term = Terminal::new(TestBackend::new(200, 60)).unwrap();
    c.bench_function("frame_10k_connections_200x60", |b| {
        b.iter(|| {
            term.draw(|f| app.draw(f)).unwrap();
        });
    });
    let mut term = Terminal::new(TestBackend::new(80, 24)).unwrap();
    c.bench_function("frame_10k_connections_80x24", |b| {
        b.iter(|| {
            term.draw(|f| app.draw(f)).unwrap();
        });
    });
    // Grouped by process (300 processes) and filtered.
    let mut term = Terminal::new(TestBackend::new(200, 60)).unwrap();
    app.on_key(crossterm::event::KeyEvent::from(
        crossterm::event::KeyCode::Char('g'),
    ));
    c.bench_function("frame_10k_connections_by_process", |b| {
        b.iter(|| {
            term.draw(|f| app.draw(f)).unwrap();
        });
    });
    for ch in "gg/192.168.1".chars() {
        app.on_key(crossterm::event::KeyEvent::from(
            crossterm::event::KeyCode::Char(ch),
        ));
    }
    c.bench_function("frame_10k_connections_filtered", |b| {
        b.iter(|| {
            term.draw(|f| app.draw(f)).unwrap();
        });
    });
    // A new snapshot of 10,000 connections (table, rates, history).
    let mut source = fake::Busy::new(10_000);
    let mut app = app_with(0);
    let t0 = Instant::now();
    let mut s = 0;
    c.bench_function("snapshot_10k_connections", |b| {
        b.iter(|| {
            s += 1;
            app.on_snapshot(source.collect().unwrap(), t0 + Duration::from_secs(s));
        });
    });
}

criterion_group!(benches, frame);
criterion_main!(benches);
