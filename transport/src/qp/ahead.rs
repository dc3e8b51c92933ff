//! Frames built ahead, while the device has nothing else to do: an RC
//! responder's next ACK, and the headers of a requester's next small
//! request.
//!
//! In a ping-pong (perftest's `ib_write_lat`) each side acknowledges the
//! peer's WRITE between taking it off the link and handing its data to the
//! application, then sends a WRITE of its own: both builds (headers, IPv4
//! checksum, ICRC) sat on the round trip, though they are all but known in
//! advance.
//! - After a QP sent an ACK, the next one it sends for an in-order request
//!   is for the PSN it expects next (IBTA Vol 1 §9.7.5.1.1: the ACK names
//!   the request's PSN), with the MSN one on (§9.7.5.1.2: one more message
//!   completed) and the IPv4 identification two past its last frame's
//!   (`Qp::frame_repr`).
//! - After a QP sent a single-packet request with a short payload, its next
//!   request is likely the same one again (a benchmark's loop, an RPC's):
//!   the same headers with the next PSN and identification. Its headers are
//!   emitted and hashed into the ICRC ahead, and the payload, which only
//!   the post names, is gathered and hashed in when it is sent.
//!
//! The device asks for these while it polls an empty link (`Qp::prepare`).
//! A frame built ahead is used only if every input of the frame it would
//! build on the spot is the same, so the bytes on the wire are the same
//! either way; otherwise it is built on the spot as before.

use crate::path::Path;
use crate::psn::Psn;
use crate::wire::frame::Sealing;
use crate::wire::icrc::Running;
use crate::wire::{AethRepr, ExtHeaders, FrameRepr, IbRepr, Opcode, Payload};

use super::{responder, Qp};

/// Everything an ACK frame is made of, so a frame built for one set of
/// them is never sent for another (a modify that changed the path, a new
/// P_Key or JKey, ...).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct AckMade {
    psn: Psn,
    msn: u32,
    ident: u16,
    path: Path,
    pkey: u16,
    dest_qpn: u32,
    jkey: Option<u16>,
    offload: bool,
}

/// A request's headers, emitted and hashed for `frame`.
struct ReadyRequest {
    frame: FrameRepr,
    crc: Running,
    sealing: Sealing,
    bytes: Vec<u8>,
}

impl std::fmt::Debug for ReadyRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReadyRequest").field("frame", &self.frame).finish()
    }
}

/// A QP's frames built ahead, boxed: most QPs never have any.
#[derive(Debug, Default)]
pub(crate) struct Ahead {
    /// This QP has sent ACKs: it may well send more.
    acks: bool,
    /// It took a new IPv4 identification since the last `prepare` (sent a
    /// request or a READ response), which leaves what that built stale.
    wanted: bool,
    /// Its endpoint has it on the list of QPs to prepare.
    listed: bool,
    ack: Option<AckMade>,
    ack_frame: Vec<u8>,
    /// The last request, if it was one packet with a short payload: what
    /// the next one is predicted from.
    last_request: Option<(IbRepr, Path)>,
    request: Option<ReadyRequest>,
    /// The buffer the last request built ahead replaced, for the next.
    spare: Vec<u8>,
}

impl Qp {
    fn ahead(&mut self) -> &mut Ahead {
        self.ahead.get_or_insert_with(Default::default)
    }

    /// The next plain ACK this QP would send as the responder, `None` if it
    /// has no path or is not RC.
    fn next_ack(&self, psn: Psn, msn: u32) -> Option<AckMade> {
        let path = self.path?;
        (self.init.qp_type == verbs_api::QpType::Rc).then_some(AckMade {
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

    /// This QP took the next IPv4 identification for a frame: what was
    /// built ahead is built again. In a ping-pong that frame is the request
    /// the peer answers, so the ACK of the answer and the next request's
    /// headers are built while the request is on its way, not between the
    /// answer's arrival and the application.
    pub(crate) fn took_ident(&mut self) {
        if let Some(a) = &mut self.ahead {
            a.wanted |= a.acks || a.last_request.is_some();
        }
    }

    /// Whether this QP now has something to build ahead (`prepare`) and
    /// was not on its endpoint's list for it yet; it is from now on.
    pub fn list_for_prepare(&mut self) -> bool {
        self.ahead.as_mut().is_some_and(|a| a.wanted && !std::mem::replace(&mut a.listed, true))
    }

    /// Builds ahead what this QP will likely send next, if it sent
    /// something lately; returns how many frames it built. Call while the
    /// device is idle: it only moves work off the path of the next frames.
    pub fn prepare(&mut self) -> usize {
        let Some(a) = &mut self.ahead else { return 0 };
        a.listed = false;
        if !std::mem::take(&mut a.wanted) {
            return 0;
        }
        self.prepare_ack() as usize + self.prepare_request() as usize
    }

    fn prepare_ack(&mut self) -> bool {
        let msn = (self.resp.msn + 1) & 0xff_ffff;
        let Some(want) = self.next_ack(self.resp.epsn, msn).filter(|_| self.ahead().acks) else { return false };
        if self.ahead().ack == Some(want) {
            return false;
        }
        let ext = ExtHeaders { aeth: Some(AethRepr { syndrome: responder::ACK, msn }), ..Default::default() };
        let ib = self.ib(self.bth(Opcode::RcAcknowledge, want.psn), ext, 0);
        let frame = self.frame_repr(want.path, ib);
        let a = self.ahead();
        a.ack_frame.resize(frame.buffer_len(), 0);
        a.ack = frame.emit_with(Payload::Copy(&[]), &mut a.ack_frame).is_ok().then_some(want);
        a.ack.is_some()
    }

    /// Puts the ACK built ahead into `buf` if it is the plain ACK of `psn`
    /// and `msn` this QP is about to send; returns whether it did.
    pub(crate) fn take_ready_ack(&mut self, psn: Psn, msn: u32, buf: &mut Vec<u8>) -> bool {
        let a = self.ahead();
        a.acks = true;
        // A QP that only answers (a stream's receiver) never has one ready:
        // it pays no more than this per ACK.
        if a.ack.is_none() {
            return false;
        }
        let want = self.next_ack(psn, msn);
        let a = self.ahead();
        if a.ack != want {
            return false;
        }
        a.ack = None;
        std::mem::swap(buf, &mut a.ack_frame);
        self.counters.acks_built_ahead += 1;
        true
    }

    /// The next request as the last one predicts it: its headers with the
    /// PSN a new message takes and the next identification, emitted and
    /// hashed.
    fn prepare_request(&mut self) -> bool {
        let Some((mut ib, path)) = self.ahead.as_ref().and_then(|a| a.last_request) else { return false };
        ib.bth.psn = self.req.psn.value();
        let mut frame = path.frame_repr(ib, self.ip_ident.wrapping_add(1));
        self.partial_udp_checksum(&mut frame);
        let a = self.ahead();
        if a.request.as_ref().is_some_and(|r| r.frame == frame) {
            return false;
        }
        let mut bytes = a.request.take().map_or_else(|| std::mem::take(&mut a.spare), |r| r.bytes);
        bytes.resize(frame.buffer_len(), 0);
        let Ok((crc, sealing)) = frame.emit_around_payload(&mut bytes) else { return false };
        a.request = Some(ReadyRequest { frame, crc, sealing, bytes });
        true
    }

    /// Notes a request just built from `frame` on `path`, for the next one
    /// to be predicted from it (`prepare`): one packet, a short payload.
    pub(crate) fn sent_request(&mut self, frame: &FrameRepr, path: Path, one_packet: bool) {
        let short = one_packet && frame.ib.payload_len < super::requester::HASH_WHERE_IT_LIES;
        if short {
            let a = self.ahead();
            a.last_request = Some((frame.ib, path));
            a.wanted = true;
        } else if let Some(a) = &mut self.ahead {
            a.last_request = None;
        }
    }

    /// The headers built ahead for `frame`, if they are its very headers:
    /// `buf` takes them, and the ICRC over them and where the payload goes
    /// are returned (`FrameRepr::emit_around_payload`).
    pub(crate) fn take_ready_request(&mut self, frame: &FrameRepr, buf: &mut Vec<u8>) -> Option<(Running, Sealing)> {
        let a = self.ahead.as_mut()?;
        if a.request.as_ref()?.frame != *frame {
            return None;
        }
        let r = a.request.take()?;
        a.spare = std::mem::replace(buf, r.bytes);
        self.counters.requests_built_ahead += 1;
        Some((r.crc, r.sealing))
    }
}
