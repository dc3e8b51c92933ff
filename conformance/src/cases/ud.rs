//! Unreliable Datagram: the GRH area before the payload, Q_Keys, the path
//! MTU as the message size limit, and what is dropped silently.

use std::time::Duration;

use verbs_api::{Gid, QpType, RecvWr, SendOp, SendWr, WcFlags, WcOpcode, WcStatus};

use super::{case, Case};
use crate::check;
use crate::kit::{ah_to, expect, expect_err, ok, pair, pattern, quiet, wr, CaseResult, Env, Side, EINVAL};

const GRH: &str =
    "IBTA Vol 1 ch. 11 (Post Receive: UD receive buffers start with a 40-byte GRH area); Annex A17 (RoCEv2: IP header in the GRH area)";

pub fn cases() -> Vec<Case> {
    vec![
        case("ud.send_grh", GRH, send_grh),
        case("ud.send_imm", "IBTA Vol 1 ch. 9 (UD SEND Only with Immediate)", send_imm),
        case("ud.max_size", "IBTA Vol 1 ch. 9, ch. 11 (UD messages fit one packet: size <= path MTU)", max_size),
        case(
            "ud.qkey_mismatch_dropped",
            "IBTA Vol 1 ch. 10 (Q_Key check: a datagram with the wrong Q_Key is dropped)",
            qkey_mismatch,
        ),
        case(
            "ud.controlled_qkey",
            "IBTA Vol 1 ch. 10 (Q_Key with the high bit set in the WR: the QP's own Q_Key is sent)",
            controlled_qkey,
        ),
        case("ud.no_receive_dropped", "IBTA Vol 1 ch. 9 (UD responder without a receive WQE drops silently)", no_recv),
        case("ud.receive_too_small", "IBTA Vol 1 ch. 10 (Local Length Error on the receiver)", recv_too_small),
        case("ud.unsupported_ops", "IBTA Vol 1 ch. 9 (UD has SEND only)", unsupported),
    ]
}

fn qkey(env: &Env) -> u32 {
    env.opts().qkey
}

#[allow(clippy::too_many_arguments)]
fn ud_send(env: &Env, a: &Side, b: &Side, id: u64, op: SendOp, off: usize, n: usize, qk: u32) -> CaseResult {
    let ah = ah_to(env, a, b)?;
    let mut w = SendWr::new(id, op, vec![a.sge(off, n)]);
    w.remote_qpn = b.qp.qp_num();
    w.remote_qkey = qk;
    a.qp.post_send(&[w], Some(&ah))?;
    Ok(())
}

fn check_grh(env: &Env, a: &Side, b: &Side, grh: &[u8]) -> CaseResult {
    let sgid = a.ctx.query_gid(1, env.gid_index as u32)?;
    let dgid = b.ctx.query_gid(1, env.gid_index as u32)?;
    match (sgid.to_ipv4(), dgid.to_ipv4()) {
        (Some(s), Some(d)) => {
            let ip = &grh[20..40];
            check!(ip[0] >> 4 == 4, "GRH area bytes 20..40 are not an IPv4 header: {:02x?}", ip);
            check!(
                ip[12..16] == s.octets() && ip[16..20] == d.octets(),
                "IPv4 header addresses {:?} (want {s} -> {d})",
                &ip[12..20]
            );
        }
        _ => {
            check!(grh[0] >> 4 == 6, "GRH area is not an IPv6 header: {:02x?}", &grh[..8]);
            let g = |r: std::ops::Range<usize>| Gid(grh[r].try_into().expect("16 bytes"));
            check!(
                g(8..24) == sgid && g(24..40) == dgid,
                "GRH SGID/DGID {} {} (want {sgid} {dgid})",
                g(8..24),
                g(24..40)
            );
        }
    }
    Ok(())
}

fn send_grh(env: &Env) -> CaseResult {
    env.require_clean("UD does not recover lost datagrams")?;
    let (a, b) = pair(env, QpType::Ud, 1 << 16)?;
    let m = env.mtu_bytes();
    for (i, n) in [0usize, 1, m - 1, m].into_iter().enumerate() {
        let data = pattern(i as u64 + 60, n);
        a.mr.write(0, &data)?;
        b.mr.write(0, &[0xee; 40])?;
        b.post_recv(i as u64, 0, m + 40)?;
        ud_send(env, &a, &b, i as u64, SendOp::Send, 0, n, qkey(env))?;
        let s = ok(env, &a.scq, "UD SEND")?;
        check!(s.opcode == WcOpcode::Send && s.byte_len as usize == n, "UD send completion {s:?}");
        let r = ok(env, &b.rcq, &format!("UD RECV of {n} B"))?;
        check!(r.opcode == WcOpcode::Recv, "opcode {:?}", r.opcode);
        check!(r.byte_len as usize == n + 40, "UD RECV of {n} B: byte_len {} (payload + 40 expected)", r.byte_len);
        check!(r.wc_flags.contains(WcFlags::GRH), "UD receive without the GRH flag (RoCE always has one)");
        check!(r.src_qp == a.qp.qp_num(), "src_qp {} expected {}", r.src_qp, a.qp.qp_num());
        check!(b.read(40, n)? == data, "UD payload of {n} B is not at offset 40");
        check_grh(env, &a, &b, &b.read(0, 40)?)?;
    }
    Ok(())
}

fn send_imm(env: &Env) -> CaseResult {
    env.require_clean("UD does not recover lost datagrams")?;
    let (a, b) = pair(env, QpType::Ud, 1 << 16)?;
    b.post_recv(1, 0, 4096)?;
    a.mr.write(0, b"imm")?;
    ud_send(env, &a, &b, 1, SendOp::SendWithImm { imm: 0xfeed_f00d }, 0, 3, qkey(env))?;
    ok(env, &a.scq, "UD SEND_WITH_IMM")?;
    let r = ok(env, &b.rcq, "UD RECV with immediate")?;
    check!(r.wc_flags.contains(WcFlags::WITH_IMM) && r.imm_data == 0xfeed_f00d, "UD imm: {r:?}");
    check!(r.byte_len == 43 && b.read(40, 3)? == b"imm", "UD payload with imm: {r:?}");
    Ok(())
}

fn max_size(env: &Env) -> CaseResult {
    let (a, b) = pair(env, QpType::Ud, 1 << 16)?;
    let m = env.mtu_bytes();
    let ah = ah_to(env, &a, &b)?;
    let mut w = SendWr::new(1, SendOp::Send, vec![a.sge(0, m + 1)]);
    w.remote_qpn = b.qp.qp_num();
    w.remote_qkey = qkey(env);
    expect_err(a.qp.post_send(&[w], Some(&ah)).map_err(|e| e.1), EINVAL, &format!("UD SEND of MTU+1 = {} B", m + 1))?;
    quiet(&a.scq, Duration::from_millis(10), "refused UD post")?;
    if env.clean() {
        b.post_recv(2, 0, m + 40)?;
        ud_send(env, &a, &b, 2, SendOp::Send, 0, m, qkey(env))?;
        ok(env, &a.scq, "UD SEND of exactly the MTU")?;
        let r = ok(env, &b.rcq, "UD RECV of exactly the MTU")?;
        check!(r.byte_len as usize == m + 40, "byte_len {}", r.byte_len);
    }
    Ok(())
}

fn qkey_mismatch(env: &Env) -> CaseResult {
    let (a, b) = pair(env, QpType::Ud, 1 << 16)?;
    b.post_recv(1, 0, 4096)?;
    a.mr.write(0, b"wrong key")?;
    ud_send(env, &a, &b, 1, SendOp::Send, 0, 9, qkey(env) ^ 0x0101)?;
    ok(env, &a.scq, "UD SEND with a mismatching Q_Key (the sender cannot know)")?;
    quiet(&b.rcq, Duration::from_millis(100), "datagram with the wrong Q_Key")?;
    if env.clean() {
        // The WQE was not consumed: the next good datagram lands in it.
        a.mr.write(16, b"right key")?;
        ud_send(env, &a, &b, 2, SendOp::Send, 16, 9, qkey(env))?;
        ok(env, &a.scq, "UD SEND with the right Q_Key")?;
        let r = ok(env, &b.rcq, "UD RECV with the right Q_Key")?;
        check!(r.wr_id == 1 && b.read(40, 9)? == b"right key", "after a dropped datagram: {r:?}");
    }
    Ok(())
}

fn controlled_qkey(env: &Env) -> CaseResult {
    env.require_clean("UD delivery is checked")?;
    let (a, b) = pair(env, QpType::Ud, 1 << 16)?;
    b.post_recv(1, 0, 4096)?;
    a.mr.write(0, b"ctl")?;
    // Both QPs have env.opts().qkey; the WR asks for "the QP's own".
    ud_send(env, &a, &b, 1, SendOp::Send, 0, 3, 0x8000_0000)?;
    ok(env, &a.scq, "UD SEND with a controlled Q_Key")?;
    let r = ok(env, &b.rcq, "UD RECV (controlled Q_Key = the QP's)")?;
    check!(r.byte_len == 43, "{r:?}");
    Ok(())
}

fn no_recv(env: &Env) -> CaseResult {
    let (a, b) = pair(env, QpType::Ud, 1 << 16)?;
    a.mr.write(0, b"nobody home")?;
    ud_send(env, &a, &b, 1, SendOp::Send, 0, 11, qkey(env))?;
    ok(env, &a.scq, "UD SEND to a QP without receives")?;
    std::thread::sleep(Duration::from_millis(30));
    b.post_recv(1, 0, 4096)?;
    quiet(&b.rcq, Duration::from_millis(50), "a dropped datagram must not be delivered later")?;
    Ok(())
}

fn recv_too_small(env: &Env) -> CaseResult {
    env.require_clean("UD delivery is checked")?;
    let (a, b) = pair(env, QpType::Ud, 1 << 16)?;
    // Room for the GRH and 99 of 100 payload bytes.
    b.qp.post_recv(&[RecvWr { wr_id: 1, sg_list: vec![b.sge(0, 139)] }])?;
    ud_send(env, &a, &b, 1, SendOp::Send, 0, 100, qkey(env))?;
    ok(env, &a.scq, "UD SEND")?;
    expect(env, &b.rcq, WcStatus::LocLenErr, "UD datagram larger than the receive buffer")?;
    Ok(())
}

fn unsupported(env: &Env) -> CaseResult {
    let (a, b) = pair(env, QpType::Ud, 4096)?;
    let ah = ah_to(env, &a, &b)?;
    let (va, rk) = (b.mr.addr(), b.mr.rkey());
    for op in [
        SendOp::RdmaWrite { remote_addr: va, rkey: rk },
        SendOp::RdmaRead { remote_addr: va, rkey: rk },
        SendOp::AtomicFetchAdd { remote_addr: va, rkey: rk, add: 1 },
        SendOp::SendWithInv { invalidate_rkey: rk },
    ] {
        let len = if op.is_atomic() { 8 } else { 16 };
        let mut w = wr(1, op, vec![a.sge(0, len)]);
        w.remote_qpn = b.qp.qp_num();
        w.remote_qkey = qkey(env);
        expect_err(a.qp.post_send(&[w], Some(&ah)).map_err(|e| e.1), EINVAL, &format!("{op:?} on UD"))?;
    }
    // A UD send needs an address handle.
    let mut w = wr(2, SendOp::Send, vec![a.sge(0, 4)]);
    w.remote_qpn = b.qp.qp_num();
    expect_err(a.qp.post_send(&[w], None).map_err(|e| e.1), EINVAL, "UD SEND without an address handle")?;
    quiet(&a.scq, Duration::from_millis(10), "refused UD posts")
}
