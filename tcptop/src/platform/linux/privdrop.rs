//! Giving up privileges once the programs are attached.
//!
//! Loading and attaching needed CAP_BPF, CAP_PERFMON and CAP_NET_ADMIN (or
//! root), and the start-up /proc scan read other users' fd links. The run
//! loop needs far less:
//!
//! * Map reads (lookup, next key, lookup-and-delete) through fds we hold:
//!   no capability since Linux 5.19, where kernel.unprivileged_bpf_disabled
//!   only gates BPF_MAP_CREATE and BPF_PROG_LOAD (6.5 moved that check into
//!   those two commands). Before 5.19 the sysctl made every bpf() command
//!   need CAP_BPF or CAP_SYS_ADMIN. Which case holds is probed, not guessed
//!   from the version: one map read with the capability lowered.
//! * The ring buffer: mapped into memory at start-up, then read and polled
//!   without a syscall that checks privileges.
//! * /proc/PID/cmdline and /proc/PID/status (detail pane), /etc/passwd,
//!   /etc/services, /etc/hosts: world-readable. No fd links are read after
//!   start-up, so CAP_SYS_PTRACE is not kept.
//! * Detaching at exit closes fds, which needs nothing.
//!
//! Everything else goes from the effective, permitted, inheritable, ambient
//! and bounding sets, and no_new_privs keeps execve from granting any back.
//! With a user name, the process also takes that user's uid and gid (and
//! only its primary group), keeping a capability the probe found necessary
//! across the switch with PR_SET_KEEPCAPS.
//!
//! Capabilities belong to threads, not to the process: this runs while the
//! calling thread is the only one (checked), so that threads started later
//! inherit the reduced sets.

use std::ffi::CString;
use std::io;
use std::time::{Duration, Instant};

use super::caps::{CAP_BPF, CAP_SYS_ADMIN};

/// `_LINUX_CAPABILITY_VERSION_3`: 64-bit sets as two 32-bit halves.
const CAPABILITY_VERSION_3: u32 = 0x2008_0522;

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: libc::c_int,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

/// The calling thread's capability sets, one bit per capability.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct CapSets {
    effective: u64,
    permitted: u64,
    inheritable: u64,
}

fn bit(cap: u32) -> u64 {
    1u64 << cap
}

fn capget() -> io::Result<CapSets> {
    let mut header = CapHeader {
        version: CAPABILITY_VERSION_3,
        pid: 0,
    };
    let mut data = [CapData::default(); 2];
    // SAFETY: a valid header and the two-element array version 3 expects.
    let rc = unsafe { libc::syscall(libc::SYS_capget, &mut header, data.as_mut_ptr()) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    let join = |lo: u32, hi: u32| u64::from(lo) | u64::from(hi) << 32;
    Ok(CapSets {
        effective: join(data[0].effective, data[1].effective),
        permitted: join(data[0].permitted, data[1].permitted),
        inheritable: join(data[0].inheritable, data[1].inheritable),
    })
}

fn capset(sets: CapSets) -> io::Result<()> {
    let mut header = CapHeader {
        version: CAPABILITY_VERSION_3,
        pid: 0,
    };
    let half = |shift: u32| CapData {
        effective: (sets.effective >> shift) as u32,
        permitted: (sets.permitted >> shift) as u32,
        inheritable: (sets.inheritable >> shift) as u32,
    };
    let data = [half(0), half(32)];
    // SAFETY: a valid header and the two-element array version 3 expects.
    let rc = unsafe { libc::syscall(libc::SYS_capset, &mut header, data.as_ptr()) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// prctl with integer arguments.
fn prctl(option: libc::c_int, arg: libc::c_ulong, arg2: libc::c_ulong) -> io::Result<()> {
    // SAFETY: every option used here takes integers, no pointers.
    if unsafe { libc::prctl(option, arg, arg2, 0, 0) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// A user from the password database.
#[derive(Debug, PartialEq, Eq)]
struct Account {
    name: String,
    uid: libc::uid_t,
    gid: libc::gid_t,
}

fn lookup_user(name: &str) -> Result<Account, String> {
    let unknown = || format!("--user: there is no user named \"{name}\"");
    let cname = CString::new(name).map_err(|_| unknown())?;
    let mut buf = vec![0u8; 4096];
    loop {
        // SAFETY: passwd is plain data that getpwnam_r fills in.
        let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
        let mut found: *mut libc::passwd = std::ptr::null_mut();
        // SAFETY: valid C string, output struct and buffer of the given length;
        // the strings in `pwd` point into `buf`, which outlives their use.
        let rc = unsafe {
            libc::getpwnam_r(
                cname.as_ptr(),
                &mut pwd,
                buf.as_mut_ptr().cast(),
                buf.len(),
                &mut found,
            )
        };
        if rc == libc::ERANGE && buf.len() < 1 << 20 {
            buf.resize(buf.len() * 2, 0);
            continue;
        }
        if rc != 0 {
            return Err(format!(
                "cannot look up user \"{name}\" (--user): {}",
                io::Error::from_raw_os_error(rc)
            ));
        }
        if found.is_null() {
            return Err(unknown());
        }
        return Ok(Account {
            name: name.to_string(),
            uid: pwd.pw_uid,
            gid: pwd.pw_gid,
        });
    }
}

/// Number of threads in this process, from /proc/self/status.
fn thread_count() -> Option<u32> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    parse_threads(&status)
}

/// Waits (up to a second) until the calling thread is the only one. A
/// thread that was just joined has finished running our code, but the
/// kernel may count it for a moment longer.
fn wait_single_thread() -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(1);
    loop {
        match thread_count() {
            Some(1) => return Ok(()),
            Some(n) if Instant::now() >= deadline => {
                return Err(format!(
                    "cannot drop privileges: {n} threads are running, and capabilities \
                     belong to each thread"
                ));
            }
            Some(_) => std::thread::sleep(Duration::from_millis(1)),
            None => return Err("cannot drop privileges: /proc/self/status is unreadable".into()),
        }
    }
}

fn parse_threads(status: &str) -> Option<u32> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .and_then(|n| n.trim().parse().ok())
}

/// Capabilities (as bits) that map reads need on this kernel: none, or the
/// one that makes the kernel's bpf_capable() true. `map_read_works` is
/// tried once with both of those lowered from the effective set.
fn needed_for_maps(now: CapSets, map_read_works: impl FnOnce() -> bool) -> Result<u64, String> {
    let bpf_capable = bit(CAP_BPF) | bit(CAP_SYS_ADMIN);
    capset(CapSets {
        effective: now.effective & !bpf_capable,
        ..now
    })
    .map_err(|e| format!("cannot lower capabilities (capset): {e}"))?;
    let works = map_read_works();
    capset(now).map_err(|e| format!("cannot restore capabilities (capset): {e}"))?;
    if works {
        return Ok(0);
    }
    [CAP_BPF, CAP_SYS_ADMIN]
        .into_iter()
        .map(bit)
        .find(|b| now.permitted & b != 0)
        .ok_or_else(|| "reading eBPF maps needs CAP_BPF, which this process does not hold".into())
}

/// Drops every capability not in `keep` from the bounding set, where
/// allowed: that needs CAP_SETPCAP, which root has and a binary given file
/// capabilities does not. The bounding set only limits what execve grants,
/// which no_new_privs rules out anyway, so a refusal is not an error.
fn drop_bounding(keep: u64) {
    let last = std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|s| s.trim().parse::<u32>().ok())
        .unwrap_or(63)
        .min(63);
    for cap in (0..=last).filter(|c| keep & bit(*c) == 0) {
        let _ = prctl(libc::PR_CAPBSET_DROP, libc::c_ulong::from(cap), 0);
    }
}

/// Takes the user's uid, gid and primary group as the only group, keeping
/// the permitted capability set across the switch (PR_SET_KEEPCAPS; the
/// kernel clears the effective set, which the caller sets afterwards).
fn switch_user(a: &Account) -> Result<(), String> {
    let fail = |what: &str, e: io::Error| {
        let hint = if e.raw_os_error() == Some(libc::EPERM) {
            "; --user needs tcptop to be started as root"
        } else {
            ""
        };
        format!("cannot switch to user \"{}\": {what}: {e}{hint}", a.name)
    };
    let last = io::Error::last_os_error;
    prctl(libc::PR_SET_KEEPCAPS, 1, 0).map_err(|e| fail("PR_SET_KEEPCAPS", e))?;
    // SAFETY: one gid from a valid reference.
    if unsafe { libc::setgroups(1, &a.gid) } != 0 {
        return Err(fail("setgroups", last()));
    }
    // SAFETY: plain id arguments.
    if unsafe { libc::setresgid(a.gid, a.gid, a.gid) } != 0 {
        return Err(fail("setresgid", last()));
    }
    // SAFETY: plain id arguments.
    if unsafe { libc::setresuid(a.uid, a.uid, a.uid) } != 0 {
        return Err(fail("setresuid", last()));
    }
    prctl(libc::PR_SET_KEEPCAPS, 0, 0).map_err(|e| fail("PR_SET_KEEPCAPS", e))
}

/// Reduces the process to what reading the maps needs (see the module
/// comment), optionally as `user`. `map_read_works` reads one map through
/// an fd already held. Errors are one line for the user.
pub fn drop_privileges(
    user: Option<&str>,
    map_read_works: impl FnOnce() -> bool,
) -> Result<(), String> {
    let account = user.map(lookup_user).transpose()?;
    wait_single_thread()?;
    let now = capget().map_err(|e| format!("cannot read capabilities (capget): {e}"))?;
    let keep = needed_for_maps(now, map_read_works)?;
    // In this order: the bounding set needs CAP_SETPCAP, the switch
    // CAP_SETUID and CAP_SETGID, both still effective until the capset.
    drop_bounding(keep);
    // Ambient capabilities would survive execve; none were asked for.
    let _ = prctl(
        libc::PR_CAP_AMBIENT,
        libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong,
        0,
    );
    if let Some(a) = &account {
        switch_user(a)?;
    }
    let want = CapSets {
        effective: keep,
        permitted: keep,
        inheritable: 0,
    };
    capset(want).map_err(|e| format!("cannot drop capabilities (capset): {e}"))?;
    prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0).map_err(|e| format!("cannot set no_new_privs: {e}"))?;
    match capget() {
        Ok(got) if got == want => Ok(()),
        Ok(got) => Err(format!(
            "capabilities not dropped: the kernel reports {got:x?}, not {want:x?}"
        )),
        Err(e) => Err(format!("cannot read capabilities (capget): {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn threads_line() {
        assert_eq!(
            parse_threads("Name:\tx\nThreads:\t3\nSigQ:\t0/1\n"),
            Some(3)
        );
        assert_eq!(parse_threads("Name:\tx\n"), None);
    }

    #[test]
    fn reads_own_capabilities() {
        // Whoever runs the tests: the effective set is within the permitted.
        let c = capget().unwrap();
        assert_eq!(c.effective & !c.permitted, 0);
    }

    /// The probe runs with the bpf-capable capabilities lowered, and its
    /// answer decides what is kept; the thread's sets are restored after.
    #[test]
    fn probe_decides_what_maps_need() {
        let before = capget().unwrap();
        if before.permitted & bit(CAP_BPF) == 0 {
            eprintln!("skipping probe_decides_what_maps_need: needs CAP_BPF (root)");
            return;
        }
        let lowered = |works: bool| {
            move || {
                let c = capget().unwrap();
                assert_eq!(c.effective & (bit(CAP_BPF) | bit(CAP_SYS_ADMIN)), 0);
                assert_eq!(c.permitted, before.permitted);
                works
            }
        };
        assert_eq!(needed_for_maps(before, lowered(true)), Ok(0));
        assert_eq!(capget().unwrap(), before);
        assert_eq!(needed_for_maps(before, lowered(false)), Ok(bit(CAP_BPF)));
        assert_eq!(capget().unwrap(), before);
    }

    #[test]
    fn looks_up_users() {
        let root = lookup_user("root").unwrap();
        assert_eq!((root.uid, root.gid), (0, 0));
        let e = lookup_user("no-such-user-tcptop").unwrap_err();
        assert_eq!(e, "--user: there is no user named \"no-such-user-tcptop\"");
        assert!(lookup_user("a\0b").is_err());
    }
}
