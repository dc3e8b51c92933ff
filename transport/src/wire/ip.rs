//! IPv4 and IPv6 headers of RoCEv2, on smoltcp's packet views.
//!
//! smoltcp's own `Repr`s drop fields a byte-exact re-emission needs (IPv4
//! identification and DSCP/ECN, the IPv6 flow label), so the `Repr`s here keep
//! every field a RoCE sender chooses; lengths and checksums are derived on emit.

use core::net::{Ipv4Addr, Ipv6Addr};

use smoltcp::wire::{IpProtocol, Ipv4Packet, Ipv6Packet};

use super::Error;

pub const IPV4_HEADER_LEN: usize = smoltcp::wire::IPV4_HEADER_LEN;
pub const IPV6_HEADER_LEN: usize = smoltcp::wire::IPV6_HEADER_LEN;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv4Repr {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub dscp: u8,
    pub ecn: u8,
    pub ident: u16,
    pub dont_frag: bool,
    pub ttl: u8,
    pub protocol: u8,
}

impl Ipv4Repr {
    /// Parses a header; returns it and the payload as bounded by Total Length
    /// (anything after it is Ethernet padding).
    pub fn parse(bytes: &[u8]) -> Result<(Self, &[u8]), Error> {
        let p = Ipv4Packet::new_checked(bytes).map_err(|_| Error::Truncated {
            what: "IPv4 header",
            need: IPV4_HEADER_LEN,
            have: bytes.len(),
        })?;
        if p.version() != 4 {
            return Err(Error::BadIpVersion(p.version()));
        }
        if p.header_len() as usize != IPV4_HEADER_LEN {
            return Err(Error::Ipv4Options { header_len: p.header_len() as usize });
        }
        if p.more_frags() || p.frag_offset() != 0 {
            return Err(Error::Ipv4Fragment);
        }
        if !p.verify_checksum() {
            return Err(Error::Ipv4Checksum);
        }
        let repr = Ipv4Repr {
            src: p.src_addr(),
            dst: p.dst_addr(),
            dscp: p.dscp(),
            ecn: p.ecn(),
            ident: p.ident(),
            dont_frag: p.dont_frag(),
            ttl: p.hop_limit(),
            protocol: p.next_header().into(),
        };
        let total = p.total_len() as usize;
        Ok((repr, &bytes[IPV4_HEADER_LEN..total]))
    }

    pub fn emit(&self, bytes: &mut [u8], payload_len: usize) -> Result<(), Error> {
        let need = IPV4_HEADER_LEN;
        let total = u16::try_from(need + payload_len).map_err(|_| Error::BadLength {
            what: "IPv4 total",
            declared: need + payload_len,
            actual: 65535,
        })?;
        if bytes.len() < need {
            return Err(Error::BufferTooSmall { need, have: bytes.len() });
        }
        let mut p = Ipv4Packet::new_unchecked(&mut bytes[..need]);
        p.set_version(4);
        p.set_header_len(IPV4_HEADER_LEN as u8);
        p.set_dscp(self.dscp);
        p.set_ecn(self.ecn);
        p.set_total_len(total);
        p.set_ident(self.ident);
        p.clear_flags();
        p.set_dont_frag(self.dont_frag);
        p.set_frag_offset(0);
        p.set_hop_limit(self.ttl);
        p.set_next_header(IpProtocol::from(self.protocol));
        p.set_src_addr(self.src);
        p.set_dst_addr(self.dst);
        p.fill_checksum();
        Ok(())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv6Repr {
    pub src: Ipv6Addr,
    pub dst: Ipv6Addr,
    pub traffic_class: u8,
    pub flow_label: u32,
    pub hop_limit: u8,
    pub next_header: u8,
}

impl Ipv6Repr {
    /// Parses a header; returns it and the payload as bounded by Payload Length.
    /// Also used for the RoCEv1 GRH, whose layout is the IPv6 header's.
    pub fn parse(bytes: &[u8]) -> Result<(Self, &[u8]), Error> {
        let p = Ipv6Packet::new_checked(bytes).map_err(|_| Error::Truncated {
            what: "IPv6 header",
            need: IPV6_HEADER_LEN,
            have: bytes.len(),
        })?;
        if p.version() != 6 {
            return Err(Error::BadIpVersion(p.version()));
        }
        let repr = Ipv6Repr {
            src: p.src_addr(),
            dst: p.dst_addr(),
            traffic_class: p.traffic_class(),
            flow_label: p.flow_label(),
            hop_limit: p.hop_limit(),
            next_header: p.next_header().into(),
        };
        Ok((repr, &bytes[IPV6_HEADER_LEN..p.total_len()]))
    }

    pub fn emit(&self, bytes: &mut [u8], payload_len: usize) -> Result<(), Error> {
        let need = IPV6_HEADER_LEN;
        let len = u16::try_from(payload_len).map_err(|_| Error::BadLength {
            what: "IPv6 payload",
            declared: payload_len,
            actual: 65535,
        })?;
        if bytes.len() < need {
            return Err(Error::BufferTooSmall { need, have: bytes.len() });
        }
        let mut p = Ipv6Packet::new_unchecked(&mut bytes[..need]);
        p.set_version(6);
        p.set_traffic_class(self.traffic_class);
        p.set_flow_label(self.flow_label & 0xf_ffff);
        p.set_payload_len(len);
        p.set_next_header(IpProtocol::from(self.next_header));
        p.set_hop_limit(self.hop_limit);
        p.set_src_addr(self.src);
        p.set_dst_addr(self.dst);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // IPv4 header of the first RoCE packet in rc-write-64.pcap (kernel rxe).
    const RXE_IPV4: [u8; 20] = [
        0x45, 0x00, 0x00, 0x7c, 0xd0, 0xb3, 0x40, 0x00, 0x40, 0x11, 0x55, 0x0d, 0x0a, 0x4d, 0x00, 0x0b, 0x0a, 0x4d,
        0x00, 0x0c,
    ];

    #[test]
    fn rxe_ipv4_header_round_trips() {
        let mut bytes = RXE_IPV4.to_vec();
        bytes.resize(0x7c, 0);
        let (r, payload) = Ipv4Repr::parse(&bytes).unwrap();
        assert_eq!(payload.len(), 0x7c - 20);
        assert_eq!(r.ttl, 64);
        assert!(r.dont_frag);
        assert_eq!(r.protocol, 17);
        let mut out = [0u8; 20];
        r.emit(&mut out, 0x7c - 20).unwrap();
        assert_eq!(out, RXE_IPV4);
    }

    #[test]
    fn bad_checksum_options_and_fragments_are_refused() {
        let mut b = RXE_IPV4.to_vec();
        b.resize(0x7c, 0);
        let mut c = b.clone();
        c[11] ^= 1;
        assert_eq!(Ipv4Repr::parse(&c).unwrap_err(), Error::Ipv4Checksum);
        let mut c = b.clone();
        c[6] |= 0x20; // MF
        assert_eq!(Ipv4Repr::parse(&c).unwrap_err(), Error::Ipv4Fragment);
        let mut c = b.clone();
        c[0] = 0x46;
        assert_eq!(Ipv4Repr::parse(&c).unwrap_err(), Error::Ipv4Options { header_len: 24 });
        assert!(Ipv4Repr::parse(&b[..30]).is_err(), "total length beyond the buffer");
    }
}
