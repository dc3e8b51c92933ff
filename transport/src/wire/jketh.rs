//! Job Key Extended Transport Header — softrdma's encoding of Omni-Path-style
//! job keys on RoCEv2 (not an IBTA header; docs/isolation.md, "JKey").
//!
//! RoCE has no JKey field, so a job-keyed packet says so in the BTH: bit 6 of
//! BTH byte 8 (the top bit of Resv7, which IBTA requires senders to leave
//! zero) announces a 4-byte JKETH right after the BTH:
//!
//! ```text
//! bytes 0-1 JKey | bytes 2-3 reserved (0)
//! ```
//!
//! Both the flag and the JKETH are inside the ICRC's coverage (the ICRC masks
//! only BTH byte 4), so a JKey cannot be altered in flight without the packet
//! being dropped. Packets of QPs without a JKey carry neither, and stay
//! byte-identical to kernel rxe's.

use zerocopy::byteorder::network_endian::U16;
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

use super::Error;

pub const LEN: usize = 4;
/// The bit of BTH Resv7 (byte 8, bit 6) that announces a JKETH.
pub const BTH_FLAG: u8 = 0x40;

#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Debug, Clone, Copy)]
#[repr(C)]
pub struct Jketh {
    pub jkey: U16,
    pub reserved: U16,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct JkethRepr {
    pub jkey: u16,
    /// Kept so a parsed packet re-emits byte-identically; senders send 0.
    pub reserved: u16,
}

impl JkethRepr {
    pub fn parse(bytes: &[u8]) -> Result<Self, Error> {
        let (h, _) = Jketh::ref_from_prefix(bytes).map_err(|_| Error::Truncated {
            what: "JKETH",
            need: LEN,
            have: bytes.len(),
        })?;
        Ok(JkethRepr { jkey: h.jkey.get(), reserved: h.reserved.get() })
    }

    pub fn emit(&self, bytes: &mut [u8]) -> Result<(), Error> {
        let have = bytes.len();
        let (h, _) = Jketh::mut_from_prefix(bytes).map_err(|_| Error::BufferTooSmall { need: LEN, have })?;
        h.jkey.set(self.jkey);
        h.reserved.set(self.reserved);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let mut b = [0xffu8; 4];
        JkethRepr { jkey: 0xbeef, reserved: 0 }.emit(&mut b).unwrap();
        assert_eq!(b, [0xbe, 0xef, 0, 0]);
        assert_eq!(JkethRepr::parse(&b), Ok(JkethRepr { jkey: 0xbeef, reserved: 0 }));
    }
}
