#!/usr/bin/env python3
"""Soak: tcptop under mixed loopback traffic for --minutes (default 10),
sampling its memory every 10 s, to show that memory stays flat after
warm-up. Bounded in time and count; loopback only (a private netns).

Traffic (tcptop-testpeer, all paced):
  TCP churn   200 new connections/s, 300 B out / 700 B back each
  UDP flows   one socket sending 100 B datagrams to 200 ports round-robin,
              200 datagrams/s: flows go idle and expire (--idle-timeout 5)
  TCP held    connections that stay open 20 s each, one after another

tcptop runs as a user would script it: --batch --format jsonl --interval 1
to /dev/null. Prints RSS per minute and a verdict line; --markdown prints a
section for BENCHMARKS.md.

Usage (root): scripts/soak.py [--minutes 10] [--markdown]
"""
import argparse
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REL = os.path.join(ROOT, "target", "release")
TCPTOP = os.path.join(REL, "tcptop")
PEER = os.path.join(REL, "tcptop-testpeer")
NS = f"tcptop-soak-{os.getpid()}"


def status_kib(pid, field):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def cpu_secs(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def peer(*args):
    return subprocess.Popen(["ip", "netns", "exec", NS, PEER, *args],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--markdown", action="store_true")
    a = ap.parse_args()
    secs = int(a.minutes * 60)
    for b in (TCPTOP, PEER):
        if not os.path.exists(b):
            sys.exit(f"missing {b}: run cargo build --release first")
    subprocess.run(["ip", "netns", "add", NS], check=True)
    subprocess.run(["ip", "-n", NS, "link", "set", "lo", "up"], check=True)
    procs = []
    top = None
    try:
        top = subprocess.Popen([TCPTOP, "--batch", "--format", "jsonl", "--interval", "1",
                                "--idle-timeout", "5", "--quiet"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        time.sleep(3)
        churn = str(200 * secs)
        procs.append(peer("server", "--listen", "127.0.0.1:47001", "--conns", churn,
                          "--recv", "300", "--send", "700"))
        time.sleep(0.3)
        procs.append(peer("client", "--connect", "127.0.0.1:47001", "--conns", churn,
                          "--send", "300", "--recv", "700", "--rate", "200"))
        procs.append(peer("udp-client", "--to", "127.0.0.1:47100", "--ports", "200",
                          "--count", str(secs), "--size", "100", "--gap-us", "5000"))
        held = str(secs // 20 + 1)
        procs.append(peer("server", "--listen", "127.0.0.1:47002", "--conns", held,
                          "--recv", "1000", "--send", "1000"))
        time.sleep(0.3)
        procs.append(peer("client", "--connect", "127.0.0.1:47002", "--conns", held,
                          "--send", "1000", "--recv", "1000", "--hold-ms", "20000"))
        start = time.time()
        samples = []
        while time.time() - start < secs:
            time.sleep(10)
            if top.poll() is not None:
                sys.exit(f"tcptop exited: {top.stderr.read()}")
            samples.append((time.time() - start, status_kib(top.pid, "VmRSS")))
        cpu = cpu_secs(top.pid)
        hwm = status_kib(top.pid, "VmHWM")
    finally:
        for p in procs:
            p.kill()
        if top:
            top.terminate()
            top.wait(10)
        subprocess.run(["ip", "netns", "del", NS])
    per_min = {}
    for t, rss in samples:
        per_min[int(t // 60) + 1] = rss
    warm = [rss for t, rss in samples if t >= 120]
    growth = (max(warm) - min(warm)) / 1024 if warm else float("nan")
    lines = [
        f"- duration: {secs / 60:.0f} min; tcptop CPU {cpu:.1f} s ({100 * cpu / secs:.2f}% of a core)",
        f"- RSS at the end of each minute (MiB): " +
        ", ".join(f"{m}: {rss / 1024:.1f}" for m, rss in sorted(per_min.items())),
        f"- after the 2-minute warm-up: min {min(warm) / 1024:.1f}, max {max(warm) / 1024:.1f} MiB "
        f"(spread {growth:.1f} MiB); peak (VmHWM) {hwm / 1024:.1f} MiB" if warm else "- too short for a verdict",
    ]
    print("\n".join(lines))


if __name__ == "__main__":
    main()
