#!/usr/bin/env python3
"""Overhead benchmark: loopback TCP with and without tcptop attached.

Loads (each for --secs seconds, loopback only, bounded in time):
  bulk   one TCP stream, 128 KiB writes: throughput (Gbit/s)
  small  one TCP stream, 64-byte writes: time per send call (ns); the
         difference with tcptop attached is the in-kernel hook cost per call
         (send side; the receiver's recv hook runs on the other core)
  conn   connections one after another inside one process (tcptop-testpeer
         churn-self: connect, accept, 64 bytes each way, the server side
         closing first): its CPU time per connection, pinned to one CPU
         while tcptop runs on the other; the difference with tcptop attached
         is the in-kernel cost per connection (every hook a connection
         fires, both ends), paired with the mean of the unmonitored runs
         before and after; tcptop's own CPU per connection is reported too
  udp    one process sending 64-byte datagrams to itself (tcptop-testpeer
         udp-ping-self: an unconnected sendto, then recvfrom, per round
         trip): its CPU time per round trip, pinned like conn; the
         difference with tcptop attached is the in-kernel cost of one UDP
         send call plus one receive call, both with a peer address

Runs are interleaved A/B (none, tcptop, none, tcptop, ...) so machine drift
cancels; each pair gives a ratio, and the report shows medians over --rounds.
While tcptop runs (batch jsonl to /dev/null at a 1 s interval) its CPU time
(all threads, from /proc/PID/task/*/schedstat) and peak RSS (VmHWM) are measured.

Also: tcptop's CPU with --idle-conns idle loopback connections open (no
traffic): the cost that grows with the size of its table.

Usage (root): scripts/bench.py [--rounds 5] [--secs 5] [--idle-conns 10000] [--markdown]
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


def group_cpu_secs(pid):
    """CPU time of the whole process, threads that have ended included
    (/proc/<pid>/stat utime + stime, clock-tick precision): for a total
    over a life in which threads come and go (cpu_secs misses those)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return 0.0
    # Fields 14 and 15 of the line; the split began at field 3.
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_secs(pid):
    """CPU time of all the process's live threads, ns precision (schedstat);
    what is left of a thread that just ended is not counted."""
    total = 0
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except FileNotFoundError:
        return 0.0
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                total += int(f.read().split()[0])
        except (FileNotFoundError, ProcessLookupError):
            pass
    return total / 1e9


def rss_kib(pid, field):
    """VmHWM (peak) or VmRSS (now) of a process, KiB."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def pinned(cpu):
    """preexec_fn that pins the child to one CPU (None: leave it)."""
    if cpu is None:
        return None
    return lambda: os.sched_setaffinity(0, {cpu})


# The per-connection load runs on one CPU and tcptop on another, so that
# neither's caches or time slices land in the other's numbers.
TWO_CPUS = len(os.sched_getaffinity(0)) >= 2
LOAD_CPU, MON_CPU = (1, 0) if TWO_CPUS else (None, None)


def run_load(kind, secs):
    global PORT
    PORT += 1
    if kind in ("conn", "udp"):
        role = "churn-self" if kind == "conn" else "udp-ping-self"
        out = subprocess.run(
            [PEER, role, "--listen", f"127.0.0.1:{PORT}", "--secs", str(secs)],
            stdout=subprocess.PIPE, text=True, timeout=secs + 30, check=True,
            preexec_fn=pinned(LOAD_CPU)).stdout
        return json.loads(out.splitlines()[-1])
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


# The per-connection load also runs beside tcptop with its programs
# attached but returning at once (TCPTOP_BENCH_NOOP=1): what the kernel
# charges for running the hooks at all, the floor under tcptop's cost;
# with and without the UDP programs (--tcp: the cgroup sendmsg/recvmsg
# hooks; the send/receive tracepoints are shared with TCP).
NOOP = {"TCPTOP_BENCH_NOOP": "1"}
FLOORS = {"every hook attached, programs returning at once": [],
          "the same without the UDP programs": ["--tcp"]}


class Monitor:
    def __init__(self, cpu=None, args=(), env=None):
        self.p = subprocess.Popen(
            [TCPTOP, "--batch", "--format", "jsonl", "--interval", "1", *args],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
            env={**os.environ, **(env or {})}, preexec_fn=pinned(cpu))
        line = self.p.stderr.readline()
        while line.startswith("tcptop: warning:"):
            line = self.p.stderr.readline()
        if not line.startswith("tcptop: attached"):
            sys.exit(f"tcptop did not start: {line}")
        self.cpu0 = cpu_secs(self.p.pid)
        self.t0 = time.monotonic()

    def stop(self):
        """(share of one core since start, (VmHWM, VmRSS) KiB, CPU seconds)."""
        cpu = cpu_secs(self.p.pid) - self.cpu0
        wall = time.monotonic() - self.t0
        rss = (rss_kib(self.p.pid, "VmHWM"), rss_kib(self.p.pid, "VmRSS"))
        self.p.send_signal(signal.SIGTERM)
        self.p.wait(timeout=10)
        return cpu / wall, rss, cpu


def fd_room(n):
    """Raises the soft descriptor limit for `n` connections (2n sockets) as
    far as the hard limit allows; returns how many fit."""
    import resource
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = 2 * n + 256
    if hard != resource.RLIM_INFINITY and hard < want:
        want = hard
    if soft != resource.RLIM_INFINITY and soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    return min(n, (want - 256) // 2)


def hold_peers(peer, n, port):
    """`n` idle loopback connections (2n sockets, each a row of tcptop's
    table) held by `peer` (tcptop-testpeer) hold-self processes of at most
    4,000 pairs each (descriptor limits), listening from 127.0.0.1:`port`
    up. Returns the processes: closing one's stdin ends it."""
    procs, left, i = [], n, 0
    while left > 0:
        pairs = min(left, 4000)
        p = subprocess.Popen([peer, "hold-self", "--listen", f"127.0.0.1:{port + i}",
                              "--pairs", str(pairs)],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        line = p.stdout.readline()
        if '"holding"' not in line:
            sys.exit(f"hold-self did not hold: {line}")
        procs.append(p)
        left -= pairs
        i += 1
    return procs


def hold_connections(n, port):
    """Opens `n` loopback connections (2n sockets) and returns them, idle."""
    import socket
    ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    # Below the ephemeral range (32768-60999), which the clients' ends and
    # their TIME_WAIT remains take.
    lport = 30000 + port % 1000
    ls.bind(("127.0.0.1", lport))
    ls.listen(4096)
    held = [ls]
    for _ in range(n):
        c = socket.create_connection(("127.0.0.1", lport))
        a, _ = ls.accept()
        held += [c, a]
    return held


def idle_table_cpu(n, secs):
    """tcptop's CPU (share of one core) while `n` idle connections it saw
    open are in its table: the cost that grows with the table (each
    snapshot walks the connection map and refreshes every record from its
    socket), with no traffic at all."""
    global PORT
    PORT += 1
    m = Monitor()
    held = []
    try:
        held = hold_connections(n, PORT)
        time.sleep(2)  # the first snapshots after the connections open
        c0, t0 = cpu_secs(m.p.pid), time.monotonic()
        time.sleep(secs)
        return (cpu_secs(m.p.pid) - c0) / (time.monotonic() - t0)
    finally:
        m.stop()
        for s in held:
            s.close()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--secs", type=float, default=5.0)
    ap.add_argument("--idle-conns", type=int, default=10_000,
                    help="idle connections held open for the table-size cost (0: skip)")
    ap.add_argument("--markdown", action="store_true")
    a = ap.parse_args()
    if not 0 <= a.idle_conns <= 30_000:
        ap.error("--idle-conns: 0 to 30000 (loopback ports and the connection map's 65,536 slots)")
    if os.geteuid() != 0:
        sys.exit("bench.py needs root (tcptop loads eBPF programs)")
    # The switches (TCPTOP_BENCH_NOOP, TCPTOP_BENCH_SKIP) are compiled out of
    # release builds without this feature.
    subprocess.run(["cargo", "build", "--release", "--quiet", "--features", "tcptop/bench-switches"],
                   cwd=ROOT, check=True)

    kinds = ("bulk", "small", "conn", "udp")
    keys = {"bulk": "gbit_s", "small": "ns_per_call", "conn": "cpu_ns_per_conn",
            "udp": "cpu_ns_per_pair"}
    res = {k: {"none": [], "tcptop": [], "ratio": []} for k in kinds}
    mon_cpu, mon_rss, idle_cpu = [], [], []
    conn_added, conn_own = [], []
    floor_added = {f: [] for f in FLOORS}
    # tcptop's own cost with no load: the floor of its CPU use.
    m = Monitor()
    time.sleep(a.secs)
    c, _, _ = m.stop()
    idle_cpu.append(c)
    for r in range(a.rounds):
        for kind in kinds:
            key = keys[kind]
            before = run_load(kind, a.secs)
            m = Monitor(MON_CPU if kind in ("conn", "udp") else None)
            mon = run_load(kind, a.secs)
            c, rss, secs = m.stop()
            if kind == "conn":
                # Paired with the mean of the unmonitored runs on both sides.
                after = run_load(kind, a.secs)
                base = (before[key] + after[key]) / 2
                conn_added.append(mon[key] - base)
                conn_own.append(secs * 1e9 / mon["conns"])
                for name, args in FLOORS.items():
                    prev = after
                    fm = Monitor(MON_CPU, args, NOOP)
                    floor = run_load(kind, a.secs)
                    fm.stop()
                    after = run_load(kind, a.secs)
                    floor_added[name].append(floor[key] - (prev[key] + after[key]) / 2)
            else:
                base = before[key]
                mon_cpu.append(c)
                mon_rss.append(rss)
            res[kind]["none"].append(base)
            res[kind]["tcptop"].append(mon[key])
            res[kind]["ratio"].append(mon[key] / base)
            print(f"round {r + 1} {kind}: none {base:.3f} tcptop {mon[key]:.3f} "
                  f"tcptop cpu {c * 100:.2f}% rss peak/now {rss[0]}/{rss[1]} KiB", file=sys.stderr)

    med = statistics.median
    bulk, small, conn, udp = res["bulk"], res["small"], res["conn"], res["udp"]
    added_ns = [t - n for t, n in zip(small["tcptop"], small["none"])]
    udp_added = [t - n for t, n in zip(udp["tcptop"], udp["none"])]
    lines = [
        f"rounds: {a.rounds} x {a.secs:g} s per load, interleaved A/B; medians",
        f"bulk throughput, no monitor: {med(bulk['none']):.2f} Gbit/s",
        f"bulk throughput, tcptop attached: {med(bulk['tcptop']):.2f} Gbit/s",
        f"bulk throughput ratio (paired): {med(bulk['ratio']) * 100:.1f}% "
        f"(min {min(bulk['ratio']) * 100:.1f}%, max {max(bulk['ratio']) * 100:.1f}%)",
        f"64-byte send call, no monitor: {med(small['none']):.0f} ns",
        f"64-byte send call, tcptop attached: {med(small['tcptop']):.0f} ns",
        f"added per send call (paired): {med(added_ns):.0f} ns",
        f"UDP round trip (64-byte unconnected sendto + recvfrom, one process), no monitor: "
        f"{med(udp['none']):.0f} ns of CPU",
        f"added per UDP round trip (paired): {med(udp_added):.0f} ns "
        f"(min {min(udp_added):.0f}, max {max(udp_added):.0f}), i.e. "
        f"{med(udp_added) / 2:.0f} ns per call",
        f"loopback connection (one process, both ends, 64 bytes each way), no monitor: "
        f"{med(conn['none']) / 1000:.2f} µs of CPU",
        f"added per connection in the kernel (paired){' (load and tcptop on separate CPUs)' if TWO_CPUS else ''}: "
        f"{med(conn_added) / 1000:.2f} µs "
        f"(min {min(conn_added) / 1000:.2f}, max {max(conn_added) / 1000:.2f})",
        f"tcptop's own CPU per connection (two closed records, jsonl): "
        f"{med(conn_own) / 1000:.2f} µs",
        f"connection throughput kept at the CPU cost above: "
        f"{med(conn['none']) / (med(conn['none']) + med(conn_added) + med(conn_own)) * 100:.1f}%",
        *(f"floor, {name} ({' '.join(['TCPTOP_BENCH_NOOP=1', *args])}): added per connection "
          f"{med(floor_added[name]) / 1000:.2f} µs, i.e. "
          f"{med(conn['none']) / (med(conn['none']) + med(floor_added[name])) * 100:.1f}% kept"
          for name, args in FLOORS.items()),
        f"tcptop CPU under load: {med(mon_cpu) * 100:.2f}% of one core "
        f"(max {max(mon_cpu) * 100:.2f}%)",
        f"tcptop CPU idle machine: {med(idle_cpu) * 100:.2f}% of one core",

        f"tcptop RSS at the end of a load: {max(r[1] for r in mon_rss) / 1024:.1f} MiB "
        f"(peak {max(r[0] for r in mon_rss) / 1024:.1f} MiB, during start-up: "
        f"parsing the kernel's BTF to try the fentry set)",
    ]
    # Last: its client ends take thousands of ephemeral ports into
    # TIME_WAIT, which the loads' fixed ports could collide with.
    idle_conns = fd_room(a.idle_conns)
    if idle_conns:
        idle_table = [idle_table_cpu(idle_conns, a.secs) for _ in range(3)]
        lines.append(
            f"tcptop CPU with {idle_conns:,} idle connections open ({2 * idle_conns:,} "
            f"sockets, no traffic; each 1 s snapshot refreshes every record from its socket, "
            f"walks the connection map and writes every row as a JSON line): "
            f"{med(idle_table) * 100:.2f}% of one core "
            f"(3 runs, max {max(idle_table) * 100:.2f}%)")
    if a.markdown:
        print("\n".join(f"- {l}" for l in lines))
    else:
        print("\n".join(lines))


if __name__ == "__main__":
    main()
