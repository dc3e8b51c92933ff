//! RC payloads on the in-memory fabric stay in the sender's MR until the
//! receiving thread copies them into their frames (`softrdma::lent`). What
//! arrives must be what a copy at send time would have delivered, on every
//! path a frame can take: the fast path, a capture, a lossy fabric; and
//! UC, which completes as its frames leave, must never lend.

use std::sync::Arc;
use std::time::{Duration, Instant};

use softrdma::backend::memory::Faults;
use softrdma::capture::{read_frames, CapturedFrame};
use softrdma::testbed::{ScratchDir, Testbed, TestbedOptions};
use transport::wire::{classify, Frame, FrameKind};
use verbs_api::helpers::{connect, ConnectOptions, Endpoint};
use verbs_api::{Context, QpCap, QpType, RecvWr, SendOp, SendWr, WcStatus};

const MR: usize = 1 << 20;

fn pair(c: &[Arc<dyn Context>], t: QpType) -> (Endpoint, Endpoint) {
    let mk = |ctx| Endpoint::new(ctx, t, MR, 256, QpCap::default()).unwrap();
    let (a, b) = (mk(&c[0]), mk(&c[1]));
    connect(&a, &b, &ConnectOptions::default()).unwrap();
    (a, b)
}

fn pattern(seed: u8) -> Vec<u8> {
    (0..MR).map(|i| (i as u32).wrapping_mul(2654435761).rotate_left(seed as u32) as u8 ^ seed).collect()
}

fn wait(cq: &Arc<dyn verbs_api::Cq>, n: usize) {
    let t = Instant::now();
    let mut got = 0;
    while got < n {
        for wc in cq.poll(16) {
            assert_eq!(wc.status, WcStatus::Success, "{wc:?}");
            got += 1;
        }
        assert!(t.elapsed() < Duration::from_secs(20), "{got} of {n} completions");
    }
}

/// WRITEs of 64 KiB (64 frames of 1 KiB each), a SEND of 8 KiB and a
/// WRITE of 100 bytes from `a` to `b`; checks `b`'s bytes. Returns how many
/// frames `a` sent with lent payloads.
fn traffic(bed: &Testbed, a: &Endpoint, b: &Endpoint, seed: u8) -> u64 {
    let lent0 = bed.devices[0].counters().0.tx_payloads_lent;
    let src = pattern(seed);
    a.mr.write(0, &src).unwrap();
    b.mr.write(0, &vec![0; MR]).unwrap();
    let rwr = RecvWr { wr_id: 7, sg_list: vec![b.sge(512 * 1024, 8192)] };
    b.qp.post_recv(&[rwr]).unwrap();
    let mut wrs = Vec::new();
    for k in 0..6u64 {
        let at = k * 65536;
        let op = SendOp::RdmaWrite { remote_addr: b.mr.addr() + at, rkey: b.mr.rkey() };
        wrs.push(SendWr::new(k, op, vec![a.sge(at, 65536)]));
    }
    // Two gather entries, the second starting mid-region: one frame, two
    // payload pieces from two places of the MR.
    wrs.push(SendWr::new(6, SendOp::Send, vec![a.sge(512 * 1024, 5000), a.sge(600 * 1024, 3192)]));
    let op = SendOp::RdmaWrite { remote_addr: b.mr.addr() + 700 * 1024, rkey: b.mr.rkey() };
    wrs.push(SendWr::new(7, op, vec![a.sge(700 * 1024, 100)]));
    let n = wrs.len();
    a.qp.post_send(&wrs, None).unwrap();
    wait(&a.cq, n);
    if a.qp.qp_type() == QpType::Rc {
        wait(&b.cq, 1);
    } else {
        // UC completes as its frames leave: wait for the bytes instead.
        let t = Instant::now();
        let mut last = [0u8; 1];
        while {
            b.mr.read(700 * 1024 + 99, &mut last).unwrap();
            last[0] != src[700 * 1024 + 99]
        } {
            assert!(t.elapsed() < Duration::from_secs(20), "UC data never arrived");
        }
        wait(&b.cq, 1);
    }
    let mut got = vec![0u8; MR];
    b.mr.read(0, &mut got).unwrap();
    assert!(got[..6 * 65536] == src[..6 * 65536], "WRITEs arrived changed");
    assert!(got[512 * 1024..512 * 1024 + 5000] == src[512 * 1024..512 * 1024 + 5000], "SEND, first piece");
    assert!(got[512 * 1024 + 5000..512 * 1024 + 8192] == src[600 * 1024..600 * 1024 + 3192], "SEND, second piece");
    assert!(got[700 * 1024..700 * 1024 + 100] == src[700 * 1024..700 * 1024 + 100], "short WRITE");
    bed.devices[0].counters().0.tx_payloads_lent - lent0
}

/// RDMA READs by `a` of `b`'s MR: 64 KiB, 5000 bytes (a short last
/// frame), 300 bytes (gathered into the frame, too short to lend) and 100
/// bytes (through the responder's scratch buffer). Checks `a`'s bytes and
/// returns how many frames `b` sent with lent payloads.
fn reads(bed: &Testbed, a: &Endpoint, b: &Endpoint, seed: u8) -> u64 {
    let lent0 = bed.devices[1].counters().0.tx_payloads_lent;
    let src = pattern(seed);
    b.mr.write(0, &src).unwrap();
    a.mr.write(0, &vec![0; MR]).unwrap();
    let parts = [(0u64, 65536u32), (70_000, 5000), (80_000, 300), (90_000, 100)];
    let wrs: Vec<SendWr> = parts
        .iter()
        .enumerate()
        .map(|(k, &(at, len))| {
            let op = SendOp::RdmaRead { remote_addr: b.mr.addr() + at, rkey: b.mr.rkey() };
            SendWr::new(k as u64, op, vec![a.sge(at + 100_000, len)])
        })
        .collect();
    a.qp.post_send(&wrs, None).unwrap();
    wait(&a.cq, wrs.len());
    let mut got = vec![0u8; MR];
    a.mr.read(0, &mut got).unwrap();
    for (at, len) in parts {
        let (at, len) = (at as usize, len as usize);
        assert!(got[at + 100_000..at + 100_000 + len] == src[at..at + len], "READ of {len} at {at}");
    }
    bed.devices[1].counters().0.tx_payloads_lent - lent0
}

#[test]
fn read_responses_are_lent_and_arrive_whole() {
    let bed = Testbed::memory(2, Faults::default(), &TestbedOptions::default()).unwrap();
    let (a, b) = pair(&bed.contexts(), QpType::Rc);
    let lent: u64 = (1..=3).map(|seed| reads(&bed, &a, &b, seed)).sum();
    // Per round, 64 + 4 frames of 1 KiB; the last frames of the first two
    // READs (the 904-byte tail of 5000) and the two short READs are copied.
    let want = if softrdma::lent::worth_it() { 3 * 68 } else { 0 };
    assert_eq!(lent, want);
}

#[test]
fn read_responses_on_a_lossy_fabric_and_in_a_capture_arrive_whole() {
    let faults = Faults { drop: 0.01, dup: 0.01, reorder: 0.01, corrupt: 0.01 };
    let bed = Testbed::memory(2, faults, &TestbedOptions::default()).unwrap();
    let (a, b) = pair(&bed.contexts(), QpType::Rc);
    reads(&bed, &a, &b, 7);
    let frames = captured("read", 1, |bed, a, b| {
        assert_eq!(reads(bed, a, b, 8), 0, "a device that captures lends nothing");
    });
    let responses = frames
        .iter()
        .map(|f| Frame::parse(&f.data).unwrap())
        .filter(|f| f.packet.bth().opcode.info().operation == transport::wire::opcode::Operation::ReadResponse)
        .count();
    assert_eq!(responses, 64 + 5 + 1 + 1);
}

#[test]
fn rc_payloads_are_lent_and_arrive_whole() {
    let bed = Testbed::memory(2, Faults::default(), &TestbedOptions::default()).unwrap();
    let (a, b) = pair(&bed.contexts(), QpType::Rc);
    let mut lent = 0;
    for seed in 1..=3 {
        lent += traffic(&bed, &a, &b, seed);
    }
    if !softrdma::lent::worth_it() {
        assert_eq!(lent, 0, "lent on one CPU");
        return;
    }
    // 384 WRITE frames and 8 SEND frames of 1 KiB per round; the 100-byte
    // WRITE is copied. The first frames of a stream take the switch's slow
    // path (learning), which copies.
    assert!(lent >= 3 * 380, "only {lent} frames left with lent payloads");
    assert!(lent <= 3 * 392, "{lent} frames lent: more than had payloads of 1 KiB");
    let copied_by_receiver = bed.fabric.as_ref().unwrap().stats().lent;
    assert!(copied_by_receiver > 0 && copied_by_receiver <= lent, "{copied_by_receiver} of {lent}");
    // Each of those had its ICRC checked as its payload was copied in
    // (`lent::fill_checked`), and not computed again by the device.
    let checked = bed.devices[1].counters().0.rx_icrc_checked_by_link;
    assert_eq!(checked, copied_by_receiver, "frames checked by the link");
    assert_eq!(bed.devices[1].counters().1.rx_icrc_err, 0);
}

#[test]
fn uc_never_lends() {
    let bed = Testbed::memory(2, Faults::default(), &TestbedOptions::default()).unwrap();
    let (a, b) = pair(&bed.contexts(), QpType::Uc);
    assert_eq!(traffic(&bed, &a, &b, 4), 0);
    assert_eq!(bed.devices[1].counters().0.rx_icrc_checked_by_link, 0, "nothing lent, nothing checked by the link");
}

#[test]
fn a_lossy_fabric_gets_lent_payloads_copied_in_first() {
    let faults = Faults { drop: 0.01, dup: 0.01, reorder: 0.01, corrupt: 0.01 };
    let bed = Testbed::memory(2, faults, &TestbedOptions::default()).unwrap();
    let (a, b) = pair(&bed.contexts(), QpType::Rc);
    traffic(&bed, &a, &b, 5);
    let f = bed.fabric.as_ref().unwrap().stats();
    assert!(f.corrupted > 0 && f.duplicated > 0, "the faults did not happen: {f:?}");
}

/// Runs `run` on two devices that capture, and returns device `dev`'s
/// RoCEv2 frames, each checked to pass its ICRC.
fn captured(tag: &str, dev: usize, run: impl FnOnce(&Testbed, &Endpoint, &Endpoint)) -> Vec<CapturedFrame> {
    let dir = ScratchDir::new(&format!("srd-lent-{tag}")).unwrap();
    let o = TestbedOptions { pcap_prefix: Some(dir.join("dev")), ..Default::default() };
    let bed = Testbed::memory(2, Faults::default(), &o).unwrap();
    let (a, b) = pair(&bed.contexts(), QpType::Rc);
    run(&bed, &a, &b);
    drop((a, b));
    drop(bed);
    let frames = read_frames(&dir.join(format!("dev-{dev}.pcap"))).unwrap();
    let roce: Vec<CapturedFrame> = frames.into_iter().filter(|f| classify(&f.data) == FrameKind::RoceV2).collect();
    for f in &roce {
        assert!(Frame::verify(&f.data).is_ok(), "captured frame {} fails its ICRC", f.number);
    }
    roce
}

#[test]
fn a_captured_frame_holds_its_payload() {
    let frames = captured("write", 0, |bed, a, b| {
        assert_eq!(traffic(bed, a, b, 6), 0, "a device that captures lends nothing");
    });
    let src = pattern(6);
    let mut checked = 0;
    for f in &frames {
        let frame = Frame::parse(&f.data).unwrap();
        let payload = frame.packet.payload();
        if let (Some(reth), 1024) = (frame.repr.ib.ext.reth, payload.len()) {
            let at = (reth.va & 0xffff_ffff) as usize;
            assert!(src[at..at + 1024] == *payload, "frame {} carries other bytes", f.number);
            checked += 1;
        }
    }
    assert_eq!(checked, 6, "the first frame of each 64 KiB WRITE");
}

/// Two MRs that WRITE to each other at once, each a lent source on one
/// side and a destination on the other: a receiver that held the source's
/// lock while it wrote the destination would deadlock here.
#[test]
fn two_mrs_writing_to_each_other_at_once_both_finish() {
    let bed = Testbed::memory(2, Faults::default(), &TestbedOptions::default()).unwrap();
    let (a, b) = pair(&bed.contexts(), QpType::Rc);
    a.mr.write(0, &pattern(9)).unwrap();
    b.mr.write(0, &pattern(10)).unwrap();
    let blast = |from: &Endpoint, to: &Endpoint| {
        for round in 0..20u64 {
            let wrs: Vec<SendWr> = (0..8u64)
                .map(|k| {
                    // Source and destination ranges of both directions overlap.
                    let at = (k * 65536 + round * 4096) % (MR as u64 - 65536);
                    let op = SendOp::RdmaWrite { remote_addr: to.mr.addr() + at, rkey: to.mr.rkey() };
                    SendWr::new(round * 8 + k, op, vec![from.sge(at, 65536)])
                })
                .collect();
            from.qp.post_send(&wrs, None).unwrap();
            wait(&from.cq, wrs.len());
        }
    };
    std::thread::scope(|s| {
        s.spawn(|| blast(&a, &b));
        s.spawn(|| blast(&b, &a));
    });
    if softrdma::lent::worth_it() {
        let (la, lb) = (bed.devices[0].counters().0.tx_payloads_lent, bed.devices[1].counters().0.tx_payloads_lent);
        assert!(la > 0 && lb > 0, "both directions lent: {la}, {lb}");
    }
}
