//! An aligned table per snapshot, with a summary line.

use std::io::{self, Write};

use super::units;
use crate::escape::untrusted;
use crate::model::{ConnState, Drops};
use crate::table::Row;

pub struct Header<'a> {
    /// Wall-clock time, already formatted.
    pub time: &'a str,
    pub hooks: &'a str,
    pub drops: Drops,
}

const COLS: [(&str, usize, bool); 12] = [
    // (title, min width, right-aligned)
    ("PID", 7, true),
    ("PROCESS", 15, false),
    ("PROTO", 5, false),
    ("LOCAL", 21, false),
    ("REMOTE", 21, false),
    ("STATE", 11, false),
    ("RX/s", 10, true),
    ("TX/s", 10, true),
    ("RX", 10, true),
    ("TX", 10, true),
    ("RTT", 7, true),
    ("RETRANS", 7, true),
];

fn cells(r: &Row) -> [String; 12] {
    [
        if r.pid == 0 {
            "-".into()
        } else {
            r.pid.to_string()
        },
        untrusted(&r.comm).into_owned(),
        r.key.proto.as_str().into(),
        super::addr_text(&r.key.local),
        super::addr_text(&r.key.remote),
        r.state.as_str().into(),
        units::rate(r.rx_bps),
        units::rate(r.tx_bps),
        units::bytes(r.counters.rx_bytes),
        units::bytes(r.counters.tx_bytes),
        units::rtt(r.rtt_us),
        r.counters.retrans.to_string(),
    ]
}

pub fn write(out: &mut impl Write, h: &Header<'_>, rows: &[&Row]) -> io::Result<()> {
    let established = rows
        .iter()
        .filter(|r| r.state == ConnState::Established)
        .count();
    let closed = rows.iter().filter(|r| r.is_closed()).count();
    let udp = rows.iter().filter(|r| r.state == ConnState::Flow).count();
    let (rx, tx) = rows
        .iter()
        .fold((0.0, 0.0), |(rx, tx), r| (rx + r.rx_bps, tx + r.tx_bps));
    writeln!(
        out,
        "tcptop {}  hooks: {}  connections: {} ({} established, {} UDP, {} closed)  RX {}  TX {}  dropped: {} events, {} connections",
        h.time,
        h.hooks,
        rows.len(),
        established,
        udp,
        closed,
        units::rate(rx),
        units::rate(tx),
        h.drops.events,
        h.drops.conns,
    )?;
    if h.drops.evicted != 0 {
        writeln!(
            out,
            "evicted {} idle UDP flows (flow table nearly full)",
            h.drops.evicted
        )?;
    }
    let body: Vec<[String; 12]> = rows.iter().map(|r| cells(r)).collect();
    let mut widths: Vec<usize> = COLS.iter().map(|c| c.0.len().max(c.1)).collect();
    for row in &body {
        for (w, cell) in widths.iter_mut().zip(row.iter()) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: &mut dyn Iterator<Item = &str>| -> String {
        let mut s = String::new();
        for (i, cell) in cells.enumerate() {
            let (w, right) = (widths[i], COLS[i].2);
            if i > 0 {
                s.push(' ');
            }
            if right {
                s.push_str(&format!("{cell:>w$}"));
            } else {
                s.push_str(&format!("{cell:<w$}"));
            }
        }
        s.trim_end().to_string()
    };
    writeln!(out, "{}", line(&mut COLS.iter().map(|c| c.0)))?;
    for row in &body {
        writeln!(out, "{}", line(&mut row.iter().map(String::as_str)))?;
    }
    writeln!(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{ConnKey, ConnSample, Counters, Proto, Snapshot};
    use crate::table::ConnTable;
    use std::time::Instant;

    #[test]
    fn aligned_table_with_escaped_names() {
        let mut t = ConnTable::new();
        let s = ConnSample {
            key: ConnKey {
                proto: Proto::Tcp,
                local: "127.0.0.1:40000".parse().unwrap(),
                remote: "[::1]:443".parse().unwrap(),
                netns: 1,
            },
            id: 1,
            pid: 4242,
            comm: "evil\x1b[2J".into(),
            state: ConnState::Established,
            counters: Counters {
                tx_bytes: 2048,
                rx_bytes: 100,
                ..Default::default()
            },
            rtt_us: Some(120),
            cgroup_id: 0,
            active: None,
            workload: None,
        };
        t.apply(
            Snapshot {
                live: vec![s],
                ..Default::default()
            },
            Instant::now(),
            2.0,
        );
        let rows: Vec<&Row> = t.rows().collect();
        let mut out = Vec::new();
        let h = Header {
            time: "12:00:00",
            hooks: "test",
            drops: Drops::default(),
        };
        write(&mut out, &h, &rows).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(!text.contains('\x1b'));
        let expected = "\
tcptop 12:00:00  hooks: test  connections: 1 (1 established, 0 UDP, 0 closed)  RX 50 B/s  TX 1.0 KiB/s  dropped: 0 events, 0 connections
    PID PROCESS         PROTO LOCAL                 REMOTE                STATE             RX/s       TX/s         RX         TX     RTT RETRANS
   4242 evil\\x1b[2J     tcp   127.0.0.1:40000       [::1]:443             ESTABLISHED     50 B/s  1.0 KiB/s      100 B    2.0 KiB   120us       0

";
        assert_eq!(text, expected);
    }
}
