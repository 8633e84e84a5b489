#!/usr/bin/env python3
"""tcptop's start-up: time to its programs attached (the "attached" line on
stderr) and to the end of a one-snapshot run, and its peak RSS (VmHWM, from
/usr/bin/time's maximum resident set), over --runs runs of each binary given,
alternating between them so that machine drift falls on all alike.

Each run: `tcptop --batch --format jsonl -n 1 -i 0.1 --port 1` (one
snapshot 0.1 s after attach, no rows written: start-up and collection, not
output). Medians, min and max per binary.

Usage (root): scripts/bench-startup.py [--runs 10] BINARY...
e.g. scripts/bench-startup.py /tmp/before/tcptop target/release/tcptop
"""
import argparse
import statistics
import subprocess
import sys
import time


def one(binary):
    t0 = time.monotonic()
    p = subprocess.Popen(["/usr/bin/time", "-f", "MAXRSS %M", binary, "--batch", "--format",
                          "jsonl", "-n", "1", "-i", "0.1", "--port", "1"],
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    attached, rss = None, None
    for line in p.stderr:
        if attached is None and line.startswith(("tcptop: attached", "tcptop: started")):
            attached = time.monotonic() - t0
        if line.startswith("MAXRSS"):
            rss = int(line.split()[1]) / 1024
    p.wait(timeout=60)
    if attached is None or rss is None or p.returncode != 0:
        sys.exit(f"{binary}: did not start (exit {p.returncode})")
    return attached * 1000, (time.monotonic() - t0) * 1000, rss


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("binaries", nargs="+")
    a = ap.parse_args()
    if not 1 <= a.runs <= 100:
        ap.error("--runs: 1 to 100")
    results = {b: [] for b in a.binaries}
    for _ in range(a.runs):
        for b in a.binaries:
            results[b].append(one(b))
    print("| binary | to attached, ms | whole run, ms | peak RSS, MiB |")
    print("|---|---|---|---|")
    for b, r in results.items():
        cols = []
        for i, fmt in ((0, "{:.0f}"), (1, "{:.0f}"), (2, "{:.1f}")):
            v = [x[i] for x in r]
            cols.append(f"{fmt.format(statistics.median(v))} ({fmt.format(min(v))}–{fmt.format(max(v))})")
        print(f"| {b} | " + " | ".join(cols) + " |")


if __name__ == "__main__":
    main()
