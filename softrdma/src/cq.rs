//! A completion queue's shared state: the completions the engine pushes and
//! the application takes, and the arming of `ibv_req_notify_cq` that turns
//! one push into an event on the CQ's completion channel
//! ([`crate::channel`]).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};

use verbs_api::WorkCompletion;

use crate::channel::ChannelInner;

/// `CqInner::armed`: not armed.
const DISARMED: u8 = 0;
/// Armed for the next solicited completion (`ibv_req_notify_cq(cq, 1)`).
const ARMED_SOLICITED: u8 = 1;
/// Armed for the next completion of any kind (`ibv_req_notify_cq(cq, 0)`).
const ARMED_NEXT: u8 = 2;

#[derive(Debug)]
pub struct CqInner {
    pub cqn: u32,
    pub cap: usize,
    /// Threads blocked in `Cq::wait` (a completion wakes only if there are any).
    pub waiters: AtomicUsize,
    pub queue: Mutex<VecDeque<WorkCompletion>>,
    /// How many completions `queue` holds, stored under its lock. A poll
    /// that finds none returns without the lock: an application spinning on
    /// an empty CQ took and let go of it back to back, and std's mutex is
    /// not fair. A stack snapshot of a stalled device under load showed its
    /// receive thread waiting for this lock to push a completion, holding
    /// the core and link locks meanwhile (docs/design.md, "Busy polling").
    pub queued: AtomicUsize,
    pub ready: Condvar,
    pub overflow: AtomicBool,
    /// `DISARMED`, `ARMED_SOLICITED` or `ARMED_NEXT`. Written and read under
    /// `queue`'s lock, so that an arming either precedes a push (which then
    /// reports) or follows it (and the caller's poll after arming finds
    /// the completion): the order `ibv_req_notify_cq(3)` users rely on.
    armed: AtomicU8,
    /// Where an armed CQ reports; none for a CQ made without a channel.
    pub channel: Option<Arc<ChannelInner>>,
    /// Events the channel handed out for this CQ and not yet acknowledged.
    pub events_unacked: AtomicU32,
    /// Whether the application has armed this CQ, having a channel: it
    /// sleeps on the CQ's events between polls (`SoftCq::drive`).
    sleeps_on_events: AtomicBool,
}

impl CqInner {
    pub fn new(cqn: u32, cap: usize, channel: Option<Arc<ChannelInner>>) -> Self {
        CqInner {
            cqn,
            cap,
            waiters: Default::default(),
            queue: Mutex::new(VecDeque::new()),
            queued: Default::default(),
            ready: Condvar::new(),
            overflow: AtomicBool::new(false),
            armed: AtomicU8::new(DISARMED),
            channel,
            events_unacked: AtomicU32::new(0),
            sleeps_on_events: AtomicBool::new(false),
        }
    }

    /// Adds a completion; false if the CQ was full (the completion is lost,
    /// as on hardware, and the CQ is marked overflowed). `solicited`: see
    /// `transport::qp::Completion::solicited`.
    pub(crate) fn push(&self, wc: WorkCompletion, solicited: bool) -> bool {
        let Ok(mut q) = self.queue.lock() else { return false };
        if q.len() >= self.cap {
            self.overflow.store(true, Ordering::Release);
            return false;
        }
        q.push_back(wc);
        self.queued.store(q.len(), Ordering::Release);
        let armed = self.armed.load(Ordering::Relaxed);
        let report = armed == ARMED_NEXT || armed == ARMED_SOLICITED && solicited;
        if report {
            self.armed.store(DISARMED, Ordering::Relaxed);
        }
        if self.waiters.load(Ordering::Acquire) > 0 {
            self.ready.notify_all();
        }
        drop(q);
        if report {
            if let Some(ch) = &self.channel {
                ch.post(self.cqn);
            }
        }
        true
    }

    /// `ibv_req_notify_cq`. Arming for the next completion is not narrowed
    /// by a later arming for solicited ones (kernel rxe does the same).
    pub fn arm(&self, solicited_only: bool) {
        let want = if solicited_only { ARMED_SOLICITED } else { ARMED_NEXT };
        if self.channel.is_some() {
            self.sleeps_on_events.store(true, Ordering::Relaxed);
        }
        let _q = self.queue.lock();
        if self.armed.load(Ordering::Relaxed) < want {
            self.armed.store(want, Ordering::Relaxed);
        }
    }

    /// Whether the application sleeps on this CQ's events: it has armed
    /// the CQ, which has a channel. (Not just "armed now": between a
    /// completion that fired the event and the re-arming, a poll must not
    /// switch the device to busy polling.)
    pub fn sleeps_on_events(&self) -> bool {
        self.sleeps_on_events.load(Ordering::Relaxed)
    }

    /// Takes up to `max` completions into `out`; none without the lock when
    /// the queue is empty.
    pub fn take(&self, max: usize, mut out: impl FnMut(WorkCompletion)) -> usize {
        if max == 0 || self.queued.load(Ordering::Acquire) == 0 {
            return 0;
        }
        let Ok(mut q) = self.queue.lock() else { return 0 };
        Self::take_locked(&mut q, &self.queued, max, &mut out)
    }

    /// `take` with the lock already held (`Cq::wait`).
    pub fn take_locked(
        q: &mut VecDeque<WorkCompletion>,
        queued: &AtomicUsize,
        max: usize,
        out: &mut impl FnMut(WorkCompletion),
    ) -> usize {
        let n = max.min(q.len());
        for c in q.drain(..n) {
            out(c);
        }
        queued.store(q.len(), Ordering::Release);
        n
    }
}
