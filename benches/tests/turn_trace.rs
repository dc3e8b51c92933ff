//! `softrdma-perf --turn-trace` end to end, in a build with the
//! `turn-trace` feature (`cargo test -p benches --features turn-trace
//! --test turn_trace`; .ci/run runs it).
#![cfg(feature = "turn-trace")]

use std::process::Command;

fn traced(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_softrdma-perf")).args(args).output().expect("run softrdma-perf");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    stdout
}

/// The steps between two stages, with their medians.
fn step(out: &str, from: &str, to: &str) -> Option<f64> {
    out.lines().find_map(|l| {
        let (a, b) = l.split_once("->")?;
        (a.trim() == from && b.trim_end_matches(|c: char| c.is_ascii_digit() || c == ' ').trim() == to)
            .then(|| b.split_whitespace().last()?.parse().ok())?
    })
}

#[test]
fn an_rc_write_turn_on_the_memory_fabric_is_broken_into_its_steps() {
    let dir = softrdma::testbed::ScratchDir::new("turn-trace").unwrap();
    let json = dir.join("trace.json");
    let out = traced(&["write_lat", "-s", "2", "-n", "400", "--turn-trace", "--out_json", json.to_str().unwrap()]);
    assert!(out.contains("Turn trace, write_lat Rc 2 B:"), "{out}");
    // The server takes the WRITE (and the ACK of its own last WRITE),
    // then sees the data; the client sees its send complete, then the data.
    assert!(step(&out, "server rx-took", "server frame-in").is_some(), "{out}");
    assert!(step(&out, "client app-cqe", "client app-data").is_some(), "{out}");
    assert!(out.contains("Round trip"), "{out}");
    let facts = std::fs::read_to_string(&json).expect("json");
    for k in ["turn_trace_2_round_trip_ns", "turn_trace_2_link_writes_ns", "turn_trace_2_steps"] {
        assert!(facts.contains(k), "{k} missing: {facts}");
    }
    assert!(facts.contains("server frame-in -> server frame-done: "), "{facts}");
}

#[test]
fn a_send_turn_is_traced_too() {
    let out = traced(&["send_lat", "-c", "UD", "-s", "8", "-n", "300", "--turn-trace"]);
    assert!(out.contains("Turn trace, send_lat Ud 8 B:"), "{out}");
    assert!(step(&out, "client turn", "client post").is_some(), "{out}");
}
