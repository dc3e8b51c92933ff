//! On a link whose sends are system calls (a TAP), the device writes its
//! frames after letting go of its lock (`softrdma::core_lock`): a slow
//! `write(2)` does not hold up the other threads, and the frames still
//! leave in order. A gated wrapper around an in-memory fabric port plays
//! the TAP here, so a send can be held for as long as the test wants.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use softrdma::backend::memory::Fabric;
use softrdma::device::{Device, DeviceConfig};
use softrdma::link::{Link, LinkTx};
use softrdma::testbed::{device_addrs, device_mac};
use transport::wire::peek::bth_offset;
use verbs_api::helpers::{connect, ConnectOptions, Endpoint};
use verbs_api::{Context, QpCap, QpType, SendOp, SendWr, WcStatus};

/// A sending half that says its sends are syscalls, can hold every send
/// until opened, and logs (destination QP, PSN) of each frame it passes.
struct GatedTx {
    inner: Arc<dyn LinkTx>,
    open: Mutex<bool>,
    opened: Condvar,
    /// Sends waiting at the closed gate.
    waiting: AtomicUsize,
    /// Each send takes at least this long once through the gate (µs).
    slow_us: u64,
    log: Mutex<Vec<(u32, u32)>>,
    logging: AtomicBool,
    /// The next send panics (a link with a bug).
    panic_next: AtomicBool,
}

impl GatedTx {
    fn new(inner: Arc<dyn LinkTx>, slow_us: u64) -> Arc<Self> {
        Arc::new(GatedTx {
            inner,
            open: Mutex::new(true),
            opened: Condvar::new(),
            waiting: AtomicUsize::new(0),
            slow_us,
            log: Mutex::new(Vec::new()),
            logging: AtomicBool::new(false),
            panic_next: AtomicBool::new(false),
        })
    }

    fn set_open(&self, open: bool) {
        *self.open.lock().unwrap() = open;
        self.opened.notify_all();
    }
}

impl LinkTx for GatedTx {
    fn send(&self, frame: &[u8]) -> std::io::Result<()> {
        if self.panic_next.swap(false, Ordering::SeqCst) {
            panic!("a link with a bug");
        }
        {
            let mut open = self.open.lock().unwrap();
            self.waiting.fetch_add(1, Ordering::SeqCst);
            let t = Instant::now();
            while !*open && t.elapsed() < Duration::from_secs(20) {
                open = self.opened.wait_timeout(open, Duration::from_millis(50)).unwrap().0;
            }
            self.waiting.fetch_sub(1, Ordering::SeqCst);
        }
        if self.logging.load(Ordering::SeqCst) {
            if let Some(o) = bth_offset(frame) {
                let b = &frame[o..o + 12];
                let qpn = u32::from_be_bytes([0, b[5], b[6], b[7]]);
                let psn = u32::from_be_bytes([0, b[9], b[10], b[11]]);
                self.log.lock().unwrap().push((qpn, psn));
            }
        }
        let t = Instant::now();
        while t.elapsed() < Duration::from_micros(self.slow_us) {
            std::hint::spin_loop();
        }
        self.inner.send(frame)
    }

    fn sends_are_syscalls(&self) -> bool {
        true
    }
}

/// Device 0 sends through a `GatedTx`; device 1 is a plain fabric port.
fn devices(slow_us: u64) -> (Arc<Device>, Arc<Device>, Arc<GatedTx>, Fabric) {
    let fabric = Fabric::new();
    let port = fabric.attach(device_mac(0), 1500);
    let gate = GatedTx::new(port.tx.clone(), slow_us);
    let link = Link { tx: gate.clone(), rx: port.rx, mac: port.mac, mtu: port.mtu };
    let a = Device::start(DeviceConfig::new("srd0", device_addrs(0)), link).unwrap();
    let b = Device::start(DeviceConfig::new("srd1", device_addrs(1)), fabric.attach(device_mac(1), 1500)).unwrap();
    (a, b, gate, fabric)
}

fn pair(a: &Arc<dyn Context>, b: &Arc<dyn Context>) -> (Endpoint, Endpoint) {
    let cap = QpCap { max_send_wr: 256, ..QpCap::default() };
    let mk = |ctx| Endpoint::new(ctx, QpType::Rc, 1 << 16, 1024, cap).unwrap();
    let (x, y) = (mk(a), mk(b));
    connect(&x, &y, &ConnectOptions::default()).unwrap();
    (x, y)
}

fn write(a: &Endpoint, b: &Endpoint, id: u64, at: u64, len: u32) -> SendWr {
    let op = SendOp::RdmaWrite { remote_addr: b.mr.addr() + at, rkey: b.mr.rkey() };
    SendWr::new(id, op, vec![a.sge(at, len)])
}

fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let t = Instant::now();
    while !cond() {
        assert!(t.elapsed() < Duration::from_secs(10), "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Device 0 behind a `GatedTx` and a connected RC pair from it to device
/// 1, after one WRITE with the gate open (ARP done, the path warm); the
/// devices and the fabric live as long as this does.
struct Bed {
    da: Arc<Device>,
    db: Arc<Device>,
    gate: Arc<GatedTx>,
    a: Endpoint,
    b: Endpoint,
    _fabric: Fabric,
}

fn warm_bed(slow_us: u64) -> Bed {
    let (da, db, gate, _fabric) = devices(slow_us);
    let (a, b) = pair(&da.context(), &db.context());
    a.qp.post_send(&[write(&a, &b, 1, 0, 8)], None).unwrap();
    assert_eq!(a.cq.wait(1, Duration::from_secs(5)).pop().map(|w| w.status), Some(WcStatus::Success));
    Bed { da, db, gate, a, b, _fabric }
}

#[test]
fn a_send_in_progress_does_not_hold_the_device_lock() {
    let Bed { da, db: _db, gate, a, b, _fabric } = warm_bed(0);

    gate.set_open(false);
    a.mr.write(64, b"held").unwrap();
    let wr = write(&a, &b, 2, 64, 4);
    let poster = std::thread::spawn({
        let qp = a.qp.clone();
        move || qp.post_send(&[wr], None).map_err(|(_, e)| e.to_string())
    });
    wait_for("the WRITE to reach the closed gate", || gate.waiting.load(Ordering::SeqCst) == 1);

    // The posting thread is inside the link's send: the lock is free.
    let (tx, rx) = std::sync::mpsc::channel();
    let d = da.clone();
    std::thread::spawn(move || {
        let _ = tx.send(d.counters());
    });
    let got = rx.recv_timeout(Duration::from_secs(3));
    let held_lock = got.is_err();
    gate.set_open(true);
    assert!(!held_lock, "the device lock was held across the link's send");
    poster.join().unwrap().unwrap();
    assert_eq!(a.cq.wait(1, Duration::from_secs(5)).pop().map(|w| w.status), Some(WcStatus::Success));
    let mut back = [0u8; 4];
    b.mr.read(64, &mut back).unwrap();
    assert_eq!(&back, b"held");
    let (dc, _, _) = da.counters();
    assert_eq!(dc.tx_errors, 0);
}

#[test]
fn frames_leave_in_the_order_threads_held_the_lock() {
    // Slow sends; two threads posting to one QP and the receive thread
    // (each ACK opens the send window, 128 PSNs) all produce frames of
    // the same QP while another thread may be writing.
    let Bed { da, db: _db, gate, a, b, _fabric } = warm_bed(20);
    gate.logging.store(true, Ordering::SeqCst);
    const PER_THREAD: u64 = 400;
    let posted = AtomicUsize::new(0);
    let completed = AtomicUsize::new(0);
    std::thread::scope(|s| {
        for _ in 0..2 {
            s.spawn(|| {
                let t = Instant::now();
                let mut mine = 0;
                while mine < PER_THREAD {
                    assert!(t.elapsed() < Duration::from_secs(30), "posted {mine} of {PER_THREAD}");
                    if posted.load(Ordering::SeqCst) - completed.load(Ordering::SeqCst) >= 200 {
                        std::thread::yield_now();
                        continue;
                    }
                    posted.fetch_add(1, Ordering::SeqCst);
                    // 2 KiB messages: two packets each at MTU 1024.
                    let at = (mine % 16) * 2048;
                    a.qp.post_send(&[write(&a, &b, mine, at, 2048)], None).unwrap();
                    mine += 1;
                }
            });
        }
        let t = Instant::now();
        while completed.load(Ordering::SeqCst) < 2 * PER_THREAD as usize {
            assert!(t.elapsed() < Duration::from_secs(30), "{completed:?} completed");
            for wc in a.cq.wait(32, Duration::from_millis(100)) {
                assert_eq!(wc.status, WcStatus::Success);
                completed.fetch_add(1, Ordering::SeqCst);
            }
        }
    });
    let qpn = b.qp.qp_num();
    let log = gate.log.lock().unwrap().clone();
    let psns: Vec<u32> = log.iter().filter(|(q, _)| *q == qpn).map(|&(_, p)| p).collect();
    assert!(psns.len() as u64 >= 4 * PER_THREAD, "{} packets logged", psns.len());
    for w in psns.windows(2) {
        assert_eq!(w[1], (w[0] + 1) & 0xff_ffff, "PSN {:#x} sent after {:#x}", w[1], w[0]);
    }
    let (dc, _, qc) = da.counters();
    assert_eq!(qc.retransmitted_pkts, 0);
    assert_eq!(dc.tx_errors, 0);
}

#[test]
fn a_writer_that_panics_does_not_hold_up_later_frames() {
    let Bed { da, db, gate, a, b, _fabric } = warm_bed(0);

    gate.panic_next.store(true, Ordering::SeqCst);
    let qp = a.qp.clone();
    let wr = write(&a, &b, 2, 0, 8);
    let panicked = std::thread::spawn(move || {
        let _ = qp.post_send(&[wr], None);
    })
    .join();
    assert!(panicked.is_err(), "the link's send was to panic");

    // The next post's frames go out (its turn comes) and the lost WRITE is
    // retransmitted with them: both complete.
    a.mr.write(0, b"next").unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let qp = a.qp.clone();
    let wr = write(&a, &b, 3, 0, 4);
    std::thread::spawn(move || {
        let _ = tx.send(qp.post_send(&[wr], None).is_ok());
    });
    if rx.recv_timeout(Duration::from_secs(5)) != Ok(true) {
        // Stopping the devices would wait for the stuck writer forever.
        std::mem::forget((da, db));
        panic!("a post after the panic never returned");
    }
    let mut ids = Vec::new();
    let t = Instant::now();
    while ids.len() < 2 && t.elapsed() < Duration::from_secs(10) {
        for wc in a.cq.wait(2, Duration::from_millis(100)) {
            assert_eq!(wc.status, WcStatus::Success);
            ids.push(wc.wr_id);
        }
    }
    assert_eq!(ids, vec![2, 3]);
    let mut back = [0u8; 4];
    b.mr.read(0, &mut back).unwrap();
    assert_eq!(&back, b"next");
}
