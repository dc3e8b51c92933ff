//! The container isolation model with several tenants on one fabric: traffic
//! inside a partition/job works; every cross-tenant attempt is refused,
//! counted and audited, and legitimate traffic around it is unaffected;
//! limits give clear errors; a namespace's device view shows nothing of
//! another's. (docs/isolation.md maps each rule to its test here.)

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

mod common;
use common::forge;
use softrdma::backend::memory::Fabric;
use softrdma::device::{Device, DeviceConfig};
use softrdma::namespace::{BoundaryMode, Namespace, Resource};
use verbs_api::helpers::{to_init, to_rts, ConnectOptions, Endpoint as End, PeerInfo};
use verbs_api::{
    AccessFlags, Gid, QpAttr, QpAttrMask, QpCap, QpInitAttr, QpPath, QpState, QpType, RecvWr, SendOp, SendWr, Sge,
    VerbsError, WcStatus,
};

fn mac(i: usize) -> [u8; 6] {
    [0x02, 0x1a, 0, 0, 0, i as u8]
}

fn ip(i: usize) -> IpAddr {
    IpAddr::from([10, 42, 0, i as u8])
}

fn dev(fab: &Fabric, i: usize, ns: &Arc<Namespace>, pkeys: Vec<u16>) -> Arc<Device> {
    let mut c = DeviceConfig::new(&format!("iso{i}"), vec![(ip(i), 24)]);
    c.namespace = Some(ns.clone());
    c.pkeys = pkeys;
    Device::start(c, fab.attach(mac(i), 1500)).unwrap()
}

fn end(d: &Arc<Device>, t: QpType) -> End {
    End::new(&d.context(), t, 8192, 64, QpCap::default()).unwrap()
}

fn opts(pkey_index: u16) -> ConnectOptions {
    // Short timeouts so refused traffic fails fast: 4.096 µs × 2^10 ≈ 4 ms, 2 retries.
    ConnectOptions { pkey_index, timeout: 10, retry_cnt: 2, ..Default::default() }
}

/// Connects `a` (P_Key index `pa`) and `b` (index `pb`).
fn connect(a: &End, b: &End, pa: u16, pb: u16) {
    let (ia, ib) = (a.info(1, 1).unwrap(), b.info(2, 1).unwrap());
    to_init(&a.qp, &opts(pa)).unwrap();
    to_init(&b.qp, &opts(pb)).unwrap();
    to_rts(&a.qp, 1, &ib, &opts(pa)).unwrap();
    to_rts(&b.qp, 2, &ia, &opts(pb)).unwrap();
}

/// One RDMA WRITE from `a` to `b`; the requester's completion status.
fn write(a: &End, b: &End, data: &[u8]) -> WcStatus {
    a.mr.write(0, data).unwrap();
    let w = SendWr::new(
        1,
        SendOp::RdmaWrite { remote_addr: b.mr.addr(), rkey: b.mr.rkey() },
        vec![Sge { addr: a.mr.addr(), length: data.len() as u32, lkey: a.mr.lkey() }],
    );
    a.qp.post_send(&[w], None).unwrap();
    a.cq.wait(1, Duration::from_secs(10)).first().map(|c| c.status).expect("a completion")
}

fn kinds(ns: &Namespace) -> Vec<&'static str> {
    ns.audit.events().iter().map(|e| e.kind).collect()
}

#[test]
fn partitions_full_and_limited_membership() {
    let fab = Fabric::new();
    let (na, nb) = (Namespace::new("tenant-a", false, false), Namespace::new("tenant-b", false, false));
    // a0/a1: full members of 0x8001; b0: full member of 0x8002; l0/l1: limited members of 0x0001.
    let a0 = dev(&fab, 1, &na, vec![0xffff, 0x8001, 0x0001]);
    let a1 = dev(&fab, 2, &na, vec![0xffff, 0x8001, 0x0001]);
    let b0 = dev(&fab, 3, &nb, vec![0xffff, 0x8002]);
    // Inside the partition: works.
    let (x, y) = (end(&a0, QpType::Rc), end(&a1, QpType::Rc));
    connect(&x, &y, 1, 1);
    assert_eq!(write(&x, &y, b"inside"), WcStatus::Success);
    // Wrong partition: refused at a0, counted, audited with b0's GID.
    let (x2, y2) = (end(&b0, QpType::Rc), end(&a0, QpType::Rc));
    connect(&x2, &y2, 1, 1);
    assert_eq!(write(&x2, &y2, b"intruder"), WcStatus::RetryExcErr);
    assert!(a0.counters().1.rx_bad_pkey >= 1);
    let ev = na.audit.events().into_iter().find(|e| e.kind == "pkey").expect("audited");
    assert_eq!((ev.device.as_str(), ev.peer), ("iso1", Some(Gid::from_ipv4("10.42.0.3".parse().unwrap()))));
    assert!(ev.to_json().contains("\"kind\":\"pkey\""));
    // Limited ↔ limited: refused; limited ↔ full: accepted.
    let (l0, l1) = (end(&a0, QpType::Rc), end(&a1, QpType::Rc));
    connect(&l0, &l1, 2, 2);
    assert_eq!(write(&l0, &l1, b"limited"), WcStatus::RetryExcErr);
    let (f0, l2) = (end(&a0, QpType::Rc), end(&a1, QpType::Rc));
    connect(&f0, &l2, 1, 2);
    assert_eq!(write(&f0, &l2, b"full to limited"), WcStatus::Success);
    // The first pair still works after all that.
    assert_eq!(write(&x, &y, b"still fine"), WcStatus::Success);
    assert!(kinds(&nb).iter().all(|k| *k != "pkey"), "b's stream holds only b's events");
}

#[test]
fn qkeys_controlled_and_mismatched() {
    let fab = Fabric::new();
    let na = Namespace::new("tenant-q", false, false);
    let (d0, d1) = (dev(&fab, 11, &na, vec![0xffff]), dev(&fab, 12, &na, vec![0xffff]));
    let (u, v) = (end(&d0, QpType::Ud), end(&d1, QpType::Ud));
    // An unprivileged namespace may not take a controlled Q_Key.
    let a = QpAttr { qp_state: QpState::Init, port_num: 1, qkey: 0x8000_0001, ..QpAttr::default() };
    let e = v
        .qp
        .modify(&a, QpAttrMask::STATE | QpAttrMask::PKEY_INDEX | QpAttrMask::PORT | QpAttrMask::QKEY, QpPath::default())
        .unwrap_err();
    assert!(matches!(e, VerbsError::PermissionDenied(_)), "{e}");
    assert!(kinds(&na).contains(&"controlled_qkey"));
    let o = ConnectOptions::default();
    let peer = PeerInfo { qpn: v.qp.qp_num(), psn: 0, gid: v.ctx.query_gid(1, 1).unwrap() };
    for q in [&u.qp, &v.qp] {
        to_init(q, &o).unwrap();
        to_rts(q, 0, &peer, &o).unwrap();
    }
    let pd = u.ctx.alloc_pd().unwrap();
    let ah = pd.create_ah(&verbs_api::AhAttr::new(peer.gid, 1)).unwrap();
    v.qp.post_recv(&[RecvWr { wr_id: 1, sg_list: vec![Sge { addr: v.mr.addr(), length: 1024, lkey: v.mr.lkey() }] }])
        .unwrap();
    for qkey in [0x2222, o.qkey] {
        let mut w =
            SendWr::new(qkey as u64, SendOp::Send, vec![Sge { addr: u.mr.addr(), length: 64, lkey: u.mr.lkey() }]);
        w.remote_qpn = peer.qpn;
        w.remote_qkey = qkey;
        u.qp.post_send(&[w], Some(&ah)).unwrap();
    }
    let got = v.cq.wait(2, Duration::from_secs(5));
    assert_eq!(got.len(), 1, "only the right Q_Key is delivered");
    assert_eq!(d1.counters().1.rx_bad_qkey, 1);
    assert!(kinds(&na).contains(&"qkey"));
}

#[test]
fn jobs_see_only_their_own_jkey_and_its_wire_encoding() {
    let fab = Fabric::new();
    let (nj, nk, nn) = (
        Namespace::new("job-7", false, false),
        Namespace::new("job-9", false, false),
        Namespace::new("no-job", false, false),
    );
    nj.set_jkey(Some(7));
    nk.set_jkey(Some(9));
    let dir = softrdma::testbed::ScratchDir::new("srd-jkey").unwrap();
    let pcap = dir.join("jkey.pcap");
    let mut c = DeviceConfig::new("iso21", vec![(ip(21), 24)]);
    c.namespace = Some(nj.clone());
    c.pcap = Some(pcap.clone());
    let j0 = Device::start(c, fab.attach(mac(21), 1500)).unwrap();
    let j1 = dev(&fab, 22, &nj, vec![0xffff]);
    let k0 = dev(&fab, 23, &nk, vec![0xffff]);
    let n0 = dev(&fab, 24, &nn, vec![0xffff]);
    let (a, b) = (end(&j0, QpType::Rc), end(&j1, QpType::Rc));
    connect(&a, &b, 0, 0);
    assert_eq!(write(&a, &b, b"same job"), WcStatus::Success);
    let (c, d) = (end(&k0, QpType::Rc), end(&j0, QpType::Rc));
    connect(&c, &d, 0, 0);
    assert_eq!(write(&c, &d, b"other job"), WcStatus::RetryExcErr);
    let (e, f) = (end(&n0, QpType::Rc), end(&j1, QpType::Rc));
    connect(&e, &f, 0, 0);
    assert_eq!(write(&e, &f, b"no job"), WcStatus::RetryExcErr);
    assert!(j0.counters().1.rx_bad_jkey >= 1 && j1.counters().1.rx_bad_jkey >= 1);
    assert!(kinds(&nj).iter().filter(|k| **k == "jkey").count() >= 2);
    assert_eq!(write(&a, &b, b"still"), WcStatus::Success);
    // On the wire: j0's own packets carry JKETH 7 (flag in BTH Resv7), the
    // no-job device's packets have neither flag nor header.
    j0.shutdown();
    let frames = softrdma::capture::read_frames(&pcap).unwrap();
    let mut seen = (0, 0);
    for f in &frames {
        let Ok(fr) = transport::wire::Frame::verify(&f.data) else { continue };
        let from_j0 = f.data[6..12] == mac(21);
        let from_n0 = f.data[6..12] == mac(24);
        if from_j0 {
            assert_eq!(fr.repr.ib.ext.jketh.map(|j| j.jkey), Some(7));
            assert_eq!(fr.repr.ib.bth.resv7 & 0x40, 0x40);
            seen.0 += 1;
        }
        if from_n0 {
            assert_eq!((fr.repr.ib.ext.jketh, fr.repr.ib.bth.resv7), (None, 0));
            seen.1 += 1;
        }
    }
    assert!(seen.0 > 0, "j0's frames seen: {seen:?}");
}

#[test]
fn spoofed_source_foreign_destination_and_rocev1_are_refused() {
    let fab = Fabric::new();
    let (na, nb) = (Namespace::new("victim", false, false), Namespace::new("other", false, false));
    let (v0, v1) = (dev(&fab, 31, &na, vec![0xffff]), dev(&fab, 32, &na, vec![0xffff]));
    let _o = dev(&fab, 33, &nb, vec![0xffff]);
    let (x, y) = (end(&v0, QpType::Rc), end(&v1, QpType::Rc));
    connect(&x, &y, 0, 0);
    y.qp.post_recv(&[RecvWr { wr_id: 9, sg_list: vec![Sge { addr: y.mr.addr(), length: 64, lkey: y.mr.lkey() }] }])
        .unwrap();
    let attacker = fab.attach([0x02, 0xee, 0, 0, 0, 1], 1500);
    // From 10.42.0.33 (not the QP's peer 10.42.0.31) to v1's QP.
    attacker.tx.send(&forge([10, 42, 0, 33], [10, 42, 0, 32], mac(32), y.qp.qp_num(), 2, 0xffff)).unwrap();
    // To v1's MAC but another namespace's address.
    attacker.tx.send(&forge([10, 42, 0, 31], [10, 42, 0, 33], mac(32), y.qp.qp_num(), 2, 0xffff)).unwrap();
    // A RoCEv1 frame (EtherType 0x8915) to v1.
    let mut v1frame = forge([10, 42, 0, 31], [10, 42, 0, 32], mac(32), y.qp.qp_num(), 2, 0xffff);
    v1frame[12..14].copy_from_slice(&0x8915u16.to_be_bytes());
    attacker.tx.send(&v1frame).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let (dc, ec, _) = v1.counters();
    assert_eq!((ec.rx_spoofed_sgid, ec.rx_foreign_dgid, dc.rx_rocev1_dropped), (1, 1, 1));
    let k = kinds(&na);
    for kind in ["gid_spoof", "foreign_dgid", "rocev1"] {
        assert!(k.contains(&kind), "{kind} audited: {k:?}");
    }
    assert!(y.cq.poll(4).is_empty(), "nothing forged was delivered");
    // A device asking for RoCEv1 outside the initial namespace is refused.
    let mut c = DeviceConfig::new("v1dev", vec![(ip(40), 24)]);
    c.namespace = Some(nb.clone());
    c.rocev1 = true;
    let e = Device::start(c, fab.attach(mac(40), 1500)).err().expect("refused");
    assert!(e.to_string().contains("RoCEv1 is refused"), "{e}");
    // The legitimate pair is unaffected.
    assert_eq!(write(&x, &y, b"ok"), WcStatus::Success);
}

#[test]
fn rkey_of_another_pd_is_refused_and_audited() {
    let fab = Fabric::new();
    let na = Namespace::new("tenant-r", false, false);
    let (d0, d1) = (dev(&fab, 51, &na, vec![0xffff]), dev(&fab, 52, &na, vec![0xffff]));
    let (x, y) = (end(&d0, QpType::Rc), end(&d1, QpType::Rc));
    connect(&x, &y, 0, 0);
    let other_pd = y.ctx.alloc_pd().unwrap();
    let foreign = other_pd.reg_mr(64, AccessFlags::all()).unwrap();
    let w = SendWr::new(
        1,
        SendOp::RdmaWrite { remote_addr: foreign.addr(), rkey: foreign.rkey() },
        vec![Sge { addr: x.mr.addr(), length: 8, lkey: x.mr.lkey() }],
    );
    x.qp.post_send(&[w], None).unwrap();
    assert_eq!(x.cq.wait(1, Duration::from_secs(5))[0].status, WcStatus::RemAccessErr);
    std::thread::sleep(Duration::from_millis(50));
    let ev = na.audit.events().into_iter().find(|e| e.kind == "rkey").expect("R_Key abuse audited");
    assert!(ev.detail.contains("PdMismatch"), "{}", ev.detail);
}

#[test]
fn limits_refuse_cleanly_and_views_do_not_leak() {
    let fab = Fabric::new();
    let (na, nb) = (Namespace::new("limited-a", false, false), Namespace::new("limited-b", false, false));
    na.set_limit(Resource::Qp, Some(2));
    na.set_limit(Resource::MrBytes, Some(10_000));
    let d = dev(&fab, 61, &na, vec![0xffff]);
    let _e = dev(&fab, 62, &nb, vec![0xffff]);
    let ctx = d.context();
    let pd = ctx.alloc_pd().unwrap();
    let cq = ctx.create_cq(8).unwrap();
    let init = QpInitAttr {
        qp_type: QpType::Rc,
        send_cq: cq.clone(),
        recv_cq: cq.clone(),
        srq: None,
        cap: QpCap::default(),
        sq_sig_all: true,
    };
    let _q1 = pd.create_qp(&init).unwrap();
    let _q2 = pd.create_qp(&init).unwrap();
    let e = pd.create_qp(&init).err().expect("third QP refused");
    assert!(matches!(e, VerbsError::LimitExceeded(ref m) if m.contains("qp limit 2")), "{e}");
    assert_eq!(e.errno(), 122);
    assert_eq!(na.usage(Resource::Qp), 2, "nothing half-made");
    let _m = pd.reg_mr(8000, AccessFlags::LOCAL_WRITE).unwrap();
    assert!(matches!(pd.reg_mr(4000, AccessFlags::LOCAL_WRITE).err(), Some(VerbsError::LimitExceeded(_))));
    assert_eq!((na.usage(Resource::Mr), na.usage(Resource::MrBytes)), (1, 8000));
    assert!(kinds(&na).contains(&"limit"));

    let a = softrdma::view::tree("limited-a");
    assert_eq!(a.get("iso61/resources/qp").map(String::as_str), Some("2 / 2"));
    assert!(a.contains_key("iso61/ports/1/gids/1") && a.contains_key("iso61/ports/1/hw_counters/rx_bad_pkey"));
    assert!(a.keys().all(|k| k.starts_with("iso61/")), "only a's device: {:?}", a.keys().collect::<Vec<_>>());
    assert!(a.values().all(|v| !v.contains("10.42.0.62")), "no GID of b");
    let b = softrdma::view::tree("limited-b");
    assert!(b.keys().all(|k| k.starts_with("iso62/")) && !b.is_empty());
}

#[test]
fn partition_mode_sinks_only_granted_gids() {
    let fab = Fabric::new();
    let np = Namespace::new("ib-style", false, false);
    let granted = Gid::from_ipv4("10.42.0.71".parse().unwrap());
    let mut c = DeviceConfig::new("part0", vec![(ip(71), 24), (ip(72), 24)]);
    c.namespace = Some(np.clone());
    c.mode = BoundaryMode::Partition;
    c.granted_gids = vec![granted];
    let d = Device::start(c, fab.attach(mac(71), 1500)).unwrap();
    let gids: Vec<Gid> = d.gids().iter().map(|g| g.gid).collect();
    assert_eq!(gids.len(), 2, "link-local + the one granted GID, not both addresses: {gids:?}");
    assert_eq!(gids[1], granted);
}
