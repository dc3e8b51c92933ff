//! Acceptance rules that depend on keys and addresses rather than on
//! sequence — the single place where a received packet is admitted to a QP
//! or refused (docs/isolation.md lists each rule with its source):
//!
//! 1. its destination GID must be one of the receiving device's own
//!    (a namespace only sinks its own addresses);
//! 2. its P_Key must match the QP's (IBTA Vol 1 ch. 10, partitioning);
//! 3. its JKey (JKETH) must equal the QP's job key, and a QP without a job
//!    accepts no job-keyed packet (softrdma's JKey model);
//! 4. UD: its Q_Key must equal the QP's (IBTA Vol 1 ch. 10, Q_Keys);
//! 5. RC/UC: its source and destination GIDs must be the QP's path — a
//!    connected QP only talks to the peer it was connected to (no spoofing).
//!
//! The endpoint counts each refusal; the device audits it.

use verbs_api::{Gid, QpType};

use crate::qp::Qp;
use crate::wire::IbRepr;

/// Why a packet was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Violation {
    ForeignDestination { dgid: Gid },
    BadPkey { pkey: u16, qp_pkey: u16 },
    JkeyMismatch { got: Option<u16>, want: Option<u16> },
    QkeyMismatch { qkey: u32, qp_qkey: u32 },
    SpoofedSource { sgid: Gid, expected: Gid },
}

impl Violation {
    pub fn kind(&self) -> &'static str {
        match self {
            Violation::ForeignDestination { .. } => "foreign_dgid",
            Violation::BadPkey { .. } => "pkey",
            Violation::JkeyMismatch { .. } => "jkey",
            Violation::QkeyMismatch { .. } => "qkey",
            Violation::SpoofedSource { .. } => "gid_spoof",
        }
    }
}

/// Admits a verified packet (`ib`, from `sgid` to `dgid`) to `qp`, or says why not.
/// An empty `local_gids` skips rule 1 (a bare endpoint without a GID table).
pub fn admit(qp: &Qp, ib: &IbRepr, sgid: Gid, dgid: Gid, local_gids: &[Gid]) -> Result<(), Violation> {
    if !local_gids.is_empty() && !local_gids.contains(&dgid) {
        return Err(Violation::ForeignDestination { dgid });
    }
    if !pkeys_match(ib.bth.pkey, qp.pkey()) {
        return Err(Violation::BadPkey { pkey: ib.bth.pkey, qp_pkey: qp.pkey() });
    }
    let got = ib.ext.jketh.map(|j| j.jkey);
    if got != qp.jkey() {
        return Err(Violation::JkeyMismatch { got, want: qp.jkey() });
    }
    match qp.qp_type() {
        QpType::Ud => {
            if let Some(d) = ib.ext.deth {
                if d.qkey != qp.attr().qkey {
                    return Err(Violation::QkeyMismatch { qkey: d.qkey, qp_qkey: qp.attr().qkey });
                }
            }
        }
        QpType::Rc | QpType::Uc => {
            if let Some(p) = qp.path() {
                if sgid != p.dgid {
                    return Err(Violation::SpoofedSource { sgid, expected: p.dgid });
                }
                if dgid != p.sgid {
                    return Err(Violation::ForeignDestination { dgid });
                }
            }
        }
    }
    Ok(())
}

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
