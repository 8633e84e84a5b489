//! Builds the eBPF programs (crate `tcptop-ebpf`) for the bpf target with the
//! pinned nightly, so `include_bytes_aligned!` can embed them.
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
