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

use std::io;
use std::time::{Duration, Instant};

use rustix::process::{Gid, Uid};
use rustix::thread::{self as rthread, CapabilitySet, CapabilitySets};

use super::caps::{CAP_BPF, CAP_SYS_ADMIN};
use super::users::{self, Account};

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

/// capget(2) of the calling thread.
fn capget() -> io::Result<CapSets> {
    let c = rthread::capabilities(None)?;
    Ok(CapSets {
        effective: c.effective.bits(),
        permitted: c.permitted.bits(),
        inheritable: c.inheritable.bits(),
    })
}

/// capset(2) of the calling thread. Every bit is passed on, also those of
/// capabilities newer than rustix's names for them.
fn capset(sets: CapSets) -> io::Result<()> {
    let set = CapabilitySet::from_bits_retain;
    rthread::set_capabilities(
        None,
        CapabilitySets {
            effective: set(sets.effective),
            permitted: set(sets.permitted),
            inheritable: set(sets.inheritable),
        },
    )?;
    Ok(())
}

/// The account `--user NAME` names, or a message saying why there is none.
fn lookup_user(name: &str) -> Result<Account, String> {
    match users::by_name(name) {
        Ok(Some(a)) => Ok(a),
        Ok(None) => Err(format!("--user: there is no user named \"{name}\"")),
        Err(e) => Err(format!("cannot look up user \"{name}\" (--user): {e}")),
    }
}

/// Number of threads in this process, from /proc/self/status.
fn thread_count() -> Option<u32> {
    super::procfs::own_status("Threads:")?.parse().ok()
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
        let _ =
            rthread::remove_capability_from_bounding_set(CapabilitySet::from_bits_retain(bit(cap)));
    }
}

/// Takes the user's uid, gid and primary group as the only group, keeping
/// the permitted capability set across the switch (PR_SET_KEEPCAPS; the
/// kernel clears the effective set, which the caller sets afterwards).
///
/// The kernel keeps credentials per thread; the C library's setresuid and
/// friends signal every thread to make the same call, rustix's `set_thread_*`
/// make it for the calling thread only. Here the calling thread is the only
/// one (`wait_single_thread`), and threads started later inherit its
/// credentials, so both change the whole process.
fn switch_user(a: &Account) -> Result<(), String> {
    let fail = |what: &str, e: io::Error| {
        let hint = if e.raw_os_error() == Some(libc::EPERM) {
            "; --user needs tcptop to be started as root"
        } else {
            ""
        };
        format!("cannot switch to user \"{}\": {what}: {e}{hint}", a.name)
    };
    let keepcaps = |on: bool| {
        rthread::set_keep_capabilities(on).map_err(|e| fail("PR_SET_KEEPCAPS", e.into()))
    };
    let (uid, gid) = (Uid::from_raw(a.uid), Gid::from_raw(a.gid));
    keepcaps(true)?;
    rthread::set_thread_groups(&[gid]).map_err(|e| fail("setgroups", e.into()))?;
    rthread::set_thread_res_gid(gid, gid, gid).map_err(|e| fail("setresgid", e.into()))?;
    rthread::set_thread_res_uid(uid, uid, uid).map_err(|e| fail("setresuid", e.into()))?;
    keepcaps(false)
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
    let _ = rthread::clear_ambient_capability_set();
    if let Some(a) = &account {
        switch_user(a)?;
    }
    let want = CapSets {
        effective: keep,
        permitted: keep,
        inheritable: 0,
    };
    capset(want).map_err(|e| format!("cannot drop capabilities (capset): {e}"))?;
    rthread::set_no_new_privs(true).map_err(|e| format!("cannot set no_new_privs: {e}"))?;
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
    fn own_threads() {
        // This test's thread and the harness's main thread at least.
        assert!(thread_count().is_some_and(|n| n >= 1));
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
