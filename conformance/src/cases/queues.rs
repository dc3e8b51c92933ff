//! Flushing on ERR, CQ overrun, shared receive queues and their limit event.

use std::time::{Duration, Instant};

use verbs_api::helpers::{to_init, to_rts};
use verbs_api::{
    AsyncEvent, QpAttr, QpAttrMask, QpInitAttr, QpPath, QpState, QpType, RecvWr, SendOp, WcOpcode, WcStatus,
    WorkCompletion,
};

use super::{case, Case};
use crate::kit::{
    bring_up, connect, expect, expect_err, ok, quiet, wait_event, wr, CaseResult, Env, Side, Spec, EINVAL,
};
use crate::{check, fail};

pub fn cases() -> Vec<Case> {
    vec![
        case(
            "flush.modify_to_err",
            "IBTA Vol 1 ch. 10 (Error state: outstanding WRs complete with flush errors, in order)",
            flush_on_err,
        ),
        case("cq.overflow", "IBTA Vol 1 ch. 11 (Completion Queue overrun: CQ error, asynchronous event)", cq_overflow),
        case(
            "cq.poll_into",
            "IBTA Vol 1 ch. 11 (Poll for Completion: up to the number asked, oldest first); ibv_poll_cq(3)",
            cq_poll_into,
        ),
        case("srq.shared_receives", "IBTA Vol 1 ch. 10 (Shared Receive Queue)", srq_shared),
        case("srq.limit_event", "IBTA Vol 1 ch. 10, ch. 11 (SRQ limit: asynchronous event, then disarmed)", srq_limit),
    ]
}

fn flush_on_err(env: &Env) -> CaseResult {
    let mut s = Spec::new(env, QpType::Rc);
    s.opts.timeout = 20; // ~4 s: nothing times out during the case
                         // The peer never answers (left in RESET), so sends stay outstanding.
    let a = Side::new(&env.a, &s)?;
    let silent = Side::new(&env.b, &s)?;
    bring_up(env, &a, &silent)?;
    for i in 0..3u64 {
        a.post(wr(i, SendOp::Send, vec![a.sge(0, 100)]))?;
        a.post_recv(10 + i, 0, 64)?;
    }
    quiet(&a.scq, Duration::from_millis(20), "sends to a silent peer")?;
    let err = QpAttr { qp_state: QpState::Err, ..QpAttr::default() };
    a.qp.modify(&err, QpAttrMask::STATE, QpPath::default())?;
    for i in 0..3u64 {
        let wc = expect(env, &a.scq, WcStatus::WrFlushErr, "outstanding send after modify to ERR")?;
        check!(wc.wr_id == i, "flushed send #{i} is wr_id {}", wc.wr_id);
        let wc = expect(env, &a.rcq, WcStatus::WrFlushErr, "posted receive after modify to ERR")?;
        check!(wc.wr_id == 10 + i, "flushed receive #{i} is wr_id {}", wc.wr_id);
    }
    // Work posted in ERR completes at once with a flush error.
    a.post(wr(7, SendOp::Send, vec![a.sge(0, 1)]))?;
    let wc = expect(env, &a.scq, WcStatus::WrFlushErr, "send posted in ERR")?;
    check!(wc.wr_id == 7, "wr_id {}", wc.wr_id);
    a.post_recv(17, 0, 8)?;
    let wc = expect(env, &a.rcq, WcStatus::WrFlushErr, "receive posted in ERR")?;
    check!(wc.wr_id == 17, "wr_id {}", wc.wr_id);
    Ok(())
}

fn cq_overflow(env: &Env) -> CaseResult {
    let mut s = Spec::new(env, QpType::Rc);
    s.cqe = 4;
    let (a, b) = connect(env, &s, &Spec::new(env, QpType::Rc))?;
    let cap = a.scq.capacity() as usize;
    check!(!a.scq.overflowed(), "fresh CQ reports overflow");
    let n = cap + 4;
    if n > a.spec.cap.max_send_wr as usize {
        crate::skip!("CQ capacity {cap} for cqe 4 is more than the send queue can overrun");
    }
    let wrs: Vec<_> = (0..n as u64)
        .map(|i| wr(i, SendOp::RdmaWrite { remote_addr: b.mr.addr(), rkey: b.mr.rkey() }, vec![a.sge(0, 8)]))
        .collect();
    a.qp.post_send(&wrs, None)?;
    let deadline = Instant::now() + env.timeout();
    while !a.scq.overflowed() {
        if Instant::now() > deadline {
            fail!("{n} completions into a CQ of {cap}: overflowed() still false");
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    let cqn = a.scq.handle();
    if wait_event(&a.ctx, env.timeout(), |e| *e == AsyncEvent::CqError { cqn }).is_none() {
        fail!("no CqError event for the overrun CQ {cqn}");
    }
    let got = a.scq.poll(n + 8);
    check!(got.len() <= cap, "an overrun CQ of {cap} returned {} completions", got.len());
    check!(!b.rcq.overflowed(), "the peer's CQ reports overflow");
    Ok(())
}

fn cq_poll_into(env: &Env) -> CaseResult {
    let s = Spec::new(env, QpType::Rc);
    let (a, b) = connect(env, &s, &Spec::new(env, QpType::Rc))?;
    let n = 5u64;
    let wrs: Vec<_> = (0..n)
        .map(|i| wr(i, SendOp::RdmaWrite { remote_addr: b.mr.addr(), rkey: b.mr.rkey() }, vec![a.sge(0, 8)]))
        .collect();
    a.qp.post_send(&wrs, None)?;
    // What the caller's array held before: a poll must not touch slots past
    // the completions it returns.
    let untouched = WorkCompletion::new(u64::MAX, WcStatus::GeneralErr, WcOpcode::LocalInv, u32::MAX);
    check!(a.scq.poll_into(&mut []) == 0, "poll_into with no room returned completions");
    let mut ids = Vec::new();
    let deadline = Instant::now() + env.timeout();
    while (ids.len() as u64) < n {
        let mut slots = [untouched; 2];
        let k = a.scq.poll_into(&mut slots);
        check!(k <= slots.len(), "poll_into returned {k} for an array of {}", slots.len());
        for wc in &slots[..k] {
            check!(wc.status == WcStatus::Success, "WRITE {} completed {:?}", wc.wr_id, wc.status);
            check!(wc.opcode == WcOpcode::RdmaWrite, "WRITE {} completed as {:?}", wc.wr_id, wc.opcode);
            ids.push(wc.wr_id);
        }
        check!(slots[k..].iter().all(|w| *w == untouched), "poll_into wrote past the {k} completions it returned");
        if Instant::now() > deadline {
            fail!("{} of {n} completions within {:?}", ids.len(), env.timeout());
        }
    }
    check!(ids == (0..n).collect::<Vec<_>>(), "completions out of order: {ids:?}");
    let mut slots = [untouched; 4];
    check!(a.scq.poll_into(&mut slots) == 0, "an empty CQ returned completions");
    check!(slots.iter().all(|w| *w == untouched), "an empty poll wrote into the array");
    Ok(())
}

fn srq_shared(env: &Env) -> CaseResult {
    let mut sb = Spec::new(env, QpType::Rc);
    sb.srq = true;
    let sa = Spec::new(env, QpType::Rc);
    let (a1, b) = connect(env, &sa, &sb)?;
    let srq = b.srq.clone().expect("spec asked for an SRQ");
    // A second QP on b sharing the SRQ and CQs, with its own peer a2.
    let qp2 = b.pd.create_qp(&QpInitAttr {
        qp_type: QpType::Rc,
        send_cq: b.scq.clone(),
        recv_cq: b.rcq.clone(),
        srq: Some(srq.clone()),
        cap: sb.cap,
        sq_sig_all: false,
    })?;
    let a2 = Side::new(&env.a, &sa)?;
    let info2 =
        verbs_api::helpers::PeerInfo { qpn: qp2.qp_num(), psn: 5, gid: b.ctx.query_gid(1, env.gid_index as u32)? };
    to_init(&a2.qp, &sa.opts)?;
    to_rts(&a2.qp, a2.spec.psn, &info2, &sa.opts)?;
    to_init(&qp2, &sb.opts)?;
    to_rts(&qp2, 5, &a2.info(env.gid_index)?, &sb.opts)?;
    // Receives go to the SRQ, not the QP.
    expect_err(
        qp2.post_recv(&[RecvWr { wr_id: 0, sg_list: vec![] }]).map_err(|e| e.1),
        EINVAL,
        "post_recv on a QP with an SRQ",
    )?;
    for i in 0..4u64 {
        srq.post_recv(&[RecvWr { wr_id: 100 + i, sg_list: vec![b.sge(i as usize * 1024, 1024)] }])?;
    }
    for (i, a) in [&a1, &a2, &a1, &a2].into_iter().enumerate() {
        a.mr.write(0, &[i as u8 + 1; 10])?;
        a.post(wr(i as u64, SendOp::Send, vec![a.sge(0, 10)]))?;
        ok(env, &a.scq, "SEND to an SRQ QP")?;
        let r = ok(env, &b.rcq, "RECV from the SRQ")?;
        check!(r.wr_id == 100 + i as u64, "SRQ WQEs taken out of order: got {} expected {}", r.wr_id, 100 + i);
        let want_qp = if i % 2 == 0 { b.qp.qp_num() } else { qp2.qp_num() };
        check!(r.qp_num == want_qp, "completion names QP {} expected {want_qp}", r.qp_num);
        check!(b.read(i * 1024, 10)? == [i as u8 + 1; 10], "SRQ buffer {i} has the wrong data");
    }
    let _ = qp2.destroy();
    Ok(())
}

fn srq_limit(env: &Env) -> CaseResult {
    let mut sb = Spec::new(env, QpType::Rc);
    sb.srq = true;
    sb.cap.max_recv_wr = 16;
    let (a, b) = connect(env, &Spec::new(env, QpType::Rc), &sb)?;
    let srq = b.srq.clone().expect("spec asked for an SRQ");
    let srqn = srq.handle();
    check!(srq.arm_limit(10_000).is_err(), "SRQ limit above max_wr accepted");
    for i in 0..6u64 {
        srq.post_recv(&[RecvWr { wr_id: i, sg_list: vec![b.sge(0, 64)] }])?;
    }
    srq.arm_limit(3)?;
    let is_limit = |e: &AsyncEvent| *e == AsyncEvent::SrqLimitReached { srqn };
    for i in 0..6u64 {
        a.post(wr(i, SendOp::Send, vec![a.sge(0, 8)]))?;
        ok(env, &a.scq, "SEND to an SRQ QP")?;
        ok(env, &b.rcq, "RECV from the SRQ")?;
        let left = 5 - i;
        let ev = wait_event(&b.ctx, Duration::from_millis(if left == 2 { 2000 } else { 30 }), is_limit);
        match (left, ev) {
            (2, None) => fail!("no SrqLimitReached after the SRQ fell to 2 WQEs (limit 3)"),
            (2, Some(_)) => {}
            (l, Some(_)) if l >= 3 => fail!("SrqLimitReached with {l} WQEs left (limit 3)"),
            (l, Some(_)) => fail!("SrqLimitReached again with {l} WQEs left: the limit must disarm after firing"),
            (_, None) => {}
        }
    }
    Ok(())
}
