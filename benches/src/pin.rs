//! The two spinning threads of a latency test, each on a CPU of its own.
//!
//! Both ends of a test run in one process, and where the scheduler puts the
//! second thread is a lottery: on this 2-CPU machine about one short
//! `write_lat --fabric tap` run in three (docs/benchmarks-history.md, stop 16) had
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

/// How often the calling thread has been switched out while it could still
/// run (`nonvoluntary_ctxt_switches` in `/proc/thread-self/status`): for a
/// thread that spins and never sleeps, every time the scheduler gave its
/// CPU to another thread. A latency test's 99th percentile is made of such
/// turns (docs/benchmarks-history.md, stop 22). `None` where the kernel does not say.
pub fn preemptions() -> Option<u64> {
    involuntary_switches(&std::fs::read_to_string("/proc/thread-self/status").ok()?)
}

fn involuntary_switches(status: &str) -> Option<u64> {
    status.lines().find_map(|l| l.strip_prefix("nonvoluntary_ctxt_switches:")).and_then(|v| v.trim().parse().ok())
}

/// Runs `f` on the calling thread; returns what it returned and how often
/// the thread was preempted meanwhile (`preemptions`).
pub fn preempted_during<R>(f: impl FnOnce() -> R) -> (R, Option<u64>) {
    let before = preemptions();
    let r = f();
    let grew = preemptions().zip(before).map(|(after, before)| after.saturating_sub(before));
    (r, grew)
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
    fn the_involuntary_switch_count_is_read_from_the_status_file() {
        let status = "Name:\tx\nvoluntary_ctxt_switches:\t7\nnonvoluntary_ctxt_switches:\t42\n";
        assert_eq!(involuntary_switches(status), Some(42));
        assert_eq!(involuntary_switches("Name:\tx\n"), None);
        assert_eq!(involuntary_switches("nonvoluntary_ctxt_switches:\tmany\n"), None);
    }

    /// Two threads on one CPU that yield to each other are switched out at
    /// every yield while still runnable: the count must see it.
    #[test]
    fn threads_sharing_a_cpu_count_their_preemptions() {
        let Some((cpu, _)) = two_cpus() else {
            println!("skipped: this thread may run on one CPU only");
            return;
        };
        if preemptions().is_none() {
            println!("skipped: the kernel does not report involuntary switches");
            return;
        }
        // Both pinned before either yields, so that each yield has the
        // other thread to switch to.
        let both = std::sync::Barrier::new(2);
        let counts: Vec<u64> = std::thread::scope(|s| {
            let spin = || {
                let _p = Pinned::to(cpu);
                both.wait();
                let ((), n) = preempted_during(|| {
                    for _ in 0..2000 {
                        std::thread::yield_now();
                    }
                });
                n.expect("count")
            };
            let (a, b) = (s.spawn(spin), s.spawn(spin));
            vec![a.join().unwrap(), b.join().unwrap()]
        });
        assert!(counts.iter().sum::<u64>() >= 100, "two threads yielding on one CPU were preempted {counts:?} times");
    }

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
