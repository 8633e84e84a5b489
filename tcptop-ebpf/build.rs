use which::which;

/// Rebuild when the bpf-linker binary changes (an undeclared dependency of
/// building this crate for the bpf target).
fn main() {
    if let Ok(bpf_linker) = which("bpf-linker") {
        println!("cargo:rerun-if-changed={}", bpf_linker.display());
    }
    // bpf-linker asks LLVM to keep memcpy's loads and stores in order (for
    // JITs that pattern-match them, not x86-64's or arm64's), which also
    // turns every memset and memmove (zeroing a record, copying it into the
    // ring buffer) into a call to a byte-at-a-time loop: ~1,000 instructions
    // per connection in the hottest programs. Without the flag LLVM expands
    // them inline as 8-byte loads and stores.
    println!("cargo:rustc-link-arg=--disable-expand-memcpy-in-order");
}
