//! tcptop's kernel programs: the "tracepoint" hook set.
//!
//! Data model: one [`ConnStats`] per TCP socket in the `CONNS` hash map, keyed
//! by the kernel's `struct sock *`, made at the connection's birth (or, for
//! one open before start, by the TCP iterator at start-up, or at its first
//! call). Per-call byte counters are added atomically at each send/receive
//! call (with the owner); state, endpoints, RTT, segment and retransmit
//! counters and the application's bytes by every path (`conn::read_app`)
//! are copied from the socket by the map iterator user space runs at each
//! snapshot (or, where the kernel refuses it, read by user space from the
//! socket diagnostics), and at teardown. Only the final record goes through
//! the `EVENTS` ring buffer.
#![no_std]
#![no_main]
// 64-bit atomic add for byte counters (see sock::add).
#![feature(core_intrinsics)]
#![expect(
    internal_features,
    reason = "core_intrinsics: the bpf target has no 64-bit atomic fetch-add in core::sync (conn::add)"
)]

mod conn;
mod kernel;
mod probes;
mod sock;
mod touch;
mod udp;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

/// The licence the kernel reads from the object. Some helpers these programs
/// call are GPL-only (`bpf_probe_read_kernel`, `bpf_get_current_task`), so it
/// must be one the kernel counts as GPL-compatible: "Dual MIT/GPL" is GPL v2
/// or MIT, as this crate's `license` in Cargo.toml says.
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
