//! CSV: a header, then one row per connection per snapshot, with the same
//! fields as JSON lines (see `record.rs`).
//!
//! Spreadsheets run a cell that starts with `=`, `+`, `-` or `@` (and some
//! also tab or carriage return) as a formula, and process names are chosen
//! by whoever starts the process. Such a text field is written with a
//! leading `'` (the spreadsheet convention for "literal text"), as is a field
//! that already starts with `'`, so [`unneutralize`] restores every value
//! exactly. Commas, quotes and newlines are quoted by the CSV writer.

use std::borrow::Cow;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use super::record::Record;
use crate::table::Row;

fn needs_guard(s: &str) -> bool {
    matches!(
        s.as_bytes().first(),
        Some(b'=' | b'+' | b'-' | b'@' | b'\t' | b'\r' | b'\'')
    )
}

/// The text written for a field: prefixed with `'` when a spreadsheet
/// could take it for a formula.
pub fn neutralize(s: &str) -> Cow<'_, str> {
    if needs_guard(s) {
        Cow::Owned(format!("'{s}"))
    } else {
        Cow::Borrowed(s)
    }
}

/// The value of a field read back: undoes [`neutralize`].
pub fn unneutralize(s: &str) -> &str {
    match s.strip_prefix('\'') {
        Some(rest) if needs_guard(rest) => rest,
        _ => s,
    }
}

/// The text fields of a record: the ones the formula guard applies to
/// (control group names included: chosen by whoever made the group).
fn text_fields<'r, 'a>(r: &'r mut Record<'a>) -> impl Iterator<Item = &'r mut Cow<'a, str>> {
    [
        &mut r.comm,
        &mut r.proto,
        &mut r.local,
        &mut r.remote,
        &mut r.state,
        &mut r.hooks,
    ]
    .into_iter()
    .chain(
        [&mut r.cgroup, &mut r.unit, &mut r.container, &mut r.pod]
            .into_iter()
            .flatten(),
    )
}

fn guarded(mut r: Record<'_>) -> Record<'_> {
    for f in text_fields(&mut r) {
        if needs_guard(f) {
            *f = Cow::Owned(neutralize(f).into_owned());
        }
    }
    r
}

/// Writes rows (and, with `header`, the header line first).
pub fn write<W: Write>(
    out: W,
    header: bool,
    ts: f64,
    hooks: &str,
    rows: &[&Row],
) -> io::Result<()> {
    let mut w = csv::WriterBuilder::new()
        .has_headers(header)
        .from_writer(out);
    if header && rows.is_empty() {
        w.write_record(HEADER)?;
    }
    for r in rows {
        w.serialize(guarded(Record::new(ts, hooks, r)))
            .map_err(io::Error::other)?;
    }
    w.flush()
}

/// Field names, in order (the header line).
pub const HEADER: [&str; 21] = [
    "ts",
    "pid",
    "comm",
    "proto",
    "local",
    "remote",
    "state",
    "tx_bytes",
    "rx_bytes",
    "tx_packets",
    "rx_packets",
    "tx_bps",
    "rx_bps",
    "rtt_us",
    "retrans",
    "netns",
    "cgroup",
    "unit",
    "container",
    "pod",
    "hooks",
];

/// Reads back what [`write`] wrote.
pub fn read(input: impl io::Read) -> Result<Vec<Record<'static>>, csv::Error> {
    let mut out = Vec::new();
    for rec in csv::Reader::from_reader(input).deserialize::<Record<'static>>() {
        let mut r = rec?;
        for f in text_fields(&mut r) {
            let v = unneutralize(f).to_string();
            *f = Cow::Owned(v);
        }
        out.push(r);
    }
    Ok(out)
}

/// `--log FILE`: CSV appended while tcptop runs, flushed every snapshot.
pub struct CsvLog {
    path: PathBuf,
    file: File,
    /// Write the header before the next rows (the file was empty).
    header: bool,
}

#[derive(Debug, thiserror::Error)]
#[error("cannot open the log file \"{path}\": {source}")]
pub struct LogOpenError {
    path: String,
    source: io::Error,
}

impl CsvLog {
    /// Opens (creating or appending to) `path`: an error here is reported
    /// before tcptop starts.
    pub fn open(path: &Path) -> Result<CsvLog, LogOpenError> {
        let err = |source| LogOpenError {
            path: path.display().to_string(),
            source,
        };
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(err)?;
        let empty = file.metadata().map_err(err)?.len() == 0;
        Ok(CsvLog {
            path: path.to_path_buf(),
            file,
            header: empty,
        })
    }

    /// Appends one snapshot's rows. On error (disk full…) the caller shows
    /// the message and carries on; the next snapshot tries again.
    pub fn append(&mut self, ts: f64, hooks: &str, rows: &[&Row]) -> Result<(), String> {
        write(&mut self.file, self.header, ts, hooks, rows)
            .map_err(|e| format!("log file \"{}\": {e}", self.path.display()))?;
        self.header = false;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{ConnKey, ConnSample, ConnState, Counters, Proto, Snapshot};
    use crate::table::ConnTable;
    use std::time::Instant;

    fn table(comms: &[&str]) -> ConnTable {
        let mut t = ConnTable::new();
        let live = comms
            .iter()
            .enumerate()
            .map(|(i, c)| ConnSample {
                key: ConnKey {
                    proto: Proto::Tcp,
                    local: format!("127.0.0.1:{}", 1000 + i).parse().unwrap(),
                    remote: "[::1]:443".parse().unwrap(),
                    netns: 4026531840,
                },
                id: i as u64 + 1,
                pid: 100 + i as u32,
                comm: (*c).into(),
                state: ConnState::Established,
                counters: Counters {
                    tx_bytes: 1234,
                    rx_bytes: 99,
                    tx_packets: 3,
                    rx_packets: 2,
                    retrans: 1,
                },
                rtt_us: if i % 2 == 0 { Some(42) } else { None },
                cgroup_id: i as u64,
                active: None,
                // Group names are as hostile as process names.
                workload: (i % 2 == 1).then(|| {
                    std::sync::Arc::new(crate::model::Workload {
                        cgroup: (*c).to_string(),
                        unit: Some((*c).to_string()),
                        container: Some((*c).to_string()),
                        pod: Some((*c).to_string()),
                    })
                }),
            })
            .collect();
        t.apply(
            Snapshot {
                live,
                ..Default::default()
            },
            Instant::now(),
            1.0,
        );
        t
    }

    #[test]
    fn round_trip_is_exact_and_formulas_are_neutralized() {
        let hostile = [
            "=cmd|' /C calc'!A0",
            "+1+1",
            "-bash",
            "@SUM(A1)",
            "'=already",
            "a,b\"c\nd",
            "plain",
            "\tx",
        ];
        let t = table(&hostile);
        let mut rows: Vec<&Row> = t.rows().collect();
        rows.sort_by_key(|r| r.pid);
        let mut buf = Vec::new();
        write(&mut buf, true, 1795616833.2126, "tracepoint", &rows).unwrap();
        write(&mut buf, false, 1795616834.0, "tracepoint", &rows).unwrap();
        let text = String::from_utf8(buf.clone()).unwrap();
        assert!(text.starts_with("ts,pid,comm,proto,local,remote,state,tx_bytes,"));
        assert_eq!(text.matches("ts,pid").count(), 1, "one header");
        // No cell of the written file starts with a formula character.
        for rec in csv::ReaderBuilder::new()
            .has_headers(true)
            .from_reader(buf.as_slice())
            .records()
        {
            for cell in rec.unwrap().iter() {
                assert!(
                    !matches!(
                        cell.as_bytes().first(),
                        Some(b'=' | b'+' | b'-' | b'@' | b'\t')
                    ),
                    "cell {cell:?} would run in a spreadsheet"
                );
            }
        }
        let back = read(buf.as_slice()).unwrap();
        assert_eq!(back.len(), 2 * hostile.len());
        let want: Vec<Record> = rows
            .iter()
            .map(|r| Record::new(1795616833.2126, "tracepoint", r))
            .collect();
        assert_eq!(&back[..hostile.len()], &want[..]);
        assert_eq!(back[2].comm, "-bash");
        assert_eq!(back[0].ts, 1795616833.213);
        assert_eq!(back[1].rtt_us, None);
        assert_eq!(back[0].rtt_us, Some(42));
        // Control characters were escaped before they reached the file.
        assert_eq!(back[5].comm, "a,b\"c\\x0ad");
        assert_eq!(back[5].pod.as_deref(), Some("a,b\"c\\x0ad"));
        assert_eq!(back[1].unit.as_deref(), Some("+1+1"));
        assert_eq!(back[0].cgroup, None);
    }

    #[test]
    fn header_only_once_per_file_and_open_errors() {
        let dir = std::env::temp_dir().join(format!("tcptop-csv-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("log.csv");
        let _ = std::fs::remove_file(&path);
        let t = table(&["curl"]);
        let rows: Vec<&Row> = t.rows().collect();
        let mut log = CsvLog::open(&path).unwrap();
        log.append(1.0, "tp", &rows).unwrap();
        log.append(2.0, "tp", &rows).unwrap();
        drop(log);
        let mut log = CsvLog::open(&path).unwrap();
        log.append(3.0, "tp", &rows).unwrap();
        let back = read(std::fs::File::open(&path).unwrap()).unwrap();
        assert_eq!(
            back.iter().map(|r| r.ts).collect::<Vec<_>>(),
            [1.0, 2.0, 3.0]
        );
        let err = CsvLog::open(Path::new("/nonexistent-dir/x.csv"))
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("\"/nonexistent-dir/x.csv\""), "{err}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
