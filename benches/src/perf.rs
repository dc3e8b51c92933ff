//! The verbs tests, after perftest's `ib_*_bw` and `ib_*_lat`, written
//! against `verbs-api` only. Both ends run in this process: the client
//! (side A) on the calling thread, the server (side B) on a thread of its own
//! where the test needs an active server (send_bw reposts receives; the
//! ping-pong latency tests answer every message).

use softrdma::turn_trace::{mark, Stage};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use verbs_api::helpers::{to_init, to_rts, ConnectOptions, PeerInfo};
use verbs_api::{
    AccessFlags, Ah, AhAttr, Context, Cq, Mr, Mtu, Pd, Qp, QpCap, QpInitAttr, QpType, RecvWr, SendFlags, SendOp,
    SendWr, Sge, WcStatus, WorkCompletion,
};

use crate::events::EventCq;
use crate::report::{BwRow, LatRow};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Test {
    WriteBw,
    ReadBw,
    SendBw,
    AtomicBw,
    WriteLat,
    SendLat,
    ReadLat,
}

impl Test {
    pub fn is_bw(self) -> bool {
        matches!(self, Test::WriteBw | Test::ReadBw | Test::SendBw | Test::AtomicBw)
    }

    /// perftest's banner name.
    pub fn title(self) -> &'static str {
        match self {
            Test::WriteBw => "RDMA_Write BW Test",
            Test::ReadBw => "RDMA_Read BW Test",
            Test::SendBw => "Send BW Test",
            Test::AtomicBw => "Atomic FETCH_AND_ADD BW Test",
            Test::WriteLat => "RDMA_Write Latency Test",
            Test::SendLat => "Send Latency Test",
            Test::ReadLat => "RDMA_Read Latency Test",
        }
    }
}

/// Parameters of a run (perftest's flags).
#[derive(Debug, Clone)]
pub struct PerfConfig {
    pub iters: u64,
    pub duration: Option<Duration>,
    pub qps: usize,
    pub tx_depth: u32,
    pub rx_depth: u32,
    pub mtu: Mtu,
    pub conn: QpType,
    pub inline: u32,
    /// A completion every `cq_mod` sends (perftest's -Q; default 100, at most tx_depth).
    pub cq_mod: u32,
    /// Local ACK timeout exponent (4.096 us * 2^timeout).
    pub timeout: u8,
    /// The GID index both ends use (perftest's -x): 1 IPv4, 2 IPv6.
    pub gid_index: u8,
    /// Bandwidth tests: both ends stream towards each other (perftest's -b).
    pub bidirectional: bool,
    /// Sleep on CQ events instead of polling (perftest's -e; `crate::events`).
    pub events: bool,
}

impl Default for PerfConfig {
    fn default() -> Self {
        PerfConfig {
            iters: 5000,
            duration: None,
            qps: 1,
            tx_depth: 128,
            rx_depth: 512,
            mtu: Mtu::M1024,
            conn: QpType::Rc,
            inline: 0,
            cq_mod: 100,
            timeout: 14,
            gid_index: 1,
            bidirectional: false,
            events: false,
        }
    }
}

pub type Res<T> = Result<T, String>;

fn e<E: std::fmt::Display>(what: &str) -> impl Fn(E) -> String + '_ {
    move |err| format!("{what}: {err}")
}

/// Bytes of a message; the same pattern at source and in checks.
pub fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len).map(|i| (i as u32).wrapping_mul(2_654_435_761).rotate_right(13) as u8 ^ seed).collect()
}

/// One end of a connection: its objects and one MR with a slot per QP.
pub struct Side {
    pub ctx: Arc<dyn Context>,
    pub pd: Arc<dyn Pd>,
    pub cq: Arc<dyn Cq>,
    pub rcq: Arc<dyn Cq>,
    pub mr: Arc<dyn Mr>,
    pub qps: Vec<Arc<dyn Qp>>,
    /// Bytes per QP in the MR: a receive area then a send area, each `half` long.
    pub half: usize,
    /// UD: address handle towards the peer.
    pub ah: Option<Arc<dyn Ah>>,
    pub peer_qpns: Vec<u32>,
    pub qkey: u32,
    /// With -e: `cq` and `rcq` as the event-sleeping CQs they are.
    pub event_cqs: Vec<Arc<EventCq>>,
}

impl Side {
    /// Address of QP `i`'s receive area (`recv = true`) or send area.
    pub fn area(&self, i: usize, recv: bool) -> u64 {
        self.mr.addr() + self.offset(i, recv) as u64
    }
    pub fn offset(&self, i: usize, recv: bool) -> usize {
        i * 2 * self.half + if recv { 0 } else { self.half }
    }
}

/// UD receive buffers start with 40 bytes of GRH.
pub const GRH: usize = 40;

fn make_side(ctx: &Arc<dyn Context>, cfg: &PerfConfig, size: usize) -> Res<Side> {
    let pd = ctx.alloc_pd().map_err(e("alloc_pd"))?;
    let q = cfg.qps as u32;
    let cqe = ((cfg.tx_depth + cfg.rx_depth) * q + 64).min(1 << 20);
    let what = if cfg.events { "create_cq with a completion channel" } else { "create_cq" };
    let (cq, scq_events) = EventCq::or_plain(ctx, cqe, cfg.events).map_err(e(what))?;
    let (rcq, rcq_events) = EventCq::or_plain(ctx, cqe, cfg.events).map_err(e(what))?;
    let event_cqs: Vec<_> = scq_events.into_iter().chain(rcq_events).collect();
    let half = (size.max(8) + GRH).div_ceil(64) * 64;
    let mr = pd.reg_mr(half * 2 * cfg.qps, AccessFlags::all()).map_err(e("reg_mr"))?;
    let mut qps = Vec::new();
    for _ in 0..cfg.qps {
        let attr = qp_init(cfg.conn, (&cq, &rcq), (cfg.tx_depth, cfg.rx_depth), cfg.inline);
        qps.push(pd.create_qp(&attr).map_err(e("create_qp"))?);
    }
    let qkey = 0x1111_1111;
    Ok(Side { ctx: ctx.clone(), pd, cq, rcq, mr, qps, half, ah: None, peer_qpns: Vec::new(), qkey, event_cqs })
}

/// A QP as perftest creates one: `depth` (send, receive) work requests of
/// one SGE each, no SRQ, sends signalled as they ask.
pub(crate) fn qp_init(
    qp_type: QpType,
    (send_cq, recv_cq): (&Arc<dyn Cq>, &Arc<dyn Cq>),
    (max_send_wr, max_recv_wr): (u32, u32),
    max_inline_data: u32,
) -> QpInitAttr {
    QpInitAttr {
        qp_type,
        send_cq: send_cq.clone(),
        recv_cq: recv_cq.clone(),
        srq: None,
        cap: QpCap { max_send_wr, max_recv_wr, max_send_sge: 1, max_recv_sge: 1, max_inline_data },
        sq_sig_all: false,
    }
}

/// Creates both ends and brings every QP pair to RTS (perftest's
/// `ctx_connect`, with the out-of-band exchange done in memory).
pub fn connect(a: &Arc<dyn Context>, b: &Arc<dyn Context>, cfg: &PerfConfig, size: usize) -> Res<(Side, Side)> {
    let mut x = make_side(a, cfg, size)?;
    let mut y = make_side(b, cfg, size)?;
    let g = cfg.gid_index;
    let o = ConnectOptions { mtu: cfg.mtu, sgid_index: g, timeout: cfg.timeout, ..Default::default() };
    let gx = a.query_gid(1, u32::from(g)).map_err(e("query_gid"))?;
    let gy = b.query_gid(1, u32::from(g)).map_err(e("query_gid"))?;
    for i in 0..cfg.qps {
        let (px, py) = (0x1000 + i as u32 * 7, 0x8000 + i as u32 * 13);
        let ix = PeerInfo { qpn: x.qps[i].qp_num(), psn: px, gid: gx };
        let iy = PeerInfo { qpn: y.qps[i].qp_num(), psn: py, gid: gy };
        to_init(&x.qps[i], &o).map_err(e("RESET->INIT"))?;
        to_init(&y.qps[i], &o).map_err(e("RESET->INIT"))?;
        to_rts(&x.qps[i], px, &iy, &o).map_err(e("INIT->RTS"))?;
        to_rts(&y.qps[i], py, &ix, &o).map_err(e("INIT->RTS"))?;
        x.peer_qpns.push(iy.qpn);
        y.peer_qpns.push(ix.qpn);
    }
    if cfg.conn == QpType::Ud {
        x.ah = Some(x.pd.create_ah(&AhAttr::new(gy, g)).map_err(e("create_ah"))?);
        y.ah = Some(y.pd.create_ah(&AhAttr::new(gx, g)).map_err(e("create_ah"))?);
    }
    Ok((x, y))
}

pub(crate) fn check(wc: &WorkCompletion, what: &str) -> Res<()> {
    if wc.status != WcStatus::Success {
        return Err(format!("{what}: completion {} ({:?}) for wr_id {:#x}", wc.status.as_str(), wc.status, wc.wr_id));
    }
    Ok(())
}

const SEQ_MASK: u64 = (1 << 48) - 1;

/// Work requests a bandwidth test hands `post_send` at once, at most.
const POST_LIST: usize = 32;

/// The send work request of test `t` for QP `i` of `a` towards `b`.
pub(crate) fn send_wr(
    t: Test,
    a: &Side,
    b_addr: u64,
    b_rkey: u32,
    i: usize,
    size: usize,
    inline: Option<&Vec<u8>>,
) -> SendWr {
    let local = Sge { addr: a.area(i, false), length: size as u32, lkey: a.mr.lkey() };
    let op = match t {
        Test::WriteBw | Test::WriteLat => SendOp::RdmaWrite { remote_addr: b_addr, rkey: b_rkey },
        Test::ReadBw | Test::ReadLat => SendOp::RdmaRead { remote_addr: b_addr, rkey: b_rkey },
        Test::AtomicBw => SendOp::AtomicFetchAdd { remote_addr: b_addr, rkey: b_rkey, add: 1 },
        Test::SendBw | Test::SendLat => SendOp::Send,
    };
    let sge = match t {
        Test::ReadBw | Test::ReadLat => Sge { addr: a.area(i, true), ..local },
        // Beside the word the peer's fetch-adds hit under -b (at offset 0).
        Test::AtomicBw => Sge { addr: a.area(i, true) + 8, length: 8, lkey: a.mr.lkey() },
        _ => local,
    };
    let mut wr = SendWr::new(0, op, vec![sge]);
    wr.flags = SendFlags::NONE;
    if let Some(d) = inline {
        wr.inline_data = Some(d.clone());
        wr.flags = SendFlags::INLINE;
    }
    if a.ah.is_some() {
        wr.remote_qpn = a.peer_qpns[i];
        wr.remote_qkey = a.qkey;
    }
    wr
}

fn recv_wr(s: &Side, i: usize, size: usize, id: u64) -> RecvWr {
    let extra = if s.ah.is_some() { GRH } else { 0 };
    RecvWr {
        wr_id: ((i as u64) << 48) | id,
        sg_list: vec![Sge { addr: s.area(i, true), length: (size + extra) as u32, lkey: s.mr.lkey() }],
    }
}

/// The best rate over any stretch of at least `window` messages: perftest's
/// "BW peak", made less sensitive to a single lucky completion.
pub fn peak(stamps: &[(Instant, u64)], window: u64) -> f64 {
    let mut best = 0.0f64;
    let mut k = 0;
    for j in 0..stamps.len() {
        if k < j {
            k = j;
        }
        while k < stamps.len() && stamps[k].1 - stamps[j].1 < window {
            k += 1;
        }
        if k == stamps.len() {
            break;
        }
        let dt = stamps[k].0.duration_since(stamps[j].0).as_secs_f64();
        if dt > 0.0 {
            best = best.max((stamps[k].1 - stamps[j].1) as f64 / dt);
        }
    }
    best
}

/// Fails a test that makes no progress for this long.
pub(crate) const STALL: Duration = Duration::from_secs(20);

/// One bandwidth measurement at one message size.
pub fn run_bw(t: Test, ca: &Arc<dyn Context>, cb: &Arc<dyn Context>, cfg: &PerfConfig, size: usize) -> Res<BwRow> {
    runnable(t, cfg, size)?;
    let size = if t == Test::AtomicBw { 8 } else { size };
    let (a, b) = connect(ca, cb, cfg, size)?;
    let q = cfg.qps;
    let src = pattern(size, 0x5a);
    for i in 0..q {
        a.mr.write(a.offset(i, false), &src).map_err(e("mr write"))?;
        b.mr.write(b.offset(i, false), &src).map_err(e("mr write"))?;
    }
    // perftest's -b: both ends stream at once, each towards the other, and
    // the row is the sum of the two directions (as perftest's client adds
    // the server's report to its own).
    let dirs: Vec<(&Side, &Side)> = if cfg.bidirectional { vec![(&a, &b), (&b, &a)] } else { vec![(&a, &b)] };
    if t == Test::SendBw {
        // Receives are posted before the first send can leave (UC/UD drop
        // what finds none).
        for (_, to) in &dirs {
            for i in 0..q {
                let wrs: Vec<RecvWr> = (0..cfg.rx_depth as u64).map(|n| recv_wr(to, i, size, n)).collect();
                to.qps[i].post_recv(&wrs).map_err(|(_, er)| format!("post_recv: {er}"))?;
            }
        }
    }
    let failed = AtomicBool::new(false);
    let sent: Vec<AtomicU64> = dirs.iter().map(|_| AtomicU64::new(u64::MAX)).collect();
    // Streams direction `d`, then tells its receiver how many to expect,
    // or everyone that it failed.
    let stream_and_tell = |d: usize| {
        let (from, to) = dirs[d];
        let r = stream(t, from, to, cfg, size, &src, &failed);
        match &r {
            Ok((_, n)) => sent[d].store(*n, Ordering::Release),
            Err(_) => failed.store(true, Ordering::Release),
        }
        r
    };
    let rows = std::thread::scope(|s| -> Res<Vec<BwRow>> {
        let failed = &failed;
        let mut receivers = Vec::new();
        if t == Test::SendBw {
            for (&(_, to), total) in dirs.iter().zip(&sent) {
                receivers.push(s.spawn(move || receive_sends(to, cfg, size, total, failed)));
            }
        }
        let stream_and_tell = &stream_and_tell;
        let back = (dirs.len() > 1).then(|| s.spawn(move || stream_and_tell(1)));
        let first = stream_and_tell(0);
        let back = back.map(|h| h.join().map_err(|_| "reverse stream thread panicked".to_string()).and_then(|x| x));
        let got: Vec<Res<u64>> = receivers
            .into_iter()
            .map(|h| h.join().map_err(|_| "server thread panicked".to_string()).and_then(|x| x))
            .collect();
        let mut rows = vec![first?.0];
        if let Some(b) = back {
            rows.push(b?.0);
        }
        for (row, g) in rows.iter_mut().zip(got) {
            row.notes.push(("received".into(), g?.to_string()));
        }
        Ok(rows)
    })?;

    // Verify what is cheap to verify, in each direction.
    let mut verified = true;
    for (&(from, to), row) in dirs.iter().zip(&rows) {
        verified &= verify_bw(t, from, to, cfg, &src, row.iterations)?;
    }
    let mut row = sum_rows(rows);
    row.notes.push(("verified".into(), verified.to_string()));
    if cfg.events {
        row.notes.push(("cq_events".into(), cq_events(&[&a, &b]).to_string()));
    }
    for s in [&a, &b] {
        for qp in &s.qps {
            let _ = qp.destroy();
        }
    }
    Ok(row)
}

/// perftest's server side of `send_bw`: takes the messages arriving at
/// `b`, reposting a receive for each, until the sender's count (`total`,
/// `u64::MAX` while it runs) is reached. Returns how many arrived.
fn receive_sends(b: &Side, cfg: &PerfConfig, size: usize, total: &AtomicU64, failed: &AtomicBool) -> Res<u64> {
    let q = cfg.qps;
    let unreliable = cfg.conn != QpType::Rc;
    // One prepared receive per QP, as perftest reposts its own.
    let mut rwrs: Vec<RecvWr> = (0..q).map(|i| recv_wr(b, i, size, 0)).collect();
    let mut got = 0u64;
    let mut idle = Instant::now();
    // perftest's server spins on its receive CQ (which drives the
    // device: busy polling); on one CPU it would only take turns
    // from the client, so it waits there.
    let spin = softrdma::busy_poll::multi_cpu();
    let mut wc_buf = [WorkCompletion::default(); 64];
    let mut idle_polls = 0u32;
    while got < total.load(Ordering::Acquire) && !failed.load(Ordering::Acquire) {
        let n = take_wcs(&b.rcq, &mut wc_buf, !spin);
        let wcs = &wc_buf[..n];
        if wcs.is_empty() {
            if spin {
                idle_polls += 1;
                if idle_polls.is_multiple_of(spin_yield()) {
                    std::thread::yield_now();
                }
                if !idle_polls.is_multiple_of(1024) {
                    continue;
                }
            }
            // UC and UD drop what finds no receive WQE: once the
            // client is done, a quiet spell ends the count.
            let client_done = total.load(Ordering::Acquire) != u64::MAX;
            if unreliable && client_done && idle.elapsed() > Duration::from_millis(500) {
                break;
            }
            if idle.elapsed() > STALL {
                return Err(format!("send_bw server: no message for {STALL:?} ({got} received)"));
            }
            continue;
        }
        idle = Instant::now();
        for wc in wcs {
            check(wc, "recv")?;
            got += 1;
            let i = (wc.wr_id >> 48) as usize;
            let rwr = &mut rwrs[i];
            rwr.wr_id = ((i as u64) << 48) | got;
            b.qps[i].post_recv(std::slice::from_ref(rwr)).map_err(|(_, er)| format!("post_recv: {er}"))?;
        }
    }
    Ok(got)
}

/// perftest's client loop: test `t`'s work requests from `a` towards `b`
/// on every QP, posted in lists and completed every `cq_mod`, for `-n`
/// messages per QP or `-D` seconds. Returns the row and how many messages
/// completed; stops early, with an error, once `failed` is set (the other
/// direction of `-b` failed).
fn stream(
    t: Test,
    a: &Side,
    b: &Side,
    cfg: &PerfConfig,
    size: usize,
    src: &Vec<u8>,
    failed: &AtomicBool,
) -> Res<(BwRow, u64)> {
    let q = cfg.qps;
    let inline = (size as u32 <= cfg.inline && matches!(t, Test::WriteBw | Test::SendBw)).then_some(src);
    let tx_depth = cfg.tx_depth.max(1) as u64;
    let cq_mod = (cfg.cq_mod as u64).clamp(1, tx_depth);
    let target = if cfg.duration.is_some() { None } else { Some(cfg.iters.max(1)) };
    // The remote address of each QP's message: the peer's receive area, or
    // for READ its send area (the pattern).
    let remote = |i: usize| if t == Test::ReadBw { b.area(i, false) } else { b.area(i, true) };
    let templates: Vec<SendWr> = (0..q).map(|i| send_wr(t, a, remote(i), b.mr.rkey(), i, size, inline)).collect();
    let mut posted = vec![0u64; q];
    let mut done = vec![0u64; q];
    let start = Instant::now();
    let deadline = cfg.duration.map(|d| start + d);
    let mut stamps: Vec<(Instant, u64)> = vec![(start, 0)];
    let mut total_done = 0u64;
    let mut last_progress = Instant::now();
    // perftest's WR arrays: built once per QP, only wr_id and the
    // signaled flag change per post (a clone would allocate its SGE list).
    let mut batches: Vec<Vec<SendWr>> = templates.iter().map(|t| vec![t.clone(); POST_LIST]).collect();
    let mut idle_polls = 0u32;
    // perftest's `struct ibv_wc wc[64]`, reused by every poll.
    let mut wc_buf = [WorkCompletion::default(); 64];
    loop {
        let time_up = deadline.is_some_and(|d| Instant::now() >= d);
        let may_post = |s: u64| match target {
            Some(n) => s < n,
            None => !(time_up && s.is_multiple_of(cq_mod)),
        };
        let mut all_posted = true;
        for i in 0..q {
            // A list per turn. With -e a poll that finds nothing sleeps until
            // a completion, so there the window is filled first, list after
            // list, as perftest's run_iter_bw fills it before it polls.
            loop {
                let mut n = 0;
                while posted[i] - done[i] < tx_depth && may_post(posted[i]) && n < POST_LIST {
                    let sq = posted[i];
                    let last = target.is_some_and(|n| sq + 1 == n);
                    let wr = &mut batches[i][n];
                    wr.wr_id = ((i as u64) << 48) | sq;
                    wr.flags = templates[i].flags;
                    if (sq + 1).is_multiple_of(cq_mod) || last {
                        wr.flags = wr.flags | SendFlags::SIGNALED;
                    }
                    n += 1;
                    posted[i] += 1;
                }
                if n > 0 {
                    let batch = &batches[i][..n];
                    a.qps[i].post_send(batch, a.ah.as_ref()).map_err(|(k, er)| format!("post_send[{k}]: {er}"))?;
                }
                if !cfg.events || n < POST_LIST {
                    break;
                }
            }
            if may_post(posted[i]) {
                all_posted = false;
            }
        }
        if all_posted && posted == done {
            break;
        }
        // Spin on the CQ as perftest does (polling drives the device:
        // busy polling), yielding now and then. On a single CPU, a
        // full send queue is waited out instead: the peer's receive
        // thread needs the CPU to make room.
        let blocked = (0..q).all(|i| posted[i] - done[i] >= tx_depth || !may_post(posted[i]));
        let got = take_wcs(&a.cq, &mut wc_buf, blocked && !softrdma::busy_poll::multi_cpu());
        let wcs = &wc_buf[..got];
        if wcs.is_empty() {
            idle_polls += 1;
            if idle_polls.is_multiple_of(spin_yield()) {
                std::thread::yield_now();
            }
            if idle_polls.is_multiple_of(1024) {
                if failed.load(Ordering::Acquire) {
                    return Err("stopped: the other direction failed".into());
                }
                if last_progress.elapsed() > STALL {
                    return Err(format!("no completion for {STALL:?}: posted {posted:?}, completed {done:?}"));
                }
            }
            continue;
        }
        last_progress = Instant::now();
        for wc in wcs {
            check(wc, "send")?;
            let i = (wc.wr_id >> 48) as usize;
            let n = (wc.wr_id & SEQ_MASK) + 1;
            total_done += n - done[i];
            done[i] = n;
        }
        stamps.push((last_progress, total_done));
    }
    let elapsed = stamps.last().map(|s| s.0.duration_since(start)).unwrap_or_default().as_secs_f64();
    let msgs = total_done as f64;
    let window = (total_done / 20).max(cq_mod * q as u64);
    let pk = peak(&stamps, window).max(msgs / elapsed.max(1e-9));
    let iterations = posted.iter().copied().max().unwrap_or(0);
    let mut row = BwRow {
        bytes: size as u64,
        iterations,
        peak_bps: pk * size as f64,
        avg_bps: msgs * size as f64 / elapsed.max(1e-9),
        msg_rate: msgs / elapsed.max(1e-9),
        notes: Vec::new(),
    };
    row.notes.push(("messages".into(), total_done.to_string()));
    Ok((row, total_done))
}

/// The rows of both directions of `-b` as one, the sums of their rates
/// and counts (a single row is returned as it is).
fn sum_rows(mut rows: Vec<BwRow>) -> BwRow {
    let mut row = rows.remove(0);
    for r in rows {
        row.iterations = row.iterations.max(r.iterations);
        row.peak_bps += r.peak_bps;
        row.avg_bps += r.avg_bps;
        row.msg_rate += r.msg_rate;
        for (k, v) in r.notes {
            let mine = row.notes.iter_mut().find(|(m, _)| *m == k);
            match (mine, v.parse::<u64>()) {
                (Some((_, w)), Ok(n)) => *w = (w.parse::<u64>().unwrap_or(0) + n).to_string(),
                _ => row.notes.push((k, v)),
            }
        }
    }
    row
}

/// Checks what one direction of a bandwidth test left in memory: the last
/// message in `to`'s receive area (WRITE, SEND), the remote bytes in
/// `from`'s (READ), the count of fetch-adds at `to` (atomics).
fn verify_bw(t: Test, from: &Side, to: &Side, cfg: &PerfConfig, src: &[u8], iterations: u64) -> Res<bool> {
    let (q, size) = (cfg.qps, src.len());
    let ok = match t {
        Test::WriteBw | Test::SendBw => {
            let off = if cfg.conn == QpType::Ud { GRH } else { 0 };
            let holds = || {
                (0..q).all(|i| {
                    let mut got = vec![0u8; size];
                    to.mr.read(to.offset(i, true) + off, &mut got).is_ok() && got == src
                })
            };
            // UC and UD complete at the sender when the last packet leaves:
            // give the receiver a moment to place it.
            let until = Instant::now() + Duration::from_secs(2);
            let mut ok = holds();
            while !ok && cfg.conn != QpType::Rc && Instant::now() < until {
                std::thread::sleep(Duration::from_millis(5));
                ok = holds();
            }
            // UD may lose datagrams; if none arrived on a QP its buffer is empty.
            if !ok && !(cfg.conn == QpType::Ud) {
                return Err(format!("{t:?}: the target buffer does not hold the last message"));
            }
            ok
        }
        Test::ReadBw => {
            let ok = (0..q).all(|i| {
                let mut got = vec![0u8; size];
                from.mr.read(from.offset(i, true), &mut got).is_ok() && got == src
            });
            if !ok {
                return Err("read_bw: the local buffer does not hold the remote bytes".into());
            }
            ok
        }
        Test::AtomicBw => {
            for i in 0..q {
                let mut w = [0u8; 8];
                to.mr.read(to.offset(i, true), &mut w).map_err(e("mr read"))?;
                let v = u64::from_ne_bytes(w);
                // Every QP did `iterations` fetch-adds of 1 on its own word.
                if cfg.duration.is_none() && v != iterations {
                    return Err(format!("atomic_bw: remote counter of QP {i} is {v}, want {iterations}"));
                }
            }
            true
        }
        _ => true,
    };
    Ok(ok)
}

/// The CQ events both ends slept on (-e).
fn cq_events(sides: &[&Side]) -> u64 {
    sides.iter().flat_map(|s| &s.event_cqs).map(|c| c.events()).sum()
}

/// Completions from `cq` into `buf`: a non-blocking poll, or with `block` a
/// wait of up to 100 ms for the first one. The count taken.
fn take_wcs(cq: &Arc<dyn Cq>, buf: &mut [WorkCompletion], block: bool) -> usize {
    if !block {
        return cq.poll_into(buf);
    }
    let waited = cq.wait(buf.len(), Duration::from_millis(100));
    buf[..waited.len()].copy_from_slice(&waited);
    waited.len()
}

/// Empty polls between yields of a bandwidth test's spinning thread
/// (`SOFTRDMA_PERF_SPIN_YIELD`, default 8). There the devices' receive
/// threads carry the stream, and a yield lets one that shares the CPU run.
fn spin_yield() -> u32 {
    static V: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    *V.get_or_init(|| env_count("SOFTRDMA_PERF_SPIN_YIELD", 8).max(1))
}

/// A count from the environment, or `default` when unset or unreadable.
fn env_count(var: &str, default: u32) -> u32 {
    std::env::var(var).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// Empty polls between yields of a latency test's spinning thread
/// (`SOFTRDMA_PERF_LAT_SPIN_YIELD`; by default never while the devices
/// busy-poll, else every 8). perftest's latency loops never yield either.
/// With busy polling the two threads are pinned to CPUs of their own and
/// the devices need no other thread while the application polls, so a
/// yield only costs a system call, and a switch to whatever else is
/// runnable on that CPU: with a yield every 8 polls, memory-fabric
/// `write_lat` took 1.15 µs typical over UC against 0.96 without
/// (docs/benchmarks-history.md, stop 22). Without busy polling only the
/// devices' receive threads move frames, and two loops that never yield
/// leave them no CPU of two but at the scheduler's tick: memory-fabric
/// `write_lat --busy-poll 0` took 2–4 ms per half round trip from stop 22
/// until stop 38 found it (8–11 µs before and after).
fn lat_spin_yield() -> u32 {
    static V: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    *V.get_or_init(|| env_count("SOFTRDMA_PERF_LAT_SPIN_YIELD", lat_spin_default(crate::fabric::devices_busy_poll())))
}

/// `lat_spin_yield` when the environment does not say.
fn lat_spin_default(devices_busy_poll: bool) -> u32 {
    if devices_busy_poll {
        0
    } else {
        8
    }
}

/// Whether a latency loop yields after its `spins`-th empty poll.
fn lat_yields(spins: u32) -> bool {
    let every = lat_spin_yield();
    every != 0 && spins.is_multiple_of(every)
}

/// Spins until byte `off` of `mr` is `want`.
fn wait_byte(mr: &Arc<dyn Mr>, off: usize, want: u8, stop: &AtomicBool) -> Res<()> {
    spin_byte(mr, off, want, STALL, stop)
}

/// Spins until byte `off` of `mr` is `want`, for at most `stall` or until
/// `stop` is set: perftest's poll on the last byte of a WRITE (reading an
/// MR drives the device, as a CQ poll does).
pub(crate) fn spin_byte(mr: &Arc<dyn Mr>, off: usize, want: u8, stall: Duration, stop: &AtomicBool) -> Res<()> {
    // The clock is read once the first look misses, as perftest's spin
    // reads none: in a ping-pong the byte is often there at once.
    let mut t = None;
    let mut b = [0u8; 1];
    let mut spins = 0u32;
    loop {
        mr.read(off, &mut b).map_err(e("mr read"))?;
        if b[0] == want {
            return Ok(());
        }
        let t = *t.get_or_insert_with(Instant::now);
        spins = spins.wrapping_add(1);
        if lat_yields(spins) {
            std::thread::yield_now();
        }
        if spins.is_multiple_of(4096) && (t.elapsed() > stall || stop.load(Ordering::Acquire)) {
            return Err(format!("byte {off:#x} is {:#04x}, not {want:#04x}, after {stall:?}", b[0]));
        }
    }
}

/// One completion: spinning on `poll` as perftest's latency tests do (which
/// drives the device: busy polling), or, on a single CPU, blocking in `wait`.
pub(crate) fn next_wc(cq: &Arc<dyn Cq>, timeout: Duration) -> Option<WorkCompletion> {
    if !softrdma::busy_poll::multi_cpu() {
        return cq.wait(1, timeout).into_iter().next();
    }
    let mut t = None;
    let mut spins = 0u32;
    loop {
        let mut wc = [WorkCompletion::default()];
        if cq.poll_into(&mut wc) == 1 {
            return Some(wc[0]);
        }
        let t = *t.get_or_insert_with(Instant::now);
        spins = spins.wrapping_add(1);
        if lat_yields(spins) {
            std::thread::yield_now();
        }
        if spins.is_multiple_of(1024) && t.elapsed() > timeout {
            return None;
        }
    }
}

fn wait_one(cq: &Arc<dyn Cq>, what: &str) -> Res<WorkCompletion> {
    let t = Instant::now();
    loop {
        if let Some(wc) = next_wc(cq, Duration::from_millis(100)) {
            check(&wc, what)?;
            return Ok(wc);
        }
        if t.elapsed() > STALL {
            return Err(format!("{what}: no completion within {STALL:?}"));
        }
    }
}

/// One completion from `cq`, or `None` once `stop` is set (the client is done).
fn wc_unless_stopped(cq: &Arc<dyn Cq>, stop: &AtomicBool) -> Option<WorkCompletion> {
    loop {
        if let Some(wc) = next_wc(cq, Duration::from_millis(50)) {
            return Some(wc);
        }
        if stop.load(Ordering::Acquire) {
            return None;
        }
    }
}

/// Whether test `t` can run with `cfg` at `size`: the transport each
/// operation needs (IBTA Vol 1 ch. 9: READ and atomics are RC only, WRITE
/// is not on UD) and UD's one-packet messages. The CLI asks before it
/// prints its banner; the runs ask again.
pub fn runnable(t: Test, cfg: &PerfConfig, size: usize) -> Res<()> {
    let rc = cfg.conn == QpType::Rc;
    match t {
        Test::AtomicBw if !rc => return Err("atomics need RC (-c RC)".into()),
        Test::ReadBw | Test::ReadLat if !rc => return Err("RDMA READ needs RC (-c RC)".into()),
        Test::WriteBw | Test::WriteLat if cfg.conn == QpType::Ud => return Err("RDMA WRITE needs RC or UC".into()),
        _ => {}
    }
    if cfg.conn == QpType::Ud && size > cfg.mtu.bytes() {
        return Err(format!("max message size in UD cannot be greater than the MTU ({} bytes)", cfg.mtu.bytes()));
    }
    Ok(())
}

/// One latency measurement at one message size: `warmup` untimed exchanges,
/// then `iters` timed ones.
pub fn run_lat(t: Test, ca: &Arc<dyn Context>, cb: &Arc<dyn Context>, cfg: &PerfConfig, size: usize) -> Res<LatRow> {
    runnable(t, cfg, size)?;
    let size = size.max(1);
    let one = PerfConfig { qps: 1, ..cfg.clone() };
    let (a, b) = connect(ca, cb, &one, size)?;
    let warmup = 16u64;
    let iters = cfg.iters.max(1);
    let total = warmup + iters;
    let src = pattern(size, 0x33);
    a.mr.write(a.offset(0, false), &src).map_err(e("mr write"))?;
    b.mr.write(b.offset(0, false), &src).map_err(e("mr write"))?;
    let inline = (size as u32 <= cfg.inline && t != Test::ReadLat).then_some(&src);
    if t == Test::SendLat {
        for s in [&a, &b] {
            let wrs: Vec<RecvWr> = (0..cfg.rx_depth.clamp(1, 64) as u64).map(|n| recv_wr(s, 0, size, n)).collect();
            s.qps[0].post_recv(&wrs).map_err(|(_, er)| format!("post_recv: {er}"))?;
        }
    }
    let stop = AtomicBool::new(false);
    let deadline = cfg.duration.map(|d| Instant::now() + d);
    let mut samples: Vec<Duration> = Vec::with_capacity(iters as usize);
    let last = size - 1;

    let cpus = crate::pin::pair();
    let _client_cpu = cpus.map(|(c, _)| crate::pin::Pinned::to(c));
    let r = std::thread::scope(|s| -> Res<Option<u64>> {
        // The server: answers each message with one of its own.
        let server = (t != Test::ReadLat).then(|| {
            let (a, b, stop) = (&a, &b, &stop);
            s.spawn(move || -> Res<Option<u64>> {
                let _server_cpu = cpus.map(|(_, c)| crate::pin::Pinned::to(c));
                let (served, preempted) = crate::pin::preempted_during(|| -> Res<()> {
                    let mut wr = send_wr(t, b, a.area(0, true), a.mr.rkey(), 0, size, inline);
                    let mut rwr = recv_wr(b, 0, size, 0);
                    for it in 0.. {
                        if stop.load(Ordering::Acquire) {
                            return Ok(());
                        }
                        let marker = (it % 255 + 1) as u8;
                        match t {
                            Test::WriteLat => {
                                if let Err(er) = wait_byte(&b.mr, b.offset(0, true) + last, marker, stop) {
                                    return if stop.load(Ordering::Acquire) { Ok(()) } else { Err(er) };
                                }
                                mark(Stage::AppData);
                            }
                            _ => {
                                let Some(wc) = wc_unless_stopped(&b.rcq, stop) else { return Ok(()) };
                                mark(Stage::AppData);
                                check(&wc, "server recv")?;
                                rwr.wr_id = it;
                                b.qps[0]
                                    .post_recv(std::slice::from_ref(&rwr))
                                    .map_err(|(_, er)| format!("post_recv: {er}"))?;
                            }
                        }
                        if t == Test::WriteLat {
                            match &mut wr.inline_data {
                                Some(d) => d[last] = marker,
                                None => b.mr.write(b.offset(0, false) + last, &[marker]).map_err(e("mr write"))?,
                            }
                        }
                        wr.wr_id = it;
                        wr.flags = wr.flags | SendFlags::SIGNALED;
                        b.qps[0]
                            .post_send(std::slice::from_ref(&wr), b.ah.as_ref())
                            .map_err(|(_, er)| format!("post_send: {er}"))?;
                        if t == Test::WriteLat {
                            // As perftest's write_lat: the send completes (RC:
                            // the peer's ACK is in) before the next wait.
                            let Some(wc) = wc_unless_stopped(&b.cq, stop) else { return Ok(()) };
                            mark(Stage::AppCqe);
                            check(&wc, "server send")?;
                        } else {
                            let mut wcs = [WorkCompletion::default(); 16];
                            let got = b.cq.poll_into(&mut wcs);
                            for wc in &wcs[..got] {
                                check(wc, "server send")?;
                            }
                        }
                    }
                    Ok(())
                });
                served.map(|()| preempted)
            })
        });
        let (r, client) = crate::pin::preempted_during(|| -> Res<()> {
            let remote = if t == Test::ReadLat { b.area(0, false) } else { b.area(0, true) };
            let mut wr = send_wr(t, &a, remote, b.mr.rkey(), 0, size, inline);
            wr.flags = wr.flags | SendFlags::SIGNALED;
            let mut rwr = recv_wr(&a, 0, size, 0);
            for it in 0..u64::MAX {
                if deadline.is_none() && it >= total {
                    break;
                }
                if deadline.is_some_and(|d| Instant::now() >= d) && it >= warmup {
                    break;
                }
                let marker = (it % 255 + 1) as u8;
                if t == Test::WriteLat {
                    // The marker is the last byte of the message, written last.
                    match &mut wr.inline_data {
                        Some(d) => d[last] = marker,
                        None => a.mr.write(a.offset(0, false) + last, &[marker]).map_err(e("mr write"))?,
                    }
                }
                wr.wr_id = it;
                mark(Stage::TurnStart);
                let t0 = Instant::now();
                a.qps[0]
                    .post_send(std::slice::from_ref(&wr), a.ah.as_ref())
                    .map_err(|(_, er)| format!("post_send: {er}"))?;
                match t {
                    Test::WriteLat => {
                        // perftest's order (run_iter_lat_write): post, poll
                        // the send CQ until the WRITE completes, then wait
                        // for the peer's. Under RC the completion needs the
                        // peer's ACK, so the ACK is on the measured path.
                        wait_one(&a.cq, "send")?;
                        mark(Stage::AppCqe);
                        wait_byte(&a.mr, a.offset(0, true) + last, marker, &stop)?;
                        mark(Stage::AppData);
                    }
                    Test::SendLat => {
                        let wc = wait_one(&a.rcq, "recv")?;
                        mark(Stage::AppData);
                        rwr.wr_id = it;
                        a.qps[0].post_recv(std::slice::from_ref(&rwr)).map_err(|(_, er)| format!("post_recv: {er}"))?;
                        let _ = wc;
                        let mut wcs = [WorkCompletion::default(); 16];
                        let got = a.cq.poll_into(&mut wcs);
                        for wc in &wcs[..got] {
                            check(wc, "send")?;
                        }
                    }
                    _ => {
                        wait_one(&a.cq, "read")?;
                        mark(Stage::AppData);
                    }
                }
                let dt = t0.elapsed();
                if it >= warmup {
                    samples.push(dt);
                }
            }
            Ok(())
        });
        stop.store(true, Ordering::Release);
        let server = match server {
            Some(h) => h.join().map_err(|_| "server thread panicked".to_string())??,
            None => Some(0),
        };
        r.map(|()| client.zip(server).map(|(c, s)| c + s))
    });
    let preempted = r?;
    if t == Test::ReadLat {
        let mut got = vec![0u8; size];
        a.mr.read(a.offset(0, true), &mut got).map_err(e("mr read"))?;
        if got != src {
            return Err("read_lat: the local buffer does not hold the remote bytes".into());
        }
    }
    for s in [&a, &b] {
        let _ = s.qps[0].destroy();
    }
    let cq_events = cfg.events.then(|| cq_events(&[&a, &b]));
    let div = if t == Test::ReadLat { 1.0 } else { 2.0 };
    Ok(LatRow { preempted, cq_events, ..LatRow::from_samples(size as u64, &mut samples, div) })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Without busy polling the receive threads move every frame, so a
    /// latency loop must let them at its CPU now and then.
    #[test]
    fn a_latency_loop_yields_only_when_the_devices_do_not_busy_poll() {
        assert_eq!(lat_spin_default(true), 0);
        assert!(lat_spin_default(false) > 0);
    }
}
