#!/usr/bin/env python3
"""Side-by-side overhead: tcptop and the peer tools on the same loopback loads.

Monitors (each in its non-interactive mode, output to /dev/null):
  tcptop     tcptop --batch --format jsonl --interval 1
  tcptop-tcp the same with --tcp (no UDP programs: what UDP flows cost)
  tcptop-noop tcptop with TCPTOP_BENCH_NOOP=1: every program attached but
             returning at once (the floor: what the kernel charges for
             running the hooks at all, before tcptop does any work)
  tcptop-noop-tcp the floor with --tcp: the TCP hooks alone (with the
             above, splits the gap into TCP work, TCP dispatch and the UDP
             programs' per-packet dispatch)
  tcptop-skip-user, tcptop-skip-ring, tcptop-skip-calls, tcptop-skip-ring-calls
             tcptop with TCPTOP_BENCH_SKIP: user space only empties the ring
             buffer; teardowns send no final record; send/receive calls are
             not counted; neither (what is left: a record inserted at each
             socket's birth and deleted at its teardown). What each part of
             tcptop's work costs the load; not in the default tool list
  tcplife    tcplife (Debian's libbpf-tools; bpfcc-tools' tcplife-bpfcc if
             that is all apt has), the eBPF reference
  nethogs    nethogs -t -a lo
  iftop      iftop -t -n -N -P -i lo
  bandwhich  bandwhich --raw -n -i lo (crates.io, built into target/peer-tools)

Loads (loopback only; each bounded by --secs and a timeout):
  bulk   iperf3 -P 4 (4 TCP streams, one process each side): Gbit/s
  fixed  connection churn at --rate connections/s (python client pool, each
         connection a 64-byte request and reply; the server closes first)
  max    the same churn as fast as it goes: connections/s
  bytes  one connection carrying 100,000,000 bytes (tcptop-testpeer) and what
         each monitor reports for it (byte-count error)

Per round and load the runs go none, A, none, B, none, ... none, with the
tool order rotated each round; each monitored run is compared with the mean
of the two unmonitored runs beside it, so machine drift cancels. Reported:
medians over --rounds of the paired throughput ratio, the CPU time of the
load's own processes per unit of work (getrusage via wait4: in-kernel hook
costs, and packet capture taps, are charged to them), the monitor's CPU over
the load (all threads, /proc/PID/task/*/schedstat) and its peak RSS (VmHWM).

Usage (root): scripts/bench-peers.py [--rounds 3] [--secs 10] [--rate 1000]
    [--tools tcptop,tcptop-tcp,tcptop-noop,tcptop-noop-tcp,tcplife,nethogs,iftop,bandwhich]
    (also tcptop-skip-user, -ring, -calls, -ring-calls)
    [--loads bulk,fixed,max,bytes]
    [--markdown] [--no-install]
Installs what is missing (apt: iperf3 nethogs iftop libbpf-tools; cargo:
bandwhich), builds tcptop (release), and writes raw results and the byte
runs' monitor output to target/bench-peers/.
"""
import argparse
import ctypes
import errno
import glob
import json
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REL = os.path.join(ROOT, "target", "release")
TCPTOP = os.path.join(REL, "tcptop")
PEER = os.path.join(REL, "tcptop-testpeer")
TOOLS_ROOT = os.path.join(ROOT, "target", "peer-tools")
BANDWHICH = os.path.join(TOOLS_ROOT, "bin", "bandwhich")
BANDWHICH_VERSION = "0.23.1"
OUT = os.path.join(ROOT, "target", "bench-peers")
ALL_TOOLS = ["tcptop", "tcptop-tcp", "tcptop-noop", "tcptop-noop-tcp", "tcplife", "nethogs",
             "iftop", "bandwhich"]
# Parts of tcptop's work left out (TCPTOP_BENCH_SKIP), by tool name.
SKIP_TOOLS = {"tcptop-skip-user": "user", "tcptop-skip-ring": "ring",
              "tcptop-skip-calls": "calls", "tcptop-skip-ring-calls": "ring,calls"}
# Count nothing (or not everything) by design: no byte-count run.
NOOP_TOOLS = ("tcptop-noop", "tcptop-noop-tcp") + tuple(SKIP_TOOLS)


def is_tcptop(tool):
    return tool in ("tcptop", "tcptop-tcp") + NOOP_TOOLS
ALL_LOADS = ["bulk", "fixed", "max", "bytes"]
BYTES = 100_000_000
SETTLE = 1.5  # seconds between a monitor being up and the load starting

def _port_base():
    """Ports for our servers: just below the ephemeral range, so that no
    client socket (or its TIME_WAIT) of an earlier run holds one."""
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            low = int(f.read().split()[0])
    except (OSError, ValueError):
        low = 32768
    return max(1024, low - 2000)


PORT = [_port_base()]  # last port used; a new free one per run

# Every process we start, so that any exit path can end them.
LIVE = set()


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def next_port():
    while True:
        PORT[0] += 1
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
                s.bind(("127.0.0.1", PORT[0]))
        except OSError:
            continue
        return PORT[0]


# ---------------------------------------------------------------- processes

def spawn(cmd, **kw):
    """Starts cmd in its own session (so its process group can be ended)."""
    p = subprocess.Popen(cmd, start_new_session=True, **kw)
    LIVE.add(p)
    return p


def end(p, first=signal.SIGTERM, grace=5.0):
    """Ends p and its process group: `first`, then SIGTERM, then SIGKILL."""
    if p is None:
        return
    for step, (sig, wait) in enumerate(((first, grace), (signal.SIGTERM, 3.0),
                                        (signal.SIGKILL, 5.0))):
        if p.poll() is not None:
            break
        try:
            if step == 0:
                p.send_signal(sig)  # the process alone: its clean exit
            else:
                os.killpg(p.pid, sig)
        except ProcessLookupError:
            break
        try:
            p.wait(timeout=wait)
        except subprocess.TimeoutExpired:
            pass
    # Leftovers of the group (forked load workers): never outlive the run.
    try:
        os.killpg(p.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    LIVE.discard(p)


def wait_rusage(p, timeout):
    """Waits for p (polling wait4) and returns (exit status, CPU seconds of p
    and every descendant it reaped). Ends p on timeout."""
    deadline = time.monotonic() + timeout
    while True:
        pid, status, ru = os.wait4(p.pid, os.WNOHANG)
        if pid == p.pid:
            p.returncode = os.waitstatus_to_exitcode(status)
            LIVE.discard(p)
            return p.returncode, ru.ru_utime + ru.ru_stime
        if time.monotonic() > deadline:
            end(p)
            raise RuntimeError(f"{p.args[0]} did not finish in {timeout:.0f} s")
        time.sleep(0.02)


def wait_listen(port, timeout=10.0):
    """Waits until something listens on TCP `port` (from /proc/net/tcp*)."""
    hexport = f":{port:04X} "
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for f in ("/proc/net/tcp", "/proc/net/tcp6"):
            with open(f) as fh:
                for line in fh:
                    parts = line.split()
                    if len(parts) > 3 and hexport in parts[1] + " " and parts[3] == "0A":
                        return
        time.sleep(0.02)
    raise RuntimeError(f"nothing listens on port {port}")


def cpu_secs(pid):
    """CPU time of all the process's live threads, ns precision (schedstat)."""
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


def status_kib(pid, field):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except FileNotFoundError:
        pass
    return 0


# ------------------------------------------------------------- eBPF check

_NR_BPF = {"x86_64": 321, "aarch64": 280}.get(platform.machine())
_libc = ctypes.CDLL(None, use_errno=True)


def bpf_prog_ids(pid):
    """IDs of the eBPF programs a process holds (its prog and link fds)."""
    ids = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            with open(f"/proc/{pid}/fdinfo/{fd}") as f:
                for line in f:
                    if line.startswith("prog_id:"):
                        ids.add(int(line.split()[1]))
        except (FileNotFoundError, ProcessLookupError):
            pass
    return ids


def bpf_prog_loaded(prog_id):
    """True while the kernel still has program `prog_id` (BPF_PROG_GET_FD_BY_ID)."""
    if _NR_BPF is None:
        return False
    attr = ctypes.create_string_buffer(int(prog_id).to_bytes(4, "little") + bytes(12), 16)
    fd = _libc.syscall(_NR_BPF, 13, attr, ctypes.c_uint(16))
    if fd >= 0:
        os.close(fd)
        return True
    return ctypes.get_errno() != errno.ENOENT


def wait_progs_gone(ids, timeout=5.0):
    """A program is freed an RCU grace period after its last fd closes."""
    deadline = time.monotonic() + timeout
    left = set(ids)
    while left and time.monotonic() < deadline:
        left = {i for i in left if bpf_prog_loaded(i)}
        if left:
            time.sleep(0.05)
    return left


# ----------------------------------------------------------------- monitors

def tcplife_cmd():
    return [shutil.which("tcplife") or shutil.which("tcplife-bpfcc") or "tcplife"]


# cmd: the run under load (to /dev/null); bytes_extra: flags added for the
# byte-count run so that the tool prints totals; stop: the signal on which
# the tool exits cleanly and flushes its output; stdbuf: line-buffer its
# stdout when it goes to a file (C stdio tools).
TOOLS = {
    "tcptop": dict(cmd=lambda: [TCPTOP, "--batch", "--format", "jsonl", "--interval", "1"],
                   bytes_extra=[], stop=signal.SIGTERM, stdbuf=False),
    # The same with --tcp: no UDP programs, so what UDP flows cost shows.
    "tcptop-tcp": dict(cmd=lambda: [TCPTOP, "--batch", "--format", "jsonl", "--interval", "1",
                                    "--tcp"],
                       bytes_extra=[], stop=signal.SIGTERM, stdbuf=False),
    # Every program attached, none doing anything: the hooks' own cost.
    "tcptop-noop": dict(cmd=lambda: ["env", "TCPTOP_BENCH_NOOP=1", TCPTOP, "--batch", "--format",
                                     "jsonl", "--interval", "1"],
                        bytes_extra=[], stop=signal.SIGTERM, stdbuf=False),
    "tcptop-noop-tcp": dict(cmd=lambda: ["env", "TCPTOP_BENCH_NOOP=1", TCPTOP, "--batch",
                                         "--format", "jsonl", "--interval", "1", "--tcp"],
                            bytes_extra=[], stop=signal.SIGTERM, stdbuf=False),
    **{name: dict(cmd=lambda part=part: ["env", f"TCPTOP_BENCH_SKIP={part}", TCPTOP, "--batch",
                                         "--format", "jsonl", "--interval", "1"],
                  bytes_extra=[], stop=signal.SIGTERM, stdbuf=False)
       for name, part in SKIP_TOOLS.items()},
    "tcplife": dict(cmd=tcplife_cmd, bytes_extra=[], stop=signal.SIGINT, stdbuf=True),
    "nethogs": dict(cmd=lambda: ["nethogs", "-t", "-a", "lo"],
                    bytes_extra=["-v", "2"], stop=signal.SIGINT, stdbuf=True),
    # iftop -t reads keys from stdin: it gets an open pipe (at EOF it spins).
    "iftop": dict(cmd=lambda: ["iftop", "-t", "-n", "-N", "-P", "-i", "lo"],
                  bytes_extra=["-B"], stop=signal.SIGINT, stdbuf=True),
    "bandwhich": dict(cmd=lambda: [BANDWHICH, "--raw", "-n", "-i", "lo"],
                      bytes_extra=["-t"], stop=signal.SIGINT, stdbuf=False),
}

HOOKS = {}  # each tcptop row's hook set, from its start-up line
PROGS_CHECKED = {"runs": 0, "ids": 0, "left": set()}


class Monitor:
    def __init__(self, tool, out_path=None):
        spec = TOOLS[tool]
        self.tool = tool
        cmd = spec["cmd"]()
        if out_path:
            # Flags go before tcptop-style positional args; all peers take
            # options anywhere except nethogs, whose device comes last.
            cmd = cmd[:1] + spec["bytes_extra"] + cmd[1:]
            if spec["stdbuf"]:
                cmd = ["stdbuf", "-oL"] + cmd
        self.out = open(out_path, "w") if out_path else subprocess.DEVNULL
        self.err = tempfile.TemporaryFile(mode="w+")
        self.p = spawn(cmd, stdin=subprocess.PIPE, stdout=self.out, stderr=self.err)
        self.prog_ids = set()
        deadline = time.monotonic() + 30
        if is_tcptop(tool):
            while True:
                self.err.seek(0)
                text = self.err.read()
                if "tcptop: attached" in text:
                    m = re.search(r"hooks: ([\w+]+)", text)
                    HOOKS[tool] = m.group(1) if m else "?"
                    break
                if self.p.poll() is not None or time.monotonic() > deadline:
                    self.fail("did not attach")
                time.sleep(0.05)
        time.sleep(SETTLE)
        if self.p.poll() is not None:
            self.fail("exited at start")
        if is_tcptop(tool):
            self.prog_ids = bpf_prog_ids(self.p.pid)

    def fail(self, what):
        self.err.seek(0)
        tail = self.err.read()[-600:].strip()
        self.stop()
        raise RuntimeError(f"{self.tool} {what}: {tail}")

    def cpu(self):
        return cpu_secs(self.p.pid)

    def alive(self):
        return self.p.poll() is None

    def stop(self):
        """Ends the monitor; returns (VmHWM, VmRSS) in KiB as of just before."""
        rss = (status_kib(self.p.pid, "VmHWM"), status_kib(self.p.pid, "VmRSS"))
        end(self.p, TOOLS[self.tool]["stop"])
        if self.out is not subprocess.DEVNULL:
            self.out.close()
        self.err.close()
        if is_tcptop(self.tool):
            left = wait_progs_gone(self.prog_ids)
            PROGS_CHECKED["runs"] += 1
            PROGS_CHECKED["ids"] += len(self.prog_ids)
            PROGS_CHECKED["left"] |= left
            if left:
                log(f"WARNING: tcptop's programs {sorted(left)} still loaded after it exited")
        return rss


# -------------------------------------------------------------------- loads

def load_bulk(secs):
    port = next_port()
    srv = spawn(["iperf3", "-s", "-1", "-B", "127.0.0.1", "-p", str(port)],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_listen(port)
        with tempfile.TemporaryFile(mode="w+") as f:
            cli = spawn(["iperf3", "-c", "127.0.0.1", "-p", str(port), "-P", "4",
                         "-t", str(max(1, round(secs))), "-J"],
                        stdout=f, stderr=subprocess.DEVNULL)
            try:
                _, ccpu = wait_rusage(cli, secs + 30)
            finally:
                end(cli)
            f.seek(0)
            out = f.read()
        _, scpu = wait_rusage(srv, 15)
    finally:
        end(srv)
    res = json.loads(out)
    if "error" in res:
        raise RuntimeError(f"iperf3: {res['error']}")
    bps = res["end"]["sum_received"]["bits_per_second"]
    gbytes = res["end"]["sum_received"]["bytes"] / 1e9
    return {"value": bps / 1e9, "cpu": ccpu + scpu, "work": gbytes}


def load_churn(secs, rate):
    port = next_port()
    me = os.path.abspath(__file__)
    srv = spawn([sys.executable, me, "_churn-server", str(port), str(int(secs) + 30)],
                stdout=subprocess.DEVNULL)
    try:
        wait_listen(port)
        with tempfile.TemporaryFile(mode="w+") as f:
            cli = spawn([sys.executable, me, "_churn-client", str(port), str(rate), str(secs)],
                        stdout=f)
            try:
                _, ccpu = wait_rusage(cli, secs + 30)
            finally:
                end(cli)
            f.seek(0)
            out = f.read()
        srv.send_signal(signal.SIGTERM)
        _, scpu = wait_rusage(srv, 15)
    finally:
        end(srv)
    res = json.loads(out)
    if res["conns"] == 0:
        raise RuntimeError(f"churn made no connection: {res}")
    return {"value": res["rate"], "cpu": ccpu + scpu, "work": res["conns"],
            "errors": res["errors"]}


CHURN_WORKERS = 2
REQ = b"q" * 64
RESP = b"r" * 64


def churn_server(port, limit):
    """Accepts, reads the 64-byte request, answers, closes first; forked
    workers share the listening socket. Ends on SIGTERM or after `limit` s."""
    ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind(("127.0.0.1", port))
    ls.listen(4096)
    pids = []
    for _ in range(CHURN_WORKERS):
        pid = os.fork()
        if pid == 0:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            signal.alarm(limit)
            try:
                while True:
                    c, _ = ls.accept()
                    try:
                        c.recv(64)
                        c.sendall(RESP)
                    except OSError:
                        pass
                    c.close()
            finally:
                os._exit(0)
        pids.append(pid)
    ls.close()

    def stop(*_):
        for p in pids:
            try:
                os.kill(p, signal.SIGTERM)
            except ProcessLookupError:
                pass
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGALRM, stop)
    signal.alarm(limit)
    for p in pids:
        os.waitpid(p, 0)  # the workers' CPU is then counted in ours


def churn_client(port, rate, secs):
    """A pool of forked clients, each opening connections one after another
    (64-byte request, read the reply to EOF, close), at rate/len(pool) per
    second each, or as fast as they go with rate 0; for `secs` seconds.
    Prints {"conns", "errors", "secs", "rate"}."""
    r, w = os.pipe()
    t0 = time.monotonic() + 0.05
    deadline = t0 + secs
    per = rate / CHURN_WORKERS
    cap = int(rate * secs) if rate else 10_000_000
    pids = []
    for k in range(CHURN_WORKERS):
        pid = os.fork()
        if pid == 0:
            signal.alarm(int(secs) + 30)
            n = errs = i = 0
            while i < cap:
                now = time.monotonic()
                if per:
                    due = t0 + i / per
                    if due >= deadline:
                        break
                    if due > now:
                        time.sleep(due - now)
                elif now >= deadline:
                    break
                i += 1
                s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                try:
                    s.connect(("127.0.0.1", port))
                    s.sendall(REQ)
                    while s.recv(4096):
                        pass
                    n += 1
                except OSError:
                    errs += 1
                    if errs > 1000:
                        break
                finally:
                    s.close()
            os.write(w, f"{n} {errs} {time.monotonic()}\n".encode())
            os._exit(0)
        pids.append(pid)
    os.close(w)
    for p in pids:
        os.waitpid(p, 0)
    with os.fdopen(r) as f:
        rows = [line.split() for line in f.read().splitlines()]
    conns = sum(int(x[0]) for x in rows)
    errs = sum(int(x[1]) for x in rows)
    took = max(float(x[2]) for x in rows) - t0
    print(json.dumps({"conns": conns, "errors": errs, "secs": took, "rate": conns / took}))


# ---------------------------------------------------------- byte-count run

UNITS = {"B": 1, "KB": 1024, "MB": 1024 ** 2, "GB": 1024 ** 3, "TB": 1024 ** 4}


def iftop_size(s):
    m = re.fullmatch(r"([\d.]+)([KMGT]?B)", s)
    return round(float(m.group(1)) * UNITS[m.group(2)]) if m else None


def parse_bytes(tool, text, srv_port, cli_port, srv_pid, cli_pid):
    """What the tool reported for the transfer: (sender tx, receiver rx).
    A connection or process the tool does not list counts as 0; None where
    the tool has no such number (iftop counts flows, not each end's rx)."""
    tx = rx = 0
    if is_tcptop(tool):
        for line in text.splitlines():
            try:
                r = json.loads(line)
            except ValueError:
                continue
            if r.get("state") != "CLOSED":
                continue
            if r["local"].endswith(f":{cli_port}") and r["remote"].endswith(f":{srv_port}"):
                tx = r["tx_bytes"]
            if r["local"].endswith(f":{srv_port}") and r["remote"].endswith(f":{cli_port}"):
                rx = r["rx_bytes"]
    elif tool == "tcplife":
        # PID COMM LADDR LPORT RADDR RPORT TX_KB RX_KB MS (KB with 2 decimals)
        for line in text.splitlines():
            f = line.split()
            if len(f) < 9 or not f[-4].isdigit() or not f[-6].isdigit():
                continue
            lport, rport = int(f[-6]), int(f[-4])
            if (lport, rport) == (cli_port, srv_port):
                tx = round(float(f[-3]) * 1024)
            if (lport, rport) == (srv_port, cli_port):
                rx = round(float(f[-2]) * 1024)
    elif tool == "nethogs":
        # "Refreshing:" then per process "path/pid/uid<TAB>sent<TAB>received",
        # totals in bytes with -v 2; per process only, the last refresh counts.
        for line in text.splitlines():
            f = line.split("\t")
            if len(f) != 3:
                continue
            parts = f[0].rsplit("/", 2)
            if len(parts) != 3 or not parts[1].isdigit():
                continue
            pid = int(parts[1])
            if pid == cli_pid:
                tx = round(float(f[1]))
            if pid == srv_pid:
                rx = round(float(f[2]))
    elif tool == "iftop":
        # Last block: pairs of "A => ... cumulative" (A to B) and
        # "B <= ... cumulative" (B to A); sizes 1024-based with -B, 3 digits.
        blocks = text.split("   # Host name")
        last = blocks[-1] if len(blocks) > 1 else ""
        rows = re.findall(r"^\s*\d*\s+(\S+)\s+(=>|<=)\s+\S+\s+\S+\s+\S+\s+(\S+)\s*$", last, re.M)
        cli, srv = f"127.0.0.1:{cli_port}", f"127.0.0.1:{srv_port}"
        c2s = None
        for (a, _, cum_ab), (b, _, cum_ba) in zip(rows[0::2], rows[1::2]):
            if (a, b) == (cli, srv):
                c2s = (c2s or 0) + iftop_size(cum_ab)
            if (a, b) == (srv, cli):
                c2s = (c2s or 0) + iftop_size(cum_ba)
        tx, rx = c2s or 0, None  # a flow, not a socket: no receiver count
    elif tool == "bandwhich":
        pat = re.compile(r"connection: <\d+> <\S+>:(\d+) => \S+:(\d+) \(tcp\) "
                         r"up/down Bps: (\d+)/(\d+)")
        for line in text.splitlines():
            m = pat.search(line)
            if not m:
                continue
            lport, rport, up, down = map(int, m.groups())
            if (lport, rport) == (cli_port, srv_port):
                tx = up
            if (lport, rport) == (srv_port, cli_port):
                rx = down
    return tx, rx


def run_bytes(tool, tag):
    port = next_port()
    path = os.path.join(OUT, f"bytes-{tool}-{tag}.out")
    mon = Monitor(tool, path)
    srv = cli = None
    try:
        srv = spawn([PEER, "server", "--listen", f"127.0.0.1:{port}", "--recv", str(BYTES)],
                    stdout=subprocess.PIPE, text=True)
        json.loads(srv.stdout.readline())  # listening
        cli = spawn([PEER, "client", "--connect", f"127.0.0.1:{port}", "--send", str(BYTES)],
                    stdout=subprocess.PIPE, text=True)
        out = cli.stdout.read()
        if cli.wait(timeout=60) != 0 or srv.wait(timeout=30) != 0:
            raise RuntimeError("tcptop-testpeer transfer failed")
        cli_port = int(json.loads(out.splitlines()[0])["local"].rsplit(":", 1)[1])
        # Let interval-based tools print after the close; iftop prints only
        # when a packet arrives, so a UDP datagram to 127.0.0.1:9 (discard,
        # nothing listens) every 0.5 s wakes it.
        for _ in range(7):
            time.sleep(0.5)
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
                u.sendto(b"x", ("127.0.0.1", 9))
    finally:
        end(cli)
        end(srv)
        mon.stop()
    with open(path, errors="replace") as f:
        text = f.read()
    tx, rx = parse_bytes(tool, text, port, cli_port, srv.pid, cli.pid)
    res = {"tx": tx, "rx": rx, "port": port, "cli_port": cli_port,
           "srv_pid": srv.pid, "cli_pid": cli.pid}
    if tool == "nethogs":
        # What nethogs could not attribute to a process (last refresh).
        m = re.findall(r"^unknown TCP/0/0\t(\S+)\t", text, re.M)
        res["unattributed"] = round(float(m[-1])) if m else 0
    return res


# ------------------------------------------------------------------ running

def run_arm(load, tool, secs, rate):
    mon = Monitor(tool) if tool != "none" else None
    try:
        c0 = mon.cpu() if mon else 0.0
        t0 = time.monotonic()
        if load == "bulk":
            res = load_bulk(secs)
        else:
            res = load_churn(secs, rate if load == "fixed" else 0)
        wall = time.monotonic() - t0
        if mon:
            res["mon_cpu"] = (mon.cpu() - c0) / wall
            if not mon.alive():
                raise RuntimeError(f"{tool} died during the load")
        res["wall"] = wall
    finally:
        if mon:
            hwm, rss = mon.stop()
    if mon:
        res["hwm_kib"], res["rss_kib"] = hwm, rss
    return res


def pkg_version(pkg):
    r = subprocess.run(["dpkg-query", "-W", "-f", "${Version}", pkg],
                       capture_output=True, text=True)
    return r.stdout.strip() if r.returncode == 0 else None


def tcplife_pkg():
    path = os.path.realpath(tcplife_cmd()[0])
    r = subprocess.run(["dpkg-query", "-S", path], capture_output=True, text=True)
    return r.stdout.split(":")[0].strip() if r.returncode == 0 else "?"


def install(tools, do_install):
    want = {"iperf3": "iperf3"}
    if "nethogs" in tools:
        want["nethogs"] = "nethogs"
    if "iftop" in tools:
        want["iftop"] = "iftop"
    if "tcplife" in tools and not (shutil.which("tcplife") or shutil.which("tcplife-bpfcc")):
        want["tcplife"] = None
    missing = [p for k, p in want.items() if p and not pkg_version(p)]
    if "tcplife" in want:
        missing.append("libbpf-tools")
    if missing and do_install:
        log(f"installing {' '.join(missing)} (apt)")
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
        if "libbpf-tools" in missing and subprocess.run(
                ["apt-cache", "show", "libbpf-tools"], capture_output=True).returncode != 0:
            missing[missing.index("libbpf-tools")] = "bpfcc-tools"  # tcplife-bpfcc
        subprocess.run(["apt-get", "install", "-y", "-qq"] + missing,
                       check=True, env=env, stdout=subprocess.DEVNULL)
    if "bandwhich" in tools and do_install:
        have = subprocess.run([BANDWHICH, "--version"], capture_output=True, text=True) \
            if os.path.exists(BANDWHICH) else None
        if not have or BANDWHICH_VERSION not in have.stdout:
            log(f"building bandwhich {BANDWHICH_VERSION} from crates.io into {TOOLS_ROOT}")
            subprocess.run(["cargo", "install", "bandwhich", "--locked", "--quiet",
                            "--version", BANDWHICH_VERSION, "--root", TOOLS_ROOT],
                           check=True, cwd=ROOT)


def bandwhich_licence():
    home = os.environ.get("CARGO_HOME", os.path.expanduser("~/.cargo"))
    for toml in glob.glob(f"{home}/registry/src/*/bandwhich-{BANDWHICH_VERSION}/Cargo.toml"):
        with open(toml) as f:
            m = re.search(r'^license\s*=\s*"([^"]+)"', f.read(), re.M)
            if m:
                return m.group(1)
    return "licence not found"


def ensure_tracefs():
    """libbpf's tracepoint attach (tcplife) looks the tracepoint up in
    tracefs; mount it if it is not. Returns True if we mounted it."""
    if os.path.isdir("/sys/kernel/tracing/events"):
        return False
    subprocess.run(["mount", "-t", "tracefs", "nodev", "/sys/kernel/tracing"], check=True)
    log("mounted tracefs on /sys/kernel/tracing for tcplife (unmounted at the end)")
    return True


def machine_info():
    cpu = "?"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    git = lambda *a: subprocess.run(["git", *a], cwd=ROOT, capture_output=True,
                                    text=True).stdout.strip()
    commit = git("rev-parse", "--short", "HEAD")
    if git("status", "--porcelain", "--untracked-files=no"):
        commit += " (with uncommitted changes)"
    return {"cpu": cpu, "ncpu": os.cpu_count(), "kernel": platform.release(),
            "commit": commit, "date": time.strftime("%Y-%m-%d"),
            "loadavg": open("/proc/loadavg").read().split()[:3]}


def rotate(seq, k):
    k %= len(seq)
    return seq[k:] + seq[:k]


def main():
    if len(sys.argv) > 1 and sys.argv[1] == "_churn-server":
        return churn_server(int(sys.argv[2]), int(sys.argv[3]))
    if len(sys.argv) > 1 and sys.argv[1] == "_churn-client":
        return churn_client(int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4]))

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=3, help="rounds (medians over them)")
    ap.add_argument("--secs", type=float, default=10.0, help="seconds per load run")
    ap.add_argument("--rate", type=float, default=1000.0, help="fixed churn rate, conns/s")
    ap.add_argument("--tools", default=",".join(ALL_TOOLS),
                    help=f"comma-separated monitors (default {','.join(ALL_TOOLS)})")
    ap.add_argument("--loads", default=",".join(ALL_LOADS),
                    help=f"comma-separated loads (default {','.join(ALL_LOADS)})")
    ap.add_argument("--markdown", action="store_true", help="print a BENCHMARKS.md section")
    ap.add_argument("--no-install", action="store_true", help="do not apt/cargo install")
    a = ap.parse_args()
    tools = [t for t in a.tools.split(",") if t]
    loads = [x for x in a.loads.split(",") if x]
    for t in tools:
        if t not in TOOLS:
            ap.error(f"unknown tool {t} (known: {', '.join(TOOLS)})")
    for x in loads:
        if x not in ALL_LOADS:
            ap.error(f"unknown load {x} (known: {', '.join(ALL_LOADS)})")
    if os.geteuid() != 0:
        sys.exit("bench-peers.py needs root (eBPF, packet capture)")
    if not 1 <= a.secs <= 60 or not 1 <= a.rounds <= 20 or not 1 <= a.rate <= 20000:
        ap.error("bounds: 1 <= --secs <= 60, 1 <= --rounds <= 20, 1 <= --rate <= 20000")

    install(tools, not a.no_install)
    # The switches (TCPTOP_BENCH_NOOP, TCPTOP_BENCH_SKIP) are compiled out of
    # release builds without this feature.
    subprocess.run(["cargo", "build", "--release", "--quiet", "--features", "tcptop/bench-switches"],
                   cwd=ROOT, check=True)
    os.makedirs(OUT, exist_ok=True)
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, lambda s, _: sys.exit(128 + s))
    mounted = ensure_tracefs() if "tcplife" in tools else False
    info = machine_info()
    runs = []  # every run: round, load, tool, position, result or error
    errors = {}
    try:
        for r in range(a.rounds):
            order = rotate(tools, r)
            for load in loads:
                if load == "bytes":
                    for t in order:
                        if t in NOOP_TOOLS:
                            continue
                        try:
                            res = run_bytes(t, f"r{r + 1}")
                        except (RuntimeError, OSError, ValueError, KeyError) as e:
                            errors.setdefault(t, str(e))
                            log(f"round {r + 1} bytes {t}: FAILED {e}")
                            continue
                        runs.append({"round": r, "load": load, "tool": t, **res})
                        log(f"round {r + 1} bytes {t}: tx {res['tx']} rx {res['rx']}")
                    continue
                seq = ["none"]
                for t in order:
                    seq += [t, "none"]
                for pos, t in enumerate(seq):
                    try:
                        res = run_arm(load, t, a.secs, a.rate)
                    except (RuntimeError, OSError, ValueError, KeyError) as e:
                        errors.setdefault(t, str(e))
                        log(f"round {r + 1} {load} {t}: FAILED {e}")
                        continue
                    runs.append({"round": r, "load": load, "tool": t, "pos": pos, **res})
                    extra = (f" mon {res['mon_cpu'] * 100:.2f}% hwm {res['hwm_kib']} KiB"
                             if t != "none" else "")
                    log(f"round {r + 1} {load} {t}: {res['value']:.3f} "
                        f"load cpu {res['cpu']:.2f} s{extra}")
    finally:
        for p in list(LIVE):
            end(p)
        if mounted:
            subprocess.run(["umount", "/sys/kernel/tracing"])
    info["versions"] = versions(tools)
    with open(os.path.join(OUT, "results.json"), "w") as f:
        json.dump({"info": info, "args": vars(a), "runs": runs, "errors": errors,
                   "progs_left": sorted(PROGS_CHECKED["left"])}, f, indent=1)
    print(report(a, tools, loads, runs, errors, info))


def versions(tools):
    v = {"iperf3": pkg_version("iperf3")}
    for t in tools:
        if is_tcptop(t):
            v[t] = f"this tree, hooks {HOOKS.get(t, '?')}"
        elif t == "tcplife":
            pkg = tcplife_pkg()
            v[t] = f"{pkg} {pkg_version(pkg)}"
        elif t == "bandwhich":
            v[t] = f"bandwhich {BANDWHICH_VERSION} (crates.io, {bandwhich_licence()})"
        else:
            v[t] = f"{t} {pkg_version(t)}"
    return v


# ------------------------------------------------------------------- report

def paired(runs, load):
    """Per tool: list of per-pair dicts with the tool's run and the mean of
    the unmonitored runs on either side (same round)."""
    out = {}
    by_round = {}
    for x in runs:
        if x["load"] == load:
            by_round.setdefault(x["round"], {})[x["pos"]] = x
    for arms in by_round.values():
        for pos, x in arms.items():
            if x["tool"] == "none":
                continue
            nones = [arms[p] for p in (pos - 1, pos + 1) if p in arms and arms[p]["tool"] == "none"]
            if not nones:
                continue
            base_v = statistics.mean(n["value"] for n in nones)
            base_cpw = statistics.mean(n["cpu"] / n["work"] for n in nones)
            cpw = x["cpu"] / x["work"]
            out.setdefault(x["tool"], []).append({
                "value": x["value"], "ratio": x["value"] / base_v,
                "cpw": cpw, "cpw_ratio": cpw / base_cpw,
                # load CPU added by the monitor, as a share of one core
                "added": (cpw - base_cpw) * x["work"] / x["wall"],
                "mon": x["mon_cpu"], "hwm": x["hwm_kib"], "rss": x["rss_kib"]})
    return out


def fmt_err(v):
    if v is None:
        return "—"
    d = v - BYTES
    return "0" if d == 0 else f"{d:+,} ({d / BYTES * 100:+.2f}%)"


LOAD_TITLE = {
    "bulk": ("bulk: iperf3 -P 4", "Gbit/s", "load CPU s per GB", 1),
    "fixed": ("churn at a fixed rate", "conns/s", "load CPU µs per conn", 1e6),
    "max": ("churn at the maximum rate", "conns/s", "load CPU µs per conn", 1e6),
}


def report(a, tools, loads, runs, errors, info):
    med = statistics.median
    L = []
    if a.markdown:
        L += ["## Side by side with peer tools (issue 6)", "",
              "Method (`scripts/bench-peers.py`): the same loopback loads with no monitor and "
              "with each tool, each run "
              f"{a.secs:g} s: **bulk** (`iperf3 -P 4`, Gbit/s), **fixed** (connection churn at "
              f"{a.rate:g} connections/s: a pool of 2 python clients, each connection a 64-byte "
              "request and reply, the server closing first), **max** (the same churn as fast as "
              "it goes). Per round and load the runs go none, A, none, B, …, none, the tool "
              "order rotating each round; each monitored run is divided by the mean of the two "
              "unmonitored runs beside it, and the tables show medians of those paired ratios "
              f"over {a.rounds} rounds. \"load CPU\" is the user+system time of the load's own "
              "processes (wait4 rusage) per unit of work: in-kernel hook costs (eBPF programs, "
              "the packet-capture tap) are charged there; \"added\" is that difference as a share "
              "of one core. Monitor CPU: all its threads (`/proc/PID/task/*/schedstat`) over the "
              "load; RSS peak is VmHWM. The monitors run as a user would script them, output to "
              "/dev/null: `tcptop --batch --format jsonl --interval 1`, `tcplife`, "
              "`nethogs -t -a lo`, `iftop -t -n -N -P -i lo`, `bandwhich --raw -n -i lo`. "
              f"**bytes**: one connection carries {BYTES:,} bytes (`tcptop-testpeer`); the "
              "tools print totals for it with `nethogs -v 2`, `iftop -B`, `bandwhich -t`.", ""]
    L.append(f"Machine: {info['ncpu']} CPU {info['cpu']}, Linux {info['kernel']}, "
             f"{info['date']}, commit {info['commit']}; load average at the start "
             f"{' '.join(info['loadavg'])}"
             + (" (the machine was not idle: expect noise)."
                if float(info["loadavg"][0]) > 0.5 else "."))
    L.append("Versions: " + "; ".join(f"{k}: {v}" for k, v in info["versions"].items()) + ".")
    L.append("")
    summary = {}
    for load in loads:
        if load == "bytes":
            continue
        title, unit, cpwunit, scale = LOAD_TITLE[load]
        if load == "fixed":
            title += f" ({a.rate:g}/s)"
        nones = [x for x in runs if x["load"] == load and x["tool"] == "none"]
        if not nones:
            continue
        pr = paired(runs, load)
        L += [f"**{title}**, {a.secs:g} s runs", "",
              f"| monitor | {unit} | vs none (min–max) | {cpwunit} | vs none | added load CPU "
              f"| monitor CPU | monitor RSS peak (end) |",
              "|---|---|---|---|---|---|---|---|"]
        L.append(f"| none | {med(n['value'] for n in nones):,.2f} | — | "
                 f"{med(n['cpu'] / n['work'] for n in nones) * scale:,.2f} | — | — | — | — |")
        for t in tools:
            p = pr.get(t)
            if not p:
                L.append(f"| {t} | failed: see below | | | | | | |")
                continue
            ratios = [x["ratio"] for x in p]
            row = {k: med(x[k] for x in p) for k in ("value", "ratio", "cpw", "cpw_ratio",
                                                      "added", "mon")}
            row["hwm"] = max(x["hwm"] for x in p)
            row["rss"] = max(x["rss"] for x in p)
            summary[(load, t)] = row
            L.append(f"| {t} | {row['value']:,.2f} | {row['ratio'] * 100:.1f}% "
                     f"({min(ratios) * 100:.1f}–{max(ratios) * 100:.1f}%) | "
                     f"{row['cpw'] * scale:,.2f} | {row['cpw_ratio'] * 100:.1f}% | "
                     f"{row['added'] * 100:+.1f}% | {row['mon'] * 100:.2f}% | "
                     f"{row['hwm'] / 1024:.1f} MiB ({row['rss'] / 1024:.1f}) |")
        L.append("")
    if "bytes" in loads:
        L += [f"**bytes**: {BYTES:,} bytes over one connection, what each tool reported "
              "(median over rounds; error against the truth)", "",
              "| monitor | sender's tx | error | receiver's rx | error | tx each round (MB) |",
              "|---|---|---|---|---|---|"]
        for t in (t for t in tools if t not in NOOP_TOOLS):
            b = [x for x in runs if x["load"] == "bytes" and x["tool"] == t]
            if not b:
                L.append(f"| {t} | failed: see below | | | | |")
                continue
            cols = []
            for k in ("tx", "rx"):
                vals = [x[k] for x in b if x[k] is not None]
                v = round(med(vals)) if vals else None
                cols += [f"{v:,}" if v is not None else "not reported", fmt_err(v)]
                summary[("bytes", t, k)] = [x[k] for x in b]
            cols.append(", ".join(f"{x['tx'] / 1e6:.2f}" for x in b))
            L.append(f"| {t} | " + " | ".join(cols) + " |")
        nh = [x.get("unattributed") for x in runs if x["load"] == "bytes" and x["tool"] == "nethogs"]
        if nh:
            L += ["", "nethogs' \"unknown TCP\" line (traffic it could not attribute to a "
                  "process) each round (MB): " + ", ".join(f"{v / 1e6:.2f}" for v in nh)]
        L.append("")
    L += targets(tools, loads, summary)
    if errors:
        L += ["", "Failed runs:"]
        L += [f"- {t}: {e}" for t, e in errors.items()]
    if any(is_tcptop(t) for t in tools):
        left = PROGS_CHECKED["left"]
        L += ["", f"tcptop left no eBPF program loaded: {'no, ' + str(sorted(left)) if left else 'yes'} "
              f"(its {PROGS_CHECKED['ids']} program ids over {PROGS_CHECKED['runs']} runs "
              "checked gone after each exit)."]
    return "\n".join(L)


def targets(tools, loads, s):
    if "tcptop" not in tools:
        return []
    L = ["| target | measured | met |", "|---|---|---|"]
    yes = lambda ok: "yes" if ok else "**no**"
    if ("bulk", "tcptop") in s:
        r = s[("bulk", "tcptop")]["ratio"]
        L.append(f"| tcptop keeps ≥ 99% of unmonitored bulk throughput | {r * 100:.1f}% | {yes(r >= 0.99)} |")
    if ("max", "tcptop") in s:
        r = s[("max", "tcptop")]["ratio"]
        L.append(f"| tcptop keeps ≥ 95% of the unmonitored maximum connection rate | "
                 f"{r * 100:.1f}% | {yes(r >= 0.95)} |")
        if ("max", "tcptop-noop") in s:
            f = s[("max", "tcptop-noop")]["ratio"]
            L.append(f"| (reference, not a target) the same with every hook attached and "
                     f"doing nothing (tcptop-noop): the floor | {f * 100:.1f}% | — |")
        for tool, what in (("tcptop-tcp", "tcptop --tcp (no UDP programs)"),
                           ("tcptop-noop-tcp", "the floor of the TCP hooks alone "
                                               "(tcptop-noop-tcp)")):
            if ("max", tool) in s:
                f = s[("max", tool)]["ratio"]
                L.append(f"| (reference, not a target) {what} | {f * 100:.1f}% | — |")
    if "tcplife" in tools:
        parts, ok_all, ok_mon = [], True, True
        for load in ("bulk", "fixed", "max"):
            if (load, "tcptop") in s and (load, "tcplife") in s:
                t, l = s[(load, "tcptop")], s[(load, "tcplife")]
                tt, lt = t["mon"] + t["added"], l["mon"] + l["added"]
                ok_mon &= t["mon"] <= l["mon"]
                ok_all &= tt <= lt
                parts.append(f"{load}: monitor {t['mon'] * 100:.2f}% vs {l['mon'] * 100:.2f}%, "
                             f"with added load CPU {tt * 100:+.1f}% vs {lt * 100:+.1f}%")
        if parts:
            L.append(f"| tcptop uses no more CPU than tcplife (tcptop vs tcplife, % of one core) | "
                     f"{'; '.join(parts)} | monitor alone: {yes(ok_mon)}; with in-kernel "
                     f"cost: {yes(ok_all)} |")
    if ("bytes", "tcptop", "tx") in s:
        vals = s[("bytes", "tcptop", "tx")] + s[("bytes", "tcptop", "rx")]
        errs = sorted({(v - BYTES) if v is not None else None for v in vals}, key=str)
        ok = all(e == 0 for e in errs)
        L.append(f"| tcptop byte error 0 | {len(vals)} counts (tx and rx), errors {errs} | {yes(ok)} |")
    L.append("| kernel-side cost per send call < 1 µs | measured by `scripts/bench.py` "
             "(\"added per send call\", section above), not here | see above |")
    return L


if __name__ == "__main__":
    try:
        main()
    finally:
        for proc in list(LIVE):
            end(proc)
