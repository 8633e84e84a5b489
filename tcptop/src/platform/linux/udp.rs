//! UDP flows: attach the cgroup programs of `probes/udp.rs`, read the flow
//! map each collection, and end flows idle for longer than the timeout.
//!
//! UDP has no close: a flow ends when it has been idle for `idle`. It is
//! then taken out of the kernel map with one lookup-and-delete (the kernel
//! starts a new flow, with fresh counters, if the 5-tuple is used again) and
//! reported once as closed with its final counters.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::{AsFd, AsRawFd};
use std::path::Path;

use aya::{
    Ebpf,
    maps::{HashMap, IterableMap, MapData},
    programs::{CgroupSkb, CgroupSkbAttachType, CgroupSock, links::CgroupAttachMode},
};
use tcptop_common::{ConnTuple, MAP_UDP_FLOWS, UdpFlow};

use super::{convert, hooks};
use crate::model::ConnSample;
use crate::platform::SourceOptions;

const SKB_PROGRAMS: [(&str, CgroupSkbAttachType); 2] = [
    ("tcptop_udp_ingress", CgroupSkbAttachType::Ingress),
    ("tcptop_udp_egress", CgroupSkbAttachType::Egress),
];
/// Release before create: no owner entry is made that would not be removed.
const SOCK_PROGRAMS: [&str; 2] = ["tcptop_udp_release", "tcptop_udp_create"];
/// Takes back datagrams a full receive buffer dropped; before ingress counts.
const QUEUE_FAILED: &str = "udp_fail_queue_rcv_skb";

pub struct UdpFlows {
    flows: HashMap<MapData, ConnTuple, UdpFlow>,
    idle_ns: u64,
    /// The flow map's capacity: above 90% of it, the longest idle flows
    /// are ended early, down to 80%, so that new flows always find room.
    capacity: usize,
    evicted: u64,
    /// Owners of sockets that existed before we started, for flows whose
    /// socket has not been used by a process since (receive-only sockets).
    proc_owners: ProcOwners,
}

/// UDP socket owners found in /proc at start-up, by namespace and local
/// address (the wildcard address matches any).
#[derive(Default)]
pub struct ProcOwners(std::collections::HashMap<(u32, SocketAddr), (u32, String)>);

impl ProcOwners {
    pub fn insert(&mut self, netns: u32, local: SocketAddr, owner: (u32, String)) {
        self.0.entry((netns, local)).or_insert(owner);
    }

    fn get(&self, netns: u32, local: SocketAddr) -> Option<&(u32, String)> {
        let any = match local.ip() {
            IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
        };
        self.0
            .get(&(netns, local))
            .or_else(|| self.0.get(&(netns, SocketAddr::new(any, local.port()))))
            // A dual-stack socket bound to [::] receives IPv4 too.
            .or_else(|| {
                self.0.get(&(
                    netns,
                    SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), local.port()),
                ))
            })
    }

    /// Fills in the owner of a flow the kernel has none for.
    fn fill(&self, s: &mut ConnSample) {
        if s.pid == 0
            && let Some((pid, comm)) = self.get(s.key.netns, s.key.local)
        {
            s.pid = *pid;
            s.comm.clone_from(comm);
        }
    }
}

impl UdpFlows {
    /// Attaches the UDP programs to the cgroup v2 root and takes the flow
    /// map. On failure nothing stays attached and the error says what is lost.
    pub fn attach(
        ebpf: &mut Ebpf,
        cgroup2: &Path,
        opts: &SourceOptions,
        proc_owners: ProcOwners,
    ) -> Result<Self, String> {
        let result = attach_all(ebpf, cgroup2);
        if let Err(e) = result {
            for name in SOCK_PROGRAMS
                .iter()
                .copied()
                .chain([QUEUE_FAILED])
                .chain(SKB_PROGRAMS.iter().map(|(n, _)| *n))
            {
                if let Some(p) = ebpf.program_mut(name) {
                    let _ = match p {
                        aya::programs::Program::CgroupSkb(p) => p.unload(),
                        aya::programs::Program::CgroupSock(p) => p.unload(),
                        aya::programs::Program::RawTracePoint(p) => p.unload(),
                        _ => Ok(()),
                    };
                }
            }
            return Err(format!("UDP flows are not shown: {e}"));
        }
        let map = ebpf
            .take_map(MAP_UDP_FLOWS)
            .ok_or_else(|| format!("UDP flows are not shown: no map {MAP_UDP_FLOWS}"))?;
        let flows = HashMap::try_from(map).map_err(|e| format!("UDP flows are not shown: {e}"))?;
        Ok(UdpFlows {
            flows,
            idle_ns: u64::try_from(opts.udp_idle.as_nanos()).unwrap_or(u64::MAX),
            capacity: opts.max_conns as usize,
            evicted: 0,
            proc_owners,
        })
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
            let mut s = convert::udp_sample(&tuple, &flow, false);
            self.proc_owners.fill(&mut s);
            live.push(s);
        }
        for tuple in idle {
            // The final value comes from the delete itself: a datagram
            // counted between our read and the delete is not lost.
            if let Some(flow) = lookup_and_delete(self.flows.map(), &tuple) {
                let mut s = convert::udp_sample(&tuple, &flow, true);
                self.proc_owners.fill(&mut s);
                closed.push(s);
            }
        }
    }
}

fn attach_all(ebpf: &mut Ebpf, cgroup2: &Path) -> Result<(), String> {
    let cgroup = std::fs::File::open(cgroup2)
        .map_err(|e| format!("cannot open cgroup {}: {e}", cgroup2.display()))?;
    for name in SOCK_PROGRAMS {
        let prog: &mut CgroupSock = hooks::program(ebpf, name)?
            .try_into()
            .map_err(|e| format!("{name}: {e}"))?;
        prog.load()
            .map_err(|e| format!("cannot load {name}: {}", super::brief(&hooks::chain(&e))))?;
        prog.attach(cgroup.as_fd(), CgroupAttachMode::Single)
            .map_err(|e| format!("cannot attach {name}: {}", hooks::chain(&e)))?;
    }
    hooks::attach_raw_tracepoint(ebpf, QUEUE_FAILED)?;
    for (name, at) in SKB_PROGRAMS {
        let prog: &mut CgroupSkb = hooks::program(ebpf, name)?
            .try_into()
            .map_err(|e| format!("{name}: {e}"))?;
        prog.load()
            .map_err(|e| format!("cannot load {name}: {}", super::brief(&hooks::chain(&e))))?;
        prog.attach(cgroup.as_fd(), at, CgroupAttachMode::Single)
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
/// has no wrapper for hash maps). On older kernels: lookup, then delete.
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
    let bpf = |cmd: libc::c_long| {
        // SAFETY: `attr` is a valid bpf_attr prefix for the element commands;
        // key and value point at live buffers of the map's sizes.
        unsafe {
            libc::syscall(
                libc::SYS_bpf,
                cmd,
                &attr as *const ElemAttr,
                std::mem::size_of::<ElemAttr>(),
            )
        }
    };
    if bpf(BPF_MAP_LOOKUP_AND_DELETE_ELEM) == 0 {
        return Some(value);
    }
    if std::io::Error::last_os_error().raw_os_error() == Some(libc::ENOENT) {
        return None;
    }
    (bpf(BPF_MAP_LOOKUP_ELEM) == 0).then(|| {
        bpf(BPF_MAP_DELETE_ELEM);
        value
    })
}
