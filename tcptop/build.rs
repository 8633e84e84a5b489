//! Builds the eBPF programs (crate `tcptop-ebpf`) for the bpf target with the
//! pinned nightly, so `include_bytes_aligned!` can embed them: only when
//! building for Linux, the one target whose backend embeds them
//! (`platform/linux`). A macOS build (or `cargo check --target
//! aarch64-apple-darwin` on Linux) needs neither the nightly nor bpf-linker.
use anyhow::{Context as _, anyhow};

/// Must match `tcptop-ebpf/rust-toolchain.toml` (and `scripts/setup`).
const EBPF_TOOLCHAIN: &str = "nightly-2026-06-20";

fn main() -> anyhow::Result<()> {
    // Root integration tests are ignored (reported so, not passed) when
    // built by another user: `#[cfg_attr(not(tcptop_root), ignore)]`.
    println!("cargo::rustc-check-cfg=cfg(tcptop_root)");
    if effective_uid() == Some(0) {
        println!("cargo::rustc-cfg=tcptop_root");
    }
    emit_version();
    // The target being built for, not the host this script runs on.
    if std::env::var("CARGO_CFG_TARGET_OS").as_deref() != Ok("linux") {
        return Ok(());
    }
    let cargo_metadata::Metadata { packages, .. } = cargo_metadata::MetadataCommand::new()
        .no_deps()
        .exec()
        .context("MetadataCommand::exec")?;
    let ebpf = packages
        .into_iter()
        .find(|p| p.name.as_str() == "tcptop-ebpf")
        .ok_or_else(|| anyhow!("tcptop-ebpf package not found"))?;
    let root_dir = ebpf
        .manifest_path
        .parent()
        .ok_or_else(|| anyhow!("no parent for {}", ebpf.manifest_path))?;
    aya_build::build_ebpf(
        [aya_build::Package {
            name: ebpf.name.as_str(),
            root_dir: root_dir.as_str(),
            ..Default::default()
        }],
        aya_build::Toolchain::Custom(EBPF_TOOLCHAIN),
    )
}

/// This process's effective user id, from /proc/self/status ("Uid: real
/// effective saved fs").
fn effective_uid() -> Option<u32> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let uid = status.lines().find_map(|l| l.strip_prefix("Uid:"))?;
    uid.split_whitespace().nth(1)?.parse().ok()
}

/// What goes into the binary: a change here makes the build "-dirty" (paths
/// relative to the workspace root; `git status` pathspecs and cargo's
/// rerun-if-changed paths both).
const BUILT_FROM: &[&str] = &[
    "Cargo.toml",
    "Cargo.lock",
    "rust-toolchain.toml",
    "tcptop/Cargo.toml",
    "tcptop/build.rs",
    "tcptop/src",
    "tcptop-common",
    "tcptop-ebpf",
];

/// `tcptop --version` (cli.rs reads TCPTOP_VERSION): the package version and
/// the commit built, e.g. "0.1.0 (51ddf74)", "-dirty" when a file the binary
/// is built from differs from that commit. Outside a git checkout (a source
/// archive) the commit is the one `git archive` wrote into tcptop/COMMIT
/// (export-subst, .gitattributes), else "unknown commit".
fn emit_version() {
    let version = std::env::var("CARGO_PKG_VERSION").unwrap_or_default();
    let manifest_dir = std::env::var("CARGO_MANIFEST_DIR").unwrap_or_default();
    let root = std::path::Path::new(&manifest_dir).join("..");
    let commit = git_commit(&root)
        .or_else(|| archive_commit(&root))
        .unwrap_or_else(|| "unknown commit".to_owned());
    println!("cargo::rustc-env=TCPTOP_VERSION={version} ({commit})");
    println!(
        "cargo::rerun-if-changed={}",
        root.join("tcptop/COMMIT").display()
    );
}

/// The short hash of HEAD, "-dirty" if BUILT_FROM has changes (staged or
/// not; untracked files are not built unless a tracked file names them).
/// None when `root` is not the top of a git work tree (no git, or a source
/// archive unpacked inside some other repository).
fn git_commit(root: &std::path::Path) -> Option<String> {
    let git = |args: &[&str]| -> Option<String> {
        let out = std::process::Command::new("git")
            .arg("-C")
            .arg(root)
            .args(args)
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
    };
    let top = git(&["rev-parse", "--show-toplevel"])?;
    if std::fs::canonicalize(&top).ok()? != std::fs::canonicalize(root).ok()? {
        return None;
    }
    let hash = git(&["rev-parse", "--short", "HEAD"])?;
    // Rebuild when HEAD moves (checkout, commit: HEAD, the branch's ref,
    // packed-refs) or a file the binary is built from changes. Only paths
    // that exist: cargo reruns every time for one that does not.
    let mut watch = vec![git(&["rev-parse", "--git-path", "HEAD"])?];
    if let Some(branch) = git(&["symbolic-ref", "-q", "HEAD"]) {
        watch.extend(git(&["rev-parse", "--git-path", &branch]));
    }
    watch.extend(git(&["rev-parse", "--git-path", "packed-refs"]));
    for path in watch {
        let path = root.join(path);
        if path.exists() {
            println!("cargo::rerun-if-changed={}", path.display());
        }
    }
    for path in BUILT_FROM {
        println!("cargo::rerun-if-changed={}", root.join(path).display());
    }
    let mut status = vec!["status", "--porcelain", "--untracked-files=no", "--"];
    status.extend(BUILT_FROM);
    let dirty = !git(&status)?.is_empty();
    Some(if dirty { format!("{hash}-dirty") } else { hash })
}

/// The commit `git archive` substituted into tcptop/COMMIT ("$Format:%h$" in
/// the repository itself).
fn archive_commit(root: &std::path::Path) -> Option<String> {
    let text = std::fs::read_to_string(root.join("tcptop/COMMIT")).ok()?;
    let hash = text.trim();
    (!hash.is_empty() && hash.chars().all(|c| c.is_ascii_hexdigit())).then(|| hash.to_owned())
}
