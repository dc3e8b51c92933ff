//! A mixed workload over a simulated pair, with an oracle that checks every
//! delivery: node 0 posts messages of every opcode and many sizes to node 1;
//! node 1's receive completions, its memory, and node 0's send completions
//! (READ data, atomic results) are verified against what was posted.
//!
//! RC must deliver everything exactly once, in order, intact. UC and UD may
//! lose messages (they are unreliable by definition) but must never
//! duplicate, reorder or corrupt one.

use core::time::Duration;
use std::collections::VecDeque;

use verbs_api::{AccessFlags, Mtu, QpType, RecvWr, SendFlags, SendOp, SendWr, Sge, WcFlags, WcOpcode, WcStatus};

use super::{path_between, ConnectParams, NetConfig, NetStats, Rng, Sim};
use crate::counters::Counters;
use crate::mem::{Key, Memory};
use crate::qp::UdDest;

#[derive(Debug, Clone)]
pub struct WorkloadConfig {
    pub messages: u64,
    pub transport: QpType,
    pub mtu: Mtu,
    /// Send WQEs node 0 keeps outstanding.
    pub depth: usize,
    /// Receive WQEs node 1 keeps posted (fewer than `depth` provokes RNR NAKs).
    pub recv_depth: usize,
    /// Largest message (the mix also uses 0, 1, MTU±1 and multi-MTU sizes).
    pub max_size: usize,
    pub seed: u64,
    /// Initial send PSNs of node 0 and node 1 (default: just below the 2^24 wrap).
    pub psn: [u32; 2],
    /// Give up after this much virtual time.
    pub time_limit: Duration,
    pub trace: bool,
    /// IBTA: 0..=7 retries on timeout / sequence NAK / implied NAK.
    pub retry_cnt: u8,
    pub rxe_retry_quirk: bool,
}

impl Default for WorkloadConfig {
    fn default() -> Self {
        WorkloadConfig {
            messages: 1000,
            transport: QpType::Rc,
            mtu: Mtu::M1024,
            depth: 16,
            recv_depth: 8,
            max_size: 64 * 1024,
            seed: 1,
            psn: [0xff_ff00, 0xff_fff0],
            time_limit: Duration::from_secs(3600),
            trace: false,
            retry_cnt: 7,
            rxe_retry_quirk: false,
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct Report {
    pub posted: u64,
    /// Send completions at node 0 (all must be successful).
    pub completed: u64,
    /// Receive completions at node 1, verified.
    pub delivered: u64,
    /// Messages UC/UD lost (always 0 for RC).
    pub lost: u64,
    /// UD messages the network duplicated and UD (which has no sequence
    /// numbers to tell) delivered twice.
    pub duplicates: u64,
    pub bytes_verified: u64,
    pub sim_time: Duration,
    pub net: NetStats,
    pub counters: [Counters; 2],
    pub errors: Vec<String>,
}

impl Report {
    pub fn ok(&self) -> bool {
        self.errors.is_empty()
    }

    pub fn summary(&self) -> String {
        format!(
            "{} messages completed, {} delivered, {} lost, {} duplicated, {} bytes verified, {} retransmitted packets, {} RNR NAKs, {:.3} s simulated, net: {} sent {} dropped {} duplicated {} reordered {} corrupted, {} errors",
            self.completed,
            self.delivered,
            self.lost,
            self.duplicates,
            self.bytes_verified,
            self.counters[0].retransmitted_pkts,
            self.counters[1].send_rnr_err,
            self.sim_time.as_secs_f64(),
            self.net.sent,
            self.net.dropped,
            self.net.duplicated,
            self.net.reordered,
            self.net.corrupted,
            self.errors.len()
        )
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Send,
    SendImm,
    SendInv,
    Write,
    WriteImm,
    Read,
    CmpSwap,
    FetchAdd,
}

#[derive(Debug, Clone)]
struct Posted {
    id: u64,
    kind: Kind,
    size: usize,
    slot: usize,
    /// READ: remote offset; atomics: the expected original value; SEND_INV: the R_Key.
    arg: u64,
}

/// Byte `i` of message `id`.
pub fn pattern(id: u64, i: usize) -> u8 {
    (id.wrapping_mul(0x9e37).wrapping_add(i as u64 * 31) ^ (i as u64 >> 8)) as u8 ^ 0x5a
}

/// Byte at remote READ-source offset `off`.
fn read_source(off: u64) -> u8 {
    (off.wrapping_mul(2_654_435_761) >> 13) as u8
}

const SRC: u64 = 0x1_0000_0000;
const DST: u64 = 0x2_0000_0000;
const RECV: u64 = 0x3_0000_0000;
const TARGET: u64 = 0x4_0000_0000;
const RSRC: u64 = 0x5_0000_0000;
const ATOM: u64 = 0x6_0000_0000;

struct Keys {
    src: u32,
    dst: u32,
    recv: u32,
    target: u32,
    rsrc: u32,
    atom: u32,
}

pub fn run(cfg: &WorkloadConfig, net: NetConfig) -> Report {
    Workload::new(cfg, net).run()
}

struct Workload<'c> {
    cfg: &'c WorkloadConfig,
    sim: Sim,
    rng: Rng,
    qpn: [u32; 2],
    keys: Keys,
    slot_size: usize,
    nslots: usize,
    pending: VecDeque<Posted>,
    expect_recv: VecDeque<Posted>,
    recv_slot: usize,
    fetch_adds: u64,
    cmp_swaps: u64,
    report: Report,
}

impl<'c> Workload<'c> {
    fn new(cfg: &'c WorkloadConfig, net: NetConfig) -> Self {
        let mut sim = Sim::new(net, cfg.seed ^ 0x5eed);
        sim.trace = cfg.trace;
        let params = ConnectParams {
            mtu: cfg.mtu,
            psn: cfg.psn,
            retry_cnt: cfg.retry_cnt,
            rxe_retry_quirk: cfg.rxe_retry_quirk,
            ..ConnectParams::default()
        };
        let qpn = sim.connect(cfg.transport, &params, [None, None]);
        let max = if cfg.transport == QpType::Ud { cfg.mtu.bytes() } else { cfg.max_size.max(3 * cfg.mtu.bytes() + 1) };
        let slot_size = max + 64;
        let nslots = cfg.depth.max(cfg.recv_depth) + 8;
        let lw = AccessFlags::LOCAL_WRITE;
        let [a, b] = &mut sim.nodes;
        let (src, _) = a.mem.register(1, SRC, slot_size * nslots, lw);
        let (dst, _) = a.mem.register(1, DST, slot_size * nslots, lw);
        let (recv, _) = b.mem.register(1, RECV, slot_size * nslots, lw);
        let (_, target) = b.mem.register(1, TARGET, slot_size * nslots, lw | AccessFlags::REMOTE_WRITE);
        let rsrc_len = slot_size * 2;
        let (rsrc_l, rsrc) = b.mem.register(1, RSRC, rsrc_len, lw | AccessFlags::REMOTE_READ);
        let bytes: Vec<u8> = (0..rsrc_len as u64).map(read_source).collect();
        b.mem.region_mut(rsrc_l).expect("registered").data.copy_from_slice(&bytes);
        let (_, atom) = b.mem.register(1, ATOM, 16, lw | AccessFlags::REMOTE_ATOMIC);
        let mut w = Workload {
            cfg,
            sim,
            rng: Rng::new(cfg.seed),
            qpn,
            keys: Keys { src, dst, recv, target, rsrc, atom },
            slot_size,
            nslots,
            pending: VecDeque::new(),
            expect_recv: VecDeque::new(),
            recv_slot: 0,
            fetch_adds: 0,
            cmp_swaps: 0,
            report: Report::default(),
        };
        for _ in 0..cfg.recv_depth {
            w.post_recv();
        }
        w
    }

    fn error(&mut self, e: String) {
        if self.report.errors.len() < 20 {
            self.report.errors.push(e);
        }
    }

    fn post_recv(&mut self) {
        let slot = self.recv_slot % self.nslots;
        self.recv_slot += 1;
        let sge =
            Sge { addr: RECV + (slot * self.slot_size) as u64, length: self.slot_size as u32, lkey: self.keys.recv };
        let qp = self.sim.nodes[1].qp_mut(self.qpn[1]).expect("qp");
        if let Err(e) = qp.post_recv(RecvWr { wr_id: slot as u64, sg_list: vec![sge] }) {
            self.error(format!("post_recv: {e}"));
        }
    }

    fn pick_kind(&mut self) -> Kind {
        let all = [
            Kind::Send,
            Kind::SendImm,
            Kind::SendInv,
            Kind::Write,
            Kind::WriteImm,
            Kind::Read,
            Kind::CmpSwap,
            Kind::FetchAdd,
        ];
        match self.cfg.transport {
            QpType::Rc => all[self.rng.below(all.len() as u64) as usize],
            // UC/UD messages carry their id as immediate data so losses can be told apart.
            QpType::Uc => [Kind::SendImm, Kind::WriteImm][self.rng.below(2) as usize],
            QpType::Ud => Kind::SendImm,
        }
    }

    fn pick_size(&mut self) -> usize {
        let mtu = self.cfg.mtu.bytes();
        let max = if self.cfg.transport == QpType::Ud { mtu } else { self.cfg.max_size.max(1) };
        let s = match self.rng.below(10) {
            0 => 0,
            1 => 1,
            2 => mtu - 1,
            3 => mtu,
            4 => mtu + 1,
            5 => 1 + self.rng.below(8) as usize,
            6 | 7 => 1 + self.rng.below(3 * mtu as u64) as usize,
            8 => 1 + self.rng.below(mtu as u64) as usize,
            _ => 1 + self.rng.below(max as u64) as usize,
        };
        s.min(max)
    }

    /// Splits `[base, base+len)` into 1–3 SGEs.
    fn sges(&mut self, base: u64, len: usize, lkey: u32) -> Vec<Sge> {
        let parts = if len >= 16 { 1 + self.rng.below(3) as usize } else { 1 };
        let mut out = Vec::new();
        let mut at = 0usize;
        for p in 0..parts {
            let n = if p + 1 == parts { len - at } else { (len / parts).max(1) };
            out.push(Sge { addr: base + at as u64, length: n as u32, lkey });
            at += n;
        }
        out
    }

    fn post_one(&mut self, id: u64) {
        let kind = self.pick_kind();
        let size = match kind {
            Kind::CmpSwap | Kind::FetchAdd => 8,
            _ => self.pick_size(),
        };
        let slot = (id % self.nslots as u64) as usize;
        let base = (slot * self.slot_size) as u64;
        let mut arg = 0u64;
        let mut inline = None;
        if matches!(kind, Kind::Send | Kind::SendImm | Kind::SendInv | Kind::Write | Kind::WriteImm) {
            let data: Vec<u8> = (0..size).map(|i| pattern(id, i)).collect();
            let k = self.keys.src;
            self.sim.nodes[0].mem.write(1, Key::Local(k), SRC + base, &data).expect("src slot");
            if size <= 64 && self.rng.chance(0.25) {
                inline = Some(data);
            }
        }
        let imm = id as u32;
        let remote_target = TARGET + base;
        let op = match kind {
            Kind::Send => SendOp::Send,
            Kind::SendImm => SendOp::SendWithImm { imm },
            Kind::SendInv => {
                let (_, rkey) = self.sim.nodes[1].mem.register(
                    1,
                    0x7_0000_0000 + id * 64,
                    64,
                    AccessFlags::LOCAL_WRITE | AccessFlags::REMOTE_WRITE,
                );
                arg = rkey as u64;
                SendOp::SendWithInv { invalidate_rkey: rkey }
            }
            Kind::Write => SendOp::RdmaWrite { remote_addr: remote_target, rkey: self.keys.target },
            Kind::WriteImm => SendOp::RdmaWriteWithImm { remote_addr: remote_target, rkey: self.keys.target, imm },
            Kind::Read => {
                arg = self.rng.below(self.slot_size as u64);
                SendOp::RdmaRead { remote_addr: RSRC + arg, rkey: self.keys.rsrc }
            }
            Kind::FetchAdd => {
                arg = self.fetch_adds;
                self.fetch_adds += 1;
                SendOp::AtomicFetchAdd { remote_addr: ATOM, rkey: self.keys.atom, add: 1 }
            }
            Kind::CmpSwap => {
                arg = self.cmp_swaps;
                self.cmp_swaps += 1;
                SendOp::AtomicCmpSwp { remote_addr: ATOM + 8, rkey: self.keys.atom, compare: arg, swap: arg + 1 }
            }
        };
        let sg_list = match kind {
            Kind::Read | Kind::CmpSwap | Kind::FetchAdd => {
                let k = self.keys.dst;
                self.sges(DST + base, size, k)
            }
            _ => {
                let k = self.keys.src;
                self.sges(SRC + base, size, k)
            }
        };
        let mut wr = SendWr::new(id, op, sg_list);
        if let Some(d) = inline {
            wr.inline_data = Some(d);
            wr.flags = wr.flags | SendFlags::INLINE;
        }
        let ud = (self.cfg.transport == QpType::Ud).then(|| {
            wr.remote_qpn = self.qpn[1];
            wr.remote_qkey = 0x1111_1111;
            UdDest {
                path: path_between(0, self.qpn[0], self.qpn[1], true),
                remote_qpn: self.qpn[1],
                remote_qkey: 0x1111_1111,
            }
        });
        let p = Posted { id, kind, size, slot, arg };
        let qp = self.sim.nodes[0].qp_mut(self.qpn[0]).expect("qp");
        match qp.post_send(&wr, ud) {
            Ok(()) => {
                self.report.posted += 1;
                if matches!(kind, Kind::Send | Kind::SendImm | Kind::SendInv | Kind::WriteImm) {
                    self.expect_recv.push_back(p.clone());
                }
                self.pending.push_back(p);
            }
            Err(e) => self.error(format!("post_send #{id}: {e}")),
        }
    }

    fn run(mut self) -> Report {
        let n = self.cfg.messages;
        let mut next_id = 0u64;
        let end = self.sim.now + self.cfg.time_limit;
        loop {
            // UC and UD have no RNR: like their pingpong tools, the sender
            // never has more messages in flight than receives are posted.
            let recv_room = |w: &Self| w.cfg.transport == QpType::Rc || w.expect_recv.len() < w.cfg.recv_depth;
            while next_id < n
                && self.pending.len() < self.cfg.depth
                && recv_room(&self)
                && self.report.errors.is_empty()
            {
                self.post_one(next_id);
                next_id += 1;
            }
            let stepped = self.sim.step();
            self.drain();
            let sender_done = next_id == n && self.pending.is_empty();
            let done = match self.cfg.transport {
                QpType::Rc => sender_done && self.expect_recv.is_empty(),
                _ => sender_done && self.sim.net.in_flight() == 0,
            };
            if done || !self.report.errors.is_empty() {
                break;
            }
            if !stepped && self.cfg.transport != QpType::Rc && sender_done {
                // Nothing left in flight: whatever UC/UD did not deliver is lost.
                self.report.lost += self.expect_recv.len() as u64;
                self.expect_recv.clear();
                continue;
            }
            if !stepped
                && self.cfg.transport != QpType::Rc
                && !self.expect_recv.is_empty()
                && self.sim.net.in_flight() == 0
            {
                self.report.lost += self.expect_recv.len() as u64;
                self.expect_recv.clear();
                continue;
            }
            if !stepped {
                self.error(format!(
                    "stalled at {:?}: {} of {n} completed, {} receives outstanding",
                    self.sim.now,
                    self.report.completed,
                    self.expect_recv.len()
                ));
                break;
            }
            if self.sim.now > end {
                self.error("virtual time limit reached".into());
                break;
            }
        }
        if self.cfg.transport != QpType::Rc {
            self.report.lost += self.expect_recv.len() as u64;
        }
        if self.cfg.transport == QpType::Rc && self.report.errors.is_empty() {
            let mut w = [0u8; 16];
            let k = self.keys.atom;
            if let Some(r) = self.sim.nodes[1].mem.region(k) {
                w.copy_from_slice(&r.data[..16]);
            }
            let fa = u64::from_ne_bytes(w[..8].try_into().expect("8 bytes"));
            let cs = u64::from_ne_bytes(w[8..].try_into().expect("8 bytes"));
            if fa != self.fetch_adds || cs != self.cmp_swaps {
                self.error(format!("atomics executed {fa}/{cs} times, posted {}/{}", self.fetch_adds, self.cmp_swaps));
            }
        }
        self.report.sim_time = self.sim.now - crate::time::Instant::ZERO;
        self.report.net = self.sim.net.stats;
        self.report.counters = [self.sim.nodes[0].qp_counters(), self.sim.nodes[1].qp_counters()];
        self.report
    }

    fn drain(&mut self) {
        while let Some((_, c)) = self.sim.nodes[0].poll_completion() {
            self.sender_completion(c.wc);
        }
        while let Some((_, c)) = self.sim.nodes[1].poll_completion() {
            if c.side == crate::qp::CqSide::Recv {
                self.receiver_completion(c.wc);
            }
        }
    }

    fn check_bytes(&mut self, what: &str, node: usize, key: u32, va: u64, want: impl Iterator<Item = u8>) {
        let want: Vec<u8> = want.collect();
        let mut got = vec![0u8; want.len()];
        if self.sim.nodes[node].mem.read(1, Key::Local(key), va, &mut got).is_err() || got != want {
            let at = got.iter().zip(&want).position(|(a, b)| a != b);
            self.error(format!("{what}: contents differ (first difference at byte {at:?})"));
        } else {
            self.report.bytes_verified += want.len() as u64;
        }
    }

    fn sender_completion(&mut self, wc: verbs_api::WorkCompletion) {
        let Some(p) = self.pending.pop_front() else {
            self.error(format!("unexpected send completion {wc:?}"));
            return;
        };
        if wc.wr_id != p.id || wc.status != WcStatus::Success {
            self.error(format!(
                "send completion for #{} ({:?}): got wr_id {} status {:?}",
                p.id, p.kind, wc.wr_id, wc.status
            ));
            return;
        }
        self.report.completed += 1;
        let base = (p.slot * self.slot_size) as u64;
        match p.kind {
            Kind::Read => {
                let k = self.keys.dst;
                self.check_bytes(
                    &format!("READ #{}", p.id),
                    0,
                    k,
                    DST + base,
                    (0..p.size as u64).map(|i| read_source(p.arg + i)),
                );
            }
            Kind::FetchAdd | Kind::CmpSwap => {
                let mut b = [0u8; 8];
                let k = self.keys.dst;
                let _ = self.sim.nodes[0].mem.read(1, Key::Local(k), DST + base, &mut b);
                let got = u64::from_ne_bytes(b);
                if got != p.arg {
                    self.error(format!("{:?} #{} returned {got}, expected {}", p.kind, p.id, p.arg));
                }
            }
            Kind::Write if self.cfg.transport == QpType::Rc => {
                let k = self.keys.target;
                self.check_bytes(
                    &format!("WRITE #{}", p.id),
                    1,
                    k,
                    TARGET + base,
                    (0..p.size).map(|i| pattern(p.id, i)),
                );
            }
            _ => {}
        }
    }

    fn receiver_completion(&mut self, wc: verbs_api::WorkCompletion) {
        if wc.status != WcStatus::Success {
            self.error(format!("receive completion error {:?}", wc.status));
            return;
        }
        // RC delivers in order; UC may lose but never reorders; UD may lose,
        // reorder and (on a duplicating network) deliver twice.
        let found = match self.cfg.transport {
            QpType::Rc => self.expect_recv.pop_front(),
            _ => {
                let id = wc.imm_data;
                match self.expect_recv.iter().position(|p| p.id as u32 == id) {
                    Some(i) if self.cfg.transport == QpType::Uc => {
                        self.report.lost += i as u64;
                        self.expect_recv.drain(..i);
                        self.expect_recv.pop_front()
                    }
                    Some(i) => self.expect_recv.remove(i),
                    None if self.cfg.transport == QpType::Ud => {
                        self.report.duplicates += 1;
                        self.post_recv();
                        return;
                    }
                    None => None,
                }
            }
        };
        let Some(p) = found else {
            self.error(format!("unexpected receive completion (duplicate or out of order): {wc:?}"));
            return;
        };
        let grh = if self.cfg.transport == QpType::Ud { 40 } else { 0 };
        let (opcode, with_imm) = match p.kind {
            Kind::WriteImm => (WcOpcode::RecvRdmaWithImm, true),
            Kind::SendImm => (WcOpcode::Recv, true),
            _ => (WcOpcode::Recv, false),
        };
        if wc.opcode != opcode
            || wc.byte_len as usize != p.size + grh
            || wc.wc_flags.contains(WcFlags::WITH_IMM) != with_imm
        {
            self.error(format!(
                "receive for #{} ({:?}, {} bytes): got {:?} len {} flags {:?}",
                p.id, p.kind, p.size, wc.opcode, wc.byte_len, wc.wc_flags
            ));
            return;
        }
        if with_imm && wc.imm_data != p.id as u32 {
            self.error(format!("#{}: immediate data {:#x}", p.id, wc.imm_data));
        }
        if p.kind == Kind::SendInv && (!wc.wc_flags.contains(WcFlags::WITH_INV) || wc.invalidated_rkey as u64 != p.arg)
        {
            self.error(format!("#{}: SEND_INV completion without the invalidated R_Key", p.id));
        }
        let what = format!("{:?} #{}", p.kind, p.id);
        match p.kind {
            Kind::WriteImm => {
                let k = self.keys.target;
                let base = (p.slot * self.slot_size) as u64;
                self.check_bytes(&what, 1, k, TARGET + base, (0..p.size).map(|i| pattern(p.id, i)));
            }
            _ => {
                let k = self.keys.recv;
                let at = RECV + wc.wr_id * self.slot_size as u64 + grh as u64;
                self.check_bytes(&what, 1, k, at, (0..p.size).map(|i| pattern(p.id, i)));
            }
        }
        self.report.delivered += 1;
        self.post_recv();
    }
}
