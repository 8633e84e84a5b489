//! Builds the eBPF programs (crate `tcptop-ebpf`) for the bpf target with the
//! pinned nightly, so `include_bytes_aligned!` can embed them.
use anyhow::{Context as _, anyhow};

/// Must match `tcptop-ebpf/rust-toolchain.toml` (and `scripts/setup`).
const EBPF_TOOLCHAIN: &str = "nightly-2026-06-20";

fn main() -> anyhow::Result<()> {
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
