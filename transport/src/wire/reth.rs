//! RDMA Extended Transport Header, IBTA Vol 1 §9.3.3 (16 bytes): the remote
//! virtual address, R_Key and DMA length of an RDMA WRITE (first/only) or READ
//! request.

use zerocopy::byteorder::network_endian::{U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

use super::Error;

pub const LEN: usize = 16;

#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Debug, Clone, Copy)]
#[repr(C)]
pub struct Reth {
    pub va: U64,
    pub rkey: U32,
    pub dma_len: U32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RethRepr {
    pub va: u64,
    pub rkey: u32,
    pub dma_len: u32,
}

impl RethRepr {
    pub fn parse(bytes: &[u8]) -> Result<Self, Error> {
        let (h, _) = Reth::ref_from_prefix(bytes).map_err(|_| Error::Truncated {
            what: "RETH",
            need: LEN,
            have: bytes.len(),
        })?;
        Ok(RethRepr { va: h.va.get(), rkey: h.rkey.get(), dma_len: h.dma_len.get() })
    }

    pub fn emit(&self, bytes: &mut [u8]) -> Result<(), Error> {
        let have = bytes.len();
        let (h, _) = Reth::mut_from_prefix(bytes).map_err(|_| Error::BufferTooSmall { need: LEN, have })?;
        h.va.set(self.va);
        h.rkey.set(self.rkey);
        h.dma_len.set(self.dma_len);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_are_big_endian_in_order() {
        let r = RethRepr { va: 0x0102030405060708, rkey: 0x0a0b0c0d, dma_len: 0x40 };
        let mut b = [0u8; 16];
        r.emit(&mut b).unwrap();
        assert_eq!(b, [1, 2, 3, 4, 5, 6, 7, 8, 0xa, 0xb, 0xc, 0xd, 0, 0, 0, 0x40]);
        assert_eq!(RethRepr::parse(&b), Ok(r));
        assert!(RethRepr::parse(&b[..15]).is_err());
    }
}
