//! Device-enforced QoS on the wall clock: a namespace's egress never
//! exceeds its limit by more than 5 % (bytes/s and messages/s), and weighted
//! sharing favours the heavier QP. The exact rates (within 1 %) and the 1:3
//! split are proven deterministically on the simulator's virtual clock
//! (transport/tests/sim.rs, `egress_shaping_…`); on a loaded 2-core machine
//! the wall clock can only bound them, since a starved test thread sends
//! less, never more. Measured numbers: docs/isolation.md (rule 16).

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use softrdma::backend::memory::Fabric;
use softrdma::device::{Device, DeviceConfig};
use softrdma::namespace::Namespace;
use softrdma::qos::RateLimit;
use verbs_api::helpers::{self, ConnectOptions, Endpoint as End};
use verbs_api::{QpCap, QpType, SendOp, SendWr, Sge};

fn dev(fab: &Fabric, i: u8, ns: &Arc<Namespace>) -> Arc<Device> {
    let mut c = DeviceConfig::new(&format!("qos{i}"), vec![(IpAddr::from([10, 43, 0, i]), 24)]);
    c.namespace = Some(ns.clone());
    Device::start(c, fab.attach([2, 0x51, 0, 0, 0, i], 1500)).unwrap()
}

fn end(d: &Arc<Device>) -> End {
    End::new(&d.context(), QpType::Rc, 1 << 20, 1024, QpCap { max_send_wr: 512, ..Default::default() }).unwrap()
}

fn connect(a: &End, b: &End) {
    helpers::connect(a, b, &ConnectOptions::default()).unwrap();
}

/// Keeps `depth` WRITEs of `size` bytes in flight on each pair for `dur`;
/// returns the bytes each pair completed.
fn blast(pairs: &[(&End, &End)], size: u32, depth: usize, dur: Duration) -> Vec<u64> {
    let wr = |a: &End, b: &End| {
        SendWr::new(
            1,
            SendOp::RdmaWrite { remote_addr: b.mr.addr(), rkey: b.mr.rkey() },
            vec![Sge { addr: a.mr.addr(), length: size, lkey: a.mr.lkey() }],
        )
    };
    let mut done = vec![0u64; pairs.len()];
    for (a, b) in pairs {
        for _ in 0..depth {
            a.qp.post_send(&[wr(a, b)], None).unwrap();
        }
    }
    let end = Instant::now() + dur;
    while Instant::now() < end {
        for (i, (a, b)) in pairs.iter().enumerate() {
            for c in a.cq.poll(64) {
                assert_eq!(c.status, verbs_api::WcStatus::Success);
                done[i] += size as u64;
                a.qp.post_send(&[wr(a, b)], None).unwrap();
            }
        }
        std::thread::sleep(Duration::from_micros(200));
    }
    done
}

#[test]
fn byte_rate_limit_is_not_exceeded() {
    let fab = Fabric::new();
    let ns = Namespace::new("qos-bytes", false, false);
    let peer_ns = Namespace::new("qos-peer", false, false);
    let (d0, d1) = (dev(&fab, 1, &ns), dev(&fab, 2, &peer_ns));
    let (a, b) = (end(&d0), end(&d1));
    connect(&a, &b);
    let limit = 20_000_000u64;
    ns.set_rate_limit(RateLimit { bytes_per_sec: Some(limit), msgs_per_sec: None });
    let _ = blast(&[(&a, &b)], 65536, 8, Duration::from_millis(300)); // warm up, drain the burst
    let t = Instant::now();
    let got = blast(&[(&a, &b)], 65536, 8, Duration::from_secs(2))[0];
    let elapsed = t.elapsed().as_secs_f64();
    // Payload rate; the wire also carries 58 header bytes per 1024-byte packet.
    let wire_rate = got as f64 * (1024.0 + 58.0) / 1024.0 / elapsed;
    let err = (wire_rate - limit as f64).abs() / limit as f64;
    eprintln!(
        "byte limit {limit} B/s: measured {wire_rate:.0} B/s ({:+.2} %)",
        (wire_rate / limit as f64 - 1.0) * 100.0
    );
    assert!(err < 0.05, "egress {wire_rate:.0} B/s vs limit {limit} ({:.1} %)", err * 100.0);
}

#[test]
fn message_rate_limit_is_not_exceeded() {
    let fab = Fabric::new();
    let ns = Namespace::new("qos-msgs", false, false);
    let peer_ns = Namespace::new("qos-peer2", false, false);
    let (d0, d1) = (dev(&fab, 3, &ns), dev(&fab, 4, &peer_ns));
    let (a, b) = (end(&d0), end(&d1));
    connect(&a, &b);
    ns.set_rate_limit(RateLimit { bytes_per_sec: None, msgs_per_sec: Some(2000) });
    let _ = blast(&[(&a, &b)], 64, 16, Duration::from_millis(300));
    let t = Instant::now();
    let got = blast(&[(&a, &b)], 64, 16, Duration::from_secs(2))[0] / 64;
    let rate = got as f64 / t.elapsed().as_secs_f64();
    eprintln!("message limit 2000/s: measured {rate:.1}/s");
    assert!((1000.0..2100.0).contains(&rate), "{rate:.0} msgs/s vs 2000");
}

#[test]
fn weighted_sharing_between_two_qps() {
    let fab = Fabric::new();
    let ns = Namespace::new("qos-weights", false, false);
    let peer_ns = Namespace::new("qos-peer3", false, false);
    let (d0, d1) = (dev(&fab, 5, &ns), dev(&fab, 6, &peer_ns));
    let (a1, b1, a2, b2) = (end(&d0), end(&d1), end(&d0), end(&d1));
    connect(&a1, &b1);
    connect(&a2, &b2);
    d0.set_qp_weight(a1.qp.qp_num(), 1);
    d0.set_qp_weight(a2.qp.qp_num(), 3);
    ns.set_rate_limit(RateLimit { bytes_per_sec: Some(16_000_000), msgs_per_sec: None });
    let got = blast(&[(&a1, &b1), (&a2, &b2)], 16384, 16, Duration::from_secs(2));
    let ratio = got[1] as f64 / got[0] as f64;
    eprintln!("weights 1:3 under 16 MB/s: {got:?}, ratio {ratio:.2}");
    assert!((1.5..3.3).contains(&ratio), "weights 1:3 gave {got:?} (ratio {ratio:.2})");
}
