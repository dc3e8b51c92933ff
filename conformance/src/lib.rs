//! Conformance suite for verbs devices.
//!
//! Not written yet (issue 6): it needs the device of issue 4 to run against.
