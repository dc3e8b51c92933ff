//! Placeholder; the simulator micro-benchmarks follow in the next commit.
fn main() {}
