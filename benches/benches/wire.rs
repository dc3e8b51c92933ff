//! Placeholder; the wire micro-benchmarks follow in the next commit.
fn main() {}
