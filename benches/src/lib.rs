//! perftest-compatible tools and micro-benchmarks (issue 7). Nothing here yet.
