//! Facts about a process for the detail pane, read from /proc when the pane
//! opens. Everything here comes from outside: escape it before display.

use std::fs;

/// What is known about a process; None where it could not be read (the
/// process ended, or there is no /proc).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProcInfo {
    /// Arguments joined by spaces.
    pub cmdline: Option<String>,
    /// User name, or the uid number when it has none.
    pub user: Option<String>,
}

/// Reads /proc/PID/cmdline and the real uid from /proc/PID/status, named
/// through /etc/passwd.
pub fn lookup(pid: u32) -> ProcInfo {
    if pid == 0 {
        return ProcInfo::default();
    }
    let cmdline = fs::read(format!("/proc/{pid}/cmdline"))
        .ok()
        .map(|b| cmdline_text(&b))
        .filter(|s| !s.is_empty());
    let user = fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| real_uid(&s))
        .map(|uid| {
            fs::read_to_string("/etc/passwd")
                .ok()
                .and_then(|p| user_name(&p, uid))
                .unwrap_or_else(|| uid.to_string())
        });
    ProcInfo { cmdline, user }
}

/// NUL-separated arguments as one line.
pub fn cmdline_text(raw: &[u8]) -> String {
    let raw = raw.strip_suffix(&[0]).unwrap_or(raw);
    String::from_utf8_lossy(raw).replace('\0', " ")
}

/// The real uid: first number of the `Uid:` line.
pub fn real_uid(status: &str) -> Option<u32> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
}

/// The name of `uid` in a passwd file.
pub fn user_name(passwd: &str, uid: u32) -> Option<String> {
    passwd.lines().find_map(|l| {
        let mut f = l.split(':');
        let name = f.next()?;
        let id: u32 = f.nth(1)?.parse().ok()?;
        (id == uid && !name.is_empty()).then(|| name.to_string())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_files() {
        assert_eq!(cmdline_text(b"curl\0-o\0/dev/null\0"), "curl -o /dev/null");
        assert_eq!(cmdline_text(b""), "");
        let status = "Name:\tcurl\nUid:\t1000\t1000\t1000\t1000\nGid:\t5\n";
        assert_eq!(real_uid(status), Some(1000));
        assert_eq!(real_uid("Name: x\n"), None);
        let passwd =
            "root:x:0:0:root:/root:/bin/bash\n# junk\nalice:x:1000:1000::/home/a:/bin/sh\n";
        assert_eq!(user_name(passwd, 1000).as_deref(), Some("alice"));
        assert_eq!(user_name(passwd, 0).as_deref(), Some("root"));
        assert_eq!(user_name(passwd, 7), None);
    }

    #[test]
    fn reads_own_process() {
        let me = lookup(std::process::id());
        assert!(me.cmdline.is_some());
        assert!(me.user.is_some());
        assert_eq!(lookup(0), ProcInfo::default());
    }
}
