//! softrdma as a conformance target: two devices on the in-memory fabric
//! (fault injection supported) or behind TAPs in network namespaces joined by
//! a bridge (root; built and torn down by `softrdma::testbed`).

use std::sync::{Arc, Mutex};

use softrdma::backend::memory::Faults as FabricFaults;
use softrdma::device::BrokenChecks;
use softrdma::testbed::{Testbed, TestbedOptions};
use verbs_api::Context;

use crate::target::{Faults, Target};

/// The P_Key table every device gets: the default partition, two full
/// members of different partitions and a limited member (the `pkey.*` cases).
pub const PKEYS: [u16; 4] = [0xffff, 0x8001, 0x8002, 0x0001];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fabric {
    Memory,
    Tap,
}

/// How to build a softrdma target.
#[derive(Debug, Clone, Default)]
pub struct SoftOptions {
    pub faults: Faults,
    /// Test-only: checks the devices deliberately skip.
    pub broken: BrokenChecks,
    /// Write device `i`'s frames to `<prefix>-<i>.pcap`.
    pub pcap_prefix: Option<std::path::PathBuf>,
    /// Devices without busy polling: every frame through the receive thread.
    pub no_busy_poll: bool,
}

pub struct SoftTarget {
    bed: Testbed,
    fabric: Fabric,
    faults: Faults,
    current: Mutex<Faults>,
}

fn to_fabric(f: Faults) -> FabricFaults {
    FabricFaults { drop: f.drop, dup: f.dup, reorder: f.reorder, corrupt: f.corrupt }
}

impl SoftTarget {
    /// Two devices on `fabric`. Under faults the devices read retry_cnt 7 as
    /// "retry forever" (rxe's quirk), so that no RC case can fail just
    /// because eight retries in a row were unlucky; the cases that test
    /// retry exhaustion use retry_cnt < 7.
    pub fn new(fabric: Fabric, o: &SoftOptions) -> std::io::Result<SoftTarget> {
        let topts = TestbedOptions {
            pcap_prefix: o.pcap_prefix.clone(),
            rxe_retry_quirk: !o.faults.is_clean(),
            pkeys: Some(PKEYS.to_vec()),
            broken: o.broken,
            no_busy_poll: o.no_busy_poll,
            ..TestbedOptions::default()
        };
        let bed = match fabric {
            Fabric::Memory => Testbed::memory(2, to_fabric(o.faults), &topts)?,
            Fabric::Tap => {
                if !o.faults.is_clean() {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::InvalidInput,
                        "fault injection needs the memory fabric",
                    ));
                }
                Testbed::tap(2, &topts)?
            }
        };
        Ok(SoftTarget { bed, fabric, faults: o.faults, current: Mutex::new(o.faults) })
    }

    pub fn memory(o: &SoftOptions) -> std::io::Result<SoftTarget> {
        Self::new(Fabric::Memory, o)
    }

    pub fn tap(o: &SoftOptions) -> std::io::Result<SoftTarget> {
        Self::new(Fabric::Tap, o)
    }

    pub fn testbed(&self) -> &Testbed {
        &self.bed
    }
}

impl Target for SoftTarget {
    fn name(&self) -> String {
        match self.fabric {
            Fabric::Memory => "softrdma (in-memory fabric)".into(),
            Fabric::Tap => "softrdma (TAPs in network namespaces)".into(),
        }
    }

    fn contexts(&self) -> Vec<Arc<dyn Context>> {
        self.bed.contexts()
    }

    fn set_faults(&self, f: Faults) -> bool {
        match &self.bed.fabric {
            Some(fab) => {
                fab.set_faults(to_fabric(f));
                *self.current.lock().unwrap_or_else(|e| e.into_inner()) = f;
                true
            }
            None => false,
        }
    }

    fn faults(&self) -> Faults {
        self.faults
    }
}
