//! Discovery of TCP connections that already exist when tcptop starts.
//!
//! Everything comes from `/proc`, in one pass over the process directories:
//!
//! * `/proc/<pid>/ns/net` tells which network namespace a process lives in.
//!   `/proc/<pid>/net/tcp{,6}` shows the sockets of exactly that namespace, so
//!   each distinct namespace is read once, through the first process (lowest
//!   pid) that can be read in it.
//! * `/proc/<pid>/fd/*` links to `socket:[<inode>]` name the processes holding
//!   each socket. Pids are visited in ascending order and the first holder is
//!   kept, so the lowest pid wins.
//!
//! Processes come and go during the scan; any failure to read something below
//! one `/proc/<pid>` (ENOENT, ESRCH, EACCES, ...) only skips that item. Only a
//! failure to list `proc_root` itself is reported as an error.

use std::collections::hash_map::Entry;
use std::ffi::OsStr;
use std::fs;
use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use crate::model::CompactString;

/// Socket inode -> (lowest process id holding it, that process's name).
/// Hashed with foldhash (inode numbers, 200,000 of them at start-up on a
/// busy machine; SipHash was a tenth of building and reading it).
pub type Owners = foldhash::HashMap<u64, (u32, CompactString)>;

/// Kernel TCP state number of a listening socket (`TCP_LISTEN`).
const TCP_LISTEN: u8 = 10;

/// One TCP socket found in `/proc/<pid>/net/{tcp,tcp6}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcSocket {
    /// Inode number of the network namespace (as in `/proc/<pid>/ns/net` -> `net:[4026531840]`).
    pub netns: u32,
    pub local: SocketAddr,
    pub remote: SocketAddr,
    /// Kernel TCP state number (1 = ESTABLISHED ... 10 = LISTEN), hex field `st`.
    pub state: u8,
    pub inode: u64,
    /// `(pid, comm)` of a process holding an fd to `socket:[inode]`.
    pub owner: Option<(u32, CompactString)>,
}

/// What one pass over `/proc` found.
#[derive(Debug, Default)]
pub struct Scan {
    /// Every network namespace a process lives in, with the lowest pid
    /// seen in it (its `/proc/<pid>/ns/net` enters it), in pid order.
    pub namespaces: Vec<NetNs>,
    /// Socket inode -> `(pid, comm)` of its lowest-pid holder.
    pub owners: Owners,
    /// (namespace inode, pid) of every process, in pid order: whose
    /// `net/tcp` shows a namespace's table.
    members: Vec<(u32, u32)>,
}

/// A network namespace and one process in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NetNs {
    pub inode: u32,
    pub pid: u32,
}

/// Every network namespace reachable through `/proc/<pid>/ns/net` and,
/// with `owners`, the owner of every socket a process holds (without:
/// `Scan::owners` is empty, for the caller to fill from the kernel's
/// iterator). `proc_root` is normally `"/proc"` (parameterised for tests).
///
/// # Errors
///
/// Only if `proc_root` itself cannot be listed. Anything that fails below one
/// `/proc/<pid>` (the process exited, permission denied, ...) is skipped.
pub fn scan(proc_root: &Path, owners: bool) -> io::Result<Scan> {
    let mut pids: Vec<u32> = fs::read_dir(proc_root)?
        .filter_map(|entry| parse_pid(&entry.ok()?.file_name()))
        .collect();
    pids.sort_unstable();
    let mut scan = Scan::default();
    let mut path = PathBuf::from(proc_root);
    for pid in pids {
        path.push(pid.to_string());
        if let Some(netns) = read_netns(&mut path) {
            if !scan.namespaces.iter().any(|n| n.inode == netns) {
                scan.namespaces.push(NetNs { inode: netns, pid });
            }
            scan.members.push((netns, pid));
        }
        if owners {
            collect_owners(&mut path, pid, &mut scan.owners);
        }
        path.pop();
    }
    Ok(scan)
}

/// Every TCP socket (v4 and v6) of the namespaces `scan` found, from their
/// `/proc/<pid>/net/tcp{,6}`, excluding listeners, with owners. Each
/// namespace's file is text the kernel makes by walking its whole table
/// of connections (all namespaces' unless one has its own): at 200,000
/// sockets in 5 namespaces, a quarter of tcptop's start-up. Read only
/// where nothing else names the connections open before start.
pub fn sockets(proc_root: &Path, scan: &Scan) -> Vec<ProcSocket> {
    let mut out = Vec::new();
    let mut path = PathBuf::from(proc_root);
    for ns in &scan.namespaces {
        let mut table = Namespace::default();
        // Through the first of its processes that still shows it.
        for &(_, pid) in scan.members.iter().filter(|(n, _)| *n == ns.inode) {
            path.push(pid.to_string());
            table.read_missing(&mut path);
            path.pop();
            if table.v4.is_some() && table.v6.is_some() {
                break;
            }
        }
        for rows in [table.v4, table.v6] {
            for (local, remote, state, inode, _uid) in rows.unwrap_or_default() {
                if state == TCP_LISTEN {
                    continue;
                }
                // Sockets without an inode (TIME_WAIT, orphans) have no owner.
                let owner = if inode == 0 {
                    None
                } else {
                    scan.owners.get(&inode).cloned()
                };
                out.push(ProcSocket {
                    netns: ns.inode,
                    local,
                    remote,
                    state,
                    inode,
                    owner,
                });
            }
        }
    }
    out
}

/// One row of `/proc/net/tcp{,6}`: (local, remote, state, inode, uid).
type Row = (SocketAddr, SocketAddr, u8, u64, u32);

/// The tables of one network namespace; `None` while its file has not
/// been read successfully through any process yet.
#[derive(Default)]
struct Namespace {
    v4: Option<Vec<Row>>,
    v6: Option<Vec<Row>>,
}

impl Namespace {
    /// Read whichever of `net/tcp`, `tcp6` is still missing through the
    /// process directory `pid_dir`. A failed read (the process vanished, or
    /// IPv6 is disabled) leaves it missing for the next process of the same
    /// namespace to try; a namespace whose file never reads is simply empty.
    fn read_missing(&mut self, pid_dir: &mut PathBuf) {
        let files = [(&mut self.v4, "tcp", false), (&mut self.v6, "tcp6", true)];
        for (slot, name, v6) in files {
            if slot.is_none() {
                pid_dir.push("net");
                pid_dir.push(name);
                if let Ok(text) = fs::read_to_string(&*pid_dir) {
                    *slot = Some(parse_net_tcp(&text, v6));
                }
                pid_dir.pop();
                pid_dir.pop();
            }
        }
    }
}

/// A `/proc` entry name that is a pid (all ASCII digits).
fn parse_pid(name: &OsStr) -> Option<u32> {
    let bytes = name.as_bytes();
    if bytes.is_empty() || !bytes.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(bytes).ok()?.parse().ok()
}

/// What the detail pane shows about process `pid`: /proc/PID/cmdline, and
/// the real uid from /proc/PID/status named through the user database.
pub fn process_info(pid: u32) -> crate::model::ProcInfo {
    if pid == 0 {
        return crate::model::ProcInfo::default();
    }
    let cmdline = fs::read(format!("/proc/{pid}/cmdline"))
        .ok()
        .map(|b| cmdline_text(&b))
        .filter(|s| !s.is_empty());
    let user = fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| status_field(&s, "Uid:").and_then(|n| n.parse::<u32>().ok()))
        .map(|uid| super::users::name_of(uid).unwrap_or_else(|| uid.to_string()));
    crate::model::ProcInfo { cmdline, user }
}

/// NUL-separated arguments as one line.
pub fn cmdline_text(raw: &[u8]) -> String {
    let raw = raw.strip_suffix(&[0]).unwrap_or(raw);
    String::from_utf8_lossy(raw).replace('\0', " ")
}

/// The first value of a `Name:` line of a /proc status file (the real uid
/// for `Uid:`, the set for `CapEff:`, the count for `Threads:`).
pub fn status_field<'a>(status: &'a str, name: &str) -> Option<&'a str> {
    status
        .lines()
        .find_map(|l| l.strip_prefix(name))
        .and_then(|rest| rest.split_whitespace().next())
}

/// A field of this process's /proc/self/status.
pub fn own_status(name: &str) -> Option<String> {
    let status = fs::read_to_string("/proc/self/status").ok()?;
    status_field(&status, name).map(str::to_string)
}

/// A network namespace and a file that enters it (setns).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NsFile {
    pub inode: u32,
    pub path: PathBuf,
}

/// Directories where tools keep named network namespaces (bind mounts),
/// which may hold connections while no process lives in them.
const NAMED_NETNS_DIRS: [&str; 2] = ["/run/netns", "/run/docker/netns"];

/// Every namespace `found` in /proc (entered through its lowest pid), then
/// the named ones (`ip netns`, docker) that no process lives in.
pub fn namespace_files(found: &[NetNs]) -> Vec<NsFile> {
    use std::os::unix::fs::MetadataExt;
    let mut out: Vec<NsFile> = found
        .iter()
        .map(|ns| NsFile {
            inode: ns.inode,
            path: PathBuf::from(format!("/proc/{}/ns/net", ns.pid)),
        })
        .collect();
    for dir in NAMED_NETNS_DIRS {
        let Ok(entries) = fs::read_dir(dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            // A namespace file's inode is the namespace's; an unmounted
            // placeholder is an empty file on the /run filesystem.
            let Ok(meta) = fs::metadata(&path) else {
                continue;
            };
            let Ok(inode) = u32::try_from(meta.ino()) else {
                continue;
            };
            if meta.dev() == fs::metadata(dir).map(|m| m.dev()).unwrap_or(0) {
                continue;
            }
            if !out.iter().any(|n| n.inode == inode) {
                out.push(NsFile { inode, path });
            }
        }
    }
    out
}

/// The process (lowest pid, name) holding each socket inode, from every
/// `/proc/<pid>/fd` this process may read (its own processes when
/// unprivileged).
pub fn socket_owners(proc_root: &Path) -> io::Result<Owners> {
    let mut pids: Vec<u32> = fs::read_dir(proc_root)?
        .filter_map(|entry| parse_pid(&entry.ok()?.file_name()))
        .collect();
    pids.sort_unstable();
    let mut owners = Owners::default();
    let mut path = PathBuf::from(proc_root);
    for pid in pids {
        path.push(pid.to_string());
        collect_owners(&mut path, pid, &mut owners);
        path.pop();
    }
    Ok(owners)
}

/// Inode of our own network namespace.
pub fn own_netns() -> Option<u32> {
    read_netns(&mut PathBuf::from("/proc/self"))
}

/// Netns inode of the process directory `pid_dir`, from its `ns/net` link.
fn read_netns(pid_dir: &mut PathBuf) -> Option<u32> {
    pid_dir.push("ns");
    pid_dir.push("net");
    let target = fs::read_link(&*pid_dir);
    pid_dir.pop();
    pid_dir.pop();
    bracketed_number(target.ok()?.as_os_str().as_bytes(), b"net:[")
}

/// Parses `<prefix><decimal>]`, e.g. `socket:[1234]` or `net:[4026531840]`.
fn bracketed_number<T: std::str::FromStr>(link: &[u8], prefix: &[u8]) -> Option<T> {
    let digits = link.strip_prefix(prefix)?.strip_suffix(b"]")?;
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(digits).ok()?.parse().ok()
}

/// Adds `(pid, comm)` for every socket held by the process directory
/// `pid_dir` that has no owner yet. `comm` is read at most once, and only if
/// the process holds such a socket.
fn collect_owners(pid_dir: &mut PathBuf, pid: u32, owners: &mut Owners) {
    use rustix::fs::{Dir, Mode, OFlags};
    pid_dir.push("fd");
    let fd = rustix::fs::open(
        &*pid_dir,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    );
    pid_dir.pop();
    // Each link read relative to the directory: a full path per
    // descriptor was resolved from / again (a tenth of start-up's CPU at
    // 200,000 sockets).
    let Ok(fd) = fd else {
        return;
    };
    let Ok(mut entries) = Dir::read_from(&fd) else {
        return;
    };
    let mut link = Vec::with_capacity(32);

    let mut comm: Option<CompactString> = None;
    while let Some(entry) = entries.read() {
        let Ok(entry) = entry else {
            break;
        };
        if entry.file_name().to_bytes().first() == Some(&b'.') {
            continue;
        }
        let Ok(target) = rustix::fs::readlinkat(&fd, entry.file_name(), std::mem::take(&mut link))
        else {
            continue;
        };
        let inode = bracketed_number::<u64>(target.as_bytes(), b"socket:[");
        // The buffer is used again for the next link.
        link = target.into_bytes();
        let Some(inode) = inode else {
            continue;
        };
        if let Entry::Vacant(slot) = owners.entry(inode) {
            let name = match &comm {
                Some(name) => name.clone(),
                None => {
                    pid_dir.push("comm");
                    // Any process can name itself with non-UTF-8 bytes: decode lossily.
                    let read = fs::read(&*pid_dir).map(|b| CompactString::from_utf8_lossy(&b));
                    pid_dir.pop();
                    // No comm: the process is gone; its sockets may still be
                    // found through a later holder.
                    let Ok(text) = read else {
                        return;
                    };
                    let name = CompactString::from(text.strip_suffix('\n').unwrap_or(&text));
                    comm = Some(name.clone());
                    name
                }
            };
            slot.insert((pid, name));
        }
    }
}

/// Parse one `/proc/net/tcp`, `tcp6`, `udp` or `udp6` file's text (same format) (header line included).
///
/// Returns `(local, remote, state, inode, uid)` per socket line; the header and
/// malformed lines are skipped. IPv4-mapped IPv6 addresses (`::ffff:a.b.c.d`)
/// are returned as IPv4 socket addresses.
pub fn parse_net_tcp(text: &str, v6: bool) -> Vec<(SocketAddr, SocketAddr, u8, u64, u32)> {
    text.lines()
        .filter_map(|line| parse_line(line, v6))
        .collect()
}

/// One socket line:
/// `sl local_address rem_address st tx_queue:rx_queue tr:tm->when retrnsmt uid timeout inode ...`
fn parse_line(line: &str, v6: bool) -> Option<Row> {
    let mut fields = line.split_whitespace();
    let slot = fields.next()?;
    // "0:" etc.; this rejects the header line ("sl").
    if !slot.strip_suffix(':')?.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let local = parse_endpoint(fields.next()?, v6)?;
    let remote = parse_endpoint(fields.next()?, v6)?;
    let state = u8::try_from(parse_hex(fields.next()?, 2)?).ok()?;
    let _queues = fields.next()?;
    let _timer = fields.next()?;
    let _retransmits = fields.next()?;
    let uid = fields.next()?.parse().ok()?;
    let _timeout = fields.next()?;
    let inode = fields.next()?.parse().ok()?;
    Some((local, remote, state, inode, uid))
}

/// `ADDR:PORT` with ADDR as 8 (v4) or 32 (v6) hex digits, PORT as 4 hex digits.
fn parse_endpoint(field: &str, v6: bool) -> Option<SocketAddr> {
    let (addr, port) = field.split_once(':')?;
    if port.len() != 4 {
        return None;
    }
    let port = u16::try_from(parse_hex(port, 4)?).ok()?;
    if v6 {
        if addr.len() != 32 {
            return None;
        }
        let mut octets = [0u8; 16];
        for (i, chunk) in octets.as_chunks_mut::<4>().0.iter_mut().enumerate() {
            let word = parse_hex(addr.get(i * 8..i * 8 + 8)?, 8)?;
            // The kernel printed the in-memory word as a host-order u32.
            *chunk = word.to_ne_bytes();
        }
        let ip = Ipv6Addr::from(octets);
        Some(match ip.to_ipv4_mapped() {
            Some(v4) => SocketAddr::V4(SocketAddrV4::new(v4, port)),
            None => SocketAddr::V6(SocketAddrV6::new(ip, port, 0, 0)),
        })
    } else {
        if addr.len() != 8 {
            return None;
        }
        let word = parse_hex(addr, 8)?;
        let ip = Ipv4Addr::from(word.to_ne_bytes());
        Some(SocketAddr::V4(SocketAddrV4::new(ip, port)))
    }
}

/// Hex digits only (no sign, no prefix), at most `max_len` of them.
fn parse_hex(s: &str, max_len: usize) -> Option<u32> {
    if s.is_empty() || s.len() > max_len || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u32::from_str_radix(s, 16).ok()
}

/// `net.ipv4.ip_local_port_range`, Linux's default when it cannot be read.
pub fn ephemeral_ports() -> (u16, u16) {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| {
            let mut it = s.split_whitespace().map(|n| n.parse::<u16>().ok());
            Some((it.next()??, it.next()??))
        })
        .filter(|(lo, hi)| lo <= hi)
        .unwrap_or((32768, 60999))
}

/// Sockets and open files now, and the file limit, for sizing the kernel
/// tables (None if a file cannot be read or parsed).
pub fn machine_load() -> Option<crate::platform::MachineLoad> {
    let read = |p: &str| fs::read_to_string(p).ok();
    let sockets = parse_sockstat(&read("/proc/net/sockstat")?)?;
    let open_files = first_number(&read("/proc/sys/fs/file-nr")?)?;
    let file_max = first_number(&read("/proc/sys/fs/file-max")?)?;
    Some(crate::platform::MachineLoad {
        sockets,
        open_files,
        file_max,
    })
}

/// Sockets in use plus TCP sockets in TIME_WAIT, from `/proc/net/sockstat`
/// (`sockets: used N` and `TCP: inuse … tw N …`).
pub fn parse_sockstat(text: &str) -> Option<u64> {
    let mut used = None;
    let mut tw = 0;
    for line in text.lines() {
        if line.starts_with("sockets:") {
            used = field(line, "used");
        } else if line.starts_with("TCP:") {
            tw = field(line, "tw").unwrap_or(0);
        }
    }
    Some(used?.saturating_add(tw))
}

/// The `inuse` count of the `proto` line (`TCP:` in sockstat, `TCP6:` in
/// sockstat6): the sockets of that protocol the kernel has hashed in the
/// namespace, listening or connected (not TIME_WAIT, not requests).
pub fn parse_inuse(text: &str, proto: &str) -> Option<u64> {
    let line = text
        .lines()
        .find(|l| l.split_ascii_whitespace().next() == Some(proto))?;
    field(line, "inuse")
}

/// The number after the word `name` in a sockstat line.
fn field(line: &str, name: &str) -> Option<u64> {
    let mut words = line.split_ascii_whitespace();
    words.find(|w| *w == name)?;
    words.next()?.parse().ok()
}

/// The TCP sockets (v4 and v6) in use in the namespace whose `net`
/// directory is `net_dir` (`/proc/<pid>/net`): `inuse` of sockstat plus
/// sockstat6's (absent without IPv6: 0). None if sockstat cannot be read.
pub fn tcp_in_use(net_dir: &Path) -> Option<u64> {
    let v4 = parse_inuse(&fs::read_to_string(net_dir.join("sockstat")).ok()?, "TCP:")?;
    let v6 = match fs::read_to_string(net_dir.join("sockstat6")) {
        Ok(text) => parse_inuse(&text, "TCP6:")?,
        Err(e) if e.kind() == io::ErrorKind::NotFound => 0,
        Err(_) => return None,
    };
    Some(v4 + v6)
}

/// The `net` directory (`/proc/<pid>/net`) of the namespace a
/// `/proc/<pid>/ns/net` file enters; None for a named namespace's file
/// (a bind mount no process may live in).
pub fn net_dir(ns_file: &Path) -> Option<PathBuf> {
    let pid_dir = ns_file.strip_prefix("/proc").ok()?.parent()?.parent()?;
    let pid = pid_dir.to_str()?;
    (!pid.is_empty() && pid.bytes().all(|b| b.is_ascii_digit()))
        .then(|| Path::new("/proc").join(pid).join("net"))
}

/// The first number of a `/proc/sys` file (`fs.file-nr`: allocated,
/// free, maximum; `fs.file-max`: one number).
pub fn first_number(text: &str) -> Option<u64> {
    text.split_ascii_whitespace().next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tcp_in_use_per_namespace() {
        let v4 = "sockets: used 40012\n\
                  TCP: inuse 40003 orphan 1 tw 7 alloc 40010 mem 3\n\
                  UDP: inuse 2 mem 1\n";
        let v6 = "TCP6: inuse 12\nUDP6: inuse 1\nUDPLITE6: inuse 0\n";
        assert_eq!(parse_inuse(v4, "TCP:"), Some(40_003));
        assert_eq!(parse_inuse(v6, "TCP6:"), Some(12));
        // UDP's line is not TCP's, nor TCP6 TCP's.
        assert_eq!(parse_inuse(v6, "TCP:"), None);
        assert_eq!(parse_inuse("TCP: orphan 1 tw 7\n", "TCP:"), None);
        assert_eq!(parse_inuse("TCP: inuse x\n", "TCP:"), None);
        // This process's own namespace, read for real: a number.
        assert!(tcp_in_use(Path::new("/proc/self/net")).is_some());
        assert_eq!(tcp_in_use(Path::new("/nonexistent")), None);
        assert_eq!(
            net_dir(Path::new("/proc/4242/ns/net")),
            Some(PathBuf::from("/proc/4242/net"))
        );
        assert_eq!(net_dir(Path::new("/run/netns/blue")), None);
        assert_eq!(net_dir(Path::new("/proc/self/ns/net")), None);
    }

    #[test]
    fn sockstat_and_file_counts() {
        let sockstat = "sockets: used 201873\n\
                        TCP: inuse 200012 orphan 0 tw 37 alloc 200020 mem 12\n\
                        UDP: inuse 3 mem 2\n\
                        UDPLITE: inuse 0\nRAW: inuse 0\nFRAG: inuse 0 memory 0\n";
        assert_eq!(parse_sockstat(sockstat), Some(201_910));
        assert_eq!(parse_sockstat("sockets: used 12\n"), Some(12));
        assert_eq!(parse_sockstat("TCP: inuse 1 tw 5\n"), None, "no total");
        assert_eq!(parse_sockstat("sockets: used many\n"), None);
        assert_eq!(
            first_number("203264\t0\t9223372036854775807\n"),
            Some(203_264)
        );
        assert_eq!(
            first_number("9223372036854775807\n"),
            Some(9_223_372_036_854_775_807)
        );
        assert_eq!(first_number(""), None);
        // This machine's files parse.
        let m = machine_load().unwrap();
        assert!(m.open_files > 0 && m.file_max >= m.open_files, "{m:?}");
    }

    #[test]
    fn process_facts() {
        assert_eq!(cmdline_text(b"curl\0-o\0/dev/null\0"), "curl -o /dev/null");
        assert_eq!(cmdline_text(b""), "");
        let status = "Name:\tcurl\nUid:\t1000\t1000\t1000\t1000\nCapEff:\t000001ffffffffff\n";
        assert_eq!(status_field(status, "Uid:"), Some("1000"));
        assert_eq!(status_field(status, "CapEff:"), Some("000001ffffffffff"));
        assert_eq!(status_field("Name: x\n", "Uid:"), None);
        let me = process_info(std::process::id());
        assert!(me.cmdline.is_some());
        assert!(me.user.is_some());
        assert_eq!(process_info(0), crate::model::ProcInfo::default());
    }
    use std::net::{TcpListener, TcpStream};
    use std::os::unix::fs::symlink;
    use std::str::FromStr;

    fn sa(s: &str) -> SocketAddr {
        SocketAddr::from_str(s).unwrap()
    }

    /// How the kernel prints an IPv4 address on this host.
    fn hex_v4(ip: Ipv4Addr) -> String {
        format!("{:08X}", u32::from_ne_bytes(ip.octets()))
    }

    /// How the kernel prints an IPv6 address on this host.
    fn hex_v6(ip: Ipv6Addr) -> String {
        let octets = ip.octets();
        let (words, _) = octets.as_chunks::<4>();
        words
            .iter()
            .map(|w| format!("{:08X}", u32::from_ne_bytes(*w)))
            .collect()
    }

    const V4_SAMPLE: &str = "\
  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 23456 1 0000000000000000 100 0 0 10 0
   1: 0100007F:1F90 0100007F:D431 01 00000000:00000000 00:00000000 00000000  1000        0 34567 1 0000000000000000 20 4 30 10 -1
   2: 0F02000A:0016 0202000A:C350 06 00000000:00000000 03:00001770 00000000     0        0 0 3 0000000000000000
   3: 0100007F:1F9 0100007F:D431 01 00000000:00000000 00:00000000 00000000  1000        0 1
   4: 0100007G:1F90 0100007F:D431 01 00000000:00000000 00:00000000 00000000  1000        0 1
   5: 0100007F:1F90 0100007F:D431 01 00000000:00000000
garbage
";

    #[test]
    #[cfg(target_endian = "little")]
    fn parse_v4_sample() {
        let rows = parse_net_tcp(V4_SAMPLE, false);
        assert_eq!(
            rows,
            vec![
                (sa("127.0.0.1:8080"), sa("0.0.0.0:0"), 10, 23456, 0),
                (sa("127.0.0.1:8080"), sa("127.0.0.1:54321"), 1, 34567, 1000),
                (sa("10.0.2.15:22"), sa("10.0.2.2:50000"), 6, 0, 0),
            ]
        );
    }

    const V6_SAMPLE: &str = "\
  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000000000000000000000000000:0016 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 11111 1 0000000000000000 100 0 0 10 0
   1: 00000000000000000000000001000000:0050 00000000000000000000000001000000:A000 01 00000000:00000000 00:00000000 00000000   33        0 22222 1 0000000000000000 20 4 0 10 -1
   2: 0000000000000000FFFF00000100007F:1F90 0000000000000000FFFF00000200007F:C000 01 00000000:00000000 00:00000000 00000000  1000        0 33333 1 0000000000000000 20 4 0 10 -1
   3: B80D0120000000000000000001000000:01BB B80D0120000000000000000002000000:E000 08 00000000:00000000 00:00000000 00000000     0        0 44444 1 0000000000000000 20 4 0 10 -1
   4: B80D01200000000000000000010000:01BB B80D0120000000000000000002000000:E000 08 00000000:00000000 00:00000000 00000000     0        0 1
   5: 00000000000000000000000001000000:0050 00000000000000000000000001000000:A000 01 00000000:00000000 00:00000000 00000000   33        0 notanumber
   6: 0100007F:1F90 0100007F:D431 01 00000000:00000000 00:00000000 00000000  1000        0 34567
";

    #[test]
    #[cfg(target_endian = "little")]
    fn parse_v6_sample() {
        let rows = parse_net_tcp(V6_SAMPLE, true);
        assert_eq!(
            rows,
            vec![
                (sa("[::]:22"), sa("[::]:0"), 10, 11111, 0),
                (sa("[::1]:80"), sa("[::1]:40960"), 1, 22222, 33),
                // ::ffff:127.0.0.1 comes back as plain IPv4.
                (sa("127.0.0.1:8080"), sa("127.0.0.2:49152"), 1, 33333, 1000),
                (
                    sa("[2001:db8::1]:443"),
                    sa("[2001:db8::2]:57344"),
                    8,
                    44444,
                    0
                ),
            ]
        );
        assert!(rows.iter().all(|r| r.0.is_ipv6() == r.1.is_ipv6()));
        assert!(rows[2].0.is_ipv4());
    }

    #[test]
    fn parse_any_endian_round_trip() {
        let v4 = format!(
            "header\n 0: {}:0050 {}:ABCD 01 0:0 0:0 0 7 0 99 1\n",
            hex_v4(Ipv4Addr::new(192, 168, 1, 2)),
            hex_v4(Ipv4Addr::new(8, 8, 4, 4)),
        );
        assert_eq!(
            parse_net_tcp(&v4, false),
            vec![(sa("192.168.1.2:80"), sa("8.8.4.4:43981"), 1, 99, 7)]
        );
        let v6 = format!(
            "header\n 0: {}:0050 {}:ABCD 04 0:0 0:0 0 7 0 98 1\n",
            hex_v6("fe80::1:2:3:4".parse().unwrap()),
            hex_v6("::ffff:10.1.2.3".parse().unwrap()),
        );
        assert_eq!(
            parse_net_tcp(&v6, true),
            vec![(sa("[fe80::1:2:3:4]:80"), sa("10.1.2.3:43981"), 4, 98, 7)]
        );
        // A v4 line in a v6 file (and vice versa) is malformed.
        assert!(parse_net_tcp(&v4, true).is_empty());
        assert!(parse_net_tcp(&v6, false).is_empty());
        assert!(parse_net_tcp("", false).is_empty());
    }

    fn own_netns() -> u32 {
        let link = fs::read_link("/proc/self/ns/net").unwrap();
        bracketed_number(link.as_os_str().as_bytes(), b"net:[").unwrap()
    }

    #[test]
    fn real_loopback_connection() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let server = listener.local_addr().unwrap();
        let client = TcpStream::connect(server).unwrap();
        let (accepted, peer) = listener.accept().unwrap();
        let client_addr = client.local_addr().unwrap();
        assert_eq!(peer, client_addr);
        assert_eq!(accepted.local_addr().unwrap(), server);

        let start = std::time::Instant::now();
        let scan = scan(Path::new("/proc"), true).unwrap();
        let sockets = sockets(Path::new("/proc"), &scan);
        eprintln!(
            "scan + sockets(/proc): {} sockets in {:?}",
            sockets.len(),
            start.elapsed()
        );

        let netns = own_netns();
        let pid = std::process::id();
        let ns = scan.namespaces.iter().find(|n| n.inode == netns);
        assert!(ns.is_some_and(|n| n.pid <= pid), "{:?}", scan.namespaces);
        let comm = fs::read_to_string("/proc/self/comm").unwrap();
        let comm = comm.trim_end_matches('\n');

        let find = |local: SocketAddr, remote: SocketAddr| {
            let hits: Vec<&ProcSocket> = sockets
                .iter()
                .filter(|s| s.local == local && s.remote == remote)
                .collect();
            assert_eq!(hits.len(), 1, "{local} -> {remote}: {hits:?}");
            hits[0].clone()
        };
        for s in [find(client_addr, server), find(server, client_addr)] {
            assert_eq!(s.state, 1, "{s:?}");
            assert_eq!(s.netns, netns, "{s:?}");
            assert!(s.local.is_ipv4(), "{s:?}");
            assert_ne!(s.inode, 0, "{s:?}");
            let (owner_pid, owner_comm) = s.owner.clone().unwrap();
            assert_eq!(owner_pid, pid, "{s:?}");
            assert_eq!(owner_comm, comm);
        }
        assert!(
            !sockets
                .iter()
                .any(|s| s.local == server && s.remote.port() == 0),
            "listener reported"
        );
        assert!(sockets.iter().all(|s| s.state != TCP_LISTEN));
        drop((listener, client, accepted));
    }

    /// A fake /proc: two namespaces, a vanished process, a shared socket.
    #[test]
    fn fake_proc_tree() {
        let root = std::env::temp_dir().join(format!("procfs-test-{}", std::process::id()));
        let _ = fs::remove_dir_all(&root);
        // A tcp file with the header and one line per (local, remote, state, inode).
        let tcp = |rows: &[(Ipv4Addr, Ipv4Addr, u8, u64)]| {
            let mut text = String::from("  sl  local_address rem_address   st ...\n");
            for (sl, (local, remote, st, inode)) in rows.iter().enumerate() {
                text.push_str(&format!(
                    "{sl:4}: {}:0050 {}:1000 {st:02X} 0:0 0:0 0 1000 0 {inode} 1\n",
                    hex_v4(*local),
                    hex_v4(*remote),
                ));
            }
            Some(text)
        };
        let mk = |pid: u32, ns: u32, comm: &str, fds: &[&str], tcp: Option<String>| {
            let dir = root.join(pid.to_string());
            fs::create_dir_all(dir.join("ns")).unwrap();
            fs::create_dir_all(dir.join("fd")).unwrap();
            symlink(format!("net:[{ns}]"), dir.join("ns/net")).unwrap();
            fs::write(dir.join("comm"), format!("{comm}\n")).unwrap();
            for (i, target) in fds.iter().enumerate() {
                symlink(target, dir.join("fd").join(i.to_string())).unwrap();
            }
            if let Some(tcp) = tcp {
                fs::create_dir_all(dir.join("net")).unwrap();
                fs::write(dir.join("net/tcp"), tcp).unwrap();
                fs::write(dir.join("net/tcp6"), "header\n").unwrap();
            }
        };
        let lo = Ipv4Addr::LOCALHOST;
        let any = Ipv4Addr::UNSPECIFIED;
        let a = Ipv4Addr::new(10, 0, 0, 1);
        // Namespace 100: pid 7 has no readable net/ (as if it vanished), so
        // the namespace is read through pid 9. Both hold socket 500.
        mk(7, 100, "first", &["socket:[500]", "/dev/null"], None);
        let ns100 = tcp(&[(lo, lo, 1, 500), (lo, lo, 1, 501), (lo, any, 10, 502)]);
        let fds9 = ["socket:[500]", "socket:[501]", "socket:[502]"];
        mk(9, 100, "second", &fds9, ns100);
        // Namespace 200 is read through pid 12 only, not again through pid 30.
        mk(12, 200, "third", &["pipe:[1]"], tcp(&[(a, a, 6, 0)]));
        mk(
            30,
            200,
            "fourth",
            &["socket:[600]"],
            tcp(&[(lo, lo, 1, 999)]),
        );
        // Not pids / not processes.
        fs::create_dir_all(root.join("self")).unwrap();
        fs::create_dir_all(root.join("1234")).unwrap();
        fs::write(root.join("net"), "x").unwrap();

        let scan = scan(&root, true).unwrap();
        assert_eq!(
            scan.namespaces,
            vec![
                NetNs { inode: 100, pid: 7 },
                NetNs {
                    inode: 200,
                    pid: 12
                }
            ]
        );
        let mut got = sockets(&root, &scan);
        got.sort_by_key(|s| (s.netns, s.inode));
        let sock =
            |netns, state, inode, local: Ipv4Addr, remote: Ipv4Addr, owner: Option<(u32, &str)>| {
                ProcSocket {
                    netns,
                    local: SocketAddr::new(local.into(), 80),
                    remote: SocketAddr::new(remote.into(), 4096),
                    state,
                    inode,
                    owner: owner.map(|(p, c)| (p, c.into())),
                }
            };
        assert_eq!(
            got,
            vec![
                sock(100, 1, 500, lo, lo, Some((7, "first"))),
                sock(100, 1, 501, lo, lo, Some((9, "second"))),
                sock(200, 6, 0, a, a, None),
            ]
        );
        fs::remove_dir_all(&root).unwrap();
        assert!(super::scan(&root, true).is_err());
    }
}
