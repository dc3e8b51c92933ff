//! What the machine does without RDMA, for comparison: raw Ethernet frames
//! through the very links the devices use (`raw_bw`, `raw_lat`), memcpy
//! (`memcpy_bw`), and the sans-IO transport alone on the deterministic
//! simulator, with no threads, locks or links (`sim_bw`).

use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use softrdma::link::{Link, LinkRx};
use transport::mem::{Key, Memory};
use transport::sim::{ConnectParams, NetConfig, Sim};
use transport::wire::Ipv4Repr;
use verbs_api::{AccessFlags, Mtu, QpCap, QpType, SendFlags, SendOp, SendWr, Sge, WcStatus};

use crate::fabric::{self, FabricKind};
use crate::perf::peak;
use crate::report::{BwRow, LatRow};

/// Bytes a RoCEv2 RDMA WRITE MIDDLE packet (IPv4) adds around its payload:
/// Ethernet 14, IPv4 20, UDP 8, BTH 12, ICRC 4.
pub const ROCE_OVERHEAD: usize = 14 + 20 + 8 + 12 + 4;

/// An Ethernet frame of `len` bytes from device 0 to device 1 with a local
/// experimental EtherType (the kernel bridges forward it and nobody consumes it).
///
/// With [`set_udp_frames`], an IPv4/UDP frame to port 4791 instead: the path
/// RoCEv2 takes through the bridges, whose netfilter hooks (`br_netfilter`)
/// look at IP frames and let other EtherTypes pass untouched.
fn frame(len: usize, from: usize, to: usize) -> Vec<u8> {
    frame_numbered(len, from, to, 0)
}

/// [`frame`] with IPv4 identification `ident` (for IPv4/UDP frames).
fn frame_numbered(len: usize, from: usize, to: usize, ident: u16) -> Vec<u8> {
    let mut f = vec![0u8; len.max(60)];
    f[0..6].copy_from_slice(&fabric::mac(to));
    f[6..12].copy_from_slice(&fabric::mac(from));
    for (i, b) in f[14..].iter_mut().enumerate() {
        *b = i as u8;
    }
    if !udp_frames() {
        f[12..14].copy_from_slice(&0x88b5u16.to_be_bytes());
        return f;
    }
    f[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
    let (IpAddr::V4(src), IpAddr::V4(dst)) = (fabric::addr(from), fabric::addr(to)) else {
        unreachable!("benchmark addresses are IPv4")
    };
    let udp_len = f.len() - 14 - 20;
    // DF, as rxe sends.
    let ip = Ipv4Repr { src, dst, dscp: 0, ecn: 0, ident, dont_frag: true, ttl: 64, protocol: 17 };
    ip.emit(&mut f[14..34], udp_len).expect("an IPv4 header fits 20 bytes");
    let mut udp = [0u8; 8];
    udp[0..2].copy_from_slice(&0xc000u16.to_be_bytes());
    udp[2..4].copy_from_slice(&4791u16.to_be_bytes());
    udp[4..6].copy_from_slice(&(udp_len as u16).to_be_bytes());
    f[34..42].copy_from_slice(&udp);
    f
}

static UDP_FRAMES: AtomicBool = AtomicBool::new(false);

/// Makes `raw_bw`/`raw_lat` send IPv4/UDP frames (see [`frame`]).
pub fn set_udp_frames(on: bool) {
    UDP_FRAMES.store(on, Ordering::Release);
}

fn udp_frames() -> bool {
    UDP_FRAMES.load(Ordering::Acquire)
}

static SPIN: AtomicBool = AtomicBool::new(false);

/// Makes the raw baselines' receivers spin on non-blocking reads instead of
/// sleeping in the link between frames. The devices busy-poll by default
/// (`--busy-poll`), so a baseline that sleeps would pay wake-ups the RDMA
/// test does not: on the TAPs here that added 0.6 µs to the ping-pong's
/// half round trip (2.8 instead of 2.2 µs) and took 10 % off the stream.
pub fn set_spin(on: bool) {
    SPIN.store(on, Ordering::Release);
}

/// Whether the raw baselines spin (`set_spin`).
pub fn spins() -> bool {
    SPIN.load(Ordering::Acquire)
}

/// One frame from `rx` within `timeout`, spinning or sleeping (`set_spin`).
fn recv_within(rx: &mut Box<dyn LinkRx>, buf: &mut [u8], timeout: Duration) -> std::io::Result<Option<usize>> {
    if !spins() {
        return rx.recv(buf, timeout);
    }
    let start = Instant::now();
    loop {
        match rx.recv(buf, Duration::ZERO)? {
            Some(n) => return Ok(Some(n)),
            None if start.elapsed() >= timeout => return Ok(None),
            None => std::hint::spin_loop(),
        }
    }
}

/// Whether `f` is one of the baseline's frames.
fn is_raw(f: &[u8]) -> bool {
    if udp_frames() {
        f.len() >= 50 && f[12..14] == [0x08, 0x00] && f[23] == 17 && f[36..38] == 4791u16.to_be_bytes()
    } else {
        f.len() >= 22 && f[12..14] == [0x88, 0xb5]
    }
}

/// Where a baseline frame carries its 8-byte sequence number.
fn seq_at() -> usize {
    if udp_frames() {
        42
    } else {
        14
    }
}

/// How `raw_bw`'s sender hands its frames to the link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Burst {
    /// Frames per call, 1–64.
    pub frames: usize,
    /// If 0 < `split` < `frames`: each burst goes in two calls, its first
    /// `split` frames and the rest. `frames: 16, split: 2` writes as a
    /// 64 KiB RDMA WRITE at MTU 4096 does on a TAP with offload: its FIRST
    /// packet is 16 bytes longer than the rest (the RETH), and a UDP GSO
    /// run may have no segment longer than its first, so the message
    /// leaves in two runs, of 2 and 14 packets.
    pub split: usize,
}

impl Burst {
    /// The frames of a burst as `raw_bw` sends them: `frames` clamped to 1–64.
    pub fn count(&self) -> usize {
        self.frames.clamp(1, 64)
    }

    /// The two calls a burst goes in (`split` frames, then the rest), or
    /// `None` if it goes in one.
    pub fn halves(&self) -> Option<(usize, usize)> {
        let n = self.count();
        (self.split > 0 && self.split < n).then_some((self.split, n - self.split))
    }
}

/// Sends frames that are as long as RoCE packets carrying `payload` bytes
/// one way from link 0 to link 1 and counts what arrives. Bandwidth is in
/// payload bytes (so it compares with `write_bw` at IB MTU = `payload`).
///
/// `credit = 0` blasts without flow control (what arrives is what counts).
/// `credit = k > 0` is self-clocked like an RC stream: the receiver returns a
/// 64-byte credit frame every `k` frames (as RC returns an ACK per message)
/// and the sender keeps at most `window` frames beyond the last credit.
///
/// The sender hands the link `burst.frames` frames per call
/// (`LinkTx::send_bufs`), numbered with consecutive IPv4 identifications:
/// on a TAP with offload a burst of IPv4/UDP frames is one UDP GSO write,
/// like the run of frames of one RDMA message (see [`Burst`]).
pub fn raw_bw(
    kind: FabricKind,
    payload: usize,
    iters: u64,
    duration: Option<Duration>,
    credit: u64,
    window: u64,
    burst: Burst,
) -> Result<BwRow, String> {
    let link_mtu = fabric::link_mtu_for(payload);
    let len = payload + ROCE_OVERHEAD;
    if len > link_mtu + 14 {
        return Err(format!("frame of {len} bytes does not fit link MTU {link_mtu}"));
    }
    let window = window.max(credit).max(1);
    let (_f, net, mut links) = fabric::links(kind, 2, link_mtu).map_err(|e| format!("links: {e}"))?;
    let Link { rx: mut rx1, tx: tx1, .. } = links.pop().ok_or("no link")?;
    let Link { rx: mut rx0, tx: tx0, .. } = links.pop().ok_or("no link")?;
    let halves = burst.halves();
    let burst = burst.count();
    let templates: Vec<Vec<u8>> = (0..burst).map(|i| frame_numbered(len, 0, 1, i as u16)).collect();
    let mut frames = Sendable::new(&templates);
    let stop = Arc::new(AtomicBool::new(false));
    let (sent, errors, stalls, stamps, start) = std::thread::scope(|s| {
        let stop2 = stop.clone();
        let h = s.spawn(move || {
            let mut buf = vec![0u8; link_mtu + 64];
            let mut stamps: Vec<(Instant, u64)> = Vec::new();
            let mut n = 0u64;
            let mut quiet_since: Option<Instant> = None;
            let mut c = frame(64, 1, 0);
            loop {
                match recv_within(&mut rx1, &mut buf, Duration::from_millis(20)) {
                    Ok(Some(k)) if k == len && is_raw(&buf[..k]) => {
                        n += 1;
                        quiet_since = None;
                        if n % 256 == 1 {
                            stamps.push((Instant::now(), n));
                        }
                        if credit > 0 && n.is_multiple_of(credit) {
                            c[seq_at()..seq_at() + 8].copy_from_slice(&n.to_be_bytes());
                            let _ = tx1.send(&c);
                        }
                    }
                    Ok(Some(_)) => {}
                    Ok(None) | Err(_) => {
                        if stop2.load(Ordering::Acquire) {
                            let q = *quiet_since.get_or_insert_with(Instant::now);
                            if q.elapsed() > Duration::from_millis(200) {
                                break;
                            }
                        }
                    }
                }
            }
            stamps.push((Instant::now(), n));
            stamps
        });
        // Let the receiver start, and the bridges learn both MACs.
        std::thread::sleep(Duration::from_millis(50));
        let start = Instant::now();
        let deadline = duration.map(|d| start + d);
        let (mut sent, mut errors, mut credited, mut stalls) = (0u64, 0u64, 0u64, 0u64);
        let mut cbuf = vec![0u8; link_mtu + 64];
        loop {
            if let Some(d) = deadline {
                if sent % 64 == 0 && Instant::now() >= d {
                    break;
                }
            } else if sent >= iters {
                break;
            }
            while credit > 0 && sent + burst as u64 - credited > window {
                match recv_within(&mut rx0, &mut cbuf, Duration::from_millis(50)) {
                    Ok(Some(k)) if is_raw(&cbuf[..k]) => {
                        let mut b = [0u8; 8];
                        b.copy_from_slice(&cbuf[seq_at()..seq_at() + 8]);
                        credited = credited.max(u64::from_be_bytes(b));
                    }
                    Ok(Some(_)) => {}
                    // A lost frame or credit: resynchronise rather than stall.
                    Ok(None) | Err(_) => {
                        stalls += 1;
                        credited = sent;
                    }
                }
            }
            let bufs = frames.refilled(&templates);
            if let Some((split, _)) = halves {
                let (head, rest) = bufs.split_at_mut(split);
                errors += (tx0.send_bufs(head) + tx0.send_bufs(rest)) as u64;
            } else {
                errors += tx0.send_bufs(bufs) as u64;
            }
            sent += burst as u64;
        }
        stop.store(true, Ordering::Release);
        let stamps = h.join().unwrap_or_default();
        (sent, errors, stalls, stamps, start)
    });
    drop(net);
    let (last_t, got) = stamps.last().copied().unwrap_or((start, 0));
    // The receiver's last stamp is taken after the quiet period; use the
    // last arrival instead when there is one.
    let last_arrival = stamps.iter().rev().nth(1).map(|s| s.0).unwrap_or(last_t);
    let elapsed = last_arrival.max(start).duration_since(start).as_secs_f64().max(1e-9);
    let mut st = vec![(start, 0u64)];
    st.extend(stamps[..stamps.len().saturating_sub(1)].iter().copied());
    let pk = peak(&st, (got / 20).max(256));
    let mut row = BwRow {
        bytes: payload as u64,
        iterations: sent,
        peak_bps: pk * payload as f64,
        avg_bps: got as f64 * payload as f64 / elapsed,
        msg_rate: got as f64 / elapsed,
        notes: Vec::new(),
    };
    row.notes.push(("frame_len".into(), len.to_string()));
    row.notes.push(("sent".into(), sent.to_string()));
    row.notes.push(("received".into(), got.to_string()));
    row.notes.push(("send_errors".into(), errors.to_string()));
    row.notes.push(("credit_every".into(), credit.to_string()));
    row.notes.push(("credit_stalls".into(), stalls.to_string()));
    Ok(row)
}

/// `raw_bw`'s frame buffers between bursts. A link that moves buffers
/// instead of copying them (the in-memory fabric) leaves recycled ones in
/// the slots it sent; those must hold the frames again before the next
/// burst, or the stream goes on with whatever the pool handed back (until
/// stop 38 it did, and the memory fabric's raw stream counted a few
/// hundred MB/s of real frames among millions of stale ones). A link that
/// copies (a TAP) keeps the buffers and pays nothing here.
struct Sendable {
    bufs: Vec<Vec<u8>>,
    /// Where each slot's buffer was when it last held its frame.
    at: Vec<*const u8>,
}

impl Sendable {
    fn new(templates: &[Vec<u8>]) -> Self {
        let bufs = templates.to_vec();
        let at = bufs.iter().map(|b| b.as_ptr()).collect();
        Sendable { bufs, at }
    }

    /// The burst to send, every slot holding its frame.
    fn refilled(&mut self, templates: &[Vec<u8>]) -> &mut [Vec<u8>] {
        for ((b, at), t) in self.bufs.iter_mut().zip(&mut self.at).zip(templates) {
            if b.as_ptr() != *at || b.len() != t.len() {
                b.clear();
                b.extend_from_slice(t);
                *at = b.as_ptr();
            }
        }
        &mut self.bufs
    }
}

/// What a turn of `raw_lat` sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Turn {
    /// The answer alone.
    Answer,
    /// The answer, then a 64-byte "ACK" in a write of its own.
    AnswerThenAck,
    /// The answer and an "ACK" with the answer's headers, handed to the
    /// link together (`LinkTx::send_bufs`): over IPv4/UDP on a TAP with
    /// offload, one UDP GSO write, as softrdma sends an answer and the ACK
    /// it held back for it.
    AnswerAndAckAtOnce,
}

/// Raw ping-pong through the same links: `len`-byte frames, half round
/// trips. With an ACK in the turn, each turn is two frames, and a side
/// answers only once both came: the frames of an RC `write_lat` turn (a
/// side's WRITE and its ACK of the peer's; perftest's client waits for
/// both), with no RDMA work at all.
pub fn raw_lat(kind: FabricKind, len: usize, iters: u64, turn: Turn) -> Result<LatRow, String> {
    let link_mtu = 1500.max(len);
    let (_f, net, mut links) = fabric::links(kind, 2, link_mtu).map_err(|e| format!("links: {e}"))?;
    let Link { rx: mut rx_b, tx: tx_b, .. } = links.pop().ok_or("no link")?;
    let Link { rx: mut rx_a, tx: tx_a, .. } = links.pop().ok_or("no link")?;
    let stop = AtomicBool::new(false);
    let warmup = 16;
    let acks = turn != Turn::Answer;
    let per_turn = if acks { 2 } else { 1 };
    // On CPUs of their own, as `write_lat`'s threads (crate::pin).
    let cpus = crate::pin::pair();
    let _client_cpu = cpus.map(|(c, _)| crate::pin::Pinned::to(c));
    let r = std::thread::scope(|s| -> Result<(Vec<Duration>, Option<u64>), String> {
        let stop = &stop;
        let echo = s.spawn(move || {
            let _echo_cpu = cpus.map(|(_, c)| crate::pin::Pinned::to(c));
            crate::pin::preempted_during(|| {
                let mut buf = vec![0u8; link_mtu + 64];
                let mut ack = frame(64, 1, 0);
                let (mut seq, mut got) = ([0u8; 8], 0);
                while !stop.load(Ordering::Acquire) {
                    if let Ok(Some(n)) = recv_within(&mut rx_b, &mut buf, Duration::from_millis(20)) {
                        if !is_raw(&buf[..n]) {
                            continue;
                        }
                        let this = &buf[seq_at()..seq_at() + 8];
                        if this != seq {
                            seq.copy_from_slice(this);
                            got = 0;
                        }
                        got += 1;
                        // A resent turn is answered again.
                        if got % per_turn != 0 {
                            continue;
                        }
                        let mut f = buf[..n].to_vec();
                        f[0..6].copy_from_slice(&fabric::mac(0));
                        f[6..12].copy_from_slice(&fabric::mac(1));
                        if turn == Turn::AnswerAndAckAtOnce {
                            let next = ack_after(&f);
                            let _ = tx_b.send_bufs(&mut [f, next]);
                            continue;
                        }
                        let _ = tx_b.send(&f);
                        if acks {
                            ack[seq_at()..seq_at() + 8].copy_from_slice(&seq);
                            let _ = tx_b.send(&ack);
                        }
                    }
                }
            })
            .1
        });
        let (res, client) = crate::pin::preempted_during(|| {
            let mut f = frame(len, 0, 1);
            let mut ack = frame(64, 0, 1);
            let mut buf = vec![0u8; link_mtu + 64];
            let mut samples = Vec::with_capacity(iters as usize);
            let mut lost = 0u64;
            let send_turn = |f: &[u8], ack: &[u8]| -> Result<(), String> {
                if turn == Turn::AnswerAndAckAtOnce {
                    return match tx_a.send_bufs(&mut [f.to_vec(), ack_after(f)]) {
                        0 => Ok(()),
                        _ => Err("send: a frame of the turn failed".into()),
                    };
                }
                tx_a.send(f).map_err(|e| format!("send: {e}"))?;
                if acks {
                    tx_a.send(ack).map_err(|e| format!("send: {e}"))?;
                }
                Ok(())
            };
            for it in 0..warmup + iters {
                f[seq_at()..seq_at() + 8].copy_from_slice(&it.to_be_bytes());
                ack[seq_at()..seq_at() + 8].copy_from_slice(&it.to_be_bytes());
                let t0 = Instant::now();
                send_turn(&f, &ack)?;
                // A frame lost while the bridges come up is sent again (and
                // that exchange is not counted).
                let (mut resent, mut got) = (0, 0);
                while got < per_turn {
                    match recv_within(&mut rx_a, &mut buf, Duration::from_millis(200)) {
                        Ok(Some(n)) if is_raw(&buf[..n]) && buf[seq_at()..seq_at() + 8] == it.to_be_bytes() => got += 1,
                        Ok(Some(_)) => {}
                        _ if resent >= 25 => return Err(format!("frame {it} never came back")),
                        _ => {
                            resent += 1;
                            got = 0;
                            send_turn(&f, &ack)?;
                        }
                    }
                }
                if resent > 0 {
                    lost += 1;
                    continue;
                }
                if it >= warmup {
                    samples.push(t0.elapsed());
                }
            }
            if lost > 0 {
                eprintln!("raw_lat: {lost} exchanges lost and repeated (not counted)");
            }
            Ok(samples)
        });
        stop.store(true, Ordering::Release);
        let echo = echo.join().map_err(|_| "echo thread panicked".to_string())?;
        res.map(|samples| (samples, client.zip(echo).map(|(c, e)| c + e)))
    });
    drop(net);
    let (mut samples, preempted) = r?;
    Ok(LatRow { preempted, ..LatRow::from_samples(len as u64, &mut samples, 2.0) })
}

/// The "ACK" that leaves with `answer` (`Turn::AnswerAndAckAtOnce`): the
/// answer's bytes, over IPv4/UDP with the next IPv4 identification, as a
/// UDP GSO run numbers its segments.
fn ack_after(answer: &[u8]) -> Vec<u8> {
    let mut ack = answer.to_vec();
    if udp_frames() {
        if let Ok((mut ip, udp)) = Ipv4Repr::parse(&answer[14..]) {
            ip.ident = ip.ident.wrapping_add(1);
            let _ = ip.emit(&mut ack[14..34], udp.len());
        }
    }
    ack
}

/// memcpy of `size` bytes between two fixed buffers (hot in cache when they
/// fit, as the same-slot RDMA tests are), `iters` times or for `duration`.
pub fn memcpy_bw(size: usize, iters: u64, duration: Option<Duration>) -> BwRow {
    let src = vec![0x5au8; size];
    let mut dst = vec![0u8; size];
    dst.copy_from_slice(&src);
    let start = Instant::now();
    let deadline = duration.map(|d| start + d);
    let mut n = 0u64;
    let mut stamps = vec![(start, 0u64)];
    loop {
        if let Some(d) = deadline {
            if n.is_multiple_of(64) && Instant::now() >= d {
                break;
            }
        } else if n >= iters {
            break;
        }
        dst.copy_from_slice(std::hint::black_box(&src));
        std::hint::black_box(&mut dst);
        n += 1;
        if n.is_multiple_of(1024) {
            stamps.push((Instant::now(), n));
        }
    }
    let el = start.elapsed().as_secs_f64().max(1e-9);
    stamps.push((Instant::now(), n));
    let pk = peak(&stamps, (n / 20).max(1));
    BwRow {
        bytes: size as u64,
        iterations: n,
        peak_bps: pk * size as f64,
        avg_bps: n as f64 * size as f64 / el,
        msg_rate: n as f64 / el,
        notes: Vec::new(),
    }
}

/// Spins until `r` has a value; `None` once its sender is gone. The
/// cross-thread baselines never sleep: a limit must not depend on how the
/// scheduler wakes a parked thread.
fn spin_recv<T>(r: &std::sync::mpsc::Receiver<T>) -> Option<T> {
    use std::sync::mpsc::TryRecvError;
    loop {
        match r.try_recv() {
            Ok(v) => return Some(v),
            Err(TryRecvError::Empty) => std::hint::spin_loop(),
            Err(TryRecvError::Disconnected) => return None,
        }
    }
}

/// Spins until `s` takes `v`; `false` once its receiver is gone. A
/// `SyncSender::send` into a full channel parks the sending thread, and the
/// receiver then pays a futex wake for it at the next frame it takes: until
/// stop 38 that gave `memcpy_xcore_bw` a slow mode of its own (one copy at
/// 12–13 instead of 21–23 GB/s), which earlier stops took for the host's
/// (whose own slow phases are real, and hit every cross-CPU row at once).
fn spin_send<T>(s: &std::sync::mpsc::SyncSender<T>, mut v: T) -> bool {
    use std::sync::mpsc::TrySendError;
    loop {
        match s.try_send(v) {
            Ok(()) => return true,
            Err(TrySendError::Full(back)) => {
                v = back;
                std::hint::spin_loop();
            }
            Err(TrySendError::Disconnected(_)) => return false,
        }
    }
}

/// The memory fabric's physical limit: `size`-byte messages cut into
/// `mtu`-byte chunks that one thread copies out of a source buffer into
/// pooled buffers and hands to a second thread, which copies them into a
/// destination buffer — the two copies and the cross-CPU hand-off every
/// packet on the in-memory fabric needs at least, with no RDMA logic. Both
/// threads spin on the (lock-free, bounded) channels instead of sleeping:
/// a limit must not depend on how the scheduler wakes a parked thread, which
/// moved this number between 9 and 17 GB/s from one build to the next.
pub fn memcpy_xcore_bw(size: usize, mtu: usize, iters: u64) -> BwRow {
    use std::sync::mpsc::sync_channel;
    let mtu = mtu.max(64);
    let chunks = size.div_ceil(mtu).max(1);
    let (to_rx, from_tx) = sync_channel::<Vec<u8>>(1024);
    let (back_tx, back) = sync_channel::<Vec<u8>>(2048);
    for _ in 0..1024 {
        let _ = back_tx.send(vec![0u8; mtu]);
    }
    let cpus = crate::pin::pair();
    let _sender_cpu = cpus.map(|(c, _)| crate::pin::Pinned::to(c));
    let start = Instant::now();
    let received = std::thread::scope(|s| {
        let rx = s.spawn(move || {
            let _receiver_cpu = cpus.map(|(_, c)| crate::pin::Pinned::to(c));
            let mut dst = vec![0u8; size];
            let mut n = 0u64;
            while let Some(buf) = spin_recv(&from_tx) {
                let off = (n as usize % chunks) * mtu;
                let len = mtu.min(size - off.min(size));
                dst[off..off + len].copy_from_slice(&buf[..len]);
                std::hint::black_box(&mut dst);
                n += 1;
                let _ = back_tx.send(buf);
            }
            n
        });
        let src = vec![0x5au8; size];
        for m in 0..iters {
            for c in 0..chunks {
                let Some(mut buf) = spin_recv(&back) else { break };
                let off = c * mtu;
                let len = mtu.min(size - off);
                buf[..len].copy_from_slice(std::hint::black_box(&src[off..off + len]));
                if !spin_send(&to_rx, buf) {
                    break;
                }
            }
            std::hint::black_box(m);
        }
        drop(to_rx);
        rx.join().unwrap_or(0)
    });
    let el = start.elapsed().as_secs_f64().max(1e-9);
    let msgs = received as f64 / chunks as f64;
    BwRow {
        bytes: size as u64,
        iterations: iters,
        peak_bps: msgs * size as f64 / el,
        avg_bps: msgs * size as f64 / el,
        msg_rate: msgs / el,
        notes: vec![("chunk".into(), mtu.to_string())],
    }
}

/// `memcpy_xcore_bw` with one copy: the sending thread hands over only
/// where each chunk lies in the source, and the receiving thread copies it
/// from there into the destination — the limit of a fabric that delivers
/// payloads out of the sender's memory, as a NIC's DMA reads them, with no
/// frame buffer in between (docs/benchmarks-history.md, stop 15).
pub fn memcpy_pull_bw(size: usize, mtu: usize, iters: u64) -> BwRow {
    use std::sync::mpsc::sync_channel;
    let mtu = mtu.max(64);
    let chunks = size.div_ceil(mtu).max(1);
    let src = vec![0x5au8; size];
    let (to_rx, from_tx) = sync_channel::<usize>(1024);
    let cpus = crate::pin::pair();
    let _sender_cpu = cpus.map(|(c, _)| crate::pin::Pinned::to(c));
    let start = Instant::now();
    let received = std::thread::scope(|s| {
        let src = &src;
        let rx = s.spawn(move || {
            let _receiver_cpu = cpus.map(|(_, c)| crate::pin::Pinned::to(c));
            let mut dst = vec![0u8; size];
            let mut n = 0u64;
            while let Some(off) = spin_recv(&from_tx) {
                let len = mtu.min(size - off.min(size));
                dst[off..off + len].copy_from_slice(&src[off..off + len]);
                std::hint::black_box(&mut dst);
                n += 1;
            }
            n
        });
        for m in 0..iters {
            for c in 0..chunks {
                if !spin_send(&to_rx, std::hint::black_box(c * mtu)) {
                    break;
                }
            }
            std::hint::black_box(m);
        }
        drop(to_rx);
        rx.join().unwrap_or(0)
    });
    let el = start.elapsed().as_secs_f64().max(1e-9);
    let msgs = received as f64 / chunks as f64;
    BwRow {
        bytes: size as u64,
        iterations: iters,
        peak_bps: msgs * size as f64 / el,
        avg_bps: msgs * size as f64 / el,
        msg_rate: msgs / el,
        notes: vec![("chunk".into(), mtu.to_string()), ("copies".into(), "1 (pull)".into())],
    }
}

/// A connected RC pair on the deterministic simulator (lossless, zero
/// latency) that writes `size`-byte messages from node 0 to node 1: the
/// transport's own cost per message and per packet, with no threads, locks
/// or links.
pub struct SimWriter {
    pub sim: Sim,
    qpn: u32,
    wr: SendWr,
    depth: u64,
    dst: (u32, u64),
    pub data: Vec<u8>,
}

impl SimWriter {
    pub fn new(size: usize, mtu: Mtu, depth: u32) -> Result<SimWriter, String> {
        let net = NetConfig { latency: Duration::ZERO, ..NetConfig::default() };
        let mut sim = Sim::new(net, 1);
        let cap = QpCap { max_send_wr: depth, max_recv_wr: 16, max_send_sge: 1, max_recv_sge: 1, max_inline_data: 0 };
        let p = ConnectParams { mtu, cap, ..ConnectParams::default() };
        let [qpn, _] = sim.connect(QpType::Rc, &p, [None, None]);
        const SRC: u64 = 0x1_0000_0000;
        const DST: u64 = 0x2_0000_0000;
        let (lkey, _) = sim.nodes[0].mem.register(1, SRC, size.max(1), AccessFlags::LOCAL_WRITE);
        let (dst_l, rkey) =
            sim.nodes[1].mem.register(1, DST, size.max(1), AccessFlags::LOCAL_WRITE | AccessFlags::REMOTE_WRITE);
        let data = crate::perf::pattern(size, 7);
        sim.nodes[0].mem.write(1, Key::Local(lkey), SRC, &data).map_err(|e| format!("{e:?}"))?;
        let mut wr = SendWr::new(
            0,
            SendOp::RdmaWrite { remote_addr: DST, rkey },
            vec![Sge { addr: SRC, length: size as u32, lkey }],
        );
        wr.flags = SendFlags::SIGNALED;
        Ok(SimWriter { sim, qpn, wr, depth: depth.max(1) as u64, dst: (dst_l, DST), data })
    }

    /// Writes `n` messages, `depth` outstanding, and waits for every completion.
    pub fn run(&mut self, n: u64) -> Result<(), String> {
        let (mut posted, mut done) = (0u64, 0u64);
        while done < n {
            while posted < n && posted - done < self.depth {
                self.wr.wr_id = posted;
                let qp = self.sim.nodes[0].qp_mut(self.qpn).ok_or("qp gone")?;
                qp.post_send(&self.wr, None).map_err(|e| e.to_string())?;
                posted += 1;
            }
            if !self.sim.step() {
                return Err("simulation went idle".into());
            }
            while let Some((_, c)) = self.sim.nodes[0].poll_completion() {
                if c.wc.status != WcStatus::Success {
                    return Err(format!("completion {:?}", c.wc.status));
                }
                done += 1;
            }
            while self.sim.nodes[1].poll_completion().is_some() {}
        }
        Ok(())
    }

    /// Whether the target holds the message.
    pub fn verify(&self) -> bool {
        let mut got = vec![0u8; self.data.len()];
        self.sim.nodes[1].mem.read(1, Key::Local(self.dst.0), self.dst.1, &mut got).is_ok() && got == self.data
    }
}

/// [`SimWriter`] as a bandwidth row; also returns frames (both ways) per message.
pub fn sim_bw(size: usize, iters: u64, mtu: Mtu, depth: u32) -> Result<(BwRow, f64), String> {
    let mut w = SimWriter::new(size, mtu, depth)?;
    let start = Instant::now();
    w.run(iters)?;
    let el = start.elapsed().as_secs_f64().max(1e-9);
    let sent = w.sim.net.stats.sent;
    let pkts = sent as f64 / iters.max(1) as f64;
    let mut row = BwRow {
        bytes: size as u64,
        iterations: iters,
        peak_bps: 0.0,
        avg_bps: iters as f64 * size as f64 / el,
        msg_rate: iters as f64 / el,
        notes: Vec::new(),
    };
    row.peak_bps = row.avg_bps;
    row.notes.push(("verified".into(), w.verify().to_string()));
    row.notes.push(("frames_per_msg".into(), format!("{pkts:.3}")));
    row.notes.push(("ns_per_frame".into(), format!("{:.1}", el * 1e9 / sent.max(1) as f64)));
    Ok((row, pkts))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn notes(row: &BwRow, key: &str) -> u64 {
        let v = row.notes.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone());
        v.and_then(|v| v.parse().ok()).unwrap_or_else(|| panic!("no {key} in {:?}", row.notes))
    }

    /// The cross-thread baselines' hand-off: a full channel is waited out
    /// by spinning until the other thread takes a value, and a gone peer
    /// ends the wait on either side.
    #[test]
    fn the_spinning_hand_off_waits_out_a_full_channel_and_sees_a_gone_peer() {
        let (tx, rx) = std::sync::mpsc::sync_channel::<u32>(1);
        assert!(spin_send(&tx, 1));
        let taker = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            let got = (spin_recv(&rx), spin_recv(&rx));
            (got, rx)
        });
        assert!(spin_send(&tx, 2), "the second value waits for the first to be taken");
        let ((a, b), rx) = taker.join().expect("taker");
        assert_eq!((a, b), (Some(1), Some(2)));
        drop(tx);
        assert_eq!(spin_recv(&rx), None);
        let (tx, rx) = std::sync::mpsc::sync_channel::<u32>(1);
        drop(rx);
        assert!(!spin_send(&tx, 3));
    }

    /// On the in-memory fabric, which takes the sender's buffers, every
    /// burst still carries the baseline's frames: a self-clocked stream
    /// loses none and never stalls, one frame per call, in bursts, and in
    /// split bursts.
    #[test]
    fn raw_bw_on_the_memory_fabric_delivers_every_frame_it_sends() {
        for (frames, split) in [(1, 0), (4, 0), (16, 2)] {
            let burst = Burst { frames, split };
            let row = raw_bw(FabricKind::Memory, 1024, 4096, None, 16, 64, burst).expect("raw_bw");
            let (sent, got) = (notes(&row, "sent"), notes(&row, "received"));
            assert_eq!(got, sent, "burst {frames} split {split}: {:?}", row.notes);
            assert_eq!(notes(&row, "credit_stalls"), 0, "burst {frames} split {split}: {:?}", row.notes);
        }
    }
}
