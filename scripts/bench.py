#!/usr/bin/env python3
"""Overhead benchmark: loopback TCP with and without tcptop attached.

Loads (each for --secs seconds, loopback only, bounded in time):
  bulk   one TCP stream, 128 KiB writes: throughput (Gbit/s)
  small  one TCP stream, 64-byte writes: time per send call (ns); the
         difference with tcptop attached is the in-kernel hook cost per call
         (send side; the receiver's recv hook runs on the other core)

Runs are interleaved A/B (none, tcptop, none, tcptop, ...) so machine drift
cancels; each pair gives a ratio, and the report shows medians over --rounds.
While tcptop runs (batch jsonl to /dev/null at a 1 s interval) its CPU time
(all threads, from /proc/PID/task/*/schedstat) and peak RSS (VmHWM) are measured.

Usage (root): scripts/bench.py [--rounds 5] [--secs 5] [--markdown]
"""
import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REL = os.path.join(ROOT, "target", "release")
TCPTOP = os.path.join(REL, "tcptop")
PEER = os.path.join(REL, "tcptop-testpeer")
PORT = 45999


def cpu_secs(pid):
    """CPU time of all the process's threads, ns precision (schedstat)."""
    total = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                total += int(f.read().split()[0])
        except FileNotFoundError:
            pass
    return total / 1e9


def rss_kib(pid, field):
    """VmHWM (peak) or VmRSS (now) of a process, KiB."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def run_load(kind, secs):
    global PORT
    PORT += 1
    chunk = 128 * 1024 if kind == "bulk" else 64
    srv = subprocess.Popen(
        [PEER, "server", "--listen", f"127.0.0.1:{PORT}", "--name", "bench-srv"],
        stdout=subprocess.PIPE, text=True)
    srv.stdout.readline()  # listening
    out = subprocess.run(
        [PEER, "client", "--connect", f"127.0.0.1:{PORT}", "--name", "bench-cli",
         "--bulk-secs", str(secs), "--chunk", str(chunk)],
        stdout=subprocess.PIPE, text=True, timeout=secs + 30, check=True).stdout
    srv.wait(timeout=30)
    return json.loads(out.splitlines()[-1])


class Monitor:
    def __init__(self):
        self.p = subprocess.Popen(
            [TCPTOP, "--batch", "--format", "jsonl", "--interval", "1"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        line = self.p.stderr.readline()
        if not line.startswith("tcptop: attached"):
            sys.exit(f"tcptop did not start: {line}")
        self.cpu0 = cpu_secs(self.p.pid)
        self.t0 = time.monotonic()

    def stop(self):
        cpu = cpu_secs(self.p.pid) - self.cpu0
        wall = time.monotonic() - self.t0
        rss = (rss_kib(self.p.pid, "VmHWM"), rss_kib(self.p.pid, "VmRSS"))
        self.p.send_signal(signal.SIGTERM)
        self.p.wait(timeout=10)
        return cpu / wall, rss


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--secs", type=float, default=5.0)
    ap.add_argument("--markdown", action="store_true")
    a = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("bench.py needs root (tcptop loads eBPF programs)")
    subprocess.run(["cargo", "build", "--release", "--quiet"], cwd=ROOT, check=True)

    res = {k: {"none": [], "tcptop": [], "ratio": []} for k in ("bulk", "small")}
    mon_cpu, mon_rss, idle_cpu = [], [], []
    # tcptop's own cost with no load: the floor of its CPU use.
    m = Monitor()
    time.sleep(a.secs)
    c, _ = m.stop()
    idle_cpu.append(c)
    for r in range(a.rounds):
        for kind in ("bulk", "small"):
            base = run_load(kind, a.secs)
            m = Monitor()
            mon = run_load(kind, a.secs)
            c, rss = m.stop()
            mon_cpu.append(c)
            mon_rss.append(rss)
            key = "gbit_s" if kind == "bulk" else "ns_per_call"
            res[kind]["none"].append(base[key])
            res[kind]["tcptop"].append(mon[key])
            res[kind]["ratio"].append(mon[key] / base[key])
            print(f"round {r + 1} {kind}: none {base[key]:.3f} tcptop {mon[key]:.3f} "
                  f"tcptop cpu {c * 100:.2f}% rss peak/now {rss[0]}/{rss[1]} KiB", file=sys.stderr)

    med = statistics.median
    bulk, small = res["bulk"], res["small"]
    added_ns = [t - n for t, n in zip(small["tcptop"], small["none"])]
    lines = [
        f"rounds: {a.rounds} x {a.secs:g} s per load, interleaved A/B; medians",
        f"bulk throughput, no monitor: {med(bulk['none']):.2f} Gbit/s",
        f"bulk throughput, tcptop attached: {med(bulk['tcptop']):.2f} Gbit/s",
        f"bulk throughput ratio (paired): {med(bulk['ratio']) * 100:.1f}% "
        f"(min {min(bulk['ratio']) * 100:.1f}%, max {max(bulk['ratio']) * 100:.1f}%)",
        f"64-byte send call, no monitor: {med(small['none']):.0f} ns",
        f"64-byte send call, tcptop attached: {med(small['tcptop']):.0f} ns",
        f"added per send call (paired): {med(added_ns):.0f} ns",
        f"tcptop CPU under load: {med(mon_cpu) * 100:.2f}% of one core "
        f"(max {max(mon_cpu) * 100:.2f}%)",
        f"tcptop CPU idle machine: {med(idle_cpu) * 100:.2f}% of one core",
        f"tcptop RSS at the end of a load: {max(r[1] for r in mon_rss) / 1024:.1f} MiB "
        f"(peak {max(r[0] for r in mon_rss) / 1024:.1f} MiB, during start-up: "
        f"parsing the kernel's BTF to try the fentry set)",
    ]
    if a.markdown:
        print("\n".join(f"- {l}" for l in lines))
    else:
        print("\n".join(lines))


if __name__ == "__main__":
    main()
