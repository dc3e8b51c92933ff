//! softrdma's implementation of the `verbs-api` object traits.

use std::net::IpAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant as WallInstant};

use smoltcp::wire::EthernetAddress;
use transport::flow;
use transport::path::Path;
use transport::qp::{PostError, UdDest};
use verbs_api::{
    AccessFlags, Ah, AhAttr, AsyncEvent, CompChannel, Context, Cq, DeviceAttr, Gid, GidEntry, Mr, Mtu, Pd, PortAttr,
    PortState, Qp, QpAttr, QpAttrMask, QpInitAttr, QpPath, QpType, RecvWr, Result, SendWr, Srq, VerbsError,
    WorkCompletion,
};

use crate::backend::host::Resolution;
use crate::channel::SoftChannel;
use crate::cq::CqInner;
use crate::engine::{Core, Shared};
use crate::mr::Region;
use crate::namespace::Resource;

/// How long address resolution (ARP/ND) may take before `modify`/`create_ah` fail.
pub const RESOLVE_TIMEOUT: Duration = Duration::from_secs(3);

pub const MAX_QP_WR: u32 = 16384;
pub const MAX_SGE: u32 = 32;
pub const MAX_INLINE: u32 = 512;
pub const MAX_CQE: u32 = 1 << 20;
pub const MAX_RD_ATOMIC: u32 = 16;

fn einval(m: impl Into<String>) -> VerbsError {
    VerbsError::InvalidArgument(m.into())
}

fn post_error(e: PostError) -> VerbsError {
    match e {
        PostError::QueueFull => VerbsError::NoMemory(e.to_string()),
        e => VerbsError::InvalidArgument(e.to_string()),
    }
}

pub struct SoftContext {
    pub(crate) dev: Arc<Shared>,
}

impl SoftContext {
    fn active_mtu(&self) -> Mtu {
        Mtu::for_link_mtu(self.dev.mtu).unwrap_or(Mtu::M256)
    }
}

/// Resolves a GID to the MAC to send to (ARP for IPv4, ND for IPv6).
pub(crate) fn resolve(dev: &Shared, gid: Gid) -> Result<EthernetAddress> {
    let ip: IpAddr = match gid.to_ipv4() {
        Some(v4) => IpAddr::V4(v4),
        None => IpAddr::V6(gid.to_ipv6()),
    };
    let deadline = WallInstant::now() + RESOLVE_TIMEOUT;
    loop {
        {
            let mut core = dev.lock();
            if core.gids.contains(&gid) {
                return Ok(EthernetAddress(dev.mac));
            }
            let now = dev.elapsed();
            match core.host.resolve(ip, now) {
                Resolution::Known(mac) => return Ok(EthernetAddress(mac)),
                Resolution::Pending(Some(req)) => dev.send_raw(&mut core, &req),
                Resolution::Pending(None) => {}
            }
        }
        if WallInstant::now() > deadline {
            return Err(VerbsError::NotFound(format!("no ARP/ND answer from {ip} within {RESOLVE_TIMEOUT:?}")));
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

fn build_path(
    core: &Core,
    dev: &Shared,
    ah: &AhAttr,
    dmac: EthernetAddress,
    lqpn: u32,
    rqpn: u32,
    ud: bool,
) -> Result<Path> {
    if ah.port_num != 1 {
        return Err(einval(format!("port {} does not exist (one port, 1)", ah.port_num)));
    }
    let sgid = core.gids.get(ah.sgid_index as u32).ok_or_else(|| {
        einval(format!("sgid_index {} is not in the GID table ({} entries)", ah.sgid_index, core.gids.len()))
    })?;
    if sgid.to_ipv4().is_some() != ah.dgid.to_ipv4().is_some() {
        return Err(einval(format!("source GID {sgid} and destination GID {} are of different IP families", ah.dgid)));
    }
    let fl = if ah.flow_label != 0 { ah.flow_label & 0xf_ffff } else { flow::flow_label(lqpn, rqpn) };
    Ok(Path {
        smac: EthernetAddress(dev.mac),
        dmac,
        vlan: None,
        sgid,
        dgid: ah.dgid,
        traffic_class: ah.traffic_class,
        hop_limit: ah.hop_limit,
        flow_label: fl,
        udp_sport: if ud { flow::ud_udp_sport(lqpn) } else { flow::udp_sport_from_flow_label(fl) },
    })
}

impl SoftContext {
    fn make_cq(&self, cqe: u32, channel: Option<&SoftChannel>) -> Result<Arc<dyn Cq>> {
        if cqe == 0 || cqe > MAX_CQE {
            return Err(einval(format!("cqe {cqe} not in 1..={MAX_CQE}")));
        }
        let mut core = self.dev.lock();
        charge(&self.dev, &core, Resource::Cq, 1)?;
        core.next_cq += 1;
        let inner = Arc::new(CqInner::new(core.next_cq, cqe as usize, channel.map(|c| c.inner.clone())));
        core.cq_by_num.insert(inner.cqn, inner.clone());
        let cq: Arc<dyn Cq> = Arc::new(SoftCq { inner: inner.clone(), ns: core.ns.clone(), dev: self.dev.clone() });
        if let Some(ch) = channel {
            ch.attach(&cq, &inner);
        }
        Ok(cq)
    }
}

impl Context for SoftContext {
    fn device_name(&self) -> String {
        self.dev.name.clone()
    }

    fn query_device(&self) -> DeviceAttr {
        let m = self.dev.mac;
        DeviceAttr {
            fw_ver: env!("CARGO_PKG_VERSION").to_string(),
            node_guid: u64::from_be_bytes([m[0] ^ 2, m[1], m[2], 0xff, 0xfe, m[3], m[4], m[5]]),
            vendor_id: 0xffffff,
            max_mr_size: 1 << 32,
            max_qp: 1 << 20,
            max_qp_wr: MAX_QP_WR,
            max_sge: MAX_SGE,
            max_cq: 1 << 20,
            max_cqe: MAX_CQE,
            max_mr: 1 << 20,
            max_pd: 1 << 20,
            max_qp_rd_atom: MAX_RD_ATOMIC,
            max_qp_init_rd_atom: MAX_RD_ATOMIC,
            max_srq: 1 << 16,
            max_srq_wr: MAX_QP_WR,
            max_ah: 1 << 20,
            max_pkeys: 64,
            phys_port_cnt: 1,
        }
    }

    fn query_port(&self, port: u8) -> Result<PortAttr> {
        if port != 1 {
            return Err(VerbsError::NotFound(format!("port {port}")));
        }
        let core = self.dev.lock();
        Ok(PortAttr {
            state: PortState::Active,
            max_mtu: Mtu::M4096,
            active_mtu: self.active_mtu(),
            gid_tbl_len: core.gids.len() as u32,
            pkey_tbl_len: core.pkeys.len() as u16,
            link_layer_ethernet: true,
        })
    }

    fn query_gid(&self, port: u8, index: u32) -> Result<Gid> {
        if port != 1 {
            return Err(VerbsError::NotFound(format!("port {port}")));
        }
        self.dev.lock().gids.get(index).ok_or_else(|| VerbsError::NotFound(format!("GID index {index}")))
    }

    fn gid_table(&self, port: u8) -> Result<Vec<GidEntry>> {
        if port != 1 {
            return Err(VerbsError::NotFound(format!("port {port}")));
        }
        Ok(self.dev.lock().gids.entries())
    }

    fn query_pkey(&self, port: u8, index: u16) -> Result<u16> {
        if port != 1 {
            return Err(VerbsError::NotFound(format!("port {port}")));
        }
        self.dev
            .lock()
            .pkeys
            .get(index as usize)
            .copied()
            .ok_or_else(|| VerbsError::NotFound(format!("P_Key index {index}")))
    }

    fn alloc_pd(&self) -> Result<Arc<dyn Pd>> {
        let mut core = self.dev.lock();
        charge(&self.dev, &core, Resource::Pd, 1)?;
        core.next_pd += 1;
        let pdn = core.next_pd;
        core.pd_objects.insert(pdn, 0);
        Ok(Arc::new(SoftPd { dev: self.dev.clone(), pdn, mtu: self.active_mtu() }))
    }

    fn create_cq(&self, cqe: u32) -> Result<Arc<dyn Cq>> {
        self.make_cq(cqe, None)
    }

    fn create_comp_channel(&self) -> Result<Arc<dyn CompChannel>> {
        Ok(Arc::new(SoftChannel::new(self.dev.clone())?))
    }

    fn create_cq_with_channel(&self, cqe: u32, channel: &Arc<dyn CompChannel>) -> Result<Arc<dyn Cq>> {
        let Some(ch) = channel.as_any().downcast_ref::<SoftChannel>() else {
            return Err(einval("completion channel of another kind of device"));
        };
        if !Arc::ptr_eq(&ch.dev, &self.dev) {
            return Err(einval("completion channel of another context"));
        }
        if ch.is_destroyed() {
            return Err(einval("completion channel destroyed"));
        }
        self.make_cq(cqe, Some(ch))
    }

    fn get_async_event(&self, timeout: Duration) -> Option<AsyncEvent> {
        self.dev.next_event(timeout)
    }
}

pub struct SoftPd {
    dev: Arc<Shared>,
    pdn: u32,
    mtu: Mtu,
}

/// Takes `amount` of `r` from the device's namespace, auditing a refusal.
fn charge(dev: &Shared, core: &Core, r: Resource, amount: u64) -> Result<()> {
    core.ns.charge(r, amount).inspect_err(|e| dev.audit(core, "limit", None, None, e.to_string()))
}

fn bump(core: &mut Core, pdn: u32, by: i32) {
    if let Some(n) = core.pd_objects.get_mut(&pdn) {
        *n = (*n as i32 + by).max(0) as u32;
    }
}

impl Pd for SoftPd {
    fn handle(&self) -> u32 {
        self.pdn
    }

    fn reg_mr(&self, len: usize, access: AccessFlags) -> Result<Arc<dyn Mr>> {
        if len > 1 << 32 {
            return Err(einval("MR larger than 4 GiB"));
        }
        // ibverbs rule: remote write or atomic access needs local write too.
        if (access.contains(AccessFlags::REMOTE_WRITE) || access.contains(AccessFlags::REMOTE_ATOMIC))
            && !access.contains(AccessFlags::LOCAL_WRITE)
        {
            return Err(einval("REMOTE_WRITE/REMOTE_ATOMIC need LOCAL_WRITE"));
        }
        let mut core = self.dev.lock();
        if !core.pd_objects.contains_key(&self.pdn) {
            return Err(einval("PD was deallocated"));
        }
        charge(&self.dev, &core, Resource::Mr, 1)?;
        if let Err(e) = charge(&self.dev, &core, Resource::MrBytes, len as u64) {
            core.ns.release(Resource::Mr, 1);
            return Err(e);
        }
        let region = core.ep.mem.register(self.pdn, len, access);
        bump(&mut core, self.pdn, 1);
        Ok(Arc::new(SoftMr { dev: self.dev.clone(), region, pdn: self.pdn }))
    }

    fn create_qp(&self, init: &QpInitAttr) -> Result<Arc<dyn Qp>> {
        let cap = init.cap;
        if cap.max_send_wr > MAX_QP_WR || cap.max_recv_wr > MAX_QP_WR {
            return Err(einval(format!("more than {MAX_QP_WR} work requests per queue")));
        }
        if cap.max_send_sge > MAX_SGE || cap.max_recv_sge > MAX_SGE || cap.max_inline_data > MAX_INLINE {
            return Err(einval(format!("at most {MAX_SGE} SGEs and {MAX_INLINE} inline bytes")));
        }
        let mut core = self.dev.lock();
        let scq = core
            .cq_by_num
            .get(&init.send_cq.handle())
            .cloned()
            .ok_or_else(|| einval("send CQ is not of this device"))?;
        let rcq = core
            .cq_by_num
            .get(&init.recv_cq.handle())
            .cloned()
            .ok_or_else(|| einval("recv CQ is not of this device"))?;
        let srq = match &init.srq {
            Some(s) => {
                let n = s.handle();
                if core.ep.srq(n).is_none() {
                    return Err(einval("SRQ is not of this device"));
                }
                Some(n)
            }
            None => None,
        };
        charge(&self.dev, &core, Resource::Qp, 1)?;
        let qpn = core.ep.create_qp(init.qp_type, self.pdn, cap, init.sq_sig_all, srq);
        let (quirk, jkey) = (core.rxe_retry_quirk, core.ns.jkey());
        let offload = self.dev.udp_checksum_offload();
        if let Some(qp) = core.ep.qp_mut(qpn) {
            qp.set_port_mtu(self.mtu);
            qp.set_rxe_retry_quirk(quirk);
            qp.set_udp_checksum_offload(offload);
            qp.set_jkey(jkey);
        }
        core.cqs.insert(qpn, (scq, rcq));
        bump(&mut core, self.pdn, 1);
        Ok(Arc::new(SoftQp {
            dev: self.dev.clone(),
            qpn,
            qp_type: init.qp_type,
            pdn: self.pdn,
            destroyed: Mutex::new(false),
        }))
    }

    fn create_srq(&self, max_wr: u32, max_sge: u32) -> Result<Arc<dyn Srq>> {
        if max_wr == 0 || max_wr > MAX_QP_WR || max_sge > MAX_SGE {
            return Err(einval("SRQ max_wr/max_sge out of range"));
        }
        let mut core = self.dev.lock();
        charge(&self.dev, &core, Resource::Srq, 1)?;
        let srqn = core.ep.create_srq(self.pdn, max_wr, max_sge);
        bump(&mut core, self.pdn, 1);
        Ok(Arc::new(SoftSrq { dev: self.dev.clone(), srqn, pdn: self.pdn }))
    }

    fn create_ah(&self, attr: &AhAttr) -> Result<Arc<dyn Ah>> {
        {
            let core = self.dev.lock();
            // Validate everything but the MAC before waiting on the network.
            build_path(&core, &self.dev, attr, EthernetAddress([0; 6]), 0, 0, true)?;
        }
        let dmac = resolve(&self.dev, attr.dgid)?;
        let mut core = self.dev.lock();
        charge(&self.dev, &core, Resource::Ah, 1)?;
        bump(&mut core, self.pdn, 1);
        Ok(Arc::new(SoftAh { attr: *attr, dmac, ns: core.ns.clone() }))
    }

    fn dealloc(&self) -> Result<()> {
        let mut core = self.dev.lock();
        match core.pd_objects.get(&self.pdn) {
            Some(0) => {
                core.pd_objects.remove(&self.pdn);
                core.ns.release(Resource::Pd, 1);
                Ok(())
            }
            Some(n) => Err(VerbsError::Busy(format!("PD still has {n} objects"))),
            None => Err(VerbsError::NotFound("PD already deallocated".into())),
        }
    }
}

pub struct SoftMr {
    dev: Arc<Shared>,
    region: Arc<Region>,
    pdn: u32,
}

impl Mr for SoftMr {
    fn lkey(&self) -> u32 {
        self.region.lkey
    }
    fn rkey(&self) -> u32 {
        self.region.rkey
    }
    fn addr(&self) -> u64 {
        self.region.va
    }
    fn len(&self) -> usize {
        self.region.len()
    }

    fn write(&self, offset: usize, data: &[u8]) -> Result<()> {
        let mut d = self.region.data.write().map_err(|_| VerbsError::Io("region poisoned".into()))?;
        let end =
            offset.checked_add(data.len()).filter(|&e| e <= d.len()).ok_or_else(|| einval("write beyond the MR"))?;
        d[offset..end].copy_from_slice(data);
        Ok(())
    }

    fn read(&self, offset: usize, out: &mut [u8]) -> Result<()> {
        // Reading device memory is how an application watches for a WRITE
        // (perftest's *_lat spin on the last byte): it drives the device.
        self.dev.progress();
        let d = self.region.data.read().map_err(|_| VerbsError::Io("region poisoned".into()))?;
        let end =
            offset.checked_add(out.len()).filter(|&e| e <= d.len()).ok_or_else(|| einval("read beyond the MR"))?;
        out.copy_from_slice(&d[offset..end]);
        Ok(())
    }

    fn deregister(&self) -> Result<()> {
        let mut core = self.dev.lock();
        if core.ep.lkey_in_use(self.region.lkey) {
            return Err(VerbsError::Busy(format!("MR {:#x} is named by posted work requests", self.region.lkey)));
        }
        if !core.ep.mem.deregister(self.region.lkey) {
            return Err(VerbsError::NotFound("MR already deregistered".into()));
        }
        core.ns.release(Resource::Mr, 1);
        core.ns.release(Resource::MrBytes, self.region.len() as u64);
        bump(&mut core, self.pdn, -1);
        Ok(())
    }
}

pub struct SoftCq {
    inner: Arc<CqInner>,
    ns: Arc<crate::namespace::Namespace>,
    /// Polling a CQ drives the device (busy polling, see `engine`).
    dev: Arc<Shared>,
}

impl Drop for SoftCq {
    fn drop(&mut self) {
        self.ns.release(Resource::Cq, 1);
    }
}

impl SoftCq {
    /// What a poll does to the device: it drives it (busy polling), unless
    /// the application sleeps on the CQ's events between polls (perftest's
    /// -e: event, re-arm, poll); then the device's own receive thread
    /// carries the traffic, as interrupts do.
    fn drive(&self) {
        if self.inner.sleeps_on_events() {
            self.dev.stop_polling();
        } else {
            self.dev.progress();
        }
    }
}

impl Cq for SoftCq {
    fn handle(&self) -> u32 {
        self.inner.cqn
    }
    fn capacity(&self) -> u32 {
        self.inner.cap as u32
    }
    fn poll(&self, max: usize) -> Vec<WorkCompletion> {
        self.drive();
        let mut got = Vec::new();
        self.inner.take(max, |c| got.push(c));
        got
    }
    fn poll_into(&self, wc: &mut [WorkCompletion]) -> usize {
        self.drive();
        let mut slots = wc.iter_mut();
        self.inner.take(slots.len(), |c| {
            if let Some(s) = slots.next() {
                *s = c;
            }
        })
    }
    fn wait(&self, max: usize, timeout: Duration) -> Vec<WorkCompletion> {
        self.drive();
        let Ok(mut q) = self.inner.queue.lock() else { return Vec::new() };
        if q.is_empty() {
            // About to block: the receive thread must handle what comes.
            self.dev.stop_polling();
        }
        let deadline = WallInstant::now() + timeout;
        // Registered under the queue lock, so a push after our check sees us.
        self.inner.waiters.fetch_add(1, Ordering::AcqRel);
        while q.is_empty() {
            let Some(left) = deadline.checked_duration_since(WallInstant::now()) else { break };
            q = match self.inner.ready.wait_timeout(q, left) {
                Ok((g, _)) => g,
                Err(_) => {
                    self.inner.waiters.fetch_sub(1, Ordering::AcqRel);
                    return Vec::new();
                }
            };
        }
        self.inner.waiters.fetch_sub(1, Ordering::AcqRel);
        let mut got = Vec::new();
        CqInner::take_locked(&mut q, &self.inner.queued, max, &mut |c| got.push(c));
        got
    }
    fn overflowed(&self) -> bool {
        self.inner.overflow.load(Ordering::Acquire)
    }
    fn req_notify(&self, solicited_only: bool) -> Result<()> {
        self.inner.arm(solicited_only);
        Ok(())
    }
    fn ack_events(&self, n: u32) -> Result<()> {
        let acked = self.inner.events_unacked.fetch_update(Ordering::AcqRel, Ordering::Acquire, |u| u.checked_sub(n));
        match acked {
            Ok(_) => Ok(()),
            Err(u) => Err(einval(format!("ack of {n} CQ events, {u} handed out and not acknowledged"))),
        }
    }
}

pub struct SoftQp {
    dev: Arc<Shared>,
    qpn: u32,
    qp_type: QpType,
    pdn: u32,
    destroyed: Mutex<bool>,
}

impl SoftQp {
    fn gone() -> VerbsError {
        VerbsError::NotFound("QP was destroyed".into())
    }
}

impl Qp for SoftQp {
    fn qp_num(&self) -> u32 {
        self.qpn
    }
    fn qp_type(&self) -> QpType {
        self.qp_type
    }

    fn modify(&self, attr: &QpAttr, mask: QpAttrMask, path: QpPath) -> Result<()> {
        let av = if mask.contains(QpAttrMask::AV) {
            let ah = path.ah.ok_or_else(|| einval("AV in the mask but no ah_attr"))?;
            {
                let core = self.dev.lock();
                build_path(&core, &self.dev, &ah, EthernetAddress([0; 6]), 0, 0, false)?;
            }
            Some((ah, resolve(&self.dev, ah.dgid)?))
        } else {
            None
        };
        let mut core = self.dev.lock();
        // IBTA Vol 1 ch. 10: Q_Keys with the high bit set are controlled; only
        // a privileged owner may give one to a QP.
        if mask.contains(QpAttrMask::QKEY) && attr.qkey & 0x8000_0000 != 0 && !core.ns.privileged {
            let detail = format!("QP {:#x} asked for controlled Q_Key {:#x}", self.qpn, attr.qkey);
            self.dev.audit(&core, "controlled_qkey", Some(self.qpn), None, detail.clone());
            return Err(VerbsError::PermissionDenied(detail));
        }
        let pkey = if mask.contains(QpAttrMask::PKEY_INDEX) {
            Some(
                *core
                    .pkeys
                    .get(attr.pkey_index as usize)
                    .ok_or_else(|| einval(format!("pkey_index {} out of the P_Key table", attr.pkey_index)))?,
            )
        } else {
            None
        };
        let dest = {
            let qp = core.ep.qp(self.qpn).ok_or_else(Self::gone)?;
            if mask.contains(QpAttrMask::DEST_QPN) {
                attr.dest_qp_num
            } else {
                qp.attr().dest_qp_num
            }
        };
        let path = match av {
            Some((ah, dmac)) => Some(build_path(&core, &self.dev, &ah, dmac, self.qpn, dest, false)?),
            None => None,
        };
        let qp = core.ep.qp_mut(self.qpn).ok_or_else(Self::gone)?;
        qp.modify(attr, mask, path).map_err(|e| einval(e.to_string()))?;
        if let Some(p) = pkey {
            qp.set_pkey(p);
        }
        self.dev.flush(&mut core);
        Ok(())
    }

    fn query(&self) -> Result<QpAttr> {
        let core = self.dev.lock();
        core.ep.qp(self.qpn).map(|q| *q.attr()).ok_or_else(Self::gone)
    }

    fn post_send(&self, wrs: &[SendWr], ah: Option<&Arc<dyn Ah>>) -> core::result::Result<(), (usize, VerbsError)> {
        crate::turn_trace::mark(crate::turn_trace::Stage::Post);
        let ud = match (self.qp_type, ah) {
            (QpType::Ud, Some(ah)) => {
                let a = ah.attr();
                let dmac = ah_dmac(ah).ok_or((0, einval("address handle of another device")))?;
                let core = self.dev.lock();
                Some(build_path(&core, &self.dev, &a, dmac, self.qpn, 0, true).map_err(|e| (0, e))?)
            }
            (QpType::Ud, None) => return Err((0, einval("UD send without an address handle"))),
            _ => None,
        };
        let mut core = self.dev.lock();
        let mut result = Ok(());
        if let Some(qp) = core.ep.qp_mut(self.qpn) {
            for (i, wr) in wrs.iter().enumerate() {
                let dest = ud.map(|path| UdDest { path, remote_qpn: wr.remote_qpn, remote_qkey: wr.remote_qkey });
                if let Err(e) = qp.post_send(wr, dest) {
                    result = Err((i, post_error(e)));
                    break;
                }
            }
        } else {
            result = Err((0, Self::gone()));
        }
        self.dev.flush(&mut core);
        crate::turn_trace::mark(crate::turn_trace::Stage::Posted);
        result
    }

    fn post_recv(&self, wrs: &[RecvWr]) -> core::result::Result<(), (usize, VerbsError)> {
        let mut core = self.dev.lock();
        let Some(qp) = core.ep.qp_mut(self.qpn) else { return Err((0, Self::gone())) };
        let mut result = Ok(());
        for (i, wr) in wrs.iter().enumerate() {
            if let Err(e) = qp.post_recv(wr.clone()) {
                result = Err((i, post_error(e)));
                break;
            }
        }
        self.dev.flush(&mut core);
        result
    }

    fn destroy(&self) -> Result<()> {
        let mut d = self.destroyed.lock().map_err(|_| VerbsError::Io("poisoned".into()))?;
        if *d {
            return Err(Self::gone());
        }
        let mut core = self.dev.lock();
        core.ep.destroy_qp(self.qpn);
        core.cqs.remove(&self.qpn);
        core.ns.release(Resource::Qp, 1);
        bump(&mut core, self.pdn, -1);
        *d = true;
        Ok(())
    }
}

impl Drop for SoftQp {
    fn drop(&mut self) {
        if !self.destroyed.lock().map(|d| *d).unwrap_or(true) {
            let _ = self.destroy();
        }
    }
}

pub struct SoftSrq {
    dev: Arc<Shared>,
    srqn: u32,
    pdn: u32,
}

impl Srq for SoftSrq {
    fn handle(&self) -> u32 {
        self.srqn
    }

    fn post_recv(&self, wrs: &[RecvWr]) -> core::result::Result<(), (usize, VerbsError)> {
        let mut core = self.dev.lock();
        let Some(srq) = core.ep.srq_mut(self.srqn) else {
            return Err((0, VerbsError::NotFound("SRQ destroyed".into())));
        };
        for (i, wr) in wrs.iter().enumerate() {
            srq.post_recv(wr.clone()).map_err(|e| (i, post_error(e)))?;
        }
        drop(core);
        Ok(())
    }

    fn arm_limit(&self, limit: u32) -> Result<()> {
        let mut core = self.dev.lock();
        let srq = core.ep.srq_mut(self.srqn).ok_or_else(|| VerbsError::NotFound("SRQ destroyed".into()))?;
        srq.set_limit(limit).map_err(post_error)
    }

    fn destroy(&self) -> Result<()> {
        let mut core = self.dev.lock();
        if core.ep.qps().any(|q| q.srq() == Some(self.srqn)) {
            return Err(VerbsError::Busy("QPs still use the SRQ".into()));
        }
        core.ep.destroy_srq(self.srqn).ok_or_else(|| VerbsError::NotFound("SRQ destroyed".into()))?;
        core.ns.release(Resource::Srq, 1);
        bump(&mut core, self.pdn, -1);
        Ok(())
    }
}

pub struct SoftAh {
    attr: AhAttr,
    dmac: EthernetAddress,
    ns: Arc<crate::namespace::Namespace>,
}

impl Drop for SoftAh {
    fn drop(&mut self) {
        self.ns.release(Resource::Ah, 1);
    }
}

impl Ah for SoftAh {
    fn attr(&self) -> AhAttr {
        self.attr
    }
    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

/// The resolved MAC of one of our address handles.
fn ah_dmac(ah: &Arc<dyn Ah>) -> Option<EthernetAddress> {
    ah.as_any().downcast_ref::<SoftAh>().map(|a| a.dmac)
}
