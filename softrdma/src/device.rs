//! A softrdma device: one port, a link (TAP or in-memory fabric), its own
//! MAC and IP addresses (hence its GID table), a P_Key table, and the
//! engine threads. `Device::context()` is the verbs entry point.

use std::fs::File;
use std::io::BufWriter;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, Weak};
use std::thread::JoinHandle;

use transport::counters::Counters;
use transport::endpoint::{Endpoint, EndpointCounters};
use verbs_api::{Context, Gid, GidEntry, Provider};

use crate::backend::host::Host;
use crate::capture::PcapSink;
use crate::engine::{self, Core, DeviceCounters, Shared};
use crate::gid::GidTable;
use crate::link::Link;
use crate::mr::DevMemory;
use crate::namespace::{BoundaryMode, Namespace};
use crate::verbs::SoftContext;

#[derive(Debug, Clone)]
pub struct DeviceConfig {
    /// Device name, as `ibv_devices` would list it (e.g. `srd0`).
    pub name: String,
    /// The device's own IP addresses with prefix lengths.
    pub addrs: Vec<(IpAddr, u8)>,
    /// The P_Key table; index 0 is the default partition.
    pub pkeys: Vec<u16>,
    /// Write every frame sent or received to this pcap file.
    pub pcap: Option<PathBuf>,
    /// rxe's "retry_cnt 7 = forever" (docs/design.md).
    pub rxe_retry_quirk: bool,
    /// TEST-ONLY: checks deliberately switched off (all off by default).
    pub broken: BrokenChecks,
    /// The namespace (tenant) the device belongs to; default: the host's.
    pub namespace: Option<Arc<Namespace>>,
    pub mode: BoundaryMode,
    /// Partition mode: the GIDs the namespace is granted (netdev mode: its addresses).
    pub granted_gids: Vec<Gid>,
    /// Speak RoCEv1 too. Refused for devices outside the initial namespace.
    pub rocev1: bool,
    /// Busy polling: for this long after an application last polled one of
    /// the device's CQs, the receive thread leaves the link to the polling
    /// thread (as Linux's busy polling defers interrupts), so a frame costs
    /// no thread hand-off. While the polls go on, the receive thread checks
    /// back after 1, 2, 4, then every 8 intervals (each check is a wake-up),
    /// so after a long run of polls it takes over up to 16 intervals after
    /// the last one; a thread that blocks in `Cq::wait` hands the link back
    /// at once. `None`: the receive thread handles every frame.
    /// Default: 200 µs on a machine with more than one CPU, else `None`.
    pub busy_poll: Option<std::time::Duration>,
    /// After a batch of frames the receive thread keeps polling the link
    /// for this long before it sleeps, so a stream of frames costs no
    /// wake-up per frame (the sender's `write(2)` pays for waking a sleeping
    /// reader). `None`: the link's default — 50 µs on the in-memory fabric,
    /// 5 µs on a TAP, where each poll is a `read(2)` and a longer spin takes
    /// CPU from the kernel and from an emulated peer on the same machine;
    /// on a one-CPU machine, 0.
    pub rx_linger: Option<std::time::Duration>,
    /// How long an application's polls leave a plain ACK held back, so
    /// that the answer the application posts takes it along in one write
    /// (docs/design.md "ACKs after answers"). Its next post, blocking in
    /// `Cq::wait`, or the receive thread taking over also end the hold.
    /// Zero: the next poll ends it. Default `busy_poll::ACK_HOLD` (5 µs).
    pub ack_hold: std::time::Duration,
}

/// TEST-ONLY switches that make the device non-conforming on purpose, so the
/// conformance suite can prove that its cases fail when a check is missing
/// (`conformance/tests/broken.rs`). Never set them for anything else.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BrokenChecks {
    /// Remote (R_Key) accesses skip the MR bounds check (`mr::DevMemory`).
    pub skip_rkey_bounds: bool,
    /// Received packets skip the P_Key check (`Endpoint::set_skip_pkey_check`).
    pub skip_pkey_check: bool,
}

impl DeviceConfig {
    pub fn new(name: &str, addrs: Vec<(IpAddr, u8)>) -> Self {
        DeviceConfig {
            name: name.to_string(),
            addrs,
            pkeys: vec![0xffff],
            pcap: None,
            rxe_retry_quirk: false,
            broken: BrokenChecks::default(),
            namespace: None,
            mode: BoundaryMode::Netdev,
            granted_gids: Vec::new(),
            rocev1: false,
            busy_poll: crate::busy_poll::busy_poll_default(),
            rx_linger: None,
            ack_hold: crate::busy_poll::ACK_HOLD,
        }
    }
}

pub struct Device {
    shared: Arc<Shared>,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

impl Device {
    /// The engine's shared state (tests that stand in for a thread the
    /// scheduler stopped in the middle of a poll).
    #[cfg(test)]
    pub(crate) fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// Starts a device on `link`.
    pub fn start(cfg: DeviceConfig, link: Link) -> std::io::Result<Arc<Device>> {
        let pcap = match &cfg.pcap {
            Some(p) => Some(
                PcapSink::new(BufWriter::new(File::create(p)?)).map_err(|e| std::io::Error::other(e.to_string()))?,
            ),
            None => None,
        };
        crate::icrc_engine::choose();
        let ns = cfg.namespace.clone().unwrap_or_else(Namespace::host);
        if cfg.rocev1 && !ns.initial {
            // Annex A16 GIDs are link-layer addresses no namespace can own.
            return Err(std::io::Error::new(
                std::io::ErrorKind::PermissionDenied,
                format!(
                    "RoCEv1 is refused for devices in namespace {} (only the initial namespace may use it)",
                    ns.name
                ),
            ));
        }
        let ips: Vec<IpAddr> = cfg.addrs.iter().map(|(a, _)| *a).collect();
        let gids = match cfg.mode {
            BoundaryMode::Netdev => GidTable::new(link.mac, &ips),
            BoundaryMode::Partition => GidTable::granted(link.mac, &cfg.granted_gids),
        };
        let mut mem = DevMemory::default();
        mem.skip_rkey_bounds = cfg.broken.skip_rkey_bounds;
        if link.tx.lends() && crate::lent::worth_it() {
            mem.lend_from = Some(crate::lent::LEND_FROM);
        }
        let mut ep = Endpoint::new(mem);
        ep.set_skip_pkey_check(cfg.broken.skip_pkey_check);
        ep.set_local_gids(gids.all());
        let core = Core {
            ep,
            host: Host::new(link.mac, cfg.addrs.clone()),
            gids,
            ns,
            mode: cfg.mode,
            rocev1: cfg.rocev1,
            qos_wake: None,
            timer_sleeps_until: None,
            pkeys: if cfg.pkeys.is_empty() { vec![0xffff] } else { cfg.pkeys.clone() },
            cqs: Default::default(),
            events: Default::default(),
            counters: DeviceCounters::default(),
            pcap,
            rxe_retry_quirk: cfg.rxe_retry_quirk,
            cq_by_num: Default::default(),
            pd_objects: Default::default(),
            next_pd: 0,
            next_cq: 0,
            buf: Vec::with_capacity(link.mtu + 64),
            deferred: Vec::new(),
            spare: Vec::new(),
            txq: Vec::new(),
            txbatch: Vec::new(),
            txfree: Vec::new(),
            txlent: Vec::new(),
            tx_next: 0,
        };
        let shared = Shared::new(
            cfg.name.clone(),
            link.mac,
            link.mtu,
            link.tx,
            link.rx,
            crate::busy_poll::Polling { busy_poll: cfg.busy_poll, rx_linger: cfg.rx_linger, ack_hold: cfg.ack_hold },
            core,
        );
        let threads = engine::spawn(&shared)?;
        let dev = Arc::new(Device { shared, threads: Mutex::new(threads) });
        if let Ok(mut reg) = REGISTRY.lock() {
            reg.retain(|w| w.strong_count() > 0);
            reg.push(Arc::downgrade(&dev));
        }
        Ok(dev)
    }

    pub fn name(&self) -> &str {
        &self.shared.name
    }

    pub fn mac(&self) -> [u8; 6] {
        self.shared.mac
    }

    /// How the link's frames cross into the kernel: whether a TAP writes
    /// runs of frames as UDP GSO packets, or fell back to one per write.
    pub fn offload(&self) -> crate::link::Offload {
        self.shared.offload()
    }

    /// The verbs entry point (`ibv_open_device`).
    pub fn context(&self) -> Arc<dyn Context> {
        Arc::new(SoftContext { dev: self.shared.clone() })
    }

    pub fn gids(&self) -> Vec<GidEntry> {
        self.shared.lock().gids.entries()
    }

    /// Replaces the device's addresses; the GID table follows (index 0, the
    /// link-local GID, never changes), as rxe's follows its netdev's.
    pub fn set_addrs(&self, addrs: Vec<(IpAddr, u8)>) {
        let mut core = self.shared.lock();
        if core.mode == BoundaryMode::Netdev {
            let ips: Vec<IpAddr> = addrs.iter().map(|(a, _)| *a).collect();
            core.gids = GidTable::new(self.shared.mac, &ips);
            let all = core.gids.all();
            core.ep.set_local_gids(all);
        }
        core.host.set_addrs(addrs);
    }

    /// Partition mode: replaces the GIDs the namespace is granted.
    pub fn grant_gids(&self, gids: &[Gid]) {
        let mut core = self.shared.lock();
        if core.mode == BoundaryMode::Partition {
            core.gids = GidTable::granted(self.shared.mac, gids);
            let all = core.gids.all();
            core.ep.set_local_gids(all);
        }
    }

    /// Replaces the P_Key table (QPs keep the P_Key they were given).
    pub fn set_pkeys(&self, pkeys: Vec<u16>) {
        self.shared.lock().pkeys = if pkeys.is_empty() { vec![0xffff] } else { pkeys };
    }

    /// QoS: the share of transmit turns QP `qpn` gets relative to the
    /// device's other QPs (weighted round robin; default 1).
    pub fn set_qp_weight(&self, qpn: u32, weight: u32) {
        self.shared.lock().ep.set_qp_weight(qpn, weight);
    }

    /// One line per object of the device, `rdma resource show` style:
    /// (kind, description).
    pub fn resources(&self) -> Vec<(&'static str, String)> {
        let core = self.shared.lock();
        let n = &self.shared.name;
        let mut out = Vec::new();
        for q in core.ep.qps() {
            let a = q.attr();
            out.push((
                "qp",
                format!(
                    "link {n}/1 lqpn {} rqpn {} type {:?} state {:?} sq-psn {:#x} pdn {}",
                    q.qpn(),
                    a.dest_qp_num,
                    q.qp_type(),
                    q.state(),
                    a.sq_psn,
                    q.pd()
                ),
            ));
        }
        for r in core.ep.mem.regions() {
            out.push(("mr", format!("dev {n} mrlen {} lkey {:#x} rkey {:#x} pdn {}", r.len(), r.lkey, r.rkey, r.pd)));
        }
        for (cqn, cq) in &core.cq_by_num {
            out.push(("cq", format!("dev {n} cqn {cqn} cqe {}", cq.cap)));
        }
        for (pdn, users) in &core.pd_objects {
            out.push(("pd", format!("dev {n} pdn {pdn} users {users}")));
        }
        out
    }

    pub fn pkeys(&self) -> Vec<u16> {
        self.shared.lock().pkeys.clone()
    }

    pub fn namespace(&self) -> Arc<Namespace> {
        self.shared.lock().ns.clone()
    }

    pub fn counters(&self) -> (DeviceCounters, EndpointCounters, Counters) {
        let core = self.shared.lock();
        (self.shared.device_counters(&core), *core.ep.counters(), core.ep.qp_counters())
    }

    /// Stops the engine threads (and flushes the pcap file).
    pub fn shutdown(&self) {
        self.shared.shutdown();
        let threads: Vec<_> = self.threads.lock().map(|mut t| t.drain(..).collect()).unwrap_or_default();
        for t in threads {
            let _ = t.join();
        }
    }
}

/// Every running device of this process, for [`SoftProvider`].
static REGISTRY: Mutex<Vec<Weak<Device>>> = Mutex::new(Vec::new());

/// The process's devices, as `ibv_get_device_list` would show them.
pub struct SoftProvider;

impl SoftProvider {
    /// Every running device of the process.
    pub fn devices(&self) -> Vec<Arc<Device>> {
        let reg = REGISTRY.lock().map(|r| r.clone()).unwrap_or_default();
        reg.iter().filter_map(|w| w.upgrade()).collect()
    }
}

impl Provider for SoftProvider {
    fn device_names(&self) -> Vec<String> {
        let reg = REGISTRY.lock().map(|r| r.clone()).unwrap_or_default();
        reg.iter().filter_map(|w| w.upgrade()).map(|d| d.name().to_string()).collect()
    }

    fn open(&self, name: &str) -> verbs_api::Result<Arc<dyn Context>> {
        let reg = REGISTRY.lock().map(|r| r.clone()).unwrap_or_default();
        reg.iter()
            .filter_map(|w| w.upgrade())
            .find(|d| d.name() == name)
            .map(|d| d.context())
            .ok_or_else(|| verbs_api::VerbsError::NotFound(format!("no device named {name}")))
    }
}

impl Drop for Device {
    fn drop(&mut self) {
        self.shutdown();
    }
}
