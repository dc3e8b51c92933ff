//! Many QPs at once.
#![allow(clippy::needless_range_loop)] // pairs are indexed in step on both sides

use std::sync::Arc;

use verbs_api::helpers::{to_init, to_rts, PeerInfo};
use verbs_api::{AccessFlags, Qp, QpCap, QpInitAttr, QpType, RecvWr, SendOp};

use super::{case, Case};
use crate::check;
use crate::kit::{ok, pattern, sge, wr, CaseResult, Env};

pub fn cases() -> Vec<Case> {
    vec![case("scale.64_rc_pairs", "IBTA Vol 1 ch. 9, ch. 10 (QPs are independent; per-QP ordering)", many_pairs)]
}

const PAIRS: usize = 64;
const MSG: usize = 2000;

fn many_pairs(env: &Env) -> CaseResult {
    let o = env.opts();
    let (pa, pb) = (env.a.alloc_pd()?, env.b.alloc_pd()?);
    let (cqa, cqb) = (env.a.create_cq(4096)?, env.b.create_cq(4096)?);
    let slot = 4 * MSG;
    let (ma, mb) = (pa.reg_mr(PAIRS * slot, AccessFlags::all())?, pb.reg_mr(PAIRS * slot, AccessFlags::all())?);
    let cap = QpCap { max_send_wr: 16, max_recv_wr: 16, max_send_sge: 1, max_recv_sge: 1, max_inline_data: 0 };
    let mk = |pd: &Arc<dyn verbs_api::Pd>, cq: &Arc<dyn verbs_api::Cq>| {
        pd.create_qp(&QpInitAttr {
            qp_type: QpType::Rc,
            send_cq: cq.clone(),
            recv_cq: cq.clone(),
            srq: None,
            cap,
            sq_sig_all: true,
        })
    };
    let mut qa: Vec<Arc<dyn Qp>> = Vec::new();
    let mut qb: Vec<Arc<dyn Qp>> = Vec::new();
    for _ in 0..PAIRS {
        qa.push(mk(&pa, &cqa)?);
        qb.push(mk(&pb, &cqb)?);
    }
    let (ga, gb) = (env.a.query_gid(1, env.gid_index as u32)?, env.b.query_gid(1, env.gid_index as u32)?);
    for i in 0..PAIRS {
        let (x, y) = (&qa[i], &qb[i]);
        to_init(x, &o)?;
        to_init(y, &o)?;
        to_rts(x, i as u32, &PeerInfo { qpn: y.qp_num(), psn: 1000 + i as u32, gid: gb }, &o)?;
        to_rts(y, 1000 + i as u32, &PeerInfo { qpn: x.qp_num(), psn: i as u32, gid: ga }, &o)?;
    }
    // Per pair: two SENDs, a WRITE and a READ back, all posted before any is polled.
    for i in 0..PAIRS {
        let base = i * slot;
        ma.write(base, &pattern(i as u64, 2 * MSG))?;
        qb[i].post_recv(&[
            RecvWr { wr_id: (i * 10) as u64, sg_list: vec![sge(&mb, base, MSG)] },
            RecvWr { wr_id: (i * 10 + 1) as u64, sg_list: vec![sge(&mb, base + MSG, MSG)] },
        ])?;
    }
    for i in 0..PAIRS {
        let base = i * slot;
        let dst = mb.addr() + (base + 2 * MSG) as u64;
        qa[i].post_send(
            &[
                wr((i * 10) as u64, SendOp::Send, vec![sge(&ma, base, MSG)]),
                wr((i * 10 + 1) as u64, SendOp::Send, vec![sge(&ma, base + MSG, MSG)]),
                wr(
                    (i * 10 + 2) as u64,
                    SendOp::RdmaWrite { remote_addr: dst, rkey: mb.rkey() },
                    vec![sge(&ma, base, MSG)],
                ),
                wr(
                    (i * 10 + 3) as u64,
                    SendOp::RdmaRead { remote_addr: dst, rkey: mb.rkey() },
                    vec![sge(&ma, base + 2 * MSG, MSG)],
                ),
            ],
            None,
        )?;
    }
    let mut seen = [0u8; PAIRS];
    for _ in 0..4 * PAIRS {
        let wc = ok(env, &cqa, "send completion of one of 64 pairs")?;
        let (i, k) = ((wc.wr_id / 10) as usize, (wc.wr_id % 10) as u8);
        check!(i < PAIRS && wc.qp_num == qa[i].qp_num(), "completion {wc:?} names the wrong QP");
        check!(k == seen[i], "pair {i}: completion {k} before {} (per-QP order)", seen[i]);
        seen[i] += 1;
    }
    let mut recvd = [0u8; PAIRS];
    for _ in 0..2 * PAIRS {
        let wc = ok(env, &cqb, "receive completion of one of 64 pairs")?;
        let (i, k) = ((wc.wr_id / 10) as usize, (wc.wr_id % 10) as u8);
        check!(i < PAIRS && wc.qp_num == qb[i].qp_num() && k == recvd[i], "receive {wc:?} out of place");
        recvd[i] += 1;
    }
    for i in 0..PAIRS {
        let base = i * slot;
        let want = pattern(i as u64, 2 * MSG);
        let mut got = vec![0u8; 3 * MSG];
        mb.read(base, &mut got)?;
        check!(got[..2 * MSG] == want[..] && got[2 * MSG..] == want[..MSG], "pair {i}: remote data differs");
        let mut back = vec![0u8; MSG];
        ma.read(base + 2 * MSG, &mut back)?;
        check!(back == want[..MSG], "pair {i}: READ back differs");
    }
    for q in qa.iter().chain(qb.iter()) {
        q.destroy()?;
    }
    let _ = (ma.deregister(), mb.deregister(), pa.dealloc(), pb.dealloc());
    Ok(())
}
