//! Scale: many QPs on one device (`scale_qps`), many namespaces each with a
//! device and traffic (`scale_ns`).

use std::sync::Arc;
use std::time::Instant;

use verbs_api::{QpCap, QpInitAttr, QpType};

use crate::fabric::{Devices, FabricKind};
use crate::perf::{run_bw, run_lat, PerfConfig, Test};
use crate::report::Report;
use crate::rss_bytes;

fn mib(b: u64) -> String {
    format!("{:.1}", b as f64 / (1 << 20) as f64)
}

/// Creates `n` RC QPs on one device and reports the memory and time each
/// takes, and what they cost a busy QP pair on the same device (a 4 KiB
/// write_bw before and after).
pub fn scale_qps(n: usize, probe_iters: u64) -> Result<Report, String> {
    let mut r = Report::new("scale_qps");
    r.param("qps", n);
    let devs = Devices::new(FabricKind::Memory, 2, 1500).map_err(|e| format!("devices: {e}"))?;
    let (ca, cb) = (devs.context(0), devs.context(1));
    let probe = PerfConfig { iters: probe_iters, ..PerfConfig::default() };
    let lat_probe = PerfConfig { iters: 200, ..PerfConfig::default() };
    let before = run_bw(Test::WriteBw, &ca, &cb, &probe, 4096)?;
    let lat_before = run_lat(Test::ReadLat, &ca, &cb, &lat_probe, 2)?;

    let pd = ca.alloc_pd().map_err(|e| e.to_string())?;
    let cq = ca.create_cq(1024).map_err(|e| e.to_string())?;
    let init = QpInitAttr {
        qp_type: QpType::Rc,
        send_cq: cq.clone(),
        recv_cq: cq.clone(),
        srq: None,
        cap: QpCap::default(),
        sq_sig_all: false,
    };
    let mut qps = Vec::with_capacity(n);
    let rss0 = rss_bytes().unwrap_or(0);
    let t = Instant::now();
    for i in 0..n {
        qps.push(pd.create_qp(&init).map_err(|e| format!("create_qp #{i}: {e}"))?);
    }
    let create = t.elapsed();
    let rss1 = rss_bytes().unwrap_or(0);
    // A busy QP pair among many idle QPs: one RDMA READ at a time, then a
    // 4 KiB write_bw (which failed before the endpoint visited only busy QPs:
    // docs/benchmarks-history.md, "Scale: earlier runs").
    let lat_after = run_lat(Test::ReadLat, &ca, &cb, &lat_probe, 2);
    let after = run_bw(Test::WriteBw, &ca, &cb, &probe, 4096);
    let t = Instant::now();
    for q in &qps {
        q.destroy().map_err(|e| format!("destroy: {e}"))?;
    }
    qps.clear();
    let destroy = t.elapsed();
    let per = (rss1.saturating_sub(rss0)) as f64 / n.max(1) as f64;
    r.fact("rss_before_MiB", mib(rss0));
    r.fact("rss_after_MiB", mib(rss1));
    r.fact("bytes_per_qp", format!("{per:.0}"));
    r.fact("size_of_transport_Qp", std::mem::size_of::<transport::qp::Qp>());
    r.fact("create_total_s", format!("{:.3}", create.as_secs_f64()));
    r.fact("create_per_qp_us", format!("{:.2}", create.as_secs_f64() * 1e6 / n.max(1) as f64));
    r.fact("destroy_total_s", format!("{:.3}", destroy.as_secs_f64()));
    r.fact("write_bw_4k_MBps_before", format!("{:.1}", before.avg_bps / (1 << 20) as f64));
    r.fact("write_bw_4k_Mpps_before", format!("{:.4}", before.msg_rate / 1e6));
    match &after {
        Ok(a) => {
            r.fact("write_bw_4k_MBps_with_idle_qps", format!("{:.1}", a.avg_bps / (1 << 20) as f64));
            r.fact("write_bw_4k_Mpps_with_idle_qps", format!("{:.4}", a.msg_rate / 1e6));
        }
        Err(e) => r.fact("write_bw_4k_with_idle_qps", format!("FAILED: {e}")),
    }
    r.fact("read_lat_2B_typical_us_before", format!("{:.2}", lat_before.typical));
    match &lat_after {
        Ok(l) => r.fact("read_lat_2B_typical_us_with_idle_qps", format!("{:.2}", l.typical)),
        Err(e) => r.fact("read_lat_2B_with_idle_qps", format!("FAILED: {e}")),
    }
    Ok(r)
}

/// `n` devices, each in its own namespace (TAP) or on one fabric (memory);
/// device 2k and 2k+1 run a short RC write_bw (`iters` × `size`, verified).
pub fn scale_ns(kind: FabricKind, n: usize, iters: u64, size: usize, timeout: u8) -> Result<Report, String> {
    let mut r = Report::new("scale_ns");
    r.param("devices", n);
    r.param("fabric", kind.name());
    r.param("qp_timeout", timeout);
    let rss0 = rss_bytes().unwrap_or(0);
    let t = Instant::now();
    let devs = Devices::new(kind, n, 1500).map_err(|e| format!("devices: {e}"))?;
    let setup = t.elapsed();
    let names: Vec<String> =
        devs.net.as_ref().map(|net| net.namespaces().map(String::from).collect()).unwrap_or_default();
    let ns_setup = devs.net.as_ref().map(|n| n.setup).unwrap_or_default();
    let rss1 = rss_bytes().unwrap_or(0);
    let threads = std::fs::read_dir("/proc/self/task").map(|d| d.count()).unwrap_or(0);
    let cfg = PerfConfig { iters, tx_depth: 32, timeout, ..PerfConfig::default() };
    let t = Instant::now();
    // Pairs run concurrently, a few at a time.
    let pairs: Vec<usize> = (0..n / 2).collect();
    let ctxs: Vec<_> = (0..n).map(|i| devs.context(i)).collect();
    let ctxs = Arc::new(ctxs);
    let workers = 4.min(pairs.len().max(1));
    let results: Vec<Result<f64, String>> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..workers)
            .map(|w| {
                let ctxs = ctxs.clone();
                let cfg = cfg.clone();
                let mine: Vec<usize> = pairs.iter().copied().filter(|p| p % workers == w).collect();
                s.spawn(move || {
                    mine.into_iter()
                        .map(|p| {
                            run_bw(Test::WriteBw, &ctxs[2 * p], &ctxs[2 * p + 1], &cfg, size)
                                .map(|row| row.avg_bps)
                                .map_err(|e| format!("pair {p}: {e}"))
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        hs.into_iter().flat_map(|h| h.join().unwrap_or_default()).collect()
    });
    let traffic = t.elapsed();
    let failed: Vec<&String> = results.iter().filter_map(|x| x.as_ref().err()).collect();
    drop(ctxs);
    let (stop, teardown) = devs.teardown();
    // Every namespace made must be gone.
    let left: Vec<&String> =
        names.iter().filter(|n| std::path::Path::new("/run/netns").join(n.as_str()).exists()).collect();
    r.fact("setup_total_s", format!("{:.2}", setup.as_secs_f64()));
    r.fact("netns_setup_s", format!("{:.2}", ns_setup.as_secs_f64()));
    r.fact("setup_per_device_ms", format!("{:.1}", setup.as_secs_f64() * 1e3 / n.max(1) as f64));
    r.fact("rss_per_device_KiB", format!("{:.0}", rss1.saturating_sub(rss0) as f64 / 1024.0 / n.max(1) as f64));
    r.fact("threads", threads);
    r.fact("pairs", pairs.len());
    r.fact("pairs_ok", results.len() - failed.len());
    r.fact("traffic_s", format!("{:.2}", traffic.as_secs_f64()));
    r.fact("bytes_moved", (pairs.len() as u64 * iters * size as u64).to_string());
    r.fact("device_stop_s", format!("{:.2}", stop.as_secs_f64()));
    r.fact("netns_teardown_s", format!("{:.2}", teardown.as_secs_f64()));
    r.fact("namespaces_left", left.len());
    if let Some(e) = failed.first() {
        r.fact("first_error", e);
    }
    r.fact("pairs_failed", failed.len());
    Ok(r)
}
