//! The verbs objects, as object-safe traits so that one program (the
//! conformance suite, a test, an application) can drive any device:
//! `Context` → `Pd` → `Mr` / `Qp` / `Srq` / `Ah`, and `Cq`.
//!
//! Handles are `Arc<dyn …>`. Destroying an object is explicit
//! (`Mr::deregister`, `Qp::destroy`, …) so it can fail cleanly (EBUSY) the
//! way `ibv_dereg_mr` and friends do; dropping the last handle releases what
//! is left.

use std::sync::Arc;
use std::time::Duration;

use crate::{AccessFlags, Gid, Mtu, QpAttr, QpAttrMask, QpCap, QpType, RecvWr, Result, SendWr, WorkCompletion};

/// `struct ibv_device_attr` (the fields that mean something here).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceAttr {
    pub fw_ver: String,
    pub node_guid: u64,
    pub vendor_id: u32,
    pub max_mr_size: u64,
    pub max_qp: u32,
    pub max_qp_wr: u32,
    pub max_sge: u32,
    pub max_cq: u32,
    pub max_cqe: u32,
    pub max_mr: u32,
    pub max_pd: u32,
    pub max_qp_rd_atom: u32,
    pub max_qp_init_rd_atom: u32,
    pub max_srq: u32,
    pub max_srq_wr: u32,
    pub max_ah: u32,
    pub max_pkeys: u16,
    pub phys_port_cnt: u8,
}

/// `enum ibv_port_state`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PortState {
    Down = 1,
    Init = 2,
    Armed = 3,
    Active = 4,
}

/// `struct ibv_port_attr` for a RoCE port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortAttr {
    pub state: PortState,
    pub max_mtu: Mtu,
    pub active_mtu: Mtu,
    pub gid_tbl_len: u32,
    pub pkey_tbl_len: u16,
    /// Always Ethernet for RoCE.
    pub link_layer_ethernet: bool,
}

/// One entry of a port's GID table (`ibv_query_gid_ex`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GidEntry {
    pub index: u32,
    pub gid: Gid,
    /// RoCE v2 for every entry softrdma makes.
    pub roce_v2: bool,
}

/// `struct ibv_ah_attr` for RoCE (GRH always present).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AhAttr {
    pub dgid: Gid,
    pub sgid_index: u8,
    pub flow_label: u32,
    pub hop_limit: u8,
    pub traffic_class: u8,
    pub sl: u8,
    pub port_num: u8,
}

impl AhAttr {
    pub fn new(dgid: Gid, sgid_index: u8) -> Self {
        AhAttr { dgid, sgid_index, flow_label: 0, hop_limit: 64, traffic_class: 0, sl: 0, port_num: 1 }
    }
}

/// `struct ibv_qp_init_attr`.
#[derive(Clone)]
pub struct QpInitAttr {
    pub qp_type: QpType,
    pub send_cq: Arc<dyn Cq>,
    pub recv_cq: Arc<dyn Cq>,
    pub srq: Option<Arc<dyn Srq>>,
    pub cap: QpCap,
    pub sq_sig_all: bool,
}

/// The connected-QP attributes a modify may carry beyond `QpAttr`: the
/// address vector, as `ibv_qp_attr.ah_attr`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct QpPath {
    pub ah: Option<AhAttr>,
}

/// An asynchronous event (`struct ibv_async_event`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AsyncEvent {
    QpFatal { qpn: u32 },
    SqDrained { qpn: u32 },
    SrqLimitReached { srqn: u32 },
    CqError { cqn: u32 },
    PortActive,
}

/// Where devices come from (`ibv_get_device_list` / `ibv_open_device`).
pub trait Provider: Send + Sync {
    fn device_names(&self) -> Vec<String>;
    fn open(&self, name: &str) -> Result<Arc<dyn Context>>;
}

pub trait Context: Send + Sync {
    fn device_name(&self) -> String;
    fn query_device(&self) -> DeviceAttr;
    fn query_port(&self, port: u8) -> Result<PortAttr>;
    fn query_gid(&self, port: u8, index: u32) -> Result<Gid>;
    /// Every valid entry of the port's GID table.
    fn gid_table(&self, port: u8) -> Result<Vec<GidEntry>>;
    fn query_pkey(&self, port: u8, index: u16) -> Result<u16>;
    fn alloc_pd(&self) -> Result<Arc<dyn Pd>>;
    /// A CQ holding at least `cqe` completions.
    fn create_cq(&self, cqe: u32) -> Result<Arc<dyn Cq>>;
    /// `ibv_create_comp_channel`.
    fn create_comp_channel(&self) -> Result<Arc<dyn CompChannel>>;
    /// `ibv_create_cq` with a completion channel: the CQ reports on
    /// `channel` when armed (`Cq::req_notify`). EINVAL for a channel of
    /// another context.
    fn create_cq_with_channel(&self, cqe: u32, channel: &Arc<dyn CompChannel>) -> Result<Arc<dyn Cq>>;
    /// The next asynchronous event, waiting up to `timeout`.
    fn get_async_event(&self, timeout: Duration) -> Option<AsyncEvent>;
}

pub trait Pd: Send + Sync {
    fn handle(&self) -> u32;
    /// Registers `len` bytes of device-visible memory with `access`, at a
    /// virtual address the device chooses (`Mr::addr`).
    fn reg_mr(&self, len: usize, access: AccessFlags) -> Result<Arc<dyn Mr>>;
    fn create_qp(&self, init: &QpInitAttr) -> Result<Arc<dyn Qp>>;
    fn create_srq(&self, max_wr: u32, max_sge: u32) -> Result<Arc<dyn Srq>>;
    fn create_ah(&self, attr: &AhAttr) -> Result<Arc<dyn Ah>>;
    /// `ibv_dealloc_pd`: EBUSY while objects still use it.
    fn dealloc(&self) -> Result<()>;
}

pub trait Mr: Send + Sync {
    fn lkey(&self) -> u32;
    fn rkey(&self) -> u32;
    /// Virtual address of the first byte (what SGEs and RETHs name).
    fn addr(&self) -> u64;
    fn len(&self) -> usize;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Copies `data` into the region at `offset`.
    fn write(&self, offset: usize, data: &[u8]) -> Result<()>;
    /// Copies out of the region at `offset`.
    fn read(&self, offset: usize, out: &mut [u8]) -> Result<()>;
    /// `ibv_dereg_mr`: EBUSY while posted work requests still name the region.
    fn deregister(&self) -> Result<()>;
}

pub trait Cq: Send + Sync {
    fn handle(&self) -> u32;
    fn capacity(&self) -> u32;
    /// `ibv_poll_cq`: up to `max` completions, without waiting.
    fn poll(&self, max: usize) -> Vec<WorkCompletion>;
    /// `ibv_poll_cq` as C callers use it: fills the front of `wc` with up
    /// to `wc.len()` completions and returns how many. It allocates
    /// nothing, so a loop that spins on a CQ can reuse one array.
    fn poll_into(&self, wc: &mut [WorkCompletion]) -> usize {
        let got = self.poll(wc.len());
        for (slot, c) in wc.iter_mut().zip(&got) {
            *slot = *c;
        }
        got.len()
    }
    /// Waits until at least one completion is there (or `timeout` passes),
    /// then polls like `poll` — so callers need not spin.
    fn wait(&self, max: usize, timeout: Duration) -> Vec<WorkCompletion>;
    /// Whether completions were lost because the CQ was full (IBV_EVENT_CQ_ERR).
    fn overflowed(&self) -> bool;
    /// `ibv_req_notify_cq`: the next completion added to the CQ puts one
    /// event on its channel; with `solicited_only`, the next solicited one
    /// (a receive of a message sent with `SendFlags::SOLICITED`, or any
    /// unsuccessful completion). One-shot; completions already in the CQ
    /// do not count, so callers arm, poll, then wait. Arming a CQ without a
    /// channel is accepted, as ibverbs does, and reports nowhere.
    fn req_notify(&self, solicited_only: bool) -> Result<()>;
    /// `ibv_ack_cq_events`: EINVAL for more events than the channel has
    /// handed out for this CQ and not yet acknowledged (ibverbs leaves that
    /// undefined).
    fn ack_events(&self, n: u32) -> Result<()>;
}

/// `struct ibv_comp_channel`: where armed CQs report.
pub trait CompChannel: Send + Sync {
    /// `ibv_get_cq_event`: the CQ of the next event, waiting up to
    /// `timeout` (`Duration::ZERO`: as on a non-blocking channel fd). Each
    /// event must be acknowledged (`Cq::ack_events`).
    fn get_cq_event(&self, timeout: Duration) -> Option<Arc<dyn Cq>>;
    /// `channel->fd`: readable (poll(2), epoll) while an event waits.
    fn fd(&self) -> std::os::fd::BorrowedFd<'_>;
    /// `ibv_destroy_comp_channel`: EBUSY while a CQ still reports to it.
    fn destroy(&self) -> Result<()>;
    /// Lets a device recognise its own channels.
    fn as_any(&self) -> &dyn std::any::Any;
}

pub trait Qp: Send + Sync {
    fn qp_num(&self) -> u32;
    fn qp_type(&self) -> QpType;
    /// `ibv_modify_qp`; `path.ah` is required with `QpAttrMask::AV`.
    fn modify(&self, attr: &QpAttr, mask: QpAttrMask, path: QpPath) -> Result<()>;
    fn query(&self) -> Result<QpAttr>;
    /// `ibv_post_send` for a list; on error, returns the index of the first
    /// request refused (those before it were posted), like `bad_wr`.
    fn post_send(
        &self,
        wrs: &[SendWr],
        ah: Option<&Arc<dyn Ah>>,
    ) -> core::result::Result<(), (usize, crate::VerbsError)>;
    fn post_recv(&self, wrs: &[RecvWr]) -> core::result::Result<(), (usize, crate::VerbsError)>;
    fn destroy(&self) -> Result<()>;
}

pub trait Srq: Send + Sync {
    fn handle(&self) -> u32;
    fn post_recv(&self, wrs: &[RecvWr]) -> core::result::Result<(), (usize, crate::VerbsError)>;
    /// `ibv_modify_srq(IBV_SRQ_LIMIT)`: arms the limit event.
    fn arm_limit(&self, limit: u32) -> Result<()>;
    fn destroy(&self) -> Result<()>;
}

pub trait Ah: Send + Sync {
    fn attr(&self) -> AhAttr;
    /// Lets a device recognise its own address handles.
    fn as_any(&self) -> &dyn std::any::Any;
}
