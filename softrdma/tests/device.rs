//! The device through `verbs-api` only: every opcode on both backends,
//! UD, address resolution, and misuse that must fail cleanly.

use std::sync::Arc;
use std::time::{Duration, Instant};

use softrdma::backend::memory::Faults;
use softrdma::testbed::{Testbed, TestbedOptions};
use verbs_api::helpers::{connect, to_init, to_rts, ConnectOptions, Endpoint, PeerInfo};
use verbs_api::{
    AhAttr, Context, Gid, QpAttr, QpAttrMask, QpCap, QpInitAttr, QpPath, QpState, QpType, RecvWr, SendOp, SendWr, Sge,
    VerbsError, WcStatus,
};

fn memory_bed() -> Testbed {
    Testbed::memory(2, Faults::default(), &TestbedOptions::default()).expect("memory testbed")
}

#[test]
fn demo_traffic_on_the_memory_fabric() {
    let bed = memory_bed();
    let c = bed.contexts();
    let r = softrdma::demo::run(&c[0], &c[1]).expect("demo");
    assert_eq!(r.lines.len(), 7);
    let (dc, ec, _) = bed.devices[0].counters();
    assert!(dc.tx_frames > 1000 && ec.rx_icrc_err == 0);
}

#[test]
fn demo_traffic_on_a_lossy_memory_fabric() {
    let faults = Faults { drop: 0.02, dup: 0.02, reorder: 0.02, corrupt: 0.02 };
    let bed = Testbed::memory(2, faults, &TestbedOptions::default()).unwrap();
    let c = bed.contexts();
    softrdma::demo::run(&c[0], &c[1]).expect("demo under loss");
    let s = bed.fabric.as_ref().unwrap().stats();
    assert!(s.dropped > 0 && s.corrupted > 0, "{s:?}");
    let (_, ec, qc) = bed.devices[0].counters();
    assert!(qc.retransmitted_pkts > 0 || ec.rx_icrc_err > 0);
}

#[test]
fn gid_table_and_ports_look_like_rxe() {
    let bed = memory_bed();
    use verbs_api::Provider;
    let names = softrdma::device::SoftProvider.device_names();
    assert!(names.contains(&"srd0".to_string()) && names.contains(&"srd1".to_string()), "{names:?}");
    assert_eq!(softrdma::device::SoftProvider.open("srd1").unwrap().device_name(), "srd1");
    assert!(softrdma::device::SoftProvider.open("mlx5_0").is_err());
    let c = &bed.contexts()[1];
    let gids: Vec<String> = c.gid_table(1).unwrap().iter().map(|g| g.gid.to_string()).collect();
    assert_eq!(gids, ["fe80::53:52ff:fe44:2", "::ffff:10.99.0.2", "fd99::2"]);
    let p = c.query_port(1).unwrap();
    assert_eq!((p.active_mtu, p.gid_tbl_len), (verbs_api::Mtu::M1024, 3));
    assert!(matches!(c.query_port(2), Err(VerbsError::NotFound(_))));
    assert_eq!(c.query_pkey(1, 0).unwrap(), 0xffff);
    assert!(c.query_gid(1, 9).is_err());
    // Addresses change: the table follows.
    bed.devices[1].set_addrs(vec![("10.99.0.77".parse().unwrap(), 24)]);
    assert_eq!(c.query_gid(1, 1).unwrap().to_string(), "::ffff:10.99.0.77");
}

/// Two connected RC endpoints, one per context.
fn rc_pair(c: &[Arc<dyn Context>], o: &ConnectOptions) -> (Endpoint, Endpoint) {
    let mk = |ctx| Endpoint::new(ctx, QpType::Rc, 1 << 16, 64, QpCap::default()).unwrap();
    let (a, b) = (mk(&c[0]), mk(&c[1]));
    connect(&a, &b, o).unwrap();
    (a, b)
}

#[test]
fn posting_in_the_wrong_state_and_overrunning_queues_fail_cleanly() {
    let bed = memory_bed();
    let c = bed.contexts();
    let pd = c[0].alloc_pd().unwrap();
    let cq = c[0].create_cq(4).unwrap();
    let cap = QpCap { max_send_wr: 2, max_recv_wr: 2, ..Default::default() };
    let qp = pd
        .create_qp(&QpInitAttr {
            qp_type: QpType::Rc,
            send_cq: cq.clone(),
            recv_cq: cq.clone(),
            srq: None,
            cap,
            sq_sig_all: true,
        })
        .unwrap();
    let wr = SendWr::new(1, SendOp::Send, vec![]);
    let (i, e) = qp.post_send(std::slice::from_ref(&wr), None).unwrap_err();
    assert_eq!(i, 0);
    assert!(matches!(e, VerbsError::InvalidArgument(ref m) if m.contains("Reset")), "{e}");
    assert_eq!(e.errno(), 22);
    // Illegal transition, missing attributes: EINVAL with the reason.
    let e = qp
        .modify(&QpAttr { qp_state: QpState::Rts, ..QpAttr::default() }, QpAttrMask::STATE, QpPath::default())
        .unwrap_err();
    assert!(e.to_string().contains("no QP transition"), "{e}");
    // Receive queue overrun: the third of two slots is refused, the first two posted.
    to_init(&qp, &ConnectOptions::default()).unwrap();
    let r = RecvWr { wr_id: 0, sg_list: vec![] };
    let (i, e) = qp.post_recv(&[r.clone(), r.clone(), r]).unwrap_err();
    assert_eq!((i, e.errno()), (2, 12));
    // Resource caps beyond the device's are refused at creation.
    let big = QpCap { max_send_wr: 1 << 20, ..Default::default() };
    assert!(pd
        .create_qp(&QpInitAttr {
            qp_type: QpType::Rc,
            send_cq: cq.clone(),
            recv_cq: cq,
            srq: None,
            cap: big,
            sq_sig_all: true
        })
        .is_err());
    assert!(matches!(pd.dealloc(), Err(VerbsError::Busy(_))), "PD with a QP");
}

#[test]
fn deregistering_an_mr_in_use_is_busy_until_the_work_completes() {
    let bed = memory_bed();
    let c = bed.contexts();
    let (x, y) = rc_pair(&c, &ConnectOptions::default());
    let (qps, cqs, mrs) = ([&x.qp, &y.qp], [&x.cq, &y.cq], [&x.mr, &y.mr]);
    // A receive names the MR: EBUSY.
    qps[1]
        .post_recv(&[RecvWr { wr_id: 1, sg_list: vec![Sge { addr: mrs[1].addr(), length: 64, lkey: mrs[1].lkey() }] }])
        .unwrap();
    assert!(matches!(mrs[1].deregister(), Err(VerbsError::Busy(_))));
    qps[0]
        .post_send(
            &[SendWr::new(1, SendOp::Send, vec![Sge { addr: mrs[0].addr(), length: 8, lkey: mrs[0].lkey() }])],
            None,
        )
        .unwrap();
    assert_eq!(cqs[1].wait(1, Duration::from_secs(5))[0].status, WcStatus::Success);
    assert_eq!(cqs[0].wait(1, Duration::from_secs(5))[0].status, WcStatus::Success);
    mrs[1].deregister().unwrap();
    assert!(matches!(mrs[1].deregister(), Err(VerbsError::NotFound(_))));
    // A WRITE to the deregistered R_Key is a remote access error.
    let w = SendWr::new(
        2,
        SendOp::RdmaWrite { remote_addr: mrs[1].addr(), rkey: mrs[1].rkey() },
        vec![Sge { addr: mrs[0].addr(), length: 8, lkey: mrs[0].lkey() }],
    );
    qps[0].post_send(&[w], None).unwrap();
    assert_eq!(cqs[0].wait(1, Duration::from_secs(5))[0].status, WcStatus::RemAccessErr);
    // MR bounds are checked on the CPU path too.
    assert!(mrs[0].write((1 << 16) - 2, &[0; 4]).is_err());
}

#[test]
fn bad_address_handles_are_refused() {
    let bed = memory_bed();
    let c = bed.contexts();
    let pd = c[0].alloc_pd().unwrap();
    let peer = c[1].query_gid(1, 1).unwrap();
    let e = pd.create_ah(&AhAttr::new(peer, 9)).err().expect("sgid_index 9");
    assert!(e.to_string().contains("sgid_index 9"), "{e}");
    let e = pd.create_ah(&AhAttr::new(c[1].query_gid(1, 2).unwrap(), 1)).err().expect("v4 source, v6 destination");
    assert!(e.to_string().contains("different IP families"), "{e}");
    let t = Instant::now();
    let nobody = Gid::from_ipv4("10.99.0.200".parse().unwrap());
    let e = pd.create_ah(&AhAttr::new(nobody, 1)).err().expect("no such host");
    assert!(matches!(e, VerbsError::NotFound(_)), "{e}");
    assert!(t.elapsed() < Duration::from_secs(5), "resolution gives up instead of hanging");
    // A UD send without an AH is refused.
    let cq = c[0].create_cq(4).unwrap();
    let ud = pd
        .create_qp(&QpInitAttr {
            qp_type: QpType::Ud,
            send_cq: cq.clone(),
            recv_cq: cq,
            srq: None,
            cap: QpCap::default(),
            sq_sig_all: true,
        })
        .unwrap();
    to_init(&ud, &ConnectOptions::default()).unwrap();
    to_rts(&ud, 0, &PeerInfo { qpn: 0, psn: 0, gid: peer }, &ConnectOptions::default()).unwrap();
    assert!(ud.post_send(&[SendWr::new(1, SendOp::Send, vec![])], None).is_err());
}

#[test]
fn ipv6_gids_work_end_to_end() {
    let bed = memory_bed();
    let c = bed.contexts();
    let (x, y) = rc_pair(&c, &ConnectOptions { sgid_index: 2, ..Default::default() });
    let (qps, cqs, mrs) = ([&x.qp, &y.qp], [&x.cq, &y.cq], [&x.mr, &y.mr]);
    mrs[0].write(0, b"over IPv6").unwrap();
    let w = SendWr::new(
        1,
        SendOp::RdmaWrite { remote_addr: mrs[1].addr() + 100, rkey: mrs[1].rkey() },
        vec![Sge { addr: mrs[0].addr(), length: 9, lkey: mrs[0].lkey() }],
    );
    qps[0].post_send(&[w], None).unwrap();
    assert_eq!(cqs[0].wait(1, Duration::from_secs(5))[0].status, WcStatus::Success);
    let mut got = [0u8; 9];
    mrs[1].read(100, &mut got).unwrap();
    assert_eq!(&got, b"over IPv6");
}
