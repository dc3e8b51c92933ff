//! The UDP header of RoCEv2 (Annex A17.4.3): destination port 4791; the source
//! port carries flow entropy for ECMP. Kernel rxe sends a zero checksum over
//! IPv4; a non-zero checksum is honoured and verified.

use smoltcp::wire::{IpAddress, UdpPacket};

use super::Error;

pub const HEADER_LEN: usize = smoltcp::wire::UDP_HEADER_LEN;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UdpChecksum {
    /// Zero on the wire: "no checksum" (what rxe sends).
    None,
    /// A computed checksum over the pseudo-header and the whole datagram.
    Computed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UdpRepr {
    pub src_port: u16,
    pub dst_port: u16,
    pub checksum: UdpChecksum,
}

impl UdpRepr {
    /// Parses the header; returns it and the datagram payload as bounded by the
    /// UDP length. A non-zero checksum must verify.
    pub fn parse<'a>(bytes: &'a [u8], src: &IpAddress, dst: &IpAddress) -> Result<(Self, &'a [u8]), Error> {
        let p = UdpPacket::new_checked(bytes).map_err(|_| Error::Truncated {
            what: "UDP header",
            need: HEADER_LEN,
            have: bytes.len(),
        })?;
        let len = p.len() as usize;
        if len != bytes.len() {
            return Err(Error::BadLength { what: "UDP", declared: len, actual: bytes.len() });
        }
        let checksum = if p.checksum() == 0 {
            UdpChecksum::None
        } else if p.verify_checksum(src, dst) {
            UdpChecksum::Computed
        } else {
            return Err(Error::UdpChecksum);
        };
        Ok((UdpRepr { src_port: p.src_port(), dst_port: p.dst_port(), checksum }, &bytes[HEADER_LEN..]))
    }

    /// Writes the header over `datagram` (header + payload, payload already in
    /// place when a checksum is to be computed).
    pub fn emit(&self, datagram: &mut [u8], src: &IpAddress, dst: &IpAddress) -> Result<(), Error> {
        if datagram.len() < HEADER_LEN {
            return Err(Error::BufferTooSmall { need: HEADER_LEN, have: datagram.len() });
        }
        let len = u16::try_from(datagram.len()).map_err(|_| Error::BadLength {
            what: "UDP",
            declared: datagram.len(),
            actual: 65535,
        })?;
        let mut p = UdpPacket::new_unchecked(datagram);
        p.set_src_port(self.src_port);
        p.set_dst_port(self.dst_port);
        p.set_len(len);
        p.set_checksum(0);
        if self.checksum == UdpChecksum::Computed {
            p.fill_checksum(src, dst);
        }
        Ok(())
    }
}
