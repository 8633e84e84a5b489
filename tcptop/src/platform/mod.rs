//! The platform abstraction: where connection data comes from.
//!
//! This is the only module that knows which operating system it runs on;
//! everything above [`DataSource`] is portable. Linux's backend (eBPF and
//! the socket diagnostics) is `linux`, macOS's (the kernel's socket lists)
//! is `macos`; `pcblist` is the macOS backend's parser, pure over bytes and
//! built everywhere so that it is tested on Linux too.

use crate::model::{ProcInfo, Snapshot};

pub mod changes;
#[cfg(target_os = "linux")]
pub mod linux;
#[cfg(target_os = "macos")]
pub mod macos;
pub mod pcblist;

/// Looks up what the system says about a process (its command line and
/// user), for the detail pane: each source hands out its platform's.
pub type ProcLookup = Box<dyn Fn(u32) -> ProcInfo>;

/// A live source of per-connection data.
///
/// `collect` is called once per refresh interval from the event loop; it must
/// not block for long. Connections that ended since the previous call are
/// reported exactly once in [`Snapshot::closed`].
pub trait DataSource {
    /// Short name of the mechanism in use, e.g. the eBPF hook set.
    fn hooks(&self) -> &str;
    /// Everything that changed since the previous call.
    fn collect(&mut self) -> Result<Snapshot, SourceError>;
    /// Problems found at start-up that do not stop collection (e.g. a
    /// hook that could not attach, with what is lost), for the user to see.
    fn warnings(&self) -> &[String] {
        &[]
    }
    /// One line for the header when the source shows less than it could
    /// (e.g. an unprivileged mode: what is missing and how to get it).
    fn notice(&self) -> Option<&str> {
        None
    }
    /// How to look up a process for the detail pane (called when it
    /// opens). By default nothing is known.
    fn process_lookup(&self) -> ProcLookup {
        Box::new(|_| ProcInfo::default())
    }
    /// Gives up the privileges that opening needed and collecting does not
    /// and, with `user`, becomes that user. Called once, after opening and
    /// before the first collection. Without `user`, a failure is not fatal:
    /// it becomes one of the [`warnings`](DataSource::warnings).
    fn drop_privileges(&mut self, user: Option<&str>) -> Result<(), SourceError> {
        match user {
            None => Ok(()),
            Some(_) => Err(SourceError::Unsupported(
                "--user is not supported with this data source".into(),
            )),
        }
    }
}

/// What can go wrong starting or reading a data source. Messages are for the
/// user: what is wrong and what to do.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("{0}")]
    Privileges(String),
    #[error("{0}")]
    Unsupported(String),
    #[error("{0}")]
    Failed(String),
}

/// Which kind of source to open.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SourceKind {
    /// The full one if allowed, else the unprivileged one.
    #[default]
    Auto,
    /// Kernel programs (Linux: eBPF); an error without the privileges
    /// (and on macOS).
    Ebpf,
    /// What the kernel tells any user (Linux: socket diagnostics; macOS:
    /// the socket lists, pcblist).
    Diag,
}

/// How to open a source.
#[derive(Clone, Debug, Default)]
pub struct SourceOptions {
    pub kind: SourceKind,
    /// Track UDP flows (Linux: their programs run for every packet, TCP
    /// included: `--tcp` turns them off rather than filtering their output).
    pub udp: bool,
    /// What only Linux's sources use.
    pub linux: LinuxOptions,
}

/// The options of Linux's sources (eBPF and its kernel tables).
///
/// One command line on every platform, and no `cfg` above this module: the
/// type exists everywhere, and a source that has no use for these flags
/// refuses the ones the user gave ([`LinuxOptions::given`]) instead of
/// ignoring them in silence. So the flags with a default are `None` unless
/// given, and the Linux sources ask for the value with its default.
#[derive(Clone, Debug, Default)]
pub struct LinuxOptions {
    /// Kernel BTF file to use instead of the running kernel's own.
    pub btf: Option<std::path::PathBuf>,
    /// Force one hook set (None: the best the kernel has).
    pub hooks: Option<HookSet>,
    /// A UDP flow with no datagram for this long has ended.
    pub udp_idle: Option<std::time::Duration>,
    /// Capacity of the kernel's connection table and of its UDP flow table.
    pub max_conns: Option<u32>,
    /// `--cgroup` was given. The filter itself is the table's, but only
    /// Linux's sources know a connection's control group: elsewhere the
    /// flag would select nothing.
    pub cgroup_filter: bool,
}

impl LinuxOptions {
    /// `--idle-timeout`, or its default.
    pub fn udp_idle(&self) -> std::time::Duration {
        self.udp_idle.unwrap_or(DEFAULT_UDP_IDLE)
    }

    /// `--max-conns`, or the default sized to the machine at start-up.
    pub fn max_conns(&self) -> u32 {
        self.max_conns.unwrap_or_else(default_max_conns)
    }

    /// The flags the user gave, as typed on the command line.
    pub fn given(&self) -> Vec<&'static str> {
        [
            (self.btf.is_some(), "--btf"),
            (self.hooks.is_some(), "--hooks"),
            (self.udp_idle.is_some(), "--idle-timeout"),
            (self.max_conns.is_some(), "--max-conns"),
            (self.cgroup_filter, "--cgroup"),
        ]
        .into_iter()
        .filter_map(|(set, flag)| set.then_some(flag))
        .collect()
    }
}

/// The smallest default for [`LinuxOptions::max_conns`] (what a machine
/// with few sockets gets: room to grow), and the default where the
/// machine's sockets cannot be counted.
pub const DEFAULT_MAX_CONNS: u32 = 65_536;

/// The largest `--max-conns` (kernel memory: about 200 bytes an entry, in
/// each of two tables).
pub const LIMIT_MAX_CONNS: u32 = 4_194_304;

/// What a machine holds at start-up, for sizing the kernel tables.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MachineLoad {
    /// Sockets the kernel reports in tcptop's own network namespace (Linux:
    /// `/proc/net/sockstat`, sockets in use plus TCP in TIME_WAIT, a sign
    /// of churn).
    pub sockets: u64,
    /// Open files, all namespaces together (Linux: `fs.file-nr`): every
    /// socket a process holds is one, so this covers the sockets of
    /// namespaces `sockets` does not see (containers, test namespaces).
    pub open_files: u64,
    /// The system-wide limit on open files (`fs.file-max`): no more
    /// sockets than that can be held.
    pub file_max: u64,
}

/// The default `--max-conns` for a machine holding `m`: half as much again
/// as the larger of its sockets and its open files, in steps of 16,384,
/// between [`DEFAULT_MAX_CONNS`] and [`LIMIT_MAX_CONNS`], and not above the
/// file limit (when that is above the floor).
pub fn size_max_conns(m: &MachineLoad) -> u32 {
    let now = m.sockets.max(m.open_files);
    let want = now
        .saturating_add(now / 2)
        .min(u64::from(LIMIT_MAX_CONNS))
        .next_multiple_of(16_384);
    let floor = u64::from(DEFAULT_MAX_CONNS);
    let ceiling = m.file_max.clamp(floor, u64::from(LIMIT_MAX_CONNS));
    u32::try_from(want.clamp(floor, ceiling)).unwrap_or(LIMIT_MAX_CONNS)
}

/// `--max-conns` when not given: sized to this machine's sockets when first
/// asked (at start-up), the same value after that.
#[cfg(target_os = "linux")]
pub fn default_max_conns() -> u32 {
    static SIZED: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    *SIZED.get_or_init(|| {
        linux::procfs::machine_load().map_or(DEFAULT_MAX_CONNS, |m| size_max_conns(&m))
    })
}

#[cfg(not(target_os = "linux"))]
pub fn default_max_conns() -> u32 {
    DEFAULT_MAX_CONNS
}

/// The warning shown the first time connections are dropped because the
/// kernel's connection table is full (and updated while it lasts).
pub fn table_full_warning(dropped: u64, max_conns: u32) -> String {
    format!(
        "connection table full: {dropped} connections not tracked; \
         restart with a larger --max-conns (now {max_conns})"
    )
}

/// Default for [`LinuxOptions::udp_idle`].
pub const DEFAULT_UDP_IDLE: std::time::Duration = std::time::Duration::from_secs(30);

/// Kernel mechanisms that can count send/receive calls (Linux).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HookSet {
    /// fexit programs on the TCP send/receive functions (BTF tracing).
    Fentry,
    /// kprobe/kretprobe pairs on the same functions.
    Kprobe,
    /// The sock_send_length/sock_recv_length tracepoints (Linux 6.3+).
    Tracepoint,
}

impl HookSet {
    /// Best first.
    pub const ALL: [HookSet; 3] = [HookSet::Fentry, HookSet::Kprobe, HookSet::Tracepoint];

    pub fn as_str(self) -> &'static str {
        match self {
            HookSet::Fentry => "fentry",
            HookSet::Kprobe => "kprobe",
            HookSet::Tracepoint => "tracepoint",
        }
    }
}

/// The kernel's range of ephemeral ports (local ports it picks for
/// connect and unbound sends), or the platform's default when it cannot be
/// read.
#[cfg(target_os = "linux")]
pub fn ephemeral_ports() -> (u16, u16) {
    linux::procfs::ephemeral_ports()
}

#[cfg(target_os = "macos")]
pub fn ephemeral_ports() -> (u16, u16) {
    macos::ephemeral_ports()
}

/// IANA's dynamic range.
#[cfg(not(any(target_os = "linux", target_os = "macos")))]
pub fn ephemeral_ports() -> (u16, u16) {
    (49152, 65535)
}

/// Makes the calling thread yield the CPU to the others (the metrics
/// server's, so that the collecting thread goes first under a storm of
/// scrapes) by `by` nice levels where niceness is per thread (Linux).
/// Elsewhere (macOS: per process) it does nothing: the collecting thread
/// would be slowed too.
#[cfg(target_os = "linux")]
pub fn lower_thread_priority(by: i32) {
    linux::lower_thread_priority(by);
}

#[cfg(not(target_os = "linux"))]
pub fn lower_thread_priority(_by: i32) {}

/// Opens the best data source for this machine that `opts.kind` allows.
#[cfg(target_os = "linux")]
pub fn open_default(opts: &SourceOptions) -> Result<Box<dyn DataSource>, SourceError> {
    match opts.kind {
        SourceKind::Ebpf => Ok(Box::new(linux::EbpfSource::open(opts)?)),
        SourceKind::Diag => Ok(Box::new(linux::unprivileged::DiagSource::open(opts, None)?)),
        SourceKind::Auto => match linux::EbpfSource::open(opts) {
            Ok(s) => Ok(Box::new(s)),
            // Degrade, never refuse: what any user may read.
            Err(SourceError::Privileges(why)) => Ok(Box::new(
                linux::unprivileged::DiagSource::open(opts, Some(why))?,
            )),
            Err(e) => Err(e),
        },
    }
}

/// Opens the socket lists (the one source on macOS; it needs no privilege).
#[cfg(target_os = "macos")]
pub fn open_default(opts: &SourceOptions) -> Result<Box<dyn DataSource>, SourceError> {
    match opts.kind {
        SourceKind::Ebpf => Err(SourceError::Unsupported(
            "--source ebpf is Linux's: on macOS tcptop reads the kernel's socket lists \
             (--source auto or diag)"
                .into(),
        )),
        SourceKind::Auto | SourceKind::Diag => Ok(Box::new(macos::PcblistSource::open(opts)?)),
    }
}

#[cfg(not(any(target_os = "linux", target_os = "macos")))]
pub fn open_default(_opts: &SourceOptions) -> Result<Box<dyn DataSource>, SourceError> {
    Err(SourceError::Unsupported(
        "tcptop does not support this operating system yet (Linux and macOS only)".into(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn max_conns_sized_to_the_machine() {
        let load = |sockets, open_files, file_max| MachineLoad {
            sockets,
            open_files,
            file_max,
        };
        let huge = 9_223_372_036_854_775_807;
        // A quiet machine: the floor.
        assert_eq!(size_max_conns(&load(300, 2_000, huge)), 65_536);
        assert_eq!(size_max_conns(&load(0, 0, 0)), 65_536);
        // 100,000 loopback connections held in other namespaces: only the
        // open files see them (201,900 * 1.5 = 302,850 -> 311,296).
        assert_eq!(size_max_conns(&load(150, 201_900, huge)), 311_296);
        // The same in tcptop's own namespace, TIME_WAIT included.
        assert_eq!(size_max_conns(&load(201_910, 9_000, huge)), 311_296);
        // Exactly on a step: that step.
        assert_eq!(size_max_conns(&load(0, 65_536, huge)), 98_304);
        // Never above the file limit (above the floor), nor the largest.
        assert_eq!(size_max_conns(&load(0, 190_000, 200_000)), 200_000);
        assert_eq!(size_max_conns(&load(0, 40_000, 50_000)), 65_536);
        assert_eq!(size_max_conns(&load(0, 90_000_000, huge)), LIMIT_MAX_CONNS);
        assert_eq!(
            size_max_conns(&load(u64::MAX, u64::MAX, u64::MAX)),
            LIMIT_MAX_CONNS
        );
    }

    #[test]
    fn table_full_warning_names_the_flag() {
        let w = table_full_warning(1_234, 65_536);
        assert_eq!(
            w,
            "connection table full: 1234 connections not tracked; \
             restart with a larger --max-conns (now 65536)"
        );
    }
}
