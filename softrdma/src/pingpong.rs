//! `softrdma pingpong rc|uc|ud|srq`: the four ping-pong examples of
//! rdma-core (`ibv_rc_pingpong`, `ibv_uc_pingpong`, `ibv_ud_pingpong`,
//! `ibv_srq_pingpong`), written against `verbs-api`, so that either end of a
//! ping-pong can be a softrdma device and the other end the real tool on
//! kernel rxe (or softrdma again).
//!
//! What "the same" means here, as rdma-core 44 (Debian 12) does it:
//!
//! - Out of band, over TCP (default port 18515): the client connects and
//!   writes its address as the 52-byte C string `"LLLL:QQQQQQ:PPPPPP:GID"`
//!   (`%04x:%06x:%06x:%s`: LID, QPN, PSN, and the GID as 32 hex digits, the
//!   16 GID bytes in order — `gid_to_wire_gid` on a little-endian host); the
//!   server reads it, brings its QP to RTS, writes its own, and waits for the
//!   client's `"done\0"` (5 bytes). The client brings its QP up after that.
//!   `srq` sends 256 (`MAX_QP`) such messages each way, the entries beyond
//!   `-q` all zero; the others one.
//! - QPs: RC and UC with `-m` path MTU, `max_dest_rd_atomic` 1, min RNR timer
//!   12, timeout 14, retry 7, RNR retry 7; UD with Q_Key 0x11111111. The
//!   address vector has hop limit 1 and the chosen `-g` GID index; a peer
//!   that sent a zero GID (no `-g`) cannot be reached over RoCE.
//! - Traffic: `-r` receives posted before the exchange (refilled when one
//!   is left, `srq`: when `-q` are left), all into the one buffer that sends
//!   also come from; the client sends first; a side posts its next send when
//!   both its previous send and a receive have completed, until `-n` sends
//!   (for `srq`: per QP, `-n` counted over all QPs). UD sends `-s` bytes from
//!   offset 40 of a `-s`+40-byte buffer and receives GRH + payload into it.
//! - Content: buffers start as 0x7b bytes (`srq`: zeros); with `-c` the
//!   client zeroes the first byte of each 4096-byte page before sending and
//!   the server checks those bytes at the end, printing
//!   `invalid data in page N`. softrdma checks more: the length and every
//!   byte of every message received, on either side, and fails on a
//!   mismatch.
//!
//! Beyond the tools: a `--timeout` (no completion for that long fails the
//! run instead of spinning forever), and `--wait` (a client retries the
//! TCP connect while the server is not listening yet).

use std::fmt;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use verbs_api::helpers::{to_init, ConnectOptions};
use verbs_api::transitions::required;
use verbs_api::{
    AccessFlags, Ah, AhAttr, CompChannel, Context, Cq, Gid, Mr, Mtu, Pd, Qp, QpAttr, QpCap, QpInitAttr, QpPath,
    QpState, QpType, RecvWr, SendOp, SendWr, Sge, Srq, WcStatus,
};

use crate::args::{parse_cidr, parse_mac};

/// Which of the four examples.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Kind {
    Rc,
    Uc,
    Ud,
    Srq,
}

impl Kind {
    fn qp_type(self) -> QpType {
        match self {
            Kind::Rc | Kind::Srq => QpType::Rc,
            Kind::Uc => QpType::Uc,
            Kind::Ud => QpType::Ud,
        }
    }

    /// The tool's default message size.
    pub fn default_size(self) -> usize {
        if self == Kind::Ud {
            2048
        } else {
            4096
        }
    }

    /// The tool's initial buffer byte.
    fn fill(self) -> u8 {
        if self == Kind::Srq {
            0
        } else {
            0x7b
        }
    }

    /// Address messages each side sends.
    fn messages(self) -> usize {
        if self == Kind::Srq {
            MAX_QP
        } else {
            1
        }
    }

    pub fn tool(self) -> &'static str {
        match self {
            Kind::Rc => "ibv_rc_pingpong",
            Kind::Uc => "ibv_uc_pingpong",
            Kind::Ud => "ibv_ud_pingpong",
            Kind::Srq => "ibv_srq_pingpong",
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Kind::Rc => "rc",
            Kind::Uc => "uc",
            Kind::Ud => "ud",
            Kind::Srq => "srq",
        })
    }
}

/// `srq_pingpong`'s `MAX_QP`: the number of address messages exchanged.
pub const MAX_QP: usize = 256;
/// The tools' Q_Key.
pub const QKEY: u32 = 0x1111_1111;
/// The tools' page size for `-c` (x86-64).
pub const PAGE: usize = 4096;
const GRH: usize = 40;
const RECV_WRID: u64 = 1;
const SEND_WRID: u64 = 2;
/// `sizeof "0000:000000:000000:00000000000000000000000000000000"`.
pub const MSG_LEN: usize = 52;

/// One side's address, as exchanged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Dest {
    pub lid: u16,
    pub qpn: u32,
    pub psn: u32,
    pub gid: Gid,
}

impl Dest {
    /// The 52-byte message, NUL included.
    pub fn to_msg(&self) -> [u8; MSG_LEN] {
        let hex: String = self.gid.0.iter().map(|b| format!("{b:02x}")).collect();
        let s = format!("{:04x}:{:06x}:{:06x}:{}", self.lid, self.qpn, self.psn, hex);
        let mut m = [0u8; MSG_LEN];
        let n = s.len().min(MSG_LEN - 1);
        m[..n].copy_from_slice(&s.as_bytes()[..n]);
        m
    }

    /// Parses a message the way `sscanf("%x:%x:%x:%s")` + `wire_gid_to_gid` do.
    pub fn parse(msg: &[u8]) -> Result<Dest, String> {
        let end = msg.iter().position(|&b| b == 0).unwrap_or(msg.len());
        let s = std::str::from_utf8(&msg[..end]).map_err(|_| "address message is not ASCII".to_string())?;
        let bad = || format!("malformed address message {s:?}");
        let mut it = s.splitn(4, ':');
        let mut num = |max: u32| -> Result<u32, String> {
            let f = it.next().ok_or_else(bad)?;
            let v = u32::from_str_radix(f, 16).map_err(|_| bad())?;
            if v > max {
                return Err(bad());
            }
            Ok(v)
        };
        let lid = num(0xffff)? as u16;
        let qpn = num(0xff_ffff)?;
        let psn = num(0xff_ffff)?;
        let g = it.next().ok_or_else(bad)?;
        if g.len() != 32 || !g.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(bad());
        }
        let mut gid = [0u8; 16];
        for (i, b) in gid.iter_mut().enumerate() {
            *b = u8::from_str_radix(&g[2 * i..2 * i + 2], 16).map_err(|_| bad())?;
        }
        Ok(Dest { lid, qpn, psn, gid: Gid(gid) })
    }

    /// Non-zero interface ID: what the tools test before making the AV global.
    fn has_gid(&self) -> bool {
        self.gid.0[8..].iter().any(|&b| b != 0)
    }
}

/// Options of one ping-pong run (the tools' options).
#[derive(Debug, Clone)]
pub struct PpOptions {
    pub kind: Kind,
    pub size: usize,
    pub iters: u32,
    pub mtu: Mtu,
    pub rx_depth: u32,
    pub gid_idx: Option<u32>,
    pub sl: u8,
    pub num_qp: u32,
    pub chk: bool,
    /// `-e`: sleep on CQ events (a completion channel) rather than on the CQ.
    pub events: bool,
    /// Fail when no completion arrives for this long.
    pub timeout: Duration,
    /// Print the tools' lines.
    pub verbose: bool,
}

impl PpOptions {
    pub fn new(kind: Kind) -> Self {
        PpOptions {
            kind,
            size: kind.default_size(),
            iters: 1000,
            mtu: Mtu::M1024,
            rx_depth: 500,
            gid_idx: Some(1),
            sl: 0,
            num_qp: 16,
            chk: false,
            events: false,
            timeout: Duration::from_secs(30),
            verbose: false,
        }
    }
}

/// What a run did.
#[derive(Debug, Clone, Default)]
pub struct PpReport {
    pub local: Vec<Dest>,
    pub remote: Vec<Dest>,
    pub sends: u64,
    pub recvs: u64,
    /// Received messages whose length and content were checked.
    pub verified: u64,
    /// CQ events taken from the completion channel (`-e`).
    pub cq_events: u32,
    pub elapsed: Duration,
}

impl PpReport {
    /// The tools' two result lines.
    pub fn result_lines(&self, size: usize, iters: u32) -> String {
        let usec = self.elapsed.as_secs_f64() * 1e6;
        let bytes = size as u64 * iters as u64 * 2;
        format!(
            "{} bytes in {:.2} seconds = {:.2} Mbit/sec\n{} iters in {:.2} seconds = {:.2} usec/iter\n",
            bytes,
            usec / 1e6,
            bytes as f64 * 8.0 / usec.max(1e-9),
            iters,
            usec / 1e6,
            usec / iters.max(1) as f64
        )
    }
}

#[derive(Debug)]
pub struct PpError(pub String);

impl fmt::Display for PpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for PpError {}

impl From<verbs_api::VerbsError> for PpError {
    fn from(e: verbs_api::VerbsError) -> Self {
        PpError(e.to_string())
    }
}

impl From<io::Error> for PpError {
    fn from(e: io::Error) -> Self {
        PpError(e.to_string())
    }
}

fn fail<T>(m: impl Into<String>) -> Result<T, PpError> {
    Err(PpError(m.into()))
}

/// `lrand48() & 0xffffff`, from the kernel's randomness.
fn random_psn() -> u32 {
    let mut b = [0u8; 4];
    if std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut b)).is_err() {
        let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        b = (t.subsec_nanos() ^ std::process::id().rotate_left(13)).to_le_bytes();
    }
    u32::from_le_bytes(b) & 0xff_ffff
}

/// `ibv_req_notify_cq(cq, 0)`, with the tools' message.
fn arm(cq: &Arc<dyn Cq>) -> Result<(), PpError> {
    cq.req_notify(false).map_err(|e| PpError(format!("Couldn't request CQ notification: {e}")))
}

/// The verbs objects of one side.
struct Side {
    o: PpOptions,
    _pd: Arc<dyn Pd>,
    cq: Arc<dyn Cq>,
    /// With `-e`: the channel `cq` reports to.
    channel: Option<Arc<dyn CompChannel>>,
    mr: Arc<dyn Mr>,
    srq: Option<Arc<dyn Srq>>,
    qps: Vec<Arc<dyn Qp>>,
    pd_for_ah: Arc<dyn Pd>,
    ah: Option<Arc<dyn Ah>>,
    my: Vec<Dest>,
    remote_qpn: u32,
}

impl Side {
    fn new(ctx: &Arc<dyn Context>, o: &PpOptions) -> Result<Side, PpError> {
        let k = o.kind;
        if o.size == 0 && k != Kind::Ud {
            return fail("size must be at least 1");
        }
        if k == Kind::Ud {
            let port = ctx.query_port(1)?;
            if o.size > port.active_mtu.bytes() {
                return fail(format!("Requested size larger than port MTU ({})", port.active_mtu.bytes()));
            }
        }
        if k == Kind::Srq {
            if o.num_qp > o.rx_depth {
                return fail(format!(
                    "rx_depth {} is too small for {} QPs -- must have at least one receive per QP.",
                    o.rx_depth, o.num_qp
                ));
            }
            if o.num_qp as usize >= MAX_QP || o.num_qp == 0 {
                return fail(format!("num_qp {} must be in 1..{}", o.num_qp, MAX_QP - 1));
            }
        }
        let nqp = if k == Kind::Srq { o.num_qp } else { 1 };
        let len = if k == Kind::Ud { o.size + GRH } else { o.size };
        let pd = ctx.alloc_pd()?;
        let mr = pd.reg_mr(len.max(1), AccessFlags::LOCAL_WRITE)?;
        mr.write(0, &vec![k.fill(); len])?;
        let channel = if o.events { Some(ctx.create_comp_channel()?) } else { None };
        let cq = match &channel {
            Some(ch) => ctx.create_cq_with_channel(o.rx_depth + nqp, ch)?,
            None => ctx.create_cq(o.rx_depth + nqp)?,
        };
        if o.events {
            arm(&cq)?;
        }
        let srq = if k == Kind::Srq { Some(pd.create_srq(o.rx_depth, 1)?) } else { None };
        let mut qps = Vec::new();
        for _ in 0..nqp {
            let cap = QpCap {
                max_send_wr: 1,
                max_recv_wr: if srq.is_some() { 0 } else { o.rx_depth },
                max_send_sge: 1,
                max_recv_sge: if srq.is_some() { 0 } else { 1 },
                max_inline_data: 0,
            };
            let qp = pd.create_qp(&QpInitAttr {
                qp_type: k.qp_type(),
                send_cq: cq.clone(),
                recv_cq: cq.clone(),
                srq: srq.clone(),
                cap,
                sq_sig_all: false,
            })?;
            let c = ConnectOptions {
                access: AccessFlags::NONE,
                pkey_index: 0,
                qkey: QKEY,
                sgid_index: o.gid_idx.unwrap_or(0) as u8,
                ..Default::default()
            };
            to_init(&qp, &c).map_err(|e| PpError(format!("Failed to modify QP to INIT: {e}")))?;
            qps.push(qp);
        }
        let gid = match o.gid_idx {
            Some(i) => ctx.query_gid(1, i).map_err(|e| PpError(format!("can't read sgid of index {i}: {e}")))?,
            None => Gid::default(),
        };
        let mut my: Vec<Dest> = qps.iter().map(|q| Dest { lid: 0, qpn: q.qp_num(), psn: random_psn(), gid }).collect();
        my.resize(k.messages(), Dest::default());
        let pd_for_ah = pd.clone();
        Ok(Side { o: o.clone(), _pd: pd, cq, channel, mr, srq, qps, pd_for_ah, ah: None, my, remote_qpn: 0 })
    }

    fn recv_len(&self) -> usize {
        if self.o.kind == Kind::Ud {
            self.o.size + GRH
        } else {
            self.o.size
        }
    }

    /// Posts up to `n` receives; returns how many were posted.
    fn post_recv(&self, n: u32) -> u32 {
        let wr = RecvWr {
            wr_id: RECV_WRID,
            sg_list: vec![Sge { addr: self.mr.addr(), length: self.recv_len() as u32, lkey: self.mr.lkey() }],
        };
        for i in 0..n {
            let r = match &self.srq {
                Some(s) => s.post_recv(std::slice::from_ref(&wr)),
                None => self.qps[0].post_recv(std::slice::from_ref(&wr)),
            };
            if r.is_err() {
                return i;
            }
        }
        n
    }

    fn post_send(&self, qp: usize) -> Result<(), PpError> {
        let off = if self.o.kind == Kind::Ud { GRH as u64 } else { 0 };
        let mut wr = SendWr::new(
            SEND_WRID,
            SendOp::Send,
            vec![Sge { addr: self.mr.addr() + off, length: self.o.size as u32, lkey: self.mr.lkey() }],
        );
        if self.o.kind == Kind::Ud {
            wr.remote_qpn = self.remote_qpn;
            wr.remote_qkey = QKEY;
        }
        self.qps[qp].post_send(&[wr], self.ah.as_ref()).map_err(|(_, e)| PpError(format!("Couldn't post send: {e}")))
    }

    /// `pp_connect_ctx`: RTR and RTS towards `rem` (UD: the AH too).
    fn connect(&mut self, rem: &[Dest]) -> Result<(), PpError> {
        let o = &self.o;
        let Some(sgid) = o.gid_idx else {
            return fail("RoCE needs a GID: give -g (e.g. -g 1 for IPv4, -g 2 for IPv6)");
        };
        // srq_pingpong takes the GID of the first entry for every QP.
        if !rem[0].has_gid() {
            return fail("the peer sent no GID (run it with -g): RoCE cannot address it by LID");
        }
        let mut ah = AhAttr::new(rem[0].gid, sgid as u8);
        ah.hop_limit = 1;
        ah.sl = o.sl;
        let path = QpPath { ah: Some(ah) };
        for (i, qp) in self.qps.iter().enumerate() {
            let d = rem[i];
            let my_psn = self.my[i].psn;
            let rtr = QpAttr {
                qp_state: QpState::Rtr,
                path_mtu: o.mtu,
                dest_qp_num: d.qpn,
                rq_psn: d.psn,
                max_dest_rd_atomic: 1,
                min_rnr_timer: 12,
                ..QpAttr::default()
            };
            let rts = QpAttr {
                qp_state: QpState::Rts,
                sq_psn: my_psn,
                timeout: 14,
                retry_cnt: 7,
                rnr_retry: 7,
                max_rd_atomic: 1,
                ..rtr
            };
            let t = o.kind.qp_type();
            // UC/RC carry the path; UD only changes state (the AH goes with each send).
            let p = if t == QpType::Ud { QpPath::default() } else { path };
            let (m_rtr, m_rts) = (required(t, QpState::Init, QpState::Rtr), required(t, QpState::Rtr, QpState::Rts));
            qp.modify(&rtr, m_rtr, p).map_err(|e| PpError(format!("Failed to modify QP to RTR: {e}")))?;
            qp.modify(&rts, m_rts, QpPath::default())
                .map_err(|e| PpError(format!("Failed to modify QP to RTS: {e}")))?;
        }
        if o.kind == Kind::Ud {
            self.ah = Some(self.pd_for_ah.create_ah(&ah).map_err(|e| PpError(format!("Failed to create AH: {e}")))?);
            self.remote_qpn = rem[0].qpn;
        }
        Ok(())
    }

    /// Checks a received message in the buffer: every byte is the buffer's
    /// fill byte, except the first byte of each page, which is zero with
    /// `-c` (the client zeroes it) and either value without. Returns the
    /// pages that differ.
    fn check(&self) -> Result<Vec<usize>, PpError> {
        let off = if self.o.kind == Kind::Ud { GRH } else { 0 };
        let mut buf = vec![0u8; self.o.size];
        self.mr.read(off, &mut buf)?;
        let fill = self.o.kind.fill();
        let mut bad = Vec::new();
        for (p, page) in buf.chunks(PAGE).enumerate() {
            let first_ok = if self.o.chk { page[0] == 0 } else { page[0] == 0 || page[0] == fill };
            if !first_ok || page[1..].iter().any(|&b| b != fill) {
                bad.push(p);
            }
        }
        Ok(bad)
    }

    /// The ping-pong loop; `client` sends first.
    fn run(&mut self, client: bool, routs0: u32) -> Result<PpReport, PpError> {
        let o = self.o.clone();
        let nqp = self.qps.len();
        let iters = o.iters as u64;
        let refill_at = if o.kind == Kind::Srq { o.num_qp } else { 1 };
        let mut routs = routs0;
        let mut pending = vec![RECV_WRID; nqp];
        let mut rep = PpReport::default();
        if client {
            if o.chk {
                let off = if o.kind == Kind::Ud { GRH } else { 0 };
                for p in (0..o.size).step_by(PAGE) {
                    self.mr.write(off + p, &[0])?;
                }
            }
            for (i, p) in pending.iter_mut().enumerate() {
                self.post_send(i)?;
                *p = RECV_WRID | SEND_WRID;
            }
        }
        let start = Instant::now();
        let mut last = Instant::now();
        // UD: the GRH and the payload.
        let expect_len = self.recv_len() as u32;
        let num_wc = nqp + o.rx_depth as usize;
        while rep.recvs < iters || rep.sends < iters {
            let wcs = match &self.channel {
                // As the tools do with -e: take the event, re-arm, then poll
                // once (what arrived since the event, if anything).
                Some(ch) => match ch.get_cq_event(Duration::from_millis(200)) {
                    Some(cq) if cq.handle() != self.cq.handle() => {
                        return fail(format!("CQ event for unknown CQ {}", cq.handle()));
                    }
                    Some(cq) => {
                        rep.cq_events += 1;
                        arm(&cq)?;
                        self.cq.poll(num_wc)
                    }
                    None => Vec::new(),
                },
                None => self.cq.wait(num_wc, Duration::from_millis(200)),
            };
            if wcs.is_empty() {
                if last.elapsed() > o.timeout {
                    return fail(format!(
                        "no completion for {:?} ({} of {} receives, {} of {} sends done)",
                        o.timeout, rep.recvs, iters, rep.sends, iters
                    ));
                }
                continue;
            }
            last = Instant::now();
            for wc in wcs {
                if wc.status != WcStatus::Success {
                    return fail(format!(
                        "Failed status {} ({}) for wr_id {}",
                        wc.status.as_str(),
                        wc.status as u32,
                        wc.wr_id
                    ));
                }
                let qi = self
                    .qps
                    .iter()
                    .position(|q| q.qp_num() == wc.qp_num)
                    .ok_or_else(|| PpError(format!("Couldn't find QPN {:06x}", wc.qp_num)))?;
                match wc.wr_id {
                    SEND_WRID => rep.sends += 1,
                    RECV_WRID => {
                        if wc.byte_len != expect_len {
                            return fail(format!(
                                "receive {} completed with {} bytes, expected {}",
                                rep.recvs + 1,
                                wc.byte_len,
                                expect_len
                            ));
                        }
                        if o.kind == Kind::Ud && wc.src_qp != self.remote_qpn {
                            return fail(format!(
                                "datagram from QPN {:#x}, expected {:#x}",
                                wc.src_qp, self.remote_qpn
                            ));
                        }
                        let bad = self.check()?;
                        if !bad.is_empty() {
                            for p in &bad {
                                println!("invalid data in page {p}");
                            }
                            return fail(format!("receive {}: wrong data in {} page(s)", rep.recvs + 1, bad.len()));
                        }
                        rep.verified += 1;
                        routs -= 1;
                        if routs <= refill_at {
                            routs += self.post_recv(o.rx_depth - routs);
                            if routs < o.rx_depth {
                                return fail(format!("Couldn't post receive ({routs})"));
                            }
                        }
                        rep.recvs += 1;
                    }
                    other => return fail(format!("Completion for unknown wr_id {other}")),
                }
                pending[qi] &= !wc.wr_id;
                if rep.sends < iters && pending[qi] == 0 {
                    self.post_send(qi)?;
                    pending[qi] = RECV_WRID | SEND_WRID;
                }
            }
        }
        rep.elapsed = start.elapsed();
        if rep.cq_events > 0 {
            self.cq.ack_events(rep.cq_events)?;
        }
        Ok(rep)
    }
}

fn print_dest(kind: Kind, what: &str, d: &Dest) {
    // ud_pingpong prints a colon before the local GID; the others a comma.
    let sep = if kind == Kind::Ud && what == "local" { ":" } else { "," };
    let pad = if what == "local" { " " } else { "" };
    println!(
        "  {what} address: {pad}LID 0x{:04x}, QPN 0x{:06x}, PSN 0x{:06x}{sep} GID {}",
        d.lid,
        d.qpn,
        d.psn,
        d.gid.to_ipv6()
    );
}

fn read_msgs(s: &mut TcpStream, n: usize, who: &str) -> Result<Vec<Dest>, PpError> {
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let mut m = [0u8; MSG_LEN];
        s.read_exact(&mut m).map_err(|e| PpError(format!("{who}: Couldn't read remote address [{i}]: {e}")))?;
        out.push(Dest::parse(&m).map_err(PpError)?);
    }
    Ok(out)
}

fn write_msgs(s: &mut TcpStream, my: &[Dest], who: &str) -> Result<(), PpError> {
    let mut all = Vec::with_capacity(my.len() * MSG_LEN);
    for d in my {
        all.extend_from_slice(&d.to_msg());
    }
    s.write_all(&all).map_err(|e| PpError(format!("{who}: Couldn't send local address: {e}")))
}

/// Runs the server side over an accepted connection.
pub fn serve(ctx: &Arc<dyn Context>, o: &PpOptions, mut conn: TcpStream) -> Result<PpReport, PpError> {
    let mut side = Side::new(ctx, o)?;
    let routs = side.post_recv(o.rx_depth);
    if routs < o.rx_depth {
        return fail(format!("Couldn't post receive ({routs})"));
    }
    exchange_server(&mut side, &mut conn)
}

fn exchange_server(side: &mut Side, conn: &mut TcpStream) -> Result<PpReport, PpError> {
    let o = side.o.clone();
    if o.verbose {
        for d in side.my.iter().take(side.qps.len()) {
            print_dest(o.kind, "local", d);
        }
    }
    conn.set_read_timeout(Some(o.timeout))?;
    let rem = read_msgs(conn, o.kind.messages(), "server")?;
    side.connect(&rem)?;
    write_msgs(conn, &side.my, "server")?;
    let mut done = [0u8; 5];
    conn.read_exact(&mut done).map_err(|e| PpError(format!("server: Couldn't recv \"done\": {e}")))?;
    if &done != b"done\0" {
        return fail(format!("server: expected \"done\", got {done:?}"));
    }
    finish(side, rem, false)
}

/// Runs the client side over a connected stream.
pub fn client(ctx: &Arc<dyn Context>, o: &PpOptions, mut conn: TcpStream) -> Result<PpReport, PpError> {
    let mut side = Side::new(ctx, o)?;
    let routs = side.post_recv(o.rx_depth);
    if routs < o.rx_depth {
        return fail(format!("Couldn't post receive ({routs})"));
    }
    if o.verbose {
        for d in side.my.iter().take(side.qps.len()) {
            print_dest(o.kind, "local", d);
        }
    }
    conn.set_read_timeout(Some(o.timeout))?;
    write_msgs(&mut conn, &side.my, "client")?;
    let rem = read_msgs(&mut conn, o.kind.messages(), "client")?;
    conn.write_all(b"done\0").map_err(|e| PpError(format!("client: Couldn't write \"done\": {e}")))?;
    drop(conn);
    side.connect(&rem)?;
    finish(&mut side, rem, true)
}

fn finish(side: &mut Side, rem: Vec<Dest>, client: bool) -> Result<PpReport, PpError> {
    let o = side.o.clone();
    if o.verbose {
        for d in rem.iter().take(side.qps.len()) {
            print_dest(o.kind, "remote", d);
        }
    }
    let mut rep = side.run(client, o.rx_depth)?;
    rep.local = side.my[..side.qps.len()].to_vec();
    rep.remote = rem[..side.qps.len()].to_vec();
    if o.verbose {
        print!("{}", rep.result_lines(o.size, o.iters));
    }
    for qp in &side.qps {
        let _ = qp.destroy();
    }
    Ok(rep)
}

/// Binds the server's listening socket: `[::]:port` (IPv4 too), else `0.0.0.0:port`.
pub fn listen(port: u16) -> io::Result<TcpListener> {
    TcpListener::bind(SocketAddr::from(([0u16; 8], port))).or_else(|_| TcpListener::bind(("0.0.0.0", port)))
}

/// Accepts one connection, waiting at most `wait` (zero: forever).
pub fn accept(l: &TcpListener, wait: Duration) -> io::Result<TcpStream> {
    if wait.is_zero() {
        return l.accept().map(|(s, _)| s);
    }
    let deadline = Instant::now() + wait;
    l.set_nonblocking(true)?;
    loop {
        match l.accept() {
            Ok((s, _)) => {
                s.set_nonblocking(false)?;
                return Ok(s);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                if Instant::now() >= deadline {
                    return Err(io::Error::new(io::ErrorKind::TimedOut, format!("no client within {wait:?}")));
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(e) => return Err(e),
        }
    }
}

/// Connects to `host:port`, retrying refused or unreachable connects for up to `wait`.
pub fn connect(host: &str, port: u16, wait: Duration) -> io::Result<TcpStream> {
    let deadline = Instant::now() + wait;
    loop {
        let mut last = io::Error::new(io::ErrorKind::NotFound, format!("{host}: no address"));
        for a in (host, port).to_socket_addrs()? {
            match TcpStream::connect_timeout(&a, Duration::from_secs(5)) {
                Ok(s) => return Ok(s),
                Err(e) => last = e,
            }
        }
        if Instant::now() >= deadline {
            return Err(io::Error::new(last.kind(), format!("Couldn't connect to {host}:{port}: {last}")));
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

// ---------------------------------------------------------------- the CLI

/// `softrdma pingpong`: the command line.
#[derive(clap::Args, Debug, Clone)]
pub struct PingpongArgs {
    /// Which example: rc, uc, ud or srq (ibv_{rc,uc,ud,srq}_pingpong).
    #[arg(value_enum)]
    pub kind: Kind,
    /// server (listen and wait), client (connect to HOST), or selftest (both
    /// ends in this process, two devices on the in-memory fabric, TCP over
    /// loopback).
    #[arg(value_parser = ["server", "client", "selftest"])]
    pub role: String,
    /// The server to connect to (client).
    pub host: Option<String>,
    /// TCP port of the address exchange.
    #[arg(short = 'p', long, default_value_t = 18515)]
    pub port: u16,
    /// Message size (default as the tool: 4096, ud 2048).
    #[arg(short = 's', long)]
    pub size: Option<usize>,
    /// Path MTU: 256, 512, 1024, 2048 or 4096 (rc, uc, srq).
    #[arg(short = 'm', long, default_value_t = 1024)]
    pub mtu: usize,
    /// Receives to post at a time.
    #[arg(short = 'r', long = "rx-depth", default_value_t = 500)]
    pub rx_depth: u32,
    /// Number of exchanges.
    #[arg(short = 'n', long, default_value_t = 1000)]
    pub iters: u32,
    /// Service level.
    #[arg(short = 'l', long, default_value_t = 0)]
    pub sl: u8,
    /// Local GID index (1: the IPv4 address, 2: the IPv6 address); RoCE needs one.
    #[arg(short = 'g', long = "gid-idx")]
    pub gid_idx: Option<u32>,
    /// Number of QPs (srq).
    #[arg(short = 'q', long = "num-qp", default_value_t = 16)]
    pub num_qp: u32,
    /// Validate received buffers the way the tools do (softrdma checks every byte regardless).
    #[arg(short = 'c', long = "chk")]
    pub chk: bool,
    /// Sleep on CQ events (a completion channel) instead of waiting on the CQ.
    #[arg(short = 'e', long = "events")]
    pub events: bool,
    /// Network namespace for the TAP and the TCP socket (default: this process's).
    #[arg(long)]
    pub netns: Option<String>,
    /// TAP interface name (server/client; default srdpp0).
    #[arg(long, default_value = "srdpp0")]
    pub tap: String,
    /// Make the TAP a port of this bridge (in --netns).
    #[arg(long)]
    pub bridge: Option<String>,
    /// The device's addresses, e.g. 10.77.0.21/24 and fd77::21/64: GID 1, 2, … in this order.
    #[arg(long = "addr", value_name = "CIDR")]
    pub addrs: Vec<String>,
    /// The device's MAC address (default random, locally administered).
    #[arg(long)]
    pub mac: Option<String>,
    /// The link MTU of the TAP (1500 → active MTU 1024, 9000 → 4096).
    #[arg(long = "link-mtu", default_value_t = 1500)]
    pub link_mtu: usize,
    /// Virtio-net headers and UDP segmentation offload on the TAP (runs of
    /// frames per write(2)); `off`: one frame per write(2)/read(2).
    #[arg(long = "tap-offload", default_value = "on", value_parser = ["on", "off"])]
    pub tap_offload: String,
    /// Write the device's frames to this pcap file.
    #[arg(long)]
    pub pcap: Option<PathBuf>,
    /// Fail when no completion arrives for this many seconds.
    #[arg(long, default_value_t = 30)]
    pub timeout: u64,
    /// Read retry_cnt 7 as rxe does (retry forever) instead of IBTA's seven retries.
    #[arg(long = "rxe-retry")]
    pub rxe_retry: bool,
    /// Client: keep retrying the TCP connect for this many seconds; server:
    /// give up when no client came within this many seconds (0: wait forever).
    #[arg(long, default_value_t = 0)]
    pub wait: u64,
}

impl PingpongArgs {
    pub fn options(&self) -> Result<PpOptions, String> {
        let mtu = Mtu::from_bytes(self.mtu).ok_or_else(|| format!("bad MTU {} (256…4096)", self.mtu))?;
        Ok(PpOptions {
            kind: self.kind,
            size: self.size.unwrap_or(self.kind.default_size()),
            iters: self.iters,
            mtu,
            rx_depth: self.rx_depth,
            gid_idx: self.gid_idx,
            sl: self.sl,
            num_qp: self.num_qp,
            chk: self.chk,
            events: self.events,
            timeout: Duration::from_secs(self.timeout.max(1)),
            verbose: true,
        })
    }
}

/// Runs `softrdma pingpong`; exit 0 when the run completed with every message verified.
pub fn main(a: &PingpongArgs) -> ExitCode {
    match cli(a) {
        Ok(()) => ExitCode::SUCCESS,
        Err((code, e)) => {
            eprintln!("softrdma pingpong: {e}");
            ExitCode::from(code)
        }
    }
}

fn cli(a: &PingpongArgs) -> Result<(), (u8, String)> {
    let setup = |e: String| (2u8, e);
    let o = a.options().map_err(setup)?;
    if o.gid_idx.is_none() {
        return Err(setup("RoCE needs a GID: give -g (e.g. -g 1 for IPv4, -g 2 for IPv6)".into()));
    }
    if a.role == "selftest" {
        return selftest(a, &o);
    }
    use crate::backend::netns::{self, NetNs};
    use crate::backend::tap::{open_tap, TapConfig};
    use crate::device::{Device, DeviceConfig};
    if a.addrs.is_empty() {
        return Err(setup("give the device's address(es) with --addr CIDR".into()));
    }
    let addrs = a.addrs.iter().map(|s| parse_cidr(s)).collect::<Result<Vec<_>, _>>().map_err(setup)?;
    let mut tc = match &a.netns {
        Some(ns) => TapConfig::in_netns(ns.clone(), a.tap.clone()),
        None => TapConfig::new(a.tap.clone()),
    };
    tc.mac = a.mac.as_deref().map(parse_mac).transpose().map_err(setup)?;
    tc.mtu = a.link_mtu;
    tc.vnet_hdr = a.tap_offload == "on";
    let link = open_tap(&tc).map_err(|e| setup(format!("TAP {}: {e}", a.tap)))?;
    if let Some(br) = &a.bridge {
        netns::enslave(a.netns.as_deref(), &a.tap, br).map_err(|e| setup(e.to_string()))?;
    }
    let mut cfg = DeviceConfig::new("srd0", addrs);
    cfg.pcap = a.pcap.clone();
    cfg.rxe_retry_quirk = a.rxe_retry;
    let dev = Device::start(cfg, link).map_err(|e| setup(format!("device: {e}")))?;
    let ctx = dev.context();
    let ns = match &a.netns {
        Some(n) => Some(NetNs::open(n).map_err(|e| setup(e.to_string()))?),
        None => None,
    };
    let in_ns = |f: &(dyn Fn() -> io::Result<TcpStream> + Sync)| -> io::Result<TcpStream> {
        match &ns {
            Some(ns) => ns.run_in(f)?,
            None => f(),
        }
    };
    let result = if a.role == "server" {
        let port = a.port;
        let l = match &ns {
            Some(ns) => ns.run_in(|| listen(port)).and_then(|r| r),
            None => listen(port),
        }
        .map_err(|e| setup(format!("Couldn't listen to port {port}: {e}")))?;
        let conn = accept(&l, Duration::from_secs(a.wait)).map_err(|e| setup(format!("accept() failed: {e}")))?;
        drop(l);
        serve(&ctx, &o, conn)
    } else {
        let host = a.host.clone().ok_or_else(|| setup("client needs the server's HOST".into()))?;
        let wait = Duration::from_secs(a.wait);
        let conn = in_ns(&|| connect(&host, a.port, wait)).map_err(|e| setup(e.to_string()))?;
        client(&ctx, &o, conn)
    };
    let (dc, ec, qc) = dev.counters();
    dev.shutdown();
    match result {
        Ok(rep) => {
            println!(
                "softrdma pingpong {} {}: PASS, {} sends, {} receives, {} verified; {} frames out, {} in, {} retransmitted, {} ICRC errors",
                o.kind, a.role, rep.sends, rep.recvs, rep.verified, dc.tx_frames, dc.rx_frames, qc.retransmitted_pkts, ec.rx_icrc_err
            );
            Ok(())
        }
        Err(e) => {
            println!(
                "softrdma pingpong {} {}: FAIL: {e}; {} frames out, {} in, {} retransmitted, {} ICRC errors",
                o.kind, a.role, dc.tx_frames, dc.rx_frames, qc.retransmitted_pkts, ec.rx_icrc_err
            );
            Err((1, e.0))
        }
    }
}

/// Both ends in this process: two devices on the in-memory fabric.
fn selftest(a: &PingpongArgs, o: &PpOptions) -> Result<(), (u8, String)> {
    use crate::backend::memory::Faults;
    use crate::testbed::{Testbed, TestbedOptions};
    let opts = TestbedOptions { pcap_prefix: a.pcap.clone(), rxe_retry_quirk: a.rxe_retry, ..Default::default() };
    let bed = Testbed::memory(2, Faults::default(), &opts).map_err(|e| (2, format!("memory testbed: {e}")))?;
    let ctx = bed.contexts();
    let o = PpOptions { verbose: false, ..o.clone() };
    let r = run_pair(&ctx[0], &ctx[1], &o, a.port);
    match r {
        Ok((s, c)) => {
            println!(
                "softrdma pingpong {} selftest: PASS, server {} sends/{} receives verified {}, client {} sends/{} receives verified {}",
                o.kind, s.sends, s.recvs, s.verified, c.sends, c.recvs, c.verified
            );
            Ok(())
        }
        Err(e) => Err((1, e.0)),
    }
}

/// Runs a server on `a` and a client on `b` against each other over TCP on
/// localhost (`port` 0: any free port). For tests and `selftest`.
pub fn run_pair(
    a: &Arc<dyn Context>,
    b: &Arc<dyn Context>,
    o: &PpOptions,
    port: u16,
) -> Result<(PpReport, PpReport), PpError> {
    let l = TcpListener::bind(("127.0.0.1", port))?;
    let port = l.local_addr()?.port();
    std::thread::scope(|s| {
        let srv = s.spawn(move || -> Result<PpReport, PpError> {
            let (conn, _) = l.accept()?;
            serve(a, o, conn)
        });
        let cl = client(b, o, connect("127.0.0.1", port, Duration::from_secs(5))?);
        let sv = srv.join().map_err(|_| PpError("server thread panicked".into()))?;
        Ok((sv?, cl?))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_format_matches_the_tools() {
        let d = Dest { lid: 0, qpn: 0x11, psn: 0xabcdef, gid: Gid::from_ipv4("10.77.0.21".parse().unwrap()) };
        let m = d.to_msg();
        assert_eq!(m.len(), 52);
        assert_eq!(&m[..51], b"0000:000011:abcdef:00000000000000000000ffff0a4d0015");
        assert_eq!(m[51], 0);
        assert_eq!(Dest::parse(&m).unwrap(), d);
        let v6 = Dest { lid: 0, qpn: 0xff_ffff, psn: 0, gid: Gid::from_ipv6("fd77::21".parse().unwrap()) };
        assert_eq!(Dest::parse(&v6.to_msg()).unwrap(), v6);
        assert!(Dest::parse(b"0000:000011:abcdef:0000\0").is_err());
        assert!(!Dest::default().has_gid());
        assert!(d.has_gid());
    }
}
