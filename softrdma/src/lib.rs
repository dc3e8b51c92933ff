//! softrdma: a userspace soft-RDMA (RoCEv2) device.
//!
//! Today this crate holds the capture reader/writer and the `softrdma decode`
//! command; the device engine, backends and isolation model are issues 4 and 5.

pub mod capture;
pub mod decode;
