//! Where a QP's packets go: the resolved address vector of a connected QP (or
//! of a UD work request's address handle) and how it turns into the Ethernet,
//! IP and UDP headers of a frame.
//!
//! GID → MAC resolution (ARP/ND) is the device's job; the transport receives
//! the answer here, already resolved.

use smoltcp::wire::EthernetAddress;
use verbs_api::Gid;

use crate::wire::roce::ROCEV2_UDP_PORT;
use crate::wire::{EthernetRepr, FrameRepr, IbRepr, Ipv4Repr, Ipv6Repr, NetRepr, UdpChecksum, UdpRepr, VlanTag};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Path {
    pub smac: EthernetAddress,
    pub dmac: EthernetAddress,
    pub vlan: Option<VlanTag>,
    pub sgid: Gid,
    pub dgid: Gid,
    pub traffic_class: u8,
    pub hop_limit: u8,
    pub flow_label: u32,
    pub udp_sport: u16,
}

impl Path {
    /// Both GIDs IPv4-mapped: the packet travels over IPv4.
    pub fn is_ipv4(&self) -> bool {
        self.sgid.to_ipv4().is_some() && self.dgid.to_ipv4().is_some()
    }

    /// The headers of a frame on this path carrying `ib`. `ident` is the IPv4
    /// identification (rxe lets the kernel's IP layer pick one per packet).
    pub fn frame_repr(&self, ib: IbRepr, ident: u16) -> FrameRepr {
        let udp = |checksum| UdpRepr { src_port: self.udp_sport, dst_port: ROCEV2_UDP_PORT, checksum };
        let net = match (self.sgid.to_ipv4(), self.dgid.to_ipv4()) {
            (Some(src), Some(dst)) => NetRepr::V4 {
                ip: Ipv4Repr {
                    src,
                    dst,
                    dscp: self.traffic_class >> 2,
                    ecn: self.traffic_class & 3,
                    ident,
                    dont_frag: true,
                    ttl: self.hop_limit,
                    protocol: 17,
                },
                // rxe sends IPv4 RoCE with a zero UDP checksum.
                udp: udp(UdpChecksum::None),
            },
            _ => NetRepr::V6 {
                ip: Ipv6Repr {
                    src: self.sgid.to_ipv6(),
                    dst: self.dgid.to_ipv6(),
                    traffic_class: self.traffic_class,
                    flow_label: self.flow_label,
                    hop_limit: self.hop_limit,
                    next_header: 17,
                },
                // A zero UDP checksum over IPv6 is only legal for tunnels that
                // opt in (RFC 6935); a computed one is accepted everywhere.
                udp: udp(UdpChecksum::Computed),
            },
        };
        FrameRepr { eth: EthernetRepr { dst: self.dmac, src: self.smac, vlan: self.vlan, ethertype: 0 }, net, ib }
    }
}
