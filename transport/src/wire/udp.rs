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
    /// Only the pseudo-header's sum, for the link to finish over the
    /// datagram (Linux's `CHECKSUM_PARTIAL`, a NIC's checksum offload):
    /// emitted where the device's link computes checksums (a TAP with
    /// virtio-net headers), which then happens only where a receiver needs
    /// one. Never parsed: a frame on the wire has a finished checksum.
    Partial,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UdpRepr {
    pub src_port: u16,
    pub dst_port: u16,
    pub checksum: UdpChecksum,
}

/// Folds a sum of 16-bit words into 16 bits, the carries added back (RFC 1071).
fn fold(mut acc: u64) -> u16 {
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    acc as u16
}

/// The folded ones'-complement sum (RFC 1071, not complemented) of UDP's
/// pseudo-header: the addresses, the protocol (17) and the UDP length
/// (RFC 768; RFC 8200 8.1 for IPv6, whose 32-bit length and next-header
/// words sum the same for lengths under 64 KiB).
pub fn pseudo_header_sum(src: &[u8], dst: &[u8], udp_len: u16) -> u16 {
    let words = src.chunks_exact(2).chain(dst.chunks_exact(2)).map(|w| u64::from(u16::from_be_bytes([w[0], w[1]])));
    fold(words.sum::<u64>() + 17 + u64::from(udp_len))
}

/// Finishes a [`UdpChecksum::Partial`] checksum in place, as the link
/// would: the sum over the datagram, starting from the pseudo-header sum
/// the field holds, complemented (0 goes out as 0xffff, RFC 768).
pub fn finish_partial(datagram: &mut [u8]) {
    if datagram.len() < HEADER_LEN {
        return;
    }
    let (pairs, odd) = datagram.split_at(datagram.len() & !1);
    let acc: u64 = pairs.chunks_exact(2).map(|w| u64::from(u16::from_be_bytes([w[0], w[1]]))).sum();
    let sum = match !fold(acc + odd.first().map_or(0, |&b| u64::from(b) << 8)) {
        0 => 0xffff,
        s => s,
    };
    datagram[6..8].copy_from_slice(&sum.to_be_bytes());
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
        match self.checksum {
            UdpChecksum::None => {}
            UdpChecksum::Computed => p.fill_checksum(src, dst),
            UdpChecksum::Partial => {
                // One address of each version cannot come out of a
                // `NetRepr`; refused rather than left to smoltcp's panic.
                let sum = match (src, dst) {
                    (IpAddress::Ipv4(s), IpAddress::Ipv4(d)) => pseudo_header_sum(&s.octets(), &d.octets(), len),
                    (IpAddress::Ipv6(s), IpAddress::Ipv6(d)) => pseudo_header_sum(&s.octets(), &d.octets(), len),
                    _ => return Err(Error::BadIpVersion(4)),
                };
                p.set_checksum(sum);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use smoltcp::wire::{Ipv4Address, Ipv6Address};

    /// A partial checksum finished over the datagram is the computed one,
    /// over IPv4 and IPv6, at even and odd lengths.
    #[test]
    fn a_partial_checksum_finishes_as_the_computed_one() {
        let v6 = (
            IpAddress::Ipv6(Ipv6Address::new(0xfd98, 0, 0, 0, 0, 0, 0, 1)),
            IpAddress::Ipv6(Ipv6Address::new(0xfd98, 0, 0, 0, 0, 0, 0xbeef, 2)),
        );
        let v4 = (IpAddress::Ipv4(Ipv4Address::new(10, 98, 0, 1)), IpAddress::Ipv4(Ipv4Address::new(10, 98, 0, 2)));
        for (src, dst) in [v6, v4] {
            for len in [8usize, 9, 64, 1001, 4136] {
                let mut a: Vec<u8> = (0..len).map(|i| (i * 151 + 3) as u8).collect();
                let mut b = a.clone();
                let repr = |checksum| UdpRepr { src_port: 0xc0de, dst_port: 4791, checksum };
                repr(UdpChecksum::Computed).emit(&mut a, &src, &dst).unwrap();
                repr(UdpChecksum::Partial).emit(&mut b, &src, &dst).unwrap();
                assert_ne!(a, b, "{len}: the partial sum is not the checksum");
                finish_partial(&mut b);
                assert_eq!(a, b, "{len}");
                let (r, _) = UdpRepr::parse(&a, &src, &dst).unwrap();
                assert_eq!(r.checksum, UdpChecksum::Computed);
            }
        }
        let mixed = UdpRepr { src_port: 1, dst_port: 4791, checksum: UdpChecksum::Partial };
        assert!(mixed.emit(&mut [0u8; 16], &v4.0, &v6.1).is_err(), "no panic on mixed versions");
    }
}
