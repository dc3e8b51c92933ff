//! Base Transport Header, IBTA Vol 1 §9.2 (12 bytes, present in every packet).
//!
//! ```text
//! byte 0     OpCode
//! byte 1     SE(7) | M(6) | PadCnt(5:4) | TVer(3:0)
//! bytes 2-3  P_Key
//! byte 4     Resv8a — in RoCEv2 (Annex A17.9.1) bit 7 is FECN and bit 6 is BECN
//! bytes 5-7  DestQP
//! byte 8     AckReq(7) | Resv7(6:0)
//! bytes 9-11 PSN
//! ```

use zerocopy::byteorder::network_endian::{U16, U32};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

use super::{Error, Opcode};

pub const LEN: usize = 12;

/// The BTH as it lies on the wire.
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Debug, Clone, Copy)]
#[repr(C)]
pub struct Bth {
    pub opcode: u8,
    pub flags: u8,
    pub pkey: U16,
    pub resv8a: u8,
    pub dest_qp: [u8; 3],
    pub ackreq_psn: U32,
}

/// The meaning of a BTH. Reserved bits are kept so that a parsed packet re-emits
/// byte-identically; senders leave them zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BthRepr {
    pub opcode: Opcode,
    pub solicited: bool,
    pub mig_req: bool,
    pub pad: u8,
    pub pkey: u16,
    pub fecn: bool,
    pub becn: bool,
    pub resv6: u8,
    pub dest_qpn: u32,
    pub ack_req: bool,
    pub resv7: u8,
    pub psn: u32,
}

impl BthRepr {
    /// A BTH with every optional bit clear, the way a sender starts one.
    pub fn new(opcode: Opcode, pkey: u16, dest_qpn: u32, psn: u32) -> Self {
        BthRepr {
            opcode,
            solicited: false,
            mig_req: false,
            pad: 0,
            pkey,
            fecn: false,
            becn: false,
            resv6: 0,
            dest_qpn: dest_qpn & 0xff_ffff,
            ack_req: false,
            resv7: 0,
            psn: psn & 0xff_ffff,
        }
    }

    pub fn parse(bytes: &[u8]) -> Result<Self, Error> {
        let (bth, _) =
            Bth::ref_from_prefix(bytes).map_err(|_| Error::Truncated { what: "BTH", need: LEN, have: bytes.len() })?;
        let tver = bth.flags & 0x0f;
        // IBTA Vol 1 ch. 9: a packet with a TVer other than 0 is silently dropped.
        if tver != 0 {
            return Err(Error::BadTver(tver));
        }
        let opcode = Opcode::try_from(bth.opcode)?;
        let word = bth.ackreq_psn.get();
        Ok(BthRepr {
            opcode,
            solicited: bth.flags & 0x80 != 0,
            mig_req: bth.flags & 0x40 != 0,
            pad: (bth.flags >> 4) & 0x3,
            pkey: bth.pkey.get(),
            fecn: bth.resv8a & 0x80 != 0,
            becn: bth.resv8a & 0x40 != 0,
            resv6: bth.resv8a & 0x3f,
            dest_qpn: u32::from_be_bytes([0, bth.dest_qp[0], bth.dest_qp[1], bth.dest_qp[2]]),
            ack_req: word & 0x8000_0000 != 0,
            resv7: ((word >> 24) & 0x7f) as u8,
            psn: word & 0xff_ffff,
        })
    }

    pub fn emit(&self, bytes: &mut [u8]) -> Result<(), Error> {
        let have = bytes.len();
        let (bth, _) = Bth::mut_from_prefix(bytes).map_err(|_| Error::BufferTooSmall { need: LEN, have })?;
        bth.opcode = self.opcode as u8;
        bth.flags = (self.solicited as u8) << 7 | (self.mig_req as u8) << 6 | (self.pad & 3) << 4;
        bth.pkey.set(self.pkey);
        bth.resv8a = (self.fecn as u8) << 7 | (self.becn as u8) << 6 | (self.resv6 & 0x3f);
        let q = self.dest_qpn.to_be_bytes();
        bth.dest_qp = [q[1], q[2], q[3]];
        bth.ackreq_psn.set((self.ack_req as u32) << 31 | ((self.resv7 as u32) & 0x7f) << 24 | (self.psn & 0xff_ffff));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // BTH of the first RDMA WRITE ONLY in rc-write-64.pcap (kernel rxe).
    const RXE_WRITE_ONLY: [u8; 12] = [0x0a, 0x00, 0xff, 0xff, 0x00, 0x00, 0x00, 0x11, 0x80, 0xd2, 0x54, 0x1a];

    #[test]
    fn parses_rxe_write_only() {
        let r = BthRepr::parse(&RXE_WRITE_ONLY).unwrap();
        assert_eq!(r.opcode, Opcode::RcWriteOnly);
        assert_eq!(r.pkey, 0xffff);
        assert_eq!(r.dest_qpn, 0x11);
        assert!(r.ack_req);
        assert_eq!(r.psn, 0xd2541a);
        assert_eq!(r.pad, 0);
        let mut out = [0u8; 12];
        r.emit(&mut out).unwrap();
        assert_eq!(out, RXE_WRITE_ONLY);
    }

    #[test]
    fn refuses_short_and_versioned_headers() {
        assert_eq!(BthRepr::parse(&RXE_WRITE_ONLY[..11]), Err(Error::Truncated { what: "BTH", need: 12, have: 11 }));
        let mut v = RXE_WRITE_ONLY;
        v[1] |= 0x01;
        assert_eq!(BthRepr::parse(&v), Err(Error::BadTver(1)));
        let mut v = RXE_WRITE_ONLY;
        v[0] = 0x15;
        assert_eq!(BthRepr::parse(&v), Err(Error::UnknownOpcode(0x15)));
    }

    #[test]
    fn flag_bits_land_where_table_37_puts_them() {
        let mut r = BthRepr::new(Opcode::RcSendOnly, 0x8001, 0xabcdef, 0xffffff);
        r.solicited = true;
        r.pad = 3;
        r.becn = true;
        let mut out = [0u8; 12];
        r.emit(&mut out).unwrap();
        assert_eq!(out, [0x04, 0xb0, 0x80, 0x01, 0x40, 0xab, 0xcd, 0xef, 0x00, 0xff, 0xff, 0xff]);
        assert_eq!(BthRepr::parse(&out).unwrap(), r);
    }
}
