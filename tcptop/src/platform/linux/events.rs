//! Drains the lifecycle ring buffer on a thread of its own.
//!
//! The kernel side submits without waking us (it forces a wake-up only when
//! the buffer is filling), so the thread also drains on a short timer: a
//! burst of short connections costs no wake-ups per event, and the buffer
//! never waits longer than `POLL_MS` to be emptied.

use std::os::fd::AsRawFd;
use std::sync::{
    Arc,
    atomic::{AtomicBool, Ordering},
    mpsc::{self, Receiver, Sender},
};
use std::thread::JoinHandle;

use aya::maps::{MapData, RingBuf};
use tcptop_common::ConnEvent;

const POLL_MS: i32 = 100;

pub struct DrainThread {
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
}

impl DrainThread {
    pub fn spawn(ring: RingBuf<MapData>) -> std::io::Result<(Self, Receiver<ConnEvent>)> {
        let (tx, rx) = mpsc::channel();
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = Arc::clone(&stop);
        let handle = std::thread::Builder::new()
            .name("tcptop-events".into())
            .spawn(move || run(ring, &tx, &stop2))?;
        Ok((
            DrainThread {
                stop,
                handle: Some(handle),
            },
            rx,
        ))
    }
}

impl Drop for DrainThread {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

fn run(mut ring: RingBuf<MapData>, tx: &Sender<ConnEvent>, stop: &AtomicBool) {
    let fd = ring.as_raw_fd();
    while !stop.load(Ordering::Relaxed) {
        let mut pfd = libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd; a timeout bounds the wait.
        let _ = unsafe { libc::poll(&mut pfd, 1, POLL_MS) };
        while let Some(item) = ring.next() {
            if let Some(ev) = decode(&item)
                && tx.send(ev).is_err()
            {
                return;
            }
        }
    }
}

/// Decodes an event from ring-buffer bytes without assuming alignment.
fn decode(bytes: &[u8]) -> Option<ConnEvent> {
    if bytes.len() < std::mem::size_of::<ConnEvent>() {
        return None;
    }
    // SAFETY: length checked; ConnEvent is plain old data (every bit pattern
    // valid), and read_unaligned makes no alignment assumption.
    Some(unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<ConnEvent>()) })
}
