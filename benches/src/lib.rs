//! perftest-compatible tools and micro-benchmarks for softrdma (issue 7).
//!
//! - [`fabric`]: two (or many) softrdma devices on the in-memory fabric or on
//!   TAPs in network namespaces, with the link MTU a test asks for, and the
//!   bare links (no device) for the raw baselines.
//! - [`perf`]: the verbs tests (`write_bw`, `read_bw`, `send_bw`,
//!   `atomic_bw`, `write_lat`, `send_lat`, `read_lat`) written against
//!   `verbs-api` only.
//! - [`events`]: perftest's `-e`, CQs that sleep on their completion channels.
//! - [`baseline`]: what the machine can do without RDMA: raw Ethernet frames
//!   through the same links, memcpy, and the sans-IO transport alone.
//! - [`scale`]: many QPs on one device, many namespaces with a device each.
//! - [`report`]: perftest-style tables and the JSON file.
//! - [`host`]: which CPU a result was measured on (the JSON file's facts).
//! - [`turn`]: `--turn-trace`, where a latency turn's time went, step by step.

pub mod baseline;
pub mod events;
pub mod fabric;
pub mod host;
pub mod loaded;
pub mod oob;
pub mod perf;
pub mod pin;
pub mod report;
pub mod scale;
pub mod threads;
pub mod turn;

/// Resident set size of this process in bytes (`VmRSS` of `/proc/self/status`).
pub fn rss_bytes() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let l = s.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = l["VmRSS:".len()..].trim().trim_end_matches("kB").trim().parse().ok()?;
    Some(kb * 1024)
}
