//! What the table shows: connections, or sums of them per process or per
//! remote host, filtered by the live filter and sorted by a column.

use std::cmp::Ordering;
use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};

use crate::escape::untrusted;
use crate::model::{ConnKey, ConnState, Proto};
use crate::names::{self, Resolver, Services};
use crate::output::units;
use crate::table::Row;

/// How rows are grouped.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Grouping {
    #[default]
    Connection,
    Process,
    /// By what runs the owner: pod, container, unit or cgroup.
    Workload,
    RemoteHost,
}

impl Grouping {
    pub fn next(self) -> Grouping {
        match self {
            Grouping::Connection => Grouping::Process,
            Grouping::Process => Grouping::Workload,
            Grouping::Workload => Grouping::RemoteHost,
            Grouping::RemoteHost => Grouping::Connection,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Grouping::Connection => "connection",
            Grouping::Process => "process",
            Grouping::Workload => "workload",
            Grouping::RemoteHost => "remote",
        }
    }
}

/// Identity of a line on screen, stable across refreshes: the selection
/// follows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ItemId {
    /// One connection instance (key and source id).
    Conn(ConnKey, u64),
    /// All connections of one process (0: owner not known yet).
    Process(u32),
    /// All connections of one workload (a hash of its label; 0: not known).
    Workload(u64),
    /// All connections to one remote address.
    Remote(IpAddr),
}

/// The columns, in display order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Column {
    Pid,
    Process,
    Workload,
    Proto,
    Local,
    Remote,
    State,
    RxRate,
    TxRate,
    RxTotal,
    TxTotal,
    Rtt,
    Retrans,
}

impl Column {
    pub const ALL: [Column; 13] = [
        Column::Pid,
        Column::Process,
        Column::Workload,
        Column::Proto,
        Column::Local,
        Column::Remote,
        Column::State,
        Column::RxRate,
        Column::TxRate,
        Column::RxTotal,
        Column::TxTotal,
        Column::Rtt,
        Column::Retrans,
    ];

    pub fn title(self) -> &'static str {
        match self {
            Column::Pid => "PID",
            Column::Process => "PROCESS",
            Column::Workload => "WORKLOAD",
            Column::Proto => "PROTO",
            Column::Local => "LOCAL",
            Column::Remote => "REMOTE",
            Column::State => "STATE",
            Column::RxRate => "RX/s",
            Column::TxRate => "TX/s",
            Column::RxTotal => "RX",
            Column::TxTotal => "TX",
            Column::Rtt => "RTT",
            Column::Retrans => "RETRANS",
        }
    }

    pub fn right_aligned(self) -> bool {
        matches!(
            self,
            Column::Pid
                | Column::RxRate
                | Column::TxRate
                | Column::RxTotal
                | Column::TxTotal
                | Column::Rtt
                | Column::Retrans
        )
    }

    /// Lower is kept longer when the terminal is narrow.
    pub fn priority(self) -> u8 {
        match self {
            Column::Process => 0,
            Column::RxRate => 1,
            Column::TxRate => 2,
            Column::Remote => 3,
            Column::Pid => 4,
            Column::Workload => 5,
            Column::Local => 6,
            Column::State => 7,
            Column::Rtt => 8,
            Column::RxTotal => 9,
            Column::TxTotal => 10,
            Column::Proto => 11,
            Column::Retrans => 12,
        }
    }
}

/// What the table is sorted by: a column, or the default, current
/// bandwidth (RX/s + TX/s), which sits between STATE and RX/s when the
/// user moves the sort with `<` and `>`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SortKey {
    #[default]
    Bandwidth,
    Column(Column),
}

impl SortKey {
    /// The cycle `<` / `>` moves along.
    const ORDER: [SortKey; 14] = [
        SortKey::Column(Column::Pid),
        SortKey::Column(Column::Process),
        SortKey::Column(Column::Workload),
        SortKey::Column(Column::Proto),
        SortKey::Column(Column::Local),
        SortKey::Column(Column::Remote),
        SortKey::Column(Column::State),
        SortKey::Bandwidth,
        SortKey::Column(Column::RxRate),
        SortKey::Column(Column::TxRate),
        SortKey::Column(Column::RxTotal),
        SortKey::Column(Column::TxTotal),
        SortKey::Column(Column::Rtt),
        SortKey::Column(Column::Retrans),
    ];

    /// The next key to the right (`step` 1) or left (`step` -1), wrapping.
    pub fn step(self, step: isize) -> SortKey {
        let n = Self::ORDER.len() as isize;
        let i = Self::ORDER.iter().position(|k| *k == self).unwrap_or(0) as isize;
        Self::ORDER[(i + step).rem_euclid(n) as usize]
    }

    /// Numbers sort biggest first, text A to Z, unless reversed.
    pub fn descending_by_default(self) -> bool {
        match self {
            SortKey::Bandwidth => true,
            SortKey::Column(c) => c.right_aligned(),
        }
    }

    /// Shown in the header: is this column the sort column?
    pub fn marks(self, c: Column) -> bool {
        match self {
            SortKey::Bandwidth => matches!(c, Column::RxRate | Column::TxRate),
            SortKey::Column(k) => k == c,
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            SortKey::Bandwidth => "RX/s+TX/s",
            SortKey::Column(c) => c.title(),
        }
    }
}

/// The names shown instead of numbers; None: off.
#[derive(Clone, Copy, Debug, Default)]
pub struct Names<'a> {
    /// Host names of remote addresses (cached reverse DNS).
    pub hosts: Option<&'a Resolver>,
    /// Port names.
    pub services: Option<&'a Services>,
}

impl<'a> Names<'a> {
    /// The cached host name of `ip` (untrusted: escape before display).
    pub fn host(&self, ip: IpAddr) -> Option<&'a str> {
        self.hosts?.cached(ip)
    }

    pub fn service(&self, proto: Option<Proto>, port: u16) -> Option<&'a str> {
        self.services?.name(proto?, port)
    }

    /// `addr:port` with the names that are on.
    fn endpoint(&self, proto: Option<Proto>, a: SocketAddr, host: bool) -> String {
        let host = if host { self.host(a.ip()) } else { None };
        names::endpoint(a, host, self.service(proto, a.port()))
    }
}

/// Rows whose shown names contain the live filter text: the addresses and
/// ports with such a name, found once per frame in the (bounded) name
/// tables rather than once per row.
#[derive(Debug, Default)]
pub struct NameMatch {
    ips: HashSet<IpAddr>,
    ports: HashSet<(Proto, u16)>,
}

impl NameMatch {
    /// `needle` in lower case; nothing matches an empty one.
    pub fn new(names: Names<'_>, needle: &str) -> NameMatch {
        if needle.is_empty() {
            return NameMatch::default();
        }
        NameMatch {
            ips: names
                .hosts
                .map(|r| r.matching(needle).collect())
                .unwrap_or_default(),
            ports: names
                .services
                .map(|s| s.matching(needle).collect())
                .unwrap_or_default(),
        }
    }

    pub fn matches(&self, r: &Row) -> bool {
        let k = &r.key;
        (!self.ips.is_empty() && self.ips.contains(&k.remote.ip()))
            || (!self.ports.is_empty()
                && (self.ports.contains(&(k.proto, k.local.port()))
                    || self.ports.contains(&(k.proto, k.remote.port()))))
    }
}

/// One line of the table: a connection or a group of them.
#[derive(Clone, Debug)]
pub struct Item<'a> {
    pub id: ItemId,
    /// Owner (0: unknown, or several processes in a group).
    pub pid: u32,
    /// Process name as reported: untrusted, escape before display.
    pub comm: &'a str,
    /// What runs the owner (`Workload::label`): untrusted; None: not
    /// known, or a group of several.
    pub workload: Option<&'a str>,
    /// Distinct processes in a group (1 for a connection).
    pub procs: usize,
    /// Connections in a group (1 for a connection).
    pub conns: usize,
    /// None: a group with several protocols.
    pub proto: Option<Proto>,
    pub local: Option<SocketAddr>,
    pub remote: Option<SocketAddr>,
    pub remote_ip: Option<IpAddr>,
    /// None: a group whose connections are in several states.
    pub state: Option<ConnState>,
    pub rx_bps: f64,
    pub tx_bps: f64,
    pub rx_bytes: u64,
    pub tx_bytes: u64,
    /// Mean over the connections that have one.
    pub rtt_us: Option<u32>,
    pub retrans: u64,
    /// Every connection of it has ended.
    pub closed: bool,
    /// The connection itself (connection view only).
    pub row: Option<&'a Row>,
    /// Its place in the rows given to [`build`] (connection view only).
    pub pos: u32,
}

impl<'a> Item<'a> {
    pub fn of_row(r: &'a Row) -> Item<'a> {
        Item {
            id: ItemId::Conn(r.key, r.id),
            pid: r.pid,
            comm: &r.comm,
            workload: r.workload.as_deref().map(crate::model::Workload::label),
            procs: 1,
            conns: 1,
            proto: Some(r.key.proto),
            local: Some(r.key.local),
            remote: Some(r.key.remote),
            remote_ip: Some(r.key.remote.ip()),
            state: Some(r.state),
            rx_bps: r.rx_bps,
            tx_bps: r.tx_bps,
            rx_bytes: r.counters.rx_bytes,
            tx_bytes: r.counters.tx_bytes,
            rtt_us: r.rtt_us,
            retrans: r.counters.retrans,
            closed: r.is_closed(),
            row: Some(r),
            pos: 0,
        }
    }

    pub fn bandwidth(&self) -> f64 {
        self.rx_bps + self.tx_bps
    }

    /// The text of one cell. Rates in bits per second if `bits`; host and
    /// port names as `names` says.
    pub fn cell(&self, c: Column, bits: bool, names: Names<'_>) -> String {
        let rate = |v: f64| {
            if bits {
                units::bit_rate(v)
            } else {
                units::rate(v)
            }
        };
        match c {
            Column::Pid if self.pid == 0 || self.procs > 1 => "-".into(),
            Column::Pid => self.pid.to_string(),
            Column::Process if self.procs > 1 => format!("({} processes)", self.procs),
            Column::Process => untrusted(self.comm).into_owned(),
            Column::Workload => self
                .workload
                .map_or_else(|| "-".into(), |w| untrusted(w).into_owned()),
            Column::Proto => self.proto.map_or("-", Proto::as_str).into(),
            Column::Local => match (self.local, self.conns) {
                (Some(a), 1) => names.endpoint(self.proto, a, false),
                (_, n) => format!("{n} conns"),
            },
            Column::Remote => {
                let host = |ip: IpAddr| {
                    names
                        .host(ip)
                        .map_or_else(|| ip.to_string(), |h| names::host(h).into_owned())
                };
                match (self.remote, self.remote_ip) {
                    (_, Some(ip)) if matches!(self.id, ItemId::Remote(_)) => host(ip),
                    (Some(a), _) if self.conns == 1 => names.endpoint(self.proto, a, true),
                    (_, Some(ip)) => host(ip),
                    _ => "-".into(),
                }
            }
            Column::State => self.state.map_or("mixed", ConnState::as_str).into(),
            Column::RxRate => rate(self.rx_bps),
            Column::TxRate => rate(self.tx_bps),
            Column::RxTotal => units::bytes(self.rx_bytes),
            Column::TxTotal => units::bytes(self.tx_bytes),
            Column::Rtt => units::rtt(self.rtt_us),
            Column::Retrans => self.retrans.to_string(),
        }
    }
}

/// What sorting reads of a line: an item's fields, or a connection's row
/// read in place (the connection view sorts its rows without making an
/// item of each: 280 bytes a row, 56 MB at once at 200,000 rows).
trait Sortable {
    fn pid(&self) -> u32;
    fn comm(&self) -> &str;
    fn procs(&self) -> usize;
    fn workload(&self) -> Option<&str>;
    fn proto(&self) -> Option<Proto>;
    fn local(&self) -> Option<SocketAddr>;
    fn remote(&self) -> Option<SocketAddr>;
    fn remote_ip(&self) -> Option<IpAddr>;
    fn state(&self) -> Option<ConnState>;
    fn rx_bps(&self) -> f64;
    fn tx_bps(&self) -> f64;
    fn rx_bytes(&self) -> u64;
    fn tx_bytes(&self) -> u64;
    fn rtt_us(&self) -> Option<u32>;
    fn retrans(&self) -> u64;
    fn id(&self) -> ItemId;
}

impl Sortable for Item<'_> {
    fn pid(&self) -> u32 {
        self.pid
    }
    fn comm(&self) -> &str {
        self.comm
    }
    fn procs(&self) -> usize {
        self.procs
    }
    fn workload(&self) -> Option<&str> {
        self.workload
    }
    fn proto(&self) -> Option<Proto> {
        self.proto
    }
    fn local(&self) -> Option<SocketAddr> {
        self.local
    }
    fn remote(&self) -> Option<SocketAddr> {
        self.remote
    }
    fn remote_ip(&self) -> Option<IpAddr> {
        self.remote_ip
    }
    fn state(&self) -> Option<ConnState> {
        self.state
    }
    fn rx_bps(&self) -> f64 {
        self.rx_bps
    }
    fn tx_bps(&self) -> f64 {
        self.tx_bps
    }
    fn rx_bytes(&self) -> u64 {
        self.rx_bytes
    }
    fn tx_bytes(&self) -> u64 {
        self.tx_bytes
    }
    fn rtt_us(&self) -> Option<u32> {
        self.rtt_us
    }
    fn retrans(&self) -> u64 {
        self.retrans
    }
    fn id(&self) -> ItemId {
        self.id
    }
}

/// A connection's row, as [`Item::of_row`] makes its item.
impl Sortable for Row {
    fn pid(&self) -> u32 {
        self.pid
    }
    fn comm(&self) -> &str {
        &self.comm
    }
    fn procs(&self) -> usize {
        1
    }
    fn workload(&self) -> Option<&str> {
        self.workload.as_deref().map(crate::model::Workload::label)
    }
    fn proto(&self) -> Option<Proto> {
        Some(self.key.proto)
    }
    fn local(&self) -> Option<SocketAddr> {
        Some(self.key.local)
    }
    fn remote(&self) -> Option<SocketAddr> {
        Some(self.key.remote)
    }
    fn remote_ip(&self) -> Option<IpAddr> {
        Some(self.key.remote.ip())
    }
    fn state(&self) -> Option<ConnState> {
        Some(self.state)
    }
    fn rx_bps(&self) -> f64 {
        self.rx_bps
    }
    fn tx_bps(&self) -> f64 {
        self.tx_bps
    }
    fn rx_bytes(&self) -> u64 {
        self.counters.rx_bytes
    }
    fn tx_bytes(&self) -> u64 {
        self.counters.tx_bytes
    }
    fn rtt_us(&self) -> Option<u32> {
        self.rtt_us
    }
    fn retrans(&self) -> u64 {
        self.counters.retrans
    }
    fn id(&self) -> ItemId {
        ItemId::Conn(self.key, self.id)
    }
}

/// Compares by one sort key, in its natural direction (ascending).
fn cmp_by<T: Sortable>(a: &T, b: &T, key: SortKey) -> Ordering {
    let bandwidth = |x: &T| x.rx_bps() + x.tx_bps();
    let Some(c) = (match key {
        SortKey::Bandwidth => None,
        SortKey::Column(c) => Some(c),
    }) else {
        return bandwidth(a).total_cmp(&bandwidth(b));
    };
    match c {
        Column::Pid => a.pid().cmp(&b.pid()),
        Column::Process => a.comm().cmp(b.comm()).then(a.procs().cmp(&b.procs())),
        Column::Workload => a.workload().cmp(&b.workload()),
        Column::Proto => a.proto().cmp(&b.proto()),
        Column::Local => a.local().cmp(&b.local()),
        Column::Remote => a
            .remote_ip()
            .cmp(&b.remote_ip())
            .then(a.remote().cmp(&b.remote())),
        Column::State => a.state().cmp(&b.state()),
        Column::RxRate => a.rx_bps().total_cmp(&b.rx_bps()),
        Column::TxRate => a.tx_bps().total_cmp(&b.tx_bps()),
        Column::RxTotal => a.rx_bytes().cmp(&b.rx_bytes()),
        Column::TxTotal => a.tx_bytes().cmp(&b.tx_bytes()),
        Column::Rtt => a.rtt_us().cmp(&b.rtt_us()),
        Column::Retrans => a.retrans().cmp(&b.retrans()),
    }
}

/// The order of two lines by `key` (`descending`: reversed), ties broken
/// as the batch output does (busiest first, then bytes, then identity) so
/// that lines never swap places between frames. Identities are unique, so
/// the order is total and an unstable sort is deterministic.
fn order<T: Sortable>(a: &T, b: &T, key: SortKey, descending: bool) -> Ordering {
    let primary = cmp_by(a, b, key);
    let primary = if descending {
        primary.reverse()
    } else {
        primary
    };
    let bandwidth = |x: &T| x.rx_bps() + x.tx_bps();
    let total = |x: &T| x.rx_bytes().saturating_add(x.tx_bytes());
    primary
        .then_with(|| bandwidth(b).total_cmp(&bandwidth(a)))
        .then_with(|| total(b).cmp(&total(a)))
        .then_with(|| a.id().cmp(&b.id()))
}

/// Sorts by `key` (reversed if `reverse`): see [`order`].
pub fn sort(items: &mut [Item<'_>], key: SortKey, reverse: bool) {
    let descending = key.descending_by_default() != reverse;
    items.sort_unstable_by(|a, b| order(a, b, key, descending));
}

/// Sorts the connection view's rows, each with where it is (`S`), and
/// gives those places back in order, as [`sort`] sorts the rows' items.
///
/// In place, and without reading the rows at each comparison: each row
/// becomes a 16-byte key, its place (`pack`: at most [`PLACE_BITS`] bits)
/// under the first bits of its place in [`order`] ([`Prefix`]) that differ
/// between rows; only rows whose keys are equal are compared in full
/// (`row_of` finds them). Comparing the rows themselves read two rows at
/// random per comparison: 200,000 idle rows (all tied on rates and bytes,
/// so compared by identity) took ~140 ms to sort, and a key list beside the
/// rows raised the display's peak memory.
pub fn sort_rows<'a, S: Copy + 'a>(
    rows: Vec<(&'a Row, S)>,
    key: SortKey,
    reverse: bool,
    pack: impl Fn(S) -> u64,
    unpack: impl Fn(u64) -> S + 'a,
    row_of: impl Fn(S) -> Option<&'a Row>,
) -> impl Iterator<Item = S> + 'a {
    let descending = key.descending_by_default() != reverse;
    // Which bits of the full prefix differ between any two rows: only
    // those can decide (an endpoint or a rate every row shares never does).
    let (mut any, mut all) = ([0u64; Prefix::WORDS], [u64::MAX; Prefix::WORDS]);
    for (r, _) in &rows {
        let p = Prefix::of(r, key, descending);
        for (w, (a, b)) in p.0.iter().zip(any.iter_mut().zip(all.iter_mut())) {
            *a |= w;
            *b &= w;
        }
    }
    let mut differ = [0u64; Prefix::WORDS];
    for (d, (a, b)) in differ.iter_mut().zip(any.iter().zip(all.iter())) {
        *d = a & !b;
    }
    let runs = Prefix::runs(&differ, 128 - PLACE_BITS);
    let place_mask = (1u64 << PLACE_BITS) - 1;
    let mut keyed: Vec<[u64; 2]> = rows
        .into_iter()
        .map(|(r, s)| {
            let p = Prefix::of(r, key, descending).gather(&runs);
            [p[0], p[1] | (pack(s) & place_mask)]
        })
        .collect();
    keyed.sort_unstable_by(|a, b| {
        (a[0], a[1] >> PLACE_BITS)
            .cmp(&(b[0], b[1] >> PLACE_BITS))
            .then_with(|| {
                match (
                    row_of(unpack(a[1] & place_mask)),
                    row_of(unpack(b[1] & place_mask)),
                ) {
                    (Some(x), Some(y)) => order(x, y, key, descending),
                    _ => Ordering::Equal,
                }
            })
    });
    keyed.into_iter().map(move |k| unpack(k[1] & place_mask))
}

/// The bits of a sorted row's key that say where the row is.
pub const PLACE_BITS: u32 = 34;

/// The first bits of a row's place in [`order`], as one number: if one
/// row's prefix is below another's, the row is before it; equal prefixes
/// say nothing (the rows are then compared in full). Each field is written
/// as bits whose order as numbers is the field's order (a descending field
/// inverted); a string as 9 bits a byte (1, the byte) and a final 0, so a
/// string before its extensions; past the last bit, nothing more.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
struct Prefix([u64; Prefix::WORDS]);

/// Writes bits into a [`Prefix`], most significant first.
struct Bits {
    words: [u64; Prefix::WORDS],
    /// Bits written.
    at: u32,
    /// Bits of the current field are inverted (a descending field).
    invert: bool,
}

impl Bits {
    const LEN: u32 = Prefix::WORDS as u32 * 64;

    /// Writes the low `width` (1..=64) bits of `v`; what does not fit is
    /// left out (the prefix ends there).
    fn put(&mut self, v: u64, width: u32) {
        let mut v = if width < 64 {
            v & ((1 << width) - 1)
        } else {
            v
        };
        if self.invert {
            v = !v
                & if width < 64 {
                    (1 << width) - 1
                } else {
                    u64::MAX
                };
        }
        let mut width = width;
        while width > 0 && self.at < Self::LEN {
            let word = (self.at / 64) as usize;
            let free = 64 - self.at % 64;
            let n = width.min(free);
            // The top n of the remaining `width` bits.
            let part = (v >> (width - n)) & if n < 64 { (1 << n) - 1 } else { u64::MAX };
            self.words[word] |= if n < 64 { part << (free - n) } else { part };
            self.at += n;
            width -= n;
        }
    }

    fn u128(&mut self, v: u128) {
        self.put((v >> 64) as u64, 64);
        self.put(v as u64, 64);
    }

    /// An f64 in the order of `f64::total_cmp`.
    fn f64(&mut self, x: f64) {
        let b = x.to_bits();
        self.put(if b >> 63 == 1 { !b } else { b | 1 << 63 }, 64);
    }

    fn str(&mut self, s: &str) {
        for &c in s.as_bytes() {
            if self.at >= Self::LEN {
                return;
            }
            self.put(0x100 | u64::from(c), 9);
        }
        self.put(0, 1);
    }

    fn ip(&mut self, ip: IpAddr) {
        match ip {
            IpAddr::V4(a) => {
                self.put(0, 1);
                self.put(u64::from(a.to_bits()), 32);
            }
            IpAddr::V6(a) => {
                self.put(1, 1);
                self.u128(a.to_bits());
            }
        }
    }

    fn addr(&mut self, a: SocketAddr) {
        self.ip(a.ip());
        self.put(u64::from(a.port()), 16);
        if let SocketAddr::V6(a) = a {
            self.put(u64::from(a.flowinfo()), 32);
            self.put(u64::from(a.scope_id()), 32);
        }
    }

    /// An `Option`: 0 for None, 1 then the value.
    fn some<T>(&mut self, v: Option<T>, then: impl FnOnce(&mut Self, T)) {
        match v {
            None => self.put(0, 1),
            Some(v) => {
                self.put(1, 1);
                then(self, v);
            }
        }
    }
}

impl Prefix {
    const WORDS: usize = 8;

    /// The runs of set bits in `mask` (word, shift of the run's lowest
    /// bit, length), most significant first, up to `most` bits in all.
    fn runs(mask: &[u64; Prefix::WORDS], most: u32) -> Vec<(usize, u32, u32)> {
        let mut runs = Vec::new();
        let mut left = most;
        for (w, &m) in mask.iter().enumerate() {
            let mut m = m;
            while m != 0 && left > 0 {
                let top = 63 - m.leading_zeros();
                let len = (!(m << (63 - top))).leading_zeros().min(left);
                let shift = top + 1 - len;
                runs.push((w, shift, len));
                left -= len;
                m &= if shift == 0 { 0 } else { (1u64 << shift) - 1 };
            }
        }
        runs
    }

    /// The bits of `runs`, in order, as the top of 128 bits.
    fn gather(&self, runs: &[(usize, u32, u32)]) -> [u64; 2] {
        let mut out = Bits {
            words: [0; Prefix::WORDS],
            at: 0,
            invert: false,
        };
        for &(w, shift, len) in runs {
            out.put(self.0[w] >> shift, len);
        }
        [out.words[0], out.words[1]]
    }

    fn of(r: &Row, key: SortKey, descending: bool) -> Prefix {
        let mut b = Bits {
            words: [0; Prefix::WORDS],
            at: 0,
            invert: descending,
        };
        let bandwidth = r.rx_bps() + r.tx_bps();
        match key {
            SortKey::Bandwidth => b.f64(bandwidth),
            SortKey::Column(c) => match c {
                Column::Pid => b.put(u64::from(r.pid()), 32),
                Column::Process => {
                    b.str(r.comm());
                    b.put(r.procs() as u64, 64);
                }
                Column::Workload => b.some(r.workload(), Bits::str),
                Column::Proto => b.some(r.proto(), |b, p| b.put(p as u64, 1)),
                Column::Local => b.some(r.local(), Bits::addr),
                Column::Remote => {
                    b.some(r.remote_ip(), Bits::ip);
                    b.some(r.remote(), Bits::addr);
                }
                Column::State => b.some(r.state(), |b, s| {
                    let (rank, n) = state_rank(s);
                    b.put(u64::from(rank), 8);
                    b.put(u64::from(n), 8);
                }),
                Column::RxRate => b.f64(r.rx_bps()),
                Column::TxRate => b.f64(r.tx_bps()),
                Column::RxTotal => b.put(r.rx_bytes(), 64),
                Column::TxTotal => b.put(r.tx_bytes(), 64),
                Column::Rtt => b.some(r.rtt_us(), |b, v| b.put(u64::from(v), 32)),
                Column::Retrans => b.put(r.retrans(), 64),
            },
        }
        // Busiest first, then most bytes (the bandwidth again after a
        // bandwidth sort decides nothing), then identity, ascending.
        b.invert = true;
        if key != SortKey::Bandwidth {
            b.f64(bandwidth);
        }
        b.put(r.rx_bytes().saturating_add(r.tx_bytes()), 64);
        b.invert = false;
        let ItemId::Conn(k, id) = r.id() else {
            return Prefix(b.words);
        };
        b.put(k.proto as u64, 1);
        b.addr(k.local);
        b.addr(k.remote);
        b.put(u64::from(k.netns), 32);
        b.put(id, 64);
        Prefix(b.words)
    }
}

/// A state's place in `ConnState`'s order: its variant, then its number.
fn state_rank(s: ConnState) -> (u8, u8) {
    use ConnState::*;
    match s {
        Established => (0, 0),
        SynSent => (1, 0),
        SynRecv => (2, 0),
        FinWait1 => (3, 0),
        FinWait2 => (4, 0),
        TimeWait => (5, 0),
        Close => (6, 0),
        Closed => (7, 0),
        CloseWait => (8, 0),
        LastAck => (9, 0),
        Listen => (10, 0),
        Closing => (11, 0),
        NewSynRecv => (12, 0),
        Flow => (13, 0),
        Unknown(n) => (14, n),
    }
}

/// True if the live filter text (lower case) occurs in the process name,
/// PID, protocol, either endpoint (address or port) or the state.
pub fn matches(r: &Row, needle: &str) -> bool {
    needle.is_empty() || r.search_text().contains(needle)
}

/// The lines for `rows` under a grouping.
pub fn build<'a>(rows: &[&'a Row], grouping: Grouping) -> Vec<Item<'a>> {
    match grouping {
        Grouping::Connection => rows
            .iter()
            .enumerate()
            .map(|(i, r)| Item {
                pos: i as u32,
                ..Item::of_row(r)
            })
            .collect(),
        Grouping::Process => group(rows, |r| ItemId::Process(r.pid)),
        Grouping::Workload => group(rows, |r| ItemId::Workload(workload_id(r))),
        Grouping::RemoteHost => group(rows, |r| ItemId::Remote(r.key.remote.ip())),
    }
}

/// The identity of a row's workload for grouping: its label, hashed (0:
/// not known).
pub fn workload_id(r: &Row) -> u64 {
    use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
    r.workload.as_deref().map_or(0, |w| {
        BuildHasherDefault::<DefaultHasher>::default()
            .hash_one(w.label())
            .max(1)
    })
}

fn group<'a>(rows: &[&'a Row], id_of: impl Fn(&Row) -> ItemId) -> Vec<Item<'a>> {
    struct Acc<'a> {
        item: Item<'a>,
        pids: Vec<u32>,
        rtt_sum: u64,
        rtt_n: u64,
    }
    let mut groups: HashMap<ItemId, Acc<'a>> = HashMap::new();
    for r in rows {
        let id = id_of(r);
        let one = Item::of_row(r);
        match groups.get_mut(&id) {
            None => {
                let mut item = one;
                item.id = id;
                item.row = None;
                if !matches!(id, ItemId::Remote(_)) {
                    item.remote_ip = None;
                }
                groups.insert(
                    id,
                    Acc {
                        item,
                        pids: vec![r.pid],
                        rtt_sum: r.rtt_us.map_or(0, u64::from),
                        rtt_n: u64::from(r.rtt_us.is_some()),
                    },
                );
            }
            Some(acc) => {
                let g = &mut acc.item;
                g.conns += 1;
                if !acc.pids.contains(&r.pid) {
                    acc.pids.push(r.pid);
                }
                if g.proto != one.proto {
                    g.proto = None;
                }
                if g.state != one.state {
                    g.state = None;
                }
                if g.workload != one.workload {
                    g.workload = None;
                }
                g.rx_bps += one.rx_bps;
                g.tx_bps += one.tx_bps;
                g.rx_bytes = g.rx_bytes.saturating_add(one.rx_bytes);
                g.tx_bytes = g.tx_bytes.saturating_add(one.tx_bytes);
                g.retrans = g.retrans.saturating_add(one.retrans);
                g.closed &= one.closed;
                if let Some(rtt) = r.rtt_us {
                    acc.rtt_sum += u64::from(rtt);
                    acc.rtt_n += 1;
                }
                // Keep a name and a (smallest) local address for sorting.
                if g.comm.is_empty() {
                    g.comm = one.comm;
                }
                g.local = g.local.min(one.local);
                g.remote = g.remote.min(one.remote);
            }
        }
    }
    groups
        .into_values()
        .map(|mut acc| {
            acc.item.procs = acc.pids.len();
            acc.item.rtt_us =
                (acc.rtt_n > 0).then(|| u32::try_from(acc.rtt_sum / acc.rtt_n).unwrap_or(u32::MAX));
            acc.item
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;
    use crate::model::{ConnSample, Counters, Snapshot, Workload};
    use crate::table::ConnTable;

    /// Rows in place of items sort exactly as items do, for every key in
    /// both directions, ties (equal rates, names, states, totals) included.
    #[test]
    fn rows_sort_as_their_items() {
        let mut table = ConnTable::new();
        let t0 = Instant::now();
        let sample = |i: u32, grow: u64| {
            let comms = ["curl", "nginx", "sshd"];
            ConnSample {
                key: ConnKey {
                    proto: if i.is_multiple_of(5) {
                        Proto::Udp
                    } else {
                        Proto::Tcp
                    },
                    local: SocketAddr::from(([10, 0, 0, (i % 3) as u8], 1000 + (i % 7) as u16)),
                    remote: if i.is_multiple_of(4) {
                        SocketAddr::from(([0xfe80, 0, 0, 0, 0, 0, 0, i as u16], 443))
                    } else {
                        SocketAddr::from(([10, 0, 1, (i % 2) as u8], 2000 + i as u16))
                    },
                    netns: 1,
                },
                id: u64::from(i),
                pid: 100 + i % 4,
                comm: comms[(i % 3) as usize].into(),
                state: if i.is_multiple_of(6) {
                    ConnState::CloseWait
                } else {
                    ConnState::Established
                },
                counters: Counters {
                    tx_bytes: u64::from(i % 5) * 1000 * grow,
                    rx_bytes: u64::from(i % 3) * 700 * grow,
                    tx_packets: 0,
                    rx_packets: 0,
                    retrans: u64::from(i % 2),
                },
                rtt_us: (!i.is_multiple_of(3)).then_some(100 * (i % 4)),
                cgroup_id: 0,
                workload: (i % 4 == 1).then(|| {
                    std::sync::Arc::new(Workload {
                        unit: Some(format!("w{}.service", i % 2)),
                        ..Workload::default()
                    })
                }),
                active: None,
            }
        };
        for (n, grow) in [(1, 1), (2, 3)] {
            let live = (0..60).map(|i| sample(i, grow)).collect();
            let snap = Snapshot {
                live,
                ..Snapshot::default()
            };
            table.apply(snap, t0 + Duration::from_secs(n), 1.0);
        }
        let rows: Vec<&Row> = table.rows().collect();
        let keys = std::iter::once(SortKey::Bandwidth).chain(SortKey::ORDER);
        for key in keys {
            for reverse in [false, true] {
                let mut items = build(&rows, Grouping::Connection);
                sort(&mut items, key, reverse);
                let order: Vec<(&Row, u32)> = rows
                    .iter()
                    .enumerate()
                    .map(|(i, r)| (*r, i as u32))
                    .collect();
                let by_items: Vec<u32> = items.iter().map(|it| it.pos).collect();
                let by_rows: Vec<u32> = sort_rows(
                    order,
                    key,
                    reverse,
                    u64::from,
                    |v| v as u32,
                    |i| rows.get(i as usize).copied(),
                )
                .collect();
                assert_eq!(by_items, by_rows, "{key:?}, reverse {reverse}");
            }
        }
    }

    /// The prefix keys never contradict the full order: rows sorted through
    /// them come out exactly as a sort on the rows alone puts them, over
    /// names that share their first bytes (and are longer than a key
    /// holds), IPv6 endpoints that differ only in their last bits, flow
    /// labels and scopes, NaN and negative zero rates, ties everywhere.
    #[test]
    fn prefix_keys_agree_with_the_full_order() {
        use std::net::{Ipv6Addr, SocketAddrV6};
        let mut table = ConnTable::new();
        let t0 = Instant::now();
        let comms = [
            "",
            "a",
            "ab",
            "abcdefgh",
            "abcdefghijklmn1",
            "abcdefghijklmn2",
            "\u{1}x",
        ];
        let v6 = |i: u32, flow: u32, scope: u32| {
            SocketAddr::V6(SocketAddrV6::new(
                Ipv6Addr::from(0x2001_0db8_0000_0000_0000_0000_0000_0000_u128 | u128::from(i % 3)),
                443,
                flow,
                scope,
            ))
        };
        let sample = |i: u32, grow: u64| ConnSample {
            key: ConnKey {
                proto: if i.is_multiple_of(7) {
                    Proto::Udp
                } else {
                    Proto::Tcp
                },
                local: if i.is_multiple_of(2) {
                    v6(i / 2, i % 5, i % 4)
                } else {
                    SocketAddr::from(([127, 0, 0, (i % 3) as u8], 1000 + (i % 2) as u16))
                },
                remote: if i.is_multiple_of(3) {
                    v6(i, 0, i % 2)
                } else {
                    SocketAddr::from(([10, 0, 0, (i % 5) as u8], 2000 + i as u16))
                },
                netns: i % 2,
            },
            id: u64::from(i),
            pid: 100 + i % 3,
            comm: comms[(i % comms.len() as u32) as usize].into(),
            state: match i % 4 {
                0 => ConnState::Unknown(i as u8),
                1 => ConnState::CloseWait,
                _ => ConnState::Established,
            },
            counters: Counters {
                tx_bytes: u64::from(i % 3) * 10 * grow,
                rx_bytes: u64::from(i % 2) * grow,
                tx_packets: 0,
                rx_packets: 0,
                retrans: u64::from(i % 2),
            },
            rtt_us: (!i.is_multiple_of(3)).then_some(i % 2),
            cgroup_id: 0,
            // Long labels, and labels that begin others.
            workload: (!i.is_multiple_of(3)).then(|| {
                let unit = match i % 4 {
                    0 => "a-very-long-unit-name-that-fills-the-key-0.service",
                    1 => "a-very-long-unit-name-that-fills-the-key-1.service",
                    2 => "w",
                    _ => "w.service",
                };
                std::sync::Arc::new(Workload {
                    unit: Some(unit.to_string()),
                    ..Workload::default()
                })
            }),
            active: None,
        };
        for (n, grow) in [(1, 1), (2, 1), (3, 5)] {
            let live = (0..300).map(|i| sample(i, grow)).collect();
            let snap = Snapshot {
                live,
                ..Snapshot::default()
            };
            table.apply(snap, t0 + Duration::from_secs(n), 1.0);
        }
        let mut rows: Vec<Row> = table.rows().cloned().collect();
        // Rates the table never makes: NaN, -0.0, negative.
        rows[0].rx_bps = f64::NAN;
        rows[1].rx_bps = -0.0;
        rows[2].tx_bps = -5.0;
        let keys = std::iter::once(SortKey::Bandwidth).chain(SortKey::ORDER);
        for key in keys {
            for reverse in [false, true] {
                let descending = key.descending_by_default() != reverse;
                let mut full: Vec<(&Row, u32)> = rows
                    .iter()
                    .enumerate()
                    .map(|(i, r)| (r, i as u32))
                    .collect();
                let fast: Vec<u32> = sort_rows(
                    full.clone(),
                    key,
                    reverse,
                    u64::from,
                    |v| v as u32,
                    |i| rows.get(i as usize),
                )
                .collect();
                full.sort_unstable_by(|a, b| order(a.0, b.0, key, descending));
                let full: Vec<u32> = full.iter().map(|&(_, i)| i).collect();
                assert_eq!(fast, full, "{key:?}, reverse {reverse}");
            }
        }
    }

    /// The state's rank is `ConnState`'s order.
    #[test]
    fn state_rank_is_the_state_order() {
        let mut states: Vec<ConnState> = (0..=255).map(ConnState::from_tcp).collect();
        states.extend([ConnState::Closed, ConnState::Flow, ConnState::Unknown(3)]);
        for a in &states {
            for b in &states {
                assert_eq!(state_rank(*a).cmp(&state_rank(*b)), a.cmp(b), "{a:?} {b:?}");
            }
        }
    }

    /// A large idle table (every rate and byte count the same, the
    /// addresses shared, the ports apart) sorts on the keys alone: no row
    /// is read again to break a tie.
    #[test]
    fn idle_rows_sort_without_reading_rows() {
        let mut table = ConnTable::new();
        let live = (0..5_000u32)
            .map(|i| ConnSample {
                key: ConnKey {
                    proto: Proto::Tcp,
                    local: SocketAddr::from(([127, 0, 0, 1], 2024)),
                    remote: SocketAddr::from(([127, 0, 0, 1], 30_000 + (i % 20_000) as u16)),
                    netns: 4_026_531_840 + i % 5,
                },
                id: 0xffff_8880_0000_0000 + u64::from(i) * 2_304,
                ..crate::model::test_sample(1, 0)
            })
            .collect();
        let snap = Snapshot {
            live,
            ..Snapshot::default()
        };
        table.apply(snap, Instant::now(), 1.0);
        let rows: Vec<&Row> = table.rows().collect();
        let reads = std::cell::Cell::new(0);
        for key in std::iter::once(SortKey::Bandwidth).chain(SortKey::ORDER) {
            let order: Vec<(&Row, u32)> = rows
                .iter()
                .enumerate()
                .map(|(i, r)| (*r, i as u32))
                .collect();
            let n = sort_rows(
                order,
                key,
                false,
                u64::from,
                |v| v as u32,
                |i| {
                    reads.set(reads.get() + 1);
                    rows.get(i as usize).copied()
                },
            )
            .count();
            assert_eq!((n, reads.get()), (5_000, 0), "{key:?}");
        }
    }
}
