//! Where the benchmarked devices live: the in-memory fabric (no privileges)
//! or TAPs in network namespaces joined the way `softrdma::testbed::Testbed::tap`
//! joins them (TAP → bridge in its own namespace → veth → bridge in a hub
//! namespace), but with the link MTU the test asks for and room for more
//! than 254 devices. Also hands out the bare links (no device) for the raw
//! Ethernet baselines, so those cross exactly the same path.

use std::io;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use softrdma::backend::memory::Fabric;
use softrdma::backend::netns::{self, NetNs};
use softrdma::backend::tap::{open_tap, TapConfig};
use softrdma::device::{Device, DeviceConfig};
use softrdma::link::Link;
use verbs_api::Context;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum FabricKind {
    /// Both ends in this process on the in-memory fabric.
    Memory,
    /// Both ends in this process, each behind a TAP in its own namespace (root).
    Tap,
}

impl FabricKind {
    pub fn name(self) -> &'static str {
        match self {
            FabricKind::Memory => "memory",
            FabricKind::Tap => "tap",
        }
    }
}

/// The link (IP) MTU that carries RoCE packets of IB MTU `ib_mtu`: 1500 up to
/// 1024 (as rxe derives 1024 from a 1500 netdev), else the IB MTU plus room
/// for IP/UDP/BTH/RETH/ICRC.
pub fn link_mtu_for(ib_mtu: usize) -> usize {
    if ib_mtu <= 1024 {
        1500
    } else {
        ib_mtu + 256
    }
}

/// MAC of benchmark device `i` (unique for up to 65 534 devices).
pub fn mac(i: usize) -> [u8; 6] {
    let n = i + 1;
    [0x02, 0x53, 0x52, 0x50, (n >> 8) as u8, n as u8]
}

/// IPv4 address of benchmark device `i`: 10.98.0.0/16 + i + 1.
pub fn addr(i: usize) -> IpAddr {
    let n = i + 1;
    IpAddr::from([10, 98, (n >> 8) as u8, n as u8])
}

/// Device `i`'s IPv6 address (GID index 2): `fd98::` and the same number.
pub fn addr6(i: usize) -> IpAddr {
    let n = i + 1;
    IpAddr::from([0xfd, 0x98, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, (n >> 8) as u8, n as u8])
}

/// Namespaces made for a TAP topology; deleted (with every interface in them) on drop.
pub struct TapNet {
    nss: Vec<NetNs>,
    hub: Option<NetNs>,
    /// How long building it took.
    pub setup: Duration,
}

impl TapNet {
    pub fn namespaces(&self) -> impl Iterator<Item = &str> {
        self.nss.iter().map(|n| n.name()).chain(self.hub.iter().map(|h| h.name()))
    }

    /// Deletes every namespace now; returns how long it took.
    pub fn teardown(mut self) -> Duration {
        let t = Instant::now();
        for ns in self.nss.drain(..) {
            let _ = ns.delete();
        }
        if let Some(h) = self.hub.take() {
            let _ = h.delete();
        }
        t.elapsed()
    }
}

impl Drop for TapNet {
    fn drop(&mut self) {
        for ns in self.nss.drain(..) {
            let _ = ns.delete();
        }
        if let Some(h) = self.hub.take() {
            let _ = h.delete();
        }
    }
}

/// Runs a batch of `ip` commands (one per line) in namespace `ns` with one process.
fn ip_batch(ns: Option<&str>, cmds: &[String]) -> io::Result<()> {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let mut c = Command::new("ip");
    if let Some(ns) = ns {
        c.args(["-n", ns]);
    }
    let mut child =
        c.args(["-batch", "-"]).stdin(Stdio::piped()).stdout(Stdio::null()).stderr(Stdio::piped()).spawn()?;
    {
        let mut stdin = child.stdin.take().ok_or_else(|| io::Error::other("no stdin"))?;
        for l in cmds {
            writeln!(stdin, "{l}")?;
        }
    }
    let out = child.wait_with_output()?;
    if out.status.success() {
        Ok(())
    } else {
        Err(io::Error::other(format!(
            "ip {:?} -batch failed: {}: {}",
            ns,
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

/// `n` TAP links, link `i` in its own namespace behind a bridge, the
/// namespaces joined by veth pairs to a bridge in a hub namespace. Every
/// interface gets MTU `link_mtu`; IPv6 is switched off in the kernel side
/// of each namespace so that no router solicitations or MLD reports cross
/// the measurement. Needs root.
pub fn tap_links(n: usize, link_mtu: usize) -> io::Result<(TapNet, Vec<Link>)> {
    netns::privileged().map_err(|e| io::Error::new(io::ErrorKind::PermissionDenied, e))?;
    let t = Instant::now();
    let hub = NetNs::create(&netns::unique_name("sbph"))?;
    let mut net = TapNet { nss: Vec::new(), hub: None, setup: Duration::ZERO };
    let hub_name = hub.name().to_string();
    net.hub = Some(hub);
    let no_v6 = || {
        for f in ["all", "default"] {
            let _ = std::fs::write(format!("/proc/sys/net/ipv6/conf/{f}/disable_ipv6"), "1");
        }
    };
    if let Some(h) = &net.hub {
        h.run_in(no_v6)?;
    }
    ip_batch(
        Some(&hub_name),
        &[
            "link add name hubbr type bridge stp_state 0 forward_delay 0".into(),
            format!("link set dev hubbr mtu {link_mtu} up"),
        ],
    )?;
    let mut links = Vec::new();
    let mut hub_cmds = Vec::new();
    for i in 0..n {
        let ns = NetNs::create(&netns::unique_name("sbpn"))?;
        let name = ns.name().to_string();
        ns.run_in(no_v6)?;
        net.nss.push(ns);
        let (va, vb) = (format!("sbv{i}a"), format!("sbv{i}b"));
        ip_batch(
            Some(&name),
            &[
                format!("link add {va} mtu {link_mtu} type veth peer name {vb} mtu {link_mtu} netns {hub_name}"),
                "link add name srdbr type bridge stp_state 0 forward_delay 0".into(),
                format!("link set dev {va} master srdbr up"),
            ],
        )?;
        hub_cmds.push(format!("link set dev {vb} master hubbr up"));
        let cfg = TapConfig {
            mac: Some(mac(i)),
            mtu: link_mtu,
            vnet_hdr: tap_offload(),
            ..TapConfig::in_netns(name.clone(), "srdtap0")
        };
        links.push(open_tap(&cfg)?);
        ip_batch(Some(&name), &["link set dev srdtap0 master srdbr up".into(), "link set dev srdbr up".into()])?;
    }
    ip_batch(Some(&hub_name), &hub_cmds)?;
    net.setup = t.elapsed();
    Ok((net, links))
}

/// `n` links of the kind asked for (the fabric or TAP topology must outlive them).
pub fn links(kind: FabricKind, n: usize, link_mtu: usize) -> io::Result<(Option<Fabric>, Option<TapNet>, Vec<Link>)> {
    match kind {
        FabricKind::Memory => {
            let f = Fabric::new();
            let links = (0..n).map(|i| f.attach(mac(i), link_mtu)).collect();
            Ok((Some(f), None, links))
        }
        FabricKind::Tap => {
            let (net, links) = tap_links(n, link_mtu)?;
            Ok((None, Some(net), links))
        }
    }
}

static BUSY_POLL: std::sync::OnceLock<Option<std::time::Duration>> = std::sync::OnceLock::new();
static RX_LINGER: std::sync::OnceLock<std::time::Duration> = std::sync::OnceLock::new();
static ACK_HOLD: std::sync::OnceLock<std::time::Duration> = std::sync::OnceLock::new();

/// The busy-poll interval of every device started after this (the first
/// call wins; without one, the device default).
pub fn set_busy_poll(b: Option<std::time::Duration>) {
    let _ = BUSY_POLL.set(b);
}

/// The busy-poll interval of the devices started from now on
/// (`set_busy_poll`, else the device default).
fn busy_poll() -> Option<std::time::Duration> {
    BUSY_POLL.get().copied().unwrap_or_else(softrdma::busy_poll::busy_poll_default)
}

/// Whether the devices started from now on busy-poll.
pub fn devices_busy_poll() -> bool {
    busy_poll().is_some()
}

/// The receive threads' linger of every device started after this (the
/// first call wins; without one, the link's default).
pub fn set_rx_linger(d: std::time::Duration) {
    let _ = RX_LINGER.set(d);
}

/// How long polls hold ACKs back on every device started after this
/// (`DeviceConfig::ack_hold`; the first call wins; without one, 5 µs).
pub fn set_ack_hold(d: std::time::Duration) {
    let _ = ACK_HOLD.set(d);
}

static PCAP_DIR: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();

/// Every device started after this writes what it sends and receives to
/// `DIR/NAME.pcap` (the first call wins).
pub fn set_pcap_dir(dir: std::path::PathBuf) {
    let _ = PCAP_DIR.set(dir);
}

static TAP_OFFLOAD: std::sync::OnceLock<bool> = std::sync::OnceLock::new();

/// Whether TAPs opened after this use virtio-net headers and UDP
/// segmentation (`TapConfig::vnet_hdr`; the first call wins, default on).
pub fn set_tap_offload(on: bool) {
    let _ = TAP_OFFLOAD.set(on);
}

fn tap_offload() -> bool {
    TAP_OFFLOAD.get().copied().unwrap_or(true)
}

/// A device configuration with the polling settings of the command line.
pub fn device_config(name: &str, addrs: Vec<(IpAddr, u8)>) -> DeviceConfig {
    let mut cfg = DeviceConfig::new(name, addrs);
    cfg.busy_poll = busy_poll();
    cfg.rx_linger = RX_LINGER.get().copied();
    if let Some(d) = ACK_HOLD.get() {
        cfg.ack_hold = *d;
    }
    if let Some(dir) = PCAP_DIR.get() {
        cfg.pcap = Some(dir.join(format!("{name}.pcap")));
    }
    cfg
}

/// Running devices and what they stand on; stopped and torn down on drop.
pub struct Devices {
    pub devices: Vec<Arc<Device>>,
    pub fabric: Option<Fabric>,
    pub net: Option<TapNet>,
}

impl Devices {
    /// `n` devices `bench0…`, device `i` with MAC [`mac`]`(i)` and address
    /// [`addr`]`(i)`/16 (GID index 1).
    pub fn new(kind: FabricKind, n: usize, link_mtu: usize) -> io::Result<Devices> {
        let (fabric, net, links) = links(kind, n, link_mtu)?;
        let mut devices = Vec::new();
        for (i, link) in links.into_iter().enumerate() {
            let addrs = vec![(addr(i), 16), (addr6(i), 64)];
            devices.push(Device::start(device_config(&format!("bench{i}"), addrs), link)?);
        }
        Ok(Devices { devices, fabric, net })
    }

    pub fn context(&self, i: usize) -> Arc<dyn Context> {
        self.devices[i].context()
    }

    /// Stops every device at once: `Device::shutdown` waits for the receive
    /// thread's poll timeout (up to 50 ms), so stopping hundreds one after
    /// the other takes seconds.
    fn stop_all(&mut self) {
        std::thread::scope(|s| {
            for d in &self.devices {
                s.spawn(move || d.shutdown());
            }
        });
        self.devices.clear();
    }

    /// Stops the devices and removes the namespaces; returns how long each took.
    pub fn teardown(mut self) -> (Duration, Duration) {
        let t = Instant::now();
        self.stop_all();
        let stop = t.elapsed();
        (stop, self.net.take().map(|n| n.teardown()).unwrap_or_default())
    }
}

impl Drop for Devices {
    fn drop(&mut self) {
        self.stop_all();
        self.net.take();
    }
}
