//! `--turn-trace`: the stages of a latency test's turn, from the stamps
//! the devices and the test leave (`softrdma::turn_trace`, a build with
//! the `turn-trace` feature; `benches/scripts/turn_trace.sh`).
//!
//! A turn runs from one client `TurnStart` to the next. Turns whose
//! sequence of (side, stage) differs from the most common one (a frame
//! taken by a receive thread, a retransmission, a preemption) are left
//! out, and the rest give each step's median.

use softrdma::turn_trace::{Stage, Trace};
use std::collections::HashMap;

/// Which end of the test a thread belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Side {
    Client,
    Server,
    /// Another thread (a device's receive or timer thread).
    Other(usize),
}

impl Side {
    fn name(self) -> String {
        match self {
            Side::Client => "client".into(),
            Side::Server => "server".into(),
            Side::Other(t) => format!("thread {t}"),
        }
    }
}

/// One step of the common turn: from a stamp to the next, its median.
#[derive(Clone, Debug, PartialEq)]
pub struct Step {
    pub from: (Side, Stage),
    pub to: (Side, Stage),
    pub median_ns: f64,
}

impl Step {
    /// Its two stamps as the table names them ("server frame-in").
    fn ends(&self) -> (String, String) {
        let name = |(side, stage): (Side, Stage)| format!("{} {}", side.name(), stage.name());
        (name(self.from), name(self.to))
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Breakdown {
    /// Turns traced, after the first tenth (warm-up) is dropped.
    pub turns: usize,
    /// How many of them took the common sequence.
    pub common: usize,
    pub steps: Vec<Step>,
}

impl Breakdown {
    pub fn total_ns(&self) -> f64 {
        self.steps.iter().map(|s| s.median_ns).sum()
    }

    /// The link's writes (a TAP `write(2)` carries the frame through the
    /// kernel's bridges to the peer's TAP on the writer's CPU).
    pub fn link_write_ns(&self) -> f64 {
        self.sum(|s| s.from.1 == Stage::TxWrite && s.to.1 == Stage::TxWritten)
    }

    /// From a write's end to the peer's read of it: the peer's spin
    /// finding the frame and its `read(2)` (the writer may poll its CQ
    /// meanwhile, as a UC client does).
    pub fn to_peer_read_ns(&self) -> f64 {
        let mut writer = None;
        let mut ns = 0.0;
        for s in &self.steps {
            if s.from.1 == Stage::TxWritten {
                writer = Some(s.from.0);
            }
            if let Some(w) = writer {
                ns += s.median_ns;
                if s.to.1 == Stage::RxTook && s.to.0 != w {
                    writer = None;
                }
            }
        }
        ns
    }

    fn sum(&self, f: impl Fn(&Step) -> bool) -> f64 {
        self.steps.iter().filter(|s| f(s)).map(|s| s.median_ns).sum()
    }

    /// The breakdown as `--out_json` facts named `{prefix}_…`.
    pub fn facts(&self, prefix: &str, r: &mut crate::report::Report) {
        let (total, write, read) = (self.total_ns(), self.link_write_ns(), self.to_peer_read_ns());
        r.fact(&format!("{prefix}_turns"), format!("{}/{}", self.common, self.turns));
        r.fact(&format!("{prefix}_round_trip_ns"), format!("{total:.0}"));
        r.fact(&format!("{prefix}_link_writes_ns"), format!("{write:.0}"));
        r.fact(&format!("{prefix}_to_peer_read_ns"), format!("{read:.0}"));
        r.fact(&format!("{prefix}_rest_ns"), format!("{:.0}", total - write - read));
        let steps: Vec<String> = self
            .steps
            .iter()
            .map(|s| {
                let (from, to) = s.ends();
                format!("{from} -> {to}: {:.0}", s.median_ns)
            })
            .collect();
        r.fact(&format!("{prefix}_steps"), steps.join("; "));
    }

    /// The table `--turn-trace` prints.
    pub fn lines(&self, title: &str) -> Vec<String> {
        let mut out = vec![format!(
            " Turn trace, {title}: {} of {} turns took this sequence; median ns per step",
            self.common, self.turns
        )];
        for s in &self.steps {
            let (from, to) = s.ends();
            out.push(format!("  {from:<22} -> {to:<22} {:>8.0}", s.median_ns));
        }
        let (total, write, read) = (self.total_ns(), self.link_write_ns(), self.to_peer_read_ns());
        out.push(format!(
            " Round trip {total:.0} ns: link writes {write:.0}, write's end to the peer's read {read:.0}, \
             the rest (softrdma, the test, the trace's own stamps) {:.0}",
            total - write - read
        ));
        out
    }
}

/// The common turn of `trace`, or `None` when no client turns are in it.
pub fn breakdown(trace: &Trace) -> Option<Breakdown> {
    let first = |stage| trace.events.iter().find(|e| e.stage == stage).map(|e| e.thread);
    let client = first(Stage::TurnStart)?;
    let server = trace.events.iter().find(|e| e.thread != client && e.stage == Stage::AppData).map(|e| e.thread);
    let side = |t: usize| match t {
        t if t == client => Side::Client,
        t if Some(t) == server => Side::Server,
        t => Side::Other(t),
    };
    let mut turns: Vec<Vec<(Side, Stage, u64)>> = Vec::new();
    for e in &trace.events {
        if e.thread == client && e.stage == Stage::TurnStart {
            turns.push(Vec::new());
        }
        if let Some(t) = turns.last_mut() {
            t.push((side(e.thread), e.stage, e.ticks));
        }
    }
    // The last turn may be cut short by the end of the run.
    turns.pop();
    let turns: Vec<_> = turns.split_off(turns.len() / 10);
    let key = |t: &Vec<(Side, Stage, u64)>| t.iter().map(|&(s, g, _)| (s, g)).collect::<Vec<_>>();
    let mut counts: HashMap<Vec<(Side, Stage)>, usize> = HashMap::new();
    for t in &turns {
        *counts.entry(key(t)).or_default() += 1;
    }
    let (pattern, common) = counts.into_iter().max_by_key(|(p, n)| (*n, std::cmp::Reverse(p.len())))?;
    let chosen: Vec<_> = turns.iter().filter(|t| key(t) == pattern).collect();
    let per_ns = trace.ticks_per_ns.max(f64::MIN_POSITIVE);
    let steps = (1..pattern.len())
        .map(|i| {
            let mut d: Vec<f64> = chosen.iter().map(|t| t[i].2.saturating_sub(t[i - 1].2) as f64 / per_ns).collect();
            d.sort_by(f64::total_cmp);
            Step { from: pattern[i - 1], to: pattern[i], median_ns: d[d.len() / 2] }
        })
        .collect();
    Some(Breakdown { turns: turns.len(), common, steps })
}

#[cfg(test)]
mod tests {
    use super::*;
    use softrdma::turn_trace::Event;

    fn ev(thread: usize, stage: Stage, ticks: u64) -> Event {
        Event { thread, stage, ticks }
    }

    /// A UC-like turn at tick `t0` (2 ticks per ns): the client posts,
    /// writes and sees its send complete, the server reads, handles,
    /// answers; `slow` stretches the client's write.
    fn turn(t0: u64, slow: u64) -> Vec<Event> {
        vec![
            ev(0, Stage::TurnStart, t0),
            ev(0, Stage::Post, t0 + 20),
            ev(0, Stage::TxWrite, t0 + 100),
            ev(0, Stage::TxWritten, t0 + 4100 + slow),
            ev(0, Stage::AppCqe, t0 + 4300 + slow),
            ev(1, Stage::RxTook, t0 + 5100 + slow),
            ev(1, Stage::FrameIn, t0 + 5200 + slow),
            ev(1, Stage::FrameDone, t0 + 5800 + slow),
            ev(1, Stage::AppData, t0 + 6000 + slow),
            ev(1, Stage::TxWrite, t0 + 6400 + slow),
            ev(1, Stage::TxWritten, t0 + 10400 + slow),
            ev(0, Stage::RxTook, t0 + 11400 + slow),
            ev(0, Stage::AppData, t0 + 12000 + slow),
        ]
    }

    #[test]
    fn the_common_sequence_gives_each_steps_median_and_the_link_shares() {
        let mut events = Vec::new();
        for i in 0..21 {
            events.extend(turn(i * 20_000, i % 3 * 100));
        }
        // One turn with a frame taken by a receive thread: another sequence.
        let odd = 21 * 20_000;
        events.extend(turn(odd, 0));
        events.push(ev(2, Stage::RxTook, odd + 11_500));
        events.sort_by_key(|e| e.ticks);
        // The run's last turn is cut short and dropped.
        events.extend(turn(22 * 20_000, 0).into_iter().take(3));
        let b = breakdown(&Trace { events, ticks_per_ns: 2.0 }).expect("turns");
        // 22 whole turns, the first 2 dropped as warm-up, 19 of the 20 common.
        assert_eq!((b.turns, b.common), (20, 19));
        assert_eq!(b.steps.len(), 12);
        assert_eq!(b.steps[0].from, (Side::Client, Stage::TurnStart));
        assert_eq!(b.steps[4].to, (Side::Server, Stage::RxTook));
        // Writes of 4000 ticks (+0, 100 or 200): medians 2050 and 2000 ns.
        assert_eq!(b.link_write_ns(), 2050.0 + 2000.0);
        assert_eq!(b.to_peer_read_ns(), 500.0 + 500.0);
        assert_eq!(b.total_ns(), (12_000.0 + 100.0) / 2.0);
        let lines = b.lines("write_lat RC");
        assert!(lines[0].contains("19 of 20 turns"), "{lines:?}");
        assert!(lines.iter().any(|l| l.contains("server frame-in") && l.contains("server frame-done")));
        assert!(lines.last().unwrap().contains("link writes 4050"), "{lines:?}");
    }

    #[test]
    fn no_client_turns_no_breakdown() {
        let t = Trace { events: vec![ev(0, Stage::Post, 1), ev(1, Stage::RxTook, 5)], ticks_per_ns: 1.0 };
        assert_eq!(breakdown(&t), None);
        assert_eq!(breakdown(&Trace::default()), None);
    }
}
