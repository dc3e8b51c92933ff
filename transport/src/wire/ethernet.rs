//! Ethernet II with an optional IEEE 802.1Q tag. The untagged header is
//! smoltcp's; the tag (TPID 0x8100, then PCP(3) DEI(1) VID(12), then the inner
//! EtherType) is read here because smoltcp does not model it.
//!
//! RoCE carries its priority in the 802.1Q PCP when a VLAN is used (Annex A16.4),
//! so the tag must survive a parse/emit round trip.

use smoltcp::wire::{EthernetAddress, EthernetFrame};

use super::Error;

pub const HEADER_LEN: usize = smoltcp::wire::ETHERNET_HEADER_LEN;
pub const VLAN_TPID: u16 = 0x8100;
pub const VLAN_TAG_LEN: usize = 4;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct VlanTag {
    pub pcp: u8,
    pub dei: bool,
    pub vid: u16,
}

impl VlanTag {
    fn tci(self) -> u16 {
        ((self.pcp as u16 & 7) << 13) | ((self.dei as u16) << 12) | (self.vid & 0x0fff)
    }
    fn from_tci(tci: u16) -> Self {
        VlanTag { pcp: (tci >> 13) as u8, dei: tci & 0x1000 != 0, vid: tci & 0x0fff }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EthernetRepr {
    pub dst: EthernetAddress,
    pub src: EthernetAddress,
    pub vlan: Option<VlanTag>,
    /// EtherType of what follows (after the tag, if any).
    pub ethertype: u16,
}

impl EthernetRepr {
    /// Parses the header; returns it and the offset of the payload.
    pub fn parse(bytes: &[u8]) -> Result<(Self, usize), Error> {
        let frame = EthernetFrame::new_checked(bytes).map_err(|_| Error::Truncated {
            what: "Ethernet header",
            need: HEADER_LEN,
            have: bytes.len(),
        })?;
        let outer: u16 = frame.ethertype().into();
        let mut repr = EthernetRepr { dst: frame.dst_addr(), src: frame.src_addr(), vlan: None, ethertype: outer };
        if outer != VLAN_TPID {
            return Ok((repr, HEADER_LEN));
        }
        let tag = bytes.get(HEADER_LEN..HEADER_LEN + VLAN_TAG_LEN).ok_or(Error::Truncated {
            what: "802.1Q tag",
            need: HEADER_LEN + VLAN_TAG_LEN,
            have: bytes.len(),
        })?;
        repr.vlan = Some(VlanTag::from_tci(u16::from_be_bytes([tag[0], tag[1]])));
        repr.ethertype = u16::from_be_bytes([tag[2], tag[3]]);
        Ok((repr, HEADER_LEN + VLAN_TAG_LEN))
    }

    pub fn header_len(&self) -> usize {
        HEADER_LEN + if self.vlan.is_some() { VLAN_TAG_LEN } else { 0 }
    }

    /// Writes the header; returns its length.
    pub fn emit(&self, bytes: &mut [u8]) -> Result<usize, Error> {
        let need = self.header_len();
        if bytes.len() < need {
            return Err(Error::BufferTooSmall { need, have: bytes.len() });
        }
        bytes[0..6].copy_from_slice(self.dst.as_bytes());
        bytes[6..12].copy_from_slice(self.src.as_bytes());
        match self.vlan {
            None => bytes[12..14].copy_from_slice(&self.ethertype.to_be_bytes()),
            Some(tag) => {
                bytes[12..14].copy_from_slice(&VLAN_TPID.to_be_bytes());
                bytes[14..16].copy_from_slice(&tag.tci().to_be_bytes());
                bytes[16..18].copy_from_slice(&self.ethertype.to_be_bytes());
            }
        }
        Ok(need)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tagged_header_round_trips() {
        let bytes = [0x52, 0x54, 0, 0x77, 0, 0x12, 0x52, 0x54, 0, 0x77, 0, 0x11, 0x81, 0x00, 0xa0, 0x64, 0x08, 0x00];
        let (r, off) = EthernetRepr::parse(&bytes).unwrap();
        assert_eq!(off, 18);
        assert_eq!(r.vlan, Some(VlanTag { pcp: 5, dei: false, vid: 100 }));
        assert_eq!(r.ethertype, 0x0800);
        let mut out = [0u8; 18];
        assert_eq!(r.emit(&mut out), Ok(18));
        assert_eq!(out, bytes);
    }

    #[test]
    fn truncated_tag_is_an_error() {
        let bytes = [0u8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x81, 0x00, 0xa0];
        assert!(matches!(EthernetRepr::parse(&bytes), Err(Error::Truncated { what: "802.1Q tag", .. })));
        assert!(EthernetRepr::parse(&bytes[..13]).is_err());
    }
}
