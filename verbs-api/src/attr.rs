use core::fmt;
use core::ops::{BitOr, BitOrAssign};

/// `enum ibv_qp_type` (the values softrdma supports).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum QpType {
    Rc = 2,
    Uc = 3,
    Ud = 4,
}

/// `enum ibv_qp_state`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum QpState {
    Reset = 0,
    Init = 1,
    Rtr = 2,
    Rts = 3,
    Sqd = 4,
    Sqe = 5,
    Err = 6,
}

/// `enum ibv_mtu`: the path MTU of a connected QP (IB MTUs only).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Mtu {
    M256 = 1,
    M512 = 2,
    M1024 = 3,
    M2048 = 4,
    M4096 = 5,
}

impl Mtu {
    pub const fn bytes(self) -> usize {
        128 << (self as usize)
    }

    /// The largest IB MTU whose packet fits a link (Ethernet) MTU, the way rxe
    /// derives its active MTU (1500 → 1024).
    pub fn for_link_mtu(link_mtu: usize) -> Option<Mtu> {
        // IP (≤40) + UDP (8) + BTH and headers (≤ 40 for RoCE) + ICRC.
        let room = link_mtu.checked_sub(40 + 8 + 12 + 28 + 4)?;
        [Mtu::M4096, Mtu::M2048, Mtu::M1024, Mtu::M512, Mtu::M256].into_iter().find(|m| m.bytes() <= room)
    }

    pub fn from_bytes(n: usize) -> Option<Mtu> {
        [Mtu::M256, Mtu::M512, Mtu::M1024, Mtu::M2048, Mtu::M4096].into_iter().find(|m| m.bytes() == n)
    }
}

/// A 128-bit GID. RoCEv2 GIDs are IPv6 addresses, or IPv4-mapped IPv6
/// addresses (`::ffff:a.b.c.d`) for IPv4.
#[derive(Clone, Copy, Eq, Default, PartialOrd, Ord)]
pub struct Gid(pub [u8; 16]);

impl core::hash::Hash for Gid {
    fn hash<H: core::hash::Hasher>(&self, state: &mut H) {
        self.0.hash(state);
    }
}

/// Compared as one 128-bit word: every received packet's GIDs are checked
/// against the QP's path and the device's table.
impl PartialEq for Gid {
    #[inline]
    fn eq(&self, other: &Gid) -> bool {
        u128::from_ne_bytes(self.0) == u128::from_ne_bytes(other.0)
    }
}

impl Gid {
    pub fn from_ipv4(a: core::net::Ipv4Addr) -> Self {
        Gid(a.to_ipv6_mapped().octets())
    }
    pub fn from_ipv6(a: core::net::Ipv6Addr) -> Self {
        Gid(a.octets())
    }
    /// The IPv4 address of an IPv4-mapped GID (::ffff:a.b.c.d). Runs
    /// several times per packet, hence the bytes are compared directly.
    #[inline]
    pub fn to_ipv4(self) -> Option<core::net::Ipv4Addr> {
        let b = self.0;
        if b[..10].iter().all(|&x| x == 0) && b[10] == 0xff && b[11] == 0xff {
            Some(core::net::Ipv4Addr::new(b[12], b[13], b[14], b[15]))
        } else {
            None
        }
    }
    pub fn to_ipv6(self) -> core::net::Ipv6Addr {
        core::net::Ipv6Addr::from(self.0)
    }
}

impl fmt::Debug for Gid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self)
    }
}

impl fmt::Display for Gid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.to_ipv4() {
            Some(v4) => write!(f, "::ffff:{v4}"),
            None => write!(f, "{}", self.to_ipv6()),
        }
    }
}

/// `struct ibv_qp_cap`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QpCap {
    pub max_send_wr: u32,
    pub max_recv_wr: u32,
    pub max_send_sge: u32,
    pub max_recv_sge: u32,
    pub max_inline_data: u32,
}

impl Default for QpCap {
    fn default() -> Self {
        QpCap { max_send_wr: 128, max_recv_wr: 128, max_send_sge: 4, max_recv_sge: 4, max_inline_data: 256 }
    }
}

/// `enum ibv_qp_attr_mask`: which fields of a [`QpAttr`] a modify/query names.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct QpAttrMask(pub u32);

impl QpAttrMask {
    pub const STATE: Self = Self(1 << 0);
    pub const CUR_STATE: Self = Self(1 << 1);
    pub const EN_SQD_ASYNC_NOTIFY: Self = Self(1 << 2);
    pub const ACCESS_FLAGS: Self = Self(1 << 3);
    pub const PKEY_INDEX: Self = Self(1 << 4);
    pub const PORT: Self = Self(1 << 5);
    pub const QKEY: Self = Self(1 << 6);
    pub const AV: Self = Self(1 << 7);
    pub const PATH_MTU: Self = Self(1 << 8);
    pub const TIMEOUT: Self = Self(1 << 9);
    pub const RETRY_CNT: Self = Self(1 << 10);
    pub const RNR_RETRY: Self = Self(1 << 11);
    pub const RQ_PSN: Self = Self(1 << 12);
    pub const MAX_QP_RD_ATOMIC: Self = Self(1 << 13);
    pub const ALT_PATH: Self = Self(1 << 14);
    pub const MIN_RNR_TIMER: Self = Self(1 << 15);
    pub const SQ_PSN: Self = Self(1 << 16);
    pub const MAX_DEST_RD_ATOMIC: Self = Self(1 << 17);
    pub const PATH_MIG_STATE: Self = Self(1 << 18);
    pub const CAP: Self = Self(1 << 19);
    pub const DEST_QPN: Self = Self(1 << 20);

    pub const NONE: Self = Self(0);

    pub const fn contains(self, other: Self) -> bool {
        self.0 & other.0 == other.0
    }
    pub const fn union(self, other: Self) -> Self {
        Self(self.0 | other.0)
    }
    pub const fn minus(self, other: Self) -> Self {
        Self(self.0 & !other.0)
    }
    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }

    const NAMES: [&'static str; 21] = [
        "STATE",
        "CUR_STATE",
        "EN_SQD_ASYNC_NOTIFY",
        "ACCESS_FLAGS",
        "PKEY_INDEX",
        "PORT",
        "QKEY",
        "AV",
        "PATH_MTU",
        "TIMEOUT",
        "RETRY_CNT",
        "RNR_RETRY",
        "RQ_PSN",
        "MAX_QP_RD_ATOMIC",
        "ALT_PATH",
        "MIN_RNR_TIMER",
        "SQ_PSN",
        "MAX_DEST_RD_ATOMIC",
        "PATH_MIG_STATE",
        "CAP",
        "DEST_QPN",
    ];
}

impl fmt::Debug for QpAttrMask {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = (0..21).filter(|b| self.0 & (1 << b) != 0).map(|b| QpAttrMask::NAMES[b]).collect();
        if self.0 >> 21 != 0 {
            write!(f, "{}|0x{:x}", names.join("|"), self.0 & !((1 << 21) - 1))
        } else {
            write!(f, "{}", if names.is_empty() { "NONE".to_string() } else { names.join("|") })
        }
    }
}

impl BitOr for QpAttrMask {
    type Output = Self;
    fn bitor(self, rhs: Self) -> Self {
        self.union(rhs)
    }
}

impl BitOrAssign for QpAttrMask {
    fn bitor_assign(&mut self, rhs: Self) {
        self.0 |= rhs.0;
    }
}

/// `struct ibv_qp_attr` (without alternate paths, which RoCE does not use).
/// The address vector of a connected QP is resolved by the device into a path
/// and passed alongside (see the transport crate).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QpAttr {
    pub qp_state: QpState,
    pub cur_qp_state: QpState,
    pub path_mtu: Mtu,
    pub qkey: u32,
    pub rq_psn: u32,
    pub sq_psn: u32,
    pub dest_qp_num: u32,
    pub qp_access_flags: super::AccessFlags,
    pub cap: QpCap,
    pub pkey_index: u16,
    pub en_sqd_async_notify: bool,
    pub max_rd_atomic: u8,
    pub max_dest_rd_atomic: u8,
    /// Minimum RNR NAK timer code (IBTA Table 45), 0..=31.
    pub min_rnr_timer: u8,
    pub port_num: u8,
    /// Local ACK timeout: 4.096 µs × 2^timeout; 0 means infinite.
    pub timeout: u8,
    /// Retries on timeout or sequence error, 0..=7.
    pub retry_cnt: u8,
    /// Retries on RNR NAK, 0..=7; 7 means infinite.
    pub rnr_retry: u8,
}

impl Default for QpAttr {
    fn default() -> Self {
        QpAttr {
            qp_state: QpState::Reset,
            cur_qp_state: QpState::Reset,
            path_mtu: Mtu::M1024,
            qkey: 0,
            rq_psn: 0,
            sq_psn: 0,
            dest_qp_num: 0,
            qp_access_flags: super::AccessFlags::NONE,
            cap: QpCap::default(),
            pkey_index: 0,
            en_sqd_async_notify: false,
            max_rd_atomic: 1,
            max_dest_rd_atomic: 1,
            min_rnr_timer: 12,
            port_num: 1,
            timeout: 14,
            retry_cnt: 7,
            rnr_retry: 7,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn to_ipv4_agrees_with_std_ipv4_mapped() {
        let mut cases = vec![
            std::net::Ipv4Addr::new(10, 0, 0, 1).to_ipv6_mapped().octets(),
            std::net::Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 1).octets(),
            std::net::Ipv4Addr::new(1, 2, 3, 4).to_ipv6_compatible().octets(),
            [0; 16],
        ];
        // Every GID one byte away from a mapped one.
        let mapped = std::net::Ipv4Addr::new(192, 168, 7, 9).to_ipv6_mapped().octets();
        for i in 0..16 {
            let mut g = mapped;
            g[i] ^= 0x40;
            cases.push(g);
        }
        cases.push(mapped);
        for g in &cases {
            assert_eq!(Gid(*g).to_ipv4(), std::net::Ipv6Addr::from(*g).to_ipv4_mapped(), "{g:?}");
        }
        // Equality (compared as one word) is byte equality.
        for a in &cases {
            for b in &cases {
                assert_eq!(Gid(*a) == Gid(*b), a == b, "{a:?} {b:?}");
            }
        }
    }

    #[test]
    fn mtu_values() {
        assert_eq!(Mtu::M256.bytes(), 256);
        assert_eq!(Mtu::M4096.bytes(), 4096);
        assert_eq!(Mtu::for_link_mtu(1500), Some(Mtu::M1024));
        assert_eq!(Mtu::for_link_mtu(9000), Some(Mtu::M4096));
        assert_eq!(Mtu::for_link_mtu(100), None);
    }

    #[test]
    fn gid_display_matches_ibv_devinfo() {
        let g = Gid::from_ipv4("10.77.0.12".parse().unwrap());
        assert_eq!(g.to_string(), "::ffff:10.77.0.12");
        assert_eq!(format!("{:?}", QpAttrMask::STATE | QpAttrMask::AV), "STATE|AV");
    }
}
