//! Security audit: every isolation violation becomes a structured event on
//! its namespace's stream — kept in memory (the newest 4096) and, when a
//! path is set, appended as JSON lines to a file — and counted by kind.

use std::collections::{BTreeMap, VecDeque};
use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::Path;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use verbs_api::Gid;

/// One audited event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEvent {
    /// Milliseconds since the Unix epoch.
    pub time_ms: u128,
    pub namespace: String,
    pub device: String,
    pub qpn: Option<u32>,
    pub peer: Option<Gid>,
    /// `pkey`, `qkey`, `jkey`, `gid_spoof`, `foreign_dgid`, `rkey`, `rocev1`,
    /// `controlled_qkey`, `limit`.
    pub kind: &'static str,
    pub detail: String,
}

/// A JSON string literal for `s`.
pub fn json_str(s: &str) -> String {
    let mut o = String::with_capacity(s.len() + 2);
    o.push('"');
    for c in s.chars() {
        match c {
            '"' => o.push_str("\\\""),
            '\\' => o.push_str("\\\\"),
            c if (c as u32) < 0x20 => o.push_str(&format!("\\u{:04x}", c as u32)),
            c => o.push(c),
        }
    }
    o.push('"');
    o
}

impl AuditEvent {
    pub fn new(
        namespace: &str,
        device: &str,
        kind: &'static str,
        qpn: Option<u32>,
        peer: Option<Gid>,
        detail: String,
    ) -> Self {
        let time_ms = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis()).unwrap_or(0);
        AuditEvent { time_ms, namespace: namespace.into(), device: device.into(), qpn, peer, kind, detail }
    }

    /// One JSON object (a line of the audit stream).
    pub fn to_json(&self) -> String {
        format!(
            "{{\"time_ms\":{},\"namespace\":{},\"device\":{},\"qpn\":{},\"peer_gid\":{},\"kind\":{},\"detail\":{}}}",
            self.time_ms,
            json_str(&self.namespace),
            json_str(&self.device),
            self.qpn.map_or("null".to_string(), |q| q.to_string()),
            self.peer.map_or("null".to_string(), |g| json_str(&g.to_string())),
            json_str(self.kind),
            json_str(&self.detail)
        )
    }
}

const KEEP: usize = 4096;

#[derive(Default)]
pub struct Audit {
    events: Mutex<VecDeque<AuditEvent>>,
    counts: Mutex<BTreeMap<&'static str, u64>>,
    sink: Mutex<Option<BufWriter<File>>>,
}

impl Audit {
    /// Appends every later event to `path` as a JSON line.
    pub fn set_sink(&self, path: &Path) -> std::io::Result<()> {
        let f = OpenOptions::new().create(true).append(true).open(path)?;
        if let Ok(mut s) = self.sink.lock() {
            *s = Some(BufWriter::new(f));
        }
        Ok(())
    }

    pub fn record(&self, ev: AuditEvent) {
        if let Ok(mut c) = self.counts.lock() {
            *c.entry(ev.kind).or_insert(0) += 1;
        }
        if let Ok(mut s) = self.sink.lock() {
            if let Some(w) = s.as_mut() {
                let _ = writeln!(w, "{}", ev.to_json());
                let _ = w.flush();
            }
        }
        if let Ok(mut e) = self.events.lock() {
            if e.len() == KEEP {
                e.pop_front();
            }
            e.push_back(ev);
        }
    }

    pub fn events(&self) -> Vec<AuditEvent> {
        self.events.lock().map(|e| e.iter().cloned().collect()).unwrap_or_default()
    }

    pub fn counts(&self) -> BTreeMap<&'static str, u64> {
        self.counts.lock().map(|c| c.clone()).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_lines_are_escaped_and_complete() {
        let e = AuditEvent {
            time_ms: 5,
            namespace: "tenant\"a".into(),
            device: "srd0".into(),
            qpn: Some(0x11),
            peer: Some(Gid::from_ipv4("10.0.0.2".parse().unwrap())),
            kind: "pkey",
            detail: "P_Key 0x8002 vs 0x8001".into(),
        };
        assert_eq!(
            e.to_json(),
            r#"{"time_ms":5,"namespace":"tenant\"a","device":"srd0","qpn":17,"peer_gid":"::ffff:10.0.0.2","kind":"pkey","detail":"P_Key 0x8002 vs 0x8001"}"#
        );
    }
}
