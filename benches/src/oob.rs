//! perftest's out-of-band TCP exchange (as perftest 6.06, packaged as
//! "perftest 4.5" in Debian 12, speaks it), so that one end of a
//! `softrdma-perf write_bw|read_bw|send_bw|atomic_bw|read_lat|send_lat|write_lat`
//! run can be the real `ib_*_bw` / `ib_*_lat` on another host (e.g. kernel rxe
//! in a guest).
//!
//! The exchange, every step symmetric ("xchg": the client writes its bytes
//! and then reads the server's; the server reads, then writes):
//!
//! 1. versions: 16 bytes, a NUL-terminated version string ("6.06"); perftest
//!    refuses peers older than 5.70;
//! 2. system data: cycle buffer (page size) and cache line size, each a
//!    big-endian i32; both sides take the maximum;
//! 3. MTU: 2 bytes, the `enum ibv_mtu` value as a decimal string ("3\0" for
//!    1024); both sides take the smaller;
//! 4. per QP, the "pingpong_dest" message: 108 bytes, `KEY_PRINT_FMT_GID`
//!    `"%04x:%04x:%06x:%06x:%08x:%016llx:" + 16 x "%02x:" + "%08x:"` (LID,
//!    outstanding reads, QPN, PSN, rkey, buffer address, the 16 GID bytes in
//!    order, SRQ number), NUL-padded;
//! 5. both sides connect their QPs (RTR/RTS); then, as observed on the
//!    wire with perftest 6.06, write/read/atomic exchange two more dest
//!    messages as barriers before the client starts and one after it is
//!    done; send_bw three before (the server posts its receives first) and
//!    none after; the latency tests (`*_lat`) three before (one after RTR,
//!    two more) and none after;
//! 6. the server (passive for write/read/atomic; the receiver for send_bw)
//!    answers every dest message it gets; softrdma's server recognizes them
//!    by their first byte (a hex digit, where a report starts with the zero
//!    high byte of a big-endian size), so the count does not matter to it;
//! 7. write/read/atomic: after the last barrier the client's report goes to
//!    the server (size, iterations: u64 big-endian; BW peak, BW average,
//!    message rate: doubles with their bytes swapped), each as its own xchg;
//!    send_bw and the latency tests have no report;
//! 8. a last dest message is exchanged (`ctx_close_connection`) and the
//!    socket closed.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

use softrdma::args::{parse_cidr, parse_mac};
use softrdma::backend::netns::{self, NetNs};
use softrdma::backend::tap::{open_tap, TapConfig};
use softrdma::device::Device;
use verbs_api::helpers::{to_init, ConnectOptions};
use verbs_api::transitions::required;
use verbs_api::{
    AccessFlags, AhAttr, Context, Gid, Mtu, QpAttr, QpCap, QpInitAttr, QpPath, QpState, QpType, RecvWr, SendFlags,
    SendOp, SendWr, Sge, WcStatus,
};

use crate::perf::Test;

/// The version softrdma claims: the protocol of perftest 6.06.
pub const VERSION: &str = "6.06";
/// `sizeof(user_param->version)`.
pub const VERSION_LEN: usize = 16;
/// `KEY_MSG_SIZE_GID`.
pub const DEST_LEN: usize = 108;
/// perftest's default TCP port.
pub const PORT: u16 = 18515;
/// What softrdma reports as its cycle buffer (page size) and cache line.
const CYCLE_BUFFER: i32 = 4096;
const CACHE_LINE: i32 = 64;

pub type Res<T> = Result<T, String>;

/// One QP's `struct pingpong_dest` as it crosses the socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Dest {
    pub lid: u16,
    pub out_reads: u32,
    pub qpn: u32,
    pub psn: u32,
    pub rkey: u32,
    pub vaddr: u64,
    pub gid: Gid,
    pub srqn: u32,
}

impl Dest {
    pub fn to_msg(&self) -> [u8; DEST_LEN] {
        let mut s = format!(
            "{:04x}:{:04x}:{:06x}:{:06x}:{:08x}:{:016x}:",
            self.lid, self.out_reads, self.qpn, self.psn, self.rkey, self.vaddr
        );
        for b in self.gid.0 {
            s.push_str(&format!("{b:02x}:"));
        }
        s.push_str(&format!("{:08x}:", self.srqn));
        let mut m = [0u8; DEST_LEN];
        let n = s.len().min(DEST_LEN - 1);
        m[..n].copy_from_slice(&s.as_bytes()[..n]);
        m
    }

    pub fn parse(msg: &[u8]) -> Res<Dest> {
        let end = msg.iter().position(|&b| b == 0).unwrap_or(msg.len());
        let s = std::str::from_utf8(&msg[..end]).map_err(|_| "dest message is not ASCII".to_string())?;
        let bad = || format!("malformed dest message {s:?}");
        let f: Vec<&str> = s.split(':').collect();
        if f.len() < 23 {
            return Err(bad());
        }
        let h32 = |x: &str| u32::from_str_radix(x, 16).map_err(|_| bad());
        let mut gid = [0u8; 16];
        for (i, g) in gid.iter_mut().enumerate() {
            *g = u8::from_str_radix(f[6 + i], 16).map_err(|_| bad())?;
        }
        Ok(Dest {
            lid: h32(f[0])? as u16,
            out_reads: h32(f[1])?,
            qpn: h32(f[2])? & 0xff_ffff,
            psn: h32(f[3])? & 0xff_ffff,
            rkey: h32(f[4])?,
            vaddr: u64::from_str_radix(f[5], 16).map_err(|_| bad())?,
            gid: Gid(gid),
            srqn: h32(f[22]).unwrap_or(0),
        })
    }
}

/// The client's results as `xchg_bw_reports` sends them.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct BwReport {
    pub size: u64,
    pub iters: u64,
    pub bw_peak: f64,
    pub bw_avg: f64,
    pub msg_rate: f64,
}

/// The socket and which end of it this is.
pub struct Oob {
    pub s: TcpStream,
    pub client: bool,
}

impl Oob {
    pub fn new(s: TcpStream, client: bool, timeout: Duration) -> Res<Oob> {
        s.set_nodelay(true).map_err(|e| format!("TCP_NODELAY: {e}"))?;
        s.set_read_timeout(Some(timeout)).map_err(|e| format!("socket timeout: {e}"))?;
        Ok(Oob { s, client })
    }

    /// `ctx_xchg_data`: the client writes first, the server reads first.
    pub fn xchg(&mut self, mine: &[u8], what: &str) -> Res<Vec<u8>> {
        let mut theirs = vec![0u8; mine.len()];
        let w = |s: &mut TcpStream| s.write_all(mine).map_err(|e| format!("{what}: write: {e}"));
        if self.client {
            w(&mut self.s)?;
            self.s.read_exact(&mut theirs).map_err(|e| format!("{what}: read: {e}"))?;
        } else {
            self.s.read_exact(&mut theirs).map_err(|e| format!("{what}: read: {e}"))?;
            w(&mut self.s)?;
        }
        Ok(theirs)
    }

    /// `ctx_hand_shake`.
    pub fn hand_shake(&mut self, my: &Dest, what: &str) -> Res<Dest> {
        let r = self.xchg(&my.to_msg(), what)?;
        trace(self.client, what, &r);
        Dest::parse(&r)
    }

    /// Server: answers every dest message the client has sent (or, with
    /// `block`, sends next): a dest message starts with a hex digit (the
    /// LID), a report with the zero high byte of a big-endian size.
    /// Returns how many were answered.
    pub fn answer_hand_shakes(&mut self, my: &Dest, block: bool, what: &str) -> Res<usize> {
        let mut n = 0;
        loop {
            let mut b = [0u8; 1];
            self.s.set_nonblocking(!block).map_err(|e| format!("{what}: {e}"))?;
            let r = self.s.peek(&mut b);
            self.s.set_nonblocking(false).map_err(|e| format!("{what}: {e}"))?;
            match r {
                Ok(1) if b[0].is_ascii_hexdigit() => {
                    self.hand_shake(my, what)?;
                    n += 1;
                }
                Ok(_) => return Ok(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(n),
                Err(e) => return Err(format!("{what}: {e}")),
            }
        }
    }

    /// Steps 1–3; returns the peer's version and the agreed MTU.
    pub fn preamble(&mut self, mtu: Mtu) -> Res<(String, Mtu)> {
        let mut v = [0u8; VERSION_LEN];
        v[..VERSION.len()].copy_from_slice(VERSION.as_bytes());
        let r = self.xchg(&v, "version exchange")?;
        let end = r.iter().position(|&b| b == 0).unwrap_or(r.len());
        let rv = String::from_utf8_lossy(&r[..end]).to_string();
        let num: f64 = rv.trim().parse().unwrap_or(0.0);
        if num < 5.70 {
            return Err(format!("peer perftest version {rv:?} is older than 5.70 (not supported)"));
        }
        self.xchg(&CYCLE_BUFFER.to_be_bytes(), "cycle buffer exchange")?;
        self.xchg(&CACHE_LINE.to_be_bytes(), "cache line exchange")?;
        let code = mtu_code(mtu);
        let mine = [b'0' + code, 0];
        let r = self.xchg(&mine, "MTU exchange")?;
        let rem = (r[0] as char).to_digit(10).unwrap_or(0) as u8;
        let agreed = if (1..=5).contains(&rem) && rem < code { mtu_from_code(rem) } else { mtu };
        Ok((rv, agreed))
    }

    /// `xchg_bw_reports` for a peer of version 5.33 or later (no per-port part).
    pub fn bw_reports(&mut self, mine: &BwReport) -> Res<BwReport> {
        let mut get = |v: [u8; 8], w: &str| -> Res<[u8; 8]> {
            let r = self.xchg(&v, w)?;
            Ok(r.try_into().unwrap_or([0; 8]))
        };
        let size = u64::from_be_bytes(get(mine.size.to_be_bytes(), "report size")?);
        let iters = u64::from_be_bytes(get(mine.iters.to_be_bytes(), "report iters")?);
        let d = |x: f64| x.to_bits().to_be_bytes();
        let pd = |b: [u8; 8]| f64::from_bits(u64::from_be_bytes(b));
        let bw_peak = pd(get(d(mine.bw_peak), "report bw_peak")?);
        let bw_avg = pd(get(d(mine.bw_avg), "report bw_avg")?);
        let msg_rate = pd(get(d(mine.msg_rate), "report msgRate")?);
        Ok(BwReport { size, iters, bw_peak, bw_avg, msg_rate })
    }
}

fn trace(client: bool, what: &str, got: &[u8]) {
    if std::env::var_os("SOFTRDMA_OOB_TRACE").is_some() {
        let end = got.iter().position(|&b| b == 0).unwrap_or(got.len()).min(60);
        eprintln!(
            "oob {}: {what}: got {} bytes {:?}",
            if client { "client" } else { "server" },
            got.len(),
            String::from_utf8_lossy(&got[..end])
        );
    }
}

/// `enum ibv_mtu`.
pub fn mtu_code(m: Mtu) -> u8 {
    match m.bytes() {
        256 => 1,
        512 => 2,
        1024 => 3,
        2048 => 4,
        _ => 5,
    }
}

fn mtu_from_code(c: u8) -> Mtu {
    Mtu::from_bytes(128usize << c).unwrap_or(Mtu::M1024)
}

fn random_psn() -> u32 {
    let mut b = [0u8; 4];
    if std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut b)).is_err() {
        b = (std::process::id() ^ 0x5a5a5a).to_le_bytes();
    }
    u32::from_le_bytes(b) & 0xff_ffff
}

/// What the perftest-mode run needs to know.
#[derive(Debug, Clone)]
pub struct OobConfig {
    pub test: Test,
    /// RC, UC (write_bw, send_bw) or UD (send_bw).
    pub conn: QpType,
    pub size: usize,
    pub iters: u64,
    pub mtu: Mtu,
    pub gid_idx: u32,
    pub tx_depth: u32,
    pub rx_depth: u32,
    pub timeout: u8,
    /// atomic_bw: compare-and-swap instead of fetch-and-add.
    pub cmp_swap: bool,
    /// Give up when nothing happens for this long.
    pub stall: Duration,
}

/// What a run did.
#[derive(Debug, Clone, Default)]
pub struct OobResult {
    pub peer_version: String,
    pub mtu: usize,
    pub local: Dest,
    pub remote: Dest,
    pub completions: u64,
    pub elapsed: Duration,
    /// The client's report, as the server received it.
    pub report: BwReport,
    /// What was checked in softrdma's memory, and whether it held.
    pub check: String,
    pub check_ok: bool,
    /// How the device's TAP took its frames after the run (`uso`, `csum`,
    /// `off`; empty where no TAP was involved).
    pub offload: &'static str,
}

fn ck<E: std::fmt::Display>(what: &'static str) -> impl Fn(E) -> String {
    move |e| format!("{what}: {e}")
}

/// Runs one perftest-mode test over the accepted (server) or connected
/// (client) socket `s`, on device context `ctx`.
pub fn run(ctx: &Arc<dyn Context>, cfg: &OobConfig, s: TcpStream, client: bool) -> Res<OobResult> {
    let t = cfg.test;
    if !t.is_bw() && !matches!(t, Test::ReadLat | Test::SendLat | Test::WriteLat) {
        return Err(
            "perftest TCP mode: only write_bw, read_bw, send_bw, atomic_bw, read_lat, send_lat and write_lat".into()
        );
    }
    // The latency tests (perftest's read_lat.c, send_lat.c, write_lat.c): the same exchange,
    // the barrier after RTR and two more before the test; no report after it, both go
    // straight to the closing barrier.
    let lat = matches!(t, Test::ReadLat | Test::SendLat | Test::WriteLat);
    let size = if t == Test::AtomicBw { 8 } else { cfg.size.max(1) };
    let conn = cfg.conn;
    match (conn, t) {
        (QpType::Rc, _) | (QpType::Uc, Test::WriteBw | Test::SendBw) | (QpType::Ud, Test::SendBw) => {}
        _ => return Err(format!("perftest TCP mode: {t:?} over {conn:?} is not supported")),
    }
    if conn == QpType::Ud && size > cfg.mtu.bytes() {
        return Err(format!("UD: size {size} > MTU {}", cfg.mtu.bytes()));
    }
    // UD receive buffers start with the 40-byte GRH area (perftest's UD_ADDITION).
    let grh = if conn == QpType::Ud { 40usize } else { 0 };
    let mut oob = Oob::new(s, client, cfg.stall)?;
    // perftest sleeps a second after connecting; nothing depends on it here.
    let (peer_version, mtu) = oob.preamble(cfg.mtu)?;

    let dev = ctx.query_device();
    let out_reads = dev.max_qp_rd_atom.clamp(1, 16);
    let pd = ctx.alloc_pd().map_err(ck("alloc_pd"))?;
    let cq = ctx.create_cq(cfg.tx_depth + cfg.rx_depth + 16).map_err(ck("create_cq"))?;
    // A buffer as perftest's: twice the larger of the message and the cycle
    // buffer, so a peer cycling through its own layout stays inside ours.
    let buf_len = (2 * size.max(CYCLE_BUFFER as usize)).div_ceil(64) * 64 + 4096;
    let mr = pd.reg_mr(buf_len, AccessFlags::all()).map_err(ck("reg_mr"))?;
    // write_lat: as perftest, each side sends from the start of its buffer and advertises
    // (and polls) a receive area one BUFF_SIZE (the larger of the message and the cycle
    // buffer) further on; the other tests advertise the start.
    let rx_off = if t == Test::WriteLat { size.max(CYCLE_BUFFER as usize).div_ceil(64) * 64 } else { 0 };
    mr.write(0, &vec![0u8; buf_len]).map_err(ck("mr write"))?;
    let pattern = crate::perf::pattern(buf_len, 0x3c);
    if !client && matches!(t, Test::ReadBw | Test::ReadLat) {
        // What the peer reads: a known pattern.
        mr.write(0, &pattern).map_err(ck("mr write"))?;
    }
    let qp = pd
        .create_qp(&QpInitAttr {
            qp_type: conn,
            send_cq: cq.clone(),
            recv_cq: cq.clone(),
            srq: None,
            cap: QpCap {
                max_send_wr: cfg.tx_depth,
                max_recv_wr: cfg.rx_depth,
                max_send_sge: 1,
                max_recv_sge: 1,
                max_inline_data: 0,
            },
            sq_sig_all: false,
        })
        .map_err(ck("create_qp"))?;
    let co = ConnectOptions { sgid_index: cfg.gid_idx as u8, mtu, timeout: cfg.timeout, ..Default::default() };
    to_init(&qp, &co).map_err(ck("RESET->INIT"))?;
    let gid = ctx.query_gid(1, cfg.gid_idx).map_err(ck("query_gid"))?;
    let my = Dest {
        lid: 0,
        out_reads,
        qpn: qp.qp_num(),
        psn: random_psn(),
        rkey: mr.rkey(),
        vaddr: mr.addr() + rx_off as u64,
        gid,
        srqn: 0,
    };
    let rem = oob.hand_shake(&my, "dest exchange")?;
    let v4 = |g: &Gid| g.0[..10].iter().all(|&b| b == 0) && g.0[10] == 0xff && g.0[11] == 0xff;
    if v4(&my.gid) != v4(&rem.gid) {
        return Err("Found Incompatibility issue with GID types (IPv4 vs IPv6 GID)".into());
    }
    // ctx_connect: RTR then RTS.
    let mut ah = AhAttr::new(rem.gid, cfg.gid_idx as u8);
    ah.hop_limit = 0xff;
    let rd = matches!(t, Test::ReadBw | Test::AtomicBw | Test::ReadLat);
    let mut ud_ah = None;
    let rtr = QpAttr {
        qp_state: QpState::Rtr,
        path_mtu: mtu,
        dest_qp_num: rem.qpn,
        rq_psn: rem.psn,
        max_dest_rd_atomic: if rd { out_reads as u8 } else { 1 },
        min_rnr_timer: 12,
        ..QpAttr::default()
    };
    // UC/RC carry the path; UD only changes state (the AH goes with each send).
    let path = if conn == QpType::Ud { QpPath::default() } else { QpPath { ah: Some(ah) } };
    qp.modify(&rtr, required(conn, QpState::Init, QpState::Rtr), path).map_err(ck("INIT->RTR"))?;
    let rts = QpAttr {
        qp_state: QpState::Rts,
        sq_psn: my.psn,
        timeout: cfg.timeout,
        retry_cnt: 7,
        rnr_retry: 7,
        max_rd_atomic: if rd { rem.out_reads.clamp(1, out_reads) as u8 } else { 1 },
        ..rtr
    };
    qp.modify(&rts, required(conn, QpState::Rtr, QpState::Rts), QpPath::default()).map_err(ck("RTR->RTS"))?;
    if conn == QpType::Ud {
        ud_ah = Some(pd.create_ah(&ah).map_err(ck("create_ah"))?);
    }

    let mut res = OobResult { peer_version, mtu: mtu.bytes(), local: my, remote: rem, ..Default::default() };
    let recv_len = (size + grh) as u32;
    let recv_wr =
        |id: u64| RecvWr { wr_id: id, sg_list: vec![Sge { addr: mr.addr(), length: recv_len, lkey: mr.lkey() }] };
    if (t == Test::SendBw && !client) || t == Test::SendLat {
        let n = cfg.rx_depth.min(cfg.iters.max(1) as u32);
        let wrs: Vec<RecvWr> = (0..n as u64).map(recv_wr).collect();
        qp.post_recv(&wrs).map_err(|(_, e)| format!("post_recv: {e}"))?;
    }
    // The barrier after RTR (send_bw: after the server's receives are posted).
    oob.hand_shake(&my, "sync after RTR")?;
    if client {
        let extra: usize = std::env::var("SOFTRDMA_OOB_PRE_SYNCS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(if t == Test::SendBw || lat { 2 } else { 1 });
        for _ in 0..extra {
            oob.hand_shake(&my, "sync before the test")?;
        }
    }

    let start = Instant::now();
    if t == Test::SendLat {
        // Ping-pong: the client sends and waits for the answer; the server answers each
        // message it receives. Receives are reposted one per completion.
        let n = cfg.iters.max(1);
        let mut posted = cfg.rx_depth.min(n as u32) as u64;
        let (mut sent, mut got) = (0u64, 0u64);
        let mut last = Instant::now();
        let send = |id: u64| {
            let mut wr = SendWr::new(
                id,
                SendOp::Send,
                vec![Sge { addr: mr.addr() + 8192, length: size as u32, lkey: mr.lkey() }],
            );
            wr.flags = SendFlags::SIGNALED;
            qp.post_send(&[wr], None).map_err(|(k, e)| format!("post_send[{k}]: {e}"))
        };
        mr.write(8192, &pattern[..size]).map_err(ck("mr write"))?;
        if !client {
            // The two barriers the client does before it starts (perftest's latency main).
            for _ in 0..2 {
                oob.hand_shake(&my, "sync before the test")?;
            }
        }
        if client {
            send(0)?;
            sent = 1;
        }
        while got < n || sent < n {
            let wcs = cq.wait(16, Duration::from_millis(50));
            if wcs.is_empty() && last.elapsed() > cfg.stall {
                return Err(format!("no completion for {:?}: {sent} sent, {got} received", cfg.stall));
            }
            for wc in &wcs {
                if wc.status != WcStatus::Success {
                    return Err(format!("completion {} ({:?})", wc.status.as_str(), wc.status));
                }
                last = Instant::now();
                if wc.opcode == verbs_api::WcOpcode::Recv {
                    if wc.byte_len as usize != size {
                        return Err(format!("received {} bytes, want {size}", wc.byte_len));
                    }
                    got += 1;
                    if posted < n {
                        qp.post_recv(&[recv_wr(posted)]).map_err(|(_, e)| format!("post_recv: {e}"))?;
                        posted += 1;
                    }
                    if sent < n {
                        send(sent)?;
                        sent += 1;
                    }
                }
            }
        }
        res.completions = got;
        res.elapsed = start.elapsed();
        let mut b = vec![0u8; size];
        mr.read(0, &mut b).map_err(ck("mr read"))?;
        let nz = b.iter().filter(|&&x| x != 0).count();
        res.check_ok = got == n && nz > 0;
        res.check = format!("{got} of {n} messages of {size} bytes received, {sent} sent; last: {nz}/{size} non-zero");
        if client {
            let _ = oob.hand_shake(&my, "close");
        } else {
            let _ = oob.answer_hand_shakes(&my, true, "close");
        }
    } else if t == Test::WriteLat {
        // perftest's run_iter_lat_write: each side RDMA WRITEs `size` bytes from the start
        // of its buffer to the peer's advertised address, the last byte set to its send
        // count (as a char), and spins on the last byte of its own receive area until it
        // holds its receive count. The server sends first (its first poll is skipped), the
        // client waits first; each side waits for the completion of its write before
        // polling again. perftest zeroes its buffer for write_lat (the others get rand()),
        // so what it sends is size - 1 zero bytes and the count; softrdma sends its pattern.
        let n = cfg.iters.max(1);
        let last = size - 1;
        if !client {
            // The two barriers the client does before it starts (perftest's latency main).
            for _ in 0..2 {
                oob.hand_shake(&my, "sync before the test")?;
            }
        }
        mr.write(0, &pattern[..size]).map_err(ck("mr write"))?;
        let (mut sent, mut got, mut done) = (0u64, 0u64, 0u64);
        while sent < n || got < n || done < n {
            // The server skips its first poll: it writes first.
            if got < n && (client || sent > 0) {
                got += 1;
                wait_byte(&*mr, rx_off + last, got as u8, cfg.stall)
                    .map_err(|e| format!("{e}: waiting for write {got} of {n} ({sent} sent)"))?;
            }
            if sent < n {
                sent += 1;
                mr.write(last, &[sent as u8]).map_err(ck("mr write"))?;
                let mut wr = SendWr::new(
                    sent,
                    SendOp::RdmaWrite { remote_addr: rem.vaddr, rkey: rem.rkey },
                    vec![Sge { addr: mr.addr(), length: size as u32, lkey: mr.lkey() }],
                );
                wr.flags = SendFlags::SIGNALED;
                qp.post_send(&[wr], None).map_err(|(k, e)| format!("post_send[{k}]: {e}"))?;
            }
            if done < n {
                let t0 = Instant::now();
                let wc = loop {
                    if let Some(wc) = cq.wait(1, Duration::from_millis(50)).into_iter().next() {
                        break wc;
                    }
                    if t0.elapsed() > cfg.stall {
                        return Err(format!("no completion for {:?}: {sent} sent, {done} completed", cfg.stall));
                    }
                };
                if wc.status != WcStatus::Success {
                    return Err(format!("completion {} ({:?}) for write {}", wc.status.as_str(), wc.status, wc.wr_id));
                }
                done += 1;
            }
        }
        res.completions = done;
        res.elapsed = start.elapsed();
        // The whole buffer: the source as written (the pattern, its last byte the final
        // count); the receive area holding exactly the peer's last message — the final
        // count after either perftest's size - 1 zero bytes or softrdma's pattern, nothing
        // else; zero everywhere else (the peer wrote `size` bytes at the advertised
        // address and nothing around it).
        let mut b = vec![0u8; buf_len];
        mr.read(0, &mut b).map_err(ck("mr read"))?;
        let mut want_src = pattern[..size].to_vec();
        want_src[last] = n as u8;
        let src_ok = b[..size] == want_src[..];
        let rx = &b[rx_off..rx_off + size];
        let body = if rx[..last].iter().all(|&x| x == 0) {
            Some("perftest's zeroed buffer")
        } else if rx[..last] == pattern[..last] {
            Some("softrdma's pattern")
        } else {
            None
        };
        let rx_ok = rx[last] == n as u8 && body.is_some();
        let rest_zero = b[size..rx_off].iter().chain(&b[rx_off + size..]).all(|&x| x == 0);
        res.check_ok = got == n && done == n && src_ok && rx_ok && rest_zero;
        res.check = format!(
            "{got} of {n} writes received (last byte = count each time), {done} sent and completed; \
             source intact: {src_ok}; receive area: last byte {:#04x} (want {:#04x}) after {}; \
             nothing written outside it: {rest_zero}",
            rx[last],
            n as u8,
            body.unwrap_or("bytes that are neither perftest's zeros nor softrdma's pattern"),
        );
        if client {
            let _ = oob.hand_shake(&my, "close");
        } else {
            let _ = oob.answer_hand_shakes(&my, true, "close");
        }
    } else if client {
        // The active side: `iters` operations, at most tx_depth outstanding, each signalled.
        let op = |i: u64| match t {
            Test::WriteBw => SendOp::RdmaWrite { remote_addr: rem.vaddr, rkey: rem.rkey },
            Test::ReadBw | Test::ReadLat => SendOp::RdmaRead { remote_addr: rem.vaddr, rkey: rem.rkey },
            Test::AtomicBw if cfg.cmp_swap => {
                SendOp::AtomicCmpSwp { remote_addr: rem.vaddr, rkey: rem.rkey, compare: i, swap: i + 1 }
            }
            Test::AtomicBw => SendOp::AtomicFetchAdd { remote_addr: rem.vaddr, rkey: rem.rkey, add: 1 },
            _ => SendOp::Send,
        };
        let n = cfg.iters.max(1);
        let depth = if lat { 1 } else { cfg.tx_depth.max(1) as u64 };
        let (mut posted, mut done) = (0u64, 0u64);
        let mut last = Instant::now();
        if t == Test::WriteBw || t == Test::SendBw {
            mr.write(0, &pattern[..size]).map_err(ck("mr write"))?;
        }
        while done < n {
            let mut batch = Vec::new();
            while posted < n && posted - done < depth && batch.len() < 32 {
                let mut wr = SendWr::new(
                    posted,
                    op(posted),
                    vec![Sge { addr: mr.addr(), length: size as u32, lkey: mr.lkey() }],
                );
                wr.flags = SendFlags::SIGNALED;
                if conn == QpType::Ud {
                    wr.remote_qpn = rem.qpn;
                    wr.remote_qkey = 0x1111_1111;
                }
                batch.push(wr);
                posted += 1;
            }
            if !batch.is_empty() {
                qp.post_send(&batch, ud_ah.as_ref()).map_err(|(k, e)| format!("post_send[{k}]: {e}"))?;
            }
            let wcs = cq.wait(64, Duration::from_millis(50));
            if wcs.is_empty() && last.elapsed() > cfg.stall {
                return Err(format!("no completion for {:?}: {posted} posted, {done} completed", cfg.stall));
            }
            for wc in &wcs {
                if wc.status != WcStatus::Success {
                    return Err(format!(
                        "completion {} ({:?}) for operation {}",
                        wc.status.as_str(),
                        wc.status,
                        wc.wr_id
                    ));
                }
                done += 1;
                last = Instant::now();
            }
        }
        res.completions = done;
        res.elapsed = start.elapsed();
        let secs = res.elapsed.as_secs_f64().max(1e-9);
        let mbs = (done * size as u64) as f64 / secs / (1 << 20) as f64;
        let rep =
            BwReport { size: size as u64, iters: n, bw_peak: mbs, bw_avg: mbs, msg_rate: done as f64 / secs / 1e6 };
        res.report = rep;
        // Check what is ours to check.
        match t {
            Test::ReadBw | Test::ReadLat => {
                let mut got = vec![0u8; size];
                mr.read(0, &mut got).map_err(ck("mr read"))?;
                let nz = got.iter().filter(|&&b| b != 0).count();
                res.check_ok = nz > 0;
                res.check = format!("read buffer: {nz}/{size} bytes non-zero (perftest fills with rand())");
            }
            Test::AtomicBw => {
                let mut w = [0u8; 8];
                mr.read(0, &mut w).map_err(ck("mr read"))?;
                res.check_ok = true;
                res.check = format!("last fetched value {:#x}", u64::from_ne_bytes(w));
            }
            _ => {
                res.check_ok = true;
                res.check = format!("{done} completions, all successful");
            }
        }
        if t != Test::SendBw && !lat {
            // send_bw has neither this barrier nor a report: the server counts.
            oob.hand_shake(&my, "sync after the test")?;
            oob.bw_reports(&rep)?;
        }
        let _ = oob.hand_shake(&my, "close");
    } else {
        if t == Test::SendBw {
            // The passive side of send_bw receives `iters` messages.
            let n = cfg.iters.max(1);
            let mut got = 0u64;
            let mut posted = cfg.rx_depth.min(n as u32) as u64;
            let mut last = Instant::now();
            // Barriers answered here: the client's two before it sends, then (UC/UD) its
            // closing one once it has sent everything; what was lost stays lost, so after
            // that the receive side only drains what is still on its way.
            let (mut barriers, mut closed) = (0usize, None::<Instant>);
            while got < n {
                let wcs = cq.wait(64, Duration::from_millis(50));
                if wcs.is_empty() {
                    if let Some(at) = closed {
                        if at.elapsed() > Duration::from_millis(500) {
                            break;
                        }
                        continue;
                    }
                    // A client may hold a barrier before it sends.
                    barriers += oob.answer_hand_shakes(&my, false, "sync during the test")?;
                    if barriers >= 3 && conn != QpType::Rc {
                        closed = Some(Instant::now());
                        continue;
                    }
                }
                if wcs.is_empty() && last.elapsed() > cfg.stall {
                    return Err(format!("no message for {:?}: {got} of {n} received", cfg.stall));
                }
                for wc in &wcs {
                    if wc.status != WcStatus::Success {
                        return Err(format!("receive completion {} ({:?})", wc.status.as_str(), wc.status));
                    }
                    if wc.byte_len as usize != size + grh {
                        return Err(format!("received {} bytes, want {size}", wc.byte_len));
                    }
                    got += 1;
                    last = Instant::now();
                    if closed.is_some() {
                        closed = Some(last);
                    }
                    if posted < n {
                        qp.post_recv(&[recv_wr(posted)]).map_err(|(_, e)| format!("post_recv: {e}"))?;
                        posted += 1;
                    }
                }
            }
            res.completions = got;
            res.elapsed = start.elapsed();
            let mut b = vec![0u8; size];
            mr.read(grh, &mut b).map_err(ck("mr read"))?;
            let nz = b.iter().filter(|&&x| x != 0).count();
            res.check_ok = nz > 0 && got > 0;
            res.check = format!("{got} of {n} messages of {size} bytes received; last: {nz}/{size} bytes non-zero");
            if closed.is_none() {
                let _ = oob.answer_hand_shakes(&my, true, "close");
            }
        } else if lat {
            // read_lat: the client's pre-test barriers, then its closing one once it has
            // read (ctx_close_connection: a barrier, then "done\0" and the socket closes).
            let _ = oob.answer_hand_shakes(&my, true, "close");
            res.elapsed = start.elapsed();
            let mut b = vec![0u8; buf_len];
            mr.read(0, &mut b).map_err(ck("mr read"))?;
            res.check_ok = b == pattern;
            res.check = format!("source buffer unchanged: {}", res.check_ok);
        } else {
            // One-sided: answer the client's barriers until its report comes.
            let n = oob.answer_hand_shakes(&my, true, "sync after the test")?;
            if n == 0 {
                return Err("the client sent its report without a barrier".into());
            }
            res.elapsed = start.elapsed();
            res.report = oob.bw_reports(&BwReport::default())?;
            let _ = oob.answer_hand_shakes(&my, true, "close");
            match t {
                Test::WriteBw => {
                    let mut b = vec![0u8; size];
                    mr.read(0, &mut b).map_err(ck("mr read"))?;
                    let nz = b.iter().filter(|&&x| x != 0).count();
                    res.check_ok = nz > 0;
                    res.check =
                        format!("first message slot: {nz}/{size} bytes non-zero (was zeroed; perftest sends rand())");
                }
                Test::ReadBw => {
                    let mut b = vec![0u8; buf_len];
                    mr.read(0, &mut b).map_err(ck("mr read"))?;
                    res.check_ok = b == pattern;
                    res.check = format!("source buffer unchanged: {}", res.check_ok);
                }
                _ => {
                    // Fetch-and-add of 1 per operation (warm-up included) on
                    // words of a zeroed buffer: the words sum to the count.
                    let mut b = vec![0u8; buf_len];
                    mr.read(0, &mut b).map_err(ck("mr read"))?;
                    let sum: u64 = b
                        .chunks(8)
                        .map(|c| u64::from_le_bytes(c.try_into().unwrap_or([0; 8])))
                        .fold(0, u64::wrapping_add);
                    let words = b.chunks(8).filter(|c| c.iter().any(|&x| x != 0)).count();
                    if cfg.cmp_swap {
                        res.check_ok = true;
                        res.check = format!(
                            "{words} non-zero words after CMP_AND_SWAP (not checked: the swap values are the peer's)"
                        );
                    } else {
                        res.check_ok = sum >= res.report.iters && res.report.iters > 0;
                        res.check = format!(
                            "sum of counters {sum} >= the client's {} iterations: {}",
                            res.report.iters, res.check_ok
                        );
                    }
                }
            }
        }
    }
    let _ = qp.destroy();
    Ok(res)
}

/// Spins until byte `off` of `mr` holds `want` (perftest's poll on the last byte of the
/// receive buffer), yielding the CPU between reads and sleeping briefly once it has
/// waited a while, so the device's threads on the same cores keep running.
fn wait_byte(mr: &dyn verbs_api::Mr, off: usize, want: u8, stall: Duration) -> Res<()> {
    let t = Instant::now();
    let mut b = [0u8; 1];
    let mut spins = 0u32;
    loop {
        mr.read(off, &mut b).map_err(ck("mr read"))?;
        if b[0] == want {
            return Ok(());
        }
        spins = spins.wrapping_add(1);
        if spins < 2000 {
            std::thread::yield_now();
        } else {
            std::thread::sleep(Duration::from_micros(20));
            if spins.is_multiple_of(1024) && t.elapsed() > stall {
                return Err(format!("byte {off:#x} is {:#04x}, not {want:#04x}, after {stall:?}", b[0]));
            }
        }
    }
}

/// Where softrdma's device of a perftest-mode run lives.
#[derive(Debug, Clone, Default)]
pub struct DevPlace {
    pub netns: Option<String>,
    pub tap: String,
    pub bridge: Option<String>,
    pub addrs: Vec<String>,
    pub mac: Option<String>,
    pub link_mtu: usize,
    /// Virtio-net headers and UDP GSO runs on the TAP (`TapConfig::vnet_hdr`).
    pub offload: bool,
}

/// Runs `softrdma-perf TEST server|client HOST` against a perftest peer:
/// starts a device on a TAP (as `softrdma pingpong` does), opens the socket
/// in the namespace, runs the test, stops the device.
pub fn run_cli(cfg: &OobConfig, place: &DevPlace, host: Option<&str>, port: u16, wait: Duration) -> Res<OobResult> {
    use softrdma::pingpong::{accept, connect, listen};
    if place.addrs.is_empty() {
        return Err("give the device's address(es) with --addr CIDR".into());
    }
    let addrs = place.addrs.iter().map(|s| parse_cidr(s)).collect::<Res<Vec<_>>>()?;
    let mut tc = match &place.netns {
        Some(ns) => TapConfig::in_netns(ns.clone(), place.tap.clone()),
        None => TapConfig::new(place.tap.clone()),
    };
    tc.mac = place.mac.as_deref().map(parse_mac).transpose()?;
    tc.mtu = place.link_mtu;
    tc.vnet_hdr = place.offload;
    let link = open_tap(&tc).map_err(|e| format!("TAP {}: {e}", place.tap))?;
    if let Some(br) = &place.bridge {
        netns::enslave(place.netns.as_deref(), &place.tap, br).map_err(|e| e.to_string())?;
    }
    let dev = Device::start(crate::fabric::device_config("srd0", addrs), link).map_err(|e| format!("device: {e}"))?;
    let ctx = dev.context();
    let ns = match &place.netns {
        Some(n) => Some(NetNs::open(n).map_err(|e| e.to_string())?),
        None => None,
    };
    let sock = (|| -> io::Result<TcpStream> {
        match host {
            None => {
                let l = match &ns {
                    Some(ns) => ns.run_in(|| listen(port))??,
                    None => listen(port)?,
                };
                accept(&l, wait)
            }
            Some(h) => match &ns {
                Some(ns) => ns.run_in(|| connect(h, port, wait))?,
                None => connect(h, port, wait),
            },
        }
    })()
    .map_err(|e| format!("TCP: {e}"));
    let r = sock.and_then(|s| run(&ctx, cfg, s, host.is_some()));
    let offload = dev.offload().as_str();
    dev.shutdown();
    r.map(|r| OobResult { offload, ..r })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dest_message_is_perftest_key_print_fmt_gid() {
        let d = Dest {
            lid: 0,
            out_reads: 0x10,
            qpn: 0x11,
            psn: 0xabcdef,
            rkey: 0x1234,
            vaddr: 0x7f00_0000_1000,
            gid: Gid::from_ipv4("10.77.0.21".parse().unwrap()),
            srqn: 0,
        };
        let m = d.to_msg();
        let s = std::str::from_utf8(&m[..107]).unwrap();
        assert_eq!(
            s,
            "0000:0010:000011:abcdef:00001234:00007f0000001000:00:00:00:00:00:00:00:00:00:00:ff:ff:0a:4d:00:15:00000000:"
        );
        assert_eq!(m[107], 0);
        assert_eq!(Dest::parse(&m).unwrap(), d);
    }

    #[test]
    fn two_softrdma_ends_over_loopback() {
        use softrdma::backend::memory::{Fabric, Faults};
        let _ = Faults::default();
        let f = Fabric::new();
        let mk = |i: usize| {
            let cfg = crate::fabric::device_config(&format!("oob{i}"), vec![(crate::fabric::addr(i), 16)]);
            Device::start(cfg, f.attach(crate::fabric::mac(i), 1500)).unwrap()
        };
        let (da, db) = (mk(0), mk(1));
        for (t, cas, conn, size) in [
            (Test::WriteBw, false, QpType::Rc, 20000),
            (Test::ReadBw, false, QpType::Rc, 20000),
            (Test::SendBw, false, QpType::Rc, 20000),
            (Test::AtomicBw, false, QpType::Rc, 8),
            (Test::AtomicBw, true, QpType::Rc, 8),
            (Test::WriteBw, false, QpType::Uc, 20000),
            (Test::SendBw, false, QpType::Ud, 1024),
            (Test::ReadLat, false, QpType::Rc, 20000),
            (Test::SendLat, false, QpType::Rc, 20000),
            (Test::WriteLat, false, QpType::Rc, 20000),
            (Test::WriteLat, false, QpType::Rc, 1001),
        ] {
            let cfg = OobConfig {
                test: t,
                conn,
                size,
                iters: 200,
                mtu: Mtu::M1024,
                gid_idx: 1,
                tx_depth: 32,
                rx_depth: 64,
                timeout: 14,
                cmp_swap: cas,
                stall: Duration::from_secs(10),
            };
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let port = l.local_addr().unwrap().port();
            let (ca, cb) = (da.context(), db.context());
            let (s, c) = std::thread::scope(|sc| {
                let h = sc.spawn(|| {
                    let (s, _) = l.accept().unwrap();
                    run(&ca, &cfg, s, false)
                });
                let c = run(&cb, &cfg, TcpStream::connect(("127.0.0.1", port)).unwrap(), true);
                (h.join().unwrap(), c)
            });
            let (s, c) = match (s, c) {
                (Ok(s), Ok(c)) => (s, c),
                (s, c) => panic!("{t:?} {conn:?}: server {:?} client {:?}", s.err(), c.err()),
            };
            assert!(s.check_ok, "{t:?} server: {}", s.check);
            assert!(c.check_ok, "{t:?} client: {}", c.check);
            assert_eq!(c.completions, 200);
            if t.is_bw() && t != Test::SendBw {
                assert_eq!(s.report.iters, 200);
            }
        }
        da.shutdown();
        db.shutdown();
    }
}
