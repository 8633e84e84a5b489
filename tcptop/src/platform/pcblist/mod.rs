//! macOS's socket lists, `sysctl net.inet.tcp.pcblist_n` and
//! `net.inet.udp.pcblist_n` (what `netstat` reads), made into snapshots.
//! Pure over bytes and built on every platform, so that the parser and the
//! bookkeeping are tested on Linux too; only `platform/macos` reads the
//! lists from the kernel.
//!
//! - [`layout`]: the records as XNU lays them out, with compile-time size
//!   and offset checks.
//! - [`parse`]: one list's bytes to one [`Pcb`] per socket, a clear error
//!   for anything short or malformed, never a panic.
//! - [`procargs`]: a process's command line from `kern.procargs2`.
//! - [`track`]: lists read one interval apart to snapshots: counters since
//!   tcptop started, sockets gone since the previous read reported CLOSED
//!   with their last counters.

pub mod layout;
pub mod parse;
pub mod procargs;
pub mod track;

pub use parse::{Counting, List, ParseError, Pcb, PcbStats, TcpInfo, parse, read_consistent};
pub use track::Tracker;

#[cfg(test)]
mod tests;
