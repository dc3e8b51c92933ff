//! The InfiniBand transport packet inside a RoCE frame: BTH, the extension
//! headers its opcode calls for, payload, pad, and the ICRC trailer.
//!
//! `IbPacket` is the checked view (every length validated once in
//! `new_checked`, then accessors cannot fail); `IbRepr` is its meaning, with
//! `parse` and `emit`.

use super::aeth::{self, AethRepr};
use super::atomic_ack_eth::{self, AtomicAckEthRepr};
use super::atomic_eth::{self, AtomicEthRepr};
use super::bth::{self, BthRepr};
use super::deth::{self, DethRepr};
use super::icrc;
use super::ieth::{self, IethRepr};
use super::immdt::{self, ImmDtRepr};
use super::jketh::{self, JkethRepr};
use super::opcode::OpcodeInfo;
use super::reth::{self, RethRepr};
use super::Error;

/// The extension headers of one packet; which are present is fixed by the opcode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ExtHeaders {
    /// softrdma's job key header (announced by a BTH Resv7 flag; see `jketh`).
    pub jketh: Option<JkethRepr>,
    pub deth: Option<DethRepr>,
    pub reth: Option<RethRepr>,
    pub atomic_eth: Option<AtomicEthRepr>,
    pub aeth: Option<AethRepr>,
    pub atomic_ack_eth: Option<AtomicAckEthRepr>,
    pub immdt: Option<ImmDtRepr>,
    pub ieth: Option<IethRepr>,
}

/// Pad bytes that bring a payload to a multiple of four (IBTA §9.2: PadCnt).
pub const fn pad_for(payload_len: usize) -> u8 {
    ((4 - (payload_len & 3)) & 3) as u8
}

/// A checked view over `BTH .. ICRC`.
#[derive(Debug, Clone)]
pub struct IbPacket<T: AsRef<[u8]>> {
    buffer: T,
    bth: BthRepr,
    info: &'static OpcodeInfo,
    jketh: bool,
}

impl<T: AsRef<[u8]>> IbPacket<T> {
    pub fn new_checked(buffer: T) -> Result<Self, Error> {
        let b = buffer.as_ref();
        let bth = BthRepr::parse(b)?;
        let info = bth.opcode.info();
        let jketh = bth.resv7 & jketh::BTH_FLAG != 0;
        let need = info.header_len() + if jketh { jketh::LEN } else { 0 } + icrc::LEN;
        if b.len() < need {
            return Err(Error::Truncated { what: info.name, need, have: b.len() });
        }
        let payload_and_pad = b.len() - need;
        // IBTA §9.2: payload plus pad is a whole number of 4-byte words, and the
        // pad (0..=3) is taken from the end of it.
        if !payload_and_pad.is_multiple_of(4) || (bth.pad as usize) > payload_and_pad {
            return Err(Error::BadPad { pad: bth.pad, payload_and_pad });
        }
        if !info.payload && payload_and_pad != 0 {
            return Err(Error::UnexpectedPayload { opcode: bth.opcode as u8, len: payload_and_pad });
        }
        Ok(IbPacket { buffer, bth, info, jketh })
    }

    pub fn bth(&self) -> &BthRepr {
        &self.bth
    }

    pub fn info(&self) -> &OpcodeInfo {
        self.info
    }

    fn bytes(&self) -> &[u8] {
        self.buffer.as_ref()
    }

    pub fn header_len(&self) -> usize {
        self.info.header_len() + if self.jketh { jketh::LEN } else { 0 }
    }

    /// Everything the ICRC covers after the BTH's start: headers, payload, pad.
    pub fn without_icrc(&self) -> &[u8] {
        let b = self.bytes();
        &b[..b.len() - icrc::LEN]
    }

    pub fn payload(&self) -> &[u8] {
        let b = self.without_icrc();
        &b[self.header_len()..b.len() - self.bth.pad as usize]
    }

    pub fn pad_bytes(&self) -> &[u8] {
        let b = self.without_icrc();
        &b[b.len() - self.bth.pad as usize..]
    }

    pub fn icrc(&self) -> u32 {
        let b = self.bytes();
        let n = b.len();
        icrc::read([b[n - 4], b[n - 3], b[n - 2], b[n - 1]])
    }

    /// Decodes the extension headers. Lengths were checked by `new_checked`.
    pub fn ext_headers(&self) -> ExtHeaders {
        let b = &self.bytes()[bth::LEN..self.header_len()];
        let h = self.info.headers;
        let mut off = 0;
        let jk = self.jketh;
        let mut take = |present: bool, len: usize| -> Option<&[u8]> {
            present.then(|| {
                let s = &b[off..off + len];
                off += len;
                s
            })
        };
        let jketh = take(jk, jketh::LEN).and_then(|s| JkethRepr::parse(s).ok());
        // Order fixed by IBTA Vol 1 ch. 9 ("IBA packet format").
        let deth = take(h.deth, deth::LEN).and_then(|s| DethRepr::parse(s).ok());
        let reth = take(h.reth, reth::LEN).and_then(|s| RethRepr::parse(s).ok());
        let atomic_eth = take(h.atomic_eth, atomic_eth::LEN).and_then(|s| AtomicEthRepr::parse(s).ok());
        let aeth = take(h.aeth, aeth::LEN).and_then(|s| AethRepr::parse(s).ok());
        let atomic_ack_eth = take(h.atomic_ack_eth, atomic_ack_eth::LEN).and_then(|s| AtomicAckEthRepr::parse(s).ok());
        let immdt = take(h.immdt, immdt::LEN).and_then(|s| ImmDtRepr::parse(s).ok());
        let ieth = take(h.ieth, ieth::LEN).and_then(|s| IethRepr::parse(s).ok());
        ExtHeaders { jketh, deth, reth, atomic_eth, aeth, atomic_ack_eth, immdt, ieth }
    }
}

impl<'a> IbPacket<&'a [u8]> {
    /// The payload, borrowed for as long as the underlying buffer.
    pub fn payload_in_buffer(&self) -> &'a [u8] {
        let b: &'a [u8] = self.buffer;
        let end = b.len() - icrc::LEN - self.bth.pad as usize;
        &b[self.header_len()..end]
    }
}

/// The meaning of an IB transport packet, minus its payload bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IbRepr {
    pub bth: BthRepr,
    pub ext: ExtHeaders,
    pub payload_len: usize,
}

impl IbRepr {
    pub fn parse<T: AsRef<[u8]>>(packet: &IbPacket<T>) -> Self {
        IbRepr { bth: *packet.bth(), ext: packet.ext_headers(), payload_len: packet.payload().len() }
    }

    /// Bytes from the BTH through the ICRC.
    pub fn buffer_len(&self) -> usize {
        self.header_len() + self.payload_len + pad_for(self.payload_len) as usize + icrc::LEN
    }

    /// Bytes from the BTH to the payload.
    pub fn header_len(&self) -> usize {
        self.bth.opcode.info().header_len() + if self.ext.jketh.is_some() { jketh::LEN } else { 0 }
    }

    /// Writes BTH, extension headers, `payload` and zero pad bytes into `buf`
    /// (which must be `buffer_len()` long). The ICRC slot is left for the frame,
    /// which alone knows the IP/UDP headers it covers. The pad count in the BTH
    /// is derived from the payload length; a header the opcode needs but the
    /// repr lacks is written as zeros.
    pub fn emit(&self, buf: &mut [u8], payload: &[u8]) -> Result<(), Error> {
        self.emit_with(buf, Payload::Copy(payload))
    }

    /// Where the payload goes in the `buffer_len()` bytes `emit` writes.
    pub fn payload_range(&self) -> core::ops::Range<usize> {
        let at = self.header_len();
        at..at + self.payload_len
    }

    /// `emit`, with the payload either copied in or already in place (at
    /// `payload_range()`, where a sender gathered it straight from memory).
    pub fn emit_with(&self, buf: &mut [u8], payload: Payload<'_>) -> Result<(), Error> {
        let need = self.buffer_len();
        let len = match payload {
            Payload::Copy(p) => p.len(),
            Payload::InPlace => self.payload_len,
        };
        if buf.len() != need || len != self.payload_len {
            return Err(Error::BufferTooSmall { need, have: buf.len() });
        }
        let info = self.bth.opcode.info();
        if !info.payload && len > 0 {
            return Err(Error::UnexpectedPayload { opcode: self.bth.opcode as u8, len });
        }
        let mut bth = self.bth;
        bth.pad = pad_for(len);
        match self.ext.jketh {
            Some(_) => bth.resv7 |= jketh::BTH_FLAG,
            None => bth.resv7 &= !jketh::BTH_FLAG,
        }
        bth.emit(buf)?;
        let h = info.headers;
        let e = &self.ext;
        let mut off = bth::LEN;
        if let Some(j) = self.ext.jketh {
            j.emit(&mut buf[off..off + jketh::LEN])?;
            off += jketh::LEN;
        }
        macro_rules! put {
            ($present:expr, $repr:expr, $len:expr) => {
                if $present {
                    $repr.unwrap_or_default().emit(&mut buf[off..off + $len])?;
                    off += $len;
                }
            };
        }
        put!(h.deth, e.deth, deth::LEN);
        put!(h.reth, e.reth, reth::LEN);
        put!(h.atomic_eth, e.atomic_eth, atomic_eth::LEN);
        if h.aeth {
            e.aeth
                .unwrap_or(AethRepr { syndrome: aeth::Syndrome::Ack { credits: 0 }, msn: 0 })
                .emit(&mut buf[off..off + aeth::LEN])?;
            off += aeth::LEN;
        }
        put!(h.atomic_ack_eth, e.atomic_ack_eth, atomic_ack_eth::LEN);
        put!(h.immdt, e.immdt, immdt::LEN);
        put!(h.ieth, e.ieth, ieth::LEN);
        if let Payload::Copy(p) = payload {
            buf[off..off + len].copy_from_slice(p);
        }
        off += len;
        buf[off..need - icrc::LEN].fill(0);
        Ok(())
    }
}

/// The payload of a packet being emitted.
#[derive(Debug, Clone, Copy)]
pub enum Payload<'a> {
    /// These bytes, copied into the packet.
    Copy(&'a [u8]),
    /// Already written at the packet's payload range.
    InPlace,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::Opcode;

    #[test]
    fn payload_in_place_emits_the_same_bytes_as_a_copied_one() {
        for (op, len) in [(Opcode::RcSendOnly, 1001), (Opcode::RcWriteFirst, 1024), (Opcode::RcSendOnly, 0)] {
            let repr = IbRepr { bth: BthRepr::new(op, 0xffff, 5, 9), ext: ExtHeaders::default(), payload_len: len };
            let payload: Vec<u8> = (0..len).map(|i| i as u8 ^ 0x5a).collect();
            let mut copied = vec![0u8; repr.buffer_len()];
            repr.emit(&mut copied, &payload).unwrap();
            // A stale buffer: whatever is outside the payload is rewritten.
            let mut placed = vec![0xeeu8; repr.buffer_len()];
            placed[repr.payload_range()].copy_from_slice(&payload);
            repr.emit_with(&mut placed, Payload::InPlace).unwrap();
            assert_eq!(placed[..placed.len() - 4], copied[..copied.len() - 4], "{op:?} {len}");
        }
    }

    #[test]
    fn pad_rule() {
        assert_eq!([0, 1, 2, 3, 4, 1001].map(pad_for), [0, 3, 2, 1, 0, 3]);
    }

    #[test]
    fn view_checks_lengths_pad_and_payload_presence() {
        let mut repr =
            IbRepr { bth: BthRepr::new(Opcode::RcSendOnly, 0xffff, 5, 9), ext: ExtHeaders::default(), payload_len: 5 };
        let mut buf = vec![0u8; repr.buffer_len()];
        repr.emit(&mut buf, b"hello").unwrap();
        assert_eq!(buf.len(), 12 + 5 + 3 + 4);
        let p = IbPacket::new_checked(&buf[..]).unwrap();
        assert_eq!(p.payload(), b"hello");
        assert_eq!(p.bth().pad, 3);
        assert_eq!(p.pad_bytes(), &[0, 0, 0]);
        assert!(matches!(IbPacket::new_checked(&buf[..buf.len() - 1]), Err(Error::BadPad { .. })));
        assert!(matches!(IbPacket::new_checked(&buf[..15]), Err(Error::Truncated { .. })));

        repr.bth.opcode = Opcode::RcAcknowledge;
        repr.payload_len = 0;
        let mut ack = vec![0u8; repr.buffer_len()];
        repr.emit(&mut ack, &[]).unwrap();
        assert!(IbPacket::new_checked(&ack[..]).is_ok());
        ack.splice(16..16, [0u8; 4]);
        assert_eq!(IbPacket::new_checked(&ack[..]).unwrap_err(), Error::UnexpectedPayload { opcode: 0x11, len: 4 });
    }
}
