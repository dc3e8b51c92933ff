//! The ibverbs-shaped vocabulary of softrdma: QP types and states, attributes
//! and their masks, access flags, work requests and work completions, with the
//! numeric values of rdma-core's `<infiniband/verbs.h>` so that code and logs
//! translate one to one.
//!
//! The transport core speaks these types; devices implement the object
//! traits of [`Context`], [`Pd`], [`Mr`], [`Cq`], [`CompChannel`], [`Qp`], [`Srq`]
//! and [`Ah`],
//! and programs written against them run on any device.

mod access;
mod attr;
mod error;
pub mod helpers;
pub mod transitions;
mod verbs;
mod wc;
mod wr;

pub use access::AccessFlags;
pub use attr::{Gid, Mtu, QpAttr, QpAttrMask, QpCap, QpState, QpType};
pub use error::{Result, VerbsError};
pub use verbs::{
    Ah, AhAttr, AsyncEvent, CompChannel, Context, Cq, DeviceAttr, GidEntry, Mr, Pd, PortAttr, PortState, Provider, Qp,
    QpInitAttr, QpPath, Srq,
};
pub use wc::{WcFlags, WcOpcode, WcStatus, WorkCompletion};
pub use wr::{RecvWr, SendFlags, SendOp, SendWr, Sge};
