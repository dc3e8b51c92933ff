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
//!    wire with perftest 6.06 and `-q 2`: write/read/atomic exchange every
//!    QP's dest message again, then one barrier (the first QP's message)
//!    before the client starts and one after it is done; send_bw and the
//!    latency tests (`*_lat`) a barrier, every QP's message again, and one
//!    more barrier before the test (send_bw's server posts its receives
//!    first), none after;
//! 6. the server (passive for write/read/atomic; the receiver for send_bw)
//!    answers the repeated messages each with its own QP's, and every
//!    barrier after them as it comes; softrdma's server recognizes barriers
//!    by their first byte (a hex digit, where a report starts with the zero
//!    high byte of a big-endian size);
//! 7. write/read/atomic: after the last barrier the client's report goes to
//!    the server (size, iterations: u64 big-endian; BW peak, BW average,
//!    message rate: doubles with their bytes swapped), each as its own xchg;
//!    send_bw and the latency tests have no report;
//! 8. a last dest message is exchanged (`ctx_close_connection`) and the
//!    socket closed.
//!
//! With `-b` (perftest's duplex, the bandwidth tests only) both ends run the
//! same steps, so the server does every barrier as the client does, none
//! answered ad hoc: write/read/atomic add one barrier before the test and
//! drop the one after it; send_bw has the same barriers as without `-b`.
//! Both ends post their requests (send_bw: both post receives before the
//! barrier after RTR, and send), then exchange their reports (step 7, both
//! ways) and each prints the sum of the two, as perftest's
//! `print_full_bw_report` adds the peer's rates to its own. As perftest
//! lays its buffer out, each end then sends from the first half of its
//! buffer and advertises the second half, so what its peer writes, reads or
//! adds to never meets what its own requests fetch.
//!
//! With `-q N` (bandwidth tests) every QP runs `iters` operations on its own
//! slot of the buffer, and a report counts the iterations of all of them,
//! as perftest's does (`-q 2 -n 1000` reports 2000).
//!
//! `-a` (write_bw, read_bw) runs every size from 2 bytes to 8 MiB with
//! nothing exchanged between sizes, as perftest's RUN_ALL does without
//! `-b`; the client prints a row per size and sends the last size's report.
//! send_bw's `-a` (and every test's under `-b`) has a barrier before and
//! after each size. Over UC and UD softrdma's receiver takes the sender's
//! barrier after a size as its end, so a size that lost messages reports
//! what arrived and the run goes on; perftest's own receiver waits 60–120 s
//! for the lost message instead (`check_alive`), then ends the run: it
//! answers one more barrier and sends "done", or (6.06) exits
//! (`Oob::barrier_unless_ended`).
//! `-D` (write/read/atomic) lets the client post for that long, then
//! collect what is outstanding; its report counts what completed. Neither
//! changes what a passive server does.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use softrdma::args::{parse_cidr, parse_mac};
use softrdma::backend::netns::{self, NetNs};
use softrdma::backend::tap::{open_tap, TapConfig};
use softrdma::device::Device;
use verbs_api::{Gid, Mtu, QpType};

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

impl BwReport {
    /// `count` messages of `size` bytes in `took`, as perftest reports them:
    /// MB/s of 2^20 bytes (peak and average alike: one window), Mpps.
    pub fn measured(size: usize, count: u64, took: std::time::Duration) -> BwReport {
        let secs = took.as_secs_f64().max(1e-9);
        let mbs = (count * size as u64) as f64 / secs / (1 << 20) as f64;
        BwReport { size: size as u64, iters: count, bw_peak: mbs, bw_avg: mbs, msg_rate: count as f64 / secs / 1e6 }
    }
}

/// The socket and which end of it this is.
pub struct Oob {
    pub s: TcpStream,
    pub client: bool,
    /// How long a read waits, unless a step says otherwise.
    timeout: Duration,
}

/// What perftest's `ctx_close_connection` sends after its last barrier.
const DONE: &[u8; 4] = b"done";

/// How a barrier the receiver may have ended the run at went
/// (`Oob::barrier_unless_ended`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Barrier {
    Answered(Dest),
    /// The receiver had ended the run and said "done" (perftest after 6.06).
    Done,
    /// The receiver had closed the connection (perftest 6.06 exits).
    Closed,
}

impl Oob {
    pub fn new(s: TcpStream, client: bool, timeout: Duration) -> Res<Oob> {
        s.set_nodelay(true).map_err(|e| format!("TCP_NODELAY: {e}"))?;
        s.set_read_timeout(Some(timeout)).map_err(|e| format!("socket timeout: {e}"))?;
        Ok(Oob { s, client, timeout })
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

    /// The client's barrier where the receiver may have ended the run, as
    /// perftest's send_bw receiver over UC or UD does on a size that lost a
    /// message (`check_alive`: nothing new for 60–120 s): perftest 6.06
    /// exits (its socket closes, or resets over the barrier it left
    /// unread); later versions answer the barrier after that size, one
    /// more in `ctx_close_connection`, and then send "done" where the next
    /// answer would be. `wait` allows for that timer.
    pub fn barrier_unless_ended(&mut self, my: &Dest, wait: Duration, what: &str) -> Res<Barrier> {
        // The "done" came right after the answer to the previous barrier:
        // seen here, no write goes to a socket the peer has closed.
        if self.done_waiting()? {
            return Ok(Barrier::Done);
        }
        let closed = |e: &io::Error| {
            matches!(
                e.kind(),
                io::ErrorKind::UnexpectedEof | io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe
            )
        };
        match self.s.write_all(&my.to_msg()) {
            Err(e) if closed(&e) => return Ok(Barrier::Closed),
            r => r.map_err(|e| format!("{what}: write: {e}"))?,
        }
        let mut r = [0u8; DEST_LEN];
        let got = self.with_wait(wait, |o| {
            Ok(match o.s.read_exact(&mut r[..DONE.len()]) {
                Ok(()) if r[..DONE.len()] == DONE[..] => Ok(None),
                Ok(()) => o.s.read_exact(&mut r[DONE.len()..]).map(|()| Some(())),
                Err(e) => Err(e),
            })
        })?;
        match got {
            Ok(None) => Ok(Barrier::Done),
            Err(e) if closed(&e) => Ok(Barrier::Closed),
            Err(e) => Err(format!("{what}: read: {e}")),
            Ok(Some(())) => {
                trace(self.client, what, &r);
                Dest::parse(&r).map(Barrier::Answered)
            }
        }
    }

    /// `f` with reads waiting up to `wait` (for a peer that may be slow to
    /// answer for a reason of its own), then the usual timeout again.
    pub fn with_wait<T>(&mut self, wait: Duration, f: impl FnOnce(&mut Self) -> Res<T>) -> Res<T> {
        self.s.set_read_timeout(Some(wait)).map_err(|e| format!("socket timeout: {e}"))?;
        let r = f(self);
        self.s.set_read_timeout(Some(self.timeout)).map_err(|e| format!("socket timeout: {e}"))?;
        r
    }

    /// Whether the peer has closed the connection (read end, or reset).
    pub fn peer_gone(&mut self) -> bool {
        let mut b = [0u8; 1];
        match self.peek(&mut b, false) {
            Ok(n) => n == 0,
            Err(e) => e.kind() != io::ErrorKind::WouldBlock,
        }
    }

    /// What the peer has sent and this end not read, left unread; without
    /// `block`, `WouldBlock` when nothing is there yet.
    fn peek(&mut self, b: &mut [u8], block: bool) -> io::Result<usize> {
        self.s.set_nonblocking(!block)?;
        let r = self.s.peek(b);
        self.s.set_nonblocking(false)?;
        r
    }

    /// Whether perftest's "done" is waiting to be read.
    fn done_waiting(&mut self) -> Res<bool> {
        let mut b = [0u8; DONE.len()];
        match self.peek(&mut b, false) {
            Ok(n) => Ok(n == DONE.len() && b == *DONE),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(false),
            Err(e) => Err(format!("peek: {e}")),
        }
    }

    /// `ctx_close_connection`'s barrier, its failure ignored as the run is
    /// over: the client takes it, the server answers what comes until the
    /// socket closes.
    pub fn close(&mut self, my: &Dest) {
        let _ = match self.client {
            true => self.hand_shake(my, "close").map(|_| 1),
            false => self.answer_hand_shakes(my, true, "close"),
        };
    }

    /// Server: answers every dest message the client has sent (or, with
    /// `block`, sends next): a dest message starts with a hex digit (the
    /// LID), a report with the zero high byte of a big-endian size.
    /// Returns how many were answered.
    pub fn answer_hand_shakes(&mut self, my: &Dest, block: bool, what: &str) -> Res<usize> {
        self.answer_some(my, block, usize::MAX, what)
    }

    /// Server: answers the client's barrier if it has sent one, and no
    /// more: the client's next may belong to the next step.
    pub fn answer_hand_shake(&mut self, my: &Dest, what: &str) -> Res<bool> {
        Ok(self.answer_some(my, false, 1, what)? == 1)
    }

    fn answer_some(&mut self, my: &Dest, block: bool, most: usize, what: &str) -> Res<usize> {
        let mut n = 0;
        while n < most {
            let mut b = [0u8; 1];
            match self.peek(&mut b, block) {
                Ok(1) if b[0].is_ascii_hexdigit() => {
                    self.hand_shake(my, what)?;
                    n += 1;
                }
                Ok(_) => return Ok(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(n),
                Err(e) => return Err(format!("{what}: {e}")),
            }
        }
        Ok(n)
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

/// What the perftest-mode run needs to know.
#[derive(Debug, Clone)]
pub struct OobConfig {
    pub test: Test,
    /// RC, UC (write_bw, send_bw, write_lat, send_lat) or UD (send_bw, send_lat).
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
    /// perftest's `-b`: both ends send (bandwidth tests only).
    pub duplex: bool,
    /// perftest's `-q`: QPs, each with `iters` operations (bandwidth tests only).
    pub qps: u32,
    /// perftest's `-a`: every size from 2 bytes to 8 MiB (over UD to the MTU).
    pub all: bool,
    /// perftest's `-D`: run this long instead of `iters`. The requester of
    /// write_bw, read_bw, atomic_bw and send_bw posts until then (send_bw's
    /// receiver takes what comes until the sender's closing barrier); each
    /// end of a latency test stops on its own clock, as perftest's do.
    pub duration: Option<Duration>,
    /// perftest's `-e`: sleep on CQ events (`crate::events`). A local
    /// choice: nothing of it crosses the wire or the TCP exchange.
    pub events: bool,
}

/// What a run did.
#[derive(Debug, Clone, Default)]
pub struct OobResult {
    pub peer_version: String,
    pub mtu: usize,
    /// Each QP's message, this end's and the peer's.
    pub local: Vec<Dest>,
    pub remote: Vec<Dest>,
    pub completions: u64,
    pub elapsed: Duration,
    /// The peer's report: the client's, as the server received it, or
    /// under `-b` the other end's.
    pub report: BwReport,
    /// This end's own report, where it sent (a client, or either end under `-b`).
    pub mine: Option<BwReport>,
    /// Where it sent, a report per size (one, or with `-a` each size's).
    pub rows: Vec<BwReport>,
    /// Under `-b`: the peer's report of each size, as `rows`.
    pub peer_rows: Vec<BwReport>,
    /// A latency test's table, a row per size, where perftest prints one
    /// (both ends of write_lat and send_lat, read_lat's client), with
    /// perftest's statistics (`LatRow::perftest`).
    pub lat: Vec<crate::report::LatRow>,
    /// A latency test's row under `-D`, in perftest's form (`LatDurRow`).
    pub lat_dur: Option<crate::report::LatDurRow>,
    /// atomic_bw fetch-and-add under `-b`: what the peer's adds summed to here.
    pub added: Option<u64>,
    /// What was checked in softrdma's memory, and whether it held.
    pub check: String,
    pub check_ok: bool,
    /// How the device's TAP took its frames after the run (`uso`, `csum`,
    /// `off`; empty where no TAP was involved).
    pub offload: &'static str,
    /// CQ events this end slept on (`-e`).
    pub cq_events: Option<u64>,
    /// The device's counters after the run (`counted`; empty where the
    /// caller brought its own device).
    pub counted: String,
}

/// Whether a perftest-mode run of `cfg` is one softrdma can do; the reason if not.
pub fn validate(cfg: &OobConfig) -> Res<()> {
    let (t, conn) = (cfg.test, cfg.conn);
    if let Some(why) = cfg.events.then(|| crate::events::refusal(t, cfg.duration.is_some())).flatten() {
        return Err(format!("-e: {}", why.trim()));
    }
    if !t.is_bw() && !matches!(t, Test::ReadLat | Test::SendLat | Test::WriteLat) {
        return Err(
            "perftest TCP mode: only write_bw, read_bw, send_bw, atomic_bw, read_lat, send_lat and write_lat".into()
        );
    }
    match (conn, t) {
        (QpType::Rc, _)
        | (QpType::Uc, Test::WriteBw | Test::SendBw | Test::WriteLat | Test::SendLat)
        | (QpType::Ud, Test::SendBw | Test::SendLat) => {}
        _ => return Err(format!("perftest TCP mode: {t:?} over {conn:?} is not supported")),
    }
    if cfg.duplex && !t.is_bw() {
        return Err("-b: only write_bw, read_bw, send_bw and atomic_bw run both ways".into());
    }
    if cfg.qps == 0 || (cfg.qps > 1 && !t.is_bw()) {
        return Err("-q: 1 QP for the latency tests, 1 or more for the bandwidth tests".into());
    }
    let all_ok =
        matches!(t, Test::WriteBw | Test::ReadBw | Test::SendBw | Test::WriteLat | Test::ReadLat | Test::SendLat);
    if cfg.all && (!all_ok || cfg.duration.is_some() || (cfg.duplex && !t.is_bw())) {
        return Err(
            "-a in perftest TCP mode: write_bw, read_bw, send_bw, write_lat, read_lat and send_lat, without -D".into(),
        );
    }
    let size = if t == Test::AtomicBw { 8 } else { cfg.size.max(1) };
    // With -a the sizes end at the MTU over UD (perftest's too); -s does not count.
    if conn == QpType::Ud && !cfg.all && size > cfg.mtu.bytes() {
        return Err(format!("UD: size {size} > MTU {}", cfg.mtu.bytes()));
    }
    Ok(())
}

mod session;
pub use session::run;

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
    let counted = counted(&dev);
    dev.shutdown();
    match r {
        Ok(r) => Ok(OobResult { offload, counted, ..r }),
        // What the device saw is most of what there is to know of a failure.
        Err(e) => Err(format!("{e}\n device counters: {counted}")),
    }
}

/// The device's counters that tell how a run went on the wire: frames,
/// drops by reason, and the QPs' recovery (as `rdma statistic` lists them).
pub fn counted(dev: &Device) -> String {
    let (d, e, q) = dev.counters();
    let drops = e.rx_malformed
        + e.rx_icrc_err
        + e.rx_unknown_qp
        + e.rx_wrong_transport
        + e.rx_bad_pkey
        + e.rx_bad_qkey
        + e.rx_bad_jkey
        + e.rx_foreign_dgid
        + e.rx_spoofed_sgid;
    format!(
        "rx_frames {} (by polling {}, rescued {}, polling suspended {}) tx_frames {} tx_errors {} rx_dropped {drops} (icrc {} unknown_qp {}) \
         sent_pkts {} rcvd_pkts {} retransmitted_pkts {} local_ack_timeout_err {} completer_retry_err {} \
         rcvd_seq_err {} out_of_seq_request {} duplicate_request {} ignored_responses {} rnr_nak_rcvd {} \
         rnr_nak_sent {} retry_exceeded_err {}",
        d.rx_frames,
        d.rx_polled,
        d.rx_rescued,
        d.busy_poll_suspensions,
        d.tx_frames,
        d.tx_errors,
        e.rx_icrc_err,
        e.rx_unknown_qp,
        q.sent_pkts,
        q.rcvd_pkts,
        q.retransmitted_pkts,
        q.local_ack_timeout_err,
        q.completer_retry_err,
        q.rcvd_seq_err,
        q.out_of_seq_request,
        q.duplicate_request,
        q.ignored_responses,
        q.rcvd_rnr_err,
        q.send_rnr_err,
        q.retry_exceeded_err,
    )
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

    /// Two devices on one memory fabric.
    fn devices() -> (std::sync::Arc<Device>, std::sync::Arc<Device>) {
        let f = softrdma::backend::memory::Fabric::new();
        let mk = |i: usize| {
            let cfg = crate::fabric::device_config(&format!("oob{i}"), vec![(crate::fabric::addr(i), 16)]);
            Device::start(cfg, f.attach(crate::fabric::mac(i), 1500)).unwrap()
        };
        (mk(0), mk(1))
    }

    /// A server on `da` and a client on `db`, over a loopback socket.
    fn pair(da: &Device, db: &Device, cfg: &OobConfig) -> (Res<OobResult>, Res<OobResult>) {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let (ca, cb) = (da.context(), db.context());
        std::thread::scope(|sc| {
            let h = sc.spawn(|| {
                let (s, _) = l.accept().unwrap();
                run(&ca, cfg, s, false)
            });
            let c = run(&cb, cfg, TcpStream::connect(("127.0.0.1", port)).unwrap(), true);
            (h.join().unwrap(), c)
        })
    }

    /// As `pair`, through a proxy that passes the client's first `cut`
    /// bytes and then closes both connections, as a perftest peer that
    /// exits there would.
    fn pair_cut(da: &Device, db: &Device, cfg: &OobConfig, cut: usize) -> (Res<OobResult>, Res<OobResult>) {
        use std::net::Shutdown;
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let proxy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let (port, pport) = (l.local_addr().unwrap().port(), proxy.local_addr().unwrap().port());
        let (ca, cb) = (da.context(), db.context());
        std::thread::scope(|sc| {
            let h = sc.spawn(|| {
                let (s, _) = l.accept().unwrap();
                run(&ca, cfg, s, false)
            });
            sc.spawn(move || {
                let (c, _) = proxy.accept().unwrap();
                let s = TcpStream::connect(("127.0.0.1", port)).unwrap();
                let (mut c2, mut s2) = (c.try_clone().unwrap(), s.try_clone().unwrap());
                // The server's bytes all go through, until the cut closes both.
                std::thread::spawn(move || std::io::copy(&mut s2, &mut c2));
                let (mut from, mut to, mut passed) = (c, s, 0usize);
                let mut b = [0u8; 4096];
                loop {
                    let n = from.read(&mut b[..(cut - passed).max(1)]).unwrap_or(0);
                    if n == 0 || passed == cut {
                        break;
                    }
                    to.write_all(&b[..n]).unwrap();
                    passed += n;
                }
                let _ = from.shutdown(Shutdown::Both);
                let _ = to.shutdown(Shutdown::Both);
            });
            let c = run(&cb, cfg, TcpStream::connect(("127.0.0.1", pport)).unwrap(), true);
            (h.join().unwrap(), c)
        })
    }

    fn config(test: Test, size: usize, iters: u64) -> OobConfig {
        OobConfig {
            test,
            conn: QpType::Rc,
            size,
            iters,
            mtu: Mtu::M1024,
            gid_idx: 1,
            tx_depth: 32,
            rx_depth: 64,
            timeout: 14,
            cmp_swap: false,
            stall: Duration::from_secs(10),
            duplex: false,
            qps: 1,
            all: false,
            duration: None,
            events: false,
        }
    }

    /// perftest's `-e` in TCP mode: each end sleeps on its CQ's channel, and
    /// the runs end as they do when polling. Refused where perftest refuses.
    #[test]
    fn events_in_perftest_mode() {
        let (da, db) = devices();
        for (t, conn, size, duplex, qps) in [
            (Test::ReadBw, QpType::Rc, 20000, false, 1),
            (Test::SendBw, QpType::Rc, 20000, false, 1),
            (Test::SendBw, QpType::Ud, 1024, false, 1),
            (Test::AtomicBw, QpType::Rc, 8, false, 1),
            (Test::SendLat, QpType::Rc, 64, false, 1),
            (Test::ReadLat, QpType::Rc, 64, false, 1),
            // Both ways and two QPs: every end waits on its CQ.
            (Test::SendBw, QpType::Rc, 20000, true, 2),
            (Test::ReadBw, QpType::Rc, 20000, true, 2),
        ] {
            let cfg = OobConfig { conn, duplex, qps, events: true, ..config(t, size, 200) };
            let (s, c) = pair(&da, &db, &cfg);
            let (s, c) = (s.unwrap(), c.unwrap());
            assert!(s.check_ok && c.check_ok, "{t:?} {conn:?} -e: {} / {}", s.check, c.check);
            // A UD send completes as it leaves, so its sender may never find
            // its CQ empty; an RC requester waits for ACKs and responses.
            let sender_waits = conn == QpType::Rc;
            assert!(c.cq_events.is_some_and(|n| n > 0 || !sender_waits), "{t:?} {conn:?} -e client: {:?}", c.cq_events);
            // The passive ends of the one-sided tests wait on no CQ.
            if matches!(t, Test::SendBw | Test::SendLat) || duplex {
                assert!(s.cq_events.is_some_and(|n| n > 0), "{t:?} {conn:?} -e server: {:?}", s.cq_events);
            }
        }
        for (t, duration) in
            [(Test::WriteBw, None), (Test::WriteLat, None), (Test::SendBw, Some(Duration::from_secs(1)))]
        {
            let cfg = OobConfig { events: true, duration, ..config(t, 64, 10) };
            assert!(validate(&cfg).is_err_and(|e| e.starts_with("-e: ")), "{t:?} -e {duration:?} accepted");
        }
    }

    /// perftest's `-a` (a row per size, 2 B to 8 MiB; the server gets the
    /// last size's report) and `-D` (as many as fit the time).
    #[test]
    fn all_sizes_and_a_duration() {
        let (da, db) = devices();
        let all: Vec<u64> = (1..24).map(|i| 1u64 << i).collect();
        for t in [Test::WriteBw, Test::ReadBw, Test::SendBw] {
            let cfg = OobConfig { all: true, qps: 2, ..config(t, 1, 3) };
            let (s, c) = pair(&da, &db, &cfg);
            let (s, c) = (s.unwrap(), c.unwrap());
            assert!(s.check_ok && c.check_ok, "{t:?} -a: {} / {}", s.check, c.check);
            let sizes = |r: &OobResult| r.rows.iter().map(|r| r.size).collect::<Vec<_>>();
            assert_eq!(sizes(&c), all, "{t:?} -a");
            assert!(c.rows.iter().all(|r| r.iters == 6 && r.bw_avg > 0.0), "{t:?} -a: {:?}", c.rows);
            if t == Test::SendBw {
                // No report crosses: the server's rows are its own, of what it received.
                assert_eq!(sizes(&s), all, "{t:?} -a: the server's rows");
                assert!(s.rows.iter().all(|r| r.iters == 6 && r.bw_avg > 0.0), "{t:?} -a: {:?}", s.rows);
                assert_eq!(s.completions, 23 * 6);
            } else {
                assert_eq!((s.report.size, s.report.iters), (1 << 23, 6), "{t:?} -a: the last size's report");
            }
            assert_eq!(c.completions, 23 * 6);
        }
        // -a under -b: both ends send every size, and each size's reports cross.
        for t in [Test::WriteBw, Test::ReadBw, Test::SendBw] {
            let cfg = OobConfig { all: true, duplex: true, qps: 2, ..config(t, 1, 3) };
            let (s, c) = pair(&da, &db, &cfg);
            let (s, c) = (s.unwrap(), c.unwrap());
            assert!(s.check_ok && c.check_ok, "{t:?} -a -b: {} / {}", s.check, c.check);
            for r in [&s, &c] {
                assert_eq!(r.rows.iter().map(|r| r.size).collect::<Vec<_>>(), all, "{t:?} -a -b");
                assert!(r.rows.iter().all(|r| r.iters == 6 && r.bw_avg > 0.0), "{t:?} -a -b: {:?}", r.rows);
            }
            assert_eq!((&s.peer_rows, &c.peer_rows), (&c.rows, &s.rows), "{t:?} -a -b: the reports crossed");
            assert_eq!((s.completions, c.completions), (23 * 6, 23 * 6), "{t:?} -a -b");
        }
        for t in [Test::WriteBw, Test::ReadBw, Test::AtomicBw] {
            let cfg = OobConfig { duration: Some(Duration::from_millis(300)), ..config(t, 4096, 1) };
            let (s, c) = pair(&da, &db, &cfg);
            let (s, c) = (s.unwrap(), c.unwrap());
            assert!(s.check_ok && c.check_ok, "{t:?} -D: {} / {}", s.check, c.check);
            // -n 1, so anything beyond one operation came from the duration.
            assert!(c.completions > 10 && s.report.iters == c.completions, "{t:?} -D: {}", c.completions);
            assert!(c.elapsed >= Duration::from_millis(300), "{t:?} -D: {:?}", c.elapsed);
        }
        // -b -D: both ends post for the time, then the reports cross.
        for t in [Test::WriteBw, Test::ReadBw, Test::AtomicBw] {
            let cfg = OobConfig { duplex: true, duration: Some(Duration::from_millis(300)), ..config(t, 4096, 1) };
            let (s, c) = pair(&da, &db, &cfg);
            let (s, c) = (s.unwrap(), c.unwrap());
            assert!(s.check_ok && c.check_ok, "{t:?} -b -D: {} / {}", s.check, c.check);
            assert!(s.completions > 10 && c.completions > 10, "{t:?} -b -D: {} / {}", s.completions, c.completions);
            assert_eq!((s.report.iters, c.report.iters), (c.completions, s.completions), "{t:?} -b -D: reports");
        }
        // send_bw -b -D: both ends send for the time and receive; each
        // prints its own row, its sends and receives together (run_iter_bi),
        // and no report crosses.
        for conn in [QpType::Rc, QpType::Ud] {
            let d = Some(Duration::from_millis(300));
            let cfg = OobConfig { conn, duplex: true, duration: d, ..config(Test::SendBw, 1024, 1) };
            let (s, c) = pair(&da, &db, &cfg);
            let (s, c) = (s.unwrap(), c.unwrap());
            assert!(s.check_ok && c.check_ok, "send_bw {conn:?} -b -D: {} / {}", s.check, c.check);
            for (r, p) in [(&s, &c), (&c, &s)] {
                let row = r.rows[0];
                assert!(r.completions > 10 && row.iters > r.completions, "{conn:?} -b -D: {row:?}, {}", r.check);
                // What it received is at most what its peer sent.
                assert!(row.iters - r.completions <= p.completions, "{conn:?} -b -D: {row:?} / {}", p.completions);
                assert_eq!(r.report, BwReport::default(), "send_bw -b -D: no report crosses");
            }
        }
        // send_bw -D: the sender posts for the time, the receiver takes
        // what comes until the sender's closing barrier; each prints its own row.
        for conn in [QpType::Rc, QpType::Uc, QpType::Ud] {
            let cfg = OobConfig { conn, duration: Some(Duration::from_millis(300)), ..config(Test::SendBw, 1024, 1) };
            let (s, c) = pair(&da, &db, &cfg);
            let (s, c) = (s.unwrap(), c.unwrap());
            assert!(s.check_ok && c.check_ok, "send_bw {conn:?} -D: {} / {}", s.check, c.check);
            assert!(c.completions > 10 && c.elapsed >= Duration::from_millis(300), "{conn:?} -D: {}", c.completions);
            let (got, sent) = (s.rows[0].iters, c.rows[0].iters);
            assert!(got > 10 && got <= sent, "send_bw {conn:?} -D: {got} received of {sent}");
            if conn == QpType::Rc {
                assert_eq!(got, sent, "send_bw RC -D: every message arrives");
            }
        }
        // The latency tests under -D: each end stops on its own clock and
        // reports perftest's duration row (read_lat: the client only).
        for t in [Test::WriteLat, Test::SendLat, Test::ReadLat] {
            let cfg = OobConfig { duration: Some(Duration::from_millis(300)), ..config(t, 64, 1) };
            let (s, c) = pair(&da, &db, &cfg);
            let (s, c) = (s.unwrap(), c.unwrap());
            assert!(s.check_ok && c.check_ok, "{t:?} -D: {} / {}", s.check, c.check);
            let ends: &[&OobResult] = if t == Test::ReadLat { &[&c] } else { &[&s, &c] };
            for r in ends {
                let d = r.lat_dur.expect("a -D row");
                assert!(r.lat.is_empty(), "{t:?} -D: no iterations table");
                assert!(d.bytes == 64 && d.iterations > 10, "{t:?} -D: {d:?}");
                // t_avg × iterations × (2 for half round trips) is the time run.
                let per = if t == Test::ReadLat { 1.0 } else { 2.0 };
                let ran = d.t_avg * d.iterations as f64 * per / 1e6;
                assert!((0.29..1.5).contains(&ran), "{t:?} -D: {d:?} ran {ran} s");
                assert!((d.tps * ran - d.iterations as f64).abs() < 1.0, "{t:?} -D: {d:?}");
            }
            if t == Test::ReadLat {
                assert!(s.lat_dur.is_none(), "read_lat's server measures nothing");
            }
        }
        // The latency tests: a table per end that perftest prints one on
        // (read_lat: the client), a row per size, -n 5 each; over UD up to
        // the path MTU (1024 here).
        for (t, conn) in [
            (Test::WriteLat, QpType::Rc),
            (Test::SendLat, QpType::Rc),
            (Test::ReadLat, QpType::Rc),
            (Test::SendLat, QpType::Ud),
        ] {
            let cfg = OobConfig { all: true, conn, ..config(t, 1, 5) };
            let top = if conn == QpType::Ud { 11 } else { 24 };
            let (s, c) = pair(&da, &db, &cfg);
            let (s, c) = (s.unwrap(), c.unwrap());
            assert!(s.check_ok && c.check_ok, "{t:?} -a: {} / {}", s.check, c.check);
            let ends: &[&OobResult] = if t == Test::ReadLat { &[&c] } else { &[&s, &c] };
            for r in ends {
                let sizes: Vec<u64> = r.lat.iter().map(|l| l.bytes).collect();
                assert_eq!(sizes, (1..top).map(|i| 1u64 << i).collect::<Vec<_>>(), "{t:?} {conn:?} -a");
                for l in &r.lat {
                    assert!(l.iterations == 5 && l.min > 0.0, "{t:?} -a: {l:?}");
                    assert!(l.min <= l.typical && l.typical <= l.max && l.max <= l.p999, "{t:?} -a: {l:?}");
                }
            }
            if t == Test::ReadLat {
                assert!(s.lat.is_empty(), "read_lat's server measures nothing");
            }
            assert_eq!(c.completions, (top - 1) * 5, "{t:?} {conn:?} -a");
        }
        for (bad, why) in [
            (OobConfig { all: true, ..config(Test::AtomicBw, 8, 3) }, "-a in perftest TCP mode"),
            (
                OobConfig { all: true, duration: Some(Duration::from_secs(1)), ..config(Test::WriteBw, 1, 3) },
                "-a in perftest TCP mode",
            ),
        ] {
            assert!(validate(&bad).unwrap_err().contains(why), "{why}");
        }
        da.shutdown();
        db.shutdown();
    }

    /// send_bw `-a` over UC and UD: a barrier before and after each size
    /// (UD up to the path MTU); the receiver's rows are what arrived, and
    /// a size that lost messages ends at the sender's barrier after it,
    /// the run going on to the next size. `-b` over UD with loss.
    #[test]
    fn send_bw_all_sizes_over_uc_and_ud() {
        let (da, db) = devices();
        for (conn, top) in [(QpType::Ud, 11), (QpType::Uc, 24)] {
            let sizes: Vec<u64> = (1..top).map(|i| 1u64 << i).collect();
            let cfg = OobConfig { all: true, conn, qps: 2, ..config(Test::SendBw, 1, 3) };
            let (s, c) = pair(&da, &db, &cfg);
            let (s, c) = (s.unwrap(), c.unwrap());
            assert!(s.check_ok && c.check_ok, "{conn:?} -a: {} / {}", s.check, c.check);
            for r in [&s, &c] {
                assert_eq!(r.rows.iter().map(|r| r.size).collect::<Vec<_>>(), sizes, "{conn:?} -a");
            }
            assert!(c.rows.iter().all(|r| r.iters == 6 && r.bw_avg > 0.0), "{conn:?} -a: {:?}", c.rows);
            assert!(s.rows.iter().all(|r| r.iters <= 6), "{conn:?} -a: {:?}", s.rows);
            assert_eq!(c.completions, (top - 1) * 6, "{conn:?} -a");
        }
        // -a -b over UD: both ends send every size and receive the other's.
        let cfg = OobConfig { all: true, duplex: true, conn: QpType::Ud, qps: 2, ..config(Test::SendBw, 1, 3) };
        let (s, c) = pair(&da, &db, &cfg);
        let (s, c) = (s.unwrap(), c.unwrap());
        assert!(s.check_ok && c.check_ok, "UD -a -b: {} / {}", s.check, c.check);
        let sizes: Vec<u64> = (1..11).map(|i| 1u64 << i).collect();
        for r in [&s, &c] {
            assert_eq!(r.rows.iter().map(|r| r.size).collect::<Vec<_>>(), sizes, "UD -a -b");
            assert_eq!((r.completions, r.peer_rows.len()), (10 * 6, 10), "UD -a -b: {}", r.check);
        }
        // One receive posted at a time against 32 sends in flight: UD drops
        // most of each size, and each size still ends and reports.
        let cfg = OobConfig { all: true, conn: QpType::Ud, rx_depth: 1, ..config(Test::SendBw, 1, 200) };
        let (s, c) = pair(&da, &db, &cfg);
        let (s, c) = (s.unwrap(), c.unwrap());
        assert!(s.check_ok && c.check_ok, "UD -a, lossy: {} / {}", s.check, c.check);
        assert_eq!((s.rows.len(), c.rows.len()), (10, 10), "UD -a, lossy: a row per size on each end");
        assert!(s.rows.iter().zip(&c.rows).all(|(g, p)| g.iters <= p.iters && g.size == p.size));
        assert!(s.completions < c.completions, "UD -a, lossy: {} of {} arrived", s.completions, c.completions);
        // Both ways (-b), as lossy: each end takes a quiet spell after its
        // own sends as the end of what will come, and the reports cross.
        let cfg = OobConfig { duplex: true, conn: QpType::Ud, rx_depth: 1, ..config(Test::SendBw, 1024, 200) };
        let (s, c) = pair(&da, &db, &cfg);
        let (s, c) = (s.unwrap(), c.unwrap());
        assert!(s.check_ok && c.check_ok, "UD -b, lossy: {} / {}", s.check, c.check);
        assert_eq!((s.completions, c.completions), (200, 200), "UD -b, lossy: every send completes");
        let (sm, cm) = (s.mine.expect("server's own report"), c.mine.expect("client's own report"));
        assert_eq!((s.report, c.report), (cm, sm), "UD -b, lossy: the reports crossed");
        assert!(s.check.contains(" of 200 messages received") && !s.check.starts_with("200 of"), "{}", s.check);
        // A peer that exits before its report (perftest 6.06 when a UC/UD
        // message it waits for never comes): the connection closes where
        // the client's report would go (after the preamble's 26 bytes and
        // four dest messages), and each end prints its own row and says so.
        let cfg = OobConfig { duplex: true, conn: QpType::Ud, ..config(Test::SendBw, 1024, 200) };
        let (s, c) = pair_cut(&da, &db, &cfg, 26 + 4 * DEST_LEN);
        let (s, c) = (s.unwrap(), c.unwrap());
        for r in [&s, &c] {
            assert!(r.check_ok && r.check.contains("the peer ended the run"), "UD -b, cut: {}", r.check);
            assert_eq!((r.rows.len(), r.peer_rows.len(), r.completions), (1, 0, 200), "UD -b, cut: {r:?}");
        }
        da.shutdown();
        db.shutdown();
    }

    /// perftest's receiver that gave up on a lost message answers one more
    /// barrier and then sends "done": the client's barrier reports it,
    /// whether the "done" was already waiting or comes as the answer; or
    /// (perftest 6.06) it exits, which the barrier reports as closed.
    #[test]
    fn a_barrier_answered_with_done() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let my = Dest { qpn: 0x11, psn: 0x22, ..Dest::default() };
        let server = std::thread::spawn(move || {
            for waiting in [true, false] {
                let (mut s, _) = l.accept().unwrap();
                let mut m = [0u8; DEST_LEN];
                s.read_exact(&mut m).unwrap();
                if waiting {
                    // ctx_close_connection: the barrier answered, then "done\0".
                    s.write_all(&m).unwrap();
                    s.write_all(b"done\0").unwrap();
                } else {
                    s.write_all(b"done\0").unwrap();
                }
                // Read until the client is gone, so that the socket closes with nothing unread.
                let _ = s.read_to_end(&mut Vec::new());
            }
        });
        for waiting in [true, false] {
            let s = TcpStream::connect(("127.0.0.1", port)).unwrap();
            let mut oob = Oob::new(s, true, Duration::from_secs(5)).unwrap();
            let wait = Duration::from_secs(5);
            if waiting {
                let d = oob.barrier_unless_ended(&my, wait, "before").unwrap();
                assert_eq!(d, Barrier::Answered(my), "the barrier before the server gave up");
                std::thread::sleep(Duration::from_millis(50));
            }
            let d = oob.barrier_unless_ended(&my, wait, "after").unwrap();
            assert_eq!(d, Barrier::Done, "done waiting: {waiting}");
        }
        server.join().unwrap();
        // perftest 6.06 exits instead, the client's barrier unread.
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let server = std::thread::spawn(move || {
            let (mut s, _) = l.accept().unwrap();
            let mut m = [0u8; DEST_LEN];
            s.read_exact(&mut m).unwrap();
            s.write_all(&m).unwrap();
            // The second barrier comes and is not read: closing now resets.
            std::thread::sleep(Duration::from_millis(100));
        });
        let s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        let mut oob = Oob::new(s, true, Duration::from_secs(5)).unwrap();
        let wait = Duration::from_secs(5);
        assert_eq!(oob.barrier_unless_ended(&my, wait, "before").unwrap(), Barrier::Answered(my));
        assert_eq!(oob.barrier_unless_ended(&my, wait, "after").unwrap(), Barrier::Closed);
        server.join().unwrap();
    }

    #[test]
    fn two_softrdma_ends_over_loopback() {
        let (da, db) = devices();
        for (t, cas, conn, size) in [
            (Test::WriteBw, false, QpType::Rc, 20000),
            (Test::ReadBw, false, QpType::Rc, 20000),
            (Test::SendBw, false, QpType::Rc, 20000),
            (Test::AtomicBw, false, QpType::Rc, 8),
            (Test::AtomicBw, true, QpType::Rc, 8),
            (Test::WriteBw, false, QpType::Uc, 20000),
            (Test::SendBw, false, QpType::Uc, 20000),
            (Test::SendBw, false, QpType::Ud, 1024),
            (Test::ReadLat, false, QpType::Rc, 20000),
            (Test::SendLat, false, QpType::Rc, 20000),
            (Test::WriteLat, false, QpType::Rc, 20000),
            (Test::WriteLat, false, QpType::Rc, 1001),
            (Test::WriteLat, false, QpType::Uc, 1001),
            (Test::SendLat, false, QpType::Uc, 20000),
            (Test::SendLat, false, QpType::Ud, 1024),
        ] {
            // One way and `-b`, one QP and three.
            for (duplex, qps) in [(false, 1u32), (true, 1), (false, 3), (true, 3)] {
                if (duplex || qps > 1) && !t.is_bw() {
                    continue;
                }
                let cfg = OobConfig { conn, cmp_swap: cas, duplex, qps, ..config(t, size, 200) };
                let (s, c) = match pair(&da, &db, &cfg) {
                    (Ok(s), Ok(c)) => (s, c),
                    (s, c) => panic!("{t:?} {conn:?} -q {qps}: server {:?} client {:?}", s.err(), c.err()),
                };
                assert!(s.check_ok, "{t:?} -q {qps} server: {}", s.check);
                assert!(c.check_ok, "{t:?} -q {qps} client: {}", c.check);
                assert_eq!(c.completions, 200 * qps as u64, "{t:?} -q {qps}");
                assert_eq!((s.local.len(), c.remote.len()), (qps as usize, qps as usize));
                if !t.is_bw() {
                    // One row of perftest's latency table, where perftest prints one.
                    let rows = |r: &OobResult| r.lat.iter().map(|l| (l.bytes, l.iterations)).collect::<Vec<_>>();
                    let want = vec![(size as u64, 200)];
                    assert_eq!(rows(&c), want, "{t:?}: the client's table");
                    assert_eq!(rows(&s), if t == Test::ReadLat { vec![] } else { want }, "{t:?}: the server's");
                }
                // UC and UD drop what comes while no receive is posted.
                if t == Test::SendBw && !duplex && conn == QpType::Rc {
                    assert_eq!(
                        s.completions,
                        200 * qps as u64,
                        "{t:?} -q {qps}: every QP's messages received: {}",
                        s.check
                    );
                }
                if t.is_bw() && t != Test::SendBw {
                    // perftest's count: every QP's iterations.
                    assert_eq!(s.report.iters, 200 * qps as u64);
                }
                if duplex {
                    // Each end sent and reports it; each has the other's report.
                    assert_eq!(s.completions, 200 * qps as u64, "{t:?} -b -q {qps} server");
                    let (sm, cm) = (s.mine.expect("server's own report"), c.mine.expect("client's own report"));
                    assert_eq!((s.report, c.report), (cm, sm), "{t:?} -b: the reports crossed");
                    if t == Test::AtomicBw && !cas {
                        // softrdma warms up with nothing: exactly the peer's adds.
                        let want = Some(200 * qps as u64);
                        assert_eq!((s.added, c.added), (want, want), "{t:?} -b -q {qps}: counters");
                    }
                }
            }
        }
        da.shutdown();
        db.shutdown();
    }
}
