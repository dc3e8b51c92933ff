//! perftest-style output: the bandwidth and latency tables, and a JSON file
//! with the same numbers (`--out_json`).
//!
//! Units as perftest prints them: MB/sec is 2^20 bytes per second; with
//! `--report_gbits` the bandwidth columns are Gb/sec (10^9 bits per second).
//! MsgRate is millions of messages per second. Latencies are in
//! microseconds; for `*_lat` ping-pong tests (write, send, raw) they are half
//! the round trip, for `read_lat` the whole round trip, as perftest does.

use std::fmt::Write as _;
use std::time::Duration;

/// One line of a bandwidth table.
#[derive(Debug, Clone, Default)]
pub struct BwRow {
    pub bytes: u64,
    pub iterations: u64,
    /// Best rate over any window of the run (see `perf::peak`), bytes/s.
    pub peak_bps: f64,
    pub avg_bps: f64,
    pub msg_rate: f64,
    /// Extra facts for the JSON file (lost frames, verification…).
    pub notes: Vec<(String, String)>,
}

/// One line of a latency table (values in microseconds).
#[derive(Debug, Clone, Default)]
pub struct LatRow {
    pub bytes: u64,
    pub iterations: u64,
    pub min: f64,
    pub max: f64,
    pub typical: f64,
    pub avg: f64,
    pub stdev: f64,
    pub p99: f64,
    pub p999: f64,
    /// How often the test's spinning threads lost their CPU while they
    /// could run (`pin::preemptions`), if known.
    pub preempted: Option<u64>,
    /// CQ events the test slept on (-e), if it did.
    pub cq_events: Option<u64>,
}

impl LatRow {
    /// perftest's own statistics (`print_report_lat`), for a run whose
    /// post times were `posted`: the gaps between consecutive posts (each a
    /// round trip of a ping-pong, one read of read_lat), divided by
    /// `rtt_factor` (2 for half round trips), sorted, the two largest left
    /// out (its LAT_MEASURE_TAIL). Of what remains: the median as its
    /// `get_median`, the average, and as t_max, 99 % and 99.9 % the entries
    /// at the indices it prints (t_max is the smaller of the two left out).
    /// The standard deviation is the true one: perftest's own truncates
    /// each difference to whole microseconds first, so it prints 0.00 for
    /// most sub-microsecond spreads. `iterations` is what was run, as
    /// perftest prints it. Fewer than four posts give no statistics.
    pub fn perftest(bytes: u64, posted: &[std::time::Instant], rtt_factor: f64) -> Option<LatRow> {
        let mut us: Vec<f64> =
            posted.windows(2).map(|w| w[1].duration_since(w[0]).as_secs_f64() * 1e6 / rtt_factor).collect();
        if us.len() < 3 {
            return None;
        }
        us.sort_by(|a, b| a.total_cmp(b));
        let n = us.len() - 2;
        let median = if (n - 1) % 2 == 1 { (us[n / 2] + us[n / 2 - 1]) / 2.0 } else { us[n / 2] };
        let avg = us[..n].iter().sum::<f64>() / n as f64;
        let var = us[..n].iter().map(|x| (x - avg) * (x - avg)).sum::<f64>() / n as f64;
        let at = |p: f64| us[((n as f64 * p).ceil() as usize).min(us.len() - 1)];
        Some(LatRow {
            cq_events: None,
            bytes,
            iterations: posted.len() as u64,
            min: us[0],
            max: us[n],
            typical: median,
            avg,
            stdev: var.sqrt(),
            p99: at(0.99),
            p999: at(0.999),
            preempted: None,
        })
    }

    /// Statistics of `samples` (durations), each divided by `div` (2 for half round trips).
    pub fn from_samples(bytes: u64, samples: &mut [Duration], div: f64) -> LatRow {
        let mut us: Vec<f64> = samples.iter().map(|d| d.as_secs_f64() * 1e6 / div).collect();
        us.sort_by(|a, b| a.total_cmp(b));
        let n = us.len().max(1) as f64;
        let avg = us.iter().sum::<f64>() / n;
        let var = us.iter().map(|x| (x - avg) * (x - avg)).sum::<f64>() / n;
        let pct = |p: f64| -> f64 {
            if us.is_empty() {
                return 0.0;
            }
            let i = ((us.len() as f64 * p).ceil() as usize).clamp(1, us.len()) - 1;
            us[i]
        };
        LatRow {
            cq_events: None,
            bytes,
            iterations: us.len() as u64,
            min: us.first().copied().unwrap_or(0.0),
            max: us.last().copied().unwrap_or(0.0),
            typical: pct(0.5),
            avg,
            stdev: var.sqrt(),
            p99: pct(0.99),
            p999: pct(0.999),
            preempted: None,
        }
    }
}

pub const LINE: &str = "---------------------------------------------------------------------------------------";

pub fn bw_header(gbits: bool) -> String {
    if gbits {
        " #bytes     #iterations    BW peak[Gb/sec]    BW average[Gb/sec]   MsgRate[Mpps]".into()
    } else {
        " #bytes     #iterations    BW peak[MB/sec]    BW average[MB/sec]   MsgRate[Mpps]".into()
    }
}

pub fn bw_line(r: &BwRow, gbits: bool) -> String {
    let unit = |bps: f64| if gbits { bps * 8.0 / 1e9 } else { bps / (1u64 << 20) as f64 };
    format!(
        " {:<10} {:<10}       {:<10.2}         {:<10.2}           {:.6}",
        r.bytes,
        r.iterations,
        unit(r.peak_bps),
        unit(r.avg_bps),
        r.msg_rate / 1e6
    )
}

pub fn lat_header() -> String {
    " #bytes #iterations    t_min[usec]    t_max[usec]  t_typical[usec]    t_avg[usec]    t_stdev[usec]   99% percentile[usec]   99.9% percentile[usec] ".into()
}

pub fn lat_line(r: &LatRow) -> String {
    format!(
        " {:<7} {:<10}     {:<7.2}        {:<7.2}      {:<7.2}          {:<7.2}        {:<7.2}         {:<7.2}                {:<7.2}",
        r.bytes, r.iterations, r.min, r.max, r.typical, r.avg, r.stdev, r.p99, r.p999
    )
}

/// A latency test's row under `-D` in perftest's form
/// (`print_report_lat_duration`): the iterations the time held, the
/// average latency (the time over the iterations, halved for write/send
/// ping-pongs) and the iterations per second.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct LatDurRow {
    pub bytes: u64,
    pub iterations: u64,
    pub t_avg: f64,
    pub tps: f64,
}

impl LatDurRow {
    /// `iterations` completed in `took`; `rtt_factor` 2 for half round trips.
    pub fn new(bytes: u64, iterations: u64, took: Duration, rtt_factor: f64) -> LatDurRow {
        let secs = took.as_secs_f64();
        let (t_avg, tps) = match iterations {
            0 => (0.0, 0.0),
            n => (secs * 1e6 / rtt_factor / n as f64, if secs > 0.0 { n as f64 / secs } else { 0.0 }),
        };
        LatDurRow { bytes, iterations, t_avg, tps }
    }
}

/// perftest's header of a latency test's `-D` report (`RESULT_FMT_LAT_DUR`).
pub fn lat_dur_header() -> String {
    " #bytes        #iterations       t_avg[usec]    tps average".into()
}

pub fn lat_dur_line(r: &LatDurRow) -> String {
    format!(" {:<7}       {}            {:<7.2}        {:<7.2}", r.bytes, r.iterations, r.t_avg, r.tps)
}

/// The line under a table run with -e: how many CQ events each size's
/// run slept on (perftest prints no such thing).
pub fn cq_events_line(bw: &[BwRow], lat: &[LatRow]) -> Option<String> {
    let note = |r: &BwRow| r.notes.iter().find(|(k, _)| k == "cq_events").map(|(_, v)| v.clone());
    let counts: Vec<String> = bw
        .iter()
        .filter_map(|r| Some(format!("{} B: {}", r.bytes, note(r)?)))
        .chain(lat.iter().filter_map(|r| Some(format!("{} B: {}", r.bytes, r.cq_events?))))
        .collect();
    (!counts.is_empty()).then(|| format!(" CQ events slept on (-e): {}", counts.join(", ")))
}

/// The line under a latency table: how often the spinning threads were
/// preempted, per row (perftest prints no such thing; its table stays as is).
pub fn preempted_line(rows: &[LatRow]) -> Option<String> {
    let counts: Vec<String> = rows.iter().filter_map(|r| Some(format!("{} B: {}", r.bytes, r.preempted?))).collect();
    (!counts.is_empty()).then(|| format!(" Spinning threads preempted (involuntary switches): {}", counts.join(", ")))
}

/// What a run reports: its parameters and its rows.
#[derive(Debug, Clone, Default)]
pub struct Report {
    pub test: String,
    pub params: Vec<(String, String)>,
    pub bw: Vec<BwRow>,
    pub lat: Vec<LatRow>,
    /// A latency test's `-D` rows.
    pub lat_dur: Vec<LatDurRow>,
    /// Free-form lines (baselines and scale tests).
    pub facts: Vec<(String, String)>,
}

fn esc(s: &str) -> String {
    let mut o = String::new();
    for c in s.chars() {
        match c {
            '"' => o.push_str("\\\""),
            '\\' => o.push_str("\\\\"),
            '\n' => o.push_str("\\n"),
            c if (c as u32) < 0x20 => {
                let _ = write!(o, "\\u{:04x}", c as u32);
            }
            c => o.push(c),
        }
    }
    o
}

fn num(x: f64) -> String {
    if x.is_finite() {
        format!("{x}")
    } else {
        "null".into()
    }
}

fn kv_obj(kv: &[(String, String)]) -> String {
    let items: Vec<String> = kv.iter().map(|(k, v)| format!("\"{}\": \"{}\"", esc(k), esc(v))).collect();
    format!("{{{}}}", items.join(", "))
}

impl Report {
    pub fn new(test: &str) -> Report {
        Report { test: test.into(), ..Default::default() }
    }

    pub fn param(&mut self, k: &str, v: impl ToString) {
        self.params.push((k.into(), v.to_string()));
    }

    pub fn fact(&mut self, k: &str, v: impl ToString) {
        self.facts.push((k.into(), v.to_string()));
    }

    pub fn to_json(&self) -> String {
        let bw: Vec<String> = self
            .bw
            .iter()
            .map(|r| {
                format!(
                    "{{\"bytes\": {}, \"iterations\": {}, \"bw_peak_MBps\": {}, \"bw_avg_MBps\": {}, \"bw_avg_Gbps\": {}, \"msg_rate_Mpps\": {}, \"notes\": {}}}",
                    r.bytes,
                    r.iterations,
                    num(r.peak_bps / (1u64 << 20) as f64),
                    num(r.avg_bps / (1u64 << 20) as f64),
                    num(r.avg_bps * 8.0 / 1e9),
                    num(r.msg_rate / 1e6),
                    kv_obj(&r.notes)
                )
            })
            .collect();
        let lat: Vec<String> = self
            .lat
            .iter()
            .map(|r| {
                format!(
                    "{{\"bytes\": {}, \"iterations\": {}, \"t_min_us\": {}, \"t_max_us\": {}, \"t_typical_us\": {}, \"t_avg_us\": {}, \"t_stdev_us\": {}, \"p99_us\": {}, \"p999_us\": {}, \"preempted\": {}, \"cq_events\": {}}}",
                    r.bytes,
                    r.iterations,
                    num(r.min),
                    num(r.max),
                    num(r.typical),
                    num(r.avg),
                    num(r.stdev),
                    num(r.p99),
                    num(r.p999),
                    r.preempted.map_or("null".into(), |n| n.to_string()),
                    r.cq_events.map_or("null".into(), |n| n.to_string())
                )
            })
            .collect();
        let lat_dur: Vec<String> = self
            .lat_dur
            .iter()
            .map(|r| {
                format!(
                    "{{\"bytes\": {}, \"iterations\": {}, \"t_avg_us\": {}, \"tps\": {}}}",
                    r.bytes,
                    r.iterations,
                    num(r.t_avg),
                    num(r.tps)
                )
            })
            .collect();
        format!(
            "{{\"test\": \"{}\", \"params\": {}, \"bw\": [{}], \"lat\": [{}], \"lat_duration\": [{}], \"facts\": {}}}\n",
            esc(&self.test),
            kv_obj(&self.params),
            bw.join(", "),
            lat.join(", "),
            lat_dur.join(", "),
            kv_obj(&self.facts)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    /// Post times 0, 10, 30, 40, 100, 104 and 110 µs: half round trips 5,
    /// 10, 5, 30, 2 and 3 µs; sorted 2 3 5 5 | 10 30 with the two largest
    /// left out, as perftest's print_report_lat does.
    #[test]
    fn perftest_statistics_of_post_times() {
        let t0 = Instant::now();
        let posted: Vec<Instant> =
            [0u64, 10, 30, 40, 100, 104, 110].iter().map(|&us| t0 + Duration::from_micros(us)).collect();
        let r = LatRow::perftest(64, &posted, 2.0).unwrap();
        let close = |a: f64, b: f64| (a - b).abs() < 1e-9;
        assert_eq!((r.bytes, r.iterations), (64, 7));
        assert!(close(r.min, 2.0) && close(r.max, 10.0), "{r:?}");
        // An even count kept (4): the mean of the middle two.
        assert!(close(r.typical, 4.0) && close(r.avg, 3.75), "{r:?}");
        assert!(close(r.stdev, 1.6875f64.sqrt()), "{r:?}");
        assert!(close(r.p99, 10.0) && close(r.p999, 10.0), "{r:?}");
        // read_lat: whole round trips; an odd count kept (3): the middle one.
        let r = LatRow::perftest(2, &posted[..6], 1.0).unwrap();
        assert!(close(r.min, 4.0) && close(r.typical, 10.0) && close(r.max, 20.0), "{r:?}");
        assert!(LatRow::perftest(2, &posted[..3], 2.0).is_none());
    }

    /// 4 000 write_lat ping-pongs in 20 ms: 2.5 µs each way, 200 000 a second.
    #[test]
    fn perftest_duration_report() {
        let r = LatDurRow::new(2, 4000, Duration::from_millis(20), 2.0);
        assert!((r.t_avg - 2.5).abs() < 1e-9 && (r.tps - 200_000.0).abs() < 1e-6, "{r:?}");
        // read_lat: whole round trips.
        assert!((LatDurRow::new(2, 4000, Duration::from_millis(20), 1.0).t_avg - 5.0).abs() < 1e-9);
        assert_eq!(LatDurRow::new(2, 0, Duration::from_millis(20), 2.0).tps, 0.0);
        let line = lat_dur_line(&r);
        assert_eq!(line, " 2             4000            2.50           200000.00");
    }
}
