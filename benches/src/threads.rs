//! Where a run's CPU time went, thread by thread: the application's, each
//! device's receive and timer threads. A bandwidth figure alone cannot say
//! whether a slow run did more work or the same work slower, nor whether
//! the time went into softrdma or into the kernel (a TAP `write(2)` carries
//! its frame through the bridges on the writer's CPU). The kernel keeps the
//! answer per thread in `/proc/self/task/*/{stat,schedstat}`; this reads it
//! while the devices still run, so their threads are there to be read.

/// One thread name's totals (threads of one name are summed).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ThreadTime {
    pub name: String,
    /// On a CPU, in ns (schedstat: exact).
    pub run_ns: u64,
    /// Runnable but waiting for a CPU, in ns (schedstat).
    pub wait_ns: u64,
    /// User and system time in clock ticks (stat: the kernel samples these,
    /// so they say how `run_ns` splits, not more).
    pub user_ticks: u64,
    pub sys_ticks: u64,
}

/// Clock ticks per second of `stat`'s utime and stime (USER_HZ, 100 on
/// every Linux architecture this builds for).
pub const TICKS_PER_SEC: u64 = 100;

impl ThreadTime {
    /// One task from its `comm`, `stat` and `schedstat` texts; `None` if
    /// a text is not what the kernel writes.
    pub fn parse(comm: &str, stat: &str, schedstat: &str) -> Option<ThreadTime> {
        // The name in `stat` may hold spaces and parentheses; the fields
        // after its closing one are plain. utime and stime are fields 14
        // and 15, the 12th and 13th after the name.
        let rest = &stat[stat.rfind(')')? + 1..];
        let f: Vec<&str> = rest.split_whitespace().collect();
        let mut s = schedstat.split_whitespace().map(|v| v.parse::<u64>().ok());
        Some(ThreadTime {
            name: comm.trim().to_string(),
            run_ns: s.next()??,
            wait_ns: s.next()??,
            user_ticks: f.get(11)?.parse().ok()?,
            sys_ticks: f.get(12)?.parse().ok()?,
        })
    }

    pub fn sys_ms(&self) -> u64 {
        self.sys_ticks * 1000 / TICKS_PER_SEC
    }

    pub fn user_ms(&self) -> u64 {
        self.user_ticks * 1000 / TICKS_PER_SEC
    }
}

/// This process's threads, summed by name in the order first seen;
/// empty where `/proc` cannot be read.
pub fn this_process() -> Vec<ThreadTime> {
    let mut out: Vec<ThreadTime> = Vec::new();
    let Ok(dir) = std::fs::read_dir("/proc/self/task") else { return out };
    for task in dir.flatten() {
        let p = task.path();
        let read = |f: &str| std::fs::read_to_string(p.join(f)).ok();
        // A thread that exits between the listing and the reads is skipped.
        let (Some(comm), Some(stat), Some(sched)) = (read("comm"), read("stat"), read("schedstat")) else { continue };
        let Some(t) = ThreadTime::parse(&comm, &stat, &sched) else { continue };
        match out.iter_mut().find(|o| o.name == t.name) {
            Some(o) => {
                o.run_ns += t.run_ns;
                o.wait_ns += t.wait_ns;
                o.user_ticks += t.user_ticks;
                o.sys_ticks += t.sys_ticks;
            }
            None => out.push(t),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    // A receive thread's files as Linux 6.18 wrote them (stat trimmed after
    // field 20); the name is one that could trip a naive split.
    const STAT: &str = "4242 (bench1 (rx)) S 4200 4200 4100 0 -1 4194624 120 0 0 0 2 38 0 0 20 0 9 0";

    #[test]
    fn reads_times_past_a_name_with_spaces_and_parentheses() {
        let t = ThreadTime::parse("bench1 (rx)\n", STAT, "408176765 6403394 31\n").unwrap();
        assert_eq!(t.name, "bench1 (rx)");
        assert_eq!((t.run_ns, t.wait_ns), (408_176_765, 6_403_394));
        assert_eq!((t.user_ticks, t.sys_ticks), (2, 38));
        assert_eq!((t.user_ms(), t.sys_ms()), (20, 380));
    }

    #[test]
    fn refuses_texts_that_are_not_the_kernels() {
        assert_eq!(ThreadTime::parse("x", "no parenthesis here", "1 2 3"), None);
        assert_eq!(ThreadTime::parse("x", STAT, "one two"), None);
        assert_eq!(ThreadTime::parse("x", "1 (x) S 1", "1 2 3"), None);
    }

    #[test]
    fn this_process_sees_a_named_thread_while_it_runs() {
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let (up_tx, up) = std::sync::mpsc::channel::<()>();
        // The thread names itself as it starts: read once it has.
        let h = std::thread::Builder::new()
            .name("threads-probe".into())
            .spawn(move || {
                up_tx.send(()).unwrap();
                rx.recv()
            })
            .unwrap();
        up.recv().unwrap();
        let all = this_process();
        tx.send(()).unwrap();
        h.join().unwrap().unwrap();
        assert!(all.iter().any(|t| t.name == "threads-probe"), "{all:?}");
    }
}
