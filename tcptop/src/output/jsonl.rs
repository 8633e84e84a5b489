//! One JSON object per connection per snapshot.

use std::io::{self, Write};

use super::record::Record;
use crate::table::Row;

pub fn write(out: &mut impl Write, ts: f64, hooks: &str, rows: &[&Row]) -> io::Result<()> {
    for r in rows {
        serde_json::to_writer(&mut *out, &Record::new(ts, hooks, r))?;
        out.write_all(b"\n")?;
    }
    Ok(())
}
