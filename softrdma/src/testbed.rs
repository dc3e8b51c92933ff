//! Ready-made sets of devices for tests, the demo and the conformance suite:
//! `n` devices on the in-memory fabric (no privileges), or `n` devices each
//! behind a TAP in its own network namespace, the namespaces joined by veth
//! pairs to a bridge in a hub namespace (root). Everything created is torn
//! down when the testbed is dropped.
//!
//! Device `i` (i < 250) has MAC 02:53:52:44:00:(i+1), IPv4 10.99.0.(i+1)/16
//! and IPv6 fd99::(i+1)/64 (hex); so its GID 1 is `::ffff:10.99.0.(i+1)`,
//! GID 2 `fd99::(i+1)`. Larger testbeds continue in 10.99.1.0 and so on.
//! In TAP mode the kernel of namespace `i` has 10.99.128.(i+1)/16 and
//! fd99::1:(i+1)/64 on its bridge, so `ip netns exec NS ping 10.99.0.(i+1)`
//! (or `ping fd99::(i+1)`) reaches the device.

use std::io;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use verbs_api::Context;

use crate::backend::memory::{Fabric, Faults};
use crate::backend::netns::{self, NetNs};
use crate::backend::tap::{open_tap, TapConfig};
use crate::device::{BrokenChecks, Device, DeviceConfig};
use crate::namespace::Namespace;

/// A test's own directory under the system's temp directory, named with
/// the process id, emptied when made and removed when dropped: a test that
/// fails does not leave its captures or reports behind.
pub struct ScratchDir(PathBuf);

impl ScratchDir {
    pub fn new(name: &str) -> io::Result<ScratchDir> {
        let dir = std::env::temp_dir().join(format!("{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)?;
        Ok(ScratchDir(dir))
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    pub fn join(&self, name: impl AsRef<Path>) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub fn device_mac(i: usize) -> [u8; 6] {
    let n = (i + 1) as u16;
    [0x02, 0x53, 0x52, 0x44, (n >> 8) as u8, n as u8]
}

/// 10.99.(i/250).(i%250+1)/16 and fd99::(i+1) — unique for the first 32 000
/// devices (10.99.128.0/17 is the kernels' side of TAP testbeds).
pub fn device_addrs(i: usize) -> Vec<(IpAddr, u8)> {
    vec![
        (IpAddr::from([10, 99, (i / 250) as u8, (i % 250) as u8 + 1]), 16),
        (IpAddr::V6(format!("fd99::{:x}", i + 1).parse().expect("literal")), 64),
    ]
}

/// The kernel's address on namespace `i`'s bridge (TAP testbeds).
fn kernel_addrs(i: usize) -> (String, String) {
    (format!("10.99.{}.{}/16", 128 + i / 250, i % 250 + 1), format!("fd99::1:{:x}/64", i + 1))
}

/// Options common to both kinds of testbed.
#[derive(Debug, Clone, Default)]
pub struct TestbedOptions {
    /// Write device `i`'s frames to `<prefix>-<i>.pcap`.
    pub pcap_prefix: Option<PathBuf>,
    pub rxe_retry_quirk: bool,
    /// Per-device P_Key tables (default: the full default partition only).
    pub pkeys: Option<Vec<u16>>,
    /// TEST-ONLY: checks every device skips (see [`BrokenChecks`]).
    pub broken: BrokenChecks,
    /// Tenants: device `i` gets tenant `i % len` — its namespace object and
    /// its own P_Key table (overrides `pkeys`). In TAP mode a tenant's
    /// namespace is named after device `i`'s network namespace.
    pub tenants: Option<Vec<Tenant>>,
    /// Devices without busy polling (`DeviceConfig::busy_poll = None`):
    /// every frame goes through the receive thread.
    pub no_busy_poll: bool,
    /// A busy-poll interval other than the default (`DeviceConfig::busy_poll`).
    pub busy_poll_interval: Option<std::time::Duration>,
    /// A hold of ACKs other than the default (`DeviceConfig::ack_hold`).
    pub ack_hold: Option<std::time::Duration>,
    /// TAP mode: the devices whose TAP has no virtio-net headers (no
    /// checksum or segmentation offload; `TapConfig::vnet_hdr = false`).
    pub plain_taps: Vec<usize>,
}

/// One tenant of a multi-tenant testbed.
#[derive(Debug, Clone, Default)]
pub struct Tenant {
    pub pkeys: Vec<u16>,
    pub jkey: Option<u16>,
}

/// What the TAP testbed created, removed in reverse on drop.
struct TapNet {
    hub: NetNs,
    nss: Vec<NetNs>,
}

impl Drop for TapNet {
    fn drop(&mut self) {
        // Deleting a namespace removes its veth ends, bridges and TAPs.
        for ns in self.nss.drain(..) {
            let _ = ns.delete();
        }
        let _ = netns::del_link(Some(self.hub.name()), "hubbr");
    }
}

pub struct Testbed {
    pub devices: Vec<Arc<Device>>,
    pub fabric: Option<Fabric>,
    net: Option<TapNet>,
}

impl Testbed {
    fn config(i: usize, o: &TestbedOptions) -> DeviceConfig {
        Self::config_in(i, o, &format!("tenant{i}"))
    }

    fn config_in(i: usize, o: &TestbedOptions, ns_name: &str) -> DeviceConfig {
        let mut c = DeviceConfig::new(&format!("srd{i}"), device_addrs(i));
        c.pcap = o.pcap_prefix.as_ref().map(|p| PathBuf::from(format!("{}-{i}.pcap", p.display())));
        c.rxe_retry_quirk = o.rxe_retry_quirk;
        c.broken = o.broken;
        if let Some(d) = o.busy_poll_interval {
            c.busy_poll = Some(d);
        }
        if o.no_busy_poll {
            c.busy_poll = None;
        }
        if let Some(d) = o.ack_hold {
            c.ack_hold = d;
        }
        if let Some(p) = &o.pkeys {
            c.pkeys = p.clone();
        }
        if let Some(t) = o.tenants.as_ref().and_then(|t| t.get(i % t.len().max(1))) {
            let ns = Namespace::new(ns_name, false, false);
            ns.set_jkey(t.jkey);
            c.namespace = Some(ns);
            if !t.pkeys.is_empty() {
                c.pkeys = t.pkeys.clone();
            }
        }
        c
    }

    /// `n` devices on one in-memory fabric.
    pub fn memory(n: usize, faults: Faults, o: &TestbedOptions) -> io::Result<Testbed> {
        let fabric = Fabric::with_faults(faults, 7);
        let mut devices = Vec::new();
        for i in 0..n {
            devices.push(Device::start(Self::config(i, o), fabric.attach(device_mac(i), 1500))?);
        }
        Ok(Testbed { devices, fabric: Some(fabric), net: None })
    }

    /// `n` devices behind TAPs in `n` fresh namespaces (needs root).
    pub fn tap(n: usize, o: &TestbedOptions) -> io::Result<Testbed> {
        netns::privileged().map_err(|e| io::Error::new(io::ErrorKind::PermissionDenied, e))?;
        let hub = NetNs::create(&netns::unique_name("srdh"))?;
        let mut net = TapNet { hub, nss: Vec::new() };
        let hub_name = net.hub.name().to_string();
        netns::bridge(Some(&hub_name), "hubbr")?;
        netns::link_up(Some(&hub_name), "hubbr")?;
        let mut links = Vec::new();
        for i in 0..n {
            let ns = NetNs::create(&netns::unique_name("srdn"))?;
            let name = ns.name().to_string();
            net.nss.push(ns);
            let (va, vb) = (format!("srdv{i}a"), format!("srdv{i}b"));
            netns::veth_pair(&va, Some(&name), &vb, Some(&hub_name))?;
            netns::enslave(Some(&hub_name), &vb, "hubbr")?;
            netns::link_up(Some(&hub_name), &vb)?;
            netns::bridge(Some(&name), "srdbr")?;
            let mut cfg = TapConfig::in_netns(name.clone(), "srdtap0");
            cfg.mac = Some(device_mac(i));
            cfg.vnet_hdr = !o.plain_taps.contains(&i);
            let link = open_tap(&cfg)?;
            netns::enslave(Some(&name), "srdtap0", "srdbr")?;
            netns::enslave(Some(&name), &va, "srdbr")?;
            for ifname in [va.as_str(), "srdbr", "lo"] {
                netns::link_up(Some(&name), ifname)?;
            }
            let (v4, v6) = kernel_addrs(i);
            netns::add_addr(Some(&name), "srdbr", &v4)?;
            netns::ip(Some(&name), &["addr", "add", &v6, "dev", "srdbr", "nodad"])?;
            links.push(link);
        }
        let mut devices = Vec::new();
        for (i, link) in links.into_iter().enumerate() {
            let ns = net.nss[i].name().to_string();
            devices.push(Device::start(Self::config_in(i, o, &ns), link)?);
        }
        Ok(Testbed { devices, fabric: None, net: Some(net) })
    }

    pub fn contexts(&self) -> Vec<Arc<dyn Context>> {
        self.devices.iter().map(|d| d.context()).collect()
    }

    /// The namespace device `i` lives in (TAP testbeds only).
    pub fn netns_of(&self, i: usize) -> Option<&str> {
        self.net.as_ref().and_then(|n| n.nss.get(i)).map(|n| n.name())
    }
}

impl Drop for Testbed {
    fn drop(&mut self) {
        for d in &self.devices {
            d.shutdown();
        }
        self.devices.clear();
        self.net.take();
    }
}

#[cfg(test)]
mod tests {
    use super::ScratchDir;

    #[test]
    fn a_scratch_dir_goes_with_its_test_even_one_that_fails() {
        let dir = ScratchDir::new("srd-scratch-ok").unwrap();
        std::fs::write(dir.join("a.pcap"), b"x").unwrap();
        let path = dir.path().to_owned();
        assert!(path.join("a.pcap").exists());
        drop(dir);
        assert!(!path.exists(), "left behind: {path:?}");

        let failed = std::panic::catch_unwind(|| {
            let dir = ScratchDir::new("srd-scratch-failing").unwrap();
            std::fs::write(dir.join("b.json"), b"{}").unwrap();
            panic!("a failing test");
        });
        assert!(failed.is_err());
        let left = std::env::temp_dir().join(format!("srd-scratch-failing-{}", std::process::id()));
        assert!(!left.exists(), "left behind by a failing test: {left:?}");
    }
}
