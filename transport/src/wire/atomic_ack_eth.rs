//! Atomic Acknowledge Extended Transport Header, IBTA Vol 1 §9.3.6 (8 bytes):
//! the original remote data an atomic operation found.

use zerocopy::byteorder::network_endian::U64;
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

use super::Error;

pub const LEN: usize = 8;

#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Debug, Clone, Copy)]
#[repr(C)]
pub struct AtomicAckEth {
    pub orig: U64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AtomicAckEthRepr {
    pub orig: u64,
}

impl AtomicAckEthRepr {
    pub fn parse(bytes: &[u8]) -> Result<Self, Error> {
        let (h, _) = AtomicAckEth::ref_from_prefix(bytes).map_err(|_| Error::Truncated {
            what: "AtomicAckETH",
            need: LEN,
            have: bytes.len(),
        })?;
        Ok(AtomicAckEthRepr { orig: h.orig.get() })
    }

    pub fn emit(&self, bytes: &mut [u8]) -> Result<(), Error> {
        let have = bytes.len();
        let (h, _) = AtomicAckEth::mut_from_prefix(bytes).map_err(|_| Error::BufferTooSmall { need: LEN, have })?;
        h.orig.set(self.orig);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn original_data_is_big_endian() {
        let r = AtomicAckEthRepr { orig: 0x1122334455667788 };
        let mut b = [0u8; LEN];
        r.emit(&mut b).unwrap();
        assert_eq!(b, [0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88]);
        assert_eq!(AtomicAckEthRepr::parse(&b), Ok(r));
    }
}
