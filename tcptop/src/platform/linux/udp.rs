//! UDP flows: attach the UDP programs of the chosen hook set (see
//! `probes/udp.rs`), read the flow map each collection, and end flows idle
//! for longer than the timeout.
//!
//! UDP has no close: a flow ends when it has been idle for `idle`. It is
//! then taken out of the kernel map with one lookup-and-delete (the kernel
//! starts a new flow, with fresh counters, if the 5-tuple is used again) and
//! reported once as closed with its final counters.

use std::os::fd::{AsFd, AsRawFd};

use aya::{
    Ebpf,
    maps::{HashMap, IterableMap, MapData},
    programs::{CgroupSockAddr, links::CgroupAttachMode},
};
use tcptop_common::{ConnTuple, MAP_UDP_FLOWS, UdpFlow};

use super::{btf::Btf, caps, convert, hooks};
use crate::model::ConnSample;
use crate::platform::{HookSet, SourceOptions};

/// The UDP functions the fentry and kprobe sets hook, with whether the
/// kernel may lack them (IPv6 disabled at build time).
const FUNCS: [(&str, bool); 4] = [
    ("udp_sendmsg", false),
    ("udpv6_sendmsg", true),
    ("udp_recvmsg", false),
    ("udpv6_recvmsg", true),
];

/// The tracepoint set's peer-address hooks (cgroup v2 root).
const SOCK_ADDR_PROGRAMS: [&str; 4] = [
    "tcptop_udp_sendmsg4",
    "tcptop_udp_sendmsg6",
    "tcptop_udp_recvmsg4",
    "tcptop_udp_recvmsg6",
];

pub struct UdpFlows {
    flows: HashMap<MapData, ConnTuple, UdpFlow>,
    idle_ns: u64,
    /// The flow map's capacity: above 90% of it, the longest idle flows
    /// are ended early, down to 80%, so that new flows always find room.
    capacity: usize,
    evicted: u64,
}

impl UdpFlows {
    /// Attaches the UDP programs of hook set `set` and takes the flow map.
    /// On failure nothing UDP stays attached and the error says what is
    /// lost; a warning says what is partly lost (the tracepoint set
    /// without its cgroup hooks counts flows, but not the peers of
    /// unconnected sockets).
    pub fn attach(
        ebpf: &mut Ebpf,
        set: HookSet,
        btf: &Btf,
        tracing: &mut hooks::TracingBtf,
        opts: &SourceOptions,
    ) -> Result<(Self, Option<String>), String> {
        let attached = match set {
            HookSet::Fentry => hooks::attach_fexit(ebpf, btf, tracing, &FUNCS).map(|()| None),
            HookSet::Kprobe => kprobe(ebpf, btf).map(|()| None),
            HookSet::Tracepoint => Ok(sock_addr(ebpf).err().map(|e| {
                hooks::unload(ebpf, SOCK_ADDR_PROGRAMS.map(String::from));
                format!(
                    "the peers of unconnected UDP sockets are not shown (flows show \
                     the socket's connected peer or none): {e}"
                )
            })),
        };
        let warning = match attached {
            Ok(w) => w,
            Err(e) => {
                hooks::unload(ebpf, hooks::function_programs(&FUNCS));
                return Err(format!("UDP flows are not shown: {e}"));
            }
        };
        let map = ebpf
            .take_map(MAP_UDP_FLOWS)
            .ok_or_else(|| format!("UDP flows are not shown: no map {MAP_UDP_FLOWS}"))?;
        let flows = HashMap::try_from(map).map_err(|e| format!("UDP flows are not shown: {e}"))?;
        Ok((
            UdpFlows {
                flows,
                idle_ns: u64::try_from(opts.udp_idle.as_nanos()).unwrap_or(u64::MAX),
                capacity: opts.max_conns as usize,
                evicted: 0,
            },
            warning,
        ))
    }

    /// UDP flows ended early so far because the table was nearly full.
    pub fn evicted(&self) -> u64 {
        self.evicted
    }

    /// Live flows into `live`; flows idle past the timeout (or the longest
    /// idle ones, when the table is nearly full) are removed from the
    /// kernel and go into `closed` with their final counters.
    pub fn collect(&mut self, live: &mut Vec<ConnSample>, closed: &mut Vec<ConnSample>) {
        let now = monotonic_ns();
        let mut idle = Vec::new();
        let mut active: Vec<(u64, ConnTuple, UdpFlow)> = Vec::new();
        for item in self.flows.iter() {
            let Ok((tuple, flow)) = item else { continue };
            if now.saturating_sub(flow.last_ns) > self.idle_ns {
                idle.push(tuple);
            } else {
                active.push((flow.last_ns, tuple, flow));
            }
        }
        if (active.len() + idle.len()) * 10 >= self.capacity * 9 {
            let keep = (self.capacity * 8 / 10).min(active.len());
            // Longest idle first.
            active.sort_unstable_by_key(|(last, _, _)| *last);
            let excess = active.len() - keep;
            for (_, tuple, _) in active.drain(..excess) {
                idle.push(tuple);
                self.evicted += 1;
            }
        }
        for (_, tuple, flow) in active {
            live.push(convert::udp_sample(&tuple, &flow, false));
        }
        for tuple in idle {
            // The final value comes from the delete itself: a datagram
            // counted between our read and the delete is not lost.
            if let Some(flow) = lookup_and_delete(self.flows.map(), &tuple) {
                closed.push(convert::udp_sample(&tuple, &flow, true));
            }
        }
    }
}

/// The entry probe of a receive picks `flags` by tcp_recvmsg's layout,
/// which every kernel gives udp(v6)_recvmsg too: checked before attaching.
fn kprobe(ebpf: &mut Ebpf, btf: &Btf) -> Result<(), String> {
    for (func, _) in FUNCS {
        if func.ends_with("recvmsg")
            && hooks::present(btf, func)
            && btf.func_param_count(func) != btf.func_param_count("tcp_recvmsg")
        {
            return Err(format!(
                "{func} and tcp_recvmsg take different arguments in this kernel"
            ));
        }
    }
    hooks::attach_kprobes(ebpf, btf, &FUNCS)
}

fn sock_addr(ebpf: &mut Ebpf) -> Result<(), String> {
    let root = caps::cgroup2_root().ok_or("no cgroup v2 mount in /proc/mounts")?;
    let cgroup = std::fs::File::open(&root)
        .map_err(|e| format!("cannot open cgroup {}: {e}", root.display()))?;
    for name in SOCK_ADDR_PROGRAMS {
        let prog: &mut CgroupSockAddr = hooks::program(ebpf, name)?
            .try_into()
            .map_err(|e| format!("{name}: {e}"))?;
        prog.load()
            .map_err(|e| format!("cannot load {name}: {}", super::brief(&hooks::chain(&e))))?;
        prog.attach(cgroup.as_fd(), CgroupAttachMode::Single)
            .map_err(|e| format!("cannot attach {name}: {}", hooks::chain(&e)))?;
    }
    Ok(())
}

/// `bpf_ktime_get_ns()`'s clock.
fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: writes one timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    (ts.tv_sec as u64)
        .saturating_mul(1_000_000_000)
        .saturating_add(ts.tv_nsec as u64)
}

/// `BPF_MAP_LOOKUP_AND_DELETE_ELEM` on a hash map (Linux 5.14+; Aya 0.16
/// has no wrapper for hash maps). On older kernels: lookup, then delete
/// (a datagram counted between the two is lost); the value only if the
/// delete succeeded, so that a flow still in the map is not reported
/// ended, and ended again at the next snapshot.
fn lookup_and_delete(map: &MapData, key: &ConnTuple) -> Option<UdpFlow> {
    const BPF_MAP_LOOKUP_ELEM: libc::c_long = 1;
    const BPF_MAP_DELETE_ELEM: libc::c_long = 3;
    const BPF_MAP_LOOKUP_AND_DELETE_ELEM: libc::c_long = 21;
    #[repr(C)]
    struct ElemAttr {
        map_fd: u32,
        _pad: u32,
        key: u64,
        value: u64,
        flags: u64,
    }
    let mut value = UdpFlow::default();
    let attr = ElemAttr {
        map_fd: map.fd().as_fd().as_raw_fd() as u32,
        _pad: 0,
        key: key as *const ConnTuple as u64,
        value: &mut value as *mut UdpFlow as u64,
        flags: 0,
    };
    let bpf = |cmd: libc::c_long, attr: &ElemAttr| {
        // SAFETY: `attr` is a valid bpf_attr prefix for the element commands;
        // key and value point at live buffers of the map's sizes (or are 0).
        unsafe {
            libc::syscall(
                libc::SYS_bpf,
                cmd,
                attr as *const ElemAttr,
                std::mem::size_of::<ElemAttr>(),
            )
        }
    };
    if bpf(BPF_MAP_LOOKUP_AND_DELETE_ELEM, &attr) == 0 {
        return Some(value);
    }
    if std::io::Error::last_os_error().raw_os_error() == Some(libc::ENOENT) {
        return None;
    }
    // The delete command's attributes end at the key: the kernel refuses
    // it (EINVAL) unless the rest is zero.
    let delete = ElemAttr { value: 0, ..attr };
    (bpf(BPF_MAP_LOOKUP_ELEM, &attr) == 0 && bpf(BPF_MAP_DELETE_ELEM, &delete) == 0)
        .then_some(value)
}
