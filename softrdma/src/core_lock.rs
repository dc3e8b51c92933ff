//! The device's core lock, and the frames written once it is let go.
//!
//! On a link whose sends are system calls (a TAP: each `write(2)` carries
//! the frame through the bridges on the caller's CPU, ≈ 2–2.5 µs), a flush
//! does not write under the lock: it queues its frames (`Core::txq`), and
//! [`CoreGuard`] writes them after unlocking. Meanwhile other threads can
//! take the lock — the receive thread with an ACK, an application polling
//! its CQ or posting on another QP — instead of waiting out a window of
//! writes, and waiting on a lock that is not fair: a thread that streams
//! retakes it at once, and others waited up to hundreds of milliseconds
//! for it (docs/benchmarks.md, `post_loaded`).
//!
//! Order on the wire is the order in which threads held the lock: each
//! batch takes a ticket under the lock (`Core::tx_next`), and batches are
//! written in ticket order (`Shared::tx_serving`). Every thread writes its
//! own frames, so none is kept writing for others.

use std::sync::atomic::Ordering;
use std::sync::{Condvar, MutexGuard};
use std::time::Duration;

use crate::engine::{Core, Shared};

/// Spare frame buffers a device keeps; more are freed.
pub(crate) const MAX_SPARE: usize = 256;

/// Written frames' buffers and emptied batches, returned by writers
/// without the core lock and taken back under it (`Shared::tx_spent`).
#[derive(Default)]
pub(crate) struct Spent {
    bufs: Vec<Vec<u8>>,
    batches: Vec<Vec<Vec<u8>>>,
}

/// The core lock held; derefs to [`Core`]. Dropping it writes what the
/// holder queued (see the module docs).
pub struct CoreGuard<'a> {
    shared: &'a Shared,
    // `None` only inside `drop` and `wait_timeout`.
    guard: Option<MutexGuard<'a, Core>>,
}

impl<'a> CoreGuard<'a> {
    pub(crate) fn new(shared: &'a Shared, guard: MutexGuard<'a, Core>) -> Self {
        CoreGuard { shared, guard: Some(guard) }
    }

    /// Writes the queued frames now, letting go of the lock meanwhile.
    pub fn write_out(&mut self) {
        if let Some(g) = self.guard.take_if(|g| !g.txq.is_empty()) {
            self.shared.unlock(g);
            self.guard = Some(self.shared.lock_raw());
        }
    }

    /// `Condvar::wait_timeout` on the core lock. Queued frames are written
    /// first: a wait lets go of the lock without passing through `drop`.
    pub fn wait_timeout(mut self, cv: &Condvar, timeout: Duration) -> Self {
        self.write_out();
        let shared = self.shared;
        let Some(g) = self.guard.take() else { return self };
        let g = cv.wait_timeout(g, timeout).map(|(g, _)| g).unwrap_or_else(|e| e.into_inner().0);
        CoreGuard::new(shared, g)
    }
}

impl std::ops::Deref for CoreGuard<'_> {
    type Target = Core;
    fn deref(&self) -> &Core {
        self.guard.as_deref().expect("the core guard is held until drop")
    }
}

impl std::ops::DerefMut for CoreGuard<'_> {
    fn deref_mut(&mut self) -> &mut Core {
        self.guard.as_deref_mut().expect("the core guard is held until drop")
    }
}

impl Drop for CoreGuard<'_> {
    fn drop(&mut self) {
        if let Some(g) = self.guard.take() {
            self.shared.unlock(g);
        }
    }
}

impl Shared {
    /// Lets go of the core lock, then writes the frames queued under it
    /// once the batches of earlier holders are out.
    fn unlock<'a>(&'a self, mut g: MutexGuard<'a, Core>) {
        if g.txq.is_empty() {
            return;
        }
        let ticket = g.tx_next;
        g.tx_next += 1;
        let refill = self.tx_spent.try_lock().ok().and_then(|mut s| s.batches.pop()).unwrap_or_default();
        let mut batch = std::mem::replace(&mut g.txq, refill);
        drop(g);
        // Batches ahead of this one are being written; they are short (a
        // window of frames), and the writer needs no lock to finish.
        while self.tx_serving.load(Ordering::Acquire) != ticket {
            std::thread::yield_now();
        }
        let mut sent = 0;
        for f in &batch {
            if self.send_now(f).is_ok() {
                sent += 1;
            }
        }
        self.count_sent(sent, batch.len() as u64 - sent);
        {
            let mut s = self.tx_spent.lock().unwrap_or_else(|e| e.into_inner());
            for mut f in batch.drain(..) {
                if s.bufs.len() < MAX_SPARE {
                    f.clear();
                    s.bufs.push(f);
                }
            }
            if s.batches.len() < 4 {
                s.batches.push(batch);
            }
        }
        self.tx_serving.store(ticket + 1, Ordering::Release);
    }

    /// Takes back the buffers writers returned (unless one is returning
    /// some right now), on top of the spares, so the next frame is built in
    /// the buffer written last.
    pub(crate) fn reclaim(&self, core: &mut Core) {
        if let Ok(mut s) = self.tx_spent.try_lock() {
            if !s.bufs.is_empty() {
                core.spare.append(&mut s.bufs);
                let excess = core.spare.len().saturating_sub(MAX_SPARE);
                core.spare.drain(..excess);
            }
        }
    }
}
