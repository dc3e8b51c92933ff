//! The device engine: drives the sans-IO transport. Every verbs call takes
//! the core lock, feeds the transport and flushes what it produced (frames
//! out on the link, completions into CQs, events), so a frame leaves from the
//! thread that caused it — on a TAP just after that thread lets go of the
//! lock ([`crate::core_lock`]). A receive thread feeds frames from the link; a
//! timer thread sleeps until the transport's next deadline.
//!
//! Which thread takes a frame off the link (the receive thread or a
//! busy-polling application thread) is decided in [`crate::busy_poll`].

use std::collections::{HashMap, VecDeque};

use rustc_hash::FxHashMap;
use std::fs::File;
use std::io::BufWriter;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

use transport::endpoint::{Drop as RxDrop, Endpoint};
use transport::qp::{CqSide, QpEvent};
use transport::time::Instant;
use transport::wire::{classify, FrameKind};
use verbs_api::AsyncEvent;

use crate::audit::AuditEvent;
use crate::backend::host::Host;
use crate::capture::PcapSink;
use crate::core_lock::CoreGuard;
use crate::cq::CqInner;
use crate::gid::GidTable;
use crate::link::{LinkRx, LinkTx};
use crate::mr::DevMemory;
use crate::namespace::{BoundaryMode, Namespace};

/// Frames counted by the device itself (the transport counts the rest).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DeviceCounters {
    pub rx_frames: u64,
    pub tx_frames: u64,
    pub rx_rocev1_dropped: u64,
    pub rx_host_frames: u64,
    pub tx_errors: u64,
    /// Frames longer than the link takes (a QP's path MTU above the
    /// port's): not sent, and counted in `tx_errors` too.
    pub tx_oversize: u64,
    /// Frames an application thread took off the link (busy polling).
    pub rx_polled: u64,
    /// Frames the receive thread took through a reader of its own while
    /// a thread that had stopped polling held the link (`busy_poll`,
    /// "rescue"): an application descheduled in the middle of a poll.
    pub rx_rescued: u64,
    /// Times busy polling was suspended after a rescue (`busy_poll`).
    pub busy_poll_suspensions: u64,
    /// Plain ACKs a busy-polling flush held back (until a flush that sends
    /// something, or the end of `DeviceConfig::ack_hold`).
    pub tx_acks_deferred: u64,
    /// Held ACKs that left right behind a frame of their QP, in one write
    /// with it (a TAP's UDP GSO run).
    pub tx_acks_joined: u64,
    /// Frames that left with their payloads still in the sender's MR, for
    /// the link to copy in on delivery (the in-memory fabric: `crate::lent`).
    pub tx_payloads_lent: u64,
    /// Frames whose ICRC the link checked as it copied their lent payloads
    /// in, in the same pass (`crate::lent::fill_checked`); not computed again.
    pub rx_icrc_checked_by_link: u64,
}

/// Everything behind the core lock.
pub struct Core {
    pub ep: Endpoint<DevMemory>,
    pub host: Host,
    pub gids: GidTable,
    pub ns: Arc<Namespace>,
    pub mode: BoundaryMode,
    pub rocev1: bool,
    /// When a QoS-throttled flush should run again.
    pub qos_wake: Option<Instant>,
    /// Until when the timer thread sleeps (None: it is awake).
    pub timer_sleeps_until: Option<Instant>,
    pub pkeys: Vec<u16>,
    /// Send and receive CQ of each QP.
    pub cqs: FxHashMap<u32, (Arc<CqInner>, Arc<CqInner>)>,
    pub events: VecDeque<AsyncEvent>,
    pub counters: DeviceCounters,
    pub pcap: Option<PcapSink<BufWriter<File>>>,
    pub rxe_retry_quirk: bool,
    pub cq_by_num: FxHashMap<u32, Arc<CqInner>>,
    /// Objects created under each PD (dealloc is refused while any remain).
    pub pd_objects: HashMap<u32, u32>,
    pub next_pd: u32,
    pub next_cq: u32,
    pub buf: Vec<u8>,
    /// Plain ACKs held back by a busy-polling flush (see `Shared::flush_as`).
    pub deferred: Vec<Vec<u8>>,
    /// Empty frame buffers for `deferred` and `txq`.
    pub spare: Vec<Vec<u8>>,
    /// Frames to write once the lock is let go, in order (links whose
    /// sends are syscalls; see [`crate::core_lock`]).
    pub txq: Vec<Vec<u8>>,
    /// The ticket of the next batch of `txq` frames (see `core_lock`).
    pub tx_next: u64,
    /// Frames a flush holds for one `LinkTx::send_bufs` (links that
    /// `batches_sends`), and the buffers such batches came back with.
    pub txbatch: Vec<Vec<u8>>,
    pub txfree: Vec<Vec<u8>>,
    /// Payloads of `txbatch` frames still in their MRs, by index
    /// (`crate::lent`).
    pub txlent: Vec<(usize, crate::lent::Lent)>,
}

/// The receiving half of the link and the buffers frames land in.
pub(crate) struct RxState {
    pub(crate) link: Box<dyn LinkRx>,
    bufs: Vec<Vec<u8>>,
    /// The length of the frame in each of `bufs`.
    lens: [usize; RX_BATCH],
    /// An application's poll took frames from a link whose polls are
    /// system calls: its next poll leaves the link alone (`progress`).
    pub(crate) polled_frames: bool,
}

impl RxState {
    fn new(link: Box<dyn LinkRx>, mtu: usize) -> Self {
        let bufs = (0..RX_BATCH).map(|_| Vec::with_capacity(mtu + 64)).collect();
        RxState { link, bufs, lens: [0; RX_BATCH], polled_frames: false }
    }

    /// Another reader of the same link, with buffers of its own
    /// (`LinkRx::second_reader`).
    pub(crate) fn second(&self, mtu: usize) -> Option<RxState> {
        self.link.second_reader().map(|l| RxState::new(l, mtu))
    }
}

/// Which thread takes frames off the link, and so how they are counted and
/// flushed (`busy_poll`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Taker {
    /// The receive thread, through the link's lock.
    Receiver,
    /// An application thread that polls (busy polling).
    Poller,
    /// The receive thread through its own reader, while a thread that
    /// stopped polling holds the link.
    Rescuer,
}

pub struct Shared {
    pub name: String,
    pub mac: [u8; 6],
    pub mtu: usize,
    core: Mutex<Core>,
    tx: Arc<dyn LinkTx>,
    /// Frames are written after the core lock is let go (`LinkTx::sends_are_syscalls`).
    tx_after_unlock: bool,
    /// The ticket whose batch is written now (`core_lock`).
    pub(crate) tx_serving: AtomicU64,
    /// Queued frames whose write failed (counted in `tx_frames` when queued).
    tx_failed: AtomicU64,
    pub(crate) rx: Mutex<RxState>,
    pub(crate) busy_poll: Option<Duration>,
    /// How long the receive thread polls an idle link after a batch.
    pub(crate) rx_linger: Duration,
    /// `DeviceConfig::ack_hold`.
    pub(crate) ack_hold: Duration,
    /// Frames an application's busy poll takes at most (`LinkRx::polls_are_syscalls`).
    pub(crate) polled_batch: usize,
    /// Frames a flush sends per `LinkTx::send_bufs` (1: one `send_buf` each).
    tx_batch: usize,
    /// Counts application polls (the polling path reads no clock, unless
    /// an ACK is held: `flush_deferred`); 0: nobody polls.
    pub(crate) polls: AtomicU64,
    /// Busy polling is off for a while after a rescue: application polls
    /// leave the link to the receive thread (`busy_poll::Suspension`).
    pub(crate) poll_suspended: AtomicBool,
    /// Rescues so far (`Shared::take_or_rescue`): each one begins or
    /// lengthens the suspension (`busy_poll::Suspension`).
    pub(crate) rescues: AtomicU64,
    pub(crate) rx_thread: std::sync::OnceLock<std::thread::Thread>,
    /// When a polling flush held back the oldest frame in `Core::deferred`
    /// (`Shared::elapsed` in ns), or `NOTHING_HELD` (read without the lock).
    deferred_since: AtomicU64,
    /// The transport has work to do ahead of the frames it expects
    /// (`Endpoint::prepare`): the next empty poll of the link does it.
    prepare_due: AtomicBool,
    /// The receive thread's way to wait on the link (woken to stop).
    waiter: std::sync::OnceLock<Arc<dyn crate::link::LinkWait>>,
    /// Wakes the timer thread when a deadline may have moved.
    timer: Condvar,
    events: Condvar,
    start: std::time::Instant,
    stop: AtomicBool,
}

impl Shared {
    /// What the link's kernel side does for its frames (`LinkTx::offload`).
    pub fn offload(&self) -> crate::link::Offload {
        self.tx.offload()
    }

    /// Whether QPs leave IPv6 UDP checksums for the link to finish
    /// (`LinkTx::finishes_udp_checksums`).
    pub fn udp_checksum_offload(&self) -> bool {
        self.tx.finishes_udp_checksums()
    }

    pub fn new(
        name: String,
        mac: [u8; 6],
        mtu: usize,
        tx: Arc<dyn LinkTx>,
        rx: Box<dyn LinkRx>,
        polling: crate::busy_poll::Polling,
        core: Core,
    ) -> Arc<Self> {
        let rx_linger = polling.rx_linger_for(&*rx);
        let polled_batch = if rx.polls_are_syscalls() { 1 } else { RX_BATCH };
        Arc::new(Shared {
            name,
            mac,
            mtu,
            core: Mutex::new(core),
            tx_after_unlock: tx.sends_are_syscalls(),
            tx_batch: if tx.batches_sends() && !tx.sends_are_syscalls() { TX_BATCH } else { 1 },
            tx_serving: AtomicU64::new(0),
            tx_failed: AtomicU64::new(0),
            tx,
            rx: Mutex::new(RxState::new(rx, mtu)),
            busy_poll: polling.busy_poll.filter(|d| !d.is_zero()),
            rx_linger,
            ack_hold: polling.ack_hold,
            polled_batch,
            polls: AtomicU64::new(0),
            poll_suspended: AtomicBool::new(false),
            rescues: AtomicU64::new(0),
            rx_thread: std::sync::OnceLock::new(),
            deferred_since: AtomicU64::new(NOTHING_HELD),
            prepare_due: AtomicBool::new(false),
            waiter: std::sync::OnceLock::new(),
            timer: Condvar::new(),
            events: Condvar::new(),
            start: std::time::Instant::now(),
            stop: AtomicBool::new(false),
        })
    }

    pub fn now(&self) -> Instant {
        Instant::from_nanos(self.start.elapsed().as_nanos() as u64)
    }

    /// Takes the core lock; letting go of it writes the frames queued
    /// under it ([`crate::core_lock`]).
    pub fn lock(&self) -> CoreGuard<'_> {
        CoreGuard::new(self, self.lock_raw())
    }

    pub(crate) fn lock_raw(&self) -> MutexGuard<'_, Core> {
        // A panic while holding the lock is a bug; keep serving what is left.
        self.core.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn elapsed(&self) -> Duration {
        self.start.elapsed()
    }

    /// Sends a frame outside the transport (ARP/ND requests and replies).
    pub fn send_raw(&self, core: &mut Core, frame: &[u8]) {
        self.put(core, frame);
    }

    fn put(&self, core: &mut Core, frame: &[u8]) {
        if self.put_local(core, frame) {
            return;
        }
        if self.tx_after_unlock {
            let mut f = self.spare_buf(core);
            f.clear();
            f.extend_from_slice(frame);
            Self::queue(core, f);
            return;
        }
        let sent = self.tx.send(frame);
        self.count_tx(core, sent);
    }

    /// Like `put`, but lets the link take the buffer (see `LinkTx::send_buf`).
    fn put_buf(&self, core: &mut Core, buf: &mut Vec<u8>) {
        if self.put_local(core, buf) {
            return;
        }
        if self.tx_after_unlock {
            let spare = self.spare_buf(core);
            Self::queue(core, std::mem::replace(buf, spare));
            return;
        }
        let sent = self.tx.send_buf(buf);
        self.count_tx(core, sent);
    }

    /// Like `put_buf`, but a link that `batches_sends` gets the frame with
    /// the next ones (`send_batch` sends what is held).
    fn put_batched(&self, core: &mut Core, buf: &mut Vec<u8>) {
        let lent = core.ep.mem.has_lent();
        if lent && !self.passes_lent(core, buf) {
            core.ep.mem.fill_lent(buf);
        }
        if self.tx_batch == 1 {
            return self.put_buf(core, buf);
        }
        if self.put_local(core, buf) {
            core.ep.mem.fill_lent(buf); // (dropped as oversize: lets go of the regions)
            return;
        }
        if lent && core.ep.mem.take_lent(buf, core.txbatch.len(), &mut core.txlent) {
            core.counters.tx_payloads_lent += 1;
        }
        let next = core.txfree.pop().unwrap_or_else(|| Vec::with_capacity(self.mtu + 64));
        core.txbatch.push(std::mem::replace(buf, next));
        if core.txbatch.len() >= self.tx_batch {
            self.send_batch(core);
        }
    }

    /// Whether a frame may leave with its payloads still in their MRs:
    /// the link delivers them (`LinkTx::lends`), in a batch, and nothing
    /// reads the frame on its way out (a capture, or this device itself).
    fn passes_lent(&self, core: &Core, frame: &[u8]) -> bool {
        self.tx_batch > 1 && self.tx.lends() && core.pcap.is_none() && frame.get(..6) != Some(&self.mac[..])
    }

    /// Sends the frames `put_batched` holds.
    fn send_batch(&self, core: &mut Core) {
        if core.txbatch.is_empty() {
            return;
        }
        let failed = match (&mut core.txbatch[..], core.txlent.is_empty()) {
            ([one], true) => self.tx.send_buf(one).is_err() as u64,
            (all, true) => self.tx.send_bufs(all) as u64,
            (all, false) => self.tx.send_bufs_lent(all, &mut core.txlent) as u64,
        };
        let n = core.txbatch.len() as u64;
        core.counters.tx_errors += failed;
        core.counters.tx_frames += n - failed.min(n);
        // The buffers the link left in the slots: not cleared, since a
        // frame of the stream's length is emitted over one without zeroing.
        let Core { txbatch, txfree, .. } = core;
        txfree.append(txbatch);
    }

    /// Queues a frame to be written once the lock is let go (`core_lock`);
    /// it counts as sent unless its write fails.
    fn queue(core: &mut Core, frame: Vec<u8>) {
        core.txq.push(frame);
        core.counters.tx_frames += 1;
    }

    /// A frame buffer: the one written last, whose lines are likeliest
    /// still in this CPU's cache. It may still hold that frame: emitting a
    /// frame of the same length over it costs no zeroing.
    fn spare_buf(&self, core: &mut Core) -> Vec<u8> {
        if self.tx_after_unlock {
            if let Some(b) = crate::core_lock::kept_buffer() {
                return b;
            }
        }
        core.spare.pop().unwrap_or_else(|| Vec::with_capacity(self.mtu + 64))
    }

    pub(crate) fn count_failed(&self, failed: u64) {
        if failed > 0 {
            self.tx_failed.fetch_add(failed, Ordering::Relaxed);
        }
    }

    /// The device's own counters, with the failures of frames written
    /// outside the lock (counted as sent when they were queued).
    pub fn device_counters(&self, core: &Core) -> DeviceCounters {
        let mut c = core.counters;
        let failed = self.tx_failed.load(Ordering::Relaxed);
        c.tx_frames -= failed.min(c.tx_frames);
        c.tx_errors += failed;
        c
    }

    /// Puts frames on the link now (the writer of `Core::txq`): one by one,
    /// or in runs where the link makes them (a TAP with UDP segmentation).
    /// Returns how many failed.
    pub(crate) fn send_all(&self, frames: &mut [Vec<u8>]) -> usize {
        self.tx.send_bufs(frames)
    }

    /// Whether the frame is done with here: dropped because the link would
    /// not take it, or looped back because it is for this device (a frame
    /// to our own MAC never leaves the device). Captures what it does not
    /// drop.
    fn put_local(&self, core: &mut Core, frame: &[u8]) -> bool {
        let for_us = frame.len() >= 6 && frame[..6] == self.mac;
        if (for_us || core.pcap.is_some()) && self.udp_checksum_offload() {
            // A capture, or this device receiving its own frame, sees the
            // checksum the link would have finished.
            if let Some(at) = transport::wire::peek::ipv6_udp_offset(frame) {
                let mut done = frame.to_vec();
                transport::wire::udp::finish_partial(&mut done[at..]);
                return self.put_finished(core, &done, for_us);
            }
        }
        self.put_finished(core, frame, for_us)
    }

    fn put_finished(&self, core: &mut Core, frame: &[u8], for_us: bool) -> bool {
        if !for_us && frame.len() > self.mtu + ETH_HEADER_LEN {
            // A bridge or switch port drops it, and rxe's ip_local_out
            // refuses it (EMSGSIZE, a send error): count it here, on the
            // in-memory fabric and on a TAP alike, instead of losing it
            // further on.
            core.counters.tx_oversize += 1;
            core.counters.tx_errors += 1;
            return true;
        }
        if let Some(p) = &mut core.pcap {
            let _ = p.write(self.elapsed(), frame);
        }
        if for_us {
            core.counters.tx_frames += 1;
            let now = self.now();
            let _ = core.ep.handle_frame(now, frame);
            return true;
        }
        false
    }

    fn count_tx(&self, core: &mut Core, sent: std::io::Result<()>) {
        if sent.is_err() {
            core.counters.tx_errors += 1;
        } else {
            core.counters.tx_frames += 1;
        }
    }

    /// Sends everything the transport has to send and routes completions
    /// and events. Call after every input to the transport.
    pub fn flush(&self, core: &mut Core) {
        let now = self.now();
        self.flush_as(core, now, false);
    }

    /// `flush`; when `polling` (an application thread drained the link),
    /// plain ACKs are held back until the next flush. That thread returns to
    /// the application, which may see the data the ACK is for and answer it
    /// at once: the answer leaves first and the ACK right behind it, instead
    /// of the ACK's send sitting on the round trip. The next flush comes at
    /// the application's next poll or post, or from the receive thread
    /// when it takes the link back (`busy_poll`); IBTA leaves an ACK's timing to the
    /// responder (ch. 9.7.5.1: ACKs may be coalesced), and the requester's
    /// ACK timeout is milliseconds.
    /// `now` is the caller's reading of the clock, under the lock: a
    /// receive reads it once for its frames and this flush.
    fn flush_as(&self, core: &mut Core, now: Instant, polling: bool) {
        let mut buf = std::mem::take(&mut core.buf);
        let shaper = core.ns.shaper();
        let mut emitted = false;
        loop {
            if let Some(s) = &shaper {
                let wait = s.lock().ok().and_then(|mut s| s.gate(crate::namespace::shaper_now()));
                if let Some(w) = wait {
                    // Throttled: the timer thread calls back when tokens are back.
                    core.qos_wake = Some(now + w);
                    break;
                }
            }
            crate::turn_trace::mark(crate::turn_trace::Stage::FrameOut);
            if !core.ep.poll_transmit(now, &mut buf) {
                break;
            }
            crate::turn_trace::mark(crate::turn_trace::Stage::FrameBuilt);
            if let Some(s) = &shaper {
                if let Ok(mut s) = s.lock() {
                    s.charge(buf.len(), crate::qos::ends_request(&buf));
                }
            }
            if polling && transport::wire::peek::is_plain_ack(&buf) {
                let spare = self.spare_buf(core);
                if core.deferred.is_empty() {
                    self.deferred_since.store(now.as_nanos(), Ordering::Release);
                }
                core.deferred.push(std::mem::replace(&mut buf, spare));
                core.counters.tx_acks_deferred += 1;
                continue;
            }
            self.put_batched(core, &mut buf);
            emitted = true;
        }
        core.buf = buf;
        // Held ACKs go behind what this flush emitted, in its batch. A flush
        // that emits nothing (a posted receive, say) keeps holding them, up
        // to `ack_hold`: the answer may be the application's next post.
        if !polling && (emitted || self.held_for(self.ack_hold)) {
            self.send_deferred(core);
        }
        self.send_batch(core);
        while let Some((qpn, c)) = core.ep.poll_completion() {
            if let Some((scq, rcq)) = core.cqs.get(&qpn) {
                let cq = if c.side == CqSide::Send { scq } else { rcq };
                if !cq.push(c.wc, c.solicited) {
                    let cqn = cq.cqn;
                    core.events.push_back(AsyncEvent::CqError { cqn });
                }
            }
        }
        while let Some((qpn, e)) = core.ep.poll_qp_event() {
            match e {
                QpEvent::Fatal(_) => core.events.push_back(AsyncEvent::QpFatal { qpn }),
                QpEvent::SqDrained => core.events.push_back(AsyncEvent::SqDrained { qpn }),
                QpEvent::AccessViolation { rkey, va, len, error } => {
                    let peer = core.ep.qp(qpn).and_then(|q| q.path()).map(|p| p.dgid);
                    let detail = format!("R_Key {rkey:#x} va {va:#x} len {len}: {error:?}");
                    self.audit(core, "rkey", Some(qpn), peer, detail);
                }
            }
        }
        while let Some((srqn, _)) = core.ep.poll_srq_event() {
            core.events.push_back(AsyncEvent::SrqLimitReached { srqn });
        }
        if !core.events.is_empty() {
            self.events.notify_all();
        }
        if core.ep.wants_prepare() {
            self.prepare_due.store(true, Ordering::Relaxed);
        }
        // Wake the timer thread only if it sleeps past the new deadline.
        let next = match (core.ep.poll_timeout(), core.qos_wake) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        if next.is_some_and(|t| core.timer_sleeps_until.is_none_or(|s| t < s)) {
            self.timer.notify_one();
        }
    }

    /// Sends the ACKs a polling flush held back, with the frames a batching
    /// link holds (one hand-over on the in-memory fabric).
    fn send_deferred(&self, core: &mut Core) {
        if core.deferred.is_empty() {
            return;
        }
        let mut frames = std::mem::take(&mut core.deferred);
        let runs = self.tx_after_unlock && self.tx.offload() == crate::link::Offload::Uso;
        for mut f in frames.drain(..) {
            if runs {
                self.join_run(core, &mut f);
            }
            self.put_batched(core, &mut f);
            f.clear();
            core.spare.push(f);
        }
        self.send_batch(core);
        core.deferred = frames;
        self.deferred_since.store(NOTHING_HELD, Ordering::Release);
    }

    /// Lets a held ACK go out in one write with the frame of its QP queued
    /// just before it (the answer it was held for): over IPv4 it takes the
    /// identification after that frame's, as a TAP's UDP segmentation numbers
    /// a run's segments (`vnet::run_len`); over IPv6 the order alone makes
    /// the run. Then the peer also reads both at once. The QP's next frame
    /// may repeat the identification: RFC 6864 §4 gives the field no meaning
    /// in a datagram that may not be fragmented, as RoCE's are (DF set).
    fn join_run(&self, core: &mut Core, ack: &mut [u8]) {
        use transport::wire::peek;
        let Some(prev) = core.txq.last() else { return };
        if !peek::same_flow(prev, ack) {
            return;
        }
        if let Some(n) = peek::ipv4_ident(prev).map(|i| i.wrapping_add(1)) {
            if peek::ipv4_ident(ack) != Some(n) && transport::wire::frame::set_ipv4_ident(ack, n).is_err() {
                return; // (it checks: the engine emitted it)
            }
        }
        core.counters.tx_acks_joined += self.tx.sends_together(prev, ack) as u64;
    }

    /// Sends the ACKs held back for at least `held` (all of them: zero),
    /// taking the lock only then.
    pub(crate) fn flush_deferred(&self, held: Duration) {
        if self.held_for(held) {
            let mut core = self.lock();
            self.send_deferred(&mut core);
        }
    }

    /// What a poll that found the link empty does: the work the transport
    /// can do ahead of the frames it expects (`Endpoint::prepare`), off
    /// their path. It takes the core lock only when there is some.
    pub(crate) fn idle(&self) {
        if self.prepare_due.load(Ordering::Relaxed) {
            let mut core = self.lock();
            self.prepare_due.store(false, Ordering::Relaxed);
            core.ep.prepare();
        }
    }

    /// Whether ACKs have been held back for at least `held` (any: zero).
    fn held_for(&self, held: Duration) -> bool {
        let since = self.deferred_since.load(Ordering::Acquire);
        since != NOTHING_HELD
            && (held.is_zero() || self.elapsed().as_nanos() as u64 >= since.saturating_add(held.as_nanos() as u64))
    }

    /// Records a security event on the device's namespace stream.
    pub fn audit(
        &self,
        core: &Core,
        kind: &'static str,
        qpn: Option<u32>,
        peer: Option<verbs_api::Gid>,
        detail: String,
    ) {
        core.ns.audit.record(AuditEvent::new(&core.ns.name, &self.name, kind, qpn, peer, detail));
    }

    pub fn next_event(&self, timeout: Duration) -> Option<AsyncEvent> {
        let mut core = self.lock();
        let deadline = std::time::Instant::now() + timeout;
        loop {
            if let Some(e) = core.events.pop_front() {
                return Some(e);
            }
            let left = deadline.checked_duration_since(std::time::Instant::now())?;
            core = core.wait_timeout(&self.events, left);
        }
    }

    /// Handles a batch of received frames under one lock and one flush;
    /// bit `i` of `icrc_checked` says the link checked frame `i`'s ICRC
    /// (`LinkRx::take_icrc_checked`).
    fn receive<'f>(&self, frames: impl ExactSizeIterator<Item = &'f [u8]>, icrc_checked: u64, by: Taker) {
        let mut core = self.lock();
        // Read under the lock: the flush below files deadlines with it.
        let now = self.now();
        match by {
            Taker::Poller => core.counters.rx_polled += frames.len() as u64,
            Taker::Rescuer => core.counters.rx_rescued += frames.len() as u64,
            Taker::Receiver => {}
        }
        for (i, frame) in frames.enumerate() {
            let checked = i < 64 && icrc_checked >> i & 1 == 1;
            self.receive_one(&mut core, now, frame, checked);
        }
        self.flush_as(&mut core, now, by == Taker::Poller);
        crate::turn_trace::mark(crate::turn_trace::Stage::RxDone);
    }

    /// Takes up to `RX_BATCH` frames from the link (an application's busy
    /// poll: `polled_batch`), the first waiting up to `first` for one;
    /// handles them. Returns how many there were.
    pub(crate) fn drain(&self, rx: &mut RxState, first: Duration, by: Taker) -> std::io::Result<usize> {
        let max = self.mtu + 64;
        let RxState { link, bufs, lens, .. } = rx;
        let n = if by == Taker::Poller { self.polled_batch } else { RX_BATCH };
        let mut k = link.recv_batch(&mut bufs[..n], &mut lens[..n], max, first)?;
        let mut checked = link.take_icrc_checked();
        while k > 0 && k < RX_BATCH && link.queued() > 0 {
            match link.recv_batch(&mut bufs[k..k + 1], &mut lens[k..k + 1], max, Duration::ZERO) {
                Ok(1) => {
                    checked |= link.take_icrc_checked() << k;
                    k += 1
                }
                _ => break,
            }
        }
        if k > 0 {
            crate::turn_trace::mark(crate::turn_trace::Stage::RxTook);
            self.receive(bufs[..k].iter().zip(&lens[..k]).map(|(b, &n)| &b[..n]), checked, by);
        }
        Ok(k)
    }

    fn receive_one(&self, core: &mut Core, now: Instant, frame: &[u8], icrc_checked: bool) {
        core.counters.rx_frames += 1;
        if let Some(p) = &mut core.pcap {
            let _ = p.write(self.elapsed(), frame);
        }
        match classify(frame) {
            FrameKind::RoceV2 => self.admit(core, now, frame, icrc_checked),
            FrameKind::RoceV1 if core.rocev1 => self.admit(core, now, frame, icrc_checked),
            FrameKind::RoceV1 => {
                core.counters.rx_rocev1_dropped += 1;
                let detail = format!("RoCEv1 frame from {:02x?} refused", &frame[6..12]);
                self.audit(core, "rocev1", None, None, detail);
            }
            FrameKind::Other(_) => {
                core.counters.rx_host_frames += 1;
                let replies = core.host.handle(frame, self.elapsed());
                for r in replies {
                    self.put(core, &r);
                }
            }
        }
    }

    fn admit(&self, core: &mut Core, now: Instant, frame: &[u8], icrc_checked: bool) {
        crate::turn_trace::mark(crate::turn_trace::Stage::FrameIn);
        let handled = match icrc_checked {
            true => {
                core.counters.rx_icrc_checked_by_link += 1;
                core.ep.handle_frame_icrc_checked(now, frame)
            }
            false => core.ep.handle_frame(now, frame),
        };
        crate::turn_trace::mark(crate::turn_trace::Stage::FrameDone);
        if let Err(RxDrop::Refused { qpn, peer, violation }) = handled {
            self.audit(core, violation.kind(), Some(qpn), Some(peer), format!("{violation:?}"));
        }
    }

    pub fn shutdown(&self) {
        // An ACK held back to ride with an answer acknowledges what the
        // application has already seen complete; a NIC would have sent it
        // at once. Dropped here, the peer would retransmit to nobody (and
        // kernel rxe, whose retry_cnt 7 never runs out, would hang).
        self.flush_deferred(Duration::ZERO);
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.rx_thread.get() {
            t.unpark();
        }
        if let Some(w) = self.waiter.get() {
            w.wake();
        }
        self.timer.notify_all();
        self.events.notify_all();
    }

    pub fn stopped(&self) -> bool {
        self.stop.load(Ordering::Acquire)
    }
}

/// `Shared::deferred_since` when no ACK is held.
const NOTHING_HELD: u64 = u64::MAX;

/// An Ethernet header without a VLAN tag: a link's MTU counts what follows it.
const ETH_HEADER_LEN: usize = 14;

/// Frames the receive thread takes from its link per lock and flush.
pub(crate) const RX_BATCH: usize = 32;

/// Frames a flush hands a batching link at once: enough that its queue's
/// lock crosses between CPUs once per several frames, few enough that the
/// receiver starts on the first ones while the sender emits the rest.
const TX_BATCH: usize = 8;

/// Starts the receive and timer threads of a device.
pub fn spawn(shared: &Arc<Shared>) -> std::io::Result<Vec<std::thread::JoinHandle<()>>> {
    let s = shared.clone();
    let rx_thread = std::thread::Builder::new().name(format!("{}-rx", shared.name)).spawn(move || {
        let waiter = s.rx.lock().unwrap_or_else(|e| e.into_inner()).link.waiter();
        if let Some(w) = &waiter {
            let _ = s.waiter.set(w.clone());
            if s.stopped() {
                // Stopped before the waiter was known: nothing woke it.
                return;
            }
        }
        let mut watch = s.poll_watch();
        let mut rescue = s.rx.lock().unwrap_or_else(|e| e.into_inner()).second(s.mtu);
        let mut suspension = crate::busy_poll::Suspension::default();
        while !s.stopped() {
            s.resume_polling(&mut suspension);
            if let Some(left) = watch.polling(&s) {
                // An application is busy-polling: stay off the link until
                // it has not polled for a whole interval.
                std::thread::park_timeout(watch.park_for(left));
                continue;
            }
            // Nobody polls (any more): what a polling flush held back goes now.
            s.flush_deferred(Duration::ZERO);
            // Wait without holding the link, so that an application that
            // starts polling meanwhile takes the frame that ends the wait.
            let first = match &waiter {
                Some(w) => match w.wait(Duration::from_millis(50)) {
                    Ok(false) => continue,
                    Ok(true) if watch.polling(&s).is_some() => continue,
                    Ok(true) => Duration::ZERO,
                    Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => break,
                    Err(_) => {
                        std::thread::sleep(Duration::from_millis(10));
                        continue;
                    }
                },
                None => Duration::from_millis(50),
            };
            match s.take_or_rescue(first, &mut rescue, &mut watch) {
                Ok(0) => {}
                Ok(_) => s.linger(&mut watch),
                Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => break,
                Err(_) => std::thread::sleep(Duration::from_millis(10)),
            }
        }
    })?;
    let _ = shared.rx_thread.set(rx_thread.thread().clone());
    let s = shared.clone();
    let timer_thread = std::thread::Builder::new().name(format!("{}-timer", shared.name)).spawn(move || {
        let mut core = s.lock();
        while !s.stopped() {
            let now = s.now();
            if core.qos_wake.is_some_and(|t| t <= now) {
                core.qos_wake = None;
                s.flush(&mut core);
                core.write_out();
                continue;
            }
            let next = match (core.ep.poll_timeout(), core.qos_wake) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            let wait = match next {
                Some(t) if t <= now => {
                    core.ep.handle_timeout(now);
                    s.flush(&mut core);
                    core.write_out();
                    continue;
                }
                Some(t) => (t - now).min(Duration::from_millis(100)),
                None => Duration::from_millis(100),
            };
            core.timer_sleeps_until = Some(now + wait);
            core = core.wait_timeout(&s.timer, wait);
            core.timer_sleeps_until = None;
        }
        if let Some(p) = core.pcap.take() {
            use std::io::Write;
            let _ = p.into_inner().flush();
        }
    })?;
    Ok(vec![rx_thread, timer_thread])
}
