//! The turn trace's stamps (feature `turn-trace`; its own process, so no
//! other test's device marks in between).
#![cfg(feature = "turn-trace")]

use softrdma::turn_trace::{mark, take, Stage};

#[test]
fn marks_from_two_threads_come_back_in_time_order() {
    let _ = take();
    mark(Stage::Post);
    std::thread::spawn(|| mark(Stage::RxTook)).join().unwrap();
    mark(Stage::Posted);
    let t = take();
    let stages: Vec<Stage> = t.events.iter().map(|e| e.stage).collect();
    assert_eq!(stages, [Stage::Post, Stage::RxTook, Stage::Posted]);
    assert_ne!(t.events[0].thread, t.events[1].thread);
    assert_eq!(t.events[0].thread, t.events[2].thread);
    assert!(t.events[0].ticks < t.events[2].ticks);
    assert!(t.ticks_per_ns > 0.0);
    assert!(take().events.is_empty(), "take clears");
}
