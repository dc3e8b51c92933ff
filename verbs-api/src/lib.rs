//! The ibverbs-shaped vocabulary of softrdma: QP types and states, attributes
//! and their masks, access flags, work requests and work completions, with the
//! numeric values of rdma-core's `<infiniband/verbs.h>` so that code and logs
//! translate one to one.
//!
//! The transport core speaks these types; the device (issue 4) adds the
//! device/context/PD/MR/CQ/QP objects on top of them.

mod access;
mod attr;
mod wc;
mod wr;

pub use access::AccessFlags;
pub use attr::{Gid, Mtu, QpAttr, QpAttrMask, QpCap, QpState, QpType};
pub use wc::{WcFlags, WcOpcode, WcStatus, WorkCompletion};
pub use wr::{RecvWr, SendFlags, SendOp, SendWr, Sge};
