//! The deterministic simulation as a command:
//!
//! ```text
//! cargo run --release -p transport --example sim -- --messages 100000 \
//!     --drop 0.1 --reorder 0.1 --dup 0.1 --corrupt 0.1 --seed 1 [--transport rc|uc|ud]
//! ```
//! Prints one summary line; exits 1 on any lost (RC), duplicated, reordered
//! or corrupted delivery, or any error completion.

use std::process::ExitCode;
use std::time::Duration;

use transport::sim::workload::{run, WorkloadConfig};
use transport::sim::NetConfig;
use verbs_api::{Mtu, QpType};

fn usage() -> ExitCode {
    eprintln!(
        "usage: sim [--messages N] [--drop P] [--dup P] [--reorder P] [--corrupt P] [--seed S]\n           [--transport rc|uc|ud] [--mtu 256|512|1024|2048|4096] [--depth N] [--max-size BYTES]\n           [--latency-us N] [--psn START]\n           [--retry-cnt 0..7] [--rxe-retry] [--trace]"
    );
    ExitCode::from(2)
}

fn main() -> ExitCode {
    let mut cfg = WorkloadConfig { messages: 10_000, ..WorkloadConfig::default() };
    let mut net = NetConfig::default();
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        if flag == "--trace" {
            cfg.trace = true;
            continue;
        }
        if flag == "--rxe-retry" {
            cfg.rxe_retry_quirk = true;
            continue;
        }
        let Some(v) = args.next() else { return usage() };
        let prob = |v: &str| v.parse::<f64>().ok().filter(|p| (0.0..=1.0).contains(p));
        let ok = match flag.as_str() {
            "--messages" => v.parse().map(|n| cfg.messages = n).is_ok(),
            "--drop" => prob(&v).map(|p| net.drop = p).is_some(),
            "--dup" => prob(&v).map(|p| net.dup = p).is_some(),
            "--reorder" => prob(&v).map(|p| net.reorder = p).is_some(),
            "--corrupt" => prob(&v).map(|p| net.corrupt = p).is_some(),
            "--seed" => v.parse().map(|s| cfg.seed = s).is_ok(),
            "--retry-cnt" => v.parse().ok().filter(|r| *r <= 7).map(|r| cfg.retry_cnt = r).is_some(),
            "--depth" => v.parse().map(|d| cfg.depth = d).is_ok(),
            "--max-size" => v.parse().map(|d| cfg.max_size = d).is_ok(),
            "--latency-us" => v.parse().map(|d| net.latency = Duration::from_micros(d)).is_ok(),
            "--psn" => v.parse::<u32>().map(|p| cfg.psn = [p & 0xff_ffff, p.wrapping_add(0x100) & 0xff_ffff]).is_ok(),
            "--mtu" => v.parse().ok().and_then(Mtu::from_bytes).map(|m| cfg.mtu = m).is_some(),
            "--transport" => match v.as_str() {
                "rc" => Some(QpType::Rc),
                "uc" => Some(QpType::Uc),
                "ud" => Some(QpType::Ud),
                _ => None,
            }
            .map(|t| cfg.transport = t)
            .is_some(),
            _ => false,
        };
        if !ok {
            eprintln!("sim: bad argument {flag} {v}");
            return usage();
        }
    }
    let started = std::time::Instant::now();
    let report = run(&cfg, net);
    println!("{} ({:.1} s wall)", report.summary(), started.elapsed().as_secs_f64());
    for e in &report.errors {
        eprintln!("error: {e}");
    }
    // Losses are only a failure where the transport promises reliability,
    // or where the network lost nothing.
    let lossless = net.drop == 0.0 && net.corrupt == 0.0;
    if !report.ok() || (report.lost > 0 && (cfg.transport == QpType::Rc || lossless)) {
        return ExitCode::from(1);
    }
    ExitCode::SUCCESS
}
