//! Partitions: packets are accepted only when the P_Keys match (same low 15
//! bits, at least one full member). The target's P_Key tables must hold
//! 0x8001 and 0x8002 (full members) and 0x0001 (limited) — looked up with
//! query_pkey; what is missing SKIPs.

use std::time::Duration;

use verbs_api::{QpType, SendOp, SendWr};

use super::{case, Case};
use crate::kit::{ah_to, connect, expect, find_pkey, ok, pattern, quiet, wr, CaseResult, Env, Side, Spec, Stop};
use crate::{check, skip};

const PKEY: &str =
    "IBTA Vol 1 ch. 10 (partitioning: P_Key matching, full and limited membership); ch. 9 (BTH P_Key check)";

pub fn cases() -> Vec<Case> {
    vec![
        case("pkey.same_partition", PKEY, same_partition),
        case("pkey.mismatch_rc", PKEY, mismatch_rc),
        case("pkey.mismatch_ud", PKEY, mismatch_ud),
        case("pkey.limited_members", PKEY, limited_members),
    ]
}

/// The P_Key indices of `ka` on `a` and `kb` on `b`.
fn indices(env: &Env, ka: u16, kb: u16) -> Result<(u16, u16), Stop> {
    match (find_pkey(&env.a, ka)?, find_pkey(&env.b, kb)?) {
        (Some(i), Some(j)) => Ok((i, j)),
        _ => skip!("P_Key tables lack {ka:#06x} on {} or {kb:#06x} on {}", env.a.device_name(), env.b.device_name()),
    }
}

fn specs(env: &Env, t: QpType, ka: u16, kb: u16) -> Result<(Spec, Spec), Stop> {
    let (ia, ib) = indices(env, ka, kb)?;
    let mut sa = Spec::new(env, t);
    sa.opts.pkey_index = ia;
    // A mismatched RC connection must give up quickly.
    sa.opts.timeout = 10;
    sa.opts.retry_cnt = 2;
    let mut sb = sa.clone();
    sb.opts.pkey_index = ib;
    Ok((sa, sb))
}

fn rc_exchange(env: &Env, a: &Side, b: &Side) -> CaseResult {
    let data = pattern(4, 2000);
    a.mr.write(0, &data)?;
    b.post_recv(1, 0, 4096)?;
    a.post(wr(1, SendOp::Send, vec![a.sge(0, 2000)]))?;
    ok(env, &a.scq, "RC SEND within one partition")?;
    ok(env, &b.rcq, "RC RECV within one partition")?;
    check!(b.read(0, 2000)? == data, "data differs");
    Ok(())
}

fn ud_send(env: &Env, a: &Side, b: &Side) -> CaseResult {
    let ah = ah_to(env, a, b)?;
    let mut w = SendWr::new(1, SendOp::Send, vec![a.sge(0, 32)]);
    w.remote_qpn = b.qp.qp_num();
    w.remote_qkey = env.opts().qkey;
    a.qp.post_send(&[w], Some(&ah))?;
    ok(env, &a.scq, "UD SEND")?;
    Ok(())
}

fn same_partition(env: &Env) -> CaseResult {
    let (sa, sb) = specs(env, QpType::Rc, 0x8001, 0x8001)?;
    let (a, b) = connect(env, &sa, &sb)?;
    check!(a.qp.query()?.pkey_index == sa.opts.pkey_index, "query pkey_index {}", a.qp.query()?.pkey_index);
    rc_exchange(env, &a, &b)
}

fn mismatch_rc(env: &Env) -> CaseResult {
    let (sa, sb) = specs(env, QpType::Rc, 0x8001, 0x8002)?;
    let (a, b) = connect(env, &sa, &sb)?;
    b.post_recv(1, 0, 4096)?;
    a.post(wr(1, SendOp::Send, vec![a.sge(0, 100)]))?;
    expect(env, &a.scq, verbs_api::WcStatus::RetryExcErr, "RC SEND from partition 0x8001 to 0x8002 (must be dropped)")?;
    quiet(&b.rcq, Duration::from_millis(10), "receiver in another partition")?;
    Ok(())
}

fn mismatch_ud(env: &Env) -> CaseResult {
    let (sa, sb) = specs(env, QpType::Ud, 0x8001, 0x8002)?;
    let (a, b) = connect(env, &sa, &sb)?;
    b.post_recv(1, 0, 4096)?;
    ud_send(env, &a, &b)?;
    quiet(&b.rcq, Duration::from_millis(100), "UD datagram from partition 0x8001 to 0x8002")
}

fn limited_members(env: &Env) -> CaseResult {
    // Two limited members of one partition never talk…
    let (sa, sb) = specs(env, QpType::Ud, 0x0001, 0x0001)?;
    let (a, b) = connect(env, &sa, &sb)?;
    b.post_recv(1, 0, 4096)?;
    ud_send(env, &a, &b)?;
    quiet(&b.rcq, Duration::from_millis(100), "UD datagram between two limited members (0x0001)")?;
    // …a full and a limited member do (checked on RC, which is reliable).
    let (sa, sb) = specs(env, QpType::Rc, 0x8001, 0x0001)?;
    let (a, b) = connect(env, &sa, &sb)?;
    rc_exchange(env, &a, &b)
}
