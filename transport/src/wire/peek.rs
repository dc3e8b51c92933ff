//! Reading a frame the device itself emitted, at fixed offsets and without a
//! full parse: the engine decides per outgoing frame whether it counts as a
//! message (QoS) or is a plain ACK it may send a little later. Never use it
//! on received bytes; those go through [`super::frame::Frame`].

use super::{aeth, bth, jketh, Opcode};

/// The offset of the BTH in a RoCEv2 frame (Ethernet, optional 802.1Q tag,
/// IPv4 or IPv6, UDP), or `None` for anything else.
pub fn bth_offset(frame: &[u8]) -> Option<usize> {
    let byte = |i: usize| frame.get(i).copied();
    let mut off = 14;
    let mut et = u16::from_be_bytes([byte(12)?, byte(13)?]);
    if et == 0x8100 {
        off += 4;
        et = u16::from_be_bytes([byte(16)?, byte(17)?]);
    }
    let l3 = match et {
        0x0800 => ((byte(off)? & 0x0f) as usize) * 4,
        0x86dd => 40,
        _ => return None,
    };
    let at = off + l3 + 8;
    (frame.len() >= at + bth::LEN).then_some(at)
}

/// The offset of the UDP header of an emitted RoCEv2 frame over IPv6, the
/// frames whose checksum a QP leaves partial for a link that finishes it
/// (`udp::UdpChecksum::Partial`); `None` for anything else.
pub fn ipv6_udp_offset(frame: &[u8]) -> Option<usize> {
    let at = bth_offset(frame)? - 8;
    let et = if frame[12..14] == [0x81, 0x00] { 16 } else { 12 };
    let roce = frame[et..et + 2] == [0x86, 0xdd]
        && frame[et + 2 + 6] == 17
        && u16::from_be_bytes([frame[at + 2], frame[at + 3]]) == super::roce::ROCEV2_UDP_PORT;
    roce.then_some(at)
}

/// The BTH opcode of an emitted RoCEv2 frame.
pub fn opcode(frame: &[u8]) -> Option<Opcode> {
    Opcode::try_from(*frame.get(bth_offset(frame)?)?).ok()
}

/// Whether the frame is an RC ACKNOWLEDGE whose AETH says ACK (not a NAK,
/// not an RNR NAK): a response nothing waits on but the requester's window.
pub fn is_plain_ack(frame: &[u8]) -> bool {
    let Some(at) = bth_offset(frame) else { return false };
    if Opcode::try_from(frame[at]) != Ok(Opcode::RcAcknowledge) {
        return false;
    }
    // A JKETH, when present (BTH Resv7 flag), sits between BTH and AETH.
    let jk = if frame[at + 8] & jketh::BTH_FLAG != 0 { jketh::LEN } else { 0 };
    let aeth_at = at + bth::LEN + jk;
    frame.len() >= aeth_at + aeth::LEN && frame[aeth_at] >> 5 == 0
}

/// The offset of the IPv4 header of an emitted RoCEv2 frame over IPv4.
fn ipv4_offset(frame: &[u8]) -> Option<usize> {
    bth_offset(frame)?;
    let et = if frame[12..14] == [0x81, 0x00] { 16 } else { 12 };
    (frame[et..et + 2] == [0x08, 0x00] && frame[et + 2] == 0x45).then_some(et + 2)
}

/// The IPv4 identification of an emitted RoCEv2 frame over IPv4.
pub fn ipv4_ident(frame: &[u8]) -> Option<u16> {
    let ip = ipv4_offset(frame)?;
    Some(u16::from_be_bytes([frame[ip + 4], frame[ip + 5]]))
}

/// Whether two emitted RoCEv2 frames go the same way (one QP's flow): the
/// same Ethernet header, IP header but for the lengths, IPv4
/// identification and checksum, and the same UDP ports — what a UDP GSO
/// run keeps from its first frame.
pub fn same_flow(a: &[u8], b: &[u8]) -> bool {
    let (Some(ua), Some(ub)) = (bth_offset(a), bth_offset(b)) else { return false };
    if ua != ub {
        return false;
    }
    let udp = ua - 8;
    let ip = if a[12..14] == [0x81, 0x00] { 18 } else { 14 };
    if a[..ip] != b[..ip] || a[udp..udp + 4] != b[udp..udp + 4] {
        return false;
    }
    match a[ip - 2..ip] {
        [0x08, 0x00] => {
            a[ip..ip + 2] == b[ip..ip + 2]
                && a[ip + 6..ip + 10] == b[ip + 6..ip + 10]
                && a[ip + 12..udp] == b[ip + 12..udp]
        }
        _ => a[ip..ip + 4] == b[ip..ip + 4] && a[ip + 6..udp] == b[ip + 6..udp],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Ethernet [802.1Q] | IPv4 | UDP | BTH (opcode) [| JKETH] | AETH (syndrome) | ICRC.
    fn frame(vlan: bool, opcode: u8, jkey: bool, syndrome: u8) -> Vec<u8> {
        let mut f = vec![0u8; 12];
        if vlan {
            f.extend_from_slice(&[0x81, 0x00, 0x00, 0x05]);
        }
        f.extend_from_slice(&[0x08, 0x00]);
        f.push(0x45);
        f.extend_from_slice(&[0; 19]);
        f.extend_from_slice(&[0xc0, 0x00, 0x12, 0xb7, 0, 0, 0, 0]);
        let mut b = [0u8; 12];
        b[0] = opcode;
        b[8] = if jkey { jketh::BTH_FLAG } else { 0 };
        f.extend_from_slice(&b);
        if jkey {
            f.extend_from_slice(&[0; 4]);
        }
        f.extend_from_slice(&[syndrome, 0, 0, 1]);
        f.extend_from_slice(&[0; 4]);
        f
    }

    #[test]
    fn plain_acks_are_told_from_naks_and_requests() {
        for vlan in [false, true] {
            for jkey in [false, true] {
                assert!(is_plain_ack(&frame(vlan, 0x11, jkey, 0x1f)), "ACK vlan={vlan} jkey={jkey}");
                assert!(!is_plain_ack(&frame(vlan, 0x11, jkey, 0x20 | 3)), "RNR NAK");
                assert!(!is_plain_ack(&frame(vlan, 0x11, jkey, 0x60 | 1)), "NAK");
                assert!(!is_plain_ack(&frame(vlan, 0x0a, jkey, 0)), "WRITE ONLY");
                assert!(!is_plain_ack(&frame(vlan, 0x12, jkey, 0)), "atomic ACK");
            }
        }
        assert_eq!(opcode(&frame(true, 0x0a, false, 0)), Some(Opcode::RcWriteOnly));
    }

    #[test]
    fn short_and_foreign_frames_are_not_acks() {
        let f = frame(false, 0x11, false, 0);
        for n in 0..f.len() - 4 {
            assert!(!is_plain_ack(&f[..n]) || n >= 14 + 20 + 8 + 12 + 4, "{n}");
        }
        let mut arp = f.clone();
        arp[12..14].copy_from_slice(&[0x08, 0x06]);
        assert!(!is_plain_ack(&arp));
        assert_eq!(opcode(&arp), None);
        assert_eq!(ipv4_ident(&arp), None);
    }

    #[test]
    fn flows_and_idents_of_ipv4_frames() {
        let mut a = frame(false, 0x0a, false, 0);
        a[14 + 4..14 + 6].copy_from_slice(&[0x12, 0x34]);
        assert_eq!(ipv4_ident(&a), Some(0x1234));
        let mut b = frame(false, 0x11, false, 0x1f);
        b[14 + 2..14 + 4].copy_from_slice(&[0, 60]);
        b[14 + 10..14 + 12].copy_from_slice(&[0xab, 0xcd]);
        assert!(same_flow(&a, &b), "lengths, ident, checksum and opcode are not the flow");
        for at in [0, 6, 14 + 1, 14 + 8, 14 + 12, 14 + 16, 14 + 20, 14 + 22] {
            let mut c = b.clone();
            c[at] ^= 1;
            assert!(!same_flow(&a, &c), "byte {at} differs");
        }
        assert!(!same_flow(&a, &frame(true, 0x11, false, 0x1f)), "a VLAN tag");
        assert!(!same_flow(&a, &a[..40]), "not RoCE");
    }

    #[test]
    fn flows_of_ipv6_frames() {
        // Ethernet | IPv6 | UDP | BTH | AETH | ICRC.
        let v6 = |payload_len: u16, hop: u8| {
            let mut f = vec![0u8; 12];
            f.extend_from_slice(&[0x86, 0xdd, 0x60, 0, 0, 7]);
            f.extend_from_slice(&payload_len.to_be_bytes());
            f.extend_from_slice(&[17, hop]);
            f.extend_from_slice(&[0xfd; 32]);
            f.extend_from_slice(&[0xc0, 0x00, 0x12, 0xb7, 0, 28, 0x12, 0x34]);
            f.extend_from_slice(&[0x11; 20]);
            f
        };
        assert!(same_flow(&v6(36, 64), &v6(28, 64)), "payload lengths differ");
        assert!(!same_flow(&v6(36, 64), &v6(36, 63)), "hop limits differ");
        let mut other = v6(36, 64);
        other[14 + 3] = 8;
        assert!(!same_flow(&v6(36, 64), &other), "flow labels differ");
        assert_eq!(ipv4_ident(&v6(36, 64)), None);
        assert!(!same_flow(&v6(36, 64), &frame(false, 0x11, false, 0x1f)), "IPv6 and IPv4");
    }
}
