//! UDP flows: attach the UDP programs of the chosen hook set (see
//! `probes/udp.rs`), read the flow map each collection, and end flows idle
//! for longer than the timeout.
//!
//! UDP has no close: a flow ends when it has been idle for `idle`. It is
//! then taken out of the kernel map with one lookup-and-delete (the kernel
//! starts a new flow, with fresh counters, if the 5-tuple is used again) and
//! reported once as closed with its final counters.

use std::os::fd::AsFd;

use aya::{
    Ebpf,
    maps::{HashMap, MapData},
    programs::{CgroupSockAddr, links::CgroupAttachMode},
};
use tcptop_common::{ConnTuple, MAP_UDP_FLOWS, UdpFlow};

use super::hooks::{Cause, LoadError};
use super::{bpf, btf::Btf, cgroup, convert, hooks};
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

/// Every program name this module may ask the eBPF object for.
#[cfg(test)]
pub(super) fn program_names() -> Vec<String> {
    let mut names = hooks::function_programs(&FUNCS);
    names.extend(SOCK_ADDR_PROGRAMS.map(String::from));
    names
}

pub struct UdpFlows {
    flows: HashMap<MapData, ConnTuple, UdpFlow>,
    idle_ns: u64,
    /// The flow map's capacity: above 90% of it, the longest idle flows
    /// are ended early, down to 80%, so that new flows always find room.
    capacity: usize,
    evicted: u64,
    /// Flows taken out of the map so far (only user space takes them out).
    removed: u64,
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
                idle_ns: u64::try_from(opts.linux.udp_idle().as_nanos()).unwrap_or(u64::MAX),
                capacity: opts.linux.max_conns() as usize,
                evicted: 0,
                removed: 0,
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
    /// kernel and go into `closed` with their final counters. `made`: the
    /// flows the programs have made so far, read before this call (None:
    /// not known); as many taken out, the map is empty and is not walked
    /// (a flow made since is seen at the next snapshot).
    pub fn collect(
        &mut self,
        made: Option<u64>,
        live: &mut Vec<ConnSample>,
        closed: &mut Vec<ConnSample>,
    ) {
        if made == Some(self.removed) {
            return;
        }
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
            if let Some(flow) = lookup_and_delete(&mut self.flows, &tuple) {
                self.removed += 1;
                closed.push(convert::udp_sample(&tuple, &flow, true));
            }
        }
    }
}

/// The entry probe of a receive picks `flags` by tcp_recvmsg's layout,
/// which every kernel gives udp(v6)_recvmsg too: checked before attaching.
fn kprobe(ebpf: &mut Ebpf, btf: &Btf) -> Result<(), LoadError> {
    for (func, _) in FUNCS {
        if func.ends_with("recvmsg")
            && hooks::present(btf, func)
            && btf.func_param_count(func) != btf.func_param_count("tcp_recvmsg")
        {
            return Err(LoadError::missing(
                format!("the kprobe for {func}"),
                format!("{func} and tcp_recvmsg take different arguments in this kernel"),
            ));
        }
    }
    hooks::attach_kprobes(ebpf, btf, &FUNCS)
}

fn sock_addr(ebpf: &mut Ebpf) -> Result<(), LoadError> {
    let what = "the UDP peer-address programs on the cgroup v2 root";
    let root = cgroup::mount()
        .ok_or_else(|| LoadError::missing(what, "no cgroup v2 mount in /proc/mounts"))?;
    let cgroup = std::fs::File::open(&root)
        .map_err(|e| LoadError::kernel(format!("{what}: opening {}", root.display()), &e))?;
    for name in SOCK_ADDR_PROGRAMS {
        hooks::refused_for_test("cgroup", what)?;
        let prog: &mut CgroupSockAddr = hooks::program(ebpf, name)?
            .try_into()
            .map_err(|e| LoadError::other(name, format!("{e}")))?;
        prog.load()
            .map_err(|e| LoadError::kernel(format!("loading {name}"), &e))?;
        prog.attach(cgroup.as_fd(), CgroupAttachMode::Single)
            .map_err(|e| {
                let err = LoadError::kernel(format!("attaching {name}"), &e);
                if err.cause() == Cause::Refused {
                    err.within("CAP_NET_ADMIN is needed to attach to a cgroup")
                } else {
                    err
                }
            })?;
    }
    Ok(())
}

/// `bpf_ktime_get_ns()`'s clock.
fn monotonic_ns() -> u64 {
    let ts = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    (ts.tv_sec as u64)
        .saturating_mul(1_000_000_000)
        .saturating_add(ts.tv_nsec as u64)
}

/// Takes a flow out of the map, with its last counters: one
/// `BPF_MAP_LOOKUP_AND_DELETE_ELEM` (Linux 5.14+ for hash maps; Aya 0.16
/// has no wrapper for it), or on older kernels a lookup, then a delete (a
/// datagram counted between the two is lost); the value only if the delete
/// succeeded, so that a flow still in the map is not reported ended, and
/// ended again at the next snapshot.
fn lookup_and_delete(
    map: &mut HashMap<MapData, ConnTuple, UdpFlow>,
    key: &ConnTuple,
) -> Option<UdpFlow> {
    match bpf::lookup_and_delete(map, key) {
        Ok(found) => found,
        Err(_) => {
            let value = map.get(key, 0).ok()?;
            map.remove(key).ok()?;
            Some(value)
        }
    }
}
