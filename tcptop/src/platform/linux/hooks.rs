//! Choosing and attaching the kernel programs.
//!
//! Birth and teardown use the `inet_sock_set_state` and `tcp_destroy_sock`
//! tracepoints, and live connections' states and socket counters the
//! connection map's iterator (`iter.rs`), on every kernel tcptop supports; what
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

/// Why a kernel program could not be loaded or attached: what it was, the
/// errno the kernel returned (kept as a number, never matched in text) and
/// the detail (the verifier's log, shortened).
#[derive(Clone, Debug)]
pub struct LoadError {
    pub what: String,
    pub errno: Option<i32>,
    pub detail: String,
    missing: bool,
}

/// What a [`LoadError`] means for the user.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cause {
    /// EPERM: a security policy (LSM, lockdown, a container's seccomp) or a
    /// missing capability; the program itself may be fine.
    Refused,
    /// The verifier rejected the program on this kernel.
    Verifier,
    /// The kernel lacks the hook, the helper or the program type.
    Missing,
    Other,
}

impl LoadError {
    /// From an error the kernel (through aya) returned.
    pub fn kernel(what: impl Into<String>, e: &(dyn std::error::Error + 'static)) -> LoadError {
        LoadError {
            what: what.into(),
            errno: errno_of(e),
            detail: chain(e),
            missing: false,
        }
    }

    /// Something this kernel does not have, found before asking it.
    pub fn missing(what: impl Into<String>, detail: impl Into<String>) -> LoadError {
        LoadError {
            what: what.into(),
            errno: None,
            detail: detail.into(),
            missing: true,
        }
    }

    /// Anything else (e.g. the eBPF object lacks a program).
    pub fn other(what: impl Into<String>, detail: impl Into<String>) -> LoadError {
        LoadError {
            what: what.into(),
            errno: None,
            detail: detail.into(),
            missing: false,
        }
    }

    pub fn cause(&self) -> Cause {
        match self.errno {
            Some(libc::EPERM) => Cause::Refused,
            // ENOTSUPP (524): the kernel-internal "not supported".
            Some(libc::ENOENT | libc::EOPNOTSUPP | libc::ENOSYS | 524) => Cause::Missing,
            Some(libc::EACCES | libc::EINVAL) if self.detail.contains("Verifier output") => {
                Cause::Verifier
            }
            _ if self.missing => Cause::Missing,
            _ => Cause::Other,
        }
    }

    /// Adds context to what failed (e.g. the hook set).
    pub fn within(mut self, context: &str) -> LoadError {
        self.what = format!("{context}: {}", self.what);
        self
    }
}

impl std::fmt::Display for LoadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let cause = match self.cause() {
            Cause::Refused => {
                "refused by the kernel (EPERM: a security policy or a missing capability)"
            }
            Cause::Verifier => "rejected by this kernel's verifier",
            Cause::Missing => "not in this kernel",
            Cause::Other => "failed",
        };
        write!(f, "{}: {cause}", self.what)?;
        // A refusal's detail is the syscall and an empty verifier log.
        if !self.detail.is_empty() && self.cause() != Cause::Refused {
            write!(f, " ({})", super::brief(&self.detail))?;
        }
        Ok(())
    }
}

/// The first OS error code in an error's chain of causes.
pub fn errno_of(e: &(dyn std::error::Error + 'static)) -> Option<i32> {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(io) = err.downcast_ref::<std::io::Error>()
            && let Some(n) = io.raw_os_error()
        {
            return Some(n);
        }
        cur = err.source();
    }
    None
}

/// Test switch (builds with debug assertions, which the tests run, or the
/// `bench-switches` feature: `super::SWITCHES`):
/// `TCPTOP_TEST_REFUSE=iter,owners,fentry,tp_btf,kprobe,cgroup,touch` makes the loader
/// treat those kinds of program as refused by the kernel (EPERM), so that
/// every fallback runs on a host that allows everything.
pub fn refused_for_test(kind: &str, what: &str) -> Result<(), LoadError> {
    if !super::SWITCHES {
        return Ok(());
    }
    let refused =
        std::env::var("TCPTOP_TEST_REFUSE").is_ok_and(|v| v.split(',').any(|k| k.trim() == kind));
    if refused {
        return Err(LoadError {
            what: what.to_string(),
            errno: Some(libc::EPERM),
            detail: "TCPTOP_TEST_REFUSE".into(),
            missing: false,
        });
    }
    Ok(())
}

/// Kernel functions hooked by the fentry and kprobe sets, with whether the
/// kernel may lack them (`tcp_sendpage` is gone since 6.5: sendfile goes
/// through tcp_sendmsg there).
const IO_FUNCS: [(&str, bool); 3] = [
    ("tcp_sendmsg", false),
    ("tcp_sendpage", true),
    ("tcp_recvmsg", false),
];

/// Aya's full model of the kernel's BTF, needed only to load BTF-typed
/// programs: parsed on first use, at most once, from the blob our reader
/// holds (`btf.rs` says why both parse it), and dropped with this value
/// after attaching.
pub struct TracingBtf<'a> {
    blob: &'a Btf,
    parsed: Option<Result<aya::Btf, String>>,
    enabled: bool,
}

impl<'a> TracingBtf<'a> {
    /// `enabled: false`: load no BTF-typed program at all.
    pub fn new(blob: &'a Btf, enabled: bool) -> Self {
        TracingBtf {
            blob,
            parsed: None,
            enabled,
        }
    }

    /// Whether BTF-typed programs may be tried.
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// For BTF-typed tracepoints and function hooks (unless turned off).
    pub(super) fn get(&mut self) -> Result<&aya::Btf, LoadError> {
        if !self.enabled {
            return Err(LoadError::other(
                "BTF-typed programs",
                "turned off (TCPTOP_RAW_TRACEPOINTS)",
            ));
        }
        self.parsed()
    }

    /// For programs that exist only BTF-typed (the map iterator), on
    /// every hook set.
    pub(super) fn parsed(&mut self) -> Result<&aya::Btf, LoadError> {
        let blob = self.blob;
        self.parsed
            .get_or_insert_with(|| {
                aya::Btf::parse(blob.bytes(), aya::Endianness::default())
                    .map_err(|e| format!("cannot load the kernel's BTF for tracing programs: {e}"))
            })
            .as_ref()
            .map_err(|e| LoadError::other("BTF-typed programs", e.clone()))
    }
}

/// The birth and teardown tracepoints every hook set uses: teardown first,
/// so that no socket starts being tracked before its teardown would be
/// seen. (States, endpoints and socket counters of live connections come
/// from the connection map's iterator: `iter.rs`.)
const LIFECYCLE_TRACEPOINTS: [&str; 2] = ["tcp_destroy_sock", "inet_sock_set_state"];
/// The send/receive tracepoints of the tracepoint set.
const IO_TRACEPOINTS: [&str; 2] = ["sock_send_length", "sock_recv_length"];

/// Attaches the state-change and teardown programs, BTF-typed if `btf`
/// allows (returns true), raw otherwise.
pub fn attach_lifecycle(ebpf: &mut Ebpf, btf: &mut TracingBtf) -> Result<bool, LoadError> {
    tracepoints(ebpf, btf, &LIFECYCLE_TRACEPOINTS)
}

/// Attaches the first set of `candidates` that works; returns it, or every
/// set's reason for failing.
pub fn attach_io(
    ebpf: &mut Ebpf,
    candidates: &[HookSet],
    btf: &Btf,
    tracing: &mut TracingBtf,
) -> Result<HookSet, Vec<(HookSet, LoadError)>> {
    let mut errors = Vec::new();
    for &set in candidates {
        let attempt = match set {
            HookSet::Fentry => fentry(ebpf, btf, tracing),
            HookSet::Kprobe => kprobe(ebpf, btf),
            HookSet::Tracepoint => tracepoints(ebpf, tracing, &IO_TRACEPOINTS).map(|_| ()),
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
fn tracepoints(ebpf: &mut Ebpf, btf: &mut TracingBtf, names: &[&str]) -> Result<bool, LoadError> {
    if btf.enabled() {
        match btf_tracepoints(ebpf, btf, names) {
            Ok(()) => return Ok(true),
            // The raw programs do the same with probe reads.
            Err(_) => unload(ebpf, names.iter().map(|n| btf_program(n))),
        }
    }
    for name in names {
        attach_raw_tracepoint(ebpf, name)?;
    }
    Ok(false)
}

fn btf_tracepoints(ebpf: &mut Ebpf, btf: &mut TracingBtf, names: &[&str]) -> Result<(), LoadError> {
    let btf = btf.get()?;
    for tp in names {
        let name = btf_program(tp);
        let what = format!("the BTF-typed program for tracepoint {tp}");
        refused_for_test("tp_btf", &what)?;
        let prog: &mut BtfTracePoint = program(ebpf, &name)?
            .try_into()
            .map_err(|e| LoadError::other(&name, format!("{e}")))?;
        prog.load(tp, btf)
            .map_err(|e| LoadError::kernel(format!("loading {what}"), &e))?;
        prog.attach()
            .map_err(|e| LoadError::kernel(format!("attaching {what}"), &e))?;
    }
    Ok(())
}

pub(super) fn present(btf: &Btf, func: &str) -> bool {
    btf.func_param_count(func).is_some()
}

fn fentry(ebpf: &mut Ebpf, btf: &Btf, tracing: &mut TracingBtf) -> Result<(), LoadError> {
    attach_fexit(ebpf, btf, tracing, &IO_FUNCS)
}

fn kprobe(ebpf: &mut Ebpf, btf: &Btf) -> Result<(), LoadError> {
    if !std::path::Path::new("/sys/bus/event_source/devices/kprobe").exists() {
        return Err(LoadError::missing("kprobes", "CONFIG_KPROBES is off"));
    }
    attach_kprobes(ebpf, btf, &IO_FUNCS)
}

/// The fexit program of `func` for this kernel: a `*_recvmsg` function has
/// one per argument layout (`fexit_<func><count>`).
fn fexit_name(btf: &Btf, func: &str) -> Result<String, LoadError> {
    if !has_layouts(func) {
        return Ok(fexit_program(func, None));
    }
    match btf.func_param_count(func) {
        Some(n) if RECVMSG_PARAMS.contains(&n) => Ok(fexit_program(func, Some(n))),
        other => Err(LoadError::missing(
            format!("fexit program for {func}"),
            format!("{func} has {other:?} arguments in BTF (4 to 6 expected)"),
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
) -> Result<(), LoadError> {
    let aya_btf = tracing.get()?;
    for &(func, optional) in funcs {
        if optional && !present(btf, func) {
            continue;
        }
        let what = format!("the fexit program for {func}");
        refused_for_test("fentry", &what)?;
        let name = fexit_name(btf, func)?;
        let prog: &mut FExit = program(ebpf, &name)?
            .try_into()
            .map_err(|e| LoadError::other(&name, format!("{e}")))?;
        prog.load(func, aya_btf)
            .map_err(|e| LoadError::kernel(format!("loading {what}"), &e))?;
        prog.attach()
            .map_err(|e| LoadError::kernel(format!("attaching {what}"), &e))?;
    }
    Ok(())
}

/// Loads and attaches the kprobe and kretprobe programs of each of `funcs`.
pub(super) fn attach_kprobes(
    ebpf: &mut Ebpf,
    btf: &Btf,
    funcs: &[(&str, bool)],
) -> Result<(), LoadError> {
    for &(func, optional) in funcs {
        if optional && !present(btf, func) {
            continue;
        }
        for kind in KPROBE_KINDS {
            let name = kprobe_program(kind, func);
            let what = format!("the {kind} for {func}");
            refused_for_test("kprobe", &what)?;
            let prog: &mut KProbe = program(ebpf, &name)?
                .try_into()
                .map_err(|e| LoadError::other(&name, format!("{e}")))?;
            prog.load()
                .map_err(|e| LoadError::kernel(format!("loading {what}"), &e))?;
            prog.attach(func, 0)
                .map_err(|e| LoadError::kernel(format!("attaching {what}"), &e))?;
        }
    }
    Ok(())
}

/// Every fexit, kprobe and kretprobe program name `funcs` may use.
pub(super) fn function_programs(funcs: &[(&str, bool)]) -> Vec<String> {
    let mut names = Vec::new();
    for &(func, _) in funcs {
        if has_layouts(func) {
            names.extend(RECVMSG_PARAMS.map(|n| fexit_program(func, Some(n))));
        } else {
            names.push(fexit_program(func, None));
        }
        names.extend(KPROBE_KINDS.map(|kind| kprobe_program(kind, func)));
    }
    names
}

/// Argument counts a `*_recvmsg` function has had (see `kernel_offsets`):
/// its fexit program is built once for each.
const RECVMSG_PARAMS: std::ops::RangeInclusive<usize> = 4..=6;

/// Whether `func` has one fexit program per argument layout.
fn has_layouts(func: &str) -> bool {
    func.ends_with("recvmsg")
}

// Names of programs in the eBPF object (`tcptop-ebpf/src/probes/`), built
// by these functions only: `program_names` lists every one this module may
// ask for, and a test checks them against the object.

fn fexit_program(func: &str, params: Option<usize>) -> String {
    match params {
        Some(n) => format!("fexit_{func}{n}"),
        None => format!("fexit_{func}"),
    }
}

const KPROBE_KINDS: [&str; 2] = ["kprobe", "kretprobe"];

fn kprobe_program(kind: &str, func: &str) -> String {
    format!("{kind}_{func}")
}

/// The BTF-typed program of tracepoint `tp` (the raw one is named `tp`).
fn btf_program(tp: &str) -> String {
    format!("btf_{tp}")
}

/// Every program name this module may ask the eBPF object for.
#[cfg(test)]
pub(super) fn program_names() -> Vec<String> {
    let mut names = function_programs(&IO_FUNCS);
    for tp in LIFECYCLE_TRACEPOINTS.iter().chain(&IO_TRACEPOINTS) {
        names.push(tp.to_string());
        names.push(btf_program(tp));
    }
    names
}

/// Loads and attaches the raw tracepoint program named like its tracepoint.
pub fn attach_raw_tracepoint(ebpf: &mut Ebpf, name: &str) -> Result<(), LoadError> {
    let what = format!("the program for tracepoint {name}");
    let prog: &mut RawTracePoint = program(ebpf, name)?
        .try_into()
        .map_err(|e| LoadError::other(name, format!("{e}")))?;
    prog.load()
        .map_err(|e| LoadError::kernel(format!("loading {what}"), &e))?;
    prog.attach(name)
        .map_err(|e| LoadError::kernel(format!("attaching {what}"), &e))?;
    Ok(())
}

pub fn program<'a>(ebpf: &'a mut Ebpf, name: &str) -> Result<&'a mut Program, LoadError> {
    ebpf.program_mut(name)
        .ok_or_else(|| LoadError::other(name, "the eBPF object has no such program"))
}

/// Detaches and unloads whatever part of a set got loaded.
fn unload_set(ebpf: &mut Ebpf, set: HookSet) {
    match set {
        HookSet::Fentry | HookSet::Kprobe => unload(ebpf, function_programs(&IO_FUNCS)),
        HookSet::Tracepoint => unload(
            ebpf,
            IO_TRACEPOINTS
                .iter()
                .flat_map(|n| [n.to_string(), btf_program(n)]),
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
