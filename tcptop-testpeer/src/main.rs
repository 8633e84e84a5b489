//! tcptop-testpeer: loopback TCP traffic with exact, known byte counts, for
//! tcptop's integration tests and benchmarks. Not part of the product.
//!
//! Each connection: the client sends `--send` bytes, then reads `--recv`
//! bytes; the server reads `--recv`, then sends `--send`. After the exchange
//! each side prints a JSON line ("done") with the socket's endpoints and its
//! kernel TCP_INFO (rtt, segments), holds, prints another ("closing") and
//! closes (client first; the server closes when it reads EOF). `--name` renames the process (its `comm`).
//!
//!   tcptop-testpeer server --listen 127.0.0.1:5000 --conns 1 --recv 1000 --send 2000
//!   tcptop-testpeer client --connect 127.0.0.1:5000 --conns 1 --send 1000 --recv 2000
//!
//! UDP (`udp-server`, `udp-client`): the client sends `--count` datagrams
//! of `--size` bytes to each `--to` address (with `sendto`, or `send` on a
//! connected socket with `--connected`), waiting for a `--reply`-byte answer
//! to each; the server answers every datagram from whoever sent it until it
//! has received `--datagrams`, then prints what each peer sent.
//!
//!   tcptop-testpeer udp-server --listen 127.0.0.1:5000 --datagrams 20 --reply 10
//!   tcptop-testpeer udp-client --to 127.0.0.1:5000 --count 20 --size 100 --reply 10
//!
//! `churn-self` opens connections to itself, one after another, for
//! `--secs` (64 bytes each way, the server side closing first, as the
//! benchmark's churn load), and prints its own CPU time per connection:
//! the in-kernel cost of a connection, hooks included, without scheduling
//! between two processes.
//!
//!   tcptop-testpeer churn-self --listen 127.0.0.1:5000 --secs 5
//!
//! `hold-self` opens `--pairs` idle connections to itself and holds them
//! until a line arrives on stdin.
//!
//! With `--wait-stdin` the client waits for a line on stdin after connecting
//! (before sending) and again before closing, so a test can start tcptop
//! against an already-open connection and sample it while idle; the server
//! waits for one after accepting (before reading), and with
//! `--wait-before-accept` for one before accepting (a connection waits in
//! the listener's queue meanwhile, held by no process).

use std::collections::BTreeMap;
use std::io::{BufRead, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};

#[derive(Parser)]
struct Args {
    #[command(subcommand)]
    role: Role,
}

#[derive(Subcommand)]
enum Role {
    Server {
        #[arg(long)]
        listen: SocketAddr,
        #[command(flatten)]
        common: Common,
        /// Wait for a stdin line after accepting, before reading.
        #[arg(long)]
        wait_stdin: bool,
        /// Wait for a stdin line before the first accept: a connection
        /// made meanwhile waits in the listener's queue, held by no
        /// process.
        #[arg(long)]
        wait_before_accept: bool,
        /// With --wait-stdin: send this many of the --send bytes right
        /// after accepting, before the wait (and before reading).
        #[arg(long, default_value_t = 0)]
        send_first: u64,
    },
    Client {
        #[arg(long)]
        connect: SocketAddr,
        #[command(flatten)]
        common: Common,
        /// Wait for a stdin line after connecting and before closing.
        #[arg(long)]
        wait_stdin: bool,
        /// With --wait-stdin: send this many of the --send bytes before
        /// the first wait (right after connecting).
        #[arg(long, default_value_t = 0)]
        send_first: u64,
        /// Bulk mode: send for this many seconds as fast as possible, report
        /// bytes sent, send calls and throughput; ignores --send/--recv.
        #[arg(long)]
        bulk_secs: Option<f64>,
        /// Open connections at this many per second (default: one after
        /// another, as fast as they complete).
        #[arg(long)]
        rate: Option<f64>,
        /// Bytes per send call in bulk mode.
        #[arg(long, default_value_t = 128 * 1024)]
        chunk: usize,
    },
    /// Opens `pairs` idle connections to itself, prints "holding", and
    /// keeps them open until a line arrives on stdin (or stdin closes).
    HoldSelf {
        #[arg(long)]
        listen: SocketAddr,
        #[arg(long)]
        pairs: u32,
    },
    ChurnSelf {
        #[arg(long)]
        listen: SocketAddr,
        /// Seconds to run.
        #[arg(long)]
        secs: f64,
    },
    /// 64-byte datagrams to itself for `secs`: one unconnected `sendto` and
    /// one `recvfrom` per round trip (the UDP per-call benchmark).
    UdpPingSelf {
        #[arg(long)]
        listen: SocketAddr,
        /// Seconds to run.
        #[arg(long)]
        secs: f64,
    },
    UdpServer {
        #[arg(long)]
        listen: SocketAddr,
        /// Process name (comm) to take.
        #[arg(long)]
        name: Option<String>,
        /// Datagrams to receive (from any peers) before finishing.
        #[arg(long)]
        datagrams: u64,
        /// Bytes to answer each datagram with (0: no answer).
        #[arg(long, default_value_t = 0)]
        reply: usize,
        /// SO_RCVBUF in bytes (the kernel doubles it).
        #[arg(long)]
        rcvbuf: Option<usize>,
        /// Sleep this long after the first datagram before reading on
        /// (lets a burst overflow a small receive buffer).
        #[arg(long, default_value_t = 0)]
        read_after_ms: u64,
        /// Stop once no datagram came for this long (--datagrams is then a
        /// maximum).
        #[arg(long)]
        drain_ms: Option<u64>,
        /// After binding, wait for a line on stdin before the first receive
        /// call (so that no call is in flight when a monitor attaches).
        #[arg(long)]
        wait_stdin: bool,
    },
    UdpClient {
        /// Destination (repeatable: one unconnected socket sends to each).
        #[arg(long = "to", required = true)]
        to: Vec<SocketAddr>,
        /// Local address to bind (default: the wildcard of the first
        /// destination's family, port chosen by the kernel).
        #[arg(long)]
        bind: Option<SocketAddr>,
        /// connect() to the (single) destination and use send/recv.
        #[arg(long)]
        connected: bool,
        /// Datagrams to send to each destination.
        #[arg(long)]
        count: u64,
        /// Payload bytes per datagram.
        #[arg(long)]
        size: usize,
        /// Bytes of the answer expected to each datagram (0: none).
        #[arg(long, default_value_t = 0)]
        reply: usize,
        /// Process name (comm) to take.
        #[arg(long)]
        name: Option<String>,
        /// Also send to the next N-1 ports after each --to (a port scan).
        #[arg(long, default_value_t = 1)]
        ports: u16,
        /// Microseconds to wait between datagrams.
        #[arg(long, default_value_t = 0)]
        gap_us: u64,
    },
}

#[derive(clap::Args)]
struct Common {
    /// Process name (comm) to take.
    #[arg(long)]
    name: Option<String>,
    /// Connections to handle, one after another.
    #[arg(long, default_value_t = 1)]
    conns: u32,
    #[arg(long, default_value_t = 0)]
    send: u64,
    #[arg(long, default_value_t = 0)]
    recv: u64,
    /// Milliseconds to stay connected after the exchange.
    #[arg(long, default_value_t = 0)]
    hold_ms: u64,
    /// Print a line per connection (default: only the first and a summary).
    #[arg(long)]
    verbose: bool,
    /// How `--send` bytes go out: write() calls, sendfile() from a
    /// memory file, or splice() from a pipe.
    #[arg(long, value_enum, default_value_t = SendWith::Write)]
    send_with: SendWith,
    /// How `--recv` bytes come in: read() calls, or splice() into a pipe
    /// (then drained), which no receive call sees.
    #[arg(long, value_enum, default_value_t = RecvWith::Read)]
    recv_with: RecvWith,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum SendWith {
    Write,
    Sendfile,
    Splice,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum RecvWith {
    Read,
    Splice,
}

fn main() -> Result<()> {
    let args = Args::parse();
    match args.role {
        Role::Server {
            listen,
            common,
            wait_stdin,
            wait_before_accept,
            send_first,
        } => server(listen, &common, wait_stdin, wait_before_accept, send_first),
        Role::Client {
            connect,
            common,
            wait_stdin,
            send_first,
            bulk_secs,
            chunk,
            rate,
        } => match bulk_secs {
            Some(secs) => bulk(connect, &common, secs, chunk),
            None => client(connect, &common, wait_stdin, send_first, rate),
        },
        Role::HoldSelf { listen, pairs } => hold_self(listen, pairs),
        Role::ChurnSelf { listen, secs } => churn_self(listen, secs),
        Role::UdpPingSelf { listen, secs } => udp_ping_self(listen, secs),
        Role::UdpServer {
            listen,
            name,
            datagrams,
            reply,
            rcvbuf,
            read_after_ms,
            drain_ms,
            wait_stdin,
        } => udp_server(
            listen,
            &name,
            &UdpServe {
                datagrams,
                reply,
                rcvbuf,
                read_after: Duration::from_millis(read_after_ms),
                drain: drain_ms.map(Duration::from_millis),
                wait_stdin,
            },
        ),
        Role::UdpClient {
            to,
            bind,
            connected,
            count,
            size,
            reply,
            name,
            ports,
            gap_us,
        } => {
            let to: Vec<SocketAddr> = to
                .iter()
                .flat_map(|a| {
                    (0..ports).map(move |i| SocketAddr::new(a.ip(), a.port().wrapping_add(i)))
                })
                .collect();
            let gap = Duration::from_micros(gap_us);
            udp_client(&to, bind, connected, count, size, reply, &name, gap)
        }
    }
}

fn set_name(name: &Option<String>) -> Result<()> {
    if let Some(n) = name {
        let c = std::ffi::CString::new(n.as_bytes()).context("name has a NUL byte")?;
        // PR_SET_NAME (truncated to 15 bytes).
        sys(rustix::thread::set_name(&c), "prctl(PR_SET_NAME) failed")?;
    }
    Ok(())
}

fn tcp_info(s: &TcpStream) -> libc::tcp_info {
    // SAFETY: getsockopt writes at most `len` bytes into the zeroed struct
    // (all-zero is a valid tcp_info). rustix has no TCP_INFO option (its
    // struct is libc's alone), nor does socket2.
    unsafe {
        let mut info: libc::tcp_info = std::mem::zeroed();
        let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
        libc::getsockopt(
            s.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            (&raw mut info).cast(),
            &mut len,
        );
        info
    }
}

fn report(event: &str, s: &TcpStream) -> Result<()> {
    let info = tcp_info(s);
    let line = serde_json::json!({
        "event": event,
        "pid": std::process::id(),
        "local": s.local_addr()?.to_string(),
        "remote": s.peer_addr()?.to_string(),
        "rtt_us": info.tcpi_rtt,
        "segs_out": info.tcpi_segs_out,
        "segs_in": info.tcpi_segs_in,
        "total_retrans": info.tcpi_total_retrans,
    });
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}")?;
    out.flush()?;
    Ok(())
}

/// Sends `n` bytes on `s` the way `how` says.
fn send_with(s: &mut TcpStream, n: u64, how: SendWith) -> Result<()> {
    match how {
        SendWith::Write => send_n(s, n),
        SendWith::Sendfile => sendfile_n(s, n),
        SendWith::Splice => splice_out_n(s, n),
    }
}

/// Receives `n` bytes from `s` the way `how` says.
fn recv_with(s: &mut TcpStream, n: u64, how: RecvWith) -> Result<()> {
    match how {
        RecvWith::Read => recv_n(s, n),
        RecvWith::Splice => splice_in_n(s, n),
    }
}

/// A system call's result, its error prefixed with `what`.
fn sys<T>(r: rustix::io::Result<T>, what: &str) -> Result<T> {
    r.map_err(|e| anyhow::anyhow!("{what}: {}", std::io::Error::from(e)))
}

/// A pipe as (read end, write end).
fn pipe() -> Result<(std::fs::File, std::fs::File)> {
    let (r, w) = sys(
        rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC),
        "pipe2",
    )?;
    Ok((r.into(), w.into()))
}

/// `n` bytes with sendfile() from a memory file of 1 MiB, read round.
fn sendfile_n(s: &mut TcpStream, n: u64) -> Result<()> {
    use rustix::fs::{MemfdFlags, memfd_create, sendfile};
    const FILE: u64 = 1 << 20;
    let mut file = std::fs::File::from(sys(
        memfd_create(c"testpeer", MemfdFlags::CLOEXEC),
        "memfd_create",
    )?);
    file.write_all(&vec![0x5au8; FILE as usize])?;
    let mut left = n;
    while left > 0 {
        let mut off = (n - left) % FILE;
        let k = left.min(FILE - off) as usize;
        let sent = sys(sendfile(&*s, &file, Some(&mut off), k), "sendfile")?;
        left -= sent as u64;
    }
    Ok(())
}

/// `n` bytes written into a pipe, then splice()d from it into the socket.
fn splice_out_n(s: &mut TcpStream, n: u64) -> Result<()> {
    use rustix::pipe::{SpliceFlags, splice};
    let (r, mut w) = pipe()?;
    let chunk = [0x5au8; 16 * 1024];
    let mut left = n;
    while left > 0 {
        let k = left.min(chunk.len() as u64) as usize;
        w.write_all(&chunk[..k])?;
        let mut moved = 0;
        while moved < k {
            // No offsets (pipe, socket).
            moved += sys(
                splice(&r, None, &*s, None, k - moved, SpliceFlags::MOVE),
                "splice to socket",
            )?;
        }
        left -= k as u64;
    }
    Ok(())
}

/// `n` bytes splice()d from the socket into a pipe (no receive call on
/// the socket: tcp_splice_read), each chunk drained from the pipe.
fn splice_in_n(s: &mut TcpStream, n: u64) -> Result<()> {
    use rustix::pipe::{SpliceFlags, splice};
    let (mut r, w) = pipe()?;
    let mut buf = vec![0u8; 64 * 1024];
    let mut left = n;
    while left > 0 {
        let k = left.min(buf.len() as u64) as usize;
        // No offsets (socket, pipe).
        let got = sys(
            splice(&*s, None, &w, None, k, SpliceFlags::MOVE),
            "splice from socket",
        )?;
        if got == 0 {
            bail!("peer closed with {left} bytes still expected");
        }
        r.read_exact(&mut buf[..got])?;
        left -= got as u64;
    }
    Ok(())
}

fn send_n(s: &mut TcpStream, n: u64) -> Result<()> {
    let buf = [0x5au8; 64 * 1024];
    let mut left = n;
    while left > 0 {
        let k = left.min(buf.len() as u64) as usize;
        s.write_all(&buf[..k])?;
        left -= k as u64;
    }
    Ok(())
}

fn recv_n(s: &mut TcpStream, n: u64) -> Result<()> {
    let mut buf = [0u8; 64 * 1024];
    let mut left = n;
    while left > 0 {
        let k = left.min(buf.len() as u64) as usize;
        let got = s.read(&mut buf[..k])?;
        if got == 0 {
            bail!("peer closed with {left} bytes still expected");
        }
        left -= got as u64;
    }
    Ok(())
}

fn wait_line() -> Result<()> {
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    Ok(())
}

fn server(
    listen: SocketAddr,
    c: &Common,
    wait_stdin: bool,
    wait_accept: bool,
    send_first: u64,
) -> Result<()> {
    set_name(&c.name)?;
    let l = TcpListener::bind(listen).with_context(|| format!("bind {listen}"))?;
    println!(
        "{}",
        serde_json::json!({"event": "listening", "pid": std::process::id(), "local": l.local_addr()?.to_string()})
    );
    std::io::stdout().flush()?;
    if wait_accept {
        wait_line()?;
    }
    for i in 0..c.conns {
        let (mut s, _) = l.accept()?;
        let first = if wait_stdin {
            send_first.min(c.send)
        } else {
            0
        };
        send_with(&mut s, first, c.send_with)?;
        if wait_stdin {
            report("accepted", &s)?;
            wait_line()?;
        }
        recv_with(&mut s, c.recv, c.recv_with)?;
        send_with(&mut s, c.send - first, c.send_with)?;
        if i == 0 || c.verbose {
            report("done", &s)?;
        }
        // Close after the client does: read until EOF.
        let mut sink = vec![0u8; 256 * 1024];
        while s.read(&mut sink)? > 0 {}
        if i == 0 || c.verbose {
            report("closing", &s)?;
        }
    }
    println!(
        "{}",
        serde_json::json!({"event": "finished", "conns": c.conns})
    );
    Ok(())
}

fn client(
    connect: SocketAddr,
    c: &Common,
    wait_stdin: bool,
    send_first: u64,
    rate: Option<f64>,
) -> Result<()> {
    set_name(&c.name)?;
    let start = Instant::now();
    for i in 0..c.conns {
        if let Some(r) = rate.filter(|r| *r > 0.0) {
            // Keep to the schedule; when late, go on at once (no catch-up sleep).
            let due = start + Duration::from_secs_f64(f64::from(i) / r);
            std::thread::sleep(due.saturating_duration_since(Instant::now()));
        }
        let mut s = TcpStream::connect(connect).with_context(|| format!("connect {connect}"))?;
        let loud = i == 0 || c.verbose;
        let first = if wait_stdin {
            send_first.min(c.send)
        } else {
            0
        };
        send_with(&mut s, first, c.send_with)?;
        if wait_stdin {
            report("connected", &s)?;
            wait_line()?;
        }
        send_with(&mut s, c.send - first, c.send_with)?;
        recv_with(&mut s, c.recv, c.recv_with)?;
        if loud {
            report("done", &s)?;
        }
        if wait_stdin {
            wait_line()?;
        } else if c.hold_ms > 0 {
            std::thread::sleep(Duration::from_millis(c.hold_ms));
        }
        if loud {
            report("closing", &s)?;
        }
        drop(s);
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "{}",
        serde_json::json!({"event": "finished", "conns": c.conns, "secs": secs,
                           "per_sec": f64::from(c.conns) / secs})
    );
    Ok(())
}

fn hold_self(listen: SocketAddr, pairs: u32) -> Result<()> {
    // Two descriptors a pair: raise the limit (the hard one too, which
    // root may: a VM's default is 4,096), or at least the soft one to it.
    // (rustix: None is RLIM_INFINITY.)
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let want = 2 * u64::from(pairs) + 64;
    let lim = getrlimit(Resource::Nofile);
    if lim.current.is_some_and(|cur| cur < want) {
        let raised = Rlimit {
            current: Some(want),
            maximum: lim.maximum.map(|max| max.max(want)),
        };
        if setrlimit(Resource::Nofile, raised).is_err() {
            let _ = setrlimit(
                Resource::Nofile,
                Rlimit {
                    current: lim.maximum,
                    ..lim
                },
            );
        }
    }
    let l = TcpListener::bind(listen).with_context(|| format!("bind {listen}"))?;
    let addr = l.local_addr()?;
    let mut held = Vec::with_capacity(2 * pairs as usize);
    for _ in 0..pairs {
        let c = TcpStream::connect(addr).with_context(|| format!("connect {addr}"))?;
        let (s, _) = l.accept()?;
        held.push(c);
        held.push(s);
    }
    println!(
        "{}",
        serde_json::json!({"event": "holding", "pid": std::process::id(), "sockets": held.len()})
    );
    std::io::stdout().flush()?;
    wait_line()
}

fn bulk(connect: SocketAddr, c: &Common, secs: f64, chunk: usize) -> Result<()> {
    set_name(&c.name)?;
    let mut s = TcpStream::connect(connect)?;
    let buf = vec![0x5au8; chunk.max(1)];
    let start = Instant::now();
    let limit = Duration::from_secs_f64(secs);
    let (mut sent, mut calls) = (0u64, 0u64);
    // Check the clock every 64 calls: small chunks measure per-call cost.
    'outer: loop {
        for _ in 0..64 {
            s.write_all(&buf)?;
            sent += buf.len() as u64;
            calls += 1;
        }
        if start.elapsed() >= limit {
            break 'outer;
        }
    }
    let el = start.elapsed().as_secs_f64();
    println!(
        "{}",
        serde_json::json!({
            "event": "bulk", "bytes": sent, "calls": calls, "secs": el,
            "gbit_s": sent as f64 * 8.0 / el / 1e9,
            "ns_per_call": el * 1e9 / calls as f64,
        })
    );
    Ok(())
}

fn churn_self(listen: SocketAddr, secs: f64) -> Result<()> {
    let l = TcpListener::bind(listen).with_context(|| format!("bind {listen}"))?;
    let req = [b'q'; 64];
    let mut buf = [0u8; 4096];
    let cpu0 = cpu_ns();
    let start = Instant::now();
    let limit = Duration::from_secs_f64(secs);
    let mut conns = 0u64;
    while !conns.is_multiple_of(64) || start.elapsed() < limit {
        let mut c = TcpStream::connect(listen)?;
        let (mut s, _) = l.accept()?;
        c.write_all(&req)?;
        s.read_exact(&mut buf[..64])?;
        s.write_all(&req)?;
        drop(s);
        while c.read(&mut buf)? > 0 {}
        conns += 1;
    }
    let cpu = cpu_ns() - cpu0;
    println!(
        "{}",
        serde_json::json!({
            "event": "churn-self", "conns": conns, "secs": start.elapsed().as_secs_f64(),
            "cpu_ns_per_conn": cpu as f64 / conns as f64,
        })
    );
    Ok(())
}

fn udp_ping_self(listen: SocketAddr, secs: f64) -> Result<()> {
    let r = UdpSocket::bind(listen).with_context(|| format!("bind {listen}"))?;
    r.set_read_timeout(Some(UDP_TIMEOUT))?;
    let any: SocketAddr = if listen.is_ipv4() {
        "0.0.0.0:0".parse()?
    } else {
        "[::]:0".parse()?
    };
    let s = UdpSocket::bind(any)?;
    let to = r.local_addr()?;
    let msg = [b'u'; 64];
    let mut buf = [0u8; 2048];
    let cpu0 = cpu_ns();
    let start = Instant::now();
    let limit = Duration::from_secs_f64(secs);
    let mut pairs = 0u64;
    while !pairs.is_multiple_of(1024) || start.elapsed() < limit {
        s.send_to(&msg, to)?;
        let (n, _) = r.recv_from(&mut buf)?;
        if n != msg.len() {
            bail!("received {n} bytes, sent {}", msg.len());
        }
        pairs += 1;
    }
    let cpu = cpu_ns() - cpu0;
    println!(
        "{}",
        serde_json::json!({
            "event": "udp-ping-self", "pairs": pairs, "secs": start.elapsed().as_secs_f64(),
            "cpu_ns_per_pair": cpu as f64 / pairs as f64,
        })
    );
    Ok(())
}

/// User and system CPU time of this process so far, ns: the process CPU
/// clock, the total that getrusage(RUSAGE_SELF) splits into user and
/// system time (to the nanosecond, where getrusage gives microseconds).
fn cpu_ns() -> u64 {
    use rustix::time::{ClockId, clock_gettime};
    let t = clock_gettime(ClockId::ProcessCPUTime);
    t.tv_sec as u64 * 1_000_000_000 + t.tv_nsec as u64
}

/// No test waits longer than this for a datagram on loopback.
const UDP_TIMEOUT: Duration = Duration::from_secs(60);

/// What a UDP server does (see `Role::UdpServer`).
struct UdpServe {
    datagrams: u64,
    reply: usize,
    rcvbuf: Option<usize>,
    read_after: Duration,
    drain: Option<Duration>,
    wait_stdin: bool,
}

fn udp_server(listen: SocketAddr, name: &Option<String>, o: &UdpServe) -> Result<()> {
    let &UdpServe {
        datagrams,
        reply,
        rcvbuf,
        read_after,
        drain,
        wait_stdin,
    } = o;
    set_name(name)?;
    let s = UdpSocket::bind(listen).with_context(|| format!("bind {listen}"))?;
    s.set_read_timeout(Some(UDP_TIMEOUT))?;
    if let Some(n) = rcvbuf {
        sys(
            rustix::net::sockopt::set_socket_recv_buffer_size(&s, n),
            "SO_RCVBUF",
        )?;
    }
    println!(
        "{}",
        serde_json::json!({"event": "listening", "pid": std::process::id(), "local": s.local_addr()?.to_string()})
    );
    std::io::stdout().flush()?;
    if wait_stdin {
        wait_line()?;
    }
    let answer = vec![0xa5u8; reply];
    let mut buf = vec![0u8; 65536];
    let mut peers: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    for i in 0..datagrams {
        if i == 1 {
            // After the first datagram: let the rest of a burst pile up,
            // then stop reading once none came for `drain`.
            std::thread::sleep(read_after);
            if drain.is_some() {
                s.set_read_timeout(drain)?;
            }
        }
        let (n, from) = match s.recv_from(&mut buf) {
            Ok(got) => got,
            Err(e)
                if drain.is_some()
                    && matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
            {
                break;
            }
            Err(e) => return Err(e).context("waiting for a datagram"),
        };
        let e = peers.entry(from.to_string()).or_default();
        e.0 += 1;
        e.1 += n as u64;
        if reply > 0 {
            s.send_to(&answer, from)?;
        }
    }
    let peers: serde_json::Map<String, serde_json::Value> = peers
        .into_iter()
        .map(|(k, (d, b))| (k, serde_json::json!({"datagrams": d, "bytes": b})))
        .collect();
    println!("{}", serde_json::json!({"event": "done", "peers": peers}));
    Ok(())
}

#[expect(
    clippy::too_many_arguments,
    reason = "one flag per option of the udp-client command"
)]
fn udp_client(
    to: &[SocketAddr],
    bind: Option<SocketAddr>,
    connected: bool,
    count: u64,
    size: usize,
    reply: usize,
    name: &Option<String>,
    gap: Duration,
) -> Result<()> {
    set_name(name)?;
    let first = to[0];
    let bind = bind.unwrap_or_else(|| match first {
        SocketAddr::V4(_) => "0.0.0.0:0".parse().expect("literal"),
        SocketAddr::V6(_) => "[::]:0".parse().expect("literal"),
    });
    let s = UdpSocket::bind(bind).with_context(|| format!("bind {bind}"))?;
    s.set_read_timeout(Some(UDP_TIMEOUT))?;
    if connected {
        if to.len() != 1 {
            bail!("--connected takes one --to");
        }
        s.connect(first)
            .with_context(|| format!("connect {first}"))?;
    }
    let payload = vec![0x5au8; size];
    let mut buf = vec![0u8; 65536];
    let mut last_round = 0.0;
    for _ in 0..count {
        last_round = unix_now();
        for dest in to {
            if !gap.is_zero() {
                std::thread::sleep(gap);
            }
            if connected {
                s.send(&payload)?;
            } else {
                s.send_to(&payload, dest)?;
            }
            if reply > 0 {
                let n = if connected {
                    s.recv(&mut buf)
                } else {
                    s.recv_from(&mut buf).map(|(n, _)| n)
                }
                .context("waiting for the answer")?;
                if n != reply {
                    bail!("answer of {n} bytes, {reply} expected");
                }
            }
        }
    }
    println!(
        "{}",
        serde_json::json!({
            "event": "done", "pid": std::process::id(), "local": s.local_addr()?.to_string(),
            // Wall clock before the last round of datagrams: every flow of
            // this socket saw a datagram after it.
            "last_round_ts": last_round,
        })
    );
    Ok(())
}

fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}
