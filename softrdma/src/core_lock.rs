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
//! for it (docs/benchmarks-history.md, `post_loaded`).
//!
//! Order on the wire is the order in which threads held the lock: each
//! batch takes a ticket under the lock (`Core::tx_next`), and batches are
//! written in ticket order (`Shared::tx_serving`). Every thread writes its
//! own frames, so none is kept writing for others, and keeps their buffers
//! for its next ones.

use std::cell::RefCell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Condvar, MutexGuard};
use std::time::Duration;

use crate::engine::{Core, Shared};

/// Written frames' buffers a thread keeps for its next frames; more are
/// freed.
const MAX_KEPT: usize = 64;

/// What a writer keeps of its batches: the buffers, and the batch itself.
/// Each thread writes its own frames, so it can keep them without a lock
/// and reuse them hot: the next frame it queues is built in the buffer it
/// wrote last.
#[derive(Default)]
struct Kept {
    bufs: Vec<Vec<u8>>,
    batch: Vec<Vec<u8>>,
}

thread_local! {
    static KEPT: RefCell<Kept> = RefCell::new(Kept::default());
}

/// A buffer this thread wrote before, if it kept one.
pub(crate) fn kept_buffer() -> Option<Vec<u8>> {
    KEPT.try_with(|k| k.try_borrow_mut().ok()?.bufs.pop()).ok().flatten()
}

/// The batch (emptied, with its capacity) this thread wrote last, if any.
fn kept_batch() -> Vec<Vec<u8>> {
    KEPT.try_with(|k| k.try_borrow_mut().map(|mut k| std::mem::take(&mut k.batch)).unwrap_or_default())
        .unwrap_or_default()
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

/// A writer's turn; ending it (even by unwinding) lets the next batch go,
/// so a writer that failed cannot hold up the device's later frames.
struct Turn<'a> {
    serving: &'a AtomicU64,
    next: u64,
}

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        self.serving.store(self.next, Ordering::Release);
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
        let mut batch = std::mem::replace(&mut g.txq, kept_batch());
        drop(g);
        // Batches ahead of this one are being written; they are short (a
        // window of frames), and their writers need no lock to finish.
        while self.tx_serving.load(Ordering::Acquire) != ticket {
            std::thread::yield_now();
        }
        let turn = Turn { serving: &self.tx_serving, next: ticket + 1 };
        // The link writes the batch frame by frame, or (a TAP with UDP
        // segmentation) in runs.
        crate::turn_trace::mark(crate::turn_trace::Stage::TxWrite);
        let failed = self.send_all(&mut batch);
        crate::turn_trace::mark(crate::turn_trace::Stage::TxWritten);
        drop(turn);
        self.count_failed(failed as u64);
        let _ = KEPT.try_with(|k| {
            if let Ok(mut k) = k.try_borrow_mut() {
                for f in batch.drain(..) {
                    if k.bufs.len() < MAX_KEPT {
                        // Not cleared: the next frame, likely of the same
                        // length, is emitted over it without zeroing it first.
                        k.bufs.push(f);
                    }
                }
                k.batch = batch;
            }
        });
    }
}
