//! ACK Extended Transport Header, IBTA Vol 1 §9.3.5 (4 bytes): an 8-bit syndrome
//! and the 24-bit MSN.
//!
//! Syndrome (Table 42): bit 7 reserved; bits 6:5 select ACK (00), RNR NAK (01),
//! reserved (10) or NAK (11); bits 4:0 carry the credit count, the RNR timer
//! code, or the NAK code (Table 43).

use zerocopy::byteorder::network_endian::U32;
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

use super::Error;

pub const LEN: usize = 4;

#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Debug, Clone, Copy)]
#[repr(C)]
pub struct Aeth {
    pub syndrome_msn: U32,
}

/// NAK codes of IBTA Vol 1 Table 43.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NakCode {
    PsnSequenceError,
    InvalidRequest,
    RemoteAccessError,
    RemoteOperationalError,
    InvalidRdRequest,
    /// Codes 5..=31, reserved by IBTA; kept so a received one re-emits exactly.
    Reserved(u8),
}

impl NakCode {
    pub fn code(self) -> u8 {
        match self {
            NakCode::PsnSequenceError => 0,
            NakCode::InvalidRequest => 1,
            NakCode::RemoteAccessError => 2,
            NakCode::RemoteOperationalError => 3,
            NakCode::InvalidRdRequest => 4,
            NakCode::Reserved(c) => c & 0x1f,
        }
    }

    pub fn from_code(c: u8) -> Self {
        match c & 0x1f {
            0 => NakCode::PsnSequenceError,
            1 => NakCode::InvalidRequest,
            2 => NakCode::RemoteAccessError,
            3 => NakCode::RemoteOperationalError,
            4 => NakCode::InvalidRdRequest,
            c => NakCode::Reserved(c),
        }
    }
}

/// The decoded syndrome byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Syndrome {
    /// Positive ACK with the end-to-end credit count (31 = "invalid", no flow control).
    Ack {
        credits: u8,
    },
    /// Receiver not ready; `timer` indexes the RNR NAK timer table (Table 45).
    RnrNak {
        timer: u8,
    },
    Nak(NakCode),
    /// Syndromes with bit 7 set or type 10, reserved by IBTA; kept verbatim.
    Reserved(u8),
}

impl Syndrome {
    pub fn to_byte(self) -> u8 {
        match self {
            Syndrome::Ack { credits } => credits & 0x1f,
            Syndrome::RnrNak { timer } => 0x20 | (timer & 0x1f),
            Syndrome::Nak(code) => 0x60 | code.code(),
            Syndrome::Reserved(b) => b,
        }
    }

    pub fn from_byte(b: u8) -> Self {
        if b & 0x80 != 0 {
            return Syndrome::Reserved(b);
        }
        match (b >> 5) & 3 {
            0 => Syndrome::Ack { credits: b & 0x1f },
            1 => Syndrome::RnrNak { timer: b & 0x1f },
            3 => Syndrome::Nak(NakCode::from_code(b)),
            _ => Syndrome::Reserved(b),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AethRepr {
    pub syndrome: Syndrome,
    pub msn: u32,
}

impl AethRepr {
    pub fn parse(bytes: &[u8]) -> Result<Self, Error> {
        let (h, _) = Aeth::ref_from_prefix(bytes).map_err(|_| Error::Truncated {
            what: "AETH",
            need: LEN,
            have: bytes.len(),
        })?;
        let w = h.syndrome_msn.get();
        Ok(AethRepr { syndrome: Syndrome::from_byte((w >> 24) as u8), msn: w & 0xff_ffff })
    }

    pub fn emit(&self, bytes: &mut [u8]) -> Result<(), Error> {
        let have = bytes.len();
        let (h, _) = Aeth::mut_from_prefix(bytes).map_err(|_| Error::BufferTooSmall { need: LEN, have })?;
        h.syndrome_msn.set((self.syndrome.to_byte() as u32) << 24 | (self.msn & 0xff_ffff));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_syndrome_byte_round_trips() {
        for b in 0..=255u8 {
            assert_eq!(Syndrome::from_byte(b).to_byte(), b, "syndrome 0x{b:02x}");
        }
    }

    #[test]
    fn table_42_and_43_values() {
        // rxe acks with credits 0x1f ("invalid credit count": no end-to-end flow control).
        assert_eq!(Syndrome::from_byte(0x1f), Syndrome::Ack { credits: 31 });
        assert_eq!(Syndrome::from_byte(0x2e), Syndrome::RnrNak { timer: 14 });
        assert_eq!(Syndrome::from_byte(0x60), Syndrome::Nak(NakCode::PsnSequenceError));
        assert_eq!(Syndrome::from_byte(0x61), Syndrome::Nak(NakCode::InvalidRequest));
        assert_eq!(Syndrome::from_byte(0x62), Syndrome::Nak(NakCode::RemoteAccessError));
        assert_eq!(Syndrome::from_byte(0x63), Syndrome::Nak(NakCode::RemoteOperationalError));
        let a = AethRepr { syndrome: Syndrome::Nak(NakCode::RemoteAccessError), msn: 0x123456 };
        let mut b = [0u8; 4];
        a.emit(&mut b).unwrap();
        assert_eq!(b, [0x62, 0x12, 0x34, 0x56]);
        assert_eq!(AethRepr::parse(&b), Ok(a));
    }
}
