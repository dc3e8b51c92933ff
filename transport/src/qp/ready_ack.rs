//! An RC responder's next ACK, built ahead while the device has nothing
//! else to do.
//!
//! In a ping-pong (perftest's `ib_write_lat`) each side acknowledges the
//! peer's WRITE between taking it off the link and handing its data to the
//! application: the ACK's build (headers, IPv4 checksum, ICRC) sits on the
//! round trip, though it is all but known in advance. After this QP sent
//! an ACK, the next one it sends for an in-order request is for the PSN it
//! expects next (IBTA Vol 1 §9.7.5.1.1: the ACK names the request's PSN),
//! with the MSN one on (§9.7.5.1.2: one more message completed) and the
//! IPv4 identification two past its last frame's (`Qp::frame_repr`). The
//! device asks for that frame while it polls an empty link (`Qp::prepare`);
//! the responder takes it if its ACK turns out to be exactly that one, and
//! builds its own otherwise. The bytes are the same either way.

use crate::path::Path;
use crate::psn::Psn;
use crate::wire::{AethRepr, ExtHeaders, Opcode, Payload};

use super::{responder, Qp};

/// Everything an ACK frame is made of, so a frame built for one set of
/// them is never sent for another (a modify that changed the path, a new
/// P_Key or JKey, ...).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Made {
    psn: Psn,
    msn: u32,
    ident: u16,
    path: Path,
    pkey: u16,
    dest_qpn: u32,
    jkey: Option<u16>,
    offload: bool,
}

#[derive(Debug, Default)]
pub(crate) struct ReadyAck {
    /// What `frame` was built for; `None` while it is stale.
    made: Option<Made>,
    frame: Vec<u8>,
    /// This QP has sent ACKs: it may well send more.
    acks: bool,
    /// It took a new IPv4 identification since the last `prepare` (sent a
    /// request or a READ response), which leaves what that built stale.
    wanted: bool,
    /// Its endpoint has it on the list of QPs to prepare.
    listed: bool,
}

impl Qp {
    /// The next plain ACK this QP would send as the responder, `None` if it
    /// has no path or is not RC.
    fn next_ack(&self, psn: Psn, msn: u32) -> Option<Made> {
        let path = self.path?;
        (self.init.qp_type == verbs_api::QpType::Rc).then_some(Made {
            psn,
            msn,
            ident: self.ip_ident.wrapping_add(2),
            path,
            pkey: self.pkey,
            dest_qpn: self.attr.dest_qp_num,
            jkey: self.jkey,
            offload: self.udp_checksum_offload,
        })
    }

    /// This QP took the next IPv4 identification for a frame: an ACK
    /// built ahead is built again. In a ping-pong that frame is the
    /// request the peer answers, so the ACK of the answer is built while
    /// the request is on its way, not between the answer's arrival and
    /// the application.
    pub(crate) fn took_ident(&mut self) {
        self.ready_ack.wanted |= self.ready_ack.acks;
    }

    /// Whether this QP now has something to build ahead (`prepare`) and
    /// was not on its endpoint's list for it yet; it is from now on.
    pub fn list_for_prepare(&mut self) -> bool {
        self.ready_ack.wanted && !std::mem::replace(&mut self.ready_ack.listed, true)
    }

    /// Builds the ACK of the next in-order request ahead, if this QP sent
    /// one lately; returns whether it built anything. Call while the device
    /// is idle: it only moves work off the path of the next request.
    pub fn prepare(&mut self) -> bool {
        self.ready_ack.listed = false;
        if !std::mem::take(&mut self.ready_ack.wanted) {
            return false;
        }
        let msn = (self.resp.msn + 1) & 0xff_ffff;
        let Some(want) = self.next_ack(self.resp.epsn, msn) else { return false };
        if self.ready_ack.made == Some(want) {
            return false;
        }
        let ext = ExtHeaders { aeth: Some(AethRepr { syndrome: responder::ACK, msn }), ..Default::default() };
        let ib = self.ib(self.bth(Opcode::RcAcknowledge, want.psn), ext, 0);
        let frame = self.frame_repr(want.path, ib);
        let buf = &mut self.ready_ack.frame;
        buf.resize(frame.buffer_len(), 0);
        self.ready_ack.made = frame.emit_with(Payload::Copy(&[]), buf).is_ok().then_some(want);
        self.ready_ack.made.is_some()
    }

    /// Puts the ACK built ahead into `buf` if it is the plain ACK of `psn`
    /// and `msn` this QP is about to send; returns whether it did.
    pub(crate) fn take_ready_ack(&mut self, psn: Psn, msn: u32, buf: &mut Vec<u8>) -> bool {
        self.ready_ack.acks = true;
        let Some(made) = self.ready_ack.made else { return false };
        if Some(made) != self.next_ack(psn, msn) {
            return false;
        }
        self.ready_ack.made = None;
        std::mem::swap(buf, &mut self.ready_ack.frame);
        self.counters.acks_built_ahead += 1;
        true
    }
}
