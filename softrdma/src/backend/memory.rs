//! The in-memory fabric: devices in one process joined by a learning
//! Ethernet switch, with no root and no kernel networking. Frames are the
//! same bytes a TAP would carry (Ethernet, IP, UDP, BTH…, ICRC). Faults
//! (drop, duplicate, reorder, corrupt) can be switched on per fabric.

use std::collections::HashMap;
use std::io;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use transport::sim::Rng;

use crate::link::{Link, LinkRx, LinkTx};

/// Per-frame fault probabilities (0.0..=1.0).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Faults {
    pub drop: f64,
    pub dup: f64,
    pub reorder: f64,
    pub corrupt: f64,
}

/// What the switch did, for tests and reports.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FabricStats {
    pub forwarded: u64,
    pub flooded: u64,
    pub dropped: u64,
    pub duplicated: u64,
    pub reordered: u64,
    pub corrupted: u64,
    /// Frames lost because a port's queue was full (a congested switch port).
    pub overflowed: u64,
}

struct Port {
    tx: SyncSender<Vec<u8>>,
    /// A frame held back to be delivered after the next one (reordering).
    held: Option<Vec<u8>>,
}

struct Inner {
    ports: Vec<Port>,
    macs: HashMap<[u8; 6], usize>,
    faults: Faults,
    rng: Rng,
    stats: FabricStats,
}

/// A switch; cloning gives another handle to the same one.
#[derive(Clone)]
pub struct Fabric {
    inner: Arc<Mutex<Inner>>,
}

/// Frames a port may queue before the switch drops (like a switch buffer).
const PORT_QUEUE: usize = 8192;

impl Default for Fabric {
    fn default() -> Self {
        Self::new()
    }
}

impl Fabric {
    pub fn new() -> Self {
        Self::with_faults(Faults::default(), 1)
    }

    pub fn with_faults(faults: Faults, seed: u64) -> Self {
        Fabric {
            inner: Arc::new(Mutex::new(Inner {
                ports: Vec::new(),
                macs: HashMap::new(),
                faults,
                rng: Rng::new(seed),
                stats: FabricStats::default(),
            })),
        }
    }

    pub fn set_faults(&self, faults: Faults) {
        if let Ok(mut i) = self.inner.lock() {
            i.faults = faults;
        }
    }

    pub fn stats(&self) -> FabricStats {
        self.inner.lock().map(|i| i.stats).unwrap_or_default()
    }

    /// Plugs a new port into the switch for a device with `mac`.
    pub fn attach(&self, mac: [u8; 6], mtu: usize) -> Link {
        let (tx, rx) = mpsc::sync_channel(PORT_QUEUE);
        let port = {
            let mut i = self.inner.lock().expect("fabric lock");
            i.ports.push(Port { tx, held: None });
            let p = i.ports.len() - 1;
            i.macs.insert(mac, p);
            p
        };
        Link { tx: Arc::new(FabricTx { fabric: self.clone(), port }), rx: Box::new(FabricRx { rx }), mac, mtu }
    }
}

struct FabricTx {
    fabric: Fabric,
    port: usize,
}

impl Inner {
    fn deliver(&mut self, to: usize, frame: Vec<u8>) {
        let Some(p) = self.ports.get_mut(to) else { return };
        let mut out = vec![frame];
        if let Some(h) = p.held.take() {
            out.push(h);
        }
        for f in out {
            match p.tx.try_send(f) {
                Ok(()) => {}
                Err(TrySendError::Full(_)) => self.stats.overflowed += 1,
                Err(TrySendError::Disconnected(_)) => {}
            }
        }
    }

    fn forward(&mut self, from: usize, frame: &[u8]) {
        if frame.len() < 14 {
            return;
        }
        let mut src = [0u8; 6];
        src.copy_from_slice(&frame[6..12]);
        self.macs.insert(src, from);
        let mut dst = [0u8; 6];
        dst.copy_from_slice(&frame[0..6]);
        let targets: Vec<usize> = match self.macs.get(&dst) {
            Some(&p) if dst[0] & 1 == 0 => vec![p],
            _ => {
                self.stats.flooded += 1;
                (0..self.ports.len()).filter(|&p| p != from).collect()
            }
        };
        let f = self.faults;
        for to in targets {
            if self.rng.chance(f.drop) {
                self.stats.dropped += 1;
                continue;
            }
            let mut copy = frame.to_vec();
            if self.rng.chance(f.corrupt) {
                self.stats.corrupted += 1;
                let i = self.rng.below(copy.len() as u64) as usize;
                copy[i] ^= 1 << self.rng.below(8);
            }
            self.stats.forwarded += 1;
            if self.rng.chance(f.dup) {
                self.stats.duplicated += 1;
                self.deliver(to, copy.clone());
            }
            if self.rng.chance(f.reorder) && self.ports[to].held.is_none() {
                self.stats.reordered += 1;
                self.ports[to].held = Some(copy);
                continue;
            }
            self.deliver(to, copy);
        }
    }
}

impl LinkTx for FabricTx {
    fn send(&self, frame: &[u8]) -> io::Result<()> {
        let mut i = self.fabric.inner.lock().map_err(|_| io::Error::other("fabric poisoned"))?;
        i.forward(self.port, frame);
        Ok(())
    }
}

struct FabricRx {
    rx: Receiver<Vec<u8>>,
}

impl LinkRx for FabricRx {
    fn recv(&mut self, buf: &mut [u8], timeout: Duration) -> io::Result<Option<usize>> {
        match self.rx.recv_timeout(timeout) {
            Ok(f) => {
                let n = f.len().min(buf.len());
                buf[..n].copy_from_slice(&f[..n]);
                Ok(Some(n))
            }
            Err(RecvTimeoutError::Timeout) => Ok(None),
            Err(RecvTimeoutError::Disconnected) => Err(io::Error::new(io::ErrorKind::BrokenPipe, "fabric gone")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(dst: [u8; 6], src: [u8; 6], tag: u8) -> Vec<u8> {
        let mut f = vec![0u8; 60];
        f[0..6].copy_from_slice(&dst);
        f[6..12].copy_from_slice(&src);
        f[20] = tag;
        f
    }

    #[test]
    fn learns_floods_and_forwards() {
        let fab = Fabric::new();
        let (a, b, c) = ([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2], [2, 0, 0, 0, 0, 3]);
        let la = fab.attach(a, 1500);
        let mut lb = fab.attach(b, 1500);
        let mut lc = fab.attach(c, 1500);
        let mut buf = [0u8; 1600];
        la.tx.send(&frame([0xff; 6], a, 1)).unwrap();
        assert_eq!(lb.rx.recv(&mut buf, Duration::from_millis(10)).unwrap(), Some(60));
        assert_eq!(lc.rx.recv(&mut buf, Duration::from_millis(10)).unwrap(), Some(60), "broadcast floods");
        la.tx.send(&frame(b, a, 2)).unwrap();
        assert_eq!(lb.rx.recv(&mut buf, Duration::from_millis(10)).unwrap(), Some(60));
        assert_eq!(buf[20], 2);
        assert_eq!(lc.rx.recv(&mut buf, Duration::from_millis(10)).unwrap(), None, "unicast goes to its port only");
    }

    #[test]
    fn faults_are_applied() {
        let fab = Fabric::with_faults(Faults { drop: 0.5, ..Default::default() }, 3);
        let (a, b) = ([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2]);
        let la = fab.attach(a, 1500);
        let mut lb = fab.attach(b, 1500);
        for i in 0..1000 {
            la.tx.send(&frame(b, a, i as u8)).unwrap();
        }
        let mut buf = [0u8; 100];
        let mut n = 0;
        while lb.rx.recv(&mut buf, Duration::from_millis(1)).unwrap().is_some() {
            n += 1;
        }
        assert!((400..600).contains(&n), "{n}");
        assert_eq!(fab.stats().dropped, 1000 - n);
    }
}
