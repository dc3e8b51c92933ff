//! Global Route Header, IBTA Vol 1 §8.3 (40 bytes), as RoCEv1 (Annex A16) puts it
//! directly after the Ethernet header (EtherType 0x8915).
//!
//! Its layout is the IPv6 header's — IPVer 6, TClass, FlowLabel, PayLen, NxtHdr
//! 0x1B (IBA transport), HopLmt, SGID, DGID — so it is read with the IPv6 view.
//! softrdma only needs to recognise RoCEv1 so that containers can refuse it:
//! its GIDs are link-layer addresses that no namespace can constrain.

use core::net::Ipv6Addr;

use super::ip::Ipv6Repr;
use super::Error;

pub const LEN: usize = 40;
/// NxtHdr value announcing an IBA transport header (BTH) after the GRH.
pub const NEXT_HEADER_IBA: u8 = 0x1b;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GrhRepr {
    pub traffic_class: u8,
    pub flow_label: u32,
    pub hop_limit: u8,
    pub sgid: [u8; 16],
    pub dgid: [u8; 16],
}

impl GrhRepr {
    /// Parses the GRH; returns it and the bytes it covers (BTH up to the ICRC).
    pub fn parse(bytes: &[u8]) -> Result<(Self, &[u8]), Error> {
        let (ip, rest) = Ipv6Repr::parse(bytes).map_err(|e| match e {
            Error::Truncated { need, have, .. } => Error::Truncated { what: "GRH", need, have },
            other => other,
        })?;
        if ip.next_header != NEXT_HEADER_IBA {
            return Err(Error::BadNextHeader(ip.next_header));
        }
        let repr = GrhRepr {
            traffic_class: ip.traffic_class,
            flow_label: ip.flow_label,
            hop_limit: ip.hop_limit,
            sgid: ip.src.octets(),
            dgid: ip.dst.octets(),
        };
        Ok((repr, rest))
    }

    pub fn emit(&self, bytes: &mut [u8], payload_len: usize) -> Result<(), Error> {
        Ipv6Repr {
            src: Ipv6Addr::from(self.sgid),
            dst: Ipv6Addr::from(self.dgid),
            traffic_class: self.traffic_class,
            flow_label: self.flow_label,
            hop_limit: self.hop_limit,
            next_header: NEXT_HEADER_IBA,
        }
        .emit(bytes, payload_len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_next_header_check() {
        let g = GrhRepr {
            traffic_class: 0,
            flow_label: 0,
            hop_limit: 1,
            sgid: [0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0x50, 0x54, 0, 0xff, 0xfe, 0x77, 0, 0x11],
            dgid: [0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0x50, 0x54, 0, 0xff, 0xfe, 0x77, 0, 0x12],
        };
        let mut b = vec![0u8; LEN + 16];
        g.emit(&mut b, 16).unwrap();
        assert_eq!(b[6], NEXT_HEADER_IBA);
        let (p, rest) = GrhRepr::parse(&b).unwrap();
        assert_eq!(p, g);
        assert_eq!(rest.len(), 16);
        b[6] = 17;
        assert_eq!(GrhRepr::parse(&b).unwrap_err(), Error::BadNextHeader(17));
    }
}
