//! Remote and local access errors with their completion status on both
//! sides: the requester completes the WR with REM_ACCESS_ERR (or
//! REM_INV_REQ_ERR) and its QP goes to ERR; the responder's QP goes to ERR
//! too (a class C error) and its posted receives flush.

use std::sync::Arc;

use verbs_api::{AccessFlags, Mr, QpState, SendOp, SendWr, WcStatus};

use super::{case, Case};
use crate::check;
use crate::kit::{connect, expect, expect_nak, nak_spec, pattern, wait_state, wr, CaseResult, Env, Side, Spec, Stop};

const CLASS_C: &str = "IBTA Vol 1 ch. 9 (NAK Remote Access Error; responder class C errors), ch. 10 (R_Key checks)";

pub fn cases() -> Vec<Case> {
    vec![
        case("access.bad_rkey", CLASS_C, bad_rkey),
        case("access.out_of_bounds", "IBTA Vol 1 ch. 10 (R_Key: VA and length within the region)", out_of_bounds),
        case(
            "access.mr_no_remote_write",
            "IBTA Vol 1 ch. 10 (memory region access rights: Remote Write)",
            no_remote_write,
        ),
        case(
            "access.mr_no_remote_read",
            "IBTA Vol 1 ch. 10 (memory region access rights: Remote Read)",
            no_remote_read,
        ),
        case(
            "access.mr_no_remote_atomic",
            "IBTA Vol 1 ch. 10 (memory region access rights: Remote Atomic)",
            no_remote_atomic,
        ),
        case("access.pd_mismatch", "IBTA Vol 1 ch. 10 (protection domains: MR and QP must share a PD)", pd_mismatch),
        case("access.qp_access_flags", "IBTA Vol 1 ch. 10, ch. 11 (QP remote access enables)", qp_access_flags),
        case("access.deregistered_rkey", "IBTA Vol 1 ch. 10 (a deregistered region's R_Key is invalid)", deregistered),
        case("access.local_bad_lkey", "IBTA Vol 1 ch. 10 (L_Key checks: Local Protection Error)", local_bad_lkey),
        case(
            "access.local_no_local_write",
            "IBTA Vol 1 ch. 10 (Local Write access; Local Protection Error), ch. 9 (NAK Remote Operational Error)",
            local_no_local_write,
        ),
    ]
}

#[derive(Clone, Copy, Debug)]
enum Op {
    Write,
    Read,
    Atomic,
}

fn op_wr(a: &Side, op: Op, remote_addr: u64, rkey: u32, len: usize) -> SendWr {
    match op {
        Op::Write => wr(1, SendOp::RdmaWrite { remote_addr, rkey }, vec![a.sge(0, len)]),
        Op::Read => wr(1, SendOp::RdmaRead { remote_addr, rkey }, vec![a.sge(0, len)]),
        Op::Atomic => wr(1, SendOp::AtomicFetchAdd { remote_addr, rkey, add: 1 }, vec![a.sge(0, 8)]),
    }
}

/// Connects a fresh pair (`b` built from `sb`), lets `target` pick the
/// remote region, posts `op` at `(va_off, len)` of it (with `rkey_of`), and
/// checks both sides: requester `want`, both QPs in ERR, the responder's
/// posted receive flushed, the remote bytes unchanged.
#[allow(clippy::too_many_arguments)]
fn remote_fault(
    env: &Env,
    what: &str,
    sb: &Spec,
    target: impl Fn(&Side) -> Result<Arc<dyn Mr>, Stop>,
    op: Op,
    va_off: i64,
    len: usize,
    rkey_of: impl Fn(&Arc<dyn Mr>) -> u32,
    want: WcStatus,
) -> CaseResult {
    let (a, b) = connect(env, &nak_spec(env), sb)?;
    let mr = target(&b)?;
    let before = pattern(11, mr.len());
    mr.write(0, &before)?;
    a.mr.write(0, &pattern(12, 4096))?;
    b.post_recv(77, 0, 64)?;
    let va = (mr.addr() as i64 + va_off) as u64;
    a.post(op_wr(&a, op, va, rkey_of(&mr), len))?;
    let wc = expect_nak(env, &a.scq, want, &format!("{what}: requester"))?;
    check!(wc.wr_id == 1, "{what}: error completion for wr_id {}", wc.wr_id);
    wait_state(env, &a.qp, QpState::Err, &format!("{what}: requester QP"))?;
    wait_state(env, &b.qp, QpState::Err, &format!("{what}: responder QP (class C error)"))?;
    let r = expect(env, &b.rcq, WcStatus::WrFlushErr, &format!("{what}: responder's posted receive"))?;
    check!(r.wr_id == 77, "{what}: flushed receive wr_id {}", r.wr_id);
    let mut after = vec![0u8; mr.len()];
    mr.read(0, &mut after)?;
    check!(after == before, "{what}: the remote region was modified");
    if matches!(op, Op::Read | Op::Atomic) {
        check!(a.read(0, 4096)? == pattern(12, 4096), "{what}: the requester's local buffer was written");
    }
    // Later work on the requester flushes.
    a.post(wr(2, SendOp::Send, vec![a.sge(0, 1)]))?;
    expect(env, &a.scq, WcStatus::WrFlushErr, &format!("{what}: WR posted after the error"))?;
    Ok(())
}

fn main_mr(b: &Side) -> Result<Arc<dyn Mr>, Stop> {
    Ok(b.mr.clone())
}

fn region(access: AccessFlags) -> impl Fn(&Side) -> Result<Arc<dyn Mr>, Stop> {
    move |b: &Side| b.reg(4096, access)
}

fn rc(env: &Env) -> Spec {
    let mut s = nak_spec(env);
    s.len = 4096;
    s
}

fn bad_rkey(env: &Env) -> CaseResult {
    for op in [Op::Write, Op::Read, Op::Atomic] {
        let what = format!("{op:?} with an R_Key that names no region");
        remote_fault(env, &what, &rc(env), main_mr, op, 0, 8, |m| m.rkey() ^ 0x00ff_ff00, WcStatus::RemAccessErr)?;
    }
    Ok(())
}

fn out_of_bounds(env: &Env) -> CaseResult {
    let cases: [(Op, i64, usize, &str); 6] = [
        (Op::Write, 4096 - 4, 8, "WRITE crossing the end"),
        (Op::Write, -1, 8, "WRITE starting one byte before the region"),
        (Op::Read, 4096 - 100, 101, "READ one byte past the end"),
        (Op::Read, 4096, 1, "READ just after the region"),
        (Op::Atomic, 4096, 8, "FETCH_ADD just after the region"),
        (Op::Write, 0, 4097, "WRITE one byte longer than the region"),
    ];
    for (op, off, len, what) in cases {
        remote_fault(env, what, &rc(env), main_mr, op, off, len, |m| m.rkey(), WcStatus::RemAccessErr)?;
    }
    Ok(())
}

fn no_remote_write(env: &Env) -> CaseResult {
    let r = region(AccessFlags::LOCAL_WRITE | AccessFlags::REMOTE_READ | AccessFlags::REMOTE_ATOMIC);
    remote_fault(
        env,
        "WRITE to an MR without REMOTE_WRITE",
        &rc(env),
        r,
        Op::Write,
        0,
        16,
        |m| m.rkey(),
        WcStatus::RemAccessErr,
    )
}

fn no_remote_read(env: &Env) -> CaseResult {
    let r = region(AccessFlags::LOCAL_WRITE | AccessFlags::REMOTE_WRITE | AccessFlags::REMOTE_ATOMIC);
    remote_fault(
        env,
        "READ from an MR without REMOTE_READ",
        &rc(env),
        r,
        Op::Read,
        0,
        16,
        |m| m.rkey(),
        WcStatus::RemAccessErr,
    )
}

fn no_remote_atomic(env: &Env) -> CaseResult {
    let r = region(AccessFlags::LOCAL_WRITE | AccessFlags::REMOTE_WRITE | AccessFlags::REMOTE_READ);
    remote_fault(
        env,
        "atomic on an MR without REMOTE_ATOMIC",
        &rc(env),
        r,
        Op::Atomic,
        0,
        8,
        |m| m.rkey(),
        WcStatus::RemAccessErr,
    )
}

fn pd_mismatch(env: &Env) -> CaseResult {
    for op in [Op::Write, Op::Read, Op::Atomic] {
        // The region belongs to another PD of the responder's device.
        let other_pd = env.b.alloc_pd()?;
        let mr = other_pd.reg_mr(4096, AccessFlags::all())?;
        let m2 = mr.clone();
        let r = remote_fault(
            env,
            &format!("{op:?} to an MR of another PD"),
            &rc(env),
            move |_| Ok(m2.clone()),
            op,
            0,
            8,
            |m| m.rkey(),
            WcStatus::RemAccessErr,
        );
        let _ = mr.deregister();
        let _ = other_pd.dealloc();
        r?;
    }
    Ok(())
}

fn qp_access_flags(env: &Env) -> CaseResult {
    let cases = [
        (AccessFlags::LOCAL_WRITE | AccessFlags::REMOTE_READ | AccessFlags::REMOTE_ATOMIC, Op::Write),
        (AccessFlags::LOCAL_WRITE | AccessFlags::REMOTE_WRITE | AccessFlags::REMOTE_ATOMIC, Op::Read),
        (AccessFlags::LOCAL_WRITE | AccessFlags::REMOTE_WRITE | AccessFlags::REMOTE_READ, Op::Atomic),
    ];
    for (access, op) in cases {
        let mut sb = rc(env);
        sb.opts.access = access;
        let what = format!("{op:?} to a QP whose access flags ({:#x}) lack it", access.0);
        remote_fault(env, &what, &sb, main_mr, op, 0, 8, |m| m.rkey(), WcStatus::RemAccessErr)?;
    }
    Ok(())
}

fn deregistered(env: &Env) -> CaseResult {
    for op in [Op::Write, Op::Read] {
        let r = |b: &Side| -> Result<Arc<dyn Mr>, Stop> {
            // A region registered and deregistered again; its R_Key is stale.
            let gone = b.pd.reg_mr(4096, AccessFlags::all())?;
            gone.deregister()?;
            // A live stand-in of the same size to compare contents with.
            let live = b.reg(4096, AccessFlags::all())?;
            Ok(Arc::new(Stale { live, rkey: gone.rkey(), addr: gone.addr() }) as Arc<dyn Mr>)
        };
        remote_fault(
            env,
            &format!("{op:?} through a deregistered R_Key"),
            &rc(env),
            r,
            op,
            0,
            8,
            |m| m.rkey(),
            WcStatus::RemAccessErr,
        )?;
    }
    Ok(())
}

/// Another region's bytes under a stale R_Key and address.
struct Stale {
    live: Arc<dyn Mr>,
    rkey: u32,
    addr: u64,
}

impl Mr for Stale {
    fn lkey(&self) -> u32 {
        self.live.lkey()
    }
    fn rkey(&self) -> u32 {
        self.rkey
    }
    fn addr(&self) -> u64 {
        self.addr
    }
    fn len(&self) -> usize {
        self.live.len()
    }
    fn write(&self, offset: usize, data: &[u8]) -> verbs_api::Result<()> {
        self.live.write(offset, data)
    }
    fn read(&self, offset: usize, out: &mut [u8]) -> verbs_api::Result<()> {
        self.live.read(offset, out)
    }
    fn deregister(&self) -> verbs_api::Result<()> {
        Ok(())
    }
}

fn local_bad_lkey(env: &Env) -> CaseResult {
    let (a, b) = connect(env, &rc(env), &rc(env))?;
    b.post_recv(1, 0, 64)?;
    let mut s = a.sge(0, 16);
    s.lkey ^= 0x00ff_ff00;
    a.post(wr(1, SendOp::Send, vec![s]))?;
    expect(env, &a.scq, WcStatus::LocProtErr, "SEND gathering through an invalid L_Key")?;
    wait_state(env, &a.qp, QpState::Err, "RC requester after a local protection error")?;
    // Nothing reached the peer.
    crate::kit::quiet(&b.rcq, std::time::Duration::from_millis(30), "peer of a failed gather")?;
    Ok(())
}

fn local_no_local_write(env: &Env) -> CaseResult {
    // A READ scattering into a region without LOCAL_WRITE: local protection error.
    let (a, b) = connect(env, &rc(env), &rc(env))?;
    let ro = a.reg(4096, AccessFlags::REMOTE_READ)?;
    a.post(wr(1, SendOp::RdmaRead { remote_addr: b.mr.addr(), rkey: b.mr.rkey() }, vec![crate::kit::sge(&ro, 0, 64)]))?;
    expect(env, &a.scq, WcStatus::LocProtErr, "READ into an MR without LOCAL_WRITE")?;
    wait_state(env, &a.qp, QpState::Err, "requester after a local protection error")?;
    // A SEND into a receive buffer without LOCAL_WRITE: the responder's
    // local protection error, NAKed as a remote operational error.
    let (a, b) = connect(env, &rc(env), &rc(env))?;
    let ro = b.reg(4096, AccessFlags::REMOTE_READ)?;
    b.qp.post_recv(&[verbs_api::RecvWr { wr_id: 5, sg_list: vec![crate::kit::sge(&ro, 0, 64)] }])?;
    a.post(wr(1, SendOp::Send, vec![a.sge(0, 16)]))?;
    expect_nak(env, &a.scq, WcStatus::RemOpErr, "SEND into a receive buffer without LOCAL_WRITE")?;
    let r = expect(env, &b.rcq, WcStatus::LocProtErr, "receive WQE naming an MR without LOCAL_WRITE")?;
    check!(r.wr_id == 5, "wr_id {}", r.wr_id);
    let mut got = [0u8; 16];
    ro.read(0, &mut got)?;
    check!(got == [0; 16], "data landed in a region without LOCAL_WRITE");
    Ok(())
}
