//! Acceptance rules that depend on keys rather than on sequence: the single
//! place where a P_Key comparison is made. The container isolation model
//! (namespaces, JKeys, GID ownership) builds on these in the device.

/// IBTA Vol 1 ch. 10 (partitioning): two P_Keys match when their low 15 bits are
/// equal, neither is the invalid key (low 15 bits zero), and at least one of
/// them is a full member (bit 15 set). Two limited members never match.
pub fn pkeys_match(a: u16, b: u16) -> bool {
    let (ka, kb) = (a & 0x7fff, b & 0x7fff);
    ka == kb && ka != 0 && (a & 0x8000 != 0 || b & 0x8000 != 0)
}

/// IBTA Vol 1 ch. 10 (Q_Keys): a UD Q_Key with the high bit set is "controlled";
/// a send work request asking for one means "use the QP's own Q_Key".
pub fn effective_qkey(wr_qkey: u32, qp_qkey: u32) -> u32 {
    if wr_qkey & 0x8000_0000 != 0 {
        qp_qkey
    } else {
        wr_qkey
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pkey_membership_rules() {
        assert!(pkeys_match(0xffff, 0xffff));
        assert!(pkeys_match(0xffff, 0x7fff), "full with limited");
        assert!(!pkeys_match(0x7fff, 0x7fff), "limited with limited");
        assert!(!pkeys_match(0x8001, 0x8002), "different partitions");
        assert!(!pkeys_match(0x8000, 0x8000), "invalid key");
        assert!(pkeys_match(0x8123, 0x0123));
    }

    #[test]
    fn controlled_qkey_selects_the_qp_qkey() {
        assert_eq!(effective_qkey(0x8000_0000, 0x1111_1111), 0x1111_1111);
        assert_eq!(effective_qkey(0x2222, 0x1111_1111), 0x2222);
    }
}
