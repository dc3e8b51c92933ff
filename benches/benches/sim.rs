//! The transport's per-message and per-packet cost on the deterministic
//! simulator (lossless, zero latency, no threads or links): RC RDMA WRITEs
//! from node 0 to node 1, 128 outstanding, everything completed.
//!
//! `cargo bench -p benches --bench sim`

use std::time::{Duration, Instant};

use benches::baseline::SimWriter;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use verbs_api::Mtu;

fn writes(c: &mut Criterion) {
    let mut g = c.benchmark_group("sim_rc_write");
    for (size, mtu) in [(4096usize, Mtu::M4096), (4096, Mtu::M1024), (65536, Mtu::M4096), (64, Mtu::M1024)] {
        let mut w = SimWriter::new(size, mtu, 128).expect("sim");
        w.run(256).expect("warm-up");
        // Frames per message (requests plus ACKs), to read ns/packet off ns/message.
        let before = w.sim.net.stats.sent;
        w.run(1000).expect("run");
        let per_msg = (w.sim.net.stats.sent - before) as f64 / 1000.0;
        assert!(w.verify());
        g.throughput(Throughput::Elements(1));
        let name = format!("{size}B_mtu{}  ({per_msg:.2} frames/msg)", mtu.bytes());
        g.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let t = Instant::now();
                w.run(iters).expect("run");
                t.elapsed()
            })
        });
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_secs(1));
    targets = writes
}
criterion_main!(benches);
