//! Telling RoCE frames from the rest of a link's traffic without parsing them
//! whole: the device hands ARP, ICMP and other frames to its host stack and
//! only RoCE frames to the transport.
//!
//! - RoCEv2 (Annex A17.4.3): IPv4 or IPv6, UDP, destination port 4791.
//! - RoCEv1 (Annex A16.3): EtherType 0x8915, then a GRH.

use smoltcp::wire::{IpProtocol, Ipv4Packet, Ipv6Packet, UdpPacket};

use super::ethernet::EthernetRepr;

pub const ROCEV2_UDP_PORT: u16 = 4791;
pub const ROCEV1_ETHERTYPE: u16 = 0x8915;
pub const ETHERTYPE_IPV4: u16 = 0x0800;
pub const ETHERTYPE_IPV6: u16 = 0x86dd;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameKind {
    RoceV2,
    RoceV1,
    /// Anything else, with its (inner) EtherType; `None` if even the Ethernet
    /// header is incomplete.
    Other(Option<u16>),
}

/// Classifies a frame by its headers only; never fails, never panics.
pub fn classify(frame: &[u8]) -> FrameKind {
    let Ok((eth, off)) = EthernetRepr::parse(frame) else {
        return FrameKind::Other(None);
    };
    let rest = &frame[off..];
    let udp = match eth.ethertype {
        ROCEV1_ETHERTYPE => return FrameKind::RoceV1,
        ETHERTYPE_IPV4 => match Ipv4Packet::new_checked(rest) {
            Ok(ip) if ip.next_header() == IpProtocol::Udp => rest.get(ip.header_len() as usize..),
            _ => None,
        },
        ETHERTYPE_IPV6 => match Ipv6Packet::new_checked(rest) {
            Ok(ip) if ip.next_header() == IpProtocol::Udp => rest.get(smoltcp::wire::IPV6_HEADER_LEN..),
            _ => None,
        },
        _ => None,
    };
    match udp.and_then(|b| UdpPacket::new_checked(b).ok()) {
        Some(u) if u.dst_port() == ROCEV2_UDP_PORT => FrameKind::RoceV2,
        _ => FrameKind::Other(Some(eth.ethertype)),
    }
}
