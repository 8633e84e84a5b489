//! The interactive display with 10,000 and 100,000 connections: one frame
//! (lines sorted and cached: what a redraw costs when only the screen
//! changed), a selection move (key and frame), a snapshot applied, and a
//! snapshot followed by its frame (the lines computed again). Targets at
//! 100,000: a frame under 10 ms, a selection move under 2 ms, a snapshot
//! under 25 ms. Method and results: BENCHMARKS.md.
#![expect(
    clippy::unwrap_used,
    reason = "test and benchmark code: a failed unwrap fails the run"
)]

mod fake;

use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use crossterm::event::{KeyCode, KeyEvent};
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

fn key(app: &mut App, code: KeyCode) {
    app.on_key(KeyEvent::from(code));
}

fn frame(c: &mut Criterion) {
    for n in [10_000, 100_000] {
        let k = n / 1000;
        let mut app = app_with(n);
        // A large terminal: more cells to fill than any real one.
        let mut term = Terminal::new(TestBackend::new(200, 60)).unwrap();
        c.bench_function(&format!("frame_{k}k_connections_200x60"), |b| {
            b.iter(|| {
                term.draw(|f| app.draw(f)).unwrap();
            });
        });
        let mut small = Terminal::new(TestBackend::new(80, 24)).unwrap();
        c.bench_function(&format!("frame_{k}k_connections_80x24"), |b| {
            b.iter(|| {
                small.draw(|f| app.draw(f)).unwrap();
            });
        });
        // Down and up again: a selection move and its frame.
        let mut down = true;
        c.bench_function(&format!("select_move_{k}k_connections_200x60"), |b| {
            b.iter(|| {
                key(&mut app, if down { KeyCode::Down } else { KeyCode::Up });
                down = !down;
                term.draw(|f| app.draw(f)).unwrap();
            });
        });
        // Grouped by process (300 processes), then filtered.
        key(&mut app, KeyCode::Char('g'));
        c.bench_function(&format!("frame_{k}k_connections_by_process"), |b| {
            b.iter(|| {
                term.draw(|f| app.draw(f)).unwrap();
            });
        });
        for ch in "ggg/192.168.1".chars() {
            key(&mut app, KeyCode::Char(ch));
        }
        c.bench_function(&format!("frame_{k}k_connections_filtered"), |b| {
            b.iter(|| {
                term.draw(|f| app.draw(f)).unwrap();
            });
        });
        // A new snapshot (table, rates, history), alone and with the frame
        // that sorts its lines.
        let mut source = fake::Busy::new(n);
        let mut app = app_with(0);
        let t0 = Instant::now();
        let mut s = 0;
        c.bench_function(&format!("snapshot_{k}k_connections"), |b| {
            b.iter(|| {
                s += 1;
                app.on_snapshot(source.collect().unwrap(), t0 + Duration::from_secs(s));
            });
        });
        c.bench_function(
            &format!("snapshot_and_frame_{k}k_connections_200x60"),
            |b| {
                b.iter(|| {
                    s += 1;
                    app.on_snapshot(source.collect().unwrap(), t0 + Duration::from_secs(s));
                    term.draw(|f| app.draw(f)).unwrap();
                });
            },
        );
    }
}

criterion_group!(benches, frame);
criterion_main!(benches);
