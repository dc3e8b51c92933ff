//! The completer: consumes ACKs, NAKs, READ responses and atomic ACKs
//! (IBTA Vol 1 §9.7.5.2 "requester side: response processing"), retires send
//! WQEs in order, and decides when to retransmit.

use verbs_api::{QpState, QpType, SendOp, WcStatus, WorkCompletion};

use super::{CqSide, Qp, RxPacket};
use crate::mem::{Key, Memory};
use crate::psn::Psn;
use crate::time::Instant;
use crate::wire::opcode::Operation;
use crate::wire::{NakCode, Syndrome};

/// IBTA Vol 1 ch. 9 NAK codes mapped to ibverbs completion statuses.
pub(crate) fn nak_status(code: NakCode) -> WcStatus {
    match code {
        NakCode::InvalidRequest => WcStatus::RemInvReqErr,
        NakCode::RemoteAccessError => WcStatus::RemAccessErr,
        NakCode::RemoteOperationalError => WcStatus::RemOpErr,
        NakCode::InvalidRdRequest => WcStatus::RemInvRdReqErr,
        NakCode::PsnSequenceError | NakCode::Reserved(_) => WcStatus::BadRespErr,
    }
}

impl Qp {
    pub(crate) fn handle_response(&mut self, now: Instant, pkt: &RxPacket<'_>, mem: &mut dyn Memory) {
        if self.init.qp_type != QpType::Rc || !matches!(self.attr.qp_state, QpState::Rts | QpState::Sqd) {
            self.counters.ignored_responses += 1;
            return;
        }
        let psn = Psn::new(pkt.ib.bth.psn);
        // A response must be for a PSN in [una - 1, high): anything else is a
        // stale duplicate or a "ghost" (IBTA Vol 1 ch. 9: silently dropped).
        let behind = psn.distance(self.req.una);
        let ahead = psn.distance(self.req.high);
        if ahead >= 0 {
            self.counters.ignored_responses += 1;
            return;
        }
        if behind < -1 {
            // A stale duplicate still shows the responder at work: it answers
            // in order, so our requests wait behind it (kernel rxe serves a
            // duplicate READ whole before the next request).
            self.not_the_next_response(now);
            return;
        }
        let op = pkt.ib.bth.opcode.info().operation;
        let aeth = pkt.ib.ext.aeth;
        match (op, aeth.map(|a| a.syndrome)) {
            (Operation::Acknowledge, Some(Syndrome::Ack { .. })) => {
                if let Some(p) = self.ack_upto(now, psn) {
                    self.retry(now, p);
                }
            }
            (Operation::Acknowledge, Some(Syndrome::RnrNak { timer })) => {
                self.counters.rcvd_rnr_err += 1;
                match self.ack_upto(now, psn.sub(1)) {
                    Some(p) => self.retry(now, p),
                    None => self.rnr_nak(now, psn, timer),
                }
            }
            (Operation::Acknowledge, Some(Syndrome::Nak(NakCode::PsnSequenceError))) => {
                self.counters.rcvd_seq_err += 1;
                // IBTA Vol 1 ch. 9: a sequence NAK names the PSN to resume from
                // (unless it also implies an earlier READ/atomic response was
                // lost); it consumes a retry like a timeout does.
                let from = self.ack_upto(now, psn.sub(1)).unwrap_or(psn);
                self.retry(now, from);
            }
            (Operation::Acknowledge, Some(Syndrome::Nak(code))) => {
                let _ = self.ack_upto(now, psn.sub(1));
                if let Some(w) = self.req.sq.iter_mut().find(|w| w.contains(psn)) {
                    w.status = nak_status(code);
                }
                self.fatal(nak_status(code));
            }
            (Operation::ReadResponse, _) => self.read_response(now, pkt, psn, mem),
            (Operation::AtomicAcknowledge, Some(Syndrome::Ack { .. })) => self.atomic_ack(now, pkt, psn, mem),
            _ => self.counters.ignored_responses += 1,
        }
        self.retire();
    }

    /// Everything up to and including `psn` is acknowledged. A READ or atomic
    /// that an ACK covers before its response arrived lost that response: it
    /// is re-issued (IBTA Vol 1 ch. 9: "implied NAK").
    /// Returns the PSN of a READ/atomic the acknowledgement implies lost.
    #[must_use]
    fn ack_upto(&mut self, now: Instant, psn: Psn) -> Option<Psn> {
        let mut implied_nak = None;
        for w in self.req.sq.iter_mut() {
            if !w.started {
                break;
            }
            if w.done {
                continue;
            }
            if w.op.is_read_or_atomic() {
                if psn.distance(w.first_psn) >= 0 {
                    implied_nak = Some(w.resume_psn());
                }
                break;
            }
            if psn.distance(w.last_psn()) < 0 {
                break;
            }
            w.done = true;
        }
        let new_una = match implied_nak {
            Some(_) => self.req.sq.iter().find(|w| !w.done).map_or(psn.next(), |w| w.first_psn),
            None => psn.next(),
        };
        if new_una.distance(self.req.una) > 0 {
            self.req.una = new_una;
            self.progress(now);
        }
        implied_nak
    }

    /// Forward progress: fresh retry budgets and a restarted ACK timer.
    fn progress(&mut self, now: Instant) {
        self.req.rewound_to = None;
        self.req.retry_left = self.attr.retry_cnt;
        self.req.rnr_left = self.attr.rnr_retry;
        self.rearm(now);
    }

    fn rearm(&mut self, now: Instant) {
        let outstanding = self.req.sq.iter().any(|w| w.started && !w.done);
        self.req.ack_deadline =
            if outstanding { super::timers::local_ack_timeout(self.attr.timeout).map(|d| now + d) } else { None };
    }

    /// Starts a retransmission round from `psn`, or fails the QP when the
    /// retry budget is spent (IBTA Vol 1 ch. 9: retry_cnt counts timeouts and
    /// sequence NAKs; 7 means seven retries — not infinite, unlike rxe).
    pub(crate) fn retry(&mut self, now: Instant, psn: Psn) {
        if self.req.rewound_to == Some(psn) {
            return;
        }
        self.rewind(now, psn);
    }

    /// Rewinds unconditionally (timeouts) or fails the QP.
    fn rewind(&mut self, now: Instant, psn: Psn) {
        if self.req.retry_left == 0 {
            self.counters.retry_exceeded_err += 1;
            if let Some(w) = self.req.sq.iter_mut().find(|w| w.started && !w.done) {
                w.status = WcStatus::RetryExcErr;
            }
            self.fatal(WcStatus::RetryExcErr);
            return;
        }
        if !(self.rxe_retry_quirk && self.attr.retry_cnt == 7) {
            self.req.retry_left -= 1;
        }
        self.counters.completer_retry_err += 1;
        self.req.rewound_to = Some(psn);
        self.go_back(psn);
        self.rearm(now);
    }

    fn rnr_nak(&mut self, now: Instant, psn: Psn, timer: u8) {
        // A copy of the RNR NAK we are already waiting out (a duplicated
        // request draws two) must not spend another retry.
        if self.req.rnr_until.is_some() && self.req.rnr_psn == Some(psn) {
            return;
        }
        self.req.rnr_psn = Some(psn);
        // IBTA Vol 1 ch. 9 (RNR NAK): rnr_retry 7 means retry forever.
        if self.attr.rnr_retry != 7 {
            if self.req.rnr_left == 0 {
                self.counters.retry_rnr_exceeded_err += 1;
                if let Some(w) = self.req.sq.iter_mut().find(|w| w.contains(psn)) {
                    w.status = WcStatus::RnrRetryExcErr;
                }
                self.fatal(WcStatus::RnrRetryExcErr);
                return;
            }
            self.req.rnr_left -= 1;
        }
        self.go_back(psn);
        self.req.ack_deadline = None;
        self.req.rnr_until = Some(now + super::timers::rnr_timer(timer));
    }

    pub(crate) fn local_ack_timeout(&mut self, now: Instant) {
        if !matches!(self.attr.qp_state, QpState::Rts | QpState::Sqd) {
            return;
        }
        if !self.req.sq.iter().any(|w| w.started && !w.done) {
            return;
        }
        self.counters.local_ack_timeout_err += 1;
        let una = self.req.una;
        self.rewind(now, una);
    }

    /// The first WQE still waiting for its acknowledgement or response.
    fn first_pending(&self) -> Option<usize> {
        self.req.sq.iter().position(|w| !w.done)
    }

    fn read_response(&mut self, now: Instant, pkt: &RxPacket<'_>, psn: Psn, mem: &mut dyn Memory) {
        let Some(i) = self.req.sq.iter().position(|w| w.contains(psn) && matches!(w.op, SendOp::RdmaRead { .. }))
        else {
            self.not_the_next_response(now);
            return;
        };
        let first = self.req.sq[i].first_psn;
        if let Some(p) = self.ack_upto(now, first.sub(1)) {
            self.retry(now, p);
            return;
        }
        if self.first_pending() != Some(i) || self.attr.qp_state == QpState::Err {
            self.not_the_next_response(now);
            return;
        }
        let mtu = self.mtu() as u64;
        let pd = self.init.pd;
        let w = &self.req.sq[i];
        let expected = first.add(w.read_pkts);
        let d = psn.distance(expected);
        if d < 0 {
            self.not_the_next_response(now);
            return;
        }
        if d > 0 {
            // A response packet went missing: ask again for the rest.
            self.retry(now, expected);
            self.not_the_next_response(now);
            return;
        }
        let k = w.read_pkts;
        let pos = pkt.ib.bth.opcode.info().position;
        let offset = k as u64 * mtu;
        let want = (w.length - offset.min(w.length)).min(mtu) as usize;
        // After a re-request IBTA's responder starts again with FIRST; rxe
        // replays the rest of the first response (MIDDLE..LAST, as
        // `rdatm_res_state_replay` sends them). Either carries the bytes of
        // this PSN, and the length is checked below.
        let fresh = super::requester::position(k - w.read_base, w.npkts - w.read_base);
        if pos != fresh && pos != super::requester::position(k, w.npkts) {
            // Neither: a straggler from an earlier attempt of this READ.
            self.not_the_next_response(now);
            return;
        }
        if pkt.payload.len() != want {
            self.req.sq[i].status = WcStatus::BadRespErr;
            self.fatal(WcStatus::BadRespErr);
            return;
        }
        if scatter(mem, pd, &w.sges, offset, pkt.payload).is_err() {
            self.req.sq[i].status = WcStatus::LocProtErr;
            self.fatal(WcStatus::LocProtErr);
            return;
        }
        let w = &mut self.req.sq[i];
        w.read_pkts += 1;
        if w.read_pkts == w.npkts {
            w.done = true;
            let next = w.first_psn.add(w.npkts);
            if next.distance(self.req.una) > 0 {
                self.req.una = next;
            }
        }
        self.progress(now);
    }

    /// A response that is not the next one (a READ response out of turn, a
    /// stale duplicate) is ignored, but it still shows the responder at
    /// work: it may be sending the rest of an attempt before it serves the
    /// re-request (kernel rxe finishes a READ response before it looks at
    /// the next request). It restarts the ACK timer, not the retry budget,
    /// so that timeouts do not spend retries while responses come.
    fn not_the_next_response(&mut self, now: Instant) {
        self.counters.ignored_responses += 1;
        self.rearm(now);
    }

    fn atomic_ack(&mut self, now: Instant, pkt: &RxPacket<'_>, psn: Psn, mem: &mut dyn Memory) {
        let Some(i) = self.req.sq.iter().position(|w| w.contains(psn) && w.op.is_atomic()) else {
            self.counters.ignored_responses += 1;
            return;
        };
        if let Some(p) = self.ack_upto(now, psn.sub(1)) {
            self.retry(now, p);
            return;
        }
        if self.first_pending() != Some(i) || self.attr.qp_state == QpState::Err {
            self.counters.ignored_responses += 1;
            return;
        }
        let orig = pkt.ib.ext.atomic_ack_eth.map_or(0, |a| a.orig);
        let pd = self.init.pd;
        // The original value lands in the local buffer in host order, as ibverbs returns it.
        if scatter(mem, pd, &self.req.sq[i].sges, 0, &orig.to_ne_bytes()).is_err() {
            self.req.sq[i].status = WcStatus::LocProtErr;
            self.fatal(WcStatus::LocProtErr);
            return;
        }
        self.req.sq[i].done = true;
        if psn.next().distance(self.req.una) > 0 {
            self.req.una = psn.next();
        }
        self.progress(now);
    }

    /// Pops finished WQEs off the front of the send queue, in order, with
    /// their completions (IBTA Vol 1 ch. 10: send completions are in posting order).
    pub(crate) fn retire(&mut self) {
        while self.req.sq.front().is_some_and(|w| w.done) {
            let w = self.req.sq.pop_front().expect("front exists");
            self.req.cur = self.req.cur.saturating_sub(1);
            self.counters.rdma_sends += 1;
            if w.signaled(self.init.sq_sig_all) {
                let mut wc = WorkCompletion::new(w.wr_id, w.status, w.wc_opcode(), self.init.qpn);
                wc.byte_len = w.length as u32;
                self.push_completion(CqSide::Send, wc, false);
            }
        }
        self.check_drained();
    }
}

/// Writes `data` into a scatter list starting `offset` bytes in.
pub(crate) fn scatter(
    mem: &mut dyn Memory,
    pd: u32,
    sges: &[verbs_api::Sge],
    offset: u64,
    data: &[u8],
) -> Result<(), crate::mem::MemError> {
    let mut skip = offset;
    let mut done = 0usize;
    for sge in sges {
        if done == data.len() {
            break;
        }
        let len = sge.length as u64;
        if skip >= len {
            skip -= len;
            continue;
        }
        let n = ((len - skip) as usize).min(data.len() - done);
        mem.write(pd, Key::Local(sge.lkey), sge.addr + skip, &data[done..done + n])?;
        done += n;
        skip = 0;
    }
    if done < data.len() {
        return Err(crate::mem::MemError::OutOfBounds);
    }
    Ok(())
}
