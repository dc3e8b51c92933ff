//! Completion channels (`ibv_create_comp_channel`): an armed CQ
//! ([`crate::cq::CqInner::arm`]) puts one event here when a completion
//! arrives; `get_cq_event` takes it. The channel's fd is an eventfd in
//! semaphore mode holding one count per waiting event, so that an
//! application can sleep in poll(2) or epoll on it, as on
//! `ibv_comp_channel::fd`.

use std::collections::{HashMap, VecDeque};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, Weak};
use std::time::{Duration, Instant};

use rustix::event::{eventfd, EventfdFlags};
use verbs_api::{CompChannel, Cq, Result, VerbsError};

use crate::cq::CqInner;
use crate::engine::Shared;

pub struct ChannelInner {
    /// The CQs of the events waiting, oldest first.
    events: Mutex<VecDeque<u32>>,
    ready: Condvar,
    efd: OwnedFd,
}

impl std::fmt::Debug for ChannelInner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChannelInner").field("efd", &self.efd).finish_non_exhaustive()
    }
}

impl ChannelInner {
    /// An event for CQ `cqn` (called by the CQ that was armed, once per arming).
    pub(crate) fn post(&self, cqn: u32) {
        let Ok(mut q) = self.events.lock() else { return };
        q.push_back(cqn);
        // Cannot fail short of 2^64 - 2 waiting events.
        let _ = rustix::io::write(&self.efd, &1u64.to_ne_bytes());
        self.ready.notify_all();
    }

    /// The oldest event, if any; its count leaves the eventfd with it.
    fn take(&self, q: &mut VecDeque<u32>) -> Option<u32> {
        let cqn = q.pop_front()?;
        let mut b = [0u8; 8];
        let _ = rustix::io::read(&self.efd, &mut b);
        Some(cqn)
    }
}

/// A CQ made with a channel: the application's handle, and its state.
type Attached = (Weak<dyn Cq>, Weak<CqInner>);

/// `struct ibv_comp_channel` of a softrdma context.
pub struct SoftChannel {
    pub(crate) inner: Arc<ChannelInner>,
    /// The device, to stop busy polling before the caller sleeps.
    pub(crate) dev: Arc<Shared>,
    /// The CQs that report here, by number (`Weak`: a CQ lives as long as
    /// the application holds it, not as long as its channel).
    cqs: Mutex<HashMap<u32, Attached>>,
    destroyed: AtomicBool,
}

impl SoftChannel {
    pub(crate) fn new(dev: Arc<Shared>) -> Result<Self> {
        let flags = EventfdFlags::CLOEXEC | EventfdFlags::NONBLOCK | EventfdFlags::SEMAPHORE;
        let efd = eventfd(0, flags).map_err(|e| VerbsError::Io(format!("eventfd: {e}")))?;
        let inner = Arc::new(ChannelInner { events: Mutex::new(VecDeque::new()), ready: Condvar::new(), efd });
        Ok(SoftChannel { inner, dev, cqs: Mutex::new(HashMap::new()), destroyed: AtomicBool::new(false) })
    }

    pub(crate) fn is_destroyed(&self) -> bool {
        self.destroyed.load(Ordering::Acquire)
    }

    /// Records a CQ made with this channel.
    pub(crate) fn attach(&self, cq: &Arc<dyn Cq>, inner: &Arc<CqInner>) {
        if let Ok(mut m) = self.cqs.lock() {
            m.insert(inner.cqn, (Arc::downgrade(cq), Arc::downgrade(inner)));
        }
    }

    /// The CQ that made an event, counted as handed out, unless the
    /// application has dropped it.
    fn hand_out(&self, cqn: u32) -> Option<Arc<dyn Cq>> {
        let mut m = self.cqs.lock().ok()?;
        let (cq, inner) = m.get(&cqn)?;
        match (cq.upgrade(), inner.upgrade()) {
            (Some(cq), Some(inner)) => {
                inner.events_unacked.fetch_add(1, Ordering::AcqRel);
                Some(cq)
            }
            _ => {
                m.remove(&cqn);
                None
            }
        }
    }
}

impl CompChannel for SoftChannel {
    fn get_cq_event(&self, timeout: Duration) -> Option<Arc<dyn Cq>> {
        let deadline = Instant::now().checked_add(timeout);
        // A thread that sleeps on events does not drive its device: the
        // receive thread takes the link (`SoftCq::drive`).
        self.dev.stop_polling();
        let mut q = self.inner.events.lock().ok()?;
        loop {
            while let Some(cqn) = self.inner.take(&mut q) {
                if let Some(cq) = self.hand_out(cqn) {
                    return Some(cq);
                }
            }
            q = match deadline {
                None => self.inner.ready.wait(q).ok()?,
                Some(d) => {
                    let left = d.checked_duration_since(Instant::now())?;
                    if left.is_zero() {
                        return None;
                    }
                    self.inner.ready.wait_timeout(q, left).ok()?.0
                }
            };
        }
    }

    fn fd(&self) -> BorrowedFd<'_> {
        self.inner.efd.as_fd()
    }

    fn destroy(&self) -> Result<()> {
        let Ok(mut m) = self.cqs.lock() else { return Err(VerbsError::Io("channel lock poisoned".into())) };
        m.retain(|_, (w, _)| w.strong_count() > 0);
        if !m.is_empty() {
            return Err(VerbsError::Busy(format!("{} CQ(s) still report to this channel", m.len())));
        }
        self.destroyed.store(true, Ordering::Release);
        Ok(())
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}
