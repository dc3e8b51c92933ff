//! Busy polling: which thread takes a frame off the link. An application
//! thread that polls a CQ (or reads an MR) drains the link itself
//! ([`Shared::progress`]); for [`DeviceConfig::busy_poll`] after its last
//! poll the receive thread stays off the link, so a frame reaches the
//! transport without waking anyone — the way Linux's busy polling with
//! `napi_defer_hard_irqs` keeps interrupts off while a socket polls. When
//! the polling stops (or a thread blocks in `Cq::wait`), the receive thread
//! takes over again. docs/design.md "Busy polling" has the whole story.
//!
//! [`DeviceConfig::busy_poll`]: crate::device::DeviceConfig::busy_poll

use std::sync::atomic::Ordering;
use std::time::Duration;

use crate::engine::{RxState, Shared, Taker};

/// How long the receive thread stays off the link after a CQ poll, unless
/// the device is configured otherwise.
pub const BUSY_POLL_DEFAULT: Duration = Duration::from_micros(200);

/// How long a thread that stopped polling may hold the link before the
/// receive thread reads past it (`Shared::take_or_rescue`): far longer
/// than any poll holds it (a batch of 32 frames), far shorter than an ACK
/// timeout (67 ms at perftest's `-u 14`).
pub const RESCUE_AFTER: Duration = Duration::from_millis(2);

/// How long busy polling stays off after a rescue (`Shared::take_or_rescue`),
/// at most: a thread that lost its CPU in the middle of a poll is a sign
/// that the machine has more runnable threads than CPUs, and there any
/// thread that handles frames (it holds the device's core lock meanwhile)
/// may be stopped with the device's state in its hands. Without busy
/// polling only the device's own threads handle frames. The first
/// suspension is `SUSPEND_FIRST`, and each rescue within `SUSPEND_MEMORY`
/// of the one before doubles it up to this ([`Suspension`]).
pub const BUSY_POLL_SUSPEND: Duration = Duration::from_secs(1);

/// The first suspension after a quiet spell. A one-off stall of a few ms
/// on an otherwise idle machine then costs a latency run 10 ms without
/// busy polling, where a whole second put one run in thirty at 3× its
/// typical latency (docs/benchmarks-history.md, stop 35).
pub const SUSPEND_FIRST: Duration = Duration::from_millis(10);

/// How long the last rescue counts towards a longer suspension.
pub const SUSPEND_MEMORY: Duration = Duration::from_secs(10);

/// The receive thread's record of busy polling's suspensions: how long the
/// current one lasts, by how recent the one before was.
#[derive(Debug, Default)]
pub(crate) struct Suspension {
    began: Option<std::time::Instant>,
    length: Duration,
    last: Option<std::time::Instant>,
    /// `Shared::rescues` when the current suspension began or grew.
    seen: u64,
}

impl Suspension {
    /// A suspension begins at `now`: `SUSPEND_FIRST`, or twice the last
    /// one if that began within `SUSPEND_MEMORY`, at most
    /// `BUSY_POLL_SUSPEND`.
    fn begin(&mut self, now: std::time::Instant) {
        self.length = match self.last {
            Some(l) if now.saturating_duration_since(l) < SUSPEND_MEMORY => (self.length * 2).min(BUSY_POLL_SUSPEND),
            _ => SUSPEND_FIRST,
        };
        self.began = Some(now);
        self.last = Some(now);
    }

    /// Whether the current suspension (if one began) is over at `now`.
    fn over(&mut self, now: std::time::Instant) -> bool {
        let over = self.began.is_some_and(|b| now.saturating_duration_since(b) >= self.length);
        if over {
            self.began = None;
        }
        over
    }
}

/// How long an application's polls leave an ACK held back by default
/// (`DeviceConfig::ack_hold`; engine `flush_as`): long enough for the
/// application to see what the ACK is for and answer, so that the answer
/// takes the ACK along in one write (`Shared::join_run`); short enough that
/// a requester whose peer never answers waits little more for its
/// completion than the ACK's own write.
pub const ACK_HOLD: Duration = Duration::from_micros(5);

/// Whether this machine has more than one CPU. On one CPU, spinning (busy
/// polling, the receive thread's linger) only takes turns away from the
/// thread that would make progress, so the device then sleeps and wakes.
pub fn multi_cpu() -> bool {
    static MULTI: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *MULTI.get_or_init(|| std::thread::available_parallelism().map_or(1, |n| n.get()) > 1)
}

/// The default of `DeviceConfig::busy_poll`: on where there is a CPU to spare.
pub fn busy_poll_default() -> Option<Duration> {
    multi_cpu().then_some(BUSY_POLL_DEFAULT)
}

/// A device's polling settings (`DeviceConfig::busy_poll`, `rx_linger`).
pub struct Polling {
    pub busy_poll: Option<Duration>,
    pub rx_linger: Option<Duration>,
    pub ack_hold: Duration,
}

impl Polling {
    /// The receive thread's linger on `link`: as configured, else the
    /// link's own (none on one CPU, where spinning delays the sender).
    pub(crate) fn rx_linger_for(&self, link: &dyn crate::link::LinkRx) -> Duration {
        match self.rx_linger {
            Some(d) => d,
            None if multi_cpu() => link.linger(),
            None => Duration::ZERO,
        }
    }
}

impl Shared {
    /// After a batch, the receive thread keeps polling the link for
    /// `rx_linger` before it sleeps: a stream of frames then costs no
    /// wake-up per batch (and the scheduler does not pull the sender and
    /// the receive thread onto one CPU, as it does with a wake per batch).
    ///
    /// It holds the link only while a poll finds and handles frames, never
    /// across a spin or a yield: an application's busy polls only
    /// `try_lock` it, and find nothing while it is held.
    pub(crate) fn linger(&self, watch: &mut PollWatch) {
        if self.rx_linger.is_zero() {
            return;
        }
        let mut until = std::time::Instant::now() + self.rx_linger;
        let mut idle = 0u32;
        // An application that starts polling takes over the link at once.
        while !self.stopped() && watch.polling(self).is_none() {
            // Held by a polling application: it has the link now.
            let Ok(mut rx) = self.rx.try_lock() else { return };
            match self.drain(&mut rx, Duration::ZERO, Taker::Receiver) {
                Ok(0) => {
                    drop(rx);
                    self.idle();
                    idle += 1;
                    if idle.is_multiple_of(64) {
                        if std::time::Instant::now() >= until {
                            return;
                        }
                        std::thread::yield_now();
                    }
                    std::hint::spin_loop();
                }
                Ok(_) => {
                    idle = 0;
                    until = std::time::Instant::now() + self.rx_linger;
                }
                Err(_) => return,
            }
        }
    }

    /// Busy polling: called by an application thread polling a CQ. Takes
    /// what the link holds (unless the receive thread is on it) and keeps
    /// the receive thread off the link for the busy-poll interval.
    pub fn progress(&self) {
        if self.busy_poll.is_none() || self.poll_suspended.load(Ordering::Relaxed) {
            return;
        }
        self.polls.fetch_add(1, Ordering::Release);
        let Ok(mut rx) = self.rx.try_lock() else {
            self.flush_deferred(self.ack_hold);
            return;
        };
        // Right after a poll that took frames, the link is all but surely
        // empty, and a read to find that out (a system call on a TAP) would
        // sit between the application and what it polls for next — the
        // data of the WRITE whose ACK just completed its own, in a
        // ping-pong. Nor can an ACK that poll held be due yet; the clock
        // read that would tell is skipped too.
        if std::mem::take(&mut rx.polled_frames) {
            return;
        }
        self.flush_deferred(self.ack_hold);
        let took = self.drain(&mut rx, Duration::ZERO, Taker::Poller).unwrap_or(0);
        rx.polled_frames = took > 0 && self.polled_batch == 1;
        if took == 0 {
            drop(rx);
            self.idle();
        }
    }

    /// The receive thread's turn, with frames waiting and nobody polling:
    /// takes them through the link's lock. A thread that holds the lock
    /// while it has stopped polling for `RESCUE_AFTER` is taken for one
    /// descheduled in the middle of a poll, and the frames are read
    /// through the receive thread's own reader (`rescue`,
    /// `LinkRx::second_reader`) instead of waiting for it. Under load (two
    /// CPU hogs and an emulated guest beside `softrdma-perf write_lat`) the
    /// scheduler kept an application thread off its CPU for 652 ms
    /// (`perf sched latency`) while it held its device's link: the receive
    /// thread waited on the lock, nobody answered, and both QPs ran out of
    /// retries (docs/design.md, "Busy polling"). Frames the stalled thread
    /// had already taken are handled when it runs again, late; RC takes
    /// them for duplicates or retransmits, as after any loss.
    pub(crate) fn take_or_rescue(
        &self,
        first: Duration,
        rescue: &mut Option<RxState>,
        watch: &mut PollWatch,
    ) -> std::io::Result<usize> {
        let since = std::time::Instant::now();
        loop {
            if let Ok(mut rx) = self.rx.try_lock() {
                return self.drain(&mut rx, first, Taker::Receiver);
            }
            // The holder polls again: it runs, and has the frames.
            if watch.polling(self).is_some() {
                return Ok(0);
            }
            if since.elapsed() >= RESCUE_AFTER {
                break;
            }
            std::thread::sleep(Duration::from_micros(100));
        }
        self.rescues.fetch_add(1, Ordering::AcqRel);
        if !self.poll_suspended.swap(true, Ordering::AcqRel) {
            self.lock().counters.busy_poll_suspensions += 1;
        }
        let Some(own) = rescue else {
            return self.drain(&mut self.rx.lock().unwrap_or_else(|e| e.into_inner()), first, Taker::Receiver);
        };
        // All of it: segments this reader holds are seen by no waiter.
        let mut took = 0;
        loop {
            match self.drain(own, Duration::ZERO, Taker::Rescuer)? {
                0 if own.link.queued() == 0 => return Ok(took),
                n => took += n,
            }
        }
    }

    /// The receive thread's check, once per turn: busy polling comes back
    /// when the suspension a rescue began is over ([`Suspension`]).
    pub(crate) fn resume_polling(&self, s: &mut Suspension) {
        if !self.poll_suspended.load(Ordering::Acquire) {
            return;
        }
        let now = std::time::Instant::now();
        // A rescue during the suspension begins a longer one: the stalls go on.
        let rescues = self.rescues.load(Ordering::Acquire);
        if s.began.is_none() || rescues != s.seen {
            s.seen = rescues;
            s.begin(now);
        } else if s.over(now) {
            self.poll_suspended.store(false, Ordering::Release);
        }
    }

    /// The application stops polling (it is about to block): hand the link
    /// back to the receive thread at once.
    pub fn stop_polling(&self) {
        if self.busy_poll.is_some() && self.polls.swap(0, Ordering::AcqRel) != 0 {
            if let Some(t) = self.rx_thread.get() {
                t.unpark();
            }
        }
    }

    /// How the receive thread tells whether an application busy-polls.
    pub(crate) fn poll_watch(&self) -> PollWatch {
        PollWatch { grace: self.busy_poll, seen: 0, last_change: None, streak: 0 }
    }
}

/// While an application keeps polling, the receive thread looks again after
/// the busy-poll interval, then after twice, four and at most eight times
/// it. Each look wakes a thread, and where every CPU already spins (an
/// application on each end, two CPUs) the wake-up preempts one of them: at
/// one look per interval that was 5 000 preemptions a second, the 99th
/// percentile of `write_lat` at 19–27 µs instead of 3.5–4.5, and 10–15 %
/// of the fabric's `write_bw` (docs/benchmarks-history.md, stop 17). The price:
/// after a long run of polls, an application that stops without blocking
/// gets its frames taken by the receive thread up to 2 × 8 intervals later
/// (3.2 ms by default) instead of one; blocking in `Cq::wait` still hands
/// the link back at once.
const RECHECK_DOUBLINGS: u32 = 3;

/// The receive thread's view of busy polling: an application counts as
/// polling until a whole interval passed without a poll the thread saw.
pub(crate) struct PollWatch {
    grace: Option<Duration>,
    seen: u64,
    last_change: Option<std::time::Instant>,
    /// Looks in a row that found the application still polling.
    streak: u32,
}

impl PollWatch {
    /// `Some(left)` while an application polls: stay off the link for `left`.
    pub(crate) fn polling(&mut self, s: &Shared) -> Option<Duration> {
        self.observe(s.polls.load(Ordering::Acquire), std::time::Instant::now)
    }

    /// `now` is read only while an application polls: the receive thread's
    /// linger asks between every two polls of its link.
    fn observe(&mut self, polls: u64, now: impl FnOnce() -> std::time::Instant) -> Option<Duration> {
        let grace = self.grace?;
        if polls == 0 {
            // Not polling (never, or it said so by blocking).
            self.seen = 0;
            self.last_change = None;
            self.streak = 0;
            return None;
        }
        let now = now();
        if polls != self.seen {
            self.seen = polls;
            self.last_change = Some(now);
        }
        let since = now.duration_since(self.last_change?);
        let left = grace.checked_sub(since).filter(|d| !d.is_zero());
        if left.is_none() {
            self.streak = 0;
        }
        left
    }

    /// How long the receive thread parks after `polling` returned `left`:
    /// longer the longer the application has kept polling.
    pub(crate) fn park_for(&mut self, left: Duration) -> Duration {
        let grace = self.grace.unwrap_or_default();
        let grown = grace * (1u32 << self.streak.min(RECHECK_DOUBLINGS));
        self.streak = self.streak.saturating_add(1);
        left.max(grown)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::memory::{Fabric, Faults};

    #[test]
    fn a_lone_rescue_suspends_busy_polling_briefly_and_repeated_ones_longer() {
        let t0 = std::time::Instant::now();
        let mut s = Suspension::default();
        assert!(!s.over(t0), "nothing began");
        s.begin(t0);
        assert!(!s.over(t0 + SUSPEND_FIRST - Duration::from_micros(1)));
        assert!(s.over(t0 + SUSPEND_FIRST));
        // Rescues within SUSPEND_MEMORY of each other: 20, 40, … ms, at most a second.
        let mut at = t0 + Duration::from_millis(50);
        let mut lengths = Vec::new();
        for _ in 0..8 {
            s.begin(at);
            lengths.push(s.length.as_millis());
            at += Duration::from_millis(100);
        }
        assert_eq!(lengths, [20, 40, 80, 160, 320, 640, 1000, 1000]);
        // After a quiet spell the next one is short again.
        s.begin(at + SUSPEND_MEMORY);
        assert_eq!(s.length, SUSPEND_FIRST);
    }

    #[test]
    fn the_receive_thread_looks_less_often_the_longer_an_application_polls() {
        let grace = Duration::from_micros(200);
        let mut w = PollWatch { grace: Some(grace), seen: 0, last_change: None, streak: 0 };
        let mut now = std::time::Instant::now();
        let mut parks = Vec::new();
        // A poll between every two looks: 200, 400, 800, then 1 600 µs.
        for polls in 1..=6u64 {
            let left = w.observe(polls, || now).expect("polling");
            let park = w.park_for(left);
            parks.push(park.as_micros());
            now += park;
        }
        assert_eq!(parks, [200, 400, 800, 1600, 1600, 1600]);
        // No poll since the last look: the link goes back to the thread, and
        // the next run of polls starts from one interval again.
        assert_eq!(w.observe(6, || now), None);
        let left = w.observe(7, || now).expect("polling again");
        assert_eq!(w.park_for(left), grace);
        // An application that blocks (the count drops to 0) resets it too.
        assert_eq!(w.observe(0, || panic!("no clock read when nobody polls")), None);
        let left = w.observe(1, || now).expect("polling again");
        assert_eq!(w.park_for(left), grace);
        // Without busy polling nothing counts as polling.
        let mut off = PollWatch { grace: None, seen: 0, last_change: None, streak: 0 };
        assert_eq!(off.observe(5, || panic!("no clock read without busy polling")), None);
    }

    /// An application thread the scheduler stops in the middle of a poll
    /// holds its device's link: the receive thread reads past it, and the
    /// peer's WRITE is answered long before its ACK timeout (67 ms), not
    /// when the thread runs again.
    fn a_poll_descheduled_holding_the_link(bed: &crate::testbed::Testbed) {
        use verbs_api::helpers::{connect, ConnectOptions, Endpoint};
        use verbs_api::{QpCap, QpType, SendOp, SendWr, WcStatus};

        let c = bed.contexts();
        let mk = |ctx| Endpoint::new(ctx, QpType::Rc, 1 << 12, 64, QpCap::default()).expect("endpoint");
        let (a, b) = (mk(&c[0]), mk(&c[1]));
        connect(&a, &b, &ConnectOptions::default()).expect("connect");
        a.mr.write(0, &[7; 64]).expect("fill");
        let write = |round: u64| {
            let op = SendOp::RdmaWrite { remote_addr: b.mr.addr() + 64 * round, rkey: b.mr.rkey() };
            a.qp.post_send(&[SendWr::new(round, op, vec![a.sge(0, 64)])], None).expect("post");
            a.cq.wait(1, Duration::from_secs(2)).pop().expect("no completion")
        };
        // Addresses resolved (a TAP's first frame waits for ARP).
        assert_eq!(write(0).status, WcStatus::Success);
        for round in 1..4u64 {
            // b's application polls, then loses its CPU holding the link.
            for _ in 0..100 {
                b.cq.poll(1);
            }
            let stalled = bed.devices[1].shared().rx.lock().expect("link");
            let t = std::time::Instant::now();
            let wc = write(round);
            let took = t.elapsed();
            drop(stalled);
            assert_eq!((wc.wr_id, wc.status), (round, WcStatus::Success));
            assert!(took < Duration::from_millis(50), "round {round}: the ACK took {took:?}");
        }
        let mut got = [0u8; 256];
        b.mr.read(0, &mut got).expect("read");
        assert_eq!(got, [7; 256]);
        let (db, _, _) = bed.devices[1].counters();
        let (_, _, qa) = bed.devices[0].counters();
        assert!(db.rx_rescued >= 3, "{db:?}");
        assert_eq!(qa.retransmitted_pkts, 0, "{qa:?}");
        // Busy polling is off after the first rescue (the later rounds' polls
        // took nothing; each rescue lengthened the suspension), and comes
        // back when the suspension is over.
        let shared = bed.devices[1].shared();
        assert!(db.busy_poll_suspensions >= 1 && shared.poll_suspended.load(Ordering::Acquire), "{db:?}");
        let polled = db.rx_polled;
        let t = std::time::Instant::now();
        while shared.poll_suspended.load(Ordering::Acquire) {
            assert!(t.elapsed() < BUSY_POLL_SUSPEND * 3, "busy polling did not come back");
            std::thread::sleep(Duration::from_millis(20));
        }
        // b polls again, and its polls take WRITEs themselves (a few tries:
        // a test thread descheduled for an interval lets the receive thread
        // take one).
        for id in 10..30u64 {
            for _ in 0..100 {
                b.cq.poll(1);
            }
            let op = SendOp::RdmaWrite { remote_addr: b.mr.addr(), rkey: b.mr.rkey() };
            a.qp.post_send(&[SendWr::new(id, op, vec![a.sge(0, 64)])], None).expect("post");
            let t = std::time::Instant::now();
            let wc = loop {
                b.cq.poll(1);
                if let Some(wc) = a.cq.poll(1).pop() {
                    break wc;
                }
                assert!(t.elapsed() < Duration::from_secs(2), "no completion");
            };
            assert_eq!((wc.wr_id, wc.status), (id, WcStatus::Success));
            if bed.devices[1].counters().0.rx_polled > polled {
                return;
            }
        }
        panic!("no frame taken by a poll after busy polling came back");
    }

    #[test]
    fn a_poll_descheduled_holding_the_link_does_not_keep_frames_from_the_device() {
        use crate::testbed::{Testbed, TestbedOptions};
        let o = TestbedOptions::default();
        a_poll_descheduled_holding_the_link(&Testbed::memory(2, Faults::default(), &o).expect("memory testbed"));
        match crate::backend::netns::privileged() {
            Ok(()) => a_poll_descheduled_holding_the_link(&Testbed::tap(2, &o).expect("tap testbed")),
            Err(why) if std::env::var_os("CI").is_some_and(|v| v == "true") => panic!("TAP part: {why}"),
            Err(why) => println!("skipped (TAP part): {why}"),
        }
    }

    #[test]
    fn rx_linger_is_the_configured_one_else_the_links() {
        let link = Fabric::new().attach([2, 0, 0, 0, 0, 1], 1500);
        let set = Polling { busy_poll: None, rx_linger: Some(Duration::from_micros(7)), ack_hold: ACK_HOLD };
        assert_eq!(set.rx_linger_for(&*link.rx), Duration::from_micros(7));
        let off = Polling { busy_poll: None, rx_linger: Some(Duration::ZERO), ack_hold: ACK_HOLD };
        assert_eq!(off.rx_linger_for(&*link.rx), Duration::ZERO);
        let default = Polling { busy_poll: None, rx_linger: None, ack_hold: ACK_HOLD };
        let want = if multi_cpu() { link.rx.linger() } else { Duration::ZERO };
        assert_eq!(default.rx_linger_for(&*link.rx), want);
        assert_eq!(link.rx.linger(), Duration::from_micros(50));
    }
}
