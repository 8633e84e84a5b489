#!/usr/bin/env python3
"""Per-hook kernel cost: each tcptop eBPF program's run time per connection.

Runs the max-rate churn load of scripts/bench-peers.py (two python clients,
two forked server workers, 64-byte request and reply, the server closing
first) for --secs with tcptop attached (`--batch --format jsonl --interval
1` to /dev/null), with the kernel's per-program statistics switched on
(sysctl kernel.bpf_stats_enabled=1, restored afterwards: this script, not
tcptop, changes it). Each program's run count and run time come from its
file descriptor in tcptop (/proc/PID/fdinfo: run_cnt, run_time_ns), its
name from /proc/kallsyms (bpf_prog_<tag>_<name>). The same again with
TCPTOP_BENCH_NOOP=1 gives each program's floor per run: the dispatch and
the statistics' own two clock reads, which every run pays; the difference
is tcptop's work. Medians over --rounds (alternating tcptop, floor).

What it does not see: the kernel's cost of calling into the hooks outside
the program (cgroup and tracepoint dispatch: scripts/bench-peers.py's
tcptop-noop rows), and cache effects on the kernel's own code.

Usage (root): scripts/bench-hooks.py [--rounds 3] [--secs 5]   (prints a
markdown table)
"""
import argparse
import glob
import importlib.util
import os
import signal
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TCPTOP = os.environ.get("TCPTOP_BIN", os.path.join(ROOT, "target", "release", "tcptop"))
PEERS = os.path.join(ROOT, "scripts", "bench-peers.py")
STATS = "/proc/sys/kernel/bpf_stats_enabled"


def prog_fds(pid):
    """{prog_id: (tag, fd path)} of the eBPF programs tcptop holds."""
    out = {}
    for fd in glob.glob(f"/proc/{pid}/fd/*"):
        try:
            if os.readlink(fd) != "anon_inode:bpf-prog":
                continue
            info = dict(line.split(":\t", 1) for line in
                        open(f"/proc/{pid}/fdinfo/{os.path.basename(fd)}").read().splitlines()
                        if ":\t" in line)
        except OSError:
            continue
        out[int(info["prog_id"])] = (info["prog_tag"].strip(), os.path.basename(fd))
    return out


def counters(pid, fds):
    """{prog_id: (run_cnt, run_time_ns)} now."""
    out = {}
    for prog_id, (_, fd) in fds.items():
        info = dict(line.split(":\t", 1) for line in
                    open(f"/proc/{pid}/fdinfo/{fd}").read().splitlines() if ":\t" in line)
        out[prog_id] = (int(info["run_cnt"]), int(info["run_time_ns"]))
    return out


def names(tags):
    """{tag: program name} from /proc/kallsyms."""
    want = {f"bpf_prog_{t}_": t for t in tags}
    out = {}
    with open("/proc/kallsyms") as f:
        for line in f:
            sym = line.split()[2]
            if sym.startswith("bpf_prog_") and sym[:26] in want:
                out[want[sym[:26]]] = sym[26:]
    return out


def bench_peers():
    """scripts/bench-peers.py as a module: its churn load, as it runs it."""
    sys.dont_write_bytecode = True
    spec = importlib.util.spec_from_file_location("bench_peers", PEERS)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def run(noop, secs, churn):
    """{name: (runs per conn, ns per conn)} for one run of `churn`
    (bench-peers' load_churn)."""
    env = dict(os.environ)
    if noop:
        env["TCPTOP_BENCH_NOOP"] = "1"
    p = subprocess.Popen([TCPTOP, "--batch", "--format", "jsonl", "--interval", "1"],
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
    try:
        while True:
            line = p.stderr.readline()
            if not line:
                sys.exit(f"tcptop exited at start: {p.wait()}")
            if "tcptop: attached" in line:
                break
        time.sleep(1.0)
        fds = prog_fds(p.pid)
        before = counters(p.pid, fds)
        n = churn(secs, 0)["work"]
        after = counters(p.pid, fds)
        # While the programs are loaded: their symbols go with them.
        tag_name = names({t for t, _ in fds.values()})
    finally:
        p.send_signal(signal.SIGTERM)
        p.wait(timeout=30)
    out = {}
    for i, (tag, _) in fds.items():
        runs = after[i][0] - before[i][0]
        ns = after[i][1] - before[i][1]
        out[tag_name.get(tag, tag)] = (runs / n, ns / n)
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--secs", type=float, default=5.0)
    a = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("bench-hooks.py needs root (eBPF, kernel.bpf_stats_enabled)")
    if not 1 <= a.secs <= 60 or not 1 <= a.rounds <= 20:
        ap.error("bounds: 1 <= --secs <= 60, 1 <= --rounds <= 20")
    # The switches (TCPTOP_BENCH_NOOP, TCPTOP_BENCH_SKIP) are compiled out of
    # release builds without this feature.
    subprocess.run(["cargo", "build", "--release", "--quiet", "--features", "tcptop/bench-switches"],
                   cwd=ROOT, check=True)
    churn = bench_peers().load_churn
    old = open(STATS).read().strip()
    real, floor = [], []
    try:
        with open(STATS, "w") as f:
            f.write("1")
        for r in range(a.rounds):
            for noop, acc in ((False, real), (True, floor)):
                acc.append(run(noop, a.secs, churn))
                print(f"round {r + 1} {'floor' if noop else 'tcptop'} done", file=sys.stderr)
    finally:
        with open(STATS, "w") as f:
            f.write(old)
    med = lambda rs, k, j: statistics.median(x[k][j] for x in rs if k in x)
    rows = []
    for k in sorted({k for x in real for k in x}):
        runs, ns = med(real, k, 0), med(real, k, 1)
        if runs < 0.01:
            continue
        fruns, fns = med(floor, k, 0), med(floor, k, 1)
        per_run_floor = fns / fruns if fruns else 0.0
        rows.append((ns - per_run_floor * runs, k, runs, ns / runs, per_run_floor, ns))
    rows.sort(reverse=True)
    L = ["| program | runs per conn | ns per run | floor ns per run | ns per conn | "
         "above the floor, ns per conn |", "|---|---|---|---|---|---|"]
    for above, k, runs, per_run, fl, ns in rows:
        L.append(f"| {k} | {runs:.1f} | {per_run:.0f} | {fl:.0f} | {ns:.0f} | {above:.0f} |")
    tot = sum(x[5] for x in rows)
    tot_above = sum(x[0] for x in rows)
    L.append(f"| **all** | {sum(x[2] for x in rows):.1f} | | | {tot:.0f} | {tot_above:.0f} |")
    print("\n".join(L))


if __name__ == "__main__":
    main()
