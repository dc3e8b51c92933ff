//! Helpers shared by the integration tests (each test binary uses some).
#![allow(dead_code)]

use smoltcp::wire::EthernetAddress;
use transport::wire::{
    BthRepr, EthernetRepr, ExtHeaders, FrameRepr, IbRepr, Ipv4Repr, NetRepr, Opcode, UdpChecksum, UdpRepr,
};

/// An RC SEND ONLY frame no device would send: any source and destination
/// address, to any MAC and QP.
pub fn forge(src_ip: [u8; 4], dst_ip: [u8; 4], dmac: [u8; 6], qpn: u32, psn: u32, pkey: u16) -> Vec<u8> {
    let ib = IbRepr {
        bth: {
            let mut b = BthRepr::new(Opcode::RcSendOnly, pkey, qpn, psn);
            b.ack_req = true;
            b
        },
        ext: ExtHeaders::default(),
        payload_len: 8,
    };
    let f = FrameRepr {
        eth: EthernetRepr {
            dst: EthernetAddress(dmac),
            src: EthernetAddress([0x02, 0xee, 0, 0, 0, 1]),
            vlan: None,
            ethertype: 0,
        },
        net: NetRepr::V4 {
            ip: Ipv4Repr {
                src: src_ip.into(),
                dst: dst_ip.into(),
                dscp: 0,
                ecn: 0,
                ident: 1,
                dont_frag: true,
                ttl: 64,
                protocol: 17,
            },
            udp: UdpRepr { src_port: 0xc000, dst_port: 4791, checksum: UdpChecksum::None },
        },
        ib,
    };
    let mut out = vec![0u8; f.buffer_len()];
    f.emit(&[0x41; 8], &mut out).unwrap();
    out
}

/// Packets the kernel handed to the TAP `ifname` in network namespace `ns`
/// for its reader (a UDP GSO packet counts once).
pub fn tx_packets(ns: &str, ifname: &str) -> u64 {
    let out =
        std::process::Command::new("ip").args(["-n", ns, "-s", "-j", "link", "show", "dev", ifname]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let at = text.find("\"tx\":").unwrap_or_else(|| panic!("no tx stats for {ifname}: {text}"));
    let rest = &text[at..];
    let p = rest.find("\"packets\":").unwrap() + "\"packets\":".len();
    rest[p..].chars().take_while(|c| c.is_ascii_digit()).collect::<String>().parse().unwrap()
}
