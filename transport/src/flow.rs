//! UDP source port and flow label of RoCEv2 packets, chosen as Linux does so
//! that ECMP spreads softrdma's flows exactly like rxe's.
//!
//! - Connected QPs: `rdma_calc_flow_label(lqpn, rqpn)` (include/rdma/ib_verbs.h)
//!   folds the product of the two QPNs into 20 bits, and
//!   `rdma_flow_label_to_udp_sport` folds that into the 0xC000..=0xFFFF range.
//!   Checked against rc-pingpong.pcap (QPN 0x12 → 0x11: port 49458).
//! - UD QPs: rxe's `hash_32(qpn, 14)` from the golden-ratio multiplier,
//!   offset by 0xC000 (ud-send-512.pcap, QPN 0x11: port 57236).

pub const ROCE_SPORT_MIN: u16 = 0xc000;

pub fn flow_label(lqpn: u32, rqpn: u32) -> u32 {
    let mut v = lqpn as u64 * rqpn as u64;
    v ^= v >> 20;
    v ^= v >> 40;
    (v & 0xf_ffff) as u32
}

pub fn udp_sport_from_flow_label(fl: u32) -> u16 {
    let low = fl & 0x3fff;
    let high = fl & 0xf_c000;
    ((low ^ (high >> 14)) as u16) | ROCE_SPORT_MIN
}

pub fn connected_udp_sport(lqpn: u32, rqpn: u32) -> u16 {
    udp_sport_from_flow_label(flow_label(lqpn, rqpn))
}

pub fn ud_udp_sport(qpn: u32) -> u16 {
    const GOLDEN_RATIO_32: u32 = 0x61c8_8647;
    ROCE_SPORT_MIN + ((qpn.wrapping_mul(GOLDEN_RATIO_32) >> (32 - 14)) as u16 & 0x3fff)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_match_the_kernel_rxe_captures() {
        assert_eq!(connected_udp_sport(0x12, 0x11), 49458); // rc-pingpong.pcap
        assert_eq!(connected_udp_sport(0x11, 0x11), 49441); // perftest captures
        assert_eq!(ud_udp_sport(0x11), 57236); // ud-send-512.pcap
    }
}
