//! Virtio-net headers on a TAP (`IFF_VNET_HDR`), and the UDP segmentation
//! offload they allow: several RoCEv2 frames of one flow cross the kernel
//! as one write, and (with `TUN_F_USO4`/`TUN_F_USO6` on the receiving TAP)
//! one read.
//!
//! Why: a TAP `write(2)` carries its frame through the bridges, their
//! netfilter hooks and the veths on the caller's CPU, ≈ 2.5 µs per frame,
//! four fifths of a streaming sender's time (docs/benchmarks.md). A UDP GSO
//! write (`VIRTIO_NET_HDR_GSO_UDP_L4`) pays that once per run of frames;
//! the kernel cuts it into the frames where a device cannot take it whole.
//!
//! A run is frames that the kernel's segmentation rebuilds byte for byte
//! (`inet_gso_segment`, `ipv6_gso_segment`, `__udp_gso_segment`): one
//! Ethernet header, IPv4 headers that differ only in a consecutive
//! identification, the total length and the checksum (or IPv6 headers that
//! differ only in the payload length), one UDP port pair, and UDP payloads
//! of one size but for the last, which may be shorter. A RoCEv2 message's
//! packets on one QP are such a run (the QP numbers its IPv4
//! identifications in order), and their ICRCs, which cover the
//! identification and the lengths, stay right. What changes on the wire
//! over IPv4 is the UDP checksum: segmentation computes one (or leaves it
//! to the receiving device, whose "hardware" is this module again), where
//! rxe sends zero; over IPv6 both compute one, and it is the same. A
//! receiver here takes a frame whose checksum the kernel left unfinished
//! (`VIRTIO_NET_HDR_F_NEEDS_CSUM`) with a zero checksum, as rxe sends it
//! over IPv4: the kernel carried the bytes in memory, and the ICRC still
//! covers all of them (docs/design.md).

use smoltcp::wire::Ipv4Packet;

/// `sizeof(struct virtio_net_hdr)`, the TAP's default `TUNSETVNETHDRSZ`.
pub const HDR_LEN: usize = 10;

pub const F_NEEDS_CSUM: u8 = 1;
pub const F_DATA_VALID: u8 = 2;
pub const GSO_NONE: u8 = 0;
pub const GSO_UDP_L4: u8 = 5;

use transport::wire::ethernet::HEADER_LEN as ETH_LEN;
use transport::wire::ip::{IPV4_HEADER_LEN as IPV4_LEN, IPV6_HEADER_LEN as IPV6_LEN};
use transport::wire::udp::{pseudo_header_sum, HEADER_LEN as UDP_LEN};
/// Ethernet + IPv4 + UDP: where a coalesced frame's payload starts.
const V4_HEADERS: usize = ETH_LEN + IPV4_LEN + UDP_LEN;
/// The same over IPv6 (no extension headers).
const V6_HEADERS: usize = ETH_LEN + IPV6_LEN + UDP_LEN;
/// The kernel refuses UDP GSO with more segments (`UDP_MAX_SEGMENTS`, 64
/// before Linux 6.11).
pub const MAX_SEGMENTS: usize = 64;

/// A `struct virtio_net_hdr` (little-endian fields: the TAP's byte order on
/// a little-endian host, and on any host with `TUNSETVNETLE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct VnetHdr {
    pub flags: u8,
    pub gso_type: u8,
    pub hdr_len: u16,
    pub gso_size: u16,
    pub csum_start: u16,
    pub csum_offset: u16,
}

impl VnetHdr {
    pub fn parse(b: &[u8]) -> Option<VnetHdr> {
        let b: &[u8; HDR_LEN] = b.get(..HDR_LEN)?.try_into().ok()?;
        let le = |i: usize| u16::from_le_bytes([b[i], b[i + 1]]);
        Some(VnetHdr {
            flags: b[0],
            gso_type: b[1],
            hdr_len: le(2),
            gso_size: le(4),
            csum_start: le(6),
            csum_offset: le(8),
        })
    }

    pub fn to_bytes(self) -> [u8; HDR_LEN] {
        let mut b = [0u8; HDR_LEN];
        b[0] = self.flags;
        b[1] = self.gso_type;
        b[2..4].copy_from_slice(&self.hdr_len.to_le_bytes());
        b[4..6].copy_from_slice(&self.gso_size.to_le_bytes());
        b[6..8].copy_from_slice(&self.csum_start.to_le_bytes());
        b[8..10].copy_from_slice(&self.csum_offset.to_le_bytes());
        b
    }
}

fn be16(f: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([f[at], f[at + 1]])
}

/// The length of the Ethernet, IP and UDP headers of a frame a run may
/// hold, if it is one: IPv4 unfragmented with no options and a zero UDP
/// checksum (segmentation would compute one: see the module docs), or IPv6
/// with UDP as its next header, whatever its checksum (rxe and this device
/// compute one over IPv6, and segmentation computes the same). Its lengths
/// must agree with its size (no Ethernet padding).
fn run_headers_len(f: &[u8]) -> Option<usize> {
    if f.len() <= V4_HEADERS {
        return None;
    }
    match be16(f, 12) {
        0x0800 => {
            let ok = f[ETH_LEN] == 0x45
                && f[ETH_LEN + 9] == 17
                && be16(f, ETH_LEN + 6) & 0x3fff == 0
                && be16(f, ETH_LEN + 2) as usize == f.len() - ETH_LEN
                && be16(f, ETH_LEN + IPV4_LEN + 4) as usize == f.len() - ETH_LEN - IPV4_LEN
                && be16(f, ETH_LEN + IPV4_LEN + 6) == 0;
            ok.then_some(V4_HEADERS)
        }
        0x86dd if f.len() > V6_HEADERS => {
            let udp_len = f.len() - ETH_LEN - IPV6_LEN;
            let ok = f[ETH_LEN] >> 4 == 6
                && f[ETH_LEN + 6] == 17
                && be16(f, ETH_LEN + 4) as usize == udp_len
                && be16(f, ETH_LEN + IPV6_LEN + 4) as usize == udp_len;
            ok.then_some(V6_HEADERS)
        }
        _ => None,
    }
}

/// Whether `next` can follow `first` (whose headers are `hl` bytes long)
/// as the `k`-th frame of its run: all of the headers the segmentation
/// copies are equal and, over IPv4, the identification is `k` further on.
fn follows(first: &[u8], next: &[u8], hl: usize, k: usize) -> bool {
    const IP: usize = ETH_LEN;
    run_headers_len(next) == Some(hl)
        && transport::wire::peek::same_flow(first, next)
        && (hl != V4_HEADERS || be16(next, IP + 4) == be16(first, IP + 4).wrapping_add(k as u16))
}

/// How many frames from the start of `frames` go out as one UDP GSO write
/// (1: the first goes alone).
pub fn run_len<B: AsRef<[u8]>>(frames: &[B]) -> usize {
    let Some(first) = frames.first().map(AsRef::as_ref) else { return 0 };
    let Some(hl) = run_headers_len(first) else { return 1 };
    let seg = first.len() - hl;
    // What the IP length field of the whole run holds (IPv4's total length,
    // IPv6's payload length): at most 65535.
    let ip_header = if hl == V4_HEADERS { IPV4_LEN } else { 0 };
    let mut total = ip_header + UDP_LEN + seg;
    let mut n = 1;
    for next in frames[1..].iter().map(AsRef::as_ref) {
        let len = next.len().saturating_sub(hl);
        if n == MAX_SEGMENTS || len > seg || total + len > 65535 || !follows(first, next, hl, n) {
            break;
        }
        total += len;
        n += 1;
        if len < seg {
            break;
        }
    }
    n
}

/// The virtio-net header and the Ethernet, IP and UDP headers of one write
/// that carries a run.
pub struct RunHeaders {
    pub vnet: [u8; HDR_LEN],
    bytes: [u8; V6_HEADERS],
    len: usize,
}

impl RunHeaders {
    /// The Ethernet, IP and UDP headers; each frame's part of the write
    /// follows them from this offset in the frame on.
    pub fn headers(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

/// The headers of one write that carries `run` (as `run_len` chose it):
/// the first frame's headers with the run's lengths, and the UDP checksum
/// left to the kernel (the pseudo-header sum it starts from).
pub fn run_headers<B: AsRef<[u8]>>(run: &[B]) -> RunHeaders {
    let first = run[0].as_ref();
    let hl = run_headers_len(first).unwrap_or(V4_HEADERS);
    let seg = first.len() - hl;
    let payload: usize = run.iter().map(|f| f.as_ref().len() - hl).sum();
    let mut h = [0u8; V6_HEADERS];
    h[..hl].copy_from_slice(&first[..hl]);
    let udp_len = (UDP_LEN + payload) as u16;
    let udp = hl - UDP_LEN;
    let pseudo = if hl == V4_HEADERS {
        let mut ip = Ipv4Packet::new_unchecked(&mut h[ETH_LEN..udp]);
        ip.set_total_len(IPV4_LEN as u16 + udp_len);
        ip.fill_checksum();
        pseudo_header_sum(&h[ETH_LEN + 12..ETH_LEN + 16], &h[ETH_LEN + 16..ETH_LEN + 20], udp_len)
    } else {
        h[ETH_LEN + 4..ETH_LEN + 6].copy_from_slice(&udp_len.to_be_bytes());
        pseudo_header_sum(&h[ETH_LEN + 8..ETH_LEN + 24], &h[ETH_LEN + 24..udp], udp_len)
    };
    h[udp + 4..udp + 6].copy_from_slice(&udp_len.to_be_bytes());
    h[udp + 6..udp + 8].copy_from_slice(&pseudo.to_be_bytes());
    let vnet = VnetHdr {
        flags: F_NEEDS_CSUM,
        gso_type: GSO_UDP_L4,
        hdr_len: hl as u16,
        gso_size: seg as u16,
        csum_start: udp as u16,
        csum_offset: 6,
    };
    RunHeaders { vnet: vnet.to_bytes(), bytes: h, len: hl }
}

/// The virtio-net header of a lone frame whose UDP header starts at `udp`
/// and whose checksum holds the pseudo-header's sum: the kernel finishes it.
pub fn needs_csum(udp: usize) -> [u8; HDR_LEN] {
    VnetHdr { flags: F_NEEDS_CSUM, csum_start: udp as u16, csum_offset: 6, ..VnetHdr::default() }.to_bytes()
}

/// What a frame read with its virtio-net header turned out to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Received {
    /// One frame, ready.
    Frame,
    /// A UDP GSO frame of this many segments, to be cut with [`segment`].
    Segments(usize),
    /// A GSO frame of another kind, or one whose headers do not add up: dropped.
    Unusable,
}

/// Where a received frame's UDP header starts, if it is IPv4 or IPv6 UDP
/// with no options or extension headers.
fn udp_offset(f: &[u8]) -> Option<usize> {
    match be16(f.get(..14)?, 12) {
        0x0800 if f.get(ETH_LEN) == Some(&0x45) && f.get(ETH_LEN + 9) == Some(&17) => Some(ETH_LEN + IPV4_LEN),
        0x86dd if f.get(ETH_LEN + 6) == Some(&17) => Some(ETH_LEN + IPV6_LEN),
        _ => None,
    }
}

/// Finishes a frame read with header `h`: a UDP checksum the kernel left
/// unfinished becomes zero (see the module docs). Says whether the frame
/// is to be cut into segments.
pub fn received(h: &VnetHdr, frame: &mut [u8]) -> Received {
    let udp = udp_offset(frame);
    if h.gso_type == GSO_UDP_L4 {
        let (Some(udp), true) = (udp, h.gso_size > 0) else { return Received::Unusable };
        let Some(payload) = frame.len().checked_sub(udp + UDP_LEN) else { return Received::Unusable };
        let n = payload.div_ceil(usize::from(h.gso_size));
        return if n == 0 { Received::Unusable } else { Received::Segments(n) };
    }
    if h.gso_type != GSO_NONE {
        return Received::Unusable;
    }
    if h.flags & F_NEEDS_CSUM != 0 && h.csum_offset == 6 {
        if let Some(udp) = udp.filter(|&u| u == usize::from(h.csum_start) && frame.len() >= u + UDP_LEN) {
            frame[udp + 6..udp + 8].fill(0);
        }
    }
    Received::Frame
}

/// Writes segment `i` of the UDP GSO frame `sup` (read with header `h`)
/// into `out` as the frame the kernel's segmentation would have made, with
/// a zero UDP checksum; returns its length, or `None` when it does not fit.
pub fn segment(h: &VnetHdr, sup: &[u8], i: usize, out: &mut [u8]) -> Option<usize> {
    let udp = udp_offset(sup)?;
    let start = udp + UDP_LEN;
    let seg = usize::from(h.gso_size);
    let from = start.checked_add(i.checked_mul(seg)?)?;
    let chunk = sup.get(from..(from + seg).min(sup.len()))?;
    if chunk.is_empty() || out.len() < start + chunk.len() {
        return None;
    }
    out[..start].copy_from_slice(&sup[..start]);
    out[start..start + chunk.len()].copy_from_slice(chunk);
    let udp_len = (UDP_LEN + chunk.len()) as u16;
    if udp == ETH_LEN + IPV4_LEN {
        let mut ip = Ipv4Packet::new_unchecked(&mut out[ETH_LEN..udp]);
        ip.set_total_len(IPV4_LEN as u16 + udp_len);
        ip.set_ident(ip.ident().wrapping_add(i as u16));
        ip.fill_checksum();
    } else {
        out[ETH_LEN + 4..ETH_LEN + 6].copy_from_slice(&udp_len.to_be_bytes());
    }
    out[udp + 4..udp + 6].copy_from_slice(&udp_len.to_be_bytes());
    out[udp + 6..udp + 8].fill(0);
    Some(start + chunk.len())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use smoltcp::wire::{IpProtocol, Ipv4Address, Ipv6Address};

    /// An IPv4/UDP frame as a QP emits it: DF, identification `id`,
    /// `payload` bytes of a pattern, zero UDP checksum.
    pub(crate) fn frame(id: u16, payload: usize) -> Vec<u8> {
        let mut f = vec![0u8; V4_HEADERS + payload];
        f[..6].copy_from_slice(&[2, 0, 0, 0, 0, 2]);
        f[6..12].copy_from_slice(&[2, 0, 0, 0, 0, 1]);
        f[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
        {
            let mut ip = Ipv4Packet::new_unchecked(&mut f[ETH_LEN..]);
            ip.set_version(4);
            ip.set_header_len(20);
            ip.set_total_len((IPV4_LEN + UDP_LEN + payload) as u16);
            ip.set_ident(id);
            ip.set_dont_frag(true);
            ip.set_hop_limit(64);
            ip.set_next_header(IpProtocol::Udp);
            ip.set_src_addr(Ipv4Address::new(10, 0, 0, 1));
            ip.set_dst_addr(Ipv4Address::new(10, 0, 0, 2));
            ip.fill_checksum();
        }
        let u = ETH_LEN + IPV4_LEN;
        f[u..u + 2].copy_from_slice(&0xc000u16.to_be_bytes());
        f[u + 2..u + 4].copy_from_slice(&4791u16.to_be_bytes());
        f[u + 4..u + 6].copy_from_slice(&((UDP_LEN + payload) as u16).to_be_bytes());
        for (i, b) in f[V4_HEADERS..].iter_mut().enumerate() {
            *b = (i as u8) ^ (id as u8);
        }
        f
    }

    const SRC6: [u8; 16] = [0xfd, 0x77, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
    const DST6: [u8; 16] = [0xfd, 0x77, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];

    /// An IPv6/UDP frame as a QP emits it: flow label 0x12345, `payload`
    /// bytes of a pattern seeded by `seed`, the UDP checksum computed.
    pub(crate) fn frame6(seed: u8, payload: usize) -> Vec<u8> {
        let mut f = vec![0u8; V6_HEADERS + payload];
        f[..6].copy_from_slice(&[2, 0, 0, 0, 0, 2]);
        f[6..12].copy_from_slice(&[2, 0, 0, 0, 0, 1]);
        f[12..14].copy_from_slice(&0x86ddu16.to_be_bytes());
        let ip = ETH_LEN;
        f[ip..ip + 4].copy_from_slice(&[0x60, 0x01, 0x23, 0x45]);
        f[ip + 4..ip + 6].copy_from_slice(&((UDP_LEN + payload) as u16).to_be_bytes());
        f[ip + 6] = 17;
        f[ip + 7] = 64;
        f[ip + 8..ip + 24].copy_from_slice(&SRC6);
        f[ip + 24..ip + 40].copy_from_slice(&DST6);
        let u = ETH_LEN + IPV6_LEN;
        f[u..u + 2].copy_from_slice(&0xc001u16.to_be_bytes());
        f[u + 2..u + 4].copy_from_slice(&4791u16.to_be_bytes());
        f[u + 4..u + 6].copy_from_slice(&((UDP_LEN + payload) as u16).to_be_bytes());
        for (i, b) in f[V6_HEADERS..].iter_mut().enumerate() {
            *b = (i as u8).wrapping_mul(3) ^ seed;
        }
        let mut p = smoltcp::wire::UdpPacket::new_unchecked(&mut f[u..]);
        p.fill_checksum(&Ipv6Address::from(SRC6).into(), &Ipv6Address::from(DST6).into());
        f
    }

    proptest::proptest! {
        /// Whatever a TAP hands over, with whatever header: no panic.
        #[test]
        fn any_read_is_handled(
            h in proptest::array::uniform10(proptest::num::u8::ANY),
            mut f in proptest::collection::vec(proptest::num::u8::ANY, 0..200),
            i in 0usize..1000,
        ) {
            let h = VnetHdr::parse(&h).unwrap();
            if f.len() > 34 && i % 2 == 0 {
                f[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
                f[14] = 0x45;
                f[23] = 17;
            }
            let _ = received(&h, &mut f);
            let _ = segment(&h, &f, i, &mut [0u8; 128]);
            let _ = run_len(&[f.clone(), f]);
        }
    }

    #[test]
    fn header_round_trips() {
        let h = VnetHdr { flags: 1, gso_type: 5, hdr_len: 42, gso_size: 4068, csum_start: 34, csum_offset: 6 };
        assert_eq!(VnetHdr::parse(&h.to_bytes()), Some(h));
        assert_eq!(h.to_bytes()[4..6], [0xe4, 0x0f]);
        assert_eq!(VnetHdr::parse(&[0; 9]), None);
    }

    #[test]
    fn runs_take_one_flow_in_order() {
        let run: Vec<_> = (0..5).map(|i| frame(100 + i, 1000)).collect();
        assert_eq!(run_len(&run), 5);
        let mut short_last = run.clone();
        short_last[4] = frame(104, 20);
        short_last.push(frame(105, 1000));
        assert_eq!(run_len(&short_last), 5, "a shorter frame ends the run");
        let mut gap = run.clone();
        gap[2] = frame(110, 1000);
        assert_eq!(run_len(&gap), 2, "identifications must be consecutive");
        let mut longer = run.clone();
        longer[1] = frame(101, 1001);
        assert_eq!(run_len(&longer), 1);
        let mut other_port = run.clone();
        other_port[3][ETH_LEN + IPV4_LEN + 1] ^= 1;
        assert_eq!(run_len(&other_port), 3);
        let mut checksummed = run.clone();
        checksummed[0][V4_HEADERS - 1] = 1;
        assert_eq!(run_len(&checksummed), 1);
        let wrap: Vec<_> = (0..3).map(|i| frame(65535u16.wrapping_add(i), 1000)).collect();
        assert_eq!(run_len(&wrap), 3);
        let big: Vec<_> = (0..20).map(|i| frame(i, 4068)).collect();
        assert_eq!(run_len(&big), 16, "an IPv4 packet holds at most 65535 bytes");
        let many: Vec<_> = (0..100).map(|i| frame(i, 100)).collect();
        assert_eq!(run_len(&many), MAX_SEGMENTS);
        assert_eq!(run_len(&[vec![0u8; 60]]), 1);
        assert_eq!(run_len::<Vec<u8>>(&[]), 0);
    }

    /// What the kernel does to a run on its way (and what a receiving TAP
    /// with USO hands over): the run's headers and payloads, cut again.
    #[test]
    fn a_run_cut_again_gives_its_frames_back() {
        let mut run: Vec<_> = (0..4).map(|i| frame(7 + i, 1000)).collect();
        run.push(frame(11, 333));
        assert_eq!(run_len(&run), 5);
        let rh = run_headers(&run);
        let h = VnetHdr::parse(&rh.vnet).unwrap();
        let mut sup = rh.headers().to_vec();
        for f in &run {
            sup.extend_from_slice(&f[V4_HEADERS..]);
        }
        assert!(Ipv4Packet::new_checked(&sup[ETH_LEN..]).unwrap().verify_checksum());
        assert_eq!(received(&h, &mut sup.clone()), Received::Segments(5));
        let mut out = vec![0u8; 1100];
        for (i, f) in run.iter().enumerate() {
            let n = segment(&h, &sup, i, &mut out).unwrap();
            assert_eq!(&out[..n], &f[..], "segment {i}");
        }
        assert_eq!(segment(&h, &sup, 5, &mut out), None);
        assert_eq!(segment(&h, &sup, 0, &mut out[..100]), None);
    }

    #[test]
    fn ipv6_runs_take_one_flow() {
        let run: Vec<_> = (0..5).map(|i| frame6(i, 1000)).collect();
        assert_ne!(run[0][V6_HEADERS - 2..V6_HEADERS], run[1][V6_HEADERS - 2..V6_HEADERS], "own checksums");
        assert_eq!(run_len(&run), 5, "checksums differ from frame to frame");
        let mut other_flow = run.clone();
        other_flow[2][ETH_LEN + 3] ^= 1;
        assert_eq!(run_len(&other_flow), 2, "the flow label is the flow's");
        let mut other_dst = run.clone();
        other_dst[3][ETH_LEN + 39] ^= 1;
        assert_eq!(run_len(&other_dst), 3);
        let mixed = vec![frame6(0, 1000), frame(1, 1000)];
        assert_eq!(run_len(&mixed), 1, "IPv4 does not follow IPv6");
        let mut bad_len = run.clone();
        bad_len[0][ETH_LEN + 5] ^= 1;
        assert_eq!(run_len(&bad_len), 1, "lengths must agree with the size");
        let big: Vec<_> = (0..20).map(|i| frame6(i, 4068)).collect();
        assert_eq!(run_len(&big), 16, "a UDP datagram holds at most 65535 bytes");
    }

    /// Over IPv6 the kernel's segmentation rebuilds every frame byte for
    /// byte, its UDP checksum included; a receiving TAP of ours zeroes it.
    #[test]
    fn an_ipv6_run_cut_again_gives_its_frames_back() {
        let mut run: Vec<_> = (0..3).map(|i| frame6(i, 1000)).collect();
        run.push(frame6(9, 77));
        assert_eq!(run_len(&run), 4);
        let rh = run_headers(&run);
        assert_eq!(rh.headers().len(), V6_HEADERS);
        let h = VnetHdr::parse(&rh.vnet).unwrap();
        assert_eq!((h.hdr_len, h.gso_size, h.csum_start), (V6_HEADERS as u16, 1000, (ETH_LEN + IPV6_LEN) as u16));
        let mut sup = rh.headers().to_vec();
        for f in &run {
            sup.extend_from_slice(&f[V6_HEADERS..]);
        }
        assert_eq!(received(&h, &mut sup.clone()), Received::Segments(4));
        let mut out = vec![0u8; 1100];
        let u = ETH_LEN + IPV6_LEN;
        for (i, f) in run.iter().enumerate() {
            let n = segment(&h, &sup, i, &mut out).unwrap();
            assert_eq!(out[..u + 6], f[..u + 6], "segment {i}");
            assert_eq!(out[u + 6..u + 8], [0, 0]);
            assert_eq!(out[u + 8..n], f[u + 8..], "segment {i}");
            // What segmentation writes for a receiver without checksum
            // offload: the segment's own checksum, which is the sender's.
            let mut seg = out[..n].to_vec();
            let mut p = smoltcp::wire::UdpPacket::new_unchecked(&mut seg[u..]);
            p.fill_checksum(&Ipv6Address::from(SRC6).into(), &Ipv6Address::from(DST6).into());
            assert_eq!(&seg, f, "segment {i}");
        }
        // The pseudo-header sum finished over the whole datagram verifies.
        let mut dgram = sup[u..].to_vec();
        transport::wire::udp::finish_partial(&mut dgram);
        let p = smoltcp::wire::UdpPacket::new_checked(&dgram[..]).unwrap();
        assert!(p.verify_checksum(&Ipv6Address::from(SRC6).into(), &Ipv6Address::from(DST6).into()));
    }

    /// The pseudo-header sum the kernel starts from: finishing it over the
    /// datagram gives a checksum that verifies.
    #[test]
    fn the_run_checksum_starts_from_the_pseudo_header() {
        let run: Vec<_> = (0..2).map(|i| frame(i, 50)).collect();
        assert_eq!(run_len(&run), 2);
        let rh = run_headers(&run);
        let mut dgram = rh.headers()[ETH_LEN + IPV4_LEN..].to_vec();
        for f in &run {
            dgram.extend_from_slice(&f[V4_HEADERS..]);
        }
        transport::wire::udp::finish_partial(&mut dgram);
        let p = smoltcp::wire::UdpPacket::new_checked(&dgram[..]).unwrap();
        let (s, d) = (Ipv4Address::new(10, 0, 0, 1), Ipv4Address::new(10, 0, 0, 2));
        assert!(p.verify_checksum(&s.into(), &d.into()));
    }

    #[test]
    fn an_unfinished_checksum_reads_as_none() {
        let mut f = frame(1, 64);
        f[V4_HEADERS - 2..V4_HEADERS].copy_from_slice(&[0x12, 0x34]);
        let h = VnetHdr { flags: F_NEEDS_CSUM, csum_start: 34, csum_offset: 6, ..VnetHdr::default() };
        assert_eq!(received(&h, &mut f), Received::Frame);
        assert_eq!(f, frame(1, 64));
        let mut other = frame(1, 64);
        other[V4_HEADERS - 1] = 9;
        assert_eq!(received(&VnetHdr::default(), &mut other), Received::Frame);
        assert_eq!(other[V4_HEADERS - 1], 9, "a finished checksum stays");
        let tcp = VnetHdr { gso_type: 1, gso_size: 100, ..VnetHdr::default() };
        assert_eq!(received(&tcp, &mut frame(1, 64)), Received::Unusable);
        let zero = VnetHdr { gso_type: GSO_UDP_L4, ..VnetHdr::default() };
        assert_eq!(received(&zero, &mut frame(1, 64)), Received::Unusable);
    }
}
