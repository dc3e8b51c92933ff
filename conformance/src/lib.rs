//! A conformance suite for verbs devices, written only against `verbs-api`:
//! named cases ([`cases::all`]), each citing the IBTA rule it checks, run
//! against a [`Target`] by [`runner::run`], reported as text, JSON or JUnit.
//!
//! The [`soft`] module (feature `softrdma`, on by default) provides the
//! softrdma targets — devices on the in-memory fabric or on TAPs in network
//! namespaces — used by the `softrdma-conformance` binary and the tests.
//! Nothing under [`cases`] knows which device it runs on.

pub mod cases;
pub mod kit;
pub mod report;
pub mod runner;
#[cfg(feature = "softrdma")]
pub mod soft;
pub mod target;

pub use cases::{all, Case};
pub use kit::{CaseResult, Env, Stop};
pub use report::{CaseReport, Outcome};
pub use target::{Faults, Target};
