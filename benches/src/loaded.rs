//! `post_loaded`: what one thread's verbs calls cost while another thread
//! of the same process streams on the same device. Thread S posts
//! `STREAM_BYTES` RDMA WRITEs on one QP back to back (a window of
//! `STREAM_DEPTH`); the measuring thread posts one -s byte WRITE at a time
//! on a second QP to the same peer, timing the `post_send` call and the
//! time until its completion, with a pause between posts so it samples the
//! stream at random points. perftest has no such test; RDMA middleware
//! (an MPI progress thread beside the application, NCCL's channels) lives
//! in exactly this situation.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use verbs_api::{Context, SendFlags, SendWr};

use crate::perf::{check, connect, send_wr, PerfConfig, Res, Side, Test, STALL};
use crate::report::LatRow;

/// The streaming thread's message size and how many it keeps posted.
pub const STREAM_BYTES: usize = 1 << 20;
pub const STREAM_DEPTH: usize = 4;
/// Pause between the measuring thread's posts.
const GAP: Duration = Duration::from_micros(200);

/// `write_bw`'s WRITE from `a`'s send area to `b`'s receive area, signaled.
fn write_wr(a: &Side, b: &Side, size: usize, id: u64) -> SendWr {
    let mut wr = send_wr(Test::WriteBw, a, b.area(0, true), b.mr.rkey(), 0, size, None);
    wr.wr_id = id;
    wr.flags = SendFlags::SIGNALED;
    wr
}

/// Streams on `s` until `stop`; returns how many messages completed.
fn stream(s: &(Side, Side), stop: &AtomicBool) -> Res<u64> {
    let (a, b) = s;
    let (mut posted, mut done) = (0u64, 0u64);
    while !stop.load(Ordering::Acquire) {
        while posted - done < STREAM_DEPTH as u64 {
            a.qps[0].post_send(&[write_wr(a, b, STREAM_BYTES, posted)], None).map_err(|(_, e)| e.to_string())?;
            posted += 1;
        }
        let t = Instant::now();
        loop {
            let wcs = a.cq.wait(STREAM_DEPTH, Duration::from_millis(50));
            for wc in &wcs {
                check(wc, "stream")?;
            }
            done += wcs.len() as u64;
            if !wcs.is_empty() || stop.load(Ordering::Acquire) {
                break;
            }
            if t.elapsed() > STALL {
                return Err(format!("stream: no completion within {STALL:?}"));
            }
        }
    }
    Ok(done)
}

/// The `post_send` call times and post-to-completion times of `iters`
/// -s byte WRITEs, and how many stream messages completed meanwhile.
pub fn post_loaded(
    ca: &Arc<dyn Context>,
    cb: &Arc<dyn Context>,
    cfg: &PerfConfig,
    size: usize,
) -> Res<(LatRow, LatRow, u64)> {
    let one = PerfConfig { qps: 1, tx_depth: 64, ..cfg.clone() };
    let streamed = connect(ca, cb, &one, STREAM_BYTES)?;
    let (a, b) = connect(ca, cb, &one, size)?;
    let stop = AtomicBool::new(false);
    let mut posts = Vec::with_capacity(cfg.iters as usize);
    let mut rounds = Vec::with_capacity(cfg.iters as usize);
    let (measured, streamed_msgs) = std::thread::scope(|sc| {
        let bg = sc.spawn(|| stream(&streamed, &stop));
        // Let the stream fill its window first.
        std::thread::sleep(Duration::from_millis(20));
        let measured = (|| -> Res<()> {
            for i in 0..cfg.iters {
                let t = Instant::now();
                a.qps[0].post_send(&[write_wr(&a, &b, size, i)], None).map_err(|(_, e)| e.to_string())?;
                posts.push(t.elapsed());
                loop {
                    if let Some(wc) = a.cq.poll(1).pop() {
                        check(&wc, "probe")?;
                        break;
                    }
                    if t.elapsed() > STALL {
                        return Err(format!("probe: no completion within {STALL:?}"));
                    }
                    std::hint::spin_loop();
                }
                rounds.push(t.elapsed());
                std::thread::sleep(GAP);
            }
            Ok(())
        })();
        stop.store(true, Ordering::Release);
        (measured, bg.join().unwrap_or_else(|_| Err("stream thread panicked".into())))
    });
    measured?;
    let streamed_msgs = streamed_msgs?;
    Ok((
        LatRow::from_samples(size as u64, &mut posts, 1.0),
        LatRow::from_samples(size as u64, &mut rounds, 1.0),
        streamed_msgs,
    ))
}
