//! The in-memory fabric: devices in one process joined by a learning
//! Ethernet switch, with no root and no kernel networking. Frames are the
//! same bytes a TAP would carry (Ethernet, IP, UDP, BTH…, ICRC). Faults
//! (drop, duplicate, reorder, corrupt) can be switched on per fabric.

use std::collections::VecDeque;

use rustc_hash::FxHashMap;
use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, RwLock};
use std::time::Duration;

use transport::sim::Rng;

use crate::lent::Lent;
use crate::link::{Link, LinkRx, LinkTx, LinkWait};
use crate::mr::Region;

/// Per-frame fault probabilities (0.0..=1.0).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Faults {
    pub drop: f64,
    pub dup: f64,
    pub reorder: f64,
    pub corrupt: f64,
}

impl Faults {
    fn any(&self) -> bool {
        self.drop > 0.0 || self.dup > 0.0 || self.reorder > 0.0 || self.corrupt > 0.0
    }
}

/// What the switch did, for tests and reports.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FabricStats {
    pub forwarded: u64,
    pub flooded: u64,
    pub dropped: u64,
    pub duplicated: u64,
    pub reordered: u64,
    pub corrupted: u64,
    /// Frames lost because a port's queue was full (a congested switch port).
    pub overflowed: u64,
    /// Frames whose payloads their receivers copied in from the senders'
    /// MRs (`crate::lent`); the rest of the frames sent with payloads lent
    /// (a device's `tx_payloads_lent`) had them copied in by their senders.
    pub lent: u64,
}

#[derive(Default)]
struct Stats {
    forwarded: AtomicU64,
    flooded: AtomicU64,
    dropped: AtomicU64,
    duplicated: AtomicU64,
    reordered: AtomicU64,
    corrupted: AtomicU64,
    overflowed: AtomicU64,
}

fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

/// One port's receive queue. A sender wakes the receiver only if it is
/// parked in `recv`: while the device busy-polls, frames cost no wake-up.
#[derive(Default)]
struct PortQueue {
    q: Mutex<PortState>,
    ready: Condvar,
    /// Whether `q` may hold frames or be closed, kept under its lock: a busy
    /// poll of an empty port reads this and takes no lock. Locking on every
    /// poll made the poller and the sender fight over the mutex (4.5 % of a
    /// `write_lat` profile in futex waits, docs/benchmarks-history.md, stop 17).
    busy: AtomicBool,
}

#[derive(Default)]
struct PortState {
    frames: VecDeque<Vec<u8>>,
    parked: bool,
    closed: bool,
    /// `LinkWait::wake` was called: the next (or current) wait ends.
    woken: bool,
    /// Payloads still in their senders' MRs, in the order of their frames,
    /// each with the address of its frame's buffer (unique while queued).
    /// A queue of their own: the frames' queue stays one word per frame,
    /// and a stream without lent payloads writes nothing here.
    /// (Boxed on purpose: the port's state, whose lines both CPUs write
    /// per batch, grows by one word instead of four.)
    #[allow(clippy::box_collection)]
    lent: Box<VecDeque<(usize, Lent)>>,
}

impl PortState {
    fn push(&mut self, frame: Vec<u8>) {
        self.frames.push_back(frame);
    }

    /// The next frame, and where its payloads are still to be copied in
    /// from (into `jobs`, as `(slot, payload)`).
    fn pop(&mut self, slot: usize, jobs: &mut Vec<(usize, Lent)>) -> Option<Vec<u8>> {
        let f = self.frames.pop_front()?;
        while self.lent.front().is_some_and(|(at, _)| *at == f.as_ptr() as usize) {
            if let Some((_, l)) = self.lent.pop_front() {
                jobs.push((slot, l));
            }
        }
        Some(f)
    }
}

/// The fault injector's state; only touched while faults are switched on.
struct Faulty {
    faults: Faults,
    rng: Rng,
    /// Per port, a frame held back to be delivered after the next one.
    held: Vec<Option<Vec<u8>>>,
}

struct Inner {
    ports: RwLock<Vec<Arc<PortQueue>>>,
    macs: RwLock<MacTable>,
    /// `MacTable::generation`, readable without the table's lock: a
    /// sender's fast path compares its route against it.
    mac_generation: AtomicU64,
    faults_on: AtomicBool,
    faulty: Mutex<Faulty>,
    stats: Stats,
    /// Every sender's state, for the counts kept there (`TxState::forwarded`).
    senders: Mutex<Vec<Arc<Mutex<TxState>>>>,
    /// Frame buffers handed back by receivers, reused by senders: frames
    /// move between threads without an allocation or a copy each.
    pool: Mutex<Vec<Vec<u8>>>,
}

/// The switch's learned MACs. `generation` moves with every change, so a
/// sender may keep its last answer (`Route`) for as long as it holds.
#[derive(Default)]
struct MacTable {
    port_of: FxHashMap<[u8; 6], usize>,
    generation: u64,
}

impl MacTable {
    fn learn(&mut self, mac: [u8; 6], port: usize) {
        self.port_of.insert(mac, port);
        self.generation += 1;
    }
}

/// A sender's last unicast forwarding decision: its frames of a stream all
/// have one source and one destination, so the two hash probes per frame
/// (learning the source, finding the destination) and the port table's
/// lock can be skipped while the table has not changed.
#[derive(Clone)]
struct Route {
    generation: u64,
    src: [u8; 6],
    dst: [u8; 6],
    queue: Arc<PortQueue>,
}

/// A sender's own state, behind one lock taken once per frame.
#[derive(Default)]
struct TxState {
    route: Option<Route>,
    /// Empty buffers taken from the pool a batch at a time.
    stash: Vec<Vec<u8>>,
    /// Frames this sender forwarded on the fast path. Counted here, under
    /// the lock it holds anyway: a counter of the switch's would be a
    /// cache line that every sender of every device writes per frame.
    forwarded: u64,
    /// The destination's queue as this sender's last batch left it: long
    /// when its receiver is the slower side (`LEND_DEPTH`).
    depth: usize,
    /// Regions of payloads this sender copied in itself, let go of in bulk.
    spent: Vec<Arc<Region>>,
    /// Frames this sender passed on with payloads lent (`FabricStats::lent`).
    lent: u64,
}

/// Past this many frames waiting at the destination, a sender copies lent
/// payloads in itself: its receiver is the slower side, and the copy would
/// only add to that side's work. Under QEMU's emulation, where no cache
/// line crosses anything, lending everything made the guest comparison 7 %
/// slower on every link order (docs/benchmarks-history.md, "What stop 26 changed").
const LEND_DEPTH: usize = 64;

/// A switch; cloning gives another handle to the same one.
#[derive(Clone)]
pub struct Fabric {
    inner: Arc<Inner>,
}

/// Frames a port may queue before the switch drops (like a switch buffer).
const PORT_QUEUE: usize = 8192;
/// Buffers the pool keeps at most.
const POOL_MAX: usize = 4096;
/// Capacity of a fresh frame buffer (a 4096-byte IB MTU frame and headers).
const FRAME_CAP: usize = 4096 + 256;
/// Buffers a sender takes from the pool per lock.
const STASH: usize = 32;

impl Default for Fabric {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        // The switch is gone: receivers see BrokenPipe once their queue is empty.
        if let Ok(ports) = self.ports.read() {
            for p in ports.iter() {
                if let Ok(mut st) = p.q.lock() {
                    st.closed = true;
                    p.busy.store(true, Ordering::Release);
                }
                p.ready.notify_all();
            }
        }
    }
}

impl Fabric {
    pub fn new() -> Self {
        Self::with_faults(Faults::default(), 1)
    }

    pub fn with_faults(faults: Faults, seed: u64) -> Self {
        Fabric {
            inner: Arc::new(Inner {
                ports: RwLock::new(Vec::new()),
                macs: RwLock::new(MacTable::default()),
                mac_generation: AtomicU64::new(0),
                faults_on: AtomicBool::new(faults.any()),
                faulty: Mutex::new(Faulty { faults, rng: Rng::new(seed), held: Vec::new() }),
                stats: Stats::default(),
                pool: Mutex::new(Vec::new()),
                senders: Mutex::new(Vec::new()),
            }),
        }
    }

    pub fn set_faults(&self, faults: Faults) {
        if let Ok(mut f) = self.inner.faulty.lock() {
            f.faults = faults;
            self.inner.faults_on.store(faults.any(), Ordering::Release);
        }
    }

    /// Sums a count the senders keep (`TxState::forwarded`, `TxState::lent`).
    fn senders_sum(&self, count: fn(&TxState) -> u64) -> u64 {
        let senders = self.inner.senders.lock().unwrap_or_else(|e| e.into_inner());
        senders.iter().map(|t| t.lock().map_or(0, |t| count(&t))).sum()
    }

    pub fn stats(&self) -> FabricStats {
        let s = &self.inner.stats;
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        FabricStats {
            forwarded: g(&s.forwarded) + self.senders_sum(|t| t.forwarded),
            flooded: g(&s.flooded),
            dropped: g(&s.dropped),
            duplicated: g(&s.duplicated),
            reordered: g(&s.reordered),
            corrupted: g(&s.corrupted),
            overflowed: g(&s.overflowed),
            lent: self.senders_sum(|t| t.lent),
        }
    }

    /// Plugs a new port into the switch for a device with `mac`.
    pub fn attach(&self, mac: [u8; 6], mtu: usize) -> Link {
        let queue = Arc::new(PortQueue::default());
        let port = {
            let mut ports = self.inner.ports.write().unwrap_or_else(|e| e.into_inner());
            ports.push(queue.clone());
            ports.len() - 1
        };
        self.inner.learn(mac, port);
        let rx = FabricRx {
            queue,
            fabric: Arc::downgrade(&self.inner),
            spent: Vec::new(),
            jobs: Vec::new(),
            regions: Vec::new(),
            icrc_checked: 0,
        };
        let state = Arc::new(Mutex::new(TxState::default()));
        if let Ok(mut s) = self.inner.senders.lock() {
            s.push(state.clone());
        }
        let tx = FabricTx { fabric: self.clone(), port, state };
        Link { tx: Arc::new(tx), rx: Box::new(rx), mac, mtu }
    }
}

struct FabricTx {
    fabric: Fabric,
    port: usize,
    state: Arc<Mutex<TxState>>,
}

impl Inner {
    fn learn(&self, mac: [u8; 6], port: usize) {
        let mut macs = self.macs.write().unwrap_or_else(|e| e.into_inner());
        macs.learn(mac, port);
        self.mac_generation.store(macs.generation, Ordering::Release);
    }

    /// A buffer for a sender's next frame: from its stash, which is filled
    /// from the pool a batch at a time (one lock per `STASH` frames instead
    /// of one per frame, on a lock the receivers take too).
    fn stashed_buffer(&self, stash: &mut Vec<Vec<u8>>) -> Vec<u8> {
        if stash.is_empty() {
            if let Ok(mut p) = self.pool.lock() {
                let at = p.len().saturating_sub(STASH);
                stash.extend(p.drain(at..));
            }
        }
        stash.pop().unwrap_or_else(|| Vec::with_capacity(FRAME_CAP))
    }

    /// Hands buffers back to the pool under one lock; `spent` is left empty.
    fn recycle_all(&self, spent: &mut Vec<Vec<u8>>) {
        spent.retain(|b| b.capacity() >= FRAME_CAP);
        if let Ok(mut p) = self.pool.lock() {
            let room = POOL_MAX.saturating_sub(p.len());
            p.extend(spent.drain(..).take(room));
        }
        spent.clear();
    }

    /// A pooled buffer, still holding its last frame: a sender that gets it
    /// back from `forward` emits its next frame over it, and since frames of
    /// a stream have one length, resizing it costs no zeroing (the emitter
    /// writes every byte: `every_opcode_round_trips` in transport's tests).
    fn buffer(&self) -> Vec<u8> {
        let b = self.pool.lock().ok().and_then(|mut p| p.pop());
        b.unwrap_or_else(|| Vec::with_capacity(FRAME_CAP))
    }

    /// A pooled buffer, emptied, to copy a frame into.
    fn empty_buffer(&self) -> Vec<u8> {
        let mut b = self.buffer();
        b.clear();
        b
    }

    fn recycle(&self, buf: Vec<u8>) {
        if buf.capacity() < FRAME_CAP {
            return;
        }
        if let Ok(mut p) = self.pool.lock() {
            if p.len() < POOL_MAX {
                p.push(buf);
            }
        }
    }

    fn enqueue(&self, to: &PortQueue, frame: Vec<u8>) {
        let Ok(mut st) = to.q.lock() else { return };
        if st.frames.len() >= PORT_QUEUE {
            bump(&self.stats.overflowed);
            drop(st);
            self.recycle(frame);
            return;
        }
        st.push(frame);
        to.busy.store(true, Ordering::Release);
        if st.parked {
            st.parked = false;
            to.ready.notify_one();
        }
    }

    /// Where a frame from port `from` goes; learns the source MAC (taking
    /// the write lock only when a MAC appears or moves). A unicast decision
    /// that needed no learning is kept in `route`.
    fn targets(&self, from: usize, frame: &[u8], ports: &[Arc<PortQueue>], route: &mut Option<Route>) -> Targets {
        let src: [u8; 6] = frame[6..12].try_into().unwrap_or_default();
        let dst: [u8; 6] = frame[0..6].try_into().unwrap_or_default();
        let macs = self.macs.read().unwrap_or_else(|e| e.into_inner());
        let learned = macs.port_of.get(&src) == Some(&from);
        let to = if dst[0] & 1 == 0 { macs.port_of.get(&dst).copied() } else { None };
        let generation = macs.generation;
        drop(macs);
        if !learned {
            self.learn(src, from);
        }
        match to {
            Some(p) => {
                // Learning moved the generation past the one read above, so
                // only a decision that needed none is worth keeping.
                *route =
                    if learned { ports.get(p).map(|q| Route { generation, src, dst, queue: q.clone() }) } else { None };
                Targets::One(p)
            }
            None => {
                bump(&self.stats.flooded);
                Targets::AllBut(from)
            }
        }
    }

    /// Whether a sender's last route still decides for all of `frames`: the
    /// MAC table has not changed, no faults are on, and each frame has the
    /// route's source and destination.
    fn route_holds(&self, r: &Route, frames: &[Vec<u8>]) -> bool {
        r.generation == self.mac_generation.load(Ordering::Acquire)
            && !self.faults_on.load(Ordering::Acquire)
            && frames.iter().all(|b| b.len() >= 14 && b[0..6] == r.dst && b[6..12] == r.src)
    }

    /// A sender's frame while its route holds and no faults are on: one
    /// lock (the destination's queue) besides the sender's own.
    fn forward_fast(&self, tx: &mut TxState, buf: &mut Vec<u8>) -> bool {
        let TxState { route, stash, forwarded, .. } = tx;
        let Some(r) = route else { return false };
        if !self.route_holds(r, std::slice::from_ref(buf)) {
            return false;
        }
        self.pass_on(&r.queue, (stash, forwarded), buf);
        true
    }

    /// The frame in `buf` moves on to `q`; the sender gets a recycled
    /// buffer from its stash, and counts the frame.
    fn pass_on(&self, q: &PortQueue, (stash, forwarded): (&mut Vec<Vec<u8>>, &mut u64), buf: &mut Vec<u8>) {
        let frame = std::mem::replace(buf, self.stashed_buffer(stash));
        *forwarded += 1;
        self.enqueue(q, frame);
    }

    /// A sender's batch while its route holds for every frame and no
    /// faults are on: the destination's queue is locked once for all of
    /// them. The payloads in `lent` (by index into `bufs`) travel with
    /// their frames, for the receiver to copy in. `false`: nothing was
    /// sent, take the per-frame path.
    fn forward_fast_all(&self, tx: &mut TxState, bufs: &mut [Vec<u8>], lent: &mut Vec<(usize, Lent)>) -> bool {
        let TxState { route, stash, forwarded, depth, lent: lent_count, .. } = tx;
        let Some(r) = route else { return false };
        if !self.route_holds(r, bufs) {
            return false;
        }
        // The replacements are taken before the queue's lock: the pool's
        // lock is never taken under a port's.
        if stash.len() < bufs.len() {
            if let Ok(mut p) = self.pool.lock() {
                let at = p.len().saturating_sub((bufs.len() - stash.len()).max(STASH));
                stash.extend(p.drain(at..));
            }
            while stash.len() < bufs.len() {
                stash.push(Vec::with_capacity(FRAME_CAP));
            }
        }
        let Ok(mut st) = r.queue.q.lock() else { return true };
        let mut full = 0;
        let mut lent = lent.drain(..).peekable();
        for (i, buf) in bufs.iter_mut().enumerate() {
            if st.frames.len() >= PORT_QUEUE {
                // Dropped as `enqueue` would; the sender keeps the buffer.
                full += 1;
                continue;
            }
            let Some(spare) = stash.pop() else { break };
            let mut any = false;
            while let Some((_, l)) = lent.next_if(|(at, _)| *at <= i) {
                st.lent.push_back((buf.as_ptr() as usize, l));
                any = true;
            }
            *lent_count += any as u64;
            st.push(std::mem::replace(buf, spare));
            *forwarded += 1;
        }
        drop(lent);
        r.queue.settle(&st);
        *depth = st.frames.len();
        if st.parked {
            st.parked = false;
            r.queue.ready.notify_one();
        }
        drop(st);
        if full > 0 {
            self.stats.overflowed.fetch_add(full, Ordering::Relaxed);
        }
        true
    }

    fn forward(&self, from: usize, tx: &mut TxState, buf: &mut Vec<u8>) {
        if buf.len() < 14 || self.forward_fast(tx, buf) {
            return;
        }
        let ports = self.ports.read().unwrap_or_else(|e| e.into_inner());
        let targets = self.targets(from, buf, &ports, &mut tx.route);
        match targets {
            Targets::One(to) if !self.faults_on.load(Ordering::Acquire) => {
                let Some(q) = ports.get(to) else { return };
                self.pass_on(q, (&mut tx.stash, &mut tx.forwarded), buf);
            }
            Targets::One(to) => self.forward_faulty(&ports, to, buf),
            Targets::AllBut(from) => {
                for to in (0..ports.len()).filter(|&p| p != from) {
                    self.forward_faulty(&ports, to, buf);
                }
            }
        }
    }

    /// The copying path: floods, and every frame while faults are on.
    fn forward_faulty(&self, ports: &[Arc<PortQueue>], to: usize, frame: &[u8]) {
        let Some(q) = ports.get(to) else { return };
        let Ok(mut f) = self.faulty.lock() else { return };
        let faults = f.faults;
        if f.rng.chance(faults.drop) {
            bump(&self.stats.dropped);
            return;
        }
        let mut copy = self.empty_buffer();
        copy.extend_from_slice(frame);
        if f.rng.chance(faults.corrupt) {
            bump(&self.stats.corrupted);
            let i = f.rng.below(copy.len() as u64) as usize;
            copy[i] ^= 1 << f.rng.below(8);
        }
        bump(&self.stats.forwarded);
        if f.rng.chance(faults.dup) {
            bump(&self.stats.duplicated);
            let mut again = self.empty_buffer();
            again.extend_from_slice(&copy);
            self.enqueue(q, again);
        }
        if f.held.len() <= to {
            f.held.resize_with(to + 1, || None);
        }
        if f.rng.chance(faults.reorder) && f.held[to].is_none() {
            bump(&self.stats.reordered);
            f.held[to] = Some(copy);
            return;
        }
        let held = f.held[to].take();
        drop(f);
        self.enqueue(q, copy);
        if let Some(h) = held {
            self.enqueue(q, h);
        }
    }
}

enum Targets {
    One(usize),
    AllBut(usize),
}

impl LinkTx for FabricTx {
    fn send(&self, frame: &[u8]) -> io::Result<()> {
        let mut buf = self.fabric.inner.empty_buffer();
        buf.extend_from_slice(frame);
        self.send_buf(&mut buf)?;
        self.fabric.inner.recycle(buf);
        Ok(())
    }

    fn send_buf(&self, buf: &mut Vec<u8>) -> io::Result<()> {
        let mut tx = self.state.lock().unwrap_or_else(|e| e.into_inner());
        self.fabric.inner.forward(self.port, &mut tx, buf);
        Ok(())
    }

    fn send_bufs(&self, bufs: &mut [Vec<u8>]) -> usize {
        self.send_bufs_lent(bufs, &mut Vec::new())
    }

    fn lends(&self) -> bool {
        true
    }

    /// Lent payloads take the fast path only: a flood or a fault (which
    /// copies, corrupts or holds a frame back) gets them copied in first.
    fn send_bufs_lent(&self, bufs: &mut [Vec<u8>], lent: &mut Vec<(usize, Lent)>) -> usize {
        let mut tx = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let tx = &mut *tx;
        let inner = &self.fabric.inner;
        if !lent.is_empty() && tx.depth > LEND_DEPTH {
            crate::lent::fill(lent, bufs, &mut tx.spent);
        }
        if !inner.forward_fast_all(tx, bufs, lent) {
            crate::lent::fill(lent, bufs, &mut tx.spent);
            for buf in bufs {
                inner.forward(self.port, tx, buf);
            }
        }
        0
    }

    fn batches_sends(&self) -> bool {
        true
    }
}

struct FabricRx {
    queue: Arc<PortQueue>,
    /// Weak, so that dropping every handle of the switch closes the ports.
    fabric: std::sync::Weak<Inner>,
    /// The buffers a batch replaced, on their way back to the pool.
    spent: Vec<Vec<u8>>,
    /// Payloads to copy into the frames just taken (`crate::lent`).
    jobs: Vec<(usize, Lent)>,
    /// Senders' regions whose payloads were copied, let go of in bulk.
    regions: Vec<Arc<Region>>,
    /// The frames of the last batch whose ICRC was checked as their
    /// payloads were copied in (`LinkRx::take_icrc_checked`).
    icrc_checked: u64,
}

impl FabricRx {
    fn next(&mut self, timeout: Duration) -> io::Result<Option<Vec<u8>>> {
        let Some(mut st) = Self::ready(&self.queue, timeout)? else { return Ok(None) };
        let f = st.pop(0, &mut self.jobs);
        self.queue.settle(&st);
        drop(st);
        Ok(f.map(|f| {
            let mut one = [f];
            crate::lent::fill(&mut self.jobs, &mut one, &mut self.regions);
            let [f] = one;
            f
        }))
    }

    /// The port's state, locked, once it holds a frame; `None` when
    /// `timeout` passed first.
    fn ready(queue: &PortQueue, timeout: Duration) -> io::Result<Option<std::sync::MutexGuard<'_, PortState>>> {
        if timeout.is_zero() && !queue.busy.load(Ordering::Acquire) {
            return Ok(None);
        }
        let mut st = queue.q.lock().map_err(|_| io::Error::other("fabric poisoned"))?;
        if !st.frames.is_empty() {
            return Ok(Some(st));
        }
        // The clock is read only once a wait is due (busy polling asks with
        // a zero timeout, and often).
        let deadline = (!timeout.is_zero()).then(|| std::time::Instant::now().checked_add(timeout)).flatten();
        loop {
            if !st.frames.is_empty() {
                return Ok(Some(st));
            }
            if st.closed {
                return Err(io::Error::new(io::ErrorKind::BrokenPipe, "fabric gone"));
            }
            if timeout.is_zero() {
                return Ok(None);
            }
            let left =
                deadline.map_or(Duration::from_secs(3600), |d| d.saturating_duration_since(std::time::Instant::now()));
            if left.is_zero() {
                return Ok(None);
            }
            st.parked = true;
            st = queue.ready.wait_timeout(st, left).map_err(|_| io::Error::other("fabric poisoned"))?.0;
            st.parked = false;
        }
    }
}

impl PortQueue {
    /// After frames came or went, under the lock: what `busy` says next.
    fn settle(&self, st: &PortState) {
        self.busy.store(!st.frames.is_empty() || st.closed, Ordering::Release);
    }
}

impl LinkWait for PortQueue {
    fn wait(&self, timeout: Duration) -> io::Result<bool> {
        let mut st = self.q.lock().map_err(|_| io::Error::other("fabric poisoned"))?;
        if !st.frames.is_empty() {
            return Ok(true);
        }
        if st.closed {
            return Err(io::Error::new(io::ErrorKind::BrokenPipe, "fabric gone"));
        }
        if std::mem::take(&mut st.woken) {
            return Ok(false);
        }
        st.parked = true;
        st = self.ready.wait_timeout(st, timeout).map_err(|_| io::Error::other("fabric poisoned"))?.0;
        st.parked = false;
        st.woken = false;
        Ok(!st.frames.is_empty())
    }

    fn wake(&self) {
        if let Ok(mut st) = self.q.lock() {
            st.woken = true;
        }
        self.ready.notify_all();
    }
}

impl LinkRx for FabricRx {
    fn second_reader(&self) -> Option<Box<dyn LinkRx>> {
        Some(Box::new(FabricRx {
            queue: self.queue.clone(),
            fabric: self.fabric.clone(),
            spent: Vec::new(),
            jobs: Vec::new(),
            regions: Vec::new(),
            icrc_checked: 0,
        }))
    }

    fn waiter(&self) -> Option<Arc<dyn LinkWait>> {
        Some(self.queue.clone())
    }

    fn take_icrc_checked(&mut self) -> u64 {
        std::mem::take(&mut self.icrc_checked)
    }

    fn linger(&self) -> Duration {
        Duration::from_micros(50)
    }

    fn recv(&mut self, buf: &mut [u8], timeout: Duration) -> io::Result<Option<usize>> {
        let Some(f) = self.next(timeout)? else { return Ok(None) };
        let n = f.len().min(buf.len());
        buf[..n].copy_from_slice(&f[..n]);
        if let Some(inner) = self.fabric.upgrade() {
            inner.recycle(f);
        }
        Ok(Some(n))
    }

    fn recv_buf(&mut self, buf: &mut Vec<u8>, max: usize, timeout: Duration) -> io::Result<Option<usize>> {
        let Some(mut f) = self.next(timeout)? else { return Ok(None) };
        f.truncate(max);
        let n = f.len();
        let old = std::mem::replace(buf, f);
        if let Some(inner) = self.fabric.upgrade() {
            inner.recycle(old);
        }
        Ok(Some(n))
    }

    /// The whole batch under one lock of the port and one of the pool (per
    /// frame, the two locks were a fifth of the receiving thread's time in
    /// a 64 KiB `write_bw`).
    fn recv_batch(
        &mut self,
        bufs: &mut [Vec<u8>],
        lens: &mut [usize],
        max: usize,
        first: Duration,
    ) -> io::Result<usize> {
        let want = bufs.len().min(lens.len());
        if want == 0 {
            return Ok(0);
        }
        let Some(mut st) = Self::ready(&self.queue, first)? else { return Ok(0) };
        let n = want.min(st.frames.len());
        for (i, (buf, len)) in bufs.iter_mut().zip(lens.iter_mut()).take(n).enumerate() {
            let Some(mut f) = st.pop(i, &mut self.jobs) else { break };
            f.truncate(max);
            *len = f.len();
            self.spent.push(std::mem::replace(buf, f));
        }
        self.queue.settle(&st);
        drop(st);
        self.icrc_checked = 0;
        if !self.jobs.is_empty() {
            self.icrc_checked = crate::lent::fill_checked(&mut self.jobs, &mut bufs[..n], &mut self.regions);
        }
        match self.fabric.upgrade() {
            Some(inner) => inner.recycle_all(&mut self.spent),
            None => self.spent.clear(),
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(dst: [u8; 6], src: [u8; 6], tag: u8) -> Vec<u8> {
        let mut f = vec![0u8; 60];
        f[0..6].copy_from_slice(&dst);
        f[6..12].copy_from_slice(&src);
        f[20] = tag;
        f
    }

    /// `N` ports on `fab`, for MACs 02:00:00:00:00:01, …:02, …
    fn ports<const N: usize>(fab: &Fabric) -> ([[u8; 6]; N], [Link; N]) {
        let macs: [[u8; 6]; N] = std::array::from_fn(|i| [2, 0, 0, 0, 0, i as u8 + 1]);
        (macs, macs.map(|m| fab.attach(m, 1500)))
    }

    #[test]
    fn learns_floods_and_forwards() {
        let fab = Fabric::new();
        let ([a, b, _], [la, mut lb, mut lc]) = ports(&fab);
        let mut buf = [0u8; 1600];
        la.tx.send(&frame([0xff; 6], a, 1)).unwrap();
        assert_eq!(lb.rx.recv(&mut buf, Duration::from_millis(10)).unwrap(), Some(60));
        assert_eq!(lc.rx.recv(&mut buf, Duration::from_millis(10)).unwrap(), Some(60), "broadcast floods");
        la.tx.send(&frame(b, a, 2)).unwrap();
        assert_eq!(lb.rx.recv(&mut buf, Duration::from_millis(10)).unwrap(), Some(60));
        assert_eq!(buf[20], 2);
        assert_eq!(lc.rx.recv(&mut buf, Duration::from_millis(10)).unwrap(), None, "unicast goes to its port only");
    }

    #[test]
    fn a_sender_follows_a_mac_that_moves() {
        // A sender keeps its last forwarding decision; a MAC that moves to
        // another port must end it.
        let fab = Fabric::new();
        let (a, b, c, x) = ([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2], [2, 0, 0, 0, 0, 3], [2, 0, 0, 0, 0, 9]);
        let la = fab.attach(a, 1500);
        let lb = fab.attach(b, 1500);
        let mut lb_rx = lb.rx;
        let lc = fab.attach(c, 1500);
        let mut lc_rx = lc.rx;
        let mut buf = [0u8; 1600];
        let t = Duration::from_millis(10);
        lb.tx.send(&frame(a, x, 0)).unwrap(); // x learned on b's port
        for tag in 1..=3 {
            la.tx.send(&frame(x, a, tag)).unwrap();
            assert_eq!(lb_rx.recv(&mut buf, t).unwrap(), Some(60), "frame {tag} to x on b");
            assert_eq!(buf[20], tag);
        }
        lc.tx.send(&frame(a, x, 0)).unwrap(); // x moves to c's port
        la.tx.send(&frame(x, a, 4)).unwrap();
        assert_eq!(lc_rx.recv(&mut buf, t).unwrap(), Some(60), "x's frame follows it to c");
        assert_eq!(buf[20], 4);
        assert_eq!(lb_rx.recv(&mut buf, t).unwrap(), None, "and no longer reaches b");
    }

    #[test]
    fn a_batch_arrives_in_order_and_a_full_port_counts_what_it_drops() {
        let fab = Fabric::new();
        let ([a, b, c], [la, mut lb, mut lc]) = ports(&fab);
        let t = Duration::from_millis(10);
        let mut buf = [0u8; 1600];
        // The first frame takes the per-frame path and leaves the route.
        la.tx.send(&frame(b, a, 0)).unwrap();
        assert_eq!(lb.rx.recv(&mut buf, t).unwrap(), Some(60));
        let mut batch: Vec<Vec<u8>> = (1..=3).map(|tag| frame(b, a, tag)).collect();
        assert_eq!(la.tx.send_bufs(&mut batch), 0);
        for tag in 1..=3 {
            assert_eq!(lb.rx.recv(&mut buf, t).unwrap(), Some(60));
            assert_eq!(buf[20], tag, "in order");
        }
        assert!(batch.iter().all(|f| f.capacity() >= FRAME_CAP), "each slot holds a buffer for the next frame");
        // A batch to two ports takes the per-frame path, each to its own.
        let mut mixed = vec![frame(b, a, 4), frame(c, a, 5), frame(b, a, 6)];
        la.tx.send_bufs(&mut mixed);
        assert_eq!(lc.rx.recv(&mut buf, t).unwrap(), Some(60));
        assert_eq!(buf[20], 5);
        for tag in [4, 6] {
            assert_eq!(lb.rx.recv(&mut buf, t).unwrap(), Some(60));
            assert_eq!(buf[20], tag);
        }
        assert_eq!(fab.stats().forwarded, 7);
        // A port that cannot take the whole batch keeps what fits, in
        // order, and counts the rest.
        let mut big: Vec<Vec<u8>> = (0..PORT_QUEUE + 5).map(|i| frame(b, a, i as u8)).collect();
        la.tx.send_bufs(&mut big);
        assert_eq!(fab.stats().overflowed, 5);
        assert_eq!(fab.stats().forwarded, 7 + PORT_QUEUE as u64);
        for i in 0..PORT_QUEUE {
            assert_eq!(lb.rx.recv(&mut buf, t).unwrap(), Some(60));
            assert_eq!(buf[20], i as u8);
        }
        assert_eq!(lb.rx.recv(&mut buf, t).unwrap(), None);
    }

    #[test]
    fn a_busy_poll_sees_every_frame_and_a_closed_switch_without_the_lock() {
        let fab = Fabric::new();
        let ([a, b], [la, mut lb]) = ports(&fab);
        let mut buf = [0u8; 1600];
        let poll = Duration::ZERO;
        assert_eq!(lb.rx.recv(&mut buf, poll).unwrap(), None);
        // Single frames, then a batch: each one visible to a zero-timeout poll.
        la.tx.send(&frame(b, a, 1)).unwrap();
        assert_eq!(lb.rx.recv(&mut buf, poll).unwrap(), Some(60));
        assert_eq!(lb.rx.recv(&mut buf, poll).unwrap(), None, "taken, the port is idle again");
        let mut batch: Vec<Vec<u8>> = (2..=4).map(|tag| frame(b, a, tag)).collect();
        la.tx.send_bufs(&mut batch);
        let (mut bufs, mut lens) = (vec![Vec::new(); 2], [0usize; 2]);
        assert_eq!(lb.rx.recv_batch(&mut bufs, &mut lens, 1600, poll).unwrap(), 2);
        assert_eq!((bufs[0][20], bufs[1][20]), (2, 3));
        assert_eq!(lb.rx.recv(&mut buf, poll).unwrap(), Some(60), "the frame a batch left stays visible");
        assert_eq!(buf[20], 4);
        assert_eq!(lb.rx.recv(&mut buf, poll).unwrap(), None);
        // Without the switch (every handle of it gone), a poll reports the
        // port gone.
        let mut rx = lb.rx;
        drop((la, lb.tx, fab));
        let err = rx.recv(&mut buf, poll).expect_err("the switch is gone");
        assert_eq!(err.kind(), io::ErrorKind::BrokenPipe);
    }

    #[test]
    fn a_batch_meets_the_faults_like_single_frames() {
        let fab = Fabric::with_faults(Faults { drop: 1.0, ..Faults::default() }, 7);
        let ([a, b], [la, mut lb]) = ports(&fab);
        let mut batch: Vec<Vec<u8>> = (1..=4).map(|tag| frame(b, a, tag)).collect();
        la.tx.send_bufs(&mut batch);
        let mut buf = [0u8; 1600];
        assert_eq!(lb.rx.recv(&mut buf, Duration::from_millis(10)).unwrap(), None);
        assert_eq!(fab.stats().dropped, 4);
    }

    #[test]
    fn a_batch_takes_what_fits_in_order_and_leaves_the_rest_visible() {
        let fab = Fabric::new();
        let ([a, b], [la, lb]) = ports(&fab);
        let mut rx = lb.rx;
        let waiter = rx.waiter().expect("the fabric offers a waiter");
        for tag in 0..5u8 {
            let mut f = frame(b, a, tag);
            f.resize(60 + tag as usize, 0xee);
            la.tx.send_buf(&mut f).unwrap();
        }
        let t = Duration::from_millis(10);
        let mut bufs = vec![Vec::new(); 3];
        let mut lens = [0usize; 3];
        assert_eq!(rx.recv_batch(&mut bufs, &mut lens, 62, t).unwrap(), 3);
        assert_eq!(lens, [60, 61, 62], "each frame's length, cut to max");
        for (i, buf) in bufs.iter().enumerate() {
            assert_eq!(buf[20], i as u8, "in the order sent");
        }
        assert!(waiter.wait(Duration::ZERO).unwrap(), "the two left are still seen by a waiter");
        assert_eq!(rx.recv_batch(&mut bufs, &mut lens, 1500, t).unwrap(), 2);
        assert_eq!((bufs[0][20], bufs[1][20], lens[1]), (3, 4, 64));
        assert_eq!(rx.recv_batch(&mut bufs, &mut lens, 1500, Duration::ZERO).unwrap(), 0);
        assert_eq!(fab.stats().forwarded, 5);
    }

    #[test]
    fn faults_are_applied() {
        let fab = Fabric::with_faults(Faults { drop: 0.5, ..Default::default() }, 3);
        let ([a, b], [la, mut lb]) = ports(&fab);
        for i in 0..1000 {
            la.tx.send(&frame(b, a, i as u8)).unwrap();
        }
        let mut buf = [0u8; 100];
        let mut n = 0;
        while lb.rx.recv(&mut buf, Duration::from_millis(1)).unwrap().is_some() {
            n += 1;
        }
        assert!((400..600).contains(&n), "{n}");
        assert_eq!(fab.stats().dropped, 1000 - n);
    }

    /// Two ports whose MACs the switch has learnt (so that the fast path,
    /// which carries lent payloads, holds), and a region of `len` bytes
    /// of a pattern to lend from.
    fn lending_pair(fab: &Fabric, len: usize) -> ([[u8; 6]; 2], [Link; 2], Arc<Region>) {
        let ([a, b], [la, mut lb]) = ports(fab);
        let mut buf = [0u8; 1600];
        for i in 0..2 {
            la.tx.send(&frame(b, a, i)).unwrap();
            assert!(lb.rx.recv(&mut buf, Duration::from_millis(10)).unwrap().is_some());
        }
        let region = crate::mr::DevMemory::default().register(1, len, verbs_api::AccessFlags::LOCAL_WRITE);
        for (i, x) in region.data.write().unwrap().iter_mut().enumerate() {
            *x = (i * 7 + i / 251) as u8;
        }
        ([a, b], [la, lb], region)
    }

    /// Lent payloads reach their frames whichever side copies them in: the
    /// receiver while its queue is short, the sender once the receiver has
    /// fallen `LEND_DEPTH` frames behind.
    #[test]
    fn lent_payloads_are_copied_in_by_the_receiver_until_it_falls_behind() {
        let fab = Fabric::new();
        let ([a, b], [la, mut lb], region) = lending_pair(&fab, 1 << 20);
        let total = 8 * (LEND_DEPTH / 8 + 4);
        for batch in 0..total / 8 {
            let mut bufs: Vec<Vec<u8>> = (0..8).map(|_| frame(b, a, 0)).collect();
            let mut lent = Vec::new();
            for (i, f) in bufs.iter_mut().enumerate() {
                f.resize(1100, 0xee);
                let k = batch * 8 + i;
                f[20] = k as u8;
                lent.push((i, Lent { region: region.clone(), off: k * 1024, len: 1024, at: 40 }));
            }
            assert_eq!(la.tx.send_bufs_lent(&mut bufs, &mut lent), 0);
            assert!(lent.is_empty());
        }
        let passed = fab.stats().lent;
        assert!(passed > 0 && (passed as usize) < total, "{passed} of {total} frames passed with their payloads lent");
        let data = region.data.read().unwrap().to_vec();
        let (mut bufs, mut lens) = (vec![Vec::new(); 8], [0usize; 8]);
        let mut k = 0;
        while k < total {
            let n = lb.rx.recv_batch(&mut bufs, &mut lens, 1500, Duration::from_millis(10)).unwrap();
            assert!(n > 0, "{k} of {total} frames arrived");
            for f in &bufs[..n] {
                assert_eq!((f.len(), f[20]), (1100, k as u8));
                assert!(f[40..1064] == data[k * 1024..k * 1024 + 1024], "frame {k}'s payload");
                k += 1;
            }
        }
    }

    /// An RC SEND ONLY from `src` to `dst` carrying `payload`, and where
    /// the payload lies in it.
    fn roce(dst: [u8; 6], src: [u8; 6], payload: &[u8]) -> (Vec<u8>, std::ops::Range<usize>) {
        use transport::wire::*;
        let ip = Ipv4Repr {
            src: [10, 0, 0, 1].into(),
            dst: [10, 0, 0, 2].into(),
            dscp: 0,
            ecn: 0,
            ident: 1,
            dont_frag: true,
            ttl: 64,
            protocol: 17,
        };
        let udp = UdpRepr { src_port: 0xc000, dst_port: 4791, checksum: UdpChecksum::None };
        let eth = EthernetRepr {
            dst: smoltcp::wire::EthernetAddress(dst),
            src: smoltcp::wire::EthernetAddress(src),
            vlan: None,
            ethertype: 0,
        };
        let ib = IbRepr {
            bth: BthRepr::new(Opcode::RcSendOnly, 0xffff, 0x12, 7),
            ext: ExtHeaders::default(),
            payload_len: payload.len(),
        };
        let f = FrameRepr { eth, net: NetRepr::V4 { ip, udp }, ib };
        let mut out = vec![0u8; f.buffer_len()];
        f.emit(payload, &mut out).unwrap();
        (out, f.payload_range())
    }

    /// The receiver checks each lent payload's frame ICRC as it copies the
    /// payload in (`lent::fill_checked`). A frame whose payload is still
    /// what its sender hashed arrives whole and marked as checked. One whose
    /// payload changed in the MR after it was hashed (an application that
    /// wrote to a buffer it had posted) arrives with the new bytes, not
    /// marked, and fails the receiver's own check, which counts the drop.
    #[test]
    fn lent_payloads_are_checked_as_they_are_copied_in() {
        let fab = Fabric::new();
        let ([a, b], [la, mut lb], region) = lending_pair(&fab, 1 << 16);
        let data = region.data.read().unwrap().to_vec();
        let len = 2048;
        let want: Vec<_> = (0..4).map(|k| roce(b, a, &data[k * len..(k + 1) * len])).collect();
        let mut bufs: Vec<Vec<u8>> = want
            .iter()
            .map(|(f, at)| {
                let mut f = f.clone();
                f[at.clone()].fill(0);
                f
            })
            .collect();
        let mut lent: Vec<_> =
            (0..4).map(|k| (k, Lent { region: region.clone(), off: k * len, len, at: want[k].1.start })).collect();
        assert_eq!(la.tx.send_bufs_lent(&mut bufs, &mut lent), 0);
        region.data.write().unwrap()[2 * len + 5] ^= 0x10;
        let (mut got, mut lens) = (vec![Vec::new(); 8], [0usize; 8]);
        assert_eq!(lb.rx.recv_batch(&mut got, &mut lens, 4200, Duration::from_millis(10)).unwrap(), 4);
        assert_eq!(lb.rx.take_icrc_checked(), 0b1011);
        assert_eq!(lb.rx.take_icrc_checked(), 0, "taking it clears it");
        for k in [0, 1, 3] {
            assert_eq!(&got[k][..lens[k]], &want[k].0[..], "frame {k}");
            assert!(transport::wire::Frame::verify(&got[k][..lens[k]]).is_ok());
        }
        let changed = &got[2][..lens[2]];
        assert_eq!(changed[want[2].1.clone()], region.data.read().unwrap()[2 * len..3 * len]);
        assert!(matches!(transport::wire::Frame::verify(changed), Err(transport::wire::Error::IcrcMismatch { .. })));
    }
}
