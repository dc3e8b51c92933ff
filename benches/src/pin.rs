//! The two spinning threads of a latency test, each on a CPU of its own.
//!
//! Both ends of a test run in one process, and where the scheduler puts the
//! second thread is a lottery: on this 2-CPU machine about one short
//! `write_lat --fabric tap` run in three (docs/benchmarks.md, stop 16) had
//! both spinning threads on one CPU, passing it back and forth at every
//! `sched_yield` (≈ 9 000 switches in a 5 000-round run instead of ≈ 500)
//! and taking 6.4 µs a half round trip instead of 4.6. perftest's two
//! processes are placed the same way, which is why its users `taskset`
//! them; here the tool does it. Threads that sleep between messages
//! (`--busy-poll 0`) are left alone: woken pinned, a thread must wait for
//! its own CPU to leave idle (≈ 30 µs a round trip here, against 2.7 µs
//! unpinned, when the waker's CPU would have taken it).

use std::sync::atomic::{AtomicBool, Ordering};

use rustix::thread::{sched_getaffinity, sched_setaffinity, CpuSet};

static ON: AtomicBool = AtomicBool::new(true);

/// Whether latency tests pin their threads (`softrdma-perf --no-pin`: no).
pub fn set_enabled(on: bool) {
    ON.store(on, Ordering::Relaxed);
}

/// The CPUs for a latency test's client and server threads; `None` when
/// pinning is off or this process may use only one CPU.
pub fn pair() -> Option<(usize, usize)> {
    ON.load(Ordering::Relaxed).then(two_cpus).flatten()
}

/// The first two CPUs this thread may run on, if it may run on two.
pub fn two_cpus() -> Option<(usize, usize)> {
    let set = sched_getaffinity(None).ok()?;
    let mut cpus = (0..CpuSet::MAX_CPU).filter(|&c| set.is_set(c));
    Some((cpus.next()?, cpus.next()?))
}

/// The calling thread pinned to one CPU until the guard drops, when its
/// former mask is restored.
pub struct Pinned {
    saved: Option<CpuSet>,
}

impl Pinned {
    /// Pins the calling thread to `cpu`; if that fails, leaves it be.
    pub fn to(cpu: usize) -> Pinned {
        let saved = sched_getaffinity(None).ok();
        let mut one = CpuSet::new();
        one.set(cpu);
        match sched_setaffinity(None, &one) {
            Ok(()) => Pinned { saved },
            Err(_) => Pinned { saved: None },
        }
    }
}

impl Drop for Pinned {
    fn drop(&mut self) {
        if let Some(s) = &self.saved {
            let _ = sched_setaffinity(None, s);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pin_holds_and_is_undone() {
        let Some((a, _)) = two_cpus() else {
            println!("skipped: this thread may run on one CPU only");
            return;
        };
        let cpus = |s: &CpuSet| (0..CpuSet::MAX_CPU).filter(|&c| s.is_set(c)).collect::<Vec<_>>();
        let before = cpus(&sched_getaffinity(None).expect("mask"));
        {
            let _p = Pinned::to(a);
            assert_eq!(cpus(&sched_getaffinity(None).expect("mask")), vec![a]);
        }
        assert_eq!(cpus(&sched_getaffinity(None).expect("mask")), before);
    }
}
