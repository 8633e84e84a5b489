#!/usr/bin/env python3
"""macOS smoke run (CI: .github/workflows/macos.yml): the real tcptop binary,
unprivileged, on the kernel's socket lists, sees a local TCP connection that
moves a known number of bytes and a UDP exchange, with their owner, and
reports the TCP connection CLOSED once it is gone.

Usage: scripts/macos-smoke.py target/debug/tcptop
"""
import json
import os
import socket
import subprocess
import sys
import threading
import time

TCP_BYTES = 300_000
UDP_BYTES = 1200


def main() -> int:
    exe = sys.argv[1]
    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    port = srv.getsockname()[1]
    udp_srv = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp_srv.bind(("127.0.0.1", 0))
    udp_port = udp_srv.getsockname()[1]

    got = []

    def serve() -> None:
        conn, _ = srv.accept()
        n = 0
        while n < TCP_BYTES:
            b = conn.recv(65536)
            if not b:
                break
            n += len(b)
        got.append(n)
        conn.recv(1)  # until the client closes
        conn.close()

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    top = subprocess.Popen(
        [exe, "--batch", "--format", "jsonl", "--interval", "0.5", "--iterations", "12",
         "--port", str(port), "--port", str(udp_port)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(1.2)  # tcptop's first read: what is open then counts from then
    cli = socket.create_connection(("127.0.0.1", port))
    cli.sendall(b"x" * TCP_BYTES)
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    u.connect(("127.0.0.1", udp_port))
    for _ in range(3):
        u.send(b"y" * (UDP_BYTES // 3))
    time.sleep(2.0)  # a few reads with the connection open
    cli.close()
    u.close()
    out, err = top.communicate(timeout=30)
    t.join(5)
    sys.stderr.write(err)
    rows = [json.loads(line) for line in out.splitlines() if line.strip()]
    if top.returncode != 0:
        print(f"tcptop exited with {top.returncode}", file=sys.stderr)
        return 1
    me = os.getpid()
    tcp = [r for r in rows if r["proto"] == "tcp" and r["remote"] == f"127.0.0.1:{port}"]
    udp = [r for r in rows if r["proto"] == "udp" and r["remote"] == f"127.0.0.1:{udp_port}"]
    # From Darwin 24 (macOS 15) the counters are payload bytes as they enter
    # the socket buffers: exact. Before, per traffic class as packets left:
    # at least the payload, within a margin.
    exact = int(os.uname().release.split(".")[0]) >= 24

    def check(what: str, seen: int, want: int) -> None:
        ok = seen == want if exact else want <= seen <= want * 1.1
        if not ok:
            problems.append(f"{what} tx_bytes {seen}, sent {want} ({'exact' if exact else 'within 10%'})")

    problems = []
    if not rows or any(r["hooks"] != "pcblist" for r in rows):
        problems.append("rows missing or not from pcblist")
    if not tcp:
        problems.append("the TCP connection was not seen")
    else:
        check("TCP", max(r["tx_bytes"] for r in tcp), TCP_BYTES)
        if not any(r["pid"] == me for r in tcp):
            problems.append(f"TCP owner is not this process ({me})")
        if not any(r["state"] == "CLOSED" for r in tcp):
            problems.append("the TCP connection was not reported CLOSED")
    if not udp:
        problems.append("the UDP flow was not seen")
    else:
        check("UDP", max(r["tx_bytes"] for r in udp), UDP_BYTES)
    for p in problems:
        print("smoke: " + p, file=sys.stderr)
    if problems:
        for r in tcp + udp:
            print(json.dumps(r), file=sys.stderr)
        return 1
    print(f"smoke: ok ({len(rows)} rows; TCP {TCP_BYTES} bytes, UDP {UDP_BYTES} bytes, CLOSED seen)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
