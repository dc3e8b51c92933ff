//! What the suite needs from the thing under test: at least two verbs
//! contexts that can reach each other, and — where the target can — control
//! over the network between them (fault injection).

use std::sync::Arc;

use verbs_api::Context;

/// Per-frame fault probabilities (0.0..=1.0) on the network between devices.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Faults {
    pub drop: f64,
    pub dup: f64,
    pub reorder: f64,
    pub corrupt: f64,
}

impl Faults {
    pub fn is_clean(&self) -> bool {
        self.drop == 0.0 && self.dup == 0.0 && self.reorder == 0.0 && self.corrupt == 0.0
    }
}

impl std::fmt::Display for Faults {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "drop {} dup {} reorder {} corrupt {}", self.drop, self.dup, self.reorder, self.corrupt)
    }
}

/// A set of devices the suite runs against.
pub trait Target: Send + Sync {
    /// For reports: "softrdma (memory fabric)", "mlx5 pair", …
    fn name(&self) -> String;
    /// At least two contexts; the first two are the two ends of every case.
    fn contexts(&self) -> Vec<Arc<dyn Context>>;
    /// The GID index connections use (a RoCEv2 GID of both devices).
    fn gid_index(&self) -> u8 {
        1
    }
    /// Changes the faults of the network between the devices; `false` if the
    /// target cannot (a real wire). Cases that need it then SKIP.
    fn set_faults(&self, _faults: Faults) -> bool {
        false
    }
    /// The faults the run was configured with (what cases restore after
    /// changing them, and what "clean network" cases look at).
    fn faults(&self) -> Faults {
        Faults::default()
    }
}
