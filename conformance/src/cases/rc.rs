//! Every RC opcode, at the sizes where segmentation changes (0, 1, MTU−1,
//! MTU, MTU+1, several MTUs, multi-MB), with the data and the completions
//! checked on both sides.

use verbs_api::{AccessFlags, QpType, RecvWr, SendFlags, SendOp, SendWr, WcFlags, WcOpcode, WcStatus, WorkCompletion};

use super::{case, Case};
use crate::kit::{
    connect, expect, expect_err, expect_nak, nak_spec, ok, pair, pattern, sge, wr, CaseResult, Env, Side, Spec, Stop,
    EINVAL, ENOMEM,
};
use crate::{check, fail};

const RC: &str = "IBTA Vol 1 ch. 9 (RC service, opcodes, segmentation by path MTU)";

pub fn cases() -> Vec<Case> {
    vec![
        case("rc.send.sizes", RC, send_sizes),
        case("rc.send_imm", "IBTA Vol 1 ch. 9 (SEND with Immediate: ImmDt delivered in the CQE)", send_imm),
        case(
            "rc.send_inv",
            "IBTA Vol 1 ch. 9, ch. 10 (SEND with Invalidate: IETH, remote R_Key invalidated)",
            send_inv,
        ),
        case("rc.write.sizes", "IBTA Vol 1 ch. 9 (RDMA WRITE: RETH, First/Middle/Last/Only)", write_sizes),
        case("rc.write_imm", "IBTA Vol 1 ch. 9 (RDMA WRITE with Immediate consumes a receive WQE)", write_imm),
        case("rc.read.sizes", "IBTA Vol 1 ch. 9 (RDMA READ: one PSN per response packet, READ > MTU)", read_sizes),
        case("rc.atomic.fetch_add", "IBTA Vol 1 ch. 9 (FetchAdd: AtomicETH, AtomicAckETH original value)", fetch_add),
        case("rc.atomic.cmp_swap", "IBTA Vol 1 ch. 9 (CmpSwap: swap iff equal, original value returned)", cmp_swap),
        case(
            "rc.atomic.misaligned",
            "IBTA Vol 1 ch. 9 (atomic VA must be 8-byte aligned: NAK Invalid Request)",
            atomic_misaligned,
        ),
        case(
            "rc.atomic.post_checks",
            "IBTA Vol 1 ch. 10, ch. 11 (atomics: one 8-byte local buffer)",
            atomic_post_checks,
        ),
        case("rc.inline", "IBTA Vol 1 ch. 11 (Post Send: inline data); ibv_post_send(3) IBV_SEND_INLINE", inline),
        case("rc.multi_sge", "IBTA Vol 1 ch. 10 (scatter/gather lists)", multi_sge),
        case("rc.ordering", "IBTA Vol 1 ch. 10 (completions in work-request order per queue)", ordering),
        case("rc.unsignaled", "IBTA Vol 1 ch. 10 (selective signaling)", unsignaled),
        case(
            "rc.recv_too_small",
            "IBTA Vol 1 ch. 9 (responder length error: NAK Invalid Request), ch. 10 (Local Length Error)",
            recv_too_small,
        ),
        case("rc.queue_limits", "IBTA Vol 1 ch. 11 (Post Send/Receive: queue full, too many SGEs)", queue_limits),
        case("rc.psn_wrap", "IBTA Vol 1 ch. 9 (PSN arithmetic modulo 2^24)", psn_wrap),
        case("rc.read.many_outstanding", "IBTA Vol 1 ch. 9 (responder resources, max_rd_atomic)", many_reads),
        case("rc.ipv6_gid", "IBTA Vol 1 Annex A17 (RoCEv2 over IPv6)", ipv6),
        case("rc.loopback", "IBTA Vol 1 ch. 9 (RC between two QPs of one port)", loopback),
        case(
            "rc.access_change_in_rts",
            "IBTA Vol 1 ch. 10, ch. 11 (RTS→RTS may change the QP access flags)",
            access_change,
        ),
    ]
}

const MIB4: usize = 4 << 20;

/// 0, 1, MTU−1, MTU, MTU+1, 3·MTU+7, 4 MiB.
pub(crate) fn sizes(env: &Env) -> Vec<usize> {
    let m = env.mtu_bytes();
    vec![0, 1, m - 1, m, m + 1, 3 * m + 7, MIB4]
}

fn check_send_wc(wc: &WorkCompletion, op: WcOpcode, len: usize, what: &str) -> CaseResult {
    check!(wc.opcode == op, "{what}: send completion opcode {:?}, expected {op:?}", wc.opcode);
    check!(wc.byte_len as usize == len, "{what}: send completion byte_len {} expected {len}", wc.byte_len);
    Ok(())
}

fn send_sizes(env: &Env) -> CaseResult {
    let (a, b) = pair(env, QpType::Rc, MIB4 + 4096)?;
    for (i, n) in sizes(env).into_iter().enumerate() {
        let data = pattern(i as u64, n);
        a.mr.write(0, &data)?;
        // A guard byte after the message must stay untouched.
        b.mr.write(n, &[0xa5])?;
        b.post_recv(100 + i as u64, 0, MIB4 + 1)?;
        a.post(wr(i as u64, SendOp::Send, vec![a.sge(0, n)]))?;
        let s = ok(env, &a.scq, &format!("SEND {n} B"))?;
        check_send_wc(&s, WcOpcode::Send, n, &format!("SEND {n} B"))?;
        check!(s.wr_id == i as u64 && s.qp_num == a.qp.qp_num(), "SEND wc ids: {s:?}");
        let r = ok(env, &b.rcq, &format!("RECV {n} B"))?;
        check!(r.opcode == WcOpcode::Recv, "RECV opcode {:?}", r.opcode);
        check!(r.byte_len as usize == n, "RECV of {n} B: byte_len {}", r.byte_len);
        check!(r.wr_id == 100 + i as u64 && r.qp_num == b.qp.qp_num(), "RECV wc ids: {r:?}");
        check!(r.src_qp == a.qp.qp_num() || r.src_qp == 0, "RECV src_qp {} (RC: the peer QPN)", r.src_qp);
        check!(!r.wc_flags.contains(WcFlags::WITH_IMM), "plain SEND flagged WITH_IMM");
        check!(b.read(0, n)? == data, "SEND of {n} B: received bytes differ");
        check!(b.read(n, 1)? == [0xa5], "SEND of {n} B wrote past its length");
    }
    Ok(())
}

fn send_imm(env: &Env) -> CaseResult {
    let (a, b) = pair(env, QpType::Rc, 1 << 16)?;
    let m = env.mtu_bytes();
    for (i, (n, imm)) in [(0usize, 0u32), (5, 0xdead_beef), (m + 1, 0x0102_0304)].into_iter().enumerate() {
        let data = pattern(7 + i as u64, n);
        a.mr.write(0, &data)?;
        b.post_recv(i as u64, 0, 1 << 16)?;
        a.post(wr(i as u64, SendOp::SendWithImm { imm }, vec![a.sge(0, n)]))?;
        check_send_wc(&ok(env, &a.scq, "SEND_WITH_IMM")?, WcOpcode::Send, n, "SEND_WITH_IMM")?;
        let r = ok(env, &b.rcq, "RECV of SEND_WITH_IMM")?;
        check!(r.opcode == WcOpcode::Recv && r.byte_len as usize == n, "RECV {r:?} for {n} B");
        check!(r.wc_flags.contains(WcFlags::WITH_IMM), "WITH_IMM flag missing: {r:?}");
        check!(r.imm_data == imm, "imm_data {:#x}, sent {imm:#x}", r.imm_data);
        check!(b.read(0, n)? == data, "payload differs");
    }
    Ok(())
}

fn send_inv(env: &Env) -> CaseResult {
    let (a, b) = connect(env, &nak_spec(env), &nak_spec(env))?;
    let victim = b.reg(4096, AccessFlags::LOCAL_WRITE | AccessFlags::REMOTE_WRITE)?;
    // The R_Key works before…
    a.mr.write(0, b"before")?;
    a.post(wr(1, SendOp::RdmaWrite { remote_addr: victim.addr(), rkey: victim.rkey() }, vec![a.sge(0, 6)]))?;
    ok(env, &a.scq, "WRITE through the R_Key before invalidation")?;
    let data = pattern(3, 2000);
    a.mr.write(0, &data)?;
    b.post_recv(2, 0, 4096)?;
    a.post(wr(2, SendOp::SendWithInv { invalidate_rkey: victim.rkey() }, vec![a.sge(0, 2000)]))?;
    check_send_wc(&ok(env, &a.scq, "SEND_WITH_INV")?, WcOpcode::Send, 2000, "SEND_WITH_INV")?;
    let r = ok(env, &b.rcq, "RECV of SEND_WITH_INV")?;
    check!(r.wc_flags.contains(WcFlags::WITH_INV), "WITH_INV flag missing: {r:?}");
    check!(
        r.invalidated_rkey == victim.rkey(),
        "invalidated_rkey {:#x}, expected {:#x}",
        r.invalidated_rkey,
        victim.rkey()
    );
    check!(r.byte_len == 2000 && b.read(0, 2000)? == data, "payload of SEND_WITH_INV");
    // …and not after: a WRITE through it is a remote access error.
    a.post(wr(3, SendOp::RdmaWrite { remote_addr: victim.addr(), rkey: victim.rkey() }, vec![a.sge(0, 6)]))?;
    expect_nak(env, &a.scq, WcStatus::RemAccessErr, "WRITE through an invalidated R_Key")?;
    Ok(())
}

fn write_sizes(env: &Env) -> CaseResult {
    let (a, b) = pair(env, QpType::Rc, MIB4 + 8192)?;
    for (i, n) in sizes(env).into_iter().enumerate() {
        let data = pattern(20 + i as u64, n);
        a.mr.write(0, &data)?;
        let at = 4096 + i; // unaligned destinations too
        b.mr.write(at - 1, &[0x5a])?;
        b.mr.write(at + n, &[0xa5])?;
        let op = SendOp::RdmaWrite { remote_addr: b.mr.addr() + at as u64, rkey: b.mr.rkey() };
        a.post(wr(i as u64, op, vec![a.sge(0, n)]))?;
        let s = ok(env, &a.scq, &format!("WRITE {n} B"))?;
        check_send_wc(&s, WcOpcode::RdmaWrite, n, &format!("WRITE {n} B"))?;
        check!(b.read(at, n)? == data, "WRITE of {n} B: remote bytes differ");
        check!(b.read(at - 1, 1)? == [0x5a] && b.read(at + n, 1)? == [0xa5], "WRITE of {n} B touched neighbours");
    }
    check!(b.rcq.poll(4).is_empty(), "RDMA WRITE produced a receive completion");
    // Zero-length WRITE with an invalid R_Key: IBTA ch. 9 — no R_Key check for a 0-byte RETH.
    a.post(wr(99, SendOp::RdmaWrite { remote_addr: 0, rkey: 0xdead_0000 }, vec![]))?;
    ok(env, &a.scq, "zero-length WRITE with a junk R_Key")?;
    Ok(())
}

fn write_imm(env: &Env) -> CaseResult {
    let (a, b) = pair(env, QpType::Rc, 1 << 16)?;
    let m = env.mtu_bytes();
    for (i, n) in [0usize, 1, m, 2 * m + 1].into_iter().enumerate() {
        let data = pattern(40 + i as u64, n);
        a.mr.write(0, &data)?;
        // The receive WQE's buffer is not where the data goes.
        b.qp.post_recv(&[RecvWr { wr_id: 50 + i as u64, sg_list: vec![] }])?;
        let imm = 0x1000 + i as u32;
        let op = SendOp::RdmaWriteWithImm { remote_addr: b.mr.addr() + 8192, rkey: b.mr.rkey(), imm };
        a.post(wr(i as u64, op, vec![a.sge(0, n)]))?;
        check_send_wc(&ok(env, &a.scq, "WRITE_WITH_IMM")?, WcOpcode::RdmaWrite, n, "WRITE_WITH_IMM")?;
        let r = ok(env, &b.rcq, "RECV_RDMA_WITH_IMM")?;
        check!(r.opcode == WcOpcode::RecvRdmaWithImm, "opcode {:?}, expected RecvRdmaWithImm", r.opcode);
        check!(r.wr_id == 50 + i as u64, "consumed WQE {} expected {}", r.wr_id, 50 + i);
        check!(r.wc_flags.contains(WcFlags::WITH_IMM) && r.imm_data == imm, "imm: {r:?}");
        check!(r.byte_len as usize == n, "byte_len {} for a {n}-byte WRITE_WITH_IMM", r.byte_len);
        check!(b.read(8192, n)? == data, "WRITE_WITH_IMM data differs");
    }
    Ok(())
}

fn read_sizes(env: &Env) -> CaseResult {
    let (a, b) = pair(env, QpType::Rc, MIB4 + 8192)?;
    let src = pattern(77, MIB4 + 64);
    b.mr.write(0, &src)?;
    for (i, n) in sizes(env).into_iter().enumerate() {
        let off = 3 * i; // unaligned sources too
        a.mr.write(n, &[0xa5])?;
        let op = SendOp::RdmaRead { remote_addr: b.mr.addr() + off as u64, rkey: b.mr.rkey() };
        a.post(wr(i as u64, op, vec![a.sge(0, n)]))?;
        let s = ok(env, &a.scq, &format!("READ {n} B"))?;
        check_send_wc(&s, WcOpcode::RdmaRead, n, &format!("READ {n} B"))?;
        check!(a.read(0, n)? == src[off..off + n], "READ of {n} B: local bytes differ");
        check!(a.read(n, 1)? == [0xa5], "READ of {n} B wrote past its length");
    }
    // Zero-length READ with a junk R_Key: IBTA ch. 9 — no R_Key check for a 0-byte RETH.
    a.post(wr(99, SendOp::RdmaRead { remote_addr: 0, rkey: 0xdead_0000 }, vec![]))?;
    ok(env, &a.scq, "zero-length READ with a junk R_Key")?;
    Ok(())
}

fn atomic_pair(env: &Env) -> Result<(Side, Side), Stop> {
    pair(env, QpType::Rc, 4096)
}

fn atomic(a: &Side, b: &Side, id: u64, off: u64, op_of: impl Fn(u64, u32) -> SendOp) -> CaseResult {
    a.post(wr(id, op_of(b.mr.addr() + off, b.mr.rkey()), vec![a.sge(0, 8)]))
}

fn u64_at(s: &Side, off: usize) -> Result<u64, Stop> {
    let v = s.read(off, 8)?;
    Ok(u64::from_ne_bytes(v.try_into().expect("8 bytes")))
}

fn fetch_add(env: &Env) -> CaseResult {
    let (a, b) = atomic_pair(env)?;
    b.mr.write(64, &u64::MAX.to_ne_bytes())?;
    let mut expect_orig = u64::MAX;
    for (i, add) in [1u64, 5, 0x1_0000_0000, 0].into_iter().enumerate() {
        atomic(&a, &b, i as u64, 64, |remote_addr, rkey| SendOp::AtomicFetchAdd { remote_addr, rkey, add })?;
        let wc = ok(env, &a.scq, "FETCH_ADD")?;
        check!(wc.opcode == WcOpcode::FetchAdd, "opcode {:?}", wc.opcode);
        let got = u64_at(&a, 0)?;
        check!(got == expect_orig, "FETCH_ADD #{i} returned {got:#x}, expected the original {expect_orig:#x}");
        expect_orig = expect_orig.wrapping_add(add);
        check!(u64_at(&b, 64)? == expect_orig, "remote value {:#x}, expected {expect_orig:#x}", u64_at(&b, 64)?);
    }
    check!(u64_at(&b, 56)? == 0 && u64_at(&b, 72)? == 0, "FETCH_ADD touched neighbouring words");
    Ok(())
}

fn cmp_swap(env: &Env) -> CaseResult {
    let (a, b) = atomic_pair(env)?;
    b.mr.write(8, &42u64.to_ne_bytes())?;
    // Mismatch: no swap, original returned.
    atomic(&a, &b, 1, 8, |remote_addr, rkey| SendOp::AtomicCmpSwp { remote_addr, rkey, compare: 41, swap: 7 })?;
    let wc = ok(env, &a.scq, "CMP_SWAP (mismatch)")?;
    check!(wc.opcode == WcOpcode::CompSwap, "opcode {:?}", wc.opcode);
    check!(
        u64_at(&a, 0)? == 42 && u64_at(&b, 8)? == 42,
        "mismatching CMP_SWAP: got {} remote {}",
        u64_at(&a, 0)?,
        u64_at(&b, 8)?
    );
    // Match: swapped.
    atomic(&a, &b, 2, 8, |remote_addr, rkey| SendOp::AtomicCmpSwp {
        remote_addr,
        rkey,
        compare: 42,
        swap: u64::MAX - 1,
    })?;
    ok(env, &a.scq, "CMP_SWAP (match)")?;
    check!(u64_at(&a, 0)? == 42 && u64_at(&b, 8)? == u64::MAX - 1, "matching CMP_SWAP: remote {:#x}", u64_at(&b, 8)?);
    Ok(())
}

fn atomic_misaligned(env: &Env) -> CaseResult {
    let (a, b) = connect(env, &nak_spec(env), &nak_spec(env))?;
    b.post_recv(5, 0, 64)?;
    b.mr.write(8, &9u64.to_ne_bytes())?;
    atomic(&a, &b, 1, 12, |remote_addr, rkey| SendOp::AtomicFetchAdd { remote_addr, rkey, add: 1 })?;
    expect_nak(env, &a.scq, WcStatus::RemInvReqErr, "FETCH_ADD at a VA not 8-byte aligned")?;
    check!(u64_at(&b, 8)? == 9 && u64_at(&b, 16)? == 0, "misaligned atomic modified memory");
    // The responder treats it as a class C error too: its QP goes to ERR.
    crate::kit::wait_state(env, &b.qp, verbs_api::QpState::Err, "responder after a misaligned atomic")?;
    expect(env, &b.rcq, WcStatus::WrFlushErr, "responder's posted receive")?;
    Ok(())
}

fn atomic_post_checks(env: &Env) -> CaseResult {
    let (a, b) = atomic_pair(env)?;
    let op = SendOp::AtomicFetchAdd { remote_addr: b.mr.addr(), rkey: b.mr.rkey(), add: 1 };
    expect_err(
        a.qp.post_send(&[wr(1, op, vec![a.sge(0, 4)])], None).map_err(|e| e.1),
        EINVAL,
        "atomic with a 4-byte buffer",
    )?;
    expect_err(a.qp.post_send(&[wr(1, op, vec![])], None).map_err(|e| e.1), EINVAL, "atomic without a buffer")?;
    check!(a.scq.wait(1, std::time::Duration::from_millis(20)).is_empty(), "refused posts completed");
    Ok(())
}

fn inline(env: &Env) -> CaseResult {
    let (a, b) = pair(env, QpType::Rc, 1 << 16)?;
    let max = a.spec.cap.max_inline_data as usize;
    for (i, n) in [1usize, 64, max].into_iter().enumerate() {
        let data = pattern(90 + i as u64, n);
        b.post_recv(i as u64, 0, 4096)?;
        let mut w = SendWr::new(i as u64, SendOp::Send, vec![]);
        w.flags = SendFlags::SIGNALED | SendFlags::INLINE;
        w.inline_data = Some(data.clone());
        a.post(w)?;
        ok(env, &a.scq, "inline SEND")?;
        let r = ok(env, &b.rcq, "RECV of inline SEND")?;
        check!(r.byte_len as usize == n && b.read(0, n)? == data, "inline SEND of {n} B arrived wrong");
    }
    // Inline WRITE: the data is copied at post time.
    let data = pattern(99, 100);
    let mut w = SendWr::new(9, SendOp::RdmaWrite { remote_addr: b.mr.addr() + 1000, rkey: b.mr.rkey() }, vec![]);
    w.flags = SendFlags::SIGNALED | SendFlags::INLINE;
    w.inline_data = Some(data.clone());
    a.post(w)?;
    ok(env, &a.scq, "inline WRITE")?;
    check!(b.read(1000, 100)? == data, "inline WRITE data differs");
    // More than max_inline_data is refused at post time.
    let mut w = SendWr::new(10, SendOp::Send, vec![]);
    w.flags = SendFlags::SIGNALED | SendFlags::INLINE;
    w.inline_data = Some(vec![0; max + 1]);
    expect_err(a.qp.post_send(&[w], None).map_err(|e| e.1), EINVAL, "inline data above max_inline_data")?;
    Ok(())
}

fn multi_sge(env: &Env) -> CaseResult {
    let (a, b) = pair(env, QpType::Rc, 1 << 16)?;
    let a2 = a.reg(8192, AccessFlags::LOCAL_WRITE)?;
    let b2 = b.reg(8192, AccessFlags::LOCAL_WRITE | AccessFlags::REMOTE_WRITE | AccessFlags::REMOTE_READ)?;
    let m = env.mtu_bytes();
    // Gather 3 pieces from 2 MRs (spanning a packet boundary), scatter into 3.
    let (p1, p2, p3) = (pattern(1, m - 3), pattern(2, 10), pattern(3, m + 5));
    a.mr.write(100, &p1)?;
    a2.write(0, &p2)?;
    a.mr.write(5000, &p3)?;
    let gather = vec![a.sge(100, p1.len()), sge(&a2, 0, p2.len()), a.sge(5000, p3.len())];
    let total = p1.len() + p2.len() + p3.len();
    let whole: Vec<u8> = [p1.clone(), p2.clone(), p3.clone()].concat();
    let scatter = vec![b.sge(0, 7), sge(&b2, 100, m), b.sge(9000, 4096)];
    b.qp.post_recv(&[RecvWr { wr_id: 1, sg_list: scatter }])?;
    a.post(wr(1, SendOp::Send, gather.clone()))?;
    ok(env, &a.scq, "3-SGE SEND")?;
    let r = ok(env, &b.rcq, "3-SGE RECV")?;
    check!(r.byte_len as usize == total, "byte_len {} expected {total}", r.byte_len);
    let mut got = b.read(0, 7)?;
    let mut mid = vec![0u8; m];
    b2.read(100, &mut mid)?;
    got.extend(mid);
    got.extend(b.read(9000, total - 7 - m)?);
    check!(got == whole, "scattered bytes differ from the gathered message");
    // WRITE gathered from 3 SGEs; READ scattered into 2.
    a.post(wr(2, SendOp::RdmaWrite { remote_addr: b2.addr() + 1, rkey: b2.rkey() }, gather))?;
    ok(env, &a.scq, "3-SGE WRITE")?;
    let mut w = vec![0u8; total];
    b2.read(1, &mut w)?;
    check!(w == whole, "3-SGE WRITE: remote bytes differ");
    let read_into = vec![a.sge(20000, 1000), sge(&a2, 4000, total - 1000)];
    a.post(wr(3, SendOp::RdmaRead { remote_addr: b2.addr() + 1, rkey: b2.rkey() }, read_into))?;
    ok(env, &a.scq, "2-SGE READ")?;
    let mut back = a.read(20000, 1000)?;
    let mut rest = vec![0u8; total - 1000];
    a2.read(4000, &mut rest)?;
    back.extend(rest);
    check!(back == whole, "2-SGE READ: local bytes differ");
    Ok(())
}

fn ordering(env: &Env) -> CaseResult {
    let mut s = Spec::new(env, QpType::Rc);
    s.cap.max_send_wr = 128;
    s.cap.max_recv_wr = 128;
    s.len = 1 << 20;
    let (a, b) = connect(env, &s, &s)?;
    let m = env.mtu_bytes();
    // 90 mixed WRs posted at once; every completion in posting order.
    let mut wrs = Vec::new();
    let mut sends = 0u64;
    for i in 0..90u64 {
        let n = (i as usize * 37) % (3 * m);
        let off = (i as usize % 8) * 4 * m;
        let op = match i % 5 {
            0 | 1 => {
                b.post_recv(1000 + sends, (sends as usize % 16) * 4 * m, 4 * m)?;
                sends += 1;
                SendOp::Send
            }
            2 => SendOp::RdmaWrite { remote_addr: b.mr.addr() + (512 << 10) + off as u64, rkey: b.mr.rkey() },
            3 => SendOp::RdmaRead { remote_addr: b.mr.addr() + (512 << 10) + off as u64, rkey: b.mr.rkey() },
            _ => SendOp::AtomicFetchAdd { remote_addr: b.mr.addr() + (1 << 19) - 8, rkey: b.mr.rkey(), add: 1 },
        };
        let len = if i % 5 == 4 { 8 } else { n };
        wrs.push(wr(i, op, vec![a.sge(off, len)]));
    }
    a.qp.post_send(&wrs, None)?;
    for i in 0..90u64 {
        let wc = ok(env, &a.scq, "mixed WR")?;
        check!(wc.wr_id == i, "send completion #{i} is wr_id {} (out of order)", wc.wr_id);
    }
    for j in 0..sends {
        let wc = ok(env, &b.rcq, "RECV")?;
        check!(wc.wr_id == 1000 + j, "receive completion #{j} is wr_id {}", wc.wr_id);
    }
    check!(u64_at(&b, (1 << 19) - 8)? == 18, "18 FETCH_ADDs gave {}", u64_at(&b, (1 << 19) - 8)?);
    Ok(())
}

fn unsignaled(env: &Env) -> CaseResult {
    let (a, b) = pair(env, QpType::Rc, 1 << 16)?;
    for i in 0..6u64 {
        let mut w = wr(i, SendOp::RdmaWrite { remote_addr: b.mr.addr(), rkey: b.mr.rkey() }, vec![a.sge(0, 64)]);
        if i % 3 != 2 {
            w.flags = SendFlags::NONE;
        }
        a.post(w)?;
    }
    for want in [2u64, 5] {
        let wc = ok(env, &a.scq, "signaled WRITE")?;
        check!(wc.wr_id == want, "completion for wr_id {} (only 2 and 5 were signaled)", wc.wr_id);
    }
    crate::kit::quiet(&a.scq, std::time::Duration::from_millis(30), "unsignaled WRITEs")?;
    Ok(())
}

fn recv_too_small(env: &Env) -> CaseResult {
    let (a, b) = connect(env, &nak_spec(env), &nak_spec(env))?;
    b.post_recv(1, 0, 100)?;
    b.post_recv(2, 0, 100)?;
    a.post(wr(1, SendOp::Send, vec![a.sge(0, 101)]))?;
    expect_nak(env, &a.scq, WcStatus::RemInvReqErr, "SEND one byte larger than the receive buffer")?;
    let r = expect(env, &b.rcq, WcStatus::LocLenErr, "receive WQE too small")?;
    check!(r.wr_id == 1, "length error reported on wr_id {}", r.wr_id);
    let r = expect(env, &b.rcq, WcStatus::WrFlushErr, "next receive WQE flushed")?;
    check!(r.wr_id == 2, "flushed wr_id {}", r.wr_id);
    // The same when the overflow shows only in a later packet of the message.
    let (a, b) = connect(env, &nak_spec(env), &nak_spec(env))?;
    let m = env.mtu_bytes();
    b.post_recv(3, 0, 2 * m + 10)?;
    a.post(wr(3, SendOp::Send, vec![a.sge(0, 3 * m)]))?;
    expect_nak(env, &a.scq, WcStatus::RemInvReqErr, "3-packet SEND into a 2-packet buffer")?;
    let r = expect(env, &b.rcq, WcStatus::LocLenErr, "receive WQE too small for the LAST packet")?;
    check!(r.wr_id == 3, "length error reported on wr_id {}", r.wr_id);
    Ok(())
}

fn queue_limits(env: &Env) -> CaseResult {
    let mut s = Spec::new(env, QpType::Rc);
    s.cap.max_send_wr = 4;
    s.cap.max_recv_wr = 4;
    s.cap.max_send_sge = 2;
    s.cap.max_recv_sge = 2;
    let (a, b) = connect(env, &s, &s)?;
    let q = a.qp.query()?;
    check!(q.cap.max_send_wr >= 4 && q.cap.max_send_sge >= 2, "query cap {:?}", q.cap);
    let three = vec![a.sge(0, 1), a.sge(1, 1), a.sge(2, 1)];
    if q.cap.max_send_sge < 3 {
        expect_err(
            a.qp.post_send(&[wr(1, SendOp::Send, three.clone())], None).map_err(|e| e.1),
            EINVAL,
            "3 SGEs, max 2",
        )?;
        expect_err(
            b.qp.post_recv(&[RecvWr { wr_id: 1, sg_list: three }]).map_err(|e| e.1),
            EINVAL,
            "3 receive SGEs, max 2",
        )?;
    }
    // IBTA Vol 1 ch. 9: a message is at most 2^31 bytes.
    let huge = vec![a.sge(0, 0x8000_0000), a.sge(0, 1)];
    if q.cap.max_send_sge >= 2 {
        expect_err(
            a.qp.post_send(&[wr(1, SendOp::Send, huge)], None).map_err(|e| e.1),
            EINVAL,
            "2^31 + 1 byte message",
        )?;
    }
    // Receive queue: the (cap+1)-th is refused, those before are posted; bad_wr names it.
    let n = q.cap.max_recv_wr as usize;
    let rs: Vec<RecvWr> = (0..=n as u64).map(|i| RecvWr { wr_id: i, sg_list: vec![b.sge(0, 8)] }).collect();
    match b.qp.post_recv(&rs) {
        Err((i, e)) if i == n && e.errno() == ENOMEM => {}
        Err((i, e)) => fail!("overfull receive queue: refused #{i} with {e}; expected #{n} with ENOMEM"),
        Ok(()) => fail!("{} receives posted to a queue of {n}", n + 1),
    }
    // Send queue, with the peer unable to answer (not yet receiving): a
    // full queue refuses the next post.
    let blocker = Side::new(&env.b, &s)?;
    let sq = Side::new(&env.a, &s)?;
    crate::kit::bring_up(env, &sq, &blocker)?;
    let n = sq.qp.query()?.cap.max_send_wr as usize;
    let ws: Vec<SendWr> = (0..=n as u64).map(|i| wr(i, SendOp::Send, vec![sq.sge(0, 8)])).collect();
    match sq.qp.post_send(&ws, None) {
        Err((i, e)) if i == n && e.errno() == ENOMEM => {}
        Err((i, e)) => fail!("overfull send queue: refused #{i} with {e}; expected #{n} with ENOMEM"),
        Ok(()) => fail!("{} sends posted to a queue of {n}", n + 1),
    }
    Ok(())
}

fn psn_wrap(env: &Env) -> CaseResult {
    let mut s = Spec::new(env, QpType::Rc);
    s.psn = 0xff_fffd;
    s.len = 1 << 16;
    let mut sb = s.clone();
    sb.psn = 0xff_fff0;
    let (a, b) = connect(env, &s, &sb)?;
    let m = env.mtu_bytes();
    for i in 0..4u64 {
        let data = pattern(i + 300, 5 * m + 1);
        a.mr.write(0, &data)?;
        b.post_recv(i, 0, 1 << 16)?;
        a.post(wr(i, SendOp::Send, vec![a.sge(0, data.len())]))?;
        ok(env, &a.scq, "SEND across the PSN wrap")?;
        ok(env, &b.rcq, "RECV across the PSN wrap")?;
        check!(b.read(0, data.len())? == data, "message {i} across the PSN wrap differs");
        let src = pattern(i + 400, 4 * m);
        b.mr.write(32768, &src)?;
        a.post(wr(
            i,
            SendOp::RdmaRead { remote_addr: b.mr.addr() + 32768, rkey: b.mr.rkey() },
            vec![a.sge(32768, 4 * m)],
        ))?;
        ok(env, &a.scq, "READ across the PSN wrap")?;
        check!(a.read(32768, 4 * m)? == src, "READ {i} across the PSN wrap differs");
    }
    Ok(())
}

fn many_reads(env: &Env) -> CaseResult {
    let mut s = Spec::new(env, QpType::Rc);
    s.len = 1 << 20;
    s.opts.max_rd_atomic = 4;
    let (a, b) = connect(env, &s, &s)?;
    let src = pattern(5, 1 << 19);
    b.mr.write(0, &src)?;
    let m = env.mtu_bytes();
    let n = 3 * m + 5;
    let wrs: Vec<SendWr> = (0..32u64)
        .map(|i| {
            let off = i as usize * n;
            wr(i, SendOp::RdmaRead { remote_addr: b.mr.addr() + off as u64, rkey: b.mr.rkey() }, vec![a.sge(off, n)])
        })
        .collect();
    a.qp.post_send(&wrs, None)?;
    for i in 0..32u64 {
        let wc = ok(env, &a.scq, "one of 32 outstanding READs")?;
        check!(wc.wr_id == i, "READ completion order: {} expected {i}", wc.wr_id);
    }
    check!(a.read(0, 32 * n)? == src[..32 * n], "32 READs: local bytes differ");
    Ok(())
}

fn ipv6(env: &Env) -> CaseResult {
    let find = |c: &std::sync::Arc<dyn verbs_api::Context>| -> Result<Option<u32>, Stop> {
        Ok(c.gid_table(1)?
            .iter()
            .find(|g| g.gid.to_ipv4().is_none() && !g.gid.to_ipv6().is_unicast_link_local())
            .map(|g| g.index))
    };
    let (Some(ia), Some(ib)) = (find(&env.a)?, find(&env.b)?) else {
        crate::skip!("no global IPv6 GID on both devices");
    };
    if ia != ib {
        crate::skip!("IPv6 GIDs at different indices ({ia}, {ib})");
    }
    let mut s = Spec::new(env, QpType::Rc);
    s.opts.sgid_index = ia as u8;
    let a = Side::new(&env.a, &s)?;
    let b = Side::new(&env.b, &s)?;
    for (x, y) in [(&a, &b), (&b, &a)] {
        let peer = y.info(ia as u8)?;
        verbs_api::helpers::to_init(&x.qp, &s.opts)?;
        verbs_api::helpers::to_rts(&x.qp, x.spec.psn, &peer, &s.opts)?;
    }
    let data = pattern(6, 3000);
    a.mr.write(0, &data)?;
    b.post_recv(1, 0, 4096)?;
    a.post(wr(1, SendOp::Send, vec![a.sge(0, 3000)]))?;
    ok(env, &a.scq, "SEND over IPv6")?;
    ok(env, &b.rcq, "RECV over IPv6")?;
    check!(b.read(0, 3000)? == data, "data over IPv6 differs");
    Ok(())
}

fn loopback(env: &Env) -> CaseResult {
    let s = Spec::new(env, QpType::Rc);
    let a = Side::new(&env.a, &s)?;
    let b = Side::new(&env.a, &s)?;
    crate::kit::bring_up(env, &a, &b)?;
    crate::kit::bring_up(env, &b, &a)?;
    let data = pattern(9, 5000);
    a.mr.write(0, &data)?;
    b.post_recv(1, 0, 8192)?;
    a.post(wr(1, SendOp::Send, vec![a.sge(0, 5000)]))?;
    ok(env, &a.scq, "loopback SEND")?;
    let r = ok(env, &b.rcq, "loopback RECV")?;
    check!(r.byte_len == 5000 && b.read(0, 5000)? == data, "loopback SEND: {r:?}");
    a.post(wr(2, SendOp::RdmaRead { remote_addr: b.mr.addr(), rkey: b.mr.rkey() }, vec![a.sge(8192, 5000)]))?;
    ok(env, &a.scq, "loopback READ")?;
    check!(a.read(8192, 5000)? == data, "loopback READ data differs");
    Ok(())
}

fn access_change(env: &Env) -> CaseResult {
    let (a, b) = connect(env, &nak_spec(env), &nak_spec(env))?;
    let w = |id| wr(id, SendOp::RdmaWrite { remote_addr: b.mr.addr(), rkey: b.mr.rkey() }, vec![a.sge(0, 8)]);
    a.post(w(1))?;
    ok(env, &a.scq, "WRITE while the responder allows it")?;
    let attr = verbs_api::QpAttr {
        qp_state: verbs_api::QpState::Rts,
        qp_access_flags: AccessFlags::LOCAL_WRITE | AccessFlags::REMOTE_READ,
        ..verbs_api::QpAttr::default()
    };
    let m = verbs_api::QpAttrMask::STATE | verbs_api::QpAttrMask::ACCESS_FLAGS;
    b.qp.modify(&attr, m, verbs_api::QpPath::default())?;
    check!(b.qp.query()?.qp_access_flags == attr.qp_access_flags, "access flags not applied");
    a.post(w(2))?;
    expect_nak(env, &a.scq, WcStatus::RemAccessErr, "WRITE after RTS→RTS removed REMOTE_WRITE")?;
    Ok(())
}
