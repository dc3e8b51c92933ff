//! Tenants in real network namespaces behind real TAPs (root; in CI a skip
//! is a failure): traffic inside a partition and inside a job works; a
//! wrong partition, limited↔limited members, a wrong job, a wrong Q_Key, an
//! R_Key of another PD, a spoofed source GID, another namespace's
//! destination GID and a RoCEv1 frame are each refused, counted and audited
//! on the receiving namespace's stream — and legitimate traffic is unaffected.

mod common;

use std::time::Duration;

use softrdma::backend::netns;
use softrdma::backend::tap::{open_tap, TapConfig};
use softrdma::require_root;
use softrdma::testbed::{device_mac, Tenant, Testbed, TestbedOptions};
use verbs_api::helpers::{connect, ConnectOptions, Endpoint};
use verbs_api::{AccessFlags, AhAttr, Context, QpCap, QpType, RecvWr, SendOp, SendWr, WcStatus};

fn end(c: &std::sync::Arc<dyn Context>, t: QpType) -> Endpoint {
    Endpoint::new(c, t, 4096, 8, QpCap::default()).unwrap()
}

fn opts(pk: u16) -> ConnectOptions {
    ConnectOptions { pkey_index: pk, timeout: 10, retry_cnt: 2, ..Default::default() }
}

/// One RDMA WRITE from `a` to `b`; the requester's status.
fn write(a: &Endpoint, b: &Endpoint, rkey: u32, addr: u64) -> WcStatus {
    let w = SendWr::new(1, SendOp::RdmaWrite { remote_addr: addr, rkey }, vec![a.sge(0, 64)]);
    a.qp.post_send(&[w], None).unwrap();
    let _ = b;
    a.cq.wait(1, Duration::from_secs(10)).first().map(|c| c.status).expect("completion")
}

fn pair(ctx: &[std::sync::Arc<dyn Context>], i: usize, j: usize, pk: u16) -> (Endpoint, Endpoint) {
    let (a, b) = (end(&ctx[i], QpType::Rc), end(&ctx[j], QpType::Rc));
    connect(&a, &b, &opts(pk)).unwrap();
    (a, b)
}

fn kinds(bed: &Testbed, i: usize) -> Vec<&'static str> {
    bed.devices[i].namespace().audit.events().iter().map(|e| e.kind).collect()
}

#[test]
fn tenants_in_real_namespaces() {
    require_root!();
    // srd0, srd1: tenant A — full member of 0x8001, limited member of 0x0001.
    // srd2: tenant B — 0x8002. srd3, srd4: tenant C — job 9, 0x8001.
    let a = Tenant { pkeys: vec![0xffff, 0x8001, 0x0001], jkey: None };
    let b = Tenant { pkeys: vec![0xffff, 0x8002], jkey: None };
    let c = Tenant { pkeys: vec![0xffff, 0x8001], jkey: Some(9) };
    let tenants = vec![a.clone(), a, b, c.clone(), c];
    let bed = Testbed::tap(5, &TestbedOptions { tenants: Some(tenants), ..Default::default() }).expect("TAP testbed");
    let ctx = bed.contexts();
    assert_eq!(bed.devices[0].namespace().name, bed.netns_of(0).unwrap(), "a tenant is its network namespace");

    let (x, y) = pair(&ctx, 0, 1, 1);
    assert_eq!(write(&x, &y, y.mr.rkey(), y.mr.addr()), WcStatus::Success, "inside the partition");
    let (p, q) = pair(&ctx, 3, 4, 1);
    assert_eq!(write(&p, &q, q.mr.rkey(), q.mr.addr()), WcStatus::Success, "inside the job");

    let (s, t) = pair(&ctx, 2, 0, 1);
    assert_eq!(write(&s, &t, t.mr.rkey(), t.mr.addr()), WcStatus::RetryExcErr, "wrong partition");
    let (s, t) = pair(&ctx, 0, 1, 2);
    assert_eq!(write(&s, &t, t.mr.rkey(), t.mr.addr()), WcStatus::RetryExcErr, "limited with limited");
    let (s, t) = pair(&ctx, 3, 1, 1);
    assert_eq!(write(&s, &t, t.mr.rkey(), t.mr.addr()), WcStatus::RetryExcErr, "another job");
    // R_Key of an MR in another PD of the target.
    let other = ctx[1].alloc_pd().unwrap().reg_mr(64, AccessFlags::all()).unwrap();
    let (s, t) = pair(&ctx, 0, 1, 1);
    assert_eq!(write(&s, &t, other.rkey(), other.addr()), WcStatus::RemAccessErr, "R_Key of another PD");
    // Wrong Q_Key, UD between the two devices of tenant A.
    let (u, v) = (end(&ctx[0], QpType::Ud), end(&ctx[1], QpType::Ud));
    connect(&u, &v, &opts(0)).unwrap();
    v.qp.post_recv(&[RecvWr { wr_id: 1, sg_list: vec![v.sge(0, 1024)] }]).unwrap();
    let ah = u.pd.create_ah(&AhAttr::new(ctx[1].query_gid(1, 1).unwrap(), 1)).unwrap();
    let mut w = SendWr::new(1, SendOp::Send, vec![u.sge(0, 32)]);
    w.remote_qpn = v.qp.qp_num();
    w.remote_qkey = 0x4242;
    u.qp.post_send(&[w], Some(&ah)).unwrap();
    assert_eq!(u.cq.wait(1, Duration::from_secs(5))[0].status, WcStatus::Success, "UD send completes locally");

    // Forged frames, injected through a second TAP on srd1's bridge.
    let ns1 = bed.netns_of(1).unwrap().to_string();
    let mut cfg = TapConfig::in_netns(ns1.clone(), "srdinj0");
    cfg.mac = Some([0x02, 0xee, 0, 0, 0, 1]);
    let inj = open_tap(&cfg).unwrap();
    netns::enslave(Some(&ns1), "srdinj0", "srdbr").unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let mac1 = device_mac(1);
    let qpn = y.qp.qp_num();
    inj.tx.send(&common::forge([10, 99, 0, 3], [10, 99, 0, 2], mac1, qpn, 2, 0x8001)).unwrap(); // srd2's address, not y's peer
    inj.tx.send(&common::forge([10, 99, 0, 1], [10, 99, 0, 3], mac1, qpn, 2, 0x8001)).unwrap(); // to another namespace's GID
    let mut v1 = common::forge([10, 99, 0, 1], [10, 99, 0, 2], mac1, qpn, 2, 0x8001);
    v1[12..14].copy_from_slice(&0x8915u16.to_be_bytes());
    inj.tx.send(&v1).unwrap();
    std::thread::sleep(Duration::from_millis(300));

    let (dc, ec, _) = bed.devices[1].counters();
    assert!(ec.rx_bad_pkey >= 1, "limited↔limited counted: {ec:?}");
    assert!(ec.rx_bad_jkey >= 1 && ec.rx_bad_qkey == 1 && ec.rx_spoofed_sgid == 1 && ec.rx_foreign_dgid == 1, "{ec:?}");
    assert_eq!(dc.rx_rocev1_dropped, 1);
    let k1 = kinds(&bed, 1);
    for kind in ["pkey", "jkey", "qkey", "rkey", "gid_spoof", "foreign_dgid", "rocev1"] {
        assert!(k1.contains(&kind), "srd1's namespace audited {kind}: {k1:?}");
    }
    assert!(kinds(&bed, 0).contains(&"pkey"), "srd0 audited the foreign partition");
    assert!(kinds(&bed, 2).is_empty() && kinds(&bed, 3).is_empty(), "a sender's stream holds nothing of the victim's");
    assert!(v.cq.poll(4).is_empty() && y.cq.poll(4).is_empty(), "nothing refused was delivered");
    // Legitimate traffic is unaffected by all of the above.
    let (x, y) = pair(&ctx, 1, 0, 1);
    assert_eq!(write(&x, &y, y.mr.rkey(), y.mr.addr()), WcStatus::Success);
    drop(inj);
}
