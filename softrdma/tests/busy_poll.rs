//! Busy polling (`DeviceConfig::busy_poll`): an application thread that
//! polls drives the device itself, and a device whose application stops
//! polling falls back to its receive thread without losing anything.

use std::sync::Arc;
use std::time::{Duration, Instant};

use softrdma::backend::memory::Faults;
use softrdma::testbed::{ScratchDir, Testbed, TestbedOptions};
use verbs_api::helpers::{connect, ConnectOptions, Endpoint};
use verbs_api::{Context, QpCap, QpType, SendOp, SendWr, WcStatus, WorkCompletion};

fn bed(busy_poll: bool) -> Testbed {
    let o = TestbedOptions { no_busy_poll: !busy_poll, ..Default::default() };
    Testbed::memory(2, Faults::default(), &o).expect("memory testbed")
}

/// Busy polling with a longer interval than the default 200 µs, for tests
/// that need a poll, not the receive thread, to take a frame: the test
/// thread, descheduled for an interval between two polls (the other tests
/// of this file spin in parallel on two CPUs), would otherwise hand the
/// link back to the receive thread now and then.
fn bed_polling_every(interval: Duration) -> Testbed {
    let o = TestbedOptions { busy_poll_interval: Some(interval), ..Default::default() };
    Testbed::memory(2, Faults::default(), &o).expect("memory testbed")
}

fn pair(c: &[Arc<dyn Context>]) -> (Endpoint, Endpoint) {
    let mk = |ctx| Endpoint::new(ctx, QpType::Rc, 1 << 16, 256, QpCap::default()).unwrap();
    let (a, b) = (mk(&c[0]), mk(&c[1]));
    connect(&a, &b, &ConnectOptions::default()).unwrap();
    (a, b)
}

fn write(a: &Endpoint, b: &Endpoint, id: u64, at: u64, len: u32) -> SendWr {
    let op = SendOp::RdmaWrite { remote_addr: b.mr.addr() + at, rkey: b.mr.rkey() };
    SendWr::new(id, op, vec![a.sge(at, len)])
}

/// Spins on `cq.poll` (the busy-polling path) for one completion.
fn spin_one(cq: &Arc<dyn verbs_api::Cq>) -> WorkCompletion {
    let t = Instant::now();
    loop {
        if let Some(wc) = cq.poll(1).pop() {
            return wc;
        }
        assert!(t.elapsed() < Duration::from_secs(5), "no completion while spinning");
        std::hint::spin_loop();
    }
}

/// Spins on MR reads until byte `off` of `ep`'s MR is `want`.
fn spin_byte(ep: &Endpoint, off: usize, want: u8) {
    let t = Instant::now();
    let mut b = [0u8];
    while {
        ep.mr.read(off, &mut b).unwrap();
        b[0] != want
    } {
        assert!(t.elapsed() < Duration::from_secs(5), "byte {off} never became {want}");
    }
}

/// A write_lat-style ping-pong, both sides spinning on memory and the CQ.
fn ping_pong(a: &Endpoint, b: &Endpoint, rounds: u8) {
    for i in 1..=rounds {
        a.mr.write(100, &[i]).unwrap();
        a.qp.post_send(&[write(a, b, i as u64, 100, 1)], None).unwrap();
        spin_byte(b, 100, i);
        b.mr.write(200, &[i]).unwrap();
        b.qp.post_send(&[write(b, a, i as u64, 200, 1)], None).unwrap();
        spin_byte(a, 200, i);
        assert_eq!(spin_one(&a.cq).status, WcStatus::Success);
        // a holds its ACK of b's WRITE until a's next post or a poll 5 µs
        // on (busy_poll::ACK_HOLD), as a thread of its own would poll on.
        let t = Instant::now();
        let wc = loop {
            assert!(a.cq.poll(1).is_empty());
            if let Some(wc) = b.cq.poll(1).pop() {
                break wc;
            }
            assert!(t.elapsed() < Duration::from_secs(5), "no completion while spinning");
        };
        assert_eq!(wc.status, WcStatus::Success);
    }
}

#[test]
fn a_polling_thread_takes_the_frames_itself() {
    let bed = bed(true);
    let (a, b) = pair(&bed.contexts());
    ping_pong(&a, &b, 200);
    let (da, _, qa) = bed.devices[0].counters();
    let (db, _, qb) = bed.devices[1].counters();
    // Nearly every frame reaches the transport on the thread that polls;
    // the receive threads only see the first ones (before polling began).
    for (name, d) in [("a", da), ("b", db)] {
        assert!(d.rx_polled * 10 >= d.rx_frames * 9, "{name}: {} of {} frames polled", d.rx_polled, d.rx_frames);
        assert!(d.tx_acks_deferred > 100, "{name}: {} ACKs held back", d.tx_acks_deferred);
    }
    assert_eq!(qa.retransmitted_pkts, 0);
    // b's ACKs are built while b's device waits, after its answer went out
    // and before a's next WRITE comes (`Qp::prepare`, on an empty poll);
    // a's device finds b's answer at its first poll, with no wait to build
    // in. b misses a round only when a lets its held ACK go first.
    assert!(qb.acks_built_ahead >= 100, "b built {} of its 200 ACKs ahead", qb.acks_built_ahead);
    // Each side's WRITEs after its first are the same request again, their
    // headers built on an empty poll after the one before.
    for (name, q) in [("a", qa), ("b", qb)] {
        assert!(q.requests_built_ahead >= 150, "{name} built {} of 200 WRITEs' headers ahead", q.requests_built_ahead);
    }
}

/// An application that sleeps on CQ events (take the event, re-arm, then
/// poll, as perftest's -e and the rdma-core examples do) never busy-polls:
/// its polls find the CQ armed, and the receive thread takes every frame,
/// on a device that busy-polls by default.
#[test]
fn a_thread_that_sleeps_on_cq_events_leaves_the_link_to_the_receive_thread() {
    let bed = bed(true);
    let c = bed.contexts();
    let ends: Vec<(Endpoint, Arc<dyn verbs_api::CompChannel>)> = c
        .iter()
        .map(|ctx| {
            let ch = ctx.create_comp_channel().unwrap();
            let cq = ctx.create_cq_with_channel(256, &ch).unwrap();
            cq.req_notify(false).unwrap();
            (Endpoint::with_cq(ctx, QpType::Rc, 1 << 16, cq, QpCap::default()).unwrap(), ch)
        })
        .collect();
    let ((a, ca), (b, cb)) = (&ends[0], &ends[1]);
    connect(a, b, &ConnectOptions::default()).unwrap();
    // One completion by the event pattern; `ch` reports `ep.cq` only.
    let next = |ep: &Endpoint, ch: &Arc<dyn verbs_api::CompChannel>| loop {
        if let Some(wc) = ep.cq.poll(1).pop() {
            return wc;
        }
        let cq = ch.get_cq_event(Duration::from_secs(5)).expect("a CQ event");
        cq.ack_events(1).unwrap();
        cq.req_notify(false).unwrap();
    };
    for i in 0..100u64 {
        let recv = |ep: &Endpoint| verbs_api::RecvWr { wr_id: i, sg_list: vec![ep.sge(0, 64)] };
        b.qp.post_recv(&[recv(b)]).unwrap();
        a.qp.post_recv(&[recv(a)]).unwrap();
        a.qp.post_send(&[SendWr::new(i, SendOp::Send, vec![a.sge(0, 8)])], None).unwrap();
        assert_eq!(next(b, cb).status, WcStatus::Success);
        b.qp.post_send(&[SendWr::new(i, SendOp::Send, vec![b.sge(0, 8)])], None).unwrap();
        for ep in [(a, ca), (a, ca), (b, cb)] {
            assert_eq!(next(ep.0, ep.1).status, WcStatus::Success);
        }
    }
    for d in &bed.devices {
        let (c, _, _) = d.counters();
        assert!(c.rx_frames >= 200, "{c:?}");
        assert_eq!((c.rx_polled, c.tx_acks_deferred), (0, 0), "{c:?}");
    }
}

#[test]
fn without_busy_polling_the_receive_thread_takes_every_frame() {
    let bed = bed(false);
    let (a, b) = pair(&bed.contexts());
    ping_pong(&a, &b, 50);
    for d in &bed.devices {
        let (c, _, _) = d.counters();
        assert!(c.rx_frames >= 100, "{c:?}");
        assert_eq!((c.rx_polled, c.tx_acks_deferred), (0, 0), "{c:?}");
    }
}

/// b is busy-polling when a's WRITE comes (its receive thread stands
/// aside) and polls until the data is there, so that its flush holds the
/// ACK back; then it never touches its device again. Returns both ends and
/// the instant `then` ran, once the hold is seen in b's counters.
fn hold_an_ack(bed: &Testbed, then: impl FnOnce()) -> (Endpoint, Endpoint, Instant) {
    let (a, b) = pair(&bed.contexts());
    a.mr.write(0, &[7; 64]).unwrap();
    for _ in 0..100 {
        assert!(b.cq.poll(1).is_empty());
    }
    a.qp.post_send(&[write(&a, &b, 1, 0, 64)], None).unwrap();
    spin_byte(&b, 63, 7);
    let (db, _, _) = bed.devices[1].counters();
    assert!(db.tx_acks_deferred >= 1, "b's poll held the ACK: {db:?}");
    let t = Instant::now();
    then();
    (a, b, t)
}

/// a's WRITE completes within 50 ms of `since`, far inside the 67 ms ACK
/// timeout: nothing was retransmitted.
fn acknowledged_at_once(bed: &Testbed, a: &Endpoint, since: Instant) {
    let wc = a.cq.wait(1, Duration::from_secs(2)).pop().expect("completion");
    assert_eq!(wc.status, WcStatus::Success);
    assert!(since.elapsed() < Duration::from_millis(50), "ACK took {:?}", since.elapsed());
    let (_, _, qa) = bed.devices[0].counters();
    assert_eq!(qa.retransmitted_pkts, 0);
}

#[test]
fn an_ack_held_back_by_a_poll_still_leaves_when_polling_stops() {
    // Taken over within about two intervals: far inside the 50 ms below.
    let bed = bed_polling_every(Duration::from_millis(5));
    // a blocks: its receive thread, not a poll, must take the ACK, which
    // b's receive thread sends once b has not polled for the interval.
    let (a, _b, t) = hold_an_ack(&bed, || {});
    acknowledged_at_once(&bed, &a, t);
}

/// The application saw its data arrive, and its device shuts down before
/// the held ACK's hold or poll interval is over: the ACK still leaves, so
/// the peer's WRITE completes without a retransmission. (Seen against
/// kernel rxe: a softrdma pingpong client that exited right after its last
/// receive left the guest's last SEND unacknowledged for good.)
#[test]
fn an_ack_held_back_by_a_poll_leaves_when_its_device_shuts_down() {
    let o = TestbedOptions {
        ack_hold: Some(Duration::from_secs(10)),
        busy_poll_interval: Some(Duration::from_secs(5)),
        ..Default::default()
    };
    let bed = Testbed::memory(2, Faults::default(), &o).expect("memory testbed");
    let (a, _b, t) = hold_an_ack(&bed, || bed.devices[1].shutdown());
    acknowledged_at_once(&bed, &a, t);
}

#[test]
fn after_a_long_run_of_polls_the_receive_thread_still_takes_over() {
    // After a long run of polls, taken over within 2 × 8 intervals (32 ms).
    let bed = bed_polling_every(Duration::from_millis(2));
    let (a, b) = pair(&bed.contexts());
    a.mr.write(0, &[9; 128]).unwrap();
    // b polls for 100 ms and takes a first WRITE itself: its receive thread
    // stands aside and, as the polls go on, looks back less and less often.
    // Then b stops, without blocking.
    let t = Instant::now();
    let mut posted = false;
    while t.elapsed() < Duration::from_millis(100) {
        b.cq.poll(1);
        if !posted && t.elapsed() > Duration::from_millis(5) {
            a.qp.post_send(&[write(&a, &b, 1, 0, 64)], None).unwrap();
            posted = true;
        }
    }
    assert_eq!(a.cq.wait(1, Duration::from_secs(2)).pop().expect("first").status, WcStatus::Success);
    // The second WRITE comes with nobody polling on b: its receive thread
    // must take it and answer within a few intervals, far inside the
    // 67 ms ACK timeout.
    let t = Instant::now();
    a.qp.post_send(&[write(&a, &b, 2, 64, 64)], None).unwrap();
    let wc = a.cq.wait(1, Duration::from_secs(2)).pop().expect("completion");
    assert_eq!((wc.wr_id, wc.status), (2, WcStatus::Success));
    assert!(t.elapsed() < Duration::from_millis(50), "ACK took {:?}", t.elapsed());
    let mut got = [0u8; 128];
    b.mr.read(0, &mut got).unwrap();
    assert_eq!(got, [9; 128]);
    let (db, _, _) = bed.devices[1].counters();
    let (_, _, qa) = bed.devices[0].counters();
    assert!(db.rx_polled >= 1, "the first WRITE was not taken by a poll: {db:?}");
    assert_eq!(qa.retransmitted_pkts, 0);
}

#[test]
fn a_thread_that_stops_polling_and_blocks_is_woken_by_the_receive_thread() {
    let bed = bed(true);
    let (a, b) = pair(&bed.contexts());
    for round in 0..20u64 {
        // Poll for a while (the receive thread stands aside), then block.
        for _ in 0..100 {
            assert!(a.cq.poll(1).is_empty());
        }
        a.qp.post_send(&[write(&a, &b, round, 0, 4096)], None).unwrap();
        let wc = a.cq.wait(1, Duration::from_secs(2)).pop().expect("completion");
        assert_eq!((wc.wr_id, wc.status), (round, WcStatus::Success));
    }
}

/// How many of four queued frames one application poll takes: all of them
/// on the in-memory fabric (one lock for the batch), one on a TAP, where a
/// second read would mostly find nothing, between the frame and the
/// application that waits for it; for the same reason a TAP poll right
/// after one that took a frame does not look (0).
fn frames_taken_per_poll(bed: &Testbed) -> Vec<u64> {
    let (a, b) = pair(&bed.contexts());
    ping_pong(&a, &b, 5); // addresses resolved, both sides polling
                          // b's receive thread stands aside for the whole (long) interval, so
                          // a's frames wait in b's link until b polls.
    for i in 0..4u64 {
        a.qp.post_send(&[write(&a, &b, i, 64 * i, 8)], None).unwrap();
    }
    // (Well within a's 67 ms ACK timeout: no retransmission joins them.)
    std::thread::sleep(Duration::from_millis(20));
    let polled = || bed.devices[1].counters().0.rx_polled;
    let mut taken = Vec::new();
    let mut before = polled();
    while taken.iter().sum::<u64>() < 4 && taken.len() < 16 {
        let _ = b.cq.poll(1);
        let now = polled();
        taken.push(now - before);
        before = now;
    }
    // b's ACKs leave with its polls (its flushes held them back).
    let mut done = 0;
    let t = Instant::now();
    while done < 4 {
        let _ = b.cq.poll(1);
        for wc in a.cq.poll(4) {
            assert_eq!(wc.status, WcStatus::Success);
            done += 1;
        }
        assert!(t.elapsed() < Duration::from_secs(5), "{done} of 4 WRITEs completed");
    }
    taken
}

fn long_polling() -> TestbedOptions {
    TestbedOptions { busy_poll_interval: Some(Duration::from_secs(5)), ..Default::default() }
}

#[test]
fn a_poll_of_the_memory_fabric_takes_the_whole_batch() {
    let bed = Testbed::memory(2, Faults::default(), &long_polling()).expect("memory testbed");
    assert_eq!(frames_taken_per_poll(&bed), [4]);
}

#[test]
fn a_poll_of_a_tap_takes_one_frame() {
    softrdma::require_root!();
    let bed = Testbed::tap(2, &long_polling()).expect("TAP testbed");
    let taken = frames_taken_per_poll(&bed);
    assert_eq!(taken.iter().copied().filter(|&n| n > 0).collect::<Vec<_>>(), [1, 1, 1, 1], "{taken:?}");
    assert!(taken.windows(2).all(|w| w[0] + w[1] > 0), "a poll skipped at most once in a row: {taken:?}");
}

/// A poll comes between the data and the answer. With a hold longer than
/// that gap, the ACK leaves right behind the answer; with `ack_hold` zero,
/// it leaves at that poll, ahead of the answer (device 1's capture, in
/// order).
#[test]
fn the_ack_hold_decides_whether_a_poll_before_the_answer_sends_the_ack() {
    use softrdma::capture::read_frames;
    use transport::wire::{classify, Frame, FrameKind, Opcode};

    for (hold, want) in [
        (Duration::from_secs(10), [Opcode::RcWriteOnly, Opcode::RcAcknowledge]),
        (Duration::ZERO, [Opcode::RcAcknowledge, Opcode::RcWriteOnly]),
    ] {
        let dir = ScratchDir::new(&format!("srd-ackhold-{}", hold.as_secs())).unwrap();
        let prefix = dir.join("dev");
        let o = TestbedOptions {
            pcap_prefix: Some(prefix.clone()),
            ack_hold: Some(hold),
            busy_poll_interval: Some(Duration::from_secs(5)),
            ..Default::default()
        };
        let bed = Testbed::memory(2, Faults::default(), &o).expect("memory testbed");
        let (a, b) = pair(&bed.contexts());
        // b polls before the WRITE comes, so that its receive thread stands
        // aside and b's own poll takes the WRITE (and holds the ACK).
        for _ in 0..100 {
            assert!(b.cq.poll(1).is_empty());
        }
        a.mr.write(0, &[5; 8]).unwrap();
        a.qp.post_send(&[write(&a, &b, 1, 0, 8)], None).unwrap();
        spin_byte(&b, 7, 5);
        assert!(b.cq.poll(1).is_empty());
        // A posted receive sends nothing, so it does not end the hold.
        let rwr = verbs_api::RecvWr { wr_id: 9, sg_list: vec![b.sge(64, 8)] };
        b.qp.post_recv(&[rwr]).unwrap();
        b.mr.write(8, &[6; 8]).unwrap();
        b.qp.post_send(&[write(&b, &a, 2, 8, 8)], None).unwrap();
        spin_byte(&a, 15, 6);
        assert_eq!(spin_one(&a.cq).status, WcStatus::Success, "a's WRITE is acknowledged either way");
        drop((a, b));
        drop(bed);
        let frames = read_frames(&dir.join("dev-1.pcap")).unwrap();
        let sent: Vec<Opcode> = frames
            .iter()
            .filter(|f| f.data[6..12] == softrdma::testbed::device_mac(1) && classify(&f.data) == FrameKind::RoceV2)
            .map(|f| Frame::verify(&f.data).unwrap().packet.bth().opcode)
            .collect();
        assert_eq!(sent, want, "hold {hold:?}");
    }
}
