//! A simulated link between endpoints with the faults real networks have:
//! drop, duplicate, reorder, corrupt and delay (after s2n-quic's testing
//! network). Deterministic for a given seed.

use core::time::Duration;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};

use crate::time::Instant;

/// SplitMix64: small, fast, and the same sequence everywhere.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }
    pub fn chance(&mut self, p: f64) -> bool {
        p > 0.0 && ((self.next_u64() >> 11) as f64 / (1u64 << 53) as f64) < p
    }
}

/// Fault knobs, each a probability per frame (0.0..=1.0).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct NetConfig {
    pub drop: f64,
    pub dup: f64,
    pub reorder: f64,
    pub corrupt: f64,
    /// One-way latency of every frame.
    pub latency: Duration,
    /// Extra uniform random delay added to every frame.
    pub jitter: Duration,
}

impl Default for NetConfig {
    fn default() -> Self {
        NetConfig {
            drop: 0.0,
            dup: 0.0,
            reorder: 0.0,
            corrupt: 0.0,
            latency: Duration::from_micros(10),
            jitter: Duration::ZERO,
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NetStats {
    pub sent: u64,
    pub delivered: u64,
    pub dropped: u64,
    pub duplicated: u64,
    pub reordered: u64,
    pub corrupted: u64,
}

#[derive(Debug)]
pub struct Network {
    pub cfg: NetConfig,
    rng: Rng,
    queue: BinaryHeap<Reverse<(Instant, u64)>>,
    frames: HashMap<u64, (usize, Vec<u8>)>,
    seq: u64,
    pub stats: NetStats,
}

impl Network {
    pub fn new(cfg: NetConfig, seed: u64) -> Self {
        Network {
            cfg,
            rng: Rng::new(seed),
            queue: BinaryHeap::new(),
            frames: HashMap::new(),
            seq: 0,
            stats: NetStats::default(),
        }
    }

    fn delay(&mut self) -> Duration {
        let j = self.cfg.jitter.as_nanos() as u64;
        self.cfg.latency + Duration::from_nanos(if j > 0 { self.rng.below(j) } else { 0 })
    }

    fn enqueue(&mut self, at: Instant, dest: usize, frame: Vec<u8>) {
        self.seq += 1;
        self.queue.push(Reverse((at, self.seq)));
        self.frames.insert(self.seq, (dest, frame));
    }

    /// Puts a frame on the wire towards endpoint `dest`.
    pub fn send(&mut self, now: Instant, dest: usize, frame: &[u8]) {
        self.stats.sent += 1;
        if self.rng.chance(self.cfg.drop) {
            self.stats.dropped += 1;
            return;
        }
        let mut f = frame.to_vec();
        if self.rng.chance(self.cfg.corrupt) && !f.is_empty() {
            self.stats.corrupted += 1;
            let i = self.rng.below(f.len() as u64) as usize;
            f[i] ^= 1 << self.rng.below(8);
        }
        let mut at = now + self.delay();
        if self.rng.chance(self.cfg.reorder) {
            // Held back long enough for later frames to overtake it.
            self.stats.reordered += 1;
            let extra = self.cfg.latency.as_nanos() as u64 * (1 + self.rng.below(4));
            at = at + Duration::from_nanos(extra);
        }
        if self.rng.chance(self.cfg.dup) {
            self.stats.duplicated += 1;
            let later = at + self.delay();
            self.enqueue(later, dest, f.clone());
        }
        self.enqueue(at, dest, f);
    }

    pub fn next_delivery(&self) -> Option<Instant> {
        self.queue.peek().map(|Reverse((t, _))| *t)
    }

    /// The next frame due at or before `now`, with its destination.
    pub fn pop_due(&mut self, now: Instant) -> Option<(usize, Vec<u8>)> {
        let Reverse((t, seq)) = *self.queue.peek()?;
        if t > now {
            return None;
        }
        self.queue.pop();
        self.stats.delivered += 1;
        self.frames.remove(&seq)
    }

    pub fn in_flight(&self) -> usize {
        self.queue.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn knobs_do_what_they_say_and_replay() {
        let run = |seed| {
            let cfg = NetConfig { drop: 0.1, dup: 0.1, reorder: 0.1, corrupt: 0.1, ..Default::default() };
            let mut n = Network::new(cfg, seed);
            for i in 0..10_000u32 {
                n.send(Instant::ZERO, 0, &i.to_be_bytes());
            }
            let mut got = Vec::new();
            while let Some((_, f)) = n.pop_due(Instant::from_nanos(u64::MAX)) {
                got.push(f);
            }
            (n.stats, got)
        };
        let (s, got) = run(7);
        assert_eq!(run(7).1, got, "same seed, same delivery");
        for (v, name) in
            [(s.dropped, "drop"), (s.duplicated, "dup"), (s.reordered, "reorder"), (s.corrupted, "corrupt")]
        {
            assert!((800..1200).contains(&v), "{name}: {v} of 10000");
        }
        assert_eq!(got.len() as u64, s.sent - s.dropped + s.duplicated);
    }
}
