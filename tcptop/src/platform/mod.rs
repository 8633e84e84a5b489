//! The platform abstraction: where connection data comes from.
//!
//! This is the only module that knows which operating system it runs on;
//! everything above [`DataSource`] is portable.

use crate::model::Snapshot;

#[cfg(target_os = "linux")]
pub mod linux;

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
    /// Kernel programs (Linux: eBPF); an error without the privileges.
    Ebpf,
    /// What the kernel tells any user (Linux: socket diagnostics).
    Diag,
}

/// How to open a source.
#[derive(Clone, Debug)]
pub struct SourceOptions {
    pub kind: SourceKind,
    /// Kernel BTF file to use instead of the running kernel's own.
    pub btf: Option<std::path::PathBuf>,
    /// Force one hook set (None: the best the kernel has).
    pub hooks: Option<HookSet>,
    /// A UDP flow with no datagram for this long has ended.
    pub udp_idle: std::time::Duration,
    /// Capacity of the kernel's connection table and of its UDP flow table.
    pub max_conns: u32,
    /// Track UDP flows (their programs run for every packet, TCP included:
    /// `--tcp` turns them off rather than filtering their output).
    pub udp: bool,
}

/// Default for [`SourceOptions::max_conns`].
pub const DEFAULT_MAX_CONNS: u32 = 65_536;

/// Default for [`SourceOptions::udp_idle`].
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

/// What the system says about process `pid` (its command line and user),
/// read when the detail pane opens.
#[cfg(target_os = "linux")]
pub fn process_info(pid: u32) -> crate::model::ProcInfo {
    linux::procfs::process_info(pid)
}

#[cfg(not(target_os = "linux"))]
pub fn process_info(_pid: u32) -> crate::model::ProcInfo {
    crate::model::ProcInfo::default()
}

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

#[cfg(not(target_os = "linux"))]
pub fn open_default(_opts: &SourceOptions) -> Result<Box<dyn DataSource>, SourceError> {
    Err(SourceError::Unsupported(
        "tcptop does not support this operating system yet (Linux only for now)".into(),
    ))
}
