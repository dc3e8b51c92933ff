//! A connected QP whose path MTU is above what the link takes (rxe accepts
//! one: its port's max_mtu is 4096 whatever the netdev's MTU): its frames
//! are not sent, and each is counted (`tx_oversize`, `tx_errors`), as on a
//! TAP where the bridge would drop them; the WR ends in RETRY_EXC_ERR.
//! The same holds on the in-memory fabric, so a test there fails as it
//! would on a wire.

use std::time::Duration;

use softrdma::backend::memory::Faults;
use softrdma::testbed::{Testbed, TestbedOptions};
use verbs_api::helpers::{connect, ConnectOptions, Endpoint};
use verbs_api::{Mtu, QpCap, QpType, SendOp, SendWr, WcStatus};

fn write(a: &Endpoint, b: &Endpoint, len: u32) -> SendWr {
    let op = SendOp::RdmaWrite { remote_addr: b.mr.addr(), rkey: b.mr.rkey() };
    SendWr::new(1, op, vec![a.sge(0, len)])
}

#[test]
fn frames_longer_than_the_link_takes_are_counted_not_sent() {
    // The testbed's links have MTU 1500: the port's active MTU is 1024.
    let bed = Testbed::memory(2, Faults::default(), &TestbedOptions::default()).unwrap();
    let c = bed.contexts();
    assert_eq!(c[0].query_port(1).unwrap().active_mtu, Mtu::M1024);
    let mk = |ctx| Endpoint::new(ctx, QpType::Rc, 1 << 16, 16, QpCap::default()).unwrap();
    let (a, b) = (mk(&c[0]), mk(&c[1]));
    let o = ConnectOptions { mtu: Mtu::M4096, timeout: 8, retry_cnt: 1, ..Default::default() };
    connect(&a, &b, &o).unwrap();
    let (peer_before, _, _) = bed.devices[1].counters();

    // 2000 bytes make one packet at path MTU 4096, 2 062 bytes on the wire.
    a.mr.write(0, &[0xab; 2000]).unwrap();
    a.qp.post_send(&[write(&a, &b, 2000)], None).unwrap();
    let wc = a.cq.wait(1, Duration::from_secs(10)).pop().expect("a completion");
    assert_eq!(wc.status, WcStatus::RetryExcErr);
    let (da, _, qa) = bed.devices[0].counters();
    assert_eq!(da.tx_oversize, 1 + qa.retransmitted_pkts, "the first send and every retry");
    assert!(da.tx_oversize >= 2, "{da:?}");
    assert_eq!(da.tx_errors, da.tx_oversize);
    let (peer, _, _) = bed.devices[1].counters();
    assert_eq!(peer.rx_frames, peer_before.rx_frames, "nothing reached the peer");
    let mut got = [0u8; 4];
    b.mr.read(0, &mut got).unwrap();
    assert_eq!(got, [0; 4]);

    // Within the link's MTU the same devices carry it.
    let (x, y) = (mk(&c[0]), mk(&c[1]));
    connect(&x, &y, &ConnectOptions { mtu: Mtu::M1024, ..Default::default() }).unwrap();
    x.mr.write(0, &[0xcd; 2000]).unwrap();
    x.qp.post_send(&[write(&x, &y, 2000)], None).unwrap();
    let wc = x.cq.wait(1, Duration::from_secs(10)).pop().expect("a completion");
    assert_eq!(wc.status, WcStatus::Success);
    y.mr.read(1996, &mut got).unwrap();
    assert_eq!(got, [0xcd; 4]);
    assert_eq!(bed.devices[0].counters().0.tx_oversize, da.tx_oversize);
}
