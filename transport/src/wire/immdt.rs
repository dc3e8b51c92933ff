//! Immediate Data Extended Transport Header, IBTA Vol 1 §9.3.7 (4 bytes).
//!
//! The 32 bits are opaque to the transport: they are handed to the receiver's
//! work completion as-is (ibverbs `imm_data`, already in network order).

use zerocopy::byteorder::network_endian::U32;
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

use super::Error;

pub const LEN: usize = 4;

#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Debug, Clone, Copy)]
#[repr(C)]
pub struct ImmDt {
    pub imm: U32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ImmDtRepr {
    pub imm: u32,
}

impl ImmDtRepr {
    pub fn parse(bytes: &[u8]) -> Result<Self, Error> {
        let (h, _) = ImmDt::ref_from_prefix(bytes).map_err(|_| Error::Truncated {
            what: "ImmDt",
            need: LEN,
            have: bytes.len(),
        })?;
        Ok(ImmDtRepr { imm: h.imm.get() })
    }

    pub fn emit(&self, bytes: &mut [u8]) -> Result<(), Error> {
        let have = bytes.len();
        let (h, _) = ImmDt::mut_from_prefix(bytes).map_err(|_| Error::BufferTooSmall { need: LEN, have })?;
        h.imm.set(self.imm);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let mut b = [0u8; 4];
        ImmDtRepr { imm: 0xdeadbeef }.emit(&mut b).unwrap();
        assert_eq!(b, [0xde, 0xad, 0xbe, 0xef]);
        assert_eq!(ImmDtRepr::parse(&b), Ok(ImmDtRepr { imm: 0xdeadbeef }));
        assert!(ImmDtRepr::parse(&b[..3]).is_err());
    }
}
