//! Invalidate Extended Transport Header, IBTA Vol 1 §9.3.8 (4 bytes): the R_Key
//! a SEND WITH INVALIDATE asks the responder to invalidate.

use zerocopy::byteorder::network_endian::U32;
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

use super::Error;

pub const LEN: usize = 4;

#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Debug, Clone, Copy)]
#[repr(C)]
pub struct Ieth {
    pub rkey: U32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct IethRepr {
    pub rkey: u32,
}

impl IethRepr {
    pub fn parse(bytes: &[u8]) -> Result<Self, Error> {
        let (h, _) = Ieth::ref_from_prefix(bytes).map_err(|_| Error::Truncated {
            what: "IETH",
            need: LEN,
            have: bytes.len(),
        })?;
        Ok(IethRepr { rkey: h.rkey.get() })
    }

    pub fn emit(&self, bytes: &mut [u8]) -> Result<(), Error> {
        let have = bytes.len();
        let (h, _) = Ieth::mut_from_prefix(bytes).map_err(|_| Error::BufferTooSmall { need: LEN, have })?;
        h.rkey.set(self.rkey);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let mut b = [0u8; 4];
        IethRepr { rkey: 0x00abcdef }.emit(&mut b).unwrap();
        assert_eq!(b, [0, 0xab, 0xcd, 0xef]);
        assert_eq!(IethRepr::parse(&b), Ok(IethRepr { rkey: 0x00abcdef }));
    }
}
