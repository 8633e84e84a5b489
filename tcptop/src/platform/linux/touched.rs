//! The sockets the kernel programs touched since the last snapshot
//! (`tcptop-ebpf/src/touch.rs`), on the socket diagnostics' refresh path
//! (the kernel refused the map iterator): a snapshot reads and refreshes
//! only those records, one lookup and one diagnostics query each, instead
//! of reading every record and dumping every namespace. At 100,000 idle
//! connections that was ~0.8 s of CPU a snapshot for nothing new.
//!
//! Every record is refreshed as before (a full refresh: dumps) after a
//! touch was lost (the ring was full), when touches are many (then a dump
//! costs less per socket than a query), after a touched socket without a
//! record did not end (one adopted from a dump, no call yet), at the first
//! snapshot if connections were adopted from a dump, and once a minute:
//! what no hook sees (segments of data not read yet, keepalives) is at
//! most that old. Otherwise the first snapshot reads every record and
//! refreshes the touched ones (the TCP iterator has just adopted the
//! others, touching began before any hook attached).

use std::time::{Duration, Instant};

use aya::Ebpf;
use aya::maps::{Array, MapData, PerCpuArray, RingBuf};
use tcptop_common::{
    MAP_SETTINGS, MAP_TOUCH_CPU, MAP_TOUCHED, SETTING_FILL_ESTABLISHED, SETTING_LAZY_READS,
    SETTING_TOUCH, SETTING_TOUCH_GEN, TOUCHED_BYTES, TouchCpu,
};

use super::hooks::{self, LoadError};

/// The programs this path needs, named like their tracepoints (the
/// read's also makes the lazy walk's records: [`attach_for_lazy`]).
pub const PROGRAMS: [&str; 2] = ["tcp_retransmit_skb", READ_PROGRAM];

/// The read tracepoint's program.
const READ_PROGRAM: &str = "tcp_rcv_space_adjust";

/// How often every record is refreshed anyway.
const FULL_EVERY: Duration = Duration::from_secs(60);

/// Below this many touched sockets a snapshot always queries them one by
/// one; above, when they are more than an eighth of the records, a full
/// refresh (one dump per namespace) costs less.
const QUERY_FLOOR: usize = 1024;

/// The ring's size in bytes: `TOUCHED_BYTES`, or (test builds, to make it
/// overflow: `super::SWITCHES`) `TCPTOP_TEST_TOUCH_RING`, a power of two of
/// at least a page.
pub fn ring_bytes() -> u32 {
    let given = super::SWITCHES
        .then(|| std::env::var("TCPTOP_TEST_TOUCH_RING").ok())
        .flatten()
        .and_then(|v| v.parse::<u32>().ok())
        .filter(|n| n.is_power_of_two() && *n >= 4096);
    given.unwrap_or(TOUCHED_BYTES)
}

pub struct Touched {
    ring: RingBuf<MapData>,
    cpu: PerCpuArray<MapData, TouchCpu>,
    settings: Array<MapData, u32>,
    generation: u32,
    /// Touches lost so far (the sum over CPUs).
    lost: u64,
    /// Sockets to refresh again at the next snapshot: those touched at
    /// this one (a state is set after its tracepoint fires, an RTT moves
    /// with the ACKs after a call) and those still connecting.
    again: Vec<u64>,
    last_full: Option<Instant>,
    /// The next snapshot refreshes every record ([`Touched::full_next`]).
    full_next: bool,
    /// Records at the last full refresh.
    records: usize,
    /// `SETTING_LAZY_READS` once set ([`Touched::lazy_reads`]).
    lazy_reads: u32,
    /// Test instrument (`TCPTOP_TEST_SAY=touches`): a line on stderr per
    /// snapshot saying what it refreshes and why, so that a test that
    /// fails can tell a lost touch from a missed refresh.
    say: bool,
    /// Test instrument ([`gap_for_test`]): a pause between advancing the
    /// generation and taking the ring.
    gap: Option<Duration>,
}

/// Test builds (`super::SWITCHES`): `TCPTOP_TEST_TOUCH_GAP_MS=N` makes each
/// snapshot wait N ms between advancing the generation and taking the
/// ring, saying so on stderr first (`touches: generation G written`), so
/// that a test can make touches in a generation whose snapshot has begun:
/// a race of a few microseconds otherwise.
fn gap_for_test() -> Option<Duration> {
    super::SWITCHES
        .then(|| std::env::var("TCPTOP_TEST_TOUCH_GAP_MS").ok())
        .flatten()
        .and_then(|v| v.parse::<u64>().ok())
        .map(Duration::from_millis)
}

/// What a snapshot refreshes.
pub enum Refresh {
    /// Every record.
    Full,
    /// Every record, only these sockets' refreshed (sorted, no repeats):
    /// the first snapshot (the TCP iterator has just adopted the others).
    First(Vec<u64>),
    /// Only these sockets (sorted, no repeats).
    Only(Vec<u64>),
}

impl Touched {
    /// Attaches the programs that touch what no call hook sees (each
    /// optional: a warning says what is lost) and turns touching on.
    pub fn start(ebpf: &mut Ebpf) -> Result<(Touched, Vec<String>), String> {
        let mut warnings = Vec::new();
        for name in PROGRAMS {
            if let Err(e) = attach(ebpf, name) {
                warnings.push(lost_warning(name, &e));
            }
        }
        let taken = |e: super::SourceError| e.to_string();
        let ring = super::take_map(ebpf, MAP_TOUCHED, RingBuf::try_from).map_err(taken)?;
        let cpu = super::take_map(ebpf, MAP_TOUCH_CPU, PerCpuArray::try_from).map_err(taken)?;
        let mut settings: Array<MapData, u32> =
            super::take_map(ebpf, MAP_SETTINGS, Array::try_from).map_err(taken)?;
        let generation = 1;
        settings
            .set(SETTING_TOUCH_GEN, &generation, 0)
            .and_then(|()| settings.set(0, &(SETTING_FILL_ESTABLISHED | SETTING_TOUCH), 0))
            .map_err(|e| format!("cannot write the programs' settings: {e}"))?;
        Ok((
            Touched {
                ring,
                cpu,
                settings,
                generation,
                lost: 0,
                again: Vec::new(),
                last_full: None,
                full_next: false,
                records: 0,
                lazy_reads: 0,
                say: super::says_for_test("touches"),
                gap: gap_for_test(),
            },
            warnings,
        ))
    }

    /// Starts a snapshot: advances the generation and takes what was
    /// touched in the one that ended. `complete`: the snapshot must report
    /// every connection; `adopted`: connections without a record were
    /// adopted from a dump (the first snapshot reports them from a dump).
    pub fn begin(&mut self, complete: bool, adopted: bool) -> Refresh {
        // First the generation (a program that reads the new one puts its
        // socket again), then the ring: everything touched before is in it.
        self.generation = self.generation.wrapping_add(1).max(1);
        let advanced = self.settings.set(SETTING_TOUCH_GEN, &self.generation, 0);
        if let Some(gap) = self.gap {
            eprintln!("touches: generation {} written", self.generation);
            std::thread::sleep(gap);
        }
        let mut sockets = Vec::new();
        while let Some(item) = self.ring.next() {
            if let Some(b) = item.get(..8).and_then(|b| <[u8; 8]>::try_from(b).ok()) {
                sockets.push(u64::from_ne_bytes(b));
            }
        }
        // Touched now: refreshed again at the next snapshot.
        let before = std::mem::replace(&mut self.again, sockets.clone());
        let again = before.len();
        sockets.extend(before);
        let lost = self
            .cpu
            .get(&0, 0)
            .map(|v| v.iter().map(|c| c.lost).fold(0u64, u64::saturating_add))
            .unwrap_or(u64::MAX);
        let lost_some = lost != self.lost;
        self.lost = lost;
        sockets.sort_unstable();
        sockets.dedup();
        let first = self.last_full.is_none();
        let many = sockets.len() > QUERY_FLOOR && sockets.len() > self.records / 8;
        let due = self.last_full.is_some_and(|t| t.elapsed() >= FULL_EVERY);
        let full_next = std::mem::take(&mut self.full_next);
        let full = lost_some
            || many
            || full_next
            || advanced.is_err()
            || due
            || (complete && !first)
            || (adopted && first);
        if self.say {
            let at = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default();
            let kind = match (full, first) {
                (true, _) => "full",
                (false, true) => "first",
                (false, false) => "only",
            };
            eprintln!(
                "touches: at {:.3} generation {} sockets {} (again {again}) lost {lost} \
                 (lost_some {lost_some} many {many} full_next {full_next} due {due} \
                 complete {complete}): {kind}",
                at.as_secs_f64(),
                self.generation,
                sockets.len(),
            );
        }
        if full {
            self.last_full = Some(Instant::now());
            return Refresh::Full;
        }
        if first {
            self.last_full = Some(Instant::now());
            return Refresh::First(sockets);
        }
        Refresh::Only(sockets)
    }

    /// Whether the test instrument `TCPTOP_TEST_SAY=touches` is on.
    pub fn says(&self) -> bool {
        self.say
    }

    /// Makes the next snapshot refresh every record: a socket was touched
    /// that has no record and did not end, one adopted from a dump (no
    /// call yet) whose state changed.
    pub fn full_next(&mut self) {
        self.full_next = true;
    }

    /// Sockets whose connections ended (their CLOSE events): not
    /// refreshed again.
    pub fn ended(&mut self, ended: &foldhash::HashSet<u64>) {
        if !ended.is_empty() {
            self.again.retain(|sk| !ended.contains(sk));
        }
    }

    /// Stops touching (the records still complete at ESTABLISHED, and the
    /// lazy walk's sockets still get theirs).
    pub fn stop(mut self) {
        let _ = self
            .settings
            .set(0, &(SETTING_FILL_ESTABLISHED | self.lazy_reads), 0);
    }

    /// Whether the read program makes a record for a socket the lazy walk
    /// left without one ([`attach_for_lazy`]; here it is attached
    /// already): on while such sockets are open.
    pub fn lazy_reads(&mut self, on: bool) -> Result<(), String> {
        self.lazy_reads = if on { SETTING_LAZY_READS } else { 0 };
        self.settings
            .set(
                0,
                &(SETTING_FILL_ESTABLISHED | SETTING_TOUCH | self.lazy_reads),
                0,
            )
            .map_err(|e| format!("cannot write the programs' settings: {e}"))
    }

    /// After a full refresh: how many records there were.
    pub fn full_done(&mut self, records: usize) {
        self.records = records;
    }

    /// Refreshes `sk` again at the next snapshot (a record still
    /// connecting, or one whose bytes the last answer left untold).
    pub fn again(&mut self, sk: u64) {
        self.again.push(sk);
    }
}

/// On the map iterator's path (no touches), attaches the read program for
/// the lazy walk's sockets alone: it makes the record of an idle
/// connection open before start when it reads (`conn::lazy_record` in
/// the kernel; user space sets `SETTING_LAZY_READS` after). A warning if
/// it is lost.
pub fn attach_for_lazy(ebpf: &mut Ebpf) -> Option<String> {
    let e = attach(ebpf, READ_PROGRAM).err()?;
    Some(format!("{e}: {LAZY_READS_LOST}"))
}

/// Attaches the program `name` of [`PROGRAMS`] (`TCPTOP_TEST_REFUSE=touch`
/// refuses it); unloaded again if that fails.
fn attach(ebpf: &mut Ebpf, name: &str) -> Result<(), LoadError> {
    let what = format!("the program for tracepoint {name}");
    let attached = hooks::refused_for_test("touch", &what)
        .and_then(|()| hooks::attach_raw_tracepoint(ebpf, name));
    if attached.is_err() {
        hooks::unload(ebpf, [name.to_string()]);
    }
    attached
}

/// What is lost without the lazy walk's reads.
pub const LAZY_READS_LOST: &str = "bytes an idle connection open before start reads without a \
     receive call (splice, zero-copy) show once it makes a call, changes state or ends";

fn lost_warning(name: &str, e: &LoadError) -> String {
    let what = match name {
        "tcp_retransmit_skb" => {
            "a connection idle for its application shows new retransmits only at the \
             next full refresh (once a minute)"
        }
        _ => {
            "bytes read without a receive call (splice, zero-copy) show at the next call, \
             full refresh (once a minute) or the connection's end"
        }
    };
    format!("{e}: {what}")
}
