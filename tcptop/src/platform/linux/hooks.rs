//! Choosing and attaching the hook set that counts send/receive calls.
//!
//! State changes and teardown use the `inet_sock_set_state` and
//! `tcp_destroy_sock` tracepoints on every kernel tcptop supports (4.16+);
//! what differs between kernels is how each send/receive call is seen:
//!
//! | set | programs | needs |
//! |---|---|---|
//! | fentry | fexit on tcp_sendmsg, tcp_sendpage (< 6.5), tcp_recvmsg | BTF tracing programs (5.5+) |
//! | kprobe | kprobe+kretprobe on the same functions | CONFIG_KPROBES |
//! | tracepoint | raw tracepoints sock_send_length, sock_recv_length | Linux 6.3+ |
//!
//! `auto` tries them best first (fentry has the lowest cost per call) and
//! keeps the first whose programs load and attach.

use aya::{
    Ebpf,
    programs::{FExit, KProbe, Program, RawTracePoint},
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

/// Attaches the first set of `candidates` that works; returns it, or every
/// set's reason for failing.
pub fn attach_io(
    ebpf: &mut Ebpf,
    candidates: &[HookSet],
    btf: &Btf,
    btf_path: &std::path::Path,
) -> Result<HookSet, Vec<(HookSet, String)>> {
    let mut errors = Vec::new();
    for &set in candidates {
        let attempt = match set {
            HookSet::Fentry => fentry(ebpf, btf, btf_path),
            HookSet::Kprobe => kprobe(ebpf, btf),
            HookSet::Tracepoint => tracepoint(ebpf),
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

fn present(btf: &Btf, func: &str) -> bool {
    btf.func_param_count(func).is_some()
}

fn fentry(ebpf: &mut Ebpf, btf: &Btf, btf_path: &std::path::Path) -> Result<(), String> {
    // Aya's full BTF model of the kernel (tens of MB) is needed only to load
    // tracing programs: parsed here, dropped on return.
    let aya_btf = aya::Btf::parse_file(btf_path, aya::Endianness::default())
        .map_err(|e| format!("cannot load the kernel's BTF for tracing programs: {e}"))?;
    let aya_btf = &aya_btf;
    for (func, optional) in IO_FUNCS {
        if optional && !present(btf, func) {
            continue;
        }
        // tcp_recvmsg has one program per argument layout.
        let name = match btf.func_param_count(func) {
            Some(n) if func == "tcp_recvmsg" => format!("fexit_{func}{n}"),
            _ => format!("fexit_{func}"),
        };
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

fn kprobe(ebpf: &mut Ebpf, btf: &Btf) -> Result<(), String> {
    if !std::path::Path::new("/sys/bus/event_source/devices/kprobe").exists() {
        return Err("this kernel has no kprobe support (CONFIG_KPROBES)".into());
    }
    for (func, optional) in IO_FUNCS {
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

fn tracepoint(ebpf: &mut Ebpf) -> Result<(), String> {
    for name in ["sock_send_length", "sock_recv_length"] {
        attach_raw_tracepoint(ebpf, name)
            .map_err(|e| format!("{e} (this tracepoint exists since Linux 6.3)"))?;
    }
    Ok(())
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

fn program<'a>(ebpf: &'a mut Ebpf, name: &str) -> Result<&'a mut Program, String> {
    ebpf.program_mut(name)
        .ok_or_else(|| format!("eBPF object has no program {name:?}"))
}

/// Detaches and unloads whatever part of a set got loaded.
fn unload_set(ebpf: &mut Ebpf, set: HookSet) {
    let names: Vec<String> = match set {
        HookSet::Fentry => [
            "fexit_tcp_sendmsg",
            "fexit_tcp_sendpage",
            "fexit_tcp_recvmsg4",
            "fexit_tcp_recvmsg5",
            "fexit_tcp_recvmsg6",
        ]
        .map(String::from)
        .to_vec(),
        HookSet::Kprobe => IO_FUNCS
            .iter()
            .flat_map(|(f, _)| [format!("kprobe_{f}"), format!("kretprobe_{f}")])
            .collect(),
        HookSet::Tracepoint => vec!["sock_send_length".into(), "sock_recv_length".into()],
    };
    for name in names {
        let _ = match ebpf.program_mut(&name) {
            Some(Program::FExit(p)) => p.unload(),
            Some(Program::KProbe(p)) => p.unload(),
            Some(Program::RawTracePoint(p)) => p.unload(),
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
