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
    }
}
