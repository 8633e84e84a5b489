//! The running kernel: its release, and the oldest one tcptop runs on.

use crate::platform::SourceError;

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_versions() {
        assert_eq!(parse_release("6.1.0-28-amd64"), Some((6, 1)));
        assert_eq!(parse_release("5.15.0-91-generic\n"), Some((5, 15)));
        assert_eq!(parse_release("6.18.44-fc-v669"), Some((6, 18)));
        assert_eq!(parse_release("garbage"), None);
        assert!((5, 9) < MIN_KERNEL && (5, 10) >= MIN_KERNEL && (6, 1) > MIN_KERNEL);
    }
}
