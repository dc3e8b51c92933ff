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
        Self::parse_as(bytes, true)
    }

    /// Parses every layer of a frame whose ICRC its receiver has just
    /// checked over these very bytes, as it copied their payload in
    /// ([`fill_checked`]): the ICRC is taken as found, not computed again.
    pub fn parse_icrc_checked(bytes: &'a [u8]) -> Result<Self, Error> {
        Self::parse_as(bytes, false)
    }

    fn parse_as(bytes: &'a [u8], compute_icrc: bool) -> Result<Self, Error> {
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
        let icrc_computed = match compute_icrc {
            true => icrc::compute(&l3[..net.l3_len()], udp_hdr, packet.without_icrc()),
            false => packet.icrc(),
        };
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

/// Gives an emitted RoCEv2 frame over IPv4 another IP identification; its
/// header checksum and ICRC (which covers the identification, Annex A17.8)
/// follow. In place, nothing else moves; a frame whose ICRC does not check
/// is left as it is (a fresh ICRC would pass it off as sound).
pub fn set_ipv4_ident(bytes: &mut [u8], ident: u16) -> Result<(), Error> {
    let (ip, at, end) = ipv4_layout(bytes)?;
    let trailer = end - icrc::LEN;
    let crc =
        |b: &[u8]| icrc::compute(&b[ip..ip + IPV4_HEADER_LEN], Some(&b[ip + IPV4_HEADER_LEN..at]), &b[at..trailer]);
    let (expected, found) = (crc(bytes), icrc::read(bytes[trailer..end].try_into().expect("4 bytes")));
    if expected != found {
        return Err(Error::IcrcMismatch { expected, found });
    }
    let mut p = smoltcp::wire::Ipv4Packet::new_unchecked(&mut bytes[ip..ip + IPV4_HEADER_LEN]);
    p.set_ident(ident);
    p.fill_checksum();
    let fresh = crc(bytes);
    bytes[trailer..end].copy_from_slice(&icrc::write(fresh));
    Ok(())
}

/// Where an emitted RoCEv2 frame over IPv4 (no IP options) has its IP
/// header, its BTH and its end (after the ICRC), as its own headers say.
fn ipv4_layout(bytes: &[u8]) -> Result<(usize, usize, usize), Error> {
    let at = super::peek::bth_offset(bytes).ok_or(Error::NotRoce)?;
    let ip = if bytes[12..14] == [0x81, 0x00] { 18 } else { 14 };
    if bytes[ip - 2..ip] != [0x08, 0x00] || bytes[ip] != 0x45 || at != ip + IPV4_HEADER_LEN + udp::HEADER_LEN {
        return Err(Error::NotRoce);
    }
    let end = ip + u16::from_be_bytes([bytes[ip + 2], bytes[ip + 3]]) as usize;
    if end > bytes.len() || end < at + super::bth::LEN + icrc::LEN {
        return Err(Error::BadLength { what: "IPv4 total", declared: end - ip, actual: bytes.len() - ip });
    }
    Ok((ip, at, end))
}

/// Copies `payload` into an emitted RoCEv2 frame over IPv4 at `at` (a
/// payload lent until delivery, `Memory::read_lent`) and checks the
/// frame's ICRC over the bytes as they are copied, in one pass
/// (`icrc::Running::update_copy`): `Ok(true)` if it holds. The receiver
/// then need not compute it again ([`Frame::parse_icrc_checked`]). An
/// `Err` copies nothing: the frame is not one this reads (IPv6, RoCEv1, a
/// payload outside the packet), and the caller copies and the receiver
/// checks as usual.
pub fn fill_checked(bytes: &mut [u8], at: usize, payload: &[u8]) -> Result<bool, Error> {
    let (ip, bth, end) = ipv4_layout(bytes)?;
    let trailer = end - icrc::LEN;
    // Never over the headers: from the end of those the opcode names on.
    let headers = super::Opcode::try_from(bytes[bth]).map_or(super::bth::LEN, |o| o.info().header_len());
    let stop = at.checked_add(payload.len()).filter(|&s| at >= bth + headers && s <= trailer);
    let Some(stop) = stop else {
        return Err(Error::BadLength {
            what: "lent payload",
            declared: payload.len(),
            actual: trailer.saturating_sub(at),
        });
    };
    let (head, rest) = bytes.split_at_mut(at);
    let mut crc = icrc::start(&head[ip..ip + IPV4_HEADER_LEN], Some(&head[ip + IPV4_HEADER_LEN..bth]), &head[bth..]);
    let (dst, tail) = rest.split_at_mut(stop - at);
    crc.update_copy(payload, dst);
    let trailer = trailer - stop;
    crc.update(&tail[..trailer]);
    Ok(crc.finish() == icrc::read(tail[trailer..trailer + icrc::LEN].try_into().expect("4 bytes")))
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

    /// Whether sealing reads nothing of the payload: no UDP checksum is
    /// computed over it (RoCEv2 over IPv4 sends none, as rxe does; a
    /// partial one is finished by the link). Only then may the payload
    /// reach `payload_range()` after [`Self::seal`] (`Memory::read_lent`).
    pub fn seals_without_payload(&self) -> bool {
        match &self.net {
            NetRepr::V4 { udp, .. } | NetRepr::V6 { udp, .. } => udp.checksum != UdpChecksum::Computed,
            NetRepr::V1 { .. } => true,
        }
    }

    /// `emit`, with the payload copied in or already at `payload_range()`.
    pub fn emit_with(&self, payload: Payload<'_>, buf: &mut [u8]) -> Result<usize, Error> {
        let at = self.emit_headers(payload, buf)?;
        let buf = &mut buf[..at.len];
        let crc = {
            let (l3, udp, ib) = at.split(buf);
            icrc::compute(l3, udp, &ib[..ib.len() - icrc::LEN])
        };
        self.finish(at, buf, crc)
    }

    /// For a payload hashed where it is gathered from (a request's, from
    /// memory): writes everything but the payload and the ICRC, and returns
    /// the ICRC over the headers. The caller fills `payload_range()`,
    /// hashing the payload into the ICRC in order, then calls [`Self::seal`].
    pub fn emit_around_payload(&self, buf: &mut [u8]) -> Result<(icrc::Running, Sealing), Error> {
        let at = self.emit_headers(Payload::InPlace, buf)?;
        let (l3, udp, ib) = at.split(&mut buf[..at.len]);
        let crc = icrc::start(l3, udp, &ib[..self.ib.header_len()]);
        Ok((crc, Sealing(at)))
    }

    /// Ends what [`Self::emit_around_payload`] began: hashes the pad, writes
    /// the ICRC (and the UDP checksum, if computed); returns the length.
    pub fn seal(&self, sealing: Sealing, buf: &mut [u8], mut crc: icrc::Running) -> Result<usize, Error> {
        let at = sealing.0;
        if buf.len() < at.len {
            return Err(Error::BufferTooSmall { need: at.len, have: buf.len() });
        }
        let buf = &mut buf[..at.len];
        {
            let (_, _, ib) = at.split(buf);
            let pad = self.ib.header_len() + self.ib.payload_len..ib.len() - icrc::LEN;
            crc.update(&ib[pad]);
        }
        self.finish(at, buf, crc.finish())
    }

    /// Writes the Ethernet, IP and UDP headers and the IB packet but for its
    /// ICRC (and the UDP checksum, which covers the ICRC).
    fn emit_headers(&self, payload: Payload<'_>, buf: &mut [u8]) -> Result<Layout, Error> {
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
        Ok(Layout { len, l3: off, l3_len: l3.len(), udp_len, has_udp: udp.is_some() })
    }

    /// Writes the ICRC `crc`, then the UDP checksum if one is computed.
    fn finish(&self, at: Layout, buf: &mut [u8], crc: u32) -> Result<usize, Error> {
        let rest = &mut buf[at.l3 + at.l3_len..at.len];
        let n = rest.len();
        rest[n - icrc::LEN..].copy_from_slice(&icrc::write(crc));
        let (src, dst, u) = match &self.net {
            NetRepr::V4 { ip, udp } => (IpAddress::Ipv4(ip.src), IpAddress::Ipv4(ip.dst), udp),
            NetRepr::V6 { ip, udp } => (IpAddress::Ipv6(ip.src), IpAddress::Ipv6(ip.dst), udp),
            NetRepr::V1 { .. } => return Ok(at.len),
        };
        if u.checksum != UdpChecksum::None {
            u.emit(rest, &src, &dst)?;
        }
        Ok(at.len)
    }
}

/// Where `emit_headers` put the layers of a frame.
#[derive(Debug, Clone, Copy)]
struct Layout {
    len: usize,
    l3: usize,
    l3_len: usize,
    udp_len: usize,
    has_udp: bool,
}

impl Layout {
    /// The L3 header, the UDP header (RoCEv2) and the IB packet.
    fn split<'b>(&self, buf: &'b mut [u8]) -> (&'b [u8], Option<&'b [u8]>, &'b [u8]) {
        let (l3, rest) = buf[self.l3..self.len].split_at(self.l3_len);
        let (udp, ib) = rest.split_at(self.udp_len);
        (l3, self.has_udp.then_some(udp), ib)
    }
}

/// A frame whose payload is being hashed in ([`FrameRepr::emit_around_payload`]).
#[derive(Debug, Clone, Copy)]
pub struct Sealing(Layout);

#[cfg(test)]
mod tests {
    use smoltcp::wire::EthernetAddress;

    use super::*;
    use crate::wire::{AethRepr, BthRepr, ExtHeaders, Opcode, Syndrome, VlanTag};

    fn ack(ident: u16, vlan: Option<VlanTag>, v6: bool) -> Vec<u8> {
        let aeth = AethRepr { syndrome: Syndrome::Ack { credits: 31 }, msn: 5 };
        let ext = ExtHeaders { aeth: Some(aeth), ..Default::default() };
        let ib = IbRepr { bth: BthRepr::new(Opcode::RcAcknowledge, 0xffff, 0x11, 42), ext, payload_len: 0 };
        emitted(ib, &[], ident, vlan, v6).0
    }

    /// An RDMA WRITE ONLY carrying `payload`, and where the payload lies.
    fn write_only(payload: &[u8], vlan: Option<VlanTag>, v6: bool) -> (Vec<u8>, core::ops::Range<usize>) {
        let reth = crate::wire::RethRepr { va: 0x1000, rkey: 0x77, dma_len: payload.len() as u32 };
        let ext = ExtHeaders { reth: Some(reth), ..Default::default() };
        let ib = IbRepr { bth: BthRepr::new(Opcode::RcWriteOnly, 0xffff, 0x11, 42), ext, payload_len: payload.len() };
        emitted(ib, payload, 7, vlan, v6)
    }

    fn emitted(
        ib: IbRepr,
        payload: &[u8],
        ident: u16,
        vlan: Option<VlanTag>,
        v6: bool,
    ) -> (Vec<u8>, core::ops::Range<usize>) {
        let udp = UdpRepr { src_port: 0xc011, dst_port: ROCEV2_UDP_PORT, checksum: UdpChecksum::None };
        let net = if v6 {
            let ip = Ipv6Repr {
                src: "fd98::1".parse().unwrap(),
                dst: "fd98::2".parse().unwrap(),
                traffic_class: 0,
                flow_label: 7,
                hop_limit: 64,
                next_header: 17,
            };
            NetRepr::V6 { ip, udp: UdpRepr { checksum: UdpChecksum::Computed, ..udp } }
        } else {
            let ip = Ipv4Repr {
                src: [10, 0, 0, 1].into(),
                dst: [10, 0, 0, 2].into(),
                dscp: 26,
                ecn: 2,
                ident,
                dont_frag: true,
                ttl: 64,
                protocol: 17,
            };
            NetRepr::V4 { ip, udp }
        };
        let eth = EthernetRepr {
            dst: EthernetAddress([2, 0, 0, 0, 0, 2]),
            src: EthernetAddress([2, 0, 0, 0, 0, 1]),
            vlan,
            ethertype: if v6 { ETHERTYPE_IPV6 } else { ETHERTYPE_IPV4 },
        };
        let repr = FrameRepr { eth, net, ib };
        let mut buf = vec![0; repr.buffer_len()];
        repr.emit(payload, &mut buf).unwrap();
        (buf, repr.payload_range())
    }

    #[test]
    fn a_new_ipv4_ident_is_the_frame_emitted_with_it() {
        for vlan in [None, Some(VlanTag { pcp: 3, dei: false, vid: 5 })] {
            let mut f = ack(0x1234, vlan, false);
            set_ipv4_ident(&mut f, 0xbeef).unwrap();
            assert_eq!(f, ack(0xbeef, vlan, false), "vlan {vlan:?}");
            assert!(Frame::verify(&f).is_ok());
        }
    }

    #[test]
    fn only_sound_ipv4_frames_get_a_new_ident() {
        let mut v6 = ack(0, None, true);
        let before = v6.clone();
        assert_eq!(set_ipv4_ident(&mut v6, 9), Err(Error::NotRoce));
        assert_eq!(v6, before);
        let mut bad = ack(1, None, false);
        let n = bad.len();
        bad[n - 1] ^= 1;
        let before = bad.clone();
        assert!(matches!(set_ipv4_ident(&mut bad, 9), Err(Error::IcrcMismatch { .. })));
        assert_eq!(bad, before, "a frame that does not check is left alone");
        let mut long = ack(1, None, false);
        long[14 + 2..14 + 4].copy_from_slice(&200u16.to_be_bytes());
        assert!(matches!(set_ipv4_ident(&mut long, 9), Err(Error::BadLength { .. })));
        let f = ack(1, None, false);
        for n in 0..f.len() {
            let mut cut = f[..n].to_vec();
            assert!(set_ipv4_ident(&mut cut, 9).is_err(), "cut at {n}");
        }
    }

    /// A lent payload copied in with its frame's ICRC checked in the same
    /// pass: the frame is the one emitted with it, and the check is the
    /// receiver's (`Frame::verify`) whatever the payload's length, tag or
    /// bytes; nothing is copied into a frame this cannot read.
    #[test]
    fn a_lent_payload_is_copied_in_and_checked() {
        for len in [0usize, 1, 255, 256, 511, 512, 1024, 1500, 4096] {
            let payload: Vec<u8> = (0..len).map(|i| (i * 7 + len) as u8).collect();
            for vlan in [None, Some(VlanTag { pcp: 1, dei: false, vid: 9 })] {
                let (want, at) = write_only(&payload, vlan, false);
                let mut f = want.clone();
                f[at.clone()].fill(0xee);
                assert_eq!(fill_checked(&mut f, at.start, &payload), Ok(true), "len {len}");
                assert_eq!(f, want, "len {len}");
                if len == 0 {
                    continue;
                }
                // Other bytes than the sender hashed: copied, and refused as
                // the receiver would refuse them.
                let mut other = payload.clone();
                other[len / 2] ^= 0x40;
                let mut f = want.clone();
                assert_eq!(fill_checked(&mut f, at.start, &other), Ok(false), "len {len}");
                assert_eq!(&f[at.clone()], &other[..]);
                assert!(matches!(Frame::verify(&f), Err(Error::IcrcMismatch { .. })));
                // Only the part of the payload at a given offset.
                let mut f = want.clone();
                let half = at.start + len / 2;
                f[half..at.end].fill(0);
                assert_eq!(fill_checked(&mut f, half, &payload[len / 2..]), Ok(true), "len {len}");
                assert_eq!(f, want);
            }
        }
        let payload = vec![3u8; 2048];
        let (want, at) = write_only(&payload, None, false);
        for (start, n) in [(at.start - 1, 2048), (at.start, 2049), (at.start + 1, 2048), (usize::MAX - 4, 8), (2, 8)] {
            let mut f = want.clone();
            let bytes = vec![3u8; n];
            assert!(matches!(fill_checked(&mut f, start, &bytes), Err(Error::BadLength { .. })), "{start} {n}");
            assert_eq!(f, want, "{start} {n}: nothing copied");
        }
        let (v6, at6) = write_only(&payload, None, true);
        let mut f = v6.clone();
        assert_eq!(fill_checked(&mut f, at6.start, &payload), Err(Error::NotRoce));
        assert_eq!(f, v6);
        for n in 0..want.len() {
            let mut cut = want[..n].to_vec();
            let _ = fill_checked(&mut cut, at.start, &payload);
        }
    }

    /// A frame its link checked is taken at its word: only the ICRC is
    /// not computed again; every other check stands.
    #[test]
    fn a_frame_checked_by_its_link_skips_only_the_icrc() {
        let (mut f, at) = write_only(&[9u8; 300], None, false);
        f[at.start] ^= 1;
        assert!(Frame::verify(&f).is_err());
        let p = Frame::parse_icrc_checked(&f).unwrap();
        assert!(p.icrc_ok());
        assert_eq!(p.payload().len(), 300);
        let mut port = f.clone();
        port[14 + 20 + 2..14 + 20 + 4].copy_from_slice(&4790u16.to_be_bytes());
        assert_eq!(Frame::parse_icrc_checked(&port).err(), Some(Error::NotRoce));
        for n in 0..f.len() {
            assert!(Frame::parse_icrc_checked(&f[..n]).is_err(), "cut at {n}");
        }
    }
}
