//! Atomic Extended Transport Header, IBTA Vol 1 §9.3.4 (28 bytes): remote VA,
//! R_Key, swap (or add) data and compare data of CMP_SWAP / FETCH_ADD.

use zerocopy::byteorder::network_endian::{U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

use super::Error;

pub const LEN: usize = 28;

#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Debug, Clone, Copy)]
#[repr(C)]
pub struct AtomicEth {
    pub va: U64,
    pub rkey: U32,
    pub swap_add: U64,
    pub compare: U64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AtomicEthRepr {
    pub va: u64,
    pub rkey: u32,
    /// Swap value of CMP_SWAP, or the addend of FETCH_ADD.
    pub swap_add: u64,
    /// Compare value of CMP_SWAP (ignored by FETCH_ADD).
    pub compare: u64,
}

impl AtomicEthRepr {
    pub fn parse(bytes: &[u8]) -> Result<Self, Error> {
        let (h, _) = AtomicEth::ref_from_prefix(bytes).map_err(|_| Error::Truncated {
            what: "AtomicETH",
            need: LEN,
            have: bytes.len(),
        })?;
        Ok(AtomicEthRepr { va: h.va.get(), rkey: h.rkey.get(), swap_add: h.swap_add.get(), compare: h.compare.get() })
    }

    pub fn emit(&self, bytes: &mut [u8]) -> Result<(), Error> {
        let have = bytes.len();
        let (h, _) = AtomicEth::mut_from_prefix(bytes).map_err(|_| Error::BufferTooSmall { need: LEN, have })?;
        h.va.set(self.va);
        h.rkey.set(self.rkey);
        h.swap_add.set(self.swap_add);
        h.compare.set(self.compare);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_is_va_rkey_swap_compare() {
        let r = AtomicEthRepr { va: 0x1000, rkey: 0x77, swap_add: 5, compare: 0x0102030405060708 };
        let mut b = [0u8; LEN];
        r.emit(&mut b).unwrap();
        assert_eq!(&b[..12], &[0, 0, 0, 0, 0, 0, 0x10, 0, 0, 0, 0, 0x77]);
        assert_eq!(&b[12..20], &5u64.to_be_bytes());
        assert_eq!(&b[20..], &[1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(AtomicEthRepr::parse(&b), Ok(r));
    }
}
