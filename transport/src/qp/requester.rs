//! The requester: turns send WQEs into request packets (IBTA Vol 1 ch. 9
//! "requester side"), segmenting by path MTU, numbering PSNs, asking for ACKs,
//! and going back N on retransmission.

use verbs_api::{QpState, QpType, SendFlags, SendOp, WcStatus, WorkCompletion};

use super::{CqSide, Qp, SendWqe, MAX_PKT_PER_ACK, MAX_UNACKED_PSNS};
use crate::mem::{Key, MemError, Memory};
use crate::psn::Psn;
use crate::time::Instant;
use crate::wire::icrc;
use crate::wire::opcode::Position;
use crate::wire::Payload;
use crate::wire::{AtomicEthRepr, DethRepr, ExtHeaders, IethRepr, ImmDtRepr, Opcode, RethRepr};

/// Packets a WQE occupies in PSN space (IBTA Vol 1 ch. 9: a READ consumes one PSN
/// per expected response packet; a zero-length message still takes one).
pub(crate) fn packets_for(op: &SendOp, length: u64, mtu: usize) -> u32 {
    if op.is_atomic() {
        return 1;
    }
    length.div_ceil(mtu as u64).max(1) as u32
}

fn opcode_for(t: QpType, op: &SendOp, pos: Position) -> Opcode {
    use Opcode::*;
    use Position::*;
    match (t, op, pos) {
        (QpType::Ud, SendOp::SendWithImm { .. }, _) => UdSendOnlyImm,
        (QpType::Ud, _, _) => UdSendOnly,
        (_, SendOp::RdmaRead { .. }, _) => RcReadRequest,
        (_, SendOp::AtomicCmpSwp { .. }, _) => RcCompareSwap,
        (_, SendOp::AtomicFetchAdd { .. }, _) => RcFetchAdd,
        (t, op, pos) => {
            let rc = t == QpType::Rc;
            let write = matches!(op, SendOp::RdmaWrite { .. } | SendOp::RdmaWriteWithImm { .. });
            let imm = matches!(op, SendOp::SendWithImm { .. } | SendOp::RdmaWriteWithImm { .. });
            let inv = matches!(op, SendOp::SendWithInv { .. });
            match (rc, write, pos, imm, inv) {
                (true, false, First, ..) => RcSendFirst,
                (true, false, Middle, ..) => RcSendMiddle,
                (true, false, Last, true, _) => RcSendLastImm,
                (true, false, Last, _, true) => RcSendLastInv,
                (true, false, Last, ..) => RcSendLast,
                (true, false, Only, true, _) => RcSendOnlyImm,
                (true, false, Only, _, true) => RcSendOnlyInv,
                (true, false, Only, ..) => RcSendOnly,
                (true, true, First, ..) => RcWriteFirst,
                (true, true, Middle, ..) => RcWriteMiddle,
                (true, true, Last, true, _) => RcWriteLastImm,
                (true, true, Last, ..) => RcWriteLast,
                (true, true, Only, true, _) => RcWriteOnlyImm,
                (true, true, Only, ..) => RcWriteOnly,
                (false, false, First, ..) => UcSendFirst,
                (false, false, Middle, ..) => UcSendMiddle,
                (false, false, Last, true, _) => UcSendLastImm,
                (false, false, Last, ..) => UcSendLast,
                (false, false, Only, true, _) => UcSendOnlyImm,
                (false, false, Only, ..) => UcSendOnly,
                (false, true, First, ..) => UcWriteFirst,
                (false, true, Middle, ..) => UcWriteMiddle,
                (false, true, Last, true, _) => UcWriteLastImm,
                (false, true, Last, ..) => UcWriteLast,
                (false, true, Only, true, _) => UcWriteOnlyImm,
                (false, true, Only, ..) => UcWriteOnly,
            }
        }
    }
}

pub(crate) fn position(index: u32, npkts: u32) -> Position {
    match (index, npkts) {
        (_, 0 | 1) => Position::Only,
        (0, _) => Position::First,
        (i, n) if i + 1 == n => Position::Last,
        _ => Position::Middle,
    }
}

/// Payloads from this length on are hashed into the ICRC as they are
/// gathered. Below it, the extra CRC update costs more than the copy's
/// lines (stop 16: 64-byte WRITEs 3 % slower hashed where they lie).
pub(crate) const HASH_WHERE_IT_LIES: usize = 256;

/// Copies `out.len()` bytes starting `offset` bytes into a WQE's gather
/// list, hashing them into the packet's ICRC if `crc` is given; `lend`:
/// memory may leave them where they lie for now (`Memory::read_lent`).
fn gather(
    mem: &dyn Memory,
    pd: u32,
    w: &SendWqe,
    offset: u64,
    out: &mut [u8],
    mut crc: Option<&mut icrc::Running>,
    lend: bool,
) -> Result<(), MemError> {
    if let Some(d) = &w.inline {
        let src = &d[offset as usize..offset as usize + out.len()];
        out.copy_from_slice(src);
        if let Some(c) = crc {
            c.update(src);
        }
        return Ok(());
    }
    let mut skip = offset;
    let mut filled = 0usize;
    for sge in w.sges.iter() {
        if filled == out.len() {
            break;
        }
        let len = sge.length as u64;
        if skip >= len {
            skip -= len;
            continue;
        }
        let n = ((len - skip) as usize).min(out.len() - filled);
        let (va, part) = (sge.addr + skip, &mut out[filled..filled + n]);
        match crc.as_deref_mut() {
            Some(c) if lend => mem.read_lent(pd, Key::Local(sge.lkey), va, part, c)?,
            Some(c) => mem.read_hashed(pd, Key::Local(sge.lkey), va, part, c)?,
            None => mem.read(pd, Key::Local(sge.lkey), va, part)?,
        }
        filled += n;
        skip = 0;
    }
    Ok(())
}

impl Qp {
    /// Emits the next request packet into `buf` (sized to the frame);
    /// returns its payload length.
    pub(crate) fn next_request(&mut self, now: Instant, mem: &dyn Memory, buf: &mut Vec<u8>) -> Option<usize> {
        let st = self.attr.qp_state;
        if !matches!(st, QpState::Rts | QpState::Sqd) {
            return None;
        }
        if self.req.rnr_until.is_some() {
            return None;
        }
        let t = self.init.qp_type;
        let mtu = self.mtu();
        let i = self.next_sendable(st)?;
        let pd = self.init.pd;
        let w = &self.req.sq[i];
        let k = w.next_psn.forward_from(w.first_psn);
        // A READ request is one packet whatever the PSNs its responses take.
        let pos = if w.op.is_read_or_atomic() { Position::Only } else { position(k, w.npkts) };
        let psn = w.next_psn;
        let opcode = opcode_for(t, &w.op, pos);
        let mut ext = ExtHeaders::default();
        let mut payload_len = 0usize;
        let mut offset = 0u64;
        let mut ud_path = None;
        let mut dest_qpn = self.attr.dest_qp_num;
        match w.op {
            SendOp::RdmaRead { remote_addr, rkey } => {
                let skip = (w.read_base as u64 * mtu as u64).min(w.length);
                ext.reth = Some(RethRepr { va: remote_addr + skip, rkey, dma_len: (w.length - skip) as u32 });
            }
            SendOp::AtomicCmpSwp { remote_addr, rkey, compare, swap } => {
                ext.atomic_eth = Some(AtomicEthRepr { va: remote_addr, rkey, swap_add: swap, compare });
            }
            SendOp::AtomicFetchAdd { remote_addr, rkey, add } => {
                ext.atomic_eth = Some(AtomicEthRepr { va: remote_addr, rkey, swap_add: add, compare: 0 });
            }
            op => {
                offset = k as u64 * mtu as u64;
                payload_len = (w.length - offset.min(w.length)).min(mtu as u64) as usize;
                if pos.starts_message() {
                    if let SendOp::RdmaWrite { remote_addr, rkey }
                    | SendOp::RdmaWriteWithImm { remote_addr, rkey, .. } = op
                    {
                        ext.reth = Some(RethRepr { va: remote_addr, rkey, dma_len: w.length as u32 });
                    }
                }
                if pos.ends_message() {
                    match op {
                        SendOp::SendWithImm { imm } | SendOp::RdmaWriteWithImm { imm, .. } => {
                            ext.immdt = Some(ImmDtRepr { imm })
                        }
                        SendOp::SendWithInv { invalidate_rkey } => ext.ieth = Some(IethRepr { rkey: invalidate_rkey }),
                        _ => {}
                    }
                }
                if let Some(ud) = w.ud {
                    let qkey = crate::policy::effective_qkey(ud.remote_qkey, self.attr.qkey);
                    ext.deth = Some(DethRepr { qkey, src_qpn: self.init.qpn, resv8: 0 });
                    ud_path = Some(ud.path);
                    dest_qpn = ud.remote_qpn;
                }
            }
        }
        let mut bth = self.bth(opcode, psn);
        bth.dest_qpn = dest_qpn;
        let w = &mut self.req.sq[i];
        bth.solicited = pos.ends_message() && w.flags.contains(SendFlags::SOLICITED) && !w.op.is_read_or_atomic();
        if t == QpType::Rc {
            // rxe asks for an ACK at the end of each message and every
            // MAX_PKT_PER_ACK packets of a long one; READ and atomic requests
            // are answered anyway but carry AckReq too (IBTA Vol 1 ch. 9).
            self.req.noack_pkts += 1;
            bth.ack_req = pos.ends_message()
                || w.op.is_read_or_atomic()
                || self.req.noack_pkts >= MAX_PKT_PER_ACK
                || self.req.ackreq_next;
            self.req.ackreq_next = false;
            if bth.ack_req {
                self.req.noack_pkts = 0;
            }
        }
        let path = ud_path.or(self.path)?;
        let frame = self.frame_repr(path, self.ib(bth, ext, payload_len));
        let one_packet = self.req.sq[i].npkts == 1;
        if ud_path.is_none() {
            self.sent_request(&frame, path, one_packet);
        }
        // The payload goes from memory straight into its place in the frame.
        // A payload of several lines is hashed into the ICRC where it lies
        // (`icrc::Running`); a short one is hashed with the rest of the
        // packet, in one update fewer, unless the headers were built and
        // hashed ahead (`Qp::prepare`).
        let mut sealing = match self.take_ready_request(&frame, buf) {
            Some(ready) => Some(ready),
            None => {
                buf.resize(frame.buffer_len(), 0);
                let hashed = payload_len >= HASH_WHERE_IT_LIES;
                if hashed {
                    Some(frame.emit_around_payload(buf).ok()?)
                } else {
                    None
                }
            }
        };
        let crc = sealing.as_mut().map(|(crc, _)| crc);
        // RC completes a request only once the peer acknowledges it, so the
        // payload may stay in the MR until the frame is delivered; UC and
        // UD complete below, as the frame leaves.
        let lend = t == QpType::Rc && frame.seals_without_payload();
        let gathered = gather(mem, pd, &self.req.sq[i], offset, &mut buf[frame.payload_range()], crc, lend);
        if gathered.is_err() {
            mem.unlend();
            // IBTA Vol 1 ch. 10 local protection error: the WQE completes in
            // error; an RC QP goes to ERR, a UC/UD QP only to SQE.
            self.req.sq[i].status = WcStatus::LocProtErr;
            if t == QpType::Rc {
                self.fatal(WcStatus::LocProtErr);
            } else {
                self.send_queue_error();
            }
            return None;
        }
        let sealed = match sealing {
            Some((crc, s)) => frame.seal(s, buf, crc),
            None => frame.emit_with(Payload::InPlace, buf),
        };
        if sealed.is_err() {
            mem.unlend();
            return None;
        }
        let w = &mut self.req.sq[i];
        w.next_psn = if w.op.is_read_or_atomic() { w.first_psn.add(w.npkts) } else { psn.next() };
        let end = w.first_psn.add(w.npkts);
        if psn.distance(self.req.high) < 0 {
            self.counters.retransmitted_pkts += 1;
        }
        if w.next_psn.distance(self.req.high) > 0 {
            self.req.high = w.next_psn;
        }
        let finished = w.next_psn == end;
        if finished {
            self.req.cur = i + 1;
        }
        match t {
            QpType::Rc => {
                if self.req.ack_deadline.is_none() {
                    self.req.ack_deadline = super::timers::local_ack_timeout(self.attr.timeout).map(|d| now + d);
                }
            }
            // UC and UD complete a WQE once its last packet is on its way.
            QpType::Uc | QpType::Ud => {
                if finished {
                    let w = self.req.sq.remove(i).expect("index in range");
                    self.req.cur = i;
                    self.req.una = end;
                    if w.signaled(self.init.sq_sig_all) {
                        let mut wc = WorkCompletion::new(w.wr_id, WcStatus::Success, w.wc_opcode(), self.init.qpn);
                        wc.byte_len = w.length as u32;
                        self.push_completion(CqSide::Send, wc, false);
                    }
                    self.counters.rdma_sends += 1;
                    self.check_drained();
                }
            }
        }
        Some(payload_len)
    }

    /// Index of the WQE whose next packet may go now, starting any WQE whose
    /// turn has come; `None` if the window, fences, the read/atomic limit or
    /// SQD hold everything back.
    fn next_sendable(&mut self, st: QpState) -> Option<usize> {
        let mtu = self.mtu();
        let rc = self.init.qp_type == QpType::Rc;
        loop {
            let i = self.req.cur;
            let w = self.req.sq.get(i)?;
            if w.started && w.next_psn == w.first_psn.add(w.npkts) {
                self.req.cur += 1;
                continue;
            }
            if !w.started {
                if st == QpState::Sqd {
                    return None;
                }
                // Only a fenced WQE or a READ/atomic cares how many READs and
                // atomics are outstanding; counting them for every WQE would
                // scan the send queue once per message.
                let fenced = w.flags.contains(SendFlags::FENCE);
                if fenced || w.op.is_read_or_atomic() {
                    let earlier_rd_atomic =
                        self.req.sq.iter().take(i).filter(|x| x.op.is_read_or_atomic() && !x.done).count();
                    // IBTA §10.8.3.3: a fenced WQE waits for earlier READs/atomics.
                    if fenced && earlier_rd_atomic > 0 {
                        return None;
                    }
                    if w.op.is_read_or_atomic() && earlier_rd_atomic >= self.attr.max_rd_atomic.max(1) as usize {
                        return None;
                    }
                }
                if rc && self.req.psn.forward_from(self.req.una) >= MAX_UNACKED_PSNS {
                    return None;
                }
                let npkts = packets_for(&w.op, w.length, mtu);
                let first = self.req.psn;
                let w = &mut self.req.sq[i];
                w.started = true;
                w.first_psn = first;
                w.npkts = npkts;
                w.next_psn = first;
                self.req.psn = first.add(npkts);
                self.req.ssn = self.req.ssn.wrapping_add(1);
                return Some(i);
            }
            if rc && w.next_psn.forward_from(self.req.una) >= MAX_UNACKED_PSNS && !w.op.is_read_or_atomic() {
                return None;
            }
            return Some(i);
        }
    }

    /// Go-back-N: transmit again from `psn`. A READ resumes at its first
    /// missing response; the WQEs after it start over.
    pub(crate) fn go_back(&mut self, psn: Psn) {
        let Some(i) = self.req.sq.iter().position(|w| w.contains(psn)) else {
            return;
        };
        for (j, w) in self.req.sq.iter_mut().enumerate().skip(i) {
            if !w.started {
                break;
            }
            w.done = false;
            if j > i {
                w.read_pkts = 0;
            }
            w.read_base = w.read_pkts;
            w.next_psn = match w.op {
                _ if j > i => w.first_psn,
                SendOp::RdmaRead { .. } => w.resume_psn(),
                _ if w.op.is_atomic() => w.first_psn,
                _ => psn,
            };
        }
        self.req.cur = i;
        self.req.noack_pkts = 0;
        self.req.ackreq_next = true;
    }
}
