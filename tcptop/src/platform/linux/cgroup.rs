//! Control groups: the cgroup (v2) id the kernel programs record with a
//! connection's owner (`bpf_get_current_cgroup_id`: the inode of the
//! group's directory under the cgroup2 mount) to the group's path, and the
//! path to the workload it names (`classify`): a systemd unit, a
//! container, a Kubernetes pod.
//!
//! Ids are resolved by walking the cgroup2 tree (directory inodes are the
//! ids), at most once a second and only when an id is not known yet;
//! results, unknown ids included, are cached in bounded maps. Pod names
//! come from the node's own files (`/var/log/pods/<ns>_<name>_<uid>`):
//! no API server, no runtime socket. Every name here is chosen by whoever
//! made the group: untrusted, escaped where shown.

use std::collections::HashMap;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::model::{ConnSample, Workload};

/// Ids (and pids) remembered at most; past it the cache starts over.
const MAX_CACHED: usize = 16_384;
/// Directories a walk visits at most (a node with many containers has a
/// few thousand groups).
const MAX_WALK: usize = 100_000;
/// Deepest directory a walk enters.
const MAX_DEPTH: usize = 32;
/// Time between two walks (or two reads of the pod directory), however
/// many ids are unknown.
const MIN_REWALK: Duration = Duration::from_secs(1);
/// How long a /proc answer (pid → group) is taken as still true.
const PID_TTL: Duration = Duration::from_secs(10);

/// Where the node's kubelet keeps one directory per pod.
const POD_LOGS: &str = "/var/log/pods";

pub struct Resolver {
    /// The cgroup2 mount (None: no cgroup v2 here; nothing resolves).
    root: Option<PathBuf>,
    pods_dir: PathBuf,
    /// id → its workload (None: not found at the last walk).
    ids: HashMap<u64, Option<Arc<Workload>>>,
    /// The last walk's directories: id → path relative to the root.
    tree: HashMap<u64, String>,
    walked: Option<Instant>,
    /// pod uid → "namespace/name".
    pods: HashMap<String, String>,
    pods_read: Option<Instant>,
    /// pid → (its group's id, when /proc said so), for owners named by
    /// /proc rather than by the kernel programs.
    pids: HashMap<u32, (u64, Instant)>,
}

impl Resolver {
    /// A resolver for this machine's cgroup2 mount (from
    /// /proc/self/mountinfo: not always /sys/fs/cgroup).
    pub fn new() -> Resolver {
        Resolver::with_paths(mount(), PathBuf::from(POD_LOGS))
    }

    /// A resolver for the tree at `root` and the pod directory `pods_dir`
    /// (tests make both).
    pub fn with_paths(root: Option<PathBuf>, pods_dir: PathBuf) -> Resolver {
        Resolver {
            root,
            pods_dir,
            ids: HashMap::new(),
            tree: HashMap::new(),
            walked: None,
            pods: HashMap::new(),
            pods_read: None,
            pids: HashMap::new(),
        }
    }

    /// Fills in each sample's workload: from the id the kernel recorded,
    /// or for an owner /proc named (id 0), from /proc/<pid>/cgroup.
    pub fn fill(&mut self, samples: &mut [ConnSample]) {
        if self.root.is_none() {
            return;
        }
        // Each process's group and each group's answer, once per call:
        // lookups per sample (SipHashes, clock reads) were 14 ms of the
        // first snapshot at 200,000 connections (held by a few processes).
        let mut groups: foldhash::HashMap<u32, Option<u64>> = Default::default();
        let mut answers: foldhash::HashMap<u64, Option<Arc<Workload>>> = Default::default();
        for s in samples.iter_mut() {
            if s.workload.is_some() {
                continue;
            }
            let id = match s.cgroup_id {
                0 if s.pid != 0 => {
                    let group = match groups.get(&s.pid) {
                        Some(&group) => group,
                        None => {
                            let group = self.pid_group(s.pid);
                            groups.insert(s.pid, group);
                            group
                        }
                    };
                    match group {
                        Some(id) => id,
                        None => continue,
                    }
                }
                0 => continue,
                id => id,
            };
            s.cgroup_id = id;
            s.workload = match answers.get(&id) {
                Some(w) => w.clone(),
                None => {
                    let w = self.resolve(id);
                    answers.insert(id, w.clone());
                    w
                }
            };
        }
    }

    /// The workload of group `id`, walking the tree again if it is new
    /// (at most once a second).
    pub fn resolve(&mut self, id: u64) -> Option<Arc<Workload>> {
        match self.ids.get(&id) {
            Some(Some(w)) => return Some(w.clone()),
            // Unknown at the last walk: again only once the next is due.
            Some(None) if !self.due(self.walked) => return None,
            _ => {}
        }
        if !self.tree.contains_key(&id) && self.due(self.walked) {
            self.walk();
        }
        let path = self.tree.get(&id).cloned();
        let workload = path.map(|p| {
            let mut w = classify(&p);
            if let Some(uid) = pod_uid(&p) {
                w.pod = self.pod_name(&uid);
            }
            Arc::new(w)
        });
        // Unknown ids are remembered too, until the next walk finds them.
        if workload.is_some() || self.walked.is_some() {
            if self.ids.len() >= MAX_CACHED {
                self.ids.clear();
            }
            self.ids.insert(id, workload.clone());
        }
        workload
    }

    fn due(&self, last: Option<Instant>) -> bool {
        last.is_none_or(|t| t.elapsed() >= MIN_REWALK)
    }

    /// Records every directory of the tree: id (inode) → relative path.
    /// Forgets the unknown ids: they may exist now.
    fn walk(&mut self) {
        self.walked = Some(Instant::now());
        self.ids.retain(|_, w| w.is_some());
        let Some(root) = self.root.clone() else {
            return;
        };
        self.tree.clear();
        if let Ok(meta) = fs::metadata(&root) {
            self.tree.insert(meta.ino(), "/".into());
        }
        let mut stack = vec![(root, String::new(), 0usize)];
        while let Some((dir, rel, depth)) = stack.pop() {
            let Ok(entries) = fs::read_dir(&dir) else {
                continue;
            };
            for e in entries.flatten() {
                if self.tree.len() >= MAX_WALK {
                    return;
                }
                // Groups are directories; the control files are not.
                let Ok(ft) = e.file_type() else { continue };
                if !ft.is_dir() {
                    continue;
                }
                let Ok(meta) = e.metadata() else { continue };
                let name = e.file_name().to_string_lossy().into_owned();
                let path = format!("{rel}/{name}");
                self.tree.insert(meta.ino(), path.clone());
                if depth + 1 < MAX_DEPTH {
                    stack.push((e.path(), path, depth + 1));
                }
            }
        }
    }

    /// "namespace/name" of the pod `uid`, from the pod directory (read
    /// again, at most once a second, when a uid is new).
    fn pod_name(&mut self, uid: &str) -> Option<String> {
        if !self.pods.contains_key(uid) && self.due(self.pods_read) {
            self.pods_read = Some(Instant::now());
            self.pods.clear();
            if let Ok(entries) = fs::read_dir(&self.pods_dir) {
                for e in entries.flatten() {
                    let name = e.file_name().to_string_lossy().into_owned();
                    if let Some((pod_uid, pod)) = pod_dir(&name) {
                        self.pods.insert(pod_uid, pod);
                        if self.pods.len() >= MAX_CACHED {
                            break;
                        }
                    }
                }
            }
        }
        self.pods.get(uid).cloned()
    }

    /// The cgroup v2 id of process `pid` (its /proc/<pid>/cgroup line
    /// `0::/path`, and that directory's inode).
    fn pid_group(&mut self, pid: u32) -> Option<u64> {
        if let Some((id, at)) = self.pids.get(&pid)
            && at.elapsed() < PID_TTL
        {
            return Some(*id);
        }
        let root = self.root.as_ref()?;
        let text = fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
        let rel = unified_path(&text)?;
        let id = fs::metadata(root.join(rel.trim_start_matches('/')))
            .ok()?
            .ino();
        if self.pids.len() >= MAX_CACHED {
            self.pids.clear();
        }
        self.pids.insert(pid, (id, Instant::now()));
        Some(id)
    }
}

impl Default for Resolver {
    fn default() -> Self {
        Resolver::new()
    }
}

/// This machine's cgroup2 mount point (from /proc/self/mountinfo: it is
/// /sys/fs/cgroup on unified systems, /sys/fs/cgroup/unified on hybrid
/// ones, and anywhere an administrator put it).
pub fn mount() -> Option<PathBuf> {
    cgroup2_mount(&fs::read_to_string("/proc/self/mountinfo").ok()?)
}

/// The cgroup2 mount point in a /proc/self/mountinfo text (fields: id,
/// parent, dev, root, mount point, options, optional fields, "-", type,
/// source, super options; spaces in paths are written `\040`).
pub fn cgroup2_mount(mountinfo: &str) -> Option<PathBuf> {
    mountinfo.lines().find_map(|line| {
        let (left, right) = line.split_once(" - ")?;
        if right.split_whitespace().next()? != "cgroup2" {
            return None;
        }
        let mount = left.split_whitespace().nth(4)?;
        Some(PathBuf::from(unescape_mountinfo(mount)))
    })
}

/// Undoes mountinfo's octal escapes (`\040` for a space, `\011`, `\012`,
/// `\134`).
fn unescape_mountinfo(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let octal = b
            .get(i + 1..i + 4)
            .filter(|d| d.iter().all(|c| (b'0'..=b'7').contains(c)));
        if b[i] == b'\\'
            && let Some(d) = octal
        {
            let v = d.iter().fold(0u32, |v, c| v * 8 + u32::from(c - b'0'));
            out.push(u8::try_from(v).unwrap_or(b'?'));
            i += 4;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The unified hierarchy's path in a /proc/<pid>/cgroup text (`0::/path`).
fn unified_path(text: &str) -> Option<&str> {
    text.lines().find_map(|l| l.strip_prefix("0::"))
}

/// A pod directory's name `<namespace>_<name>_<uid>` as (uid,
/// "namespace/name"). Namespaces and pod names are DNS labels and
/// subdomains: they hold no `_`.
fn pod_dir(name: &str) -> Option<(String, String)> {
    let mut parts = name.splitn(3, '_');
    let (ns, pod, uid) = (parts.next()?, parts.next()?, parts.next()?);
    if ns.is_empty() || pod.is_empty() || uid.is_empty() || uid.contains('_') {
        return None;
    }
    Some((uid.to_string(), format!("{ns}/{pod}")))
}

/// The Kubernetes pod uid in a cgroup path: systemd driver
/// `kubepods-besteffort-pod<uid>.slice` (the uid's `-` written `_`),
/// cgroupfs driver `/pod<uid>`.
pub fn pod_uid(path: &str) -> Option<String> {
    path.split('/').find_map(|part| {
        let rest = part.strip_suffix(".slice").unwrap_or(part);
        let at = rest.rfind("pod")?;
        let (before, uid) = (&rest[..at], &rest[at + 3..]);
        // "kubepods-...-pod<uid>" or "pod<uid>" (cgroupfs).
        if !(before.is_empty() || before.ends_with('-')) || !path.contains("kubepods") {
            return None;
        }
        let uid = uid.replace('_', "-");
        (uid.len() == 36 && uid.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-')).then_some(uid)
    })
}

/// A container id in one path part: `<prefix><64 hex>[.scope]`, for the
/// runtimes' prefixes (docker, containerd, CRI-O, podman), or a bare
/// 64-hex part (docker and kubelet with the cgroupfs driver).
fn container_id(part: &str) -> Option<&str> {
    let rest = part.strip_suffix(".scope").unwrap_or(part);
    let hex = ["docker-", "cri-containerd-", "crio-", "libpod-", ""]
        .iter()
        .find_map(|p| rest.strip_prefix(p).filter(|h| is_hex64(h)))?;
    Some(&hex[..12])
}

fn is_hex64(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The workload a cgroup path names (path relative to the cgroup2 root);
/// the pod's name is the caller's to fill in from the uid (`pod_uid`).
pub fn classify(path: &str) -> Workload {
    let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
    // The unit nearest the leaf: a service's own sub-groups belong to it.
    let unit = parts
        .iter()
        .rev()
        .find(|p| p.ends_with(".service") || p.ends_with(".scope"))
        .map(|p| (*p).to_string());
    let mut container = parts
        .iter()
        .rev()
        .find_map(|p| container_id(p))
        .map(str::to_string);
    // LXC: /lxc/<name>/..., or /lxc.payload.<name>/... (LXC 4+).
    if container.is_none() {
        container = parts.iter().enumerate().find_map(|(i, p)| {
            if let Some(name) = p.strip_prefix("lxc.payload.") {
                Some(name.to_string())
            } else if *p == "lxc" {
                parts.get(i + 1).map(|n| (*n).to_string())
            } else {
                None
            }
        });
    }
    Workload {
        cgroup: if path.is_empty() {
            "/".into()
        } else {
            path.to_string()
        },
        unit,
        container,
        pod: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEX: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn w(path: &str) -> (Option<String>, Option<String>, Option<String>) {
        let c = classify(path);
        assert_eq!(c.cgroup, path);
        (c.unit, c.container, pod_uid(path))
    }

    #[test]
    fn systemd_units_and_user_slices() {
        assert_eq!(
            w("/system.slice/nginx.service"),
            (Some("nginx.service".into()), None, None)
        );
        assert_eq!(
            w("/user.slice/user-1000.slice/session-3.scope"),
            (Some("session-3.scope".into()), None, None)
        );
        assert_eq!(
            w("/user.slice/user-1000.slice/user@1000.service/app.slice/app-firefox.scope"),
            (Some("app-firefox.scope".into()), None, None)
        );
        // A service's own sub-group still belongs to it.
        assert_eq!(
            w("/system.slice/postgresql.service/worker"),
            (Some("postgresql.service".into()), None, None)
        );
        assert_eq!(w("/"), (None, None, None));
        assert_eq!(classify("/").label(), "/");
        assert_eq!(
            classify("/system.slice/cron.service").label(),
            "cron.service"
        );
        assert_eq!(classify("/batch/jobs").label(), "jobs");
    }

    #[test]
    fn container_runtimes() {
        let short = Some(HEX[..12].to_string());
        let docker_systemd = format!("/system.slice/docker-{HEX}.scope");
        assert_eq!(
            w(&docker_systemd),
            (Some(format!("docker-{HEX}.scope")), short.clone(), None)
        );
        assert_eq!(w(&format!("/docker/{HEX}")), (None, short.clone(), None));
        assert_eq!(
            w(&format!(
                "/system.slice/containerd.service/cri-containerd-{HEX}.scope"
            ))
            .1,
            short
        );
        assert_eq!(w(&format!("/machine.slice/libpod-{HEX}.scope")).1, short);
        assert_eq!(w(&format!("/system.slice/crio-{HEX}.scope")).1, short);
        // Not 64 hex digits: not a container id.
        assert_eq!(w("/system.slice/docker-abc.scope").1, None);
        assert_eq!(w(&format!("/docker/{}", &HEX[..63])).1, None);
        // LXC, old and new layouts: the container's name.
        assert_eq!(w("/lxc/web1/init.scope").1, Some("web1".into()));
        assert_eq!(w("/lxc.payload.web2/system.slice").1, Some("web2".into()));
        let c = classify(&format!("/system.slice/docker-{HEX}.scope"));
        assert_eq!(c.label(), &HEX[..12]);
    }

    #[test]
    fn kubernetes_pods_both_drivers() {
        let uid = "6b4e4a3c-93b5-4f6a-9a2c-0d1e2f3a4b5c";
        let systemd = format!(
            "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{}.slice/cri-containerd-{HEX}.scope",
            uid.replace('-', "_")
        );
        assert_eq!(
            w(&systemd),
            (
                Some(format!("cri-containerd-{HEX}.scope")),
                Some(HEX[..12].into()),
                Some(uid.into())
            )
        );
        let guaranteed = format!(
            "/kubepods.slice/kubepods-pod{}.slice",
            uid.replace('-', "_")
        );
        assert_eq!(pod_uid(&guaranteed), Some(uid.into()));
        let cgroupfs = format!("/kubepods/burstable/pod{uid}/{HEX}");
        assert_eq!(
            w(&cgroupfs),
            (None, Some(HEX[..12].into()), Some(uid.into()))
        );
        // "pod" elsewhere is not a pod.
        assert_eq!(pod_uid("/system.slice/podman.service"), None);
        assert_eq!(pod_uid(&format!("/system.slice/pod{uid}.slice")), None);
        assert_eq!(
            pod_dir(&format!("default_web-7d4b9c_{uid}")),
            Some((uid.into(), "default/web-7d4b9c".into()))
        );
        assert_eq!(pod_dir("nounderscore"), None);
        assert_eq!(pod_dir("a_b"), None);
    }

    #[test]
    fn mountinfo_and_proc_cgroup() {
        let info = "31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755\n\
                    40 31 0:37 / /sys/fs/cgroup/systemd rw - cgroup cgroup rw,name=systemd\n\
                    41 31 0:38 / /sys/fs/cgroup/unified rw,nosuid shared:9 - cgroup2 cgroup2 rw\n";
        assert_eq!(
            cgroup2_mount(info),
            Some(PathBuf::from("/sys/fs/cgroup/unified"))
        );
        assert_eq!(cgroup2_mount("1 2 0:1 / /x rw - ext4 /dev/sda rw\n"), None);
        let spaced = "41 31 0:38 / /mnt/cg\\040two rw - cgroup2 cgroup2 rw\n";
        assert_eq!(cgroup2_mount(spaced), Some(PathBuf::from("/mnt/cg two")));
        let text = "9:name=systemd:/\n4:memory:/x\n0::/system.slice/a.service\n";
        assert_eq!(unified_path(text), Some("/system.slice/a.service"));
        assert_eq!(unified_path("4:memory:/x\n"), None);
    }

    /// A tree made of plain directories (inodes stand in for group ids),
    /// a pod directory, resolution by id with the pod's name, an unknown
    /// id remembered as unknown, and a group made later found at the next
    /// walk (not before a second has passed).
    #[test]
    fn resolves_ids_by_walking_the_tree() {
        let dir = std::env::temp_dir().join(format!("tcptop-cg-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let uid = "6b4e4a3c-93b5-4f6a-9a2c-0d1e2f3a4b5c";
        let pod_path = format!(
            "kubepods.slice/kubepods-besteffort-pod{}.slice/cri-containerd-{HEX}.scope",
            uid.replace('-', "_")
        );
        let root = dir.join("cg");
        fs::create_dir_all(root.join(&pod_path)).unwrap();
        fs::create_dir_all(root.join("system.slice/evil\x1b[31m.service")).unwrap();
        fs::write(root.join("cgroup.procs"), "").unwrap();
        let pods = dir.join("pods");
        fs::create_dir_all(pods.join(format!("shop_cart-5f6d_{uid}"))).unwrap();
        let ino = |p: &str| fs::metadata(root.join(p)).unwrap().ino();

        let mut r = Resolver::with_paths(Some(root.clone()), pods);
        let w = r.resolve(ino(&pod_path)).unwrap();
        assert_eq!(w.cgroup, format!("/{pod_path}"));
        assert_eq!(w.pod.as_deref(), Some("shop/cart-5f6d"));
        assert_eq!(w.container.as_deref(), Some(&HEX[..12]));
        assert_eq!(w.label(), "shop/cart-5f6d");
        let evil = r.resolve(ino("system.slice/evil\x1b[31m.service")).unwrap();
        assert_eq!(evil.unit.as_deref(), Some("evil\x1b[31m.service"));
        assert_eq!(r.resolve(ino("")).unwrap().cgroup, "/");
        // The control file is not a group.
        assert_eq!(
            r.resolve(fs::metadata(root.join("cgroup.procs")).unwrap().ino()),
            None
        );

        fs::create_dir_all(root.join("system.slice/late.service")).unwrap();
        let late = ino("system.slice/late.service");
        assert_eq!(r.resolve(late), None, "no second walk within a second");
        r.walked = Some(Instant::now() - MIN_REWALK);
        assert_eq!(
            r.resolve(late).unwrap().unit.as_deref(),
            Some("late.service")
        );
        fs::remove_dir_all(&dir).unwrap();
    }
}
