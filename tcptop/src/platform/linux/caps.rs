//! Capabilities: which ones loading the programs needs, checked before
//! anything is loaded so that the user gets one clear message (naming them
//! and the setcap line) instead of a kernel error code; and the memlock
//! limit older kernels charge maps to.

use super::procfs;
use crate::platform::SourceError;

pub(super) const CAP_SYS_ADMIN: u32 = 21;
const CAP_PERFMON: u32 = 38;
pub(super) const CAP_BPF: u32 = 39;

/// Effective capability set of this process, from /proc/self/status.
fn effective_caps() -> Option<u64> {
    parse_cap_eff(&procfs::own_status("CapEff:")?)
}

fn parse_cap_eff(hex: &str) -> Option<u64> {
    u64::from_str_radix(hex.trim(), 16).ok()
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
    // CAP_NET_ADMIN (attaching to a cgroup) is not required: only the
    // peers of unconnected UDP sockets need it, and without it a warning
    // says they are not shown.
    out
}

pub fn missing_message(missing: &[&str]) -> String {
    let exe = std::env::current_exe()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| "/path/to/tcptop".into());
    let now = if missing.is_empty() {
        "The kernel refused to load eBPF programs (EPERM: a security policy or a missing \
         capability)"
            .to_string()
    } else {
        format!("Missing: {}", missing.join(", "))
    };
    format!(
        "loading eBPF programs into the kernel needs privileges. {now}.\n\
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
/// Failure is harmless on 5.11+.
pub fn raise_memlock() {
    use rustix::process::{Resource, Rlimit, setrlimit};
    // None: RLIM_INFINITY.
    let unlimited = Rlimit {
        current: None,
        maximum: None,
    };
    let _ = setrlimit(Resource::Memlock, unlimited);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cap_eff_parsing_and_missing_names() {
        let eff = parse_cap_eff("000001ffffffffff").unwrap();
        assert!(missing(eff).is_empty());
        assert_eq!(missing(0), vec!["CAP_BPF", "CAP_PERFMON"]);
        // CAP_NET_ADMIN is optional (UDP peers of unconnected sockets).
        let bpf_only = 1u64 << CAP_BPF | 1u64 << CAP_PERFMON;
        assert!(missing(bpf_only).is_empty());
        assert_eq!(missing(1u64 << CAP_BPF), vec!["CAP_PERFMON"]);
        assert!(missing(1u64 << CAP_SYS_ADMIN).is_empty());
    }

    #[test]
    fn message_names_capabilities_and_setcap() {
        let m = missing_message(&["CAP_BPF"]);
        assert!(m.contains("Missing: CAP_BPF"));
        assert!(m.contains("setcap cap_bpf,cap_perfmon,cap_net_admin+ep"));
    }
}
