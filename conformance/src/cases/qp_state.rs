//! The modify-QP table: legal transitions with exactly the required
//! attributes, illegal transitions and attribute sets refused (EINVAL) without
//! changing the QP, and what may be posted in which state.

use std::time::Duration;

use verbs_api::helpers::PeerInfo;
use verbs_api::{
    AccessFlags, AhAttr, AsyncEvent, QpAttr, QpAttrMask as M, QpPath, QpState, QpType, RecvWr, SendOp, SendWr,
};

use super::{case, Case};
use crate::kit::{
    bring_up, expect_err, ok, pair, pattern, wait_event, wait_state, wr, CaseResult, Env, Side, Spec, Stop, EINVAL,
};
use crate::{check, fail};

const TABLE: &str = "IBTA Vol 1 ch. 10 (QP state transitions); ch. 11 (Modify Queue Pair)";

pub fn cases() -> Vec<Case> {
    vec![
        case("qp.modify.rc_legal_path", TABLE, rc_legal_path),
        case("qp.modify.uc_ud_legal_path", TABLE, uc_ud_legal_path),
        case("qp.modify.illegal_transitions", TABLE, illegal_transitions),
        case("qp.modify.missing_attributes", TABLE, missing_attributes),
        case("qp.modify.unexpected_attributes", TABLE, unexpected_attributes),
        case("qp.modify.invalid_values", "IBTA Vol 1 ch. 11 (Modify Queue Pair: attribute ranges)", invalid_values),
        case("qp.post.wrong_state", "IBTA Vol 1 ch. 10 (work requests accepted per QP state)", post_wrong_state),
        case("qp.reset_and_reuse", "IBTA Vol 1 ch. 10 (Reset state: QP returns to its initial state)", reset_reuse),
        case("qp.sqd_drained_event", "IBTA Vol 1 ch. 10 (SQ Drain state); ch. 11 (SQ drained event)", sqd_drained),
    ]
}

/// A (`mask`, `attr`, `path`) that takes a QP of type `t` to `to` from its
/// usual predecessor, with exactly the required attributes.
fn step(env: &Env, t: QpType, to: QpState, peer: &PeerInfo) -> (M, QpAttr, QpPath) {
    let o = env.opts();
    let mut a = QpAttr { qp_state: to, ..QpAttr::default() };
    let none = QpPath::default();
    match to {
        QpState::Init => {
            a.pkey_index = 0;
            a.port_num = 1;
            a.qp_access_flags = AccessFlags::all();
            a.qkey = o.qkey;
            let extra = if t == QpType::Ud { M::QKEY } else { M::ACCESS_FLAGS };
            (M::STATE | M::PKEY_INDEX | M::PORT | extra, a, none)
        }
        QpState::Rtr => {
            a.path_mtu = o.mtu;
            a.dest_qp_num = peer.qpn;
            a.rq_psn = peer.psn;
            a.max_dest_rd_atomic = 1;
            a.min_rnr_timer = 1;
            let path = QpPath { ah: Some(AhAttr::new(peer.gid, o.sgid_index)) };
            match t {
                QpType::Ud => (M::STATE, a, none),
                QpType::Uc => (M::STATE | M::AV | M::PATH_MTU | M::DEST_QPN | M::RQ_PSN, a, path),
                QpType::Rc => (
                    M::STATE | M::AV | M::PATH_MTU | M::DEST_QPN | M::RQ_PSN | M::MAX_DEST_RD_ATOMIC | M::MIN_RNR_TIMER,
                    a,
                    path,
                ),
            }
        }
        QpState::Rts => {
            a.sq_psn = 0x77;
            a.timeout = 14;
            a.retry_cnt = 7;
            a.rnr_retry = 7;
            a.max_rd_atomic = 1;
            match t {
                QpType::Rc => {
                    (M::STATE | M::SQ_PSN | M::TIMEOUT | M::RETRY_CNT | M::RNR_RETRY | M::MAX_QP_RD_ATOMIC, a, none)
                }
                _ => (M::STATE | M::SQ_PSN, a, none),
            }
        }
        _ => (M::STATE, a, none),
    }
}

fn modify_to(env: &Env, s: &Side, to: QpState, peer: &PeerInfo) -> CaseResult {
    let (mut m, mut a, mut p) = step(env, s.qp.qp_type(), to, peer);
    if to == QpState::Rts && s.state()? == QpState::Sqd {
        // SQD → RTS requires nothing but the state.
        (m, a, p) = (M::STATE, QpAttr { qp_state: to, ..QpAttr::default() }, QpPath::default());
    }
    s.qp.modify(&a, m, p).map_err(|e| Stop::Fail(format!("{:?} -> {to:?} with {m:?}: {e}", s.state())))?;
    let now = s.state()?;
    check!(now == to, "after modify to {to:?}, query says {now:?}");
    Ok(())
}

/// A fresh QP of type `t` on context `a`, brought to `state` towards `peer`.
fn qp_in(env: &Env, t: QpType, state: QpState, peer: &PeerInfo) -> Result<Side, Stop> {
    let s = Side::new(&env.a, &Spec::new(env, t))?;
    let path: &[QpState] = match state {
        QpState::Reset => &[],
        QpState::Init => &[QpState::Init],
        QpState::Rtr => &[QpState::Init, QpState::Rtr],
        QpState::Rts => &[QpState::Init, QpState::Rtr, QpState::Rts],
        QpState::Sqd => &[QpState::Init, QpState::Rtr, QpState::Rts, QpState::Sqd],
        QpState::Err => &[QpState::Err],
        QpState::Sqe => &[],
    };
    for &to in path {
        modify_to(env, &s, to, peer)?;
    }
    Ok(s)
}

/// A peer the QPs point at (a real QP on `b`, never brought up).
fn peer(env: &Env, t: QpType) -> Result<(Side, PeerInfo), Stop> {
    let p = Side::new(&env.b, &Spec::new(env, t))?;
    let info = p.info(env.gid_index)?;
    Ok((p, info))
}

fn rc_legal_path(env: &Env) -> CaseResult {
    let (_p, peer) = peer(env, QpType::Rc)?;
    let s = Side::new(&env.a, &Spec::new(env, QpType::Rc))?;
    check!(s.state()? == QpState::Reset, "a new QP is in {:?}, not RESET", s.state()?);
    for to in [QpState::Init, QpState::Rtr, QpState::Rts] {
        modify_to(env, &s, to, &peer)?;
    }
    let q = s.qp.query()?;
    check!(q.dest_qp_num == peer.qpn && q.sq_psn == 0x77, "query after RTS: {q:?}");
    // Same-state modifies with optional attributes only.
    let a = QpAttr { qp_state: QpState::Rts, min_rnr_timer: 3, ..QpAttr::default() };
    s.qp.modify(&a, M::STATE | M::MIN_RNR_TIMER, QpPath::default())?;
    s.qp.modify(&QpAttr { min_rnr_timer: 4, ..a }, M::MIN_RNR_TIMER, QpPath::default())?;
    check!(s.qp.query()?.min_rnr_timer == 4, "RTS→RTS min_rnr_timer not applied");
    for to in [QpState::Sqd, QpState::Rts, QpState::Err, QpState::Reset, QpState::Init] {
        modify_to(env, &s, to, &peer)?;
    }
    // Any state → ERR and → RESET.
    for from in [QpState::Init, QpState::Rtr, QpState::Rts, QpState::Sqd] {
        for to in [QpState::Err, QpState::Reset] {
            let q = qp_in(env, QpType::Rc, from, &peer)?;
            modify_to(env, &q, to, &peer)?;
        }
    }
    Ok(())
}

fn uc_ud_legal_path(env: &Env) -> CaseResult {
    for t in [QpType::Uc, QpType::Ud] {
        let (_p, peer) = peer(env, t)?;
        let s = Side::new(&env.a, &Spec::new(env, t))?;
        for to in [QpState::Init, QpState::Rtr, QpState::Rts, QpState::Sqd, QpState::Rts, QpState::Err] {
            modify_to(env, &s, to, &peer).map_err(|e| match e {
                Stop::Fail(m) => Stop::Fail(format!("{t:?}: {m}")),
                s => s,
            })?;
        }
    }
    Ok(())
}

fn illegal_transitions(env: &Env) -> CaseResult {
    use QpState::*;
    let (_p, peer) = peer(env, QpType::Rc)?;
    let table: [(QpState, &[QpState]); 6] = [
        (Reset, &[Rtr, Rts, Sqd]),
        (Init, &[Rts, Sqd]),
        (Rtr, &[Init, Rtr, Sqd]),
        (Rts, &[Init, Rtr]),
        (Sqd, &[Init, Rtr]),
        (Err, &[Init, Rtr, Rts, Sqd]),
    ];
    let mut tried = 0;
    for (from, tos) in table {
        let s = qp_in(env, QpType::Rc, from, &peer)?;
        for &to in tos {
            // With the attributes the target state would need, so the
            // refusal can only be the transition itself.
            let (m, a, p) = step(env, QpType::Rc, to, &peer);
            if s.qp.modify(&a, m, p).is_ok() {
                fail!("{from:?} -> {to:?} accepted (with {m:?})");
            }
            let now = s.state()?;
            check!(now == from, "refused {from:?} -> {to:?} left the QP in {now:?}");
            tried += 1;
        }
    }
    check!(tried > 10, "table empty");
    Ok(())
}

fn missing_attributes(env: &Env) -> CaseResult {
    let (_p, peer) = peer(env, QpType::Rc)?;
    let cases: [(QpType, QpState, M); 7] = [
        (QpType::Rc, QpState::Init, M::ACCESS_FLAGS),
        (QpType::Rc, QpState::Init, M::PKEY_INDEX),
        (QpType::Ud, QpState::Init, M::QKEY),
        (QpType::Rc, QpState::Rtr, M::DEST_QPN),
        (QpType::Rc, QpState::Rtr, M::AV),
        (QpType::Rc, QpState::Rtr, M::MAX_DEST_RD_ATOMIC),
        (QpType::Rc, QpState::Rts, M::SQ_PSN),
    ];
    for (t, to, missing) in cases {
        let from = match to {
            QpState::Init => QpState::Reset,
            QpState::Rtr => QpState::Init,
            _ => QpState::Rtr,
        };
        let s = qp_in(env, t, from, &peer)?;
        let (m, a, p) = step(env, t, to, &peer);
        expect_err(
            s.qp.modify(&a, m.minus(missing), p),
            EINVAL,
            &format!("{t:?} {from:?}->{to:?} without {missing:?}"),
        )?;
        check!(s.state()? == from, "refused modify changed the state");
        // And with it, it works.
        modify_to(env, &s, to, &peer)?;
    }
    Ok(())
}

fn unexpected_attributes(env: &Env) -> CaseResult {
    let (_p, peer) = peer(env, QpType::Rc)?;
    let cases: [(QpType, QpState, M); 4] = [
        (QpType::Rc, QpState::Init, M::SQ_PSN),
        (QpType::Rc, QpState::Init, M::DEST_QPN),
        (QpType::Uc, QpState::Rtr, M::MAX_DEST_RD_ATOMIC),
        (QpType::Ud, QpState::Rtr, M::AV),
    ];
    for (t, to, extra) in cases {
        let from = if to == QpState::Init { QpState::Reset } else { QpState::Init };
        let s = qp_in(env, t, from, &peer)?;
        let (m, a, _) = step(env, t, to, &peer);
        let path = QpPath { ah: Some(AhAttr::new(peer.gid, env.gid_index)) };
        expect_err(s.qp.modify(&a, m | extra, path), EINVAL, &format!("{t:?} {from:?}->{to:?} with {extra:?}"))?;
        check!(s.state()? == from, "refused modify changed the state");
    }
    Ok(())
}

fn invalid_values(env: &Env) -> CaseResult {
    let (_p, peer) = peer(env, QpType::Rc)?;
    let n_pkeys = env.a.query_port(1)?.pkey_tbl_len;
    let max_rd = env.a.query_device().max_qp_rd_atom;
    let s = qp_in(env, QpType::Rc, QpState::Reset, &peer)?;
    let (m, a, p) = step(env, QpType::Rc, QpState::Init, &peer);
    expect_err(s.qp.modify(&QpAttr { port_num: 2, ..a }, m, p), EINVAL, "port_num 2 on a one-port device")?;
    expect_err(s.qp.modify(&QpAttr { pkey_index: n_pkeys, ..a }, m, p), EINVAL, "pkey_index beyond the table")?;
    modify_to(env, &s, QpState::Init, &peer)?;
    modify_to(env, &s, QpState::Rtr, &peer)?;
    let (m, a, p) = step(env, QpType::Rc, QpState::Rts, &peer);
    expect_err(s.qp.modify(&QpAttr { retry_cnt: 8, ..a }, m, p), EINVAL, "retry_cnt 8 (3-bit field)")?;
    expect_err(s.qp.modify(&QpAttr { rnr_retry: 8, ..a }, m, p), EINVAL, "rnr_retry 8 (3-bit field)")?;
    expect_err(s.qp.modify(&QpAttr { timeout: 32, ..a }, m, p), EINVAL, "timeout 32 (5-bit field)")?;
    if max_rd < 255 {
        let bad = QpAttr { max_rd_atomic: max_rd as u8 + 1, ..a };
        expect_err(s.qp.modify(&bad, m, p), EINVAL, "max_rd_atomic above max_qp_init_rd_atom")?;
    }
    check!(s.state()? == QpState::Rtr, "refused modifies changed the state");
    Ok(())
}

fn post_wrong_state(env: &Env) -> CaseResult {
    let (_p, peer) = peer(env, QpType::Rc)?;
    for st in [QpState::Reset, QpState::Init, QpState::Rtr] {
        let s = qp_in(env, QpType::Rc, st, &peer)?;
        let r = s.qp.post_send(&[wr(1, SendOp::Send, vec![s.sge(0, 8)])], None);
        match r {
            Err((0, e)) if e.errno() == EINVAL => {}
            Err((i, e)) => fail!("post_send in {st:?}: index {i}, {e}; expected EINVAL at 0"),
            Ok(()) => fail!("post_send in {st:?} accepted"),
        }
        let rr = s.qp.post_recv(&[RecvWr { wr_id: 1, sg_list: vec![s.sge(0, 8)] }]);
        match (st, rr) {
            (QpState::Reset, Ok(())) => fail!("post_recv in RESET accepted"),
            (QpState::Reset, Err(_)) => {}
            (_, Err((_, e))) => fail!("post_recv in {st:?} refused: {e}"),
            (_, Ok(())) => {}
        }
        check!(s.scq.poll(4).is_empty(), "a refused post produced a completion");
    }
    Ok(())
}

fn reset_reuse(env: &Env) -> CaseResult {
    let (a, b) = pair(env, QpType::Rc, 4096)?;
    for round in 0..2u64 {
        let data = pattern(round, 300);
        a.mr.write(0, &data)?;
        b.post_recv(round, 0, 4096)?;
        a.post(wr(round, SendOp::Send, vec![a.sge(0, 300)]))?;
        ok(env, &a.scq, "SEND")?;
        let wc = ok(env, &b.rcq, "RECV")?;
        check!(wc.wr_id == round && b.read(0, 300)? == data, "round {round}: wrong data");
        // Both QPs back to RESET (through ERR), then up again.
        for s in [&a, &b] {
            let to_err = QpAttr { qp_state: QpState::Err, ..QpAttr::default() };
            s.qp.modify(&to_err, M::STATE, QpPath::default())?;
            let to_reset = QpAttr { qp_state: QpState::Reset, ..QpAttr::default() };
            s.qp.modify(&to_reset, M::STATE, QpPath::default())?;
            check!(s.state()? == QpState::Reset, "not in RESET");
            while !s.scq.poll(16).is_empty() || !s.rcq.poll(16).is_empty() {}
        }
        bring_up(env, &a, &b)?;
        bring_up(env, &b, &a)?;
    }
    Ok(())
}

fn sqd_drained(env: &Env) -> CaseResult {
    let (a, b) = pair(env, QpType::Rc, 1 << 16)?;
    for i in 0..4 {
        b.post_recv(i, 0, 1 << 16)?;
        a.post(SendWr::new(i, SendOp::Send, vec![a.sge(0, 8192)]))?;
    }
    let sqd = QpAttr { qp_state: QpState::Sqd, en_sqd_async_notify: true, ..QpAttr::default() };
    a.qp.modify(&sqd, M::STATE | M::EN_SQD_ASYNC_NOTIFY, QpPath::default())?;
    let qpn = a.qp.qp_num();
    if wait_event(&a.ctx, env.timeout(), |e| *e == AsyncEvent::SqDrained { qpn }).is_none() {
        fail!("no SqDrained event for QP {qpn} after RTS -> SQD with EN_SQD_ASYNC_NOTIFY");
    }
    // Work posted in SQD waits; back in RTS it goes.
    b.post_recv(9, 0, 1 << 16)?;
    a.post(SendWr::new(9, SendOp::Send, vec![a.sge(0, 16)]))?;
    for i in 0..4 {
        let wc = ok(env, &a.scq, "SEND posted before SQD")?;
        check!(wc.wr_id == i, "completion order: got wr_id {} expected {i}", wc.wr_id);
    }
    check!(a.scq.wait(1, Duration::from_millis(50)).is_empty(), "a WR posted in SQD was sent before RTS");
    wait_state(env, &a.qp, QpState::Sqd, "SQD")?;
    let rts = QpAttr { qp_state: QpState::Rts, ..QpAttr::default() };
    a.qp.modify(&rts, M::STATE, QpPath::default())?;
    let wc = ok(env, &a.scq, "SEND posted in SQD")?;
    check!(wc.wr_id == 9, "wr_id {}", wc.wr_id);
    Ok(())
}
