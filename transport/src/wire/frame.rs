//! A whole RoCE frame: Ethernet [802.1Q] | IPv4/IPv6 + UDP (RoCEv2) or GRH
//! (RoCEv1) | IB transport packet. Parsing validates every layer and computes
//! the ICRC; emitting derives every length, checksum, pad count and the ICRC.

use smoltcp::wire::IpAddress;

use super::ethernet::EthernetRepr;
use super::grh::{self, GrhRepr};
use super::ip::{Ipv4Repr, Ipv6Repr, IPV4_HEADER_LEN, IPV6_HEADER_LEN};
use super::packet::{IbPacket, IbRepr, Payload};
use super::roce::{ETHERTYPE_IPV4, ETHERTYPE_IPV6, ROCEV1_ETHERTYPE, ROCEV2_UDP_PORT};
use super::udp::{self, UdpChecksum, UdpRepr};
use super::{icrc, Error};

const IPPROTO_UDP: u8 = 17;

/// The network layer under the IB transport packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NetRepr {
    V4 {
        ip: Ipv4Repr,
        udp: UdpRepr,
    },
    V6 {
        ip: Ipv6Repr,
        udp: UdpRepr,
    },
    /// RoCEv1: a GRH straight on Ethernet.
    V1 {
        grh: GrhRepr,
    },
}

impl NetRepr {
    fn ethertype(&self) -> u16 {
        match self {
            NetRepr::V4 { .. } => ETHERTYPE_IPV4,
            NetRepr::V6 { .. } => ETHERTYPE_IPV6,
            NetRepr::V1 { .. } => ROCEV1_ETHERTYPE,
        }
    }

    fn header_len(&self) -> usize {
        match self {
            NetRepr::V4 { .. } => IPV4_HEADER_LEN + udp::HEADER_LEN,
            NetRepr::V6 { .. } => IPV6_HEADER_LEN + udp::HEADER_LEN,
            NetRepr::V1 { .. } => grh::LEN,
        }
    }

    /// Length of the IP (or GRH) header alone.
    fn l3_len(&self) -> usize {
        match self {
            NetRepr::V4 { .. } => IPV4_HEADER_LEN,
            NetRepr::V6 { .. } | NetRepr::V1 { .. } => IPV6_HEADER_LEN,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameRepr {
    pub eth: EthernetRepr,
    pub net: NetRepr,
    pub ib: IbRepr,
}

/// A parsed frame: its meaning, a view of its IB packet, and the ICRC computed
/// over it (compare with `packet.icrc()`, or use `icrc_ok`).
#[derive(Debug, Clone)]
pub struct Frame<'a> {
    pub repr: FrameRepr,
    pub packet: IbPacket<&'a [u8]>,
    pub icrc_computed: u32,
}

impl<'a> Frame<'a> {
    /// Parses every layer; the ICRC is computed but not enforced, so a tool can
    /// still show a packet whose ICRC is wrong. Receivers use [`Frame::verify`].
    pub fn parse(bytes: &'a [u8]) -> Result<Self, Error> {
        let (eth, off) = EthernetRepr::parse(bytes)?;
        let l3 = &bytes[off..];
        let (net, udp_hdr, ib_bytes) = match eth.ethertype {
            ETHERTYPE_IPV4 => {
                let (ip, datagram) = Ipv4Repr::parse(l3)?;
                if ip.protocol != IPPROTO_UDP {
                    return Err(Error::NotRoce);
                }
                let (udp, ib) = UdpRepr::parse(datagram, &IpAddress::Ipv4(ip.src), &IpAddress::Ipv4(ip.dst))?;
                (NetRepr::V4 { ip, udp }, Some(&datagram[..udp::HEADER_LEN]), ib)
            }
            ETHERTYPE_IPV6 => {
                let (ip, datagram) = Ipv6Repr::parse(l3)?;
                if ip.next_header != IPPROTO_UDP {
                    return Err(Error::NotRoce);
                }
                let (udp, ib) = UdpRepr::parse(datagram, &IpAddress::Ipv6(ip.src), &IpAddress::Ipv6(ip.dst))?;
                (NetRepr::V6 { ip, udp }, Some(&datagram[..udp::HEADER_LEN]), ib)
            }
            ROCEV1_ETHERTYPE => {
                let (grh, ib) = GrhRepr::parse(l3)?;
                (NetRepr::V1 { grh }, None, ib)
            }
            _ => return Err(Error::NotRoce),
        };
        if let NetRepr::V4 { udp, .. } | NetRepr::V6 { udp, .. } = &net {
            if udp.dst_port != ROCEV2_UDP_PORT {
                return Err(Error::NotRoce);
            }
        }
        let packet = IbPacket::new_checked(ib_bytes)?;
        let icrc_computed = icrc::compute(&l3[..net.l3_len()], udp_hdr, packet.without_icrc());
        let repr = FrameRepr { eth, net, ib: IbRepr::parse(&packet) };
        Ok(Frame { repr, packet, icrc_computed })
    }

    /// Parses and insists on a correct ICRC (IBTA Vol 1 ch. 7: a packet whose ICRC
    /// does not check is silently dropped).
    pub fn verify(bytes: &'a [u8]) -> Result<Self, Error> {
        let f = Self::parse(bytes)?;
        if !f.icrc_ok() {
            return Err(Error::IcrcMismatch { expected: f.icrc_computed, found: f.packet.icrc() });
        }
        Ok(f)
    }

    pub fn icrc_ok(&self) -> bool {
        self.icrc_computed == self.packet.icrc()
    }

    pub fn payload(&self) -> &'a [u8] {
        self.packet.payload_in_buffer()
    }
}

impl FrameRepr {
    pub fn buffer_len(&self) -> usize {
        self.eth.header_len() + self.net.header_len() + self.ib.buffer_len()
    }

    /// Writes the whole frame for `payload` into `buf`; returns its length.
    pub fn emit(&self, payload: &[u8], buf: &mut [u8]) -> Result<usize, Error> {
        self.emit_with(Payload::Copy(payload), buf)
    }

    /// Where the payload goes in the frame.
    pub fn payload_range(&self) -> core::ops::Range<usize> {
        let at = self.eth.header_len() + self.net.header_len();
        let r = self.ib.payload_range();
        at + r.start..at + r.end
    }

    /// `emit`, with the payload copied in or already at `payload_range()`.
    pub fn emit_with(&self, payload: Payload<'_>, buf: &mut [u8]) -> Result<usize, Error> {
        let len = self.buffer_len();
        if buf.len() < len {
            return Err(Error::BufferTooSmall { need: len, have: buf.len() });
        }
        let buf = &mut buf[..len];
        let eth = EthernetRepr { ethertype: self.net.ethertype(), ..self.eth };
        let off = eth.emit(buf)?;
        let (_, rest) = buf.split_at_mut(off);
        let (l3, rest) = rest.split_at_mut(self.net.l3_len());
        let ib_len = self.ib.buffer_len();
        let udp_len = rest.len() - ib_len;
        {
            let ib = &mut rest[udp_len..];
            self.ib.emit_with(ib, payload)?;
        }
        // The UDP header goes in before the ICRC (which covers its ports and
        // length) and its checksum, if any, after it (which covers the ICRC).
        let udp = match &self.net {
            NetRepr::V4 { ip, udp } => {
                ip.emit(l3, rest.len())?;
                Some((udp, IpAddress::Ipv4(ip.src), IpAddress::Ipv4(ip.dst)))
            }
            NetRepr::V6 { ip, udp } => {
                ip.emit(l3, rest.len())?;
                Some((udp, IpAddress::Ipv6(ip.src), IpAddress::Ipv6(ip.dst)))
            }
            NetRepr::V1 { grh } => {
                grh.emit(l3, rest.len())?;
                None
            }
        };
        if let Some((u, src, dst)) = &udp {
            UdpRepr { checksum: UdpChecksum::None, ..**u }.emit(rest, src, dst)?;
        }
        {
            let (udp_hdr, ib) = rest.split_at_mut(udp_len);
            let n = ib.len();
            let crc = icrc::compute(l3, udp.is_some().then_some(&*udp_hdr), &ib[..n - icrc::LEN]);
            ib[n - icrc::LEN..].copy_from_slice(&icrc::write(crc));
        }
        if let Some((u, src, dst)) = &udp {
            if u.checksum == UdpChecksum::Computed {
                u.emit(rest, src, dst)?;
            }
        }
        Ok(len)
    }
}
