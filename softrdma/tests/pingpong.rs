//! `softrdma pingpong` against itself on the in-memory fabric: the address
//! exchange over TCP on localhost, the QP bring-up and the traffic of all four
//! examples, with every received byte checked (no privileges needed). The
//! same code runs against kernel rxe in `interop/run.sh`.

use std::time::Duration;

use softrdma::backend::memory::Faults;
use softrdma::pingpong::{run_pair, Kind, PpOptions};
use softrdma::testbed::{Testbed, TestbedOptions};
use verbs_api::Mtu;

fn run(kind: Kind, size: usize, iters: u32, gid: u32, chk: bool) {
    run_with(kind, size, iters, gid, chk, false);
}

fn run_with(kind: Kind, size: usize, iters: u32, gid: u32, chk: bool, events: bool) {
    let bed = Testbed::memory(2, Faults::default(), &TestbedOptions::default()).expect("memory testbed");
    let ctx = bed.contexts();
    let o = PpOptions {
        size,
        iters,
        gid_idx: Some(gid),
        chk,
        events,
        num_qp: 4,
        rx_depth: 16,
        timeout: Duration::from_secs(20),
        mtu: Mtu::M1024,
        ..PpOptions::new(kind)
    };
    let (s, c) = run_pair(&ctx[0], &ctx[1], &o, 0).unwrap_or_else(|e| panic!("{kind} size {size}: {e}"));
    assert!(c.sends >= iters as u64 && c.recvs >= iters as u64, "{kind}: client {c:?}");
    assert!(s.sends >= iters as u64 && s.recvs >= iters as u64, "{kind}: server {s:?}");
    assert_eq!(s.verified, s.recvs);
    assert_eq!(c.verified, c.recvs);
    for r in [&s, &c] {
        // One event per wake-up: at least one, at most one per completion.
        let wakes = if events { 1..=r.sends + r.recvs } else { 0..=0 };
        assert!(wakes.contains(&(r.cq_events as u64)), "{kind} events {events}: {} CQ events, {r:?}", r.cq_events);
    }
    assert_eq!(c.remote.len(), s.local.len());
    for (r, l) in c.remote.iter().zip(&s.local) {
        assert_eq!(r, l, "the client got the server's address");
    }
}

#[test]
fn rc_sizes_around_the_mtu() {
    for size in [1, 1001, 1024, 1025, 20003] {
        run(Kind::Rc, size, 20, 1, true);
    }
}

#[test]
fn uc_ipv6() {
    run(Kind::Uc, 3001, 20, 2, true);
}

#[test]
fn ud_up_to_the_mtu() {
    for size in [1, 1001, 1024] {
        run(Kind::Ud, size, 20, 1, true);
    }
}

#[test]
fn srq_several_qps() {
    run(Kind::Srq, 5003, 40, 1, false);
}

/// `-e`, as the tools take it: sleep on the completion channel, re-arm, poll.
#[test]
fn every_kind_with_cq_events() {
    for kind in [Kind::Rc, Kind::Uc, Kind::Ud, Kind::Srq] {
        run_with(kind, 1001, 200, 1, true, true);
    }
}
