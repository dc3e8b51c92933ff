//! A set of QPs behind one link address: frames in, frames out, timers and
//! completions — the sans-IO heart the device drives (quinn-proto's
//! `Endpoint`, for RDMA). It verifies and dispatches received frames,
//! schedules transmission fairly between QPs, and owns the memory the QPs
//! reach through [`Memory`].

use std::collections::{BTreeMap, BTreeSet};

use rustc_hash::FxHashMap as HashMap;
use std::ops::Bound::{Excluded, Unbounded};

use verbs_api::{Gid, QpCap, QpType};

use crate::counters::Counters;
use crate::mem::Memory;
use crate::policy::{self, Violation};
use crate::qp::{Completion, Env, Qp, QpInit, RxPacket};
use crate::srq::Srq;
use crate::time::Instant;
use crate::wire::{Error as WireError, Frame, NetRepr};

/// Why a received frame went no further. Every drop is counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Drop {
    Malformed(WireError),
    IcrcMismatch,
    UnknownQp(u32),
    WrongTransport {
        qpn: u32,
    },
    /// Refused by the admission policy (transport::policy); `peer` is the source GID.
    Refused {
        qpn: u32,
        peer: Gid,
        violation: Violation,
    },
}

/// Frame-level counters of an endpoint (QP counters are per QP).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EndpointCounters {
    pub rx_frames: u64,
    pub tx_frames: u64,
    pub rx_malformed: u64,
    pub rx_icrc_err: u64,
    pub rx_unknown_qp: u64,
    pub rx_wrong_transport: u64,
    pub rx_bad_pkey: u64,
    pub rx_bad_qkey: u64,
    pub rx_bad_jkey: u64,
    pub rx_foreign_dgid: u64,
    pub rx_spoofed_sgid: u64,
}

pub struct Endpoint<M: Memory> {
    pub mem: M,
    qps: BTreeMap<u32, Qp>,
    srqs: BTreeMap<u32, Srq>,
    /// QPN after which the next transmit scan starts (round robin).
    cursor: u32,
    next_qpn: u32,
    next_srqn: u32,
    counters: EndpointCounters,
    /// Counters of destroyed QPs, so totals survive them.
    retired: Counters,
    /// TEST-ONLY fault injection (see [`Endpoint::set_skip_pkey_check`]).
    skip_pkey_check: bool,
    /// The GIDs this endpoint owns (policy rule 1); empty: not checked.
    local_gids: Vec<Gid>,
    /// Transmit weights (QoS); absent: 1.
    weights: HashMap<u32, u32>,
    /// Frames the QP at `cursor` may still send in its current turn.
    burst_left: u32,
    /// QPs that may have a frame, completion or event to give: every poll
    /// visits only these, so idle QPs cost nothing (scale: 100 000 QPs).
    active: BTreeSet<u32>,
    /// Timer index: (deadline, QPN), and each QP's entry in it.
    deadlines: BTreeSet<(Instant, u32)>,
    deadline_of: HashMap<u32, Instant>,
    /// QPs with something to build ahead while the device is idle
    /// (`Endpoint::prepare`).
    to_prepare: Vec<u32>,
}

/// rxe numbers QPs from 0x11 (after the special QP0/QP1 and a reserved range).
pub const FIRST_QPN: u32 = 0x11;

impl<M: Memory> Endpoint<M> {
    pub fn new(mem: M) -> Self {
        Endpoint {
            mem,
            qps: BTreeMap::new(),
            srqs: BTreeMap::new(),
            cursor: 0,
            next_qpn: FIRST_QPN,
            next_srqn: 1,
            counters: EndpointCounters::default(),
            retired: Counters::default(),
            skip_pkey_check: false,
            local_gids: Vec::new(),
            weights: Default::default(),
            burst_left: 0,
            active: BTreeSet::new(),
            deadlines: BTreeSet::new(),
            deadline_of: HashMap::default(),
            to_prepare: Vec::new(),
        }
    }

    /// TEST-ONLY: accept packets whatever their P_Key, i.e. deliberately break
    /// IBTA partitioning. Exists so the conformance suite can prove that its
    /// P_Key cases fail on a non-conforming device (softrdma's
    /// `DeviceConfig::broken`); never set it otherwise.
    pub fn set_skip_pkey_check(&mut self, skip: bool) {
        self.skip_pkey_check = skip;
    }

    /// Creates a QP and returns its number.
    pub fn create_qp(&mut self, qp_type: QpType, pd: u32, cap: QpCap, sq_sig_all: bool, srq: Option<u32>) -> u32 {
        let qpn = self.next_qpn;
        self.next_qpn = (self.next_qpn + 1) & 0xff_ffff;
        self.qps.insert(qpn, Qp::new(QpInit { qpn, qp_type, pd, cap, sq_sig_all, srq }));
        self.active.insert(qpn);
        qpn
    }

    pub fn destroy_qp(&mut self, qpn: u32) -> Option<Qp> {
        let qp = self.qps.remove(&qpn)?;
        self.weights.remove(&qpn);
        self.active.remove(&qpn);
        if let Some(t) = self.deadline_of.remove(&qpn) {
            self.deadlines.remove(&(t, qpn));
        }
        self.retired.accumulate(qp.counters());
        Some(qp)
    }

    pub fn qp(&self, qpn: u32) -> Option<&Qp> {
        self.qps.get(&qpn)
    }

    /// A QP to change (post, modify…); it is scheduled for the next polls.
    pub fn qp_mut(&mut self, qpn: u32) -> Option<&mut Qp> {
        let qp = self.qps.get_mut(&qpn)?;
        self.active.insert(qpn);
        Some(qp)
    }

    /// Re-files QP `qpn`'s deadline in the timer index. Lazily: every ACK
    /// pushes the ACK timer later, so a deadline already filed at or before
    /// the new one stays; when it comes due, `handle_timeout` finds nothing
    /// to do and files the QP's real deadline. Only an earlier deadline is
    /// filed at once. That keeps the index off the per-packet path.
    fn refile(&mut self, qpn: u32) {
        let Some(new) = self.qps.get(&qpn).and_then(|q| q.poll_timeout()) else {
            return;
        };
        match self.deadline_of.get(&qpn).copied() {
            Some(old) if old <= new => {}
            old => {
                if let Some(t) = old {
                    self.deadlines.remove(&(t, qpn));
                }
                self.deadlines.insert((new, qpn));
                self.deadline_of.insert(qpn, new);
            }
        }
    }

    /// After a QP had nothing to send: file its deadline, and let it leave
    /// the active set unless it still holds completions or events.
    fn settle(&mut self, qpn: u32) {
        self.refile(qpn);
        if self.qps.get(&qpn).is_none_or(|q| !q.has_output()) {
            self.active.remove(&qpn);
        }
    }

    pub fn qps(&self) -> impl Iterator<Item = &Qp> {
        self.qps.values()
    }

    pub fn create_srq(&mut self, pd: u32, max_wr: u32, max_sge: u32) -> u32 {
        let n = self.next_srqn;
        self.next_srqn += 1;
        self.srqs.insert(n, Srq::new(n, pd, max_wr, max_sge));
        n
    }

    pub fn srq_mut(&mut self, srqn: u32) -> Option<&mut Srq> {
        self.srqs.get_mut(&srqn)
    }

    pub fn destroy_srq(&mut self, srqn: u32) -> Option<Srq> {
        self.srqs.remove(&srqn)
    }

    /// The GIDs packets may be addressed to (the device's GID table).
    pub fn set_local_gids(&mut self, gids: Vec<Gid>) {
        self.local_gids = gids;
    }

    pub fn counters(&self) -> &EndpointCounters {
        &self.counters
    }

    /// QP counters summed over every QP, live and destroyed.
    pub fn qp_counters(&self) -> Counters {
        let mut c = self.retired;
        for qp in self.qps.values() {
            c.accumulate(qp.counters());
        }
        c
    }

    /// Verifies a received frame and hands its packet to the QP it names.
    pub fn handle_frame(&mut self, now: Instant, bytes: &[u8]) -> Result<(), Drop> {
        self.handle(now, bytes, Frame::verify(bytes))
    }

    /// `handle_frame` for a frame whose ICRC its link checked over these
    /// very bytes as it copied them in (`wire::frame::fill_checked`): the
    /// rest is verified as for any frame.
    pub fn handle_frame_icrc_checked(&mut self, now: Instant, bytes: &[u8]) -> Result<(), Drop> {
        self.handle(now, bytes, Frame::parse_icrc_checked(bytes))
    }

    fn handle(&mut self, now: Instant, bytes: &[u8], parsed: Result<Frame<'_>, WireError>) -> Result<(), Drop> {
        self.counters.rx_frames += 1;
        let frame = match parsed {
            Ok(f) => f,
            Err(WireError::IcrcMismatch { .. }) => {
                self.counters.rx_icrc_err += 1;
                return Err(Drop::IcrcMismatch);
            }
            Err(e) => {
                self.counters.rx_malformed += 1;
                return Err(Drop::Malformed(e));
            }
        };
        let bth = frame.repr.ib.bth;
        let Some(qp) = self.qps.get_mut(&bth.dest_qpn) else {
            self.counters.rx_unknown_qp += 1;
            return Err(Drop::UnknownQp(bth.dest_qpn));
        };
        let want = match qp.qp_type() {
            QpType::Rc => crate::wire::Transport::Rc,
            QpType::Uc => crate::wire::Transport::Uc,
            QpType::Ud => crate::wire::Transport::Ud,
        };
        if bth.opcode.check_transport(want).is_err() {
            self.counters.rx_wrong_transport += 1;
            return Err(Drop::WrongTransport { qpn: bth.dest_qpn });
        }
        let (l3, sgid) = source(bytes, &frame);
        let dgid = dest_gid(&frame);
        match policy::admit(qp, &frame.repr.ib, sgid, dgid, &self.local_gids) {
            Err(Violation::BadPkey { .. }) if self.skip_pkey_check => {}
            Err(v) => {
                let c = &mut self.counters;
                match v {
                    Violation::BadPkey { .. } => c.rx_bad_pkey += 1,
                    Violation::QkeyMismatch { .. } => c.rx_bad_qkey += 1,
                    Violation::JkeyMismatch { .. } => c.rx_bad_jkey += 1,
                    Violation::ForeignDestination { .. } => c.rx_foreign_dgid += 1,
                    Violation::SpoofedSource { .. } => c.rx_spoofed_sgid += 1,
                }
                return Err(Drop::Refused { qpn: bth.dest_qpn, peer: sgid, violation: v });
            }
            Ok(()) => {}
        }
        let pkt = RxPacket { ib: &frame.repr.ib, payload: frame.payload(), l3, sgid };
        let srq = qp.srq().and_then(|n| self.srqs.get_mut(&n));
        let mut env = Env { mem: &mut self.mem, srq };
        qp.handle_packet(now, &pkt, &mut env);
        let qpn = bth.dest_qpn;
        self.active.insert(qpn);
        self.refile(qpn);
        Ok(())
    }

    /// Weight of a QP in transmit scheduling (default 1): a QP sends up to
    /// `weight` frames in a row when its turn comes (weighted round robin).
    pub fn set_qp_weight(&mut self, qpn: u32, weight: u32) {
        self.weights.insert(qpn, weight.max(1));
    }

    /// Writes the next frame to send into `buf`; active QPs take turns, each
    /// for as many frames as its weight.
    pub fn poll_transmit(&mut self, now: Instant, buf: &mut Vec<u8>) -> bool {
        let start = self.cursor;
        if self.burst_left > 0 && self.active.contains(&start) {
            if let Some(q) = self.qps.get_mut(&start) {
                if q.poll_transmit(now, &self.mem, buf) {
                    if q.list_for_prepare() {
                        self.to_prepare.push(start);
                    }
                    self.burst_left -= 1;
                    self.counters.tx_frames += 1;
                    self.refile(start);
                    return true;
                }
            }
        }
        // Visit the active QPs after `start`, then wrap around up to `start`.
        let mut pos = start;
        let mut wrapped = false;
        loop {
            let next = self.active.range((Excluded(pos), Unbounded)).next().copied();
            let qpn = match next {
                Some(n) if wrapped && n > start => break,
                Some(n) => n,
                None if wrapped => break,
                None => {
                    wrapped = true;
                    match self.active.first() {
                        Some(&n) if n <= start => n,
                        _ => break,
                    }
                }
            };
            pos = qpn;
            let Some(q) = self.qps.get_mut(&qpn) else {
                self.active.remove(&qpn);
                continue;
            };
            if q.poll_transmit(now, &self.mem, buf) {
                if q.list_for_prepare() {
                    self.to_prepare.push(qpn);
                }
                self.cursor = qpn;
                // Most devices set no weights: skip the hash probe then.
                let weight = if self.weights.is_empty() { 1 } else { self.weights.get(&qpn).copied().unwrap_or(1) };
                self.burst_left = weight - 1;
                self.counters.tx_frames += 1;
                self.refile(qpn);
                return true;
            }
            self.settle(qpn);
        }
        false
    }

    /// Whether some QP has work to do ahead (`prepare`).
    pub fn wants_prepare(&self) -> bool {
        !self.to_prepare.is_empty()
    }

    /// Does the work QPs can do ahead of the frames they expect (an RC
    /// responder's next ACK, a requester's next headers: `Qp::prepare`).
    /// Call when the device is idle; it changes nothing on the wire.
    /// Returns how many frames were built.
    pub fn prepare(&mut self) -> usize {
        let mut built = 0;
        for i in 0..self.to_prepare.len() {
            if let Some(q) = self.qps.get_mut(&self.to_prepare[i]) {
                built += q.prepare();
            }
        }
        self.to_prepare.clear();
        built
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        let filed = self.deadlines.first().map(|(t, _)| *t);
        // Active QPs may have moved their deadline since it was filed.
        let fresh = self.active.iter().filter_map(|n| self.qps.get(n)?.poll_timeout()).min();
        match (filed, fresh) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        let mut due: Vec<u32> = Vec::new();
        while let Some(&(t, qpn)) = self.deadlines.first() {
            if t > now {
                break;
            }
            self.deadlines.pop_first();
            self.deadline_of.remove(&qpn);
            due.push(qpn);
        }
        due.extend(
            self.active
                .iter()
                .copied()
                .filter(|n| self.qps.get(n).and_then(|q| q.poll_timeout()).is_some_and(|t| t <= now)),
        );
        due.sort_unstable();
        due.dedup();
        for qpn in due {
            if let Some(qp) = self.qps.get_mut(&qpn) {
                qp.handle_timeout(now);
                self.active.insert(qpn);
                self.refile(qpn);
            }
        }
    }

    /// Whether any posted work request still names this L_Key.
    pub fn lkey_in_use(&self, lkey: u32) -> bool {
        self.qps.values().any(|q| q.references_lkey(lkey)) || self.srqs.values().any(|s| s.references_lkey(lkey))
    }

    /// The next asynchronous QP event, with its QPN.
    pub fn poll_qp_event(&mut self) -> Option<(u32, crate::qp::QpEvent)> {
        let qps = &mut self.qps;
        self.active.iter().find_map(|n| qps.get_mut(n)?.poll_event().map(|e| (*n, e)))
    }

    /// The next SRQ event, with its SRQ number.
    pub fn poll_srq_event(&mut self) -> Option<(u32, crate::srq::SrqEvent)> {
        self.srqs.iter_mut().find_map(|(n, s)| s.poll_event().map(|e| (*n, e)))
    }

    pub fn srq(&self, srqn: u32) -> Option<&Srq> {
        self.srqs.get(&srqn)
    }

    /// The next work completion of any QP, with its QPN.
    pub fn poll_completion(&mut self) -> Option<(u32, Completion)> {
        let qps = &mut self.qps;
        self.active.iter().find_map(|n| qps.get_mut(n)?.poll_completion().map(|c| (*n, c)))
    }
}

/// The GID a packet is addressed to.
fn dest_gid(frame: &Frame<'_>) -> Gid {
    match frame.repr.net {
        NetRepr::V4 { ip, .. } => Gid::from_ipv4(ip.dst),
        NetRepr::V6 { ip, .. } => Gid::from_ipv6(ip.dst),
        NetRepr::V1 { grh } => Gid(grh.dgid),
    }
}

/// The packet's L3 header bytes (the GRH area of a UD receive is built from
/// them), and the sender's GID.
fn source<'a>(bytes: &'a [u8], frame: &Frame<'_>) -> (&'a [u8], Gid) {
    let l3 = frame.repr.eth.header_len();
    match frame.repr.net {
        NetRepr::V4 { ip, .. } => (&bytes[l3..l3 + 20], Gid::from_ipv4(ip.src)),
        NetRepr::V6 { ip, .. } => (&bytes[l3..l3 + 40], Gid::from_ipv6(ip.src)),
        NetRepr::V1 { grh: g } => (&bytes[l3..l3 + 40], Gid(g.sgid)),
    }
}
