//! The responder: executes incoming requests in PSN order and owes the
//! requester ACKs, NAKs, READ responses and atomic ACKs (IBTA Vol 1 §9.7.5.1
//! "responder side"; rxe's resp.c).

use verbs_api::{AccessFlags, QpState, QpType, WcFlags, WcOpcode, WcStatus, WorkCompletion};

use super::completer::scatter;
use super::requester::position;
use super::{CqSide, Env, InProgress, Qp, Resource, RespOut, RxPacket};
use crate::mem::{AtomicOp, Key, MemError, Memory};
use crate::psn::Psn;
use crate::srq::RecvWqe;
use crate::wire::opcode::{Operation, Position};
use crate::wire::{AethRepr, AtomicAckEthRepr, ExtHeaders, IbRepr, NakCode, Opcode, RethRepr, Syndrome};

/// rxe's ACK syndrome: "invalid credit count" — no end-to-end credits.
pub(crate) const ACK: Syndrome = Syndrome::Ack { credits: 31 };

/// What executing a request decided.
enum Verdict {
    /// Executed; acknowledge if asked.
    Done,
    /// Executed a READ or atomic; its response is queued already.
    Responded,
    /// No receive WQE: RNR NAK, nothing consumed.
    Rnr,
    /// Dropped without a word (UC/UD errors).
    Drop,
    /// A NAK and, for the responder, the completion status of a class C error.
    Nak(NakCode, Option<WcStatus>),
}

fn mem_nak(e: MemError) -> NakCode {
    match e {
        MemError::Misaligned => NakCode::InvalidRequest,
        _ => NakCode::RemoteAccessError,
    }
}

impl Qp {
    pub(crate) fn handle_request(&mut self, pkt: &RxPacket<'_>, env: &mut Env<'_>) {
        if !matches!(self.attr.qp_state, QpState::Rtr | QpState::Rts | QpState::Sqd | QpState::Sqe) {
            return;
        }
        match self.init.qp_type {
            QpType::Ud => self.ud_receive(pkt, env),
            QpType::Uc => self.uc_receive(pkt, env),
            QpType::Rc => self.rc_receive(pkt, env),
        }
    }

    fn rc_receive(&mut self, pkt: &RxPacket<'_>, env: &mut Env<'_>) {
        let psn = Psn::new(pkt.ib.bth.psn);
        let d = psn.distance(self.resp.epsn);
        if d > 0 {
            // IBTA Vol 1 ch. 9: one sequence NAK per gap, naming the expected PSN.
            self.counters.out_of_seq_request += 1;
            if !self.resp.nak_sent {
                self.resp.nak_sent = true;
                let (epsn, msn) = (self.resp.epsn, self.resp.msn);
                self.queue_ack(epsn, Syndrome::Nak(NakCode::PsnSequenceError), msn);
            }
            return;
        }
        if d < 0 {
            self.counters.duplicate_request += 1;
            self.duplicate(pkt, psn, env.mem);
            return;
        }
        self.resp.nak_sent = false;
        match self.execute(pkt, psn, env) {
            Verdict::Done => {
                self.resp.epsn = psn.next();
                if pkt.ib.bth.ack_req {
                    let msn = self.resp.msn;
                    self.queue_ack(psn, ACK, msn);
                }
            }
            Verdict::Responded => {}
            Verdict::Rnr => {
                self.counters.send_rnr_err += 1;
                let (msn, t) = (self.resp.msn, self.attr.min_rnr_timer);
                self.queue_ack(psn, Syndrome::RnrNak { timer: t }, msn);
            }
            Verdict::Drop => {}
            Verdict::Nak(code, status) => {
                match code {
                    NakCode::InvalidRequest => self.counters.nak_invalid_request_sent += 1,
                    NakCode::RemoteAccessError => self.counters.nak_remote_access_sent += 1,
                    _ => self.counters.nak_remote_op_sent += 1,
                }
                let msn = self.resp.msn;
                self.queue_ack(psn, Syndrome::Nak(code), msn);
                // Class C errors (IBTA Vol 1 ch. 9): the responder QP goes to
                // ERR; responses owed for earlier PSNs and the NAK still go out.
                let owed = std::mem::take(&mut self.resp.out);
                if let Some(s) = status {
                    self.fail_current_recv(s);
                }
                self.fatal(WcStatus::RemAccessErr);
                self.resp.out = owed;
            }
        }
    }

    fn uc_receive(&mut self, pkt: &RxPacket<'_>, env: &mut Env<'_>) {
        let psn = Psn::new(pkt.ib.bth.psn);
        let pos = pkt.ib.bth.opcode.info().position;
        if psn.distance(self.resp.epsn) < 0 {
            // Behind the expected PSN: a duplicate or a straggler, never new data.
            self.counters.duplicate_request += 1;
            return;
        }
        if psn != self.resp.epsn {
            // IBTA Vol 1 ch. 9: UC drops a partial message on a PSN gap and
            // resynchronises on the next FIRST or ONLY.
            self.abort_uc_message();
            if !pos.starts_message() {
                self.counters.uc_gap_drops += 1;
                self.resp.resync = true;
                return;
            }
        } else if self.resp.resync && !pos.starts_message() {
            self.counters.uc_gap_drops += 1;
            self.resp.epsn = psn.next();
            return;
        }
        self.resp.resync = false;
        self.resp.epsn = psn.next();
        match self.execute(pkt, psn, env) {
            Verdict::Done | Verdict::Responded => {}
            Verdict::Rnr => {
                self.counters.rcv_no_wqe_drops += 1;
                self.resp.resync = true;
            }
            Verdict::Drop | Verdict::Nak(..) => {
                self.abort_uc_message();
                self.resp.resync = true;
            }
        }
    }

    /// Puts a partly filled receive WQE back for the next message (UC).
    fn abort_uc_message(&mut self) {
        if let Some(InProgress::Send { wqe, .. }) = self.resp.cur.take() {
            self.rq.push_front(wqe);
        }
        self.resp.cur = None;
        self.resp.cur_op = None;
    }

    fn ud_receive(&mut self, pkt: &RxPacket<'_>, env: &mut Env<'_>) {
        // The Q_Key was checked on admission (transport::policy).
        let Some(deth) = pkt.ib.ext.deth else { return };
        let Some(wqe) = self.take_recv(env) else {
            self.counters.rcv_no_wqe_drops += 1;
            return;
        };
        let pd = self.init.pd;
        let need = 40 + pkt.payload.len() as u64;
        let mut wc = WorkCompletion::new(wqe.wr_id, WcStatus::Success, WcOpcode::Recv, self.init.qpn);
        if wqe.capacity() < need {
            wc.status = WcStatus::LocLenErr;
        } else if scatter(env.mem, pd, &wqe.sges, 0, &pkt.grh_area()).is_err()
            || scatter(env.mem, pd, &wqe.sges, 40, pkt.payload).is_err()
        {
            wc.status = WcStatus::LocProtErr;
        }
        if wc.status == WcStatus::Success {
            wc.byte_len = need as u32;
        }
        wc.src_qp = deth.src_qpn;
        wc.wc_flags.insert(WcFlags::GRH);
        if let Some(imm) = pkt.ib.ext.immdt {
            wc.imm_data = imm.imm;
            wc.wc_flags.insert(WcFlags::WITH_IMM);
        }
        wc.pkey_index = self.attr.pkey_index;
        self.counters.rdma_recvs += 1;
        self.push_completion(CqSide::Recv, wc, pkt.ib.bth.solicited);
    }

    fn take_recv(&mut self, env: &mut Env<'_>) -> Option<RecvWqe> {
        match (self.init.srq, env.srq.as_deref_mut()) {
            (Some(_), Some(srq)) => srq.take(),
            (Some(_), None) => None,
            (None, _) => self.rq.pop_front(),
        }
    }

    fn has_recv(&self, env: &Env<'_>) -> bool {
        match (self.init.srq, env.srq.as_deref()) {
            (Some(_), Some(srq)) => srq.peek().is_some(),
            (Some(_), None) => false,
            (None, _) => !self.rq.is_empty(),
        }
    }

    /// Executes an in-sequence RC or UC request.
    fn execute(&mut self, pkt: &RxPacket<'_>, psn: Psn, env: &mut Env<'_>) -> Verdict {
        let info = pkt.ib.bth.opcode.info();
        // IBTA Vol 1 ch. 9: the opcode sequence must continue the message in progress.
        let continuing = !info.position.starts_message();
        if continuing != self.resp.cur_op.is_some() || (continuing && self.resp.cur_op != Some(info.operation)) {
            return if self.init.qp_type == QpType::Rc {
                Verdict::Nak(NakCode::InvalidRequest, None)
            } else {
                Verdict::Drop
            };
        }
        match info.operation {
            Operation::Send => self.exec_send(pkt, env),
            Operation::RdmaWrite => self.exec_write(pkt, env),
            Operation::ReadRequest => self.exec_read(pkt, psn, env.mem),
            Operation::CompareSwap | Operation::FetchAdd => self.exec_atomic(pkt, psn, env.mem),
            _ => Verdict::Drop,
        }
    }

    fn exec_send(&mut self, pkt: &RxPacket<'_>, env: &mut Env<'_>) -> Verdict {
        let pos = pkt.ib.bth.opcode.info().position;
        if pos.starts_message() {
            let Some(wqe) = self.take_recv(env) else {
                return Verdict::Rnr;
            };
            self.resp.cur = Some(InProgress::Send { wqe, offset: 0 });
            self.resp.cur_op = Some(Operation::Send);
        }
        if let Err(v) = self.check_segment(pkt) {
            return v;
        }
        let pd = self.init.pd;
        let Some(InProgress::Send { wqe, offset }) = &mut self.resp.cur else {
            return Verdict::Drop;
        };
        let end = *offset + pkt.payload.len() as u64;
        if end > wqe.capacity() {
            return Verdict::Nak(NakCode::InvalidRequest, Some(WcStatus::LocLenErr));
        }
        if scatter(env.mem, pd, &wqe.sges, *offset, pkt.payload).is_err() {
            return Verdict::Nak(NakCode::RemoteOperationalError, Some(WcStatus::LocProtErr));
        }
        *offset = end;
        if pos.ends_message() {
            let Some(InProgress::Send { wqe, offset }) = self.resp.cur.take() else {
                return Verdict::Drop;
            };
            self.resp.cur_op = None;
            let mut wc = WorkCompletion::new(wqe.wr_id, WcStatus::Success, WcOpcode::Recv, self.init.qpn);
            wc.byte_len = offset as u32;
            wc.src_qp = self.attr.dest_qp_num;
            if let Some(imm) = pkt.ib.ext.immdt {
                wc.imm_data = imm.imm;
                wc.wc_flags.insert(WcFlags::WITH_IMM);
            }
            if let Some(ieth) = pkt.ib.ext.ieth {
                if env.mem.invalidate(pd, ieth.rkey).is_err() {
                    self.resp.cur = Some(InProgress::Send { wqe, offset });
                    self.resp.cur_op = Some(Operation::Send);
                    return Verdict::Nak(NakCode::InvalidRequest, Some(WcStatus::RemInvReqErr));
                }
                wc.invalidated_rkey = ieth.rkey;
                wc.wc_flags.insert(WcFlags::WITH_INV);
            }
            self.finish_message();
            self.counters.rdma_recvs += 1;
            self.push_completion(CqSide::Recv, wc, pkt.ib.bth.solicited);
        }
        Verdict::Done
    }

    /// IBTA Vol 1 ch. 9: FIRST and MIDDLE packets carry exactly one path MTU.
    fn check_segment(&self, pkt: &RxPacket<'_>) -> Result<(), Verdict> {
        let pos = pkt.ib.bth.opcode.info().position;
        let full = matches!(pos, Position::First | Position::Middle);
        let mtu = self.mtu();
        if (full && pkt.payload.len() != mtu) || pkt.payload.len() > mtu {
            return Err(if self.init.qp_type == QpType::Rc {
                Verdict::Nak(NakCode::InvalidRequest, None)
            } else {
                Verdict::Drop
            });
        }
        Ok(())
    }

    fn finish_message(&mut self) {
        self.resp.msn = (self.resp.msn + 1) & 0xff_ffff;
    }

    fn remote_violation(&mut self, e: MemError, rkey: u32, va: u64, len: u64) -> Verdict {
        self.counters.remote_access_violations += 1;
        self.events.push_back(super::QpEvent::AccessViolation { rkey, va, len, error: e });
        if self.init.qp_type == QpType::Rc {
            Verdict::Nak(mem_nak(e), None)
        } else {
            Verdict::Drop
        }
    }

    fn exec_write(&mut self, pkt: &RxPacket<'_>, env: &mut Env<'_>) -> Verdict {
        let pos = pkt.ib.bth.opcode.info().position;
        let pd = self.init.pd;
        if pos.starts_message() {
            let Some(reth) = pkt.ib.ext.reth else {
                return Verdict::Drop;
            };
            let len = reth.dma_len as u64;
            // IBTA Vol 1 ch. 9: a zero-length RDMA WRITE does not check its R_Key.
            if len > 0 {
                if !self.access_allows(AccessFlags::REMOTE_WRITE) {
                    return self.remote_violation(MemError::AccessDenied, reth.rkey, reth.va, len);
                }
                if let Err(e) = env.mem.check(pd, Key::Remote(reth.rkey), reth.va, len, AccessFlags::REMOTE_WRITE) {
                    return self.remote_violation(e, reth.rkey, reth.va, len);
                }
            }
            self.resp.cur = Some(InProgress::Write { va: reth.va, rkey: reth.rkey, remaining: len, total: len });
            self.resp.cur_op = Some(Operation::RdmaWrite);
        }
        if let Err(v) = self.check_segment(pkt) {
            return v;
        }
        // WRITE with immediate consumes a receive WQE: check before writing the last packet.
        let imm = pkt.ib.ext.immdt;
        if imm.is_some() && !self.has_recv(env) {
            if pos.starts_message() {
                self.resp.cur = None;
                self.resp.cur_op = None;
            }
            return Verdict::Rnr;
        }
        let Some(InProgress::Write { va, rkey, remaining, total }) = &mut self.resp.cur else {
            return Verdict::Drop;
        };
        let n = pkt.payload.len() as u64;
        if n > *remaining || (pos.ends_message() && n != *remaining) {
            return Verdict::Nak(NakCode::InvalidRequest, None);
        }
        let at = *va + (*total - *remaining);
        let (rk, tot) = (*rkey, *total);
        *remaining -= n;
        if n > 0 {
            if let Err(e) = env.mem.write(pd, Key::Remote(rk), at, pkt.payload) {
                return self.remote_violation(e, rk, at, n);
            }
        }
        if pos.ends_message() {
            self.resp.cur = None;
            self.resp.cur_op = None;
            self.finish_message();
            if let Some(imm) = imm {
                let wqe = self.take_recv(env).expect("checked above");
                let mut wc =
                    WorkCompletion::new(wqe.wr_id, WcStatus::Success, WcOpcode::RecvRdmaWithImm, self.init.qpn);
                wc.byte_len = tot as u32;
                wc.imm_data = imm.imm;
                wc.src_qp = self.attr.dest_qp_num;
                wc.wc_flags.insert(WcFlags::WITH_IMM);
                self.counters.rdma_recvs += 1;
                self.push_completion(CqSide::Recv, wc, pkt.ib.bth.solicited);
            }
        }
        Verdict::Done
    }

    /// READ/atomic requests whose responses are still to go, duplicates not
    /// counted: IBTA Vol 1 ch. 9 has a duplicate answered from the responder
    /// resource it already holds. Counting the answers to duplicates (a
    /// late fabric duplicate of a READ the requester has long completed, a
    /// retried READ tail) would NAK a requester that keeps exactly
    /// max_rd_atomic READs in flight (conformance `rc.read.many_outstanding`
    /// under faults found it; `duplicate_reads_do_not_use_up_max_dest_rd_atomic`).
    fn outstanding_rd_atomic(&self) -> usize {
        self.resp
            .out
            .iter()
            .filter(|o| matches!(o, RespOut::Read { dup: false, .. } | RespOut::Atomic { dup: false, .. }))
            .count()
    }

    fn exec_read(&mut self, pkt: &RxPacket<'_>, psn: Psn, mem: &mut dyn Memory) -> Verdict {
        let Some(reth) = pkt.ib.ext.reth else {
            return Verdict::Drop;
        };
        // IBTA Vol 1 ch. 9: more READ/atomic requests in flight than max_dest_rd_atomic is an invalid request.
        if self.outstanding_rd_atomic() >= self.attr.max_dest_rd_atomic.max(1) as usize {
            return Verdict::Nak(NakCode::InvalidRequest, None);
        }
        if reth.dma_len > 0 {
            if !self.access_allows(AccessFlags::REMOTE_READ) {
                return self.remote_violation(MemError::AccessDenied, reth.rkey, reth.va, reth.dma_len as u64);
            }
            if let Err(e) =
                mem.check(self.init.pd, Key::Remote(reth.rkey), reth.va, reth.dma_len as u64, AccessFlags::REMOTE_READ)
            {
                return self.remote_violation(e, reth.rkey, reth.va, reth.dma_len as u64);
            }
        }
        let npkts = (reth.dma_len as u64).div_ceil(self.mtu() as u64).max(1) as u32;
        self.finish_message();
        let msn = self.resp.msn;
        self.remember(Resource::Read { psn, npkts, msn });
        self.queue_read(psn, &reth, msn, false);
        self.resp.epsn = psn.add(npkts);
        Verdict::Responded
    }

    fn exec_atomic(&mut self, pkt: &RxPacket<'_>, psn: Psn, mem: &mut dyn Memory) -> Verdict {
        let Some(a) = pkt.ib.ext.atomic_eth else {
            return Verdict::Drop;
        };
        if self.outstanding_rd_atomic() >= self.attr.max_dest_rd_atomic.max(1) as usize {
            return Verdict::Nak(NakCode::InvalidRequest, None);
        }
        if !self.access_allows(AccessFlags::REMOTE_ATOMIC) {
            return self.remote_violation(MemError::AccessDenied, a.rkey, a.va, 8);
        }
        let op = if pkt.ib.bth.opcode == Opcode::RcCompareSwap {
            AtomicOp::CompareSwap { compare: a.compare, swap: a.swap_add }
        } else {
            AtomicOp::FetchAdd { add: a.swap_add }
        };
        let orig = match mem.atomic(self.init.pd, a.rkey, a.va, op) {
            Ok(v) => v,
            Err(e) => return self.remote_violation(e, a.rkey, a.va, 8),
        };
        self.finish_message();
        let msn = self.resp.msn;
        self.remember(Resource::Atomic { psn, orig, msn });
        self.resp.out.push_back(RespOut::Atomic { psn, orig, msn, dup: false });
        self.resp.epsn = psn.next();
        Verdict::Responded
    }

    fn remember(&mut self, r: Resource) {
        let cap = self.attr.max_dest_rd_atomic.max(1) as usize;
        while self.resp.resources.len() >= cap {
            self.resp.resources.pop_front();
        }
        self.resp.resources.push_back(r);
    }

    /// IBTA Vol 1 ch. 9: duplicates are answered, never executed twice —
    /// SEND/WRITE are re-acknowledged, READs re-read, atomics replayed from
    /// the responder resources.
    fn duplicate(&mut self, pkt: &RxPacket<'_>, psn: Psn, mem: &mut dyn Memory) {
        match pkt.ib.bth.opcode.info().operation {
            Operation::ReadRequest => {
                let Some(reth) = pkt.ib.ext.reth else { return };
                let found = self.resp.resources.iter().find_map(|r| match *r {
                    Resource::Read { psn: p, npkts, msn } if psn.forward_from(p) < npkts => Some(msn),
                    _ => None,
                });
                let Some(msn) = found else { return };
                if reth.dma_len > 0
                    && mem
                        .check(
                            self.init.pd,
                            Key::Remote(reth.rkey),
                            reth.va,
                            reth.dma_len as u64,
                            AccessFlags::REMOTE_READ,
                        )
                        .is_err()
                {
                    return;
                }
                // Re-executed READ: any response in the queue for the same PSNs is superseded.
                self.resp.out.retain(|o| !matches!(o, RespOut::Read { psn: p, .. } if *p == psn));
                self.queue_read(psn, &reth, msn, true);
            }
            Operation::CompareSwap | Operation::FetchAdd => {
                let found = self.resp.resources.iter().find_map(|r| match *r {
                    Resource::Atomic { psn: p, orig, msn } if p == psn => Some((orig, msn)),
                    _ => None,
                });
                if let Some((orig, msn)) = found {
                    if !self.resp.out.iter().any(|o| matches!(o, RespOut::Atomic { psn: p, .. } if *p == psn)) {
                        self.resp.out.push_back(RespOut::Atomic { psn, orig, msn, dup: false });
                    }
                }
            }
            // A duplicate SEND/WRITE is acknowledged at its own PSN. rxe acks
            // the latest PSN instead, which can jump over a READ/atomic
            // response still on its way and provoke a needless implied NAK.
            _ if pkt.ib.bth.ack_req => {
                let msn = self.resp.msn;
                self.queue_ack(psn, ACK, msn);
            }
            _ => {}
        }
    }

    /// Queues the responses to a READ (`dup`: to a duplicate of one).
    fn queue_read(&mut self, psn: Psn, reth: &RethRepr, msn: u32, dup: bool) {
        let (va, rkey, len) = (reth.va, reth.rkey, reth.dma_len);
        self.resp.out.push_back(RespOut::Read { psn, va, rkey, len, sent: 0, msn, dup });
    }

    /// Queues an ACK/NAK; a plain ACK replaces one still waiting at the tail
    /// (coalescing: the later ACK acknowledges everything the earlier did).
    fn queue_ack(&mut self, psn: Psn, syndrome: Syndrome, msn: u32) {
        if let (Some(RespOut::Ack { syndrome: Syndrome::Ack { .. }, .. }), Syndrome::Ack { .. }) =
            (self.resp.out.back(), syndrome)
        {
            self.resp.out.pop_back();
        }
        self.resp.out.push_back(RespOut::Ack { psn, syndrome, msn });
    }

    fn fail_current_recv(&mut self, status: WcStatus) {
        if let Some(InProgress::Send { wqe, .. }) = self.resp.cur.take() {
            let wc = WorkCompletion::new(wqe.wr_id, status, WcOpcode::Recv, self.init.qpn);
            self.push_completion(CqSide::Recv, wc, false);
        }
    }

    /// The PSN and MSN of the plain ACK at the head of the responses, if
    /// that is what goes next.
    pub(crate) fn plain_ack_due(&self) -> Option<(Psn, u32)> {
        match self.resp.out.front()? {
            RespOut::Ack { psn, syndrome: ACK, msn } if self.init.qp_type == QpType::Rc => Some((*psn, *msn)),
            _ => None,
        }
    }

    /// The next response packet, its payload left in `self.scratch`.
    pub(crate) fn next_response(&mut self, mem: &dyn Memory) -> Option<IbRepr> {
        if self.init.qp_type != QpType::Rc {
            return None;
        }
        let mtu = self.mtu() as u64;
        let pd = self.init.pd;
        self.read_payload = None;
        let front = self.resp.out.front_mut()?;
        let mut ext = ExtHeaders::default();
        let (opcode, psn) = match front {
            RespOut::Ack { psn, syndrome, msn } => {
                ext.aeth = Some(AethRepr { syndrome: *syndrome, msn: *msn });
                let p = *psn;
                self.resp.out.pop_front();
                self.scratch.clear();
                (Opcode::RcAcknowledge, p)
            }
            RespOut::Atomic { psn, orig, msn, .. } => {
                ext.aeth = Some(AethRepr { syndrome: ACK, msn: *msn });
                ext.atomic_ack_eth = Some(AtomicAckEthRepr { orig: *orig });
                let p = *psn;
                self.resp.out.pop_front();
                self.scratch.clear();
                (Opcode::RcAtomicAcknowledge, p)
            }
            RespOut::Read { psn, va, rkey, len, sent, msn, .. } => {
                let npkts = (*len as u64).div_ceil(mtu).max(1) as u32;
                let k = *sent;
                let pos = position(k, npkts);
                let off = k as u64 * mtu;
                let n = (*len as u64 - off.min(*len as u64)).min(mtu) as usize;
                let at = *va + off;
                let (rk, m, p) = (*rkey, *msn, psn.add(k));
                *sent += 1;
                if *sent == npkts {
                    self.resp.out.pop_front();
                }
                // IBTA §9.3.5: READ responses carry an AETH on FIRST, LAST and ONLY.
                if pos != Position::Middle {
                    ext.aeth = Some(AethRepr { syndrome: ACK, msn: m });
                }
                // A payload of several lines goes from memory straight into
                // the frame (`Qp::poll_transmit`), hashed where it lies; a
                // short one through `scratch`, hashed with the packet.
                let direct = n >= super::requester::HASH_WHERE_IT_LIES;
                self.scratch.resize(if direct { 0 } else { n }, 0);
                let fetched = if direct {
                    mem.check(pd, Key::Remote(rk), at, n as u64, crate::mem::read_right(Key::Remote(rk)))
                } else if n > 0 {
                    mem.read(pd, Key::Remote(rk), at, &mut self.scratch)
                } else {
                    Ok(())
                };
                if fetched.is_err() {
                    // The region went away between request and response.
                    self.resp.out.retain(|o| !matches!(o, RespOut::Read { psn: q, .. } if q.forward_from(p) < npkts));
                    ext = ExtHeaders::default();
                    ext.aeth = Some(AethRepr { syndrome: Syndrome::Nak(NakCode::RemoteAccessError), msn: m });
                    self.scratch.clear();
                    self.counters.nak_remote_access_sent += 1;
                    return Some(self.ib(self.bth(Opcode::RcAcknowledge, p), ext, 0));
                }
                if direct {
                    self.read_payload = Some(ReadPayload { rkey: rk, va: at, len: n });
                }
                let op = match pos {
                    Position::First => Opcode::RcReadResponseFirst,
                    Position::Middle => Opcode::RcReadResponseMiddle,
                    Position::Last => Opcode::RcReadResponseLast,
                    Position::Only => Opcode::RcReadResponseOnly,
                };
                (op, p)
            }
        };
        let bth = self.bth(opcode, psn);
        let len = self.read_payload.map_or(self.scratch.len(), |p| p.len);
        Some(self.ib(bth, ext, len))
    }

    /// Emits a READ response whose payload `next_response` left in memory
    /// (`read_payload`): gathered into the frame and hashed where it lies,
    /// or lent (`Memory::read_lent`): a READ completes at the requester
    /// only when this frame has arrived. Returns the payload length.
    pub(crate) fn emit_read_response(
        &self,
        frame: &crate::wire::FrameRepr,
        p: ReadPayload,
        mem: &dyn Memory,
        buf: &mut [u8],
    ) -> Option<usize> {
        let (mut crc, sealing) = frame.emit_around_payload(buf).ok()?;
        let out = &mut buf[frame.payload_range()];
        let key = Key::Remote(p.rkey);
        let pd = self.init.pd;
        let got = if frame.seals_without_payload() {
            mem.read_lent(pd, key, p.va, out, &mut crc)
        } else {
            mem.read_hashed(pd, key, p.va, out, &mut crc)
        };
        // (`next_response` checked the access under the same lock.)
        if got.is_err() || frame.seal(sealing, buf, crc).is_err() {
            mem.unlend();
            return None;
        }
        Some(p.len)
    }
}

/// A READ response's payload, still in memory (`Qp::read_payload`).
#[derive(Debug, Clone, Copy)]
pub(crate) struct ReadPayload {
    pub(crate) rkey: u32,
    pub(crate) va: u64,
    pub(crate) len: usize,
}
