//! The namespace-aware device view: a sysfs-like tree (device, ports, GIDs,
//! P_Keys, counters, resource usage) built for one namespace from the
//! devices that belong to it — and nothing else, so no name, GID or counter
//! of another namespace can leak into it. The CLI renders it for the
//! caller's namespace.

use std::collections::BTreeMap;

use crate::device::{Device, SoftProvider};
use crate::namespace::Resource;

/// `path → value` for every device of namespace `ns`, e.g.
/// `srd0/ports/1/gids/1 = ::ffff:10.99.0.1`.
pub fn tree(ns: &str) -> BTreeMap<String, String> {
    let mut t = BTreeMap::new();
    for d in SoftProvider.devices().iter().filter(|d| d.namespace().name == ns) {
        device_tree(d, &mut t);
    }
    t
}

fn device_tree(d: &Device, t: &mut BTreeMap<String, String>) {
    let n = d.name();
    let ns = d.namespace();
    t.insert(format!("{n}/namespace"), ns.name.clone());
    t.insert(format!("{n}/mac"), d.mac().iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":"));
    for g in d.gids() {
        t.insert(format!("{n}/ports/1/gids/{}", g.index), g.gid.to_string());
    }
    for (i, p) in d.pkeys().iter().enumerate() {
        t.insert(format!("{n}/ports/1/pkeys/{i}"), format!("{p:#06x}"));
    }
    let (dc, ec, qc) = d.counters();
    let counters = [
        ("rx_frames", dc.rx_frames),
        ("tx_frames", dc.tx_frames),
        ("tx_errors", dc.tx_errors),
        ("tx_oversize", dc.tx_oversize),
        ("rx_rocev1_dropped", dc.rx_rocev1_dropped),
        ("rx_polled", dc.rx_polled),
        ("rx_rescued", dc.rx_rescued),
        ("busy_poll_suspensions", dc.busy_poll_suspensions),
        ("tx_acks_deferred", dc.tx_acks_deferred),
        ("tx_acks_joined", dc.tx_acks_joined),
        ("acks_built_ahead", qc.acks_built_ahead),
        ("requests_built_ahead", qc.requests_built_ahead),
        ("tx_payloads_lent", dc.tx_payloads_lent),
        ("rx_icrc_checked_by_link", dc.rx_icrc_checked_by_link),
        ("rx_icrc_err", ec.rx_icrc_err),
        ("rx_bad_pkey", ec.rx_bad_pkey),
        ("rx_bad_qkey", ec.rx_bad_qkey),
        ("rx_bad_jkey", ec.rx_bad_jkey),
        ("rx_foreign_dgid", ec.rx_foreign_dgid),
        ("rx_spoofed_sgid", ec.rx_spoofed_sgid),
        ("rx_unknown_qp", ec.rx_unknown_qp),
        ("sent_pkts", qc.sent_pkts),
        ("rcvd_pkts", qc.rcvd_pkts),
        ("duplicate_request", qc.duplicate_request),
        ("out_of_seq_request", qc.out_of_seq_request),
        ("rcvd_rnr_err", qc.rcvd_rnr_err),
        ("send_rnr_err", qc.send_rnr_err),
        ("retry_exceeded_err", qc.retry_exceeded_err),
        ("remote_access_violations", qc.remote_access_violations),
    ];
    for (k, v) in counters {
        t.insert(format!("{n}/ports/1/hw_counters/{k}"), v.to_string());
    }
    for r in Resource::ALL {
        let limit = ns.limit(r).map_or("unlimited".to_string(), |l| l.to_string());
        t.insert(format!("{n}/resources/{}", r.name()), format!("{} / {limit}", ns.usage(r)));
    }
}
