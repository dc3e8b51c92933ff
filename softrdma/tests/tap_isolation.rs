//! Tenants in real network namespaces behind real TAPs (root; in CI a skip
//! is a failure): traffic inside a partition and a job works; a wrong
//! partition and a wrong job are refused, counted and audited on the
//! receiving namespace's stream (RoCEv1 and spoofing: isolation.rs).

use std::time::Duration;

use softrdma::require_root;
use softrdma::testbed::{Tenant, Testbed, TestbedOptions};
use verbs_api::helpers::{connect, ConnectOptions, Endpoint};
use verbs_api::{Context, QpCap, QpType, SendOp, SendWr, WcStatus};

/// One RDMA WRITE from device `i` to device `j` using P_Key index `pk`; the status.
fn write(ctx: &[std::sync::Arc<dyn Context>], i: usize, j: usize, pk: u16) -> WcStatus {
    let mk = |c| Endpoint::new(c, QpType::Rc, 4096, 8, QpCap::default()).unwrap();
    let (a, b) = (mk(&ctx[i]), mk(&ctx[j]));
    let o = ConnectOptions { pkey_index: pk, timeout: 10, retry_cnt: 2, ..Default::default() };
    connect(&a, &b, &o).unwrap();
    let w = SendWr::new(1, SendOp::RdmaWrite { remote_addr: b.mr.addr(), rkey: b.mr.rkey() }, vec![a.sge(0, 64)]);
    a.qp.post_send(&[w], None).unwrap();
    a.cq.wait(1, Duration::from_secs(10)).first().map(|c| c.status).expect("completion")
}

#[test]
fn tenants_in_real_namespaces() {
    require_root!();
    // srd0, srd1: tenant A (partition 0x8001, job 7); srd2: tenant B (0x8002, job 7);
    // srd3: tenant C (0x8001, job 9).
    let tenants = vec![
        Tenant { pkeys: vec![0xffff, 0x8001], jkey: Some(7) },
        Tenant { pkeys: vec![0xffff, 0x8001], jkey: Some(7) },
        Tenant { pkeys: vec![0xffff, 0x8002], jkey: Some(7) },
        Tenant { pkeys: vec![0xffff, 0x8001], jkey: Some(9) },
    ];
    let bed = Testbed::tap(4, &TestbedOptions { tenants: Some(tenants), ..Default::default() }).expect("TAP testbed");
    let ctx = bed.contexts();
    assert_eq!(write(&ctx, 0, 1, 1), WcStatus::Success, "same partition, same job");
    assert_eq!(write(&ctx, 2, 0, 1), WcStatus::RetryExcErr, "wrong partition");
    assert_eq!(write(&ctx, 3, 1, 1), WcStatus::RetryExcErr, "wrong job");
    let ns0 = bed.devices[0].namespace();
    let ns1 = bed.devices[1].namespace();
    assert_eq!(ns0.name, bed.netns_of(0).unwrap(), "the tenant is the device's network namespace");
    assert!(ns0.audit.events().iter().any(|e| e.kind == "pkey"), "srd0 audited the foreign partition");
    assert!(ns1.audit.events().iter().any(|e| e.kind == "jkey"), "srd1 audited the foreign job");
    assert!(bed.devices[2].namespace().audit.events().is_empty(), "the refused side's stream is its own");
    // Legitimate traffic is unaffected by all of the above.
    assert_eq!(write(&ctx, 1, 0, 1), WcStatus::Success);
}
