//! RNR NAKs with and without retry, transport retry exhaustion, and
//! recovery from loss, duplication and reordering.

use std::time::{Duration, Instant};

use verbs_api::{QpState, QpType, RecvWr, SendOp, WcStatus};

use super::{case, Case};
use crate::kit::{connect, expect, ok, pattern, quiet, wait_state, wr, CaseResult, Env, Side, Spec};
use crate::target::Faults;
use crate::{check, fail};

const RNR: &str = "IBTA Vol 1 ch. 9 (RNR NAK, RNR retry count; 7 = retry forever; RNR NAK timer)";
const RETRY: &str = "IBTA Vol 1 ch. 9 (local ACK timeout, transport retry count exceeded)";

pub fn cases() -> Vec<Case> {
    vec![
        case("rnr.retry_zero", RNR, rnr_zero),
        case("rnr.retry_limited", RNR, rnr_limited),
        case("rnr.retry_infinite_late_recv", RNR, rnr_infinite),
        case("retry.peer_destroyed", RETRY, peer_destroyed),
        case("retry.total_loss", RETRY, total_loss),
        case(
            "retry.recovers_from_faults",
            "IBTA Vol 1 ch. 9 (RC: go-back-N, duplicate detection, responder resources)",
            recovers,
        ),
    ]
}

fn spec(env: &Env, rnr_retry: u8, min_rnr_timer: u8) -> Spec {
    let mut s = Spec::new(env, QpType::Rc);
    s.opts.rnr_retry = rnr_retry;
    s.opts.min_rnr_timer = min_rnr_timer;
    s
}

fn rnr_zero(env: &Env) -> CaseResult {
    let ops = [SendOp::Send, SendOp::RdmaWriteWithImm { remote_addr: 0, rkey: 0, imm: 1 }];
    for op in ops {
        let (a, b) = connect(env, &spec(env, 0, 1), &spec(env, 0, 1))?;
        let op = match op {
            SendOp::RdmaWriteWithImm { imm, .. } => {
                SendOp::RdmaWriteWithImm { remote_addr: b.mr.addr(), rkey: b.mr.rkey(), imm }
            }
            o => o,
        };
        a.post(wr(1, op, vec![a.sge(0, 100)]))?;
        expect(env, &a.scq, WcStatus::RnrRetryExcErr, &format!("{op:?} to a QP without receives, rnr_retry 0"))?;
        wait_state(env, &a.qp, QpState::Err, "requester after RNR retry exhaustion")?;
        // RNR is not an error for the responder: it stays operational.
        check!(b.state()? == QpState::Rts, "responder went to {:?} after sending an RNR NAK", b.state()?);
        check!(b.rcq.poll(4).is_empty(), "responder completed something");
    }
    Ok(())
}

fn rnr_limited(env: &Env) -> CaseResult {
    // Timer code 16 = 1.92 ms (the RNR NAK timer table); 3 retries.
    let (a, _b) = connect(env, &spec(env, 3, 16), &spec(env, 3, 16))?;
    let t = Instant::now();
    a.post(wr(1, SendOp::Send, vec![a.sge(0, 8)]))?;
    expect(env, &a.scq, WcStatus::RnrRetryExcErr, "SEND with rnr_retry 3, never a receive")?;
    let took = t.elapsed();
    // Loss and reordering only make it longer. Duplication is left out: a
    // duplicated request draws two RNR NAKs for one attempt, and a device
    // may (softrdma does) spend a retry on each.
    if env.faults.dup == 0.0 {
        check!(took >= Duration::from_micros(3 * 1920), "3 RNR retries of >= 1.92 ms took only {took:?}");
    }
    Ok(())
}

fn rnr_infinite(env: &Env) -> CaseResult {
    // Timer code 12 = 0.64 ms; rnr_retry 7 = retry forever.
    let (a, b) = connect(env, &spec(env, 7, 12), &spec(env, 7, 12))?;
    let data = pattern(1, 3000);
    a.mr.write(0, &data)?;
    a.post(wr(1, SendOp::Send, vec![a.sge(0, 3000)]))?;
    quiet(&a.scq, Duration::from_millis(150), "SEND waiting for a receive (rnr_retry 7)")?;
    b.post_recv(5, 0, 4096)?;
    ok(env, &a.scq, "SEND after the late post_recv")?;
    let r = ok(env, &b.rcq, "late receive")?;
    check!(r.wr_id == 5 && r.byte_len == 3000 && b.read(0, 3000)? == data, "late receive got {r:?}");
    Ok(())
}

/// timeout 10 ≈ 4.2 ms, retry_cnt 2.
fn short_retry(env: &Env) -> Spec {
    let mut s = Spec::new(env, QpType::Rc);
    s.opts.timeout = 10;
    s.opts.retry_cnt = 2;
    s
}

fn exhaust(env: &Env, a: &Side, what: &str) -> CaseResult {
    a.post(wr(1, SendOp::Send, vec![a.sge(0, 64)]))?;
    a.post(wr(2, SendOp::RdmaWrite { remote_addr: 0, rkey: 0 }, vec![]))?;
    let t = Instant::now();
    expect(env, &a.scq, WcStatus::RetryExcErr, what)?;
    let took = t.elapsed();
    // Three local ACK timeouts (first try + 2 retries) of >= 4.19 ms each.
    check!(took >= Duration::from_millis(12), "{what}: retries exhausted after only {took:?}");
    let wc = expect(env, &a.scq, WcStatus::WrFlushErr, &format!("{what}: the WR behind it"))?;
    check!(wc.wr_id == 2, "flushed wr_id {}", wc.wr_id);
    wait_state(env, &a.qp, QpState::Err, &format!("{what}: requester QP"))
}

fn peer_destroyed(env: &Env) -> CaseResult {
    let (a, b) = connect(env, &short_retry(env), &short_retry(env))?;
    // One exchange first, so the path is known to work.
    b.post_recv(1, 0, 64)?;
    a.post(wr(9, SendOp::Send, vec![a.sge(0, 8)]))?;
    ok(env, &a.scq, "SEND before the peer goes away")?;
    b.qp.destroy()?;
    exhaust(env, &a, "SEND to a destroyed QP")
}

fn total_loss(env: &Env) -> CaseResult {
    let (a, _b) = connect(env, &short_retry(env), &short_retry(env))?;
    env.with_faults(Faults { drop: 1.0, ..Faults::default() }, || exhaust(env, &a, "SEND with 100 % loss"))
}

fn recovers(env: &Env) -> CaseResult {
    let f = Faults { drop: 0.08, dup: 0.08, reorder: 0.08, corrupt: 0.04 };
    let mut s = Spec::new(env, QpType::Rc);
    s.len = 1 << 20;
    s.opts.timeout = 12;
    s.opts.max_rd_atomic = 4;
    let (a, b) = connect(env, &s, &s)?;
    let m = env.mtu_bytes();
    env.with_faults(f, || {
        let src = pattern(8, 256 << 10);
        a.mr.write(0, &src)?;
        for i in 0..16u64 {
            b.qp.post_recv(&[RecvWr { wr_id: i, sg_list: vec![b.sge(i as usize * 8 * m, 8 * m)] }])?;
        }
        let mut wrs = Vec::new();
        for i in 0..16u64 {
            let off = i as usize * 8 * m;
            let n = 7 * m + i as usize;
            wrs.push(wr(4 * i, SendOp::Send, vec![a.sge(off, n)]));
            let dst = b.mr.addr() + (512 << 10) + off as u64;
            wrs.push(wr(4 * i + 1, SendOp::RdmaWrite { remote_addr: dst, rkey: b.mr.rkey() }, vec![a.sge(off, n)]));
            let back = a.sge((512 << 10) + off, n);
            wrs.push(wr(4 * i + 2, SendOp::RdmaRead { remote_addr: dst, rkey: b.mr.rkey() }, vec![back]));
            let word = b.mr.addr() + (1 << 20) - 8;
            wrs.push(wr(
                4 * i + 3,
                SendOp::AtomicFetchAdd { remote_addr: word, rkey: b.mr.rkey(), add: 1 },
                vec![a.sge((1 << 20) - 8 - 8 * i as usize, 8)],
            ));
        }
        a.qp.post_send(&wrs, None)?;
        for k in 0..64u64 {
            let wc = ok(env, &a.scq, "WR under faults")?;
            check!(wc.wr_id == k, "completion #{k} is wr_id {}", wc.wr_id);
        }
        for i in 0..16u64 {
            let r = ok(env, &b.rcq, "RECV under faults")?;
            let off = i as usize * 8 * m;
            let n = 7 * m + i as usize;
            check!(r.wr_id == i && r.byte_len as usize == n, "receive #{i}: {r:?}");
            check!(b.read(off, n)? == src[off..off + n], "SEND {i} corrupted under faults");
            check!(b.read((512 << 10) + off, n)? == src[off..off + n], "WRITE {i} corrupted under faults");
            check!(a.read((512 << 10) + off, n)? == src[off..off + n], "READ {i} corrupted under faults");
        }
        // Exactly once: 16 FETCH_ADDs (duplicates answered from the responder resources).
        let word = b.read((1 << 20) - 8, 8)?;
        let v = u64::from_ne_bytes(word.try_into().expect("8"));
        if v != 16 {
            fail!("16 FETCH_ADDs under duplication/loss left {v} (an atomic executed twice or lost)");
        }
        Ok(())
    })
}
