//! The frames softrdma's transport produces for each operation have the
//! layout kernel rxe's have in the captures: same opcodes in the same order,
//! same extension headers, AckReq on the same packets, same pad, payload and
//! frame lengths, same UDP ports, TTL, DF and TOS, same AETH syndromes and
//! MSNs. Addresses, keys, PSNs and IP identification differ by nature.

use std::path::Path;
use std::time::Duration;

use softrdma::capture::read_frames;
use transport::qp::UdDest;
use transport::sim::{path_between, ConnectParams, NetConfig, Sim};
use transport::wire::{classify, Frame, FrameKind, NetRepr};
use verbs_api::{AccessFlags, Mtu, QpType, RecvWr, SendOp, SendWr, Sge};

/// Everything about a frame's layout that does not depend on addresses,
/// keys, PSNs or timing.
fn signature(bytes: &[u8]) -> String {
    let f = Frame::verify(bytes).expect("valid frame");
    let b = f.repr.ib.bth;
    let (ttl, df, tos, sport, dport, csum) = match f.repr.net {
        NetRepr::V4 { ip, udp } => {
            (ip.ttl, ip.dont_frag, ip.dscp << 2 | ip.ecn, udp.src_port, udp.dst_port, format!("{:?}", udp.checksum))
        }
        _ => panic!("captures are IPv4"),
    };
    let e = f.repr.ib.ext;
    format!(
        "{} len={} payload={} pad={} ack={} se={} m={} pkey={:#x} fb={}{} ttl={ttl} df={df} tos={tos} udp={sport}->{dport} csum={csum} reth={:?} aeth={:?} atomic={} atomicack={} deth={:?} imm={} ieth={}",
        b.opcode.name(),
        bytes.len(),
        f.repr.ib.payload_len,
        b.pad,
        b.ack_req,
        b.solicited,
        b.mig_req,
        b.pkey,
        b.fecn as u8,
        b.becn as u8,
        e.reth.map(|r| r.dma_len),
        e.aeth,
        e.atomic_eth.is_some(),
        e.atomic_ack_eth.is_some(),
        e.deth.map(|d| (d.qkey, d.src_qpn)),
        e.immdt.is_some(),
        e.ieth.is_some(),
    )
}

/// Signatures of the capture's RoCE frames, split by direction (client first).
fn captured(name: &str) -> [Vec<String>; 2] {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../vectors/kernel-rxe").join(name);
    let mut out = [Vec::new(), Vec::new()];
    let frames = read_frames(&path).unwrap();
    let roce: Vec<_> = frames.iter().filter(|f| classify(&f.data) == FrameKind::RoceV2).collect();
    let client_mac = roce[0].data[6..12].to_vec();
    for f in roce {
        let dir = if f.data[6..12] == client_mac[..] { 0 } else { 1 };
        out[dir].push(signature(&f.data));
    }
    out
}

/// Runs `count` operations one at a time (as perftest's -n 5 with one
/// outstanding does in these captures) and returns the frames' signatures.
fn ours(t: QpType, op: impl Fn(u64, u32) -> SendOp, len: u32, count: u64) -> [Vec<String>; 2] {
    let mut sim = Sim::new(NetConfig::default(), 1);
    sim.tap = Some(Vec::new());
    let p = ConnectParams { mtu: Mtu::M1024, qkey: 0x1111_1111, ..Default::default() };
    let q = sim.connect(t, &p, [None, None]);
    assert_eq!(q, [0x11, 0x11], "perftest's captures use QPN 0x11 on both sides");
    let all = AccessFlags::all();
    let (lkey, _) = sim.nodes[0].mem.register(1, 0x10_0000, 1 << 16, all);
    let (rl, rkey) = sim.nodes[1].mem.register(1, 0x20_0000, 1 << 16, all);
    for i in 0..count {
        sim.nodes[1]
            .qp_mut(q[1])
            .unwrap()
            .post_recv(RecvWr { wr_id: i, sg_list: vec![Sge { addr: 0x20_0000, length: 1 << 16, lkey: rl }] })
            .ok();
        let mut wr = SendWr::new(i, op(0x20_0000, rkey), vec![Sge { addr: 0x10_0000, length: len, lkey }]);
        let ud = (t == QpType::Ud).then(|| {
            wr.remote_qpn = q[1];
            wr.remote_qkey = 0x1111_1111;
            UdDest { path: path_between(0, q[0], q[1], true), remote_qpn: q[1], remote_qkey: 0x1111_1111 }
        });
        sim.nodes[0].qp_mut(q[0]).unwrap().post_send(&wr, ud).unwrap();
        sim.run_until_idle(Duration::from_secs(1));
    }
    let mut out = [Vec::new(), Vec::new()];
    for (_, node, bytes) in sim.tap.take().unwrap() {
        out[node].push(signature(&bytes));
    }
    out
}

fn compare(name: &str, got: [Vec<String>; 2]) {
    let want = captured(name);
    for dir in 0..2 {
        assert_eq!(
            got[dir].len(),
            want[dir].len(),
            "{name} direction {dir}: frame count\nours: {:#?}\nrxe: {:#?}",
            got[dir],
            want[dir]
        );
        for (i, (g, w)) in got[dir].iter().zip(&want[dir]).enumerate() {
            assert_eq!(g, w, "{name} direction {dir} frame {i}");
        }
    }
}

#[test]
fn rc_write_8k() {
    compare("rc-write-8k.pcap", ours(QpType::Rc, |va, rkey| SendOp::RdmaWrite { remote_addr: va, rkey }, 8192, 5));
}

#[test]
fn rc_write_64() {
    compare("rc-write-64.pcap", ours(QpType::Rc, |va, rkey| SendOp::RdmaWrite { remote_addr: va, rkey }, 64, 5));
}

#[test]
fn rc_send_4k() {
    compare("rc-send-4k.pcap", ours(QpType::Rc, |_, _| SendOp::Send, 4096, 5));
}

#[test]
fn rc_read_8k() {
    compare("rc-read-8k.pcap", ours(QpType::Rc, |va, rkey| SendOp::RdmaRead { remote_addr: va, rkey }, 8192, 5));
}

#[test]
fn rc_fetch_add() {
    compare(
        "rc-fetch-add.pcap",
        ours(QpType::Rc, |va, rkey| SendOp::AtomicFetchAdd { remote_addr: va, rkey, add: 1 }, 8, 5),
    );
}

#[test]
fn rc_cmp_swap() {
    compare(
        "rc-cmp-swap.pcap",
        ours(QpType::Rc, |va, rkey| SendOp::AtomicCmpSwp { remote_addr: va, rkey, compare: 0, swap: 1 }, 8, 5),
    );
}

#[test]
fn uc_write_4k() {
    compare("uc-write-4k.pcap", ours(QpType::Uc, |va, rkey| SendOp::RdmaWrite { remote_addr: va, rkey }, 4096, 5));
}

#[test]
fn ud_send_512() {
    compare("ud-send-512.pcap", ours(QpType::Ud, |_, _| SendOp::Send, 512, 5));
}
