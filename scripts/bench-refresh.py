#!/usr/bin/env python3
"""tcptop's own CPU with many idle connections, by how live connections are
refreshed: the connection map's iterator (eBPF), the kernel's socket
diagnostics where the iterator is refused (eBPF + diag), and the
unprivileged mode (diag only, `--source diag`).

N idle loopback connections (2N sockets, N listener-side and N
client-side rows) are opened before tcptop starts; tcptop runs in batch
jsonl mode at a 1 s interval with its output to /dev/null; its CPU time
(all threads, schedstat) over --secs after a warm-up is the number, as a
share of one core. Each arm runs --runs times; the median is reported.

Arms:
  ebpf         the eBPF mode as this host gives it (its `hooks` is printed:
               `+diag` where the kernel refuses the map iterator)
  ebpf-diag    the eBPF mode with the map and TCP iterators treated as
               refused (TCPTOP_TEST_REFUSE=iter): needs a binary with the
               test switch, `cargo build --release --features
               tcptop/bench-switches` (as the other bench scripts build);
               skipped otherwise
  unprivileged `--source diag` as nobody (setpriv, no capability)
  unprivileged-tui  the same in the interactive display (a 200x50 tmux
               pane, default sort), as a user watching it pays it

Usage (root): scripts/bench-refresh.py [--conns 10000] [--runs 3] [--secs 10]
              [--bin PATH] [--arms ebpf,ebpf-diag,unprivileged,unprivileged-tui] [--quiet-output]
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
from bench import cpu_secs, hold_peers  # noqa: E402  (the same accounting and peers)


def hold(n, port):
    """`n` idle loopback connections held by tcptop-testpeer processes."""
    return hold_peers(os.path.join(ROOT, "target", "release", "tcptop-testpeer"), n, port)


def run_tui(binary, secs):
    """`--source diag` as nobody in a tmux pane; its CPU share after a warm-up."""
    sock = ["tmux", "-L", "tcptop-refresh"]
    subprocess.run([*sock, "kill-server"], stderr=subprocess.DEVNULL)
    cmd = ("exec setpriv --reuid=nobody --regid=nogroup --clear-groups --inh-caps=-all "
           f"{binary} --interval 1 --source diag")
    subprocess.run([*sock, "new-session", "-d", "-s", "s", "-x", "200", "-y", "50", cmd],
                   check=True)
    pid = int(subprocess.run([*sock, "list-panes", "-t", "s", "-F", "#{pane_pid}"],
                             check=True, capture_output=True, text=True).stdout.split()[0])
    time.sleep(3)  # start-up, the first dumps
    c0, t0 = cpu_secs(pid), time.monotonic()
    time.sleep(secs)
    share = (cpu_secs(pid) - c0) / (time.monotonic() - t0)
    screen = subprocess.run([*sock, "capture-pane", "-p", "-t", "s"],
                            capture_output=True, text=True).stdout
    subprocess.run([*sock, "send-keys", "-t", "s", "q"])
    deadline = time.monotonic() + 30
    while os.path.exists(f"/proc/{pid}") and time.monotonic() < deadline:
        time.sleep(0.1)
    subprocess.run([*sock, "kill-server"], stderr=subprocess.DEVNULL)
    if "unprivileged" not in screen:
        sys.exit(f"unprivileged-tui: the display did not show the mode's notice:\n{screen}")
    return share, "diag (display)"


def run_arm(binary, arm, secs, extra):
    if arm == "unprivileged-tui":
        return run_tui(binary, secs)
    cmd = [binary, "--batch", "--format", "jsonl", "--interval", "1", *extra]
    env = dict(os.environ)
    if arm == "ebpf-diag":
        env["TCPTOP_TEST_REFUSE"] = "iter"
    if arm == "unprivileged":
        cmd = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups",
               "--inh-caps=-all", *cmd, "--source", "diag"]
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                         text=True, env=env)
    said = []
    line = p.stderr.readline()
    while line.startswith(("tcptop: warning:", "tcptop: notice:")):
        said.append(line.strip())
        line = p.stderr.readline()
    if not line.startswith(("tcptop: attached", "tcptop: started")):
        p.kill()
        sys.exit(f"{arm}: tcptop did not start: {line}")
    hooks = line.split("hooks: ", 1)[1].split(")", 1)[0]
    if arm == "ebpf-diag" and not any("TCPTOP_TEST_REFUSE" in s or "refused" in s for s in said):
        p.kill()
        return None, hooks
    time.sleep(3)  # the first snapshots: adoption, first dumps
    c0, t0 = cpu_secs(p.pid), time.monotonic()
    time.sleep(secs)
    share = (cpu_secs(p.pid) - c0) / (time.monotonic() - t0)
    p.terminate()
    p.wait(timeout=10)
    return share, hooks


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--conns", type=int, default=10_000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--secs", type=float, default=10.0)
    ap.add_argument("--bin", default=os.path.join(ROOT, "target", "release", "tcptop"))
    ap.add_argument("--arms", default="ebpf,ebpf-diag,unprivileged")
    ap.add_argument("--quiet-output", action="store_true",
                    help="add --port 1: every connection collected and tabled, none written "
                         "(collection alone, as the interactive display pays it)")
    a = ap.parse_args()
    if not 0 < a.conns <= 30_000:
        ap.error("--conns: 1 to 30000 (loopback ports)")
    held = hold(a.conns, 30123)
    print(f"{a.conns:,} idle connections ({2 * a.conns:,} sockets), "
          f"{os.uname().release}, {a.bin}"
          + (", output filtered away (--port 1)" if a.quiet_output else ", jsonl to /dev/null"))
    try:
        for arm in a.arms.split(","):
            shares, hooks = [], "?"
            for _ in range(a.runs):
                share, hooks = run_arm(a.bin, arm, a.secs,
                                       ["--port", "1"] if a.quiet_output else [])
                if share is None:
                    break
                shares.append(share)
            if not shares:
                print(f"| {arm} | (skipped: this binary ignores TCPTOP_TEST_REFUSE) | |")
                continue
            print(f"| {arm} | {hooks} | {statistics.median(shares) * 100:.2f}% "
                  f"(runs: {', '.join(f'{s * 100:.2f}' for s in shares)}) |")
    finally:
        for p in held:
            p.stdin.close()
            p.wait(timeout=30)


if __name__ == "__main__":
    main()
