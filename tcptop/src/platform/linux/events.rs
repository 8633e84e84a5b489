//! Drains the lifecycle ring buffer.
//!
//! The kernel side submits without waking us: it forces a wake-up only once
//! the buffer is 1/8 full, and then a thread drains it into a bounded
//! queue. A burst of short connections costs no wake-up per event, and an
//! idle machine none at all (the thread's poll timeout is only a safety
//! net). `drain()` (at each collection) takes the queue and empties the ring
//! itself, so it returns everything submitted before the call.
//!
//! Back-pressure: when the queue is full (the collector is not keeping up,
//! e.g. stdout is blocked), the thread stops draining; the ring fills and the
//! kernel side counts what it cannot submit. Memory stays bounded and every
//! loss is counted.

use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::{
    Arc, Mutex, MutexGuard,
    atomic::{AtomicBool, Ordering},
};
use std::thread::JoinHandle;

use aya::maps::{MapData, RingBuf};
use rustix::event::{EventfdFlags, PollFd, PollFlags, Timespec, eventfd, poll};
use tcptop_common::ConnEvent;

/// The kernel wakes the thread when the ring fills past 1/8; this is only a
/// backstop (a wake-up every 100 ms cost an idle tcptop more than the rest
/// of its work).
const POLL_TIMEOUT: Timespec = Timespec {
    tv_sec: 1,
    tv_nsec: 0,
};
/// Events held between two collections (about 35 MB at most).
const QUEUE_CAP: usize = 200_000;

struct Shared {
    ring: Mutex<RingBuf<MapData>>,
    queue: Mutex<Vec<ConnEvent>>,
    stop: AtomicBool,
    /// The ring's descriptor, duplicated, for poll: the thread waits with
    /// the ring unlocked.
    ring_fd: OwnedFd,
    /// An eventfd that wakes the thread from poll when it should stop.
    wake: OwnedFd,
}

pub struct EventQueue {
    shared: Arc<Shared>,
    handle: Option<JoinHandle<()>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic elsewhere cannot leave these half-updated: keep going.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl EventQueue {
    pub fn start(ring: RingBuf<MapData>) -> io::Result<Self> {
        let wake = eventfd(0, EventfdFlags::CLOEXEC | EventfdFlags::NONBLOCK)?;
        let ring_fd = ring.as_fd().try_clone_to_owned()?;
        let shared = Arc::new(Shared {
            ring: Mutex::new(ring),
            ring_fd,
            queue: Mutex::new(Vec::new()),
            stop: AtomicBool::new(false),
            wake,
        });
        let mut q = EventQueue {
            shared,
            handle: None,
        };
        q.resume()?;
        Ok(q)
    }

    /// Stops the draining thread; events wait in the ring meanwhile.
    /// Privileges are dropped per thread, so they are dropped while this
    /// thread is away.
    pub fn pause(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = rustix::io::write(&self.shared.wake, &1u64.to_ne_bytes());
            let _ = h.join();
        }
    }

    /// Starts the draining thread (again), with the calling thread's
    /// credentials.
    pub fn resume(&mut self) -> io::Result<()> {
        if self.handle.is_none() {
            // Resets the eventfd (EAGAIN when it was not signalled).
            let _ = rustix::io::read(&self.shared.wake, &mut [0u8; 8]);
            self.shared.stop.store(false, Ordering::Relaxed);
            let s = Arc::clone(&self.shared);
            let handle = std::thread::Builder::new()
                .name("tcptop-events".into())
                .spawn(move || run(&s))?;
            self.handle = Some(handle);
        }
        Ok(())
    }

    /// Replaces `out` with everything submitted so far, in order. The two
    /// buffers trade places, so neither is reallocated once warm (under
    /// churn a snapshot carries tens of thousands of events).
    pub fn drain_into(&self, out: &mut Vec<ConnEvent>) {
        out.clear();
        let mut ring = lock(&self.shared.ring);
        std::mem::swap(&mut *lock(&self.shared.queue), out);
        pull(&mut ring, out, usize::MAX);
    }
}

impl Drop for EventQueue {
    fn drop(&mut self) {
        self.pause();
    }
}

fn pull(ring: &mut RingBuf<MapData>, out: &mut Vec<ConnEvent>, cap: usize) {
    while out.len() < cap {
        let Some(item) = ring.next() else { break };
        if let Some(ev) = decode(&item) {
            out.push(ev);
        }
    }
}

fn run(s: &Shared) {
    while !s.stop.load(Ordering::Relaxed) {
        let mut pfds = [
            PollFd::new(&s.ring_fd, PollFlags::IN),
            PollFd::new(&s.wake, PollFlags::IN),
        ];
        let _ = poll(&mut pfds, Some(&POLL_TIMEOUT));
        let mut ring = lock(&s.ring);
        let mut queue = lock(&s.queue);
        pull(&mut ring, &mut queue, QUEUE_CAP);
    }
}

/// Decodes an event from ring-buffer bytes without assuming alignment.
fn decode(bytes: &[u8]) -> Option<ConnEvent> {
    if bytes.len() < std::mem::size_of::<ConnEvent>() {
        return None;
    }
    // SAFETY: length checked; ConnEvent is plain old data (every bit pattern
    // valid), and read_unaligned makes no alignment assumption. Aya hands
    // ring-buffer records out as bytes and has no typed read; zerocopy or
    // bytemuck would need derives on tcptop-common's kernel-shared types
    // for this one read.
    Some(unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<ConnEvent>()) })
}
