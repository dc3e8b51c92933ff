//! `softrdma-conformance`: runs the conformance suite against softrdma
//! devices it sets up itself — two devices on the in-memory fabric (default,
//! optionally with injected faults) or on TAPs in fresh network namespaces
//! joined by a bridge (`--fabric tap`, root), torn down at exit.
//!
//! Prints `PASS/FAIL/SKIP name (citation) [reason]` per case and
//! `N passed, N failed, N skipped`; exits 1 if any case failed, 2 on a
//! setup error.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use clap::{Parser, ValueEnum};
use conformance::report::{self, CaseReport};
use conformance::soft::{Fabric, SoftOptions, SoftTarget};
use conformance::{runner, Faults, Target};

#[derive(Debug, Clone, Copy, ValueEnum)]
enum FabricArg {
    Memory,
    Tap,
}

#[derive(Debug, Parser)]
#[command(name = "softrdma-conformance", about = "Runs the verbs conformance suite against softrdma devices")]
struct Args {
    /// Where the two devices live: the in-memory fabric, or TAPs in network namespaces (root).
    #[arg(long, value_enum, default_value = "memory")]
    fabric: FabricArg,
    /// Print the results as a JSON array on stdout (the per-case lines go to stderr).
    #[arg(long)]
    json: bool,
    /// Also write JUnit XML to FILE.
    #[arg(long, value_name = "FILE")]
    junit: Option<PathBuf>,
    /// List the cases (name and citation) and exit.
    #[arg(long)]
    list: bool,
    /// Run only the cases whose name contains SUBSTR.
    #[arg(long, value_name = "SUBSTR")]
    filter: Option<String>,
    /// Probability that the fabric drops a frame (memory fabric only).
    #[arg(long, default_value_t = 0.0, value_name = "P")]
    drop: f64,
    /// Probability that the fabric duplicates a frame.
    #[arg(long, default_value_t = 0.0, value_name = "P")]
    dup: f64,
    /// Probability that the fabric delivers a frame after the next one.
    #[arg(long, default_value_t = 0.0, value_name = "P")]
    reorder: f64,
    /// Probability that the fabric flips a bit in a frame.
    #[arg(long, default_value_t = 0.0, value_name = "P")]
    corrupt: f64,
    /// Write device i's frames to PREFIX-i.pcap.
    #[arg(long, value_name = "PREFIX")]
    pcap: Option<PathBuf>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let cases = runner::select(conformance::all(), args.filter.as_deref());
    if args.list {
        for c in &cases {
            println!("{} ({})", c.name, c.citation);
        }
        println!("{} cases", cases.len());
        return ExitCode::SUCCESS;
    }
    let faults = Faults { drop: args.drop, dup: args.dup, reorder: args.reorder, corrupt: args.corrupt };
    for p in [faults.drop, faults.dup, faults.reorder, faults.corrupt] {
        if !(0.0..=1.0).contains(&p) {
            eprintln!("softrdma-conformance: fault probabilities must be within 0..=1");
            return ExitCode::from(2);
        }
    }
    let fabric = match args.fabric {
        FabricArg::Memory => Fabric::Memory,
        FabricArg::Tap => Fabric::Tap,
    };
    let opts = SoftOptions { faults, pcap_prefix: args.pcap.clone(), ..Default::default() };
    let target = match SoftTarget::new(fabric, &opts) {
        Ok(t) => Arc::new(t),
        Err(e) => {
            eprintln!("softrdma-conformance: cannot set up the devices: {e}");
            return ExitCode::from(2);
        }
    };
    let mut header = format!("target: {}", target.name());
    if !faults.is_clean() {
        header.push_str(&format!(
            "; faults: {faults} (devices read retry_cnt 7 as unlimited, rxe's quirk, so RC cannot give up by bad luck)"
        ));
    }
    let target: Arc<dyn Target> = target;
    let mut lines: Box<dyn Write> = if args.json { Box::new(std::io::stderr()) } else { Box::new(std::io::stdout()) };
    let _ = writeln!(lines, "{header}");
    let start = Instant::now();
    let reports: Vec<CaseReport> = runner::run(&target, &cases, |r| {
        let _ = writeln!(lines, "{}", r.line());
        let _ = lines.flush();
    });
    let sum = report::summary(&reports);
    let _ = writeln!(lines, "{sum} ({:.1} s)", start.elapsed().as_secs_f64());
    if args.json {
        println!("{}", report::json(&reports));
    }
    if let Some(path) = &args.junit {
        let suite = format!("softrdma-conformance ({})", target.name());
        if let Err(e) = std::fs::write(path, report::junit(&suite, &reports)) {
            eprintln!("softrdma-conformance: cannot write {}: {e}", path.display());
            return ExitCode::from(2);
        }
    }
    drop(target); // tears down the devices (and namespaces)
    if sum.failed > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
