//! Unreliable Connected: the opcodes it has, the ones it has not, and what a
//! PSN gap does (the message in progress is dropped, never delivered partly,
//! and its receive WQE is used by the next message).

use std::time::Duration;

use verbs_api::{QpType, RecvWr, SendOp, WcFlags, WcOpcode};

use super::{case, Case};
use crate::kit::{expect_err, ok, pair, pattern, quiet, wr, CaseResult, Env, EINVAL};
use crate::target::Faults;
use crate::{check, fail};

pub fn cases() -> Vec<Case> {
    vec![
        case("uc.send_write", "IBTA Vol 1 ch. 9 (UC service: SEND, RDMA WRITE, with Immediate)", send_write),
        case(
            "uc.unsupported_ops",
            "IBTA Vol 1 ch. 9 (UC has no RDMA READ, atomics or SEND with Invalidate)",
            unsupported,
        ),
        case(
            "uc.no_receive_drops",
            "IBTA Vol 1 ch. 9 (UC responder without a receive WQE drops the message; no RNR)",
            no_recv,
        ),
        case(
            "uc.gap_drops_message",
            "IBTA Vol 1 ch. 9 (UC: PSN gap drops the partial message, resync on FIRST/ONLY)",
            gap,
        ),
    ]
}

fn send_write(env: &Env) -> CaseResult {
    env.require_clean("UC does not recover lost packets")?;
    let (a, b) = pair(env, QpType::Uc, (4 << 20) + 8192)?;
    // UC has no flow control: a message of thousands of packets may overflow
    // a real link's queues and be lost, legitimately. Stay within 64 packets.
    let m = env.mtu_bytes();
    for (i, n) in [0, 1, m - 1, m, m + 1, 3 * m + 7, 64 * m].into_iter().enumerate() {
        let data = pattern(i as u64 + 50, n);
        a.mr.write(0, &data)?;
        b.post_recv(i as u64, 0, 4 << 20)?;
        a.post(wr(i as u64, SendOp::SendWithImm { imm: i as u32 }, vec![a.sge(0, n)]))?;
        ok(env, &a.scq, "UC SEND_WITH_IMM")?;
        let r = ok(env, &b.rcq, "UC RECV")?;
        check!(r.opcode == WcOpcode::Recv && r.byte_len as usize == n, "UC RECV of {n} B: {r:?}");
        check!(r.wc_flags.contains(WcFlags::WITH_IMM) && r.imm_data == i as u32, "UC imm: {r:?}");
        check!(b.read(0, n)? == data, "UC SEND of {n} B differs");
        let at = 4096usize;
        a.post(wr(
            i as u64,
            SendOp::RdmaWrite { remote_addr: b.mr.addr() + at as u64, rkey: b.mr.rkey() },
            vec![a.sge(0, n)],
        ))?;
        ok(env, &a.scq, "UC WRITE")?;
        // UC WRITEs are not acknowledged: give the data a moment to land.
        let deadline = std::time::Instant::now() + env.timeout();
        while b.read(at, n)? != data {
            if std::time::Instant::now() > deadline {
                fail!("UC WRITE of {n} B did not land");
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    b.qp.post_recv(&[RecvWr { wr_id: 99, sg_list: vec![] }])?;
    let op = SendOp::RdmaWriteWithImm { remote_addr: b.mr.addr(), rkey: b.mr.rkey(), imm: 0xabcd };
    a.post(wr(99, op, vec![a.sge(0, 2 * env.mtu_bytes())]))?;
    ok(env, &a.scq, "UC WRITE_WITH_IMM")?;
    let r = ok(env, &b.rcq, "UC RECV_RDMA_WITH_IMM")?;
    check!(r.opcode == WcOpcode::RecvRdmaWithImm && r.imm_data == 0xabcd, "UC WRITE_WITH_IMM: {r:?}");
    Ok(())
}

fn unsupported(env: &Env) -> CaseResult {
    let (a, b) = pair(env, QpType::Uc, 4096)?;
    let (va, rk) = (b.mr.addr(), b.mr.rkey());
    for op in [
        SendOp::RdmaRead { remote_addr: va, rkey: rk },
        SendOp::AtomicFetchAdd { remote_addr: va, rkey: rk, add: 1 },
        SendOp::AtomicCmpSwp { remote_addr: va, rkey: rk, compare: 0, swap: 1 },
        SendOp::SendWithInv { invalidate_rkey: rk },
    ] {
        let len = if op.is_atomic() { 8 } else { 16 };
        expect_err(
            a.qp.post_send(&[wr(1, op, vec![a.sge(0, len)])], None).map_err(|e| e.1),
            EINVAL,
            &format!("{op:?} on UC"),
        )?;
    }
    quiet(&a.scq, Duration::from_millis(10), "refused UC posts")
}

fn no_recv(env: &Env) -> CaseResult {
    env.require_clean("UC delivery is checked")?;
    let (a, b) = pair(env, QpType::Uc, 1 << 16)?;
    a.mr.write(0, &pattern(1, 500))?;
    a.post(wr(1, SendOp::Send, vec![a.sge(0, 500)]))?;
    ok(env, &a.scq, "UC SEND with no receive posted (the requester completes)")?;
    quiet(&b.rcq, Duration::from_millis(50), "UC responder without a WQE")?;
    b.post_recv(2, 0, 4096)?;
    quiet(&b.rcq, Duration::from_millis(20), "the dropped UC message must not arrive later")?;
    let data = pattern(2, 700);
    a.mr.write(0, &data)?;
    a.post(wr(2, SendOp::Send, vec![a.sge(0, 700)]))?;
    ok(env, &a.scq, "UC SEND")?;
    let r = ok(env, &b.rcq, "UC RECV after a dropped message")?;
    check!(r.wr_id == 2 && r.byte_len == 700 && b.read(0, 700)? == data, "UC RECV: {r:?}");
    Ok(())
}

fn gap(env: &Env) -> CaseResult {
    let (a, b) = pair(env, QpType::Uc, 1 << 20)?;
    let m = env.mtu_bytes();
    let n = 3 * m; // three packets: FIRST, MIDDLE, LAST
    let msgs = 40u64;
    for i in 0..msgs {
        b.post_recv(1000 + i, i as usize * n, n)?;
    }
    b.post_recv(5000, 0, 16)?;
    for i in 0..msgs {
        a.mr.write(i as usize * n, &pattern(i, n))?;
    }
    let delivered = env.with_faults(Faults { drop: 0.3, ..Faults::default() }, || {
        for i in 0..msgs {
            a.post(wr(i, SendOp::SendWithImm { imm: i as u32 }, vec![a.sge(i as usize * n, n)]))?;
            ok(env, &a.scq, "UC SEND under 30 % loss (UC completes regardless)")?;
        }
        // Let the last frames land before the network is clean again.
        std::thread::sleep(Duration::from_millis(20));
        let mut got = Vec::new();
        while let Some(wc) = b.rcq.wait(1, Duration::from_millis(20)).first().copied() {
            got.push(wc);
        }
        Ok(got)
    })?;
    // Every delivered message is whole and correct, in the next free WQE.
    let mut next_wqe = 1000u64;
    let mut last_imm: Option<u32> = None;
    for wc in &delivered {
        check!(wc.status == verbs_api::WcStatus::Success, "UC receive completed with {:?}", wc.status);
        check!(wc.byte_len as usize == n, "UC message of {n} B delivered with byte_len {} (partial)", wc.byte_len);
        check!(
            wc.wr_id == next_wqe,
            "message went to WQE {} while {next_wqe} was next (a dropped message consumed a WQE)",
            wc.wr_id
        );
        let i = wc.imm_data as u64;
        check!(last_imm.is_none_or(|l| wc.imm_data > l), "UC messages delivered out of order");
        last_imm = Some(wc.imm_data);
        let slot = (wc.wr_id - 1000) as usize * n;
        check!(b.read(slot, n)? == pattern(i, n), "UC message {i} delivered with wrong contents");
        next_wqe += 1;
    }
    if delivered.len() as u64 == msgs {
        crate::skip!("no packet was lost; the gap path was not exercised");
    }
    check!(!delivered.is_empty(), "nothing delivered at 30 % loss over {msgs} messages (expected ~34 %)");
    // Clean again: the next message goes to the next WQE.
    a.mr.write(0, &pattern(777, 10))?;
    a.post(wr(77, SendOp::SendWithImm { imm: 777 }, vec![a.sge(0, 10)]))?;
    ok(env, &a.scq, "UC SEND after the lossy burst")?;
    if env.clean() {
        let r = ok(env, &b.rcq, "UC RECV after the lossy burst")?;
        check!(r.wr_id == next_wqe && r.imm_data == 777 && r.byte_len == 10, "after the burst: {r:?}");
    }
    Ok(())
}
