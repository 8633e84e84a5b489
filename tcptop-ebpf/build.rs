use which::which;

/// Rebuild when the bpf-linker binary changes (an undeclared dependency of
/// building this crate for the bpf target).
fn main() {
    if let Ok(bpf_linker) = which("bpf-linker") {
        println!("cargo:rerun-if-changed={}", bpf_linker.display());
    }
}
