//! Privilege and environment checks, done before anything is loaded so the
//! user gets one clear message instead of a kernel error code.

use std::path::PathBuf;

use crate::platform::SourceError;

const CAP_NET_ADMIN: u32 = 12;
pub(super) const CAP_SYS_ADMIN: u32 = 21;
const CAP_PERFMON: u32 = 38;
pub(super) const CAP_BPF: u32 = 39;

/// Effective capability set of this process, from /proc/self/status.
fn effective_caps() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    parse_cap_eff(&status)
}

fn parse_cap_eff(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
}

/// Names of the capabilities missing from `eff` (empty if enough).
fn missing(eff: u64) -> Vec<&'static str> {
    let has = |c: u32| eff & (1u64 << c) != 0;
    let mut out = Vec::new();
    // CAP_SYS_ADMIN covers loading and tracing on every kernel; CAP_BPF and
    // CAP_PERFMON are the narrow pair (Linux 5.8+).
    if !has(CAP_SYS_ADMIN) {
        if !has(CAP_BPF) {
            out.push("CAP_BPF");
        }
        if !has(CAP_PERFMON) {
            out.push("CAP_PERFMON");
        }
    }
    // Attaching to a cgroup needs CAP_NET_ADMIN.
    if !has(CAP_NET_ADMIN) {
        out.push("CAP_NET_ADMIN");
    }
    out
}

pub fn missing_message(missing: &[&str]) -> String {
    let exe = std::env::current_exe()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| "/path/to/tcptop".into());
    let now = if missing.is_empty() {
        "The kernel refused to load eBPF programs (EPERM)".to_string()
    } else {
        format!("Missing: {}", missing.join(", "))
    };
    format!(
        "tcptop needs privileges to load its eBPF programs into the kernel. {now}.\n\
         Run it as root (sudo tcptop), or give the binary the capabilities CAP_BPF, \
         CAP_PERFMON and CAP_NET_ADMIN once:\n    sudo setcap cap_bpf,cap_perfmon,cap_net_admin+ep {exe}"
    )
}

pub fn check() -> Result<(), SourceError> {
    let eff = effective_caps().unwrap_or(0);
    let miss = missing(eff);
    if miss.is_empty() {
        Ok(())
    } else {
        Err(SourceError::Privileges(missing_message(&miss)))
    }
}

/// Kernels before 5.11 charge BPF maps to RLIMIT_MEMLOCK; lift it where we may.
pub fn raise_memlock() {
    let rlim = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: plain syscall with a valid pointer; failure is harmless on 5.11+.
    let _ = unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &rlim) };
}

/// (major, minor) of a release string such as "6.1.0-28-amd64".
pub fn parse_release(release: &str) -> Option<(u32, u32)> {
    let mut it = release.trim().split(|c: char| !c.is_ascii_digit());
    let major = it.next()?.parse().ok()?;
    let minor = it.next()?.parse().ok()?;
    Some((major, minor))
}

/// Oldest kernel tcptop runs on: the oldest its test suite has passed on
/// (Debian 11's 5.10, in `scripts/vm-test`). What it uses would allow 5.9
/// (BPF ring buffer 5.8, map element and TCP socket iterators 5.9, BTF),
/// but 5.10 is where it has been seen to load and count.
pub const MIN_KERNEL: (u32, u32) = (5, 10);

pub fn check_kernel() -> Result<(), SourceError> {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    match parse_release(&release) {
        Some(v) if v < MIN_KERNEL => Err(SourceError::Unsupported(format!(
            "this kernel (Linux {}) is too old: tcptop needs Linux {}.{} or newer \
             (BPF ring buffer, BTF).",
            release.trim(),
            MIN_KERNEL.0,
            MIN_KERNEL.1
        ))),
        _ => Ok(()),
    }
}

pub fn kernel_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| format!("Linux {}", s.trim()))
        .unwrap_or_else(|_| "unknown kernel".into())
}

/// Mount point of the cgroup v2 hierarchy (`/sys/fs/cgroup` on unified
/// systems, `/sys/fs/cgroup/unified` on hybrid ones).
pub fn cgroup2_root() -> Option<PathBuf> {
    let mounts = std::fs::read_to_string("/proc/mounts").ok()?;
    parse_cgroup2_root(&mounts)
}

fn parse_cgroup2_root(mounts: &str) -> Option<PathBuf> {
    mounts.lines().find_map(|l| {
        let mut f = l.split_whitespace();
        let (_dev, dir, fstype) = (f.next()?, f.next()?, f.next()?);
        (fstype == "cgroup2").then(|| PathBuf::from(dir))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cap_eff_parsing_and_missing_names() {
        let status = "Name:\tx\nCapEff:\t000001ffffffffff\n";
        let eff = parse_cap_eff(status).unwrap();
        assert!(missing(eff).is_empty());
        assert_eq!(missing(0), vec!["CAP_BPF", "CAP_PERFMON", "CAP_NET_ADMIN"]);
        let bpf_only = 1u64 << CAP_BPF | 1u64 << CAP_PERFMON;
        assert_eq!(missing(bpf_only), vec!["CAP_NET_ADMIN"]);
        let sysadmin_net = 1u64 << CAP_SYS_ADMIN | 1u64 << CAP_NET_ADMIN;
        assert!(missing(sysadmin_net).is_empty());
    }

    #[test]
    fn message_names_capabilities_and_setcap() {
        let m = missing_message(&["CAP_BPF"]);
        assert!(m.contains("Missing: CAP_BPF"));
        assert!(m.contains("setcap cap_bpf,cap_perfmon,cap_net_admin+ep"));
    }

    #[test]
    fn kernel_versions() {
        assert_eq!(parse_release("6.1.0-28-amd64"), Some((6, 1)));
        assert_eq!(parse_release("5.15.0-91-generic\n"), Some((5, 15)));
        assert_eq!(parse_release("6.18.44-fc-v669"), Some((6, 18)));
        assert_eq!(parse_release("garbage"), None);
        assert!((5, 9) < MIN_KERNEL && (5, 10) >= MIN_KERNEL && (6, 1) > MIN_KERNEL);
    }

    #[test]
    fn finds_cgroup2_mount() {
        let mounts = "cgroup /sys/fs/cgroup/cpu cgroup rw 0 0\n\
                      cgroup2 /sys/fs/cgroup/unified cgroup2 rw,nosuid 0 0\n";
        assert_eq!(
            parse_cgroup2_root(mounts),
            Some(PathBuf::from("/sys/fs/cgroup/unified"))
        );
        assert_eq!(parse_cgroup2_root("proc /proc proc rw 0 0\n"), None);
    }
}
