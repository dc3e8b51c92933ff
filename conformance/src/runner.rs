//! Runs cases one after another against a target: each in its own thread
//! (a panic is a FAIL, a hang is a FAIL after a deadline), with a fresh
//! [`Env`] so no case sees another's objects.

use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::cases::Case;
use crate::kit::{Env, Stop};
use crate::report::{CaseReport, Outcome};
use crate::target::Target;

/// How long one case may take before it is declared hung.
pub const CASE_DEADLINE: Duration = Duration::from_secs(180);

/// The cases whose name contains `filter` (all if `None`).
pub fn select(cases: Vec<Case>, filter: Option<&str>) -> Vec<Case> {
    cases.into_iter().filter(|c| filter.is_none_or(|f| c.name.contains(f))).collect()
}

/// Runs one case.
pub fn run_case(target: &Arc<dyn Target>, case: &Case) -> CaseReport {
    let start = Instant::now();
    let (tx, rx) = mpsc::channel();
    let t = target.clone();
    let f = case.run;
    let spawned = std::thread::Builder::new().name(format!("case {}", case.name)).spawn(move || {
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| match Env::new(t) {
            Ok(env) => f(&env),
            Err(e) => Err(Stop::Fail(format!("cannot set up: {e}"))),
        }));
        let _ = tx.send(r);
    });
    let (outcome, message) = match spawned {
        Err(e) => (Outcome::Fail, format!("cannot start the case thread: {e}")),
        Ok(_) => match rx.recv_timeout(CASE_DEADLINE) {
            Ok(Ok(Ok(()))) => (Outcome::Pass, String::new()),
            Ok(Ok(Err(Stop::Fail(m)))) => (Outcome::Fail, m),
            Ok(Ok(Err(Stop::Skip(m)))) => (Outcome::Skip, m),
            Ok(Err(p)) => {
                let m = p
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default();
                (Outcome::Fail, format!("panicked: {m}"))
            }
            Err(_) => (Outcome::Fail, format!("did not finish within {CASE_DEADLINE:?}")),
        },
    };
    CaseReport {
        name: case.name.to_string(),
        citation: case.citation.to_string(),
        outcome,
        message,
        duration: start.elapsed(),
    }
}

/// Runs `cases` in order, calling `each` with every report as it is made.
pub fn run(target: &Arc<dyn Target>, cases: &[Case], mut each: impl FnMut(&CaseReport)) -> Vec<CaseReport> {
    let mut out = Vec::with_capacity(cases.len());
    for c in cases {
        let r = run_case(target, c);
        each(&r);
        out.push(r);
    }
    out
}
