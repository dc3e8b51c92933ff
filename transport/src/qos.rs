//! Egress shaping, sans-IO: token buckets in bytes/s and messages/s that a
//! driver asks before it pulls a frame from an endpoint, so a throttled QP
//! simply waits — nothing is dropped — until the gate's deadline. The device
//! keeps one shaper per namespace (so per job, a job being a namespace with
//! a JKey); the simulator one per node. Weighted sharing between the QPs of
//! an endpoint is `Endpoint::set_qp_weight`.

use std::time::Duration;

/// A namespace's egress limits (None: unlimited).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RateLimit {
    pub bytes_per_sec: Option<u64>,
    pub msgs_per_sec: Option<u64>,
}

/// A token bucket that may go into debt by one frame, so frames are never
/// split, and pays the debt back before the next one.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Duration,
}

impl TokenBucket {
    pub fn new(rate: u64, burst: f64, now: Duration) -> Self {
        TokenBucket { rate: rate as f64, burst, tokens: burst, last: now }
    }

    fn refill(&mut self, now: Duration) {
        let dt = now.saturating_sub(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + dt * self.rate).min(self.burst);
    }

    /// Time until a frame may go (zero: now).
    pub fn wait(&mut self, now: Duration) -> Duration {
        self.refill(now);
        if self.tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-self.tokens / self.rate.max(1e-9))
        }
    }

    pub fn take(&mut self, n: f64) {
        self.tokens -= n;
    }
}

/// The buckets of one namespace.
#[derive(Debug, Clone, Default)]
pub struct Shaper {
    pub limit: RateLimit,
    bytes: Option<TokenBucket>,
    msgs: Option<TokenBucket>,
}

impl Shaper {
    pub fn new(limit: RateLimit, now: Duration) -> Self {
        // 50 ms worth of burst (at least one jumbo frame / one message), so a
        // timer wake-up delayed by a loaded machine loses no tokens.
        let bytes = limit.bytes_per_sec.map(|r| TokenBucket::new(r, (r as f64 * 0.05).max(9018.0), now));
        let msgs = limit.msgs_per_sec.map(|r| TokenBucket::new(r, (r as f64 * 0.05).max(1.0), now));
        Shaper { limit, bytes, msgs }
    }

    /// `None` if a frame may go now, else how long to wait.
    pub fn gate(&mut self, now: Duration) -> Option<Duration> {
        let w = [self.bytes.as_mut().map(|b| b.wait(now)), self.msgs.as_mut().map(|b| b.wait(now))]
            .into_iter()
            .flatten()
            .max()
            .unwrap_or(Duration::ZERO);
        (w > Duration::ZERO).then_some(w)
    }

    /// Charges a frame of `len` bytes that ends a request message if `msg_end`.
    pub fn charge(&mut self, len: usize, msg_end: bool) {
        if let Some(b) = &mut self.bytes {
            b.take(len as f64);
        }
        if msg_end {
            if let Some(m) = &mut self.msgs {
                m.take(1.0);
            }
        }
    }
}

/// Whether a RoCEv2 frame carries the last packet of a request message
/// (SEND/WRITE last or only, READ request, atomic) — a "message" for the
/// messages/s limit. Reads only the headers' fixed offsets.
pub fn ends_request(frame: &[u8]) -> bool {
    crate::wire::peek::opcode(frame).is_some_and(|o| {
        use crate::wire::opcode::Operation::*;
        let i = o.info();
        matches!(i.operation, Send | RdmaWrite | ReadRequest | CompareSwap | FetchAdd) && i.position.ends_message()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_rate_over_a_simulated_second() {
        let mut s = Shaper::new(RateLimit { bytes_per_sec: Some(1_000_000), msgs_per_sec: None }, Duration::ZERO);
        let mut now = Duration::ZERO;
        let mut sent = 0u64;
        while now < Duration::from_secs(1) {
            match s.gate(now) {
                None => {
                    s.charge(1500, true);
                    sent += 1500;
                }
                Some(w) => now += w,
            }
        }
        // 1 MB/s for 1 s plus the 50 kB burst, give or take one frame.
        assert!((1_000_000..=1_052_000).contains(&sent), "{sent}");
    }
}
