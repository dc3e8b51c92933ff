//! Datagram Extended Transport Header, IBTA Vol 1 §9.3.2 (8 bytes): the Q_Key
//! and the source QP of a UD packet.
//!
//! ```text
//! bytes 0-3 Q_Key | byte 4 reserved | bytes 5-7 SrcQP
//! ```

use zerocopy::byteorder::network_endian::U32;
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

use super::Error;

pub const LEN: usize = 8;

#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Debug, Clone, Copy)]
#[repr(C)]
pub struct Deth {
    pub qkey: U32,
    pub resv8_src_qp: U32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DethRepr {
    pub qkey: u32,
    pub src_qpn: u32,
    /// The reserved byte, kept for byte-exact re-emission; senders send 0.
    pub resv8: u8,
}

impl DethRepr {
    pub fn parse(bytes: &[u8]) -> Result<Self, Error> {
        let (h, _) = Deth::ref_from_prefix(bytes).map_err(|_| Error::Truncated {
            what: "DETH",
            need: LEN,
            have: bytes.len(),
        })?;
        let w = h.resv8_src_qp.get();
        Ok(DethRepr { qkey: h.qkey.get(), src_qpn: w & 0xff_ffff, resv8: (w >> 24) as u8 })
    }

    pub fn emit(&self, bytes: &mut [u8]) -> Result<(), Error> {
        let have = bytes.len();
        let (h, _) = Deth::mut_from_prefix(bytes).map_err(|_| Error::BufferTooSmall { need: LEN, have })?;
        h.qkey.set(self.qkey);
        h.resv8_src_qp.set((self.resv8 as u32) << 24 | (self.src_qpn & 0xff_ffff));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let r = DethRepr { qkey: 0x11111111, src_qpn: 0x000012, resv8: 0 };
        let mut b = [0u8; 8];
        r.emit(&mut b).unwrap();
        assert_eq!(b, [0x11, 0x11, 0x11, 0x11, 0, 0, 0, 0x12]);
        assert_eq!(DethRepr::parse(&b), Ok(r));
    }
}
