#!/usr/bin/env python3
"""--metrics-listen with many connections: tcptop's CPU and the scrape
latency at each --metrics-level.

N idle loopback connections (2N sockets, each a row of tcptop's table) are
held by tcptop-testpeer hold-self processes (at most 4,000 pairs each: the
descriptor limit) before tcptop starts. Each arm runs tcptop headless at a
1 s interval with the metrics on 127.0.0.1; after a warm-up, its CPU time
(all threads, schedstat) is measured over --secs without scrapes (the
aggregation alone), then over --secs with one scrape a second, alternately
OpenMetrics and the Prometheus text format (each scrape then finds a new
snapshot: it includes the encoding, as Prometheus's scrapes every 15 s
would). Scrape latency: connect to the last byte, per format (median and
max). The reference arm is batch jsonl to /dev/null without metrics
(scripts/bench-refresh.py's `ebpf` arm).

Arms: process, remote, connection (--metrics-max-series 2000: most
connections in the overflow series), connection-all (--metrics-max-series
25000: a series each), and batch-jsonl.

Usage (root): scripts/bench-metrics.py [--conns 10000] [--secs 15]
              [--arms process,remote,connection,connection-all,batch-jsonl]
              [--bin DIR]  (default: $CARGO_TARGET_DIR or target, /release)
Build first: cargo build --release -p tcptop -p tcptop-testpeer
"""
import argparse
import os
import socket
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench import cpu_secs, hold_peers as hold, rss_kib  # noqa: E402  (shared accounting, peers)

OM = "application/openmetrics-text; version=1.0.0"


def scrape(addr, accept):
    """(seconds from connect to the last byte, body bytes)."""
    host, port = addr.rsplit(":", 1)
    t0 = time.perf_counter()
    s = socket.create_connection((host, int(port)), timeout=30)
    req = f"GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n"
    if accept:
        req += f"Accept: {accept}\r\n"
    s.sendall((req + "\r\n").encode())
    n = 0
    head = b""
    while True:
        b = s.recv(1 << 20)
        if not b:
            break
        if n == 0 and not head:
            head = b[:64]
        n += len(b)
    s.close()
    if not head.startswith(b"HTTP/1.1 200"):
        sys.exit(f"scrape failed: {head!r}")
    return time.perf_counter() - t0, n


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def run_arm(tcptop, arm, secs):
    addr = f"127.0.0.1:{free_port()}"
    if arm == "batch-jsonl":
        cmd = [tcptop, "--batch", "--format", "jsonl", "--interval", "1"]
    else:
        level = "connection" if arm.startswith("connection") else arm
        cmd = [tcptop, "--headless", "--interval", "1", "--metrics-listen", addr,
               "--metrics-level", level]
        if arm == "connection-all":
            cmd += ["--metrics-max-series", "25000"]
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    line = p.stderr.readline()
    while line.startswith(("tcptop: warning:", "tcptop: notice:")):
        line = p.stderr.readline()
    if not line.startswith("tcptop: attached"):
        p.kill()
        sys.exit(f"{arm}: tcptop did not start: {line}")
    hooks = line.split("hooks: ", 1)[1].split(")", 1)[0]
    time.sleep(4)  # start-up, adoption, the first snapshots
    c0, t0 = cpu_secs(p.pid), time.monotonic()
    time.sleep(secs)
    quiet = (cpu_secs(p.pid) - c0) / (time.monotonic() - t0)
    res = {"arm": arm, "hooks": hooks, "quiet": quiet}
    if arm != "batch-jsonl":
        lat = {OM: [], None: []}
        size = {}
        c0, t0 = cpu_secs(p.pid), time.monotonic()
        k = 0
        while time.monotonic() - t0 < secs:
            accept = OM if k % 2 == 0 else None
            t, n = scrape(addr, accept)
            lat[accept].append(t)
            size[accept] = n
            k += 1
            time.sleep(max(0.0, t0 + k - time.monotonic()))
        res["scraped"] = (cpu_secs(p.pid) - c0) / (time.monotonic() - t0)
        res["lat"] = lat
        res["size"] = size
    res["peak_kib"] = rss_kib(p.pid, "VmHWM")
    p.terminate()
    p.wait(timeout=20)
    return res


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--conns", type=int, default=10_000)
    ap.add_argument("--secs", type=float, default=15.0)
    ap.add_argument("--arms", default="process,remote,connection,connection-all,batch-jsonl")
    target = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
    ap.add_argument("--bin", default=os.path.join(target, "release"))
    a = ap.parse_args()
    tcptop = os.path.join(a.bin, "tcptop")
    peer = os.path.join(a.bin, "tcptop-testpeer")
    held = hold(peer, a.conns, 31123)
    load0 = os.getloadavg()
    print(f"{a.conns:,} idle connections ({2 * a.conns:,} sockets), {os.uname().release}, "
          f"{os.cpu_count()} CPUs, load average at start {load0[0]:.2f}")
    print("| arm | hooks | CPU, no scrape | CPU, 1 scrape/s | scrape OpenMetrics median (max) "
          "| scrape text median (max) | body OM / text | peak RSS |")
    print("|---|---|---|---|---|---|---|---|")
    try:
        for arm in a.arms.split(","):
            r = run_arm(tcptop, arm, a.secs)
            if arm == "batch-jsonl":
                print(f"| {arm} (reference, no metrics) | {r['hooks']} | {r['quiet'] * 100:.2f}% "
                      f"| | | | | {r['peak_kib'] / 1024:.1f} MiB |")
                continue
            ms = lambda v: f"{statistics.median(v) * 1000:.1f} ms ({max(v) * 1000:.1f})"
            print(f"| {arm} | {r['hooks']} | {r['quiet'] * 100:.2f}% | {r['scraped'] * 100:.2f}% "
                  f"| {ms(r['lat'][OM])} | {ms(r['lat'][None])} "
                  f"| {r['size'][OM] / 1024:.0f} / {r['size'][None] / 1024:.0f} KiB "
                  f"| {r['peak_kib'] / 1024:.1f} MiB |", flush=True)
    finally:
        for p in held:
            p.stdin.close()
            p.wait(timeout=30)
    load1 = os.getloadavg()
    print(f"load average at the end {load1[0]:.2f}")


if __name__ == "__main__":
    main()
