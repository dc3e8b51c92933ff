//! Small conveniences every verbs program writes: bring a QP from RESET to
//! RTS with the attributes IBTA requires for each step, given what the peer
//! told you out of band (its QPN, PSN and GID) — the same steps as
//! `ibv_rc_pingpong`'s `pp_connect_ctx`.

use std::sync::Arc;

use crate::transitions::required;
use crate::{AccessFlags, AhAttr, Gid, Mtu, Qp, QpAttr, QpPath, QpState, QpType, Result};

/// What one side tells the other out of band.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerInfo {
    pub qpn: u32,
    pub psn: u32,
    pub gid: Gid,
}

/// Transport parameters for bring-up.
#[derive(Debug, Clone, Copy)]
pub struct ConnectOptions {
    pub mtu: Mtu,
    pub sgid_index: u8,
    pub access: AccessFlags,
    pub timeout: u8,
    pub retry_cnt: u8,
    pub rnr_retry: u8,
    pub min_rnr_timer: u8,
    pub max_rd_atomic: u8,
    pub pkey_index: u16,
    pub qkey: u32,
}

impl Default for ConnectOptions {
    fn default() -> Self {
        ConnectOptions {
            mtu: Mtu::M1024,
            sgid_index: 1,
            access: AccessFlags::all(),
            timeout: 14,
            retry_cnt: 7,
            rnr_retry: 7,
            min_rnr_timer: 12,
            max_rd_atomic: 16,
            pkey_index: 0,
            qkey: 0x1111_1111,
        }
    }
}

/// RESET → INIT.
pub fn to_init(qp: &Arc<dyn Qp>, o: &ConnectOptions) -> Result<()> {
    let a = QpAttr {
        qp_state: QpState::Init,
        pkey_index: o.pkey_index,
        port_num: 1,
        qp_access_flags: o.access,
        qkey: o.qkey,
        ..QpAttr::default()
    };
    qp.modify(&a, required(qp.qp_type(), QpState::Reset, QpState::Init), QpPath::default())
}

/// INIT → RTR → RTS towards `peer` (for UD only the state changes and the SQ PSN).
pub fn to_rts(qp: &Arc<dyn Qp>, my_psn: u32, peer: &PeerInfo, o: &ConnectOptions) -> Result<()> {
    let t = qp.qp_type();
    let mut a = QpAttr {
        qp_state: QpState::Rtr,
        path_mtu: o.mtu,
        dest_qp_num: peer.qpn,
        rq_psn: peer.psn,
        max_dest_rd_atomic: o.max_rd_atomic,
        min_rnr_timer: o.min_rnr_timer,
        ..QpAttr::default()
    };
    // A UD QP has no path: its address handle goes with each send.
    let path =
        if t == QpType::Ud { QpPath::default() } else { QpPath { ah: Some(AhAttr::new(peer.gid, o.sgid_index)) } };
    qp.modify(&a, required(t, QpState::Init, QpState::Rtr), path)?;
    a.qp_state = QpState::Rts;
    a.sq_psn = my_psn;
    a.timeout = o.timeout;
    a.retry_cnt = o.retry_cnt;
    a.rnr_retry = o.rnr_retry;
    a.max_rd_atomic = o.max_rd_atomic;
    let m = required(t, QpState::Rtr, QpState::Rts);
    qp.modify(&a, m, QpPath::default())
}

/// The objects one side of a connection usually needs together.
pub struct Endpoint {
    pub ctx: Arc<dyn crate::Context>,
    pub pd: Arc<dyn crate::Pd>,
    pub cq: Arc<dyn crate::Cq>,
    pub mr: Arc<dyn crate::Mr>,
    pub qp: Arc<dyn Qp>,
}

impl Endpoint {
    /// A PD, one CQ for both queues (`cqe` entries), an MR of `mr_len`
    /// bytes with every access right, and a QP of type `t` with `cap`.
    pub fn new(ctx: &Arc<dyn crate::Context>, t: QpType, mr_len: usize, cqe: u32, cap: crate::QpCap) -> Result<Self> {
        Self::with_cq(ctx, t, mr_len, ctx.create_cq(cqe)?, cap)
    }

    /// As `new`, with a CQ the caller made (one with a completion channel, say).
    pub fn with_cq(
        ctx: &Arc<dyn crate::Context>,
        t: QpType,
        mr_len: usize,
        cq: Arc<dyn crate::Cq>,
        cap: crate::QpCap,
    ) -> Result<Self> {
        let pd = ctx.alloc_pd()?;
        let mr = pd.reg_mr(mr_len, AccessFlags::all())?;
        let qp = pd.create_qp(&crate::QpInitAttr {
            qp_type: t,
            send_cq: cq.clone(),
            recv_cq: cq.clone(),
            srq: None,
            cap,
            sq_sig_all: true,
        })?;
        Ok(Endpoint { ctx: ctx.clone(), pd, cq, mr, qp })
    }

    /// What this side tells its peer: QPN, `psn`, and GID `gid_index`.
    pub fn info(&self, psn: u32, gid_index: u32) -> Result<PeerInfo> {
        Ok(PeerInfo { qpn: self.qp.qp_num(), psn, gid: self.ctx.query_gid(1, gid_index)? })
    }

    /// An SGE over `len` bytes of the MR at `offset`.
    pub fn sge(&self, offset: u64, len: u32) -> crate::Sge {
        crate::Sge { addr: self.mr.addr() + offset, length: len, lkey: self.mr.lkey() }
    }
}

/// Brings `a` and `b` to RTS towards each other (GID index `o.sgid_index`).
pub fn connect(a: &Endpoint, b: &Endpoint, o: &ConnectOptions) -> Result<()> {
    let (ia, ib) = (a.info(1, o.sgid_index as u32)?, b.info(2, o.sgid_index as u32)?);
    to_init(&a.qp, o)?;
    to_init(&b.qp, o)?;
    to_rts(&a.qp, ia.psn, &ib, o)?;
    to_rts(&b.qp, ib.psn, &ia, o)
}
