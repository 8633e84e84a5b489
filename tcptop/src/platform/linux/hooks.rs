//! Choosing and attaching the kernel programs.
//!
//! Birth and teardown use the `inet_sock_set_state` and `tcp_destroy_sock`
//! tracepoints, and live connections' states and socket counters the
//! connection map's iterator (`refresh.rs`), on every kernel tcptop supports; what
//! differs between kernels is how each send/receive call is seen:
//!
//! | set | programs | needs |
//! |---|---|---|
//! | fentry | fexit on tcp_sendmsg, tcp_sendpage (< 6.5), tcp_recvmsg | BTF tracing programs (5.5+) |
//! | kprobe | kprobe+kretprobe on the same functions | CONFIG_KPROBES |
//! | tracepoint | tracepoints sock_send_length, sock_recv_length | Linux 6.3+ |
//!
//! `auto` tries them best first (fentry has the lowest cost per call) and
//! keeps the first whose programs load and attach.
//!
//! Tracepoints are attached BTF-typed (tp_btf: fields read with plain loads)
//! where the kernel loads such programs, raw (a probe-read helper call per
//! field) otherwise, and always raw with the kprobe set, which is the set
//! for kernels without BTF tracing programs (so the VM matrix runs both
//! kinds). `TCPTOP_RAW_TRACEPOINTS=1` forces raw ones.

use aya::{
    Ebpf,
    programs::{BtfTracePoint, FExit, KProbe, Program, RawTracePoint},
};

use super::btf::Btf;
use crate::platform::HookSet;

/// Kernel functions hooked by the fentry and kprobe sets, with whether the
/// kernel may lack them (`tcp_sendpage` is gone since 6.5: sendfile goes
/// through tcp_sendmsg there).
const IO_FUNCS: [(&str, bool); 3] = [
    ("tcp_sendmsg", false),
    ("tcp_sendpage", true),
    ("tcp_recvmsg", false),
];

/// Aya's full model of the kernel's BTF (tens of MB), needed only to load
/// BTF-typed programs: parsed on first use, at most once, and dropped with
/// this value after attaching.
pub struct TracingBtf<'a> {
    path: &'a std::path::Path,
    parsed: Option<Result<aya::Btf, String>>,
    enabled: bool,
}

impl<'a> TracingBtf<'a> {
    /// `enabled: false`: load no BTF-typed program at all.
    pub fn new(path: &'a std::path::Path, enabled: bool) -> Self {
        TracingBtf {
            path,
            parsed: None,
            enabled,
        }
    }

    /// Whether BTF-typed programs may be tried.
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// For BTF-typed tracepoints and function hooks (unless turned off).
    pub(super) fn get(&mut self) -> Result<&aya::Btf, String> {
        if !self.enabled {
            return Err("BTF-typed programs are turned off (TCPTOP_RAW_TRACEPOINTS)".into());
        }
        self.parsed()
    }

    /// For programs that exist only BTF-typed (the map iterator), on
    /// every hook set.
    pub(super) fn parsed(&mut self) -> Result<&aya::Btf, String> {
        let path = self.path;
        self.parsed
            .get_or_insert_with(|| {
                aya::Btf::parse_file(path, aya::Endianness::default())
                    .map_err(|e| format!("cannot load the kernel's BTF for tracing programs: {e}"))
            })
            .as_ref()
            .map_err(Clone::clone)
    }
}

/// The birth and teardown tracepoints every hook set uses: teardown first,
/// so that no socket starts being tracked before its teardown would be
/// seen. (States, endpoints and socket counters of live connections come
/// from the connection map's iterator: `refresh.rs`.)
const LIFECYCLE_TRACEPOINTS: [&str; 2] = ["tcp_destroy_sock", "inet_sock_set_state"];
/// The send/receive tracepoints of the tracepoint set.
const IO_TRACEPOINTS: [&str; 2] = ["sock_send_length", "sock_recv_length"];

/// Attaches the state-change and teardown programs, BTF-typed if `btf`
/// allows (returns true), raw otherwise.
pub fn attach_lifecycle(ebpf: &mut Ebpf, btf: &mut TracingBtf) -> Result<bool, String> {
    tracepoints(ebpf, btf, &LIFECYCLE_TRACEPOINTS)
}

/// Attaches the first set of `candidates` that works; returns it, or every
/// set's reason for failing.
pub fn attach_io(
    ebpf: &mut Ebpf,
    candidates: &[HookSet],
    btf: &Btf,
    tracing: &mut TracingBtf,
) -> Result<HookSet, Vec<(HookSet, String)>> {
    let mut errors = Vec::new();
    for &set in candidates {
        let attempt = match set {
            HookSet::Fentry => fentry(ebpf, btf, tracing),
            HookSet::Kprobe => kprobe(ebpf, btf),
            HookSet::Tracepoint => tracepoints(ebpf, tracing, &IO_TRACEPOINTS)
                .map(|_| ())
                .map_err(|e| format!("{e} (these tracepoints exist since Linux 6.3)")),
        };
        match attempt {
            Ok(()) => return Ok(set),
            Err(e) => {
                unload_set(ebpf, set);
                errors.push((set, e));
            }
        }
    }
    Err(errors)
}

/// What the `set` in use cannot see on this kernel, for a start-up warning.
///
/// The kprobe set's return probes (kretprobes) each track a call from
/// entry to return in one of a fixed number of slots; a call that finds
/// none free is not seen returning, so its bytes are not counted. The
/// slots are fixed when the probe is made, and a probe made through perf
/// (as tcptop's are) gets the kernel's default: 2 per possible CPU (at
/// least 10) on a preemptible kernel, but only 1 per possible CPU on one
/// built without preemption, such as Debian 11's 5.10. A receive call
/// blocked waiting for data holds its slot all that time: with more
/// threads than CPUs blocked in receives, the calls beyond are missed
/// (the UDP tests lost 1 to 10 datagrams of 20 on 5.10 with 2 CPUs).
pub fn io_warning(set: HookSet) -> Option<String> {
    if set != HookSet::Kprobe {
        return None;
    }
    // `uname -v`: "#1 SMP PREEMPT_DYNAMIC ..." on a preemptible kernel.
    let version = std::fs::read_to_string("/proc/sys/kernel/version").ok()?;
    if version.contains("PREEMPT") {
        return None;
    }
    let cpus = std::fs::read_to_string("/sys/devices/system/cpu/possible")
        .ok()
        .and_then(|s| possible_cpus(&s))?;
    Some(format!(
        "the kprobe hook set on a kernel without preemption follows at most {cpus} calls \
         of each hooked function in flight at a time (one per possible CPU): while more threads \
         than that wait in a receive call at once, some calls are not counted \
         (the fentry set, where it loads, has no such limit)"
    ))
}

/// The number of CPUs in a list such as "0-3,8-11".
fn possible_cpus(list: &str) -> Option<usize> {
    let mut n = 0;
    for part in list.trim().split(',') {
        n += match part.split_once('-') {
            Some((a, b)) => (b.parse::<usize>().ok()? + 1).checked_sub(a.parse().ok()?)?,
            None => {
                part.parse::<usize>().ok()?;
                1
            }
        };
    }
    Some(n)
}

/// Attaches the programs for `names`: the BTF-typed ones (`btf_<name>`) if
/// they load and attach (true), else the raw ones (false).
fn tracepoints(ebpf: &mut Ebpf, btf: &mut TracingBtf, names: &[&str]) -> Result<bool, String> {
    if btf.enabled() {
        match btf_tracepoints(ebpf, btf, names) {
            Ok(()) => return Ok(true),
            // The raw programs do the same with probe reads.
            Err(_) => unload(ebpf, names.iter().map(|n| format!("btf_{n}"))),
        }
    }
    for name in names {
        attach_raw_tracepoint(ebpf, name)?;
    }
    Ok(false)
}

fn btf_tracepoints(ebpf: &mut Ebpf, btf: &mut TracingBtf, names: &[&str]) -> Result<(), String> {
    let btf = btf.get()?;
    for tp in names {
        let name = format!("btf_{tp}");
        let prog: &mut BtfTracePoint = program(ebpf, &name)?
            .try_into()
            .map_err(|e| format!("{name}: {e}"))?;
        prog.load(tp, btf)
            .map_err(|e| format!("cannot load the BTF program for {tp}: {}", chain(&e)))?;
        prog.attach()
            .map_err(|e| format!("cannot attach to tracepoint {tp}: {}", chain(&e)))?;
    }
    Ok(())
}

pub(super) fn present(btf: &Btf, func: &str) -> bool {
    btf.func_param_count(func).is_some()
}

fn fentry(ebpf: &mut Ebpf, btf: &Btf, tracing: &mut TracingBtf) -> Result<(), String> {
    attach_fexit(ebpf, btf, tracing, &IO_FUNCS)
}

fn kprobe(ebpf: &mut Ebpf, btf: &Btf) -> Result<(), String> {
    if !std::path::Path::new("/sys/bus/event_source/devices/kprobe").exists() {
        return Err("this kernel has no kprobe support (CONFIG_KPROBES)".into());
    }
    attach_kprobes(ebpf, btf, &IO_FUNCS)
}

/// The fexit program of `func` for this kernel: a `*_recvmsg` function has
/// one per argument layout (`fexit_<func><count>`).
fn fexit_name(btf: &Btf, func: &str) -> Result<String, String> {
    if !func.ends_with("recvmsg") {
        return Ok(format!("fexit_{func}"));
    }
    match btf.func_param_count(func) {
        Some(n @ 4..=6) => Ok(format!("fexit_{func}{n}")),
        other => Err(format!(
            "{func} has {other:?} arguments in BTF (4 to 6 expected)"
        )),
    }
}

/// Loads and attaches the fexit program of each of `funcs` (name, whether
/// the kernel may lack it).
pub(super) fn attach_fexit(
    ebpf: &mut Ebpf,
    btf: &Btf,
    tracing: &mut TracingBtf,
    funcs: &[(&str, bool)],
) -> Result<(), String> {
    let aya_btf = tracing.get()?;
    for &(func, optional) in funcs {
        if optional && !present(btf, func) {
            continue;
        }
        let name = fexit_name(btf, func)?;
        let prog: &mut FExit = program(ebpf, &name)?
            .try_into()
            .map_err(|e| format!("{name}: {e}"))?;
        prog.load(func, aya_btf)
            .map_err(|e| format!("cannot load fexit program for {func}: {}", chain(&e)))?;
        prog.attach()
            .map_err(|e| format!("cannot attach fexit to {func}: {}", chain(&e)))?;
    }
    Ok(())
}

/// Loads and attaches the kprobe and kretprobe programs of each of `funcs`.
pub(super) fn attach_kprobes(
    ebpf: &mut Ebpf,
    btf: &Btf,
    funcs: &[(&str, bool)],
) -> Result<(), String> {
    for &(func, optional) in funcs {
        if optional && !present(btf, func) {
            continue;
        }
        for kind in ["kprobe", "kretprobe"] {
            let name = format!("{kind}_{func}");
            let prog: &mut KProbe = program(ebpf, &name)?
                .try_into()
                .map_err(|e| format!("{name}: {e}"))?;
            prog.load()
                .map_err(|e| format!("cannot load {kind} for {func}: {}", chain(&e)))?;
            prog.attach(func, 0)
                .map_err(|e| format!("cannot attach {kind} to {func}: {}", chain(&e)))?;
        }
    }
    Ok(())
}

/// Every fexit, kprobe and kretprobe program name `funcs` may use.
pub(super) fn function_programs(funcs: &[(&str, bool)]) -> Vec<String> {
    let mut names = Vec::new();
    for (func, _) in funcs {
        if func.ends_with("recvmsg") {
            names.extend((4..=6).map(|n| format!("fexit_{func}{n}")));
        } else {
            names.push(format!("fexit_{func}"));
        }
        names.push(format!("kprobe_{func}"));
        names.push(format!("kretprobe_{func}"));
    }
    names
}

/// Loads and attaches the raw tracepoint program named like its tracepoint.
pub fn attach_raw_tracepoint(ebpf: &mut Ebpf, name: &str) -> Result<(), String> {
    let prog: &mut RawTracePoint = program(ebpf, name)?
        .try_into()
        .map_err(|e| format!("{name}: {e}"))?;
    prog.load()
        .map_err(|e| format!("cannot load the program for {name}: {}", chain(&e)))?;
    prog.attach(name)
        .map_err(|e| format!("cannot attach to tracepoint {name}: {}", chain(&e)))?;
    Ok(())
}

pub fn program<'a>(ebpf: &'a mut Ebpf, name: &str) -> Result<&'a mut Program, String> {
    ebpf.program_mut(name)
        .ok_or_else(|| format!("eBPF object has no program {name:?}"))
}

/// Detaches and unloads whatever part of a set got loaded.
fn unload_set(ebpf: &mut Ebpf, set: HookSet) {
    match set {
        HookSet::Fentry | HookSet::Kprobe => unload(ebpf, function_programs(&IO_FUNCS)),
        HookSet::Tracepoint => unload(
            ebpf,
            IO_TRACEPOINTS
                .iter()
                .flat_map(|n| [n.to_string(), format!("btf_{n}")]),
        ),
    }
}

/// Detaches and unloads the named programs (those not loaded are skipped).
pub(super) fn unload(ebpf: &mut Ebpf, names: impl IntoIterator<Item = String>) {
    for name in names {
        let _ = match ebpf.program_mut(&name) {
            Some(Program::FExit(p)) => p.unload(),
            Some(Program::KProbe(p)) => p.unload(),
            Some(Program::RawTracePoint(p)) => p.unload(),
            Some(Program::BtfTracePoint(p)) => p.unload(),
            Some(Program::CgroupSockAddr(p)) => p.unload(),
            _ => Ok(()),
        };
    }
}

/// An error with its causes, on one line.
pub fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let c_s = c.to_string();
        if !s.contains(&c_s) {
            s.push_str(": ");
            s.push_str(&c_s);
        }
        cur = c.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn possible_cpu_lists() {
        assert_eq!(possible_cpus("0\n"), Some(1));
        assert_eq!(possible_cpus("0-1\n"), Some(2));
        assert_eq!(possible_cpus("0-3,8-11"), Some(8));
        assert_eq!(possible_cpus("0,2"), Some(2));
        assert_eq!(possible_cpus("x"), None);
    }
}
