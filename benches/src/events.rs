//! perftest's `-e` (`--events`): "sleep on CQ events (default poll)". A
//! test's CQs are made with a completion channel each and armed, and a
//! poll that finds nothing sleeps on the channel until the CQ reports:
//! perftest's `ctx_notify_events` (take the event, acknowledge it, arm the
//! CQ again), then polls. [`EventCq`] does this behind the `Cq` trait, so
//! the tests' loops run unchanged with or without `-e`.
//!
//! perftest refuses `-e` for the WRITE tests, which poll memory, and with
//! `-D` ([`refusal`]).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use verbs_api::{CompChannel, Context, Cq, Result as VResult, WorkCompletion};

use crate::perf::Test;

/// The longest one sleep on the channel lasts before the poll returns
/// empty: callers check their stall clocks and stop flags between polls.
const NAP: Duration = Duration::from_millis(5);

/// Why perftest would refuse `-e` for this test, in its words
/// (perftest_parameters.c), if it would.
pub fn refusal(t: Test, duration: bool) -> Option<&'static str> {
    if matches!(t, Test::WriteBw | Test::WriteLat) {
        return Some(" Events feature not available on WRITE verb");
    }
    duration.then_some("Duration mode doesn't work with events.")
}

/// A test's CQ, and the same CQ as an `EventCq` if it is one.
pub type TestCq = (Arc<dyn Cq>, Option<Arc<EventCq>>);

/// A CQ whose polls sleep on its completion channel when they find nothing.
pub struct EventCq {
    cq: Arc<dyn Cq>,
    channel: Arc<dyn CompChannel>,
    events: AtomicU64,
}

impl EventCq {
    /// A CQ of `cqe` entries with a channel of its own, armed.
    pub fn create(ctx: &Arc<dyn Context>, cqe: u32) -> VResult<Arc<EventCq>> {
        let channel = ctx.create_comp_channel()?;
        let cq = ctx.create_cq_with_channel(cqe, &channel)?;
        cq.req_notify(false)?;
        Ok(Arc::new(EventCq { cq, channel, events: AtomicU64::new(0) }))
    }

    /// A test's CQ of `cqe` entries: with `events` an `EventCq`, returned
    /// twice (as the test's CQ, and for its count of events).
    pub fn or_plain(ctx: &Arc<dyn Context>, cqe: u32, events: bool) -> VResult<TestCq> {
        if !events {
            return Ok((ctx.create_cq(cqe)?, None));
        }
        let cq = EventCq::create(ctx, cqe)?;
        Ok((cq.clone(), Some(cq)))
    }

    /// CQ events taken so far.
    pub fn events(&self) -> u64 {
        self.events.load(Ordering::Relaxed)
    }

    /// Sleeps until the next event, up to `nap`.
    fn sleep(&self, nap: Duration) {
        if let Some(cq) = self.channel.get_cq_event(nap) {
            // Neither fails for the CQ the event names and one event.
            let _ = cq.ack_events(1);
            let _ = cq.req_notify(false);
            self.events.fetch_add(1, Ordering::Relaxed);
        }
    }
}

impl Cq for EventCq {
    fn handle(&self) -> u32 {
        self.cq.handle()
    }
    fn capacity(&self) -> u32 {
        self.cq.capacity()
    }
    fn poll(&self, max: usize) -> Vec<WorkCompletion> {
        let got = self.cq.poll(max);
        if !got.is_empty() || max == 0 {
            return got;
        }
        self.sleep(NAP);
        self.cq.poll(max)
    }
    fn poll_into(&self, wc: &mut [WorkCompletion]) -> usize {
        let got = self.cq.poll_into(wc);
        if got > 0 || wc.is_empty() {
            return got;
        }
        self.sleep(NAP);
        self.cq.poll_into(wc)
    }
    fn wait(&self, max: usize, timeout: Duration) -> Vec<WorkCompletion> {
        let deadline = Instant::now() + timeout;
        loop {
            let got = self.cq.poll(max);
            let left = deadline.saturating_duration_since(Instant::now());
            if !got.is_empty() || max == 0 || left.is_zero() {
                return got;
            }
            self.sleep(left.min(NAP * 20));
        }
    }
    fn overflowed(&self) -> bool {
        self.cq.overflowed()
    }
    fn req_notify(&self, solicited_only: bool) -> VResult<()> {
        self.cq.req_notify(solicited_only)
    }
    fn ack_events(&self, n: u32) -> VResult<()> {
        self.cq.ack_events(n)
    }
}
