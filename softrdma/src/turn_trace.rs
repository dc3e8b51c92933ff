//! Where a latency turn's time goes: timestamps at fixed stages of the
//! device's path (a post, the link write, a receive, each frame in and
//! out), kept per thread and read after the run (`softrdma-perf write_lat
//! --turn-trace`, docs/benchmarks.md).
//!
//! Only with the `turn-trace` feature; without it [`mark`] compiles to
//! nothing and [`take`] returns no events. The stamps are TSC reads on
//! x86-64 (about 8 ns each on the hosts measured, where a vDSO clock read
//! costs 35), so a traced turn is some 200 ns slower than an untraced
//! one; the stages' shares are what the trace is for.

/// A point on the path of a frame, or of the application around it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum Stage {
    /// The benchmark's client begins a turn (just before its post).
    TurnStart = 1,
    /// `post_send` entered.
    Post,
    /// `post_send` flushed the transport (its frames are queued).
    Posted,
    /// A batch of frames is handed to the link (a TAP `write(2)` follows).
    TxWrite,
    /// The link took the batch.
    TxWritten,
    /// A receive took frames off the link.
    RxTook,
    /// One frame goes into the transport.
    FrameIn,
    /// The transport handled it.
    FrameDone,
    /// A flush asks the transport for its next frame.
    FrameOut,
    /// The transport built one.
    FrameBuilt,
    /// A receive handled and flushed its frames.
    RxDone,
    /// The application saw its send complete.
    AppCqe,
    /// The application saw the peer's data.
    AppData,
}

impl Stage {
    pub const ALL: [Stage; 13] = [
        Stage::TurnStart,
        Stage::Post,
        Stage::Posted,
        Stage::TxWrite,
        Stage::TxWritten,
        Stage::RxTook,
        Stage::FrameIn,
        Stage::FrameDone,
        Stage::FrameOut,
        Stage::FrameBuilt,
        Stage::RxDone,
        Stage::AppCqe,
        Stage::AppData,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Stage::TurnStart => "turn",
            Stage::Post => "post",
            Stage::Posted => "posted",
            Stage::TxWrite => "tx-write",
            Stage::TxWritten => "tx-written",
            Stage::RxTook => "rx-took",
            Stage::FrameIn => "frame-in",
            Stage::FrameDone => "frame-done",
            Stage::FrameOut => "frame-out",
            Stage::FrameBuilt => "frame-built",
            Stage::RxDone => "rx-done",
            Stage::AppCqe => "app-cqe",
            Stage::AppData => "app-data",
        }
    }

    pub fn from_u8(v: u8) -> Option<Stage> {
        Stage::ALL.into_iter().find(|s| *s as u8 == v)
    }
}

/// One stamp: the thread (in the order threads first marked), the stage,
/// and the time in ticks ([`Trace::ticks_per_ns`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Event {
    pub thread: usize,
    pub stage: Stage,
    pub ticks: u64,
}

/// What [`take`] returns.
#[derive(Clone, Debug, Default)]
pub struct Trace {
    pub events: Vec<Event>,
    pub ticks_per_ns: f64,
}

/// Whether this build traces (the `turn-trace` feature).
pub const ENABLED: bool = cfg!(feature = "turn-trace");

/// Stamps `stage` on the calling thread.
#[inline(always)]
pub fn mark(stage: Stage) {
    #[cfg(feature = "turn-trace")]
    on::mark(stage);
    #[cfg(not(feature = "turn-trace"))]
    let _ = stage;
}

/// Every stamp so far, from every thread, sorted by time; clears them.
/// Call while the traced threads are quiet (after the run).
pub fn take() -> Trace {
    #[cfg(feature = "turn-trace")]
    return on::take();
    #[cfg(not(feature = "turn-trace"))]
    Trace::default()
}

#[cfg(feature = "turn-trace")]
mod on {
    use super::{Event, Stage, Trace};
    use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex, OnceLock};

    /// Stamps a thread keeps (8 MiB each, about 50 000 turns of a
    /// ping-pong); later ones are not kept.
    const PER_THREAD: usize = 1 << 20;

    /// One writer (its thread), read by `take` once the run is over: each
    /// stamp is `ticks << 8 | stage`, published by `len`.
    struct Buf {
        stamps: Box<[AtomicU64]>,
        len: AtomicUsize,
    }

    fn registry() -> &'static Mutex<Vec<Arc<Buf>>> {
        static R: OnceLock<Mutex<Vec<Arc<Buf>>>> = OnceLock::new();
        R.get_or_init(|| Mutex::new(Vec::new()))
    }

    thread_local! {
        static MINE: Arc<Buf> = {
            let b = Arc::new(Buf {
                stamps: (0..PER_THREAD).map(|_| AtomicU64::new(0)).collect(),
                len: AtomicUsize::new(0),
            });
            registry().lock().unwrap_or_else(|e| e.into_inner()).push(b.clone());
            b
        };
    }

    #[inline(always)]
    fn ticks() -> u64 {
        #[cfg(target_arch = "x86_64")]
        #[allow(unsafe_code)]
        // SAFETY: RDTSC reads a counter; it has no operands or preconditions.
        return unsafe { core::arch::x86_64::_rdtsc() };
        #[cfg(not(target_arch = "x86_64"))]
        {
            static START: OnceLock<std::time::Instant> = OnceLock::new();
            START.get_or_init(std::time::Instant::now).elapsed().as_nanos() as u64
        }
    }

    pub(super) fn mark(stage: Stage) {
        let t = ticks();
        MINE.with(|b| {
            let i = b.len.load(Ordering::Relaxed);
            if let Some(slot) = b.stamps.get(i) {
                slot.store(t << 8 | stage as u64, Ordering::Relaxed);
                b.len.store(i + 1, Ordering::Release);
            }
        });
    }

    fn ticks_per_ns() -> f64 {
        let (t0, i0) = (ticks(), std::time::Instant::now());
        std::thread::sleep(std::time::Duration::from_millis(50));
        (ticks() - t0) as f64 / i0.elapsed().as_nanos().max(1) as f64
    }

    pub(super) fn take() -> Trace {
        let bufs = registry().lock().unwrap_or_else(|e| e.into_inner()).clone();
        let mut events = Vec::new();
        for (thread, b) in bufs.iter().enumerate() {
            let n = b.len.swap(0, Ordering::Acquire);
            for s in &b.stamps[..n] {
                let v = s.load(Ordering::Relaxed);
                if let Some(stage) = Stage::from_u8(v as u8) {
                    events.push(Event { thread, stage, ticks: v >> 8 });
                }
            }
        }
        events.sort_by_key(|e| e.ticks);
        Trace { events, ticks_per_ns: ticks_per_ns() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_stage_round_trips_through_its_byte() {
        for s in Stage::ALL {
            assert_eq!(Stage::from_u8(s as u8), Some(s));
        }
        assert_eq!(Stage::from_u8(0), None);
    }

    #[test]
    fn without_the_feature_nothing_is_kept() {
        mark(Stage::Post);
        assert_eq!(take().events.is_empty(), !ENABLED);
    }
}
