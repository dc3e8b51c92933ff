//! The small IP host a softrdma device is on its L2: it answers ARP and IPv6
//! Neighbor Solicitations for its addresses, answers pings (ICMPv4 and
//! ICMPv6 echo), and keeps the neighbour table the device needs to address
//! RoCE frames (IP → MAC). Pure logic, no I/O: frames in, frames out.
//!
//! Besides its configured addresses the host always owns the IPv6
//! link-local address derived from its MAC (`fe80::/64`, modified EUI-64),
//! which is what rxe uses as GID 0.
//!
//! Neighbours are learnt as Linux learns them: from ARP and NDISC messages
//! that concern this host (a request for one of its addresses, a reply sent
//! to its MAC), and, for addresses already known or being resolved, from any
//! ARP/NDISC message that states them. Entries do not age; a neighbour that
//! changes its MAC is relearnt from its next ARP or NDISC message.
//! 802.1Q-tagged frames are not handled; RoCE frames are ignored (they are
//! the transport's business).

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use smoltcp::phy::ChecksumCapabilities;
use smoltcp::wire::{
    ArpOperation, ArpPacket, ArpRepr, EthernetAddress, EthernetFrame, EthernetProtocol, EthernetRepr, Icmpv4Packet,
    Icmpv4Repr, Icmpv6Packet, Icmpv6Repr, IpProtocol, Ipv4Packet, Ipv4Repr, Ipv6Packet, Ipv6Repr, NdiscNeighborFlags,
    NdiscRepr, RawHardwareAddress,
};
use transport::wire::roce::{classify, FrameKind};

/// At most one ARP request / Neighbor Solicitation per address this often.
pub const REQUEST_INTERVAL: Duration = Duration::from_millis(100);
/// The neighbour table's size limit; the least recently confirmed entry goes.
pub const MAX_NEIGHBORS: usize = 4096;
/// Hop limit / TTL of the echo replies this host sends.
pub const HOP_LIMIT: u8 = 64;

pub const BROADCAST_MAC: [u8; 6] = [0xff; 6];

/// The answer of [`Host::resolve`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resolution {
    /// The MAC address to send to.
    Known([u8; 6]),
    /// Not known yet; if `Some`, a request frame (ARP request or Neighbor
    /// Solicitation) to put on the link. Ask again later (after the reply
    /// has gone through [`Host::handle`]).
    Pending(Option<Vec<u8>>),
}

#[derive(Debug, Clone, Copy)]
struct Neighbor {
    mac: [u8; 6],
    confirmed: Duration,
}

/// An IP host on an Ethernet link (see the module docs).
#[derive(Debug, Clone)]
pub struct Host {
    mac: [u8; 6],
    addrs: Vec<(IpAddr, u8)>,
    link_local: Ipv6Addr,
    neighbors: HashMap<IpAddr, Neighbor>,
    /// Addresses being resolved → when the last request went out.
    pending: HashMap<IpAddr, Duration>,
    /// The clock of the latest `handle`/`resolve` call.
    now: Duration,
}

/// The IPv6 link-local address `fe80::/64` + modified EUI-64 of `mac`
/// (universal/local bit flipped, `ff:fe` in the middle): the address the
/// kernel gives an interface, and rxe's GID 0.
pub fn link_local_from_mac(mac: [u8; 6]) -> Ipv6Addr {
    let mut b = [0u8; 16];
    b[0] = 0xfe;
    b[1] = 0x80;
    b[8] = mac[0] ^ 0x02;
    b[9] = mac[1];
    b[10] = mac[2];
    b[11] = 0xff;
    b[12] = 0xfe;
    b[13] = mac[3];
    b[14] = mac[4];
    b[15] = mac[5];
    Ipv6Addr::from(b)
}

/// The solicited-node multicast address `ff02::1:ffXX:XXXX` of `addr`.
pub fn solicited_node(addr: Ipv6Addr) -> Ipv6Addr {
    let o = addr.octets();
    Ipv6Addr::new(0xff02, 0, 0, 0, 0, 1, 0xff00 | o[13] as u16, u16::from_be_bytes([o[14], o[15]]))
}

/// The Ethernet multicast MAC of an IPv4 or IPv6 multicast address.
pub fn multicast_mac(ip: IpAddr) -> Option<[u8; 6]> {
    match ip {
        IpAddr::V4(a) if a.is_multicast() => {
            let o = a.octets();
            Some([0x01, 0x00, 0x5e, o[1] & 0x7f, o[2], o[3]])
        }
        IpAddr::V6(a) if a.is_multicast() => {
            let o = a.octets();
            Some([0x33, 0x33, o[12], o[13], o[14], o[15]])
        }
        _ => None,
    }
}

fn prefix_contains(net: IpAddr, prefix: u8, ip: IpAddr) -> bool {
    match (net, ip) {
        (IpAddr::V4(n), IpAddr::V4(a)) => {
            let p = u32::from(prefix.min(32));
            let mask = if p == 0 { 0 } else { u32::MAX << (32 - p) };
            u32::from(n) & mask == u32::from(a) & mask
        }
        (IpAddr::V6(n), IpAddr::V6(a)) => {
            let p = u32::from(prefix.min(128));
            let mask = if p == 0 { 0 } else { u128::MAX << (128 - p) };
            u128::from(n) & mask == u128::from(a) & mask
        }
        _ => false,
    }
}

fn is_unicast_mac(mac: &[u8]) -> bool {
    mac.len() == 6 && mac[0] & 0x01 == 0 && mac.iter().any(|&b| b != 0)
}

fn eth(dst: [u8; 6], src: [u8; 6], ethertype: EthernetProtocol, payload_len: usize) -> Vec<u8> {
    let repr = EthernetRepr { src_addr: EthernetAddress(src), dst_addr: EthernetAddress(dst), ethertype };
    let mut buf = vec![0u8; repr.buffer_len() + payload_len];
    repr.emit(&mut EthernetFrame::new_unchecked(&mut buf[..]));
    buf
}

fn arp_frame(eth_dst: [u8; 6], repr: ArpRepr) -> Vec<u8> {
    let ArpRepr::EthernetIpv4 { source_hardware_addr, .. } = repr else { unreachable!() };
    let mut f = eth(eth_dst, source_hardware_addr.0, EthernetProtocol::Arp, repr.buffer_len());
    repr.emit(&mut ArpPacket::new_unchecked(&mut f[14..]));
    f
}

fn icmpv4_frame(eth_dst: [u8; 6], eth_src: [u8; 6], src: Ipv4Addr, dst: Ipv4Addr, icmp: &Icmpv4Repr) -> Vec<u8> {
    let caps = ChecksumCapabilities::default();
    let ip = Ipv4Repr {
        src_addr: src,
        dst_addr: dst,
        next_header: IpProtocol::Icmp,
        payload_len: icmp.buffer_len(),
        hop_limit: HOP_LIMIT,
    };
    let mut f = eth(eth_dst, eth_src, EthernetProtocol::Ipv4, ip.buffer_len() + icmp.buffer_len());
    let mut pkt = Ipv4Packet::new_unchecked(&mut f[14..]);
    ip.emit(&mut pkt, &caps);
    icmp.emit(&mut Icmpv4Packet::new_unchecked(pkt.payload_mut()), &caps);
    f
}

fn icmpv6_frame(
    eth_dst: [u8; 6],
    eth_src: [u8; 6],
    src: Ipv6Addr,
    dst: Ipv6Addr,
    hop_limit: u8,
    icmp: &Icmpv6Repr,
) -> Vec<u8> {
    let ip = Ipv6Repr {
        src_addr: src,
        dst_addr: dst,
        next_header: IpProtocol::Icmpv6,
        payload_len: icmp.buffer_len(),
        hop_limit,
    };
    let mut f = eth(eth_dst, eth_src, EthernetProtocol::Ipv6, ip.buffer_len() + icmp.buffer_len());
    let mut pkt = Ipv6Packet::new_unchecked(&mut f[14..]);
    ip.emit(&mut pkt);
    icmp.emit(&src, &dst, &mut Icmpv6Packet::new_unchecked(pkt.payload_mut()), &ChecksumCapabilities::default());
    f
}

impl Host {
    /// A host with MAC `mac` and the addresses `addrs` (address, prefix
    /// length), plus its link-local IPv6 address.
    pub fn new(mac: [u8; 6], addrs: Vec<(IpAddr, u8)>) -> Host {
        Host {
            mac,
            addrs,
            link_local: link_local_from_mac(mac),
            neighbors: HashMap::new(),
            pending: HashMap::new(),
            now: Duration::ZERO,
        }
    }

    /// Replaces the configured addresses (the link-local one stays).
    pub fn set_addrs(&mut self, addrs: Vec<(IpAddr, u8)>) {
        self.addrs = addrs;
    }

    /// The configured addresses with their prefix lengths.
    pub fn addrs(&self) -> &[(IpAddr, u8)] {
        &self.addrs
    }

    pub fn mac(&self) -> [u8; 6] {
        self.mac
    }

    /// The link-local IPv6 address derived from the MAC.
    pub fn link_local(&self) -> Ipv6Addr {
        self.link_local
    }

    /// Whether `ip` is one of this host's addresses.
    pub fn is_local(&self, ip: IpAddr) -> bool {
        ip == IpAddr::V6(self.link_local) || self.addrs.iter().any(|&(a, _)| a == ip)
    }

    /// The source address this host uses towards `dst`: an address of the
    /// same family whose prefix contains `dst`, else the first one of that
    /// family; for IPv6 the link-local address if `dst` is link-local or no
    /// other fits. `None` for IPv4 without any IPv4 address.
    pub fn source_addr(&self, dst: IpAddr) -> Option<IpAddr> {
        if let IpAddr::V6(d) = dst {
            if d.is_unicast_link_local() || (d.is_multicast() && d.segments()[0] & 0x000f <= 2) {
                return Some(IpAddr::V6(self.link_local));
            }
        }
        let same_family = |a: &IpAddr| a.is_ipv4() == dst.is_ipv4();
        self.addrs
            .iter()
            .find(|&&(a, p)| prefix_contains(a, p, dst))
            .or_else(|| self.addrs.iter().find(|(a, _)| same_family(a)))
            .map(|&(a, _)| a)
            .or(if dst.is_ipv6() { Some(IpAddr::V6(self.link_local)) } else { None })
    }

    /// The known MAC address of neighbour `ip`.
    pub fn lookup(&self, ip: IpAddr) -> Option<[u8; 6]> {
        self.neighbors.get(&ip).map(|n| n.mac)
    }

    /// Records `ip` → `mac` (e.g. a static entry).
    pub fn insert_neighbor(&mut self, ip: IpAddr, mac: [u8; 6], now: Duration) {
        self.now = self.now.max(now);
        self.pending.remove(&ip);
        if !self.neighbors.contains_key(&ip) && self.neighbors.len() >= MAX_NEIGHBORS {
            if let Some(oldest) = self.neighbors.iter().min_by_key(|(_, n)| n.confirmed).map(|(ip, _)| *ip) {
                self.neighbors.remove(&oldest);
            }
        }
        self.neighbors.insert(ip, Neighbor { mac, confirmed: now });
    }

    /// Forgets neighbour `ip`.
    pub fn remove_neighbor(&mut self, ip: IpAddr) {
        self.neighbors.remove(&ip);
    }

    /// Learns `ip` → `mac` if the message concerned us (`for_us`) or `ip` is
    /// already known or being resolved.
    fn learn(&mut self, ip: IpAddr, mac: &[u8], for_us: bool) {
        if ip.is_unspecified() || ip.is_multicast() || self.is_local(ip) || !is_unicast_mac(mac) {
            return;
        }
        if for_us || self.neighbors.contains_key(&ip) || self.pending.contains_key(&ip) {
            self.insert_neighbor(ip, mac.try_into().unwrap(), self.now);
        }
    }

    /// The MAC address to send to `ip`, or a request to find it out (at most
    /// one per [`REQUEST_INTERVAL`] per address). This host's own addresses
    /// resolve to its MAC, multicast and broadcast addresses to theirs.
    pub fn resolve(&mut self, ip: IpAddr, now: Duration) -> Resolution {
        self.now = self.now.max(now);
        if self.is_local(ip) {
            return Resolution::Known(self.mac);
        }
        if let Some(mac) = multicast_mac(ip) {
            return Resolution::Known(mac);
        }
        if let IpAddr::V4(a) = ip {
            let subnet_bcast = self.addrs.iter().any(|&(n, p)| {
                p < 31 && prefix_contains(n, p, ip) && {
                    let host_bits = u32::MAX >> p;
                    u32::from(a) & host_bits == host_bits
                }
            });
            if a.is_broadcast() || subnet_bcast {
                return Resolution::Known(BROADCAST_MAC);
            }
        }
        if let Some(n) = self.neighbors.get(&ip) {
            return Resolution::Known(n.mac);
        }
        if ip.is_unspecified() {
            return Resolution::Pending(None);
        }
        if let Some(&last) = self.pending.get(&ip) {
            if now < last + REQUEST_INTERVAL {
                return Resolution::Pending(None);
            }
        }
        if self.pending.len() >= MAX_NEIGHBORS {
            self.pending.retain(|_, &mut last| now < last + Duration::from_secs(10));
            if self.pending.len() >= MAX_NEIGHBORS {
                return Resolution::Pending(None);
            }
        }
        self.pending.insert(ip, now);
        Resolution::Pending(Some(self.request(ip)))
    }

    /// An ARP request (IPv4) or Neighbor Solicitation (IPv6) for `ip`.
    fn request(&self, ip: IpAddr) -> Vec<u8> {
        match ip {
            IpAddr::V4(target) => {
                let src = match self.source_addr(ip) {
                    Some(IpAddr::V4(s)) => s,
                    _ => Ipv4Addr::UNSPECIFIED,
                };
                arp_frame(
                    BROADCAST_MAC,
                    ArpRepr::EthernetIpv4 {
                        operation: ArpOperation::Request,
                        source_hardware_addr: EthernetAddress(self.mac),
                        source_protocol_addr: src,
                        target_hardware_addr: EthernetAddress([0; 6]),
                        target_protocol_addr: target,
                    },
                )
            }
            IpAddr::V6(target) => {
                let src = match self.source_addr(ip) {
                    Some(IpAddr::V6(s)) => s,
                    _ => self.link_local,
                };
                let dst = solicited_node(target);
                let ns = Icmpv6Repr::Ndisc(NdiscRepr::NeighborSolicit {
                    target_addr: target,
                    lladdr: Some(RawHardwareAddress::from_bytes(&self.mac)),
                });
                let eth_dst = multicast_mac(IpAddr::V6(dst)).unwrap();
                icmpv6_frame(eth_dst, self.mac, src, dst, 255, &ns)
            }
        }
    }

    /// Gratuitous ARP for each IPv4 address and an unsolicited Neighbor
    /// Advertisement for each IPv6 address (the link-local one included), so
    /// that neighbours update their caches, e.g. after a MAC change.
    pub fn announce(&self) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        let v6 = std::iter::once(self.link_local).chain(self.addrs.iter().filter_map(|&(a, _)| match a {
            IpAddr::V6(a) => Some(a),
            IpAddr::V4(_) => None,
        }));
        for &(a, _) in &self.addrs {
            if let IpAddr::V4(a) = a {
                out.push(arp_frame(
                    BROADCAST_MAC,
                    ArpRepr::EthernetIpv4 {
                        operation: ArpOperation::Request,
                        source_hardware_addr: EthernetAddress(self.mac),
                        source_protocol_addr: a,
                        target_hardware_addr: EthernetAddress([0; 6]),
                        target_protocol_addr: a,
                    },
                ));
            }
        }
        let all_nodes = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);
        for a in v6 {
            let na = Icmpv6Repr::Ndisc(NdiscRepr::NeighborAdvert {
                flags: NdiscNeighborFlags::OVERRIDE,
                target_addr: a,
                lladdr: Some(RawHardwareAddress::from_bytes(&self.mac)),
            });
            let eth_dst = multicast_mac(IpAddr::V6(all_nodes)).unwrap();
            out.push(icmpv6_frame(eth_dst, self.mac, a, all_nodes, 255, &na));
        }
        out
    }

    /// Takes one received frame; returns the frames to send in answer
    /// (ARP replies, Neighbor Advertisements, echo replies). RoCE frames,
    /// frames for other unicast MACs and anything malformed get no answer.
    pub fn handle(&mut self, frame: &[u8], now: Duration) -> Vec<Vec<u8>> {
        self.now = self.now.max(now);
        if matches!(classify(frame), FrameKind::RoceV2 | FrameKind::RoceV1) {
            return Vec::new();
        }
        let Ok(eth) = EthernetFrame::new_checked(frame) else {
            return Vec::new();
        };
        let dst = eth.dst_addr();
        let to_me = dst.0 == self.mac;
        if !to_me && !dst.is_broadcast() && !dst.is_multicast() {
            return Vec::new();
        }
        if eth.src_addr().0 == self.mac {
            return Vec::new(); // our own frame, looped back
        }
        let src_mac = eth.src_addr().0;
        let payload = eth.payload();
        let reply = match eth.ethertype() {
            EthernetProtocol::Arp => self.handle_arp(payload, to_me),
            EthernetProtocol::Ipv4 => self.handle_ipv4(src_mac, payload),
            EthernetProtocol::Ipv6 => self.handle_ipv6(src_mac, payload, to_me),
            _ => None,
        };
        reply.into_iter().collect()
    }

    fn handle_arp(&mut self, payload: &[u8], to_me: bool) -> Option<Vec<u8>> {
        let pkt = ArpPacket::new_checked(payload).ok()?;
        let ArpRepr::EthernetIpv4 {
            operation,
            source_hardware_addr: sha,
            source_protocol_addr: spa,
            target_protocol_addr: tpa,
            ..
        } = ArpRepr::parse(&pkt).ok()?
        else {
            return None;
        };
        let for_my_addr = self.is_local(IpAddr::V4(tpa));
        match operation {
            ArpOperation::Request => {
                self.learn(IpAddr::V4(spa), &sha.0, for_my_addr && spa != tpa);
                if !for_my_addr || spa == tpa || !is_unicast_mac(&sha.0) {
                    return None;
                }
                Some(arp_frame(
                    sha.0,
                    ArpRepr::EthernetIpv4 {
                        operation: ArpOperation::Reply,
                        source_hardware_addr: EthernetAddress(self.mac),
                        source_protocol_addr: tpa,
                        target_hardware_addr: sha,
                        target_protocol_addr: spa,
                    },
                ))
            }
            ArpOperation::Reply => {
                self.learn(IpAddr::V4(spa), &sha.0, to_me);
                None
            }
            _ => None,
        }
    }

    fn handle_ipv4(&mut self, src_mac: [u8; 6], payload: &[u8]) -> Option<Vec<u8>> {
        let ip = Ipv4Packet::new_checked(payload).ok()?;
        if ip.version() != 4 || !ip.verify_checksum() || ip.more_frags() || ip.frag_offset() != 0 {
            return None;
        }
        let (src, dst) = (ip.src_addr(), ip.dst_addr());
        if ip.next_header() != IpProtocol::Icmp
            || !self.is_local(IpAddr::V4(dst))
            || src.is_unspecified()
            || src.is_broadcast()
            || src.is_multicast()
        {
            return None;
        }
        let icmp = Icmpv4Packet::new_checked(ip.payload()).ok()?;
        match Icmpv4Repr::parse(&icmp, &ChecksumCapabilities::default()).ok()? {
            Icmpv4Repr::EchoRequest { ident, seq_no, data } => {
                let reply = Icmpv4Repr::EchoReply { ident, seq_no, data };
                Some(icmpv4_frame(src_mac, self.mac, dst, src, &reply))
            }
            _ => None,
        }
    }

    fn handle_ipv6(&mut self, src_mac: [u8; 6], payload: &[u8], to_me: bool) -> Option<Vec<u8>> {
        let ip = Ipv6Packet::new_checked(payload).ok()?;
        if ip.version() != 6 || ip.next_header() != IpProtocol::Icmpv6 {
            return None;
        }
        let (src, dst) = (ip.src_addr(), ip.dst_addr());
        if src.is_multicast() {
            return None;
        }
        let icmp = Icmpv6Packet::new_checked(ip.payload()).ok()?;
        let repr = Icmpv6Repr::parse(&src, &dst, &icmp, &ChecksumCapabilities::default()).ok()?;
        match repr {
            Icmpv6Repr::EchoRequest { ident, seq_no, data } => {
                if !self.is_local(IpAddr::V6(dst)) || src.is_unspecified() {
                    return None;
                }
                let reply = Icmpv6Repr::EchoReply { ident, seq_no, data };
                Some(icmpv6_frame(src_mac, self.mac, dst, src, HOP_LIMIT, &reply))
            }
            // RFC 4861 §7.1: NDISC messages must come with hop limit 255.
            Icmpv6Repr::Ndisc(_) if ip.hop_limit() != 255 => None,
            Icmpv6Repr::Ndisc(NdiscRepr::NeighborSolicit { target_addr, lladdr }) => {
                let for_my_addr = self.is_local(IpAddr::V6(target_addr));
                let dad = src.is_unspecified();
                if let Some(ll) = lladdr {
                    if !dad {
                        self.learn(IpAddr::V6(src), ll.as_bytes(), for_my_addr);
                    }
                }
                if !for_my_addr || dst.is_multicast() && dst != solicited_node(target_addr) {
                    return None;
                }
                let me = Some(RawHardwareAddress::from_bytes(&self.mac));
                if dad {
                    // Someone probes our address: defend it (RFC 4862 §5.4.3).
                    let all_nodes = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);
                    let na = Icmpv6Repr::Ndisc(NdiscRepr::NeighborAdvert {
                        flags: NdiscNeighborFlags::OVERRIDE,
                        target_addr,
                        lladdr: me,
                    });
                    let eth_dst = multicast_mac(IpAddr::V6(all_nodes)).unwrap();
                    return Some(icmpv6_frame(eth_dst, self.mac, target_addr, all_nodes, 255, &na));
                }
                let na = Icmpv6Repr::Ndisc(NdiscRepr::NeighborAdvert {
                    flags: NdiscNeighborFlags::SOLICITED | NdiscNeighborFlags::OVERRIDE,
                    target_addr,
                    lladdr: me,
                });
                let eth_dst = match lladdr {
                    Some(ll) if is_unicast_mac(ll.as_bytes()) => ll.as_bytes().try_into().unwrap(),
                    _ => src_mac,
                };
                Some(icmpv6_frame(eth_dst, self.mac, target_addr, src, 255, &na))
            }
            Icmpv6Repr::Ndisc(NdiscRepr::NeighborAdvert { target_addr, lladdr, .. }) => {
                if let Some(ll) = lladdr {
                    self.learn(IpAddr::V6(target_addr), ll.as_bytes(), to_me);
                }
                None
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAC: [u8; 6] = [0x02, 0x00, 0x00, 0x00, 0x00, 0x0a];
    const PEER: [u8; 6] = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56];
    const IP4: Ipv4Addr = Ipv4Addr::new(10, 9, 0, 2);
    const PEER4: Ipv4Addr = Ipv4Addr::new(10, 9, 0, 1);

    fn ip6() -> Ipv6Addr {
        "fd00:9::2".parse().unwrap()
    }
    fn peer6() -> Ipv6Addr {
        "fd00:9::1".parse().unwrap()
    }
    fn host() -> Host {
        Host::new(MAC, vec![(IP4.into(), 24), (ip6().into(), 64)])
    }
    fn t(ms: u64) -> Duration {
        Duration::from_millis(ms)
    }

    fn hex(s: &str) -> Vec<u8> {
        let s: String = s.chars().filter(|c| !c.is_whitespace()).collect();
        (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
    }

    /// An ARP request from PEER (10.9.0.1) for 10.9.0.2, as Linux sends it
    /// (broadcast, padded to 60 bytes).
    fn arp_request_bytes() -> Vec<u8> {
        let mut f = hex("ffffffffffff 525400123456 0806
             0001 0800 06 04 0001 525400123456 0a090001 000000000000 0a090002");
        f.resize(60, 0);
        f
    }

    /// An ICMPv4 echo request 10.9.0.1 → 10.9.0.2, id 0x1234, seq 7,
    /// payload "softrdma", checksums from the RFC 1071 routine below.
    fn echo4_request_bytes() -> Vec<u8> {
        let mut f = hex("02000000000a 525400123456 0800");
        let payload = b"softrdma";
        let mut ip = hex("4500 0000 abcd 4000 40 01 0000 0a090001 0a090002");
        let total = 20 + 8 + payload.len();
        ip[2..4].copy_from_slice(&(total as u16).to_be_bytes());
        let c = checksum(&ip);
        ip[10..12].copy_from_slice(&c.to_be_bytes());
        let mut icmp = hex("0800 0000 1234 0007");
        icmp.extend_from_slice(payload);
        let c = checksum(&icmp);
        icmp[2..4].copy_from_slice(&c.to_be_bytes());
        f.extend(ip);
        f.extend(icmp);
        f.resize(f.len().max(60), 0);
        f
    }

    /// The Internet checksum (RFC 1071).
    fn checksum(data: &[u8]) -> u16 {
        let mut sum: u32 = 0;
        for c in data.chunks(2) {
            let w = if c.len() == 2 { u16::from_be_bytes([c[0], c[1]]) } else { u16::from(c[0]) << 8 };
            sum += u32::from(w);
        }
        while sum >> 16 != 0 {
            sum = (sum & 0xffff) + (sum >> 16);
        }
        !(sum as u16)
    }

    fn icmpv6_checksum(src: Ipv6Addr, dst: Ipv6Addr, icmp: &[u8]) -> u16 {
        let mut pseudo = Vec::new();
        pseudo.extend_from_slice(&src.octets());
        pseudo.extend_from_slice(&dst.octets());
        pseudo.extend_from_slice(&(icmp.len() as u32).to_be_bytes());
        pseudo.extend_from_slice(&[0, 0, 0, 58]);
        pseudo.extend_from_slice(icmp);
        checksum(&pseudo)
    }

    /// An IPv6 frame PEER → `eth_dst` carrying `icmp` (checksum filled in).
    fn icmpv6_bytes(eth_dst: [u8; 6], src: Ipv6Addr, dst: Ipv6Addr, hop: u8, mut icmp: Vec<u8>) -> Vec<u8> {
        let c = icmpv6_checksum(src, dst, &icmp);
        icmp[2..4].copy_from_slice(&c.to_be_bytes());
        let mut f = Vec::new();
        f.extend_from_slice(&eth_dst);
        f.extend_from_slice(&PEER);
        f.extend(hex("86dd 60000000"));
        f.extend_from_slice(&(icmp.len() as u16).to_be_bytes());
        f.extend_from_slice(&[58, hop]);
        f.extend_from_slice(&src.octets());
        f.extend_from_slice(&dst.octets());
        f.extend(icmp);
        f
    }

    /// A Neighbor Solicitation from peer6 for `target`, with an SLLA option.
    fn ns_bytes(target: Ipv6Addr) -> Vec<u8> {
        let mut icmp = hex("87 00 0000 00000000");
        icmp.extend_from_slice(&target.octets());
        icmp.extend(hex("01 01"));
        icmp.extend_from_slice(&PEER);
        let dst = solicited_node(target);
        icmpv6_bytes(multicast_mac(dst.into()).unwrap(), peer6(), dst, 255, icmp)
    }

    #[test]
    fn link_local_is_eui64() {
        assert_eq!(
            link_local_from_mac([0x52, 0x54, 0x00, 0x12, 0x34, 0x56]),
            "fe80::5054:ff:fe12:3456".parse::<Ipv6Addr>().unwrap()
        );
        assert_eq!(solicited_node(ip6()), "ff02::1:ff00:2".parse::<Ipv6Addr>().unwrap());
        assert_eq!(multicast_mac("ff02::1:ff00:2".parse::<IpAddr>().unwrap()), Some([0x33, 0x33, 0xff, 0, 0, 2]));
        assert_eq!(multicast_mac("239.129.2.3".parse::<IpAddr>().unwrap()), Some([1, 0, 0x5e, 1, 2, 3]));
    }

    #[test]
    fn arp_request_gets_reply_and_teaches_sender() {
        let mut h = host();
        let out = h.handle(&arp_request_bytes(), t(0));
        assert_eq!(out.len(), 1);
        let expected = hex("525400123456 02000000000a 0806
             0001 0800 06 04 0002 02000000000a 0a090002 525400123456 0a090001");
        assert_eq!(out[0], expected);
        assert_eq!(h.lookup(PEER4.into()), Some(PEER));
    }

    #[test]
    fn arp_for_other_address_is_ignored() {
        let mut h = host();
        let mut f = arp_request_bytes();
        f[41] = 3; // target 10.9.0.3
        assert!(h.handle(&f, t(0)).is_empty());
        assert_eq!(h.lookup(PEER4.into()), None, "not learnt: not for us, not pending");
    }

    #[test]
    fn echo4_reply() {
        let mut h = host();
        let req = echo4_request_bytes();
        let out = h.handle(&req, t(0));
        assert_eq!(out.len(), 1);
        let r = &out[0];
        assert_eq!(&r[0..6], &PEER);
        assert_eq!(&r[6..12], &MAC);
        assert_eq!(&r[12..14], &[0x08, 0x00]);
        let ip = &r[14..];
        assert_eq!(ip[0], 0x45);
        assert_eq!(u16::from_be_bytes([ip[2], ip[3]]) as usize, 20 + 8 + 8);
        assert_eq!(ip[9], 1);
        assert_eq!(&ip[12..16], &IP4.octets());
        assert_eq!(&ip[16..20], &PEER4.octets());
        assert_eq!(checksum(&ip[..20]), 0, "IPv4 header checksum");
        let icmp = &ip[20..36];
        assert_eq!(icmp[0], 0, "echo reply");
        assert_eq!(icmp[1], 0);
        assert_eq!(&icmp[4..8], &[0x12, 0x34, 0x00, 0x07], "same id and seq");
        assert_eq!(&icmp[8..], b"softrdma", "same payload, no Ethernet padding");
        assert_eq!(checksum(icmp), 0, "ICMP checksum");
        assert_eq!(r.len(), 14 + 36);

        // A bad ICMP checksum, or another destination, gets no answer.
        let mut bad = req.clone();
        bad[14 + 20 + 8] ^= 1;
        assert!(h.handle(&bad, t(0)).is_empty());
        let mut other = host();
        other.set_addrs(vec![(Ipv4Addr::new(10, 9, 0, 3).into(), 24)]);
        assert!(other.handle(&req, t(0)).is_empty());
        // Unicast to another MAC: not ours.
        let mut wrong_mac = req.clone();
        wrong_mac[5] = 0x0b;
        assert!(h.handle(&wrong_mac, t(0)).is_empty());
    }

    #[test]
    fn echo6_reply() {
        let mut h = host();
        for dst in [ip6(), h.link_local()] {
            let src = if dst.is_unicast_link_local() { "fe80::1".parse().unwrap() } else { peer6() };
            let mut icmp = hex("80 00 0000 beef 0003");
            icmp.extend_from_slice(b"ping6 payload");
            let req = icmpv6_bytes(MAC, src, dst, 64, icmp);
            let out = h.handle(&req, t(0));
            assert_eq!(out.len(), 1, "echo to {dst}");
            let r = &out[0];
            assert_eq!(&r[0..6], &PEER);
            assert_eq!(&r[6..12], &MAC);
            let ip = &r[14..];
            assert_eq!(ip[6], 58);
            assert_eq!(ip[7], HOP_LIMIT);
            assert_eq!(&ip[8..24], &dst.octets());
            assert_eq!(&ip[24..40], &src.octets());
            let icmp = &ip[40..];
            assert_eq!(u16::from_be_bytes([ip[4], ip[5]]) as usize, icmp.len());
            assert_eq!(icmp[0], 129, "echo reply");
            assert_eq!(&icmp[4..8], &[0xbe, 0xef, 0x00, 0x03]);
            assert_eq!(&icmp[8..], b"ping6 payload");
            assert_eq!(icmpv6_checksum(dst, src, icmp), 0, "ICMPv6 checksum");
        }
    }

    #[test]
    fn ns_gets_na() {
        let mut h = host();
        let out = h.handle(&ns_bytes(ip6()), t(0));
        assert_eq!(out.len(), 1);
        let r = &out[0];
        assert_eq!(&r[0..6], &PEER, "to the SLLA");
        assert_eq!(&r[6..12], &MAC);
        let ip = &r[14..];
        assert_eq!(ip[7], 255, "hop limit");
        assert_eq!(&ip[8..24], &ip6().octets(), "from the target address");
        assert_eq!(&ip[24..40], &peer6().octets(), "to the soliciting address");
        let icmp = &ip[40..];
        assert_eq!(icmp.len(), 32);
        assert_eq!(icmp[0], 136, "neighbor advertisement");
        assert_eq!(icmp[4], 0x60, "S and O set, R clear");
        assert_eq!(&icmp[8..24], &ip6().octets(), "target");
        assert_eq!(&icmp[24..26], &[2, 1], "target link-layer address option");
        assert_eq!(&icmp[26..32], &MAC);
        assert_eq!(icmpv6_checksum(ip6(), peer6(), icmp), 0);
        assert_eq!(h.lookup(peer6().into()), Some(PEER), "learnt from the SLLA");

        // For the link-local address too (rxe's GID 0).
        let ll = h.link_local();
        assert_eq!(h.handle(&ns_bytes(ll), t(0)).len(), 1);
        // Not for other targets, nor with a hop limit other than 255.
        assert!(h.handle(&ns_bytes("fd00:9::3".parse().unwrap()), t(0)).is_empty());
        let mut low_hop = ns_bytes(ip6());
        low_hop[14 + 7] = 64;
        assert!(h.handle(&low_hop, t(0)).is_empty());
    }

    #[test]
    fn dad_probe_is_defended() {
        let mut h = host();
        let mut icmp = hex("87 00 0000 00000000");
        icmp.extend_from_slice(&ip6().octets());
        let dst = solicited_node(ip6());
        let f = icmpv6_bytes(multicast_mac(dst.into()).unwrap(), Ipv6Addr::UNSPECIFIED, dst, 255, icmp);
        let out = h.handle(&f, t(0));
        assert_eq!(out.len(), 1);
        let r = &out[0];
        assert_eq!(&r[0..6], &[0x33, 0x33, 0, 0, 0, 1]);
        assert_eq!(&r[14 + 24..14 + 40], &"ff02::1".parse::<Ipv6Addr>().unwrap().octets());
        assert_eq!(r[14 + 40 + 4], 0x20, "O only");
    }

    #[test]
    fn roce_and_junk_are_ignored() {
        let mut h = host();
        // IPv4/UDP to 4791 addressed to us.
        let mut f = hex("02000000000a 525400123456 0800");
        let mut ip = hex("4500 0000 0000 4000 40 11 0000 0a090001 0a090002");
        let udp = hex("c000 12b7 0014 0000 0a000000 00000001 00000000");
        ip[2..4].copy_from_slice(&((20 + udp.len()) as u16).to_be_bytes());
        let c = checksum(&ip);
        ip[10..12].copy_from_slice(&c.to_be_bytes());
        f.extend(ip);
        f.extend(udp);
        assert_eq!(classify(&f), FrameKind::RoceV2);
        assert!(h.handle(&f, t(0)).is_empty());
        for n in 0..f.len() {
            h.handle(&f[..n], t(0));
            h.handle(&arp_request_bytes()[..n.min(60)], t(0));
            h.handle(&echo4_request_bytes()[..n.min(50)], t(0));
            h.handle(&ns_bytes(ip6())[..n.min(86)], t(0));
        }
    }

    #[test]
    fn resolve_ipv4() {
        let mut h = host();
        let Resolution::Pending(Some(req)) = h.resolve(PEER4.into(), t(1000)) else { panic!() };
        assert_eq!(
            req,
            hex("ffffffffffff 02000000000a 0806
                 0001 0800 06 04 0001 02000000000a 0a090002 000000000000 0a090001")
        );
        // Rate-limited.
        assert_eq!(h.resolve(PEER4.into(), t(1050)), Resolution::Pending(None));
        assert!(matches!(h.resolve(PEER4.into(), t(1100)), Resolution::Pending(Some(_))));
        assert_eq!(h.resolve(PEER4.into(), t(1150)), Resolution::Pending(None));
        // Another address is independent.
        assert!(matches!(h.resolve(Ipv4Addr::new(10, 9, 0, 7).into(), t(1150)), Resolution::Pending(Some(_))));
        // The reply comes in.
        let reply = hex("02000000000a 525400123456 0806
             0001 0800 06 04 0002 525400123456 0a090001 02000000000a 0a090002");
        assert!(h.handle(&reply, t(1160)).is_empty());
        assert_eq!(h.resolve(PEER4.into(), t(1170)), Resolution::Known(PEER));
        assert_eq!(h.lookup(PEER4.into()), Some(PEER));
        // Local, broadcast and multicast addresses need no request.
        assert_eq!(h.resolve(IP4.into(), t(0)), Resolution::Known(MAC));
        assert_eq!(h.resolve(Ipv4Addr::new(10, 9, 0, 255).into(), t(0)), Resolution::Known(BROADCAST_MAC));
        assert_eq!(h.resolve(Ipv4Addr::BROADCAST.into(), t(0)), Resolution::Known(BROADCAST_MAC));
    }

    #[test]
    fn resolve_ipv6() {
        let mut h = host();
        let Resolution::Pending(Some(req)) = h.resolve(peer6().into(), t(0)) else { panic!() };
        assert_eq!(&req[0..6], &[0x33, 0x33, 0xff, 0, 0, 1]);
        let ip = &req[14..];
        assert_eq!(ip[7], 255);
        assert_eq!(&ip[8..24], &ip6().octets(), "source from the same prefix");
        assert_eq!(&ip[24..40], &solicited_node(peer6()).octets());
        let icmp = &ip[40..];
        assert_eq!(icmp[0], 135);
        assert_eq!(&icmp[8..24], &peer6().octets());
        assert_eq!(&icmp[24..26], &[1, 1], "source link-layer address option");
        assert_eq!(&icmp[26..32], &MAC);
        assert_eq!(icmpv6_checksum(ip6(), solicited_node(peer6()), icmp), 0);
        assert_eq!(h.resolve(peer6().into(), t(10)), Resolution::Pending(None));

        // The solicited NA comes back.
        let mut na = hex("88 00 0000 60000000");
        na.extend_from_slice(&peer6().octets());
        na.extend(hex("02 01"));
        na.extend_from_slice(&PEER);
        let f = icmpv6_bytes(MAC, peer6(), ip6(), 255, na);
        assert!(h.handle(&f, t(20)).is_empty());
        assert_eq!(h.resolve(peer6().into(), t(30)), Resolution::Known(PEER));

        // A link-local target is solicited from the link-local address.
        let ll_peer: Ipv6Addr = "fe80::5054:ff:fe12:3456".parse().unwrap();
        let Resolution::Pending(Some(req)) = h.resolve(ll_peer.into(), t(0)) else { panic!() };
        assert_eq!(&req[14 + 8..14 + 24], &h.link_local().octets());
    }

    #[test]
    fn unsolicited_traffic_learning_rules() {
        let mut h = host();
        // A reply nobody asked for, broadcast: not learnt.
        let mut reply = hex("ffffffffffff 525400123456 0806
             0001 0800 06 04 0002 525400123456 0a090001 000000000000 0a090002");
        h.handle(&reply, t(0));
        assert_eq!(h.lookup(PEER4.into()), None);
        // Once known, any ARP from it updates the entry (MAC change).
        h.insert_neighbor(PEER4.into(), [0x02, 1, 1, 1, 1, 1], t(0));
        h.handle(&reply, t(1));
        assert_eq!(h.lookup(PEER4.into()), Some(PEER));
        // Unicast to us: learnt.
        let mut h = host();
        reply[..6].copy_from_slice(&MAC);
        h.handle(&reply, t(0));
        assert_eq!(h.lookup(PEER4.into()), Some(PEER));
    }

    #[test]
    fn announce_frames() {
        let h = host();
        let out = h.announce();
        assert_eq!(out.len(), 3, "one gratuitous ARP, two unsolicited NAs");
        assert_eq!(&out[0][28..32], &IP4.octets());
        assert_eq!(&out[0][38..42], &IP4.octets());
        // Another host learns nothing from them unless it knows us already,
        // then it updates.
        let mut other = Host::new(PEER, vec![(PEER4.into(), 24)]);
        other.insert_neighbor(IP4.into(), [0x02, 9, 9, 9, 9, 9], t(0));
        other.insert_neighbor(ip6().into(), [0x02, 9, 9, 9, 9, 9], t(0));
        for f in &out {
            other.handle(f, t(1));
        }
        assert_eq!(other.lookup(IP4.into()), Some(MAC));
        assert_eq!(other.lookup(ip6().into()), Some(MAC));
    }
}
