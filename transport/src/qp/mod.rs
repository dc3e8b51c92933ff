//! A queue pair: the RC, UC and UD transport state machines, sans-IO.
//!
//! Split as rxe splits it: the [`requester`] turns send WQEs into request
//! packets, the [`completer`] consumes ACKs and responses and retires send
//! WQEs, the [`responder`] executes incoming requests and produces ACKs and
//! responses. Inputs: [`Qp::post_send`], [`Qp::post_recv`], [`Qp::modify`],
//! [`Qp::handle_packet`], [`Qp::handle_timeout`]. Outputs:
//! [`Qp::poll_transmit`], [`Qp::poll_timeout`], [`Qp::poll_completion`].

mod ahead;
mod completer;
mod requester;
mod responder;
mod sge_list;
pub mod state;
pub mod timers;

use std::collections::VecDeque;

use verbs_api::{
    AccessFlags, Gid, Mtu, QpAttr, QpAttrMask, QpCap, QpState, QpType, RecvWr, SendFlags, SendOp, SendWr, WcOpcode,
    WcStatus, WorkCompletion,
};

use crate::counters::Counters;
use crate::mem::Memory;
use crate::path::Path;
use crate::psn::Psn;
use crate::srq::{RecvWqe, Srq};
use crate::time::Instant;
use crate::wire::{BthRepr, ExtHeaders, FrameRepr, IbRepr, NetRepr, Payload, UdpChecksum};

pub use state::ModifyError;

/// Everything fixed when a QP is created (`struct ibv_qp_init_attr`).
#[derive(Debug, Clone, Copy)]
pub struct QpInit {
    pub qpn: u32,
    pub qp_type: QpType,
    pub pd: u32,
    pub cap: QpCap,
    /// Every send WQE generates a completion, signaled or not.
    pub sq_sig_all: bool,
    /// The SRQ receives come from, if any.
    pub srq: Option<u32>,
}

/// Why a post was refused (ibverbs returns the errno in brackets).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PostError {
    /// [EINVAL] The QP's state does not accept this queue's work.
    InvalidState(QpState),
    /// [ENOMEM] The queue holds max_send_wr / max_recv_wr WQEs already.
    QueueFull,
    /// [EINVAL]
    TooManySge { given: u32, max: u32 },
    /// [EINVAL]
    InlineTooLong { len: usize, max: u32 },
    /// [EINVAL] A UD message longer than the path MTU, or a message over 2^31 bytes.
    MessageTooLong { len: u64, max: u64 },
    /// [EINVAL] An operation this QP type does not support (READ on UC, WRITE on UD…).
    UnsupportedOperation { op: &'static str, qp_type: QpType },
    /// [EINVAL] A UD send without an address handle.
    MissingDestination,
    /// [EINVAL] Receives of a QP attached to an SRQ go to the SRQ.
    UsesSrq,
    /// [EINVAL]
    InvalidArgument(&'static str),
}

impl core::fmt::Display for PostError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            PostError::InvalidState(s) => {
                write!(f, "QP in state {s:?} does not accept this work request")
            }
            PostError::QueueFull => write!(f, "work queue full"),
            PostError::TooManySge { given, max } => write!(f, "{given} SGEs, QP allows {max}"),
            PostError::InlineTooLong { len, max } => {
                write!(f, "{len} bytes inline, QP allows {max}")
            }
            PostError::MessageTooLong { len, max } => {
                write!(f, "message of {len} bytes, limit {max}")
            }
            PostError::UnsupportedOperation { op, qp_type } => {
                write!(f, "{op} is not supported on {qp_type:?} QPs")
            }
            PostError::MissingDestination => write!(f, "UD send without an address handle"),
            PostError::UsesSrq => write!(f, "QP receives from an SRQ; post to the SRQ"),
            PostError::InvalidArgument(w) => write!(f, "invalid argument: {w}"),
        }
    }
}

impl std::error::Error for PostError {}

/// Which completion queue a completion belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CqSide {
    Send,
    Recv,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Completion {
    pub side: CqSide,
    pub wc: WorkCompletion,
    /// Whether the completion is "solicited", for a CQ armed with
    /// `ibv_req_notify_cq(cq, 1)`: IBTA Vol 1 §11.4.2.2, and ibv_req_notify_cq(3):
    /// "A CQE is solicited if it is a receive completion for a message with
    /// the Solicited Event header bit set, or if the status is not
    /// successful." (Kernel rxe marks unsuccessful send completions
    /// unsolicited; softrdma follows the rule.)
    pub solicited: bool,
}

impl Completion {
    /// `se`: the Solicited Event bit of the message's last packet (receives only).
    pub fn new(side: CqSide, wc: WorkCompletion, se: bool) -> Self {
        let solicited = wc.status != WcStatus::Success || side == CqSide::Recv && se;
        Completion { side, wc, solicited }
    }
}

/// Asynchronous QP events (`enum ibv_event_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QpEvent {
    /// The QP went to ERR on its own (IBV_EVENT_QP_FATAL / QP_ACCESS_ERR).
    Fatal(WcStatus),
    /// A peer's request was refused by the memory checks (R_Key abuse).
    AccessViolation { rkey: u32, va: u64, len: u64, error: crate::mem::MemError },
    /// All outstanding send WQEs completed in SQD (IBV_EVENT_SQ_DRAINED).
    SqDrained,
}

/// The destination of a UD send, from its address handle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UdDest {
    pub path: Path,
    pub remote_qpn: u32,
    pub remote_qkey: u32,
}

/// A received IB packet as the endpoint hands it to a QP.
#[derive(Debug, Clone, Copy)]
pub struct RxPacket<'a> {
    /// Borrowed, not copied: an `IbRepr` is 160 bytes and this runs for
    /// every packet.
    pub ib: &'a IbRepr,
    pub payload: &'a [u8],
    /// The packet's IPv4 header (20 bytes), IPv6 header or GRH (40 bytes),
    /// for [`RxPacket::grh_area`].
    pub l3: &'a [u8],
    pub sgid: Gid,
}

impl RxPacket<'_> {
    /// The 40-byte GRH area a UD receive buffer starts with (ibverbs
    /// layout: the IPv6 header or GRH, or 20 zero bytes and the IPv4
    /// header). Built only for the UD receives that need it.
    pub fn grh_area(&self) -> [u8; 40] {
        let mut grh = [0u8; 40];
        let n = self.l3.len().min(40);
        grh[40 - n..].copy_from_slice(&self.l3[..n]);
        grh
    }
}

/// What a packet handler may reach besides the QP itself.
pub struct Env<'a> {
    pub mem: &'a mut dyn Memory,
    pub srq: Option<&'a mut Srq>,
}

/// A send work request once posted.
#[derive(Debug, Clone)]
pub(crate) struct SendWqe {
    pub wr_id: u64,
    pub op: SendOp,
    pub sges: sge_list::SgeList,
    pub inline: Option<Vec<u8>>,
    pub flags: SendFlags,
    pub length: u64,
    pub ud: Option<UdDest>,
    /// PSN of the first packet, fixed when the WQE is first transmitted.
    pub first_psn: Psn,
    /// PSNs the WQE consumes (READ: one per response packet).
    pub npkts: u32,
    pub started: bool,
    /// PSN of the next packet of this WQE to (re)transmit.
    pub next_psn: Psn,
    /// Acknowledged (SEND/WRITE) or its response fully received (READ/atomic).
    pub done: bool,
    /// READ: response packets received in order so far.
    pub read_pkts: u32,
    /// READ: the packet index the current request starts at (non-zero after
    /// a partial retry re-asked only for the missing tail).
    pub read_base: u32,
    /// The status to complete with when retired.
    pub status: WcStatus,
}

impl SendWqe {
    pub fn last_psn(&self) -> Psn {
        self.first_psn.add(self.npkts.saturating_sub(1))
    }
    /// Where transmission of this WQE resumes after a loss: READs only ask
    /// again for what has not arrived (IBTA Vol 1 ch. 9).
    pub fn resume_psn(&self) -> Psn {
        self.first_psn.add(self.read_pkts)
    }
    pub fn contains(&self, psn: Psn) -> bool {
        self.started && psn.forward_from(self.first_psn) < self.npkts
    }
    pub fn signaled(&self, sig_all: bool) -> bool {
        sig_all || self.flags.contains(SendFlags::SIGNALED) || self.status != WcStatus::Success
    }
    pub fn wc_opcode(&self) -> WcOpcode {
        match self.op {
            SendOp::Send | SendOp::SendWithImm { .. } | SendOp::SendWithInv { .. } => WcOpcode::Send,
            SendOp::RdmaWrite { .. } | SendOp::RdmaWriteWithImm { .. } => WcOpcode::RdmaWrite,
            SendOp::RdmaRead { .. } => WcOpcode::RdmaRead,
            SendOp::AtomicCmpSwp { .. } => WcOpcode::CompSwap,
            SendOp::AtomicFetchAdd { .. } => WcOpcode::FetchAdd,
        }
    }
}

/// Requester and completer state (they share the send queue).
#[derive(Debug, Default)]
pub(crate) struct Requester {
    pub sq: VecDeque<SendWqe>,
    /// Next PSN to give a WQE that starts.
    pub psn: Psn,
    /// Oldest PSN not yet acknowledged.
    pub una: Psn,
    /// One past the highest PSN ever sent (to count retransmissions).
    pub high: Psn,
    /// Index into `sq` of the WQE being transmitted.
    pub cur: usize,
    pub retry_left: u8,
    pub rnr_left: u8,
    pub ack_deadline: Option<Instant>,
    pub rnr_until: Option<Instant>,
    /// The PSN the current RNR wait is for.
    pub rnr_psn: Option<Psn>,
    pub noack_pkts: u32,
    pub ssn: u32,
    /// The PSN the last NAK-driven rewind went back to, until progress: more
    /// evidence of the same loss (later responses, duplicate NAKs) must not
    /// spend more retries.
    pub rewound_to: Option<Psn>,
    /// Ask for an ACK on the next packet: the first one after a rewind, so
    /// that the peer's answer to the retransmission comes back at once.
    pub ackreq_next: bool,
}

/// Output the responder still owes the requester, in PSN order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RespOut {
    Ack {
        psn: Psn,
        syndrome: crate::wire::Syndrome,
        msn: u32,
    },
    /// `dup`: the answer to a duplicate request (see `outstanding_rd_atomic`).
    Read {
        psn: Psn,
        va: u64,
        rkey: u32,
        len: u32,
        sent: u32,
        msn: u32,
        dup: bool,
    },
    Atomic {
        psn: Psn,
        orig: u64,
        msn: u32,
        dup: bool,
    },
}

/// Memory of executed READs and atomics, for duplicates (IBTA Vol 1 ch. 9 "responder resources").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Resource {
    Read { psn: Psn, npkts: u32, msn: u32 },
    Atomic { psn: Psn, orig: u64, msn: u32 },
}

#[derive(Debug)]
pub(crate) enum InProgress {
    Send { wqe: RecvWqe, offset: u64 },
    Write { va: u64, rkey: u32, remaining: u64, total: u64 },
}

#[derive(Debug, Default)]
pub(crate) struct Responder {
    pub epsn: Psn,
    pub msn: u32,
    pub cur: Option<InProgress>,
    /// The operation of the message in progress, to check the opcode sequence.
    pub cur_op: Option<crate::wire::opcode::Operation>,
    pub nak_sent: bool,
    /// UC: a gap was seen; drop until the next FIRST/ONLY.
    pub resync: bool,
    pub out: VecDeque<RespOut>,
    pub resources: VecDeque<Resource>,
}

/// A queue pair.
#[derive(Debug)]
pub struct Qp {
    pub(crate) init: QpInit,
    pub(crate) attr: QpAttr,
    pub(crate) path: Option<Path>,
    pub(crate) pkey: u16,
    pub(crate) req: Requester,
    pub(crate) resp: Responder,
    pub(crate) rq: VecDeque<RecvWqe>,
    pub(crate) completions: VecDeque<Completion>,
    pub(crate) events: VecDeque<QpEvent>,
    pub(crate) counters: Counters,
    pub(crate) ip_ident: u16,
    pub(crate) scratch: Vec<u8>,
    /// The payload of the READ response `next_response` just described,
    /// when it is to be gathered from memory rather than from `scratch`.
    pub(crate) read_payload: Option<responder::ReadPayload>,
    /// rxe treats retry_cnt = 7 as "retry forever", like rnr_retry; IBTA
    /// means seven retries. Off by default (docs/design.md, "Deviations").
    pub(crate) rxe_retry_quirk: bool,
    /// The job this QP belongs to; its packets carry a JKETH (wire::jketh).
    pub(crate) jkey: Option<u16>,
    /// The link finishes UDP checksums: IPv6 frames leave with only the
    /// pseudo-header's sum (`UdpChecksum::Partial`).
    pub(crate) udp_checksum_offload: bool,
    /// Frames built ahead while the device was idle (`Qp::prepare`).
    pub(crate) ahead: Option<Box<ahead::Ahead>>,
}

/// Packets between forced AckReqs in a long message (rxe's RXE_MAX_PKT_PER_ACK).
pub const MAX_PKT_PER_ACK: u32 = 64;
/// Unacknowledged PSNs a requester may have outstanding (rxe's RXE_MAX_UNACKED_PSNS).
pub const MAX_UNACKED_PSNS: u32 = 128;
/// Largest message (IBTA: 2^31 bytes).
pub const MAX_MSG_SIZE: u64 = 1 << 31;
/// The P_Key every port's index 0 holds unless told otherwise.
pub const DEFAULT_PKEY: u16 = 0xffff;

impl Qp {
    pub fn new(init: QpInit) -> Self {
        Qp {
            init,
            attr: QpAttr { cap: init.cap, ..QpAttr::default() },
            path: None,
            pkey: DEFAULT_PKEY,
            req: Requester::default(),
            resp: Responder::default(),
            rq: VecDeque::new(),
            completions: VecDeque::new(),
            events: VecDeque::new(),
            counters: Counters::default(),
            ip_ident: 0,
            scratch: Vec::new(),
            read_payload: None,
            rxe_retry_quirk: false,
            jkey: None,
            udp_checksum_offload: false,
            ahead: None,
        }
    }

    pub fn qpn(&self) -> u32 {
        self.init.qpn
    }
    pub fn qp_type(&self) -> QpType {
        self.init.qp_type
    }
    pub fn pd(&self) -> u32 {
        self.init.pd
    }
    pub fn srq(&self) -> Option<u32> {
        self.init.srq
    }
    pub fn state(&self) -> QpState {
        self.attr.qp_state
    }
    pub fn attr(&self) -> &QpAttr {
        &self.attr
    }
    pub fn path(&self) -> Option<&Path> {
        self.path.as_ref()
    }
    pub fn counters(&self) -> &Counters {
        &self.counters
    }
    pub fn pkey(&self) -> u16 {
        self.pkey
    }
    /// The port's active MTU, which bounds UD messages (connected QPs take
    /// their path MTU from modify).
    pub fn set_port_mtu(&mut self, mtu: Mtu) {
        if self.init.qp_type == QpType::Ud {
            self.attr.path_mtu = mtu;
        }
    }

    pub fn jkey(&self) -> Option<u16> {
        self.jkey
    }

    /// Binds the QP to a job: its packets carry the JKey, and it accepts
    /// only packets of the same job (transport::policy).
    pub fn set_jkey(&mut self, jkey: Option<u16>) {
        self.jkey = jkey;
    }

    /// Opts into rxe's reading of retry_cnt = 7 as infinite (off: IBTA's seven retries).
    pub fn set_rxe_retry_quirk(&mut self, on: bool) {
        self.rxe_retry_quirk = on;
    }

    /// Says the link finishes UDP checksums (a NIC's checksum offload):
    /// over IPv6, where a checksum is due, frames then carry only the
    /// pseudo-header's sum, and the link must finish every IPv6 RoCE frame
    /// this QP emits. IPv4 frames carry none either way, as rxe sends them.
    pub fn set_udp_checksum_offload(&mut self, on: bool) {
        self.udp_checksum_offload = on;
    }
    /// Sets the P_Key value the QP's P_Key index names (the device owns the table).
    pub fn set_pkey(&mut self, pkey: u16) {
        self.pkey = pkey;
    }
    pub fn mtu(&self) -> usize {
        self.attr.path_mtu.bytes()
    }
    pub fn send_queue_len(&self) -> usize {
        self.req.sq.len()
    }
    pub fn recv_queue_len(&self) -> usize {
        self.rq.len()
    }

    /// `ibv_modify_qp`. `path` is the resolved address vector, required with `AV`.
    pub fn modify(&mut self, attr: &QpAttr, mask: QpAttrMask, path: Option<Path>) -> Result<(), ModifyError> {
        let from = self.attr.qp_state;
        let to = if mask.contains(QpAttrMask::STATE) { attr.qp_state } else { from };
        if mask.contains(QpAttrMask::CUR_STATE) && attr.cur_qp_state != from {
            return Err(ModifyError::CurrentStateMismatch { claimed: attr.cur_qp_state, actual: from });
        }
        if mask.contains(QpAttrMask::STATE) {
            state::check(self.init.qp_type, from, to, mask)?;
        } else if !mask.minus(QpAttrMask::CUR_STATE).is_empty() {
            // Attributes alone: as a same-state transition.
            state::check(self.init.qp_type, from, from, mask.union(QpAttrMask::STATE))?;
        }
        validate_values(attr, mask)?;
        if mask.contains(QpAttrMask::AV) && path.is_none() {
            return Err(ModifyError::InvalidValue("AV given without a resolved path"));
        }

        // Everything checked: apply.
        let a = &mut self.attr;
        macro_rules! take {
            ($($m:ident => $f:ident),*) => { $( if mask.contains(QpAttrMask::$m) { a.$f = attr.$f; } )* };
        }
        take!(ACCESS_FLAGS => qp_access_flags, PKEY_INDEX => pkey_index, PORT => port_num, QKEY => qkey,
              PATH_MTU => path_mtu, TIMEOUT => timeout, RETRY_CNT => retry_cnt, RNR_RETRY => rnr_retry,
              RQ_PSN => rq_psn, SQ_PSN => sq_psn, MAX_QP_RD_ATOMIC => max_rd_atomic,
              MAX_DEST_RD_ATOMIC => max_dest_rd_atomic, MIN_RNR_TIMER => min_rnr_timer,
              DEST_QPN => dest_qp_num, EN_SQD_ASYNC_NOTIFY => en_sqd_async_notify);
        if mask.contains(QpAttrMask::AV) {
            self.path = path;
        }
        if mask.contains(QpAttrMask::RQ_PSN) {
            self.resp.epsn = Psn::new(attr.rq_psn);
        }
        if mask.contains(QpAttrMask::SQ_PSN) {
            let p = Psn::new(attr.sq_psn);
            self.req.psn = p;
            self.req.una = p;
            self.req.high = p;
        }
        if mask.contains(QpAttrMask::RETRY_CNT) {
            self.req.retry_left = attr.retry_cnt;
        }
        if mask.contains(QpAttrMask::RNR_RETRY) {
            self.req.rnr_left = attr.rnr_retry;
        }
        if to != from {
            self.enter(to);
        }
        Ok(())
    }

    fn enter(&mut self, to: QpState) {
        let from = self.attr.qp_state;
        self.attr.qp_state = to;
        self.attr.cur_qp_state = to;
        match to {
            QpState::Reset => {
                let (init, counters, quirk, jkey, pkey, offload) =
                    (self.init, self.counters, self.rxe_retry_quirk, self.jkey, self.pkey, self.udp_checksum_offload);
                *self = Qp::new(init);
                self.counters = counters;
                self.rxe_retry_quirk = quirk;
                self.udp_checksum_offload = offload;
                self.jkey = jkey;
                self.pkey = pkey;
            }
            QpState::Err => self.flush(),
            QpState::Rts if from == QpState::Sqd => {}
            QpState::Sqd => self.check_drained(),
            _ => {}
        }
    }

    /// IBTA §10.3.1 (Error state): every outstanding WQE completes with a flush error.
    fn flush(&mut self) {
        let qpn = self.qpn();
        while let Some(w) = self.req.sq.pop_front() {
            let status = if w.status != WcStatus::Success { w.status } else { WcStatus::WrFlushErr };
            let mut wc = WorkCompletion::new(w.wr_id, status, w.wc_opcode(), qpn);
            wc.byte_len = 0;
            self.completions.push_back(Completion::new(CqSide::Send, wc, false));
        }
        self.req.cur = 0;
        self.req.ack_deadline = None;
        self.req.rnr_until = None;
        if let Some(InProgress::Send { wqe, .. }) = self.resp.cur.take() {
            self.complete_recv_flush(wqe);
        }
        while let Some(w) = self.rq.pop_front() {
            self.complete_recv_flush(w);
        }
        self.resp.out.clear();
        self.resp.cur_op = None;
    }

    fn complete_recv_flush(&mut self, w: RecvWqe) {
        let wc = WorkCompletion::new(w.wr_id, WcStatus::WrFlushErr, WcOpcode::Recv, self.qpn());
        self.completions.push_back(Completion::new(CqSide::Recv, wc, false));
    }

    /// Moves the QP to ERR because of an error it detected itself.
    pub(crate) fn fatal(&mut self, status: WcStatus) {
        if self.attr.qp_state != QpState::Err {
            self.events.push_back(QpEvent::Fatal(status));
            self.enter(QpState::Err);
        }
    }

    /// UC/UD send-queue error (IBTA Vol 1 ch. 10, SQE state): the send queue
    /// is flushed, receives go on; SQE → RTS resumes sending.
    pub(crate) fn send_queue_error(&mut self) {
        let qpn = self.qpn();
        while let Some(w) = self.req.sq.pop_front() {
            let status = if w.status != WcStatus::Success { w.status } else { WcStatus::WrFlushErr };
            let wc = WorkCompletion::new(w.wr_id, status, w.wc_opcode(), qpn);
            self.completions.push_back(Completion::new(CqSide::Send, wc, false));
        }
        self.req.cur = 0;
        self.attr.qp_state = QpState::Sqe;
        self.attr.cur_qp_state = QpState::Sqe;
    }

    pub(crate) fn check_drained(&mut self) {
        if self.attr.qp_state == QpState::Sqd && self.req.sq.iter().all(|w| !w.started) && self.attr.en_sqd_async_notify
        {
            self.events.push_back(QpEvent::SqDrained);
        }
    }

    /// `ibv_post_send` for one work request. `ud` is the address handle of a UD send.
    pub fn post_send(&mut self, wr: &SendWr, ud: Option<UdDest>) -> Result<(), PostError> {
        let st = self.attr.qp_state;
        if matches!(st, QpState::Reset | QpState::Init | QpState::Rtr) {
            return Err(PostError::InvalidState(st));
        }
        let t = self.init.qp_type;
        let cap = self.attr.cap;
        if self.req.sq.len() as u32 >= cap.max_send_wr {
            return Err(PostError::QueueFull);
        }
        if wr.sg_list.len() as u32 > cap.max_send_sge {
            return Err(PostError::TooManySge { given: wr.sg_list.len() as u32, max: cap.max_send_sge });
        }
        let inline = match (&wr.inline_data, wr.flags.contains(SendFlags::INLINE)) {
            (Some(d), _) => {
                if d.len() as u32 > cap.max_inline_data {
                    return Err(PostError::InlineTooLong { len: d.len(), max: cap.max_inline_data });
                }
                if matches!(wr.op, SendOp::RdmaRead { .. }) || wr.op.is_atomic() {
                    return Err(PostError::InvalidArgument("inline data on READ/atomic"));
                }
                Some(d.clone())
            }
            (None, true) => return Err(PostError::InvalidArgument("IBV_SEND_INLINE without inline data")),
            (None, false) => None,
        };
        let unsupported = |op| Err(PostError::UnsupportedOperation { op, qp_type: t });
        match (t, &wr.op) {
            (QpType::Ud, SendOp::Send | SendOp::SendWithImm { .. }) => {}
            (QpType::Ud, _) => return unsupported("only SEND is defined for UD"),
            (QpType::Uc, SendOp::RdmaRead { .. }) => return unsupported("RDMA READ"),
            (QpType::Uc, op) if op.is_atomic() => return unsupported("atomics"),
            (QpType::Uc, SendOp::SendWithInv { .. }) => return unsupported("SEND with invalidate"),
            _ => {}
        }
        let length = wr.length();
        if wr.op.is_atomic() && (wr.sg_list.len() != 1 || length != 8) {
            return Err(PostError::InvalidArgument("an atomic takes one 8-byte SGE"));
        }
        let max = if t == QpType::Ud { self.mtu() as u64 } else { MAX_MSG_SIZE };
        if length > max {
            return Err(PostError::MessageTooLong { len: length, max });
        }
        if t == QpType::Ud && ud.is_none() {
            return Err(PostError::MissingDestination);
        }
        let mut wqe = SendWqe {
            wr_id: wr.wr_id,
            op: wr.op,
            sges: sge_list::SgeList::from_slice(&wr.sg_list),
            inline,
            flags: wr.flags,
            length,
            ud,
            first_psn: Psn::default(),
            npkts: 0,
            started: false,
            next_psn: Psn::default(),
            done: false,
            read_pkts: 0,
            read_base: 0,
            status: WcStatus::Success,
        };
        if matches!(st, QpState::Err | QpState::Sqe) {
            // Posting to a QP in error completes at once with a flush error.
            wqe.status = WcStatus::WrFlushErr;
            let wc = WorkCompletion::new(wqe.wr_id, WcStatus::WrFlushErr, wqe.wc_opcode(), self.qpn());
            self.completions.push_back(Completion::new(CqSide::Send, wc, false));
            return Ok(());
        }
        self.req.sq.push_back(wqe);
        Ok(())
    }

    /// `ibv_post_recv` for one work request.
    pub fn post_recv(&mut self, wr: RecvWr) -> Result<(), PostError> {
        if self.init.srq.is_some() {
            return Err(PostError::UsesSrq);
        }
        let st = self.attr.qp_state;
        if st == QpState::Reset {
            return Err(PostError::InvalidState(st));
        }
        if self.rq.len() as u32 >= self.attr.cap.max_recv_wr {
            return Err(PostError::QueueFull);
        }
        if wr.sg_list.len() as u32 > self.attr.cap.max_recv_sge {
            return Err(PostError::TooManySge { given: wr.sg_list.len() as u32, max: self.attr.cap.max_recv_sge });
        }
        let w = RecvWqe { wr_id: wr.wr_id, sges: wr.sg_list };
        if st == QpState::Err {
            self.complete_recv_flush(w);
            return Ok(());
        }
        self.rq.push_back(w);
        Ok(())
    }

    /// Whether a posted, unfinished work request names this L_Key.
    pub fn references_lkey(&self, lkey: u32) -> bool {
        let in_resp =
            matches!(&self.resp.cur, Some(InProgress::Send { wqe, .. }) if wqe.sges.iter().any(|s| s.lkey == lkey));
        in_resp
            || self.req.sq.iter().any(|w| w.inline.is_none() && w.sges.iter().any(|s| s.lkey == lkey))
            || self.rq.iter().any(|w| w.sges.iter().any(|s| s.lkey == lkey))
    }

    /// Whether completions or events wait to be polled.
    pub fn has_output(&self) -> bool {
        !self.completions.is_empty() || !self.events.is_empty()
    }

    pub fn poll_completion(&mut self) -> Option<Completion> {
        self.completions.pop_front()
    }

    pub fn poll_event(&mut self) -> Option<QpEvent> {
        self.events.pop_front()
    }

    /// The earliest time `handle_timeout` has work to do.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match (self.req.ack_deadline, self.req.rnr_until) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        if self.req.rnr_until.is_some_and(|t| t <= now) {
            self.req.rnr_until = None;
        }
        if self.req.ack_deadline.is_some_and(|t| t <= now) {
            self.req.ack_deadline = None;
            self.local_ack_timeout(now);
        }
    }

    /// Feeds one received packet addressed to this QP.
    pub fn handle_packet(&mut self, now: Instant, pkt: &RxPacket<'_>, env: &mut Env<'_>) {
        self.counters.rcvd_pkts += 1;
        self.counters.rcvd_bytes += pkt.payload.len() as u64;
        use crate::wire::opcode::Operation::*;
        match pkt.ib.bth.opcode.info().operation {
            Acknowledge | AtomicAcknowledge | ReadResponse => self.handle_response(now, pkt, env.mem),
            Send | RdmaWrite | ReadRequest | CompareSwap | FetchAdd => self.handle_request(pkt, env),
            Cnp => {}
        }
    }

    /// Writes the next frame this QP wants to send into `buf` (resized to fit).
    pub fn poll_transmit(&mut self, now: Instant, mem: &dyn Memory, buf: &mut Vec<u8>) -> bool {
        // Each branch emits its own frame: a (FrameRepr, Payload) tuple
        // chosen first and emitted after cost a 232-byte move per packet.
        let ready = self.plain_ack_due().is_some_and(|(psn, msn)| self.take_ready_ack(psn, msn, buf));
        let sent = if ready {
            self.resp.out.pop_front();
            Some(0)
        } else if let Some(ib) = self.next_response(mem) {
            let Some(path) = self.path else { return false };
            let frame = self.frame_repr(path, ib);
            buf.resize(frame.buffer_len(), 0);
            match self.read_payload.take() {
                Some(p) => self.emit_read_response(&frame, p, mem, buf),
                None => emit(&frame, Payload::Copy(&self.scratch), buf),
            }
        } else {
            self.next_request(now, mem, buf)
        };
        let Some(payload_len) = sent else { return false };
        self.counters.sent_pkts += 1;
        self.counters.sent_bytes += payload_len as u64;
        true
    }

    /// The frame for `ib` on `path`. Each frame takes the next IPv4
    /// identification, except an ACK: it takes the one after the next and
    /// leaves the next to the QP's next frame. A device that holds the ACK
    /// back until this QP's answer goes out sends the two as one UDP GSO
    /// run, whose segments are numbered on from the first; the ACK then
    /// already has its number there, and is not patched (and its ICRC
    /// computed again) on the way out. Two ACKs in a row share a number:
    /// RFC 6864 §4 lets the source of an atomic datagram (DF set, as RoCE's
    /// are) give it any.
    pub(crate) fn frame_repr(&mut self, path: Path, ib: IbRepr) -> FrameRepr {
        let ident = if ib.bth.opcode == crate::wire::Opcode::RcAcknowledge {
            self.ip_ident.wrapping_add(2)
        } else {
            self.ip_ident = self.ip_ident.wrapping_add(1);
            self.took_ident();
            self.ip_ident
        };
        let mut f = path.frame_repr(ib, ident);
        self.partial_udp_checksum(&mut f);
        f
    }

    /// Over IPv6 with the link finishing UDP checksums, `frame` carries
    /// only the pseudo-header's sum.
    pub(crate) fn partial_udp_checksum(&self, frame: &mut FrameRepr) {
        if let NetRepr::V6 { udp, .. } = &mut frame.net {
            if self.udp_checksum_offload && udp.checksum == UdpChecksum::Computed {
                udp.checksum = UdpChecksum::Partial;
            }
        }
    }

    /// `se`: the Solicited Event bit of a receive's last packet.
    pub(crate) fn push_completion(&mut self, side: CqSide, wc: WorkCompletion, se: bool) {
        self.completions.push_back(Completion::new(side, wc, se));
    }

    /// A BTH to the connected peer.
    pub(crate) fn bth(&self, opcode: crate::wire::Opcode, psn: Psn) -> BthRepr {
        BthRepr::new(opcode, self.pkey, self.attr.dest_qp_num, psn.value())
    }

    pub(crate) fn ib(&self, bth: BthRepr, mut ext: ExtHeaders, payload_len: usize) -> IbRepr {
        ext.jketh = self.jkey.map(|jkey| crate::wire::JkethRepr { jkey, reserved: 0 });
        IbRepr { bth, ext, payload_len }
    }

    pub(crate) fn access_allows(&self, need: AccessFlags) -> bool {
        self.attr.qp_access_flags.contains(need)
    }
}

/// Emits `frame` into `buf`; its payload length if it fit.
#[inline(always)]
fn emit(frame: &FrameRepr, payload: Payload<'_>, buf: &mut [u8]) -> Option<usize> {
    frame.emit_with(payload, buf).ok().map(|_| frame.ib.payload_len)
}

fn validate_values(a: &QpAttr, mask: QpAttrMask) -> Result<(), ModifyError> {
    let bad = |c: bool, what| {
        if c {
            Err(ModifyError::InvalidValue(what))
        } else {
            Ok(())
        }
    };
    if mask.contains(QpAttrMask::TIMEOUT) {
        bad(a.timeout > 31, "timeout > 31")?;
    }
    if mask.contains(QpAttrMask::RETRY_CNT) {
        bad(a.retry_cnt > 7, "retry_cnt > 7")?;
    }
    if mask.contains(QpAttrMask::RNR_RETRY) {
        bad(a.rnr_retry > 7, "rnr_retry > 7")?;
    }
    if mask.contains(QpAttrMask::MIN_RNR_TIMER) {
        bad(a.min_rnr_timer > 31, "min_rnr_timer > 31")?;
    }
    if mask.contains(QpAttrMask::MAX_QP_RD_ATOMIC) {
        bad(a.max_rd_atomic > 16, "max_rd_atomic > 16")?;
    }
    if mask.contains(QpAttrMask::MAX_DEST_RD_ATOMIC) {
        bad(a.max_dest_rd_atomic > 16, "max_dest_rd_atomic > 16")?;
    }
    if mask.contains(QpAttrMask::PORT) {
        bad(a.port_num != 1, "port_num must be 1")?;
    }
    if mask.contains(QpAttrMask::PATH_MTU) {
        bad(Mtu::from_bytes(a.path_mtu.bytes()).is_none(), "path_mtu")?;
    }
    Ok(())
}
