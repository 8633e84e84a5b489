//! Drawing: the summary header, the connection table, the footer, and the
//! help and detail overlays. Pure functions of the app state, except that
//! that drawing settles the selection and scroll offset for the
//! terminal's height.

use std::net::IpAddr;
use std::time::Duration;

use ratatui::Frame;
use ratatui::layout::{Alignment, Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style, Stylize};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Cell, Clear, Paragraph, Row as TableRow, Sparkline, Table, Wrap};

use super::items::{Column, Grouping, Item, ItemId};
use super::{App, Settled, View};
use crate::escape::untrusted;
use crate::output::units;
use crate::table::Row;

/// The help overlay's keys (also the man page's, through tcptop-gen).
pub const KEYS: &[(&str, &str)] = &[
    ("q, Ctrl-C", "quit"),
    ("?", "this help (any key closes it)"),
    ("/", "filter: process, PID, address, port, state"),
    ("Esc", "clear the filter / close the detail pane"),
    ("p, Space", "pause the display (data keeps coming)"),
    ("< >", "sort by the column to the left / right"),
    ("r", "reverse the sort"),
    ("g", "group: connection, process, workload, remote"),
    ("Enter", "details of a connection; a group's connections"),
    ("Up Down j k", "move the selection"),
    ("PgUp PgDn", "a page up / down"),
    ("Home End", "first / last line"),
    ("b", "rates in bits / bytes per second"),
    ("w", "rates over the interval / 2 s / 10 s / 40 s"),
    ("n", "host names of remote addresses (reverse DNS)"),
    ("s", "port names (https for 443)"),
    ("", "closed connections stay dimmed for 5 s"),
];

pub fn draw(app: &mut App, frame: &mut Frame<'_>) {
    let area = frame.area();
    let header_lines = 3 + u16::from(app.settings.notice.is_some());
    let [header, table, footer] = Layout::vertical([
        Constraint::Length(header_lines),
        Constraint::Min(1),
        Constraint::Length(1),
    ])
    .areas(area);
    // The table's header line takes one line.
    let height = usize::from(table.height.saturating_sub(1));
    let (settled, hosts) = {
        let view = app.view();
        let settled = app.settle(&view, height);
        // Only the lines on screen become items: a frame costs what it
        // shows, not what the table holds.
        let items = app.page(&view, settled.offset, settled.page);
        draw_header(app, frame, header, &view);
        draw_table(app, frame, table, &items, &settled, &view);
        draw_footer(app, frame, footer, view.len());
        (settled, remote_hosts(&items))
    };
    app.keep(&settled);
    // Names for what is on screen arrive on later frames.
    app.want_names(&hosts);
    if app.detail {
        draw_detail(app, frame, area);
    }
    if app.help {
        draw_help(frame, area);
    }
}

/// The remote addresses on screen (lines of one remote host or connection).
fn remote_hosts(items: &[Item<'_>]) -> Vec<IpAddr> {
    items
        .iter()
        .filter(|it| matches!(it.id, ItemId::Conn(..) | ItemId::Remote(_)))
        .filter_map(|it| it.remote_ip)
        .collect()
}

fn rate_text(app: &App, v: f64) -> String {
    if app.settings.bits {
        units::bit_rate(v)
    } else {
        units::rate(v)
    }
}

fn interval_text(d: Duration) -> String {
    let s = d.as_secs_f64();
    if s.fract() == 0.0 {
        format!("{s:.0}s")
    } else {
        format!("{s}s")
    }
}

fn draw_header(app: &App, frame: &mut Frame<'_>, area: Rect, view: &View) {
    let shown = view.len();
    let dir = if app.sort.descending_by_default() != app.reverse {
        "▼"
    } else {
        "▲"
    };
    let mut title = vec![
        Span::styled(" tcptop ", Style::new().bold().reversed()),
        Span::raw(format!(
            "  hooks: {}  interval: {}  rates: {}  group: {}  sort: {} {dir}",
            app.settings.hooks,
            interval_text(app.settings.interval),
            app.rate_window().label(),
            app.grouping.as_str(),
            app.sort.label(),
        )),
    ];
    if app.frozen.is_some() {
        title.push(Span::raw("  "));
        title.push(Span::styled(
            " PAUSED ",
            Style::new().fg(Color::Black).bg(Color::Yellow).bold(),
        ));
    }
    if app.snapshots == 0 {
        title.push(Span::raw("  waiting for the first snapshot…"));
    }

    let drops = app.drops();
    let drop_style = if drops.any() {
        Style::new().fg(Color::Black).bg(Color::Red).bold()
    } else {
        Style::new()
    };
    let mut counts = vec![
        Span::raw(format!("connections: {}  ", view.rows)),
        Span::styled(
            if drops.evicted == 0 {
                format!("dropped: {} events, {} conns", drops.events, drops.conns)
            } else {
                format!(
                    "dropped: {} events, {} conns, {} evicted",
                    drops.events, drops.conns, drops.evicted
                )
            },
            drop_style,
        ),
    ];
    if !app.filter.is_empty() || app.grouping != Grouping::Connection {
        counts.push(Span::raw(format!("  lines: {shown}")));
    }
    if !view.states.is_empty() {
        let parts: Vec<String> = view
            .states
            .iter()
            .map(|(s, n)| format!("{n} {s}"))
            .collect();
        counts.push(Span::raw(format!("  ({})", parts.join(", "))));
    }

    let (rx, tx) = view.bps;
    let (rx_total, tx_total) = app.totals();
    let traffic = vec![
        Span::styled("RX ", Style::new().bold()),
        Span::raw(format!(
            "{} (total {})  ",
            rate_text(app, rx),
            units::bytes(rx_total)
        )),
        Span::styled("TX ", Style::new().bold()),
        Span::raw(format!(
            "{} (total {})",
            rate_text(app, tx),
            units::bytes(tx_total)
        )),
    ];
    let mut text = vec![Line::from(title), Line::from(counts), Line::from(traffic)];
    if let Some(notice) = &app.settings.notice {
        text.push(Line::from(Span::styled(
            untrusted(notice).into_owned(),
            Style::new().fg(Color::Yellow),
        )));
    }
    frame.render_widget(Paragraph::new(text), area);
}

/// Colour of a rate by its magnitude (bytes per second).
fn rate_style(v: f64) -> Style {
    match v {
        v if v <= 0.0 || v.is_nan() => Style::new().fg(Color::DarkGray),
        v if v < 10.0 * 1024.0 => Style::new(),
        v if v < 1024.0 * 1024.0 => Style::new().fg(Color::Green),
        v if v < 100.0 * 1024.0 * 1024.0 => Style::new().fg(Color::Yellow),
        _ => Style::new().fg(Color::Red).bold(),
    }
}

/// Width limits per column: (min, max).
fn limits(c: Column) -> (usize, usize) {
    match c {
        Column::Pid => (5, 7),
        Column::Process => (7, 20),
        Column::Workload => (8, 28),
        Column::Proto => (5, 5),
        Column::Local | Column::Remote => (9, 47),
        Column::State => (5, 12),
        Column::RxRate | Column::TxRate => (10, 12),
        Column::RxTotal | Column::TxTotal => (9, 10),
        Column::Rtt => (6, 7),
        Column::Retrans => (7, 7),
    }
}

/// Columns that fit in `width`, in display order, with their widths: the
/// most important ones are kept (see `Column::priority`). A width of 0
/// leaves a column out (WORKLOAD when no row has one).
fn fit_columns(widths: &[usize; 13], width: usize) -> Vec<(Column, usize)> {
    let mut by_priority: Vec<usize> = (0..13).filter(|&i| widths[i] > 0).collect();
    by_priority.sort_by_key(|&i| Column::ALL[i].priority());
    let mut keep = [false; 13];
    let mut used = 0;
    for i in by_priority {
        let need = widths[i] + usize::from(used > 0);
        if used + need <= width {
            used += need;
            keep[i] = true;
        }
    }
    (0..13)
        .filter(|&i| keep[i])
        .map(|i| (Column::ALL[i], widths[i]))
        .collect()
}

/// Draws the lines on screen (`visible`: the page `at` settled on).
fn draw_table(
    app: &App,
    frame: &mut Frame<'_>,
    area: Rect,
    visible: &[Item<'_>],
    at: &Settled,
    view: &View,
) {
    let bits = app.settings.bits;
    let names = app.names();
    let cells: Vec<[String; 13]> = visible
        .iter()
        .map(|it| Column::ALL.map(|c| it.cell(c, bits, names)))
        .collect();
    let dir = if app.sort.descending_by_default() != app.reverse {
        "▼"
    } else {
        "▲"
    };
    let titles: [String; 13] = Column::ALL.map(|c| {
        if app.sort.marks(c) {
            format!("{}{dir}", c.title())
        } else {
            c.title().to_string()
        }
    });
    let mut widths = [0usize; 13];
    for (i, c) in Column::ALL.iter().enumerate() {
        let (min, max) = limits(*c);
        let content = cells
            .iter()
            .map(|row| row[i].chars().count())
            .max()
            .unwrap_or(0);
        widths[i] = content.clamp(min, max).max(titles[i].chars().count());
    }
    // No workload known on any line (no cgroup v2, another OS): no column.
    if let Some(w) = Column::ALL.iter().position(|c| *c == Column::Workload)
        && !view.any_workload
    {
        widths[w] = 0;
    }
    let cols = fit_columns(&widths, usize::from(area.width));
    let index = |c: Column| Column::ALL.iter().position(|x| *x == c).unwrap_or(0);

    let aligned = |text: String, c: Column| {
        let line = Line::from(text);
        if c.right_aligned() {
            line.alignment(Alignment::Right)
        } else {
            line
        }
    };
    let header = TableRow::new(
        cols.iter()
            .map(|(c, _)| Cell::from(aligned(titles[index(*c)].clone(), *c))),
    )
    .style(Style::new().bold().reversed());
    let rows = visible
        .iter()
        .zip(cells)
        .enumerate()
        .map(|(n, (it, text))| {
            let is_selected = at.index == Some(at.offset + n);
            let row_cells = cols.iter().map(|(c, _)| {
                let t = text[index(*c)].clone();
                let style = match c {
                    Column::RxRate if !it.closed => rate_style(it.rx_bps),
                    Column::TxRate if !it.closed => rate_style(it.tx_bps),
                    _ => Style::new(),
                };
                Cell::from(aligned(t, *c)).style(style)
            });
            let mut style = Style::new();
            if it.closed {
                style = style.fg(Color::DarkGray).add_modifier(Modifier::DIM);
            }
            if is_selected {
                style = style.add_modifier(Modifier::REVERSED);
            }
            TableRow::new(row_cells).style(style)
        });
    let constraints: Vec<Constraint> = cols
        .iter()
        .map(|(_, w)| Constraint::Length(*w as u16))
        .collect();
    let table = Table::new(rows, constraints)
        .header(header)
        .column_spacing(1);
    frame.render_widget(table, area);
    if view.is_empty() && area.height > 2 {
        let msg = if app.snapshots == 0 {
            "waiting for data…"
        } else if app.filter.is_empty() {
            "no connections"
        } else {
            "no connections match the filter"
        };
        let r = Rect {
            y: area.y + 2,
            height: 1,
            ..area
        };
        frame.render_widget(
            Paragraph::new(msg).alignment(Alignment::Center).dark_gray(),
            r,
        );
    }
}

fn draw_footer(app: &App, frame: &mut Frame<'_>, area: Rect, shown: usize) {
    let filter = untrusted(&app.filter);
    let line = if app.editing_filter {
        Line::from(vec![
            Span::styled("/", Style::new().bold()),
            Span::raw(filter.into_owned()),
            Span::styled("█", Style::new().slow_blink()),
            Span::raw(format!("   {shown} shown  Enter: keep  Esc: clear")).dark_gray(),
        ])
    } else if !app.filter.is_empty() {
        Line::from(vec![
            Span::styled("filter: ", Style::new().bold()),
            Span::raw(filter.into_owned()).yellow(),
            Span::raw(format!("   {shown} shown  /: edit  Esc: clear")).dark_gray(),
        ])
    } else if let Some(status) = app.status() {
        Line::from(Span::styled(
            format!("⚠ {}", untrusted(status)),
            Style::new().red().bold(),
        ))
    } else {
        let mut spans = Vec::new();
        for (k, what) in [
            ("q", "quit"),
            ("?", "help"),
            ("/", "filter"),
            ("p", "pause"),
            ("<>", "sort"),
            ("r", "reverse"),
            ("g", "group"),
            ("Enter", "details"),
            ("n", "dns"),
            ("s", "ports"),
        ] {
            // Hints that do not fit are left out (all are in the help).
            let used: usize = spans.iter().map(Span::width).sum();
            if used + k.len() + 1 + what.len() > usize::from(area.width) {
                break;
            }
            spans.push(Span::styled(k, Style::new().bold()));
            spans.push(Span::raw(format!(" {what}  ")));
        }
        Line::from(spans)
    };
    frame.render_widget(Paragraph::new(line), area);
}

/// A rectangle `w` x `h` centred in `area` (clipped to it).
fn centered(area: Rect, w: u16, h: u16) -> Rect {
    let w = w.min(area.width);
    let h = h.min(area.height);
    Rect {
        x: area.x + (area.width - w) / 2,
        y: area.y + (area.height - h) / 2,
        width: w,
        height: h,
    }
}

fn draw_help(frame: &mut Frame<'_>, area: Rect) {
    let lines: Vec<Line> = KEYS
        .iter()
        .map(|(k, what)| {
            Line::from(vec![
                Span::styled(format!("{k:>12}  "), Style::new().bold()),
                Span::raw(*what),
            ])
        })
        .collect();
    let r = centered(area, 68, KEYS.len() as u16 + 2);
    frame.render_widget(Clear, r);
    frame.render_widget(
        Paragraph::new(lines).block(Block::bordered().title(" keys ")),
        r,
    );
}

fn age_text(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m{:02}s", s / 60, s % 60),
        s => format!("{}h{:02}m", s / 3600, (s / 60) % 60),
    }
}

fn draw_detail(app: &App, frame: &mut Frame<'_>, area: Rect) {
    let r = centered(area, area.width.saturating_sub(4).min(100), 22);
    frame.render_widget(Clear, r);
    let block = Block::bordered().title(" connection (Esc closes) ");
    let inner = block.inner(r);
    frame.render_widget(block, r);
    let Some(row) = app.selected_row() else {
        frame.render_widget(Paragraph::new("this connection is no longer listed"), inner);
        return;
    };
    let label = |s: &'static str| Span::styled(format!("{s:<10}"), Style::new().bold());
    let (user, cmdline) = match &app.detail_proc {
        Some((_, p)) => (
            p.user
                .as_deref()
                .map_or("?".into(), |u| untrusted(u).into_owned()),
            p.cmdline
                .as_deref()
                .map_or("(not available)".into(), |c| untrusted(c).into_owned()),
        ),
        None => ("?".into(), "(not available)".into()),
    };
    let closed = match row.closed_at() {
        Some(t) => format!(
            "  closed {} ago",
            age_text(app.now.saturating_duration_since(t))
        ),
        None => String::new(),
    };
    let mut lines = vec![
        Line::from(vec![
            label("endpoints"),
            Span::raw(format!(
                "{} {} → {}  (netns {})",
                row.key.proto.as_str(),
                row.key.local,
                row.key.remote,
                row.key.netns
            )),
        ]),
        Line::from(vec![
            label("state"),
            Span::raw(format!(
                "{:<12} age {}{closed}",
                row.state.as_str(),
                age_text(app.now.saturating_duration_since(row.first_seen()))
            )),
        ]),
        Line::from(vec![
            label("process"),
            Span::raw(if row.pid == 0 {
                "(not known yet)".to_string()
            } else {
                format!("{} {}  user {user}", row.pid, untrusted(&row.comm))
            }),
        ]),
        Line::from(vec![label("command"), Span::raw(cmdline)]),
        Line::from(vec![
            label("received"),
            Span::raw(format!(
                "{} in {} packets, now {}",
                units::bytes(row.counters.rx_bytes),
                row.counters.rx_packets,
                rate_text(app, row.rx_bps)
            )),
        ]),
        Line::from(vec![
            label("sent"),
            Span::raw(format!(
                "{} in {} packets, now {}",
                units::bytes(row.counters.tx_bytes),
                row.counters.tx_packets,
                rate_text(app, row.tx_bps)
            )),
        ]),
        Line::from(vec![
            label("rtt"),
            Span::raw(format!(
                "{}  retransmits {}",
                units::rtt(row.rtt_us),
                row.counters.retrans
            )),
        ]),
    ];
    if let Some(w) = &row.workload {
        let or_dash = |v: &Option<String>| {
            v.as_deref()
                .map_or_else(|| "-".into(), |t| untrusted(t).into_owned())
        };
        lines.insert(
            4,
            Line::from(vec![label("cgroup"), Span::raw(untrusted(&w.cgroup))]),
        );
        lines.insert(
            5,
            Line::from(vec![
                label("workload"),
                Span::raw(format!(
                    "unit {}  container {}  pod {}",
                    or_dash(&w.unit),
                    or_dash(&w.container),
                    or_dash(&w.pod)
                )),
            ]),
        );
    }
    if app.show_dns {
        lines.insert(
            1,
            Line::from(vec![label("host"), Span::raw(host_text(app, row))]),
        );
    }
    let [info, graphs] =
        Layout::vertical([Constraint::Length(lines.len() as u16), Constraint::Min(0)]).areas(inner);
    frame.render_widget(Paragraph::new(lines).wrap(Wrap { trim: false }), info);
    draw_sparklines(app, frame, graphs, row);
}

/// The remote host's name for the detail pane, in full (escaped).
fn host_text(app: &App, row: &Row) -> String {
    let ip = row.key.remote.ip();
    match app.resolver.cached(ip) {
        Some(name) => untrusted(name).into_owned(),
        None if ip.is_unspecified() => "-".into(),
        None if app.resolver.is_known(ip) && !app.resolver.is_pending(ip) => "(no name)".into(),
        None => "(looking up…)".into(),
    }
}

fn draw_sparklines(app: &App, frame: &mut Frame<'_>, area: Rect, row: &Row) {
    let series = app.table.history(row);
    if series.is_empty() {
        return;
    }
    let n = usize::from(area.width);
    let tail = |v: Vec<u64>| -> Vec<u64> {
        let skip = v.len().saturating_sub(n);
        v[skip..].to_vec()
    };
    let rx = tail(series.iter().map(|p| p.rx_bps.round() as u64).collect());
    let tx = tail(series.iter().map(|p| p.tx_bps.round() as u64).collect());
    // (f32 samples: rounding error far below a sparkline's resolution.)
    let rtt = tail(series.iter().map(|p| u64::from(p.rtt_us)).collect());
    let max = |v: &[u64]| v.iter().copied().max().unwrap_or(0);
    let secs = app.settings.interval.as_secs_f64() * series.len() as f64;
    let graphs = [
        (
            format!(
                "RX/s, last {}, peak {}",
                age_text(Duration::from_secs_f64(secs)),
                rate_text(app, max(&rx) as f64)
            ),
            rx,
            Color::Cyan,
        ),
        (
            format!("TX/s, peak {}", rate_text(app, max(&tx) as f64)),
            tx,
            Color::Magenta,
        ),
        (
            format!(
                "RTT, peak {}",
                units::rtt(u32::try_from(max(&rtt)).ok().filter(|v| *v > 0))
            ),
            rtt,
            Color::Yellow,
        ),
    ];
    let areas = Layout::vertical([Constraint::Ratio(1, 3); 3]).split(area);
    for ((title, data, colour), a) in graphs.into_iter().zip(areas.iter()) {
        if a.height == 0 {
            continue;
        }
        let [t, g] = Layout::vertical([Constraint::Length(1), Constraint::Min(0)]).areas(*a);
        frame.render_widget(Paragraph::new(title).dark_gray(), t);
        frame.render_widget(Sparkline::default().data(&data).style(colour), g);
    }
}
