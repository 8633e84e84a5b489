//! Control groups made for a test under the real cgroup2 mount (wherever
//! /proc/self/mountinfo says it is), removed on drop.

use std::path::PathBuf;
use std::time::Duration;

/// The cgroup2 mount point.
pub fn cgroup2() -> PathBuf {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    info.lines()
        .find_map(|l| {
            let (left, right) = l.split_once(" - ")?;
            (right.split_whitespace().next()? == "cgroup2")
                .then(|| PathBuf::from(left.split_whitespace().nth(4).unwrap()))
        })
        .expect("no cgroup2 mount")
}

/// Groups made for a test (paths relative to the cgroup2 root), removed
/// deepest first on drop; and a pod directory like the kubelet's.
pub struct Groups {
    pub root: PathBuf,
    made: Vec<String>,
    pub pod_dir: Option<PathBuf>,
}

impl Groups {
    pub fn new() -> Groups {
        Groups {
            root: cgroup2(),
            made: Vec::new(),
            pod_dir: None,
        }
    }

    /// Makes `rel` (and its parents): its cgroup.procs file.
    pub fn make(&mut self, rel: &str) -> String {
        let mut at = String::new();
        for part in rel.split('/').filter(|p| !p.is_empty()) {
            at.push('/');
            at.push_str(part);
            let dir = self.root.join(&at[1..]);
            if !dir.exists() {
                std::fs::create_dir(&dir).unwrap();
                self.made.push(at.clone());
            }
        }
        self.root
            .join(rel.trim_start_matches('/'))
            .join("cgroup.procs")
            .display()
            .to_string()
    }
}

impl Drop for Groups {
    fn drop(&mut self) {
        for rel in self.made.iter().rev() {
            let dir = self.root.join(rel.trim_start_matches('/'));
            // Its processes have exited; the kernel may take a moment.
            for _ in 0..50 {
                if std::fs::remove_dir(&dir).is_ok() || !dir.exists() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        if let Some(d) = &self.pod_dir {
            let _ = std::fs::remove_dir(d);
        }
    }
}
