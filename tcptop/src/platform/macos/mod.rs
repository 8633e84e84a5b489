//! The macOS backend: the kernel's socket lists, `sysctl
//! net.inet.tcp.pcblist_n` and `net.inet.udp.pcblist_n` (what `netstat`
//! reads), read once per interval. Any user may read them: no privilege,
//! no kernel extension. Parsing and bookkeeping are `platform::pcblist`
//! (pure, tested on every platform); this module makes the system calls:
//! `sysctlbyname`, `proc_name`, `proc_pidinfo`, `kern.procargs2`,
//! `getpwuid_r`.

use std::ffi::{CStr, c_int, c_void};
use std::io;

use super::pcblist::{self, Counting, Tracker, parse::describe, procargs};
use super::{DataSource, ProcLookup, SourceError, SourceOptions};
use crate::model::{ProcInfo, Proto, Snapshot};

/// Reads of one list while it changes under us, at most.
const TRIES: u32 = 3;

/// The lists, by protocol.
const TCP_LIST: &CStr = c"net.inet.tcp.pcblist_n";
const UDP_LIST: &CStr = c"net.inet.udp.pcblist_n";

pub struct PcblistSource {
    tracker: Tracker,
    counting: Counting,
    udp: bool,
    warnings: Vec<String>,
    notice: String,
}

impl PcblistSource {
    pub fn open(opts: &SourceOptions) -> Result<PcblistSource, SourceError> {
        let linux_only = opts.linux.given();
        if !linux_only.is_empty() {
            return Err(SourceError::Unsupported(format!(
                "{} only apply on Linux (eBPF and cgroups); on macOS tcptop reads the \
                 kernel's socket lists: leave them out",
                linux_only.join(", ")
            )));
        }
        let release = sysctl_string(c"kern.osrelease").map_err(|e| {
            SourceError::Failed(format!(
                "cannot read the kernel's release (kern.osrelease): {e}"
            ))
        })?;
        let major = release
            .split('.')
            .next()
            .and_then(|m| m.parse::<u32>().ok())
            .ok_or_else(|| {
                SourceError::Failed(format!(
                    "the kernel's release \"{}\" is not Darwin's MAJOR.MINOR.PATCH",
                    crate::escape::untrusted(&release)
                ))
            })?;
        let mut source = PcblistSource {
            tracker: Tracker::new(),
            counting: Counting::for_darwin(major),
            udp: opts.udp,
            warnings: Vec::new(),
            notice: "macOS (socket lists, read each interval): no connections shorter than \
                     an interval, no drop counters, retransmits are timeouts seen at reads"
                .into(),
        };
        // The first read adopts what is open (counting from now) and shows
        // now, before the display starts, whether the lists can be read.
        source.collect()?;
        Ok(source)
    }

    fn read(&self, proto: Proto) -> Result<pcblist::List, SourceError> {
        let name = match proto {
            Proto::Tcp => TCP_LIST,
            Proto::Udp => UDP_LIST,
        };
        pcblist::read_consistent(|| sysctl_bytes(name), proto, self.counting, TRIES)
            .map_err(|e| {
                SourceError::Failed(format!(
                    "cannot read the kernel's socket list ({}): {e}",
                    name.to_string_lossy()
                ))
            })?
            .map_err(|e| SourceError::Failed(describe(proto, &e)))
    }
}

impl DataSource for PcblistSource {
    fn hooks(&self) -> &str {
        "pcblist"
    }

    fn collect(&mut self) -> Result<Snapshot, SourceError> {
        let tcp = self.read(Proto::Tcp)?;
        let udp = if self.udp {
            self.read(Proto::Udp)?
        } else {
            pcblist::List::default()
        };
        Ok(self
            .tracker
            .update(tcp.pcbs.iter().chain(&udp.pcbs), &mut process_name))
    }

    fn warnings(&self) -> &[String] {
        &self.warnings
    }

    fn notice(&self) -> Option<&str> {
        Some(&self.notice)
    }

    fn process_lookup(&self) -> ProcLookup {
        Box::new(process_info)
    }

    fn drop_privileges(&mut self, user: Option<&str>) -> Result<(), SourceError> {
        match user {
            None => Ok(()),
            Some(_) => Err(SourceError::Unsupported(
                "--user is for Linux, where tcptop starts with privileges; on macOS it needs \
                 none: run it as that user"
                    .into(),
            )),
        }
    }
}

/// A sysctl's value by name, read whole: its size asked first, and asked
/// again if it grew between the two calls.
fn sysctl_bytes(name: &CStr) -> io::Result<Vec<u8>> {
    for _ in 0..8 {
        let mut len: libc::size_t = 0;
        // SAFETY: `name` is NUL-terminated; a null old pointer asks only
        // for the size, written to `len`; no new value is given. No crate
        // wraps sysctlbyname for an opaque, private node like this one.
        let rc = unsafe {
            libc::sysctlbyname(
                name.as_ptr(),
                std::ptr::null_mut(),
                &raw mut len,
                std::ptr::null_mut(),
                0,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        // The kernel's estimate already has room for an eighth more
        // sockets; a little more for the ones that come meanwhile.
        let mut buf = vec![0u8; len + len / 4 + 64];
        let mut got = buf.len();
        // SAFETY: `buf` is writable for `got` bytes, the size the kernel
        // is told; it writes at most that and sets `got` to what it wrote.
        let rc = unsafe {
            libc::sysctlbyname(
                name.as_ptr(),
                buf.as_mut_ptr().cast::<c_void>(),
                &raw mut got,
                std::ptr::null_mut(),
                0,
            )
        };
        if rc == 0 {
            buf.truncate(got);
            return Ok(buf);
        }
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::ENOMEM) {
            return Err(e);
        }
    }
    Err(io::Error::other("the list kept growing while it was read"))
}

/// `net.inet.ip.portrange.first` to `.last`, the default (IANA's dynamic
/// range) when they cannot be read.
pub fn ephemeral_ports() -> (u16, u16) {
    let port = |name: &CStr| {
        let b = sysctl_bytes(name).ok()?;
        let n = i32::from_ne_bytes(b.get(..4)?.try_into().ok()?);
        u16::try_from(n).ok()
    };
    match (
        port(c"net.inet.ip.portrange.first"),
        port(c"net.inet.ip.portrange.last"),
    ) {
        (Some(lo), Some(hi)) if lo <= hi => (lo, hi),
        _ => (49152, 65535),
    }
}

fn sysctl_string(name: &CStr) -> io::Result<String> {
    let mut b = sysctl_bytes(name)?;
    if let Some(nul) = b.iter().position(|&c| c == 0) {
        b.truncate(nul);
    }
    Ok(String::from_utf8_lossy(&b).into_owned())
}

/// A process's name (`proc_name`: the kernel's, up to 32 bytes); empty
/// when the process is gone or not ours to ask about. Untrusted text: the
/// display escapes it.
fn process_name(pid: u32) -> String {
    let Ok(pid) = c_int::try_from(pid) else {
        return String::new();
    };
    let mut buf = [0u8; 64];
    // SAFETY: `buf` is writable for the length given; proc_name writes at
    // most that many bytes and returns how many (0 or less: none).
    let n = unsafe { libc::proc_name(pid, buf.as_mut_ptr().cast::<c_void>(), 64) };
    let n = usize::try_from(n).unwrap_or(0).min(buf.len());
    let name = buf[..n].split(|&c| c == 0).next().unwrap_or_default();
    String::from_utf8_lossy(name).into_owned()
}

/// What the detail pane shows about a process: its arguments
/// (`kern.procargs2`; the executable's path from `proc_pidpath` when those
/// may not be read) and its user (`proc_pidinfo`'s uid, named by the user
/// database).
fn process_info(pid: u32) -> ProcInfo {
    let Ok(pid) = c_int::try_from(pid) else {
        return ProcInfo::default();
    };
    ProcInfo {
        cmdline: arguments(pid).or_else(|| executable(pid)),
        user: user(pid),
    }
}

fn arguments(pid: c_int) -> Option<String> {
    let mut mib = [libc::CTL_KERN, libc::KERN_PROCARGS2, pid];
    let mut max: c_int = 0;
    let mut len = std::mem::size_of::<c_int>();
    let mut argmax_mib = [libc::CTL_KERN, libc::KERN_ARGMAX];
    // SAFETY: `max` is a writable int and `len` its size.
    let rc = unsafe {
        libc::sysctl(
            argmax_mib.as_mut_ptr(),
            2,
            (&raw mut max).cast::<c_void>(),
            &raw mut len,
            std::ptr::null_mut(),
            0,
        )
    };
    if rc != 0 {
        return None;
    }
    let mut buf = vec![0u8; usize::try_from(max).ok()?];
    let mut len = buf.len();
    // SAFETY: `buf` is writable for `len` bytes; the kernel writes at most
    // that and sets `len` to what it wrote.
    let rc = unsafe {
        libc::sysctl(
            mib.as_mut_ptr(),
            3,
            buf.as_mut_ptr().cast::<c_void>(),
            &raw mut len,
            std::ptr::null_mut(),
            0,
        )
    };
    if rc != 0 {
        return None;
    }
    buf.truncate(len);
    procargs::command_line(&buf)
}

fn executable(pid: c_int) -> Option<String> {
    let mut buf = vec![0u8; libc::PROC_PIDPATHINFO_MAXSIZE as usize];
    let size = u32::try_from(buf.len()).ok()?;
    // SAFETY: `buf` is writable for `size` bytes; proc_pidpath writes at
    // most that and returns the path's length (0 or less: none).
    let n = unsafe { libc::proc_pidpath(pid, buf.as_mut_ptr().cast::<c_void>(), size) };
    let n = usize::try_from(n).ok().filter(|&n| n > 0)?.min(buf.len());
    Some(String::from_utf8_lossy(&buf[..n]).into_owned())
}

fn user(pid: c_int) -> Option<String> {
    // SAFETY: proc_bsdinfo is plain integers and byte arrays: all zeros is
    // a valid value.
    let mut info: libc::proc_bsdinfo = unsafe { std::mem::zeroed() };
    let size = c_int::try_from(std::mem::size_of::<libc::proc_bsdinfo>()).ok()?;
    // SAFETY: `info` is writable for `size` bytes, the size of the struct
    // PROC_PIDTBSDINFO fills; the call returns how many bytes it wrote.
    let n = unsafe {
        libc::proc_pidinfo(
            pid,
            libc::PROC_PIDTBSDINFO,
            0,
            (&raw mut info).cast::<c_void>(),
            size,
        )
    };
    if n != size {
        return None;
    }
    let uid = info.pbi_uid;
    Some(user_name(uid).unwrap_or_else(|| uid.to_string()))
}

/// The user database's name for `uid` (getpwuid_r: directory services
/// included), None when it has none.
fn user_name(uid: libc::uid_t) -> Option<String> {
    let mut buf = vec![0 as libc::c_char; 4096];
    // SAFETY: passwd is plain data (integers and pointers): all zeros is a
    // valid value, filled in by getpwuid_r.
    let mut pw: libc::passwd = unsafe { std::mem::zeroed() };
    let mut result: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: `pw` and `buf` are writable for their sizes, `result` is set
    // to `&pw` on success or null; pw's strings point into `buf`, which
    // outlives their use below.
    let rc = unsafe {
        libc::getpwuid_r(
            uid,
            &raw mut pw,
            buf.as_mut_ptr(),
            buf.len(),
            &raw mut result,
        )
    };
    if rc != 0 || result.is_null() || pw.pw_name.is_null() {
        return None;
    }
    // SAFETY: pw_name is a NUL-terminated string inside `buf`.
    let name = unsafe { CStr::from_ptr(pw.pw_name) };
    Some(name.to_string_lossy().into_owned())
}
