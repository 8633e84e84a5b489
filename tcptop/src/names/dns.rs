//! Reverse DNS for remote addresses, off the render path.
//!
//! [`Resolver::lookup`] answers from a cache at once and, on a miss or an
//! expired entry, schedules a lookup; lookups run on short-lived worker
//! threads (at most [`Config::max_in_flight`] at a time, the rest in a
//! bounded queue; beyond it a request is dropped and made again the next time
//! the address is looked up). [`Resolver::poll`] collects finished lookups
//! without blocking. The cache holds at most [`Config::capacity`] addresses,
//! least recently used first out. Failures are cached too, for a shorter
//! time, so an address without a name is not asked for on every frame.
//!
//! Names come from the network: they are capped in length here and must be
//! escaped (`escape::untrusted`) before display.

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::mpsc::{Receiver, Sender, channel};
use std::time::{Duration, Instant};

/// Longest DNS name (RFC 1035), without the trailing dot.
pub const MAX_NAME: usize = 253;

/// Turns an address into a name, or None. Runs on a worker thread and may
/// block for as long as the system resolver takes.
pub type ResolveFn = Arc<dyn Fn(IpAddr) -> Option<String> + Send + Sync>;

#[derive(Clone, Copy, Debug)]
pub struct Config {
    /// Addresses cached at most.
    pub capacity: usize,
    /// Lookups running at once at most.
    pub max_in_flight: usize,
    /// Lookups waiting for a worker at most.
    pub max_queued: usize,
    /// How long a name is kept.
    pub ttl_name: Duration,
    /// How long "no name" is kept before asking again.
    pub ttl_no_name: Duration,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            capacity: 4096,
            max_in_flight: 4,
            max_queued: 256,
            ttl_name: Duration::from_secs(30 * 60),
            ttl_no_name: Duration::from_secs(5 * 60),
        }
    }
}

#[derive(Debug)]
struct Entry {
    /// None: the address has no name (or the lookup failed).
    name: Option<Box<str>>,
    expires: Instant,
    /// Recency, for eviction.
    used: u64,
}

pub struct Resolver {
    config: Config,
    resolve: ResolveFn,
    cache: HashMap<IpAddr, Entry>,
    /// Addresses queued or being looked up.
    pending: HashSet<IpAddr>,
    queue: VecDeque<IpAddr>,
    in_flight: usize,
    /// Use counter, for recency.
    clock: u64,
    tx: Sender<(IpAddr, Option<String>)>,
    /// Changes to the cache's names (see `generation`).
    generation: u64,
    rx: Receiver<(IpAddr, Option<String>)>,
}

impl std::fmt::Debug for Resolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Resolver")
            .field("cached", &self.cache.len())
            .field("pending", &self.pending.len())
            .field("in_flight", &self.in_flight)
            .finish_non_exhaustive()
    }
}

impl Resolver {
    /// A resolver that looks addresses up with `resolve`.
    pub fn new(config: Config, resolve: ResolveFn) -> Resolver {
        let (tx, rx) = channel();
        Resolver {
            config: Config {
                capacity: config.capacity.max(1),
                max_in_flight: config.max_in_flight.max(1),
                ..config
            },
            resolve,
            cache: HashMap::new(),
            pending: HashSet::new(),
            queue: VecDeque::new(),
            in_flight: 0,
            clock: 0,
            tx,
            generation: 0,
            rx,
        }
    }

    /// The system resolver (`getnameinfo`: /etc/hosts, DNS…), default limits.
    pub fn system() -> Resolver {
        Resolver::new(Config::default(), Arc::new(system_lookup))
    }

    /// A resolver that never finds a name and never asks anyone.
    pub fn none() -> Resolver {
        Resolver::new(Config::default(), Arc::new(|_| None))
    }

    /// The cached name of `ip`; schedules a lookup if it is not cached or
    /// its entry expired (an expired name is still returned meanwhile).
    pub fn lookup(&mut self, ip: IpAddr) -> Option<&str> {
        self.lookup_at(ip, Instant::now())
    }

    /// [`lookup`](Self::lookup) at time `now`.
    pub fn lookup_at(&mut self, ip: IpAddr, now: Instant) -> Option<&str> {
        if ip.is_unspecified() {
            return None;
        }
        self.clock += 1;
        let fresh = match self.cache.get_mut(&ip) {
            Some(e) => {
                e.used = self.clock;
                now < e.expires
            }
            None => false,
        };
        if !fresh {
            self.schedule(ip);
        }
        self.cached(ip)
    }

    /// The cached name of `ip`, without scheduling anything.
    pub fn cached(&self, ip: IpAddr) -> Option<&str> {
        self.cache.get(&ip).and_then(|e| e.name.as_deref())
    }

    /// Whether a lookup of `ip` is queued or running.
    pub fn is_pending(&self, ip: IpAddr) -> bool {
        self.pending.contains(&ip)
    }

    /// Whether `ip` was looked up (with or without a name).
    pub fn is_known(&self, ip: IpAddr) -> bool {
        self.cache.contains_key(&ip)
    }

    /// Lookups queued or running.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// Addresses cached (with or without a name).
    pub fn len(&self) -> usize {
        self.cache.len()
    }

    pub fn is_empty(&self) -> bool {
        self.cache.is_empty()
    }

    /// Addresses whose cached name contains `needle` (lower case).
    pub fn matching<'a>(&'a self, needle: &'a str) -> impl Iterator<Item = IpAddr> + 'a {
        self.cache.iter().filter_map(move |(ip, e)| {
            let name = e.name.as_deref()?;
            super::contains_ignore_case(name, needle).then_some(*ip)
        })
    }

    /// Collects finished lookups and starts queued ones; never blocks.
    /// True if a name appeared, changed or went away.
    pub fn poll(&mut self) -> bool {
        self.poll_at(Instant::now())
    }

    /// Waits up to `timeout` for a lookup to finish (tests: instead of
    /// polling in a sleep loop), then takes every finished one. None if
    /// none finished; else whether a name appeared, changed or went away.
    pub fn wait(&mut self, timeout: std::time::Duration) -> Option<bool> {
        let result = self.rx.recv_timeout(timeout).ok()?;
        let now = Instant::now();
        let changed = self.accept(result, now);
        Some(self.poll_at(now) | changed)
    }

    /// [`poll`](Self::poll) at time `now`.
    pub fn poll_at(&mut self, now: Instant) -> bool {
        let mut changed = false;
        while let Ok(result) = self.rx.try_recv() {
            changed |= self.accept(result, now);
        }
        self.start_queued();
        changed
    }

    /// Takes one finished lookup into the cache; true if a name appeared,
    /// changed or went away.
    /// Moves whenever a cached name appears, changes or goes away (a
    /// display that filters by names caches its lines until it moves).
    pub fn generation(&self) -> u64 {
        self.generation
    }

    fn accept(&mut self, (ip, name): (IpAddr, Option<String>), now: Instant) -> bool {
        self.in_flight = self.in_flight.saturating_sub(1);
        self.pending.remove(&ip);
        let name = name.and_then(|n| sanitize(&n));
        let ttl = if name.is_some() {
            self.config.ttl_name
        } else {
            self.config.ttl_no_name
        };
        let old = self.cache.get(&ip).and_then(|e| e.name.as_deref());
        let changed = old != name.as_deref();
        self.generation += u64::from(changed);
        self.clock += 1;
        self.cache.insert(
            ip,
            Entry {
                name,
                expires: now + ttl,
                used: self.clock,
            },
        );
        self.evict();
        changed
    }

    fn schedule(&mut self, ip: IpAddr) {
        if self.pending.contains(&ip) {
            return;
        }
        if self.in_flight < self.config.max_in_flight {
            self.start(ip);
        } else if self.queue.len() < self.config.max_queued {
            self.pending.insert(ip);
            self.queue.push_back(ip);
        }
        // Otherwise dropped: asked again the next time it is looked up.
    }

    fn start_queued(&mut self) {
        while self.in_flight < self.config.max_in_flight {
            let Some(ip) = self.queue.pop_front() else {
                break;
            };
            self.pending.remove(&ip);
            self.start(ip);
        }
    }

    fn start(&mut self, ip: IpAddr) {
        let resolve = Arc::clone(&self.resolve);
        let tx = self.tx.clone();
        let spawned = std::thread::Builder::new()
            .name("tcptop-dns".into())
            .spawn(move || {
                let name = resolve(ip);
                // The resolver may be gone (the display quit): nobody to tell.
                let _ = tx.send((ip, name));
            });
        if spawned.is_ok() {
            self.in_flight += 1;
            self.pending.insert(ip);
        }
        // A thread that cannot start (resource limits) is retried later.
    }

    /// Drops least recently used entries beyond the capacity.
    fn evict(&mut self) {
        while self.cache.len() > self.config.capacity {
            let Some(oldest) = self
                .cache
                .iter()
                .min_by_key(|(_, e)| e.used)
                .map(|(ip, _)| *ip)
            else {
                break;
            };
            self.cache.remove(&oldest);
        }
    }
}

/// What is kept of a name from outside: without a trailing dot, at most
/// [`MAX_NAME`] bytes (cut at a character boundary); None if empty.
/// Control characters are kept here and escaped at display.
pub fn sanitize(name: &str) -> Option<Box<str>> {
    let name = name.trim_end_matches('.');
    let mut end = name.len().min(MAX_NAME);
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    let name = &name[..end];
    (!name.is_empty()).then(|| name.into())
}

/// `getnameinfo(3)` with `NI_NAMEREQD` (dns-lookup): the name of `ip`, or
/// None if it has none (or one that is not UTF-8). Blocks (DNS timeouts):
/// call it on a worker thread.
pub fn system_lookup(ip: IpAddr) -> Option<String> {
    // Port 0, given as a number: no service look-up.
    let flags = libc::NI_NAMEREQD | libc::NI_NUMERICSERV;
    dns_lookup::getnameinfo(&SocketAddr::new(ip, 0), flags)
        .ok()
        .map(|(host, _service)| host)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Condvar, Mutex};

    /// Takes finished lookups until `done` or a few seconds passed
    /// (blocking on the workers' results, never sleeping).
    fn poll_until(r: &mut Resolver, mut done: impl FnMut(&mut Resolver) -> bool) -> bool {
        let deadline = Instant::now() + Duration::from_secs(60);
        r.poll();
        while !done(r) {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || r.wait(left).is_none() {
                return done(r);
            }
        }
        true
    }

    /// Whether /etc/hosts names `ip` (so that resolving it asks no server).
    fn in_etc_hosts(ip: &str) -> bool {
        std::fs::read_to_string("/etc/hosts").is_ok_and(|t| {
            t.lines().any(|l| {
                l.split_whitespace().next() == Some(ip) && l.split_whitespace().count() > 1
            })
        })
    }

    #[test]
    fn loopback_names_from_etc_hosts() {
        for ip in ["127.0.0.1", "::1"] {
            // Only addresses /etc/hosts knows: no query may leave the host.
            if !in_etc_hosts(ip) {
                eprintln!("skipping {ip}: not in /etc/hosts");
                continue;
            }
            let ip: IpAddr = ip.parse().unwrap();
            let mut r = Resolver::system();
            assert_eq!(r.lookup(ip), None, "asynchronous");
            assert!(poll_until(&mut r, |r| r.is_known(ip)), "{ip} not resolved");
            let name = r.lookup(ip).unwrap_or("");
            assert!(
                name.starts_with("localhost") || name.starts_with("ip6-"),
                "{ip} → {name:?}"
            );
        }
    }

    /// A fake resolver that blocks until released and counts concurrent calls.
    struct Gate {
        open: Mutex<bool>,
        cv: Condvar,
        now: AtomicUsize,
        max: AtomicUsize,
        calls: AtomicUsize,
    }

    impl Gate {
        fn new() -> Arc<Gate> {
            Arc::new(Gate {
                open: Mutex::new(false),
                cv: Condvar::new(),
                now: AtomicUsize::new(0),
                max: AtomicUsize::new(0),
                calls: AtomicUsize::new(0),
            })
        }

        fn resolver(self: &Arc<Gate>, config: Config) -> Resolver {
            let g = Arc::clone(self);
            Resolver::new(
                config,
                Arc::new(move |ip| {
                    let n = g.now.fetch_add(1, Ordering::SeqCst) + 1;
                    g.max.fetch_max(n, Ordering::SeqCst);
                    g.calls.fetch_add(1, Ordering::SeqCst);
                    let mut open = g.open.lock().unwrap();
                    while !*open {
                        open = g.cv.wait(open).unwrap();
                    }
                    drop(open);
                    g.now.fetch_sub(1, Ordering::SeqCst);
                    Some(format!("host-{ip}"))
                }),
            )
        }

        fn release(&self) {
            *self.open.lock().unwrap() = true;
            self.cv.notify_all();
        }
    }

    fn v4(n: u32) -> IpAddr {
        IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000u32 + n))
    }

    #[test]
    fn concurrency_and_queue_are_bounded() {
        let gate = Gate::new();
        let mut r = gate.resolver(Config {
            max_in_flight: 3,
            max_queued: 5,
            ..Config::default()
        });
        for n in 0..20 {
            assert_eq!(r.lookup(v4(n)), None, "never blocks");
        }
        // Three running, five queued, the other twelve dropped.
        assert_eq!(r.pending(), 8);
        let deadline = Instant::now() + Duration::from_secs(60);
        while gate.now.load(Ordering::SeqCst) < 3 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(2));
        }
        assert!(!r.poll(), "nothing finished");
        assert_eq!(gate.calls.load(Ordering::SeqCst), 3);
        gate.release();
        assert!(poll_until(&mut r, |r| r.pending() == 0));
        assert_eq!(gate.max.load(Ordering::SeqCst), 3);
        assert_eq!(gate.calls.load(Ordering::SeqCst), 8);
        assert_eq!(r.len(), 8);
        assert_eq!(r.lookup(v4(7)), Some("host-10.0.0.7"));
        // A dropped request is made again when asked again.
        assert_eq!(r.lookup(v4(19)), None);
        assert!(poll_until(&mut r, |r| r.cached(v4(19)).is_some()));
    }

    #[test]
    fn cache_is_capped_least_recently_used_first() {
        let mut r = Resolver::new(
            Config {
                capacity: 4,
                max_in_flight: 8,
                ..Config::default()
            },
            Arc::new(|ip| Some(format!("h{ip}"))),
        );
        for n in 0..4 {
            r.lookup(v4(n));
        }
        assert!(poll_until(&mut r, |r| r.len() == 4 && r.pending() == 0));
        // Used in this order (results arrive in any): 10.0.0.1 is the oldest.
        for n in [1, 2, 3, 0] {
            assert!(r.lookup(v4(n)).is_some());
        }
        for n in 4..6 {
            r.lookup(v4(n));
        }
        assert!(poll_until(&mut r, |r| r.pending() == 0));
        assert_eq!(r.len(), 4);
        assert!(r.is_known(v4(0)));
        assert!(!r.is_known(v4(1)) && !r.is_known(v4(2)));
        assert!(r.is_known(v4(5)));
    }

    #[test]
    fn failures_are_cached_then_retried() {
        let calls = Arc::new(AtomicUsize::new(0));
        let c = Arc::clone(&calls);
        let mut r = Resolver::new(
            Config::default(),
            Arc::new(move |_| {
                c.fetch_add(1, Ordering::SeqCst);
                None
            }),
        );
        let ip = v4(1);
        let t0 = Instant::now();
        r.lookup_at(ip, t0);
        assert!(poll_until(&mut r, |r| r.is_known(ip)));
        // No name: nothing visible changed, and it is not asked again soon.
        assert_eq!(r.lookup_at(ip, t0 + Duration::from_secs(60)), None);
        assert_eq!(r.pending(), 0);
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        // After the TTL it is.
        r.lookup_at(ip, Instant::now() + Duration::from_secs(5 * 60 + 1));
        assert!(poll_until(&mut r, |_| calls.load(Ordering::SeqCst) == 2));
        // Unspecified addresses (listening sockets) are never looked up.
        assert_eq!(r.lookup("0.0.0.0".parse().unwrap()), None);
        assert_eq!(r.lookup("::".parse().unwrap()), None);
        assert!(poll_until(&mut r, |r| r.pending() == 0));
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn names_are_capped_and_escaped_at_display() {
        assert_eq!(sanitize("example.com.").as_deref(), Some("example.com"));
        assert_eq!(sanitize(".").as_deref(), None);
        assert_eq!(sanitize("").as_deref(), None);
        let long = "é".repeat(200);
        let s = sanitize(&long).unwrap();
        assert!(s.len() <= MAX_NAME && s.chars().all(|c| c == 'é'));
        let mut r = Resolver::new(
            Config::default(),
            Arc::new(|_| Some("evil\x1b[2J\x1b]0;pwned\x07.example".into())),
        );
        r.lookup(v4(1));
        assert!(poll_until(&mut r, |r| r.cached(v4(1)).is_some()));
        let shown = crate::escape::untrusted(r.cached(v4(1)).unwrap_or(""));
        assert_eq!(shown, "evil\\x1b[2J\\x1b]0;pwned\\x07.example");
    }
}
