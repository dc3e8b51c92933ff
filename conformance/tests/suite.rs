//! The whole suite against softrdma: on the in-memory fabric (clean, and
//! with every kind of fault injected) and on TAPs in network namespaces
//! (root; with CI=true a skip is a failure).

use std::sync::Arc;

use conformance::report::{summary, CaseReport, Outcome};
use conformance::soft::{SoftOptions, SoftTarget};
use conformance::{runner, Faults, Target};

fn run(target: SoftTarget) -> Vec<CaseReport> {
    let target: Arc<dyn Target> = Arc::new(target);
    let name = target.name();
    let reports = runner::run(&target, &conformance::all(), |r| println!("{}", r.line()));
    println!("{name}: {}", summary(&reports));
    reports
}

fn failures(reports: &[CaseReport]) -> Vec<String> {
    reports.iter().filter(|r| r.outcome == Outcome::Fail).map(|r| r.line()).collect()
}

#[test]
fn suite_passes_on_the_memory_fabric() {
    let reports = run(SoftTarget::memory(&SoftOptions::default()).expect("memory testbed"));
    assert!(failures(&reports).is_empty(), "{:#?}", failures(&reports));
    let skipped: Vec<_> = reports.iter().filter(|r| r.outcome == Outcome::Skip).map(|r| r.line()).collect();
    assert!(skipped.is_empty(), "nothing may skip on a clean memory fabric: {skipped:#?}");
    assert!(reports.len() >= 60);
}

#[test]
fn suite_passes_without_busy_polling() {
    // Every frame through the devices' receive threads, none through the
    // polling application thread: both halves of the engine pass alone.
    let reports = run(SoftTarget::memory(&SoftOptions { no_busy_poll: true, ..Default::default() }).expect("testbed"));
    assert!(failures(&reports).is_empty(), "{:#?}", failures(&reports));
    assert!(reports.iter().all(|r| r.outcome == Outcome::Pass), "nothing may skip on a clean memory fabric");
}

#[test]
fn suite_passes_under_faults() {
    let faults = Faults { drop: 0.02, dup: 0.02, reorder: 0.02, corrupt: 0.02 };
    let reports = run(SoftTarget::memory(&SoftOptions { faults, ..Default::default() }).expect("memory testbed"));
    assert!(failures(&reports).is_empty(), "{:#?}", failures(&reports));
    // Only the cases that check unreliable-transport deliveries may skip.
    for r in reports.iter().filter(|r| r.outcome == Outcome::Skip) {
        assert!(r.name.starts_with("ud.") || r.name.starts_with("uc."), "{} skipped under faults", r.name);
    }
}

#[test]
fn suite_passes_on_taps_in_namespaces() {
    softrdma::require_root!();
    let reports = run(SoftTarget::tap(&SoftOptions::default()).expect("TAP testbed"));
    assert!(failures(&reports).is_empty(), "{:#?}", failures(&reports));
    // Fault injection needs the memory fabric; nothing else may skip.
    for r in reports.iter().filter(|r| r.outcome == Outcome::Skip) {
        assert!(r.message.contains("cannot inject faults"), "{} skipped: {}", r.name, r.message);
    }
}
