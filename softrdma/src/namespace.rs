//! A namespace as softrdma's isolation model sees it: a tenant boundary
//! owning devices, with its own resource limits and usage, its job key, its
//! privilege (controlled Q_Keys), and its audit stream. Devices of one
//! network namespace share one `Namespace`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use verbs_api::VerbsError;

use crate::audit::Audit;
use crate::qos::{RateLimit, Shaper};

/// One clock for every shaper of the process (devices measure from their own
/// start; the shaper needs a shared one since devices share a namespace).
static EPOCH: std::sync::LazyLock<std::time::Instant> = std::sync::LazyLock::new(std::time::Instant::now);

/// Seconds on the shapers' clock.
pub fn shaper_now() -> std::time::Duration {
    std::time::Instant::now().duration_since(*EPOCH)
}

/// How a device's namespace boundary is drawn (docs/isolation.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BoundaryMode {
    /// RoCEv2 default: the device belongs to its netdev's namespace; its GIDs
    /// are that namespace's addresses.
    #[default]
    Netdev,
    /// IB semantics: the namespace is granted an explicit set of GIDs and
    /// P_Keys, independent of any netdev.
    Partition,
}

/// Countable resources (finer than the rdma cgroup's hca_handle/hca_object).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resource {
    Pd,
    Mr,
    MrBytes,
    Cq,
    Qp,
    Srq,
    Ah,
}

impl Resource {
    pub const ALL: [Resource; 7] =
        [Resource::Pd, Resource::Mr, Resource::MrBytes, Resource::Cq, Resource::Qp, Resource::Srq, Resource::Ah];

    pub fn name(self) -> &'static str {
        match self {
            Resource::Pd => "pd",
            Resource::Mr => "mr",
            Resource::MrBytes => "mr_bytes",
            Resource::Cq => "cq",
            Resource::Qp => "qp",
            Resource::Srq => "srq",
            Resource::Ah => "ah",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// Limits (None: unlimited) and usage, indexed like `Resource::ALL`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Table(pub [Option<u64>; 7]);

#[derive(Debug, Default)]
struct State {
    limits: [Option<u64>; 7],
    usage: [u64; 7],
    jkey: Option<u16>,
}

pub struct Namespace {
    pub name: String,
    /// Egress shaping shared by the namespace's devices (None: unlimited).
    shaper: Mutex<Option<Arc<Mutex<Shaper>>>>,
    /// Whether `shaper` holds one: every flush asks, and most namespaces
    /// have none, so the answer is a load, not a lock.
    shaped: AtomicBool,
    /// The host's own (initial) network namespace: the only place RoCEv1 may run.
    pub initial: bool,
    /// May use controlled Q_Keys (high bit set).
    pub privileged: bool,
    pub audit: Audit,
    state: Mutex<State>,
}

impl std::fmt::Debug for Namespace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Namespace").field("name", &self.name).field("initial", &self.initial).finish()
    }
}

impl Namespace {
    pub fn new(name: &str, initial: bool, privileged: bool) -> Arc<Namespace> {
        Arc::new(Namespace {
            name: name.into(),
            shaper: Mutex::new(None),
            shaped: AtomicBool::new(false),
            initial,
            privileged,
            audit: Audit::default(),
            state: Mutex::default(),
        })
    }

    /// The host namespace: initial and privileged.
    pub fn host() -> Arc<Namespace> {
        Self::new("init", true, true)
    }

    pub fn set_limit(&self, r: Resource, limit: Option<u64>) {
        if let Ok(mut s) = self.state.lock() {
            s.limits[r.index()] = limit;
        }
    }

    pub fn limit(&self, r: Resource) -> Option<u64> {
        self.state.lock().ok().and_then(|s| s.limits[r.index()])
    }

    pub fn usage(&self, r: Resource) -> u64 {
        self.state.lock().map(|s| s.usage[r.index()]).unwrap_or(0)
    }

    /// Takes `amount` of `r`, or refuses without taking anything.
    pub fn charge(&self, r: Resource, amount: u64) -> Result<(), VerbsError> {
        let mut s = self.state.lock().map_err(|_| VerbsError::Io("namespace state poisoned".into()))?;
        let used = s.usage[r.index()];
        if let Some(max) = s.limits[r.index()] {
            if used.saturating_add(amount) > max {
                return Err(VerbsError::LimitExceeded(format!(
                    "namespace {}: {} limit {} reached ({} in use, {} asked)",
                    self.name,
                    r.name(),
                    max,
                    used,
                    amount
                )));
            }
        }
        s.usage[r.index()] = used + amount;
        Ok(())
    }

    pub fn release(&self, r: Resource, amount: u64) {
        if let Ok(mut s) = self.state.lock() {
            s.usage[r.index()] = s.usage[r.index()].saturating_sub(amount);
        }
    }

    /// Sets the namespace's (job's) egress rate limit; all-None removes it.
    pub fn set_rate_limit(&self, limit: RateLimit) {
        let start = shaper_now();
        let s = (limit != RateLimit::default()).then(|| Arc::new(Mutex::new(Shaper::new(limit, start))));
        if let Ok(mut g) = self.shaper.lock() {
            self.shaped.store(s.is_some(), Ordering::Release);
            *g = s;
        }
    }

    pub fn rate_limit(&self) -> RateLimit {
        self.shaper().and_then(|s| s.lock().ok().map(|s| s.limit)).unwrap_or_default()
    }

    pub(crate) fn shaper(&self) -> Option<Arc<Mutex<Shaper>>> {
        if !self.shaped.load(Ordering::Acquire) {
            return None;
        }
        self.shaper.lock().ok().and_then(|g| g.clone())
    }

    pub fn jkey(&self) -> Option<u16> {
        self.state.lock().ok().and_then(|s| s.jkey)
    }

    /// Binds the namespace to a job: QPs created from now on carry the JKey.
    pub fn set_jkey(&self, jkey: Option<u16>) {
        if let Ok(mut s) = self.state.lock() {
            s.jkey = jkey;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_refuse_without_charging() {
        let ns = Namespace::new("t", false, false);
        ns.set_limit(Resource::Qp, Some(2));
        ns.charge(Resource::Qp, 1).unwrap();
        ns.charge(Resource::Qp, 1).unwrap();
        let e = ns.charge(Resource::Qp, 1).unwrap_err();
        assert!(matches!(e, VerbsError::LimitExceeded(ref m) if m.contains("qp limit 2")), "{e}");
        assert_eq!(ns.usage(Resource::Qp), 2);
        ns.release(Resource::Qp, 1);
        ns.charge(Resource::Qp, 1).unwrap();
        ns.charge(Resource::MrBytes, 1 << 40).unwrap();
    }
}
