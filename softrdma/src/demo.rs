//! `softrdma demo`: two devices, RC and UD traffic of every opcode with the
//! data verified, and a short report. Written against `verbs-api` only, so it
//! is also a worked example of the API.

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

use verbs_api::helpers::{to_init, to_rts, ConnectOptions, PeerInfo};
use verbs_api::{
    AccessFlags, AhAttr, Context, Cq, Mr, Mtu, Qp, QpCap, QpInitAttr, QpType, RecvWr, SendOp, SendWr, Sge, VerbsError,
    WcFlags, WcOpcode, WcStatus, WorkCompletion,
};

#[derive(Debug, Default, Clone)]
pub struct DemoLine {
    pub op: &'static str,
    pub messages: u64,
    pub bytes: u64,
    pub elapsed: Duration,
}

#[derive(Debug, Default, Clone)]
pub struct DemoReport {
    pub lines: Vec<DemoLine>,
}

impl DemoReport {
    pub fn render(&self) -> String {
        let mut s = String::from("operation            messages        bytes   verified   MB/s\n");
        for l in &self.lines {
            let mbs = l.bytes as f64 / l.elapsed.as_secs_f64().max(1e-9) / 1e6;
            let _ = writeln!(s, "{:<20} {:>8} {:>12}   yes      {:>8.1}", l.op, l.messages, l.bytes, mbs);
        }
        s
    }
}

fn err(m: impl Into<String>) -> VerbsError {
    VerbsError::Io(m.into())
}

fn pattern(seed: u64, len: usize) -> Vec<u8> {
    (0..len).map(|i| (seed.wrapping_mul(31).wrapping_add(i as u64 * 7) ^ (i as u64 >> 9)) as u8).collect()
}

/// Waits for one completion and insists it succeeded.
fn one(cq: &Arc<dyn Cq>, what: &str) -> Result<WorkCompletion, VerbsError> {
    let wc = cq.wait(1, Duration::from_secs(10));
    let wc = *wc.first().ok_or_else(|| err(format!("{what}: no completion within 10 s")))?;
    if wc.status != WcStatus::Success {
        return Err(err(format!("{what}: completion status {} ({:?})", wc.status.as_str(), wc.status)));
    }
    Ok(wc)
}

struct Side {
    ctx: Arc<dyn Context>,
    pd: Arc<dyn verbs_api::Pd>,
    cq: Arc<dyn Cq>,
    mr: Arc<dyn Mr>,
    qp: Arc<dyn Qp>,
}

fn side(ctx: &Arc<dyn Context>, t: QpType, len: usize) -> Result<Side, VerbsError> {
    let pd = ctx.alloc_pd()?;
    let cq = ctx.create_cq(256)?;
    let mr = pd.reg_mr(len, AccessFlags::all())?;
    let qp = pd.create_qp(&QpInitAttr {
        qp_type: t,
        send_cq: cq.clone(),
        recv_cq: cq.clone(),
        srq: None,
        cap: QpCap { max_send_wr: 64, max_recv_wr: 64, max_send_sge: 2, max_recv_sge: 2, max_inline_data: 64 },
        sq_sig_all: true,
    })?;
    Ok(Side { ctx: ctx.clone(), pd, cq, mr, qp })
}

fn info(s: &Side, psn: u32, gid_index: u32) -> Result<PeerInfo, VerbsError> {
    Ok(PeerInfo { qpn: s.qp.qp_num(), psn, gid: s.ctx.query_gid(1, gid_index)? })
}

const LEN: usize = 4 << 20;

/// Runs the demo between two devices' contexts, over GID 1.
pub fn run(a: &Arc<dyn Context>, b: &Arc<dyn Context>) -> Result<DemoReport, VerbsError> {
    run_on_gid(a, b, 1)
}

/// Runs the demo with both ends on GID `gid` (an IPv6 one, say).
pub fn run_on_gid(a: &Arc<dyn Context>, b: &Arc<dyn Context>, gid: u8) -> Result<DemoReport, VerbsError> {
    let mut report = DemoReport::default();
    let o =
        ConnectOptions { mtu: Mtu::for_link_mtu(1500).unwrap_or(Mtu::M1024), sgid_index: gid, ..Default::default() };
    let (x, y) = (side(a, QpType::Rc, LEN)?, side(b, QpType::Rc, LEN)?);
    let (ix, iy) = (info(&x, 0x1234, gid.into())?, info(&y, 0xabcd, gid.into())?);
    for (s, peer, psn) in [(&x, &iy, ix.psn), (&y, &ix, iy.psn)] {
        to_init(&s.qp, &o)?;
        to_rts(&s.qp, psn, peer, &o)?;
    }
    let sge =
        |mr: &Arc<dyn Mr>, off: u64, len: usize| Sge { addr: mr.addr() + off, length: len as u32, lkey: mr.lkey() };

    // SEND of sizes around the MTU and beyond.
    let t = Instant::now();
    let mut bytes = 0;
    let sizes = [0usize, 1, 1023, 1024, 1025, 65536, 1 << 20];
    for (i, &n) in sizes.iter().enumerate() {
        let data = pattern(i as u64, n);
        x.mr.write(0, &data)?;
        y.qp.post_recv(&[RecvWr { wr_id: i as u64, sg_list: vec![sge(&y.mr, 0, LEN)] }]).map_err(|(_, e)| e)?;
        x.qp.post_send(&[SendWr::new(i as u64, SendOp::Send, vec![sge(&x.mr, 0, n)])], None).map_err(|(_, e)| e)?;
        one(&x.cq, "SEND")?;
        let wc = one(&y.cq, "RECV")?;
        let mut got = vec![0u8; n];
        y.mr.read(0, &mut got)?;
        if wc.opcode != WcOpcode::Recv || wc.byte_len as usize != n || got != data {
            return Err(err(format!("SEND of {n} bytes arrived wrong ({} bytes)", wc.byte_len)));
        }
        bytes += n as u64;
    }
    report.lines.push(DemoLine { op: "SEND", messages: sizes.len() as u64, bytes, elapsed: t.elapsed() });

    // SEND with immediate, and SEND with invalidate of an R_Key of y's.
    let t = Instant::now();
    let victim = y.pd.reg_mr(4096, AccessFlags::LOCAL_WRITE | AccessFlags::REMOTE_WRITE)?;
    x.mr.write(0, &pattern(7, 3000))?;
    for (i, op) in [SendOp::SendWithImm { imm: 0x1234_5678 }, SendOp::SendWithInv { invalidate_rkey: victim.rkey() }]
        .into_iter()
        .enumerate()
    {
        y.qp.post_recv(&[RecvWr { wr_id: 40 + i as u64, sg_list: vec![sge(&y.mr, 0, LEN)] }]).map_err(|(_, e)| e)?;
        x.qp.post_send(&[SendWr::new(40 + i as u64, op, vec![sge(&x.mr, 0, 3000)])], None).map_err(|(_, e)| e)?;
        one(&x.cq, "SEND imm/inv")?;
        let wc = one(&y.cq, "RECV imm/inv")?;
        let mut got = vec![0u8; 3000];
        y.mr.read(0, &mut got)?;
        let flags_ok = match op {
            SendOp::SendWithImm { imm } => wc.wc_flags.contains(WcFlags::WITH_IMM) && wc.imm_data == imm,
            _ => wc.wc_flags.contains(WcFlags::WITH_INV) && wc.invalidated_rkey == victim.rkey(),
        };
        if !flags_ok || wc.byte_len != 3000 || got != pattern(7, 3000) {
            return Err(err(format!("{op:?} arrived wrong: {wc:?}")));
        }
    }
    report.lines.push(DemoLine { op: "SEND imm + inv", messages: 2, bytes: 6000, elapsed: t.elapsed() });

    // RDMA WRITE 1 MiB, then WRITE with immediate.
    let t = Instant::now();
    let data = pattern(99, 1 << 20);
    x.mr.write(0, &data)?;
    let w = SendWr::new(
        1,
        SendOp::RdmaWrite { remote_addr: y.mr.addr() + 4096, rkey: y.mr.rkey() },
        vec![sge(&x.mr, 0, 1 << 20)],
    );
    x.qp.post_send(&[w], None).map_err(|(_, e)| e)?;
    one(&x.cq, "RDMA WRITE")?;
    let mut got = vec![0u8; 1 << 20];
    y.mr.read(4096, &mut got)?;
    if got != data {
        return Err(err("RDMA WRITE: remote memory differs"));
    }
    report.lines.push(DemoLine { op: "RDMA WRITE", messages: 1, bytes: 1 << 20, elapsed: t.elapsed() });

    let t = Instant::now();
    y.qp.post_recv(&[RecvWr { wr_id: 77, sg_list: vec![] }]).map_err(|(_, e)| e)?;
    let w = SendWr::new(
        2,
        SendOp::RdmaWriteWithImm { remote_addr: y.mr.addr(), rkey: y.mr.rkey(), imm: 0xc0ffee },
        vec![sge(&x.mr, 0, 4096)],
    );
    x.qp.post_send(&[w], None).map_err(|(_, e)| e)?;
    one(&x.cq, "WRITE_WITH_IMM")?;
    let wc = one(&y.cq, "RECV_RDMA_WITH_IMM")?;
    if wc.opcode != WcOpcode::RecvRdmaWithImm || wc.imm_data != 0xc0ffee || !wc.wc_flags.contains(WcFlags::WITH_IMM) {
        return Err(err(format!("WRITE_WITH_IMM completion wrong: {wc:?}")));
    }
    report.lines.push(DemoLine { op: "RDMA WRITE imm", messages: 1, bytes: 4096, elapsed: t.elapsed() });

    // RDMA READ the megabyte back.
    let t = Instant::now();
    let r = SendWr::new(
        3,
        SendOp::RdmaRead { remote_addr: y.mr.addr() + 4096, rkey: y.mr.rkey() },
        vec![sge(&x.mr, 2 << 20, 1 << 20)],
    );
    x.qp.post_send(&[r], None).map_err(|(_, e)| e)?;
    one(&x.cq, "RDMA READ")?;
    x.mr.read(2 << 20, &mut got)?;
    if got != data {
        return Err(err("RDMA READ returned different data"));
    }
    report.lines.push(DemoLine { op: "RDMA READ", messages: 1, bytes: 1 << 20, elapsed: t.elapsed() });

    // Atomics on one remote word.
    let t = Instant::now();
    y.mr.write(0, &5u64.to_ne_bytes())?;
    let word = y.mr.addr();
    for i in 0..10u64 {
        let fa = SendWr::new(
            10 + i,
            SendOp::AtomicFetchAdd { remote_addr: word, rkey: y.mr.rkey(), add: 3 },
            vec![sge(&x.mr, 0, 8)],
        );
        x.qp.post_send(&[fa], None).map_err(|(_, e)| e)?;
        one(&x.cq, "FETCH_ADD")?;
        let mut v = [0u8; 8];
        x.mr.read(0, &mut v)?;
        if u64::from_ne_bytes(v) != 5 + 3 * i {
            return Err(err(format!("FETCH_ADD #{i} returned {}", u64::from_ne_bytes(v))));
        }
    }
    let cs = SendWr::new(
        30,
        SendOp::AtomicCmpSwp { remote_addr: word, rkey: y.mr.rkey(), compare: 35, swap: 1000 },
        vec![sge(&x.mr, 0, 8)],
    );
    x.qp.post_send(&[cs], None).map_err(|(_, e)| e)?;
    one(&x.cq, "CMP_SWAP")?;
    let mut v = [0u8; 8];
    y.mr.read(0, &mut v)?;
    if u64::from_ne_bytes(v) != 1000 {
        return Err(err("CMP_SWAP did not swap"));
    }
    report.lines.push(DemoLine { op: "ATOMIC FA/CS", messages: 11, bytes: 88, elapsed: t.elapsed() });

    // UD: three datagrams through an address handle.
    let t = Instant::now();
    let (u, v) = (side(a, QpType::Ud, 1 << 16)?, side(b, QpType::Ud, 1 << 16)?);
    let (iu, iv) = (info(&u, 1, gid.into())?, info(&v, 2, gid.into())?);
    for (s, peer, psn) in [(&u, &iv, iu.psn), (&v, &iu, iv.psn)] {
        to_init(&s.qp, &o)?;
        to_rts(&s.qp, psn, peer, &o)?;
    }
    let pd = a.alloc_pd()?;
    let ah = pd.create_ah(&AhAttr::new(iv.gid, gid))?;
    for i in 0..3u64 {
        let data = pattern(500 + i, 512);
        u.mr.write(0, &data)?;
        v.qp.post_recv(&[RecvWr { wr_id: i, sg_list: vec![sge(&v.mr, 0, 1024)] }]).map_err(|(_, e)| e)?;
        let mut w = SendWr::new(i, SendOp::SendWithImm { imm: i as u32 }, vec![sge(&u.mr, 0, 512)]);
        w.remote_qpn = iv.qpn;
        w.remote_qkey = o.qkey;
        // UD is unreliable: on a lossy link a datagram may vanish, so send
        // again (as a UD application would) until it arrives.
        // A late copy of an earlier datagram (its immediate data says which)
        // is dropped and its receive posted again.
        let mut got_wc = None;
        'send: for _ in 0..20 {
            u.qp.post_send(std::slice::from_ref(&w), Some(&ah)).map_err(|(_, e)| e)?;
            one(&u.cq, "UD SEND")?;
            while let Some(wc) = v.cq.wait(1, Duration::from_millis(200)).first().copied() {
                if wc.imm_data == i as u32 {
                    got_wc = Some(wc);
                    break 'send;
                }
                v.qp.post_recv(&[RecvWr { wr_id: i, sg_list: vec![sge(&v.mr, 0, 1024)] }]).map_err(|(_, e)| e)?;
            }
        }
        let wc = got_wc.ok_or_else(|| err(format!("UD datagram {i}: not received after 20 sends")))?;
        if wc.status != WcStatus::Success {
            return Err(err(format!("UD RECV: completion status {:?}", wc.status)));
        }
        let mut got = vec![0u8; 512];
        v.mr.read(40, &mut got)?;
        if wc.byte_len != 552 || wc.src_qp != iu.qpn || got != data || !wc.wc_flags.contains(WcFlags::GRH) {
            return Err(err(format!("UD datagram {i} arrived wrong: {wc:?}")));
        }
    }
    report.lines.push(DemoLine { op: "UD SEND", messages: 3, bytes: 3 * 512, elapsed: t.elapsed() });
    Ok(report)
}
