//! One perftest-mode test over an open socket: the QPs and memory of this
//! end, the exchange around the test (the module above), and the traffic.

use std::net::TcpStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

use verbs_api::helpers::{to_init, ConnectOptions};
use verbs_api::transitions::required;
use verbs_api::{
    AccessFlags, Ah, AhAttr, Context, Cq, Gid, Mr, Qp, QpAttr, QpPath, QpState, QpType, RecvWr, SendFlags, SendOp,
    SendWr, Sge, WcOpcode, WcStatus, WorkCompletion,
};

use super::{validate, Barrier, BwReport, Dest, Oob, OobConfig, OobResult, Res, CYCLE_BUFFER};
use crate::events::EventCq;
use crate::perf::{next_wc, spin_byte, Test};
use crate::report::{LatDurRow, LatRow};

fn ck<E: std::fmt::Display>(what: &'static str) -> impl Fn(E) -> String {
    move |e| format!("{what}: {e}")
}

/// perftest's fixed `DEF_QKEY`, on both ends.
const QKEY: u32 = 0x1111_1111;

/// This end's side of the test: its QPs (one per `-q`), their CQ, one MR
/// laid out as perftest lays out its buffer, and both ends' messages.
struct Ends {
    qps: Vec<Arc<dyn Qp>>,
    cq: Arc<dyn Cq>,
    /// With `-e`: `cq` as the event-sleeping CQ it is.
    event_cq: Option<Arc<EventCq>>,
    mr: Arc<dyn Mr>,
    my: Vec<Dest>,
    rem: Vec<Dest>,
    ud_ah: Option<Arc<dyn Ah>>,
    /// perftest's BUFF_SIZE: the larger of the message and the cycle
    /// buffer, so a peer cycling through its own layout stays in one slot.
    slot: usize,
    /// Where QP i's peer writes, reads, adds or sends: `rx_base + i * slot`.
    /// QP i sends from `i * slot`.
    rx_base: usize,
    buf_len: usize,
    pattern: Vec<u8>,
    /// The sizes of the run, in order (`sizes`), and the largest of them.
    sizes: Vec<usize>,
    size: usize,
    /// UD receive buffers start with the 40-byte GRH area (perftest's UD_ADDITION).
    grh: usize,
    /// Per QP, receives posted and not yet completed: over UC and UD a lost
    /// message leaves its receive for the next size.
    outstanding: Vec<std::cell::Cell<u64>>,
}

impl Ends {
    fn tx_off(&self, i: usize) -> usize {
        i * self.slot
    }

    fn rx_off(&self, i: usize) -> usize {
        self.rx_base + i * self.slot
    }

    fn recv_wr(&self, i: usize, id: u64) -> RecvWr {
        let sge = Sge {
            addr: self.mr.addr() + self.rx_off(i) as u64,
            length: (self.size + self.grh) as u32,
            lkey: self.mr.lkey(),
        };
        RecvWr { wr_id: id, sg_list: vec![sge] }
    }

    fn post_recvs(&self, i: usize, from: u64, n: u64) -> Res<()> {
        let wrs: Vec<RecvWr> = (from..from + n).map(|id| self.recv_wr(i, id)).collect();
        self.qps[i].post_recv(&wrs).map_err(|(_, e)| format!("post_recv: {e}"))?;
        self.outstanding[i].set(self.outstanding[i].get() + n);
        Ok(())
    }

    /// Posts receives on QP `i` until `want` are outstanding (ctx_set_recv_wqes,
    /// counting those a lost message left); returns how many are.
    fn fill_recvs(&self, i: usize, want: u64) -> Res<u64> {
        let have = self.outstanding[i].get();
        self.post_recvs(i, have, want.saturating_sub(have))?;
        Ok(self.outstanding[i].get())
    }

    /// Which of this end's QPs `qpn` is.
    fn index_of(&self, qpn: u32) -> Res<usize> {
        self.qps.iter().position(|q| q.qp_num() == qpn).ok_or_else(|| format!("a completion for QP {qpn:#x}"))
    }

    /// A receive completed: checks that it holds a whole `size`-byte
    /// message (after the GRH area), and posts its QP's next receive while
    /// that QP has had fewer than `n`. Returns which QP it was.
    fn received(&self, wc: &WorkCompletion, size: usize, posted: &mut [u64], n: u64) -> Res<usize> {
        if wc.byte_len as usize != size + self.grh {
            return Err(format!("received {} bytes, want {size}", wc.byte_len));
        }
        let q = self.index_of(wc.qp_num)?;
        self.outstanding[q].set(self.outstanding[q].get().saturating_sub(1));
        if posted[q] < n {
            self.post_recvs(q, posted[q], 1)?;
            posted[q] += 1;
        }
        Ok(q)
    }

    fn read(&self, off: usize, len: usize) -> Res<Vec<u8>> {
        let mut b = vec![0u8; len];
        self.mr.read(off, &mut b).map_err(ck("mr read"))?;
        Ok(b)
    }

    /// How many of the first `len` bytes of each QP's slot are non-zero:
    /// the slots it sends from (`base` 0) or those its peer targets
    /// (`rx_base`).
    fn filled(&self, base: usize, len: usize) -> Res<Vec<usize>> {
        (0..self.qps.len()).map(|q| self.read(base + q * self.slot, len).map(|b| non_zero(&b))).collect()
    }

    /// `filled` for the slots a peer WRITEs into. Over RC the peer's
    /// completions came with ACKs, so its writes are in our memory by the
    /// time its report arrives; a UC WRITE completes when it is sent, and
    /// its frames may still be on their way (or in a receive queue whose
    /// thread is off its CPU) when the report has come over TCP: wait for
    /// them a while, as a reader of UC data must.
    fn landed(&self, conn: QpType, len: usize) -> Res<Vec<usize>> {
        let start = Instant::now();
        loop {
            let nz = self.filled(self.rx_base, len)?;
            if conn == QpType::Rc || nz.iter().all(|&k| k > 0) || start.elapsed() > UC_LANDING {
                return Ok(nz);
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

/// How long a check waits for a UC peer's WRITEs to land (`Ends::landed`).
const UC_LANDING: Duration = Duration::from_secs(2);

fn non_zero(b: &[u8]) -> usize {
    b.iter().filter(|&&x| x != 0).count()
}

/// The sum of `b`'s 8-byte words: on a zeroed buffer, what fetch-adds of
/// 1 added to it, wherever they landed.
fn counter_sum(b: &[u8]) -> u64 {
    b.chunks(8).map(|c| u64::from_le_bytes(c.try_into().unwrap_or([0; 8]))).fold(0, u64::wrapping_add)
}

fn random_psn() -> u32 {
    use std::io::Read;
    let mut b = [0u8; 4];
    if std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut b)).is_err() {
        b = (std::process::id() ^ 0x5a5a5a).to_le_bytes();
    }
    u32::from_le_bytes(b) & 0xff_ffff
}

/// Runs one perftest-mode test over the accepted (server) or connected
/// (client) socket `s`, on device context `ctx`.
pub fn run(ctx: &Arc<dyn Context>, cfg: &OobConfig, s: TcpStream, client: bool) -> Res<OobResult> {
    validate(cfg)?;
    let t = cfg.test;
    let mut oob = Oob::new(s, client, cfg.stall)?;
    // perftest sleeps a second after connecting; nothing depends on it here.
    let (peer_version, mtu) = oob.preamble(cfg.mtu)?;
    let e = set_up(ctx, cfg, &mut oob, client, mtu)?;
    let my = e.my[0];

    // The passive send_bw posts its receives before each size (passive_send).
    if t == Test::SendBw && cfg.duplex {
        for i in 0..e.qps.len() {
            e.fill_recvs(i, recv_depth(cfg))?;
        }
    }
    // What perftest 6.06 sends once its QPs are connected, as seen on the
    // wire with `-q 2`: every QP's message again (the server answers each
    // with the same QP's), then a barrier; send_bw and the latency tests
    // send a barrier before them too. Barriers carry the first QP's message.
    let one_sided = matches!(t, Test::WriteBw | Test::ReadBw | Test::AtomicBw);
    if !one_sided {
        oob.hand_shake(&my, "sync after connect")?;
    }
    for (i, d) in e.my.iter().enumerate() {
        let r = oob.hand_shake(d, "dest exchange after connect")?;
        if r.qpn != e.rem[i].qpn {
            return Err(format!("the peer's QP {i} is {:#x} now, {:#x} before", r.qpn, e.rem[i].qpn));
        }
    }
    // send_lat has its barrier before each size (send_lat below).
    if (client || cfg.duplex) && t != Test::SendLat {
        // perftest's `-b`: write/read/atomic's barrier after the test moves before it.
        let moved = usize::from(cfg.duplex && one_sided);
        for _ in 0..1 + moved {
            oob.hand_shake(&my, "sync before the test")?;
        }
    }
    let mut res =
        OobResult { peer_version, mtu: mtu.bytes(), local: e.my.clone(), remote: e.rem.clone(), ..Default::default() };
    let start = Instant::now();
    match t {
        Test::SendLat => send_lat(&e, cfg, &mut oob, client, &mut res)?,
        Test::WriteLat => write_lat(&e, cfg, &mut oob, client, &mut res)?,
        Test::ReadLat if client => read_lat(&e, cfg, &mut oob, &mut res)?,
        _ if client || cfg.duplex => active(&e, cfg, &mut oob, &mut res)?,
        Test::SendBw => passive_send(&e, cfg, &mut oob, &mut res)?,
        Test::ReadLat => {
            // read_lat: the client's pre-test barriers, then its closing one once it has
            // read (ctx_close_connection: a barrier, then "done\0" and the socket closes).
            oob.close(&my);
            let b = e.read(0, e.buf_len)?;
            res.check_ok = b == e.pattern;
            res.check = format!("source buffer unchanged: {}", res.check_ok);
        }
        _ => passive_one_sided(&e, cfg, &mut oob, &mut res)?,
    }
    if res.elapsed.is_zero() {
        res.elapsed = start.elapsed();
    }
    res.cq_events = e.event_cq.as_ref().map(|c| c.events());
    for qp in &e.qps {
        let _ = qp.destroy();
    }
    Ok(res)
}

/// The QPs, CQ and MR; the messages exchanged (one per QP); each QP
/// connected to its peer's (ctx_connect: RTR then RTS).
fn set_up(ctx: &Arc<dyn Context>, cfg: &OobConfig, oob: &mut Oob, client: bool, mtu: verbs_api::Mtu) -> Res<Ends> {
    let t = cfg.test;
    let conn = cfg.conn;
    let nq = cfg.qps.max(1) as usize;
    let sizes = sizes(cfg, mtu.bytes());
    let size = sizes.iter().copied().max().unwrap_or(1);
    let dev = ctx.query_device();
    let out_reads = dev.max_qp_rd_atom.clamp(1, 16);
    let pd = ctx.alloc_pd().map_err(ck("alloc_pd"))?;
    let per_qp = cfg.tx_depth + cfg.rx_depth;
    let cqe = per_qp * nq as u32 + 16;
    let what = if cfg.events { "create_cq with a completion channel" } else { "create_cq" };
    let (cq, event_cq) = EventCq::or_plain(ctx, cqe, cfg.events).map_err(ck(what))?;
    let slot = size.max(CYCLE_BUFFER as usize).div_ceil(64) * 64;
    // A send slot and a receive slot per QP, as perftest's buffer.
    let buf_len = 2 * nq * slot + 4096;
    let mr = pd.reg_mr(buf_len, AccessFlags::all()).map_err(ck("reg_mr"))?;
    // write_lat and `-b`: as perftest, each QP sends from its slot in the first half
    // and advertises (and polls) its slot in the second half; the other tests
    // advertise the slot they send from.
    let rx_base = if t == Test::WriteLat || cfg.duplex { nq * slot } else { 0 };
    mr.write(0, &vec![0u8; buf_len]).map_err(ck("mr write"))?;
    // Under `-b` the two ends' patterns differ, so that a read that landed
    // where its own end's source lies would show.
    let pattern = crate::perf::pattern(buf_len, if cfg.duplex && client { 0xc3 } else { 0x3c });
    if (!client || cfg.duplex) && matches!(t, Test::ReadBw | Test::ReadLat) {
        // What the peer reads: a known pattern.
        mr.write(rx_base, &pattern[rx_base..]).map_err(ck("mr write"))?;
    }
    let co = ConnectOptions { sgid_index: cfg.gid_idx as u8, mtu, timeout: cfg.timeout, ..Default::default() };
    let gid = ctx.query_gid(1, cfg.gid_idx).map_err(ck("query_gid"))?;
    let (mut qps, mut my) = (Vec::new(), Vec::new());
    for i in 0..nq {
        let attr = crate::perf::qp_init(conn, (&cq, &cq), (cfg.tx_depth, cfg.rx_depth), 0);
        let qp = pd.create_qp(&attr).map_err(ck("create_qp"))?;
        to_init(&qp, &co).map_err(ck("RESET->INIT"))?;
        my.push(Dest {
            lid: 0,
            out_reads,
            qpn: qp.qp_num(),
            psn: random_psn(),
            rkey: mr.rkey(),
            vaddr: mr.addr() + (rx_base + i * slot) as u64,
            gid,
            srqn: 0,
        });
        qps.push(qp);
    }
    let rem = my.iter().map(|d| oob.hand_shake(d, "dest exchange")).collect::<Res<Vec<Dest>>>()?;
    let v4 = |g: &Gid| g.0[..10].iter().all(|&b| b == 0) && g.0[10] == 0xff && g.0[11] == 0xff;
    if v4(&my[0].gid) != v4(&rem[0].gid) {
        return Err("Found Incompatibility issue with GID types (IPv4 vs IPv6 GID)".into());
    }
    let mut ah = AhAttr::new(rem[0].gid, cfg.gid_idx as u8);
    ah.hop_limit = 0xff;
    let rd = matches!(t, Test::ReadBw | Test::AtomicBw | Test::ReadLat);
    for ((qp, m), r) in qps.iter().zip(&my).zip(&rem) {
        let rtr = QpAttr {
            qp_state: QpState::Rtr,
            path_mtu: mtu,
            dest_qp_num: r.qpn,
            rq_psn: r.psn,
            max_dest_rd_atomic: if rd { out_reads as u8 } else { 1 },
            min_rnr_timer: 12,
            ..QpAttr::default()
        };
        // UC/RC carry the path; UD only changes state (the AH goes with each send).
        let path = if conn == QpType::Ud { QpPath::default() } else { QpPath { ah: Some(ah) } };
        qp.modify(&rtr, required(conn, QpState::Init, QpState::Rtr), path).map_err(ck("INIT->RTR"))?;
        let rts = QpAttr {
            qp_state: QpState::Rts,
            sq_psn: m.psn,
            timeout: cfg.timeout,
            retry_cnt: 7,
            rnr_retry: 7,
            max_rd_atomic: if rd { r.out_reads.clamp(1, out_reads) as u8 } else { 1 },
            ..rtr
        };
        qp.modify(&rts, required(conn, QpState::Rtr, QpState::Rts), QpPath::default()).map_err(ck("RTR->RTS"))?;
    }
    let ud_ah = if conn == QpType::Ud { Some(pd.create_ah(&ah).map_err(ck("create_ah"))?) } else { None };
    let grh = if conn == QpType::Ud { 40 } else { 0 };
    let outstanding = vec![Default::default(); nq];
    Ok(Ends { qps, cq, event_cq, mr, my, rem, ud_ah, slot, rx_base, buf_len, pattern, sizes, size, grh, outstanding })
}

/// One successful completion from `e`'s CQ, spinning as perftest's latency
/// loops do (the poll drives the device). `what` names the wait in an error
/// (built only then: the loops around this are timed).
fn one_wc(e: &Ends, stall: Duration, what: impl Fn() -> String) -> Res<WorkCompletion> {
    let wc = next_wc(&e.cq, stall).ok_or_else(|| format!("{}: no completion for {stall:?}", what()))?;
    if wc.status != WcStatus::Success {
        return Err(format!("{}: completion {} ({:?}) for {}", what(), wc.status.as_str(), wc.status, wc.wr_id));
    }
    Ok(wc)
}

/// perftest's run_iter_lat_send, per size: receives posted for the size
/// (ctx_set_recv_wqes), a barrier (perftest's, so that no message comes
/// before its receive), then the client sends and waits for the answer and
/// the server answers each message it receives, each taking the time before
/// it posts. Receives are reposted one per completion while the size's
/// count needs them, so none is left over for the next size.
fn send_lat(e: &Ends, cfg: &OobConfig, oob: &mut Oob, client: bool, res: &mut OobResult) -> Res<()> {
    let (qp, my, mr) = (&e.qps[0], e.my[0], &e.mr);
    let n = iterations(cfg);
    // Sent from the second slot; the peer's messages land in the first.
    let src = e.slot;
    mr.write(src, &e.pattern[..e.size]).map_err(ck("mr write"))?;
    let mut got_all = 0u64;
    for &size in &e.sizes {
        let first = cfg.rx_depth.clamp(1, n as u32) as u64;
        e.post_recvs(0, 0, first)?;
        let mut posted = [first];
        oob.hand_shake(&my, "sync before the test")?;
        let mut wr = SendWr::new(
            0,
            SendOp::Send,
            vec![Sge { addr: mr.addr() + src as u64, length: size as u32, lkey: mr.lkey() }],
        );
        wr.flags = SendFlags::SIGNALED;
        if cfg.conn == QpType::Ud {
            wr.remote_qpn = e.rem[0].qpn;
            wr.remote_qkey = QKEY;
        }
        let mut times = Vec::with_capacity(n.min(1 << 20) as usize);
        let mut send = |id: u64| {
            wr.wr_id = id;
            times.push(Instant::now());
            qp.post_send(std::slice::from_ref(&wr), e.ud_ah.as_ref()).map_err(|(k, e)| format!("post_send[{k}]: {e}"))
        };
        let (mut sent, mut got) = (0u64, 0u64);
        let clock = Clock::start(cfg);
        if client {
            send(0)?;
            sent = 1;
        }
        while got < n && !clock.up() {
            let Some(wc) =
                clock.ended(one_wc(e, clock.stall(cfg), || format!("size {size}: {sent} sent, {got} received")))?
            else {
                break;
            };
            if wc.opcode != WcOpcode::Recv {
                continue;
            }
            e.received(&wc, size, &mut posted, n)?;
            got += 1;
            if sent < n && !clock.up() {
                send(sent)?;
                sent += 1;
            }
        }
        got_all += got;
        match clock.deadline {
            Some(_) => res.lat_dur = Some(LatDurRow::new(size as u64, got, clock.took(), 2.0)),
            None => res.lat.extend(LatRow::perftest(size as u64, &times, 2.0)),
        }
    }
    res.completions = got_all;
    let last = e.size;
    let nz = non_zero(&e.read(e.rx_off(0), last)?);
    let want = n * e.sizes.len() as u64;
    res.check_ok = (got_all == want || (cfg.duration.is_some() && got_all > 0)) && nz > 0;
    let want = if cfg.duration.is_some() { "the duration's".to_string() } else { want.to_string() };
    res.check =
        format!("{got_all} of {want} messages received, each of its size; the last: {nz}/{last} bytes non-zero");
    oob.close(&my);
    Ok(())
}

/// How many receives a QP keeps posted (perftest's ctx_set_recv_wqes):
/// `-r`, or fewer if fewer messages will come.
fn recv_depth(cfg: &OobConfig) -> u64 {
    u64::from(cfg.rx_depth.max(1)).min(iterations(cfg))
}

/// The iterations of a latency test or of send_bw's receiver: `-n`, or
/// under `-D` as many as the time holds.
fn iterations(cfg: &OobConfig) -> u64 {
    if cfg.duration.is_some() {
        u64::MAX
    } else {
        cfg.iters.max(1)
    }
}

/// A latency test's clock under `-D`: each end stops on its own, as
/// perftest's do when their alarm fires, and a wait that outlasts the
/// time (the peer stopped first) ends the run instead of failing it.
struct Clock {
    start: Instant,
    deadline: Option<Instant>,
    end: std::cell::Cell<Option<Instant>>,
}

impl Clock {
    fn start(cfg: &OobConfig) -> Clock {
        let start = Instant::now();
        Clock { start, deadline: cfg.duration.map(|d| start + d), end: Default::default() }
    }

    /// Whether the time is up (never without `-D`).
    fn up(&self) -> bool {
        let up = self.deadline.is_some_and(|d| Instant::now() >= d);
        if up && self.end.get().is_none() {
            self.end.set(Some(Instant::now()));
        }
        up
    }

    /// How long a wait may take: the stall limit, or under `-D` what is left.
    fn stall(&self, cfg: &OobConfig) -> Duration {
        match self.deadline {
            Some(d) => d.saturating_duration_since(Instant::now()).min(cfg.stall),
            None => cfg.stall,
        }
    }

    /// A wait's outcome: a failure after the time is up ends the run.
    fn ended<T>(&self, r: Res<T>) -> Res<Option<T>> {
        match r {
            Ok(v) => Ok(Some(v)),
            Err(_) if self.up() => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The time the run took: to its end under `-D`, else until now.
    fn took(&self) -> Duration {
        self.up();
        self.end.get().unwrap_or_else(Instant::now).duration_since(self.start)
    }
}

/// perftest's run_iter_lat_write, per size with no barrier between sizes: each side
/// RDMA WRITEs `size` bytes from the start of its buffer to the peer's advertised
/// address, the last byte set to its send count (as a char), and spins on the last
/// byte of its own receive area until it holds its receive count. The server sends
/// first (its first poll is skipped), the client waits first; each side waits for
/// the completion of its write before polling again, and takes the time before it
/// posts. perftest zeroes its buffer for write_lat (the others get rand()), so what
/// it sends is zero bytes and the counts at each size's last byte; softrdma sends its
/// pattern so.
fn write_lat(e: &Ends, cfg: &OobConfig, oob: &mut Oob, client: bool, res: &mut OobResult) -> Res<()> {
    let (qp, my, rem, mr) = (&e.qps[0], e.my[0], e.rem[0], &e.mr);
    let rx_off = e.rx_off(0);
    let n = iterations(cfg);
    let stop = std::sync::atomic::AtomicBool::new(false);
    if !client {
        // The client's last barrier before it starts.
        oob.hand_shake(&my, "sync before the test")?;
    }
    mr.write(0, &e.pattern[..e.size]).map_err(ck("mr write"))?;
    let (mut got_all, mut done_all, mut counts) = (0u64, 0u64, (0u8, 0u8));
    for &size in &e.sizes {
        let last = size - 1;
        let mut wr = SendWr::new(
            0,
            SendOp::RdmaWrite { remote_addr: rem.vaddr, rkey: rem.rkey },
            vec![Sge { addr: mr.addr(), length: size as u32, lkey: mr.lkey() }],
        );
        wr.flags = SendFlags::SIGNALED;
        let mut times = Vec::with_capacity(n.min(1 << 20) as usize);
        let (mut sent, mut got, mut done) = (0u64, 0u64, 0u64);
        let clock = Clock::start(cfg);
        while sent < n || got < n || done < n {
            // The server skips its first poll: it writes first.
            if got < n && (client || sent > 0) {
                let waited = spin_byte(mr, rx_off + last, (got + 1) as u8, clock.stall(cfg), &stop)
                    .map_err(|e| format!("{e}: waiting for write {} of {n} of {size} bytes ({sent} sent)", got + 1));
                if clock.ended(waited)?.is_none() {
                    break;
                }
                got += 1;
            }
            if clock.up() {
                break;
            }
            if sent < n {
                sent += 1;
                times.push(Instant::now());
                mr.write(last, &[sent as u8]).map_err(ck("mr write"))?;
                wr.wr_id = sent;
                qp.post_send(std::slice::from_ref(&wr), None).map_err(|(k, e)| format!("post_send[{k}]: {e}"))?;
            }
            if done < n {
                if clock.ended(one_wc(e, clock.stall(cfg), || format!("write {sent} of {size} bytes")))?.is_none() {
                    break;
                }
                done += 1;
            }
        }
        got_all += got;
        done_all += done;
        match clock.deadline {
            Some(_) => res.lat_dur = Some(LatDurRow::new(size as u64, done, clock.took(), 2.0)),
            None => res.lat.extend(LatRow::perftest(size as u64, &times, 2.0)),
        }
        // Under -D the counts at the last byte are whatever each end reached.
        counts = (sent as u8, got as u8);
    }
    res.completions = done_all;
    // The whole buffer: the source as written (the pattern, each size's last byte its
    // final count); the receive area holding exactly the peer's last message — the
    // final counts after either perftest's zero bytes or softrdma's pattern, nothing
    // else; zero everywhere else (the peer wrote at the advertised address and nothing
    // around it).
    // Under -D the peer may have written once more after this end stopped.
    let (sent, got) = counts;
    let size = e.size;
    let counted = |base: &[u8], count: u8| {
        let mut v = base[..size].to_vec();
        for &s in &e.sizes {
            v[s - 1] = count;
        }
        v
    };
    let b = e.read(0, e.buf_len)?;
    let ours = |count| counted(&e.pattern, count);
    let src_ok = b[..size] == ours(sent)[..];
    let rx = &b[rx_off..rx_off + size];
    let peer_counts = if cfg.duration.is_some() { vec![got, got.wrapping_add(1)] } else { vec![got] };
    let body = peer_counts.iter().find_map(|&c| {
        if rx == &counted(&vec![0; size], c)[..] {
            Some("perftest's zeroed buffer")
        } else if rx == &ours(c)[..] {
            Some("softrdma's pattern")
        } else {
            None
        }
    });
    let rest_zero = b[size..rx_off].iter().chain(&b[rx_off + size..]).all(|&x| x == 0);
    let want = n.saturating_mul(e.sizes.len() as u64);
    let all = match cfg.duration {
        Some(_) => got_all > 0 && done_all > 0,
        None => got_all == want && done_all == want,
    };
    res.check_ok = all && src_ok && body.is_some() && rest_zero;
    let want = if cfg.duration.is_some() { "the duration's".to_string() } else { want.to_string() };
    res.check = format!(
        "{got_all} of {want} writes received (last byte = count each time), {done_all} sent and completed; \
         source intact: {src_ok}; receive area: the counts after {}; nothing written outside it: {rest_zero}",
        body.unwrap_or("bytes that are neither perftest's zeros nor softrdma's pattern (or a count is off)"),
    );
    oob.close(&my);
    Ok(())
}

/// perftest's run_iter_lat on read_lat's client, per size with no barrier between
/// sizes: one RDMA READ at a time, the time taken before each is posted (a whole
/// round trip each, as perftest reports it). The server takes no part.
fn read_lat(e: &Ends, cfg: &OobConfig, oob: &mut Oob, res: &mut OobResult) -> Res<()> {
    let (qp, rem, mr) = (&e.qps[0], e.rem[0], &e.mr);
    let n = iterations(cfg);
    for &size in &e.sizes {
        let mut wr = SendWr::new(
            0,
            SendOp::RdmaRead { remote_addr: rem.vaddr, rkey: rem.rkey },
            vec![Sge { addr: mr.addr(), length: size as u32, lkey: mr.lkey() }],
        );
        wr.flags = SendFlags::SIGNALED;
        let mut times = Vec::with_capacity(n.min(1 << 20) as usize);
        let clock = Clock::start(cfg);
        let mut done = 0;
        while done < n && !clock.up() {
            wr.wr_id = done;
            times.push(Instant::now());
            qp.post_send(std::slice::from_ref(&wr), None).map_err(|(k, e)| format!("post_send[{k}]: {e}"))?;
            if clock.ended(one_wc(e, clock.stall(cfg), || format!("read {done} of {size} bytes")))?.is_none() {
                break;
            }
            done += 1;
        }
        res.completions += done;
        match clock.deadline {
            Some(_) => res.lat_dur = Some(LatDurRow::new(size as u64, done, clock.took(), 1.0)),
            None => res.lat.extend(LatRow::perftest(size as u64, &times, 1.0)),
        }
    }
    let last = e.size;
    let got = e.read(0, last)?;
    // A softrdma peer's pattern, else non-zero bytes (perftest fills with rand()).
    let nz = non_zero(&got);
    let same = got[..] == e.pattern[..last];
    res.check_ok = nz > 0;
    res.check = format!("read into: {nz} of {last} bytes non-zero; softrdma's pattern: {same}");
    oob.close(&e.my[0]);
    Ok(())
}

/// The requesting side (a client; under `-b`, both ends): per QP `iters`
/// operations (or, with `-D`, as many as the duration holds), at most
/// tx_depth of them outstanding, each signalled; under `-b` send_bw also
/// receives `iters` per QP, and the reports cross after each size. With `-a`
/// every size from 2 bytes to 8 MiB in turn, a row each, as perftest's
/// RUN_ALL; the report that goes to the server is the last size's.
fn active(e: &Ends, cfg: &OobConfig, oob: &mut Oob, res: &mut OobResult) -> Res<()> {
    let (t, mr, nq) = (cfg.test, &e.mr, e.qps.len());
    if t == Test::WriteBw || t == Test::SendBw {
        for q in 0..nq {
            mr.write(e.tx_off(q), &e.pattern[..e.size]).map_err(ck("mr write"))?;
        }
    }
    let (mut done, mut got, mut rep) = (0, 0, BwReport::default());
    let my = e.my[0];
    // perftest's RUN_ALL: a barrier before each size (the first size's are
    // run()'s) and one after each: send_bw's after the reports (under -b)
    // and write/read's before them; one-way write/read have neither.
    let (send, one_sided) = (t == Test::SendBw, t != Test::SendBw);
    let barriers = cfg.all && (send || cfg.duplex);
    // A perftest receiver over UC/UD may end the run at any of these
    // barriers (`Oob::barrier_unless_ended`), after waiting up to 120 s.
    // Under -b a perftest peer over UC/UD that lost a message of ours sends
    // its report (or answers) only when its timer gives up.
    let lossy = send && cfg.conn != QpType::Rc;
    let send_dur = send && cfg.duplex && cfg.duration.is_some();
    let wait = if lossy { cfg.stall.max(CHECK_ALIVE) } else { cfg.stall };
    let mut ended = None;
    for (k, &size) in e.sizes.iter().enumerate() {
        if barriers && k > 0 {
            if send && cfg.duplex {
                // This size's receives, before the peer may send.
                for q in 0..nq {
                    e.fill_recvs(q, recv_depth(cfg))?;
                }
            }
            if !matches!(oob.barrier_unless_ended(&my, wait, "sync before the size")?, Barrier::Answered(_)) {
                ended = Some(e.sizes[k - 1]);
                break;
            }
        }
        let run = stream(e, cfg, size)?;
        done += run.done;
        got = run.got;
        res.elapsed += run.elapsed;
        // As perftest reports: the iterations of all QPs, and their rates;
        // send_bw's under -b -D, its sends and receives together (run_iter_bi
        // counts both, and no report crosses).
        let counted = if send_dur { run.done + run.got } else { run.done };
        rep = BwReport::measured(size, counted, run.elapsed);
        res.rows.push(rep);
        if barriers && one_sided {
            oob.hand_shake(&my, "sync after the size")?;
        }
        if cfg.duplex && !send_dur {
            // Each size's reports cross; with one size there is no barrier after.
            match oob.with_wait(wait, |o| o.bw_reports(&rep)) {
                Ok(r) => res.report = r,
                // perftest 6.06 exits when a UC/UD message it waits for never
                // comes (check_alive), before its report.
                Err(_) if lossy && oob.peer_gone() => {
                    ended = Some(size);
                    break;
                }
                Err(e) => return Err(e),
            }
            res.peer_rows.push(res.report);
        }
        if barriers && send {
            match oob.barrier_unless_ended(&my, wait, "sync after the size")? {
                Barrier::Answered(_) => {}
                // The receiver ended the run in this size, which lost messages.
                Barrier::Closed => {
                    ended = Some(size);
                    break;
                }
                // It ended in the size before and answered this one's barrier
                // from ctx_close_connection: this size went to no one.
                Barrier::Done => {
                    done -= res.rows.pop().map_or(0, |r| r.iters);
                    res.elapsed = res.elapsed.saturating_sub(run.elapsed);
                    ended = k.checked_sub(1).map(|j| e.sizes[j]);
                    break;
                }
            }
        }
    }
    if ended.is_some() {
        rep = res.rows.last().copied().unwrap_or_default();
    }
    res.completions = done;
    res.mine = Some(rep);
    if cfg.duplex {
        let (ok, check, added) = duplex_check(e, cfg, got, res.report.iters)?;
        res.check_ok = ok;
        res.added = added;
        res.check = format!("{done} requests completed; {check}");
        match ended {
            None => {
                let _ = oob.hand_shake(&my, "close");
            }
            Some(size) => {
                res.check += &format!(
                    "; the peer ended the run in {size} bytes before its report came, as perftest's does when \
                     a message it waits for over {:?} never comes",
                    cfg.conn
                )
            }
        }
        return Ok(());
    }
    res.report = rep;
    // Check what is ours to check.
    let last = rep.size as usize;
    match t {
        Test::ReadBw => {
            let nz = e.filled(0, last)?;
            res.check_ok = nz.iter().all(|&k| k > 0);
            res.check = format!("read into, per QP: {nz:?} of {last} bytes non-zero (perftest fills with rand())");
        }
        Test::AtomicBw => {
            let w = e.read(0, 8)?;
            res.check_ok = true;
            res.check = format!("last fetched value {:#x}", u64::from_ne_bytes(w.try_into().unwrap_or([0; 8])));
        }
        _ => {
            res.check_ok = !res.rows.is_empty();
            res.check = format!("{done} completions, all successful");
            if let Some(size) = ended {
                res.check += &format!(
                    "; the receiver ended the run after {size} bytes, as perftest's does when a size lost a \
                     message over {:?} (its report says how many arrived)",
                    cfg.conn
                );
                return Ok(());
            }
        }
    }
    if t != Test::SendBw {
        // send_bw has neither this barrier nor a report: the server counts.
        oob.hand_shake(&my, "sync after the test")?;
        oob.bw_reports(&rep)?;
    }
    oob.close(&my);
    Ok(())
}

/// How long a `-b` send_bw end over UC/UD whose own sends are done waits
/// for a message after the last one came, before it takes the rest as lost.
const LOSS_QUIET: Duration = Duration::from_secs(3);

/// How long perftest's send_bw receiver over UC/UD may wait for a lost
/// message before it gives up (`check_alive`: 60–120 s), and a margin.
const CHECK_ALIVE: Duration = Duration::from_secs(130);

/// perftest's `-a`: 2^1 to 2^23 bytes.
const ALL_SIZES: std::ops::Range<u32> = 1..24;

/// The sizes of a run, in order: with `-a` perftest's, else the one. Over
/// UD `-a` ends at the path MTU (`mtu`), as perftest's send_lat does.
fn sizes(cfg: &OobConfig, mtu: usize) -> Vec<usize> {
    if !cfg.all || cfg.test == Test::AtomicBw {
        return vec![largest(cfg)];
    }
    let top = if cfg.conn == QpType::Ud { mtu.trailing_zeros() + 1 } else { ALL_SIZES.end };
    (ALL_SIZES.start..top).map(|i| 1 << i).collect()
}

/// The largest message a run of `cfg` sends.
fn largest(cfg: &OobConfig) -> usize {
    match cfg.test {
        Test::AtomicBw => 8,
        _ if cfg.all => 1 << (ALL_SIZES.end - 1),
        _ => cfg.size.max(1),
    }
}

/// What one size's run did.
struct Streamed {
    /// Requests completed, on all QPs.
    done: u64,
    /// Messages received (send_bw under `-b`).
    got: u64,
    elapsed: Duration,
}

/// One size: the requests of every QP, and under `-b` send_bw's receives.
fn stream(e: &Ends, cfg: &OobConfig, size: usize) -> Res<Streamed> {
    let (t, mr, nq) = (cfg.test, &e.mr, e.qps.len());
    let op = |q: usize, i: u64| {
        let (remote_addr, rkey) = (e.rem[q].vaddr, e.rem[q].rkey);
        match t {
            Test::WriteBw => SendOp::RdmaWrite { remote_addr, rkey },
            Test::ReadBw => SendOp::RdmaRead { remote_addr, rkey },
            Test::AtomicBw if cfg.cmp_swap => SendOp::AtomicCmpSwp { remote_addr, rkey, compare: i, swap: i + 1 },
            Test::AtomicBw => SendOp::AtomicFetchAdd { remote_addr, rkey, add: 1 },
            _ => SendOp::Send,
        }
    };
    let n = cfg.iters.max(1);
    let total = n * nq as u64;
    let depth = cfg.tx_depth.max(1) as u64;
    let (mut posted, mut done) = (vec![0u64; nq], vec![0u64; nq]);
    let receives = cfg.duplex && t == Test::SendBw;
    let mut got = 0u64;
    // What the size's receives were filled to (run, active): they count as posted for it.
    let mut recv_posted: Vec<u64> = e.outstanding.iter().map(std::cell::Cell::get).collect();
    // Over UC and UD a lost message never comes: once this end's sends are
    // done, a quiet spell ends its wait (perftest's ends after 60–120 s).
    let lossy = receives && cfg.conn != QpType::Rc;
    let mut last = Instant::now();
    let start = last;
    // `-D`: post until the time is up, then collect what is outstanding.
    let time_up = || cfg.duration.is_some_and(|d| start.elapsed() >= d);
    let more = |posted: u64| if cfg.duration.is_some() { !time_up() } else { posted < n };
    // A work request's id: its QP in the high bits, its number on that QP below.
    const QP_SHIFT: u32 = 40;
    let sum = |v: &[u64]| v.iter().sum::<u64>();
    loop {
        let finished = match cfg.duration {
            Some(_) => time_up() && sum(&done) == sum(&posted),
            None => sum(&done) >= total && (!receives || got >= total || lossy && last.elapsed() > LOSS_QUIET),
        };
        if finished {
            break;
        }
        for q in 0..nq {
            let mut batch = Vec::new();
            while more(posted[q]) && posted[q] - done[q] < depth && batch.len() < 32 {
                let sge = Sge { addr: mr.addr() + e.tx_off(q) as u64, length: size as u32, lkey: mr.lkey() };
                let mut wr = SendWr::new(((q as u64) << QP_SHIFT) | posted[q], op(q, posted[q]), vec![sge]);
                wr.flags = SendFlags::SIGNALED;
                if cfg.conn == QpType::Ud {
                    wr.remote_qpn = e.rem[q].qpn;
                    wr.remote_qkey = QKEY;
                }
                batch.push(wr);
                posted[q] += 1;
            }
            if !batch.is_empty() {
                e.qps[q].post_send(&batch, e.ud_ah.as_ref()).map_err(|(k, e)| format!("post_send[{k}]: {e}"))?;
            }
        }
        let wcs = e.cq.wait(64, Duration::from_millis(if cfg.duration.is_some() { 5 } else { 50 }));
        if wcs.is_empty() && last.elapsed() > cfg.stall {
            return Err(format!(
                "no completion for {:?}: {} posted, {} completed, {got} received",
                cfg.stall,
                sum(&posted),
                sum(&done)
            ));
        }
        for wc in &wcs {
            if wc.status != WcStatus::Success {
                return Err(format!(
                    "completion {} ({:?}) for operation {} of QP {}",
                    wc.status.as_str(),
                    wc.status,
                    wc.wr_id & ((1 << QP_SHIFT) - 1),
                    wc.wr_id >> QP_SHIFT
                ));
            }
            last = Instant::now();
            if wc.opcode != WcOpcode::Recv {
                done[(wc.wr_id >> QP_SHIFT) as usize % nq] += 1;
                continue;
            }
            e.received(wc, size, &mut recv_posted, iterations(cfg))?;
            got += 1;
        }
    }
    Ok(Streamed { done: sum(&done), got, elapsed: start.elapsed() })
}

/// The passive side of send_bw, per size: the size's receives posted and
/// the client's barrier before it sends, then `iters` messages per QP, timed
/// from the first to the last for this end's row, as perftest's server
/// reports them; with `-a` a barrier after each size, as perftest's RUN_ALL
/// has. Over UC and UD what was lost stays lost: the client's next barrier
/// (after the size with `-a`, else its closing one) ends the wait, and then
/// only what is still on its way is drained. perftest's own receiver waits
/// 60–120 s for a lost message instead and then ends the whole run
/// (`check_alive`); going on to the next size keeps a perftest client's
/// barriers in step, and it loses no row.
fn passive_send(e: &Ends, cfg: &OobConfig, oob: &mut Oob, res: &mut OobResult) -> Res<()> {
    let (nq, my) = (e.qps.len(), e.my[0]);
    let n = iterations(cfg);
    let total = n.saturating_mul(nq as u64);
    let (mut got_all, mut last_q, mut closed) = (0u64, 0usize, false);
    // Under -D the sender's closing barrier ends the run, as over UC/UD.
    let until_barrier = cfg.conn != QpType::Rc || cfg.duration.is_some();
    let next_barrier = if cfg.all { "sync after the size" } else { "close" };
    for &size in &e.sizes {
        // Receives a lost message left posted count as this size's.
        let mut posted = (0..nq).map(|q| e.fill_recvs(q, recv_depth(cfg))).collect::<Res<Vec<u64>>>()?;
        oob.hand_shake(&my, "sync before the test")?;
        let (mut got, mut first_at, mut last) = (0u64, None::<Instant>, Instant::now());
        let mut ended = None::<Instant>;
        while got < total {
            let wcs = e.cq.wait(64, Duration::from_millis(50));
            if wcs.is_empty() {
                if let Some(at) = ended {
                    if at.elapsed() > Duration::from_millis(500) {
                        break;
                    }
                    continue;
                }
                if until_barrier && oob.answer_hand_shake(&my, next_barrier)? {
                    ended = Some(Instant::now());
                    continue;
                }
                if last.elapsed() > cfg.stall {
                    return Err(format!("no message for {:?}: {got} of {total} of {size} bytes received", cfg.stall));
                }
            }
            for wc in &wcs {
                if wc.status != WcStatus::Success {
                    return Err(format!("receive completion {} ({:?})", wc.status.as_str(), wc.status));
                }
                last_q = e.received(wc, size, &mut posted, n)?;
                got += 1;
                last = Instant::now();
                first_at.get_or_insert(last);
                if ended.is_some() {
                    ended = Some(last);
                }
            }
        }
        got_all += got;
        let took = first_at.map_or(Duration::ZERO, |f| last.duration_since(f));
        res.elapsed += took;
        res.rows.push(BwReport::measured(size, got, took));
        if cfg.all && ended.is_none() {
            oob.hand_shake(&my, "sync after the size")?;
        }
        closed = !cfg.all && ended.is_some();
    }
    res.mine = res.rows.last().copied();
    res.completions = got_all;
    let size = e.size;
    let want = total.saturating_mul(e.sizes.len() as u64);
    let nz = non_zero(&e.read(e.rx_off(last_q) + e.grh, size)?);
    res.check_ok = nz > 0 && got_all > 0 && (until_barrier || got_all == want);
    let want = if cfg.duration.is_some() { "the duration's".to_string() } else { want.to_string() };
    res.check =
        format!("{got_all} of {want} messages received, each of its size; the last: {nz}/{size} bytes non-zero");
    if !closed {
        oob.close(&my);
    }
    Ok(())
}

/// The passive side of write/read/atomic: answers the client's barriers
/// until its report comes, then checks what the client did to its memory.
fn passive_one_sided(e: &Ends, cfg: &OobConfig, oob: &mut Oob, res: &mut OobResult) -> Res<()> {
    let (size, my) = (e.size, e.my[0]);
    let start = Instant::now();
    let n = oob.answer_hand_shakes(&my, true, "sync after the test")?;
    if n == 0 {
        return Err("the client sent its report without a barrier".into());
    }
    res.elapsed = start.elapsed();
    res.report = oob.bw_reports(&BwReport::default())?;
    oob.close(&my);
    match cfg.test {
        Test::WriteBw => {
            let nz = e.landed(cfg.conn, size)?;
            res.check_ok = nz.iter().all(|&k| k > 0);
            res.check = format!(
                "first message slot per QP: {nz:?} of {size} bytes non-zero (was zeroed; perftest sends rand())"
            );
        }
        Test::ReadBw => {
            res.check_ok = e.read(0, e.buf_len)? == e.pattern;
            res.check = format!("source buffer unchanged: {}", res.check_ok);
        }
        _ => {
            // Fetch-and-add of 1 per operation (warm-up included) on
            // words of a zeroed buffer: the words sum to the count.
            let b = e.read(0, e.buf_len)?;
            let sum = counter_sum(&b);
            let words = b.chunks(8).filter(|c| c.iter().any(|&x| x != 0)).count();
            if cfg.cmp_swap {
                res.check_ok = true;
                res.check =
                    format!("{words} non-zero words after CMP_AND_SWAP (not checked: the swap values are the peer's)");
            } else {
                // perftest reports the iterations of all its QPs.
                let want = res.report.iters;
                res.check_ok = sum >= want && want > 0;
                res.check = format!("sum of counters {sum} >= the client's {want} iterations: {}", res.check_ok);
            }
        }
    }
    Ok(())
}

/// What one end of a `-b` run checks of what its peer did to its memory:
/// the writes landed, the reads left the source as it was, the fetch-adds
/// sum to at least the peer's count, every message came (its requests'
/// completions were checked as they came).
fn duplex_check(e: &Ends, cfg: &OobConfig, got: u64, peer_iters: u64) -> Res<(bool, String, Option<u64>)> {
    let (size, nq) = (e.size, e.qps.len());
    let area = e.read(e.rx_base, e.buf_len - e.rx_base)?;
    let total = cfg.iters.max(1) * nq as u64;
    Ok(match cfg.test {
        Test::WriteBw => {
            let nz = e.landed(cfg.conn, size)?;
            let ok = nz.iter().all(|&k| k > 0);
            (ok, format!("the peer's first write per QP: {nz:?} of {size} bytes non-zero (zeroed before)"), None)
        }
        Test::ReadBw => {
            let nz = e.filled(0, size)?;
            let same = area == e.pattern[e.rx_base..];
            let check =
                format!("read into, per QP: {nz:?} of {size} bytes non-zero; what the peer read unchanged: {same}");
            (nz.iter().all(|&k| k > 0) && same, check, None)
        }
        Test::AtomicBw if cfg.cmp_swap => {
            (true, "CMP_AND_SWAP: the peer's swap values are its own, not checked".to_string(), None)
        }
        Test::AtomicBw => {
            let sum = counter_sum(&area);
            let ok = sum >= peer_iters && peer_iters > 0;
            // At least: perftest's warm-up adds before the counted run.
            (ok, format!("sum of counters {sum} >= the peer's {peer_iters} fetch-adds: {ok}"), Some(sum))
        }
        _ => {
            let nz = e.filled(e.rx_base, size)?;
            // Over UC and UD what was lost stays lost; -D has no count.
            let all = got == total || (cfg.conn != QpType::Rc || cfg.duration.is_some()) && got > 0;
            let ok = all && nz.iter().all(|&k| k > 0);
            let of = if cfg.duration.is_some() { "the duration's".to_string() } else { total.to_string() };
            (ok, format!("{got} of {of} messages received; last per QP: {nz:?} of {size} bytes non-zero"), None)
        }
    })
}
