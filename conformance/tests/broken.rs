//! Proof that the cases can fail: the whole suite against devices with a
//! check deliberately switched off (softrdma's test-only `BrokenChecks`)
//! fails exactly the cases that check it, and passes everything else.

use std::sync::Arc;

use conformance::report::{CaseReport, Outcome};
use conformance::soft::{SoftOptions, SoftTarget};
use conformance::{runner, Target};
use softrdma::device::BrokenChecks;

fn failing(broken: BrokenChecks) -> (Vec<String>, Vec<CaseReport>) {
    let target: Arc<dyn Target> =
        Arc::new(SoftTarget::memory(&SoftOptions { broken, ..Default::default() }).expect("memory testbed"));
    let reports = runner::run(&target, &conformance::all(), |r| println!("{}", r.line()));
    let mut failed: Vec<String> =
        reports.iter().filter(|r| r.outcome == Outcome::Fail).map(|r| r.name.clone()).collect();
    failed.sort();
    (failed, reports)
}

#[test]
fn skipping_the_rkey_bounds_check_fails_the_bounds_case_only() {
    let (failed, reports) = failing(BrokenChecks { skip_rkey_bounds: true, ..Default::default() });
    assert_eq!(failed, ["access.out_of_bounds"], "failed: {failed:?}");
    let r = reports.iter().find(|r| r.name == "access.out_of_bounds").unwrap();
    assert!(r.message.contains("expected RemAccessErr"), "{}", r.line());
    assert!(reports.iter().all(|r| r.outcome != Outcome::Skip), "nothing skips on a clean fabric");
}

#[test]
fn skipping_the_pkey_check_fails_the_partition_cases_only() {
    let (failed, _) = failing(BrokenChecks { skip_pkey_check: true, ..Default::default() });
    assert_eq!(failed, ["pkey.limited_members", "pkey.mismatch_rc", "pkey.mismatch_ud"], "failed: {failed:?}");
}
